// SPDX-License-Identifier: GPL-2.0

//! The ownership invariant checker.
//!
//! Owns [`check`], which walks the host EPT, the hypervisor page table and
//! every guest's shadow EPT and returns the first [`Violation`] of:
//!
//! 1. the host EPT is an identity map whose present entries are `OWNED`,
//!    `SHARED_OWNED`, `SHARED_BORROWED` or `PINNED` (present `NOPAGE`: the
//!    module image) and never writable when `PINNED`, and whose non-present
//!    entries are clean owner annotations naming `HYP`, `HOST` or an
//!    existing guest;
//! 2. every page has exactly one owner: a guest `OWNED` page is annotated
//!    with that guest in the host EPT, a hypervisor `OWNED` page with `HYP`,
//!    and no two parties claim the same page;
//! 3. every `SHARED_OWNED` page has its `SHARED_BORROWED` counterparts in
//!    the right tables and the other way round: a host `SO` page is either
//!    shared with the hypervisor (exactly one hypervisor `SB`, share count
//!    0) or with normal VMs (one or more guest `SB` leaf pages, in one or
//!    several guests, at one or several guest addresses: a counted share);
//!    a guest `SO` page has a host `SB`.  The share count of every host
//!    page (`hv::mm::share_count`) equals the number of 4 KiB guest
//!    `SHARED_BORROWED` leaf pages mapping it over all guests (a 2 MiB
//!    guest leaf counts once for each host page it covers), so a count is
//!    non-zero exactly on host `SO` pages that are not shared with the
//!    hypervisor, and never on a page that is not RAM; the count table's
//!    own books hold (each page's use count is its number of non-zero
//!    counts or entries, no empty leaf is kept) and its pages are the
//!    hypervisor's;
//! 4. the host maps only what it owns or legitimately borrows (a page a
//!    guest shared back), so nothing the host does not own is writable for
//!    it otherwise;
//! 5. hypervisor pages (including every table page of every table) are
//!    never mapped for the host or a guest;
//! 6. a normal VM holds only `SHARED_BORROWED` pages, a protected VM only
//!    `OWNED` and `SHARED_OWNED` ones;
//! 7. only RAM changes hands: every page a guest or the hypervisor's linear
//!    window maps is inside the host EPT's RAM map (never MMIO);
//! 8. the hypervisor's fixed mappings outside its linear window (its code,
//!    read-only data, scratch slot) map only pages the host can neither
//!    write nor give away: `PINNED` or hypervisor-owned (zero) in the host
//!    EPT.  A pinned page is never claimed by a guest or by the linear
//!    window (a claim needs another host state, 2.).
//!
//! A hypervisor page that no table maps (zero in the host EPT, absent
//! from the linear window) is no violation: the guard page below each
//! root-mode stack is such a page (`HypPgt::unmap_guard`); it still
//! counts as the hypervisor's for 2. and 4., since the host EPT's zero
//! annotation says so.  The same holds for the zero entries of the host
//! EPT's on-demand part above RAM (`host_ept_map::LazyMap`): read as
//! `HYP`, they are claimed by no table, which is consistent.
//!
//! Needs no allocation: the caller passes a scratch array for the claims
//! (one per run of pages a guest or the hypervisor maps); a too-small array
//! is reported as [`ViolationKind::ScratchFull`].  Meant for tests and for a
//! debug hypercall, not for hot paths: telling overlapping claims apart
//! (counted shares) costs time quadratic in the number of claims.

use crate::hv::mm::addr::{Hpa, InputAddr};
use crate::hv::mm::ept::{OwnerId, PageState, PAGE_SIZE, PINNED};
use crate::hv::mm::mem_protect::{GuestEpt, HostEpt, HypPgt, VmKind};
use crate::hv::mm::pgtable::{EptFormat, MmOps, PgTable, PteFormat, ADDR_LIMIT, PERM_W};

