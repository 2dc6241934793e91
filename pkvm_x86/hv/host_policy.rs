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
//!   control-register bits the host owns and how a CR4 write is checked
//!   (every architectural rule); [`host_cr4`]: root mode's own CR4.
//! * [`MSR_WRITE_ALLOWED`], [`MSR_INTERCEPTS`], [`msr_write`], [`msr_read`]:
//!   MSR writes are default-deny; which MSRs the host writes directly, and
//!   what root mode does with each write that exits (perform, check,
//!   shadow, ignore, refuse with #GP).
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
    /// RDMSR that exited (an MSR of [`MSR_READ_INTERCEPTED`] or outside the
    /// bitmap's ranges): answered as [`msr_read`] says, #GP if the CPU
    /// refuses it.
    Rdmsr,
    /// WRMSR that exited (every MSR but [`MSR_WRITE_ALLOWED`]): handled as
    /// [`msr_write`] decides.
    Wrmsr,
    /// XSETBV (always exits in VMX non-root): performed, #GP if the CPU
    /// refuses it.
    Xsetbv,
    /// INVD (always exits): run as WBINVD.  Invalidating without writing
    /// back could discard dirty lines of memory the host does not own
    /// (root mode's, a guest's); WBINVD invalidates too, after the write
    /// back, so the host loses nothing it could rely on.
    InvdAsWbinvd,
    /// A VMX instruction of the host (VMCLEAR..=VMXON, INVEPT, INVVPID):
    /// emulated with the SDM's semantics by nested VMX
    /// (`crate::hv::vmx::nested::vmx_op`, applied by `crate::hyp::nested`).
    VmxInstruction,
    /// Refused with #UD, as on a CPU without the feature: VMFUNC (VM
    /// functions are not offered, see `crate::hv::vmx::nested::offer`) and
    /// GETSEC (SMX), which pkvm does not emulate.
    Undefined,
    /// EPT violation: the host touched memory it does not own; a #PF is
    /// injected.
    ProtectedMemory,
    /// An NMI arrived while the host ran (NMI exiting; the exception
    /// bitmap is empty, so basic reason 0 is only ever an NMI): a
    /// shootdown NMI of the hypervisor ends in root mode, any other is
    /// re-injected into the host as a virtual NMI.  NMI exiting with
    /// virtual NMIs is what lets a shootdown reach a CPU whatever the host
    /// does: without it the NMI lands in the host's IDT, and without
    /// virtual NMIs a host that stays in its NMI handler keeps physical
    /// NMIs blocked and would stall every shootdown.
    Nmi,
    /// NMI or interrupt window: nothing to do (pending NMIs, and an
    /// external interrupt whose delivery an exit interrupted, are
    /// delivered on the way back).
    Nothing,
    /// Triple fault or a failed VM entry: the host cannot continue on this
    /// CPU; it is parked.
    HostDead,
    /// Anything else: not enabled by [`host_controls`], so a hypervisor
    /// bug; counted and answered with #UD.
    Unexpected,
}

/// Basic exit reason 7: interrupt window (enabled only while an
/// interrupted external interrupt waits to be re-delivered).
pub const INTERRUPT_WINDOW: u16 = 7;
/// Primary processor-based control bit 2: interrupt-window exiting.
pub const PROC_INTERRUPT_WINDOW: u32 = 1 << 2;
/// Primary processor-based control bit 22: NMI-window exiting (enabled
/// only while an NMI for the host waits for the host to unblock NMIs).
pub const PROC_NMI_WINDOW: u32 = 1 << 22;
/// Pin-based control bit 3: NMI exiting.
pub const PIN_NMI_EXITING: u32 = 1 << 3;
/// Pin-based control bit 5: virtual NMIs.
pub const PIN_VIRTUAL_NMIS: u32 = 1 << 5;

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
        reason::VMCLEAR..=reason::VMXON | reason::INVEPT | reason::INVVPID => {
            Action::VmxInstruction
        }
        reason::VMFUNC | reason::GETSEC => Action::Undefined,
        reason::EPT_VIOLATION => Action::ProtectedMemory,
        reason::EXCEPTION_NMI => Action::Nmi,
        reason::NMI_WINDOW | INTERRUPT_WINDOW => Action::Nothing,
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
/// * Leaf 1: the CPU's answer, ECX.VMX (bit 5) included: the host gets
///   VMX as pkvm offers it (nested VMX, `crate::hv::vmx::nested::offer`;
///   the capability MSRs it reads are the offered view).
/// * Leaf 0x4000_0000 carries the signature and the highest hypervisor
///   leaf, 0x4000_0001 the ABI version, the rest of 0x4000_00xx reads as 0.
/// * Everything else is the CPU's own answer.
pub const fn cpuid_filter(leaf: u32, native: [u32; 4]) -> [u32; 4] {
    match leaf {
        1 => [native[0], native[1], native[2] | CPUID_1_ECX_VMX, native[3]],
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

/// CR4 bits by name (SDM Vol. 3A, "Control Registers").
pub mod cr4 {
    /// Virtual-8086 mode extensions.
    pub const VME: u64 = 1 << 0;
    /// Protected-mode virtual interrupts.
    pub const PVI: u64 = 1 << 1;
    /// Time-stamp disable.
    pub const TSD: u64 = 1 << 2;
    /// Debugging extensions.
    pub const DE: u64 = 1 << 3;
    /// Page-size extensions.
    pub const PSE: u64 = 1 << 4;
    /// Physical-address extension.
    pub const PAE: u64 = 1 << 5;
    /// Machine-check enable.
    pub const MCE: u64 = 1 << 6;
    /// Page global enable.
    pub const PGE: u64 = 1 << 7;
    /// Performance-monitoring counter enable.
    pub const PCE: u64 = 1 << 8;
    /// OS support for FXSAVE/FXRSTOR.
    pub const OSFXSR: u64 = 1 << 9;
    /// OS support for unmasked SIMD exceptions.
    pub const OSXMMEXCPT: u64 = 1 << 10;
    /// User-mode instruction prevention.
    pub const UMIP: u64 = 1 << 11;
    /// 57-bit linear addresses.
    pub const LA57: u64 = 1 << 12;
    /// VMX enable.
    pub const VMXE: u64 = 1 << 13;
    /// SMX enable.
    pub const SMXE: u64 = 1 << 14;
    /// FSGSBASE enable.
    pub const FSGSBASE: u64 = 1 << 16;
    /// PCID enable.
    pub const PCIDE: u64 = 1 << 17;
    /// XSAVE and processor extended states enable.
    pub const OSXSAVE: u64 = 1 << 18;
    /// Key Locker enable.
    pub const KL: u64 = 1 << 19;
    /// SMEP enable.
    pub const SMEP: u64 = 1 << 20;
    /// SMAP enable.
    pub const SMAP: u64 = 1 << 21;
    /// Protection keys for user pages.
    pub const PKE: u64 = 1 << 22;
    /// Control-flow enforcement.
    pub const CET: u64 = 1 << 23;
    /// Protection keys for supervisor pages.
    pub const PKS: u64 = 1 << 24;
    /// User interrupts enable.
    pub const UINTR: u64 = 1 << 25;
    /// Supervisor linear-address masking.
    pub const LAM_SUP: u64 = 1 << 28;
    /// Flexible return and event delivery.
    pub const FRED: u64 = 1 << 32;
}

/// CR0.WP.
pub const CR0_WP: u64 = 1 << 16;

/// CPUID words the CR4 rules depend on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Cr4Cpuid {
    /// Leaf 1 ECX.
    pub l1_ecx: u32,
    /// Leaf 1 EDX.
    pub l1_edx: u32,
    /// Leaf 7.0 EBX.
    pub l7_ebx: u32,
    /// Leaf 7.0 ECX.
    pub l7_ecx: u32,
    /// Leaf 7.0 EDX.
    pub l7_edx: u32,
    /// Leaf 7.1 EAX.
    pub l7_1_eax: u32,
}

/// The CR4 bits the CPU supports according to its CPUID (every other bit
/// is reserved: setting it #GPs).  VMXE counts as supported although
/// [`cpuid_filter`] hides VMX from the host: the host's writes to it are
/// shadowed, and Linux keeps working as before the launch.
pub const fn cr4_supported(c: Cr4Cpuid) -> u64 {
    const fn bit(w: u32, b: u32, f: u64) -> u64 {
        if w & (1 << b) != 0 {
            f
        } else {
            0
        }
    }
    use cr4::*;
    PCE | VMXE
        | bit(c.l1_edx, 1, VME | PVI)
        | bit(c.l1_edx, 4, TSD)
        | bit(c.l1_edx, 2, DE)
        | bit(c.l1_edx, 3, PSE)
        | bit(c.l1_edx, 6, PAE)
        | bit(c.l1_edx, 7, MCE)
        | bit(c.l1_edx, 13, PGE)
        | bit(c.l1_edx, 24, OSFXSR)
        | bit(c.l1_edx, 25, OSXMMEXCPT)
        | bit(c.l1_ecx, 6, SMXE)
        | bit(c.l1_ecx, 17, PCIDE)
        | bit(c.l1_ecx, 26, OSXSAVE)
        | bit(c.l7_ebx, 0, FSGSBASE)
        | bit(c.l7_ebx, 7, SMEP)
        | bit(c.l7_ebx, 20, SMAP)
        | bit(c.l7_ecx, 2, UMIP)
        | bit(c.l7_ecx, 3, PKE)
        | bit(c.l7_ecx, 7, CET)
        | bit(c.l7_edx, 20, CET)
        | bit(c.l7_ecx, 16, LA57)
        | bit(c.l7_ecx, 23, KL)
        | bit(c.l7_ecx, 31, PKS)
        | bit(c.l7_edx, 5, UINTR)
        | bit(c.l7_1_eax, 17, FRED)
        | bit(c.l7_1_eax, 26, LAM_SUP)
}

/// The state a host CR4 write is checked against.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Cr4Env {
    /// The real CR4 (GUEST_CR4: VMXE always set).
    pub real: u64,
    /// The host's CR0.
    pub cr0: u64,
    /// The host's CR3.
    pub cr3: u64,
    /// The host runs in IA-32e mode (EFER.LMA).
    pub lma: bool,
    /// [`cr4_supported`] of this CPU.
    pub supported: u64,
    /// IA32_VMX_CR4_FIXED0: bits that must be 1 in VMX operation.
    pub fixed0: u64,
    /// IA32_VMX_CR4_FIXED1: bits that may be 1 in VMX operation.
    pub fixed1: u64,
    /// The host itself is in VMX operation (it executed VMXON, nested
    /// VMX): clearing VMXE in its view is #GP, as on the CPU.
    pub host_in_vmx: bool,
}

