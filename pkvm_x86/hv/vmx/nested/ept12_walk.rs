// SPDX-License-Identifier: GPL-2.0

//! The host's EPT for its guest ("EPT12", named by vmcs12's EPT pointer),
//! as the shadow EPT reads it: the EPT pointer's VM-entry checks, the walk
//! of EPT12 for one guest-physical address and access, and the
//! intersection of the leaf found with what the host EPT says of the same
//! host page.  Pure functions; the fault path that calls them and the
//! shadow EPT they feed are elsewhere (Documentation/shadow-ept.rst).
//!
//! * [`check_eptp`]: vmcs12's EPT pointer as VM entry checks it (SDM Vol.
//!   3C, "Checks on VMX Controls", EPT pointer), against the view's
//!   `IA32_VMX_EPT_VPID_CAP`: a typed [`Eptp12`] or the reason
//!   ([`EptpError`], VMfailValid(7) for the host).
//! * [`walk`]: the CPU's 4-level EPT walk (SDM Vol. 3C, "EPT Translation
//!   Mechanism", "EPT Misconfigurations", "EPT Violations", and the
//!   exit-qualification table of EPT violations) as KVM uses it: no
//!   mode-based execute control, no sub-page permissions, no #VE, no
//!   accessed/dirty flags (all hidden by the view).  Each entry is read
//!   **exactly once**, through [`HostPhys`], which only reaches host-owned
//!   RAM: the host may rewrite its tables while the walk runs, and a table
//!   page that is not the host's ends the walk ([`WalkFault::NotHostOwned`],
//!   nothing of it read).
//! * [`intersect`]: the shadow leaf: EPT12's permissions AND the host
//!   EPT's, a memory type that never weakens the host's
//!   ([`shadow_memtype`]), and the largest leaf size both sides allow.
//!
//! Addresses are typed: the walk's input is the guest's (L2) [`Gpa`], its
//! outputs and the table pages it reads are host-physical ([`Hpa`]: the host
//! runs on an identity host EPT, so EPT12's outputs are host-physical).

use super::host_walk::HostPhys;
use crate::hv::mm::addr::{Gpa, Hpa, TABLE_LIMIT};
use crate::hv::mm::ept::{MemType, PAGE_SIZE};
use crate::hv::mm::pgtable::{PERM_R, PERM_W, PERM_X};
use crate::hv::vmx::caps::ept_cap;

/// `IA32_VMX_EPT_VPID_CAP` bits this file needs beyond `caps::ept_cap`.
pub mod cap {
    /// Bit 0: execute-only translations (EPT entries with bits 2:0 = 100b).
    pub const EXEC_ONLY: u64 = 1 << 0;
    /// Bit 8: uncacheable (UC) memory type for the EPT paging structures.
    pub const UC: u64 = 1 << 8;
}

/// Bits of the exit qualification of an EPT violation (SDM Vol. 3C, table
/// "Exit Qualification for EPT Violations").
pub mod qual {
    /// Bit 0: the access was a data read.
    pub const READ: u64 = 1 << 0;
    /// Bit 1: the access was a data write.
    pub const WRITE: u64 = 1 << 1;
    /// Bit 2: the access was an instruction fetch.
    pub const FETCH: u64 = 1 << 2;
    /// Bit 3: the address was readable (AND of bit 0 over the entries used).
    pub const READABLE: u64 = 1 << 3;
    /// Bit 4: the address was writable (AND of bit 1).
    pub const WRITABLE: u64 = 1 << 4;
    /// Bit 5: the address was executable (AND of bit 2).
    pub const EXECUTABLE: u64 = 1 << 5;
    /// Bit 7: the guest-linear-address field is valid.
    pub const GLA_VALID: u64 = 1 << 7;
    /// Bit 8 (with bit 7): the access was to the translated linear address,
    /// not to a guest paging-structure entry.
    pub const GLA_TRANSLATED: u64 = 1 << 8;
    /// Bit 12: NMI unblocking due to IRET.
    pub const NMI_UNBLOCKING: u64 = 1 << 12;
}

/// Why vmcs12's EPT pointer fails the VM-entry checks (the host's
/// VMLAUNCH/VMRESUME then fails with VMfailValid(7), "invalid control
/// field").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EptpError {
    /// Bits 2:0: neither UC nor WB, or a type the view does not offer.
    MemType,
    /// Bits 5:3: not 3 (a 4-level walk), or 4 levels not offered.
    WalkLength,
    /// Bit 6: accessed/dirty flags asked for but not offered.
    AccessedDirty,
    /// Bits 11:7, or bits at or above MAXPHYADDR, set.
    ReservedBits,
}

/// A valid EPT pointer of vmcs12.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Eptp12 {
    /// The value the host wrote (the key of its shadow EPT).
    pub raw: u64,
    /// The PML4 of EPT12.
    pub root: Hpa,
    /// The memory type the CPU would use to read the paging structures.
    /// The walk here reads them through the hypervisor's own (write-back)
    /// mapping; the host's paging structures are ordinary RAM it wrote.
    pub memtype: MemType,
    /// Accessed/dirty flags enabled (only if the view offers them; the
    /// walk does not set them: the view hides A/D until it is emulated).
    pub ad: bool,
}

/// Physical-address bits 51:12 below MAXPHYADDR (`maxphyaddr` clamped to
/// 32..=52, as the walk of the host's own page tables does).
fn addr_mask(maxphyaddr: u8) -> u64 {
    let bits = u32::from(maxphyaddr.clamp(32, 52));
    ((1u64 << bits) - 1) & !(PAGE_SIZE - 1)
}

/// Checks vmcs12's EPT pointer `eptp` as VM entry does, against the view's
/// `IA32_VMX_EPT_VPID_CAP` (`ept_vpid_cap`) and MAXPHYADDR.
pub fn check_eptp(eptp: u64, ept_vpid_cap: u64, maxphyaddr: u8) -> Result<Eptp12, EptpError> {
    let memtype = match eptp & 7 {
        0 if ept_vpid_cap & cap::UC != 0 => MemType::Uc,
        6 if ept_vpid_cap & ept_cap::WB != 0 => MemType::Wb,
        _ => return Err(EptpError::MemType),
    };
    if (eptp >> 3) & 7 != 3 || ept_vpid_cap & ept_cap::WALK_4 == 0 {
        return Err(EptpError::WalkLength);
    }
    let ad = eptp & (1 << 6) != 0;
    if ad && ept_vpid_cap & ept_cap::AD == 0 {
        return Err(EptpError::AccessedDirty);
    }
    let mask = addr_mask(maxphyaddr);
    if eptp & !(mask | 0x7f) != 0 {
        return Err(EptpError::ReservedBits);
    }
    match Hpa::new(eptp & mask) {
        Some(root) => Ok(Eptp12 {
            raw: eptp,
            root,
            memtype,
            ad,
        }),
        None => Err(EptpError::ReservedBits),
    }
}

