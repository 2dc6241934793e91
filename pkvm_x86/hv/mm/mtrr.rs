// SPDX-License-Identifier: GPL-2.0

//! MTRR decoding: the memory type of every physical address, as the MTRRs
//! say (SDM Vol. 3A, "Memory Type Range Registers (MTRRs)").
//!
//! Owns which MTRR MSRs to read ([`msr_indices`], [`RawMtrrs::read_with`]),
//! their decoding into [`Mtrrs`], the SDM's precedence rules
//! ([`Mtrrs::memtype_at`]) and the question the host's identity EPT asks
//! before it uses a 2 MiB or 1 GiB page: does a whole range have a single
//! effective type ([`Mtrrs::uniform_type`])?  Reading the MSRs is the caller's
//! job; this file only sees numbers.
//!
//! # Precedence (SDM "Precedences of Cache Controls" / "MTRR Precedences")
//!
//! 1. `IA32_MTRR_DEF_TYPE.E = 0`: every address is UC.
//! 2. Below 1 MiB, when `FE = 1` (and the CPU has fixed ranges,
//!    `IA32_MTRRCAP.FIX`), the fixed-range MTRRs decide alone.
//! 3. Otherwise the valid variable ranges that match the address decide:
//!    one type if they agree, UC if any of them is UC, WT if they are exactly
//!    WT and WB.  The SDM leaves every other overlap undefined; pkvm picks UC,
//!    the type that can never be wrong for MMIO.
//! 4. No variable range matches: the default type (`DEF_TYPE` bits 7:0).
//!
//! A reserved type encoding (2, 3, 7, 8..=255) in any of those places is
//! treated as UC and reported through [`Issues`].  SMRRs are ignored: SMRAM is
//! not accessible outside SMM whatever the EPT says.
//!
//! Variable ranges are matched with the architectural formula
//! `(pa & mask) == (base & mask)` over bits `MAXPHYADDR-1:12`; address bits
//! at or above `MAXPHYADDR` are ignored, as no physical address has them.

use crate::hv::mm::ept::MemType;

/// `IA32_MTRRCAP` (read-only capabilities).
pub const MSR_MTRRCAP: u32 = 0xfe;
/// `IA32_MTRR_DEF_TYPE`.
pub const MSR_MTRR_DEF_TYPE: u32 = 0x2ff;
/// `IA32_MTRR_PHYSBASE0`; `PHYSBASEn` is at `0x200 + 2n`.
pub const MSR_MTRR_PHYSBASE0: u32 = 0x200;
/// `IA32_MTRR_PHYSMASK0`; `PHYSMASKn` is at `0x201 + 2n`.
pub const MSR_MTRR_PHYSMASK0: u32 = 0x201;

/// The fixed-range MTRRs, in address order: `FIX64K_00000`, `FIX16K_80000`,
/// `FIX16K_A0000`, `FIX4K_C0000` .. `FIX4K_F8000`.
pub const FIXED_MSRS: [u32; 11] = [
    0x250, 0x258, 0x259, 0x268, 0x269, 0x26a, 0x26b, 0x26c, 0x26d, 0x26e, 0x26f,
];

/// Number of fixed-range sub-ranges (8 per fixed MSR).
pub const FIXED_RANGES: usize = 88;

/// End (exclusive) of the region the fixed-range MTRRs cover: 1 MiB.
pub const FIXED_REGION_END: u64 = 0x10_0000;

/// Most variable-range pairs this decoder keeps.  Real CPUs report 8 to 10
/// (`IA32_MTRRCAP.VCNT`); a larger count is truncated and reported.
pub const MAX_VAR_MTRRS: usize = 16;

/// `IA32_MTRRCAP` bits 7:0: number of variable ranges.
pub const MTRRCAP_VCNT_MASK: u64 = 0xff;
/// `IA32_MTRRCAP` bit 8: fixed-range MTRRs supported.
pub const MTRRCAP_FIX: u64 = 1 << 8;
/// `IA32_MTRRCAP` bit 10: write-combining type supported.
pub const MTRRCAP_WC: u64 = 1 << 10;

/// `IA32_MTRR_DEF_TYPE` bits 7:0: default memory type.
pub const DEF_TYPE_TYPE_MASK: u64 = 0xff;
/// `IA32_MTRR_DEF_TYPE` bit 10: fixed-range MTRRs enabled.
pub const DEF_TYPE_FE: u64 = 1 << 10;
/// `IA32_MTRR_DEF_TYPE` bit 11: MTRRs enabled.
pub const DEF_TYPE_E: u64 = 1 << 11;

/// `IA32_MTRR_PHYSMASKn` bit 11: the pair is valid.
pub const PHYSMASK_VALID: u64 = 1 << 11;

/// MAXPHYADDR assumed when CPUID leaf 0x80000008 is absent (the caller
/// passes 0): 36, as the SDM specifies.
pub const DEFAULT_MAXPHYADDR: u8 = 36;

/// Upper bound on the aligned blocks [`Mtrrs::uniform_type`] examines.  Only
/// non-contiguous variable masks (legal, never used by firmware) can need
/// more; the answer is then `None`, which is always safe (the caller maps
/// with smaller pages, down to 4 KiB where [`Mtrrs::memtype_at`] is exact).
pub const UNIFORM_BLOCK_BUDGET: u32 = 4096;

/// MSR index of `IA32_MTRR_PHYSBASEn`.
pub const fn var_base_msr(n: usize) -> u32 {
    MSR_MTRR_PHYSBASE0 + 2 * (n as u32)
}

/// MSR index of `IA32_MTRR_PHYSMASKn`.
pub const fn var_mask_msr(n: usize) -> u32 {
    MSR_MTRR_PHYSMASK0 + 2 * (n as u32)
}

/// Number of variable pairs to read for this `IA32_MTRRCAP`, capped at
/// [`MAX_VAR_MTRRS`].
pub const fn var_count(mtrrcap: u64) -> usize {
    let n = (mtrrcap & MTRRCAP_VCNT_MASK) as usize;
    if n > MAX_VAR_MTRRS {
        MAX_VAR_MTRRS
    } else {
        n
    }
}

/// Iterator over the MSRs to read once `IA32_MTRRCAP` is known; see
/// [`msr_indices`].
#[derive(Clone, Debug)]
pub struct MsrIndices {
    pos: usize,
    fixed: bool,
    nvar: usize,
}

