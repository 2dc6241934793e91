// SPDX-License-Identifier: GPL-2.0

//! The reserve: pages the host half of pkvm donates to the hypervisor for
//! shadow state that root mode builds on its own (nested VMX's vmcs12
//! cache now; the shadow EPT's tables and share counts later), so that an
//! unmodified KVM, which never donates anything, can still get it built.
//! Documentation/nested.rst, "Memory for shadow state".
//!
//! * **In.**  The host half donates a *batch* of physically contiguous
//!   pages with the RESERVE_DONATE hypercall: the batch first goes through
//!   the page-state machine (`host_donate_hyp`: host `OWNED -> NOPAGE(HYP)`,
//!   hyp `NOPAGE -> OWNED`, all or nothing, every refusal of that
//!   transition applies), then [`Reserve::add_batch`] takes it.  The first
//!   page of a batch is its *header* (the batch's size and the link to the
//!   next batch), the others go on the free list.  A batch has
//!   [`MIN_BATCH`] ..= [`MAX_BATCH`] pages.
//! * **Out.**  Root-mode consumers [`Reserve::take`] a page (zeroed) and
//!   [`Reserve::give`] it back; neither ever fails in a way that breaks the
//!   hypervisor: an empty reserve is `None`, and each consumer says what it
//!   does then (the vmcs12 cache evicts).
//! * **Refill.**  [`Reserve::wanted`] is how many pages would bring the
//!   free count back to [`TARGET`] once it fell below [`LOW_WATERMARK`];
//!   RESERVE_STATUS reports it, and the host half's refill work donates
//!   that much.  Root mode never calls into the host.
//! * **Back.**  Reserve pages never go back to the host while pkvm is
//!   loaded: HYP_DONATE_HOST refuses any page [`Reserve::holds`]
//!   (`EBUSY`), so the host cannot pull shadow state out from under root
//!   mode.  At unload the teardown scrub zeroes them with every other page
//!   donated to the hypervisor, and the host half frees its batches.
//!
//! The free list and the headers live in the reserve's own pages, reached
//! through the hypervisor's linear window (`pa + window`); nothing here is
//! bounded at compile time.

/// Fewest pages in a batch: its header and one page to hand out.
pub const MIN_BATCH: u64 = 2;
/// Most pages in one batch (2 MiB; a larger RESERVE_DONATE is `EINVAL`).
pub const MAX_BATCH: u64 = 512;
/// Below this many free pages the reserve asks for a refill.
pub const LOW_WATERMARK: u64 = 16;
/// A refill brings the free pages back to this many.
pub const TARGET: u64 = 64;

const PAGE: u64 = 4096;
const WORDS: usize = 512;

use super::addr::Hpa;
use super::mem_protect::{host_donate_hyp, hyp_donate_host, HostEpt, HypPgt};
use super::pgtable::MmOps;
use crate::hv::error::{Error, Result};

/// RESERVE_DONATE: the host gives the batch of `pages` pages at `hpa` to
/// the reserve.  A count outside [`MIN_BATCH`]`..=`[`MAX_BATCH`] is
/// [`Error::Inval`] before anything is looked at; then the batch goes
/// through [`host_donate_hyp`] (all or nothing: pages that are not the
/// host's own RAM, the module image, MMIO, pages shared or donated to
/// anyone are refused with its errors, nothing changed), and the reserve
/// takes it.
///
/// # Safety
///
/// The reserve's window must be the hypervisor table's linear offset as
/// the CPU uses it (root mode: `pa + window` is where `host_donate_hyp`
/// maps each page; tests: memory standing in for the pages), so that
/// [`Reserve::add_batch`]'s contract holds once the donation succeeded.
pub unsafe fn donate<M: MmOps>(
    host: &mut HostEpt,
    hyp: &mut HypPgt,
    mm: &mut M,
    reserve: &mut Reserve,
    hpa: Hpa,
    pages: u64,
) -> Result {
    if !(MIN_BATCH..=MAX_BATCH).contains(&pages) {
        return Err(Error::Inval);
    }
    host_donate_hyp(host, hyp, mm, hpa, pages)?;
    // SAFETY: the donation made every page the hypervisor's alone (the
    // host EPT gives no one access), mapped at `pa + window` (the
    // caller's contract); nothing else uses a page donated this instant.
    if unsafe { reserve.add_batch(hpa.raw(), pages) } {
        return Ok(());
    }
    // Unreachable: pages that were the host's are not the reserve's.
    // Give them back rather than keep pages nobody accounts for.
    hyp_donate_host(host, hyp, mm, hpa, pages)?;
    Err(Error::Inval)
}

