// SPDX-License-Identifier: GPL-2.0

//! The hypervisor's spinlock: [`SpinLock<T>`] owns the state it protects,
//! and [`SpinLock::lock`] returns a [`SpinLockGuard`] through which alone
//! that state is reached; dropping the guard unlocks.  "Lock held" is a
//! value, so it cannot be forgotten or outlive the borrow of the state.
//!
//! Taken only in VMX root mode, where interrupts are off and an exit
//! handler runs to completion: a holder is never preempted, so spinning
//! is bounded by the holder's work.  Root-mode NMI / #MC stubs never take
//! it.  No kernel calls, no indirect calls (the guard's `Drop` is a direct
//! call), as root mode requires (scripts/audit-root-calls.py).
//!
//! # Lock order
//!
//! Today one lock, `HypGlobal`'s, covers every page-state structure.  When
//! it is split (per-VM locks), locks are taken in the pure core's order
//! (Documentation/page-states.rst, "lock order"), never the reverse:
//!
//! 1. the VM table (looking a VM up, creating or tearing one down);
//! 2. the host EPT;
//! 3. a guest's shadow EPT (one guest at a time);
//! 4. the hypervisor's own page table;
//! 5. the table-page allocator behind `MmOps` (innermost).
//!
//! A CPU holding a later lock must not wait for an earlier one.

use core::cell::UnsafeCell;
use core::marker::PhantomData;
use core::ops::{Deref, DerefMut};
use core::sync::atomic::{AtomicU32, Ordering};

/// A spinlock owning a `T` (see the module docs for its rules and the lock
/// order).
#[repr(C)]
pub struct SpinLock<T> {
    /// 0 unlocked, 1 locked.
    locked: AtomicU32,
    /// The protected state; reached only through a guard or `get_mut`.
    data: UnsafeCell<T>,
}

// SAFETY: the lock hands out access to `T` to one CPU at a time (acquire on
// lock, release on unlock), which is what sending `T` between CPUs needs.
unsafe impl<T: Send> Sync for SpinLock<T> {}
// SAFETY: moving the lock moves the `T` it owns.
unsafe impl<T: Send> Send for SpinLock<T> {}

impl<T> SpinLock<T> {
    /// An unlocked lock owning `data`.
    pub const fn new(data: T) -> Self {
        Self {
            locked: AtomicU32::new(0),
            data: UnsafeCell::new(data),
        }
    }

    /// Initialises the lock at `this` unlocked, in place, and returns where
    /// its `T` lives, for the caller to write (the state may be too large
    /// for the stack).
    ///
    /// # Safety
    ///
    /// `this` must be valid for writes and aligned.  The caller must write
    /// a valid `T` through the returned pointer before the lock is used.
    pub unsafe fn init_in_place(this: *mut Self) -> *mut T {
        // SAFETY: `this` is valid for writes (caller); the fields are
        // written through raw pointers, never read.
        unsafe {
            core::ptr::addr_of_mut!((*this).locked).write(AtomicU32::new(0));
            UnsafeCell::raw_get(core::ptr::addr_of!((*this).data))
        }
    }

    /// Spins until the lock is free, takes it, and returns the guard.
    pub fn lock(&self) -> SpinLockGuard<'_, T> {
        while self
            .locked
            .compare_exchange_weak(0, 1, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            core::hint::spin_loop();
        }
        // INVARIANT: the lock is held from here until the guard drops.
        SpinLockGuard {
            lock: self,
            _not_send: PhantomData,
        }
    }

    /// The state without locking, through an exclusive borrow of the lock
    /// (host side before the hypervisor runs: nobody else can hold it).
    pub fn get_mut(&mut self) -> &mut T {
        self.data.get_mut()
    }
}

/// Proof that this CPU holds a [`SpinLock`]: dereferences to its state;
/// unlocks when dropped.
///
/// # Invariants
///
/// `lock` is held by the holder of this guard, and only by it.
pub struct SpinLockGuard<'a, T> {
    lock: &'a SpinLock<T>,
    /// The guard stays on the CPU that took the lock.
    _not_send: PhantomData<*mut ()>,
}

impl<T> Deref for SpinLockGuard<'_, T> {
    type Target = T;

    fn deref(&self) -> &T {
        // SAFETY: by the type invariant the lock is held, so nothing else
        // accesses the data while this borrow of the guard lives.
        unsafe { &*self.lock.data.get() }
    }
}

impl<T> DerefMut for SpinLockGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as for `deref`; the exclusive borrow of the guard makes
        // this the only reference.
        unsafe { &mut *self.lock.data.get() }
    }
}

impl<T> Drop for SpinLockGuard<'_, T> {
    fn drop(&mut self) {
        self.lock.locked.store(0, Ordering::Release);
    }
}
