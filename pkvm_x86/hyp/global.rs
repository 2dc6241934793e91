// SPDX-License-Identifier: GPL-2.0

//! Hypervisor-wide state, in pool memory: the host EPT, the hypervisor's
//! page-table bookkeeping, the shadow-VM table, and the page-state
//! hypercalls that change them.
//!
//! One lock covers all of it: [`HypGlobal::page_states`] returns the guard
//! of a [`SpinLock`] that owns [`PageStates`] (the pure core's lock order —
//! VM table, host EPT, guest, hyp page table — is trivially respected by a
//! single lock; `crate::hyp::lock` documents it for when it is split).
//! It is taken only in root mode, where interrupts are off.  Each
//! page-state hypercall is one method of [`PageStates`], called by the exit
//! handler's dispatch with the call's validated arguments.
//!
//! A change to the host EPT that takes access away shoots down every CPU's
//! EPT-derived translations inside the change, under the lock: the
//! page-table engine calls its invalidation hook before the walk that took
//! the access returns (`MmOps::invalidate`, `crate::hyp::mm`), and for the
//! host EPT that hook is [`shootdown_host_ept`].  So the transition goes on
//! (VM_CREATE zeroes the metadata it took, the hypercall returns) only once
//! no CPU can reach the pages any more.  The shootdown
//! ([`HypGlobal::shootdown`]) raises the flush generation
//! [`HypGlobal::flush_gen`], invalidates this CPU, sends an NMI to every
//! other CPU under the hypervisor that has not acknowledged the new
//! generation yet, and waits until each has (`HypCpu::flushed_gen`) or
//! cannot run the host (`HypCpu::parked`).  A target acknowledges in its
//! root-mode NMI stub (`crate::hyp::entry`: INVEPT, then the
//! acknowledgement, without the lock, so a target spinning on the lock
//! held by the sender still answers) or before its next VM entry (the NMI
//! exit in non-root mode, and the generation check every entry runs).
//! Shootdowns run only under the lock, so two never wait for each other.
//! Nothing of this trusts the host.  Documentation/deprivilege.rst,
//! "Cross-CPU shootdown".
//!
//! It also owns the coordinated teardown ([`Teardown`]): BEGIN_TEARDOWN
//! freezes the page states (refused while a VM exists), TEARDOWN_CPU is a
//! rendezvous of every CPU under the hypervisor, and the last CPU to
//! arrive scrubs the pool and every page donated to the hypervisor
//! ([`PageStates::scrub`]) before any CPU returns to the host.  See
//! Documentation/deprivilege.rst, "Unloading".

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use super::lock::{SpinLock, SpinLockGuard};
use super::mm::{GrowError, HypMm, MAX_CHUNKS};
use super::percpu::HypCpu;
use crate::arch::vmx;
use crate::hv::error::Error;
use crate::hv::hypercall::call::Reply;
use crate::hv::hypercall::errno;
use crate::hv::mm::addr::{Gpa, Hpa, TableKind};
use crate::hv::mm::ept::{EptEntry, MemType, PageState};
use crate::hv::mm::host_ept_map::LazyMap;
#[cfg(pkvm_debug)]
use crate::hv::mm::invariants::{self, Claim};
use crate::hv::mm::mem_protect::{self as mp, GuestEpt, HostEpt, HypPgt, VmKind};
use crate::hv::mm::mtrr::Mtrrs;
use crate::hv::mm::pgtable::{
    EptFormat, HookedMm, HypFormat, MmOps, PteFormat, ADDR_LIMIT, PERM_RWX,
};
use crate::hv::mm::pin_set::PinSet;
use crate::hv::mm::reserve::{self, PageSupply, Reserve};
use crate::hv::mm::vm_table::VmTable;
use crate::hv::vmx::caps::{RawVmxInfo, VmxCaps};
use crate::hv::vmx::nested::ept12_walk::{self, Access, HostSide, LeafSize, WalkCtx, WalkFault};
use crate::hv::vmx::nested::reflect::Ept12Exit;
use crate::hv::vmx::nested::shadow_ept::{NoMapping, ResolvedLeaf, ShadowEpts};
use crate::hv::vmx::nested::vmcs12::Vmcs12Cache;
use crate::hv::vmx::nested::vmx_op::View;

/// Claims the invariant checker may record (its scratch space).
#[cfg(pkvm_debug)]
const CLAIMS: usize = 256;

/// The hypervisor-wide state: settings fixed at load and the page-state
/// structures behind their lock.
pub struct HypGlobal {
    /// Debug hypercalls allowed (module parameter `debug`).
    pub debug: bool,
    /// EPT pointer of the host EPT (for INVEPT).
    pub host_eptp: u64,
    /// Flush generation: raised by every shootdown; a CPU whose
    /// `flushed_gen` is below it may hold stale host-EPT translations.
    pub flush_gen: AtomicU64,
    /// The INVEPT type (1 single-context of `host_eptp`, 2 all-context) a
    /// CPU that catches up with a shootdown uses (root NMI stub, the
    /// generation check before every entry): all-context when the view
    /// offers EPT (`nested_ept=1`), so the shadow EPTs are flushed too.
    /// Fixed at load.
    pub catch_up_invept: u64,
    /// The VMX view offered to the host (nested VMX,
    /// `crate::hv::vmx::nested::offer`): the capability MSRs it reads,
    /// the same on every CPU.  Fixed at load.
    pub vmx_view: RawVmxInfo,
    /// What the VMX instructions need of the view.
    pub vmx_params: View,
    /// The view decoded (the controls the entry checks and the merge
    /// allow); `None` if it does not decode (then every VM entry of the
    /// host fails with VMfailValid(7)).
    pub offer_caps: Option<VmxCaps>,
    /// The CPU's own capabilities (vmcs02's must-be-one bits).
    pub hw_caps: VmxCaps,
    /// Hypervisor virtual address of the hypervisor's MSR bitmap (vmcs01's
    /// policy), merged into every vmcs02's; written once before launch.
    pub hv_msr_bitmap_va: u64,
    /// CPUs of the host in VMX operation (between its VMXON and VMXOFF):
    /// BEGIN_TEARDOWN is refused while any is (`EBUSY`); changed under the
    /// hypervisor lock.
    pub vmx_cpus: AtomicU32,
    /// Debug builds: nested VMX's stress mode (set through NESTED_STATS
    /// selector `0x400`, `crate::hyp::nested::read_stat`): non-zero makes
    /// every VMX instruction of the host and every reflected exit write
    /// every cached vmcs12 back to its page and drop it from the cache.
    pub nested_stress: AtomicU32,
    /// The shadow EPT's own cost in TSC cycles and counts, by class
    /// (`crate::hyp::nested::cost`; NESTED_STATS 0x610..), every build.
    pub shadow_cost: [AtomicU64; super::nested::cost::SLOTS],
    /// Every CPU under the hypervisor, by the host's CPU number: the
    /// address of its `HypCpu`, recorded at its first VM exit (0: none).
    cpus: [AtomicU64; MAX_TEARDOWN_CPUS],
    /// The page-state structures, under the hypervisor lock.
    states: SpinLock<PageStates>,
    /// The coordinated teardown of every CPU.
    teardown: Teardown,
}

/// Most CPUs the teardown rendezvous records (by the host's CPU number,
/// fixed at load).  A CPU numbered beyond it cannot leave VMX operation:
/// TEARDOWN_CPU answers `EINVAL` there, and unload leaves every CPU
/// deprivileged (documented limitation).
pub const MAX_TEARDOWN_CPUS: usize = 256;

/// Ranges (hypervisor virtual address, pages) of one CPU that the scrub
/// must not zero: what that CPU still stands on until it has returned to
/// the host (its root-mode stack, per-CPU page, GDT + TSS page, interrupt
/// stack, and the shared root IDT).
pub type KeepRanges = [(u64, u64); KEEP_PER_CPU];

/// Ranges in [`KeepRanges`].
pub const KEEP_PER_CPU: usize = 5;

/// Polling rounds of a shootdown between two NMIs to a CPU that has not
/// acknowledged yet.
const RESEND_SPINS: u64 = 1 << 16;

/// How many bounded waits (`pause` iterations) a CPU that called
/// TEARDOWN_CPU waits for the others before giving up with `EBUSY`.
const RENDEZVOUS_SPINS: u64 = 1 << 25;

/// Bit of [`Teardown::rendezvous`]: every CPU has arrived; nobody may
/// withdraw any more.
const CLOSED: u64 = 1 << 63;

