// SPDX-License-Identifier: GPL-2.0

//! Hypervisor-wide state, in pool memory: the host EPT, the hypervisor's
//! page-table bookkeeping, the shadow-VM table, and the page-state
//! hypercalls that change them.
//!
//! One lock covers all of it (the pure core's lock order — VM table, host
//! EPT, guest, hyp page table — is trivially respected by a single lock);
//! it is a spinlock taken only in root mode, where interrupts are off.
//!
//! After a change to the host EPT the calling CPU invalidates its own
//! EPT-derived translations.  Other CPUs are flushed by the host asking
//! each of them (FLUSH_HOST_EPT); until root mode can send its own IPIs, a
//! host that skips that step can keep a stale translation on another CPU
//! for a page it gave away.  Documentation/hypercalls.rst says so.

use core::sync::atomic::{AtomicU32, Ordering};

use super::mm::{HypMm, MAX_CHUNKS};
use crate::arch::vmx;
use crate::hv::error::Error;
use crate::hv::hypercall::{self, errno, nr, pfn_to_pa};
use crate::hv::mm::invariants::{self, Claim};
use crate::hv::mm::mem_protect::{self as mp, Gpa, HostEpt, Hpa, HypPgt, VmKind};
use crate::hv::mm::pgtable::PERM_RWX;
use crate::hv::mm::vm_table::VmTable;

/// Claims the invariant checker may record (its scratch space).
const CLAIMS: usize = 256;

/// The state.
pub struct HypGlobal {
    lock: AtomicU32,
    /// Debug hypercalls allowed (module parameter `debug`).
    pub debug: bool,
    /// EPT pointer of the host EPT (for INVEPT).
    pub host_eptp: u64,
    mm: *mut HypMm,
    host: HostEpt,
    hyp: HypPgt,
    vms: VmTable,
    /// The pool's chunks (physical base, size): hypervisor memory that is
    /// `OWNED` in its table but never goes back to the host while loaded.
    pinned: [(u64, u64); MAX_CHUNKS],
    nr_pinned: usize,
    claims: [Claim; CLAIMS],
}

/// The result of a hypercall: RAX, and optionally RBX / RCX.
pub struct HcResult {
    /// Value for RAX.
    pub rax: u64,
    /// Value for RBX, if the call returns one.
    pub rbx: Option<u64>,
    /// Value for RCX, if the call returns one.
    pub rcx: Option<u64>,
    /// The host EPT changed: flush this CPU's translations.
    pub flush: bool,
}

impl HcResult {
    fn val(rax: u64) -> Self {
        Self {
            rax,
            rbx: None,
            rcx: None,
            flush: false,
        }
    }
    fn from(r: Result<(), Error>, flush: bool) -> Self {
        match r {
            Ok(()) => Self {
                flush,
                ..Self::val(0)
            },
            Err(e) => Self::val(hypercall::err(i64::from(e.errno()))),
        }
    }
}

fn einval() -> HcResult {
    HcResult::val(hypercall::err(errno::EINVAL))
}

impl HypGlobal {
    /// Builds the state at `this`, in place (it is tens of KiB: too large
    /// to pass through the kernel stack), host side, before any CPU is
    /// deprivileged.
    ///
    /// # Safety
    ///
    /// `this` must be valid for writes of a `HypGlobal` and aligned.
    pub unsafe fn init_in_place(
        this: *mut Self,
        mm: *mut HypMm,
        host: HostEpt,
        hyp: HypPgt,
        host_eptp: u64,
        debug: bool,
    ) {
        use core::ptr::addr_of_mut;
        // SAFETY: the caller guarantees `this` is valid for writes; every
        // field is written once through raw pointers.
        unsafe {
            addr_of_mut!((*this).lock).write(AtomicU32::new(0));
            addr_of_mut!((*this).debug).write(debug);
            addr_of_mut!((*this).host_eptp).write(host_eptp);
            addr_of_mut!((*this).mm).write(mm);
            addr_of_mut!((*this).host).write(host);
            addr_of_mut!((*this).hyp).write(hyp);
            VmTable::init_in_place(addr_of_mut!((*this).vms));
            let pinned = addr_of_mut!((*this).pinned).cast::<(u64, u64)>();
            let mut n = 0;
            // SAFETY (of the dereference): `mm` is the live allocator.
            for (i, c) in (*mm).chunks().iter().enumerate().take(MAX_CHUNKS) {
                pinned.add(i).write((c.pa, 2 << 20));
                n = i + 1;
            }
            for i in n..MAX_CHUNKS {
                pinned.add(i).write((0, 0));
            }
            addr_of_mut!((*this).nr_pinned).write(n);
            let claims = addr_of_mut!((*this).claims).cast::<Claim>();
            for i in 0..CLAIMS {
                claims.add(i).write(Claim::default());
            }
        }
    }

    /// Table pages of the host EPT (host side, before launch).
    pub fn host_ept_table_pages(&mut self) -> usize {
        // SAFETY: as in `locked_call`; called before any CPU runs root mode.
        let mm = unsafe { &mut *self.mm };
        self.host.pgt().table_pages(mm).unwrap_or(0)
    }

    fn lock(&self) {
        while self
            .lock
            .compare_exchange_weak(0, 1, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            core::hint::spin_loop();
        }
    }

    fn unlock(&self) {
        self.lock.store(0, Ordering::Release);
    }

