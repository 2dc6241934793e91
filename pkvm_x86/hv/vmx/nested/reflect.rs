// SPDX-License-Identifier: GPL-2.0

//! Exits of the host's guest: who owns an exit of vmcs02 ([`owner`]),
//! reflecting an exit to the host as the CPU would have delivered it
//! ([`reflect_exit`]: exit information and guest state into vmcs12, then
//! vmcs12's host state into the host's own VMCS, SDM Vol. 3C ch. 28), and
//! a VM entry of the host that fails after its checks
//! ([`reflect_entry_failure`], SDM 27.8).
//!
//! "The host's VMCS" is vmcs01: the hypervisor's VMCS of this host CPU,
//! whose guest-state area is the host's (L1's) state; loading host state
//! means writing vmcs01's guest-state fields, which the CPU loads when the
//! hypervisor resumes the host.  The entry checks (`entry_checks`) made
//! sure every value loaded here passes vmcs01's own entry checks.
//!
//! Nothing of the hypervisor reaches vmcs12 or the host's state: exit
//! information is vmcs02's only for the guest's own exit; the guest
//! physical address is copied only where vmcs12 enables EPT and the exit
//! defines it (an EPT violation or misconfiguration of EPT12 reflected by
//! [`reflect_ept12_exit`], an APIC access by guest-physical address): an
//! address of the guest's own physical space, which EPT02 translates
//! (without EPT12, vmcs02's is a host-EPT address and never copied);
//! guest state goes back field by field by class (never vmcs02's
//! controls, EPTP, MSR-bitmap address or host state); the bits the
//! hypervisor owns in the guest's CR4 are restored to what the guest and
//! its host set.

use crate::hv::host_policy::{self, Cr4Env};
use crate::hv::vmx::event::{EventType, Interruptibility, InterruptionInfo};
use crate::hv::vmx::msr_bitmap::bit_position;
use crate::hv::vmx::vmcs::{self as f, fields::FIELDS, MemVmcs, VmcsAccess, VmcsError};

use super::controls::{entry, exit, pin, proc1, proc2};
use super::entry_checks::{effective_proc2, rd, uses_ept12, EFER_LMA, EFER_LME};
use super::ept12_walk::Violation;
use super::field_class::{class_at, Class};
use super::merge::uncompose_cr4;

/// Basic exit reasons used here (SDM Vol. 3D appendix C).
pub mod reason {
    #![allow(missing_docs)]
    pub const EXCEPTION_NMI: u16 = 0;
    pub const EXTERNAL_INTERRUPT: u16 = 1;
    pub const TRIPLE_FAULT: u16 = 2;
    pub const INIT: u16 = 3;
    pub const SIPI: u16 = 4;
    pub const IO_SMI: u16 = 5;
    pub const OTHER_SMI: u16 = 6;
    pub const INTERRUPT_WINDOW: u16 = 7;
    pub const NMI_WINDOW: u16 = 8;
    pub const TASK_SWITCH: u16 = 9;
    pub const CPUID: u16 = 10;
    pub const GETSEC: u16 = 11;
    pub const HLT: u16 = 12;
    pub const INVD: u16 = 13;
    pub const INVLPG: u16 = 14;
    pub const RDPMC: u16 = 15;
    pub const RDTSC: u16 = 16;
    pub const RSM: u16 = 17;
    pub const VMCALL: u16 = 18;
    pub const VMCLEAR: u16 = 19;
    pub const VMXON: u16 = 27;
    pub const CR_ACCESS: u16 = 28;
    pub const DR_ACCESS: u16 = 29;
    pub const IO: u16 = 30;
    pub const RDMSR: u16 = 31;
    pub const WRMSR: u16 = 32;
    pub const ENTRY_FAIL_GUEST_STATE: u16 = 33;
    pub const ENTRY_FAIL_MSR_LOADING: u16 = 34;
    pub const MWAIT: u16 = 36;
    pub const MTF: u16 = 37;
    pub const MONITOR: u16 = 39;
    pub const PAUSE: u16 = 40;
    pub const ENTRY_FAIL_MCE: u16 = 41;
    pub const TPR_BELOW_THRESHOLD: u16 = 43;
    pub const APIC_ACCESS: u16 = 44;
    pub const VIRTUALIZED_EOI: u16 = 45;
    pub const GDTR_IDTR: u16 = 46;
    pub const LDTR_TR: u16 = 47;
    pub const EPT_VIOLATION: u16 = 48;
    pub const EPT_MISCONFIG: u16 = 49;
    pub const INVEPT: u16 = 50;
    pub const RDTSCP: u16 = 51;
    pub const PREEMPTION_TIMER: u16 = 52;
    pub const INVVPID: u16 = 53;
    pub const WBINVD: u16 = 54;
    pub const XSETBV: u16 = 55;
    pub const APIC_WRITE: u16 = 56;
    pub const RDRAND: u16 = 57;
    pub const INVPCID: u16 = 58;
    pub const VMFUNC: u16 = 59;
    pub const ENCLS: u16 = 60;
    pub const RDSEED: u16 = 61;
    pub const PML_FULL: u16 = 62;
    pub const XSAVES: u16 = 63;
    pub const XRSTORS: u16 = 64;
    pub const UMWAIT: u16 = 67;
    pub const TPAUSE: u16 = 68;
}

/// An exit of vmcs02, as far as ownership depends on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ExitEvent {
    /// vmcs02's exit-reason field (raw, bit 31 = entry failure).
    pub reason: u32,
    /// Exit qualification.
    pub qualification: u64,
    /// VM-exit interruption information (exception/NMI and external
    /// interrupt exits).
    pub intr_info: u32,
    /// VM-exit interruption error code (#PF: the PFEC).
    pub intr_error_code: u32,
    /// RDMSR/WRMSR: the guest's ECX.
    pub msr: u32,
    /// MOV to CR: the value of the source register.
    pub cr_value: u64,
    /// XSAVES/XRSTORS: EDX:EAX & the guest's IA32_XSS.
    pub xsaves_components: u64,
}

/// The host's I/O and MSR bitmaps (read at entry), as lookups.
pub trait HostBitmaps {
    /// Whether the host's I/O bitmaps intercept `port`.
    fn io(&self, port: u16) -> bool;
    /// Whether the host's MSR bitmap intercepts `msr` for reads or writes
    /// (only asked for MSRs the bitmap covers).
    fn msr(&self, msr: u32, write: bool) -> bool;
}

/// An exit the hypervisor handles before (or instead of) the host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HvExit {
    /// An NMI: a shootdown NMI of the hypervisor ends here; any other
    /// goes to the host as this exit if `then_host` (vmcs12 has NMI
    /// exiting), else is re-injected into the guest.
    Nmi {
        /// vmcs12 asked for NMI exits.
        then_host: bool,
    },
    /// A machine check (#MC is intercepted in every vmcs02): reflected to
    /// the host if `then_host` (its exception bitmap has #MC, as KVM's
    /// always does), else re-injected into the guest.
    MachineCheck {
        /// vmcs12 intercepts #MC.
        then_host: bool,
    },
    /// An external interrupt the host did not ask to exit on: the
    /// hypervisor acknowledged it (vmcs02's acknowledge-on-exit) and
    /// re-injects the vector into the guest.
    ExternalInterrupt,
    /// An interrupt or NMI window the hypervisor opened for such a
    /// re-injection.
    Window,
    /// EPT violation or misconfiguration of the EPT vmcs02 runs on.
    /// Without EPT12, the host EPT: the guest touched memory the host does
    /// not own (or the host EPT is being changed).  With EPT12 (vmcs12
    /// enables EPT, [`uses_ept12`]), the shadow EPT: the fault path walks
    /// EPT12 and either maps the page or reflects what EPT12 says with
    /// [`reflect_ept12_exit`].
    HostEpt,
    /// An MSR access the host lets through but the hypervisor's policy
    /// intercepts: handled by the policy for the guest (#GP if refused).
    MsrPolicy,
    /// MOV to CR4 changing only bits the hypervisor owns (VMXE) or no
    /// owned bit at all: the hypervisor performs it for the guest with
    /// [`guest_cr4_write`] (#GP into the guest if refused).
    Cr4Shadow,
    /// XSAVES/XRSTORS of components only the hypervisor's XSS-exiting
    /// bitmap names: #GP into the guest (the policy never lets XSS hold
    /// them).
    XssPolicy,
    /// An exit no control of vmcs02 should produce: a hypervisor bug;
    /// counted, and the guest's host gets nothing.
    Unexpected,
}

/// Who handles an exit of vmcs02.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Owner {
    /// The host: [`reflect_exit`] (or [`reflect_entry_failure`] for exit
    /// reasons with bit 31).
    Host,
    /// The hypervisor, which then resumes the guest (or reflects, for
    /// [`HvExit::Nmi`] and [`HvExit::MachineCheck`]).
    Hypervisor(HvExit),
}

/// CR0.TS.
const CR0_TS: u64 = 1 << 3;
/// CR0.PE.
const CR0_PE: u64 = 1 << 0;

const fn on(word: u32, bit: u32) -> Owner {
    host_if(word & bit != 0)
}

const fn host_if(asked: bool) -> Owner {
    if asked {
        Owner::Host
    } else {
        Owner::Hypervisor(HvExit::Unexpected)
    }
}

