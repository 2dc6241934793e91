// SPDX-License-Identifier: GPL-2.0
/*
 * vmx_entry: hostile VM entries (selftests only, never part of pkvm).
 *
 * The host plays its own hypervisor without KVM: it executes VMXON, builds
 * a VMCS for a minimal guest itself and executes VMLAUNCH/VMRESUME, so it
 * can put into the VMCS what KVM never would.  The guest is contained: it
 * runs on page tables of this module that map only its code page (CPUID,
 * then UD2s) and its stack page, with an empty IDT, so whatever state the
 * VMCS gives it, it can touch only those pages and any event it takes
 * ends in a VM exit (triple fault at worst).  The host state is this CPU's
 * own; a VM exit lands at a label of run_guest().
 *
 * Loaded, it prints one line per step to the kernel log ("vmx_entry:
 * STEP: RESULT"), then "vmx_entry: done", and stays loaded (rmmod it).
 * A result is "exit reason=0x.. qual=0x.." (a VM exit, bit 31 of the
 * reason set for a failed entry), "VMfailValid error=N", "VMfailInvalid"
 * or "fault vector=N".  Steps named cmp_* are meant to be compared with
 * the bare emulated CPU (the suite runs the module bare and under pkvm in
 * the same boot).
 *
 * Parameters:
 *   pool_pa, image_pa, canary_pa   hypervisor memory (a pool page, a
 *                      frame of pkvm_x86.ko's text, a page donated to the
 *                      hypervisor): with them, the hostile steps place
 *                      every host address of the VMCS there, set the
 *                      hidden controls with their addresses there, and
 *                      (with pkvm=1) pin a virtual-APIC and an APIC-access
 *                      page under a live guest and try to donate them
 *   pkvm=1             running under pkvm: the steps that use its
 *                      hypercalls (HOST_DONATE_HYP of pinned pages)
 *   lacking=N          a secondary control the bare CPU does not have
 *                      (printed by the bare run as "lacking_bit=N"),
 *                      set anyway: VMfailValid(7) on both
 *   ept12=1            instead of the fixed steps (pkvm loaded with
 *                      nested_ept=1, pool_pa and image_pa given): the guest
 *                      runs on an EPT of this module (EPT12, identity for
 *                      its pages): the host's EPT tables placed on
 *                      hypervisor memory (see ept12_steps())
 *   fuzz=N seed=S      instead of the fixed steps: on every online CPU at
 *                      once, N iterations of random VMWRITEs (valid and
 *                      invalid encodings, random values, addresses on
 *                      hypervisor memory) followed by VMLAUNCH or
 *                      VMRESUME of the guest; prints the outcome histogram
 *                      and every outcome that is not architectural
 */
#include <linux/module.h>
#include <linux/slab.h>
#include <linux/mm.h>
#include <linux/kthread.h>
#include <linux/completion.h>
#include <linux/delay.h>
#include <asm/asm.h>
#include <asm/desc.h>
#include <asm/msr.h>
#include <asm/processor-flags.h>
#include <asm/segment.h>
#include <asm/special_insns.h>

#include "vmx_insn.h"	/* selftests/include: the VMX instruction wrappers */

static unsigned long pool_pa;
module_param(pool_pa, ulong, 0444);
static unsigned long image_pa;
module_param(image_pa, ulong, 0444);
static unsigned long canary_pa;
module_param(canary_pa, ulong, 0444);
static bool pkvm;
module_param(pkvm, bool, 0444);
static int lacking = -1;
module_param(lacking, int, 0444);
static bool ept12;
module_param(ept12, bool, 0444);
static unsigned int fuzz;
module_param(fuzz, uint, 0444);
static unsigned long seed = 1;
module_param(seed, ulong, 0444);

/* Field encodings (SDM Vol. 3D, appendix B). */
enum {
	F_PIN = 0x4000, F_PROC1 = 0x4002, F_EXC_BITMAP = 0x4004, F_PF_MASK = 0x4006,
	F_PF_MATCH = 0x4008, F_CR3_TARGETS = 0x400a, F_EXIT = 0x400c,
	F_EXIT_STORE_N = 0x400e, F_EXIT_LOAD_N = 0x4010, F_ENTRY = 0x4012,
	F_ENTRY_LOAD_N = 0x4014, F_ENTRY_INTR = 0x4016, F_ENTRY_ERR = 0x4018,
	F_ENTRY_LEN = 0x401a, F_TPR_THRESHOLD = 0x401c, F_PROC2 = 0x401e,
	F_PLE_GAP = 0x4020, F_PLE_WINDOW = 0x4022,
	F_IO_A = 0x2000, F_IO_B = 0x2002, F_MSR_BITMAP = 0x2004,
	F_EXIT_STORE = 0x2006, F_EXIT_LOAD = 0x2008, F_ENTRY_LOAD = 0x200a,
	F_PML = 0x200e, F_TSC_OFFSET = 0x2010, F_VAPIC = 0x2012,
	F_APIC_ACCESS = 0x2014, F_PI_DESC = 0x2016, F_VMFUNC = 0x2018,
	F_EPTP = 0x201a, F_EOI_EXIT0 = 0x201c, F_EPTP_LIST = 0x2024,
	F_VMREAD_BITMAP = 0x2026, F_VMWRITE_BITMAP = 0x2028, F_VE_INFO = 0x202a,
	F_SPP = 0x2030, F_TSC_MULT = 0x2032, F_VPID = 0x0000, F_PI_VECTOR = 0x0002,
	F_PML_INDEX = 0x0812, F_PREEMPT_TIMER = 0x482e,
	F_CR0_MASK = 0x6000, F_CR4_MASK = 0x6002, F_CR0_SHADOW = 0x6004,
	F_CR4_SHADOW = 0x6006,
	F_LINK = 0x2800, F_G_DEBUGCTL = 0x2802, F_G_PAT = 0x2804, F_G_EFER = 0x2806,
	F_G_ES = 0x800, F_G_CS = 0x802, F_G_SS = 0x804, F_G_DS = 0x806,
	F_G_FS = 0x808, F_G_GS = 0x80a, F_G_LDTR = 0x80c, F_G_TR = 0x80e,
	F_G_ES_LIMIT = 0x4800, F_G_GDTR_LIMIT = 0x4810, F_G_IDTR_LIMIT = 0x4812,
	F_G_ES_AR = 0x4814, F_G_INTERRUPTIBILITY = 0x4824, F_G_ACTIVITY = 0x4826,
	F_G_SYSENTER_CS = 0x482a,
	F_G_CR0 = 0x6800, F_G_CR3 = 0x6802, F_G_CR4 = 0x6804, F_G_ES_BASE = 0x6806,
	F_G_GDTR_BASE = 0x6816, F_G_IDTR_BASE = 0x6818, F_G_DR7 = 0x681a,
	F_G_RSP = 0x681c, F_G_RIP = 0x681e, F_G_RFLAGS = 0x6820,
	F_G_PENDING_DBG = 0x6822, F_G_SYSENTER_ESP = 0x6824, F_G_SYSENTER_EIP = 0x6826,
	F_H_ES = 0xc00, F_H_CS = 0xc02, F_H_SS = 0xc04, F_H_DS = 0xc06,
	F_H_FS = 0xc08, F_H_GS = 0xc0a, F_H_TR = 0xc0c,
	F_H_PAT = 0x2c00, F_H_EFER = 0x2c02, F_H_PERF_GLOBAL = 0x2c04,
	F_H_SYSENTER_CS = 0x4c00,
	F_H_CR0 = 0x6c00, F_H_CR3 = 0x6c02, F_H_CR4 = 0x6c04, F_H_FS_BASE = 0x6c06,
	F_H_GS_BASE = 0x6c08, F_H_TR_BASE = 0x6c0a, F_H_GDTR_BASE = 0x6c0c,
	F_H_IDTR_BASE = 0x6c0e, F_H_SYSENTER_ESP = 0x6c10, F_H_SYSENTER_EIP = 0x6c12,
	F_H_RSP = 0x6c14, F_H_RIP = 0x6c16,
	F_INSN_ERROR = 0x4400, F_EXIT_REASON = 0x4402, F_EXIT_INTR = 0x4404,
	F_EXIT_INTR_ERR = 0x4406, F_IDT_VEC = 0x4408, F_IDT_VEC_ERR = 0x440a,
	F_EXIT_LEN = 0x440c, F_INSN_INFO = 0x440e, F_EXIT_QUAL = 0x6400,
	F_IO_RCX = 0x6402, F_IO_RSI = 0x6404, F_IO_RDI = 0x6406, F_IO_RIP = 0x6408,
	F_GUEST_LINEAR = 0x640a, F_GUEST_PHYS = 0x2400,
};

