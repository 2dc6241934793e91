// SPDX-License-Identifier: GPL-2.0

//! Root-mode glue of nested VMX: the host's VMX-instruction exits
//! (VMCLEAR..VMXON, INVEPT, INVVPID) are described from the VMCS
//! ([`InsnCtx`]), run by the pure core (`crate::hv::vmx::nested::vmx_op`)
//! against this CPU's VMX-operation state (`CpuLocal::vmx`), the host's
//! registers, the host's memory (only what it owns, through the scratch
//! slot) and the shared vmcs12 store, all under the hypervisor lock; the
//! exit handler applies the result ([`Applied`]): RFLAGS and RIP on
//! success or VMfail, the fault otherwise (RIP unchanged).
//!
//! Also here: the per-CPU bookkeeping the instructions imply (the count
//! of CPUs in VMX operation that refuses BEGIN_TEARDOWN, INIT released by
//! VMXOFF).  No kernel calls, no panics on host input.

use core::cell::RefCell;
use core::sync::atomic::Ordering;

use super::entry::{gpr_slot, reg, GuestRegs};
use super::global::{HostMemory, HypGlobal, PageStates, PINS_PER_VMCS02};
use super::percpu::{CpuLocal, HypCpu};
use crate::arch::{cpuid::cpuid, vmx};
use crate::hv::host_policy::{self, MtrrShadow, CR4_GUEST_HOST_MASK};
use crate::hv::mm::addr::Hpa;
use crate::hv::vmx::event::InterruptionInfo;
use crate::hv::vmx::exit::EventType;
use crate::hv::vmx::host_vmcs::HOST_VPID;
use crate::hv::vmx::nested::controls::proc2;
use crate::hv::vmx::nested::entry_checks::{perf_global_mask, EntryEnv, EntryFailure};
use crate::hv::vmx::nested::field_class::{class_at, shadow_of, Class, Shadow};
use crate::hv::vmx::nested::host_walk::{self, HostPhys, PagingCtx};
use crate::hv::vmx::nested::merge::{self, HostWords, PageUse, Vmcs02Params};
use crate::hv::vmx::nested::msr_area::{
    self, AreaFailure, LoadArea, LoadEnv, MsrEntry, MsrLoad, MsrStore,
};
use crate::hv::vmx::nested::offer;
use crate::hv::vmx::nested::operand::{Fault, InstrInfo, Segment};
use crate::hv::vmx::nested::reflect::{self, ExitEvent, HostBitmaps, HvExit, Owner};
use crate::hv::vmx::nested::vmcs02_cache::{FieldSet, Vmcs02Cache};
use crate::hv::vmx::nested::vmcs12::{self, Vmcs12, Vmcs12Cache};
use crate::hv::vmx::nested::vmx_op::{err, Gprs, Insn, InsnCtx, Machine, Outcome, VmxMode};
use crate::hv::vmx::vmcs::fields::{self, FIELDS};
use crate::hv::vmx::vmcs::*;

fn vmcs() -> vmx::CurrentVmcs {
    // SAFETY: called from the exit handler in VMX root operation with the
    // host's VMCS current; only guest RSP is written here (`set_gpr`).
    unsafe { vmx::CurrentVmcs::new() }
}

fn rd<T: FieldValue>(f: Field<T>) -> T {
    vmcs().read(f).unwrap_or_default()
}

/// The host's registers: the saved frame, RSP in the VMCS.
struct HostRegs<'a>(&'a mut GuestRegs);

impl Gprs for HostRegs<'_> {
    fn gpr(&self, n: u8) -> u64 {
        match gpr_slot(n) {
            Some(i) => self.0.gpr.get(i).copied().unwrap_or(0),
            None => rd(GUEST_RSP),
        }
    }

    fn set_gpr(&mut self, n: u8, v: u64) {
        match gpr_slot(n) {
            Some(i) => {
                if let Some(r) = self.0.gpr.get_mut(i) {
                    *r = v;
                }
            }
            None => {
                let _ = vmcs().write(GUEST_RSP, v);
            }
        }
    }
}

/// What the exit handler does after a VMX instruction.
pub(crate) enum Applied {
    /// The instruction completed (success or VMfail): RFLAGS written,
    /// skip it.  `left_vmx`: it was a VMXOFF (a latched INIT is due);
    /// `flush`: invalidate the host's cached translations.
    Completed {
        /// VMXOFF succeeded.
        left_vmx: bool,
        /// INVVPID: flush.
        flush: bool,
    },
    /// Deliver this fault; RIP and RFLAGS stay.
    Fault(Fault),
    /// VMLAUNCH/VMRESUME: vmcs02 is current, enter the host's guest.
    EnterGuest,
    /// VMLAUNCH/VMRESUME failed and the failure is applied to vmcs01
    /// already (RFLAGS and RIP, or the host state of a failed entry).
    EntryFailed,
}

fn segment(base: Field<u64>, limit: Field<u32>, ar: Field<u32>) -> Segment {
    Segment {
        base: rd(base),
        limit: rd(limit),
        ar: rd(ar),
    }
}

/// The context of the exiting instruction, from the host's VMCS.
fn context(frozen: bool) -> InsnCtx {
    let cr4_real = rd(GUEST_CR4);
    let cr4_view = (cr4_real & !CR4_GUEST_HOST_MASK) | (rd(CR4_READ_SHADOW) & CR4_GUEST_HOST_MASK);
    let efer = rd(GUEST_IA32_EFER);
    let ss_ar = rd(GUEST_SS_AR_BYTES);
    let cs_ar = rd(GUEST_CS_AR_BYTES);
    let rflags = rd(GUEST_RFLAGS);
    let cpl = ((ss_ar >> 5) & 3) as u8;
    let phys_bits = if cpuid(0x8000_0000, 0).eax >= 0x8000_0008 {
        (cpuid(0x8000_0008, 0).eax & 0xff) as u8
    } else {
        36
    };
    InsnCtx {
        cr0: rd(GUEST_CR0),
        cr4: cr4_view,
        lma: efer & (1 << 10) != 0,
        cs_l: cs_ar & (1 << 13) != 0,
        rflags,
        cpl,
        mov_ss_blocking: rd(GUEST_INTERRUPTIBILITY_INFO) & (1 << 1) != 0,
        info: InstrInfo(rd(VMX_INSTRUCTION_INFO)),
        qual: rd(EXIT_QUALIFICATION),
        segs: [
            segment(GUEST_ES_BASE, GUEST_ES_LIMIT, GUEST_ES_AR_BYTES),
            segment(GUEST_CS_BASE, GUEST_CS_LIMIT, GUEST_CS_AR_BYTES),
            segment(GUEST_SS_BASE, GUEST_SS_LIMIT, GUEST_SS_AR_BYTES),
            segment(GUEST_DS_BASE, GUEST_DS_LIMIT, GUEST_DS_AR_BYTES),
            segment(GUEST_FS_BASE, GUEST_FS_LIMIT, GUEST_FS_AR_BYTES),
            segment(GUEST_GS_BASE, GUEST_GS_LIMIT, GUEST_GS_AR_BYTES),
        ],
        paging: PagingCtx {
            cr0: rd(GUEST_CR0),
            cr3: rd(GUEST_CR3),
            cr4: cr4_real,
            efer,
            user: cpl == 3,
            ac: rflags & (1 << 18) != 0,
            phys_bits,
        },
        phys_bits,
        vmxon_refused: frozen,
    }
}

/// Runs the VMX instruction of basic exit reason `basic` for the host.
pub(crate) fn vmx_instruction(
    regs: &mut GuestRegs,
    cpu: &HypCpu,
    local: &mut CpuLocal,
    basic: u16,
) -> Applied {
    let Some(insn) = Insn::from_exit_reason(basic) else {
        return Applied::Fault(Fault::Ud);
    };
    shadow_before(cpu, insn);
    // SAFETY: `global` points at the hypervisor-wide state in the pool,
    // alive while any CPU runs under it.
    let global = unsafe { &*cpu.global };
    let was_on = local.vmx.is_on();
    let mut st = global.page_states();
    let ctx = context(st.frozen());
    let (mut mem, cache) = st.nested_parts();
    watch_tag(cache, vmcs12::TAG_INSN + insn as u8);
    let mut host_regs = HostRegs(regs);
    // VMREAD/VMWRITE: the field they name (the shadow is synced around
    // them for it, below).
    let field = matches!(insn, Insn::Vmread | Insn::Vmwrite)
        .then(|| ctx.field_encoding(&host_regs))
        .and_then(|enc| {
            let ept = global.vmx_params.ept;
            let i = vmcs12::field_of(enc, ept)?;
            Some((i, vmcs12::high_half_of(enc, ept).is_some()))
        });
    if let (
        Some((i, true)),
        VmxMode::On {
            current: Some(pa), ..
        },
    ) = (field, local.vmx)
    {
        // The high half of a 64-bit field exits while its full-width
        // access goes through the shadow: the shadow's value first.
        // SAFETY: the exit handler of this CPU; no other reference lives.
        let ns = unsafe { nested_state(cpu) };
        if ns.shadowing == Some(pa) {
            if let Some(v12) = cache.get(&mut mem, pa) {
                shadow_pull(cpu, ns, &mut v12.vmcs, i);
            }
        }
    }
    let mut m = Machine {
        mode: &mut local.vmx,
        regs: &mut host_regs,
        mem: &mut mem,
        cache,
        view: &global.vmx_params,
    };
    let done = m.execute(insn, &ctx);
    let now_on = local.vmx.is_on();
    watch_instruction(&mut st, insn, field, &done, &local.vmx);
    if let Some(inv) = done.invept {
        shadow_invept(global, &mut st, inv);
    }
    after_instruction(cpu, insn, &mut st, &local.vmx);
    if !matches!(insn, Insn::Vmread | Insn::Vmwrite) {
        stress_evict(global, &mut st);
    }
    // Under the lock, as BEGIN_TEARDOWN reads it.
    if now_on && !was_on {
        global.vmx_cpus.fetch_add(1, Ordering::AcqRel);
    } else if was_on && !now_on && global.vmx_cpus.fetch_sub(1, Ordering::AcqRel) == 1 {
        shadow_last_vmxoff(&mut st);
    }
    drop(st);
    let current = match local.vmx {
        VmxMode::On { current, .. } => current,
        VmxMode::Off => None,
    };
    if let Some(pa12) = done.enter {
        return match enter(cpu, local, pa12) {
            Entered::Guest => Applied::EnterGuest,
            Entered::Host => {
                shadow_after(cpu, current, Resync::Overwrite);
                Applied::EntryFailed
            }
        };
    }
    // vmcs12 changed behind the shadow: the VM-instruction error of a
    // VMfailValid, or the field of a VMWRITE the emulation performed (a
    // field the shadow may show but not take, or the high half of one it
    // takes).  Only those fields go to the shadow: the host's other
    // writes there stay.
    let error = matches!(done.outcome, Outcome::FailValid(_)).then(|| VM_INSTRUCTION_ERROR.index());
    let written = field
        .filter(|_| insn == Insn::Vmwrite && done.outcome == Outcome::Succeed)
        .map(|(i, _)| i);
    let how = if error.is_some() || written.is_some() {
        Resync::Fields([error, written])
    } else {
        Resync::Keep
    };
    shadow_after(cpu, current, how);
    match done.outcome {
        Outcome::Fault(f) => Applied::Fault(f),
        o => {
            let _ = vmcs().write(GUEST_RFLAGS, o.rflags(ctx.rflags));
            Applied::Completed {
                left_vmx: was_on && !now_on,
                flush: done.flush,
            }
        }
    }
}

// ---------------------------------------------------------------------
// Running the host's guests: vmcs02 entries and exits.
// ---------------------------------------------------------------------

