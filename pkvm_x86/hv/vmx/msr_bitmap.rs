// SPDX-License-Identifier: GPL-2.0

//! VMX MSR bitmaps: which RDMSR/WRMSR of a guest cause a VM exit (SDM
//! Vol. 3C, "MSR-Bitmap Address" and "Instructions That Cause VM Exits
//! Conditionally").
//!
//! Owns the layout of the 4 KiB MSR-bitmap page and its editing through
//! [`MsrBitmap`] (the host's interception policy, the rules written into
//! it, is `crate::hv::host_policy::MSR_INTERCEPTS`):
//!
//! ```text
//!  bytes    0..1024  read  bitmap, low  MSRs 0x00000000..=0x00001fff
//!  bytes 1024..2048  read  bitmap, high MSRs 0xc0000000..=0xc0001fff
//!  bytes 2048..3072  write bitmap, low
//!  bytes 3072..4096  write bitmap, high
//!  MSR m of a range is bit (m & 7) of byte (m & 0x1fff) / 8 of its quarter.
//! ```
//!
//! A set bit makes the access exit.  RDMSR/WRMSR of an MSR in neither range
//! always exits, whatever the page says; [`is_intercepted`] returns `true`
//! for those.  The page is only consulted when the primary processor-based
//! control "use MSR bitmaps" (bit 28) is set.

use crate::hv::error::Error;

/// Size of the MSR-bitmap page.
pub const MSR_BITMAP_SIZE: usize = 4096;

/// Last MSR of the low range (the first is 0).
pub const LOW_MSR_LAST: u32 = 0x1fff;
/// First MSR of the high range.
pub const HIGH_MSR_FIRST: u32 = 0xc000_0000;
/// Last MSR of the high range.
pub const HIGH_MSR_LAST: u32 = 0xc000_1fff;

/// Byte offset of the read bitmap for low MSRs.
pub const READ_LOW_OFFSET: usize = 0;
/// Byte offset of the read bitmap for high MSRs.
pub const READ_HIGH_OFFSET: usize = 1024;
/// Byte offset of the write bitmap for low MSRs.
pub const WRITE_LOW_OFFSET: usize = 2048;
/// Byte offset of the write bitmap for high MSRs.
pub const WRITE_HIGH_OFFSET: usize = 3072;

/// Which accesses to intercept.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Access {
    /// RDMSR only.
    Read,
    /// WRMSR only.
    Write,
    /// Both RDMSR and WRMSR.
    ReadWrite,
}

impl Access {
    /// Whether reads are included.
    pub const fn read(self) -> bool {
        matches!(self, Access::Read | Access::ReadWrite)
    }

    /// Whether writes are included.
    pub const fn write(self) -> bool {
        matches!(self, Access::Write | Access::ReadWrite)
    }
}

/// One line of an interception policy: intercept `access` to every MSR in
/// `first..=last`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MsrRule {
    /// First MSR of the range.
    pub first: u32,
    /// Last MSR of the range (inclusive).
    pub last: u32,
    /// The accesses that exit.
    pub access: Access,
}

impl MsrRule {
    /// A rule for one MSR.
    pub const fn one(msr: u32, access: Access) -> Self {
        Self {
            first: msr,
            last: msr,
            access,
        }
    }

    /// A rule for `first..=last`.
    pub const fn range(first: u32, last: u32, access: Access) -> Self {
        Self {
            first,
            last,
            access,
        }
    }
}

/// Where the bit for `msr` lives: `(byte offset in the page, bit in byte)`,
/// or `None` for an MSR outside both bitmap ranges (always exits).
pub const fn bit_position(msr: u32, write: bool) -> Option<(usize, u8)> {
    let base = match (msr, write) {
        (0..=LOW_MSR_LAST, false) => READ_LOW_OFFSET,
        (0..=LOW_MSR_LAST, true) => WRITE_LOW_OFFSET,
        (HIGH_MSR_FIRST..=HIGH_MSR_LAST, false) => READ_HIGH_OFFSET,
        (HIGH_MSR_FIRST..=HIGH_MSR_LAST, true) => WRITE_HIGH_OFFSET,
        _ => return None,
    };
    let n = (msr & 0x1fff) as usize;
    Some((base + n / 8, (n % 8) as u8))
}