/// The coordinated teardown, in root mode only.  All-zero is its initial
/// state (nothing begun, no CPU seen).
pub struct Teardown {
    /// CPUs that have taken at least one VM exit: the CPUs under the
    /// hypervisor, as root mode knows them (see `note_cpu`).
    cpus: AtomicU32,
    /// Arrived CPUs (low bits) and [`CLOSED`].
    rendezvous: AtomicU64,
    /// CPUs that have left VMX operation after the rendezvous closed.
    off: AtomicU32,
    /// Set by the closing CPU when the scrub is done: the others may
    /// return to the host.
    scrubbed: AtomicU32,
    /// Each arrived CPU's [`KeepRanges`], by CPU number (flattened).
    keep: [AtomicU64; MAX_TEARDOWN_CPUS * KEEP_PER_CPU * 2],
    /// Which CPUs' `keep` entries are valid (they arrived).
    arrived: [AtomicU32; MAX_TEARDOWN_CPUS],
}

/// Everything the page-state hypercalls read and change; reached only
/// through the hypervisor lock ([`HypGlobal::page_states`]).
pub struct PageStates {
    /// The hypervisor's page allocator (in the pool).
    mm: *mut HypMm,
    host: HostEpt,
    /// The part of the host EPT mapped at the host's first access (above
    /// RAM, below the identity limit), typed by the MTRRs read at load.
    lazy: LazyMap<Mtrrs>,
    hyp: HypPgt,
    vms: VmTable,
    /// The pool's chunks (physical base, size), those given at load and
    /// those POOL_GROW added: hypervisor memory that is `OWNED` in its
    /// table but never goes back to the host while loaded.
    pinned: [(u64, u64); MAX_CHUNKS],
    nr_pinned: usize,
    /// The invariant checker's scratch space (debug builds only).
    #[cfg(pkvm_debug)]
    claims: [Claim; CLAIMS],
    /// BEGIN_TEARDOWN succeeded: every page-state change is refused.
    frozen: bool,
    /// Scratch for the scrub: the hypervisor page table's table pages.
    tables: [u64; MAX_TABLES],
    /// The host's VMCSs (nested VMX), shared by every CPU; entries in
    /// pages of `reserve`.
    vmcs12: Vmcs12Cache,
    /// Pages the host half donated for shadow state (RESERVE_DONATE,
    /// Documentation/nested.rst "Memory for shadow state"); never given
    /// back to the host while loaded, scrubbed at unload.
    reserve: Reserve,
    /// Host frames pinned by live vmcs02s (nested VMX, see
    /// Documentation/page-states.rst "Pinned host frames"): every
    /// host-initiated transition of such a frame is refused (`EBUSY`).
    pins: PinSet<MAX_PINS>,
    /// The scrub found more than [`MAX_TABLES`] table pages and left the
    /// pool alone (donated pages were still zeroed).
    scrub_incomplete: bool,
    /// The shadow EPTs of the host's guests (`nested_ept=1`,
    /// Documentation/shadow-ept.rst): guests in the page-state sense,
    /// under this lock; their tables from the allocator ([`shadow_mm`]).
    shadows: ShadowEpts,
}

/// Most table pages of the hypervisor's own page table the scrub can
/// keep track of; beyond it the scrub leaves the pool alone (it cannot
/// tell which pages it must not zero) and counts an internal error.
const MAX_TABLES: usize = 1024;

// SAFETY: `mm` points at the hypervisor's allocator in the pool, which
// lives as long as the hypervisor; it is used only by the holder of the
// lock that owns this state.
unsafe impl Send for PageStates {}

impl HypGlobal {
    /// Builds the state at `this`, in place (it is tens of KiB: too large
    /// to pass through the kernel stack), host side, before any CPU is
    /// deprivileged.
    ///
    /// # Safety
    ///
    /// `this` must be valid for writes of a `HypGlobal` and aligned.
    // One argument per part of the state it builds, all from the host's
    // set-up: a builder struct would only rename them.
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn init_in_place(
        this: *mut Self,
        mm: *mut HypMm,
        host: HostEpt,
        lazy: LazyMap<Mtrrs>,
        hyp: HypPgt,
        host_eptp: u64,
        debug: bool,
        vmx_view: RawVmxInfo,
        hw_caps: VmxCaps,
    ) {
        use core::ptr::addr_of_mut;
        // SAFETY: the caller guarantees `this` is valid for writes; every
        // field is written once through raw pointers.
        unsafe {
            addr_of_mut!((*this).debug).write(debug);
            addr_of_mut!((*this).host_eptp).write(host_eptp);
            addr_of_mut!((*this).flush_gen).write(AtomicU64::new(0));
            let ept_view = View::from_raw(&vmx_view).ept;
            addr_of_mut!((*this).catch_up_invept).write(if ept_view { 2 } else { 1 });
            addr_of_mut!((*this).vmx_params).write(View::from_raw(&vmx_view));
            addr_of_mut!((*this).offer_caps).write(VmxCaps::decode_view(&vmx_view).ok());
            addr_of_mut!((*this).hw_caps).write(hw_caps);
            addr_of_mut!((*this).hv_msr_bitmap_va).write(0);
            addr_of_mut!((*this).vmx_view).write(vmx_view);
            addr_of_mut!((*this).vmx_cpus).write(AtomicU32::new(0));
            addr_of_mut!((*this).nested_stress).write(AtomicU32::new(0));
            // INVARIANT: all-zero is "nothing counted yet".
            addr_of_mut!((*this).shadow_cost).write_bytes(0, 1);
            // INVARIANT: all-zero is "no CPU registered".
            addr_of_mut!((*this).cpus).write_bytes(0, 1);
            let st = SpinLock::init_in_place(addr_of_mut!((*this).states));
            addr_of_mut!((*st).mm).write(mm);
            addr_of_mut!((*st).host).write(host);
            addr_of_mut!((*st).lazy).write(lazy);
            addr_of_mut!((*st).hyp).write(hyp);
            VmTable::init_in_place(addr_of_mut!((*st).vms));
            let pinned = addr_of_mut!((*st).pinned).cast::<(u64, u64)>();
            let mut n = 0;
            // SAFETY (of the dereference): `mm` is the live allocator.
            for (i, c) in (*mm).chunks().iter().enumerate().take(MAX_CHUNKS) {
                pinned.add(i).write((c.pa, 2 << 20));
                n = i + 1;
            }
            for i in n..MAX_CHUNKS {
                pinned.add(i).write((0, 0));
            }
            addr_of_mut!((*st).nr_pinned).write(n);
            addr_of_mut!((*st).frozen).write(false);
            addr_of_mut!((*st).tables).write([0; MAX_TABLES]);
            // INVARIANT: all-zero bytes are an empty cache (no entry used).
            addr_of_mut!((*st).vmcs12).write_bytes(0, 1);
            // INVARIANT: all-zero bytes are an empty reserve; its pages
            // are reached where the hypervisor's table maps donated pages
            // (its linear window: the direct-map offset, `host/hyp_pgt.rs`).
            addr_of_mut!((*st).reserve).write_bytes(0, 1);
            (*st).reserve.set_window((*mm).va(0));
            // INVARIANT: all-zero is the empty pin set.
            addr_of_mut!((*st).pins).write_bytes(0, 1);
            addr_of_mut!((*st).scrub_incomplete).write(false);
            addr_of_mut!((*st).shadows).write(ShadowEpts::new());
            // INVARIANT: all-zero is `Teardown`'s initial state (atomics
            // are valid at any bit pattern of their size).
            addr_of_mut!((*this).teardown).write_bytes(0, 1);
            #[cfg(pkvm_debug)]
            {
                let claims = addr_of_mut!((*st).claims).cast::<Claim>();
                for i in 0..CLAIMS {
                    claims.add(i).write(Claim::default());
                }
            }
        }
    }

    /// Makes the pool page `pa` a stack guard: unmapped in root mode's
    /// page table, still the hypervisor's (`HypPgt::unmap_guard`).  Host
    /// side, before any CPU is deprivileged.  The teardown scrub zeroes it
    /// like any pool page: through the scratch slot, not the linear window.
    pub fn unmap_stack_guard(&mut self, pa: Hpa) -> crate::hv::error::Result {
        let (mm, _, hyp, _) = self.states.get_mut().parts();
        hyp.unmap_guard(mm, pa)
    }

    /// Table pages of the host EPT (host side, before launch).
    pub fn host_ept_table_pages(&mut self) -> usize {
        let st = self.states.get_mut();
        // SAFETY: `mm` is the live allocator; the exclusive borrow of the
        // lock means no CPU runs root mode on this state yet.
        let mm = unsafe { &mut *st.mm };
        st.host.pgt().table_pages(mm).unwrap_or(0)
    }