/// Nested VMX's pages of one CPU, written once by the host before launch
/// (`crate::host::cpu_setup`), all pool pages.
#[derive(Clone, Copy, Debug, Default)]
pub struct NestedPages {
    /// The host's own VMCS (vmcs01).
    pub vmcs01_pa: u64,
    /// This CPU's vmcs02 (the hypervisor's VMCS of the host's guest).
    pub vmcs02_pa: u64,
    /// The merged MSR bitmap of vmcs02 (host's OR the hypervisor's).
    pub bitmap02_pa: u64,
    /// Its hypervisor virtual address.
    pub bitmap02_va: u64,
    /// Hypervisor virtual address of this CPU's [`NestedCpu`].
    pub state_va: u64,
    /// The shadow VMCS mirroring the host's current vmcs12 (VMCS
    /// shadowing of vmcs01).
    pub shadow_pa: u64,
    /// The VMREAD bitmap of vmcs01 (a set bit exits).
    pub vmread_bitmap_pa: u64,
    /// Its hypervisor virtual address.
    pub vmread_bitmap_va: u64,
    /// The VMWRITE bitmap of vmcs01.
    pub vmwrite_bitmap_pa: u64,
    /// Its hypervisor virtual address.
    pub vmwrite_bitmap_va: u64,
}

/// Counters of [`NestedCpu::stats`], read with the NESTED_STATS
/// hypercall (`crate::hv::hypercall::nr::NESTED_STATS`).
pub mod stat {
    /// Successful VM entries of vmcs02 (VMLAUNCH or VMRESUME of the host
    /// that reached the guest), including the hypervisor's re-entries.
    pub const ENTRIES: usize = 0;
    /// Exits of vmcs02 (every hardware exit taken while the guest ran).
    pub const L2_EXITS: usize = 1;
    /// Exits reflected to the host (the guest exits the host sees).
    pub const REFLECTED: usize = 2;
    /// Exits of vmcs02 the hypervisor handled and resumed the guest.
    pub const KEPT: usize = 3;
    /// Guest accesses to memory the host does not own (reflected as a
    /// triple fault).
    pub const PROTECTED: usize = 4;
    /// VM entries the host asked for that failed (VMfail or a failed
    /// entry reflected).
    pub const FAILED_ENTRIES: usize = 5;
    /// vmcs02 (re)built from scratch: VMCLEAR + VMLAUNCH.
    pub const LAUNCHES: usize = 6;
    /// Exits of vmcs02 no control should produce (hypervisor bugs).
    pub const UNEXPECTED: usize = 7;
    /// The shadow VMCS could not be synced with its vmcs12 (the vmcs12
    /// could not be had from the cache: its page is not the host's, or
    /// the cache had no page) and was unlinked: the host's writes through
    /// it since the last sync are lost, its next VMREAD/VMWRITE exits.
    pub const SHADOW_UNSYNCED: usize = 8;
    /// EPT violations of the host's guest on its shadow EPT (EPT12 on).
    pub const EPT_FAULTS: usize = 9;
    /// Of those, leaves installed (or found present): the guest resumed.
    pub const EPT_INSTALLS: usize = 10;
    /// Number of counters.  (The faults EPT12 refused are reflected exits
    /// 48/49; the rest of `EPT_FAULTS - EPT_INSTALLS` found no memory or
    /// were protected.)
    pub const COUNT: usize = 11;
}

/// Root-mode time by phase of a guest round trip, read with NESTED_STATS
/// selectors `0x300 + phase` (debug builds only: production builds count
/// nothing).  In Bochs the TSC advances with the emulated instructions,
/// so these count root mode's work, not the host machine's speed.
pub mod phase {
    /// Every exit handled in root mode on this CPU (`handle_exit`).
    pub const ROOT_ALL: usize = 0;
    /// Exits of vmcs02 (the guest's exits), from the handler's start.
    pub const ROOT_L2: usize = 1;
    /// The host's VMLAUNCH/VMRESUME exits, from the handler's start.
    pub const ROOT_ENTRY: usize = 2;
    /// Reflection: reading vmcs02 back.
    pub const EXIT_READBACK: usize = 3;
    /// Reflection: `reflect_exit` and the VM-exit MSR areas.
    pub const EXIT_REFLECT: usize = 4;
    /// Reflection: the shadow VMCS filled from vmcs12.
    pub const EXIT_SHADOW: usize = 5;
    /// Entry: the shadow VMCS drained into vmcs12.
    pub const ENTRY_DRAIN: usize = 6;
    /// Entry: the environment and `plan_entry`'s checks.
    pub const ENTRY_CHECKS: usize = 7;
    /// Entry: the plan's pages validated and read, the MSR bitmap merged.
    pub const ENTRY_PAGES: usize = 8;
    /// Entry: vmcs02's image built (`build_vmcs02`, MSR-load area).
    pub const ENTRY_BUILD: usize = 9;
    /// Entry: pins, VMPTRLD of vmcs02 and its fields written.
    pub const ENTRY_WRITE: usize = 10;
    /// The host's INVVPID exits, whole.
    pub const ROOT_INVVPID: usize = 11;
    /// The host's XSETBV exits, whole.
    pub const ROOT_XSETBV: usize = 12;
    /// The host's other VMX-instruction exits (not VMLAUNCH/VMRESUME,
    /// INVVPID), whole.
    pub const ROOT_VMX_OTHER: usize = 13;
    /// Number of phases.
    pub const COUNT: usize = 14;
}

/// The shadow EPT's own cost (issue 10's benchmarks), hypervisor-wide,
/// counted in every build: two RDTSC and two atomic adds per shadow EPT
/// violation or INVEPT, which cost thousands of cycles themselves
/// (Documentation/shadow-ept.rst, "Benchmarks").  Class `c` has its TSC
/// cycles summed in slot `2 * c` and its count in slot `2 * c + 1`
/// (`HypGlobal::shadow_cost`), read with NESTED_STATS selectors
/// `0x610 + slot`, never reset.
pub mod cost {
    /// EPT violations on a shadow EPT that installed a leaf (or found it
    /// present): the guest resumes.  Cycles from the start of the exit's
    /// handling in `l2_exit` (before the lock) to the decision to resume.
    pub const FAULT_INSTALLED: usize = 0;
    /// EPT violations reflected to the host as EPT12's: the same span (the
    /// reflection itself is in the `cyc_exit_*` phases).
    pub const FAULT_REFLECTED: usize = 1;
    /// EPT violations that found no memory (the guest re-faults), a page
    /// not the host's to give (triple fault) or a misconfiguration.
    pub const FAULT_OTHER: usize = 2;
    /// The host's INVEPTs whose re-validation kept every shadow it named
    /// that maps something (none retired): `PageStates::shadow_invept`.
    pub const INVEPT_KEPT: usize = 3;
    /// INVEPTs that retired at least one shadow (its flush on every CPU
    /// and its shares returned included).
    pub const INVEPT_RETIRED: usize = 4;
    /// INVEPTs that named no shadow mapping anything.
    pub const INVEPT_NONE: usize = 5;
    /// Number of classes.
    pub const COUNT: usize = 6;
    /// Slots of `HypGlobal::shadow_cost`.
    pub const SLOTS: usize = 2 * COUNT;
}

/// The TSC, in every build (the shadow EPT's [`cost`]).
#[inline(always)]
pub(crate) fn tsc() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: RDTSC reads the time-stamp counter; no memory, no side
    // effect (CR4.TSD does not apply in ring 0).
    unsafe { core::arch::asm!("rdtsc", out("eax") lo, out("edx") hi, options(nomem, nostack)) };
    (u64::from(hi) << 32) | u64::from(lo)
}

/// Adds the cycles since `since` ([`tsc`]) and one event to [`cost`]
/// class `class`.
fn add_cost(global: &HypGlobal, class: usize, since: u64) {
    let d = tsc().wrapping_sub(since);
    if let Some(c) = global.shadow_cost.get(2 * class) {
        c.fetch_add(d, Ordering::Relaxed);
    }
    if let Some(c) = global.shadow_cost.get(2 * class + 1) {
        c.fetch_add(1, Ordering::Relaxed);
    }
}

/// The TSC in debug builds (phase accounting), 0 in production builds.
#[inline(always)]
pub(crate) fn phase_clock() -> u64 {
    #[cfg(pkvm_debug)]
    {
        let (lo, hi): (u32, u32);
        // SAFETY: RDTSC reads the time-stamp counter; no memory, no side
        // effect (CR4.TSD does not apply in ring 0).
        unsafe { core::arch::asm!("rdtsc", out("eax") lo, out("edx") hi, options(nomem, nostack)) };
        (u64::from(hi) << 32) | u64::from(lo)
    }
    #[cfg(not(pkvm_debug))]
    {
        0
    }
}

/// This CPU's nested-VMX state, in its own pool page; only this CPU's
/// exit handler touches it (exclusive as `CpuLocal` is).
pub struct NestedCpu {
    /// Scratch VMCS image: vmcs02 as built before it is written to the
    /// CPU, then vmcs02 as read back at an exit.
    image: MemVmcs,
    /// What the live vmcs02 holds (re-entries write only differences).
    v02: Vmcs02Cache,
    /// The words of the merged MSR bitmap that depend on the host's
    /// bitmap (`merge::HostWords`), once the merged page was set up (all
    /// other words all ones) at the first entry on this CPU.
    msr_words: Option<HostWords>,
    /// vmcs02 is the current VMCS (the host's guest runs or just exited).
    in_l2: bool,
    /// vmcs02 is live: built from `vmcs12`, launched on this CPU, holding
    /// its pins.
    live: bool,
    /// The vmcs12 vmcs02 was built from (while `live`).
    vmcs12: u64,
    /// The host frames this vmcs02 pinned.
    pins: [u64; PINS_PER_VMCS02],
    /// How many of `pins` are used.
    nr_pins: usize,
    /// The vmcs12 the shadow VMCS mirrors and vmcs01 links (VMCS
    /// shadowing on), if any.
    shadowing: Option<u64>,
    /// The shadow VMCS's fields were probed and the bitmaps built.
    shadow_probed: bool,
    /// Fields the shadow VMCS serves (probed on this CPU: shadowable by
    /// `field_class::shadow_of` and implemented by the CPU).
    shadow_ok: FieldSet,
    /// Counters ([`stat`]).
    pub stats: [u64; stat::COUNT],
    /// Reflected exits by basic reason (0..=75).
    /// (32-bit: the per-CPU page is full; a debug count, wrapping.)
    pub reflected_by_reason: [u32; 76],
    /// Root-mode cycles by [`phase`] (debug builds).
    pub cycles: [u64; phase::COUNT],
    /// EPTP12 of the shadow EPT vmcs02 runs on (0: vmcs12 does not use
    /// EPT, vmcs02 runs on the host EPT).
    ept02_eptp12: u64,
    /// The EPT12 exit to reflect instead of vmcs02's own (the shadow EPT's
    /// fault path found EPT12 refusing the access), packed (the page is
    /// full): see [`pack_ept12_exit`]; 0 for none.
    ept12_exit: u64,
}

/// Packs an [`reflect::Ept12Exit`] into a word: bit 63 a violation (its
/// qualification in bits 15:0, its level in bits 19:16), bit 62 a
/// misconfiguration.
fn pack_ept12_exit(w: reflect::Ept12Exit) -> u64 {
    match w {
        reflect::Ept12Exit::Violation(v) => {
            1 << 63 | (v.qualification & 0xffff) | u64::from(v.level & 0xf) << 16
        }
        reflect::Ept12Exit::Misconfig => 1 << 62,
    }
}

/// The [`reflect::Ept12Exit`] [`pack_ept12_exit`] packed, if any.
fn unpack_ept12_exit(x: u64) -> Option<reflect::Ept12Exit> {
    if x & 1 << 63 != 0 {
        Some(reflect::Ept12Exit::Violation(
            crate::hv::vmx::nested::ept12_walk::Violation {
                qualification: x & 0xffff,
                level: ((x >> 16) & 0xf) as u8,
            },
        ))
    } else if x & 1 << 62 != 0 {
        Some(reflect::Ept12Exit::Misconfig)
    } else {
        None
    }
}

const _: () = assert!(core::mem::size_of::<NestedCpu>() <= 4096);

impl NestedCpu {
    /// Nothing built, nothing pinned.
    pub const fn new() -> Self {
        Self {
            image: MemVmcs::new(),
            v02: Vmcs02Cache::new(),
            msr_words: None,
            in_l2: false,
            live: false,
            vmcs12: 0,
            pins: [0; PINS_PER_VMCS02],
            nr_pins: 0,
            shadowing: None,
            shadow_probed: false,
            shadow_ok: FieldSet::new(),
            stats: [0; stat::COUNT],
            reflected_by_reason: [0; 76],
            cycles: [0; phase::COUNT],
            ept02_eptp12: 0,
            ept12_exit: 0,
        }
    }