/// The MSRs to read after `IA32_MTRRCAP` (which the caller reads first, to
/// learn the rest): `IA32_MTRR_DEF_TYPE`, the 11 fixed-range MTRRs if
/// `IA32_MTRRCAP.FIX` is set, then `PHYSBASEn, PHYSMASKn` for each variable
/// range.  None of them faults on a CPU whose `IA32_MTRRCAP` announces it.
pub const fn msr_indices(mtrrcap: u64) -> MsrIndices {
    MsrIndices {
        pos: 0,
        fixed: mtrrcap & MTRRCAP_FIX != 0,
        nvar: var_count(mtrrcap),
    }
}

impl Iterator for MsrIndices {
    type Item = u32;

    fn next(&mut self) -> Option<u32> {
        let nfixed = if self.fixed { FIXED_MSRS.len() } else { 0 };
        let pos = self.pos;
        let msr = if pos == 0 {
            MSR_MTRR_DEF_TYPE
        } else if pos <= nfixed {
            *FIXED_MSRS.get(pos - 1)?
        } else {
            let v = pos - 1 - nfixed;
            if v >= 2 * self.nvar {
                return None;
            }
            MSR_MTRR_PHYSBASE0 + v as u32
        };
        self.pos += 1;
        Some(msr)
    }
}

/// One variable-range pair, raw.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct VarMtrrPair {
    /// `IA32_MTRR_PHYSBASEn`: type in bits 7:0, base in bits MAXPHYADDR-1:12.
    pub base: u64,
    /// `IA32_MTRR_PHYSMASKn`: valid in bit 11, mask in bits MAXPHYADDR-1:12.
    pub mask: u64,
}

/// The MTRR MSRs as read from the CPU, before any interpretation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawMtrrs {
    /// `IA32_MTRRCAP`.
    pub cap: u64,
    /// `IA32_MTRR_DEF_TYPE`.
    pub def_type: u64,
    /// The fixed-range MTRRs, in [`FIXED_MSRS`] order.
    pub fixed: [u64; 11],
    /// The variable pairs; only the first `var_count(cap)` are used.
    pub var: [VarMtrrPair; MAX_VAR_MTRRS],
    /// MAXPHYADDR, CPUID 0x80000008 EAX\[7:0\] (0: unknown, see
    /// [`DEFAULT_MAXPHYADDR`]).
    pub maxphyaddr: u8,
}

impl Default for RawMtrrs {
    fn default() -> Self {
        Self {
            cap: 0,
            def_type: 0,
            fixed: [0; 11],
            var: [VarMtrrPair::default(); MAX_VAR_MTRRS],
            maxphyaddr: 0,
        }
    }
}

impl RawMtrrs {
    /// Reads `IA32_MTRRCAP` and then every MSR of [`msr_indices`] through
    /// `rdmsr` (index -> value; a caller whose read faults should return 0,
    /// which decodes as "disabled" / "invalid", i.e. UC).
    pub fn read_with(maxphyaddr: u8, mut rdmsr: impl FnMut(u32) -> u64) -> Self {
        let cap = rdmsr(MSR_MTRRCAP);
        let mut raw = Self {
            cap,
            maxphyaddr,
            ..Self::default()
        };
        for msr in msr_indices(cap) {
            let v = rdmsr(msr);
            if msr == MSR_MTRR_DEF_TYPE {
                raw.def_type = v;
            } else if let Some(i) = FIXED_MSRS.iter().position(|&m| m == msr) {
                if let Some(slot) = raw.fixed.get_mut(i) {
                    *slot = v;
                }
            } else if msr >= MSR_MTRR_PHYSBASE0 {
                let off = (msr - MSR_MTRR_PHYSBASE0) as usize;
                if let Some(pair) = raw.var.get_mut(off / 2) {
                    if off & 1 == 0 {
                        pair.base = v;
                    } else {
                        pair.mask = v;
                    }
                }
            }
        }
        raw
    }
}

/// Problems found while decoding, as a set of flags.  None of them stops
/// decoding: whatever is wrong decodes as UC.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Issues(u32);

impl Issues {
    /// No problem.
    pub const NONE: Issues = Issues(0);
    /// `DEF_TYPE` bits 7:0 hold a reserved type (default treated as UC).
    pub const INVALID_DEFAULT_TYPE: Issues = Issues(1 << 0);
    /// A fixed-range byte holds a reserved type (that sub-range is UC).
    pub const INVALID_FIXED_TYPE: Issues = Issues(1 << 1);
    /// A valid variable range holds a reserved type (treated as UC).
    pub const INVALID_VAR_TYPE: Issues = Issues(1 << 2);
    /// `DEF_TYPE.FE` is set but `IA32_MTRRCAP.FIX` is not (fixed ranges
    /// ignored).
    pub const FIXED_WITHOUT_CAP: Issues = Issues(1 << 3);
    /// `IA32_MTRRCAP.VCNT` exceeds [`MAX_VAR_MTRRS`] (extra ranges ignored).
    pub const VAR_TRUNCATED: Issues = Issues(1 << 4);
    /// Reserved bits set in `DEF_TYPE`, a `PHYSBASE` or a `PHYSMASK`
    /// (ignored).
    pub const RESERVED_BITS: Issues = Issues(1 << 5);
    /// MAXPHYADDR outside 32..=52 (clamped).
    pub const BAD_MAXPHYADDR: Issues = Issues(1 << 6);

    const NAMES: [(Issues, &'static str); 7] = [
        (Self::INVALID_DEFAULT_TYPE, "invalid default type"),
        (Self::INVALID_FIXED_TYPE, "invalid fixed-range type"),
        (Self::INVALID_VAR_TYPE, "invalid variable-range type"),
        (
            Self::FIXED_WITHOUT_CAP,
            "FE set without fixed-range support",
        ),
        (Self::VAR_TRUNCATED, "too many variable ranges"),
        (Self::RESERVED_BITS, "reserved bits set"),
        (Self::BAD_MAXPHYADDR, "MAXPHYADDR out of range"),
    ];

    /// Whether no flag is set.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Whether every flag of `other` is set in `self`.
    pub const fn contains(self, other: Issues) -> bool {
        self.0 & other.0 == other.0
    }

    /// The union of two sets.
    #[must_use]
    pub const fn union(self, other: Issues) -> Issues {
        Issues(self.0 | other.0)
    }

    /// The raw flag bits.
    pub const fn bits(self) -> u32 {
        self.0
    }

    /// A short description of each flag set, for logs.
    pub fn names(self) -> impl Iterator<Item = &'static str> {
        Self::NAMES
            .into_iter()
            .filter(move |(f, _)| self.contains(*f))
            .map(|(_, n)| n)
    }
}

