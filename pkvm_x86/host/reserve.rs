// SPDX-License-Identifier: GPL-2.0

//! The host half of the reserve for shadow state
//! (`crate::hv::mm::reserve`, Documentation/nested.rst "Memory for shadow
//! state"): the stock KVM never donates anything, so pkvm's own host half
//! does.  [`Donor`] takes batches of [`BATCH_PAGES`] physically contiguous
//! pages from the kernel's page allocator and gives each to the
//! hypervisor with RESERVE_DONATE; it donates at load until the reserve
//! wants no more, then a delayed work (C helper, every [`PERIOD_MS`]) asks
//! RESERVE_STATUS and donates what the reserve wants (it wants pages once
//! its free count is below its low watermark).  Root mode never calls the
//! host: the host half learns the need from the hypercall's answer.
//!
//! The same work grows the hypervisor's pool (`crate::hyp::mm::HypMm`:
//! the shadow EPT's tables and share counts, the host EPT's split tables;
//! Documentation/shadow-ept.rst "Memory"): it asks POOL_STATUS, and when
//! the free pages are below [`POOL_LOW_PAGES`] or root mode recorded a
//! shortage since the last answer (an allocation that found the pool
//! empty: the "kick"), it donates 2 MiB chunks (order-9 allocations, like
//! `crate::host::pool`) with POOL_GROW, up to the module parameter
//! `pool_max_mb`.  While the last answer wanted memory (a run that
//! donated, or free pages falling below four times the watermark) the
//! work runs again after [`BUSY_PERIOD_MS`] instead of [`PERIOD_MS`].  An
//! allocation the kernel cannot satisfy is a warning (once until a
//! donation succeeds again); root mode meanwhile fails the allocation (the
//! guest re-faults).
//!
//! The pages stay the hypervisor's until the module unloads: the teardown
//! scrub zeroes them with every other donated page, and only after every
//! CPU has left VMX operation does [`Donor`]'s drop zero them again and
//! give them back to the page allocator (or leak them, with the pool, if
//! a CPU could not leave).  The grown pool chunks go the same way.

use core::ffi::c_void;
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, Ordering};

use kernel::{bindings, prelude::*};

use crate::arch::vmx;
use crate::hv::hypercall::{self, nr};

/// Pages per batch (order 4, 64 KiB), the header included.
pub(crate) const BATCH_PAGES: usize = 16;
/// How often the refill work asks the hypervisor.
pub(crate) const PERIOD_MS: u32 = 500;
/// How soon it asks again while the last answer wanted memory.
pub(crate) const BUSY_PERIOD_MS: u32 = 10;
/// Below this many free pool pages the work grows the pool.
pub(crate) const POOL_LOW_PAGES: u64 = 256;
/// Most chunks one run of the work donates to the pool (4 MiB: a burst of
/// shadow faults is served in steps of [`BUSY_PERIOD_MS`]).
const MAX_CHUNKS_PER_RUN: usize = 2;
/// Bytes in a pool chunk.
const CHUNK: usize = crate::host::pool::CHUNK;
/// Most batches one refill donates (a bound on a misbehaving answer).
const MAX_BATCHES_PER_REFILL: usize = 64;

extern "C" {
    fn pkvm_helper_pa(virt: *const c_void) -> u64;
    fn pkvm_helper_refill_start(f: Option<unsafe extern "C" fn() -> u32>, period_ms: u32);
    fn pkvm_helper_refill_stop();
}

/// The running donor, for the refill work (set while the work runs).
static DONOR: AtomicPtr<Donor> = AtomicPtr::new(core::ptr::null_mut());
/// The refill work is scheduled.
static RUNNING: AtomicBool = AtomicBool::new(false);
/// Physical address of the first batch donated (tests find a reserve page
/// by it; 0: none).
static FIRST_BATCH: AtomicU64 = AtomicU64::new(0);

/// The reserve as RESERVE_STATUS reports it.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Status {
    /// Free pages.
    pub(crate) free: u64,
    /// Pages the reserve wants (0: none).
    pub(crate) wanted: u64,
    /// Pages the reserve holds.
    pub(crate) total: u64,
}