/* Control bits. */
#define PIN_EXT_INTR	BIT(0)
#define PIN_NMI		BIT(3)
#define PIN_PREEMPT	BIT(6)
#define PIN_POSTED	BIT(7)
#define P1_TSC_OFFSET	BIT(3)
#define P1_TPR_SHADOW	BIT(21)
#define P1_IO_BITMAPS	BIT(25)
#define P1_MSR_BITMAPS	BIT(28)
#define P1_SECONDARY	BIT(31)
#define P2_APIC_ACCESS	BIT(0)
#define P2_EPT		BIT(1)
#define P2_UNRESTRICTED	BIT(7)
#define P2_APIC_REG	BIT(8)
#define P2_VINTR	BIT(9)
#define P2_VMFUNC	BIT(13)
#define P2_SHADOW_VMCS	BIT(14)
#define P2_PML		BIT(17)
#define P2_VE		BIT(18)
#define P2_SPP		BIT(23)
#define P2_PT		BIT(24)
#define P2_TSC_SCALING	BIT(25)
#define EXIT_HOST_64	BIT(9)
#define EXIT_ACK_INTR	BIT(15)
#define EXIT_LOAD_EFER	BIT(21)
#define ENTRY_IA32E	BIT(9)
#define ENTRY_LOAD_EFER	BIT(15)

/* The guest's linear layout (its own page tables). */
#define G_CODE 0x1000UL
#define G_STACK_TOP 0x3000UL

/* Hypercalls used (pkvm only): HOST_DONATE_HYP, HYP_DONATE_HOST. */
#define HC_DONATE_HYP 0x10
#define HC_DONATE_HOST 0x11

/* Outcome of one VMX instruction or entry. */
enum kind { K_OK, K_FAIL_INVALID, K_FAIL_VALID, K_FAULT, K_EXIT };

struct res {
	enum kind kind;
	u32 err;		/* VMfailValid: VM-instruction error; K_FAULT: vector */
	u32 reason;		/* K_EXIT: exit reason (bit 31: failed entry) */
	u64 qual;
};

struct ctl_msr {
	u32 lo, hi;		/* must-be-one, may-be-one */
};

/* One CPU's test state: its pages and what it read of the CPU. */
struct cpu_ctx {
	u64 *vmxon, *vmcs, *pml4, *pdpt, *pd, *pt, *code, *stack;
	u64 *scratch, *bitmap, *vapic, *apic_access, *msr_area, *link;
	u64 *bait;		/* see bait_steps() */
	u64 rev;
	struct ctl_msr pin, proc1, proc2, exit, entry;
	u64 cr0_fixed0, cr0_fixed1, cr4_fixed0, cr4_fixed1;
	struct desc_ptr gdt, idt;
	u16 ds, es;
	u64 tr_base;
	bool launched;
	/* Output. */
	char *out;
	int pos, size;
	/* Fuzz. */
	u64 rng;
	unsigned int iterations;
	u64 launches, resumes, vmwrites;
	u64 w_ok, w_12, w_13, w_other;
	u64 vmfail[32], entryfail[64], exits[80], unexpected;
	int shown;
	struct res last;	/* the previous entry's outcome */
	struct completion done;
};

static __printf(2, 3) void line(struct cpu_ctx *c, const char *fmt, ...)
{
	va_list ap;

	if (c->pos >= c->size - 2)
		return;
	va_start(ap, fmt);
	c->pos += vscnprintf(c->out + c->pos, c->size - c->pos, fmt, ap);
	va_end(ap);
	c->pos += scnprintf(c->out + c->pos, c->size - c->pos, "\n");
}

static void flush_lines(struct cpu_ctx *c)
{
	int i;

	for (i = 0; i < c->pos;) {
		char *nl = strchr(c->out + i, '\n');

		if (!nl)
			break;
		*nl = 0;
		pr_info("vmx_entry: %s\n", c->out + i);
		i = nl - c->out + 1;
	}
	c->pos = 0;
}

/* RFLAGS after a VMX instruction -> outcome (VMfailValid's error read). */
static struct res flags_res(unsigned long fl, long vec);
static struct res flags_only(unsigned long fl, long vec);

static struct res vmwrite(u64 f, u64 v)
{
	struct vmx_res r = vmx_vmwrite_reg(f, v);

	return flags_res(r.fl, r.vec);
}

static struct res vmread(u64 f, u64 *v)
{
	struct vmx_res r;

	*v = 0;
	r = vmx_vmread_reg(f, v);
	return flags_only(r.fl, r.vec);
}

static u64 rd(u64 f)
{
	u64 v = 0;

	vmread(f, &v);
	return v;
}

/* The outcome without the error number (VMREAD uses it: no recursion). */
static struct res flags_only(unsigned long fl, long vec)
{
	struct res r = { K_OK, 0, 0, 0 };

	if (vec >= 0) {
		r.kind = K_FAULT;
		r.err = vec;
	} else if (fl & X86_EFLAGS_CF) {
		r.kind = K_FAIL_INVALID;
	} else if (fl & X86_EFLAGS_ZF) {
		r.kind = K_FAIL_VALID;
	}
	return r;
}

static struct res flags_res(unsigned long fl, long vec)
{
	struct res r = flags_only(fl, vec);

	if (r.kind == K_FAIL_VALID)
		r.err = rd(F_INSN_ERROR);
	return r;
}

enum mem_insn { I_VMXON, I_VMCLEAR, I_VMPTRLD };

static struct res mem_op(enum mem_insn i, u64 pa)
{
	static const enum vmx_mem_insn insn[] = {
		[I_VMXON] = VMX_VMXON, [I_VMCLEAR] = VMX_VMCLEAR, [I_VMPTRLD] = VMX_VMPTRLD,
	};
	u64 op = pa;
	struct vmx_res r = vmx_mem_op(insn[i], &op);

	return flags_res(r.fl, r.vec);
}

static void vmxoff(void)
{
	vmx_plain_op(VMX_VMXOFF);
}

/*
 * VMLAUNCH (resume false) or VMRESUME of the current VMCS, whose host RSP
 * and RIP are set here: a VM exit comes back to label 3 with RSP as it
 * was at the VMWRITE.  Returns 0 after a VM exit, else bit 63 | RFLAGS of
 * the failed instruction.  The guest's registers are whatever it left:
 * every general-purpose register but RSP (reloaded) and RBP (saved on
 * the stack) is clobbered.
 */
static noinline u64 run_guest(bool resume)
{
	u64 ret = resume;

	asm volatile("mov %%rax, %%rbx\n\t"
		     "push %%rbp\n\t"
		     "pushf\n\t"
		     "mov $0x6c14, %%rax\n\t"	/* HOST_RSP */
		     "vmwrite %%rsp, %%rax\n\t"
		     "lea 3f(%%rip), %%rdx\n\t"
		     "mov $0x6c16, %%rax\n\t"	/* HOST_RIP */
		     "vmwrite %%rdx, %%rax\n\t"
		     "test %%rbx, %%rbx\n\t"
		     "jnz 1f\n\t"
		     "vmlaunch\n\t"
		     "jmp 5f\n\t"
		     "1: vmresume\n\t"
		     "5: jbe 2f\n\t"
		     /* The VM exit lands here (host RIP). */
		     "3: xor %%eax, %%eax\n\t"
		     "jmp 4f\n\t"
		     "2: pushf\n\t"
		     "pop %%rax\n\t"
		     "bts $63, %%rax\n\t"
		     "4: popf\n\t"
		     "pop %%rbp\n\t"
		     : "+a"(ret)
		     :
		     : "rbx", "rcx", "rdx", "rsi", "rdi", "r8", "r9", "r10", "r11",
		       "r12", "r13", "r14", "r15", "cc", "memory");
	return ret;
}

static u32 adjust(struct ctl_msr m, u32 want)
{
	return (want | m.lo) & m.hi;
}

static struct ctl_msr ctl_msr(u32 msr)
{
	u64 v;

	rdmsrq(msr, v);
	return (struct ctl_msr){ .lo = (u32)v, .hi = v >> 32 };
}

/* The base of the TSS descriptor in the GDT (16-byte system descriptor). */
static u64 tss_base(const struct desc_ptr *gdt)
{
	const u64 *d = (const u64 *)(gdt->address + GDT_ENTRY_TSS * 8);
	u64 lo = d[0], hi = d[1];

	return ((lo >> 16) & 0xffff) | (((lo >> 32) & 0xff) << 16) |
	       (((lo >> 56) & 0xff) << 24) | ((hi & 0xffffffff) << 32);
}

