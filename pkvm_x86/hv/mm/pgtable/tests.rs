// SPDX-License-Identifier: GPL-2.0

//! Tests of the page-table engine against the simulated memory.

use std::collections::BTreeMap;
use std::vec::Vec;

use super::*;
use crate::hv::mm::addr::lit;
use crate::hv::mm::addr::Gpa;
use crate::hv::mm::ept::MemType;
use crate::hv::mm::sim::Arena;

const K4: u64 = 4096;
const M2: u64 = 2 << 20;
const G1: u64 = 1 << 30;

fn rwx(state: PageState) -> Attrs {
    Attrs::wb(PERM_RWX, state)
}

/// Every non-zero leaf as (lo, hi, level, entry).
fn dump<F: PteFormat, A: InputAddr>(
    t: &PgTable<F, A>,
    mm: &mut Arena,
) -> Vec<(u64, u64, u32, u64)> {
    let mut v = Vec::new();
    t.for_each_leaf(mm, A::from_table_bits(0), ADDR_LIMIT, |_, ctx, e| {
        if e != 0 {
            v.push((ctx.lo(), ctx.hi(), ctx.level, e));
        }
        Ok(())
    })
    .unwrap();
    v
}

/// What one 4 KiB page translates to, format-neutral.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Page {
    Mapped(u64, Attrs),
    Raw(u64),
}

fn page_of<F: PteFormat, A: InputAddr>(t: &PgTable<F, A>, mm: &mut Arena, addr: u64) -> Page {
    let l = t.lookup(mm, A::from_table_bits(addr)).unwrap();
    if F::is_present(l.entry) {
        let base = addr & !(level_size(l.level) - 1);
        Page::Mapped(F::addr(l.entry).raw() + (addr - base), F::attrs(l.entry))
    } else {
        Page::Raw(l.entry)
    }
}

fn leaves_at(d: &[(u64, u64, u32, u64)], level: u32) -> usize {
    d.iter().filter(|x| x.2 == level).count()
}

#[test]
fn aligned_gigabyte_is_one_leaf() {
    let mut mm = Arena::new(64);
    let mut t = PgTable::<EptFormat, Gpa>::new(&mut mm, 3).unwrap();
    t.map(
        &mut mm,
        lit::gpa(G1),
        G1,
        lit::hpa(G1),
        rwx(PageState::Owned),
    )
    .unwrap();
    let d = dump(&t, &mut mm);
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].2, 3);
    assert_eq!(t.table_pages(&mut mm).unwrap(), 2, "PML4 + PDPT");
    // Without 1 GiB pages: 512 2 MiB leaves in one PD.
    let mut t2 = PgTable::<EptFormat, Gpa>::new(&mut mm, 2).unwrap();
    t2.map(
        &mut mm,
        lit::gpa(G1),
        G1,
        lit::hpa(G1),
        rwx(PageState::Owned),
    )
    .unwrap();
    let d = dump(&t2, &mut mm);
    assert_eq!(leaves_at(&d, 2), 512);
    assert_eq!(t2.table_pages(&mut mm).unwrap(), 3);
    t.destroy(&mut mm).unwrap();
    t2.destroy(&mut mm).unwrap();
    assert_eq!(mm.live(), 0);
    assert!(mm.errors.is_empty(), "{:?}", mm.errors);
}

