// SPDX-License-Identifier: GPL-2.0

//! The VM-entry MSR-load, VM-exit MSR-store and VM-exit MSR-load areas of
//! a vmcs12, emulated in software (vmcs02's counts are 0, so the CPU never
//! reads or writes host memory for them), per SDM Vol. 3C 27.4 "Loading
//! MSRs", 28.4 "Saving MSRs" and 28.6 "Loading MSRs", against the host's
//! MSR policy (`crate::hv::host_policy`): the host's guest may load
//! exactly the MSRs, and values, the host may write itself.
//!
//! * Count limit: `512 * (IA32_VMX_MISC[27:25] + 1)` of the **offer**;
//!   like KVM, entries beyond the limit fail as entry number limit + 1.
//! * Refused as the hardware refuses them: IA32_FS_BASE and IA32_GS_BASE
//!   and IA32_SMM_MONITOR_CTL in a load area, IA32_SMBASE in either, the
//!   x2APIC range 0x800-0x8FF, the microcode MSRs (0x79, 0x8B, as KVM), a
//!   non-zero reserved half; and everything a WRMSR at CPL 0 would #GP on,
//!   which for the host's guest means whatever the host's own WRMSR is
//!   refused by the policy ([`host_policy::msr_write`]) plus the value
//!   checks of the MSRs the VMCS switches (EFER, PAT, DEBUGCTL,
//!   SYSENTER_ESP/EIP, PERF_GLOBAL_CTRL), since a bad value there would
//!   otherwise fail the hypervisor's next VM entry of that context.
//! * A refused entry-load entry: VM-entry failure, exit reason 34 with the
//!   1-based index as qualification ([`EntryFailure::Exit`]); earlier
//!   entries stay loaded, as on hardware.  A refused exit-load or
//!   exit-store entry: VMX abort (SDM 28.7): abort indicator 4 ("loading
//!   host MSRs") or 1 ("saving guest MSRs") written to bytes 4-7 of the
//!   host's VMCS region, and the host CPU is shut down (parked).
//!
//! Reading and writing the 16-byte entries in host memory is the caller's
//! (`read(i)` returns `None` when the entry's page is not one the host
//! owns, which fails that entry like a refused MSR).

use crate::hv::host_policy::{self, msr, MsrContext, MsrRead, MsrWrite};
use crate::hv::vmx::vmcs::{self as f};

use super::entry_checks::{canonical, pat_valid, EntryFailure, EFER_LMA, EFER_LME, EFER_VALID};

/// One 16-byte entry of an MSR area.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct MsrEntry {
    /// Bits 31:0: the MSR index.
    pub index: u32,
    /// Bits 63:32: reserved (must be 0).
    pub reserved: u32,
    /// Bits 127:64: the value.
    pub value: u64,
}

impl MsrEntry {
    /// The entry from its 16 bytes in memory (little-endian).
    pub fn from_bytes(b: [u8; 16]) -> Self {
        let [a0, a1, a2, a3, r0, r1, r2, r3, v0, v1, v2, v3, v4, v5, v6, v7] = b;
        Self {
            index: u32::from_le_bytes([a0, a1, a2, a3]),
            reserved: u32::from_le_bytes([r0, r1, r2, r3]),
            value: u64::from_le_bytes([v0, v1, v2, v3, v4, v5, v6, v7]),
        }
    }

    /// The 16 bytes of the entry.
    pub fn to_bytes(self) -> [u8; 16] {
        // Spelled out: root mode may not call core's out-of-line
        // iterators.
        let i = self.index.to_le_bytes();
        let r = self.reserved.to_le_bytes();
        let v = self.value.to_le_bytes();
        [
            i[0], i[1], i[2], i[3], r[0], r[1], r[2], r[3], v[0], v[1], v[2], v[3], v[4], v[5],
            v[6], v[7],
        ]
    }
}

/// The most entries an area may have under `misc` (the offer's
/// IA32_VMX_MISC): 512 * (bits 27:25 + 1).
pub const fn max_entries(misc: u64) -> u32 {
    (((misc >> 25) & 7) as u32 + 1) * 512
}

