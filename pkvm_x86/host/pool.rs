// SPDX-License-Identifier: GPL-2.0

//! The hypervisor's memory pool: physically contiguous 2 MiB chunks taken
//! from the host's page allocator at load, managed by [`HypMm`] (which lives
//! inside the pool), and given back to the host, zeroed, when the module
//! unloads.
//!
//! Chunks are 2 MiB-aligned (order-9 allocations), so the host EPT can
//! unmap each one with a single 2 MiB entry.

use kernel::{bindings, prelude::*};

use crate::hyp::mm::{Chunk, HypMm, MAX_CHUNKS};

/// Bytes in one chunk.
pub(crate) const CHUNK: usize = 2 << 20;

extern "C" {
    fn pkvm_helper_pa(virt: *const core::ffi::c_void) -> u64;
    #[cfg(pkvm_debug)]
    fn pkvm_helper_va(pa: u64) -> *mut core::ffi::c_void;
}

/// The direct-map address of physical address `pa`.
///
/// # Safety
///
/// `pa` must be RAM covered by the direct map.
#[cfg(pkvm_debug)]
pub(crate) unsafe fn direct_map(pa: u64) -> usize {
    // SAFETY: guaranteed by the caller.
    unsafe { pkvm_helper_va(pa) as usize }
}

/// A run of pages handed out by the pool.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PoolPage {
    /// Kernel (direct-map) virtual address.
    pub(crate) va: usize,
    /// Physical address.
    pub(crate) pa: u64,
}

impl PoolPage {
    /// The page as a mutable byte pointer.
    pub(crate) fn ptr(&self) -> *mut u8 {
        self.va as *mut u8
    }
}

/// The hypervisor's memory: 2 MiB chunks taken from the kernel's page
/// allocator at load, with the page allocator ([`HypMm`]) built in the
/// first one.  Dropping it gives the chunks back (only once no CPU runs
/// under the hypervisor).
pub(crate) struct Pool {
    chunks: KVec<usize>,
    mm: *mut HypMm,
}

impl Pool {
    /// Takes `bytes` (rounded up to whole chunks) from the host.
    pub(crate) fn new(bytes: usize) -> Result<Self> {
        let n = bytes.div_ceil(CHUNK).clamp(1, MAX_CHUNKS);
        let mut pool = Pool {
            chunks: KVec::with_capacity(n, GFP_KERNEL)?,
            mm: core::ptr::null_mut(),
        };
        let mut descs = KVec::with_capacity(n, GFP_KERNEL)?;
        for _ in 0..n {
            // SAFETY: plain page-allocator call; the result is checked.
            let va = unsafe { bindings::alloc_pages_exact_noprof(CHUNK, bindings::GFP_KERNEL) };
            if va.is_null() {
                return Err(ENOMEM); // `pool` drops and frees what it has
            }
            // SAFETY: `va` is a fresh allocation of CHUNK bytes.
            unsafe { core::ptr::write_bytes(va.cast::<u8>(), 0, CHUNK) };
            pool.chunks.push(va as usize, GFP_KERNEL)?;
            // SAFETY: `va` is a live direct-map allocation.
            let pa = unsafe { pkvm_helper_pa(va) };
            descs.push(Chunk { pa, va: va as u64 }, GFP_KERNEL)?;
        }
        // SAFETY: the chunks are zeroed, exclusively ours, 2 MiB aligned
        // (order-9 allocations) and live until `pool` drops.
        pool.mm = unsafe { HypMm::init(&descs) }.map_err(|_| EINVAL)?;
        Ok(pool)
    }

    /// The allocator inside the pool.
    pub(crate) fn mm(&mut self) -> &mut HypMm {
        // SAFETY: `mm` was set by `new` and points into a live chunk; the
        // `&mut self` borrow makes the access exclusive on the host side.
        unsafe { &mut *self.mm }
    }

    /// `n` physically contiguous zeroed pages.
    pub(crate) fn alloc(&mut self, n: usize) -> Result<PoolPage> {
        let mm = self.mm();
        let pa = mm.alloc_contig(n).ok_or(ENOMEM)?;
        Ok(PoolPage {
            va: mm.va(pa) as usize,
            pa,
        })
    }

    /// Physical address of the first chunk (read from host memory only).
    #[cfg(pkvm_debug)]
    pub(crate) fn first_pa(&self) -> u64 {
        self.chunks
            .first()
            // SAFETY: a live direct-map allocation.
            .map_or(0, |&va| unsafe {
                pkvm_helper_pa(va as *const core::ffi::c_void)
            })
    }

    /// A pool with no memory (what is left after leaking one).
    pub(crate) fn empty() -> Self {
        Pool {
            chunks: KVec::new(),
            mm: core::ptr::null_mut(),
        }
    }

    /// Pages in use / in total.
    pub(crate) fn usage(&mut self) -> (usize, usize) {
        if self.mm.is_null() {
            return (0, 0);
        }
        let mm = self.mm();
        (mm.used_pages(), mm.total_pages())
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        for &va in self.chunks.iter() {
            // Hypervisor data must not leak to whoever gets the pages next.
            // SAFETY: each chunk is a live allocation of CHUNK bytes that no
            // CPU uses any more (the hypervisor has been torn down).
            unsafe {
                core::ptr::write_bytes(va as *mut u8, 0, CHUNK);
                bindings::free_pages_exact(va as *mut core::ffi::c_void, CHUNK);
            }
        }
    }
}