/* The host state: this CPU as it runs now (interrupts off). */
static void write_host_state(struct cpu_ctx *c)
{
	u64 v;

	vmwrite(F_H_CR0, read_cr0());
	vmwrite(F_H_CR3, __read_cr3());
	vmwrite(F_H_CR4, __read_cr4());
	vmwrite(F_H_CS, __KERNEL_CS);
	vmwrite(F_H_SS, __KERNEL_DS);
	vmwrite(F_H_DS, 0);
	vmwrite(F_H_ES, 0);
	vmwrite(F_H_FS, 0);
	vmwrite(F_H_GS, 0);
	vmwrite(F_H_TR, GDT_ENTRY_TSS * 8);
	rdmsrq(MSR_FS_BASE, v);
	vmwrite(F_H_FS_BASE, v);
	rdmsrq(MSR_GS_BASE, v);
	vmwrite(F_H_GS_BASE, v);
	vmwrite(F_H_TR_BASE, c->tr_base);
	vmwrite(F_H_GDTR_BASE, c->gdt.address);
	vmwrite(F_H_IDTR_BASE, c->idt.address);
	rdmsrq(MSR_IA32_SYSENTER_CS, v);
	vmwrite(F_H_SYSENTER_CS, v);
	rdmsrq(MSR_IA32_SYSENTER_ESP, v);
	vmwrite(F_H_SYSENTER_ESP, v);
	rdmsrq(MSR_IA32_SYSENTER_EIP, v);
	vmwrite(F_H_SYSENTER_EIP, v);
	rdmsrq(MSR_EFER, v);
	vmwrite(F_H_EFER, v);
	rdmsrq(MSR_IA32_CR_PAT, v);
	vmwrite(F_H_PAT, v);
	if (!rdmsrq_safe(MSR_CORE_PERF_GLOBAL_CTRL, &v))
		vmwrite(F_H_PERF_GLOBAL, v);
}

/* The contained guest: 64-bit, its own page tables, an empty IDT. */
static void write_guest_state(struct cpu_ctx *c)
{
	int i;

	vmwrite(F_G_CR0, ((c->cr0_fixed0 | X86_CR0_PE | X86_CR0_PG | X86_CR0_NE |
			   X86_CR0_ET) & c->cr0_fixed1));
	vmwrite(F_G_CR3, __pa(c->pml4));
	vmwrite(F_G_CR4, (c->cr4_fixed0 | X86_CR4_PAE) & c->cr4_fixed1);
	vmwrite(F_G_EFER, EFER_LME | EFER_LMA);
	/* ES, CS, SS, DS, FS, GS, LDTR, TR: selectors, limits, AR, bases. */
	for (i = 0; i < 8; i++) {
		u16 sel = 0;
		u32 limit = 0, ar = 0x10000;	/* unusable */

		if (i == 1) {
			sel = 0x08; limit = 0xffffffff; ar = 0xa09b;
		} else if (i == 2) {
			sel = 0x10; limit = 0xffffffff; ar = 0xc093;
		} else if (i == 7) {
			sel = 0x18; limit = 0x67; ar = 0x8b;
		}
		vmwrite(F_G_ES + 2 * i, sel);
		vmwrite(F_G_ES_LIMIT + 2 * i, limit);
		vmwrite(F_G_ES_AR + 2 * i, ar);
		vmwrite(F_G_ES_BASE + 2 * i, 0);
	}
	vmwrite(F_G_GDTR_BASE, 0);
	vmwrite(F_G_GDTR_LIMIT, 0);
	vmwrite(F_G_IDTR_BASE, 0);
	vmwrite(F_G_IDTR_LIMIT, 0);
	vmwrite(F_G_DR7, 0x400);
	vmwrite(F_G_RSP, G_STACK_TOP);
	vmwrite(F_G_RIP, G_CODE);
	vmwrite(F_G_RFLAGS, X86_EFLAGS_FIXED);
	vmwrite(F_G_PENDING_DBG, 0);
	vmwrite(F_G_SYSENTER_CS, 0);
	vmwrite(F_G_SYSENTER_ESP, 0);
	vmwrite(F_G_SYSENTER_EIP, 0);
	vmwrite(F_G_DEBUGCTL, 0);
	vmwrite(F_G_INTERRUPTIBILITY, 0);
	vmwrite(F_G_ACTIVITY, 0);
	vmwrite(F_LINK, ~0ULL);
}

static void write_controls(struct cpu_ctx *c)
{
	vmwrite(F_PIN, adjust(c->pin, PIN_EXT_INTR | PIN_NMI));
	vmwrite(F_PROC1, adjust(c->proc1, 0));
	vmwrite(F_PROC2, 0);
	vmwrite(F_EXC_BITMAP, 0xffffffff);
	vmwrite(F_PF_MASK, 0);
	vmwrite(F_PF_MATCH, 0);
	vmwrite(F_CR3_TARGETS, 0);
	vmwrite(F_EXIT, adjust(c->exit, EXIT_HOST_64 | EXIT_LOAD_EFER));
	vmwrite(F_ENTRY, adjust(c->entry, ENTRY_IA32E | ENTRY_LOAD_EFER));
	vmwrite(F_EXIT_STORE_N, 0);
	vmwrite(F_EXIT_LOAD_N, 0);
	vmwrite(F_ENTRY_LOAD_N, 0);
	vmwrite(F_ENTRY_INTR, 0);
	vmwrite(F_CR0_MASK, 0);
	vmwrite(F_CR4_MASK, 0);
	vmwrite(F_CR0_SHADOW, 0);
	vmwrite(F_CR4_SHADOW, 0);
	vmwrite(F_TSC_OFFSET, 0);
}

/* A clear VMCS made current and filled for the guest. */
static struct res fresh(struct cpu_ctx *c)
{
	struct res r;

	r = mem_op(I_VMCLEAR, __pa(c->vmcs));
	if (r.kind != K_OK)
		return r;
	r = mem_op(I_VMPTRLD, __pa(c->vmcs));
	if (r.kind != K_OK)
		return r;
	c->launched = false;
	write_controls(c);
	write_guest_state(c);
	write_host_state(c);
	return r;
}

/* Back to the kernel's own descriptor tables and segments after an exit. */
static void after_exit(struct cpu_ctx *c)
{
	native_load_gdt(&c->gdt);
	native_load_idt(&c->idt);
	loadsegment(ds, c->ds);
	loadsegment(es, c->es);
	/*
	 * TR's limit is 0x67 now: as invalidate_tss_limit() (whose reload
	 * path needs a symbol of KVM's namespace) for a task without an I/O
	 * bitmap, which insmod and the fuzz threads are.
	 */
	this_cpu_write(__tss_limit_invalid, true);
}

/* VMLAUNCH or VMRESUME (as the launch state says) and its outcome. */
static struct res enter(struct cpu_ctx *c, bool resume)
{
	struct res r = { K_EXIT, 0, 0, 0 };
	int irqs = 0;
	u64 ret;

again:
	write_host_state(c);
	ret = run_guest(resume);
	if (ret & BIT_ULL(63))
		return flags_res(ret, -1);
	after_exit(c);
	r.reason = rd(F_EXIT_REASON);
	r.qual = rd(F_EXIT_QUAL);
	if (!(r.reason & BIT(31)))
		c->launched = true;
	/*
	 * An external interrupt of the host (exiting is always on, without
	 * acknowledge-on-exit: contain()) ends the guest's run before it got
	 * to its own exit: let the host take it (interrupts are off around
	 * the steps; preemption is off too, get_cpu(), so this CPU stays in
	 * VMX operation) and resume the guest, as a VMM does.  Bounded: a
	 * guest that keeps being interrupted reports reason 1.
	 */
	if (r.reason == 1 && irqs++ < 100) {
		/*
		 * Not STI;CLI back to back: STI blocks interrupts for one
		 * instruction, so the pending one would never be taken.
		 */
		local_irq_enable();
		cpu_relax();
		cpu_relax();
		local_irq_disable();
		resume = true;
		goto again;
	}
	return r;
}

static void show(struct cpu_ctx *c, const char *step, struct res r)
{
	switch (r.kind) {
	case K_OK: line(c, "%s: VMsucceed", step); break;
	case K_FAIL_INVALID: line(c, "%s: VMfailInvalid", step); break;
	case K_FAIL_VALID: line(c, "%s: VMfailValid error=%u", step, r.err); break;
	case K_FAULT: line(c, "%s: fault vector=%u", step, r.err); break;
	case K_EXIT: line(c, "%s: exit reason=0x%x qual=0x%llx", step, r.reason, r.qual); break;
	}
}

/* The host addresses of a VMCS, placed one at a time. */
enum addr_use {
	A_IO_A, A_IO_B, A_MSR_BITMAP, A_VAPIC, A_APIC_ACCESS, A_LINK,
	A_ENTRY_LOAD, A_EXIT_STORE, A_EXIT_LOAD, A_COUNT
};

static const char *const addr_name[A_COUNT] = {
	"io_bitmap_a", "io_bitmap_b", "msr_bitmap", "virtual_apic", "apic_access",
	"link_pointer", "entry_msr_load", "exit_msr_store", "exit_msr_load",
};

