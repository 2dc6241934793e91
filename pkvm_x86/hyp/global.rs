// SPDX-License-Identifier: GPL-2.0

//! Hypervisor-wide state, in pool memory: the host EPT, the hypervisor's
//! page-table bookkeeping, the shadow-VM table, and the page-state
//! hypercalls that change them.
//!
//! One lock covers all of it: [`HypGlobal::page_states`] returns the guard
//! of a [`SpinLock`] that owns [`PageStates`] (the pure core's lock order —
//! VM table, host EPT, guest, hyp page table — is trivially respected by a
//! single lock; `crate::hyp::lock` documents it for when it is split).
//! It is taken only in root mode, where interrupts are off.  Each
//! page-state hypercall is one method of [`PageStates`], called by the exit
//! handler's dispatch with the call's validated arguments.
//!
//! After a change to the host EPT the calling CPU invalidates its own
//! EPT-derived translations.  Other CPUs are flushed by the host asking
//! each of them (FLUSH_HOST_EPT); until root mode can send its own IPIs, a
//! host that skips that step can keep a stale translation on another CPU
//! for a page it gave away.  Documentation/hypercalls.rst says so.

use super::lock::{SpinLock, SpinLockGuard};
use super::mm::{HypMm, MAX_CHUNKS};
use crate::hv::error::Error;
use crate::hv::hypercall::call::Reply;
#[cfg(pkvm_debug)]
use crate::hv::hypercall::errno;
use crate::hv::mm::addr::{Gpa, Hpa};
use crate::hv::mm::ept::EptEntry;
#[cfg(pkvm_debug)]
use crate::hv::mm::invariants::{self, Claim};
use crate::hv::mm::mem_protect::{self as mp, HostEpt, HypPgt, VmKind};
use crate::hv::mm::pgtable::PERM_RWX;
use crate::hv::mm::vm_table::VmTable;

/// Claims the invariant checker may record (its scratch space).
#[cfg(pkvm_debug)]
const CLAIMS: usize = 256;

/// The hypervisor-wide state: settings fixed at load and the page-state
/// structures behind their lock.
pub struct HypGlobal {
    /// Debug hypercalls allowed (module parameter `debug`).
    pub debug: bool,
    /// EPT pointer of the host EPT (for INVEPT).
    pub host_eptp: u64,
    /// The page-state structures, under the hypervisor lock.
    states: SpinLock<PageStates>,
}

/// Everything the page-state hypercalls read and change; reached only
/// through the hypervisor lock ([`HypGlobal::page_states`]).
pub struct PageStates {
    /// The hypervisor's page allocator (in the pool).
    mm: *mut HypMm,
    host: HostEpt,
    hyp: HypPgt,
    vms: VmTable,
    /// The pool's chunks (physical base, size): hypervisor memory that is
    /// `OWNED` in its table but never goes back to the host while loaded.
    pinned: [(u64, u64); MAX_CHUNKS],
    nr_pinned: usize,
    /// The invariant checker's scratch space (debug builds only).
    #[cfg(pkvm_debug)]
    claims: [Claim; CLAIMS],
}

// SAFETY: `mm` points at the hypervisor's allocator in the pool, which
// lives as long as the hypervisor; it is used only by the holder of the
// lock that owns this state.
unsafe impl Send for PageStates {}

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
            addr_of_mut!((*this).debug).write(debug);
            addr_of_mut!((*this).host_eptp).write(host_eptp);
            let st = SpinLock::init_in_place(addr_of_mut!((*this).states));
            addr_of_mut!((*st).mm).write(mm);
            addr_of_mut!((*st).host).write(host);
            addr_of_mut!((*st).hyp).write(hyp);
            VmTable::init_in_place(addr_of_mut!((*st).vms));
            let pinned = addr_of_mut!((*st).pinned).cast::<(u64, u64)>();
            let mut n = 0;
            // SAFETY (of the dereference): `mm` is the live allocator.
            for (i, c) in (*mm).chunks().iter().enumerate().take(MAX_CHUNKS) {
                pinned.add(i).write((c.pa, 2 << 20));
                n = i + 1;
            }
            for i in n..MAX_CHUNKS {
                pinned.add(i).write((0, 0));
            }
            addr_of_mut!((*st).nr_pinned).write(n);
            #[cfg(pkvm_debug)]
            {
                let claims = addr_of_mut!((*st).claims).cast::<Claim>();
                for i in 0..CLAIMS {
                    claims.add(i).write(Claim::default());
                }
            }
        }
    }

    /// Table pages of the host EPT (host side, before launch).
    pub fn host_ept_table_pages(&mut self) -> usize {
        let st = self.states.get_mut();
        // SAFETY: `mm` is the live allocator; the exclusive borrow of the
        // lock means no CPU runs root mode on this state yet.
        let mm = unsafe { &mut *st.mm };
        st.host.pgt().table_pages(mm).unwrap_or(0)
    }

    /// Takes the hypervisor lock: the page-state structures, until the
    /// guard drops.
    pub fn page_states(&self) -> SpinLockGuard<'_, PageStates> {
        self.states.lock()
    }
}

