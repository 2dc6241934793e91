// SPDX-License-Identifier: GPL-2.0

//! Tests of the shadow-VM table.

use super::*;
use crate::hv::ept::PageState;
use crate::hv::mem_protect::tests::{Op, World, G1, K4, M2};
use crate::hv::pgtable::{EptFormat, PteFormat};

const META: u64 = 9 * M2;

#[test]
fn handles_start_at_the_offset_and_are_bounded() {
    let mut w = World::new();
    let mut t: VmTable<3> = VmTable::new();
    let mut hs = std::vec::Vec::new();
    for vm in 0..3 {
        let h = t
            .create(
                &mut w.host,
                &mut w.hyp,
                &mut w.mm,
                vm,
                VmKind::Normal,
                0,
                0,
                3,
            )
            .unwrap();
        hs.push(h.raw());
    }
    assert_eq!(hs, [HANDLE_OFFSET, HANDLE_OFFSET + 1, HANDLE_OFFSET + 2]);
    assert!(hs.iter().all(|&h| OwnerId::new(h).unwrap().is_guest()));
    let full = t.create(
        &mut w.host,
        &mut w.hyp,
        &mut w.mm,
        7,
        VmKind::Normal,
        0,
        0,
        3,
    );
    assert_eq!(full, Err(Error::NoMem));
    let dup = t.create(
        &mut w.host,
        &mut w.hyp,
        &mut w.mm,
        1,
        VmKind::Protected,
        0,
        0,
        3,
    );
    assert_eq!(dup, Err(Error::Exist), "one shadow VM per host VM");
    for bad in [0, 1, HANDLE_OFFSET - 1, HANDLE_OFFSET + 3, u32::MAX] {
        assert_eq!(t.get(bad).err(), Some(Error::NoEnt), "{bad:#x}");
        assert_eq!(
            t.teardown(&mut w.host, &mut w.hyp, &mut w.mm, bad),
            Err(Error::NoEnt)
        );
    }
    assert_eq!(t.find(2), Some(OwnerId::new(HANDLE_OFFSET + 2).unwrap()));
    // Next fit: a freed slot is reused only after going round.
    t.teardown(&mut w.host, &mut w.hyp, &mut w.mm, HANDLE_OFFSET + 1)
        .unwrap();
    assert_eq!(t.len(), 2);
    let h = t
        .create(
            &mut w.host,
            &mut w.hyp,
            &mut w.mm,
            1,
            VmKind::Normal,
            0,
            0,
            3,
        )
        .unwrap();
    assert_eq!(h.raw(), HANDLE_OFFSET + 1, "the only free slot");
    for h in hs {
        t.teardown(&mut w.host, &mut w.hyp, &mut w.mm, h).unwrap();
    }
    assert!(t.is_empty());
    w.destroy();
}

#[test]
fn create_takes_metadata_pages_and_teardown_returns_everything() {
    let mut w = World::new();
    let h = w
        .vms
        .create(
            &mut w.host,
            &mut w.hyp,
            &mut w.mm,
            42,
            VmKind::Protected,
            META,
            3,
            3,
        )
        .unwrap()
        .raw();
    assert_eq!(w.host.pgt().lookup(&mut w.mm, META).unwrap().entry, 0);
    w.run(Op::DonateGuest(h, G1, 0, 700)).unwrap();
    // The rest of the metadata's 2 MiB goes to the hypervisor too: the host
    // page table there empties and is freed, so giving the metadata back
    // needs a table page.
    w.run(Op::DonateHyp(META + 3 * K4, 509)).unwrap();
    w.run(Op::GuestShare(h, 5 * K4, 2)).unwrap();
    w.check_invariants();
    // Busy while referenced; references are counted.
    w.vms.get_ref(h).unwrap();
    w.vms.get_ref(h).unwrap();
    assert_eq!(
        w.vms.teardown(&mut w.host, &mut w.hyp, &mut w.mm, h),
        Err(Error::Busy)
    );
    w.vms.put_ref(h).unwrap();
    w.vms.put_ref(h).unwrap();
    assert_eq!(w.vms.put_ref(h), Err(Error::Inval));
    let live = w.mm.live();
    // Teardown under allocation failure: retried until it goes through.
    let mut tries = 0;
    loop {
        w.mm.fail_nth(Some(tries + 1));
        let r = w.vms.teardown(&mut w.host, &mut w.hyp, &mut w.mm, h);
        w.mm.fail_nth(None);
        tries += 1;
        w.check_invariants();
        if r.is_ok() {
            break;
        }
        assert_eq!(r, Err(Error::NoMem));
        assert_eq!(w.vms.get_ref(h).err(), Some(Error::Perm), "dying");
        assert!(tries < 10);
    }
    assert!(tries > 1, "teardown was retried");
    assert!(w.vms.is_empty());
    assert!(w.mm.live() < live, "shadow EPT freed");
    w.run(Op::HypDonateHost(META + 3 * K4, 509)).unwrap();
    for p in [META, META + 2 * K4, G1, G1 + 5 * K4, G1 + 699 * K4] {
        let e = w.host.pgt().lookup(&mut w.mm, p).unwrap().entry;
        assert_eq!(EptFormat::state(e), PageState::Owned, "{p:#x} back to host");
        // Guest pages are zeroed exactly once; the metadata once per
        // teardown attempt (harmless).
        let z = w.mm.zeroed.get(&p).copied().unwrap_or(0);
        assert!(
            z == 1 || (p < G1 && u64::from(z) == tries),
            "{p:#x} zeroed {z} times"
        );
    }
    w.destroy();
}

#[test]
fn failed_create_changes_nothing() {
    let mut w = World::new();
    w.run(Op::DonateHyp(META + K4, 1)).unwrap();
    let live = w.mm.live();
    // Metadata that is not the host's.
    let r = w.vms.create(
        &mut w.host,
        &mut w.hyp,
        &mut w.mm,
        1,
        VmKind::Normal,
        META,
        2,
        3,
    );
    assert_eq!(r, Err(Error::Perm));
    // Out of memory for the shadow EPT root.
    w.mm.fail_nth(Some(1));
    let r = w.vms.create(
        &mut w.host,
        &mut w.hyp,
        &mut w.mm,
        1,
        VmKind::Normal,
        META,
        1,
        3,
    );
    w.mm.fail_nth(None);
    assert_eq!(r, Err(Error::NoMem));
    assert!(w.vms.is_empty());
    assert_eq!(w.mm.live(), live);
    assert_eq!(
        EptFormat::state(w.host.pgt().lookup(&mut w.mm, META).unwrap().entry),
        PageState::Owned
    );
    w.check_invariants();
    w.run(Op::HypDonateHost(META + K4, 1)).unwrap();
    w.destroy();
}
