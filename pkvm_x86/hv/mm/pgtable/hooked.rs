// SPDX-License-Identifier: GPL-2.0

//! [`HookedMm`]: another [`MmOps`] with its invalidation hook replaced.
//!
//! Some tables need a different [`MmOps::invalidate`] than the allocator
//! they take their pages from: the shadow EPTs' invalidation is a
//! cross-CPU shootdown (`crate::hyp::global`), and the invalidations of a
//! retired shadow EPT, which no CPU can reach any more, are dropped
//! (`crate::hv::vmx::nested::shadow_ept`).  [`HookedMm`] forwards every
//! other operation to the wrapped [`MmOps`] unchanged and hands
//! `invalidate` to a closure that also gets the wrapped [`MmOps`] (to
//! forward what it does not handle itself).
//!
//! The closure is a type parameter, not a function pointer, so each use is
//! compiled to direct calls: root-mode code makes no indirect call
//! (scripts/audit-root-calls.py).

use super::{MmOps, Table};
use crate::hv::mm::addr::{Hpa, TableKind};

/// An [`MmOps`] that is `mm` for everything but [`MmOps::invalidate`],
/// which runs `hook(mm, kind, root, addr, size)` instead.
pub struct HookedMm<'a, M, F> {
    mm: &'a mut M,
    hook: F,
}

impl<'a, M, F> HookedMm<'a, M, F>
where
    M: MmOps,
    F: FnMut(&mut M, TableKind, Hpa, u64, u64),
{
    /// `mm` with `hook` as its invalidation.
    pub fn new(mm: &'a mut M, hook: F) -> Self {
        Self { mm, hook }
    }

    /// The wrapped `mm` itself (its own invalidation, not the hook's).
    pub fn inner(&mut self) -> &mut M {
        self.mm
    }
}

impl<M, F> MmOps for HookedMm<'_, M, F>
where
    M: MmOps,
    F: FnMut(&mut M, TableKind, Hpa, u64, u64),
{
    fn zalloc_page(&mut self) -> Option<Hpa> {
        self.mm.zalloc_page()
    }
    fn free_page(&mut self, pa: Hpa) {
        self.mm.free_page(pa)
    }
    fn free_unlinked(&mut self, pa: Hpa) {
        self.mm.free_unlinked(pa)
    }
    fn table(&self, pa: Hpa) -> Option<&Table> {
        self.mm.table(pa)
    }
    fn get_page(&mut self, pa: Hpa) {
        self.mm.get_page(pa)
    }
    fn put_page(&mut self, pa: Hpa) {
        self.mm.put_page(pa)
    }
    fn page_count(&self, pa: Hpa) -> u32 {
        self.mm.page_count(pa)
    }
    fn zero_page(&mut self, pa: Hpa) {
        self.mm.zero_page(pa)
    }
    fn invalidate(&mut self, kind: TableKind, root: Hpa, addr: u64, size: u64) {
        (self.hook)(self.mm, kind, root, addr, size)
    }
    fn stored(&mut self, table: Hpa, idx: usize, v: u64) {
        self.mm.stored(table, idx, v)
    }
}

#[cfg(test)]
mod tests {
    use std::vec::Vec;

    use super::*;
    use crate::hv::mm::addr::{lit, Gpa};
    use crate::hv::mm::ept::PageState;
    use crate::hv::mm::pgtable::{store, Attrs, EptFormat, PgTable, PERM_RWX};
    use crate::hv::mm::sim::{Arena, Event};

    /// Everything but `invalidate` reaches the wrapped arena: allocation,
    /// counts, table views, stores, zeroing, frees.
    #[test]
    fn forwards_all_but_invalidate() {
        let mut arena = Arena::new(8);
        arena.record();
        let mut hooked = 0u32;
        let data = lit::hpa(0x5000);
        let pa;
        {
            let mut mm = HookedMm::new(&mut arena, |_: &mut Arena, _, _, _, _| hooked += 1);
            pa = mm.zalloc_page().unwrap();
            assert!(mm.table(pa).is_some());
            mm.get_page(pa);
            mm.get_page(pa);
            mm.put_page(pa);
            assert_eq!(mm.page_count(pa), 1);
            store(&mm.table(pa).unwrap()[3], 0x1007);
            mm.stored(pa, 3, 0x1007);
            mm.zero_page(data);
            mm.invalidate(TableKind::GuestEpt, pa, 0, 4096);
            store(&mm.table(pa).unwrap()[3], 0);
            mm.put_page(pa);
            mm.free_page(pa);
            let pb = mm.zalloc_page().unwrap();
            mm.free_unlinked(pb);
        }
        assert_eq!(hooked, 1);
        assert_eq!(arena.allocs, 2);
        assert_eq!(arena.frees, 2);
        assert_eq!(arena.live(), 0);
        assert_eq!(arena.invalidations, 0, "the hook replaced the arena's");
        assert!(arena.errors.is_empty(), "{:?}", arena.errors);
        assert_eq!(
            arena.take_log(),
            [
                Event::Store {
                    table: pa,
                    idx: 3,
                    v: 0x1007
                },
                Event::Zero { pa: data },
            ]
        );
    }

    /// Maps two pages, moves one (break-before-make) and unmaps the other
    /// (access taken away): the engine's invalidations.
    fn churn<M: MmOps>(mm: &mut M) -> Hpa {
        let mut t = PgTable::<EptFormat, Gpa>::new(mm, 1).unwrap();
        let root = t.root();
        let a = Attrs::wb(PERM_RWX, PageState::Owned);
        t.map(mm, lit::gpa(0), 0x2000, lit::hpa(0x10000), a)
            .unwrap();
        t.map(mm, lit::gpa(0x1000), 0x1000, lit::hpa(0x30000), a)
            .unwrap();
        t.unmap(mm, lit::gpa(0), 0x1000).unwrap();
        t.destroy(mm).unwrap();
        root
    }

    /// The hook sees exactly the invalidations the engine asks for, with
    /// the wrapped `MmOps`, and can pass some on to it.
    #[test]
    fn hook_sees_engine_invalidations_and_can_forward() {
        let mut plain = Arena::new(16);
        plain.record();
        let plain_root = churn(&mut plain);
        let want: Vec<_> = plain
            .take_log()
            .into_iter()
            .filter_map(|e| match e {
                Event::Invalidate {
                    kind,
                    root,
                    addr,
                    size,
                } => Some((kind, root, addr, size)),
                _ => None,
            })
            .collect();
        assert!(
            want.iter().any(|w| w.2 == 0) && want.iter().any(|w| w.2 != 0),
            "{want:?}"
        );

        let mut arena = Arena::new(16);
        let mut seen = Vec::new();
        let root = {
            let mut mm = HookedMm::new(&mut arena, |mm: &mut Arena, kind, r, addr, size| {
                seen.push((kind, r, addr, size));
                if addr != 0 {
                    mm.invalidate(kind, r, addr, size);
                }
            });
            churn(&mut mm)
        };
        assert_eq!(root, plain_root, "same allocations");
        assert_eq!(seen, want);
        let passed = want.iter().filter(|w| w.2 != 0).count();
        assert_eq!(arena.invalidations, passed as u64);
        assert_eq!(arena.live(), 0);
        assert!(arena.errors.is_empty(), "{:?}", arena.errors);
    }
}
