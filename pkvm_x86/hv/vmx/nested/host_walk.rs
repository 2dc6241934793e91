// SPDX-License-Identifier: GPL-2.0

//! Reaching the host's memory from root mode for the memory operands of
//! its VMX instructions: the walk of the host's own page tables (4-level
//! paging, CR4.LA57 refused) and byte accesses at linear addresses, over an
//! abstract [`HostPhys`] that only ever touches host-owned RAM.
//!
//! The walk is the CPU's (SDM Vol. 3A, "4-Level Paging", "Access Rights",
//! "Page-Fault Exceptions"): present bits, reserved bits (beyond
//! MAXPHYADDR, PS in a PML4E, XD without EFER.NXE, the low bits of large
//! pages), R/W with CR0.WP for supervisor writes, U/S, SMAP for supervisor
//! data accesses to user pages unless RFLAGS.AC.  A fault gives the #PF the
//! CPU would raise (error code P, W/R, U/S, RSVD; CR2 the linear address).
//! Every paging-structure page and the data page must be host-owned RAM
//! (never hypervisor memory, never a page donated to anyone): otherwise the
//! access fails with the #PF the host gets for touching protected memory
//! natively (P=1, see `ProtectedMemory` in `crate::hv::host_policy`), and
//! nothing of that page is read or written.
//!
//! Deviations, documented: accessed and dirty flags are not set by the
//! walk (Linux maps its kernel memory with them preset), and 32-bit/PAE
//! paging and 5-level paging are refused with #GP(0) (pkvm runs 64-bit
//! hosts with 4-level paging only).

use super::operand::Fault;

/// The host's physical memory as root mode may touch it: only pages the
/// host owns (RAM, its state `OWNED` in the host EPT); every method fails
/// (`false`), touching nothing, for any other page.
pub trait HostPhys {
    /// Reads `out.len()` bytes at `pa`, all within one page.
    fn read_bytes(&mut self, pa: u64, out: &mut [u8]) -> bool;
    /// Writes `bytes` at `pa`, all within one page.
    fn write_bytes(&mut self, pa: u64, bytes: &[u8]) -> bool;
    /// Reads the 8-byte words at `pa` (8-aligned), `pa + 8`, ... into
    /// `out`, all within one page.
    fn read_words(&mut self, pa: u64, out: &mut [u64]) -> bool;
    /// Writes `words` at `pa` (8-aligned), `pa + 8`, ..., all within one page.
    fn write_words(&mut self, pa: u64, words: &[u64]) -> bool;
    /// Reads word `w` of the page at `page` (4 KiB aligned) into `out[w]`
    /// for every `w` whose bit is set in `mask` (bit `w % 64` of
    /// `mask[w / 64]`), leaving the other words of `out`; `false` (and
    /// `out` partly written) if the page cannot be read.  An
    /// implementation may map the page once for all of them.
    fn read_page_words(&mut self, page: u64, mask: &[u64; 8], out: &mut [u64; 512]) -> bool {
        if page & 0xfff != 0 {
            return false;
        }
        for (w, o) in out.iter_mut().enumerate() {
            if mask[w / 64] & (1 << (w % 64)) != 0 {
                let mut one = [0u64; 1];
                if !self.read_words(page + 8 * w as u64, &mut one) {
                    return false;
                }
                *o = one[0];
            }
        }
        true
    }
}

/// Paging state of the host CPU that a walk depends on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct PagingCtx {
    /// CR0.
    pub cr0: u64,
    /// CR3.
    pub cr3: u64,
    /// CR4 (the real one: LA57, SMAP, PCIDE as the CPU uses them).
    pub cr4: u64,
    /// IA32_EFER.
    pub efer: u64,
    /// The access is a user-mode one (CPL 3).
    pub user: bool,
    /// RFLAGS.AC.
    pub ac: bool,
    /// MAXPHYADDR.
    pub phys_bits: u8,
}

