// SPDX-License-Identifier: GPL-2.0

//! The debug interface (module parameter `debug=1`, root only through
//! debugfs): `/sys/kernel/debug/pkvm_x86/debug/ctl` takes one command per
//! write and shows the result of the last one on read.  It drives the
//! page-state hypercalls on test pages the module allocates, and checks
//! from the host's side what the host can then read or write.
//!
//! Commands (I is a test-page index, G a guest frame number):
//!
//! ```text
//! alloc N              allocate N test pages (filled with a pattern)
//! read I | write I     touch page I with a fault-tolerant accessor
//! probe_pool           read the first hypervisor pool page the same way
//! pool_pa              physical address of the pool's first chunk (2 MiB)
//! reserve              the reserve for shadow state (RESERVE_STATUS: free,
//!                      wanted, total pages) and the first batch's frame
//! pool                 the hypervisor's pool (POOL_STATUS: free, total
//!                      pages, shortages), chunks the host half grew it by
//!                      and the first grown chunk's frame (0: none)
//! lookup I | lookup_pa PA   host EPT leaf of page I / of address PA
//! read_pa PA           read 8 bytes of physical address PA (MMIO) through
//!                      a fresh ioremap, fault-tolerant
//! donate_hyp I | undonate_hyp I | share_hyp I | unshare_hyp I
//! vm_create normal|protected     register a test VM (one metadata page)
//! share_guest I G | unshare_guest I G | donate_guest I G
//! guest_share_host G | guest_unshare_host G   (as the test VM would)
//! vm_teardown          tear the test VM down
//! check                run the ownership invariant checker
//! stack_guard CPU      root mode's page-table entries, on CPU, for the
//!                      guard page below its root-mode stack and for the
//!                      stack's lowest page (`guard=unmapped stack=mapped`)
//! nmi_test CPU N       send N NMIs to CPU one at a time; report how many
//!                      the host saw and how many hit root mode
//! fuzz N SEED          N hypercalls with hostile arguments on a scratch
//!                      arena, clean-up, then the invariant checker
//! nested_stats CPU | nested_stats_reset CPU
//!                      nested VMX counters of CPU (NESTED_STATS) and the
//!                      hypervisor's exits there (EXIT_COUNT); _reset
//!                      zeroes both after reading
//! nested_trace         the nested debug watch's trace (debug builds): the
//!                      dump frozen at a guest #PF at RIP 0 and the ring of
//!                      vmcs02 entries/exits (Documentation/nested.rst)
//! nested_stress 0..4   nested VMX's stress mode off/on (debug builds):
//!                      every cached vmcs12 written back and dropped after
//!                      each VMX instruction and reflected exit (2: written
//!                      back and kept; 3: its page only read; 4: its page
//!                      rewritten unchanged); prints the previous setting
//! ```
//!
//! Results read back as one line: `ok ...` or `err <errno> ...`.  After
//! every transition each CPU flushes its host-EPT translations.

use core::ffi::c_void;
use core::fmt::Write;

use kernel::{bindings, prelude::*, sync::Mutex, uaccess::UserSliceReader};

use crate::arch::vmx;
use crate::hv::hypercall::hostile::Hostile;
use crate::hv::hypercall::{decode, nr};
use crate::hv::mm::ept::EptEntry;

extern "C" {
    fn pkvm_helper_pa(virt: *const c_void) -> u64;
    fn pkvm_helper_write_nofault(dst: *mut c_void, v: u64) -> i32;
    fn pkvm_helper_nmi_test(cpu: i32, n: i32) -> i32;
}

/// Runs NMIS_IN_ROOT on one CPU.
///
/// # Safety
///
/// `info` points at a live `u64`; the CPU runs deprivileged under pkvm.
unsafe extern "C" fn nmis_in_root_this_cpu(info: *mut c_void) {
    // SAFETY: guaranteed by the caller.
    unsafe { *info.cast::<u64>() = vmx::vmcall(nr::NMIS_IN_ROOT, 0, 0, 0, 0) };
}

fn nmis_in_root(cpu: u32) -> Result<u64> {
    let mut n = 0u64;
    // SAFETY: runs on `cpu` before this returns; `n` lives.
    let rc = unsafe {
        bindings::smp_call_function_single(
            cpu as i32,
            Some(nmis_in_root_this_cpu),
            (&raw mut n).cast(),
            1,
        )
    };
    if rc != 0 {
        return Err(Error::from_errno(rc));
    }
    Ok(n)
}

