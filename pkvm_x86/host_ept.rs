// SPDX-License-Identifier: GPL-2.0

//! Builds the host EPT at load: an identity map of the whole physical
//! address space (up to MAXPHYADDR) that gives the host everything except
//! the hypervisor's memory.
//!
//! * Memory types come from the MTRRs (`hv::mtrr`), so the combination
//!   with the host's PAT is what it was natively: RAM write-back, MMIO as
//!   the firmware typed it.  Large pages (1 GiB, 2 MiB) are used wherever
//!   the range and its memory type allow.
//! * The pool's chunks are left out: their entries stay zero, which the
//!   page-state encoding reads as NOPAGE owned by the hypervisor.
//! * The module's text is mapped read + execute and its read-only data
//!   read-only: the host can run the module's host-side code but cannot
//!   change what root mode executes or reads.

use kernel::{bindings, prelude::*};

use crate::arch::{cpuid::cpuid, msr};
use crate::hv::ept::{MemType, PageState};
use crate::hv::mem_protect::HostEpt;
use crate::hv::mtrr::{Mtrrs, RawMtrrs};
use crate::hv::pgtable::{Attrs, PERM_R, PERM_RWX, PERM_X};
use crate::hyp::mm::HypMm;

const PAGE: u64 = 4096;
const SIZES: [u64; 3] = [1 << 30, 2 << 20, PAGE];

extern "C" {
    /// `m` is a `struct module *`, passed opaquely.
    fn pkvm_helper_module_region(
        m: *mut core::ffi::c_void,
        ty: i32,
        size: *mut u32,
    ) -> *mut core::ffi::c_void;
}

/// A range the host EPT treats specially.
#[derive(Clone, Copy)]
struct Hole {
    pa: u64,
    size: u64,
    /// `None`: not mapped (hypervisor-owned); `Some(p)`: mapped with `p`.
    perms: Option<u8>,
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
                Hole {
                    pa: (pfn as u64) << 12,
                    size: PAGE,
                    perms: Some(perms),
                },
                GFP_KERNEL,
            )?;
            va += PAGE;
        }
    }
    Ok(())
}

/// Maps `[start, end)` for the host with `perms`, in runs of uniform MTRR
/// type, using the largest aligned blocks that fit.
fn map_typed(
    ept: &mut HostEpt,
    mm: &mut HypMm,
    mtrrs: &Mtrrs,
    start: u64,
    end: u64,
    perms: u8,
) -> Result {
    let mut a = start;
    while a < end {
        let run_start = a;
        let mut run_type: Option<MemType> = None;
        while a < end {
            let Some((size, ty)) = SIZES.iter().find_map(|&s| {
                (a % s == 0 && a + s <= end)
                    .then(|| mtrrs.uniform_type(a, s).map(|t| (s, t)))
                    .flatten()
            }) else {
                // Not even a 4 KiB page has one type: MTRRs are broken;
                // the safe choice is uncached.
                break;
            };
            match run_type {
                None => run_type = Some(ty),
                Some(t) if t != ty => break,
                Some(_) => {}
            }
            a += size;
        }
        let ty = match run_type {
            Some(t) => t,
            None => {
                a = (a + PAGE).min(end);
                MemType::Uc
            }
        };
        let attrs = Attrs {
            perms,
            memtype: ty,
            state: PageState::Owned,
        };
        ept.map_memory(mm, run_start, a - run_start, attrs)
            .map_err(|e| Error::from_errno(-(e.errno())))?;
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
        holes.push(
            Hole {
                pa: c.pa,
                size: crate::pool::CHUNK as u64,
                perms: None,
            },
            GFP_KERNEL,
        )?;
    }
    module_pages(module, &mut holes)?;
    holes.sort_unstable_by_key(|h| h.pa);

    let mut ept = HostEpt::new(mm, 3).map_err(|e| Error::from_errno(-(e.errno())))?;
    let mut a = 0u64;
    for h in holes.iter() {
        if h.pa < a {
            // A module page inside a pool chunk cannot happen; an
            // overlap means the list is wrong: refuse rather than guess.
            return Err(EINVAL);
        }
        map_typed(&mut ept, mm, &mtrrs, a, h.pa, PERM_RWX)?;
        if let Some(p) = h.perms {
            map_typed(&mut ept, mm, &mtrrs, h.pa, h.pa + h.size, p)?;
        }
        a = h.pa + h.size;
    }
    map_typed(&mut ept, mm, &mtrrs, a, limit, PERM_RWX)?;
    Ok(ept)
}
