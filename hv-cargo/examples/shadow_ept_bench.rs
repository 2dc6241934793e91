// SPDX-License-Identifier: GPL-2.0

//! Benchmark of the shadow EPT set (`hv::vmx::nested::shadow_ept`) on
//! simulated memory: TSC cycles per install (a guest's first touch of a
//! page, page-state part only), per repeated fault, per INVEPT of a shadow
//! with N leaves and per rebuild after it; table pages per guest GiB; and
//! how many whole-shadow flushes (cross-CPU shootdowns in the module) an
//! INVEPT costs against the one-per-leaf the engine would ask for.  Prints
//! numbers, asserts nothing about time.
//!
//! Run with `cargo run --release --example shadow_ept_bench`.

use std::time::Instant;

/// `sim.rs` names the core as `crate::hv`, as in the library.
pub use pkvm_x86_hv::hv;
use pkvm_x86_hv::hv::mm::addr::{Gpa, Hpa};
use pkvm_x86_hv::hv::mm::ept::MemType;
use pkvm_x86_hv::hv::mm::mem_protect::{HostEpt, HOST_OWNED};
use pkvm_x86_hv::hv::mm::pgtable::PERM_RWX;
use pkvm_x86_hv::hv::mm::ram::RamMap;
use pkvm_x86_hv::hv::vmx::nested::shadow_ept::{
    Installed, ResolvedLeaf, ShadowEpts, PARTIAL_MAX_STALE,
};

#[path = "../../pkvm_x86/hv/mm/sim.rs"]
#[allow(dead_code, unreachable_pub)]
mod sim;

use sim::Arena;

const K4: u64 = 4096;
const M2: u64 = 2 << 20;
const G1: u64 = 1 << 30;
const EPTP: u64 = 0x1000_0000 | 0x1e;
const EPTP2: u64 = 0x2000_0000 | 0x1e;

fn tsc() -> u64 {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: RDTSC has no side effects.
    unsafe {
        core::arch::x86_64::_rdtsc()
    }
    #[cfg(not(target_arch = "x86_64"))]
    0
}

struct Setup {
    mm: Arena,
    host: HostEpt,
    set: ShadowEpts,
}

fn setup() -> Setup {
    let mut mm = Arena::new(1 << 21);
    let mut host = HostEpt::new(&mut mm, 3, RamMap::all()).expect("host EPT");
    host.map_memory(&mut mm, Hpa::ZERO, 16 * G1, HOST_OWNED)
        .expect("host memory");
    Setup {
        mm,
        host,
        set: ShadowEpts::new(),
    }
}

fn leaf(gpa: u64, hpa: u64, size: u64) -> ResolvedLeaf {
    ResolvedLeaf {
        gpa: Gpa::new(gpa).expect("gpa"),
        hpa: Hpa::new(hpa).expect("hpa"),
        size,
        perms: PERM_RWX,
        memtype: MemType::Wb,
        ipat: true,
    }
}

/// Installs `n` leaves of `size` for `eptp`, guest `gpa..`, host `hpa..`;
/// returns (cycles, ns) in total.
fn install_run(s: &mut Setup, eptp: u64, gpa: u64, hpa: u64, n: u64, size: u64) -> (u64, u128) {
    let t = Instant::now();
    let c = tsc();
    for i in 0..n {
        let l = leaf(gpa + i * size, hpa + i * size, size);
        let r = s.set.install(&mut s.host, &mut s.mm, eptp, l.gpa, &l);
        assert_eq!(r, Ok(Installed::Mapped));
    }
    (tsc() - c, t.elapsed().as_nanos())
}

fn per(total: u64, n: u64) -> u64 {
    total / n.max(1)
}

