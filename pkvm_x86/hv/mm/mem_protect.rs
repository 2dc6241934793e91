// SPDX-License-Identifier: GPL-2.0

//! Page ownership: the page-state transitions between the host, the
//! hypervisor and guests.
//!
//! Owns the three kinds of tables that record who may touch which page and
//! every change of ownership between them:
//!
//! * [`HostEpt`]: the host's EPT, identity mapped (gpa == hpa).  A present
//!   entry gives the host access and carries its page state (`OWNED`,
//!   `SHARED_OWNED` or `SHARED_BORROWED`); a non-present entry records the
//!   owner in bits 31:12 (seed 000).  The owner `HYP` (0) is the all-zero
//!   entry, so everything the host EPT does not map, from the hypervisor's
//!   own memory to holes in the physical address space, belongs to the
//!   hypervisor and costs no table pages.
//! * [`HypPgt`]: the hypervisor's own page table (IA-32e format), mapping
//!   `pa + va_offset` to `pa` for pages donated to or shared with it.
//! * [`GuestEpt`]: a guest's shadow EPT, mapping guest gpa to hpa.  Guests
//!   never carry owner annotations: a non-present guest entry is zero,
//!   except a *revoked* leaf between [`guest_revoke_share`] and
//!   [`host_unshare_revoked`] (within one call of the caller, under the
//!   lock).
//!
//! Addresses are typed (`hv::mm::addr`): the host EPT's input and every
//! table's output are [`Hpa`]s, a shadow EPT's input a [`Gpa`], the
//! hypervisor table's input a [`HypVa`].  The only way from a `Gpa` to an
//! `Hpa` is a walk of the guest's table ([`guest_runs`]).
//!
//! # Transitions
//!
//! Each transition is a *check* that reads the tables and returns a
//! [`Plan`] (or an [`Error`], changing nothing), then an *apply* that cannot
//! fail: the check counts the table pages the apply will need in every
//! table involved, and the public entry points reserve them in a
//! [`PageCache`] before applying (an allocation failure there is an
//! `ENOMEM` with nothing changed).  Multi-page ranges are all or nothing.
//!
//! | function | initiator | completer |
//! |---|---|---|
//! | [`host_donate_hyp`] | host `OWNED -> NOPAGE(HYP)` | hyp `NOPAGE -> OWNED` |
//! | [`hyp_donate_host`] | hyp `OWNED -> NOPAGE` | host `NOPAGE(HYP) -> OWNED` |
//! | [`host_share_hyp`] | host `OWNED -> SHARED_OWNED` | hyp `NOPAGE -> SHARED_BORROWED` |
//! | [`host_unshare_hyp`] | host `SHARED_OWNED -> OWNED` | hyp `SHARED_BORROWED -> NOPAGE` |
//! | [`host_share_guest`] (normal VM) | host `OWNED -> SHARED_OWNED` (count 1) or guest-shared `SHARED_OWNED` (count + 1) | guest `NOPAGE -> SHARED_BORROWED` |
//! | [`host_unshare_guest`] | host `SHARED_OWNED`, count - 1, `-> OWNED` at 0 | guest `SHARED_BORROWED -> NOPAGE` |
//! | [`guest_revoke_share`] (flush deferred) | guest `SHARED_BORROWED -> revoked` (not present, address kept) | host unchanged |
//! | [`host_unshare_revoked`] (after the flush) | host `SHARED_OWNED`, count - 1, `-> OWNED` at 0 | guest `revoked -> NOPAGE` |
//! | [`host_donate_guest`] (protected VM) | host `OWNED -> NOPAGE(guest)` | guest `NOPAGE -> OWNED` |
//! | [`guest_share_host`] (protected VM) | guest `OWNED -> SHARED_OWNED` | host `NOPAGE(guest) -> SHARED_BORROWED` |
//! | [`guest_unshare_host`] | guest `SHARED_OWNED -> OWNED` | host `SHARED_BORROWED -> NOPAGE(guest)` |
//! | [`guest_reclaim`] (dying VM) | guest `OWNED`, `SHARED_OWNED` or `SHARED_BORROWED -> NOPAGE` | host `NOPAGE(guest)`, `SHARED_BORROWED -> OWNED`, pages the guest owned zeroed first; `SHARED_OWNED` count - 1, `-> OWNED` at 0 |
//!
//! # Counted shares
//!
//! Shares with normal VMs are counted (`hv::mm::share_count`, kept in
//! the [`HostEpt`]): one host page may back several guests and several
//! guest addresses of one guest (KSM, the zero page, the APIC-access
//! page), one count per 4 KiB guest leaf page; the host entry is
//! `SHARED_OWNED` while the count is non-zero and goes back to `OWNED`
//! when the last mapping goes.  A `SHARED_OWNED` page with count 0 is
//! shared with the hypervisor: it cannot be shared with guests, and a page
//! shared with guests cannot be shared with the hypervisor.  A host
//! donation ([`host_donate_hyp`], [`host_donate_guest`]) of a page with a
//! non-zero count is [`Error::Busy`] (there is no reverse map to revoke
//! the guests' mappings).
//!
//! A page not in the required state in either table gives [`Error::Perm`];
//! a host donation of a page guests still map gives [`Error::Busy`];
//! a bad range (empty, unaligned, overflowing, beyond 48 bits) or bad
//! permissions give [`Error::Inval`]; so does a host-physical range the
//! host passes that is not all RAM ([`RamMap`], checked before any table
//! is read: only RAM ever changes hands, never MMIO); a share to a protected VM, a donation
//! to a normal VM, any new mapping into a dying VM, or a reclaim from a VM
//! that is not dying give [`Error::Perm`].
//!
//! The module image that root mode maps (text, rodata, ro_after_init) is
//! [`crate::hv::mm::ept::PINNED`] in the host EPT (present, state
//! `NOPAGE`): no transition accepts that state, so every transition on it
//! gives [`Error::Perm`].
//!
//! # Locking
//!
//! The pure core takes no lock: every transition takes `&mut` to each table
//! it changes, so the borrow checker proves the caller holds them
//! exclusively.  In the running hypervisor one spinlock
//! (`crate::hyp::lock::SpinLock`, held by `crate::hyp::global::HypGlobal`)
//! covers all of them today.  When it is split into per-table and per-VM
//! locks, they are taken in this order, never the reverse: the VM table,
//! the host EPT, a guest's table (one guest at a time), the hypervisor's
//! page table, and the table-page allocator behind [`MmOps`] innermost
//! (Documentation/page-states.rst, "lock order").