/// A host CR4 write pkvm performs: the values for GUEST_CR4 and the read
/// shadow, and whether the change invalidates TLB entries (SDM Vol. 3A,
/// "Invalidation of TLBs and Paging-Structure Caches": MOV to CR4 that
/// changes PGE, PAE, PSE, PCIDE, SMEP, SMAP, PKE, LA57 or LAM_SUP) and the
/// host's translations must be flushed, as the real MOV would have done.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cr4Write {
    /// GUEST_CR4 (VMXE set).
    pub real: u64,
    /// CR4 read shadow: what the host wrote.
    pub shadow: u64,
    /// Flush the host's TLB entries.
    pub flush: bool,
}

/// Bits whose change flushes the TLB.
const CR4_FLUSH_BITS: u64 = cr4::PGE
    | cr4::PAE
    | cr4::PSE
    | cr4::PCIDE
    | cr4::SMEP
    | cr4::SMAP
    | cr4::PKE
    | cr4::LA57
    | cr4::LAM_SUP;

/// Checks a host MOV to CR4 (only writes that change VMXE against the read
/// shadow exit, see [`CR4_GUEST_HOST_MASK`]) against every architectural
/// rule of MOV to CR4 in 64-bit mode (SDM Vol. 2B, MOV—Move to/from
/// Control Registers, and Vol. 3A "CR4"), as the CPU would have checked
/// it had the write not exited; `None` means #GP, as on a CPU without
/// pkvm:
///
/// * a bit the CPU does not support (by CPUID) or that is reserved;
/// * PAE cleared in IA-32e mode; LA57 changed in IA-32e mode;
/// * PCIDE set while CR3[11:0] is not 0 or outside IA-32e mode;
/// * CET set while CR0.WP is 0;
/// * FRED or LAM_SUP set outside IA-32e mode;
/// * VMXE cleared while the host is in VMX operation (nested VMX);
///
/// and then against VMX operation's fixed bits (with VMXE forced on): a
/// value the CPU cannot run in VMX non-root operation is refused with #GP
/// instead of failing the next VM entry (which would park the CPU).
pub const fn cr4_write(new: u64, env: Cr4Env) -> Option<Cr4Write> {
    use cr4::*;
    let old = env.real;
    if new & !env.supported != 0 {
        return None;
    }
    if env.lma && (new & PAE == 0 || (new ^ old) & LA57 != 0) {
        return None;
    }
    if new & PCIDE != 0 && old & PCIDE == 0 && (env.cr3 & 0xfff != 0 || !env.lma) {
        return None;
    }
    if new & CET != 0 && env.cr0 & CR0_WP == 0 {
        return None;
    }
    if !env.lma && new & (FRED | LAM_SUP) != 0 {
        return None;
    }
    if env.host_in_vmx && new & VMXE == 0 {
        return None;
    }
    let real = new | VMXE;
    if (real & env.fixed0) != env.fixed0 || (real & !env.fixed1) != 0 {
        return None;
    }
    Some(Cr4Write {
        real,
        shadow: new,
        flush: (real ^ old) & CR4_FLUSH_BITS != 0,
    })
}

/// CR4 bits root mode keeps from the CPU's CR4 at launch ([`host_cr4`]):
/// what 64-bit paging, SSE/XSAVE (root mode runs XSETBV for the host) and
/// machine checks need, plus the protections SMEP, SMAP and UMIP and
/// global pages.  Everything else is left out on purpose: CET and PKS
/// (the host's PKRS and CET MSRs pass through, so they must mean nothing
/// in root mode), PKE, FRED (root mode delivers events through its own
/// IDT), LAM_SUP, KL, UINTR, FSGSBASE, PCIDE, DE, TSD, PCE, SMXE, VME/PVI,
/// LA57 (root mode's page table has 4 levels).
pub const HOST_CR4_ALLOWED: u64 = cr4::PAE
    | cr4::MCE
    | cr4::PGE
    | cr4::OSFXSR
    | cr4::OSXMMEXCPT
    | cr4::UMIP
    | cr4::OSXSAVE
    | cr4::SMEP
    | cr4::SMAP;

/// HOST_CR4 from the CPU's CR4 at launch: its [`HOST_CR4_ALLOWED`] bits,
/// with PAE (64-bit host) and VMXE (VMX operation) forced on.
pub const fn host_cr4(cpu_cr4: u64) -> u64 {
    (cpu_cr4 & HOST_CR4_ALLOWED) | cr4::PAE | CR4_VMXE
}

// ---------------------------------------------------------------------------
// MSRs
//
// Default-deny: every WRMSR of the host exits (its bit is set in the MSR
// bitmap), except those of [`MSR_WRITE_ALLOWED`]; the exit handler asks
// [`msr_write`] what to do with each one that exits, and an MSR that
// function does not name is refused with #GP.  Reads pass through, except
// those of [`MSR_READ_INTERCEPTED`] (the shadowed MTRRs): a read cannot
// change anything root mode depends on.  MSRs outside the bitmap's two
// ranges always exit, for reads and writes alike; their reads are
// performed, their writes follow [`msr_write`] like any other.