/// The owner of an exit of vmcs02, from vmcs12's controls (what the host
/// asked for), the host's bitmaps and the exit itself.  Everything the
/// host asked for, and everything that exits unconditionally (CPUID,
/// GETSEC, INVD, XSETBV, VMCALL and the VMX instructions, INIT, SIPI,
/// triple fault, task switch), goes to the host; the hypervisor keeps
/// NMIs and #MC first, the host EPT's exits, and the exits its own
/// controls added.
pub fn owner(ev: &ExitEvent, v12: &impl VmcsAccess, bm: &impl HostBitmaps) -> Owner {
    use self::reason as r;
    let hv = Owner::Hypervisor;
    if ev.reason & (1 << 31) != 0 {
        // A failed entry of vmcs02: the host's VMLAUNCH/VMRESUME failed.
        return Owner::Host;
    }
    let pin12 = rd(v12, f::PIN_BASED_VM_EXEC_CONTROL);
    let p1 = rd(v12, f::CPU_BASED_VM_EXEC_CONTROL);
    let p2 = effective_proc2(v12);
    match ev.reason as u16 {
        r::EXCEPTION_NMI => {
            let info = InterruptionInfo(ev.intr_info);
            let eb = rd(v12, f::EXCEPTION_BITMAP);
            let vec = u32::from(info.vector());
            match info.event_type() {
                EventType::Nmi => hv(HvExit::Nmi {
                    then_host: pin12 & pin::NMI != 0,
                }),
                _ if vec == 18 => hv(HvExit::MachineCheck {
                    then_host: eb & (1 << 18) != 0,
                }),
                _ if vec == 14 => {
                    // The PFEC rule: bit 14 says exit iff the filter matches.
                    let mask = rd(v12, f::PAGE_FAULT_ERROR_CODE_MASK);
                    let mat = rd(v12, f::PAGE_FAULT_ERROR_CODE_MATCH);
                    let matches = ev.intr_error_code & mask == mat;
                    if (eb & (1 << 14) != 0) == matches {
                        Owner::Host
                    } else {
                        hv(HvExit::Unexpected)
                    }
                }
                _ if vec < 32 => on(eb, 1 << vec),
                _ => hv(HvExit::Unexpected),
            }
        }
        r::EXTERNAL_INTERRUPT => {
            if pin12 & pin::EXT_INTR != 0 {
                Owner::Host
            } else {
                hv(HvExit::ExternalInterrupt)
            }
        }
        r::TRIPLE_FAULT
        | r::INIT
        | r::SIPI
        | r::TASK_SWITCH
        | r::CPUID
        | r::GETSEC
        | r::INVD
        | r::RSM
        | r::VMCALL
        | r::XSETBV
        | r::INVEPT
        | r::INVVPID => Owner::Host,
        r::VMCLEAR..=r::VMXON => Owner::Host,
        r::IO_SMI | r::OTHER_SMI => hv(HvExit::Unexpected),
        r::INTERRUPT_WINDOW => {
            if p1 & proc1::INTR_WINDOW != 0 {
                Owner::Host
            } else {
                hv(HvExit::Window)
            }
        }
        r::NMI_WINDOW => {
            if p1 & proc1::NMI_WINDOW != 0 {
                Owner::Host
            } else {
                hv(HvExit::Window)
            }
        }
        r::HLT => on(p1, proc1::HLT),
        r::INVLPG => on(p1, proc1::INVLPG),
        r::RDPMC => on(p1, proc1::RDPMC),
        r::RDTSC => on(p1, proc1::RDTSC),
        r::CR_ACCESS => cr_owner(ev, v12, p1),
        r::DR_ACCESS => on(p1, proc1::MOV_DR),
        r::IO => {
            if p1 & proc1::IO_BITMAPS != 0 {
                let port = (ev.qualification >> 16) as u16;
                let size = (ev.qualification & 7) as u16 + 1;
                if (0..size).any(|i| bm.io(port.wrapping_add(i)) || port.checked_add(i).is_none()) {
                    Owner::Host
                } else {
                    hv(HvExit::Unexpected)
                }
            } else {
                on(p1, proc1::UNCOND_IO)
            }
        }
        r::RDMSR | r::WRMSR => {
            let write = ev.reason as u16 == r::WRMSR;
            if p1 & proc1::MSR_BITMAPS == 0
                || bit_position(ev.msr, write).is_none()
                || bm.msr(ev.msr, write)
            {
                Owner::Host
            } else {
                hv(HvExit::MsrPolicy)
            }
        }
        r::ENTRY_FAIL_GUEST_STATE | r::ENTRY_FAIL_MSR_LOADING | r::ENTRY_FAIL_MCE => Owner::Host,
        r::MWAIT => on(p1, proc1::MWAIT),
        r::MTF => on(p1, proc1::MTF),
        r::MONITOR => on(p1, proc1::MONITOR),
        r::PAUSE => {
            if p1 & proc1::PAUSE != 0 || p2 & proc2::PLE != 0 {
                Owner::Host
            } else {
                hv(HvExit::Unexpected)
            }
        }
        r::TPR_BELOW_THRESHOLD => on(p1, proc1::TPR_SHADOW),
        r::APIC_ACCESS => on(p2, proc2::VIRT_APIC_ACCESSES),
        r::GDTR_IDTR | r::LDTR_TR => on(p2, proc2::DESC_TABLE),
        r::EPT_VIOLATION | r::EPT_MISCONFIG => hv(HvExit::HostEpt),
        // RDTSCP exits with RDTSC exiting once RDTSCP is enabled (else #UD).
        r::RDTSCP => host_if(p1 & proc1::RDTSC != 0 && p2 & proc2::RDTSCP != 0),
        r::WBINVD => on(p2, proc2::WBINVD),
        r::RDRAND => on(p2, proc2::RDRAND),
        r::RDSEED => on(p2, proc2::RDSEED),
        // INVPCID exits with INVLPG exiting once INVPCID is enabled.
        r::INVPCID => host_if(p1 & proc1::INVLPG != 0 && p2 & proc2::INVPCID != 0),
        r::XSAVES | r::XRSTORS => {
            if p2 & proc2::XSAVES != 0 && rd(v12, f::XSS_EXIT_BITMAP) & ev.xsaves_components != 0 {
                Owner::Host
            } else {
                hv(HvExit::XssPolicy)
            }
        }
        // UMWAIT/TPAUSE exit with RDTSC exiting once they are enabled.
        r::UMWAIT | r::TPAUSE => {
            host_if(p1 & proc1::RDTSC != 0 && p2 & proc2::USER_WAIT_PAUSE != 0)
        }
        // Hidden features (preemption timer, APICv, VMFUNC, SGX, PML, SPP,
        // tertiary controls, notify window, ...) and reserved numbers.
        _ => hv(HvExit::Unexpected),
    }
}

/// A guest's MOV to CR4 that [`owner`] gave the hypervisor
/// ([`HvExit::Cr4Shadow`]): checked by the rules of the host's own CR4
/// writes (`host_policy::cr4_write`, with `env` describing the guest: its
/// real CR4, CR0 and CR3 from vmcs02, its EFER.LMA, the CPU's supported
/// bits and fixed bits), `None` meaning #GP into the guest.  Otherwise
/// `(GUEST_CR4, CR4_READ_SHADOW)` for vmcs02: VMXE stays 1 in the real
/// CR4 and the shadow holds what the guest wrote (the bits vmcs12 owns
/// equal its shadow on this path, or the exit would be the host's).
pub const fn guest_cr4_write(new: u64, env: Cr4Env) -> Option<(u64, u64)> {
    match host_policy::cr4_write(new, env) {
        Some(w) => Some((w.real, w.shadow)),
        None => None,
    }
}

/// Control-register accesses (exit qualification: bits 3:0 the register,
/// 5:4 the access type, 31:16 the LMSW source).
fn cr_owner(ev: &ExitEvent, v12: &impl VmcsAccess, p1: u32) -> Owner {
    let hv = Owner::Hypervisor;
    let q = ev.qualification;
    let cr = q & 0xf;
    let mask0 = rd(v12, f::CR0_GUEST_HOST_MASK);
    let shadow0 = rd(v12, f::CR0_READ_SHADOW);
    match ((q >> 4) & 3, cr) {
        (0, 0) => {
            if (ev.cr_value ^ shadow0) & mask0 != 0 {
                Owner::Host
            } else {
                hv(HvExit::Unexpected)
            }
        }
        (0, 4) => {
            let mask4 = rd(v12, f::CR4_GUEST_HOST_MASK);
            if (ev.cr_value ^ rd(v12, f::CR4_READ_SHADOW)) & mask4 != 0 {
                Owner::Host
            } else {
                hv(HvExit::Cr4Shadow)
            }
        }
        (0, 3) => on(p1, proc1::CR3_LOAD),
        (0, 8) => on(p1, proc1::CR8_LOAD),
        (1, 3) => on(p1, proc1::CR3_STORE),
        (1, 8) => on(p1, proc1::CR8_STORE),
        (2, _) => {
            if mask0 & CR0_TS != 0 && shadow0 & CR0_TS != 0 {
                Owner::Host
            } else {
                hv(HvExit::Unexpected)
            }
        }
        (3, _) => {
            let src = (q >> 16) & 0xf;
            let m = mask0 & 0xf;
            // LMSW cannot clear PE.
            let changes = (src ^ shadow0) & m & !CR0_PE | (src & !shadow0 & m & CR0_PE);
            if changes != 0 {
                Owner::Host
            } else {
                hv(HvExit::Unexpected)
            }
        }
        _ => hv(HvExit::Unexpected),
    }
}

/// Exit-information fields copied from vmcs02 to vmcs12 for a reflected
/// exit (not the guest-physical address, see [`gpa_defined`]; not the
/// VM-instruction error, which exits do not write).
pub const EXIT_INFO_COPIED: &[u32] = &[
    f::VM_EXIT_REASON.encoding(),
    f::EXIT_QUALIFICATION.encoding(),
    f::GUEST_LINEAR_ADDRESS.encoding(),
    f::VM_EXIT_INTR_INFO.encoding(),
    f::VM_EXIT_INTR_ERROR_CODE.encoding(),
    f::IDT_VECTORING_INFO.encoding(),
    f::IDT_VECTORING_ERROR_CODE.encoding(),
    f::VM_EXIT_INSTRUCTION_LEN.encoding(),
    f::VMX_INSTRUCTION_INFO.encoding(),
    f::IO_RCX.encoding(),
    f::IO_RSI.encoding(),
    f::IO_RDI.encoding(),
    f::IO_RIP.encoding(),
];

/// The PDPTE fields of a PAE guest with EPT.
const PDPTES: [f::Field<u64>; 4] = [
    f::GUEST_PDPTE0,
    f::GUEST_PDPTE1,
    f::GUEST_PDPTE2,
    f::GUEST_PDPTE3,
];

fn is_pdpte(e: u32) -> bool {
    PDPTES.iter().any(|p| p.encoding() == e)
}

/// What the integration does after a reflection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reflected {
    /// The host's CR3 changed: flush the host's TLB entries (its VPID), as
    /// the CPU's load of CR3 at the exit would have.
    pub flush_host_tlb: bool,
    /// Mark vmcs12 launched (a VMLAUNCH whose entry did not fail).
    pub launched: bool,
}

/// Reflects an exit of vmcs02 that [`owner`] gave the host:
///
/// 1. exit information: [`EXIT_INFO_COPIED`] from vmcs02;
/// 2. guest state: every [`Class::GuestState`] field from vmcs02, except
///    EFER, PAT, DEBUGCTL/DR7 and PERF_GLOBAL_CTRL unless vmcs12's exit
///    controls save them (PERF_GLOBAL_CTRL is never saved: that control is
///    not offered); CR4 with the hypervisor's bits restored; "IA-32e mode
///    guest" from EFER.LMA; the VM-entry interruption information's valid
///    bit cleared;
/// 3. host state: [`load_host_state`] into vmcs01.
///
/// A guest-state field whose value did not change is not written, so the
/// fields [`MemVmcs::written`] lists after a
/// [`MemVmcs::forget_written`] are a superset of what the exit changed in
/// vmcs12 (the integration updates the shadow VMCS from them).
///
/// Then the integration runs the VM-exit MSR-store and MSR-load areas
/// (`msr_area`) and resumes the host.  An exit reason with bit 31 set
/// (vmcs02's entry failed) is handed to [`reflect_entry_failure`] with
/// vmcs02's qualification instead.
pub fn reflect_exit(
    v02: &impl VmcsAccess,
    v12: &mut MemVmcs,
    v01: &mut impl VmcsAccess,
) -> Result<Reflected, VmcsError> {
    let raw_reason = rd(v02, f::VM_EXIT_REASON);
    if raw_reason & (1 << 31) != 0 {
        // vmcs02's own entry failed: the host's VMLAUNCH/VMRESUME failed.
        let q = rd(v02, f::EXIT_QUALIFICATION);
        return reflect_entry_failure(raw_reason as u16, q, v12, v01);
    }
    reflect_with(v02, v12, v01, None)
}