pub use crate::hv::error::{Error, Result};
pub use crate::hv::mm::addr::{Gpa, Hpa, HypVa, InputAddr};
use crate::hv::mm::ept::{OwnerId, PageState, PAGE_SIZE, PINNED};
use crate::hv::mm::pgtable::{
    check_range, Attrs, EptFormat, Fill, HypFormat, MmOps, PageCache, PgTable, PteFormat, WalkCtx,
    ADDR_LIMIT, PERM_R, PERM_RWX, PERM_W,
};
use crate::hv::mm::ram::RamMap;
use crate::hv::mm::share_count::{ShareCounts, MAX_COUNT};

/// Attributes of a page the host owns or shares: RWX, write-back.
pub const HOST_OWNED: Attrs = Attrs::wb(PERM_RWX, PageState::Owned);
/// Attributes of a page a guest shares back with the host.
pub const HOST_BORROWED: Attrs = Attrs::wb(PERM_RWX, PageState::SharedBorrowed);
/// Attributes of a page donated to the hypervisor: RW, no execute.
pub const HYP_OWNED: Attrs = Attrs::wb(PERM_R | PERM_W, PageState::Owned);
/// Attributes of a page the host shares with the hypervisor.
pub const HYP_BORROWED: Attrs = Attrs::wb(PERM_R | PERM_W, PageState::SharedBorrowed);

/// The host's identity-mapped EPT, the ownership map of all memory.
#[derive(Debug)]
pub struct HostEpt {
    pgt: PgTable<EptFormat, Hpa>,
    ram: RamMap,
    counts: ShareCounts,
    internal_errors: u64,
}

impl HostEpt {
    /// An empty host EPT: everything owned by the hypervisor until
    /// [`HostEpt::map_memory`] gives it to the host.  `ram` is the RAM
    /// recorded at load: only pages inside it can ever change hands.
    pub fn new<M: MmOps>(mm: &mut M, max_block_level: u32, ram: RamMap) -> Result<Self> {
        Ok(Self {
            pgt: PgTable::new(mm, max_block_level)?,
            ram,
            counts: ShareCounts::new(),
            internal_errors: 0,
        })
    }

    /// The RAM map the transitions check host ranges against.
    pub const fn ram(&self) -> &RamMap {
        &self.ram
    }

    /// How many guest leaf pages map each host page the host shares with
    /// normal VMs ([`host_share_guest`]); zero for every other page.
    pub const fn share_counts(&self) -> &ShareCounts {
        &self.counts
    }

    /// The underlying table (root for the EPT pointer, walks, statistics).
    pub const fn pgt(&self) -> &PgTable<EptFormat, Hpa> {
        &self.pgt
    }

    /// Gives `[pa, pa + size)` to the host, identity mapped with memory
    /// type `attrs.memtype` and permissions `attrs.perms` (boot-time set-up
    /// of RAM and MMIO): `OWNED`, or [`PINNED`] when `attrs.state` is
    /// `NOPAGE` (the module image; then write permission is
    /// [`Error::Inval`]: a pinned page is never writable for the host).
    /// Only ranges the hypervisor owns (zero entries) can be given;
    /// anything else is [`Error::Perm`].
    pub fn map_memory<M: MmOps>(&mut self, mm: &mut M, pa: Hpa, size: u64, attrs: Attrs) -> Result {
        check_range(pa.raw(), size)?;
        let state = if attrs.state == PINNED {
            if attrs.perms & PERM_W != 0 || attrs.perms & PERM_R == 0 {
                return Err(Error::Inval);
            }
            PINNED
        } else {
            PageState::Owned
        };
        all_leaves(&self.pgt, mm, pa, size, |_, e| e == 0)?;
        self.pgt.map(mm, pa, size, pa, Attrs { state, ..attrs })
    }

    /// Raw mutable access, for tests that corrupt the table on purpose.
    #[cfg(test)]
    pub(crate) fn pgt_mut(&mut self) -> &mut PgTable<EptFormat, Hpa> {
        &mut self.pgt
    }

    /// Raw mutable access to the share counts, for tests that corrupt
    /// them on purpose.
    #[cfg(test)]
    pub(crate) fn counts_mut(&mut self) -> &mut ShareCounts {
        &mut self.counts
    }

    /// How often an apply step failed although its check passed (a corrupt
    /// table or an inconsistent [`MmOps`]).  Always 0; the module should
    /// warn if it is not.
    pub const fn internal_errors(&self) -> u64 {
        self.internal_errors
    }

    /// Frees every table page and every page of the share counts.
    pub fn destroy<M: MmOps>(self, mm: &mut M) -> Result {
        self.counts.destroy(mm)?;
        self.pgt.destroy(mm)
    }
}

/// Size of the hypervisor page table's linear window: physical addresses
/// up to 2^46 (64 TiB).
pub const LINEAR_WINDOW: u64 = 1 << 46;

/// The hypervisor's own page table: `pa + va_offset -> pa` for the pages it
/// owns or borrows, inside a linear window; outside it, fixed mappings
/// (code, read-only data, a scratch slot) that carry no ownership.
#[derive(Debug)]
pub struct HypPgt {
    pgt: PgTable<HypFormat, HypVa>,
    va_offset: u64,
}

impl HypPgt {
    /// An empty hypervisor page table placing `pa` at `pa + va_offset`
    /// (canonical upper-half offsets are fine: addresses are reduced to
    /// their low 48 bits, the sign extension being implied).
    pub fn new<M: MmOps>(mm: &mut M, max_block_level: u32, va_offset: u64) -> Result<Self> {
        Ok(Self {
            pgt: PgTable::new(mm, max_block_level)?,
            va_offset,
        })
    }

    /// The underlying table (root for CR3, walks, statistics).
    pub const fn pgt(&self) -> &PgTable<HypFormat, HypVa> {
        &self.pgt
    }

    /// The linear address of `[pa, pa + size)`, or `Inval` if the range
    /// would wrap around the top of the 48-bit space.
    pub fn va(&self, pa: Hpa, size: u64) -> Result<HypVa> {
        let va = pa.raw().wrapping_add(self.va_offset) & (ADDR_LIMIT - 1);
        check_range(va, size)?;
        Ok(HypVa::from_low_bits(va))
    }

    /// Raw mutable access, for tests that corrupt the table on purpose.
    #[cfg(test)]
    pub(crate) fn pgt_mut(&mut self) -> &mut PgTable<HypFormat, HypVa> {
        &mut self.pgt
    }