/* The MSR area used for the owned case: SYSENTER_CS, harmless to load. */
static void fill_msr_area(struct cpu_ctx *c)
{
	u64 v;

	rdmsrq(MSR_IA32_SYSENTER_CS, v);
	memset(c->msr_area, 0, PAGE_SIZE);
	/* +0: entry load (guest's SYSENTER_CS = 0), +16: exit load (host's own). */
	c->msr_area[0] = MSR_IA32_SYSENTER_CS;
	c->msr_area[2] = MSR_IA32_SYSENTER_CS;
	c->msr_area[3] = v;
	/* +32: exit store. */
	c->msr_area[4] = MSR_IA32_SYSENTER_CS;
}

/* Sets up use @u of address @pa in the current VMCS. */
static void place(struct cpu_ctx *c, enum addr_use u, u64 pa, bool owned)
{
	u32 p1 = rd(F_PROC1);

	switch (u) {
	case A_IO_A:
	case A_IO_B:
		vmwrite(F_PROC1, adjust(c->proc1, p1 | P1_IO_BITMAPS));
		vmwrite(F_IO_A, u == A_IO_A ? pa : __pa(c->bitmap));
		vmwrite(F_IO_B, u == A_IO_B ? pa : __pa(c->bitmap));
		break;
	case A_MSR_BITMAP:
		vmwrite(F_PROC1, adjust(c->proc1, p1 | P1_MSR_BITMAPS));
		vmwrite(F_MSR_BITMAP, pa);
		break;
	case A_VAPIC:
		vmwrite(F_PROC1, adjust(c->proc1, p1 | P1_TPR_SHADOW));
		vmwrite(F_VAPIC, pa);
		vmwrite(F_TPR_THRESHOLD, 0);
		break;
	case A_APIC_ACCESS:
		vmwrite(F_PROC1, adjust(c->proc1, p1 | P1_SECONDARY));
		vmwrite(F_PROC2, P2_APIC_ACCESS);
		vmwrite(F_APIC_ACCESS, pa);
		break;
	case A_LINK:
		vmwrite(F_LINK, pa);
		break;
	case A_ENTRY_LOAD:
		vmwrite(F_ENTRY_LOAD, pa);
		vmwrite(F_ENTRY_LOAD_N, 1);
		break;
	case A_EXIT_STORE:
		vmwrite(F_EXIT_STORE, pa + (owned ? 32 : 0));
		vmwrite(F_EXIT_STORE_N, 1);
		break;
	case A_EXIT_LOAD:
		vmwrite(F_EXIT_LOAD, pa + (owned ? 16 : 0));
		vmwrite(F_EXIT_LOAD_N, 1);
		break;
	default:
		break;
	}
}

/* Each host address on a host page (the control, compared with bare) and,
 * if given, on each kind of hypervisor memory. */
static void address_steps(struct cpu_ctx *c)
{
	static const char *const tname[3] = { "pool", "image", "canary" };
	u64 targets[3] = { pool_pa, image_pa, canary_pa };
	char step[64];
	int u, t;

	for (u = 0; u < A_COUNT; u++) {
		u64 own;

		fill_msr_area(c);
		switch (u) {
		case A_VAPIC: own = __pa(c->vapic); break;
		case A_APIC_ACCESS: own = __pa(c->apic_access); break;
		case A_LINK: own = __pa(c->link); break;
		case A_ENTRY_LOAD: case A_EXIT_STORE: case A_EXIT_LOAD:
			own = __pa(c->msr_area); break;
		default: own = __pa(c->bitmap); break;
		}
		fresh(c);
		place(c, u, own, true);
		snprintf(step, sizeof(step), "cmp_owned_%s", addr_name[u]);
		show(c, step, enter(c, false));
		for (t = 0; t < 3; t++) {
			if (!targets[t])
				continue;
			fresh(c);
			place(c, u, targets[t], false);
			snprintf(step, sizeof(step), "hostile_%s_%s", tname[t], addr_name[u]);
			show(c, step, enter(c, false));
		}
	}
}

/* A hidden control: its fields (addresses on the pool page) and bits. */
struct hidden {
	const char *name;
	u32 pin, proc2;
	u32 fields[3];
};

static const struct hidden hidden_controls[] = {
	{ "pml", 0, P2_PML | P2_EPT, { F_PML, F_PML_INDEX, F_EPTP } },
	{ "posted_interrupts", PIN_POSTED, P2_VINTR | P2_APIC_REG, { F_PI_DESC, F_PI_VECTOR, F_EOI_EXIT0 } },
	{ "ept_violation_ve", 0, P2_VE | P2_EPT, { F_VE_INFO, F_EPTP } },
	{ "ept", 0, P2_EPT, { F_EPTP } },
	{ "vmcs_shadowing", 0, P2_SHADOW_VMCS, { F_VMREAD_BITMAP, F_VMWRITE_BITMAP } },
	{ "vmfunc", 0, P2_VMFUNC, { F_VMFUNC, F_EPTP_LIST } },
	{ "preemption_timer", PIN_PREEMPT, 0, { F_PREEMPT_TIMER } },
	{ "unrestricted_guest", 0, P2_UNRESTRICTED | P2_EPT, { 0 } },
	{ "spp", 0, P2_SPP | P2_EPT, { F_SPP } },
	{ "pt_in_vmx", 0, P2_PT, { 0 } },
};

static void hidden_steps(struct cpu_ctx *c)
{
	char step[64];
	int i, j;

	for (i = 0; i < ARRAY_SIZE(hidden_controls); i++) {
		const struct hidden *h = &hidden_controls[i];

		fresh(c);
		for (j = 0; j < ARRAY_SIZE(h->fields) && h->fields[j]; j++) {
			u64 v = h->fields[j] >> 13 == 1 ? pool_pa : 0xf2;

			snprintf(step, sizeof(step), "hidden_%s_vmwrite_%#x", h->name, h->fields[j]);
			show(c, step, vmwrite(h->fields[j], v));
		}
		if (h->pin)
			vmwrite(F_PIN, rd(F_PIN) | h->pin);
		if (h->proc2) {
			vmwrite(F_PROC1, rd(F_PROC1) | P1_SECONDARY);
			vmwrite(F_PROC2, h->proc2);
		}
		snprintf(step, sizeof(step), "hidden_%s_launch", h->name);
		show(c, step, enter(c, false));
	}
}

/*
 * TSC scaling (offered where the CPU has it, composed into vmcs02): the
 * guest runs RDTSC with TSC offsetting, scaling, multiplier 1 and an
 * offset, pushes EDX and EAX and exits on CPUID.  It reads
 * ((TSC * 1) >> 48) + offset = the offset exactly (the TSC is far below
 * 2^48), the same on the bare CPU and under pkvm; a hypervisor that
 * dropped the multiplier would give TSC + offset, one that hid the
 * control VMfailValid(7).
 */
#define G_TSC_CODE 0x100

static void tsc_scaling_steps(struct cpu_ctx *c)
{
	static const u8 code[] = { 0x0f, 0x31, 0x52, 0x50, 0x0f, 0xa2 };
	const u64 offset = 0x123456789abcULL;
	struct res r;

	memcpy((u8 *)c->code + G_TSC_CODE, code, sizeof(code));
	fresh(c);
	c->stack[510] = 0;
	c->stack[511] = 0;
	vmwrite(F_PROC1, adjust(c->proc1, P1_TSC_OFFSET | P1_SECONDARY));
	show(c, "cmp_tsc_scaling_vmwrite_proc2", vmwrite(F_PROC2, P2_TSC_SCALING));
	show(c, "cmp_tsc_scaling_vmwrite_multiplier", vmwrite(F_TSC_MULT, 1));
	vmwrite(F_TSC_OFFSET, offset);
	vmwrite(F_G_RIP, G_CODE + G_TSC_CODE);
	r = enter(c, false);
	show(c, "cmp_tsc_scaling_launch", r);
	if (r.kind == K_EXIT)
		line(c, "cmp_tsc_scaling_guest_tsc: 0x%llx (the offset: 0x%llx)",
		     (c->stack[511] << 32) | (c->stack[510] & 0xffffffff), offset);
}

/* The exit-information fields, VMWRITten then read back, then a launch. */
static const u32 ro_fields[] = {
	F_INSN_ERROR, F_EXIT_REASON, F_EXIT_INTR, F_EXIT_INTR_ERR, F_IDT_VEC,
	F_IDT_VEC_ERR, F_EXIT_LEN, F_INSN_INFO, F_EXIT_QUAL, F_IO_RCX, F_IO_RSI,
	F_IO_RDI, F_IO_RIP, F_GUEST_LINEAR, F_GUEST_PHYS,
};