/// RESERVE_STATUS.
pub(crate) fn status() -> Result<Status> {
    // SAFETY: RESERVE_STATUS only reads the hypervisor's counters; every
    // online CPU runs deprivileged while the hypervisor runs.
    let (rax, rbx, rcx) = unsafe { vmx::vmcall3(nr::RESERVE_STATUS, 0, 0, 0, 0) };
    let free = hypercall::decode(rax).map_err(|e| Error::from_errno(-(e as i32)))?;
    Ok(Status {
        free,
        wanted: rbx,
        total: rcx,
    })
}

/// Physical address of the first batch the host half donated (0: none).
#[cfg(pkvm_debug)]
pub(crate) fn first_batch_pa() -> u64 {
    FIRST_BATCH.load(Ordering::Acquire)
}

/// The pool as POOL_STATUS reports it.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct PoolStatus {
    /// Free pages.
    pub(crate) free: u64,
    /// Pages in total.
    pub(crate) total: u64,
    /// Allocations that found the pool empty, ever.
    pub(crate) shortages: u64,
}

fn pool_reply(rax: u64, rbx: u64, rcx: u64) -> Result<PoolStatus> {
    let free = hypercall::decode(rax).map_err(|e| Error::from_errno(-(e as i32)))?;
    Ok(PoolStatus {
        free,
        total: rbx,
        shortages: rcx,
    })
}

/// POOL_STATUS.
pub(crate) fn pool_status() -> Result<PoolStatus> {
    // SAFETY: POOL_STATUS only reads the hypervisor's counters; every
    // online CPU runs deprivileged while the hypervisor runs.
    let (rax, rbx, rcx) = unsafe { vmx::vmcall3(nr::POOL_STATUS, 0, 0, 0, 0) };
    pool_reply(rax, rbx, rcx)
}

/// POOL_GROW of the chunk at physical address `pa`, as the host half
/// asks for it (the debug interface uses it for refused cases).
///
/// # Safety
///
/// If `pa` is memory of the host's, it must be a chunk no one uses any
/// more (on success it is the hypervisor's for good).
pub(crate) unsafe fn pool_grow(pa: u64) -> Result<PoolStatus> {
    // SAFETY: the caller's contract; refused calls change nothing.
    let (rax, rbx, rcx) = unsafe { vmx::vmcall3(nr::POOL_GROW, pa >> 12, 0, 0, 0) };
    pool_reply(rax, rbx, rcx)
}

/// Chunks the host half added to the pool since load.
static POOL_GROWN: AtomicU64 = AtomicU64::new(0);
/// Physical address of the first chunk it added (tests find a grown
/// chunk by it; 0: none).
static FIRST_CHUNK: AtomicU64 = AtomicU64::new(0);

/// Physical address of the first chunk the host half added to the pool
/// (0: none).
#[cfg(pkvm_debug)]
pub(crate) fn first_chunk_pa() -> u64 {
    FIRST_CHUNK.load(Ordering::Acquire)
}

/// Chunks the host half has added to the pool.
pub(crate) fn pool_grown() -> u64 {
    POOL_GROWN.load(Ordering::Acquire)
}

/// The batches the host half gave to the reserve, and the chunks it gave
/// to the pool.
pub(crate) struct Donor {
    /// Direct-map addresses of the batches, each `BATCH_PAGES` pages.
    batches: KVec<usize>,
    /// Direct-map addresses of the pool chunks, each [`CHUNK`] bytes.
    chunks: KVec<usize>,
    /// Most pages the pool may grow to (`pool_max_mb`).
    pool_max_pages: u64,
    /// Root mode's shortage count at the last answer.
    shortages_seen: u64,
    /// The pool's free pages at the last answer.
    free_seen: u64,
    /// An allocation failure was reported (until a donation succeeds).
    warned: bool,
    /// A CPU may still use the pages: never give them back.
    leak: bool,
}

impl Donor {
    /// An empty donor; the pool may grow to `pool_max_bytes`.
    pub(crate) fn new(pool_max_bytes: usize) -> Self {
        Donor {
            batches: KVec::new(),
            chunks: KVec::new(),
            pool_max_pages: (pool_max_bytes / 4096) as u64,
            shortages_seen: 0,
            free_seen: 0,
            warned: false,
            leak: false,
        }
    }

