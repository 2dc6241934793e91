// SPDX-License-Identifier: GPL-2.0

//! The RAM map: which physical ranges are RAM, as the kernel reported them
//! when the hypervisor was loaded.
//!
//! Owns [`RamMap`], a fixed-size, sorted list of disjoint RAM ranges kept
//! in the host EPT ([`crate::hv::mm::mem_protect::HostEpt`]).  Every
//! transition that takes a host-physical range from the host checks it
//! against this map first and answers [`Error::Inval`] if any page of it is
//! not RAM: MMIO (a device BAR, the local APIC page, the I/O APIC), holes
//! and firmware ranges can never be donated or shared, so teardown can
//! never write zeros into device registers and a guest can never be handed
//! a device.
//!
//! Why a separate map and not a bit in the host EPT: the host EPT maps MMIO
//! in large pages typed by the MTRRs, and RAM boundaries do not follow
//! those runs; a map of a few ranges costs no table pages, cannot be
//! changed by any transition (it is written once, before the first CPU is
//! deprivileged) and is checked before any table is read.  Memory the
//! kernel hot-adds after load is not in the map, so it cannot change hands
//! (fail closed).

use crate::hv::error::{Error, Result};
use crate::hv::mm::ept::PAGE_SIZE;
use crate::hv::mm::pgtable::ADDR_LIMIT;

/// Most RAM ranges the map holds (after merging adjacent ones).  PCs report
/// a handful; a machine with more fails to load rather than guess.  Kept
/// small because the map lives inside [`crate::hv::mm::mem_protect::HostEpt`],
/// which the module builds and moves on the kernel stack at load (128
/// ranges, 2 KiB, overflowed the 16 KiB init stack).
pub const RAM_RANGES_MAX: usize = 32;

/// One RAM range `[start, end)`, 4 KiB aligned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct RamRange {
    /// First byte.
    pub start: u64,
    /// One past the last byte.
    pub end: u64,
}

/// The RAM ranges recorded at load: sorted, disjoint, non-adjacent (adjacent
/// ranges are merged), each non-empty and 4 KiB aligned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RamMap {
    // INVARIANT: `ranges[..n]` are sorted, disjoint, non-adjacent, non-empty,
    // 4 KiB aligned and end at most at `ADDR_LIMIT`; `n <= RAM_RANGES_MAX`.
    ranges: [RamRange; RAM_RANGES_MAX],
    n: usize,
}

impl RamMap {
    /// A map with no RAM at all: nothing can change hands.
    pub const fn empty() -> Self {
        // INVARIANT: no range.
        Self {
            ranges: [RamRange { start: 0, end: 0 }; RAM_RANGES_MAX],
            n: 0,
        }
    }

    /// A map where all of `[0, ADDR_LIMIT)` is RAM (tests of the transitions
    /// that are not about the RAM check).
    pub const fn all() -> Self {
        let mut m = Self::empty();
        m.ranges[0] = RamRange {
            start: 0,
            end: ADDR_LIMIT,
        };
        // INVARIANT: one range, aligned, ending at `ADDR_LIMIT`.
        m.n = 1;
        m
    }

    /// Appends the RAM range `[start, end)`.  Ranges must come in ascending
    /// order (the kernel's `walk_system_ram_range()` order); a range that
    /// touches the previous one is merged with it.  An empty, unaligned,
    /// out-of-order or overlapping range, or one beyond [`ADDR_LIMIT`], is
    /// [`Error::Inval`]; a full map is [`Error::NoMem`].  On an error
    /// nothing changes.
    pub fn add(&mut self, start: u64, end: u64) -> Result {
        if start >= end || (start | end) & (PAGE_SIZE - 1) != 0 || end > ADDR_LIMIT {
            return Err(Error::Inval);
        }
        if let Some(last) = self.n.checked_sub(1).and_then(|i| self.ranges.get_mut(i)) {
            if start < last.end {
                return Err(Error::Inval);
            }
            if start == last.end {
                // INVARIANT: still sorted and disjoint; merging keeps the
                // ranges non-adjacent.
                last.end = end;
                return Ok(());
            }
        }
        let slot = self.ranges.get_mut(self.n).ok_or(Error::NoMem)?;
        *slot = RamRange { start, end };
        // INVARIANT: `start` is past the previous range's end.
        self.n += 1;
        Ok(())
    }

    /// The ranges, in ascending order.
    pub fn ranges(&self) -> &[RamRange] {
        self.ranges.get(..self.n).unwrap_or_default()
    }

    /// Whether every byte of `[pa, pa + size)` is RAM.  An empty or
    /// overflowing range is not.
    pub fn contains(&self, pa: u64, size: u64) -> bool {
        let Some(end) = pa.checked_add(size) else {
            return false;
        };
        size != 0 && self.ranges().iter().any(|r| r.start <= pa && end <= r.end)
    }

    /// [`Error::Inval`] unless every byte of `[pa, pa + size)` is RAM.
    pub fn check(&self, pa: u64, size: u64) -> Result {
        if self.contains(pa, size) {
            Ok(())
        } else {
            Err(Error::Inval)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const K4: u64 = 4096;

    #[test]
    fn ranges_merge_and_contain_exactly_their_pages() {
        let mut m = RamMap::empty();
        assert!(!m.contains(0, K4), "empty map: nothing is RAM");
        m.add(0, 0x9f000).unwrap();
        m.add(0x10_0000, 0x20_0000).unwrap();
        m.add(0x20_0000, 0x30_0000).unwrap();
        assert_eq!(m.ranges().len(), 2, "adjacent ranges merge");
        assert!(m.contains(0, K4));
        assert!(m.contains(0x9e000, K4));
        assert!(!m.contains(0x9f000, K4), "first page past the range");
        assert!(!m.contains(0x9e000, 2 * K4), "straddles the end");
        assert!(m.contains(0x1f_f000, 2 * K4), "across a merged boundary");
        assert!(!m.contains(0xfee0_0000, K4), "the local APIC");
        assert!(!m.contains(0x2f_f000, 2 * K4));
        assert!(!m.contains(0x10_0000, 0), "empty range");
        assert!(!m.contains(u64::MAX - K4 + 1, K4), "overflow");
        assert_eq!(m.check(0xfec0_0000, K4), Err(Error::Inval));
        assert_eq!(m.check(0x10_0000, K4), Ok(()));
    }

    #[test]
    fn bad_ranges_are_refused_and_change_nothing() {
        let mut m = RamMap::empty();
        m.add(0x10_0000, 0x20_0000).unwrap();
        let before = m.clone();
        for (s, e) in [
            (0x30_0000, 0x30_0000),
            (0x30_0800, 0x40_0000),
            (0x30_0000, 0x40_0800),
            (0x1f_f000, 0x40_0000),
            (0, K4),
            (ADDR_LIMIT - K4, ADDR_LIMIT + K4),
        ] {
            assert_eq!(m.add(s, e), Err(Error::Inval), "{s:#x}..{e:#x}");
            assert_eq!(m, before);
        }
        let mut full = RamMap::empty();
        for i in 0..RAM_RANGES_MAX as u64 {
            full.add(2 * i * K4, (2 * i + 1) * K4).unwrap();
        }
        let before = full.clone();
        let last = 2 * RAM_RANGES_MAX as u64 * K4;
        assert_eq!(full.add(last, last + K4), Err(Error::NoMem));
        assert_eq!(full, before);
        assert!(RamMap::all().contains(0, ADDR_LIMIT));
    }
}
