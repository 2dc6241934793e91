// SPDX-License-Identifier: GPL-2.0

//! What each CPU's hypervisor needs, prepared in pool memory before any
//! CPU is deprivileged: the VMXON region, the VMCS, the per-CPU state
//! ([`HypCpu`]), the root-mode stack (with an unmapped guard page below
//! it), GDT and TSS; and the root-mode IDT shared by all CPUs.

use kernel::prelude::*;

use super::pool::{Pool, PoolPage};
use crate::hv::mm::addr::Hpa;
use crate::hv::vmx::caps::VmxCaps;
use crate::hv::vmx::root_tables;
use crate::hyp::entry;
use crate::hyp::global::HypGlobal;
use crate::hyp::nested::{NestedCpu, NestedPages};
use crate::hyp::percpu::HypCpu;

/// Pages of each root-mode stack, above its unmapped guard page (the
/// stack allocation is `STACK_PAGES + 1` pages, the guard first).
pub(crate) const STACK_PAGES: usize = 4;

/// Everything one CPU's hypervisor needs, in pool memory.
pub(crate) struct CpuSlot {
    pub(crate) vmxon: PoolPage,
    pub(crate) vmcs: PoolPage,
    pub(crate) hyp: PoolPage,
    pub(crate) stack_top: u64,
    pub(crate) gdt: PoolPage,
    pub(crate) launched: bool,
}

pub(crate) fn new_slot(
    pool: &mut Pool,
    cpu: u32,
    caps: &VmxCaps,
    global: *mut HypGlobal,
) -> Result<CpuSlot> {
    let vmxon = pool.alloc(1)?;
    let vmcs = pool.alloc(1)?;
    // SAFETY: fresh pool pages; the revision identifier goes in the
    // first 31 bits of both regions.
    unsafe {
        *vmxon.ptr().cast::<u32>() = caps.vmcs_revision;
        *vmcs.ptr().cast::<u32>() = caps.vmcs_revision;
    }
    // Nested VMX (`crate::hyp::nested`): vmcs02, the merged MSR bitmap
    // and the per-CPU nested state.
    let vmcs02 = pool.alloc(1)?;
    let bitmap02 = pool.alloc(1)?;
    let nested_state = pool.alloc(1)?;
    // VMCS shadowing of vmcs12 for the host's VMREAD/VMWRITE: the shadow
    // VMCS (revision with the shadow-VMCS indicator, bit 31) and the
    // VMREAD/VMWRITE bitmaps (filled at the first use, root mode).
    let shadow = pool.alloc(1)?;
    let vmread_bitmap = pool.alloc(1)?;
    let vmwrite_bitmap = pool.alloc(1)?;
    // SAFETY: fresh pool pages, ours alone; `NestedCpu` fits in a page
    // (checked at compile time in `crate::hyp::nested`).
    unsafe {
        *vmcs02.ptr().cast::<u32>() = caps.vmcs_revision;
        *shadow.ptr().cast::<u32>() = caps.vmcs_revision | 1 << 31;
        nested_state
            .ptr()
            .cast::<NestedCpu>()
            .write(NestedCpu::new());
    }
    let nested = NestedPages {
        vmcs01_pa: vmcs.pa,
        vmcs02_pa: vmcs02.pa,
        bitmap02_pa: bitmap02.pa,
        bitmap02_va: bitmap02.va as u64,
        state_va: nested_state.va as u64,
        shadow_pa: shadow.pa,
        vmread_bitmap_pa: vmread_bitmap.pa,
        vmread_bitmap_va: vmread_bitmap.va as u64,
        vmwrite_bitmap_pa: vmwrite_bitmap.pa,
        vmwrite_bitmap_va: vmwrite_bitmap.va as u64,
    };
    let hyp = pool.alloc(1)?;
    // SAFETY: a fresh pool page, large enough (checked at compile time
    // in `percpu`), exclusively ours.
    unsafe {
        hyp.ptr().cast::<HypCpu>().write(HypCpu::new(
            hyp.va as u64,
            cpu,
            caps.cr4_fixed.0,
            caps.cr4_fixed.1,
            global,
            nested,
        ))
    };
    // The stack's first page is its guard: unmapped in root mode's page
    // table, so an overflow raises #PF (taken on the interrupt stack, see
    // `root_tables::FAULT_IST`: recorded, CPU halted) instead of writing
    // the pool page below.  It stays the hypervisor's (the host EPT never
    // maps pool pages) and is never used or freed while the pool lives.
    let stack = pool.alloc(STACK_PAGES + 1)?;
    let guard = Hpa::new(stack.pa).ok_or(EINVAL)?;
    // SAFETY: no CPU is deprivileged yet (every slot is built before the
    // first launch), so nothing else uses the `HypGlobal`.
    unsafe { (*global).unmap_stack_guard(guard) }.map_err(|_| ENOMEM)?;
    let stack_top = stack.va as u64 + ((STACK_PAGES + 1) * 4096) as u64;
    // The entry finds the HypCpu just above the saved registers.
    // SAFETY: the slot is inside the stack allocation.
    unsafe { *((stack_top - 16) as *mut u64) = hyp.va as u64 };
    let gdt = pool.alloc(1)?;
    let ist = pool.alloc(1)?;
    let slot_gdt = gdt;
    build_root_gdt_tss(&slot_gdt, ist.va as u64 + 4096);
    Ok(CpuSlot {
        vmxon,
        vmcs,
        hyp,
        stack_top,
        gdt,
        launched: false,
    })
}

/// The root-mode IDT, shared by every CPU: an interrupt gate per
/// exception vector to the stubs of [`entry`] (#DF and #PF on the
/// per-CPU interrupt stack: [`root_tables::idt_entry`]).
pub(crate) fn build_root_idt(pool: &mut Pool) -> Result<PoolPage> {
    let idt = pool.alloc(1)?;
    // SAFETY: `pkvm_root_idt_stubs` is an immutable table in .rodata.
    let stubs = unsafe { &entry::pkvm_root_idt_stubs };
    let gates = idt.ptr().cast::<[u64; 2]>();
    for (v, &handler) in stubs.iter().enumerate().take(root_tables::IDT_VECTORS) {
        // SAFETY: 32 gates of 16 bytes fit in the fresh page, ours alone.
        unsafe { gates.add(v).write(root_tables::idt_entry(v, handler)) };
    }
    Ok(idt)
}

/// Fills the root-mode GDT and, at [`root_tables::TSS_OFFSET`] of the same
/// page, the TSS (layout and reasons: [`root_tables`]).  `ist_top` is the
/// top of the page the TSS's interrupt stacks use.
pub(crate) fn build_root_gdt_tss(gdt: &PoolPage, ist_top: u64) {
    let tss_va = gdt.va as u64 + root_tables::TSS_OFFSET as u64;
    // SAFETY: the GDT page is a fresh pool page, ours alone; the GDT's
    // entries and the TSS, at TSS_OFFSET, both fit in it without overlap.
    unsafe {
        gdt.ptr()
            .cast::<[u64; root_tables::GDT_ENTRIES]>()
            .write(root_tables::gdt(tss_va));
        (tss_va as *mut root_tables::Tss64).write_unaligned(root_tables::tss(ist_top));
    }
}
