// SPDX-License-Identifier: GPL-2.0

//! The deprivileged host's policy: everything the host may and may not do
//! while pkvm owns VMX root mode, in one place, each decision documented
//! next to it.
//!
//! * [`on_exit`]: what root mode does for each VM-exit reason (emulate,
//!   refuse with #UD, run a hypercall, ...); the exit handler asks this
//!   instead of knowing reason numbers itself.
//! * [`cpuid_filter`]: the CPUID answers the host sees.
//! * [`CR0_GUEST_HOST_MASK`], [`CR4_GUEST_HOST_MASK`], [`cr4_write`]: which
//!   control-register bits the host owns and how a CR4 write is checked.
//! * [`MSR_INTERCEPTS`], [`msr_write_refused`]: which MSR accesses exit and
//!   which writes are refused with #GP.
//! * [`host_controls`]: the VM-execution, VM-exit and VM-entry controls of
//!   the host's VMCS (what exits at all), computed from the CPU's
//!   capabilities.
//!
//! Decoding of exits is `crate::hv::vmx::exit`; the MSR-bitmap format is
//! `crate::hv::vmx::msr_bitmap`.  Pure: no CPU access.

use crate::hv::vmx::caps::{ctl, Feature, VmxCaps, CPUID_1_ECX_VMX};
use crate::hv::vmx::exit::reason;
use crate::hv::vmx::msr_bitmap::{Access, MsrRule};

// ---------------------------------------------------------------------------
// Exits

/// What root mode does for an exit of the deprivileged host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// INIT signal (always an exit in VMX non-root operation): the CPU
    /// waits for a SIPI, parked in non-root operation (wait-for-SIPI
    /// activity state).
    Init,
    /// SIPI (an exit only in the wait-for-SIPI state): the CPU starts in
    /// real mode at the vector's page, in non-root operation (unrestricted
    /// guest).
    Sipi,
    /// CPUID: run it and answer through [`cpuid_filter`].
    Cpuid,
    /// VMCALL: a hypercall (at CPL 0; #UD from user mode, as on a CPU
    /// without a hypervisor).
    Hypercall,
    /// Control-register access: only a MOV to CR4 that differs from the
    /// read shadow in a bit the host does not own ([`CR4_GUEST_HOST_MASK`])
    /// exits; it is checked by [`cr4_write`].  Any other kind is unexpected.
    ControlRegister,
    /// RDMSR of an MSR outside the bitmap's ranges (those inside never exit
    /// on reads, see [`MSR_INTERCEPTS`]): performed for the host, #GP if the
    /// CPU refuses it.
    Rdmsr,
    /// WRMSR that exited: refused with #GP if [`msr_write_refused`], else
    /// performed for the host.
    Wrmsr,
    /// XSETBV (always exits in VMX non-root): performed, #GP if the CPU
    /// refuses it.
    Xsetbv,
    /// INVD (always exits): run as WBINVD.  Invalidating without writing
    /// back could discard dirty lines of memory the host does not own
    /// (root mode's, a guest's); WBINVD invalidates too, after the write
    /// back, so the host loses nothing it could rely on.
    InvdAsWbinvd,
    /// Refused with #UD, as on a CPU without the feature: the VMX
    /// instructions (VMCLEAR..=VMXON, INVEPT, INVVPID, VMFUNC), since the
    /// host sees a CPU without VMX until nested VMX exists (CPUID hides it,
    /// see [`cpuid_filter`]), and GETSEC (SMX), which pkvm does not
    /// emulate.
    Undefined,
    /// EPT violation: the host touched memory it does not own; a #PF is
    /// injected.
    ProtectedMemory,
    /// NMI window: nothing to do (pending NMIs are delivered on the way
    /// back).
    Nothing,
    /// Triple fault or a failed VM entry: the host cannot continue on this
    /// CPU; it is parked.
    HostDead,
    /// Anything else: not enabled by [`host_controls`], so a hypervisor
    /// bug; counted and answered with #UD.
    Unexpected,
}

