// SPDX-License-Identifier: GPL-2.0

//! Launching one CPU in place and giving it root mode back: VMXON, a VMCS
//! whose guest state is the CPU's current state, VMLAUNCH (runs on the CPU,
//! interrupts off); and the TEARDOWN_CPU hypercall that reverses it.

use core::ffi::c_void;
use core::sync::atomic::{AtomicBool, AtomicI32, AtomicU8, Ordering};

use kernel::{bindings, prelude::*};

use super::cpu_setup::CpuSlot;
use crate::arch::{cpu, vmx};
use crate::hv::host_policy::{self, HostControls};
use crate::hv::hypercall::{self, nr};
use crate::hv::vmx::exit::CR4_VMXE;
use crate::hv::vmx::guest_state::{
    guest_state, CpuSnapshot, GuestState, GuestStateError, Selectors,
};
use crate::hv::vmx::host_vmcs::{write_controls_and_host_state, HostVmcs};
use crate::hv::vmx::root_tables::{HOST_CS, HOST_SS, HOST_TR, TSS_OFFSET};
use crate::hv::vmx::vmcs::{
    VmcsAccess, VmcsError, FIELDS, FIELD_COUNT, GUEST_IA32_PERF_GLOBAL_CTRL,
};
use crate::hyp::entry;

extern "C" {
    fn pkvm_helper_reload_host_tr();
    fn pkvm_helper_rdmsr_safe(msr: u32, val: *mut u64) -> i32;
}

/// What the first launch found out about each field of the VMCS table
/// (by table position), for the `vmcs_fields` debugfs file: one of the
/// `PROBE_*` values.
static FIELD_PROBE: [AtomicU8; FIELD_COUNT] = [const { AtomicU8::new(PROBE_NOT_RUN) }; FIELD_COUNT];
/// Whether [`FIELD_PROBE`] has been filled.
static FIELD_PROBE_DONE: AtomicBool = AtomicBool::new(false);

/// The field was not probed (no CPU launched yet).
pub(crate) const PROBE_NOT_RUN: u8 = 0;
/// VMREAD of the field succeeded.
pub(crate) const PROBE_OK: u8 = 1;
/// VMREAD failed with VM-instruction error 12: the CPU does not have it.
pub(crate) const PROBE_UNSUPPORTED: u8 = 2;
/// VMREAD failed otherwise.
pub(crate) const PROBE_FAILED: u8 = 3;

/// What VMREAD of table row `i` did at the first launch (`PROBE_*`).
pub(crate) fn field_probe(i: usize) -> u8 {
    FIELD_PROBE
        .get(i)
        .map_or(PROBE_NOT_RUN, |p| p.load(Ordering::Relaxed))
}

/// VMREADs every field of the table from `vmcs` and records whether the
/// CPU has it, once per module load (the CPUs are identical).
fn probe_fields(vmcs: &impl VmcsAccess) {
    if FIELD_PROBE_DONE.load(Ordering::Acquire) {
        return;
    }
    for (f, p) in FIELDS.iter().zip(FIELD_PROBE.iter()) {
        let r = match vmcs.read_raw(f.encoding) {
            Ok(_) => PROBE_OK,
            Err(VmcsError::Unsupported) => PROBE_UNSUPPORTED,
            Err(_) => PROBE_FAILED,
        };
        p.store(r, Ordering::Relaxed);
    }
    FIELD_PROBE_DONE.store(true, Ordering::Release);
}

/// Shared, read-only-after-setup structures.
#[derive(Clone, Copy)]
pub(crate) struct Shared {
    pub(crate) eptp: u64,
    pub(crate) msr_bitmap_pa: u64,
    pub(crate) idt_va: u64,
    pub(crate) host_cr3: u64,
    pub(crate) controls: HostControls,
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

/// What [`teardown_this_cpu`] needs on every CPU at once: which CPUs are
/// deprivileged, and where each one's result goes (0 or a negative errno),
/// both indexed by CPU number.
pub(crate) struct TeardownArgs<'a> {
    pub(crate) launched: &'a [bool],
    pub(crate) results: &'a [AtomicI32],
}

