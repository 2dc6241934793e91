// SPDX-License-Identifier: GPL-2.0
/*
 * vmx_oracle: the VMX-instruction oracle (selftests only, never part of
 * pkvm).
 *
 * Loaded, it runs fixed sequences of VMX instructions, valid and invalid,
 * on the CPU it loads on, with interrupts off, catching faults through
 * exception-table fixups, and prints one line per step to the kernel log
 * ("vmx_oracle: STEP: RESULT"): the fault vector, or VMsucceed /
 * VMfailInvalid / VMfailValid with the VM-instruction error number, the
 * arithmetic flags left (all six are set before every instruction), and
 * values read back.  The suite runs it on the bare emulated CPU (neither
 * pkvm nor kvm_intel loaded) and under pkvm in the same boot and compares
 * the two logs: the emulator's own VMX is the reference.  It prints
 * "vmx_oracle: done" at the end and stays loaded (rmmod it; a failing
 * init would make busybox's insmod load it a second time).
 *
 * It sets CR4.VMXE itself (directly, restoring CR4 afterwards) and leaves
 * VMX operation before returning.
 *
 * hostile_pa=PA (a page the host does not own: pool, module image, a page
 * donated to the hypervisor) runs the hostile sequence instead: VMXON,
 * VMPTRLD and VMCLEAR naming PA, and with hostile_va=VA (a kernel address
 * mapping a hypervisor page) VMWRITE/VMREAD with their memory operand
 * there (hostile_direct=1: the direct-map address of PA).
 */
#include <linux/module.h>
#include <linux/slab.h>
#include <linux/vmalloc.h>
#include <linux/mm.h>
#include <asm/msr.h>
#include <asm/processor-flags.h>

#include "vmx_insn.h"	/* selftests/include: the VMX instruction wrappers */

static unsigned long hostile_pa;
module_param(hostile_pa, ulong, 0444);
static unsigned long hostile_va;
module_param(hostile_va, ulong, 0444);
static bool hostile_direct;
module_param(hostile_direct, bool, 0444);

static char out[12288];
static int pos;

static __printf(1, 2) void line(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	pos += vscnprintf(out + pos, sizeof(out) - pos, fmt, ap);
	va_end(ap);
	pos += scnprintf(out + pos, sizeof(out) - pos, "\n");
}

/* VMREAD of the VM-instruction error, for a VMfailValid. */
static u32 insn_error(void)
{
	u64 v = 0;

	vmx_vmread_reg(0x4400, &v);
	return v;
}

static void show(const char *step, struct vmx_res r)
{
	const char *what;
	char err[24] = "";

	if (r.vec >= 0) {
		line("%s: fault vector=%ld", step, r.vec);
		return;
	}
	if (r.fl & X86_EFLAGS_CF) {
		what = "VMfailInvalid";
	} else if (r.fl & X86_EFLAGS_ZF) {
		what = "VMfailValid";
		snprintf(err, sizeof(err), " error=%u", insn_error());
	} else {
		what = "VMsucceed";
	}
	line("%s: %s%s flags=0x%lx", step, what, err, r.fl & VMX_ARITH);
}

static void show_val(const char *step, struct vmx_res r, u64 v)
{
	show(step, r);
	if (r.vec < 0 && !(r.fl & (X86_EFLAGS_CF | X86_EFLAGS_ZF)))
		line("%s: value=0x%llx", step, v);
}

/* Field encodings. */
#define GUEST_RIP 0x681e
#define GUEST_ES_SELECTOR 0x800
#define VMCS_LINK_POINTER 0x2800
#define TSC_OFFSET 0x2010
#define GUEST_IA32_DEBUGCTL 0x2802
#define VM_EXIT_REASON 0x4402

struct pages {
	u64 *vmxon, *a, *b, *badrev, *op;
	u64 pa_vmxon, pa_a, pa_b, pa_badrev;
	void *guard;		/* vmalloc'd page; the page after it faults */
};

