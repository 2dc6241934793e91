// SPDX-License-Identifier: GPL-2.0

//! Typed addresses: which address space a number belongs to.
//!
//! Owns the newtypes the memory code passes around instead of bare `u64`s,
//! so that handing a guest-physical address to something that wants a
//! host-physical one is a compile error:
//!
//! * [`Hpa`], a host-physical address: what the CPU puts on the bus.  Table
//!   pages, leaf outputs of every table, pool pages and data pages are
//!   `Hpa`s.  The host EPT is an identity map, so its *input* addresses are
//!   `Hpa`s too.
//! * [`Gpa`], a guest-physical address: the input of a guest's shadow EPT.
//!   With nesting there are two of these (an L2 address, translated by the
//!   host KVM's EPT to an L1 address); the shadow EPT's input is the L2
//!   address, and only a walk of the L1 tables may turn one into the other.
//! * [`HypVa`], a virtual address of the hypervisor's own address space: the
//!   input of its page table (CR3 in root mode).
//! * [`Pfn`], a host page frame number (an `Hpa` shifted right by 12), the
//!   unit of the hypercall ABI.
//!
//! Constructors check what the type promises (a physical address below
//! 2^52, a canonical virtual address) and return `None` otherwise; there is
//! no `From<u64>`.  Conversions exist only where they mean something: `Pfn`
//! <-> `Hpa`, page alignment, offsets inside one space.  An `Hpa` never turns
//! into a `Gpa` or back except through a table walk (which reads the output
//! of an entry as an `Hpa`).
//!
//! [`InputAddr`] (sealed) is what the page-table engine needs from the input
//! address space of a table: the bits it indexes with, and which kind of
//! table it is ([`TableKind`], for TLB invalidation).

use core::fmt;

use crate::hv::mm::ept::PAGE_SIZE;

/// First physical address beyond what an entry can point to (bits 51:12).
pub const PA_LIMIT: u64 = 1 << 52;

/// First address beyond what 4-level paging translates (48 bits).
pub const TABLE_LIMIT: u64 = 1 << 48;