/// A guest access, as bits 2:0 of an EPT violation's exit qualification.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Access(u8);

impl Access {
    /// A data read.
    pub const READ: Access = Access(1);
    /// A data write.
    pub const WRITE: Access = Access(2);
    /// An instruction fetch.
    pub const FETCH: Access = Access(4);
    /// No access: a walk for what EPT12 maps, whatever its permissions
    /// (the re-validation of a shadow at an INVEPT).
    pub const NONE: Access = Access(0);

    /// The access of a hardware EPT violation (exit qualification bits
    /// 2:0; a write that also reads has both bits).
    pub const fn from_qualification(q: u64) -> Self {
        Access((q & 7) as u8)
    }

    /// Both accesses.
    #[must_use]
    pub const fn and(self, other: Access) -> Self {
        Access(self.0 | other.0)
    }

    /// The access as exit-qualification bits 2:0.
    pub const fn bits(self) -> u64 {
        self.0 as u64
    }

    /// Whether permissions `perms` (`PERM_*` bits, as EPT bits 2:0) allow
    /// every part of the access.
    pub const fn allowed_by(self, perms: u8) -> bool {
        // Read -> R, write -> W, fetch -> X: the same bit positions.
        self.0 & !perms & 7 == 0
    }
}

/// Leaf sizes of an EPT (and of the shadow EPT).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum LeafSize {
    /// 4 KiB (a PTE).
    Size4K,
    /// 2 MiB (a PDE with bit 7).
    Size2M,
    /// 1 GiB (a PDPTE with bit 7).
    Size1G,
}

impl LeafSize {
    /// Bytes mapped.
    pub const fn bytes(self) -> u64 {
        match self {
            Self::Size4K => 1 << 12,
            Self::Size2M => 1 << 21,
            Self::Size1G => 1 << 30,
        }
    }

    /// The level of the entry mapping it (1: PTE, 2: PDE, 3: PDPTE).
    pub const fn level(self) -> u8 {
        match self {
            Self::Size4K => 1,
            Self::Size2M => 2,
            Self::Size1G => 3,
        }
    }
}

/// The leaf of EPT12 that translates an address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ept12Leaf {
    /// The guest-physical address walked.
    pub gpa: Gpa,
    /// The host-physical 4 KiB page holding the address.
    pub hpa_page: Hpa,
    /// First guest-physical address the leaf maps (aligned to `size`).
    pub gpa_base: Gpa,
    /// First host-physical address it maps to (aligned to `size`).
    pub hpa_base: Hpa,
    /// Size of the leaf.
    pub size: LeafSize,
    /// Effective permissions (`PERM_*`): bits 2:0 ANDed over all four
    /// levels, as the CPU computes them.
    pub perms: u8,
    /// The leaf's memory type (bits 5:3).
    pub memtype: MemType,
    /// The leaf's "ignore PAT" bit (bit 6).
    pub ipat: bool,
}

/// An EPT violation the host's EPT gives its guest's access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Violation {
    /// Exit-qualification bits 0-5: the access (2:0) and the permissions of
    /// the translation (5:3: AND over the entries used, 0 when an entry was
    /// not present).  Bits 7, 8 and 12 are the hardware exit's, see
    /// [`Violation::qualification_for`].
    pub qualification: u64,
    /// The level (4: PML4E .. 1: PTE) of the entry that ended the walk: the
    /// one not present, or the leaf whose permissions deny the access.
    pub level: u8,
}

impl Violation {
    /// The exit qualification to reflect to the host: the walk's bits 5:0
    /// with, from the qualification `hw` of the hardware EPT violation the
    /// guest took on the shadow EPT, the guest-linear facts (bit 7, and bit
    /// 8 when bit 7 is set) and NMI unblocking due to IRET (bit 12).  The
    /// other bits are 0: the view offers neither advanced VM-exit
    /// information for EPT violations (bits 11:9) nor shadow stacks,
    /// guest-paging verification or asynchronous accesses (bits 16:13).
    pub const fn qualification_for(&self, hw: u64) -> u64 {
        let mut q = self.qualification & 0x3f;
        if hw & qual::GLA_VALID != 0 {
            q |= hw & (qual::GLA_VALID | qual::GLA_TRANSLATED);
        }
        q | (hw & qual::NMI_UNBLOCKING)
    }
}

/// Why an entry of EPT12 is an EPT misconfiguration (SDM Vol. 3C, "EPT
/// Misconfigurations").  The host sees one exit reason (49) for all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MisconfigReason {
    /// Bits 2:0 are 010b or 110b: write without read.
    WriteWithoutRead,
    /// Bits 2:0 are 100b and the view does not offer execute-only.
    ExecOnly,
    /// A reserved bit: beyond MAXPHYADDR, bits 7:3 of a PML4E, bits 6:3 of
    /// a table pointer, the low address bits of a large page, or bit 7 of a
    /// PDPTE / PDE where the view offers no 1 GiB / 2 MiB pages.
    ReservedBits,
    /// A leaf with memory type 2, 3 or 7.
    MemType,
}

/// An EPT misconfiguration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Misconfig {
    /// Level of the entry (4: PML4E .. 1: PTE).
    pub level: u8,
    /// The entry as read.
    pub entry: u64,
    /// Which condition it meets (the first in the order of the enum).
    pub reason: MisconfigReason,
}

/// Why the walk gives no leaf.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WalkFault {
    /// An EPT violation, to reflect to the host (exit reason 48).
    Violation(Violation),
    /// An EPT misconfiguration, to reflect to the host (exit reason 49).
    Misconfig(Misconfig),
    /// A table page of EPT12 is not host-owned RAM (hypervisor memory, the
    /// module image, a page shared with or donated to anyone, MMIO):
    /// nothing of it was read.  The host sees its guest's exit as a triple
    /// fault, as for its guest touching memory the host does not own
    /// (Documentation/nested.rst).
    NotHostOwned {
        /// The table page.
        table: Hpa,
        /// Its level (4: the PML4 .. 1: a page table).
        level: u8,
    },
}

/// What the walk needs of the view and the CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WalkCtx {
    /// The view's `IA32_VMX_EPT_VPID_CAP`: execute-only, 2 MiB and 1 GiB
    /// pages.
    pub ept_vpid_cap: u64,
    /// MAXPHYADDR.
    pub maxphyaddr: u8,
}

