// SPDX-License-Identifier: GPL-2.0

//! The layout of the host's identity EPT at load: which physical ranges the
//! host gets, with which permissions, memory types and page sizes.
//!
//! Owns [`build_identity`], which fills an empty [`HostEpt`] with an
//! identity map of `[0, limit)` minus a list of [`Hole`]s, and
//! [`map_typed`], which maps one range in runs of uniform memory type.  The
//! memory types come from a [`MemTypes`] oracle: the decoded MTRRs
//! ([`Mtrrs`]) in the module, simple fakes in tests.  Reading the MTRRs,
//! MAXPHYADDR and the list of hypervisor pages is the caller's job
//! (`host_ept.rs` in the module).
//!
//! # Layout
//!
//! * Everything in `[0, limit)` that no hole covers is mapped read + write +
//!   execute, page state `OWNED`.
//! * A hole with `perms: None` (the hypervisor's memory) is left alone: its
//!   entries stay zero, which the page-state encoding reads as `NOPAGE`
//!   owned by the hypervisor, and it costs no table pages of its own.
//! * A hole with `perms: Some(p)` (the module image root mode maps: text,
//!   rodata, ro_after_init) is mapped [`PINNED`] with exactly the
//!   permissions `p` (never write): readable by the host, accepted by no
//!   page-state transition.
//! * Each mapped range is cut into maximal runs of one memory type (largest
//!   naturally aligned 1 GiB / 2 MiB / 4 KiB blocks first), and each run is
//!   mapped with one [`HostEpt::map_memory`] call, so the page-table engine
//!   uses the largest aligned pages the run allows: a hole or a memory-type
//!   boundary splits only the large pages it actually cuts.
//! * A 4 KiB page that has no single type (inconsistent MTRRs) is mapped
//!   uncached, the type that is never wrong for MMIO.

use crate::hv::error::{Error, Result};
use crate::hv::mm::addr::Hpa;
use crate::hv::mm::ept::{MemType, PageState, PAGE_SIZE, PINNED};
use crate::hv::mm::mem_protect::HostEpt;
use crate::hv::mm::mtrr::Mtrrs;
use crate::hv::mm::pgtable::{Attrs, MmOps, ADDR_LIMIT, PERM_R, PERM_RWX, PERM_W};
use crate::hv::mm::ram::RamMap;

/// Block sizes tried when cutting a range into runs of one memory type,
/// largest first: 1 GiB, 2 MiB, 4 KiB (the EPT's page sizes).
pub const BLOCK_SIZES: [u64; 3] = [1 << 30, 2 << 20, PAGE_SIZE];

/// Source of memory types for the host's identity map.
pub trait MemTypes {
    /// The single memory type of every byte of `[start, start + size)`, or
    /// `None` if the range holds more than one type (or none can be given).
    fn uniform_type(&self, start: u64, size: u64) -> Option<MemType>;
}

impl MemTypes for Mtrrs {
    fn uniform_type(&self, start: u64, size: u64) -> Option<MemType> {
        Mtrrs::uniform_type(self, start, size)
    }
}

/// A range that [`build_identity`] does not map read + write + execute.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hole {
    /// First physical address (4 KiB aligned).
    pub pa: u64,
    /// Size in bytes (a non-zero multiple of 4 KiB).
    pub size: u64,
    /// `None`: left unmapped (owned by the hypervisor); `Some(p)`: mapped
    /// for the host [`PINNED`] with permissions `p` (`PERM_*` bits;
    /// `PERM_R` must be among them, as EPT forbids write or execute without
    /// read here, and `PERM_W` must not: a pinned page is read-only).
    pub perms: Option<u8>,
}

impl Hole {
    /// A range of the hypervisor's own memory: not mapped for the host.
    pub const fn hyp(pa: u64, size: u64) -> Self {
        Self {
            pa,
            size,
            perms: None,
        }
    }

    /// A range of the module image, mapped for the host [`PINNED`] with
    /// permissions `perms` only.
    pub const fn restricted(pa: u64, size: u64, perms: u8) -> Self {
        Self {
            pa,
            size,
            perms: Some(perms),
        }
    }

    /// Whether the hole is well formed: aligned, non-empty, inside
    /// `[0, limit)`, with valid permissions.
    fn valid(&self, limit: u64) -> bool {
        let aligned = (self.pa | self.size) & (PAGE_SIZE - 1) == 0;
        let inside = self.pa.checked_add(self.size).is_some_and(|e| e <= limit);
        let perms_ok = self
            .perms
            .is_none_or(|p| p & !PERM_RWX == 0 && p & PERM_R != 0 && p & PERM_W == 0);
        aligned && self.size != 0 && inside && perms_ok
    }
}

/// The largest block of [`BLOCK_SIZES`] that starts at `a` (naturally
/// aligned), ends by `end` and has a single memory type, with that type.
fn largest_block<T: MemTypes>(types: &T, a: u64, end: u64) -> Option<(u64, MemType)> {
    BLOCK_SIZES.iter().find_map(|&s| {
        if !a.is_multiple_of(s) || end - a < s {
            return None;
        }
        types.uniform_type(a, s).map(|t| (s, t))
    })
}

/// Maps `[start, end)` for the host, identity, in page state `state`
/// (`OWNED`, or [`PINNED`] for the module image), with permissions
/// `perms`, in maximal runs of one memory type (see the module docs).
///
/// `start` and `end` must be 4 KiB aligned with `start <= end <=`
/// [`ADDR_LIMIT`] (else [`Error::Inval`]); an empty range maps nothing.
/// The range must still belong to the hypervisor (zero entries), else
/// [`Error::Perm`].  On an error, the runs before the failing one stay
/// mapped.
pub fn map_typed<M: MmOps, T: MemTypes>(
    ept: &mut HostEpt,
    mm: &mut M,
    types: &T,
    start: u64,
    end: u64,
    perms: u8,
    state: PageState,
) -> Result {
    if (start | end) & (PAGE_SIZE - 1) != 0 || start > end || end > ADDR_LIMIT {
        return Err(Error::Inval);
    }
    let mut a = start;
    while a < end {
        let run_start = a;
        let mut run_type: Option<MemType> = None;
        while a < end {
            // `None`: not even a 4 KiB page has one type; handled below.
            let Some((size, ty)) = largest_block(types, a, end) else {
                break;
            };
            if run_type.is_some_and(|t| t != ty) {
                break;
            }
            run_type = Some(ty);
            a += size;
        }
        let memtype = match run_type {
            Some(t) => t,
            None => {
                // Inconsistent types: the safe choice is uncached.
                a += PAGE_SIZE;
                MemType::Uc
            }
        };
        let attrs = Attrs {
            perms,
            memtype,
            state,
            ipat: false,
        };
        let pa = Hpa::new(run_start).ok_or(Error::Inval)?;
        ept.map_memory(mm, pa, a - run_start, attrs)?;
    }
    Ok(())
}

/// The end of the host's identity map for a CPU with `maxphyaddr`
/// physical address bits (CPUID 0x80000008) of which `keyid_bits` (the
/// TME/MKTME key-ID bits IA32_TME_ACTIVATE reserves, 0 without MKTME) are
/// not address but key: `2^(maxphyaddr - keyid_bits)`, at most 2^48 (what
/// a 4-level EPT translates, [`ADDR_LIMIT`]) and at least 2^32.
///
/// The key-ID bits are never mapped: an access with a key ID set would
/// reach the same memory under another encryption key, an alias the page
/// states do not track, so those addresses stay EPT violations.
pub const fn identity_limit(maxphyaddr: u8, keyid_bits: u8) -> u64 {
    let bits = maxphyaddr.saturating_sub(keyid_bits);
    let bits = if bits < 32 {
        32
    } else if bits > 48 {
        48
    } else {
        bits
    };
    1u64 << bits
}

