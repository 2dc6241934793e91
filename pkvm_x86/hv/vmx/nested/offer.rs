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
    ctl, AllowedCtls, RawVmxInfo, VmxCaps, VmxMsr, CPUID_1_ECX_VMX, FEATURE_CONTROL_LOCKED,
    FEATURE_CONTROL_VMX_OUTSIDE_SMX,
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
/// (11), INVPCID (12), RDSEED exiting (16), XSAVES (20), user wait/pause
/// (26).  Hidden, and why:
/// * EPT (1) and unrestricted guest (7): until shadow EPT exists (the next
///   step); KVM uses its own shadow paging.
/// * APIC-register virtualization (8), virtual-interrupt delivery (9):
///   APICv, off anyway without posted interrupts.
/// * VM functions (13), VMCS shadowing (14) for the host's own nested
///   guests, ENCLS exiting (15), PML (17), EPT-violation #VE (18), PT
///   conceal (19), mode-based execute (22), SPP (23), PT uses guest
///   physical addresses (24), TSC scaling (25), and everything above:
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
/// everything the host cached.  No EPT bit: EPT is hidden.
pub const EPT_VPID_CAP_OFFERED: u64 = 1 << 32 | 0xf << 40;

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

/// Computes the view from the CPU's raw capabilities `cpu` (every CPU has
/// the same: the load checks it).  `None` if `cpu` does not even decode as
/// a VMX implementation (then pkvm would not have loaded).
pub fn offer(cpu: &RawVmxInfo) -> Option<RawVmxInfo> {
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
    let proc2 = offered(c.procbased2, PROC2_OFFERED);
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
    let ept_vpid = c.ept_vpid_cap & EPT_VPID_CAP_OFFERED;
    // The MSR exists when EPT or VPID can be enabled (VPID only, here).
    v.set(VmxMsr::EptVpidCap, vpid.then_some(ept_vpid));
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

    #[test]
    fn view_decodes_and_hides_what_is_not_emulated() {
        let v = view();
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
        // Hidden secondary controls and TSC scaling.
        assert_eq!(c.procbased2.may_be_one & (1 << 25 | 1 << 8 | 1 << 9), 0);
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
        let v = view();
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