/// Which table a violation or claim is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Party {
    /// The host EPT.
    #[default]
    Host,
    /// The hypervisor page table.
    Hyp,
    /// A guest's shadow EPT.
    Guest(OwnerId),
}

/// What is wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ViolationKind {
    /// A walk failed (corrupt table).
    Walk,
    /// A present host EPT entry does not map its own address.
    HostNotIdentity,
    /// A present entry in state `NOPAGE` outside the host EPT (where it
    /// means `PINNED`).
    PresentNoPage,
    /// A `PINNED` host entry that lets the host write.
    PinnedWritable,
    /// A guest or the hypervisor's linear window maps a page that is not
    /// RAM.
    NotRam,
    /// A fixed hypervisor mapping (outside the linear window) of a page the
    /// host owns, shares or could give away.
    FixedNotPinned,
    /// A non-present host entry with bits other than the owner id, or an
    /// owner that is neither `HYP`, `HOST` nor an existing guest.
    BadAnnotation,
    /// A non-present guest or hypervisor entry that is not zero.
    StrayEntry,
    /// The hypervisor maps a page somewhere other than `pa + va_offset`.
    HypNotLinear,
    /// A mapped page whose host EPT entry is not the counterpart its state
    /// requires.
    NoHostCounterpart,
    /// A host page shared, borrowed or annotated with a guest that no table
    /// maps as the counterpart.
    NoBorrower,
    /// Two parties claim the same page.
    DoubleClaim,
    /// A VM holds a page in a state its kind does not allow.
    WrongKind,
    /// A table page is not owned by the hypervisor in the host EPT.
    TableNotHypOwned,
    /// The scratch array is too small for the claims.
    ScratchFull,
    /// A host frame pinned by a live vmcs02 (nested VMX) that the host no
    /// longer owns exclusively.
    PinnedNotOwned,
    /// A page of the reserve for shadow state that is not the
    /// hypervisor's own (host EPT `NOPAGE(HYP)`, hypervisor `OWNED`).
    ReserveNotHypOwned,
    /// The reserve's accounting does not match its pages (batches, free
    /// list, pages handed out).
    ReserveAccounting,
    /// A host page's share count is not the number of guest
    /// `SHARED_BORROWED` leaf pages mapping it (at `addr`; at 0: a count
    /// on a page no guest maps).
    ShareCount,
    /// The share-count table's books are wrong (a page's use count, an
    /// empty leaf kept, the page total); `addr` is the page, or 0.
    ShareCountBooks,
}

/// The first broken invariant found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Violation {
    /// What is wrong.
    pub kind: ViolationKind,
    /// In which table.
    pub party: Party,
    /// The address where it was found, as a number: in the table's own
    /// input space (`Hpa` for the host EPT, `Gpa` for a guest, the 48-bit
    /// `HypVa` bits for the hypervisor), or an `Hpa` for table pages.
    pub addr: u64,
}

/// A run of host-physical pages mapped by a guest or the hypervisor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Claim {
    /// First host-physical address.
    pub hpa: Hpa,
    /// Length in bytes.
    pub len: u64,
    /// Who maps it.
    pub party: Party,
    /// A normal VM's `SHARED_BORROWED` mapping: a counted share, which may
    /// overlap others of its kind.
    pub counted: bool,
}

type Check<T = ()> = core::result::Result<T, Violation>;

fn violation(kind: ViolationKind, party: Party, addr: u64) -> Violation {
    Violation { kind, party, addr }
}

struct Claims<'s> {
    buf: &'s mut [Claim],
    n: usize,
}

