// SPDX-License-Identifier: GPL-2.0

//! Nested VMX: the host's own use of VMX (the stock `kvm_intel`) under
//! pkvm, as pure functions over the VMCS model.  Root mode's glue that
//! reads the exit, calls these and applies the result is
//! `crate::hyp::nested`.
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
//! Running a nested guest (vmcs12 merged into a vmcs02, entry checks,
//! exit reflection) is the next step; until then VMLAUNCH/VMRESUME fail
//! with VMfailValid(7) (see [`vmx_op`]).  Documentation/nested.rst.

pub mod host_walk;
pub mod offer;
pub mod operand;
pub mod vmcs12;
pub mod vmx_op;