/// Byte offset of the VMX-abort indicator (32 bits) in a VMCS region: the
/// integration writes the indicator of an [`AreaFailure::Abort`] there in
/// the host's vmcs12 page, then shuts the host CPU down (SDM 28.7).
pub const VMX_ABORT_OFFSET: usize = 4;
/// VMX-abort indicator: failure saving guest MSRs.
pub const ABORT_SAVING_GUEST_MSRS: u32 = 1;
/// VMX-abort indicator: failure loading host MSRs.
pub const ABORT_LOADING_HOST_MSRS: u32 = 4;

/// Which area is processed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoadArea {
    /// VM-entry MSR-load: into the guest's context (vmcs02).
    Entry,
    /// VM-exit MSR-load: into the host's context (vmcs01), after its host
    /// state was loaded.
    Exit,
}

/// What loading one entry does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MsrLoad {
    /// WRMSR on the CPU (root mode, before entering vmcs02 or resuming the
    /// host); a #GP of the WRMSR fails the entry like a refusal.
    Wrmsr {
        /// MSR index.
        index: u32,
        /// Value.
        value: u64,
    },
    /// A guest-state field of the target VMCS (vmcs02 at entry, vmcs01 at
    /// exit), which the CPU loads at its next entry: the MSRs the VMCS
    /// switches, whose real value root mode changes.
    VmcsField {
        /// Field encoding.
        encoding: u32,
        /// Value.
        value: u64,
    },
    /// The per-CPU MTRR shadow (`host_policy::MtrrShadow`), slot `slot`.
    MtrrShadow {
        /// Shadow slot.
        slot: usize,
        /// Value.
        value: u64,
    },
    /// Completes without effect (as the host's own WRMSR of it).
    Ignore,
}

/// What the load decisions need.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoadEnv {
    /// IA32_EFER of the target context before the load (vmcs02's guest
    /// field at entry, vmcs01's at exit): LME may not change, LMA is kept.
    pub efer: u64,
    /// Linear-address width for canonical checks.
    pub linear_bits: u8,
    /// Valid IA32_PERF_GLOBAL_CTRL bits.
    pub perf_global_valid: u64,
    /// Whether the VMCS switches IA32_PERF_GLOBAL_CTRL (`HostControls`).
    pub perf_global_switched: bool,
}

/// IA32_DEBUGCTL bits that may be 1 (0, 1, 6-15).
const DEBUGCTL_VALID: u64 = 0xffc3;
/// IA32_BIOS_UPDT_TRIG / IA32_BIOS_SIGN_ID (microcode).
const UCODE: [u32; 2] = [msr::BIOS_UPDT_TRIG, msr::BIOS_SIGN_ID];
/// IA32_SMBASE.
const SMBASE: u32 = 0x9e;
/// IA32_GS_BASE.
const GS_BASE: u32 = 0xc000_0101;
/// IA32_SYSENTER_ESP.
const SYSENTER_ESP: u32 = 0x175;

/// Refusals common to every area: reserved half, x2APIC, SMBASE,
/// microcode.
const fn refused_always(e: &MsrEntry) -> bool {
    e.reserved != 0
        || (e.index >> 8) == 0x8
        || e.index == SMBASE
        || e.index == UCODE[0]
        || e.index == UCODE[1]
}

