// SPDX-License-Identifier: GPL-2.0

//! Tests of the shadow-VM table.

use super::*;
use crate::hv::mm::addr::lit;
use crate::hv::mm::ept::PageState;
use crate::hv::mm::mem_protect::tests::{Op, World, G1, K4, M2};
use crate::hv::mm::pgtable::{EptFormat, PteFormat};

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
                lit::hpa(0),
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
        lit::hpa(0),
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
        lit::hpa(0),
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
            lit::hpa(0),
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
            lit::hpa(META),
            3,
            3,
        )
        .unwrap()
        .raw();
    assert_eq!(
        w.host
            .pgt()
            .lookup(&mut w.mm, lit::hpa(META))
            .unwrap()
            .entry,
        0
    );
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
        let e = w.host.pgt().lookup(&mut w.mm, lit::hpa(p)).unwrap().entry;
        assert_eq!(EptFormat::state(e), PageState::Owned, "{p:#x} back to host");
        // Guest pages are zeroed exactly once; the metadata at creation
        // and once per teardown attempt (harmless).
        let z = w.mm.zeroed.get(&lit::hpa(p)).copied().unwrap_or(0);
        assert!(
            z == 1 || (p < G1 && u64::from(z) == 1 + tries),
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
        lit::hpa(META),
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
        lit::hpa(META),
        1,
        3,
    );
    w.mm.fail_nth(None);
    assert_eq!(r, Err(Error::NoMem));
    assert!(w.vms.is_empty());
    assert_eq!(w.mm.live(), live);
    assert_eq!(
        EptFormat::state(
            w.host
                .pgt()
                .lookup(&mut w.mm, lit::hpa(META))
                .unwrap()
                .entry
        ),
        PageState::Owned
    );
    w.check_invariants();
    w.run(Op::HypDonateHost(META + K4, 1)).unwrap();
    w.destroy();
}

