// SPDX-License-Identifier: GPL-2.0

//! Tests of the page-state transitions: a reference model, exhaustive
//! single- and two-page state spaces, random operation sequences with
//! allocation failures, and large ranges.

use std::collections::{BTreeMap, BTreeSet};
use std::vec::Vec;

use super::*;
use crate::hv::mm::addr::lit;
use crate::hv::mm::invariants::{self, Claim};
use crate::hv::mm::pgtable::tests::Rng;
use crate::hv::mm::pgtable::PERM_X;
use crate::hv::mm::sim::Arena;
use crate::hv::mm::vm_table::VmTable;

pub(crate) const K4: u64 = 4096;
pub(crate) const M2: u64 = 2 << 20;
pub(crate) const G1: u64 = 1 << 30;
/// Host RAM: [0, RAM).
pub(crate) const RAM: u64 = 4 * G1;
/// Where the hypervisor maps `pa` (an upper-half offset).
pub(crate) const HYP_OFFSET: u64 = 0xffff_8000_0000_0000;

/// One page as the reference model sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Pg {
    /// host OWNED.
    Host,
    /// host NOPAGE(HYP), hyp OWNED.
    Hyp,
    /// host SHARED_OWNED, hyp SHARED_BORROWED.
    HypShared,
    /// host SHARED_OWNED, shared with normal VMs: the guest addresses are
    /// the model's `gmap` entries for the page, their number its count.
    Shared,
    /// host PINNED (module image): no transition accepts it.
    Pinned,
    /// host NOPAGE(guest), guest OWNED at gpa.
    Owned(u32, u64),
    /// host SHARED_BORROWED, guest SHARED_OWNED at gpa.
    Back(u32, u64),
}

/// A transition with its arguments (guests by handle).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    DonateHyp(u64, u64),
    HypDonateHost(u64, u64),
    ShareHyp(u64, u64),
    UnshareHyp(u64, u64),
    ShareGuest(u32, u64, u64, u64),
    UnshareGuest(u32, u64, u64, u64),
    DonateGuest(u32, u64, u64, u64),
    GuestShare(u32, u64, u64),
    GuestUnshare(u32, u64, u64),
    Reclaim(u32, u64, u64),
}

/// The reference model: what every page is, what every guest maps.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Model {
    pages: BTreeMap<u64, Pg>,
    gmap: BTreeMap<(u32, u64), u64>,
    /// Share count of every `Pg::Shared` page (absent: 0).
    counts: BTreeMap<u64, u32>,
    guests: BTreeMap<u32, (VmKind, bool)>,
    /// Ranges `[start, end)` that are not RAM (MMIO) although the host
    /// maps them; `ram_limited`: RAM ends at [`RAM`] (else everything is).
    mmio: Vec<(u64, u64)>,
    ram_limited: bool,
}

/// A host-physical address from a test's number (`Inval` if it cannot be
/// one, as the hypercall layer answers).
pub(crate) fn hp(a: u64) -> Result<Hpa> {
    Hpa::new(a).ok_or(Error::Inval)
}

/// A guest-physical address from a test's number.
pub(crate) fn gp(a: u64) -> Result<Gpa> {
    Gpa::new(a).ok_or(Error::Inval)
}

fn range_ok(addr: u64, n: u64) -> bool {
    n != 0
        && addr & (K4 - 1) == 0
        && n.checked_mul(K4)
            .and_then(|s| addr.checked_add(s))
            .is_some_and(|e| e <= ADDR_LIMIT)
}

impl Model {
    pub(crate) fn pg(&self, p: u64) -> Pg {
        self.pages.get(&p).copied().unwrap_or(Pg::Host)
    }

    fn set(&mut self, p: u64, v: Pg) {
        assert!(p < RAM);
        assert!(self.pg(p) != Pg::Pinned, "{p:#x} is pinned");
        if v == Pg::Host {
            self.pages.remove(&p);
        } else {
            self.pages.insert(p, v);
        }
    }

    /// The share count of page `p`.
    pub(crate) fn count(&self, p: u64) -> u32 {
        self.counts.get(&p).copied().unwrap_or(0)
    }

    /// One guest mapping of `p` more (`true`) or less.
    fn count_share(&mut self, p: u64, more: bool) {
        let c = self.count(p);
        let c = if more { c + 1 } else { c - 1 };
        if c == 0 {
            self.counts.remove(&p);
            self.set(p, Pg::Host);
        } else {
            self.counts.insert(p, c);
            self.set(p, Pg::Shared);
        }
    }

    /// Some guest address mapping page `p`, if any.
    pub(crate) fn mapping_of(&self, p: u64) -> Option<(u32, u64)> {
        self.gmap.iter().find(|(_, &q)| q == p).map(|(k, _)| *k)
    }

    pub(crate) fn add_guest(&mut self, h: u32, kind: VmKind) {
        self.guests.insert(h, (kind, false));
    }

    /// Whether every page of `n` at `pa` is RAM (the host EPT's RAM map).
    fn is_ram(&self, pa: u64, n: u64) -> bool {
        (0..n).all(|i| {
            let p = pa + i * K4;
            (!self.ram_limited || p < RAM) && !self.mmio.iter().any(|&(s, e)| s <= p && p < e)
        })
    }

    fn all(&self, pa: u64, n: u64, f: impl Fn(u64, Pg) -> bool) -> bool {
        (0..n).all(|i| pa + i * K4 < RAM && f(i, self.pg(pa + i * K4)))
    }

    fn gpa_free(&self, h: u32, gpa: u64, n: u64) -> bool {
        (0..n).all(|i| !self.gmap.contains_key(&(h, gpa + i * K4)))
    }

    fn guest_is(&self, h: u32, kind: VmKind) -> bool {
        self.guests.get(&h) == Some(&(kind, false))
    }

    /// Applies `op` if it is allowed; the error the implementation must give
    /// otherwise.
    pub(crate) fn apply(&mut self, op: Op) -> Result {
        use Op::*;
        let (ranges, perm_ok): (Vec<(u64, u64)>, bool) = match op {
            DonateHyp(pa, n) | HypDonateHost(pa, n) | ShareHyp(pa, n) | UnshareHyp(pa, n) => {
                (std::vec![(pa, n)], true)
            }
            ShareGuest(h, hpa, gpa, n) => (
                std::vec![(hpa, n), (gpa, n)],
                self.guest_is(h, VmKind::Normal),
            ),
            DonateGuest(h, hpa, gpa, n) => (
                std::vec![(hpa, n), (gpa, n)],
                self.guest_is(h, VmKind::Protected),
            ),
            UnshareGuest(_, hpa, gpa, n) => (std::vec![(hpa, n), (gpa, n)], true),
            GuestShare(h, gpa, n) => (std::vec![(gpa, n)], self.guest_is(h, VmKind::Protected)),
            GuestUnshare(_, gpa, n) => (std::vec![(gpa, n)], true),
            Reclaim(h, gpa, size) => (
                std::vec![(gpa, size / K4)],
                self.guests.get(&h).is_some_and(|g| g.1),
            ),
        };
        if let Reclaim(_, _, size) = op {
            if size % K4 != 0 {
                return Err(Error::Inval);
            }
        }
        if !ranges.iter().all(|&(a, n)| range_ok(a, n)) {
            return Err(Error::Inval);
        }
        // Only RAM changes hands: the host's physical range is checked
        // before the VM's kind and before any state.
        match op {
            DonateHyp(pa, n)
            | HypDonateHost(pa, n)
            | ShareHyp(pa, n)
            | UnshareHyp(pa, n)
            | ShareGuest(_, pa, _, n)
            | UnshareGuest(_, pa, _, n)
            | DonateGuest(_, pa, _, n)
                if !self.is_ram(pa, n) =>
            {
                return Err(Error::Inval)
            }
            _ => {}
        }
        if !perm_ok {
            return Err(Error::Perm);
        }
        // A donation of a page guests still map: EBUSY (no reverse map).
        if let DonateHyp(pa, n) | DonateGuest(_, pa, _, n) = op {
            if (0..n).any(|i| self.pg(pa + i * K4) == Pg::Shared) {
                return Err(Error::Busy);
            }
        }
        let ok = match op {
            DonateHyp(pa, n) | ShareHyp(pa, n) => self.all(pa, n, |_, p| p == Pg::Host),
            HypDonateHost(pa, n) => self.all(pa, n, |_, p| p == Pg::Hyp),
            UnshareHyp(pa, n) => self.all(pa, n, |_, p| p == Pg::HypShared),
            ShareGuest(h, hpa, gpa, n) => {
                self.all(hpa, n, |_, p| p == Pg::Host || p == Pg::Shared)
                    && self.gpa_free(h, gpa, n)
            }
            DonateGuest(h, hpa, gpa, n) => {
                self.all(hpa, n, |_, p| p == Pg::Host) && self.gpa_free(h, gpa, n)
            }
            UnshareGuest(h, hpa, gpa, n) => self.all(hpa, n, |i, p| {
                p == Pg::Shared && self.gmap.get(&(h, gpa + i * K4)) == Some(&(hpa + i * K4))
            }),
            GuestShare(h, gpa, n) => (0..n).all(|i| {
                let g = gpa + i * K4;
                self.gmap
                    .get(&(h, g))
                    .is_some_and(|&p| self.pg(p) == Pg::Owned(h, g))
            }),
            GuestUnshare(h, gpa, n) => (0..n).all(|i| {
                let g = gpa + i * K4;
                self.gmap
                    .get(&(h, g))
                    .is_some_and(|&p| self.pg(p) == Pg::Back(h, g))
            }),
            Reclaim(..) => true,
        };
        if !ok {
            return Err(Error::Perm);
        }
        match op {
            DonateHyp(pa, n) => (0..n).for_each(|i| self.set(pa + i * K4, Pg::Hyp)),
            ShareHyp(pa, n) => (0..n).for_each(|i| self.set(pa + i * K4, Pg::HypShared)),
            HypDonateHost(pa, n) | UnshareHyp(pa, n) => {
                (0..n).for_each(|i| self.set(pa + i * K4, Pg::Host))
            }
            ShareGuest(h, hpa, gpa, n) | DonateGuest(h, hpa, gpa, n) => {
                for i in 0..n {
                    let (p, g) = (hpa + i * K4, gpa + i * K4);
                    if matches!(op, ShareGuest(..)) {
                        self.count_share(p, true);
                    } else {
                        self.set(p, Pg::Owned(h, g));
                    }
                    self.gmap.insert((h, g), p);
                }
            }
            UnshareGuest(h, hpa, gpa, n) => {
                for i in 0..n {
                    self.count_share(hpa + i * K4, false);
                    self.gmap.remove(&(h, gpa + i * K4));
                }
            }
            GuestShare(h, gpa, n) | GuestUnshare(h, gpa, n) => {
                for i in 0..n {
                    let g = gpa + i * K4;
                    let p = self.gmap[&(h, g)];
                    let v = if matches!(op, GuestShare(..)) {
                        Pg::Back(h, g)
                    } else {
                        Pg::Owned(h, g)
                    };
                    self.set(p, v);
                }
            }
            Reclaim(h, gpa, size) => {
                let keys: Vec<(u32, u64)> = self
                    .gmap
                    .range((h, gpa)..(h, gpa + size))
                    .map(|(k, _)| *k)
                    .collect();
                for k in keys {
                    let p = self.gmap.remove(&k).unwrap();
                    if self.pg(p) == Pg::Shared {
                        self.count_share(p, false);
                    } else {
                        self.set(p, Pg::Host);
                    }
                }
            }
        }
        Ok(())
    }