/// Header words of a batch (its first page).
mod header {
    /// Physical address of the next batch's header (0: last).
    pub(super) const NEXT: usize = 0;
    /// Pages in the batch, header included.
    pub(super) const PAGES: usize = 1;
    /// Marks a header page (a sanity check when walking the list).
    pub(super) const MAGIC: usize = 2;
    /// "pkvmresv".
    pub(super) const MAGIC_VALUE: u64 = u64::from_le_bytes(*b"pkvmresv");
}

/// What the reserve did, for accounting and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReserveStats {
    /// Pages donated (headers included), ever.
    pub donated: u64,
    /// Batches taken.
    pub batches: u64,
    /// Pages handed out by [`Reserve::take`], ever.
    pub taken: u64,
    /// Pages given back by [`Reserve::give`], ever.
    pub given: u64,
    /// [`Reserve::take`] calls that found the reserve empty.
    pub empty: u64,
}

/// The reserve.  All-zero bytes are a valid empty reserve whose window is
/// 0; [`Reserve::set_window`] sets the real one before the first batch.
#[derive(Debug, Default)]
pub struct Reserve {
    /// `va - pa` of the pages: where root mode reaches them.
    window: u64,
    /// Header of the most recently added batch (0: none).
    batches: u64,
    /// First free page (0: none); each free page holds the next in word 0.
    free_head: u64,
    /// Pages on the free list.
    free: u64,
    /// Pages held: headers, free pages and pages handed out.
    total: u64,
    /// Accounting.
    pub stats: ReserveStats,
}

impl Reserve {
    /// Sets where the pages are reached: page `pa` at virtual address
    /// `pa + window`.  Before any batch is added.
    pub fn set_window(&mut self, window: u64) {
        if self.total == 0 {
            self.window = window;
        }
    }

    /// The window the pages are reached through (`pa + window`).
    pub const fn window(&self) -> u64 {
        self.window
    }

    /// Page `pa` as words.
    ///
    /// # Safety
    ///
    /// `pa` must be a page of a batch given to [`Self::add_batch`] that the
    /// reserve itself uses now (a header or a free page): see its contract.
    unsafe fn words(&mut self, pa: u64) -> &mut [u64; WORDS] {
        // SAFETY: `add_batch`'s contract: the page is mapped read-write at
        // `pa + window`, 4 KiB aligned, and nothing but the reserve uses it
        // (the `&mut self` borrow makes this the only reference).
        unsafe { &mut *(pa.wrapping_add(self.window) as *mut [u64; WORDS]) }
    }

    /// Takes the batch of `pages` pages at `pa`: its first page becomes the
    /// batch's header, the others free pages.  `false` (nothing taken) if
    /// `pa` is not page-aligned, `pages` is outside
    /// [`MIN_BATCH`]`..=`[`MAX_BATCH`] or the range overlaps a batch the
    /// reserve holds.
    ///
    /// # Safety
    ///
    /// Every page of the batch must be RAM that belongs to the hypervisor
    /// alone from now on (the host EPT gives no one else access: the
    /// `host_donate_hyp` transition has just succeeded on it), mapped
    /// read-write at `pa + window` for as long as the reserve lives, and
    /// used by nothing but the reserve and the consumers it hands pages to.
    pub unsafe fn add_batch(&mut self, pa: u64, pages: u64) -> bool {
        if pa & (PAGE - 1) != 0
            || !(MIN_BATCH..=MAX_BATCH).contains(&pages)
            || self.holds(pa, pages)
        {
            return false;
        }
        let next = self.batches;
        // SAFETY: the caller's contract makes `pa` the reserve's page.
        let h = unsafe { self.words(pa) };
        h.fill(0);
        h[header::NEXT] = next;
        h[header::PAGES] = pages;
        h[header::MAGIC] = header::MAGIC_VALUE;
        self.batches = pa;
        // The other pages, in address order on the free list.
        for i in (1..pages).rev() {
            let p = pa + i * PAGE;
            let head = self.free_head;
            // SAFETY: as above; a free page holds the link in word 0.
            unsafe { self.words(p)[0] = head };
            self.free_head = p;
        }
        self.free += pages - 1;
        self.total += pages;
        self.stats.donated += pages;
        self.stats.batches += 1;
        true
    }