    /// Handles a page-state or debug hypercall `call` with arguments
    /// `a` (RBX, RCX, RDX, RSI).  `None` if `call` is not one of them.
    pub fn hypercall(&mut self, call: u64, a: [u64; 4]) -> Option<HcResult> {
        let debug_only = matches!(
            call,
            nr::DEBUG_HOST_EPT_LOOKUP
                | nr::DEBUG_GUEST_SHARE_HOST
                | nr::DEBUG_GUEST_UNSHARE_HOST
                | nr::DEBUG_CHECK_INVARIANTS
        );
        if !matches!(call, 0x10..=0x13 | 0x20..=0x24) && !debug_only {
            return None;
        }
        if debug_only && !self.debug {
            return Some(HcResult::val(hypercall::err(errno::EPERM)));
        }
        self.lock();
        let r = self.locked_call(call, a);
        self.unlock();
        if r.flush {
            // SAFETY: root mode; INVEPT single-context is a required feature.
            let _ = unsafe { vmx::invept(vmx::InveptType::SingleContext, self.host_eptp) };
        }
        Some(r)
    }

    fn locked_call(&mut self, call: u64, a: [u64; 4]) -> HcResult {
        // SAFETY: `mm` points at the allocator in the pool, set up before
        // the hypervisor started; the lock makes this the only user.
        let mm = unsafe { &mut *self.mm };
        let Self {
            host,
            hyp,
            vms,
            pinned,
            nr_pinned,
            ..
        } = self;
        let pa = |pfn| pfn_to_pa(pfn).and_then(Hpa::new);
        let gpa_of = |gfn| pfn_to_pa(gfn).and_then(Gpa::new);
        match call {
            nr::HOST_DONATE_HYP
            | nr::HYP_DONATE_HOST
            | nr::HOST_SHARE_HYP
            | nr::HOST_UNSHARE_HYP => {
                let Some(p) = pa(a[0]) else { return einval() };
                // Direct calls, not a function pointer: root-mode code
                // makes no indirect calls (scripts/audit-root-calls.py).
                let r = match call {
                    nr::HOST_DONATE_HYP => mp::host_donate_hyp(host, hyp, mm, p, a[1]),
                    nr::HYP_DONATE_HOST => {
                        let pinned = pinned.get(..*nr_pinned).unwrap_or(&[]);
                        vms.return_to_host(host, hyp, mm, p, a[1], pinned)
                    }
                    nr::HOST_SHARE_HYP => mp::host_share_hyp(host, hyp, mm, p, a[1]),
                    _ => mp::host_unshare_hyp(host, hyp, mm, p, a[1]),
                };
                HcResult::from(r, true)
            }
            nr::VM_CREATE => {
                let kind = match a[1] {
                    0 => VmKind::Normal,
                    1 => VmKind::Protected,
                    _ => return einval(),
                };
                let Some(meta) = pa(a[2]) else {
                    return einval();
                };
                match vms.create(host, hyp, mm, a[0], kind, meta, a[3], 3) {
                    Ok(h) => HcResult {
                        flush: true,
                        ..HcResult::val(u64::from(h.raw()))
                    },
                    Err(e) => HcResult::from(Err(e), false),
                }
            }
            nr::VM_TEARDOWN => {
                let Ok(h) = u32::try_from(a[0]) else {
                    return einval();
                };
                HcResult::from(vms.teardown(host, hyp, mm, h), true)
            }
            nr::HOST_SHARE_GUEST | nr::HOST_UNSHARE_GUEST | nr::HOST_DONATE_GUEST => {
                let (Ok(h), Some(hpa), Some(gpa)) = (u32::try_from(a[0]), pa(a[1]), gpa_of(a[2]))
                else {
                    return einval();
                };
                let vm = match vms.get_mut(h) {
                    Ok(vm) => vm,
                    Err(e) => return HcResult::from(Err(e), false),
                };
                let g = vm.guest_mut();
                let r = match call {
                    nr::HOST_SHARE_GUEST => {
                        mp::host_share_guest(host, g, mm, hpa, gpa, a[3], PERM_RWX)
                    }
                    nr::HOST_UNSHARE_GUEST => mp::host_unshare_guest(host, g, mm, hpa, gpa, a[3]),
                    _ => mp::host_donate_guest(host, g, mm, hpa, gpa, a[3], PERM_RWX),
                };
                HcResult::from(r, true)
            }
            nr::DEBUG_GUEST_SHARE_HOST | nr::DEBUG_GUEST_UNSHARE_HOST => {
                let (Ok(h), Some(gpa)) = (u32::try_from(a[0]), gpa_of(a[1])) else {
                    return einval();
                };
                let vm = match vms.get_mut(h) {
                    Ok(vm) => vm,
                    Err(e) => return HcResult::from(Err(e), false),
                };
                let g = vm.guest_mut();
                let r = if call == nr::DEBUG_GUEST_SHARE_HOST {
                    mp::guest_share_host(host, g, mm, gpa, a[2])
                } else {
                    mp::guest_unshare_host(host, g, mm, gpa, a[2])
                };
                HcResult::from(r, true)
            }
            nr::DEBUG_HOST_EPT_LOOKUP => match Hpa::new(a[0])
                .ok_or(crate::hv::error::Error::Inval)
                .and_then(|p| host.pgt().lookup(mm, p))
            {
                Ok(leaf) => HcResult {
                    rbx: Some(u64::from(leaf.level)),
                    ..HcResult::val(leaf.entry)
                },
                Err(e) => HcResult::from(Err(e), false),
            },
            nr::DEBUG_CHECK_INVARIANTS => {
                match invariants::check(host, hyp, vms.guests(), mm, &mut self.claims) {
                    Ok(()) => HcResult::val(0),
                    Err(v) => HcResult {
                        rbx: Some(v.kind as u64),
                        rcx: Some(v.addr),
                        ..HcResult::val(hypercall::err(errno::EFAULT))
                    },
                }
            }
            _ => HcResult::val(hypercall::err(errno::ENOSYS)),
        }
    }
}