#[test]
fn unaligned_ranges_use_the_largest_pages_that_fit() {
    let mut mm = Arena::new(64);
    let mut t = PgTable::<EptFormat, Gpa>::new(&mut mm, 3).unwrap();
    // [1 GiB - 4 KiB, 2 GiB + 2 MiB + 4 KiB): 4K, 1G, 2M, 4K.
    let start = G1 - K4;
    let size = K4 + G1 + M2 + K4;
    t.map(
        &mut mm,
        lit::gpa(start),
        size,
        lit::hpa(start),
        rwx(PageState::Owned),
    )
    .unwrap();
    let d = dump(&t, &mut mm);
    assert_eq!(
        (leaves_at(&d, 1), leaves_at(&d, 2), leaves_at(&d, 3)),
        (2, 1, 1)
    );
    // A mapping whose pa is not aligned like its address cannot use large
    // pages at all.
    let mut g = PgTable::<EptFormat, Gpa>::new(&mut mm, 3).unwrap();
    g.map(
        &mut mm,
        lit::gpa(0),
        M2,
        lit::hpa(K4 * 3),
        rwx(PageState::Owned),
    )
    .unwrap();
    let d = dump(&g, &mut mm);
    assert_eq!(leaves_at(&d, 1), 512);
    assert_eq!(
        page_of(&g, &mut mm, K4 * 5),
        Page::Mapped(K4 * 8, rwx(PageState::Owned))
    );
    t.destroy(&mut mm).unwrap();
    g.destroy(&mut mm).unwrap();
    assert_eq!(mm.live(), 0);
    assert!(mm.errors.is_empty(), "{:?}", mm.errors);
}

#[test]
fn changing_one_page_splits_down_and_keeps_the_rest() {
    let mut mm = Arena::new(64);
    let mut t = PgTable::<EptFormat, Gpa>::new(&mut mm, 3).unwrap();
    let a = rwx(PageState::Owned);
    t.map(&mut mm, lit::gpa(0), G1, lit::hpa(0), a).unwrap();
    let victim = 5 * M2 + 7 * K4;
    let need = t
        .pages_needed(
            &mut mm,
            lit::gpa(victim),
            K4,
            Fill::State(PageState::SharedOwned),
        )
        .unwrap();
    assert_eq!(need, 2, "a PD and a PT");
    let before = mm.allocs;
    t.set_state(&mut mm, lit::gpa(victim), K4, PageState::SharedOwned)
        .unwrap();
    assert_eq!(mm.allocs - before, 2);
    let d = dump(&t, &mut mm);
    assert_eq!((leaves_at(&d, 1), leaves_at(&d, 2)), (512, 511));
    for addr in [0, victim - K4, victim, victim + K4, G1 - K4, 5 * M2, 6 * M2] {
        let want = if addr == victim {
            rwx(PageState::SharedOwned)
        } else {
            a
        };
        assert_eq!(page_of(&t, &mut mm, addr), Page::Mapped(addr, want));
    }
    // Same state again: no allocation, no split.
    let before = mm.allocs;
    t.set_state(&mut mm, lit::gpa(6 * M2 + K4), K4, PageState::Owned)
        .unwrap();
    t.map(
        &mut mm,
        lit::gpa(100 * M2 + K4),
        K4,
        lit::hpa(100 * M2 + K4),
        a,
    )
    .unwrap();
    assert_eq!(mm.allocs, before, "no needless split");
    // Mapping the whole 1 GiB again frees both tables.
    t.map(&mut mm, lit::gpa(0), G1, lit::hpa(0), a).unwrap();
    assert_eq!(t.table_pages(&mut mm).unwrap(), 2);
    t.destroy(&mut mm).unwrap();
    assert_eq!(mm.live(), 0);
    assert!(mm.errors.is_empty(), "{:?}", mm.errors);
}

#[test]
fn annotations_live_at_any_level_and_split_like_leaves() {
    let mut mm = Arena::new(64);
    let mut t = PgTable::<EptFormat, Gpa>::new(&mut mm, 3).unwrap();
    let g = OwnerId::new(0x1005).unwrap();
    t.annotate(&mut mm, lit::gpa(0), 1 << 39, g).unwrap();
    assert_eq!(t.table_pages(&mut mm).unwrap(), 1, "one PML4 entry");
    assert_eq!(t.lookup(&mut mm, lit::gpa(123 * G1)).unwrap().level, 4);
    t.map(
        &mut mm,
        lit::gpa(3 * G1 + M2),
        K4,
        lit::hpa(3 * G1 + M2),
        rwx(PageState::SharedBorrowed),
    )
    .unwrap();
    assert_eq!(
        page_of(&t, &mut mm, 3 * G1 + M2 + K4),
        Page::Raw(EptFormat::annotation(g))
    );
    assert_eq!(t.table_pages(&mut mm).unwrap(), 4);
    // Annotating with the same owner changes nothing.
    let before = mm.allocs;
    t.annotate(&mut mm, lit::gpa(7 * G1), M2, g).unwrap();
    assert_eq!(mm.allocs, before);
    t.annotate(&mut mm, lit::gpa(0), 1 << 39, OwnerId::HYP)
        .unwrap();
    assert_eq!(t.table_pages(&mut mm).unwrap(), 1);
    assert!(dump(&t, &mut mm).is_empty());
    t.destroy(&mut mm).unwrap();
    assert_eq!(mm.live(), 0);
    assert!(mm.errors.is_empty(), "{:?}", mm.errors);
}