impl Claims<'_> {
    fn push(&mut self, c: Claim) -> Check {
        if let Some(last) = self.n.checked_sub(1).and_then(|i| self.buf.get_mut(i)) {
            if last.party == c.party
                && last.counted == c.counted
                && last.hpa.raw() + last.len == c.hpa.raw()
            {
                last.len += c.len;
                return Ok(());
            }
        }
        let slot = self.buf.get_mut(self.n).ok_or(violation(
            ViolationKind::ScratchFull,
            c.party,
            c.hpa.raw(),
        ))?;
        *slot = c;
        self.n += 1;
        Ok(())
    }

    /// The claims, sorted by address (with the core's panic-free sort:
    /// root mode runs this for the debug hypercall).
    fn sorted(&mut self) -> &[Claim] {
        let claims = self.buf.get_mut(..self.n).unwrap_or_default();
        crate::hv::sort::sort_by_key(claims, |c| c.hpa);
        claims
    }
}

fn walk_err(party: Party) -> impl Fn(crate::hv::error::Error) -> Violation {
    move |_| violation(ViolationKind::Walk, party, 0)
}

/// Checks the host entries over `[hpa, hpa + len)` with `ok(entry)`.
fn host_is<M: MmOps>(
    host: &HostEpt,
    mm: &mut M,
    party: Party,
    hpa: Hpa,
    len: u64,
    ok: impl Fn(u64) -> bool,
) -> Check {
    let mut bad = None;
    host.pgt()
        .for_each_leaf(mm, hpa, len, |_, ctx, e| {
            if bad.is_none() && !ok(e) {
                bad = Some(ctx.lo());
            }
            Ok(())
        })
        .map_err(walk_err(party))?;
    match bad {
        Some(_) => Err(violation(
            ViolationKind::NoHostCounterpart,
            party,
            hpa.raw(),
        )),
        None => Ok(()),
    }
}

fn present_in<F: PteFormat>(e: u64, s: PageState) -> bool {
    F::is_present(e) && F::state(e) == s
}

/// Every table page of `t` (root included) must be a zero (= `HYP`-owned)
/// entry of the host EPT.
fn tables_owned_by_hyp<F: PteFormat, A: InputAddr, M: MmOps>(
    t: &PgTable<F, A>,
    host: &HostEpt,
    mm: &mut M,
    party: Party,
) -> Check {
    let mut bad = None;
    let root = host.pgt().lookup(mm, t.root()).map_err(walk_err(party))?;
    if root.entry != 0 {
        bad = Some(t.root());
    }
    t.for_each_table(mm, A::from_table_bits(0), ADDR_LIMIT, |mm, _, e| {
        let pa = F::addr(e);
        if bad.is_none() && host.pgt().lookup(mm, pa)?.entry != 0 {
            bad = Some(pa);
        }
        Ok(())
    })
    .map_err(walk_err(party))?;
    match bad {
        Some(pa) => Err(violation(ViolationKind::TableNotHypOwned, party, pa.raw())),
        None => Ok(()),
    }
}

/// Calls `f(mm, address (table bits), host-physical address, length,
/// state)` for every present leaf of `t` in `[addr, addr + size)`; a
/// non-zero entry that is not present is a stray-entry violation.  Returns
/// the first violation.
fn each_mapping<F: PteFormat, A: InputAddr, M: MmOps>(
    t: &PgTable<F, A>,
    mm: &mut M,
    addr: A,
    size: u64,
    party: Party,
    mut f: impl FnMut(&mut M, u64, Hpa, u64, PageState) -> Check,
) -> Check {
    let mut bad: Option<Violation> = None;
    t.for_each_leaf(mm, addr, size, |mm, ctx, e| {
        if bad.is_some() || e == 0 {
            return Ok(());
        }
        let lo = ctx.lo();
        let r = if F::is_present(e) {
            f(
                mm,
                lo,
                F::addr(e).wrapping_add(lo - ctx.addr),
                ctx.hi() - lo,
                F::state(e),
            )
        } else {
            Err(violation(ViolationKind::StrayEntry, party, lo))
        };
        if let Err(v) = r {
            bad = Some(v);
        }
        Ok(())
    })
    .map_err(walk_err(party))?;
    bad.map_or(Ok(()), Err)
}