/// The decision for one entry of a load area; `None` refuses it.
/// `current` is the MSR's current value on the CPU where the policy needs
/// it (APIC_BASE, MISC_ENABLE).
pub fn load_decision(e: &MsrEntry, env: &LoadEnv, current: Option<u64>) -> Option<MsrLoad> {
    if refused_always(e) || matches!(e.index, msr::FS_BASE | GS_BASE | msr::SMM_MONITOR_CTL) {
        return None;
    }
    let v = e.value;
    let field = |fld: u32| {
        Some(MsrLoad::VmcsField {
            encoding: fld,
            value: v,
        })
    };
    match e.index {
        msr::EFER => {
            if v & !EFER_VALID != 0 || (v ^ env.efer) & EFER_LME != 0 {
                return None;
            }
            Some(MsrLoad::VmcsField {
                encoding: f::GUEST_IA32_EFER.encoding(),
                value: (v & !EFER_LMA) | (env.efer & EFER_LMA),
            })
        }
        msr::PAT if pat_valid(v) => field(f::GUEST_IA32_PAT.encoding()),
        msr::DEBUGCTL if v & !DEBUGCTL_VALID == 0 => field(f::GUEST_IA32_DEBUGCTL.encoding()),
        msr::SYSENTER_CS => field(f::GUEST_SYSENTER_CS.encoding()),
        SYSENTER_ESP if canonical(v, env.linear_bits) => field(f::GUEST_SYSENTER_ESP.encoding()),
        msr::SYSENTER_EIP if canonical(v, env.linear_bits) => {
            field(f::GUEST_SYSENTER_EIP.encoding())
        }
        msr::PAT | msr::DEBUGCTL | SYSENTER_ESP | msr::SYSENTER_EIP => None,
        m if host_policy::msr_write_allowed(m) => Some(MsrLoad::Wrmsr { index: m, value: v }),
        m => {
            let ctx = MsrContext {
                current,
                perf_global_switched: env.perf_global_switched,
            };
            match host_policy::msr_write(m, v, ctx) {
                MsrWrite::Perform => Some(MsrLoad::Wrmsr { index: m, value: v }),
                MsrWrite::Refuse => None,
                MsrWrite::Shadow(slot) => Some(MsrLoad::MtrrShadow { slot, value: v }),
                MsrWrite::Ignore => Some(MsrLoad::Ignore),
                MsrWrite::PerfGlobalCtrl => {
                    if v & !env.perf_global_valid != 0 {
                        None
                    } else {
                        field(f::GUEST_IA32_PERF_GLOBAL_CTRL.encoding())
                    }
                }
            }
        }
    }
}

/// How a load area failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AreaFailure {
    /// Entry area: the VM entry fails (exit reason 34, qualification the
    /// 1-based index of the failing entry).
    Entry(EntryFailure),
    /// Exit areas: VMX abort with this indicator.
    Abort(u32),
}

fn fail(area: LoadArea, i: u32) -> AreaFailure {
    match area {
        LoadArea::Entry => AreaFailure::Entry(EntryFailure::Exit {
            reason: 34,
            qualification: u64::from(i) + 1,
        }),
        LoadArea::Exit => AreaFailure::Abort(ABORT_LOADING_HOST_MSRS),
    }
}

/// Processes a load area of `count` entries: `read(i)` gives entry `i`
/// (`None`: its page is not the host's), `current(index)` the MSR's value
/// on the CPU, `apply(load)` performs one decision and returns `false` if
/// it faulted (a WRMSR #GP).  Entries are applied in order; the first
/// failure stops the walk.  Returns the number of entries loaded.
pub fn load_area(
    area: LoadArea,
    count: u32,
    offer_misc: u64,
    env: &LoadEnv,
    mut read: impl FnMut(u32) -> Option<MsrEntry>,
    mut current: impl FnMut(u32) -> Option<u64>,
    mut apply: impl FnMut(MsrLoad) -> bool,
) -> Result<u32, AreaFailure> {
    let max = max_entries(offer_misc);
    let mut env = *env;
    for i in 0..count {
        if i >= max {
            return Err(fail(area, i));
        }
        let e = read(i).ok_or(fail(area, i))?;
        let cur = match e.index {
            msr::APIC_BASE | msr::MISC_ENABLE => current(e.index),
            _ => None,
        };
        let d = load_decision(&e, &env, cur).ok_or(fail(area, i))?;
        if !apply(d) {
            return Err(fail(area, i));
        }
        if let MsrLoad::VmcsField { encoding, value } = d {
            if encoding == f::GUEST_IA32_EFER.encoding() {
                env.efer = value;
            }
        }
    }
    Ok(count)
}

