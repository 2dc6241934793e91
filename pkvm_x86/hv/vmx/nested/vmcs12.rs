// SPDX-License-Identifier: GPL-2.0

//! The vmcs12 store: the host's VMCSs (vmcs12) as pkvm keeps them, and
//! VMREAD/VMWRITE with the hardware's semantics on them.
//!
//! A vmcs12 lives in hypervisor memory as a [`MemVmcs`] plus its launch
//! state ([`Vmcs12`]), in a bounded cache shared by every CPU
//! ([`Vmcs12Cache`], inside the hypervisor-wide state, under the hypervisor
//! lock) keyed by the host physical address of its VMCS region.  There is
//! no per-vCPU limit: a VMCS that is not in the cache lives in the host's
//! own VMCS page, in pkvm's format ([`layout`]), which VMCLEAR (and the
//! eviction of the least recently used entry when the cache is full) writes
//! and VMPTRLD (or the next use of an evicted current VMCS) reads back
//! once.  VMCLEAR on vCPU migration costs one page write.
//!
//! The host may scribble on its page between VMCLEAR and VMPTRLD.  It can
//! only produce values it could have VMWRITten anyway: every field is read
//! back masked to its width, and the launch state read back only decides
//! between VMLAUNCH and VMRESUME (both validate the vmcs12 in full before
//! any entry).  Reads and writes of the page go through
//! `super::host_walk::HostPhys`, which refuses any page the host does not
//! own at that moment (a page donated since VMPTRLD is neither read nor
//! written; its state is dropped).

use super::field_class::host_accessible;
use super::host_walk::HostPhys;
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

/// Entries of the cache.  Each is about 1.7 KiB; a CPU uses one at a
/// time (its current VMCS), so this is room for that plus what KVM
/// switches between.
pub const CACHE_SLOTS: usize = 16;

/// One cache entry.
#[derive(Clone, Debug, Default)]
struct Slot {
    /// In use.
    used: bool,
    /// Host physical address of the VMCS region.
    pa: u64,
    /// Last use (the cache's clock), for eviction.
    stamp: u64,
    v: Vmcs12,
}

/// What the cache did, for statistics and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// vmcs12 read from a host page.
    pub loads: u64,
    /// vmcs12 written to a host page (VMCLEAR or eviction).
    pub writebacks: u64,
    /// Entries evicted to make room.
    pub evictions: u64,
    /// State dropped because its page was no longer the host's.
    pub dropped: u64,
}

/// The bounded vmcs12 cache.  All-zero bytes are a valid empty cache
/// (nothing used), so it can be set up in place in pool memory.
#[derive(Clone, Debug, Default)]
pub struct Vmcs12Cache {
    slots: [Slot; CACHE_SLOTS],
    clock: u64,
    /// Statistics.
    pub stats: CacheStats,
}

impl Vmcs12Cache {
    /// The vmcs12 at `pa`: from the cache, or read from the host's page
    /// into a free (or evicted) entry.  `None` if the page cannot be read
    /// (not the host's).
    pub fn get(&mut self, mem: &mut impl HostPhys, pa: u64) -> Option<&mut Vmcs12> {
        self.clock = self.clock.wrapping_add(1);
        let now = self.clock;
        let i = match self.slots.iter().position(|s| s.used && s.pa == pa) {
            Some(i) => i,
            None => self.load(mem, pa)?,
        };
        let s = self.slots.get_mut(i)?;
        s.stamp = now;
        Some(&mut s.v)
    }

    /// Whether `pa` is in the cache.
    pub fn contains(&self, pa: u64) -> bool {
        self.slots.iter().any(|s| s.used && s.pa == pa)
    }

