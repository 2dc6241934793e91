// SPDX-License-Identifier: GPL-2.0

//! The counted set of host frames pinned by live vmcs02s (nested VMX,
//! Documentation/page-states.rst "Pinned host frames"): pages of the host
//! the CPU reads or writes while the host's guest runs (I/O bitmaps,
//! virtual-APIC and APIC-access pages) and the vmcs12 each exit reflects
//! into.  They stay the host's (`OWNED`), but a host-initiated transition
//! whose range contains one is refused while it is pinned.  Bounded, and
//! never full by construction: the owner (`crate::hyp::global`) sizes it
//! as CPUs x pins per vmcs02 (`MAX_PINS`): each CPU has exactly one
//! vmcs02, which pins at most `PINS_PER_VMCS02` frames (its vmcs12, I/O
//! bitmaps A and B, virtual-APIC and APIC-access pages) and drops its old
//! pins before it takes new ones, under the same lock, and the module
//! refuses to load on a machine with more CPU numbers than the set is
//! sized for.  The number of VMs and vCPUs does not enter: a vCPU that is
//! not running on a CPU has no vmcs02 and pins nothing.  Kept under the
//! hypervisor lock by its owner.

/// A counted set of 4 KiB frames, `N` distinct frames at most.
pub struct PinSet<const N: usize> {
    /// (frame address, count); count 0 = free slot.
    slots: [(u64, u32); N],
}

impl<const N: usize> Default for PinSet<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> PinSet<N> {
    /// The empty set (all-zero bytes are the empty set too).
    pub const fn new() -> Self {
        Self { slots: [(0, 0); N] }
    }

    /// Pins the frame of `pa` once more; `false` if the set is full (then
    /// nothing changed).
    pub fn pin(&mut self, pa: u64) -> bool {
        let frame = pa & !0xfff;
        if let Some(s) = self.slots.iter_mut().find(|s| s.1 != 0 && s.0 == frame) {
            s.1 = s.1.saturating_add(1);
            return true;
        }
        match self.slots.iter_mut().find(|s| s.1 == 0) {
            Some(s) => {
                *s = (frame, 1);
                true
            }
            None => false,
        }
    }

    /// Drops one pin of the frame of `pa` (nothing if it is not pinned).
    pub fn unpin(&mut self, pa: u64) {
        let frame = pa & !0xfff;
        if let Some(s) = self.slots.iter_mut().find(|s| s.1 != 0 && s.0 == frame) {
            s.1 -= 1;
        }
    }

    /// Whether any frame of `pages` pages from `pa` is pinned.
    pub fn overlaps(&self, pa: u64, pages: u64) -> bool {
        let start = pa & !0xfff;
        let end = start.saturating_add(pages.saturating_mul(4096));
        self.slots
            .iter()
            .any(|s| s.1 != 0 && s.0 >= start && s.0 < end)
    }

    /// Number of distinct pinned frames.
    pub fn frames(&self) -> usize {
        self.slots.iter().filter(|s| s.1 != 0).count()
    }

    /// The pinned frames.
    pub fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        self.slots.iter().filter(|s| s.1 != 0).map(|s| s.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counted_pins_and_overlap() {
        let mut p = PinSet::<3>::new();
        assert!(p.pin(0x5123));
        assert!(p.pin(0x5000));
        assert_eq!(p.frames(), 1);
        assert!(p.overlaps(0x5000, 1));
        assert!(p.overlaps(0x3000, 3));
        assert!(!p.overlaps(0x3000, 2));
        assert!(!p.overlaps(0x6000, 100));
        p.unpin(0x5000);
        assert!(p.overlaps(0x5000, 1), "still pinned once");
        p.unpin(0x5fff);
        assert!(!p.overlaps(0x5000, 1));
        assert_eq!(p.frames(), 0);
        p.unpin(0x5000); // not pinned: nothing
        assert_eq!(p.frames(), 0);
    }

    #[test]
    fn full_set_refuses_new_frames_only() {
        let mut p = PinSet::<2>::new();
        assert!(p.pin(0x1000));
        assert!(p.pin(0x2000));
        assert!(!p.pin(0x3000));
        assert!(p.pin(0x1000), "a pinned frame is counted again");
        assert_eq!(p.iter().collect::<std::vec::Vec<_>>(), [0x1000, 0x2000]);
        // Huge ranges do not overflow.
        assert!(p.overlaps(0, u64::MAX));
        assert!(!p.overlaps(!0xfff, u64::MAX));
    }
}
