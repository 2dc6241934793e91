// SPDX-License-Identifier: GPL-2.0

//! Reads and checks the VMX capabilities of every online CPU at load.
//!
//! Owns the host-side part of capability discovery: which CPUs are asked
//! (all online ones, with CPU hotplug held off), and the rule that they must
//! all agree.  Decoding and the policy of what is required live in
//! `crate::hv::vmx::caps`.

use kernel::{bindings, cpumask::Cpumask, prelude::*};

use crate::arch::{cpuid::cpuid, msr};
use crate::hv::vmx::caps::{RawVmxInfo, VmxCaps};

/// Capabilities common to every online CPU, and what CPU 0... reported raw.
pub(crate) struct CpuCaps {
    /// Decoded capabilities (identical on every online CPU).
    pub(crate) caps: VmxCaps,
    /// Raw values of the first online CPU, for debugfs.
    pub(crate) raw: RawVmxInfo,
    /// Number of online CPUs checked.
    pub(crate) cpus: u32,
}

/// Holds CPU hotplug off while alive.
pub(crate) struct CpusReadGuard;

impl CpusReadGuard {
    /// Takes the CPU hotplug read lock.
    pub(crate) fn new() -> Self {
        // SAFETY: `cpus_read_lock` may sleep; `probe` runs in module init
        // (process context).  The guard's drop releases it exactly once.
        unsafe { bindings::cpus_read_lock() };
        Self
    }
}

impl Drop for CpusReadGuard {
    fn drop(&mut self) {
        // SAFETY: paired with the `cpus_read_lock` in `new`.
        unsafe { bindings::cpus_read_unlock() };
    }
}

/// Whether `cpu` is in the kernel's static cpumask `mask`.
fn in_mask(mask: &'static Cpumask, cpu: u32) -> bool {
    kernel::cpu::CpuId::from_u32(cpu).is_some_and(|id| mask.test(id))
}

/// The online CPUs, in order.  Callers hold a [`CpusReadGuard`] so that
/// the set stays what it was when they act on it.
pub(crate) fn online_cpus() -> impl Iterator<Item = u32> {
    // SAFETY: `__cpu_online_mask` is a static cpumask that lives forever.
    let online = unsafe { Cpumask::from_raw(&raw const bindings::__cpu_online_mask) };
    (0..kernel::cpu::nr_cpu_ids()).filter(move |&cpu| in_mask(online, cpu))
}

/// Whether `cpu` is possible (can ever come online).
pub(crate) fn is_possible(cpu: u32) -> bool {
    // SAFETY: `__cpu_possible_mask` is a static cpumask, fixed after boot.
    let possible = unsafe { Cpumask::from_raw(&raw const bindings::__cpu_possible_mask) };
    in_mask(possible, cpu)
}

/// Reads and decodes the capabilities of every online CPU.  Fails with the
/// errno of the first problem found, after logging it.
pub(crate) fn probe() -> Result<CpuCaps> {
    // CPUID.1:ECX is the same on every CPU of a system; it gates the MSR reads.
    let ecx = cpuid(1, 0).ecx;
    let _hotplug = CpusReadGuard::new();
    let mut first: Option<CpuCaps> = None;
    for cpu in online_cpus() {
        let raw = RawVmxInfo::read_with(ecx, |index| msr::read_on_cpu(cpu, index));
        let caps = VmxCaps::decode(&raw).map_err(|e| {
            pr_err!("{}\n", format_args!("cpu{cpu}: {e}; not loading"));
            Error::from_errno(-e.errno())
        })?;
        match &mut first {
            None => first = Some(CpuCaps { caps, raw, cpus: 1 }),
            Some(f) if f.caps == caps => f.cpus += 1,
            Some(_) => {
                pr_err!(
                    "cpu{}: VMX capabilities differ from the first CPU's; not loading\n",
                    cpu
                );
                return Err(Error::from_errno(-(bindings::EOPNOTSUPP as i32)));
            }
        }
    }
    first.ok_or(ENODEV)
}
