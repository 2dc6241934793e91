// SPDX-License-Identifier: GPL-2.0

//! Tests of the shadow EPT set (`super`) on the simulated arena: installs
//! and re-installs, several EPT pointers, INVEPT single and global with
//! the order of flush and share return checked on the recorded stores,
//! eviction under memory pressure and slot pressure, teardown; the
//! ownership invariants after every step.

use std::collections::HashSet;
use std::vec::Vec;

use super::*;
use crate::hv::mm::addr::lit;
use crate::hv::mm::invariants::{check_with_shadows, Claim};
use crate::hv::mm::mem_protect::{host_donate_hyp, host_share_hyp, HypPgt, HOST_OWNED};
use crate::hv::mm::pgtable::{EptFormat, PteFormat, PERM_R, PERM_RWX, PERM_W, PERM_X};
use crate::hv::mm::ram::RamMap;
use crate::hv::mm::sim::{Arena, Event};

const K4: u64 = 4096;
const M2: u64 = 2 << 20;
/// Host RAM: `[0, RAM)`; MMIO above it.
const RAM: u64 = 1 << 30;
const MMIO: u64 = RAM;
const HYP_OFFSET: u64 = 0xffff_8000_0000_0000;

/// Two EPT pointers of one VM (normal and SMM roots), write-back,
/// 4-level walk, and a third VM's.
const EPTP_A: u64 = 0x0010_0000 | 0x1e;
const EPTP_B: u64 = 0x0020_0000 | 0x1e;
const EPTP_C: u64 = 0x0030_0000 | 0x1e;

struct W {
    mm: Arena,
    host: HostEpt,
    hyp: HypPgt,
    set: ShadowEpts,
}

fn world(limit: usize) -> W {
    let mut mm = Arena::new(limit);
    let mut ram = RamMap::empty();
    ram.add(0, RAM).unwrap();
    let mut host = HostEpt::new(&mut mm, 3, ram).unwrap();
    host.map_memory(&mut mm, lit::hpa(0), RAM, HOST_OWNED)
        .unwrap();
    let uc = Attrs {
        memtype: MemType::Uc,
        ..HOST_OWNED
    };
    host.map_memory(&mut mm, lit::hpa(MMIO), M2, uc).unwrap();
    let hyp = HypPgt::new(&mut mm, 2, HYP_OFFSET).unwrap();
    W {
        mm,
        host,
        hyp,
        set: ShadowEpts::new(),
    }
}

impl W {
    fn check(&mut self) {
        let mut scratch = std::vec![Claim::default(); 1 << 12];
        let r = check_with_shadows(
            &self.host,
            &self.hyp,
            core::iter::empty(),
            self.set.guests(),
            &mut self.mm,
            &mut scratch,
        );
        assert_eq!(r, Ok(()), "invariant violated");
        assert!(self.mm.errors.is_empty(), "{:?}", self.mm.errors);
        assert_eq!(self.host.internal_errors(), 0);
        assert_eq!(self.set.stats().internal_errors, 0);
    }

    fn install(
        &mut self,
        eptp: u64,
        gpa: u64,
        l: &ResolvedLeaf,
    ) -> core::result::Result<Installed, NoMapping> {
        let r = self
            .set
            .install(&mut self.host, &mut self.mm, eptp, lit::gpa(gpa), l);
        self.check();
        r
    }

    /// The host EPT's page state of `hpa` (`None`: not present).
    fn host_state(&mut self, hpa: u64) -> Option<PageState> {
        let e = self.host.pgt().lookup(&mut self.mm, lit::hpa(hpa)).unwrap();
        EptFormat::is_present(e.entry).then(|| EptFormat::state(e.entry))
    }

    /// What the shadow of `eptp` maps at `gpa`: `(hpa, perms)`.
    fn shadow_maps(&mut self, eptp: u64, gpa: u64) -> Option<(u64, u8)> {
        let g = self.set.guest(eptp)?;
        let l = g.pgt().lookup(&mut self.mm, lit::gpa(gpa)).unwrap();
        if !EptFormat::is_present(l.entry) {
            return None;
        }
        let off = gpa & (level_size(l.level) - 1);
        let a = EptFormat::attrs(l.entry);
        assert_eq!(a.state, PageState::SharedBorrowed);
        Some((EptFormat::addr(l.entry).raw() + off, a.perms))
    }

    /// The share count of host page `hpa` (guest leaf pages mapping it,
    /// over every shadow).
    fn count(&mut self, hpa: u64) -> u32 {
        self.host
            .share_counts()
            .get(&self.mm, lit::hpa(hpa))
            .unwrap()
    }

    /// The attributes of the shadow leaf of `eptp` at `gpa`.
    fn shadow_attrs(&mut self, eptp: u64, gpa: u64) -> Option<Attrs> {
        let g = self.set.guest(eptp)?;
        let l = g.pgt().lookup(&mut self.mm, lit::gpa(gpa)).unwrap();
        EptFormat::is_present(l.entry).then(|| EptFormat::attrs(l.entry))
    }

    /// Every table page of the shadow of `eptp`, root included.
    fn shadow_tables(&mut self, eptp: u64) -> HashSet<Hpa> {
        let g = self.set.guest(eptp).unwrap();
        let mut t = HashSet::new();
        t.insert(g.pgt().root());
        g.pgt()
            .for_each_table(&mut self.mm, lit::gpa(0), ADDR_LIMIT, |_, _, e| {
                t.insert(EptFormat::addr(e));
                Ok(())
            })
            .unwrap();
        t
    }

    /// Every table page of the host EPT, root included.
    fn host_tables(&mut self) -> HashSet<Hpa> {
        let mut t = HashSet::new();
        t.insert(self.host.pgt().root());
        self.host
            .pgt()
            .for_each_table(&mut self.mm, lit::hpa(0), ADDR_LIMIT, |_, _, e| {
                t.insert(EptFormat::addr(e));
                Ok(())
            })
            .unwrap();
        t
    }
}

fn leaf(gpa: u64, hpa: u64, size: u64, perms: u8) -> ResolvedLeaf {
    ResolvedLeaf {
        gpa: lit::gpa(gpa),
        hpa: lit::hpa(hpa),
        size,
        perms,
        memtype: MemType::Wb,
        ipat: false,
    }
}

fn page(gpa: u64, hpa: u64) -> ResolvedLeaf {
    leaf(gpa, hpa, K4, PERM_RWX)
}

#[test]
fn owner_ids_are_guests_clear_of_vm_handles() {
    for i in 0..MAX_SHADOWS {
        let id = ShadowEpts::owner(i).unwrap();
        assert!(id.is_guest());
        assert!(id.raw() < HANDLE_OFFSET);
    }
}

#[test]
fn install_maps_once_and_a_second_fault_changes_nothing() {
    let mut w = world(1 << 12);
    w.check();
    let l = leaf(0x5000, 0x40_0000, K4, PERM_R | PERM_X);
    assert_eq!(w.install(EPTP_A, 0x5123, &l), Ok(Installed::Mapped));
    assert_eq!(
        w.shadow_maps(EPTP_A, 0x5000),
        Some((0x40_0000, PERM_R | PERM_X))
    );
    assert_eq!(w.host_state(0x40_0000), Some(PageState::SharedOwned));
    assert_eq!(w.set.leaves(EPTP_A), 1);

    // The second CPU faulting on the same address: nothing is written,
    // the host page is shared once.
    let (writes, allocs) = (w.mm.writes, w.mm.allocs);
    assert_eq!(w.install(EPTP_A, 0x5000, &l), Ok(Installed::AlreadyPresent));
    assert_eq!((w.mm.writes, w.mm.allocs), (writes, allocs));
    assert_eq!(w.set.leaves(EPTP_A), 1);
    assert_eq!(w.set.stats().mapped, 1);
    assert_eq!(w.set.stats().mapped_bytes, K4);
    assert_eq!(w.set.stats().present, 1);
    assert_eq!(w.host_state(0x40_0000), Some(PageState::SharedOwned));

    // The EPTP's other bits (memory type, walk length) name the same
    // shadow: the key is the root address.
    assert_eq!(
        w.install(EPTP_A & !0xfff, 0x5000, &l),
        Ok(Installed::AlreadyPresent)
    );
    assert_eq!(w.set.len(), 1);
}