/// The action for basic exit reason `basic`.
pub const fn on_exit(basic: u16) -> Action {
    match basic {
        reason::CPUID => Action::Cpuid,
        reason::VMCALL => Action::Hypercall,
        reason::CR_ACCESS => Action::ControlRegister,
        reason::RDMSR => Action::Rdmsr,
        reason::WRMSR => Action::Wrmsr,
        reason::XSETBV => Action::Xsetbv,
        reason::INVD => Action::InvdAsWbinvd,
        reason::VMCLEAR..=reason::VMXON
        | reason::INVEPT
        | reason::INVVPID
        | reason::VMFUNC
        | reason::GETSEC => Action::Undefined,
        reason::EPT_VIOLATION => Action::ProtectedMemory,
        reason::NMI_WINDOW => Action::Nothing,
        reason::INIT => Action::Init,
        reason::SIPI => Action::Sipi,
        reason::TRIPLE_FAULT
        | reason::ENTRY_FAIL_GUEST_STATE
        | reason::ENTRY_FAIL_MSR_LOADING
        | reason::ENTRY_FAIL_MCE => Action::HostDead,
        _ => Action::Unexpected,
    }
}

// ---------------------------------------------------------------------------
// CPUID

/// Hypervisor CPUID leaves (0x4000_0000 and up).
pub mod cpuid {
    /// Base of the hypervisor range.
    pub const HV_BASE: u32 = 0x4000_0000;
    /// Last hypervisor leaf pkvm answers.
    pub const HV_MAX: u32 = 0x4000_0001;
    /// Signature in EBX, ECX, EDX of leaf 0x4000_0000: "pkvm-x86\0\0\0\0".
    pub const SIGNATURE: [u32; 3] = [
        u32::from_le_bytes(*b"pkvm"),
        u32::from_le_bytes(*b"-x86"),
        0,
    ];
    /// Leaf 0x4000_0001 EAX: hypercall ABI version.
    pub const ABI_VERSION: u32 = 1;
}

/// The CPUID result the host sees for `leaf`, given what the CPU returned.
///
/// * Leaf 1: ECX.VMX (bit 5) reads as 0.  VMX belongs to pkvm; until nested
///   VMX exists the host must not try to use it, and KVM checks exactly
///   this bit before anything else, so `kvm_intel` fails to load with
///   "VMX not supported" instead of faulting on VMXON.
/// * Leaf 0x4000_0000 carries the signature and the highest hypervisor
///   leaf, 0x4000_0001 the ABI version, the rest of 0x4000_00xx reads as 0.
/// * Everything else is the CPU's own answer.
pub const fn cpuid_filter(leaf: u32, native: [u32; 4]) -> [u32; 4] {
    match leaf {
        1 => [
            native[0],
            native[1],
            native[2] & !CPUID_1_ECX_VMX,
            native[3],
        ],
        cpuid::HV_BASE => [
            cpuid::HV_MAX,
            cpuid::SIGNATURE[0],
            cpuid::SIGNATURE[1],
            cpuid::SIGNATURE[2],
        ],
        0x4000_0001 => [cpuid::ABI_VERSION, 0, 0, 0],
        0x4000_0002..=0x4000_00ff => [0; 4],
        _ => native,
    }
}

// ---------------------------------------------------------------------------
// Control registers

/// CR4.VMXE.
pub const CR4_VMXE: u64 = 1 << 13;

/// CR0 bits the host does not own: none.  Every CR0 write of the host goes
/// straight to the CPU.  Unrestricted guest is on (for SIPI), so the host
/// may clear PE and PG as natively; it still runs under the host EPT, and
/// the CPU keeps the other fixed bits (a write that breaks them is a
/// VM-entry failure the host could cause natively with a triple fault).
pub const CR0_GUEST_HOST_MASK: u64 = 0;

