/* SPDX-License-Identifier: GPL-2.0 */
/*
 * vmx_insn.h: the VMX instructions as the test modules execute them
 * (selftests/vmx_oracle, the VMX-instruction oracle, and
 * selftests/vmx_entry, the hostile VM entries; selftests only, never part
 * of pkvm).  Their Kbuild files add this folder to the include path.
 *
 * Each wrapper executes one instruction with the six arithmetic flags set
 * beforehand (a VMX instruction defines all six: VMsucceed clears them,
 * VMfailInvalid sets CF, VMfailValid ZF; a flag left set shows), catches
 * a fault through an exception-table fixup, and returns the fault vector
 * (-1 if none) and RFLAGS after the instruction (0 after a fault).  The
 * caller decodes them.  VMLAUNCH/VMRESUME here are the instructions alone
 * (a VM exit must land somewhere: vmx_entry.c's run_guest() sets that up).
 */
#ifndef SELFTESTS_VMX_INSN_H
#define SELFTESTS_VMX_INSN_H

#include <linux/compiler.h>
#include <linux/types.h>
#include <asm/asm.h>
#include <asm/processor-flags.h>

/* The outcome of one instruction. */
struct vmx_res {
	long vec;		/* fault vector, -1 if none */
	unsigned long fl;	/* RFLAGS after the instruction */
};

#define VMX_ARITH (X86_EFLAGS_CF | X86_EFLAGS_PF | X86_EFLAGS_AF | X86_EFLAGS_ZF | \
		   X86_EFLAGS_SF | X86_EFLAGS_OF)

/* Sets the six arithmetic flags, keeping IF; reads RFLAGS back. */
#define VMX_PRE "pushf\n\t orq %[arith], (%%rsp)\n\t popf\n\t"
#define VMX_POST "pushf\n\t popq %[fl]\n\t"

/* The instructions with a 64-bit memory operand. */
enum vmx_mem_insn { VMX_VMXON, VMX_VMCLEAR, VMX_VMPTRLD, VMX_VMPTRST };

static __maybe_unused noinline struct vmx_res vmx_mem_op(enum vmx_mem_insn i, u64 *p)
{
	struct vmx_res r = { -1, 0 };

#define VMX_MEM(name)							\
	asm volatile(VMX_PRE "1: " name " %[m]\n\t" VMX_POST "2:\n\t"	\
		     _ASM_EXTABLE_FAULT(1b, 2b)				\
		     : "+a"(r.vec), [fl] "+r"(r.fl), [m] "+m"(*p)	\
		     : [arith] "i"(VMX_ARITH) : "cc", "memory")
	switch (i) {
	case VMX_VMXON: VMX_MEM("vmxon"); break;
	case VMX_VMCLEAR: VMX_MEM("vmclear"); break;
	case VMX_VMPTRLD: VMX_MEM("vmptrld"); break;
	case VMX_VMPTRST: VMX_MEM("vmptrst"); break;
	}
#undef VMX_MEM
	return r;
}

/* The instructions without an operand. */
enum vmx_plain_insn { VMX_VMXOFF, VMX_VMLAUNCH, VMX_VMRESUME };

static __maybe_unused noinline struct vmx_res vmx_plain_op(enum vmx_plain_insn i)
{
	struct vmx_res r = { -1, 0 };

#define VMX_PLAIN(name)							\
	asm volatile(VMX_PRE "1: " name "\n\t" VMX_POST "2:\n\t"	\
		     _ASM_EXTABLE_FAULT(1b, 2b)				\
		     : "+a"(r.vec), [fl] "+r"(r.fl)			\
		     : [arith] "i"(VMX_ARITH) : "cc", "memory")
	switch (i) {
	case VMX_VMXOFF: VMX_PLAIN("vmxoff"); break;
	case VMX_VMLAUNCH: VMX_PLAIN("vmlaunch"); break;
	case VMX_VMRESUME: VMX_PLAIN("vmresume"); break;
	}
#undef VMX_PLAIN
	return r;
}

