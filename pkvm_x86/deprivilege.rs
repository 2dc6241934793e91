// SPDX-License-Identifier: GPL-2.0

//! Deprivileging the running kernel: per-CPU VMXON, a VMCS whose guest
//! state is the CPU's current state, VMLAUNCH in place; and the reverse on
//! unload.
//!
//! Owns the host-side bring-up and teardown: the hypervisor's memory (a
//! [`Pool`]), the shared structures (host EPT, MSR bitmap, root-mode IDT)
//! and, per CPU, the VMXON region, the VMCS, the root-mode stack, GDT, TSS
//! and [`HypCpu`].  What runs in root mode afterwards is in `crate::hyp`.
//!
//! Bring-up runs through a dynamic CPU-hotplug state: its online callback
//! deprivileges each online CPU at load and each CPU that comes online
//! later, on that CPU with interrupts off; its offline callback gives root
//! mode back before a CPU goes down and at unload.  A failure on any CPU
//! tears down every CPU already deprivileged and fails the load.  See
//! Documentation/deprivilege.rst.

use core::ffi::c_void;
use core::sync::atomic::{AtomicPtr, Ordering};

use kernel::{bindings, prelude::*};

use crate::arch::root_entry as entry;
use crate::arch::{cpu, vmx};
use crate::hv::ept::Eptp;
use crate::hv::exit::CR4_VMXE;
use crate::hv::guest_state::{guest_state, CpuSnapshot, GuestStateError, Selectors, GUEST_FIELDS};
use crate::hv::host_controls::host_controls;
use crate::hv::hypercall::{self, nr};
use crate::hv::msr_bitmap::{MsrBitmap, HOST_POLICY, MSR_BITMAP_SIZE};
use crate::hv::vmcs::*;
use crate::hv::vmx_caps::{ctl, VmxCaps};
use crate::hyp::global::HypGlobal;
use crate::hyp::mm::HypMm;
use crate::hyp::percpu::HypCpu;
use crate::pool::{Pool, PoolPage};

extern "C" {
    fn pkvm_helper_reload_host_tr();
}

const STACK_PAGES: usize = 4;
const HOST_CS: u16 = 0x08;
const HOST_SS: u16 = 0x10;
const HOST_TR: u16 = 0x18;
const TSS_OFFSET: usize = 0x800;
const TSS_LIMIT: u64 = 0x67;
/// VPID used for the host on every CPU (0 is reserved for root mode).
const HOST_VPID: u64 = 1;

/// Everything one CPU's hypervisor needs, in pool memory.
struct CpuSlot {
    vmxon: PoolPage,
    vmcs: PoolPage,
    hyp: PoolPage,
    stack_top: u64,
    gdt: PoolPage,
    launched: bool,
}

/// Shared, read-only-after-setup structures.
#[derive(Clone, Copy)]
struct Shared {
    eptp: u64,
    msr_bitmap_pa: u64,
    idt_va: u64,
    host_cr3: u64,
    vpid: bool,
    pin: u32,
    proc1: u32,
    proc2: u32,
    exit: u32,
    entry: u32,
    cr0_fixed: (u64, u64),
    cr4_fixed: (u64, u64),
}

/// Per-CPU launch state, reached from the CPU-hotplug callbacks.
struct CpuState {
    shared: Shared,
    /// Indexed by CPU number; `Some` for every possible CPU.
    slots: KVec<Option<CpuSlot>>,
    /// Nanoseconds the last launch of each CPU took.
    launch_ns: KVec<u64>,
    /// A CPU could not leave VMX operation: the pool must not go back.
    teardown_failed: bool,
    /// Tests: refuse to deprivilege this CPU (module parameter).
    fail_cpu: Option<u32>,
}

/// The hotplug callbacks' view of the running hypervisor.  Set before the
/// callbacks are registered, cleared after they are removed; the hotplug
/// core serialises the callbacks with each other.
static CPU_STATE: AtomicPtr<CpuState> = AtomicPtr::new(core::ptr::null_mut());

/// The running hypervisor.  Dropping it re-privileges every CPU and gives
/// the pool back.
pub(crate) struct Hypervisor {
    /// Figures taken before the launch, while the host could still read
    /// the pool.
    stats: SetupStats,
    cpus: KBox<CpuState>,
    /// The dynamic CPU-hotplug state the callbacks are registered under.
    hp_state: Option<i32>,
    /// Nanoseconds from the start of `start` to every CPU launched.
    total_ns: u64,
    // Declared last: freed after every CPU has left VMX operation.
    pool: Pool,
}