/// CR4 bits the host does not own: VMXE only.  VMX non-root operation needs
/// it set; the host reads its own value of it from the read shadow, and
/// its writes to it exit to [`cr4_write`].
pub const CR4_GUEST_HOST_MASK: u64 = CR4_VMXE;

/// Outcome of a host write to CR4 under pkvm's CR4 guest/host mask (which
/// covers VMXE only): the value for GUEST_CR4 and for the CR4 read shadow,
/// or `None` to inject #GP (a bit the CPU does not allow in VMX operation).
///
/// The host keeps believing it controls CR4.VMXE (the shadow holds what it
/// wrote); the real CR4 keeps VMXE set, as VMX non-root operation requires.
pub const fn cr4_write(new: u64, fixed0: u64, fixed1: u64) -> Option<(u64, u64)> {
    let real = new | CR4_VMXE;
    // Bits that must be 1 (other than VMXE, which we force) and bits that
    // may not be 1.
    if (real & fixed0) != fixed0 || (real & !fixed1) != 0 {
        return None;
    }
    Some((real, new))
}

// ---------------------------------------------------------------------------
// MSRs

/// `IA32_FEATURE_CONTROL`.
pub const MSR_IA32_FEATURE_CONTROL: u32 = 0x3a;
/// `IA32_VMX_BASIC`, the first VMX capability MSR.
pub const MSR_IA32_VMX_BASIC: u32 = 0x480;
/// The last VMX capability MSR pkvm knows: `IA32_VMX_EXIT_CTLS2` (0x493).
/// 0x492 is `IA32_VMX_PROCBASED_CTLS3`.
pub const MSR_IA32_VMX_CAP_LAST: u32 = 0x493;

/// The deprivileged host's policy: exit on WRMSR to `IA32_FEATURE_CONTROL`
/// and to every VMX capability MSR, 0x480 (`IA32_VMX_BASIC`) ..= 0x493
/// (`IA32_VMX_EXIT_CTLS2`); nothing else exits.
///
/// * `IA32_FEATURE_CONTROL` is locked by firmware or by the module before
///   VMXON; the exit handler must inject #GP, as the CPU would for a write
///   to a locked register, so the host cannot learn that it is
///   deprivileged by a write that silently succeeds or fails differently.
/// * The capability MSRs are read-only and a write must #GP; intercepting
///   keeps that architectural once the hyp virtualises them.  0x493 is
///   included although older SDMs end the block at 0x492: a write to it
///   #GPs too, so intercepting costs nothing on CPUs without it.
/// * **Reads pass through**, including of the capability MSRs: until nested
///   VMX exists the host sees the real CPU's capabilities.  When nested VMX
///   lands, reads of 0x480..=0x493 (and of `IA32_FEATURE_CONTROL`) must be
///   intercepted to report what the hyp emulates.
pub const MSR_INTERCEPTS: &[MsrRule] = &[
    MsrRule::one(MSR_IA32_FEATURE_CONTROL, Access::Write),
    MsrRule::range(MSR_IA32_VMX_BASIC, MSR_IA32_VMX_CAP_LAST, Access::Write),
];

/// Whether a host WRMSR to `msr` is refused (#GP): those
/// [`MSR_INTERCEPTS`] names for writes.  Other writes that exit (MSRs
/// outside the bitmap's ranges) are performed for the host: it could write
/// them natively, so doing it on its behalf grants nothing new.
pub fn msr_write_refused(msr: u32) -> bool {
    MSR_INTERCEPTS
        .iter()
        .any(|r| r.access.write() && (r.first..=r.last).contains(&msr))
}

// ---------------------------------------------------------------------------
// VMX controls