#[test]
fn large_leaf_maps_whole_or_only_the_faulting_page() {
    let mut w = world(1 << 12);
    let big = leaf(0x20_0000, 0x60_0000, M2, PERM_RWX);
    assert_eq!(w.install(EPTP_A, 0x2f_f000, &big), Ok(Installed::Mapped));
    assert_eq!(
        w.shadow_maps(EPTP_A, 0x3f_f000),
        Some((0x7f_f000, PERM_RWX))
    );
    assert_eq!(w.host_state(0x7f_f000), Some(PageState::SharedOwned));
    // One 2 MiB leaf: root, PDPT, PD.
    assert_eq!(w.set.table_pages(EPTP_A), 3);
    assert_eq!(
        w.set.guest(EPTP_A).unwrap().pgt().table_pages(&mut w.mm),
        Ok(3)
    );

    // A 2 MiB leaf whose range is partly mapped already (an earlier 4 KiB
    // fault): only the faulting page is added.
    let small = page(0x40_0000, 0x90_0000);
    assert_eq!(w.install(EPTP_B, 0x40_0000, &small), Ok(Installed::Mapped));
    let big = leaf(0x40_0000, 0xa0_0000, M2, PERM_RWX);
    assert_eq!(
        w.install(EPTP_B, 0x40_1000, &big),
        Ok(Installed::MappedPage)
    );
    assert_eq!(
        w.shadow_maps(EPTP_B, 0x40_1000),
        Some((0xa0_1000, PERM_RWX))
    );
    assert_eq!(
        w.shadow_maps(EPTP_B, 0x40_0000),
        Some((0x90_0000, PERM_RWX))
    );
    assert_eq!(w.shadow_maps(EPTP_B, 0x40_2000), None);
    assert_eq!(w.set.table_pages(EPTP_B), 4);
    assert_eq!(
        w.set.guest(EPTP_B).unwrap().pgt().table_pages(&mut w.mm),
        Ok(4)
    );
    // The bytes mapped: the 2 MiB leaf of EPTP_A, two 4 KiB of EPTP_B.
    assert_eq!(w.set.stats().mapped_bytes, M2 + 2 * K4);
}

/// A fault on a page the shadow maps with less than the walk now gives
/// (the host raised permissions or remapped without INVEPT; the fault
/// makes that visible, as on hardware): the old leaf goes, its share
/// back, the new one is mapped.  Anything the shadow already allows is
/// left alone (no livelock, no double share).
#[test]
fn a_fault_on_a_stale_leaf_replaces_it() {
    let mut w = world(1 << 12);
    let ro = leaf(0x5000, 0x40_0000, K4, PERM_R);
    assert_eq!(w.install(EPTP_A, 0x5000, &ro), Ok(Installed::Mapped));
    // Write fault after the host made the page writable.
    let rw = leaf(0x5000, 0x40_0000, K4, PERM_R | PERM_W);
    assert_eq!(w.install(EPTP_A, 0x5000, &rw), Ok(Installed::Replaced));
    assert_eq!(
        w.shadow_maps(EPTP_A, 0x5000),
        Some((0x40_0000, PERM_R | PERM_W))
    );
    assert_eq!(w.host_state(0x40_0000), Some(PageState::SharedOwned));
    assert_eq!(w.set.leaves(EPTP_A), 1);
    // Less than the shadow allows: present, nothing written.
    let writes = w.mm.writes;
    assert_eq!(
        w.install(EPTP_A, 0x5000, &ro),
        Ok(Installed::AlreadyPresent)
    );
    assert_eq!(w.mm.writes, writes);
    // Remapped to another host page: the old one goes back to the host.
    let moved = leaf(0x5000, 0x41_0000, K4, PERM_RWX);
    assert_eq!(w.install(EPTP_A, 0x5000, &moved), Ok(Installed::Replaced));
    assert_eq!(w.host_state(0x40_0000), Some(PageState::Owned));
    assert_eq!(w.host_state(0x41_0000), Some(PageState::SharedOwned));
    assert_eq!(w.shadow_maps(EPTP_A, 0x5000), Some((0x41_0000, PERM_RWX)));
    // A 2 MiB leaf and a fault in it that the walk now resolves to a
    // 4 KiB page elsewhere: the whole large leaf goes.
    let big = leaf(0x20_0000, 0x60_0000, M2, PERM_R);
    assert_eq!(w.install(EPTP_A, 0x20_0000, &big), Ok(Installed::Mapped));
    let small = leaf(0x21_0000, 0x42_0000, K4, PERM_RWX);
    assert_eq!(
        w.install(EPTP_A, 0x21_0000, &small),
        Ok(Installed::Replaced)
    );
    assert_eq!(
        w.shadow_maps(EPTP_A, 0x21_0000),
        Some((0x42_0000, PERM_RWX))
    );
    assert_eq!(w.shadow_maps(EPTP_A, 0x20_0000), None);
    assert_eq!(w.host_state(0x60_0000), Some(PageState::Owned));
    assert_eq!(w.host_state(0x7f_f000), Some(PageState::Owned));
    assert_eq!(w.set.leaves(EPTP_A), 2);
    assert_eq!(w.set.stats().replaced, 3);
    // A replacement whose new page cannot be shared leaves nothing (the
    // guest re-faults): here the page is hypervisor memory.
    host_donate_hyp(&mut w.host, &mut w.hyp, &mut w.mm, lit::hpa(0x70_0000), 1).unwrap();
    let bad = leaf(0x5000, 0x70_0000, K4, PERM_RWX);
    assert_eq!(w.install(EPTP_A, 0x5000, &bad), Err(NoMapping::Refused));
    assert_eq!(w.shadow_maps(EPTP_A, 0x5000), None);
    assert_eq!(w.host_state(0x41_0000), Some(PageState::Owned));
    assert_eq!(w.set.leaves(EPTP_A), 1);
}

#[test]
fn bad_leaves_and_pages_the_host_cannot_share_map_nothing() {
    let mut w = world(1 << 12);
    // Not holding the fault, unaligned, odd size.
    for (g, l) in [
        (0x9000, page(0x8000, 0x40_0000)),
        (0x8000, leaf(0x8000, 0x40_0000, M2, PERM_RWX)),
        (0x20_0000, leaf(0x20_0000, 0x40_1000, M2, PERM_RWX)),
        (0x8000, leaf(0x8000, 0x40_0000, 2 * K4, PERM_RWX)),
    ] {
        assert_eq!(w.install(EPTP_A, g, &l), Err(NoMapping::Invalid), "{l:?}");
    }
    // Hypervisor memory (the host does not own it), a page the host
    // shares with the hypervisor (SHARED_OWNED with no count: not a guest
    // share a shadow may add to), MMIO (not RAM), write without read.
    host_donate_hyp(&mut w.host, &mut w.hyp, &mut w.mm, lit::hpa(0x70_0000), 1).unwrap();
    host_share_hyp(&mut w.host, &mut w.hyp, &mut w.mm, lit::hpa(0x73_0000), 1).unwrap();
    w.check();
    for l in [
        page(0x1000, 0x70_0000),
        page(0x2000, MMIO),
        leaf(0x4000, 0x72_0000, K4, PERM_W),
        page(0x5000, 0x73_0000),
        // A large leaf over both: refused whole, nothing counted.
        leaf(0x20_0000, 0x60_0000, M2, PERM_RWX),
    ] {
        assert_eq!(
            w.install(EPTP_A, l.gpa.raw(), &l),
            Err(NoMapping::Refused),
            "{l:?}"
        );
        assert_eq!(w.shadow_maps(EPTP_A, l.gpa.raw()), None);
    }
    assert_eq!(w.set.leaves(EPTP_A), 0);
    assert_eq!(w.host_state(0x72_0000), Some(PageState::Owned));
    assert_eq!(w.count(0x72_0000), 0);
    assert_eq!(w.host_state(0x60_0000), Some(PageState::Owned));
    assert_eq!(w.count(0x60_0000), 0);
    // Still shared with the hypervisor alone: no count was taken.
    assert_eq!(w.host_state(0x73_0000), Some(PageState::SharedOwned));
    assert_eq!(w.count(0x73_0000), 0);
}

/// The shadow leaf carries the memory type and ignore-PAT bit the walk
/// intersected (an uncachable leaf on host RAM is legitimate: the guest's
/// own EPT may ask for it); the share is counted like any other.
#[test]
fn a_leaf_keeps_its_memory_type_and_ignore_pat() {
    let mut w = world(1 << 12);
    let mut uc = page(0x3000, 0x90_0000);
    uc.memtype = MemType::Uc;
    let mut wc_ipat = leaf(0x20_0000, 0x60_0000, M2, PERM_R | PERM_X);
    wc_ipat.memtype = MemType::Wc;
    wc_ipat.ipat = true;
    for l in [&uc, &wc_ipat] {
        assert_eq!(w.install(EPTP_A, l.gpa.raw(), l), Ok(Installed::Mapped));
        let a = w.shadow_attrs(EPTP_A, l.gpa.raw()).unwrap();
        assert_eq!(
            (a.perms, a.memtype, a.ipat, a.state),
            (l.perms, l.memtype, l.ipat, PageState::SharedBorrowed),
            "{l:?}"
        );
    }
    assert_eq!(w.host_state(0x90_0000), Some(PageState::SharedOwned));
    assert_eq!(w.count(0x90_0000), 1);
    // The 2 MiB leaf counts once on each of its 512 host pages.
    assert_eq!(w.count(0x60_0000), 1);
    assert_eq!(w.count(0x7f_f000), 1);
    assert_eq!(w.host_state(0x7f_f000), Some(PageState::SharedOwned));
    // The same page faulted again is present; another memory type for it
    // is stale and replaced.
    assert_eq!(
        w.install(EPTP_A, 0x3000, &uc),
        Ok(Installed::AlreadyPresent)
    );
    let wb = page(0x3000, 0x90_0000);
    assert_eq!(w.install(EPTP_A, 0x3000, &wb), Ok(Installed::Replaced));
    // So is another ignore-PAT bit (the guest's PAT then counts or not).
    let wb_ipat = ResolvedLeaf { ipat: true, ..wb };
    assert_eq!(w.install(EPTP_A, 0x3000, &wb_ipat), Ok(Installed::Replaced));
    assert_eq!(
        w.install(EPTP_A, 0x3000, &wb_ipat),
        Ok(Installed::AlreadyPresent)
    );
    assert_eq!(w.install(EPTP_A, 0x3000, &wb), Ok(Installed::Replaced));
    assert_eq!(
        w.shadow_attrs(EPTP_A, 0x3000).map(|a| a.memtype),
        Some(MemType::Wb)
    );
    assert_eq!(w.count(0x90_0000), 1, "the old share went back first");
    assert_eq!(w.set.invalidate_single(&mut w.host, &mut w.mm, EPTP_A), 1);
    w.check();
    for h in [0x90_0000, 0x60_0000, 0x7f_f000] {
        assert_eq!(w.host_state(h), Some(PageState::Owned), "{h:#x}");
        assert_eq!(w.count(h), 0, "{h:#x}");
    }
}

