// SPDX-License-Identifier: GPL-2.0

//! The VMX control bits nested VMX refers to, by the SDM's names (Vol. 3C,
//! "VM-Execution Control Fields", "VM-Exit Control Fields", "VM-Entry
//! Control Fields"), and the allow-lists of the vmcs12 -> vmcs02 merge:
//! the bits of each control word the merge knows how to compose
//! ([`MERGEABLE_PIN`], ...).
//!
//! A vmcs12 control bit takes effect only if it is both offered to the
//! host (the offer's allowed-1 settings, a `VmxCaps`) and mergeable here;
//! [`allowed`] is that intersection, and the entry checks refuse any other
//! 1-setting with VMfailValid(7), so a bit the merge does not implement can
//! never be silently dropped or copied.  The offer (`offer.rs`) should be a
//! subset of these lists; the merge does not rely on it.

use crate::hv::vmx::caps::{AllowedCtls, VmxCaps};

/// Pin-based VM-execution controls.
pub mod pin {
    /// External-interrupt exiting.
    pub const EXT_INTR: u32 = 1 << 0;
    /// NMI exiting.
    pub const NMI: u32 = 1 << 3;
    /// Virtual NMIs.
    pub const VIRTUAL_NMIS: u32 = 1 << 5;
    /// Activate VMX-preemption timer (hidden).
    pub const PREEMPTION_TIMER: u32 = 1 << 6;
    /// Process posted interrupts (hidden).
    pub const POSTED_INTR: u32 = 1 << 7;
}

/// Primary processor-based VM-execution controls.
pub mod proc1 {
    /// Interrupt-window exiting.
    pub const INTR_WINDOW: u32 = 1 << 2;
    /// Use TSC offsetting.
    pub const TSC_OFFSETTING: u32 = 1 << 3;
    /// HLT exiting.
    pub const HLT: u32 = 1 << 7;
    /// INVLPG exiting.
    pub const INVLPG: u32 = 1 << 9;
    /// MWAIT exiting.
    pub const MWAIT: u32 = 1 << 10;
    /// RDPMC exiting.
    pub const RDPMC: u32 = 1 << 11;
    /// RDTSC exiting.
    pub const RDTSC: u32 = 1 << 12;
    /// CR3-load exiting.
    pub const CR3_LOAD: u32 = 1 << 15;
    /// CR3-store exiting.
    pub const CR3_STORE: u32 = 1 << 16;
    /// Activate tertiary controls (hidden).
    pub const TERTIARY: u32 = 1 << 17;
    /// CR8-load exiting.
    pub const CR8_LOAD: u32 = 1 << 19;
    /// CR8-store exiting.
    pub const CR8_STORE: u32 = 1 << 20;
    /// Use TPR shadow.
    pub const TPR_SHADOW: u32 = 1 << 21;
    /// NMI-window exiting.
    pub const NMI_WINDOW: u32 = 1 << 22;
    /// MOV-DR exiting.
    pub const MOV_DR: u32 = 1 << 23;
    /// Unconditional I/O exiting.
    pub const UNCOND_IO: u32 = 1 << 24;
    /// Use I/O bitmaps.
    pub const IO_BITMAPS: u32 = 1 << 25;
    /// Monitor trap flag.
    pub const MTF: u32 = 1 << 27;
    /// Use MSR bitmaps.
    pub const MSR_BITMAPS: u32 = 1 << 28;
    /// MONITOR exiting.
    pub const MONITOR: u32 = 1 << 29;
    /// PAUSE exiting.
    pub const PAUSE: u32 = 1 << 30;
    /// Activate secondary controls.
    pub const SECONDARY: u32 = 1 << 31;
}

