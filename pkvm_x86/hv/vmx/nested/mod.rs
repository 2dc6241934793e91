// SPDX-License-Identifier: GPL-2.0

//! Nested VMX: the host's own hypervisor (the stock `kvm_intel`) running
//! its guests on the deprivileged host, as pure functions over the VMCS
//! model (`crate::hv::vmx::vmcs`).  Root mode's glue that reads the exit,
//! calls these and applies the result is `crate::hyp::nested`; the design
//! is Documentation/nested.rst.
//!
//! VMX for the host:
//!
//! * [`offer`]: the VMX view offered to the host (capability MSRs,
//!   CPUID.1:ECX.VMX, IA32_FEATURE_CONTROL): what is emulated, the rest
//!   hidden.
//! * [`vmx_op`]: the host CPU's VMX-operation state and the VMX
//!   instructions (VMXON .. VMXOFF, INVEPT, INVVPID) with the SDM's
//!   faults, VMfail cases and RFLAGS.
//! * [`operand`]: VM-exit instruction information into register or memory
//!   operands; linear addresses with segmentation.
//! * [`host_walk`]: the walk of the host's page tables from root mode and
//!   byte accesses to host-owned memory only.
//! * [`vmcs12`]: the vmcs12 store (bounded cache, write-back to the host's
//!   VMCS page in pkvm's format) and VMREAD/VMWRITE semantics.
//!
//! vmcs12 -> vmcs02, entry checks, exit reflection:
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
//! * [`vmcs02_cache`]: what a live vmcs02 holds, so that re-entering it
//!   writes only the fields that change.
//!
//! Shadow EPT (Documentation/shadow-ept.rst):
//!
//! * [`ept12_walk`]: vmcs12's EPT pointer checked, the walk of the host's
//!   EPT for its guest, and its intersection with the host EPT.
//! * [`shadow_ept`]: the shadow EPTs (one per host EPT pointer), their
//!   shares, invalidation (INVEPT), memory and teardown.

pub mod controls;
pub mod entry_checks;
pub mod ept12_walk;
pub mod field_class;
pub mod host_walk;
pub mod merge;
pub mod msr_area;
pub mod offer;
pub mod operand;
pub mod reflect;
pub mod shadow_ept;
pub mod vmcs02_cache;
pub mod vmcs12;
pub mod vmx_op;

#[cfg(test)]
pub(crate) mod testutil;
