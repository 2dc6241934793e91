// SPDX-License-Identifier: GPL-2.0

//! Tests that the invariant checker finds each kind of broken ownership.

use std::vec::Vec;

use super::*;
use crate::hv::mm::addr::lit;
use crate::hv::mm::mem_protect::tests::{Op, World, G1, K4, M2};
use crate::hv::mm::mem_protect::{VmKind, HOST_OWNED};
use crate::hv::mm::pgtable::{Attrs, Fill, MmOps, PERM_R, PERM_RWX, PERM_W, PERM_X};
use crate::hv::mm::sim::ARENA_BASE;

const P: u64 = 5 * M2 + 3 * K4;

fn world() -> (World, u32, u32) {
    let mut w = World::new();
    let n = w.create(1, VmKind::Normal);
    let a = w.create(2, VmKind::Protected);
    (w, n, a)
}

fn run_check(w: &mut World, scratch: usize) -> Check {
    let mut s: Vec<Claim> = std::vec![Claim::default(); scratch];
    check(&w.host, &w.hyp, w.vms.guests(), &mut w.mm, &mut s)
}

fn expect(w: &mut World, kind: ViolationKind) -> Violation {
    let r = run_check(w, 1024);
    match r {
        Err(v) if v.kind == kind => v,
        other => panic!("expected {kind:?}, got {other:?}"),
    }
}

fn owner(h: u32) -> OwnerId {
    OwnerId::new(h).unwrap()
}

#[test]
fn a_healthy_system_passes() {
    let (mut w, n, a) = world();
    w.run(Op::ShareGuest(n, P, 0, 3)).unwrap();
    w.run(Op::DonateGuest(a, P + M2, G1, 600)).unwrap();
    w.run(Op::GuestShare(a, G1 + K4, 5)).unwrap();
    w.run(Op::DonateHyp(P + 4 * M2, 2)).unwrap();
    w.run(Op::ShareHyp(P + 6 * M2, 2)).unwrap();
    assert_eq!(run_check(&mut w, 1024), Ok(()));
    w.destroy();
}

#[test]
fn host_mapping_a_guest_page_is_caught() {
    let (mut w, _, a) = world();
    w.run(Op::DonateGuest(a, P, 0, 1)).unwrap();
    w.host
        .pgt_mut()
        .map(&mut w.mm, lit::hpa(P), K4, lit::hpa(P), HOST_OWNED)
        .unwrap();
    let v = expect(&mut w, ViolationKind::NoHostCounterpart);
    assert_eq!(v.party, Party::Guest(owner(a)));
    w.host
        .pgt_mut()
        .annotate(&mut w.mm, lit::hpa(P), K4, owner(a))
        .unwrap();
    w.destroy();
}

#[test]
fn guest_mapping_a_hyp_page_is_caught() {
    let (mut w, n, _) = world();
    w.run(Op::DonateHyp(P, 1)).unwrap();
    let attrs = Attrs::wb(PERM_RWX, PageState::SharedBorrowed);
    let g = w.vms.get_mut(n).unwrap().guest_mut().pgt_mut();
    g.map(&mut w.mm, lit::gpa(0), K4, lit::hpa(P), attrs)
        .unwrap();
    let v = expect(&mut w, ViolationKind::NoHostCounterpart);
    assert_eq!((v.party, v.addr), (Party::Guest(owner(n)), 0));
    let g = w.vms.get_mut(n).unwrap().guest_mut().pgt_mut();
    g.unmap(&mut w.mm, lit::gpa(0), K4).unwrap();
    w.destroy();
}