    fn count(&mut self, i: usize) {
        if let Some(c) = self.stats.get_mut(i) {
            *c = c.wrapping_add(1);
        }
    }

    /// Adds the cycles since `since` ([`phase_clock`]) to phase `p`;
    /// returns the clock now.
    fn account(&mut self, p: usize, since: u64) -> u64 {
        let now = phase_clock();
        if let Some(c) = self.cycles.get_mut(p) {
            *c = c.wrapping_add(now.wrapping_sub(since));
        }
        now
    }
}

/// Adds the cycles of one whole exit (`handle_exit`, from `since`) to
/// this CPU's phase counters: [`phase::ROOT_ALL`], and `kind` if any.
pub(crate) fn account_exit(cpu: &HypCpu, kind: Option<usize>, since: u64) {
    // SAFETY: the exit handler of this CPU; the reference is dropped here.
    let ns = unsafe { nested_state(cpu) };
    let d = phase_clock().wrapping_sub(since);
    for p in [Some(phase::ROOT_ALL), kind].iter().flatten() {
        if let Some(c) = ns.cycles.get_mut(*p) {
            *c = c.wrapping_add(d);
        }
    }
}

impl Default for NestedCpu {
    fn default() -> Self {
        Self::new()
    }
}

/// This CPU's [`NestedCpu`].
///
/// # Safety
///
/// Only the exit handler of `cpu`'s CPU calls this, and it does not keep
/// two of the references alive at once (as `HypCpu::local`).
#[allow(clippy::mut_from_ref)]
pub(crate) unsafe fn nested_state(cpu: &HypCpu) -> &mut NestedCpu {
    // SAFETY: `state_va` is this CPU's pool page holding a `NestedCpu`
    // (written before launch), exclusive by the caller's contract.
    unsafe { &mut *(cpu.nested.state_va as *mut NestedCpu) }
}

/// Whether the current VMCS of this CPU is vmcs02.
pub(crate) fn in_l2(cpu: &HypCpu) -> bool {
    // SAFETY: the exit handler of this CPU; the reference is dropped here.
    unsafe { nested_state(cpu) }.in_l2
}

/// VMPTRLD of a hypervisor VMCS (vmcs01 or vmcs02).
fn load_vmcs(pa: u64) -> bool {
    // SAFETY: root mode; `pa` is one of this CPU's VMCS pages in the pool
    // (vmcs01 or vmcs02), with the CPU's revision identifier.
    unsafe { vmx::vmptrld(pa) }.is_ok()
}

/// Drops vmcs02: VMCLEAR (it must be launched again), its pins returned.
/// vmcs01 is current (or becomes so right after).
fn release_vmcs02(cpu: &HypCpu, ns: &mut NestedCpu, st: &mut PageStates) {
    for &p in ns.pins.iter().take(ns.nr_pins) {
        st.unpin_host_frame(p);
    }
    ns.nr_pins = 0;
    if ns.live {
        // SAFETY: root mode; vmcs02 is this CPU's own VMCS page.  VMCLEAR
        // of a VMCS that is not current leaves the current one alone.
        let _ = unsafe { vmx::vmclear(cpu.nested.vmcs02_pa) };
    }
    ns.live = false;
    ns.v02.forget_all();
}

/// After a VMX instruction of the host (vmcs01 current): VMCLEAR of the
/// vmcs12 vmcs02 was built from, or VMXOFF, ends vmcs02's life on this
/// CPU.  Under the lock the instruction held.
fn after_instruction(cpu: &HypCpu, insn: Insn, st: &mut PageStates, mode: &VmxMode) {
    // SAFETY: the exit handler of this CPU.
    let ns = unsafe { nested_state(cpu) };
    if !ns.live && ns.nr_pins == 0 {
        return;
    }
    let (_, cache) = st.nested_parts();
    let gone = match insn {
        Insn::Vmxoff => !mode.is_on(),
        Insn::Vmclear => !cache.contains(ns.vmcs12),
        _ => false,
    };
    if gone {
        release_vmcs02(cpu, ns, st);
    }
}

/// What [`enter`] did.
pub(crate) enum Entered {
    /// vmcs02 is current and set up: enter it (VMLAUNCH if
    /// `HypCpu::launch_next`, else VMRESUME).
    Guest,
    /// The entry failed the architectural way and was applied to vmcs01
    /// (VMfailValid: RFLAGS and skip; failed entry: the host resumes at
    /// vmcs12's host RIP).
    Host,
}

/// The environment of the entry checks on this CPU (vmcs01 current).
fn entry_env() -> EntryEnv {
    let phys = if cpuid(0x8000_0000, 0).eax >= 0x8000_0008 {
        (cpuid(0x8000_0008, 0).eax & 0xff) as u8
    } else {
        36
    };
    let la57 = rd(GUEST_CR4) & (1 << 12) != 0;
    let l1 = cpuid(1, 0);
    let l7 = cpuid(7, 0);
    let l7_1 = if l7.eax >= 1 { cpuid(7, 1).eax } else { 0 };
    let (pmu_eax, pmu_edx) = if cpuid(0, 0).eax >= 0xa {
        let p = cpuid(0xa, 0);
        (p.eax, p.edx)
    } else {
        (0, 0)
    };
    EntryEnv {
        maxphyaddr: phys,
        linear_bits: if la57 { 57 } else { 48 },
        l1_ia32e: rd(GUEST_IA32_EFER) & (1 << 10) != 0,
        cr4_supported: host_policy::cr4_supported(host_policy::Cr4Cpuid {
            l1_ecx: l1.ecx,
            l1_edx: l1.edx,
            l7_ebx: l7.ebx,
            l7_ecx: l7.ecx,
            l7_edx: l7.edx,
            l7_1_eax: l7_1,
        }),
        perf_global_valid: perf_global_mask(pmu_eax, pmu_edx),
    }
}

/// The VPID of the host's guests on every CPU: distinct from the host's
/// (`HOST_VPID`); a change of vmcs12 on a CPU flushes it.
const GUEST_VPID: u16 = HOST_VPID + 1;

/// VMfailValid(`n`) of the host's VMLAUNCH/VMRESUME: the error in the
/// current vmcs12, ZF, the instruction skipped (by the caller).
fn entry_vmfail(v12: &mut Vmcs12, n: u32, ns: &mut NestedCpu) -> Entered {
    let _ = v12.vmcs.set_exit_info(VM_INSTRUCTION_ERROR, n);
    let _ = vmcs().write(GUEST_RFLAGS, Outcome::FailValid(n).rflags(rd(GUEST_RFLAGS)));
    skip_host_instruction();
    ns.count(stat::FAILED_ENTRIES);
    Entered::Host
}

/// A failed VM entry (exit reason with bit 31) reflected to the host:
/// vmcs01 gets vmcs12's host state (vmcs01 current).
fn entry_failure_exit(v12: &mut Vmcs12, reason: u16, qual: u64, ns: &mut NestedCpu) -> Entered {
    let mut v01 = vmcs();
    if reflect::reflect_entry_failure(reason, qual, &mut v12.vmcs, &mut v01).is_err() {
        ns.count(stat::UNEXPECTED);
    }
    ns.count(stat::FAILED_ENTRIES);
    Entered::Host
}

fn skip_host_instruction() {
    let len = u64::from(rd(VM_EXIT_INSTRUCTION_LEN));
    let _ = vmcs().write(GUEST_RIP, rd(GUEST_RIP).wrapping_add(len));
}

