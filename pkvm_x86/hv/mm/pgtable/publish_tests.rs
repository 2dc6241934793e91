// SPDX-License-Identifier: GPL-2.0

//! Tests of the publication rules (see "Publication" in the engine's
//! docs): the arena records every entry store and every call of the
//! invalidation hook, and [`replay`] checks the sequence against the rules
//! a CPU walking the live table needs:
//!
//! * a present entry never changes its translation (page size, address,
//!   memory type) in one store: present -> non-present -> invalidate -> new;
//! * a table pointer is stored only when the table below it is complete
//!   (for a split: the 512 entries equivalent to the leaf it replaces);
//! * a table that is unlinked is not written (emptied, freed) before an
//!   invalidation;
//! * a present leaf that loses access (made non-present, or left with
//!   fewer permissions) is invalidated before the operation returns (the
//!   end of the log).

use std::collections::{HashMap, HashSet};
use std::format;
use std::string::String;
use std::vec::Vec;

use super::tests::Rng;
use super::*;
use crate::hv::mm::addr::{lit, Gpa};
use crate::hv::mm::ept::MemType;
use crate::hv::mm::sim::{Arena, Event};

const K4: u64 = 4096;
const M2: u64 = 2 << 20;
const G1: u64 = 1 << 30;

type Mem = HashMap<Hpa, [u64; 512]>;

/// Marks every table reachable from `table` (at `level`) as linked.
fn link<F: PteFormat>(mem: &Mem, levels: &mut HashMap<Hpa, u32>, table: Hpa, level: u32) {
    levels.insert(table, level);
    if level == 1 {
        return;
    }
    if let Some(t) = mem.get(&table) {
        for &e in t.iter() {
            if F::is_table(e, level) {
                link::<F>(mem, levels, F::addr(e), level - 1);
            }
        }
    }
}

/// Forgets `table` and everything below it; returns them.
fn unlink<F: PteFormat>(mem: &Mem, levels: &mut HashMap<Hpa, u32>, table: Hpa) -> Vec<Hpa> {
    let Some(level) = levels.remove(&table) else {
        return Vec::new();
    };
    let mut gone = std::vec![table];
    if let Some(t) = mem.get(&table) {
        for &e in t.iter() {
            if level > 1 && F::is_table(e, level) {
                gone.extend(unlink::<F>(mem, levels, F::addr(e)));
            }
        }
    }
    gone
}

/// Replays `log` on `before` (the memory before the operation, table rooted
/// at `root`); the first broken rule as text.
fn replay<F: PteFormat>(
    before: &Mem,
    root: Hpa,
    log: &[Event],
) -> core::result::Result<(), String> {
    let mut mem = before.clone();
    let mut levels = HashMap::new();
    link::<F>(&mem, &mut levels, root, LEVELS);
    // Slots made non-present, with the present value they had, and whether
    // an invalidation came since.
    let mut broken: HashMap<(Hpa, usize), (u64, bool)> = HashMap::new();
    // Tables unlinked and not yet invalidated.
    let mut stale: HashSet<Hpa> = HashSet::new();
    // Leaves that lost access and have not been invalidated since.
    let mut lost: HashMap<(Hpa, usize), usize> = HashMap::new();
    for (n, ev) in log.iter().enumerate() {
        let (table, idx, v) = match *ev {
            Event::Invalidate { .. } => {
                for b in broken.values_mut() {
                    b.1 = true;
                }
                stale.clear();
                lost.clear();
                continue;
            }
            Event::Zero { .. } => continue,
            Event::Store { table, idx, v } => (table, idx, v),
        };
        if stale.contains(&table) {
            return Err(format!(
                "#{n}: store into {table:?}, unlinked but not invalidated"
            ));
        }
        let old = mem.entry(table).or_insert([0; 512])[idx];
        if let Some(&level) = levels.get(&table) {
            if F::is_present(old) && F::is_present(v) && F::changes_translation(old, v, level) {
                return Err(format!(
                    "#{n}: {table:?}[{idx}] {old:#x} -> {v:#x} in one store (level {level})"
                ));
            }
            if F::is_present(old) && !F::is_present(v) {
                broken.insert((table, idx), (old, false));
            }
            if F::loses_access(old, v, level) {
                lost.entry((table, idx)).or_insert(n);
            }
            let mut prev = old;
            if F::is_present(v) {
                if let Some((p, inval)) = broken.remove(&(table, idx)) {
                    if F::changes_translation(p, v, level) && !inval {
                        return Err(format!(
                            "#{n}: {table:?}[{idx}] {p:#x} -> 0 -> {v:#x} without invalidation"
                        ));
                    }
                    prev = p;
                }
            }
            if F::is_table(old, level) && !(F::is_table(v, level) && F::addr(v) == F::addr(old)) {
                stale.extend(unlink::<F>(&mem, &mut levels, F::addr(old)));
            }
            if F::is_table(v, level) && !levels.contains_key(&F::addr(v)) {
                let child = F::addr(v);
                let t = mem.get(&child).copied().unwrap_or([0; 512]);
                for (k, &c) in t.iter().enumerate() {
                    let want = F::split_child(prev, level, k as u64);
                    if c != want {
                        return Err(format!(
                            "#{n}: {table:?}[{idx}] points to {child:?} whose entry {k} is \
                             {c:#x}, not yet {want:#x}"
                        ));
                    }
                }
                link::<F>(&mem, &mut levels, child, level - 1);
            }
        }
        if let Some(t) = mem.get_mut(&table) {
            t[idx] = v;
        }
    }
    if let Some(((table, idx), n)) = lost.into_iter().min_by_key(|&(_, n)| n) {
        return Err(format!(
            "#{n}: {table:?}[{idx}] lost access and was never invalidated"
        ));
    }
    Ok(())
}

