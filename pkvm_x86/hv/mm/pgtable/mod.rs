// SPDX-License-Identifier: GPL-2.0

//! The generic 4-level page-table engine: one walker, visitor callbacks,
//! table memory behind a trait, one store function.
//!
//! Owns:
//!
//! * [`MmOps`], the memory operations the engine needs (allocate/free a
//!   zeroed 4 KiB table page, per-table-page use counts, a view of a table
//!   page given its host-physical address, zeroing a data page, and the
//!   TLB-invalidation hook [`MmOps::invalidate`]).  The module implements it
//!   over the hypervisor's page pool; tests over a Vec arena.
//!   [`HookedMm`] is an [`MmOps`] with another invalidation hook (the shadow
//!   EPTs' shootdown, a retired shadow's dropped invalidations).
//! * [`store`], the only function that writes an entry of a table (see
//!   "Publication" below).
//! * [`walk`], the only walker: it visits the entries of a range at every
//!   level and calls a [`Visitor`] for leaves, before descending into a
//!   table, and after coming back from one; the visitor answers with a
//!   [`Step`] (keep, write this value, split this leaf) and the walker does
//!   the writing.  Every other operation is a visitor, including the
//!   counting of the table pages a change needs: [`PgTable::pages_needed`]
//!   runs the very visitor [`PgTable::apply`] runs, in a dry-run mode where
//!   a split descends into the table it *would* create (entries computed
//!   from the leaf) and nothing is written.
//! * [`PgTable`], a table with a pluggable entry format ([`PteFormat`]) and
//!   a typed input address space ([`InputAddr`]: `Hpa` for the identity host
//!   EPT, `Gpa` for a guest's shadow EPT, `HypVa` for the hypervisor's
//!   table); table pages and leaf outputs are always `Hpa`.  `map`, `unmap`,
//!   `annotate` (a non-present entry carrying an owner id), `set_state`,
//!   `lookup`, `destroy`.  Large pages (2 MiB, 1 GiB) are used for new
//!   mappings whenever size, alignment and the table's `max_block_level`
//!   allow; a large page is split only when part of it changes to something
//!   it is not already; tables that become empty are freed, and a table
//!   whose whole range is replaced by one entry is freed with everything
//!   below it.
//! * [`PageCache`], a list of pre-allocated table pages, threaded through the
//!   pages themselves.  Every modification first counts, without touching
//!   anything, how many table pages it will need ([`PgTable::pages_needed`]),
//!   reserves them, and only then applies; the apply step cannot fail for
//!   lack of memory, so a modification either happens completely or not at
//!   all.  The page-state transitions use the same two steps across several
//!   tables.
//!
//! # Publication
//!
//! The hardware walks live tables (the host EPT, the hypervisor's own table)
//! while root mode changes them.  So:
//!
//! * every entry is written by [`store`]: one atomic 64-bit store with
//!   Release ordering (table pages are viewed as `[AtomicU64; 512]`), never
//!   torn or split by the compiler, and ordered after every store before it:
//!   a new table's 512 entries are all written before the entry that points
//!   to it;
//! * a present entry whose translation changes (table <-> leaf, i.e. a split
//!   or a merge; a new output address; a new memory type, see
//!   [`PteFormat::changes_translation`]) goes *break-before-make*: the entry
//!   is first written non-present, then [`MmOps::invalidate`] flushes what
//!   the CPU may have cached for its range, then the new entry is written.
//!   Two translations of different page sizes for one address must never be
//!   cached at once: splitting an executable large page in place can raise
//!   an iTLB-multihit machine check;
//! * a table that is unlinked (replaced by a leaf, or emptied) goes the same
//!   way, and its pages are freed only after the invalidation, so a page
//!   the CPU may still walk is never reused.
//!
//! Permission and page-state changes of a present leaf are written in
//! place.  A change that takes access away (a present leaf made
//! non-present, or left with fewer permissions, see
//! [`PteFormat::loses_access`]) is invalidated before the walk returns:
//! the walker records the range of every such entry and calls
//! [`MmOps::invalidate`] once for it at the end (on success and on error
//! alike), so that when `apply`/`set` returns no CPU can still use the
//! access it lost.  Gaining access needs no invalidation (a stale
//! "not present" only costs the CPU a spurious fault, which the owner of
//! the table handles).  For the host EPT the module's hook is the
//! cross-CPU shootdown, so a page taken from the host is unreachable from
//! every CPU before the transition that took it goes on to use it.
//!
//! Addresses are 48-bit (4-level paging); the walker needs no `unsafe`: the
//! memory operations hand out `&[AtomicU64; 512]` views.
//!
//! Concurrency: the engine takes `&mut` to what it changes; the caller holds
//! the lock of the table (see `mem_protect` for the lock order).

pub mod format;
pub mod hooked;

use core::marker::PhantomData;
use core::sync::atomic::{AtomicU64, Ordering};

pub use format::{Attrs, EptFormat, HypFormat, PteFormat, PERM_R, PERM_RWX, PERM_W, PERM_X};
pub use hooked::HookedMm;