/// `Reply::from` for a page-state change: the host EPT may have changed.
fn changed(r: Result<(), Error>) -> Reply {
    Reply::from(r, true)
}

impl PageStates {
    /// The allocator and the tables, borrowed apart.
    fn parts(&mut self) -> (&mut HypMm, &mut HostEpt, &mut HypPgt, &mut VmTable) {
        // SAFETY: `mm` points at the allocator in the pool, set up before
        // the hypervisor started; the lock (held by whoever has `&mut
        // self`) makes this the only user.
        let mm = unsafe { &mut *self.mm };
        (mm, &mut self.host, &mut self.hyp, &mut self.vms)
    }

    /// Times an apply step met a state its check had ruled out.
    pub fn internal_errors(&self) -> u64 {
        self.host.internal_errors()
    }

    /// HOST_DONATE_HYP.
    pub fn host_donate_hyp(&mut self, hpa: Hpa, pages: u64) -> Reply {
        let (mm, host, hyp, _) = self.parts();
        changed(mp::host_donate_hyp(host, hyp, mm, hpa, pages))
    }

    /// HYP_DONATE_HOST: never the pinned pool chunks nor a live VM's
    /// metadata.
    pub fn hyp_donate_host(&mut self, hpa: Hpa, pages: u64) -> Reply {
        // SAFETY: as in `parts` (borrowed apart from `pinned` here).
        let mm = unsafe { &mut *self.mm };
        let Self {
            host,
            hyp,
            vms,
            pinned,
            nr_pinned,
            ..
        } = self;
        let pinned = pinned.get(..*nr_pinned).unwrap_or(&[]);
        changed(vms.return_to_host(host, hyp, mm, hpa, pages, pinned))
    }

    /// HOST_SHARE_HYP.
    pub fn host_share_hyp(&mut self, hpa: Hpa, pages: u64) -> Reply {
        let (mm, host, hyp, _) = self.parts();
        changed(mp::host_share_hyp(host, hyp, mm, hpa, pages))
    }

    /// HOST_UNSHARE_HYP.
    pub fn host_unshare_hyp(&mut self, hpa: Hpa, pages: u64) -> Reply {
        let (mm, host, hyp, _) = self.parts();
        changed(mp::host_unshare_hyp(host, hyp, mm, hpa, pages))
    }

    /// VM_CREATE: the handle in RAX.
    pub fn vm_create(&mut self, host_vm_id: u64, kind: VmKind, hpa: Hpa, pages: u64) -> Reply {
        let (mm, host, hyp, vms) = self.parts();
        match vms.create(host, hyp, mm, host_vm_id, kind, hpa, pages, 3) {
            Ok(h) => Reply {
                flush: true,
                ..Reply::val(u64::from(h.raw()))
            },
            Err(e) => Reply::from(Err(e), false),
        }
    }

    /// VM_TEARDOWN.
    pub fn vm_teardown(&mut self, handle: u32) -> Reply {
        let (mm, host, hyp, vms) = self.parts();
        changed(vms.teardown(host, hyp, mm, handle))
    }

    /// HOST_SHARE_GUEST.
    pub fn host_share_guest(&mut self, handle: u32, hpa: Hpa, gpa: Gpa, pages: u64) -> Reply {
        let (mm, host, _, vms) = self.parts();
        match vms.get_mut(handle) {
            Ok(vm) => changed(mp::host_share_guest(
                host,
                vm.guest_mut(),
                mm,
                hpa,
                gpa,
                pages,
                PERM_RWX,
            )),
            Err(e) => Reply::from(Err(e), false),
        }
    }