    /// A zeroed page for a consumer, `None` if the reserve is empty.
    pub fn take(&mut self) -> Option<u64> {
        let pa = self.free_head;
        if pa == 0 {
            self.stats.empty += 1;
            return None;
        }
        // SAFETY: `pa` is on the free list: a page of a batch the reserve
        // uses now.
        let w = unsafe { self.words(pa) };
        let next = w[0];
        w.fill(0);
        self.free_head = next;
        self.free -= 1;
        self.stats.taken += 1;
        Some(pa)
    }

    /// Takes back page `pa` a consumer got from [`Self::take`].  A page the
    /// reserve does not hold is ignored (`false`).
    pub fn give(&mut self, pa: u64) -> bool {
        if pa & (PAGE - 1) != 0 || !self.holds(pa, 1) || self.is_header(pa) || self.is_free(pa) {
            return false;
        }
        let head = self.free_head;
        // SAFETY: `pa` is a page of one of the reserve's batches that the
        // consumer gives up: the reserve uses it again from here.
        unsafe { self.words(pa)[0] = head };
        self.free_head = pa;
        self.free += 1;
        self.stats.given += 1;
        true
    }

    /// The batches as (header, pages), most recent first.
    pub fn batches(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        let mut at = self.batches;
        core::iter::from_fn(move || {
            if at == 0 {
                return None;
            }
            // SAFETY: `at` is a header of a batch the reserve holds.
            let h = unsafe { &*(at.wrapping_add(self.window) as *const [u64; WORDS]) };
            let item = (at, h[header::PAGES]);
            at = h[header::NEXT];
            Some(item)
        })
    }

    /// Whether `pa` is on the free list (walked: a page given back twice
    /// would otherwise be handed out twice).
    fn is_free(&self, pa: u64) -> bool {
        let mut p = self.free_head;
        let mut n = 0;
        while p != 0 && n <= self.free {
            if p == pa {
                return true;
            }
            // SAFETY: a free page of the reserve (shared read of word 0).
            p = unsafe { (*(p.wrapping_add(self.window) as *const [u64; WORDS]))[0] };
            n += 1;
        }
        false
    }

    /// Whether `pa` is the header of a batch.
    fn is_header(&self, pa: u64) -> bool {
        self.batches().any(|(h, _)| h == pa)
    }

    /// Whether any of the `pages` pages from `pa` belongs to the reserve
    /// (overflowing ranges are clamped).
    pub fn holds(&self, pa: u64, pages: u64) -> bool {
        let start = pa & !(PAGE - 1);
        let end = start.saturating_add(pages.saturating_mul(PAGE));
        let mut at = self.batches;
        while at != 0 {
            // SAFETY: `at` is a header of a batch the reserve holds (shared
            // read of its first words only).
            let h = unsafe { &*(at.wrapping_add(self.window) as *const [u64; WORDS]) };
            let bend = at.saturating_add(h[header::PAGES].saturating_mul(PAGE));
            if start < bend && at < end {
                return true;
            }
            at = h[header::NEXT];
        }
        false
    }

    /// Free pages.
    pub const fn free(&self) -> u64 {
        self.free
    }

    /// Pages held (headers, free, handed out).
    pub const fn total(&self) -> u64 {
        self.total
    }

    /// Pages handed out to consumers now.
    pub fn in_use(&self) -> u64 {
        self.stats.taken - self.stats.given
    }

    /// Pages a refill should donate: up to [`TARGET`] free once the free
    /// count fell below [`LOW_WATERMARK`]; 0 otherwise.
    pub const fn wanted(&self) -> u64 {
        if self.free < LOW_WATERMARK {
            TARGET - self.free
        } else {
            0
        }
    }

