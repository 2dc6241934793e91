// SPDX-License-Identifier: GPL-2.0

//! Control registers, descriptor tables, segment registers, raw MSR access
//! and a few privileged instructions, for capturing the running CPU's state
//! and restoring it.

use core::arch::asm;

macro_rules! read_reg {
    ($(#[$m:meta])* $name:ident, $insn:literal) => {
        $(#[$m])*
        #[inline]
        pub fn $name() -> u64 {
            let v: u64;
            // SAFETY: reading this register has no side effects; the kernel
            // runs at CPL 0 where the instruction is allowed.
            unsafe { asm!($insn, v = out(reg) v, options(nomem, nostack, preserves_flags)) };
            v
        }
    };
}

read_reg!(/// CR0.
    read_cr0, "mov {v}, cr0");
read_reg!(/// CR3.
    read_cr3, "mov {v}, cr3");
read_reg!(/// CR4.
    read_cr4, "mov {v}, cr4");
read_reg!(/// DR7.
    read_dr7, "mov {v}, dr7");

macro_rules! read_sel {
    ($(#[$m:meta])* $name:ident, $insn:literal) => {
        $(#[$m])*
        #[inline]
        pub fn $name() -> u16 {
            let v: u16;
            // SAFETY: reading a selector has no side effects.
            unsafe { asm!($insn, v = out(reg) v, options(nomem, nostack, preserves_flags)) };
            v
        }
    };
}

read_sel!(/// CS selector.
    cs, "mov {v:x}, cs");
read_sel!(/// SS selector.
    ss, "mov {v:x}, ss");
read_sel!(/// DS selector.
    ds, "mov {v:x}, ds");
read_sel!(/// ES selector.
    es, "mov {v:x}, es");
read_sel!(/// FS selector.
    fs, "mov {v:x}, fs");
read_sel!(/// GS selector.
    gs, "mov {v:x}, gs");
read_sel!(/// Task register selector.
    tr, "str {v:x}");
read_sel!(/// LDT selector.
    ldtr, "sldt {v:x}");

/// Writes CR4.
///
/// # Safety
///
/// The new value must be valid for the current mode and the kernel's
/// expectations (callers only toggle VMXE around VMXON/VMXOFF).
#[inline]
pub unsafe fn write_cr4(v: u64) {
    // SAFETY: guaranteed by the caller.
    unsafe { asm!("mov cr4, {v}", v = in(reg) v, options(nostack, preserves_flags)) };
}

macro_rules! write_reg {
    ($(#[$m:meta])* $name:ident, $insn:literal) => {
        $(#[$m])*
        ///
        /// # Safety
        ///
        /// The value must be valid for the register and for what the code
        /// running afterwards relies on (teardown restores the host's own
        /// values; nothing else writes these).
        #[inline]
        pub unsafe fn $name(v: u64) {
            // SAFETY: guaranteed by the caller.
            unsafe { asm!($insn, v = in(reg) v, options(nostack, preserves_flags)) };
        }
    };
}

write_reg!(/// Writes CR0.
    write_cr0, "mov cr0, {v}");
write_reg!(/// Writes CR2 (the page-fault address the host will read).
    write_cr2, "mov cr2, {v}");
write_reg!(/// Writes CR3.
    write_cr3, "mov cr3, {v}");
write_reg!(/// Writes DR7.
    write_dr7, "mov dr7, {v}");

/// Loads GDTR.
///
/// # Safety
///
/// `d` must describe a GDT valid for the code that runs afterwards.
#[inline]
pub unsafe fn lgdt(d: &DescriptorTablePointer) {
    // SAFETY: guaranteed by the caller; LGDT reads 10 bytes from `d`.
    unsafe { asm!("lgdt [{p}]", p = in(reg) d, options(nostack, preserves_flags)) };
}

/// Loads IDTR.
///
/// # Safety
///
/// `d` must describe an IDT valid for the code that runs afterwards.
#[inline]
pub unsafe fn lidt(d: &DescriptorTablePointer) {
    // SAFETY: guaranteed by the caller; LIDT reads 10 bytes from `d`.
    unsafe { asm!("lidt [{p}]", p = in(reg) d, options(nostack, preserves_flags)) };
}

/// Loads DS, ES, FS and GS with the given selectors (FS/GS bases are
/// reset by the loads; callers write the base MSRs afterwards).
///
/// # Safety
///
/// The selectors must be null or valid in the current GDT.
#[inline]
pub unsafe fn load_data_segments(ds: u16, es: u16, fs: u16, gs: u16) {
    // SAFETY: guaranteed by the caller.
    unsafe {
        asm!("mov ds, {ds:x}", "mov es, {es:x}", "mov fs, {fs:x}", "mov gs, {gs:x}",
             ds = in(reg) ds, es = in(reg) es, fs = in(reg) fs, gs = in(reg) gs,
             options(nostack, preserves_flags));
    }
}

/// Writes back and invalidates the caches (WBINVD).
pub fn wbinvd() {
    // SAFETY: WBINVD only affects caches; CPL 0.
    unsafe { asm!("wbinvd", options(nostack, preserves_flags)) };
}

/// Parks this CPU for good: interrupts off, HLT forever (an NMI wakes it,
/// its handler returns, it halts again).
pub fn park() -> ! {
    loop {
        // SAFETY: CLI and HLT at CPL 0 touch no memory.
        unsafe { asm!("cli", "hlt", options(nostack, nomem)) };
    }
}

/// Invalidates the TLB entries for linear address `va` on this CPU.
///
/// # Safety
///
/// None beyond running at CPL 0; provided as `unsafe` because callers use
/// it to make a page-table change visible, which they must have made safely.
#[inline]
pub unsafe fn invlpg(va: u64) {
    // SAFETY: INVLPG only drops cached translations.
    unsafe { asm!("invlpg [{a}]", a = in(reg) va, options(nostack, preserves_flags)) };
}

/// RFLAGS.
#[inline]
pub fn read_rflags() -> u64 {
    let v: u64;
    // SAFETY: PUSHFQ/POP only touch the stack slot they use.
    unsafe { asm!("pushfq", "pop {v}", v = out(reg) v, options(nomem, preserves_flags)) };
    v
}

/// A GDTR / IDTR image.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C, packed)]
pub struct DescriptorTablePointer {
    /// Limit (size - 1).
    pub limit: u16,
    /// Linear base address.
    pub base: u64,
}

/// SGDT.
#[inline]
pub fn sgdt() -> DescriptorTablePointer {
    let mut d = DescriptorTablePointer::default();
    // SAFETY: SGDT writes 10 bytes to the operand, a live local of that size.
    unsafe { asm!("sgdt [{p}]", p = in(reg) &mut d, options(nostack, preserves_flags)) };
    d
}

/// SIDT.
#[inline]
pub fn sidt() -> DescriptorTablePointer {
    let mut d = DescriptorTablePointer::default();
    // SAFETY: SIDT writes 10 bytes to the operand, a live local of that size.
    unsafe { asm!("sidt [{p}]", p = in(reg) &mut d, options(nostack, preserves_flags)) };
    d
}

/// Reads an MSR that is known to exist.
///
/// # Safety
///
/// The MSR must exist on this CPU (RDMSR of a missing MSR raises #GP).
#[inline]
pub unsafe fn rdmsr(msr: u32) -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: guaranteed by the caller.
    unsafe {
        asm!("rdmsr", in("ecx") msr, out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags))
    };
    (u64::from(hi) << 32) | u64::from(lo)
}

/// Writes an MSR.
///
/// # Safety
///
/// The MSR must exist and the value must be valid and safe for the kernel.
#[inline]
pub unsafe fn wrmsr(msr: u32, v: u64) {
    // SAFETY: guaranteed by the caller.
    unsafe {
        asm!("wrmsr", in("ecx") msr, in("eax") v as u32, in("edx") (v >> 32) as u32,
             options(nostack, preserves_flags));
    }
}

/// MSR indices used when capturing and restoring CPU state.
pub mod msr {
    /// IA32_SYSENTER_CS.
    pub const SYSENTER_CS: u32 = 0x174;
    /// IA32_SYSENTER_ESP.
    pub const SYSENTER_ESP: u32 = 0x175;
    /// IA32_SYSENTER_EIP.
    pub const SYSENTER_EIP: u32 = 0x176;
    /// IA32_DEBUGCTL.
    pub const DEBUGCTL: u32 = 0x1d9;
    /// IA32_PAT.
    pub const PAT: u32 = 0x277;
    /// IA32_EFER.
    pub const EFER: u32 = 0xc000_0080;
    /// IA32_FS_BASE.
    pub const FS_BASE: u32 = 0xc000_0100;
    /// IA32_GS_BASE.
    pub const GS_BASE: u32 = 0xc000_0101;
}