use crate::hv::error::{Error, Result};
pub use crate::hv::mm::addr::{Hpa, InputAddr, TableKind, PA_LIMIT};
use crate::hv::mm::ept::{index, level_size, OwnerId, PageState, ENTRIES_PER_TABLE, PAGE_SIZE};

/// One 4 KiB paging structure, as the engine sees it: 512 entries the
/// hardware may read at any time, written only through [`store`].
pub type Table = [AtomicU64; ENTRIES_PER_TABLE];

/// Number of paging levels (the root is a PML4).
pub const LEVELS: u32 = 4;

/// First address beyond what 4-level paging translates.
pub const ADDR_LIMIT: u64 = crate::hv::mm::addr::TABLE_LIMIT;

/// The one store of a table entry: a single 64-bit atomic write with
/// Release ordering, so every store before it (the entries of a table it
/// points to) is visible to a walker that sees it.
pub fn store(slot: &AtomicU64, v: u64) {
    slot.store(v, Ordering::Release);
}

/// Reads an entry (the caller holds the table's lock; only [`store`]
/// writes entries).
pub fn load(slot: &AtomicU64) -> u64 {
    slot.load(Ordering::Relaxed)
}

/// Memory operations the engine runs on.
///
/// Table pages are identified by host-physical address.  The implementation
/// translates to a virtual address when it hands out a table view (in the
/// module: the hypervisor's linear map of its page pool).
pub trait MmOps {
    /// Allocates a zeroed 4 KiB page for a table; `None` when out of memory.
    /// A new page has use count 0.
    fn zalloc_page(&mut self) -> Option<Hpa>;

    /// Returns a page obtained from [`MmOps::zalloc_page`].
    fn free_page(&mut self, pa: Hpa);

    /// Returns a table page that nothing points to any more and no CPU
    /// caches (its parent entry was cleared and invalidated), whatever its
    /// entries and use count still say: nothing reads it again before
    /// [`MmOps::zalloc_page`] hands it out zeroed.  Freeing a subtree this
    /// way costs one call per table instead of a store per entry.
    fn free_unlinked(&mut self, pa: Hpa);

    /// The table page at `pa`, or `None` if `pa` is not a table page.
    /// Entries are written only through [`store`].
    fn table(&self, pa: Hpa) -> Option<&Table>;

    /// Increments the use count of the table page at `pa` (an entry of it
    /// went from zero to non-zero).
    fn get_page(&mut self, pa: Hpa);

    /// Decrements the use count of the table page at `pa` (an entry of it
    /// went from non-zero to zero).
    fn put_page(&mut self, pa: Hpa);

    /// The use count of the table page at `pa`: its number of non-zero
    /// entries.
    fn page_count(&self, pa: Hpa) -> u32;

    /// Zeroes the 4 KiB data page at `pa` (not a table page): used before a
    /// page a guest owned goes back to the host, and on a VM's metadata
    /// pages when the hypervisor takes them and when it gives them back.
    fn zero_page(&mut self, pa: Hpa);

    /// The TLB-invalidation hook of break-before-make: an entry of the
    /// table of kind `kind` rooted at `root`, translating the input
    /// addresses `[addr, addr + size)` (table bits: for the hypervisor's
    /// table the low 48 bits of the virtual address), has just been made
    /// non-present; flush whatever the CPU may have cached for it
    /// (translations and paging-structure caches) before the engine writes
    /// the new entry or frees a table that was below it.
    ///
    /// It is also called once at the end of every walk that took access
    /// away in place (see "Publication" above), for the range of the
    /// entries that lost it, before the walk returns.
    ///
    /// When it returns, no CPU that runs on the table may still use what
    /// it cached for the range.  The module flushes the current CPU
    /// (INVEPT single-context for an EPT, INVLPG for the hypervisor's
    /// table) and, for the host EPT, every other CPU too (the cross-CPU
    /// shootdown, `crate::hyp::global`), under the lock of the table.
    fn invalidate(&mut self, kind: TableKind, root: Hpa, addr: u64, size: u64);

    /// Observes a store of `v` to entry `idx` of the table page `table`,
    /// just after [`store`] wrote it (tests record the sequence; the module
    /// does nothing).
    fn stored(&mut self, _table: Hpa, _idx: usize, _v: u64) {}
}

/// What a [`Visitor`] is being called for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VisitKind {
    /// A leaf: a page mapping or a non-present entry (may be replaced by a
    /// table, which the walker then descends into).
    Leaf,
    /// A table entry, before its table is walked (may be replaced by a leaf,
    /// and then the walker does not descend).
    TablePre,
    /// A table entry, after its table was walked.
    TablePost,
}

/// Visit leaves.
pub const VISIT_LEAF: u8 = 1;
/// Visit table entries before descending.
pub const VISIT_TABLE_PRE: u8 = 2;
/// Visit table entries after descending.
pub const VISIT_TABLE_POST: u8 = 4;
/// Skip entries that are zero (empty, no owner annotation) without calling
/// the visitor: for visitors that have nothing to do with them, such as the
/// emptying of a table being freed, which would otherwise look at all 512
/// entries of every table it frees.
pub const SKIP_EMPTY: u8 = 8;