/// MSR numbers the policy names.
pub mod msr {
    /// IA32_TIME_STAMP_COUNTER.
    pub const TSC: u32 = 0x10;
    /// IA32_APIC_BASE.
    pub const APIC_BASE: u32 = 0x1b;
    /// MSR_TEST_CTRL (split-lock detection).
    pub const TEST_CTRL: u32 = 0x33;
    /// IA32_FEATURE_CONTROL.
    pub const FEATURE_CONTROL: u32 = 0x3a;
    /// IA32_TSC_ADJUST.
    pub const TSC_ADJUST: u32 = 0x3b;
    /// IA32_SPEC_CTRL.
    pub const SPEC_CTRL: u32 = 0x48;
    /// IA32_PRED_CMD.
    pub const PRED_CMD: u32 = 0x49;
    /// IA32_BIOS_UPDT_TRIG (microcode update trigger).
    pub const BIOS_UPDT_TRIG: u32 = 0x79;
    /// IA32_BIOS_SIGN_ID (microcode revision).
    pub const BIOS_SIGN_ID: u32 = 0x8b;
    /// IA32_SMM_MONITOR_CTL.
    pub const SMM_MONITOR_CTL: u32 = 0x9b;
    /// IA32_FLUSH_CMD.
    pub const FLUSH_CMD: u32 = 0x10b;
    /// IA32_SYSENTER_CS (ESP and EIP follow).
    pub const SYSENTER_CS: u32 = 0x174;
    /// IA32_SYSENTER_EIP.
    pub const SYSENTER_EIP: u32 = 0x176;
    /// IA32_MISC_ENABLE.
    pub const MISC_ENABLE: u32 = 0x1a0;
    /// IA32_XFD.
    pub const XFD: u32 = 0x1c4;
    /// IA32_XFD_ERR.
    pub const XFD_ERR: u32 = 0x1c5;
    /// IA32_DEBUGCTL.
    pub const DEBUGCTL: u32 = 0x1d9;
    /// IA32_MTRR_PHYSBASE0, the first variable-range MTRR.
    pub const MTRR_PHYS_FIRST: u32 = 0x200;
    /// IA32_MTRR_PHYSMASK15, the last variable-range MTRR the SDM defines.
    pub const MTRR_PHYS_LAST: u32 = 0x21f;
    /// IA32_MTRR_FIX64K_00000.
    pub const MTRR_FIX64K: u32 = 0x250;
    /// IA32_MTRR_FIX16K_80000.
    pub const MTRR_FIX16K_80000: u32 = 0x258;
    /// IA32_MTRR_FIX16K_A0000.
    pub const MTRR_FIX16K_A0000: u32 = 0x259;
    /// IA32_MTRR_FIX4K_C0000, the first 4K fixed-range MTRR.
    pub const MTRR_FIX4K_FIRST: u32 = 0x268;
    /// IA32_MTRR_FIX4K_F8000, the last.
    pub const MTRR_FIX4K_LAST: u32 = 0x26f;
    /// IA32_PAT.
    pub const PAT: u32 = 0x277;
    /// IA32_MTRR_DEF_TYPE.
    pub const MTRR_DEF_TYPE: u32 = 0x2ff;
    /// IA32_PERF_GLOBAL_CTRL.
    pub const PERF_GLOBAL_CTRL: u32 = 0x38f;
    /// IA32_PEBS_ENABLE.
    pub const PEBS_ENABLE: u32 = 0x3f1;
    /// IA32_VMX_BASIC, the first VMX capability MSR.
    pub const VMX_BASIC: u32 = 0x480;
    /// IA32_VMX_EXIT_CTLS2 (0x493), the last VMX capability MSR pkvm
    /// knows (0x492 is IA32_VMX_PROCBASED_CTLS3).
    pub const VMX_CAP_LAST: u32 = 0x493;
    /// IA32_RTIT_CTL (Intel PT).
    pub const RTIT_CTL: u32 = 0x570;
    /// IA32_DS_AREA.
    pub const DS_AREA: u32 = 0x600;
    /// IA32_TSC_DEADLINE.
    pub const TSC_DEADLINE: u32 = 0x6e0;
    /// IA32_PKRS.
    pub const PKRS: u32 = 0x6e1;
    /// The x2APIC registers.
    pub const X2APIC_FIRST: u32 = 0x800;
    /// The last x2APIC register.
    pub const X2APIC_LAST: u32 = 0x8ff;
    /// IA32_XSS.
    pub const XSS: u32 = 0xda0;
    /// IA32_LBR_CTL (architectural LBR).
    pub const LBR_CTL: u32 = 0x14ce;
    /// IA32_EFER.
    pub const EFER: u32 = 0xc000_0080;
    /// IA32_FMASK, the last of the SYSCALL MSRs (STAR, LSTAR, CSTAR, FMASK).
    pub const FMASK: u32 = 0xc000_0084;
    /// IA32_FS_BASE.
    pub const FS_BASE: u32 = 0xc000_0100;
    /// IA32_TSC_AUX (after FS_BASE, GS_BASE, KERNEL_GS_BASE).
    pub const TSC_AUX: u32 = 0xc000_0103;
}

/// `IA32_FEATURE_CONTROL` (kept under its old name for the set-up code).
pub const MSR_IA32_FEATURE_CONTROL: u32 = msr::FEATURE_CONTROL;
/// `IA32_VMX_BASIC`, the first VMX capability MSR.
pub const MSR_IA32_VMX_BASIC: u32 = msr::VMX_BASIC;
/// The last VMX capability MSR pkvm knows.
pub const MSR_IA32_VMX_CAP_LAST: u32 = msr::VMX_CAP_LAST;

/// The allow-list: MSRs the host writes straight to the CPU, without an
/// exit (sorted, disjoint, inclusive ranges).  Each is on a hot path of
/// Linux (context switch, system call, timer, IPI, speculation control)
/// and none can reach root mode:
///
/// * `SPEC_CTRL`, `PRED_CMD`, `FLUSH_CMD`: speculation controls and
///   barriers; they only make the CPU safer or slower.
/// * `SYSENTER_CS/ESP/EIP`, `PAT`, `DEBUGCTL`, `EFER`: switched by the VMCS
///   on every exit (root mode loads its own SYSENTER, PAT and EFER values;
///   the CPU clears `DEBUGCTL` on exit, so no BTS or LBR runs in root
///   mode).  An `EFER` the CPU cannot enter fails the entry: the host
///   kills its own CPU, which it could do natively.
/// * `XFD`, `XFD_ERR`: the host's own extended-state first-use traps; root
///   mode never uses AMX state.
/// * `TSC_DEADLINE` and the x2APIC registers (ICR, EOI, TPR, timer, ...):
///   the local APIC is not memory; IPIs and INIT/SIPI reach other CPUs as
///   natively (INIT exits in VMX non-root operation regardless).
/// * `STAR`, `LSTAR`, `CSTAR`, `FMASK`, `FS_BASE`, `GS_BASE`,
///   `KERNEL_GS_BASE`, `TSC_AUX`: system-call entry and per-thread state;
///   root mode has its own FS/GS bases in the VMCS and never executes
///   SYSCALL or RDTSCP.
pub const MSR_WRITE_ALLOWED: &[(u32, u32)] = &[
    (msr::SPEC_CTRL, msr::PRED_CMD),
    (msr::FLUSH_CMD, msr::FLUSH_CMD),
    (msr::SYSENTER_CS, msr::SYSENTER_EIP),
    (msr::XFD, msr::XFD_ERR),
    (msr::DEBUGCTL, msr::DEBUGCTL),
    (msr::PAT, msr::PAT),
    (msr::TSC_DEADLINE, msr::TSC_DEADLINE),
    (msr::X2APIC_FIRST, msr::X2APIC_LAST),
    (msr::EFER, msr::FMASK),
    (msr::FS_BASE, msr::TSC_AUX),
];

