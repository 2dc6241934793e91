// SPDX-License-Identifier: GPL-2.0

//! The generic 4-level page-table engine: one walker, visitor callbacks,
//! table memory behind a trait.
//!
//! Owns:
//!
//! * [`MmOps`], the memory operations the engine needs (allocate/free a
//!   zeroed 4 KiB table page, per-table-page use counts, a view of a table
//!   page given its physical address, zeroing a data page).  The module
//!   implements it over the hypervisor's page pool; tests over a Vec arena.
//! * [`walk`], the only walker: it visits the entries of a range at every
//!   level and calls a [`Visitor`] for leaves, before descending into a
//!   table, and after coming back from one.  Every other operation is a
//!   visitor.
//! * [`PgTable`], a table with a pluggable entry format ([`PteFormat`]):
//!   `map`, `unmap`, `annotate` (a non-present entry carrying an owner id),
//!   `set_state`, `lookup`, `destroy`.  Large pages (2 MiB, 1 GiB) are used
//!   for new mappings whenever size, alignment and the table's
//!   `max_block_level` allow; a large page is split only when part of it
//!   changes to something it is not already; tables that become empty are
//!   freed, and a table whose whole range is replaced by one entry is freed
//!   with everything below it.
//! * [`PageCache`], a list of pre-allocated table pages, threaded through the
//!   pages themselves.  Every modification first counts, without touching
//!   anything, how many table pages it will need ([`PgTable::pages_needed`]),
//!   reserves them, and only then applies; the apply step cannot fail for
//!   lack of memory, so a modification either happens completely or not at
//!   all.  The page-state transitions use the same two steps across several
//!   tables.
//!
//! Addresses are 48-bit (4-level paging); the walker needs no `unsafe`: the
//! memory operations hand out `&mut [u64; 512]` views.
//!
//! Concurrency: the engine takes `&mut` to what it changes; the caller holds
//! the lock of the table (see `mem_protect` for the lock order).

pub mod format;

use core::marker::PhantomData;

pub use format::{Attrs, EptFormat, HypFormat, PteFormat, PERM_R, PERM_RWX, PERM_W, PERM_X};

use crate::hv::error::{Error, Result};
use crate::hv::mm::ept::{index, level_size, OwnerId, PageState, ENTRIES_PER_TABLE, PAGE_SIZE};

/// One 4 KiB paging structure.
pub type Table = [u64; ENTRIES_PER_TABLE];

/// Number of paging levels (the root is a PML4).
pub const LEVELS: u32 = 4;

/// First address beyond what 4-level paging translates.
pub const ADDR_LIMIT: u64 = 1 << 48;

/// First physical address beyond what an entry can point to (bits 51:12).
pub const PA_LIMIT: u64 = 1 << 52;

/// Memory operations the engine runs on.
///
/// Table pages are identified by physical address.  The implementation
/// translates to a virtual address when it hands out a table view (in the
/// module: the hypervisor's linear map of its page pool).
pub trait MmOps {
    /// Allocates a zeroed 4 KiB page for a table; `None` when out of memory.
    /// A new page has use count 0.
    fn zalloc_page(&mut self) -> Option<u64>;

    /// Returns a page obtained from [`MmOps::zalloc_page`].
    fn free_page(&mut self, pa: u64);

    /// The table page at `pa`, or `None` if `pa` is not a table page.
    fn table(&self, pa: u64) -> Option<&Table>;

    /// The table page at `pa` for writing, or `None` if it is not one.
    fn table_mut(&mut self, pa: u64) -> Option<&mut Table>;

    /// Increments the use count of the table page at `pa` (an entry of it
    /// went from zero to non-zero).
    fn get_page(&mut self, pa: u64);

    /// Decrements the use count of the table page at `pa` (an entry of it
    /// went from non-zero to zero).
    fn put_page(&mut self, pa: u64);

    /// The use count of the table page at `pa`: its number of non-zero
    /// entries.
    fn page_count(&self, pa: u64) -> u32;

