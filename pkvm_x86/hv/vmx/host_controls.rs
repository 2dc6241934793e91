// SPDX-License-Identifier: GPL-2.0

//! The VM-execution, VM-exit and VM-entry controls of the deprivileged
//! host's VMCS, computed from the CPU's capabilities.
//!
//! Owns the policy "what exits and what does not" for the host: it runs
//! with everything passed through except what pkvm must see (MSR bitmaps,
//! EPT), instructions that would #UD in non-root mode unless enabled are
//! enabled when the CPU allows them, and the switching of EFER, PAT and the
//! debug controls keeps root mode's and the host's values apart.  No
//! interrupt, exception, HLT or I/O exiting; tertiary controls never.

use crate::hv::vmx::caps::{ctl, Feature, VmxCaps};

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

/// Computes the host's controls from `caps`.
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
            ctl::PROC2_EPT | if vpid { ctl::PROC2_VPID } else { 0 },
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
        // EPT, VPID, and the instruction enables; not unrestricted guest,
        // VMCS shadowing, SPP, PML, MBEC or #VE (nothing uses them yet).
        assert!(c.vpid);
        for bit in [
            ctl::PROC2_EPT,
            ctl::PROC2_VPID,
            ctl::PROC2_RDTSCP,
            ctl::PROC2_INVPCID,
            ctl::PROC2_XSAVES,
        ] {
            assert_ne!(c.proc2 & bit, 0, "{bit:#x}");
        }
        for bit in [
            ctl::PROC2_UNRESTRICTED_GUEST,
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