const EPT_LARGE: u64 = 1 << 7;

/// Walks EPT12 (root `eptp.root`) for the guest's access `access` at
/// guest-physical address `gpa`, reading one entry per level through `mem`
/// and each exactly once.  An address at or above 2^48, which a 4-level
/// EPT does not translate, is an EPT violation with no permissions.
///
/// The leaf's data page is not checked here: whether the host may give it
/// to its guest is the page-state machine's decision when it is shared.
pub fn walk(
    mem: &mut impl HostPhys,
    ctx: &WalkCtx,
    eptp: &Eptp12,
    gpa: Gpa,
    access: Access,
) -> Result<Ept12Leaf, WalkFault> {
    let g = gpa.raw();
    if g >= TABLE_LIMIT {
        return Err(WalkFault::Violation(Violation {
            qualification: access.bits(),
            level: 4,
        }));
    }
    let mask = addr_mask(ctx.maxphyaddr);
    let high_rsvd = !mask & 0x000f_ffff_ffff_f000;
    let mut table = eptp.root;
    let mut perms: u64 = 7;
    let mut level: u8 = 4;
    loop {
        let shift = 12 + 9 * u32::from(level - 1);
        let idx = (g >> shift) & 0x1ff;
        let mut word = [0u64; 1];
        // The one read of this level's entry: everything below uses `e`.
        if !mem.read_words(table.raw() + idx * 8, &mut word) {
            return Err(WalkFault::NotHostOwned { table, level });
        }
        let e = word[0];
        let rwx = e & 7;
        if rwx == 0 {
            return Err(WalkFault::Violation(Violation {
                qualification: access.bits(),
                level,
            }));
        }
        let misconfig = |reason| {
            WalkFault::Misconfig(Misconfig {
                level,
                entry: e,
                reason,
            })
        };
        if rwx & 3 == 2 {
            return Err(misconfig(MisconfigReason::WriteWithoutRead));
        }
        if rwx == 4 && ctx.ept_vpid_cap & cap::EXEC_ONLY == 0 {
            return Err(misconfig(MisconfigReason::ExecOnly));
        }
        let size = match (level, e & EPT_LARGE != 0) {
            (1, _) => Some(LeafSize::Size4K),
            (2, true) => Some(LeafSize::Size2M),
            (3, true) => Some(LeafSize::Size1G),
            _ => None,
        };
        let rsvd = match (level, size) {
            // PML4E: bits 7:3 (bit 7 included: no 512 GiB pages).
            (4, _) => high_rsvd | 0xf8,
            (3, Some(_)) if ctx.ept_vpid_cap & ept_cap::PAGE_1G == 0 => high_rsvd | EPT_LARGE,
            (2, Some(_)) if ctx.ept_vpid_cap & ept_cap::PAGE_2M == 0 => high_rsvd | EPT_LARGE,
            // A large page: the address bits below its size.
            (_, Some(s)) => high_rsvd | ((s.bytes() - 1) & !(PAGE_SIZE - 1)),
            // A table pointer: bits 6:3 (bit 7 is clear).
            (_, None) => high_rsvd | 0x78,
        };
        if e & rsvd != 0 {
            return Err(misconfig(MisconfigReason::ReservedBits));
        }
        perms &= rwx;
        let Some(size) = size else {
            table = match Hpa::new(e & mask) {
                Some(t) => t,
                None => return Err(misconfig(MisconfigReason::ReservedBits)),
            };
            level -= 1;
            continue;
        };
        let Some(memtype) = MemType::from_bits((e >> 3) & 7) else {
            return Err(misconfig(MisconfigReason::MemType));
        };
        if !access.allowed_by(perms as u8) {
            return Err(WalkFault::Violation(Violation {
                qualification: access.bits() | perms << 3,
                level,
            }));
        }
        let off = g & (size.bytes() - 1);
        let base = e & mask & !(size.bytes() - 1);
        let (Some(hpa_base), Some(hpa_page), Some(gpa_base)) = (
            Hpa::new(base),
            Hpa::new(base | (off & !(PAGE_SIZE - 1))),
            Gpa::new(g - off),
        ) else {
            return Err(misconfig(MisconfigReason::ReservedBits));
        };
        return Ok(Ept12Leaf {
            gpa,
            hpa_page,
            gpa_base,
            hpa_base,
            size,
            perms: perms as u8,
            memtype,
            ipat: e & (1 << 6) != 0,
        });
    }
}

/// What the host EPT says of the host page a leaf of EPT12 maps to: its
/// leaf covering that page (permissions, memory type, size; the host EPT
/// maps each leaf with one state and one memory type, so its state is
/// uniform over the whole leaf).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostSide {
    /// The host's permissions (`PERM_*`).
    pub perms: u8,
    /// The host EPT's memory type (from the MTRRs; the host EPT leaves
    /// "ignore PAT" clear, so this is the type the MTRRs would give).
    pub memtype: MemType,
    /// Size of the host EPT leaf (naturally aligned, holding the page).
    pub leaf: LeafSize,
}

/// A leaf of the shadow EPT: what the guest gets at `gpa_base`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShadowLeaf {
    /// First guest-physical address (aligned to `size`).
    pub gpa_base: Gpa,
    /// First host-physical address (aligned to `size`).
    pub hpa_base: Hpa,
    /// Leaf size.
    pub size: LeafSize,
    /// Permissions (`PERM_*`); 0 if the two sides share none the CPU can
    /// use, then nothing is to be mapped.
    pub perms: u8,
    /// Memory type.
    pub memtype: MemType,
    /// The "ignore PAT" bit.
    pub ipat: bool,
}

impl ShadowLeaf {
    /// Whether the leaf allows `access`: if EPT12 allows an access that
    /// this does not, the host's side refused it.
    pub const fn allows(&self, access: Access) -> bool {
        access.allowed_by(self.perms)
    }
}

/// The memory type of an access whose range type is `range` (the MTRRs',
/// or an EPT leaf's with "ignore PAT" clear) and whose page-level type is
/// `page` (the PAT's), per SDM Vol. 3A, table "Effective Page-Level Memory
/// Types" (`page` is never UC-, which only a PAT entry can hold).
pub const fn combine(range: MemType, page: MemType) -> MemType {
    use MemType::*;
    match (range, page) {
        (_, Uc) => Uc,
        (_, Wc) => Wc,
        (Uc, _) => Uc,
        (Wb, p) => p,
        (r, Wb) => r,
        (Wc, _) => Uc,
        (Wt, Wt) | (Wp, Wt) => Wt,
        (Wt, Wp) | (Wp, Wp) => Wp,
    }
}