const _: () = assert!(identity_limit(52, 0) == ADDR_LIMIT);

/// Sorts `holes` by address and checks them against `limit`: every hole
/// well formed (see [`Hole`]) and inside `[0, limit)`, no two overlapping
/// (adjacent is fine), `limit` 4 KiB aligned and at most [`ADDR_LIMIT`].
/// Anything else is [`Error::Inval`].
pub fn sort_and_check_holes(holes: &mut [Hole], limit: u64) -> Result {
    if limit & (PAGE_SIZE - 1) != 0 || limit > ADDR_LIMIT {
        return Err(Error::Inval);
    }
    crate::hv::sort::sort_by_key(holes, |h| h.pa);
    let mut prev_end = 0u64;
    for h in holes.iter() {
        if !h.valid(limit) || h.pa < prev_end {
            return Err(Error::Inval);
        }
        prev_end = h.pa + h.size;
    }
    Ok(())
}

/// Builds the host's identity map of `[0, limit)` in `ept`, which must be
/// empty (fresh from [`HostEpt::new`]): everything `RWX` except `holes`,
/// which are left unmapped (`perms: None`) or mapped with their own
/// permissions.  Memory types come from `types`; see the module docs.
///
/// `holes` is sorted in place, in any order on input; overlapping,
/// malformed or out-of-range holes, or a bad `limit`, are [`Error::Inval`]
/// before anything is mapped.  A table-page allocation failure is
/// [`Error::NoMem`]; then `ept` is partly built (every table page it holds
/// is reachable from its root) and the caller should destroy it.
pub fn build_identity<M: MmOps, T: MemTypes>(
    ept: &mut HostEpt,
    mm: &mut M,
    types: &T,
    holes: &mut [Hole],
    limit: u64,
) -> Result {
    sort_and_check_holes(holes, limit)?;
    let mut a = 0u64;
    for h in holes.iter() {
        map_typed(ept, mm, types, a, h.pa, PERM_RWX, PageState::Owned)?;
        if let Some(p) = h.perms {
            map_typed(ept, mm, types, h.pa, h.pa + h.size, p, PINNED)?;
        }
        a = h.pa + h.size;
    }
    map_typed(ept, mm, types, a, limit, PERM_RWX, PageState::Owned)
}

/// Granule of the on-demand map: a 1 GiB aligned block (one PDPT entry when
/// its memory type is uniform).
const LAZY_BLOCK: u64 = 1 << 30;

/// Where the eager map stops: past the end of RAM (rounded up to 1 GiB) and
/// at least 4 GiB (the legacy MMIO below it: APIC, I/O APIC, PCI hole, is
/// mapped eagerly with everything else there), at most `limit`.  Every RAM
/// page, and therefore every page that can ever change hands (the RAM map
/// is checked before any transition), lies below it.
pub fn eager_end(ram: &RamMap, limit: u64) -> u64 {
    let ram_end = ram.ranges().last().map_or(0, |r| r.end);
    let ram_end = ram_end
        .checked_next_multiple_of(LAZY_BLOCK)
        .unwrap_or(ADDR_LIMIT);
    ram_end.max(1 << 32).min(limit)
}

/// The part of the host's identity map that is filled on demand:
/// `[start, end)`, above every RAM page ([`eager_end`]) and below the
/// identity limit ([`identity_limit`]), mapped for the host, typed by
/// `types`, at its first EPT violation ([`LazyMap::map_on_demand`]).
///
/// A zero host EPT entry normally means "the hypervisor's"; in this range
/// it means "the host's, not mapped yet": no hypervisor or guest page can
/// be there (only RAM changes hands, and there is none), so a host access
/// there is never to protected memory.  This keeps large physical address
/// spaces (2^48: 513 table pages if mapped eagerly) from costing tables
/// for ranges the host never touches (64-bit BARs are the usual visitors).
#[derive(Clone, Copy, Debug)]
pub struct LazyMap<T> {
    start: u64,
    end: u64,
    types: T,
}

impl<T: MemTypes> LazyMap<T> {
    /// The range `[start, end)` (4 KiB aligned, `start <= end <=`
    /// [`ADDR_LIMIT`], else [`Error::Inval`]) typed by `types`.
    pub fn new(start: u64, end: u64, types: T) -> Result<Self> {
        if (start | end) & (PAGE_SIZE - 1) != 0 || start > end || end > ADDR_LIMIT {
            return Err(Error::Inval);
        }
        Ok(Self { start, end, types })
    }

    /// The range filled on demand.
    pub const fn range(&self) -> (u64, u64) {
        (self.start, self.end)
    }

    /// After an EPT violation of the host at `pa`: if `pa` is in the lazy
    /// range and not mapped yet, maps the 1 GiB aligned block around it
    /// (clipped to the range) for the host, identity, read + write +
    /// execute, `OWNED`, in runs of one memory type exactly as
    /// [`build_identity`] would have; `Ok(true)`: retry the access.
    /// `Ok(false)`: not for the lazy map (a real violation).  A table-page
    /// allocation failure is [`Error::NoMem`] (the host's access faults;
    /// it may try again).  If an earlier attempt ran out of memory half
    /// way, the block is partly mapped: then only what is missing at
    /// `pa`, its 4 KiB page, is added.
    pub fn map_on_demand<M: MmOps>(&self, ept: &mut HostEpt, mm: &mut M, pa: Hpa) -> Result<bool> {
        let a = pa.raw() & !(PAGE_SIZE - 1);
        if a < self.start || a >= self.end || ept.pgt().lookup(mm, pa)?.entry != 0 {
            return Ok(false);
        }
        let lo = (a & !(LAZY_BLOCK - 1)).max(self.start);
        let hi = (a | (LAZY_BLOCK - 1)).saturating_add(1).min(self.end);
        match map_typed(ept, mm, &self.types, lo, hi, PERM_RWX, PageState::Owned) {
            Err(Error::Perm) => {
                let memtype = self.types.uniform_type(a, PAGE_SIZE).unwrap_or(MemType::Uc);
                let attrs = Attrs {
                    perms: PERM_RWX,
                    memtype,
                    state: PageState::Owned,
                    ipat: false,
                };
                ept.map_memory(mm, Hpa::new(a).ok_or(Error::Inval)?, PAGE_SIZE, attrs)?;
            }
            r => r?,
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::vec::Vec;

    use super::*;
    use crate::hv::mm::addr::lit;
    use crate::hv::mm::ept::OwnerId;
    use crate::hv::mm::mtrr::{
        RawMtrrs, VarMtrrPair, DEF_TYPE_E, DEF_TYPE_FE, MTRRCAP_FIX, MTRRCAP_WC, PHYSMASK_VALID,
    };
    use crate::hv::mm::pgtable::tests::Rng;
    use crate::hv::mm::pgtable::{EptFormat, PteFormat, PERM_W, PERM_X};
    use crate::hv::mm::sim::Arena;

    const K4: u64 = 4096;
    const M2: u64 = 2 << 20;
    const G1: u64 = 1 << 30;
    const R: u8 = PERM_R;
    const RX: u8 = PERM_R | PERM_X;
    const RW: u8 = PERM_R | PERM_W;
    const RWX: u8 = PERM_RWX;
    const WB: MemType = MemType::Wb;
    const UC: MemType = MemType::Uc;

    /// One present leaf: where, how big, with what.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    struct Lf {
        addr: u64,
        size: u64,
        perms: u8,
        mt: MemType,
    }

    /// Fake memory types: sorted, disjoint, 4 KiB aligned typed intervals;
    /// `default` everywhere else.
    #[derive(Clone, Debug)]
    struct Layout {
        segs: Vec<(u64, u64, MemType)>,
        default: MemType,
    }

    fn push_run(out: &mut Vec<(u64, u64, MemType)>, a: u64, b: u64, t: MemType) {
        if a >= b {
            return;
        }
        if let Some(last) = out.last_mut() {
            if last.1 == a && last.2 == t {
                last.1 = b;
                return;
            }
        }
        out.push((a, b, t));
    }

    impl Layout {
        fn uniform(t: MemType) -> Self {
            Self {
                segs: Vec::new(),
                default: t,
            }
        }

        /// `[s, e)` cut into maximal pieces of one type.
        fn runs(&self, s: u64, e: u64) -> Vec<(u64, u64, MemType)> {
            let mut out = Vec::new();
            let mut pos = s;
            for &(a, b, t) in &self.segs {
                if b <= pos {
                    continue;
                }
                if a >= e {
                    break;
                }
                push_run(&mut out, pos, a, self.default);
                let hi = b.min(e);
                push_run(&mut out, pos.max(a), hi, t);
                pos = hi;
            }
            push_run(&mut out, pos, e, self.default);
            out
        }
    }

    impl MemTypes for Layout {
        fn uniform_type(&self, start: u64, size: u64) -> Option<MemType> {
            let end = start.checked_add(size)?.checked_add(K4 - 1)? & !(K4 - 1);
            let r = self.runs(start & !(K4 - 1), end);
            match r.as_slice() {
                [(_, _, t)] => Some(*t),
                _ => None,
            }
        }
    }

    /// Fake memory types where the 4 KiB pages in `bad` have no single
    /// type (nothing containing them is uniform); everything else WB.
    struct Broken {
        bad: Vec<u64>,
    }

    impl MemTypes for Broken {
        fn uniform_type(&self, start: u64, size: u64) -> Option<MemType> {
            let hit = self.bad.iter().any(|&p| p < start + size && start < p + K4);
            (!hit).then_some(WB)
        }
    }

    /// The greedy cut of `[s, e)` into naturally aligned 1G/2M/4K blocks:
    /// what the engine maps a range with.
    fn blocks(s: u64, e: u64) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        let mut a = s;
        while a < e {
            let size = [G1, M2, K4]
                .into_iter()
                .find(|&z| a.is_multiple_of(z) && a + z <= e)
                .unwrap();
            out.push((a, size));
            a += size;
        }
        out
    }