    /// Takes the hypervisor lock: the page-state structures, until the
    /// guard drops.
    pub fn page_states(&self) -> SpinLockGuard<'_, PageStates> {
        self.states.lock()
    }

    /// Runs page-state change `f` under the lock, unless BEGIN_TEARDOWN
    /// has frozen the page states (`EBUSY`).
    pub fn change(&self, f: impl FnOnce(&mut PageStates) -> Reply) -> Reply {
        let mut st = self.states.lock();
        if st.frozen {
            return Reply::errno(errno::EBUSY);
        }
        f(&mut st)
    }

    /// Called on a CPU's first VM exit: it is under the hypervisor and
    /// must take part in the teardown rendezvous.
    pub fn note_cpu(&self) {
        self.teardown.cpus.fetch_add(1, Ordering::AcqRel);
    }

    /// Records `cpu` (at its first VM exit) among the CPUs shootdowns
    /// reach.  A CPU numbered beyond [`MAX_TEARDOWN_CPUS`] is not recorded
    /// (it cannot be torn down either; documented limitation).
    pub fn register_cpu(&self, cpu: &HypCpu) {
        if let Some(slot) = self.cpus.get(cpu.cpu as usize) {
            slot.store(core::ptr::from_ref(cpu) as u64, Ordering::SeqCst);
        }
    }

    /// Cross-CPU shootdown, from CPU `me` in root mode, holding the
    /// hypervisor lock, after a change that took access away from the host:
    /// returns once every other recorded CPU has invalidated its host-EPT
    /// translations or cannot run the host.  `invalidate` flushes this CPU;
    /// `send_nmi(id)` sends an NMI to the CPU with local APIC ID `id`.  A
    /// target that never answers (the host disabled its APIC) keeps this
    /// CPU here, with the lock: the host only hurts its own availability.
    pub fn shootdown(&self, me: &HypCpu, invalidate: impl Fn(), mut send_nmi: impl FnMut(u32)) {
        let gen = self
            .flush_gen
            .fetch_add(1, Ordering::SeqCst)
            .wrapping_add(1);
        invalidate();
        me.flushed_gen.fetch_max(gen, Ordering::SeqCst);
        let mut spins: u64 = 0;
        loop {
            let mut behind = false;
            for slot in &self.cpus {
                let p = slot.load(Ordering::SeqCst);
                if p == 0 || p == core::ptr::from_ref(me) as u64 {
                    continue;
                }
                // SAFETY: recorded `HypCpu`s are per-CPU pages of the pool,
                // alive while the hypervisor runs; only their atomics are
                // touched here.
                let other = unsafe { &*(p as *const HypCpu) };
                if other.flushed_gen.load(Ordering::SeqCst) >= gen
                    || other.parked.load(Ordering::SeqCst) != 0
                {
                    continue;
                }
                behind = true;
                // First round, then again now and then in case the NMI
                // merged with one already pending there.
                if spins % RESEND_SPINS == 0 {
                    other.shootdown_nmi.store(1, Ordering::SeqCst);
                    send_nmi(other.apic_id.load(Ordering::SeqCst));
                }
            }
            if !behind {
                return;
            }
            spins = spins.wrapping_add(1);
            core::hint::spin_loop();
        }
    }

    /// The generation check every VM entry of CPU `cpu` runs: if a
    /// shootdown happened since this CPU last flushed, flush (with
    /// `invalidate`) and acknowledge.
    pub fn flush_if_behind(&self, cpu: &HypCpu, invalidate: impl Fn()) {
        let gen = self.flush_gen.load(Ordering::SeqCst);
        if cpu.flushed_gen.load(Ordering::SeqCst) < gen {
            invalidate();
            cpu.flushed_gen.fetch_max(gen, Ordering::SeqCst);
        }
    }

    /// BEGIN_TEARDOWN: freezes the page states, unless a VM exists or a
    /// CPU of the host is in VMX operation (nested VMX: its VMCSs live in
    /// the hypervisor) (`EBUSY`).  With no VM no page is guest-owned:
    /// VM_TEARDOWN reclaims every page of a VM before its slot goes.
    pub fn begin_teardown(&self) -> Reply {
        let mut st = self.states.lock();
        if !st.vms.is_empty() || self.vmx_cpus.load(Ordering::Acquire) != 0 {
            return Reply::errno(errno::EBUSY);
        }
        st.frozen = true;
        Reply::val(0)
    }

    /// TEARDOWN_CPU, first half, on CPU `cpu` whose scrub exceptions are
    /// `keep`: waits until every CPU under the hypervisor has arrived.
    /// `Ok(true)` on the CPU that closed the rendezvous (it will scrub),
    /// `Ok(false)` on the others; `Err(errno)` if teardown has not begun
    /// (`EPERM`), `cpu` is beyond [`MAX_TEARDOWN_CPUS`] (`EINVAL`), the
    /// rendezvous is already closed, or the others did not come in time
    /// (`EBUSY`; this CPU withdrew and stays deprivileged).
    pub fn teardown_arrive(&self, cpu: u32, keep: &KeepRanges) -> Result<bool, i64> {
        if !self.states.lock().frozen {
            return Err(errno::EPERM);
        }
        let t = &self.teardown;
        let idx = cpu as usize;
        let Some(flag) = t.arrived.get(idx) else {
            return Err(errno::EINVAL);
        };
        if flag.load(Ordering::Acquire) != 0 {
            return Err(errno::EBUSY);
        }
        for (i, (va, pages)) in keep.iter().enumerate() {
            let at = (idx * KEEP_PER_CPU + i) * 2;
            if let (Some(a), Some(b)) = (t.keep.get(at), t.keep.get(at + 1)) {
                a.store(*va, Ordering::Relaxed);
                b.store(*pages, Ordering::Relaxed);
            }
        }
        flag.store(1, Ordering::Release);
        // Arrive.
        let mut w = t.rendezvous.load(Ordering::Acquire);
        loop {
            if w & CLOSED != 0 {
                flag.store(0, Ordering::Release);
                return Err(errno::EBUSY);
            }
            match t
                .rendezvous
                .compare_exchange(w, w + 1, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => break,
                Err(now) => w = now,
            }
        }
        // Close when everyone is here; else wait (bounded) for the closer.
        let mut spins = 0u64;
        loop {
            let w = t.rendezvous.load(Ordering::Acquire);
            if w & CLOSED != 0 {
                return Ok(false);
            }
            if w >= u64::from(t.cpus.load(Ordering::Acquire)) {
                if t.rendezvous
                    .compare_exchange(w, w | CLOSED, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    return Ok(true);
                }
                continue;
            }
            spins += 1;
            if spins >= RENDEZVOUS_SPINS
                && t.rendezvous
                    .compare_exchange(w, w - 1, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
            {
                flag.store(0, Ordering::Release);
                return Err(errno::EBUSY);
            }
            core::hint::spin_loop();
        }
    }

    /// TEARDOWN_CPU, second half, after this CPU left VMX operation: the
    /// closer waits until every arrived CPU is out of VMX operation, then
    /// scrubs; the others wait for the scrub to finish.
    pub fn teardown_left_vmx(&self, closer: bool) {
        let t = &self.teardown;
        t.off.fetch_add(1, Ordering::AcqRel);
        if !closer {
            while t.scrubbed.load(Ordering::Acquire) == 0 {
                core::hint::spin_loop();
            }
            return;
        }
        let n = t.rendezvous.load(Ordering::Acquire) & !CLOSED;
        while u64::from(t.off.load(Ordering::Acquire)) < n {
            core::hint::spin_loop();
        }
        let mut keep = KeepList { t, global: self };
        self.states.lock().scrub(&mut keep);
        t.scrubbed.store(1, Ordering::Release);
    }
}

/// What the scrub must not zero: every arrived CPU's [`KeepRanges`] and
/// the `HypGlobal` itself (the rendezvous state the other CPUs poll).
struct KeepList<'a> {
    t: &'a Teardown,
    global: &'a HypGlobal,
}

impl KeepList<'_> {
    /// Whether hypervisor virtual address `va` (of a pool page) is kept.
    fn has_va(&self, va: u64) -> bool {
        let g = core::ptr::from_ref::<HypGlobal>(self.global) as u64;
        let g_end = g + core::mem::size_of::<HypGlobal>() as u64;
        if va + 4096 > g && va < g_end {
            return true;
        }
        for (cpu, flag) in self.t.arrived.iter().enumerate() {
            if flag.load(Ordering::Acquire) == 0 {
                continue;
            }
            for i in 0..KEEP_PER_CPU {
                let at = (cpu * KEEP_PER_CPU + i) * 2;
                let (Some(a), Some(b)) = (self.t.keep.get(at), self.t.keep.get(at + 1)) else {
                    continue;
                };
                let start = a.load(Ordering::Relaxed) & !0xfff;
                let end = start.saturating_add(b.load(Ordering::Relaxed).saturating_mul(4096));
                if va >= start && va < end {
                    return true;
                }
            }
        }
        false
    }
}

/// What [`PageStates::shadow_fault`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShadowFault {
    /// The page is mapped (or already was): the guest resumes.
    Mapped,
    /// EPT12 does not allow the access: the host gets its guest's exit.
    Reflect(Ept12Exit),
    /// A table page of EPT12 or the page itself is not the host's to give
    /// (hypervisor memory, donated, MMIO not in the host's map, refused by
    /// the page-state machine): the host sees its guest triple-fault.
    NotShareable,
    /// No memory for shadow tables or share counts: the guest re-faults.
    NoMemory,
}