/// The debug interface's `fuzz` command, replayed on the simulated
/// machine: hostile arguments to every host-initiated transition and to
/// VM creation and teardown, then a full clean-up.  Must terminate quickly,
/// keep the invariants, and give every page back.
#[test]
fn hostile_sequences_terminate_and_clean_up() {
    use crate::hv::hypercall::hostile::Hostile;
    use crate::hv::mm::addr::lit;
    use crate::hv::mm::invariants::{check, Claim};
    use crate::hv::mm::mem_protect::{
        host_donate_guest, host_donate_hyp, host_share_guest, host_share_hyp, host_unshare_guest,
        host_unshare_hyp,
    };
    use crate::hv::mm::pgtable::PERM_RWX;
    use crate::hv::mm::sim::Arena;
    for seed in 1..=3u64 {
        let mut mm = Arena::new(1 << 16);
        let mut host = HostEpt::new(&mut mm, 3, crate::hv::mm::ram::RamMap::all()).unwrap();
        host.map_memory(
            &mut mm,
            lit::hpa(0),
            4 << 30,
            crate::hv::mm::mem_protect::HOST_OWNED,
        )
        .unwrap();
        let mut hyp = HypPgt::new(&mut mm, 3, 0xffff_8880_0000_0000).unwrap();
        let mut vms: VmTable = VmTable::new();
        // The hypervisor's own memory, owned from the start (as the module's
        // pool): must never be handed to the host.
        hyp.map_owned(&mut mm, lit::hpa(0x40_0000), 0x10_0000)
            .unwrap();
        host.pgt_mut()
            .unmap(&mut mm, lit::hpa(0x40_0000), 0x10_0000)
            .unwrap();
        let pinned = [(0x40_0000u64, 0x10_0000u64)];
        // A 32-page arena at 5 MiB; the pinned memory above.
        let mut g = Hostile::new(seed, 0x50_0000 >> 12, 32, 0x40_0000 >> 12, 256);
        let start = std::time::Instant::now();
        let mut succeeded = 0;
        for _ in 0..2000 {
            let (pa, n) = (g.frame() << 12, g.count());
            // As the hypercall layer does: a frame beyond any address is EINVAL.
            let Some(pa) = crate::hv::mm::addr::Hpa::new(pa) else {
                continue;
            };
            let h = u32::try_from(g.handle()).unwrap_or(u32::MAX);
            let (hm, hy, m) = (&mut host, &mut hyp, &mut mm);
            let r = match g.raw() % 9 {
                0 => host_donate_hyp(hm, hy, m, pa, n),
                1 => vms.return_to_host(hm, hy, m, pa, n, &pinned),
                2 => host_share_hyp(hm, hy, m, pa, n),
                3 => host_unshare_hyp(hm, hy, m, pa, n),
                4 => {
                    let kind = [VmKind::Normal, VmKind::Protected][(g.raw() % 2) as usize];
                    vms.create(hm, hy, m, g.raw(), kind, pa, n, 3).map(drop)
                }
                5 => vms.teardown(hm, hy, m, h),
                _ => {
                    let gpa = crate::hv::mm::addr::Gpa::new(g.gfn() << 12);
                    let op = g.raw() % 3;
                    vms.get_mut(h).and_then(|vm| {
                        let gu = vm.guest_mut();
                        let gpa = gpa.ok_or(Error::Inval)?;
                        match op {
                            0 => host_share_guest(hm, gu, m, pa, gpa, n, PERM_RWX),
                            1 => host_unshare_guest(hm, gu, m, pa, gpa, n),
                            _ => host_donate_guest(hm, gu, m, pa, gpa, n, PERM_RWX),
                        }
                    })
                }
            };
            succeeded += u32::from(r.is_ok());
        }
        // Not all rejected: the sequence reaches states worth checking.
        assert!(
            succeeded >= 50,
            "seed {seed}: only {succeeded} operations went through"
        );
        let mut claims = [Claim::default(); 256];
        assert_eq!(
            check(&host, &hyp, vms.guests(), &mut mm, &mut claims),
            Ok(()),
            "seed {seed}"
        );
        for h in HANDLE_OFFSET..HANDLE_OFFSET + MAX_VMS as u32 {
            let r = vms.teardown(&mut host, &mut hyp, &mut mm, h);
            assert!(
                matches!(r, Ok(()) | Err(Error::NoEnt)),
                "seed {seed}: teardown of {h:#x}: {r:?} ({:?})",
                vms.get(h).map(|vm| (vm.meta(), vm.guest().kind()))
            );
        }
        assert!(vms.is_empty(), "seed {seed}: VMs left");
        for i in 0..32u64 {
            let pa = 0x50_0000 + (i << 12);
            let _ = vms.return_to_host(&mut host, &mut hyp, &mut mm, lit::hpa(pa), 1, &pinned);
            let _ = host_unshare_hyp(&mut host, &mut hyp, &mut mm, lit::hpa(pa), 1);
        }
        assert_eq!(
            check(&host, &hyp, vms.guests(), &mut mm, &mut claims),
            Ok(()),
            "seed {seed}"
        );
        // The pinned memory is still the hypervisor's, every page of it.
        for pa in (0x40_0000..0x50_0000).step_by(4096) {
            let leaf = host.pgt().lookup(&mut mm, lit::hpa(pa)).unwrap();
            assert_eq!(
                leaf.entry, 0,
                "seed {seed}: pinned page {pa:#x} went to the host"
            );
        }
        assert!(
            start.elapsed().as_secs() < 20,
            "seed {seed}: took {:?}",
            start.elapsed()
        );
    }
}

