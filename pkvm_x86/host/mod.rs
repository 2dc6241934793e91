// SPDX-License-Identifier: GPL-2.0

//! Host-side glue: the part of the module that runs as ordinary kernel code
//! (before the launch, in the host's context afterwards) and uses
//! `kernel::`.  Nothing here runs in root mode.
//!
//! * [`cpu_caps`]: the capability probe on every CPU; cpumask helpers.
//! * [`pool`]: the hypervisor's memory, taken from the kernel at load.
//! * [`host_ept`] and [`hyp_pgt`]: building the host EPT and root mode's
//!   own page table in the pool.
//! * [`cpu_setup`]: per-CPU VMXON region, VMCS, stack, GDT/TSS, root IDT.
//! * [`launch`]: deprivileging one CPU in place and giving it back.
//! * [`hypervisor`]: the running hypervisor and its CPU-hotplug state.
//! * [`hyp_client`]: hypercalls that must run on a given CPU.
//! * [`reserve`]: the host half of the reserve for shadow state (donates
//!   and refills it; gives it back after unload).
//! * [`vmx_busy`]: no unload while the host is in VMX operation (nested VMX).
//! * `debug_iface`: the debug interface (`debug=1`) for the tests; compiled
//!   into debug builds only (`PKVM_DEBUG=1`).

pub(crate) mod cpu_caps;
pub(crate) mod cpu_setup;
#[cfg(pkvm_debug)]
pub(crate) mod debug_iface;
pub(crate) mod host_ept;
pub(crate) mod hyp_client;
pub(crate) mod hyp_pgt;
pub(crate) mod hypervisor;
pub(crate) mod launch;
pub(crate) mod pool;
pub(crate) mod reserve;
pub(crate) mod vmx_busy;
