// SPDX-License-Identifier: GPL-2.0

//! Per-CPU hypervisor state, kept in one page of the hypervisor's pool.
//!
//! Root mode finds it two ways: the VM-exit entry passes it to the exit
//! handler (its address sits just above the saved registers on the
//! per-CPU hypervisor stack), and the root-mode exception handlers reach it
//! through the GS base (HOST_GS_BASE), so the first fields have fixed
//! offsets that the assembly in [`crate::hyp::entry`] uses (asserted
//! below).
//!
//! # Why the exit handler's accesses are sound
//!
//! The root-mode NMI, #MC and #GP stubs write some fields at any
//! instruction boundary of the exit handler, on the same CPU: `nmi_pending`,
//! `mc_pending`, `nmis_in_root`, `fatal_*`, `expect_fault`, `faulted`,
//! `flushed_gen`, `shootdown_nmi`, `probe_*` (the #PF stub of a debug
//! build, during DEBUG_STACK_OVERFLOW).  Other CPUs write `shootdown_nmi` and
//! read `flushed_gen`, `parked` and `apic_id` (the cross-CPU shootdown,
//! `crate::hyp::global`).
//! Those are atomics: the stubs use single aligned `mov` stores or `lock`
//! read-modify-writes, which are atomic accesses of the same size, and
//! the Rust side reads and clears them with atomic operations, so no
//! Rust reference ever asserts they are unchanging.  The exit handler
//! therefore holds only a shared `&HypCpu`.
//!
//! What only the exit handler touches (counters, teardown flag) lives in
//! [`CpuLocal`], inside an [`UnsafeCell`]: [`HypCpu::local`] hands out the
//! one `&mut CpuLocal` of an exit.  That is exclusive because exits on one
//! CPU do not nest (root mode runs with interrupts off and the stubs never
//! touch `CpuLocal`), and no other CPU, and not the host (the page is
//! hypervisor memory), reaches this CPU's page.  The remaining fields are
//! written once by the host before launch and only read afterwards.

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicU32, AtomicU64};

use super::global::HypGlobal;
use crate::hv::host_policy::MtrrShadow;
use crate::hv::vmx::exit::ExitStats;
use crate::hv::vmx::nested::vmx_op::VmxMode;
use crate::hyp::nested::NestedPages;

/// Per-CPU hypervisor state.
#[repr(C)]
pub struct HypCpu {
    /// Address of this structure (GS:0), for sanity checks.
    pub self_ptr: u64,
    /// Set by the root-mode NMI handler; the exit handler delivers the NMI
    /// to the host before the next VM entry.
    pub nmi_pending: AtomicU32,
    /// Set by the root-mode machine-check handler; delivered like NMIs.
    pub mc_pending: AtomicU32,
    /// NMIs that arrived while this CPU was in root mode (all delivered
    /// to the host).
    pub nmis_in_root: AtomicU64,
    /// Vector of the last unexpected exception taken in root mode
    /// (`NO_FAULT` if none).
    pub fatal_vector: AtomicU32,
    /// Number of unexpected root-mode exceptions.
    pub fatal_count: AtomicU32,
    /// RIP of the last unexpected root-mode exception (or of the host when
    /// the exit handler gave up on it).
    pub fatal_rip: AtomicU64,
    /// Length of the instruction a `*_safe` accessor is about to run; the
    /// #GP handler skips it and sets `faulted` instead of halting.
    pub expect_fault: AtomicU32,
    /// Set by the #GP handler when an expected fault happened.
    pub faulted: AtomicU32,
    /// The last flush generation (`HypGlobal::flush_gen`) for which this
    /// CPU has invalidated its host-EPT translations: its acknowledgement
    /// of a shootdown.  Raised by the root-mode NMI stub (plain store of a
    /// generation it read before its INVEPT) and by the exit handler before
    /// every VM entry (`fetch_max`), never lowered.
    pub flushed_gen: AtomicU64,
    /// Set by a CPU that sends this CPU a shootdown NMI, taken (swapped to
    /// 0) by whichever NMI path sees the next NMI: that NMI is the
    /// hypervisor's and is not forwarded to the host.
    pub shootdown_nmi: AtomicU32,
    /// This CPU cannot take NMIs (wait-for-SIPI, or it left VMX operation):
    /// shootdowns do not wait for it; it runs the generation check before
    /// its next VM entry.
    pub parked: AtomicU32,
    /// Local APIC ID of this CPU (from CPUID at its first exit), the
    /// destination of shootdown NMIs.
    pub apic_id: AtomicU32,
    /// DEBUG_STACK_OVERFLOW (debug builds): non-zero while the probe runs,
    /// the RSP at which the #PF stub resumes it (`crate::hyp::entry`);
    /// cleared by the stub.  Zero for good in a production build.
    pub probe_resume_rsp: AtomicU64,
    /// Where the #PF stub resumes the probe.
    pub probe_resume_rip: AtomicU64,
    /// The fault address (CR2) the #PF stub saw during the probe.
    pub probe_cr2: AtomicU64,
    /// The RSP the #PF stub ran on during the probe (its interrupt stack).
    pub probe_stub_rsp: AtomicU64,
    /// Set by the exit handler when the next entry must be a VMLAUNCH (a
    /// freshly cleared vmcs02, `crate::hyp::nested`); the entry assembly
    /// reads and clears it.
    pub launch_next: AtomicU32,
    /// Logical CPU number (the host's numbering).
    pub cpu: u32,
    /// CR4 bits that must be 1 in VMX operation.
    pub cr4_fixed0: u64,
    /// CR4 bits that may be 1 in VMX operation.
    pub cr4_fixed1: u64,
    /// The hypervisor-wide state (in the pool).
    pub global: *mut HypGlobal,
    /// Nested VMX's pages of this CPU (vmcs01, vmcs02, the merged MSR
    /// bitmap, the per-CPU nested state), written once before launch.
    pub nested: NestedPages,
    /// State only this CPU's exit handler touches; see [`HypCpu::local`].
    local: UnsafeCell<CpuLocal>,
}

