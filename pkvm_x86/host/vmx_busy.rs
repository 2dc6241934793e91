// SPDX-License-Identifier: GPL-2.0

//! Keeps `pkvm_x86` loaded while the host uses VMX (nested VMX): the
//! host's VMCSs live in the hypervisor, so unloading would take them away
//! from under `kvm_intel`.  A module notifier asks the hypervisor, at every
//! module state change (a module's init done, a module gone), how many CPUs
//! are in VMX operation (`VMX_CPUS`), and holds a reference on this module
//! while that is not 0: `rmmod pkvm_x86` then fails as for any module in
//! use (the kernel answers `EWOULDBLOCK`), and `lsmod` shows the use.
//! `kvm_intel` executes VMXON on every CPU in its init and VMXOFF in its
//! exit, both before the notifications.  Root mode refuses BEGIN_TEARDOWN
//! (`EBUSY`) all the same, should VMXON happen later (KVM's
//! `enable_virt_at_load=0`).  See Documentation/nested.rst.

use core::cell::UnsafeCell;
use core::ffi::{c_int, c_void};
use core::sync::atomic::{AtomicBool, AtomicPtr, Ordering};

use kernel::bindings;

use crate::arch::vmx;
use crate::hv::hypercall::{self, nr};

/// This module, while the notifier is registered.
static MODULE: AtomicPtr<bindings::module> = AtomicPtr::new(core::ptr::null_mut());
/// Whether the notifier holds a reference on [`MODULE`].
static HELD: AtomicBool = AtomicBool::new(false);

struct Block(UnsafeCell<bindings::notifier_block>);
// SAFETY: the block is handed to the kernel's notifier chain, which
// serializes registration and reads `notifier_call` only.
unsafe impl Sync for Block {}

static BLOCK: Block = Block(UnsafeCell::new(bindings::notifier_block {
    notifier_call: Some(on_module_event),
    next: core::ptr::null_mut(),
    priority: 0,
}));

/// CPUs of the host in VMX operation, as the hypervisor counts them.
pub(crate) fn vmx_cpus() -> u64 {
    // SAFETY: VMX_CPUS only reads a hypervisor counter; every online CPU
    // runs deprivileged while the module is loaded.
    let r = unsafe { vmx::vmcall(nr::VMX_CPUS, 0, 0, 0, 0) };
    hypercall::decode(r).unwrap_or(0)
}

/// Takes or drops the reference so that it is held exactly while a CPU
/// is in VMX operation.
fn sync() {
    let m = MODULE.load(Ordering::Acquire);
    if m.is_null() {
        return;
    }
    if vmx_cpus() != 0 {
        if HELD
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            // SAFETY: `m` is this module, live (we run its code).
            unsafe { bindings::__module_get(m) };
        }
    } else if HELD
        .compare_exchange(true, false, Ordering::AcqRel, Ordering::Acquire)
        .is_ok()
    {
        // SAFETY: drops the reference taken above.
        unsafe { bindings::module_put(m) };
    }
}

/// The notifier callback: any module state change.
///
/// # Safety
///
/// Called by the kernel's module notifier chain only (process context).
unsafe extern "C" fn on_module_event(
    _nb: *mut bindings::notifier_block,
    _action: usize,
    _data: *mut c_void,
) -> c_int {
    sync();
    0 // NOTIFY_DONE
}

/// The registered notifier; unregistered when dropped (module unload,
/// which the reference prevents while VMX is in use).
pub(crate) struct Guard(());

impl Guard {
    /// Registers the notifier for module `module` (after every CPU is
    /// deprivileged).
    pub(crate) fn new(module: *mut bindings::module) -> Self {
        MODULE.store(module, Ordering::Release);
        // SAFETY: `BLOCK` is static; registered once, unregistered in drop.
        let rc = unsafe { bindings::register_module_notifier(BLOCK.0.get()) };
        if rc != 0 {
            kernel::pr_warn!(
                "module notifier not registered ({}): unload is not refused while VMX is in use\n",
                rc
            );
        }
        Guard(())
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        // SAFETY: registered in `new`.
        unsafe { bindings::unregister_module_notifier(BLOCK.0.get()) };
        if HELD.swap(false, Ordering::AcqRel) {
            // SAFETY: drops the reference `sync` took (only a forced
            // unload gets here with it held).
            unsafe { bindings::module_put(MODULE.load(Ordering::Acquire)) };
        }
        MODULE.store(core::ptr::null_mut(), Ordering::Release);
    }
}
