// SPDX-License-Identifier: GPL-2.0

//! Pluggable entry formats for the page-table engine.
//!
//! Owns the [`PteFormat`] trait, the format-neutral leaf attributes
//! [`Attrs`], and its two implementations: [`EptFormat`] (host EPT and guest
//! shadow EPTs, built on [`EptEntry`] from `ept.rs`, which owns the bit
//! layout) and [`HypFormat`] (IA-32e 4-level paging, for the hypervisor's own
//! page table).  The engine never looks at entry bits itself: it only asks
//! the format.

use crate::hv::mm::addr::Hpa;
use crate::hv::mm::ept::{EptEntry, MemType, OwnerId, PageState, PFN_MASK};

/// Read permission bit of [`Attrs::perms`].
pub const PERM_R: u8 = 1;
/// Write permission bit of [`Attrs::perms`].
pub const PERM_W: u8 = 2;
/// Execute permission bit of [`Attrs::perms`].
pub const PERM_X: u8 = 4;
/// Read, write and execute.
pub const PERM_RWX: u8 = PERM_R | PERM_W | PERM_X;

/// Format-neutral attributes of a present leaf.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attrs {
    /// Permissions, a combination of [`PERM_R`], [`PERM_W`], [`PERM_X`].
    pub perms: u8,
    /// Memory type.
    pub memtype: MemType,
    /// pkvm page state of the mapping.
    pub state: PageState,
    /// EPT "ignore PAT" (bit 6 of an EPT leaf): the memory type is
    /// `memtype` whatever the guest's PAT says.  Only EPT leaves carry it
    /// (a shadow EPT leaf copies it from the host's EPT for its guest);
    /// the hypervisor's IA-32e table has no such bit and reads it `false`.
    pub ipat: bool,
}

impl Attrs {
    /// Write-back memory with permissions `perms` in page state `state`
    /// (IPAT clear: the guest's PAT combines with it).
    pub const fn wb(perms: u8, state: PageState) -> Self {
        Self {
            perms,
            memtype: MemType::Wb,
            state,
            ipat: false,
        }
    }
}

/// The format of one 64-bit paging-structure entry.
///
/// Levels are numbered like `ept::index`: 1 is the last level (4 KiB
/// entries), 4 the PML4.  A *leaf* is any entry that is not a table
/// pointer: a present page mapping (4 KiB at level 1, a large page at level
/// 2 or 3) or a non-present entry, which may carry an owner annotation.
pub trait PteFormat {
    /// Short name, for reports.
    const NAME: &'static str;

    /// Whether the CPU would use this entry (a table pointer or a mapping).
    fn is_present(e: u64) -> bool;

    /// Whether `e`, found at `level`, points to a next-level table.
    fn is_table(e: u64, level: u32) -> bool;

    /// A table entry pointing to the table page at `pa`.
    fn table(pa: Hpa) -> u64;

    /// A present leaf at `level` mapping `pa` with `attrs` (a large page
    /// when `level > 1`).
    fn leaf(pa: Hpa, attrs: Attrs, level: u32) -> u64;

    /// Host-physical address a present entry (table or leaf) points to.
    fn addr(e: u64) -> Hpa;

    /// Attributes of a present leaf.
    fn attrs(e: u64) -> Attrs;

    /// Page state of a leaf: its recorded state if present, `NoPage` if not.
    fn state(e: u64) -> PageState;

    /// A present leaf `e` with its page state replaced.
    fn with_state(e: u64, s: PageState) -> u64;

    /// A non-present entry recording that `owner` owns what it covers.
    /// The owner `HYP` (0) is the all-zero entry.
    fn annotation(owner: OwnerId) -> u64;

    /// The owner recorded in a non-present entry, `None` if `e` is present.
    fn owner(e: u64) -> Option<OwnerId>;

    /// Whether replacing the present entry `old` at `level` by the present
    /// entry `new` changes what the hardware may have cached: a table
    /// becomes a leaf or the other way round (a page-size change), the
    /// output address moves, or a leaf's memory type or IPAT changes.  Such
    /// a change must go break-before-make (see `pgtable`); a change of
    /// permissions or of software bits need not.
    fn changes_translation(old: u64, new: u64, level: u32) -> bool {
        let table = Self::is_table(old, level);
        table != Self::is_table(new, level)
            || Self::addr(old) != Self::addr(new)
            || (!table
                && (Self::attrs(old).memtype != Self::attrs(new).memtype
                    || Self::attrs(old).ipat != Self::attrs(new).ipat))
    }