static void oracle(struct pages *p, u64 rev)
{
	struct vmx_inv_desc d;
	struct vmx_res r;
	u64 v;
	u64 *bad = (u64 *)((char *)p->guard + PAGE_SIZE);
	u64 *noncanon = (u64 *)0x0000800000000000ULL;

	/* Outside VMX operation. */
	show("vmxoff_outside", vmx_plain_op(VMX_VMXOFF));
	*p->op = 0;
	show("vmptrst_outside", vmx_mem_op(VMX_VMPTRST, p->op));
	v = 0;
	show("vmread_outside", vmx_vmread_reg(GUEST_RIP, &v));

	/* VMXON's own checks. */
	*p->op = p->pa_badrev;
	show("vmxon_bad_revision", vmx_mem_op(VMX_VMXON, p->op));
	*p->op = p->pa_vmxon + 8;
	show("vmxon_misaligned", vmx_mem_op(VMX_VMXON, p->op));
	*p->op = 1ULL << 52;
	show("vmxon_beyond_maxphyaddr", vmx_mem_op(VMX_VMXON, p->op));
	show("vmxon_noncanonical_operand", vmx_mem_op(VMX_VMXON, noncanon));
	show("vmxon_pf_operand", vmx_mem_op(VMX_VMXON, bad));
	*p->op = p->pa_vmxon;
	show("vmxon", vmx_mem_op(VMX_VMXON, p->op));
	show("vmxon_twice_no_current", vmx_mem_op(VMX_VMXON, p->op));

	/* In VMX operation, no current VMCS. */
	*p->op = 0;
	r = vmx_mem_op(VMX_VMPTRST, p->op);
	show_val("vmptrst_none", r, *p->op);
	v = 0;
	show("vmread_no_current", vmx_vmread_reg(GUEST_RIP, &v));
	show("vmwrite_no_current", vmx_vmwrite_reg(GUEST_RIP, 1));
	show("vmlaunch_no_current", vmx_plain_op(VMX_VMLAUNCH));
	show("vmresume_no_current", vmx_plain_op(VMX_VMRESUME));
	*p->op = p->pa_a + 0x10;
	show("vmclear_misaligned_no_current", vmx_mem_op(VMX_VMCLEAR, p->op));
	*p->op = p->pa_vmxon;
	show("vmptrld_vmxon_no_current", vmx_mem_op(VMX_VMPTRLD, p->op));

	/* A current VMCS. */
	*p->op = p->pa_a;
	show("vmclear_a", vmx_mem_op(VMX_VMCLEAR, p->op));
	show("vmptrld_a", vmx_mem_op(VMX_VMPTRLD, p->op));
	*p->op = 0;
	r = vmx_mem_op(VMX_VMPTRST, p->op);
	show("vmptrst_a", r);
	line("vmptrst_a: is_a=%d", *p->op == p->pa_a);
	*p->op = p->pa_vmxon;
	show("vmxon_in_root", vmx_mem_op(VMX_VMXON, p->op));
	*p->op = p->pa_a + 0x800;
	show("vmclear_misaligned", vmx_mem_op(VMX_VMCLEAR, p->op));
	*p->op = 1ULL << 52;
	show("vmclear_beyond_maxphyaddr", vmx_mem_op(VMX_VMCLEAR, p->op));
	*p->op = p->pa_vmxon;
	show("vmclear_vmxon_ptr", vmx_mem_op(VMX_VMCLEAR, p->op));
	*p->op = p->pa_b | 8;
	show("vmptrld_misaligned", vmx_mem_op(VMX_VMPTRLD, p->op));
	*p->op = p->pa_vmxon;
	show("vmptrld_vmxon_ptr", vmx_mem_op(VMX_VMPTRLD, p->op));
	*p->op = p->pa_badrev;
	show("vmptrld_bad_revision", vmx_mem_op(VMX_VMPTRLD, p->op));
	/*
	 * Bit 31 (shadow VMCS): accepted where VMCS shadowing is offered
	 * (the bare emulated CPU), VMfailValid(11) where it is not (pkvm).
	 * Either way, A is made current again.
	 */
	p->badrev[0] = rev | (1ULL << 31);
	show("vmptrld_shadow_indicator", vmx_mem_op(VMX_VMPTRLD, p->op));
	p->badrev[0] = rev ^ 1;
	*p->op = p->pa_a;
	show("vmptrld_a_current", vmx_mem_op(VMX_VMPTRLD, p->op));

	/* VMREAD / VMWRITE. */
	show("vmwrite_rip_reg", vmx_vmwrite_reg(GUEST_RIP, 0x1234));
	v = 0;
	r = vmx_vmread_reg(GUEST_RIP, &v);
	show_val("vmread_rip_reg", r, v);
	*p->op = 0xffffffff81000000ULL;
	show("vmwrite_rip_mem", vmx_vmwrite_mem(GUEST_RIP, p->op));
	*p->op = 0;
	r = vmx_vmread_mem(GUEST_RIP, p->op);
	show_val("vmread_rip_mem", r, *p->op);
	/* Straddling two pages of the vmalloc'd operand area. */
	{
		u64 *straddle = (u64 *)((char *)p->op + PAGE_SIZE - 4);

		*straddle = 0x1122334455667788ULL;
		show("vmwrite_straddle", vmx_vmwrite_mem(GUEST_RIP, straddle));
		*straddle = 0;
		r = vmx_vmread_mem(GUEST_RIP, straddle);
		show_val("vmread_straddle", r, *straddle);
	}
	v = 0;
	show("vmread_unsupported", vmx_vmread_reg(0x7ffe, &v));
	show("vmwrite_unsupported", vmx_vmwrite_reg(0x7ffe, 0));
	show("vmread_high_bits", vmx_vmread_reg((1ULL << 32) | GUEST_RIP, &v));
	show("vmwrite_high_bits", vmx_vmwrite_reg((1ULL << 32) | GUEST_RIP, 0));
	show("vmwrite_exit_reason", vmx_vmwrite_reg(VM_EXIT_REASON, 30));
	v = 0;
	r = vmx_vmread_reg(VM_EXIT_REASON, &v);
	show_val("vmread_exit_reason", r, v);
	show("vmwrite_es_selector", vmx_vmwrite_reg(GUEST_ES_SELECTOR, 0x12345));
	v = 0;
	r = vmx_vmread_reg(GUEST_ES_SELECTOR, &v);
	show_val("vmread_es_selector", r, v);
	show("vmwrite_link", vmx_vmwrite_reg(VMCS_LINK_POINTER, ~0ULL));
	show("vmwrite_link_high", vmx_vmwrite_reg(VMCS_LINK_POINTER | 1, 0x112345678ULL));
	v = 0;
	r = vmx_vmread_reg(VMCS_LINK_POINTER, &v);
	show_val("vmread_link", r, v);
	v = 0;
	r = vmx_vmread_reg(VMCS_LINK_POINTER | 1, &v);
	show_val("vmread_link_high", r, v);
	/*
	 * High halves of 64-bit fields that pkvm's VMCS shadowing serves at
	 * full width (a control and a guest-state field): the high-half
	 * access exits and is emulated on the vmcs12, which must agree with
	 * the shadow VMCS both ways (the value a full-width VMWRITE left in
	 * the shadow; a high-half VMWRITE seen by the full-width VMREAD).
	 */
	{
		static const struct { const char *name; u64 enc; } f64[] = {
			{ "tsc_offset", TSC_OFFSET },
			{ "debugctl", GUEST_IA32_DEBUGCTL },
		};
		char step[48];

		for (int i = 0; i < ARRAY_SIZE(f64); i++) {
			snprintf(step, sizeof(step), "vmwrite_%s", f64[i].name);
			show(step, vmx_vmwrite_reg(f64[i].enc, 0x1111222233334444ULL));
			v = 0;
			r = vmx_vmread_reg(f64[i].enc | 1, &v);
			snprintf(step, sizeof(step), "vmread_%s_high", f64[i].name);
			show_val(step, r, v);
			snprintf(step, sizeof(step), "vmwrite_%s_high", f64[i].name);
			show(step, vmx_vmwrite_reg(f64[i].enc | 1, 0x55556666ULL));
			v = 0;
			r = vmx_vmread_reg(f64[i].enc, &v);
			snprintf(step, sizeof(step), "vmread_%s_full", f64[i].name);
			show_val(step, r, v);
			v = 0;
			r = vmx_vmread_reg(f64[i].enc | 1, &v);
			snprintf(step, sizeof(step), "vmread_%s_high_again", f64[i].name);
			show_val(step, r, v);
		}
	}
	/*
	 * Not here: VMREAD of a high-half encoding of a 16-bit field (0x801).
	 * The SDM makes it an unsupported component (error 12, as pkvm
	 * answers, cargo test vmread_vmwrite_semantics); Bochs answers it
	 * inconsistently (VMfailValid(12) on its CPU 0, VMsucceed on CPU 1).
	 */
	show("vmread_pf_dest", vmx_vmread_mem(GUEST_RIP, bad));
	show("vmwrite_pf_src", vmx_vmwrite_mem(GUEST_RIP, bad));
	show("vmread_noncanonical_dest", vmx_vmread_mem(GUEST_RIP, noncanon));
	show("vmptrld_noncanonical", vmx_mem_op(VMX_VMPTRLD, noncanon));
	show("vmptrst_pf", vmx_mem_op(VMX_VMPTRST, bad));

	/* Launch state. */
	show("vmresume_clear", vmx_plain_op(VMX_VMRESUME));

	/* A second VMCS, then back: the first keeps its state. */
	*p->op = p->pa_b;
	show("vmclear_b", vmx_mem_op(VMX_VMCLEAR, p->op));
	show("vmptrld_b", vmx_mem_op(VMX_VMPTRLD, p->op));
	v = 1;
	r = vmx_vmread_reg(GUEST_RIP, &v);
	show_val("vmread_rip_b", r, v);
	*p->op = p->pa_a;
	show("vmptrld_a_again", vmx_mem_op(VMX_VMPTRLD, p->op));
	v = 0;
	r = vmx_vmread_reg(GUEST_RIP, &v);
	show_val("vmread_rip_a_again", r, v);
	/* VMCLEAR of the current VMCS; reloaded, its state comes back. */
	show("vmclear_current", vmx_mem_op(VMX_VMCLEAR, p->op));
	*p->op = 0;
	r = vmx_mem_op(VMX_VMPTRST, p->op);
	show_val("vmptrst_after_clear", r, *p->op);
	v = 0;
	show("vmread_after_clear", vmx_vmread_reg(GUEST_RIP, &v));
	*p->op = p->pa_a;
	show("vmptrld_a_reload", vmx_mem_op(VMX_VMPTRLD, p->op));
	v = 0;
	r = vmx_vmread_reg(GUEST_RIP, &v);
	show_val("vmread_rip_reloaded", r, v);

	/* INVVPID / INVEPT. */
	d.lo = 1; d.hi = 0;
	show("invvpid_type4", vmx_invvpid(4, &d));
	d.lo = 0; d.hi = 0;
	show("invvpid_single_vpid0", vmx_invvpid(1, &d));
	d.lo = 1 | (1 << 16);
	show("invvpid_reserved_bits", vmx_invvpid(2, &d));
	d.lo = 1; d.hi = 1ULL << 47;
	show("invvpid_addr_noncanonical", vmx_invvpid(0, &d));
	d.lo = 1; d.hi = 0;
	show("invvpid_single", vmx_invvpid(1, &d));
	d.lo = 0;
	show("invvpid_all", vmx_invvpid(2, &d));
	show("invvpid_pf", vmx_invvpid(2, (struct vmx_inv_desc *)bad));
	d.lo = 0; d.hi = 0;
	show("invept_single", vmx_invept(1, &d));

	/* CR4.VMXE cannot be cleared in VMX operation. */
	line("cr4_clear_vmxe_in_vmx: fault vector=%ld",
	     vmx_write_cr4(__read_cr4() & ~X86_CR4_VMXE));

	show("vmxoff", vmx_plain_op(VMX_VMXOFF));
	show("vmxoff_again", vmx_plain_op(VMX_VMXOFF));
	*p->op = 0;
	show("vmptrst_after_vmxoff", vmx_mem_op(VMX_VMPTRST, p->op));
}

