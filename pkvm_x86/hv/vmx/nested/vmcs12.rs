// SPDX-License-Identifier: GPL-2.0

//! The vmcs12 store: the host's VMCSs (vmcs12) as pkvm keeps them, and
//! VMREAD/VMWRITE with the hardware's semantics on them.
//!
//! A vmcs12 lives in hypervisor memory as a [`MemVmcs`] plus its launch
//! state ([`Vmcs12`]), in a cache shared by every CPU ([`Vmcs12Cache`],
//! inside the hypervisor-wide state, under the hypervisor lock) keyed by
//! the host physical address of its VMCS region.  Each entry is a page
//! taken from the reserve (`crate::hv::mm::reserve`, through
//! [`PageSupply`]): the cache grows as long as the reserve gives pages,
//! and when it gives none (or runs low) the least recently used entry is
//! written back and its page reused.  There is no limit on VMs or vCPUs: a
//! VMCS that is not in the cache lives in the host's own VMCS page, in
//! pkvm's format ([`layout`]), which VMCLEAR (and eviction) writes and
//! VMPTRLD (or the next use of an evicted current VMCS) reads back once.
//! VMCLEAR on vCPU migration costs one page write; its entry's page stays
//! with the cache as a spare (back to the reserve under pressure, above
//! [`MIN_PAGES`]).
//!
//! The host may scribble on its page between VMCLEAR and VMPTRLD.  It can
//! only produce values it could have VMWRITten anyway: every field is read
//! back masked to its width, and the launch state read back only decides
//! between VMLAUNCH and VMRESUME (both validate the vmcs12 in full before
//! any entry).  Reads and writes of the page go through
//! `super::host_walk::HostPhys`, which refuses any page the host does not
//! own at that moment (a page donated since VMPTRLD is neither read nor
//! written).
//!
//! A vmcs12's state leaves the cache only once it is in the host's page:
//! VMCLEAR and eviction write back *first* and unlink the entry only when
//! the write succeeded.  An entry whose page is not the host's stays
//! cached (VMCLEAR fails as for an invalid address, eviction takes the
//! next least recently used entry; counted in [`CacheStats::unwritable`]),
//! so no older image of a vmcs12 can ever be read back from its page while
//! a newer one was thrown away.

use super::field_class::host_accessible;
use super::host_walk::HostPhys;
use crate::hv::mm::reserve::PageSupply;
use crate::hv::vmx::vmcs::fields::{self, Access, Group, Width, FIELDS, FIELD_COUNT};
use crate::hv::vmx::vmcs::MemVmcs;

/// The layout of a VMCS region in pkvm's format (with the CPU's revision
/// identifier, see `super::offer`).
pub mod layout {
    use super::FIELD_COUNT;
    /// Bytes 3:0: the revision identifier (written by the host, as the SDM
    /// asks), bytes 7:4 the VMX-abort indicator; word 0 is never written
    /// by pkvm.
    pub const REVISION_OFFSET: u64 = 0;
    /// Word 1: the launch state; [`LAUNCHED`] means launched, anything else
    /// clear.
    pub const LAUNCH_OFFSET: u64 = 8;
    /// Launch-state word of a launched VMCS ("pkvmlnch").
    pub const LAUNCHED: u64 = u64::from_le_bytes(*b"pkvmlnch");
    /// Field `i` of the table (`crate::hv::vmx::vmcs::FIELDS`) is the
    /// 8-byte word at `FIELDS_OFFSET + 8 * i`.
    pub const FIELDS_OFFSET: u64 = 16;
    /// Words the format uses after word 0 (launch state and fields).
    pub const WORDS: usize = 1 + FIELD_COUNT;
    const _: () = assert!(FIELDS_OFFSET as usize + 8 * FIELD_COUNT <= 4096);
}

/// A vmcs12: its fields and its launch state.
#[derive(Clone, Debug, Default)]
pub struct Vmcs12 {
    /// The fields.
    pub vmcs: MemVmcs,
    /// Launch state: launched (VMRESUME allowed) or clear (VMLAUNCH).
    pub launched: bool,
}

/// Entry pages the cache keeps at least once it has them: it gives pages
/// back to a supply under pressure only above this many, so a VMPTRLD
/// always finds a page (by eviction) once the cache ever had one.
pub const MIN_PAGES: u64 = 4;

/// One cache entry: one page of the supply (about 1.7 KiB used).
#[repr(C)]
struct Entry {
    /// Next entry page in its list (in use, or spare), 0 at the end.
    next: u64,
    /// Host physical address of the VMCS region.
    pa: u64,
    v: Vmcs12,
}

const _: () = assert!(core::mem::size_of::<Entry>() <= 4096);
const _: () = assert!(core::mem::align_of::<Entry>() <= 4096);

/// What the cache did, for statistics and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// vmcs12 read from a host page.
    pub loads: u64,
    /// vmcs12 written to a host page (VMCLEAR or eviction).
    pub writebacks: u64,
    /// Entries evicted to make room.
    pub evictions: u64,
    /// Write-backs refused because the page was not the host's at that
    /// moment (VMCLEAR or eviction): the entry stayed in the cache.
    pub unwritable: u64,
    /// Pages taken from the supply.
    pub grown: u64,
    /// Pages given back to the supply.
    pub shrunk: u64,
}

/// Selectors of [`Vmcs12Watch::counts`] (read with NESTED_STATS
/// `0x500 + k`).
pub mod watch {
    /// Write-backs (VMCLEAR) into a page whose word 0 no longer holds the
    /// VMCS revision identifier seen at its VMPTRLD.
    pub const FOREIGN_CLEAR: usize = 0;
    /// Write-backs (eviction, the stress mode's `evict_all`) into such a
    /// page.
    pub const FOREIGN_EVICT: usize = 1;
    /// Bit `t` set: a foreign write-back happened while the caller tag
    /// ([`super::Vmcs12Watch::tag`]) was `t`.
    pub const FOREIGN_TAGS: usize = 2;
    /// vmcs12 loaded from a page VMCLEARed since its last VMPTRLD.
    pub const LOAD_AFTER_CLEAR: usize = 3;
    /// Bit `t` set: such a load happened with caller tag `t`.
    pub const AFTER_CLEAR_TAGS: usize = 4;
    /// Entries (VMLAUNCH/VMRESUME) whose vmcs12 GUEST_RSP was compared
    /// with the one the last reflected exit of that vmcs12 stored.
    pub const RSP_CHECKED: usize = 5;
    /// ... and differed, with the host having written GUEST_RSP since
    /// (through the shadow VMCS or an emulated VMWRITE).
    pub const RSP_HOST_CHANGED: usize = 6;
    /// ... of which the value written is the GUEST_RSP of the exit before
    /// the last one (an old RSP written back).
    pub const RSP_HOST_OLD: usize = 7;
    /// ... and differed without any host write: pkvm lost or changed it.
    pub const RSP_MISMATCH: usize = 8;
    /// Number of counters.
    pub const COUNT: usize = 9;
}

