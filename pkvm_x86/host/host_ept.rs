// SPDX-License-Identifier: GPL-2.0

//! Builds the host EPT at load: an identity map of the whole physical
//! address space (up to MAXPHYADDR) that gives the host everything except
//! the hypervisor's memory.
//!
//! * Memory types come from the MTRRs (`hv::mm::mtrr`), so the combination
//!   with the host's PAT is what it was natively: RAM write-back, MMIO as
//!   the firmware typed it.  Large pages (1 GiB, 2 MiB) are used wherever
//!   the range and its memory type allow.
//! * The pool's chunks are left out: their entries stay zero, which the
//!   page-state encoding reads as NOPAGE owned by the hypervisor.
//! * The module's text is mapped read + execute and its read-only data
//!   read-only: the host can run the module's host-side code but cannot
//!   change what root mode executes or reads.
//!
//! The layout itself (sorting and checking the holes, runs of one memory
//! type, page sizes) is decided by the pure core, `hv::mm::host_ept_map`, and
//! tested there; this file gathers its inputs from the kernel and the CPU.
//! A module page inside a pool chunk cannot happen: an overlap means the
//! list is wrong, and the core refuses it (`EINVAL`) rather than guess.

use kernel::{bindings, prelude::*};

use crate::arch::{cpuid::cpuid, msr};
use crate::hv::mm::host_ept_map::{build_identity, Hole};
use crate::hv::mm::mem_protect::HostEpt;
use crate::hv::mm::mtrr::{Mtrrs, RawMtrrs};
use crate::hv::mm::pgtable::{PERM_R, PERM_X};
use crate::hyp::mm::HypMm;

const PAGE: u64 = 4096;

extern "C" {
    /// `m` is a `struct module *`, passed opaquely.
    fn pkvm_helper_module_region(
        m: *mut core::ffi::c_void,
        ty: i32,
        size: *mut u32,
    ) -> *mut core::ffi::c_void;
}

/// Physical address bits the CPU implements.
pub(crate) fn maxphyaddr() -> u8 {
    if cpuid(0x8000_0000, 0).eax >= 0x8000_0008 {
        (cpuid(0x8000_0008, 0).eax & 0xff) as u8
    } else {
        36
    }
}

fn module_pages(module: *mut bindings::module, holes: &mut KVec<Hole>) -> Result {
    let regions = [
        (bindings::mod_mem_type_MOD_TEXT, PERM_R | PERM_X),
        (bindings::mod_mem_type_MOD_RODATA, PERM_R),
    ];
    for (ty, perms) in regions {
        let mut size = 0u32;
        // SAFETY: `module` is this module, alive while it is loaded.
        let base = unsafe { pkvm_helper_module_region(module.cast(), ty, &mut size) } as u64;
        let mut va = base & !(PAGE - 1);
        while va < base + u64::from(size) {
            // SAFETY: `va` is inside a live vmalloc'ed module region.
            let pfn = unsafe { bindings::vmalloc_to_pfn(va as *const core::ffi::c_void) };
            holes.push(
                Hole::restricted((pfn as u64) << 12, PAGE, perms),
                GFP_KERNEL,
            )?;
            va += PAGE;
        }
    }
    Ok(())
}

/// Builds the host EPT in pool memory.
pub(crate) fn build(mm: &mut HypMm, module: *mut bindings::module) -> Result<HostEpt> {
    let maxphy = maxphyaddr();
    let raw = RawMtrrs::read_with(maxphy, |idx| msr::read_on_cpu(0, idx).unwrap_or(0));
    let mtrrs = Mtrrs::decode(&raw);
    if !mtrrs.issues().is_empty() {
        for name in mtrrs.issues().names() {
            pr_warn!(
                "MTRR problem: {} (affected ranges are mapped uncached)\n",
                name
            );
        }
    }
    let limit = 1u64 << maxphy.clamp(32, 46);

    let mut holes = KVec::new();
    for c in mm.chunks() {
        holes.push(Hole::hyp(c.pa, crate::host::pool::CHUNK as u64), GFP_KERNEL)?;
    }
    module_pages(module, &mut holes)?;

    let mut ept = HostEpt::new(mm, 3)?;
    if let Err(e) = build_identity(&mut ept, mm, &mtrrs, &mut holes, limit) {
        pr_err!("host EPT: identity map failed: {}\n", e.name());
        if let Err(d) = ept.destroy(mm) {
            pr_warn!("host EPT: freeing the partial table failed: {}\n", d.name());
        }
        return Err(e.into());
    }
    Ok(ept)
}