/// Access types of an APIC-access exit's qualification (bits 15:12) that
/// were guest-physical: 10 (during event delivery) and 15 (instruction
/// fetch or execution).
const APIC_ACCESS_GUEST_PHYSICAL: [u64; 2] = [10, 15];

/// Whether the guest-physical-address field of vmcs02 is defined for an
/// exit with basic reason `reason` and qualification `qualification` and
/// belongs in vmcs12: only with EPT12 (`ept12`: then vmcs02 runs on the
/// shadow EPT, whose input addresses are the guest's own), for EPT
/// violations and misconfigurations and APIC accesses by guest-physical
/// address (SDM Vol. 3C, "Exit Qualification for APIC-Access VM Exits";
/// for every other exit the field is undefined and vmcs12 keeps what it
/// had).
pub const fn gpa_defined(ept12: bool, reason: u16, qualification: u64) -> bool {
    if !ept12 {
        return false;
    }
    match reason {
        reason::EPT_VIOLATION | reason::EPT_MISCONFIG => true,
        reason::APIC_ACCESS => {
            let ty = (qualification >> 12) & 0xf;
            ty == APIC_ACCESS_GUEST_PHYSICAL[0] || ty == APIC_ACCESS_GUEST_PHYSICAL[1]
        }
        _ => false,
    }
}

/// What EPT12 says of the guest's access that took an EPT violation on
/// the shadow EPT, when the fault path gives it to the host
/// ([`reflect_ept12_exit`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ept12Exit {
    /// An EPT violation of EPT12 (`ept12_walk::walk`'s
    /// `WalkFault::Violation`): exit reason 48.
    Violation(Violation),
    /// An EPT misconfiguration of EPT12 (`WalkFault::Misconfig`): exit
    /// reason 49, qualification 0.
    Misconfig,
}

/// Reflects the guest's EPT violation on the shadow EPT (vmcs02's exit,
/// reason 48) to the host as the exit EPT12 gives it: an EPT violation
/// (48) with the architectural qualification
/// (`Violation::qualification_for` the hardware's: bits 5:0 from EPT12,
/// bits 7, 8 and 12 the hardware's) or an EPT misconfiguration (49,
/// qualification 0); the guest-physical address is the hardware exit's
/// (the shadow EPT and EPT12 translate the same addresses), the
/// guest-linear address, instruction length and IDT-vectoring information
/// the hardware exit's as for every reflected exit; then guest state and
/// host state as [`reflect_exit`].
///
/// The fault path calls it when the walk of EPT12 ended in a violation or
/// a misconfiguration; never for a table page that is not the host's
/// (`WalkFault::NotHostOwned`: a triple fault, as for the host EPT).
/// Fails with `VmcsError::Unsupported`, changing nothing, unless vmcs12
/// enables EPT and vmcs02's exit is an EPT violation.
pub fn reflect_ept12_exit(
    what: &Ept12Exit,
    v02: &impl VmcsAccess,
    v12: &mut MemVmcs,
    v01: &mut impl VmcsAccess,
) -> Result<Reflected, VmcsError> {
    if !uses_ept12(v12) || rd(v02, f::VM_EXIT_REASON) != u32::from(reason::EPT_VIOLATION) {
        return Err(VmcsError::Unsupported);
    }
    let hw = rd(v02, f::EXIT_QUALIFICATION);
    let (r, q) = match what {
        Ept12Exit::Violation(v) => (reason::EPT_VIOLATION, v.qualification_for(hw)),
        Ept12Exit::Misconfig => (reason::EPT_MISCONFIG, 0),
    };
    reflect_with(v02, v12, v01, Some((r, q)))
}

/// [`reflect_exit`] of an exit whose reason and qualification are
/// `exit` instead of vmcs02's when given.
fn reflect_with(
    v02: &impl VmcsAccess,
    v12: &mut MemVmcs,
    v01: &mut impl VmcsAccess,
    exit: Option<(u16, u64)>,
) -> Result<Reflected, VmcsError> {
    for &e in EXIT_INFO_COPIED {
        let val = v02.read_raw(e)?;
        set_exit_info_raw(v12, e, val)?;
    }
    if let Some((r, q)) = exit {
        v12.set_exit_info(f::VM_EXIT_REASON, u32::from(r))?;
        v12.set_exit_info(f::EXIT_QUALIFICATION, q)?;
    }
    let ept12 = uses_ept12(v12);
    let reason12 = rd(v12, f::VM_EXIT_REASON) as u16;
    if gpa_defined(ept12, reason12, rd(v12, f::EXIT_QUALIFICATION)) {
        v12.set_exit_info(
            f::GUEST_PHYSICAL_ADDRESS,
            rd(v02, f::GUEST_PHYSICAL_ADDRESS),
        )?;
    }
    let exit12 = rd(v12, f::VM_EXIT_CONTROLS);
    let cr4_12 = rd(v12, f::GUEST_CR4);
    let skip = |e: u32| -> bool {
        (e == f::GUEST_IA32_EFER.encoding() && exit12 & exit::SAVE_EFER == 0)
            || (e == f::GUEST_IA32_PAT.encoding() && exit12 & exit::SAVE_PAT == 0)
            || ((e == f::GUEST_IA32_DEBUGCTL.encoding() || e == f::GUEST_DR7.encoding())
                && exit12 & exit::SAVE_DEBUG == 0)
            || e == f::GUEST_IA32_PERF_GLOBAL_CTRL.encoding()
            || is_pdpte(e)
    };
    for (i, info) in FIELDS.iter().enumerate() {
        // EPT12 implies a view with EPT (its fields, the PDPTEs, are
        // handled apart: `is_pdpte`).
        if class_at(ept12, i) == Some(Class::GuestState) && !skip(info.encoding) {
            // Only a change is written, so that `MemVmcs::written` tells
            // the integration what the exit changed in vmcs12.
            let v = v02.read_at(i)?;
            if v12.read_at(i)? != v {
                v12.write_at(i, v)?;
            }
        }
    }
    // The PDPTEs: saved by an exit only with EPT (the CPU stored a PAE
    // guest's in vmcs02); without EPT12 vmcs02's are the hypervisor's
    // software read at entry, and vmcs12 keeps its own.
    if ept12 {
        // By reference (root mode: no out-of-line array iterator).
        for &p in PDPTES.iter() {
            let v = rd(v02, p);
            if rd(v12, p) != v {
                v12.write(p, v)?;
            }
        }
    }
    let cr4 = uncompose_cr4(
        rd(v02, f::GUEST_CR4),
        rd(v02, f::CR4_READ_SHADOW),
        rd(v12, f::CR4_GUEST_HOST_MASK),
        cr4_12,
    );
    v12.write(f::GUEST_CR4, cr4)?;
    let lma = rd(v02, f::GUEST_IA32_EFER) & EFER_LMA != 0;
    let entry12 = rd(v12, f::VM_ENTRY_CONTROLS) & !entry::IA32E;
    v12.write(
        f::VM_ENTRY_CONTROLS,
        entry12 | if lma { entry::IA32E } else { 0 },
    )?;
    let ei = rd(v12, f::VM_ENTRY_INTR_INFO);
    v12.write(f::VM_ENTRY_INTR_INFO, ei & !(1 << 31))?;

    let reason = rd(v02, f::VM_EXIT_REASON);
    let info = InterruptionInfo(rd(v02, f::VM_EXIT_INTR_INFO));
    let nmi_exit = reason as u16 == reason::EXCEPTION_NMI
        && info.is_valid()
        && info.event_type() == EventType::Nmi;
    let flush = load_host_state(v12, v01, nmi_exit)?;
    Ok(Reflected {
        flush_host_tlb: flush,
        launched: true,
    })
}

/// Reflects a VM entry of the host that failed after the checks of 27.2
/// (`EntryFailure::Exit`, or vmcs02's own entry failing with bit 31 set):
/// only the exit reason (with bit 31) and qualification are written to
/// vmcs12, the guest state is not saved, vmcs12 is not marked launched,
/// and the host state is loaded as for an exit (SDM 27.8).  The exit
/// MSR-load area is processed next, as for an exit; the MSR-store area
/// is not.
pub fn reflect_entry_failure(
    reason: u16,
    qualification: u64,
    v12: &mut MemVmcs,
    v01: &mut impl VmcsAccess,
) -> Result<Reflected, VmcsError> {
    v12.set_exit_info(f::VM_EXIT_REASON, u32::from(reason) | 1 << 31)?;
    v12.set_exit_info(f::EXIT_QUALIFICATION, qualification)?;
    let flush = load_host_state(v12, v01, false)?;
    Ok(Reflected {
        flush_host_tlb: flush,
        launched: false,
    })
}

fn set_exit_info_raw(v12: &mut MemVmcs, e: u32, val: u64) -> Result<(), VmcsError> {
    // Exit information is settable only through typed fields.
    match f::info(e).map(|i| i.width) {
        Some(f::Width::W32) => {
            let fl = [
                f::VM_EXIT_REASON,
                f::VM_EXIT_INTR_INFO,
                f::VM_EXIT_INTR_ERROR_CODE,
                f::IDT_VECTORING_INFO,
                f::IDT_VECTORING_ERROR_CODE,
                f::VM_EXIT_INSTRUCTION_LEN,
                f::VMX_INSTRUCTION_INFO,
            ];
            match fl.iter().find(|x| x.encoding() == e) {
                Some(x) => v12.set_exit_info(*x, val as u32),
                None => Err(VmcsError::Unsupported),
            }
        }
        Some(_) => {
            let fl = [
                f::EXIT_QUALIFICATION,
                f::GUEST_LINEAR_ADDRESS,
                f::IO_RCX,
                f::IO_RSI,
                f::IO_RDI,
                f::IO_RIP,
            ];
            match fl.iter().find(|x| x.encoding() == e) {
                Some(x) => v12.set_exit_info(*x, val),
                None => Err(VmcsError::Unsupported),
            }
        }
        None => Err(VmcsError::Unsupported),
    }
}