/// Caller tag of a VMX instruction's emulation: `TAG_INSN + insn`.
pub const TAG_INSN: u8 = 1;
/// Caller tag: the vmcs02 entry (`enter`).
pub const TAG_ENTER: u8 = 16;
/// Caller tag: an exit of vmcs02 being handled.
pub const TAG_L2_EXIT: u8 = 17;
/// Caller tag: an exit being reflected to the host.
pub const TAG_REFLECT: u8 = 18;
/// Caller tag: the shadow VMCS drained before an instruction.
pub const TAG_SHADOW_BEFORE: u8 = 19;
/// Caller tag: the shadow VMCS refilled after an instruction or exit.
pub const TAG_SHADOW_AFTER: u8 = 20;
/// Caller tag: the debug stress mode's `evict_all`.
pub const TAG_STRESS: u8 = 21;
/// Caller tag: a failed vmcs02 entry.
pub const TAG_ENTRY_FAILED: u8 = 22;

/// GUEST_RSP as one reflected exit of one vmcs12 left it.
#[derive(Clone, Copy, Debug, Default)]
struct RspSlot {
    /// The vmcs12 (0: free slot).
    pa: u64,
    /// GUEST_RSP the last reflected exit stored.
    last: u64,
    /// GUEST_RSP the exit before stored.
    before: u64,
    /// The host wrote GUEST_RSP since the last exit.
    host_wrote: bool,
}

/// Slots of [`Vmcs12Watch`]'s small tables.
const WATCH_SLOTS: usize = 16;

/// Debug checks of the vmcs12 store (issue 9's msrs_test corruption):
/// write-backs into pages that are no longer VMCSs, loads of VMCLEARed
/// vmcs12s without a VMPTRLD, and GUEST_RSP changing between a reflected
/// exit and the next entry without the host writing it.  Only counts;
/// changes nothing.  All-zero is the empty watch.
#[derive(Debug, Default)]
pub struct Vmcs12Watch {
    /// Checks on (debug builds set it); off, the watch does nothing.
    pub enabled: bool,
    /// The VMCS revision identifier (from VMPTRLD; 0: not known yet, no
    /// revision checks).
    revision: u32,
    /// VMCLEARed pages with no VMPTRLD since (0: free), a ring.
    cleared: [u64; WATCH_SLOTS],
    /// Next slot of `cleared` to reuse.
    cleared_next: usize,
    /// GUEST_RSP of the last reflected exits, by vmcs12, a ring.
    rsp: [RspSlot; WATCH_SLOTS],
    /// Next slot of `rsp` to reuse.
    rsp_next: usize,
    /// Who is using the cache now (`TAG_*`), set by its callers.
    pub tag: u8,
    /// Counters ([`watch`]).
    pub counts: [u64; watch::COUNT],
    /// The last [`TRACE_SLOTS`] entries and exits of vmcs02 on every CPU
    /// ([`Vmcs12Watch::trace`]), a ring; frozen by the first
    /// [`Vmcs12Watch::freeze`].
    pub ring: [[u64; TRACE_WORDS]; TRACE_SLOTS],
    /// Next slot of `ring`.
    pub ring_next: usize,
    /// The ring and `dump` stay as they are (the first freeze).
    pub frozen: bool,
    /// What the freezing caller recorded.
    pub dump: [u64; DUMP_WORDS],
}

/// Slots of [`Vmcs12Watch::ring`].
pub const TRACE_SLOTS: usize = 32;
/// Words of one ring slot.
pub const TRACE_WORDS: usize = 6;
/// Words of [`Vmcs12Watch::dump`].
pub const DUMP_WORDS: usize = 32;

impl Vmcs12Watch {
    fn bump(&mut self, i: usize) {
        if let Some(c) = self.counts.get_mut(i) {
            *c = c.wrapping_add(1);
        }
    }

    fn tag_bit(&mut self, i: usize) {
        let bit = 1u64 << (self.tag % 64);
        if let Some(c) = self.counts.get_mut(i) {
            *c |= bit;
        }
    }

    /// A VMPTRLD of `pa` with revision identifier `revision` succeeded
    /// its checks.
    pub fn vmptrld(&mut self, pa: u64, revision: u32) {
        if !self.enabled {
            return;
        }
        self.revision = revision;
        for c in self.cleared.iter_mut().filter(|c| **c == pa) {
            *c = 0;
        }
    }

    /// `pa` was VMCLEARed.
    fn cleared(&mut self, pa: u64) {
        if !self.enabled {
            return;
        }
        if self.cleared.contains(&pa) {
            return;
        }
        if let Some(c) = self.cleared.get_mut(self.cleared_next) {
            *c = pa;
        }
        self.cleared_next = (self.cleared_next + 1) % WATCH_SLOTS;
    }

    /// `pa` is being loaded into the cache.
    fn loading(&mut self, pa: u64) {
        if !self.enabled {
            return;
        }
        if self.cleared.contains(&pa) {
            self.bump(watch::LOAD_AFTER_CLEAR);
            self.tag_bit(watch::AFTER_CLEAR_TAGS);
        }
    }

    /// A write-back into `pa` is about to happen: is its word 0 still the
    /// revision identifier?
    fn writing_back(&mut self, mem: &mut impl HostPhys, pa: u64, clear: bool) {
        if !self.enabled || self.revision == 0 {
            return;
        }
        let mut w = [0u64];
        if !mem.read_words(pa + layout::REVISION_OFFSET, &mut w) {
            return;
        }
        if (w[0] as u32) & 0x7fff_ffff != self.revision {
            self.bump(if clear {
                watch::FOREIGN_CLEAR
            } else {
                watch::FOREIGN_EVICT
            });
            self.tag_bit(watch::FOREIGN_TAGS);
        }
    }

    /// Records one entry or exit of vmcs02 in the ring (unless frozen).
    pub fn trace(&mut self, rec: [u64; TRACE_WORDS]) {
        if !self.enabled || self.frozen {
            return;
        }
        if let Some(s) = self.ring.get_mut(self.ring_next) {
            *s = rec;
        }
        self.ring_next = (self.ring_next + 1) % TRACE_SLOTS;
    }

    /// Freezes the ring with `dump` (only the first time).
    pub fn freeze(&mut self, dump: &[u64; DUMP_WORDS]) {
        if !self.enabled || self.frozen {
            return;
        }
        self.frozen = true;
        self.dump = *dump;
    }

    /// Word `i` of the ring, oldest slot first.
    pub fn ring_word(&self, i: usize) -> u64 {
        let slot = (self.ring_next + i / TRACE_WORDS) % TRACE_SLOTS;
        self.ring
            .get(slot)
            .and_then(|r| r.get(i % TRACE_WORDS))
            .copied()
            .unwrap_or(0)
    }

    fn slot(&mut self, pa: u64) -> Option<&mut RspSlot> {
        self.rsp.iter_mut().find(|s| s.pa == pa && pa != 0)
    }

    /// A reflected exit of vmcs12 `pa` stored GUEST_RSP `rsp`.
    pub fn exit_rsp(&mut self, pa: u64, rsp: u64) {
        if !self.enabled {
            return;
        }
        if let Some(s) = self.slot(pa) {
            s.before = s.last;
            s.last = rsp;
            s.host_wrote = false;
            return;
        }
        if let Some(s) = self.rsp.get_mut(self.rsp_next) {
            *s = RspSlot {
                pa,
                last: rsp,
                before: rsp,
                host_wrote: false,
            };
        }
        self.rsp_next = (self.rsp_next + 1) % WATCH_SLOTS;
    }

