// SPDX-License-Identifier: GPL-2.0

//! EPT entry and EPT pointer formats, with pkvm's page-state encoding.
//!
//! Owns the bit layout of one 64-bit EPT paging-structure entry (SDM Vol. 3C,
//! "The Extended Page Table Mechanism", tables "Format of an EPT PML4 Entry"
//! to "Format of an EPT Page-Table Entry") and of the EPT pointer, plus the
//! software encoding pkvm keeps in bits the CPU ignores:
//!
//! ```text
//!  63  62..60  59 58  57 56  55..52  51 ........ 12  11  10  9 8  7   6  5..3  2 1 0
//! SVE  (61=SPP) ign   state   ign      PFN (present)  ign UX  D A  PS IPAT MT  X W R
//!                             owner id = bits 31:12 when R=W=X=UX=0 (host EPT)
//! ```
//!
//! # Why bits 57:56 and 31:12 are safe
//!
//! * Bits 57:56 of a present EPT entry are ignored by the CPU **unless**
//!   "guest-paging verification" (bit 57) or "EPT paging-write control"
//!   (bit 58) is in use.  Those are HLAT-era features enabled through the
//!   tertiary processor-based controls (`PROCBASED_CTLS3`: HLAT, paging-write,
//!   guest-paging verification).  pkvm never activates tertiary controls, so
//!   both bits stay software-available.  [`HLAT_SENSITIVE_BITS`] names them so
//!   that VMCS set-up code can assert the controls stay off.
//! * Bit 61 is the sub-page-write-permission bit only when SPP is enabled
//!   (secondary control bit 23); pkvm uses it for SPP in shadow EPTs only and
//!   never for software state.
//! * A *non-present* entry (bits 2:0 clear, and bit 10 clear when
//!   mode-based execute control is on) is ignored by the CPU in all other
//!   bits (SDM: "bits 63:3 are ignored" for a not-present entry, with bit 10
//!   relevant under MBEC).  In the host EPT pkvm stores the owner of a page
//!   it unmapped from the host in bits 31:12 there (seed 000).
//!
//! Page states (seed 000, bits 57:56): `NOPAGE 00`, `OWNED 01`,
//! `SHARED_OWNED 10`, `SHARED_BORROWED 11`.  Owner ids: 0 the hypervisor,
//! 1 the host, anything else a guest handle.
//!
//! # PINNED: a present host entry in state `NOPAGE`
//!
//! The module image that root mode maps (text, rodata, ro_after_init) is
//! mapped for the host read-only (text read + execute) and must never
//! change hands.  Its host EPT entries are *present* with state bits `00`
//! ([`PINNED`]): a combination no transition produces or accepts, since
//! every transition wants a present host entry to be `OWNED`,
//! `SHARED_OWNED` or `SHARED_BORROWED` and a non-present one to carry an
//! owner.  So the module image is a state of its own without a new bit,
//! and a new transition cannot accept it by forgetting to test a flag.
//! Only the host EPT has pinned entries (the invariant checker,
//! `invariants.rs`, reports a present `NOPAGE` entry anywhere else, and a
//! writable pinned one).

use crate::hv::bitfield::{self, bit_fields};

/// Bits that architecture gives meaning to only when HLAT / paging-write /
/// guest-paging verification are enabled: 57 (verify guest paging) and 58
/// (paging-write access).  pkvm never enables them; see the module docs.
pub const HLAT_SENSITIVE_BITS: u64 = (1 << 57) | (1 << 58);

/// Size of a 4 KiB page.
pub const PAGE_SIZE: u64 = 1 << 12;
/// Number of entries in one EPT paging structure.
pub const ENTRIES_PER_TABLE: usize = 512;
/// Mask of the physical-address bits 51:12 of an entry.
pub const PFN_MASK: u64 = bitfield::mask(12, 40);

/// EPT memory types (bits 5:3 of a leaf, bits 2:0 of the EPT pointer).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum MemType {
    /// Uncacheable.
    Uc = 0,
    /// Write-combining.
    Wc = 1,
    /// Write-through.
    Wt = 4,
    /// Write-protected.
    Wp = 5,
    /// Write-back.
    Wb = 6,
}

impl MemType {
    /// Decodes a 3-bit memory type; reserved encodings (2, 3, 7) give `None`.
    pub const fn from_bits(v: u64) -> Option<Self> {
        match v {
            0 => Some(Self::Uc),
            1 => Some(Self::Wc),
            4 => Some(Self::Wt),
            5 => Some(Self::Wp),
            6 => Some(Self::Wb),
            _ => None,
        }
    }
}

