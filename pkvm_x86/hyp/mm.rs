// SPDX-License-Identifier: GPL-2.0

//! The hypervisor's page allocator: hands out and takes back 4 KiB pages
//! of the pool, and implements the page-table engine's [`MmOps`] over them.
//!
//! It lives inside the pool (the first page of the first chunk), is built
//! by the host before any CPU is deprivileged, and from then on is used by
//! both sides under the rules of its owner (host-side set-up, root-mode
//! page-state changes later).  It never calls into the kernel: addresses
//! are translated with the direct-map offset recorded at set-up.
//!
//! Single pages come from a free list, then from a bump pointer; runs of
//! contiguous pages (stacks) only from the bump pointer.  Every page has a
//! 16-bit use count for table pages.
//!
//! The pool grows at run time ([`HypMm::add_chunk`], POOL_GROW,
//! Documentation/shadow-ept.rst "Memory"): the host half donates 2 MiB
//! chunks through the page-state machine, and root mode appends them.  The
//! use counts of the chunks given at load sit after the header in the
//! first chunk; a grown chunk keeps its own in its first page, and its
//! other 511 pages go on the free list (the bump pointer only ever covers
//! the chunks given at load).  Which chunk holds an address is a binary
//! search ([`ChunkIndex`]), not a scan.  The last [`GROW_RESERVE`] free
//! pages are kept for the growth itself (mapping a donated chunk may need
//! a table page or two), and every allocation that finds the pool empty
//! is counted ([`HypMm::shortages`]): POOL_STATUS reports both, and the
//! host half donates when free pages run low or a shortage was recorded.
//!
//! It also implements the engine's TLB-invalidation hook
//! ([`MmOps::invalidate`]), which the engine calls for break-before-make
//! and, once per walk, after taking access away: for the host EPT it is the
//! cross-CPU shootdown (`crate::hyp::global::shootdown_host_ept`: this CPU
//! and every other CPU under the hypervisor, before the walk returns, with
//! the hypervisor lock held), so a transition never goes on to use a page
//! another CPU of the host could still reach; for a guest's EPT INVEPT
//! single-context on this CPU (no guest runs yet: the shadow EPT will
//! extend this to the CPUs that run the guest); for the hypervisor's own
//! table INVLPG (or a CR3 reload for large ranges) on this CPU (root mode
//! on other CPUs reaches pages through the linear window only while they
//! are the hypervisor's, under the lock, and through the scratch slot,
//! which every user flushes before use).  Before the launch the hook does
//! nothing; from `set_scratch` on the tables are live, and only root mode
//! changes the host EPT (the host side's last change after it is to root
//! mode's own table: the stack guards, an INVLPG that costs the host
//! nothing).

use core::sync::atomic::AtomicU64;

use crate::hv::mm::addr::{Hpa, HypVa, TableKind};
use crate::hv::mm::chunk_index::ChunkIndex;
use crate::hv::mm::ept::Eptp;
use crate::hv::mm::ept::MemType;
use crate::hv::mm::pgtable::{store, Attrs, HypFormat, MmOps, PteFormat, Table, PERM_R, PERM_W};

/// Attributes of the scratch slot while it maps a page: read-write, not
/// executable, the same as `hyp_pgt` gives it when it is set up.
const SCRATCH_ATTRS: Attrs = Attrs::wb(
    PERM_R | PERM_W,
    crate::hv::mm::ept::PageState::SharedBorrowed,
);

/// Above this many bytes the hypervisor-table invalidation reloads CR3
/// instead of one INVLPG per 4 KiB page.
const INVLPG_MAX: u64 = 2 << 20;

/// Most chunks a pool can have (2 MiB each: 1 GiB).
pub const MAX_CHUNKS: usize = crate::hv::mm::chunk_index::MAX_CHUNKS;
const PAGE: u64 = 4096;
const PAGES_PER_CHUNK: usize = 512;
/// Free pages only the growth of the pool may take ([`HypMm::add_chunk`]'s
/// caller maps the donated chunk with them): below it every other
/// allocation fails (a shortage).
pub const GROW_RESERVE: usize = 8;

