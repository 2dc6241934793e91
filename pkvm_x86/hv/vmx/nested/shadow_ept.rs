// SPDX-License-Identifier: GPL-2.0

//! The shadow EPTs (EPT02) of the host's own hypervisor: one per EPT
//! pointer the host uses (EPTP12), each a guest in the page-state sense.
//!
//! Owns [`ShadowEpts`], a bounded set of shadow EPTs keyed by the root
//! address of the host's EPT pointer (EPTP12 bits 51:12, the "EP4TA" the
//! SDM tags cached mappings with), and every change of what they map:
//!
//! * [`ShadowEpts::install`]: map one leaf that the walk of the host's EPT
//!   resolved ([`ResolvedLeaf`], produced by the EPT12 walk) into the shadow
//!   of that EPTP12, only if it is absent there: the second CPU faulting on
//!   the same address finds it present and changes nothing, so there is
//!   exactly one share per shadow leaf.  Shares are counted (one count per
//!   4 KiB page of each shadow leaf, Documentation/page-states.rst,
//!   "Counted shares"): several shadows, and several addresses of one,
//!   may map the same host page, which goes back to the host alone when
//!   the last of them is retired.  A present leaf that gives less
//!   than the walk now does (the host raised permissions or remapped
//!   without INVEPT) is replaced: unshared, then the new leaf shared.
//!   Shares go through the page-state machine in one place each
//!   (`share_leaf`, `unshare_run`).
//! * [`ShadowEpts::invalidate_single`] / [`ShadowEpts::invalidate_all`]:
//!   the host's INVEPT single-context / global.  The named shadow (or
//!   every one) is *retired*: taken out of the set (no VM entry uses its
//!   root again), flushed from every CPU with one [`MmOps::invalidate`]
//!   over its whole range, and only then are its shares returned
//!   (`unshare_run`) and its table pages freed.  A shadow that maps
//!   nothing has nothing stale and survives; so does one whose leaves all
//!   still match the host's EPT ([`ShadowEpts::invalidate_single_checked`],
//!   re-validating with the EPT12 walk), and one with a few stale leaves
//!   loses only those (a partial drop, `drop_pending`: revoked in the live
//!   table, one flush, then their shares returned).  EPTP changes and
//!   VMCLEAR are not invalidation points: nothing here is called for them.
//! * Memory: table pages come from the [`MmOps`] the caller passes (in the
//!   module: the reserve).  When a share or a new shadow runs out of pages,
//!   the least recently used *other* shadow is retired and the operation
//!   retried once; failing again is [`NoMapping::NoMemory`] ("no mapping
//!   this time": the guest re-faults while the host half refills), never a
//!   panic.  At most [`MAX_SHADOWS`] shadows exist, each of at most
//!   [`MAX_TABLE_PAGES`] table pages (a shadow that would grow beyond is
//!   retired and rebuilt).
//! * Teardown: [`ShadowEpts::destroy_all`] (VMXOFF, unload) returns every
//!   share and page; [`ShadowEpts::guests`] lists the shadows for the
//!   invariant checker (`crate::hv::mm::invariants::check_with_shadows`).
//!
//! Owner ids: shadow `i` is guest [`SHADOW_OWNER_BASE`]` + i`, a range
//! below the VM table's handles (`vm_table::HANDLE_OFFSET`), so a shadow
//! never collides with a VM (Documentation/page-states.rst, "Owner ids").
//!
//! The root-mode contract of a retirement (the integration, issue 10):
//! the module's [`MmOps::invalidate`] for a shadow root returns only when
//! no CPU runs a guest on that root any more and none caches anything of
//! it (each CPU that may is forced out of its guest, flushes, and re-reads
//! [`ShadowEpts::root`] under the lock before it re-enters).  Hence the
//! retired table is unreachable and flushed before the first share goes
//! back, and the invalidations the page-table engine asks for while the
//! shares are returned (on a table no CPU can reach) are dropped (a
//! [`HookedMm`] in `retire`): one shootdown per retired shadow, not one
//! per leaf.
//!
//! Design and numbers: Documentation/shadow-ept.rst.  Locking: the caller
//! holds the lock of the host EPT (the one hypervisor lock today).

use crate::hv::error::{Error, Result};
use crate::hv::mm::addr::{Gpa, Hpa, TableKind};
use crate::hv::mm::ept::{level_size, MemType, OwnerId, PageState, PAGE_SIZE};
use crate::hv::mm::mem_protect::{
    guest_revoke_share, guest_runs, host_share_guest_attrs, host_unshare_guest,
    host_unshare_revoked, GuestEpt, HostEpt, Run, VmKind,
};
use crate::hv::mm::pgtable::{
    load, store, Attrs, EptFormat, Fill, HookedMm, MmOps, PteFormat, ADDR_LIMIT, PERM_R, PERM_W,
};
use crate::hv::mm::vm_table::HANDLE_OFFSET;

/// Most shadow EPTs at once.  KVM gives a VM one EPT root per address
/// space (two with SMM, QEMU's default `-M pc`), so 16 keeps eight such
/// VMs mapped at once; a ninth retires the least recently used root (its
/// guest re-faults, correct but slow).  A lookup scans 16 keys.
pub const MAX_SHADOWS: usize = 16;

/// Owner id of shadow 0: shadows are guests `0x800 .. 0x810`, clear of
/// `HYP` (0), `HOST` (1) and the VM table's handles (`0x1000 ..`).
pub const SHADOW_OWNER_BASE: u32 = 0x800;

const _: () = assert!(
    SHADOW_OWNER_BASE > 1 && SHADOW_OWNER_BASE as usize + MAX_SHADOWS <= HANDLE_OFFSET as usize,
    "shadow EPT owner ids must not collide with HYP, HOST or VM handles"
);

/// Most table pages one shadow may hold by default (32 MiB; see
/// [`ShadowEpts::with_table_limit`]): 16 GiB of guest memory
/// mapped with 4 KiB leaves (about 513 table pages per GiB), far more
/// with large leaves.  A shadow that would grow beyond is retired and
/// rebuilt from what the guest touches next.
pub const MAX_TABLE_PAGES: usize = 8192;

