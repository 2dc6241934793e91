// SPDX-License-Identifier: GPL-2.0

//! What a live vmcs02 holds, as far as the hypervisor knows it, so that a
//! re-entry of the same vmcs12 on the same CPU writes only the fields whose
//! value changes ("Re-entering a guest" in Documentation/nested.rst).
//!
//! [`Vmcs02Cache`] remembers, per row of the VMCS field table, the value
//! the hypervisor last wrote into vmcs02 or read back from it.  A value is
//! *known* only while nothing but the hypervisor's own VMWRITE can have
//! changed the field since:
//!
//! * every exit of vmcs02 forgets the fields the CPU or the hypervisor's
//!   handling of a guest exit may change without going through the cache
//!   ([`VOLATILE`]: the guest-state area, exit information and the
//!   VM-entry event fields); the reflection learns the guest state again
//!   from what it reads back;
//! * a vmcs02 cleared or launched afresh forgets everything;
//! * a VMWRITE that fails forgets its field.
//!
//! A field is written when its value is not known or differs
//! ([`Vmcs02Cache::needs_write`]); the result is the same vmcs02 as
//! writing every field.  Controls and host state are never skipped
//! *unchecked*: the merge still computes every value from vmcs12 and
//! vmcs01 and every entry check still runs; only VMWRITEs of an identical
//! value are left out.

use crate::hv::vmx::vmcs::fields::{self as f, Group, FIELDS, FIELD_COUNT};

/// Words of a [`FieldSet`].
const SET_WORDS: usize = FIELD_COUNT.div_ceil(64);

/// A set of rows of the VMCS field table, by table position.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FieldSet([u64; SET_WORDS]);

impl FieldSet {
    /// The empty set.
    pub const fn new() -> Self {
        Self([0; SET_WORDS])
    }

    /// Adds row `i` (ignored past the table).
    pub const fn insert(&mut self, i: usize) {
        if i < FIELD_COUNT {
            self.0[i / 64] |= 1 << (i % 64);
        }
    }

    /// Removes row `i`.
    pub const fn remove(&mut self, i: usize) {
        if i < FIELD_COUNT {
            self.0[i / 64] &= !(1 << (i % 64));
        }
    }

    /// Whether row `i` is in the set.
    pub const fn contains(&self, i: usize) -> bool {
        i < FIELD_COUNT && self.0[i / 64] & (1 << (i % 64)) != 0
    }

    /// Removes every row of `other`.
    pub const fn remove_all(&mut self, other: &FieldSet) {
        let mut w = 0;
        while w < SET_WORDS {
            self.0[w] &= !other.0[w];
            w += 1;
        }
    }

    /// Whether the set is empty.
    pub const fn is_empty(&self) -> bool {
        let mut w = 0;
        while w < SET_WORDS {
            if self.0[w] != 0 {
                return false;
            }
            w += 1;
        }
        true
    }
}

/// Whether the CPU, or the hypervisor while handling an exit of vmcs02
/// without the cache, may change the field at row `info` of vmcs02: the
/// guest-state area (saved by every VM exit; RIP, interruptibility and
/// MSR fields written by the hypervisor's own handling of a guest exit;
/// the PDPTEs, saved with EPT), exit information, and the VM-entry event
/// fields (the CPU clears the valid bit of the interruption information
/// at every exit; the hypervisor injects events into the guest with all
/// three).
pub const fn is_volatile(info: &f::FieldInfo) -> bool {
    matches!(info.group, Group::Guest | Group::ExitInfo)
        || info.encoding == f::VM_ENTRY_INTR_INFO.encoding()
        || info.encoding == f::VM_ENTRY_EXCEPTION_ERROR_CODE.encoding()
        || info.encoding == f::VM_ENTRY_INSTRUCTION_LEN.encoding()
}

/// The rows for which [`is_volatile`] holds, computed at build time.
pub const VOLATILE: FieldSet = {
    let mut s = FieldSet::new();
    let mut i = 0;
    while i < FIELD_COUNT {
        if is_volatile(&FIELDS[i]) {
            s.insert(i);
        }
        i += 1;
    }
    s
};

/// The values a live vmcs02 holds that the hypervisor knows.
#[derive(Clone, Debug)]
pub struct Vmcs02Cache {
    values: [u64; FIELD_COUNT],
    known: FieldSet,
}

impl Default for Vmcs02Cache {
    fn default() -> Self {
        Self::new()
    }
}

impl Vmcs02Cache {
    /// Nothing known.
    pub const fn new() -> Self {
        Self {
            values: [0; FIELD_COUNT],
            known: FieldSet::new(),
        }
    }

    /// Forgets everything (vmcs02 cleared, launched afresh or dropped).
    pub fn forget_all(&mut self) {
        self.known = FieldSet::new();
    }

    /// Forgets row `i` (a VMWRITE of it failed).
    pub fn forget(&mut self, i: usize) {
        self.known.remove(i);
    }