    /// The host wrote GUEST_RSP of vmcs12 `pa` (through the shadow VMCS or
    /// an emulated VMWRITE).
    pub fn host_wrote_rsp(&mut self, pa: u64) {
        if !self.enabled {
            return;
        }
        if let Some(s) = self.slot(pa) {
            s.host_wrote = true;
        }
    }

    /// vmcs12 `pa` is entered with GUEST_RSP `rsp`.
    pub fn entry_rsp(&mut self, pa: u64, rsp: u64) {
        if !self.enabled {
            return;
        }
        let Some(s) = self.slot(pa).copied() else {
            return;
        };
        self.bump(watch::RSP_CHECKED);
        if rsp == s.last {
            return;
        }
        if !s.host_wrote {
            self.bump(watch::RSP_MISMATCH);
            return;
        }
        self.bump(watch::RSP_HOST_CHANGED);
        if rsp == s.before {
            self.bump(watch::RSP_HOST_OLD);
        }
    }
}

/// The vmcs12 cache: entries in pages taken from a [`PageSupply`] (the
/// reserve), as many as the supply gives; the least recently used entry
/// is written back and its page reused when the supply has none (or runs
/// low).  All-zero bytes are a valid empty cache, so it can be set up in
/// place in pool memory; the window comes with the first page.
#[derive(Debug, Default)]
pub struct Vmcs12Cache {
    /// Where the pages are mapped (`va = pa + window`), from the supply.
    window: u64,
    /// Entries in use, most recently used first (0: none).
    head: u64,
    /// Entry pages kept for reuse (0: none).
    spare: u64,
    /// Entries in use.
    used: u64,
    /// Pages held (in use and spare).
    pages: u64,
    /// Statistics.
    pub stats: CacheStats,
    /// Debug checks ([`Vmcs12Watch`]).
    pub watch: Vmcs12Watch,
}

impl Vmcs12Cache {
    /// The entry in `page`.
    ///
    /// # Safety
    ///
    /// `page` must be a page this cache holds (taken from its supply and
    /// not given back): `PageSupply`'s contract makes it mapped at `page +
    /// window` and the cache's alone, and an all-zero page is a valid
    /// `Entry` (integers and `bool`s).
    unsafe fn entry(&mut self, page: u64) -> &mut Entry {
        // SAFETY: guaranteed by the caller; `&mut self` makes the reference
        // the only one.
        unsafe { &mut *(page.wrapping_add(self.window) as *mut Entry) }
    }

    /// The vmcs12 at `pa`: from the cache, or read from the host's page
    /// into an entry (a spare page, a new page of `mem`'s supply, or the
    /// least recently used entry, written back).  `None` if the page cannot
    /// be read (not the host's), or the cache has no page and the supply
    /// none to give.
    pub fn get(&mut self, mem: &mut (impl HostPhys + PageSupply), pa: u64) -> Option<&mut Vmcs12> {
        let (mut prev, mut at) = (0u64, self.head);
        while at != 0 {
            // SAFETY: `at` is on the in-use list: a page the cache holds.
            let (e_pa, next) = unsafe {
                let e = self.entry(at);
                (e.pa, e.next)
            };
            if e_pa == pa {
                if prev != 0 {
                    // Move to the front.
                    let head = self.head;
                    // SAFETY: `prev` and `at` are on the in-use list.
                    unsafe {
                        self.entry(prev).next = next;
                        self.entry(at).next = head;
                    }
                    self.head = at;
                }
                // SAFETY: as above.
                return Some(unsafe { &mut self.entry(at).v });
            }
            (prev, at) = (at, next);
        }
        self.load(mem, pa)
    }

    /// Whether `pa` is in the cache.
    pub fn contains(&mut self, pa: u64) -> bool {
        self.find(pa).is_some()
    }

    /// The page of `pa`'s entry and the one before it on the list.
    fn find(&mut self, pa: u64) -> Option<(u64, u64)> {
        let (mut prev, mut at) = (0u64, self.head);
        while at != 0 {
            // SAFETY: `at` is on the in-use list.
            let e = unsafe { self.entry(at) };
            if e.pa == pa {
                return Some((prev, at));
            }
            (prev, at) = (at, e.next);
        }
        None
    }

    /// Takes `page` (after `prev`) off the in-use list.
    fn unlink(&mut self, prev: u64, page: u64) {
        // SAFETY: `page` and `prev` (if not 0) are on the in-use list.
        let next = unsafe { self.entry(page).next };
        if prev == 0 {
            self.head = next;
        } else {
            // SAFETY: as above.
            unsafe { self.entry(prev).next = next };
        }
        self.used -= 1;
    }

    /// VMCLEAR of `pa`: its state (launch state clear) is written to the
    /// host's page and only then leaves the cache (its page kept as a
    /// spare, or given back to the supply if it runs low and the cache
    /// holds more than [`MIN_PAGES`]); a VMCS not in the cache gets its
    /// launch state cleared in the page.  `false` if the page is not the
    /// host's: nothing written, and a cached state stays cached (as the
    /// CPU keeps a VMCS whose VMCLEAR failed), never dropped.
    pub fn clear(&mut self, mem: &mut (impl HostPhys + PageSupply), pa: u64) -> bool {
        self.watch.writing_back(mem, pa, true);
        let Some((prev, page)) = self.find(pa) else {
            let ok = mem.write_words(pa + layout::LAUNCH_OFFSET, &[0]);
            if ok {
                self.watch.cleared(pa);
            }
            return ok;
        };
        // SAFETY: `page` is on the in-use list: a page the cache holds.
        let e = unsafe { self.entry(page) };
        if !write_back(mem, pa, &e.v.vmcs, false) {
            self.stats.unwritable += 1;
            return false;
        }
        e.v.launched = false;
        self.stats.writebacks += 1;
        self.unlink(prev, page);
        self.release(mem, page);
        self.watch.cleared(pa);
        true
    }

    /// `page` is no longer in use: a spare, or back to the supply under
    /// pressure.
    fn release(&mut self, supply: &mut impl PageSupply, page: u64) {
        if supply.under_pressure() && self.pages > MIN_PAGES {
            self.pages -= 1;
            self.stats.shrunk += 1;
            supply.give_page(page);
            return;
        }
        let spare = self.spare;
        // SAFETY: `page` is the cache's.
        unsafe { self.entry(page).next = spare };
        self.spare = page;
    }

    /// Writes back and drops the least recently used entries, and gives
    /// pages back to the supply, until the cache holds at most `keep`
    /// pages.  What a consumer under pressure does; returns the pages given.
    pub fn shrink(&mut self, mem: &mut (impl HostPhys + PageSupply), keep: u64) -> u64 {
        let mut given = 0;
        while self.pages > keep {
            let page = match self.spare {
                0 => match self.evict(mem) {
                    Some(p) => p,
                    None => break,
                },
                p => {
                    // SAFETY: a spare page of the cache.
                    self.spare = unsafe { self.entry(p).next };
                    p
                }
            };
            self.pages -= 1;
            self.stats.shrunk += 1;
            mem.give_page(page);
            given += 1;
        }
        given
    }

    /// Entries in use now.
    pub const fn entries(&self) -> u64 {
        self.used
    }

    /// Pages the cache holds (entries in use and spares).
    pub const fn pages(&self) -> u64 {
        self.pages
    }