/// The VM entry of the host's current vmcs12 at `pa12` (its VMLAUNCH or
/// VMRESUME passed the instruction's own checks; vmcs01 current):
/// `merge::plan_entry`'s checks, the host pages validated (host-owned
/// RAM only, see `HostMemory`), read and pinned, the merged MSR bitmap,
/// the VM-entry MSR-load area, vmcs02 built and made current.
pub(crate) fn enter(cpu: &HypCpu, local: &mut CpuLocal, pa12: u64) -> Entered {
    // SAFETY: `global` points at the hypervisor-wide state in the pool,
    // alive while any CPU runs under it.
    let global = unsafe { &*cpu.global };
    // SAFETY: the exit handler of this CPU, the only reference.
    let ns = unsafe { nested_state(cpu) };
    let t0 = phase_clock();
    let env = entry_env();
    let mut st = global.page_states();
    let ept02 = ept02_prepare(&mut st, pa12);
    let (mut mem, cache) = st.nested_parts();
    watch_tag(cache, vmcs12::TAG_ENTER);
    let Some(v12) = cache.get(&mut mem, pa12) else {
        // The page left the host between the checks and here: cannot be
        // (same lock), but never touch it.
        let _ = vmcs().write(GUEST_RFLAGS, Outcome::FailInvalid.rflags(rd(GUEST_RFLAGS)));
        skip_host_instruction();
        return Entered::Host;
    };
    let Some(offer) = global.offer_caps else {
        return entry_vmfail(v12, err::ENTRY_INVALID_CONTROLS, ns);
    };
    // SDM order: MOV-SS blocking (checked by the instruction), then the
    // launch state (likewise), then controls, host state, guest state.
    let plan = match merge::plan_entry(&v12.vmcs, &offer, &env) {
        Ok(p) => p,
        Err(EntryFailure::VmFail(f)) => return entry_vmfail(v12, f.error, ns),
        Err(EntryFailure::Exit {
            reason,
            qualification,
        }) => return entry_failure_exit(v12, reason, qualification, ns),
    };
    let t0 = ns.account(phase::ENTRY_CHECKS, t0);
    // The host pages: validated (and read) under the lock, so nothing
    // changes them between here and the pins.
    // SAFETY: `bitmap02_va` is this CPU's pool page for the merged
    // bitmap, used only by this CPU's exit handler.
    let bitmap02 = unsafe { &mut *(cpu.nested.bitmap02_va as *mut [u64; 512]) };
    // SAFETY: `hv_msr_bitmap_va` is the hypervisor's policy bitmap page
    // (pool), written before launch and only read afterwards.
    let hv_bitmap = unsafe { &*(global.hv_msr_bitmap_va as *const [u64; 512]) };
    let words = match ns.msr_words {
        Some(w) => w,
        None => {
            // First entry on this CPU: the words the policy fully
            // intercepts are all ones in the merge, once and for all.
            for w in bitmap02.iter_mut() {
                // SAFETY: a word of this CPU's merged-bitmap page
                // (volatile: a plain fill may become a call to memset,
                // which root mode may not make).
                unsafe { core::ptr::from_mut(w).write_volatile(u64::MAX) };
            }
            let w = HostWords::of(hv_bitmap);
            ns.msr_words = Some(w);
            w
        }
    };
    let mut host_bitmap = false;
    let mut pdptes = None;
    // The frames the live vmcs02 of this vmcs12 holds pinned (none for a
    // new one).
    let same = ns.live && ns.vmcs12 == pa12;
    let held_pins = ns.pins;
    let n_held = if same { ns.nr_pins } else { 0 };
    let mut to_pin = [0u64; PINS_PER_VMCS02];
    let mut n_pin = 0;
    let mut push_pin = |pa: u64| {
        if let Some(s) = to_pin.get_mut(n_pin) {
            *s = pa;
            n_pin += 1;
        }
    };
    push_pin(pa12);
    for page in plan.pages() {
        let ok = match page.usage {
            PageUse::MsrBitmap => {
                // Only the words the policy does not fully intercept,
                // read again at every entry.
                host_bitmap = true;
                mem.read_page_words(page.pa, &words.0, bitmap02)
            }
            PageUse::LinkPointer => {
                let mut b = [0u8; 4];
                if !mem.read_bytes(page.pa, &mut b) {
                    false
                } else if let Err(f) = merge::check_link_pointer(u32::from_le_bytes(b), &offer) {
                    return fail_plan(v12, f, ns);
                } else {
                    true
                }
            }
            PageUse::Pdptes => {
                let mut p = [0u64; 4];
                if !mem.read_words(page.pa, &mut p) {
                    false
                } else if let Err(f) = merge::check_pdptes(&p, env.maxphyaddr) {
                    return fail_plan(v12, f, ns);
                } else {
                    pdptes = Some(p);
                    true
                }
            }
            _ => {
                // A frame this live vmcs02 holds pinned is still the
                // host's own: no transition takes a pinned frame from the
                // host (Documentation/page-states.rst "Pinned host
                // frames"; the invariant checker checks it).  Any other
                // is checked now.
                let held =
                    page.usage.pinned() && held_pins.iter().take(n_held).any(|&p| p == page.pa);
                // A frame to pin may also be one a guest maps through a
                // shadow EPT (`HostMemory::pinnable`: nothing retired).
                let owned = held || (page.usage.pinned() && mem.pinnable(page.pa)) || {
                    let mut b = [0u8; 1];
                    mem.read_bytes(page.pa & !0xfff, &mut b)
                };
                if owned && page.usage.pinned() {
                    push_pin(page.pa);
                }
                owned
            }
        };
        if !ok {
            return fail_plan(v12, page.usage.refusal(), ns);
        }
    }
    // The VM-exit MSR areas are used only at the guest's exit: on pages
    // the host does not own, fail the entry now rather than a VMX abort
    // then (hostile-host fix; `MsrArea::pages`).
    let owned = |mem: &mut HostMemory<'_>, area: merge::MsrArea| {
        let mut pages = area.pages(offer.misc);
        pages.all(|pa| mem.read_bytes(pa, &mut [0u8; 1]))
    };
    if !owned(&mut mem, plan.exit_msr_store) || !owned(&mut mem, plan.exit_msr_load) {
        return fail_plan(v12, merge::exit_area_refusal(), ns);
    }
    // The merged MSR bitmap: the host's (all ones without one) OR the
    // hypervisor's policy.
    merge::merge_msr_words(&words, host_bitmap, hv_bitmap, bitmap02);
    let t0 = ns.account(phase::ENTRY_PAGES, t0);
    // vmcs02's image, from vmcs12 and vmcs01 (current).
    let params = Vmcs02Params {
        offer,
        hw: global.hw_caps,
        msr_bitmap_pa: cpu.nested.bitmap02_pa,
        vpid: GUEST_VPID,
        pdptes,
    };
    ns.image = MemVmcs::new();
    let on = match ept02 {
        None => {
            ns.ept02_eptp12 = 0;
            merge::Ept02::HostEpt
        }
        Some((eptp12, Some(root))) => {
            ns.ept02_eptp12 = eptp12;
            merge::Ept02::Shadow(ept02_pointer(root))
        }
        Some((_, None)) => {
            // No memory for even a root: the entry fails (rare: the
            // reserve is refilled by the host half).
            ns.count(stat::UNEXPECTED);
            return entry_vmfail(v12, err::ENTRY_INVALID_CONTROLS, ns);
        }
    };
    if merge::build_vmcs02_on(&v12.vmcs, &Vmcs01Fields(vmcs()), &params, on, &mut ns.image).is_err()
    {
        ns.count(stat::UNEXPECTED);
        return entry_vmfail(v12, err::ENTRY_INVALID_CONTROLS, ns);
    }
    // The VM-entry MSR-load area, in software, before the entry.
    let area = plan.entry_msr_load;
    if area.count != 0 {
        let lenv = LoadEnv {
            efer: ns.image.read(GUEST_IA32_EFER).unwrap_or(0),
            linear_bits: env.linear_bits,
            perf_global_valid: env.perf_global_valid,
            perf_global_switched: rd(VM_ENTRY_CONTROLS) & (1 << 13) != 0,
        };
        let image = &mut ns.image;
        let mtrr = &mut local.mtrr;
        let r = msr_area::load_area(
            LoadArea::Entry,
            area.count,
            offer.misc,
            &lenv,
            |i| read_msr_entry(&mut mem, area.pa, i),
            rdmsr_safe,
            |d| apply_load(d, image, mtrr),
        );
        if let Err(f) = r {
            let f = match f {
                AreaFailure::Entry(f) => f,
                AreaFailure::Abort(_) => EntryFailure::Exit {
                    reason: 34,
                    qualification: 0,
                },
            };
            return fail_plan(v12, f, ns);
        }
    }
    let t0 = ns.account(phase::ENTRY_BUILD, t0);
    // Pins: the previous vmcs02's go, this one's come (same lock); a
    // re-entry that pins exactly the frames it holds keeps them.
    let unchanged = same
        && ns.nr_pins == n_pin
        && ns
            .pins
            .iter()
            .zip(to_pin.iter())
            .take(n_pin)
            .all(|(a, b)| a == b);
    if !unchanged {
        for &p in ns.pins.iter().take(ns.nr_pins) {
            st.unpin_host_frame(p);
        }
        ns.nr_pins = 0;
        for &p in to_pin.iter().take(n_pin) {
            if st.pin_host_frame(p) {
                if let Some(s) = ns.pins.get_mut(ns.nr_pins) {
                    *s = p;
                    ns.nr_pins += 1;
                }
            }
        }
    }
    if !same {
        // SAFETY: root mode; this CPU's vmcs02 page, not current: VMCLEAR
        // initialises it (launch state clear) for the VMLAUNCH.
        let _ = unsafe { vmx::vmclear(cpu.nested.vmcs02_pa) };
        // Another guest on this CPU: its translations under GUEST_VPID
        // are stale.
        invept_host(global);
        cpu.launch_next.store(1, Ordering::Relaxed);
        ns.v02.forget_all();
        ns.count(stat::LAUNCHES);
        ns.live = true;
        ns.vmcs12 = pa12;
    }
    drop(st);
    if !load_vmcs(cpu.nested.vmcs02_pa) {
        ns.count(stat::UNEXPECTED);
        // vmcs01 stays current and is resumed, never launched.
        cpu.launch_next.store(0, Ordering::Relaxed);
        ns.live = false;
        ns.v02.forget_all();
        let _ = load_vmcs(cpu.nested.vmcs01_pa);
        let mut st = global.page_states();
        let (mut mem, cache) = st.nested_parts();
        if let Some(v12) = cache.get(&mut mem, pa12) {
            return entry_vmfail(v12, err::ENTRY_INVALID_CONTROLS, ns);
        }
        return Entered::Host;
    }
    let mut v02 = vmcs();
    for i in ns.image.written() {
        if let (Some(info), Some(v)) = (FIELDS.get(i), ns.image.value_at(i)) {
            // Only what vmcs02 does not hold already (`Vmcs02Cache`: the
            // same vmcs02 as writing every field).
            if !ns.v02.needs_write(i, v) {
                continue;
            }
            // A guest-state field this CPU does not implement fails to
            // write and stays absent, as on the CPU itself; everything the
            // entry needs is checked by the CPU at the entry.
            if v02.write_raw(info.encoding, v).is_ok() {
                ns.v02.learn(i, v);
            } else {
                ns.v02.forget(i);
            }
        }
    }
    ns.in_l2 = true;
    if cfg!(pkvm_debug) {
        let mut st = global.page_states();
        let (_, cache) = st.nested_parts();
        watch_tag(cache, vmcs12::TAG_ENTER);
        cache.watch.trace([
            1 << 63
                | u64::from(cpu.cpu) << 32
                | u64::from(same) << 1
                | u64::from(cpu.launch_next.load(Ordering::Relaxed) != 0),
            rd(GUEST_RIP),
            rd(GUEST_RSP),
            u64::from(rd(VM_ENTRY_INTR_INFO)),
            u64::from(rd(GUEST_INTERRUPTIBILITY_INFO)),
            pa12,
        ]);
    }
    ns.account(phase::ENTRY_WRITE, t0);
    Entered::Guest
}

/// Debug builds: an exit of vmcs02 (current) into the watch's ring; the
/// guest's #PF at RIP 0 (issue 9's open msrs_test failure) freezes the
/// ring with the guest's stack read through its own page tables.
fn trace_exit(
    cache: &mut Vmcs12Cache,
    mem: &mut HostMemory<'_>,
    cpu: &HypCpu,
    raw: u32,
    qual: u64,
) {
    let rip = rd(GUEST_RIP);
    let rsp = rd(GUEST_RSP);
    let intr = rd(VM_EXIT_INTR_INFO);
    cache.watch.trace([
        u64::from(cpu.cpu) << 32 | u64::from(raw),
        rip,
        rsp,
        u64::from(rd(IDT_VECTORING_INFO)),
        u64::from(intr),
        qual,
    ]);
    if raw != 0 || intr & 0x8000_07ff != 0x8000_030e || rip != 0 {
        return;
    }
    let ctx = PagingCtx {
        cr0: rd(GUEST_CR0),
        cr3: rd(GUEST_CR3),
        cr4: rd(GUEST_CR4),
        efer: rd(GUEST_IA32_EFER),
        user: false,
        ac: false,
        phys_bits: 40,
    };
    let mut d = [0u64; vmcs12::DUMP_WORDS];
    d[0] = rsp;
    d[1] = ctx.cr3;
    d[2] = qual;
    d[3] = host_walk::translate(mem, &ctx, rsp, false).unwrap_or(u64::MAX);
    d[4] = host_walk::translate(mem, &ctx, rsp.wrapping_sub(8), false).unwrap_or(u64::MAX);
    d[5] = rd(GUEST_RFLAGS);
    d[6] = rd(GUEST_IA32_EFER);
    d[7] = rd(GUEST_CR4);
    for (k, w) in d.iter_mut().skip(8).enumerate() {
        let la = rsp.wrapping_sub(0x60).wrapping_add(8 * k as u64);
        let mut b = [0u8; 8];
        *w = match host_walk::read_linear(mem, &ctx, la, &mut b) {
            Ok(()) => u64::from_le_bytes(b),
            Err(_) => 0xdead_0000_0000_0000 | (la & 0xffff),
        };
    }
    cache.watch.freeze(&d);
}

/// vmcs01 as the merge reads it: a field this CPU does not implement
/// (e.g. CET or PKRS host state) reads as 0, as it is absent from vmcs02
/// too; writes are refused (the merge never writes vmcs01).
struct Vmcs01Fields(vmx::CurrentVmcs);

impl VmcsAccess for Vmcs01Fields {
    fn read_raw(&self, encoding: u32) -> Result<u64, VmcsError> {
        Ok(self.0.read_raw(encoding).unwrap_or(0))
    }

    fn write_raw(&mut self, _encoding: u32, _value: u64) -> Result<(), VmcsError> {
        Err(VmcsError::ReadOnly)
    }
}

fn fail_plan(v12: &mut Vmcs12, f: EntryFailure, ns: &mut NestedCpu) -> Entered {
    match f {
        EntryFailure::VmFail(v) => entry_vmfail(v12, v.error, ns),
        EntryFailure::Exit {
            reason,
            qualification,
        } => entry_failure_exit(v12, reason, qualification, ns),
    }
}

/// Entry `i` of the MSR area at `pa`, if its 16 bytes are the host's.
fn read_msr_entry(mem: &mut impl HostPhys, pa: u64, i: u32) -> Option<MsrEntry> {
    let at = pa.checked_add(u64::from(i) * 16)?;
    let mut b = [0u8; 16];
    mem.read_bytes(at, &mut b).then(|| MsrEntry::from_bytes(b))
}

fn rdmsr_safe(m: u32) -> Option<u64> {
    let mut v = 0u64;
    // SAFETY: the accessor recovers a #GP of RDMSR.
    (unsafe { super::entry::pkvm_rdmsr_safe(m, &mut v) } == 0).then_some(v)
}

fn wrmsr_safe(m: u32, v: u64) -> bool {
    // SAFETY: the accessor recovers a #GP of WRMSR; the decision came
    // from `msr_area`'s policy.
    unsafe { super::entry::pkvm_wrmsr_safe(m, v) == 0 }
}

/// Performs one MSR-load decision into `target` (a VMCS image or the
/// current VMCS).
fn apply_load(d: MsrLoad, target: &mut impl VmcsAccess, mtrr: &mut MtrrShadow) -> bool {
    match d {
        MsrLoad::Wrmsr { index, value } => wrmsr_safe(index, value),
        MsrLoad::VmcsField { encoding, value } => target.write_raw(encoding, value).is_ok(),
        MsrLoad::MtrrShadow { slot, value } => {
            mtrr.set(slot, value);
            true
        }
        MsrLoad::Ignore => true,
    }
}

