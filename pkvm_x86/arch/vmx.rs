// SPDX-License-Identifier: GPL-2.0

//! VMX instructions: VMXON/VMXOFF, VMCLEAR/VMPTRLD, VMREAD/VMWRITE,
//! VMLAUNCH-in-place (the deprivileging launch), INVEPT, VMCALL.
//!
//! Each wrapper reports VMfailInvalid / VMfailValid (with the
//! VM-instruction error number) as a [`VmFail`] value instead of leaving
//! the flags to the caller.  [`CurrentVmcs`] is the CPU's current VMCS as
//! a [`VmcsAccess`], the hardware side of the VMCS model of
//! `crate::hv::vmx::vmcs`.

use core::arch::asm;
use core::marker::PhantomData;

use crate::hv::vmx::vmcs::{self, VmcsAccess, VmcsError};

/// Why a VMX instruction failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VmFail {
    /// VMfailInvalid (CF=1): no current VMCS, or VMX not on.
    Invalid,
    /// VMfailValid (ZF=1) with the VM-instruction error number.
    Valid(u64),
}

const RFLAGS_CF: u64 = 1 << 0;
const RFLAGS_ZF: u64 = 1 << 6;

fn check(rflags: u64) -> Result<(), VmFail> {
    if rflags & RFLAGS_CF != 0 {
        Err(VmFail::Invalid)
    } else if rflags & RFLAGS_ZF != 0 {
        // SAFETY: ZF=1 means VMfailValid, so there is a current VMCS and
        // the VM-instruction error field is readable.
        Err(VmFail::Valid(
            unsafe { vmread(vmcs::VM_INSTRUCTION_ERROR.encoding()) }.unwrap_or(0),
        ))
    } else {
        Ok(())
    }
}

/// Enters VMX operation with the VMXON region at physical address `pa`.
///
/// # Safety
///
/// CR4.VMXE must be set and CR0/CR4 must satisfy the VMX fixed bits; `pa`
/// must be a 4 KiB-aligned, zeroed page owned by the caller with the VMCS
/// revision identifier in its first four bytes, kept until VMXOFF.
pub unsafe fn vmxon(pa: u64) -> Result<(), VmFail> {
    let rflags: u64;
    // SAFETY: the caller guarantees the VMXON preconditions; the operand is a
    // pointer to a live local holding the region's physical address.
    unsafe {
        asm!("vmxon [{p}]", "pushfq", "pop {f}", p = in(reg) &pa, f = lateout(reg) rflags);
    }
    check(rflags)
}

/// Leaves VMX operation.
///
/// # Safety
///
/// Must be in VMX root operation; nothing may rely on VMX afterwards.
pub unsafe fn vmxoff() -> Result<(), VmFail> {
    let rflags: u64;
    // SAFETY: guaranteed by the caller.
    unsafe { asm!("vmxoff", "pushfq", "pop {f}", f = lateout(reg) rflags) };
    check(rflags)
}

/// Clears (and makes inactive) the VMCS at `pa`.
///
/// # Safety
///
/// Must be in VMX root operation; `pa` must be a VMCS region.
pub unsafe fn vmclear(pa: u64) -> Result<(), VmFail> {
    let rflags: u64;
    // SAFETY: guaranteed by the caller; the operand points at a live local.
    unsafe { asm!("vmclear [{p}]", "pushfq", "pop {f}", p = in(reg) &pa, f = lateout(reg) rflags) };
    check(rflags)
}

/// Makes the VMCS at `pa` current.
///
/// # Safety
///
/// Must be in VMX root operation; `pa` must be a VMCS region with the right
/// revision identifier.
pub unsafe fn vmptrld(pa: u64) -> Result<(), VmFail> {
    let rflags: u64;
    // SAFETY: guaranteed by the caller; the operand points at a live local.
    unsafe { asm!("vmptrld [{p}]", "pushfq", "pop {f}", p = in(reg) &pa, f = lateout(reg) rflags) };
    check(rflags)
}

impl From<VmcsError> for VmFail {
    fn from(e: VmcsError) -> Self {
        match e.instruction_error() {
            Some(n) => VmFail::Valid(u64::from(n)),
            None => VmFail::Invalid,
        }
    }
}

