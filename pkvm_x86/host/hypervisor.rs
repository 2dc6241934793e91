// SPDX-License-Identifier: GPL-2.0

//! The running hypervisor, host side: [`Hypervisor`] takes the pool, builds
//! the shared structures (host EPT, root page table, MSR bitmap, root IDT),
//! prepares every possible CPU, and registers the CPU-hotplug state whose
//! callbacks deprivilege each CPU; dropping it gives root mode back.
//!
//! Bring-up runs through a dynamic CPU-hotplug state: its online callback
//! deprivileges each online CPU at load and each CPU that comes online
//! later, on that CPU with interrupts off.  Its offline callback refuses
//! (`EBUSY`) to let a deprivileged CPU go offline: no CPU leaves VMX
//! operation alone.  Root mode goes back to the host only in one
//! coordinated teardown of every CPU ([`Hypervisor::teardown_all`]):
//! BEGIN_TEARDOWN (refused while a VM exists), then TEARDOWN_CPU on every
//! deprivileged CPU at once; root mode scrubs its memory before any CPU
//! returns.  A failure on any CPU at load tears down every CPU already
//! deprivileged that way and fails the load.  See
//! Documentation/deprivilege.rst.

use core::sync::atomic::{AtomicI32, AtomicPtr, Ordering};

use kernel::{bindings, prelude::*};

use super::cpu_setup::CpuSlot;
use super::launch::{launch_on_this_cpu, teardown_this_cpu, LaunchArgs, Shared, TeardownArgs};
use super::pool::Pool;
use crate::hv::host_policy::{host_controls, MSR_INTERCEPTS};
use crate::hv::mm::ept::Eptp;
use crate::hv::vmx::caps::{RawVmxInfo, VmxCaps};
use crate::hv::vmx::msr_bitmap::{MsrBitmap, MSR_BITMAP_SIZE};
use crate::hv::vmx::vmcs::instruction_error_name;
use crate::hyp::global::HypGlobal;
use crate::hyp::mm::HypMm;

