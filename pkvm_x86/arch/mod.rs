// SPDX-License-Identifier: GPL-2.0

//! CPU-facing primitives: the only place in pkvm-x86 that executes special
//! instructions (`asm!`) or reaches kernel helpers that do so.
//!
//! Every item documents what it touches; `unsafe` items carry a `# Safety`
//! section.  Nothing here decides policy: the pure core (`crate::hv`) does.

pub mod cpu;
pub mod cpuid;
pub mod msr;
pub mod vmx;
