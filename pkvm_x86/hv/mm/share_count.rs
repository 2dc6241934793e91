// SPDX-License-Identifier: GPL-2.0

//! Share counts: how many guest leaf pages map each host page the host
//! shares with normal VMs.
//!
//! Owns [`ShareCounts`], a sparse table with one 32-bit count per 4 KiB
//! host page, kept next to the host EPT ([`crate::hv::mm::mem_protect::HostEpt`]).
//! A host page shared with guests (`host_share_guest`) is `SHARED_OWNED` in
//! the host EPT whatever the number of guest mappings; the count says how
//! many there are: one per 4 KiB page of every guest `SHARED_BORROWED` leaf
//! that maps it, over all guests (a 2 MiB guest leaf counts once for each of
//! the 512 host pages it covers).  A count of 0 on a `SHARED_OWNED` page
//! means the page is shared with the hypervisor instead (`host_share_hyp`),
//! which is how the two uses of the state are told apart.
//!
//! # Layout
//!
//! A radix tree over the host frame number (`pfn < 2^36`: the host EPT
//! translates 48 bits), built of 4 KiB pages from the same [`MmOps`] as
//! the page tables (the hypervisor's pool or reserve):
//!
//! * a *leaf* page holds 1024 counts (`u32`, two per 64-bit word), for
//!   4 MiB of host memory (pfn bits 9:0);
//! * three levels of *directory* pages of 512 entries (`child | 1`, or 0
//!   when absent), indexed by pfn bits 18:10, 27:19 and 35:28; the root is
//!   the top directory.
//!
//! The use count of a page ([`MmOps::page_count`]) is its number of
//! non-zero counts (leaf) or present entries (directory).  Leaves exist
//! only where some count is non-zero: the decrement that empties a leaf
//! unlinks and frees it.  Directories, once created, stay until the host
//! EPT is destroyed (see "Cost").
//!
//! # Cost
//!
//! 4 bytes per shared host page in the leaves: 1 MiB of leaves (256 pages)
//! per GiB of host memory shared with guests when the shared memory is
//! dense, plus one level-1 directory page per 2 GiB, one level-2 page per
//! TiB and the root, so about 1.0 MiB per shared GiB (0.1% of the memory
//! shared).  Sparse sharing costs more per page: one leaf page (4 KiB)
//! for each 4 MiB-aligned host region holding at least one shared page
//! (the worst case: a guest that maps one page out of every 4 MiB).
//!
//! Leaves are freed as soon as their 1024 counts are all zero.  The
//! directories are not: the root, one level-2 page per TiB and one
//! level-1 page per 2 GiB of host-physical space that ever held a
//! guest-shared page stay until [`ShareCounts::destroy`] (34 pages, 136
//! KiB, at most, for a host with 64 GiB of RAM below 64 GiB).  Freeing them
//! too would make every lone share and unshare allocate and free four
//! pages instead of one.
//!
//! # Transitions
//!
//! Like the page tables, the table is changed in two steps: the check
//! counts the pages an increment needs ([`ShareCounts::pages_needed`]), the
//! caller reserves them in a [`PageCache`], and [`ShareCounts::increment`]
//! takes them from there and cannot fail for lack of memory.  A decrement
//! never allocates.  Counts saturate at [`MAX_COUNT`]; the check refuses a
//! share that would go beyond.
//!
//! The pure core takes no lock: the table belongs to the host EPT and is
//! changed under the host EPT's lock (`&mut HostEpt`).

use crate::hv::error::{Error, Result};
use crate::hv::mm::addr::Hpa;
use crate::hv::mm::ept::PAGE_SIZE;
use crate::hv::mm::pgtable::{load, store, MmOps, PageCache};

/// The largest count: a share that would go beyond is refused.
pub const MAX_COUNT: u32 = u32::MAX;

/// Counts per leaf page (`u32`, two per 64-bit word).
const LEAF_COUNTS: u64 = 1024;
/// log2 of [`LEAF_COUNTS`].
const LEAF_BITS: u32 = 10;
/// log2 of the entries of a directory page.
const DIR_BITS: u32 = 9;
/// Level of the root directory (leaves are level 0).
const ROOT_LEVEL: u32 = 3;
/// Marks a present directory entry (a page address has bits 11:0 clear).
const PRESENT: u64 = 1;