    /// Donates one pool chunk; the pool's status after it.
    fn grow_chunk(&mut self) -> Result<PoolStatus> {
        self.chunks.reserve(1, GFP_KERNEL)?;
        // SAFETY: plain page-allocator call; the result is checked.  An
        // order-9 allocation is 2 MiB aligned.
        let va = unsafe { bindings::alloc_pages_exact_noprof(CHUNK, bindings::GFP_KERNEL) };
        if va.is_null() {
            return Err(ENOMEM);
        }
        // SAFETY: `va` is a live direct-map allocation.
        let pa = unsafe { pkvm_helper_pa(va) };
        // SAFETY: a fresh allocation this module no longer touches (the
        // host EPT takes it away from the host on success).
        match unsafe { pool_grow(pa) } {
            Ok(st) => {
                // Cannot fail: capacity reserved above.
                let _ = self.chunks.push(va as usize, GFP_KERNEL);
                POOL_GROWN.fetch_add(1, Ordering::AcqRel);
                let _ = FIRST_CHUNK.compare_exchange(0, pa, Ordering::AcqRel, Ordering::Acquire);
                Ok(st)
            }
            Err(e) => {
                // Refused: nothing changed, the pages are still the host's.
                // SAFETY: the allocation above, unused.
                unsafe { bindings::free_pages_exact(va, CHUNK) };
                Err(e)
            }
        }
    }

    /// Grows the pool while it is below its low watermark or root mode
    /// ran out since the last answer (bounded per run and by
    /// `pool_max_mb`).  Whether to look again soon: the pool still wants
    /// memory, this run donated some, or the free pages are falling within
    /// four times the watermark (a burst of demand outruns [`PERIOD_MS`]).
    fn grow_pool(&mut self) -> Result<bool> {
        let mut st = pool_status()?;
        let mut kicked = st.shortages != self.shortages_seen;
        self.shortages_seen = st.shortages;
        // Pages taken since the last look: demand is going on.
        let falling = st.free < self.free_seen;
        let mut n = 0;
        loop {
            self.free_seen = st.free;
            let low = st.free < POOL_LOW_PAGES || kicked;
            if st.total + CHUNK as u64 / 4096 > self.pool_max_pages {
                return Ok(false);
            }
            if !low {
                // Demand may go on (a guest faulting its memory in): look
                // again soon after a run that donated, or while the free
                // pages fall and are within four times the watermark.
                return Ok(n != 0 || (falling && st.free < 4 * POOL_LOW_PAGES));
            }
            if n == MAX_CHUNKS_PER_RUN {
                return Ok(true);
            }
            st = match self.grow_chunk() {
                Ok(st) => st,
                Err(e) => {
                    if !self.warned {
                        pr_warn!("cannot grow the hypervisor pool: {:?}\n", e);
                        self.warned = true;
                    }
                    return Err(e);
                }
            };
            self.warned = false;
            self.shortages_seen = st.shortages;
            kicked = false;
            n += 1;
        }
    }

    /// Donates one batch; the reserve's status after it.
    fn donate_batch(&mut self) -> Result<Status> {
        let bytes = BATCH_PAGES * 4096;
        self.batches.reserve(1, GFP_KERNEL)?;
        // SAFETY: plain page-allocator call; the result is checked.
        let va = unsafe { bindings::alloc_pages_exact_noprof(bytes, bindings::GFP_KERNEL) };
        if va.is_null() {
            return Err(ENOMEM);
        }
        // SAFETY: `va` is a live direct-map allocation.
        let pa = unsafe { pkvm_helper_pa(va) };
        // SAFETY: RESERVE_DONATE of pages this module owns and no longer
        // touches (the host EPT takes them away from the host on success).
        let (rax, rbx, rcx) =
            unsafe { vmx::vmcall3(nr::RESERVE_DONATE, pa >> 12, BATCH_PAGES as u64, 0, 0) };
        match hypercall::decode(rax) {
            Ok(free) => {
                // Cannot fail: capacity reserved above.
                let _ = self.batches.push(va as usize, GFP_KERNEL);
                let _ = FIRST_BATCH.compare_exchange(0, pa, Ordering::AcqRel, Ordering::Acquire);
                Ok(Status {
                    free,
                    wanted: rbx,
                    total: rcx,
                })
            }
            Err(e) => {
                // Refused: all or nothing, the pages are still the host's.
                // SAFETY: the allocation above, unused.
                unsafe { bindings::free_pages_exact(va, bytes) };
                Err(Error::from_errno(-(e as i32)))
            }
        }
    }

