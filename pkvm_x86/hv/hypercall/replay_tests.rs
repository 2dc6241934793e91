// SPDX-License-Identifier: GPL-2.0

//! The debug interface's `fuzz` command replayed on the simulated machine
//! through the same two steps the running hypervisor takes: the
//! [`Hostile`] generator draws a call and its registers, [`Call::parse`]
//! validates them, and the page-state calls run against the simulated
//! host EPT, hypervisor table and VM table.  The sequence must keep the
//! ownership invariants, never give the pinned memory to the host, never
//! count an internal error, and leave nothing behind after the clean-up.

use super::call::{Call, DebugCalls};
use super::hostile::Hostile;
use super::{errno, nr};
use crate::hv::error::Error;
use crate::hv::mm::addr::lit::hpa as h;
use crate::hv::mm::ept::{EptEntry, MemType, PageState, PINNED};
use crate::hv::mm::invariants::{check, Claim};
use crate::hv::mm::mem_protect::{self as mp, HostEpt, HypPgt, HOST_OWNED};
use crate::hv::mm::pgtable::{Attrs, PERM_R, PERM_RWX, PERM_X};
use crate::hv::mm::sim::Arena;
use crate::hv::mm::vm_table::{VmTable, HANDLE_OFFSET, MAX_VMS};

const POOL: u64 = 0x40_0000;
const POOL_SIZE: u64 = 0x10_0000;
const ARENA_PA: u64 = 0x50_0000;
/// The module image: three PINNED pages (read + execute).
const IMAGE_PA: u64 = 0x60_0000;
/// RAM of the simulated PC: below the VGA window and up to 3 GiB; the rest
/// of the first 4 GiB is MMIO (the APICs at 0xfec00000 and 0xfee00000).
const RAM_RANGES: [(u64, u64); 2] = [(0, 0xa_0000), (0x10_0000, 0xc000_0000)];

/// Runs one parsed page-state call; `None` for calls that are not page
/// state (per-CPU queries), which the replay skips.
fn run(
    c: Call,
    host: &mut HostEpt,
    hyp: &mut HypPgt,
    vms: &mut VmTable,
    mm: &mut Arena,
    pinned: &[(u64, u64)],
) -> Option<Result<(), Error>> {
    Some(match c {
        Call::HostDonateHyp { hpa, pages } => mp::host_donate_hyp(host, hyp, mm, hpa, pages),
        Call::HypDonateHost { hpa, pages } => vms.return_to_host(host, hyp, mm, hpa, pages, pinned),
        Call::HostShareHyp { hpa, pages } => mp::host_share_hyp(host, hyp, mm, hpa, pages),
        Call::HostUnshareHyp { hpa, pages } => mp::host_unshare_hyp(host, hyp, mm, hpa, pages),
        Call::VmCreate {
            host_vm_id,
            kind,
            hpa,
            pages,
        } => vms
            .create(host, hyp, mm, host_vm_id, kind, hpa, pages, 3)
            .map(drop),
        Call::VmTeardown { handle } => vms.teardown(host, hyp, mm, handle),
        Call::HostShareGuest {
            handle,
            hpa,
            gpa,
            pages,
        } => vms.get_mut(handle).and_then(|vm| {
            mp::host_share_guest(host, vm.guest_mut(), mm, hpa, gpa, pages, PERM_RWX)
        }),
        Call::HostUnshareGuest {
            handle,
            hpa,
            gpa,
            pages,
        } => vms
            .get_mut(handle)
            .and_then(|vm| mp::host_unshare_guest(host, vm.guest_mut(), mm, hpa, gpa, pages)),
        Call::HostDonateGuest {
            handle,
            hpa,
            gpa,
            pages,
        } => vms.get_mut(handle).and_then(|vm| {
            mp::host_donate_guest(host, vm.guest_mut(), mm, hpa, gpa, pages, PERM_RWX)
        }),
        Call::DebugGuestShareHost { handle, gpa, pages } => vms
            .get_mut(handle)
            .and_then(|vm| mp::guest_share_host(host, vm.guest_mut(), mm, gpa, pages)),
        Call::DebugGuestUnshareHost { handle, gpa, pages } => vms
            .get_mut(handle)
            .and_then(|vm| mp::guest_unshare_host(host, vm.guest_mut(), mm, gpa, pages)),
        Call::DebugHostEptLookup { hpa } => host.pgt().lookup(mm, hpa).map(drop),
        Call::Version
        | Call::TeardownCpu
        | Call::ExitCount { .. }
        | Call::ExitCountReset
        | Call::FlushHostEpt
        | Call::NmisInRoot
        | Call::InternalErrors
        | Call::BeginTeardown
        | Call::VmxCpus
        | Call::NestedStats { .. }
        | Call::ReserveDonate { .. }
        | Call::ReserveStatus
        | Call::PoolGrow { .. }
        | Call::PoolStatus
        | Call::DebugCheckInvariants
        | Call::DebugFillPage { .. }
        | Call::DebugStackGuard
        | Call::DebugCountWords { .. }
        | Call::DebugStackOverflow => return None,
    })
}