/// Largest leaf a shadow maps: level 3 (1 GiB).  The EPT12 walk offers
/// `min(EPT12 leaf, host EPT leaf, this)`.
pub const SHADOW_MAX_LEVEL: u32 = 3;

/// Most leaves a re-validating INVEPT compares ([`ShadowEpts::is_current`]):
/// a shadow with more is taken as stale and retired without the
/// comparison, which bounds the time root mode spends in one INVEPT under
/// the lock (each leaf costs a walk of EPT12, four reads of host memory):
/// 16 MiB of guest memory in 4 KiB leaves, far more in large ones.
pub const REVALIDATE_MAX_LEAVES: u64 = 4096;

/// Most stale leaves a re-validating INVEPT drops one by one, keeping the
/// rest of the shadow (a *partial drop*, [`ShadowEpts::revalidated`]); a
/// shadow with more stale leaves, or with every leaf stale, is retired
/// whole.  Also the most leaves [`ShadowEpts::reclaim_for_host`] drops from
/// one shadow.  The stale leaves are listed in one page taken from the
/// caller's [`MmOps`] for the INVEPT (8 bytes each: 512 fill the page) and
/// given back before it returns; no page, no partial drop.
/// Measured (shadow_ept_bench, Documentation/shadow-ept.rst): a partial
/// drop costs about what a retirement costs per leaf dropped, and every
/// leaf it keeps saves a re-fault (an exit, an EPT12 walk and a share).
pub const PARTIAL_MAX_STALE: usize = 512;

/// EPTP bits 51:12: the address of the EPT PML4 table, the key of a
/// shadow.
pub const EPTP_ROOT_MASK: u64 = 0x000f_ffff_ffff_f000;

/// One leaf of the host's EPT for its guest, resolved and intersected with
/// the host's own EPT: what [`ShadowEpts::install`] maps (piece C's walk
/// produces it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResolvedLeaf {
    /// First guest-physical address of the leaf (aligned to `size`).
    pub gpa: Gpa,
    /// Host-physical address it maps (aligned to `size`).
    pub hpa: Hpa,
    /// 4 KiB, 2 MiB or 1 GiB.
    pub size: u64,
    /// EPT permissions (`PERM_R | PERM_W | PERM_X`), both sides' and-ed.
    pub perms: u8,
    /// EPT memory type of the leaf.
    pub memtype: MemType,
    /// Ignore-PAT bit of the leaf.
    pub ipat: bool,
}

/// What [`ShadowEpts::install`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Installed {
    /// The whole leaf is now mapped (one share).
    Mapped,
    /// Part of the leaf's range was already mapped (another CPU, or an
    /// earlier smaller leaf): only the faulting 4 KiB page was mapped.
    MappedPage,
    /// The faulting address was already mapped as the leaf says (same
    /// host page, at least its permissions, its memory type and
    /// ignore-PAT bit): nothing changed.
    AlreadyPresent,
    /// The faulting address was mapped differently (fewer permissions,
    /// another host page, another memory type or ignore-PAT bit: the host
    /// changed its EPT without INVEPT, which a fault makes visible
    /// architecturally): the old shadow leaf was dropped, its share
    /// returned, and the leaf mapped as for `Mapped` / `MappedPage`.
    Replaced,
}

/// Why [`ShadowEpts::install`] mapped nothing.  Each is "no mapping this
/// time": the caller returns to the guest, which re-faults.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoMapping {
    /// No table page, even after retiring another shadow: the host half
    /// refills the reserve.
    NoMemory,
    /// The page-state machine refused the share: the page is not RAM the
    /// host owns or already shares with guests (hypervisor memory, a page
    /// shared with the hypervisor, a donated page, the module image,
    /// MMIO), or its share count is at its maximum; or the leaf's
    /// permissions (write without read) cannot be mapped.  Any EPT memory
    /// type and ignore-PAT bit can.  The integration reflects this
    /// as for a table page the host does not own
    /// (Documentation/nested.rst).
    Refused,
    /// A leaf that is not a 4 KiB / 2 MiB / 1 GiB range aligned in both
    /// address spaces and holding the faulting address.
    Invalid,
}

/// Counters, for the benchmark and debugging.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Leaves mapped (shares made).
    pub mapped: u64,
    /// Bytes those leaves mapped (the sum of their sizes; leaves retired
    /// or replaced since are not subtracted).
    pub mapped_bytes: u64,
    /// Installs that found the address present.
    pub present: u64,
    /// Installs that replaced a present leaf.
    pub replaced: u64,
    /// Shadows created.
    pub created: u64,
    /// Shadows retired by INVEPT.
    pub invalidated: u64,
    /// Shadows a re-validating INVEPT kept (nothing stale).
    pub kept: u64,
    /// Shadows retired to free memory or a slot, or for growing too large.
    pub evicted: u64,
    /// Flushes of a whole shadow ([`MmOps::invalidate`] calls made here).
    pub flushes: u64,
    /// Engine invalidations dropped on retired (unreachable) tables, or
    /// on a live shadow after its flush (a partial drop), or deferred to
    /// the partial drop's one flush.
    pub quiet: u64,
    /// Re-validating INVEPTs (and reclaims) that dropped only some leaves
    /// of a shadow and kept it ([`PARTIAL_MAX_STALE`]): one flush each.
    pub partial: u64,
    /// Leaves dropped by partial drops (their shares returned).
    pub leaves_dropped: u64,
    /// Shares returned.
    pub unshared: u64,
    /// Host pages the host needed as its own (a VMX region, a page of a
    /// VM entry) that only shadows still shared: the leaves mapping it
    /// dropped ([`ShadowEpts::reclaim_for_host`]).
    pub reclaims: u64,
    /// Returns of a share or frees that failed (always 0; a retired
    /// shadow whose shares could not all be returned stays listed,
    /// unreachable, and is retried).
    pub internal_errors: u64,
}

