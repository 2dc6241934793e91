// SPDX-License-Identifier: GPL-2.0

//! Hostile hypercall arguments: what a malicious host might pass to the
//! page-state calls, drawn from a seeded generator.
//!
//! Shared by the debug interface's `fuzz` command (which throws them at the
//! running hypervisor) and the pure-core test that replays the same kind of
//! sequence on the simulated machine, so both exercise one distribution:
//! frames mostly in a scratch arena (in its first half, so that a small
//! count stays inside it), some in memory the hypervisor pins (its pool),
//! some of the module image root mode maps (text, rodata, ro_after_init,
//! given by [`Hostile::with_image`]), some MMIO (the local APIC, the I/O
//! APIC, the legacy VGA window: [`MMIO_PFNS`]), some beyond RAM, some
//! absurd; counts mostly small, sometimes zero or
//! overflowing; handles mostly live ones.  Never frames of the host's own
//! live memory: giving that away would only hurt the host, which it may.
//! [`Hostile::call`] picks a call of [`FUZZ_CALLS`] and the arguments that
//! call takes, in the registers [`super::call::Call::parse`] reads.

use super::nr;

/// The calls the fuzz throws: every per-CPU query, every page-state call,
/// the debug calls that change state, and two unknown numbers.  Never
/// TEARDOWN_CPU or BEGIN_TEARDOWN (the latter would freeze every page
/// state until unload) nor the invariant check (the caller runs it once
/// at the end).
pub const FUZZ_CALLS: [u64; 19] = [
    nr::VERSION,
    nr::EXIT_COUNT,
    nr::NMIS_IN_ROOT,
    nr::FLUSH_HOST_EPT,
    nr::INTERNAL_ERRORS,
    nr::HOST_DONATE_HYP,
    nr::HYP_DONATE_HOST,
    nr::HOST_SHARE_HYP,
    nr::HOST_UNSHARE_HYP,
    nr::VM_CREATE,
    nr::VM_TEARDOWN,
    nr::HOST_SHARE_GUEST,
    nr::HOST_UNSHARE_GUEST,
    nr::HOST_DONATE_GUEST,
    nr::DEBUG_HOST_EPT_LOOKUP,
    nr::DEBUG_GUEST_SHARE_HOST,
    nr::DEBUG_GUEST_UNSHARE_HOST,
    0x7777,
    u64::MAX,
];

/// MMIO frames of every PC: the local APIC (0xfee00000), the I/O APIC
/// (0xfec00000) and the legacy VGA window (0xa0000).  None is RAM, so no
/// page-state call may accept them.
pub const MMIO_PFNS: [u64; 3] = [0xfee00, 0xfec00, 0xa0];

/// Most module-image frames [`Hostile::with_image`] keeps.
pub const IMAGE_FRAMES: usize = 4;

/// A frame beyond any RAM of the test machines (512 GiB).
pub const BEYOND_RAM_PFN: u64 = 0x80_0000_0000 >> 12;

/// A deterministic generator of hostile hypercalls: a seeded xorshift64
/// stream shaped into call numbers, frames, counts, handles and guest
/// frames (mostly plausible, sometimes pinned or out of range).
#[derive(Clone, Debug)]
pub struct Hostile {
    x: u64,
    arena: u64,
    arena_half: u64,
    pinned: u64,
    pinned_frames: u64,
    image: [u64; IMAGE_FRAMES],
    image_n: usize,
}

impl Hostile {
    /// A generator seeded with `seed`, drawing arena frames from
    /// `arena_pfn..arena_pfn + arena_frames / 2` and pinned ones from
    /// `pinned_pfn..pinned_pfn + pinned_frames`.
    pub const fn new(
        seed: u64,
        arena_pfn: u64,
        arena_frames: u64,
        pinned_pfn: u64,
        pinned_frames: u64,
    ) -> Self {
        let half = arena_frames / 2;
        Self {
            x: seed | 1,
            arena: arena_pfn,
            arena_half: if half == 0 { 1 } else { half },
            pinned: pinned_pfn,
            pinned_frames: if pinned_frames == 0 { 1 } else { pinned_frames },
            image: [0; IMAGE_FRAMES],
            image_n: 0,
        }
    }

    /// The same generator, also drawing the module-image frames `frames`
    /// (the first [`IMAGE_FRAMES`]; zeros, i.e. empty regions, are skipped).
    #[must_use]
    pub fn with_image(mut self, frames: &[u64]) -> Self {
        for &f in frames.iter().filter(|&&f| f != 0) {
            if let Some(slot) = self.image.get_mut(self.image_n) {
                *slot = f;
                self.image_n += 1;
            }
        }
        self
    }

    /// The next raw 64-bit value (xorshift64).
    pub fn raw(&mut self) -> u64 {
        self.x ^= self.x << 13;
        self.x ^= self.x >> 7;
        self.x ^= self.x << 17;
        self.x
    }

    /// One of `xs`, or `None` if it is empty.
    pub fn pick<T: Copy>(&mut self, xs: &[T]) -> Option<T> {
        let n = xs.len() as u64;
        let i = self.raw().checked_rem(n)?;
        xs.get(i as usize).copied()
    }