/// The shadow leaf for the guest's `access` at `gpa` through EPT12
/// (`eptp12`): EPT12 walked through the host's memory ([`HostMemory`]:
/// host-owned table pages only), intersected with the host EPT's leaf for
/// the page it names (Documentation/shadow-ept.rst).  `Err`: what the fault
/// path does instead of mapping (reflect EPT12's exit, or the page is not
/// the host's to give).  [`Access::NONE`] resolves whatever EPT12 maps
/// (the re-validation of an INVEPT).
#[allow(clippy::too_many_arguments)]
fn resolve_shadow_leaf(
    mm: &mut HypMm,
    host: &HostEpt,
    reserve: &mut Reserve,
    ctx: &WalkCtx,
    eptp12: u64,
    gpa: Gpa,
    access: Access,
    exec_only: bool,
) -> Result<ResolvedLeaf, ShadowFault> {
    let Ok(eptp) = ept12_walk::check_eptp(eptp12, ctx.ept_vpid_cap, ctx.maxphyaddr) else {
        // Checked at the entry: cannot be; never walk it.
        return Err(ShadowFault::NotShareable);
    };
    let leaf = {
        let mut mem = HostMemory {
            mm,
            host: HostView::Read(host),
            reserve,
        };
        match ept12_walk::walk(&mut mem, ctx, &eptp, gpa, access) {
            Ok(l) => l,
            Err(WalkFault::Violation(v)) => {
                return Err(ShadowFault::Reflect(Ept12Exit::Violation(v)))
            }
            Err(WalkFault::Misconfig(_)) => return Err(ShadowFault::Reflect(Ept12Exit::Misconfig)),
            Err(WalkFault::NotHostOwned { .. }) => return Err(ShadowFault::NotShareable),
        }
    };
    let Ok(h) = host.pgt().lookup(mm, leaf.hpa_page) else {
        return Err(ShadowFault::NotShareable);
    };
    if h.entry == 0 {
        // Not in the host's map (yet): not RAM the host may share.
        return Err(ShadowFault::NotShareable);
    }
    let a = EptFormat::attrs(h.entry);
    let size = match h.level {
        1 => LeafSize::Size4K,
        2 => LeafSize::Size2M,
        3 => LeafSize::Size1G,
        _ => return Err(ShadowFault::NotShareable),
    };
    let side = HostSide {
        perms: a.perms,
        memtype: a.memtype,
        leaf: size,
    };
    let sl = ept12_walk::intersect(&leaf, &side, LeafSize::Size1G, exec_only);
    if !sl.allows(access) {
        // EPT12 allows it, the host's side does not.
        return Err(ShadowFault::NotShareable);
    }
    Ok(ResolvedLeaf {
        gpa: sl.gpa_base,
        hpa: sl.hpa_base,
        size: sl.size.bytes(),
        perms: sl.perms,
        memtype: sl.memtype,
        ipat: sl.ipat,
    })
}

/// The [`MmOps`] of the shadow EPTs: the allocator, except that the
/// invalidation of a shadow EPT reaches every CPU ([`shootdown_all_ept`]):
/// a CPU running the host's guest on that root is forced out (NMI),
/// flushes every EPT-tagged translation, and re-reads the root under the
/// lock before it enters again (`crate::hyp::nested::refresh_ept02`).
fn shadow_mm(
    mm: &mut HypMm,
) -> HookedMm<'_, HypMm, impl FnMut(&mut HypMm, TableKind, Hpa, u64, u64)> {
    HookedMm::new(mm, |mm: &mut HypMm, kind, root, addr, size| {
        if kind == TableKind::GuestEpt {
            // SAFETY: shadow EPTs change only in root mode, after this
            // CPU's first exit, under the lock (`PageStates`' methods).
            unsafe { shootdown_all_ept(mm) };
        } else {
            mm.invalidate(kind, root, addr, size)
        }
    })
}

/// Cross-CPU shootdown of every EPT-tagged translation (INVEPT
/// all-context): the host EPT's and every shadow EPT's.  The other CPUs
/// acknowledge in the root NMI stub or at their next entry, both flushing
/// all-context while the view offers EPT (`HypGlobal::catch_up_invept`).
///
/// # Safety
///
/// As [`shootdown_host_ept`].
pub unsafe fn shootdown_all_ept(mm: &mut HypMm) {
    // SAFETY: guaranteed by the caller (root mode, GS base = HypCpu).
    let me = unsafe { HypCpu::current() };
    // SAFETY: `global` is the hypervisor-wide state, alive while any CPU
    // runs under it; only its atomics and fixed fields are read here.
    let global = unsafe { &*me.global };
    let invept = || {
        // SAFETY: root mode; INVEPT all-context is a required feature.
        let _ = unsafe { vmx::invept(vmx::InveptType::AllContext, 0) };
    };
    global.shootdown(me, invept, |id| send_nmi(mm, id));
}

/// The host EPT's invalidation hook in root mode (`HypMm::invalidate`,
/// with the hypervisor lock held, as every change of the host EPT after
/// the launch): the cross-CPU shootdown of [`HypGlobal::shootdown`] from
/// the current CPU, NMIs sent through `mm`'s scratch slot where the host
/// runs its APIC in xAPIC mode ([`send_nmi`]).
///
/// # Safety
///
/// Root mode only, after this CPU's first VM exit registered it: GS base
/// is this CPU's `HypCpu`, whose `global` is the live hypervisor-wide
/// state; the caller holds the hypervisor lock (`mm` is the allocator it
/// protects).
pub unsafe fn shootdown_host_ept(mm: &mut HypMm) {
    // SAFETY: guaranteed by the caller (root mode, GS base = HypCpu).
    let me = unsafe { HypCpu::current() };
    // SAFETY: `global` is the hypervisor-wide state, alive while any CPU
    // runs under it; only its atomics and fixed fields are read here.
    let global = unsafe { &*me.global };
    let eptp = global.host_eptp;
    let invept = || {
        // SAFETY: root mode; INVEPT single-context is a required feature.
        let _ = unsafe { vmx::invept(vmx::InveptType::SingleContext, eptp) };
    };
    global.shootdown(me, invept, |id| send_nmi(mm, id));
}

/// Sends an NMI to the CPU with local APIC ID `id`, from root mode:
/// through the ICR MSR if the host runs this CPU's APIC in x2APIC mode,
/// else through the xAPIC page at the base IA32_APIC_BASE names, mapped
/// for the send in the allocator's scratch slot (the caller holds the
/// hypervisor lock, which makes it the slot's one user; root mode's page
/// table maps no MMIO for good).  ICR_HI, which the host may have set up
/// for its own next IPI, is restored after the send.
fn send_nmi(mm: &mut HypMm, id: u32) {
    /// ICR: NMI delivery mode, level assert, physical destination.
    const ICR_NMI: u32 = 4 << 8 | 1 << 14;
    /// IA32_APIC_BASE: x2APIC mode and global enable.
    const X2APIC_ENABLED: u64 = 3 << 10;
    /// x2APIC ICR MSR.
    const X2APIC_ICR: u32 = 0x830;
    /// IA32_APIC_BASE: global enable.
    const APIC_ENABLED: u64 = 1 << 11;
    /// The architectural base of the xAPIC page, the only one written: a
    /// base the host moved could name RAM (a hypervisor or guest page)
    /// once the APIC is off, so a moved APIC gets no shootdown NMI (the
    /// sender keeps waiting: the host only hurts its own availability).
    const XAPIC_PA: u64 = 0xfee0_0000;
    let mut base = 0u64;
    // SAFETY: the accessor recovers from #GP through the root-mode IDT's
    // fixup and writes only `base`.
    if unsafe { super::entry::pkvm_rdmsr_safe(crate::hv::host_policy::msr::APIC_BASE, &mut base) }
        != 0
    {
        return;
    }
    if base & X2APIC_ENABLED == X2APIC_ENABLED {
        // SAFETY: as above; an NMI IPI changes nothing of root mode.
        let _ = unsafe {
            super::entry::pkvm_wrmsr_safe(X2APIC_ICR, u64::from(id) << 32 | u64::from(ICR_NMI))
        };
        return;
    }
    if base & APIC_ENABLED == 0 || base & !0xfff & ((1 << 52) - 1) != XAPIC_PA {
        return;
    }
    let Some(apic) = Hpa::new(XAPIC_PA) else {
        return;
    };
    // Uncacheable: APIC registers must not go through the cache.
    mm.with_scratch(apic, MemType::Uc, |va| {
        let icr_lo = (va + 0x300) as *mut u32;
        let icr_hi = (va + 0x310) as *mut u32;
        // SAFETY: `va` maps the xAPIC page for this closure (the APIC is
        // enabled at its reset base: the CPU routes the page to it); 32-bit
        // aligned register accesses, as the APIC needs.
        unsafe {
            let mut spins = 0;
            // Wait (bounded) for a send of the host's still in progress.
            while icr_lo.read_volatile() & (1 << 12) != 0 && spins < 1000 {
                spins += 1;
                core::hint::spin_loop();
            }
            let saved = icr_hi.read_volatile();
            icr_hi.write_volatile((id & 0xff) << 24);
            icr_lo.write_volatile(ICR_NMI);
            icr_hi.write_volatile(saved);
        }
    });
}