/// Host frame numbers a node at `level` covers, as a power of two.
const fn span_bits(level: u32) -> u32 {
    LEAF_BITS + DIR_BITS * level
}

/// Index of `pfn` in a node at `level`.
const fn node_index(pfn: u64, level: u32) -> usize {
    if level == 0 {
        (pfn & (LEAF_COUNTS - 1)) as usize
    } else {
        ((pfn >> span_bits(level - 1)) & ((1 << DIR_BITS) - 1)) as usize
    }
}

/// Number of nodes of `level` that `[lo, hi)` (frame numbers, non-empty)
/// intersects.
const fn nodes_over(lo: u64, hi: u64, level: u32) -> u64 {
    ((hi - 1) >> span_bits(level)) - (lo >> span_bits(level)) + 1
}

/// The frame-number range of `[pa, pa + size)`, checked: page aligned,
/// non-empty, inside what the host EPT translates.
fn pfn_range(pa: Hpa, size: u64) -> Result<(u64, u64)> {
    // `check_range` bounds the end by ADDR_LIMIT: pfn < 2^36, inside what
    // the root covers.
    let end = crate::hv::mm::pgtable::check_range(pa.raw(), size)?;
    Ok((pa.raw() / PAGE_SIZE, end / PAGE_SIZE))
}

fn read<M: MmOps>(mm: &M, page: Hpa, word: usize) -> Result<u64> {
    mm.table(page)
        .and_then(|t| t.get(word))
        .map(load)
        .ok_or(Error::Fault)
}

fn write<M: MmOps>(mm: &M, page: Hpa, word: usize, v: u64) -> Result {
    let slot = mm
        .table(page)
        .and_then(|t| t.get(word))
        .ok_or(Error::Fault)?;
    store(slot, v);
    Ok(())
}

/// The child page a directory entry points to (`None` when absent).
fn child(e: u64) -> Result<Option<Hpa>> {
    if e == 0 {
        return Ok(None);
    }
    if e & PRESENT == 0 {
        return Err(Error::Fault);
    }
    Hpa::new(e & !(PAGE_SIZE - 1)).map(Some).ok_or(Error::Fault)
}

fn read_count<M: MmOps>(mm: &M, leaf: Hpa, idx: usize) -> Result<u32> {
    let w = read(mm, leaf, idx / 2)?;
    Ok((w >> ((idx % 2) * 32)) as u32)
}

#[cfg(test)]
fn write_count<M: MmOps>(mm: &M, leaf: Hpa, idx: usize, c: u32) -> Result {
    let shift = (idx % 2) * 32;
    let w = read(mm, leaf, idx / 2)?;
    let w = (w & !(0xffff_ffffu64 << shift)) | (u64::from(c) << shift);
    write(mm, leaf, idx / 2, w)
}

/// Adds one to (`inc`) or subtracts one from the counts `first..end` of
/// `leaf`, a word (two counts) at a time; returns how many counts left or
/// reached zero (the leaf's use count changes by that much).  A count that
/// would wrap is `Fault`, with the counts before it changed.
fn add_range<M: MmOps>(mm: &M, leaf: Hpa, first: usize, end: usize, inc: bool) -> Result<u32> {
    let t = mm.table(leaf).ok_or(Error::Fault)?;
    let step = |c: u32, changed: &mut u32| -> Result<u32> {
        let n = if inc {
            c.checked_add(1)
        } else {
            c.checked_sub(1)
        };
        let n = n.ok_or(Error::Fault)?;
        if (inc && c == 0) || (!inc && n == 0) {
            *changed += 1;
        }
        Ok(n)
    };
    let mut changed = 0;
    let mut idx = first;
    while idx < end {
        let word = idx / 2;
        let slot = t.get(word).ok_or(Error::Fault)?;
        let w = load(slot);
        let (mut lo, mut hi) = (w as u32, (w >> 32) as u32);
        if word * 2 >= first {
            lo = step(lo, &mut changed)?;
        }
        if word * 2 + 1 < end {
            hi = step(hi, &mut changed)?;
        }
        store(slot, u64::from(lo) | (u64::from(hi) << 32));
        idx = word * 2 + 2;
    }
    Ok(changed)
}