/// MSRs whose reads exit: `IA32_FEATURE_CONTROL` and the VMX capability
/// MSRs, answered from the VMX view pkvm offers (nested VMX,
/// `crate::hv::vmx::nested::offer`), and the MTRRs, answered from the
/// per-CPU shadow (see [`MtrrShadow`]).  Every other read passes through:
/// reading an MSR changes nothing root mode depends on, and the host could
/// learn the values natively.
pub const MSR_READ_INTERCEPTED: &[(u32, u32)] = &[
    (msr::FEATURE_CONTROL, msr::FEATURE_CONTROL),
    (msr::MTRR_PHYS_FIRST, msr::MTRR_PHYS_LAST),
    (msr::MTRR_FIX64K, msr::MTRR_FIX64K),
    (msr::MTRR_FIX16K_80000, msr::MTRR_FIX16K_A0000),
    (msr::MTRR_FIX4K_FIRST, msr::MTRR_FIX4K_LAST),
    (msr::MTRR_DEF_TYPE, msr::MTRR_DEF_TYPE),
    (msr::VMX_BASIC, msr::VMX_CAP_LAST),
];

/// The two ranges the MSR bitmap covers.
const BITMAP_RANGES: [(u32, u32); 2] = [
    (0, crate::hv::vmx::msr_bitmap::LOW_MSR_LAST),
    (
        crate::hv::vmx::msr_bitmap::HIGH_MSR_FIRST,
        crate::hv::vmx::msr_bitmap::HIGH_MSR_LAST,
    ),
];

/// Number of write rules: the gaps of [`MSR_WRITE_ALLOWED`] in each
/// bitmap range.
const fn count_write_rules() -> usize {
    let mut n = 0;
    let mut r = 0;
    while r < BITMAP_RANGES.len() {
        let (lo, hi) = BITMAP_RANGES[r];
        let mut next = lo;
        let mut i = 0;
        while i < MSR_WRITE_ALLOWED.len() {
            let (a, b) = MSR_WRITE_ALLOWED[i];
            if a >= lo && b <= hi {
                if a > next {
                    n += 1;
                }
                next = b + 1;
            }
            i += 1;
        }
        if next <= hi {
            n += 1;
        }
        r += 1;
    }
    n
}

const N_WRITE_RULES: usize = count_write_rules();
const N_RULES: usize = N_WRITE_RULES + MSR_READ_INTERCEPTED.len();

/// Builds [`MSR_INTERCEPTS`]: write interception of everything in the
/// bitmap's ranges but [`MSR_WRITE_ALLOWED`], then read interception of
/// [`MSR_READ_INTERCEPTED`].
const fn build_rules() -> [MsrRule; N_RULES] {
    let mut out = [MsrRule::one(0, Access::Write); N_RULES];
    let mut n = 0;
    let mut r = 0;
    while r < BITMAP_RANGES.len() {
        let (lo, hi) = BITMAP_RANGES[r];
        let mut next = lo;
        let mut i = 0;
        while i < MSR_WRITE_ALLOWED.len() {
            let (a, b) = MSR_WRITE_ALLOWED[i];
            if a >= lo && b <= hi {
                if a > next {
                    out[n] = MsrRule::range(next, a - 1, Access::Write);
                    n += 1;
                }
                next = b + 1;
            }
            i += 1;
        }
        if next <= hi {
            out[n] = MsrRule::range(next, hi, Access::Write);
            n += 1;
        }
        r += 1;
    }
    let mut i = 0;
    while i < MSR_READ_INTERCEPTED.len() {
        let (a, b) = MSR_READ_INTERCEPTED[i];
        out[n] = MsrRule::range(a, b, Access::Read);
        n += 1;
        i += 1;
    }
    out
}

const RULES: [MsrRule; N_RULES] = build_rules();

/// The MSR bitmap of the deprivileged host, as rules: writes exit for every
/// MSR but [`MSR_WRITE_ALLOWED`], reads for [`MSR_READ_INTERCEPTED`].
pub const MSR_INTERCEPTS: &[MsrRule] = &RULES;

/// Whether a WRMSR of `msr` reaches the CPU without an exit.
pub fn msr_write_allowed(msr: u32) -> bool {
    MSR_WRITE_ALLOWED
        .iter()
        .any(|&(a, b)| (a..=b).contains(&msr))
}

/// `IA32_APIC_BASE` bits 51:12, where the APIC page lives.
pub const APIC_BASE_ADDR: u64 = 0x000f_ffff_ffff_f000;

/// `IA32_MISC_ENABLE` bits the host may change: fast strings (0),
/// automatic thermal control (3), Enhanced SpeedStep (16), MONITOR/MWAIT
/// (18), limit CPUID maxval (22), xTPR disable (23), turbo disable (38).
/// Linux toggles these at boot and on CPU bring-up; they only change
/// performance or what the host's own CPUID says.  Everything else is
/// refused, in particular XD disable (34), which would make the NX bit of
/// root mode's page table reserved and root mode fault on its own tables.
pub const MISC_ENABLE_HOST_BITS: u64 =
    1 << 0 | 1 << 3 | 1 << 16 | 1 << 18 | 1 << 22 | 1 << 23 | 1 << 38;

/// `IA32_RTIT_CTL.TraceEn`.
pub const RTIT_TRACE_EN: u64 = 1;

/// `IA32_XSS` components the host may not enable: Intel PT (8), CET
/// supervisor state (12) and architectural LBR (15).  XRSTORS loads these
/// components' MSRs (RTIT_CTL, the output base and ToPA, which are
/// physical addresses that bypass the EPT; PL0-2_SSP; LBR_CTL) without
/// consulting the MSR bitmap, so the host must not get them into its
/// XSS; the XSS-exiting bitmap ([`XSS_EXIT_BITMAP`]) makes XSAVES/XRSTORS
/// with them exit as a second line.
pub const XSS_REFUSED: u64 = 1 << 8 | 1 << 12 | 1 << 15;

/// The XSS-exiting bitmap of the host's VMCS: [`XSS_REFUSED`].
pub const XSS_EXIT_BITMAP: u64 = XSS_REFUSED;

/// What root mode does with a WRMSR of the host that exited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MsrWrite {
    /// Written to the CPU for the host (#GP if the CPU refuses it).
    Perform,
    /// Refused: #GP, as a CPU that does not allow the value would.
    Refuse,
    /// Written to the per-CPU shadow, slot `n` of [`MtrrShadow`], never to
    /// the CPU.
    Shadow(usize),
    /// Dropped: the WRMSR completes without effect.
    Ignore,
    /// Written to the guest `IA32_PERF_GLOBAL_CTRL` field of the VMCS,
    /// which the CPU loads at the next entry (root mode runs with 0).
    PerfGlobalCtrl,
}

/// What a WRMSR decision needs besides the MSR and the value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct MsrContext {
    /// The MSR's current value on the CPU, if it could be read.
    pub current: Option<u64>,
    /// The VMCS switches `IA32_PERF_GLOBAL_CTRL` (0 in root mode, the
    /// host's value loaded on entry): see [`host_controls`].
    pub perf_global_switched: bool,
}