/// CR0 bits a VM exit does not load from the host field: ET, NW, CD and
/// the reserved bits (63:32, 28:19, 17, 15:6).
const CR0_KEPT: u64 = !0xffff_ffffu64 | 0x1ff8_0000 | 1 << 17 | 0xffc0 | 1 << 4 | 1 << 29 | 1 << 30;
/// Access rights of a usable data segment loaded at exit: type 3, S, P,
/// D/B, G.
const AR_DATA: u32 = 0xc093;
/// Access rights of an unusable segment.
const AR_UNUSABLE: u32 = 1 << 16;

/// SDM 28.5 "Loading Host State", into vmcs01's guest-state area, from
/// vmcs12's host-state area and exit controls (vmcs12 must have passed
/// `entry_checks::check_host_state`):
///
/// * CR0 from the field but ET, NW, CD and reserved bits (kept); CR3; CR4
///   (VMXE kept real by the hypervisor, the read shadow is the host's
///   value); DR7 = 0x400; IA32_DEBUGCTL = 0; SYSENTER_CS/ESP/EIP;
///   PERF_GLOBAL_CTRL, PAT, EFER if the exit controls load them (EFER's
///   LMA/LME follow the host address-space size otherwise);
/// * CS (type 11, L = 64-bit host, D = !L, G), SS/DS/ES/FS/GS (type 3,
///   unusable if their selector is 0; FS/GS bases loaded), TR (type 11
///   busy, limit 0x67), LDTR unusable, GDTR/IDTR bases with limits 0xFFFF;
/// * RIP, RSP, RFLAGS = 0x2; interruptibility cleared (blocking by NMI
///   after an NMI-caused exit, else kept); no pending debug exceptions;
///   active; the IA-32e mode of vmcs01's entry = 64-bit host.
///
/// Returns whether CR3 changed (the host's TLB must be flushed).
pub fn load_host_state(
    v12: &impl VmcsAccess,
    v01: &mut impl VmcsAccess,
    nmi_exit: bool,
) -> Result<bool, VmcsError> {
    let exit12 = rd(v12, f::VM_EXIT_CONTROLS);
    let host64 = exit12 & exit::HOST_64 != 0;

    let old_cr0 = rd(v01, f::GUEST_CR0);
    let cr0 = (rd(v12, f::HOST_CR0) & !CR0_KEPT) | (old_cr0 & CR0_KEPT);
    v01.write(f::GUEST_CR0, cr0)?;
    v01.write(f::CR0_READ_SHADOW, cr0)?;
    let cr3 = rd(v12, f::HOST_CR3);
    let flush = cr3 != rd(v01, f::GUEST_CR3);
    v01.write(f::GUEST_CR3, cr3)?;
    let cr4 = rd(v12, f::HOST_CR4);
    v01.write(f::GUEST_CR4, cr4 | host_policy::CR4_GUEST_HOST_MASK)?;
    v01.write(f::CR4_READ_SHADOW, cr4)?;
    v01.write(f::GUEST_DR7, 0x400)?;
    v01.write(f::GUEST_IA32_DEBUGCTL, 0)?;
    v01.write(f::GUEST_SYSENTER_CS, rd(v12, f::HOST_IA32_SYSENTER_CS))?;
    v01.write(f::GUEST_SYSENTER_ESP, rd(v12, f::HOST_SYSENTER_ESP))?;
    v01.write(f::GUEST_SYSENTER_EIP, rd(v12, f::HOST_SYSENTER_EIP))?;
    if exit12 & exit::LOAD_PERF_GLOBAL != 0
        && rd(v01, f::VM_ENTRY_CONTROLS) & entry::LOAD_PERF_GLOBAL != 0
    {
        v01.write(
            f::GUEST_IA32_PERF_GLOBAL_CTRL,
            rd(v12, f::HOST_IA32_PERF_GLOBAL_CTRL),
        )?;
    }
    if exit12 & exit::LOAD_PAT != 0 {
        v01.write(f::GUEST_IA32_PAT, rd(v12, f::HOST_IA32_PAT))?;
    }
    let efer = if exit12 & exit::LOAD_EFER != 0 {
        rd(v12, f::HOST_IA32_EFER)
    } else {
        let e = rd(v01, f::GUEST_IA32_EFER) & !(EFER_LMA | EFER_LME);
        if host64 {
            e | EFER_LMA | EFER_LME
        } else {
            e
        }
    };
    v01.write(f::GUEST_IA32_EFER, efer)?;

    // Segments.
    let cs_ar = 0x9b | if host64 { 1 << 13 } else { 1 << 14 } | 1 << 15;
    v01.write(f::GUEST_CS_SELECTOR, rd(v12, f::HOST_CS_SELECTOR))?;
    v01.write(f::GUEST_CS_BASE, 0)?;
    v01.write(f::GUEST_CS_LIMIT, 0xffff_ffff)?;
    v01.write(f::GUEST_CS_AR_BYTES, cs_ar)?;
    let data = [
        (
            f::HOST_SS_SELECTOR,
            f::GUEST_SS_SELECTOR,
            f::GUEST_SS_BASE,
            f::GUEST_SS_LIMIT,
            f::GUEST_SS_AR_BYTES,
            None,
        ),
        (
            f::HOST_DS_SELECTOR,
            f::GUEST_DS_SELECTOR,
            f::GUEST_DS_BASE,
            f::GUEST_DS_LIMIT,
            f::GUEST_DS_AR_BYTES,
            None,
        ),
        (
            f::HOST_ES_SELECTOR,
            f::GUEST_ES_SELECTOR,
            f::GUEST_ES_BASE,
            f::GUEST_ES_LIMIT,
            f::GUEST_ES_AR_BYTES,
            None,
        ),
        (
            f::HOST_FS_SELECTOR,
            f::GUEST_FS_SELECTOR,
            f::GUEST_FS_BASE,
            f::GUEST_FS_LIMIT,
            f::GUEST_FS_AR_BYTES,
            Some(f::HOST_FS_BASE),
        ),
        (
            f::HOST_GS_SELECTOR,
            f::GUEST_GS_SELECTOR,
            f::GUEST_GS_BASE,
            f::GUEST_GS_LIMIT,
            f::GUEST_GS_AR_BYTES,
            Some(f::HOST_GS_BASE),
        ),
    ];
    // By reference: an array's by-value iterator is an out-of-line core
    // function, which root mode may not call.
    for &(hsel, sel, base, limit, ar, hbase) in data.iter() {
        let s = rd(v12, hsel);
        v01.write(sel, s)?;
        v01.write(base, hbase.map_or(0, |b| rd(v12, b)))?;
        v01.write(limit, 0xffff_ffff)?;
        v01.write(ar, if s == 0 { AR_UNUSABLE } else { AR_DATA })?;
    }
    v01.write(f::GUEST_TR_SELECTOR, rd(v12, f::HOST_TR_SELECTOR))?;
    v01.write(f::GUEST_TR_BASE, rd(v12, f::HOST_TR_BASE))?;
    v01.write(f::GUEST_TR_LIMIT, 0x67)?;
    v01.write(f::GUEST_TR_AR_BYTES, 0x8b)?;
    v01.write(f::GUEST_LDTR_SELECTOR, 0)?;
    v01.write(f::GUEST_LDTR_BASE, 0)?;
    v01.write(f::GUEST_LDTR_LIMIT, 0)?;
    v01.write(f::GUEST_LDTR_AR_BYTES, AR_UNUSABLE)?;
    v01.write(f::GUEST_GDTR_BASE, rd(v12, f::HOST_GDTR_BASE))?;
    v01.write(f::GUEST_GDTR_LIMIT, 0xffff)?;
    v01.write(f::GUEST_IDTR_BASE, rd(v12, f::HOST_IDTR_BASE))?;
    v01.write(f::GUEST_IDTR_LIMIT, 0xffff)?;

    // Registers and non-register state.
    v01.write(f::GUEST_RIP, rd(v12, f::HOST_RIP))?;
    v01.write(f::GUEST_RSP, rd(v12, f::HOST_RSP))?;
    v01.write(f::GUEST_RFLAGS, 0x2)?;
    let old = rd(v01, f::GUEST_INTERRUPTIBILITY_INFO) & Interruptibility::NMI;
    let nmi = if nmi_exit { Interruptibility::NMI } else { old };
    v01.write(f::GUEST_INTERRUPTIBILITY_INFO, nmi)?;
    v01.write(f::GUEST_PENDING_DBG_EXCEPTIONS, 0)?;
    v01.write(f::GUEST_ACTIVITY_STATE, 0)?;
    let e01 = rd(v01, f::VM_ENTRY_CONTROLS) & !entry::IA32E;
    v01.write(
        f::VM_ENTRY_CONTROLS,
        e01 | if host64 { entry::IA32E } else { 0 },
    )?;
    Ok(flush)
}

#[cfg(test)]
mod tests {
    use super::super::controls::*;
    use super::super::field_class::class_of;
    use super::super::merge::{build_vmcs02, Vmcs02Params};
    use super::super::testutil::*;
    use super::*;
    use std::vec::Vec;

    /// Bitmaps that intercept everything or nothing, or a set of ports.
    struct Bm {
        all: bool,
        ports: Vec<u16>,
        msrs: Vec<(u32, bool)>,
    }

    impl HostBitmaps for Bm {
        fn io(&self, port: u16) -> bool {
            self.all || self.ports.contains(&port)
        }
        fn msr(&self, msr: u32, write: bool) -> bool {
            self.all || self.msrs.contains(&(msr, write))
        }
    }

    fn bm(all: bool) -> Bm {
        Bm {
            all,
            ports: Vec::new(),
            msrs: Vec::new(),
        }
    }

    /// vmcs12 with every offered, mergeable control on (or off).
    fn all_controls(on: bool) -> MemVmcs {
        let o = offer();
        let a = Allowed::of(&o);
        let mut v = vmcs12();
        let pick = |x: AllowedCtlsPair| if on { x.1 } else { x.0 };
        v.write(
            f::PIN_BASED_VM_EXEC_CONTROL,
            pick((a.pin.must_be_one, a.pin.may_be_one)),
        )
        .unwrap();
        v.write(
            f::CPU_BASED_VM_EXEC_CONTROL,
            pick((a.proc1.must_be_one, a.proc1.may_be_one)) | proc1::SECONDARY,
        )
        .unwrap();
        v.write(f::SECONDARY_VM_EXEC_CONTROL, pick((0, a.proc2.may_be_one)))
            .unwrap();
        v.write(f::EXCEPTION_BITMAP, if on { u32::MAX } else { 0 })
            .unwrap();
        v.write(f::XSS_EXIT_BITMAP, if on { u64::MAX } else { 0 })
            .unwrap();
        v
    }

    type AllowedCtlsPair = (u32, u32);

    fn ev(reason: u16) -> ExitEvent {
        ExitEvent {
            reason: u32::from(reason),
            xsaves_components: 1,
            ..Default::default()
        }
    }