    /// Zeroes the 4 KiB data page at `pa` (not a table page): used before a
    /// page a guest owned goes back to the host.
    fn zero_page(&mut self, pa: u64);
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

/// Where the walker is: one entry and the range being walked.
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

/// Callbacks of the walker.
pub trait Visitor<M: MmOps> {
    /// Which callbacks are wanted: a mask of `VISIT_*`.
    fn flags(&self) -> u8;

    /// Called with a copy of the entry; the walker writes it back (keeping
    /// the table's use count right) if the visitor changed it.  An error
    /// stops the walk.
    fn visit(&mut self, mm: &mut M, kind: VisitKind, ctx: &WalkCtx, entry: &mut u64) -> Result;
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

fn read_entry<M: MmOps>(mm: &M, table: u64, idx: usize) -> Result<u64> {
    mm.table(table)
        .and_then(|t| t.get(idx))
        .copied()
        .ok_or(Error::Fault)
}

fn write_entry<M: MmOps>(mm: &mut M, table: u64, idx: usize, old: u64, new: u64) -> Result {
    if old == new {
        return Ok(());
    }
    let slot = mm
        .table_mut(table)
        .and_then(|t| t.get_mut(idx))
        .ok_or(Error::Fault)?;
    *slot = new;
    if old == 0 {
        mm.get_page(table);
    } else if new == 0 {
        mm.put_page(table);
    }
    Ok(())
}

/// Walks `[start, start + size)` of the 4-level table rooted at `root`,
/// calling `v` as its flags ask.
pub fn walk<F: PteFormat, M: MmOps, V: Visitor<M>>(
    mm: &mut M,
    root: u64,
    start: u64,
    size: u64,
    v: &mut V,
) -> Result {
    let end = check_range(start, size)?;
    walk_table::<F, M, V>(mm, root, LEVELS, 0, start, end, v)
}

fn walk_table<F: PteFormat, M: MmOps, V: Visitor<M>>(
    mm: &mut M,
    table: u64,
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
        };
        let old = read_entry(mm, table, idx)?;
        let mut e = old;
        if F::is_table(e, level) {
            if flags & VISIT_TABLE_PRE != 0 {
                v.visit(mm, VisitKind::TablePre, &ctx, &mut e)?;
                write_entry(mm, table, idx, old, e)?;
            }
        } else if flags & VISIT_LEAF != 0 {
            v.visit(mm, VisitKind::Leaf, &ctx, &mut e)?;
            write_entry(mm, table, idx, old, e)?;
        }
        if !F::is_table(e, level) {
            continue;
        }
        walk_table::<F, M, V>(mm, F::addr(e), level - 1, addr, start, end, v)?;
        if flags & VISIT_TABLE_POST != 0 {
            let old = read_entry(mm, table, idx)?;
            let mut e = old;
            v.visit(mm, VisitKind::TablePost, &ctx, &mut e)?;
            write_entry(mm, table, idx, old, e)?;
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
    head: Option<u64>,
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
    pub fn push<M: MmOps>(&mut self, mm: &mut M, pa: u64) -> Result {
        let link = match self.head {
            Some(next) => next | 1,
            None => 0,
        };
        let slot = mm
            .table_mut(pa)
            .and_then(|t| t.first_mut())
            .ok_or(Error::Fault)?;
        *slot = link;
        self.head = Some(pa);
        self.len += 1;
        Ok(())
    }

    /// Takes a zeroed page out of the cache.
    pub fn pop<M: MmOps>(&mut self, mm: &mut M) -> Option<u64> {
        let pa = self.head?;
        let slot = mm.table_mut(pa).and_then(|t| t.first_mut())?;
        let link = core::mem::take(slot);
        self.head = if link & 1 != 0 { Some(link & !1) } else { None };
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
    /// Map the range to physical memory starting at `pa` with `attrs`.
    Map {
        /// Physical address the start of the range maps to.
        pa: u64,
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
            Fill::Map { pa, attrs } => F::leaf(pa + (ctx.addr - ctx.start), attrs, ctx.level),
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
                    && (pa + (ctx.addr - ctx.start)) & (ctx.size() - 1) == 0
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
                    && F::addr(e).wrapping_sub(ctx.addr) == pa.wrapping_sub(ctx.start)
            }
            Fill::Set(v) => e == v,
            Fill::State(s) => !F::is_present(e) || F::state(e) == s,
        }
    }

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
                let end = pa.checked_add(size).ok_or(Error::Inval)?;
                if pa & (PAGE_SIZE - 1) != 0 || end > PA_LIMIT || attrs.perms & !PERM_RWX != 0 {
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

/// Where the counting pass reads the entries of a table from.
#[derive(Clone, Copy)]
enum Src {
    /// An existing table page.
    Table(u64),
    /// The table a split of this leaf at this level would create.
    Split(u64, u32),
}

/// The visitor that applies a [`Fill`].
struct FillVisitor<'c, F> {
    fill: Fill,
    max_block_level: u32,
    cache: &'c mut PageCache,
    _f: PhantomData<F>,
}

impl<F: PteFormat, M: MmOps> Visitor<M> for FillVisitor<'_, F> {
    fn flags(&self) -> u8 {
        VISIT_LEAF | VISIT_TABLE_PRE | VISIT_TABLE_POST
    }