    /// Marks guest `h` dying.
    pub(crate) fn set_dying(&mut self, h: u32) {
        if let Some(g) = self.guests.get_mut(&h) {
            g.1 = true;
        }
    }

    /// Forgets guest `h`, which must hold nothing.
    pub(crate) fn remove_guest(&mut self, h: u32) {
        assert!(!self.gmap.keys().any(|k| k.0 == h));
        self.guests.remove(&h);
    }
}

/// Host, hypervisor, guests and memory.
pub(crate) struct World {
    pub(crate) mm: Arena,
    pub(crate) host: HostEpt,
    pub(crate) hyp: HypPgt,
    pub(crate) vms: VmTable<4>,
}

impl World {
    pub(crate) fn new() -> Self {
        let mut mm = Arena::new(1 << 16);
        let mut host = HostEpt::new(&mut mm, 3, crate::hv::mm::ram::RamMap::all()).unwrap();
        host.map_memory(&mut mm, Hpa::ZERO, RAM, HOST_OWNED)
            .unwrap();
        let hyp = HypPgt::new(&mut mm, 2, HYP_OFFSET).unwrap();
        Self {
            mm,
            host,
            hyp,
            vms: VmTable::new(),
        }
    }

    /// A world whose host RAM is `[0, RAM)` minus the `mmio` ranges (still
    /// mapped for the host, uncached, as the host EPT maps MMIO) and whose
    /// `pinned` pages are the module image (PINNED, read + execute), as the
    /// module builds it; `model` learns the same.
    pub(crate) fn with_image(pinned: &[u64], mmio: &[(u64, u64)], model: &mut Model) -> Self {
        let mut ram = crate::hv::mm::ram::RamMap::empty();
        let mut a = 0;
        for &(s, e) in mmio {
            if s > a {
                ram.add(a, s).unwrap();
            }
            a = e;
        }
        ram.add(a, RAM).unwrap();
        let mut mm = Arena::new(1 << 16);
        let mut host = HostEpt::new(&mut mm, 3, ram).unwrap();
        let mut bounds: Vec<(u64, u64, Attrs)> = Vec::new();
        for &p in pinned {
            bounds.push((
                p,
                p + K4,
                Attrs::wb(PERM_R | PERM_X, crate::hv::mm::ept::PINNED),
            ));
            model.pages.insert(p, Pg::Pinned);
        }
        for &(s, e) in mmio {
            let uc = Attrs {
                memtype: crate::hv::mm::ept::MemType::Uc,
                ..HOST_OWNED
            };
            bounds.push((s, e, uc));
        }
        bounds.sort_by_key(|b| b.0);
        let mut a = 0;
        for (s, e, attrs) in bounds {
            if s > a {
                host.map_memory(&mut mm, lit::hpa(a), s - a, HOST_OWNED)
                    .unwrap();
            }
            host.map_memory(&mut mm, lit::hpa(s), e - s, attrs).unwrap();
            a = e;
        }
        host.map_memory(&mut mm, lit::hpa(a), RAM - a, HOST_OWNED)
            .unwrap();
        model.mmio = mmio.to_vec();
        model.ram_limited = true;
        let hyp = HypPgt::new(&mut mm, 2, HYP_OFFSET).unwrap();
        Self {
            mm,
            host,
            hyp,
            vms: VmTable::new(),
        }
    }

    pub(crate) fn create(&mut self, host_vm: u64, kind: VmKind) -> u32 {
        let h = self
            .vms
            .create(
                &mut self.host,
                &mut self.hyp,
                &mut self.mm,
                host_vm,
                kind,
                lit::hpa(0),
                0,
                3,
            )
            .unwrap();
        h.raw()
    }

    pub(crate) fn guest(&mut self, h: u32) -> &mut GuestEpt {
        self.vms.get_mut(h).unwrap().guest_mut()
    }

    pub(crate) fn run(&mut self, op: Op) -> Result {
        use Op::*;
        let (host, hyp, mm) = (&mut self.host, &mut self.hyp, &mut self.mm);
        fn guest(vms: &mut VmTable<4>, h: u32) -> &mut GuestEpt {
            vms.get_mut(h).unwrap().guest_mut()
        }
        let rwx = PERM_RWX;
        match op {
            DonateHyp(pa, n) => host_donate_hyp(host, hyp, mm, hp(pa)?, n),
            HypDonateHost(pa, n) => hyp_donate_host(host, hyp, mm, hp(pa)?, n),
            ShareHyp(pa, n) => host_share_hyp(host, hyp, mm, hp(pa)?, n),
            UnshareHyp(pa, n) => host_unshare_hyp(host, hyp, mm, hp(pa)?, n),
            ShareGuest(h, hpa, gpa, n) => {
                let g = guest(&mut self.vms, h);
                host_share_guest(host, g, mm, hp(hpa)?, gp(gpa)?, n, rwx)
            }
            UnshareGuest(h, hpa, gpa, n) => {
                let g = guest(&mut self.vms, h);
                host_unshare_guest(host, g, mm, hp(hpa)?, gp(gpa)?, n)
            }
            DonateGuest(h, hpa, gpa, n) => {
                let g = guest(&mut self.vms, h);
                host_donate_guest(host, g, mm, hp(hpa)?, gp(gpa)?, n, rwx)
            }
            GuestShare(h, gpa, n) => {
                guest_share_host(host, guest(&mut self.vms, h), mm, gp(gpa)?, n)
            }
            GuestUnshare(h, gpa, n) => {
                guest_unshare_host(host, guest(&mut self.vms, h), mm, gp(gpa)?, n)
            }
            Reclaim(h, gpa, size) => {
                guest_reclaim(host, guest(&mut self.vms, h), mm, gp(gpa)?, size)
            }
        }
    }

    pub(crate) fn check_invariants(&mut self) {
        let mut scratch = std::vec![Claim::default(); 1 << 14];
        let r = invariants::check(
            &self.host,
            &self.hyp,
            self.vms.guests(),
            &mut self.mm,
            &mut scratch,
        );
        assert_eq!(r, Ok(()), "invariant violated");
        assert!(self.mm.errors.is_empty(), "{:?}", self.mm.errors);
        assert_eq!(self.host.internal_errors(), 0);
    }

    /// Compares every page in `pages` and the totals against the model.
    pub(crate) fn compare(&mut self, m: &Model, pages: impl Iterator<Item = u64>) {
        for p in pages {
            let want = m.pg(p);
            let h = self.host.pgt().lookup(&mut self.mm, lit::hpa(p)).unwrap();
            let hs = EptFormat::state(h.entry);
            let host_ok = match want {
                Pg::Host => hs == PageState::Owned,
                Pg::Hyp => h.entry == 0,
                Pg::HypShared | Pg::Shared => hs == PageState::SharedOwned,
                Pg::Owned(g, _) => h.entry == EptFormat::annotation(OwnerId::new(g).unwrap()),
                Pg::Back(..) => hs == PageState::SharedBorrowed,
                Pg::Pinned => {
                    EptFormat::is_present(h.entry)
                        && hs == crate::hv::mm::ept::PINNED
                        && EptFormat::attrs(h.entry).perms & PERM_W == 0
                }
            };
            assert!(
                host_ok,
                "page {p:#x}: model {want:?}, host {:?}",
                EptEntry(h.entry)
            );
            if EptFormat::is_present(h.entry) {
                let base = p & !(crate::hv::mm::ept::level_size(h.level) - 1);
                assert_eq!(
                    EptFormat::addr(h.entry).wrapping_add(p - base),
                    lit::hpa(p),
                    "identity"
                );
            }
            let va = self.hyp.va(lit::hpa(p), K4).unwrap();
            let y = self.hyp.pgt().lookup(&mut self.mm, va).unwrap();
            let want_hyp = match want {
                Pg::Hyp => Some(PageState::Owned),
                Pg::HypShared => Some(PageState::SharedBorrowed),
                _ => None,
            };
            match want_hyp {
                Some(s) => assert_eq!(HypFormat::state(y.entry), s, "hyp {p:#x}"),
                None => assert_eq!(y.entry, 0, "hyp maps {p:#x}, model {want:?}"),
            }
            let count = self.host.share_counts().get(&self.mm, lit::hpa(p)).unwrap();
            assert_eq!(count, m.count(p), "share count of {p:#x}");
            let mut gw: Vec<(u32, u64, PageState)> = match want {
                Pg::Owned(g, a) => std::vec![(g, a, PageState::Owned)],
                Pg::Back(g, a) => std::vec![(g, a, PageState::SharedOwned)],
                _ => Vec::new(),
            };
            if want == Pg::Shared {
                for (&(g, a), _) in m.gmap.iter().filter(|(_, &q)| q == p) {
                    gw.push((g, a, PageState::SharedBorrowed));
                }
                assert_eq!(gw.len() as u32, m.count(p));
            }
            for (g, gpa, s) in gw {
                let vm = self.vms.get(g).unwrap();
                let l = vm
                    .guest()
                    .pgt()
                    .lookup(&mut self.mm, Gpa::new(gpa).unwrap())
                    .unwrap();
                let base = gpa & !(crate::hv::mm::ept::level_size(l.level) - 1);
                assert_eq!(EptFormat::state(l.entry), s, "guest {g:#x} gpa {gpa:#x}");
                assert_eq!(
                    EptFormat::addr(l.entry).wrapping_add(gpa - base),
                    lit::hpa(p)
                );
            }
        }
        // Nothing mapped beyond what the model knows.
        for &h in m.guests.keys() {
            let vm = self.vms.get(h).unwrap();
            let mut bytes = 0;
            vm.guest()
                .pgt()
                .for_each_leaf(&mut self.mm, lit::gpa(0), ADDR_LIMIT, |_, c, e| {
                    if EptFormat::is_present(e) {
                        bytes += c.hi() - c.lo();
                    }
                    Ok(())
                })
                .unwrap();
            let n = m.gmap.keys().filter(|k| k.0 == h).count() as u64;
            assert_eq!(bytes, n * K4, "guest {h:#x} maps more than the model");
        }
        let mut hyp_bytes = 0;
        self.hyp
            .pgt()
            .for_each_leaf(&mut self.mm, lit::hva(0), ADDR_LIMIT, |_, c, e| {
                if e != 0 {
                    hyp_bytes += c.hi() - c.lo();
                }
                Ok(())
            })
            .unwrap();
        let n = m
            .pages
            .values()
            .filter(|p| matches!(p, Pg::Hyp | Pg::HypShared))
            .count() as u64;
        assert_eq!(hyp_bytes, n * K4, "hyp maps more than the model");
    }

