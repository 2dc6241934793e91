// SPDX-License-Identifier: GPL-2.0

//! Code that runs in VMX root mode: the VM-exit entry point, the exit
//! handler, the root-mode exception handlers and CPU teardown.
//!
//! Rules for everything under `hyp/`: no `kernel::`, no bindings, no calls
//! into the host kernel, no allocation, no panics on host-controlled input.
//! It sees the host only through the VMCS and the saved registers, and its
//! own state through [`percpu::HypCpu`], which lives in hypervisor memory.

pub mod entry;
pub mod exit_handler;
pub mod global;
pub mod mem_intrinsics;
pub mod mm;
pub mod percpu;
