// SPDX-License-Identifier: GPL-2.0

//! Host (Cargo) build of pkvm-x86's pure core, for `cargo test`.
//!
//! The kernel module compiles `pkvm_x86/hv/` as `crate::hv`; this crate root
//! mounts the very same files at the same path so that `crate::hv::...`
//! resolves identically in both builds.  Nothing else lives here.

#![no_std]

#[cfg(test)]
extern crate std;

#[path = "../pkvm_x86/hv/mod.rs"]
pub mod hv;
