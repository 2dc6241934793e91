// SPDX-License-Identifier: GPL-2.0

//! The descriptor tables of VMX root mode: the per-CPU GDT and TSS and the
//! IDT shared by every CPU, as values (the host side writes them into pool
//! pages before the launch; see `crate::host::cpu_setup`).
//!
//! Owns the layout: which selector is which (the VMCS host-state area
//! names them), where the TSS sits relative to the GDT, what the TSS
//! holds.  The encodings themselves are [`super::segment`]'s.
//!
//! ```text
//! GDT page   0x000 null | 0x08 64-bit code | 0x10 data | 0x18 TSS (16 bytes)
//!            0x800 the 64-bit TSS (104 bytes)
//! ```

use super::segment::{
    interrupt_gate, system_descriptor, AccessRights, Descriptor, TYPE_ACCESSED, TYPE_CODE,
    TYPE_TSS64_BUSY,
};

/// Root mode's code selector (HOST_CS_SELECTOR).
pub const HOST_CS: u16 = 0x08;
/// Root mode's stack selector (HOST_SS_SELECTOR).
pub const HOST_SS: u16 = 0x10;
/// Root mode's task register (HOST_TR_SELECTOR).
pub const HOST_TR: u16 = 0x18;
/// Offset of the TSS in the GDT page.
pub const TSS_OFFSET: usize = 0x800;
/// Size of a 64-bit TSS in bytes (its limit is one less).
pub const TSS_SIZE: usize = 104;
/// Entries of the root-mode GDT (the TSS descriptor takes two).
pub const GDT_ENTRIES: usize = 5;
/// Vectors of the root-mode IDT: the architectural exceptions.  Root mode
/// runs with interrupts disabled and no external-interrupt source of its
/// own, so nothing above 31 can arrive.
pub const IDT_VECTORS: usize = 32;

/// Type field of data segments root mode loads: read/write, accessed.
const TYPE_DATA_RW: u8 = 2 | TYPE_ACCESSED;
/// Type field of root mode's code segment: execute/read, accessed.
const TYPE_CODE_XR: u8 = TYPE_CODE | 2 | TYPE_ACCESSED;

/// The GDT of one CPU's root mode, its TSS at `tss_base` (busy, as it is
/// once loaded: VM exits load TR without checking, and the TEARDOWN path
/// relies on a busy TSS).
pub const fn gdt(tss_base: u64) -> [u64; GDT_ENTRIES] {
    // Flat segments, 4 GiB limit in 4 KiB units (ignored in 64-bit mode
    // for CS/SS/DS, but what the CPU's VM exit loads into the hidden part).
    let code = Descriptor::code_or_data(
        0,
        0xf_ffff,
        AccessRights(TYPE_CODE_XR as u32 | AccessRights::P | AccessRights::L | AccessRights::G),
    );
    let data = Descriptor::code_or_data(
        0,
        0xf_ffff,
        AccessRights(TYPE_DATA_RW as u32 | AccessRights::P | AccessRights::DB | AccessRights::G),
    );
    let tss = system_descriptor(tss_base, TSS_SIZE as u32 - 1, TYPE_TSS64_BUSY);
    [0, code.0, data.0, tss[0], tss[1]]
}

/// A 64-bit task-state segment (SDM Vol. 3A, "Task Management in 64-bit
/// Mode"), packed as the CPU reads it.
#[repr(C, packed(4))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tss64 {
    reserved0: u32,
    /// RSP0-RSP2: stacks for privilege changes (root mode has none).
    pub rsp: [u64; 3],
    reserved1: u64,
    /// IST1-IST7: interrupt stacks.
    pub ist: [u64; 7],
    reserved2: u64,
    reserved3: u16,
    /// Offset of the I/O permission bitmap; at or beyond the limit: none.
    pub iomap_base: u16,
}

const _: () = assert!(core::mem::size_of::<Tss64>() == TSS_SIZE);

/// Root mode's TSS: every interrupt stack at `ist_top`, no I/O bitmap.
///
/// Root mode's own IDT runs #DF and #PF on IST [`FAULT_IST`] (a stack
/// overflow into the guard page must not need the overflowing stack; see
/// [`idt_entry`]), every other vector on the current stack.  The ISTs also
/// serve one instant: between TEARDOWN_CPU loading the host's IDT and the
/// host reloading its own TR, an NMI takes the host's gate, which may name
/// an IST, with this TSS; it must find a valid stack there.
pub const fn tss(ist_top: u64) -> Tss64 {
    Tss64 {
        reserved0: 0,
        rsp: [0; 3],
        reserved1: 0,
        ist: [ist_top; 7],
        reserved2: 0,
        reserved3: 0,
        iomap_base: TSS_SIZE as u16,
    }
}

