// SPDX-License-Identifier: GPL-2.0

//! Root-mode entry points in assembly: the VM-exit entry, the exception
//! handlers of the hypervisor's own IDT, and fault-tolerant MSR / XSETBV
//! accessors.  They call into `crate::hyp` (the exit handler) and use the
//! fixed offsets of `crate::hyp::percpu::HypCpu`.
//!
//! VM exit: HOST_RSP points at the top of the per-CPU hypervisor stack,
//! where the address of the CPU's [`HypCpu`] is stored.  The entry reserves
//! an IRET frame, saves the 15 general-purpose registers as a
//! [`GuestRegs`], and calls [`crate::hyp::exit_handler::handle_exit`].  A zero
//! return enters the current VMCS again (VMRESUME, or VMLAUNCH when the
//! handler set `HypCpu::launch_next` for a fresh vmcs02 of nested VMX); a
//! failed entry saves the frame again and calls
//! [`crate::hyp::exit_handler::handle_entry_failure`], which returns the
//! same way (nested VMX: the host's VMLAUNCH/VMRESUME fails
//! architecturally; the host's own VMCS failing halts the CPU, recorded).
//! A non-zero return means the
//! handler left VMX operation (CPU teardown) and filled the IRET frame with
//! the host's RIP/CS/RFLAGS/RSP/SS: the entry restores the registers and
//! IRETQs into the host, now in root mode.
//!
//! Root-mode exceptions: an NMI first answers a pending cross-CPU
//! shootdown (INVEPT of the host EPT and the acknowledgement in
//! `HypCpu::flushed_gen`, see `crate::hyp::global`); then, unless a
//! sender flagged it as a shootdown NMI, it and #MC set a pending flag in the per-CPU
//! state (through GS, which is HOST_GS_BASE = the `HypCpu`; every field
//! written here is an atomic on the Rust side, and each store below is a
//! single aligned `mov` or a `lock` read-modify-write) and return; the
//! exit handler delivers them to the host before the next VM entry.  #GP
//! raised by the `*_safe` accessors below skips the faulting instruction
//! and makes the accessor return an error.  Any other exception is a hypervisor bug: it is
//! recorded (vector, RIP, count) and the CPU halts, so nothing runs on
//! corrupted state.  #PF and #DF run on the interrupt stack (IST1), so a
//! root-mode stack overflow into the unmapped guard page below the stack
//! is recorded this way too instead of triple-faulting.
//!
//! Debug builds only: DEBUG_STACK_OVERFLOW runs
//! [`pkvm_stack_overflow_probe`], which pushes until the stack overflows
//! into its guard page; while the probe is armed
//! (`HypCpu::probe_resume_rsp`) the #PF stub records the fault address and
//! its own RSP and resumes the probe at its saved RSP and RIP instead of
//! halting.  A production build has neither the probe nor that branch.

use crate::hyp::global::HypGlobal;
use crate::hyp::percpu::{
    HypCpu, OFF_EXPECT_FAULT, OFF_FATAL_COUNT, OFF_FATAL_RIP, OFF_FATAL_VECTOR, OFF_FAULTED,
    OFF_FLUSHED_GEN, OFF_GLOBAL, OFF_LAUNCH_NEXT, OFF_MC_PENDING, OFF_NMIS_IN_ROOT,
    OFF_NMI_PENDING, OFF_SHOOTDOWN_NMI,
};
#[cfg(pkvm_debug)]
use crate::hyp::percpu::{
    OFF_PROBE_CR2, OFF_PROBE_RESUME_RIP, OFF_PROBE_RESUME_RSP, OFF_PROBE_STUB_RSP,
};

/// Guest general-purpose registers as saved by the VM-exit entry, followed
/// by the IRET frame used when the CPU leaves VMX operation.
#[repr(C)]
#[derive(Debug, Default)]
pub struct GuestRegs {
    /// RAX, RCX, RDX, RBX, RBP, RSI, RDI, R8-R15 (RSP is in the VMCS).
    pub gpr: [u64; 15],
    /// RIP, CS, RFLAGS, RSP, SS for the final IRETQ of a teardown.
    pub iret: [u64; 5],
}

/// Index into [`GuestRegs::gpr`] for the hardware register number `n`
/// (0 = RAX ... 15 = R15); `None` for RSP (4), which lives in the VMCS.
pub const fn gpr_slot(n: u8) -> Option<usize> {
    match n {
        0..=3 => Some(n as usize),
        5..=15 => Some(n as usize - 1),
        _ => None,
    }
}