/// Per-CPU launch state, reached from the CPU-hotplug callbacks.
struct CpuState {
    shared: Shared,
    /// Indexed by CPU number; `Some` for every possible CPU.
    slots: KVec<Option<CpuSlot>>,
    /// Nanoseconds the last launch of each CPU took.
    launch_ns: KVec<u64>,
    /// How many times each CPU was launched (VMLAUNCH in place).
    launches: KVec<u32>,
    /// A CPU could not leave VMX operation: the pool must not go back.
    teardown_failed: bool,
    /// Tests: refuse to deprivilege this CPU (module parameter).
    fail_cpu: Option<u32>,
    /// The hotplug state is being registered or removed: the offline
    /// callback does nothing (the coordinated teardown follows).
    bulk: bool,
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
    /// The host half of the reserve for shadow state: filled once every
    /// CPU runs deprivileged, refilled by its work, its pages given back
    /// after every CPU has left VMX operation.
    reserve: KBox<super::reserve::Donor>,
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

/// A CPU that is present but not online, if any.
fn offline_present_cpu() -> Option<u32> {
    // SAFETY: static cpumasks that live forever.
    let (present, online) = unsafe {
        (
            kernel::cpumask::Cpumask::from_raw(&raw const bindings::__cpu_present_mask),
            kernel::cpumask::Cpumask::from_raw(&raw const bindings::__cpu_online_mask),
        )
    };
    let _hotplug = crate::host::cpu_caps::CpusReadGuard::new();
    (0..kernel::cpu::nr_cpu_ids()).find(|&c| {
        kernel::cpu::CpuId::from_u32(c).is_some_and(|id| present.test(id) && !online.test(id))
    })
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
    let n = st.launches.get_mut(cpu as usize).map_or(0, |n| {
        *n += 1;
        *n
    });
    // Tests count these: parking and restarting a CPU is not a launch.
    pr_info!("{}\n", format_args!("cpu{cpu}: deprivileged (launch {n})"));
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
    if !slot.launched || st.bulk {
        return 0;
    }
    // The CPU does not leave VMX operation: it dies in non-root operation
    // (the kernel's play_dead), the host's INIT parks it in the
    // wait-for-SIPI state, and the SIPI that brings it back starts the
    // host's trampoline in non-root operation (`crate::hyp::exit_handler`).
    // It stays `launched`; `cpu_online` has nothing to do for it.
    pr_info!(
        "cpu{}: going offline; parked in VMX non-root operation\n",
        cpu
    );
    0
}

impl Hypervisor {
    /// Deprivileges every online CPU, and every CPU that comes online
    /// later, until dropped.  The pool starts at `pool_bytes` and the
    /// host half grows it on demand up to `pool_max_bytes`.
    // One argument per load-time setting (module parameters, probe
    // results): a struct would only rename them.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn start(
        caps: &VmxCaps,
        raw: &RawVmxInfo,
        pool_bytes: usize,
        pool_max_bytes: usize,
        module: *mut bindings::module,
        debug: bool,
        fail_cpu: Option<u32>,
        nested_ept: bool,
    ) -> Result<Self> {
        if !CPU_STATE.load(Ordering::Acquire).is_null() {
            return Err(EBUSY);
        }
        // An offline CPU is parked in non-root operation by INIT/SIPI
        // emulation, which needs the wait-for-SIPI activity state.
        if caps.misc & (1 << 8) == 0 {
            pr_err!("the CPU has no wait-for-SIPI activity state (IA32_VMX_MISC bit 8)\n");
            return Err(Error::from_errno(-(bindings::EOPNOTSUPP as i32)));
        }
        // A present CPU that is offline now would be started later by the
        // host in full privilege (INIT/SIPI reach it outside VMX): it
        // cannot be brought under the hypervisor from a loaded module.
        if let Some(cpu) = offline_present_cpu() {
            pr_err!(
                "cpu{}: present but offline; online every CPU before loading pkvm_x86\n",
                cpu
            );
            return Err(EBUSY);
        }
        // Per-CPU state the hypervisor keeps in fixed tables (the teardown
        // rendezvous, and nested VMX's pins: one vmcs02 per CPU, at most
        // `PINS_PER_VMCS02` frames each, so the pin set can never fill) is
        // sized for this many CPU numbers.
        let max = crate::hyp::global::MAX_TEARDOWN_CPUS;
        if kernel::cpu::nr_cpu_ids() as usize > max {
            pr_err!(
                "{}\n",
                format_args!(
                    "{} possible CPU numbers; pkvm_x86 supports {max}",
                    kernel::cpu::nr_cpu_ids()
                )
            );
            return Err(Error::from_errno(-(bindings::EOPNOTSUPP as i32)));
        }
        // SAFETY: ktime_get has no preconditions.
        let t0 = unsafe { bindings::ktime_get() };
        let mut pool = Pool::new(pool_bytes)?;
        // The VMX view offered to the host (nested VMX), the same on every
        // CPU: every CPU has the same capabilities (checked at probe).  EPT
        // and unrestricted guest unless `nested_ept=0`.
        let Some(view) = crate::hv::vmx::nested::offer::offer_with(raw, nested_ept) else {
            pr_err!("cannot compute the VMX view offered to the host\n");
            return Err(Error::from_errno(-(bindings::EOPNOTSUPP as i32)));
        };
        let (shared, global) = Self::build_shared(caps, view, &mut pool, module, debug)?;
        let mut cpus = KBox::new(
            CpuState {
                shared,
                slots: KVec::new(),
                launch_ns: KVec::new(),
                launches: KVec::new(),
                teardown_failed: false,
                fail_cpu,
                bulk: true,
            },
            GFP_KERNEL,
        )?;
        // Every possible CPU gets its pages now: once a CPU runs
        // deprivileged, the host cannot write the pool any more.
        for cpu in 0..kernel::cpu::nr_cpu_ids() {
            let slot = if crate::host::cpu_caps::is_possible(cpu) {
                Some(super::cpu_setup::new_slot(&mut pool, cpu, caps, global)?)
            } else {
                None
            };
            cpus.slots.push(slot, GFP_KERNEL)?;
            cpus.launch_ns.push(0, GFP_KERNEL)?;
            cpus.launches.push(0, GFP_KERNEL)?;
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
            reserve: KBox::new(super::reserve::Donor::new(pool_max_bytes), GFP_KERNEL)?,
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
        hv.cpus.bulk = false;
        if rc < 0 {
            CPU_STATE.store(core::ptr::null_mut(), Ordering::Release);
            // The CPUs already deprivileged leave together (the pool is
            // kept, by `drop`, if they cannot).
            hv.teardown_all();
            return Err(Error::from_errno(rc));
        }
        hv.hp_state = Some(rc);
        // SAFETY: ktime_get has no preconditions.
        hv.total_ns = unsafe { bindings::ktime_get() }.saturating_sub(t0) as u64;
        // The reserve for shadow state (nested VMX's vmcs12 cache): filled
        // now, refilled by the work from here on.  Without it the load
        // fails (`drop` tears every CPU down).
        match hv.reserve.start() {
            Ok(st) => pr_info!(
                "{}\n",
                format_args!(
                    "reserve for shadow state: {} pages ({} free)",
                    st.total, st.free
                )
            ),
            Err(e) => {
                pr_err!("cannot fill the reserve for shadow state: {:?}\n", e);
                return Err(e);
            }
        }
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
    #[cfg(pkvm_debug)]
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
        view: RawVmxInfo,
        pool: &mut Pool,
        module: *mut bindings::module,
        debug: bool,
    ) -> Result<(Shared, *mut HypGlobal)> {
        let (ept, lazy) = crate::host::host_ept::build(pool.mm(), module)?;
        let eptp = Eptp::new_4level(ept.pgt().root().raw(), false).0;
        let hyp_pgt = crate::host::hyp_pgt::build(pool, module)?;
        let host_cr3 = hyp_pgt.pgt().root().raw();
        let mm: *mut HypMm = pool.mm();
        let global_pages = core::mem::size_of::<HypGlobal>().div_ceil(4096);
        let g = pool.alloc(global_pages)?;
        let global = g.ptr().cast::<HypGlobal>();
        // SAFETY: fresh pool pages large enough for a HypGlobal, ours alone.
        unsafe {
            HypGlobal::init_in_place(global, mm, ept, lazy, hyp_pgt, eptp, debug, view, *caps)
        };

        let bitmap = pool.alloc(1)?;
        // SAFETY: a fresh pool page of exactly MSR_BITMAP_SIZE bytes.
        let page = unsafe { &mut *bitmap.ptr().cast::<[u8; MSR_BITMAP_SIZE]>() };
        let mut b = MsrBitmap::new(page);
        b.clear_all();
        for rule in MSR_INTERCEPTS {
            b.apply(rule);
        }
        // SAFETY: no CPU is deprivileged yet; nothing else uses the state.
        unsafe { (*global).hv_msr_bitmap_va = bitmap.va as u64 };

        let idt = super::cpu_setup::build_root_idt(pool)?;

        let controls = host_controls(caps).map_err(|e| {
            pr_err!("{}\n", format_args!("VMX controls not available: {e:?}"));
            Error::from_errno(-(bindings::EOPNOTSUPP as i32))
        })?;
        let shared = Shared {
            eptp,
            msr_bitmap_pa: bitmap.pa,
            idt_va: idt.va as u64,
            host_cr3,
            controls,
            cr0_fixed: caps.cr0_fixed,
            cr4_fixed: caps.cr4_fixed,
        };
        Ok((shared, global))
    }
}

impl Hypervisor {
    /// Brings every parked CPU (deprivileged, offline) online; returns
    /// those it brought up.
    fn online_parked(&mut self) -> KVec<u32> {
        let mut up = KVec::new();
        // SAFETY: `__cpu_online_mask` is a static cpumask that lives forever.
        let online =
            unsafe { kernel::cpumask::Cpumask::from_raw(&raw const bindings::__cpu_online_mask) };
        for (cpu, slot) in self.cpus.slots.iter().enumerate() {
            let cpu = cpu as u32;
            if !slot.as_ref().is_some_and(|s| s.launched) {
                continue;
            }
            if kernel::cpu::CpuId::from_u32(cpu).is_some_and(|id| online.test(id)) {
                continue;
            }
            // SAFETY: process context, no hotplug lock held.
            let rc = unsafe { bindings::add_cpu(cpu) };
            if rc == 0 {
                let _ = up.push(cpu, GFP_KERNEL);
            } else {
                pr_err!("cpu{}: parked, could not bring it online ({})\n", cpu, rc);
            }
        }
        up
    }