/// A run of pages with one count, being extended by [`ShareCounts::scan`].
#[derive(Clone, Copy)]
struct Pending {
    pfn: u64,
    pages: u64,
    count: u32,
}

/// The per-page share counts of the host's guest-shared pages (see the
/// module docs).
///
/// # Invariants
///
/// Every page reachable from `root` was allocated from the [`MmOps`] the
/// counts are used with; its use count is its number of non-zero counts
/// (leaf) or present entries (directory), and it is never zero while the
/// page is linked (an emptied page is unlinked and freed).  `pages` is the
/// number of pages reachable from `root`, `root` included.
#[derive(Debug, Default)]
pub struct ShareCounts {
    root: Option<Hpa>,
    pages: u64,
}

impl ShareCounts {
    /// An empty table: every count zero, no page held.
    pub const fn new() -> Self {
        Self {
            root: None,
            pages: 0,
        }
    }

    /// Pages the table holds now (leaves and directories).
    pub const fn table_pages(&self) -> u64 {
        self.pages
    }

    /// The count of the host page holding `pa`.
    pub fn get<M: MmOps>(&self, mm: &M, pa: Hpa) -> Result<u32> {
        let pfn = pa.raw() / PAGE_SIZE;
        let mut node = self.root;
        let mut level = ROOT_LEVEL;
        while let Some(page) = node {
            if level == 0 {
                return read_count(mm, page, node_index(pfn, 0));
            }
            node = child(read(mm, page, node_index(pfn, level))?)?;
            level -= 1;
        }
        Ok(0)
    }

    /// The leaf page holding the count of `pa`, if there is one (tests).
    #[cfg(test)]
    pub(crate) fn leaf_of<M: MmOps>(&self, mm: &M, pa: Hpa) -> Option<Hpa> {
        let pfn = pa.raw() / PAGE_SIZE;
        let mut node = self.root?;
        for level in (1..=ROOT_LEVEL).rev() {
            node = child(read(mm, node, node_index(pfn, level)).ok()?).ok()??;
        }
        Some(node)
    }

    /// Overwrites the non-zero count of `pa` with the non-zero `c` (tests
    /// that corrupt the counts on purpose; the leaf's use count stays
    /// right).
    #[cfg(test)]
    pub(crate) fn overwrite<M: MmOps>(&mut self, mm: &M, pa: Hpa, c: u32) -> Result {
        let leaf = self.leaf_of(mm, pa).ok_or(Error::Fault)?;
        let idx = node_index(pa.raw() / PAGE_SIZE, 0);
        if c == 0 || read_count(mm, leaf, idx)? == 0 {
            return Err(Error::Inval);
        }
        write_count(mm, leaf, idx, c)
    }

    /// Calls `f(mm, pa, bytes, count)` for the maximal runs of pages of
    /// `[pa, pa + size)` that have the same count, in address order
    /// (absent parts of the table are runs of count 0 and cost nothing per
    /// page).
    pub fn scan<M: MmOps>(
        &self,
        mm: &mut M,
        pa: Hpa,
        size: u64,
        mut f: impl FnMut(&mut M, Hpa, u64, u32) -> Result,
    ) -> Result {
        let (lo, hi) = pfn_range(pa, size)?;
        let mut pending: Option<Pending> = None;
        scan_node(mm, self.root, ROOT_LEVEL, 0, lo, hi, &mut pending, &mut f)?;
        match pending {
            Some(p) => emit(mm, p, &mut f),
            None => Ok(()),
        }
    }

    /// Whether some page of `[pa, pa + size)` has a non-zero count.
    pub fn any_shared<M: MmOps>(&self, mm: &mut M, pa: Hpa, size: u64) -> Result<bool> {
        let mut any = false;
        self.scan(mm, pa, size, |_, _, _, c| {
            any |= c != 0;
            Ok(())
        })?;
        Ok(any)
    }