/// One shadow EPT.
#[derive(Debug)]
struct Shadow {
    /// EPTP12 bits 51:12.
    key: u64,
    guest: GuestEpt,
    /// [`ShadowEpts`]'s clock at the last use.
    last_used: u64,
    /// Leaves mapped since creation.
    leaves: u64,
    /// Table pages held (root included): exact while leaves are only
    /// added; after a replacement an upper bound (a table the old leaf
    /// leaves empty is freed and not subtracted).
    table_pages: usize,
    /// Taken out of use but not all shares returned (an internal error):
    /// never used again, retried by the next retirement.
    stuck: bool,
}

/// The stale leaves one re-validation found in one shadow, for the
/// partial drop that follows ([`ShadowEpts::is_current`], then
/// [`ShadowEpts::revalidated`] under the same lock).  The list lives in a
/// page of the caller's [`MmOps`], taken at the first stale leaf and given
/// back by [`Pending::reset`] (so the set holds no list memory between
/// INVEPTs, and none is ever built on a stack).
#[derive(Debug)]
struct Pending {
    /// The shadow's key (0: nothing pending).
    key: u64,
    /// Leaves listed.
    n: usize,
    /// More than [`PARTIAL_MAX_STALE`] stale leaves, no page for the list,
    /// or the shadow could not be compared: retire it whole.
    whole: bool,
    /// The list: entry `k` is stale leaf `k`'s guest-physical base, its
    /// level (1-3) in bits 1:0 (0: not to be returned).
    page: Option<Hpa>,
}

impl Pending {
    const fn new() -> Self {
        Self {
            key: 0,
            n: 0,
            whole: false,
            page: None,
        }
    }

    /// Gives the list's page back and starts a list for the shadow of
    /// `key` (0: none).
    fn reset<M: MmOps>(&mut self, mm: &mut M, key: u64) {
        if let Some(p) = self.page.take() {
            // Nothing points to it and no CPU uses it: its entries are
            // dropped with it.
            mm.free_unlinked(p);
        }
        self.key = key;
        self.n = 0;
        self.whole = false;
    }

    /// Lists the leaf at `gpa` of `size`; `false` (and `whole`) if the list
    /// is full or has no page.
    fn push<M: MmOps>(&mut self, mm: &mut M, gpa: u64, size: u64) -> bool {
        let level = (1..=SHADOW_MAX_LEVEL).find(|&l| level_size(l) == size);
        if self.n >= PARTIAL_MAX_STALE || level.is_none() {
            self.whole = true;
            return false;
        }
        if self.page.is_none() {
            self.page = mm.zalloc_page();
        }
        let slot = self
            .page
            .and_then(|p| mm.table(p))
            .and_then(|t| t.get(self.n));
        match (slot, level) {
            (Some(slot), Some(l)) => {
                store(slot, gpa | u64::from(l));
                self.n += 1;
                true
            }
            _ => {
                self.whole = true;
                false
            }
        }
    }

    /// Leaf `k`: its guest base and size (`None`: marked not to return).
    fn leaf<M: MmOps>(&self, mm: &M, k: usize) -> Option<(Gpa, u64)> {
        let v = load(mm.table(self.page?)?.get(k)?);
        let level = u32::try_from(v & 3).ok().filter(|&l| l != 0)?;
        Some((Gpa::new(v & !0xfff)?, level_size(level)))
    }

    /// Marks leaf `k` as not to be returned.
    fn forget<M: MmOps>(&self, mm: &M, k: usize) {
        if let Some(slot) = self.page.and_then(|p| mm.table(p)).and_then(|t| t.get(k)) {
            store(slot, 0);
        }
    }
}

/// The set of shadow EPTs.  See the module docs.
#[derive(Debug)]
pub struct ShadowEpts {
    slots: [Option<Shadow>; MAX_SHADOWS],
    /// The stale leaves of the last re-validation or reclaim scan.
    pending: Pending,
    clock: u64,
    /// Most table pages per shadow ([`MAX_TABLE_PAGES`] unless set
    /// otherwise).
    max_table_pages: usize,
    stats: Stats,
}

impl Default for ShadowEpts {
    fn default() -> Self {
        Self::new()
    }
}

/// The one place a leaf is shared host -> shadow: `pages` host pages at
/// `hpa` mapped at `gpa` with `attrs` (the intersected permissions, memory
/// type and ignore-PAT bit), one counted share per page
/// (page-states.rst, "Counted shares").
fn share_leaf<M: MmOps>(
    host: &mut HostEpt,
    guest: &mut GuestEpt,
    mm: &mut M,
    hpa: Hpa,
    gpa: Gpa,
    pages: u64,
    attrs: Attrs,
) -> Result {
    host_share_guest_attrs(host, guest, mm, hpa, gpa, pages, attrs)
}

/// The one place a shadow's share is returned: the run `run` of a
/// retired (or replaced) leaf, one count per page (a host page whose count
/// reaches zero is the host's alone again).
fn unshare_run<M: MmOps>(
    host: &mut HostEpt,
    guest: &mut GuestEpt,
    mm: &mut M,
    run: &Run,
) -> Result {
    host_unshare_guest(host, guest, mm, run.hpa, run.gpa, run.len / PAGE_SIZE)
}

/// The first mapped run of `guest` at or above `from`, if any.
fn first_run<M: MmOps>(guest: &GuestEpt, mm: &mut M, from: u64) -> Result<Option<Run>> {
    if from >= ADDR_LIMIT {
        return Ok(None);
    }
    let mut found = None;
    let start = Gpa::new(from).ok_or(Error::Inval)?;
    let r = guest_runs(guest, mm, start, ADDR_LIMIT - from, |_, run| {
        if run.state == PageState::NoPage {
            return Ok(());
        }
        found = Some(run);
        // Stops the walk: what is after the first run is not needed yet.
        Err(Error::Exist)
    });
    match (r, found) {
        (_, Some(run)) => Ok(Some(run)),
        (Ok(()), None) => Ok(None),
        (Err(e), None) => Err(e),
    }
}

impl ShadowEpts {
    /// An empty set.
    pub const fn new() -> Self {
        Self::with_table_limit(MAX_TABLE_PAGES)
    }