/// `Reply::from` for a page-state change.
fn changed(r: Result<(), Error>) -> Reply {
    Reply::from(r)
}

impl PageStates {
    /// The allocator and the tables, borrowed apart.
    fn parts(&mut self) -> (&mut HypMm, &mut HostEpt, &mut HypPgt, &mut VmTable) {
        // SAFETY: `mm` points at the allocator in the pool, set up before
        // the hypervisor started; the lock (held by whoever has `&mut
        // self`) makes this the only user.
        let mm = unsafe { &mut *self.mm };
        (mm, &mut self.host, &mut self.hyp, &mut self.vms)
    }

    /// The scrub of the last CPU to leave (all CPUs are out of VMX
    /// operation, in root mode, waiting): zeroes every page donated to
    /// the hypervisor (`OWNED` in its linear window, outside the pool) and
    /// every pool page except what root mode still stands on: the
    /// hypervisor page table's table pages, the allocator's header and use
    /// counts, the `HypGlobal` (whose VM table is zeroed and rebuilt
    /// empty), and each CPU's [`KeepRanges`].  None of those holds guest
    /// data; Documentation/deprivilege.rst lists what they hold.
    fn scrub(&mut self, keep: &mut KeepList<'_>) {
        // SAFETY: as in `parts`.
        let mm = unsafe { &mut *self.mm };
        let pinned = self.pinned;
        let nr_pinned = self.nr_pinned;
        let in_pool = |pa: u64| {
            pinned
                .iter()
                .take(nr_pinned)
                .any(|&(b, l)| pa >= b && pa < b + l)
        };
        // 1. Pages donated to the hypervisor (outside the pool).
        let (win, len) = self.hyp.linear_window();
        let _ = self.hyp.pgt().for_each_leaf(mm, win, len, |mm, ctx, e| {
            if HypFormat::state(e) == PageState::Owned {
                let pa = HypFormat::addr(e).raw();
                let size = 4096u64 << (9 * ctx.level.saturating_sub(1));
                let mut p = pa;
                while p < pa + size {
                    if !in_pool(p) {
                        if let Some(h) = Hpa::new(p) {
                            mm.zero_page(h);
                        }
                    }
                    p += 4096;
                }
            }
            Ok(())
        });
        // 2. The hypervisor page table's own pages: kept.
        let mut n = 0usize;
        let mut overflow = false;
        let root = self.hyp.pgt().root().raw();
        let tables = &mut self.tables;
        if let Some(t) = tables.get_mut(0) {
            *t = root;
            n = 1;
        }
        let all = crate::hv::mm::addr::HypVa::from_low_bits(0);
        let _ = self
            .hyp
            .pgt()
            .for_each_table(mm, all, ADDR_LIMIT, |_, _, e| {
                match tables.get_mut(n) {
                    Some(t) => {
                        *t = HypFormat::addr(e).raw();
                        n += 1;
                    }
                    None => overflow = true,
                }
                Ok(())
            });
        if overflow {
            self.scrub_incomplete = true;
            return;
        }
        let tables = self.tables.get(..n).unwrap_or(&[]);
        // 3. The VM table (in the kept `HypGlobal`): empty, but zeroed
        // so that no stale VM record survives in its slots.
        // SAFETY: no VM exists (BEGIN_TEARDOWN checked it under this
        // lock), so the table owns nothing; it is rebuilt at once.
        unsafe {
            let vms = core::ptr::addr_of_mut!(self.vms);
            vms.write_bytes(0, 1);
            VmTable::init_in_place(vms);
        }
        // 4. The pool, the chunks given at load and those grown since.
        // The allocator's header and use counts (`HypMm::is_own_page`:
        // after its header in the first chunk, a grown chunk's first page)
        // are kept.
        let nr_chunks = mm.chunks().len();
        for ci in 0..nr_chunks {
            let Some(c) = mm.chunks().get(ci).copied() else {
                continue;
            };
            for pg in 0..512u64 {
                let (pa, va) = (c.pa + pg * 4096, c.va + pg * 4096);
                if mm.is_own_page(pa) || tables.contains(&pa) || keep.has_va(va) {
                    continue;
                }
                if let Some(h) = Hpa::new(pa) {
                    mm.zero_page(h);
                }
            }
        }
    }

    /// Times an apply step met a state its check had ruled out.
    pub fn internal_errors(&self) -> u64 {
        self.host.internal_errors()
    }

    /// HOST_DONATE_HYP.
    pub fn host_donate_hyp(&mut self, hpa: Hpa, pages: u64) -> Reply {
        if self.pins.overlaps(hpa.raw(), pages) {
            return Reply::errno(errno::EBUSY);
        }
        let (mm, host, hyp, _) = self.parts();
        changed(mp::host_donate_hyp(host, hyp, mm, hpa, pages))
    }

    /// HYP_DONATE_HOST: never the pinned pool chunks, a live VM's
    /// metadata, nor a page of the reserve (shadow state root mode may be
    /// using: `EBUSY`).
    pub fn hyp_donate_host(&mut self, hpa: Hpa, pages: u64) -> Reply {
        if self.reserve.holds(hpa.raw(), pages) {
            return Reply::errno(errno::EBUSY);
        }
        // SAFETY: as in `parts` (borrowed apart from `pinned` here).
        let mm = unsafe { &mut *self.mm };
        let Self {
            host,
            hyp,
            vms,
            pinned,
            nr_pinned,
            ..
        } = self;
        let pinned = pinned.get(..*nr_pinned).unwrap_or(&[]);
        changed(vms.return_to_host(host, hyp, mm, hpa, pages, pinned))
    }

    /// RESERVE_DONATE: the batch through HOST_DONATE_HYP's transition
    /// into the reserve; the reserve's free pages in RAX, pages it still
    /// wants in RBX.  A frame pinned by nested VMX: `EBUSY`.
    pub fn reserve_donate(&mut self, hpa: Hpa, pages: u64) -> Reply {
        if self.pins.overlaps(hpa.raw(), pages) {
            return Reply::errno(errno::EBUSY);
        }
        // SAFETY: as in `parts` (borrowed apart from `reserve` here).
        let mm = unsafe { &mut *self.mm };
        // SAFETY: the reserve's window is the hypervisor table's linear
        // offset (set at init), where the donation maps each page.
        let r = unsafe {
            reserve::donate(
                &mut self.host,
                &mut self.hyp,
                mm,
                &mut self.reserve,
                hpa,
                pages,
            )
        };
        match r {
            Ok(()) => self.reserve_status(),
            Err(e) => Reply::from(Err(e)),
        }
    }

    /// RESERVE_STATUS: free pages in RAX, pages wanted in RBX, pages held
    /// in RCX.
    pub fn reserve_status(&self) -> Reply {
        Reply {
            rbx: Some(self.reserve.wanted()),
            rcx: Some(self.reserve.total()),
            ..Reply::val(self.reserve.free())
        }
    }

    /// POOL_GROW: the 2 MiB chunk at `hpa` through HOST_DONATE_HYP's
    /// transition into the allocator, for good (pinned like the chunks
    /// given at load).  Not 2 MiB aligned or already the pool's: `EINVAL`;
    /// the pool full: `ENOSPC`; a frame pinned by nested VMX: `EBUSY`;
    /// then every refusal of the transition, nothing changed.  Answers
    /// as POOL_STATUS.  The transition may need a table page or two (the
    /// hypervisor table's linear window, a host EPT split): it may take
    /// the allocator's reserve for growth (`crate::hyp::mm::GROW_RESERVE`),
    /// so an empty pool can still grow.
    pub fn pool_grow(&mut self, hpa: Hpa) -> Reply {
        const CHUNK: u64 = 2 << 20;
        // SAFETY: as in `parts` (borrowed apart from `pinned` here).
        let mm = unsafe { &mut *self.mm };
        match mm.can_grow(hpa.raw()) {
            Ok(()) => {}
            Err(GrowError::BadChunk) => return Reply::errno(errno::EINVAL),
            Err(GrowError::Full) => return Reply::errno(errno::ENOSPC),
        }
        if self.nr_pinned >= MAX_CHUNKS {
            return Reply::errno(errno::ENOSPC);
        }
        if self.pins.overlaps(hpa.raw(), CHUNK / 4096) {
            return Reply::errno(errno::EBUSY);
        }
        mm.set_growing(true);
        let r = mp::host_donate_hyp(&mut self.host, &mut self.hyp, mm, hpa, CHUNK / 4096);
        mm.set_growing(false);
        if let Err(e) = r {
            return Reply::from(Err(e));
        }
        // SAFETY: `can_grow` accepted the chunk; the donation made its
        // pages the hypervisor's alone (the host EPT gives no one access),
        // mapped read-write at `pa` + the hypervisor table's linear offset,
        // which is the allocator's direct-map offset (`host/hyp_pgt.rs`
        // builds the table with `mm.va(0)`).
        if unsafe { mm.add_chunk(hpa.raw()) }.is_err() {
            // Unreachable (checked above, under the same lock): give the
            // pages back rather than keep pages nobody accounts for.
            let _ = mp::hyp_donate_host(&mut self.host, &mut self.hyp, mm, hpa, CHUNK / 4096);
            return Reply::errno(errno::EINVAL);
        }
        if let Some(p) = self.pinned.get_mut(self.nr_pinned) {
            *p = (hpa.raw(), CHUNK);
            self.nr_pinned += 1;
        }
        self.pool_status()
    }