    /// Pages [`ShareCounts::increment`] of `[pa, pa + size)` allocates: the
    /// leaves and directories on the way that do not exist yet.
    pub fn pages_needed<M: MmOps>(&self, mm: &M, pa: Hpa, size: u64) -> Result<usize> {
        let (lo, hi) = pfn_range(pa, size)?;
        let n = missing(mm, self.root, ROOT_LEVEL, 0, lo, hi)?;
        usize::try_from(n).map_err(|_| Error::NoMem)
    }

    /// Adds one to the count of every page of `[pa, pa + size)`, taking the
    /// pages it needs from `cache` (at least [`ShareCounts::pages_needed`]
    /// must be there).  The caller checked that no count is at
    /// [`MAX_COUNT`]; a count that is, or an empty cache, is an error
    /// (`Fault`, `NoMem`) that leaves the counts before it incremented.
    pub fn increment<M: MmOps>(
        &mut self,
        mm: &mut M,
        cache: &mut PageCache,
        pa: Hpa,
        size: u64,
    ) -> Result {
        let (lo, hi) = pfn_range(pa, size)?;
        let mut pfn = lo;
        while pfn < hi {
            let chunk_end = ((pfn | (LEAF_COUNTS - 1)) + 1).min(hi);
            let leaf = self.ensure_leaf(mm, cache, pfn)?;
            let first = node_index(pfn, 0);
            let end = first + (chunk_end - pfn) as usize;
            for _ in 0..add_range(mm, leaf, first, end, true)? {
                mm.get_page(leaf);
            }
            pfn = chunk_end;
        }
        Ok(())
    }

    /// The leaf covering `pfn`, creating it and the directories above it
    /// from `cache` where missing.
    fn ensure_leaf<M: MmOps>(
        &mut self,
        mm: &mut M,
        cache: &mut PageCache,
        pfn: u64,
    ) -> Result<Hpa> {
        let mut node = match self.root {
            Some(r) => r,
            None => {
                let r = cache.pop(mm).ok_or(Error::NoMem)?;
                // INVARIANT: a zeroed page is an empty directory, use count 0.
                self.root = Some(r);
                self.pages += 1;
                r
            }
        };
        let mut level = ROOT_LEVEL;
        while level > 0 {
            let idx = node_index(pfn, level);
            node = match child(read(mm, node, idx)?)? {
                Some(c) => c,
                None => {
                    let c = cache.pop(mm).ok_or(Error::NoMem)?;
                    write(mm, node, idx, c.raw() | PRESENT)?;
                    mm.get_page(node);
                    self.pages += 1;
                    c
                }
            };
            level -= 1;
        }
        Ok(node)
    }

    /// Subtracts one from the count of every page of `[pa, pa + size)`
    /// (all must be non-zero: `Fault` otherwise, the counts before it
    /// decremented), freeing every page of the table that becomes empty.
    /// Never allocates.
    pub fn decrement<M: MmOps>(&mut self, mm: &mut M, pa: Hpa, size: u64) -> Result {
        let (lo, hi) = pfn_range(pa, size)?;
        let mut pfn = lo;
        while pfn < hi {
            let chunk_end = ((pfn | (LEAF_COUNTS - 1)) + 1).min(hi);
            let mut path = [Hpa::ZERO; ROOT_LEVEL as usize + 1];
            let mut node = self.root.ok_or(Error::Fault)?;
            let mut level = ROOT_LEVEL;
            loop {
                *path.get_mut(level as usize).ok_or(Error::Fault)? = node;
                if level == 0 {
                    break;
                }
                node = child(read(mm, node, node_index(pfn, level))?)?.ok_or(Error::Fault)?;
                level -= 1;
            }
            let first = node_index(pfn, 0);
            let end = first + (chunk_end - pfn) as usize;
            for _ in 0..add_range(mm, node, first, end, false)? {
                mm.put_page(node);
            }
            self.prune(mm, &path, pfn)?;
            pfn = chunk_end;
        }
        Ok(())
    }