static void readonly_steps(struct cpu_ctx *c)
{
	char step[64];
	struct res r;
	int i;

	fresh(c);
	for (i = 0; i < ARRAY_SIZE(ro_fields); i++) {
		u64 v = 0;

		snprintf(step, sizeof(step), "cmp_vmwrite_ro_%#x", ro_fields[i]);
		show(c, step, vmwrite(ro_fields[i], 0x5a5a5a5aULL + i));
		r = vmread(ro_fields[i], &v);
		line(c, "%s: read %s value=0x%llx", step, r.kind == K_OK ? "ok" : "failed", v);
	}
	show(c, "cmp_vmwrite_ro_launch", enter(c, false));
	line(c, "cmp_vmwrite_ro_after: intr=0x%llx idt=0x%llx len=0x%llx",
	     rd(F_EXIT_INTR), rd(F_IDT_VEC), rd(F_EXIT_LEN));
	/* VMRESUME of the launched VMCS: the same exit again. */
	show(c, "cmp_vmwrite_ro_resume", enter(c, true));
}

static u64 hypercall(u64 nr, u64 a0, u64 a1)
{
	u64 rax = nr, rbx = a0, rcx = a1;

	asm volatile("vmcall" : "+a"(rax), "+b"(rbx), "+c"(rcx) : : "rdx", "rsi", "memory");
	return rax;
}

/* A live guest's virtual-APIC and APIC-access pages cannot be donated. */
static void pinned_steps(struct cpu_ctx *c)
{
	u64 vapic = __pa(c->vapic) >> PAGE_SHIFT, apic = __pa(c->apic_access) >> PAGE_SHIFT;

	fresh(c);
	place(c, A_VAPIC, __pa(c->vapic), true);
	vmwrite(F_PROC1, rd(F_PROC1) | P1_SECONDARY);
	vmwrite(F_PROC2, P2_APIC_ACCESS);
	vmwrite(F_APIC_ACCESS, __pa(c->apic_access));
	show(c, "pinned_launch", enter(c, false));
	line(c, "pinned_donate_virtual_apic: rax=0x%llx", hypercall(HC_DONATE_HYP, vapic, 1));
	line(c, "pinned_donate_apic_access: rax=0x%llx", hypercall(HC_DONATE_HYP, apic, 1));
	/* VMRESUME: the guest still runs on them. */
	show(c, "pinned_resume", enter(c, true));
	/* VMCLEAR ends the guest: the pins go. */
	show(c, "pinned_vmclear", mem_op(I_VMCLEAR, __pa(c->vmcs)));
	line(c, "released_donate_virtual_apic: rax=0x%llx", hypercall(HC_DONATE_HYP, vapic, 1));
	line(c, "released_back_virtual_apic: rax=0x%llx", hypercall(HC_DONATE_HOST, vapic, 1));
	line(c, "released_donate_apic_access: rax=0x%llx", hypercall(HC_DONATE_HYP, apic, 1));
	line(c, "released_back_apic_access: rax=0x%llx", hypercall(HC_DONATE_HOST, apic, 1));
}

/*
 * The three host addresses that only the ownership check stops on a page
 * whose contents pass every other check: the MSR bitmap (any contents
 * do), the VMCS link pointer (the revision identifier in the page's first
 * word) and the VM-entry MSR-load area (at +16 a valid entry: the guest's
 * SYSENTER_CS = 0).  The page is this module's own, filled so (the
 * "bait"): on it, owned, the guest runs (compared with the bare CPU);
 * donated to the hypervisor (pkvm=1), each entry fails as
 * Documentation/nested.rst says (VMfailValid 7; exit 33/4; exit 34/1), so
 * the hypervisor neither used nor read it; given back, the same entries
 * run the guest again, and the page holds what was written (nothing of
 * it changed while the hypervisor had it).  The pool page and the module
 * image are the fixed steps' hostile_pool_* and hostile_image_*, whose
 * contents the host cannot choose.
 */
static const enum addr_use bait_uses[] = { A_MSR_BITMAP, A_LINK, A_ENTRY_LOAD };
#define BAIT_PAT 0x6b6b6b6b6b6b6b6bULL

static void fill_bait(struct cpu_ctx *c)
{
	int i;

	for (i = 0; i < PAGE_SIZE / 8; i++)
		c->bait[i] = BAIT_PAT;
	c->bait[0] = c->rev;			/* a VMCS link target */
	c->bait[2] = MSR_IA32_SYSENTER_CS;	/* +16: index, reserved 0 */
	c->bait[3] = 0;				/* its value */
}

/* The bait's first word that differs from fill_bait()'s, or -1. */
static int bait_changed(struct cpu_ctx *c)
{
	int i;

	for (i = 0; i < PAGE_SIZE / 8; i++) {
		u64 want = i == 0 ? c->rev : i == 2 ? MSR_IA32_SYSENTER_CS : i == 3 ? 0 : BAIT_PAT;

		if (c->bait[i] != want)
			return i;
	}
	return -1;
}

static void bait_entries(struct cpu_ctx *c, const char *prefix)
{
	char step[64];
	int i;

	for (i = 0; i < ARRAY_SIZE(bait_uses); i++) {
		enum addr_use u = bait_uses[i];

		fresh(c);
		place(c, u, __pa(c->bait) + (u == A_ENTRY_LOAD ? 16 : 0), false);
		snprintf(step, sizeof(step), "%s_%s", prefix, addr_name[u]);
		show(c, step, enter(c, false));
	}
}

static void bait_steps(struct cpu_ctx *c)
{
	u64 pfn = __pa(c->bait) >> PAGE_SHIFT, rax;
	int w;

	fill_bait(c);
	bait_entries(c, "cmp_bait_owned");
	if (!pkvm)
		return;
	rax = hypercall(HC_DONATE_HYP, pfn, 1);
	line(c, "bait_donate: rax=0x%llx", rax);
	if (rax)
		return;
	/* The page is the hypervisor's now: not touched until given back. */
	bait_entries(c, "hostile_donated");
	rax = hypercall(HC_DONATE_HOST, pfn, 1);
	line(c, "bait_back: rax=0x%llx", rax);
	if (rax) {
		c->bait = NULL;		/* not the host's: leaked, never freed */
		return;
	}
	w = bait_changed(c);
	if (w < 0)
		line(c, "bait_unchanged: yes");
	else
		line(c, "bait_unchanged: no word=%d value=0x%llx", w, c->bait[w]);
	bait_entries(c, "bait_back");
}

/*
 * ept12=1: the host's own EPT (EPT12) for the guest, as the host's KVM
 * would build one, with its tables placed on hypervisor memory.  The
 * hypervisor walks EPT12 on the guest's first EPT violation of its shadow
 * EPT, and every table page must be the host's (Documentation/
 * shadow-ept.rst): on a pool page, a frame of the module image or a page
 * donated to the hypervisor the walk stops without reading it, and the
 * host sees its guest triple-fault (exit reason 2).  Steps:
 *   ept12_owned, ept12_owned_via   the control: EPTP12 at this module's
 *        PML4 (identity 4 KiB leaves for the guest's pages), and at a
 *        second PML4 whose entry points at a copy of the PDPT: the guest
 *        runs (CPUID exit)
 *   ept12_{pool,image}_root        EPTP12 on the pool page / image frame
 *   ept12_{pool,image}_pml4e       a PML4 entry pointing there
 *   ept12_bait_donate, ept12_donated_root, ept12_donated_pml4e
 *        the two valid tables of the control (the PML4 copy and the PDPT
 *        copy, the "bait") donated to the hypervisor: only the ownership
 *        check stops the walk, which would otherwise run the guest
 *   ept12_bait_back, ept12_bait_unchanged, ept12_back_root, ept12_back_pml4e
 *        given back: unchanged, and the guest runs on them again
 * A global INVEPT comes before every step (the shadow of an EPTP12 the
 * previous step used would otherwise keep its leaves: no walk) and at
 * the end (the shares of this module's pages go back before they are
 * freed).
 */
#define EPT_RWX 7ULL
#define EPT_WB_LEAF (6ULL << 3)
#define EPTP_WB_4L (6ULL | (3ULL << 3))
#define EPT_PAGES 16

struct ept12 {
	u64 *page[EPT_PAGES];
	int used;
};

static u64 *ept_alloc(struct ept12 *e)
{
	u64 *p;

	if (e->used == EPT_PAGES)
		return NULL;
	p = (u64 *)get_zeroed_page(GFP_KERNEL);
	e->page[e->used] = p;
	if (p)
		e->used++;
	return p;
}

/* Identity 4 KiB leaf (RWX, WB) for @pa in the EPT rooted at e->page[0]. */
static int ept_map(struct ept12 *e, u64 pa)
{
	u64 *t = e->page[0];
	int level;

	for (level = 3; level >= 1; level--) {
		int idx = (pa >> (12 + 9 * level)) & 511;

		if (!t[idx]) {
			u64 *n = ept_alloc(e);

			if (!n)
				return -ENOMEM;
			t[idx] = __pa(n) | EPT_RWX;
		}
		t = __va(t[idx] & ~0xfffULL);
	}
	t[(pa >> 12) & 511] = pa | EPT_RWX | EPT_WB_LEAF;
	return 0;
}