    /// The coordinated teardown: BEGIN_TEARDOWN, then TEARDOWN_CPU on every
    /// deprivileged CPU at once (they meet in root mode, the last to come
    /// scrubs the hypervisor's memory, all leave together).  Marks what
    /// failed in `teardown_failed`; CPUs that could not leave stay
    /// deprivileged (and the pool is then never given back).
    fn teardown_all(&mut self) {
        if self.cpus() == 0 {
            return;
        }
        // No CPU comes or goes meanwhile.
        let _hotplug = crate::host::cpu_caps::CpusReadGuard::new();
        let mut launched = KVec::new();
        let mut results = KVec::new();
        for s in self.cpus.slots.iter() {
            let l = s.as_ref().is_some_and(|s| s.launched);
            if launched.push(l, GFP_KERNEL).is_err()
                || results.push(AtomicI32::new(-1), GFP_KERNEL).is_err()
            {
                pr_err!("teardown: out of memory; CPUs stay deprivileged\n");
                self.cpus.teardown_failed = true;
                return;
            }
        }
        let Some(first) = launched.iter().position(|&l| l) else {
            return;
        };
        if let Err(e) = super::hyp_client::begin_teardown(first as u32) {
            pr_err!(
                "{}\n",
                format_args!(
                    "teardown refused ({e:?}): a VM still exists; every CPU stays deprivileged"
                )
            );
            self.cpus.teardown_failed = true;
            return;
        }
        let mut args = TeardownArgs {
            launched: &launched,
            results: &results,
        };
        // SAFETY: runs `teardown_this_cpu` on every online CPU at once
        // (each deprivileged CPU is online: offlining them is refused) and
        // waits for all; `args` outlives the call.
        unsafe {
            bindings::on_each_cpu_cond_mask(
                None,
                Some(teardown_this_cpu),
                (&raw mut args).cast(),
                true,
                &raw const bindings::__cpu_online_mask,
            )
        };
        let st = &mut *self.cpus;
        for (cpu, (slot, r)) in st.slots.iter_mut().zip(results.iter()).enumerate() {
            let Some(slot) = slot.as_mut().filter(|s| s.launched) else {
                continue;
            };
            let r = r.load(Ordering::Acquire);
            if r == 0 {
                slot.launched = false;
            } else {
                pr_err!("{}\n", format_args!("cpu{cpu}: teardown failed ({r})"));
                st.teardown_failed = true;
            }
        }
    }
}

impl Drop for Hypervisor {
    fn drop(&mut self) {
        // No more donations: the page states are about to freeze.
        super::reserve::stop_refill();
        if let Some(state) = self.hp_state.take() {
            self.cpus.bulk = true;
            // SAFETY: removes the state registered in `start`; its
            // `cpu_offline` calls do nothing (`bulk`).
            unsafe { bindings::__cpuhp_remove_state(state, true) };
        }
        CPU_STATE.store(core::ptr::null_mut(), Ordering::Release);
        // Parked (offline) CPUs are under the hypervisor too: bring them
        // online (INIT/SIPI, emulated) so that they join the teardown,
        // then give them back offline, natively.
        let parked = self.online_parked();
        self.teardown_all();
        for cpu in parked.iter().copied() {
            // SAFETY: process context (module exit), no hotplug lock held.
            let rc = unsafe { bindings::remove_cpu(cpu) };
            if rc != 0 {
                pr_warn!("cpu{}: could not take it offline again ({})\n", cpu, rc);
            }
        }
        if self.cpus.teardown_failed || self.cpus() != 0 {
            // A CPU may still use the pool: it must not go back to the host.
            pr_err!("a CPU is still deprivileged; leaking the hypervisor pool\n");
            core::mem::forget(core::mem::replace(&mut self.pool, Pool::empty()));
            self.reserve.leak();
        }
    }
}
