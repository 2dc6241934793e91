// SPDX-License-Identifier: GPL-2.0

//! VM exits: reason numbers, decoding of exit information, per-reason
//! counters, event-injection encoding.
//!
//! Owns the decoding of an exit.  What the host is allowed to do on an
//! exit (CPUID answers, CR4 writes, MSRs, refused instructions) is
//! `crate::hv::host_policy`.

/// Basic exit reasons (SDM Vol. 3D, appendix C).
pub mod reason {
    /// Exception or NMI.
    pub const EXCEPTION_NMI: u16 = 0;
    /// External interrupt.
    pub const EXTERNAL_INTERRUPT: u16 = 1;
    /// Triple fault.
    pub const TRIPLE_FAULT: u16 = 2;
    /// INIT signal.
    pub const INIT: u16 = 3;
    /// Start-up IPI.
    pub const SIPI: u16 = 4;
    /// NMI window.
    pub const NMI_WINDOW: u16 = 8;
    /// CPUID.
    pub const CPUID: u16 = 10;
    /// GETSEC.
    pub const GETSEC: u16 = 11;
    /// HLT.
    pub const HLT: u16 = 12;
    /// INVD.
    pub const INVD: u16 = 13;
    /// VMCALL.
    pub const VMCALL: u16 = 18;
    /// VMCLEAR.
    pub const VMCLEAR: u16 = 19;
    /// VMXON.
    pub const VMXON: u16 = 27;
    /// Control-register access.
    pub const CR_ACCESS: u16 = 28;
    /// RDMSR.
    pub const RDMSR: u16 = 31;
    /// WRMSR.
    pub const WRMSR: u16 = 32;
    /// VM-entry failure due to invalid guest state.
    pub const ENTRY_FAIL_GUEST_STATE: u16 = 33;
    /// VM-entry failure due to MSR loading.
    pub const ENTRY_FAIL_MSR_LOADING: u16 = 34;
    /// VM-entry failure due to machine-check event.
    pub const ENTRY_FAIL_MCE: u16 = 41;
    /// EPT violation.
    pub const EPT_VIOLATION: u16 = 48;
    /// EPT misconfiguration.
    pub const EPT_MISCONFIG: u16 = 49;
    /// INVEPT.
    pub const INVEPT: u16 = 50;
    /// INVVPID.
    pub const INVVPID: u16 = 53;
    /// WBINVD.
    pub const WBINVD: u16 = 54;
    /// XSETBV.
    pub const XSETBV: u16 = 55;
    /// VMFUNC.
    pub const VMFUNC: u16 = 59;
    /// Highest basic exit reason counted individually.
    pub const MAX: u16 = 79;
}

/// Short names of the basic exit reasons, for statistics dumps.
pub fn reason_name(r: u16) -> &'static str {
    const NAMES: [&str; 80] = [
        "exception_nmi",
        "external_interrupt",
        "triple_fault",
        "init",
        "sipi",
        "io_smi",
        "other_smi",
        "interrupt_window",
        "nmi_window",
        "task_switch",
        "cpuid",
        "getsec",
        "hlt",
        "invd",
        "invlpg",
        "rdpmc",
        "rdtsc",
        "rsm",
        "vmcall",
        "vmclear",
        "vmlaunch",
        "vmptrld",
        "vmptrst",
        "vmread",
        "vmresume",
        "vmwrite",
        "vmxoff",
        "vmxon",
        "cr_access",
        "dr_access",
        "io",
        "rdmsr",
        "wrmsr",
        "entry_fail_guest_state",
        "entry_fail_msr_loading",
        "reserved35",
        "mwait",
        "monitor_trap_flag",
        "reserved38",
        "monitor",
        "pause",
        "entry_fail_mce",
        "reserved42",
        "tpr_below_threshold",
        "apic_access",
        "virtualized_eoi",
        "gdtr_idtr",
        "ldtr_tr",
        "ept_violation",
        "ept_misconfig",
        "invept",
        "rdtscp",
        "preemption_timer",
        "invvpid",
        "wbinvd",
        "xsetbv",
        "apic_write",
        "rdrand",
        "invpcid",
        "vmfunc",
        "encls",
        "rdseed",
        "pml_full",
        "xsaves",
        "xrstors",
        "pconfig",
        "spp",
        "umwait",
        "tpause",
        "loadiwkey",
        "enclv",
        "reserved71",
        "enqcmd_pasid",
        "enqcmds_pasid",
        "bus_lock",
        "notify",
        "seamcall",
        "tdcall",
        "rdmsrlist",
        "wrmsrlist",
    ];
    NAMES.get(usize::from(r)).copied().unwrap_or("unknown")
}