/// Two EPT pointers whose leaves name one host page (and one shadow
/// naming it at two addresses): each mapping is a count of its own
/// (page-states.rst, "Counted shares"); the page goes back to the host
/// alone only when the last of them is gone.
#[test]
fn two_eptps_one_host_page() {
    let mut w = world(1 << 12);
    assert_eq!(
        w.install(EPTP_A, 0x1000, &page(0x1000, 0x40_0000)),
        Ok(Installed::Mapped)
    );
    assert_eq!(w.count(0x40_0000), 1);
    assert_eq!(
        w.install(EPTP_B, 0x7000, &page(0x7000, 0x40_0000)),
        Ok(Installed::Mapped)
    );
    assert_eq!(w.shadow_maps(EPTP_A, 0x1000), Some((0x40_0000, PERM_RWX)));
    assert_eq!(w.shadow_maps(EPTP_B, 0x7000), Some((0x40_0000, PERM_RWX)));
    assert_eq!(w.host_state(0x40_0000), Some(PageState::SharedOwned));
    assert_eq!(w.count(0x40_0000), 2);
    // A second address of B on the same page: a third count.
    assert_eq!(
        w.install(EPTP_B, 0x9000, &page(0x9000, 0x40_0000)),
        Ok(Installed::Mapped)
    );
    assert_eq!(w.count(0x40_0000), 3);
    assert_eq!(w.set.leaves(EPTP_B), 2);
    assert_eq!(w.set.len(), 2);
    // Retiring A drops its count only: B still maps the page, which stays
    // shared.
    assert_eq!(w.set.invalidate_single(&mut w.host, &mut w.mm, EPTP_A), 1);
    w.check();
    assert_eq!(w.count(0x40_0000), 2);
    assert_eq!(w.host_state(0x40_0000), Some(PageState::SharedOwned));
    assert_eq!(w.shadow_maps(EPTP_B, 0x7000), Some((0x40_0000, PERM_RWX)));
    // A faults again: the page is shared once more.
    assert_eq!(
        w.install(EPTP_A, 0x1000, &page(0x1000, 0x40_0000)),
        Ok(Installed::Mapped)
    );
    assert_eq!(w.count(0x40_0000), 3);
    // Retiring B leaves A's count; retiring A too returns the page.
    assert_eq!(w.set.invalidate_single(&mut w.host, &mut w.mm, EPTP_B), 1);
    w.check();
    assert_eq!(w.count(0x40_0000), 1);
    assert_eq!(w.host_state(0x40_0000), Some(PageState::SharedOwned));
    assert_eq!(w.set.invalidate_single(&mut w.host, &mut w.mm, EPTP_A), 1);
    w.check();
    assert_eq!(w.count(0x40_0000), 0);
    assert_eq!(w.host_state(0x40_0000), Some(PageState::Owned));
}

/// The host page of leaf `i` of [`fill`]: one page skipped after every
/// eighth, so that the shadow holds several runs.
fn fill_hpa(hpa: u64, i: u64) -> u64 {
    hpa + (i + i / 8) * K4
}

/// Fills the shadow of `eptp` with `n` 4 KiB leaves at `gpa`, host pages
/// from `hpa` ([`fill_hpa`]).
fn fill(w: &mut W, eptp: u64, gpa: u64, hpa: u64, n: u64) {
    for i in 0..n {
        let (g, h) = (gpa + i * K4, fill_hpa(hpa, i));
        assert_eq!(w.install(eptp, g, &page(g, h)), Ok(Installed::Mapped));
    }
}

/// Maps host page `h` at `g` in the shadow of `eptp` (a new leaf).
fn install_at(w: &mut W, eptp: u64, g: u64, h: u64) {
    assert_eq!(w.install(eptp, g, &page(g, h)), Ok(Installed::Mapped));
}

/// The event of a flush of the whole shadow whose root is `root`.
fn whole_flush(root: Hpa) -> Event {
    Event::Invalidate {
        kind: TableKind::GuestEpt,
        root,
        addr: 0,
        size: ADDR_LIMIT,
    }
}

/// The order a retirement or a partial drop promises, on the recorded
/// `log`: the shadow of `root` is flushed whole exactly once and gets no
/// other invalidation (the engine's are deferred to that flush or dropped
/// after it), and every store to a host EPT table page (`host_tables`:
/// what returns a share) comes after the flush.  Returns the flush's
/// position.
fn assert_flush_before_returns(log: &[Event], root: Hpa, host_tables: &HashSet<Hpa>) -> usize {
    let flush = whole_flush(root);
    let of_root: Vec<_> = log
        .iter()
        .enumerate()
        .filter(|(_, e)| matches!(e, Event::Invalidate { kind: TableKind::GuestEpt, root: r, .. } if *r == root))
        .collect();
    assert_eq!(
        of_root.len(),
        1,
        "one invalidation of the shadow: {log:#x?}"
    );
    let (at, e) = of_root[0];
    assert_eq!(e, &flush, "{log:#x?}");
    let host_stores: Vec<_> = log
        .iter()
        .enumerate()
        .filter(|(_, e)| matches!(e, Event::Store { table, .. } if host_tables.contains(table)))
        .map(|(i, _)| i)
        .collect();
    assert!(
        host_stores.iter().all(|&i| i > at),
        "a share went back before the flush: flush at {at}, host stores at {host_stores:?}"
    );
    at
}

/// The shared set-up of the re-validation tests: a world, an EPT12 of
/// `n` 4 KiB pages (guest page `i` at host `hpa + i * 4 KiB`, RWX), and
/// the shadow of [`EPTP_A`] holding all of them.
fn staged(limit: usize, n: u64, hpa: u64) -> (W, Ept12) {
    let mut w = world(limit);
    let mut e12 = Ept12::default();
    for i in 0..n {
        e12.pages.insert(i * K4, (hpa + i * K4, PERM_RWX));
    }
    for i in 0..n {
        assert_eq!(e12.fault(&mut w, EPTP_A, i * K4), Ok(Installed::Mapped));
    }
    (w, e12)
}

#[test]
fn invept_single_flushes_the_named_shadow_before_any_share_goes_back() {
    let mut w = world(1 << 12);
    fill(&mut w, EPTP_A, 0x1000, 0x40_0000, 40);
    fill(&mut w, EPTP_A, 0x1_0000_0000, 0x80_0000, 5);
    fill(&mut w, EPTP_B, 0x1000, 0x50_0000, 10);
    let root_a = w.set.root(EPTP_A).unwrap();
    let root_b = w.set.root(EPTP_B).unwrap();
    let tables_a = w.shadow_tables(EPTP_A);
    let tables_b = w.shadow_tables(EPTP_B);
    let host_tables = w.host_tables();
    let live = w.mm.live();
    let count_pages = w.host.share_counts().table_pages();

    w.mm.record();
    assert_eq!(w.set.invalidate_single(&mut w.host, &mut w.mm, EPTP_A), 1);
    let log = w.mm.take_log();
    w.check();

    // First the flush of the whole shadow, once; no other invalidation of
    // it (the retired table is unreachable).
    assert_eq!(log.first(), Some(&whole_flush(root_a)), "{log:#x?}");
    let shadow_invals = log
        .iter()
        .filter(|e| {
            matches!(
                e,
                Event::Invalidate {
                    kind: TableKind::GuestEpt,
                    ..
                }
            )
        })
        .count();
    assert_eq!(shadow_invals, 1, "{log:#x?}");
    // Then the shares go back: host stores only after the flush.
    let host_stores: Vec<_> = log
        .iter()
        .enumerate()
        .filter(|(_, e)| matches!(e, Event::Store { table, .. } if host_tables.contains(table)))
        .collect();
    assert!(!host_stores.is_empty());
    assert!(host_stores.iter().all(|(i, _)| *i > 0));
    // B untouched, A's tables all freed.
    assert!(!log
        .iter()
        .any(|e| matches!(e, Event::Store { table, .. } if tables_b.contains(table))));
    // A's tables all freed, and one page of the share counts: the leaf
    // of A's counts at 0x80_0000 (4 MiB of host pages per leaf); the leaf
    // holding 0x40_0000.. also holds B's counts at 0x50_0000 and stays,
    // as do the directories.
    assert_eq!(w.host.share_counts().table_pages(), count_pages - 1);
    assert_eq!(w.mm.live(), live - tables_a.len() as u64 - 1);
    assert!(tables_a.iter().all(|t| !w.mm.is_live(*t)));
    assert_eq!(w.count(0x80_0000), 0);
    assert_eq!(w.count(0x40_0000), 0);
    assert_eq!(w.count(0x50_0000), 1);

    assert_eq!(w.set.root(EPTP_A), None);
    assert_eq!(w.set.root(EPTP_B), Some(root_b));
    for i in 0..40u64 {
        let h = fill_hpa(0x40_0000, i);
        assert_eq!(w.host_state(h), Some(PageState::Owned), "{h:#x}");
    }
    assert_eq!(w.host_state(0x50_0000), Some(PageState::SharedOwned));
    assert_eq!(w.set.stats().flushes, 1);

    // The guest faults again: a new shadow, from nothing.
    assert_eq!(
        w.install(EPTP_A, 0x1000, &page(0x1000, 0x40_0000)),
        Ok(Installed::Mapped)
    );
    assert_eq!(w.set.leaves(EPTP_A), 1);
}

