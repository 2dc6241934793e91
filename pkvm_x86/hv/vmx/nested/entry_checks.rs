// SPDX-License-Identifier: GPL-2.0

//! The VM-entry checks of a vmcs12 (SDM Vol. 3C, "VM Entries": 27.1 basic
//! checks, 27.2.1 VM-execution, VM-exit and VM-entry control fields, 27.2.2
//! and 27.2.3 host-state area and address-space size) against the
//! capabilities **offered** to the host (a `VmxCaps` of the offer,
//! restricted to what the merge composes: [`Allowed`]), failing as the
//! hardware does: VMfailValid(26) for events blocked by MOV SS,
//! VMfailValid(7) for a control, VMfailValid(8) for host state.
//!
//! Guest-state checks (27.3) are not repeated here: the CPU performs them
//! on vmcs02, whose guest state is vmcs12's, and a failure comes back as
//! exit reason 33 with bit 31 set, which `reflect` hands to the host.
//! Only those whose answer depends on the offer are
//! ([`check_guest_against_offer`]).
//!
//! EPT (where the view offers it): "enable EPT" needs a valid EPT pointer
//! ([`ept12`], VMfailValid(7)), "unrestricted guest" needs "enable EPT";
//! unrestricted guest relaxes CR0.PE/PG in the guest checks and drops the
//! error code of an exception injected in real mode.  The PDPTEs of a PAE
//! guest with EPT are vmcs12's fields, given to vmcs02 unchanged: the CPU
//! checks them there (SDM 27.3.1.6), its failure is the host's.
//!
//! The host-state checks are the ones that protect the hypervisor: vmcs12's
//! host state is loaded by software into the host's own VMCS at a reflected
//! exit (`reflect::load_host_state`), so a value the CPU would refuse there
//! (a non-canonical base or RIP, reserved EFER or PAT bits, CR0/CR4 outside
//! the fixed bits, a CR4 bit the CPU lacks) would fail the *hypervisor's*
//! next entry of the host and park the CPU, instead of failing the host's
//! VMLAUNCH.  They are all checked here, at entry, with VMfailValid(8).

use crate::hv::vmx::caps::VmxCaps;
use crate::hv::vmx::event::{EventType, Interruptibility, InterruptionInfo};
use crate::hv::vmx::vmcs::{self as f, Field, FieldValue, VmcsAccess};

use super::controls::{entry, exit, pin, proc1, proc2, satisfies, Allowed};
use super::ept12_walk::{check_eptp, Eptp12};

/// VM-instruction error 7: VM entry with invalid control field(s).
pub const ERR_CONTROLS: u32 = 7;
/// VM-instruction error 8: VM entry with invalid host-state field(s).
pub const ERR_HOST_STATE: u32 = 8;
/// VM-instruction error 26: VM entry with events blocked by MOV SS.
pub const ERR_MOV_SS: u32 = 26;

/// A failed check: the VM-instruction error number the host's VMLAUNCH /
/// VMRESUME ends with (VMfailValid), and which check failed (for logs and
/// tests; the host only sees the number).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VmFailValid {
    /// VM-instruction error number.
    pub error: u32,
    /// The check that failed.
    pub why: &'static str,
}

const fn ctl(why: &'static str) -> VmFailValid {
    VmFailValid {
        error: ERR_CONTROLS,
        why,
    }
}

const fn host(why: &'static str) -> VmFailValid {
    VmFailValid {
        error: ERR_HOST_STATE,
        why,
    }
}

/// How a VMLAUNCH / VMRESUME of the host fails (SDM Vol. 3C 27.7, 27.8).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryFailure {
    /// VMfailValid: the instruction completes with RFLAGS.ZF set and the
    /// error number in vmcs12's VM-instruction error field; nothing else
    /// changes (the caller, the VMX-instruction emulation, does that).
    VmFail(VmFailValid),
    /// A VM entry that fails after the checks of 27.2: a VM exit to the
    /// host with `reason | 0x8000_0000` and `qualification`, the host state
    /// loaded from vmcs12 (`reflect::reflect_entry_failure`).
    Exit {
        /// Basic exit reason: 33 (invalid guest state), 34 (MSR loading)
        /// or 41 (machine-check event).
        reason: u16,
        /// Exit qualification (33: 0 default, 2 PDPTE loading, 3 NMI
        /// injection blocked by STI, 4 VMCS link pointer; 34: 1-based
        /// index of the failing MSR entry).
        qualification: u64,
    },
}

impl From<VmFailValid> for EntryFailure {
    fn from(v: VmFailValid) -> Self {
        Self::VmFail(v)
    }
}

/// What the checks need besides vmcs12 and the offer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryEnv {
    /// Physical-address width (CPUID 0x80000008 EAX[7:0]) the host sees.
    pub maxphyaddr: u8,
    /// Linear-address width for canonical checks (48, or 57 with LA57).
    pub linear_bits: u8,
    /// The host (L1) runs in IA-32e mode (vmcs01 guest EFER.LMA).
    pub l1_ia32e: bool,
    /// The CR4 bits the CPU supports (`host_policy::cr4_supported`): the
    /// host's CR4 after the exit must be one the hypervisor can run it with.
    pub cr4_supported: u64,
    /// The valid bits of IA32_PERF_GLOBAL_CTRL on this CPU.
    pub perf_global_valid: u64,
}

/// Reads a field of vmcs12; a table field of a `MemVmcs` always reads, and
/// anything else reads as 0 (no panic on any input).
pub(crate) fn rd<T: FieldValue>(v: &impl VmcsAccess, fld: Field<T>) -> T {
    v.read(fld).unwrap_or_default()
}

/// Whether `a` is canonical for `bits` of linear address.
pub const fn canonical(a: u64, bits: u8) -> bool {
    let bits = if bits < 32 || bits > 64 { 48 } else { bits };
    let shift = 64 - bits as u32;
    (((a << shift) as i64) >> shift) as u64 == a
}

/// Whether `pa` is below 2^`maxphyaddr`.
pub const fn within_width(pa: u64, maxphyaddr: u8) -> bool {
    maxphyaddr >= 64 || pa >> maxphyaddr == 0
}

/// A page-aligned physical address within the width.
const fn page_ok(pa: u64, maxphyaddr: u8) -> bool {
    pa & 0xfff == 0 && within_width(pa, maxphyaddr)
}

/// An MSR area of `count` 16-byte entries at `pa`: 16-byte aligned, its
/// last byte within the width.
pub const fn msr_area_ok(pa: u64, count: u32, maxphyaddr: u8) -> bool {
    if count == 0 {
        return true;
    }
    let last = match pa.checked_add(count as u64 * 16 - 1) {
        Some(l) => l,
        None => return false,
    };
    pa & 0xf == 0 && within_width(pa, maxphyaddr) && within_width(last, maxphyaddr)
}

/// The valid bits of IA32_PERF_GLOBAL_CTRL for a CPU whose CPUID leaf 0xA
/// reports `eax` / `edx` (for [`EntryEnv::perf_global_valid`]): the enable
/// bits of the EAX[15:8] general counters and the EDX[4:0] fixed ones,
/// exactly what `host_policy::perf_global_ctrl_valid` accepts.
pub const fn perf_global_mask(eax: u32, edx: u32) -> u64 {
    let gp = (eax >> 8) & 0xff;
    let fixed = edx & 0x1f;
    let gp_mask = if gp >= 32 {
        0xffff_ffff
    } else {
        (1u64 << gp) - 1
    };
    gp_mask | ((1u64 << fixed) - 1) << 32
}

/// IA32_EFER bits that exist on Intel 64: SCE, LME, LMA, NXE.
pub const EFER_VALID: u64 = 1 | 1 << 8 | 1 << 10 | 1 << 11;
/// IA32_EFER.LME.
pub const EFER_LME: u64 = 1 << 8;
/// IA32_EFER.LMA.
pub const EFER_LMA: u64 = 1 << 10;