    fn hvx(x: HvExit) -> Owner {
        Owner::Hypervisor(x)
    }

    /// Every basic exit reason 0..=79 with every control on and off.
    #[test]
    fn owner_of_every_reason_exhaustive() {
        let always_host = [
            2u16, 3, 4, 9, 10, 11, 13, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 33, 34, 41, 50,
            53, 55,
        ];
        let conditional = [
            1u16, 7, 8, 12, 14, 15, 16, 29, 30, 36, 37, 39, 40, 43, 44, 46, 47, 51, 54, 57, 58, 61,
            63, 64,
        ];
        let on = all_controls(true);
        let off = all_controls(false);
        for r in 0..=79u16 {
            if r == 0 || r == reason::CR_ACCESS {
                continue; // Decided by the exit itself: below.
            }
            let e = ev(r);
            let got_on = owner(&e, &on, &bm(true));
            let got_off = owner(&e, &off, &bm(false));
            if always_host.contains(&r) {
                assert_eq!((got_on, got_off), (Owner::Host, Owner::Host), "{r}");
            } else if r == 48 || r == 49 {
                assert_eq!(
                    (got_on, got_off),
                    (hvx(HvExit::HostEpt), hvx(HvExit::HostEpt)),
                    "{r}"
                );
            } else if r == 31 || r == 32 {
                // Without MSR bitmaps every MSR access is the host's.
                assert_eq!(got_on, Owner::Host, "{r}");
                assert_eq!(got_off, Owner::Host, "{r}");
                let mut v = all_controls(true);
                v.write(
                    f::CPU_BASED_VM_EXEC_CONTROL,
                    rd(&v, f::CPU_BASED_VM_EXEC_CONTROL) | proc1::MSR_BITMAPS,
                )
                .unwrap();
                assert_eq!(owner(&e, &v, &bm(false)), hvx(HvExit::MsrPolicy), "{r}");
            } else if conditional.contains(&r) {
                let want_off = match r {
                    1 => hvx(HvExit::ExternalInterrupt),
                    7 | 8 => hvx(HvExit::Window),
                    63 | 64 => hvx(HvExit::XssPolicy),
                    _ => hvx(HvExit::Unexpected),
                };
                assert_eq!(got_on, Owner::Host, "{r} with every control on");
                assert_eq!(got_off, want_off, "{r} with every control off");
            } else {
                // Hidden features and reserved numbers.
                assert_eq!(
                    (got_on, got_off),
                    (hvx(HvExit::Unexpected), hvx(HvExit::Unexpected)),
                    "{r}"
                );
            }
            // A failed entry of vmcs02 is always the host's.
            let mut fe = e;
            fe.reason |= 1 << 31;
            assert_eq!(owner(&fe, &off, &bm(false)), Owner::Host);
        }
    }

    #[test]
    fn exceptions_nmi_and_machine_check() {
        use crate::hv::vmx::event::EventType::*;
        let x = |vec: u8, ty: EventType| ExitEvent {
            reason: 0,
            intr_info: InterruptionInfo::event(vec, ty, false).0,
            ..Default::default()
        };
        for nmi_exiting in [false, true] {
            let mut v = vmcs12();
            let p = rd(&v, f::PIN_BASED_VM_EXEC_CONTROL) & !(pin::NMI | pin::VIRTUAL_NMIS);
            v.write(
                f::PIN_BASED_VM_EXEC_CONTROL,
                p | if nmi_exiting { pin::NMI } else { 0 },
            )
            .unwrap();
            assert_eq!(
                owner(&x(2, Nmi), &v, &bm(false)),
                hvx(HvExit::Nmi {
                    then_host: nmi_exiting
                })
            );
        }
        for vec in 0..32u8 {
            for bit in [false, true] {
                let mut v = vmcs12();
                v.write(f::EXCEPTION_BITMAP, if bit { 1 << vec } else { 0 })
                    .unwrap();
                v.write(f::PAGE_FAULT_ERROR_CODE_MASK, 0).unwrap();
                v.write(f::PAGE_FAULT_ERROR_CODE_MATCH, 0).unwrap();
                let got = owner(&x(vec, HardwareException), &v, &bm(false));
                let want = match (vec, bit) {
                    (18, b) => hvx(HvExit::MachineCheck { then_host: b }),
                    (_, true) => Owner::Host,
                    (_, false) => hvx(HvExit::Unexpected),
                };
                assert_eq!(got, want, "vector {vec} bit {bit}");
            }
        }
        // #BP/#OF as software exceptions follow the bitmap too.
        let mut v = vmcs12();
        v.write(f::EXCEPTION_BITMAP, 1 << 3).unwrap();
        assert_eq!(owner(&x(3, SoftwareException), &v, &bm(false)), Owner::Host);
    }

    /// The PFEC rule over every 3-bit mask, match and error code, with bit
    /// 14 on and off: the host owns exactly the #PF exits the SDM makes.
    #[test]
    fn page_fault_error_code_filter_exhaustive() {
        for bit in [false, true] {
            for mask in 0..8u32 {
                for mat in 0..8u32 {
                    for pfec in 0..8u32 {
                        let mut v = vmcs12();
                        v.write(f::EXCEPTION_BITMAP, if bit { 1 << 14 } else { 0 })
                            .unwrap();
                        v.write(f::PAGE_FAULT_ERROR_CODE_MASK, mask).unwrap();
                        v.write(f::PAGE_FAULT_ERROR_CODE_MATCH, mat).unwrap();
                        let e = ExitEvent {
                            reason: 0,
                            intr_info: InterruptionInfo::event(
                                14,
                                EventType::HardwareException,
                                true,
                            )
                            .0,
                            intr_error_code: pfec,
                            ..Default::default()
                        };
                        let exits = bit == (pfec & mask == mat);
                        let want = if exits {
                            Owner::Host
                        } else {
                            hvx(HvExit::Unexpected)
                        };
                        assert_eq!(owner(&e, &v, &bm(false)), want, "{bit} {mask} {mat} {pfec}");
                    }
                }
            }
        }
    }

    #[test]
    fn control_register_accesses() {
        let cr = |q: u64, val: u64| ExitEvent {
            reason: 28,
            qualification: q,
            cr_value: val,
            ..Default::default()
        };
        let mut v = vmcs12();
        v.write(f::CR0_GUEST_HOST_MASK, 0x8000_0009).unwrap(); // PG, TS, PE
        v.write(f::CR0_READ_SHADOW, 0x8000_0001).unwrap();
        v.write(f::CR4_GUEST_HOST_MASK, 0x20).unwrap(); // PAE
        v.write(f::CR4_READ_SHADOW, 0x20).unwrap();
        let b = bm(false);
        // MOV to CR0: an owned bit differs from the shadow.
        assert_eq!(owner(&cr(0x00, 0x8000_0009), &v, &b), Owner::Host);
        assert_eq!(
            owner(&cr(0x00, 0x8000_0031), &v, &b),
            hvx(HvExit::Unexpected)
        );
        // MOV to CR4: the host's bits go to the host, VMXE alone to the hypervisor.
        assert_eq!(owner(&cr(0x04, 0x00), &v, &b), Owner::Host);
        assert_eq!(owner(&cr(0x04, 0x2020), &v, &b), hvx(HvExit::Cr4Shadow));
        // CR3/CR8 loads and stores by the controls.
        assert_eq!(owner(&cr(0x03, 0), &v, &b), Owner::Host);
        assert_eq!(owner(&cr(0x13, 0), &v, &b), Owner::Host);
        assert_eq!(owner(&cr(0x08, 0), &v, &b), hvx(HvExit::Unexpected));
        assert_eq!(owner(&cr(0x18, 0), &v, &b), hvx(HvExit::Unexpected));
        // CLTS: only with TS owned and set in the shadow.
        assert_eq!(owner(&cr(0x20, 0), &v, &b), hvx(HvExit::Unexpected));
        v.write(f::CR0_READ_SHADOW, 0x8000_0009).unwrap();
        assert_eq!(owner(&cr(0x20, 0), &v, &b), Owner::Host);
        // LMSW: changes an owned bit of 3:0 (PE can only be set).
        v.write(f::CR0_READ_SHADOW, 0x8000_0001).unwrap();
        assert_eq!(
            owner(&cr(0x30 | 0x0008 << 16, 0), &v, &b),
            Owner::Host,
            "sets TS"
        );
        assert_eq!(
            owner(&cr(0x30 | 0x0001 << 16, 0), &v, &b),
            hvx(HvExit::Unexpected)
        );
        assert_eq!(
            owner(&cr(0x30, 0), &v, &b),
            hvx(HvExit::Unexpected),
            "cannot clear PE"
        );
        v.write(f::CR0_READ_SHADOW, 0x8000_0000).unwrap();
        assert_eq!(
            owner(&cr(0x30 | 0x0001 << 16, 0), &v, &b),
            Owner::Host,
            "sets PE"
        );
    }

    /// The guest clears CR4.VMXE, which only the hypervisor owns: performed
    /// through the shadow, and the host sees it in vmcs12 at the next exit.
    #[test]
    fn guest_cr4_write_through_the_hypervisors_shadow() {
        let mut v12 = vmcs12();
        v12.write(f::CR4_GUEST_HOST_MASK, 0x20).unwrap();
        v12.write(f::CR4_READ_SHADOW, 0x20).unwrap();
        let mut v01 = vmcs01();
        let mut v02 = MemVmcs::new();
        build_vmcs02(&v12, &v01, &params(), &mut v02).unwrap();
        let old = rd(&v12, f::GUEST_CR4);
        let new = old & !(1 << 13);
        let e = ExitEvent {
            reason: 28,
            qualification: 0x04,
            cr_value: new,
            ..Default::default()
        };
        assert_eq!(owner(&e, &v12, &bm(false)), hvx(HvExit::Cr4Shadow));
        let env = Cr4Env {
            real: rd(&v02, f::GUEST_CR4),
            cr0: rd(&v02, f::GUEST_CR0),
            cr3: rd(&v02, f::GUEST_CR3),
            lma: true,
            supported: env().cr4_supported,
            fixed0: hw().cr4_fixed.0,
            fixed1: hw().cr4_fixed.1,
            host_in_vmx: false,
        };
        let (real, shadow) = guest_cr4_write(new, env).unwrap();
        assert_eq!(real, old, "VMXE stays 1 for the CPU");
        assert_eq!(shadow, new);
        assert_eq!(
            guest_cr4_write(new & !0x20, env),
            None,
            "PAE cleared in IA-32e mode: #GP"
        );
        v02.write(f::GUEST_CR4, real).unwrap();
        v02.write(f::CR4_READ_SHADOW, shadow).unwrap();
        reflect_exit(&v02, &mut v12, &mut v01).unwrap();
        assert_eq!(rd(&v12, f::GUEST_CR4), new);
    }