/// Where the walker is: one entry and the range being walked, in the table
/// bits of the table's input address space ([`InputAddr::table_bits`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WalkCtx {
    /// First address the entry translates.
    pub addr: u64,
    /// Level of the entry (1 = 4 KiB entries ... 4 = PML4 entries).
    pub level: u32,
    /// Start of the walked range.
    pub start: u64,
    /// End (exclusive) of the walked range.
    pub end: u64,
    /// The table page holding the entry (`None` in a dry run below a split
    /// that has not happened).
    pub table: Option<Hpa>,
    /// Index of the entry in its table.
    pub index: usize,
}

impl WalkCtx {
    /// Bytes the entry translates.
    pub const fn size(&self) -> u64 {
        level_size(self.level)
    }

    /// First address of the entry that is inside the walked range.
    pub const fn lo(&self) -> u64 {
        if self.addr > self.start {
            self.addr
        } else {
            self.start
        }
    }

    /// End (exclusive) of the part of the entry inside the walked range.
    pub const fn hi(&self) -> u64 {
        let e = self.addr + self.size();
        if e < self.end {
            e
        } else {
            self.end
        }
    }

    /// Whether the walked range covers the whole entry.
    pub const fn covered(&self) -> bool {
        self.start <= self.addr && self.addr + self.size() <= self.end
    }
}

/// What the walker does with an entry after a visit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Leave it; descend if it is a table.
    Keep,
    /// Write this value (break-before-make if the translation changes; a
    /// table it replaces is freed); descend if it is a table.
    Write(u64),
    /// Replace the leaf by a table of 512 equivalent entries
    /// ([`PteFormat::split_child`]) in this zeroed page, then descend.  In
    /// a dry run the page may be `None`: the walker descends into the
    /// entries the table would have.
    Split(Option<Hpa>),
}

/// Callbacks of the walker.
pub trait Visitor<M: MmOps> {
    /// Which callbacks are wanted: a mask of `VISIT_*`.
    fn flags(&self) -> u8;

    /// Called with the entry; says what to do with it.  An error stops the
    /// walk.
    fn visit(&mut self, mm: &mut M, kind: VisitKind, ctx: &WalkCtx, entry: u64) -> Result<Step>;
}

/// Checks that `[addr, addr + size)` is a non-empty, page-aligned range below
/// [`ADDR_LIMIT`]; returns its end.
pub fn check_range(addr: u64, size: u64) -> Result<u64> {
    if size == 0 || (addr | size) & (PAGE_SIZE - 1) != 0 {
        return Err(Error::Inval);
    }
    match addr.checked_add(size) {
        Some(end) if end <= ADDR_LIMIT => Ok(end),
        _ => Err(Error::Inval),
    }
}

/// How a walk treats the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// The table may be in use by the hardware: break-before-make.
    Live,
    /// A subtree no one can reach any more (being freed): plain stores.
    Unlinked,
    /// Nothing is written; splits are simulated (counting, read-only walks).
    DryRun,
}

/// Where the walker reads the entries of a table from.
#[derive(Clone, Copy, Debug)]
enum Src {
    /// An existing table page.
    Table(Hpa),
    /// The table a split of this leaf at this level would create (dry run).
    Split(u64, u32),
}

/// One walk: the memory, the table's identity (for invalidation) and the
/// mode.
struct Walker<'m, M> {
    mm: &'m mut M,
    kind: TableKind,
    root: Hpa,
    mode: Mode,
    /// The range `[lo, hi)` of the entries that lost access in place and
    /// have not been invalidated yet (live walks only).
    lost: Option<(u64, u64)>,
}

fn read_entry<F: PteFormat, M: MmOps>(mm: &M, src: Src, idx: usize) -> Result<u64> {
    match src {
        Src::Table(t) => mm
            .table(t)
            .and_then(|t| t.get(idx))
            .map(load)
            .ok_or(Error::Fault),
        Src::Split(leaf, level) => Ok(F::split_child(leaf, level, idx as u64)),
    }
}

/// Stores `v` in entry `idx` of the table page `table` through [`store`].
fn store_entry<M: MmOps>(mm: &mut M, table: Hpa, idx: usize, v: u64) -> Result {
    let slot = mm
        .table(table)
        .and_then(|t| t.get(idx))
        .ok_or(Error::Fault)?;
    store(slot, v);
    mm.stored(table, idx, v);
    Ok(())
}