/// pkvm page state, kept in bits 57:56 of an EPT entry (seed 000).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum PageState {
    /// 00: the page is not mapped in this table (host EPT: bits 31:12 say who owns it).
    NoPage = 0,
    /// 01: owned exclusively by the owner of this table.
    Owned = 1,
    /// 10: owned by the owner of this table and shared with another party.
    SharedOwned = 2,
    /// 11: shared with, but not owned by, the owner of this table.
    SharedBorrowed = 3,
}

impl PageState {
    /// All states, in encoding order.
    pub const ALL: [PageState; 4] = [
        Self::NoPage,
        Self::Owned,
        Self::SharedOwned,
        Self::SharedBorrowed,
    ];

    /// Decodes the two state bits (only the low two bits of `v` are used).
    pub const fn from_bits(v: u64) -> Self {
        match v & 3 {
            0 => Self::NoPage,
            1 => Self::Owned,
            2 => Self::SharedOwned,
            _ => Self::SharedBorrowed,
        }
    }
}

/// The state of a pinned host EPT entry (present, state bits `00`): the
/// module image, readable (text also executable) by the host and accepted
/// by no transition.  See the module docs.
pub const PINNED: PageState = PageState::NoPage;

/// Owner of a page, as recorded in bits 31:12 of a non-present host EPT entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OwnerId(u32);

impl OwnerId {
    /// The hypervisor.
    pub const HYP: OwnerId = OwnerId(0);
    /// The (deprivileged) host kernel.
    pub const HOST: OwnerId = OwnerId(1);
    /// Largest encodable id: the field is 20 bits wide.
    pub const MAX: u32 = (1 << 20) - 1;

    /// Returns the id for `v`, or `None` if it does not fit in 20 bits.
    pub const fn new(v: u32) -> Option<Self> {
        if v <= Self::MAX {
            Some(Self(v))
        } else {
            None
        }
    }

    /// Returns the raw id.
    pub const fn raw(self) -> u32 {
        self.0
    }

    /// Whether this is a guest (neither the hypervisor nor the host).
    pub const fn is_guest(self) -> bool {
        self.0 > 1
    }
}

/// One EPT paging-structure entry (any level).
#[derive(Clone, Copy, PartialEq, Eq, Default)]
#[repr(transparent)]
pub struct EptEntry(pub u64);

bit_fields!(EptEntry {
    read, with_read, 0, 1, "Bit 0: reads allowed.";
    write, with_write, 1, 1, "Bit 1: writes allowed.";
    exec, with_exec, 2, 1, "Bit 2: supervisor-mode (or all, without MBEC) instruction fetches allowed.";
    memtype, with_memtype, 3, 3, "Bits 5:3 (leaf only): EPT memory type.";
    ignore_pat, with_ignore_pat, 6, 1, "Bit 6 (leaf only): ignore the guest PAT memory type.";
    large, with_large, 7, 1, "Bit 7: maps a 1 GiB (PDPTE) or 2 MiB (PDE) page instead of a table.";
    accessed, with_accessed, 8, 1, "Bit 8: accessed flag (when EPT A/D is on).";
    dirty, with_dirty, 9, 1, "Bit 9 (leaf only): dirty flag (when EPT A/D is on).";
    user_exec, with_user_exec, 10, 1, "Bit 10: user-mode fetches allowed (with mode-based execute control).";
    owner_bits, with_owner_bits, 12, 20, "Bits 31:12 of a non-present host entry: owner id (software).";
    state_bits, with_state_bits, 56, 2, "Bits 57:56: pkvm page state (software; see module docs).";
    spp, with_spp, 61, 1, "Bit 61 (4 KiB leaf, SPP on): writes checked against the sub-page permission table.";
    suppress_ve, with_suppress_ve, 63, 1, "Bit 63: suppress #VE (when EPT-violation #VE is on).";
});

impl EptEntry {
    /// Read + write + execute.
    pub const RWX: u64 = 0b111;

    /// Whether the CPU treats this entry as present: any of R/W/X (bits 2:0)
    /// or, when mode-based execute control is enabled, user-exec (bit 10).
    pub const fn is_present(self, mbec: bool) -> bool {
        self.0 & Self::RWX != 0 || (mbec && self.user_exec() != 0)
    }