#[test]
fn invept_of_an_empty_or_unknown_shadow_costs_nothing() {
    let mut w = world(1 << 12);
    let root = w.set.ensure(&mut w.host, &mut w.mm, EPTP_A).unwrap();
    w.check();
    w.mm.record();
    assert_eq!(w.set.invalidate_single(&mut w.host, &mut w.mm, EPTP_A), 0);
    assert_eq!(w.set.invalidate_single(&mut w.host, &mut w.mm, EPTP_C), 0);
    assert_eq!(w.set.invalidate_all(&mut w.host, &mut w.mm), 0);
    assert_eq!(w.mm.take_log(), Vec::new());
    assert_eq!(w.set.root(EPTP_A), Some(root));
    w.check();
}

#[test]
fn invept_global_retires_every_shadow_that_maps_something() {
    let mut w = world(1 << 12);
    fill(&mut w, EPTP_A, 0, 0x40_0000, 12);
    fill(&mut w, EPTP_B, 0x20_0000, 0x50_0000, 3);
    let root_c = w.set.ensure(&mut w.host, &mut w.mm, EPTP_C).unwrap();
    let (ra, rb) = (w.set.root(EPTP_A).unwrap(), w.set.root(EPTP_B).unwrap());
    let host_tables = w.host_tables();
    w.mm.record();
    assert_eq!(w.set.invalidate_all(&mut w.host, &mut w.mm), 2);
    let log = w.mm.take_log();
    w.check();
    // Each shadow's shares go back after its own flush.
    let at = |root| {
        log.iter()
            .position(|e| matches!(*e, Event::Invalidate { kind: TableKind::GuestEpt, root: r, .. } if r == root))
            .unwrap()
    };
    let (fa, fb) = (at(ra), at(rb));
    assert!(fa < fb);
    let host_store =
        |i: &usize| matches!(log[*i], Event::Store { table, .. } if host_tables.contains(&table));
    let first_host_store = (0..log.len()).find(host_store).unwrap();
    assert!(first_host_store > fa);
    assert!(
        (fb..log.len()).any(|i| host_store(&i)),
        "B's shares after B's flush"
    );
    assert_eq!(w.set.root(EPTP_A), None);
    assert_eq!(w.set.root(EPTP_B), None);
    assert_eq!(w.set.root(EPTP_C), Some(root_c));
    assert_eq!(w.host_state(0x40_0000), Some(PageState::Owned));
    assert_eq!(w.host_state(0x50_2000), Some(PageState::Owned));
}

/// The host's EPT as a resolver for the re-validating INVEPT: guest page
/// -> (host page, permissions), 4 KiB leaves, plus 2 MiB leaves.
#[derive(Default)]
struct Ept12 {
    pages: std::collections::HashMap<u64, (u64, u8)>,
    large: std::collections::HashMap<u64, (u64, u8)>,
}

impl Ept12 {
    fn resolve(&self, g: Gpa) -> Option<ResolvedLeaf> {
        let g = g.raw();
        if let Some(&(h, p)) = self.large.get(&(g & !(M2 - 1))) {
            return Some(leaf(g & !(M2 - 1), h, M2, p));
        }
        let &(h, p) = self.pages.get(&(g & !(K4 - 1)))?;
        Some(leaf(g & !(K4 - 1), h, K4, p))
    }

    /// Installs what it maps at `g` into the shadow of `eptp`.
    fn fault(&self, w: &mut W, eptp: u64, g: u64) -> core::result::Result<Installed, NoMapping> {
        let l = self.resolve(lit::gpa(g)).unwrap();
        w.install(eptp, g, &l)
    }
}

/// Issue 10: a page a dead VM's shadow still shares, wanted by the host
/// as its own (a VMCS region): the leaves that map it are dropped (the
/// shadow retired if that is all it maps), flushed before the shares go
/// back, and the page is the host's again; shadows that do not map it are
/// untouched; pages in any other state are left alone and refused.
#[test]
fn reclaim_for_host_drops_the_leaves_of_a_guest_shared_page_only() {
    let mut w = world(1 << 12);
    fill(&mut w, EPTP_A, 0, 0x40_0000, 4);
    fill(&mut w, EPTP_B, 0x20_0000, 0x50_0000, 2);
    let root_c = w.set.ensure(&mut w.host, &mut w.mm, EPTP_C).unwrap();
    host_donate_hyp(&mut w.host, &mut w.hyp, &mut w.mm, lit::hpa(0x70_0000), 1).unwrap();
    host_share_hyp(&mut w.host, &mut w.hyp, &mut w.mm, lit::hpa(0x73_0000), 1).unwrap();
    w.check();
    // Not the shadows' to give: nothing retired, refused.
    for (pa, owned) in [
        (0x70_0000, false), // donated to the hypervisor
        (0x73_0000, false), // shared with the hypervisor (count 0)
        (MMIO, false),      // not RAM
        (0x60_0000, true),  // the host's own already
    ] {
        w.mm.record();
        let r = w.set.reclaim_for_host(&mut w.host, &mut w.mm, lit::hpa(pa));
        assert_eq!(r, owned, "{pa:#x}");
        assert!(w.mm.take_log().is_empty(), "{pa:#x}: nothing changed");
        w.check();
    }
    assert_eq!(w.set.stats().reclaims, 0);
    assert!(w.set.root(EPTP_A).is_some() && w.set.root(EPTP_B).is_some());
    // A page of A's (mapped at two of A's addresses): only those leaves
    // go, flushed before the shares go back; B, which does not map it,
    // is untouched (no store, no flush), and so is the empty C.
    install_at(&mut w, EPTP_A, 0x9000, 0x40_1000);
    assert_eq!(w.count(0x40_1000), 2);
    let host_tables = w.host_tables();
    let tables_b = w.shadow_tables(EPTP_B);
    let (ra, rb) = (w.set.root(EPTP_A).unwrap(), w.set.root(EPTP_B).unwrap());
    assert_eq!(w.host_state(0x40_1000), Some(PageState::SharedOwned));
    w.mm.record();
    assert!(w
        .set
        .reclaim_for_host(&mut w.host, &mut w.mm, lit::hpa(0x40_1000)));
    let log = w.mm.take_log();
    w.check();
    assert_flush_before_returns(&log, ra, &host_tables);
    assert!(!log.iter().any(|e| matches!(e,
        Event::Store { table, .. } if tables_b.contains(table))
        || matches!(e, Event::Invalidate { root, .. } if *root == rb)));
    assert_eq!(w.host_state(0x40_1000), Some(PageState::Owned));
    assert_eq!(w.count(0x40_1000), 0);
    assert_eq!(w.host_state(0x40_0000), Some(PageState::SharedOwned));
    assert_eq!(w.host_state(0x50_1000), Some(PageState::SharedOwned));
    assert_eq!(w.set.root(EPTP_A), Some(ra));
    assert_eq!(w.set.leaves(EPTP_A), 3);
    assert_eq!(w.shadow_maps(EPTP_A, 0x1000), None);
    assert_eq!(w.shadow_maps(EPTP_A, 0x9000), None);
    assert_eq!(w.set.root(EPTP_B), Some(rb));
    assert_eq!(w.set.root(EPTP_C), Some(root_c));
    assert_eq!(w.set.stats().reclaims, 1);
    assert_eq!(w.set.stats().partial, 1);
    assert_eq!(w.set.stats().leaves_dropped, 2);
    // Asked again: the host's own, nothing to do.
    w.mm.record();
    assert!(w
        .set
        .reclaim_for_host(&mut w.host, &mut w.mm, lit::hpa(0x40_1000)));
    assert!(w.mm.take_log().is_empty());
    assert_eq!(w.set.stats().reclaims, 1);
    // Mapped again after the reclaim: shares as before.
    install_at(&mut w, EPTP_A, 0x1000, 0x40_1000);
    assert_eq!(w.host_state(0x40_1000), Some(PageState::SharedOwned));
    w.check();
}