    /// Writes back and unlinks the least recently used entry whose page
    /// takes the write; its page.  An entry whose page is not the host's
    /// is passed over (it stays cached, counted in
    /// [`CacheStats::unwritable`]); `None` if no entry can be written back.
    fn evict(&mut self, mem: &mut impl HostPhys) -> Option<u64> {
        // From the least recently used (position `used - 1`) towards the
        // most recently used; a refusal is rare (a hostile host), so the
        // walk again from the head for each candidate costs nothing
        // normally.
        for k in (0..self.used).rev() {
            let (prev, at) = self.nth(k)?;
            // SAFETY: `at` is on the in-use list.
            let e = unsafe { self.entry(at) };
            let pa = e.pa;
            self.watch.writing_back(mem, pa, false);
            // SAFETY: as above.
            let e = unsafe { self.entry(at) };
            if !write_back(mem, pa, &e.v.vmcs, e.v.launched) {
                self.stats.unwritable += 1;
                continue;
            }
            self.unlink(prev, at);
            self.stats.evictions += 1;
            self.stats.writebacks += 1;
            return Some(at);
        }
        None
    }

    /// The page of the entry at position `k` of the in-use list (0: the
    /// most recently used) and the one before it (0 for the head).
    fn nth(&mut self, k: u64) -> Option<(u64, u64)> {
        let (mut prev, mut at) = (0u64, self.head);
        for _ in 0..k {
            if at == 0 {
                return None;
            }
            // SAFETY: `at` is on the in-use list.
            let next = unsafe { self.entry(at).next };
            (prev, at) = (at, next);
        }
        (at != 0).then_some((prev, at))
    }

    /// Writes every cached vmcs12 back to its host page and takes it out
    /// of the cache (pages kept as spares); entries whose page is not the
    /// host's stay.  Returns how many left.  The debug builds' stress mode
    /// of nested VMX runs this after every VMX instruction and reflected
    /// exit, so that every use of a vmcs12 reads it back from its page.
    pub fn evict_all(&mut self, mem: &mut impl HostPhys) -> u64 {
        let mut n = 0;
        while let Some(page) = self.evict(mem) {
            let spare = self.spare;
            // SAFETY: `page` is the cache's, just unlinked.
            unsafe { self.entry(page).next = spare };
            self.spare = page;
            n += 1;
        }
        n
    }

    /// Writes every cached vmcs12 back to its host page (as eviction
    /// would) and keeps it cached; returns how many were written.  The
    /// debug builds' stress mode 2: the host pages take every write of
    /// the stress mode, but nothing is read back.
    pub fn write_back_all(&mut self, mem: &mut impl HostPhys) -> u64 {
        let mut n = 0;
        let mut at = self.head;
        while at != 0 {
            // SAFETY: `at` is on the in-use list: a page the cache holds.
            let pa = unsafe { self.entry(at).pa };
            self.watch.writing_back(mem, pa, false);
            // SAFETY: as above.
            let e = unsafe { self.entry(at) };
            let ok = write_back(mem, pa, &e.v.vmcs, e.v.launched);
            at = e.next;
            if ok {
                self.stats.writebacks += 1;
                n += 1;
            } else {
                self.stats.unwritable += 1;
            }
        }
        n
    }

    /// Builds every cached vmcs12's page image (as a write-back does) and
    /// reads the page's words instead of writing them; returns how many
    /// pages differ from the image.  The debug builds' stress mode 3: the
    /// work of `write_back_all` without its writes.
    pub fn read_all(&mut self, mem: &mut impl HostPhys) -> u64 {
        let mut n = 0;
        let mut at = self.head;
        let mut words = [0u64; layout::WORDS];
        while at != 0 {
            // SAFETY: `at` is on the in-use list: a page the cache holds.
            let e = unsafe { self.entry(at) };
            let (pa, next) = (e.pa, e.next);
            let image = image_of(&e.v.vmcs, e.v.launched);
            // Word by word (an array comparison may become a call to
            // `bcmp`, which root mode may not make).
            if mem.read_words(pa + layout::LAUNCH_OFFSET, &mut words)
                && words
                    .iter()
                    .zip(image.iter())
                    .fold(0, |d, (a, b)| d | (a ^ b))
                    != 0
            {
                n += 1;
            }
            at = next;
        }
        n
    }

    /// Reads the words a write-back writes from every cached vmcs12's
    /// page and writes them back unchanged; returns how many pages were
    /// rewritten.  The debug builds' stress mode 4: the writes of mode 2
    /// without changing the pages' contents.
    pub fn rewrite_all(&mut self, mem: &mut impl HostPhys) -> u64 {
        let mut n = 0;
        let mut at = self.head;
        let mut words = [0u64; layout::WORDS];
        while at != 0 {
            // SAFETY: `at` is on the in-use list: a page the cache holds.
            let (pa, next) = unsafe {
                let e = self.entry(at);
                (e.pa, e.next)
            };
            let at_words = pa + layout::LAUNCH_OFFSET;
            if mem.read_words(at_words, &mut words) && mem.write_words(at_words, &words) {
                n += 1;
            }
            at = next;
        }
        n
    }

    /// A page for a new entry: a spare, a new page of the supply (unless
    /// it runs low and the cache has [`MIN_PAGES`] already), else the least
    /// recently used entry's, written back.
    fn new_page(&mut self, mem: &mut (impl HostPhys + PageSupply)) -> Option<u64> {
        if self.spare != 0 {
            let p = self.spare;
            // SAFETY: a spare page of the cache.
            self.spare = unsafe { self.entry(p).next };
            return Some(p);
        }
        if !(mem.under_pressure() && self.pages >= MIN_PAGES) {
            if let Some(p) = mem.take_page() {
                self.window = mem.window();
                self.pages += 1;
                self.stats.grown += 1;
                return Some(p);
            }
        }
        self.evict(mem)
    }

    /// Reads `pa` into an entry at the front of the list.
    fn load(&mut self, mem: &mut (impl HostPhys + PageSupply), pa: u64) -> Option<&mut Vmcs12> {
        let mut words = [0u64; layout::WORDS];
        if !mem.read_words(pa + layout::LAUNCH_OFFSET, &mut words) {
            return None;
        }
        let page = self.new_page(mem)?;
        self.watch.loading(pa);
        let head = self.head;
        // SAFETY: `page` is the cache's, off every list.
        let e = unsafe { self.entry(page) };
        e.next = head;
        e.pa = pa;
        e.v.vmcs = MemVmcs::new();
        e.v.launched = words.first() == Some(&layout::LAUNCHED);
        for (f, w) in words.iter().skip(1).enumerate() {
            // Masked to the field's width: any value VMWRITE could store.
            e.v.vmcs.load_at(f, *w);
        }
        self.head = page;
        self.used += 1;
        self.stats.loads += 1;
        // SAFETY: as above.
        Some(unsafe { &mut self.entry(page).v })
    }
}

/// Writes `vmcs` with launch state `launched` into the host's page `pa`
/// in pkvm's format; `false` (nothing written) if the page is not the
/// host's.
fn write_back(mem: &mut impl HostPhys, pa: u64, vmcs: &MemVmcs, launched: bool) -> bool {
    mem.write_words(pa + layout::LAUNCH_OFFSET, &image_of(vmcs, launched))
}