    /// Physical address this entry points to (bits 51:12).
    pub const fn addr(self) -> u64 {
        self.0 & PFN_MASK
    }

    /// Returns a copy pointing at `pa` (bits of `pa` outside 51:12 are dropped).
    #[must_use]
    pub const fn with_addr(self, pa: u64) -> Self {
        Self((self.0 & !PFN_MASK) | (pa & PFN_MASK))
    }

    /// The pkvm page state recorded in this entry.
    pub const fn state(self) -> PageState {
        PageState::from_bits(self.state_bits())
    }

    /// Returns a copy with the page state set.
    #[must_use]
    pub const fn with_state(self, s: PageState) -> Self {
        self.with_state_bits(s as u64)
    }

    /// A present leaf mapping `pa` with permissions `rwx` (bits 2:0), memory
    /// type `mt`, page state `state`; `large` for a 2 MiB / 1 GiB leaf.
    pub const fn leaf(pa: u64, rwx: u64, mt: MemType, large: bool, state: PageState) -> Self {
        Self(rwx & Self::RWX)
            .with_memtype(mt as u64)
            .with_large(large as u64)
            .with_addr(pa)
            .with_state(state)
    }

    /// A present non-leaf entry pointing at the table at `pa`, fully
    /// permissive (permissions are restricted at the leaves).
    pub const fn table(pa: u64) -> Self {
        Self(Self::RWX).with_addr(pa)
    }

    /// A non-present host-EPT entry recording that `owner` owns the page.
    /// The page state is `NOPAGE`; every CPU-visible bit is clear.
    pub const fn annotation(owner: OwnerId) -> Self {
        Self(0).with_owner_bits(owner.0 as u64)
    }

    /// Owner recorded in a non-present host-EPT entry.  `None` if the entry
    /// is present (then the owner is the table's owner, the host).
    pub const fn owner(self, mbec: bool) -> Option<OwnerId> {
        if self.is_present(mbec) {
            None
        } else {
            Some(OwnerId(self.owner_bits() as u32))
        }
    }
}

impl core::fmt::Debug for EptEntry {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "EptEntry({:#018x}: {}{}{} pa={:#x} mt={} {}{:?}",
            self.0,
            if self.read() != 0 { 'r' } else { '-' },
            if self.write() != 0 { 'w' } else { '-' },
            if self.exec() != 0 { 'x' } else { '-' },
            self.addr(),
            self.memtype(),
            if self.large() != 0 { "large " } else { "" },
            self.state(),
        )?;
        if self.is_present(false) && self.state() == PINNED {
            f.write_str(" Pinned")?;
        }
        if !self.is_present(false) {
            write!(f, " owner={}", self.owner_bits())?;
        }
        f.write_str(")")
    }
}

/// The EPT pointer (VMCS field `EPT_POINTER`).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
#[repr(transparent)]
pub struct Eptp(pub u64);

bit_fields!(Eptp {
    memtype, with_memtype, 0, 3, "Bits 2:0: memory type for accessing the paging structures.";
    walk_len_minus_1, with_walk_len_minus_1, 3, 3, "Bits 5:3: page-walk length minus one (3 = 4 levels).";
    ad_enabled, with_ad_enabled, 6, 1, "Bit 6: enable accessed/dirty flags.";
    sss, with_sss, 7, 1, "Bit 7: enforce access rights for supervisor shadow-stack pages.";
});

impl Eptp {
    /// A 4-level, write-back EPT pointer to the PML4 at `pml4_pa`.
    pub const fn new_4level(pml4_pa: u64, ad: bool) -> Self {
        Self(pml4_pa & PFN_MASK)
            .with_memtype(MemType::Wb as u64)
            .with_walk_len_minus_1(3)
            .with_ad_enabled(ad as u64)
    }

    /// Physical address of the top-level table.
    pub const fn root(self) -> u64 {
        self.0 & PFN_MASK
    }
}

/// Index into the table at `level` (1 = PT ... 4 = PML4) for guest-physical `gpa`.
///
/// Levels outside 1..=4 index as level 4 would; callers pass walker levels.
pub const fn index(gpa: u64, level: u32) -> usize {
    let level = if level == 0 || level > 4 { 4 } else { level };
    ((gpa >> (12 + 9 * (level - 1))) & 0x1ff) as usize
}