    fn visit(&mut self, mm: &mut M, kind: VisitKind, ctx: &WalkCtx, e: &mut u64) -> Result {
        if kind == VisitKind::TablePost {
            let child = F::addr(*e);
            if F::is_table(*e, ctx.level) && mm.page_count(child) == 0 {
                mm.free_page(child);
                *e = 0;
            }
            return Ok(());
        }
        match self.fill.decide::<F>(*e, ctx, self.max_block_level) {
            Action::Keep | Action::Descend => Ok(()),
            Action::Set(v) => {
                *e = v;
                Ok(())
            }
            Action::Replace(v) => {
                free_tree::<F, M>(mm, F::addr(*e), ctx.level - 1, ctx.addr)?;
                *e = v;
                Ok(())
            }
            Action::Split => {
                if ctx.level <= 1 {
                    return Err(Error::Fault);
                }
                let new = self.cache.pop(mm).ok_or(Error::NoMem)?;
                for i in 0..ENTRIES_PER_TABLE {
                    let c = F::split_child(*e, ctx.level, i as u64);
                    write_entry(mm, new, i, 0, c)?;
                }
                *e = F::table(new);
                Ok(())
            }
        }
    }
}

/// The visitor that empties a subtree (every entry to zero, every table
/// freed on the way back up).
struct DestroyVisitor<F>(PhantomData<F>);

impl<F: PteFormat, M: MmOps> Visitor<M> for DestroyVisitor<F> {
    fn flags(&self) -> u8 {
        VISIT_LEAF | VISIT_TABLE_POST
    }

    fn visit(&mut self, mm: &mut M, kind: VisitKind, _ctx: &WalkCtx, e: &mut u64) -> Result {
        if kind == VisitKind::TablePost {
            mm.free_page(F::addr(*e));
        }
        *e = 0;
        Ok(())
    }
}

/// Empties and frees the table at `table` (holding `level` entries for the
/// range starting at `base`) and all tables below it.
fn free_tree<F: PteFormat, M: MmOps>(mm: &mut M, table: u64, level: u32, base: u64) -> Result {
    let span = level_size(level) * ENTRIES_PER_TABLE as u64;
    let mut v = DestroyVisitor::<F>(PhantomData);
    walk_table::<F, M, _>(mm, table, level, base, base, base + span, &mut v)?;
    mm.free_page(table);
    Ok(())
}

/// A visitor from a closure called on each leaf (read-only walks).
struct LeafFn<C>(C);

impl<M: MmOps, C: FnMut(&mut M, &WalkCtx, u64) -> Result> Visitor<M> for LeafFn<C> {
    fn flags(&self) -> u8 {
        VISIT_LEAF
    }

