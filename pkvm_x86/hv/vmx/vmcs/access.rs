// SPDX-License-Identifier: GPL-2.0

//! Width-typed VMCS access: [`Field`] (a field encoding tagged with the
//! Rust type of its value), the [`VmcsAccess`] trait (typed reads and
//! writes, and raw ones by encoding for the VMREAD/VMWRITE emulation of
//! nested VMX), the errors a VMCS access can have, mirroring the
//! VM-instruction errors of the hardware, and [`MemVmcs`], an in-memory VMCS
//! with the hardware's error semantics, used by `cargo test` and later as
//! the store of a vmcs12.

use core::marker::PhantomData;

use super::fields::{self, Access, Group, FIELDS, FIELD_COUNT};

/// The Rust type of a field's value: `u16`, `u32` or `u64` (64-bit and
/// natural-width fields; pkvm runs on x86-64 only).
pub trait FieldValue: Copy + Default {
    /// The value of a field as VMREAD returns it (zero-extended); bits
    /// beyond the width are dropped.
    fn from_raw(raw: u64) -> Self;
    /// The value as VMWRITE takes it (zero-extended).
    fn to_raw(self) -> u64;
}

impl FieldValue for u16 {
    fn from_raw(raw: u64) -> Self {
        raw as u16
    }
    fn to_raw(self) -> u64 {
        u64::from(self)
    }
}

impl FieldValue for u32 {
    fn from_raw(raw: u64) -> Self {
        raw as u32
    }
    fn to_raw(self) -> u64 {
        u64::from(self)
    }
}

impl FieldValue for u64 {
    fn from_raw(raw: u64) -> Self {
        raw
    }
    fn to_raw(self) -> u64 {
        self
    }
}

/// A VMCS field: its encoding (as passed to VMREAD / VMWRITE), typed by
/// the Rust type of its value.  The constants of [`super::fields`] are the
/// only values of this type.
#[derive(Debug)]
pub struct Field<T> {
    encoding: u32,
    /// The field's position in [`FIELDS`] (computed when the constant is
    /// built), so that an in-memory VMCS reads and writes it without a
    /// search.
    index: u16,
    _value: PhantomData<T>,
}

impl<T> Clone for Field<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for Field<T> {}
impl<T> PartialEq for Field<T> {
    fn eq(&self, other: &Self) -> bool {
        self.encoding == other.encoding
    }
}
impl<T> Eq for Field<T> {}

impl<T> Field<T> {
    /// The field with encoding `encoding`; only the table builds these.
    pub(super) const fn new(encoding: u32) -> Self {
        Self {
            encoding,
            index: fields::const_index_of(encoding) as u16,
            _value: PhantomData,
        }
    }

    /// The field's position in [`FIELDS`].
    pub const fn index(self) -> usize {
        self.index as usize
    }

    /// The encoding of the field (full access, bit 0 clear).
    pub const fn encoding(self) -> u32 {
        self.encoding
    }
}

/// Why a VMCS access failed.  The first two are the VM-instruction errors
/// of VMREAD/VMWRITE that depend on the field alone, and are what
/// [`MemVmcs`] reports too.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VmcsError {
    /// VMREAD/VMWRITE from/to an unsupported VMCS component
    /// (VM-instruction error 12).
    Unsupported,
    /// VMWRITE to a read-only VMCS component (VM-instruction error 13).
    ReadOnly,
    /// VMfailInvalid: no current VMCS (hardware only).
    NoCurrentVmcs,
    /// Another VM-instruction error number (hardware only).
    Other(u32),
}

impl VmcsError {
    /// VM-instruction error number 12.
    pub const UNSUPPORTED_COMPONENT: u32 = 12;
    /// VM-instruction error number 13.
    pub const WRITE_READ_ONLY: u32 = 13;

    /// The error for VM-instruction error number `n`.
    pub const fn from_instruction_error(n: u32) -> Self {
        match n {
            Self::UNSUPPORTED_COMPONENT => Self::Unsupported,
            Self::WRITE_READ_ONLY => Self::ReadOnly,
            n => Self::Other(n),
        }
    }

    /// The VM-instruction error number, `None` for VMfailInvalid.
    pub const fn instruction_error(self) -> Option<u32> {
        match self {
            Self::Unsupported => Some(Self::UNSUPPORTED_COMPONENT),
            Self::ReadOnly => Some(Self::WRITE_READ_ONLY),
            Self::NoCurrentVmcs => None,
            Self::Other(n) => Some(n),
        }
    }
}