/// Whether every byte of `pat` is a valid memory type (0, 1, 4, 5, 6, 7).
pub const fn pat_valid(pat: u64) -> bool {
    let mut i = 0;
    while i < 8 {
        let t = (pat >> (i * 8)) & 0xff;
        if !matches!(t, 0 | 1 | 4 | 5 | 6 | 7) {
            return false;
        }
        i += 1;
    }
    true
}

/// 27.1: VMLAUNCH/VMRESUME with blocking by MOV SS (the host's
/// interruptibility state, vmcs01's guest field) fails with
/// VMfailValid(26).  The caller checks it before the launch-state checks
/// (errors 4 and 5) and before [`check_vmcs12`], the SDM's order.
pub const fn check_mov_ss(l1_interruptibility: u32) -> Result<(), VmFailValid> {
    if Interruptibility(l1_interruptibility).mov_ss() {
        Err(VmFailValid {
            error: ERR_MOV_SS,
            why: "blocking by MOV SS",
        })
    } else {
        Ok(())
    }
}

/// The secondary controls in effect: 0 unless the primary controls
/// activate them (the field is then ignored, SDM 27.2.1.1).
pub fn effective_proc2(v12: &impl VmcsAccess) -> u32 {
    if rd(v12, f::CPU_BASED_VM_EXEC_CONTROL) & proc1::SECONDARY != 0 {
        rd(v12, f::SECONDARY_VM_EXEC_CONTROL)
    } else {
        0
    }
}

/// vmcs12's EPT pointer checked as VM entry checks it
/// (`ept12_walk::check_eptp`, against the offer's IA32_VMX_EPT_VPID_CAP
/// and MAXPHYADDR): the typed pointer of EPT12, the key of its shadow EPT;
/// `None` for a pointer VM entry refuses.  The caller decides whether
/// vmcs12 enables EPT ([`uses_ept12`]).
pub fn ept12(v12: &impl VmcsAccess, offer: &VmxCaps, env: &EntryEnv) -> Option<Eptp12> {
    check_eptp(rd(v12, f::EPT_POINTER), offer.ept_vpid_cap, env.maxphyaddr).ok()
}

/// Whether vmcs12 runs its guest on EPT12 ("enable EPT" in effect: the
/// secondary controls activated and bit 1 set).  Only an offer with EPT
/// lets such a vmcs12 pass [`check_controls`].
pub fn uses_ept12(v12: &impl VmcsAccess) -> bool {
    effective_proc2(v12) & proc2::EPT != 0
}

/// Whether vmcs12's guest runs with "unrestricted guest" in effect.
pub fn unrestricted_guest(v12: &impl VmcsAccess) -> bool {
    effective_proc2(v12) & proc2::UNRESTRICTED_GUEST != 0
}

/// 27.2.1: the VM-execution, VM-exit and VM-entry control fields of vmcs12
/// against `offer`: VMfailValid(7).  With "enable EPT", the EPT pointer
/// must be valid ([`ept12`]); "unrestricted guest" needs "enable EPT".
pub fn check_controls(
    v12: &impl VmcsAccess,
    offer: &VmxCaps,
    env: &EntryEnv,
) -> Result<(), VmFailValid> {
    let a = Allowed::of(offer);
    let w = env.maxphyaddr;
    let pinv = rd(v12, f::PIN_BASED_VM_EXEC_CONTROL);
    let p1 = rd(v12, f::CPU_BASED_VM_EXEC_CONTROL);
    let p2 = effective_proc2(v12);
    let exitv = rd(v12, f::VM_EXIT_CONTROLS);
    let entryv = rd(v12, f::VM_ENTRY_CONTROLS);

    // 27.2.1.1 VM-execution control fields.
    if !satisfies(pinv, a.pin) {
        return Err(ctl("pin-based controls"));
    }
    if !satisfies(p1, a.proc1) {
        return Err(ctl("primary processor-based controls"));
    }
    if p1 & proc1::SECONDARY != 0 && !satisfies(p2, a.proc2) {
        return Err(ctl("secondary processor-based controls"));
    }
    let cr3_targets_max = ((offer.misc >> 16) & 0x1ff) as u32;
    if rd(v12, f::CR3_TARGET_COUNT) > cr3_targets_max {
        return Err(ctl("CR3-target count"));
    }
    if p1 & proc1::IO_BITMAPS != 0
        && !(page_ok(rd(v12, f::IO_BITMAP_A), w) && page_ok(rd(v12, f::IO_BITMAP_B), w))
    {
        return Err(ctl("I/O-bitmap address"));
    }
    if p1 & proc1::MSR_BITMAPS != 0 && !page_ok(rd(v12, f::MSR_BITMAP), w) {
        return Err(ctl("MSR-bitmap address"));
    }
    if p1 & proc1::TPR_SHADOW != 0 {
        if !page_ok(rd(v12, f::VIRTUAL_APIC_PAGE_ADDR), w) {
            return Err(ctl("virtual-APIC address"));
        }
        // Without virtual-interrupt delivery (never offered): bits 31:4 of
        // the TPR threshold are 0.  The comparison with VTPR (byte 0x80 of
        // the virtual-APIC page) is left to the CPU on vmcs02, which uses
        // the same page: its VMfailValid(7) is the host's.
        if rd(v12, f::TPR_THRESHOLD) & !0xf != 0 {
            return Err(ctl("TPR threshold"));
        }
    } else if p2 & (proc2::VIRT_X2APIC | proc2::APIC_REGISTER_VIRT | proc2::VIRT_INTR_DELIVERY) != 0
    {
        return Err(ctl(
            "x2APIC/APIC-register virtualization without TPR shadow",
        ));
    }
    if pinv & pin::NMI == 0 && pinv & pin::VIRTUAL_NMIS != 0 {
        return Err(ctl("virtual NMIs without NMI exiting"));
    }
    if pinv & pin::VIRTUAL_NMIS == 0 && p1 & proc1::NMI_WINDOW != 0 {
        return Err(ctl("NMI-window exiting without virtual NMIs"));
    }
    if p2 & proc2::VIRT_X2APIC != 0 && p2 & proc2::VIRT_APIC_ACCESSES != 0 {
        return Err(ctl("virtualize x2APIC mode and APIC accesses"));
    }
    if p2 & proc2::VIRT_INTR_DELIVERY != 0 && pinv & pin::EXT_INTR == 0 {
        return Err(ctl(
            "virtual-interrupt delivery without external-interrupt exiting",
        ));
    }
    if p2 & proc2::VIRT_APIC_ACCESSES != 0 && !page_ok(rd(v12, f::APIC_ACCESS_ADDR), w) {
        return Err(ctl("APIC-access address"));
    }
    if p2 & proc2::VPID != 0 && rd(v12, f::VIRTUAL_PROCESSOR_ID) == 0 {
        return Err(ctl("VPID 0"));
    }
    if p2 & proc2::EPT != 0 && ept12(v12, offer, env).is_none() {
        return Err(ctl("EPT pointer"));
    }
    if p2 & proc2::UNRESTRICTED_GUEST != 0 && p2 & proc2::EPT == 0 {
        return Err(ctl("unrestricted guest without EPT"));
    }

    // 27.2.1.2 VM-exit control fields.
    if !satisfies(exitv, a.exit) {
        return Err(ctl("VM-exit controls"));
    }
    if pinv & pin::PREEMPTION_TIMER == 0 && exitv & exit::SAVE_PREEMPTION_TIMER != 0 {
        return Err(ctl("save preemption timer without the timer"));
    }
    if !msr_area_ok(
        rd(v12, f::VM_EXIT_MSR_STORE_ADDR),
        rd(v12, f::VM_EXIT_MSR_STORE_COUNT),
        w,
    ) {
        return Err(ctl("VM-exit MSR-store address"));
    }
    if !msr_area_ok(
        rd(v12, f::VM_EXIT_MSR_LOAD_ADDR),
        rd(v12, f::VM_EXIT_MSR_LOAD_COUNT),
        w,
    ) {
        return Err(ctl("VM-exit MSR-load address"));
    }

    // 27.2.1.3 VM-entry control fields.
    if !satisfies(entryv, a.entry) {
        return Err(ctl("VM-entry controls"));
    }
    if entryv & (entry::SMM | entry::DEACT_DUAL_MONITOR) != 0 {
        return Err(ctl("entry to SMM / deactivate dual monitor outside SMM"));
    }
    check_event_injection(v12, offer, &a)?;
    if !msr_area_ok(
        rd(v12, f::VM_ENTRY_MSR_LOAD_ADDR),
        rd(v12, f::VM_ENTRY_MSR_LOAD_COUNT),
        w,
    ) {
        return Err(ctl("VM-entry MSR-load address"));
    }
    Ok(())
}