/// One physically contiguous, 2 MiB-aligned chunk.
#[derive(Clone, Copy, Debug, Default)]
#[repr(C)]
pub struct Chunk {
    /// Physical address.
    pub pa: u64,
    /// Direct-map virtual address.
    pub va: u64,
}

/// The allocator state.
#[repr(C)]
pub struct HypMm {
    chunks: [Chunk; MAX_CHUNKS],
    nr_chunks: usize,
    /// Chunks given at load (their counts follow the header; the bump
    /// pointer covers only them).
    nr_initial: usize,
    /// The chunks by address.
    index: ChunkIndex,
    /// Allocations that found no free page (the reserve for growth
    /// included), ever.
    shortages: u64,
    /// [`GROW_RESERVE`] may be taken (while a chunk is being mapped).
    growing: bool,
    /// Next never-used page, as a global page index.
    bump: usize,
    /// Physical address of the first page on the free list (0: empty).
    free_head: u64,
    /// Pages handed out and not freed.
    used: usize,
    /// Direct-map address of the `u16` use counts, one per pool page.
    counts: u64,
    /// `va - pa` of the direct map (host side, before launch; in root
    /// mode only the pool is mapped there).
    direct_map_offset: u64,
    /// Root mode's window on any other page: a virtual address whose
    /// last-level entry `scratch_pte` (itself in the pool) is pointed at a
    /// page for the time of one access, then back at `scratch_idle`.
    /// Non-zero also means the tables are live (root mode from now on):
    /// `invalidate` flushes only then.
    scratch_va: u64,
    scratch_pte: u64,
    scratch_idle: u64,
}

/// Why the allocator could not be set up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MmInitError {
    /// No chunk, too many, a chunk not 2 MiB aligned, or one twice.
    BadChunks,
}

/// Why a chunk cannot be added ([`HypMm::can_grow`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GrowError {
    /// Not 2 MiB aligned, or already a chunk of the pool.
    BadChunk,
    /// The pool has [`MAX_CHUNKS`] chunks.
    Full,
}