#[test]
fn revalidating_invept_keeps_a_shadow_with_nothing_stale_and_flushes_nothing() {
    let mut w = world(1 << 12);
    let mut e12 = Ept12::default();
    for i in 0..16 {
        e12.pages.insert(i * K4, (0x40_0000 + i * 2 * K4, PERM_RWX));
    }
    e12.large.insert(0x20_0000, (0x60_0000, PERM_R | PERM_X));
    for i in 0..16 {
        assert_eq!(e12.fault(&mut w, EPTP_A, i * K4), Ok(Installed::Mapped));
    }
    assert_eq!(e12.fault(&mut w, EPTP_A, 0x21_0000), Ok(Installed::Mapped));
    let root = w.set.root(EPTP_A).unwrap();

    // Nothing changed (KVM's INVEPT on a vCPU's migration): kept, not a
    // store, not a flush.
    w.mm.record();
    let n = w
        .set
        .invalidate_single_checked(&mut w.host, &mut w.mm, EPTP_A, &mut |_, g| e12.resolve(g));
    assert_eq!(n, 0);
    let n = w
        .set
        .invalidate_all_checked(&mut w.host, &mut w.mm, &mut |_, _, g| e12.resolve(g));
    assert_eq!(n, 0);
    assert_eq!(w.mm.take_log(), Vec::new());
    assert_eq!(w.set.root(EPTP_A), Some(root));
    assert_eq!(w.set.stats().kept, 2);
    // More permissions than the shadow gives are no staleness either.
    e12.pages.insert(0, (0x40_0000, PERM_RWX));
    e12.large.insert(0x20_0000, (0x60_0000, PERM_RWX));
    let n = w
        .set
        .invalidate_single_checked(&mut w.host, &mut w.mm, EPTP_A, &mut |_, g| e12.resolve(g));
    assert_eq!(n, 0);
    w.check();

    // Each kind of change makes the shadow stale: fewer permissions, a
    // remap, an unmap, a large page split into small ones, another
    // memory type, another ignore-PAT bit.
    type Change = fn(&mut Ept12);
    let changes: [(&str, u64, Change); 6] = [
        ("write taken away", 3 * K4, |e| {
            e.pages.insert(3 * K4, (0x40_0000 + 6 * K4, PERM_R));
        }),
        ("remapped", 5 * K4, |e| {
            e.pages.insert(5 * K4, (0x50_0000, PERM_RWX));
        }),
        ("unmapped", 15 * K4, |e| {
            e.pages.remove(&(15 * K4));
        }),
        ("split", 0x20_0000, |e| {
            e.large.clear();
            for i in 0..512 {
                e.pages
                    .insert(0x20_0000 + i * K4, (0x60_0000 + i * K4, PERM_RWX));
            }
        }),
        ("memory type", 0, |_| {}),
        ("ignore PAT", 0, |_| {}),
    ];
    let host_tables = w.host_tables();
    for (what, gone, change) in changes {
        let mut now = Ept12 {
            pages: e12.pages.clone(),
            large: e12.large.clone(),
        };
        change(&mut now);
        let uc = what == "memory type";
        let ipat = what == "ignore PAT";
        let mut resolve = |_: &mut Arena, g: Gpa| {
            now.resolve(g).map(|mut l| {
                if uc && l.gpa.raw() == 0 {
                    l.memtype = MemType::Uc;
                }
                if ipat && l.gpa.raw() == 0 {
                    l.ipat = true;
                }
                l
            })
        };
        let root = w.set.root(EPTP_A).unwrap();
        w.mm.record();
        let n = w
            .set
            .invalidate_single_checked(&mut w.host, &mut w.mm, EPTP_A, &mut resolve);
        let log = w.mm.take_log();
        // One stale leaf of 17: only it is dropped, the shadow kept, its
        // share returned after the one flush.
        assert_eq!(n, 0, "{what}");
        assert_flush_before_returns(&log, root, &host_tables);
        w.check();
        assert_eq!(w.set.root(EPTP_A), Some(root), "{what}");
        assert_eq!(w.set.leaves(EPTP_A), 16, "{what}");
        assert_eq!(w.shadow_maps(EPTP_A, gone), None, "{what}");
        let h = e12.resolve(lit::gpa(gone)).unwrap().hpa.raw();
        assert_eq!(w.host_state(h), Some(PageState::Owned), "{what}");
        for g in (0..16).map(|i| i * K4).chain([0x21_0000]) {
            let dropped = if gone == 0x20_0000 {
                g == 0x21_0000
            } else {
                g == gone
            };
            if !dropped {
                assert!(w.shadow_maps(EPTP_A, g).is_some(), "{what}: {g:#x} kept");
            }
        }
        // Rebuild for the next change.
        let g = if gone == 0x20_0000 { 0x21_0000 } else { gone };
        assert_eq!(e12.fault(&mut w, EPTP_A, g), Ok(Installed::Mapped));
        assert_eq!(w.set.leaves(EPTP_A), 17, "{what}");
    }
    assert_eq!(w.set.stats().partial, 6);
    assert_eq!(w.set.stats().leaves_dropped, 6);
}

/// The two steps of a re-validating INVEPT as root mode runs them: the
/// resolver reads the host EPT through the `MmOps` it is handed (the
/// integration walks EPT12 through host memory with it) while the set is
/// borrowed; then the answer keeps or retires the shadow.
#[test]
fn revalidation_in_two_steps_lets_the_resolver_use_the_mm_and_the_host_ept() {
    let (mut w, mut e12) = staged(1 << 12, 4, 0x40_0000);
    let root = w.set.root(EPTP_A).unwrap();
    // No shadow for that pointer: nothing to say, nothing kept.
    let none = w
        .set
        .is_current(&mut w.mm, EPTP_B, &mut |_, g| e12.resolve(g));
    assert_eq!(none, None);
    assert_eq!(w.set.revalidated(&mut w.host, &mut w.mm, EPTP_B, false), 0);

    let host = &w.host;
    let mut seen = 0;
    let current = w.set.is_current(&mut w.mm, EPTP_A, &mut |mm, g| {
        let l = e12.resolve(g)?;
        let e = host.pgt().lookup(mm, l.hpa).ok()?;
        assert_eq!(EptFormat::state(e.entry), PageState::SharedOwned);
        seen += 1;
        Some(l)
    });
    assert_eq!((current, seen), (Some(true), 4));
    w.mm.record();
    assert_eq!(w.set.revalidated(&mut w.host, &mut w.mm, EPTP_A, true), 0);
    assert_eq!(w.mm.take_log(), Vec::new());
    assert_eq!(w.set.stats().kept, 1);
    assert_eq!(w.set.root(EPTP_A), Some(root));
    w.check();

    // The host unmapped a page: that leaf is stale and dropped alone,
    // after the flush.
    e12.pages.remove(&(2 * K4));
    let current = w
        .set
        .is_current(&mut w.mm, EPTP_A, &mut |_, g| e12.resolve(g));
    assert_eq!(current, Some(false));
    let host_tables = w.host_tables();
    w.mm.record();
    assert_eq!(w.set.revalidated(&mut w.host, &mut w.mm, EPTP_A, false), 0);
    assert_flush_before_returns(&w.mm.take_log(), root, &host_tables);
    assert_eq!(w.set.root(EPTP_A), Some(root));
    w.check();
    for i in 0..4 {
        let (state, mapped) = if i == 2 {
            (PageState::Owned, None)
        } else {
            (PageState::SharedOwned, Some((0x40_0000 + i * K4, PERM_RWX)))
        };
        assert_eq!(w.host_state(0x40_0000 + i * K4), Some(state));
        assert_eq!(w.shadow_maps(EPTP_A, i * K4), mapped);
    }
    // Everything stale: retired whole, the flush first.
    e12.pages.clear();
    let current = w
        .set
        .is_current(&mut w.mm, EPTP_A, &mut |_, g| e12.resolve(g));
    assert_eq!(current, Some(false));
    w.mm.record();
    assert_eq!(w.set.revalidated(&mut w.host, &mut w.mm, EPTP_A, false), 1);
    assert_eq!(w.mm.take_log().first(), Some(&whole_flush(root)));
    assert_eq!(w.set.root(EPTP_A), None);
    w.check();
    for i in 0..4 {
        assert_eq!(w.host_state(0x40_0000 + i * K4), Some(PageState::Owned));
    }
}