/// A VMCS that can be read and written: the current VMCS of the CPU
/// (`crate::arch::vmx::CurrentVmcs`) or a [`MemVmcs`].
pub trait VmcsAccess {
    /// Reads the field with encoding `encoding`, zero-extended (VMREAD).
    fn read_raw(&self, encoding: u32) -> Result<u64, VmcsError>;

    /// Writes `value` to the field with encoding `encoding` (VMWRITE);
    /// bits beyond the field's width are ignored, as by the hardware.
    fn write_raw(&mut self, encoding: u32, value: u64) -> Result<(), VmcsError>;

    /// Reads the field at table position `i` of [`FIELDS`]: the same as
    /// [`VmcsAccess::read_raw`] of its encoding (an in-memory VMCS answers
    /// without looking the encoding up).
    fn read_at(&self, i: usize) -> Result<u64, VmcsError> {
        let info = FIELDS.get(i).ok_or(VmcsError::Unsupported)?;
        self.read_raw(info.encoding)
    }

    /// Writes the field at table position `i` of [`FIELDS`]: the same as
    /// [`VmcsAccess::write_raw`] of its encoding.
    fn write_at(&mut self, i: usize, value: u64) -> Result<(), VmcsError> {
        let info = FIELDS.get(i).ok_or(VmcsError::Unsupported)?;
        self.write_raw(info.encoding, value)
    }

    /// Reads field `f`.
    fn read<T: FieldValue>(&self, f: Field<T>) -> Result<T, VmcsError> {
        self.read_raw(f.encoding()).map(T::from_raw)
    }

    /// Writes `value` to field `f`.
    fn write<T: FieldValue>(&mut self, f: Field<T>, value: T) -> Result<(), VmcsError> {
        self.write_raw(f.encoding(), value.to_raw())
    }
}

/// An in-memory VMCS: every field of the table, stored by table position,
/// with the hardware's answers for encodings outside the table
/// ([`VmcsError::Unsupported`]) and writes to read-only fields
/// ([`VmcsError::ReadOnly`]).  Exit-information fields, which only the CPU
/// writes, are set with [`MemVmcs::set_exit_info`].  It also remembers which
/// fields were ever written, so tests can check that a writer set every
/// field it must.
#[derive(Clone, Debug)]
pub struct MemVmcs {
    values: [u64; FIELD_COUNT],
    written: [bool; FIELD_COUNT],
}

impl Default for MemVmcs {
    fn default() -> Self {
        Self::new()
    }
}

impl MemVmcs {
    /// A VMCS with every field 0 and none written.
    pub const fn new() -> Self {
        Self {
            values: [0; FIELD_COUNT],
            written: [false; FIELD_COUNT],
        }
    }

    /// Sets exit-information field `f` to `value`, as the CPU does at a VM
    /// exit; [`VmcsError::Unsupported`] if `f` is not exit information.
    pub fn set_exit_info<T: FieldValue>(&mut self, f: Field<T>, value: T) -> Result<(), VmcsError> {
        let i = fields::index_of(f.encoding()).ok_or(VmcsError::Unsupported)?;
        match FIELDS.get(i) {
            Some(info) if info.group == Group::ExitInfo => self.store(i, value.to_raw()),
            _ => return Err(VmcsError::Unsupported),
        }
        Ok(())
    }

    /// Whether the field with encoding `encoding` was written (by
    /// [`VmcsAccess::write_raw`] or [`MemVmcs::set_exit_info`]).
    pub fn was_written(&self, encoding: u32) -> bool {
        fields::index_of(encoding)
            .and_then(|i| self.written.get(i))
            .copied()
            .unwrap_or(false)
    }

    /// Forgets which fields were written: [`MemVmcs::written`] lists the
    /// fields written from now on (nested VMX tracks what a reflected exit
    /// changed in a vmcs12 this way).
    pub fn forget_written(&mut self) {
        self.written = [false; FIELD_COUNT];
    }

    /// Table positions of the fields written so far.
    pub fn written(&self) -> impl Iterator<Item = usize> + '_ {
        self.written
            .iter()
            .enumerate()
            .filter(|(_, w)| **w)
            .map(|(i, _)| i)
    }

    /// The value of the field at table position `i` (what VMREAD
    /// returns), `None` past the table.
    pub fn value_at(&self, i: usize) -> Option<u64> {
        self.values.get(i).copied()
    }

    /// Sets the field at table position `i`, whatever its access type, as
    /// loading a VMCS from memory does (the vmcs12 store of nested VMX);
    /// bits beyond the field's width are dropped.
    pub fn load_at(&mut self, i: usize, raw: u64) {
        self.store(i, raw);
    }

    fn store(&mut self, i: usize, raw: u64) {
        let Some(info) = FIELDS.get(i) else { return };
        if let (Some(v), Some(w)) = (self.values.get_mut(i), self.written.get_mut(i)) {
            *v = raw & info.width.mask();
            *w = true;
        }
    }
}