    fn visit(&mut self, mm: &mut M, _kind: VisitKind, ctx: &WalkCtx, e: &mut u64) -> Result {
        (self.0)(mm, ctx, *e)
    }
}

/// A visitor from a closure called on each table entry before descending
/// (read-only walks).
struct TableFn<C>(C);

impl<M: MmOps, C: FnMut(&mut M, &WalkCtx, u64) -> Result> Visitor<M> for TableFn<C> {
    fn flags(&self) -> u8 {
        VISIT_TABLE_PRE
    }

    fn visit(&mut self, mm: &mut M, _kind: VisitKind, ctx: &WalkCtx, e: &mut u64) -> Result {
        (self.0)(mm, ctx, *e)
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
}

/// A 4-level page table with entry format `F`.
///
/// # Invariants
///
/// `root` is a table page of the [`MmOps`] the table was created with, and
/// every table reachable from it was allocated from the same [`MmOps`]; each
/// table page's use count equals its number of non-zero entries.
#[derive(Debug)]
pub struct PgTable<F: PteFormat> {
    root: u64,
    max_block_level: u32,
    _f: PhantomData<F>,
}

impl<F: PteFormat> PgTable<F> {
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

    /// Physical address of the root (PML4) table, for the EPT pointer or CR3.
    pub const fn root(&self) -> u64 {
        self.root
    }

    /// Largest level at which new mappings may use a large page.
    pub const fn max_block_level(&self) -> u32 {
        self.max_block_level
    }

    /// Walks `[start, start + size)` with a visitor.
    ///
    /// A visitor that changes entries must keep the table's invariants (see
    /// the type docs); the engine's own visitors do.
    pub fn walk<M: MmOps, V: Visitor<M>>(
        &self,
        mm: &mut M,
        start: u64,
        size: u64,
        v: &mut V,
    ) -> Result {
        walk::<F, M, V>(mm, self.root, start, size, v)
    }

    /// Calls `f(mm, ctx, entry)` for every leaf (present or not) that
    /// intersects `[start, start + size)`.
    pub fn for_each_leaf<M: MmOps>(
        &self,
        mm: &mut M,
        start: u64,
        size: u64,
        f: impl FnMut(&mut M, &WalkCtx, u64) -> Result,
    ) -> Result {
        self.walk(mm, start, size, &mut LeafFn(f))
    }

    /// Calls `f(mm, ctx, entry)` for every table entry (pointing to a
    /// next-level table) that intersects `[start, start + size)`.
    pub fn for_each_table<M: MmOps>(
        &self,
        mm: &mut M,
        start: u64,
        size: u64,
        f: impl FnMut(&mut M, &WalkCtx, u64) -> Result,
    ) -> Result {
        self.walk(mm, start, size, &mut TableFn(f))
    }

    /// The leaf translating `addr` (any alignment below [`ADDR_LIMIT`]).
    pub fn lookup<M: MmOps>(&self, mm: &mut M, addr: u64) -> Result<Leaf> {
        let mut found = Leaf { entry: 0, level: 0 };
        self.for_each_leaf(mm, addr & !(PAGE_SIZE - 1), PAGE_SIZE, |_, ctx, e| {
            found = Leaf {
                entry: e,
                level: ctx.level,
            };
            Ok(())
        })?;
        Ok(found)
    }

    /// Number of table pages (root included).
    pub fn table_pages<M: MmOps>(&self, mm: &mut M) -> Result<usize> {
        let mut n = 1;
        self.for_each_table(mm, 0, ADDR_LIMIT, |_, _, _| {
            n += 1;
            Ok(())
        })?;
        Ok(n)
    }

    /// Number of table pages that writing `fill` over
    /// `[addr, addr + size)` will allocate.  Reads the table only.
    pub fn pages_needed<M: MmOps>(
        &self,
        mm: &M,
        addr: u64,
        size: u64,
        fill: Fill,
    ) -> Result<usize> {
        let end = check_range(addr, size)?;
        fill.validate::<F>(size)?;
        self.count(mm, Src::Table(self.root), LEVELS, 0, addr, end, &fill)
    }