/// Decodes a type field: reserved encodings give UC and `false`.
fn decode_type(v: u64) -> (MemType, bool) {
    MemType::from_bits(v).map_or((MemType::Uc, false), |t| (t, true))
}

/// The effective type of two overlapping variable ranges (SDM rules, with
/// UC for the cases the SDM leaves undefined).
fn overlap(a: MemType, b: MemType) -> MemType {
    match (a, b) {
        _ if a == b => a,
        (MemType::Wt, MemType::Wb) | (MemType::Wb, MemType::Wt) => MemType::Wt,
        _ => MemType::Uc,
    }
}

/// A decoded, valid variable range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct VarRange {
    /// Base, bits MAXPHYADDR-1:12 only, already ANDed with `mask`.
    base: u64,
    /// Mask, bits MAXPHYADDR-1:12 only.
    mask: u64,
    /// Effective type (UC for a reserved encoding).
    ty: MemType,
}

impl VarRange {
    const EMPTY: VarRange = VarRange {
        base: 0,
        mask: 0,
        ty: MemType::Uc,
    };

    fn matches(&self, pa: u64) -> bool {
        pa & self.mask == self.base
    }
}

/// How a naturally aligned block relates to the MTRRs.
enum Class {
    /// One type throughout.
    Uniform(MemType),
    /// Known to hold more than one type.
    Mixed,
    /// Undecided at this size: look at both halves.
    Split,
}

/// Decoded MTRRs: answers "which memory type has this physical address".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mtrrs {
    enabled: bool,
    fixed_enabled: bool,
    default: MemType,
    fixed: [MemType; FIXED_RANGES],
    var: [VarRange; MAX_VAR_MTRRS],
    nvar: usize,
    maxphyaddr: u8,
    issues: Issues,
}

impl Mtrrs {
    /// Decodes raw MSR values.  Never fails: problems are recorded in
    /// [`Mtrrs::issues`] and decode as UC.
    pub fn decode(raw: &RawMtrrs) -> Self {
        let mut issues = Issues::NONE;

        let maxphyaddr = match raw.maxphyaddr {
            0 => DEFAULT_MAXPHYADDR,
            m @ 32..=52 => m,
            m => {
                issues = issues.union(Issues::BAD_MAXPHYADDR);
                m.clamp(32, 52)
            }
        };
        let addr_mask = ((1u64 << maxphyaddr) - 1) & !0xfff;

        let enabled = raw.def_type & DEF_TYPE_E != 0;
        let has_fixed = raw.cap & MTRRCAP_FIX != 0;
        let fe = raw.def_type & DEF_TYPE_FE != 0;
        if fe && !has_fixed {
            issues = issues.union(Issues::FIXED_WITHOUT_CAP);
        }
        let def_reserved = !(DEF_TYPE_TYPE_MASK | DEF_TYPE_FE | DEF_TYPE_E);
        if raw.def_type & def_reserved != 0 {
            issues = issues.union(Issues::RESERVED_BITS);
        }
        let (default, ok) = decode_type(raw.def_type & DEF_TYPE_TYPE_MASK);
        if !ok && enabled {
            issues = issues.union(Issues::INVALID_DEFAULT_TYPE);
        }

        let fixed_enabled = enabled && fe && has_fixed;
        let mut fixed = [MemType::Uc; FIXED_RANGES];
        if fixed_enabled {
            for (i, slot) in fixed.iter_mut().enumerate() {
                let msr = raw.fixed.get(i / 8).copied().unwrap_or(0);
                let (t, ok) = decode_type((msr >> (8 * (i % 8))) & 0xff);
                if !ok {
                    issues = issues.union(Issues::INVALID_FIXED_TYPE);
                }
                *slot = t;
            }
        }

        if (raw.cap & MTRRCAP_VCNT_MASK) as usize > MAX_VAR_MTRRS {
            issues = issues.union(Issues::VAR_TRUNCATED);
        }
        let mut var = [VarRange::EMPTY; MAX_VAR_MTRRS];
        let mut nvar = 0;
        if enabled {
            for pair in raw.var.iter().take(var_count(raw.cap)) {
                if pair.mask & PHYSMASK_VALID == 0 {
                    continue;
                }
                let base_reserved = !(addr_mask | 0xff);
                let mask_reserved = !(addr_mask | PHYSMASK_VALID);
                if pair.base & base_reserved != 0 || pair.mask & mask_reserved != 0 {
                    issues = issues.union(Issues::RESERVED_BITS);
                }
                let (ty, ok) = decode_type(pair.base & 0xff);
                if !ok {
                    issues = issues.union(Issues::INVALID_VAR_TYPE);
                }
                let mask = pair.mask & addr_mask;
                if let Some(slot) = var.get_mut(nvar) {
                    *slot = VarRange {
                        base: pair.base & mask,
                        mask,
                        ty,
                    };
                    nvar += 1;
                }
            }
        }

        Self {
            enabled,
            fixed_enabled,
            default,
            fixed,
            var,
            nvar,
            maxphyaddr,
            issues,
        }
    }

    /// What was wrong with the raw values (empty on sane hardware).
    pub const fn issues(&self) -> Issues {
        self.issues
    }

    /// Whether the MTRRs are enabled (`DEF_TYPE.E`); if not, all is UC.
    pub const fn enabled(&self) -> bool {
        self.enabled
    }

    /// Whether the fixed ranges decide below 1 MiB (`E`, `FE` and `FIX`).
    pub const fn fixed_enabled(&self) -> bool {
        self.fixed_enabled
    }

    /// The type of addresses no range covers (UC when disabled).
    pub const fn default_type(&self) -> MemType {
        if self.enabled {
            self.default
        } else {
            MemType::Uc
        }
    }

    /// The MAXPHYADDR used for masks, after defaulting and clamping.
    pub const fn maxphyaddr(&self) -> u8 {
        self.maxphyaddr
    }

    fn vars(&self) -> &[VarRange] {
        self.var.get(..self.nvar).unwrap_or(&[])
    }

    /// Index into the fixed-range table of an address below 1 MiB.
    fn fixed_index(pa: u64) -> usize {
        (if pa < 0x8_0000 {
            pa >> 16
        } else if pa < 0xc_0000 {
            8 + ((pa - 0x8_0000) >> 14)
        } else {
            24 + ((pa - 0xc_0000) >> 12)
        }) as usize
    }