use crate::hv::host_policy::{cr4::LA57 as CR4_LA57, cr4::SMAP as CR4_SMAP, CR0_WP};

const CR0_PG: u64 = 1 << 31;
const EFER_LMA: u64 = 1 << 10;
const EFER_NXE: u64 = 1 << 11;

const PTE_P: u64 = 1 << 0;
const PTE_RW: u64 = 1 << 1;
const PTE_US: u64 = 1 << 2;
const PTE_PS: u64 = 1 << 7;
const PTE_XD: u64 = 1 << 63;

/// Page-fault error code bits.
pub mod pfec {
    /// The page was present (protection violation).
    pub const P: u32 = 1 << 0;
    /// A write.
    pub const W: u32 = 1 << 1;
    /// A user-mode access.
    pub const U: u32 = 1 << 2;
    /// A reserved bit was set.
    pub const RSVD: u32 = 1 << 3;
}

impl PagingCtx {
    fn pf(&self, la: u64, write: bool, extra: u32) -> Fault {
        let mut code = extra;
        if write {
            code |= pfec::W;
        }
        if self.user {
            code |= pfec::U;
        }
        Fault::Pf { addr: la, code }
    }

    /// The #PF for an access that reached memory the host does not own.
    pub fn protected(&self, la: u64) -> Fault {
        // As `EptViolation::host_pf_error_code`: P=1, reported as a read.
        Fault::Pf {
            addr: la,
            code: pfec::P | if self.user { pfec::U } else { 0 },
        }
    }

    /// Physical-address bits an entry may use (51:12 up to MAXPHYADDR).
    fn addr_mask(&self) -> u64 {
        let bits = u32::from(self.phys_bits.clamp(32, 52));
        ((1u64 << bits) - 1) & !0xfff
    }
}

/// Translates linear address `la` for a data access (`write` or read),
/// walking the host's page tables through `mem`.
pub fn translate(
    mem: &mut impl HostPhys,
    ctx: &PagingCtx,
    la: u64,
    write: bool,
) -> Result<u64, Fault> {
    if ctx.cr0 & CR0_PG == 0 {
        // Paging off (only possible outside long mode): linear is physical.
        return Ok(la & 0xffff_ffff);
    }
    if ctx.efer & EFER_LMA == 0 || ctx.cr4 & CR4_LA57 != 0 {
        // 32-bit, PAE or 5-level paging: not supported (see module docs).
        return Err(Fault::Gp(0));
    }
    let mask = ctx.addr_mask();
    let reserved_hi = !mask & 0x000f_ffff_ffff_f000;
    let xd_reserved = if ctx.efer & EFER_NXE == 0 { PTE_XD } else { 0 };
    let mut table = ctx.cr3 & mask;
    let mut rw = true;
    let mut us = true;
    let mut level = 4u32;
    let pa = loop {
        let shift = 12 + 9 * (level - 1);
        let idx = (la >> shift) & 0x1ff;
        let mut word = [0u64; 1];
        if !mem.read_words(table + idx * 8, &mut word) {
            return Err(ctx.protected(la));
        }
        let e = word[0];
        if e & PTE_P == 0 {
            return Err(ctx.pf(la, write, 0));
        }
        let large = level != 1 && e & PTE_PS != 0;
        let mut rsvd = e & (reserved_hi | xd_reserved) != 0;
        if level == 4 && e & PTE_PS != 0 {
            rsvd = true;
        }
        if large {
            // Bits 29:13 (1 GiB) or 20:13 (2 MiB) are reserved; 12 is PAT.
            let low = ((1u64 << shift) - 1) & !0x1fff;
            rsvd |= e & low != 0;
        }
        if rsvd {
            return Err(ctx.pf(la, write, pfec::P | pfec::RSVD));
        }
        rw &= e & PTE_RW != 0;
        us &= e & PTE_US != 0;
        if level == 1 || large {
            let page_mask = (1u64 << shift) - 1;
            break (e & mask & !page_mask) | (la & page_mask);
        }
        table = e & mask;
        level -= 1;
    };
    let denied = if ctx.user {
        !us || (write && !rw)
    } else {
        (write && !rw && ctx.cr0 & CR0_WP != 0) || (us && ctx.cr4 & CR4_SMAP != 0 && !ctx.ac)
    };
    if denied {
        return Err(ctx.pf(la, write, pfec::P));
    }
    Ok(pa)
}