/// Reads the field with encoding `field` of the current VMCS (for the
/// VM-instruction error; everything else goes through [`CurrentVmcs`]).
///
/// # Safety
///
/// Must be in VMX root operation with a current VMCS.
unsafe fn vmread(field: u32) -> Result<u64, VmFail> {
    let (v, rflags): (u64, u64);
    // SAFETY: guaranteed by the caller; VMREAD only writes its destination.
    unsafe {
        asm!("vmread {v}, {f}", "pushfq", "pop {r}",
             v = lateout(reg) v, f = in(reg) u64::from(field), r = lateout(reg) rflags);
    }
    // Flags are checked without recursing into VM_INSTRUCTION_ERROR.
    if rflags & (RFLAGS_CF | RFLAGS_ZF) != 0 {
        return Err(VmFail::Invalid);
    }
    Ok(v)
}

/// The current VMCS of this CPU, read and written with VMREAD/VMWRITE.
/// Errors are the hardware's: VMfailValid with VM-instruction error 12
/// (unsupported component) or 13 (read-only component), as the in-memory
/// VMCS of the pure core reports them.
///
/// Not `Send`: it stands for "this CPU, now".
pub struct CurrentVmcs {
    _this_cpu: PhantomData<*const ()>,
}

impl CurrentVmcs {
    /// The current VMCS.
    ///
    /// # Safety
    ///
    /// The CPU must be in VMX root operation with a current VMCS for as
    /// long as the value is used, on this CPU only; writes through it must
    /// keep that VMCS consistent with what its users rely on.
    pub unsafe fn new() -> Self {
        Self {
            _this_cpu: PhantomData,
        }
    }

    fn fail(rflags: u64) -> VmcsError {
        if rflags & RFLAGS_CF != 0 {
            return VmcsError::NoCurrentVmcs;
        }
        // SAFETY: ZF=1 (VMfailValid) means there is a current VMCS, whose
        // VM-instruction error field always exists.
        match unsafe { vmread(vmcs::VM_INSTRUCTION_ERROR.encoding()) } {
            Ok(n) => VmcsError::from_instruction_error(n as u32),
            Err(_) => VmcsError::NoCurrentVmcs,
        }
    }
}

impl VmcsAccess for CurrentVmcs {
    fn read_raw(&self, encoding: u32) -> Result<u64, VmcsError> {
        let (v, rflags): (u64, u64);
        // SAFETY: the constructor's contract: VMX root operation with a
        // current VMCS; VMREAD only writes its destination register.
        unsafe {
            asm!("vmread {v}, {f}", "pushfq", "pop {r}",
                 v = lateout(reg) v, f = in(reg) u64::from(encoding), r = lateout(reg) rflags);
        }
        if rflags & (RFLAGS_CF | RFLAGS_ZF) != 0 {
            return Err(Self::fail(rflags));
        }
        Ok(v)
    }

    fn write_raw(&mut self, encoding: u32, value: u64) -> Result<(), VmcsError> {
        let rflags: u64;
        // SAFETY: the constructor's contract: VMX root operation with a
        // current VMCS, and the caller keeps it consistent.
        unsafe {
            asm!("vmwrite {f}, {v}", "pushfq", "pop {r}",
                 f = in(reg) u64::from(encoding), v = in(reg) value, r = lateout(reg) rflags);
        }
        if rflags & (RFLAGS_CF | RFLAGS_ZF) != 0 {
            return Err(Self::fail(rflags));
        }
        Ok(())
    }
}