#[test]
fn hostile_calls_through_the_parser_keep_the_invariants() {
    for seed in 1..=3u64 {
        let mut mm = Arena::new(1 << 16);
        let mut ram = crate::hv::mm::ram::RamMap::empty();
        for (s, e) in RAM_RANGES {
            ram.add(s, e).unwrap();
        }
        let mut host = HostEpt::new(&mut mm, 3, ram).unwrap();
        let image = Attrs::wb(PERM_R | PERM_X, PINNED);
        host.map_memory(&mut mm, h(0), IMAGE_PA, HOST_OWNED)
            .unwrap();
        host.map_memory(&mut mm, h(IMAGE_PA), 3 << 12, image)
            .unwrap();
        let rest = IMAGE_PA + (3 << 12);
        host.map_memory(&mut mm, h(rest), (4 << 30) - rest, HOST_OWNED)
            .unwrap();
        let mut hyp = HypPgt::new(&mut mm, 3, 0xffff_8880_0000_0000).unwrap();
        let mut vms: VmTable = VmTable::new();
        hyp.map_owned(&mut mm, h(POOL), POOL_SIZE).unwrap();
        host.pgt_mut().unmap(&mut mm, h(POOL), POOL_SIZE).unwrap();
        let pinned = [(POOL, POOL_SIZE)];
        let mut g = Hostile::new(seed, ARENA_PA >> 12, 32, POOL >> 12, POOL_SIZE >> 12)
            .with_image(&[IMAGE_PA >> 12, (IMAGE_PA >> 12) + 1, (IMAGE_PA >> 12) + 2]);
        let (mut parsed, mut einval, mut enosys, mut succeeded) = (0, 0, 0, 0);
        for _ in 0..4000 {
            let (n, a) = g.call();
            match Call::parse(n, a, DebugCalls::On) {
                Ok(c) => {
                    parsed += 1;
                    let r = run(c, &mut host, &mut hyp, &mut vms, &mut mm, &pinned);
                    succeeded += u32::from(matches!(r, Some(Ok(()))));
                }
                Err(errno::EINVAL) => einval += 1,
                Err(errno::ENOSYS) => {
                    assert!(n == 0x7777 || n == u64::MAX, "{n:#x}");
                    enosys += 1;
                }
                Err(e) => panic!("call {n:#x}: unexpected errno {e}"),
            }
        }
        // The generator reaches every outcome of the parse, and enough
        // transitions go through to reach states worth checking.
        assert!(parsed > 2000 && einval > 50 && enosys > 100, "seed {seed}");
        assert!(
            succeeded >= 30,
            "seed {seed}: only {succeeded} went through"
        );
        let mut claims = [Claim::default(); 256];
        assert_eq!(
            check(&host, &hyp, vms.guests(), &mut mm, &mut claims),
            Ok(())
        );
        assert_eq!(host.internal_errors(), 0, "seed {seed}");
        // Clean up the way the fuzz does, through parsed calls.
        for h in HANDLE_OFFSET..HANDLE_OFFSET + MAX_VMS as u32 {
            let c = Call::parse(nr::VM_TEARDOWN, [u64::from(h), 0, 0, 0], DebugCalls::Off).unwrap();
            let r = run(c, &mut host, &mut hyp, &mut vms, &mut mm, &pinned);
            assert!(
                matches!(r, Some(Ok(()) | Err(Error::NoEnt))),
                "{h:#x} {r:?}"
            );
        }
        assert!(vms.is_empty());
        for pfn in (ARENA_PA >> 12)..(ARENA_PA >> 12) + 32 {
            for n in [nr::HYP_DONATE_HOST, nr::HOST_UNSHARE_HYP] {
                let c = Call::parse(n, [pfn, 1, 0, 0], DebugCalls::Off).unwrap();
                let _ = run(c, &mut host, &mut hyp, &mut vms, &mut mm, &pinned);
            }
        }
        assert_eq!(
            check(&host, &hyp, vms.guests(), &mut mm, &mut claims),
            Ok(())
        );
        // Every arena page is the host's again; every pinned page is not.
        for pa in (ARENA_PA..ARENA_PA + (32 << 12)).step_by(4096) {
            let leaf = host.pgt().lookup(&mut mm, h(pa)).unwrap();
            let e = EptEntry(leaf.entry);
            assert!(
                e.is_present(false) && e.state() == PageState::Owned,
                "seed {seed}: arena page {pa:#x} stuck: {e:?}"
            );
        }
        // Nothing else changed hands: every other host page of the first
        // 64 MiB (and a page of every 2 MiB above) is the host's.
        let others = (0..64u64 << 20)
            .step_by(4096)
            .chain((64u64 << 20..4 << 30).step_by(2 << 20));
        let image_pages = IMAGE_PA..IMAGE_PA + (3 << 12);
        for pa in image_pages.clone().step_by(4096) {
            let leaf = host.pgt().lookup(&mut mm, h(pa)).unwrap();
            assert_eq!(
                leaf.entry,
                EptEntry::leaf(pa, u64::from(PERM_R | PERM_X), MemType::Wb, false, PINNED).0,
                "seed {seed}: module image page {pa:#x} changed"
            );
        }
        let others = others.filter(|pa| !image_pages.contains(pa));
        for pa in others.filter(|pa| !(POOL..ARENA_PA + (32 << 12)).contains(pa)) {
            let leaf = host.pgt().lookup(&mut mm, h(pa)).unwrap();
            let e = EptEntry(leaf.entry);
            assert!(
                e.is_present(false) && e.state() == PageState::Owned,
                "seed {seed}: host page {pa:#x} changed: {e:?}"
            );
        }
        for pa in (POOL..POOL + POOL_SIZE).step_by(4096) {
            let leaf = host.pgt().lookup(&mut mm, h(pa)).unwrap();
            assert_eq!(
                leaf.entry, 0,
                "seed {seed}: pinned page {pa:#x} went to the host"
            );
        }
    }
}