    /// An empty set whose shadows hold at most `pages` table pages each
    /// (at least 4: a 4 KiB leaf needs a root and three tables).
    pub const fn with_table_limit(pages: usize) -> Self {
        Self {
            slots: [const { None }; MAX_SHADOWS],
            pending: Pending::new(),
            clock: 0,
            max_table_pages: if pages < 4 { 4 } else { pages },
            stats: Stats {
                mapped: 0,
                mapped_bytes: 0,
                present: 0,
                replaced: 0,
                created: 0,
                invalidated: 0,
                kept: 0,
                evicted: 0,
                flushes: 0,
                quiet: 0,
                partial: 0,
                leaves_dropped: 0,
                unshared: 0,
                reclaims: 0,
                internal_errors: 0,
            },
        }
    }

    /// The counters.
    pub const fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The key of `eptp12`: its root address.
    pub const fn key(eptp12: u64) -> u64 {
        eptp12 & EPTP_ROOT_MASK
    }

    /// The owner id of slot `i`.
    fn owner(i: usize) -> Option<OwnerId> {
        OwnerId::new(SHADOW_OWNER_BASE + u32::try_from(i).ok()?)
    }

    fn find(&self, key: u64) -> Option<usize> {
        self.slots
            .iter()
            .position(|s| s.as_ref().is_some_and(|s| !s.stuck && s.key == key))
    }

    /// The root of the shadow EPT of `eptp12`, for the EPT pointer of
    /// vmcs02 (`None`: no shadow yet, see [`ShadowEpts::ensure`]).  The
    /// integration re-reads it before every entry into the host's guest:
    /// an INVEPT retires a root.
    pub fn root(&self, eptp12: u64) -> Option<Hpa> {
        let i = self.find(Self::key(eptp12))?;
        let s = self.slots.get(i)?.as_ref()?;
        Some(s.guest.pgt().root())
    }

    /// Number of shadows (stuck ones included).
    pub fn len(&self) -> usize {
        self.slots.iter().filter(|s| s.is_some()).count()
    }

    /// Whether there is no shadow.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Leaves mapped in the shadow of `eptp12` (0 if there is none).
    pub fn leaves(&self, eptp12: u64) -> u64 {
        self.shadow(eptp12).map_or(0, |s| s.leaves)
    }

    /// Table pages of the shadow of `eptp12`, root included (0 if none).
    pub fn table_pages(&self, eptp12: u64) -> usize {
        self.shadow(eptp12).map_or(0, |s| s.table_pages)
    }

    /// The shadow EPT of `eptp12`, as a guest (walks, tests).
    pub fn guest(&self, eptp12: u64) -> Option<&GuestEpt> {
        self.shadow(eptp12).map(|s| &s.guest)
    }

    fn shadow(&self, eptp12: u64) -> Option<&Shadow> {
        let i = self.find(Self::key(eptp12))?;
        self.slots.get(i)?.as_ref()
    }

    /// Every shadow EPT as a guest, for the invariant checker.
    pub fn guests(&self) -> impl Iterator<Item = &GuestEpt> + Clone {
        self.slots
            .iter()
            .filter_map(|s| s.as_ref().map(|s| &s.guest))
    }

    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    /// The least recently used shadow other than `keep` (stuck ones
    /// first).
    fn lru_other(&self, keep: Option<usize>) -> Option<usize> {
        let mut best: Option<(usize, (bool, u64))> = None;
        for (i, s) in self.slots.iter().enumerate() {
            let Some(s) = s else { continue };
            if Some(i) == keep {
                continue;
            }
            let rank = (!s.stuck, s.last_used);
            match best {
                Some((_, b)) if b <= rank => {}
                _ => best = Some((i, rank)),
            }
        }
        best.map(|(i, _)| i)
    }

    /// Retires the shadow in slot `i`: out of the set, flushed from every
    /// CPU, then its shares returned and its pages freed.  Returns whether
    /// it is gone (else it stays, stuck, with what could not be returned).
    fn retire<M: MmOps>(&mut self, host: &mut HostEpt, mm: &mut M, i: usize) -> bool {
        let Some(slot) = self.slots.get_mut(i) else {
            return true;
        };
        let Some(mut s) = slot.take() else {
            return true;
        };
        let root = s.guest.pgt().root();
        // No entry uses the root any more (`root` no longer finds it);
        // after this no CPU runs on it or caches anything of it.
        mm.invalidate(TableKind::GuestEpt, root, 0, ADDR_LIMIT);
        self.stats.flushes += 1;
        // The retired table's own invalidations are dropped (module docs):
        // no CPU can reach it and it was flushed whole just above.
        let mut dropped = 0;
        let mut rmm = HookedMm::new(&mut *mm, |mm: &mut M, kind, r, addr, size| {
            if kind == TableKind::GuestEpt && r == root {
                dropped += 1;
            } else {
                mm.invalidate(kind, r, addr, size)
            }
        });
        let mut ok = true;
        let mut from = 0;
        loop {
            match first_run(&s.guest, &mut rmm, from) {
                Ok(Some(run)) => {
                    from = run.gpa.raw() + run.len;
                    if unshare_run(host, &mut s.guest, &mut rmm, &run).is_ok() {
                        self.stats.unshared += 1;
                    } else {
                        ok = false;
                    }
                }
                Ok(None) => break,
                Err(_) => {
                    ok = false;
                    break;
                }
            }
        }
        self.stats.quiet += dropped;
        if !ok {
            self.stats.internal_errors += 1;
            s.stuck = true;
            s.last_used = 0;
            if let Some(slot) = self.slots.get_mut(i) {
                *slot = Some(s);
            }
            return false;
        }
        if s.guest.destroy(mm).is_err() {
            self.stats.internal_errors += 1;
        }
        true
    }

    /// Retires the least recently used shadow other than `keep`; whether
    /// one was retired.
    fn evict_other<M: MmOps>(
        &mut self,
        host: &mut HostEpt,
        mm: &mut M,
        keep: Option<usize>,
    ) -> bool {
        match self.lru_other(keep) {
            Some(i) => {
                self.stats.evicted += 1;
                self.retire(host, mm, i)
            }
            None => false,
        }
    }

