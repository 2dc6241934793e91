// SPDX-License-Identifier: GPL-2.0

//! Host-side calls into the running hypervisor: per-CPU ones, which must
//! run on a given CPU (the hypercall reaches that CPU's root mode; an IPI
//! carries the VMCALL there and brings the answer back), and
//! hypervisor-wide ones, which any deprivileged CPU may make.

use core::ffi::c_void;

use kernel::{bindings, prelude::*};

use crate::arch::vmx;
use crate::host::cpu_caps::CpusReadGuard;
use crate::hv::hypercall::{self, nr};

/// VM-exit counters of one CPU: index `r` is basic reason `r`, the last
/// slot the total.
pub(crate) type ExitCounts = [u64; crate::hv::vmx::exit::reason::MAX as usize + 2];

/// Runs on a deprivileged CPU: fetches its exit counters by hypercall.
///
/// # Safety
///
/// `info` points at an [`ExitCounts`] the caller keeps alive; the CPU runs
/// deprivileged under this hypervisor.
unsafe extern "C" fn exit_counts_this_cpu(info: *mut c_void) {
    // SAFETY: guaranteed by the caller.
    let out = unsafe { &mut *info.cast::<ExitCounts>() };
    let last = out.len() - 1;
    for (r, slot) in out.iter_mut().enumerate() {
        let arg = if r == last { u64::MAX } else { r as u64 };
        // SAFETY: EXIT_COUNT only reads hypervisor counters.
        *slot = unsafe { vmx::vmcall(nr::EXIT_COUNT, arg, 0, 0, 0) };
    }
}

/// The exit counters of deprivileged CPU `cpu`.
pub(crate) fn exit_counts(cpu: u32) -> Result<ExitCounts> {
    let mut out: ExitCounts = [0; crate::hv::vmx::exit::reason::MAX as usize + 2];
    // SAFETY: the callback runs on `cpu` before this returns; `out` lives.
    let rc = unsafe {
        bindings::smp_call_function_single(
            cpu as i32,
            Some(exit_counts_this_cpu),
            (&raw mut out).cast(),
            1,
        )
    };
    if rc != 0 {
        return Err(Error::from_errno(rc));
    }
    Ok(out)
}

/// The hypervisor's count of internal errors: page-state apply steps that
/// met a state their check had ruled out (see `nr::INTERNAL_ERRORS`).
/// Anything but 0 is a hypervisor bug.
pub(crate) fn internal_errors() -> Result<u64> {
    // With hotplug held off, every online CPU (so whichever this task runs
    // on) has been through the hypervisor's online callback.
    let _hotplug = CpusReadGuard::new();
    // SAFETY: INTERNAL_ERRORS only reads a hypervisor counter; this CPU is
    // deprivileged (above), so VMCALL reaches the hypervisor.
    let r = unsafe { vmx::vmcall(nr::INTERNAL_ERRORS, 0, 0, 0, 0) };
    hypercall::decode(r).map_err(|e| Error::from_errno(-(e as i32)))
}

/// Runs on a deprivileged CPU: BEGIN_TEARDOWN; the answer in `info`.
///
/// # Safety
///
/// `info` points at a `u64` the caller keeps alive; the CPU runs
/// deprivileged under this hypervisor.
unsafe extern "C" fn begin_teardown_this_cpu(info: *mut c_void) {
    // SAFETY: guaranteed by the caller.
    let out = unsafe { &mut *info.cast::<u64>() };
    // SAFETY: BEGIN_TEARDOWN only freezes the page states.
    *out = unsafe { vmx::vmcall(nr::BEGIN_TEARDOWN, 0, 0, 0, 0) };
}

/// BEGIN_TEARDOWN, made on deprivileged CPU `cpu`: `EBUSY` while a VM
/// exists.
pub(crate) fn begin_teardown(cpu: u32) -> Result {
    let mut r = 0u64;
    // SAFETY: the callback runs on `cpu` before this returns; `r` lives.
    let rc = unsafe {
        bindings::smp_call_function_single(
            cpu as i32,
            Some(begin_teardown_this_cpu),
            (&raw mut r).cast(),
            1,
        )
    };
    if rc != 0 {
        return Err(Error::from_errno(rc));
    }
    hypercall::decode(r)
        .map(drop)
        .map_err(|e| Error::from_errno(-(e as i32)))
}