    /// Frees the leaf on `path` (`path[0]`, below `path[1]`) if it is
    /// empty, unlinking it.  Directories are kept (see the module docs,
    /// "Cost"): they are few, and freeing them would make every lone
    /// share and unshare allocate and free four pages instead of one.
    fn prune<M: MmOps>(&mut self, mm: &mut M, path: &[Hpa], pfn: u64) -> Result {
        let leaf = *path.first().ok_or(Error::Fault)?;
        if mm.page_count(leaf) != 0 {
            return Ok(());
        }
        let parent = *path.get(1).ok_or(Error::Fault)?;
        write(mm, parent, node_index(pfn, 1), 0)?;
        mm.put_page(parent);
        // Every count of the page is zero: it is free as is.
        mm.free_page(leaf);
        self.pages = self.pages.saturating_sub(1);
        Ok(())
    }

    /// Checks the table's books: every page's use count equals its number
    /// of non-zero counts or present entries, no leaf is empty, and
    /// `table_pages` is the number of pages.  Calls `page_ok(mm, page)`
    /// for every page (e.g. "owned by the hypervisor").  Returns the first
    /// page that is wrong (`Err(None)`: the walk failed or the page total
    /// is off).
    pub fn audit<M: MmOps>(
        &self,
        mm: &mut M,
        mut page_ok: impl FnMut(&mut M, Hpa) -> bool,
    ) -> core::result::Result<(), Option<Hpa>> {
        let mut n = 0;
        if let Some(r) = self.root {
            audit_node(mm, r, ROOT_LEVEL, &mut n, &mut page_ok)?;
        }
        if n != self.pages {
            return Err(None);
        }
        Ok(())
    }

    /// Frees every page of the table (counts are dropped).
    pub fn destroy<M: MmOps>(self, mm: &mut M) -> Result {
        if let Some(r) = self.root {
            free_node(mm, r, ROOT_LEVEL)?;
        }
        Ok(())
    }
}

fn emit<M: MmOps>(
    mm: &mut M,
    p: Pending,
    f: &mut impl FnMut(&mut M, Hpa, u64, u32) -> Result,
) -> Result {
    let pa = Hpa::new(p.pfn * PAGE_SIZE).ok_or(Error::Fault)?;
    f(mm, pa, p.pages * PAGE_SIZE, p.count)
}

/// Adds `pages` pages of count `count` at `pfn` to the pending run,
/// emitting the run before it when the count differs.
fn push<M: MmOps>(
    mm: &mut M,
    pending: &mut Option<Pending>,
    pfn: u64,
    pages: u64,
    count: u32,
    f: &mut impl FnMut(&mut M, Hpa, u64, u32) -> Result,
) -> Result {
    if let Some(p) = pending.as_mut() {
        if p.count == count && p.pfn + p.pages == pfn {
            p.pages += pages;
            return Ok(());
        }
    }
    match pending.replace(Pending { pfn, pages, count }) {
        Some(p) => emit(mm, p, f),
        None => Ok(()),
    }
}

#[allow(clippy::too_many_arguments)]
fn scan_node<M: MmOps>(
    mm: &mut M,
    node: Option<Hpa>,
    level: u32,
    base: u64,
    lo: u64,
    hi: u64,
    pending: &mut Option<Pending>,
    f: &mut impl FnMut(&mut M, Hpa, u64, u32) -> Result,
) -> Result {
    let span = 1u64 << span_bits(level);
    let (lo, hi) = (lo.max(base), hi.min(base + span));
    let Some(page) = node else {
        return push(mm, pending, lo, hi - lo, 0, f);
    };
    if level == 0 {
        let mut pfn = lo;
        while pfn < hi {
            // Both counts of a word with one read.
            let idx = node_index(pfn, 0);
            let w = read(mm, page, idx / 2)?;
            if idx & 1 == 0 && pfn + 1 < hi && w as u32 == (w >> 32) as u32 {
                push(mm, pending, pfn, 2, w as u32, f)?;
                pfn += 2;
                continue;
            }
            if idx & 1 == 0 {
                push(mm, pending, pfn, 1, w as u32, f)?;
                pfn += 1;
                if pfn >= hi {
                    break;
                }
            }
            push(mm, pending, pfn, 1, (w >> 32) as u32, f)?;
            pfn += 1;
        }
        return Ok(());
    }
    let child_span = 1u64 << span_bits(level - 1);
    let mut cb = lo & !(child_span - 1);
    while cb < hi {
        let c = child(read(mm, page, node_index(cb, level))?)?;
        scan_node(mm, c, level - 1, cb, lo, hi, pending, f)?;
        cb += child_span;
    }
    Ok(())
}