    /// The slot of the shadow of `key`, created if needed (a free slot, or
    /// the least recently used shadow's; a root page, retiring another
    /// shadow once if there is none).
    fn find_or_create<M: MmOps>(
        &mut self,
        host: &mut HostEpt,
        mm: &mut M,
        key: u64,
    ) -> core::result::Result<usize, NoMapping> {
        let now = self.tick();
        if let Some(i) = self.find(key) {
            if let Some(s) = self.slots.get_mut(i).and_then(Option::as_mut) {
                s.last_used = now;
            }
            return Ok(i);
        }
        let free = match self.slots.iter().position(Option::is_none) {
            Some(i) => i,
            None => {
                let i = self.lru_other(None).ok_or(NoMapping::NoMemory)?;
                self.stats.evicted += 1;
                if !self.retire(host, mm, i) {
                    return Err(NoMapping::NoMemory);
                }
                i
            }
        };
        let id = Self::owner(free).ok_or(NoMapping::Invalid)?;
        let guest = match GuestEpt::new(mm, id, VmKind::Normal, SHADOW_MAX_LEVEL) {
            Ok(g) => g,
            Err(_) => {
                if !self.evict_other(host, mm, Some(free)) {
                    return Err(NoMapping::NoMemory);
                }
                GuestEpt::new(mm, id, VmKind::Normal, SHADOW_MAX_LEVEL)
                    .map_err(|_| NoMapping::NoMemory)?
            }
        };
        let slot = self.slots.get_mut(free).ok_or(NoMapping::Invalid)?;
        // INVARIANT: a new shadow is an empty table with its root only.
        *slot = Some(Shadow {
            key,
            guest,
            last_used: now,
            leaves: 0,
            table_pages: 1,
            stuck: false,
        });
        self.stats.created += 1;
        Ok(free)
    }

    /// The root of the shadow of `eptp12`, created if there is none yet
    /// (VM entry into the host's guest).  Fails only for lack of memory,
    /// after retiring another shadow once.
    pub fn ensure<M: MmOps>(
        &mut self,
        host: &mut HostEpt,
        mm: &mut M,
        eptp12: u64,
    ) -> core::result::Result<Hpa, NoMapping> {
        let i = self.find_or_create(host, mm, Self::key(eptp12))?;
        self.slots
            .get(i)
            .and_then(Option::as_ref)
            .map(|s| s.guest.pgt().root())
            .ok_or(NoMapping::Invalid)
    }

    /// Maps `leaf` into the shadow of `eptp12` for a fault at `gpa`, if
    /// absent (see [`Installed`] and [`NoMapping`]).  The shadow is created
    /// if needed.
    pub fn install<M: MmOps>(
        &mut self,
        host: &mut HostEpt,
        mm: &mut M,
        eptp12: u64,
        gpa: Gpa,
        leaf: &ResolvedLeaf,
    ) -> core::result::Result<Installed, NoMapping> {
        let size = leaf.size;
        let sizes_ok = (1..=SHADOW_MAX_LEVEL).any(|l| level_size(l) == size);
        let base = leaf.gpa.raw();
        if !sizes_ok
            || base & (size - 1) != 0
            || leaf.hpa.raw() & (size - 1) != 0
            || gpa.raw() < base
            || gpa.raw() - base >= size
        {
            return Err(NoMapping::Invalid);
        }
        let mut i = self.find_or_create(host, mm, Self::key(eptp12))?;
        let page = gpa.page_down();
        let walk = |e: Error| match e {
            Error::NoMem => NoMapping::NoMemory,
            _ => NoMapping::Invalid,
        };
        let cur = self.slot(i)?.guest.pgt().lookup(mm, page).map_err(walk)?;
        let mut replaced = false;
        if cur.entry != 0 {
            let size_cur = level_size(cur.level);
            let at_cur = EptFormat::addr(cur.entry);
            let a = EptFormat::attrs(cur.entry);
            let off = page.raw() & (size_cur - 1);
            let want = leaf.hpa.raw() + (page.raw() - base);
            if at_cur.raw() + off == want
                && a.perms & leaf.perms == leaf.perms
                && a.memtype == leaf.memtype
                && a.ipat == leaf.ipat
            {
                self.stats.present += 1;
                return Ok(Installed::AlreadyPresent);
            }
            // The walk gives this page something the shadow does not (the
            // host raised permissions or remapped without INVEPT, which
            // the SDM allows: a fault re-walks).  The old leaf goes, its
            // share back, then the new one is mapped.
            let run = Run {
                gpa: Gpa::new(page.raw() & !(size_cur - 1)).ok_or(NoMapping::Invalid)?,
                hpa: at_cur,
                len: size_cur,
                state: PageState::SharedBorrowed,
            };
            let s = self
                .slots
                .get_mut(i)
                .and_then(Option::as_mut)
                .ok_or(NoMapping::Invalid)?;
            if unshare_run(host, &mut s.guest, mm, &run).is_err() {
                self.stats.internal_errors += 1;
                return Err(NoMapping::Refused);
            }
            s.leaves = s.leaves.saturating_sub(1);
            self.stats.unshared += 1;
            self.stats.replaced += 1;
            replaced = true;
        }
        let s = self.slot(i)?;
        // The whole leaf if nothing of its range is mapped, else only the
        // faulting page.
        let mut empty = true;
        s.guest
            .pgt()
            .for_each_leaf(mm, leaf.gpa, size, |_, _, e| {
                empty &= e == 0;
                Ok(())
            })
            .map_err(walk)?;
        let (at, hpa, len, what) = if empty {
            (leaf.gpa, leaf.hpa, size, Installed::Mapped)
        } else {
            let off = page.raw() - base;
            (
                page,
                leaf.hpa.wrapping_add(off),
                PAGE_SIZE,
                Installed::MappedPage,
            )
        };
        let what = if replaced { Installed::Replaced } else { what };
        let attrs = Attrs {
            perms: leaf.perms,
            memtype: leaf.memtype,
            state: PageState::SharedBorrowed,
            ipat: leaf.ipat,
        };
        let fill = Fill::Map { pa: hpa, attrs };
        let need = |s: &Shadow, mm: &mut M| s.guest.pgt().pages_needed(mm, at, len, fill);
        let mut pages = need(self.slot(i)?, mm).map_err(|_| NoMapping::Invalid)?;
        if self.slot(i)?.table_pages + pages > self.max_table_pages {
            // Too large: start this shadow over.
            self.stats.evicted += 1;
            if !self.retire(host, mm, i) {
                return Err(NoMapping::NoMemory);
            }
            i = self.find_or_create(host, mm, Self::key(eptp12))?;
            pages = need(self.slot(i)?, mm).map_err(|_| NoMapping::Invalid)?;
        }
        let mut retried = false;
        loop {
            let s = self
                .slots
                .get_mut(i)
                .and_then(Option::as_mut)
                .ok_or(NoMapping::Invalid)?;
            let r = share_leaf(host, &mut s.guest, mm, hpa, at, len / PAGE_SIZE, attrs);
            match r {
                Ok(()) => {
                    s.leaves += 1;
                    s.table_pages += pages;
                    self.stats.mapped += 1;
                    self.stats.mapped_bytes += len;
                    return Ok(what);
                }
                Err(Error::NoMem) if !retried => {
                    retried = true;
                    if !self.evict_other(host, mm, Some(i)) {
                        return Err(NoMapping::NoMemory);
                    }
                }
                Err(Error::NoMem) => return Err(NoMapping::NoMemory),
                Err(_) => return Err(NoMapping::Refused),
            }
        }
    }

