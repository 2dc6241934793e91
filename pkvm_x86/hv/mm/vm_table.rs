// SPDX-License-Identifier: GPL-2.0

//! The shadow-VM table: which guests exist, under which handle, and what
//! they hold.
//!
//! Owns [`VmTable`], a fixed-size table of [`ShadowVm`]s (seed 001).  A
//! handle is the slot index plus [`HANDLE_OFFSET`], so handles never collide
//! with the owner ids `HYP` (0) and `HOST` (1) and a handle *is* the guest's
//! owner id in the host EPT.  Slots are handed out next-fit, so a handle is
//! not reused until the table has gone round once.  One host VM (identified
//! by an opaque `u64` the host chooses, e.g. its `struct kvm` address) can
//! have only one shadow VM.
//!
//! Every page a VM holds is tracked: the pages donated to the hypervisor for
//! its metadata (one range per VM, recorded here) and every page mapped in
//! its shadow EPT (the shadow EPT itself is the record).  [`VmTable::teardown`]
//! gives all of them back through [`guest_reclaim`] and [`hyp_donate_host`].
//!
//! Locking: the table has its own lock, taken before the host EPT lock.

use crate::hv::error::{Error, Result};
use crate::hv::mm::addr::{Gpa, Hpa};
use crate::hv::mm::ept::{OwnerId, PAGE_SIZE};
use crate::hv::mm::mem_protect::{
    guest_reclaim, host_donate_hyp, hyp_donate_host, GuestEpt, HostEpt, HypPgt, VmKind,
};
use crate::hv::mm::pgtable::{MmOps, ADDR_LIMIT};

/// Handles start here (seed 001), well clear of the `HYP` and `HOST` ids.
pub const HANDLE_OFFSET: u32 = 0x1000;

/// Default number of slots.
pub const MAX_VMS: usize = 255;

/// A VM as the hypervisor knows it.
#[derive(Debug)]
pub struct ShadowVm {
    host_vm: u64,
    guest: GuestEpt,
    meta_pa: Hpa,
    meta_pages: u64,
    users: u32,
}

impl ShadowVm {
    /// The VM's handle (its owner id).
    pub const fn handle(&self) -> OwnerId {
        self.guest.id()
    }

    /// The host's identifier of the VM.
    pub const fn host_vm(&self) -> u64 {
        self.host_vm
    }

    /// The shadow EPT and page-state facts of the VM.
    pub const fn guest(&self) -> &GuestEpt {
        &self.guest
    }

    /// The shadow EPT, for the page-state transitions (caller holds the
    /// VM's lock).
    pub fn guest_mut(&mut self) -> &mut GuestEpt {
        &mut self.guest
    }

    /// The metadata pages donated at creation: `(pa, nr_pages)`.
    pub const fn meta(&self) -> (Hpa, u64) {
        (self.meta_pa, self.meta_pages)
    }

    /// Number of outstanding [`VmTable::get_ref`]s (e.g. loaded vCPUs).
    pub const fn users(&self) -> u32 {
        self.users
    }
}

/// A bounded table of shadow VMs with `N` slots.
#[derive(Debug)]
pub struct VmTable<const N: usize = MAX_VMS> {
    slots: [Option<ShadowVm>; N],
    nr: usize,
    next: usize,
}

impl<const N: usize> Default for VmTable<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> VmTable<N> {
    /// Compile-time check that every handle fits in an owner id.
    const HANDLES_FIT: () = assert!(
        N > 0 && N as u64 + HANDLE_OFFSET as u64 <= OwnerId::MAX as u64 + 1,
        "VmTable: handles must fit in 20-bit owner ids"
    );

    /// An empty table.
    pub const fn new() -> Self {
        #[allow(clippy::let_unit_value)]
        let () = Self::HANDLES_FIT;
        Self {
            slots: [const { None }; N],
            nr: 0,
            next: 0,
        }
    }

    /// Initialises an empty table at `this` in place.  The table is large
    /// (`N` slots): built by value it would pass through the stack, which in
    /// the kernel and in root mode is only a few KiB.
    ///
    /// # Safety
    ///
    /// `this` must be valid for writes of a `Self` and suitably aligned; any
    /// previous value is overwritten without being dropped.
    pub unsafe fn init_in_place(this: *mut Self) {
        #[allow(clippy::let_unit_value)]
        let () = Self::HANDLES_FIT;
        // SAFETY: the caller guarantees `this` is valid for writes; every
        // field is written exactly once through raw pointers.
        unsafe {
            let slots = core::ptr::addr_of_mut!((*this).slots).cast::<Option<ShadowVm>>();
            for i in 0..N {
                slots.add(i).write(None);
            }
            core::ptr::addr_of_mut!((*this).nr).write(0);
            core::ptr::addr_of_mut!((*this).next).write(0);
        }
    }