/* VMREAD of `field` into a register; *val is its value before and after. */
static __maybe_unused noinline struct vmx_res vmx_vmread_reg(u64 field, u64 *val)
{
	struct vmx_res r = { -1, 0 };
	u64 v = *val;

	asm volatile(VMX_PRE "1: vmread %[f], %[v]\n\t" VMX_POST "2:\n\t"
		     _ASM_EXTABLE_FAULT(1b, 2b)
		     : "+a"(r.vec), [fl] "+r"(r.fl), [v] "+r"(v)
		     : [f] "r"(field), [arith] "i"(VMX_ARITH) : "cc", "memory");
	*val = v;
	return r;
}

/* VMREAD of `field` into memory at `p`. */
static __maybe_unused noinline struct vmx_res vmx_vmread_mem(u64 field, u64 *p)
{
	struct vmx_res r = { -1, 0 };

	asm volatile(VMX_PRE "1: vmread %[f], %[m]\n\t" VMX_POST "2:\n\t"
		     _ASM_EXTABLE_FAULT(1b, 2b)
		     : "+a"(r.vec), [fl] "+r"(r.fl), [m] "+m"(*p)
		     : [f] "r"(field), [arith] "i"(VMX_ARITH) : "cc", "memory");
	return r;
}

/* VMWRITE of `val` (a register) to `field`. */
static __maybe_unused noinline struct vmx_res vmx_vmwrite_reg(u64 field, u64 val)
{
	struct vmx_res r = { -1, 0 };

	asm volatile(VMX_PRE "1: vmwrite %[v], %[f]\n\t" VMX_POST "2:\n\t"
		     _ASM_EXTABLE_FAULT(1b, 2b)
		     : "+a"(r.vec), [fl] "+r"(r.fl)
		     : [f] "r"(field), [v] "r"(val), [arith] "i"(VMX_ARITH) : "cc", "memory");
	return r;
}

/* VMWRITE of the 64 bits at `p` to `field`. */
static __maybe_unused noinline struct vmx_res vmx_vmwrite_mem(u64 field, u64 *p)
{
	struct vmx_res r = { -1, 0 };

	asm volatile(VMX_PRE "1: vmwrite %[m], %[f]\n\t" VMX_POST "2:\n\t"
		     _ASM_EXTABLE_FAULT(1b, 2b)
		     : "+a"(r.vec), [fl] "+r"(r.fl)
		     : [f] "r"(field), [m] "m"(*p), [arith] "i"(VMX_ARITH) : "cc", "memory");
	return r;
}

/* The 128-bit INVVPID/INVEPT descriptor. */
struct vmx_inv_desc {
	u64 lo, hi;
};

static __maybe_unused noinline struct vmx_res vmx_invvpid(u64 type, struct vmx_inv_desc *d)
{
	struct vmx_res r = { -1, 0 };

	asm volatile(VMX_PRE "1: invvpid %[m], %[t]\n\t" VMX_POST "2:\n\t"
		     _ASM_EXTABLE_FAULT(1b, 2b)
		     : "+a"(r.vec), [fl] "+r"(r.fl)
		     : [t] "r"(type), [m] "m"(*d), [arith] "i"(VMX_ARITH) : "cc", "memory");
	return r;
}

static __maybe_unused noinline struct vmx_res vmx_invept(u64 type, struct vmx_inv_desc *d)
{
	struct vmx_res r = { -1, 0 };

	asm volatile(VMX_PRE "1: invept %[m], %[t]\n\t" VMX_POST "2:\n\t"
		     _ASM_EXTABLE_FAULT(1b, 2b)
		     : "+a"(r.vec), [fl] "+r"(r.fl)
		     : [t] "r"(type), [m] "m"(*d), [arith] "i"(VMX_ARITH) : "cc", "memory");
	return r;
}

/* MOV to CR4 (the modules set CR4.VMXE themselves); the fault vector or -1. */
static __maybe_unused noinline long vmx_write_cr4(unsigned long v)
{
	long vec = -1;

	asm volatile("1: mov %[v], %%cr4\n\t2:\n\t"
		     _ASM_EXTABLE_FAULT(1b, 2b)
		     : "+a"(vec) : [v] "r"(v) : "memory");
	return vec;
}

#endif /* SELFTESTS_VMX_INSN_H */
