// SPDX-License-Identifier: GPL-2.0

//! What each CPU's hypervisor needs, prepared in pool memory before any
//! CPU is deprivileged: the VMXON region, the VMCS, the per-CPU state
//! ([`HypCpu`]), the root-mode stack, GDT and TSS; and the root-mode IDT
//! shared by all CPUs.

use kernel::prelude::*;

use super::pool::{Pool, PoolPage};
use crate::hv::vmx::caps::VmxCaps;
use crate::hyp::entry;
use crate::hyp::global::HypGlobal;
use crate::hyp::percpu::HypCpu;

pub(crate) const STACK_PAGES: usize = 4;
pub(crate) const HOST_CS: u16 = 0x08;
pub(crate) const HOST_SS: u16 = 0x10;
pub(crate) const HOST_TR: u16 = 0x18;
pub(crate) const TSS_OFFSET: usize = 0x800;
pub(crate) const TSS_LIMIT: u64 = 0x67;

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
        ))
    };
    let stack = pool.alloc(STACK_PAGES)?;
    let stack_top = stack.va as u64 + (STACK_PAGES * 4096) as u64;
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

/// The root-mode IDT, shared by every CPU: 32 interrupt gates to the
/// exception stubs of [`entry`].
pub(crate) fn build_root_idt(pool: &mut Pool) -> Result<PoolPage> {
    let idt = pool.alloc(1)?;
    // SAFETY: `pkvm_root_idt_stubs` is an immutable table in .rodata.
    let stubs = unsafe { &entry::pkvm_root_idt_stubs };
    for (v, &handler) in stubs.iter().enumerate() {
        let gate_lo = (handler & 0xffff)
            | (u64::from(HOST_CS) << 16)
            | (0x8e00u64 << 32)
            | ((handler >> 16) & 0xffff) << 48;
        let gate_hi = handler >> 32;
        // SAFETY: 32 gates of 16 bytes fit in the page.
        unsafe {
            let g = idt.ptr().cast::<u64>().add(2 * v);
            *g = gate_lo;
            *g.add(1) = gate_hi;
        }
    }
    Ok(idt)
}

/// Fills the root-mode GDT (null, 64-bit code, data, busy TSS) and TSS in
/// the page `gdt`.  The TSS's interrupt stacks (IST1-7) all point at
/// `ist_top`, a page of the pool: root mode never uses them (its IDT gates
/// have IST 0), but in the instant between TEARDOWN_CPU loading the host's
/// IDT and the host reloading its own TR, an NMI would take the host's
/// gate with this TSS, and must find a valid stack.
pub(crate) fn build_root_gdt_tss(gdt: &PoolPage, ist_top: u64) {
    let tss = gdt.va as u64 + TSS_OFFSET as u64;
    let g = gdt.ptr().cast::<u64>();
    let tss_lo = TSS_LIMIT
        | (tss & 0xff_ffff) << 16
        | 0xbu64 << 40 // busy 64-bit TSS
        | 1u64 << 47 // present
        | ((tss >> 24) & 0xff) << 56;
    // SAFETY: the GDT page is a fresh pool page, ours alone; the TSS lives
    // at TSS_OFFSET in the same page; IST1-7 sit at bytes 36..92 of a
    // 64-bit TSS, the I/O map base at 102.
    unsafe {
        *g = 0;
        *g.add(1) = 0x00af_9b00_0000_ffff;
        *g.add(2) = 0x00cf_9300_0000_ffff;
        *g.add(3) = tss_lo;
        *g.add(4) = tss >> 32;
        for i in 0..7u64 {
            ((tss + 36 + 8 * i) as *mut u64).write_unaligned(ist_top);
        }
        *((tss + 102) as *mut u16) = 104;
    }
}