impl<M: MmOps> Walker<'_, M> {
    /// Replaces entry `ctx.index` of `table` (value `old`) by `new`:
    /// break-before-make if the hardware may have cached `old` in a way
    /// `new` contradicts, freeing the table `old` pointed to (once it can
    /// no longer be walked), keeping the use count right.
    fn update<F: PteFormat>(&mut self, table: Hpa, ctx: &WalkCtx, old: u64, new: u64) -> Result {
        if old == new || self.mode == Mode::DryRun {
            return Ok(());
        }
        let level = ctx.level;
        let unlink =
            F::is_table(old, level) && !(F::is_table(new, level) && F::addr(new) == F::addr(old));
        let brk = self.mode == Mode::Live
            && F::is_present(old)
            && (unlink || (F::is_present(new) && F::changes_translation(old, new, level)));
        if brk {
            store_entry(self.mm, table, ctx.index, 0)?;
            let (lo, hi) = (ctx.addr, ctx.addr + ctx.size());
            self.mm.invalidate(self.kind, self.root, lo, hi - lo);
            // Losses written before, inside this range, are covered.
            if self.lost.is_some_and(|(l, h)| lo <= l && h <= hi) {
                self.lost = None;
            }
        } else if self.mode == Mode::Live && F::loses_access(old, new, level) {
            // Written in place below; invalidated when the walk ends.
            let (lo, hi) = (ctx.addr, ctx.addr + ctx.size());
            self.lost = Some(match self.lost {
                Some((l, h)) => (l.min(lo), h.max(hi)),
                None => (lo, hi),
            });
        }
        if unlink {
            free_subtree::<F, M>(self.mm, F::addr(old), level - 1, ctx.addr)?;
        }
        if !(brk && new == 0) {
            store_entry(self.mm, table, ctx.index, new)?;
        }
        if old == 0 {
            self.mm.get_page(table);
        } else if new == 0 {
            self.mm.put_page(table);
        }
        Ok(())
    }

    /// Carries out `step` on the entry at `ctx` (value `e`, read from
    /// `src`); returns the table to descend into, if any.
    fn step<F: PteFormat>(
        &mut self,
        src: Src,
        ctx: &WalkCtx,
        e: u64,
        step: Step,
    ) -> Result<Option<Src>> {
        let level = ctx.level;
        let now = match step {
            Step::Keep => e,
            Step::Write(new) => {
                if let Src::Table(t) = src {
                    self.update::<F>(t, ctx, e, new)?;
                }
                // In a dry run nothing was written, but the walk goes on as
                // if it had been (a replaced table is not descended into).
                new
            }
            Step::Split(page) => {
                if level <= 1 {
                    return Err(Error::Fault);
                }
                let (Src::Table(t), Mode::Live | Mode::Unlinked) = (src, self.mode) else {
                    return Ok(Some(Src::Split(e, level)));
                };
                let page = page.ok_or(Error::Fault)?;
                // Build the new table completely while nothing points to it.
                for i in 0..ENTRIES_PER_TABLE {
                    let c = F::split_child(e, level, i as u64);
                    if c != 0 {
                        store_entry(self.mm, page, i, c)?;
                        self.mm.get_page(page);
                    }
                }
                let new = F::table(page);
                self.update::<F>(t, ctx, e, new)?;
                new
            }
        };
        Ok(F::is_table(now, level).then(|| Src::Table(F::addr(now))))
    }
}

/// Walks `[start, start + size)` (table bits) of the 4-level table of kind
/// `kind` rooted at `root`, calling `v` as its flags ask and carrying out
/// what it answers, break-before-make where needed.
pub fn walk<F: PteFormat, M: MmOps, V: Visitor<M>>(
    mm: &mut M,
    kind: TableKind,
    root: Hpa,
    start: u64,
    size: u64,
    v: &mut V,
) -> Result {
    walk_mode::<F, M, V>(mm, kind, root, Mode::Live, start, size, v)
}

fn walk_mode<F: PteFormat, M: MmOps, V: Visitor<M>>(
    mm: &mut M,
    kind: TableKind,
    root: Hpa,
    mode: Mode,
    start: u64,
    size: u64,
    v: &mut V,
) -> Result {
    let end = check_range(start, size)?;
    let mut w = Walker {
        mm,
        kind,
        root,
        mode,
        lost: None,
    };
    let r = walk_table::<F, M, V>(&mut w, Src::Table(root), LEVELS, 0, start, end, v);
    // Whatever was written, also before an error: no access that was
    // taken away survives the walk in any CPU's caches.
    if let Some((lo, hi)) = w.lost {
        w.mm.invalidate(kind, root, lo, hi - lo);
    }
    r
}

