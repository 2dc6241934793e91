// SPDX-License-Identifier: GPL-2.0

//! What nested VMX does with each field of a vmcs12: one [`Class`] per row
//! of the VMCS field table ([`FIELDS`]), and whether VMCS shadowing may
//! serve the host's VMREAD/VMWRITE of it ([`Shadow`]).
//!
//! The class is derived from the table's group, refined by three lists
//! kept here (not marks in `fields.rs`, which several parts of pkvm read):
//! [`HOST_ADDRESS_FIELDS`] (physical addresses the host supplies),
//! [`HIDDEN_FIELDS`] (fields of features not offered to the host) and
//! [`EPT_FIELDS`] (hidden unless the view offers EPT: the classes depend on
//! whether the view offers EPT, the module's `nested_ept` load parameter;
//! [`classes`] gives both tables, every lookup takes the `ept` bit).
//!
//! * [`Class::GuestState`]: copied vmcs12 -> vmcs02 at entry and back at a
//!   reflected exit (with the adjustments the merge documents).
//! * [`Class::Control`]: read by the merge and composed from an allow-list
//!   (never copied as bits).
//! * [`Class::HostState`]: vmcs12's host-state area: checked at entry,
//!   loaded into the host's context at a reflected exit; never copied into
//!   vmcs02, whose host state is the hypervisor's.
//! * [`Class::ExitInfo`]: read-only to the host; written at reflection.
//! * [`Class::HostAddress`]: a host-physical address the CPU or the
//!   hypervisor would use: validated as a host-owned page, then mapped or
//!   pinned by the integration before use.
//! * [`Class::Hidden`]: a field of a feature that is not offered.  Its
//!   controls are never allowed to be 1 (the entry fails with
//!   VMfailValid(7), see `entry_checks`).  **Decision**: VMREAD and VMWRITE
//!   of a hidden field fail with VM-instruction error 12 ("unsupported VMCS
//!   component"), as on a CPU without the feature; the field is never
//!   read by the merge and never written by reflection, so nothing the
//!   host stores there (it cannot) could reach vmcs02.

use crate::hv::vmx::vmcs::fields::{self as f, Group, FIELDS};

/// The nested-VMX class of a vmcs12 field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// Guest state: copied vmcs12 <-> vmcs02.
    GuestState,
    /// A control composed by the merge from an allow-list.
    Control,
    /// vmcs12's host-state area: checked at entry, loaded at exit.
    HostState,
    /// Exit information: read-only to the host, written at reflection.
    ExitInfo,
    /// A host-supplied physical address: validated, mapped or pinned.
    HostAddress,
    /// A field of a feature not offered: VMREAD/VMWRITE fail with error 12.
    Hidden,
}

/// Whether VMCS shadowing may serve the host's accesses to a field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shadow {
    /// VMREAD and VMWRITE exit (the hypervisor emulates them).
    Never,
    /// VMREAD is served by the shadow VMCS; VMWRITE exits.
    ReadOnly,
    /// VMREAD and VMWRITE are served by the shadow VMCS.
    ReadWrite,
}

/// Host-supplied physical addresses: the bitmaps, the MSR areas, the APIC
/// pages and the VMCS link pointer (a guest-state field).
pub const HOST_ADDRESS_FIELDS: &[u32] = &[
    f::IO_BITMAP_A.encoding(),
    f::IO_BITMAP_B.encoding(),
    f::MSR_BITMAP.encoding(),
    f::VM_EXIT_MSR_STORE_ADDR.encoding(),
    f::VM_EXIT_MSR_LOAD_ADDR.encoding(),
    f::VM_ENTRY_MSR_LOAD_ADDR.encoding(),
    f::VIRTUAL_APIC_PAGE_ADDR.encoding(),
    f::APIC_ACCESS_ADDR.encoding(),
    f::VMCS_LINK_POINTER.encoding(),
];