/// INVEPT single-context of the host EPT: drops every translation the
/// host and its guests cached (all VPIDs).
fn invept_host(global: &HypGlobal) {
    // SAFETY: root mode; INVEPT single-context is a required feature.
    let _ = unsafe { vmx::invept(vmx::InveptType::SingleContext, global.host_eptp) };
}

/// The host's bitmaps, read from its pages when `reflect::owner` asks
/// (an unreadable page intercepts everything: the exit goes to the host).
struct Bitmaps<'a, 'b> {
    mem: RefCell<&'a mut HostMemory<'b>>,
    io_a: u64,
    io_b: u64,
    msr: Option<u64>,
}

impl Bitmaps<'_, '_> {
    fn bit(&self, pa: u64, bit: u64) -> bool {
        let Ok(mut mem) = self.mem.try_borrow_mut() else {
            return true;
        };
        let mut b = [0u8; 1];
        if !mem.read_bytes(pa + bit / 8, &mut b) {
            return true;
        }
        b[0] & (1 << (bit % 8)) != 0
    }
}

impl HostBitmaps for Bitmaps<'_, '_> {
    fn io(&self, port: u16) -> bool {
        let (page, bit) = if port < 0x8000 {
            (self.io_a, u64::from(port))
        } else {
            (self.io_b, u64::from(port - 0x8000))
        };
        self.bit(page, bit)
    }

    fn msr(&self, msr: u32, write: bool) -> bool {
        let Some(pa) = self.msr else {
            return true;
        };
        let (base, idx) = match msr {
            0..=0x1fff => (0u64, u64::from(msr)),
            0xc000_0000..=0xc000_1fff => (1024, u64::from(msr - 0xc000_0000)),
            _ => return true,
        };
        let off = base + if write { 2048 } else { 0 };
        self.bit(pa + off, idx)
    }
}

/// How the exit handler continues after an exit of vmcs02.
pub(crate) enum L2Exit {
    /// Enter vmcs02 again (the hypervisor handled the exit).
    ResumeGuest,
    /// vmcs01 is current again: the host runs (an exit reflected).
    ResumeHost,
    /// The hypervisor must handle an MSR access of the guest by its
    /// policy (vmcs02 current): RDMSR if `false`, WRMSR if `true`.
    MsrPolicy(bool),
}

/// A value of the current VMCS (vmcs02 here).
fn gpr_of(regs: &GuestRegs, n: u8) -> u64 {
    match gpr_slot(n) {
        Some(i) => regs.gpr.get(i).copied().unwrap_or(0),
        None => rd(GUEST_RSP),
    }
}

/// Injects an event into the guest at the next entry of vmcs02 (current).
fn inject_l2(info: u32, error: Option<u32>) {
    let mut v = vmcs();
    if let Some(e) = error {
        let _ = v.write(VM_ENTRY_EXCEPTION_ERROR_CODE, e);
    }
    let _ = v.write(VM_ENTRY_INSTRUCTION_LEN, rd(VM_EXIT_INSTRUCTION_LEN));
    let _ = v.write(VM_ENTRY_INTR_INFO, info | 1 << 31);
}

/// A guest exit the hypervisor keeps (vmcs02 current, resumed at once)
/// that interrupted the delivery of an event (IDT-vectoring information
/// valid: an event the host injected, or one of the guest's own): the
/// exit cleared the VM-entry interruption information, so the event is
/// given to the entry again, as the CPU would have delivered it.
/// Without this, an event the host injected (KVM's #GP for an MSR, an
/// interrupt) was lost when its delivery met a stale host-EPT
/// translation or the on-demand part of the identity map.
fn redeliver_interrupted_event() {
    let idt = InterruptionInfo(rd(IDT_VECTORING_INFO));
    if !idt.is_valid() {
        return;
    }
    let mut v = vmcs();
    if idt.has_error_code() {
        let _ = v.write(VM_ENTRY_EXCEPTION_ERROR_CODE, rd(IDT_VECTORING_ERROR_CODE));
    }
    let _ = v.write(VM_ENTRY_INSTRUCTION_LEN, rd(VM_EXIT_INSTRUCTION_LEN));
    let _ = v.write(VM_ENTRY_INTR_INFO, idt.for_entry().0);
}

/// The guest resumes after an EPT violation of its shadow EPT that the
/// hypervisor resolved (`qual`: the exit qualification): the event whose
/// delivery the violation interrupted is delivered again
/// ([`redeliver_interrupted_event`]: without it an interrupt KVM injected
/// was lost whenever its delivery touched a page the shadow did not map
/// yet, e.g. the guest's IDT or stack after an INVEPT); and if none was
/// and the violation came from an IRET that unblocked NMIs (bit 12),
/// blocking by NMI is set again, as the SDM asks of a VMM that resumes
/// such a guest (Vol. 3C, "Exit Qualification for EPT Violations").
fn resume_after_ept_violation(qual: u64) {
    if InterruptionInfo(rd(IDT_VECTORING_INFO)).is_valid() {
        redeliver_interrupted_event();
    } else if qual & (1 << 12) != 0 {
        let intr = rd(GUEST_INTERRUPTIBILITY_INFO);
        let _ = vmcs().write(GUEST_INTERRUPTIBILITY_INFO, intr | 1 << 3);
    }
}

/// #GP(0) into the guest.
pub(crate) fn inject_gp_l2() {
    inject_l2(13 | 3 << 8 | 1 << 11, Some(0));
}

/// An exit of vmcs02 (current): who owns it, then the hypervisor's own
/// handling or the reflection to the host.
pub(crate) fn l2_exit(regs: &mut GuestRegs, cpu: &HypCpu, local: &mut CpuLocal) -> L2Exit {
    // SAFETY: `global` points at the hypervisor-wide state in the pool.
    let global = unsafe { &*cpu.global };
    // SAFETY: the exit handler of this CPU, the only reference.
    let ns = unsafe { nested_state(cpu) };
    // The shadow EPT's fault cost counts from here (`cost`).
    let t_exit = if ns.ept02_eptp12 != 0 { tsc() } else { 0 };
    ns.count(stat::L2_EXITS);
    // The CPU saved the guest state; the handling below may write it and
    // the VM-entry event fields.
    ns.v02.exited();
    let raw = rd(VM_EXIT_REASON);
    if raw & (1 << 31) == 0 {
        ns.count(stat::ENTRIES);
    }
    let basic = raw as u16;
    let qual = rd(EXIT_QUALIFICATION);
    let cr_value = if basic == reflect::reason::CR_ACCESS {
        gpr_of(regs, ((qual >> 8) & 0xf) as u8)
    } else {
        0
    };
    let xsaves = if basic == reflect::reason::XSAVES || basic == reflect::reason::XRSTORS {
        let edx_eax = (regs.gpr[reg::RDX] << 32) | (regs.gpr[reg::RAX] & 0xffff_ffff);
        edx_eax & rdmsr_safe(0xda0).unwrap_or(0)
    } else {
        0
    };
    // The hypervisor's shootdown NMI ends here, before the lock: the
    // sender holds it while it waits for this CPU, and after an NMI exit
    // NMIs stay blocked in root mode, so the root NMI stub cannot answer
    // (the generation check before the entry flushes and acknowledges).
    if basic == reflect::reason::EXCEPTION_NMI
        && InterruptionInfo(rd(VM_EXIT_INTR_INFO)).event_type() == EventType::Nmi
        && cpu.shootdown_nmi.swap(0, Ordering::AcqRel) != 0
    {
        ns.count(stat::KEPT);
        redeliver_interrupted_event();
        return L2Exit::ResumeGuest;
    }
    let ev = ExitEvent {
        reason: raw,
        qualification: qual,
        intr_info: rd(VM_EXIT_INTR_INFO),
        intr_error_code: rd(VM_EXIT_INTR_ERROR_CODE),
        msr: regs.gpr[reg::RCX] as u32,
        cr_value,
        xsaves_components: xsaves,
    };
    let mut st = global.page_states();
    let (mut mem, cache) = st.nested_parts();
    watch_tag(cache, vmcs12::TAG_L2_EXIT);
    if cfg!(pkvm_debug) {
        trace_exit(cache, &mut mem, cpu, raw, qual);
    }
    let Some(v12) = cache.get(&mut mem, ns.vmcs12) else {
        // The pinned vmcs12 cannot be read: a hypervisor bug.  The host
        // cannot be given this exit; its guest is resumed no more.
        ns.count(stat::UNEXPECTED);
        drop(st);
        give_up(cpu, ns)
    };
    if raw & (1 << 31) == 0 {
        v12.launched = true;
    } else {
        // A failed VM entry of vmcs02 (guest state, MSR loading, machine
        // check) leaves vmcs02's launch state as it was: after a first
        // VMLAUNCH it is still clear, and the next entry's VMRESUME would
        // fail (VMfailValid 5, given to the host as its own error).  End
        // vmcs02's life: the next entry rebuilds it with VMCLEAR and
        // VMLAUNCH (found by the nested suite's entry_fuzz).
        ns.live = false;
    }
    let p1 = v12.vmcs.read(CPU_BASED_VM_EXEC_CONTROL).unwrap_or(0);
    let bm = Bitmaps {
        io_a: v12.vmcs.read(IO_BITMAP_A).unwrap_or(0),
        io_b: v12.vmcs.read(IO_BITMAP_B).unwrap_or(0),
        msr: (p1 & (1 << 28) != 0).then(|| v12.vmcs.read(MSR_BITMAP).unwrap_or(0)),
        mem: RefCell::new(&mut mem),
    };
    let owner = reflect::owner(&ev, &v12.vmcs, &bm);
    let mut synth_triple = false;
    match owner {
        Owner::Host => {}
        Owner::Hypervisor(hv) => match hv {
            HvExit::Nmi { then_host } => {
                // Not a shootdown NMI (handled above, before the lock).
                if !then_host {
                    inject_l2(2 | 2 << 8, None);
                    ns.count(stat::KEPT);
                    return L2Exit::ResumeGuest;
                }
            }
            HvExit::MachineCheck { then_host } => {
                if !then_host {
                    inject_l2(18 | 3 << 8, None);
                    ns.count(stat::KEPT);
                    return L2Exit::ResumeGuest;
                }
            }
            HvExit::ExternalInterrupt => {
                let intr = rd(GUEST_INTERRUPTIBILITY_INFO);
                let open = rd(GUEST_RFLAGS) & (1 << 9) != 0 && intr & 3 == 0;
                if open && ev.intr_info & (1 << 31) != 0 {
                    inject_l2(ev.intr_info & 0xff, None);
                    ns.count(stat::KEPT);
                    return L2Exit::ResumeGuest;
                }
                // Cannot be delivered now and the hypervisor opens no
                // windows: the host gets its guest back as a triple
                // fault (never happens with vmcs12 exiting on external
                // interrupts, as every KVM does).
                ns.count(stat::UNEXPECTED);
                synth_triple = true;
            }
            HvExit::HostEpt if ns.ept02_eptp12 != 0 => {
                match shadow_ept_fault(global, &mut st, ns, basic, qual, t_exit) {
                    Some(L2Exit::ResumeGuest) => {
                        resume_after_ept_violation(qual);
                        return L2Exit::ResumeGuest;
                    }
                    Some(_) => {}
                    None => synth_triple = true,
                }
            }
            HvExit::HostEpt => {
                let gpa = rd(GUEST_PHYSICAL_ADDRESS);
                let (r, w, x) = (qual & 1 != 0, qual & 2 != 0, qual & 4 != 0);
                let stale = basic == reflect::reason::EPT_VIOLATION
                    && Hpa::new(gpa & !0xfff).is_some_and(|p| st.host_may_access(p, r, w, x));
                if stale {
                    invept_host(global);
                    ns.count(stat::KEPT);
                    redeliver_interrupted_event();
                    return L2Exit::ResumeGuest;
                }
                if Hpa::new(gpa & !0xfff).is_some_and(|p| st.map_on_demand(p)) {
                    ns.count(stat::KEPT);
                    redeliver_interrupted_event();
                    return L2Exit::ResumeGuest;
                }
                // The guest touched memory the host does not own (its
                // shadow page tables, which the host writes, point there):
                // it gets nothing, the host sees its guest triple-fault.
                ns.count(stat::PROTECTED);
                synth_triple = true;
            }
            HvExit::MsrPolicy => {
                ns.count(stat::KEPT);
                return L2Exit::MsrPolicy(basic == reflect::reason::WRMSR);
            }
            HvExit::Cr4Shadow | HvExit::XssPolicy => {
                // CR4 bits only the hypervisor owns (VMXE) are not the
                // guest's to change; XSS components the policy forbids.
                inject_gp_l2();
                ns.count(stat::KEPT);
                return L2Exit::ResumeGuest;
            }
            HvExit::Window | HvExit::Unexpected => {
                ns.count(stat::UNEXPECTED);
                synth_triple = true;
            }
        },
    }
    drop(st);
    reflect_to_host(cpu, local, ns, synth_triple)
}

