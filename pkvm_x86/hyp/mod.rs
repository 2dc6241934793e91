// SPDX-License-Identifier: GPL-2.0

//! Code that runs in VMX root mode: the exit handler and CPU teardown, the
//! hypervisor-wide state and its page-state hypercalls, the lock that
//! guards it, the page allocator, the per-CPU state.  (The assembly entry
//! points it is reached through are in `crate::hyp::entry`.)
//!
//! Rules for everything under `hyp/`: no `kernel::`, no bindings, no calls
//! into the host kernel (the build checks the call graph:
//! scripts/audit-root-calls.py), no allocation, no panics on
//! host-controlled input.
//! It sees the host only through the VMCS and the saved registers, and its
//! own state through [`percpu::HypCpu`], which lives in hypervisor memory.

pub mod entry;
pub mod exit_handler;
pub mod global;
pub mod lock;
pub mod mm;
pub mod nested;
pub mod percpu;