    /// POOL_STATUS: free pages in RAX, pages in total in RBX, allocations
    /// that found the pool empty (ever) in RCX.
    pub fn pool_status(&self) -> Reply {
        // SAFETY: as in `parts`: the live allocator, under the lock (only
        // read here).
        let mm = unsafe { &*self.mm };
        Reply {
            rbx: Some(mm.total_pages() as u64),
            rcx: Some(mm.shortages()),
            ..Reply::val(mm.free_pages() as u64)
        }
    }

    /// HOST_SHARE_HYP.
    pub fn host_share_hyp(&mut self, hpa: Hpa, pages: u64) -> Reply {
        if self.pins.overlaps(hpa.raw(), pages) {
            return Reply::errno(errno::EBUSY);
        }
        let (mm, host, hyp, _) = self.parts();
        changed(mp::host_share_hyp(host, hyp, mm, hpa, pages))
    }

    /// HOST_UNSHARE_HYP.
    pub fn host_unshare_hyp(&mut self, hpa: Hpa, pages: u64) -> Reply {
        let (mm, host, hyp, _) = self.parts();
        changed(mp::host_unshare_hyp(host, hyp, mm, hpa, pages))
    }

    /// VM_CREATE: the handle in RAX.
    pub fn vm_create(&mut self, host_vm_id: u64, kind: VmKind, hpa: Hpa, pages: u64) -> Reply {
        if self.pins.overlaps(hpa.raw(), pages) {
            return Reply::errno(errno::EBUSY);
        }
        let (mm, host, hyp, vms) = self.parts();
        match vms.create(host, hyp, mm, host_vm_id, kind, hpa, pages, 3) {
            Ok(h) => Reply::val(u64::from(h.raw())),
            Err(e) => Reply::from(Err(e)),
        }
    }

    /// VM_TEARDOWN.
    pub fn vm_teardown(&mut self, handle: u32) -> Reply {
        let (mm, host, hyp, vms) = self.parts();
        changed(vms.teardown(host, hyp, mm, handle))
    }

    /// Runs transition `t` on the table of VM `handle` (the error of the
    /// VM table's lookup if there is no such VM): the shape of every
    /// host <-> guest call.
    fn on_guest(
        &mut self,
        handle: u32,
        t: impl FnOnce(&mut HostEpt, &mut GuestEpt, &mut HypMm) -> Result<(), Error>,
    ) -> Reply {
        let (mm, host, _, vms) = self.parts();
        match vms.get_mut(handle) {
            Ok(vm) => changed(t(host, vm.guest_mut(), mm)),
            Err(e) => Reply::from(Err(e)),
        }
    }

    /// HOST_SHARE_GUEST.
    pub fn host_share_guest(&mut self, handle: u32, hpa: Hpa, gpa: Gpa, pages: u64) -> Reply {
        if self.pins.overlaps(hpa.raw(), pages) {
            return Reply::errno(errno::EBUSY);
        }
        self.on_guest(handle, |host, g, mm| {
            mp::host_share_guest(host, g, mm, hpa, gpa, pages, PERM_RWX)
        })
    }

    /// HOST_UNSHARE_GUEST.
    pub fn host_unshare_guest(&mut self, handle: u32, hpa: Hpa, gpa: Gpa, pages: u64) -> Reply {
        self.on_guest(handle, |host, g, mm| {
            mp::host_unshare_guest(host, g, mm, hpa, gpa, pages)
        })
    }

    /// HOST_DONATE_GUEST.
    pub fn host_donate_guest(&mut self, handle: u32, hpa: Hpa, gpa: Gpa, pages: u64) -> Reply {
        if self.pins.overlaps(hpa.raw(), pages) {
            return Reply::errno(errno::EBUSY);
        }
        self.on_guest(handle, |host, g, mm| {
            mp::host_donate_guest(host, g, mm, hpa, gpa, pages, PERM_RWX)
        })
    }

    /// DEBUG_GUEST_SHARE_HOST.
    #[cfg(pkvm_debug)]
    pub fn guest_share_host(&mut self, handle: u32, gpa: Gpa, pages: u64) -> Reply {
        self.on_guest(handle, |host, g, mm| {
            mp::guest_share_host(host, g, mm, gpa, pages)
        })
    }

    /// DEBUG_GUEST_UNSHARE_HOST.
    #[cfg(pkvm_debug)]
    pub fn guest_unshare_host(&mut self, handle: u32, gpa: Gpa, pages: u64) -> Reply {
        self.on_guest(handle, |host, g, mm| {
            mp::guest_unshare_host(host, g, mm, gpa, pages)
        })
    }

    /// Whether the host EPT, as it is now, lets the host make the access
    /// an EPT violation reported at `hpa` (`read`, `write`, `fetch` from
    /// the exit qualification).  When it does, the violation came from a
    /// translation this CPU cached before the table changed (another CPU
    /// changed it, or freed and reused a table page), not from the host
    /// touching memory it does not own.
    pub fn host_may_access(&mut self, hpa: Hpa, read: bool, write: bool, fetch: bool) -> bool {
        let (mm, host, _, _) = self.parts();
        let Ok(leaf) = host.pgt().lookup(mm, hpa) else {
            return false;
        };
        let e = EptEntry(leaf.entry);
        (!read || e.read() != 0) && (!write || e.write() != 0) && (!fetch || e.exec() != 0)
    }

    /// After a host EPT violation at `hpa` that [`Self::host_may_access`]
    /// did not explain: maps the on-demand part of the host's identity map
    /// around `hpa` if that is where it lies and it is not mapped yet
    /// (`LazyMap::map_on_demand`); `true`: the host should retry.  Out of
    /// pool memory: `false` (the host takes the fault; its availability
    /// only).
    pub fn map_on_demand(&mut self, hpa: Hpa) -> bool {
        // SAFETY: as in `parts` (borrowed apart from `lazy` here).
        let mm = unsafe { &mut *self.mm };
        matches!(self.lazy.map_on_demand(&mut self.host, mm, hpa), Ok(true))
    }

    /// Pins the host frame of `pa` for a vmcs02 (see [`PinSet`]); `false`
    /// if the set is full.
    pub fn pin_host_frame(&mut self, pa: u64) -> bool {
        self.pins.pin(pa)
    }

    /// Drops one pin of the host frame of `pa`.
    pub fn unpin_host_frame(&mut self, pa: u64) {
        self.pins.unpin(pa);
    }

    /// Frames pinned now (counted once each).
    pub fn pinned_host_frames(&self) -> usize {
        self.pins.frames()
    }

    /// Whether BEGIN_TEARDOWN froze the page states.
    pub fn frozen(&self) -> bool {
        self.frozen
    }

    /// The root of the shadow EPT of `eptp12`, created if there is none
    /// (VM entry into the host's guest, and before every re-entry: an
    /// INVEPT or an eviction retires roots).  `None`: no memory even after
    /// retiring another shadow.
    pub fn shadow_root(&mut self, eptp12: u64) -> Option<Hpa> {
        // SAFETY: as in `parts`: the live allocator, under the lock.
        let mm = unsafe { &mut *self.mm };
        let mut smm = shadow_mm(mm);
        self.shadows.ensure(&mut self.host, &mut smm, eptp12).ok()
    }

    /// An EPT violation of the host's guest on its shadow EPT at `gpa`
    /// for `access`: walks EPT12 (`eptp12`) through the host's memory,
    /// intersects with the host EPT's leaf for the page, and installs the
    /// shadow leaf through a counted share (Documentation/shadow-ept.rst).
    /// `exec_only`: the CPU has execute-only EPT translations.
    pub fn shadow_fault(
        &mut self,
        eptp12: u64,
        gpa: Gpa,
        access: Access,
        ctx: &WalkCtx,
        exec_only: bool,
    ) -> ShadowFault {
        // SAFETY: as in `parts`: the live allocator, under the lock.
        let mm = unsafe { &mut *self.mm };
        let rl = match resolve_shadow_leaf(
            mm,
            &self.host,
            &mut self.reserve,
            ctx,
            eptp12,
            gpa,
            access,
            exec_only,
        ) {
            Ok(l) => l,
            Err(f) => return f,
        };
        let mut smm = shadow_mm(mm);
        match self
            .shadows
            .install(&mut self.host, &mut smm, eptp12, gpa, &rl)
        {
            Ok(_) => ShadowFault::Mapped,
            Err(NoMapping::NoMemory) => ShadowFault::NoMemory,
            Err(NoMapping::Refused | NoMapping::Invalid) => ShadowFault::NotShareable,
        }
    }