static void invept_global(void)
{
	struct { u64 eptp, rsvd; } desc = { 0, 0 };

	asm volatile("invept %0, %1" : : "m"(desc), "r"(2ULL) : "cc", "memory");
}

static void ept12_enter(struct cpu_ctx *c, const char *step, u64 eptp)
{
	invept_global();
	fresh(c);
	vmwrite(F_PROC1, rd(F_PROC1) | P1_SECONDARY);
	vmwrite(F_PROC2, P2_EPT);
	vmwrite(F_EPTP, eptp);
	show(c, step, enter(c, false));
}

/* EPT12 and its extra tables, built before VMXON (page allocation). */
static struct ept12 ept_state;
static u64 *ept_via, *ept_bait_pml4, *ept_bait_pdpt, *ept_bad;

static bool ept12_prepare(struct cpu_ctx *c)
{
	u64 *guest_pages[] = { c->pml4, c->pdpt, c->pd, c->pt, c->code, c->stack };
	struct ept12 *e = &ept_state;
	int i;

	if (!ept_alloc(e))
		return false;
	for (i = 0; i < ARRAY_SIZE(guest_pages); i++)
		if (ept_map(e, __pa(guest_pages[i])))
			return false;
	ept_via = ept_alloc(e);
	ept_bait_pml4 = ept_alloc(e);
	ept_bait_pdpt = ept_alloc(e);
	ept_bad = ept_alloc(e);
	if (!ept_via || !ept_bait_pml4 || !ept_bait_pdpt || !ept_bad)
		return false;
	/* Every guest page is below 4 GiB: PML4 entry 0, one PDPT. */
	memcpy(ept_bait_pml4, e->page[0], PAGE_SIZE);
	memcpy(ept_bait_pdpt, __va(e->page[0][0] & ~0xfffULL), PAGE_SIZE);
	ept_via[0] = __pa(ept_bait_pdpt) | EPT_RWX;
	return true;
}

static void ept12_free(void)
{
	int i;

	for (i = 0; i < ept_state.used; i++)
		free_page((unsigned long)ept_state.page[i]);
}

static void ept12_steps(struct cpu_ctx *c, unsigned int unused)
{
	struct ept12 *e = &ept_state;
	u64 *via = ept_via, *bait_pml4 = ept_bait_pml4, *bait_pdpt = ept_bait_pdpt;
	u64 *bad = ept_bad, pml4_pa = __pa(e->page[0]), rax1, rax2;
	int i, changed = -1;

	ept12_enter(c, "ept12_owned", pml4_pa | EPTP_WB_4L);
	ept12_enter(c, "ept12_owned_via", __pa(via) | EPTP_WB_4L);
	ept12_enter(c, "ept12_owned_bait", __pa(bait_pml4) | EPTP_WB_4L);
	ept12_enter(c, "ept12_pool_root", (pool_pa & ~0xfffUL) | EPTP_WB_4L);
	ept12_enter(c, "ept12_image_root", (image_pa & ~0xfffUL) | EPTP_WB_4L);
	bad[0] = (pool_pa & ~0xfffUL) | EPT_RWX;
	ept12_enter(c, "ept12_pool_pml4e", __pa(bad) | EPTP_WB_4L);
	bad[0] = (image_pa & ~0xfffUL) | EPT_RWX;
	ept12_enter(c, "ept12_image_pml4e", __pa(bad) | EPTP_WB_4L);
	invept_global();
	rax1 = hypercall(HC_DONATE_HYP, __pa(bait_pml4) >> PAGE_SHIFT, 1);
	rax2 = hypercall(HC_DONATE_HYP, __pa(bait_pdpt) >> PAGE_SHIFT, 1);
	line(c, "ept12_bait_donate: rax=0x%llx rax=0x%llx", rax1, rax2);
	if (rax1 || rax2)
		goto out;
	ept12_enter(c, "ept12_donated_root", __pa(bait_pml4) | EPTP_WB_4L);
	ept12_enter(c, "ept12_donated_pml4e", __pa(via) | EPTP_WB_4L);
	invept_global();
	rax1 = hypercall(HC_DONATE_HOST, __pa(bait_pml4) >> PAGE_SHIFT, 1);
	rax2 = hypercall(HC_DONATE_HOST, __pa(bait_pdpt) >> PAGE_SHIFT, 1);
	line(c, "ept12_bait_back: rax=0x%llx rax=0x%llx", rax1, rax2);
	if (rax1 || rax2) {
		/* Not the host's: leaked, never freed. */
		for (i = 0; i < e->used; i++)
			if (e->page[i] == bait_pml4 || e->page[i] == bait_pdpt)
				e->page[i] = NULL;
		goto out;
	}
	for (i = 0; i < PAGE_SIZE / 8 && changed < 0; i++)
		if (bait_pml4[i] != e->page[0][i] ||
		    bait_pdpt[i] != ((u64 *)__va(e->page[0][0] & ~0xfffULL))[i])
			changed = i;
	if (changed < 0)
		line(c, "ept12_bait_unchanged: yes");
	else
		line(c, "ept12_bait_unchanged: no word=%d", changed);
	ept12_enter(c, "ept12_back_root", __pa(bait_pml4) | EPTP_WB_4L);
	ept12_enter(c, "ept12_back_pml4e", __pa(via) | EPTP_WB_4L);
out:
	invept_global();
	mem_op(I_VMCLEAR, __pa(c->vmcs));
	line(c, "ept12_pages: %d", e->used);
}

/* A secondary control the (bare) CPU does not have, set anyway. */
static void lacking_steps(struct cpu_ctx *c)
{
	int bit = lacking;

	if (bit >= 32)
		return;		/* the bare CPU has every secondary control */
	if (bit < 0) {
		for (bit = 0; bit < 32; bit++)
			if (!(c->proc2.hi & BIT(bit)))
				break;
		if (bit == 32)
			return;
	}
	line(c, "lacking_bit=%d", bit);
	fresh(c);
	vmwrite(F_PROC1, rd(F_PROC1) | P1_SECONDARY);
	vmwrite(F_PROC2, BIT(bit));
	show(c, "cmp_lacking_control", enter(c, false));
}

/* ------------------------------------------------------------------ */
/* The fuzz.                                                           */

static u64 rnd(struct cpu_ctx *c)
{
	/* xorshift64* */
	c->rng ^= c->rng >> 12;
	c->rng ^= c->rng << 25;
	c->rng ^= c->rng >> 27;
	return c->rng * 0x2545F4914F6CDD1DULL;
}

/* Every field the fuzz picks from (valid on some CPU), addresses first. */
static const u32 addr_fields[] = {
	F_IO_A, F_IO_B, F_MSR_BITMAP, F_EXIT_STORE, F_EXIT_LOAD, F_ENTRY_LOAD,
	F_PML, F_VAPIC, F_APIC_ACCESS, F_PI_DESC, F_VMFUNC, F_EPTP, F_EPTP_LIST,
	F_VMREAD_BITMAP, F_VMWRITE_BITMAP, F_VE_INFO, F_SPP, F_LINK,
};

static const u32 other_fields[] = {
	F_PIN, F_PROC1, F_EXC_BITMAP, F_PF_MASK, F_PF_MATCH, F_CR3_TARGETS, F_EXIT,
	F_EXIT_STORE_N, F_EXIT_LOAD_N, F_ENTRY, F_ENTRY_LOAD_N, F_ENTRY_INTR,
	F_ENTRY_ERR, F_ENTRY_LEN, F_TPR_THRESHOLD, F_PROC2, F_PLE_GAP, F_PLE_WINDOW,
	F_TSC_OFFSET, F_EOI_EXIT0, F_TSC_MULT, F_VPID, F_PI_VECTOR, F_PML_INDEX,
	F_PREEMPT_TIMER, F_CR0_MASK, F_CR4_MASK, F_CR0_SHADOW, F_CR4_SHADOW,
	F_G_DEBUGCTL, F_G_PAT, F_G_EFER, F_G_ES, F_G_CS, F_G_SS, F_G_DS, F_G_FS,
	F_G_GS, F_G_LDTR, F_G_TR, F_G_ES_LIMIT, F_G_ES_LIMIT + 2, F_G_ES_LIMIT + 4,
	F_G_ES_LIMIT + 14, F_G_GDTR_LIMIT, F_G_ES_AR, F_G_ES_AR + 2, F_G_ES_AR + 4,
	F_G_ES_AR + 12, F_G_ES_AR + 14, F_G_INTERRUPTIBILITY, F_G_ACTIVITY,
	F_G_SYSENTER_CS, F_G_CR0, F_G_CR4, F_G_ES_BASE, F_G_ES_BASE + 2,
	F_G_ES_BASE + 4, F_G_ES_BASE + 14, F_G_GDTR_BASE, F_G_DR7, F_G_RFLAGS,
	F_G_PENDING_DBG, F_G_SYSENTER_ESP, F_G_SYSENTER_EIP,
	F_INSN_ERROR, F_EXIT_REASON, F_EXIT_INTR, F_EXIT_INTR_ERR, F_IDT_VEC,
	F_IDT_VEC_ERR, F_EXIT_LEN, F_INSN_INFO, F_EXIT_QUAL, F_IO_RCX, F_IO_RSI,
	F_IO_RDI, F_IO_RIP, F_GUEST_LINEAR, F_GUEST_PHYS,
	/* Host state: written, then put back before the entry. */
	F_H_CR0, F_H_CR4, F_H_CS, F_H_TR, F_H_RIP, F_H_EFER, F_H_PAT,
};