    /// The linear window `[start, start + len)` where `pa` lives at
    /// `pa + va_offset`: the only part of the table that records ownership.
    pub fn linear_window(&self) -> (HypVa, u64) {
        let lin = self.va_offset & (ADDR_LIMIT - 1);
        (
            HypVa::from_low_bits(lin),
            LINEAR_WINDOW.min(ADDR_LIMIT - lin),
        )
    }

    /// Maps hypervisor memory it owns from the start (its pool) at its
    /// linear address, read-write, `OWNED`.  Only unmapped ranges can be
    /// mapped ([`Error::Perm`] otherwise).
    pub fn map_owned<M: MmOps>(&mut self, mm: &mut M, pa: Hpa, size: u64) -> Result {
        let va = self.va(pa, size)?;
        all_leaves(&self.pgt, mm, va, size, |_, e| e == 0)?;
        let attrs = Attrs::wb(PERM_R | PERM_W, PageState::Owned);
        self.pgt.map(mm, va, size, pa, attrs)
    }

    /// Maps `[pa, pa + size)` at `va` with `perms`, outside the linear
    /// region (the hypervisor's code and read-only data, a scratch slot).
    /// These mappings carry no ownership: the state is `SHARED_BORROWED`,
    /// and the caller must keep them out of `[va_offset, va_offset +
    /// 2^46)`, where [`Error::Inval`] is returned.  Only unmapped ranges can
    /// be mapped ([`Error::Perm`] otherwise).
    pub fn map_fixed<M: MmOps>(
        &mut self,
        mm: &mut M,
        va: HypVa,
        pa: Hpa,
        size: u64,
        perms: u8,
    ) -> Result {
        let bits = va.table_bits();
        check_range(bits, size)?;
        let (lin, len) = self.linear_window();
        let lin = lin.table_bits();
        if bits < lin + len && bits + size > lin {
            return Err(Error::Inval);
        }
        all_leaves(&self.pgt, mm, va, size, |_, e| e == 0)?;
        let attrs = Attrs::wb(perms, PageState::SharedBorrowed);
        self.pgt.map(mm, va, size, pa, attrs)
    }

    /// Unmaps one page of the hypervisor's own memory from its linear
    /// window, leaving it the hypervisor's (its host EPT entry stays the
    /// zero `HYP` annotation; nothing else maps it): the guard page below
    /// a root-mode stack, so that an overflow faults instead of writing
    /// the neighbouring pool page.  A large page around it is split.  Only
    /// a page mapped `OWNED` in the window can become a guard
    /// ([`Error::Perm`] otherwise, e.g. twice).
    pub fn unmap_guard<M: MmOps>(&mut self, mm: &mut M, pa: Hpa) -> Result {
        let va = self.va(pa.page_down(), PAGE_SIZE)?;
        all_leaves(&self.pgt, mm, va, PAGE_SIZE, |_, e| {
            is_state::<HypFormat>(e, PageState::Owned)
        })?;
        self.pgt.unmap(mm, va, PAGE_SIZE)
    }

    /// The leaf entry mapping `va` (zero if nothing does) and its level.
    pub fn lookup<M: MmOps>(&self, mm: &mut M, va: HypVa) -> Result<(u64, u32)> {
        let leaf = self.pgt.lookup(mm, va)?;
        Ok((leaf.entry, leaf.level))
    }

    /// Frees every table page.
    pub fn destroy<M: MmOps>(self, mm: &mut M) -> Result {
        self.pgt.destroy(mm)
    }
}

/// Which page-state rules a VM follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum VmKind {
    /// A normal VM: the host shares its pages with it.
    Normal,
    /// A protected VM: the host donates its pages, the guest may share some
    /// back.
    Protected,
}

/// A guest's shadow EPT and the facts about the guest the transitions need.
#[derive(Debug)]
pub struct GuestEpt {
    id: OwnerId,
    kind: VmKind,
    dying: bool,
    pgt: PgTable<EptFormat, Gpa>,
}

impl GuestEpt {
    /// An empty shadow EPT for guest `id` (which must be a guest id, not
    /// `HYP` or `HOST`, else `Inval`).
    pub fn new<M: MmOps>(
        mm: &mut M,
        id: OwnerId,
        kind: VmKind,
        max_block_level: u32,
    ) -> Result<Self> {
        if !id.is_guest() {
            return Err(Error::Inval);
        }
        Ok(Self {
            id,
            kind,
            dying: false,
            pgt: PgTable::new(mm, max_block_level)?,
        })
    }

    /// The guest's owner id (its handle).
    pub const fn id(&self) -> OwnerId {
        self.id
    }

    /// Normal or protected.
    pub const fn kind(&self) -> VmKind {
        self.kind
    }

    /// Whether teardown has started: no new pages, reclaim allowed.
    pub const fn is_dying(&self) -> bool {
        self.dying
    }

    /// Starts teardown (irreversible).
    pub fn set_dying(&mut self) {
        self.dying = true;
    }

    /// The underlying table (root for the EPT pointer, walks).
    pub const fn pgt(&self) -> &PgTable<EptFormat, Gpa> {
        &self.pgt
    }

    /// Raw mutable access, for tests that corrupt the table on purpose.
    #[cfg(test)]
    pub(crate) fn pgt_mut(&mut self) -> &mut PgTable<EptFormat, Gpa> {
        &mut self.pgt
    }

    /// Frees every table page.  Pages still mapped are not reclaimed: call
    /// [`guest_reclaim`] over the whole space first.
    pub fn destroy<M: MmOps>(self, mm: &mut M) -> Result {
        self.pgt.destroy(mm)
    }
}

/// The result of a transition's check: what its apply step needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub struct Plan {
    /// Table pages the apply step allocates, over all tables involved.
    pub pages: usize,
}

/// A contiguous piece of a guest's address space with one translation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Run {
    /// First guest-physical address.
    pub gpa: Gpa,
    /// Host-physical address of `gpa` (0 when not mapped).
    pub hpa: Hpa,
    /// Length in bytes.
    pub len: u64,
    /// Guest page state (`NoPage` when not mapped).
    pub state: PageState,
}