    /// The host's INVEPT: single-context for `Some(eptp12)`, global for
    /// `None`, re-validating (Documentation/shadow-ept.rst,
    /// "Invalidation"): each shadow named is compared leaf by leaf with
    /// what the walk of EPT12 and the host EPT give now; one that is still
    /// current is kept (no store, no flush); one with a few stale leaves
    /// loses only those (revoked, the shadow flushed from every CPU, then
    /// their shares returned), any other stale one is retired, flushed
    /// from every CPU before its shares go back ([`shadow_mm`]).
    /// `ctx` and `exec_only` as for [`Self::shadow_fault`].
    pub fn shadow_invept(&mut self, single: Option<u64>, ctx: &WalkCtx, exec_only: bool) {
        // SAFETY: as in `parts`: the live allocator, under the lock.
        let mm = unsafe { &mut *self.mm };
        let mut smm = shadow_mm(mm);
        let keys = match single {
            Some(e) => {
                let mut k = [None; crate::hv::vmx::nested::shadow_ept::MAX_SHADOWS];
                if let Some(first) = k.first_mut() {
                    *first = Some(ShadowEpts::key(e));
                }
                k
            }
            None => self.shadows.keys(),
        };
        // By reference (root mode: no out-of-line array iterator).
        for &key in keys.iter().flatten() {
            // The EPT pointer of the key for the walk: its root with
            // write-back and a 4-level walk (the walk uses the root only).
            let eptp12 = key | 6 | 3 << 3;
            let (host, reserve) = (&self.host, &mut self.reserve);
            let current = self.shadows.is_current(&mut smm, eptp12, &mut |m, gpa| {
                resolve_shadow_leaf(
                    m.inner(),
                    host,
                    reserve,
                    ctx,
                    eptp12,
                    gpa,
                    Access::NONE,
                    exec_only,
                )
                .ok()
            });
            if let Some(current) = current {
                self.shadows
                    .revalidated(&mut self.host, &mut smm, eptp12, current);
            }
        }
    }

    /// Every shadow EPT retired, every share returned (the last CPU's
    /// VMXOFF, unload).  Whether everything came back.
    pub fn shadow_destroy_all(&mut self) -> bool {
        // SAFETY: as in `parts`: the live allocator, under the lock.
        let mm = unsafe { &mut *self.mm };
        let mut smm = shadow_mm(mm);
        self.shadows.destroy_all(&mut self.host, &mut smm).is_ok()
    }

    /// The shadow EPTs' counters.
    pub fn shadow_stats(&self) -> crate::hv::vmx::nested::shadow_ept::Stats {
        *self.shadows.stats()
    }

    /// The hypervisor pool's pages in use and in total (shadow EPT tables,
    /// share-count pages and host EPT tables all come from it).
    pub fn pool_usage(&self) -> (usize, usize) {
        // SAFETY: as in `parts`: the live allocator, under the lock; only
        // read.
        let mm = unsafe { &*self.mm };
        (mm.used_pages(), mm.total_pages())
    }

    /// What nested VMX works on, borrowed apart: the host's memory as
    /// root mode may touch it, and the vmcs12 store.
    pub fn nested_parts(&mut self) -> (HostMemory<'_>, &mut Vmcs12Cache) {
        // SAFETY: as in `parts`: the live allocator, under the lock.
        let mm = unsafe { &mut *self.mm };
        (
            HostMemory {
                mm,
                host: HostView::Reclaim(&mut self.host, &mut self.shadows),
                reserve: &mut self.reserve,
            },
            &mut self.vmcs12,
        )
    }

    /// DEBUG_HOST_EPT_LOOKUP: the leaf entry in RAX, its level in RBX.
    #[cfg(pkvm_debug)]
    pub fn host_ept_lookup(&mut self, hpa: Hpa) -> Reply {
        let (mm, host, _, _) = self.parts();
        match host.pgt().lookup(mm, hpa) {
            Ok(leaf) => Reply {
                rbx: Some(u64::from(leaf.level)),
                ..Reply::val(leaf.entry)
            },
            Err(e) => Reply::from(Err(e)),
        }
    }

    /// DEBUG_FILL_PAGE: fills `hpa` with `value` from root mode, if the
    /// host EPT gives the host no access to it (`EPERM` otherwise: the
    /// call never writes the host's own memory).
    #[cfg(pkvm_debug)]
    pub fn fill_page(&mut self, hpa: Hpa, value: u64) -> Reply {
        if self.host_may_access(hpa, true, false, false) {
            return Reply::errno(errno::EPERM);
        }
        // SAFETY: as in `parts`: the live allocator, under the lock.
        let mm = unsafe { &mut *self.mm };
        mm.fill_page(hpa, value);
        Reply::val(0)
    }

    /// DEBUG_COUNT_WORDS: how many 64-bit words of `hpa` equal `value`,
    /// read from root mode, if the host EPT gives the host no access to it
    /// (`EPERM` otherwise, as for DEBUG_FILL_PAGE).
    #[cfg(pkvm_debug)]
    pub fn count_words(&mut self, hpa: Hpa, value: u64) -> Reply {
        if self.host_may_access(hpa, true, false, false) {
            return Reply::errno(errno::EPERM);
        }
        // SAFETY: as in `parts`: the live allocator, under the lock.
        let mm = unsafe { &mut *self.mm };
        Reply::val(mm.count_words(hpa, value))
    }

    /// DEBUG_STACK_GUARD: root mode's page-table leaf entries for `va`
    /// (RAX) and `va2` (RBX), zero where nothing maps them.
    #[cfg(pkvm_debug)]
    pub fn hyp_lookup_pair(&mut self, va: u64, va2: u64) -> Reply {
        let (mm, _, hyp, _) = self.parts();
        let mut look = |va: u64| {
            hyp.lookup(mm, crate::hv::mm::addr::HypVa::from_low_bits(va))
                .map(|(e, _)| e)
        };
        match (look(va), look(va2)) {
            (Ok(a), Ok(b)) => Reply {
                rbx: Some(b),
                ..Reply::val(a)
            },
            (Err(e), _) | (_, Err(e)) => Reply::from(Err(e)),
        }
    }

    /// DEBUG_CHECK_INVARIANTS: 0, or -EFAULT with the violation's kind in
    /// RBX and address in RCX.
    #[cfg(pkvm_debug)]
    pub fn check_invariants(&mut self) -> Reply {
        // SAFETY: as in `parts` (borrowed apart from `claims` here).
        let mm = unsafe { &mut *self.mm };
        let Self {
            host,
            hyp,
            vms,
            claims,
            pins,
            reserve,
            shadows,
            ..
        } = self;
        let r =
            invariants::check_with_shadows(host, hyp, vms.guests(), shadows.guests(), mm, claims);
        // The reserve: its accounting, and every page of every batch the
        // hypervisor's alone.
        let r = r.and_then(|()| {
            let v = |kind, addr| invariants::Violation {
                kind,
                party: invariants::Party::Hyp,
                addr,
            };
            if reserve.check().is_err() {
                return Err(v(invariants::ViolationKind::ReserveAccounting, 0));
            }
            for (h, n) in reserve.batches() {
                for p in (0..n).map(|i| h + i * 4096) {
                    let hyp_owned = Hpa::new(p)
                        .and_then(|pa| hyp.va(pa, 4096).ok())
                        .and_then(|va| hyp.lookup(mm, va).ok())
                        .is_some_and(|(e, _)| HypFormat::state(e) == PageState::Owned);
                    let host_none = Hpa::new(p)
                        .and_then(|pa| host.pgt().lookup(mm, pa).ok())
                        .is_some_and(|l| l.entry == 0);
                    if !hyp_owned || !host_none {
                        return Err(v(invariants::ViolationKind::ReserveNotHypOwned, p));
                    }
                }
            }
            Ok(())
        });
        // Nested VMX's pins: every pinned frame is still the host's own,
        // or shared with guests by the shadow EPTs (a guest touched it
        // through EPT12 while it was pinned, as KVM's APIC-access page
        // is: still the host's, read-write, and no donation takes a
        // shared page; no host-initiated share takes a pinned one).
        let r = r.and_then(|()| {
            for pa in pins.iter() {
                let owned = Hpa::new(pa)
                    .and_then(|p| host.pgt().lookup(mm, p).ok().map(|l| (p, l)))
                    .map(|(p, l)| {
                        let e = EptEntry(l.entry);
                        let rw = e.read() != 0 && e.write() != 0;
                        let guest_shared = e.state() == PageState::SharedOwned
                            && matches!(host.share_counts().get(mm, p), Ok(n) if n > 0);
                        rw && (e.state() == PageState::Owned || guest_shared)
                    });
                if owned != Some(true) {
                    return Err(invariants::Violation {
                        kind: invariants::ViolationKind::PinnedNotOwned,
                        party: invariants::Party::Host,
                        addr: pa,
                    });
                }
            }
            Ok(())
        });
        match r {
            Ok(()) => Reply::val(0),
            Err(v) => Reply {
                rbx: Some(v.kind as u64),
                rcx: Some(v.addr),
                ..Reply::errno(errno::EFAULT)
            },
        }
    }
}