/// The exit of vmcs02 (current) reflected into the host's vmcs12, vmcs01
/// loaded with vmcs12's host state and made current; with `triple`, the
/// host sees a triple-fault exit of its guest instead.
fn reflect_to_host(cpu: &HypCpu, local: &mut CpuLocal, ns: &mut NestedCpu, triple: bool) -> L2Exit {
    // SAFETY: `global` points at the hypervisor-wide state in the pool.
    let global = unsafe { &*cpu.global };
    let t0 = phase_clock();
    // vmcs02 read back: the fields reflection reads (guest state, exit
    // information, the CR4 read shadow).
    ns.image = MemVmcs::new();
    {
        let v02 = vmcs();
        for (i, info) in FIELDS.iter().enumerate() {
            let c = class_at(global.vmx_params.ept, i);
            if matches!(c, Some(Class::GuestState) | Some(Class::ExitInfo))
                || info.encoding == CR4_READ_SHADOW.encoding()
            {
                if let Ok(v) = v02.read_raw(info.encoding) {
                    ns.image.load_at(i, v);
                    ns.v02.learn(i, v);
                }
            }
        }
    }
    if triple {
        for &(f, v) in [
            (
                VM_EXIT_REASON.encoding(),
                u64::from(reflect::reason::TRIPLE_FAULT),
            ),
            (EXIT_QUALIFICATION.encoding(), 0),
            (VM_EXIT_INTR_INFO.encoding(), 0),
            (IDT_VECTORING_INFO.encoding(), 0),
            (VM_EXIT_INSTRUCTION_LEN.encoding(), 0),
        ]
        .iter()
        {
            if let Some(i) = fields::index_of(f) {
                ns.image.load_at(i, v);
            }
        }
    }
    if !load_vmcs(cpu.nested.vmcs01_pa) {
        ns.count(stat::UNEXPECTED);
        give_up(cpu, ns)
    }
    ns.in_l2 = false;
    let t0 = ns.account(phase::EXIT_READBACK, t0);
    let basic = ns.image.read(VM_EXIT_REASON).unwrap_or(0) as u16;
    if let Some(c) = ns.reflected_by_reason.get_mut(usize::from(basic)) {
        *c = c.wrapping_add(1);
    }
    ns.count(stat::REFLECTED);
    let mut st = global.page_states();
    let (mut mem, cache) = st.nested_parts();
    watch_tag(cache, vmcs12::TAG_REFLECT);
    let Some(v12) = cache.get(&mut mem, ns.vmcs12) else {
        ns.count(stat::UNEXPECTED);
        drop(st);
        give_up(cpu, ns)
    };
    let mut v01 = vmcs();
    // From here `v12.vmcs.written()` lists what the exit changes (the
    // shadow VMCS is updated from it).
    v12.vmcs.forget_written();
    let r = match unpack_ept12_exit(core::mem::take(&mut ns.ept12_exit)) {
        Some(w) => reflect::reflect_ept12_exit(&w, &ns.image, &mut v12.vmcs, &mut v01),
        None => reflect::reflect_exit(&ns.image, &mut v12.vmcs, &mut v01),
    };
    let r = match r {
        Ok(r) => r,
        Err(_) => {
            ns.count(stat::UNEXPECTED);
            return L2Exit::ResumeHost;
        }
    };
    let exit_rsp = v12.vmcs.read(GUEST_RSP).unwrap_or(0);
    // The VM-exit MSR areas (a real exit only).
    if ns.image.read(VM_EXIT_REASON).unwrap_or(0) & (1 << 31) == 0 {
        let misc = global.offer_caps.map(|o| o.misc).unwrap_or(0);
        let store_pa = v12.vmcs.read(VM_EXIT_MSR_STORE_ADDR).unwrap_or(0);
        let store_n = v12.vmcs.read(VM_EXIT_MSR_STORE_COUNT).unwrap_or(0);
        let load_pa = v12.vmcs.read(VM_EXIT_MSR_LOAD_ADDR).unwrap_or(0);
        let load_n = v12.vmcs.read(VM_EXIT_MSR_LOAD_COUNT).unwrap_or(0);
        let mut abort = None;
        if store_n != 0 {
            let image = &ns.image;
            let view = &global.vmx_view;
            let mtrr = &local.mtrr;
            let mem_cell = RefCell::new(&mut mem);
            let res = msr_area::store_area(
                store_n,
                misc,
                |i| {
                    let mut m = mem_cell.try_borrow_mut().ok()?;
                    read_msr_entry(&mut **m, store_pa, i)
                },
                |src| match src {
                    MsrStore::Rdmsr(m) => rdmsr_safe(m),
                    MsrStore::VmcsField(e) => image.read_raw(e).ok(),
                    MsrStore::MtrrShadow(s) => mtrr.get(s),
                    MsrStore::VmxView(m) => offer::read_msr(view, m).flatten(),
                },
                |i, e| {
                    let Ok(mut m) = mem_cell.try_borrow_mut() else {
                        return false;
                    };
                    let at = store_pa.wrapping_add(u64::from(i) * 16);
                    m.write_bytes(at, &e.to_bytes())
                },
            );
            if let Err(AreaFailure::Abort(n)) = res {
                abort = Some(n);
            }
        }
        if abort.is_none() && load_n != 0 {
            let lenv = LoadEnv {
                efer: rd(GUEST_IA32_EFER),
                linear_bits: 48,
                perf_global_valid: entry_env().perf_global_valid,
                perf_global_switched: rd(VM_ENTRY_CONTROLS) & (1 << 13) != 0,
            };
            let mtrr = &mut local.mtrr;
            let mut v01 = vmcs();
            let res = msr_area::load_area(
                LoadArea::Exit,
                load_n,
                misc,
                &lenv,
                |i| read_msr_entry(&mut mem, load_pa, i),
                rdmsr_safe,
                |d| apply_load(d, &mut v01, mtrr),
            );
            if let Err(AreaFailure::Abort(n)) = res {
                abort = Some(n);
            }
        }
        if let Some(n) = abort {
            // VMX abort: the indicator in the vmcs12 region, and the
            // host CPU stops (as the CPU would: shutdown).
            let _ = mem.write_bytes(
                ns.vmcs12 + msr_area::VMX_ABORT_OFFSET as u64,
                &n.to_le_bytes(),
            );
            drop(st);
            give_up(cpu, ns)
        }
    }
    if r.flush_host_tlb {
        invept_host(global);
    }
    {
        let (_, cache) = st.nested_parts();
        cache.watch.exit_rsp(ns.vmcs12, exit_rsp);
    }
    stress_evict(global, &mut st);
    drop(st);
    let t0 = ns.account(phase::EXIT_REFLECT, t0);
    // The shadow VMCS shows the reflected exit.
    let current = match local.vmx {
        VmxMode::On { current, .. } => current,
        VmxMode::Off => None,
    };
    shadow_after(cpu, current, Resync::Dirty);
    // SAFETY: the exit handler of this CPU; `shadow_after`'s reference is
    // gone.
    unsafe { nested_state(cpu) }.account(phase::EXIT_SHADOW, t0);
    L2Exit::ResumeHost
}

// ---------------------------------------------------------------------
// The shadow EPT (`nested_ept=1`, Documentation/shadow-ept.rst).
// ---------------------------------------------------------------------

/// vmcs02's EPT pointer for shadow root `root`: write-back, 4 levels, no
/// accessed/dirty flags (as the host EPT's).
fn ept02_pointer(root: Hpa) -> u64 {
    crate::hv::mm::ept::Eptp::new_4level(root.raw(), false).0
}

/// Before an entry of vmcs12 `pa12`: if it uses EPT12, its EPTP12 and the
/// root of its shadow (created if needed; `None` inside: no memory).
/// Done before the vmcs12 is borrowed for the entry (the shadow set lives
/// in the same state); an invalid EPTP12 fails the entry checks later
/// (its shadow, empty, is evicted in time).
fn ept02_prepare(st: &mut PageStates, pa12: u64) -> Option<(u64, Option<Hpa>)> {
    let eptp12 = {
        let (mut mem, cache) = st.nested_parts();
        let v12 = cache.get(&mut mem, pa12)?;
        if !crate::hv::vmx::nested::entry_checks::uses_ept12(&v12.vmcs) {
            return None;
        }
        v12.vmcs.read(EPT_POINTER).ok()?
    };
    Some((eptp12, st.shadow_root(eptp12)))
}

/// An EPT violation (or misconfiguration) of vmcs02 running on a shadow
/// EPT: the fault path.  `Some(ResumeGuest)`: mapped, or no memory (the
/// guest re-faults); `Some(ResumeHost)`: reflect vmcs02's exit as EPT12's
/// (`ns.ept12_exit` set); `None`: the host sees a triple fault.  `since`:
/// the TSC at the start of the exit's handling, for [`cost`].
fn shadow_ept_fault(
    global: &HypGlobal,
    st: &mut PageStates,
    ns: &mut NestedCpu,
    basic: u16,
    qual: u64,
    since: u64,
) -> Option<L2Exit> {
    use super::global::ShadowFault;
    use crate::hv::mm::addr::Gpa;
    use crate::hv::vmx::nested::ept12_walk::{Access, WalkCtx};
    ns.count(stat::EPT_FAULTS);
    if basic != reflect::reason::EPT_VIOLATION {
        // A misconfiguration of a table the hypervisor built: a bug.
        ns.count(stat::UNEXPECTED);
        add_cost(global, cost::FAULT_OTHER, since);
        return None;
    }
    let Some(gpa) = Gpa::new(rd(GUEST_PHYSICAL_ADDRESS)) else {
        add_cost(global, cost::FAULT_OTHER, since);
        return None;
    };
    let ctx = WalkCtx {
        ept_vpid_cap: global.vmx_params.ept_vpid_cap,
        maxphyaddr: entry_env().maxphyaddr,
    };
    let exec_only = global.hw_caps.ept_vpid_cap & 1 != 0;
    let access = Access::from_qualification(qual);
    match st.shadow_fault(ns.ept02_eptp12, gpa, access, &ctx, exec_only) {
        ShadowFault::Mapped => {
            ns.count(stat::EPT_INSTALLS);
            ns.count(stat::KEPT);
            add_cost(global, cost::FAULT_INSTALLED, since);
            Some(L2Exit::ResumeGuest)
        }
        ShadowFault::NoMemory => {
            ns.count(stat::KEPT);
            add_cost(global, cost::FAULT_OTHER, since);
            Some(L2Exit::ResumeGuest)
        }
        ShadowFault::Reflect(w) => {
            ns.ept12_exit = pack_ept12_exit(w);
            add_cost(global, cost::FAULT_REFLECTED, since);
            Some(L2Exit::ResumeHost)
        }
        ShadowFault::NotShareable => {
            ns.count(stat::PROTECTED);
            add_cost(global, cost::FAULT_OTHER, since);
            None
        }
    }
}