/// The exit-reason field decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExitReason {
    /// Basic exit reason (bits 15:0).
    pub basic: u16,
    /// Bit 31: the exit is a VM-entry failure.
    pub entry_failure: bool,
}

impl ExitReason {
    /// Decodes the VM_EXIT_REASON field.
    pub const fn from_raw(v: u32) -> Self {
        Self {
            basic: v as u16,
            entry_failure: v & (1 << 31) != 0,
        }
    }
}

/// Per-CPU VM-exit counters by basic reason.
#[derive(Clone, Copy, Debug)]
pub struct ExitStats {
    /// Count per basic reason 0..=`reason::MAX`.
    pub by_reason: [u64; reason::MAX as usize + 1],
    /// Exits with a reason above `reason::MAX`.
    pub other: u64,
}

impl Default for ExitStats {
    fn default() -> Self {
        Self::new()
    }
}

impl ExitStats {
    /// All counters zero.
    pub const fn new() -> Self {
        Self {
            by_reason: [0; reason::MAX as usize + 1],
            other: 0,
        }
    }

    /// Counts one exit.
    pub fn record(&mut self, basic: u16) {
        match self.by_reason.get_mut(usize::from(basic)) {
            Some(c) => *c = c.wrapping_add(1),
            None => self.other = self.other.wrapping_add(1),
        }
    }

    /// The count for `basic` (`other` for reasons above the table).
    pub fn get(&self, basic: u64) -> u64 {
        usize::try_from(basic)
            .ok()
            .and_then(|i| self.by_reason.get(i))
            .copied()
            .unwrap_or(self.other)
    }

    /// Sum of all counters.
    pub fn total(&self) -> u64 {
        self.by_reason
            .iter()
            .fold(self.other, |a, &b| a.wrapping_add(b))
    }
}

/// Event types of interruption information (see [`crate::hv::vmx::event`]).
pub use crate::hv::vmx::event::EventType;

/// Exception vectors pkvm injects.
pub mod vector {
    /// Invalid opcode.
    pub const UD: u8 = 6;
    /// General protection.
    pub const GP: u8 = 13;
    /// #SS, stack-segment fault.
    pub const SS: u8 = 12;
    /// Page fault.
    pub const PF: u8 = 14;
    /// Machine check.
    pub const MC: u8 = 18;
    /// NMI.
    pub const NMI: u8 = 2;
}

/// Whether hardware exception `vector` pushes an error code.
pub const fn exception_has_error_code(vector: u8) -> bool {
    matches!(vector, 8 | 10 | 11 | 12 | 13 | 14 | 17 | 21)
}

/// Control-register access exit qualification, decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrAccess {
    /// MOV to CRn from general-purpose register `gpr`.
    MovTo {
        /// Control register number.
        cr: u8,
        /// Source register (0 = RAX ... 15 = R15).
        gpr: u8,
    },
    /// MOV from CRn to `gpr`.
    MovFrom {
        /// Control register number.
        cr: u8,
        /// Destination register.
        gpr: u8,
    },
    /// CLTS.
    Clts,
    /// LMSW with the 16-bit source value.
    Lmsw(u16),
}

impl CrAccess {
    /// Decodes the exit qualification of a CR-access exit.
    pub const fn decode(q: u64) -> Self {
        let cr = (q & 0xf) as u8;
        let gpr = ((q >> 8) & 0xf) as u8;
        match (q >> 4) & 3 {
            0 => Self::MovTo { cr, gpr },
            1 => Self::MovFrom { cr, gpr },
            2 => Self::Clts,
            _ => Self::Lmsw((q >> 16) as u16),
        }
    }
}