fn main() {
    println!("pkvm-x86 shadow EPT benchmark (simulated memory; TSC cycles, page-state work only:");
    println!("the VM exit, the EPT12 walk and the cross-CPU flush of the module are not in these numbers)");

    // First touch, page after page, 1 GiB of 4 KiB leaves: the host EPT
    // splits its large pages as it goes (cold), then the same guest range
    // again into a second shadow (host tables warm).
    let mut s = setup();
    let n = G1 / K4;
    let (c, ns) = install_run(&mut s, EPTP, 0, 4 * G1, n, K4);
    println!(
        "install 4K, cold host tables        {:>8} cycles/page {:>6} ns/page  ({n} pages)",
        per(c, n),
        ns / u128::from(n)
    );
    let pages = s.set.table_pages(EPTP);
    println!(
        "shadow table pages for 1 GiB of 4K leaves: {pages} (= {} KiB, {}.{:03}% of the memory mapped)",
        pages * 4,
        pages as u64 * 100 / n,
        pages as u64 * 100_000 / n % 1000
    );
    // Warm: the rebuild of a second shadow after its INVEPT (the host
    // EPT's splits are done).
    install_run(&mut s, EPTP2, 0, 5 * G1, n, K4);
    s.set.invalidate_single(&mut s.host, &mut s.mm, EPTP2);
    // The warm region: the host's 1 GiB region is split already, so the
    // rebuild must neither split nor merge the host EPT (no host table
    // page allocated or freed, no host EPT invalidation); it allocates
    // only the shadow's tables and share-count pages (the arena counts).
    let host_tables = s.host.pgt().table_pages(&mut s.mm).expect("walk");
    let counts0 = s.host.share_counts().table_pages();
    let (allocs, frees, invals) = (s.mm.allocs, s.mm.frees, s.mm.invalidations);
    let (c, _) = install_run(&mut s, EPTP2, 0, 5 * G1, n, K4);
    // Any table's: installing into empty ranges invalidates nothing.
    let host_invals = s.mm.invalidations - invals;
    let host_after = s.host.pgt().table_pages(&mut s.mm).expect("walk");
    let shadow_tables = s.set.table_pages(EPTP2) as u64;
    let counts = s.host.share_counts().table_pages() - counts0;
    let allocs = s.mm.allocs - allocs;
    println!(
        "install 4K, warm host tables        {:>8} cycles/page  (rebuild after INVEPT)",
        per(c, n)
    );
    println!(
        "  warm region: host EPT table pages {host_tables} -> {host_after}, invalidations {host_invals}, \
         pages freed {}, pages allocated {allocs} = {shadow_tables} shadow tables + {counts} count pages + {} other: {}",
        s.mm.frees - frees,
        allocs - shadow_tables - counts,
        if host_tables == host_after && host_invals == 0 && s.mm.frees == frees
            && allocs == shadow_tables + counts
        {
            "nothing split or merged"
        } else {
            "THE HOST EPT CHANGED"
        }
    );

    // A second CPU faulting on a mapped address.
    let iters = 200_000u64;
    let c0 = tsc();
    for i in 0..iters {
        let l = leaf((i % n) * K4, 4 * G1 + (i % n) * K4, K4);
        let r = s.set.install(&mut s.host, &mut s.mm, EPTP, l.gpa, &l);
        assert_eq!(r, Ok(Installed::AlreadyPresent));
    }
    println!(
        "fault on a present address          {:>8} cycles/op",
        per(tsc() - c0, iters)
    );

    // 2 MiB leaves: 1 GiB in 512 installs.
    let mut s = setup();
    let (c, _) = install_run(&mut s, EPTP, 0, 4 * G1, 512, M2);
    println!(
        "install 2M                          {:>8} cycles/leaf; shadow table pages for 1 GiB: {}",
        per(c, 512),
        s.set.table_pages(EPTP)
    );

    // INVEPT single-context of a shadow with N leaves, and the rebuild.
    // `stride` 1: host pages contiguous (few runs to return); 2: every
    // other host page (one run per leaf).  Best of 3.
    for stride in [1u64, 2] {
        println!(
            "INVEPT single-context of a shadow with N 4K leaves, host pages {} (another shadow stays):",
            if stride == 1 { "contiguous" } else { "scattered" }
        );
        println!(
            "  {:>7} {:>12} {:>9} {:>8} {:>9} {:>13} {:>9}",
            "N", "cycles", "per leaf", "flushes", "dropped", "rebuild/leaf", "rebuild/x"
        );
        for n in [1u64, 64, 512, 4096, 32768, 262_144] {
            let mut best: Option<(u64, u64, u64, u64)> = None;
            for _ in 0..3 {
                let mut s = setup();
                install_run(&mut s, EPTP2, 0, 12 * G1, 64, K4);
                for i in 0..n {
                    let l = leaf(i * K4, 4 * G1 + i * stride * K4, K4);
                    let r = s.set.install(&mut s.host, &mut s.mm, EPTP, l.gpa, &l);
                    assert_eq!(r, Ok(Installed::Mapped));
                }
                let before = (
                    s.set.stats().flushes,
                    s.set.stats().quiet,
                    s.mm.invalidations,
                );
                let c0 = tsc();
                let r = s.set.invalidate_single(&mut s.host, &mut s.mm, EPTP);
                let c = tsc() - c0;
                assert_eq!(r, 1);
                let flushes = s.set.stats().flushes - before.0;
                let dropped = s.set.stats().quiet - before.1;
                assert_eq!(s.mm.invalidations - before.2, flushes);
                let c1 = tsc();
                for i in 0..n {
                    let l = leaf(i * K4, 4 * G1 + i * stride * K4, K4);
                    let r = s.set.install(&mut s.host, &mut s.mm, EPTP, l.gpa, &l);
                    assert_eq!(r, Ok(Installed::Mapped));
                }
                let rc = tsc() - c1;
                if best.is_none_or(|b| c < b.0) {
                    best = Some((c, flushes, dropped, rc));
                }
            }
            let (c, flushes, dropped, rc) = best.expect("measured");
            println!(
                "  {n:>7} {c:>12} {:>9} {flushes:>8} {dropped:>9} {:>13} {:>6}.{}x",
                per(c, n),
                per(rc, n),
                rc / c.max(1),
                rc * 10 / c.max(1) % 10
            );
        }
    }

    // The re-validating INVEPT when nothing changed (KVM's INVEPT on a
    // vCPU migration): the shadow is walked and each leaf compared with
    // the resolver's answer; here the resolver is arithmetic, so the EPT12
    // walk (about four reads of host memory per leaf) is not included.
    println!("re-validating INVEPT of a shadow with N 4K leaves, nothing stale (kept, no flush):");
    // (At most `REVALIDATE_MAX_LEAVES`: a larger shadow is retired unread.)
    for n in [64u64, 4096] {
        let mut s = setup();
        install_run(&mut s, EPTP, 0, 4 * G1, n, K4);
        let mut best = u64::MAX;
        for _ in 0..3 {
            let c0 = tsc();
            let r =
                s.set
                    .invalidate_single_checked(&mut s.host, &mut s.mm, EPTP, &mut |_, g: Gpa| {
                        Some(leaf(
                            g.raw() & !(K4 - 1),
                            4 * G1 + (g.raw() & !(K4 - 1)),
                            K4,
                        ))
                    });
            best = best.min(tsc() - c0);
            assert_eq!(r, 0);
        }
        assert_eq!(s.set.leaves(EPTP), n);
        println!(
            "  {n:>7} {best:>12} cycles {:>6} per leaf (vs retire + rebuild above)",
            per(best, n)
        );
    }

    // The re-validating INVEPT when k of N leaves are stale (KVM zapped or
    // remapped them): at most `PARTIAL_MAX_STALE` stale leaves, not all,
    // are dropped alone (revoked, one flush, their shares returned); more
    // retire the shadow whole.  "refault" is the page-state work of
    // mapping again what was dropped (the k leaves, or all N after a
    // retirement; the guest's exits and EPT12 walks not counted); "whole" is a retirement of the same shadow plus the
    // rebuild of all N, for comparison.  Host pages scattered (one run per
    // leaf), the resolver arithmetic (no EPT12 walk).  Best of 3.
    println!(
        "re-validating INVEPT with k of N 4K leaves stale (partial drop up to {PARTIAL_MAX_STALE}):"
    );
    println!(
        "  {:>5} {:>5} {:>8} {:>10} {:>8} {:>7} {:>11} {:>11} {:>13}",
        "N", "k", "done", "cycles", "per k", "flushes", "refault", "total", "whole+rebuild"
    );
    for n in [64u64, 512, 4096] {
        for k in [1, n / 8, n] {
            let step = n / k;
            let stale = |i: u64| i.is_multiple_of(step) && i / step < k;
            let host = |i: u64| 4 * G1 + i * 2 * K4;
            let moved = |i: u64| 8 * G1 + i * 2 * K4;
            let refill = |s: &mut Setup, i: u64, h: u64| {
                let l = leaf(i * K4, h, K4);
                let r = s.set.install(&mut s.host, &mut s.mm, EPTP, l.gpa, &l);
                assert!(matches!(
                    r,
                    Ok(Installed::Mapped | Installed::AlreadyPresent)
                ));
                r == Ok(Installed::Mapped)
            };
            let mut best: Option<(u64, u64, u64, &str)> = None;
            let mut whole = u64::MAX;
            for _ in 0..3 {
                let mut s = setup();
                for i in 0..n {
                    refill(&mut s, i, host(i));
                }
                let flushes = s.set.stats().flushes;
                let c0 = tsc();
                let r = s.set.invalidate_single_checked(
                    &mut s.host,
                    &mut s.mm,
                    EPTP,
                    &mut |_, g: Gpa| {
                        let i = g.raw() / K4;
                        Some(leaf(i * K4, if stale(i) { moved(i) } else { host(i) }, K4))
                    },
                );
                let c = tsc() - c0;
                let done = if r == 1 { "retired" } else { "partial" };
                let flushes = s.set.stats().flushes - flushes;
                let c1 = tsc();
                let mut mapped = 0;
                for i in (0..n).filter(|&i| r == 1 || stale(i)) {
                    let h = if stale(i) { moved(i) } else { host(i) };
                    mapped += u64::from(refill(&mut s, i, h));
                }
                let rc = tsc() - c1;
                assert_eq!(mapped, if r == 1 { n } else { k });
                if best.is_none_or(|b| c + rc < b.0 + b.1) {
                    best = Some((c, rc, flushes, done));
                }
                // The same shadow retired whole, then rebuilt.
                let mut s = setup();
                for i in 0..n {
                    refill(&mut s, i, host(i));
                }
                let c0 = tsc();
                s.set.invalidate_single(&mut s.host, &mut s.mm, EPTP);
                for i in 0..n {
                    refill(&mut s, i, host(i));
                }
                whole = whole.min(tsc() - c0);
            }
            let (c, rc, flushes, done) = best.expect("measured");
            println!(
                "  {n:>5} {k:>5} {done:>8} {c:>10} {:>8} {flushes:>7} {rc:>11} {:>11} {whole:>13}",
                per(c, k),
                c + rc
            );
        }
    }

    // INVEPT of an EPTP without a shadow, or whose shadow maps nothing.
    let mut s = setup();
    s.set
        .ensure(&mut s.host, &mut s.mm, EPTP)
        .expect("empty shadow");
    let iters = 1_000_000u64;
    let c0 = tsc();
    for _ in 0..iters {
        s.set.invalidate_single(&mut s.host, &mut s.mm, EPTP);
        s.set.invalidate_single(&mut s.host, &mut s.mm, EPTP2);
    }
    println!(
        "INVEPT of an empty or unknown shadow {:>8} cycles/op (no flush)",
        per(tsc() - c0, 2 * iters)
    );

    // INVEPT global with 4 shadows of 4096 leaves each.
    let mut best = u64::MAX;
    for _ in 0..3 {
        let mut s = setup();
        for k in 0..4u64 {
            install_run(&mut s, EPTP + k * K4, 0, 4 * G1 + k * G1, 4096, K4);
        }
        let c0 = tsc();
        let r = s.set.invalidate_all(&mut s.host, &mut s.mm);
        best = best.min(tsc() - c0);
        assert_eq!((r, s.set.stats().flushes), (4, 4));
    }
    println!("INVEPT global, 4 shadows x 4096 leaves {best:>8} cycles, 4 flushes");
}