/// What `nested_stats` reads on one CPU: (NESTED_STATS selector, value)
/// pairs, then EXIT_COUNT of the hypervisor's own exits.
struct NestedStatsReq {
    /// Counters to read (NESTED_STATS selectors), their values after.
    sel: [(u64, u64); NESTED_SEL.len()],
    /// Hardware exits taken by the hypervisor on the CPU, by basic reason
    /// 23 VMREAD, 24 VMRESUME, 25 VMWRITE, then the total.
    exits: [u64; 4],
    /// Reflected exits by basic reason (selectors `0x100 + reason`).
    by_reason: [u64; 76],
    /// Reset the counters after reading.
    reset: bool,
}

/// The NESTED_STATS selectors `nested_stats` prints, with their names.
const NESTED_SEL: [(u64, &str); 76] = [
    (0, "entries"),
    (1, "l2_exits"),
    (2, "reflected"),
    (3, "kept"),
    (4, "protected"),
    (5, "failed_entries"),
    (6, "launches"),
    (7, "unexpected"),
    (8, "shadow_unsynced"),
    (9, "ept_faults"),
    (10, "ept_installs"),
    (0x100 + 10, "reflected_cpuid"),
    (0x100 + 30, "reflected_io"),
    (0x100 + 12, "reflected_hlt"),
    (0x100 + 2, "reflected_triple_fault"),
    (0x100, "reflected_exception"),
    (0x100 + 1, "reflected_ext_intr"),
    (0x100 + 7, "reflected_intr_window"),
    (0x100 + 28, "reflected_cr"),
    (0x100 + 31, "reflected_rdmsr"),
    (0x100 + 32, "reflected_wrmsr"),
    (0x100 + 44, "reflected_apic_access"),
    (0x100 + 48, "reflected_ept_violation"),
    (0x100 + 49, "reflected_ept_misconfig"),
    // The shadow EPTs' counters, hypervisor-wide, never reset
    // (`crate::hv::vmx::nested::shadow_ept::Stats`).
    (0x600, "sept_mapped"),
    (0x601, "sept_present"),
    (0x602, "sept_replaced"),
    (0x603, "sept_created"),
    (0x604, "sept_invalidated"),
    (0x605, "sept_kept"),
    (0x606, "sept_evicted"),
    (0x607, "sept_flushes"),
    (0x608, "sept_unshared"),
    (0x609, "sept_internal_errors"),
    (0x60a, "sept_reclaims"),
    (0x60b, "sept_mapped_bytes"),
    // The shadow EPT's cost (`crate::hyp::nested::cost`): TSC cycles and
    // count by class, hypervisor-wide, never reset.
    (0x610, "sept_cyc_fault_installed"),
    (0x611, "sept_n_fault_installed"),
    (0x612, "sept_cyc_fault_reflected"),
    (0x613, "sept_n_fault_reflected"),
    (0x614, "sept_cyc_fault_other"),
    (0x615, "sept_n_fault_other"),
    (0x616, "sept_cyc_invept_kept"),
    (0x617, "sept_n_invept_kept"),
    (0x618, "sept_cyc_invept_retired"),
    (0x619, "sept_n_invept_retired"),
    (0x61a, "sept_cyc_invept_none"),
    (0x61b, "sept_n_invept_none"),
    // The hypervisor pool's pages in use and in total.
    (0x620, "pool_used"),
    (0x621, "pool_total"),
    (0x60c, "sept_partial"),
    (0x60d, "sept_leaves_dropped"),
    (0x200, "pinned_frames"),
    // Root-mode cycles by phase (`crate::hyp::nested::phase`).
    (0x300, "cyc_root_all"),
    (0x301, "cyc_root_l2"),
    (0x302, "cyc_root_entry"),
    (0x303, "cyc_exit_readback"),
    (0x304, "cyc_exit_reflect"),
    (0x305, "cyc_exit_shadow"),
    (0x306, "cyc_entry_drain"),
    (0x307, "cyc_entry_checks"),
    (0x308, "cyc_entry_pages"),
    (0x309, "cyc_entry_build"),
    (0x30a, "cyc_entry_write"),
    (0x30b, "cyc_root_invvpid"),
    (0x30c, "cyc_root_xsetbv"),
    (0x30d, "cyc_root_vmx_other"),
    // The vmcs12 store's debug watch, hypervisor-wide (debug builds;
    // `crate::hv::vmx::nested::vmcs12::watch`).
    (0x500, "w_foreign_clear"),
    (0x501, "w_foreign_evict"),
    (0x502, "w_foreign_tags"),
    (0x503, "w_load_after_clear"),
    (0x504, "w_after_clear_tags"),
    (0x505, "w_rsp_checked"),
    (0x506, "w_rsp_host_changed"),
    (0x507, "w_rsp_host_old"),
    (0x508, "w_rsp_mismatch"),
];