impl HypMm {
    /// Builds the allocator in the first page of `chunks[0]` and returns it.
    ///
    /// # Safety
    ///
    /// Every chunk must be a zeroed, 2 MiB, exclusively owned allocation,
    /// mapped at `va` in the direct map, and outlive the returned reference.
    pub unsafe fn init(chunks: &[Chunk]) -> Result<&'static mut HypMm, MmInitError> {
        let first = chunks.first().ok_or(MmInitError::BadChunks)?;
        if chunks.len() > MAX_CHUNKS || chunks.iter().any(|c| c.pa % (2 << 20) != 0) {
            return Err(MmInitError::BadChunks);
        }
        const _: () = assert!(core::mem::size_of::<HypMm>() <= 4 * 4096);
        let header_pages = core::mem::size_of::<HypMm>().div_ceil(PAGE as usize);
        let total = chunks.len() * PAGES_PER_CHUNK;
        let count_pages = (total * 2).div_ceil(PAGE as usize);
        // SAFETY: the first chunk is exclusively ours and large enough for
        // the header; `HypMm` is plain data for which zero is a valid value.
        let mm = unsafe { &mut *(first.va as *mut HypMm) };
        // INVARIANT: all-zero bytes are the empty index (the chunk is
        // zeroed; written again so that it does not depend on that).
        // SAFETY: `index` is plain integers, inside `mm`.
        unsafe { core::ptr::addr_of_mut!(mm.index).write_bytes(0, 1) };
        for (i, c) in chunks.iter().enumerate() {
            mm.index
                .insert(c.pa, i)
                .map_err(|_| MmInitError::BadChunks)?;
        }
        mm.nr_chunks = chunks.len();
        mm.nr_initial = chunks.len();
        mm.shortages = 0;
        mm.growing = false;
        for (dst, src) in mm.chunks.iter_mut().zip(chunks) {
            *dst = *src;
        }
        mm.direct_map_offset = first.va.wrapping_sub(first.pa);
        mm.counts = first.va + (header_pages as u64) * PAGE;
        // INVARIANT: the header and the count array occupy the first pages
        // of chunk 0 and are never handed out.
        mm.bump = header_pages + count_pages;
        mm.free_head = 0;
        mm.used = 0;
        mm.scratch_va = 0;
        Ok(mm)
    }

    /// Installs the scratch slot: `va` is mapped by the last-level entry at
    /// direct-map address `pte`, whose current value is its idle value.
    ///
    /// # Safety
    ///
    /// `pte` must be that entry, in a pool page, and stay so for the
    /// hypervisor's lifetime; `va` must be mapped only through it.
    pub unsafe fn set_scratch(&mut self, va: u64, pte: u64) {
        // SAFETY: guaranteed by the caller.
        self.scratch_idle =
            unsafe { (*(pte as *const AtomicU64)).load(core::sync::atomic::Ordering::Relaxed) };
        self.scratch_va = va;
        self.scratch_pte = pte;
    }

    /// Pages in the pool.
    pub fn total_pages(&self) -> usize {
        self.nr_chunks * PAGES_PER_CHUNK
    }

    /// Pages handed out (including the allocator's own).
    pub fn used_pages(&self) -> usize {
        self.used + self.reserved_pages()
    }

    /// Pages free (the reserve for growth included).
    pub fn free_pages(&self) -> usize {
        self.total_pages().saturating_sub(self.used_pages())
    }

    /// Allocations that found the pool empty, ever.
    pub fn shortages(&self) -> u64 {
        self.shortages
    }

    /// Chunks added at run time.
    pub fn grown_chunks(&self) -> usize {
        self.nr_chunks.saturating_sub(self.nr_initial)
    }

    /// The allocator's own pages in the chunks given at load: the header
    /// and their use counts.
    fn initial_reserved(&self) -> usize {
        let header = core::mem::size_of::<HypMm>().div_ceil(PAGE as usize);
        header + (self.nr_initial * PAGES_PER_CHUNK * 2).div_ceil(PAGE as usize)
    }

    fn reserved_pages(&self) -> usize {
        // One count page per grown chunk.
        self.initial_reserved() + self.grown_chunks()
    }

    /// Whether pool page `pa` is the allocator's own (header, use counts):
    /// what the teardown scrub leaves alone.
    pub fn is_own_page(&self, pa: u64) -> bool {
        match self.index.find(pa) {
            Some((0, pg)) => pg < self.initial_reserved(),
            Some((ci, pg)) => ci >= self.nr_initial && pg == 0,
            None => false,
        }
    }

    /// Whether the 2 MiB chunk at `pa` could be added (checked before the
    /// page-state machine takes it from the host).
    pub fn can_grow(&self, pa: u64) -> Result<(), GrowError> {
        if pa == 0 || pa % (2 << 20) != 0 || self.index.find(pa).is_some() {
            return Err(GrowError::BadChunk);
        }
        if self.nr_chunks >= MAX_CHUNKS {
            return Err(GrowError::Full);
        }
        Ok(())
    }

    /// Lets the next allocations take the reserve for growth (`true`,
    /// while a donated chunk is mapped) or not.
    pub fn set_growing(&mut self, growing: bool) {
        self.growing = growing;
    }

    /// Appends the 2 MiB chunk at `pa`: its first page becomes its use
    /// counts (zeroed), the other 511 go on the free list.
    ///
    /// # Safety
    ///
    /// [`Self::can_grow`] accepted `pa`; the chunk is the hypervisor's
    /// alone from now on (donated through the page-state machine), mapped
    /// read-write at `self.va(pa)` wherever this allocator is used.
    pub unsafe fn add_chunk(&mut self, pa: u64) -> Result<(), GrowError> {
        self.can_grow(pa)?;
        let num = self.nr_chunks;
        self.index
            .insert(pa, num)
            .map_err(|_| GrowError::BadChunk)?;
        let va = self.va(pa);
        if let Some(c) = self.chunks.get_mut(num) {
            *c = Chunk { pa, va };
        }
        // SAFETY: the caller's contract: the chunk is ours and mapped at
        // `va`; its first page holds its use counts, every other page is
        // free (a free page stores the next one's address in its first
        // word; `zalloc_page` zeroes a page before handing it out).
        unsafe {
            core::ptr::write_bytes(va as *mut u8, 0, PAGE as usize);
            for pg in (1..PAGES_PER_CHUNK as u64).rev() {
                *((va + pg * PAGE) as *mut u64) = self.free_head;
                self.free_head = pa + pg * PAGE;
            }
        }
        // INVARIANT: the chunk is in `index` as number `num` and in
        // `chunks` before it counts.
        self.nr_chunks = num + 1;
        Ok(())
    }

    /// The chunks, for mapping them out of the host's reach.
    pub fn chunks(&self) -> &[Chunk] {
        self.chunks.get(..self.nr_chunks).unwrap_or(&[])
    }

    /// Whether `pa` is a pool page.
    fn in_pool(&self, pa: u64) -> bool {
        self.index.find(pa).is_some()
    }

    /// Direct-map address of any physical address.
    pub fn va(&self, pa: u64) -> u64 {
        pa.wrapping_add(self.direct_map_offset)
    }

    fn page_of_index(&self, i: usize) -> Option<u64> {
        self.chunks()
            .get(i / PAGES_PER_CHUNK)
            .map(|c| c.pa + ((i % PAGES_PER_CHUNK) as u64) * PAGE)
    }

    /// Where `pa`'s use count is: after the header for the chunks given
    /// at load, in a grown chunk's first page for its own pages.
    fn count(&self, pa: u64) -> Option<*mut u16> {
        let (ci, pg) = self.index.find(pa)?;
        if ci < self.nr_initial {
            return Some((self.counts as *mut u16).wrapping_add(ci * PAGES_PER_CHUNK + pg));
        }
        let c = self.chunks.get(ci)?;
        Some((c.va as *mut u16).wrapping_add(pg))
    }

    /// `n` contiguous zeroed pages from the bump pointer; their physical
    /// address.  Runs never straddle chunks: the tail of a chunk a run
    /// skips goes on the free list (so that [`Self::free_pages`] counts
    /// only pages that can be handed out, and [`GROW_RESERVE`] is real).
    pub fn alloc_contig(&mut self, n: usize) -> Option<u64> {
        if n == 0 || n > PAGES_PER_CHUNK {
            return None;
        }
        let end = self.nr_initial * PAGES_PER_CHUNK;
        let mut i = self.bump;
        if i % PAGES_PER_CHUNK + n > PAGES_PER_CHUNK {
            let next = (i / PAGES_PER_CHUNK + 1) * PAGES_PER_CHUNK;
            while i < next.min(end) {
                if let Some(pa) = self.page_of_index(i) {
                    // SAFETY: a pool page never handed out; it becomes a
                    // free list node (`zalloc_page` zeroes it when taken).
                    unsafe { *(self.va(pa) as *mut u64) = self.free_head };
                    self.free_head = pa;
                }
                i += 1;
            }
            i = next;
            self.bump = next;
        }
        if i + n > end {
            return None;
        }
        let pa = self.page_of_index(i)?;
        self.bump = i + n;
        self.used += n;
        // SAFETY: the pages are pool pages no one else holds.
        unsafe { core::ptr::write_bytes(self.va(pa) as *mut u8, 0, n * PAGE as usize) };
        Some(pa)
    }
}