/// Runs `op` on `t` recording, replays the log; returns the number of
/// invalidations.
fn checked<F: PteFormat, A: InputAddr>(
    t: &mut PgTable<F, A>,
    mm: &mut Arena,
    op: impl FnOnce(&mut PgTable<F, A>, &mut Arena) -> Result,
) -> usize {
    let before = mm.snapshot();
    mm.record();
    op(t, mm).unwrap();
    let log = mm.take_log();
    if let Err(e) = replay::<F>(&before, t.root(), &log) {
        panic!("{} table: {e}\nlog: {log:#x?}", F::NAME);
    }
    assert!(mm.errors.is_empty(), "{:?}", mm.errors);
    log.iter()
        .filter(|e| matches!(e, Event::Invalidate { .. }))
        .count()
}

fn split_merge_memtype<F: PteFormat>() {
    let mut mm = Arena::new(64);
    let mut t = PgTable::<F, Hpa>::new(&mut mm, 3).unwrap();
    let a = Attrs::wb(PERM_RWX, PageState::Owned);
    // Mapping into empty entries needs no invalidation.
    let n = checked(&mut t, &mut mm, |t, mm| {
        t.map(mm, Hpa::ZERO, G1, Hpa::ZERO, a)
    });
    assert_eq!(n, 0);
    // One 4 KiB page changes: the 1 GiB leaf and then the new 2 MiB leaf
    // are split in place, each break-before-make.
    let v = lit::hpa(5 * M2 + 7 * K4);
    let n = checked(&mut t, &mut mm, |t, mm| {
        t.set_state(mm, v, K4, PageState::SharedOwned)
    });
    assert_eq!(n, 2, "{}: split 1G and 2M", F::NAME);
    assert_eq!(t.lookup(&mut mm, v).unwrap().level, 1);
    // A page-state change of a present leaf is not a translation change.
    let n = checked(&mut t, &mut mm, |t, mm| {
        t.set_state(mm, lit::hpa(7 * M2), M2, PageState::SharedOwned)
    });
    assert_eq!(n, 0);
    // A new memory type over a 2 MiB leaf: break-before-make.
    let uc = Attrs {
        memtype: MemType::Uc,
        ..a
    };
    let n = checked(&mut t, &mut mm, |t, mm| {
        t.map(mm, lit::hpa(9 * M2), M2, lit::hpa(9 * M2), uc)
    });
    assert_eq!(n, 1);
    // A new address for a 2 MiB leaf: break-before-make.
    let n = checked(&mut t, &mut mm, |t, mm| {
        t.map(mm, lit::hpa(11 * M2), M2, lit::hpa(G1), a)
    });
    assert_eq!(n, 1);
    // Merging the whole gigabyte back into one leaf replaces a table that
    // is live: unlink, invalidate, free, then the leaf.
    let live = mm.live();
    let n = checked(&mut t, &mut mm, |t, mm| {
        t.map(mm, Hpa::ZERO, G1, Hpa::ZERO, a)
    });
    assert_eq!(n, 1);
    assert_eq!(mm.live(), live - 2, "the PD and the PT are freed");
    assert_eq!(t.lookup(&mut mm, v).unwrap().level, 3);
    // Unmapping a range that empties a table unlinks it the same way.
    let n = checked(&mut t, &mut mm, |t, mm| {
        t.map(mm, lit::hpa(G1), M2, lit::hpa(0), a)
    });
    assert_eq!(n, 0, "into an empty entry");
    let n = checked(&mut t, &mut mm, |t, mm| t.unmap(mm, lit::hpa(G1), M2));
    assert_eq!(n, 1, "the emptied PD is unlinked before it is freed");
    t.destroy(&mut mm).unwrap();
    assert_eq!(mm.live(), 0);
    assert!(mm.errors.is_empty(), "{:?}", mm.errors);
}