static void hostile(struct pages *p)
{
	u64 *va = (u64 *)hostile_va;
	struct vmx_res r;
	u64 v;

	if (hostile_direct)
		va = (u64 *)__va(hostile_pa);
	*p->op = hostile_pa;
	show("hostile_vmxon", vmx_mem_op(VMX_VMXON, p->op));
	/* Should it have succeeded (a bug), leave and start over. */
	vmx_plain_op(VMX_VMXOFF);
	*p->op = p->pa_vmxon;
	show("vmxon", vmx_mem_op(VMX_VMXON, p->op));
	*p->op = p->pa_a;
	show("vmptrld_a", vmx_mem_op(VMX_VMPTRLD, p->op));
	show("vmwrite_rip", vmx_vmwrite_reg(GUEST_RIP, 0x5555));
	*p->op = hostile_pa;
	show("hostile_vmptrld", vmx_mem_op(VMX_VMPTRLD, p->op));
	*p->op = hostile_pa;
	show("hostile_vmclear", vmx_mem_op(VMX_VMCLEAR, p->op));
	/* Back to A, should the VMPTRLD have succeeded (a bug). */
	*p->op = p->pa_a;
	vmx_mem_op(VMX_VMPTRLD, p->op);
	if (va) {
		show("hostile_vmwrite_src", vmx_vmwrite_mem(GUEST_RIP, va));
		show("hostile_vmread_dest", vmx_vmread_mem(GUEST_RIP, va));
	}
	v = 0;
	r = vmx_vmread_reg(GUEST_RIP, &v);
	show_val("vmread_rip", r, v);
	show("vmxoff", vmx_plain_op(VMX_VMXOFF));
}