/// Runs NESTED_STATS and EXIT_COUNT on one CPU.
///
/// # Safety
///
/// `info` points at a live `NestedStatsReq`; the CPU runs deprivileged.
unsafe extern "C" fn nested_stats_this_cpu(info: *mut c_void) {
    // SAFETY: guaranteed by the caller.
    let req = unsafe { &mut *info.cast::<NestedStatsReq>() };
    for s in req.sel.iter_mut() {
        // SAFETY: NESTED_STATS only reads counters.
        s.1 = unsafe { vmx::vmcall(nr::NESTED_STATS, s.0, 0, 0, 0) };
    }
    for (i, c) in req.by_reason.iter_mut().enumerate() {
        // SAFETY: as above.
        *c = unsafe { vmx::vmcall(nr::NESTED_STATS, 0x100 + i as u64, 0, 0, 0) };
    }
    if req.reset {
        // SAFETY: NESTED_STATS with a reset only reads a counter and then
        // zeroes this CPU's counters (selector 0: one that resets; the
        // hypervisor-wide ones from 0x500 do not).
        unsafe { vmx::vmcall(nr::NESTED_STATS, 0, 1, 0, 0) };
    }
    for (i, r) in [23u64, 24, 25, u64::MAX].iter().enumerate() {
        // SAFETY: EXIT_COUNT only reads a counter.
        req.exits[i] = unsafe { vmx::vmcall(nr::EXIT_COUNT, *r, 0, 0, 0) };
    }
    if req.reset {
        // SAFETY: EXIT_COUNT_RESET only zeroes this CPU's counters.
        unsafe { vmx::vmcall(nr::EXIT_COUNT_RESET, 0, 0, 0, 0) };
    }
}

/// Runs DEBUG_STACK_GUARD on one CPU.
///
/// # Safety
///
/// `info` points at a live `[u64; 2]`; the CPU runs deprivileged under pkvm.
unsafe extern "C" fn stack_guard_this_cpu(info: *mut c_void) {
    // SAFETY: the CPU runs deprivileged; the call only reads root mode's
    // page table.
    let (rax, rbx, _) = unsafe { vmx::vmcall3(nr::DEBUG_STACK_GUARD, 0, 0, 0, 0) };
    // SAFETY: guaranteed by the caller.
    unsafe { *info.cast::<[u64; 2]>() = [rax, rbx] };
}

/// Root mode's page-table entries for the guard page below `cpu`'s
/// root-mode stack and for the stack's lowest page.
fn stack_guard(cpu: u32) -> Result<(Result<u64, i64>, u64)> {
    let mut r = [0u64; 2];
    // SAFETY: runs on `cpu` before this returns; `r` lives.
    let rc = unsafe {
        bindings::smp_call_function_single(
            cpu as i32,
            Some(stack_guard_this_cpu),
            (&raw mut r).cast(),
            1,
        )
    };
    if rc != 0 {
        return Err(Error::from_errno(rc));
    }
    Ok((decode(r[0]), r[1]))
}

const PAGE: usize = 4096;
const MAX_TEST_PAGES: usize = 64;

/// A page the debug interface owns.
struct TestPage {
    va: usize,
    pa: u64,
}

/// State behind the `ctl` file.
pub(crate) struct DebugState {
    pages: KVec<TestPage>,
    meta: Option<TestPage>,
    vm: Option<u64>,
    pool_pa: u64,
    out: KVec<u8>,
}

/// A `fmt::Write` sink into a `KVec<u8>`.
struct Out<'a>(&'a mut KVec<u8>);

impl Write for Out<'_> {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        self.0
            .extend_from_slice(s.as_bytes(), GFP_KERNEL)
            .map_err(|_| core::fmt::Error)
    }
}

fn hc(call: u64, a0: u64, a1: u64, a2: u64, a3: u64) -> (Result<u64, i64>, u64, u64) {
    // SAFETY: every online CPU runs deprivileged while the module is
    // loaded; these calls only change page states.
    let (rax, rbx, rcx) = unsafe { vmx::vmcall3(call, a0, a1, a2, a3) };
    (decode(rax), rbx, rcx)
}

