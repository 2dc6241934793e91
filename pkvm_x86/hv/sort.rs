// SPDX-License-Identifier: GPL-2.0

//! A small sort for the pure core.
//!
//! The library's `sort_unstable` carries panic paths (index and ordering
//! checks) into the kernel's `core`, which code that may run in VMX root
//! mode must not call (scripts/audit-root-calls.py checks it).  The slices
//! the core sorts are short (a few hundred entries at most), so a
//! selection sort built on `split_first_mut`, with no indexing at all, is
//! enough.

/// Sorts `s` by `key`, ascending; quadratic, not stable, never panics.
pub fn sort_by_key<T, K: Ord>(s: &mut [T], key: impl Fn(&T) -> K) {
    let mut rest = s;
    while let Some((first, tail)) = rest.split_first_mut() {
        for x in tail.iter_mut() {
            if key(x) < key(first) {
                core::mem::swap(first, x);
            }
        }
        rest = tail;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hv::mm::pgtable::tests::Rng;
    extern crate std;

    #[test]
    fn sorts_like_the_library() {
        let mut rng = Rng(7);
        for len in [0usize, 1, 2, 3, 10, 100, 300] {
            let mut v: std::vec::Vec<u64> = (0..len).map(|_| rng.next() % 50).collect();
            let mut want = v.clone();
            want.sort_unstable();
            sort_by_key(&mut v, |x| *x);
            assert_eq!(v, want, "len {len}");
        }
    }

    #[test]
    fn by_key_on_structs() {
        let mut v = [(3u64, 'c'), (1, 'a'), (2, 'b'), (1, 'z')];
        sort_by_key(&mut v, |p| p.0);
        let keys: std::vec::Vec<u64> = v.iter().map(|p| p.0).collect();
        assert_eq!(keys, [1, 1, 2, 3]);
    }
}
