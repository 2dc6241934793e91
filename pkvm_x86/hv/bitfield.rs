// SPDX-License-Identifier: GPL-2.0

//! A small `macro_rules!` for typed views of hardware bit fields.
//!
//! The kernel's own bitfield macros are not available to the Cargo build of
//! the core, so the core carries this one.  `bits!` declares, for a field of
//! a `u64`-backed newtype, a getter and a `with_` builder with a doc line per
//! field, e.g. `bits!(EptEntry, memtype, with_memtype, 5, 3, "Memory type")`.

/// Returns a mask of `width` bits starting at bit `lo`.
#[inline]
pub const fn mask(lo: u32, width: u32) -> u64 {
    if width >= 64 {
        !0
    } else {
        ((1u64 << width) - 1) << lo
    }
}

/// Extracts the `width`-bit field at `lo` from `v`.
#[inline]
pub const fn get(v: u64, lo: u32, width: u32) -> u64 {
    (v & mask(lo, width)) >> lo
}

/// Returns `v` with the `width`-bit field at `lo` replaced by `field`
/// (bits of `field` beyond `width` are dropped).
#[inline]
pub const fn set(v: u64, lo: u32, width: u32, field: u64) -> u64 {
    (v & !mask(lo, width)) | ((field << lo) & mask(lo, width))
}

/// Declares getter/builder pairs for bit fields of a `u64` newtype.
///
/// Each line: `getter, builder, low bit, width, "doc"`.
macro_rules! bit_fields {
    ($ty:ty { $( $get:ident, $with:ident, $lo:expr, $width:expr, $doc:literal; )* }) => {
        impl $ty {
            $(
                #[doc = $doc]
                #[inline]
                pub const fn $get(self) -> u64 {
                    $crate::hv::bitfield::get(self.0, $lo, $width)
                }

                #[doc = concat!("Returns a copy with this field set: ", $doc)]
                #[inline]
                #[must_use]
                pub const fn $with(self, v: u64) -> Self {
                    Self($crate::hv::bitfield::set(self.0, $lo, $width, v))
                }
            )*
        }
    };
}
pub(crate) use bit_fields;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mask_edges() {
        assert_eq!(mask(0, 1), 1);
        assert_eq!(mask(12, 40), 0x000f_ffff_ffff_f000);
        assert_eq!(mask(0, 64), u64::MAX);
        assert_eq!(mask(63, 1), 1 << 63);
    }

    #[test]
    fn set_get_roundtrip_and_truncation() {
        let v = set(0xffff_ffff_ffff_ffff, 3, 3, 0);
        assert_eq!(v, !0b11_1000);
        assert_eq!(get(set(0, 56, 2, 0b10), 56, 2), 0b10);
        // A too-wide value is truncated to the field, never spills over.
        assert_eq!(set(0, 56, 2, 0b111), 0b11 << 56);
    }
}