/// Runs FLUSH_HOST_EPT on one CPU.
///
/// # Safety
///
/// The CPU runs deprivileged under pkvm.
unsafe extern "C" fn flush_this_cpu(_info: *mut c_void) {
    // SAFETY: guaranteed by the caller.
    unsafe { vmx::vmcall(nr::FLUSH_HOST_EPT, 0, 0, 0, 0) };
}

impl DebugState {
    pub(crate) fn new(pool_pa: u64) -> Self {
        Self {
            pages: KVec::new(),
            meta: None,
            vm: None,
            pool_pa,
            out: KVec::new(),
        }
    }

    fn flush_all(&self) {
        let _hotplug = crate::host::cpu_caps::CpusReadGuard::new();
        for cpu in crate::host::cpu_caps::online_cpus() {
            // SAFETY: with hotplug held off every online CPU runs
            // deprivileged.
            unsafe {
                bindings::smp_call_function_single(
                    cpu as i32,
                    Some(flush_this_cpu),
                    core::ptr::null_mut(),
                    1,
                )
            };
        }
    }

    fn page(&self, i: &str) -> Result<&TestPage> {
        let i: usize = i.parse().map_err(|_| EINVAL)?;
        self.pages.get(i).ok_or(EINVAL)
    }

    fn alloc_page() -> Result<TestPage> {
        // SAFETY: plain page-allocator call; the result is checked.
        let va = unsafe { bindings::alloc_pages_exact_noprof(PAGE, bindings::GFP_KERNEL) };
        if va.is_null() {
            return Err(ENOMEM);
        }
        // SAFETY: `va` is a fresh direct-map page.
        let pa = unsafe { pkvm_helper_pa(va) };
        Ok(TestPage {
            va: va as usize,
            pa,
        })
    }

    /// `n` hypercalls with arguments a malicious host might pass: every
    /// page-state and debug call (and unknown numbers); frame numbers in a
    /// 32-page arena allocated for the run, in the hypervisor's pool,
    /// beyond RAM, or absurd; counts that stay inside the arena or
    /// overflow; random handles, kinds and guest frames.  Never ranges
    /// covering the host's own live memory: giving that away would only
    /// hurt the host, which it may.  Afterwards every VM the run created
    /// is torn down and every arena page brought home and freed.
    /// Returns (calls that succeeded, calls refused, arena pages that
    /// could not be brought home).
    fn fuzz(&mut self, n: u32, seed: u64) -> Result<(u32, u32, u32)> {
        const ARENA: usize = 32;
        // SAFETY: plain page-allocator call; the result is checked.
        let arena =
            unsafe { bindings::alloc_pages_exact_noprof(ARENA * PAGE, bindings::GFP_KERNEL) };
        if arena.is_null() {
            return Err(ENOMEM);
        }
        // SAFETY: a fresh direct-map allocation.
        let base = unsafe { pkvm_helper_pa(arena) } >> 12;
        // The pinned frames drawn are those of the pool's first chunk only:
        // the chunks are separate allocations, so the frames after the
        // first chunk can be the host's own (its kernel text, once), and
        // a host that donates those kills itself.
        let chunk_frames = (crate::host::pool::CHUNK / PAGE) as u64;
        let mut g = Hostile::new(seed, base, ARENA as u64, self.pool_pa >> 12, chunk_frames)
            .with_image(&crate::host::host_ept::image_frames());
        let own_vm = self.vm;
        let (mut ok, mut refused) = (0, 0);
        for _ in 0..n {
            let (call, a) = g.call();
            if call == nr::VM_TEARDOWN && Some(a[0]) == own_vm {
                continue;
            }
            let (r, _, _) = hc(call, a[0], a[1], a[2], a[3]);
            match r {
                Ok(_) => ok += 1,
                Err(_) => refused += 1,
            }
        }
        // Clean up: every VM but the interface's own, then the arena.
        for h in 0x1000..0x1000 + 255u64 {
            if Some(h) != own_vm {
                let _ = hc(nr::VM_TEARDOWN, h, 0, 0, 0);
            }
        }
        let mut stuck = 0;
        for i in 0..ARENA as u64 {
            let _ = hc(nr::HYP_DONATE_HOST, base + i, 1, 0, 0);
            let _ = hc(nr::HOST_UNSHARE_HYP, base + i, 1, 0, 0);
        }
        self.flush_all();
        for i in 0..ARENA {
            let mut v = 0u64;
            // SAFETY: fault-tolerant read of an arena page.
            let rc = unsafe {
                bindings::copy_from_kernel_nofault(
                    (&raw mut v).cast(),
                    arena.cast::<u8>().add(i * PAGE).cast(),
                    8,
                )
            };
            if rc != 0 {
                stuck += 1;
            }
        }
        if stuck == 0 {
            // SAFETY: the whole arena is the host's again and unused.
            unsafe { bindings::free_pages_exact(arena, ARENA * PAGE) };
        }
        Ok((ok, refused, stuck))
    }