/// Fields of features not offered to the host in this step: posted
/// interrupts, APICv's EOI-exit bitmaps and interrupt status, EPT and the
/// PDPTEs (which only exist for it) unless the view offers EPT
/// ([`EPT_FIELDS`]), #VE, VM functions, VMCS shadowing,
/// PML, SGX, SPP, tertiary controls (HLAT, IPI
/// virtualization, PASID, shared EPT), secondary exit controls, SPEC_CTRL
/// virtualization, the notify window, the preemption timer, SMM's
/// dual-monitor treatment (executive VMCS, SMBASE), and the state of
/// MPX, PT, architectural LBR, PKS, CET and user interrupts.
pub const HIDDEN_FIELDS: &[u32] = &[
    f::POSTED_INTR_NV.encoding(),
    f::EPTP_INDEX.encoding(),
    f::HLAT_PREFIX_SIZE.encoding(),
    f::LAST_PID_POINTER_INDEX.encoding(),
    f::GUEST_INTR_STATUS.encoding(),
    f::GUEST_PML_INDEX.encoding(),
    f::GUEST_UINV.encoding(),
    f::EXECUTIVE_VMCS_POINTER.encoding(),
    f::PML_ADDRESS.encoding(),
    f::POSTED_INTR_DESC_ADDR.encoding(),
    f::VM_FUNCTION_CONTROL.encoding(),
    f::EPT_POINTER.encoding(),
    f::EOI_EXIT_BITMAP0.encoding(),
    f::EOI_EXIT_BITMAP1.encoding(),
    f::EOI_EXIT_BITMAP2.encoding(),
    f::EOI_EXIT_BITMAP3.encoding(),
    f::EPTP_LIST_ADDRESS.encoding(),
    f::VMREAD_BITMAP.encoding(),
    f::VMWRITE_BITMAP.encoding(),
    f::VE_INFORMATION_ADDRESS.encoding(),
    f::ENCLS_EXITING_BITMAP.encoding(),
    f::SPPT_POINTER.encoding(),
    f::TERTIARY_VM_EXEC_CONTROL.encoding(),
    f::ENCLV_EXITING_BITMAP.encoding(),
    f::LOW_PASID_DIRECTORY.encoding(),
    f::HIGH_PASID_DIRECTORY.encoding(),
    f::SHARED_EPT_POINTER.encoding(),
    f::PCONFIG_EXITING_BITMAP.encoding(),
    f::HLAT_POINTER.encoding(),
    f::PID_POINTER_TABLE.encoding(),
    f::SECONDARY_VM_EXIT_CONTROLS.encoding(),
    f::SPEC_CTRL_MASK.encoding(),
    f::SPEC_CTRL_SHADOW.encoding(),
    f::GUEST_PDPTE0.encoding(),
    f::GUEST_PDPTE1.encoding(),
    f::GUEST_PDPTE2.encoding(),
    f::GUEST_PDPTE3.encoding(),
    f::GUEST_IA32_BNDCFGS.encoding(),
    f::GUEST_IA32_RTIT_CTL.encoding(),
    f::GUEST_IA32_LBR_CTL.encoding(),
    f::GUEST_IA32_PKRS.encoding(),
    f::HOST_IA32_PKRS.encoding(),
    f::NOTIFY_WINDOW.encoding(),
    f::GUEST_SMBASE.encoding(),
    f::VMX_PREEMPTION_TIMER_VALUE.encoding(),
    f::GUEST_S_CET.encoding(),
    f::GUEST_SSP.encoding(),
    f::GUEST_INTR_SSP_TABLE.encoding(),
    f::HOST_S_CET.encoding(),
    f::HOST_SSP.encoding(),
    f::HOST_INTR_SSP_TABLE.encoding(),
];

const fn listed(list: &[u32], encoding: u32) -> bool {
    let mut i = 0;
    while i < list.len() {
        if list[i] == encoding {
            return true;
        }
        i += 1;
    }
    false
}

