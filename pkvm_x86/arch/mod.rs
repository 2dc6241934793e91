// SPDX-License-Identifier: GPL-2.0

//! CPU-facing primitives: the only place in pkvm-x86 that executes special
//! instructions (`asm!`, `global_asm!`) or reaches kernel helpers that do
//! so: CPUID, MSRs, control and segment registers, descriptor tables, VMX
//! instructions, the module's own `memcpy`/`memset`, and the root-mode
//! entry stubs.
//!
//! Every item documents what it touches; `unsafe` items carry a `# Safety`
//! section.  Nothing here decides policy: the pure core (`crate::hv`) does.

pub mod cpu;
pub mod cpuid;
pub mod mem;
pub mod msr;
pub mod vmx;