/// Calls `f` for maximal runs of `[gpa, gpa + size)` in `guest` that are
/// contiguous in host-physical memory and in one page state.
pub fn guest_runs<M: MmOps>(
    guest: &GuestEpt,
    mm: &mut M,
    gpa: Gpa,
    size: u64,
    mut f: impl FnMut(&mut M, Run) -> Result,
) -> Result {
    let mut pending: Option<Run> = None;
    guest.pgt.for_each_leaf(mm, gpa, size, |mm, ctx, e| {
        let lo = ctx.lo();
        let present = EptFormat::is_present(e);
        let run = Run {
            gpa: Gpa::from_table_bits(lo),
            hpa: if present {
                EptFormat::addr(e).wrapping_add(lo - ctx.addr)
            } else {
                Hpa::ZERO
            },
            len: ctx.hi() - lo,
            state: EptFormat::state(e),
        };
        match pending.as_mut() {
            Some(p)
                if p.state == run.state
                    && p.gpa.raw() + p.len == run.gpa.raw()
                    && (!present || p.hpa.raw() + p.len == run.hpa.raw()) =>
            {
                p.len += run.len;
            }
            _ => {
                if let Some(p) = pending.replace(run) {
                    f(mm, p)?;
                }
            }
        }
        Ok(())
    })?;
    match pending {
        Some(p) => f(mm, p),
        None => Ok(()),
    }
}

/// Checks that `pred(ctx, entry)` holds for every leaf of `t` in the range;
/// `Perm` otherwise.
fn all_leaves<F: PteFormat, A: InputAddr, M: MmOps>(
    t: &PgTable<F, A>,
    mm: &mut M,
    addr: A,
    size: u64,
    pred: impl Fn(&WalkCtx, u64) -> bool,
) -> Result {
    t.for_each_leaf(mm, addr, size, |_, ctx, e| {
        if pred(ctx, e) {
            Ok(())
        } else {
            Err(Error::Perm)
        }
    })
}

fn is_state<F: PteFormat>(e: u64, s: PageState) -> bool {
    F::is_present(e) && F::state(e) == s
}

/// Leaf predicate: present in state `s` and mapping `addr` to
/// `pa + (addr - start)` (identity for the host EPT when `pa == start`).
fn maps_as<F: PteFormat, A: InputAddr>(
    ctx: &WalkCtx,
    e: u64,
    s: PageState,
    start: A,
    pa: Hpa,
) -> bool {
    is_state::<F>(e, s)
        && F::addr(e).raw().wrapping_sub(ctx.addr) == pa.raw().wrapping_sub(start.table_bits())
}

fn pages_to_size(nr_pages: u64) -> Result<u64> {
    match nr_pages.checked_mul(PAGE_SIZE) {
        Some(s) if s != 0 => Ok(s),
        _ => Err(Error::Inval),
    }
}

/// The size in bytes of `nr_pages` host pages at `pa`, checked as every
/// host-initiated transition checks its host range: a non-empty page count
/// that does not overflow, a range the tables translate, and RAM only (the
/// map recorded at load: MMIO never changes hands).  All `Error::Inval`.
fn host_range(host: &HostEpt, pa: Hpa, nr_pages: u64) -> Result<u64> {
    let size = pages_to_size(nr_pages)?;
    check_range(pa.raw(), size)?;
    host.ram.check(pa.raw(), size)?;
    Ok(size)
}

fn check_guest_perms(perms: u8) -> Result {
    // Write without read is an EPT misconfiguration; no access at all is
    // not a mapping.
    if perms == 0 || perms & !PERM_RWX != 0 || (perms & PERM_W != 0 && perms & PERM_R == 0) {
        return Err(Error::Inval);
    }
    Ok(())
}

/// Reserves `plan.pages`, runs `apply`, gives back what is left.
fn run_plan<M: MmOps>(
    host: &mut HostEpt,
    mm: &mut M,
    plan: Plan,
    apply: impl FnOnce(&mut HostEpt, &mut M, &mut PageCache) -> Result,
) -> Result {
    let mut cache = PageCache::new();
    cache.topup(mm, plan.pages)?;
    if apply(host, mm, &mut cache).is_err() {
        host.internal_errors += 1;
    }
    cache.release(mm);
    Ok(())
}

// ---------------------------------------------------------------------------
// host <-> hyp

/// One table's side of a two-table transition: the range starting at
/// `addr`, what every leaf there must be (`expect`), and what it becomes.
struct Side<A, P> {
    addr: A,
    expect: P,
    fill: Fill,
}

/// The shape of every host <-> hypervisor and host -> guest transition:
/// check both sides completely, reserve the table pages both need, then
/// apply both (host first), which cannot fail halfway.
fn transition<M: MmOps, F: PteFormat, A: InputAddr>(
    host: &mut HostEpt,
    other: &mut PgTable<F, A>,
    mm: &mut M,
    size: u64,
    h: Side<Hpa, impl Fn(&WalkCtx, u64) -> bool>,
    o: Side<A, impl Fn(&WalkCtx, u64) -> bool>,
) -> Result {
    all_leaves(&host.pgt, mm, h.addr, size, h.expect)?;
    all_leaves(other, mm, o.addr, size, o.expect)?;
    let pages = host.pgt.pages_needed(mm, h.addr, size, h.fill)?
        + other.pages_needed(mm, o.addr, size, o.fill)?;
    run_plan(host, mm, Plan { pages }, |host, mm, cache| {
        host.pgt.apply(mm, cache, h.addr, size, h.fill)?;
        other.apply(mm, cache, o.addr, size, o.fill)
    })
}

/// `expect` for a leaf that must be empty.
fn empty(_: &WalkCtx, e: u64) -> bool {
    e == 0
}

/// Donates `nr_pages` host pages at `pa` to the hypervisor (shadow VM and
/// vCPU structures, page-table pools).
///
/// host `OWNED -> NOPAGE(HYP)` / hyp `NOPAGE -> OWNED`.
pub fn host_donate_hyp<M: MmOps>(
    host: &mut HostEpt,
    hyp: &mut HypPgt,
    mm: &mut M,
    pa: Hpa,
    nr_pages: u64,
) -> Result {
    let size = host_range(host, pa, nr_pages)?;
    let va = hyp.va(pa, size)?;
    refuse_guest_shared(host, mm, pa, size)?;
    let h = Side {
        addr: pa,
        expect: |c: &WalkCtx, e| maps_as::<EptFormat, _>(c, e, PageState::Owned, pa, pa),
        fill: Fill::Set(0),
    };
    let o = Side {
        addr: va,
        expect: empty,
        fill: Fill::Map {
            pa,
            attrs: HYP_OWNED,
        },
    };
    transition(host, &mut hyp.pgt, mm, size, h, o)
}