/// Pages an increment of `[lo, hi)` (frame numbers) needs below `node`
/// (which covers frames from `base` at `level`).
fn missing<M: MmOps>(
    mm: &M,
    node: Option<Hpa>,
    level: u32,
    base: u64,
    lo: u64,
    hi: u64,
) -> Result<u64> {
    let span = 1u64 << span_bits(level);
    let (lo, hi) = (lo.max(base), hi.min(base + span));
    let Some(page) = node else {
        // Everything from here down: one node per level per span crossed.
        let mut n = 0;
        let mut l = 0;
        while l <= level {
            n += nodes_over(lo, hi, l);
            l += 1;
        }
        return Ok(n);
    };
    if level == 0 {
        return Ok(0);
    }
    let child_span = 1u64 << span_bits(level - 1);
    let mut n = 0;
    let mut cb = lo & !(child_span - 1);
    while cb < hi {
        let c = child(read(mm, page, node_index(cb, level))?)?;
        n += missing(mm, c, level - 1, cb, lo, hi)?;
        cb += child_span;
    }
    Ok(n)
}

fn audit_node<M: MmOps>(
    mm: &mut M,
    page: Hpa,
    level: u32,
    n: &mut u64,
    page_ok: &mut impl FnMut(&mut M, Hpa) -> bool,
) -> core::result::Result<(), Option<Hpa>> {
    *n += 1;
    if !page_ok(mm, page) {
        return Err(Some(page));
    }
    let mut used = 0u32;
    let entries = if level == 0 {
        LEAF_COUNTS
    } else {
        1 << DIR_BITS
    };
    for i in 0..entries as usize {
        if level == 0 {
            used += u32::from(read_count(mm, page, i).map_err(|_| Some(page))? != 0);
        } else {
            let e = read(mm, page, i).map_err(|_| Some(page))?;
            if let Some(c) = child(e).map_err(|_| Some(page))? {
                used += 1;
                audit_node(mm, c, level - 1, n, page_ok)?;
            }
        }
    }
    if (level == 0 && used == 0) || used != mm.page_count(page) {
        return Err(Some(page));
    }
    Ok(())
}