    #[test]
    fn io_and_msr_bitmaps() {
        let io = |port: u16, size: u64| ExitEvent {
            reason: 30,
            qualification: (u64::from(port) << 16) | (size - 1),
            ..Default::default()
        };
        let v = vmcs12();
        let b = Bm {
            all: false,
            ports: std::vec![0x3f9],
            msrs: std::vec![(0x10, false)],
        };
        assert_eq!(owner(&io(0x3f8, 1), &v, &b), hvx(HvExit::Unexpected));
        assert_eq!(owner(&io(0x3f8, 2), &v, &b), Owner::Host);
        assert_eq!(owner(&io(0x3f9, 1), &v, &b), Owner::Host);
        assert_eq!(
            owner(&io(0xffff, 2), &v, &b),
            Owner::Host,
            "wrap past 0xffff"
        );
        // Unconditional I/O exiting without bitmaps.
        let mut v2 = vmcs12();
        v2.write(
            f::CPU_BASED_VM_EXEC_CONTROL,
            rd(&v2, f::CPU_BASED_VM_EXEC_CONTROL) & !proc1::IO_BITMAPS,
        )
        .unwrap();
        assert_eq!(owner(&io(0x3f8, 1), &v2, &b), Owner::Host);
        let msr = |r: u16, m: u32| ExitEvent {
            reason: u32::from(r),
            msr: m,
            ..Default::default()
        };
        assert_eq!(owner(&msr(31, 0x10), &v, &b), Owner::Host);
        assert_eq!(owner(&msr(32, 0x10), &v, &b), hvx(HvExit::MsrPolicy));
        assert_eq!(
            owner(&msr(32, 0x4000_0000), &v, &b),
            Owner::Host,
            "outside the bitmap"
        );
    }

    fn params() -> Vmcs02Params {
        Vmcs02Params {
            offer: offer(),
            hw: hw(),
            msr_bitmap_pa: 0x7_7750_0000,
            vpid: 7,
            pdptes: None,
        }
    }

    /// The guest runs: it changes registers and segments of vmcs02, and the
    /// CPU writes exit information (including a guest-physical address of
    /// the host EPT, which must not reach vmcs12).
    fn guest_runs(v02: &mut MemVmcs) {
        v02.write(f::GUEST_RIP, 0xffff_ffff_8100_0456).unwrap();
        v02.write(f::GUEST_RSP, 0xffff_c900_0001_fd00).unwrap();
        v02.write(f::GUEST_RFLAGS, 0x246).unwrap();
        v02.write(f::GUEST_CR3, 0x2_3456_8000).unwrap();
        v02.write(f::GUEST_FS_BASE, 0x7f00_0000_1000).unwrap();
        v02.write(f::GUEST_INTERRUPTIBILITY_INFO, 1).unwrap();
        v02.write(f::GUEST_IA32_EFER, 0xd01).unwrap();
        v02.set_exit_info(f::VM_EXIT_REASON, 10).unwrap();
        v02.set_exit_info(f::VM_EXIT_INSTRUCTION_LEN, 2).unwrap();
        v02.set_exit_info(f::EXIT_QUALIFICATION, 0).unwrap();
        v02.set_exit_info(f::GUEST_PHYSICAL_ADDRESS, 0x7_7700_0000)
            .unwrap();
        v02.set_exit_info(f::GUEST_LINEAR_ADDRESS, 0xffff_ffff_8100_0000)
            .unwrap();
    }

    /// The shadow EPT's pointer (a hypervisor address).
    const EPTP02: u64 = 0x7_7790_0000 | 3 << 3 | 6;

    /// vmcs02 of `v12` (with EPT12) on the shadow EPT, after the guest ran.
    fn vmcs02_ept(v12: &MemVmcs) -> MemVmcs {
        use super::super::merge::{build_vmcs02_on, Ept02};
        let p = Vmcs02Params {
            offer: offer_ept(),
            ..params()
        };
        let mut v02 = MemVmcs::new();
        build_vmcs02_on(v12, &vmcs01(), &p, Ept02::Shadow(EPTP02), &mut v02).unwrap();
        guest_runs(&mut v02);
        v02
    }

    /// EPT12 in host memory: the 4 KiB leaf `leaf` for guest-physical
    /// `g`, tables at EPTP12's root and the three pages after it.
    fn ept12_mem(g: u64, leaf: u64) -> super::super::host_walk::tests::FakeMem {
        let mut m = super::super::host_walk::tests::FakeMem::default();
        let root = EPTP12 & !0xfff;
        for level in (1..=4u32).rev() {
            let table = root + u64::from(4 - level) * 0x1000;
            let slot = table + ((g >> (12 + 9 * (level - 1))) & 0x1ff) * 8;
            let e = if level == 1 {
                leaf
            } else {
                (table + 0x1000) | 7
            };
            m.set_u64(slot, e);
        }
        m
    }

    /// The guest's write to a page EPT12 maps read/execute-only: the
    /// hardware EPT violation on the (empty) shadow EPT, the walk of
    /// EPT12, and the exit the host gets: reason 48, the qualification
    /// with EPT12's permissions (bits 5:3), the access (2:0), the
    /// hardware's bits 7, 8, 12 and not its advanced bits, the
    /// guest-physical and guest-linear addresses of the hardware exit,
    /// guest state saved and the host state loaded.
    #[test]
    fn ept12_violation_is_reflected_with_the_walks_qualification() {
        use super::super::ept12_walk::{check_eptp, walk, Access, WalkCtx, WalkFault};
        use crate::hv::mm::addr::Gpa;
        let g = 0x8000_1234u64;
        let mut mem = ept12_mem(g, 0x9000_0000 | 6 << 3 | 5);
        let o = offer_ept();
        let ctx = WalkCtx {
            ept_vpid_cap: o.ept_vpid_cap,
            maxphyaddr: 40,
        };
        let eptp = check_eptp(EPTP12, o.ept_vpid_cap, 40).unwrap();
        let r = walk(&mut mem, &ctx, &eptp, Gpa::new(g).unwrap(), Access::WRITE);
        let Err(WalkFault::Violation(viol)) = r else {
            panic!("{r:?}")
        };
        let mut v12 = vmcs12_ept();
        let mut v01 = vmcs01();
        let mut v02 = vmcs02_ept(&v12);
        // The hardware's exit: a write (bit 1), nothing mapped (5:3 = 0),
        // linear address valid and translated (7, 8), advanced
        // information (9), NMI unblocking (12).
        let hw_q = 1 << 1 | 1 << 7 | 1 << 8 | 1 << 9 | 1 << 12;
        v02.set_exit_info(f::VM_EXIT_REASON, 48).unwrap();
        v02.set_exit_info(f::EXIT_QUALIFICATION, hw_q).unwrap();
        v02.set_exit_info(f::GUEST_PHYSICAL_ADDRESS, g).unwrap();
        v02.set_exit_info(f::GUEST_LINEAR_ADDRESS, 0x7f00_0000_1234)
            .unwrap();
        v02.set_exit_info(f::VM_EXIT_INSTRUCTION_LEN, 3).unwrap();
        let r = reflect_ept12_exit(&Ept12Exit::Violation(viol), &v02, &mut v12, &mut v01).unwrap();
        assert!(r.launched);
        assert_eq!(rd(&v12, f::VM_EXIT_REASON), 48);
        // Write (1), readable (3), executable (5): EPT12's, not the shadow's.
        let want = 1 << 1 | 1 << 3 | 1 << 5 | 1 << 7 | 1 << 8 | 1 << 12;
        assert_eq!(rd(&v12, f::EXIT_QUALIFICATION), want);
        assert_eq!(rd(&v12, f::GUEST_PHYSICAL_ADDRESS), g);
        assert_eq!(rd(&v12, f::GUEST_LINEAR_ADDRESS), 0x7f00_0000_1234);
        assert_eq!(rd(&v12, f::VM_EXIT_INSTRUCTION_LEN), 3);
        assert_eq!(rd(&v12, f::GUEST_RIP), rd(&v02, f::GUEST_RIP));
        assert_eq!(rd(&v01, f::GUEST_RIP), rd(&v12, f::HOST_RIP));
        // A misconfiguration (a write-only leaf: KVM's MMIO marker): 49,
        // qualification 0, the address.
        let mut mem = ept12_mem(g, 0x9000_0000 | 6 << 3 | 2);
        let r = walk(&mut mem, &ctx, &eptp, Gpa::new(g).unwrap(), Access::READ);
        assert!(matches!(r, Err(WalkFault::Misconfig(_))), "{r:?}");
        let mut v12 = vmcs12_ept();
        let mut v01 = vmcs01();
        v02.set_exit_info(f::EXIT_QUALIFICATION, 1 << 0).unwrap();
        reflect_ept12_exit(&Ept12Exit::Misconfig, &v02, &mut v12, &mut v01).unwrap();
        assert_eq!(rd(&v12, f::VM_EXIT_REASON), 49);
        assert_eq!(rd(&v12, f::EXIT_QUALIFICATION), 0);
        assert_eq!(rd(&v12, f::GUEST_PHYSICAL_ADDRESS), g);
        assert_eq!(rd(&v01, f::GUEST_RIP), rd(&v12, f::HOST_RIP));
    }

    /// The helper refuses, changing nothing, for a vmcs12 without EPT (its
    /// guest ran on the host EPT: an EPT violation there is the
    /// hypervisor's, never the host's) and for an exit of vmcs02 that is
    /// not an EPT violation.
    #[test]
    fn ept12_reflection_only_for_ept12_and_ept_violations() {
        let viol = Ept12Exit::Misconfig;
        let mut v02 = vmcs02_ept(&vmcs12_ept());
        v02.set_exit_info(f::VM_EXIT_REASON, 48).unwrap();
        let mut v12 = vmcs12();
        let before = v12.clone();
        let mut v01 = vmcs01();
        assert_eq!(
            reflect_ept12_exit(&viol, &v02, &mut v12, &mut v01),
            Err(VmcsError::Unsupported)
        );
        assert_eq!(v12.written().count(), before.written().count());
        assert_eq!(rd(&v12, f::VM_EXIT_REASON), rd(&before, f::VM_EXIT_REASON));
        for r in [10, 49, 48 | 1 << 31] {
            v02.set_exit_info(f::VM_EXIT_REASON, r).unwrap();
            let mut v12 = vmcs12_ept();
            let mut v01 = vmcs01();
            assert_eq!(
                reflect_ept12_exit(&viol, &v02, &mut v12, &mut v01),
                Err(VmcsError::Unsupported),
                "{r:#x}"
            );
            assert_eq!(rd(&v01, f::GUEST_RIP), rd(&vmcs01(), f::GUEST_RIP));
        }
    }