    /// Whether replacing the present leaf `old` at `level` by `new` takes
    /// access away: `new` is not present, or lacks a permission `old` had.
    /// Such a change is written in place but invalidated before the walk
    /// that made it returns (see `pgtable`, "Publication").  Tables are
    /// not leaves: unlinking one goes break-before-make instead.
    fn loses_access(old: u64, new: u64, level: u32) -> bool {
        if !Self::is_present(old) || Self::is_table(old, level) {
            return false;
        }
        !Self::is_present(new)
            || Self::is_table(new, level)
            || Self::attrs(old).perms & !Self::attrs(new).perms != 0
    }

    /// Entry `i` (0..512) of the table that replaces leaf `e` at `level` when
    /// it is split: a present large page becomes 512 smaller pages with the
    /// same attributes, a non-present entry is copied unchanged.
    fn split_child(e: u64, level: u32, i: u64) -> u64 {
        if Self::is_present(e) {
            let child = crate::hv::mm::ept::level_size(level - 1);
            Self::leaf(
                Self::addr(e).wrapping_add(i * child),
                Self::attrs(e),
                level - 1,
            )
        } else {
            e
        }
    }
}

/// The address in bits 51:12 of an entry (always below 2^52).
fn hpa_bits(bits: u64) -> Hpa {
    Hpa::new(bits & PFN_MASK).unwrap_or(Hpa::ZERO)
}

/// Intel EPT entries (host EPT and guest shadow EPTs); see `ept.rs`.
///
/// Mode-based execute control is never enabled by pkvm for these tables, so
/// presence is bits 2:0; the conservative `is_present(true)` is used anyway
/// so that an entry with only bit 10 set is never read as an owner.
#[derive(Clone, Copy, Debug)]
pub enum EptFormat {}

impl PteFormat for EptFormat {
    const NAME: &'static str = "ept";

    fn is_present(e: u64) -> bool {
        EptEntry(e).is_present(true)
    }

    fn is_table(e: u64, level: u32) -> bool {
        level > 1 && Self::is_present(e) && EptEntry(e).large() == 0
    }

    fn table(pa: Hpa) -> u64 {
        EptEntry::table(pa.raw()).0
    }

    fn leaf(pa: Hpa, attrs: Attrs, level: u32) -> u64 {
        EptEntry::leaf(
            pa.raw(),
            u64::from(attrs.perms),
            attrs.memtype,
            level > 1,
            attrs.state,
        )
        .with_ignore_pat(u64::from(attrs.ipat))
        .0
    }

    fn addr(e: u64) -> Hpa {
        hpa_bits(EptEntry(e).addr())
    }

    fn attrs(e: u64) -> Attrs {
        let e = EptEntry(e);
        Attrs {
            perms: (e.0 & EptEntry::RWX) as u8,
            memtype: MemType::from_bits(e.memtype()).unwrap_or(MemType::Uc),
            state: e.state(),
            ipat: e.ignore_pat() != 0,
        }
    }

    fn state(e: u64) -> PageState {
        if Self::is_present(e) {
            EptEntry(e).state()
        } else {
            PageState::NoPage
        }
    }

    fn with_state(e: u64, s: PageState) -> u64 {
        EptEntry(e).with_state(s).0
    }

    fn annotation(owner: OwnerId) -> u64 {
        EptEntry::annotation(owner).0
    }

    fn owner(e: u64) -> Option<OwnerId> {
        EptEntry(e).owner(true)
    }
}

/// IA-32e 4-level paging entries, for the hypervisor's own page table.
///
/// Bit 0 present, bit 1 writable, bit 2 user (never set: the hypervisor runs
/// at CPL 0), bits 4:3 PCD/PWT (the only memory-type control used: `Uc` sets
/// both, everything else is write-back through PAT entry 0), bit 7 page size,
/// bits 51:12 address, bit 63 execute-disable.  The page state lives in bits
/// 53:52, which the CPU ignores in every entry of 4-level paging (bits 62:59
/// are protection keys and are left alone).  A non-present entry keeps the
/// owner id in bits 31:12 like the EPT format.
#[derive(Clone, Copy, Debug)]
pub enum HypFormat {}

impl HypFormat {
    const P: u64 = 1 << 0;
    const RW: u64 = 1 << 1;
    const PWT: u64 = 1 << 3;
    const PCD: u64 = 1 << 4;
    const PS: u64 = 1 << 7;
    const NX: u64 = 1 << 63;
    const STATE_SHIFT: u32 = 52;
    const STATE_MASK: u64 = 3 << Self::STATE_SHIFT;
}

impl PteFormat for HypFormat {
    const NAME: &'static str = "hyp";

    fn is_present(e: u64) -> bool {
        e & Self::P != 0
    }

    fn is_table(e: u64, level: u32) -> bool {
        level > 1 && Self::is_present(e) && e & Self::PS == 0
    }