fn free_node<M: MmOps>(mm: &mut M, page: Hpa, level: u32) -> Result {
    if level > 0 {
        for i in 0..1usize << DIR_BITS {
            if let Some(c) = child(read(mm, page, i)?)? {
                free_node(mm, c, level - 1)?;
            }
        }
    }
    // Its counts and entries are dropped with it.
    mm.free_unlinked(page);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hv::mm::addr::lit;
    use crate::hv::mm::pgtable::ADDR_LIMIT;
    use crate::hv::mm::sim::Arena;

    const K4: u64 = 4096;

    fn inc(c: &mut ShareCounts, mm: &mut Arena, pa: u64, size: u64) {
        let need = c.pages_needed(mm, lit::hpa(pa), size).unwrap();
        let mut cache = PageCache::new();
        cache.topup(mm, need).unwrap();
        let before = mm.live();
        c.increment(mm, &mut cache, lit::hpa(pa), size).unwrap();
        assert!(cache.is_empty(), "pages_needed was exact");
        assert_eq!(mm.live(), before);
        cache.release(mm);
    }

    fn runs(c: &ShareCounts, mm: &mut Arena, pa: u64, size: u64) -> std::vec::Vec<(u64, u64, u32)> {
        let mut v = std::vec::Vec::new();
        c.scan(mm, lit::hpa(pa), size, |_, p, len, n| {
            v.push((p.raw(), len, n));
            Ok(())
        })
        .unwrap();
        v
    }

    #[test]
    fn counts_are_sparse_exact_and_freed_at_zero() {
        let mut mm = Arena::new(64);
        let mut c = ShareCounts::new();
        assert_eq!(c.pages_needed(&mm, lit::hpa(0), K4).unwrap(), 4);
        // Two leaves (a 4 MiB boundary inside), one path above.
        let pa = (4 << 20) - 2 * K4;
        inc(&mut c, &mut mm, pa, 4 * K4);
        assert_eq!(c.table_pages(), 5);
        inc(&mut c, &mut mm, pa + K4, K4);
        assert_eq!(c.get(&mm, lit::hpa(pa + K4)).unwrap(), 2);
        assert_eq!(
            runs(&c, &mut mm, pa - K4, 6 * K4),
            std::vec![
                (pa - K4, K4, 0),
                (pa, K4, 1),
                (pa + K4, K4, 2),
                (pa + 2 * K4, 2 * K4, 1),
                (pa + 4 * K4, K4, 0)
            ]
        );
        assert_eq!(c.audit(&mut mm, |_, _| true), Ok(()));
        // A far page: a second directory path.
        inc(&mut c, &mut mm, 1 << 40, K4);
        assert_eq!(c.table_pages(), 8, "a new level-2 path under the same root");
        c.decrement(&mut mm, lit::hpa(1 << 40), K4).unwrap();
        assert_eq!(c.table_pages(), 7, "the leaf is freed, directories stay");
        c.decrement(&mut mm, lit::hpa(pa), 4 * K4).unwrap();
        assert_eq!(c.get(&mm, lit::hpa(pa + K4)).unwrap(), 1);
        assert_eq!(c.table_pages(), 6, "the emptied leaf is freed");
        assert_eq!(c.audit(&mut mm, |_, _| true), Ok(()));
        // Underflow is refused before anything changes in that page.
        assert_eq!(c.decrement(&mut mm, lit::hpa(pa), K4), Err(Error::Fault));
        c.decrement(&mut mm, lit::hpa(pa + K4), K4).unwrap();
        assert_eq!(c.table_pages(), 5, "no leaf left: root, 2 + 2 directories");
        assert_eq!(mm.live(), 5);
        assert_eq!(c.audit(&mut mm, |_, _| true), Ok(()));
        assert!(!c.any_shared(&mut mm, lit::hpa(0), ADDR_LIMIT).unwrap());
        // Shared again: the directories are reused, one leaf more.
        inc(&mut c, &mut mm, pa, K4);
        assert_eq!(c.table_pages(), 6);
        c.destroy(&mut mm).unwrap();
        assert_eq!(mm.live(), 0, "every page given back");
        assert!(mm.errors.is_empty(), "{:?}", mm.errors);
    }

    #[test]
    fn a_gigabyte_costs_a_mebibyte() {
        let mut mm = Arena::new(1024);
        let mut c = ShareCounts::new();
        let g = 1u64 << 30;
        inc(&mut c, &mut mm, 3 * g, g);
        assert_eq!(c.table_pages(), 256 + 3);
        assert_eq!(runs(&c, &mut mm, 3 * g, g), std::vec![(3 * g, g, 1)]);
        assert!(c.any_shared(&mut mm, lit::hpa(4 * g - K4), 2 * K4).unwrap());
        assert!(!c.any_shared(&mut mm, lit::hpa(4 * g), K4).unwrap());
        c.destroy(&mut mm).unwrap();
        assert_eq!(mm.live(), 0);
    }

    #[test]
    fn books_that_do_not_match_are_reported() {
        let mut mm = Arena::new(64);
        let mut c = ShareCounts::new();
        inc(&mut c, &mut mm, 0, K4);
        let leaf = c.leaf_of(&mm, lit::hpa(0)).unwrap();
        mm.get_page(leaf);
        assert_eq!(c.audit(&mut mm, |_, _| true), Err(Some(leaf)));
        mm.put_page(leaf);
        assert_eq!(c.audit(&mut mm, |_, p| p != leaf), Err(Some(leaf)));
        c.destroy(&mut mm).unwrap();
    }
}
