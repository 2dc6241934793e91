// SPDX-License-Identifier: GPL-2.0

//! Builds the host EPT at load: an identity map of the whole physical
//! address space (up to MAXPHYADDR less any TME/MKTME key-ID bits, at most
//! the 2^48 a 4-level EPT covers) that gives the host everything except
//! the hypervisor's memory.  Large pages (1 GiB where the memory types
//! allow) throughout.  Only `[0, eager_end)` (every RAM page, at least the
//! low 4 GiB) is mapped at load; the rest, MMIO only, is mapped by root
//! mode at the host's first access to each 1 GiB block
//! (`hv::mm::host_ept_map::LazyMap`), with the memory type the MTRRs read
//! here give it: mapping 2^48 eagerly would cost 513 table pages (2 MiB).
//! The table pages used at load are printed as "host EPT N table pages".
//!
//! * Memory types come from the MTRRs (`hv::mm::mtrr`), so the combination
//!   with the host's PAT is what it was natively: RAM write-back, MMIO as
//!   the firmware typed it.  Large pages (1 GiB, 2 MiB) are used wherever
//!   the range and its memory type allow.
//! * The pool's chunks are left out: their entries stay zero, which the
//!   page-state encoding reads as NOPAGE owned by the hypervisor.
//! * The module image root mode maps (`hyp_pgt.rs`: text, rodata,
//!   ro_after_init) is mapped `PINNED` (`hv::mm::ept::PINNED`): text read +
//!   execute, rodata and ro_after_init read-only.  The host can run the
//!   module's host-side code but cannot change what root mode executes or
//!   reads, and no page-state transition accepts these pages (EPERM), so
//!   the host cannot get them back writable by donating and reclaiming
//!   them.  ro_after_init is already final here: the kernel writes it only
//!   while loading the module, before `init` runs.
//! * The RAM ranges the kernel reports (`walk_system_ram_range()`) become
//!   the host EPT's RAM map (`hv::mm::ram`): only those pages can ever be
//!   donated or shared (MMIO, e.g. a device BAR or the local APIC page, is
//!   EINVAL).
//!
//! The layout itself (sorting and checking the holes, runs of one memory
//! type, page sizes) is decided by the pure core, `hv::mm::host_ept_map`, and
//! tested there; this file gathers its inputs from the kernel and the CPU.
//! A module page inside a pool chunk cannot happen: an overlap means the
//! list is wrong, and the core refuses it (`EINVAL`) rather than guess.

use kernel::{bindings, prelude::*};

use crate::arch::{cpuid::cpuid, msr};
use crate::hv::mm::host_ept_map::{build_identity, eager_end, identity_limit, Hole, LazyMap};
use crate::hv::mm::mem_protect::HostEpt;
use crate::hv::mm::mtrr::{Mtrrs, RawMtrrs};
use crate::hv::mm::pgtable::{PERM_R, PERM_X};
use crate::hv::mm::ram::{RamMap, RAM_RANGES_MAX};
use crate::hyp::mm::HypMm;

const PAGE: u64 = 4096;

extern "C" {
    /// `m` is a `struct module *`, passed opaquely.
    fn pkvm_helper_module_region(
        m: *mut core::ffi::c_void,
        ty: i32,
        size: *mut u32,
    ) -> *mut core::ffi::c_void;
    fn pkvm_helper_ram_ranges(ranges: *mut u64, max: u32) -> i32;
    fn pkvm_helper_module_first_pfn(ty: i32) -> u64;
}

/// The module-image regions root mode maps, with the permissions both root
/// mode (`hyp_pgt.rs`) and the host (here, `PINNED`) have on them: one
/// list, so that every page root mode maps from the image is pinned.
pub(crate) const IMAGE_REGIONS: [(bindings::mod_mem_type, u8); 3] = [
    (bindings::mod_mem_type_MOD_TEXT, PERM_R | PERM_X),
    (bindings::mod_mem_type_MOD_RODATA, PERM_R),
    (bindings::mod_mem_type_MOD_RO_AFTER_INIT, PERM_R),
];