    fn slot(&self, i: usize) -> core::result::Result<&Shadow, NoMapping> {
        self.slots
            .get(i)
            .and_then(Option::as_ref)
            .ok_or(NoMapping::Invalid)
    }

    /// INVEPT single-context for `eptp12`: retires its shadow if it maps
    /// anything (one whole-shadow flush, then its shares go back); other
    /// shadows are untouched.  Returns the number of shadows retired.
    pub fn invalidate_single<M: MmOps>(
        &mut self,
        host: &mut HostEpt,
        mm: &mut M,
        eptp12: u64,
    ) -> usize {
        let Some(i) = self.find(Self::key(eptp12)) else {
            return 0;
        };
        self.invalidate_slot(host, mm, i)
    }

    /// INVEPT global: retires every shadow that maps anything.  Returns
    /// the number retired.
    pub fn invalidate_all<M: MmOps>(&mut self, host: &mut HostEpt, mm: &mut M) -> usize {
        let mut n = 0;
        for i in 0..MAX_SHADOWS {
            n += self.invalidate_slot(host, mm, i);
        }
        n
    }

    /// INVEPT single-context for `eptp12`, re-validating first: if every
    /// leaf of its shadow is still what the host's EPT gives now
    /// (`resolve(mm, gpa)`: the EPT12 walk and intersection for the leaf's
    /// first address; see [`ShadowEpts::is_current`]), nothing in it is
    /// stale and it is kept, with no flush; otherwise it is retired as by
    /// [`ShadowEpts::invalidate_single`].  Returns the number retired.
    /// (The two steps apart, [`ShadowEpts::is_current`] then
    /// [`ShadowEpts::revalidated`], for a caller whose resolver borrows
    /// the host EPT.)
    pub fn invalidate_single_checked<M: MmOps, R: FnMut(&mut M, Gpa) -> Option<ResolvedLeaf>>(
        &mut self,
        host: &mut HostEpt,
        mm: &mut M,
        eptp12: u64,
        resolve: &mut R,
    ) -> usize {
        match self.is_current(mm, eptp12, resolve) {
            Some(current) => self.revalidated(host, mm, eptp12, current),
            None => 0,
        }
    }

    /// INVEPT global, re-validating each shadow as
    /// [`ShadowEpts::invalidate_single_checked`] does (`resolve` is called
    /// with each shadow's key, [`ShadowEpts::key`], which is a valid
    /// EPTP12 root).  Returns the number retired.
    pub fn invalidate_all_checked<M: MmOps, R: FnMut(&mut M, u64, Gpa) -> Option<ResolvedLeaf>>(
        &mut self,
        host: &mut HostEpt,
        mm: &mut M,
        resolve: &mut R,
    ) -> usize {
        let mut n = 0;
        for &key in self.keys().iter().flatten() {
            n += self
                .invalidate_single_checked(host, mm, key, &mut |m: &mut M, g| resolve(m, key, g));
        }
        n
    }

    /// The keys ([`ShadowEpts::key`]) of the shadows in the set, for a
    /// global INVEPT done one shadow at a time (each key is a valid
    /// EPTP12 root address; stuck shadows are not listed).
    pub fn keys(&self) -> [Option<u64>; MAX_SHADOWS] {
        let mut k = [None; MAX_SHADOWS];
        for (o, s) in k.iter_mut().zip(self.slots.iter()) {
            *o = s.as_ref().filter(|s| !s.stuck).map(|s| s.key);
        }
        k
    }

    /// The second step of a re-validating INVEPT single-context for
    /// `eptp12`: `current` is what [`ShadowEpts::is_current`] answered.
    /// A current shadow is kept (counted in [`Stats::kept`]: no store, no
    /// flush).  A shadow with at most [`PARTIAL_MAX_STALE`] stale leaves,
    /// not all of its leaves, loses only those (a *partial drop*, counted
    /// in [`Stats::partial`]; see `drop_pending` for the
    /// order); any other stale shadow is retired as by
    /// [`ShadowEpts::invalidate_single`].  Returns the number retired.
    /// Nothing may change the set between the two steps (the caller holds
    /// the lock throughout).
    pub fn revalidated<M: MmOps>(
        &mut self,
        host: &mut HostEpt,
        mm: &mut M,
        eptp12: u64,
        current: bool,
    ) -> usize {
        let key = Self::key(eptp12);
        let Some(i) = self.find(key) else {
            self.pending.reset(mm, 0);
            return 0;
        };
        let n = if current {
            self.stats.kept += 1;
            0
        } else if self.partial_ok(i) && {
            self.stats.partial += 1;
            self.drop_pending(host, mm, i)
        } {
            0
        } else {
            self.invalidate_slot(host, mm, i)
        };
        self.pending.reset(mm, 0);
        n
    }