#[test]
fn split_merge_and_memtype_change_go_break_before_make() {
    split_merge_memtype::<EptFormat>();
    split_merge_memtype::<HypFormat>();
}

#[test]
fn the_hook_names_the_table_and_the_range() {
    let mut mm = Arena::new(64);
    let mut t = PgTable::<EptFormat, Gpa>::new(&mut mm, 2).unwrap();
    let a = Attrs::wb(PERM_RWX, PageState::Owned);
    t.map(&mut mm, lit::gpa(4 * M2), M2, lit::hpa(0), a)
        .unwrap();
    mm.record();
    t.set_state(&mut mm, lit::gpa(4 * M2 + K4), K4, PageState::SharedOwned)
        .unwrap();
    let log = mm.take_log();
    let inv: Vec<_> = log
        .iter()
        .filter(|e| matches!(e, Event::Invalidate { .. }))
        .collect();
    assert_eq!(
        inv,
        [&Event::Invalidate {
            kind: TableKind::GuestEpt,
            root: t.root(),
            addr: 4 * M2,
            size: M2,
        }]
    );
    t.destroy(&mut mm).unwrap();
}

/// Taking access away in place costs one invalidation per walk, for the
/// range that lost it, however many entries that is; granting access and
/// changing software bits cost none.
#[test]
fn access_taken_away_is_invalidated_once_per_walk() {
    let mut mm = Arena::new(64);
    let mut t = PgTable::<EptFormat, Hpa>::new(&mut mm, 1).unwrap();
    let a = Attrs::wb(PERM_RWX, PageState::Owned);
    let ro = Attrs { perms: PERM_R, ..a };
    let base = lit::hpa(G1);
    let n = checked(&mut t, &mut mm, |t, mm| t.map(mm, base, 64 * K4, base, ro));
    assert_eq!(n, 0, "new mappings");
    let n = checked(&mut t, &mut mm, |t, mm| t.map(mm, base, 64 * K4, base, a));
    assert_eq!(n, 0, "more permissions");
    let n = checked(&mut t, &mut mm, |t, mm| {
        t.set_state(mm, base, 64 * K4, PageState::SharedOwned)
    });
    assert_eq!(n, 0, "software bits");
    mm.record();
    t.map(
        &mut mm,
        base.wrapping_add(8 * K4),
        16 * K4,
        base.wrapping_add(8 * K4),
        ro,
    )
    .unwrap();
    let log = mm.take_log();
    let inv: Vec<_> = log
        .iter()
        .filter(|e| matches!(e, Event::Invalidate { .. }))
        .collect();
    assert_eq!(
        inv,
        [&Event::Invalidate {
            kind: TableKind::HostEpt,
            root: t.root(),
            addr: G1 + 8 * K4,
            size: 16 * K4,
        }],
        "write permission taken from 16 pages"
    );
    assert!(
        matches!(log.last(), Some(Event::Invalidate { .. })),
        "after the last store"
    );
    let n = checked(&mut t, &mut mm, |t, mm| {
        t.annotate(mm, base, 64 * K4, crate::hv::mm::ept::OwnerId::HOST)
    });
    assert_eq!(n, 1, "64 pages made non-present");
    t.destroy(&mut mm).unwrap();
}

