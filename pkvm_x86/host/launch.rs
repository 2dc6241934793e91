// SPDX-License-Identifier: GPL-2.0

//! Launching one CPU in place and giving it root mode back: VMXON, a VMCS
//! whose guest state is the CPU's current state, VMLAUNCH (runs on the CPU,
//! interrupts off); and the TEARDOWN_CPU hypercall that reverses it.

use core::ffi::c_void;

use kernel::{bindings, prelude::*};

use super::cpu_setup::CpuSlot;
use crate::arch::{cpu, vmx};
use crate::hv::host_policy;
use crate::hv::hypercall::{self, nr};
use crate::hv::vmx::caps::ctl;
use crate::hv::vmx::exit::CR4_VMXE;
use crate::hv::vmx::guest_state::{
    guest_state, CpuSnapshot, GuestStateError, Selectors, GUEST_FIELDS,
};
use crate::hv::vmx::root_tables::{HOST_CS, HOST_SS, HOST_TR, TSS_OFFSET};
use crate::hv::vmx::vmcs::*;
use crate::hyp::entry;

extern "C" {
    fn pkvm_helper_reload_host_tr();
}

/// VPID used for the host on every CPU (0 is reserved for root mode).
const HOST_VPID: u64 = 1;

/// Shared, read-only-after-setup structures.
#[derive(Clone, Copy)]
pub(crate) struct Shared {
    pub(crate) eptp: u64,
    pub(crate) msr_bitmap_pa: u64,
    pub(crate) idt_va: u64,
    pub(crate) host_cr3: u64,
    pub(crate) vpid: bool,
    pub(crate) pin: u32,
    pub(crate) proc1: u32,
    pub(crate) proc2: u32,
    pub(crate) exit: u32,
    pub(crate) entry: u32,
    pub(crate) cr0_fixed: (u64, u64),
    pub(crate) cr4_fixed: (u64, u64),
}

/// Arguments of the per-CPU launch callback.
pub(crate) struct LaunchArgs {
    pub(crate) slot: *const CpuSlot,
    pub(crate) shared: Shared,
    /// 0 on success, else a negative errno.
    pub(crate) result: i32,
    /// Where it failed, for the log.
    pub(crate) stage: &'static str,
    /// VM-instruction error, when a VMX instruction failed.
    pub(crate) vm_error: u64,
}

/// Runs on the CPU being torn down, interrupts off.
///
/// # Safety
///
/// `info` points at an `i32` the caller keeps alive; the CPU runs
/// deprivileged under this hypervisor.
pub(crate) unsafe extern "C" fn teardown_this_cpu(info: *mut c_void) {
    // SAFETY: the caller passes a pointer to an i32 it keeps alive.
    let ok = unsafe { &mut *info.cast::<i32>() };
    // SAFETY: this CPU runs deprivileged under pkvm (the slot says it was
    // launched); TEARDOWN_CPU returns here in root mode.
    let r = unsafe { vmx::vmcall(nr::TEARDOWN_CPU, 0, 0, 0, 0) };
    *ok = match hypercall::decode(r) {
        Ok(_) => {
            // SAFETY: interrupts are off; we are back in root mode with the
            // hypervisor's TSS still in TR.
            unsafe { pkvm_helper_reload_host_tr() };
            0
        }
        Err(e) => -(e as i32),
    };
}

fn fail(args: &mut LaunchArgs, stage: &'static str, errno: u32, e: Option<vmx::VmFail>) {
    args.stage = stage;
    args.result = -(errno as i32);
    if let Some(vmx::VmFail::Valid(n)) = e {
        args.vm_error = n;
    }
}