/// Whether RDMSR (`write == false`) or WRMSR (`write == true`) of `msr`
/// exits under the bitmap `page` (always `true` outside the two ranges).
pub fn is_intercepted(page: &[u8; MSR_BITMAP_SIZE], msr: u32, write: bool) -> bool {
    match bit_position(msr, write) {
        None => true,
        Some((byte, bit)) => page.get(byte).is_some_and(|b| b & (1 << bit) != 0),
    }
}

/// Sub-ranges of `first..=last` that the bitmap can express.
fn in_bitmap_ranges(first: u32, last: u32) -> [(u32, u32); 2] {
    let low = (first, last.min(LOW_MSR_LAST));
    let high = (first.max(HIGH_MSR_FIRST), last.min(HIGH_MSR_LAST));
    [low, high]
}

/// An MSR-bitmap page being edited.
pub struct MsrBitmap<'a> {
    page: &'a mut [u8; MSR_BITMAP_SIZE],
}

impl<'a> MsrBitmap<'a> {
    /// Wraps a page as it is (call [`MsrBitmap::clear_all`] for a fresh one).
    pub fn new(page: &'a mut [u8; MSR_BITMAP_SIZE]) -> Self {
        Self { page }
    }

    /// Clears every bit: no access to an in-range MSR exits.
    pub fn clear_all(&mut self) {
        self.page.fill(0);
    }

    /// Sets every bit: every access exits.
    pub fn set_all(&mut self) {
        self.page.fill(0xff);
    }

    fn update(&mut self, msr: u32, write: bool, on: bool) {
        if let Some((byte, bit)) = bit_position(msr, write) {
            if let Some(b) = self.page.get_mut(byte) {
                if on {
                    *b |= 1 << bit;
                } else {
                    *b &= !(1 << bit);
                }
            }
        }
    }

    /// Makes RDMSR of `msr` exit if `read`, WRMSR if `write`.  Only adds
    /// interception (a `false` leaves that bit as it was), so applying it
    /// twice, or in any order with other calls to it, gives the same page.
    /// An MSR outside both ranges needs nothing: it always exits.
    pub fn intercept(&mut self, msr: u32, read: bool, write: bool) {
        if read {
            self.update(msr, false, true);
        }
        if write {
            self.update(msr, true, true);
        }
    }

    /// Lets RDMSR of `msr` through if `read`, WRMSR if `write` (the other
    /// bit is left as it was).  Fails with [`Error::Inval`] for an MSR
    /// outside both ranges, whose accesses always exit, and then changes
    /// nothing.
    pub fn pass_through(&mut self, msr: u32, read: bool, write: bool) -> Result<(), Error> {
        if bit_position(msr, false).is_none() {
            return Err(Error::Inval);
        }
        if read {
            self.update(msr, false, false);
        }
        if write {
            self.update(msr, true, false);
        }
        Ok(())
    }

    /// Intercepts `rule.access` for every MSR of the rule (the part outside
    /// the bitmap ranges already exits).  Costs at most one step per MSR the
    /// bitmap can express (16384), whatever the rule's range.
    pub fn apply(&mut self, rule: &MsrRule) {
        for (first, last) in in_bitmap_ranges(rule.first, rule.last) {
            if first > last {
                continue;
            }
            for msr in first..=last {
                self.intercept(msr, rule.access.read(), rule.access.write());
            }
        }
    }

    /// Whether RDMSR (`write == false`) or WRMSR (`write == true`) of `msr`
    /// exits; see [`is_intercepted`].
    pub fn is_intercepted(&self, msr: u32, write: bool) -> bool {
        is_intercepted(self.page, msr, write)
    }

    /// The page, for handing its physical address to the VMCS.
    pub fn page(&self) -> &[u8; MSR_BITMAP_SIZE] {
        self.page
    }
}

