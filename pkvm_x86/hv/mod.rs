// SPDX-License-Identifier: GPL-2.0

//! The pure hypervisor core: everything that can be decided without touching
//! the CPU.
//!
//! This module is compiled twice, with the same source and the same lints:
//! by Kbuild as `pkvm_x86::hv` inside the kernel module, and by Cargo as
//! `pkvm_x86_hv::hv` (crate root `hv-cargo/lib.rs`) so that `cargo test` runs
//! its unit, property and model tests on any machine.  It therefore uses
//! `core` only: no `kernel::`, no bindings, no `alloc`, no external crates
//! (test-only dev-dependencies are fine, behind `#[cfg(test)]`).
//!
//! Code here may run in VMX root mode on host- or guest-controlled input, so
//! it must not panic outside tests: the lints below reject `unwrap`,
//! `expect` and `panic!` in non-test code.

#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::todo,
        clippy::unimplemented
    )
)]
#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

pub mod bitfield;
pub mod error;
pub mod host_policy;
pub mod hypercall;
pub mod mm;
pub mod sort;
pub mod vmx;