    fn fixed_type(&self, pa: u64) -> MemType {
        self.fixed
            .get(Self::fixed_index(pa))
            .copied()
            .unwrap_or(MemType::Uc)
    }

    /// The effective memory type of physical address `pa`.
    pub fn memtype_at(&self, pa: u64) -> MemType {
        if !self.enabled {
            return MemType::Uc;
        }
        if self.fixed_enabled && pa < FIXED_REGION_END {
            return self.fixed_type(pa);
        }
        self.vars()
            .iter()
            .filter(|v| v.matches(pa))
            .map(|v| v.ty)
            .reduce(overlap)
            .unwrap_or(self.default)
    }

    /// The single effective type of `[start, start + size)`, or `None` if
    /// the range holds more than one type (or is empty, or wraps around the
    /// address space).  Types are constant on 4 KiB pages, so the range is
    /// widened to 4 KiB boundaries.
    ///
    /// The range is split into naturally aligned power-of-two blocks; a
    /// block that a variable range covers only partly is halved until every
    /// range covers each piece fully or not at all, so the work depends on
    /// the variable-range boundaries, never on the range's size.  Below
    /// 1 MiB the at most 88 fixed sub-ranges are compared directly.  See
    /// [`UNIFORM_BLOCK_BUDGET`] for pathological masks.
    pub fn uniform_type(&self, start: u64, size: u64) -> Option<MemType> {
        let last = start.checked_add(size.checked_sub(1)?)? | 0xfff;
        if !self.enabled {
            return Some(MemType::Uc);
        }
        let mut budget = UNIFORM_BLOCK_BUDGET;
        let mut result: Option<MemType> = None;
        let mut lo = start & !0xfff;
        loop {
            // Largest naturally aligned block at `lo` that ends by `last`.
            let align = lo.trailing_zeros(); // 64 for lo == 0
            let span = last - lo; // block size - 1 fits if <= span
            let fit = match span.checked_add(1) {
                None => 64,
                Some(n) => 63 - n.leading_zeros(),
            };
            let order = align.min(fit);
            let t = self.block_type(lo, order, &mut budget)?;
            if result.is_some_and(|r| r != t) {
                return None;
            }
            result = Some(t);
            let block_last = lo | low_mask(order);
            if block_last >= last {
                return result;
            }
            lo = block_last + 1;
        }
    }

    /// The single type of the aligned block of `2^order` bytes at `base`
    /// (`order` in 12..=64), walking halves depth-first without recursion.
    fn block_type(&self, base: u64, order: u32, budget: &mut u32) -> Option<MemType> {
        // Depth-first: each split pops one block and pushes two, and orders
        // only go down from 64 to 12, so 64 slots always suffice.
        let mut stack = [(0u64, 0u32); 64];
        *stack.get_mut(0)? = (base, order);
        let mut sp = 1;
        let mut result: Option<MemType> = None;
        while sp > 0 {
            sp -= 1;
            let (b, k) = *stack.get(sp)?;
            *budget = budget.checked_sub(1)?;
            match self.classify(b, k) {
                Class::Mixed => return None,
                Class::Uniform(t) => {
                    if result.is_some_and(|r| r != t) {
                        return None;
                    }
                    result = Some(t);
                }
                Class::Split => {
                    let half = k.checked_sub(1)?;
                    *stack.get_mut(sp)? = (b | (1u64 << half), half);
                    *stack.get_mut(sp + 1)? = (b, half);
                    sp += 2;
                }
            }
        }
        result
    }

    /// Classifies the aligned block of `2^k` bytes at `b` (`k >= 12`).
    fn classify(&self, b: u64, k: u32) -> Class {
        let low = low_mask(k);
        let last = b | low;
        if self.fixed_enabled && b < FIXED_REGION_END {
            if last >= FIXED_REGION_END {
                return Class::Split;
            }
            let first = Self::fixed_index(b);
            let end = Self::fixed_index(last) + 1;
            let mut types = self.fixed.get(first..end).unwrap_or(&[]).iter();
            let Some(&t) = types.next() else {
                return Class::Mixed;
            };
            return if types.all(|&u| u == t) {
                Class::Uniform(t)
            } else {
                Class::Mixed
            };
        }
        let mut eff: Option<MemType> = None;
        for v in self.vars() {
            let high = v.mask & !low;
            if b & high != v.base & high {
                continue;
            }
            if v.mask & low != 0 {
                // Covers part of the block (masks have no bits below 12, so
                // k > 12 here and the block can be halved).
                return Class::Split;
            }
            eff = Some(eff.map_or(v.ty, |e| overlap(e, v.ty)));
        }
        Class::Uniform(eff.unwrap_or(self.default))
    }
}