#[test]
fn random_changes_keep_the_publication_rules() {
    for seed in 0..4 {
        let mut rng = Rng(seed);
        let mut mm = Arena::new(4096);
        let mut t = PgTable::<EptFormat, Hpa>::new(&mut mm, 3).unwrap();
        let mut invals = 0;
        for _ in 0..300 {
            let addr = rng.below(2048) * K4 + G1 * rng.below(2);
            let size = match rng.below(4) {
                0 => K4,
                1 => M2,
                2 => (1 + rng.below(600)) * K4,
                _ => G1,
            };
            let addr = lit::hpa(addr & !(size.min(M2) - 1) & !(K4 - 1));
            let memtype = if rng.below(3) == 0 {
                MemType::Uc
            } else {
                MemType::Wb
            };
            let attrs = Attrs {
                perms: [PERM_R, PERM_RWX][rng.below(2) as usize],
                memtype,
                state: PageState::Owned,
                ipat: false,
            };
            let pa = lit::hpa(rng.below(4) * M2);
            let fill = match rng.below(4) {
                0 => Fill::Set(0),
                1 => Fill::State(PageState::SharedOwned),
                _ => Fill::Map { pa, attrs },
            };
            invals += checked(&mut t, &mut mm, |t, mm| t.set(mm, addr, size, fill));
        }
        assert!(
            invals > 10,
            "seed {seed}: the sequence exercises break-before-make"
        );
        t.destroy(&mut mm).unwrap();
        assert_eq!(mm.live(), 0);
        assert!(mm.errors.is_empty(), "{:?}", mm.errors);
    }
}

#[test]
fn the_replay_catches_what_it_checks() {
    let mut mm = Arena::new(16);
    let mut t = PgTable::<EptFormat, Hpa>::new(&mut mm, 2).unwrap();
    let a = Attrs::wb(PERM_RWX, PageState::Owned);
    t.map(&mut mm, Hpa::ZERO, M2, Hpa::ZERO, a).unwrap();
    let before = mm.snapshot();
    let pd = EptFormat::addr(before[&t.root()][0]);
    let leaf = before[&pd][0];
    let moved = EptFormat::leaf(lit::hpa(M2), a, 2);
    let store = |table, idx, v| Event::Store { table, idx, v };
    let inval = Event::Invalidate {
        kind: TableKind::HostEpt,
        root: t.root(),
        addr: 0,
        size: M2,
    };
    // A present leaf moved in one store.
    let r = replay::<EptFormat>(&before, t.root(), &[store(pd, 0, moved)]);
    assert!(r.is_err(), "{r:?}");
    // Broken but not invalidated.
    let r = replay::<EptFormat>(&before, t.root(), &[store(pd, 0, 0), store(pd, 0, moved)]);
    assert!(r.is_err(), "{r:?}");
    // The right way.
    let ok = [store(pd, 0, 0), inval, store(pd, 0, moved)];
    assert_eq!(replay::<EptFormat>(&before, t.root(), &ok), Ok(()));
    // A split published before its table is written.
    let new = mm.zalloc_page().unwrap();
    let early = [
        store(pd, 0, 0),
        inval,
        store(pd, 0, EptFormat::table(new)),
        store(new, 0, EptFormat::split_child(leaf, 2, 0)),
    ];
    let r = replay::<EptFormat>(&before, t.root(), &early);
    assert!(r.is_err(), "{r:?}");
    // A table unlinked and written before an invalidation.
    let r = replay::<EptFormat>(&before, t.root(), &[store(t.root(), 0, 0), store(pd, 0, 0)]);
    assert!(r.is_err(), "{r:?}");
    // Access taken away in place (read-only, then nothing) and never
    // invalidated; then the right way.
    // (`leaf` is the table entry for the PD; its first entry maps 2 MiB.)
    let pd2 = EptFormat::addr(leaf);
    assert!(EptFormat::is_present(before[&pd2][0]));
    let ro = EptFormat::leaf(Hpa::ZERO, Attrs { perms: PERM_R, ..a }, 2);
    for lost in [ro, 0] {
        let r = replay::<EptFormat>(&before, t.root(), &[store(pd2, 0, lost)]);
        assert!(r.is_err(), "{r:?}");
        let ok = [store(pd2, 0, lost), inval];
        assert_eq!(replay::<EptFormat>(&before, t.root(), &ok), Ok(()));
    }
    mm.free_page(new);
    t.destroy(&mut mm).unwrap();
}