/// The fields that come with EPT: the EPT pointer and the four PDPTEs of a
/// PAE guest (with EPT the CPU loads them from the VMCS at entry and saves
/// them at exit instead of reading them at CR3).  Listed in
/// [`HIDDEN_FIELDS`] too: hidden while the view hides EPT.  With EPT
/// offered they follow their group: the EPT pointer is a
/// [`Class::Control`] (checked at every entry, `ept12_walk::check_eptp`,
/// and the key of its shadow EPT; vmcs02 gets the shadow's pointer, never
/// this one), the PDPTEs are [`Class::GuestState`] (guest-physical
/// addresses of the host's guest, translated by the shadow EPT).
pub const EPT_FIELDS: &[u32] = &[
    f::EPT_POINTER.encoding(),
    f::GUEST_PDPTE0.encoding(),
    f::GUEST_PDPTE1.encoding(),
    f::GUEST_PDPTE2.encoding(),
    f::GUEST_PDPTE3.encoding(),
];

const fn classify(info: &f::FieldInfo, ept: bool) -> Class {
    if listed(HOST_ADDRESS_FIELDS, info.encoding) {
        Class::HostAddress
    } else if listed(HIDDEN_FIELDS, info.encoding) && !(ept && listed(EPT_FIELDS, info.encoding)) {
        Class::Hidden
    } else {
        match info.group {
            Group::Control => Class::Control,
            Group::Guest => Class::GuestState,
            Group::Host => Class::HostState,
            Group::ExitInfo => Class::ExitInfo,
        }
    }
}

const fn table(ept: bool) -> [Class; f::FIELD_COUNT] {
    let mut out = [Class::Hidden; f::FIELD_COUNT];
    let mut i = 0;
    while i < f::FIELD_COUNT {
        out[i] = classify(&FIELDS[i], ept);
        i += 1;
    }
    out
}

/// The classes of a view that hides EPT.
pub const CLASSES_EPT_HIDDEN: [Class; f::FIELD_COUNT] = table(false);
/// The classes of a view that offers EPT.
pub const CLASSES_EPT_OFFERED: [Class; f::FIELD_COUNT] = table(true);

/// The class table of a view that offers EPT (`ept`) or hides it, both
/// computed at build time: the per-field loops of an entry and an exit
/// (merge, reflection, shadow sync) and VMREAD/VMWRITE look classes up
/// here instead of searching the lists for every field.  The module's
/// view offers EPT only with the `nested_ept` load parameter, fixed at
/// load (the same on every CPU).
pub const fn classes(ept: bool) -> &'static [Class; f::FIELD_COUNT] {
    if ept {
        &CLASSES_EPT_OFFERED
    } else {
        &CLASSES_EPT_HIDDEN
    }
}

/// The class of the row at table position `i` in a view that offers EPT
/// (`ept`) or hides it, `None` past the table.
pub fn class_at(ept: bool, i: usize) -> Option<Class> {
    classes(ept).get(i).copied()
}

/// The class of the field with encoding `encoding` in a view that offers
/// EPT (`ept`) or hides it, `None` if it is not in the table
/// (VMREAD/VMWRITE fail with error 12 for it too).
pub fn class_of(ept: bool, encoding: u32) -> Option<Class> {
    f::index_of(encoding).and_then(|i| class_at(ept, i))
}

/// How VMCS shadowing may serve a field of class `c`:
///
/// * guest state, controls and host state: read-write.  vmcs12 is read
///   again (from the shadow VMCS) and checked in full at every VMLAUNCH /
///   VMRESUME, so no VMWRITE of these needs to be seen when it happens.
/// * exit information: read-only (VMWRITE fails with error 13 unless the
///   offer's VMX_MISC bit 29 says otherwise, which the emulation decides).
/// * host addresses: never, so the integration sees every change of a page
///   it has validated and pinned.
/// * hidden fields: never (VMREAD/VMWRITE must fail with error 12).
pub const fn shadow_of(c: Class) -> Shadow {
    match c {
        Class::GuestState | Class::Control | Class::HostState => Shadow::ReadWrite,
        Class::ExitInfo => Shadow::ReadOnly,
        Class::HostAddress | Class::Hidden => Shadow::Never,
    }
}

/// Whether the host's VMREAD/VMWRITE of `encoding` reaches a field at all
/// (in the table and not hidden) in a view that offers EPT (`ept`) or
/// hides it; otherwise VM-instruction error 12.
pub fn host_accessible(ept: bool, encoding: u32) -> bool {
    matches!(class_of(ept, encoding), Some(c) if c != Class::Hidden)
}