/// Exceptions that deliver an error code: #DF, #TS, #NP, #SS, #GP, #PF,
/// #AC, #CP.
const ERROR_CODE_VECTORS: u32 =
    1 << 8 | 1 << 10 | 1 << 11 | 1 << 12 | 1 << 13 | 1 << 14 | 1 << 17 | 1 << 21;

/// 27.2.1.3 "Event injection": the VM-entry interruption-information field.
fn check_event_injection(
    v12: &impl VmcsAccess,
    offer: &VmxCaps,
    a: &Allowed,
) -> Result<(), VmFailValid> {
    let raw = rd(v12, f::VM_ENTRY_INTR_INFO);
    let info = InterruptionInfo(raw);
    if !info.is_valid() {
        return Ok(());
    }
    let vec = info.vector();
    let ty = info.event_type();
    match ty {
        EventType::Reserved => return Err(ctl("event type 1")),
        EventType::Other if !a.proc1.can_set(27) => {
            return Err(ctl("event type 7 without MTF"));
        }
        EventType::Other if vec != 0 => return Err(ctl("event type 7, vector not 0")),
        EventType::Nmi if vec != 2 => return Err(ctl("NMI with vector not 2")),
        EventType::HardwareException if vec > 31 => {
            return Err(ctl("hardware exception vector > 31"))
        }
        _ => {}
    }
    // An error code is delivered only in protected mode: with
    // unrestricted guest, a guest with CR0.PE = 0 gets none.
    let protected = !unrestricted_guest(v12) || rd(v12, f::GUEST_CR0) & CR0_PE != 0;
    let wants_code = protected
        && ty == EventType::HardwareException
        && vec < 32
        && ERROR_CODE_VECTORS & (1 << vec) != 0;
    if info.has_error_code() != wants_code {
        return Err(ctl("deliver-error-code bit"));
    }
    if raw & 0x7fff_f000 != 0 {
        return Err(ctl("interruption-information reserved bits"));
    }
    if matches!(
        ty,
        EventType::SoftwareInterrupt
            | EventType::PrivilegedSoftwareException
            | EventType::SoftwareException
    ) {
        let len = rd(v12, f::VM_ENTRY_INSTRUCTION_LEN);
        let zero_ok = offer.misc & (1 << 30) != 0;
        if len > 15 || (len == 0 && !zero_ok) {
            return Err(ctl("VM-entry instruction length"));
        }
    }
    Ok(())
}

/// CR0.PE.
const CR0_PE: u64 = 1 << 0;
/// CR0.WP.
const CR0_WP: u64 = 1 << 16;
/// CR0.PG.
const CR0_PG: u64 = 1 << 31;
/// CR4.PAE.
const CR4_PAE: u64 = 1 << 5;
/// CR4.PCIDE.
const CR4_PCIDE: u64 = 1 << 17;
/// CR4.CET.
const CR4_CET: u64 = 1 << 23;

/// 27.2.2 and 27.2.3: vmcs12's host-state area: VMfailValid(8).
pub fn check_host_state(
    v12: &impl VmcsAccess,
    offer: &VmxCaps,
    env: &EntryEnv,
) -> Result<(), VmFailValid> {
    let lb = env.linear_bits;
    let exitv = rd(v12, f::VM_EXIT_CONTROLS);
    let entryv = rd(v12, f::VM_ENTRY_CONTROLS);
    let host64 = exitv & exit::HOST_64 != 0;

    // Control registers and MSRs.
    let cr0 = rd(v12, f::HOST_CR0);
    if cr0 & offer.cr0_fixed.0 != offer.cr0_fixed.0 || cr0 & !offer.cr0_fixed.1 != 0 {
        return Err(host("CR0 fixed bits"));
    }
    let cr4 = rd(v12, f::HOST_CR4);
    if cr4 & offer.cr4_fixed.0 != offer.cr4_fixed.0 || cr4 & !offer.cr4_fixed.1 != 0 {
        return Err(host("CR4 fixed bits"));
    }
    if cr4 & !env.cr4_supported != 0 {
        return Err(host("CR4 bit the CPU does not support"));
    }
    if cr4 & CR4_CET != 0 && cr0 & CR0_WP == 0 {
        return Err(host("CR4.CET without CR0.WP"));
    }
    if !within_width(rd(v12, f::HOST_CR3), env.maxphyaddr) {
        return Err(host("CR3 beyond the physical-address width"));
    }
    if !canonical(rd(v12, f::HOST_SYSENTER_ESP), lb)
        || !canonical(rd(v12, f::HOST_SYSENTER_EIP), lb)
    {
        return Err(host("SYSENTER_ESP/EIP not canonical"));
    }
    if exitv & exit::LOAD_PERF_GLOBAL != 0
        && rd(v12, f::HOST_IA32_PERF_GLOBAL_CTRL) & !env.perf_global_valid != 0
    {
        return Err(host("IA32_PERF_GLOBAL_CTRL reserved bits"));
    }
    if exitv & exit::LOAD_PAT != 0 && !pat_valid(rd(v12, f::HOST_IA32_PAT)) {
        return Err(host("IA32_PAT memory type"));
    }
    if exitv & exit::LOAD_EFER != 0 {
        let efer = rd(v12, f::HOST_IA32_EFER);
        if efer & !EFER_VALID != 0 {
            return Err(host("IA32_EFER reserved bits"));
        }
        if (efer & EFER_LMA != 0) != host64 || (efer & EFER_LME != 0) != host64 {
            return Err(host("IA32_EFER.LMA/LME and host address-space size"));
        }
    }

    // Selectors, descriptor-table registers and bases.
    let sels = [
        rd(v12, f::HOST_ES_SELECTOR),
        rd(v12, f::HOST_CS_SELECTOR),
        rd(v12, f::HOST_SS_SELECTOR),
        rd(v12, f::HOST_DS_SELECTOR),
        rd(v12, f::HOST_FS_SELECTOR),
        rd(v12, f::HOST_GS_SELECTOR),
        rd(v12, f::HOST_TR_SELECTOR),
    ];
    if sels.iter().any(|s| s & 7 != 0) {
        return Err(host("selector RPL/TI not 0"));
    }
    if rd(v12, f::HOST_CS_SELECTOR) == 0 || rd(v12, f::HOST_TR_SELECTOR) == 0 {
        return Err(host("CS or TR selector 0"));
    }
    if !host64 && rd(v12, f::HOST_SS_SELECTOR) == 0 {
        return Err(host("SS selector 0 with a 32-bit host"));
    }
    // By reference (root mode: no out-of-line array iterator).
    for &base in [
        f::HOST_FS_BASE,
        f::HOST_GS_BASE,
        f::HOST_GDTR_BASE,
        f::HOST_IDTR_BASE,
        f::HOST_TR_BASE,
    ]
    .iter()
    {
        if !canonical(rd(v12, base), lb) {
            return Err(host("base address not canonical"));
        }
    }

    // 27.2.3 address-space size.
    let rip = rd(v12, f::HOST_RIP);
    if env.l1_ia32e {
        if !host64 {
            return Err(host("host address-space size 0 in IA-32e mode"));
        }
    } else if entryv & entry::IA32E != 0 || host64 {
        return Err(host("IA-32e controls outside IA-32e mode"));
    }
    if host64 {
        if cr4 & CR4_PAE == 0 {
            return Err(host("64-bit host without CR4.PAE"));
        }
        if !canonical(rip, lb) {
            return Err(host("RIP not canonical"));
        }
    } else {
        if cr4 & CR4_PCIDE != 0 {
            return Err(host("CR4.PCIDE with a 32-bit host"));
        }
        if rip >> 32 != 0 {
            return Err(host("RIP beyond 32 bits with a 32-bit host"));
        }
    }
    Ok(())
}