    pub(crate) fn destroy(mut self) {
        let handles: Vec<u32> = self.vms.iter().map(|v| v.handle().raw()).collect();
        for h in handles {
            self.vms
                .teardown(&mut self.host, &mut self.hyp, &mut self.mm, h)
                .unwrap();
        }
        self.host.destroy(&mut self.mm).unwrap();
        self.hyp.destroy(&mut self.mm).unwrap();
        assert_eq!(self.mm.live(), 0, "table pages leaked");
        assert!(self.mm.errors.is_empty(), "{:?}", self.mm.errors);
    }
}

use crate::hv::mm::ept::EptEntry;

// ---------------------------------------------------------------------------
// Exhaustive: every transition from every state of one page.

/// Ways to put page P into each state, and the guest handles involved.
const N: u32 = 0x1000; // normal VM
const A: u32 = 0x1001; // protected VM
const B: u32 = 0x1002; // protected VM
const P: u64 = 3 * M2 + 5 * K4;
const GP: u64 = 7 * K4;

fn world3() -> (World, Model) {
    world3_in(World::new(), Model::default())
}

fn world3_in(mut w: World, mut m: Model) -> (World, Model) {
    assert_eq!(w.create(100, VmKind::Normal), N);
    assert_eq!(w.create(101, VmKind::Protected), A);
    assert_eq!(w.create(102, VmKind::Protected), B);
    m.add_guest(N, VmKind::Normal);
    m.add_guest(A, VmKind::Protected);
    m.add_guest(B, VmKind::Protected);
    (w, m)
}

/// Paths from the initial state to every state of page `p` at guest gpa `g`.
fn paths(p: u64, g: u64) -> Vec<(&'static str, Vec<Op>)> {
    use Op::*;
    std::vec![
        ("host OWNED", std::vec![]),
        ("hyp OWNED", std::vec![DonateHyp(p, 1)]),
        ("shared with hyp", std::vec![ShareHyp(p, 1)]),
        ("shared with N", std::vec![ShareGuest(N, p, g, 1)]),
        ("owned by A", std::vec![DonateGuest(A, p, g, 1)]),
        (
            "A shared back",
            std::vec![DonateGuest(A, p, g, 1), GuestShare(A, g, 1)]
        ),
        ("owned by B", std::vec![DonateGuest(B, p, g, 1)]),
        (
            "B shared back",
            std::vec![DonateGuest(B, p, g, 1), GuestShare(B, g, 1)]
        ),
    ]
}

fn all_ops(p: u64, g: u64) -> Vec<Op> {
    use Op::*;
    let mut v = std::vec![
        DonateHyp(p, 1),
        HypDonateHost(p, 1),
        ShareHyp(p, 1),
        UnshareHyp(p, 1)
    ];
    for h in [N, A, B] {
        v.extend([
            ShareGuest(h, p, g, 1),
            UnshareGuest(h, p, g, 1),
            DonateGuest(h, p, g, 1),
            GuestShare(h, g, 1),
            GuestUnshare(h, g, 1),
            Reclaim(h, g, K4),
        ]);
    }
    v
}

/// The transition table of the module docs, written out for one page:
/// (state, op) -> new state or an error; everything else is EPERM.
fn spec(state: &str, op: Op) -> core::result::Result<&'static str, Error> {
    use Op::*;
    Ok(match (state, op) {
        ("host OWNED", DonateHyp(..)) => "hyp OWNED",
        ("hyp OWNED", HypDonateHost(..)) => "host OWNED",
        ("host OWNED", ShareHyp(..)) => "shared with hyp",
        ("shared with hyp", UnshareHyp(..)) => "host OWNED",
        ("host OWNED", ShareGuest(N, ..)) => "shared with N",
        ("shared with N", UnshareGuest(N, ..)) => "host OWNED",
        // A donation of a page a guest maps: busy, not in the wrong state.
        ("shared with N", DonateHyp(..) | DonateGuest(A | B, ..)) => return Err(Error::Busy),
        ("host OWNED", DonateGuest(A, ..)) => "owned by A",
        ("host OWNED", DonateGuest(B, ..)) => "owned by B",
        ("owned by A", GuestShare(A, ..)) => "A shared back",
        ("A shared back", GuestUnshare(A, ..)) => "owned by A",
        ("owned by B", GuestShare(B, ..)) => "B shared back",
        ("B shared back", GuestUnshare(B, ..)) => "owned by B",
        _ => return Err(Error::Perm),
    })
}

#[test]
fn every_transition_from_every_single_page_state() {
    let ps = paths(P, GP);
    let mut tried = 0;
    for (name, path) in &ps {
        for op in all_ops(P, GP) {
            let (mut w, mut m) = world3();
            for &o in path {
                w.run(o).unwrap();
                m.apply(o).unwrap();
            }
            w.mm.dirty.insert(lit::hpa(P));
            let before = m.clone();
            let r = w.run(op);
            let mr = m.apply(op);
            assert_eq!(r, mr, "{name} + {op:?}: implementation vs model");
            // The spec table agrees with the model, state by state.
            match spec(name, op) {
                Ok(to) => {
                    let (_, p2) = ps.iter().find(|(n, _)| *n == to).unwrap();
                    let (mut w2, mut m2) = world3();
                    for &o in p2 {
                        w2.run(o).unwrap();
                        m2.apply(o).unwrap();
                    }
                    assert_eq!(m.pages, m2.pages, "{name} + {op:?} -> {to}");
                    assert_eq!(m.gmap, m2.gmap, "{name} + {op:?} -> {to}");
                    w2.destroy();
                }
                Err(e) => {
                    assert_eq!(r, Err(e), "{name} + {op:?} must fail");
                    assert_eq!(m, before);
                }
            }
            w.compare(&m, [P, P - K4, P + K4].into_iter());
            w.check_invariants();
            tried += 1;
            w.destroy();
        }
    }
    assert_eq!(tried, 8 * 22);
}

/// The host's permissions on page `p` (0: no access).
fn host_perms(w: &mut World, p: u64) -> u8 {
    let e = w.host.pgt().lookup(&mut w.mm, lit::hpa(p)).unwrap().entry;
    if EptFormat::is_present(e) {
        EptFormat::attrs(e).perms
    } else {
        0
    }
}

/// Every transition that takes access away from the host invalidates the
/// host EPT for that page before it returns, after the last store to the
/// page's entry (in the module: the cross-CPU shootdown, inside the
/// transition, before anything uses the page); a transition that takes
/// nothing away from the host and changes no translation (the page's
/// tables exist already) invalidates nothing in the host EPT.
#[test]
fn access_the_host_loses_is_invalidated_before_the_transition_returns() {
    use crate::hv::mm::addr::TableKind;
    use crate::hv::mm::sim::Event;
    let mut losses = 0;
    for (name, path) in &paths(P, GP) {
        for op in all_ops(P, GP) {
            let (mut w, mut m) = world3();
            // A neighbour's round trip splits the large pages around P
            // first, so what is left to invalidate is P's own access.
            w.run(Op::DonateHyp(P + K4, 1)).unwrap();
            w.run(Op::HypDonateHost(P + K4, 1)).unwrap();
            for &o in path {
                w.run(o).unwrap();
                m.apply(o).unwrap();
            }
            let before = host_perms(&mut w, P);
            let host_root = w.host.pgt().root();
            w.mm.record();
            let r = w.run(op);
            let log = w.mm.take_log();
            let after = host_perms(&mut w, P);
            let leaf = w.host.pgt().lookup(&mut w.mm, lit::hpa(P)).unwrap();
            let last_store = log.iter().rposition(|e| {
                matches!(*e, Event::Store { table, idx, .. }
                    if table == leaf.table && idx == leaf.index)
            });
            let covers = |e: &Event| {
                matches!(*e, Event::Invalidate { kind: TableKind::HostEpt, root, addr, size }
                    if root == host_root && addr <= P && P < addr + size)
            };
            let host_invals = log
                .iter()
                .filter(|e| {
                    matches!(
                        e,
                        Event::Invalidate {
                            kind: crate::hv::mm::addr::TableKind::HostEpt,
                            ..
                        }
                    )
                })
                .count();
            if before & !after != 0 {
                assert!(r.is_ok(), "{name} + {op:?}");
                let s = last_store.expect("the entry was written");
                assert!(
                    log.iter().skip(s + 1).any(covers),
                    "{name} + {op:?}: host access {before:#x} -> {after:#x} never invalidated \
                     after the store at #{s}: {log:#x?}"
                );
                assert_eq!(host_invals, 1, "{name} + {op:?}: one invalidation");
                losses += 1;
            } else {
                assert_eq!(host_invals, 0, "{name} + {op:?}: nothing lost, {log:#x?}");
            }
            w.check_invariants();
            w.destroy();
        }
    }
    // Donations to the hypervisor and to A and B, and A's and B's unshare.
    assert_eq!(losses, 5, "the transitions that take pages from the host");
}