    /// The guest-physical address reaches vmcs12 only with EPT12 and only
    /// where the exit defines it (an APIC access by guest-physical address,
    /// access types 10 and 15); never vmcs02's field otherwise, which
    /// without EPT12 is a host-EPT address.
    #[test]
    fn guest_physical_address_only_where_defined() {
        for ept in [false, true] {
            for (ty, defined) in [(0u64, false), (3, false), (10, true), (15, true)] {
                let mut v12 = if ept { vmcs12_ept() } else { vmcs12() };
                let mut v02 = if ept {
                    vmcs02_ept(&v12)
                } else {
                    let mut v02 = MemVmcs::new();
                    build_vmcs02(&v12, &vmcs01(), &params(), &mut v02).unwrap();
                    guest_runs(&mut v02);
                    v02
                };
                v02.set_exit_info(f::VM_EXIT_REASON, 44).unwrap();
                v02.set_exit_info(f::EXIT_QUALIFICATION, ty << 12 | 0x80)
                    .unwrap();
                v12.set_exit_info(f::GUEST_PHYSICAL_ADDRESS, 0x1111_0000)
                    .unwrap();
                let mut v01 = vmcs01();
                reflect_exit(&v02, &mut v12, &mut v01).unwrap();
                let want = if ept && defined {
                    0x7_7700_0000
                } else {
                    0x1111_0000
                };
                assert_eq!(
                    rd(&v12, f::GUEST_PHYSICAL_ADDRESS),
                    want,
                    "ept={ept} type {ty}"
                );
                assert_eq!(gpa_defined(ept, 44, ty << 12), ept && defined);
            }
            // CPUID: never.
            let mut v12 = if ept { vmcs12_ept() } else { vmcs12() };
            let v02 = if ept {
                vmcs02_ept(&v12)
            } else {
                let mut v02 = MemVmcs::new();
                build_vmcs02(&v12, &vmcs01(), &params(), &mut v02).unwrap();
                guest_runs(&mut v02);
                v02
            };
            reflect_exit(&v02, &mut v12, &mut vmcs01()).unwrap();
            assert_eq!(rd(&v12, f::GUEST_PHYSICAL_ADDRESS), 0);
        }
        assert!(gpa_defined(true, 48, 0) && gpa_defined(true, 49, 0));
        assert!(!gpa_defined(false, 48, 0));
    }

    /// PDPTEs: with EPT12 the exit saves the guest's (the CPU stored them
    /// in vmcs02); without EPT12 vmcs12 keeps its own, never the
    /// hypervisor's software read.
    #[test]
    fn pdptes_are_saved_only_with_ept12() {
        let pd = [0x1000_0001u64, 0x2000_0001, 0x3000_0001, 0];
        let set = |v: &mut MemVmcs, x: [u64; 4]| {
            for (fld, x) in [
                f::GUEST_PDPTE0,
                f::GUEST_PDPTE1,
                f::GUEST_PDPTE2,
                f::GUEST_PDPTE3,
            ]
            .into_iter()
            .zip(x)
            {
                v.write(fld, x).unwrap();
            }
        };
        let mut v12 = vmcs12_ept();
        let mut v02 = vmcs02_ept(&v12);
        set(&mut v02, pd);
        reflect_exit(&v02, &mut v12, &mut vmcs01()).unwrap();
        assert_eq!(rd(&v12, f::GUEST_PDPTE2), pd[2]);
        let mut v12 = vmcs12();
        set(&mut v12, [5; 4]);
        let mut p = params();
        p.pdptes = Some(pd);
        let mut v02 = MemVmcs::new();
        build_vmcs02(&v12, &vmcs01(), &p, &mut v02).unwrap();
        guest_runs(&mut v02);
        assert_eq!(rd(&v02, f::GUEST_PDPTE0), pd[0]);
        reflect_exit(&v02, &mut v12, &mut vmcs01()).unwrap();
        assert_eq!(rd(&v12, f::GUEST_PDPTE0), 5);
    }

    /// With EPT12, nothing of the hypervisor reaches vmcs12 or the host's
    /// state either: not the shadow EPT's pointer, not the host EPT's, for
    /// an ordinary exit and for a reflected EPT violation.
    #[test]
    fn nothing_of_the_hypervisor_leaks_with_ept12() {
        let h = hv_host();
        for violation in [false, true] {
            let mut v12 = vmcs12_ept();
            let mut v01 = vmcs01();
            let mut v02 = vmcs02_ept(&v12);
            assert_eq!(rd(&v02, f::EPT_POINTER), EPTP02);
            if violation {
                v02.set_exit_info(f::VM_EXIT_REASON, 48).unwrap();
                v02.set_exit_info(f::GUEST_PHYSICAL_ADDRESS, 0x8000_0000)
                    .unwrap();
                reflect_ept12_exit(&Ept12Exit::Misconfig, &v02, &mut v12, &mut v01).unwrap();
            } else {
                reflect_exit(&v02, &mut v12, &mut v01).unwrap();
            }
            let secrets = [EPTP02, h.eptp, h.msr_bitmap_pa, h.host_cr3, 0x7_7700_0000];
            for info in FIELDS {
                let val = v12.read_raw(info.encoding).unwrap();
                assert!(!secrets.contains(&val), "vmcs12 {} = {val:#x}", info.name);
                let val = v01.read_raw(info.encoding).unwrap();
                if info.group == f::Group::Guest {
                    assert!(!secrets.contains(&val), "host {} = {val:#x}", info.name);
                }
            }
            assert_eq!(rd(&v12, f::EPT_POINTER), EPTP12);
            assert_eq!(rd(&v01, f::EPT_POINTER), h.eptp);
        }
    }

    /// What a reflection changed in vmcs12 is listed by
    /// `MemVmcs::written` (the shadow VMCS is updated from that list):
    /// every field whose value changed, and of the guest state only those.
    #[test]
    fn reflection_lists_what_it_changed() {
        let v12_before = vmcs12();
        let mut v12 = v12_before.clone();
        let mut v01 = vmcs01();
        let mut v02 = MemVmcs::new();
        build_vmcs02(&v12, &v01, &params(), &mut v02).unwrap();
        guest_runs(&mut v02);
        v12.forget_written();
        reflect_exit(&v02, &mut v12, &mut v01).unwrap();
        let written: std::vec::Vec<usize> = v12.written().collect();
        for (i, info) in FIELDS.iter().enumerate() {
            let changed = v12.read_at(i) != v12_before.read_at(i);
            if changed {
                assert!(written.contains(&i), "{} changed, not listed", info.name);
            }
            if class_of(false, info.encoding) == Some(Class::GuestState)
                && info.encoding != f::GUEST_CR4.encoding()
            {
                assert_eq!(written.contains(&i), changed, "{}", info.name);
            }
        }
        // The guest moved: RIP is among them; its segment state did not.
        assert!(written.contains(&f::index_of(f::GUEST_RIP.encoding()).unwrap()));
        assert!(!written.contains(&f::index_of(f::GUEST_ES_BASE.encoding()).unwrap()));
        // A second exit with nothing new for the guest state lists none of it.
        v12.forget_written();
        let before2 = v12.clone();
        reflect_exit(&v02, &mut v12, &mut v01).unwrap();
        for i in v12.written() {
            if class_of(false, FIELDS[i].encoding) == Some(Class::GuestState)
                && FIELDS[i].encoding != f::GUEST_CR4.encoding()
            {
                panic!("{} listed unchanged", FIELDS[i].name);
            }
        }
        for (i, info) in FIELDS.iter().enumerate() {
            if v12.read_at(i) != before2.read_at(i) {
                assert!(v12.written().any(|w| w == i), "{}", info.name);
            }
        }
    }

    /// Merge then reflect: vmcs12's guest state comes back exactly,
    /// changed only by what the guest did.
    #[test]
    fn merge_then_reflect_round_trip() {
        let v12_before = vmcs12();
        let mut v12 = v12_before.clone();
        let mut v01 = vmcs01();
        let mut v02 = MemVmcs::new();
        build_vmcs02(&v12, &v01, &params(), &mut v02).unwrap();
        guest_runs(&mut v02);
        let r = reflect_exit(&v02, &mut v12, &mut v01).unwrap();
        assert!(r.launched);
        let changed = [
            f::GUEST_RIP.encoding(),
            f::GUEST_RSP.encoding(),
            f::GUEST_RFLAGS.encoding(),
            f::GUEST_CR3.encoding(),
            f::GUEST_FS_BASE.encoding(),
            f::GUEST_INTERRUPTIBILITY_INFO.encoding(),
        ];
        for info in FIELDS {
            let e = info.encoding;
            match class_of(false, e).unwrap() {
                Class::GuestState if changed.contains(&e) => {
                    assert_eq!(v12.read_raw(e), v02.read_raw(e), "{}", info.name);
                    assert_ne!(v12.read_raw(e), v12_before.read_raw(e), "{}", info.name);
                }
                Class::GuestState | Class::HostState | Class::HostAddress | Class::Hidden => {
                    assert_eq!(
                        v12.read_raw(e),
                        v12_before.read_raw(e),
                        "{} changed",
                        info.name
                    )
                }
                Class::Control => {
                    let same = v12.read_raw(e) == v12_before.read_raw(e);
                    assert!(
                        same || e == f::VM_ENTRY_INTR_INFO.encoding(),
                        "{}",
                        info.name
                    );
                }
                Class::ExitInfo => {}
            }
        }
        assert_eq!(rd(&v12, f::VM_EXIT_REASON), 10);
        assert_eq!(rd(&v12, f::VM_EXIT_INSTRUCTION_LEN), 2);
        assert_eq!(rd(&v12, f::GUEST_LINEAR_ADDRESS), 0xffff_ffff_8100_0000);
    }

    /// Acknowledge-interrupt-on-exit as vmcs12 asks: vmcs02 acknowledges
    /// exactly when vmcs12 does, so the vector the CPU stored is the one
    /// the host gets (and no vector when it did not ask).
    #[test]
    fn acknowledged_interrupt_vector_reaches_the_host() {
        for ack in [false, true] {
            let mut v12 = vmcs12();
            let x = rd(&v12, f::VM_EXIT_CONTROLS) & !exit::ACK_INTR;
            v12.write(
                f::VM_EXIT_CONTROLS,
                x | if ack { exit::ACK_INTR } else { 0 },
            )
            .unwrap();
            let mut v01 = vmcs01();
            let mut v02 = MemVmcs::new();
            build_vmcs02(&v12, &v01, &params(), &mut v02).unwrap();
            assert_eq!(rd(&v02, f::VM_EXIT_CONTROLS) & exit::ACK_INTR != 0, ack);
            // What the CPU writes for an external interrupt under vmcs02.
            let info = if ack {
                InterruptionInfo::event(0x31, EventType::ExternalInterrupt, false).0
            } else {
                0
            };
            v02.set_exit_info(f::VM_EXIT_REASON, 1).unwrap();
            v02.set_exit_info(f::VM_EXIT_INTR_INFO, info).unwrap();
            let e = ExitEvent {
                reason: 1,
                intr_info: info,
                ..Default::default()
            };
            assert_eq!(owner(&e, &v12, &bm(false)), Owner::Host);
            reflect_exit(&v02, &mut v12, &mut v01).unwrap();
            assert_eq!(rd(&v12, f::VM_EXIT_REASON), 1);
            assert_eq!(rd(&v12, f::VM_EXIT_INTR_INFO), info);
        }
    }