/// Runs on every online CPU at once (one `on_each_cpu` call), interrupts
/// off: each deprivileged CPU makes the TEARDOWN_CPU hypercall, which
/// returns only when all of them have made it (a rendezvous in root
/// mode) or with an error.
///
/// # Safety
///
/// `info` points at a [`TeardownArgs`] the caller keeps alive until every
/// CPU has run this; BEGIN_TEARDOWN has succeeded.
pub(crate) unsafe extern "C" fn teardown_this_cpu(info: *mut c_void) {
    // SAFETY: the caller passes a TeardownArgs it keeps alive.
    let args = unsafe { &*info.cast::<TeardownArgs<'_>>() };
    let cpu = kernel::cpu::CpuId::current().as_u32() as usize;
    if !args.launched.get(cpu).copied().unwrap_or(false) {
        return;
    }
    // SAFETY: this CPU runs deprivileged under pkvm (the slot says it was
    // launched); TEARDOWN_CPU returns here in root mode, or with an error
    // still deprivileged.
    let r = unsafe { vmx::vmcall(nr::TEARDOWN_CPU, 0, 0, 0, 0) };
    let rc = match hypercall::decode(r) {
        Ok(_) => {
            // SAFETY: interrupts are off; we are back in root mode with the
            // hypervisor's TSS still in TR.
            unsafe { pkvm_helper_reload_host_tr() };
            0
        }
        Err(e) => -(e as i32),
    };
    if let Some(slot) = args.results.get(cpu) {
        slot.store(rc, Ordering::Release);
    }
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
        // SAFETY: in VMX root operation with this CPU's fresh VMCS current,
        // used on this CPU only, until VMLAUNCH or the roll-back below.
        let mut vmcs = unsafe { vmx::CurrentVmcs::new() };
        write_vmcs(&mut vmcs, slot, &sh, &guest, cr0, cr4).map_err(vmx::VmFail::from)?;
        // Before VMLAUNCH: a VMREAD that fails only sets the
        // VM-instruction error field, which nothing reads before the
        // launch.
        probe_fields(&vmcs);
        Ok(())
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
    // Now in VMX non-root operation.  One VM exit at once: root mode
    // counts a CPU among those the teardown rendezvous waits for at its
    // first exit (`HypGlobal::note_cpu`).
    // SAFETY: VERSION only returns a constant.
    let _ = unsafe { vmx::vmcall(nr::VERSION, 0, 0, 0, 0) };
    args.result = 0;
}

/// Writes every control, host-state and guest-state field except guest
/// RSP/RIP (set by the launch itself) into `vmcs`, the current VMCS of
/// `slot.cpu`.
fn write_vmcs(
    vmcs: &mut vmx::CurrentVmcs,
    slot: &CpuSlot,
    sh: &Shared,
    guest: &GuestState,
    cr0: u64,
    cr4: u64,
) -> Result<(), VmcsError> {
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
    let host = HostVmcs {
        controls: sh.controls,
        msr_bitmap_pa: sh.msr_bitmap_pa,
        eptp: sh.eptp,
        cr0,
        cr4,
        host_cr3: sh.host_cr3,
        cs: HOST_CS,
        ss: HOST_SS,
        tr: HOST_TR,
        gs_base: slot.hyp.va as u64,
        tr_base: slot.gdt.va as u64 + TSS_OFFSET as u64,
        gdtr_base: slot.gdt.va as u64,
        idtr_base: sh.idt_va,
        sysenter_cs: se_cs as u32,
        sysenter_esp: se_esp,
        sysenter_eip: se_eip,
        efer,
        pat,
        rsp: slot.stack_top - 16,
        rip: entry::pkvm_vmexit_entry as *const () as u64,
    };
    write_controls_and_host_state(vmcs, &host)?;
    if sh.controls.entry & host_policy::ENTRY_LOAD_PERF_GLOBAL_CTRL != 0 {
        // The host's counters keep running across the launch: the entry
        // loads its current IA32_PERF_GLOBAL_CTRL (0 if the CPU has no such
        // MSR), root mode runs with 0 (`host_vmcs`), and host writes
        // update this field (`host_policy::msr_write`).
        let mut pgc = 0u64;
        // SAFETY: a RDMSR with the kernel's #GP fixup into a local.
        let _ = unsafe { pkvm_helper_rdmsr_safe(host_policy::msr::PERF_GLOBAL_CTRL, &mut pgc) };
        vmcs.write(GUEST_IA32_PERF_GLOBAL_CTRL, pgc)?;
    }
    // Guest state: the CPU as it is now (computed by `hv::vmx::guest_state`).
    guest.write(vmcs)
}