/// CR4.VMXE, re-exported from its home in the host policy for the users
/// that still import it from here.
pub use crate::hv::host_policy::CR4_VMXE;

/// EPT-violation exit qualification, decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EptViolation {
    /// The access was a data read.
    pub read: bool,
    /// The access was a data write.
    pub write: bool,
    /// The access was an instruction fetch.
    pub fetch: bool,
    /// The guest-physical address was present (readable) in the EPT.
    pub was_readable: bool,
    /// The guest-linear-address field is valid.
    pub linear_valid: bool,
}

impl EptViolation {
    /// Decodes the exit qualification of an EPT violation.
    pub const fn decode(q: u64) -> Self {
        Self {
            read: q & 1 != 0,
            write: q & 2 != 0,
            fetch: q & 4 != 0,
            was_readable: q & 8 != 0,
            linear_valid: q & (1 << 7) != 0,
        }
    }

    /// Page-fault error code to inject into the host for this access:
    /// present + the access kind, and the user bit when `cpl3`.
    ///
    /// Writes are reported as reads of a present page (P=1, W=0): Linux
    /// treats a kernel fault with P=1 and W=1 on a writable PTE as spurious
    /// and retries it forever, while P=1/W=0 reaches the fault's exception
    /// fixup or oops, which is the documented outcome.
    pub const fn host_pf_error_code(self, cpl3: bool) -> u32 {
        let mut e = 1; // P: protection violation
        if self.fetch {
            e |= 1 << 4;
        }
        if cpl3 {
            e |= 1 << 2;
        }
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reason_names_line_up_with_numbers() {
        assert_eq!(reason_name(reason::CPUID), "cpuid");
        assert_eq!(reason_name(reason::VMCALL), "vmcall");
        assert_eq!(reason_name(reason::CR_ACCESS), "cr_access");
        assert_eq!(reason_name(reason::EPT_VIOLATION), "ept_violation");
        assert_eq!(reason_name(reason::XSETBV), "xsetbv");
        assert_eq!(reason_name(66), "spp");
        assert_eq!(reason_name(reason::MAX), "wrmsrlist");
        assert_eq!(reason_name(500), "unknown");
    }

    #[test]
    fn exit_reason_decode() {
        let r = ExitReason::from_raw(0x8000_0021);
        assert_eq!(r.basic, reason::ENTRY_FAIL_GUEST_STATE);
        assert!(r.entry_failure);
        assert_eq!(ExitReason::from_raw(10).basic, reason::CPUID);
    }

    #[test]
    fn stats_count_and_total() {
        let mut s = ExitStats::new();
        s.record(reason::CPUID);
        s.record(reason::CPUID);
        s.record(reason::VMCALL);
        s.record(200);
        assert_eq!(s.get(u64::from(reason::CPUID)), 2);
        assert_eq!(
            s.get(200),
            1,
            "out-of-table reasons share the 'other' counter"
        );
        assert_eq!(s.get(u64::MAX), 1);
        assert_eq!(s.total(), 4);
    }

    #[test]
    fn exception_error_codes() {
        assert!(exception_has_error_code(vector::PF));
        assert!(!exception_has_error_code(vector::UD));
    }

    #[test]
    fn cr_access_decode() {
        // mov cr4, rdx: cr=4, type 0, gpr=2
        assert_eq!(CrAccess::decode(0x204), CrAccess::MovTo { cr: 4, gpr: 2 });
        assert_eq!(CrAccess::decode(0x314), CrAccess::MovFrom { cr: 4, gpr: 3 });
        assert_eq!(CrAccess::decode(0x20), CrAccess::Clts);
        assert_eq!(CrAccess::decode(0x0001_0030), CrAccess::Lmsw(1));
    }

    #[test]
    fn ept_violation_decode_and_pf_code() {
        let v = EptViolation::decode(0x182);
        assert!(v.write && !v.read && !v.fetch && v.linear_valid);
        assert_eq!(v.host_pf_error_code(false), 1);
        assert_eq!(v.host_pf_error_code(true), 1 | 4);
        let f = EptViolation::decode(0x84);
        assert_eq!(f.host_pf_error_code(false), 1 | 16);
    }
}