/// Runs on the CPU being deprivileged, interrupts off.
///
/// # Safety
///
/// `info` points at a [`LaunchArgs`] the caller keeps alive, whose slot is
/// the calling CPU's and is not used elsewhere during the call.
pub(crate) unsafe extern "C" fn launch_on_this_cpu(info: *mut c_void) {
    // SAFETY: the caller passes a LaunchArgs it keeps alive, whose slot
    // pointer is valid and not used elsewhere during the call.
    let args = unsafe { &mut *info.cast::<LaunchArgs>() };
    // SAFETY: as above.
    let slot = unsafe { &*args.slot };
    let sh = args.shared;

    let cr4 = cpu::read_cr4();
    if cr4 & CR4_VMXE != 0 {
        return fail(
            args,
            "CR4.VMXE already set: VMX in use (kvm_intel loaded?)",
            bindings::EBUSY,
            None,
        );
    }
    let cr0 = cpu::read_cr0();
    let vmx_cr4 = cr4 | CR4_VMXE;
    // The guest state is decided before VMX is touched: a CPU that cannot
    // be described as a VMX guest is refused with nothing to undo.
    let guest = {
        let gdtr = cpu::sgdt();
        let gdt_entries = (usize::from(gdtr.limit) + 1) / 8;
        // SAFETY: the GDT is mapped (the CPU uses it) and GDTR's limit
        // bounds it.
        let gdt = unsafe { core::slice::from_raw_parts(gdtr.base as *const u64, gdt_entries) };
        let idtr = cpu::sidt();
        // SAFETY: these MSRs exist on every CPU with VMX and long mode.
        let msr = |m| unsafe { cpu::rdmsr(m) };
        let snap = CpuSnapshot {
            cr0,
            cr3: cpu::read_cr3(),
            cr4,
            dr7: cpu::read_dr7(),
            rflags: cpu::read_rflags(),
            efer: msr(cpu::msr::EFER),
            pat: msr(cpu::msr::PAT),
            debugctl: msr(cpu::msr::DEBUGCTL),
            sysenter: [
                msr(cpu::msr::SYSENTER_CS),
                msr(cpu::msr::SYSENTER_ESP),
                msr(cpu::msr::SYSENTER_EIP),
            ],
            fs_base: msr(cpu::msr::FS_BASE),
            gs_base: msr(cpu::msr::GS_BASE),
            sel: Selectors {
                es: cpu::es(),
                cs: cpu::cs(),
                ss: cpu::ss(),
                ds: cpu::ds(),
                fs: cpu::fs(),
                gs: cpu::gs(),
                ldtr: cpu::ldtr(),
                tr: cpu::tr(),
            },
            gdtr: (gdtr.base, gdtr.limit),
            idtr: (idtr.base, idtr.limit),
            gdt,
        };
        match guest_state(&snap, sh.cr0_fixed, sh.cr4_fixed) {
            Ok(g) => g,
            Err(e) => {
                let stage = match e {
                    GuestStateError::Cr0Fixed => "CR0 not allowed in VMX operation",
                    GuestStateError::Cr4Fixed => "CR4 not allowed in VMX operation",
                    GuestStateError::La57 => "5-level paging is not supported yet",
                    GuestStateError::NotLongMode => "not in long mode",
                    GuestStateError::Cs(_) => "CS is not a 64-bit code segment",
                    GuestStateError::Tr(_) => "TR is not a usable 64-bit TSS",
                };
                return fail(args, stage, bindings::EOPNOTSUPP, None);
            }
        }
    };
    // SAFETY: setting VMXE is required for VMXON; undone on every failure
    // path below.  Interrupts are off, nothing else touches CR4 meanwhile.
    unsafe { cpu::write_cr4(vmx_cr4) };
    // SAFETY: the VMXON region is a zeroed pool page with the revision id.
    if let Err(e) = unsafe { vmx::vmxon(slot.vmxon.pa) } {
        // SAFETY: restores the value read above.
        unsafe { cpu::write_cr4(cr4) };
        return fail(args, "VMXON", bindings::EIO, Some(e));
    }
    // SAFETY: in VMX root operation now; the VMCS region is ours.
    let r = unsafe { vmx::vmclear(slot.vmcs.pa).and_then(|()| vmx::vmptrld(slot.vmcs.pa)) };
    let r = r.and_then(|()| {
        // SAFETY: the current VMCS is this CPU's fresh one.
        unsafe { write_vmcs(slot, &sh, &guest, cr0, cr4) }
    });
    if let Err(e) = r {
        // SAFETY: undo VMXON and VMXE.
        unsafe {
            let _ = vmx::vmclear(slot.vmcs.pa);
            let _ = vmx::vmxoff();
            cpu::write_cr4(cr4);
        }
        return fail(args, "VMCS set-up", bindings::EIO, Some(e));
    }
    // SAFETY: the VMCS describes this CPU; interrupts are off.
    if let Err(e) = unsafe { vmx::vmlaunch_in_place() } {
        // SAFETY: undo VMXON and VMXE.
        unsafe {
            let _ = vmx::vmclear(slot.vmcs.pa);
            let _ = vmx::vmxoff();
            cpu::write_cr4(cr4);
        }
        return fail(args, "VMLAUNCH", bindings::EIO, Some(e));
    }
    // Now in VMX non-root operation.
    args.result = 0;
}