/// A shadow with more leaves than a re-validation compares is retired
/// without the comparison (the time under the lock is bounded).
#[test]
fn revalidation_retires_a_shadow_with_too_many_leaves_unread() {
    let mut w = world(1 << 14);
    let mut e12 = Ept12::default();
    let n = REVALIDATE_MAX_LEAVES + 1;
    for i in 0..n {
        e12.pages.insert(i * K4, (0x40_0000 + i * K4, PERM_RWX));
    }
    for i in 0..n {
        let r = w.set.install(
            &mut w.host,
            &mut w.mm,
            EPTP_A,
            lit::gpa(i * K4),
            &e12.resolve(lit::gpa(i * K4)).unwrap(),
        );
        assert_eq!(r, Ok(Installed::Mapped));
    }
    w.check();
    let mut asked = 0;
    let current = w.set.is_current(&mut w.mm, EPTP_A, &mut |_, g| {
        asked += 1;
        e12.resolve(g)
    });
    assert_eq!((current, asked), (Some(false), 0));
    assert_eq!(
        w.set
            .invalidate_single_checked(&mut w.host, &mut w.mm, EPTP_A, &mut |_, g| e12.resolve(g)),
        1
    );
    w.check();
    assert_eq!(w.host_state(0x40_0000), Some(PageState::Owned));
}

#[test]
fn revalidating_invept_global_drops_only_the_stale_leaves() {
    let (mut w, e12) = staged(1 << 12, 8, 0x40_0000);
    let mut f12 = Ept12::default();
    for i in 0..8 {
        f12.pages.insert(i * K4, (0x50_0000 + i * K4, PERM_RWX));
    }
    for i in 0..8 {
        f12.fault(&mut w, EPTP_B, i * K4).unwrap();
    }
    f12.pages.remove(&(7 * K4));
    let (ka, kb) = (ShadowEpts::key(EPTP_A), ShadowEpts::key(EPTP_B));
    let n = w
        .set
        .invalidate_all_checked(&mut w.host, &mut w.mm, &mut |_, key, g| {
            if key == ka {
                e12.resolve(g)
            } else {
                assert_eq!(key, kb);
                f12.resolve(g)
            }
        });
    assert_eq!(n, 0);
    w.check();
    assert!(w.set.root(EPTP_A).is_some());
    assert!(w.set.root(EPTP_B).is_some());
    assert_eq!(w.set.leaves(EPTP_A), 8);
    assert_eq!(w.set.leaves(EPTP_B), 7);
    assert_eq!(w.host_state(0x50_7000), Some(PageState::Owned));
    assert_eq!(w.host_state(0x50_0000), Some(PageState::SharedOwned));
    assert_eq!(w.set.stats().kept, 1);
    assert_eq!(w.set.stats().partial, 1);
    assert_eq!(w.set.stats().flushes, 1);
    // B wholly stale now: retired; A kept.
    f12.pages.clear();
    let n = w
        .set
        .invalidate_all_checked(&mut w.host, &mut w.mm, &mut |_, key, g| {
            if key == ka {
                e12.resolve(g)
            } else {
                f12.resolve(g)
            }
        });
    assert_eq!(n, 1);
    w.check();
    assert!(w.set.root(EPTP_A).is_some());
    assert_eq!(w.set.root(EPTP_B), None);
    assert_eq!(w.host_state(0x50_0000), Some(PageState::Owned));
}

/// The partial drop: of 41 leaves, three are stale (a remap, an unmap, and
/// an unmap of a leaf alone in its own tables).  Only their entries are
/// written (revoked), then the shadow is flushed once, then their shares
/// go back and the tables they leave empty are freed; the 38 current
/// leaves are never stored to.  Fails if the flush is moved after the
/// returns.
#[test]
fn partial_drop_keeps_current_leaves_and_returns_stale_shares_after_the_flush() {
    let (mut w, mut e12) = staged(1 << 12, 40, 0x40_0000);
    let far = 0x80_0000_0000;
    e12.pages.insert(far, (0x48_0000, PERM_RWX));
    assert_eq!(e12.fault(&mut w, EPTP_A, far), Ok(Installed::Mapped));
    let root = w.set.root(EPTP_A).unwrap();
    let tables = w.set.table_pages(EPTP_A);
    assert_eq!(tables, w.shadow_tables(EPTP_A).len());
    let host_tables = w.host_tables();
    let stale = [3 * K4, 17 * K4, far];
    let kept: Vec<_> = (0..40)
        .map(|i| i * K4)
        .filter(|g| !stale.contains(g))
        .map(|g| {
            let g_ = w.set.guest(EPTP_A).unwrap();
            (g, g_.pgt().lookup(&mut w.mm, lit::gpa(g)).unwrap())
        })
        .collect();
    e12.pages.insert(3 * K4, (0x50_0000, PERM_RWX));
    e12.pages.remove(&(17 * K4));
    e12.pages.remove(&far);
    let live = w.mm.live();

    w.mm.record();
    let n = w
        .set
        .invalidate_single_checked(&mut w.host, &mut w.mm, EPTP_A, &mut |_, g| e12.resolve(g));
    let log = w.mm.take_log();
    w.check();
    assert_eq!(n, 0, "kept");
    assert_eq!(w.set.root(EPTP_A), Some(root));
    let at = assert_flush_before_returns(&log, root, &host_tables);
    // Before the flush: only the three revocations, each a non-present
    // entry that still holds its leaf's address.
    let before: Vec<_> = log.iter().take(at).collect();
    assert_eq!(before.len(), 3, "{before:#x?}");
    for e in before {
        let Event::Store { v, .. } = *e else {
            panic!("{e:x?}")
        };
        assert!(v != 0 && !EptFormat::is_present(v), "{v:#x}");
    }
    // No store to a current leaf, and each is as it was.
    for (g, l) in &kept {
        assert!(
            !log.iter().any(|e| matches!(*e,
                Event::Store { table, idx, .. } if table == l.table && idx == l.index)),
            "{g:#x} stored to"
        );
        let now = w.set.guest(EPTP_A).unwrap();
        assert_eq!(
            now.pgt().lookup(&mut w.mm, lit::gpa(*g)).unwrap().entry,
            l.entry
        );
    }
    for (g, h) in [(3 * K4, 0x40_3000), (17 * K4, 0x41_1000), (far, 0x48_0000)] {
        assert_eq!(w.shadow_maps(EPTP_A, g), None, "{g:#x}");
        assert_eq!(w.host_state(h), Some(PageState::Owned), "{h:#x}");
        assert_eq!(w.count(h), 0);
    }
    // The far leaf's three tables (PDPT, PD, PT) are freed; the count is
    // exact again.
    assert_eq!(w.set.table_pages(EPTP_A), tables - 3);
    // The list's page is given back too: only the three tables are gone.
    assert_eq!(w.mm.live(), live - 3);
    assert_eq!(w.shadow_tables(EPTP_A).len(), tables - 3);
    assert_eq!(w.set.leaves(EPTP_A), 38);
    let st = *w.set.stats();
    assert_eq!(
        (
            st.partial,
            st.leaves_dropped,
            st.flushes,
            st.unshared,
            st.invalidated
        ),
        (1, 3, 1, 3, 0)
    );
    // The guest re-faults what it touches: the new translation.
    assert_eq!(e12.fault(&mut w, EPTP_A, 3 * K4), Ok(Installed::Mapped));
    assert_eq!(w.shadow_maps(EPTP_A, 3 * K4), Some((0x50_0000, PERM_RWX)));
    // Current again: kept, nothing written.
    w.mm.record();
    let n = w
        .set
        .invalidate_single_checked(&mut w.host, &mut w.mm, EPTP_A, &mut |_, g| e12.resolve(g));
    assert_eq!((n, w.mm.take_log()), (0, Vec::new()));
}

/// Counted shares under partial drops: one host page mapped at two
/// addresses of one shadow and at one of another.  Each drop takes one
/// count; the page is the host's alone only when the last goes.
#[test]
fn partial_drop_counts_a_page_shared_by_two_shadows_and_two_addresses() {
    let mut w = world(1 << 12);
    let h = 0x40_0000;
    let mut a12 = Ept12::default();
    let mut b12 = Ept12::default();
    for (g, hh) in [(0x1000, h), (0x2000, h), (0x3000, h + 0x3000)] {
        a12.pages.insert(g, (hh, PERM_RWX));
        a12.fault(&mut w, EPTP_A, g).unwrap_or_else(|_| panic!());
    }
    for (g, hh) in [(0x5000, h), (0x6000, h + 0x6000)] {
        b12.pages.insert(g, (hh, PERM_RWX));
        b12.fault(&mut w, EPTP_B, g).unwrap_or_else(|_| panic!());
    }
    assert_eq!(w.count(h), 3);
    let host_tables = w.host_tables();
    let drop = |w: &mut W, eptp: u64, e12: &Ept12| {
        let root = w.set.root(eptp).unwrap();
        w.mm.record();
        let n = w
            .set
            .invalidate_single_checked(&mut w.host, &mut w.mm, eptp, &mut |_, g| e12.resolve(g));
        assert_eq!(n, 0);
        assert_flush_before_returns(&w.mm.take_log(), root, &host_tables);
        w.check();
    };
    a12.pages.remove(&0x1000);
    drop(&mut w, EPTP_A, &a12);
    assert_eq!(
        (w.count(h), w.host_state(h)),
        (2, Some(PageState::SharedOwned))
    );
    assert_eq!(w.shadow_maps(EPTP_A, 0x2000), Some((h, PERM_RWX)));
    a12.pages.remove(&0x2000);
    drop(&mut w, EPTP_A, &a12);
    assert_eq!(
        (w.count(h), w.host_state(h)),
        (1, Some(PageState::SharedOwned))
    );
    assert_eq!(w.shadow_maps(EPTP_B, 0x5000), Some((h, PERM_RWX)));
    b12.pages.remove(&0x5000);
    drop(&mut w, EPTP_B, &b12);
    assert_eq!((w.count(h), w.host_state(h)), (0, Some(PageState::Owned)));
    assert_eq!(w.set.leaves(EPTP_A), 1);
    assert_eq!(w.set.leaves(EPTP_B), 1);
    assert_eq!(w.host_state(h + 0x3000), Some(PageState::SharedOwned));
    assert_eq!(w.set.stats().partial, 3);
}