// SAFETY: the raw pool addresses inside are only dereferenced by the CPU
// that owns them, or with every CPU out of VMX operation.
unsafe impl Send for Hypervisor {}
// SAFETY: shared references give no access to the pool.
unsafe impl Sync for Hypervisor {}

/// Set-up figures for the log and debugfs.
#[derive(Clone, Copy, Default)]
struct SetupStats {
    pool: (usize, usize),
    ept_tables: usize,
}

/// Arguments of the per-CPU launch callback.
struct LaunchArgs {
    slot: *const CpuSlot,
    shared: Shared,
    /// 0 on success, else a negative errno.
    result: i32,
    /// Where it failed, for the log.
    stage: &'static str,
    /// VM-instruction error, when a VMX instruction failed.
    vm_error: u64,
}

/// CPU-hotplug startup callback: deprivileges `cpu` (every online CPU at
/// registration, then each CPU that comes online).  Runs on `cpu`.
///
/// # Safety
///
/// Called by the hotplug core only, while `CPU_STATE` is set.
unsafe extern "C" fn cpu_online(cpu: core::ffi::c_uint) -> core::ffi::c_int {
    // SAFETY: set before registration, cleared after removal; the hotplug
    // core serialises callbacks, so this is the only user.
    let Some(st) = (unsafe { CPU_STATE.load(Ordering::Acquire).as_mut() }) else {
        return -(bindings::ENODEV as i32);
    };
    let Some(Some(slot)) = st.slots.get_mut(cpu as usize) else {
        return -(bindings::ENODEV as i32);
    };
    if slot.launched {
        return 0;
    }
    if st.fail_cpu == Some(cpu) {
        pr_err!(
            "cpu{}: deprivileging failed: injected failure (test_fail_cpu)\n",
            cpu
        );
        return -(bindings::EIO as i32);
    }
    let mut args = LaunchArgs {
        slot,
        shared: st.shared,
        result: 0,
        stage: "",
        vm_error: 0,
    };
    // SAFETY: ktime_get has no preconditions.
    let t = unsafe { bindings::ktime_get() };
    // SAFETY: the function runs on `cpu` (this CPU) with interrupts off
    // and returns before this call does; `args` outlives it.
    let rc = unsafe {
        bindings::smp_call_function_single(
            cpu as i32,
            Some(launch_on_this_cpu),
            (&raw mut args).cast(),
            1,
        )
    };
    let err = if rc != 0 { rc } else { args.result };
    if err != 0 {
        pr_err!(
            "{}\n",
            format_args!(
                "cpu{cpu}: deprivileging failed at {} (errno {err}, VM-instruction error {} = {})",
                args.stage,
                args.vm_error,
                instruction_error_name(args.vm_error)
            )
        );
        return err;
    }
    slot.launched = true;
    // SAFETY: ktime_get has no preconditions.
    let ns = unsafe { bindings::ktime_get() }.saturating_sub(t) as u64;
    if let Some(l) = st.launch_ns.get_mut(cpu as usize) {
        *l = ns;
    }
    0
}

/// CPU-hotplug teardown callback: gives root mode back to `cpu` before it
/// goes offline (and on unload).  Runs on `cpu`.
///
/// # Safety
///
/// Called by the hotplug core only, while `CPU_STATE` is set.
unsafe extern "C" fn cpu_offline(cpu: core::ffi::c_uint) -> core::ffi::c_int {
    // SAFETY: as in `cpu_online`.
    let Some(st) = (unsafe { CPU_STATE.load(Ordering::Acquire).as_mut() }) else {
        return 0;
    };
    let Some(Some(slot)) = st.slots.get_mut(cpu as usize) else {
        return 0;
    };
    if !slot.launched {
        return 0;
    }
    let mut ok: i32 = -1;
    // SAFETY: runs on `cpu` (this CPU) with interrupts off before this
    // returns; `ok` outlives it.
    let rc = unsafe {
        bindings::smp_call_function_single(
            cpu as i32,
            Some(teardown_this_cpu),
            (&raw mut ok).cast(),
            1,
        )
    };
    if rc != 0 || ok != 0 {
        pr_err!(
            "{}\n",
            format_args!("cpu{cpu}: teardown failed (rc {rc}, result {ok})")
        );
        st.teardown_failed = true;
        return if rc != 0 { rc } else { ok };
    }
    slot.launched = false;
    0
}