static u64 hyp_target(struct cpu_ctx *c)
{
	u64 t[3] = { pool_pa, image_pa, canary_pa };
	u64 v = t[rnd(c) % 3];

	return v ? v : pool_pa;
}

static u64 addr_value(struct cpu_ctx *c)
{
	switch (rnd(c) % 10) {
	case 0: return 0;
	case 1: return ~0ULL;
	case 2: return pool_pa;
	case 3: return image_pa;
	case 4: return canary_pa;
	case 5: return __pa(c->scratch);
	case 6: return __pa(c->scratch) | (8 << (rnd(c) % 9));
	case 7: return 1ULL << (40 + rnd(c) % 24);
	case 8: return hyp_target(c) + (rnd(c) & 0xff0);
	default: return rnd(c) | BIT_ULL(50);
	}
}

static u64 value(struct cpu_ctx *c, u64 f)
{
	u64 cur = rd(f);

	switch (rnd(c) % 8) {
	case 0: return 0;
	case 1: return ~0ULL;
	case 2: return rnd(c);
	case 3: return rnd(c) & 0xff;
	case 4: return cur ^ BIT_ULL(rnd(c) % 64);
	case 5: return cur ^ BIT_ULL(rnd(c) % 32) ^ BIT_ULL(rnd(c) % 32);
	case 6: return cur | (u32)rnd(c);
	default: return cur & rnd(c);
	}
}

static u64 encoding(struct cpu_ctx *c, bool *addr)
{
	u64 r = rnd(c) % 100;

	*addr = false;
	if (r < 20) {
		*addr = true;
		return addr_fields[rnd(c) % ARRAY_SIZE(addr_fields)];
	}
	if (r < 85)
		return other_fields[rnd(c) % ARRAY_SIZE(other_fields)];
	if (r < 88)
		return (u32)rnd(c);		/* most are not VMCS fields */
	if (r < 90)
		return rnd(c);			/* bits 63:32 set */
	if (r < 95)
		return addr_fields[rnd(c) % ARRAY_SIZE(addr_fields)] | 1;	/* high halves */
	return other_fields[rnd(c) % ARRAY_SIZE(other_fields)] | 1;	/* not 64-bit */
}

static void note_unexpected(struct cpu_ctx *c, unsigned int it, const char *what, struct res r)
{
	c->unexpected++;
	if (c->shown++ < 8)
		line(c, "fuzz unexpected it=%u %s kind=%d err=%u reason=0x%x qual=0x%llx (previous entry: kind=%d err=%u reason=0x%x)",
		     it, what, r.kind, r.err, r.reason, r.qual, c->last.kind, c->last.err,
		     c->last.reason);
}

/*
 * What the guest may not be given: the fields that keep it contained
 * (its page tables, code, stack, empty IDT, active), the host state (a VM
 * exit must land back here), external-interrupt and NMI exiting without
 * acknowledge-interrupt-on-exit (the host must keep its interrupts) and
 * MSR areas only on hypervisor memory (a host-owned one would WRMSR on
 * the host).
 */
static void contain(struct cpu_ctx *c)
{
	static const u32 area[3][2] = {
		{ F_EXIT_STORE_N, F_EXIT_STORE }, { F_EXIT_LOAD_N, F_EXIT_LOAD },
		{ F_ENTRY_LOAD_N, F_ENTRY_LOAD },
	};
	int i;

	vmwrite(F_G_CR3, __pa(c->pml4));
	vmwrite(F_G_RIP, G_CODE);
	vmwrite(F_G_RSP, G_STACK_TOP);
	vmwrite(F_G_IDTR_BASE, 0);
	vmwrite(F_G_IDTR_LIMIT, 0);
	vmwrite(F_G_ACTIVITY, 0);
	/*
	 * The host's interrupts and NMIs must come back to it (a guest that
	 * took one would consume it: a lost timer tick stops the test VM).
	 */
	vmwrite(F_PIN, rd(F_PIN) | PIN_EXT_INTR | PIN_NMI);
	vmwrite(F_EXIT, rd(F_EXIT) & ~EXIT_ACK_INTR);
	for (i = 0; i < 3; i++)
		if (rd(area[i][0]))
			vmwrite(area[i][1], hyp_target(c) + (rnd(c) % 4 == 0 ? 8 : 0));
	write_host_state(c);
}

static void fuzz_one(struct cpu_ctx *c, unsigned int it)
{
	int n = 1 + rnd(c) % 8, i;
	struct res r;

	if (it % 16 == 0) {
		r = fresh(c);
		if (r.kind != K_OK)
			note_unexpected(c, it, "fresh", r);
	}
	for (i = 0; i < n; i++) {
		bool addr;
		u64 f = encoding(c, &addr);
		u64 v = addr ? addr_value(c) : value(c, f);

		r = vmwrite(f, v);
		c->vmwrites++;
		if (r.kind == K_OK)
			c->w_ok++;
		else if (r.kind == K_FAIL_VALID && r.err == 12)
			c->w_12++;
		else if (r.kind == K_FAIL_VALID && r.err == 13)
			c->w_13++;
		else {
			c->w_other++;
			note_unexpected(c, it, "vmwrite", r);
		}
	}
	contain(c);
	if (c->launched)
		c->resumes++;
	else
		c->launches++;
	r = enter(c, c->launched);
	switch (r.kind) {
	case K_FAIL_VALID:
		/* 7 controls, 8 host state (26, MOV-SS blocking, is the host's own). */
		if (r.err == 7 || r.err == 8)
			c->vmfail[r.err]++;
		else
			note_unexpected(c, it, "entry", r);
		break;
	case K_EXIT:
		if (r.reason & BIT(31)) {
			u32 b = r.reason & 0xffff;

			if ((b == 33 && (r.qual == 0 || r.qual == 2 || r.qual == 3 || r.qual == 4)) ||
			    (b == 34 && r.qual >= 1) || b == 41)
				c->entryfail[b]++;
			else
				note_unexpected(c, it, "entry failure", r);
		} else if ((r.reason & 0xffff) < ARRAY_SIZE(c->exits) && !(r.reason & 0x7fff0000)) {
			c->exits[r.reason & 0xffff]++;
		} else {
			note_unexpected(c, it, "exit", r);
		}
		break;
	default:
		note_unexpected(c, it, "entry", r);
		break;
	}
	c->last = r;
}

static void report_fuzz(struct cpu_ctx *c, int cpu)
{
	char buf[512];
	int n = 0, i;

	line(c, "fuzz cpu=%d iterations=%u vmwrites=%llu launches=%llu resumes=%llu",
	     cpu, c->iterations, c->vmwrites, c->launches, c->resumes);
	line(c, "fuzz cpu=%d vmwrite ok=%llu error12=%llu error13=%llu other=%llu",
	     cpu, c->w_ok, c->w_12, c->w_13, c->w_other);
	for (i = 0; i < ARRAY_SIZE(c->vmfail); i++)
		if (c->vmfail[i])
			n += scnprintf(buf + n, sizeof(buf) - n, " vmfail%d=%llu", i, c->vmfail[i]);
	for (i = 0; i < ARRAY_SIZE(c->entryfail); i++)
		if (c->entryfail[i])
			n += scnprintf(buf + n, sizeof(buf) - n, " entryfail%d=%llu", i,
				       c->entryfail[i]);
	for (i = 0; i < ARRAY_SIZE(c->exits); i++)
		if (c->exits[i])
			n += scnprintf(buf + n, sizeof(buf) - n, " exit%d=%llu", i, c->exits[i]);
	line(c, "fuzz cpu=%d outcome%s", cpu, n ? buf : " none");
	line(c, "fuzz cpu=%d unexpected=%llu", cpu, c->unexpected);
}

/* ------------------------------------------------------------------ */