    /// Whether `[pa, pa + size)` overlaps the metadata pages of any VM:
    /// such pages are in use by the hypervisor and must not go back to the
    /// host while the VM exists.
    pub fn uses_pages(&self, pa: Hpa, size: u64) -> bool {
        let pa = pa.raw();
        let end = pa.saturating_add(size);
        self.iter().any(|vm| {
            let (m, n) = vm.meta();
            let m = m.raw();
            let m_end = m.saturating_add(n.saturating_mul(PAGE_SIZE));
            n != 0 && pa < m_end && m < end
        })
    }

    /// The host asks for hypervisor pages back (the HYP_DONATE_HOST
    /// hypercall): allowed only for pages the hypervisor does not use —
    /// not in `pinned` (the hypervisor's own memory: its pool, whose pages
    /// are `OWNED` in its table like donated ones; host-physical start and
    /// length) and not a VM's metadata
    /// ([`Error::Busy`] otherwise) — then `hyp_donate_host`.
    pub fn return_to_host<M: MmOps>(
        &self,
        host: &mut HostEpt,
        hyp: &mut HypPgt,
        mm: &mut M,
        pa: Hpa,
        nr_pages: u64,
        pinned: &[(u64, u64)],
    ) -> Result {
        let size = nr_pages.saturating_mul(PAGE_SIZE);
        let end = pa.raw().saturating_add(size);
        if self.uses_pages(pa, size)
            || pinned
                .iter()
                .any(|&(p, len)| pa.raw() < p.saturating_add(len) && p < end)
        {
            return Err(Error::Busy);
        }
        hyp_donate_host(host, hyp, mm, pa, nr_pages)
    }

    /// Number of VMs.
    pub const fn len(&self) -> usize {
        self.nr
    }

    /// Whether there are no VMs.
    pub const fn is_empty(&self) -> bool {
        self.nr == 0
    }

    /// The slot of `handle`, if it is in range.
    pub fn index_of(handle: u32) -> Option<usize> {
        let idx = usize::try_from(handle.checked_sub(HANDLE_OFFSET)?).ok()?;
        (idx < N).then_some(idx)
    }

    fn handle_of(idx: usize) -> Result<OwnerId> {
        let raw = u32::try_from(idx)
            .ok()
            .and_then(|i| i.checked_add(HANDLE_OFFSET))
            .ok_or(Error::Inval)?;
        OwnerId::new(raw).ok_or(Error::Inval)
    }

    /// The handle of the shadow VM of host VM `host_vm`, if any.
    pub fn find(&self, host_vm: u64) -> Option<OwnerId> {
        self.iter()
            .find(|vm| vm.host_vm == host_vm)
            .map(ShadowVm::handle)
    }

    /// The VM with `handle`; `NoEnt` if there is none.
    pub fn get(&self, handle: u32) -> Result<&ShadowVm> {
        Self::index_of(handle)
            .and_then(|i| self.slots.get(i))
            .and_then(Option::as_ref)
            .ok_or(Error::NoEnt)
    }

    /// The VM with `handle` for changes; `NoEnt` if there is none.
    pub fn get_mut(&mut self, handle: u32) -> Result<&mut ShadowVm> {
        Self::index_of(handle)
            .and_then(|i| self.slots.get_mut(i))
            .and_then(Option::as_mut)
            .ok_or(Error::NoEnt)
    }

    /// Takes a reference on the VM (vCPU load); teardown waits for none.
    /// A dying VM gives `Perm`.
    pub fn get_ref(&mut self, handle: u32) -> Result<&mut ShadowVm> {
        let vm = self.get_mut(handle)?;
        if vm.guest.is_dying() {
            return Err(Error::Perm);
        }
        vm.users = vm.users.checked_add(1).ok_or(Error::Busy)?;
        Ok(vm)
    }

    /// Drops a reference taken with [`VmTable::get_ref`]; `Inval` if there
    /// is none.
    pub fn put_ref(&mut self, handle: u32) -> Result {
        let vm = self.get_mut(handle)?;
        vm.users = vm.users.checked_sub(1).ok_or(Error::Inval)?;
        Ok(())
    }

    /// Every VM, in slot order.
    pub fn iter(&self) -> impl Iterator<Item = &ShadowVm> + Clone {
        self.slots.iter().filter_map(Option::as_ref)
    }

    /// Every VM's shadow EPT (for the invariant checker).
    pub fn guests(&self) -> impl Iterator<Item = &GuestEpt> + Clone {
        self.iter().map(ShadowVm::guest)
    }