/// The table rows of class `c` in a view that offers EPT (`ept`) or hides
/// it.
pub fn fields_of(ept: bool, c: Class) -> impl Iterator<Item = &'static f::FieldInfo> {
    FIELDS
        .iter()
        .filter(move |i| class_of(ept, i.encoding) == Some(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_table_agrees_with_the_lists() {
        for ept in [false, true] {
            for (i, row) in FIELDS.iter().enumerate() {
                let hidden = HIDDEN_FIELDS.contains(&row.encoding)
                    && !(ept && EPT_FIELDS.contains(&row.encoding));
                let by_list = if HOST_ADDRESS_FIELDS.contains(&row.encoding) {
                    Class::HostAddress
                } else if hidden {
                    Class::Hidden
                } else {
                    match row.group {
                        Group::Control => Class::Control,
                        Group::Guest => Class::GuestState,
                        Group::Host => Class::HostState,
                        Group::ExitInfo => Class::ExitInfo,
                    }
                };
                assert_eq!(classes(ept)[i], by_list, "{} ept={ept}", row.name);
                assert_eq!(class_of(ept, row.encoding), Some(by_list));
                assert_eq!(class_at(ept, i), Some(by_list), "{}", row.name);
            }
        }
        assert_eq!(class_at(false, FIELDS.len()), None);
        assert_eq!(class_at(true, FIELDS.len()), None);
    }

    /// Offering EPT changes the class of exactly the EPT pointer (a
    /// control, shadowed: checked at every entry) and the PDPTEs (guest
    /// state); the guest-physical address is exit information either way.
    #[test]
    fn offering_ept_exposes_exactly_the_ept_fields() {
        for (i, row) in FIELDS.iter().enumerate() {
            let (off, on) = (CLASSES_EPT_HIDDEN[i], CLASSES_EPT_OFFERED[i]);
            if EPT_FIELDS.contains(&row.encoding) {
                assert_eq!(off, Class::Hidden, "{}", row.name);
                assert!(!host_accessible(false, row.encoding));
                assert!(host_accessible(true, row.encoding));
            } else {
                assert_eq!(off, on, "{}", row.name);
            }
        }
        let ept = |e: u32| class_of(true, e);
        assert_eq!(ept(f::EPT_POINTER.encoding()), Some(Class::Control));
        assert_eq!(shadow_of(Class::Control), Shadow::ReadWrite);
        for p in [
            f::GUEST_PDPTE0,
            f::GUEST_PDPTE1,
            f::GUEST_PDPTE2,
            f::GUEST_PDPTE3,
        ] {
            assert_eq!(ept(p.encoding()), Some(Class::GuestState));
        }
        for e in [false, true] {
            assert_eq!(
                class_of(e, f::GUEST_PHYSICAL_ADDRESS.encoding()),
                Some(Class::ExitInfo)
            );
            // EPT features that stay hidden with EPT: #VE, PML, EPTP list.
            for h in [
                f::VE_INFORMATION_ADDRESS,
                f::PML_ADDRESS,
                f::EPTP_LIST_ADDRESS,
            ] {
                assert!(!host_accessible(e, h.encoding()));
            }
        }
        assert!(!host_accessible(false, f::EPT_POINTER.encoding()));
    }
    use crate::hv::vmx::vmcs::fields::{Access, Marks};

    #[test]
    fn every_row_has_exactly_one_class_following_its_group() {
        let all = [
            Class::GuestState,
            Class::Control,
            Class::HostState,
            Class::ExitInfo,
            Class::HostAddress,
            Class::Hidden,
        ];
        for (ept, row) in [false, true]
            .into_iter()
            .flat_map(|e| FIELDS.iter().map(move |r| (e, r)))
        {
            let c = class_of(ept, row.encoding).unwrap();
            let n = all
                .iter()
                .filter(|k| fields_of(ept, **k).any(|r| r.encoding == row.encoding))
                .count();
            assert_eq!(n, 1, "{}", row.name);
            let ok = match row.group {
                Group::Control => {
                    matches!(c, Class::Control | Class::HostAddress | Class::Hidden)
                }
                Group::Guest => match c {
                    Class::HostAddress => row.name == "VMCS_LINK_POINTER",
                    Class::GuestState | Class::Hidden => true,
                    _ => false,
                },
                Group::Host => matches!(c, Class::HostState | Class::Hidden),
                Group::ExitInfo => c == Class::ExitInfo,
            };
            assert!(ok, "{}: {c:?} in group {:?}", row.name, row.group);
            // Read-only exactly for exit information, shadowed read-only.
            assert_eq!(row.access == Access::ReadOnly, c == Class::ExitInfo);
            if c == Class::ExitInfo {
                assert_eq!(shadow_of(c), Shadow::ReadOnly);
            }
        }
        // The lists name table rows only, once each, and are disjoint.
        for (i, e) in HOST_ADDRESS_FIELDS.iter().chain(HIDDEN_FIELDS).enumerate() {
            assert!(f::info(*e).is_some(), "{e:#x}");
            let rest = HOST_ADDRESS_FIELDS.iter().chain(HIDDEN_FIELDS).skip(i + 1);
            for o in rest {
                assert_ne!(e, o, "{e:#x} listed twice");
            }
        }
        for ept in [false, true] {
            assert_eq!(fields_of(ept, Class::HostAddress).count(), 9);
            let exposed = if ept { EPT_FIELDS.len() } else { 0 };
            assert_eq!(
                fields_of(ept, Class::Hidden).count(),
                HIDDEN_FIELDS.len() - exposed
            );
        }
        assert!(EPT_FIELDS.iter().all(|e| HIDDEN_FIELDS.contains(e)));
        assert_eq!(class_of(false, 0x0001), None);
        assert!(!host_accessible(false, 0x0001));
    }

    #[test]
    fn every_field_pkvm_uses_for_itself_is_reachable_except_ept() {
        // Everything the launch writes is an architectural field every CPU
        // pkvm runs on has; only the EPT pointer is hidden from the host,
        // while the view hides EPT.
        for ept in [false, true] {
            for row in FIELDS.iter().filter(|r| r.marks.has(Marks::LAUNCH)) {
                let c = class_of(ept, row.encoding).unwrap();
                if row.name == "EPT_POINTER" && !ept {
                    assert_eq!(c, Class::Hidden);
                } else {
                    assert_ne!(c, Class::Hidden, "{}", row.name);
                }
            }
        }
    }

    #[test]
    fn shadowing_never_serves_addresses_or_hidden_fields() {
        assert_eq!(shadow_of(Class::HostAddress), Shadow::Never);
        assert_eq!(shadow_of(Class::Hidden), Shadow::Never);
        assert_eq!(shadow_of(Class::GuestState), Shadow::ReadWrite);
        assert_eq!(
            class_of(false, f::MSR_BITMAP.encoding()),
            Some(Class::HostAddress)
        );
        assert_eq!(
            class_of(false, f::PML_ADDRESS.encoding()),
            Some(Class::Hidden)
        );
        assert_eq!(
            class_of(false, f::GUEST_RIP.encoding()),
            Some(Class::GuestState)
        );
        assert_eq!(
            class_of(false, f::HOST_RIP.encoding()),
            Some(Class::HostState)
        );
        assert_eq!(
            class_of(false, f::VM_EXIT_REASON.encoding()),
            Some(Class::ExitInfo)
        );
        assert_eq!(
            class_of(false, f::TSC_OFFSET.encoding()),
            Some(Class::Control)
        );
        // TSC scaling is offered (where the CPU has it): its multiplier is
        // a control the merge composes, shadowed where the CPU's shadow
        // VMCS holds it (probed per CPU).
        for ept in [false, true] {
            assert_eq!(
                class_of(ept, f::TSC_MULTIPLIER.encoding()),
                Some(Class::Control)
            );
            assert!(host_accessible(ept, f::TSC_MULTIPLIER.encoding()));
        }
        assert!(!host_accessible(false, f::POSTED_INTR_DESC_ADDR.encoding()));
        assert!(host_accessible(false, f::VIRTUAL_APIC_PAGE_ADDR.encoding()));
    }
}
