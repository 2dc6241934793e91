// SPDX-License-Identifier: GPL-2.0

//! The CPUID instruction.

/// Registers returned by CPUID.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuidResult {
    /// EAX.
    pub eax: u32,
    /// EBX.
    pub ebx: u32,
    /// ECX.
    pub ecx: u32,
    /// EDX.
    pub edx: u32,
}

/// Executes CPUID with `leaf` in EAX and `subleaf` in ECX on the current CPU.
///
/// CPUID has no side effects visible to the kernel (it may exit to a
/// hypervisor, which is the point of the signature leaf later on).
pub fn cpuid(leaf: u32, subleaf: u32) -> CpuidResult {
    let (eax, ebx, ecx, edx): (u32, u32, u32, u32);
    // SAFETY: CPUID only writes EAX, EBX, ECX and EDX.  RBX is reserved by
    // LLVM, so it is saved in a scratch register around the instruction and
    // the result is exchanged back; no memory is touched.
    unsafe {
        core::arch::asm!(
            "mov {tmp:r}, rbx",
            "cpuid",
            "xchg {tmp:r}, rbx",
            tmp = out(reg) ebx,
            inout("eax") leaf => eax,
            inout("ecx") subleaf => ecx,
            out("edx") edx,
            options(nostack, preserves_flags, nomem),
        );
    }
    CpuidResult { eax, ebx, ecx, edx }
}