    /// Expected leaves from hand-written segments `(start, end, perms, type)`,
    /// each mapped by one call.
    fn from_segments(segs: &[(u64, u64, u8, MemType)]) -> Vec<Lf> {
        let mut out = Vec::new();
        for &(s, e, perms, mt) in segs {
            for (addr, size) in blocks(s, e) {
                out.push(Lf {
                    addr,
                    size,
                    perms,
                    mt,
                });
            }
        }
        out
    }

    /// Reference model for a [`Layout`]: the calls `build_identity` must
    /// make (gaps RWX, restricted holes), each cut at type changes, each
    /// piece cut into the largest aligned blocks.
    fn reference(types: &Layout, holes: &[Hole], limit: u64) -> Vec<Lf> {
        let mut hs = holes.to_vec();
        hs.sort_by_key(|h| h.pa);
        let mut calls = Vec::new();
        let mut a = 0;
        for h in &hs {
            calls.push((a, h.pa, RWX));
            if let Some(p) = h.perms {
                calls.push((h.pa, h.pa + h.size, p));
            }
            a = h.pa + h.size;
        }
        calls.push((a, limit, RWX));
        let mut segs = Vec::new();
        for (s, e, p) in calls {
            for (rs, re, t) in types.runs(s, e) {
                segs.push((rs, re, p, t));
            }
        }
        from_segments(&segs)
    }

    /// The fewest table pages that can hold `leaves`: the root, plus one
    /// PDPT per 512 GiB, one PD per 1 GiB and one PT per 2 MiB that
    /// contains a smaller leaf.
    fn min_tables(leaves: &[Lf]) -> usize {
        let mut t = BTreeSet::new();
        for l in leaves {
            t.insert((3, l.addr >> 39));
            if l.size <= M2 {
                t.insert((2, l.addr >> 30));
            }
            if l.size == K4 {
                t.insert((1, l.addr >> 21));
            }
        }
        1 + t.len()
    }

    /// Every present leaf, in address order; checks on the way that each
    /// is an identity `OWNED` (RWX) or `PINNED` (restricted) mapping and that every non-present entry is
    /// zero (`NOPAGE`, owner `HYP`).
    fn leaves(ept: &HostEpt, mm: &mut Arena) -> Vec<Lf> {
        let mut out = Vec::new();
        ept.pgt()
            .for_each_leaf(mm, lit::hpa(0), ADDR_LIMIT, |_, ctx, e| {
                if EptFormat::is_present(e) {
                    assert_eq!(
                        EptFormat::addr(e),
                        lit::hpa(ctx.addr),
                        "identity at {:#x}",
                        ctx.addr
                    );
                    let a = EptFormat::attrs(e);
                    // RWX is the host's own memory, anything less a
                    // restricted hole: the module image, PINNED.
                    let want = if a.perms == RWX {
                        PageState::Owned
                    } else {
                        PINNED
                    };
                    assert_eq!(a.state, want, "state at {:#x}", ctx.addr);
                    out.push(Lf {
                        addr: ctx.addr,
                        size: ctx.size(),
                        perms: a.perms,
                        mt: a.memtype,
                    });
                } else {
                    assert_eq!(e, 0, "non-present entry at {:#x}", ctx.addr);
                }
                Ok(())
            })
            .unwrap();
        out
    }