    /// Donates what the reserve wants (it wants pages once below its low
    /// watermark: as many as bring it back to its target), in batches
    /// (each gives `BATCH_PAGES - 1` free pages; bounded).
    pub(crate) fn refill(&mut self) -> Result<Status> {
        let mut st = status()?;
        let mut need = st.wanted;
        let mut n = 0;
        while need != 0 && n < MAX_BATCHES_PER_REFILL {
            st = self.donate_batch()?;
            need = need.saturating_sub(BATCH_PAGES as u64 - 1);
            n += 1;
        }
        Ok(st)
    }

    /// Fills the reserve (at load, every CPU deprivileged) and starts the
    /// refill work.  `self` must not move, and no other reference to it be
    /// made, until [`stop_refill`]: the work uses it.
    pub(crate) fn start(&mut self) -> Result<Status> {
        let st = self.refill()?;
        // The pool: what it wants now (a failure is the work's to retry).
        let _ = self.grow_pool();
        DONOR.store(core::ptr::from_mut(self), Ordering::Release);
        RUNNING.store(true, Ordering::Release);
        // SAFETY: `refill_work` is a static function; the work is stopped
        // by `stop_refill` (always before the donor goes).
        unsafe { pkvm_helper_refill_start(Some(refill_work), PERIOD_MS) };
        Ok(st)
    }

    /// A CPU could not leave VMX operation: the pages must never go back.
    pub(crate) fn leak(&mut self) {
        self.leak = true;
    }

    /// Pages donated (reserve batches and pool chunks).
    pub(crate) fn pages(&self) -> usize {
        self.batches.len() * BATCH_PAGES + self.chunks.len() * (CHUNK / 4096)
    }
}

/// The refill work's body (process context); how many milliseconds until
/// it runs again.
///
/// # Safety
///
/// Called by the C helper's delayed work only, between `start` and `stop`.
unsafe extern "C" fn refill_work() -> u32 {
    // SAFETY: set by `start` to a donor that does not move and outlives
    // the work (`stop` cancels it first); work items of one delayed work
    // never run concurrently, and nothing else touches the donor then.
    let Some(d) = (unsafe { DONOR.load(Ordering::Acquire).as_mut() }) else {
        return PERIOD_MS;
    };
    if let Err(e) = d.refill() {
        pr_warn!("reserve refill failed: {:?}\n", e);
    }
    match d.grow_pool() {
        Ok(true) => BUSY_PERIOD_MS,
        // Warned once in `grow_pool`; retried at the normal pace.
        Ok(false) | Err(_) => PERIOD_MS,
    }
}

/// Stops the refill work (before the hypervisor is torn down; again,
/// harmlessly, when the donor drops).  Returns once no instance runs.
pub(crate) fn stop_refill() {
    if RUNNING.swap(false, Ordering::AcqRel) {
        // SAFETY: started in `Donor::start`; waits for a running instance
        // and keeps it from re-arming.
        unsafe { pkvm_helper_refill_stop() };
    }
    DONOR.store(core::ptr::null_mut(), Ordering::Release);
}

impl Drop for Donor {
    fn drop(&mut self) {
        stop_refill();
        if self.leak {
            pr_err!(
                "a CPU is still deprivileged; leaking the reserve ({} pages)\n",
                self.pages()
            );
            return;
        }
        let n = self.pages();
        for &va in self.chunks.iter() {
            // SAFETY: as for the batches below: every CPU has left VMX
            // operation; zeroed again before the chunk goes back.
            unsafe {
                core::ptr::write_bytes(va as *mut u8, 0, CHUNK);
                bindings::free_pages_exact(va as *mut c_void, CHUNK);
            }
        }
        POOL_GROWN.store(0, Ordering::Release);
        FIRST_CHUNK.store(0, Ordering::Release);
        let bytes = BATCH_PAGES * 4096;
        for &va in self.batches.iter() {
            // SAFETY: every CPU has left VMX operation (the hypervisor's
            // teardown ran before this drop), so the pages are the host's
            // again; zeroed (root mode's scrub did too) before they go back.
            unsafe {
                core::ptr::write_bytes(va as *mut u8, 0, bytes);
                bindings::free_pages_exact(va as *mut c_void, bytes);
            }
        }
        FIRST_BATCH.store(0, Ordering::Release);
        if n != 0 {
            pr_info!(
                "reserve and grown pool chunks: {} pages given back ({} chunks)\n",
                n,
                self.chunks.len()
            );
        }
    }
}