impl HypMm {
    /// Fills page `pa` with the 64-bit `value` through the scratch slot
    /// (root mode, under the hypervisor lock; DEBUG_FILL_PAGE).
    #[cfg(pkvm_debug)]
    pub fn fill_page(&mut self, pa: Hpa, value: u64) {
        self.with_scratch(pa, MemType::Wb, |va| {
            let p = va as *mut u64;
            for i in 0..(PAGE as usize / 8) {
                // SAFETY: `va` maps the whole page `pa` for this closure.
                unsafe { p.add(i).write_volatile(value) };
            }
        });
    }

    /// How many 64-bit words of page `pa` equal `value`, read through the
    /// scratch slot (root mode, under the hypervisor lock;
    /// DEBUG_COUNT_WORDS).
    #[cfg(pkvm_debug)]
    pub fn count_words(&mut self, pa: Hpa, value: u64) -> u64 {
        let mut n = 0;
        self.with_scratch(pa, MemType::Wb, |va| {
            let p = va as *const u64;
            for i in 0..(PAGE as usize / 8) {
                // SAFETY: `va` maps the whole page `pa` for this closure.
                n += u64::from(unsafe { p.add(i).read_volatile() } == value);
            }
        });
        n
    }

    /// Runs `f` with page `pa` mapped read-write at the address it is
    /// given, through the scratch slot, break-before-make both ways.  Root
    /// mode only, under the hypervisor lock (the one user of the slot);
    /// does nothing before launch.  Used for the xAPIC page by the
    /// cross-CPU shootdown (not in root mode's page table: the host's MMIO
    /// is never mapped for good) and by DEBUG_FILL_PAGE.  `memtype` is the
    /// mapping's memory type: uncacheable for device registers (the local
    /// APIC), write-back for RAM.
    pub fn with_scratch(&mut self, pa: Hpa, memtype: MemType, f: impl FnOnce(u64)) {
        if self.scratch_va == 0 {
            return;
        }
        let slot = self.scratch_slot();
        let attrs = Attrs {
            memtype,
            ..SCRATCH_ATTRS
        };
        let map = HypFormat::leaf(pa.page_down(), attrs, 1);
        store(slot, 0);
        // SAFETY: as in `zero_page`: the slot maps only `scratch_va` and
        // the caller holds the hypervisor lock.
        unsafe {
            crate::arch::cpu::invlpg(self.scratch_va);
            store(slot, map);
        }
        f(self.scratch_va);
        store(slot, 0);
        // SAFETY: as above.
        unsafe { crate::arch::cpu::invlpg(self.scratch_va) };
        store(slot, self.scratch_idle);
    }