/// Secondary control bit 26: enable user wait and pause (UMWAIT/TPAUSE).
pub const PROC2_USER_WAIT_PAUSE: u32 = 1 << 26;
/// VM-exit control bit 2: save debug controls.
pub const EXIT_SAVE_DEBUG_CONTROLS: u32 = 1 << 2;
/// VM-entry control bit 2: load debug controls.
pub const ENTRY_LOAD_DEBUG_CONTROLS: u32 = 1 << 2;

/// The five control fields, ready to write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostControls {
    /// Pin-based controls.
    pub pin: u32,
    /// Primary processor-based controls.
    pub proc1: u32,
    /// Secondary processor-based controls.
    pub proc2: u32,
    /// VM-exit controls.
    pub exit: u32,
    /// VM-entry controls.
    pub entry: u32,
    /// Whether VPID is used (then VIRTUAL_PROCESSOR_ID must be non-zero).
    pub vpid: bool,
}

/// Which control field could not be set up, and the required bits the
/// CPU does not allow in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ControlsError {
    /// Pin-based.
    Pin(u32),
    /// Primary processor-based.
    Proc(u32),
    /// Secondary processor-based.
    Proc2(u32),
    /// VM-exit.
    Exit(u32),
    /// VM-entry.
    Entry(u32),
}

