// SPDX-License-Identifier: GPL-2.0

//! The VM-exit handler of the deprivileged host.
//!
//! Called from [`crate::hyp::entry`] with the guest registers and the per-CPU
//! state.  Every exit ends in one of: the instruction is emulated and
//! skipped; a fault is injected into the host (#UD for VMX instructions and
//! VMCALL from user mode, #GP for refused MSR or CR writes, #PF for host
//! accesses to hypervisor memory); the CPU leaves VMX operation (TEARDOWN_CPU
//! hypercall).  Nothing here panics: an exit it does not expect is counted
//! in `HypCpu::unexpected` and answered with #UD, which the host's own
//! fault handling reports.

use super::percpu::HypCpu;
use crate::arch::{cpu, cpuid::cpuid, vmx};
use crate::hv::hypercall::{self, errno, nr};
use crate::hv::vmx::event::{Interruptibility, InterruptionInfo};
use crate::hv::vmx::exit::{
    self, cpuid_filter, reason, vector, CrAccess, EptViolation, EventType, ExitReason,
};
use crate::hv::vmx::guest_state::HostCpuState;
use crate::hv::vmx::msr_bitmap::HOST_POLICY;
use crate::hv::vmx::vmcs::*;
use crate::hyp::entry::{self as entry, gpr_slot, reg, GuestRegs};

/// The host's VMCS, current on this CPU while the exit handler runs.
fn vmcs() -> vmx::CurrentVmcs {
    // SAFETY: the exit handler runs in VMX root operation with the host's
    // VMCS current (the CPU just exited from it); callers only write
    // guest-state and entry-control fields with values derived from the
    // architectural rules in `hv`.
    unsafe { vmx::CurrentVmcs::new() }
}

/// Reads a field of the current VMCS; 0 if it cannot be read (which would
/// be a hypervisor bug: every field pkvm uses is checked readable by the
/// system tests).
fn rd<T: FieldValue>(f: Field<T>) -> T {
    vmcs().read(f).unwrap_or_default()
}

/// Writes a field of the current VMCS (see [`rd`] for failures).
fn wr<T: FieldValue>(f: Field<T>, v: T) {
    let _ = vmcs().write(f, v);
}

fn skip_instruction() {
    let len = u64::from(rd(VM_EXIT_INSTRUCTION_LEN));
    wr(GUEST_RIP, rd(GUEST_RIP).wrapping_add(len));
    // The instruction retired: STI / MOV-SS blocking ends with it.
    let intr = Interruptibility(rd(GUEST_INTERRUPTIBILITY_INFO));
    if intr.sti() || intr.mov_ss() {
        wr(GUEST_INTERRUPTIBILITY_INFO, intr.after_instruction().0);
    }
}

fn inject(vec: u8, ty: EventType, error_code: Option<u32>) {
    let info = InterruptionInfo::event(vec, ty, error_code.is_some());
    wr(VM_ENTRY_INTR_INFO, info.0);
    if let Some(e) = error_code {
        wr(VM_ENTRY_EXCEPTION_ERROR_CODE, e);
    }
}

fn inject_ud() {
    inject(vector::UD, EventType::HardwareException, None);
}

fn inject_gp0() {
    inject(vector::GP, EventType::HardwareException, Some(0));
}

fn guest_cpl() -> u64 {
    u64::from((rd(GUEST_SS_AR_BYTES) >> 5) & 3)
}

fn get_gpr(regs: &GuestRegs, n: u8) -> u64 {
    match gpr_slot(n) {
        Some(i) => regs.gpr.get(i).copied().unwrap_or(0),
        None => rd(GUEST_RSP),
    }
}

/// MSRs the host may not write: those the interception policy names
/// (IA32_FEATURE_CONTROL and the VMX capability MSRs).
fn msr_write_refused(msr: u32) -> bool {
    HOST_POLICY
        .iter()
        .any(|r| r.access.write() && (r.first..=r.last).contains(&msr))
}