/// Gives `nr_pages` hypervisor pages at `pa` back to the host.  The caller
/// zeroes them first if they held anything the host must not see.
///
/// hyp `OWNED -> NOPAGE` / host `NOPAGE(HYP) -> OWNED`.
pub fn hyp_donate_host<M: MmOps>(
    host: &mut HostEpt,
    hyp: &mut HypPgt,
    mm: &mut M,
    pa: Hpa,
    nr_pages: u64,
) -> Result {
    let size = host_range(host, pa, nr_pages)?;
    let va = hyp.va(pa, size)?;
    let h = Side {
        addr: pa,
        expect: empty,
        fill: Fill::Map {
            pa,
            attrs: HOST_OWNED,
        },
    };
    let o = Side {
        addr: va,
        expect: |c: &WalkCtx, e| maps_as::<HypFormat, _>(c, e, PageState::Owned, va, pa),
        fill: Fill::Set(0),
    };
    transition(host, &mut hyp.pgt, mm, size, h, o)
}

/// Shares `nr_pages` host pages at `pa` with the hypervisor (e.g. a vCPU's
/// run structure the host keeps writing).
///
/// host `OWNED -> SHARED_OWNED` / hyp `NOPAGE -> SHARED_BORROWED`.
pub fn host_share_hyp<M: MmOps>(
    host: &mut HostEpt,
    hyp: &mut HypPgt,
    mm: &mut M,
    pa: Hpa,
    nr_pages: u64,
) -> Result {
    let size = host_range(host, pa, nr_pages)?;
    let va = hyp.va(pa, size)?;
    let h = Side {
        addr: pa,
        expect: |c: &WalkCtx, e| maps_as::<EptFormat, _>(c, e, PageState::Owned, pa, pa),
        fill: Fill::State(PageState::SharedOwned),
    };
    let o = Side {
        addr: va,
        expect: empty,
        fill: Fill::Map {
            pa,
            attrs: HYP_BORROWED,
        },
    };
    transition(host, &mut hyp.pgt, mm, size, h, o)
}

/// Ends a [`host_share_hyp`].
///
/// host `SHARED_OWNED -> OWNED` / hyp `SHARED_BORROWED -> NOPAGE`.
pub fn host_unshare_hyp<M: MmOps>(
    host: &mut HostEpt,
    hyp: &mut HypPgt,
    mm: &mut M,
    pa: Hpa,
    nr_pages: u64,
) -> Result {
    let size = host_range(host, pa, nr_pages)?;
    let va = hyp.va(pa, size)?;
    // A SHARED_OWNED page with a share count is shared with guests.
    if host.counts.any_shared(mm, pa, size)? {
        return Err(Error::Perm);
    }
    let h = Side {
        addr: pa,
        expect: |c: &WalkCtx, e| maps_as::<EptFormat, _>(c, e, PageState::SharedOwned, pa, pa),
        fill: Fill::State(PageState::Owned),
    };
    let o = Side {
        addr: va,
        expect: |c: &WalkCtx, e| maps_as::<HypFormat, _>(c, e, PageState::SharedBorrowed, va, pa),
        fill: Fill::Set(0),
    };
    transition(host, &mut hyp.pgt, mm, size, h, o)
}

// ---------------------------------------------------------------------------
// host -> guest

/// Shares `nr_pages` host pages at `hpa` with the normal VM `guest` at
/// `gpa`, mapped write-back with EPT permissions `perms` (`PERM_*`):
/// [`host_share_guest_attrs`] with [`Attrs::wb`].
///
/// host `OWNED -> SHARED_OWNED` (count 1), or `SHARED_OWNED` with guests
/// (count + 1) / guest `NOPAGE -> SHARED_BORROWED`.
#[allow(clippy::too_many_arguments)]
pub fn host_share_guest<M: MmOps>(
    host: &mut HostEpt,
    guest: &mut GuestEpt,
    mm: &mut M,
    hpa: Hpa,
    gpa: Gpa,
    nr_pages: u64,
    perms: u8,
) -> Result {
    let attrs = Attrs::wb(perms, PageState::SharedBorrowed);
    host_share_guest_attrs(host, guest, mm, hpa, gpa, nr_pages, attrs)
}

/// Shares `nr_pages` host pages at `hpa` with the normal VM `guest` at
/// `gpa`, mapped with `attrs.perms`, `attrs.memtype` and `attrs.ipat` (a
/// shadow EPT leaf carries the memory type intersected from the host's
/// EPT for its guest and the host EPT); `attrs.state` is ignored (the
/// guest's leaves are `SHARED_BORROWED`).
///
/// A share is counted ([`HostEpt::share_counts`]): one host page may back
/// several guests and several guest addresses of one guest, each 4 KiB
/// guest leaf page one count.  Every host page must be `OWNED` (it becomes
/// `SHARED_OWNED`, count 1) or already shared with guests (`SHARED_OWNED`
/// with a count: the count grows, the host entry stays); a page shared
/// with the hypervisor (`SHARED_OWNED`, count 0), or at [`MAX_COUNT`],
/// is [`Error::Perm`].  Every guest page must be unmapped.
///
/// host `OWNED -> SHARED_OWNED` (count 1), or `SHARED_OWNED` (count + 1) /
/// guest `NOPAGE -> SHARED_BORROWED`.
#[allow(clippy::too_many_arguments)]
pub fn host_share_guest_attrs<M: MmOps>(
    host: &mut HostEpt,
    guest: &mut GuestEpt,
    mm: &mut M,
    hpa: Hpa,
    gpa: Gpa,
    nr_pages: u64,
    attrs: Attrs,
) -> Result {
    let size = host_range(host, hpa, nr_pages)?;
    check_range(gpa.raw(), size)?;
    check_guest_perms(attrs.perms)?;
    if guest.kind != VmKind::Normal || guest.dying {
        return Err(Error::Perm);
    }
    let guest_fill = Fill::Map {
        pa: hpa,
        attrs: Attrs {
            state: PageState::SharedBorrowed,
            ..attrs
        },
    };
    let host_fill = Fill::State(PageState::SharedOwned);
    // Host: each page OWNED with no count, or SHARED_OWNED with a count
    // below the maximum (shared with guests, not with the hypervisor).
    let (pgt, counts) = (&host.pgt, &host.counts);
    pgt.for_each_leaf(mm, hpa, size, |mm, c, e| {
        let shared = if maps_as::<EptFormat, _>(c, e, PageState::Owned, hpa, hpa) {
            false
        } else if maps_as::<EptFormat, _>(c, e, PageState::SharedOwned, hpa, hpa) {
            true
        } else {
            return Err(Error::Perm);
        };
        let lo = Hpa::from_table_bits(c.lo());
        counts.scan(mm, lo, c.hi() - c.lo(), |_, _, _, n| {
            if (n == 0) != shared && n < MAX_COUNT {
                Ok(())
            } else {
                Err(Error::Perm)
            }
        })
    })?;
    all_leaves(&guest.pgt, mm, gpa, size, empty)?;
    let pages = host.pgt.pages_needed(mm, hpa, size, host_fill)?
        + guest.pgt.pages_needed(mm, gpa, size, guest_fill)?
        + host.counts.pages_needed(mm, hpa, size)?;
    run_plan(host, mm, Plan { pages }, |host, mm, cache| {
        host.pgt.apply(mm, cache, hpa, size, host_fill)?;
        guest.pgt.apply(mm, cache, gpa, size, guest_fill)?;
        host.counts.increment(mm, cache, hpa, size)
    })
}

