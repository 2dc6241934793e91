// SPDX-License-Identifier: GPL-2.0

//! Simulated physical memory for tests and the benchmark (std only).
//!
//! Owns [`Arena`], a Vec-backed implementation of `MmOps`: table pages live
//! at physical addresses `base + i * 4 KiB`, use counts are kept per page,
//! and the arena counts allocations and frees, catches double frees, frees
//! of non-empty tables and accesses to pages that are not allocated, and can
//! fail the N-th allocation from now.  It can also record every entry
//! store and every invalidation ([`Event`]), so that tests can check the
//! publication rules of the engine (break-before-make, tables complete
//! before they are linked).  Data pages (what guests own) are not
//! backed; the arena only records which were zeroed, and tests can "dirty"
//! one to check that reclaim zeroes it.
//!
//! Compiled only under `cfg(test)` in the library; the benchmark example
//! mounts this file with `#[path]`.

use std::collections::{HashMap, HashSet};
use std::vec::Vec;

use core::sync::atomic::AtomicU64;

use crate::hv::mm::addr::{Hpa, TableKind};
use crate::hv::mm::pgtable::{load, MmOps, Table};

/// One recorded table operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// `v` was stored in entry `idx` of the table page `table`.
    Store {
        /// The table page.
        table: Hpa,
        /// The index of the entry in that table page.
        idx: usize,
        /// The value stored.
        v: u64,
    },
    /// The data page `pa` was zeroed (`zero_page`).
    Zero {
        /// The page.
        pa: Hpa,
    },
    /// The invalidation hook ran.
    Invalidate {
        /// Kind of table.
        kind: TableKind,
        /// Its root.
        root: Hpa,
        /// First address (table bits).
        addr: u64,
        /// Bytes.
        size: u64,
    },
}

fn empty_table() -> Table {
    [const { AtomicU64::new(0) }; 512]
}

/// Default physical base of the arena: far above the simulated RAM.
pub const ARENA_BASE: u64 = 1 << 40;

/// Vec-backed simulated physical memory for table pages.
#[derive(Debug)]
pub struct Arena {
    base: u64,
    limit: usize,
    pages: Vec<Table>,
    used: Vec<bool>,
    counts: Vec<u32>,
    free_list: Vec<usize>,
    /// Allocation countdown: the allocation that brings it to zero fails.
    fail_in: Option<u64>,
    /// Successful allocations so far.
    pub allocs: u64,
    /// Frees so far.
    pub frees: u64,
    /// Failed allocations (injected or out of pages).
    pub failed_allocs: u64,
    /// Errors seen: double frees, frees of non-empty tables, accesses to
    /// unallocated pages, count underflows.  Must stay empty.
    pub errors: Vec<std::string::String>,
    /// Data pages with content (set by tests); `zero_page` clears them.
    pub dirty: HashSet<Hpa>,
    /// Number of `zero_page` calls per page.
    pub zeroed: HashMap<Hpa, u32>,
    /// Number of entry stores.
    pub writes: u64,
    /// Number of invalidation-hook calls.
    pub invalidations: u64,
    /// The recorded stores and invalidations, when recording (`Some`).
    pub log: Option<Vec<Event>>,
    /// Distinct table pages written since the last `reset_touched`.
    pub touched: HashSet<Hpa>,
    /// Whether to record `touched` (costs a hash insert per write).
    pub track_touched: bool,
}

impl Arena {
    /// An arena of at most `limit` table pages at [`ARENA_BASE`].
    pub fn new(limit: usize) -> Self {
        Self::with_base(ARENA_BASE, limit)
    }

    /// An arena of at most `limit` table pages at `base`.
    pub fn with_base(base: u64, limit: usize) -> Self {
        Self {
            base,
            limit,
            pages: Vec::new(),
            used: Vec::new(),
            counts: Vec::new(),
            free_list: Vec::new(),
            fail_in: None,
            allocs: 0,
            frees: 0,
            failed_allocs: 0,
            errors: Vec::new(),
            dirty: HashSet::new(),
            zeroed: HashMap::new(),
            writes: 0,
            invalidations: 0,
            log: None,
            touched: HashSet::new(),
            track_touched: false,
        }
    }

    /// Makes the `n`-th allocation from now fail (1 = the next one);
    /// `None` cancels.
    pub fn fail_nth(&mut self, n: Option<u64>) {
        self.fail_in = n;
    }

    /// Table pages currently allocated.
    pub fn live(&self) -> u64 {
        self.allocs - self.frees
    }

    /// Whether `pa` is an allocated arena page.
    pub fn is_live(&self, pa: Hpa) -> bool {
        self.slot(pa).is_some_and(|i| self.used[i])
    }

    /// The current content of every allocated page, by address.
    pub fn snapshot(&self) -> HashMap<Hpa, [u64; 512]> {
        let mut m = HashMap::new();
        for (i, page) in self.pages.iter().enumerate() {
            if self.used[i] {
                let mut t = [0u64; 512];
                for (d, s) in t.iter_mut().zip(page.iter()) {
                    *d = load(s);
                }
                m.insert(self.page_pa(i), t);
            }
        }
        m
    }