    /// The first step of a re-validating INVEPT: whether every leaf of the
    /// shadow of `eptp12` still translates as the host's EPT does now
    /// (`None`: there is no such shadow).  `resolve(mm, gpa)` at the
    /// leaf's first address must give a leaf that covers the shadow
    /// leaf's whole range with the same host addresses, memory type and
    /// ignore-PAT bit, and at least its permissions (more is fine: the
    /// shadow gives a subset, and a fault upgrades it).  A leaf of which
    /// that cannot be said is stale, and so is a stuck shadow and one with
    /// more than [`REVALIDATE_MAX_LEAVES`] leaves.  Reads the shadow only
    /// (the resolver gets the `MmOps` for its own reads) and lists the
    /// stale leaves for [`ShadowEpts::revalidated`] (up to
    /// [`PARTIAL_MAX_STALE`]: the walk stops at the next one).
    pub fn is_current<M: MmOps, R: FnMut(&mut M, Gpa) -> Option<ResolvedLeaf>>(
        &mut self,
        mm: &mut M,
        eptp12: u64,
        resolve: &mut R,
    ) -> Option<bool> {
        let i = self.find(Self::key(eptp12))?;
        let stale = self.scan(mm, i, true, |mm, g, size, e| {
            let a = EptFormat::attrs(e);
            let h = EptFormat::addr(e).raw();
            let ok = Gpa::new(g)
                .and_then(|gpa| resolve(mm, gpa))
                .is_some_and(|r| {
                    let (rg, rh) = (r.gpa.raw(), r.hpa.raw());
                    rg <= g
                        && g + size <= rg.saturating_add(r.size)
                        && rh.wrapping_add(g - rg) == h
                        && a.perms & r.perms == a.perms
                        && a.memtype == r.memtype
                        && a.ipat == r.ipat
                });
            !ok
        });
        Some(!stale)
    }

    /// Lists in `pending` the leaves of shadow `i` that are `stale(mm,
    /// gpa, size, entry)`, up to [`PARTIAL_MAX_STALE`] (one more makes the
    /// list `whole`, and so does a stuck shadow, one with more than
    /// [`REVALIDATE_MAX_LEAVES`] leaves, which is not walked, and a walk
    /// that fails).  With `dead_early`, the first two leaves walked both
    /// stale also make it `whole` and end the walk: a shadow whose EPT12
    /// root KVM gave up (every memslot deletion makes KVM move to new
    /// roots) is stale as a whole, and is retired without a walk of EPT12
    /// for each of its leaves.  Returns whether anything is stale.
    fn scan<M: MmOps, P: FnMut(&mut M, u64, u64, u64) -> bool>(
        &mut self,
        mm: &mut M,
        i: usize,
        dead_early: bool,
        mut stale: P,
    ) -> bool {
        let Self { slots, pending, .. } = self;
        let Some(s) = slots.get(i).and_then(Option::as_ref) else {
            return false;
        };
        pending.reset(mm, s.key);
        if s.stuck || s.leaves > REVALIDATE_MAX_LEAVES {
            pending.whole = true;
            return true;
        }
        let mut seen_current = false;
        let r = s
            .guest
            .pgt()
            .for_each_leaf(mm, Gpa::ZERO, ADDR_LIMIT, |mm, ctx, e| {
                if e == 0 {
                    return Ok(());
                }
                if !stale(mm, ctx.addr, ctx.size(), e) {
                    seen_current = true;
                    return Ok(());
                }
                if dead_early && !seen_current && pending.n == 1 {
                    // Two stale leaves first: retired whole.
                    pending.whole = true;
                    return Err(Error::Exist);
                }
                if pending.push(mm, ctx.addr, ctx.size()) {
                    Ok(())
                } else {
                    // Stops the walk: the shadow is retired whole.
                    Err(Error::Exist)
                }
            });
        if r.is_err() {
            pending.whole = true;
        }
        pending.whole || pending.n != 0
    }

    /// Whether the leaves `pending` lists for shadow `i` can be dropped
    /// alone: a list of it, not `whole`, not every leaf of it.
    fn partial_ok(&self, i: usize) -> bool {
        let p = &self.pending;
        self.slots.get(i).and_then(Option::as_ref).is_some_and(|s| {
            !s.stuck
                && s.key == p.key
                && !p.whole
                && p.n != 0
                && u64::try_from(p.n).is_ok_and(|n| n < s.leaves)
        })
    }