    fn table(pa: Hpa) -> u64 {
        (pa.raw() & PFN_MASK) | Self::P | Self::RW
    }

    fn leaf(pa: Hpa, attrs: Attrs, level: u32) -> u64 {
        let mut e = (pa.raw() & PFN_MASK) | Self::P;
        if attrs.perms & PERM_W != 0 {
            e |= Self::RW;
        }
        if attrs.perms & PERM_X == 0 {
            e |= Self::NX;
        }
        if attrs.memtype == MemType::Uc {
            e |= Self::PCD | Self::PWT;
        }
        if level > 1 {
            e |= Self::PS;
        }
        e | ((attrs.state as u64) << Self::STATE_SHIFT)
    }

    fn addr(e: u64) -> Hpa {
        hpa_bits(e & PFN_MASK)
    }

    fn attrs(e: u64) -> Attrs {
        let mut perms = PERM_R;
        if e & Self::RW != 0 {
            perms |= PERM_W;
        }
        if e & Self::NX == 0 {
            perms |= PERM_X;
        }
        let memtype = if e & (Self::PCD | Self::PWT) == Self::PCD | Self::PWT {
            MemType::Uc
        } else {
            MemType::Wb
        };
        Attrs {
            perms,
            memtype,
            state: Self::state(e),
            ipat: false,
        }
    }

    fn state(e: u64) -> PageState {
        if Self::is_present(e) {
            PageState::from_bits(e >> Self::STATE_SHIFT)
        } else {
            PageState::NoPage
        }
    }

    fn with_state(e: u64, s: PageState) -> u64 {
        (e & !Self::STATE_MASK) | ((s as u64) << Self::STATE_SHIFT)
    }

    fn annotation(owner: OwnerId) -> u64 {
        u64::from(owner.raw()) << 12
    }

    fn owner(e: u64) -> Option<OwnerId> {
        if Self::is_present(e) {
            None
        } else {
            OwnerId::new(((e >> 12) & u64::from(OwnerId::MAX)) as u32)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hpa(a: u64) -> Hpa {
        Hpa::new(a).unwrap()
    }

    fn roundtrip<F: PteFormat>() {
        for s in PageState::ALL {
            for level in 1..=3 {
                let a = Attrs::wb(PERM_R | PERM_W, s);
                let e = F::leaf(hpa(0x4000_0000), a, level);
                assert!(F::is_present(e));
                assert!(!F::is_table(e, level), "{} leaf at {level}", F::NAME);
                assert_eq!(F::addr(e), hpa(0x4000_0000));
                let got = F::attrs(e);
                assert_eq!(got.state, s);
                assert_eq!(got.perms & PERM_W, PERM_W);
                assert_eq!(
                    F::state(F::with_state(e, PageState::Owned)),
                    PageState::Owned
                );
            }
        }
        let t = F::table(hpa(0x1234_5000));
        assert!(F::is_table(t, 2) && F::is_table(t, 4) && !F::is_table(t, 1));
        assert_eq!(F::addr(t), hpa(0x1234_5000));
        assert_eq!(F::annotation(OwnerId::HYP), 0, "HYP is the empty entry");
        let g = OwnerId::new(0x1001).unwrap();
        assert_eq!(F::owner(F::annotation(g)), Some(g));
        assert_eq!(F::state(F::annotation(g)), PageState::NoPage);
        assert!(!F::is_present(F::annotation(g)));
    }

    #[test]
    fn ept_format_roundtrips() {
        roundtrip::<EptFormat>();
        let e = EptFormat::leaf(hpa(0x20_0000), Attrs::wb(PERM_RWX, PageState::Owned), 2);
        assert_eq!(e, 0x0100_0000_0020_00b7);
    }

    #[test]
    fn hyp_format_roundtrips() {
        roundtrip::<HypFormat>();
        let ro = HypFormat::leaf(hpa(0x1000), Attrs::wb(PERM_R, PageState::Owned), 1);
        assert_eq!(ro, 0x8010_0000_0000_1001);
        assert_eq!(HypFormat::attrs(ro).perms, PERM_R);
    }

    #[test]
    fn split_child_steps_addresses() {
        let a = Attrs::wb(PERM_RWX, PageState::SharedOwned);
        let big = EptFormat::leaf(hpa(0x4000_0000), a, 3);
        let c = EptFormat::split_child(big, 3, 5);
        assert_eq!(EptFormat::addr(c), hpa(0x4000_0000 + 5 * (2 << 20)));
        assert_eq!(EptFormat::attrs(c), a);
        assert!(!EptFormat::is_table(c, 2));
        let ann = EptFormat::annotation(OwnerId::new(7).unwrap());
        assert_eq!(EptFormat::split_child(ann, 2, 9), ann);
    }
}