#[test]
fn reclaim_from_every_state_of_a_dying_guest() {
    for (name, path) in paths(P, GP) {
        for h in [N, A, B] {
            let (mut w, mut m) = world3();
            for &o in &path {
                w.run(o).unwrap();
                m.apply(o).unwrap();
            }
            w.mm.dirty.insert(lit::hpa(P));
            w.guest(h).set_dying();
            m.set_dying(h);
            let was = m.pg(P);
            // No new pages for a dying guest.
            let r = w.run(Op::DonateGuest(h, P + K4, GP + K4, 1));
            assert_eq!(r, Err(Error::Perm), "{name}: donate to dying {h:#x}");
            let r = w.run(Op::ShareGuest(h, P + K4, GP + K4, 1));
            assert_eq!(r, Err(Error::Perm), "{name}: share to dying {h:#x}");
            assert_eq!(w.run(Op::Reclaim(h, 0, ADDR_LIMIT)), Ok(()), "{name}");
            m.apply(Op::Reclaim(h, 0, ADDR_LIMIT)).unwrap();
            w.compare(&m, [P].into_iter());
            let zeroed = w.mm.zeroed.get(&lit::hpa(P)).copied().unwrap_or(0);
            match was {
                Pg::Owned(g, _) | Pg::Back(g, _) if g == h => {
                    assert_eq!(m.pg(P), Pg::Host);
                    assert_eq!(zeroed, 1, "{name}: a page the guest owned is zeroed");
                    assert!(!w.mm.dirty.contains(&lit::hpa(P)));
                }
                Pg::Shared if h == N => {
                    assert_eq!(m.pg(P), Pg::Host);
                    assert_eq!(zeroed, 0, "{name}: the host's own page is not zeroed");
                }
                other => assert_eq!(m.pg(P), other),
            }
            w.check_invariants();
            w.destroy();
        }
    }
}

/// Two pages, every pair of states, every op on the first page: the guest
/// address may already be taken by the other page.
#[test]
fn every_transition_with_a_second_page_in_every_state() {
    let q = P + M2;
    let mut combos = 0;
    for (_, pp) in paths(P, GP) {
        for (_, qp) in paths(q, GP) {
            let (mut w0, mut m0) = world3();
            let path: Vec<Op> = pp.iter().chain(qp.iter()).copied().collect();
            let mut ok = true;
            for &o in &path {
                let r = m0.apply(o);
                assert_eq!(w0.run(o), r);
                ok &= r.is_ok();
            }
            w0.destroy();
            if !ok {
                continue;
            }
            combos += 1;
            for op in all_ops(P, GP) {
                let (mut w, mut m) = world3();
                for &o in &path {
                    w.run(o).unwrap();
                    m.apply(o).unwrap();
                }
                assert_eq!(w.run(op), m.apply(op), "{path:?} + {op:?}");
                w.compare(&m, [P, q].into_iter());
                w.check_invariants();
                w.destroy();
            }
        }
    }
    assert!(combos > 40, "{combos}");
}

#[test]
fn bad_arguments_are_einval() {
    use Op::*;
    let (mut w, mut m) = world3();
    for (pa, n) in [(1, 1), (0, 0), (ADDR_LIMIT - K4, 2), (0, u64::MAX / 2)] {
        for op in [
            DonateHyp(pa, n),
            HypDonateHost(pa, n),
            ShareHyp(pa, n),
            UnshareHyp(pa, n),
            ShareGuest(N, pa, 0, n),
            ShareGuest(N, 0, pa, n),
            DonateGuest(A, pa, 0, n),
            UnshareGuest(N, pa, 0, n),
            GuestShare(A, pa, n),
            GuestUnshare(A, pa, n),
        ] {
            assert_eq!(w.run(op), Err(Error::Inval), "{op:?}");
            assert_eq!(m.apply(op), Err(Error::Inval), "{op:?}");
        }
    }
    w.guest(A).set_dying();
    assert_eq!(w.run(Reclaim(A, 0, 3)), Err(Error::Inval));
    for perms in [0, PERM_W, PERM_W | PERM_X, 8] {
        let n = w.vms.get_mut(N).unwrap().guest_mut();
        let r = host_share_guest(
            &mut w.host,
            n,
            &mut w.mm,
            lit::hpa(0),
            lit::gpa(0),
            1,
            perms,
        );
        assert_eq!(r, Err(Error::Inval), "perms {perms}");
    }
    assert_eq!(Error::Inval.errno(), 22);
    w.compare(&m, [0, K4].into_iter());
    w.check_invariants();
    w.destroy();
}

// ---------------------------------------------------------------------------
// Allocation failures.

/// Multi-page operations under a failure injected at every allocation:
/// nothing changes and nothing leaks until the operation succeeds.
#[test]
fn allocation_failure_at_every_point_changes_nothing() {
    use Op::*;
    let base = G1 - M2 - 3 * K4;
    let setups: Vec<Op> = std::vec![
        DonateGuest(A, base + 8 * M2, 5 * M2 + K4, 3),
        ShareHyp(base + 12 * M2, 2),
        DonateGuest(B, base + 4 * M2, 0x4000_0000, 512 + 7),
    ];
    let ops: Vec<Op> = std::vec![
        DonateHyp(base, 512 + 6),
        ShareHyp(base + K4, 1030),
        ShareGuest(N, base, G1 + M2 - K4, 1030),
        DonateGuest(A, base, 3 * M2 - 2 * K4, 600),
        GuestShare(B, 0x4000_0000 + K4, 512),
        DonateGuest(A, base + 16 * M2, 8 * M2, 512),
    ];
    for op in ops {
        let mut n = 1;
        loop {
            let (mut w, mut m) = world3();
            for &o in &setups {
                w.run(o).unwrap();
                m.apply(o).unwrap();
            }
            let window = base..base + 20 * M2;
            let live = w.mm.live();
            w.mm.fail_nth(Some(n));
            let r = w.run(op);
            let injected = w.mm.failed_allocs > 0;
            w.mm.fail_nth(None);
            if injected {
                assert_eq!(r, Err(Error::NoMem), "{op:?} fail at {n}");
                assert_eq!(w.mm.live(), live, "{op:?} fail at {n}: leak");
            } else {
                assert_eq!(r, m.apply(op), "{op:?}");
            }
            w.compare(&m, window.step_by(K4 as usize));
            w.check_invariants();
            w.destroy();
            if !injected {
                break;
            }
            n += 1;
        }
        assert!(n > 1, "{op:?} allocates");
    }
}

// ---------------------------------------------------------------------------
// Model-based: long random sequences.

#[test]
fn random_operations_match_the_model() {
    let (w, m) = world3();
    random_operations(w, m, 0x9a9e_5a7e);
}

/// Module image pages (PINNED) and MMIO (not RAM) in the random window:
/// every transition on them fails (EPERM, EINVAL) exactly where the model
/// says, and nothing else changes.
#[test]
fn random_operations_with_the_module_image_and_mmio_match_the_model() {
    let pinned: Vec<u64> = (0..4)
        .map(|i| G1 - 2 * M2 + i * K4)
        .chain([G1 + M2 + 7 * K4, G1 + 3 * M2])
        .collect();
    let mmio = [
        (G1 - 3 * M2, G1 - 3 * M2 + 8 * K4),
        (G1 + 2 * M2, G1 + 2 * M2 + K4),
    ];
    let mut m = Model::default();
    let w = World::with_image(&pinned, &mmio, &mut m);
    let (mut w, m) = world3_in(w, m);
    // Single pages first: every host-range op on each is refused.
    for &p in &pinned {
        for op in all_ops(p, GP) {
            let r = w.run(op);
            if matches!(r, Ok(())) {
                panic!("{op:?} on pinned {p:#x} succeeded");
            }
        }
    }
    for &(s, _) in &mmio {
        for op in all_ops(s, GP) {
            let has_hpa = !matches!(
                op,
                Op::GuestShare(..) | Op::GuestUnshare(..) | Op::Reclaim(..)
            );
            let r = w.run(op);
            if has_hpa {
                assert_eq!(r, Err(Error::Inval), "{op:?} on MMIO {s:#x}");
            }
        }
    }
    w.check_invariants();
    random_operations(w, m, 0x1a6e_0001);
}