    fn transition(&mut self, w: &mut Out<'_>, call: u64, args: [u64; 4]) -> Result {
        let (r, _, _) = hc(call, args[0], args[1], args[2], args[3]);
        self.flush_all();
        match r {
            Ok(v) => writeln!(w, "ok {v}").map_err(|_| ENOMEM),
            Err(e) => writeln!(w, "err {e}").map_err(|_| ENOMEM),
        }
    }

    fn run(&mut self, line: &str) -> Result {
        let mut out = KVec::new();
        let mut w = Out(&mut out);
        let mut words = line.split_whitespace();
        let cmd = words.next().ok_or(EINVAL)?;
        let arg1 = words.next().unwrap_or("");
        let arg2 = words.next().unwrap_or("");
        let gfn = |s: &str| s.parse::<u64>().map_err(|_| EINVAL);
        let fmt_err = |_| ENOMEM;
        match cmd {
            "alloc" => {
                let n: usize = arg1.parse().map_err(|_| EINVAL)?;
                if n == 0 || self.pages.len() + n > MAX_TEST_PAGES {
                    return Err(EINVAL);
                }
                write!(w, "ok").map_err(fmt_err)?;
                for _ in 0..n {
                    let p = Self::alloc_page()?;
                    let idx = self.pages.len();
                    // SAFETY: a fresh page we own.
                    unsafe { core::ptr::write_bytes(p.va as *mut u8, 0xa0 + idx as u8, PAGE) };
                    write!(w, " {idx}:{:#x}", p.pa).map_err(fmt_err)?;
                    self.pages.push(p, GFP_KERNEL)?;
                }
                writeln!(w).map_err(fmt_err)?;
            }
            "read" | "write" | "probe_pool" => {
                let va = if cmd == "probe_pool" {
                    // SAFETY: direct-map address of a physical address.
                    unsafe { crate::host::pool::direct_map(self.pool_pa) }
                } else {
                    self.page(arg1)?.va
                };
                let mut v: u64 = 0;
                // SAFETY: the nofault accessors survive any fault; `v` is a
                // live local of the size copied.
                let rc = unsafe {
                    if cmd == "write" {
                        v = 0x5a5a_5a5a_5a5a_5a5a;
                        i64::from(pkvm_helper_write_nofault(va as *mut c_void, v))
                    } else {
                        bindings::copy_from_kernel_nofault(
                            (&raw mut v).cast(),
                            va as *const c_void,
                            8,
                        ) as i64
                    }
                };
                if rc == 0 {
                    writeln!(w, "ok {v:#018x}").map_err(fmt_err)?;
                } else {
                    writeln!(w, "fault {rc}").map_err(fmt_err)?;
                }
            }
            "read_pa" => {
                // Reads 8 bytes of physical address PA (MMIO) through a
                // fresh ioremap, with a fault-tolerant accessor: the first
                // access to the host EPT's on-demand part maps it.
                let pa =
                    u64::from_str_radix(arg1.trim_start_matches("0x"), 16).map_err(|_| EINVAL)?;
                if pa & 7 != 0 {
                    return Err(EINVAL);
                }
                // SAFETY: ioremap checks the address; a null result is an
                // error, handled below.
                let va = unsafe { bindings::ioremap(pa, 8) };
                if va.is_null() {
                    return Err(ENOMEM);
                }
                let mut v = 0u64;
                // SAFETY: the nofault accessor survives any fault; `v` is a
                // live local of the size copied; `va` is unmapped once.
                let rc = unsafe {
                    let rc =
                        bindings::copy_from_kernel_nofault((&raw mut v).cast(), va.cast_const(), 8);
                    bindings::iounmap(va);
                    rc
                };
                if rc == 0 {
                    writeln!(w, "ok {v:#018x}").map_err(fmt_err)?;
                } else {
                    writeln!(w, "fault {rc}").map_err(fmt_err)?;
                }
            }
            "lookup" | "lookup_pa" => {
                let pa = if cmd == "lookup" {
                    self.page(arg1)?.pa
                } else {
                    u64::from_str_radix(arg1.trim_start_matches("0x"), 16).map_err(|_| EINVAL)?
                };
                let (r, level, _) = hc(nr::DEBUG_HOST_EPT_LOOKUP, pa, 0, 0, 0);
                match r {
                    Ok(e) => writeln!(w, "ok level={level} {:?}", EptEntry(e)).map_err(fmt_err)?,
                    Err(e) => writeln!(w, "err {e}").map_err(fmt_err)?,
                }
            }
            "donate_hyp" | "undonate_hyp" | "share_hyp" | "unshare_hyp" => {
                let pfn = self.page(arg1)?.pa >> 12;
                let call = match cmd {
                    "donate_hyp" => nr::HOST_DONATE_HYP,
                    "undonate_hyp" => nr::HYP_DONATE_HOST,
                    "share_hyp" => nr::HOST_SHARE_HYP,
                    _ => nr::HOST_UNSHARE_HYP,
                };
                self.transition(&mut w, call, [pfn, 1, 0, 0])?;
            }
            "vm_create" => {
                if self.vm.is_some() {
                    return Err(EBUSY);
                }
                let kind = match arg1 {
                    "normal" => 0,
                    "protected" => 1,
                    _ => return Err(EINVAL),
                };
                let meta = match self.meta.take() {
                    Some(m) => m,
                    None => Self::alloc_page()?,
                };
                let (r, _, _) = hc(nr::VM_CREATE, 0x7e57, kind, meta.pa >> 12, 1);
                self.flush_all();
                self.meta = Some(meta);
                match r {
                    Ok(h) => {
                        self.vm = Some(h);
                        writeln!(w, "ok handle={h:#x}").map_err(fmt_err)?;
                    }
                    Err(e) => writeln!(w, "err {e}").map_err(fmt_err)?,
                }
            }
            "vm_teardown" => {
                let h = self.vm.ok_or(ENOENT)?;
                let (r, _, _) = hc(nr::VM_TEARDOWN, h, 0, 0, 0);
                self.flush_all();
                match r {
                    Ok(_) => {
                        self.vm = None;
                        writeln!(w, "ok").map_err(fmt_err)?;
                    }
                    Err(e) => writeln!(w, "err {e}").map_err(fmt_err)?,
                }
            }
            "share_guest" | "unshare_guest" | "donate_guest" => {
                let h = self.vm.ok_or(ENOENT)?;
                let pfn = self.page(arg1)?.pa >> 12;
                let call = match cmd {
                    "share_guest" => nr::HOST_SHARE_GUEST,
                    "unshare_guest" => nr::HOST_UNSHARE_GUEST,
                    _ => nr::HOST_DONATE_GUEST,
                };
                self.transition(&mut w, call, [h, pfn, gfn(arg2)?, 1])?;
            }
            "guest_share_host" | "guest_unshare_host" => {
                let h = self.vm.ok_or(ENOENT)?;
                let call = if cmd == "guest_share_host" {
                    nr::DEBUG_GUEST_SHARE_HOST
                } else {
                    nr::DEBUG_GUEST_UNSHARE_HOST
                };
                self.transition(&mut w, call, [h, gfn(arg1)?, 1, 0])?;
            }
            "nmi_test" => {
                let cpu: u32 = arg1.parse().map_err(|_| EINVAL)?;
                let n: i32 = arg2.parse().map_err(|_| EINVAL)?;
                if !(1..=10_000).contains(&n) {
                    return Err(EINVAL);
                }
                let before = nmis_in_root(cpu)?;
                // SAFETY: process context; the helper checks its arguments.
                let seen = unsafe { pkvm_helper_nmi_test(cpu as i32, n) };
                if seen < 0 {
                    return Err(Error::from_errno(seen));
                }
                let in_root = nmis_in_root(cpu)?.wrapping_sub(before);
                writeln!(w, "ok sent={n} seen={seen} in_root={in_root}").map_err(fmt_err)?;
            }
            "nested_stats" | "nested_stats_reset" => {
                let cpu: u32 = arg1.parse().map_err(|_| EINVAL)?;
                let mut req = NestedStatsReq {
                    sel: [(0, 0); NESTED_SEL.len()],
                    exits: [0; 4],
                    by_reason: [0; 76],
                    reset: cmd == "nested_stats_reset",
                };
                for (s, (n, _)) in req.sel.iter_mut().zip(NESTED_SEL.iter()) {
                    s.0 = *n;
                }
                // SAFETY: runs on `cpu` before this returns; `req` lives.
                let rc = unsafe {
                    bindings::smp_call_function_single(
                        cpu as i32,
                        Some(nested_stats_this_cpu),
                        (&raw mut req).cast(),
                        1,
                    )
                };
                if rc != 0 {
                    return Err(Error::from_errno(rc));
                }
                write!(w, "ok").map_err(fmt_err)?;
                for ((_, v), (_, name)) in req.sel.iter().zip(NESTED_SEL.iter()) {
                    write!(w, " {name}={v}").map_err(fmt_err)?;
                }
                write!(w, " reflected_by_reason=").map_err(fmt_err)?;
                let mut sep = "";
                for (r, c) in req.by_reason.iter().enumerate() {
                    if *c != 0 {
                        write!(w, "{sep}{r}:{c}").map_err(fmt_err)?;
                        sep = ",";
                    }
                }
                let [vmread, vmresume, vmwrite, total] = req.exits;
                writeln!(
                    w,
                    " hv_vmread={vmread} hv_vmresume={vmresume} hv_vmwrite={vmwrite} hv_exits={total}"
                )
                .map_err(fmt_err)?;
            }
            "nested_trace" => {
                // The vmcs12 store's debug watch: the frozen dump and the
                // ring of vmcs02 entries/exits (debug builds).
                write!(w, "ok dump").map_err(fmt_err)?;
                for i in 0..32u64 {
                    // SAFETY: NESTED_STATS selectors 0x900.. only read.
                    let v = unsafe { vmx::vmcall(nr::NESTED_STATS, 0x900 + i, 0, 0, 0) };
                    write!(w, " {v:#x}").map_err(fmt_err)?;
                }
                writeln!(w).map_err(fmt_err)?;
                for slot in 0..32u64 {
                    write!(w, "ring{slot}").map_err(fmt_err)?;
                    for k in 0..6u64 {
                        // SAFETY: NESTED_STATS selectors 0xa00.. only read.
                        let v =
                            unsafe { vmx::vmcall(nr::NESTED_STATS, 0xa00 + slot * 6 + k, 0, 0, 0) };
                        write!(w, " {v:#x}").map_err(fmt_err)?;
                    }
                    writeln!(w).map_err(fmt_err)?;
                }
            }
            "nested_stress" => {
                let on: u64 = arg1.parse().map_err(|_| EINVAL)?;
                // 2: written back but kept (selector 0x401); 3: the pages
                // only read (0x402); 4: rewritten unchanged (0x403).
                let (sel, arg) = match on {
                    0 | 1 => (0x400, on),
                    2 => (0x401, 1),
                    3 => (0x402, 1),
                    4 => (0x403, 1),
                    _ => return Err(EINVAL),
                };
                // SAFETY: NESTED_STATS selectors 0x400/0x401 only set the
                // stress flag of nested VMX (debug builds; u64::MAX
                // otherwise).
                let prev = unsafe { vmx::vmcall(nr::NESTED_STATS, sel, arg, 0, 0) };
                if prev == u64::MAX {
                    return Err(EINVAL);
                }
                writeln!(w, "ok nested_stress={on} was={prev}").map_err(fmt_err)?;
            }
            "stack_guard" => {
                let cpu: u32 = arg1.parse().map_err(|_| EINVAL)?;
                let mapped = |e: u64| if e & 1 != 0 { "mapped" } else { "unmapped" };
                match stack_guard(cpu)? {
                    (Ok(guard), stack) => writeln!(
                        w,
                        "ok guard={} stack={} ({guard:#x} {stack:#x})",
                        mapped(guard),
                        mapped(stack)
                    )
                    .map_err(fmt_err)?,
                    (Err(e), _) => writeln!(w, "err {e}").map_err(fmt_err)?,
                }
            }
            "fuzz" => {
                let n: u32 = arg1.parse().map_err(|_| EINVAL)?;
                let seed: u64 = arg2.parse().map_err(|_| EINVAL)?;
                if !(1..=100_000).contains(&n) {
                    return Err(EINVAL);
                }
                let (ok, errs, stuck) = self.fuzz(n, seed)?;
                let (r, kind, addr) = hc(nr::DEBUG_CHECK_INVARIANTS, 0, 0, 0, 0);
                match r {
                    Ok(_) if stuck == 0 => writeln!(
                        w,
                        "ok calls={n} succeeded={ok} refused={errs} invariants hold, arena back"
                    )
                    .map_err(fmt_err)?,
                    Ok(_) => writeln!(w, "err stuck={stuck}: arena pages not brought home")
                        .map_err(fmt_err)?,
                    Err(e) => writeln!(
                        w,
                        "err {e} after {n} calls: violation kind {kind} at {addr:#x}"
                    )
                    .map_err(fmt_err)?,
                }
            }
            "pool_pa" => writeln!(w, "ok {:#x}", self.pool_pa).map_err(fmt_err)?,
            "reserve" => {
                let st = crate::host::reserve::status()?;
                let first = crate::host::reserve::first_batch_pa();
                writeln!(
                    w,
                    "ok free={} wanted={} total={} first_pfn={:#x}",
                    st.free,
                    st.wanted,
                    st.total,
                    first >> 12
                )
                .map_err(fmt_err)?;
            }
            "pool" => {
                let st = crate::host::reserve::pool_status()?;
                let first = crate::host::reserve::first_chunk_pa();
                writeln!(
                    w,
                    "ok free={} total={} shortages={} grown={} first_grown_pfn={:#x}",
                    st.free,
                    st.total,
                    st.shortages,
                    crate::host::reserve::pool_grown(),
                    first >> 12
                )
                .map_err(fmt_err)?;
            }
            "check" => {
                let (r, kind, addr) = hc(nr::DEBUG_CHECK_INVARIANTS, 0, 0, 0, 0);
                match r {
                    Ok(_) => writeln!(w, "ok invariants hold").map_err(fmt_err)?,
                    Err(e) => writeln!(w, "err {e} violation kind {kind} at {addr:#x}")
                        .map_err(fmt_err)?,
                }
            }
            _ => return Err(EINVAL),
        }
        self.out = out;
        Ok(())
    }
}