/// The per-MSR decision for a host WRMSR that exited (the allow-list
/// ones never exit).  Each decision, and why:
///
/// * `FEATURE_CONTROL`, the VMX capability MSRs: **refused**.  The former
///   is locked (a write #GPs natively too), the latter are read-only.
/// * `SMM_MONITOR_CTL`: **refused**; activating the dual-monitor
///   treatment of SMIs would hand SMM a path into VMX root mode.
/// * `BIOS_UPDT_TRIG` (microcode): **ignored**.  The SDM says updates must
///   not be loaded in VMX non-root operation; dropping the write lets
///   Linux see the revision unchanged ("update failed") instead of taking
///   an unchecked #GP with a backtrace.
/// * `APIC_BASE`: **checked**: performed only if the APIC page stays where
///   it is (enable and x2APIC bits may change); moving it would place the
///   APIC over memory the host does not own, root mode's or a guest's.
/// * `MISC_ENABLE`: **checked**: only [`MISC_ENABLE_HOST_BITS`] may change.
/// * `RTIT_CTL`: **checked**: refused with TraceEn set (Intel PT writes its
///   output to physical addresses, bypassing the EPT, and keeps tracing in
///   root mode); other PT MSRs are performed, harmless while TraceEn is 0.
/// * `XSS`: **checked**: refused with any [`XSS_REFUSED`] bit.
/// * `PERF_GLOBAL_CTRL`: **emulated**: with the VMCS switching it
///   ([`MsrWrite::PerfGlobalCtrl`]), so no counter runs in root mode;
///   otherwise only 0 is accepted.
/// * `PEBS_ENABLE`, `DS_AREA`: performed when `PERF_GLOBAL_CTRL` is 0 in
///   root mode (no counter counts there, so no PEBS record or BTS entry is
///   written through root mode's CR3 — DEBUGCTL is cleared on exit);
///   otherwise only 0 is accepted.
/// * `LBR_CTL` (architectural LBR): only 0 (LBR is not offered to the
///   host; the exit control that clears it is set where the CPU has it).
/// * The MTRRs: **shadowed** ([`MsrWrite::Shadow`]): Linux rewrites them on
///   CPU bring-up and resume; the writes land in a per-CPU shadow that
///   reads return, so root mode's memory types never change.
/// * `PKRS`, the CET MSRs: performed; root mode runs with CR4.PKS and
///   CR4.CET clear ([`host_cr4`]), so they cannot affect it.
/// * Performed (they cannot reach root mode or memory): TSC, TSC_ADJUST,
///   BIOS_SIGN_ID (Linux writes 0 before reading the revision),
///   TEST_CTRL, UMWAIT_CONTROL, MPERF/APERF, TSX_CTRL, MCU_OPT_CTRL,
///   TSX_FORCE_ABORT, MISC_FEATURES_ENABLES, the machine-check banks and
///   MCG registers, the thermal, power and HWP MSRs, the performance
///   counters and event selects, the LBR stack, PQR_ASSOC.
/// * **Everything else: refused** (#GP).
pub const fn msr_write(m: u32, value: u64, ctx: MsrContext) -> MsrWrite {
    use MsrWrite::*;
    let only_zero = if value == 0 { Perform } else { Refuse };
    if let Some(slot) = mtrr_slot(m) {
        return Shadow(slot);
    }
    match m {
        msr::FEATURE_CONTROL | msr::VMX_BASIC..=msr::VMX_CAP_LAST | msr::SMM_MONITOR_CTL => Refuse,
        msr::BIOS_UPDT_TRIG => Ignore,
        msr::APIC_BASE => match ctx.current {
            Some(c) if (c ^ value) & APIC_BASE_ADDR == 0 => Perform,
            _ => Refuse,
        },
        msr::MISC_ENABLE => match ctx.current {
            Some(c) if (c ^ value) & !MISC_ENABLE_HOST_BITS == 0 => Perform,
            _ => Refuse,
        },
        msr::RTIT_CTL => {
            if value & RTIT_TRACE_EN != 0 {
                Refuse
            } else {
                Perform
            }
        }
        msr::XSS => {
            if value & XSS_REFUSED != 0 {
                Refuse
            } else {
                Perform
            }
        }
        msr::PERF_GLOBAL_CTRL => {
            if ctx.perf_global_switched {
                PerfGlobalCtrl
            } else {
                only_zero
            }
        }
        msr::PEBS_ENABLE | msr::DS_AREA => {
            if ctx.perf_global_switched {
                Perform
            } else {
                only_zero
            }
        }
        msr::LBR_CTL => only_zero,
        msr::PKRS
        // CET: U_CET, S_CET, PL0..3_SSP, INTERRUPT_SSP_TABLE_ADDR.
        | 0x6a0
        | 0x6a2
        | 0x6a4..=0x6a8
        | msr::TSC
        | msr::TSC_ADJUST
        | msr::BIOS_SIGN_ID
        | msr::TEST_CTRL
        // UMWAIT_CONTROL; MPERF, APERF.
        | 0xe1
        | 0xe7
        | 0xe8
        // TSX_FORCE_ABORT, TSX_CTRL, MCU_OPT_CTRL, MISC_FEATURES_ENABLES.
        | 0x10f
        | 0x122
        | 0x123
        | 0x140
        // PMC0-7, PERFEVTSEL0-7, fixed counters and their control, global
        // status / overflow control, full-width PMCs.
        | 0xc1..=0xc8
        | 0x186..=0x18d
        | 0x309..=0x30b
        | 0x38d
        | 0x38e
        | 0x390
        | 0x391
        | 0x4c1..=0x4c8
        // MCG_STATUS, MCG_CTL, MCi_CTL2, MCi banks.
        | 0x17a
        | 0x17b
        | 0x280..=0x29f
        | 0x400..=0x47f
        // PERF_CTL, CLOCK_MODULATION, THERM_INTERRUPT, THERM_STATUS,
        // ENERGY_PERF_BIAS, PACKAGE_THERM_STATUS/INTERRUPT, POWER_CTL, HWP.
        | 0x199..=0x19c
        | 0x1b0..=0x1b2
        | 0x1fc
        | 0x770..=0x777
        // LBR_SELECT, LBR_TOS, LBR stack (FROM, TO, INFO).
        | 0x1c8
        | 0x1c9
        | 0x680..=0x69f
        | 0x6c0..=0x6df
        | 0xdc0..=0xddf
        // Intel PT other than RTIT_CTL: output base/mask, status, CR3
        // match, address ranges (inert while TraceEn is 0).
        | 0x560
        | 0x561
        | 0x571
        | 0x572
        | 0x580..=0x587
        // PQR_ASSOC (resource director).
        | 0xc8f => Perform,
        _ => Refuse,
    }
}

/// Whether `value` is a valid IA32_PERF_GLOBAL_CTRL for a CPU whose CPUID
/// leaf 0xA reports `eax` / `edx`: only the enable bits of the general
/// counters (EAX[15:8] of them, from bit 0) and of the fixed counters
/// (EDX[4:0], from bit 32).  A value with other bits would fail the VM
/// entry that loads it, so it is refused with #GP, as the CPU refuses it.
pub const fn perf_global_ctrl_valid(value: u64, eax: u32, edx: u32) -> bool {
    let gp = (eax >> 8) & 0xff;
    let fixed = edx & 0x1f;
    let gp_mask = if gp >= 32 {
        0xffff_ffff
    } else {
        (1u64 << gp) - 1
    };
    let fixed_mask = ((1u64 << fixed) - 1) << 32;
    value & !(gp_mask | fixed_mask) == 0
}

/// Number of shadowed MTRRs: 32 variable-range, 11 fixed-range, DEF_TYPE.
pub const MTRR_SLOTS: usize = 44;

/// The shadow slot of MTRR `m`, or `None` if `m` is not an MTRR pkvm
/// shadows.
pub const fn mtrr_slot(m: u32) -> Option<usize> {
    match m {
        msr::MTRR_PHYS_FIRST..=msr::MTRR_PHYS_LAST => Some((m - msr::MTRR_PHYS_FIRST) as usize),
        msr::MTRR_FIX64K => Some(32),
        msr::MTRR_FIX16K_80000 => Some(33),
        msr::MTRR_FIX16K_A0000 => Some(34),
        msr::MTRR_FIX4K_FIRST..=msr::MTRR_FIX4K_LAST => {
            Some(35 + (m - msr::MTRR_FIX4K_FIRST) as usize)
        }
        msr::MTRR_DEF_TYPE => Some(43),
        _ => None,
    }
}

/// What root mode answers to a host RDMSR that exited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MsrRead {
    /// Read from the CPU (#GP if the CPU refuses it).
    Perform,
    /// Read from the shadow, slot `n` of [`MtrrShadow`].
    Shadow(usize),
    /// Answered from the offered VMX view
    /// (`crate::hv::vmx::nested::offer::read_msr`).
    VmxView,
}