/// Entry point from assembly.  Returns 0 to resume the guest, 1 when the
/// CPU has left VMX operation and `regs.iret` holds the host's frame.
///
/// # Safety
///
/// Only [`entry::pkvm_vmexit_entry`] calls this, in VMX root operation,
/// with `regs` pointing at the saved frame and `cpu` at this CPU's
/// `HypCpu`, both valid and exclusively owned by this CPU for the call.
pub(crate) unsafe extern "C" fn handle_exit(regs: *mut GuestRegs, cpu: *mut HypCpu) -> u64 {
    // SAFETY: guaranteed by the caller (see above).
    let (regs, cpu) = unsafe { (&mut *regs, &mut *cpu) };
    let why = ExitReason::from_raw(rd(VM_EXIT_REASON));
    cpu.stats.record(why.basic);

    match why.basic {
        reason::CPUID => {
            let leaf = regs.gpr[reg::RAX] as u32;
            let r = cpuid(leaf, regs.gpr[reg::RCX] as u32);
            let out = cpuid_filter(leaf, [r.eax, r.ebx, r.ecx, r.edx]);
            regs.gpr[reg::RAX] = u64::from(out[0]);
            regs.gpr[reg::RBX] = u64::from(out[1]);
            regs.gpr[reg::RCX] = u64::from(out[2]);
            regs.gpr[reg::RDX] = u64::from(out[3]);
            skip_instruction();
        }
        reason::VMCALL => {
            if guest_cpl() != 0 {
                inject_ud();
            } else {
                return hypercall_dispatch(regs, cpu);
            }
        }
        reason::CR_ACCESS => match CrAccess::decode(rd(EXIT_QUALIFICATION)) {
            CrAccess::MovTo { cr: 4, gpr } => {
                let val = get_gpr(regs, gpr);
                match exit::cr4_write(val, cpu.cr4_fixed0, cpu.cr4_fixed1) {
                    Some((real, shadow)) => {
                        wr(GUEST_CR4, real);
                        wr(CR4_READ_SHADOW, shadow);
                        skip_instruction();
                    }
                    None => inject_gp0(),
                }
            }
            _ => unexpected(cpu, why.basic),
        },
        reason::RDMSR => {
            let msr = regs.gpr[reg::RCX] as u32;
            let mut v = 0u64;
            // SAFETY: the accessor recovers from #GP through the root-mode
            // IDT's fixup and writes only `v`.
            if unsafe { entry::pkvm_rdmsr_safe(msr, &mut v) } == 0 {
                regs.gpr[reg::RAX] = v & 0xffff_ffff;
                regs.gpr[reg::RDX] = v >> 32;
                skip_instruction();
            } else {
                inject_gp0();
            }
        }
        reason::WRMSR => {
            let msr = regs.gpr[reg::RCX] as u32;
            let v = (regs.gpr[reg::RDX] << 32) | (regs.gpr[reg::RAX] & 0xffff_ffff);
            // SAFETY: as for RDMSR.  Only MSRs outside the bitmap's range
            // and the refused ones exit; the host could write the former
            // natively, so writing them on its behalf grants nothing new.
            if msr_write_refused(msr) || unsafe { entry::pkvm_wrmsr_safe(msr, v) } != 0 {
                inject_gp0();
            } else {
                skip_instruction();
            }
        }
        reason::XSETBV => {
            let v = (regs.gpr[reg::RDX] << 32) | (regs.gpr[reg::RAX] & 0xffff_ffff);
            // SAFETY: XSETBV with the host's operands; a #GP is recovered.
            if unsafe { entry::pkvm_xsetbv_safe(regs.gpr[reg::RCX] as u32, v) } == 0 {
                skip_instruction();
            } else {
                inject_gp0();
            }
        }
        reason::INVD => {
            // Never drop dirty lines: write back instead.
            cpu::wbinvd();
            skip_instruction();
        }
        19..=27 | reason::INVEPT | reason::INVVPID | reason::VMFUNC | reason::GETSEC => {
            // VMX (and SMX) instructions: the host sees a CPU without VMX
            // until nested VMX exists.
            inject_ud();
        }
        reason::EPT_VIOLATION => host_touched_protected_memory(),
        reason::NMI_WINDOW => {}
        reason::TRIPLE_FAULT
        | reason::ENTRY_FAIL_GUEST_STATE
        | reason::ENTRY_FAIL_MSR_LOADING
        | reason::ENTRY_FAIL_MCE => host_is_dead(cpu, why.basic),
        _ => unexpected(cpu, why.basic),
    }
    deliver_pending(cpu);
    0
}