/// The root-mode IDT entry for exception `handler`: an interrupt gate
/// through root mode's code selector, on the current stack.
pub const fn idt_gate(handler: u64) -> [u64; 2] {
    interrupt_gate(handler, HOST_CS)
}

/// The interrupt stack (TSS IST index) root mode's #DF and #PF run on.
///
/// Each root-mode stack has an unmapped guard page below it
/// (`crate::host::cpu_setup`): an overflow raises #PF, which the CPU could
/// not push on the overflowing stack (that would be a #DF, then a triple
/// fault: a machine reset).  On the per-CPU interrupt stack the CPU
/// delivers the #PF, whose handler records vector 14 and halts
/// (`crate::hyp::entry`); #DF takes the same stack, so any other double
/// fault is recorded too.  The other vectors keep the current stack: NMI
/// and #MC return to it, #GP is the `*_safe` accessors' fixup.
pub const FAULT_IST: u8 = 1;

/// The root-mode IDT entry for `vector` with `handler`: [`idt_gate`],
/// switched to [`FAULT_IST`] for #DF (8) and #PF (14).
pub const fn idt_entry(vector: usize, handler: u64) -> [u64; 2] {
    let g = idt_gate(handler);
    if vector == 8 || vector == 14 {
        // Bits 34:32 of the gate: the IST index.
        [g[0] | (FAULT_IST as u64) << 32, g[1]]
    } else {
        g
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hv::vmx::segment::{check_cs_64, tr_for_vm_entry, DescriptorTables};

    #[test]
    fn gdt_matches_the_hand_encoded_values_it_replaces() {
        let g = gdt(0xffff_8880_1234_5800);
        assert_eq!(g[0], 0);
        assert_eq!(g[1], 0x00af_9b00_0000_ffff);
        assert_eq!(g[2], 0x00cf_9300_0000_ffff);
        assert_eq!(g[3], 0x1200_8b34_5800_0067);
        assert_eq!(g[4], 0xffff_8880);
    }

    #[test]
    fn gdt_passes_the_vm_entry_checks_on_cs_and_tr() {
        let base = 0xffff_8880_0abc_d800;
        let image = gdt(base);
        let t = DescriptorTables::new(&image, &[]);
        let cs = t.segment(HOST_CS).unwrap();
        check_cs_64(&cs).unwrap();
        let tr = tr_for_vm_entry(t.system_segment(HOST_TR).unwrap()).unwrap();
        assert_eq!(tr.base, base);
        assert_eq!(tr.limit, TSS_SIZE as u32 - 1);
        assert_eq!(tr.access_rights.seg_type(), TYPE_TSS64_BUSY);
        let ss = t.segment(HOST_SS).unwrap();
        assert!(ss.access_rights.present() && ss.access_rights.s() && !ss.access_rights.l());
        assert_eq!(ss.access_rights.seg_type() & TYPE_CODE, 0, "SS is data");
    }

    #[test]
    fn tss_layout() {
        let t = tss(0x1000);
        // SAFETY: Tss64 is plain data of exactly TSS_SIZE bytes.
        let bytes: [u8; TSS_SIZE] = unsafe { core::mem::transmute(t) };
        let rd64 = |o: usize| u64::from_le_bytes(bytes[o..o + 8].try_into().unwrap());
        for i in 0..7 {
            assert_eq!(rd64(36 + 8 * i), 0x1000, "IST{}", i + 1);
        }
        assert_eq!(u16::from_le_bytes([bytes[102], bytes[103]]), 104);
        assert_eq!(rd64(4), 0, "RSP0");
    }

    #[test]
    fn idt_gate_matches_the_hand_encoded_value_it_replaces() {
        let h = 0xffff_ffff_c012_3456u64;
        let want_lo = (h & 0xffff)
            | (u64::from(HOST_CS) << 16)
            | (0x8e00u64 << 32)
            | ((h >> 16) & 0xffff) << 48;
        assert_eq!(idt_gate(h), [want_lo, h >> 32]);
    }

    #[test]
    fn double_fault_and_page_fault_take_the_interrupt_stack() {
        let h = 0xffff_ffff_c012_3456u64;
        for v in 0..IDT_VECTORS {
            let g = idt_entry(v, h);
            let ist = (g[0] >> 32) & 7;
            let want = if v == 8 || v == 14 { 1 } else { 0 };
            assert_eq!(ist, want, "vector {v}");
            assert_eq!(g[0] & !(7 << 32), idt_gate(h)[0]);
            assert_eq!(g[1], idt_gate(h)[1]);
        }
        // The TSS names a stack for IST1.
        let t = tss(0x2000);
        let ist = t.ist;
        assert_eq!(ist[FAULT_IST as usize - 1], 0x2000);
    }
}