/// The first frame of each module-image region (0 for an empty one), for
/// the debug interface's fuzz, which throws them at the page-state calls.
#[cfg_attr(not(pkvm_debug), allow(dead_code))]
pub(crate) fn image_frames() -> [u64; 3] {
    // SAFETY: plain helper call on this module, which is loaded.
    IMAGE_REGIONS.map(|(ty, _)| unsafe { pkvm_helper_module_first_pfn(ty) })
}

/// The RAM ranges the kernel reports, as the host EPT's RAM map.
fn ram_map() -> Result<RamMap> {
    let mut buf = KVec::<u64>::with_capacity(2 * RAM_RANGES_MAX, GFP_KERNEL)?;
    buf.resize(2 * RAM_RANGES_MAX, 0, GFP_KERNEL)?;
    // SAFETY: `buf` has room for `RAM_RANGES_MAX` pairs.
    let n = unsafe { pkvm_helper_ram_ranges(buf.as_mut_ptr(), RAM_RANGES_MAX as u32) };
    let n = usize::try_from(n).map_err(|_| {
        pr_err!(
            "RAM map: more than {} RAM ranges or none ({})\n",
            RAM_RANGES_MAX,
            n
        );
        EINVAL
    })?;
    let mut ram = RamMap::empty();
    for pair in buf.chunks_exact(2).take(n) {
        if let [start, end] = *pair {
            ram.add(start, end).map_err(|e| {
                pr_err!(
                    "RAM map: bad range {:#x}..{:#x}: {}\n",
                    start,
                    end,
                    e.name()
                );
                EINVAL
            })?;
        }
    }
    Ok(ram)
}

/// CPUID.(EAX=7,ECX=0):ECX bit 13: TME (and IA32_TME_ACTIVATE) exists.
const CPUID_7_ECX_TME: u32 = 1 << 13;
/// IA32_TME_ACTIVATE.
const MSR_TME_ACTIVATE: u32 = 0x982;

/// Physical address bits that are TME/MKTME key-ID bits (IA32_TME_ACTIVATE
/// locked and enabled: bits 35:32), 0 when the CPU has no TME (Bochs) or
/// it is off.  These bits select a key, not memory; the host EPT never
/// maps them (`host_ept_map::identity_limit`).
fn keyid_bits() -> u8 {
    if cpuid(0, 0).eax < 7 || cpuid(7, 0).ecx & CPUID_7_ECX_TME == 0 {
        return 0;
    }
    let Some(tme) = msr::read_on_cpu(0, MSR_TME_ACTIVATE) else {
        return 0;
    };
    // Bit 0: locked; bit 1: enabled (as Linux's `detect_tme` reads it).
    if tme & 3 != 3 {
        return 0;
    }
    ((tme >> 32) & 0xf) as u8
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
    for (ty, perms) in IMAGE_REGIONS {
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

/// Builds the host EPT in pool memory, and the description of its part
/// that root mode fills on demand.
pub(crate) fn build(
    mm: &mut HypMm,
    module: *mut bindings::module,
) -> Result<(HostEpt, LazyMap<Mtrrs>)> {
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
    let keyid = keyid_bits();
    let limit = identity_limit(maxphy, keyid);
    pr_info!(
        "{}\n",
        format_args!(
            "host EPT: identity map of [0, {limit:#x}) (MAXPHYADDR {maxphy}, {keyid} key-ID bits)"
        )
    );

    let mut holes = KVec::new();
    for c in mm.chunks() {
        holes.push(Hole::hyp(c.pa, crate::host::pool::CHUNK as u64), GFP_KERNEL)?;
    }
    module_pages(module, &mut holes)?;

    let ram = ram_map()?;
    let eager = eager_end(&ram, limit);
    pr_info!(
        "{}\n",
        format_args!("host EPT: [0, {eager:#x}) mapped now, [{eager:#x}, {limit:#x}) on demand")
    );
    let lazy = LazyMap::new(eager, limit, mtrrs).map_err(|_| EINVAL)?;
    let mut ept = HostEpt::new(mm, 3, ram)?;
    if let Err(e) = build_identity(&mut ept, mm, &mtrrs, &mut holes, eager) {
        pr_err!("host EPT: identity map failed: {}\n", e.name());
        if let Err(d) = ept.destroy(mm) {
            pr_warn!("host EPT: freeing the partial table failed: {}\n", d.name());
        }
        return Err(e.into());
    }
    Ok((ept, lazy))
}