static int __init oracle_init(void)
{
	struct pages p = { 0 };
	unsigned long flags, cr4;
	u64 basic, rev;
	int cpu, i;

	rdmsrq(MSR_IA32_VMX_BASIC, basic);
	rev = basic & 0x7fffffff;
	p.vmxon = (u64 *)get_zeroed_page(GFP_KERNEL);
	p.a = (u64 *)get_zeroed_page(GFP_KERNEL);
	p.b = (u64 *)get_zeroed_page(GFP_KERNEL);
	p.badrev = (u64 *)get_zeroed_page(GFP_KERNEL);
	p.op = vzalloc(2 * PAGE_SIZE);
	p.guard = vzalloc(PAGE_SIZE);
	if (!p.vmxon || !p.a || !p.b || !p.badrev || !p.op || !p.guard)
		goto out;
	p.vmxon[0] = rev;
	p.a[0] = rev;
	p.b[0] = rev;
	p.badrev[0] = rev ^ 1;
	p.pa_vmxon = __pa(p.vmxon);
	p.pa_a = __pa(p.a);
	p.pa_b = __pa(p.b);
	p.pa_badrev = __pa(p.badrev);

	cpu = get_cpu();
	local_irq_save(flags);
	cr4 = __read_cr4();
	/* VMXON with CR4.VMXE clear: #UD. */
	if (!hostile_pa) {
		vmx_write_cr4(cr4 & ~X86_CR4_VMXE);
		*p.op = p.pa_vmxon;
		show("vmxon_vmxe_clear", vmx_mem_op(VMX_VMXON, p.op));
	}
	vmx_write_cr4(cr4 | X86_CR4_VMXE);
	if (hostile_pa)
		hostile(&p);
	else
		oracle(&p, rev);
	vmx_write_cr4(cr4);
	local_irq_restore(flags);
	put_cpu();

	pr_info("vmx_oracle: cpu=%d basic_revision=0x%llx\n", cpu, rev);
	for (i = 0; i < pos;) {
		char *nl = strchr(out + i, '\n');

		if (!nl)
			break;
		*nl = 0;
		pr_info("vmx_oracle: %s\n", out + i);
		i = nl - out + 1;
	}
	pr_info("vmx_oracle: done\n");
out:
	free_page((unsigned long)p.vmxon);
	free_page((unsigned long)p.a);
	free_page((unsigned long)p.b);
	free_page((unsigned long)p.badrev);
	vfree(p.op);
	vfree(p.guard);
	return 0;
}

static void __exit oracle_exit(void)
{
}

module_init(oracle_init);
module_exit(oracle_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("pkvm-x86 tests: the VMX-instruction oracle");