/// The one step of [`host_unshare_guest`] and [`host_unshare_revoked`]
/// once their checks passed: each host page of `[hpa, hpa + size)` loses
/// one count (`OWNED` again at zero) and the guest's entries for `[gpa,
/// gpa + size)` become zero, all or nothing.
fn release_guest_share<M: MmOps>(
    host: &mut HostEpt,
    guest: &mut GuestEpt,
    mm: &mut M,
    hpa: Hpa,
    gpa: Gpa,
    size: u64,
) -> Result {
    let guest_fill = Fill::Set(0);
    let pages = counted_release_pages(host, mm, hpa, size)?
        + guest.pgt.pages_needed(mm, gpa, size, guest_fill)?;
    run_plan(host, mm, Plan { pages }, |host, mm, cache| {
        counted_release(host, mm, cache, hpa, size)?;
        guest.pgt.apply(mm, cache, gpa, size, guest_fill)
    })
}

/// Ends one [`host_share_guest`] mapping: `gpa` must map `hpa` for all
/// `nr_pages`.  Each host page's count goes down by one; a page whose
/// count reaches zero goes back to the host alone.
///
/// host `SHARED_OWNED` (count - 1; `-> OWNED` at zero) / guest
/// `SHARED_BORROWED -> NOPAGE`.
pub fn host_unshare_guest<M: MmOps>(
    host: &mut HostEpt,
    guest: &mut GuestEpt,
    mm: &mut M,
    hpa: Hpa,
    gpa: Gpa,
    nr_pages: u64,
) -> Result {
    let size = host_range(host, hpa, nr_pages)?;
    check_range(gpa.raw(), size)?;
    all_leaves(&host.pgt, mm, hpa, size, |c, e| {
        maps_as::<EptFormat, _>(c, e, PageState::SharedOwned, hpa, hpa)
    })?;
    all_leaves(&guest.pgt, mm, gpa, size, |c, e| {
        maps_as::<EptFormat, _>(c, e, PageState::SharedBorrowed, gpa, hpa)
    })?;
    release_guest_share(host, guest, mm, hpa, gpa, size)
}

/// The one leaf of `guest` at `gpa`: its entry and size, if `[gpa, gpa +
/// size)` is exactly a leaf in state `state` (`revoked`: a leaf revoked by
/// [`guest_revoke_share`], else a present one).
fn exact_leaf<M: MmOps>(
    guest: &GuestEpt,
    mm: &mut M,
    gpa: Gpa,
    size: u64,
    revoked: bool,
) -> Result<u64> {
    check_range(gpa.raw(), size)?;
    let l = guest.pgt.lookup(mm, gpa)?;
    let e = l.entry;
    let ok = crate::hv::mm::ept::level_size(l.level) == size
        && gpa.raw() & (size - 1) == 0
        && EptFormat::is_present(e) != revoked
        && e != 0
        && EptFormat::attrs(e).state == PageState::SharedBorrowed;
    if ok {
        Ok(e)
    } else {
        Err(Error::Perm)
    }
}

/// The entry [`guest_revoke_share`] leaves for the present leaf `e`: its
/// permission bits cleared (not present to the CPU, which ignores the
/// other bits of such an entry), everything else kept.
fn revoked_entry(e: u64) -> u64 {
    e & !u64::from(PERM_RWX)
}

/// First step of dropping one shared leaf of a live normal VM table whose
/// invalidation the caller defers (a shadow EPT's partial drop,
/// Documentation/shadow-ept.rst "Invalidation"): `[gpa, gpa + size)` must
/// be exactly one present `SHARED_BORROWED` leaf; it becomes *revoked*,
/// not present to the CPU but still holding its host address and state,
/// the record of the share [`host_unshare_revoked`] returns once every CPU
/// that may cache the leaf has been flushed.  The host side is untouched
/// (the page stays `SHARED_OWNED` with its count).  No table page is
/// allocated or freed; the engine's invalidation of the leaf goes to `mm`.
///
/// guest `SHARED_BORROWED -> revoked` / host unchanged.
pub fn guest_revoke_share<M: MmOps>(
    guest: &mut GuestEpt,
    mm: &mut M,
    gpa: Gpa,
    size: u64,
) -> Result {
    if guest.kind != VmKind::Normal {
        return Err(Error::Perm);
    }
    let e = exact_leaf(guest, mm, gpa, size, false)?;
    guest.pgt.set(mm, gpa, size, Fill::Set(revoked_entry(e)))
}

/// Ends a share whose guest leaf [`guest_revoke_share`] revoked, after the
/// caller's flush: `[gpa, gpa + size)` must be exactly that revoked leaf,
/// mapping `hpa`.  Each host page's count goes down by one (`OWNED` again
/// at zero), as in [`host_unshare_guest`], and the guest entry becomes
/// zero (a table left empty is freed: no CPU may walk it any more).
///
/// host `SHARED_OWNED` (count - 1; `-> OWNED` at zero) / guest
/// `revoked -> NOPAGE`.
pub fn host_unshare_revoked<M: MmOps>(
    host: &mut HostEpt,
    guest: &mut GuestEpt,
    mm: &mut M,
    gpa: Gpa,
    size: u64,
) -> Result {
    let e = exact_leaf(guest, mm, gpa, size, true)?;
    let hpa = EptFormat::addr(e);
    let size = host_range(host, hpa, size / PAGE_SIZE)?;
    all_leaves(&host.pgt, mm, hpa, size, |c, e| {
        maps_as::<EptFormat, _>(c, e, PageState::SharedOwned, hpa, hpa)
    })?;
    release_guest_share(host, guest, mm, hpa, gpa, size)
}