/// Reads `out.len()` (at most 16) bytes at linear address `la`: every page
/// is translated (and must be host RAM) before anything is read; an access
/// that straddles two pages reads both.
pub fn read_linear(
    mem: &mut impl HostPhys,
    ctx: &PagingCtx,
    la: u64,
    out: &mut [u8],
) -> Result<(), Fault> {
    let (first, second) = split(mem, ctx, la, out.len(), false)?;
    let n1 = first.1;
    let (a, b) = out.split_at_mut(n1.min(out.len()));
    if !mem.read_bytes(first.0, a) {
        return Err(ctx.protected(la));
    }
    if let Some((pa2, _)) = second {
        if !mem.read_bytes(pa2, b) {
            return Err(ctx.protected(la.wrapping_add(n1 as u64)));
        }
    }
    Ok(())
}

/// Writes `bytes` (at most 16) at linear address `la`, after translating
/// every page they touch: a fault writes nothing.
pub fn write_linear(
    mem: &mut impl HostPhys,
    ctx: &PagingCtx,
    la: u64,
    bytes: &[u8],
) -> Result<(), Fault> {
    let (first, second) = split(mem, ctx, la, bytes.len(), true)?;
    let n1 = first.1;
    let (a, b) = bytes.split_at(n1.min(bytes.len()));
    if !mem.write_bytes(first.0, a) {
        return Err(ctx.protected(la));
    }
    if let Some((pa2, _)) = second {
        if !mem.write_bytes(pa2, b) {
            return Err(ctx.protected(la.wrapping_add(n1 as u64)));
        }
    }
    Ok(())
}