/// Every mapping of the hypervisor table in `[start, end)` (outside its
/// linear window) must be of a page the host can neither write nor give
/// away: hypervisor-owned (zero) or `PINNED` read-only in the host EPT.
fn fixed_pinned<M: MmOps>(host: &HostEpt, hyp: &HypPgt, mm: &mut M, start: u64, end: u64) -> Check {
    if start >= end {
        return Ok(());
    }
    let party = Party::Hyp;
    each_mapping(
        hyp.pgt(),
        mm,
        InputAddr::from_table_bits(start),
        end - start,
        party,
        |mm, lo, hpa, len, _| {
            host_is(host, mm, party, hpa, len, |h| {
                h == 0
                    || (present_in::<EptFormat>(h, PINNED)
                        && EptFormat::attrs(h).perms & PERM_W == 0)
            })
            .map_err(|_| violation(ViolationKind::FixedNotPinned, party, lo))
        },
    )
}

/// Overlapping claims and share counts (3.): only counted claims overlap,
/// and every page's count is the number of counted claims covering it.
/// `sorted` is sorted by address.
///
/// Sweeps the segments between claim boundaries (time: segments x claims):
/// in each, the counts must equal the number of counted claims covering
/// it; then the sum of all counts must equal the pages of all counted
/// claims, so no count lies outside them.
fn share_counts<M: MmOps>(host: &HostEpt, mm: &mut M, sorted: &[Claim]) -> Check {
    let counts = host.share_counts();
    let books = |_| violation(ViolationKind::ShareCountBooks, Party::Host, 0);
    let mut cur = match sorted.first() {
        Some(c) => c.hpa.raw(),
        None => 0,
    };
    let mut claimed_pages = 0u64;
    for c in sorted.iter().filter(|c| c.counted) {
        claimed_pages += c.len / PAGE_SIZE;
    }
    while !sorted.is_empty() {
        let (mut all, mut counted, mut other) = (0u32, 0u32, Party::Host);
        let mut next = u64::MAX;
        for c in sorted {
            let (s, e) = (c.hpa.raw(), c.hpa.raw() + c.len);
            if s > cur {
                next = next.min(s);
                break;
            }
            if cur < e {
                all += 1;
                if c.counted {
                    counted += 1;
                } else {
                    other = c.party;
                }
                next = next.min(e);
            }
        }
        if all >= 2 && all != counted {
            return Err(violation(ViolationKind::DoubleClaim, other, cur));
        }
        if next == u64::MAX {
            break;
        }
        if counted > 0 {
            let mut bad = None;
            counts
                .scan(mm, Hpa::from_table_bits(cur), next - cur, |_, pa, _, n| {
                    if bad.is_none() && n != counted {
                        bad = Some(pa.raw());
                    }
                    Ok(())
                })
                .map_err(books)?;
            if let Some(a) = bad {
                return Err(violation(ViolationKind::ShareCount, Party::Host, a));
            }
        }
        cur = next;
    }
    let (mut total, mut not_ram) = (0u64, None);
    counts
        .scan(mm, Hpa::ZERO, ADDR_LIMIT, |_, pa, len, n| {
            if n != 0 {
                total += u64::from(n) * (len / PAGE_SIZE);
                if not_ram.is_none() && !host.ram().contains(pa.raw(), len) {
                    not_ram = Some(pa.raw());
                }
            }
            Ok(())
        })
        .map_err(books)?;
    if let Some(a) = not_ram {
        return Err(violation(ViolationKind::NotRam, Party::Host, a));
    }
    if total != claimed_pages {
        return Err(violation(ViolationKind::ShareCount, Party::Host, 0));
    }
    counts.audit(mm, |_, _| true).map_err(|p| {
        let a = p.map_or(0, Hpa::raw);
        violation(ViolationKind::ShareCountBooks, Party::Host, a)
    })?;
    let mut not_hyp = None;
    let _ = counts.audit(mm, |mm, page| {
        let hyp = host.pgt().lookup(mm, page).is_ok_and(|l| l.entry == 0);
        if !hyp && not_hyp.is_none() {
            not_hyp = Some(page);
        }
        true
    });
    match not_hyp {
        Some(p) => Err(violation(
            ViolationKind::TableNotHypOwned,
            Party::Host,
            p.raw(),
        )),
        None => Ok(()),
    }
}