fn random_operations(mut w: World, mut m: Model, seed: u64) {
    use Op::*;
    let mut rng = Rng(seed);
    // Window of host pages straddling the 1 GiB boundary (and 2 MiB ones).
    let wbase = G1 - 4 * M2;
    let wpages = 8 * M2 / K4;
    let window: Vec<u64> = (0..wpages).map(|i| wbase + i * K4).collect();
    let handles = [N, A, B];
    let mut live: BTreeSet<u32> = handles.iter().copied().collect();
    let mut next_vm = 200;
    let steps = 3000;
    let mut oks = 0;
    let mut nomems = 0;
    // Successful shares of a page guests already mapped, unshares and
    // reclaims that left a page shared, donations refused as busy.
    let (mut recounted, mut still_shared, mut busy) = (0, 0, 0);
    for step in 0..steps {
        let first = rng.below(wpages);
        let n = match rng.below(5) {
            0 | 1 => 1,
            2 => 1 + rng.below(16),
            3 => 512,
            _ => 1 + rng.below(1100),
        }
        .min(wpages - first);
        let hpa = wbase + first * K4;
        // Guest addresses: sometimes congruent with hpa modulo 1 GiB (large
        // pages possible), sometimes not, sometimes colliding.
        let gpa = match rng.below(3) {
            0 => hpa % G1 + G1,
            1 => hpa % (64 * M2) + K4 * rng.below(3),
            _ => K4 * rng.below(4096),
        };
        let hs: Vec<u32> = live.iter().copied().collect();
        let h = hs[rng.below(hs.len() as u64) as usize];
        // Guests' own pages for guest-initiated ops: pick a mapped gpa.
        let mapped: Vec<u64> = m.gmap.range((h, 0)..(h + 1, 0)).map(|(k, _)| k.1).collect();
        let ggpa = if mapped.is_empty() {
            gpa
        } else {
            mapped[rng.below(mapped.len() as u64) as usize]
        };
        let op = match rng.below(14) {
            0 => DonateHyp(hpa, n),
            1 => HypDonateHost(hpa, n),
            2 => ShareHyp(hpa, n),
            3 => UnshareHyp(hpa, n),
            4 | 5 => ShareGuest(h, hpa, gpa, n),
            6 => UnshareGuest(h, hpa, gpa, n),
            7 if !m.counts.is_empty() && rng.below(2) == 0 => {
                // One mapping of a page guests share (counted).
                let shared: Vec<u64> = m.counts.keys().copied().collect();
                let p = shared[rng.below(shared.len() as u64) as usize];
                let (g, a) = m.mapping_of(p).unwrap();
                UnshareGuest(g, p, a, 1 + rng.below(4))
            }
            7 => {
                // Unshare something that is shared, usually.
                match m.mapping_of(hpa) {
                    Some((g, a)) if m.pg(hpa) == Pg::Shared => {
                        UnshareGuest(g, hpa, a, 1 + rng.below(n))
                    }
                    _ => UnshareGuest(h, hpa, gpa, n),
                }
            }
            9 if !m.counts.is_empty() => {
                // A page guests share, again (counted), at a new address.
                let shared: Vec<u64> = m.counts.keys().copied().collect();
                let p = shared[rng.below(shared.len() as u64) as usize];
                ShareGuest(h, p, 8 * G1 + K4 * rng.below(1 << 12), 1 + rng.below(4))
            }
            8 | 9 => DonateGuest(h, hpa, gpa, n),
            10 => GuestShare(h, ggpa, 1 + rng.below(600)),
            11 => GuestUnshare(h, ggpa, 1 + rng.below(600)),
            12 => {
                if rng.below(8) == 0 {
                    // Kill a guest, reclaim part, tear down, start another.
                    w.guest(h).set_dying();
                    m.set_dying(h);
                    Reclaim(h, ggpa, K4 * (1 + rng.below(1024)))
                } else {
                    Reclaim(h, ggpa, K4)
                }
            }
            _ => match m.pg(hpa) {
                Pg::Owned(g, a) | Pg::Back(g, a) => GuestShare(g, a, 1 + rng.below(4)),
                Pg::HypShared => UnshareHyp(hpa, 1),
                // Counted: the page again, into any guest, at a new address.
                Pg::Shared => {
                    ShareGuest(h, hpa, 8 * G1 + K4 * rng.below(1 << 12), 1 + rng.below(n))
                }
                Pg::Hyp => HypDonateHost(hpa, 1 + rng.below(n)),
                _ => DonateGuest(h, hpa, gpa, n),
            },
        };
        let inject = rng.below(6) == 0;
        if inject {
            w.mm.fail_nth(Some(1 + rng.below(2)));
        }
        let before = m.clone();
        let live_pages = w.mm.live();
        let r = w.run(op);
        let injected = w.mm.failed_allocs > 0;
        w.mm.fail_nth(None);
        w.mm.failed_allocs = 0;
        if injected && r == Err(Error::NoMem) {
            nomems += 1;
            assert_eq!(w.mm.live(), live_pages, "step {step}: leak on ENOMEM");
        } else {
            let mr = m.apply(op);
            assert_eq!(r, mr, "step {step}: {op:?}");
            busy += u32::from(r == Err(Error::Busy));
            if r.is_ok() {
                oks += 1;
                if let ShareGuest(_, hpa, _, n) = op {
                    recounted += u32::from((0..n).any(|i| before.pg(hpa + i * K4) == Pg::Shared));
                }
                if matches!(op, UnshareGuest(..) | Reclaim(..))
                    && window
                        .iter()
                        .any(|&p| before.count(p) > 1 && m.count(p) < before.count(p))
                {
                    still_shared += 1;
                }
                for p in &window {
                    let (was, now) = (before.pg(*p), m.pg(*p));
                    if matches!(now, Pg::Owned(..)) && !matches!(was, Pg::Owned(..) | Pg::Back(..))
                    {
                        w.mm.dirty.insert(lit::hpa(*p));
                    }
                    if matches!(was, Pg::Owned(..) | Pg::Back(..)) && now == Pg::Host {
                        assert!(
                            !w.mm.dirty.contains(&lit::hpa(*p)),
                            "step {step}: {p:#x} not zeroed"
                        );
                    }
                }
            }
        }
        if m.guests.get(&h).is_some_and(|g| g.1) && rng.below(2) == 0 {
            w.vms
                .teardown(&mut w.host, &mut w.hyp, &mut w.mm, h)
                .unwrap();
            m.apply(Reclaim(h, 0, ADDR_LIMIT)).unwrap();
            m.remove_guest(h);
            live.remove(&h);
            let kind = if next_vm % 2 == 0 {
                VmKind::Normal
            } else {
                VmKind::Protected
            };
            let nh = w.create(next_vm, kind);
            next_vm += 1;
            assert!(!live.contains(&nh) && nh >= crate::hv::mm::vm_table::HANDLE_OFFSET);
            live.insert(nh);
            m.add_guest(nh, kind);
        }
        if step % 25 == 0 || step == steps - 1 {
            w.compare(&m, window.iter().copied());
        } else {
            w.compare(
                &m,
                window.iter().copied().skip(first as usize).take(n as usize),
            );
        }
        w.check_invariants();
    }
    assert!(oks > steps / 8, "too few successful operations: {oks}");
    std::println!(
        "model: {steps} steps, {oks} ok, {nomems} ENOMEM injected, {recounted} counted \
         re-shares, {still_shared} unshares leaving a count, {busy} EBUSY"
    );
    assert!(
        recounted >= 3 && still_shared >= 1 && busy >= 3,
        "counted shares not exercised"
    );
    assert!(nomems >= 5, "too few injected failures: {nomems}");
    w.destroy();
}

// ---------------------------------------------------------------------------
// Large ranges.

#[test]
fn gigabyte_ranges_use_large_pages_and_round_trip() {
    use Op::*;
    let (mut w, mut m) = world3();
    let host_tables = w.host.pgt().table_pages(&mut w.mm).unwrap();
    // 1 GiB donated to a protected VM at a 1 GiB-aligned gpa: one annotation
    // in the host, one leaf in the guest.
    w.run(DonateGuest(A, G1, 4 * G1, G1 / K4)).unwrap();
    m.apply(DonateGuest(A, G1, 4 * G1, G1 / K4)).unwrap();
    assert_eq!(w.host.pgt().table_pages(&mut w.mm).unwrap(), host_tables);
    let l = w
        .vms
        .get(A)
        .unwrap()
        .guest()
        .pgt()
        .lookup(&mut w.mm, lit::gpa(4 * G1 + 5 * K4))
        .unwrap();
    assert_eq!(l.level, 3);
    // Share 2 MiB of it back, across... then unshare, reclaim all.
    w.run(GuestShare(A, 4 * G1 + M2, M2 / K4)).unwrap();
    m.apply(GuestShare(A, 4 * G1 + M2, M2 / K4)).unwrap();
    assert_eq!(
        w.host
            .pgt()
            .lookup(&mut w.mm, lit::hpa(G1 + M2))
            .unwrap()
            .level,
        2
    );
    w.check_invariants();
    w.run(GuestUnshare(A, 4 * G1 + M2, M2 / K4)).unwrap();
    m.apply(GuestUnshare(A, 4 * G1 + M2, M2 / K4)).unwrap();
    // 1 GiB shared with the normal VM straddling a 1 GiB boundary.
    let s = 2 * G1 + G1 / 2;
    w.run(ShareGuest(N, s, s, G1 / K4)).unwrap();
    m.apply(ShareGuest(N, s, s, G1 / K4)).unwrap();
    w.check_invariants();
    w.compare(&m, (0..64).map(|i| s - 32 * M2 + i * M2 + K4 * i));
    w.run(UnshareGuest(N, s, s, G1 / K4)).unwrap();
    m.apply(UnshareGuest(N, s, s, G1 / K4)).unwrap();
    w.guest(A).set_dying();
    m.set_dying(A);
    w.run(Reclaim(A, 0, ADDR_LIMIT)).unwrap();
    m.apply(Reclaim(A, 0, ADDR_LIMIT)).unwrap();
    assert_eq!(
        w.mm.zeroed.len() as u64,
        G1 / K4,
        "every owned page zeroed once"
    );
    w.compare(&m, (0..64).map(|i| G1 + i * 16 * M2));
    w.check_invariants();
    // The host EPT is back to large pages where it was split.
    assert_eq!(
        w.host
            .pgt()
            .lookup(&mut w.mm, lit::hpa(G1 + 5 * M2))
            .unwrap()
            .level,
        3
    );
    w.destroy();
}

#[test]
fn map_memory_only_takes_hypervisor_ranges() {
    let mut w = World::new();
    let r = w.host.map_memory(&mut w.mm, lit::hpa(G1), K4, HOST_OWNED);
    assert_eq!(r, Err(Error::Perm));
    w.host
        .map_memory(&mut w.mm, lit::hpa(RAM), M2, HOST_OWNED)
        .unwrap();
    w.check_invariants();
    w.destroy();
}

mod hyp_fixed_mappings {
    use crate::hv::error::Error;
    use crate::hv::mm::addr::lit;
    use crate::hv::mm::ept::{PageState, PINNED};
    use crate::hv::mm::invariants::check;
    use crate::hv::mm::mem_protect::*;
    use crate::hv::mm::pgtable::{Attrs, HypFormat, PteFormat, PERM_R, PERM_RWX, PERM_X};
    use crate::hv::mm::sim::Arena;

    const OFFSET: u64 = 0xffff_8880_0000_0000;