/// Size of the frame the entry pushes below HOST_RSP.
pub const FRAME_SIZE: usize = core::mem::size_of::<GuestRegs>();
const _: () = assert!(FRAME_SIZE == 160);
const _: () = assert!(core::mem::size_of::<HypCpu>() % 8 == 0);

/// Indices of registers in [`GuestRegs::gpr`].
pub mod reg {
    /// RAX.
    pub const RAX: usize = 0;
    /// RCX.
    pub const RCX: usize = 1;
    /// RDX.
    pub const RDX: usize = 2;
    /// RBX.
    pub const RBX: usize = 3;
    /// RSI.
    pub const RSI: usize = 5;
}

extern "C" {
    /// VM-exit entry point (HOST_RIP).
    pub fn pkvm_vmexit_entry();
    /// Addresses of the 32 exception handlers of the root-mode IDT.
    pub static pkvm_root_idt_stubs: [u64; 32];
    /// RDMSR `msr` into `*out`; returns 0, or 1 if it raised #GP.
    pub fn pkvm_rdmsr_safe(msr: u32, out: *mut u64) -> u32;
    /// WRMSR `value` to `msr`; returns 0, or 1 if it raised #GP.
    pub fn pkvm_wrmsr_safe(msr: u32, value: u64) -> u32;
    /// XSETBV `value` to XCR `xcr`; returns 0, or 1 if it raised #GP.
    pub fn pkvm_xsetbv_safe(xcr: u32, value: u64) -> u32;
    /// DEBUG_STACK_OVERFLOW (debug builds): pushes until the root-mode
    /// stack overflows into its guard page, is resumed by the #PF stub,
    /// and returns the fault address it recorded (`HypCpu::probe_cr2`;
    /// the stub's RSP is in `HypCpu::probe_stub_rsp`).  CR2, which the host
    /// reads for its own page faults, is restored.
    #[cfg(pkvm_debug)]
    pub fn pkvm_stack_overflow_probe() -> u64;
}

