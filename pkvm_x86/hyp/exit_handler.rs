// SPDX-License-Identifier: GPL-2.0

//! The VM-exit handler of the deprivileged host.
//!
//! Called from [`crate::hyp::entry`] with the guest registers and the per-CPU
//! state.  Every exit ends in one of: the instruction is emulated and
//! skipped; a fault is injected into the host (#UD for VMX instructions and
//! VMCALL from user mode, #GP for refused MSR or CR writes, #PF for host
//! accesses to hypervisor memory); the CPU leaves VMX operation (TEARDOWN_CPU
//! hypercall).  Nothing here panics: an exit it does not expect is counted
//! in `CpuLocal::unexpected` and answered with #UD, which the host's own
//! fault handling reports.

use core::sync::atomic::Ordering::{Relaxed, SeqCst};

use super::global::KeepRanges;
use super::percpu::{CpuLocal, HypCpu};
use crate::arch::{cpu, cpuid::cpuid, vmx};
use crate::hv::host_policy::{
    self as policy, cpuid_filter, msr, Action, Cr4Cpuid, Cr4Env, MsrContext, MsrRead, MsrWrite,
};
use crate::hv::hypercall::call::{Call, DebugCalls, Reply};
use crate::hv::hypercall::{self, errno};
use crate::hv::mm::addr::Hpa;
use crate::hv::vmx::event::{self as event, Interruptibility, InterruptionInfo, Merged};
use crate::hv::vmx::exit::{self, vector, CrAccess, EptViolation, EventType, ExitReason};
use crate::hv::vmx::guest_state::HostCpuState;
use crate::hv::vmx::nested::{offer, operand::Fault};
use crate::hv::vmx::root_tables;
use crate::hv::vmx::vmcs::*;
use crate::hyp::entry::{self as entry, gpr_slot, reg, GuestRegs};
use crate::hyp::nested::L2Exit;

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

/// Injects hardware exception `vec` into the host, merged with the event
/// whose delivery this exit interrupted, if any (IDT-vectoring
/// information), by [`event::merge`]: a #PF during #PF delivery becomes a
/// #DF, an interrupted NMI or external interrupt is kept and delivered
/// after the exception, a fault during #DF delivery is a triple fault
/// (the host's CPU is dead, as natively).
fn inject_exception(cpu: &HypCpu, local: &mut CpuLocal, vec: u8, error_code: Option<u32>) {
    let prior = InterruptionInfo(rd(IDT_VECTORING_INFO));
    match event::merge(prior, vec, error_code) {
        Merged::Inject(v, e) => inject(v, EventType::HardwareException, e),
        Merged::InjectThenNmi(v, e) => {
            inject(v, EventType::HardwareException, e);
            // Delivered by `deliver_pending` at a later entry.
            cpu.nmi_pending.store(1, Relaxed);
        }
        Merged::InjectThenInterrupt(v, e, irq) => {
            inject(v, EventType::HardwareException, e);
            local.pending_irq = Some(irq);
        }
        Merged::TripleFault => host_is_dead(cpu, local, exit::reason::TRIPLE_FAULT),
    }
}

fn inject_ud(cpu: &HypCpu, local: &mut CpuLocal) {
    inject_exception(cpu, local, vector::UD, None);
}

fn inject_gp0(cpu: &HypCpu, local: &mut CpuLocal) {
    inject_exception(cpu, local, vector::GP, Some(0));
}

/// Reads MSR `m` on this CPU, `None` if the CPU refuses it.
fn rdmsr_safe(m: u32) -> Option<u64> {
    let mut v = 0u64;
    // SAFETY: the accessor recovers from #GP through the root-mode IDT's
    // fixup and writes only `v`.
    (unsafe { entry::pkvm_rdmsr_safe(m, &mut v) } == 0).then_some(v)
}