/// Launches the current VMCS so that execution continues right here, in
/// VMX non-root operation: GUEST_RSP and GUEST_RIP are set to this
/// function's own stack pointer and to the instruction right after
/// VMLAUNCH, and no general-purpose register changes across the launch.
/// Success and failure continue at the same instruction; they differ in
/// RFLAGS: a successful entry loads GUEST_RFLAGS, whose CF and ZF the
/// caller cleared, while VMfail sets CF or ZF.
///
/// # Safety
///
/// Every other guest-state, host-state and control field of the current
/// VMCS must already describe the running CPU (see `crate::host::launch`),
/// with CF and ZF clear in GUEST_RFLAGS (`hv::vmx::guest_state` clears them);
/// interrupts must be disabled.
pub unsafe fn vmlaunch_in_place() -> Result<(), VmFail> {
    let rflags: u64;
    // SAFETY: see above; on success the CPU continues after VMLAUNCH with
    // the same registers and stack.
    unsafe {
        asm!(
            "mov {t}, {rsp_field}",
            "vmwrite {t}, rsp",
            "mov {t}, {rip_field}",
            "lea {u}, [rip + 2f]",
            "vmwrite {t}, {u}",
            "vmlaunch",
            "2:",
            "pushfq",
            "pop {fl}",
            rsp_field = const vmcs::GUEST_RSP.encoding(),
            rip_field = const vmcs::GUEST_RIP.encoding(),
            t = out(reg) _,
            u = out(reg) _,
            fl = out(reg) rflags,
        );
    }
    check(rflags)
}

/// The physical address of the current VMCS (VMPTRST).
///
/// # Safety
///
/// Must be in VMX root operation.
pub unsafe fn vmptrst() -> u64 {
    let mut pa = 0u64;
    // SAFETY: guaranteed by the caller; VMPTRST stores 8 bytes into `pa`.
    unsafe { asm!("vmptrst [{p}]", p = in(reg) &mut pa, options(nostack, preserves_flags)) };
    pa
}

/// INVEPT type.
#[derive(Clone, Copy, Debug)]
#[repr(u64)]
pub enum InveptType {
    /// Invalidate mappings tagged with one EPTP.
    SingleContext = 1,
    /// Invalidate all EPT-derived mappings.
    AllContext = 2,
}

/// Invalidates EPT-derived cached translations.
///
/// # Safety
///
/// Must be in VMX root operation and the CPU must support `ty`.
pub unsafe fn invept(ty: InveptType, eptp: u64) -> Result<(), VmFail> {
    let desc: [u64; 2] = [eptp, 0];
    let rflags: u64;
    // SAFETY: guaranteed by the caller; the descriptor is a live local.
    unsafe {
        asm!("invept {t}, [{d}]", "pushfq", "pop {f}",
             t = in(reg) ty as u64, d = in(reg) &desc, f = lateout(reg) rflags);
    }
    check(rflags)
}

/// Issues a hypercall: VMCALL with `nr` in RAX and `a0`..`a3` in RBX, RCX,
/// RDX, RSI; returns RAX.
///
/// # Safety
///
/// Must run in VMX non-root operation under pkvm (in root operation or
/// without VMX, VMCALL raises #UD).  The call's own contract applies (e.g.
/// TEARDOWN_CPU leaves VMX operation).
pub unsafe fn vmcall(nr: u64, a0: u64, a1: u64, a2: u64, a3: u64) -> u64 {
    let ret: u64;
    // SAFETY: guaranteed by the caller.  RBX is reserved by LLVM, so the
    // argument is swapped in and out around the instruction.
    unsafe {
        asm!(
            "xchg {b}, rbx",
            "vmcall",
            "xchg {b}, rbx",
            b = inout(reg) a0 => _,
            inout("rax") nr => ret,
            in("rcx") a1,
            in("rdx") a2,
            in("rsi") a3,
        );
    }
    ret
}

/// Like [`vmcall`], returning RAX, RBX and RCX (calls that return more
/// than one value use RBX and RCX).
///
/// # Safety
///
/// As for [`vmcall`].
pub unsafe fn vmcall3(nr: u64, a0: u64, a1: u64, a2: u64, a3: u64) -> (u64, u64, u64) {
    let (ret, b, c): (u64, u64, u64);
    // SAFETY: guaranteed by the caller.  RBX is reserved by LLVM, so it is
    // swapped in and out around the instruction.
    unsafe {
        asm!(
            "xchg {b}, rbx",
            "vmcall",
            "xchg {b}, rbx",
            b = inout(reg) a0 => b,
            inout("rax") nr => ret,
            inout("rcx") a1 => c,
            in("rdx") a2,
            in("rsi") a3,
        );
    }
    (ret, b, c)
}
