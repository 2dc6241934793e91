// SPDX-License-Identifier: GPL-2.0

//! Root-mode glue of nested VMX: the host's VMX-instruction exits
//! (VMCLEAR..VMXON, INVEPT, INVVPID) are described from the VMCS
//! ([`InsnCtx`]), run by the pure core (`crate::hv::vmx::nested::vmx_op`)
//! against this CPU's VMX-operation state (`CpuLocal::vmx`), the host's
//! registers, the host's memory (only what it owns, through the scratch
//! slot) and the shared vmcs12 store, all under the hypervisor lock; the
//! exit handler applies the result ([`Applied`]): RFLAGS and RIP on
//! success or VMfail, the fault otherwise (RIP unchanged).
//!
//! Also here: the per-CPU bookkeeping the instructions imply (the count
//! of CPUs in VMX operation that refuses BEGIN_TEARDOWN, INIT released by
//! VMXOFF).  No kernel calls, no panics on host input.

use core::sync::atomic::Ordering;

use super::entry::{gpr_slot, GuestRegs};
use super::percpu::{CpuLocal, HypCpu};
use crate::arch::{cpuid::cpuid, vmx};
use crate::hv::host_policy::CR4_GUEST_HOST_MASK;
use crate::hv::vmx::nested::host_walk::PagingCtx;
use crate::hv::vmx::nested::operand::{Fault, InstrInfo, Segment};
use crate::hv::vmx::nested::vmx_op::{Gprs, Insn, InsnCtx, Machine, Outcome};
use crate::hv::vmx::vmcs::*;

fn vmcs() -> vmx::CurrentVmcs {
    // SAFETY: called from the exit handler in VMX root operation with the
    // host's VMCS current; only guest RSP is written here (`set_gpr`).
    unsafe { vmx::CurrentVmcs::new() }
}

fn rd<T: FieldValue>(f: Field<T>) -> T {
    vmcs().read(f).unwrap_or_default()
}

/// The host's registers: the saved frame, RSP in the VMCS.
struct HostRegs<'a>(&'a mut GuestRegs);

impl Gprs for HostRegs<'_> {
    fn gpr(&self, n: u8) -> u64 {
        match gpr_slot(n) {
            Some(i) => self.0.gpr.get(i).copied().unwrap_or(0),
            None => rd(GUEST_RSP),
        }
    }

    fn set_gpr(&mut self, n: u8, v: u64) {
        match gpr_slot(n) {
            Some(i) => {
                if let Some(r) = self.0.gpr.get_mut(i) {
                    *r = v;
                }
            }
            None => {
                let _ = vmcs().write(GUEST_RSP, v);
            }
        }
    }
}

/// What the exit handler does after a VMX instruction.
pub(crate) enum Applied {
    /// The instruction completed (success or VMfail): RFLAGS written,
    /// skip it.  `left_vmx`: it was a VMXOFF (a latched INIT is due);
    /// `flush`: invalidate the host's cached translations.
    Completed {
        /// VMXOFF succeeded.
        left_vmx: bool,
        /// INVVPID: flush.
        flush: bool,
    },
    /// Deliver this fault; RIP and RFLAGS stay.
    Fault(Fault),
}

fn segment(base: Field<u64>, limit: Field<u32>, ar: Field<u32>) -> Segment {
    Segment {
        base: rd(base),
        limit: rd(limit),
        ar: rd(ar),
    }
}

/// The context of the exiting instruction, from the host's VMCS.
fn context(frozen: bool) -> InsnCtx {
    let cr4_real = rd(GUEST_CR4);
    let cr4_view = (cr4_real & !CR4_GUEST_HOST_MASK) | (rd(CR4_READ_SHADOW) & CR4_GUEST_HOST_MASK);
    let efer = rd(GUEST_IA32_EFER);
    let ss_ar = rd(GUEST_SS_AR_BYTES);
    let cs_ar = rd(GUEST_CS_AR_BYTES);
    let rflags = rd(GUEST_RFLAGS);
    let cpl = ((ss_ar >> 5) & 3) as u8;
    let phys_bits = if cpuid(0x8000_0000, 0).eax >= 0x8000_0008 {
        (cpuid(0x8000_0008, 0).eax & 0xff) as u8
    } else {
        36
    };
    InsnCtx {
        cr0: rd(GUEST_CR0),
        cr4: cr4_view,
        lma: efer & (1 << 10) != 0,
        cs_l: cs_ar & (1 << 13) != 0,
        rflags,
        cpl,
        mov_ss_blocking: rd(GUEST_INTERRUPTIBILITY_INFO) & (1 << 1) != 0,
        info: InstrInfo(rd(VMX_INSTRUCTION_INFO)),
        qual: rd(EXIT_QUALIFICATION),
        segs: [
            segment(GUEST_ES_BASE, GUEST_ES_LIMIT, GUEST_ES_AR_BYTES),
            segment(GUEST_CS_BASE, GUEST_CS_LIMIT, GUEST_CS_AR_BYTES),
            segment(GUEST_SS_BASE, GUEST_SS_LIMIT, GUEST_SS_AR_BYTES),
            segment(GUEST_DS_BASE, GUEST_DS_LIMIT, GUEST_DS_AR_BYTES),
            segment(GUEST_FS_BASE, GUEST_FS_LIMIT, GUEST_FS_AR_BYTES),
            segment(GUEST_GS_BASE, GUEST_GS_LIMIT, GUEST_GS_AR_BYTES),
        ],
        paging: PagingCtx {
            cr0: rd(GUEST_CR0),
            cr3: rd(GUEST_CR3),
            cr4: cr4_real,
            efer,
            user: cpl == 3,
            ac: rflags & (1 << 18) != 0,
            phys_bits,
        },
        phys_bits,
        vmxon_refused: frozen,
    }
}

/// Runs the VMX instruction of basic exit reason `basic` for the host.
pub(crate) fn vmx_instruction(
    regs: &mut GuestRegs,
    cpu: &HypCpu,
    local: &mut CpuLocal,
    basic: u16,
) -> Applied {
    let Some(insn) = Insn::from_exit_reason(basic) else {
        return Applied::Fault(Fault::Ud);
    };
    // SAFETY: `global` points at the hypervisor-wide state in the pool,
    // alive while any CPU runs under it.
    let global = unsafe { &*cpu.global };
    let was_on = local.vmx.is_on();
    let mut st = global.page_states();
    let ctx = context(st.frozen());
    let (mut mem, cache) = st.nested_parts();
    let mut host_regs = HostRegs(regs);
    let mut m = Machine {
        mode: &mut local.vmx,
        regs: &mut host_regs,
        mem: &mut mem,
        cache,
        view: &global.vmx_params,
    };
    let done = m.execute(insn, &ctx);
    let now_on = local.vmx.is_on();
    // Under the lock, as BEGIN_TEARDOWN reads it.
    if now_on && !was_on {
        global.vmx_cpus.fetch_add(1, Ordering::AcqRel);
    } else if was_on && !now_on {
        global.vmx_cpus.fetch_sub(1, Ordering::AcqRel);
    }
    drop(st);
    match done.outcome {
        Outcome::Fault(f) => Applied::Fault(f),
        o => {
            let _ = vmcs().write(GUEST_RFLAGS, o.rflags(ctx.rflags));
            Applied::Completed {
                left_vmx: was_on && !now_on,
                flush: done.flush,
            }
        }
    }
}