/// The part of a CPU's hypervisor state that only its exit handler reads
/// and writes (never the exception stubs).
pub struct CpuLocal {
    /// Set once the CPU has left VMX operation through TEARDOWN_CPU.
    pub torn_down: u32,
    /// Set at the CPU's first VM exit, when it is counted among the CPUs
    /// the teardown rendezvous waits for (`HypGlobal::note_cpu`).
    pub counted: bool,
    /// Exits the handler did not expect (reason recorded in `last_unexpected`).
    pub unexpected: u64,
    /// Basic reason of the last unexpected exit.
    pub last_unexpected: u64,
    /// Exit counters by reason.
    pub stats: ExitStats,
    /// The host's MTRRs as it wrote them (see `host_policy::MtrrShadow`).
    pub mtrr: MtrrShadow,
    /// An external interrupt whose delivery an exit interrupted and that
    /// was set aside for an exception injected first; delivered when the
    /// host can take it (see `exit_handler::deliver_pending`).
    pub pending_irq: Option<u8>,
    /// The host CPU's VMX-operation state (nested VMX: its VMXON and
    /// current-VMCS pointers), see `crate::hyp::nested`.
    pub vmx: VmxMode,
    /// An INIT arrived while the host was in VMX operation: blocked and
    /// remembered, as the CPU does; delivered (the CPU parks waiting for
    /// SIPI) when VMXOFF unblocks it.
    pub init_latched: bool,
}

/// `fatal_vector` value when no unexpected exception happened.
pub const NO_FAULT: u32 = u32::MAX;

/// Offset of `nmi_pending` (used by the NMI handler through GS).
pub const OFF_NMI_PENDING: usize = core::mem::offset_of!(HypCpu, nmi_pending);
/// Offset of `nmis_in_root`.
pub const OFF_NMIS_IN_ROOT: usize = core::mem::offset_of!(HypCpu, nmis_in_root);
/// Offset of `mc_pending`.
pub const OFF_MC_PENDING: usize = core::mem::offset_of!(HypCpu, mc_pending);
/// Offset of `fatal_vector`.
pub const OFF_FATAL_VECTOR: usize = core::mem::offset_of!(HypCpu, fatal_vector);
/// Offset of `fatal_count`.
pub const OFF_FATAL_COUNT: usize = core::mem::offset_of!(HypCpu, fatal_count);
/// Offset of `fatal_rip`.
pub const OFF_FATAL_RIP: usize = core::mem::offset_of!(HypCpu, fatal_rip);

/// Offset of `expect_fault`.
pub const OFF_EXPECT_FAULT: usize = core::mem::offset_of!(HypCpu, expect_fault);
/// Offset of `faulted`.
pub const OFF_FAULTED: usize = core::mem::offset_of!(HypCpu, faulted);
/// Offset of `flushed_gen`.
pub const OFF_FLUSHED_GEN: usize = core::mem::offset_of!(HypCpu, flushed_gen);
/// Offset of `shootdown_nmi`.
pub const OFF_SHOOTDOWN_NMI: usize = core::mem::offset_of!(HypCpu, shootdown_nmi);
/// Offset of `launch_next`.
pub const OFF_LAUNCH_NEXT: usize = core::mem::offset_of!(HypCpu, launch_next);
/// Offset of `global`.
pub const OFF_GLOBAL: usize = core::mem::offset_of!(HypCpu, global);
/// Offset of `probe_resume_rsp`.
pub const OFF_PROBE_RESUME_RSP: usize = core::mem::offset_of!(HypCpu, probe_resume_rsp);
/// Offset of `probe_resume_rip`.
pub const OFF_PROBE_RESUME_RIP: usize = core::mem::offset_of!(HypCpu, probe_resume_rip);
/// Offset of `probe_cr2`.
pub const OFF_PROBE_CR2: usize = core::mem::offset_of!(HypCpu, probe_cr2);
/// Offset of `probe_stub_rsp`.
pub const OFF_PROBE_STUB_RSP: usize = core::mem::offset_of!(HypCpu, probe_stub_rsp);