/// Mask of the low `order` bits (all ones for 64).
const fn low_mask(order: u32) -> u64 {
    if order >= 64 {
        !0
    } else {
        (1u64 << order) - 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;
    const MIB: u64 = 1 << 20;

    const UC: u64 = 0;
    const WC: u64 = 1;
    const WT: u64 = 4;
    const WP: u64 = 5;
    const WB: u64 = 6;

    /// A fixed-range MSR whose eight bytes are all `t`.
    fn all(t: u64) -> u64 {
        t * 0x0101_0101_0101_0101
    }

    /// A variable pair for `[base, base + size)` (size a power of two,
    /// base aligned) with MAXPHYADDR 46.
    fn var(base: u64, size: u64, t: u64) -> VarMtrrPair {
        let addr_mask = ((1u64 << 46) - 1) & !0xfff;
        VarMtrrPair {
            base: base | t,
            mask: (!(size - 1) & addr_mask) | PHYSMASK_VALID,
        }
    }

    /// MTRRs enabled with fixed ranges, default `def`, 10 variable slots.
    fn raw(def: u64, vars: &[VarMtrrPair]) -> RawMtrrs {
        let mut r = RawMtrrs {
            cap: MTRRCAP_FIX | MTRRCAP_WC | 10,
            def_type: DEF_TYPE_E | DEF_TYPE_FE | def,
            fixed: [all(WB); 11],
            maxphyaddr: 46,
            ..RawMtrrs::default()
        };
        r.var[..vars.len()].copy_from_slice(vars);
        r
    }

    /// A typical PC: RAM WB by default, VGA 0xA0000-0xBFFFF UC, option ROMs
    /// 0xC0000-0xDFFFF WP... and BIOS 0xF0000 WP; a UC MMIO hole at
    /// 3-4 GiB; 8 GiB of RAM.
    fn pc() -> RawMtrrs {
        let mut r = raw(
            UC,
            &[
                var(0, 4 * GIB, WB),
                var(3 * GIB, GIB, UC),
                var(4 * GIB, 4 * GIB, WB),
            ],
        );
        r.fixed[2] = all(UC); // 0xA0000..0xBFFFF
        for f in &mut r.fixed[3..7] {
            *f = all(WP); // 0xC0000..0xDFFFF
        }
        for f in &mut r.fixed[7..9] {
            *f = all(UC); // 0xE0000..0xEFFFF
        }
        for f in &mut r.fixed[9..11] {
            *f = all(WP); // 0xF0000..0xFFFFF
        }
        r
    }

    fn dec(r: &RawMtrrs) -> Mtrrs {
        Mtrrs::decode(r)
    }

    /// Reference: the type of every 4 KiB page, compared one by one.
    fn brute_uniform(m: &Mtrrs, start: u64, size: u64) -> Option<MemType> {
        let first = m.memtype_at(start & !0xfff);
        let mut pa = start & !0xfff;
        while pa < start + size {
            if m.memtype_at(pa) != first {
                return None;
            }
            pa += 0x1000;
        }
        Some(first)
    }

    #[test]
    fn msr_index_helpers() {
        assert_eq!(var_base_msr(0), 0x200);
        assert_eq!(var_mask_msr(0), 0x201);
        assert_eq!(var_base_msr(9), 0x212);
        assert_eq!(var_mask_msr(9), 0x213);
        assert_eq!(var_count(8), 8);
        assert_eq!(var_count(0xff), MAX_VAR_MTRRS);
        assert_eq!(var_count(MTRRCAP_FIX | MTRRCAP_WC | 10), 10);
    }

    #[test]
    fn msr_list_with_and_without_fixed() {
        let with: std::vec::Vec<u32> = msr_indices(MTRRCAP_FIX | 2).collect();
        assert_eq!(
            with,
            [
                0x2ff, 0x250, 0x258, 0x259, 0x268, 0x269, 0x26a, 0x26b, 0x26c, 0x26d, 0x26e, 0x26f,
                0x200, 0x201, 0x202, 0x203
            ]
        );
        let without: std::vec::Vec<u32> = msr_indices(1).collect();
        assert_eq!(without, [0x2ff, 0x200, 0x201]);
        assert_eq!(msr_indices(0).count(), 1);
        assert_eq!(
            msr_indices(MTRRCAP_FIX | 0xff).count(),
            1 + 11 + 2 * MAX_VAR_MTRRS
        );
    }

    #[test]
    fn read_with_places_every_msr() {
        let r = RawMtrrs::read_with(39, |msr| match msr {
            MSR_MTRRCAP => MTRRCAP_FIX | 3,
            MSR_MTRR_DEF_TYPE => DEF_TYPE_E | WB,
            m => u64::from(m) << 20 | 0xab,
        });
        assert_eq!(r.cap, MTRRCAP_FIX | 3);
        assert_eq!(r.def_type, DEF_TYPE_E | WB);
        assert_eq!(r.maxphyaddr, 39);
        for (i, &m) in FIXED_MSRS.iter().enumerate() {
            assert_eq!(r.fixed[i], u64::from(m) << 20 | 0xab);
        }
        for n in 0..3 {
            assert_eq!(r.var[n].base, u64::from(var_base_msr(n)) << 20 | 0xab);
            assert_eq!(r.var[n].mask, u64::from(var_mask_msr(n)) << 20 | 0xab);
        }
        assert_eq!(r.var[3], VarMtrrPair::default());
    }

    #[test]
    fn read_with_skips_fixed_without_cap() {
        let mut seen = std::vec::Vec::new();
        let r = RawMtrrs::read_with(0, |msr| {
            seen.push(msr);
            if msr == MSR_MTRRCAP {
                1
            } else {
                7
            }
        });
        assert_eq!(seen, [0xfe, 0x2ff, 0x200, 0x201]);
        assert_eq!(r.fixed, [0; 11]);
    }

    #[test]
    fn disabled_is_all_uc() {
        let mut r = pc();
        r.def_type &= !DEF_TYPE_E;
        let m = dec(&r);
        assert!(!m.enabled());
        assert!(!m.fixed_enabled());
        assert_eq!(m.default_type(), MemType::Uc);
        for pa in [0, 0xa0000, MIB, 2 * GIB, 3 * GIB, 5 * GIB, u64::MAX] {
            assert_eq!(m.memtype_at(pa), MemType::Uc);
        }
        assert_eq!(m.uniform_type(0, 1 << 40), Some(MemType::Uc));
        assert!(m.issues().is_empty());
    }

    #[test]
    fn disabled_ignores_invalid_default_type() {
        let m = dec(&RawMtrrs {
            def_type: 7,
            ..RawMtrrs::default()
        });
        assert!(m.issues().is_empty());
        assert_eq!(m.memtype_at(0), MemType::Uc);
    }

    #[test]
    fn fixed_range_boundaries() {
        let mut r = raw(WB, &[]);
        // Byte i of each MSR gets a distinct-ish type per position.
        r.fixed[0] = 0x0606_0606_0406_0500; // 64K: 0=UC,1=WP,2=WB,3=WT,4..=WB
        r.fixed[1] = 0x0100_0000_0000_0000; // 16K at 0x80000: byte 7 WC
        r.fixed[2] = 0x0000_0000_0000_0000; // 0xA0000.. UC
        r.fixed[3] = 0x0505_0505_0505_0506; // 4K at 0xC0000: byte 0 WB, rest WP
        r.fixed[10] = 0x0400_0000_0000_0006; // 4K at 0xF8000: 0xF8000 WB, 0xFF000 WT
        let m = dec(&r);
        assert!(m.fixed_enabled());
        assert_eq!(m.memtype_at(0), MemType::Uc);
        assert_eq!(m.memtype_at(0xffff), MemType::Uc);
        assert_eq!(m.memtype_at(0x10000), MemType::Wp);
        assert_eq!(m.memtype_at(0x20000), MemType::Wb);
        assert_eq!(m.memtype_at(0x30000), MemType::Wt);
        assert_eq!(m.memtype_at(0x7ffff), MemType::Wb);
        assert_eq!(m.memtype_at(0x80000), MemType::Uc);
        assert_eq!(m.memtype_at(0x9bfff), MemType::Uc);
        assert_eq!(m.memtype_at(0x9c000), MemType::Wc);
        assert_eq!(m.memtype_at(0x9ffff), MemType::Wc);
        assert_eq!(m.memtype_at(0xa0000), MemType::Uc);
        assert_eq!(m.memtype_at(0xc0000), MemType::Wb);
        assert_eq!(m.memtype_at(0xc0fff), MemType::Wb);
        assert_eq!(m.memtype_at(0xc1000), MemType::Wp);
        assert_eq!(m.memtype_at(0xc7fff), MemType::Wp);
        assert_eq!(m.memtype_at(0xf8000), MemType::Wb);
        assert_eq!(m.memtype_at(0xff000), MemType::Wt);
        assert_eq!(m.memtype_at(0xfffff), MemType::Wt);
        // 1 MiB and above: variable / default.
        assert_eq!(m.memtype_at(0x100000), MemType::Wb);
        assert!(m.issues().is_empty());
    }

    #[test]
    fn fixed_index_covers_88_entries() {
        let mut seen = [false; FIXED_RANGES];
        let mut pa = 0;
        while pa < FIXED_REGION_END {
            seen[Mtrrs::fixed_index(pa)] = true;
            pa += 0x1000;
        }
        assert!(seen.iter().all(|&s| s));
        assert_eq!(Mtrrs::fixed_index(0xfffff), 87);
        assert_eq!(Mtrrs::fixed_index(0x7ffff), 7);
        assert_eq!(Mtrrs::fixed_index(0x80000), 8);
        assert_eq!(Mtrrs::fixed_index(0xbffff), 23);
        assert_eq!(Mtrrs::fixed_index(0xc0000), 24);
    }

    #[test]
    fn fixed_ranges_need_fe_and_cap() {
        // FE=0: below 1 MiB the variable ranges / default decide.
        let mut r = raw(WB, &[var(0, MIB, WT)]);
        r.fixed = [all(UC); 11];
        r.def_type &= !DEF_TYPE_FE;
        let m = dec(&r);
        assert!(!m.fixed_enabled());
        assert_eq!(m.memtype_at(0xa0000), MemType::Wt);
        assert!(m.issues().is_empty());

        // FE=1 without IA32_MTRRCAP.FIX: ignored and reported.
        r.def_type |= DEF_TYPE_FE;
        r.cap &= !MTRRCAP_FIX;
        let m = dec(&r);
        assert!(!m.fixed_enabled());
        assert_eq!(m.memtype_at(0xa0000), MemType::Wt);
        assert!(m.issues().contains(Issues::FIXED_WITHOUT_CAP));

        // With both, the fixed ranges win over a covering variable range.
        r.cap |= MTRRCAP_FIX;
        let m = dec(&r);
        assert_eq!(m.memtype_at(0xa0000), MemType::Uc);
        assert_eq!(m.memtype_at(MIB - 1), MemType::Uc);
        assert_eq!(m.memtype_at(MIB), MemType::Wb);
    }

    #[test]
    fn variable_range_masks() {
        // 256 MiB WC at 0xD000_0000 (a framebuffer), default UC.
        let m = dec(&raw(UC, &[var(0xd000_0000, 256 * MIB, WC)]));
        assert_eq!(m.memtype_at(0xcfff_ffff), MemType::Uc);
        assert_eq!(m.memtype_at(0xd000_0000), MemType::Wc);
        assert_eq!(m.memtype_at(0xdfff_ffff), MemType::Wc);
        assert_eq!(m.memtype_at(0xe000_0000), MemType::Uc);
        // Bits above MAXPHYADDR are not part of the match.
        assert_eq!(m.memtype_at((1 << 46) | 0xd000_0000), MemType::Wc);
    }

    #[test]
    fn invalid_mask_bit_means_unused() {
        let mut p = var(0, 4 * GIB, UC);
        p.mask &= !PHYSMASK_VALID;
        let m = dec(&raw(WB, &[p]));
        assert_eq!(m.memtype_at(GIB), MemType::Wb);
    }

    #[test]
    fn only_vcnt_pairs_are_used() {
        let mut r = raw(WB, &[var(0, 4 * GIB, UC)]);
        r.cap &= !MTRRCAP_VCNT_MASK; // VCNT = 0
        assert_eq!(dec(&r).memtype_at(GIB), MemType::Wb);
    }

    #[test]
    fn non_contiguous_mask_follows_formula() {
        // Mask bits 46..12 except bit 12: every 8 KiB, both 4 KiB pages match.
        let addr_mask = ((1u64 << 46) - 1) & !0xfff;
        let p = VarMtrrPair {
            base: 0x4000_0000 | UC,
            mask: (addr_mask & !(GIB - 1)) | (1 << 13) | PHYSMASK_VALID,
        };
        let m = dec(&raw(WB, &[p]));
        assert_eq!(m.memtype_at(0x4000_0000), MemType::Uc);
        assert_eq!(m.memtype_at(0x4000_1000), MemType::Uc);
        assert_eq!(m.memtype_at(0x4000_2000), MemType::Wb);
        assert_eq!(m.memtype_at(0x4000_3000), MemType::Wb);
        assert_eq!(m.memtype_at(0x4000_4000), MemType::Uc);
        assert_eq!(m.uniform_type(0x4000_0000, 0x2000), Some(MemType::Uc));
        assert_eq!(m.uniform_type(0x4000_0000, 0x4000), None);
        assert_eq!(m.uniform_type(0x4000_0000, 2 * MIB), None);
        assert_eq!(m.uniform_type(0, GIB), Some(MemType::Wb));
    }

    #[test]
    fn pathological_mask_hits_budget_safely() {
        // Bit 12 only plus high bits, same type as the default: every page is
        // WB, but proving it needs one block per 4 KiB page.
        let addr_mask = ((1u64 << 46) - 1) & !0xfff;
        let p = VarMtrrPair {
            base: WB,
            mask: (addr_mask & !(4 * GIB - 1)) | (1 << 12) | PHYSMASK_VALID,
        };
        let m = dec(&raw(WB, &[p]));
        assert_eq!(m.memtype_at(GIB), MemType::Wb);
        assert_eq!(m.memtype_at(GIB + 0x1000), MemType::Wb);
        // Small enough to be proved, too large to be proved.
        assert_eq!(m.uniform_type(GIB, 2 * MIB), Some(MemType::Wb));
        assert_eq!(m.uniform_type(GIB, GIB), None);
    }

    #[test]
    fn overlaps() {
        let cases: &[(u64, u64, MemType)] = &[
            (UC, WB, MemType::Uc),
            (WB, UC, MemType::Uc),
            (UC, WC, MemType::Uc),
            (WT, WB, MemType::Wt),
            (WB, WT, MemType::Wt),
            (WB, WB, MemType::Wb),
            (WC, WC, MemType::Wc),
            // Undefined by the SDM: UC.
            (WC, WB, MemType::Uc),
            (WP, WB, MemType::Uc),
            (WP, WT, MemType::Uc),
            (WC, WT, MemType::Uc),
        ];
        for &(a, b, want) in cases {
            // Big range [0, 4G) of type a, small one [1G, 1G+2M) of type b.
            let m = dec(&raw(WB, &[var(0, 4 * GIB, a), var(GIB, 2 * MIB, b)]));
            assert_eq!(m.memtype_at(GIB), want, "{a} over {b}");
            assert_eq!(m.uniform_type(GIB, 2 * MIB), Some(want));
        }
        // Three-way: WT+WB+WC is undefined => UC; WT+WB+WB => WT.
        let m = dec(&raw(
            UC,
            &[var(0, GIB, WT), var(0, GIB, WB), var(0, GIB, WC)],
        ));
        assert_eq!(m.memtype_at(MIB), MemType::Uc);
        let m = dec(&raw(
            UC,
            &[var(0, GIB, WB), var(0, GIB, WT), var(0, 2 * GIB, WB)],
        ));
        assert_eq!(m.memtype_at(MIB), MemType::Wt);
        assert_eq!(m.memtype_at(GIB), MemType::Wb);
    }

    #[test]
    fn invalid_types_are_uc_and_reported() {
        for bad in [2, 3, 7, 8, 0xff] {
            let m = dec(&raw(bad, &[]));
            assert_eq!(m.memtype_at(GIB), MemType::Uc, "default {bad}");
            assert_eq!(m.default_type(), MemType::Uc);
            assert!(m.issues().contains(Issues::INVALID_DEFAULT_TYPE));

            let m = dec(&raw(WB, &[var(GIB, GIB, bad)]));
            assert_eq!(m.memtype_at(GIB), MemType::Uc, "var {bad}");
            assert_eq!(m.memtype_at(0), MemType::Wb);
            assert!(m.issues().contains(Issues::INVALID_VAR_TYPE));

            let mut r = raw(WB, &[]);
            r.fixed[4] = bad << 8 | all(WB) & !0xff00;
            let m = dec(&r);
            assert_eq!(m.memtype_at(0xc8000), MemType::Wb);
            assert_eq!(m.memtype_at(0xc9000), MemType::Uc, "fixed {bad}");
            assert!(m.issues().contains(Issues::INVALID_FIXED_TYPE));
            assert!(!m.issues().contains(Issues::INVALID_DEFAULT_TYPE));
        }
    }

    #[test]
    fn reserved_bits_and_truncation_reported() {
        let mut r = raw(WB, &[var(GIB, GIB, UC)]);
        r.var[0].base |= 1 << 50; // above MAXPHYADDR 46
        let m = dec(&r);
        assert!(m.issues().contains(Issues::RESERVED_BITS));
        assert_eq!(m.memtype_at(GIB), MemType::Uc);

        let mut r = raw(WB, &[]);
        r.def_type |= 1 << 9;
        assert!(dec(&r).issues().contains(Issues::RESERVED_BITS));

        let mut r = raw(WB, &[]);
        r.cap |= 0xff;
        let m = dec(&r);
        assert!(m.issues().contains(Issues::VAR_TRUNCATED));
        assert_eq!(m.issues().names().count(), 1);
        assert_eq!(m.issues().names().next(), Some("too many variable ranges"));
    }

    #[test]
    fn maxphyaddr_default_and_clamp() {
        let mut r = raw(WB, &[]);
        r.maxphyaddr = 0;
        let m = dec(&r);
        assert_eq!(m.maxphyaddr(), DEFAULT_MAXPHYADDR);
        assert!(m.issues().is_empty());
        r.maxphyaddr = 64;
        let m = dec(&r);
        assert_eq!(m.maxphyaddr(), 52);
        assert!(m.issues().contains(Issues::BAD_MAXPHYADDR));
        r.maxphyaddr = 12;
        assert_eq!(dec(&r).maxphyaddr(), 32);
    }

    #[test]
    fn typical_pc_layout() {
        let m = dec(&pc());
        assert!(m.issues().is_empty());
        assert_eq!(m.memtype_at(0), MemType::Wb);
        assert_eq!(m.memtype_at(0x9f000), MemType::Wb);
        assert_eq!(m.memtype_at(0xa0000), MemType::Uc); // VGA
        assert_eq!(m.memtype_at(0xbffff), MemType::Uc);
        assert_eq!(m.memtype_at(0xc0000), MemType::Wp); // option ROM
        assert_eq!(m.memtype_at(0xe0000), MemType::Uc);
        assert_eq!(m.memtype_at(0xf0000), MemType::Wp); // BIOS
        assert_eq!(m.memtype_at(MIB), MemType::Wb);
        assert_eq!(m.memtype_at(3 * GIB - 1), MemType::Wb);
        assert_eq!(m.memtype_at(3 * GIB), MemType::Uc); // MMIO hole
        assert_eq!(m.memtype_at(0xfee0_0000), MemType::Uc); // LAPIC
        assert_eq!(m.memtype_at(4 * GIB - 1), MemType::Uc);
        assert_eq!(m.memtype_at(4 * GIB), MemType::Wb);
        assert_eq!(m.memtype_at(8 * GIB - 1), MemType::Wb);
        assert_eq!(m.memtype_at(8 * GIB), MemType::Uc); // default above RAM

        // Large pages.
        assert_eq!(m.uniform_type(0, 2 * MIB), None); // low 1 MiB is mixed
        assert_eq!(m.uniform_type(0, 0xa0000), Some(MemType::Wb));
        assert_eq!(m.uniform_type(0xa0000, 0x20000), Some(MemType::Uc));
        assert_eq!(m.uniform_type(MIB, MIB), Some(MemType::Wb));
        assert_eq!(m.uniform_type(2 * MIB, 2 * MIB), Some(MemType::Wb));
        assert_eq!(m.uniform_type(0, GIB), None);
        assert_eq!(m.uniform_type(GIB, GIB), Some(MemType::Wb));
        assert_eq!(m.uniform_type(2 * GIB, GIB), Some(MemType::Wb));
        assert_eq!(m.uniform_type(3 * GIB, GIB), Some(MemType::Uc));
        assert_eq!(
            m.uniform_type(3 * GIB - 2 * MIB, 2 * MIB),
            Some(MemType::Wb)
        );
        assert_eq!(m.uniform_type(3 * GIB - 2 * MIB, 4 * MIB), None);
        assert_eq!(m.uniform_type(4 * GIB, 4 * GIB), Some(MemType::Wb));
        assert_eq!(m.uniform_type(7 * GIB, 2 * GIB), None);
        // Above RAM nothing matches up to 2^46, where the ranges alias again.
        assert_eq!(m.uniform_type(8 * GIB, 1 << 40), Some(MemType::Uc));
        assert_eq!(m.uniform_type((1 << 46) - GIB, 2 * GIB), None);
        assert_eq!(m.uniform_type(1 << 46, GIB), Some(MemType::Wb));
    }

    #[test]
    fn uniform_straddling_variable_boundaries() {
        // A 16 MiB UC range in the middle of 1 GiB WB default.
        let m = dec(&raw(WB, &[var(GIB + 64 * MIB, 16 * MIB, UC)]));
        assert_eq!(m.uniform_type(GIB, GIB), None);
        assert_eq!(m.uniform_type(GIB, 64 * MIB), Some(MemType::Wb));
        assert_eq!(m.uniform_type(GIB + 64 * MIB, 16 * MIB), Some(MemType::Uc));
        assert_eq!(m.uniform_type(GIB + 62 * MIB, 2 * MIB), Some(MemType::Wb));
        assert_eq!(m.uniform_type(GIB + 62 * MIB, 4 * MIB), None);
        assert_eq!(m.uniform_type(GIB + 78 * MIB, 4 * MIB), None);
        assert_eq!(m.uniform_type(GIB + 80 * MIB, 4 * MIB), Some(MemType::Wb));
        // Unaligned start and size are widened to 4 KiB pages.
        assert_eq!(m.uniform_type(GIB + 64 * MIB - 1, 2), None);
        assert_eq!(m.uniform_type(GIB + 64 * MIB + 5, 10), Some(MemType::Uc));
        assert_eq!(
            m.uniform_type(GIB + 64 * MIB - 0x1000, 0x1000),
            Some(MemType::Wb)
        );
        // WB range inside WB default: uniform even though a boundary is inside.
        let m = dec(&raw(WB, &[var(GIB + 64 * MIB, 16 * MIB, WB)]));
        assert_eq!(m.uniform_type(GIB, GIB), Some(MemType::Wb));
    }

    #[test]
    fn uniform_edge_cases() {
        let m = dec(&pc());
        assert_eq!(m.uniform_type(0, 0), None);
        assert_eq!(m.uniform_type(u64::MAX, 2), None); // wraps
        assert_eq!(
            m.uniform_type(u64::MAX - 0xfff, 0x1000),
            Some(m.memtype_at(u64::MAX))
        );
        // The whole address space is mixed; a single type with no ranges.
        assert_eq!(m.uniform_type(0, u64::MAX), None);
        let mut r = raw(WB, &[]);
        r.def_type &= !DEF_TYPE_FE;
        let m = dec(&r);
        assert_eq!(m.uniform_type(0, u64::MAX), Some(MemType::Wb));
        let mut r = raw(WT, &[]);
        r.fixed = [all(WT); 11];
        let m = dec(&r);
        assert_eq!(m.uniform_type(0, u64::MAX), Some(MemType::Wt));
        assert_eq!(m.uniform_type(0, 1 << 52), Some(MemType::Wt));
        assert_eq!(m.uniform_type(0, GIB), Some(MemType::Wt));
    }

    #[test]
    fn low_mib_uniform_with_fixed() {
        let mut r = raw(WB, &[]);
        let m = dec(&r);
        // All fixed ranges WB, default WB: the first 2 MiB page is WB.
        assert_eq!(m.uniform_type(0, 2 * MIB), Some(MemType::Wb));
        assert_eq!(m.uniform_type(0, GIB), Some(MemType::Wb));
        // One 4 KiB fixed sub-range differs: only pages around it are mixed.
        r.fixed[10] = all(WB) & !(0xff << 56); // 0xFF000 UC
        let m = dec(&r);
        assert_eq!(m.uniform_type(0, 2 * MIB), None);
        assert_eq!(m.uniform_type(0, 0xff000), Some(MemType::Wb));
        assert_eq!(m.uniform_type(0xff000, 0x1000), Some(MemType::Uc));
        assert_eq!(m.uniform_type(0xfe000, 0x2000), None);
        assert_eq!(m.uniform_type(MIB, MIB), Some(MemType::Wb));
        // Fixed WB but a UC variable range at 0: the fixed ranges win below
        // 1 MiB, the variable range decides above.
        let mut r = raw(WB, &[var(0, 2 * MIB, UC)]);
        r.fixed = [all(UC); 11];
        let m = dec(&r);
        assert_eq!(m.uniform_type(0, 2 * MIB), Some(MemType::Uc));
        r.fixed[0] = all(WB);
        assert_eq!(dec(&r).uniform_type(0, 2 * MIB), None);
    }

    /// Pseudo-random layouts: `uniform_type` agrees with a page-by-page
    /// reference on small windows.
    #[test]
    fn uniform_matches_brute_force() {
        let mut seed = 0x1234_5678_9abc_def0u64;
        let mut rnd = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let types = [UC, WC, WT, WP, WB];
        for _ in 0..200 {
            let mut vars = std::vec::Vec::new();
            for _ in 0..(rnd() % 5) {
                let order = 12 + rnd() % 10; // 4 KiB .. 2 MiB
                let base = (rnd() % (8 * MIB)) & !((1 << order) - 1);
                vars.push(var(base, 1 << order, types[(rnd() % 5) as usize]));
            }
            let mut r = raw(types[(rnd() % 5) as usize], &vars);
            if rnd() % 2 == 0 {
                r.def_type &= !DEF_TYPE_FE;
            } else {
                for f in &mut r.fixed {
                    if rnd() % 4 == 0 {
                        *f = all(types[(rnd() % 5) as usize]);
                    }
                }
            }
            let m = dec(&r);
            for _ in 0..20 {
                let start = rnd() % (8 * MIB);
                let size = 1 + rnd() % (2 * MIB);
                assert_eq!(
                    m.uniform_type(start, size),
                    brute_uniform(&m, start, size),
                    "start {start:#x} size {size:#x}"
                );
            }
        }
    }
}