    /// The scratch slot's entry, written only through [`store`].
    fn scratch_slot(&self) -> &AtomicU64 {
        // SAFETY: `set_scratch`'s contract: `scratch_pte` is an 8-byte
        // aligned entry in a pool page that lives as long as the allocator;
        // entries are only accessed atomically.
        unsafe { &*(self.scratch_pte as *const AtomicU64) }
    }
}

impl MmOps for HypMm {
    fn zalloc_page(&mut self) -> Option<Hpa> {
        if self.free_pages() <= GROW_RESERVE && !self.growing {
            self.shortages = self.shortages.wrapping_add(1);
            return None;
        }
        let pa = if self.free_head == 0 {
            let Some(pa) = self.alloc_contig(1) else {
                self.shortages = self.shortages.wrapping_add(1);
                return None;
            };
            pa
        } else {
            let pa = self.free_head;
            // SAFETY: a free page stores the next free page's address in its
            // first word; it is a pool page no one else holds.
            unsafe {
                let p = self.va(pa) as *mut u64;
                self.free_head = *p;
                core::ptr::write_bytes(p.cast::<u8>(), 0, PAGE as usize);
            }
            if let Some(c) = self.count(pa) {
                // SAFETY: `c` points into the count array.
                unsafe { *c = 0 };
            }
            self.used += 1;
            pa
        };
        Hpa::new(pa)
    }

    fn free_page(&mut self, pa: Hpa) {
        let pa = pa.raw();
        if !self.in_pool(pa) || self.is_own_page(pa) {
            return;
        }
        // SAFETY: the caller gives back a page it owned (a table page is
        // unlinked and invalidated first); it becomes a free list node.
        unsafe { *(self.va(pa) as *mut u64) = self.free_head };
        self.free_head = pa;
        self.used = self.used.saturating_sub(1);
    }

    fn free_unlinked(&mut self, pa: Hpa) {
        // Its entries need no clearing: `zalloc_page` zeroes a page before
        // handing it out again.  Only the use count is reset.
        if let Some(c) = self.count(pa.raw()) {
            // SAFETY: `c` points into the count array.
            unsafe { *c = 0 };
        }
        self.free_page(pa);
    }