/// The guest-state checks (27.3) whose answer depends on the **offer**
/// rather than on the CPU: the CPU checks vmcs02 against its own
/// capabilities, which may allow more than the host was offered.  A
/// failure is the entry failure the CPU would report (exit reason 33,
/// qualification 0):
///
/// * guest CR0 and CR4 within the offer's fixed bits, except that PE and
///   PG are not checked with "unrestricted guest" (SDM 27.3.1.1; the
///   offer's IA32_VMX_CR0_FIXED0 keeps them, as the CPU's does).  The rule
///   that PG needs PE, and the other checks unrestricted guest relaxes
///   (segments, IA-32e mode with paging), are the CPU's on vmcs02, which
///   gets vmcs12's control and CR0 unchanged;
/// * the activity state: 0 (active) or one the offer's IA32_VMX_MISC bits
///   8:6 list (1 HLT, 2 shutdown, 3 wait-for-SIPI).
pub fn check_guest_against_offer(
    v12: &impl VmcsAccess,
    offer: &VmxCaps,
) -> Result<(), EntryFailure> {
    let fail = Err(EntryFailure::Exit {
        reason: 33,
        qualification: 0,
    });
    let cr0 = rd(v12, f::GUEST_CR0);
    let cr4 = rd(v12, f::GUEST_CR4);
    let fixed0 = if unrestricted_guest(v12) {
        offer.cr0_fixed.0 & !(CR0_PE | CR0_PG)
    } else {
        offer.cr0_fixed.0
    };
    if cr0 & fixed0 != fixed0 || cr0 & !offer.cr0_fixed.1 != 0 {
        return fail;
    }
    if cr4 & offer.cr4_fixed.0 != offer.cr4_fixed.0 || cr4 & !offer.cr4_fixed.1 != 0 {
        return fail;
    }
    let act = rd(v12, f::GUEST_ACTIVITY_STATE);
    let supported = match act {
        0 => true,
        1..=3 => offer.misc & (1 << (5 + act)) != 0,
        _ => false,
    };
    if !supported {
        return fail;
    }
    Ok(())
}

/// Every check of 27.2 in the SDM's order: controls (VMfailValid(7)), then
/// host state (VMfailValid(8)).  Run after [`check_mov_ss`] and the
/// launch-state checks, before any address of vmcs12 is used.
pub fn check_vmcs12(
    v12: &impl VmcsAccess,
    offer: &VmxCaps,
    env: &EntryEnv,
) -> Result<(), VmFailValid> {
    check_controls(v12, offer, env)?;
    check_host_state(v12, offer, env)
}

#[cfg(test)]
mod tests {
    use super::super::controls::*;
    use super::super::testutil::*;
    use super::*;
    use crate::hv::vmx::vmcs::MemVmcs;

    fn controls(v: &MemVmcs) -> Result<(), VmFailValid> {
        check_controls(v, &offer(), &env())
    }

    fn hoststate(v: &MemVmcs) -> Result<(), VmFailValid> {
        check_host_state(v, &offer(), &env())
    }

    fn err(r: Result<(), VmFailValid>) -> Option<u32> {
        r.err().map(|e| e.error)
    }

    #[test]
    fn the_kvm_like_vmcs12_passes() {
        let v = vmcs12();
        assert_eq!(check_vmcs12(&v, &offer(), &env()), Ok(()));
    }

    #[test]
    fn mov_ss_blocking_is_error_26() {
        assert_eq!(check_mov_ss(0), Ok(()));
        assert_eq!(check_mov_ss(1), Ok(()), "STI blocking is fine");
        assert_eq!(check_mov_ss(2).unwrap_err().error, 26);
        assert_eq!(check_mov_ss(0xb).unwrap_err().error, 26);
    }

    /// Every single bit of every control word, set on top of the valid
    /// vmcs12: allowed exactly when the offer allows it and the merge
    /// composes it (the bit's own dependencies satisfied by the fixture).
    #[test]
    fn every_control_bit_follows_the_offer_and_the_allow_list() {
        let o = offer();
        let a = Allowed::of(&o);
        let words = [
            (f::PIN_BASED_VM_EXEC_CONTROL, a.pin),
            (f::CPU_BASED_VM_EXEC_CONTROL, a.proc1),
            (f::SECONDARY_VM_EXEC_CONTROL, a.proc2),
            (f::VM_EXIT_CONTROLS, a.exit),
            (f::VM_ENTRY_CONTROLS, a.entry),
        ];
        for (fld, al) in words {
            for bit in 0..32 {
                let mut v = vmcs12();
                let base = rd(&v, fld);
                // Give the bits with dependencies what they need.
                v.write(f::VIRTUAL_PROCESSOR_ID, 5).unwrap();
                v.write(
                    f::CPU_BASED_VM_EXEC_CONTROL,
                    rd(&v, f::CPU_BASED_VM_EXEC_CONTROL) | proc1::TPR_SHADOW,
                )
                .unwrap();
                let set = base | 1 << bit;
                v.write(fld, set).unwrap();
                let mut ok = al.may_be_one & (1 << bit) != 0;
                if fld == f::SECONDARY_VM_EXEC_CONTROL && 1 << bit == proc2::VIRT_X2APIC {
                    // Excludes virtualize APIC accesses, which the fixture sets.
                    ok = false;
                }
                let r = controls(&v);
                assert_eq!(r.is_ok(), ok, "{fld:?} bit {bit}: {r:?}");
                if !ok {
                    assert_eq!(err(r), Some(7));
                }
                // Clearing a must-be-one bit fails too.
                if al.must_be_one & (1 << bit) != 0 {
                    let mut v = vmcs12();
                    v.write(fld, base & !(1 << bit)).unwrap();
                    assert_eq!(err(controls(&v)), Some(7), "{fld:?} must-be-one bit {bit}");
                }
            }
        }
    }

    /// TSC scaling passes where the offer has it (the CPU has it) and fails
    /// the entry with VMfailValid(7) where it does not, as on a CPU
    /// without the control; no check on the multiplier's value (SDM Vol.
    /// 3C 27.2.1.1 has none); with secondary controls off it is ignored.
    #[test]
    fn tsc_scaling_needs_the_offer() {
        let mut v = vmcs12();
        v.write(
            f::SECONDARY_VM_EXEC_CONTROL,
            rd(&v, f::SECONDARY_VM_EXEC_CONTROL) | proc2::TSC_SCALING,
        )
        .unwrap();
        for m in [0, 1, 1 << 48, u64::MAX] {
            v.write(f::TSC_MULTIPLIER, m).unwrap();
            assert_eq!(check_vmcs12(&v, &offer(), &env()), Ok(()), "{m:#x}");
        }
        let mut without = offer();
        without.procbased2.may_be_one &= !proc2::TSC_SCALING;
        assert_eq!(err(check_vmcs12(&v, &without, &env())), Some(7));
        v.write(
            f::CPU_BASED_VM_EXEC_CONTROL,
            rd(&v, f::CPU_BASED_VM_EXEC_CONTROL) & !proc1::SECONDARY,
        )
        .unwrap();
        assert!(check_vmcs12(&v, &without, &env()).is_ok());
    }