/// A host donation of a page some guest still maps through a counted
/// share is [`Error::Busy`]: there is no reverse map to revoke the guests'
/// mappings, the host has to unshare first.
fn refuse_guest_shared<M: MmOps>(host: &HostEpt, mm: &mut M, pa: Hpa, size: u64) -> Result {
    if host.counts.any_shared(mm, pa, size)? {
        return Err(Error::Busy);
    }
    Ok(())
}

/// The table pages [`counted_release`] of `[hpa, hpa + size)` needs,
/// exactly: every count must be non-zero ([`Error::Perm`] otherwise: a
/// page shared with the hypervisor, not with guests), and the runs whose
/// count is 1 go back to `OWNED` in the host EPT.  Each host page must
/// appear once (one contiguous range).
fn counted_release_pages<M: MmOps>(
    host: &HostEpt,
    mm: &mut M,
    hpa: Hpa,
    size: u64,
) -> Result<usize> {
    let mut pages = 0;
    let (pgt, counts) = (&host.pgt, &host.counts);
    counts.scan(mm, hpa, size, |mm, pa, len, n| match n {
        0 => Err(Error::Perm),
        1 => {
            pages += pgt.pages_needed(mm, pa, len, Fill::State(PageState::Owned))?;
            Ok(())
        }
        _ => Ok(()),
    })?;
    Ok(pages)
}

/// An upper bound of the table pages [`counted_release`] of `[hpa, hpa +
/// size)` needs, whatever the counts are when it runs: only large host
/// leaves can be split (a state change never merges), each at most once,
/// and a 1 GiB leaf's 2 MiB pieces inside the range once each.  For a
/// reclaim, where one host page may come back from several guest
/// addresses and the counts at apply time are not those of the check.
fn counted_release_bound<M: MmOps>(
    host: &HostEpt,
    mm: &mut M,
    hpa: Hpa,
    size: u64,
) -> Result<usize> {
    let mut pages = 0;
    host.pgt.for_each_leaf(mm, hpa, size, |_, c, _| {
        pages += match c.level {
            1 => 0,
            2 => 1,
            _ => {
                let m2 = crate::hv::mm::ept::level_size(2).trailing_zeros();
                1 + usize::try_from(((c.hi() - 1) >> m2) - (c.lo() >> m2) + 1)
                    .map_err(|_| Error::NoMem)?
            }
        };
        Ok(())
    })?;
    Ok(pages)
}

/// Gives back one guest mapping of each host page of `[hpa, hpa + size)`:
/// pages whose count is 1 go back to `OWNED` in the host EPT, then every
/// count goes down by one (emptied count pages are freed).
fn counted_release<M: MmOps>(
    host: &mut HostEpt,
    mm: &mut M,
    cache: &mut PageCache,
    hpa: Hpa,
    size: u64,
) -> Result {
    let HostEpt { pgt, counts, .. } = host;
    counts.scan(mm, hpa, size, |mm, pa, len, n| {
        if n == 1 {
            pgt.apply(mm, cache, pa, len, Fill::State(PageState::Owned))
        } else {
            Ok(())
        }
    })?;
    counts.decrement(mm, hpa, size)
}

/// Donates `nr_pages` host pages at `hpa` to the protected VM `guest` at
/// `gpa`, mapped with EPT permissions `perms`.
///
/// host `OWNED -> NOPAGE(guest)` / guest `NOPAGE -> OWNED`.
#[allow(clippy::too_many_arguments)]
pub fn host_donate_guest<M: MmOps>(
    host: &mut HostEpt,
    guest: &mut GuestEpt,
    mm: &mut M,
    hpa: Hpa,
    gpa: Gpa,
    nr_pages: u64,
    perms: u8,
) -> Result {
    let size = host_range(host, hpa, nr_pages)?;
    check_range(gpa.raw(), size)?;
    check_guest_perms(perms)?;
    if guest.kind != VmKind::Protected || guest.dying {
        return Err(Error::Perm);
    }
    refuse_guest_shared(host, mm, hpa, size)?;
    let h = Side {
        addr: hpa,
        expect: |c: &WalkCtx, e| maps_as::<EptFormat, _>(c, e, PageState::Owned, hpa, hpa),
        fill: Fill::Set(EptFormat::annotation(guest.id)),
    };
    let o = Side {
        addr: gpa,
        expect: empty,
        fill: Fill::Map {
            pa: hpa,
            attrs: Attrs::wb(perms, PageState::Owned),
        },
    };
    transition(host, &mut guest.pgt, mm, size, h, o)
}

// ---------------------------------------------------------------------------
// guest -> host

/// Checks every run of `[gpa, gpa + size)` with `guest_ok` and the host
/// pages behind it with `host_ok`, counting the pages the host side needs.
/// `host_fill` gives the host-side fill for a run (static dispatch: root
/// mode makes no indirect calls).  A `SHARED_BORROWED` run (a normal VM's
/// counted share) instead needs a non-zero count on every host page and
/// is given back by [`counted_release`] (pages: its upper bound, since one
/// host page may come back from several runs).
#[allow(clippy::too_many_arguments)]
fn check_runs<M: MmOps>(
    host: &HostEpt,
    guest: &GuestEpt,
    mm: &mut M,
    gpa: Gpa,
    size: u64,
    guest_ok: impl Fn(PageState) -> bool,
    host_ok: impl Fn(&Run, &WalkCtx, u64) -> bool,
    host_fill: impl Fn(&Run, OwnerId) -> Fill,
) -> Result<usize> {
    let mut pages = 0;
    guest_runs(guest, mm, gpa, size, |mm, run| {
        if !guest_ok(run.state) {
            return Err(Error::Perm);
        }
        if run.state == PageState::NoPage {
            return Ok(());
        }
        check_range(run.hpa.raw(), run.len)?;
        all_leaves(&host.pgt, mm, run.hpa, run.len, |c, e| host_ok(&run, c, e))?;
        if run.state == PageState::SharedBorrowed {
            host.counts.scan(mm, run.hpa, run.len, |_, _, _, n| {
                if n == 0 {
                    Err(Error::Perm)
                } else {
                    Ok(())
                }
            })?;
            pages += counted_release_bound(host, mm, run.hpa, run.len)?;
            return Ok(());
        }
        pages += host
            .pgt
            .pages_needed(mm, run.hpa, run.len, host_fill(&run, guest.id))?;
        Ok(())
    })?;
    Ok(pages)
}