impl Hypervisor {
    /// Deprivileges every online CPU, and every CPU that comes online
    /// later, until dropped.
    pub(crate) fn start(
        caps: &VmxCaps,
        pool_bytes: usize,
        module: *mut bindings::module,
        debug: bool,
        fail_cpu: Option<u32>,
    ) -> Result<Self> {
        if !CPU_STATE.load(Ordering::Acquire).is_null() {
            return Err(EBUSY);
        }
        // SAFETY: ktime_get has no preconditions.
        let t0 = unsafe { bindings::ktime_get() };
        let mut pool = Pool::new(pool_bytes)?;
        let (shared, global) = Self::build_shared(caps, &mut pool, module, debug)?;
        let mut cpus = KBox::new(
            CpuState {
                shared,
                slots: KVec::new(),
                launch_ns: KVec::new(),
                teardown_failed: false,
                fail_cpu,
            },
            GFP_KERNEL,
        )?;
        // Every possible CPU gets its pages now: once a CPU runs
        // deprivileged, the host cannot write the pool any more.
        for cpu in 0..kernel::cpu::nr_cpu_ids() {
            let slot = if crate::cpu_caps::is_possible(cpu) {
                Some(Self::new_slot(&mut pool, cpu, caps, global)?)
            } else {
                None
            };
            cpus.slots.push(slot, GFP_KERNEL)?;
            cpus.launch_ns.push(0, GFP_KERNEL)?;
        }
        // Last look at the pool from the host side: once a CPU runs
        // deprivileged the pool is out of the host's reach.
        let stats = SetupStats {
            pool: pool.usage(),
            // SAFETY: no CPU is deprivileged yet; the state is ours alone.
            ept_tables: unsafe { (*global).host_ept_table_pages() },
        };
        let mut hv = Hypervisor {
            stats,
            cpus,
            hp_state: None,
            total_ns: 0,
            pool,
        };

        CPU_STATE.store(&raw mut *hv.cpus, Ordering::Release);
        // SAFETY: the callbacks and the name are static; registration calls
        // `cpu_online` on every online CPU and, if one fails, `cpu_offline`
        // on those already done, before returning the error.
        let rc = unsafe {
            bindings::__cpuhp_setup_state(
                bindings::cpuhp_state_CPUHP_AP_ONLINE_DYN,
                c"pkvm_x86:online".as_char_ptr(),
                true,
                Some(cpu_online),
                Some(cpu_offline),
                false,
            )
        };
        if rc < 0 {
            CPU_STATE.store(core::ptr::null_mut(), Ordering::Release);
            return Err(Error::from_errno(rc));
        }
        hv.hp_state = Some(rc);
        // SAFETY: ktime_get has no preconditions.
        hv.total_ns = unsafe { bindings::ktime_get() }.saturating_sub(t0) as u64;
        Ok(hv)
    }

    /// Number of deprivileged CPUs.
    pub(crate) fn cpus(&self) -> usize {
        self.cpus
            .slots
            .iter()
            .flatten()
            .filter(|s| s.launched)
            .count()
    }

    /// Time to deprivilege all CPUs, and the slowest single CPU, in ns.
    pub(crate) fn launch_times(&self) -> (u64, u64) {
        (
            self.total_ns,
            self.cpus.launch_ns.iter().copied().max().unwrap_or(0),
        )
    }

    /// Physical address of the pool's first page.
    pub(crate) fn pool_first_pa(&self) -> u64 {
        self.pool.first_pa()
    }

    /// Pages of the pool in use / in total, when the CPUs were launched.
    pub(crate) fn pool_usage(&self) -> (usize, usize) {
        self.stats.pool
    }

    /// Number of table pages of the host EPT, when the CPUs were launched.
    pub(crate) fn ept_table_pages(&self) -> usize {
        self.stats.ept_tables
    }