    /// Whether consumers should hand back what they can spare.
    pub const fn under_pressure(&self) -> bool {
        self.free < LOW_WATERMARK
    }

    /// Checks the accounting against the pages themselves: every batch has
    /// a valid header, the free list has `free` distinct pages, all inside
    /// batches and none a header, and `total = headers + free + in use`.
    /// The first inconsistency found, as text.
    pub fn check(&mut self) -> core::result::Result<(), &'static str> {
        let mut pages = 0u64;
        let mut nr = 0u64;
        let mut at = self.batches;
        while at != 0 {
            // SAFETY: `at` is a header of a batch the reserve holds.
            let h = unsafe { &*(at.wrapping_add(self.window) as *const [u64; WORDS]) };
            if h[header::MAGIC] != header::MAGIC_VALUE {
                return Err("batch header without its magic");
            }
            pages += h[header::PAGES];
            nr += 1;
            at = h[header::NEXT];
            if nr > self.stats.batches {
                return Err("batch list longer than the batches added");
            }
        }
        if pages != self.total || nr != self.stats.batches {
            return Err("batch pages do not add up to the total");
        }
        let mut n = 0u64;
        let mut p = self.free_head;
        while p != 0 {
            if n >= self.free || !self.holds(p, 1) || self.is_header(p) {
                return Err("free list runs outside the reserve");
            }
            n += 1;
            // SAFETY: a free page of the reserve.
            p = unsafe { self.words(p)[0] };
        }
        if n != self.free {
            return Err("free list shorter than the free count");
        }
        if self.total != nr + self.free + self.in_use() {
            return Err("total != headers + free + in use");
        }
        Ok(())
    }
}

/// A supply of pages for shadow state, as a consumer sees it (root mode:
/// the reserve; tests: a reserve on heap pages).
///
/// # Safety
///
/// A page returned by [`PageSupply::take_page`] must be zeroed, 4 KiB
/// aligned, mapped read-write at `pa +` [`PageSupply::window`], and used by
/// nothing but the caller until the caller passes it to
/// [`PageSupply::give_page`].
pub unsafe trait PageSupply {
    /// A zeroed page, or `None` if there is none.
    fn take_page(&mut self) -> Option<u64>;
    /// Gives back a page from [`PageSupply::take_page`].
    fn give_page(&mut self, pa: u64);
    /// Whether the supply runs low: consumers give back what they can spare.
    fn under_pressure(&self) -> bool;
    /// Where the pages are mapped (`va = pa + window`).
    fn window(&self) -> u64;
}

// SAFETY: `Reserve::take` hands out a free page of a batch, zeroed; by
// `add_batch`'s contract it is mapped at `pa + window` and nothing else
// uses it; it is not handed out again before `give`.
unsafe impl PageSupply for Reserve {
    fn take_page(&mut self) -> Option<u64> {
        self.take()
    }
    fn give_page(&mut self, pa: u64) {
        self.give(pa);
    }
    fn under_pressure(&self) -> bool {
        Reserve::under_pressure(self)
    }
    fn window(&self) -> u64 {
        self.window
    }
}

/// Test helpers: batches on heap pages (the window is 0: `pa` is the
/// page's address).
#[cfg(test)]
pub mod testing {
    extern crate std;
    use super::*;

    /// A page of heap memory.
    #[repr(C, align(4096))]
    pub struct HeapPage(pub [u64; WORDS]);

    /// `pages` contiguous heap pages, filled with a pattern (as donated
    /// host pages would be), leaked: their address.
    pub fn heap_batch(pages: u64) -> u64 {
        let v: std::vec::Vec<HeapPage> = (0..pages).map(|_| HeapPage([0x5a5a; WORDS])).collect();
        let b = v.into_boxed_slice();
        std::boxed::Box::leak(b).as_mut_ptr() as u64
    }

    /// A reserve with one batch of `pages` heap pages.
    pub fn reserve_with(pages: u64) -> Reserve {
        let mut r = Reserve::default();
        // SAFETY: fresh leaked heap pages, only the reserve's; window 0.
        assert!(unsafe { r.add_batch(heap_batch(pages), pages) });
        r
    }