    /// The layout `host::cpu_setup` gives a root-mode stack: a guard page
    /// unmapped in the hypervisor's table, the stack pages above it
    /// mapped; the invariants accept the hypervisor-owned, unmapped page.
    #[test]
    fn stack_guard_page_is_unmapped_and_the_stack_mapped() {
        let mut mm = Arena::new(64);
        let mut host = HostEpt::new(&mut mm, 3, crate::hv::mm::ram::RamMap::all()).unwrap();
        let mut hyp = HypPgt::new(&mut mm, 3, OFFSET).unwrap();
        let attrs = Attrs::wb(PERM_RWX, PageState::Owned);
        host.map_memory(&mut mm, lit::hpa(0), 8 << 20, attrs)
            .unwrap();
        host.map_memory(&mut mm, lit::hpa(10 << 20), 6 << 20, attrs)
            .unwrap();
        let pool = 8u64 << 20;
        hyp.map_owned(&mut mm, lit::hpa(pool), 2 << 20).unwrap();
        let (guard, stack, stack_pages) = (pool + 0x3000, pool + 0x4000, 4u64);
        hyp.unmap_guard(&mut mm, lit::hpa(guard)).unwrap();
        let look = |hyp: &HypPgt, mm: &mut Arena, pa: u64| {
            let va = hyp.va(lit::hpa(pa), 0x1000).unwrap();
            hyp.lookup(mm, va).unwrap()
        };
        assert_eq!(look(&hyp, &mut mm, guard).0, 0, "guard page unmapped");
        for p in 0..stack_pages {
            let (e, level) = look(&hyp, &mut mm, stack + p * 0x1000);
            assert!(HypFormat::is_present(e), "stack page {p} mapped");
            assert_eq!(HypFormat::state(e), PageState::Owned);
            assert_eq!(HypFormat::addr(e), lit::hpa(stack + p * 0x1000));
            assert_eq!(level, 1, "the 2 MiB block was split");
        }
        assert!(HypFormat::is_present(look(&hyp, &mut mm, guard - 0x1000).0));
        let mut claims = [Default::default(); 16];
        assert_eq!(
            check(&host, &hyp, core::iter::empty(), &mut mm, &mut claims),
            Ok(())
        );
        // Twice, or a page outside the window's owned memory: refused.
        assert_eq!(hyp.unmap_guard(&mut mm, lit::hpa(guard)), Err(Error::Perm));
        assert_eq!(hyp.unmap_guard(&mut mm, lit::hpa(0x5000)), Err(Error::Perm));
        // The host cannot take the guard page through a transition.
        assert!(host_donate_hyp(&mut host, &mut hyp, &mut mm, lit::hpa(guard), 1).is_err());
        assert!(host_share_hyp(&mut host, &mut hyp, &mut mm, lit::hpa(guard), 1).is_err());
        assert_eq!(look(&hyp, &mut mm, guard).0, 0);
    }

    #[test]
    fn owned_pool_and_fixed_code_keep_the_invariants() {
        let mut mm = Arena::new(64);
        let mut host = HostEpt::new(&mut mm, 3, crate::hv::mm::ram::RamMap::all()).unwrap();
        let mut hyp = HypPgt::new(&mut mm, 3, OFFSET).unwrap();
        // The host owns everything but a 2 MiB pool at 8 MiB and the
        // module image: code at 16 MiB (2 MiB, R+X) and a rodata page at
        // 0x4000 (R), both PINNED.
        let attrs = Attrs::wb(PERM_RWX, PageState::Owned);
        let rx = Attrs::wb(PERM_R | PERM_X, PINNED);
        let r = Attrs::wb(PERM_R, PINNED);
        for (pa, size, a) in [
            (0, 0x4000, attrs),
            (0x4000, 0x1000, r),
            (0x5000, (8 << 20) - 0x5000, attrs),
            (10 << 20, 6 << 20, attrs),
            (16 << 20, 2 << 20, rx),
            (18 << 20, (1 << 30) - (8 << 20), attrs),
        ] {
            host.map_memory(&mut mm, lit::hpa(pa), size, a).unwrap();
        }
        // A pinned page is never writable for the host.
        assert_eq!(
            host.map_memory(
                &mut mm,
                lit::hpa(1 << 40),
                0x1000,
                Attrs::wb(PERM_RWX, PINNED)
            ),
            Err(Error::Inval)
        );
        hyp.map_owned(&mut mm, lit::hpa(8 << 20), 2 << 20).unwrap();
        // Code of the host kernel image and of the module, outside the window.
        hyp.map_fixed(
            &mut mm,
            lit::hva(0xffff_ffff_8000_0000),
            lit::hpa(0x100_0000),
            2 << 20,
            PERM_R | PERM_X,
        )
        .unwrap();
        hyp.map_fixed(
            &mut mm,
            lit::hva(0xffff_ffff_a000_0000),
            lit::hpa(0x4000),
            0x1000,
            PERM_R,
        )
        .unwrap();
        let mut claims = [Default::default(); 16];
        assert_eq!(
            check(&host, &hyp, core::iter::empty(), &mut mm, &mut claims),
            Ok(())
        );
        // Inside the linear window is refused, as is a second mapping.
        assert_eq!(
            hyp.map_fixed(
                &mut mm,
                lit::hva(OFFSET + 0x1000),
                lit::hpa(0x1000),
                0x1000,
                PERM_R
            ),
            Err(Error::Inval)
        );
        assert_eq!(
            hyp.map_fixed(
                &mut mm,
                lit::hva(0xffff_ffff_a000_0000),
                lit::hpa(0x5000),
                0x1000,
                PERM_R
            ),
            Err(Error::Perm)
        );
        // The pool cannot be mapped twice, nor handed out by a donation.
        assert_eq!(
            hyp.map_owned(&mut mm, lit::hpa(8 << 20), 0x1000),
            Err(Error::Perm)
        );
        assert!(host_donate_hyp(&mut host, &mut hyp, &mut mm, lit::hpa(8 << 20), 1).is_err());
        // A page the host owned stays donatable next to the fixed mappings.
        host_donate_hyp(&mut host, &mut hyp, &mut mm, lit::hpa(0x20_0000), 1).unwrap();
        assert_eq!(
            check(&host, &hyp, core::iter::empty(), &mut mm, &mut claims),
            Ok(())
        );
        // The module image changes hands through no transition: EPERM.
        for pa in [0x4000, 16 << 20, (18 << 20) - 0x1000] {
            let pa = lit::hpa(pa);
            assert_eq!(
                host_donate_hyp(&mut host, &mut hyp, &mut mm, pa, 1),
                Err(Error::Perm)
            );
            assert_eq!(
                hyp_donate_host(&mut host, &mut hyp, &mut mm, pa, 1),
                Err(Error::Perm)
            );
            assert_eq!(
                host_share_hyp(&mut host, &mut hyp, &mut mm, pa, 1),
                Err(Error::Perm)
            );
        }
        // A range that straddles the image is refused whole.
        assert_eq!(
            host_donate_hyp(&mut host, &mut hyp, &mut mm, lit::hpa(0x3000), 2),
            Err(Error::Perm)
        );
        assert_eq!(
            check(&host, &hyp, core::iter::empty(), &mut mm, &mut claims),
            Ok(())
        );
        // Root mode mapping a page the host owns outside its window is
        // caught.
        hyp.map_fixed(
            &mut mm,
            lit::hva(0xffff_ffff_c000_0000),
            lit::hpa(0x6000),
            0x1000,
            PERM_R | PERM_X,
        )
        .unwrap();
        let v = check(&host, &hyp, core::iter::empty(), &mut mm, &mut claims);
        assert_eq!(
            v.map_err(|v| v.kind),
            Err(crate::hv::mm::invariants::ViolationKind::FixedNotPinned)
        );
    }
}

// ---------------------------------------------------------------------------
// Counted shares: one host page behind several guest leaves.

/// Two normal VMs and a protected one.
const N2: u32 = 0x1001;

fn world_two_normal() -> (World, Model) {
    let (mut w, mut m) = (World::new(), Model::default());
    assert_eq!(w.create(100, VmKind::Normal), N);
    assert_eq!(w.create(101, VmKind::Normal), N2);
    assert_eq!(w.create(102, VmKind::Protected), 0x1002);
    m.add_guest(N, VmKind::Normal);
    m.add_guest(N2, VmKind::Normal);
    m.add_guest(0x1002, VmKind::Protected);
    (w, m)
}

/// Runs `op` on the world and the model, which must agree; checks the
/// pages `pages` against the model and every invariant.
fn step(w: &mut World, m: &mut Model, op: Op, pages: &[u64]) -> Result {
    let r = w.run(op);
    assert_eq!(r, m.apply(op), "{op:?}");
    w.compare(m, pages.iter().copied());
    w.check_invariants();
    r
}

fn host_state(w: &mut World, p: u64) -> PageState {
    EptFormat::state(w.host.pgt().lookup(&mut w.mm, lit::hpa(p)).unwrap().entry)
}

fn count(w: &World, p: u64) -> u32 {
    w.host.share_counts().get(&w.mm, lit::hpa(p)).unwrap()
}

/// The same host page shared into two guests and twice into one, then
/// unshared in every order: the count follows the mappings, the host entry
/// stays SHARED_OWNED until the last one goes, the count table is empty
/// again at the end.
#[test]
fn one_page_shared_three_times_unshared_in_every_order() {
    use Op::*;
    let maps = [(N, GP), (N, GP + 9 * K4), (N2, GP)];
    let orders = [
        [0, 1, 2],
        [0, 2, 1],
        [1, 0, 2],
        [1, 2, 0],
        [2, 0, 1],
        [2, 1, 0],
    ];
    for order in orders {
        let (mut w, mut m) = world_two_normal();
        let pages = [P - K4, P, P + K4];
        for (i, &(h, g)) in maps.iter().enumerate() {
            step(&mut w, &mut m, ShareGuest(h, P, g, 1), &pages).unwrap();
            assert_eq!(count(&w, P), i as u32 + 1);
            assert_eq!(host_state(&mut w, P), PageState::SharedOwned);
        }
        // The same address twice: the guest side is taken.
        let r = step(&mut w, &mut m, ShareGuest(N, P, GP, 1), &pages);
        assert_eq!(r, Err(Error::Perm));
        for (k, &i) in order.iter().enumerate() {
            let (h, g) = maps[i];
            // The wrong guest or address for this mapping: refused.
            let other = if h == N { N2 } else { N };
            if !order[k + 1..].iter().any(|&j| maps[j] == (other, g)) {
                let r = step(&mut w, &mut m, UnshareGuest(other, P, g, 1), &pages);
                assert_eq!(r, Err(Error::Perm));
            }
            step(&mut w, &mut m, UnshareGuest(h, P, g, 1), &pages).unwrap();
            let left = 2 - k as u32;
            assert_eq!(count(&w, P), left, "{order:?} after {k}");
            let want = if left == 0 {
                PageState::Owned
            } else {
                PageState::SharedOwned
            };
            assert_eq!(host_state(&mut w, P), want);
            // Twice: refused.
            let r = step(&mut w, &mut m, UnshareGuest(h, P, g, 1), &pages);
            assert_eq!(r, Err(Error::Perm));
        }
        assert_eq!(w.host.share_counts().table_pages(), 3, "leaf freed");
        w.destroy();
    }
}

