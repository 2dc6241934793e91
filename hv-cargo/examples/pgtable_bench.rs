// SPDX-License-Identifier: GPL-2.0

//! Benchmark of the page-table engine and the page-state transitions on
//! simulated memory: operations per second, table pages touched and entries
//! written per operation, and the ratio of entries written to the minimum
//! that must change.  Prints numbers, asserts nothing about time.
//!
//! Run with `cargo run --release --example pgtable_bench`.
//!
//! The "warm region" figure (issue 10): a guest faulting page after page
//! into one 1 GiB host region whose host tables exist already, each fault
//! one counted 4 KiB share that is kept: time and TSC cycles per share,
//! table pages allocated per share (guest tables, share-count pages), and
//! that the host EPT is neither split nor merged on the way (no host table
//! page allocated or freed, no break-before-make invalidation).

use std::time::Instant;

/// `sim.rs` names the core as `crate::hv`, as in the library.
pub use pkvm_x86_hv::hv;
use pkvm_x86_hv::hv::mm::addr::{Gpa, Hpa};
use pkvm_x86_hv::hv::mm::ept::OwnerId;
use pkvm_x86_hv::hv::mm::mem_protect::{
    host_donate_hyp, host_share_guest, host_unshare_guest, hyp_donate_host, GuestEpt, HostEpt,
    HypPgt, VmKind, HOST_OWNED,
};
use pkvm_x86_hv::hv::mm::pgtable::PERM_RWX;

#[path = "../../pkvm_x86/hv/mm/sim.rs"]
#[allow(dead_code, unreachable_pub)]
mod sim;

use sim::Arena;

const K4: u64 = 4096;
const M2: u64 = 2 << 20;
const G1: u64 = 1 << 30;

struct Setup {
    mm: Arena,
    host: HostEpt,
    hyp: HypPgt,
    guest: GuestEpt,
}

fn setup() -> Setup {
    let mut mm = Arena::new(1 << 20);
    let mut host =
        HostEpt::new(&mut mm, 3, pkvm_x86_hv::hv::mm::ram::RamMap::all()).expect("host EPT");
    host.map_memory(&mut mm, Hpa::ZERO, 8 * G1, HOST_OWNED)
        .expect("host memory");
    let hyp = HypPgt::new(&mut mm, 2, 0xffff_8000_0000_0000).expect("hyp");
    let id = OwnerId::new(0x1000).expect("id");
    let guest = GuestEpt::new(&mut mm, id, VmKind::Normal, 3).expect("guest");
    Setup {
        mm,
        host,
        hyp,
        guest,
    }
}

/// Runs `op(i)` `iters` times and prints a line: ops/s, and per op the
/// table pages touched, entries written, and entries written per entry
/// that had to change (`min_entries`).
fn bench(
    name: &str,
    s: &mut Setup,
    iters: u64,
    min_entries: u64,
    mut op: impl FnMut(&mut Setup, u64),
) {
    // Warm up once (first splits), then measure touched pages on one op.
    op(s, 0);
    s.mm.track_touched = true;
    s.mm.reset_touched();
    let w0 = s.mm.writes;
    op(s, 1);
    let touched = s.mm.touched.len() as u64;
    let writes = s.mm.writes - w0;
    s.mm.track_touched = false;
    let t = Instant::now();
    for i in 0..iters {
        op(s, i);
    }
    let ns = t.elapsed().as_nanos().max(1);
    let per_s = u128::from(iters) * 1_000_000_000 / ns;
    let per_op = ns / u128::from(iters);
    println!(
        "{name:<44} {per_s:>10} op/s {per_op:>10} ns/op  tables touched {touched:>4}  entries written {writes:>5}  min {min_entries}  ratio {:>3}.{:02}",
        writes / min_entries,
        writes * 100 / min_entries % 100
    );
}