    /// An exit of vmcs02: forgets every [`VOLATILE`] row.
    pub fn exited(&mut self) {
        self.known.remove_all(&VOLATILE);
    }

    /// vmcs02 holds `value` at row `i` (written by the hypervisor or read
    /// back from it).
    pub fn learn(&mut self, i: usize, value: u64) {
        if let Some(v) = self.values.get_mut(i) {
            *v = value;
            self.known.insert(i);
        }
    }

    /// Whether writing `value` at row `i` could change vmcs02: the value
    /// there is not known, or differs.
    pub fn needs_write(&self, i: usize, value: u64) -> bool {
        !(self.known.contains(i) && self.values.get(i) == Some(&value))
    }

    /// Whether any row is known.
    pub fn knows_any(&self) -> bool {
        !self.known.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hv::vmx::vmcs::fields::index_of;
    use crate::hv::vmx::vmcs::*;

    fn at<T: FieldValue>(fld: Field<T>) -> usize {
        index_of(fld.encoding()).unwrap()
    }

    #[test]
    fn field_set_operations() {
        let mut s = FieldSet::new();
        assert!(s.is_empty());
        for i in [0, 63, 64, 127, 128, FIELD_COUNT - 1] {
            assert!(!s.contains(i));
            s.insert(i);
            assert!(s.contains(i), "{i}");
        }
        s.insert(FIELD_COUNT);
        assert!(!s.contains(FIELD_COUNT));
        s.remove(64);
        assert!(!s.contains(64) && s.contains(63) && s.contains(127));
        let mut o = FieldSet::new();
        o.insert(0);
        o.insert(127);
        s.remove_all(&o);
        assert!(!s.contains(0) && !s.contains(127) && s.contains(63) && s.contains(128));
    }

    /// Exhaustive over the table: exactly guest state, exit information
    /// and the three VM-entry event fields are volatile; no control
    /// (except those three) or host-state field is.
    #[test]
    fn volatile_rows() {
        let events = [
            VM_ENTRY_INTR_INFO.encoding(),
            VM_ENTRY_EXCEPTION_ERROR_CODE.encoding(),
            VM_ENTRY_INSTRUCTION_LEN.encoding(),
        ];
        for (i, row) in FIELDS.iter().enumerate() {
            let want = match row.group {
                Group::Guest | Group::ExitInfo => true,
                Group::Host => false,
                Group::Control => events.contains(&row.encoding),
            };
            assert_eq!(VOLATILE.contains(i), want, "{}", row.name);
        }
        assert!(VOLATILE.contains(at(GUEST_PDPTE0)));
        assert!(VOLATILE.contains(at(GUEST_RIP)));
        assert!(!VOLATILE.contains(at(HOST_RIP)));
        assert!(!VOLATILE.contains(at(CPU_BASED_VM_EXEC_CONTROL)));
    }

    #[test]
    fn writes_only_what_changes() {
        let mut c = Vmcs02Cache::new();
        let ctl = at(CPU_BASED_VM_EXEC_CONTROL);
        let rip = at(GUEST_RIP);
        assert!(!c.knows_any());
        assert!(c.needs_write(ctl, 0), "nothing known: write, even 0");
        c.learn(ctl, 0x1234);
        c.learn(rip, 0x1000);
        assert!(!c.needs_write(ctl, 0x1234));
        assert!(c.needs_write(ctl, 0x1235));
        assert!(!c.needs_write(rip, 0x1000));
        // An exit: the guest state is no longer known, controls are.
        c.exited();
        assert!(c.needs_write(rip, 0x1000));
        assert!(!c.needs_write(ctl, 0x1234));
        // Read back after the exit: known again.
        c.learn(rip, 0x1003);
        assert!(!c.needs_write(rip, 0x1003));
        c.forget(ctl);
        assert!(c.needs_write(ctl, 0x1234));
        c.forget_all();
        assert!(!c.knows_any());
        assert!(c.needs_write(rip, 0x1003));
        // Past the table: nothing is known, nothing learnt.
        c.learn(FIELD_COUNT, 1);
        assert!(c.needs_write(FIELD_COUNT, 1));
    }

    /// The VM-entry event fields the hypervisor writes when it injects an
    /// event into the guest (`inject_l2`) are forgotten at the exit that
    /// precedes that injection, so an entry after it rewrites them.
    #[test]
    fn injected_event_fields_are_rewritten() {
        let mut c = Vmcs02Cache::new();
        for fld in [
            VM_ENTRY_INTR_INFO,
            VM_ENTRY_EXCEPTION_ERROR_CODE,
            VM_ENTRY_INSTRUCTION_LEN,
        ] {
            c.learn(at(fld), 0);
        }
        c.exited();
        for fld in [
            VM_ENTRY_INTR_INFO,
            VM_ENTRY_EXCEPTION_ERROR_CODE,
            VM_ENTRY_INSTRUCTION_LEN,
        ] {
            assert!(c.needs_write(at(fld), 0));
        }
    }
}
