// SPDX-License-Identifier: GPL-2.0

//! The VMX view pkvm offers the host: the capability MSRs the host reads
//! (and `IA32_FEATURE_CONTROL`, CPUID.1:ECX.VMX), computed once at load
//! from the CPUs' common capabilities intersected with the allow-lists of
//! what pkvm emulates, identical on every CPU (also CPUs onlined later:
//! it lives in the hypervisor-wide state, not per CPU).
//!
//! The view is a [`RawVmxInfo`], the raw MSR values, so that anything that
//! decodes capabilities ([`VmxCaps::decode_view`]) reads it like a CPU's.
//! [`read_msr`] answers the host's RDMSR of one of them.
//!
//! What is offered is what the stock `kvm_intel` needs, and what pkvm can
//! emulate for it; everything else is hidden, each with its reason, in the
//! allow-lists below and in Documentation/nested.rst.

use crate::hv::vmx::caps::{
    ctl, ept_cap, AllowedCtls, RawVmxInfo, VmxCaps, VmxMsr, CPUID_1_ECX_VMX,
    FEATURE_CONTROL_LOCKED, FEATURE_CONTROL_VMX_OUTSIDE_SMX,
};

// The VMCS revision identifier of the view is the CPU's own, although the
// host's VMCS regions hold pkvm's format (`super::vmcs12::layout`) and are
// never given to the CPU: Linux (7.x, arch/x86/virt) writes the revision
// into its VMXON regions once at boot, from the bare CPU's IA32_VMX_BASIC,
// before pkvm is loaded; any other identifier would make every VMXON of
// the host fail.  Documentation/nested.rst.

/// VMXON and VMCS region size the view reports (IA32_VMX_BASIC 44:32).
pub const REGION_SIZE: u64 = 4096;

/// Pin-based controls pkvm emulates: external-interrupt exiting (0), NMI
/// exiting (3), virtual NMIs (5).  Hidden: the VMX-preemption timer (6:
/// not emulated; Bochs also hangs with it) and posted interrupts (7: the
/// descriptor is a physical address the CPU writes; without it KVM turns
/// APICv off).
pub const PIN_OFFERED: u32 = 1 << 0 | 1 << 3 | 1 << 5;

/// Primary processor-based controls pkvm emulates: interrupt-window (2),
/// TSC offsetting (3), HLT (7), INVLPG (9), MWAIT (10), RDPMC (11), RDTSC
/// (12), CR3 load/store (15, 16), CR8 load/store (19, 20), TPR shadow
/// (21), NMI-window (22), MOV-DR (23), unconditional I/O (24), I/O bitmaps
/// (25), monitor trap flag (27), MSR bitmaps (28), MONITOR (29), PAUSE
/// (30), secondary controls (31).  Hidden: tertiary controls (17).
pub const PROC_OFFERED: u32 = 1 << 2
    | 1 << 3
    | 1 << 7
    | 1 << 9
    | 1 << 10
    | 1 << 11
    | 1 << 12
    | 1 << 15
    | 1 << 16
    | 1 << 19
    | 1 << 20
    | 1 << 21
    | 1 << 22
    | 1 << 23
    | 1 << 24
    | 1 << 25
    | 1 << 27
    | 1 << 28
    | 1 << 29
    | 1 << 30
    | 1 << 31;