#[test]
fn empty_tables_are_freed() {
    let mut mm = Arena::new(64);
    let mut t = PgTable::<EptFormat, Gpa>::new(&mut mm, 2).unwrap();
    t.map(
        &mut mm,
        lit::gpa(5 * G1 + K4),
        3 * K4,
        lit::hpa(0x1000),
        rwx(PageState::Owned),
    )
    .unwrap();
    assert_eq!(t.table_pages(&mut mm).unwrap(), 4);
    t.unmap(&mut mm, lit::gpa(5 * G1 + 2 * K4), K4).unwrap();
    assert_eq!(t.table_pages(&mut mm).unwrap(), 4);
    t.unmap(&mut mm, lit::gpa(5 * G1), 4 * K4).unwrap();
    assert_eq!(t.table_pages(&mut mm).unwrap(), 1);
    assert_eq!(mm.live(), 1);
    t.destroy(&mut mm).unwrap();
    assert!(mm.errors.is_empty(), "{:?}", mm.errors);
}

#[test]
fn bad_ranges_are_einval() {
    let mut mm = Arena::new(16);
    let mut t = PgTable::<EptFormat, Gpa>::new(&mut mm, 3).unwrap();
    let a = rwx(PageState::Owned);
    for (addr, size) in [
        (0, 0),
        (1, K4),
        (0, K4 + 1),
        (ADDR_LIMIT - K4, 2 * K4),
        (ADDR_LIMIT, K4),
        (!(K4 - 1), K4),
        (K4, !(K4 - 1)),
    ] {
        // An address no table can translate cannot even be a `Gpa`.
        let Some(addr) = Gpa::new(addr) else {
            assert!(addr >= PA_LIMIT);
            continue;
        };
        assert_eq!(
            t.map(&mut mm, addr, size, lit::hpa(0), a),
            Err(Error::Inval)
        );
        assert_eq!(t.unmap(&mut mm, addr, size), Err(Error::Inval));
        assert_eq!(
            t.annotate(&mut mm, addr, size, OwnerId::HOST),
            Err(Error::Inval)
        );
    }
    assert_eq!(
        t.map(&mut mm, lit::gpa(0), K4, lit::hpa(12), a),
        Err(Error::Inval)
    );
    assert_eq!(Hpa::new(PA_LIMIT), None);
    let top = lit::hpa(PA_LIMIT - K4);
    assert_eq!(
        t.map(&mut mm, lit::gpa(0), 2 * K4, top, a),
        Err(Error::Inval)
    );
    let bad = Attrs { perms: 8, ..a };
    assert_eq!(
        t.map(&mut mm, lit::gpa(0), K4, lit::hpa(0), bad),
        Err(Error::Inval)
    );
    assert_eq!(
        t.set(&mut mm, lit::gpa(0), K4, Fill::Set(7)),
        Err(Error::Inval)
    );
    assert_eq!(t.table_pages(&mut mm).unwrap(), 1);
    t.destroy(&mut mm).unwrap();
    assert!(mm.errors.is_empty(), "{:?}", mm.errors);
}