    /// HOST_UNSHARE_GUEST.
    pub fn host_unshare_guest(&mut self, handle: u32, hpa: Hpa, gpa: Gpa, pages: u64) -> Reply {
        let (mm, host, _, vms) = self.parts();
        match vms.get_mut(handle) {
            Ok(vm) => changed(mp::host_unshare_guest(
                host,
                vm.guest_mut(),
                mm,
                hpa,
                gpa,
                pages,
            )),
            Err(e) => Reply::from(Err(e), false),
        }
    }

    /// HOST_DONATE_GUEST.
    pub fn host_donate_guest(&mut self, handle: u32, hpa: Hpa, gpa: Gpa, pages: u64) -> Reply {
        let (mm, host, _, vms) = self.parts();
        match vms.get_mut(handle) {
            Ok(vm) => changed(mp::host_donate_guest(
                host,
                vm.guest_mut(),
                mm,
                hpa,
                gpa,
                pages,
                PERM_RWX,
            )),
            Err(e) => Reply::from(Err(e), false),
        }
    }

    /// DEBUG_GUEST_SHARE_HOST.
    #[cfg(pkvm_debug)]
    pub fn guest_share_host(&mut self, handle: u32, gpa: Gpa, pages: u64) -> Reply {
        let (mm, host, _, vms) = self.parts();
        match vms.get_mut(handle) {
            Ok(vm) => changed(mp::guest_share_host(host, vm.guest_mut(), mm, gpa, pages)),
            Err(e) => Reply::from(Err(e), false),
        }
    }

    /// DEBUG_GUEST_UNSHARE_HOST.
    #[cfg(pkvm_debug)]
    pub fn guest_unshare_host(&mut self, handle: u32, gpa: Gpa, pages: u64) -> Reply {
        let (mm, host, _, vms) = self.parts();
        match vms.get_mut(handle) {
            Ok(vm) => changed(mp::guest_unshare_host(host, vm.guest_mut(), mm, gpa, pages)),
            Err(e) => Reply::from(Err(e), false),
        }
    }

    /// Whether the host EPT, as it is now, lets the host make the access
    /// an EPT violation reported at `hpa` (`read`, `write`, `fetch` from
    /// the exit qualification).  When it does, the violation came from a
    /// translation this CPU cached before the table changed (another CPU
    /// changed it, or freed and reused a table page), not from the host
    /// touching memory it does not own.
    pub fn host_may_access(&mut self, hpa: Hpa, read: bool, write: bool, fetch: bool) -> bool {
        let (mm, host, _, _) = self.parts();
        let Ok(leaf) = host.pgt().lookup(mm, hpa) else {
            return false;
        };
        let e = EptEntry(leaf.entry);
        (!read || e.read() != 0) && (!write || e.write() != 0) && (!fetch || e.exec() != 0)
    }

    /// DEBUG_HOST_EPT_LOOKUP: the leaf entry in RAX, its level in RBX.
    #[cfg(pkvm_debug)]
    pub fn host_ept_lookup(&mut self, hpa: Hpa) -> Reply {
        let (mm, host, _, _) = self.parts();
        match host.pgt().lookup(mm, hpa) {
            Ok(leaf) => Reply {
                rbx: Some(u64::from(leaf.level)),
                ..Reply::val(leaf.entry)
            },
            Err(e) => Reply::from(Err(e), false),
        }
    }

    /// DEBUG_CHECK_INVARIANTS: 0, or -EFAULT with the violation's kind in
    /// RBX and address in RCX.
    #[cfg(pkvm_debug)]
    pub fn check_invariants(&mut self) -> Reply {
        // SAFETY: as in `parts` (borrowed apart from `claims` here).
        let mm = unsafe { &mut *self.mm };
        let Self {
            host,
            hyp,
            vms,
            claims,
            ..
        } = self;
        match invariants::check(host, hyp, vms.guests(), mm, claims) {
            Ok(()) => Reply::val(0),
            Err(v) => Reply {
                rbx: Some(v.kind as u64),
                rcx: Some(v.addr),
                ..Reply::errno(errno::EFAULT)
            },
        }
    }
}