/// Secondary controls pkvm emulates: virtualize APIC accesses (0),
/// descriptor-table exiting (2), RDTSCP (3), virtualize x2APIC mode (4),
/// VPID (5), WBINVD exiting (6), PAUSE-loop exiting (10), RDRAND exiting
/// (11), INVPCID (12), RDSEED exiting (16), XSAVES (20), TSC scaling (25:
/// vmcs12's multiplier composed with vmcs01's TSC handling into vmcs02,
/// `merge::compose_tsc`; offered where the CPU has it, like every bit
/// here), user wait/pause (26); with the `nested_ept` load parameter
/// also [`PROC2_EPT_OFFERED`].  Hidden, and why:
/// * EPT (1) and unrestricted guest (7) when the module is loaded with
///   `nested_ept=0` (the default is 1: offered, run on shadow EPTs): KVM
///   then uses its own shadow paging.
/// * APIC-register virtualization (8), virtual-interrupt delivery (9):
///   APICv, off anyway without posted interrupts.
/// * VM functions (13), VMCS shadowing (14) for the host's own nested
///   guests, ENCLS exiting (15), PML (17), EPT-violation #VE (18), PT
///   conceal (19), mode-based execute (22), SPP (23), PT uses guest
///   physical addresses (24), and everything above 26:
///   physical addresses the CPU would write, EPT features, or not emulated.
pub const PROC2_OFFERED: u32 = 1 << 0
    | 1 << 2
    | 1 << 3
    | 1 << 4
    | 1 << 5
    | 1 << 6
    | 1 << 10
    | 1 << 11
    | 1 << 12
    | 1 << 16
    | 1 << 20
    | 1 << 25
    | 1 << 26;

/// VM-exit controls pkvm emulates: save debug controls (2), 64-bit host
/// (9), acknowledge interrupt on exit (15), save/load IA32_PAT (18, 19),
/// save/load IA32_EFER (20, 21).  Hidden: load PERF_GLOBAL_CTRL (12),
/// preemption-timer save (22), BNDCFGS (23), PT (24, 25), CET (28), and
/// the rest.  Each hidden load has its entry partner hidden too: KVM
/// refuses a view whose entry/exit pairs do not match.
pub const EXIT_OFFERED: u32 = 1 << 2 | ctl::EXIT_HOST_ADDR_SPACE_SIZE | 1 << 15 | 0xf << 18;

/// VM-entry controls pkvm emulates: load debug controls (2), IA-32e guest
/// (9), entry to SMM / deactivate dual monitor are hidden (10, 11), load
/// IA32_PAT (14), load IA32_EFER (15).  Hidden: load PERF_GLOBAL_CTRL
/// (13), BNDCFGS (16), PT (17, 18), CET (20), PKRS (22).
pub const ENTRY_OFFERED: u32 =
    1 << 2 | ctl::ENTRY_IA32E_GUEST | ctl::ENTRY_LOAD_PAT | ctl::ENTRY_LOAD_EFER;

/// IA32_VMX_EPT_VPID_CAP bits offered: the INVVPID ones only (INVVPID
/// (32), individual-address (40), single-context (41), all-context (42),
/// single-context-retaining-globals (43)), emulated by a flush of
/// everything the host cached.  No EPT bit unless the view offers EPT
/// (the `nested_ept` load parameter, [`EPT_CAP_OFFERED`]).
pub const EPT_VPID_CAP_OFFERED: u64 = 1 << 32 | 0xf << 40;

/// Secondary controls offered with EPT (the `nested_ept` load parameter): enable EPT (1) and
/// unrestricted guest (7), where the CPU has them.
pub const PROC2_EPT_OFFERED: u32 = ctl::PROC2_EPT | ctl::PROC2_UNRESTRICTED_GUEST;

/// IA32_VMX_EPT_VPID_CAP bits offered with EPT, where the CPU has them:
/// what the walk of EPT12 (`ept12_walk`) emulates and the shadow EPT
/// builds on.
///
/// * execute-only translations (0): only if the CPU has them (the shadow
///   EPT runs execute-only leaves on it);
/// * page-walk length 4 (6); not 5 (bit 7: the walk has 4 levels);
/// * UC (8) and WB (14) for EPTP12's memory type;
/// * 2 MiB (16) and 1 GiB (17) pages in EPT12: the walk handles both, the
///   shadow maps each with the largest leaf both sides allow;
/// * INVEPT (20), single-context (25) and all-context (26).
///
/// Hidden: accessed and dirty flags (21: not emulated, so KVM turns
/// `eptad` and PML off), advanced VM-exit information for EPT violations
/// (22: bits 11:9 of the qualification stay 0, and KVM then hides
/// mode-based execute), supervisor shadow-stack control (23), the rest.
pub const EPT_CAP_OFFERED: u64 = ept_cap::EXEC_ONLY
    | ept_cap::WALK_4
    | ept_cap::UC
    | ept_cap::WB
    | ept_cap::PAGE_2M
    | ept_cap::PAGE_1G
    | ept_cap::INVEPT
    | ept_cap::INVEPT_SINGLE
    | ept_cap::INVEPT_ALL;