/// One modification under allocation failure at every possible point: the
/// table is either untouched (and nothing leaked) or fully changed.
#[test]
fn allocation_failure_at_every_point_is_all_or_nothing() {
    let a = rwx(PageState::Owned);
    let ops: [(u64, u64, Fill); 4] = [
        (G1 - 3 * K4, 2 * M2, Fill::State(PageState::SharedOwned)),
        (
            G1 - 3 * K4,
            G1 + M2,
            Fill::Set(EptFormat::annotation(OwnerId::new(9).unwrap())),
        ),
        (
            M2 + K4,
            M2,
            Fill::Map {
                pa: lit::hpa(0x7000),
                attrs: a,
            },
        ),
        (5 * K4, K4, Fill::Set(0)),
    ];
    for (addr, size, fill) in ops {
        let mut n = 1;
        loop {
            let mut mm = Arena::new(256);
            let mut t = PgTable::<EptFormat, Gpa>::new(&mut mm, 3).unwrap();
            t.map(&mut mm, lit::gpa(0), 4 * G1, lit::hpa(0), a).unwrap();
            t.set_state(&mut mm, lit::gpa(G1), K4, PageState::SharedBorrowed)
                .unwrap();
            let before = dump(&t, &mut mm);
            let live = mm.live();
            mm.fail_nth(Some(n));
            let r = t.set(&mut mm, lit::gpa(addr), size, fill);
            let injected = mm.failed_allocs > 0;
            mm.fail_nth(None);
            if injected {
                assert_eq!(r, Err(Error::NoMem));
                assert_eq!(dump(&t, &mut mm), before, "changed under ENOMEM");
                assert_eq!(mm.live(), live, "leaked under ENOMEM");
            } else {
                r.unwrap();
                let mut probe = addr;
                while probe < addr + size {
                    let l = t.lookup(&mut mm, lit::gpa(probe)).unwrap();
                    match fill {
                        Fill::State(s) => assert_eq!(EptFormat::state(l.entry), s),
                        Fill::Set(v) => assert_eq!(l.entry, v),
                        Fill::Map { pa, .. } => {
                            assert_eq!(
                                page_of(&t, &mut mm, probe),
                                Page::Mapped(pa.raw() + probe - addr, a)
                            )
                        }
                    }
                    probe += K4 * 61;
                }
            }
            t.destroy(&mut mm).unwrap();
            assert_eq!(mm.live(), 0);
            assert!(mm.errors.is_empty(), "{:?}", mm.errors);
            if !injected {
                break;
            }
            n += 1;
        }
        assert!(n > 1, "the operation must allocate at least once");
    }
}