/// Secondary processor-based VM-execution controls.
pub mod proc2 {
    /// Virtualize APIC accesses.
    pub const VIRT_APIC_ACCESSES: u32 = 1 << 0;
    /// Enable EPT (offered with the `nested_ept` load parameter; vmcs02 always has it,
    /// on the host EPT or, when vmcs12 enables it, on the shadow EPT).
    pub const EPT: u32 = 1 << 1;
    /// Descriptor-table exiting.
    pub const DESC_TABLE: u32 = 1 << 2;
    /// Enable RDTSCP.
    pub const RDTSCP: u32 = 1 << 3;
    /// Virtualize x2APIC mode.
    pub const VIRT_X2APIC: u32 = 1 << 4;
    /// Enable VPID.
    pub const VPID: u32 = 1 << 5;
    /// WBINVD exiting.
    pub const WBINVD: u32 = 1 << 6;
    /// Unrestricted guest (needs EPT; offered with it).
    pub const UNRESTRICTED_GUEST: u32 = 1 << 7;
    /// APIC-register virtualization (hidden: APICv is off without posted
    /// interrupts).
    pub const APIC_REGISTER_VIRT: u32 = 1 << 8;
    /// Virtual-interrupt delivery (hidden, as APIC-register virtualization).
    pub const VIRT_INTR_DELIVERY: u32 = 1 << 9;
    /// PAUSE-loop exiting.
    pub const PLE: u32 = 1 << 10;
    /// RDRAND exiting.
    pub const RDRAND: u32 = 1 << 11;
    /// Enable INVPCID.
    pub const INVPCID: u32 = 1 << 12;
    /// Enable VM functions (hidden).
    pub const VMFUNC: u32 = 1 << 13;
    /// VMCS shadowing (hidden).
    pub const SHADOW_VMCS: u32 = 1 << 14;
    /// ENCLS exiting (hidden).
    pub const ENCLS: u32 = 1 << 15;
    /// RDSEED exiting.
    pub const RDSEED: u32 = 1 << 16;
    /// Enable PML (hidden).
    pub const PML: u32 = 1 << 17;
    /// EPT-violation #VE (hidden).
    pub const EPT_VE: u32 = 1 << 18;
    /// Enable XSAVES/XRSTORS.
    pub const XSAVES: u32 = 1 << 20;
    /// Use TSC scaling (in effect only with "use TSC offsetting"): the
    /// guest's TSC is `(TSC * TSC_MULTIPLIER) >> 48 + TSC_OFFSET`.
    pub const TSC_SCALING: u32 = 1 << 25;
    /// Enable user wait and pause (UMWAIT, TPAUSE).
    pub const USER_WAIT_PAUSE: u32 = 1 << 26;
}

/// Primary VM-exit controls.
pub mod exit {
    /// Save debug controls.
    pub const SAVE_DEBUG: u32 = 1 << 2;
    /// Host address-space size (64-bit host).
    pub const HOST_64: u32 = 1 << 9;
    /// Load IA32_PERF_GLOBAL_CTRL.
    pub const LOAD_PERF_GLOBAL: u32 = 1 << 12;
    /// Acknowledge interrupt on exit.
    pub const ACK_INTR: u32 = 1 << 15;
    /// Save IA32_PAT.
    pub const SAVE_PAT: u32 = 1 << 18;
    /// Load IA32_PAT.
    pub const LOAD_PAT: u32 = 1 << 19;
    /// Save IA32_EFER.
    pub const SAVE_EFER: u32 = 1 << 20;
    /// Load IA32_EFER.
    pub const LOAD_EFER: u32 = 1 << 21;
    /// Save VMX-preemption timer value (hidden).
    pub const SAVE_PREEMPTION_TIMER: u32 = 1 << 22;
}

/// VM-entry controls.
pub mod entry {
    /// Load debug controls.
    pub const LOAD_DEBUG: u32 = 1 << 2;
    /// IA-32e mode guest.
    pub const IA32E: u32 = 1 << 9;
    /// Entry to SMM (never: the host is not in SMM).
    pub const SMM: u32 = 1 << 10;
    /// Deactivate dual-monitor treatment (never).
    pub const DEACT_DUAL_MONITOR: u32 = 1 << 11;
    /// Load IA32_PERF_GLOBAL_CTRL.
    pub const LOAD_PERF_GLOBAL: u32 = 1 << 13;
    /// Load IA32_PAT.
    pub const LOAD_PAT: u32 = 1 << 14;
    /// Load IA32_EFER.
    pub const LOAD_EFER: u32 = 1 << 15;
}

/// Pin-based controls the merge composes.
pub const MERGEABLE_PIN: u32 = pin::EXT_INTR | pin::NMI | pin::VIRTUAL_NMIS;