/// The shadow leaf's memory type and "ignore PAT" bit, from the host EPT's
/// type `host` and EPT12's leaf type `ept12` with its "ignore PAT" bit
/// `ept12_ipat`.  The rule (Documentation/shadow-ept.rst):
///
/// * the host's type is UC (MMIO, or RAM the MTRRs make uncached): UC with
///   "ignore PAT", whatever EPT12 and the guest's PAT say;
/// * EPT12 ignores the PAT: the type an access of EPT12's type gets on
///   memory of the host's type ([`combine`]), ignoring the PAT; for RAM
///   (host WB) that is EPT12's type unchanged;
/// * EPT12 combines with the guest's PAT and the host's type is WB:
///   EPT12's type and bit unchanged (RAM: the host's KVM decides, as on
///   hardware);
/// * EPT12 combines with the PAT and the host's type is WC, WT or WP
///   (neither RAM nor MMIO: rare): UC, the guest's PAT still able to choose
///   WC, which both sides allow.
///
/// So the guest never gets a type more cacheable than what the host's own
/// accesses can get (UC stays UC), nor than what EPT12 gives it on the
/// host's memory.
pub const fn shadow_memtype(host: MemType, ept12: MemType, ept12_ipat: bool) -> (MemType, bool) {
    match (host, ept12_ipat) {
        (MemType::Uc, _) => (MemType::Uc, true),
        (h, true) => (combine(h, ept12), true),
        (MemType::Wb, false) => (ept12, false),
        (_, false) => (MemType::Uc, false),
    }
}

/// The shadow leaf for EPT12's `leaf` and the host EPT's `host` side of
/// its page: permissions ANDed (never write without read; nothing if the
/// result is execute-only and the CPU has no execute-only translations,
/// `exec_only`), the memory type of [`shadow_memtype`], and the largest
/// size that EPT12's leaf, the host's leaf and the shadow (`max`) all
/// allow.  Sizes are naturally aligned powers of two and both leaves hold
/// the address, so the aligned block of that size around it lies within
/// both: the host's state and type and EPT12's attributes are uniform
/// over it.
pub fn intersect(leaf: &Ept12Leaf, host: &HostSide, max: LeafSize, exec_only: bool) -> ShadowLeaf {
    let mut perms = leaf.perms & host.perms & (PERM_R | PERM_W | PERM_X);
    if perms & PERM_R == 0 {
        perms &= !PERM_W;
    }
    if perms == PERM_X && !exec_only {
        perms = 0;
    }
    let (memtype, ipat) = shadow_memtype(host.memtype, leaf.memtype, leaf.ipat);
    let size = leaf.size.min(host.leaf).min(max);
    let low = size.bytes() - 1;
    ShadowLeaf {
        gpa_base: Gpa::new(leaf.gpa.raw() & !low).unwrap_or(Gpa::ZERO),
        hpa_base: Hpa::new(leaf.hpa_page.raw() & !low).unwrap_or(Hpa::ZERO),
        size,
        perms,
        memtype,
        ipat,
    }
}

#[cfg(test)]
mod tests {
    use super::super::host_walk::tests::FakeMem;
    use super::*;
    extern crate std;
    use std::vec::Vec;

    /// The view the tests offer: Bochs icelake's EPT capabilities (execute
    /// only, 4 levels, UC and WB tables, 2M and 1G pages, A/D).
    const CAP: u64 = 0x0000_0f01_0673_4141;
    /// The same without execute-only, 1G pages and A/D.
    const CAP_SMALL: u64 = CAP & !(cap::EXEC_ONLY | ept_cap::PAGE_1G | ept_cap::AD);
    const MAXPHY: u8 = 40;

    const ROOT: u64 = 0x10_0000;
    const RWX: u64 = 7;
    const WB: u64 = 6 << 3;

    fn ctx() -> WalkCtx {
        WalkCtx {
            ept_vpid_cap: CAP,
            maxphyaddr: MAXPHY,
        }
    }

    fn eptp() -> Eptp12 {
        check_eptp(ROOT | 0x1e, CAP, MAXPHY).unwrap()
    }

    fn gpa(v: u64) -> Gpa {
        Gpa::new(v).unwrap()
    }

    fn hpa(v: u64) -> Hpa {
        Hpa::new(v).unwrap()
    }

    /// Host memory that counts reads and can rewrite an entry right after
    /// the walk read it (the host changing its table concurrently).
    struct Counting {
        mem: FakeMem,
        reads: Vec<u64>,
        /// After the read of this address, write this value there.
        rewrite: Option<(u64, u64)>,
    }

    impl Counting {
        fn new(mem: FakeMem) -> Self {
            Self {
                mem,
                reads: Vec::new(),
                rewrite: None,
            }
        }
    }

    impl HostPhys for Counting {
        fn read_bytes(&mut self, _: u64, _: &mut [u8]) -> bool {
            panic!("the EPT walk reads words")
        }
        fn write_bytes(&mut self, _: u64, _: &[u8]) -> bool {
            panic!("the EPT walk never writes")
        }
        fn read_words(&mut self, pa: u64, out: &mut [u64]) -> bool {
            assert_eq!(out.len(), 1, "one entry per read");
            self.reads.push(pa);
            let ok = self.mem.read_words(pa, out);
            if let Some((at, v)) = self.rewrite {
                if at == pa {
                    self.mem.set_u64(at, v);
                }
            }
            ok
        }
        fn write_words(&mut self, _: u64, _: &[u64]) -> bool {
            panic!("the EPT walk never writes")
        }
    }

    /// Table page of `level` for the tests' layout: one per level.
    fn table_of(level: u8) -> u64 {
        match level {
            4 => ROOT,
            3 => 0x20_0000,
            2 => 0x30_0000,
            _ => 0x40_0000,
        }
    }

    /// Address of the entry for `g` at `level`.
    fn slot(level: u8, g: u64) -> u64 {
        table_of(level) + ((g >> (12 + 9 * u32::from(level - 1))) & 0x1ff) * 8
    }

    /// EPT12 mapping `g` with a leaf at `leaf_level` (1, 2 or 3) whose
    /// value is `leaf`; table pointers `RWX`.
    fn build(g: u64, leaf_level: u8, leaf: u64) -> FakeMem {
        let mut m = FakeMem::default();
        for level in (leaf_level + 1..=4).rev() {
            m.set_u64(slot(level, g), table_of(level - 1) | RWX);
        }
        m.set_u64(slot(leaf_level, g), leaf);
        m
    }