fn walk_table<F: PteFormat, M: MmOps, V: Visitor<M>>(
    w: &mut Walker<'_, M>,
    src: Src,
    level: u32,
    base: u64,
    start: u64,
    end: u64,
    v: &mut V,
) -> Result {
    let size = level_size(level);
    let first = if start > base { index(start, level) } else { 0 };
    let flags = v.flags();
    for idx in first..ENTRIES_PER_TABLE {
        let addr = base + idx as u64 * size;
        if addr >= end {
            break;
        }
        let ctx = WalkCtx {
            addr,
            level,
            start,
            end,
            table: match src {
                Src::Table(t) => Some(t),
                Src::Split(..) => None,
            },
            index: idx,
        };
        let e = read_entry::<F, M>(w.mm, src, idx)?;
        if e == 0 && flags & SKIP_EMPTY != 0 {
            continue;
        }
        let step = if F::is_table(e, level) {
            if flags & VISIT_TABLE_PRE != 0 {
                v.visit(w.mm, VisitKind::TablePre, &ctx, e)?
            } else {
                Step::Keep
            }
        } else if flags & VISIT_LEAF != 0 {
            v.visit(w.mm, VisitKind::Leaf, &ctx, e)?
        } else {
            Step::Keep
        };
        let Some(child) = w.step::<F>(src, &ctx, e, step)? else {
            continue;
        };
        walk_table::<F, M, V>(w, child, level - 1, addr, start, end, v)?;
        if flags & VISIT_TABLE_POST != 0 {
            let e = read_entry::<F, M>(w.mm, src, idx)?;
            let step = v.visit(w.mm, VisitKind::TablePost, &ctx, e)?;
            if step != Step::Keep {
                w.step::<F>(src, &ctx, e, step)?;
            }
        }
    }
    Ok(())
}

/// A list of pre-allocated, zeroed table pages.
///
/// The list is threaded through word 0 of the pages themselves, so it needs
/// no storage and can hold any number of pages.  A cache must be emptied
/// with [`PageCache::release`] before it is dropped, or its pages leak.
#[derive(Debug, Default)]
pub struct PageCache {
    head: Option<Hpa>,
    len: usize,
}

impl PageCache {
    /// An empty cache.
    pub const fn new() -> Self {
        Self { head: None, len: 0 }
    }

    /// Number of pages in the cache.
    pub const fn len(&self) -> usize {
        self.len
    }

    /// Whether the cache is empty.
    pub const fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Allocates pages until the cache holds at least `n`.  On failure the
    /// pages this call allocated are freed again and the cache is as before.
    pub fn topup<M: MmOps>(&mut self, mm: &mut M, n: usize) -> Result {
        let before = self.len;
        while self.len < n {
            let Some(pa) = mm.zalloc_page() else {
                while self.len > before {
                    if let Some(pa) = self.pop(mm) {
                        mm.free_page(pa);
                    }
                }
                return Err(Error::NoMem);
            };
            self.push(mm, pa)?;
        }
        Ok(())
    }

    /// Adds the zeroed table page `pa`.
    pub fn push<M: MmOps>(&mut self, mm: &mut M, pa: Hpa) -> Result {
        let link = match self.head {
            Some(next) => next.raw() | 1,
            None => 0,
        };
        store_entry(mm, pa, 0, link)?;
        self.head = Some(pa);
        self.len += 1;
        Ok(())
    }

    /// Takes a zeroed page out of the cache.
    pub fn pop<M: MmOps>(&mut self, mm: &mut M) -> Option<Hpa> {
        let pa = self.head?;
        let link = mm.table(pa).and_then(|t| t.first()).map(load)?;
        store_entry(mm, pa, 0, 0).ok()?;
        self.head = if link & 1 != 0 {
            Hpa::new(link & !1)
        } else {
            None
        };
        self.len -= 1;
        Some(pa)
    }

    /// Frees every page left in the cache.
    pub fn release<M: MmOps>(&mut self, mm: &mut M) {
        while let Some(pa) = self.pop(mm) {
            mm.free_page(pa);
        }
    }
}

/// What a modification writes over a range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fill {
    /// Map the range to host-physical memory starting at `pa` with `attrs`.
    Map {
        /// Host-physical address the start of the range maps to.
        pa: Hpa,
        /// Attributes of the new leaves.
        attrs: Attrs,
    },
    /// Write the non-present entry value (0 = unmapped/owned by `HYP`, or an
    /// owner annotation).
    Set(u64),
    /// Change the page state of the present leaves, keeping everything else;
    /// non-present entries are left alone.
    State(PageState),
}

/// What a modification does to one entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Action {
    /// Nothing to change here.
    Keep,
    /// Replace the leaf with this value.
    Set(u64),
    /// Replace the leaf by a table of 512 equivalent entries, then descend.
    Split,
    /// Descend into the table.
    Descend,
    /// Free the table and everything below, write this value instead.
    Replace(u64),
}

impl Fill {
    fn target<F: PteFormat>(&self, e: u64, ctx: &WalkCtx) -> u64 {
        match *self {
            Fill::Map { pa, attrs } => {
                F::leaf(pa.wrapping_add(ctx.addr - ctx.start), attrs, ctx.level)
            }
            Fill::Set(v) => v,
            Fill::State(s) => {
                if F::is_present(e) && !F::is_table(e, ctx.level) {
                    F::with_state(e, s)
                } else {
                    e
                }
            }
        }
    }

    /// Whether the whole entry at `ctx` may hold the fill as one leaf.
    fn block_ok(&self, ctx: &WalkCtx, max_block_level: u32) -> bool {
        if ctx.level == 1 {
            return true;
        }
        match *self {
            Fill::Map { pa, .. } => {
                ctx.level <= max_block_level
                    && pa.wrapping_add(ctx.addr - ctx.start).raw() & (ctx.size() - 1) == 0
            }
            Fill::Set(_) | Fill::State(_) => true,
        }
    }