/// The EPT capabilities without which the view offers no EPT at all,
/// whatever the `nested_ept` load parameter says: what the stock `kvm_intel` needs to turn
/// EPT on (a 4-level walk, write-back EPTP, all-context INVEPT; its
/// `hardware_setup`) and INVEPT itself.  pkvm requires them of the CPU
/// anyway (`caps::FEATURES`).
pub const EPT_CAP_REQUIRED: u64 =
    ept_cap::WALK_4 | ept_cap::WB | ept_cap::INVEPT | ept_cap::INVEPT_ALL;

/// IA32_VMX_MISC bits offered, where the CPU has them: store LMA on exit
/// (5), HLT and shutdown activity states (6, 7), VMWRITE to every field
/// including exit information (29, emulated on the vmcs12), zero-length
/// instruction injection (30).  Bits 24:16 (CR3-target values) are the
/// CPU's.  Bits 27:25 report 0: at most 512 MSRs in each load/store list.
/// Hidden: the preemption-timer rate (4:0), wait-for-SIPI (8), PT in VMX
/// (14), SMBASE read (15), SMM_MONITOR_CTL bit 2 (28), the MSEG revision.
pub const MISC_OFFERED: u64 = 1 << 5 | 1 << 6 | 1 << 7 | 0x1ff << 16 | 1 << 29 | 1 << 30;

/// "Default1" bits of the plain (non-TRUE) control MSRs (SDM Vol. 3D,
/// A.2): the plain MSRs report them as must-be-one.
const PIN_DEFAULT1: u32 = 0x16;
const PROC_DEFAULT1: u32 = 0x0401_e172;
const EXIT_DEFAULT1: u32 = 0x0003_6dff;
const ENTRY_DEFAULT1: u32 = 0x11ff;

/// The offered control MSR: the CPU's must-be-one bits stay (pkvm cannot
/// hide what the CPU forces), may-be-one is the CPU's and the allow-list's.
const fn offered(cpu: AllowedCtls, allowed: u32) -> AllowedCtls {
    AllowedCtls {
        must_be_one: cpu.must_be_one,
        may_be_one: (cpu.may_be_one & allowed) | cpu.must_be_one,
    }
}

const fn msr_of(a: AllowedCtls) -> u64 {
    (a.may_be_one as u64) << 32 | a.must_be_one as u64
}

/// The plain MSR of a TRUE control MSR: the default1 bits read as must-be-one.
const fn plain(a: AllowedCtls, default1: u32) -> u64 {
    msr_of(AllowedCtls {
        must_be_one: a.must_be_one | default1,
        may_be_one: a.may_be_one | default1,
    })
}

/// Computes the view without EPT (`nested_ept=0`: EPT hidden) from the CPU's
/// raw capabilities `cpu` (every CPU has the same: the load checks it).
/// `None` if `cpu` does not even decode as a VMX implementation (then pkvm
/// would not have loaded).  The module computes its view once at load
/// with [`offer_with`] and its `nested_ept` parameter.
pub fn offer(cpu: &RawVmxInfo) -> Option<RawVmxInfo> {
    offer_with(cpu, false)
}