    fn walk_in(m: &mut FakeMem, c: &WalkCtx, g: u64, a: Access) -> Result<Ept12Leaf, WalkFault> {
        walk(m, c, &eptp(), gpa(g), a)
    }

    #[test]
    fn eptp_checks() {
        // The fixture is the emulated CPU's capability.
        assert_eq!(CAP, super::super::testutil::hw().ept_vpid_cap);
        let ok = check_eptp(0x12_3456_7000 | 0x5e, CAP, MAXPHY).unwrap();
        assert_eq!(ok.root, hpa(0x12_3456_7000));
        assert_eq!(ok.memtype, MemType::Wb);
        assert!(ok.ad);
        let uc = check_eptp(ROOT | 3 << 3, CAP, MAXPHY).unwrap();
        assert_eq!((uc.memtype, uc.ad), (MemType::Uc, false));
        let cases: &[(u64, u64, EptpError)] = &[
            // Memory types other than UC and WB, and ones not offered.
            (ROOT | 0x18 | 1, CAP, EptpError::MemType),
            (ROOT | 0x18 | 4, CAP, EptpError::MemType),
            (ROOT | 0x18 | 5, CAP, EptpError::MemType),
            (ROOT | 0x18 | 7, CAP, EptpError::MemType),
            (ROOT | 0x18, CAP & !cap::UC, EptpError::MemType),
            (ROOT | 0x1e, CAP & !ept_cap::WB, EptpError::MemType),
            // Walk lengths other than 4, and 4 not offered.
            (ROOT | 0x06, CAP, EptpError::WalkLength),
            (ROOT | 0x26, CAP, EptpError::WalkLength),
            (ROOT | 0x3e, CAP, EptpError::WalkLength),
            (ROOT | 0x1e, CAP & !ept_cap::WALK_4, EptpError::WalkLength),
            // A/D only if offered (the view hides it).
            (ROOT | 0x5e, CAP_SMALL, EptpError::AccessedDirty),
            // Bits 11:7 and beyond MAXPHYADDR.
            (ROOT | 0x1e | 1 << 7, CAP, EptpError::ReservedBits),
            (ROOT | 0x1e | 1 << 11, CAP, EptpError::ReservedBits),
            (ROOT | 0x1e | 1 << 40, CAP, EptpError::ReservedBits),
            (ROOT | 0x1e | 1 << 63, CAP, EptpError::ReservedBits),
        ];
        for &(v, c, want) in cases {
            assert_eq!(check_eptp(v, c, MAXPHY), Err(want), "{v:#x} cap {c:#x}");
        }
        // Bit 40 is an address bit with MAXPHYADDR 46.
        assert_eq!(
            check_eptp(ROOT | 0x1e | 1 << 40, CAP, 46).unwrap().root,
            hpa(ROOT | 1 << 40)
        );
    }

    #[test]
    fn walks_4k_2m_1g_leaves() {
        let g = 0x12_3456_7abc_u64;
        // 4 KiB, WB + IPAT, read + write.
        let mut m = build(g, 1, 0x9a_b000 | 3 | WB | 1 << 6);
        let l = walk_in(&mut m, &ctx(), g, Access::WRITE).unwrap();
        assert_eq!(l.hpa_page, hpa(0x9a_b000));
        assert_eq!(
            (l.gpa_base, l.hpa_base),
            (gpa(0x12_3456_7000), hpa(0x9a_b000))
        );
        assert_eq!(
            (l.size, l.perms, l.memtype, l.ipat),
            (LeafSize::Size4K, 3, MemType::Wb, true)
        );
        // 2 MiB, UC, read + execute.
        let mut m = build(g, 2, 0x8620_0000 | 5 | 1 << 7);
        let l = walk_in(&mut m, &ctx(), g, Access::FETCH).unwrap();
        assert_eq!(l.hpa_page, hpa(0x8620_0000 + 0x16_7000));
        assert_eq!(
            (l.gpa_base, l.hpa_base),
            (gpa(0x12_3440_0000), hpa(0x8620_0000))
        );
        assert_eq!(
            (l.size, l.perms, l.memtype, l.ipat),
            (LeafSize::Size2M, 5, MemType::Uc, false)
        );
        // 1 GiB, WT.
        let mut m = build(g, 3, 0x40_4000_0000 | 7 | 4 << 3 | 1 << 7);
        let l = walk_in(&mut m, &ctx(), g, Access::READ).unwrap();
        assert_eq!(l.hpa_page, hpa(0x40_4000_0000 + 0x3456_7000));
        assert_eq!(l.gpa_base, gpa(0x12_0000_0000));
        assert_eq!((l.size, l.memtype), (LeafSize::Size1G, MemType::Wt));
        // Ignored bits (A/D, user-exec, 11, 52-63: SPP, #VE) change nothing.
        let mut m = build(g, 1, 0x9a_b000 | 7 | WB | 0xf00 | 0xfff0_0000_0000_0000);
        let l = walk_in(&mut m, &ctx(), g, Access::READ).unwrap();
        assert_eq!((l.hpa_page, l.perms), (hpa(0x9a_b000), 7));
    }