core::arch::global_asm!(
    // Restores the registers saved as a GuestRegs, in reverse push order.
    ".macro pkvm_pop_gprs",
    "pop rax", "pop rcx", "pop rdx", "pop rbx", "pop rbp", "pop rsi", "pop rdi",
    "pop r8", "pop r9", "pop r10", "pop r11", "pop r12", "pop r13", "pop r14", "pop r15",
    ".endm",
    ".pushsection .text",
    ".balign 16",
    ".global pkvm_vmexit_entry",
    "pkvm_vmexit_entry:",
    "endbr64",
    "sub rsp, 40",
    "push r15", "push r14", "push r13", "push r12", "push r11", "push r10", "push r9", "push r8",
    "push rdi", "push rsi", "push rbp", "push rbx", "push rdx", "push rcx", "push rax",
    "mov rdi, rsp",
    "mov rsi, [rsp + {frame}]",
    "call {handler}",
    "9:",
    "test rax, rax",
    "jnz 2f",
    "pkvm_pop_gprs",
    "add rsp, 40",
    // VMLAUNCH if the handler asked for it (a fresh vmcs02), else
    // VMRESUME of the current VMCS.  Neither changes a general-purpose
    // register when it fails, and the flag test's RFLAGS are replaced by
    // the guest's at a successful entry.
    "cmp dword ptr gs:[{launch}], 0",
    "jne 5f",
    "vmresume",
    "jmp 10f",
    "5:",
    "mov dword ptr gs:[{launch}], 0",
    "vmlaunch",
    // The entry failed (VMfail): save the same frame again and let the
    // handler turn it into what the host sees (a failed entry of vmcs02
    // is the host's VMLAUNCH/VMRESUME failing); it returns like
    // `handle_exit`.  A failed entry of the host's own VMCS halts there.
    "10:",
    "sub rsp, 40",
    "push r15", "push r14", "push r13", "push r12", "push r11", "push r10", "push r9", "push r8",
    "push rdi", "push rsi", "push rbp", "push rbx", "push rdx", "push rcx", "push rax",
    "mov rdi, rsp",
    "mov rsi, [rsp + {frame}]",
    "call {entry_failed}",
    "jmp 9b",
    "2:",
    "pkvm_pop_gprs",
    "iretq",

    // Exceptions without an error code: record vector and RIP, halt.
    ".irp v, 0,1,3,4,5,6,7,9,15,16,19,20,22,23,24,25,26,27,28,31",
    "pkvm_root_vec_\\v:",
    "endbr64",
    "mov dword ptr gs:[{fatal_vector}], \\v",
    "jmp pkvm_root_fatal_noerr",
    ".endr",
    // Exceptions with an error code (#PF, 14, below: it has a debug-build
    // variant).
    ".irp v, 8,10,11,12,17,21,29,30",
    "pkvm_root_vec_\\v:",
    "endbr64",
    "mov dword ptr gs:[{fatal_vector}], \\v",
    "jmp pkvm_root_fatal_err",
    ".endr",
    "pkvm_root_fatal_err:",
    "add rsp, 8",
    "pkvm_root_fatal_noerr:",
    "push rax",
    "mov rax, [rsp + 8]",
    "mov gs:[{fatal_rip}], rax",
    "pop rax",
    "lock inc dword ptr gs:[{fatal_count}]",
    "4: cli",
    "hlt",
    "jmp 4b",

    // NMI: first the shootdown (without any lock: the sender may be
    // waiting for this CPU while this CPU waits for the lock or for its
    // own shootdown).  If the flush generation moved past this CPU's,
    // INVEPT the host EPT and acknowledge the generation read before the
    // INVEPT.  Then, if a sender flagged this NMI as its own, it ends here;
    // otherwise it is the host's: remember it, deliver it later.
    "pkvm_root_vec_2:",
    "endbr64",
    "push rax",
    "push rcx",
    "mov rax, gs:[{global}]",
    "mov rcx, [rax + {gen}]",
    "cmp rcx, gs:[{flushed}]",
    "jbe 7f",
    "push rcx",
    "push 0",
    "push qword ptr [rax + {eptp}]",
    "mov rcx, [rax + {invtype}]",
    "invept rcx, [rsp]",
    "add rsp, 16",
    "pop rcx",
    "mov gs:[{flushed}], rcx",
    "7:",
    "xor eax, eax",
    "xchg eax, dword ptr gs:[{shootdown}]",
    "test eax, eax",
    "jnz 8f",
    "mov dword ptr gs:[{nmi}], 1",
    "lock inc qword ptr gs:[{nmi_count}]",
    "8:",
    "pop rcx",
    "pop rax",
    "iretq",
    "pkvm_root_vec_18:",
    "endbr64",
    "mov dword ptr gs:[{mc}], 1",
    "iretq",

    // #GP: an expected fault of a *_safe accessor skips the instruction
    // and reports; anything else is fatal.
    "pkvm_root_vec_13:",
    "endbr64",
    "cmp dword ptr gs:[{expect}], 0",
    "je 6f",
    "push rax",
    "mov eax, dword ptr gs:[{expect}]",
    "add [rsp + 16], rax",
    "mov dword ptr gs:[{expect}], 0",
    "mov dword ptr gs:[{faulted}], 1",
    "pop rax",
    "add rsp, 8",
    "iretq",
    "6:",
    "mov dword ptr gs:[{fatal_vector}], 13",
    "jmp pkvm_root_fatal_err",

    // The accessors: arm the fault expectation with the instruction's
    // length (RDMSR, WRMSR: 2 bytes; XSETBV: 3), run it, disarm, report.
    ".global pkvm_rdmsr_safe",
    "pkvm_rdmsr_safe:",
    "endbr64",
    "mov ecx, edi",
    "mov dword ptr gs:[{faulted}], 0",
    "mov dword ptr gs:[{expect}], 2",
    "rdmsr",
    "mov dword ptr gs:[{expect}], 0",
    "shl rdx, 32",
    "or rax, rdx",
    "mov [rsi], rax",
    "mov eax, dword ptr gs:[{faulted}]",
    "ret",

    ".global pkvm_wrmsr_safe",
    "pkvm_wrmsr_safe:",
    "endbr64",
    "mov ecx, edi",
    "mov rax, rsi",
    "mov rdx, rsi",
    "shr rdx, 32",
    "mov dword ptr gs:[{faulted}], 0",
    "mov dword ptr gs:[{expect}], 2",
    "wrmsr",
    "mov dword ptr gs:[{expect}], 0",
    "mov eax, dword ptr gs:[{faulted}]",
    "ret",

    ".global pkvm_xsetbv_safe",
    "pkvm_xsetbv_safe:",
    "endbr64",
    "mov ecx, edi",
    "mov rax, rsi",
    "mov rdx, rsi",
    "shr rdx, 32",
    "mov dword ptr gs:[{faulted}], 0",
    "mov dword ptr gs:[{expect}], 3",
    "xsetbv",
    "mov dword ptr gs:[{expect}], 0",
    "mov eax, dword ptr gs:[{faulted}]",
    "ret",
    ".popsection",

    ".pushsection .rodata",
    ".balign 8",
    ".global pkvm_root_idt_stubs",
    "pkvm_root_idt_stubs:",
    ".irp v, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31",
    ".quad pkvm_root_vec_\\v",
    ".endr",
    ".popsection",
    frame = const FRAME_SIZE,
    handler = sym crate::hyp::exit_handler::handle_exit,
    entry_failed = sym crate::hyp::exit_handler::handle_entry_failure,
    launch = const OFF_LAUNCH_NEXT,
    fatal_vector = const OFF_FATAL_VECTOR,
    fatal_count = const OFF_FATAL_COUNT,
    fatal_rip = const OFF_FATAL_RIP,
    nmi = const OFF_NMI_PENDING,
    nmi_count = const OFF_NMIS_IN_ROOT,
    mc = const OFF_MC_PENDING,
    expect = const OFF_EXPECT_FAULT,
    faulted = const OFF_FAULTED,
    global = const OFF_GLOBAL,
    gen = const core::mem::offset_of!(HypGlobal, flush_gen),
    eptp = const core::mem::offset_of!(HypGlobal, host_eptp),
    invtype = const core::mem::offset_of!(HypGlobal, catch_up_invept),
    flushed = const OFF_FLUSHED_GEN,
    shootdown = const OFF_SHOOTDOWN_NMI,
);