    /// VMCLEAR of `pa`: its state (launch state clear) is written to the
    /// host's page and leaves the cache; a VMCS not in the cache gets its
    /// launch state cleared in the page.  `false` if the page is not the
    /// host's (nothing written).
    pub fn clear(&mut self, mem: &mut impl HostPhys, pa: u64) -> bool {
        if let Some(s) = self.slots.iter_mut().find(|s| s.used && s.pa == pa) {
            s.v.launched = false;
            s.used = false;
            let ok = write_back(mem, s.pa, &s.v);
            self.stats.writebacks += u64::from(ok);
            self.stats.dropped += u64::from(!ok);
            return ok;
        }
        mem.write_words(pa + layout::LAUNCH_OFFSET, &[0])
    }

    /// Reads `pa` into an entry; returns its index.
    fn load(&mut self, mem: &mut impl HostPhys, pa: u64) -> Option<usize> {
        let mut words = [0u64; layout::WORDS];
        if !mem.read_words(pa + layout::LAUNCH_OFFSET, &mut words) {
            return None;
        }
        let i = self.free_slot(mem)?;
        let s = self.slots.get_mut(i)?;
        s.used = true;
        s.pa = pa;
        s.v.launched = words.first() == Some(&layout::LAUNCHED);
        for (f, w) in words.iter().skip(1).enumerate() {
            // Masked to the field's width: any value VMWRITE could store.
            s.v.vmcs.load_at(f, *w);
        }
        self.stats.loads += 1;
        Some(i)
    }

    /// A free entry, evicting the least recently used one (written back
    /// to its page) if there is none.
    fn free_slot(&mut self, mem: &mut impl HostPhys) -> Option<usize> {
        if let Some(i) = self.slots.iter().position(|s| !s.used) {
            return Some(i);
        }
        let (i, _) = self.slots.iter().enumerate().min_by_key(|(_, s)| s.stamp)?;
        let s = self.slots.get_mut(i)?;
        let ok = write_back(mem, s.pa, &s.v);
        s.used = false;
        self.stats.evictions += 1;
        self.stats.writebacks += u64::from(ok);
        self.stats.dropped += u64::from(!ok);
        Some(i)
    }
}

/// Writes `v` into the host's page `pa` in pkvm's format.
fn write_back(mem: &mut impl HostPhys, pa: u64, v: &Vmcs12) -> bool {
    let mut words = [0u64; layout::WORDS];
    for (i, w) in words.iter_mut().enumerate() {
        *w = match i {
            0 if v.launched => layout::LAUNCHED,
            0 => 0,
            _ => v.vmcs.value_at(i - 1).unwrap_or(0),
        };
    }
    mem.write_words(pa + layout::LAUNCH_OFFSET, &words)
}

/// VM-instruction error numbers of VMREAD/VMWRITE.
pub const ERR_UNSUPPORTED: u32 = 12;
/// VMWRITE to a read-only component.
pub const ERR_READ_ONLY: u32 = 13;

/// The table position of the field an encoding names, and whether the
/// encoding is the high-half access of a 64-bit field; `None` for an
/// unsupported component (bits 63:32 set, not in the table, a high-half
/// access to a field that is not 64-bit, a field of a feature the view
/// hides: `field_class::host_accessible`, as on a CPU without it).
fn locate(encoding: u64) -> Option<(usize, bool)> {
    let e = u32::try_from(encoding).ok()?;
    if !host_accessible(e & !1) {
        return None;
    }
    if e & 1 != 0 {
        let i = fields::index_of(e & !1)?;
        return (FIELDS.get(i)?.width == Width::W64).then_some((i, true));
    }
    Some((fields::index_of(e)?, false))
}

/// VMREAD of `encoding` from `v`: the value, zero-extended (the high half
/// of a 64-bit field for its high-half encoding), or the VM-instruction
/// error.
pub fn vmread(v: &MemVmcs, encoding: u64) -> Result<u64, u32> {
    let (i, high) = locate(encoding).ok_or(ERR_UNSUPPORTED)?;
    let val = v.value_at(i).ok_or(ERR_UNSUPPORTED)?;
    Ok(if high { val >> 32 } else { val })
}