/// The host's INVEPT (single-context or global): the shadow EPT set
/// re-validates the shadows named against EPT12 and drops those that are
/// stale, flushing every CPU before shares go back.
fn shadow_invept(
    global: &HypGlobal,
    st: &mut PageStates,
    inv: crate::hv::vmx::nested::vmx_op::Invept,
) {
    use crate::hv::vmx::nested::ept12_walk::WalkCtx;
    use crate::hv::vmx::nested::vmx_op::Invept;
    let ctx = WalkCtx {
        ept_vpid_cap: global.vmx_params.ept_vpid_cap,
        maxphyaddr: entry_env().maxphyaddr,
    };
    let exec_only = global.hw_caps.ept_vpid_cap & 1 != 0;
    let single = match inv {
        Invept::Single(e) => Some(e),
        Invept::All => None,
    };
    let t0 = tsc();
    let before = st.shadow_stats();
    st.shadow_invept(single, &ctx, exec_only);
    let after = st.shadow_stats();
    let class = if after.invalidated != before.invalidated {
        cost::INVEPT_RETIRED
    } else if after.kept != before.kept {
        cost::INVEPT_KEPT
    } else {
        cost::INVEPT_NONE
    };
    add_cost(global, class, t0);
}

/// The last CPU of the host left VMX operation: no guest runs, every
/// shadow EPT goes, every share back (a failure is an internal error the
/// invariant checker reports: the shadow stays listed).
fn shadow_last_vmxoff(st: &mut PageStates) {
    let _ = st.shadow_destroy_all();
}

/// Before every entry of this CPU (the exit handler, after the shootdown
/// generation check): if vmcs02 is current and runs on a shadow EPT,
/// makes its EPT pointer the shadow's current root (an INVEPT or an
/// eviction on any CPU retires roots; the retiring CPU waited for this
/// CPU's flush before freeing the table, and this CPU enters only after
/// re-reading the root here, under the lock).
pub(crate) fn refresh_ept02(cpu: &HypCpu) {
    // SAFETY: the exit handler of this CPU, the only reference.
    let ns = unsafe { nested_state(cpu) };
    if !ns.in_l2 || ns.ept02_eptp12 == 0 {
        return;
    }
    // SAFETY: `global` points at the hypervisor-wide state in the pool.
    let global = unsafe { &*cpu.global };
    let root = global.page_states().shadow_root(ns.ept02_eptp12);
    match root {
        Some(r) if rd(EPT_POINTER) == ept02_pointer(r) => {}
        Some(r) => {
            if vmcs().write(EPT_POINTER, ept02_pointer(r)).is_err() {
                ns.count(stat::UNEXPECTED);
                give_up(cpu, ns)
            }
            if let Some(i) = fields::index_of(EPT_POINTER.encoding()) {
                ns.v02.forget(i);
            }
        }
        None => {
            // No root and the old one may be freed: the guest cannot run.
            ns.count(stat::UNEXPECTED);
            give_up(cpu, ns)
        }
    }
}

/// A state nothing can continue from (a hypervisor bug or a VMX abort):
/// the host CPU is parked; vmcs01 made current first.
fn give_up(cpu: &HypCpu, ns: &mut NestedCpu) -> ! {
    ns.in_l2 = false;
    let _ = load_vmcs(cpu.nested.vmcs01_pa);
    cpu.fatal_rip.store(rd(GUEST_RIP), Ordering::Relaxed);
    crate::arch::cpu::park()
}

/// A failed hardware entry (VMfail of VMLAUNCH/VMRESUME) of vmcs02: the
/// host's VMLAUNCH/VMRESUME fails with the same VM-instruction error
/// (VMfailValid), vmcs02 is dropped (rebuilt at the next entry) and vmcs01
/// made current again.  `false` if vmcs02 was not current (then the
/// host's own VMCS failed: the caller stops).
pub(crate) fn l2_entry_failed(cpu: &HypCpu) -> bool {
    // SAFETY: the exit handler of this CPU, the only reference.
    let ns = unsafe { nested_state(cpu) };
    if !ns.in_l2 {
        return false;
    }
    let n = vmcs()
        .read(VM_INSTRUCTION_ERROR)
        .unwrap_or(err::ENTRY_INVALID_CONTROLS);
    ns.in_l2 = false;
    if !load_vmcs(cpu.nested.vmcs01_pa) {
        return false;
    }
    // SAFETY: `global` points at the hypervisor-wide state in the pool.
    let global = unsafe { &*cpu.global };
    let mut st = global.page_states();
    release_vmcs02(cpu, ns, &mut st);
    let (mut mem, cache) = st.nested_parts();
    watch_tag(cache, vmcs12::TAG_ENTRY_FAILED);
    let pa12 = ns.vmcs12;
    match cache.get(&mut mem, pa12) {
        Some(v12) => {
            entry_vmfail(v12, n, ns);
        }
        None => {
            let _ = vmcs().write(GUEST_RFLAGS, Outcome::FailInvalid.rflags(rd(GUEST_RFLAGS)));
            skip_host_instruction();
        }
    }
    drop(st);
    shadow_after(cpu, Some(pa12), Resync::Overwrite);
    true
}

/// The NESTED_STATS hypercall: counter `which` of this CPU (see
/// `crate::hv::hypercall::nr::NESTED_STATS`), the counters reset after
/// reading if `reset`.
pub(crate) fn read_stat(cpu: &HypCpu, which: u64, reset: bool) -> u64 {
    // SAFETY: the exit handler of this CPU, the only reference.
    let ns = unsafe { nested_state(cpu) };
    let v = match which {
        0..=0xff => ns.stats.get(which as usize).copied().unwrap_or(u64::MAX),
        0x100..=0x1ff => ns
            .reflected_by_reason
            .get((which - 0x100) as usize)
            .map_or(0, |&c| u64::from(c)),
        0x300..=0x3ff => ns
            .cycles
            .get((which - 0x300) as usize)
            .copied()
            .unwrap_or(0),
        0x200 => {
            // SAFETY: `global` points at the hypervisor-wide state.
            let global = unsafe { &*cpu.global };
            global.page_states().pinned_host_frames() as u64
        }
        // The vmcs12 store's debug watch (`vmcs12::watch`), hypervisor-wide,
        // never reset.
        // Debug builds: the watch's dump (0x900..) and ring (0xa00..,
        // oldest first).
        0x900..=0xbff => {
            // SAFETY: `global` points at the hypervisor-wide state.
            let global = unsafe { &*cpu.global };
            let mut st = global.page_states();
            let (_, cache) = st.nested_parts();
            return if which < 0xa00 {
                cache
                    .watch
                    .dump
                    .get((which - 0x900) as usize)
                    .copied()
                    .unwrap_or(0)
            } else {
                cache.watch.ring_word((which - 0xa00) as usize)
            };
        }
        0x500..=0x5ff => {
            // SAFETY: `global` points at the hypervisor-wide state.
            let global = unsafe { &*cpu.global };
            let mut st = global.page_states();
            let (_, cache) = st.nested_parts();
            return cache
                .watch
                .counts
                .get((which - 0x500) as usize)
                .copied()
                .unwrap_or(0);
        }
        // The shadow EPTs' counters (`shadow_ept::Stats`), hypervisor-wide,
        // never reset.
        0x600..=0x6ff => {
            // SAFETY: `global` points at the hypervisor-wide state.
            let global = unsafe { &*cpu.global };
            if let Some(slot) = (which as usize).checked_sub(0x610) {
                // The shadow EPT's cost (`cost`), then the pool's use.
                return match slot {
                    s if s < cost::SLOTS => global
                        .shadow_cost
                        .get(s)
                        .map_or(u64::MAX, |c| c.load(Ordering::Relaxed)),
                    0x10 => global.page_states().pool_usage().0 as u64,
                    0x11 => global.page_states().pool_usage().1 as u64,
                    _ => u64::MAX,
                };
            }
            let s = global.page_states().shadow_stats();
            return match which - 0x600 {
                0 => s.mapped,
                1 => s.present,
                2 => s.replaced,
                3 => s.created,
                4 => s.invalidated,
                5 => s.kept,
                6 => s.evicted,
                7 => s.flushes,
                8 => s.unshared,
                9 => s.internal_errors,
                10 => s.reclaims,
                11 => s.mapped_bytes,
                12 => s.partial,
                13 => s.leaves_dropped,
                _ => u64::MAX,
            };
        }
        // Debug builds: the stress mode (`stress_evict`) set to `reset`
        // (on or off) for every CPU; the previous setting.  The counters
        // are left alone.
        #[cfg(pkvm_debug)]
        0x400 => {
            // SAFETY: `global` points at the hypervisor-wide state.
            let global = unsafe { &*cpu.global };
            return u64::from(
                global
                    .nested_stress
                    .swap(u32::from(reset), Ordering::AcqRel),
            );
        }
        // Debug builds: the stress mode 2 (written back, kept; 0x401),
        // 3 (pages only read; 0x402) or 4 (rewritten unchanged; 0x403) if
        // `reset`, off otherwise; the
        // previous setting.
        #[cfg(pkvm_debug)]
        0x401..=0x403 => {
            // SAFETY: `global` points at the hypervisor-wide state.
            let global = unsafe { &*cpu.global };
            let mode = if reset { (which - 0x3ff) as u32 } else { 0 };
            return u64::from(global.nested_stress.swap(mode, Ordering::AcqRel));
        }
        _ => u64::MAX,
    };
    if reset {
        ns.stats = [0; stat::COUNT];
        ns.reflected_by_reason = [0; 76];
        ns.cycles = [0; phase::COUNT];
    }
    v
}

// ---------------------------------------------------------------------
// VMCS shadowing: the host's VMREAD/VMWRITE served by a shadow VMCS.
// ---------------------------------------------------------------------

/// Whether the CPU can shadow VMCSs for vmcs01.
fn shadowing_available(global: &HypGlobal) -> bool {
    global.hw_caps.procbased2.may_be_one & proc2::SHADOW_VMCS != 0
}

/// Whether the shadow VMCS may serve the host's accesses to the field at
/// table position `i` (`field_class::shadow_of`), for reads (`write`
/// false) or writes, in the view this module offers (`nested_ept`).
fn shadowable(cpu: &HypCpu, i: usize, write: bool) -> bool {
    // SAFETY: `global` points at the hypervisor-wide state in the pool.
    let ept = unsafe { &*cpu.global }.vmx_params.ept;
    match class_at(ept, i).map(shadow_of) {
        Some(Shadow::ReadWrite) => true,
        Some(Shadow::ReadOnly) => !write,
        _ => false,
    }
}

/// vmcs12 -> the shadow VMCS (vmcs01 current before and after).  The
/// first time on this CPU, also probes which fields the CPU's shadow VMCS
/// holds and builds the VMREAD/VMWRITE bitmaps from them: a field is
/// served by the shadow only if `shadow_of` allows it and the CPU has it.
///
/// With `dirty_only` (the shadow already mirrors vmcs12 but for the fields
/// `v12.written()` lists, and the fields were probed), only those are
/// written.
fn shadow_fill(cpu: &HypCpu, ns: &mut NestedCpu, v12: &MemVmcs, dirty_only: bool) -> bool {
    if !load_vmcs(cpu.nested.shadow_pa) {
        let _ = load_vmcs(cpu.nested.vmcs01_pa);
        return false;
    }
    let first = !ns.shadow_probed;
    if dirty_only && !first {
        let mut sh = vmcs();
        for i in v12.written() {
            if let (true, Some(info)) = (
                ns.shadow_ok.contains(i) && shadowable(cpu, i, false),
                FIELDS.get(i),
            ) {
                let _ = sh.write_raw(info.encoding, v12.value_at(i).unwrap_or(0));
            }
        }
    } else {
        let mut sh = vmcs();
        for (i, info) in FIELDS.iter().enumerate() {
            if !shadowable(cpu, i, false) || !(first || ns.shadow_ok.contains(i)) {
                continue;
            }
            let ok = sh
                .write_raw(info.encoding, v12.value_at(i).unwrap_or(0))
                .is_ok();
            if first && ok {
                ns.shadow_ok.insert(i);
            }
        }
    }
    // SAFETY: root mode; the shadow VMCS is this CPU's page: VMCLEAR
    // writes it back to memory (the CPU reads it from there when it serves
    // the host's VMREAD/VMWRITE) and leaves no VMCS current.
    let _ = unsafe { vmx::vmclear(cpu.nested.shadow_pa) };
    if !load_vmcs(cpu.nested.vmcs01_pa) {
        return false;
    }
    if first {
        // SAFETY: the bitmap pages are this CPU's pool pages, used only by
        // its exit handler (and read by the CPU).
        let (rd_bm, wr_bm) = unsafe {
            (
                &mut *(cpu.nested.vmread_bitmap_va as *mut [u8; 4096]),
                &mut *(cpu.nested.vmwrite_bitmap_va as *mut [u8; 4096]),
            )
        };
        // Volatile word stores: a plain fill may become a call to the
        // kernel's memset, which root mode may not make.
        for bm in [&mut *rd_bm, &mut *wr_bm].iter_mut() {
            for w in bm.chunks_exact_mut(8) {
                let p = w.as_mut_ptr().cast::<u64>();
                // SAFETY: `p` points at 8 bytes of the page (chunks of 8 of
                // a page-aligned 4096-byte array: aligned).
                unsafe { p.write_volatile(u64::MAX) };
            }
        }
        for (i, info) in FIELDS.iter().enumerate() {
            if !ns.shadow_ok.contains(i) {
                continue;
            }
            let bit = (info.encoding & 0x7fff) as usize;
            let clear = |bm: &mut [u8; 4096]| {
                if let Some(b) = bm.get_mut(bit / 8) {
                    *b &= !(1u8 << (bit % 8));
                }
            };
            clear(rd_bm);
            if shadowable(cpu, i, true) {
                clear(wr_bm);
            }
        }
        ns.shadow_probed = true;
    }
    true
}