/// The words of `vmcs` with launch state `launched` in pkvm's page format
/// from [`layout::LAUNCH_OFFSET`] on.
fn image_of(vmcs: &MemVmcs, launched: bool) -> [u64; layout::WORDS] {
    let mut words = [0u64; layout::WORDS];
    for (i, w) in words.iter_mut().enumerate() {
        *w = match i {
            0 if launched => layout::LAUNCHED,
            0 => 0,
            _ => vmcs.value_at(i - 1).unwrap_or(0),
        };
    }
    words
}

/// VM-instruction error numbers of VMREAD/VMWRITE.
pub const ERR_UNSUPPORTED: u32 = 12;
/// VMWRITE to a read-only component.
pub const ERR_READ_ONLY: u32 = 13;

/// The table position of the field an encoding names, and whether the
/// encoding is the high-half access of a 64-bit field; `None` for an
/// unsupported component (bits 63:32 set, not in the table, a high-half
/// access to a field that is not 64-bit, a field of a feature the view
/// hides: `field_class::host_accessible`, as on a CPU without it; `ept`:
/// whether the view offers EPT).
fn locate(encoding: u64, ept: bool) -> Option<(usize, bool)> {
    let e = u32::try_from(encoding).ok()?;
    if !host_accessible(ept, e & !1) {
        return None;
    }
    if e & 1 != 0 {
        let i = fields::index_of(e & !1)?;
        return (FIELDS.get(i)?.width == Width::W64).then_some((i, true));
    }
    Some((fields::index_of(e)?, false))
}

/// The table position of the 64-bit field whose high half `encoding`
/// names (bit 0 set), `None` for any other encoding (a full-width one, or
/// one VMREAD/VMWRITE refuse).  Nested VMX serves these from vmcs12 while
/// the full-width access goes through the shadow VMCS, so it syncs this
/// field between the two around them.  `ept` as for [`vmread`].
pub fn high_half_of(encoding: u64, ept: bool) -> Option<usize> {
    match locate(encoding, ept) {
        Some((i, true)) => Some(i),
        _ => None,
    }
}

/// The table position of the field `encoding` names (full width or high
/// half), `None` if VMREAD/VMWRITE refuse it.  `ept` as for [`vmread`].
pub fn field_of(encoding: u64, ept: bool) -> Option<usize> {
    locate(encoding, ept).map(|(i, _)| i)
}

/// VMREAD of `encoding` from `v`: the value, zero-extended (the high half
/// of a 64-bit field for its high-half encoding), or the VM-instruction
/// error.  `ept`: whether the view offers EPT (else its fields are
/// unsupported).
pub fn vmread(v: &MemVmcs, encoding: u64, ept: bool) -> Result<u64, u32> {
    let (i, high) = locate(encoding, ept).ok_or(ERR_UNSUPPORTED)?;
    let val = v.value_at(i).ok_or(ERR_UNSUPPORTED)?;
    Ok(if high { val >> 32 } else { val })
}

