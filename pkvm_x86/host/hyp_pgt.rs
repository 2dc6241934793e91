// SPDX-License-Identifier: GPL-2.0

//! Builds root mode's own page table at load (host side, before any CPU is
//! deprivileged), in pool memory, with the page-table engine's
//! [`HypPgt`]:
//!
//! * the pool, at its direct-map address, read-write, `OWNED` by the
//!   hypervisor (its linear window; donations add to it later);
//! * the module's text (read + execute), read-only data and ro_after_init
//!   data (read), at the module's addresses: the regions of
//!   `host_ept::IMAGE_REGIONS`, which the host EPT pins, so the host can
//!   neither write them nor move them through a page-state call;
//! * a scratch slot through which root mode reaches any other page for the
//!   time of one access (zeroing a page a guest gives back).
//!
//! Nothing else is mapped: not the kernel (root-mode code calls none of it;
//! scripts/audit-root-calls.py checks that at build time), not the host's
//! page tables, data or stacks, so the host cannot redirect root-mode
//! execution by editing its page tables or its code.

use core::ffi::c_void;

use kernel::{bindings, prelude::*};

use crate::host::pool::{Pool, CHUNK};
use crate::hv::mm::addr::{Hpa, HypVa, Pfn};
use crate::hv::mm::mem_protect::HypPgt;
use crate::hv::mm::pgtable::{HypFormat, PteFormat, PERM_R, PERM_W};
use crate::hyp::mm::HypMm;

/// Root mode's scratch slot; outside the linear window, the kernel image
/// and the module area.
const SCRATCH_VA: u64 = 0xffff_f000_0000_0000;
const PAGE: u64 = 4096;

extern "C" {
    fn pkvm_helper_module_region(m: *mut c_void, ty: i32, size: *mut u32) -> *mut c_void;
}

/// The module's pages of region `ty`, mapped with `perms`.
fn map_module_region(
    pgt: &mut HypPgt,
    mm: &mut HypMm,
    module: *mut bindings::module,
    ty: i32,
    perms: u8,
) -> Result {
    let mut size = 0u32;
    // SAFETY: `module` is this module, alive while it is loaded.
    let base = unsafe { pkvm_helper_module_region(module.cast(), ty, &mut size) } as u64;
    let mut va = base & !(PAGE - 1);
    while va < base + u64::from(size) {
        // SAFETY: `va` is inside a live vmalloc'ed module region.
        let pfn = unsafe { bindings::vmalloc_to_pfn(va as *const c_void) } as u64;
        let pa = Pfn::new(pfn).ok_or(EINVAL)?.hpa();
        pgt.map_fixed(mm, HypVa::new(va).ok_or(EINVAL)?, pa, PAGE, perms)?;
        va += PAGE;
    }
    Ok(())
}

/// Direct-map address of the last-level entry mapping `va` in `pgt`, if
/// `va` is mapped by a present 4 KiB page (found by the engine's lookup).
fn leaf_entry(pgt: &HypPgt, mm: &mut HypMm, va: HypVa) -> Option<u64> {
    let leaf = pgt.pgt().lookup(mm, va).ok()?;
    if leaf.level != 1 || !HypFormat::is_present(leaf.entry) {
        return None;
    }
    Some(mm.va(leaf.table.raw()) + 8 * leaf.index as u64)
}

/// Builds root mode's page table; returns it (its root goes in HOST_CR3).
pub(crate) fn build(pool: &mut Pool, module: *mut bindings::module) -> Result<HypPgt> {
    build_inner(pool, module).inspect_err(|e| {
        pr_err!("building the hypervisor page table failed: {:?}\n", e);
    })
}

fn build_inner(pool: &mut Pool, module: *mut bindings::module) -> Result<HypPgt> {
    let scratch = pool.alloc(1)?;
    let mm = pool.mm();
    let mut pgt = HypPgt::new(mm, 3, mm.va(0))?;
    let mut chunks = [Hpa::ZERO; crate::hyp::mm::MAX_CHUNKS];
    let n = mm.chunks().len();
    for (dst, c) in chunks.iter_mut().zip(mm.chunks()) {
        *dst = Hpa::new(c.pa).ok_or(EINVAL)?;
    }
    for &pa in chunks.iter().take(n) {
        pgt.map_owned(mm, pa, CHUNK as u64)?;
    }
    // The same regions the host EPT pins (`host_ept::IMAGE_REGIONS`).
    for (ty, perms) in crate::host::host_ept::IMAGE_REGIONS {
        map_module_region(&mut pgt, mm, module, ty, perms)?;
    }
    let scratch_va = HypVa::new(SCRATCH_VA).ok_or(EINVAL)?;
    let scratch_pa = Hpa::new(scratch.pa).ok_or(EINVAL)?;
    pgt.map_fixed(mm, scratch_va, scratch_pa, PAGE, PERM_R | PERM_W)?;
    let pte = leaf_entry(&pgt, mm, scratch_va).ok_or(EINVAL)?;
    // SAFETY: `pte` is the pool entry that alone maps SCRATCH_VA, for as
    // long as the table lives.
    unsafe { mm.set_scratch(SCRATCH_VA, pte) };
    Ok(pgt)
}