    fn table(&self, pa: Hpa) -> Option<&Table> {
        let pa = pa.raw();
        if !self.in_pool(pa) {
            return None;
        }
        // SAFETY: pool pages are mapped, 4 KiB and 8-byte aligned; table
        // entries are only accessed atomically (written through `store` by
        // the holder of `&mut self`, read by the CPU's page walks).
        Some(unsafe { &*(self.va(pa) as *const Table) })
    }

    fn get_page(&mut self, pa: Hpa) {
        if let Some(c) = self.count(pa.raw()) {
            // SAFETY: `c` points into the count array.
            unsafe { *c = (*c).saturating_add(1) };
        }
    }

    fn put_page(&mut self, pa: Hpa) {
        if let Some(c) = self.count(pa.raw()) {
            // SAFETY: `c` points into the count array.
            unsafe { *c = (*c).saturating_sub(1) };
        }
    }

    fn page_count(&self, pa: Hpa) -> u32 {
        // SAFETY: `c` points into the count array.
        self.count(pa.raw()).map_or(0, |c| u32::from(unsafe { *c }))
    }

    fn zero_page(&mut self, pa: Hpa) {
        if self.scratch_va == 0 {
            // Host side, before launch: the direct map covers everything.
            // SAFETY: a data page the page-state code is handing back.
            unsafe { core::ptr::write_bytes(self.va(pa.raw()) as *mut u8, 0, PAGE as usize) };
            return;
        }
        // Root mode: only the pool is in the linear map; reach the page
        // through the scratch slot, break-before-make both ways (the slot
        // is not present while the CPU may still hold the old translation).
        let slot = self.scratch_slot();
        let map = HypFormat::leaf(pa.page_down(), SCRATCH_ATTRS, 1);
        store(slot, 0);
        // SAFETY: `set_scratch`'s contract: the entry maps `scratch_va`
        // only; callers hold the hypervisor lock, so no other CPU uses the
        // slot; the page is one the page-state code is handing back.
        unsafe {
            crate::arch::cpu::invlpg(self.scratch_va);
            store(slot, map);
            core::ptr::write_bytes(self.scratch_va as *mut u8, 0, PAGE as usize);
            store(slot, 0);
            crate::arch::cpu::invlpg(self.scratch_va);
            store(slot, self.scratch_idle);
        }
    }

    fn invalidate(&mut self, kind: TableKind, root: Hpa, addr: u64, size: u64) {
        if self.scratch_va == 0 {
            // Before launch: no CPU uses these tables yet.
            return;
        }
        match kind {
            TableKind::HostEpt => {
                // SAFETY: `scratch_va` is set: root mode (the host side
                // changes no host EPT after `set_scratch`), with the
                // hypervisor lock held by whoever has `&mut self`.
                unsafe { crate::hyp::global::shootdown_host_ept(self) };
            }
            TableKind::GuestEpt => {
                // The EPTP format the host's uses (hypervisor.rs).
                let eptp = Eptp::new_4level(root.raw(), false).0;
                // SAFETY: root mode; INVEPT single-context is a required
                // feature.  A failure leaves stale entries only for an EPTP
                // no CPU uses.
                let _ = unsafe {
                    crate::arch::vmx::invept(crate::arch::vmx::InveptType::SingleContext, eptp)
                };
            }
            TableKind::Hyp if size > INVLPG_MAX => {
                // SAFETY: reloading CR3 with its own value only flushes
                // this CPU's non-global translations.
                unsafe { crate::arch::cpu::write_cr3(crate::arch::cpu::read_cr3()) };
            }
            TableKind::Hyp => {
                let mut off = 0;
                while off < size {
                    let va = HypVa::from_low_bits(addr.wrapping_add(off));
                    // SAFETY: INVLPG only drops translations.
                    unsafe { crate::arch::cpu::invlpg(va.raw()) };
                    off += PAGE;
                }
            }
        }
    }
}
