// SPDX-License-Identifier: GPL-2.0

//! Model-specific register access from the host side, before the launch.
//!
//! Capability discovery reads MSRs that may not exist on a given CPU model,
//! so reads go through the kernel's exception-table-protected
//! `rdmsrq_safe_on_cpu()` (arch/x86/lib/msr-smp.c, exported): a missing MSR
//! gives `None` instead of an unhandled #GP.  Root mode never calls this
//! (it calls no kernel code): it uses raw RDMSR/WRMSR on MSRs it knows
//! exist ([`super::cpu::rdmsr`], [`super::cpu::wrmsr`]) and, on MSRs the
//! host names, the fault-tolerant accessors of `crate::hyp::entry`
//! (`pkvm_rdmsr_safe`, `pkvm_wrmsr_safe`), which recover from #GP through
//! root mode's own IDT.

use kernel::ffi::{c_int, c_uint};

extern "C" {
    fn rdmsrq_safe_on_cpu(cpu: c_uint, msr_no: u32, q: *mut u64) -> c_int;
}

/// Reads MSR `index` on CPU `cpu` (an IPI when it is not the current CPU).
/// Returns `None` when the read faults (the MSR does not exist) or the CPU
/// is offline.  Sleeps: process context only.
pub fn read_on_cpu(cpu: u32, index: u32) -> Option<u64> {
    let mut v: u64 = 0;
    // SAFETY: `rdmsrq_safe_on_cpu` writes one u64 through the pointer, which
    // points at a live local; it handles offline CPUs and faulting reads by
    // returning an error.
    let rc = unsafe { rdmsrq_safe_on_cpu(cpu, index, &mut v) };
    (rc == 0).then_some(v)
}