/// The host cannot continue on this CPU: it triple-faulted (natively the
/// CPU would reset) or its state cannot be entered.  Record why, where
/// the other CPUs' tools can see it (the exit counters and
/// `last_unexpected`), and park this CPU in root mode.  The other CPUs
/// keep running; nothing is injected into a host that cannot take it.
fn host_is_dead(cpu: &mut HypCpu, basic: u16) -> ! {
    cpu.unexpected = cpu.unexpected.wrapping_add(1);
    cpu.last_unexpected = u64::from(basic);
    cpu.fatal_rip = rd(GUEST_RIP);
    cpu::park()
}

fn unexpected(cpu: &mut HypCpu, basic: u16) {
    cpu.unexpected = cpu.unexpected.wrapping_add(1);
    cpu.last_unexpected = u64::from(basic);
    inject_ud();
}

/// The host accessed a page it does not own (hypervisor memory, or a page
/// donated to a guest): inject a page fault at the linear address it used.
/// See Documentation/deprivilege.rst for what the host observes.
fn host_touched_protected_memory() {
    let v = EptViolation::decode(rd(EXIT_QUALIFICATION));
    let cpl3 = guest_cpl() == 3;
    let addr = if v.linear_valid {
        rd(GUEST_LINEAR_ADDRESS)
    } else {
        rd(GUEST_PHYSICAL_ADDRESS)
    };
    // SAFETY: CR2 is not part of the VMCS; the host reads the fault address
    // from the real CR2, which nothing in root mode depends on.
    unsafe { cpu::write_cr2(addr) };
    inject(
        vector::PF,
        EventType::HardwareException,
        Some(v.host_pf_error_code(cpl3)),
    );
}

/// Delivers an NMI or machine check that arrived while in root mode, if
/// no other event is being injected and the host is not blocking NMIs.
fn deliver_pending(cpu: &mut HypCpu) {
    if InterruptionInfo(rd(VM_ENTRY_INTR_INFO)).is_valid() {
        return;
    }
    // Re-deliver an event whose delivery the exit interrupted.
    let idt = InterruptionInfo(rd(IDT_VECTORING_INFO));
    if idt.is_valid() {
        wr(VM_ENTRY_INTR_INFO, idt.for_entry().0);
        if idt.has_error_code() {
            wr(VM_ENTRY_EXCEPTION_ERROR_CODE, rd(IDT_VECTORING_ERROR_CODE));
        }
        wr(VM_ENTRY_INSTRUCTION_LEN, rd(VM_EXIT_INSTRUCTION_LEN));
        return;
    }
    if cpu.mc_pending != 0 {
        cpu.mc_pending = 0;
        inject(vector::MC, EventType::HardwareException, None);
    } else if cpu.nmi_pending != 0 && !Interruptibility(rd(GUEST_INTERRUPTIBILITY_INFO)).nmi() {
        cpu.nmi_pending = 0;
        inject(vector::NMI, EventType::Nmi, None);
    }
}

