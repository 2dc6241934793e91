// SPDX-License-Identifier: GPL-2.0

//! The VMX architecture as numbers: capabilities, VMCS fields, exits,
//! guest state, segment descriptors, MSR bitmaps.  (What the host's VMCS
//! enables and intercepts is policy: `crate::hv::host_policy`.)
//!
//! * [`caps`]: the VMX capability MSRs decoded, the features pkvm needs.
//! * [`vmcs`]: the VMCS model: the field table, typed access, an in-memory VMCS.
//! * [`event`]: interruption information and interruptibility state.
//! * [`host_vmcs`]: the controls and host state the launch writes.
//! * [`exit`]: exit reasons, exit information, event injection.
//! * [`guest_state`]: the running CPU described as a VMX guest.
//! * [`segment`]: segment and system descriptors.
//! * [`msr_bitmap`]: the MSR-bitmap page format.
//! * [`root_tables`]: root mode's GDT, TSS and IDT layout.
//! * [`nested`]: nested VMX for the host's KVM: the offered VMX view, the
//!   emulated VMX instructions, the vmcs12 store, vmcs12 field classes,
//!   entry checks, the vmcs12 -> vmcs02 merge, MSR areas and exit
//!   reflection (see Documentation/nested.rst).

pub mod caps;
pub mod event;
pub mod exit;
pub mod guest_state;
pub mod host_vmcs;
pub mod msr_bitmap;
pub mod nested;
pub mod root_tables;
pub mod segment;
pub mod vmcs;