    /// Whether leaf `e` already says what the fill would write over the
    /// part of it inside the range.
    fn unchanged<F: PteFormat>(&self, e: u64, ctx: &WalkCtx) -> bool {
        match *self {
            Fill::Map { pa, attrs } => {
                F::is_present(e)
                    && F::attrs(e) == attrs
                    && F::addr(e).raw().wrapping_sub(ctx.addr) == pa.raw().wrapping_sub(ctx.start)
            }
            Fill::Set(v) => e == v,
            Fill::State(s) => !F::is_present(e) || F::state(e) == s,
        }
    }

    /// The decision for one entry, shared by counting and applying.
    fn decide<F: PteFormat>(&self, e: u64, ctx: &WalkCtx, max_block_level: u32) -> Action {
        let whole = ctx.covered() && self.block_ok(ctx, max_block_level);
        if F::is_table(e, ctx.level) {
            if whole && !matches!(self, Fill::State(_)) {
                Action::Replace(self.target::<F>(e, ctx))
            } else {
                Action::Descend
            }
        } else if whole {
            let t = self.target::<F>(e, ctx);
            if t == e {
                Action::Keep
            } else {
                Action::Set(t)
            }
        } else if self.unchanged::<F>(e, ctx) {
            Action::Keep
        } else {
            Action::Split
        }
    }

    fn validate<F: PteFormat>(&self, size: u64) -> Result {
        match *self {
            Fill::Map { pa, attrs } => {
                let end = pa.raw().checked_add(size).ok_or(Error::Inval)?;
                if !pa.is_page_aligned() || end > PA_LIMIT || attrs.perms & !PERM_RWX != 0 {
                    return Err(Error::Inval);
                }
                // The state is the only thing telling a mapping apart from
                // nothing in formats where perms 0 is still "present".
                if !F::is_present(F::leaf(pa, attrs, 1)) {
                    return Err(Error::Inval);
                }
                Ok(())
            }
            Fill::Set(v) if F::is_present(v) => Err(Error::Inval),
            Fill::Set(_) | Fill::State(_) => Ok(()),
        }
    }
}

/// The visitor that writes a [`Fill`], and counts the table pages that
/// takes: with a cache it applies (taking split pages from the cache), in a
/// dry run without one it only counts.  Both use [`Fill::decide`].
struct FillVisitor<'c, F> {
    fill: Fill,
    max_block_level: u32,
    cache: Option<&'c mut PageCache>,
    splits: usize,
    _f: PhantomData<F>,
}

impl<F: PteFormat, M: MmOps> Visitor<M> for FillVisitor<'_, F> {
    fn flags(&self) -> u8 {
        VISIT_LEAF | VISIT_TABLE_PRE | VISIT_TABLE_POST
    }

    fn visit(&mut self, mm: &mut M, kind: VisitKind, ctx: &WalkCtx, e: u64) -> Result<Step> {
        if kind == VisitKind::TablePost {
            // A table left empty is unlinked (and then freed by the walker).
            if F::is_table(e, ctx.level) && mm.page_count(F::addr(e)) == 0 {
                return Ok(Step::Write(0));
            }
            return Ok(Step::Keep);
        }
        Ok(match self.fill.decide::<F>(e, ctx, self.max_block_level) {
            Action::Keep | Action::Descend => Step::Keep,
            Action::Set(v) | Action::Replace(v) => Step::Write(v),
            Action::Split => {
                self.splits += 1;
                match self.cache.as_deref_mut() {
                    Some(c) => Step::Split(Some(c.pop(mm).ok_or(Error::NoMem)?)),
                    None => Step::Split(None),
                }
            }
        })
    }
}

/// Frees the tables below an unlinked table: each table entry is cleared,
/// which frees the table below it ([`Walker::update`] frees what an entry
/// stops pointing to).  Leaves and empty entries are not visited: a table
/// page is freed whole ([`MmOps::free_unlinked`]), so its leaves need no
/// clearing.
struct FreeVisitor;

impl<M: MmOps> Visitor<M> for FreeVisitor {
    fn flags(&self) -> u8 {
        VISIT_TABLE_PRE | SKIP_EMPTY
    }

    fn visit(&mut self, _mm: &mut M, _kind: VisitKind, _ctx: &WalkCtx, _e: u64) -> Result<Step> {
        Ok(Step::Write(0))
    }
}

/// Frees the table at `table` (holding `level` entries for the range
/// starting at `base`) and all tables below it.  Nothing may point to it
/// any more, and the CPU's caches must no longer hold it.
fn free_subtree<F: PteFormat, M: MmOps>(mm: &mut M, table: Hpa, level: u32, base: u64) -> Result {
    // A last-level table has nothing below it, and a table whose use count
    // is zero has no non-zero entry: neither needs a walk.
    if level > 1 && mm.page_count(table) != 0 {
        let span = level_size(level) * ENTRIES_PER_TABLE as u64;
        let mut w = Walker {
            mm: &mut *mm,
            kind: TableKind::HostEpt,
            root: table,
            mode: Mode::Unlinked,
            lost: None,
        };
        walk_table::<F, M, _>(
            &mut w,
            Src::Table(table),
            level,
            base,
            base,
            base + span,
            &mut FreeVisitor,
        )?;
    }
    mm.free_unlinked(table);
    Ok(())
}