    /// Reads word `i` of page `pa` (window 0).
    pub fn word(pa: u64, i: usize) -> u64 {
        // SAFETY: test pages are leaked heap pages, never freed.
        unsafe { (*(pa as *const [u64; WORDS]))[i] }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::testing::*;
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn batches_in_take_give_accounting() {
        let mut r = Reserve::default();
        assert_eq!(r.take(), None);
        assert_eq!(r.stats.empty, 1);
        let a = heap_batch(8);
        // SAFETY: fresh heap pages.
        assert!(unsafe { r.add_batch(a, 8) });
        assert_eq!((r.total(), r.free(), r.in_use()), (8, 7, 0));
        r.check().unwrap();
        // Every page handed out once, zeroed, inside the batch, never the
        // header.
        let mut got = BTreeSet::new();
        while let Some(p) = r.take() {
            assert!(p > a && p < a + 8 * PAGE, "{p:#x}");
            assert!((0..WORDS).all(|i| word(p, i) == 0), "not zeroed");
            assert!(got.insert(p));
            r.check().unwrap();
        }
        assert_eq!(got.len(), 7);
        assert_eq!((r.free(), r.in_use()), (0, 7));
        for &p in &got {
            assert!(r.give(p));
        }
        assert_eq!((r.free(), r.in_use()), (7, 0));
        r.check().unwrap();
        // A second batch.
        let b = heap_batch(MIN_BATCH);
        // SAFETY: fresh heap pages.
        assert!(unsafe { r.add_batch(b, MIN_BATCH) });
        assert_eq!((r.total(), r.free(), r.stats.batches), (10, 8, 2));
        assert_eq!(r.batches().collect::<std::vec::Vec<_>>(), [(b, 2), (a, 8)]);
        r.check().unwrap();
    }

    #[test]
    fn bad_batches_and_foreign_pages_are_refused() {
        let mut r = reserve_with(4);
        let (h, _) = r.batches().next().unwrap();
        let before = (r.total(), r.free(), r.stats);
        let x = heap_batch(MAX_BATCH + 1);
        // SAFETY: heap pages; refused batches are not taken.
        unsafe {
            assert!(!r.add_batch(x, 0));
            assert!(!r.add_batch(x, 1), "header only");
            assert!(!r.add_batch(x, MAX_BATCH + 1), "too large");
            assert!(!r.add_batch(x, u64::MAX));
            assert!(!r.add_batch(x + 8, 2), "unaligned");
            assert!(!r.add_batch(h, 2), "already held");
            assert!(!r.add_batch(h + PAGE, 2), "overlaps");
        }
        assert_eq!((r.total(), r.free(), r.stats), before);
        // Giving back what the reserve does not hold, or its header: ignored.
        assert!(!r.give(x));
        assert!(!r.give(h));
        assert!(!r.give(h + PAGE + 8));
        assert_eq!((r.total(), r.free(), r.stats), before);
        r.check().unwrap();
        // SAFETY: fresh heap pages.
        assert!(unsafe { r.add_batch(x, MAX_BATCH) });
        r.check().unwrap();
    }

    #[test]
    fn holds_covers_exactly_the_batches() {
        let r = reserve_with(3);
        let (h, n) = r.batches().next().unwrap();
        assert_eq!(n, 3);
        for p in 0..3 {
            assert!(r.holds(h + p * PAGE, 1));
        }
        assert!(!r.holds(h + 3 * PAGE, 1));
        assert!(!r.holds(h - PAGE, 1));
        assert!(r.holds(h - PAGE, 2), "a range reaching into it");
        assert!(r.holds(0, u64::MAX), "clamped, no overflow");
        assert!(!r.holds(!0xfff, u64::MAX));
    }

    #[test]
    fn watermarks() {
        let mut r = reserve_with(TARGET + 1);
        assert_eq!(r.free(), TARGET);
        assert_eq!(r.wanted(), 0);
        let mut taken = std::vec::Vec::new();
        while r.free() >= LOW_WATERMARK {
            assert!(!r.under_pressure());
            taken.push(r.take().unwrap());
        }
        assert!(r.under_pressure());
        assert_eq!(r.wanted(), TARGET - (LOW_WATERMARK - 1));
        // A refill of what it wants brings it back to the target.
        let want = r.wanted();
        // SAFETY: fresh heap pages.
        assert!(unsafe { r.add_batch(heap_batch(want + 1), want + 1) });
        assert_eq!(r.free(), TARGET);
        assert_eq!(r.wanted(), 0);
        r.check().unwrap();
    }

    /// RESERVE_DONATE on the simulated machine: the page-state machine
    /// and the reserve agree, the invariants hold, and every bad batch is
    /// refused with nothing changed.
    #[test]
    fn donate_through_the_page_state_machine() {
        use crate::hv::mm::addr::lit::hpa;
        use crate::hv::mm::mem_protect::tests::{Op, World, K4};
        let mut w = World::new();
        // Stand-in memory for the simulated pages: the window maps
        // simulated page `P + i * 4K` to heap page `i`.
        const P: u64 = 0x100_0000;
        let heap = heap_batch(64);
        let mut r = Reserve::default();
        r.set_window(heap.wrapping_sub(P));
        let don = |w: &mut World, r: &mut Reserve, pa: u64, n: u64| {
            // SAFETY: the window maps [P, P + 64 pages) onto heap pages;
            // every accepted batch lies there.
            unsafe { donate(&mut w.host, &mut w.hyp, &mut w.mm, r, hpa(pa), n) }
        };
        assert_eq!(don(&mut w, &mut r, P, 16), Ok(()));
        w.check_invariants();
        assert_eq!((r.total(), r.free()), (16, 15));
        r.check().unwrap();
        // Bad counts: refused before the page states are looked at.
        for n in [0, 1, MAX_BATCH + 1, u64::MAX] {
            assert_eq!(don(&mut w, &mut r, P + 16 * K4, n), Err(Error::Inval));
        }
        // Pages already the reserve's (donated), or donated elsewhere
        // (to the hypervisor, shared with it): the transition's EPERM.
        assert_eq!(don(&mut w, &mut r, P, 2), Err(Error::Perm));
        assert_eq!(don(&mut w, &mut r, P + 15 * K4, 2), Err(Error::Perm));
        w.run(Op::DonateHyp(P + 20 * K4, 1)).unwrap();
        assert_eq!(don(&mut w, &mut r, P + 19 * K4, 2), Err(Error::Perm));
        w.run(Op::ShareHyp(P + 30 * K4, 1)).unwrap();
        assert_eq!(don(&mut w, &mut r, P + 30 * K4, 4), Err(Error::Perm));
        // Beyond the host's RAM.
        assert!(don(&mut w, &mut r, 1 << 45, 2).is_err());
        assert_eq!((r.total(), r.free(), r.stats.batches), (16, 15, 1));
        w.check_invariants();
        // Nothing of the refused ranges changed hands: they can still go.
        assert_eq!(don(&mut w, &mut r, P + 16 * K4, 3), Ok(()));
        assert_eq!(don(&mut w, &mut r, P + 40 * K4, MIN_BATCH), Ok(()));
        w.check_invariants();
        r.check().unwrap();
        assert_eq!((r.total(), r.free(), r.stats.batches), (21, 18, 3));
        // Consumers take and give; the page states do not move.
        let pages: std::vec::Vec<u64> = (0..18).map(|_| r.take().unwrap()).collect();
        assert!(pages.iter().all(|&p| r.holds(p, 1)));
        assert_eq!(r.take(), None);
        assert_eq!(r.wanted(), TARGET);
        for p in pages {
            assert!(r.give(p));
        }
        r.check().unwrap();
        w.check_invariants();
    }

    #[test]
    fn double_give_and_corruption() {
        let mut r = reserve_with(4);
        let p = r.take().unwrap();
        r.check().unwrap();
        // A page given back twice would be handed out twice: refused.
        assert!(r.give(p));
        assert!(!r.give(p));
        r.check().unwrap();
        // The checker notices a free list that leaves the reserve.
        // SAFETY: `p` is a free test page of this reserve.
        unsafe { (*(p as *mut [u64; WORDS]))[0] = heap_batch(1) };
        assert!(r.check().is_err());
    }
}
