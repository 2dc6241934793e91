// SPDX-License-Identifier: GPL-2.0

//! The hypervisor's memory pool: physically contiguous 2 MiB chunks taken
//! from the host's page allocator at load, handed out as zeroed pages for
//! VMXON/VMCS regions, stacks, descriptor tables, page tables and per-CPU
//! state, and given back to the host when the module unloads.
//!
//! Chunks are 2 MiB-aligned (order-9 allocations), so the host EPT can
//! unmap each one with a single 2 MiB entry.

use kernel::{bindings, prelude::*};

/// Bytes in one chunk.
pub(crate) const CHUNK: usize = 2 << 20;
const PAGE: usize = 4096;

extern "C" {
    fn pkvm_helper_pa(virt: *const core::ffi::c_void) -> u64;
}

/// A page handed out by the pool.
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

/// The pool.  Pages are never returned individually: the whole pool goes
/// back at once when the hypervisor is gone.
pub(crate) struct Pool {
    chunks: KVec<usize>,
    used_pages: usize,
}

impl Pool {
    /// Takes `bytes` (rounded up to whole chunks) from the host.
    pub(crate) fn new(bytes: usize) -> Result<Self> {
        let n = bytes.div_ceil(CHUNK).max(1);
        let mut pool = Pool {
            chunks: KVec::with_capacity(n, GFP_KERNEL)?,
            used_pages: 0,
        };
        for _ in 0..n {
            // SAFETY: plain page-allocator call; the result is checked.
            let va = unsafe { bindings::alloc_pages_exact_noprof(CHUNK, bindings::GFP_KERNEL) };
            if va.is_null() {
                return Err(ENOMEM); // `pool` drops and frees what it has
            }
            // SAFETY: `va` is a fresh allocation of CHUNK bytes.
            unsafe { core::ptr::write_bytes(va.cast::<u8>(), 0, CHUNK) };
            pool.chunks.push(va as usize, GFP_KERNEL)?;
        }
        Ok(pool)
    }

    /// A pool with no memory (what is left after leaking one).
    pub(crate) fn empty() -> Self {
        Pool {
            chunks: KVec::new(),
            used_pages: 0,
        }
    }

    /// Total pages in the pool.
    pub(crate) fn total_pages(&self) -> usize {
        self.chunks.len() * (CHUNK / PAGE)
    }

    /// Pages handed out.
    pub(crate) fn used_pages(&self) -> usize {
        self.used_pages
    }

    /// `n` physically contiguous zeroed pages.
    pub(crate) fn alloc(&mut self, n: usize) -> Result<PoolPage> {
        let per_chunk = CHUNK / PAGE;
        if n == 0 || n > per_chunk {
            return Err(EINVAL);
        }
        let mut idx = self.used_pages;
        // Do not straddle chunks: they are not contiguous with each other.
        if idx % per_chunk + n > per_chunk {
            idx = (idx / per_chunk + 1) * per_chunk;
        }
        let chunk = *self.chunks.get(idx / per_chunk).ok_or(ENOMEM)?;
        let va = chunk + (idx % per_chunk) * PAGE;
        self.used_pages = idx + n;
        // SAFETY: `va` is inside a live chunk.
        let pa = unsafe { pkvm_helper_pa(va as *const core::ffi::c_void) };
        Ok(PoolPage { va, pa })
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