/// A visitor from a closure called on each leaf (read-only walks).
struct LeafFn<C>(C);

impl<M: MmOps, C: FnMut(&mut M, &WalkCtx, u64) -> Result> Visitor<M> for LeafFn<C> {
    fn flags(&self) -> u8 {
        VISIT_LEAF
    }

    fn visit(&mut self, mm: &mut M, _kind: VisitKind, ctx: &WalkCtx, e: u64) -> Result<Step> {
        (self.0)(mm, ctx, e).map(|()| Step::Keep)
    }
}

/// A visitor from a closure called on each table entry before descending
/// (read-only walks).
struct TableFn<C>(C);

impl<M: MmOps, C: FnMut(&mut M, &WalkCtx, u64) -> Result> Visitor<M> for TableFn<C> {
    fn flags(&self) -> u8 {
        VISIT_TABLE_PRE
    }

    fn visit(&mut self, mm: &mut M, _kind: VisitKind, ctx: &WalkCtx, e: u64) -> Result<Step> {
        (self.0)(mm, ctx, e).map(|()| Step::Keep)
    }
}

/// A leaf found by [`PgTable::lookup`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Leaf {
    /// The raw entry.
    pub entry: u64,
    /// Its level (1 = 4 KiB page, 2 = 2 MiB, 3 = 1 GiB, 4 = a non-present
    /// PML4 entry).
    pub level: u32,
    /// The table page holding the entry.
    pub table: Hpa,
    /// The entry's index in that table.
    pub index: usize,
}

/// A 4-level page table with entry format `F` translating input addresses
/// of type `A` ([`Hpa`] for the identity host EPT, `Gpa` for a shadow EPT,
/// `HypVa` for the hypervisor's table) to host-physical addresses.
///
/// # Invariants
///
/// `root` is a table page of the [`MmOps`] the table was created with, and
/// every table reachable from it was allocated from the same [`MmOps`]; each
/// table page's use count equals its number of non-zero entries.
#[derive(Debug)]
pub struct PgTable<F: PteFormat, A: InputAddr> {
    root: Hpa,
    max_block_level: u32,
    _f: PhantomData<(F, A)>,
}

impl<F: PteFormat, A: InputAddr> PgTable<F, A> {
    /// Creates an empty table (every entry zero) whose large pages go up to
    /// `max_block_level` (1: 4 KiB only, 2: 2 MiB, 3: also 1 GiB; values
    /// outside 1..=3 are clamped).
    pub fn new<M: MmOps>(mm: &mut M, max_block_level: u32) -> Result<Self> {
        let root = mm.zalloc_page().ok_or(Error::NoMem)?;
        // INVARIANT: a fresh zeroed page from `mm` is an empty table with use
        // count 0.
        Ok(Self {
            root,
            max_block_level: max_block_level.clamp(1, 3),
            _f: PhantomData,
        })
    }

    /// Host-physical address of the root (PML4) table, for the EPT pointer
    /// or CR3.
    pub const fn root(&self) -> Hpa {
        self.root
    }

    /// Largest level at which new mappings may use a large page.
    pub const fn max_block_level(&self) -> u32 {
        self.max_block_level
    }

    /// Walks `[start, start + size)` with a visitor, carrying out what it
    /// answers (break-before-make where needed).
    ///
    /// A visitor that changes entries must keep the table's invariants (see
    /// the type docs); the engine's own visitors do.
    pub fn walk<M: MmOps, V: Visitor<M>>(
        &self,
        mm: &mut M,
        start: A,
        size: u64,
        v: &mut V,
    ) -> Result {
        walk::<F, M, V>(mm, A::KIND, self.root, start.table_bits(), size, v)
    }

    /// Calls `f(mm, ctx, entry)` for every leaf (present or not) that
    /// intersects `[start, start + size)`.
    pub fn for_each_leaf<M: MmOps>(
        &self,
        mm: &mut M,
        start: A,
        size: u64,
        f: impl FnMut(&mut M, &WalkCtx, u64) -> Result,
    ) -> Result {
        self.read_walk(mm, start.table_bits(), size, &mut LeafFn(f))
    }

    /// Calls `f(mm, ctx, entry)` for every table entry (pointing to a
    /// next-level table) that intersects `[start, start + size)`.
    pub fn for_each_table<M: MmOps>(
        &self,
        mm: &mut M,
        start: A,
        size: u64,
        f: impl FnMut(&mut M, &WalkCtx, u64) -> Result,
    ) -> Result {
        self.read_walk(mm, start.table_bits(), size, &mut TableFn(f))
    }