/// Bytes mapped by one entry at `level` (1: 4 KiB, 2: 2 MiB, 3: 1 GiB, 4: 512 GiB).
pub const fn level_size(level: u32) -> u64 {
    let level = if level == 0 || level > 4 { 4 } else { level };
    1u64 << (12 + 9 * (level - 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaf_encoding_matches_sdm_bits() {
        let e = EptEntry::leaf(0x1234_5000, 0b011, MemType::Wb, false, PageState::Owned);
        assert_eq!(e.0 & 7, 0b011);
        assert_eq!((e.0 >> 3) & 7, 6, "WB is memory type 6 in bits 5:3");
        assert_eq!(e.0 & (1 << 7), 0);
        assert_eq!(e.addr(), 0x1234_5000);
        assert_eq!((e.0 >> 56) & 3, 0b01, "OWNED is 01 in bits 57:56");
        assert_eq!(e.0, 0x0100_0000_1234_5033);
        let l = EptEntry::leaf(
            0x4000_0000,
            0b111,
            MemType::Uc,
            true,
            PageState::SharedBorrowed,
        );
        assert_eq!(l.0, 0x0300_0000_4000_0087);
    }

    #[test]
    fn every_state_roundtrips_and_leaves_other_bits_alone() {
        let base = EptEntry::leaf(0xabc_d000, 0b111, MemType::Wb, false, PageState::NoPage);
        for s in PageState::ALL {
            let e = base.with_state(s);
            assert_eq!(e.state(), s);
            assert_eq!(e.0 & !(3 << 56), base.0);
            assert_eq!(
                e.0 & HLAT_SENSITIVE_BITS & (1 << 58),
                0,
                "bit 58 never used"
            );
        }
    }

    #[test]
    fn state_encoding_is_the_seed_encoding() {
        assert_eq!(PageState::NoPage as u8, 0b00);
        assert_eq!(PageState::Owned as u8, 0b01);
        assert_eq!(PageState::SharedOwned as u8, 0b10);
        assert_eq!(PageState::SharedBorrowed as u8, 0b11);
    }

    #[test]
    fn owner_annotation_is_not_present_and_roundtrips() {
        for raw in [0, 1, 2, 77, OwnerId::MAX] {
            let o = OwnerId::new(raw).unwrap();
            let e = EptEntry::annotation(o);
            assert!(!e.is_present(false));
            assert!(!e.is_present(true));
            assert_eq!(e.owner(true), Some(o));
            assert_eq!(e.state(), PageState::NoPage);
            assert_eq!(e.0 & !bitfield::mask(12, 20), 0, "only bits 31:12 set");
        }
        assert_eq!(OwnerId::new(OwnerId::MAX + 1), None);
        assert_eq!(EptEntry::annotation(OwnerId::HOST).0, 0x1000);
        assert!(!OwnerId::HYP.is_guest() && !OwnerId::HOST.is_guest());
        assert!(OwnerId::new(2).unwrap().is_guest());
    }

    #[test]
    fn presence_respects_mbec() {
        let ux_only = EptEntry(0).with_user_exec(1);
        assert!(!ux_only.is_present(false));
        assert!(ux_only.is_present(true));
        // An owner annotation is never mistaken for a present entry.
        assert_eq!(ux_only.owner(true), None);
    }

    #[test]
    fn addr_masks_to_bits_51_12() {
        let e = EptEntry(0).with_addr(u64::MAX);
        assert_eq!(e.0, PFN_MASK);
        assert_eq!(EptEntry(!0).addr(), PFN_MASK);
    }

    #[test]
    fn eptp_4level_wb() {
        let p = Eptp::new_4level(0x5_5000, true);
        assert_eq!(p.0, 0x5_5000 | 6 | (3 << 3) | (1 << 6));
        assert_eq!(p.root(), 0x5_5000);
    }

    #[test]
    fn index_and_sizes() {
        let gpa = (3u64 << 39) | (5 << 30) | (7 << 21) | (9 << 12) | 0x123;
        assert_eq!(index(gpa, 4), 3);
        assert_eq!(index(gpa, 3), 5);
        assert_eq!(index(gpa, 2), 7);
        assert_eq!(index(gpa, 1), 9);
        assert_eq!(level_size(1), 4096);
        assert_eq!(level_size(2), 2 << 20);
        assert_eq!(level_size(3), 1 << 30);
    }

    #[test]
    fn memtype_decode() {
        assert_eq!(MemType::from_bits(6), Some(MemType::Wb));
        for reserved in [2, 3, 7] {
            assert_eq!(MemType::from_bits(reserved), None);
        }
    }
}