impl Drop for DebugState {
    fn drop(&mut self) {
        // The debugfs files drop before the hypervisor (see PkvmX86), so
        // hypercalls still work here: give back what can be given back,
        // then free.
        if let Some(h) = self.vm.take() {
            let _ = hc(nr::VM_TEARDOWN, h, 0, 0, 0);
        }
        for (i, p) in self.pages.iter().enumerate() {
            // Whatever state it is in, try to bring it home; a page the
            // host cannot get back is leaked rather than freed.
            let pfn = p.pa >> 12;
            let _ = hc(nr::HYP_DONATE_HOST, pfn, 1, 0, 0);
            let _ = hc(nr::HOST_UNSHARE_HYP, pfn, 1, 0, 0);
            self.flush_all();
            let mut v = 0u64;
            // SAFETY: fault-tolerant read of a page we allocated.
            let readable = unsafe {
                bindings::copy_from_kernel_nofault((&raw mut v).cast(), p.va as *const c_void, 8)
            } == 0;
            if readable {
                // SAFETY: our page, readable again, no longer used.
                unsafe { bindings::free_pages_exact(p.va as *mut c_void, PAGE) };
            } else {
                pr_warn!("debug: test page {} still not the host's; leaking it\n", i);
            }
        }
        if let Some(m) = self.meta.take() {
            let mut v = 0u64;
            // SAFETY: as above.
            let readable = unsafe {
                bindings::copy_from_kernel_nofault((&raw mut v).cast(), m.va as *const c_void, 8)
            } == 0;
            if readable {
                // SAFETY: as above.
                unsafe { bindings::free_pages_exact(m.va as *mut c_void, PAGE) };
            }
        }
    }
}

/// Parses and runs one command written to `ctl`.
pub(crate) fn write_ctl(state: &Mutex<DebugState>, reader: &mut UserSliceReader) -> Result {
    let mut buf = [0u8; 96];
    let n = reader.len();
    if n == 0 || n > buf.len() {
        return Err(EINVAL);
    }
    reader.read_slice(&mut buf[..n])?;
    let line = core::str::from_utf8(&buf[..n]).map_err(|_| EINVAL)?;
    state.lock().run(line.trim())
}

/// Shows the result of the last command.
pub(crate) fn read_ctl(
    state: &Mutex<DebugState>,
    f: &mut core::fmt::Formatter<'_>,
) -> core::fmt::Result {
    let s = state.lock();
    f.write_str(core::str::from_utf8(&s.out).unwrap_or("?\n"))
}