macro_rules! phys_addr {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
        #[repr(transparent)]
        pub struct $name(u64);

        impl $name {
            /// Address 0.
            pub const ZERO: Self = Self(0);

            #[doc = concat!("The ", $what, " `raw`, if it is below 2^52 (what an entry can hold).")]
            pub const fn new(raw: u64) -> Option<Self> {
                if raw < PA_LIMIT {
                    Some(Self(raw))
                } else {
                    None
                }
            }

            /// The address as a number.
            pub const fn raw(self) -> u64 {
                self.0
            }

            /// Whether the address is 4 KiB aligned.
            pub const fn is_page_aligned(self) -> bool {
                self.0 & (PAGE_SIZE - 1) == 0
            }

            /// The start of the 4 KiB page holding the address.
            pub const fn page_down(self) -> Self {
                Self(self.0 & !(PAGE_SIZE - 1))
            }

            /// The address `off` bytes further, if still below 2^52.
            pub const fn checked_add(self, off: u64) -> Option<Self> {
                match self.0.checked_add(off) {
                    Some(a) => Self::new(a),
                    None => None,
                }
            }

            /// The address `off` bytes further, modulo 2^52 (the engine's
            /// arithmetic inside ranges it has checked).
            pub const fn wrapping_add(self, off: u64) -> Self {
                Self(self.0.wrapping_add(off) & (PA_LIMIT - 1))
            }

            /// Bytes from `base` up to this address (wrapping if below).
            pub const fn offset_from(self, base: Self) -> u64 {
                self.0.wrapping_sub(base.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({:#x})"), self.0)
            }
        }
    };
}

phys_addr!(
    /// A host-physical address (below 2^52).
    Hpa,
    "host-physical address"
);

phys_addr!(
    /// A guest-physical address (below 2^52): the input of a shadow EPT.
    Gpa,
    "guest-physical address"
);

impl Hpa {
    /// The frame holding the address.
    pub const fn pfn(self) -> Pfn {
        Pfn(self.0 >> 12)
    }
}

/// A host page frame number: an [`Hpa`] divided by 4 KiB (below 2^40).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Debug)]
#[repr(transparent)]
pub struct Pfn(u64);

impl Pfn {
    /// The frame number `raw`, if its address is below 2^52.
    pub const fn new(raw: u64) -> Option<Self> {
        if raw < PA_LIMIT >> 12 {
            Some(Self(raw))
        } else {
            None
        }
    }

    /// The frame number as a number.
    pub const fn raw(self) -> u64 {
        self.0
    }

    /// The address of the first byte of the frame.
    pub const fn hpa(self) -> Hpa {
        Hpa(self.0 << 12)
    }
}

/// A canonical virtual address of the hypervisor's own address space.
///
/// Its page table translates the low 48 bits; the upper 16 bits are the
/// sign extension of bit 47.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[repr(transparent)]
pub struct HypVa(u64);

impl HypVa {
    /// The virtual address `raw`, if it is canonical (48-bit).
    pub const fn new(raw: u64) -> Option<Self> {
        if Self::canonical(raw) == raw {
            Some(Self(raw))
        } else {
            None
        }
    }

    /// The canonical address whose low 48 bits are those of `raw`.
    pub const fn from_low_bits(raw: u64) -> Self {
        Self(Self::canonical(raw))
    }

    const fn canonical(raw: u64) -> u64 {
        (((raw << 16) as i64) >> 16) as u64
    }

    /// The address as a number.
    pub const fn raw(self) -> u64 {
        self.0
    }

    /// The 48 bits the page table translates.
    pub const fn low_bits(self) -> u64 {
        self.0 & (TABLE_LIMIT - 1)
    }
}

impl fmt::Debug for HypVa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HypVa({:#x})", self.0)
    }
}

/// Which kind of table an input address space belongs to: tells the
/// TLB-invalidation hook (`MmOps::invalidate`) what to flush.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TableKind {
    /// The host's identity EPT (input: [`Hpa`]).
    HostEpt,
    /// A guest's shadow EPT (input: [`Gpa`]).
    GuestEpt,
    /// The hypervisor's own page table (input: [`HypVa`]).
    Hyp,
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for super::Hpa {}
    impl Sealed for super::Gpa {}
    impl Sealed for super::HypVa {}
}

/// The input address space of a table (sealed: [`Hpa`], [`Gpa`],
/// [`HypVa`]).
///
/// The walker computes in table bits (below [`TABLE_LIMIT`]); this trait
/// converts at the edges.
pub trait InputAddr: Copy + Eq + Ord + fmt::Debug + sealed::Sealed {
    /// Which kind of table translates this space.
    const KIND: TableKind;

    /// The bits the table indexes with (below 2^48 for every address the
    /// table translates; larger for addresses it cannot, which the engine
    /// rejects).
    fn table_bits(self) -> u64;

    /// The address whose table bits are `bits` (`bits` below 2^48).
    fn from_table_bits(bits: u64) -> Self;
}

impl InputAddr for Hpa {
    const KIND: TableKind = TableKind::HostEpt;

    fn table_bits(self) -> u64 {
        self.0
    }

    fn from_table_bits(bits: u64) -> Self {
        Self(bits & (PA_LIMIT - 1))
    }
}

impl InputAddr for Gpa {
    const KIND: TableKind = TableKind::GuestEpt;

    fn table_bits(self) -> u64 {
        self.0
    }

    fn from_table_bits(bits: u64) -> Self {
        Self(bits & (PA_LIMIT - 1))
    }
}

impl InputAddr for HypVa {
    const KIND: TableKind = TableKind::Hyp;

    fn table_bits(self) -> u64 {
        self.low_bits()
    }

    fn from_table_bits(bits: u64) -> Self {
        Self::from_low_bits(bits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constructors_check_their_space() {
        assert_eq!(Hpa::new(PA_LIMIT - 1).map(Hpa::raw), Some(PA_LIMIT - 1));
        assert_eq!(Hpa::new(PA_LIMIT), None);
        assert_eq!(Gpa::new(u64::MAX), None);
        assert_eq!(Pfn::new(1 << 40), None);
        assert_eq!(Pfn::new(0x1234).map(|p| p.hpa().raw()), Some(0x123_4000));
        assert_eq!(Hpa::new(0x123_4567).map(|a| a.pfn().raw()), Some(0x1234));
        assert!(HypVa::new(0xffff_8000_0000_0000).is_some());
        assert!(HypVa::new(0x0000_8000_0000_0000).is_none());
        assert!(HypVa::new(0x7fff_ffff_f000).is_some());
    }

    #[test]
    fn table_bits_roundtrip() {
        let va = HypVa::new(0xffff_f000_0000_0000).unwrap();
        assert_eq!(va.table_bits(), 0xf000_0000_0000);
        assert_eq!(HypVa::from_table_bits(va.table_bits()), va);
        let g = Gpa::new(0x4000_1000).unwrap();
        assert_eq!(Gpa::from_table_bits(g.table_bits()), g);
        assert_eq!(Hpa::KIND, TableKind::HostEpt);
        assert_eq!(Gpa::KIND, TableKind::GuestEpt);
        assert_eq!(HypVa::KIND, TableKind::Hyp);
    }

    #[test]
    fn arithmetic_stays_in_space() {
        let a = Hpa::new(PA_LIMIT - PAGE_SIZE).unwrap();
        assert_eq!(a.checked_add(PAGE_SIZE), None);
        assert_eq!(a.wrapping_add(PAGE_SIZE), Hpa::ZERO);
        assert_eq!(Hpa::new(0x1fff).unwrap().page_down().raw(), 0x1000);
        assert!(!Hpa::new(0x1fff).unwrap().is_page_aligned());
        let b = Hpa::new(0x5000).unwrap();
        assert_eq!(b.offset_from(Hpa::new(0x3000).unwrap()), 0x2000);
    }
}

/// Test helpers: typed literals (panic on a bad literal; tests only).
#[cfg(test)]
pub(crate) mod lit {
    use super::{Gpa, Hpa, HypVa};

    /// A host-physical address literal.
    pub(crate) fn hpa(a: u64) -> Hpa {
        Hpa::new(a).unwrap()
    }

    /// A guest-physical address literal.
    pub(crate) fn gpa(a: u64) -> Gpa {
        Gpa::new(a).unwrap()
    }

    /// A hypervisor virtual address literal.
    pub(crate) fn hva(a: u64) -> HypVa {
        HypVa::new(a).unwrap()
    }
}