/// At most [`PARTIAL_MAX_STALE`] stale leaves are dropped one by one; one
/// more retires the shadow whole (as does every leaf being stale, in
/// `revalidation_in_two_steps_...`).
#[test]
fn partial_drop_is_bounded_beyond_it_the_shadow_is_retired() {
    let max = PARTIAL_MAX_STALE as u64;
    for (stale, whole) in [(max, false), (max + 1, true)] {
        let (mut w, mut e12) = staged(1 << 13, max + 8, 0x40_0000);
        let root = w.set.root(EPTP_A).unwrap();
        // After a current leaf (two stale leaves first retire it whole).
        for i in 1..=stale {
            e12.pages.remove(&(i * K4));
        }
        let n = w
            .set
            .invalidate_single_checked(&mut w.host, &mut w.mm, EPTP_A, &mut |_, g| e12.resolve(g));
        w.check();
        assert_eq!(n, usize::from(whole), "{stale}");
        if whole {
            assert_eq!(w.set.root(EPTP_A), None);
            assert_eq!(w.set.stats().partial, 0);
        } else {
            assert_eq!(w.set.root(EPTP_A), Some(root));
            assert_eq!(w.set.leaves(EPTP_A), 8);
            assert_eq!(w.set.stats().leaves_dropped, max);
        }
        assert_eq!(w.set.stats().flushes, 1);
        assert_eq!(w.host_state(0x40_1000), Some(PageState::Owned));
    }
}

#[test]
fn no_table_page_evicts_the_least_recently_used_other_shadow_and_retries() {
    let mut w = world(1 << 12);
    fill(&mut w, EPTP_A, 0, 0x40_0000, 4);
    fill(&mut w, EPTP_B, 0, 0x50_0000, 4);
    fill(&mut w, EPTP_C, 0, 0x60_0000, 4);
    // A used again: B is now the least recently used.
    assert_eq!(
        w.install(EPTP_A, 0, &page(0, 0x40_0000)),
        Ok(Installed::AlreadyPresent)
    );
    // C's next leaf needs a new table (another 2 MiB region); the next
    // allocation fails once.
    w.mm.fail_nth(Some(1));
    let l = page(0x4000_0000, 0x61_0000);
    assert_eq!(w.install(EPTP_C, l.gpa.raw(), &l), Ok(Installed::Mapped));
    assert_eq!(w.mm.failed_allocs, 1);
    assert_eq!(w.set.root(EPTP_B), None, "B evicted");
    assert!(w.set.root(EPTP_A).is_some() && w.set.root(EPTP_C).is_some());
    assert_eq!(w.host_state(0x50_0000), Some(PageState::Owned));
    assert_eq!(w.set.stats().evicted, 1);
    assert_eq!(
        w.shadow_maps(EPTP_C, 0x4000_0000),
        Some((0x61_0000, PERM_RWX))
    );
}

#[test]
fn no_table_page_and_nothing_to_evict_is_no_mapping_this_time() {
    // An arena that holds exactly the host's tables and one shadow root.
    let used = {
        let mut w = world(1 << 12);
        w.set.ensure(&mut w.host, &mut w.mm, EPTP_A).unwrap();
        w.mm.live() as usize
    };
    let mut w = world(used);
    let root = w.set.ensure(&mut w.host, &mut w.mm, EPTP_A).unwrap();
    w.check();
    let live = w.mm.live();
    let l = page(0x1000, 0x40_0000);
    assert_eq!(w.install(EPTP_A, 0x1000, &l), Err(NoMapping::NoMemory));
    assert_eq!(w.mm.live(), live, "nothing allocated");
    assert_eq!(w.host_state(0x40_0000), Some(PageState::Owned));
    assert_eq!(w.set.root(EPTP_A), Some(root), "the shadow itself stays");
}

#[test]
fn a_shadow_root_is_taken_from_the_lru_shadow_when_memory_is_short() {
    let used = {
        let mut w = world(1 << 12);
        w.set.ensure(&mut w.host, &mut w.mm, EPTP_A).unwrap();
        w.mm.live() as usize
    };
    let mut w = world(used);
    w.set.ensure(&mut w.host, &mut w.mm, EPTP_A).unwrap();
    // No page for B's root: A (idle, empty) is retired and its root
    // reused.
    let rb = w.set.ensure(&mut w.host, &mut w.mm, EPTP_B).unwrap();
    w.check();
    assert_eq!(w.set.root(EPTP_A), None);
    assert_eq!(w.set.root(EPTP_B), Some(rb));
    assert_eq!(w.set.len(), 1);
}

#[test]
fn a_shadow_that_would_outgrow_its_bound_starts_over() {
    let mut w = world(1 << 12);
    w.set = ShadowEpts::with_table_limit(8);
    // Root, PDPT, PD and one last-level table per 2 MiB region: leaves in
    // five regions fill 8 pages.
    for k in 0..5u64 {
        let l = page(k * M2, 0x40_0000 + k * K4);
        assert_eq!(w.install(EPTP_A, l.gpa.raw(), &l), Ok(Installed::Mapped));
    }
    assert_eq!(w.set.table_pages(EPTP_A), 8);
    assert_eq!(
        w.set.guest(EPTP_A).unwrap().pgt().table_pages(&mut w.mm),
        Ok(8)
    );
    // Another region in the same table needs no new page...
    let l = page(M2 + K4, 0x41_0000);
    assert_eq!(w.install(EPTP_A, l.gpa.raw(), &l), Ok(Installed::Mapped));
    // ... a sixth region would be a ninth page: the shadow is retired
    // (shares back after its flush) and rebuilt with this leaf alone.
    let old = w.set.root(EPTP_A).unwrap();
    let l = page(5 * M2, 0x42_0000);
    w.mm.record();
    assert_eq!(w.install(EPTP_A, l.gpa.raw(), &l), Ok(Installed::Mapped));
    let flush = Event::Invalidate {
        kind: TableKind::GuestEpt,
        root: old,
        addr: 0,
        size: ADDR_LIMIT,
    };
    assert_eq!(w.mm.take_log().first(), Some(&flush));
    assert_eq!(w.set.leaves(EPTP_A), 1);
    assert_eq!(w.set.table_pages(EPTP_A), 4);
    assert_eq!(w.set.stats().evicted, 1);
    assert_eq!(w.set.stats().flushes, 1);
    assert!(w.set.root(EPTP_A).is_some());
    for k in 0..5u64 {
        assert_eq!(w.host_state(0x40_0000 + k * K4), Some(PageState::Owned));
    }
    assert_eq!(w.host_state(0x41_0000), Some(PageState::Owned));
    assert_eq!(w.shadow_maps(EPTP_A, 5 * M2), Some((0x42_0000, PERM_RWX)));
    assert_eq!(w.shadow_maps(EPTP_A, 0), None);
}

#[test]
fn slots_are_bounded_and_the_lru_shadow_gives_its_slot() {
    let mut w = world(1 << 14);
    let eptp = |i: u64| (0x100_0000 + i * K4) | 0x1e;
    for i in 0..MAX_SHADOWS as u64 {
        let l = page(0, 0x40_0000 + i * K4);
        assert_eq!(w.install(eptp(i), 0, &l), Ok(Installed::Mapped));
    }
    // Shadow 0 is used again; shadow 1 is the least recently used.
    assert_eq!(
        w.install(eptp(0), 0, &page(0, 0x40_0000)),
        Ok(Installed::AlreadyPresent)
    );
    let n = MAX_SHADOWS as u64;
    assert_eq!(
        w.install(eptp(n), 0, &page(0, 0x40_0000 + n * K4)),
        Ok(Installed::Mapped)
    );
    assert_eq!(w.set.len(), MAX_SHADOWS);
    assert_eq!(w.set.root(eptp(1)), None);
    assert!(w.set.root(eptp(0)).is_some());
    assert_eq!(w.host_state(0x40_1000), Some(PageState::Owned));
    // Every shadow is its own guest with its own owner id.
    let ids: HashSet<_> = w.set.guests().map(GuestEpt::id).collect();
    assert_eq!(ids.len(), MAX_SHADOWS);
}