    #[test]
    fn permissions_are_anded_over_levels_and_violations_report_them() {
        let g = 0x7654_3000_u64;
        // Every level allows something different; the leaf sees the AND.
        for (pml4, pdpt, pd, pt) in [
            (7, 7, 7, 7),
            (3, 7, 7, 7),
            (7, 5, 7, 7),
            (7, 7, 1, 7),
            (7, 7, 7, 4),
        ] {
            let mut m = build(g, 1, 0x5000 | pt | WB);
            m.set_u64(slot(4, g), table_of(3) | pml4);
            m.set_u64(slot(3, g), table_of(2) | pdpt);
            m.set_u64(slot(2, g), table_of(1) | pd);
            let eff = pml4 & pdpt & pd & pt;
            for a in [
                Access::READ,
                Access::WRITE,
                Access::FETCH,
                Access::READ.and(Access::WRITE),
            ] {
                let r = walk_in(&mut m, &ctx(), g, a);
                if a.bits() & !eff == 0 {
                    assert_eq!(r.unwrap().perms, eff as u8);
                } else {
                    assert_eq!(
                        r,
                        Err(WalkFault::Violation(Violation {
                            qualification: a.bits() | eff << 3,
                            level: 1
                        })),
                        "{pml4}{pdpt}{pd}{pt} {a:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn not_present_at_each_level_is_a_violation_without_permissions() {
        let g = 0x1_2345_6000_u64;
        for level in 1..=4u8 {
            let mut m = build(g, 1, 0x5000 | RWX | WB);
            // Not present: bits 2:0 clear, every other bit ignored.
            m.set_u64(slot(level, g), 0xffff_ffff_ffff_fff8);
            for a in [Access::READ, Access::WRITE, Access::FETCH] {
                assert_eq!(
                    walk_in(&mut m, &ctx(), g, a),
                    Err(WalkFault::Violation(Violation {
                        qualification: a.bits(),
                        level
                    }))
                );
            }
        }
        // Beyond 48 bits: not translated by 4 levels.
        let mut m = build(g, 1, 0x5000 | RWX | WB);
        let r = walk(&mut m, &ctx(), &eptp(), gpa(1 << 48 | g), Access::READ);
        assert_eq!(
            r,
            Err(WalkFault::Violation(Violation {
                qualification: 1,
                level: 4
            }))
        );
    }

    #[test]
    fn every_misconfiguration() {
        use MisconfigReason::*;
        let g = 0x40_2060_3000_u64;
        let t = |lvl: u8| table_of(lvl);
        // (level of the bad entry, its value, context caps, reason).
        let cases: &[(u8, u64, u64, MisconfigReason)] = &[
            // Write without read, at every level.
            (4, t(3) | 2, CAP, WriteWithoutRead),
            (3, t(2) | 6, CAP, WriteWithoutRead),
            (2, t(1) | 2, CAP, WriteWithoutRead),
            (1, 0x5000 | 6 | WB, CAP, WriteWithoutRead),
            // Execute-only without the capability, at every level; with it
            // a table pointer is fine (the fetch test below).
            (4, t(3) | 4, CAP_SMALL, ExecOnly),
            (3, t(2) | 4, CAP_SMALL, ExecOnly),
            (2, t(1) | 4, CAP_SMALL, ExecOnly),
            (1, 0x5000 | 4 | WB, CAP_SMALL, ExecOnly),
            // Beyond MAXPHYADDR, at every level.
            (4, t(3) | RWX | 1 << 40, CAP, ReservedBits),
            (3, t(2) | RWX | 1 << 51, CAP, ReservedBits),
            (2, t(1) | RWX | 1 << 45, CAP, ReservedBits),
            (1, 0x5000 | RWX | WB | 1 << 40, CAP, ReservedBits),
            (
                2,
                0x20_0000 | RWX | WB | 1 << 7 | 1 << 40,
                CAP,
                ReservedBits,
            ),
            // Bits 7:3 of a PML4E (bit 7: no 512 GiB pages; 6:3 its type).
            (4, t(3) | RWX | 1 << 7, CAP, ReservedBits),
            (4, t(3) | RWX | WB, CAP, ReservedBits),
            (4, t(3) | RWX | 1 << 6, CAP, ReservedBits),
            // Bits 6:3 of a table pointer (memory type, IPAT).
            (3, t(2) | RWX | 1 << 3, CAP, ReservedBits),
            (2, t(1) | RWX | 1 << 6, CAP, ReservedBits),
            // Low address bits of large pages (bits 29:12, 20:12).
            (
                3,
                0x4000_0000 | RWX | WB | 1 << 7 | 1 << 12,
                CAP,
                ReservedBits,
            ),
            (
                3,
                0x4000_0000 | RWX | WB | 1 << 7 | 1 << 29,
                CAP,
                ReservedBits,
            ),
            (
                2,
                0x20_0000 | RWX | WB | 1 << 7 | 1 << 12,
                CAP,
                ReservedBits,
            ),
            (
                2,
                0x20_0000 | RWX | WB | 1 << 7 | 1 << 20,
                CAP,
                ReservedBits,
            ),
            // Large pages the view does not offer (1 GiB: CAP_SMALL).
            (3, 0x4000_0000 | RWX | WB | 1 << 7, CAP_SMALL, ReservedBits),
            (
                2,
                0x20_0000 | RWX | WB | 1 << 7,
                CAP & !ept_cap::PAGE_2M,
                ReservedBits,
            ),
            // Reserved memory types in a leaf of each size.
            (1, 0x5000 | RWX | 2 << 3, CAP, MemType),
            (1, 0x5000 | RWX | 3 << 3, CAP, MemType),
            (1, 0x5000 | RWX | 7 << 3, CAP, MemType),
            (2, 0x20_0000 | RWX | 7 << 3 | 1 << 7, CAP, MemType),
            (3, 0x4000_0000 | RWX | 2 << 3 | 1 << 7, CAP, MemType),
        ];
        for &(level, bad, caps, reason) in cases {
            let mut m = build(g, 1, 0x5000 | RWX | WB);
            m.set_u64(slot(level, g), bad);
            let c = WalkCtx {
                ept_vpid_cap: caps,
                maxphyaddr: MAXPHY,
            };
            // A misconfiguration, whatever the access (even one the entry
            // would not allow).
            for a in [Access::READ, Access::WRITE, Access::FETCH] {
                assert_eq!(
                    walk_in(&mut m, &c, g, a),
                    Err(WalkFault::Misconfig(Misconfig {
                        level,
                        entry: bad,
                        reason
                    })),
                    "level {level} entry {bad:#x}"
                );
            }
        }
        // A misconfiguration below an entry that denies the access wins
        // over the permission violation (the walk reaches it first).
        let mut m = build(g, 1, 0x5000 | RWX | 2 << 3);
        m.set_u64(slot(4, g), t(3) | 1);
        let r = walk_in(&mut m, &ctx(), g, Access::WRITE);
        assert!(matches!(
            r,
            Err(WalkFault::Misconfig(Misconfig { level: 1, .. }))
        ));
        // Execute-only with the capability: a translation, fetch only.
        let mut m = build(g, 1, 0x5000 | 4 | WB);
        m.set_u64(slot(3, g), t(2) | 4);
        assert_eq!(walk_in(&mut m, &ctx(), g, Access::FETCH).unwrap().perms, 4);
        assert_eq!(
            walk_in(&mut m, &ctx(), g, Access::READ),
            Err(WalkFault::Violation(Violation {
                qualification: 1 | 4 << 3,
                level: 1
            }))
        );
        // A high MAXPHYADDR makes bit 40 an address bit.
        let mut m = build(g, 1, 0x5000 | RWX | WB | 1 << 40);
        let c = WalkCtx {
            ept_vpid_cap: CAP,
            maxphyaddr: 46,
        };
        assert_eq!(
            walk_in(&mut m, &c, g, Access::READ).unwrap().hpa_page,
            hpa(1 << 40 | 0x5000)
        );
    }

    #[test]
    fn a_table_page_not_the_hosts_at_each_level() {
        let g = 0x3_c0de_f000_u64;
        for level in 1..=4u8 {
            let mut m = build(g, 1, 0x5000 | RWX | WB);
            m.not_host.insert(table_of(level));
            let mut c = Counting::new(m);
            assert_eq!(
                walk(&mut c, &ctx(), &eptp(), gpa(g), Access::READ),
                Err(WalkFault::NotHostOwned {
                    table: hpa(table_of(level)),
                    level
                })
            );
            // Nothing after the refused page was read.
            assert_eq!(c.reads.len(), usize::from(5 - level));
            assert_eq!(c.mem.refused, [table_of(level)]);
        }
        // The data page is not the walk's business (the share decides).
        let mut m = build(g, 1, 0x5000 | RWX | WB);
        m.not_host.insert(0x5000);
        assert!(walk_in(&mut m, &ctx(), g, Access::READ).is_ok());
        assert!(m.refused.is_empty());
    }

    #[test]
    fn each_entry_is_read_once() {
        let g = 0x1234_5678_u64;
        for leaf_level in 1..=3u8 {
            let leaf = match leaf_level {
                1 => 0x5000 | RWX | WB,
                2 => 0x60_0000 | RWX | WB | 1 << 7,
                _ => 0x4000_0000 | RWX | WB | 1 << 7,
            };
            let mut c = Counting::new(build(g, leaf_level, leaf));
            walk(&mut c, &ctx(), &eptp(), gpa(g), Access::WRITE).unwrap();
            let want: Vec<u64> = (leaf_level..=4).rev().map(|l| slot(l, g)).collect();
            assert_eq!(c.reads, want, "one read per level, top down");
        }
    }

    #[test]
    fn an_entry_rewritten_during_and_between_walks() {
        let g = 0x1234_5678_u64;
        let mut c = Counting::new(build(g, 1, 0x5000 | RWX | WB));
        // The host turns the PDE into a 2 MiB page right after the walk
        // read it: this walk follows what it read, the next one the new
        // entry; each reads every level once.
        let pde = 0x80_0000 | 1 | WB | 1 << 7;
        c.rewrite = Some((slot(2, g), pde));
        let first = walk(&mut c, &ctx(), &eptp(), gpa(g), Access::WRITE).unwrap();
        assert_eq!(
            (first.hpa_page, first.size),
            (hpa(0x5000), LeafSize::Size4K)
        );
        assert_eq!(c.reads.len(), 4);
        c.rewrite = None;
        c.reads.clear();
        let second = walk(&mut c, &ctx(), &eptp(), gpa(g), Access::READ).unwrap();
        assert_eq!(
            (second.hpa_page, second.size, second.perms),
            (hpa(0x80_0000 + 0x14_5000), LeafSize::Size2M, 1)
        );
        assert_eq!(c.reads.len(), 3);
        c.reads.clear();
        assert_eq!(
            walk(&mut c, &ctx(), &eptp(), gpa(g), Access::WRITE),
            Err(WalkFault::Violation(Violation {
                qualification: 2 | 1 << 3,
                level: 2
            }))
        );
        // The PTE rewritten to not present after it was read: the leaf read
        // is the answer (the host's INVEPT is what makes the change count).
        let mut c = Counting::new(build(g, 1, 0x5000 | RWX | WB));
        c.rewrite = Some((slot(1, g), 0));
        assert!(walk(&mut c, &ctx(), &eptp(), gpa(g), Access::READ).is_ok());
        assert!(walk(&mut c, &ctx(), &eptp(), gpa(g), Access::READ).is_err());
    }

    #[test]
    fn reflected_qualification_takes_only_the_guest_linear_facts() {
        let v = Violation {
            qualification: 2 | 1 << 3,
            level: 1,
        };
        // The hardware's own permission bits (of the shadow) never leak.
        assert_eq!(v.qualification_for(0x3f), 0xa);
        assert_eq!(
            v.qualification_for(qual::GLA_VALID | qual::GLA_TRANSLATED),
            0xa | 0x180
        );
        assert_eq!(v.qualification_for(qual::GLA_VALID), 0xa | 0x80);
        // Bit 8 is undefined without bit 7: not passed on.
        assert_eq!(v.qualification_for(qual::GLA_TRANSLATED), 0xa);
        assert_eq!(
            v.qualification_for(qual::NMI_UNBLOCKING | 0xe00 | 0x1_e000),
            0xa | 0x1000
        );
        assert_eq!(
            Access::from_qualification(0x183),
            Access::READ.and(Access::WRITE)
        );
    }

    // ---- Intersection ----

    /// PAT column values, UC- included (only a PAT entry holds it).
    #[derive(Clone, Copy, Debug, PartialEq)]
    enum Pat {
        T(MemType),
        UcMinus,
    }

    const TYPES: [MemType; 5] = [
        MemType::Uc,
        MemType::Wc,
        MemType::Wt,
        MemType::Wp,
        MemType::Wb,
    ];
    const PATS: [Pat; 6] = [
        Pat::T(MemType::Uc),
        Pat::UcMinus,
        Pat::T(MemType::Wc),
        Pat::T(MemType::Wt),
        Pat::T(MemType::Wp),
        Pat::T(MemType::Wb),
    ];

    /// SDM Vol. 3A table "Effective Page-Level Memory Types", written out
    /// row by row (MTRR type, PAT type in the order of `PATS`).
    fn sdm_table(range: MemType, pat: Pat) -> MemType {
        use MemType::*;
        let row: [MemType; 6] = match range {
            Uc => [Uc, Uc, Wc, Uc, Uc, Uc],
            Wc => [Uc, Wc, Wc, Uc, Uc, Wc],
            Wt => [Uc, Uc, Wc, Wt, Wp, Wt],
            Wb => [Uc, Uc, Wc, Wt, Wp, Wb],
            Wp => [Uc, Wc, Wc, Wt, Wp, Wp],
        };
        row[PATS.iter().position(|p| *p == pat).unwrap()]
    }

    /// The type a guest access with PAT type `pat` gets through an EPT leaf.
    fn effective(mt: MemType, ipat: bool, pat: Pat) -> MemType {
        if ipat {
            mt
        } else {
            sdm_table(mt, pat)
        }
    }

    /// What a type lets the CPU do that UC does not: speculative reads,
    /// cached reads, cached writes, combined (weakly ordered) writes.
    fn weaknesses(t: MemType) -> u8 {
        match t {
            MemType::Uc => 0,
            MemType::Wc => 0b1001,
            MemType::Wt | MemType::Wp => 0b0011,
            MemType::Wb => 0b0111,
        }
    }

    /// `a` is at least as strong (as uncached) as `b`.
    fn no_weaker(a: MemType, b: MemType) -> bool {
        weaknesses(a) & !weaknesses(b) == 0
    }

    #[test]
    fn combine_is_the_sdm_table() {
        for r in TYPES {
            for p in TYPES {
                assert_eq!(combine(r, p), sdm_table(r, Pat::T(p)), "{r:?} {p:?}");
            }
        }
    }

    #[test]
    fn memory_type_never_weakens_either_side() {
        for h in TYPES {
            // What the host's own accesses can get on its memory.
            let reach: Vec<MemType> = PATS.iter().map(|&p| sdm_table(h, p)).collect();
            for g in TYPES {
                for g_ipat in [false, true] {
                    let (mt, ipat) = shadow_memtype(h, g, g_ipat);
                    if h == MemType::Wb {
                        assert_eq!((mt, ipat), (g, g_ipat), "RAM: EPT12's choice");
                    }
                    for p in PATS {
                        let eff = effective(mt, ipat, p);
                        let what =
                            std::format!("host {h:?} ept12 {g:?}/{g_ipat} pat {p:?}: {eff:?}");
                        // The host's type: UC stays UC; otherwise nothing
                        // its own accesses could not get.
                        if h == MemType::Uc {
                            assert_eq!(eff, MemType::Uc, "{what}");
                        }
                        assert!(reach.contains(&eff), "{what}");
                        // EPT12's type on the host's memory: the type the
                        // guest's access would get through EPT12 and then
                        // the host's range type, or stronger.
                        let target = sdm_table(h, Pat::T(effective(g, g_ipat, p)));
                        assert!(no_weaker(eff, target), "{what} vs {target:?}");
                    }
                }
            }
        }
    }

    fn leaf(
        g: u64,
        hpa_page: u64,
        size: LeafSize,
        perms: u8,
        mt: MemType,
        ipat: bool,
    ) -> Ept12Leaf {
        let low = size.bytes() - 1;
        Ept12Leaf {
            gpa: gpa(g),
            hpa_page: hpa(hpa_page),
            gpa_base: gpa(g & !low),
            hpa_base: hpa(hpa_page & !low),
            size,
            perms,
            memtype: mt,
            ipat,
        }
    }

    #[test]
    fn permissions_are_anded() {
        let l = |p| leaf(0x5123, 0x9000, LeafSize::Size4K, p, MemType::Wb, true);
        let host = |p| HostSide {
            perms: p,
            memtype: MemType::Wb,
            leaf: LeafSize::Size2M,
        };
        // Every permission set a walk can give (W implies R).
        for g in [1u8, 3, 4, 5, 7] {
            for h in [1u8, 3, 5, 7] {
                let s = intersect(&l(g), &host(h), LeafSize::Size1G, true);
                assert_eq!(s.perms, g & h, "{g} & {h}");
            }
        }
        // Execute-only only where the CPU has it.
        assert_eq!(intersect(&l(4), &host(7), LeafSize::Size1G, false).perms, 0);
        assert_eq!(intersect(&l(5), &host(4), LeafSize::Size1G, false).perms, 0);
        // Never write without read, whatever the inputs.
        assert_eq!(intersect(&l(7), &host(6), LeafSize::Size1G, true).perms, 4);
        assert_eq!(intersect(&l(3), &host(2), LeafSize::Size1G, true).perms, 0);
        // The host's side refusing an access EPT12 allows.
        let s = intersect(&l(7), &host(5), LeafSize::Size1G, true);
        assert!(s.allows(Access::READ) && s.allows(Access::FETCH) && !s.allows(Access::WRITE));
    }

    #[test]
    fn shadow_leaf_size_is_the_smallest_of_the_three() {
        use LeafSize::*;
        let g = 0x1_4567_8abc_u64;
        let hpa_page = 0x7_8567_8000_u64;
        for ept12 in [Size4K, Size2M, Size1G] {
            for host in [Size4K, Size2M, Size1G] {
                for max in [Size4K, Size2M, Size1G] {
                    let l = leaf(g, hpa_page, ept12, 7, MemType::Wb, true);
                    let h = HostSide {
                        perms: 7,
                        memtype: MemType::Wb,
                        leaf: host,
                    };
                    let s = intersect(&l, &h, max, true);
                    let want = [ept12, host, max].into_iter().min().unwrap();
                    assert_eq!(s.size, want);
                    let low = want.bytes() - 1;
                    assert_eq!(s.gpa_base, gpa(g & !low));
                    assert_eq!(s.hpa_base, hpa(hpa_page & !low));
                    // The block lies inside both leaves.
                    assert!(s.gpa_base.raw() >= l.gpa_base.raw());
                    assert!(s.gpa_base.raw() + low < l.gpa_base.raw() + ept12.bytes());
                    let host_base = hpa_page & !(host.bytes() - 1);
                    assert!(s.hpa_base.raw() >= host_base);
                    assert!(s.hpa_base.raw() + low < host_base + host.bytes());
                    // And maps the address where EPT12 does.
                    assert_eq!(
                        s.hpa_base.raw() + (g & low & !0xfff),
                        hpa_page,
                        "{ept12:?} {host:?} {max:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn walk_then_intersect() {
        // A 1 GiB EPT12 leaf over RAM the host maps with 2 MiB pages, the
        // shadow allowing 2 MiB: a 2 MiB shadow leaf, WB + IPAT as KVM asks.
        let g = 0x1_4567_8abc_u64;
        let mut m = build(g, 3, 0x8_0000_0000 | 7 | WB | 1 << 6 | 1 << 7);
        let l = walk_in(&mut m, &ctx(), g, Access::WRITE).unwrap();
        let h = HostSide {
            perms: 7,
            memtype: MemType::Wb,
            leaf: LeafSize::Size2M,
        };
        let s = intersect(&l, &h, LeafSize::Size2M, true);
        assert_eq!(
            s,
            ShadowLeaf {
                gpa_base: gpa(0x1_4560_0000),
                hpa_base: hpa(0x8_0560_0000),
                size: LeafSize::Size2M,
                perms: 7,
                memtype: MemType::Wb,
                ipat: true,
            }
        );
        // The same page where the host's MTRRs say UC: UC, PAT ignored.
        let s = intersect(
            &l,
            &HostSide {
                memtype: MemType::Uc,
                ..h
            },
            LeafSize::Size2M,
            true,
        );
        assert_eq!((s.memtype, s.ipat), (MemType::Uc, true));
    }
}