    /// Creates the shadow VM of host VM `host_vm`: takes the host's
    /// `meta_pages` pages at `meta_pa` (0 pages: none) for the hypervisor
    /// through [`host_donate_hyp`], zeroes them (the VM's hypervisor-side
    /// state starts from a known value, not from whatever the host left
    /// there), creates an empty shadow EPT, and returns the new handle.
    /// All or nothing.
    ///
    /// The zeroing is the first write of the hypervisor to pages that were
    /// the host's a moment before: it comes after the donation returned,
    /// and the donation returns only once the host's access is invalidated
    /// ([`MmOps::invalidate`], on every CPU in the module), so no write of
    /// the host can land in them after the hypervisor's.
    ///
    /// Errors: `Exist` if `host_vm` already has one, `NoMem` if the table is
    /// full or memory runs out, the donation's errors.
    #[allow(clippy::too_many_arguments)]
    pub fn create<M: MmOps>(
        &mut self,
        host: &mut HostEpt,
        hyp: &mut HypPgt,
        mm: &mut M,
        host_vm: u64,
        kind: VmKind,
        meta_pa: Hpa,
        meta_pages: u64,
        max_block_level: u32,
    ) -> Result<OwnerId> {
        if self.find(host_vm).is_some() {
            return Err(Error::Exist);
        }
        if self.nr >= N {
            return Err(Error::NoMem);
        }
        let mut idx = self.next % N;
        while self.slots.get(idx).is_some_and(Option::is_some) {
            idx = (idx + 1) % N;
        }
        let handle = Self::handle_of(idx)?;
        let guest = GuestEpt::new(mm, handle, kind, max_block_level)?;
        if meta_pages != 0 {
            if let Err(e) = host_donate_hyp(host, hyp, mm, meta_pa, meta_pages) {
                // Freeing the empty shadow EPT cannot fail.
                let _ = guest.destroy(mm);
                return Err(e);
            }
            let mut pa = meta_pa;
            for _ in 0..meta_pages {
                mm.zero_page(pa);
                pa = pa.wrapping_add(PAGE_SIZE);
            }
        }
        let slot = self.slots.get_mut(idx).ok_or(Error::Inval)?;
        *slot = Some(ShadowVm {
            host_vm,
            guest,
            meta_pa,
            meta_pages,
            users: 0,
        });
        self.nr += 1;
        self.next = (idx + 1) % N;
        Ok(handle)
    }

    /// Tears down the VM with `handle`: marks it dying, reclaims every page
    /// mapped in its shadow EPT for the host (zeroing what it owned), zeroes
    /// and returns the metadata pages, frees the shadow EPT and the slot.
    ///
    /// Errors: `NoEnt`, `Busy` while references are held, `NoMem` if the
    /// host EPT needs table pages that cannot be had; after an error the VM
    /// stays (dying, possibly with fewer pages) and teardown can be retried.
    pub fn teardown<M: MmOps>(
        &mut self,
        host: &mut HostEpt,
        hyp: &mut HypPgt,
        mm: &mut M,
        handle: u32,
    ) -> Result {
        let vm = self.get_mut(handle)?;
        if vm.users != 0 {
            return Err(Error::Busy);
        }
        vm.guest.set_dying();
        guest_reclaim(host, &mut vm.guest, mm, Gpa::ZERO, ADDR_LIMIT)?;
        if vm.meta_pages != 0 {
            let mut pa = vm.meta_pa;
            for _ in 0..vm.meta_pages {
                mm.zero_page(pa);
                pa = pa.wrapping_add(PAGE_SIZE);
            }
            hyp_donate_host(host, hyp, mm, vm.meta_pa, vm.meta_pages)?;
            vm.meta_pages = 0;
        }
        let idx = Self::index_of(handle).ok_or(Error::NoEnt)?;
        let vm = self
            .slots
            .get_mut(idx)
            .and_then(Option::take)
            .ok_or(Error::NoEnt)?;
        self.nr -= 1;
        vm.guest.destroy(mm)
    }
}

#[cfg(test)]
#[path = "vm_table_tests.rs"]
mod tests;

#[cfg(test)]
mod in_place_tests {
    use super::*;

    #[test]
    fn init_in_place_gives_an_empty_table() {
        extern crate std;
        let mut t = std::boxed::Box::new(core::mem::MaybeUninit::<VmTable<8>>::uninit());
        // SAFETY: the box is valid for writes of a VmTable<8>.
        let t = unsafe {
            VmTable::<8>::init_in_place(t.as_mut_ptr());
            t.assume_init_ref()
        };
        assert!(t.is_empty());
        assert_eq!(t.iter().count(), 0);
    }
}
