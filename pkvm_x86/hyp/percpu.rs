// SPDX-License-Identifier: GPL-2.0

//! Per-CPU hypervisor state, kept in one page of the hypervisor's pool.
//!
//! Root mode finds it two ways: the VM-exit entry passes it to the exit
//! handler (its address sits just above the saved registers on the
//! per-CPU hypervisor stack), and the root-mode exception handlers reach it
//! through the GS base (HOST_GS_BASE), so the first fields have fixed
//! offsets that the assembly in [`crate::hyp::entry`] uses.

use super::global::HypGlobal;
use crate::hv::vmx::exit::ExitStats;

/// Per-CPU hypervisor state.
#[repr(C)]
pub struct HypCpu {
    /// Address of this structure (GS:0), for sanity checks.
    pub self_ptr: u64,
    /// Set by the root-mode NMI handler; the exit handler delivers the NMI
    /// to the host before the next VM entry.
    pub nmi_pending: u32,
    /// Set by the root-mode machine-check handler; delivered like NMIs.
    pub mc_pending: u32,
    /// NMIs that arrived while this CPU was in root mode (all delivered
    /// to the host).
    pub nmis_in_root: u64,
    /// Vector of the last unexpected exception taken in root mode
    /// (`NO_FAULT` if none).
    pub fatal_vector: u32,
    /// Number of unexpected root-mode exceptions.
    pub fatal_count: u32,
    /// RIP of the last unexpected root-mode exception.
    pub fatal_rip: u64,
    /// Length of the instruction a `*_safe` accessor is about to run; the
    /// #GP handler skips it and sets `faulted` instead of halting.
    pub expect_fault: u32,
    /// Set by the #GP handler when an expected fault happened.
    pub faulted: u32,
    /// Logical CPU number (the host's numbering).
    pub cpu: u32,
    /// Set once the CPU has left VMX operation through TEARDOWN_CPU.
    pub torn_down: u32,
    /// CR4 bits that must be 1 in VMX operation.
    pub cr4_fixed0: u64,
    /// CR4 bits that may be 1 in VMX operation.
    pub cr4_fixed1: u64,
    /// Exits the handler did not expect (reason recorded in `last_unexpected`).
    pub unexpected: u64,
    /// Basic reason of the last unexpected exit.
    pub last_unexpected: u64,
    /// Exit counters by reason.
    pub stats: ExitStats,
    /// The hypervisor-wide state (in the pool).
    pub global: *mut HypGlobal,
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

const _: () = assert!(core::mem::size_of::<HypCpu>() <= 4096);

impl HypCpu {
    /// Initial state for CPU `cpu` placed at address `at`.
    pub const fn new(
        at: u64,
        cpu: u32,
        cr4_fixed0: u64,
        cr4_fixed1: u64,
        global: *mut HypGlobal,
    ) -> Self {
        Self {
            self_ptr: at,
            nmi_pending: 0,
            mc_pending: 0,
            nmis_in_root: 0,
            fatal_vector: NO_FAULT,
            fatal_count: 0,
            fatal_rip: 0,
            expect_fault: 0,
            faulted: 0,
            cpu,
            torn_down: 0,
            cr4_fixed0,
            cr4_fixed1,
            unexpected: 0,
            last_unexpected: 0,
            stats: ExitStats::new(),
            global,
        }
    }
}