/// A donation of a page guests still map is EBUSY (to the hypervisor, to
/// a protected VM, as a VM's metadata), whatever else the range holds;
/// once the last mapping is gone it goes through.  The hypervisor and
/// guests never share one page.
#[test]
fn donation_of_a_guest_shared_page_is_busy_until_unshared() {
    use Op::*;
    let (mut w, mut m) = world_two_normal();
    let a = 0x1002;
    let pages: Vec<u64> = (0..8).map(|i| P + i * K4).collect();
    step(&mut w, &mut m, ShareGuest(N, P + 2 * K4, GP, 1), &pages).unwrap();
    step(&mut w, &mut m, ShareGuest(N2, P + 2 * K4, GP, 1), &pages).unwrap();
    for op in [
        DonateHyp(P + 2 * K4, 1),
        DonateHyp(P, 8),
        DonateGuest(a, P, 0, 8),
        DonateGuest(a, P + 2 * K4, 0, 1),
    ] {
        assert_eq!(step(&mut w, &mut m, op, &pages), Err(Error::Busy), "{op:?}");
    }
    // Still the wrong kind of VM first: EPERM.
    let r = step(&mut w, &mut m, DonateGuest(N, P, 0x10_0000, 8), &pages);
    assert_eq!(r, Err(Error::Perm));
    // A VM's metadata pages go through host_donate_hyp: EBUSY too.
    let r = w.vms.create(
        &mut w.host,
        &mut w.hyp,
        &mut w.mm,
        999,
        VmKind::Normal,
        lit::hpa(P),
        4,
        3,
    );
    assert_eq!(r, Err(Error::Busy));
    // Guest-shared and hypervisor-shared exclude each other.
    for op in [ShareHyp(P + 2 * K4, 1), UnshareHyp(P + 2 * K4, 1)] {
        assert_eq!(step(&mut w, &mut m, op, &pages), Err(Error::Perm), "{op:?}");
    }
    step(&mut w, &mut m, ShareHyp(P + 3 * K4, 1), &pages).unwrap();
    let r = step(
        &mut w,
        &mut m,
        ShareGuest(N, P + 3 * K4, GP + K4, 1),
        &pages,
    );
    assert_eq!(r, Err(Error::Perm));
    step(&mut w, &mut m, UnshareHyp(P + 3 * K4, 1), &pages).unwrap();
    // One mapping left: still busy; none left: donated.
    step(&mut w, &mut m, UnshareGuest(N, P + 2 * K4, GP, 1), &pages).unwrap();
    let r = step(&mut w, &mut m, DonateHyp(P, 8), &pages);
    assert_eq!(r, Err(Error::Busy));
    step(&mut w, &mut m, UnshareGuest(N2, P + 2 * K4, GP, 1), &pages).unwrap();
    step(&mut w, &mut m, DonateGuest(a, P, 0, 8), &pages).unwrap();
    w.destroy();
}

/// VM teardown gives back each guest's counts: the page stays shared
/// while another guest maps it and is the host's alone after the last.
#[test]
fn teardown_returns_the_counts() {
    use Op::*;
    let (mut w, mut m) = world_two_normal();
    let pages: Vec<u64> = (0..4).map(|i| P + i * K4).collect();
    step(&mut w, &mut m, ShareGuest(N, P, GP, 4), &pages).unwrap();
    step(&mut w, &mut m, ShareGuest(N, P, GP + M2, 2), &pages).unwrap();
    step(&mut w, &mut m, ShareGuest(N2, P + K4, 0, 3), &pages).unwrap();
    assert_eq!(
        pages.iter().map(|&p| count(&w, p)).collect::<Vec<_>>(),
        [2, 3, 2, 2]
    );
    w.mm.dirty.insert(lit::hpa(P + K4));
    w.vms
        .teardown(&mut w.host, &mut w.hyp, &mut w.mm, N)
        .unwrap();
    m.set_dying(N);
    m.apply(Reclaim(N, 0, ADDR_LIMIT)).unwrap();
    m.remove_guest(N);
    w.compare(&m, pages.iter().copied());
    w.check_invariants();
    assert_eq!(
        pages.iter().map(|&p| count(&w, p)).collect::<Vec<_>>(),
        [0, 1, 1, 1]
    );
    assert_eq!(host_state(&mut w, P), PageState::Owned);
    assert_eq!(host_state(&mut w, P + K4), PageState::SharedOwned);
    w.vms
        .teardown(&mut w.host, &mut w.hyp, &mut w.mm, N2)
        .unwrap();
    m.set_dying(N2);
    m.apply(Reclaim(N2, 0, ADDR_LIMIT)).unwrap();
    m.remove_guest(N2);
    w.compare(&m, pages.iter().copied());
    w.check_invariants();
    assert!(pages.iter().all(|&p| count(&w, p) == 0));
    assert_eq!(w.host.share_counts().table_pages(), 3, "leaf freed");
    // The host's own page: never zeroed on the way back.
    assert!(w.mm.dirty.contains(&lit::hpa(P + K4)));
    w.destroy();
}

/// Counted shares under an allocation failure at every point: the count
/// table, the host EPT's splits and the guest's tables are all reserved
/// before anything changes, so a failure leaves everything as it was.
#[test]
fn counted_shares_under_allocation_failure_change_nothing() {
    use Op::*;
    let base = 3 * G1 - 2 * M2;
    let setups = [
        // 2 MiB into N in one guest leaf: one SHARED_OWNED 2 MiB host leaf.
        ShareGuest(N, base, G1, 512),
        // One page of it again at another address of N: count 2 there.
        ShareGuest(N, base + 7 * K4, 2 * G1 + 3 * K4, 1),
        // Further pages into N2, across a 4 MiB boundary of the counts.
        ShareGuest(N2, base + 2 * M2 + K4, 0, 1030),
    ];
    let ops = [
        // Overlaps counted and fresh pages, new count pages, new guest
        // tables, a host split.
        ShareGuest(N2, base + M2 - 3 * K4, 8 * M2 + K4, 1100),
        // 511 pages go back to OWNED, one stays SHARED_OWNED: the host's
        // 2 MiB leaf splits.
        UnshareGuest(N, base, G1, 512),
        ShareGuest(N, base + 4 * M2, 3 * G1, 2048),
    ];
    let window: Vec<u64> = (0..6 * M2 / K4).map(|i| base + i * K4).collect();
    for op in ops {
        let mut n = 1;
        loop {
            let (mut w, mut m) = world_two_normal();
            for o in setups {
                w.run(o).unwrap();
                m.apply(o).unwrap();
            }
            let live = w.mm.live();
            let count_pages = w.host.share_counts().table_pages();
            w.mm.fail_nth(Some(n));
            let r = w.run(op);
            let injected = w.mm.failed_allocs > 0;
            w.mm.fail_nth(None);
            if injected {
                assert_eq!(r, Err(Error::NoMem), "{op:?} fail at {n}");
                assert_eq!(w.mm.live(), live, "{op:?} fail at {n}: leak");
                assert_eq!(w.host.share_counts().table_pages(), count_pages);
            } else {
                assert_eq!(r, m.apply(op), "{op:?}");
                assert_eq!(r, Ok(()));
            }
            w.compare(&m, window.iter().copied());
            w.check_invariants();
            w.destroy();
            if !injected {
                break;
            }
            n += 1;
        }
        assert!(n > 1, "{op:?} allocates");
    }
}

/// Large guest leaves count every 4 KiB page they cover: 1 GiB shared
/// into one guest as a 1 GiB leaf and into another as 2 MiB leaves, then
/// a 4 KiB page unshared out of the middle of the 1 GiB leaf.
#[test]
fn large_guest_leaves_count_every_page() {
    use Op::*;
    let (mut w, mut m) = world_two_normal();
    let s = 2 * G1;
    let probe = [s, s + K4, s + 5 * M2 + 3 * K4, s + G1 - K4, s + G1];
    step(&mut w, &mut m, ShareGuest(N, s, 4 * G1, G1 / K4), &probe).unwrap();
    let leaf = |w: &mut World, h: u32, g: u64| {
        let vm = w.vms.get(h).unwrap();
        vm.guest()
            .pgt()
            .lookup(&mut w.mm, lit::gpa(g))
            .unwrap()
            .level
    };
    assert_eq!(leaf(&mut w, N, 4 * G1 + M2), 3, "one 1 GiB guest leaf");
    assert_eq!(w.host.share_counts().table_pages(), 256 + 3);
    step(&mut w, &mut m, ShareGuest(N2, s, G1 + M2, G1 / K4), &probe).unwrap();
    assert_eq!(leaf(&mut w, N2, G1 + 3 * M2), 2, "2 MiB guest leaves");
    assert!(probe[..4].iter().all(|&p| count(&w, p) == 2));
    // The host's 1 GiB leaf is still one leaf: the share changed its
    // state in place.
    let host_leaf = w.host.pgt().lookup(&mut w.mm, lit::hpa(s + M2)).unwrap();
    assert_eq!(host_leaf.level, 3);
    let mid = s + 5 * M2 + 3 * K4;
    step(
        &mut w,
        &mut m,
        UnshareGuest(N, mid, 4 * G1 + (mid - s), 1),
        &probe,
    )
    .unwrap();
    assert_eq!(count(&w, mid), 1);
    assert_eq!(
        leaf(&mut w, N, 4 * G1 + (mid - s)),
        1,
        "the guest leaf split"
    );
    step(
        &mut w,
        &mut m,
        UnshareGuest(N2, s, G1 + M2, G1 / K4),
        &probe,
    )
    .unwrap();
    assert_eq!(count(&w, mid), 0);
    assert_eq!(host_state(&mut w, mid), PageState::Owned);
    assert_eq!(host_state(&mut w, s), PageState::SharedOwned);
    w.guest(N).set_dying();
    m.set_dying(N);
    step(&mut w, &mut m, Reclaim(N, 0, ADDR_LIMIT), &probe).unwrap();
    assert_eq!(w.host.share_counts().table_pages(), 3, "256 leaves freed");
    assert_eq!(host_state(&mut w, s), PageState::Owned);
    w.destroy();
}