/// Where the value of one exit-store entry comes from (the guest's value
/// right after the exit of vmcs02).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MsrStore {
    /// RDMSR on the CPU (an MSR root mode does not change); a #GP fails
    /// the store (VMX abort 1).
    Rdmsr(u32),
    /// A guest-state field of vmcs02 (the MSRs the VMCS switches at exit:
    /// reading the CPU would give the hypervisor's value).
    VmcsField(u32),
    /// The per-CPU MTRR shadow slot.
    MtrrShadow(usize),
    /// IA32_FEATURE_CONTROL or a VMX capability MSR: the offered view's
    /// value (`crate::hv::vmx::nested::offer`), never the CPU's.
    VmxView(u32),
}

/// The source of one exit-store entry; `None` refuses it (VMX abort 1).
pub fn store_decision(e: &MsrEntry) -> Option<MsrStore> {
    if refused_always(e) {
        return None;
    }
    let field = |fl: u32| Some(MsrStore::VmcsField(fl));
    match e.index {
        msr::EFER => field(f::GUEST_IA32_EFER.encoding()),
        msr::PAT => field(f::GUEST_IA32_PAT.encoding()),
        msr::DEBUGCTL => field(f::GUEST_IA32_DEBUGCTL.encoding()),
        msr::SYSENTER_CS => field(f::GUEST_SYSENTER_CS.encoding()),
        SYSENTER_ESP => field(f::GUEST_SYSENTER_ESP.encoding()),
        msr::SYSENTER_EIP => field(f::GUEST_SYSENTER_EIP.encoding()),
        msr::FS_BASE => field(f::GUEST_FS_BASE.encoding()),
        GS_BASE => field(f::GUEST_GS_BASE.encoding()),
        msr::PERF_GLOBAL_CTRL => field(f::GUEST_IA32_PERF_GLOBAL_CTRL.encoding()),
        m => match host_policy::msr_read(m) {
            MsrRead::Shadow(s) => Some(MsrStore::MtrrShadow(s)),
            MsrRead::Perform => Some(MsrStore::Rdmsr(m)),
            MsrRead::VmxView => Some(MsrStore::VmxView(m)),
        },
    }
}