fn hypercall_dispatch(regs: &mut GuestRegs, cpu: &mut HypCpu) -> u64 {
    let call = regs.gpr[reg::RAX];
    let a0 = regs.gpr[reg::RBX];
    skip_instruction();
    let ret = match call {
        nr::VERSION => hypercall::ABI_VERSION,
        nr::EXIT_COUNT => {
            if a0 == u64::MAX {
                cpu.stats.total()
            } else {
                cpu.stats.get(a0)
            }
        }
        nr::NMIS_IN_ROOT => cpu.nmis_in_root,
        nr::EXIT_COUNT_RESET => {
            cpu.stats = exit::ExitStats::new();
            0
        }
        nr::FLUSH_HOST_EPT => {
            // SAFETY: root mode; `global` was set up before launch.
            let eptp = unsafe { (*cpu.global).host_eptp };
            // SAFETY: root mode; INVEPT single-context is a required feature.
            let _ = unsafe { vmx::invept(vmx::InveptType::SingleContext, eptp) };
            0
        }
        nr::TEARDOWN_CPU => {
            regs.gpr[reg::RAX] = 0;
            // SAFETY: this is the TEARDOWN_CPU contract: the host asked to
            // leave VMX operation on this CPU, in its own context.
            return unsafe { teardown(regs, cpu) };
        }
        _ => {
            let args = [
                regs.gpr[reg::RBX],
                regs.gpr[reg::RCX],
                regs.gpr[reg::RDX],
                regs.gpr[reg::RSI],
            ];
            // SAFETY: `global` points at the hypervisor-wide state in the
            // pool; its own lock serialises the CPUs that use it.
            match unsafe { (*cpu.global).hypercall(call, args) } {
                Some(r) => {
                    if let Some(v) = r.rbx {
                        regs.gpr[reg::RBX] = v;
                    }
                    if let Some(v) = r.rcx {
                        regs.gpr[reg::RCX] = v;
                    }
                    r.rax
                }
                None => hypercall::err(errno::ENOSYS),
            }
        }
    };
    regs.gpr[reg::RAX] = ret;
    deliver_pending(cpu);
    0
}

/// Leaves VMX operation and prepares `regs.iret` so that the entry's IRETQ
/// lands in the host right after its VMCALL, in root mode, with the
/// host's control registers, descriptor tables, segments and MSRs.  The
/// task register still refers to the hypervisor's TSS: the host reloads
/// its own right after the hypercall returns (see `crate::host::launch`).
///
/// # Safety
///
/// Called from the exit handler for TEARDOWN_CPU only.
unsafe fn teardown(regs: &mut GuestRegs, cpu: &mut HypCpu) -> u64 {
    let h = match HostCpuState::read(&vmcs()) {
        Ok(h) => h,
        Err(_) => {
            // Cannot happen with the host's VMCS current; refuse rather
            // than load zeros into the CPU.
            regs.gpr[reg::RAX] = hypercall::err(errno::EFAULT);
            return 0;
        }
    };
    // SAFETY: root mode, with the host's VMCS current.
    let vmcs_pa = unsafe { vmx::vmptrst() };

    // SAFETY: leaving VMX operation on the host's request; the VMCS is
    // cleared first so its state is written back to memory.
    unsafe {
        let _ = vmx::vmclear(vmcs_pa);
        let _ = vmx::vmxoff();
    }
    cpu.torn_down = 1;

    let gdt = cpu::DescriptorTablePointer {
        limit: h.gdtr.1,
        base: h.gdtr.0,
    };
    let idt = cpu::DescriptorTablePointer {
        limit: h.idtr.1,
        base: h.idtr.0,
    };
    // SAFETY: everything below restores the host's own values, captured by
    // the VMCS at this exit, onto the CPU that is now in plain root mode.
    unsafe {
        cpu::write_cr0(h.cr0);
        // CR4: VMXE as the host believes it to be, everything else as it
        // was (computed by `HostCpuState::read`).
        cpu::write_cr4(h.cr4);
        cpu::write_cr3(h.cr3);
        cpu::lgdt(&gdt);
        cpu::lidt(&idt);
        // Loading GS clobbers the GS base root mode used; nothing below
        // needs it.
        cpu::load_data_segments(h.sel.ds, h.sel.es, h.sel.fs, h.sel.gs);
        cpu::wrmsr(cpu::msr::FS_BASE, h.fs_base);
        cpu::wrmsr(cpu::msr::GS_BASE, h.gs_base);
        cpu::wrmsr(cpu::msr::PAT, h.pat);
        cpu::wrmsr(cpu::msr::EFER, h.efer);
        cpu::wrmsr(cpu::msr::DEBUGCTL, h.debugctl);
        cpu::wrmsr(cpu::msr::SYSENTER_CS, u64::from(h.sysenter_cs));
        cpu::wrmsr(cpu::msr::SYSENTER_ESP, h.sysenter_esp);
        cpu::wrmsr(cpu::msr::SYSENTER_EIP, h.sysenter_eip);
        cpu::write_dr7(h.dr7);
    }
    regs.iret = [
        h.rip,
        u64::from(h.sel.cs),
        h.rflags,
        h.rsp,
        u64::from(h.sel.ss),
    ];
    1
}