/// Long random sequences with two normal VMs sharing from the same
/// window: counted shares, unshares, reclaims and teardowns against the
/// model, the invariants after every step (random_operations).
#[test]
fn random_counted_shares_match_the_model() {
    let (w, m) = world_two_normal();
    random_operations(w, m, 0xc0_a7ed);
}

/// The variant with memory type and IPAT maps the guest leaf with them;
/// the host keeps its own.
#[test]
fn share_with_attributes_maps_the_memory_type_and_ipat() {
    use crate::hv::mm::ept::MemType;
    let (mut w, m) = world_two_normal();
    let attrs = Attrs {
        perms: PERM_R | PERM_X,
        memtype: MemType::Uc,
        state: PageState::Owned,
        ipat: true,
    };
    let g = w.vms.get_mut(N).unwrap().guest_mut();
    host_share_guest_attrs(
        &mut w.host,
        g,
        &mut w.mm,
        lit::hpa(P),
        lit::gpa(GP),
        1,
        attrs,
    )
    .unwrap();
    let e = w
        .vms
        .get(N)
        .unwrap()
        .guest()
        .pgt()
        .lookup(&mut w.mm, lit::gpa(GP))
        .unwrap()
        .entry;
    let got = EptFormat::attrs(e);
    assert_eq!(
        got,
        Attrs {
            state: PageState::SharedBorrowed,
            ..attrs
        }
    );
    assert_eq!(EptEntry(e).ignore_pat(), 1);
    let h = w.host.pgt().lookup(&mut w.mm, lit::hpa(P)).unwrap().entry;
    assert_eq!(
        EptFormat::attrs(h),
        Attrs::wb(PERM_RWX, PageState::SharedOwned)
    );
    let bad = Attrs {
        perms: PERM_W,
        ..attrs
    };
    let g = w.vms.get_mut(N2).unwrap().guest_mut();
    let r = host_share_guest_attrs(&mut w.host, g, &mut w.mm, lit::hpa(P), lit::gpa(GP), 1, bad);
    assert_eq!(r, Err(Error::Inval));
    w.check_invariants();
    drop(m);
    w.destroy();
}

/// A count at its maximum refuses one more share (EPERM), and nothing
/// changes.
#[test]
fn a_share_beyond_the_maximum_count_is_refused() {
    use crate::hv::mm::share_count::MAX_COUNT;
    use Op::*;
    let (mut w, mut m) = world_two_normal();
    step(&mut w, &mut m, ShareGuest(N, P, GP, 2), &[P, P + K4]).unwrap();
    let mm = &w.mm;
    w.host
        .counts_mut()
        .overwrite(mm, lit::hpa(P + K4), MAX_COUNT)
        .unwrap();
    assert_eq!(w.run(ShareGuest(N2, P, GP, 2)), Err(Error::Perm));
    let mm = &w.mm;
    w.host
        .counts_mut()
        .overwrite(mm, lit::hpa(P + K4), MAX_COUNT - 1)
        .unwrap();
    assert_eq!(w.run(ShareGuest(N2, P + K4, GP, 1)), Ok(()));
    assert_eq!(count(&w, P + K4), MAX_COUNT);
    assert_eq!(w.run(ShareGuest(N2, P + K4, GP + K4, 1)), Err(Error::Perm));
    w.host
        .counts_mut()
        .overwrite(&w.mm, lit::hpa(P + K4), 2)
        .unwrap();
    m.apply(ShareGuest(N2, P + K4, GP, 1)).unwrap();
    w.compare(&m, [P, P + K4].into_iter());
    w.check_invariants();
    w.destroy();
}

/// Host EPT invalidations in a recorded log.
fn host_invalidations(log: &[crate::hv::mm::sim::Event]) -> usize {
    log.iter()
        .filter(|e| {
            matches!(
                e,
                crate::hv::mm::sim::Event::Invalidate {
                    kind: crate::hv::mm::addr::TableKind::HostEpt,
                    ..
                }
            )
        })
        .count()
}

/// A warm region (issue 10's benchmark, `pgtable_bench`'s warm-region
/// figure): once a 4 KiB share in each 2 MiB piece has split a 1 GiB host
/// leaf down to 4 KiB tables, sharing every page of the region one by one
/// (a guest's first touches through its shadow EPT) neither splits nor
/// merges the host EPT: no host table page allocated or freed, no host
/// EPT invalidation (no break-before-make); only guest tables and
/// share-count pages are allocated.  Returning the shares merges nothing
/// either.  (32 MiB of the region, for the test's time; the benchmark
/// does the whole GiB.)
#[test]
fn warm_region_shares_split_and_merge_nothing() {
    use Op::*;
    let (mut w, _) = world3();
    let region = 2 * G1;
    let pieces = 16;
    for m in 0..pieces {
        w.run(ShareGuest(N, region + m * M2, 3 * G1, 1)).unwrap();
        w.run(UnshareGuest(N, region + m * M2, 3 * G1, 1)).unwrap();
    }
    assert_eq!(
        w.host
            .pgt()
            .lookup(&mut w.mm, lit::hpa(region))
            .unwrap()
            .level,
        1,
        "the first pass split the region"
    );
    let host_tables = w.host.pgt().table_pages(&mut w.mm).unwrap();
    let guest_tables = |w: &mut World| {
        let g = w.vms.get(N).unwrap().guest();
        g.pgt().table_pages(&mut w.mm).unwrap()
    };
    let (g0, c0) = (guest_tables(&mut w), w.host.share_counts().table_pages());
    let (allocs, frees) = (w.mm.allocs, w.mm.frees);
    w.mm.record();
    let pages = pieces * M2 / K4;
    for i in 0..pages {
        w.run(ShareGuest(N, region + i * K4, 8 * G1 + i * K4, 1))
            .unwrap();
    }
    let log = w.mm.take_log();
    assert_eq!(host_invalidations(&log), 0, "host EPT invalidated");
    assert_eq!(w.mm.frees, frees, "pages freed during the warm pass");
    assert_eq!(w.host.pgt().table_pages(&mut w.mm).unwrap(), host_tables);
    let (g1, c1) = (guest_tables(&mut w), w.host.share_counts().table_pages());
    assert_eq!(
        w.mm.allocs - allocs,
        (g1 - g0) as u64 + (c1 - c0),
        "only guest tables and share-count pages allocated"
    );
    w.check_invariants();
    // The shares returned: the host's tables stay as they are.
    w.mm.record();
    for i in 0..pages {
        w.run(UnshareGuest(N, region + i * K4, 8 * G1 + i * K4, 1))
            .unwrap();
    }
    let log = w.mm.take_log();
    assert_eq!(host_invalidations(&log), 0, "host EPT invalidated");
    assert_eq!(w.host.pgt().table_pages(&mut w.mm).unwrap(), host_tables);
    w.check_invariants();
}

/// The two steps of a share dropped with its flush deferred (a shadow
/// EPT's partial drop): the revocation leaves the host side alone and the
/// guest leaf not present but recorded; only the second step lowers the
/// count (`OWNED` at zero) and clears the entry.  Each step refuses
/// anything but exactly its kind of leaf.
#[test]
fn revoked_share_returns_its_count_only_in_the_second_step() {
    use Op::*;
    let (mut w, mut m) = world_two_normal();
    let pages = [P - K4, P, P + K4];
    step(&mut w, &mut m, ShareGuest(N, P, GP, 1), &pages).unwrap();
    step(&mut w, &mut m, ShareGuest(N2, P, GP, 1), &pages).unwrap();
    step(&mut w, &mut m, ShareGuest(N, P + K4, GP + K4, 1), &pages).unwrap();
    let (host, mm) = (&mut w.host, &mut w.mm);
    let g = w.vms.get_mut(N).unwrap().guest_mut();
    // Not exactly one present shared leaf: refused, nothing changed.
    for (gpa, size) in [(GP, 2 * K4), (GP + 2 * K4, K4), (GP, M2)] {
        assert_eq!(
            guest_revoke_share(g, mm, lit::gpa(gpa), size),
            Err(Error::Perm),
            "{gpa:#x} {size:#x}"
        );
    }
    assert_eq!(
        host_unshare_revoked(host, g, mm, lit::gpa(GP), K4),
        Err(Error::Perm),
        "not revoked yet"
    );
    let before = g.pgt().lookup(mm, lit::gpa(GP)).unwrap().entry;
    guest_revoke_share(g, mm, lit::gpa(GP), K4).unwrap();
    let e = g.pgt().lookup(mm, lit::gpa(GP)).unwrap().entry;
    assert!(!EptFormat::is_present(e) && e != 0);
    assert_eq!(EptFormat::addr(e), EptFormat::addr(before));
    assert_eq!(
        guest_revoke_share(g, mm, lit::gpa(GP), K4),
        Err(Error::Perm),
        "twice"
    );
    assert_eq!(count(&w, P), 2, "the host side waits for the second step");
    assert_eq!(host_state(&mut w, P), PageState::SharedOwned);
    let (host, mm) = (&mut w.host, &mut w.mm);
    let g = w.vms.get_mut(N).unwrap().guest_mut();
    host_unshare_revoked(host, g, mm, lit::gpa(GP), K4).unwrap();
    assert_eq!(g.pgt().lookup(mm, lit::gpa(GP)).unwrap().entry, 0);
    assert_eq!(
        host_unshare_revoked(host, g, mm, lit::gpa(GP), K4),
        Err(Error::Perm),
        "twice"
    );
    m.apply(UnshareGuest(N, P, GP, 1)).unwrap();
    w.compare(&m, pages.iter().copied());
    w.check_invariants();
    assert_eq!(count(&w, P), 1);
    // The last count: OWNED again.
    let (host, mm) = (&mut w.host, &mut w.mm);
    let g = w.vms.get_mut(N2).unwrap().guest_mut();
    guest_revoke_share(g, mm, lit::gpa(GP), K4).unwrap();
    host_unshare_revoked(host, g, mm, lit::gpa(GP), K4).unwrap();
    m.apply(UnshareGuest(N2, P, GP, 1)).unwrap();
    w.compare(&m, pages.iter().copied());
    w.check_invariants();
    assert_eq!(host_state(&mut w, P), PageState::Owned);
    assert_eq!(count(&w, P), 0);
}