#[test]
fn teardown_returns_every_share_and_page() {
    let mut w = world(1 << 12);
    let live = w.mm.live();
    fill(&mut w, EPTP_A, 0, 0x40_0000, 30);
    fill(&mut w, EPTP_B, 0x4000_0000, 0x50_0000, 30);
    let big = leaf(0x20_0000, 0x60_0000, M2, PERM_RWX);
    assert_eq!(w.install(EPTP_C, 0x20_0000, &big), Ok(Installed::Mapped));
    assert_eq!(w.set.destroy_all(&mut w.host, &mut w.mm), Ok(()));
    w.check();
    assert!(w.set.is_empty());
    // Every page the host shared is its own again.
    let mut shared = 0;
    w.host
        .pgt()
        .for_each_leaf(&mut w.mm, lit::hpa(0), RAM, |_, _, e| {
            shared += u64::from(EptFormat::state(e) != PageState::Owned);
            Ok(())
        })
        .unwrap();
    assert_eq!(shared, 0);
    // No count is left, and no leaf page of the counts: only their
    // directories (root, one level-2 and one level-1 page for this low
    // memory), which stay until the host EPT goes.
    assert!(!w
        .host
        .share_counts()
        .any_shared(&mut w.mm, lit::hpa(0), RAM)
        .unwrap());
    let count_pages = w.host.share_counts().table_pages();
    assert_eq!(count_pages, 3);
    // No shadow table page is left; the host EPT keeps the pages its
    // splits took (it does not merge back).
    let host_pages = w.host.pgt().table_pages(&mut w.mm).unwrap() as u64;
    let hyp_pages = w.hyp.pgt().table_pages(&mut w.mm).unwrap() as u64;
    assert_eq!(w.mm.live(), host_pages + hyp_pages + count_pages);
    assert!(w.mm.live() >= live);
    // And the set works again afterwards.
    assert_eq!(
        w.install(EPTP_A, 0, &page(0, 0x40_0000)),
        Ok(Installed::Mapped)
    );
}

/// Random installs, INVEPTs (single and global) and allocation failures
/// over four EPT pointers against a model of what each shadow maps and
/// how many shadow leaves share each host page (counted shares: any number
/// of shadows and addresses may map one host page; only pages the host
/// cannot share with a guest are refused: one it shares with the
/// hypervisor, one it donated to it); the invariants after every step,
/// and a teardown that leaves no shadow page and no count.
#[test]
fn random_operations_match_a_model() {
    use crate::hv::mm::pgtable::tests::Rng;
    use std::collections::HashMap;

    const EPTPS: [u64; 4] = [EPTP_A, EPTP_B, EPTP_C, 0x0040_0000 | 0x18];
    // How often each outcome was seen: present, mapped, refused, no
    // memory, evictions, replaced.
    let mut seen = [0u64; 6];
    // The most shadow leaves seen sharing one host page at once.
    let mut max_users = 0u32;
    for seed in 0..4u64 {
        let mut rng = Rng(0x5ad0 + seed);
        let mut w = world(1 << 12);
        let base = w.mm.live();
        // Host pages 0..24 of the range are the host's; 24 it shares with
        // the hypervisor, 25 it donated to it.
        let hyp_shared = 0x40_0000 + 24 * K4;
        let hyp_owned = 0x40_0000 + 25 * K4;
        host_share_hyp(&mut w.host, &mut w.hyp, &mut w.mm, lit::hpa(hyp_shared), 1).unwrap();
        host_donate_hyp(&mut w.host, &mut w.hyp, &mut w.mm, lit::hpa(hyp_owned), 1).unwrap();
        // (eptp index, guest page) -> host page.
        let mut map: HashMap<(usize, u64), u64> = HashMap::new();
        for step in 0..400 {
            let op = rng.below(20);
            let e = rng.below(4) as usize;
            let eptp = EPTPS[e];
            let why = std::format!("seed {seed} step {step} op {op} eptp {e}");
            match op {
                0 => {
                    let had = map.keys().any(|k| k.0 == e);
                    let n = w.set.invalidate_single(&mut w.host, &mut w.mm, eptp);
                    assert_eq!(n, usize::from(had), "{why}");
                    map.retain(|k, _| k.0 != e);
                }
                1 => {
                    let busy: HashSet<usize> = map.keys().map(|k| k.0).collect();
                    let n = w.set.invalidate_all(&mut w.host, &mut w.mm);
                    assert_eq!(n, busy.len(), "{why}");
                    map.clear();
                }
                _ => {
                    let g = 0x20_0000 * rng.below(2) + K4 * rng.below(8);
                    let h = 0x40_0000 + K4 * rng.below(26);
                    let fail = rng.below(8) == 0;
                    if fail {
                        w.mm.fail_nth(Some(1));
                    }
                    let r = w
                        .set
                        .install(&mut w.host, &mut w.mm, eptp, lit::gpa(g), &page(g, h));
                    w.mm.fail_nth(None);
                    // Not a page the host may share with a guest.
                    let bad = h == hyp_shared || h == hyp_owned;
                    // What the shadow had at `g`: the same page, another
                    // one (the host remapped: replaced), or nothing.
                    let before = map.get(&(e, g)).copied();
                    let stale = before.is_some_and(|o| o != h);
                    match r {
                        Ok(Installed::AlreadyPresent) => {
                            seen[0] += 1;
                            assert_eq!(before, Some(h), "{why}")
                        }
                        Ok(Installed::Mapped) => {
                            seen[1] += 1;
                            assert!(before.is_none() && !bad, "{why}");
                            map.insert((e, g), h);
                        }
                        Ok(Installed::Replaced) => {
                            seen[5] += 1;
                            assert!(stale && !bad, "{why}");
                            map.insert((e, g), h);
                        }
                        // A failure after a stale leaf was dropped leaves
                        // nothing at `g`.
                        Err(NoMapping::Refused) => {
                            seen[2] += 1;
                            assert!(before != Some(h) && bad, "{why}");
                            map.remove(&(e, g));
                        }
                        Err(NoMapping::NoMemory) => {
                            seen[3] += 1;
                            assert!(fail && before != Some(h), "{why}");
                            map.remove(&(e, g));
                        }
                        other => panic!("{why}: {other:?}"),
                    }
                }
            }
            // Shadows evicted for memory are gone whole.
            for (i, &p) in EPTPS.iter().enumerate() {
                if w.set.root(p).is_none() {
                    map.retain(|k, _| k.0 != i);
                }
                let n = map.keys().filter(|k| k.0 == i).count() as u64;
                assert_eq!(w.set.leaves(p), n, "{why}: leaves of {i}");
            }
            w.check();
            for (&(i, g), &h) in &map {
                assert_eq!(w.shadow_maps(EPTPS[i], g), Some((h, PERM_RWX)), "{why}");
            }
            for k in 0..24 {
                let h = 0x40_0000 + K4 * k;
                let users = map.values().filter(|&&v| v == h).count() as u32;
                max_users = max_users.max(users);
                assert_eq!(w.count(h), users, "{why}: count of {h:#x}");
                let want = if users > 0 {
                    PageState::SharedOwned
                } else {
                    PageState::Owned
                };
                assert_eq!(w.host_state(h), Some(want), "{why}: host page {h:#x}");
            }
            assert_eq!(w.count(hyp_shared), 0, "{why}");
            assert_eq!(w.host_state(hyp_shared), Some(PageState::SharedOwned));
            assert_eq!(w.count(hyp_owned), 0, "{why}");
        }
        seen[4] += w.set.stats().evicted;
        assert_eq!(w.set.destroy_all(&mut w.host, &mut w.mm), Ok(()));
        w.check();
        assert!(!w
            .host
            .share_counts()
            .any_shared(&mut w.mm, lit::hpa(0), RAM)
            .unwrap());
        // Only the counts' directories stay (root, level 2, level 1).
        let count_pages = w.host.share_counts().table_pages();
        assert_eq!(count_pages, 3);
        let host_pages = w.host.pgt().table_pages(&mut w.mm).unwrap() as u64;
        let hyp_pages = w.hyp.pgt().table_pages(&mut w.mm).unwrap() as u64;
        assert_eq!(w.mm.live(), host_pages + hyp_pages + count_pages);
        assert!(w.mm.live() >= base);
    }
    assert!(
        seen.iter().all(|&n| n > 0),
        "every outcome exercised: {seen:?}"
    );
    assert!(
        max_users >= 3,
        "host pages shared several times: {max_users}"
    );
}

/// A shadow whose first two leaves are stale (KVM moved to a new root and
/// zapped the old one) is retired whole after two resolutions, not one
/// per leaf.
#[test]
fn a_shadow_stale_from_its_first_leaves_is_retired_without_a_full_scan() {
    let (mut w, mut e12) = staged(1 << 12, 16, 0x40_0000);
    e12.pages.clear();
    let mut asked = 0;
    let n = w
        .set
        .invalidate_single_checked(&mut w.host, &mut w.mm, EPTP_A, &mut |_, g| {
            asked += 1;
            e12.resolve(g)
        });
    w.check();
    assert_eq!((n, asked), (1, 2));
    assert_eq!(w.set.root(EPTP_A), None);
    assert_eq!(w.set.stats().partial, 0);
    assert_eq!(w.host_state(0x40_f000), Some(PageState::Owned));
}