/// The decision for a host RDMSR that exited: the MTRRs come from the
/// shadow, `IA32_FEATURE_CONTROL` and the VMX capability MSRs from the
/// offered VMX view, everything else from the CPU.
pub const fn msr_read(m: u32) -> MsrRead {
    if let msr::FEATURE_CONTROL | msr::VMX_BASIC..=msr::VMX_CAP_LAST = m {
        return MsrRead::VmxView;
    }
    match mtrr_slot(m) {
        Some(s) => MsrRead::Shadow(s),
        None => MsrRead::Perform,
    }
}

/// Per-CPU shadow of the MTRRs.  A slot is filled from the CPU at its
/// first access and from then on reads and writes of the host only touch
/// the shadow: the real MTRRs, which also set root mode's memory types,
/// keep the values they had at launch.  Writes are stored as they are
/// (no reserved-bit check: the host only confuses itself).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MtrrShadow {
    valid: u64,
    vals: [u64; MTRR_SLOTS],
}

impl Default for MtrrShadow {
    fn default() -> Self {
        Self::new()
    }
}

impl MtrrShadow {
    /// An empty shadow: every slot is filled from the CPU on first use.
    pub const fn new() -> Self {
        Self {
            valid: 0,
            vals: [0; MTRR_SLOTS],
        }
    }

    /// The value of `slot`, or `None` until it was filled.
    pub fn get(&self, slot: usize) -> Option<u64> {
        if slot < MTRR_SLOTS && self.valid & (1 << slot) != 0 {
            self.vals.get(slot).copied()
        } else {
            None
        }
    }

    /// Stores `v` in `slot` (out-of-range slots are ignored).
    pub fn set(&mut self, slot: usize, v: u64) {
        if let Some(x) = self.vals.get_mut(slot) {
            *x = v;
            self.valid |= 1 << slot;
        }
    }
}

// ---------------------------------------------------------------------------
// VMX controls

/// Secondary control bit 26: enable user wait and pause (UMWAIT/TPAUSE).
pub const PROC2_USER_WAIT_PAUSE: u32 = 1 << 26;
/// VM-exit control bit 2: save debug controls.
pub const EXIT_SAVE_DEBUG_CONTROLS: u32 = 1 << 2;
/// VM-entry control bit 2: load debug controls.
pub const ENTRY_LOAD_DEBUG_CONTROLS: u32 = 1 << 2;
/// VM-exit control bit 12: load IA32_PERF_GLOBAL_CTRL.
pub const EXIT_LOAD_PERF_GLOBAL_CTRL: u32 = 1 << 12;
/// VM-entry control bit 13: load IA32_PERF_GLOBAL_CTRL.
pub const ENTRY_LOAD_PERF_GLOBAL_CTRL: u32 = 1 << 13;
/// VM-exit control bit 26: clear IA32_LBR_CTL.
pub const EXIT_CLEAR_LBR_CTL: u32 = 1 << 26;