/// The view with EPT and unrestricted guest offered (`ept`) or hidden.
/// EPT is offered only where the CPU has what [`EPT_CAP_REQUIRED`] lists;
/// unrestricted guest only with EPT.  A pure function of `cpu` and `ept`:
/// the same view on every CPU.
///
/// CR0: IA32_VMX_CR0_FIXED0 stays the CPU's (PE, NE and PG fixed to 1), as
/// on hardware with unrestricted guest: the relaxation of PE and PG for a
/// guest with unrestricted guest is part of the VM-entry checks
/// (`entry_checks::check_guest_against_offer`), not of the MSR, and the
/// host's own CR0 (VMXON) keeps needing them.
pub fn offer_with(cpu: &RawVmxInfo, ept: bool) -> Option<RawVmxInfo> {
    let c = VmxCaps::decode_view(cpu).ok()?;
    let basic_cpu = cpu.get(VmxMsr::Basic)?;
    // Bits 54 (INS/OUTS information) and 56 (no-error-code injection) are
    // the CPU's: exits and entries of nested guests run on it.
    let basic = u64::from(c.vmcs_revision)
        | REGION_SIZE << 32
        | 6 << 50
        | (basic_cpu & (1 << 54 | 1 << 56))
        | 1 << 55;
    let pin = offered(c.pinbased, PIN_OFFERED);
    let proc = offered(c.procbased, PROC_OFFERED);
    let ept =
        ept && c.procbased2.can_set(1) && c.ept_vpid_cap & EPT_CAP_REQUIRED == EPT_CAP_REQUIRED;
    let proc2_allowed = PROC2_OFFERED | if ept { PROC2_EPT_OFFERED } else { 0 };
    let proc2 = offered(c.procbased2, proc2_allowed);
    let exit = offered(c.exit, EXIT_OFFERED);
    let entry = offered(c.entry, ENTRY_OFFERED);
    let mut v = RawVmxInfo {
        cpuid_1_ecx: cpu.cpuid_1_ecx | CPUID_1_ECX_VMX,
        ..RawVmxInfo::default()
    };
    let fc = FEATURE_CONTROL_LOCKED | FEATURE_CONTROL_VMX_OUTSIDE_SMX;
    v.set(VmxMsr::FeatureControl, Some(fc));
    v.set(VmxMsr::Basic, Some(basic));
    v.set(VmxMsr::PinbasedCtls, Some(plain(pin, PIN_DEFAULT1)));
    v.set(VmxMsr::ProcbasedCtls, Some(plain(proc, PROC_DEFAULT1)));
    v.set(VmxMsr::ExitCtls, Some(plain(exit, EXIT_DEFAULT1)));
    v.set(VmxMsr::EntryCtls, Some(plain(entry, ENTRY_DEFAULT1)));
    v.set(VmxMsr::Misc, Some(c.misc & MISC_OFFERED));
    v.set(VmxMsr::Cr0Fixed0, Some(c.cr0_fixed.0));
    v.set(VmxMsr::Cr0Fixed1, Some(c.cr0_fixed.1));
    v.set(VmxMsr::Cr4Fixed0, Some(c.cr4_fixed.0));
    v.set(VmxMsr::Cr4Fixed1, Some(c.cr4_fixed.1));
    v.set(VmxMsr::VmcsEnum, cpu.get(VmxMsr::VmcsEnum));
    v.set(VmxMsr::ProcbasedCtls2, Some(msr_of(proc2)));
    let vpid = proc2.may_be_one & ctl::PROC2_VPID != 0;
    // KVM refuses (or zeroes) EPT capability bits without the EPT control
    // and VPID bits without the VPID control: each half only with its
    // control.
    let ept_part = if ept {
        c.ept_vpid_cap & EPT_CAP_OFFERED
    } else {
        0
    };
    let vpid_part = if vpid {
        c.ept_vpid_cap & EPT_VPID_CAP_OFFERED
    } else {
        0
    };
    // The MSR exists when EPT or VPID can be enabled.
    v.set(
        VmxMsr::EptVpidCap,
        (vpid || ept).then_some(ept_part | vpid_part),
    );
    v.set(VmxMsr::TruePinbasedCtls, Some(msr_of(pin)));
    v.set(VmxMsr::TrueProcbasedCtls, Some(msr_of(proc)));
    v.set(VmxMsr::TrueExitCtls, Some(msr_of(exit)));
    v.set(VmxMsr::TrueEntryCtls, Some(msr_of(entry)));
    // VM functions are hidden: the MSR does not exist (RDMSR #GPs).
    v.set(VmxMsr::Vmfunc, None);
    Some(v)
}