    fn read_walk<M: MmOps, V: Visitor<M>>(
        &self,
        mm: &mut M,
        start: u64,
        size: u64,
        v: &mut V,
    ) -> Result {
        walk_mode::<F, M, V>(mm, A::KIND, self.root, Mode::DryRun, start, size, v)
    }

    /// The leaf translating `addr` (any alignment below [`ADDR_LIMIT`]).
    pub fn lookup<M: MmOps>(&self, mm: &mut M, addr: A) -> Result<Leaf> {
        let mut found = Leaf {
            entry: 0,
            level: 0,
            table: self.root,
            index: 0,
        };
        let bits = addr.table_bits() & !(PAGE_SIZE - 1);
        self.read_walk(
            mm,
            bits,
            PAGE_SIZE,
            &mut LeafFn(|_: &mut M, ctx: &WalkCtx, e| {
                found = Leaf {
                    entry: e,
                    level: ctx.level,
                    table: ctx.table.ok_or(Error::Fault)?,
                    index: ctx.index,
                };
                Ok(())
            }),
        )?;
        Ok(found)
    }

    /// Number of table pages (root included).
    pub fn table_pages<M: MmOps>(&self, mm: &mut M) -> Result<usize> {
        let mut n = 1;
        self.read_walk(
            mm,
            0,
            ADDR_LIMIT,
            &mut TableFn(|_: &mut M, _: &WalkCtx, _| {
                n += 1;
                Ok(())
            }),
        )?;
        Ok(n)
    }

    fn fill_visitor<'c>(&self, fill: Fill, cache: Option<&'c mut PageCache>) -> FillVisitor<'c, F> {
        FillVisitor {
            fill,
            max_block_level: self.max_block_level,
            cache,
            splits: 0,
            _f: PhantomData,
        }
    }

    /// Number of table pages that writing `fill` over
    /// `[addr, addr + size)` will allocate: the apply step's own visitor and
    /// decisions, walked in a dry run (nothing is written).
    pub fn pages_needed<M: MmOps>(
        &self,
        mm: &mut M,
        addr: A,
        size: u64,
        fill: Fill,
    ) -> Result<usize> {
        check_range(addr.table_bits(), size)?;
        fill.validate::<F>(size)?;
        let mut v = self.fill_visitor(fill, None);
        self.read_walk(mm, addr.table_bits(), size, &mut v)?;
        Ok(v.splits)
    }

    /// Writes `fill` over `[addr, addr + size)`, taking any table pages it
    /// needs from `cache`.  With at least [`PgTable::pages_needed`] pages in
    /// the cache this cannot fail (short of a corrupt table).
    pub fn apply<M: MmOps>(
        &mut self,
        mm: &mut M,
        cache: &mut PageCache,
        addr: A,
        size: u64,
        fill: Fill,
    ) -> Result {
        check_range(addr.table_bits(), size)?;
        fill.validate::<F>(size)?;
        let mut v = self.fill_visitor(fill, Some(cache));
        self.walk(mm, addr, size, &mut v)
    }

    /// Writes `fill` over `[addr, addr + size)`, all or nothing: the table
    /// pages needed are counted and allocated first.
    pub fn set<M: MmOps>(&mut self, mm: &mut M, addr: A, size: u64, fill: Fill) -> Result {
        let need = self.pages_needed(mm, addr, size, fill)?;
        let mut cache = PageCache::new();
        cache.topup(mm, need)?;
        let r = self.apply(mm, &mut cache, addr, size, fill);
        cache.release(mm);
        r
    }

    /// Maps `[addr, addr + size)` to `[pa, pa + size)` with `attrs`.
    pub fn map<M: MmOps>(
        &mut self,
        mm: &mut M,
        addr: A,
        size: u64,
        pa: Hpa,
        attrs: Attrs,
    ) -> Result {
        self.set(mm, addr, size, Fill::Map { pa, attrs })
    }

    /// Unmaps `[addr, addr + size)` (entries become zero; in a host EPT that
    /// means "owned by the hypervisor").
    pub fn unmap<M: MmOps>(&mut self, mm: &mut M, addr: A, size: u64) -> Result {
        self.set(mm, addr, size, Fill::Set(0))
    }

    /// Makes `[addr, addr + size)` non-present, recording `owner`.
    pub fn annotate<M: MmOps>(&mut self, mm: &mut M, addr: A, size: u64, owner: OwnerId) -> Result {
        self.set(mm, addr, size, Fill::Set(F::annotation(owner)))
    }

    /// Sets the page state of the present pages in `[addr, addr + size)`.
    pub fn set_state<M: MmOps>(&mut self, mm: &mut M, addr: A, size: u64, s: PageState) -> Result {
        self.set(mm, addr, size, Fill::State(s))
    }

    /// Frees every table page, the root included.  The table must no
    /// longer be in use by any CPU.
    pub fn destroy<M: MmOps>(self, mm: &mut M) -> Result {
        free_subtree::<F, M>(mm, self.root, LEVELS, 0)
    }
}

#[cfg(test)]
pub(crate) mod tests;

#[cfg(test)]
mod publish_tests;