// #PF in a production build: fatal, like every unexpected exception.
#[cfg(not(pkvm_debug))]
core::arch::global_asm!(
    ".pushsection .text",
    "pkvm_root_vec_14:",
    "endbr64",
    "mov dword ptr gs:[{fatal_vector}], 14",
    "jmp pkvm_root_fatal_err",
    ".popsection",
    fatal_vector = const OFF_FATAL_VECTOR,
);

// #PF in a debug build: while DEBUG_STACK_OVERFLOW's probe is armed
// (`probe_resume_rsp` non-zero), record CR2 and the RSP the stub runs on
// (IST1), disarm, and return to the probe's resume point with its saved
// RSP (the IRET frame's RIP and RSP rewritten; CS, RFLAGS, SS as they
// were); otherwise fatal.  The probe: save RBP, RBX and the host's CR2
// (in RBX), arm, push until the stack overflows into its guard page,
// then, resumed, restore CR2 and return the fault address.
#[cfg(pkvm_debug)]
core::arch::global_asm!(
    ".pushsection .text",
    "pkvm_root_vec_14:",
    "endbr64",
    "cmp qword ptr gs:[{resume_rsp}], 0",
    "je 1f",
    "mov gs:[{stub_rsp}], rsp",
    "push rax",
    "mov rax, cr2",
    "mov gs:[{cr2}], rax",
    // After the push: [rsp] RAX, +8 error code, +16 RIP, +24 CS,
    // +32 RFLAGS, +40 RSP, +48 SS.
    "mov rax, gs:[{resume_rip}]",
    "mov [rsp + 16], rax",
    "mov rax, gs:[{resume_rsp}]",
    "mov [rsp + 40], rax",
    "mov qword ptr gs:[{resume_rsp}], 0",
    "pop rax",
    "add rsp, 8",
    "iretq",
    "1:",
    "mov dword ptr gs:[{fatal_vector}], 14",
    "jmp pkvm_root_fatal_err",

    ".global pkvm_stack_overflow_probe",
    "pkvm_stack_overflow_probe:",
    "endbr64",
    "push rbp",
    "push rbx",
    "mov rbx, cr2",
    "lea rax, [rip + 3f]",
    "mov gs:[{resume_rip}], rax",
    "mov gs:[{resume_rsp}], rsp",
    "2:",
    "push rax",
    "jmp 2b",
    // Address taken above: an ENDBR, as objtool wants (IRETQ lands here).
    "3:",
    "endbr64",
    "mov cr2, rbx",
    "pop rbx",
    "pop rbp",
    "mov rax, gs:[{cr2}]",
    "ret",
    ".popsection",
    fatal_vector = const OFF_FATAL_VECTOR,
    resume_rsp = const OFF_PROBE_RESUME_RSP,
    resume_rip = const OFF_PROBE_RESUME_RIP,
    cr2 = const OFF_PROBE_CR2,
    stub_rsp = const OFF_PROBE_STUB_RSP,
);