/// Deterministic SplitMix64.
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Random modifications of a window straddling 2 MiB and 1 GiB boundaries,
/// against a page-by-page model; the number of pages allocated always equals
/// `pages_needed`, and the table never holds more pages than needed.
#[test]
fn random_modifications_match_a_page_model() {
    for fmt_hyp in [false, true] {
        let mut rng = Rng(0x5eed + u64::from(fmt_hyp));
        let mut mm = Arena::new(4096);
        let mut t = PgTable::<EptFormat, Gpa>::new(&mut mm, 3).unwrap();
        let mut h = PgTable::<HypFormat, Gpa>::new(&mut mm, 3).unwrap();
        // Window: 8 MiB on each side of 1 GiB, in pages.
        let wbase = G1 - 4 * M2;
        let wpages = 8 * M2 / K4;
        let mut model: BTreeMap<u64, Page> = BTreeMap::new();
        for i in 0..wpages {
            model.insert(wbase + i * K4, Page::Raw(0));
        }
        for step in 0..400 {
            let first = rng.below(wpages);
            let len = match rng.below(4) {
                0 => 1,
                1 => 1 + rng.below(8),
                2 => 512,
                _ => 1 + rng.below(wpages - first),
            }
            .min(wpages - first);
            let addr = wbase + first * K4;
            let size = len * K4;
            let state = PageState::ALL[rng.below(4) as usize];
            let fill = match rng.below(4) {
                0 => Fill::Set(0),
                1 => Fill::Set(EptFormat::annotation(
                    OwnerId::new(2 + rng.below(3) as u32).unwrap(),
                )),
                2 => Fill::State(state),
                _ => {
                    let pa = if rng.below(2) == 0 {
                        addr
                    } else {
                        addr + K4 * rng.below(4)
                    };
                    let perms = [PERM_R, PERM_R | PERM_W, PERM_RWX][rng.below(3) as usize];
                    Fill::Map {
                        pa: lit::hpa(pa),
                        attrs: Attrs::wb(perms, state),
                    }
                }
            };
            let before = mm.allocs;
            let need = if fmt_hyp {
                let need = h.pages_needed(&mut mm, lit::gpa(addr), size, fill).unwrap();
                h.set(&mut mm, lit::gpa(addr), size, fill).unwrap();
                need
            } else {
                let need = t.pages_needed(&mut mm, lit::gpa(addr), size, fill).unwrap();
                t.set(&mut mm, lit::gpa(addr), size, fill).unwrap();
                need
            };
            assert_eq!(
                mm.allocs - before,
                need as u64,
                "step {step}: count is exact"
            );
            for i in 0..len {
                let a = addr + i * K4;
                let p = model.get_mut(&a).unwrap();
                *p = match fill {
                    Fill::Set(v) => Page::Raw(v),
                    Fill::Map { pa, attrs } => Page::Mapped(pa.raw() + i * K4, attrs),
                    Fill::State(s) => match *p {
                        Page::Mapped(pa, at) => Page::Mapped(pa, Attrs { state: s, ..at }),
                        raw => raw,
                    },
                };
            }
            if step % 20 == 0 || step > 390 {
                for (&a, &p) in &model {
                    let got = if fmt_hyp {
                        page_of(&h, &mut mm, a)
                    } else {
                        page_of(&t, &mut mm, a)
                    };
                    assert_eq!(got, p, "step {step} page {a:#x}");
                }
            }
        }
        // Clearing the window frees every table.
        t.unmap(&mut mm, lit::gpa(wbase), wpages * K4).unwrap();
        h.unmap(&mut mm, lit::gpa(wbase), wpages * K4).unwrap();
        assert_eq!(t.table_pages(&mut mm).unwrap(), 1);
        assert_eq!(h.table_pages(&mut mm).unwrap(), 1);
        t.destroy(&mut mm).unwrap();
        h.destroy(&mut mm).unwrap();
        assert_eq!(mm.live(), 0);
        assert!(mm.errors.is_empty(), "{:?}", mm.errors);
    }
}

#[test]
fn page_cache_threads_through_pages() {
    let mut mm = Arena::new(8);
    let mut c = PageCache::new();
    c.topup(&mut mm, 5).unwrap();
    assert_eq!(c.len(), 5);
    mm.fail_nth(Some(2));
    assert_eq!(c.topup(&mut mm, 9), Err(Error::NoMem));
    assert_eq!(c.len(), 5, "a failed top-up gives back what it took");
    assert_eq!(mm.live(), 5);
    let p = c.pop(&mut mm).unwrap();
    assert!(mm.table(p).unwrap().iter().all(|e| load(e) == 0));
    mm.free_page(p);
    c.release(&mut mm);
    assert!(c.is_empty());
    assert_eq!(mm.live(), 0);
    assert!(mm.errors.is_empty(), "{:?}", mm.errors);
}

#[test]
fn memtype_is_kept_through_splits() {
    let mut mm = Arena::new(16);
    let mut t = PgTable::<EptFormat, Gpa>::new(&mut mm, 2).unwrap();
    let uc = Attrs {
        perms: PERM_R | PERM_W,
        memtype: MemType::Uc,
        state: PageState::Owned,
        ipat: false,
    };
    t.map(&mut mm, lit::gpa(0), M2, lit::hpa(0), uc).unwrap();
    t.set_state(&mut mm, lit::gpa(K4), K4, PageState::SharedOwned)
        .unwrap();
    assert_eq!(page_of(&t, &mut mm, 2 * K4), Page::Mapped(2 * K4, uc));
    t.destroy(&mut mm).unwrap();
    assert!(mm.errors.is_empty(), "{:?}", mm.errors);
}