    /// Starts recording stores and invalidations (forgetting earlier ones).
    pub fn record(&mut self) {
        self.log = Some(Vec::new());
    }

    /// Stops recording; returns what was recorded.
    pub fn take_log(&mut self) -> Vec<Event> {
        self.log.take().unwrap_or_default()
    }

    fn page_pa(&self, i: usize) -> Hpa {
        Hpa::new(self.base + i as u64 * 4096).unwrap()
    }

    /// Forgets the set of touched pages.
    pub fn reset_touched(&mut self) {
        self.touched.clear();
    }

    fn slot(&self, pa: Hpa) -> Option<usize> {
        let pa = pa.raw();
        if pa < self.base || pa & 4095 != 0 {
            return None;
        }
        let i = usize::try_from((pa - self.base) / 4096).ok()?;
        (i < self.pages.len()).then_some(i)
    }

    fn live_slot(&mut self, pa: Hpa, what: &str) -> Option<usize> {
        match self.slot(pa) {
            Some(i) if self.used[i] => Some(i),
            _ => {
                self.errors
                    .push(std::format!("{what} of unallocated page {pa:?}"));
                None
            }
        }
    }
}

impl MmOps for Arena {
    fn zalloc_page(&mut self) -> Option<Hpa> {
        if let Some(n) = self.fail_in.as_mut() {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.fail_in = None;
                self.failed_allocs += 1;
                return None;
            }
        }
        let i = match self.free_list.pop() {
            Some(i) => i,
            None if self.pages.len() < self.limit => {
                self.pages.push(empty_table());
                self.used.push(false);
                self.counts.push(0);
                self.pages.len() - 1
            }
            None => {
                self.failed_allocs += 1;
                return None;
            }
        };
        self.used[i] = true;
        self.counts[i] = 0;
        // A whole-array assignment (a memset), not 512 entry stores: the
        // page is not reachable from any table yet.
        self.pages[i] = empty_table();
        self.allocs += 1;
        Some(self.page_pa(i))
    }

    fn free_page(&mut self, pa: Hpa) {
        let Some(i) = self.slot(pa) else {
            self.errors
                .push(std::format!("free of foreign page {pa:?}"));
            return;
        };
        if !self.used[i] {
            self.errors.push(std::format!("double free of {pa:?}"));
            return;
        }
        if self.counts[i] != 0 || self.pages[i].iter().any(|e| load(e) != 0) {
            self.errors.push(std::format!(
                "free of non-empty table {pa:?} (count {})",
                self.counts[i]
            ));
        }
        self.used[i] = false;
        self.free_list.push(i);
        self.frees += 1;
    }

    fn free_unlinked(&mut self, pa: Hpa) {
        let Some(i) = self.slot(pa) else {
            self.errors
                .push(std::format!("free of foreign page {pa:?}"));
            return;
        };
        if !self.used[i] {
            self.errors.push(std::format!("double free of {pa:?}"));
            return;
        }
        // Whatever it held is dropped with it (the caller unlinked it);
        // `zalloc_page` zeroes it before it is used again.
        self.counts[i] = 0;
        self.used[i] = false;
        self.free_list.push(i);
        self.frees += 1;
    }

    fn table(&self, pa: Hpa) -> Option<&Table> {
        let i = self.slot(pa)?;
        self.used[i].then(|| &self.pages[i])
    }

    fn get_page(&mut self, pa: Hpa) {
        if let Some(i) = self.live_slot(pa, "get") {
            self.counts[i] += 1;
        }
    }

    fn put_page(&mut self, pa: Hpa) {
        if let Some(i) = self.live_slot(pa, "put") {
            if self.counts[i] == 0 {
                self.errors.push(std::format!("count underflow on {pa:?}"));
            } else {
                self.counts[i] -= 1;
            }
        }
    }

    fn page_count(&self, pa: Hpa) -> u32 {
        self.slot(pa).map_or(0, |i| self.counts[i])
    }

    fn zero_page(&mut self, pa: Hpa) {
        if self.slot(pa).is_some() {
            self.errors
                .push(std::format!("zero_page on table page {pa:?}"));
        }
        self.dirty.remove(&pa);
        *self.zeroed.entry(pa).or_insert(0) += 1;
        if let Some(log) = self.log.as_mut() {
            log.push(Event::Zero { pa });
        }
    }

    fn invalidate(&mut self, kind: TableKind, root: Hpa, addr: u64, size: u64) {
        self.invalidations += 1;
        if let Some(log) = self.log.as_mut() {
            log.push(Event::Invalidate {
                kind,
                root,
                addr,
                size,
            });
        }
    }

    fn stored(&mut self, table: Hpa, idx: usize, v: u64) {
        if self.live_slot(table, "write").is_none() {
            return;
        }
        self.writes += 1;
        if self.track_touched {
            self.touched.insert(table);
        }
        if let Some(log) = self.log.as_mut() {
            log.push(Event::Store { table, idx, v });
        }
    }
}