// The layout the assembly relies on: the offsets it was written for, and
// atomics of exactly the size and alignment of the `dword` / `qword`
// operands the stubs use.
const _: () = assert!(OFF_NMI_PENDING == 8);
const _: () = assert!(OFF_MC_PENDING == 12);
const _: () = assert!(OFF_NMIS_IN_ROOT == 16);
const _: () = assert!(OFF_FATAL_VECTOR == 24);
const _: () = assert!(OFF_FATAL_COUNT == 28);
const _: () = assert!(OFF_FATAL_RIP == 32);
const _: () = assert!(OFF_EXPECT_FAULT == 40);
const _: () = assert!(OFF_FAULTED == 44);
const _: () = assert!(OFF_FLUSHED_GEN == 48);
const _: () = assert!(OFF_SHOOTDOWN_NMI == 56);
const _: () = assert!(OFF_GLOBAL % 8 == 0);
const _: () = assert!(OFF_PROBE_RESUME_RSP % 8 == 0);
const _: () = assert!(core::mem::size_of::<AtomicU32>() == 4);
const _: () = assert!(core::mem::align_of::<AtomicU32>() == 4);
const _: () = assert!(core::mem::size_of::<AtomicU64>() == 8);
const _: () = assert!(core::mem::align_of::<AtomicU64>() == 8);
const _: () = assert!(core::mem::size_of::<HypCpu>() <= 4096);

impl HypCpu {
    /// Initial state for CPU `cpu` placed at address `at`.
    pub const fn new(
        at: u64,
        cpu: u32,
        cr4_fixed0: u64,
        cr4_fixed1: u64,
        global: *mut HypGlobal,
        nested: NestedPages,
    ) -> Self {
        Self {
            self_ptr: at,
            nmi_pending: AtomicU32::new(0),
            mc_pending: AtomicU32::new(0),
            nmis_in_root: AtomicU64::new(0),
            fatal_vector: AtomicU32::new(NO_FAULT),
            fatal_count: AtomicU32::new(0),
            fatal_rip: AtomicU64::new(0),
            expect_fault: AtomicU32::new(0),
            faulted: AtomicU32::new(0),
            flushed_gen: AtomicU64::new(0),
            shootdown_nmi: AtomicU32::new(0),
            parked: AtomicU32::new(0),
            apic_id: AtomicU32::new(0),
            probe_resume_rsp: AtomicU64::new(0),
            probe_resume_rip: AtomicU64::new(0),
            probe_cr2: AtomicU64::new(0),
            probe_stub_rsp: AtomicU64::new(0),
            cpu,
            cr4_fixed0,
            cr4_fixed1,
            global,
            nested,
            launch_next: AtomicU32::new(0),
            local: UnsafeCell::new(CpuLocal {
                torn_down: 0,
                counted: false,
                unexpected: 0,
                last_unexpected: 0,
                stats: ExitStats::new(),
                mtrr: MtrrShadow::new(),
                pending_irq: None,
                vmx: VmxMode::Off,
                init_latched: false,
            }),
        }
    }

    /// This CPU's `HypCpu`, found through the GS base (HOST_GS_BASE),
    /// whose first field is the structure's own address.
    ///
    /// # Safety
    ///
    /// Root mode only (in the host's context GS names the kernel's per-CPU
    /// area): the caller runs on a CPU under the hypervisor.
    pub unsafe fn current<'a>() -> &'a HypCpu {
        let me: u64;
        // SAFETY: in root mode GS base is this CPU's `HypCpu` (caller);
        // reading its first field has no side effect.
        unsafe { core::arch::asm!("mov {}, gs:[0]", out(reg) me, options(nostack, readonly)) };
        // SAFETY: `me` is this CPU's `HypCpu`, a pool page alive while it
        // runs root mode; only shared access (see the module docs).
        unsafe { &*(me as *const HypCpu) }
    }

    /// The state only this CPU's exit handler uses.
    ///
    /// # Safety
    ///
    /// Only the exit handler running on this CPU calls this, once per
    /// exit, and drops the reference before returning to the guest (see
    /// the module docs: exits do not nest and nothing else touches it).
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn local(&self) -> &mut CpuLocal {
        // SAFETY: exclusive by the caller's contract.
        unsafe { &mut *self.local.get() }
    }
}