#[test]
fn shared_without_borrower_and_double_borrow_are_caught() {
    let (mut w, n, _) = world();
    w.host
        .pgt_mut()
        .set_state(&mut w.mm, lit::hpa(P), K4, PageState::SharedOwned)
        .unwrap();
    let v = expect(&mut w, ViolationKind::NoBorrower);
    assert_eq!(v.addr, P);
    w.host
        .pgt_mut()
        .set_state(&mut w.mm, lit::hpa(P), K4, PageState::Owned)
        .unwrap();
    // The same host page borrowed a second time by one guest behind the
    // share count's back (a counted share would be fine).
    w.run(Op::ShareGuest(n, P, 0, 1)).unwrap();
    let attrs = Attrs::wb(PERM_RWX, PageState::SharedBorrowed);
    let g = w.vms.get_mut(n).unwrap().guest_mut().pgt_mut();
    g.map(&mut w.mm, lit::gpa(9 * K4), K4, lit::hpa(P), attrs)
        .unwrap();
    let v = expect(&mut w, ViolationKind::ShareCount);
    assert_eq!(v.addr, P);
    let g = w.vms.get_mut(n).unwrap().guest_mut().pgt_mut();
    g.unmap(&mut w.mm, lit::gpa(9 * K4), K4).unwrap();
    assert_eq!(run_check(&mut w, 1024), Ok(()));
    // The counted way: the same page at a second address, and in a
    // second normal VM.
    w.run(Op::ShareGuest(n, P, 9 * K4, 1)).unwrap();
    let n2 = w.create(3, VmKind::Normal);
    w.run(Op::ShareGuest(n2, P, 0, 1)).unwrap();
    assert_eq!(run_check(&mut w, 1024), Ok(()));
    // The hypervisor borrowing a page guests borrow: never.
    let hyp_attrs = Attrs::wb(PERM_R | PERM_W, PageState::SharedBorrowed);
    let va = w.hyp.va(lit::hpa(P), K4).unwrap();
    w.hyp
        .pgt_mut()
        .map(&mut w.mm, va, K4, lit::hpa(P), hyp_attrs)
        .unwrap();
    let v = expect(&mut w, ViolationKind::DoubleClaim);
    assert_eq!((v.party, v.addr), (Party::Hyp, P));
    w.hyp.pgt_mut().unmap(&mut w.mm, va, K4).unwrap();
    assert_eq!(run_check(&mut w, 1024), Ok(()));
    w.destroy();
}

#[test]
fn share_counts_that_do_not_match_the_guests_are_caught() {
    use crate::hv::mm::pgtable::PageCache;
    // RAM ends at 4 GiB.
    let mut model = crate::hv::mm::mem_protect::tests::Model::default();
    let mut w = World::with_image(&[], &[], &mut model);
    let n = w.create(1, VmKind::Normal);
    w.run(Op::ShareGuest(n, P, 0, 2)).unwrap();
    assert_eq!(run_check(&mut w, 1024), Ok(()));
    // One count too many on a shared page.
    let mut cache = PageCache::new();
    w.host
        .counts_mut()
        .increment(&mut w.mm, &mut cache, lit::hpa(P + K4), K4)
        .unwrap();
    let v = expect(&mut w, ViolationKind::ShareCount);
    assert_eq!(v.addr, P + K4);
    w.host
        .counts_mut()
        .decrement(&mut w.mm, lit::hpa(P + K4), K4)
        .unwrap();
    // A count on a page no guest maps (the host's own page): only the
    // total catches it.
    w.host
        .counts_mut()
        .increment(&mut w.mm, &mut cache, lit::hpa(P + 7 * K4), K4)
        .unwrap();
    let v = expect(&mut w, ViolationKind::ShareCount);
    assert_eq!(v.addr, 0);
    w.host
        .counts_mut()
        .decrement(&mut w.mm, lit::hpa(P + 7 * K4), K4)
        .unwrap();
    // A count on a page that is not RAM.
    let far = 5 * G1 + 3 * K4;
    cache.topup(&mut w.mm, 3).unwrap();
    w.host
        .counts_mut()
        .increment(&mut w.mm, &mut cache, lit::hpa(far), K4)
        .unwrap();
    let v = expect(&mut w, ViolationKind::NotRam);
    assert_eq!(v.addr, far);
    w.host
        .counts_mut()
        .decrement(&mut w.mm, lit::hpa(far), K4)
        .unwrap();
    cache.release(&mut w.mm);
    assert_eq!(run_check(&mut w, 1024), Ok(()));
    // The table's own books: a use count that does not match.
    let leaf = w.host.share_counts().leaf_of(&w.mm, lit::hpa(P)).unwrap();
    w.mm.get_page(leaf);
    let v = expect(&mut w, ViolationKind::ShareCountBooks);
    assert_eq!(v.addr, leaf.raw());
    w.mm.put_page(leaf);
    assert_eq!(run_check(&mut w, 1024), Ok(()));
    w.destroy();
}