    #[test]
    fn every_hidden_control_fails_even_if_offered() {
        // An offer that (wrongly) allows every hidden feature: the entry
        // still fails, because the merge cannot compose them.
        let mut o = offer();
        o.pinbased.may_be_one |= pin::PREEMPTION_TIMER | pin::POSTED_INTR;
        o.procbased.may_be_one |= proc1::TERTIARY;
        o.procbased2.may_be_one = u32::MAX;
        o.exit.may_be_one = u32::MAX;
        o.entry.may_be_one = u32::MAX;
        let hidden: &[(Field<u32>, u32)] = &[
            (f::PIN_BASED_VM_EXEC_CONTROL, pin::PREEMPTION_TIMER),
            (f::PIN_BASED_VM_EXEC_CONTROL, pin::POSTED_INTR),
            (f::CPU_BASED_VM_EXEC_CONTROL, proc1::TERTIARY),
            // (EPT and unrestricted guest are mergeable: an offer with them
            // lets them pass with a valid EPT pointer,
            // `ept_controls_need_the_offer_and_a_valid_eptp12`.)
            (f::SECONDARY_VM_EXEC_CONTROL, proc2::APIC_REGISTER_VIRT),
            (f::SECONDARY_VM_EXEC_CONTROL, proc2::VIRT_INTR_DELIVERY),
            (f::SECONDARY_VM_EXEC_CONTROL, proc2::VMFUNC),
            (f::SECONDARY_VM_EXEC_CONTROL, proc2::SHADOW_VMCS),
            (f::SECONDARY_VM_EXEC_CONTROL, proc2::ENCLS),
            (f::SECONDARY_VM_EXEC_CONTROL, proc2::PML),
            (f::SECONDARY_VM_EXEC_CONTROL, proc2::EPT_VE),
            (f::SECONDARY_VM_EXEC_CONTROL, 1 << 23),
            // (TSC scaling is mergeable: `tsc_scaling_needs_the_offer`.)
            (f::VM_EXIT_CONTROLS, exit::SAVE_PREEMPTION_TIMER),
            (f::VM_EXIT_CONTROLS, 1 << 31),
            (f::VM_ENTRY_CONTROLS, entry::SMM),
            (f::VM_ENTRY_CONTROLS, 1 << 20),
        ];
        for &(fld, bits) in hidden {
            let mut v = vmcs12();
            let base = rd(&v, fld);
            v.write(fld, base | bits).unwrap();
            let r = check_vmcs12(&v, &o, &env());
            assert_eq!(err(r), Some(7), "{fld:?} {bits:#x}");
        }
        // Secondary controls are ignored when not activated.
        let mut v = vmcs12();
        v.write(f::SECONDARY_VM_EXEC_CONTROL, proc2::PML).unwrap();
        v.write(
            f::CPU_BASED_VM_EXEC_CONTROL,
            rd(&v, f::CPU_BASED_VM_EXEC_CONTROL) & !proc1::SECONDARY,
        )
        .unwrap();
        assert_eq!(check_vmcs12(&v, &o, &env()), Ok(()));
    }

    #[test]
    fn pin_nmi_combinations_exhaustive() {
        for combo in 0..8u32 {
            let bits = [pin::EXT_INTR, pin::NMI, pin::VIRTUAL_NMIS];
            let mut pinv = DEFAULT1_PIN;
            for (i, b) in bits.iter().enumerate() {
                if combo & (1 << i) != 0 {
                    pinv |= b;
                }
            }
            for nmi_window in [false, true] {
                let mut v = vmcs12();
                v.write(f::PIN_BASED_VM_EXEC_CONTROL, pinv).unwrap();
                let mut p1 = rd(&v, f::CPU_BASED_VM_EXEC_CONTROL) & !proc1::NMI_WINDOW;
                if nmi_window {
                    p1 |= proc1::NMI_WINDOW;
                }
                v.write(f::CPU_BASED_VM_EXEC_CONTROL, p1).unwrap();
                let ok = (pinv & pin::VIRTUAL_NMIS == 0 || pinv & pin::NMI != 0)
                    && (!nmi_window || pinv & pin::VIRTUAL_NMIS != 0);
                assert_eq!(controls(&v).is_ok(), ok, "{pinv:#x} {nmi_window}");
            }
        }
    }

    /// Every combination of the offered, mergeable, optional exit and
    /// entry controls (the pairs KVM matches) passes the control checks.
    #[test]
    fn exit_and_entry_controls_exhaustive() {
        let a = Allowed::of(&offer());
        for (fld, al) in [
            (f::VM_EXIT_CONTROLS, a.exit),
            (f::VM_ENTRY_CONTROLS, a.entry),
        ] {
            let optional: std::vec::Vec<u32> = (0..32)
                .map(|b| 1u32 << b)
                .filter(|b| al.may_be_one & !al.must_be_one & b != 0)
                .collect();
            assert!(optional.len() >= 5, "{fld:?}: {optional:?}");
            for combo in 0..(1u32 << optional.len()) {
                let mut val = al.must_be_one;
                for (i, b) in optional.iter().enumerate() {
                    if combo & (1 << i) != 0 {
                        val |= b;
                    }
                }
                let mut v = vmcs12();
                v.write(fld, val).unwrap();
                assert_eq!(controls(&v), Ok(()), "{fld:?} {val:#x}");
                // The same with one bit the offer does not allow: fails.
                let bad = (0..32)
                    .map(|b| 1u32 << b)
                    .find(|b| al.may_be_one & b == 0)
                    .unwrap();
                v.write(fld, val | bad).unwrap();
                assert_eq!(err(controls(&v)), Some(7));
            }
        }
    }

    /// All 2^12 combinations of the mergeable secondary controls, against
    /// the SDM's rules written out independently.
    #[test]
    fn secondary_controls_exhaustive() {
        let a = Allowed::of(&offer());
        let bits: std::vec::Vec<u32> = (0..32)
            .map(|b| 1u32 << b)
            .filter(|b| a.proc2.may_be_one & b != 0)
            .collect();
        assert_eq!(
            bits.len() as u32,
            (MERGEABLE_PROC2
                & !(proc2::EPT | proc2::UNRESTRICTED_GUEST)
                & (hw().procbased2.may_be_one))
                .count_ones(),
            "the fixture offers every mergeable secondary control the CPU has but EPT"
        );
        for tpr in [false, true] {
            for combo in 0..(1u32 << bits.len()) {
                let mut p2 = 0;
                for (i, b) in bits.iter().enumerate() {
                    if combo & (1 << i) != 0 {
                        p2 |= b;
                    }
                }
                let mut v = vmcs12();
                let p1 = rd(&v, f::CPU_BASED_VM_EXEC_CONTROL) & !proc1::TPR_SHADOW;
                v.write(
                    f::CPU_BASED_VM_EXEC_CONTROL,
                    p1 | if tpr { proc1::TPR_SHADOW } else { 0 },
                )
                .unwrap();
                v.write(f::SECONDARY_VM_EXEC_CONTROL, p2).unwrap();
                v.write(f::VIRTUAL_PROCESSOR_ID, 0).unwrap();
                let ok = (p2 & proc2::VIRT_X2APIC == 0
                    || (tpr && p2 & proc2::VIRT_APIC_ACCESSES == 0))
                    && p2 & proc2::VPID == 0;
                assert_eq!(controls(&v).is_ok(), ok, "{p2:#x} tpr={tpr}");
            }
        }
    }