/// The shadow VMCS -> vmcs12: the fields the host may have written
/// through it (vmcs01 current before and after).
fn shadow_drain(cpu: &HypCpu, ns: &NestedCpu, v12: &mut MemVmcs) {
    if !load_vmcs(cpu.nested.shadow_pa) {
        let _ = load_vmcs(cpu.nested.vmcs01_pa);
        return;
    }
    {
        let sh = vmcs();
        for (i, info) in FIELDS.iter().enumerate() {
            if ns.shadow_ok.contains(i) && shadowable(cpu, i, true) {
                if let Ok(v) = sh.read_raw(info.encoding) {
                    v12.load_at(i, v);
                }
            }
        }
    }
    // SAFETY: as in `shadow_fill`.
    let _ = unsafe { vmx::vmclear(cpu.nested.shadow_pa) };
    let _ = load_vmcs(cpu.nested.vmcs01_pa);
}

/// One field (table position `i`) from the shadow VMCS into vmcs12, if
/// the host may have written it there (vmcs01 current before and after).
fn shadow_pull(cpu: &HypCpu, ns: &NestedCpu, v12: &mut MemVmcs, i: usize) {
    let Some(info) = FIELDS.get(i) else { return };
    if !(ns.shadow_ok.contains(i) && shadowable(cpu, i, true)) {
        return;
    }
    if load_vmcs(cpu.nested.shadow_pa) {
        if let Ok(v) = vmcs().read_raw(info.encoding) {
            v12.load_at(i, v);
        }
        // SAFETY: as in `shadow_fill`.
        let _ = unsafe { vmx::vmclear(cpu.nested.shadow_pa) };
    }
    let _ = load_vmcs(cpu.nested.vmcs01_pa);
}

/// The fields `fields` (table positions) of vmcs12 into the shadow VMCS,
/// where it shows them; its other fields stay as the host left them
/// (vmcs01 current before and after).
fn shadow_push(cpu: &HypCpu, ns: &NestedCpu, v12: &MemVmcs, fields: impl Iterator<Item = usize>) {
    if load_vmcs(cpu.nested.shadow_pa) {
        let mut sh = vmcs();
        for i in fields {
            if let (true, Some(info)) = (
                ns.shadow_ok.contains(i) && shadowable(cpu, i, false),
                FIELDS.get(i),
            ) {
                let _ = sh.write_raw(info.encoding, v12.value_at(i).unwrap_or(0));
            }
        }
        // SAFETY: as in `shadow_fill`.
        let _ = unsafe { vmx::vmclear(cpu.nested.shadow_pa) };
    }
    let _ = load_vmcs(cpu.nested.vmcs01_pa);
}

/// The vmcs12 store's debug watch (`vmcs12::Vmcs12Watch`, debug builds
/// only): who uses the cache now.
fn watch_tag(cache: &mut Vmcs12Cache, tag: u8) {
    cache.watch.enabled = cfg!(pkvm_debug);
    cache.watch.tag = tag;
}

/// The debug watch after a VMX instruction of the host: an emulated
/// VMWRITE of GUEST_RSP is a host write; a VMLAUNCH/VMRESUME about to
/// enter compares GUEST_RSP with what the last reflected exit stored.
/// Under the lock `st` is.
fn watch_instruction(
    st: &mut PageStates,
    insn: Insn,
    field: Option<(usize, bool)>,
    done: &crate::hv::vmx::nested::vmx_op::Done,
    mode: &VmxMode,
) {
    if !cfg!(pkvm_debug) {
        return;
    }
    let (mut mem, cache) = st.nested_parts();
    if let (
        Insn::Vmwrite,
        Outcome::Succeed,
        Some((i, _)),
        VmxMode::On {
            current: Some(pa), ..
        },
    ) = (insn, done.outcome, field, *mode)
    {
        if i == GUEST_RSP.index() {
            cache.watch.host_wrote_rsp(pa);
        }
    }
    if let Some(pa12) = done.enter {
        let rsp = cache
            .get(&mut mem, pa12)
            .map(|v| v.vmcs.read(GUEST_RSP).unwrap_or(0));
        if let Some(rsp) = rsp {
            cache.watch.entry_rsp(pa12, rsp);
        }
    }
}

/// Debug builds' stress mode (`HypGlobal::nested_stress`, NESTED_STATS
/// selector 0x400): every cached vmcs12 written back to its page and
/// dropped from the cache, so that its next use reads it back, on any
/// CPU.  Every VMWRITE of the host must survive it, shadowed or not.
/// Under the lock `st` is.
fn stress_evict(global: &HypGlobal, st: &mut PageStates) {
    if !cfg!(pkvm_debug) {
        return;
    }
    let mode = global.nested_stress.load(Ordering::Relaxed);
    if mode != 0 {
        let (mut mem, cache) = st.nested_parts();
        watch_tag(cache, vmcs12::TAG_STRESS);
        match mode {
            // Written back, kept (nothing read back).
            2 => {
                cache.write_back_all(&mut mem);
            }
            // The images built and the pages read, nothing written or
            // dropped (kept from being optimised away).
            3 => {
                core::hint::black_box(cache.read_all(&mut mem));
            }
            // The pages' words rewritten unchanged.
            4 => {
                cache.rewrite_all(&mut mem);
            }
            _ => {
                cache.evict_all(&mut mem);
            }
        }
    }
}

/// Turns VMCS shadowing of vmcs01 (current) on or off.
fn shadow_link(cpu: &HypCpu, on: bool) {
    let mut v = vmcs();
    let p2 = rd(SECONDARY_VM_EXEC_CONTROL);
    if on {
        let _ = v.write(VMREAD_BITMAP, cpu.nested.vmread_bitmap_pa);
        let _ = v.write(VMWRITE_BITMAP, cpu.nested.vmwrite_bitmap_pa);
        let _ = v.write(VMCS_LINK_POINTER, cpu.nested.shadow_pa);
        let _ = v.write(SECONDARY_VM_EXEC_CONTROL, p2 | proc2::SHADOW_VMCS);
    } else {
        let _ = v.write(SECONDARY_VM_EXEC_CONTROL, p2 & !proc2::SHADOW_VMCS);
        let _ = v.write(VMCS_LINK_POINTER, u64::MAX);
    }
}

/// Before a VMX instruction of the host that uses or changes which
/// vmcs12 is current (VMLAUNCH, VMRESUME, VMCLEAR, VMPTRLD, VMXOFF): the
/// host's writes through the shadow go into vmcs12; all but VMLAUNCH and
/// VMRESUME also end the shadowing (it resumes after them if a vmcs12 is
/// current).
fn shadow_before(cpu: &HypCpu, insn: Insn) {
    // SAFETY: the exit handler of this CPU, the only reference.
    let ns = unsafe { nested_state(cpu) };
    let Some(pa) = ns.shadowing else {
        return;
    };
    if !matches!(
        insn,
        Insn::Vmlaunch | Insn::Vmresume | Insn::Vmclear | Insn::Vmptrld | Insn::Vmxoff
    ) {
        return;
    }
    // SAFETY: `global` points at the hypervisor-wide state in the pool.
    let global = unsafe { &*cpu.global };
    let t0 = phase_clock();
    let mut st = global.page_states();
    let (mut mem, cache) = st.nested_parts();
    watch_tag(cache, vmcs12::TAG_SHADOW_BEFORE);
    let (drained, rsp_before, rsp_after) = match cache.get(&mut mem, pa) {
        Some(v12) => {
            let before = v12.vmcs.read(GUEST_RSP).unwrap_or(0);
            shadow_drain(cpu, ns, &mut v12.vmcs);
            (true, before, v12.vmcs.read(GUEST_RSP).unwrap_or(0))
        }
        None => (false, 0, 0),
    };
    if rsp_before != rsp_after {
        cache.watch.host_wrote_rsp(pa);
    }
    drop(st);
    ns.account(phase::ENTRY_DRAIN, t0);
    // A shadow that could not be drained (its vmcs12 is not to be had:
    // the page is no longer the host's) is unlinked as well, never left
    // linked to be drained later into whatever vmcs12 then has that
    // address; the host's writes through it are lost (counted).
    if !drained {
        ns.count(stat::SHADOW_UNSYNCED);
    }
    if !drained || !matches!(insn, Insn::Vmlaunch | Insn::Vmresume) {
        shadow_link(cpu, false);
        ns.shadowing = None;
    }
}

/// How [`shadow_after`] brings the shadow VMCS up to date.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Resync {
    /// Nothing changed in vmcs12 behind the shadow.
    Keep,
    /// The hypervisor changed these fields (table positions) of vmcs12
    /// while the host may have written others through the shadow (the
    /// VM-instruction error of a VMfailValid, the field of an emulated
    /// VMWRITE): only they go to the shadow, the host's writes there stay.
    Fields([Option<usize>; 2]),
    /// vmcs12 is newer than the shadow in every field (an exit reflected,
    /// a failed entry: the shadow was drained at the VMLAUNCH/VMRESUME and
    /// the host has not run since): vmcs12 -> shadow.
    Overwrite,
    /// As `Overwrite`, but only the fields vmcs12 lists as written changed
    /// since the shadow last mirrored it (an exit reflected: the shadow
    /// was drained at the VMLAUNCH/VMRESUME, vmcs12's written marks were
    /// forgotten before the reflection wrote it).
    Dirty,
}

/// After a VMX instruction of the host, or an exit reflected to it: the
/// shadow VMCS mirrors the current vmcs12 `current` again (as `how`
/// says) and vmcs01 links it.
fn shadow_after(cpu: &HypCpu, current: Option<u64>, how: Resync) {
    // SAFETY: `global` points at the hypervisor-wide state in the pool.
    let global = unsafe { &*cpu.global };
    if !shadowing_available(global) {
        return;
    }
    // SAFETY: the exit handler of this CPU, the only reference.
    let ns = unsafe { nested_state(cpu) };
    let Some(pa) = current else {
        if ns.shadowing.take().is_some() {
            shadow_link(cpu, false);
        }
        return;
    };
    let linked = ns.shadowing == Some(pa);
    if linked && how == Resync::Keep {
        return;
    }
    let mut st = global.page_states();
    let (mut mem, cache) = st.nested_parts();
    watch_tag(cache, vmcs12::TAG_SHADOW_AFTER);
    let Some(v12) = cache.get(&mut mem, pa) else {
        // No vmcs12 to mirror: never leave a stale shadow linked (the
        // host would read old values through it, and its writes there
        // would be drained later); its accesses exit and fail as the
        // emulation answers.
        if ns.shadowing.take().is_some() || linked {
            shadow_link(cpu, false);
        }
        ns.count(stat::SHADOW_UNSYNCED);
        return;
    };
    if let (true, Resync::Fields(fields)) = (linked, how) {
        shadow_push(cpu, ns, &v12.vmcs, fields.iter().flatten().copied());
        return;
    }
    if shadow_fill(cpu, ns, &v12.vmcs, linked && how == Resync::Dirty) {
        shadow_link(cpu, true);
        ns.shadowing = Some(pa);
    } else {
        shadow_link(cpu, false);
        ns.shadowing = None;
    }
}