/// HYP_DONATE_HOST must not hand out the hypervisor's own memory (its
/// pool: `OWNED` in its table like donated pages) nor a live VM's
/// metadata; pages the host donated and the hypervisor does not use come
/// back.
#[test]
fn return_to_host_refuses_what_the_hypervisor_uses() {
    let mut w = World::new();
    let pool = 0x40_0000u64;
    w.hyp.map_owned(&mut w.mm, lit::hpa(pool), M2).unwrap();
    w.host
        .pgt_mut()
        .unmap(&mut w.mm, lit::hpa(pool), M2)
        .unwrap();
    let pinned = [(pool, M2)];
    // Without the pin the pool page would go: that is the attack.
    let mut w2 = World::new();
    w2.hyp.map_owned(&mut w2.mm, lit::hpa(pool), M2).unwrap();
    w2.host
        .pgt_mut()
        .unmap(&mut w2.mm, lit::hpa(pool), M2)
        .unwrap();
    assert_eq!(
        w2.vms.return_to_host(
            &mut w2.host,
            &mut w2.hyp,
            &mut w2.mm,
            lit::hpa(pool),
            1,
            &[]
        ),
        Ok(())
    );
    // With it, refused, for any overlap.
    for (pa, n) in [
        (pool, 1),
        (pool + M2 - K4, 1),
        (pool - K4, 2),
        (pool + 5 * K4, 3),
    ] {
        assert_eq!(
            w.vms
                .return_to_host(&mut w.host, &mut w.hyp, &mut w.mm, lit::hpa(pa), n, &pinned),
            Err(Error::Busy),
            "{pa:#x} x{n}"
        );
    }
    // A VM's metadata is in use too.
    host_donate_hyp(&mut w.host, &mut w.hyp, &mut w.mm, lit::hpa(META), 1).unwrap();
    hyp_donate_host(&mut w.host, &mut w.hyp, &mut w.mm, lit::hpa(META), 1).unwrap();
    let h = w
        .vms
        .create(
            &mut w.host,
            &mut w.hyp,
            &mut w.mm,
            1,
            VmKind::Protected,
            lit::hpa(META),
            2,
            3,
        )
        .unwrap();
    assert_eq!(
        w.vms.return_to_host(
            &mut w.host,
            &mut w.hyp,
            &mut w.mm,
            lit::hpa(META + K4),
            1,
            &pinned
        ),
        Err(Error::Busy)
    );
    // A page donated on its own comes back.
    let spare = 20 * M2;
    host_donate_hyp(&mut w.host, &mut w.hyp, &mut w.mm, lit::hpa(spare), 1).unwrap();
    assert_eq!(
        w.vms.return_to_host(
            &mut w.host,
            &mut w.hyp,
            &mut w.mm,
            lit::hpa(spare),
            1,
            &pinned
        ),
        Ok(())
    );
    // After teardown the metadata has already gone back with it.
    w.vms
        .teardown(&mut w.host, &mut w.hyp, &mut w.mm, h.raw())
        .unwrap();
    assert_eq!(
        w.vms.return_to_host(
            &mut w.host,
            &mut w.hyp,
            &mut w.mm,
            lit::hpa(META),
            1,
            &pinned
        ),
        Err(Error::Perm),
        "no longer the hypervisor's"
    );
}

/// VM_CREATE writes the metadata pages (zeroes them) only after the
/// donation has invalidated the host's access to them: in the recorded
/// sequence every zeroing of a metadata page comes after an invalidation
/// of the host EPT covering that page, itself after the store that took
/// the page from the host.  (In the module the host EPT's invalidation is
/// the cross-CPU shootdown: no CPU of the host can write a metadata page
/// after the hypervisor did.)
#[test]
fn create_zeroes_the_metadata_only_after_the_host_lost_it_everywhere() {
    use crate::hv::mm::addr::TableKind;
    use crate::hv::mm::sim::Event;
    let mut w = World::new();
    // Split the large pages around the metadata first (a neighbour's round
    // trip), so that no break-before-make covers it by accident.
    w.run(Op::DonateHyp(META + 3 * K4, 1)).unwrap();
    w.run(Op::HypDonateHost(META + 3 * K4, 1)).unwrap();
    let host_root = w.host.pgt().root();
    for i in 0..3 {
        w.mm.dirty.insert(lit::hpa(META + i * K4));
    }
    w.mm.record();
    let h = w
        .vms
        .create(
            &mut w.host,
            &mut w.hyp,
            &mut w.mm,
            42,
            VmKind::Protected,
            lit::hpa(META),
            3,
            3,
        )
        .unwrap()
        .raw();
    let log = w.mm.take_log();
    for i in 0..3 {
        let pa = lit::hpa(META + i * K4);
        assert!(!w.mm.dirty.contains(&pa), "metadata page {i} not zeroed");
        let zero = log
            .iter()
            .position(|e| *e == Event::Zero { pa })
            .expect("zeroed");
        let inval = log.iter().position(|e| {
            matches!(*e, Event::Invalidate { kind: TableKind::HostEpt, root, addr, size }
                if root == host_root && addr <= pa.raw() && pa.raw() < addr + size)
        });
        let inval = inval.expect("the host EPT is invalidated for the metadata");
        assert!(
            inval < zero,
            "page {i}: zeroed at #{zero} before the invalidation at #{inval}"
        );
        // Nothing stored into a table after that invalidation re-grants it:
        // the page is the hypervisor's for good.
        assert_eq!(
            w.host.pgt().lookup(&mut w.mm, pa).unwrap().entry,
            0,
            "page {i}"
        );
    }
    w.check_invariants();
    w.vms
        .teardown(&mut w.host, &mut w.hyp, &mut w.mm, h)
        .unwrap();
    w.destroy();
}
