// SPDX-License-Identifier: GPL-2.0

//! `memcpy`, `memmove` and `memset` for the whole module, so that the
//! calls the compiler emits for large copies and fills land in the
//! module's own text instead of the kernel's: root mode must not execute
//! host kernel code (checked by scripts/audit-root-calls.py).  Defined
//! here, they take precedence over the kernel's for every reference inside
//! this module, host-side code included.  Plain `rep movsb` / `rep stosb`:
//! fast on CPUs with ERMS, correct everywhere, and never lowered back into
//! a call to themselves.

use core::arch::asm;

/// Copies `n` bytes from `src` to `dst` (non-overlapping).
///
/// # Safety
///
/// The C `memcpy` contract: both ranges valid, not overlapping.
#[no_mangle]
pub unsafe extern "C" fn memcpy(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    // SAFETY: guaranteed by the caller; REP MOVSB copies forwards with
    // RDI/RSI/RCX, DF is clear per the ABI.
    unsafe {
        asm!("rep movsb", inout("rdi") dst => _, inout("rsi") src => _, inout("rcx") n => _,
             options(nostack, preserves_flags));
    }
    dst
}

/// Copies `n` bytes from `src` to `dst`; the ranges may overlap.
///
/// # Safety
///
/// The C `memmove` contract: both ranges valid.
#[no_mangle]
pub unsafe extern "C" fn memmove(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    if (dst as usize) <= (src as usize) || (dst as usize) >= (src as usize).wrapping_add(n) {
        // SAFETY: a forward copy is correct when dst is below src or the
        // ranges do not overlap.
        return unsafe { memcpy(dst, src, n) };
    }
    // SAFETY: overlapping with dst above src: copy backwards (DF set for
    // the instruction only, cleared again before returning).
    unsafe {
        asm!("std", "rep movsb", "cld",
             inout("rdi") dst.wrapping_add(n).wrapping_sub(1) => _,
             inout("rsi") src.wrapping_add(n).wrapping_sub(1) => _,
             inout("rcx") n => _,
             options(nostack));
    }
    dst
}

/// Fills `n` bytes at `dst` with the low byte of `c`.
///
/// # Safety
///
/// The C `memset` contract: the range is valid.
#[no_mangle]
pub unsafe extern "C" fn memset(dst: *mut u8, c: i32, n: usize) -> *mut u8 {
    // SAFETY: guaranteed by the caller; REP STOSB fills forwards.
    unsafe {
        asm!("rep stosb", inout("rdi") dst => _, inout("rcx") n => _, in("al") c as u8,
             options(nostack, preserves_flags));
    }
    dst
}