/// Computes the host's controls from `caps`: every control pkvm needs
/// (MSR bitmaps, secondary controls, EPT, VPID when present; EFER, PAT and
/// debug controls switched on exit and entry; 64-bit host), the
/// instruction enables that would otherwise make RDTSCP, INVPCID,
/// XSAVES/XRSTORS, UMWAIT/TPAUSE raise #UD in the host, and nothing that
/// makes the host exit more: no interrupt, NMI, HLT, I/O, CR3/CR8, MOV-DR,
/// RDTSC, PAUSE or MONITOR/MWAIT exiting, no preemption timer, never
/// tertiary controls.  Bits the CPU forces to 1 stay 1 (`adjust`).
pub fn host_controls(caps: &VmxCaps) -> Result<HostControls, ControlsError> {
    let vpid = caps.has(Feature::Vpid);
    let pin = caps.pinbased.adjust(0, 0).map_err(ControlsError::Pin)?;
    let proc1 = caps
        .procbased
        .adjust(ctl::PROC_MSR_BITMAPS | ctl::PROC_SECONDARY_CONTROLS, 0)
        .map_err(ControlsError::Proc)?;
    let proc2 = caps
        .procbased2
        .adjust(
            // Unrestricted guest: a CPU started by SIPI runs its real-mode
            // trampoline in non-root operation (see `Action::Sipi`).
            ctl::PROC2_EPT | ctl::PROC2_UNRESTRICTED_GUEST | if vpid { ctl::PROC2_VPID } else { 0 },
            // Instructions that raise #UD in non-root mode unless enabled.
            ctl::PROC2_RDTSCP | ctl::PROC2_INVPCID | ctl::PROC2_XSAVES | PROC2_USER_WAIT_PAUSE,
        )
        .map_err(ControlsError::Proc2)?;
    let exit = caps
        .exit
        .adjust(
            ctl::EXIT_HOST_ADDR_SPACE_SIZE
                | ctl::EXIT_SAVE_EFER
                | ctl::EXIT_LOAD_EFER
                | ctl::EXIT_SAVE_PAT
                | ctl::EXIT_LOAD_PAT
                | EXIT_SAVE_DEBUG_CONTROLS,
            0,
        )
        .map_err(ControlsError::Exit)?;
    let entry = caps
        .entry
        .adjust(
            ctl::ENTRY_IA32E_GUEST
                | ctl::ENTRY_LOAD_EFER
                | ctl::ENTRY_LOAD_PAT
                | ENTRY_LOAD_DEBUG_CONTROLS,
            0,
        )
        .map_err(ControlsError::Entry)?;
    Ok(HostControls {
        pin,
        proc1,
        proc2,
        exit,
        entry,
        vpid,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hv::vmx::caps::tests::icelake;
    use crate::hv::vmx::caps::{AllowedCtls, VmxMsr};
    use crate::hv::vmx::msr_bitmap::{build_host_bitmap, MSR_BITMAP_SIZE};
    use std::boxed::Box;

    #[test]
    fn exits_map_to_their_actions() {
        assert_eq!(on_exit(reason::CPUID), Action::Cpuid);
        assert_eq!(on_exit(reason::VMCALL), Action::Hypercall);
        assert_eq!(on_exit(reason::CR_ACCESS), Action::ControlRegister);
        assert_eq!(on_exit(reason::RDMSR), Action::Rdmsr);
        assert_eq!(on_exit(reason::WRMSR), Action::Wrmsr);
        assert_eq!(on_exit(reason::XSETBV), Action::Xsetbv);
        assert_eq!(on_exit(reason::INVD), Action::InvdAsWbinvd);
        // VMCLEAR, VMLAUNCH, VMPTRLD, VMPTRST, VMREAD, VMRESUME, VMWRITE,
        // VMXOFF, VMXON; INVEPT, INVVPID, VMFUNC; GETSEC.
        for r in (19..=27).chain([50, 53, 59, 11]) {
            assert_eq!(on_exit(r), Action::Undefined, "{r}");
        }
        assert_eq!(on_exit(reason::EPT_VIOLATION), Action::ProtectedMemory);
        assert_eq!(on_exit(reason::NMI_WINDOW), Action::Nothing);
        for r in [2, 33, 34, 41] {
            assert_eq!(on_exit(r), Action::HostDead, "{r}");
        }
        // Not enabled, hence unexpected: exceptions, interrupts, HLT,
        // WBINVD, EPT misconfiguration, I/O, RDTSC, ...
        for r in [0, 1, 7, 12, 16, 30, 49, 54, reason::MAX, u16::MAX] {
            assert_eq!(on_exit(r), Action::Unexpected, "{r}");
        }
    }

    #[test]
    fn cr_masks() {
        assert_eq!(CR0_GUEST_HOST_MASK, 0);
        assert_eq!(CR4_GUEST_HOST_MASK, 1 << 13);
    }

    #[test]
    fn cr4_write_keeps_vmxe_real_and_shadows_the_host_value() {
        let (fixed0, fixed1) = (0x2000, 0x0077_2fff);
        let host = 0x0036_06f0; // a typical Linux CR4 without VMXE
        assert_eq!(
            cr4_write(host, fixed0, fixed1),
            Some((host | CR4_VMXE, host))
        );
        assert_eq!(
            cr4_write(host | CR4_VMXE, fixed0, fixed1),
            Some((host | CR4_VMXE, host | CR4_VMXE))
        );
        // A bit outside FIXED1 cannot be set.
        assert_eq!(cr4_write(host | (1 << 30), fixed0, fixed1), None);
    }

    #[test]
    fn cpuid_signature_leaf() {
        let native = [1, 2, 3, 4];
        let s = cpuid_filter(0x4000_0000, native);
        assert_eq!(s[0], 0x4000_0001);
        let mut sig = [0u8; 12];
        sig[..4].copy_from_slice(&s[1].to_le_bytes());
        sig[4..8].copy_from_slice(&s[2].to_le_bytes());
        sig[8..].copy_from_slice(&s[3].to_le_bytes());
        assert_eq!(&sig, b"pkvm-x86\0\0\0\0");
        assert_eq!(cpuid_filter(0x4000_0001, native), [1, 0, 0, 0]);
        assert_eq!(cpuid_filter(0x4000_0042, native), [0; 4]);
        assert_eq!(cpuid_filter(7, native), native, "other leaves untouched");
        assert_eq!(
            cpuid_filter(1, [0x806c1, 0x800, 0xffba_2223, 0x1f8b_fbff]),
            [0x806c1, 0x800, 0xffba_2203, 0x1f8b_fbff],
            "leaf 1 hides VMX and nothing else"
        );
        assert_eq!(cpuid_filter(0x4000_0100, native), native);
    }

    #[test]
    fn msr_intercepts_bitmap() {
        let mut p = Box::new([0u8; MSR_BITMAP_SIZE]);
        let bm = build_host_bitmap(&mut p, MSR_INTERCEPTS);
        // Writes to FEATURE_CONTROL and the capability MSRs exit...
        assert!(bm.is_intercepted(0x3a, true));
        for msr in 0x480..=0x493 {
            assert!(bm.is_intercepted(msr, true), "{msr:#x}");
            // ...reads pass through to the real CPU.
            assert!(!bm.is_intercepted(msr, false), "{msr:#x}");
        }
        assert!(!bm.is_intercepted(0x3a, false));
        // Nothing else in range.
        for msr in [
            0x10,
            0x1b,
            0x39,
            0x3b,
            0x47f,
            0x494,
            0x1fff,
            0xc000_0080,
            0xc000_0100,
        ] {
            assert!(!bm.is_intercepted(msr, false), "{msr:#x}");
            assert!(!bm.is_intercepted(msr, true), "{msr:#x}");
        }
        let set: u32 = bm.page().iter().map(|b| b.count_ones()).sum();
        assert_eq!(set, 1 + 20);
        // Exact bytes: 0x3a write, 0x480..=0x493 write.
        let p = bm.page();
        assert_eq!(p[2048 + 7], 1 << 2);
        assert_eq!(p[2048 + 0x90], 0xff);
        assert_eq!(p[2048 + 0x91], 0xff);
        assert_eq!(p[2048 + 0x92], 0x0f);
    }

    #[test]
    fn refused_msr_writes_are_exactly_the_intercepted_ones() {
        assert!(msr_write_refused(0x3a));
        for msr in 0x480..=0x493 {
            assert!(msr_write_refused(msr), "{msr:#x}");
        }
        for msr in [0, 0x39, 0x3b, 0x47f, 0x494, 0x1b, 0xc000_0080, u32::MAX] {
            assert!(!msr_write_refused(msr), "{msr:#x}");
        }
    }

    fn caps() -> VmxCaps {
        VmxCaps::decode(&icelake()).unwrap()
    }

    #[test]
    fn icelake_host_controls() {
        let c = host_controls(&caps()).unwrap();
        // Nothing but the CPU's must-be-one bits in the pin controls: no
        // external-interrupt or NMI exiting, no preemption timer.
        assert_eq!(c.pin, 0x16);
        assert_eq!(c.pin & (1 << 0 | 1 << 3 | 1 << 6), 0);
        // MSR bitmaps and secondary controls; no HLT, INVLPG, RDTSC, CR3,
        // CR8, MOV-DR, unconditional I/O, MONITOR/MWAIT, PAUSE exiting, no
        // interrupt/NMI windows, never tertiary controls.
        assert_ne!(c.proc1 & ctl::PROC_MSR_BITMAPS, 0);
        assert_ne!(c.proc1 & ctl::PROC_SECONDARY_CONTROLS, 0);
        let no_exit = 1 << 2
            | 1 << 7
            | 1 << 9
            | 1 << 10
            | 1 << 12
            | 1 << 15
            | 1 << 16
            | 1 << 17
            | 1 << 19
            | 1 << 20
            | 1 << 22
            | 1 << 23
            | 1 << 24
            | 1 << 25
            | 1 << 29
            | 1 << 30;
        assert_eq!(c.proc1 & no_exit, 0, "{:#x}", c.proc1);
        assert_eq!(c.proc1, 0x9400_6172);
        // EPT, VPID, unrestricted guest (SIPI), and the instruction
        // enables; not VMCS shadowing, SPP, PML, MBEC or #VE (nothing uses
        // them yet).
        assert!(c.vpid);
        for bit in [
            ctl::PROC2_EPT,
            ctl::PROC2_UNRESTRICTED_GUEST,
            ctl::PROC2_VPID,
            ctl::PROC2_RDTSCP,
            ctl::PROC2_INVPCID,
            ctl::PROC2_XSAVES,
        ] {
            assert_ne!(c.proc2 & bit, 0, "{bit:#x}");
        }
        for bit in [
            ctl::PROC2_VMCS_SHADOWING,
            ctl::PROC2_SPP,
            ctl::PROC2_PML,
            ctl::PROC2_MBEC,
            ctl::PROC2_EPT_VIOLATION_VE,
        ] {
            assert_eq!(c.proc2 & bit, 0, "{bit:#x}");
        }
        // Bochs' icelake has no user wait/pause: the optional bit is dropped.
        assert_eq!(c.proc2 & PROC2_USER_WAIT_PAUSE, 0);
        // 64-bit host, EFER/PAT saved and loaded both ways, debug controls.
        for bit in [
            ctl::EXIT_HOST_ADDR_SPACE_SIZE,
            ctl::EXIT_SAVE_EFER,
            ctl::EXIT_LOAD_EFER,
            ctl::EXIT_SAVE_PAT,
            ctl::EXIT_LOAD_PAT,
            EXIT_SAVE_DEBUG_CONTROLS,
        ] {
            assert_ne!(c.exit & bit, 0, "{bit:#x}");
        }
        // No "acknowledge interrupt on exit" (no interrupt exits at all).
        assert_eq!(c.exit & (1 << 15), 0);
        for bit in [
            ctl::ENTRY_IA32E_GUEST,
            ctl::ENTRY_LOAD_EFER,
            ctl::ENTRY_LOAD_PAT,
            ENTRY_LOAD_DEBUG_CONTROLS,
        ] {
            assert_ne!(c.entry & bit, 0, "{bit:#x}");
        }
    }

    #[test]
    fn without_vpid_the_vpid_control_stays_off() {
        let mut raw = icelake();
        let p2 = raw.get(VmxMsr::ProcbasedCtls2).unwrap();
        raw.set(VmxMsr::ProcbasedCtls2, Some(p2 & !(1 << (32 + 5))));
        let c = host_controls(&VmxCaps::decode(&raw).unwrap()).unwrap();
        assert!(!c.vpid);
        assert_eq!(c.proc2 & ctl::PROC2_VPID, 0);
        assert_ne!(c.proc2 & ctl::PROC2_EPT, 0);
    }

    #[test]
    fn optional_enables_follow_the_cpu() {
        let mut c = caps();
        c.procbased2.may_be_one &= !(ctl::PROC2_RDTSCP | ctl::PROC2_XSAVES);
        let h = host_controls(&c).unwrap();
        assert_eq!(h.proc2 & (ctl::PROC2_RDTSCP | ctl::PROC2_XSAVES), 0);
        assert_ne!(h.proc2 & ctl::PROC2_INVPCID, 0);
    }

    #[test]
    fn forced_bits_are_kept_and_missing_required_bits_reported() {
        let mut c = caps();
        // A CPU that forces HLT exiting on gets it (adjust keeps must-be-one).
        c.procbased.must_be_one |= 1 << 7;
        assert_ne!(host_controls(&c).unwrap().proc1 & (1 << 7), 0);
        c.exit = AllowedCtls {
            must_be_one: 0,
            may_be_one: !ctl::EXIT_LOAD_PAT,
        };
        assert_eq!(
            host_controls(&c),
            Err(ControlsError::Exit(ctl::EXIT_LOAD_PAT))
        );
        let mut c = caps();
        c.procbased2.may_be_one &= !ctl::PROC2_EPT;
        assert_eq!(host_controls(&c), Err(ControlsError::Proc2(ctl::PROC2_EPT)));
    }
}