/// Primary processor-based controls the merge composes: all but tertiary
/// controls.
pub const MERGEABLE_PROC1: u32 = proc1::INTR_WINDOW
    | proc1::TSC_OFFSETTING
    | proc1::HLT
    | proc1::INVLPG
    | proc1::MWAIT
    | proc1::RDPMC
    | proc1::RDTSC
    | proc1::CR3_LOAD
    | proc1::CR3_STORE
    | proc1::CR8_LOAD
    | proc1::CR8_STORE
    | proc1::TPR_SHADOW
    | proc1::NMI_WINDOW
    | proc1::MOV_DR
    | proc1::UNCOND_IO
    | proc1::IO_BITMAPS
    | proc1::MTF
    | proc1::MSR_BITMAPS
    | proc1::MONITOR
    | proc1::PAUSE
    | proc1::SECONDARY;

/// Secondary controls the merge composes: the ones that only make L2 exit
/// more or enable an instruction, VPID (L2 gets its own), the APIC pages
/// of the TPR shadow, TSC scaling (its multiplier composed with vmcs01's
/// TSC handling: `merge::compose_tsc`), and EPT with unrestricted guest
/// (vmcs02 runs on the shadow EPT of vmcs12's EPT12:
/// `merge::build_vmcs02_on`; taking effect only where the view offers
/// them, the `nested_ept` load parameter).  Not posted-interrupt
/// processing and the rest of APICv, PML, VM functions, VMCS shadowing,
/// #VE, SPP, mode-based execute, ENCLS/ENCLV, PT, PCONFIG, ...
pub const MERGEABLE_PROC2: u32 = proc2::VIRT_APIC_ACCESSES
    | proc2::EPT
    | proc2::UNRESTRICTED_GUEST
    | proc2::DESC_TABLE
    | proc2::RDTSCP
    | proc2::VIRT_X2APIC
    | proc2::VPID
    | proc2::WBINVD
    | proc2::PLE
    | proc2::RDRAND
    | proc2::INVPCID
    | proc2::RDSEED
    | proc2::XSAVES
    | proc2::TSC_SCALING
    | proc2::USER_WAIT_PAUSE;

/// VM-exit controls reflection emulates (they describe the exit to L1,
/// which is done in software; vmcs02's own exit controls are the
/// hypervisor's).  Bits 0, 1, 3-8, 10, 11, 13, 14, 16, 17 are the
/// "default1" class: they are reserved-1 and set in every offer.
pub const MERGEABLE_EXIT: u32 = DEFAULT1_EXIT
    | exit::SAVE_DEBUG
    | exit::HOST_64
    | exit::LOAD_PERF_GLOBAL
    | exit::ACK_INTR
    | exit::SAVE_PAT
    | exit::LOAD_PAT
    | exit::SAVE_EFER
    | exit::LOAD_EFER;

/// VM-entry controls the merge composes (bits 0, 1, 3-8, 12 are default1).
pub const MERGEABLE_ENTRY: u32 = DEFAULT1_ENTRY
    | entry::LOAD_DEBUG
    | entry::IA32E
    | entry::LOAD_PERF_GLOBAL
    | entry::LOAD_PAT
    | entry::LOAD_EFER;

/// The default1 bits of the pin-based controls (SDM Vol. 3D A.3.1): 1, 2, 4.
pub const DEFAULT1_PIN: u32 = 0x16;
/// The default1 bits of the primary processor-based controls: 1, 4-6, 8,
/// 13-16, 26.
pub const DEFAULT1_PROC1: u32 = 0x0401_e172;
/// The default1 bits of the VM-exit controls: 0-8, 10, 11, 13, 14, 16, 17.
pub const DEFAULT1_EXIT: u32 = 0x0003_6dff;
/// The default1 bits of the VM-entry controls: 0-8, 12.
pub const DEFAULT1_ENTRY: u32 = 0x0000_11ff;

/// The settings of one control word a vmcs12 may use: the offer's
/// allowed-0 settings as they are, its allowed-1 settings restricted to
/// `mergeable` (and the bits the offer forces on, which must be settable).
pub const fn allowed(offer: AllowedCtls, mergeable: u32) -> AllowedCtls {
    AllowedCtls {
        must_be_one: offer.must_be_one,
        may_be_one: offer.may_be_one & (mergeable | offer.must_be_one),
    }
}