static void free_ctx(struct cpu_ctx *c)
{
	u64 **pages[] = { &c->vmxon, &c->vmcs, &c->pml4, &c->pdpt, &c->pd, &c->pt,
			  &c->code, &c->stack, &c->scratch, &c->bitmap, &c->vapic,
			  &c->apic_access, &c->msr_area, &c->link, &c->bait };
	int i;

	for (i = 0; i < ARRAY_SIZE(pages); i++)
		free_page((unsigned long)*pages[i]);
	kfree(c->out);
	kfree(c);
}

static struct cpu_ctx *alloc_ctx(int size)
{
	u64 **pages[15];
	struct cpu_ctx *c = kzalloc(sizeof(*c), GFP_KERNEL);
	static const u8 cpuid[] = { 0x0f, 0xa2 };
	u64 basic;
	int i;

	if (!c)
		return NULL;
	pages[0] = &c->vmxon; pages[1] = &c->vmcs; pages[2] = &c->pml4;
	pages[3] = &c->pdpt; pages[4] = &c->pd; pages[5] = &c->pt; pages[6] = &c->code;
	pages[7] = &c->stack; pages[8] = &c->scratch; pages[9] = &c->bitmap;
	pages[10] = &c->vapic; pages[11] = &c->apic_access; pages[12] = &c->msr_area;
	pages[13] = &c->link; pages[14] = &c->bait;
	c->out = kzalloc(size, GFP_KERNEL);
	c->size = size;
	for (i = 0; i < ARRAY_SIZE(pages); i++) {
		/* Below 4 GiB: the guest's CR3 may be used in any paging mode. */
		*pages[i] = (u64 *)get_zeroed_page(GFP_KERNEL | GFP_DMA32);
		if (!*pages[i])
			goto fail;
	}
	if (!c->out)
		goto fail;
	rdmsrq(MSR_IA32_VMX_BASIC, basic);
	c->rev = basic & 0x7fffffff;
	c->vmxon[0] = c->rev;
	c->vmcs[0] = c->rev;
	c->link[0] = c->rev;
	c->pml4[0] = __pa(c->pdpt) | 7;
	c->pdpt[0] = __pa(c->pd) | 7;
	c->pd[0] = __pa(c->pt) | 7;
	c->pt[G_CODE >> PAGE_SHIFT] = __pa(c->code) | 1;
	c->pt[(G_STACK_TOP >> PAGE_SHIFT) - 1] = __pa(c->stack) | 3;
	/* CPUID, then UD2 to the end of the page (no loop anywhere). */
	for (i = 0; i < PAGE_SIZE / 2; i++)
		((u16 *)c->code)[i] = 0x0b0f;
	memcpy(c->code, cpuid, sizeof(cpuid));
	c->pin = ctl_msr(basic & BIT_ULL(55) ? MSR_IA32_VMX_TRUE_PINBASED_CTLS : MSR_IA32_VMX_PINBASED_CTLS);
	c->proc1 = ctl_msr(basic & BIT_ULL(55) ? MSR_IA32_VMX_TRUE_PROCBASED_CTLS : MSR_IA32_VMX_PROCBASED_CTLS);
	c->proc2 = ctl_msr(MSR_IA32_VMX_PROCBASED_CTLS2);
	c->exit = ctl_msr(basic & BIT_ULL(55) ? MSR_IA32_VMX_TRUE_EXIT_CTLS : MSR_IA32_VMX_EXIT_CTLS);
	c->entry = ctl_msr(basic & BIT_ULL(55) ? MSR_IA32_VMX_TRUE_ENTRY_CTLS : MSR_IA32_VMX_ENTRY_CTLS);
	rdmsrq(MSR_IA32_VMX_CR0_FIXED0, c->cr0_fixed0);
	rdmsrq(MSR_IA32_VMX_CR0_FIXED1, c->cr0_fixed1);
	rdmsrq(MSR_IA32_VMX_CR4_FIXED0, c->cr4_fixed0);
	rdmsrq(MSR_IA32_VMX_CR4_FIXED1, c->cr4_fixed1);
	return c;
fail:
	free_ctx(c);
	return NULL;
}

/*
 * Runs @body in VMX operation on this CPU: interrupts off, CR4.VMXE set,
 * VMXON; afterwards VMXOFF and CR4 as it was.  False if VMXON failed.
 */
static bool in_vmx(struct cpu_ctx *c, void (*body)(struct cpu_ctx *, unsigned int), unsigned int arg)
{
	unsigned long flags, cr4;
	struct res r;

	local_irq_save(flags);
	cr4 = __read_cr4();
	vmx_write_cr4(cr4 | X86_CR4_VMXE);
	store_gdt(&c->gdt);
	store_idt(&c->idt);
	savesegment(ds, c->ds);
	savesegment(es, c->es);
	c->tr_base = tss_base(&c->gdt);
	r = mem_op(I_VMXON, __pa(c->vmxon));
	if (r.kind == K_OK) {
		body(c, arg);
		vmxoff();
	}
	vmx_write_cr4(cr4);
	local_irq_restore(flags);
	if (r.kind != K_OK)
		show(c, "vmxon", r);
	return r.kind == K_OK;
}

static void fixed_steps(struct cpu_ctx *c, unsigned int unused)
{
	fresh(c);
	show(c, "cmp_baseline", enter(c, false));
	show(c, "cmp_baseline_resume", enter(c, true));
	readonly_steps(c);
	tsc_scaling_steps(c);
	lacking_steps(c);
	address_steps(c);
	if (pool_pa)
		hidden_steps(c);
	if (pkvm)
		pinned_steps(c);
	bait_steps(c);
}

/* A chunk of fuzz iterations (the VMCS restarts at each chunk). */
#define CHUNK 16

static void fuzz_chunk(struct cpu_ctx *c, unsigned int from)
{
	unsigned int it;

	c->launched = false;
	for (it = from; it < from + CHUNK && it < c->iterations; it++)
		fuzz_one(c, it);
}

static int fuzz_thread(void *p)
{
	struct cpu_ctx *c = p;
	unsigned int from;

	for (from = 0; from < c->iterations; from += CHUNK) {
		preempt_disable();
		if (!in_vmx(c, fuzz_chunk, from)) {
			preempt_enable();
			break;
		}
		preempt_enable();
		cond_resched();
	}
	complete(&c->done);
	while (!kthread_should_stop())
		schedule_timeout_interruptible(1);
	return 0;
}

static int run_fuzz(void)
{
	struct cpu_ctx **ctx = kcalloc(nr_cpu_ids, sizeof(*ctx), GFP_KERNEL);
	struct task_struct **t = kcalloc(nr_cpu_ids, sizeof(*t), GFP_KERNEL);
	int cpu;

	if (!pool_pa || !ctx || !t) {
		pr_info("vmx_entry: fuzz needs pool_pa (and memory)\n");
		goto out;
	}
	for_each_online_cpu(cpu) {
		struct cpu_ctx *c = alloc_ctx(4096);

		if (!c)
			break;
		c->rng = seed * 0x9E3779B97F4A7C15ULL + cpu + 1;
		c->iterations = fuzz;
		init_completion(&c->done);
		t[cpu] = kthread_create(fuzz_thread, c, "vmx_entry/%d", cpu);
		if (IS_ERR(t[cpu])) {
			t[cpu] = NULL;
			free_ctx(c);
			continue;
		}
		ctx[cpu] = c;
		kthread_bind(t[cpu], cpu);
		get_task_struct(t[cpu]);
	}
	for_each_online_cpu(cpu)
		if (t[cpu])
			wake_up_process(t[cpu]);
	for_each_online_cpu(cpu) {
		if (!t[cpu])
			continue;
		wait_for_completion(&ctx[cpu]->done);
		kthread_stop(t[cpu]);
		put_task_struct(t[cpu]);
		report_fuzz(ctx[cpu], cpu);
		flush_lines(ctx[cpu]);
		free_ctx(ctx[cpu]);
	}
out:
	kfree(ctx);
	kfree(t);
	return 0;
}

static int __init vmx_entry_init(void)
{
	struct cpu_ctx *c;
	int cpu;

	if (fuzz) {
		run_fuzz();
		pr_info("vmx_entry: done\n");
		return 0;
	}
	c = alloc_ctx(16384);
	if (!c)
		return 0;
	if (ept12 && !ept12_prepare(c)) {
		pr_info("vmx_entry: ept12: no memory\n");
		ept12 = false;
	}
	cpu = get_cpu();
	if (ept12 || !ept_state.used)
		in_vmx(c, ept12 ? ept12_steps : fixed_steps, 0);
	put_cpu();
	ept12_free();
	pr_info("vmx_entry: cpu=%d\n", cpu);
	flush_lines(c);
	free_ctx(c);
	pr_info("vmx_entry: done\n");
	return 0;
}

static void __exit vmx_entry_exit(void)
{
}

module_init(vmx_entry_init);
module_exit(vmx_entry_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("pkvm-x86 tests: hostile VM entries");