/// Writes every control, host-state and guest-state field except guest
/// RSP/RIP (set by the launch itself).
///
/// # Safety
///
/// VMX root operation with `slot.vmcs` current, on `slot.cpu`, interrupts off.
unsafe fn write_vmcs(
    slot: &CpuSlot,
    sh: &Shared,
    guest: &[(Field, u64); GUEST_FIELDS],
    cr0: u64,
    cr4: u64,
) -> Result<(), vmx::VmFail> {
    // SAFETY: guaranteed by the caller.
    let w = |f, v| unsafe { vmx::vmwrite(f, v) };

    // Controls.
    w(PIN_BASED_VM_EXEC_CONTROL, u64::from(sh.pin))?;
    w(CPU_BASED_VM_EXEC_CONTROL, u64::from(sh.proc1))?;
    w(SECONDARY_VM_EXEC_CONTROL, u64::from(sh.proc2))?;
    w(VM_EXIT_CONTROLS, u64::from(sh.exit))?;
    w(VM_ENTRY_CONTROLS, u64::from(sh.entry))?;
    w(EXCEPTION_BITMAP, 0)?;
    w(PAGE_FAULT_ERROR_CODE_MASK, 0)?;
    w(PAGE_FAULT_ERROR_CODE_MATCH, 0)?;
    w(CR3_TARGET_COUNT, 0)?;
    w(VM_EXIT_MSR_STORE_COUNT, 0)?;
    w(VM_EXIT_MSR_LOAD_COUNT, 0)?;
    w(VM_ENTRY_MSR_LOAD_COUNT, 0)?;
    w(VM_ENTRY_INTR_INFO, 0)?;
    w(CR0_GUEST_HOST_MASK, host_policy::CR0_GUEST_HOST_MASK)?;
    w(CR0_READ_SHADOW, cr0)?;
    w(CR4_GUEST_HOST_MASK, host_policy::CR4_GUEST_HOST_MASK)?;
    w(CR4_READ_SHADOW, cr4)?;
    w(MSR_BITMAP, sh.msr_bitmap_pa)?;
    w(EPT_POINTER, sh.eptp)?;
    w(TSC_OFFSET, 0)?;
    if sh.vpid {
        w(VIRTUAL_PROCESSOR_ID, HOST_VPID)?;
    }
    if sh.proc2 & ctl::PROC2_XSAVES != 0 {
        w(XSS_EXIT_BITMAP, 0)?;
    }

    // Guest state: the CPU as it is now (computed by `hv::vmx::guest_state`).
    for &(field, value) in guest.iter() {
        w(field, value)?;
    }
    // SAFETY: these MSRs exist on every CPU with VMX and long mode.
    let (efer, pat, se_cs, se_esp, se_eip) = unsafe {
        (
            cpu::rdmsr(cpu::msr::EFER),
            cpu::rdmsr(cpu::msr::PAT),
            cpu::rdmsr(cpu::msr::SYSENTER_CS),
            cpu::rdmsr(cpu::msr::SYSENTER_ESP),
            cpu::rdmsr(cpu::msr::SYSENTER_EIP),
        )
    };

    // Host state: the hypervisor's own GDT, TSS, IDT and stack.
    let tss_va = slot.gdt.va as u64 + TSS_OFFSET as u64;
    w(HOST_CR0, cr0)?;
    w(HOST_CR3, sh.host_cr3)?;
    w(HOST_CR4, cr4 | CR4_VMXE)?;
    w(HOST_CS_SELECTOR, u64::from(HOST_CS))?;
    w(HOST_SS_SELECTOR, u64::from(HOST_SS))?;
    w(HOST_DS_SELECTOR, 0)?;
    w(HOST_ES_SELECTOR, 0)?;
    w(HOST_FS_SELECTOR, 0)?;
    w(HOST_GS_SELECTOR, 0)?;
    w(HOST_TR_SELECTOR, u64::from(HOST_TR))?;
    w(HOST_FS_BASE, 0)?;
    w(HOST_GS_BASE, slot.hyp.va as u64)?;
    w(HOST_TR_BASE, tss_va)?;
    w(HOST_GDTR_BASE, slot.gdt.va as u64)?;
    w(HOST_IDTR_BASE, sh.idt_va)?;
    w(HOST_IA32_SYSENTER_CS, se_cs)?;
    w(HOST_SYSENTER_ESP, se_esp)?;
    w(HOST_SYSENTER_EIP, se_eip)?;
    w(HOST_IA32_EFER, efer)?;
    w(HOST_IA32_PAT, pat)?;
    w(HOST_RSP, slot.stack_top - 16)?;
    w(HOST_RIP, entry::pkvm_vmexit_entry as *const () as u64)?;
    Ok(())
}