/// Processes the exit MSR-store area: for each entry `read(i)`, the value
/// is fetched by `fetch(source)` (`None`: faulted) and written back by
/// `write(i, entry)` (`false`: the page is not the host's).  Any failure
/// is a VMX abort with indicator 1.
pub fn store_area(
    count: u32,
    offer_misc: u64,
    mut read: impl FnMut(u32) -> Option<MsrEntry>,
    mut fetch: impl FnMut(MsrStore) -> Option<u64>,
    mut write: impl FnMut(u32, MsrEntry) -> bool,
) -> Result<u32, AreaFailure> {
    let abort = AreaFailure::Abort(ABORT_SAVING_GUEST_MSRS);
    if count > max_entries(offer_misc) {
        return Err(abort);
    }
    for i in 0..count {
        let mut e = read(i).ok_or(abort)?;
        let src = store_decision(&e).ok_or(abort)?;
        e.value = fetch(src).ok_or(abort)?;
        if !write(i, e) {
            return Err(abort);
        }
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    fn env() -> LoadEnv {
        LoadEnv {
            efer: 0xd01,
            linear_bits: 48,
            perf_global_valid: 0x7_0000_000f,
            perf_global_switched: true,
        }
    }

    fn e(index: u32, value: u64) -> MsrEntry {
        MsrEntry {
            index,
            reserved: 0,
            value,
        }
    }

    #[test]
    fn entry_bytes_round_trip() {
        let x = MsrEntry {
            index: 0xc000_0080,
            reserved: 7,
            value: 0x1122_3344_5566_7788,
        };
        let b = x.to_bytes();
        assert_eq!(&b[..4], &[0x80, 0, 0, 0xc0]);
        assert_eq!(b[4], 7);
        assert_eq!(b[8], 0x88);
        assert_eq!(MsrEntry::from_bytes(b), x);
    }

    #[test]
    fn count_limit_from_misc() {
        assert_eq!(max_entries(0), 512);
        assert_eq!(max_entries(0x6004_01e0), 512);
        assert_eq!(max_entries(3 << 25), 2048);
        assert_eq!(max_entries(7 << 25), 4096);
    }

    #[test]
    fn architectural_refusals() {
        let env = env();
        for idx in [
            msr::FS_BASE,
            GS_BASE,
            msr::SMM_MONITOR_CTL,
            SMBASE,
            0x79,
            0x8b,
            0x800,
            0x808,
            0x8ff,
        ] {
            assert_eq!(load_decision(&e(idx, 0), &env, Some(0)), None, "{idx:#x}");
        }
        for idx in [SMBASE, 0x79, 0x8b, 0x800, 0x830, 0x8ff] {
            assert_eq!(store_decision(&e(idx, 0)), None, "{idx:#x}");
        }
        // The x2APIC range ends at 0x8ff.
        assert_eq!(store_decision(&e(0x900, 0)), Some(MsrStore::Rdmsr(0x900)));
        assert_eq!(
            store_decision(&e(msr::VMX_BASIC, 0)),
            Some(MsrStore::VmxView(msr::VMX_BASIC))
        );
        let mut r = e(msr::TSC_AUX, 1);
        r.reserved = 1;
        assert_eq!(load_decision(&r, &env, None), None);
        assert_eq!(store_decision(&r), None);
        // FS/GS base are stored (from vmcs02), not loaded.
        assert_eq!(
            store_decision(&e(GS_BASE, 0)),
            Some(MsrStore::VmcsField(f::GUEST_GS_BASE.encoding()))
        );
    }

    #[test]
    fn loads_follow_the_host_policy() {
        let env = env();
        let w = |i, v| Some(MsrLoad::Wrmsr { index: i, value: v });
        // What the host may write itself, its guest may load.
        assert_eq!(
            load_decision(&e(msr::TSC_AUX, 5), &env, None),
            w(msr::TSC_AUX, 5)
        );
        assert_eq!(
            load_decision(&e(0xc000_0102, 5), &env, None),
            w(0xc000_0102, 5)
        );
        assert_eq!(
            load_decision(&e(msr::SPEC_CTRL, 1), &env, None),
            w(msr::SPEC_CTRL, 1)
        );
        // What the host may not, its guest may not.
        for (idx, v) in [
            (msr::FEATURE_CONTROL, 5),
            (msr::VMX_BASIC, 0),
            (msr::RTIT_CTL, 1),
            (msr::XSS, 1 << 8),
            (msr::LBR_CTL, 1),
            (0x1234, 0),
        ] {
            assert_eq!(load_decision(&e(idx, v), &env, None), None, "{idx:#x}");
        }
        // APIC base: only without moving the APIC.
        let apic = 0xfee0_0900;
        assert_eq!(
            load_decision(&e(msr::APIC_BASE, apic | 0x400), &env, Some(apic)),
            w(msr::APIC_BASE, apic | 0x400)
        );
        assert_eq!(
            load_decision(&e(msr::APIC_BASE, 0x1000_0900), &env, Some(apic)),
            None
        );
        assert_eq!(load_decision(&e(msr::APIC_BASE, apic), &env, None), None);
        // MTRRs go to the shadow, microcode is refused, PERF_GLOBAL_CTRL to the field.
        assert_eq!(
            load_decision(&e(0x2ff, 6), &env, None),
            Some(MsrLoad::MtrrShadow { slot: 43, value: 6 })
        );
        assert_eq!(
            load_decision(&e(msr::PERF_GLOBAL_CTRL, 3), &env, None),
            Some(MsrLoad::VmcsField {
                encoding: f::GUEST_IA32_PERF_GLOBAL_CTRL.encoding(),
                value: 3
            })
        );
        assert_eq!(
            load_decision(&e(msr::PERF_GLOBAL_CTRL, 1 << 40), &env, None),
            None
        );
        let mut ns = env;
        ns.perf_global_switched = false;
        assert_eq!(load_decision(&e(msr::PERF_GLOBAL_CTRL, 3), &ns, None), None);
    }

    #[test]
    fn vmcs_switched_msrs_go_to_the_field_with_value_checks() {
        let env = env();
        let fld = |enc: u32, v| {
            Some(MsrLoad::VmcsField {
                encoding: enc,
                value: v,
            })
        };
        // EFER: LME fixed, LMA kept from the context, reserved bits refused.
        assert_eq!(
            load_decision(&e(msr::EFER, 0x501), &env, None),
            fld(
                f::GUEST_IA32_EFER.encoding(),
                0xd01 & !0x800 | 0x100 | 0x400 | 1
            )
        );
        assert_eq!(
            load_decision(&e(msr::EFER, 0x901), &env, None),
            fld(f::GUEST_IA32_EFER.encoding(), 0xd01)
        );
        assert_eq!(
            load_decision(&e(msr::EFER, 0x801), &env, None),
            None,
            "LME cleared in long mode"
        );
        assert_eq!(
            load_decision(&e(msr::EFER, 0xd01 | 1 << 12), &env, None),
            None
        );
        assert_eq!(
            load_decision(&e(msr::PAT, 0x0007_0406_0007_0406), &env, None),
            fld(f::GUEST_IA32_PAT.encoding(), 0x0007_0406_0007_0406)
        );
        assert_eq!(load_decision(&e(msr::PAT, 0x0002), &env, None), None);
        assert_eq!(
            load_decision(&e(msr::DEBUGCTL, 1), &env, None),
            fld(f::GUEST_IA32_DEBUGCTL.encoding(), 1)
        );
        assert_eq!(load_decision(&e(msr::DEBUGCTL, 1 << 4), &env, None), None);
        assert_eq!(
            load_decision(&e(msr::SYSENTER_CS, 0x10), &env, None),
            fld(f::GUEST_SYSENTER_CS.encoding(), 0x10)
        );
        assert_eq!(load_decision(&e(SYSENTER_ESP, 1 << 47), &env, None), None);
        assert_eq!(
            load_decision(&e(msr::SYSENTER_EIP, 1 << 47), &env, None),
            None
        );
        assert_eq!(
            load_decision(&e(msr::SYSENTER_EIP, !0 << 47), &env, None),
            fld(f::GUEST_SYSENTER_EIP.encoding(), !0 << 47)
        );
    }

    #[test]
    fn entry_load_failure_is_exit_34_with_the_index() {
        let list = [
            e(msr::TSC_AUX, 1),
            e(msr::SPEC_CTRL, 0),
            e(msr::FS_BASE, 0),
            e(msr::TSC_AUX, 2),
        ];
        let mut applied = Vec::new();
        let r = load_area(
            LoadArea::Entry,
            4,
            0,
            &env(),
            |i| list.get(i as usize).copied(),
            |_| None,
            |d| {
                applied.push(d);
                true
            },
        );
        assert_eq!(
            r,
            Err(AreaFailure::Entry(EntryFailure::Exit {
                reason: 34,
                qualification: 3
            }))
        );
        assert_eq!(
            applied.len(),
            2,
            "entries before the failing one stay loaded"
        );
        // The same at exit: VMX abort 4.
        let r = load_area(
            LoadArea::Exit,
            4,
            0,
            &env(),
            |i| list.get(i as usize).copied(),
            |_| None,
            |_| true,
        );
        assert_eq!(r, Err(AreaFailure::Abort(4)));
        // An unreadable entry (not the host's page) and a faulting WRMSR fail alike.
        let r = load_area(
            LoadArea::Entry,
            2,
            0,
            &env(),
            |i| if i == 0 { list.first().copied() } else { None },
            |_| None,
            |_| true,
        );
        assert_eq!(
            r,
            Err(AreaFailure::Entry(EntryFailure::Exit {
                reason: 34,
                qualification: 2
            }))
        );
        let r = load_area(
            LoadArea::Entry,
            1,
            0,
            &env(),
            |_| Some(e(msr::TSC_AUX, 1 << 40)),
            |_| None,
            |_| false,
        );
        assert_eq!(
            r,
            Err(AreaFailure::Entry(EntryFailure::Exit {
                reason: 34,
                qualification: 1
            }))
        );
        // The whole list loads.
        let ok = [e(msr::TSC_AUX, 1), e(msr::EFER, 0xd01)];
        let mut n = 0;
        assert_eq!(
            load_area(
                LoadArea::Entry,
                2,
                0,
                &env(),
                |i| ok.get(i as usize).copied(),
                |_| None,
                |_| {
                    n += 1;
                    true
                }
            ),
            Ok(2)
        );
        assert_eq!(n, 2);
    }

    #[test]
    fn count_beyond_the_limit_fails_at_limit_plus_one() {
        let mut reads = 0;
        let r = load_area(
            LoadArea::Entry,
            513,
            0,
            &env(),
            |_| {
                reads += 1;
                Some(e(msr::TSC_AUX, 0))
            },
            |_| None,
            |_| true,
        );
        assert_eq!(
            r,
            Err(AreaFailure::Entry(EntryFailure::Exit {
                reason: 34,
                qualification: 513
            }))
        );
        assert_eq!(reads, 512);
        assert_eq!(
            store_area(513, 0, |_| None, |_| None, |_, _| true),
            Err(AreaFailure::Abort(1))
        );
    }

    #[test]
    fn store_reads_switched_msrs_from_vmcs02_never_the_cpu() {
        // After the exit, the CPU's GS base, EFER, PAT, SYSENTER are the
        // hypervisor's: storing them must take the guest's from vmcs02.
        let list = [
            e(GS_BASE, 0),
            e(msr::EFER, 0),
            e(msr::TSC_AUX, 0),
            e(0x200, 0),
            e(msr::FS_BASE, 0),
        ];
        let mut out = [MsrEntry::default(); 5];
        let hv_gs_base = 0xffff_c900_7770_0000u64;
        let r = store_area(
            5,
            0,
            |i| list.get(i as usize).copied(),
            |src| match src {
                MsrStore::VmcsField(enc) if enc == f::GUEST_GS_BASE.encoding() => Some(0x1111),
                MsrStore::VmcsField(enc) if enc == f::GUEST_FS_BASE.encoding() => Some(0x3333),
                MsrStore::VmcsField(enc) if enc == f::GUEST_IA32_EFER.encoding() => Some(0x501),
                MsrStore::Rdmsr(msr::TSC_AUX) => Some(0x2222),
                MsrStore::Rdmsr(GS_BASE) => Some(hv_gs_base),
                MsrStore::MtrrShadow(0) => Some(0x6),
                _ => None,
            },
            |i, en| {
                out[i as usize] = en;
                true
            },
        );
        assert_eq!(r, Ok(5));
        let vals: Vec<u64> = out.iter().map(|x| x.value).collect();
        assert_eq!(vals, [0x1111, 0x501, 0x2222, 0x6, 0x3333]);
        assert!(!vals.contains(&hv_gs_base));
        assert_eq!(out[0].index, GS_BASE);
        // Failures: VMX abort 1.
        assert_eq!(
            store_area(1, 0, |_| Some(e(SMBASE, 0)), |_| Some(0), |_, _| true),
            Err(AreaFailure::Abort(1))
        );
        assert_eq!(
            store_area(1, 0, |_| Some(e(0x10, 0)), |_| None, |_, _| true),
            Err(AreaFailure::Abort(1))
        );
        assert_eq!(
            store_area(1, 0, |_| Some(e(0x10, 0)), |_| Some(1), |_, _| false),
            Err(AreaFailure::Abort(1))
        );
        assert_eq!(
            store_area(1, 0, |_| None, |_| Some(1), |_, _| true),
            Err(AreaFailure::Abort(1))
        );
    }
}