    fn assert_leaves(got: &[Lf], want: &[Lf]) {
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert_eq!(g, w, "leaf {i}");
        }
        assert_eq!(got.len(), want.len(), "number of leaves");
    }

    /// Checks the whole table against `want` and that it uses exactly the
    /// fewest table pages for it, all accounted for in the arena.
    fn check(ept: &HostEpt, mm: &mut Arena, want: &[Lf]) {
        let got = leaves(ept, mm);
        assert_leaves(&got, want);
        let tables = ept.pgt().table_pages(mm).unwrap();
        assert_eq!(tables, min_tables(want), "table pages");
        assert_eq!(mm.live(), tables as u64, "arena pages");
        assert!(mm.errors.is_empty(), "{:?}", mm.errors);
    }

    fn build<T: MemTypes>(types: &T, holes: &[Hole], limit: u64) -> (HostEpt, Arena) {
        let mut mm = Arena::new(1 << 16);
        let mut ept = HostEpt::new(&mut mm, 3, crate::hv::mm::ram::RamMap::all()).unwrap();
        let mut hs = holes.to_vec();
        build_identity(&mut ept, &mut mm, types, &mut hs, limit).unwrap();
        (ept, mm)
    }

    fn lookup(ept: &HostEpt, mm: &mut Arena, pa: u64) -> (u64, u32) {
        let l = ept.pgt().lookup(mm, lit::hpa(pa)).unwrap();
        (l.entry, l.level)
    }

    /// Asserts that `pa` is mapped by a leaf of `level` with `perms`, `mt`.
    fn assert_at(ept: &HostEpt, mm: &mut Arena, pa: u64, level: u32, perms: u8, mt: MemType) {
        let (e, l) = lookup(ept, mm, pa);
        assert_eq!(l, level, "level at {pa:#x}");
        let a = EptFormat::attrs(e);
        assert_eq!((a.perms, a.memtype), (perms, mt), "attrs at {pa:#x}");
    }

    /// Asserts that `pa` is the hypervisor's: a zero entry at `level`.
    fn assert_hyp(ept: &HostEpt, mm: &mut Arena, pa: u64, level: u32) {
        let (e, l) = lookup(ept, mm, pa);
        assert_eq!((e, l), (0, level), "hyp page {pa:#x}");
        assert_eq!(EptFormat::state(e), PageState::NoPage);
        assert_eq!(EptFormat::owner(e), Some(OwnerId::HYP));
    }

    fn count_sizes(leaves: &[Lf]) -> [usize; 3] {
        let n = |s| leaves.iter().filter(|l| l.size == s).count();
        [n(K4), n(M2), n(G1)]
    }

    // ---- real MTRRs ----------------------------------------------------

    /// A fixed-range MSR whose eight sub-ranges all have type `t`.
    fn fixed_all(t: MemType) -> u64 {
        t as u64 * 0x0101_0101_0101_0101
    }

    /// A variable pair for `[base, base + size)` (MAXPHYADDR 46).
    fn var(base: u64, size: u64, t: MemType) -> VarMtrrPair {
        let addr_mask = ((1u64 << 46) - 1) & !0xfff;
        VarMtrrPair {
            base: base | t as u64,
            mask: (!(size - 1) & addr_mask) | PHYSMASK_VALID,
        }
    }

    /// MTRRs enabled, default UC, fixed ranges WB except VGA
    /// 0xA0000-0xBFFFF UC, and the given variable ranges.
    fn mtrrs(vars: &[VarMtrrPair]) -> Mtrrs {
        let mut r = RawMtrrs {
            cap: MTRRCAP_FIX | MTRRCAP_WC | 8,
            def_type: DEF_TYPE_E | DEF_TYPE_FE | UC as u64,
            fixed: [fixed_all(WB); 11],
            maxphyaddr: 46,
            ..RawMtrrs::default()
        };
        r.fixed[2] = fixed_all(UC); // FIX16K_A0000: 0xA0000..0xBFFFF
        r.var[..vars.len()].copy_from_slice(vars);
        let m = Mtrrs::decode(&r);
        assert!(m.issues().is_empty());
        m
    }

    /// A PC with 8 GiB of RAM: WB below 4 GiB but for a UC MMIO hole at
    /// 3-4 GiB, WB 4-8 GiB, UC (default) above, VGA UC.
    fn pc() -> Mtrrs {
        mtrrs(&[
            var(0, 4 * G1, WB),
            var(3 * G1, G1, UC),
            var(4 * G1, 4 * G1, WB),
        ])
    }

    /// The types of [`pc`] below `limit` (>= 8 GiB), as hand-written runs.
    fn pc_segments(limit: u64) -> Vec<(u64, u64, u8, MemType)> {
        std::vec![
            (0, 0xa_0000, RWX, WB),
            (0xa_0000, 0xc_0000, RWX, UC),
            (0xc_0000, 3 * G1, RWX, WB),
            (3 * G1, 4 * G1, RWX, UC),
            (4 * G1, 8 * G1, RWX, WB),
            (8 * G1, limit, RWX, UC),
        ]
    }

    /// Every present leaf has, on each of its 4 KiB pages (sampled every
    /// 2 MiB in 1 GiB leaves), the type `memtype_at` gives.
    fn check_against_memtype_at(m: &Mtrrs, got: &[Lf]) {
        for l in got {
            let step = if l.size == G1 { M2 } else { K4 };
            let mut pa = l.addr;
            while pa < l.addr + l.size {
                assert_eq!(m.memtype_at(pa), l.mt, "type at {pa:#x}");
                pa += step;
            }
            assert_eq!(m.memtype_at(l.addr + l.size - K4), l.mt);
        }
    }

    #[test]
    fn mtrrs_implement_mem_types() {
        let m = pc();
        for (s, z) in [
            (0, K4),
            (0, M2),
            (0xa_0000, 0x2_0000),
            (0x9_f000, 2 * K4),
            (M2, G1 - M2),
            (3 * G1, G1),
            (3 * G1 - K4, 2 * K4),
            (8 * G1, 8 * G1),
        ] {
            assert_eq!(MemTypes::uniform_type(&m, s, z), m.uniform_type(s, z));
        }
        assert_eq!(MemTypes::uniform_type(&m, 0xa_0000, K4), Some(UC));
        assert_eq!(MemTypes::uniform_type(&m, 0, M2), None);
    }

    /// The PC layout without holes: VGA forces 4 KiB pages in the first
    /// 2 MiB only, the MMIO hole and the space above RAM are single UC
    /// 1 GiB pages, RAM is WB.  Tables: root, PDPT, PD for the first GiB, PT
    /// for the first 2 MiB.
    #[test]
    fn pc_mtrr_layout_gets_its_types_and_the_biggest_pages() {
        let m = pc();
        let limit = 16 * G1;
        let (ept, mut mm) = build(&m, &[], limit);
        let want = from_segments(&pc_segments(limit));
        check(&ept, &mut mm, &want);
        assert_eq!(ept.pgt().table_pages(&mut mm).unwrap(), 4);
        // 160 + 32 + 320 pages of 4 KiB in the first 2 MiB, 511 of 2 MiB
        // up to 1 GiB, then 1 GiB pages: 2 WB, 1 UC, 4 WB, 8 UC.
        assert_eq!(count_sizes(&want), [512, 511, 15]);
        check_against_memtype_at(&m, &leaves(&ept, &mut mm));
        assert_at(&ept, &mut mm, 0, 1, RWX, WB);
        assert_at(&ept, &mut mm, 0x9_f000, 1, RWX, WB);
        assert_at(&ept, &mut mm, 0xa_0000, 1, RWX, UC);
        assert_at(&ept, &mut mm, 0xb_f000, 1, RWX, UC);
        assert_at(&ept, &mut mm, 0xc_0000, 1, RWX, WB);
        assert_at(&ept, &mut mm, M2 - K4, 1, RWX, WB);
        assert_at(&ept, &mut mm, M2, 2, RWX, WB);
        assert_at(&ept, &mut mm, G1 - K4, 2, RWX, WB);
        assert_at(&ept, &mut mm, G1, 3, RWX, WB);
        assert_at(&ept, &mut mm, 3 * G1 - K4, 3, RWX, WB);
        assert_at(&ept, &mut mm, 3 * G1, 3, RWX, UC);
        assert_at(&ept, &mut mm, 4 * G1, 3, RWX, WB);
        assert_at(&ept, &mut mm, 8 * G1, 3, RWX, UC);
        assert_at(&ept, &mut mm, limit - K4, 3, RWX, UC);
        assert_hyp(&ept, &mut mm, limit, 3);
        ept.destroy(&mut mm).unwrap();
        assert_eq!(mm.live(), 0);
    }

    /// An MMIO hole that is 2 MiB but not 1 GiB aligned (PCI at
    /// 3.5-4 GiB): that GiB is mapped with 2 MiB pages of each type, one
    /// extra PD, no PT.
    #[test]
    fn mmio_hole_not_1g_aligned_uses_2m_pages() {
        let m = mtrrs(&[
            var(0, 4 * G1, WB),
            var(3 * G1 + G1 / 2, G1 / 2, UC),
            var(4 * G1, 4 * G1, WB),
        ]);
        let limit = 8 * G1;
        let (ept, mut mm) = build(&m, &[], limit);
        let want = from_segments(&[
            (0, 0xa_0000, RWX, WB),
            (0xa_0000, 0xc_0000, RWX, UC),
            (0xc_0000, 3 * G1 + G1 / 2, RWX, WB),
            (3 * G1 + G1 / 2, 4 * G1, RWX, UC),
            (4 * G1, 8 * G1, RWX, WB),
        ]);
        check(&ept, &mut mm, &want);
        assert_eq!(ept.pgt().table_pages(&mut mm).unwrap(), 5);
        assert_eq!(count_sizes(&want), [512, 511 + 512, 2 + 4]);
        check_against_memtype_at(&m, &leaves(&ept, &mut mm));
        assert_at(&ept, &mut mm, 3 * G1, 2, RWX, WB);
        assert_at(&ept, &mut mm, 3 * G1 + G1 / 2 - K4, 2, RWX, WB);
        assert_at(&ept, &mut mm, 3 * G1 + G1 / 2, 2, RWX, UC);
        assert_at(&ept, &mut mm, 4 * G1 - K4, 2, RWX, UC);
        assert_at(&ept, &mut mm, 4 * G1, 3, RWX, WB);
        ept.destroy(&mut mm).unwrap();
    }

    /// The PC layout with what the module really leaves out: 2 MiB pool
    /// chunks (2 MiB aligned, two of them adjacent, one inside the MMIO
    /// hole) and 4 KiB module text (R+X) and rodata (R) pages, given in no
    /// particular order.  Chunks cost one PD per GiB they are in and no PT;
    /// module pages one PT per 2 MiB they are in.
    #[test]
    fn hypervisor_and_module_holes_in_the_pc_layout() {
        let m = pc();
        let limit = 16 * G1;
        let t = G1 + 10 * M2;
        let mut holes = std::vec![
            Hole::hyp(5 * G1 + 3 * M2, M2),
            Hole::restricted(t + 3 * K4, K4, R),
            Hole::hyp(6 * G1 + 5 * M2, M2),
            Hole::restricted(t, K4, RX),
            Hole::restricted(2 * G1 - K4, K4, R),
            Hole::restricted(t + 2 * K4, K4, RX),
            Hole::hyp(5 * G1 + 2 * M2, M2),
            Hole::restricted(t + K4, K4, RX),
            Hole::hyp(3 * G1 + M2, M2),
            Hole::restricted(t + 4 * K4, K4, R),
        ];
        let mut mm = Arena::new(1 << 16);
        let mut ept = HostEpt::new(&mut mm, 3, crate::hv::mm::ram::RamMap::all()).unwrap();
        build_identity(&mut ept, &mut mm, &m, &mut holes, limit).unwrap();
        assert!(holes.windows(2).all(|w| w[0].pa < w[1].pa), "sorted");

        let want = from_segments(&[
            (0, 0xa_0000, RWX, WB),
            (0xa_0000, 0xc_0000, RWX, UC),
            (0xc_0000, t, RWX, WB),
            (t, t + K4, RX, WB),
            (t + K4, t + 2 * K4, RX, WB),
            (t + 2 * K4, t + 3 * K4, RX, WB),
            (t + 3 * K4, t + 4 * K4, R, WB),
            (t + 4 * K4, t + 5 * K4, R, WB),
            (t + 5 * K4, 2 * G1 - K4, RWX, WB),
            (2 * G1 - K4, 2 * G1, R, WB),
            (2 * G1, 3 * G1, RWX, WB),
            (3 * G1, 3 * G1 + M2, RWX, UC),
            (3 * G1 + 2 * M2, 4 * G1, RWX, UC),
            (4 * G1, 5 * G1 + 2 * M2, RWX, WB),
            (5 * G1 + 4 * M2, 6 * G1 + 5 * M2, RWX, WB),
            (6 * G1 + 6 * M2, 8 * G1, RWX, WB),
            (8 * G1, limit, RWX, UC),
        ]);
        check(&ept, &mut mm, &want);
        // root, PDPT; PD + PT for VGA; PD 1-2 GiB with PTs for the text
        // pages and for the last page below 2 GiB; PDs for 3, 5, 6 GiB.
        assert_eq!(ept.pgt().table_pages(&mut mm).unwrap(), 10);
        check_against_memtype_at(&m, &leaves(&ept, &mut mm));

        for h in &holes {
            match h.perms {
                None => {
                    assert_hyp(&ept, &mut mm, h.pa, 2);
                    assert_hyp(&ept, &mut mm, h.pa + h.size - K4, 2);
                }
                Some(p) => assert_at(&ept, &mut mm, h.pa, 1, p, WB),
            }
        }
        // Right next to the chunks, 2 MiB pages of the right type.
        assert_at(&ept, &mut mm, 3 * G1, 2, RWX, UC);
        assert_at(&ept, &mut mm, 3 * G1 + 2 * M2, 2, RWX, UC);
        assert_at(&ept, &mut mm, 5 * G1 + M2, 2, RWX, WB);
        assert_at(&ept, &mut mm, 5 * G1 + 4 * M2, 2, RWX, WB);
        assert_at(&ept, &mut mm, t - K4, 2, RWX, WB);
        assert_at(&ept, &mut mm, t + 5 * K4, 1, RWX, WB);
        assert_at(&ept, &mut mm, t + M2, 2, RWX, WB);
        assert_at(&ept, &mut mm, 2 * G1 - 2 * K4, 1, RWX, WB);
        assert_at(&ept, &mut mm, 2 * G1, 3, RWX, WB);
        assert_at(&ept, &mut mm, 7 * G1, 3, RWX, WB);

        // Everything below the limit but the chunks is the host's.
        let mapped: u64 = want.iter().map(|l| l.size).sum();
        assert_eq!(mapped, limit - 4 * M2);
        ept.destroy(&mut mm).unwrap();
        assert_eq!(mm.live(), 0);
        assert!(mm.errors.is_empty());
    }

    /// A restricted hole straddling the VGA type boundary gets its
    /// permissions on both sides and the type of each page.
    #[test]
    fn restricted_hole_across_a_type_boundary() {
        let m = pc();
        let limit = 8 * G1;
        let holes = [Hole::restricted(0x9_e000, 0x4000, RX)];
        let (ept, mut mm) = build(&m, &holes, limit);
        let want = from_segments(&[
            (0, 0x9_e000, RWX, WB),
            (0x9_e000, 0xa_0000, RX, WB),
            (0xa_0000, 0xa_2000, RX, UC),
            (0xa_2000, 0xc_0000, RWX, UC),
            (0xc_0000, 3 * G1, RWX, WB),
            (3 * G1, 4 * G1, RWX, UC),
            (4 * G1, 8 * G1, RWX, WB),
        ]);
        check(&ept, &mut mm, &want);
        assert_at(&ept, &mut mm, 0x9_f000, 1, RX, WB);
        assert_at(&ept, &mut mm, 0xa_1000, 1, RX, UC);
        assert_at(&ept, &mut mm, 0xa_2000, 1, RWX, UC);
        ept.destroy(&mut mm).unwrap();
    }

    // ---- page sizes and alignment ---------------------------------------

    /// Uniform WB memory, no holes: only 1 GiB pages; one PDPT per
    /// 512 GiB up to the module's largest limit (2^48: 513 table pages).
    #[test]
    fn uniform_memory_uses_only_1g_pages() {
        let types = Layout::uniform(WB);
        for (limit, tables) in [
            (4 * G1, 2),
            (512 * G1, 2),
            (513 * G1, 3),
            (1 << 46, 129),
            (1 << 48, 513),
        ] {
            let (ept, mut mm) = build(&types, &[], limit);
            let want = reference(&types, &[], limit);
            assert_eq!(want.len() as u64, limit / G1);
            check(&ept, &mut mm, &want);
            assert_eq!(ept.pgt().table_pages(&mut mm).unwrap(), tables);
            ept.destroy(&mut mm).unwrap();
            assert_eq!(mm.live(), 0);
        }
    }

    // ---- the on-demand part ---------------------------------------------

    /// MMIO above RAM with a few memory-type runs (WC, UC) in WB default.
    fn high_mmio_layout() -> Layout {
        Layout {
            segs: std::vec![
                (5 * G1 + M2, 5 * G1 + 3 * M2, MemType::Wc),
                (8 * G1, 9 * G1, UC),
                (600 * G1 + 5 * K4, 600 * G1 + 7 * K4, UC),
            ],
            default: WB,
        }
    }

    /// Touching every block of the lazy range once gives exactly the
    /// eager map (same leaves, types, page sizes, table pages); a second
    /// touch, or one outside the range, maps nothing.
    #[test]
    fn lazy_map_fills_on_demand_like_the_eager_map() {
        let types = high_mmio_layout();
        let limit = 1u64 << 40;
        let (mut ept, mut mm) = build(&types, &[], 4 * G1);
        let lazy = LazyMap::new(4 * G1, limit, types.clone()).unwrap();
        let mut b = 4 * G1;
        while b < limit {
            let pa = lit::hpa(b + 0x12_3000);
            assert_eq!(
                lazy.map_on_demand(&mut ept, &mut mm, pa),
                Ok(true),
                "{b:#x}"
            );
            assert_eq!(lazy.map_on_demand(&mut ept, &mut mm, pa), Ok(false));
            b += G1;
        }
        for pa in [0, 4 * G1 - K4, limit, limit + G1, ADDR_LIMIT - K4] {
            assert_eq!(
                lazy.map_on_demand(&mut ept, &mut mm, lit::hpa(pa)),
                Ok(false)
            );
        }
        check(&ept, &mut mm, &reference(&types, &[], limit));
        ept.destroy(&mut mm).unwrap();
    }

    /// The whole 48-bit space costs tables only where it is touched.
    #[test]
    fn lazy_map_costs_tables_only_where_touched() {
        let types = Layout::uniform(WB);
        let (mut ept, mut mm) = build(&types, &[], 4 * G1);
        let lazy = LazyMap::new(4 * G1, ADDR_LIMIT, types).unwrap();
        assert_eq!(ept.pgt().table_pages(&mut mm).unwrap(), 2);
        let pa = lit::hpa((1 << 47) + 3 * G1 + 5 * K4);
        assert_eq!(lazy.map_on_demand(&mut ept, &mut mm, pa), Ok(true));
        assert_eq!(ept.pgt().table_pages(&mut mm).unwrap(), 3);
        assert_at(&ept, &mut mm, pa.raw(), 3, RWX, WB);
        assert_hyp(&ept, &mut mm, (1 << 47) + 4 * G1, 3);
        ept.destroy(&mut mm).unwrap();
    }

    /// A block left half mapped (an earlier attempt ran out of table
    /// pages) gets the missing page at the faulting address.
    #[test]
    fn lazy_map_completes_a_partly_mapped_block() {
        let types = high_mmio_layout();
        let (mut ept, mut mm) = build(&types, &[], 4 * G1);
        let lazy = LazyMap::new(4 * G1, 1 << 40, types).unwrap();
        let a = Attrs::wb(RWX, PageState::Owned);
        ept.map_memory(&mut mm, lit::hpa(5 * G1), K4, a).unwrap();
        let pa = lit::hpa(5 * G1 + 8 * K4);
        assert_eq!(lazy.map_on_demand(&mut ept, &mut mm, pa), Ok(true));
        assert_at(&ept, &mut mm, pa.raw(), 1, RWX, WB);
        assert_eq!(lazy.map_on_demand(&mut ept, &mut mm, pa), Ok(false));
        ept.destroy(&mut mm).unwrap();
    }

    #[test]
    fn eager_end_covers_ram_and_the_low_4g() {
        let mut ram = RamMap::empty();
        assert_eq!(eager_end(&ram, 1 << 46), 4 * G1);
        assert_eq!(eager_end(&ram, 1 << 31), 1 << 31);
        ram.add(0, 640 << 10).unwrap();
        ram.add(G1, 6 * G1 + K4).unwrap();
        assert_eq!(eager_end(&ram, 1 << 46), 7 * G1);
        assert_eq!(eager_end(&ram, 5 * G1), 5 * G1);
        assert_eq!(
            LazyMap::new(G1 + 1, 2 * G1, Layout::uniform(WB)).err(),
            Some(Error::Inval)
        );
        assert_eq!(
            LazyMap::new(2 * G1, G1, Layout::uniform(WB)).err(),
            Some(Error::Inval)
        );
        assert!(LazyMap::new(ADDR_LIMIT, ADDR_LIMIT, Layout::uniform(WB)).is_ok());
    }

    /// The identity map ends at MAXPHYADDR less the key-ID bits, within
    /// [2^32, 2^48]; the whole 48-bit space is accepted as a limit.
    #[test]
    fn identity_limit_is_maxphyaddr_without_keyid_bits() {
        for (maxphy, keyid, want) in [
            (36, 0, 1u64 << 36),
            (39, 0, 1 << 39),
            (46, 0, 1 << 46),
            (48, 0, 1 << 48),
            (52, 0, 1 << 48),
            (52, 6, 1 << 46),
            (46, 6, 1 << 40),
            (46, 15, 1 << 32),
            (0, 0, 1 << 32),
            (255, 255, 1 << 32),
        ] {
            assert_eq!(identity_limit(maxphy, keyid), want, "{maxphy} {keyid}");
        }
        assert_eq!(sort_and_check_holes(&mut [], identity_limit(52, 0)), Ok(()));
        assert_eq!(
            sort_and_check_holes(&mut [], identity_limit(52, 0) + K4),
            Err(Error::Inval)
        );
    }

    /// A limit that is not 1 GiB or 2 MiB aligned ends in smaller pages;
    /// a zero limit maps nothing.
    #[test]
    fn unaligned_limits() {
        let types = Layout::uniform(WB);
        let limit = 2 * G1 + 3 * M2 + 5 * K4;
        let (ept, mut mm) = build(&types, &[], limit);
        let want = from_segments(&[(0, limit, RWX, WB)]);
        assert_eq!(count_sizes(&want), [5, 3, 2]);
        check(&ept, &mut mm, &want);
        // root, PDPT, PD for the third GiB, PT for its 4th 2 MiB.
        assert_eq!(ept.pgt().table_pages(&mut mm).unwrap(), 4);
        assert_hyp(&ept, &mut mm, limit, 1);
        ept.destroy(&mut mm).unwrap();

        let (ept, mut mm) = build(&types, &[], 0);
        check(&ept, &mut mm, &[]);
        assert_eq!(mm.live(), 1);
        ept.destroy(&mut mm).unwrap();
    }

    /// A restricted hole from just below a 2 MiB edge to just above a
    /// 1 GiB + 2 MiB edge, in 4 GiB of WB: each side gets the largest
    /// pages alignment allows, counted by hand.
    #[test]
    fn restricted_hole_across_2m_and_1g_edges() {
        let types = Layout::uniform(WB);
        let (s, e) = (M2 - K4, G1 + M2 + K4);
        let (ept, mut mm) = build(&types, &[Hole::restricted(s, e - s, R)], 4 * G1);
        let want = from_segments(&[(0, s, RWX, WB), (s, e, R, WB), (e, 4 * G1, RWX, WB)]);
        // 4K: 511 + 1 + 1 + 511; 2M: 511 + 1 + 510; 1G: 2.
        assert_eq!(count_sizes(&want), [1024, 1022, 2]);
        check(&ept, &mut mm, &want);
        // root, PDPT, PD and PT at 0, PD and PT at 1 GiB.
        assert_eq!(ept.pgt().table_pages(&mut mm).unwrap(), 6);
        assert_at(&ept, &mut mm, s - K4, 1, RWX, WB);
        assert_at(&ept, &mut mm, s, 1, R, WB);
        assert_at(&ept, &mut mm, M2, 2, R, WB);
        assert_at(&ept, &mut mm, G1, 2, R, WB);
        assert_at(&ept, &mut mm, G1 + M2, 1, R, WB);
        assert_at(&ept, &mut mm, e, 1, RWX, WB);
        assert_at(&ept, &mut mm, G1 + 2 * M2, 2, RWX, WB);
        assert_at(&ept, &mut mm, 2 * G1, 3, RWX, WB);
        ept.destroy(&mut mm).unwrap();
    }

    /// Hypervisor and restricted holes starting and ending at every kind
    /// of edge (4K, 2M, 1G, just before and after each), with and without
    /// a type change nearby: the map always equals the reference and uses
    /// the fewest table pages.  A hypervisor hole costs a table only where
    /// its edges are not aligned to the page size around them.
    #[test]
    fn holes_at_every_alignment_boundary() {
        let edges = [
            0,
            K4,
            M2 - K4,
            M2,
            M2 + K4,
            3 * M2,
            G1 - M2,
            G1 - K4,
            G1,
            G1 + K4,
            G1 + M2,
            2 * G1,
            2 * G1 + M2 - K4,
            3 * G1 - K4,
            3 * G1,
        ];
        let limit = 3 * G1;
        let layouts = [
            Layout::uniform(WB),
            Layout {
                segs: std::vec![
                    (G1 + M2 + K4, G1 + 4 * M2, UC),
                    (2 * G1, 3 * G1, MemType::Wc)
                ],
                default: WB,
            },
        ];
        for types in &layouts {
            for (i, &s) in edges.iter().enumerate() {
                for &e in &edges[i + 1..] {
                    for perms in [None, Some(R), Some(RX)] {
                        let holes = [Hole {
                            pa: s,
                            size: e - s,
                            perms,
                        }];
                        let (ept, mut mm) = build(types, &holes, limit);
                        check(&ept, &mut mm, &reference(types, &holes, limit));
                        if perms.is_none() {
                            // The hole's first page is a zero entry at the
                            // level its alignment allows.
                            let (entry, _) = lookup(&ept, &mut mm, s);
                            assert_eq!(entry, 0);
                        }
                        ept.destroy(&mut mm).unwrap();
                        assert_eq!(mm.live(), 0);
                    }
                }
            }
        }
    }

    /// A hypervisor hole of a whole aligned GiB costs nothing: the same
    /// two table pages as no hole, a zero PDPT entry.
    #[test]
    fn aligned_hypervisor_holes_cost_no_tables() {
        let types = Layout::uniform(WB);
        let (ept, mut mm) = build(&types, &[Hole::hyp(G1, G1)], 4 * G1);
        assert_eq!(ept.pgt().table_pages(&mut mm).unwrap(), 2);
        assert_hyp(&ept, &mut mm, G1, 3);
        assert_hyp(&ept, &mut mm, 2 * G1 - K4, 3);
        assert_at(&ept, &mut mm, 2 * G1, 3, RWX, WB);
        ept.destroy(&mut mm).unwrap();

        // A 2 MiB aligned one: one PD, no PT.
        let (ept, mut mm) = build(&types, &[Hole::hyp(G1 + 4 * M2, 2 * M2)], 4 * G1);
        assert_eq!(ept.pgt().table_pages(&mut mm).unwrap(), 3);
        assert_hyp(&ept, &mut mm, G1 + 5 * M2, 2);
        ept.destroy(&mut mm).unwrap();

        // Holes at 0 and ending at the limit.
        let holes = [Hole::hyp(0, M2), Hole::hyp(4 * G1 - M2, M2)];
        let (ept, mut mm) = build(&types, &holes, 4 * G1);
        check(&ept, &mut mm, &reference(&types, &holes, 4 * G1));
        assert_eq!(ept.pgt().table_pages(&mut mm).unwrap(), 4);
        assert_hyp(&ept, &mut mm, 0, 2);
        assert_hyp(&ept, &mut mm, 4 * G1 - K4, 2);
        ept.destroy(&mut mm).unwrap();
    }

    /// Every combination of permissions a restricted hole may have is
    /// mapped exactly and PINNED, including as a large page.
    #[test]
    fn restricted_holes_get_exactly_their_permissions() {
        let types = Layout::uniform(WB);
        let all = [R, RX];
        let holes: Vec<Hole> = all
            .iter()
            .enumerate()
            .flat_map(|(i, &p)| {
                let base = i as u64 * 4 * M2;
                [
                    Hole::restricted(base, K4, p),
                    Hole::restricted(base + M2, M2, p),
                ]
            })
            .collect();
        let (ept, mut mm) = build(&types, &holes, 2 * G1);
        check(&ept, &mut mm, &reference(&types, &holes, 2 * G1));
        for h in &holes {
            let level = if h.size == M2 { 2 } else { 1 };
            assert_at(&ept, &mut mm, h.pa, level, h.perms.unwrap(), WB);
            let (entry, _) = lookup(&ept, &mut mm, h.pa);
            assert_eq!(EptFormat::state(entry), PINNED, "{h:?}");
        }
        let (entry, _) = lookup(&ept, &mut mm, G1);
        assert_eq!(EptFormat::state(entry), PageState::Owned, "RAM is OWNED");
        ept.destroy(&mut mm).unwrap();
    }

    // ---- invalid input, broken types, allocation failure ---------------

    /// Overlapping, malformed or out-of-range holes, bad permissions and
    /// bad limits are `Inval` with nothing mapped; unsorted and adjacent
    /// holes are fine, whatever their order.
    #[test]
    fn bad_holes_are_refused_and_order_does_not_matter() {
        let types = Layout::uniform(WB);
        let limit = 4 * G1;
        let bad: &[(&[Hole], u64)] = &[
            (&[Hole::hyp(M2, 2 * M2), Hole::hyp(2 * M2, M2)], limit),
            (&[Hole::hyp(2 * M2, M2), Hole::hyp(M2, M2 + K4)], limit),
            (
                &[Hole::hyp(M2, 4 * M2), Hole::restricted(2 * M2, K4, R)],
                limit,
            ),
            (&[Hole::hyp(M2, M2), Hole::hyp(M2, M2)], limit),
            (&[Hole::hyp(limit, K4)], limit),
            (&[Hole::hyp(limit - K4, 2 * K4)], limit),
            (&[Hole::hyp(!(K4 - 1), 2 * K4)], limit),
            (&[Hole::hyp(M2, 0)], limit),
            (&[Hole::hyp(M2 + 1, K4)], limit),
            (&[Hole::hyp(M2, K4 + 8)], limit),
            (&[Hole::restricted(M2, K4, 0)], limit),
            (&[Hole::restricted(M2, K4, PERM_W)], limit),
            (&[Hole::restricted(M2, K4, PERM_X)], limit),
            (&[Hole::restricted(M2, K4, RWX | 8)], limit),
            (&[Hole::restricted(M2, K4, RW)], limit),
            (&[Hole::restricted(M2, K4, RWX)], limit),
            (&[], limit + 1),
            (&[], ADDR_LIMIT + G1),
        ];
        for &(holes, limit) in bad {
            let mut mm = Arena::new(64);
            let mut ept = HostEpt::new(&mut mm, 3, crate::hv::mm::ram::RamMap::all()).unwrap();
            let mut hs = holes.to_vec();
            let r = build_identity(&mut ept, &mut mm, &types, &mut hs, limit);
            assert_eq!(r, Err(Error::Inval), "{holes:?} limit {limit:#x}");
            assert_eq!(mm.allocs, 1, "nothing mapped for {holes:?}");
            check(&ept, &mut mm, &[]);
            ept.destroy(&mut mm).unwrap();
        }

        let holes = [
            Hole::hyp(G1 + M2, M2),
            Hole::restricted(G1, K4, R),
            Hole::hyp(G1 + K4, M2 - K4),
            Hole::restricted(G1 + 2 * M2, K4, RX),
        ];
        let want = reference(&types, &holes, limit);
        for rot in 0..holes.len() {
            for rev in [false, true] {
                let mut hs = holes.to_vec();
                hs.rotate_left(rot);
                if rev {
                    hs.reverse();
                }
                let (ept, mut mm) = build(&types, &hs, limit);
                check(&ept, &mut mm, &want);
                ept.destroy(&mut mm).unwrap();
            }
        }
    }

    /// A 4 KiB page with no single memory type is mapped UC on its own;
    /// its neighbours keep their type and the biggest pages they can.
    #[test]
    fn pages_without_a_single_type_are_mapped_uc() {
        let p = G1 + M2 + K4;
        let types = Broken { bad: std::vec![p] };
        let limit = 4 * G1;
        let (ept, mut mm) = build(&types, &[], limit);
        let want = from_segments(&[
            (0, p, RWX, WB),
            (p, p + K4, RWX, UC),
            (p + K4, limit, RWX, WB),
        ]);
        check(&ept, &mut mm, &want);
        assert_eq!(ept.pgt().table_pages(&mut mm).unwrap(), 4);
        assert_at(&ept, &mut mm, p, 1, RWX, UC);
        assert_at(&ept, &mut mm, p - K4, 1, RWX, WB);
        assert_at(&ept, &mut mm, p + K4, 1, RWX, WB);
        assert_at(&ept, &mut mm, G1, 2, RWX, WB);
        ept.destroy(&mut mm).unwrap();

        // Types broken everywhere: every page UC, one at a time, and with
        // a restricted hole its permissions still hold.
        struct Nothing;
        impl MemTypes for Nothing {
            fn uniform_type(&self, _: u64, _: u64) -> Option<MemType> {
                None
            }
        }
        let limit = 4 * M2;
        let holes = [Hole::restricted(M2, K4, RX)];
        let (ept, mut mm) = build(&Nothing, &holes, limit);
        let want: Vec<Lf> = (0..limit / K4)
            .map(|i| Lf {
                addr: i * K4,
                size: K4,
                perms: if i * K4 == M2 { RX } else { RWX },
                mt: UC,
            })
            .collect();
        check(&ept, &mut mm, &want);
        // 8 MiB of 4 KiB pages: root, PDPT, PD, four PTs.
        assert_eq!(ept.pgt().table_pages(&mut mm).unwrap(), 7);
        ept.destroy(&mut mm).unwrap();
    }

    /// Failing each table-page allocation in turn: `NoMem`, no page
    /// leaked (every live page is in the table, and destroying it frees
    /// them all); once enough pages are available, the full map.
    #[test]
    fn allocation_failure_is_nomem_without_leaks() {
        let m = pc();
        let limit = 16 * G1;
        let t = G1 + 10 * M2;
        let holes = [
            Hole::hyp(5 * G1 + 2 * M2, 2 * M2),
            Hole::hyp(3 * G1 + M2, M2),
            Hole::restricted(t, 3 * K4, RX),
            Hole::restricted(t + 3 * K4, 2 * K4, R),
            Hole::restricted(2 * G1 - K4, K4, R),
        ];
        let (full, mut fmm) = build(&m, &holes, limit);
        let want = leaves(&full, &mut fmm);
        let tables = full.pgt().table_pages(&mut fmm).unwrap() as u64;
        assert_eq!(tables, 9);
        full.destroy(&mut fmm).unwrap();

        for n in 1..=tables + 2 {
            let mut mm = Arena::new(1 << 16);
            let mut ept = HostEpt::new(&mut mm, 3, crate::hv::mm::ram::RamMap::all()).unwrap();
            let mut hs = holes.to_vec();
            mm.fail_nth(Some(n));
            let r = build_identity(&mut ept, &mut mm, &m, &mut hs, limit);
            if n < tables {
                assert_eq!(r, Err(Error::NoMem), "fail at {n}");
                assert_eq!(mm.failed_allocs, 1);
                let held = ept.pgt().table_pages(&mut mm).unwrap() as u64;
                assert_eq!(mm.live(), held, "fail at {n}: orphaned pages");
                assert!(held <= n, "fail at {n}: {held} table pages");
            } else {
                assert_eq!(r, Ok(()), "fail at {n}");
                mm.fail_nth(None);
                assert_eq!(leaves(&ept, &mut mm), want);
            }
            assert!(mm.errors.is_empty(), "{:?}", mm.errors);
            ept.destroy(&mut mm).unwrap();
            assert_eq!(mm.live(), 0, "fail at {n}: leak");
            assert!(mm.errors.is_empty(), "{:?}", mm.errors);
        }
    }

    /// `map_typed` refuses unaligned or inverted ranges, and ranges the
    /// host already has.
    #[test]
    fn map_typed_argument_checks() {
        let types = Layout::uniform(WB);
        let mut mm = Arena::new(64);
        let mut ept = HostEpt::new(&mut mm, 3, crate::hv::mm::ram::RamMap::all()).unwrap();
        for (s, e) in [(1, K4), (0, K4 + 1), (2 * K4, K4), (0, ADDR_LIMIT + K4)] {
            let r = map_typed(&mut ept, &mut mm, &types, s, e, RWX, PageState::Owned);
            assert_eq!(r, Err(Error::Inval), "{s:#x}..{e:#x}");
        }
        map_typed(&mut ept, &mut mm, &types, K4, K4, RWX, PageState::Owned).unwrap();
        assert_eq!(mm.allocs, 1);
        map_typed(&mut ept, &mut mm, &types, 0, M2, RWX, PageState::Owned).unwrap();
        let r = map_typed(
            &mut ept,
            &mut mm,
            &types,
            M2 - K4,
            M2 + K4,
            RWX,
            PageState::Owned,
        );
        assert_eq!(r, Err(Error::Perm));
        ept.destroy(&mut mm).unwrap();
        assert_eq!(mm.live(), 0);
    }

    // ---- random layouts --------------------------------------------------

    fn rand_addr(rng: &mut Rng, limit: u64) -> u64 {
        let gran = [K4, M2, G1][rng.below(3) as usize];
        let a = rng.below(limit / gran + 1) * gran;
        // Sometimes just off the edge.
        match rng.below(4) {
            0 => a.saturating_sub(K4),
            1 => a + K4,
            _ => a,
        }
        .min(limit)
    }

    /// Random type layouts, holes and limits against the reference model:
    /// same leaves, fewest table pages, everything else zero.
    #[test]
    fn random_layouts_match_the_reference() {
        let mut rng = Rng(0x4e97_1d3e);
        let types_pool = [WB, UC, MemType::Wc, MemType::Wt, MemType::Wp];
        for iter in 0..300 {
            let limit = [4 * G1, 6 * G1 + 2 * M2, 5 * G1 + 3 * M2 + 7 * K4][rng.below(3) as usize];
            let mut bounds: Vec<u64> = (0..rng.below(8))
                .map(|_| rand_addr(&mut rng, limit))
                .collect();
            bounds.sort_unstable();
            bounds.dedup();
            let mut segs = Vec::new();
            for w in bounds.windows(2) {
                if rng.below(3) != 0 {
                    segs.push((w[0], w[1], types_pool[rng.below(5) as usize]));
                }
            }
            let types = Layout {
                segs,
                default: types_pool[rng.below(5) as usize],
            };
            let mut holes: Vec<Hole> = Vec::new();
            for _ in 0..rng.below(7) {
                let pa = rand_addr(&mut rng, limit);
                let end =
                    (pa + [K4, M2, G1][rng.below(3) as usize] * (1 + rng.below(3))).min(limit);
                let perms = [None, None, Some(R), Some(RX)][rng.below(4) as usize];
                let h = Hole {
                    pa,
                    size: end - pa,
                    perms,
                };
                if h.size > 0 && holes.iter().all(|o| o.pa >= end || pa >= o.pa + o.size) {
                    holes.push(h);
                }
            }
            let (ept, mut mm) = build(&types, &holes, limit);
            let want = reference(&types, &holes, limit);
            check(&ept, &mut mm, &want);
            let hyp: u64 = holes
                .iter()
                .filter(|h| h.perms.is_none())
                .map(|h| h.size)
                .sum();
            let mapped: u64 = want.iter().map(|l| l.size).sum();
            assert_eq!(mapped, limit - hyp, "iteration {iter}");
            ept.destroy(&mut mm).unwrap();
            assert_eq!(mm.live(), 0);
        }
    }
}