    #[test]
    fn conditional_saves_and_entry_controls() {
        let mut v12 = vmcs12();
        let exit =
            rd(&v12, f::VM_EXIT_CONTROLS) & !(exit::SAVE_EFER | exit::SAVE_PAT | exit::SAVE_DEBUG);
        v12.write(f::VM_EXIT_CONTROLS, exit).unwrap();
        v12.write(
            f::VM_ENTRY_INTR_INFO,
            InterruptionInfo::event(6, EventType::HardwareException, false).0,
        )
        .unwrap();
        let before = v12.clone();
        let mut v01 = vmcs01();
        let mut v02 = MemVmcs::new();
        build_vmcs02(&v12, &v01, &params(), &mut v02).unwrap();
        v02.write(f::GUEST_IA32_EFER, 0x501).unwrap(); // LMA without NXE
        v02.write(f::GUEST_IA32_PAT, 6).unwrap();
        v02.write(f::GUEST_DR7, 0x455).unwrap();
        v02.write(f::GUEST_IA32_DEBUGCTL, 3).unwrap();
        v02.write(f::GUEST_IA32_PERF_GLOBAL_CTRL, 5).unwrap();
        reflect_exit(&v02, &mut v12, &mut v01).unwrap();
        for fl in [
            f::GUEST_IA32_EFER,
            f::GUEST_IA32_PAT,
            f::GUEST_DR7,
            f::GUEST_IA32_DEBUGCTL,
            f::GUEST_IA32_PERF_GLOBAL_CTRL,
        ] {
            assert_eq!(rd(&v12, fl), rd(&before, fl), "{fl:?} not saved");
        }
        assert_eq!(
            rd(&v12, f::VM_ENTRY_INTR_INFO),
            rd(&before, f::VM_ENTRY_INTR_INFO) & !(1 << 31)
        );
        assert_ne!(rd(&v12, f::VM_ENTRY_CONTROLS) & entry::IA32E, 0);
        // With the save controls: saved; IA-32e mode follows EFER.LMA.
        let mut v12 = vmcs12();
        let mut v01 = vmcs01();
        build_vmcs02(&v12, &v01, &params(), &mut v02).unwrap();
        v02.write(f::GUEST_IA32_EFER, 0x901).unwrap();
        v02.write(f::GUEST_IA32_PAT, 6).unwrap();
        v02.write(f::GUEST_DR7, 0x455).unwrap();
        reflect_exit(&v02, &mut v12, &mut v01).unwrap();
        assert_eq!(rd(&v12, f::GUEST_IA32_EFER), 0x901);
        assert_eq!(rd(&v12, f::GUEST_IA32_PAT), 6);
        assert_eq!(rd(&v12, f::GUEST_DR7), 0x455);
        assert_eq!(rd(&v12, f::VM_ENTRY_CONTROLS) & entry::IA32E, 0);
    }

    /// Nothing of the hypervisor reaches vmcs12 or the host's state.
    #[test]
    fn nothing_of_the_hypervisor_leaks() {
        let h = hv_host();
        let p = params();
        let mut v12 = vmcs12();
        let mut v01 = vmcs01();
        let mut v02 = MemVmcs::new();
        build_vmcs02(&v12, &v01, &p, &mut v02).unwrap();
        guest_runs(&mut v02);
        reflect_exit(&v02, &mut v12, &mut v01).unwrap();
        let secrets = [
            h.eptp,
            h.msr_bitmap_pa,
            h.host_cr3,
            h.gs_base,
            h.tr_base,
            h.gdtr_base,
            h.idtr_base,
            h.rsp,
            h.rip,
            p.msr_bitmap_pa,
            0x7_7700_0000, // vmcs02's guest-physical address
        ];
        for info in FIELDS {
            let val = v12.read_raw(info.encoding).unwrap();
            assert!(!secrets.contains(&val), "vmcs12 {} = {val:#x}", info.name);
            if info.group == f::Group::Guest {
                let val = v01.read_raw(info.encoding).unwrap();
                assert!(
                    !secrets.contains(&val),
                    "host state {} = {val:#x}",
                    info.name
                );
            }
        }
        // The hypervisor's own VMCS state of the host is untouched (but
        // for the host's view of CR0/CR4 and its IA-32e mode).
        let fresh = vmcs01();
        let hosts = ["VM_ENTRY_CONTROLS", "CR0_READ_SHADOW", "CR4_READ_SHADOW"];
        for info in FIELDS.iter().filter(|i| {
            i.group == f::Group::Host || (i.group == f::Group::Control && !hosts.contains(&i.name))
        }) {
            assert_eq!(
                v01.read_raw(info.encoding),
                fresh.read_raw(info.encoding),
                "{}",
                info.name
            );
        }
    }

    #[test]
    fn host_state_is_loaded_as_the_sdm_says() {
        let v12 = vmcs12();
        let mut v01 = vmcs01();
        v01.write(f::GUEST_CR0, HOST_CR0 | 1 << 30 | 1 << 29)
            .unwrap(); // CD, NW
        let flush = load_host_state(&v12, &mut v01, false).unwrap();
        assert!(!flush, "same CR3");
        assert_eq!(
            rd(&v01, f::GUEST_CR0),
            HOST_CR0 | 1 << 30 | 1 << 29,
            "CD/NW kept"
        );
        assert_eq!(rd(&v01, f::GUEST_CR4), HOST_CR4 | 1 << 13);
        assert_eq!(rd(&v01, f::CR4_READ_SHADOW), HOST_CR4);
        assert_eq!(rd(&v01, f::GUEST_DR7), 0x400);
        assert_eq!(rd(&v01, f::GUEST_IA32_DEBUGCTL), 0);
        assert_eq!(rd(&v01, f::GUEST_IA32_EFER), 0xd01);
        assert_eq!(rd(&v01, f::GUEST_IA32_PAT), rd(&v12, f::HOST_IA32_PAT));
        assert_eq!(rd(&v01, f::GUEST_CS_AR_BYTES), 0xa09b);
        assert_eq!(rd(&v01, f::GUEST_CS_LIMIT), 0xffff_ffff);
        assert_eq!(rd(&v01, f::GUEST_SS_AR_BYTES), 0xc093);
        assert_eq!(
            rd(&v01, f::GUEST_DS_AR_BYTES),
            1 << 16,
            "DS selector 0: unusable"
        );
        assert_eq!(rd(&v01, f::GUEST_FS_BASE), rd(&v12, f::HOST_FS_BASE));
        assert_eq!(rd(&v01, f::GUEST_GS_BASE), rd(&v12, f::HOST_GS_BASE));
        assert_eq!(rd(&v01, f::GUEST_TR_AR_BYTES), 0x8b);
        assert_eq!(rd(&v01, f::GUEST_TR_LIMIT), 0x67);
        assert_eq!(rd(&v01, f::GUEST_TR_BASE), rd(&v12, f::HOST_TR_BASE));
        assert_eq!(rd(&v01, f::GUEST_LDTR_AR_BYTES), 1 << 16);
        assert_eq!(rd(&v01, f::GUEST_GDTR_LIMIT), 0xffff);
        assert_eq!(rd(&v01, f::GUEST_IDTR_LIMIT), 0xffff);
        assert_eq!(rd(&v01, f::GUEST_RIP), rd(&v12, f::HOST_RIP));
        assert_eq!(rd(&v01, f::GUEST_RSP), rd(&v12, f::HOST_RSP));
        assert_eq!(rd(&v01, f::GUEST_RFLAGS), 2);
        assert_eq!(rd(&v01, f::GUEST_INTERRUPTIBILITY_INFO), 0);
        assert_eq!(
            rd(&v01, f::GUEST_SYSENTER_EIP),
            rd(&v12, f::HOST_SYSENTER_EIP)
        );
        assert_eq!(
            rd(&v01, f::GUEST_IA32_PERF_GLOBAL_CTRL),
            rd(&v12, f::HOST_IA32_PERF_GLOBAL_CTRL)
        );
        assert_ne!(rd(&v01, f::VM_ENTRY_CONTROLS) & entry::IA32E, 0);
        // An NMI exit leaves NMIs blocked; a CR3 change asks for a flush.
        let mut v12 = vmcs12();
        v12.write(f::HOST_CR3, 0x1_0a2c_4000).unwrap();
        let mut v01 = vmcs01();
        assert!(load_host_state(&v12, &mut v01, true).unwrap());
        assert_eq!(
            rd(&v01, f::GUEST_INTERRUPTIBILITY_INFO),
            Interruptibility::NMI
        );
        // Without load EFER/PAT: LMA/LME from the address-space size, PAT kept.
        let mut v12 = vmcs12();
        let x = rd(&v12, f::VM_EXIT_CONTROLS) & !(exit::LOAD_EFER | exit::LOAD_PAT);
        v12.write(f::VM_EXIT_CONTROLS, x).unwrap();
        let mut v01 = vmcs01();
        v01.write(f::GUEST_IA32_EFER, 0x1).unwrap();
        v01.write(f::GUEST_IA32_PAT, 0x0606).unwrap();
        load_host_state(&v12, &mut v01, false).unwrap();
        assert_eq!(rd(&v01, f::GUEST_IA32_EFER), 0x501);
        assert_eq!(rd(&v01, f::GUEST_IA32_PAT), 0x0606);
    }

    #[test]
    fn failed_entries_as_the_host_sees_them() {
        let mut v12 = vmcs12();
        let before = v12.clone();
        let mut v01 = vmcs01();
        let r = reflect_entry_failure(34, 3, &mut v12, &mut v01).unwrap();
        assert!(!r.launched);
        assert_eq!(rd(&v12, f::VM_EXIT_REASON), 34 | 1 << 31);
        assert_eq!(rd(&v12, f::EXIT_QUALIFICATION), 3);
        for info in FIELDS.iter().filter(|i| i.group != f::Group::ExitInfo) {
            assert_eq!(
                v12.read_raw(info.encoding),
                before.read_raw(info.encoding),
                "{}",
                info.name
            );
        }
        assert_eq!(rd(&v01, f::GUEST_RIP), rd(&v12, f::HOST_RIP));
        // vmcs02's own failed entry (exit reason 33 | bit 31) goes to the
        // host as such.
        let e = ExitEvent {
            reason: 33 | 1 << 31,
            ..Default::default()
        };
        assert_eq!(owner(&e, &v12, &bm(false)), Owner::Host);
    }
}