/// VMWRITE of `value` to `encoding` in `v`: truncated to the field's
/// width; a high-half encoding writes bits 63:32 only.  Read-only
/// (exit-information) fields are written only when `write_any` (the view's
/// IA32_VMX_MISC bit 29), else error 13.  `ept` as for [`vmread`].
pub fn vmwrite(
    v: &mut MemVmcs,
    encoding: u64,
    value: u64,
    write_any: bool,
    ept: bool,
) -> Result<(), u32> {
    let (i, high) = locate(encoding, ept).ok_or(ERR_UNSUPPORTED)?;
    let info = FIELDS.get(i).ok_or(ERR_UNSUPPORTED)?;
    if info.access == Access::ReadOnly && !(write_any && info.group == Group::ExitInfo) {
        return Err(ERR_READ_ONLY);
    }
    let new = if high {
        let old = v.value_at(i).ok_or(ERR_UNSUPPORTED)?;
        (old & 0xffff_ffff) | (value << 32)
    } else {
        value
    };
    v.load_at(i, new);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::host_walk::tests::FakeMem;
    use super::*;
    use crate::hv::vmx::vmcs::fields::*;
    use crate::hv::vmx::vmcs::VmcsAccess;

    /// The EPT fields exist exactly in a view that offers EPT (the module's
    /// `nested_ept`): error 12 without, read-write with.
    #[test]
    fn ept_fields_follow_the_view() {
        let mut v = MemVmcs::new();
        for f in [EPT_POINTER.encoding(), GUEST_PDPTE0.encoding()] {
            let e = u64::from(f);
            assert_eq!(
                vmwrite(&mut v, e, 0x5000_001e, false, false),
                Err(ERR_UNSUPPORTED)
            );
            assert_eq!(vmread(&v, e, false), Err(ERR_UNSUPPORTED));
            assert_eq!(vmwrite(&mut v, e, 0x5000_001e, false, true), Ok(()));
            assert_eq!(vmread(&v, e, true), Ok(0x5000_001e));
        }
    }

    #[test]
    fn vmread_vmwrite_semantics() {
        let mut v = MemVmcs::new();
        let enc = |f: u32| u64::from(f);
        // Width truncation.
        vmwrite(
            &mut v,
            enc(GUEST_CS_SELECTOR.encoding()),
            0x1234_5678,
            false,
            false,
        )
        .unwrap();
        assert_eq!(
            vmread(&v, enc(GUEST_CS_SELECTOR.encoding()), false),
            Ok(0x5678)
        );
        vmwrite(
            &mut v,
            enc(GUEST_CS_LIMIT.encoding()),
            u64::MAX,
            false,
            false,
        )
        .unwrap();
        assert_eq!(
            vmread(&v, enc(GUEST_CS_LIMIT.encoding()), false),
            Ok(0xffff_ffff)
        );
        // 64-bit field: full and high-half access.
        let link = enc(VMCS_LINK_POINTER.encoding());
        vmwrite(&mut v, link, 0x1111_2222_3333_4444, false, false).unwrap();
        assert_eq!(vmread(&v, link | 1, false), Ok(0x1111_2222));
        vmwrite(&mut v, link | 1, 0xffff_ffff_aaaa_bbbb, false, false).unwrap();
        assert_eq!(vmread(&v, link, false), Ok(0xaaaa_bbbb_3333_4444));
        // High-half encodings of non-64-bit fields, encodings outside the
        // table, bits 63:32 set: unsupported.
        for e in [
            enc(GUEST_RIP.encoding()) | 1,
            enc(GUEST_CS_SELECTOR.encoding()) | 1,
            0x6c1e,
            1 << 32 | enc(GUEST_RIP.encoding()),
        ] {
            assert_eq!(vmread(&v, e, false), Err(ERR_UNSUPPORTED), "{e:#x}");
            assert_eq!(
                vmwrite(&mut v, e, 0, true, false),
                Err(ERR_UNSUPPORTED),
                "{e:#x}"
            );
        }
        // Read-only exit information: 13 unless MISC bit 29 is offered.
        let reason = enc(VM_EXIT_REASON.encoding());
        assert_eq!(vmwrite(&mut v, reason, 1, false, false), Err(ERR_READ_ONLY));
        assert_eq!(vmwrite(&mut v, reason, 1, true, false), Ok(()));
        assert_eq!(vmread(&v, reason, false), Ok(1));
        assert_eq!(v.read(VM_EXIT_REASON), Ok(1));
        // Which field an encoding names, and whether as its high half.
        let link_i = index_of(VMCS_LINK_POINTER.encoding()).unwrap();
        assert_eq!(high_half_of(link | 1, false), Some(link_i));
        assert_eq!(high_half_of(link, false), None);
        assert_eq!(field_of(link | 1, false), Some(link_i));
        assert_eq!(field_of(link, false), Some(link_i));
        let rip = enc(GUEST_RIP.encoding());
        assert_eq!(high_half_of(rip | 1, false), None);
        assert_eq!(field_of(rip | 1, false), None);
        assert_eq!(field_of(1 << 32 | rip, false), None);
    }

    #[test]
    fn every_field_round_trips_at_its_width() {
        let mut v = MemVmcs::new();
        for f in FIELDS {
            let e = u64::from(f.encoding);
            if !host_accessible(false, f.encoding) {
                // A hidden feature's field: unsupported, as on a CPU
                // without the feature (also its high half).
                assert_eq!(
                    vmwrite(&mut v, e, 0, true, false),
                    Err(ERR_UNSUPPORTED),
                    "{}",
                    f.name
                );
                assert_eq!(vmread(&v, e, false), Err(ERR_UNSUPPORTED), "{}", f.name);
                assert_eq!(vmread(&v, e | 1, false), Err(ERR_UNSUPPORTED), "{}", f.name);
                continue;
            }
            vmwrite(&mut v, e, u64::MAX, true, false).unwrap();
            assert_eq!(vmread(&v, e, false), Ok(f.width.mask()), "{}", f.name);
            if f.access == Access::ReadOnly {
                assert_eq!(
                    vmwrite(&mut v, e, 0, false, false),
                    Err(ERR_READ_ONLY),
                    "{}",
                    f.name
                );
            }
        }
    }

    const PA: u64 = 0x4_2000;

    fn page_with(mem: &mut FakeMem, pa: u64, launched: bool, rip: u64) {
        mem.set_u64(pa, 4);
        mem.set_u64(pa + 8, if launched { layout::LAUNCHED } else { 0 });
        let i = index_of(GUEST_RIP.encoding()).unwrap() as u64;
        mem.set_u64(pa + 16 + 8 * i, rip);
    }

    #[test]
    fn load_modify_clear_reload() {
        let mut mem = FakeMem::default();
        page_with(&mut mem, PA, false, 0xabc);
        let mut c = Vmcs12Cache::default();
        let v = c.get(&mut mem, PA).unwrap();
        assert!(!v.launched);
        assert_eq!(v.vmcs.read(GUEST_RIP), Ok(0xabc));
        v.vmcs.write(GUEST_RIP, 0xdef).unwrap();
        v.launched = true;
        // Cached: the page is not read again.
        mem.set_u64(PA + 8, 0);
        assert!(c.get(&mut mem, PA).unwrap().launched);
        assert_eq!(c.stats.loads, 1);
        // VMCLEAR: written back, launch state clear, out of the cache.
        assert!(c.clear(&mut mem, PA));
        assert!(!c.contains(PA));
        let i = index_of(GUEST_RIP.encoding()).unwrap() as u64;
        assert_eq!(mem.get_u64(PA + 16 + 8 * i), 0xdef);
        assert_eq!(mem.get_u64(PA + 8), 0);
        // Revision untouched.
        assert_eq!(mem.get_u64(PA), 4);
        let v = c.get(&mut mem, PA).unwrap();
        assert_eq!(v.vmcs.read(GUEST_RIP), Ok(0xdef));
        assert!(!v.launched);
        // VMCLEAR of a VMCS never loaded: only the launch state changes.
        page_with(&mut mem, PA + 0x1000, true, 7);
        assert!(c.clear(&mut mem, PA + 0x1000));
        assert_eq!(mem.get_u64(PA + 0x1000 + 8), 0);
        assert_eq!(mem.get_u64(PA + 0x1000 + 16 + 8 * i), 7);
    }

    /// The debug watch counts a write-back into a page that lost its
    /// revision identifier, a load of a VMCLEARed vmcs12 without VMPTRLD
    /// (with the caller's tag), and GUEST_RSP changes between a reflected
    /// exit and the next entry, split by whether the host wrote it.
    #[test]
    fn watch_counts_foreign_pages_loads_after_clear_and_rsp_changes() {
        let mut mem = FakeMem::default();
        page_with(&mut mem, PA, false, 1);
        let mut c = Vmcs12Cache::default();
        c.watch.enabled = true;
        c.watch.vmptrld(PA, 4);
        c.get(&mut mem, PA).unwrap();
        assert!(c.clear(&mut mem, PA));
        assert_eq!(c.watch.counts, [0; watch::COUNT]);
        // Loaded again without VMPTRLD, then the page is reused.
        c.watch.tag = TAG_REFLECT;
        c.get(&mut mem, PA).unwrap();
        assert_eq!(c.watch.counts[watch::LOAD_AFTER_CLEAR], 1);
        assert_eq!(c.watch.counts[watch::AFTER_CLEAR_TAGS], 1 << TAG_REFLECT);
        mem.set_u64(PA, 0x1234_5678);
        c.watch.tag = TAG_STRESS;
        c.evict_all(&mut mem);
        assert_eq!(c.watch.counts[watch::FOREIGN_EVICT], 1);
        assert_eq!(c.watch.counts[watch::FOREIGN_TAGS], 1 << TAG_STRESS);
        assert!(c.clear(&mut mem, PA));
        assert_eq!(c.watch.counts[watch::FOREIGN_CLEAR], 1);
        // VMPTRLD ends the "cleared" state.
        c.watch.vmptrld(PA, 4);
        c.get(&mut mem, PA).unwrap();
        assert_eq!(c.watch.counts[watch::LOAD_AFTER_CLEAR], 1);
        // GUEST_RSP.
        let w = &mut c.watch;
        w.entry_rsp(PA, 5);
        assert_eq!(w.counts[watch::RSP_CHECKED], 0);
        w.exit_rsp(PA, 0x100);
        w.entry_rsp(PA, 0x100);
        w.exit_rsp(PA, 0x200);
        w.entry_rsp(PA, 0x300);
        assert_eq!(w.counts[watch::RSP_MISMATCH], 1);
        w.host_wrote_rsp(PA);
        w.entry_rsp(PA, 0x100);
        assert_eq!(w.counts[watch::RSP_HOST_CHANGED], 1);
        assert_eq!(w.counts[watch::RSP_HOST_OLD], 1);
        assert_eq!(w.counts[watch::RSP_CHECKED], 3);
    }

    #[test]
    fn eviction_writes_back_the_least_recently_used() {
        // A supply of 16 pages: the cache grows to 16 entries, then evicts.
        let mut mem = FakeMem {
            page_budget: Some(16),
            ..FakeMem::default()
        };
        let mut c = Vmcs12Cache::default();
        let pa = |n: usize| PA + (n as u64) * 0x1000;
        for n in 0..16 {
            page_with(&mut mem, pa(n), false, n as u64);
            c.get(&mut mem, pa(n)).unwrap().launched = true;
        }
        // Touch 0 again: 1 is now the least recently used.
        c.get(&mut mem, pa(0)).unwrap();
        page_with(&mut mem, pa(99), false, 99);
        assert_eq!(
            c.get(&mut mem, pa(99)).unwrap().vmcs.read(GUEST_RIP),
            Ok(99)
        );
        assert_eq!(c.stats.evictions, 1);
        assert!(!c.contains(pa(1)) && c.contains(pa(0)));
        assert_eq!(mem.get_u64(pa(1) + 8), layout::LAUNCHED);
        // Read back, its launch state comes with it.
        assert!(c.get(&mut mem, pa(1)).unwrap().launched);
        assert_eq!((c.pages(), c.entries(), c.stats.grown), (16, 16, 16));
    }

    #[test]
    fn grows_without_a_fixed_limit_and_reuses_cleared_pages() {
        let mut mem = FakeMem::default();
        let mut c = Vmcs12Cache::default();
        let pa = |n: u64| PA + n * 0x1000;
        // 100 vCPUs' VMCSs, all cached: nothing evicted.
        for n in 0..100 {
            page_with(&mut mem, pa(n), false, n);
            c.get(&mut mem, pa(n))
                .unwrap()
                .vmcs
                .write(GUEST_RIP, n + 1000)
                .unwrap();
        }
        assert_eq!((c.entries(), c.pages(), c.stats.evictions), (100, 100, 0));
        for n in 0..100 {
            assert_eq!(
                c.get(&mut mem, pa(n)).unwrap().vmcs.read(GUEST_RIP),
                Ok(n + 1000)
            );
        }
        assert_eq!(c.stats.loads, 100);
        // vCPU migration: VMCLEAR then VMPTRLD of the same VMCS, many
        // times: one write-back and one load each, no new page.
        for _ in 0..50 {
            assert!(c.clear(&mut mem, pa(7)));
            assert!(c.get(&mut mem, pa(7)).is_some());
        }
        assert_eq!((c.pages(), c.stats.grown), (100, 100));
        assert_eq!(c.stats.writebacks, 50);
        assert_eq!(mem.taken, 100);
    }

    #[test]
    fn under_pressure_it_evicts_and_gives_pages_back() {
        let mut mem = FakeMem::default();
        let mut c = Vmcs12Cache::default();
        let pa = |n: u64| PA + n * 0x1000;
        for n in 0..10 {
            page_with(&mut mem, pa(n), false, n);
            c.get(&mut mem, pa(n)).unwrap().launched = true;
        }
        assert_eq!(c.pages(), 10);
        // The supply runs low: no growth beyond MIN_PAGES, eviction instead.
        mem.pressure = true;
        page_with(&mut mem, pa(10), false, 10);
        assert!(c.get(&mut mem, pa(10)).is_some());
        assert_eq!((c.pages(), c.stats.evictions), (10, 1));
        assert_eq!(mem.get_u64(pa(0) + 8), layout::LAUNCHED, "written back");
        // VMCLEAR gives pages back while the cache holds more than MIN_PAGES.
        for n in 1..=10 {
            assert!(c.clear(&mut mem, pa(n)));
        }
        assert_eq!(c.pages(), MIN_PAGES);
        assert_eq!(mem.given.len() as u64, 10 - MIN_PAGES);
        // shrink writes back and gives back down to what is asked.
        assert_eq!(c.shrink(&mut mem, 0), MIN_PAGES);
        assert_eq!((c.pages(), c.entries()), (0, 0));
        // With no supply at all, the first VMPTRLD has no page: None (the
        // caller fails the instruction the architectural way).
        let mut dry = FakeMem {
            page_budget: Some(0),
            ..FakeMem::default()
        };
        page_with(&mut dry, PA, false, 1);
        let mut c = Vmcs12Cache::default();
        assert!(c.get(&mut dry, PA).is_none());
        // One page is enough for any number of VMCSs (each VMPTRLD evicts).
        dry.page_budget = Some(1);
        for n in 0..5 {
            page_with(&mut dry, pa(n), false, n);
            assert_eq!(c.get(&mut dry, pa(n)).unwrap().vmcs.read(GUEST_RIP), Ok(n));
        }
        assert_eq!((c.pages(), c.stats.evictions), (1, 4));
    }

    /// Host memory (the VMCS pages) plus the real reserve as the supply.
    struct MemAndReserve<'a> {
        mem: FakeMem,
        reserve: &'a mut crate::hv::mm::reserve::Reserve,
    }

    impl HostPhys for MemAndReserve<'_> {
        fn read_bytes(&mut self, pa: u64, out: &mut [u8]) -> bool {
            self.mem.read_bytes(pa, out)
        }
        fn write_bytes(&mut self, pa: u64, bytes: &[u8]) -> bool {
            self.mem.write_bytes(pa, bytes)
        }
        fn read_words(&mut self, pa: u64, out: &mut [u64]) -> bool {
            self.mem.read_words(pa, out)
        }
        fn write_words(&mut self, pa: u64, words: &[u64]) -> bool {
            self.mem.write_words(pa, words)
        }
    }

    // SAFETY: forwards to the reserve, whose pages are mapped at its window.
    unsafe impl PageSupply for MemAndReserve<'_> {
        fn take_page(&mut self) -> Option<u64> {
            self.reserve.take()
        }
        fn give_page(&mut self, pa: u64) {
            self.reserve.give(pa);
        }
        fn under_pressure(&self) -> bool {
            self.reserve.under_pressure()
        }
        fn window(&self) -> u64 {
            self.reserve.window()
        }
    }

    /// The cache on the real reserve, donated through the page-state
    /// machine of the simulated machine: it grows until the reserve runs
    /// low, then evicts; the reserve's books match the cache's pages and
    /// the ownership invariants hold throughout.
    #[test]
    fn cache_on_the_reserve_keeps_the_books_and_the_invariants() {
        use crate::hv::mm::addr::lit::hpa;
        use crate::hv::mm::mem_protect::tests::World;
        use crate::hv::mm::reserve::{self, testing::heap_batch, Reserve, LOW_WATERMARK};
        let mut w = World::new();
        const P: u64 = 0x200_0000;
        let mut r = Reserve::default();
        r.set_window(heap_batch(32).wrapping_sub(P));
        // SAFETY: the window maps [P, P + 32 pages) onto heap pages.
        unsafe { reserve::donate(&mut w.host, &mut w.hyp, &mut w.mm, &mut r, hpa(P), 32) }.unwrap();
        w.check_invariants();
        let mut c = Vmcs12Cache::default();
        let pa = |n: u64| PA + n * 0x1000;
        let mut m = MemAndReserve {
            mem: FakeMem::default(),
            reserve: &mut r,
        };
        for n in 0..40 {
            page_with(&mut m.mem, pa(n), false, n);
            let v = c.get(&mut m, pa(n)).unwrap();
            v.launched = true;
            v.vmcs.write(GUEST_RIP, n + 500).unwrap();
            assert_eq!(m.reserve.in_use(), c.pages());
            m.reserve.check().unwrap();
        }
        // It grew while the reserve had LOW_WATERMARK free, then evicted.
        assert_eq!(c.pages(), 31 - (LOW_WATERMARK - 1));
        assert_eq!(c.stats.evictions, 40 - c.pages());
        // Every VMCS is right, cached or read back from its page.
        for n in 0..40 {
            let v = c.get(&mut m, pa(n)).unwrap();
            assert!(v.launched);
            assert_eq!(v.vmcs.read(GUEST_RIP), Ok(n + 500));
        }
        // VMCLEAR of all: pages go back while the reserve is under
        // pressure (back to its low watermark), the rest stay as spares.
        let grown = c.pages();
        for n in 0..40 {
            assert!(c.clear(&mut m, pa(n)));
        }
        assert_eq!(m.reserve.free(), LOW_WATERMARK);
        assert_eq!(c.pages(), grown - 1);
        assert_eq!(c.entries(), 0);
        assert_eq!(m.reserve.in_use(), c.pages());
        m.reserve.check().unwrap();
        w.check_invariants();
    }

    #[test]
    fn scribbled_pages_give_only_writable_values() {
        let mut mem = FakeMem::default();
        for w in 1..=layout::WORDS as u64 {
            mem.set_u64(PA + 8 * w, u64::MAX);
        }
        let mut c = Vmcs12Cache::default();
        let v = c.get(&mut mem, PA).unwrap();
        // Any launch-state word but LAUNCHED is clear.
        assert!(!v.launched);
        for (i, f) in FIELDS.iter().enumerate() {
            assert_eq!(v.vmcs.value_at(i), Some(f.width.mask()), "{}", f.name);
        }
    }

    #[test]
    fn pages_that_are_not_the_hosts_are_never_touched() {
        let mut mem = FakeMem::default();
        page_with(&mut mem, PA, false, 1);
        let mut c = Vmcs12Cache::default();
        let v = c.get(&mut mem, PA).unwrap();
        v.launched = true;
        v.vmcs.write(GUEST_RIP, 0x5555).unwrap();
        // The page was donated away after VMPTRLD: VMCLEAR fails and
        // writes nothing into hypervisor memory, and the state is not
        // dropped: it stays cached, as the CPU keeps a VMCS whose VMCLEAR
        // failed.
        mem.not_host.insert(PA);
        assert!(!c.clear(&mut mem, PA));
        assert_eq!(c.stats.unwritable, 1);
        assert_eq!(mem.refused, [PA]);
        assert!(c.contains(PA));
        // The page is the host's again: VMCLEAR writes the newest state.
        mem.not_host.remove(&PA);
        assert!(c.clear(&mut mem, PA));
        let i = index_of(GUEST_RIP.encoding()).unwrap() as u64;
        assert_eq!(mem.get_u64(PA + 16 + 8 * i), 0x5555);
        // A page never cached that is not the host's: refused, untouched.
        mem.not_host.insert(PA + 0x1000);
        assert!(!c.clear(&mut mem, PA + 0x1000));
        assert!(c.get(&mut mem, PA + 0x1000).is_none());
    }

    /// Eviction never throws a newer state away: an entry whose page the
    /// host does not own at that moment is passed over (the next least
    /// recently used goes), and what is read back later is always the
    /// newest state (an older page image was the msrs_test suspect).
    #[test]
    fn eviction_passes_over_unwritable_pages_and_loses_nothing() {
        let mut mem = FakeMem {
            page_budget: Some(2),
            ..FakeMem::default()
        };
        let pa = |n: u64| PA + n * 0x1000;
        let mut c = Vmcs12Cache::default();
        for n in 0..2 {
            page_with(&mut mem, pa(n), false, n);
            c.get(&mut mem, pa(n))
                .unwrap()
                .vmcs
                .write(GUEST_RIP, 100 + n)
                .unwrap();
        }
        // 0 is the least recently used, but its page is not the host's:
        // 1 is evicted instead.
        mem.not_host.insert(pa(0));
        page_with(&mut mem, pa(2), false, 2);
        assert_eq!(c.get(&mut mem, pa(2)).unwrap().vmcs.read(GUEST_RIP), Ok(2));
        assert!(c.contains(pa(0)) && !c.contains(pa(1)));
        assert_eq!((c.stats.unwritable, c.stats.evictions), (1, 1));
        // Nothing can be written back (2's page refused too): no page for
        // a new entry, the state of both stays.
        mem.not_host.insert(pa(2));
        page_with(&mut mem, pa(3), false, 3);
        assert!(c.get(&mut mem, pa(3)).is_none());
        assert!(c.contains(pa(0)) && c.contains(pa(2)));
        mem.not_host.clear();
        // Every state, read back or cached, is the newest one.
        for (n, rip) in [(0, 100), (1, 101), (2, 2), (3, 3)] {
            assert_eq!(
                c.get(&mut mem, pa(n)).unwrap().vmcs.read(GUEST_RIP),
                Ok(rip),
                "{n}"
            );
        }
    }

    /// `write_back_all` writes every entry's state into its page and keeps
    /// the entry.
    #[test]
    fn write_back_all_writes_and_keeps() {
        let mut mem = FakeMem::default();
        page_with(&mut mem, PA, false, 1);
        let mut c = Vmcs12Cache::default();
        let v = c.get(&mut mem, PA).unwrap();
        v.vmcs.write(GUEST_RIP, 0x77).unwrap();
        v.launched = true;
        assert_eq!(c.write_back_all(&mut mem), 1);
        assert!(c.contains(PA));
        let i = index_of(GUEST_RIP.encoding()).unwrap() as u64;
        assert_eq!(mem.get_u64(PA + 16 + 8 * i), 0x77);
        assert_eq!(mem.get_u64(PA + 8), layout::LAUNCHED);
        // `read_all` reads and writes nothing.
        c.get(&mut mem, PA)
            .unwrap()
            .vmcs
            .write(GUEST_RIP, 0x88)
            .unwrap();
        assert_eq!(c.read_all(&mut mem), 1);
        // `rewrite_all` leaves the page as it was.
        assert_eq!(c.rewrite_all(&mut mem), 1);
        assert_eq!(mem.get_u64(PA + 16 + 8 * i), 0x77);
        assert_eq!(mem.get_u64(PA + 16 + 8 * i), 0x77);
    }

    /// The stress mode's `evict_all`: every vmcs12 leaves the cache through
    /// its page and comes back unchanged (fields and launch state), with
    /// the pages kept as spares.
    #[test]
    fn evict_all_round_trips_every_vmcs12() {
        let mut mem = FakeMem::default();
        let pa = |n: u64| PA + n * 0x1000;
        let mut c = Vmcs12Cache::default();
        for n in 0..6 {
            page_with(&mut mem, pa(n), false, n);
            let v = c.get(&mut mem, pa(n)).unwrap();
            v.vmcs.write(GUEST_RIP, 0x1000 + n).unwrap();
            v.vmcs.write(GUEST_RSP, 0x2000 + n).unwrap();
            v.launched = n % 2 == 0;
        }
        mem.not_host.insert(pa(5));
        assert_eq!(c.evict_all(&mut mem), 5);
        assert_eq!((c.entries(), c.pages()), (1, 6));
        mem.not_host.clear();
        for n in 0..6 {
            let v = c.get(&mut mem, pa(n)).unwrap();
            assert_eq!(v.vmcs.read(GUEST_RIP), Ok(0x1000 + n));
            assert_eq!(v.vmcs.read(GUEST_RSP), Ok(0x2000 + n));
            assert_eq!(v.launched, n % 2 == 0);
        }
        // No new page was taken: the spares served the reloads.
        assert_eq!(c.pages(), 6);
    }
}
