// SPDX-License-Identifier: GPL-2.0

//! The VMCS model: one table of every VMCS field of the SDM, typed field
//! constants derived from it, and the [`VmcsAccess`] trait through which
//! everything reads and writes a VMCS (the hardware's current VMCS in
//! `crate::arch::vmx`, or the in-memory [`MemVmcs`] of the pure core).
//!
//! * [`fields`]: the table ([`FIELDS`]), one row per field of SDM Vol. 3D
//!   appendix B, with its typed constant (`GUEST_CS_SELECTOR:
//!   Field<u16>`, ...), width, access type, group and marks.
//! * [`access`]: [`Field`], [`VmcsAccess`], [`VmcsError`] and
//!   [`MemVmcs`].
//!
//! Owns the names, encodings and widths of fields, and the semantics of
//! reading and writing them; which values go into them is decided by the
//! callers (`guest_state`, `host_vmcs`, the exit handler).
//!
//! Where nested VMX goes: a vmcs12 is a [`MemVmcs`]-like store kept in a
//! guest page, laid out by table position (the offset of a field is
//! `8 * index`, see [`fields::index_of`]), so the table is also the vmcs12
//! layout; which fields may be shadowed (VMREAD/VMWRITE bitmaps) is one more
//! [`Marks`] bit (`SHADOW_RO` / `SHADOW_RW`, not defined until the
//! shadowing code exists), so that the bitmaps are derived from the table
//! like everything else.

pub mod access;
pub mod fields;

pub use access::{Field, FieldValue, MemVmcs, VmcsAccess, VmcsError};
pub use fields::*;

/// VMCS link pointer value meaning "no shadow / link VMCS".
pub const NO_LINK: u64 = u64::MAX;

/// VM-instruction error numbers worth naming (SDM "VM Instruction Error Numbers").
pub fn instruction_error_name(e: u64) -> &'static str {
    match e {
        1 => "VMCALL executed in VMX root operation",
        2 => "VMCLEAR with invalid physical address",
        3 => "VMCLEAR with VMXON pointer",
        4 => "VMLAUNCH with non-clear VMCS",
        5 => "VMRESUME with non-launched VMCS",
        7 => "VM entry with invalid control field(s)",
        8 => "VM entry with invalid host-state field(s)",
        9 => "VMPTRLD with invalid physical address",
        10 => "VMPTRLD with VMXON pointer",
        11 => "VMPTRLD with incorrect VMCS revision identifier",
        12 => "VMREAD/VMWRITE from/to unsupported VMCS component",
        13 => "VMWRITE to read-only VMCS component",
        15 => "VMXON executed in VMX root operation",
        26 => "VM entry with events blocked by MOV SS",
        28 => "Invalid operand to INVEPT/INVVPID",
        _ => "other VM-instruction error",
    }
}