    /// Drops the leaves `pending` lists from the live shadow `i`, keeping
    /// the rest, in the order a retirement keeps: (1) each leaf is revoked
    /// ([`guest_revoke_share`]: not present, its share still held), the
    /// engine's invalidations of the live table deferred (counted in
    /// [`Stats::quiet`]); (2) one [`MmOps::invalidate`] of the shadow's
    /// whole range, which in the module returns when no CPU caches
    /// anything of it and none runs on it until the lock is released;
    /// (3) only then each share goes back ([`host_unshare_revoked`]) and
    /// table pages left empty are freed (no CPU may walk them).  So no
    /// share goes back while a CPU may still reach the page through the
    /// shadow.  Returns whether every listed leaf was dropped; else (an
    /// internal error) the caller retires the shadow whole.
    fn drop_pending<M: MmOps>(&mut self, host: &mut HostEpt, mm: &mut M, i: usize) -> bool {
        let Self {
            slots,
            pending,
            stats,
            ..
        } = self;
        let Some(s) = slots.get_mut(i).and_then(Option::as_mut) else {
            return false;
        };
        let root = s.guest.pgt().root();
        let mut ok = true;
        let mut quiet = 0;
        let mut hook = |mm: &mut M, kind: TableKind, r: Hpa, addr: u64, size: u64| {
            if kind == TableKind::GuestEpt && r == root {
                quiet += 1;
            } else {
                mm.invalidate(kind, r, addr, size)
            }
        };
        // 1. Revoke, the invalidations deferred to 2.
        {
            let mut hmm = HookedMm::new(&mut *mm, &mut hook);
            for k in 0..pending.n {
                let revoked = pending.leaf(&hmm, k).is_some_and(|(gpa, size)| {
                    guest_revoke_share(&mut s.guest, &mut hmm, gpa, size).is_ok()
                });
                if !revoked {
                    // Not revoked (an internal error): nothing to return.
                    ok = false;
                    pending.forget(&hmm, k);
                }
            }
        }
        // 2. One flush of the whole shadow.
        mm.invalidate(TableKind::GuestEpt, root, 0, ADDR_LIMIT);
        stats.flushes += 1;
        // 3. Return the shares; the engine's invalidations are covered by
        // 2 (no CPU runs on the shadow until the lock is released).
        {
            let mut hmm = HookedMm::new(&mut *mm, &mut hook);
            for k in 0..pending.n {
                let Some((gpa, size)) = pending.leaf(&hmm, k) else {
                    continue;
                };
                if host_unshare_revoked(host, &mut s.guest, &mut hmm, gpa, size).is_ok() {
                    stats.unshared += 1;
                    stats.leaves_dropped += 1;
                    s.leaves = s.leaves.saturating_sub(1);
                } else {
                    ok = false;
                }
            }
        }
        stats.quiet += quiet;
        if let Ok(n) = s.guest.pgt().table_pages(mm) {
            s.table_pages = n;
        }
        pending.reset(mm, 0);
        if !ok {
            stats.internal_errors += 1;
        }
        ok
    }

    fn invalidate_slot<M: MmOps>(&mut self, host: &mut HostEpt, mm: &mut M, i: usize) -> usize {
        // A shadow that maps nothing has nothing stale (an empty table
        // caches no translation); a stuck one is retried.
        let busy = self
            .slots
            .get(i)
            .and_then(Option::as_ref)
            .is_some_and(|s| s.leaves != 0 || s.stuck);
        if !busy {
            return 0;
        }
        self.stats.invalidated += 1;
        usize::from(self.retire(host, mm, i))
    }

    /// The host needs the page of `page` as its own (exclusively owned,
    /// readable and writable: a VMXON or VMCS region, a page a VM entry
    /// checks or pins) and finds it `SHARED_OWNED`.  A dead VM's shadow
    /// keeps its shares until an INVEPT names it, and KVM issues none when
    /// it frees a VM, so the kernel may reuse such a page for anything.
    /// If the page is shared with guests (a non-zero share count: not
    /// [`host_share_hyp`]'s zero-count state) and some shadow maps
    /// anything, each shadow's leaves are scanned for the page (no reverse
    /// map) and the leaves mapping it dropped as by a partial drop
    /// (`drop_pending`: revoked, flushed from every CPU, then the shares
    /// returned); a shadow that maps nothing of it is untouched; one that
    /// maps only it, or more than [`PARTIAL_MAX_STALE`] times, or cannot be
    /// scanned (more than [`REVALIDATE_MAX_LEAVES`] leaves, stuck) is
    /// retired.  Returns whether the page is now the host's own; `false`
    /// without a change for a page in any other state (hypervisor memory,
    /// donated, shared with the hypervisor, not RAM), and for a page still
    /// shared afterwards (a protected-VM API share: the caller refuses
    /// it).
    ///
    /// [`host_share_hyp`]: crate::hv::mm::mem_protect::host_share_hyp
    pub fn reclaim_for_host<M: MmOps>(
        &mut self,
        host: &mut HostEpt,
        mm: &mut M,
        page: Hpa,
    ) -> bool {
        if !host.ram().contains(page.raw(), PAGE_SIZE) {
            return false;
        }
        let owned = |host: &HostEpt, mm: &mut M| {
            host.pgt().lookup(mm, page).ok().map(|l| {
                let a = EptFormat::attrs(l.entry);
                let rw = a.perms & (PERM_R | PERM_W) == PERM_R | PERM_W;
                (EptFormat::is_present(l.entry), a.state, rw)
            })
        };
        match owned(host, mm) {
            Some((true, PageState::Owned, true)) => return true,
            Some((true, PageState::SharedOwned, _)) => {}
            _ => return false,
        }
        if !matches!(host.share_counts().get(mm, page), Ok(n) if n > 0) {
            return false;
        }
        if !self
            .slots
            .iter()
            .flatten()
            .any(|s| s.leaves != 0 || s.stuck)
        {
            return false;
        }
        self.stats.reclaims += 1;
        let p = page.raw();
        for i in 0..MAX_SHADOWS {
            let maps = self.scan(mm, i, false, |_, _, size, e| {
                let h = EptFormat::addr(e).raw();
                h <= p && p - h < size
            });
            if !maps {
                continue;
            }
            let dropped = self.partial_ok(i) && {
                self.stats.partial += 1;
                self.drop_pending(host, mm, i)
            };
            if !dropped {
                self.invalidate_slot(host, mm, i);
            }
            self.pending.reset(mm, 0);
        }
        matches!(owned(host, mm), Some((true, PageState::Owned, true)))
    }

    /// Retires every shadow (VMXOFF on the last CPU, unload): every share
    /// returned, every table page freed.  [`Error::Fault`] if a shadow
    /// could not give everything back (it stays listed for the invariant
    /// checker; an internal error).
    pub fn destroy_all<M: MmOps>(&mut self, host: &mut HostEpt, mm: &mut M) -> Result {
        self.pending.reset(mm, 0);
        let mut ok = true;
        for i in 0..MAX_SHADOWS {
            ok &= self.retire(host, mm, i);
        }
        if ok {
            Ok(())
        } else {
            Err(Error::Fault)
        }
    }
}

#[cfg(test)]
#[path = "shadow_ept_tests.rs"]
mod tests;