/// The five control fields, ready to write.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
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
    /// Whether IA32_PERF_GLOBAL_CTRL is switched: 0 loaded on exit (HOST
    /// field), the host's value on entry (guest field, which host writes
    /// update, see [`msr_write`]).  Both controls or neither.
    pub perf_global_switched: bool,
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
/// makes the host exit more than it must: NMI exiting with virtual NMIs (the
/// cross-CPU shootdown, see [`Action::Nmi`]), but no interrupt, HLT, I/O,
/// CR3/CR8, MOV-DR,
/// RDTSC, PAUSE or MONITOR/MWAIT exiting, no preemption timer, never
/// tertiary controls.  Bits the CPU forces to 1 stay 1 (`adjust`).
///
/// Where the CPU has them: IA32_PERF_GLOBAL_CTRL loaded on exit (0: no
/// counter, hence no PEBS record, runs in root mode) and on entry (the
/// host's value), and IA32_LBR_CTL cleared on exit (no architectural LBR
/// recording in root mode).
pub fn host_controls(caps: &VmxCaps) -> Result<HostControls, ControlsError> {
    let vpid = caps.has(Feature::Vpid);
    let perf_global_switched = caps.exit.may_be_one & EXIT_LOAD_PERF_GLOBAL_CTRL != 0
        && caps.entry.may_be_one & ENTRY_LOAD_PERF_GLOBAL_CTRL != 0;
    let perf_exit = if perf_global_switched {
        EXIT_LOAD_PERF_GLOBAL_CTRL
    } else {
        0
    };
    let perf_entry = if perf_global_switched {
        ENTRY_LOAD_PERF_GLOBAL_CTRL
    } else {
        0
    };
    // NMI exiting with virtual NMIs: the cross-CPU shootdown (see
    // `Action::Nmi`).
    let pin = caps
        .pinbased
        .adjust(PIN_NMI_EXITING | PIN_VIRTUAL_NMIS, 0)
        .map_err(ControlsError::Pin)?;
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
                | EXIT_SAVE_DEBUG_CONTROLS
                | perf_exit,
            EXIT_CLEAR_LBR_CTL,
        )
        .map_err(ControlsError::Exit)?;
    let entry = caps
        .entry
        .adjust(
            ctl::ENTRY_IA32E_GUEST
                | ctl::ENTRY_LOAD_EFER
                | ctl::ENTRY_LOAD_PAT
                | ENTRY_LOAD_DEBUG_CONTROLS
                | perf_entry,
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
        perf_global_switched,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hv::vmx::caps::tests::icelake;
    use crate::hv::vmx::caps::{AllowedCtls, VmxMsr};
    use crate::hv::vmx::msr_bitmap::{build_host_bitmap, MSR_BITMAP_SIZE};
    use std::boxed::Box;
    use std::vec;
    use std::vec::Vec;

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
        for r in (19..=27).chain([50, 53]) {
            assert_eq!(on_exit(r), Action::VmxInstruction, "{r}");
        }
        for r in [59, 11] {
            assert_eq!(on_exit(r), Action::Undefined, "{r}");
        }
        assert_eq!(on_exit(reason::EPT_VIOLATION), Action::ProtectedMemory);
        assert_eq!(on_exit(reason::NMI_WINDOW), Action::Nothing);
        assert_eq!(on_exit(reason::EXCEPTION_NMI), Action::Nmi);
        for r in [2, 33, 34, 41] {
            assert_eq!(on_exit(r), Action::HostDead, "{r}");
        }
        // Not enabled, hence unexpected: interrupts, HLT,
        // WBINVD, EPT misconfiguration, I/O, RDTSC, ...
        assert_eq!(on_exit(7), Action::Nothing);
        for r in [1, 12, 16, 30, 49, 54, reason::MAX, u16::MAX] {
            assert_eq!(on_exit(r), Action::Unexpected, "{r}");
        }
    }

    #[test]
    fn cr_masks() {
        assert_eq!(CR0_GUEST_HOST_MASK, 0);
        assert_eq!(CR4_GUEST_HOST_MASK, 1 << 13);
    }

    /// Bochs icelake-like CPUID: everything up to PKE/UMIP/FSGSBASE, no
    /// LA57, CET, PKS, KL, UINTR, FRED, LAM.
    fn icelake_cpuid() -> Cr4Cpuid {
        Cr4Cpuid {
            l1_ecx: 1 << 5 | 1 << 17 | 1 << 26,
            l1_edx: 1 << 1
                | 1 << 2
                | 1 << 3
                | 1 << 4
                | 1 << 6
                | 1 << 7
                | 1 << 13
                | 1 << 24
                | 1 << 25,
            l7_ebx: 1 << 0 | 1 << 7 | 1 << 20,
            l7_ecx: 1 << 2 | 1 << 3,
            l7_edx: 0,
            l7_1_eax: 0,
        }
    }

    const LINUX_CR4: u64 = 0x0036_06f0 | cr4::VMXE; // PCIDE, OSXSAVE, SMEP, SMAP...

    fn env() -> Cr4Env {
        Cr4Env {
            real: LINUX_CR4,
            cr0: 0x8005_0033,
            cr3: 0x1234_5000,
            lma: true,
            supported: cr4_supported(icelake_cpuid()),
            fixed0: 0x2000,
            fixed1: 0x0077_2fff,
            host_in_vmx: false,
        }
    }

    #[test]
    fn vmxe_in_the_hosts_view_follows_vmx_operation() {
        let e = env();
        // Setting VMXE in the host's view: the shadow gets it.
        let w = cr4_write(LINUX_CR4 | CR4_VMXE, e).unwrap();
        assert_eq!(w.shadow & CR4_VMXE, CR4_VMXE);
        // Clearing it outside VMX operation is fine; the real CR4 keeps it.
        let w = cr4_write(LINUX_CR4 & !CR4_VMXE, e).unwrap();
        assert_eq!((w.shadow & CR4_VMXE, w.real & CR4_VMXE), (0, CR4_VMXE));
        // In VMX operation (the host executed VMXON): #GP, as on the CPU.
        let inside = Cr4Env {
            host_in_vmx: true,
            ..e
        };
        assert_eq!(cr4_write(LINUX_CR4 & !CR4_VMXE, inside), None);
        assert!(cr4_write(LINUX_CR4 | CR4_VMXE, inside).is_some());
    }

    #[test]
    fn cr4_supported_follows_cpuid() {
        let s = cr4_supported(icelake_cpuid());
        for b in [
            cr4::PAE,
            cr4::PGE,
            cr4::PCIDE,
            cr4::OSXSAVE,
            cr4::SMEP,
            cr4::SMAP,
            cr4::PKE,
            cr4::UMIP,
            cr4::FSGSBASE,
            cr4::VMXE,
            cr4::PCE,
        ] {
            assert_ne!(s & b, 0, "{b:#x}");
        }
        for b in [
            cr4::LA57,
            cr4::SMXE,
            cr4::CET,
            cr4::PKS,
            cr4::KL,
            cr4::UINTR,
            cr4::FRED,
            cr4::LAM_SUP,
            1 << 15,
            1 << 63,
        ] {
            assert_eq!(s & b, 0, "{b:#x}");
        }
        assert_eq!(cr4_supported(Cr4Cpuid::default()), cr4::PCE | cr4::VMXE);
        let all = Cr4Cpuid {
            l1_ecx: !0,
            l1_edx: !0,
            l7_ebx: !0,
            l7_ecx: !0,
            l7_edx: !0,
            l7_1_eax: !0,
        };
        assert_eq!(cr4_supported(all), 0x1_13ff_7fff);
    }

    #[test]
    fn cr4_write_keeps_vmxe_real_and_shadows_the_host_value() {
        let host = LINUX_CR4 & !cr4::VMXE;
        assert_eq!(
            cr4_write(host, env()),
            Some(Cr4Write {
                real: LINUX_CR4,
                shadow: host,
                flush: false
            })
        );
        assert_eq!(
            cr4_write(LINUX_CR4, env()),
            Some(Cr4Write {
                real: LINUX_CR4,
                shadow: LINUX_CR4,
                flush: false
            })
        );
        // Toggling PGE flushes.
        assert!(cr4_write(host ^ cr4::PGE, env()).unwrap().flush);
    }

    #[test]
    fn cr4_write_enforces_every_architectural_rule() {
        let host = LINUX_CR4 & !cr4::VMXE;
        let e = env();
        // Reserved bits and bits CPUID does not report, each alone.
        for bit in 0..64 {
            let b = 1u64 << bit;
            let ok = e.supported & b != 0;
            let r = cr4_write(host | b, e);
            if !ok {
                assert_eq!(r, None, "bit {bit}");
            }
        }
        // PAE cleared in long mode; allowed outside it.
        assert_eq!(cr4_write(host & !cr4::PAE, e), None);
        let legacy = Cr4Env {
            lma: false,
            real: LINUX_CR4 & !cr4::PCIDE,
            ..e
        };
        assert!(cr4_write(host & !(cr4::PAE | cr4::PCIDE), legacy).is_some());
        // LA57 changes in long mode (even with CPUID support and FIXED1).
        let la57 = Cr4Env {
            supported: e.supported | cr4::LA57,
            fixed1: e.fixed1 | cr4::LA57,
            ..e
        };
        assert_eq!(cr4_write(host | cr4::LA57, la57), None);
        let la57_on = Cr4Env {
            real: LINUX_CR4 | cr4::LA57,
            ..la57
        };
        assert_eq!(cr4_write(host, la57_on), None);
        assert!(cr4_write(host | cr4::LA57, la57_on).is_some());
        // PCIDE 0 -> 1 needs CR3[11:0] == 0 and long mode.
        let nopcid = Cr4Env {
            real: LINUX_CR4 & !cr4::PCIDE,
            cr3: 0x1234_5001,
            ..e
        };
        assert_eq!(cr4_write(host, nopcid), None);
        assert!(cr4_write(
            host,
            Cr4Env {
                cr3: 0x1234_5000,
                ..nopcid
            }
        )
        .is_some());
        assert!(cr4_write(host & !cr4::PCIDE, nopcid).is_some());
        // PCIDE already set: CR3 holds a PCID, fine.
        assert!(cr4_write(
            host,
            Cr4Env {
                cr3: 0x1234_5001,
                ..e
            }
        )
        .is_some());
        // CET needs CR0.WP.
        let cet = Cr4Env {
            supported: e.supported | cr4::CET,
            fixed1: e.fixed1 | cr4::CET,
            ..e
        };
        assert!(cr4_write(host | cr4::CET, cet).is_some());
        assert_eq!(
            cr4_write(
                host | cr4::CET,
                Cr4Env {
                    cr0: e.cr0 & !CR0_WP,
                    ..cet
                }
            ),
            None
        );
        // FRED and LAM_SUP only in long mode.
        let fred = Cr4Env {
            supported: e.supported | cr4::FRED | cr4::LAM_SUP,
            fixed1: !0,
            ..e
        };
        assert!(cr4_write(host | cr4::FRED, fred).is_some());
        let fred32 = Cr4Env {
            lma: false,
            real: LINUX_CR4 & !cr4::PCIDE,
            ..fred
        };
        assert_eq!(cr4_write(host & !cr4::PCIDE | cr4::FRED, fred32), None);
        assert_eq!(cr4_write(host & !cr4::PCIDE | cr4::LAM_SUP, fred32), None);
        // VMX fixed bits: a supported bit outside FIXED1 is refused.
        let smx = Cr4Env {
            supported: e.supported | cr4::SMXE,
            ..e
        };
        assert_eq!(cr4_write(host | cr4::SMXE, smx), None);
        // A FIXED0 bit other than VMXE must stay set.
        let f0 = Cr4Env {
            fixed0: 0x2000 | cr4::PAE,
            ..e
        };
        assert!(cr4_write(host, f0).is_some());
    }

    #[test]
    fn host_cr4_is_built_from_the_allow_list() {
        let all = !0u64;
        let h = host_cr4(all);
        assert_eq!(h, HOST_CR4_ALLOWED | CR4_VMXE);
        for b in [
            cr4::CET,
            cr4::PKS,
            cr4::PKE,
            cr4::FRED,
            cr4::LAM_SUP,
            cr4::LA57,
            cr4::FSGSBASE,
            cr4::PCIDE,
            cr4::UINTR,
            cr4::KL,
        ] {
            assert_eq!(h & b, 0, "{b:#x}");
        }
        assert_eq!(host_cr4(0), cr4::PAE | CR4_VMXE);
        assert_eq!(host_cr4(LINUX_CR4), 0x0034_06e0 | CR4_VMXE);
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
            [0x806c1, 0x800, 0xffba_2223, 0x1f8b_fbff],
            "leaf 1 shows VMX (nested VMX) and changes nothing else"
        );
        assert_eq!(cpuid_filter(0x4000_0100, native), native);
    }

    #[test]
    fn msr_writes_are_default_deny() {
        let mut p = Box::new([0u8; MSR_BITMAP_SIZE]);
        let bm = build_host_bitmap(&mut p, MSR_INTERCEPTS);
        // Every MSR in the bitmap's ranges: writes exit unless allowed.
        for m in (0..=0x1fff).chain(0xc000_0000..=0xc000_1fff) {
            assert_eq!(bm.is_intercepted(m, true), !msr_write_allowed(m), "{m:#x}");
            let read = mtrr_slot(m).is_some() || msr_read(m) == MsrRead::VmxView;
            assert_eq!(bm.is_intercepted(m, false), read, "{m:#x}");
        }
        // The allow-list, exactly.
        let allowed: Vec<u32> = (0..=0x1fff)
            .chain(0xc000_0000..=0xc000_1fff)
            .filter(|&m| !bm.is_intercepted(m, true))
            .collect();
        let mut want = vec![
            0x48, 0x49, 0x10b, 0x174, 0x175, 0x176, 0x1c4, 0x1c5, 0x1d9, 0x277, 0x6e0,
        ];
        want.extend(0x800..=0x8ff);
        want.extend(0xc000_0080..=0xc000_0084);
        want.extend(0xc000_0100..=0xc000_0103);
        assert_eq!(allowed, want);
        // Outside both ranges: always exits, and the default is #GP.
        assert!(bm.is_intercepted(0x4000_0000, true));
        assert_eq!(
            msr_write(0x4000_0000, 0, MsrContext::default()),
            MsrWrite::Refuse
        );
        // Allow-list sorted and disjoint (the rule builder relies on it).
        for w in MSR_WRITE_ALLOWED.windows(2) {
            assert!(w[0].0 <= w[0].1 && w[0].1 < w[1].0, "{w:x?}");
        }
    }

    #[test]
    fn msr_write_decisions() {
        use MsrWrite::*;
        let none = MsrContext::default();
        let sw = MsrContext {
            perf_global_switched: true,
            current: None,
        };
        // Refused outright.
        for m in [
            0x3a,
            0x480,
            0x48d,
            0x493,
            0x9b,
            0x4b56_4d00,
            0x1234,
            0xc000_0104,
        ] {
            assert_eq!(msr_write(m, 0, none), Refuse, "{m:#x}");
        }
        // Microcode: dropped.
        assert_eq!(msr_write(0x79, 0xdead_0000, none), Ignore);
        // APIC base: the page may not move.
        let apic = MsrContext {
            current: Some(0xfee0_0900),
            ..none
        };
        assert_eq!(msr_write(0x1b, 0xfee0_0d00, apic), Perform, "x2APIC enable");
        assert_eq!(msr_write(0x1b, 0xfee0_0100, apic), Perform, "disable");
        assert_eq!(msr_write(0x1b, 0x0010_0900, apic), Refuse, "move");
        assert_eq!(
            msr_write(0x1b, 0xfee0_0900, none),
            Refuse,
            "current unknown"
        );
        // MISC_ENABLE: only the host bits.
        let misc = MsrContext {
            current: Some(0x0085_0089),
            ..none
        };
        assert_eq!(msr_write(0x1a0, 0x0085_0088, misc), Perform, "fast strings");
        assert_eq!(
            msr_write(0x1a0, 0x0085_0089 | 1 << 38, misc),
            Perform,
            "turbo"
        );
        assert_eq!(
            msr_write(0x1a0, 0x0085_0089 | 1 << 34, misc),
            Refuse,
            "XD disable"
        );
        assert_eq!(msr_write(0x1a0, 0x0085_0089 & !(1 << 7), misc), Refuse);
        // Intel PT.
        assert_eq!(msr_write(0x570, 1, none), Refuse);
        assert_eq!(msr_write(0x570, 0x2000, none), Perform);
        assert_eq!(msr_write(0x560, 0x1000, none), Perform);
        // XSS.
        for b in [8, 12, 15] {
            assert_eq!(msr_write(0xda0, 1 << b, none), Refuse, "{b}");
        }
        assert_eq!(msr_write(0xda0, 1 << 11, none), Perform, "CET user state");
        assert_eq!(msr_write(0xda0, 0, none), Perform);
        // Perf.
        assert_eq!(msr_write(0x38f, 0xf, sw), PerfGlobalCtrl);
        assert_eq!(msr_write(0x38f, 0xf, none), Refuse);
        assert_eq!(msr_write(0x38f, 0, none), Perform);
        for m in [0x3f1, 0x600] {
            assert_eq!(msr_write(m, 0x1000, sw), Perform);
            assert_eq!(msr_write(m, 0x1000, none), Refuse);
            assert_eq!(msr_write(m, 0, none), Perform);
        }
        assert_eq!(msr_write(0x14ce, 1, sw), Refuse);
        assert_eq!(msr_write(0x14ce, 0, sw), Perform);
        // MTRRs: shadowed, whatever the value.
        for m in (0x200..=0x21f)
            .chain([0x250, 0x258, 0x259, 0x2ff])
            .chain(0x268..=0x26f)
        {
            assert!(matches!(msr_write(m, 6, none), Shadow(_)), "{m:#x}");
        }
        assert_eq!(msr_write(0xfe, 0, none), Refuse, "MTRRcap is read-only");
        // Performed.
        for m in [
            0x10, 0x3b, 0x8b, 0x6e1, 0x6a2, 0x17b, 0x401, 0x186, 0x1b0, 0xc8f,
        ] {
            assert_eq!(msr_write(m, 0, none), Perform, "{m:#x}");
        }
    }

    #[test]
    fn perf_global_ctrl_reserved_bits() {
        // 4 general counters, 3 fixed ones.
        let (eax, edx) = (0x0430_0405, 0x0000_0603);
        assert!(perf_global_ctrl_valid(0x7_0000_000f, eax, edx));
        assert!(perf_global_ctrl_valid(0, eax, edx));
        assert!(!perf_global_ctrl_valid(1 << 4, eax, edx));
        assert!(!perf_global_ctrl_valid(1 << 35, eax, edx));
        assert!(!perf_global_ctrl_valid(1 << 48, eax, edx));
        assert!(!perf_global_ctrl_valid(1, 0, 0), "no PMU");
        assert!(perf_global_ctrl_valid(0xffff_ffff, 0xff00, 0));
    }

    #[test]
    fn mtrr_slots_are_distinct_and_reads_come_from_the_shadow() {
        let mut seen = [false; MTRR_SLOTS];
        for m in 0..0x1000 {
            if let Some(s) = mtrr_slot(m) {
                assert!(!seen[s], "{m:#x}");
                seen[s] = true;
                assert_eq!(msr_read(m), MsrRead::Shadow(s));
            } else if m == 0x3a || (0x480..=0x493).contains(&m) {
                assert_eq!(msr_read(m), MsrRead::VmxView);
            } else {
                assert_eq!(msr_read(m), MsrRead::Perform);
            }
        }
        assert!(seen.iter().all(|&b| b));
        let mut sh = MtrrShadow::new();
        assert_eq!(sh.get(3), None);
        sh.set(3, 0x42);
        assert_eq!(sh.get(3), Some(0x42));
        sh.set(MTRR_SLOTS, 1);
        assert_eq!(sh.get(MTRR_SLOTS), None);
        assert_eq!(sh.get(43), None);
    }

    fn caps() -> VmxCaps {
        VmxCaps::decode(&icelake()).unwrap()
    }

    #[test]
    fn icelake_host_controls() {
        let c = host_controls(&caps()).unwrap();
        // The CPU's must-be-one bits plus NMI exiting and virtual NMIs in
        // the pin controls: no external-interrupt exiting, no preemption
        // timer.
        assert_eq!(c.pin, 0x16 | PIN_NMI_EXITING | PIN_VIRTUAL_NMIS);
        assert_eq!(c.pin & (1 << 0 | 1 << 6), 0);
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