/// Applies `host_fill` to the host pages behind every run of the range
/// ([`counted_release`] for a `SHARED_BORROWED` run).
#[allow(clippy::too_many_arguments)]
fn apply_runs<M: MmOps>(
    host: &mut HostEpt,
    guest: &GuestEpt,
    mm: &mut M,
    cache: &mut PageCache,
    gpa: Gpa,
    size: u64,
    zero_owned: bool,
    host_fill: impl Fn(&Run, OwnerId) -> Fill,
) -> Result {
    let owner = guest.id;
    guest_runs(guest, mm, gpa, size, |mm, run| {
        if run.state == PageState::NoPage {
            return Ok(());
        }
        if run.state == PageState::SharedBorrowed {
            return counted_release(host, mm, cache, run.hpa, run.len);
        }
        if zero_owned {
            let mut off = 0;
            while off < run.len {
                mm.zero_page(run.hpa.wrapping_add(off));
                off += PAGE_SIZE;
            }
        }
        host.pgt
            .apply(mm, cache, run.hpa, run.len, host_fill(&run, owner))
    })
}

fn host_borrowed_fill(run: &Run, _owner: OwnerId) -> Fill {
    Fill::Map {
        pa: run.hpa,
        attrs: HOST_BORROWED,
    }
}

/// Shares `nr_pages` pages the protected VM `guest` owns at `gpa` back
/// with the host (virtio buffers).  The host maps them at their hpa.
///
/// guest `OWNED -> SHARED_OWNED` / host `NOPAGE(guest) -> SHARED_BORROWED`.
pub fn guest_share_host<M: MmOps>(
    host: &mut HostEpt,
    guest: &mut GuestEpt,
    mm: &mut M,
    gpa: Gpa,
    nr_pages: u64,
) -> Result {
    let size = pages_to_size(nr_pages)?;
    check_range(gpa.raw(), size)?;
    if guest.kind != VmKind::Protected || guest.dying {
        return Err(Error::Perm);
    }
    let ann = EptFormat::annotation(guest.id);
    let guest_fill = Fill::State(PageState::SharedOwned);
    let pages = check_runs(
        host,
        guest,
        mm,
        gpa,
        size,
        |s| s == PageState::Owned,
        |_, _, e| e == ann,
        host_borrowed_fill,
    )? + guest.pgt.pages_needed(mm, gpa, size, guest_fill)?;
    run_plan(host, mm, Plan { pages }, |host, mm, cache| {
        apply_runs(host, guest, mm, cache, gpa, size, false, host_borrowed_fill)?;
        guest.pgt.apply(mm, cache, gpa, size, guest_fill)
    })
}

/// Ends a [`guest_share_host`].
///
/// guest `SHARED_OWNED -> OWNED` / host `SHARED_BORROWED -> NOPAGE(guest)`.
pub fn guest_unshare_host<M: MmOps>(
    host: &mut HostEpt,
    guest: &mut GuestEpt,
    mm: &mut M,
    gpa: Gpa,
    nr_pages: u64,
) -> Result {
    let size = pages_to_size(nr_pages)?;
    check_range(gpa.raw(), size)?;
    let guest_fill = Fill::State(PageState::Owned);
    let pages = check_runs(
        host,
        guest,
        mm,
        gpa,
        size,
        |s| s == PageState::SharedOwned,
        |run, c, e| maps_as::<EptFormat, _>(c, e, PageState::SharedBorrowed, run.hpa, run.hpa),
        host_owner_fill,
    )? + guest.pgt.pages_needed(mm, gpa, size, guest_fill)?;
    run_plan(host, mm, Plan { pages }, |host, mm, cache| {
        apply_runs(host, guest, mm, cache, gpa, size, false, host_owner_fill)?;
        guest.pgt.apply(mm, cache, gpa, size, guest_fill)
    })
}

fn host_owner_fill(_run: &Run, owner: OwnerId) -> Fill {
    Fill::Set(EptFormat::annotation(owner))
}

/// The host side of a reclaimed page the guest owned (a normal VM's
/// shared pages go through [`counted_release`] instead).
fn host_reclaim_fill(run: &Run, _owner: OwnerId) -> Fill {
    Fill::Map {
        pa: run.hpa,
        attrs: HOST_OWNED,
    }
}

/// Returns every page mapped in `[gpa, gpa + size)` of the dying `guest` to
/// the host, zeroing the pages the guest owned; unmapped parts of the range
/// are skipped.  Teardown calls it over the whole address space.
///
/// guest `OWNED -> NOPAGE` / host `NOPAGE(guest) -> OWNED` (zeroed);
/// guest `SHARED_OWNED -> NOPAGE` / host `SHARED_BORROWED -> OWNED` (zeroed);
/// guest `SHARED_BORROWED -> NOPAGE` / host `SHARED_OWNED`, count - 1 per
/// guest page (`-> OWNED` at zero; never zeroed: the host's own page).
pub fn guest_reclaim<M: MmOps>(
    host: &mut HostEpt,
    guest: &mut GuestEpt,
    mm: &mut M,
    gpa: Gpa,
    size: u64,
) -> Result {
    check_range(gpa.raw(), size)?;
    if !guest.dying {
        return Err(Error::Perm);
    }
    let ann = EptFormat::annotation(guest.id);
    let pages = check_runs(
        host,
        guest,
        mm,
        gpa,
        size,
        |_| true,
        |run, c, e| match run.state {
            PageState::NoPage => false,
            PageState::Owned => e == ann,
            PageState::SharedOwned => {
                maps_as::<EptFormat, _>(c, e, PageState::SharedBorrowed, run.hpa, run.hpa)
            }
            PageState::SharedBorrowed => {
                maps_as::<EptFormat, _>(c, e, PageState::SharedOwned, run.hpa, run.hpa)
            }
        },
        host_reclaim_fill,
    )? + guest.pgt.pages_needed(mm, gpa, size, Fill::Set(0))?;
    run_plan(host, mm, Plan { pages }, |host, mm, cache| {
        apply_runs(host, guest, mm, cache, gpa, size, true, host_reclaim_fill)?;
        guest.pgt.apply(mm, cache, gpa, size, Fill::Set(0))
    })
}

#[cfg(test)]
#[path = "mem_protect_tests.rs"]
pub(crate) mod tests;