/// Checks every invariant listed in the module docs; returns the first
/// violation.  `guests` must yield every guest that exists.
pub fn check<'g, M: MmOps, I>(
    host: &HostEpt,
    hyp: &HypPgt,
    guests: I,
    mm: &mut M,
    scratch: &mut [Claim],
) -> Check
where
    I: Iterator<Item = &'g GuestEpt> + Clone,
{
    let mut claims = Claims { buf: scratch, n: 0 };

    // 1. The host EPT on its own.
    let mut bad = None;
    host.pgt()
        .for_each_leaf(mm, Hpa::ZERO, ADDR_LIMIT, |_, ctx, e| {
            if bad.is_some() || e == 0 {
                return Ok(());
            }
            let kind = if EptFormat::is_present(e) {
                if EptFormat::addr(e) != Hpa::from_table_bits(ctx.addr) {
                    Some(ViolationKind::HostNotIdentity)
                } else if EptFormat::state(e) == PINNED && EptFormat::attrs(e).perms & PERM_W != 0 {
                    Some(ViolationKind::PinnedWritable)
                } else {
                    None
                }
            } else {
                let owner = EptFormat::owner(e).unwrap_or(OwnerId::HYP);
                let known = owner == OwnerId::HOST || guests.clone().any(|g| g.id() == owner);
                if !known || EptFormat::annotation(owner) != e {
                    Some(ViolationKind::BadAnnotation)
                } else {
                    None
                }
            };
            bad = kind.map(|k| violation(k, Party::Host, ctx.lo()));
            Ok(())
        })
        .map_err(walk_err(Party::Host))?;
    if let Some(v) = bad {
        return Err(v);
    }

    // 2. Guests and the hypervisor, each page against the host EPT.
    for g in guests.clone() {
        let party = Party::Guest(g.id());
        let ann = EptFormat::annotation(g.id());
        each_mapping(
            g.pgt(),
            mm,
            InputAddr::from_table_bits(0),
            ADDR_LIMIT,
            party,
            |mm, lo, hpa, len, state| {
                let kind_ok = match g.kind() {
                    VmKind::Normal => state == PageState::SharedBorrowed,
                    VmKind::Protected => {
                        state == PageState::Owned || state == PageState::SharedOwned
                    }
                };
                if state == PageState::NoPage {
                    Err(violation(ViolationKind::PresentNoPage, party, lo))
                } else if !kind_ok {
                    Err(violation(ViolationKind::WrongKind, party, lo))
                } else {
                    host_is(host, mm, party, hpa, len, |h| match state {
                        PageState::Owned => h == ann,
                        PageState::SharedOwned => {
                            present_in::<EptFormat>(h, PageState::SharedBorrowed)
                        }
                        _ => present_in::<EptFormat>(h, PageState::SharedOwned),
                    })
                    .map_err(|v| Violation { addr: lo, ..v })
                    .and_then(|()| {
                        let counted = state == PageState::SharedBorrowed;
                        claims.push(Claim {
                            hpa,
                            len,
                            party,
                            counted,
                        })
                    })
                }
            },
        )?;
    }
    let party = Party::Hyp;
    // Only the linear window carries ownership; the hypervisor's code,
    // read-only data and scratch slot live outside it (`map_fixed`).
    let (win, win_len) = hyp.linear_window();
    each_mapping(
        hyp.pgt(),
        mm,
        win,
        win_len,
        party,
        |mm, lo, hpa, len, state| match hyp.va(hpa, len) {
            Ok(va) if va.table_bits() == lo => match state {
                PageState::Owned => host_is(host, mm, party, hpa, len, |h| h == 0),
                PageState::SharedBorrowed => host_is(host, mm, party, hpa, len, |h| {
                    present_in::<EptFormat>(h, PageState::SharedOwned)
                }),
                _ => Err(violation(ViolationKind::NoHostCounterpart, party, lo)),
            }
            .map_err(|v| Violation { addr: lo, ..v })
            .and_then(|()| {
                claims.push(Claim {
                    hpa,
                    len,
                    party,
                    counted: false,
                })
            }),
            _ => Err(violation(ViolationKind::HypNotLinear, party, lo)),
        },
    )?;

    // Fixed mappings outside the linear window: pinned or hypervisor pages.
    // (Two calls, not a loop over an array: root mode runs this, and the
    // array iterator would call into `core` outside the module.)
    let (lo_win, hi_win) = (win.table_bits(), win.table_bits() + win_len);
    fixed_pinned(host, hyp, mm, 0, lo_win)?;
    fixed_pinned(host, hyp, mm, hi_win, ADDR_LIMIT)?;

    // 3. No page claimed twice, and every claim is RAM.
    let sorted = claims.sorted();
    if let Some(c) = sorted
        .iter()
        .find(|c| !host.ram().contains(c.hpa.raw(), c.len))
    {
        return Err(violation(ViolationKind::NotRam, c.party, c.hpa.raw()));
    }
    share_counts(host, mm, sorted)?;

    // 4. Every host page that is shared, borrowed or given to a guest has
    //    its counterpart claim.
    let mut bad = None;
    host.pgt()
        .for_each_leaf(mm, Hpa::ZERO, ADDR_LIMIT, |_, ctx, e| {
            let needs_claim = if EptFormat::is_present(e) {
                EptFormat::state(e) != PageState::Owned && EptFormat::state(e) != PINNED
            } else {
                EptFormat::owner(e).is_some_and(OwnerId::is_guest)
            };
            if bad.is_some() || !needs_claim {
                return Ok(());
            }
            let (lo, hi) = (ctx.lo(), ctx.hi());
            let first = sorted
                .iter()
                .position(|c| c.hpa.raw() + c.len > lo)
                .unwrap_or(sorted.len());
            let mut covered = lo;
            for c in sorted.get(first..).unwrap_or_default() {
                if c.hpa.raw() > covered || covered >= hi {
                    break;
                }
                // Claims may overlap (counted shares): never go back.
                covered = covered.max(c.hpa.raw() + c.len);
            }
            if covered < hi {
                bad = Some(violation(ViolationKind::NoBorrower, Party::Host, covered));
            }
            Ok(())
        })
        .map_err(walk_err(Party::Host))?;
    if let Some(v) = bad {
        return Err(v);
    }

    // 5. Table pages belong to the hypervisor.
    tables_owned_by_hyp(host.pgt(), host, mm, Party::Host)?;
    tables_owned_by_hyp(hyp.pgt(), host, mm, Party::Hyp)?;
    for g in guests {
        tables_owned_by_hyp(g.pgt(), host, mm, Party::Guest(g.id()))?;
    }
    Ok(())
}

/// [`check`] with nested VMX's shadow EPTs (issue 10) among the guests:
/// `shadows` yields every shadow EPT
/// (`crate::hv::vmx::nested::shadow_ept::ShadowEpts::guests`), `guests`
/// every VM as for [`check`].  A shadow EPT is a normal guest: it holds
/// only `SHARED_BORROWED` pages the host shares with it.
pub fn check_with_shadows<'g, M: MmOps, I, J>(
    host: &HostEpt,
    hyp: &HypPgt,
    guests: I,
    shadows: J,
    mm: &mut M,
    scratch: &mut [Claim],
) -> Check
where
    I: Iterator<Item = &'g GuestEpt> + Clone,
    J: Iterator<Item = &'g GuestEpt> + Clone,
{
    check(host, hyp, guests.chain(shadows), mm, scratch)
}

#[cfg(test)]
#[path = "invariants_tests.rs"]
mod tests;