fn main() {
    println!("pkvm-x86 page-table benchmark (simulated memory; one op = one transition pair unless noted)");
    let mut s = setup();

    bench(
        "4K host->guest share + unshare",
        &mut s,
        200_000,
        4,
        |s, i| {
            let hpa = Hpa::new(G1 + (i % 512) * K4).expect("hpa");
            let gpa = Gpa::new((i % 512) * K4).expect("gpa");
            host_share_guest(&mut s.host, &mut s.guest, &mut s.mm, hpa, gpa, 1, PERM_RWX)
                .expect("share");
            host_unshare_guest(&mut s.host, &mut s.guest, &mut s.mm, hpa, gpa, 1).expect("unshare");
        },
    );

    bench(
        "4K host->hyp donate + return",
        &mut s,
        200_000,
        4,
        |s, i| {
            let pa = Hpa::new(2 * G1 + (i % 512) * K4).expect("pa");
            host_donate_hyp(&mut s.host, &mut s.hyp, &mut s.mm, pa, 1).expect("donate");
            hyp_donate_host(&mut s.host, &mut s.hyp, &mut s.mm, pa, 1).expect("return");
        },
    );

    bench("2M aligned share + unshare", &mut s, 20_000, 4, |s, i| {
        let hpa = Hpa::new(3 * G1 + (i % 64) * M2).expect("hpa");
        let gpa = Gpa::new(G1 + (i % 64) * M2).expect("gpa");
        host_share_guest(
            &mut s.host,
            &mut s.guest,
            &mut s.mm,
            hpa,
            gpa,
            512,
            PERM_RWX,
        )
        .expect("share");
        host_unshare_guest(&mut s.host, &mut s.guest, &mut s.mm, hpa, gpa, 512).expect("unshare");
    });

    bench(
        "2M misaligned gpa share + unshare",
        &mut s,
        2_000,
        2 * 512 + 2,
        |s, i| {
            let hpa = Hpa::new(3 * G1 + (i % 64) * M2).expect("hpa");
            let gpa = Gpa::new(2 * G1 + K4 + (i % 64) * M2).expect("gpa");
            host_share_guest(
                &mut s.host,
                &mut s.guest,
                &mut s.mm,
                hpa,
                gpa,
                512,
                PERM_RWX,
            )
            .expect("share");
            host_unshare_guest(&mut s.host, &mut s.guest, &mut s.mm, hpa, gpa, 512)
                .expect("unshare");
        },
    );

    bench("2M host->hyp donate + return", &mut s, 20_000, 4, |s, i| {
        let pa = Hpa::new(4 * G1 + (i % 64) * M2).expect("pa");
        host_donate_hyp(&mut s.host, &mut s.hyp, &mut s.mm, pa, 512).expect("donate");
        hyp_donate_host(&mut s.host, &mut s.hyp, &mut s.mm, pa, 512).expect("return");
    });

    bench("1G aligned share + unshare", &mut s, 20_000, 4, |s, _| {
        host_share_guest(
            &mut s.host,
            &mut s.guest,
            &mut s.mm,
            Hpa::new(5 * G1).expect("hpa"),
            Gpa::new(4 * G1).expect("gpa"),
            G1 / K4,
            PERM_RWX,
        )
        .expect("share");
        host_unshare_guest(
            &mut s.host,
            &mut s.guest,
            &mut s.mm,
            Hpa::new(5 * G1).expect("hpa"),
            Gpa::new(4 * G1).expect("gpa"),
            G1 / K4,
        )
        .expect("unshare");
    });

    bench(
        "1G host->hyp donate + return (2M hyp pages)",
        &mut s,
        2_000,
        2 + 2 * 512,
        |s, _| {
            host_donate_hyp(
                &mut s.host,
                &mut s.hyp,
                &mut s.mm,
                Hpa::new(6 * G1).expect("pa"),
                G1 / K4,
            )
            .expect("donate");
            hyp_donate_host(
                &mut s.host,
                &mut s.hyp,
                &mut s.mm,
                Hpa::new(6 * G1).expect("pa"),
                G1 / K4,
            )
            .expect("return");
        },
    );

    bench(
        "1G split host share (4K granular, 1 page)",
        &mut s,
        100_000,
        4,
        |s, i| {
            let hpa = Hpa::new(7 * G1 + 5 * M2 + (i % 512) * K4).expect("hpa");
            let gpa = Gpa::new(6 * G1 + (i % 512) * K4).expect("gpa");
            host_share_guest(&mut s.host, &mut s.guest, &mut s.mm, hpa, gpa, 1, PERM_RWX)
                .expect("share");
            host_unshare_guest(&mut s.host, &mut s.guest, &mut s.mm, hpa, gpa, 1).expect("unshare");
        },
    );

    warm_region();

    let host_tables = s.host.pgt().table_pages(&mut s.mm).expect("walk");
    let guest_tables = s.guest.pgt().table_pages(&mut s.mm).expect("walk");
    println!(
        "table pages now: host {host_tables}, guest {guest_tables}, arena live {} (allocs {}, frees {}), errors {}",
        s.mm.live(),
        s.mm.allocs,
        s.mm.frees,
        s.mm.errors.len()
    );
}

