// SPDX-License-Identifier: GPL-2.0

//! The pool's chunk lookup: which chunk (by its number in the allocator,
//! `crate::hyp::mm::HypMm`) holds a physical address.  The allocator asks
//! on every use-count change (`get_page` / `put_page`, each table entry
//! the page-table engine installs or clears), and the pool grows at run
//! time to up to [`MAX_CHUNKS`] chunks (Documentation/shadow-ept.rst,
//! "Memory"), so the lookup is a binary search over the chunks sorted by
//! address, not a scan in the order they came.
//!
//! Chunks are 2 MiB, 2 MiB aligned, and never removed while the pool
//! lives.  Each entry packs the chunk's base address with its number in
//! the low bits (which an aligned base leaves free): 4 KiB for 512 chunks.
//! All-zero bytes are the empty index.

/// Most chunks (2 MiB each: 1 GiB).
pub const MAX_CHUNKS: usize = 512;
/// Bytes in a chunk.
pub const CHUNK_BYTES: u64 = 2 << 20;

/// Bits of an entry holding the chunk number (below the aligned base).
const NUM_MASK: u64 = CHUNK_BYTES - 1;

/// Why a chunk was not added.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddError {
    /// Not 2 MiB aligned, or 0.
    Unaligned,
    /// [`MAX_CHUNKS`] already.
    Full,
    /// The chunk (or its number) is in the index already.
    Duplicate,
}

/// Chunks sorted by base address.
#[derive(Clone, Debug)]
#[repr(C)]
pub struct ChunkIndex {
    /// `base | number`, sorted by base; the first `len` are used.
    sorted: [u64; MAX_CHUNKS],
    len: usize,
}

impl Default for ChunkIndex {
    fn default() -> Self {
        Self::new()
    }
}

impl ChunkIndex {
    /// The empty index.
    pub const fn new() -> Self {
        ChunkIndex {
            sorted: [0; MAX_CHUNKS],
            len: 0,
        }
    }

    /// Chunks in the index.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the index is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn used(&self) -> &[u64] {
        self.sorted.get(..self.len).unwrap_or(&[])
    }

    /// Adds chunk number `num` at `base`.
    pub fn insert(&mut self, base: u64, num: usize) -> Result<(), AddError> {
        if base == 0 || base & NUM_MASK != 0 {
            return Err(AddError::Unaligned);
        }
        if self.len >= MAX_CHUNKS || num >= MAX_CHUNKS {
            return Err(AddError::Full);
        }
        let used = self.used();
        if used.iter().any(|&e| e & NUM_MASK == num as u64) {
            return Err(AddError::Duplicate);
        }
        let at = match used.binary_search_by(|&e| (e & !NUM_MASK).cmp(&base)) {
            Ok(_) => return Err(AddError::Duplicate),
            Err(at) => at,
        };
        // Shift the tail up by one (the array has room: len < MAX_CHUNKS).
        let mut i = self.len;
        while i > at {
            let prev = self.sorted.get(i - 1).copied().unwrap_or(0);
            if let Some(slot) = self.sorted.get_mut(i) {
                *slot = prev;
            }
            i -= 1;
        }
        if let Some(slot) = self.sorted.get_mut(at) {
            *slot = base | num as u64;
        }
        self.len += 1;
        Ok(())
    }

    /// The number of the chunk holding `pa`, and `pa`'s page in it.
    pub fn find(&self, pa: u64) -> Option<(usize, usize)> {
        let base = pa & !NUM_MASK;
        let used = self.used();
        let at = used
            .binary_search_by(|&e| (e & !NUM_MASK).cmp(&base))
            .ok()?;
        let e = used.get(at)?;
        Some(((e & NUM_MASK) as usize, ((pa & NUM_MASK) >> 12) as usize))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const M2: u64 = CHUNK_BYTES;

    #[test]
    fn finds_chunks_inserted_in_any_order() {
        let mut ix = ChunkIndex::new();
        assert!(ix.is_empty());
        assert_eq!(ix.find(0x1000), None);
        // Out of order: 5, 1, 9, 3 (times 2 MiB), numbered 0..4.
        for (num, b) in [5u64, 1, 9, 3].iter().enumerate() {
            ix.insert(b * M2, num).unwrap();
        }
        assert_eq!(ix.len(), 4);
        assert_eq!(ix.find(5 * M2), Some((0, 0)));
        assert_eq!(ix.find(M2 + 0x3000), Some((1, 3)));
        assert_eq!(ix.find(9 * M2 + M2 - 1), Some((2, 511)));
        assert_eq!(ix.find(3 * M2 + 0x1ff_000), Some((3, 511)));
        // Holes between them, and beyond either end.
        for pa in [
            0,
            2 * M2,
            4 * M2 + 5,
            6 * M2,
            8 * M2 + M2 - 1,
            10 * M2,
            u64::MAX,
        ] {
            assert_eq!(ix.find(pa), None, "{pa:#x}");
        }
    }

    #[test]
    fn refuses_malformed_chunks_and_changes_nothing() {
        let mut ix = ChunkIndex::new();
        ix.insert(4 * M2, 0).unwrap();
        let before = ix.clone();
        assert_eq!(ix.insert(0, 1), Err(AddError::Unaligned));
        assert_eq!(ix.insert(M2 + 0x1000, 1), Err(AddError::Unaligned));
        assert_eq!(ix.insert(4 * M2, 1), Err(AddError::Duplicate));
        assert_eq!(ix.insert(6 * M2, 0), Err(AddError::Duplicate));
        assert_eq!(ix.insert(6 * M2, MAX_CHUNKS), Err(AddError::Full));
        assert_eq!(ix.used(), before.used());
    }

    #[test]
    fn fills_to_max_then_refuses() {
        let mut ix = ChunkIndex::new();
        // Descending addresses: every insert shifts the whole array.
        for n in 0..MAX_CHUNKS {
            ix.insert((MAX_CHUNKS - n) as u64 * M2, n).unwrap();
        }
        assert_eq!(ix.insert(10_000 * M2, 7), Err(AddError::Full));
        for n in 0..MAX_CHUNKS {
            let base = (MAX_CHUNKS - n) as u64 * M2;
            assert_eq!(ix.find(base + 0x5000), Some((n, 5)));
        }
        assert!(ix.used().windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn all_zero_is_empty() {
        // SAFETY: plain integers: all-zero bytes are a valid value.
        let ix: ChunkIndex = unsafe { core::mem::zeroed() };
        assert!(ix.is_empty());
        assert_eq!(ix.find(0), None);
    }
}