    /// A frame number: 60% arena, 10% pool, 10% module image (pool when
    /// there is none), 5% MMIO, 10% beyond RAM, 5% absurd.
    pub fn frame(&mut self) -> u64 {
        let r = self.raw();
        match r % 20 {
            // `checked_rem`: no division-by-zero path (the sizes are never
            // zero, but the compiler cannot know).
            0..=11 => self.arena + (r >> 8).checked_rem(self.arena_half).unwrap_or(0),
            12 | 13 => self.pinned + (r >> 8).checked_rem(self.pinned_frames).unwrap_or(0),
            14 | 15 => {
                let image = self.image.get(..self.image_n).unwrap_or_default();
                match self.pick_at(image, r >> 8) {
                    Some(f) => f,
                    None => self.pinned + (r >> 8).checked_rem(self.pinned_frames).unwrap_or(0),
                }
            }
            16 => self.pick_at(&MMIO_PFNS, r >> 8).unwrap_or(MMIO_PFNS[0]),
            17 | 18 => BEYOND_RAM_PFN + (r >> 8) % 4096,
            _ => r >> 8,
        }
    }

    /// `xs[i % len]`, or `None` if `xs` is empty.
    fn pick_at(&self, xs: &[u64], i: u64) -> Option<u64> {
        let i = i.checked_rem(xs.len() as u64)?;
        xs.get(i as usize).copied()
    }

    /// A page count: 1 to 4 mostly (staying inside the arena from any
    /// frame of its first half when the arena has at least 8 pages), else
    /// 0 or close to `u64::MAX`.
    pub fn count(&mut self) -> u64 {
        let r = self.raw();
        match r % 10 {
            0..=7 => 1 + (r >> 8) % 4,
            8 => 0,
            _ => u64::MAX - (r >> 8) % 16,
        }
    }

    /// A VM handle: one of the first four mostly, else anything.
    pub fn handle(&mut self) -> u64 {
        let r = self.raw();
        if r % 10 < 8 {
            0x1000 + (r >> 8) % 4
        } else {
            r >> 8
        }
    }

    /// A small guest frame number.
    pub fn gfn(&mut self) -> u64 {
        self.raw() % 64
    }

    /// Hostile arguments (RBX, RCX, RDX, RSI) for call `call`, shaped like
    /// the arguments it takes: frames, counts, handles and guest frames
    /// where it expects them (kinds 0..=2, one of them invalid), anything
    /// elsewhere.
    pub fn args(&mut self, call: u64) -> [u64; 4] {
        match call {
            nr::HOST_DONATE_HYP
            | nr::HYP_DONATE_HOST
            | nr::HOST_SHARE_HYP
            | nr::HOST_UNSHARE_HYP => [self.frame(), self.count(), self.raw(), self.raw()],
            nr::VM_CREATE => [self.raw(), self.raw() % 3, self.frame(), self.count()],
            nr::HOST_SHARE_GUEST | nr::HOST_UNSHARE_GUEST | nr::HOST_DONATE_GUEST => {
                [self.handle(), self.frame(), self.gfn(), self.count()]
            }
            nr::DEBUG_GUEST_SHARE_HOST | nr::DEBUG_GUEST_UNSHARE_HOST => {
                [self.handle(), self.gfn(), self.count(), self.raw()]
            }
            _ => [self.raw(), self.raw(), self.raw(), self.raw()],
        }
    }

    /// A call of [`FUZZ_CALLS`] and hostile arguments for it.
    pub fn call(&mut self) -> (u64, [u64; 4]) {
        let call = self.pick(&FUZZ_CALLS).unwrap_or(nr::VERSION);
        (call, self.args(call))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_within_the_promised_ranges() {
        let mut a = Hostile::new(7, 0x500, 32, 0x400, 256).with_image(&[0x900, 0, 0x903, 0x907]);
        let mut b = a.clone();
        let (mut arena, mut pinned, mut beyond, mut small) = (0, 0, 0, 0);
        let (mut image, mut mmio) = (0, 0);
        for _ in 0..10_000 {
            let f = a.frame();
            assert_eq!(f, b.frame(), "same seed, same sequence");
            if (0x500..0x510).contains(&f) {
                arena += 1;
            }
            if (0x400..0x500).contains(&f) {
                pinned += 1;
            }
            if (BEYOND_RAM_PFN..BEYOND_RAM_PFN + 4096).contains(&f) {
                beyond += 1;
            }
            if [0x900, 0x903, 0x907].contains(&f) {
                image += 1;
            }
            assert_ne!(f, 0, "an empty region is never drawn");
            if MMIO_PFNS.contains(&f) {
                mmio += 1;
            }
            assert!(
                !(0x510..0x520).contains(&f),
                "second half of the arena is headroom"
            );
            let c = a.count();
            b.count();
            if (1..=4).contains(&c) {
                small += 1;
            } else {
                assert!(c == 0 || c > u64::MAX - 16, "{c}");
            }
        }
        // Roughly the documented mix.
        assert!(
            arena > 5500 && pinned > 800 && beyond > 800 && image > 800 && mmio > 400,
            "{arena} {pinned} {beyond} {image} {mmio}"
        );
        // Without image frames, that share goes to the pool.
        let mut c = Hostile::new(7, 0x500, 32, 0x400, 256);
        let pool = (0..10_000)
            .filter(|_| (0x400..0x500).contains(&c.frame()))
            .count();
        assert!(pool > 1700, "{pool}");
        assert!(small > 7000, "{small}");
        assert_eq!(a.pick::<u8>(&[]), None);
        assert!(matches!(a.pick(&[1, 2, 3]), Some(1..=3)));
    }
}