/// The value the host reads from MSR `index` if it is one of the view's
/// (`IA32_FEATURE_CONTROL`, `IA32_VMX_BASIC`..`IA32_VMX_VMFUNC`):
/// `Some(None)` when the view has no such MSR (RDMSR raises #GP, as on a
/// CPU without the feature), `None` when `index` is not a VMX MSR at all.
pub fn read_msr(view: &RawVmxInfo, index: u32) -> Option<Option<u64>> {
    if let Some(m) = VmxMsr::ALL.iter().find(|m| m.index() == index) {
        return Some(view.get(*m));
    }
    // Tertiary controls and the secondary exit controls are hidden.
    (0x492..=0x493).contains(&index).then_some(None)
}

/// Whether the view offers VMX at all (CPUID shows it).
pub fn has_vmx(view: &RawVmxInfo) -> bool {
    view.cpuid_1_ecx & CPUID_1_ECX_VMX != 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hv::vmx::caps::tests::icelake;
    use crate::hv::vmx::caps::{Feature, VmxError};

    fn view() -> RawVmxInfo {
        offer(&icelake()).unwrap()
    }

    /// The view without EPT (the shadow-paging step's).
    #[test]
    fn view_decodes_and_hides_what_is_not_emulated() {
        let v = offer_with(&icelake(), false).unwrap();
        let c = VmxCaps::decode_view(&v).unwrap();
        assert_eq!(c.vmcs_revision, 4, "the CPU's revision");
        assert_eq!(c.vmcs_size, 4096);
        assert!(c.true_ctls);
        for f in [
            Feature::Ept,
            Feature::UnrestrictedGuest,
            Feature::VmcsShadowing,
            Feature::Pml,
            Feature::Vmfunc,
            Feature::EptViolationVe,
            Feature::Spp,
            Feature::Mbec,
            Feature::PreemptionTimer,
            Feature::PostedInterrupts,
            Feature::TertiaryControls,
            Feature::EptAd,
            Feature::Invept,
        ] {
            assert!(!c.has(f), "{f:?} offered");
        }
        assert!(c.has(Feature::Vpid));
        assert!(c.has(Feature::MsrBitmaps));
        assert!(c.has(Feature::SecondaryControls));
        // pkvm itself could not run on its own view: EPT is missing.
        assert_eq!(VmxCaps::decode(&v), Err(VmxError::Missing(Feature::Ept)));
        // Hidden secondary controls (APICv).
        assert_eq!(c.procbased2.may_be_one & (1 << 8 | 1 << 9), 0);
        assert_eq!(c.misc & 0x1f, 0, "preemption-timer rate");
        assert_eq!(c.misc & (1 << 14 | 1 << 8), 0);
        assert_eq!(c.ept_vpid_cap & 0xffff_ffff, 0, "no EPT capability");
    }

    /// What the stock kvm_intel requires to load (its setup_vmcs_config's
    /// required controls), and matching entry/exit pairs.
    #[test]
    fn kvm_intel_requirements_are_offered() {
        let c = VmxCaps::decode_view(&view()).unwrap();
        let pin_req = 1 << 0 | 1 << 3;
        let proc_req = 1 << 7
            | 1 << 19
            | 1 << 20
            | 1 << 15
            | 1 << 16
            | 1 << 24
            | 1 << 23
            | 1 << 3
            | 1 << 10
            | 1 << 29
            | 1 << 9
            | 1 << 11
            | 1 << 2;
        let exit_req = 1 << 2 | 1 << 9 | 1 << 15;
        let entry_req = 1 << 2 | 1 << 9;
        assert_eq!(c.pinbased.may_be_one & pin_req, pin_req);
        assert_eq!(c.procbased.may_be_one & proc_req, proc_req);
        assert_eq!(c.exit.may_be_one & exit_req, exit_req);
        assert_eq!(c.entry.may_be_one & entry_req, entry_req);
        // Pairs: (entry load, exit load) both or neither.
        for (entry_bit, exit_bit) in [(13, 12), (14, 19), (15, 21), (16, 23), (17, 25), (20, 28)] {
            assert_eq!(
                c.entry.can_set(entry_bit),
                c.exit.can_set(exit_bit),
                "pair entry {entry_bit} / exit {exit_bit}"
            );
        }
    }

    #[test]
    fn controls_are_consistent() {
        for ept in [false, true] {
            controls_are_consistent_in(offer_with(&icelake(), ept).unwrap());
        }
    }

    fn controls_are_consistent_in(v: RawVmxInfo) {
        for (plain, tru) in [
            (VmxMsr::PinbasedCtls, VmxMsr::TruePinbasedCtls),
            (VmxMsr::ProcbasedCtls, VmxMsr::TrueProcbasedCtls),
            (VmxMsr::ExitCtls, VmxMsr::TrueExitCtls),
            (VmxMsr::EntryCtls, VmxMsr::TrueEntryCtls),
        ] {
            let p = AllowedCtls::from_msr(v.get(plain).unwrap());
            let t = AllowedCtls::from_msr(v.get(tru).unwrap());
            // Allowed-1 includes allowed-0; TRUE may only relax must-be-one.
            assert_eq!(p.must_be_one & !p.may_be_one, 0, "{plain:?}");
            assert_eq!(t.must_be_one & !t.may_be_one, 0, "{tru:?}");
            assert_eq!(t.must_be_one & !p.must_be_one, 0, "{tru:?}");
            assert_eq!(p.may_be_one, t.may_be_one, "{plain:?}");
            // Nothing beyond the CPU's.
            let cpu = AllowedCtls::from_msr(icelake().get(tru).unwrap());
            assert_eq!(t.may_be_one & !cpu.may_be_one, 0, "{tru:?}");
            assert_eq!(t.must_be_one, cpu.must_be_one, "{tru:?}");
        }
    }

    #[test]
    fn msr_reads_answer_from_the_view() {
        let v = view();
        assert_eq!(read_msr(&v, 0x3a), Some(Some(5)));
        assert_eq!(read_msr(&v, 0x480).unwrap().unwrap() & 0x7fff_ffff, 4);
        assert_eq!(read_msr(&v, 0x491), Some(None), "VMFUNC hidden");
        assert_eq!(read_msr(&v, 0x492), Some(None), "tertiary hidden");
        assert_eq!(read_msr(&v, 0x10), None, "not a VMX MSR");
        assert!(has_vmx(&v));
        // Without VPID the EPT/VPID capability MSR is absent.
        let mut cpu = icelake();
        let p2 = cpu.get(VmxMsr::ProcbasedCtls2).unwrap();
        cpu.set(VmxMsr::ProcbasedCtls2, Some(p2 & !(1 << 37)));
        let v = offer(&cpu).unwrap();
        assert_eq!(read_msr(&v, 0x48c), Some(None));
    }

    /// The default view hides EPT, and the `nested_ept` bit decides: EPT
    /// and unrestricted guest offered exactly with it.
    #[test]
    fn the_view_follows_the_parameter() {
        assert_eq!(offer(&icelake()), offer_with(&icelake(), false));
        assert_ne!(offer_with(&icelake(), true), offer_with(&icelake(), false));
        for ept in [false, true] {
            let c = VmxCaps::decode_view(&offer_with(&icelake(), ept).unwrap()).unwrap();
            assert_eq!(c.has(Feature::Ept), ept);
            assert_eq!(c.has(Feature::UnrestrictedGuest), ept);
            assert_eq!(c.has(Feature::Invept), ept);
        }
    }

    /// What the stock kvm_intel (7.2, `setup_vmcs_config` and
    /// `hardware_setup`) reads of the view with EPT and concludes:
    /// ept=Y (EPT control, 4-level walk, WB EPTP, all-context INVEPT),
    /// unrestricted_guest=Y, eptad=N (so pml=N), no 5-level EPT, no
    /// mode-based execute (no advanced exit information), large pages up
    /// to 1 GiB, and no "EPT CAP without the EPT control" inconsistency.
    #[test]
    fn view_with_ept_is_what_kvm_intel_needs() {
        let v = offer_with(&icelake(), true).unwrap();
        let c = VmxCaps::decode_view(&v).unwrap();
        let ept = read_msr(&v, 0x48c).unwrap().unwrap();
        let ept_lo = ept & 0xffff_ffff;
        let p2 = c.procbased2;
        // hardware_setup: enable_ept stays 1.
        assert!(p2.can_set(1));
        assert_ne!(ept_lo & ept_cap::WALK_4, 0);
        assert_ne!(ept_lo & ept_cap::WB, 0);
        assert_ne!(ept_lo & ept_cap::INVEPT_ALL, 0);
        // enable_unrestricted_guest stays 1.
        assert!(p2.can_set(7));
        // INVEPT single-context (ept_sync_context uses it), INVEPT itself.
        assert_ne!(ept_lo & ept_cap::INVEPT_SINGLE, 0);
        assert_ne!(ept_lo & ept_cap::INVEPT, 0);
        // Large pages: ept_caps_to_lpage_level gives 1 GiB.
        assert_ne!(ept_lo & ept_cap::PAGE_1G, 0);
        assert_ne!(ept_lo & ept_cap::PAGE_2M, 0);
        // UC EPTP and execute-only: the emulated CPU has both.
        assert_ne!(ept_lo & ept_cap::UC, 0);
        assert_ne!(ept_lo & ept_cap::EXEC_ONLY, 0);
        // Hidden: A/D (enable_ept_ad_bits = 0, hence pml = 0), 5 levels,
        // advanced exit information (so no MBEC), shadow-stack control.
        for b in [
            ept_cap::AD,
            ept_cap::WALK_5,
            ept_cap::ADVANCED_EXIT_INFO,
            ept_cap::SUPERVISOR_SHADOW_STACK,
        ] {
            assert_eq!(ept & b, 0, "{b:#x}");
        }
        assert_eq!(ept_lo & !EPT_CAP_OFFERED, 0);
        for f in [
            Feature::EptAd,
            Feature::Pml,
            Feature::Mbec,
            Feature::EptViolationVe,
            Feature::Spp,
            Feature::Vmfunc,
            Feature::VmcsShadowing,
        ] {
            assert!(!c.has(f), "{f:?} offered");
        }
        // VPID as before.
        assert_eq!(ept >> 32, (1 | 0xf << 8), "INVVPID and its four types");
        // CR0: the CPU's fixed bits (PE, NE, PG), relaxed for unrestricted
        // guest by the entry checks, not in the MSR.
        assert_eq!(
            c.cr0_fixed,
            VmxCaps::decode_view(&view()).unwrap().cr0_fixed
        );
        // Everything offered can be merged: nothing the host may set is
        // silently dropped or copied.
        use super::super::controls::Allowed;
        assert_eq!(Allowed::unmergeable(&c), [0; 5]);
        // Only the EPT parts differ from the view without EPT.
        let off = offer_with(&icelake(), false).unwrap();
        for m in VmxMsr::ALL {
            match m {
                VmxMsr::ProcbasedCtls2 => {
                    let d = v.get(*m).unwrap() ^ off.get(*m).unwrap();
                    assert_eq!(d, u64::from(PROC2_EPT_OFFERED) << 32);
                }
                VmxMsr::EptVpidCap => {
                    assert_eq!(v.get(*m).unwrap() ^ off.get(*m).unwrap(), ept_lo);
                }
                _ => assert_eq!(v.get(*m), off.get(*m), "{m:?}"),
            }
        }
    }

    /// KVM refuses a view whose EPT capability MSR has EPT bits without
    /// the EPT control ("EPT CAP should not exist ..."), and zeroes the
    /// VPID bits without the VPID control: each view keeps each half with
    /// its control.
    #[test]
    fn ept_and_vpid_capability_bits_come_with_their_controls() {
        for ept in [false, true] {
            for vpid in [false, true] {
                let mut cpu = icelake();
                let p2 = cpu.get(VmxMsr::ProcbasedCtls2).unwrap();
                if !vpid {
                    cpu.set(VmxMsr::ProcbasedCtls2, Some(p2 & !(1 << 37)));
                }
                let v = offer_with(&cpu, ept).unwrap();
                let c = VmxCaps::decode_view(&v).unwrap();
                let cap = v.get(VmxMsr::EptVpidCap);
                assert_eq!(cap.is_some(), ept || vpid, "ept={ept} vpid={vpid}");
                let cap = cap.unwrap_or(0);
                assert_eq!(cap & 0xffff_ffff != 0, c.procbased2.can_set(1));
                assert_eq!(cap >> 32 != 0, c.procbased2.can_set(5));
                assert_eq!(c.procbased2.can_set(1), ept);
                assert_eq!(c.procbased2.can_set(7), ept);
            }
        }
    }

    /// EPT is offered only where the CPU has what KVM needs; each
    /// capability only where the CPU has it (the shadow EPT runs on the
    /// real CPU); unrestricted guest only with EPT.
    #[test]
    fn ept_is_offered_only_as_far_as_the_cpu_has_it() {
        let with = |clear_cap: u64, clear_p2: u64| {
            let mut cpu = icelake();
            let e = cpu.get(VmxMsr::EptVpidCap).unwrap();
            cpu.set(VmxMsr::EptVpidCap, Some(e & !clear_cap));
            let p2 = cpu.get(VmxMsr::ProcbasedCtls2).unwrap();
            cpu.set(VmxMsr::ProcbasedCtls2, Some(p2 & !(clear_p2 << 32)));
            let v = offer_with(&cpu, true).unwrap();
            let c = VmxCaps::decode_view(&v).unwrap();
            (c.procbased2, c.ept_vpid_cap & 0xffff_ffff)
        };
        // Without execute-only, UC or 1 GiB pages: EPT without them.
        for b in [ept_cap::EXEC_ONLY, ept_cap::UC, ept_cap::PAGE_1G] {
            let (p2, cap) = with(b, 0);
            assert!(p2.can_set(1));
            assert_eq!(cap & b, 0, "{b:#x}");
            assert_ne!(cap, 0);
        }
        // Without what KVM requires: no EPT, no unrestricted guest, no EPT
        // capability bit.
        for b in [
            ept_cap::WALK_4,
            ept_cap::WB,
            ept_cap::INVEPT,
            ept_cap::INVEPT_ALL,
        ] {
            let (p2, cap) = with(b, 0);
            assert!(!p2.can_set(1) && !p2.can_set(7), "{b:#x}");
            assert_eq!(cap, 0, "{b:#x}");
        }
        // Without unrestricted guest on the CPU: EPT alone.
        let (p2, cap) = with(0, u64::from(ctl::PROC2_UNRESTRICTED_GUEST));
        assert!(p2.can_set(1) && !p2.can_set(7));
        assert_ne!(cap, 0);
        // Without EPT on the CPU: neither.
        let (p2, cap) = with(0, u64::from(ctl::PROC2_EPT));
        assert!(!p2.can_set(1) && !p2.can_set(7));
        assert_eq!(cap, 0);
    }

    /// TSC scaling (secondary bit 25) is in the view exactly when the CPU
    /// has it, with and without EPT, never forced to 1; the stock
    /// `kvm_intel` then offers `KVM_CAP_TSC_CONTROL` to its users.
    #[test]
    fn tsc_scaling_is_offered_iff_the_cpu_has_it() {
        let scaling: u32 = 1 << 25;
        for ept in [false, true] {
            let mut cpu = icelake();
            let p2 = cpu.get(VmxMsr::ProcbasedCtls2).unwrap();
            assert_ne!(p2 & u64::from(scaling) << 32, 0, "Bochs icelake has it");
            let c = VmxCaps::decode_view(&offer_with(&cpu, ept).unwrap()).unwrap();
            assert!(c.procbased2.can_set(25), "ept={ept}");
            assert_eq!(c.procbased2.must_be_one & scaling, 0);
            cpu.set(
                VmxMsr::ProcbasedCtls2,
                Some(p2 & !(u64::from(scaling) << 32)),
            );
            let c = VmxCaps::decode_view(&offer_with(&cpu, ept).unwrap()).unwrap();
            assert!(!c.procbased2.can_set(25), "ept={ept}");
        }
    }

    #[test]
    fn misc_offers_only_what_is_emulated() {
        let v = view();
        let misc = v.get(VmxMsr::Misc).unwrap();
        let cpu = icelake().get(VmxMsr::Misc).unwrap();
        assert_eq!(misc & !cpu, 0);
        assert_eq!(misc & !MISC_OFFERED, 0);
        assert_eq!(misc >> 25 & 7, 0, "512 MSRs per list");
    }
}