#[test]
fn host_table_damage_is_caught() {
    let (mut w, n, _) = world();
    // Not an identity mapping.
    let h = w.host.pgt_mut();
    h.map(&mut w.mm, lit::hpa(P), K4, lit::hpa(P + K4), HOST_OWNED)
        .unwrap();
    expect(&mut w, ViolationKind::HostNotIdentity);
    w.host
        .pgt_mut()
        .map(&mut w.mm, lit::hpa(P), K4, lit::hpa(P), HOST_OWNED)
        .unwrap();
    // Present but NOPAGE, i.e. PINNED, and writable: the module image
    // must never be writable for the host.
    w.host
        .pgt_mut()
        .set_state(&mut w.mm, lit::hpa(P), K4, PageState::NoPage)
        .unwrap();
    expect(&mut w, ViolationKind::PinnedWritable);
    // Read-only, it is a legitimate pinned page.
    let ro = Attrs::wb(PERM_R | PERM_X, PageState::NoPage);
    w.host
        .pgt_mut()
        .map(&mut w.mm, lit::hpa(P), K4, lit::hpa(P), ro)
        .unwrap();
    assert_eq!(run_check(&mut w, 1024), Ok(()));
    w.host
        .pgt_mut()
        .map(&mut w.mm, lit::hpa(P), K4, lit::hpa(P), HOST_OWNED)
        .unwrap();
    w.host
        .pgt_mut()
        .set_state(&mut w.mm, lit::hpa(P), K4, PageState::NoPage)
        .unwrap();
    w.host
        .pgt_mut()
        .set_state(&mut w.mm, lit::hpa(P), K4, PageState::Owned)
        .unwrap();
    // An owner that does not exist.
    w.host
        .pgt_mut()
        .annotate(&mut w.mm, lit::hpa(P), K4, owner(0x7777))
        .unwrap();
    expect(&mut w, ViolationKind::BadAnnotation);
    // A normal VM owning a page.
    w.host
        .pgt_mut()
        .annotate(&mut w.mm, lit::hpa(P), K4, owner(n))
        .unwrap();
    let attrs = Attrs::wb(PERM_RWX, PageState::Owned);
    let g = w.vms.get_mut(n).unwrap().guest_mut().pgt_mut();
    g.map(&mut w.mm, lit::gpa(0), K4, lit::hpa(P), attrs)
        .unwrap();
    expect(&mut w, ViolationKind::WrongKind);
    let g = w.vms.get_mut(n).unwrap().guest_mut().pgt_mut();
    g.unmap(&mut w.mm, lit::gpa(0), K4).unwrap();
    w.host
        .pgt_mut()
        .map(&mut w.mm, lit::hpa(P), K4, lit::hpa(P), HOST_OWNED)
        .unwrap();
    assert_eq!(run_check(&mut w, 1024), Ok(()));
    // Table pages given to the host.
    w.host
        .pgt_mut()
        .set(
            &mut w.mm,
            lit::hpa(ARENA_BASE),
            G1,
            Fill::Map {
                pa: lit::hpa(ARENA_BASE),
                attrs: HOST_OWNED,
            },
        )
        .unwrap();
    expect(&mut w, ViolationKind::TableNotHypOwned);
    w.host
        .pgt_mut()
        .unmap(&mut w.mm, lit::hpa(ARENA_BASE), G1)
        .unwrap();
    w.destroy();
}

#[test]
fn a_small_scratch_is_reported_not_overrun() {
    let (mut w, _, a) = world();
    for i in 0..4 {
        // Discontiguous runs: one claim each.
        w.run(Op::DonateGuest(a, P + 2 * i * K4, i * K4, 1))
            .unwrap();
    }
    assert_eq!(run_check(&mut w, 4), Ok(()));
    assert_eq!(
        run_check(&mut w, 3).map_err(|v| v.kind),
        Err(ViolationKind::ScratchFull)
    );
    w.destroy();
}