/// The physical pieces of a `len`-byte access at `la`: (address, bytes)
/// in the first page, and in the second if it straddles.
#[allow(clippy::type_complexity)]
fn split(
    mem: &mut impl HostPhys,
    ctx: &PagingCtx,
    la: u64,
    len: usize,
    write: bool,
) -> Result<((u64, usize), Option<(u64, usize)>), Fault> {
    let in_first = (4096 - (la & 0xfff) as usize).min(len);
    let pa1 = translate(mem, ctx, la, write)?;
    if in_first == len {
        return Ok(((pa1, len), None));
    }
    let la2 = la.wrapping_add(in_first as u64);
    let pa2 = translate(mem, ctx, la2, write)?;
    Ok(((pa1, in_first), Some((pa2, len - in_first))))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    extern crate std;
    use std::collections::{BTreeMap, BTreeSet};

    /// Host memory for tests: sparse pages, and a set of pages that are not
    /// the host's (every access to them fails and is recorded).  It is also
    /// the vmcs12 cache's page supply: fresh heap pages (leaked), at most
    /// `page_budget` of them if set, given-back pages reused.
    #[derive(Default, Clone)]
    pub(crate) struct FakeMem {
        pub(crate) pages: BTreeMap<u64, [u8; 4096]>,
        pub(crate) not_host: BTreeSet<u64>,
        pub(crate) refused: std::vec::Vec<u64>,
        pub(crate) page_budget: Option<u64>,
        pub(crate) taken: u64,
        pub(crate) given: std::vec::Vec<u64>,
        pub(crate) pressure: bool,
    }

    // SAFETY: pages are fresh leaked heap pages (window 0) or ones given
    // back, zeroed before they are handed out again; a clone of the
    // supply is never used for the same cache.
    unsafe impl crate::hv::mm::reserve::PageSupply for FakeMem {
        fn take_page(&mut self) -> Option<u64> {
            let p = match self.given.pop() {
                Some(p) => p,
                None => {
                    if self.page_budget == Some(0) {
                        return None;
                    }
                    if let Some(b) = self.page_budget.as_mut() {
                        *b -= 1;
                    }
                    crate::hv::mm::reserve::testing::heap_batch(1)
                }
            };
            // SAFETY: a leaked heap page no one else uses now.
            unsafe { core::ptr::write_bytes(p as *mut u8, 0, 4096) };
            self.taken += 1;
            Some(p)
        }
        fn give_page(&mut self, pa: u64) {
            self.given.push(pa);
        }
        fn under_pressure(&self) -> bool {
            self.pressure
        }
        fn window(&self) -> u64 {
            0
        }
    }

    impl FakeMem {
        fn page(&mut self, pa: u64) -> Option<&mut [u8; 4096]> {
            let p = pa & !0xfff;
            if self.not_host.contains(&p) {
                self.refused.push(p);
                return None;
            }
            Some(self.pages.entry(p).or_insert([0; 4096]))
        }
        pub(crate) fn set_u64(&mut self, pa: u64, v: u64) {
            let o = (pa & 0xfff) as usize;
            self.page(pa).unwrap()[o..o + 8].copy_from_slice(&v.to_le_bytes());
        }
        pub(crate) fn get_u64(&mut self, pa: u64) -> u64 {
            let o = (pa & 0xfff) as usize;
            u64::from_le_bytes(self.page(pa).unwrap()[o..o + 8].try_into().unwrap())
        }
    }

    impl HostPhys for FakeMem {
        fn read_bytes(&mut self, pa: u64, out: &mut [u8]) -> bool {
            let o = (pa & 0xfff) as usize;
            assert!(o + out.len() <= 4096, "crosses a page");
            match self.page(pa) {
                Some(p) => {
                    out.copy_from_slice(&p[o..o + out.len()]);
                    true
                }
                None => false,
            }
        }
        fn write_bytes(&mut self, pa: u64, bytes: &[u8]) -> bool {
            let o = (pa & 0xfff) as usize;
            assert!(o + bytes.len() <= 4096, "crosses a page");
            match self.page(pa) {
                Some(p) => {
                    p[o..o + bytes.len()].copy_from_slice(bytes);
                    true
                }
                None => false,
            }
        }
        fn read_words(&mut self, pa: u64, out: &mut [u64]) -> bool {
            assert_eq!(pa % 8, 0);
            let o = (pa & 0xfff) as usize;
            assert!(o + out.len() * 8 <= 4096, "crosses a page");
            match self.page(pa) {
                Some(p) => {
                    for (i, w) in out.iter_mut().enumerate() {
                        *w = u64::from_le_bytes(p[o + 8 * i..o + 8 * i + 8].try_into().unwrap());
                    }
                    true
                }
                None => false,
            }
        }
        fn write_words(&mut self, pa: u64, words: &[u64]) -> bool {
            assert_eq!(pa % 8, 0);
            let o = (pa & 0xfff) as usize;
            assert!(o + words.len() * 8 <= 4096, "crosses a page");
            match self.page(pa) {
                Some(p) => {
                    for (i, w) in words.iter().enumerate() {
                        p[o + 8 * i..o + 8 * i + 8].copy_from_slice(&w.to_le_bytes());
                    }
                    true
                }
                None => false,
            }
        }
    }

    pub(crate) const CR3: u64 = 0x10_0000;
    const RW: u64 = PTE_P | PTE_RW;

    /// Maps `la` to `pa` with 4K pages and leaf flags `flags`, building
    /// tables at 0x101000.. (one per level, indexed by level).
    pub(crate) fn map4k(m: &mut FakeMem, la: u64, pa: u64, flags: u64) {
        let mut table = CR3;
        for level in (2..=4u32).rev() {
            let idx = (la >> (12 + 9 * (level - 1))) & 0x1ff;
            let e = m.get_u64(table + idx * 8);
            let next = if e & PTE_P != 0 {
                e & 0x000f_ffff_ffff_f000
            } else {
                let n = 0x20_0000
                    + (la >> (12 + 9 * (level - 1)) << 12) % 0x10_0000
                    + u64::from(level) * 0x100_0000;
                m.set_u64(table + idx * 8, n | RW | PTE_US);
                n
            };
            table = next;
        }
        m.set_u64(table + ((la >> 12) & 0x1ff) * 8, pa | flags);
    }

    pub(crate) fn ctx() -> PagingCtx {
        PagingCtx {
            cr0: CR0_PG | CR0_WP | 1,
            cr3: CR3,
            cr4: 1 << 5,
            efer: EFER_LMA | EFER_NXE | 1 << 8,
            user: false,
            ac: false,
            phys_bits: 39,
        }
    }

    #[test]
    fn translates_4k_2m_1g() {
        let mut m = FakeMem::default();
        let c = ctx();
        map4k(&mut m, 0xffff_8880_0000_1000, 0x5000, RW);
        assert_eq!(
            translate(&mut m, &c, 0xffff_8880_0000_1234, true),
            Ok(0x5234)
        );
        // A 2M page: the PDE with PS.
        map4k(&mut m, 0x4000_0000, 0x6000, RW);
        let pdpte = m.get_u64(CR3) & 0x000f_ffff_ffff_f000;
        let pd = m.get_u64(pdpte + 8) & 0x000f_ffff_ffff_f000;
        m.set_u64(pd + 8, 0x80_0000 | RW | PTE_PS);
        assert_eq!(translate(&mut m, &c, 0x4020_1234, false), Ok(0x80_1234));
        // A 1G page at PDPT index 2.
        m.set_u64(pdpte + 16, 0x4000_0000 | RW | PTE_PS);
        assert_eq!(translate(&mut m, &c, 0x8765_4321, false), Ok(0x4765_4321));
        // Reserved low bits of the 1G page.
        m.set_u64(pdpte + 16, 0x4000_0000 | 1 << 13 | RW | PTE_PS);
        assert_eq!(
            translate(&mut m, &c, 0x8765_4321, false),
            Err(Fault::Pf {
                addr: 0x8765_4321,
                code: pfec::P | pfec::RSVD
            })
        );
    }

    #[test]
    fn faults_as_the_cpu() {
        let mut m = FakeMem::default();
        let mut c = ctx();
        let la = 0x7000_1000;
        // Not present at every level: error code W only.
        assert_eq!(
            translate(&mut m, &c, la, true),
            Err(Fault::Pf {
                addr: la,
                code: pfec::W
            })
        );
        map4k(&mut m, la, 0x9000, PTE_P);
        // Read-only page: supervisor write faults with WP, not without.
        assert_eq!(
            translate(&mut m, &c, la, true),
            Err(Fault::Pf {
                addr: la,
                code: pfec::P | pfec::W
            })
        );
        c.cr0 &= !CR0_WP;
        assert_eq!(translate(&mut m, &c, la, true), Ok(0x9000));
        c.cr0 |= CR0_WP;
        // User access to a supervisor page.
        c.user = true;
        assert_eq!(
            translate(&mut m, &c, la, false),
            Err(Fault::Pf {
                addr: la,
                code: pfec::P | pfec::U
            })
        );
        // User page: readable by user, SMAP stops the supervisor unless AC.
        map4k(&mut m, la, 0x9000, PTE_P | PTE_US);
        assert_eq!(translate(&mut m, &c, la, false), Ok(0x9000));
        c.user = false;
        assert_eq!(translate(&mut m, &c, la, false), Ok(0x9000));
        c.cr4 |= CR4_SMAP;
        assert!(translate(&mut m, &c, la, false).is_err());
        c.ac = true;
        assert_eq!(translate(&mut m, &c, la, false), Ok(0x9000));
        // Reserved bits beyond MAXPHYADDR; XD without NXE.
        map4k(&mut m, la, 1 << 40 | 0x9000, RW);
        assert_eq!(
            translate(&mut m, &c, la, false),
            Err(Fault::Pf {
                addr: la,
                code: pfec::P | pfec::RSVD
            })
        );
        map4k(&mut m, la, 0x9000 | PTE_XD, RW);
        assert!(translate(&mut m, &c, la, false).is_ok());
        c.efer &= !EFER_NXE;
        assert!(translate(&mut m, &c, la, false).is_err());
        // LA57 and non-long-mode paging refused.
        c.efer |= EFER_NXE;
        c.cr4 |= CR4_LA57;
        assert_eq!(translate(&mut m, &c, la, false), Err(Fault::Gp(0)));
        c.cr4 &= !CR4_LA57;
        c.efer &= !EFER_LMA;
        assert_eq!(translate(&mut m, &c, la, false), Err(Fault::Gp(0)));
        // Paging off: identity.
        c.cr0 &= !CR0_PG;
        assert_eq!(translate(&mut m, &c, 0x1234_5678, false), Ok(0x1234_5678));
    }

    #[test]
    fn every_table_page_must_be_the_hosts() {
        let la = 0xffff_c900_0000_0000;
        let mut base = FakeMem::default();
        map4k(&mut base, la, 0x9000, RW);
        // The PML4, PDPT, PD and PT pages of `la`.
        let mut tables = std::vec![CR3];
        let mut t = CR3;
        for l in (2..=4u32).rev() {
            let idx = (la >> (12 + 9 * (l - 1))) & 0x1ff;
            t = base.get_u64(t + idx * 8) & 0x000f_ffff_ffff_f000;
            tables.push(t);
        }
        for (level, table) in tables.iter().enumerate() {
            let mut m = base.clone();
            m.not_host.insert(*table);
            let r = translate(&mut m, &ctx(), la, false);
            assert_eq!(r, Err(ctx().protected(la)), "level {level}");
            assert_eq!(m.refused, [*table]);
        }
        // The data page itself.
        let mut m = base.clone();
        m.not_host.insert(0x9000);
        let mut buf = [0u8; 8];
        assert_eq!(
            read_linear(&mut m, &ctx(), la, &mut buf),
            Err(Fault::Pf {
                addr: la,
                code: pfec::P
            })
        );
        assert_eq!(
            write_linear(&mut m, &ctx(), la, &[1; 8]),
            Err(ctx().protected(la))
        );
    }

    #[test]
    fn straddling_accesses_touch_both_pages_or_none() {
        let mut m = FakeMem::default();
        let c = ctx();
        map4k(&mut m, 0x1000, 0x7000, RW);
        map4k(&mut m, 0x2000, 0x3000, RW);
        write_linear(&mut m, &c, 0x1ffc, &0x1122_3344_5566_7788u64.to_le_bytes()).unwrap();
        assert_eq!(m.get_u64(0x7ff8) >> 32, 0x5566_7788);
        assert_eq!(m.get_u64(0x3000) & 0xffff_ffff, 0x1122_3344);
        let mut b = [0u8; 8];
        read_linear(&mut m, &c, 0x1ffc, &mut b).unwrap();
        assert_eq!(u64::from_le_bytes(b), 0x1122_3344_5566_7788);
        // Second page read-only: the write faults at the second page and
        // writes nothing in the first.
        map4k(&mut m, 0x2000, 0x3000, PTE_P);
        m.set_u64(0x7ff8, 0);
        assert_eq!(
            write_linear(&mut m, &c, 0x1ffc, &[0xff; 8]),
            Err(Fault::Pf {
                addr: 0x2000,
                code: pfec::P | pfec::W
            })
        );
        assert_eq!(m.get_u64(0x7ff8), 0);
    }
}