    fn build_shared(
        caps: &VmxCaps,
        pool: &mut Pool,
        module: *mut bindings::module,
        debug: bool,
    ) -> Result<(Shared, *mut HypGlobal)> {
        let ept = crate::host_ept::build(pool.mm(), module)?;
        let eptp = Eptp::new_4level(ept.pgt().root(), false).0;
        let hyp_pgt = crate::hyp_pgt::build(pool, module)?;
        let host_cr3 = hyp_pgt.pgt().root();
        let mm: *mut HypMm = pool.mm();
        let global_pages = core::mem::size_of::<HypGlobal>().div_ceil(4096);
        let g = pool.alloc(global_pages)?;
        let global = g.ptr().cast::<HypGlobal>();
        // SAFETY: fresh pool pages large enough for a HypGlobal, ours alone.
        unsafe { HypGlobal::init_in_place(global, mm, ept, hyp_pgt, eptp, debug) };

        let bitmap = pool.alloc(1)?;
        // SAFETY: a fresh pool page of exactly MSR_BITMAP_SIZE bytes.
        let page = unsafe { &mut *bitmap.ptr().cast::<[u8; MSR_BITMAP_SIZE]>() };
        let mut b = MsrBitmap::new(page);
        b.clear_all();
        for rule in HOST_POLICY {
            b.apply(rule);
        }

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

        let controls = host_controls(caps).map_err(|e| {
            pr_err!("{}\n", format_args!("VMX controls not available: {e:?}"));
            Error::from_errno(-(bindings::EOPNOTSUPP as i32))
        })?;
        let shared = Shared {
            eptp,
            msr_bitmap_pa: bitmap.pa,
            idt_va: idt.va as u64,
            host_cr3,
            vpid: controls.vpid,
            pin: controls.pin,
            proc1: controls.proc1,
            proc2: controls.proc2,
            exit: controls.exit,
            entry: controls.entry,
            cr0_fixed: caps.cr0_fixed,
            cr4_fixed: caps.cr4_fixed,
        };
        Ok((shared, global))
    }

    fn new_slot(
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
}

impl Drop for Hypervisor {
    fn drop(&mut self) {
        if let Some(state) = self.hp_state.take() {
            // SAFETY: removes the state registered in `start`; calls
            // `cpu_offline` on every online CPU first.
            unsafe { bindings::__cpuhp_remove_state(state, true) };
        }
        CPU_STATE.store(core::ptr::null_mut(), Ordering::Release);
        if self.cpus.teardown_failed || self.cpus() != 0 {
            // A CPU may still use the pool: it must not go back to the host.
            pr_err!("a CPU is still deprivileged; leaking the hypervisor pool\n");
            core::mem::forget(core::mem::replace(&mut self.pool, Pool::empty()));
        }
    }
}

/// Runs on the CPU being torn down, interrupts off.
///
/// # Safety
///
/// `info` points at an `i32` the caller keeps alive; the CPU runs
/// deprivileged under this hypervisor.
unsafe extern "C" fn teardown_this_cpu(info: *mut c_void) {
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
unsafe extern "C" fn launch_on_this_cpu(info: *mut c_void) {
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
    w(CR0_GUEST_HOST_MASK, 0)?;
    w(CR0_READ_SHADOW, cr0)?;
    w(CR4_GUEST_HOST_MASK, CR4_VMXE)?;
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

    // Guest state: the CPU as it is now (computed by `hv::guest_state`).
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

/// Fills the root-mode GDT (null, 64-bit code, data, busy TSS) and TSS in
/// the page `gdt`.  The TSS's interrupt stacks (IST1-7) all point at
/// `ist_top`, a page of the pool: root mode never uses them (its IDT gates
/// have IST 0), but in the instant between TEARDOWN_CPU loading the host's
/// IDT and the host reloading its own TR, an NMI would take the host's
/// gate with this TSS, and must find a valid stack.
fn build_root_gdt_tss(gdt: &PoolPage, ist_top: u64) {
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

/// VM-exit counters of one CPU: index `r` is basic reason `r`, the last
/// slot the total.
pub(crate) type ExitCounts = [u64; crate::hv::exit::reason::MAX as usize + 2];

/// Runs on a deprivileged CPU: fetches its exit counters by hypercall.
///
/// # Safety
///
/// `info` points at an [`ExitCounts`] the caller keeps alive; the CPU runs
/// deprivileged under this hypervisor.
unsafe extern "C" fn exit_counts_this_cpu(info: *mut c_void) {
    // SAFETY: guaranteed by the caller.
    let out = unsafe { &mut *info.cast::<ExitCounts>() };
    let last = out.len() - 1;
    for (r, slot) in out.iter_mut().enumerate() {
        let arg = if r == last { u64::MAX } else { r as u64 };
        // SAFETY: EXIT_COUNT only reads hypervisor counters.
        *slot = unsafe { vmx::vmcall(nr::EXIT_COUNT, arg, 0, 0, 0) };
    }
}

/// The exit counters of deprivileged CPU `cpu`.
pub(crate) fn exit_counts(cpu: u32) -> Result<ExitCounts> {
    let mut out: ExitCounts = [0; crate::hv::exit::reason::MAX as usize + 2];
    // SAFETY: the callback runs on `cpu` before this returns; `out` lives.
    let rc = unsafe {
        bindings::smp_call_function_single(
            cpu as i32,
            Some(exit_counts_this_cpu),
            (&raw mut out).cast(),
            1,
        )
    };
    if rc != 0 {
        return Err(Error::from_errno(rc));
    }
    Ok(out)
}