/// VMWRITE of `value` to `encoding` in `v`: truncated to the field's
/// width; a high-half encoding writes bits 63:32 only.  Read-only
/// (exit-information) fields are written only when `write_any` (the view's
/// IA32_VMX_MISC bit 29), else error 13.
pub fn vmwrite(v: &mut MemVmcs, encoding: u64, value: u64, write_any: bool) -> Result<(), u32> {
    let (i, high) = locate(encoding).ok_or(ERR_UNSUPPORTED)?;
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
        )
        .unwrap();
        assert_eq!(vmread(&v, enc(GUEST_CS_SELECTOR.encoding())), Ok(0x5678));
        vmwrite(&mut v, enc(GUEST_CS_LIMIT.encoding()), u64::MAX, false).unwrap();
        assert_eq!(vmread(&v, enc(GUEST_CS_LIMIT.encoding())), Ok(0xffff_ffff));
        // 64-bit field: full and high-half access.
        let link = enc(VMCS_LINK_POINTER.encoding());
        vmwrite(&mut v, link, 0x1111_2222_3333_4444, false).unwrap();
        assert_eq!(vmread(&v, link | 1), Ok(0x1111_2222));
        vmwrite(&mut v, link | 1, 0xffff_ffff_aaaa_bbbb, false).unwrap();
        assert_eq!(vmread(&v, link), Ok(0xaaaa_bbbb_3333_4444));
        // High-half encodings of non-64-bit fields, encodings outside the
        // table, bits 63:32 set: unsupported.
        for e in [
            enc(GUEST_RIP.encoding()) | 1,
            enc(GUEST_CS_SELECTOR.encoding()) | 1,
            0x6c1e,
            1 << 32 | enc(GUEST_RIP.encoding()),
        ] {
            assert_eq!(vmread(&v, e), Err(ERR_UNSUPPORTED), "{e:#x}");
            assert_eq!(vmwrite(&mut v, e, 0, true), Err(ERR_UNSUPPORTED), "{e:#x}");
        }
        // Read-only exit information: 13 unless MISC bit 29 is offered.
        let reason = enc(VM_EXIT_REASON.encoding());
        assert_eq!(vmwrite(&mut v, reason, 1, false), Err(ERR_READ_ONLY));
        assert_eq!(vmwrite(&mut v, reason, 1, true), Ok(()));
        assert_eq!(vmread(&v, reason), Ok(1));
        assert_eq!(v.read(VM_EXIT_REASON), Ok(1));
    }

    #[test]
    fn every_field_round_trips_at_its_width() {
        let mut v = MemVmcs::new();
        for f in FIELDS {
            let e = u64::from(f.encoding);
            if !host_accessible(f.encoding) {
                // A hidden feature's field: unsupported, as on a CPU
                // without the feature (also its high half).
                assert_eq!(
                    vmwrite(&mut v, e, 0, true),
                    Err(ERR_UNSUPPORTED),
                    "{}",
                    f.name
                );
                assert_eq!(vmread(&v, e), Err(ERR_UNSUPPORTED), "{}", f.name);
                assert_eq!(vmread(&v, e | 1), Err(ERR_UNSUPPORTED), "{}", f.name);
                continue;
            }
            vmwrite(&mut v, e, u64::MAX, true).unwrap();
            assert_eq!(vmread(&v, e), Ok(f.width.mask()), "{}", f.name);
            if f.access == Access::ReadOnly {
                assert_eq!(
                    vmwrite(&mut v, e, 0, false),
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

    #[test]
    fn eviction_writes_back_the_least_recently_used() {
        let mut mem = FakeMem::default();
        let mut c = Vmcs12Cache::default();
        let pa = |n: usize| PA + (n as u64) * 0x1000;
        for n in 0..CACHE_SLOTS {
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
        c.get(&mut mem, PA).unwrap().launched = true;
        // The page was donated away after VMPTRLD: VMCLEAR drops the state
        // instead of writing hypervisor memory.
        mem.not_host.insert(PA);
        assert!(!c.clear(&mut mem, PA));
        assert_eq!(c.stats.dropped, 1);
        assert!(c.get(&mut mem, PA).is_none());
        assert_eq!(mem.refused, [PA, PA]);
    }
}