    #[test]
    fn addresses_and_counts() {
        let w = env().maxphyaddr;
        let cases: &[(Field<u64>, u64, bool)] = &[
            (f::IO_BITMAP_A, 0x1000, true),
            (f::IO_BITMAP_A, 0x1008, false),
            (f::IO_BITMAP_B, 1 << w, false),
            (f::MSR_BITMAP, 0x2001, false),
            (f::MSR_BITMAP, (1 << w) - 0x1000, true),
            (f::VIRTUAL_APIC_PAGE_ADDR, 0x3800, false),
            (f::APIC_ACCESS_ADDR, !0xfff, false),
        ];
        for &(fld, val, ok) in cases {
            let mut v = vmcs12();
            v.write(fld, val).unwrap();
            assert_eq!(controls(&v).is_ok(), ok, "{fld:?} {val:#x}");
        }
        // Unused addresses are not checked.
        let mut v = vmcs12();
        let p1 = rd(&v, f::CPU_BASED_VM_EXEC_CONTROL) & !proc1::IO_BITMAPS;
        v.write(f::CPU_BASED_VM_EXEC_CONTROL, p1).unwrap();
        v.write(f::IO_BITMAP_A, 3).unwrap();
        assert_eq!(controls(&v), Ok(()));
        // MSR areas: 16-byte aligned, the last byte within the width.
        for (addr, count) in [
            (f::VM_EXIT_MSR_STORE_ADDR, f::VM_EXIT_MSR_STORE_COUNT),
            (f::VM_EXIT_MSR_LOAD_ADDR, f::VM_EXIT_MSR_LOAD_COUNT),
            (f::VM_ENTRY_MSR_LOAD_ADDR, f::VM_ENTRY_MSR_LOAD_COUNT),
        ] {
            let mut v = vmcs12();
            v.write(addr, 0x5008).unwrap();
            v.write(count, 0).unwrap();
            assert_eq!(controls(&v), Ok(()), "count 0: address ignored");
            v.write(count, 1).unwrap();
            assert_eq!(err(controls(&v)), Some(7));
            v.write(addr, (1 << w) - 32).unwrap();
            v.write(count, 2).unwrap();
            assert_eq!(controls(&v), Ok(()));
            v.write(count, 3).unwrap();
            assert_eq!(err(controls(&v)), Some(7), "last entry beyond the width");
            v.write(addr, !0xf).unwrap();
            v.write(count, u32::MAX).unwrap();
            assert_eq!(err(controls(&v)), Some(7), "no overflow");
        }
        // CR3-target count up to VMX_MISC[24:16] (4 in the fixture).
        let mut v = vmcs12();
        v.write(f::CR3_TARGET_COUNT, 4).unwrap();
        assert_eq!(controls(&v), Ok(()));
        v.write(f::CR3_TARGET_COUNT, 5).unwrap();
        assert_eq!(err(controls(&v)), Some(7));
        // TPR threshold bits 31:4; VPID 0.
        let mut v = vmcs12();
        v.write(f::TPR_THRESHOLD, 0x10).unwrap();
        assert_eq!(err(controls(&v)), Some(7));
        let mut v = vmcs12();
        v.write(f::VIRTUAL_PROCESSOR_ID, 0).unwrap();
        assert_eq!(err(controls(&v)), Some(7));
    }

    #[test]
    fn event_injection_rules() {
        use crate::hv::vmx::event::EventType::*;
        let ev = |vec: u8, ty: EventType, ec: bool| InterruptionInfo::event(vec, ty, ec).0;
        let mut cases: std::vec::Vec<(u32, u32, bool)> = std::vec![
            (0, 0, true),
            (ev(0x20, ExternalInterrupt, false), 0, true),
            (ev(2, Nmi, false), 0, true),
            (ev(3, Nmi, false), 0, false),
            (ev(3, Reserved, false), 0, false),
            (ev(0, Other, false), 0, true),
            (ev(1, Other, false), 0, false),
            (ev(32, HardwareException, false), 0, false),
            (ev(3, SoftwareException, false), 1, true),
            (ev(3, SoftwareException, false), 16, false),
            (ev(0x80, SoftwareInterrupt, false), 2, true),
            (ev(1, PrivilegedSoftwareException, false), 1, true),
            (ev(14, HardwareException, true) | 1 << 12, 0, false),
            (ev(14, HardwareException, true) | 1 << 30, 0, false),
        ];
        // Software events with length 0: allowed by VMX_MISC bit 30.
        cases.push((
            ev(3, SoftwareException, false),
            0,
            offer().misc & 1 << 30 != 0,
        ));
        // Error code exactly for the exceptions that have one.
        for vec in 0..32u8 {
            let has = [8, 10, 11, 12, 13, 14, 17, 21].contains(&vec);
            cases.push((ev(vec, HardwareException, has), 0, true));
            cases.push((ev(vec, HardwareException, !has), 0, false));
            cases.push((ev(vec, ExternalInterrupt, true), 0, false));
        }
        for (info, len, ok) in cases {
            let mut v = vmcs12();
            v.write(f::VM_ENTRY_INTR_INFO, info).unwrap();
            v.write(f::VM_ENTRY_INSTRUCTION_LEN, len).unwrap();
            assert_eq!(controls(&v).is_ok(), ok, "{info:#x} len {len}");
        }
    }