impl VmcsAccess for MemVmcs {
    fn read<T: FieldValue>(&self, f: Field<T>) -> Result<T, VmcsError> {
        self.read_at(f.index()).map(T::from_raw)
    }

    fn write<T: FieldValue>(&mut self, f: Field<T>, value: T) -> Result<(), VmcsError> {
        self.write_at(f.index(), value.to_raw())
    }

    fn read_at(&self, i: usize) -> Result<u64, VmcsError> {
        self.values.get(i).copied().ok_or(VmcsError::Unsupported)
    }

    fn write_at(&mut self, i: usize, value: u64) -> Result<(), VmcsError> {
        match FIELDS.get(i) {
            Some(info) if info.access == Access::ReadOnly => Err(VmcsError::ReadOnly),
            Some(_) => {
                self.store(i, value);
                Ok(())
            }
            None => Err(VmcsError::Unsupported),
        }
    }

    fn read_raw(&self, encoding: u32) -> Result<u64, VmcsError> {
        fields::index_of(encoding)
            .and_then(|i| self.values.get(i))
            .copied()
            .ok_or(VmcsError::Unsupported)
    }

    fn write_raw(&mut self, encoding: u32, value: u64) -> Result<(), VmcsError> {
        let i = fields::index_of(encoding).ok_or(VmcsError::Unsupported)?;
        match FIELDS.get(i) {
            Some(info) if info.access == Access::ReadOnly => Err(VmcsError::ReadOnly),
            Some(_) => {
                self.store(i, value);
                Ok(())
            }
            None => Err(VmcsError::Unsupported),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::fields::*;
    use super::*;

    #[test]
    fn typed_round_trip_and_truncation() {
        let mut v = MemVmcs::new();
        v.write(GUEST_CS_SELECTOR, 0x10).unwrap();
        v.write(GUEST_CS_LIMIT, 0xffff_ffff).unwrap();
        v.write(GUEST_RIP, 0xffff_ffff_8100_0000).unwrap();
        assert_eq!(v.read(GUEST_CS_SELECTOR), Ok(0x10u16));
        assert_eq!(v.read(GUEST_CS_LIMIT), Ok(0xffff_ffffu32));
        assert_eq!(v.read(GUEST_RIP), Ok(0xffff_ffff_8100_0000u64));
        // A raw write wider than the field keeps the field's width only.
        v.write_raw(GUEST_SS_SELECTOR.encoding(), 0x1234_0018)
            .unwrap();
        assert_eq!(v.read_raw(GUEST_SS_SELECTOR.encoding()), Ok(0x18));
        v.write_raw(GUEST_SS_LIMIT.encoding(), u64::MAX).unwrap();
        assert_eq!(v.read_raw(GUEST_SS_LIMIT.encoding()), Ok(0xffff_ffff));
        assert!(v.was_written(GUEST_SS_LIMIT.encoding()));
        assert!(!v.was_written(GUEST_DS_LIMIT.encoding()));
    }

    #[test]
    fn hardware_error_semantics() {
        let mut v = MemVmcs::new();
        // Not in the table (a high-half access, a hole, a bogus width).
        for enc in [0x2001, 0x0001, 0x4830, 0x8000, 0x6c1e] {
            assert_eq!(v.read_raw(enc), Err(VmcsError::Unsupported), "{enc:#x}");
            assert_eq!(v.write_raw(enc, 0), Err(VmcsError::Unsupported), "{enc:#x}");
        }
        // Exit information is read-only to VMWRITE, settable as the CPU.
        assert_eq!(v.write(VM_EXIT_REASON, 10), Err(VmcsError::ReadOnly));
        assert_eq!(v.write(EXIT_QUALIFICATION, 1), Err(VmcsError::ReadOnly));
        assert_eq!(v.read(VM_EXIT_REASON), Ok(0));
        v.set_exit_info(VM_EXIT_REASON, 10).unwrap();
        assert_eq!(v.read(VM_EXIT_REASON), Ok(10));
        assert_eq!(
            v.set_exit_info(GUEST_RIP, 1),
            Err(VmcsError::Unsupported),
            "only exit information is set by the CPU"
        );
        assert_eq!(
            VmcsError::from_instruction_error(12),
            VmcsError::Unsupported
        );
        assert_eq!(VmcsError::from_instruction_error(13), VmcsError::ReadOnly);
        assert_eq!(VmcsError::ReadOnly.instruction_error(), Some(13));
        assert_eq!(VmcsError::NoCurrentVmcs.instruction_error(), None);
    }
}