/// Most pinned host frames: a live vmcs02 pins at most
/// [`PINS_PER_VMCS02`] (its vmcs12, I/O bitmaps A and B, virtual-APIC
/// and APIC-access pages), and each CPU has one vmcs02; the module does
/// not load with more than [`MAX_TEARDOWN_CPUS`] CPU numbers
/// (`crate::host::hypervisor`), so the set is never full (about 20 KiB).
pub const MAX_PINS: usize = MAX_TEARDOWN_CPUS * PINS_PER_VMCS02;
/// Pins one vmcs02 holds at most.
pub const PINS_PER_VMCS02: usize = 5;

/// The host's memory as nested VMX may touch it from root mode
/// (`crate::hv::vmx::nested::host_walk::HostPhys`): only RAM pages the
/// host owns exclusively at this moment (host EPT state `OWNED`, readable
/// and writable: never hypervisor memory, the pinned module image, a page
/// shared with or donated to anyone, nor MMIO), through the allocator's
/// scratch slot, under the hypervisor lock (whoever holds `PageStates`).
/// It also hands the vmcs12 cache pages of the reserve ([`PageSupply`]).
///
/// Built by [`PageStates::nested_parts`] (VMX instructions, VM entries),
/// it also takes back a page the host needs as its own that only the
/// shadow EPTs still share ([`HostView::Reclaim`]; Documentation/shadow-ept.rst,
/// "Pages the host needs back"); the shadow fault path's walk of EPT12
/// reads through a [`HostView::Read`] view (it runs while a shadow is
/// being filled).
pub struct HostMemory<'a> {
    mm: &'a mut HypMm,
    host: HostView<'a>,
    reserve: &'a mut Reserve,
}

/// The host EPT as [`HostMemory`] sees it.
enum HostView<'a> {
    /// Read only: a page not exclusively the host's is refused.
    Read(&'a HostEpt),
    /// A page that only the shadow EPTs share is taken back first
    /// (`ShadowEpts::reclaim_for_host`), then checked again.
    Reclaim(&'a mut HostEpt, &'a mut ShadowEpts),
}

impl HostView<'_> {
    fn ept(&self) -> &HostEpt {
        match self {
            Self::Read(h) => h,
            Self::Reclaim(h, _) => h,
        }
    }
}

// SAFETY: the reserve's pages, handed out by `Reserve::take` (zeroed,
// mapped at `pa + window`, no one else's until given back).
unsafe impl PageSupply for HostMemory<'_> {
    fn take_page(&mut self) -> Option<u64> {
        self.reserve.take()
    }
    fn give_page(&mut self, pa: u64) {
        self.reserve.give(pa);
    }
    fn under_pressure(&self) -> bool {
        self.reserve.under_pressure()
    }
    fn window(&self) -> u64 {
        self.reserve.window()
    }
}

impl HostMemory<'_> {
    /// Whether the page of `pa` is the host's own RAM.
    /// A page that only shadow EPTs share (a dead VM's guest memory the
    /// kernel reused) is taken back first where the view allows it.
    fn owns(&mut self, pa: u64) -> Option<Hpa> {
        let page = Hpa::new(pa & !0xfff)?;
        let host = self.host.ept();
        if !host.ram().contains(page.raw(), 4096) {
            return None;
        }
        let leaf = host.pgt().lookup(self.mm, page).ok()?;
        let e = EptEntry(leaf.entry);
        if e.read() != 0 && e.write() != 0 && e.state() == PageState::Owned {
            return Some(page);
        }
        match &mut self.host {
            HostView::Reclaim(host, shadows) if e.state() == PageState::SharedOwned => {
                let mut smm = shadow_mm(self.mm);
                shadows
                    .reclaim_for_host(host, &mut smm, page)
                    .then_some(page)
            }
            _ => None,
        }
    }

    /// Whether the frame of `pa` may be pinned for a vmcs02 (an
    /// APIC-access or virtual-APIC page): the host's RAM, read-write,
    /// `OWNED`, or `SHARED_OWNED` with guests only (a share count: a guest
    /// mapped it through a shadow EPT, as KVM maps its APIC-access page
    /// into EPT12).  The rule the invariant checker holds pins to; unlike
    /// [`Self::owns`] it takes nothing back: a guest-shared frame is still
    /// the host's and no donation takes it, and dropping the guests'
    /// leaves of it whenever a vmcs02 is built for such a frame (each vCPU
    /// switch on a CPU) would cost a flush of every CPU and a re-fault.
    pub(crate) fn pinnable(&mut self, pa: u64) -> bool {
        let Some(page) = Hpa::new(pa & !0xfff) else {
            return false;
        };
        let host = self.host.ept();
        if !host.ram().contains(page.raw(), 4096) {
            return false;
        }
        let Ok(leaf) = host.pgt().lookup(self.mm, page) else {
            return false;
        };
        let e = EptEntry(leaf.entry);
        let rw = e.read() != 0 && e.write() != 0;
        rw && (e.state() == PageState::Owned
            || (e.state() == PageState::SharedOwned
                && matches!(host.share_counts().get(self.mm, page), Ok(n) if n > 0)))
    }

    /// Runs `f` with the host page of `pa` mapped, if the host owns it and
    /// `len` bytes from `pa` stay in the page; `f` gets the address of
    /// `pa` in the mapping.
    fn access(&mut self, pa: u64, len: usize, f: impl FnOnce(u64)) -> bool {
        let off = pa & 0xfff;
        if off as usize + len > 4096 {
            return false;
        }
        let Some(page) = self.owns(pa) else {
            return false;
        };
        let mut done = false;
        self.mm.with_scratch(page, MemType::Wb, |va| {
            f(va + off);
            done = true;
        });
        done
    }
}

impl crate::hv::vmx::nested::host_walk::HostPhys for HostMemory<'_> {
    fn read_bytes(&mut self, pa: u64, out: &mut [u8]) -> bool {
        let n = out.len();
        self.access(pa, n, |va| {
            for (i, b) in out.iter_mut().enumerate() {
                // SAFETY: `access` maps the page and keeps `[va, va + n)`
                // inside it; the host may change it concurrently, hence
                // volatile byte reads.
                *b = unsafe { ((va + i as u64) as *const u8).read_volatile() };
            }
        })
    }

    fn write_bytes(&mut self, pa: u64, bytes: &[u8]) -> bool {
        self.access(pa, bytes.len(), |va| {
            for (i, b) in bytes.iter().enumerate() {
                // SAFETY: as in `read_bytes`; the page is the host's, which
                // the emulated instruction writes as the CPU would.
                unsafe { ((va + i as u64) as *mut u8).write_volatile(*b) };
            }
        })
    }

    fn read_words(&mut self, pa: u64, out: &mut [u64]) -> bool {
        if pa % 8 != 0 {
            return false;
        }
        let n = out.len() * 8;
        self.access(pa, n, |va| {
            for (i, w) in out.iter_mut().enumerate() {
                // SAFETY: as in `read_bytes`; 8-byte aligned.
                *w = unsafe { ((va + 8 * i as u64) as *const u64).read_volatile() };
            }
        })
    }

    fn read_page_words(&mut self, page: u64, mask: &[u64; 8], out: &mut [u64; 512]) -> bool {
        if page & 0xfff != 0 {
            return false;
        }
        // One ownership check and one mapping for the whole page.
        self.access(page, 4096, |va| {
            // The set bits of the mask only.
            for (i, m) in mask.iter().enumerate() {
                let mut m = *m;
                while m != 0 {
                    let w = 64 * i + m.trailing_zeros() as usize;
                    m &= m - 1;
                    if let Some(o) = out.get_mut(w) {
                        // SAFETY: as in `read_bytes`; word `w` (< 512) of
                        // the mapped page, 8-byte aligned.
                        *o = unsafe { ((va + 8 * w as u64) as *const u64).read_volatile() };
                    }
                }
            }
        })
    }

    fn write_words(&mut self, pa: u64, words: &[u64]) -> bool {
        if pa % 8 != 0 {
            return false;
        }
        self.access(pa, words.len() * 8, |va| {
            for (i, w) in words.iter().enumerate() {
                // SAFETY: as in `write_bytes`; 8-byte aligned.
                unsafe { ((va + 8 * i as u64) as *mut u64).write_volatile(*w) };
            }
        })
    }
}