    #[test]
    fn host_state_checks_each_fail_with_8() {
        let lb = env().linear_bits;
        let noncanon = 1u64 << (lb - 1);
        type Case = (&'static str, fn(&mut MemVmcs));
        let cases: &[Case] = &[
            ("CR0 without PG", |v| {
                v.write(f::HOST_CR0, 0x8000_0031 & !(1 << 31)).unwrap()
            }),
            ("CR0 bit 32", |v| {
                v.write(f::HOST_CR0, rd(v, f::HOST_CR0) | 1 << 32).unwrap()
            }),
            ("CR4 without VMXE", |v| {
                v.write(f::HOST_CR4, rd(v, f::HOST_CR4) & !(1 << 13))
                    .unwrap()
            }),
            ("CR4 LA57 unsupported", |v| {
                v.write(f::HOST_CR4, rd(v, f::HOST_CR4) | 1 << 12).unwrap()
            }),
            ("CR4 without PAE", |v| {
                v.write(f::HOST_CR4, rd(v, f::HOST_CR4) & !CR4_PAE).unwrap()
            }),
            ("CR3 width", |v| v.write(f::HOST_CR3, 1 << 46).unwrap()),
            ("SYSENTER_EIP", |v| {
                v.write(f::HOST_SYSENTER_EIP, 1 << 47).unwrap()
            }),
            ("SYSENTER_ESP", |v| {
                v.write(f::HOST_SYSENTER_ESP, 0x0000_8000_0000_0000)
                    .unwrap()
            }),
            ("PAT type 2", |v| {
                v.write(f::HOST_IA32_PAT, 0x0007_0406_0007_0402).unwrap()
            }),
            ("PAT type 8", |v| {
                v.write(f::HOST_IA32_PAT, 0x0807_0406_0007_0406).unwrap()
            }),
            ("EFER reserved", |v| {
                v.write(f::HOST_IA32_EFER, 0xd01 | 1 << 14).unwrap()
            }),
            ("EFER LMA 0", |v| v.write(f::HOST_IA32_EFER, 0x901).unwrap()),
            ("EFER LME 0", |v| v.write(f::HOST_IA32_EFER, 0xc01).unwrap()),
            ("PERF reserved", |v| {
                v.write(f::HOST_IA32_PERF_GLOBAL_CTRL, 1 << 40).unwrap()
            }),
            ("CS RPL", |v| v.write(f::HOST_CS_SELECTOR, 0x13).unwrap()),
            ("DS TI", |v| v.write(f::HOST_DS_SELECTOR, 0x2c).unwrap()),
            ("TR 0", |v| v.write(f::HOST_TR_SELECTOR, 0).unwrap()),
            ("CS 0", |v| v.write(f::HOST_CS_SELECTOR, 0).unwrap()),
            ("FS base", |v| v.write(f::HOST_FS_BASE, 1 << 50).unwrap()),
            ("GS base", |v| {
                v.write(f::HOST_GS_BASE, 0x0001_0000_0000_0000).unwrap()
            }),
            ("GDTR base", |v| {
                v.write(f::HOST_GDTR_BASE, 0x7fff_ffff_ffff_0000).unwrap()
            }),
            ("IDTR base", |v| {
                v.write(f::HOST_IDTR_BASE, 0x8000_0000_0000_0000).unwrap()
            }),
            ("TR base", |v| {
                v.write(f::HOST_TR_BASE, 0xffff_0000_0000_0000).unwrap()
            }),
            ("RIP", |v| {
                v.write(f::HOST_RIP, 0x0000_9000_0000_0000).unwrap()
            }),
            ("32-bit host in IA-32e mode", |v| {
                v.write(
                    f::VM_EXIT_CONTROLS,
                    rd(v, f::VM_EXIT_CONTROLS) & !(exit::HOST_64 | exit::LOAD_EFER),
                )
                .unwrap()
            }),
        ];
        for (name, mutate) in cases {
            let mut v = vmcs12();
            mutate(&mut v);
            assert_eq!(controls(&v), Ok(()), "{name}: a host-state case");
            let r = hoststate(&v);
            assert_eq!(err(r), Some(8), "{name}: {r:?}");
        }
        // Non-canonical at the exact boundary; canonical high half passes.
        assert!(!canonical(noncanon, lb));
        assert!(canonical(!0u64 << (lb - 1), lb));
        let mut v = vmcs12();
        v.write(f::HOST_RIP, 0xffff_ffff_8100_0000).unwrap();
        v.write(f::HOST_SS_SELECTOR, 0).unwrap();
        v.write(f::HOST_DS_SELECTOR, 0).unwrap();
        assert_eq!(hoststate(&v), Ok(()), "SS may be 0 for a 64-bit host");
        // Without the load controls, their fields are not checked.
        let mut v = vmcs12();
        v.write(
            f::VM_EXIT_CONTROLS,
            rd(&v, f::VM_EXIT_CONTROLS)
                & !(exit::LOAD_PAT | exit::LOAD_EFER | exit::LOAD_PERF_GLOBAL),
        )
        .unwrap();
        v.write(f::HOST_IA32_PAT, 0x0202_0202_0202_0202).unwrap();
        v.write(f::HOST_IA32_EFER, u64::MAX).unwrap();
        v.write(f::HOST_IA32_PERF_GLOBAL_CTRL, u64::MAX).unwrap();
        assert_eq!(hoststate(&v), Ok(()));
    }

    #[test]
    fn address_space_size_outside_ia32e_mode() {
        let mut e = env();
        e.l1_ia32e = false;
        let o = offer();
        let v = vmcs12();
        assert_eq!(check_host_state(&v, &o, &e).unwrap_err().error, 8);
        let mut v = vmcs12();
        v.write(
            f::VM_EXIT_CONTROLS,
            rd(&v, f::VM_EXIT_CONTROLS) & !(exit::HOST_64 | exit::LOAD_EFER),
        )
        .unwrap();
        v.write(
            f::VM_ENTRY_CONTROLS,
            rd(&v, f::VM_ENTRY_CONTROLS) & !entry::IA32E,
        )
        .unwrap();
        v.write(f::HOST_RIP, 0x8000_0000).unwrap();
        v.write(f::HOST_CR4, HOST_CR4 & !CR4_PCIDE).unwrap();
        assert_eq!(check_host_state(&v, &o, &e), Ok(()));
        v.write(f::HOST_RIP, 0x1_0000_0000).unwrap();
        assert_eq!(check_host_state(&v, &o, &e).unwrap_err().error, 8);
        v.write(f::HOST_RIP, 0).unwrap();
        v.write(f::HOST_SS_SELECTOR, 0).unwrap();
        assert_eq!(check_host_state(&v, &o, &e).unwrap_err().error, 8);
    }

    #[test]
    fn controls_are_checked_before_host_state() {
        let mut v = vmcs12();
        v.write(f::HOST_RIP, 1 << 60).unwrap();
        assert_eq!(check_vmcs12(&v, &offer(), &env()).unwrap_err().error, 8);
        v.write(f::VIRTUAL_PROCESSOR_ID, 0).unwrap();
        assert_eq!(check_vmcs12(&v, &offer(), &env()).unwrap_err().error, 7);
    }

    #[test]
    fn guest_checks_that_depend_on_the_offer() {
        let o = offer();
        assert_eq!(check_guest_against_offer(&vmcs12(), &o), Ok(()));
        let bad = Err(EntryFailure::Exit {
            reason: 33,
            qualification: 0,
        });
        let cases: &[(Field<u64>, u64)] = &[
            (f::GUEST_CR0, 0x8005_0033 & !1),
            (f::GUEST_CR0, 0x8005_0033 | 1 << 32),
            (f::GUEST_CR4, 0x26f0 & !(1 << 13)),
            (f::GUEST_CR4, 0x26f0 | 1 << 12),
        ];
        for &(fld, val) in cases {
            let mut v = vmcs12();
            v.write(fld, val).unwrap();
            assert_eq!(check_guest_against_offer(&v, &o), bad, "{fld:?} {val:#x}");
        }
        // Activity states: as VMX_MISC bits 8:6 of the offer say.
        for act in 0..8u32 {
            for misc_bits in 0..8u64 {
                let mut o = offer();
                o.misc = (o.misc & !(7 << 6)) | misc_bits << 6;
                let mut v = vmcs12();
                v.write(f::GUEST_ACTIVITY_STATE, act).unwrap();
                let ok = act == 0 || (act <= 3 && misc_bits & (1 << (act - 1)) != 0);
                assert_eq!(
                    check_guest_against_offer(&v, &o).is_ok(),
                    ok,
                    "{act} {misc_bits:#b}"
                );
            }
        }
    }

    /// EPT in the entry checks, against the view with EPT: KVM's vmcs12
    /// with EPT and unrestricted guest passes; the same vmcs12 fails with
    /// the view without EPT; every invalid EPT pointer and unrestricted
    /// guest without EPT fail with VMfailValid(7).
    #[test]
    fn ept_controls_need_the_offer_and_a_valid_eptp12() {
        let (o, e) = (offer_ept(), env());
        let v = vmcs12_ept();
        assert_eq!(check_vmcs12(&v, &o, &e), Ok(()));
        assert_eq!(check_guest_against_offer(&v, &o), Ok(()));
        let r = check_vmcs12(&v, &offer(), &e);
        assert_eq!(err(r), Some(7), "EPT hidden: {r:?}");
        assert_eq!(ept12(&v, &o, &e).map(|p| p.raw), Some(EPTP12));
        assert!(uses_ept12(&v) && unrestricted_guest(&v));
        let root = EPTP12 & !0xfff;
        let bad = [
            (root | 3 << 3 | 1, "WC"),
            (root | 3 << 3 | 7, "type 7"),
            (root | 4 << 3 | 6, "5-level walk"),
            (root | 2 << 3 | 6, "3-level walk"),
            (root | 1 << 6 | 3 << 3 | 6, "A/D not offered"),
            (root | 1 << 7 | 3 << 3 | 6, "bit 7"),
            (root | 1 << 11 | 3 << 3 | 6, "bit 11"),
            (1 << 40 | 3 << 3 | 6, "beyond MAXPHYADDR"),
            (0, "zero"),
        ];
        for (eptp, why) in bad {
            let mut v = vmcs12_ept();
            v.write(f::EPT_POINTER, eptp).unwrap();
            let r = check_vmcs12(&v, &o, &e);
            assert_eq!(
                r.map_err(|x| (x.error, x.why)),
                Err((7, "EPT pointer")),
                "{why}"
            );
        }
        // UC is offered: a UC EPT pointer is valid.
        let mut v = vmcs12_ept();
        v.write(f::EPT_POINTER, root | 3 << 3).unwrap();
        assert_eq!(check_vmcs12(&v, &o, &e), Ok(()));
        // Unrestricted guest without EPT.
        let mut v = vmcs12_ept();
        let p2 = rd(&v, f::SECONDARY_VM_EXEC_CONTROL) & !proc2::EPT;
        v.write(f::SECONDARY_VM_EXEC_CONTROL, p2).unwrap();
        let r = check_vmcs12(&v, &o, &e);
        assert_eq!(
            r.map_err(|x| (x.error, x.why)),
            Err((7, "unrestricted guest without EPT"))
        );
        // EPT alone (no unrestricted guest): fine.
        let mut v = vmcs12_ept();
        let p2 = rd(&v, f::SECONDARY_VM_EXEC_CONTROL) & !proc2::UNRESTRICTED_GUEST;
        v.write(f::SECONDARY_VM_EXEC_CONTROL, p2).unwrap();
        assert_eq!(check_vmcs12(&v, &o, &e), Ok(()));
        assert!(uses_ept12(&v) && !unrestricted_guest(&v));
        // Without EPT the EPT pointer is not looked at; with the secondary
        // controls not activated neither EPT bit counts.
        let mut v = vmcs12();
        v.write(f::EPT_POINTER, u64::MAX).unwrap();
        assert_eq!(check_vmcs12(&v, &o, &e), Ok(()));
        let mut v = vmcs12_ept();
        v.write(f::EPT_POINTER, u64::MAX).unwrap();
        let p1 = rd(&v, f::CPU_BASED_VM_EXEC_CONTROL) & !proc1::SECONDARY;
        v.write(f::CPU_BASED_VM_EXEC_CONTROL, p1).unwrap();
        assert_eq!(check_vmcs12(&v, &o, &e), Ok(()));
        assert!(!uses_ept12(&v) && !unrestricted_guest(&v));
    }

    /// The secondary controls exhaustively with the view with EPT: the
    /// EPT bits follow their rules (unrestricted guest needs EPT; the
    /// fixture's EPT pointer is valid), the others as without EPT.
    #[test]
    fn secondary_controls_exhaustive_with_ept() {
        let o = offer_ept();
        let a = Allowed::of(&o);
        let bits: std::vec::Vec<u32> = (0..32)
            .map(|b| 1u32 << b)
            .filter(|b| a.proc2.may_be_one & b != 0)
            .collect();
        assert_eq!(
            bits.len() as u32,
            (MERGEABLE_PROC2 & hw().procbased2.may_be_one).count_ones()
        );
        for combo in 0..(1u32 << bits.len()) {
            let mut p2 = 0;
            for (i, b) in bits.iter().enumerate() {
                if combo & (1 << i) != 0 {
                    p2 |= b;
                }
            }
            let mut v = vmcs12_ept();
            v.write(f::SECONDARY_VM_EXEC_CONTROL, p2).unwrap();
            v.write(f::VIRTUAL_PROCESSOR_ID, 0).unwrap();
            let ok = (p2 & proc2::VIRT_X2APIC == 0 || p2 & proc2::VIRT_APIC_ACCESSES == 0)
                && p2 & proc2::VPID == 0
                && (p2 & proc2::UNRESTRICTED_GUEST == 0 || p2 & proc2::EPT != 0);
            assert_eq!(check_controls(&v, &o, &env()).is_ok(), ok, "{p2:#x}");
        }
    }

    /// Guest CR0 with unrestricted guest: PE and PG need not be set (a
    /// real-mode or unpaged guest), every other fixed bit still holds;
    /// without unrestricted guest (with or without EPT) PE and PG are
    /// required.
    #[test]
    fn guest_cr0_with_unrestricted_guest() {
        let o = offer_ept();
        let exit33 = Err(EntryFailure::Exit {
            reason: 33,
            qualification: 0,
        });
        const NE: u64 = 1 << 5;
        let cases: &[(u64, bool, bool)] = &[
            // (CR0, unrestricted guest, passes)
            (0x8005_0033, true, true),
            (0x8005_0033, false, true),
            (0x0000_0030, true, true), // real mode: PE = PG = 0
            (0x0000_0031, true, true), // protected, unpaged
            (0x0000_0030, false, false),
            (0x0000_0031, false, false),
            (0x8000_0032 & !NE, true, false), // NE still fixed
            (0x30 | 1 << 32, true, false),    // beyond FIXED1
        ];
        for &(cr0, ug, ok) in cases {
            let mut v = vmcs12_ept();
            let p2 = rd(&v, f::SECONDARY_VM_EXEC_CONTROL) & !proc2::UNRESTRICTED_GUEST;
            let p2 = p2 | if ug { proc2::UNRESTRICTED_GUEST } else { 0 };
            v.write(f::SECONDARY_VM_EXEC_CONTROL, p2).unwrap();
            v.write(f::GUEST_CR0, cr0).unwrap();
            let r = check_guest_against_offer(&v, &o);
            assert_eq!(r.is_ok(), ok, "{cr0:#x} ug={ug}");
            if !ok {
                assert_eq!(r, exit33);
            }
        }
        // The view without EPT: PE and PG always required.
        let mut v = vmcs12();
        v.write(f::GUEST_CR0, 0x30).unwrap();
        assert_eq!(check_guest_against_offer(&v, &offer()), exit33);
    }

    /// An exception injected into a real-mode guest (unrestricted guest,
    /// CR0.PE = 0) delivers no error code: the deliver-error-code bit must
    /// be 0 there, and 1 for #GP in protected mode as before.
    #[test]
    fn event_injection_error_code_in_real_mode() {
        let gp = |ec: bool| InterruptionInfo::event(13, EventType::HardwareException, ec).0;
        for (cr0, ug, ec, ok) in [
            (0x30u64, true, false, true),
            (0x30, true, true, false),
            (0x31, true, true, true),
            (0x31, true, false, false),
            (0x8005_0033, false, true, true),
            (0x8005_0033, false, false, false),
        ] {
            let mut v = vmcs12_ept();
            if !ug {
                let p2 = rd(&v, f::SECONDARY_VM_EXEC_CONTROL) & !proc2::UNRESTRICTED_GUEST;
                v.write(f::SECONDARY_VM_EXEC_CONTROL, p2).unwrap();
            }
            v.write(f::GUEST_CR0, cr0).unwrap();
            v.write(f::VM_ENTRY_INTR_INFO, gp(ec)).unwrap();
            let r = check_controls(&v, &offer_ept(), &env());
            assert_eq!(r.is_ok(), ok, "{cr0:#x} ug={ug} ec={ec}: {r:?}");
        }
    }

    #[test]
    fn perf_mask_agrees_with_the_host_policy() {
        use crate::hv::host_policy::perf_global_ctrl_valid;
        for (eax, edx) in [
            (0x0830_0804, 0x603),
            (0x0830_2004, 0x1f),
            (0, 0),
            (0xff00, 0),
        ] {
            let m = perf_global_mask(eax, edx);
            for bit in 0..64 {
                assert_eq!(
                    m & (1 << bit) != 0,
                    perf_global_ctrl_valid(1 << bit, eax, edx),
                    "{eax:#x} {bit}"
                );
            }
        }
        assert_eq!(perf_global_mask(0x0830_0804, 0x603), 0x7_0000_00ff);
    }

    #[test]
    fn pat_and_canonical_helpers() {
        assert!(pat_valid(0x0007_0406_0007_0406));
        for t in 0..=255u64 {
            assert_eq!(
                pat_valid(t << 56),
                matches!(t, 0 | 1 | 4 | 5 | 6 | 7),
                "{t}"
            );
        }
        assert!(canonical(0x0000_7fff_ffff_ffff, 48));
        assert!(!canonical(0x0000_8000_0000_0000, 48));
        assert!(canonical(0x0000_8000_0000_0000, 57));
        assert!(msr_area_ok(0, 0, 39));
        assert!(!msr_area_ok(u64::MAX - 15, 2, 64));
    }
}
