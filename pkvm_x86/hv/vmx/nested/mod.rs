// SPDX-License-Identifier: GPL-2.0

//! Nested VMX: the host's own hypervisor (the stock `kvm_intel`) running
//! its guests on the deprivileged host, as pure functions over the VMCS
//! model (`crate::hv::vmx::vmcs`).  Root-mode glue is `crate::hyp::nested`.
//!
//! vmcs12 -> vmcs02, entry checks, exit reflection (see
//! Documentation/nested.rst, "vmcs12 -> vmcs02"):
//!
//! * [`field_class`]: the nested class of every VMCS field (guest state,
//!   control, host state, exit information, host address, hidden) and
//!   whether VMCS shadowing may serve it.
//! * [`controls`]: the control bits by name and the merge's allow-lists.
//! * [`entry_checks`]: the SDM's VM-entry checks of a vmcs12 (controls,
//!   host state) against the offered capabilities: VMfailValid(7/8/26).
//! * [`merge`]: the plan of an entry (pages to validate, map and pin) and
//!   vmcs02 built from vmcs12, vmcs01 and the hypervisor's needs; the
//!   merged MSR bitmap.
//! * [`msr_area`]: the VM-entry/VM-exit MSR-load and MSR-store areas,
//!   emulated in software against the host's MSR policy.
//! * [`reflect`]: who owns an exit of vmcs02, reflecting it into vmcs12
//!   and loading vmcs12's host state into the host's VMCS, and failed
//!   entries as the host sees them.

pub mod controls;
pub mod entry_checks;
pub mod field_class;
pub mod merge;
pub mod msr_area;
pub mod reflect;

#[cfg(test)]
pub(crate) mod testutil;