    #[allow(clippy::too_many_arguments)]
    fn count<M: MmOps>(
        &self,
        mm: &M,
        src: Src,
        level: u32,
        base: u64,
        start: u64,
        end: u64,
        fill: &Fill,
    ) -> Result<usize> {
        let size = level_size(level);
        let first = if start > base { index(start, level) } else { 0 };
        let mut n = 0;
        for idx in first..ENTRIES_PER_TABLE {
            let addr = base + idx as u64 * size;
            if addr >= end {
                break;
            }
            let e = match src {
                Src::Table(t) => read_entry(mm, t, idx)?,
                Src::Split(parent, plevel) => F::split_child(parent, plevel, idx as u64),
            };
            let ctx = WalkCtx {
                addr,
                level,
                start,
                end,
            };
            match fill.decide::<F>(e, &ctx, self.max_block_level) {
                Action::Keep | Action::Set(_) | Action::Replace(_) => {}
                Action::Descend => {
                    n += self.count(
                        mm,
                        Src::Table(F::addr(e)),
                        level - 1,
                        addr,
                        start,
                        end,
                        fill,
                    )?;
                }
                Action::Split => {
                    if level <= 1 {
                        return Err(Error::Fault);
                    }
                    n += 1 + self.count(
                        mm,
                        Src::Split(e, level),
                        level - 1,
                        addr,
                        start,
                        end,
                        fill,
                    )?;
                }
            }
        }
        Ok(n)
    }

    /// Writes `fill` over `[addr, addr + size)`, taking any table pages it
    /// needs from `cache`.  With at least [`PgTable::pages_needed`] pages in
    /// the cache this cannot fail (short of a corrupt table).
    pub fn apply<M: MmOps>(
        &mut self,
        mm: &mut M,
        cache: &mut PageCache,
        addr: u64,
        size: u64,
        fill: Fill,
    ) -> Result {
        check_range(addr, size)?;
        fill.validate::<F>(size)?;
        let mut v = FillVisitor::<F> {
            fill,
            max_block_level: self.max_block_level,
            cache,
            _f: PhantomData,
        };
        walk::<F, M, _>(mm, self.root, addr, size, &mut v)
    }

    /// Writes `fill` over `[addr, addr + size)`, all or nothing: the table
    /// pages needed are counted and allocated first.
    pub fn set<M: MmOps>(&mut self, mm: &mut M, addr: u64, size: u64, fill: Fill) -> Result {
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
        addr: u64,
        size: u64,
        pa: u64,
        attrs: Attrs,
    ) -> Result {
        self.set(mm, addr, size, Fill::Map { pa, attrs })
    }

    /// Unmaps `[addr, addr + size)` (entries become zero; in a host EPT that
    /// means "owned by the hypervisor").
    pub fn unmap<M: MmOps>(&mut self, mm: &mut M, addr: u64, size: u64) -> Result {
        self.set(mm, addr, size, Fill::Set(0))
    }

    /// Makes `[addr, addr + size)` non-present, recording `owner`.
    pub fn annotate<M: MmOps>(
        &mut self,
        mm: &mut M,
        addr: u64,
        size: u64,
        owner: OwnerId,
    ) -> Result {
        self.set(mm, addr, size, Fill::Set(F::annotation(owner)))
    }

    /// Sets the page state of the present pages in `[addr, addr + size)`.
    pub fn set_state<M: MmOps>(
        &mut self,
        mm: &mut M,
        addr: u64,
        size: u64,
        s: PageState,
    ) -> Result {
        self.set(mm, addr, size, Fill::State(s))
    }

    /// Frees every table page, the root included.
    pub fn destroy<M: MmOps>(self, mm: &mut M) -> Result {
        free_tree::<F, M>(mm, self.root, LEVELS, 0)
    }
}

#[cfg(test)]
pub(crate) mod tests;