/// Writes MSR `m` on this CPU; `false` if the CPU refused it.
fn wrmsr_safe(m: u32, v: u64) -> bool {
    // SAFETY: as for `rdmsr_safe`; only values `host_policy::msr_write`
    // allowed reach this.
    unsafe { entry::pkvm_wrmsr_safe(m, v) == 0 }
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

/// Entry point from assembly.  Returns 0 to resume the guest, 1 when the
/// CPU has left VMX operation and `regs.iret` holds the host's frame.
///
/// # Safety
///
/// Only [`entry::pkvm_vmexit_entry`] calls this, in VMX root operation,
/// with `regs` pointing at the saved frame (exclusively this call's) and
/// `cpu` at this CPU's `HypCpu`, both valid for the call.
pub(crate) unsafe extern "C" fn handle_exit(regs: *mut GuestRegs, cpu: *const HypCpu) -> u64 {
    // SAFETY: guaranteed by the caller (see above).  `cpu` is shared: the
    // root-mode NMI / #MC / #GP stubs may write its atomic fields at any
    // time; what only this handler touches is `local`, exclusive for the
    // exit because exits on a CPU do not nest (see `crate::hyp::percpu`).
    let (regs, cpu) = unsafe { (&mut *regs, &*cpu) };
    let t0 = super::nested::phase_clock();
    // Debug builds: which phase this exit's root-mode time counts in.
    let kind = if cfg!(pkvm_debug) {
        if super::nested::in_l2(cpu) {
            Some(super::nested::phase::ROOT_L2)
        } else {
            use super::nested::phase;
            match rd(VM_EXIT_REASON) as u16 {
                20 | 24 => Some(phase::ROOT_ENTRY),
                53 => Some(phase::ROOT_INVVPID),
                55 => Some(phase::ROOT_XSETBV),
                19 | 21..=23 | 25..=27 | 50 => Some(phase::ROOT_VMX_OTHER),
                _ => None,
            }
        }
    } else {
        None
    };
    let r = exit(regs, cpu);
    if r == 0 {
        // The generation check before every VM entry: covers the CPUs a
        // shootdown NMI could not reach (wait-for-SIPI, `parked`) and
        // NMI exits.
        // SAFETY: `global` points at the hypervisor-wide state in the
        // pool, alive while any CPU runs under it.
        unsafe { &*cpu.global }.flush_if_behind(cpu, invept_host);
        // The host's guest on a shadow EPT: its current root.
        super::nested::refresh_ept02(cpu);
    }
    // Not after a teardown (r = 1): the nested state may be gone.
    if cfg!(pkvm_debug) && r == 0 {
        super::nested::account_exit(cpu, kind, t0);
    }
    r
}

/// The INVEPT of a CPU catching up with a shootdown: single-context of
/// the host EPT, or all-context when the view offers EPT (the shadow EPTs
/// too; `HypGlobal::catch_up_invept`).
fn invept_host() {
    // SAFETY: root mode (only the exit handler calls this); `global` is
    // the hypervisor-wide state, alive while any CPU runs under it; INVEPT
    // single-context and all-context are required features.
    let _ = unsafe {
        let g = &*current_global();
        let ty = if g.catch_up_invept == 2 {
            vmx::InveptType::AllContext
        } else {
            vmx::InveptType::SingleContext
        };
        vmx::invept(ty, g.host_eptp)
    };
}

/// The hypervisor-wide state, through this CPU's `HypCpu` at GS:0.
fn current_global() -> *const super::global::HypGlobal {
    let me: u64;
    // SAFETY: in root mode GS base is this CPU's `HypCpu`, whose first
    // field is its own address; reading it has no side effect.
    unsafe { core::arch::asm!("mov {}, gs:[0]", out(reg) me, options(nostack, readonly)) };
    // SAFETY: `me` is this CPU's `HypCpu` (above), alive while it runs
    // root mode.
    unsafe { (*(me as *const HypCpu)).global }
}

/// The body of [`handle_exit`].
fn exit(regs: &mut GuestRegs, cpu: &HypCpu) -> u64 {
    // SAFETY: this is the exit handler of this CPU, called once per exit.
    let local = unsafe { cpu.local() };
    let why = ExitReason::from_raw(rd(VM_EXIT_REASON));
    local.stats.record(why.basic);
    if !local.counted {
        // First exit of this CPU: from now on the teardown rendezvous
        // waits for it too, and shootdowns reach it (at its APIC ID).
        local.counted = true;
        cpu.apic_id.store(apic_id(), Relaxed);
        // SAFETY: `global` points at the hypervisor-wide state in the
        // pool, alive while any CPU runs under it.
        let global = unsafe { &*cpu.global };
        global.register_cpu(cpu);
        global.note_cpu();
    }

    // An exit of the host's guest (vmcs02 current): nested VMX decides.
    if super::nested::in_l2(cpu) {
        return match super::nested::l2_exit(regs, cpu, local) {
            L2Exit::ResumeGuest => 0,
            L2Exit::MsrPolicy(write) => {
                l2_msr(regs, local, write);
                0
            }
            L2Exit::ResumeHost => {
                deliver_pending(cpu, local);
                0
            }
        };
    }

    // What to do is the host policy's decision; how, this handler's.
    match policy::on_exit(why.basic) {
        Action::Init if local.vmx.is_on() => {
            // In VMX operation INIT is blocked: remembered, delivered by
            // VMXOFF (see `vmx_instruction`).
            local.init_latched = true;
        }
        Action::Init => {
            // Wait-for-SIPI blocks NMIs: shootdowns stop waiting for this
            // CPU, which flushes before its entries instead (set before
            // the generation check `handle_exit` runs next).
            cpu.parked.store(1, SeqCst);
            park_for_sipi();
            // No event may be pending into the wait-for-SIPI state.
            return 0;
        }
        Action::Sipi => {
            // Cleared before the generation check that precedes the entry.
            cpu.parked.store(0, SeqCst);
            start_at_sipi(cpu, rd(EXIT_QUALIFICATION) as u8);
            return 0;
        }
        Action::Cpuid => {
            let leaf = regs.gpr[reg::RAX] as u32;
            let r = cpuid(leaf, regs.gpr[reg::RCX] as u32);
            let out = cpuid_filter(leaf, [r.eax, r.ebx, r.ecx, r.edx]);
            regs.gpr[reg::RAX] = u64::from(out[0]);
            regs.gpr[reg::RBX] = u64::from(out[1]);
            regs.gpr[reg::RCX] = u64::from(out[2]);
            regs.gpr[reg::RDX] = u64::from(out[3]);
            skip_instruction();
        }
        Action::Hypercall => {
            if guest_cpl() != 0 {
                inject_ud(cpu, local);
            } else {
                return hypercall_dispatch(regs, cpu, local);
            }
        }
        Action::ControlRegister => match CrAccess::decode(rd(EXIT_QUALIFICATION)) {
            CrAccess::MovTo { cr: 4, gpr } => mov_to_cr4(cpu, local, get_gpr(regs, gpr)),
            _ => unexpected(cpu, local, why.basic),
        },
        Action::Rdmsr => {
            let m = regs.gpr[reg::RCX] as u32;
            let v = match policy::msr_read(m) {
                MsrRead::Perform => rdmsr_safe(m),
                MsrRead::Shadow(slot) => local.mtrr.get(slot).or_else(|| {
                    // First access: the shadow starts as the CPU's value.
                    let v = rdmsr_safe(m)?;
                    local.mtrr.set(slot, v);
                    Some(v)
                }),
                // SAFETY: `global` points at the hypervisor-wide state in
                // the pool, alive while any CPU runs under it.
                MsrRead::VmxView => match offer::read_msr(&unsafe { &*cpu.global }.vmx_view, m) {
                    Some(v) => v,
                    None => rdmsr_safe(m),
                },
            };
            match v {
                Some(v) => {
                    regs.gpr[reg::RAX] = v & 0xffff_ffff;
                    regs.gpr[reg::RDX] = v >> 32;
                    skip_instruction();
                }
                None => inject_gp0(cpu, local),
            }
        }
        Action::Wrmsr => {
            let m = regs.gpr[reg::RCX] as u32;
            let v = (regs.gpr[reg::RDX] << 32) | (regs.gpr[reg::RAX] & 0xffff_ffff);
            if wrmsr(local, m, v) {
                skip_instruction();
            } else {
                inject_gp0(cpu, local);
            }
        }
        Action::Xsetbv => {
            let v = (regs.gpr[reg::RDX] << 32) | (regs.gpr[reg::RAX] & 0xffff_ffff);
            // SAFETY: XSETBV with the host's operands; a #GP is recovered.
            if unsafe { entry::pkvm_xsetbv_safe(regs.gpr[reg::RCX] as u32, v) } == 0 {
                skip_instruction();
            } else {
                inject_gp0(cpu, local);
            }
        }
        Action::InvdAsWbinvd => {
            cpu::wbinvd();
            skip_instruction();
        }
        Action::VmxInstruction => match vmx_instruction(regs, cpu, local, why.basic) {
            // Parked by a latched INIT: nothing may be pending.
            VmxDone::Parked => return 0,
            // vmcs02 is current: the host's events wait for its next
            // entry (the exit reflected back to it).
            VmxDone::EnterGuest => return 0,
            VmxDone::Host => {}
        },
        Action::Undefined => inject_ud(cpu, local),
        Action::ProtectedMemory => host_touched_protected_memory(cpu, local),
        Action::Nmi => host_nmi(cpu, local),
        Action::Nothing => {
            // An interrupt window with nothing left to deliver: stop
            // asking (an injected interrupt already turned it off).
            if why.basic == policy::INTERRUPT_WINDOW && local.pending_irq.is_none() {
                interrupt_window(false);
            }
            // The NMI window: `deliver_pending` injects and turns it off.
        }
        Action::HostDead => host_is_dead(cpu, local, why.basic),
        Action::Unexpected => unexpected(cpu, local, why.basic),
    }
    deliver_pending(cpu, local);
    real_mode_event();
    0
}

/// How a VMX instruction of the host ended.
enum VmxDone {
    /// Applied to the host; it continues.
    Host,
    /// VMXOFF delivered a latched INIT: the CPU waits for SIPI.
    Parked,
    /// VMLAUNCH/VMRESUME: vmcs02 is current, enter the host's guest.
    EnterGuest,
}

/// A VMX instruction of the host, emulated by nested VMX
/// (`crate::hyp::nested`): on success or VMfail the instruction is skipped
/// (RFLAGS already written), a fault is injected with RIP unchanged.
/// VMXOFF delivers an INIT latched in VMX operation (then the CPU waits
/// for SIPI); INVVPID flushes; VMLAUNCH/VMRESUME enter the guest or fail
/// as already applied.
fn vmx_instruction(
    regs: &mut GuestRegs,
    cpu: &HypCpu,
    local: &mut CpuLocal,
    basic: u16,
) -> VmxDone {
    match super::nested::vmx_instruction(regs, cpu, local, basic) {
        super::nested::Applied::Completed { left_vmx, flush } => {
            if flush {
                invept_host();
            }
            skip_instruction();
            if left_vmx && local.init_latched {
                local.init_latched = false;
                cpu.parked.store(1, SeqCst);
                park_for_sipi();
                return VmxDone::Parked;
            }
        }
        super::nested::Applied::EnterGuest => return VmxDone::EnterGuest,
        super::nested::Applied::EntryFailed => {}
        super::nested::Applied::Fault(f) => match f {
            Fault::Ud => inject_ud(cpu, local),
            Fault::Gp(e) => inject_exception(cpu, local, vector::GP, Some(e)),
            Fault::Ss(e) => inject_exception(cpu, local, vector::SS, Some(e)),
            Fault::Pf { addr, code } => {
                // SAFETY: CR2 is not part of the VMCS; the host reads the
                // fault address from the real CR2, which nothing in root
                // mode depends on.
                unsafe { cpu::write_cr2(addr) };
                inject_exception(cpu, local, vector::PF, Some(code));
            }
        },
    }
    VmxDone::Host
}

/// An RDMSR (`write` false) or WRMSR of the host's guest that the
/// hypervisor's policy intercepts and the host does not (vmcs02 current):
/// performed as the policy decides for the host itself, except that the
/// VMX capability MSRs are not the guest's (#GP, VMX is not offered to
/// it); #GP into the guest if refused.
fn l2_msr(regs: &mut GuestRegs, local: &mut CpuLocal, write: bool) {
    let m = regs.gpr[reg::RCX] as u32;
    let ok = if write {
        let v = (regs.gpr[reg::RDX] << 32) | (regs.gpr[reg::RAX] & 0xffff_ffff);
        wrmsr(local, m, v)
    } else {
        let v = match policy::msr_read(m) {
            MsrRead::Perform => rdmsr_safe(m),
            MsrRead::Shadow(slot) => local.mtrr.get(slot).or_else(|| {
                let v = rdmsr_safe(m)?;
                local.mtrr.set(slot, v);
                Some(v)
            }),
            MsrRead::VmxView => None,
        };
        match v {
            Some(v) => {
                regs.gpr[reg::RAX] = v & 0xffff_ffff;
                regs.gpr[reg::RDX] = v >> 32;
                true
            }
            None => false,
        }
    };
    if ok {
        skip_instruction();
    } else {
        super::nested::inject_gp_l2();
    }
}

/// Entry point from assembly after a failed VM entry (VMfail of VMLAUNCH
/// or VMRESUME).  A failed entry of vmcs02 becomes the host's
/// VMLAUNCH/VMRESUME failing (`crate::hyp::nested::l2_entry_failed`) and
/// the host resumes (0); a failed entry of the host's own VMCS leaves
/// nothing to return to: recorded, the CPU halts.
///
/// # Safety
///
/// As [`handle_exit`].
pub(crate) unsafe extern "C" fn handle_entry_failure(
    regs: *mut GuestRegs,
    cpu: *const HypCpu,
) -> u64 {
    // SAFETY: guaranteed by the caller (see `handle_exit`).
    let (_regs, cpu) = unsafe { (&mut *regs, &*cpu) };
    if super::nested::l2_entry_failed(cpu) {
        // SAFETY: the exit handler of this CPU.
        let local = unsafe { cpu.local() };
        deliver_pending(cpu, local);
        // SAFETY: `global` points at the hypervisor-wide state.
        unsafe { &*cpu.global }.flush_if_behind(cpu, invept_host);
        return 0;
    }
    cpu.fatal_vector.store(0x100, SeqCst);
    cpu.fatal_count.fetch_add(1, SeqCst);
    cpu::park()
}

/// In real mode (a CPU started by SIPI runs its trampoline there)
/// exceptions push no error code, and VM entry refuses an injected event
/// with one while CR0.PE = 0 (unrestricted guest): the entry would fail
/// and leave the CPU halted in root mode.  Drop the error code there, as
/// the CPU itself would.  (A #PF for protected memory touched by a
/// trampoline then reaches the trampoline's own IVT.)
fn real_mode_event() {
    /// Deliver-error-code bit of the VM-entry interruption information.
    const DELIVER_ERROR_CODE: u32 = 1 << 11;
    if rd(GUEST_CR0) & 1 != 0 {
        return;
    }
    let info = rd(VM_ENTRY_INTR_INFO);
    if InterruptionInfo(info).is_valid() && info & DELIVER_ERROR_CODE != 0 {
        wr(VM_ENTRY_INTR_INFO, info & !DELIVER_ERROR_CODE);
    }
}

/// A host MOV to CR4 that exited (it changes VMXE against the read
/// shadow): checked by `host_policy::cr4_write` against every
/// architectural rule, with this CPU's CPUID and the host's CR0, CR3 and
/// EFER.LMA; #GP if the CPU would refuse it, else GUEST_CR4 and the
/// shadow are updated and, if the change invalidates translations, the
/// host's are flushed as the real MOV would have.
fn mov_to_cr4(cpu: &HypCpu, local: &mut CpuLocal, val: u64) {
    let l1 = cpuid(1, 0);
    let l7 = cpuid(7, 0);
    let l7_1 = if l7.eax >= 1 { cpuid(7, 1).eax } else { 0 };
    let supported = policy::cr4_supported(Cr4Cpuid {
        l1_ecx: l1.ecx,
        l1_edx: l1.edx,
        l7_ebx: l7.ebx,
        l7_ecx: l7.ecx,
        l7_edx: l7.edx,
        l7_1_eax: l7_1,
    });
    let env = Cr4Env {
        real: rd(GUEST_CR4),
        cr0: rd(GUEST_CR0),
        cr3: rd(GUEST_CR3),
        lma: rd(GUEST_IA32_EFER) & (1 << 10) != 0,
        supported,
        fixed0: cpu.cr4_fixed0,
        fixed1: cpu.cr4_fixed1,
        host_in_vmx: local.vmx.is_on(),
    };
    match policy::cr4_write(val, env) {
        Some(w) => {
            wr(GUEST_CR4, w.real);
            wr(CR4_READ_SHADOW, w.shadow);
            if w.flush {
                // SAFETY: `global` is the hypervisor-wide state, alive
                // while any CPU runs under it; root mode, INVEPT
                // single-context is a required feature.  It drops every
                // cached translation of the host (all VPIDs, global ones
                // included).
                let _ =
                    unsafe { vmx::invept(vmx::InveptType::SingleContext, (*cpu.global).host_eptp) };
            }
            skip_instruction();
        }
        None => inject_gp0(cpu, local),
    }
}

/// A host WRMSR that exited, as `host_policy::msr_write` decides; `false`
/// to inject #GP.
fn wrmsr(local: &mut CpuLocal, m: u32, v: u64) -> bool {
    let current = match m {
        msr::APIC_BASE | msr::MISC_ENABLE => rdmsr_safe(m),
        _ => None,
    };
    let ctx = MsrContext {
        current,
        perf_global_switched: rd(VM_ENTRY_CONTROLS) & policy::ENTRY_LOAD_PERF_GLOBAL_CTRL != 0,
    };
    match policy::msr_write(m, v, ctx) {
        MsrWrite::Perform => wrmsr_safe(m, v),
        MsrWrite::Refuse => false,
        MsrWrite::Shadow(slot) => {
            local.mtrr.set(slot, v);
            true
        }
        MsrWrite::Ignore => true,
        MsrWrite::PerfGlobalCtrl => {
            let a = cpuid(0xa, 0);
            // A CPU without the MSR (Bochs reports a PMU it does not
            // implement) #GPs the write natively: so does pkvm.  Reading
            // it in root mode changes nothing.
            if rdmsr_safe(m).is_some() && policy::perf_global_ctrl_valid(v, a.eax, a.edx) {
                // Loaded by the next VM entry; root mode keeps 0.
                wr(GUEST_IA32_PERF_GLOBAL_CTRL, v);
                true
            } else {
                false
            }
        }
    }
}

/// The host cannot continue on this CPU: it triple-faulted (natively the
/// CPU would reset) or its state cannot be entered.  Record why, where
/// the other CPUs' tools can see it (the exit counters and
/// `last_unexpected`), and park this CPU in root mode.  The other CPUs
/// keep running; nothing is injected into a host that cannot take it.
fn host_is_dead(cpu: &HypCpu, local: &mut CpuLocal, basic: u16) -> ! {
    local.unexpected = local.unexpected.wrapping_add(1);
    local.last_unexpected = u64::from(basic);
    cpu.fatal_rip.store(rd(GUEST_RIP), Relaxed);
    cpu::park()
}

/// Guest activity state: active.
const ACTIVITY_ACTIVE: u32 = 0;
/// Guest activity state: wait-for-SIPI (IA32_VMX_MISC bit 8 says the CPU
/// supports it; the load checks).
const ACTIVITY_WAIT_FOR_SIPI: u32 = 3;

/// INIT: natively the CPU resets and waits for a SIPI.  Here it stays in
/// VMX non-root operation, in the wait-for-SIPI activity state, until the
/// SIPI exit ([`start_at_sipi`]); the host's state it had stays in the
/// VMCS untouched (valid for the entry) and is replaced at the SIPI.
/// An offline CPU is parked this way: it never leaves VMX operation.
fn park_for_sipi() {
    wr(VM_ENTRY_INTR_INFO, 0);
    wr(GUEST_INTERRUPTIBILITY_INFO, 0);
    wr(GUEST_PENDING_DBG_EXCEPTIONS, 0);
    wr(GUEST_ACTIVITY_STATE, ACTIVITY_WAIT_FOR_SIPI);
}

/// SIPI with `vector`: the CPU starts as after INIT-SIPI natively, in real
/// mode at `vector << 12` (CS = `vector << 8`, IP = 0), still in VMX
/// non-root operation under the host EPT (unrestricted guest allows CR0.PE
/// = PG = 0).  The state is the SDM's INIT state, except CR0.NE (required
/// in VMX operation; CR0 reads show it) and CR4.VMXE (required, hidden by
/// the CR4 read shadow).
fn start_at_sipi(cpu: &HypCpu, vector: u8) {
    let cs = u16::from(vector) << 8;
    // Real-mode segments: present, accessed, read/write data; CS code.
    const DATA_AR: u32 = 0x93;
    const CODE_AR: u32 = 0x9b;
    wr(GUEST_CS_SELECTOR, cs);
    wr(GUEST_CS_BASE, u64::from(cs) << 4);
    wr(GUEST_CS_LIMIT, 0xffff);
    wr(GUEST_CS_AR_BYTES, CODE_AR);
    // Written one by one: an array loop would call into `core` (audit).
    let data = |sel: Field<u16>, base: Field<u64>, limit: Field<u32>, ar: Field<u32>| {
        wr(sel, 0);
        wr(base, 0);
        wr(limit, 0xffff);
        wr(ar, DATA_AR);
    };
    data(
        GUEST_DS_SELECTOR,
        GUEST_DS_BASE,
        GUEST_DS_LIMIT,
        GUEST_DS_AR_BYTES,
    );
    data(
        GUEST_ES_SELECTOR,
        GUEST_ES_BASE,
        GUEST_ES_LIMIT,
        GUEST_ES_AR_BYTES,
    );
    data(
        GUEST_FS_SELECTOR,
        GUEST_FS_BASE,
        GUEST_FS_LIMIT,
        GUEST_FS_AR_BYTES,
    );
    data(
        GUEST_GS_SELECTOR,
        GUEST_GS_BASE,
        GUEST_GS_LIMIT,
        GUEST_GS_AR_BYTES,
    );
    data(
        GUEST_SS_SELECTOR,
        GUEST_SS_BASE,
        GUEST_SS_LIMIT,
        GUEST_SS_AR_BYTES,
    );
    // LDTR unusable; TR a (busy 32-bit) TSS at 0, as VM entry requires.
    wr(GUEST_LDTR_SELECTOR, 0);
    wr(GUEST_LDTR_BASE, 0);
    wr(GUEST_LDTR_LIMIT, 0xffff);
    wr(GUEST_LDTR_AR_BYTES, 1 << 16);
    wr(GUEST_TR_SELECTOR, 0);
    wr(GUEST_TR_BASE, 0);
    wr(GUEST_TR_LIMIT, 0xffff);
    wr(GUEST_TR_AR_BYTES, 0x8b);
    wr(GUEST_GDTR_BASE, 0);
    wr(GUEST_GDTR_LIMIT, 0xffff);
    wr(GUEST_IDTR_BASE, 0);
    wr(GUEST_IDTR_LIMIT, 0xffff);
    // CR0: CD | NW | ET as after INIT, plus NE.
    wr(GUEST_CR0, 0x6000_0030);
    wr(GUEST_CR3, 0);
    wr(GUEST_CR4, cpu.cr4_fixed0);
    wr(CR4_READ_SHADOW, 0);
    wr(GUEST_DR7, 0x400);
    wr(GUEST_RFLAGS, 0x2);
    wr(GUEST_RIP, 0);
    wr(GUEST_RSP, 0);
    wr(GUEST_IA32_EFER, 0);
    wr(GUEST_IA32_PAT, 0x0007_0406_0007_0406);
    wr(GUEST_IA32_DEBUGCTL, 0);
    wr(GUEST_SYSENTER_CS, 0);
    wr(GUEST_SYSENTER_ESP, 0);
    wr(GUEST_SYSENTER_EIP, 0);
    wr(
        VM_ENTRY_CONTROLS,
        rd(VM_ENTRY_CONTROLS) & !crate::hv::vmx::caps::ctl::ENTRY_IA32E_GUEST,
    );
    wr(VM_ENTRY_INTR_INFO, 0);
    wr(GUEST_INTERRUPTIBILITY_INFO, 0);
    wr(GUEST_PENDING_DBG_EXCEPTIONS, 0);
    wr(GUEST_ACTIVITY_STATE, ACTIVITY_ACTIVE);
    // SAFETY: `global` points at the hypervisor-wide state in the pool,
    // alive while any CPU runs under it.
    let global = unsafe { &*cpu.global };
    // The CPU starts afresh: drop what it cached of the host EPT.
    // SAFETY: root mode; INVEPT single-context is a required feature.
    let _ = unsafe { vmx::invept(vmx::InveptType::SingleContext, global.host_eptp) };
}

fn unexpected(cpu: &HypCpu, local: &mut CpuLocal, basic: u16) {
    local.unexpected = local.unexpected.wrapping_add(1);
    local.last_unexpected = u64::from(basic);
    inject_ud(cpu, local);
}

/// An EPT violation of the host.  If the host EPT as it is now allows the
/// access, this CPU used a translation cached before another CPU changed
/// the table: flush this CPU's translations and let the host retry (no
/// fault: nothing was refused).  Otherwise the host accessed a page it
/// does not own (hypervisor memory, or a page donated to a guest): inject
/// a page fault at the linear address it used, merged with the event whose
/// delivery caused the access, if any ([`inject_exception`]: a #PF while
/// delivering a #PF is a #DF; an interrupted interrupt or NMI is kept).
/// See Documentation/deprivilege.rst for what the host observes.
fn host_touched_protected_memory(cpu: &HypCpu, local: &mut CpuLocal) {
    let v = EptViolation::decode(rd(EXIT_QUALIFICATION));
    // SAFETY: `global` points at the hypervisor-wide state in the pool, set
    // up before the launch and alive while any CPU runs under it.
    let global = unsafe { &*cpu.global };
    reblock_nmi_after_iret(rd(EXIT_QUALIFICATION) & NMI_UNBLOCKED_BY_IRET != 0);
    if let Some(gpa) = Hpa::new(rd(GUEST_PHYSICAL_ADDRESS)) {
        let mut st = global.page_states();
        // A stale translation (the entry allows the access now), or the
        // first access to the part of the identity map filled on demand
        // (above RAM: MMIO such as 64-bit BARs): retry the access.
        let retry = st.host_may_access(gpa, v.read, v.write, v.fetch) || st.map_on_demand(gpa);
        drop(st);
        if retry {
            // SAFETY: root mode; INVEPT single-context is a required feature.
            let _ = unsafe { vmx::invept(vmx::InveptType::SingleContext, global.host_eptp) };
            return;
        }
    }
    let cpl3 = guest_cpl() == 3;
    let addr = if v.linear_valid {
        rd(GUEST_LINEAR_ADDRESS)
    } else {
        rd(GUEST_PHYSICAL_ADDRESS)
    };
    // SAFETY: CR2 is not part of the VMCS; the host reads the fault address
    // from the real CR2, which nothing in root mode depends on.
    unsafe { cpu::write_cr2(addr) };
    inject_exception(cpu, local, vector::PF, Some(v.host_pf_error_code(cpl3)));
}

/// Bit 12 of the EPT-violation exit qualification (as bit 12 of the exit
/// interruption information of an NMI exit, `nmi_unblocking`): the exit
/// happened while an IRET unblocked virtual NMIs.  If the IRET is to run again (or faulted), the
/// blocking must be restored before the entry.
const NMI_UNBLOCKED_BY_IRET: u64 = 1 << 12;

/// Restores the host's virtual-NMI blocking that an IRET interrupted by
/// this exit had lifted (`bit12`), unless an event delivery was
/// interrupted instead (then the bit is undefined).
fn reblock_nmi_after_iret(bit12: bool) {
    if bit12 && !InterruptionInfo(rd(IDT_VECTORING_INFO)).is_valid() {
        let intr = rd(GUEST_INTERRUPTIBILITY_INFO);
        wr(GUEST_INTERRUPTIBILITY_INFO, intr | INTR_BLOCKING_NMI);
    }
}

/// Blocking-by-NMI bit of the guest interruptibility state (virtual-NMI
/// blocking with virtual NMIs on).
const INTR_BLOCKING_NMI: u32 = 1 << 3;

/// An NMI exit.  If a shootdown sender flagged this CPU, the NMI is the
/// hypervisor's: the generation check before the entry flushes and
/// acknowledges, the host sees nothing.  Otherwise it is the host's (a
/// perf counter, an NMI IPI of its own, ...): re-injected as a virtual NMI
/// by `deliver_pending`, at once or, while the host blocks NMIs, through
/// NMI-window exiting.  A host NMI that arrives while a shootdown NMI is
/// pending merges with it, as two NMIs merge natively (documented).
fn host_nmi(cpu: &HypCpu, local: &mut CpuLocal) {
    let info = rd(VM_EXIT_INTR_INFO);
    if InterruptionInfo(info).event_type() != EventType::Nmi {
        // The exception bitmap is empty: no exception exits.
        unexpected(cpu, local, exit::reason::EXCEPTION_NMI);
        return;
    }
    reblock_nmi_after_iret(InterruptionInfo(info).nmi_unblocking());
    if cpu.shootdown_nmi.swap(0, SeqCst) == 0 {
        cpu.nmi_pending.store(1, Relaxed);
    }
}

/// This CPU's local APIC ID, from CPUID (which the host cannot change in
/// root mode): leaf 0xB's x2APIC ID where it exists, else the initial
/// APIC ID of leaf 1.
fn apic_id() -> u32 {
    if cpuid(0, 0).eax >= 0xb && cpuid(0xb, 0).ebx != 0 {
        cpuid(0xb, 0).edx
    } else {
        cpuid(1, 0).ebx >> 24
    }
}

/// Delivers an NMI or machine check that arrived while in root mode, if
/// no other event is being injected and the host is not blocking NMIs;
/// else an external interrupt set aside by [`inject_exception`], once the
/// host can take it (RFLAGS.IF set, no STI or MOV-SS blocking), with
/// interrupt-window exiting on while it waits.
fn deliver_pending(cpu: &HypCpu, local: &mut CpuLocal) {
    deliver_events(cpu, local);
    // An NMI for the host still waiting (the host blocks NMIs, or another
    // event goes first): exit as soon as it can take it.
    nmi_window(cpu.nmi_pending.load(Relaxed) != 0);
}

/// The body of [`deliver_pending`].
fn deliver_events(cpu: &HypCpu, local: &mut CpuLocal) {
    if InterruptionInfo(rd(VM_ENTRY_INTR_INFO)).is_valid() {
        if local.pending_irq.is_some() {
            interrupt_window(true);
        }
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
        if local.pending_irq.is_some() {
            interrupt_window(true);
        }
        return;
    }
    // Atomic accesses: the root-mode stubs set these flags asynchronously.
    // A flag set again after being cleared here stays pending for the
    // next exit (two NMIs in root mode collapse into one, as NMIs do).
    if cpu.mc_pending.swap(0, Relaxed) != 0 {
        inject(vector::MC, EventType::HardwareException, None);
    } else if cpu.nmi_pending.load(Relaxed) != 0
        && !Interruptibility(rd(GUEST_INTERRUPTIBILITY_INFO)).nmi()
    {
        cpu.nmi_pending.store(0, Relaxed);
        inject(vector::NMI, EventType::Nmi, None);
    } else if let Some(irq) = local.pending_irq {
        let intr = Interruptibility(rd(GUEST_INTERRUPTIBILITY_INFO));
        if rd(GUEST_RFLAGS) & (1 << 9) != 0 && !intr.sti() && !intr.mov_ss() {
            local.pending_irq = None;
            interrupt_window(false);
            inject(irq, EventType::ExternalInterrupt, None);
        } else {
            interrupt_window(true);
        }
    }
}

/// Turns NMI-window exiting on or off.
fn nmi_window(on: bool) {
    let p = rd(CPU_BASED_VM_EXEC_CONTROL);
    let want = if on {
        p | policy::PROC_NMI_WINDOW
    } else {
        p & !policy::PROC_NMI_WINDOW
    };
    if want != p {
        wr(CPU_BASED_VM_EXEC_CONTROL, want);
    }
}

/// Turns interrupt-window exiting on or off.
fn interrupt_window(on: bool) {
    let p = rd(CPU_BASED_VM_EXEC_CONTROL);
    let want = if on {
        p | policy::PROC_INTERRUPT_WINDOW
    } else {
        p & !policy::PROC_INTERRUPT_WINDOW
    };
    if want != p {
        wr(CPU_BASED_VM_EXEC_CONTROL, want);
    }
}

/// Runs the host's VMCALL: parses RAX (number) and RBX, RCX, RDX, RSI
/// (arguments) once, in the pure core, and dispatches the result with one
/// exhaustive `match`.  Returns what [`handle_exit`] returns.
fn hypercall_dispatch(regs: &mut GuestRegs, cpu: &HypCpu, local: &mut CpuLocal) -> u64 {
    let args = [
        regs.gpr[reg::RBX],
        regs.gpr[reg::RCX],
        regs.gpr[reg::RDX],
        regs.gpr[reg::RSI],
    ];
    skip_instruction();
    // SAFETY: `global` points at the hypervisor-wide state in the pool, set
    // up before launch and never freed while a CPU runs root mode; its
    // mutable part is behind its lock.
    let global = unsafe { &*cpu.global };
    let debug = match (cfg!(pkvm_debug), global.debug) {
        (false, _) => DebugCalls::NotBuilt,
        (true, false) => DebugCalls::Off,
        (true, true) => DebugCalls::On,
    };
    let parsed = Call::parse(regs.gpr[reg::RAX], args, debug);
    // A page-state call that takes access from the host has shot down every
    // CPU before its transition went on (the page-table engine's
    // invalidation, under the lock): nothing is left to flush here.
    let r = match parsed {
        Err(e) => Reply::errno(e),
        Ok(Call::Version) => Reply::val(hypercall::ABI_VERSION),
        Ok(Call::TeardownCpu) => {
            // SAFETY: this is the TEARDOWN_CPU contract: the host asked to
            // leave VMX operation on this CPU, in its own context; it
            // leaves only together with every other CPU.
            return unsafe { teardown(regs, cpu, local) };
        }
        Ok(Call::BeginTeardown) => global.begin_teardown(),
        Ok(Call::ExitCount { reason }) => Reply::val(match reason {
            None => local.stats.total(),
            Some(r) => local.stats.get(r),
        }),
        Ok(Call::ExitCountReset) => {
            local.stats = exit::ExitStats::new();
            Reply::val(0)
        }
        Ok(Call::FlushHostEpt) => {
            // This CPU only; not needed for safety any more.
            invept_host();
            Reply::val(0)
        }
        Ok(Call::NmisInRoot) => Reply::val(cpu.nmis_in_root.load(Relaxed)),
        Ok(Call::InternalErrors) => Reply::val(global.page_states().internal_errors()),
        Ok(Call::VmxCpus) => Reply::val(u64::from(global.vmx_cpus.load(Relaxed))),
        Ok(Call::NestedStats { which, reset }) => {
            Reply::val(super::nested::read_stat(cpu, which, reset))
        }
        Ok(Call::HostDonateHyp { hpa, pages }) => global.change(|s| s.host_donate_hyp(hpa, pages)),
        Ok(Call::HypDonateHost { hpa, pages }) => global.change(|s| s.hyp_donate_host(hpa, pages)),
        Ok(Call::HostShareHyp { hpa, pages }) => global.change(|s| s.host_share_hyp(hpa, pages)),
        Ok(Call::ReserveDonate { hpa, pages }) => global.change(|s| s.reserve_donate(hpa, pages)),
        Ok(Call::ReserveStatus) => global.page_states().reserve_status(),
        Ok(Call::PoolGrow { hpa }) => global.change(|s| s.pool_grow(hpa)),
        Ok(Call::PoolStatus) => global.page_states().pool_status(),
        Ok(Call::HostUnshareHyp { hpa, pages }) => {
            global.change(|s| s.host_unshare_hyp(hpa, pages))
        }
        Ok(Call::VmCreate {
            host_vm_id,
            kind,
            hpa,
            pages,
        }) => global.change(|s| s.vm_create(host_vm_id, kind, hpa, pages)),
        // VM_TEARDOWN stays allowed: it only gives back.
        Ok(Call::VmTeardown { handle }) => global.page_states().vm_teardown(handle),
        Ok(Call::HostShareGuest {
            handle,
            hpa,
            gpa,
            pages,
        }) => global.change(|s| s.host_share_guest(handle, hpa, gpa, pages)),
        Ok(Call::HostUnshareGuest {
            handle,
            hpa,
            gpa,
            pages,
        }) => global.change(|s| s.host_unshare_guest(handle, hpa, gpa, pages)),
        Ok(Call::HostDonateGuest {
            handle,
            hpa,
            gpa,
            pages,
        }) => global.change(|s| s.host_donate_guest(handle, hpa, gpa, pages)),
        #[cfg(pkvm_debug)]
        Ok(Call::DebugHostEptLookup { hpa }) => global.page_states().host_ept_lookup(hpa),
        #[cfg(pkvm_debug)]
        Ok(Call::DebugGuestShareHost { handle, gpa, pages }) => {
            global.change(|s| s.guest_share_host(handle, gpa, pages))
        }
        #[cfg(pkvm_debug)]
        Ok(Call::DebugGuestUnshareHost { handle, gpa, pages }) => {
            global.change(|s| s.guest_unshare_host(handle, gpa, pages))
        }
        #[cfg(pkvm_debug)]
        Ok(Call::DebugCheckInvariants) => global.page_states().check_invariants(),
        #[cfg(pkvm_debug)]
        Ok(Call::DebugFillPage { hpa, value }) => global.page_states().fill_page(hpa, value),
        #[cfg(pkvm_debug)]
        Ok(Call::DebugCountWords { hpa, value }) => global.page_states().count_words(hpa, value),
        #[cfg(pkvm_debug)]
        Ok(Call::DebugStackOverflow) => stack_overflow_probe(cpu),
        #[cfg(pkvm_debug)]
        Ok(Call::DebugStackGuard) => {
            // The same stack bottom `keep_ranges` computes; the guard is
            // the page below it (`crate::host::cpu_setup`).
            let bottom = keep_ranges()[0].0;
            global
                .page_states()
                .hyp_lookup_pair(bottom.wrapping_sub(4096), bottom)
        }
        // A production build parses no debug call (`DebugCalls::NotBuilt`);
        // the arm only keeps the match exhaustive.
        #[cfg(not(pkvm_debug))]
        Ok(
            Call::DebugHostEptLookup { .. }
            | Call::DebugGuestShareHost { .. }
            | Call::DebugGuestUnshareHost { .. }
            | Call::DebugCheckInvariants
            | Call::DebugFillPage { .. }
            | Call::DebugStackGuard
            | Call::DebugCountWords { .. }
            | Call::DebugStackOverflow,
        ) => Reply::errno(errno::ENOSYS),
    };
    if let Some(v) = r.rbx {
        regs.gpr[reg::RBX] = v;
    }
    if let Some(v) = r.rcx {
        regs.gpr[reg::RCX] = v;
    }
    regs.gpr[reg::RAX] = r.rax;
    deliver_pending(cpu, local);
    0
}

/// DEBUG_STACK_OVERFLOW: overflows this CPU's root-mode stack into its
/// guard page (`entry::pkvm_stack_overflow_probe` pushes until it faults;
/// the #PF runs on the interrupt stack, IST1, records the fault address
/// and resumes the probe).  Replies 0, the fault address relative to the
/// stack's lowest mapped address (RBX; -8 when the first push below the
/// stack faulted), and how far below the interrupt stack's top the #PF
/// handler ran (RCX; the size of its exception frame).  Without the guard
/// page the pushes would run on into the pool page below; without IST1
/// the #PF could not be delivered on the exhausted stack (#DF, then a
/// triple fault).
#[cfg(pkvm_debug)]
fn stack_overflow_probe(cpu: &HypCpu) -> Reply {
    let keep = keep_ranges();
    let bottom = keep[0].0;
    let ist_top = keep[3].0.wrapping_add(4096);
    // SAFETY: root mode with interrupts off; the probe writes only this
    // CPU's own stack below the current frame, down to its guard page,
    // and comes back through the #PF stub with its registers and the
    // host's CR2 restored.
    let cr2 = unsafe { entry::pkvm_stack_overflow_probe() };
    let stub_rsp = cpu.probe_stub_rsp.load(Relaxed);
    Reply {
        rbx: Some(cr2.wrapping_sub(bottom)),
        rcx: Some(ist_top.wrapping_sub(stub_rsp)),
        ..Reply::val(0)
    }
}

/// The ranges this CPU stands on in root mode until it is back in the
/// host, read from its own VMCS host state: the stack below HOST_RSP, the
/// per-CPU page (GS base), the GDT page (with the TSS), the interrupt
/// stack page the TSS names, and the shared root IDT.
fn keep_ranges() -> KeepRanges {
    let stack_top = rd(HOST_RSP).wrapping_add(16);
    let stack_pages = crate::host::cpu_setup::STACK_PAGES as u64;
    let tr = rd(HOST_TR_BASE);
    // SAFETY: HOST_TR_BASE is this CPU's TSS in its GDT page, mapped in
    // root mode; the TSS may be unaligned (it is written unaligned).
    let ist =
        unsafe { core::ptr::addr_of!((*(tr as *const root_tables::Tss64)).ist).read_unaligned() };
    [
        (stack_top.wrapping_sub(stack_pages * 4096), stack_pages),
        (rd(HOST_GS_BASE), 1),
        (rd(HOST_GDTR_BASE), 1),
        (ist[0].wrapping_sub(4096), 1),
        (rd(HOST_IDTR_BASE), 1),
    ]
}

/// TEARDOWN_CPU: joins the rendezvous of every CPU under the hypervisor
/// (refused before BEGIN_TEARDOWN, or if the others do not come); when all
/// are there, leaves VMX operation, lets the last CPU to arrive scrub the
/// hypervisor's memory (`HypGlobal::teardown_left_vmx`), and prepares
/// `regs.iret` so that the entry's IRETQ lands in the host right after
/// its VMCALL, in root mode, with the host's control registers,
/// descriptor tables, segments and MSRs.  The task register still refers
/// to the hypervisor's TSS: the host reloads its own right after the
/// hypercall returns (see `crate::host::launch`).  Returns what
/// [`handle_exit`] returns.
///
/// # Safety
///
/// Called from the exit handler for TEARDOWN_CPU only.
unsafe fn teardown(regs: &mut GuestRegs, hcpu: &HypCpu, cpu: &mut CpuLocal) -> u64 {
    let refuse = |regs: &mut GuestRegs, cpu: &mut CpuLocal, e| {
        regs.gpr[reg::RAX] = hypercall::err(e);
        deliver_pending(hcpu, cpu);
        0
    };
    let h = match HostCpuState::read(&vmcs()) {
        Ok(h) => h,
        // Cannot happen with the host's VMCS current; refuse rather
        // than load zeros into the CPU.
        Err(_) => return refuse(regs, cpu, errno::EFAULT),
    };
    // SAFETY: `global` points at the hypervisor-wide state in the pool,
    // alive while any CPU runs under it (and until every CPU has left).
    let global = unsafe { &*hcpu.global };
    let closer = match global.teardown_arrive(hcpu.cpu, &keep_ranges()) {
        Ok(c) => c,
        Err(e) => return refuse(regs, cpu, e),
    };
    regs.gpr[reg::RAX] = 0;
    // SAFETY: root mode, with the host's VMCS current.
    let vmcs_pa = unsafe { vmx::vmptrst() };
    // Root mode runs with IA32_PERF_GLOBAL_CTRL 0 when the VMCS switches
    // it: the host's value goes back on the CPU below.
    let perf_global = (rd(VM_ENTRY_CONTROLS) & policy::ENTRY_LOAD_PERF_GLOBAL_CTRL != 0)
        .then(|| rd(GUEST_IA32_PERF_GLOBAL_CTRL));

    // SAFETY: leaving VMX operation with every other CPU (the rendezvous
    // closed); the VMCS is cleared first so its state is written back.
    unsafe {
        let _ = vmx::vmclear(vmcs_pa);
        let _ = vmx::vmxoff();
    }
    cpu.torn_down = 1;
    // Out of VMX operation: shootdowns no longer wait for this CPU.
    hcpu.parked.store(1, SeqCst);
    // Still on the hypervisor's page table, stack and descriptor tables:
    // wait for the scrub (or do it) before anything of the host runs.
    global.teardown_left_vmx(closer);
    if let Some(v) = perf_global {
        // Still on root mode's IDT and GS: a #GP is recovered.
        let _ = wrmsr_safe(policy::msr::PERF_GLOBAL_CTRL, v);
    }

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