/// The five control words a vmcs12 may use under `offer`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Allowed {
    /// Pin-based.
    pub pin: AllowedCtls,
    /// Primary processor-based.
    pub proc1: AllowedCtls,
    /// Secondary processor-based (all-zero when secondary controls are not
    /// offered).
    pub proc2: AllowedCtls,
    /// VM-exit.
    pub exit: AllowedCtls,
    /// VM-entry.
    pub entry: AllowedCtls,
}

impl Allowed {
    /// What `offer` allows, restricted to the mergeable bits.
    pub const fn of(offer: &VmxCaps) -> Self {
        Self {
            pin: allowed(offer.pinbased, MERGEABLE_PIN | DEFAULT1_PIN),
            proc1: allowed(offer.procbased, MERGEABLE_PROC1 | DEFAULT1_PROC1),
            proc2: allowed(offer.procbased2, MERGEABLE_PROC2),
            exit: allowed(offer.exit, MERGEABLE_EXIT),
            entry: allowed(offer.entry, MERGEABLE_ENTRY),
        }
    }
}

impl Allowed {
    /// The 1-settings `offer` allows that the merge does not compose, per
    /// word (pin, primary, secondary, exit, entry): all zero for an offer
    /// that offers only what is emulated.  The entry checks refuse these
    /// bits anyway (VMfailValid(7)); a non-zero result means the offer
    /// promises something the host cannot use.
    pub const fn unmergeable(offer: &VmxCaps) -> [u32; 5] {
        let a = Self::of(offer);
        [
            offer.pinbased.may_be_one & !a.pin.may_be_one,
            offer.procbased.may_be_one & !a.proc1.may_be_one,
            offer.procbased2.may_be_one & !a.proc2.may_be_one,
            offer.exit.may_be_one & !a.exit.may_be_one,
            offer.entry.may_be_one & !a.entry.may_be_one,
        ]
    }
}

/// Whether `value` satisfies `a`: every must-be-one bit set, no bit set
/// that may not be.
pub const fn satisfies(value: u32, a: AllowedCtls) -> bool {
    value & a.must_be_one == a.must_be_one && value & !a.may_be_one == 0
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{hw, offer, offer_ept};
    use super::*;

    #[test]
    fn the_fixture_offer_is_mergeable_and_the_cpu_is_not() {
        assert_eq!(Allowed::unmergeable(&offer()), [0; 5]);
        let [pinv, p1, p2, ex, en] = Allowed::unmergeable(&hw());
        assert_eq!(pinv, pin::PREEMPTION_TIMER | pin::POSTED_INTR);
        assert_eq!(p1, 0, "Bochs has no tertiary controls");
        for b in [proc2::EPT, proc2::UNRESTRICTED_GUEST] {
            assert_eq!(p2 & b, 0, "{b:#x}: mergeable with EPT12");
        }
        assert_eq!(Allowed::unmergeable(&offer_ept()), [0; 5]);
        for b in [proc2::SHADOW_VMCS, proc2::PML, proc2::VMFUNC, proc2::EPT_VE] {
            assert_ne!(p2 & b, 0, "{b:#x}");
        }
        assert_ne!(ex & exit::SAVE_PREEMPTION_TIMER, 0);
        assert_eq!(en & (entry::LOAD_EFER | entry::IA32E), 0);
        // The default1 bits stay settable, the SDM's pairs too.
        assert_eq!(MERGEABLE_EXIT & DEFAULT1_EXIT, DEFAULT1_EXIT);
        assert_eq!(MERGEABLE_ENTRY & DEFAULT1_ENTRY, DEFAULT1_ENTRY);
        for (x, e) in [
            (exit::LOAD_EFER, entry::LOAD_EFER),
            (exit::LOAD_PAT, entry::LOAD_PAT),
            (exit::SAVE_DEBUG, entry::LOAD_DEBUG),
            (exit::LOAD_PERF_GLOBAL, entry::LOAD_PERF_GLOBAL),
        ] {
            assert!(MERGEABLE_EXIT & x != 0 && MERGEABLE_ENTRY & e != 0);
        }
    }

    #[test]
    fn satisfies_needs_every_must_bit_and_no_forbidden_bit() {
        let a = AllowedCtls {
            must_be_one: 0b0011,
            may_be_one: 0b0111,
        };
        let ok: std::vec::Vec<u32> = (0..16).filter(|v| satisfies(*v, a)).collect();
        assert_eq!(ok, [0b0011, 0b0111]);
    }
}