/// TSC cycles (x86-64 only; 0 elsewhere).
fn cycles() -> u64 {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: RDTSC has no memory effects; every x86-64 CPU has it.
        unsafe { core::arch::x86_64::_rdtsc() }
    }
    #[cfg(not(target_arch = "x86_64"))]
    0
}

/// The warm-region figure: see the file docs.
fn warm_region() {
    let mut s = setup();
    let region = 3 * G1;
    let pages = G1 / K4;
    // Warm the region: one share + unshare in each 2 MiB piece splits the
    // host's 1 GiB leaf and each 2 MiB leaf once; state changes never
    // merge, so the tables stay.
    for m in 0..512 {
        let hpa = Hpa::new(region + m * M2).expect("hpa");
        let gpa = Gpa::new(16 * G1).expect("gpa");
        host_share_guest(&mut s.host, &mut s.guest, &mut s.mm, hpa, gpa, 1, PERM_RWX)
            .expect("share");
        host_unshare_guest(&mut s.host, &mut s.guest, &mut s.mm, hpa, gpa, 1).expect("unshare");
    }
    let host_tables = s.host.pgt().table_pages(&mut s.mm).expect("walk");
    let (allocs, frees, invals) = (s.mm.allocs, s.mm.frees, s.mm.invalidations);
    // The guest faults page after page: every 4 KiB page of the region,
    // shared at consecutive guest addresses, kept.
    let t = Instant::now();
    let c0 = cycles();
    for i in 0..pages {
        let hpa = Hpa::new(region + i * K4).expect("hpa");
        let gpa = Gpa::new(8 * G1 + i * K4).expect("gpa");
        host_share_guest(&mut s.host, &mut s.guest, &mut s.mm, hpa, gpa, 1, PERM_RWX)
            .expect("share");
    }
    let c = cycles() - c0;
    let ns = t.elapsed().as_nanos().max(1);
    let host_after = s.host.pgt().table_pages(&mut s.mm).expect("walk");
    let count_pages = s.host.share_counts().table_pages();
    let host_invals = s.mm.invalidations - invals;
    println!(
        "{:<44} {:>10} op/s {:>10} ns/op  {} cycles/op  allocs/op {}.{:03}  (guest tables + {count_pages} count pages)",
        "warm 1G region: 4K share, kept (262144)",
        u128::from(pages) * 1_000_000_000 / ns,
        ns / u128::from(pages),
        c / pages,
        (s.mm.allocs - allocs) / pages,
        (s.mm.allocs - allocs) * 1000 / pages % 1000,
    );
    println!(
        "  host EPT table pages {host_tables} -> {host_after}; pages freed during the run {}; invalidations {host_invals} (0: nothing split or merged, no break-before-make)",
        s.mm.frees - frees
    );
    // A second guest address for every page (counted, host unchanged).
    let (allocs, invals) = (s.mm.allocs, s.mm.invalidations);
    let t = Instant::now();
    let c0 = cycles();
    for i in 0..pages {
        let hpa = Hpa::new(region + i * K4).expect("hpa");
        let gpa = Gpa::new(12 * G1 + i * K4).expect("gpa");
        host_share_guest(&mut s.host, &mut s.guest, &mut s.mm, hpa, gpa, 1, PERM_RWX)
            .expect("share");
    }
    let c = cycles() - c0;
    let ns = t.elapsed().as_nanos().max(1);
    println!(
        "{:<44} {:>10} op/s {:>10} ns/op  {} cycles/op  allocs {} (guest tables only), host invalidations {}",
        "warm 1G region: same pages again (count 2)",
        u128::from(pages) * 1_000_000_000 / ns,
        ns / u128::from(pages),
        c / pages,
        s.mm.allocs - allocs,
        s.mm.invalidations - invals,
    );
    assert_eq!(
        s.host.pgt().table_pages(&mut s.mm).expect("walk"),
        host_after,
        "host EPT changed shape"
    );
}