/// Fills `page` with exactly `policy`: clears it, then applies every rule.
/// For the deprivileged host pass
/// [`crate::hv::host_policy::MSR_INTERCEPTS`].
pub fn build_host_bitmap<'a>(
    page: &'a mut [u8; MSR_BITMAP_SIZE],
    policy: &[MsrRule],
) -> MsrBitmap<'a> {
    let mut bm = MsrBitmap::new(page);
    bm.clear_all();
    for rule in policy {
        bm.apply(rule);
    }
    bm
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hv::host_policy::MSR_INTERCEPTS;
    use std::boxed::Box;

    fn page() -> Box<[u8; MSR_BITMAP_SIZE]> {
        Box::new([0xa5; MSR_BITMAP_SIZE])
    }

    fn set_bits(p: &[u8; MSR_BITMAP_SIZE]) -> std::vec::Vec<(usize, u8)> {
        let mut v = std::vec::Vec::new();
        for (i, b) in p.iter().enumerate() {
            for bit in 0..8 {
                if b & (1 << bit) != 0 {
                    v.push((i, bit));
                }
            }
        }
        v
    }

    #[test]
    fn positions_of_sample_msrs() {
        // IA32_FEATURE_CONTROL: 0x3a = byte 7, bit 2.
        assert_eq!(bit_position(0x3a, false), Some((7, 2)));
        assert_eq!(bit_position(0x3a, true), Some((2048 + 7, 2)));
        // IA32_VMX_BASIC: 0x480 = byte 0x90, bit 0.
        assert_eq!(bit_position(0x480, false), Some((0x90, 0)));
        assert_eq!(bit_position(0x480, true), Some((2048 + 0x90, 0)));
        assert_eq!(bit_position(0x493, true), Some((2048 + 0x92, 3)));
        // Last low MSR: byte 1023, bit 7.
        assert_eq!(bit_position(0x1fff, false), Some((1023, 7)));
        assert_eq!(bit_position(0x1fff, true), Some((3071, 7)));
        // EFER: 0xc0000080 = high byte 0x10, bit 0.
        assert_eq!(bit_position(0xc000_0080, false), Some((1024 + 0x10, 0)));
        assert_eq!(bit_position(0xc000_0080, true), Some((3072 + 0x10, 0)));
        // First and last high MSR.
        assert_eq!(bit_position(0xc000_0000, false), Some((1024, 0)));
        assert_eq!(bit_position(0xc000_1fff, false), Some((2047, 7)));
        assert_eq!(bit_position(0xc000_1fff, true), Some((4095, 7)));
        assert_eq!(bit_position(0, true), Some((2048, 0)));
    }

    #[test]
    fn out_of_range_msrs_always_exit() {
        let mut p = page();
        let mut bm = MsrBitmap::new(&mut p);
        bm.clear_all();
        for msr in [
            0x2000,
            0x4000_0000,
            0xbfff_ffff,
            0xc000_2000,
            0xc001_0000,
            u32::MAX,
        ] {
            assert_eq!(bit_position(msr, false), None);
            assert!(bm.is_intercepted(msr, false), "{msr:#x}");
            assert!(bm.is_intercepted(msr, true), "{msr:#x}");
            assert_eq!(bm.pass_through(msr, true, true), Err(Error::Inval));
            bm.intercept(msr, true, true); // no-op
        }
        assert!(bm.page().iter().all(|&b| b == 0));
    }

    #[test]
    fn clear_and_set_all() {
        let mut p = page();
        let mut bm = MsrBitmap::new(&mut p);
        bm.clear_all();
        for msr in [0, 0x3a, 0x1fff, 0xc000_0000, 0xc000_1fff] {
            assert!(!bm.is_intercepted(msr, false));
            assert!(!bm.is_intercepted(msr, true));
        }
        bm.set_all();
        for msr in [0, 0x3a, 0x1fff, 0xc000_0000, 0xc000_1fff] {
            assert!(bm.is_intercepted(msr, false));
            assert!(bm.is_intercepted(msr, true));
        }
    }

    #[test]
    fn intercept_sets_exactly_one_bit_per_access() {
        for msr in [0x3a, 0x480, 0x1fff, 0xc000_0080, 0xc000_1fff] {
            let mut p = page();
            let mut bm = MsrBitmap::new(&mut p);
            bm.clear_all();
            bm.intercept(msr, false, true);
            assert_eq!(set_bits(bm.page()), [bit_position(msr, true).unwrap()]);
            assert!(bm.is_intercepted(msr, true));
            assert!(!bm.is_intercepted(msr, false));
            bm.intercept(msr, true, false);
            assert_eq!(
                set_bits(bm.page()),
                [
                    bit_position(msr, false).unwrap(),
                    bit_position(msr, true).unwrap()
                ]
            );
            // Neighbours untouched.
            assert!(!bm.is_intercepted(msr ^ 1, false));
            assert!(!bm.is_intercepted(msr ^ 1, true));
        }
    }

    #[test]
    fn intercept_is_idempotent_and_additive() {
        let mut p = page();
        let mut bm = MsrBitmap::new(&mut p);
        bm.clear_all();
        bm.intercept(0xc000_0080, true, true);
        let once = *bm.page();
        bm.intercept(0xc000_0080, true, true);
        bm.intercept(0xc000_0080, false, false);
        bm.intercept(0xc000_0080, true, false);
        assert_eq!(*bm.page(), once);
    }

    #[test]
    fn pass_through_clears_only_what_is_asked() {
        let mut p = page();
        let mut bm = MsrBitmap::new(&mut p);
        bm.set_all();
        assert_eq!(bm.pass_through(0xc000_0100, true, false), Ok(()));
        assert!(!bm.is_intercepted(0xc000_0100, false));
        assert!(bm.is_intercepted(0xc000_0100, true));
        assert!(bm.is_intercepted(0xc000_0101, false));
        assert_eq!(bm.pass_through(0xc000_0100, false, true), Ok(()));
        assert!(!bm.is_intercepted(0xc000_0100, true));
        assert_eq!(set_bits(bm.page()).len(), 4 * 8192 - 2);
    }

    #[test]
    fn build_is_idempotent_and_clears_old_state() {
        let mut a = page();
        let mut b = Box::new([0u8; MSR_BITMAP_SIZE]);
        build_host_bitmap(&mut a, MSR_INTERCEPTS);
        build_host_bitmap(&mut b, MSR_INTERCEPTS);
        assert_eq!(a, b);
        let first = *a;
        build_host_bitmap(&mut a, MSR_INTERCEPTS);
        assert_eq!(*a, first);
        // A policy listed twice gives the same page.
        let twice: std::vec::Vec<MsrRule> = MSR_INTERCEPTS
            .iter()
            .chain(MSR_INTERCEPTS)
            .copied()
            .collect();
        build_host_bitmap(&mut b, &twice);
        assert_eq!(*b, first);
    }

    #[test]
    fn huge_rule_is_clipped_to_bitmap_ranges() {
        let mut p = page();
        let bm = build_host_bitmap(&mut p, &[MsrRule::range(0, u32::MAX, Access::Read)]);
        assert!(bm.page()[..2048].iter().all(|&b| b == 0xff));
        assert!(bm.page()[2048..].iter().all(|&b| b == 0));
        let bm = build_host_bitmap(
            &mut p,
            &[MsrRule::range(0x1ff0, 0xc000_000f, Access::ReadWrite)],
        );
        assert_eq!(set_bits(bm.page()).len(), 2 * (16 + 16));
        assert!(bm.is_intercepted(0x1ff0, true));
        assert!(!bm.is_intercepted(0x1fef, true));
        assert!(bm.is_intercepted(0xc000_000f, false));
        assert!(!bm.is_intercepted(0xc000_0010, false));
        // Empty (inverted) rule does nothing.
        let bm = build_host_bitmap(&mut p, &[MsrRule::range(0x10, 0x0f, Access::ReadWrite)]);
        assert!(bm.page().iter().all(|&b| b == 0));
    }

    #[test]
    fn access_flags() {
        assert!(Access::Read.read() && !Access::Read.write());
        assert!(!Access::Write.read() && Access::Write.write());
        assert!(Access::ReadWrite.read() && Access::ReadWrite.write());
        assert_eq!(
            MsrRule::one(5, Access::Read),
            MsrRule::range(5, 5, Access::Read)
        );
    }

    #[test]
    fn is_intercepted_matches_position_everywhere() {
        // Set one bit per quarter and check the free function agrees.
        let mut p = Box::new([0u8; MSR_BITMAP_SIZE]);
        p[READ_LOW_OFFSET + 1] = 1 << 3; // MSR 0xb read
        p[READ_HIGH_OFFSET + 2] = 1 << 4; // 0xc0000014 read
        p[WRITE_LOW_OFFSET + 3] = 1 << 5; // 0x1d write
        p[WRITE_HIGH_OFFSET + 4] = 1 << 6; // 0xc0000026 write
        assert!(is_intercepted(&p, 0xb, false));
        assert!(!is_intercepted(&p, 0xb, true));
        assert!(is_intercepted(&p, 0xc000_0014, false));
        assert!(is_intercepted(&p, 0x1d, true));
        assert!(!is_intercepted(&p, 0x1d, false));
        assert!(is_intercepted(&p, 0xc000_0026, true));
        let hits = (0..=LOW_MSR_LAST)
            .chain(HIGH_MSR_FIRST..=HIGH_MSR_LAST)
            .flat_map(|m| [(m, false), (m, true)])
            .filter(|&(m, w)| is_intercepted(&p, m, w))
            .count();
        assert_eq!(hits, 4);
    }
}
