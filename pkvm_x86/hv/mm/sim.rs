// SPDX-License-Identifier: GPL-2.0

//! Simulated physical memory for tests and the benchmark (std only).
//!
//! Owns [`Arena`], a Vec-backed implementation of `MmOps`: table pages live
//! at physical addresses `base + i * 4 KiB`, use counts are kept per page,
//! and the arena counts allocations and frees, catches double frees, frees
//! of non-empty tables and accesses to pages that are not allocated, and can
//! fail the N-th allocation from now.  Data pages (what guests own) are not
//! backed; the arena only records which were zeroed, and tests can "dirty"
//! one to check that reclaim zeroes it.
//!
//! Compiled only under `cfg(test)` in the library; the benchmark example
//! mounts this file with `#[path]`.

use std::collections::{HashMap, HashSet};
use std::vec::Vec;

use crate::hv::mm::pgtable::{MmOps, Table};

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
    pub dirty: HashSet<u64>,
    /// Number of `zero_page` calls per page.
    pub zeroed: HashMap<u64, u32>,
    /// Number of `table_mut` calls (entry writes and table set-ups).
    pub writes: u64,
    /// Distinct table pages written since the last `reset_touched`.
    pub touched: HashSet<u64>,
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
    pub fn is_live(&self, pa: u64) -> bool {
        self.slot(pa).is_some_and(|i| self.used[i])
    }

    /// Forgets the set of touched pages.
    pub fn reset_touched(&mut self) {
        self.touched.clear();
    }

    fn slot(&self, pa: u64) -> Option<usize> {
        if pa < self.base || pa & 4095 != 0 {
            return None;
        }
        let i = usize::try_from((pa - self.base) / 4096).ok()?;
        (i < self.pages.len()).then_some(i)
    }

    fn live_slot(&mut self, pa: u64, what: &str) -> Option<usize> {
        match self.slot(pa) {
            Some(i) if self.used[i] => Some(i),
            _ => {
                self.errors
                    .push(std::format!("{what} of unallocated page {pa:#x}"));
                None
            }
        }
    }
}

impl MmOps for Arena {
    fn zalloc_page(&mut self) -> Option<u64> {
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
                self.pages.push([0; 512]);
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
        self.pages[i] = [0; 512];
        self.allocs += 1;
        Some(self.base + i as u64 * 4096)
    }

    fn free_page(&mut self, pa: u64) {
        let Some(i) = self.slot(pa) else {
            self.errors
                .push(std::format!("free of foreign page {pa:#x}"));
            return;
        };
        if !self.used[i] {
            self.errors.push(std::format!("double free of {pa:#x}"));
            return;
        }
        if self.counts[i] != 0 || self.pages[i].iter().any(|&e| e != 0) {
            self.errors.push(std::format!(
                "free of non-empty table {pa:#x} (count {})",
                self.counts[i]
            ));
        }
        self.used[i] = false;
        self.free_list.push(i);
        self.frees += 1;
    }

    fn table(&self, pa: u64) -> Option<&Table> {
        let i = self.slot(pa)?;
        self.used[i].then(|| &self.pages[i])
    }

    fn table_mut(&mut self, pa: u64) -> Option<&mut Table> {
        let i = self.live_slot(pa, "write")?;
        self.writes += 1;
        if self.track_touched {
            self.touched.insert(pa);
        }
        Some(&mut self.pages[i])
    }

    fn get_page(&mut self, pa: u64) {
        if let Some(i) = self.live_slot(pa, "get") {
            self.counts[i] += 1;
        }
    }

    fn put_page(&mut self, pa: u64) {
        if let Some(i) = self.live_slot(pa, "put") {
            if self.counts[i] == 0 {
                self.errors.push(std::format!("count underflow on {pa:#x}"));
            } else {
                self.counts[i] -= 1;
            }
        }
    }

    fn page_count(&self, pa: u64) -> u32 {
        self.slot(pa).map_or(0, |i| self.counts[i])
    }

    fn zero_page(&mut self, pa: u64) {
        if self.slot(pa).is_some() {
            self.errors
                .push(std::format!("zero_page on table page {pa:#x}"));
        }
        self.dirty.remove(&pa);
        *self.zeroed.entry(pa).or_insert(0) += 1;
    }
}
