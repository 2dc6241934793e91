// SPDX-License-Identifier: GPL-2.0

//! The VMX instructions of the host, with the SDM's semantics (Vol. 3C,
//! chapter "VMX Instruction Reference", each instruction's "Operation"):
//! the host CPU's VMX-operation state ([`VmxMode`]: off, or in VMX root
//! operation with its VMXON pointer and current-VMCS pointer) and every
//! instruction's outcome ([`Outcome`]): a fault (#UD, #GP(0), #SS(0), #PF),
//! VMfailInvalid, VMfailValid with the VM-instruction error number, or
//! success, with the RFLAGS the CPU would leave ([`Outcome::rflags`]).
//!
//! The checks and their order follow the pseudo-code: #UD for the mode
//! (CR0.PE, RFLAGS.VM, compatibility mode, not in VMX operation; CR4.VMXE
//! for VMXON, as the host sees it), #GP(0) for CPL > 0 (and for VMXON the
//! CR0/CR4 fixed bits and IA32_FEATURE_CONTROL), faults of the memory
//! operand, then the VMfail cases.  Regions: 4 KiB aligned, within
//! MAXPHYADDR, the revision identifier read from the region, and — pkvm's
//! own rule — a page the host owns (never hypervisor memory, never a page
//! donated to anyone): a region that is not fails as an invalid physical
//! address would (VMXON: VMfailInvalid; VMCLEAR: error 2; VMPTRLD: error
//! 9), and nothing of that page is read or written.
//!
//! VMLAUNCH and VMRESUME that pass every check of their own (current VMCS,
//! MOV-SS blocking, launch state) hand the entry to the root-mode glue
//! ([`Done::enter`]), which runs `super::merge` and `super::entry_checks`
//! and enters the guest (`crate::hyp::nested`).
//!
//! INVVPID is checked as the SDM says and performed as a flush of
//! everything the host cached ([`Done::flush`]), which is what every
//! INVVPID type may do at most.  INVEPT raises #UD unless the view offers
//! EPT and INVEPT; then it is checked as the SDM says (the type against
//! IA32_VMX_EPT_VPID_CAP, the 128-bit descriptor from memory, for
//! single-context the EPTP as VM entry would check it) and handed to the
//! root-mode glue as [`Invept`] ([`Done::invept`]), which retires the
//! shadow EPTs it names (`super::shadow_ept`).

use super::host_walk::{read_linear, write_linear, HostPhys, PagingCtx};
use super::operand::{
    self, decode, is_canonical, linear_address, Fault, InstrInfo, Operand, Segment,
};
use super::vmcs12::{vmread, vmwrite, Vmcs12Cache};
use crate::hv::mm::reserve::PageSupply;
use crate::hv::vmx::caps::{
    ept_cap, RawVmxInfo, VmxMsr, FEATURE_CONTROL_LOCKED, FEATURE_CONTROL_VMX_OUTSIDE_SMX,
};
use crate::hv::vmx::exit::reason;
use crate::hv::vmx::vmcs::fields::VM_INSTRUCTION_ERROR;

/// VM-instruction error numbers (SDM Vol. 3C, "VM-Instruction Error
/// Numbers") the emulation reports.
pub mod err {
    /// VMCLEAR with invalid physical address.
    pub const VMCLEAR_INVALID_ADDR: u32 = 2;
    /// VMCLEAR with VMXON pointer.
    pub const VMCLEAR_VMXON_PTR: u32 = 3;
    /// VMLAUNCH with non-clear VMCS.
    pub const VMLAUNCH_NOT_CLEAR: u32 = 4;
    /// VMRESUME with non-launched VMCS.
    pub const VMRESUME_NOT_LAUNCHED: u32 = 5;
    /// VM entry with invalid control field(s).
    pub const ENTRY_INVALID_CONTROLS: u32 = 7;
    /// VMPTRLD with invalid physical address.
    pub const VMPTRLD_INVALID_ADDR: u32 = 9;
    /// VMPTRLD with VMXON pointer.
    pub const VMPTRLD_VMXON_PTR: u32 = 10;
    /// VMPTRLD with incorrect VMCS revision identifier.
    pub const VMPTRLD_BAD_REVISION: u32 = 11;
    /// VMXON executed in VMX root operation.
    pub const VMXON_IN_ROOT: u32 = 15;
    /// VM entry with events blocked by MOV SS.
    pub const ENTRY_MOV_SS: u32 = 26;
    /// Invalid operand to INVEPT/INVVPID.
    pub const INVALID_INV_OPERAND: u32 = 28;
}

/// The emulated VMX instructions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Insn {
    /// VMCLEAR m64.
    Vmclear,
    /// VMLAUNCH.
    Vmlaunch,
    /// VMPTRLD m64.
    Vmptrld,
    /// VMPTRST m64.
    Vmptrst,
    /// VMREAD r/m, r.
    Vmread,
    /// VMRESUME.
    Vmresume,
    /// VMWRITE r, r/m.
    Vmwrite,
    /// VMXOFF.
    Vmxoff,
    /// VMXON m64.
    Vmxon,
    /// INVEPT r, m128.
    Invept,
    /// INVVPID r, m128.
    Invvpid,
}

impl Insn {
    /// The instruction of basic exit reason `basic`, if it is one.
    pub const fn from_exit_reason(basic: u16) -> Option<Insn> {
        Some(match basic {
            reason::VMCLEAR => Insn::Vmclear,
            20 => Insn::Vmlaunch,
            21 => Insn::Vmptrld,
            22 => Insn::Vmptrst,
            23 => Insn::Vmread,
            24 => Insn::Vmresume,
            25 => Insn::Vmwrite,
            26 => Insn::Vmxoff,
            reason::VMXON => Insn::Vmxon,
            reason::INVEPT => Insn::Invept,
            reason::INVVPID => Insn::Invvpid,
            _ => return None,
        })
    }
}

/// The host CPU's VMX-operation state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum VmxMode {
    /// Not in VMX operation.
    #[default]
    Off,
    /// In VMX (root) operation.
    On {
        /// The VMXON pointer.
        vmxon: u64,
        /// The current-VMCS pointer, `None` when invalid (all ones).
        current: Option<u64>,
    },
}

impl VmxMode {
    /// Whether the CPU is in VMX operation.
    pub const fn is_on(&self) -> bool {
        matches!(self, VmxMode::On { .. })
    }
}

/// How an instruction completed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// VMsucceed.
    Succeed,
    /// VMfailInvalid (no current VMCS to hold an error number).
    FailInvalid,
    /// VMfailValid with this VM-instruction error number (also stored in
    /// the current vmcs12's VM-instruction error field).
    FailValid(u32),
    /// A fault: delivered to the host, the instruction does not complete
    /// (RIP stays, RFLAGS unchanged).
    Fault(Fault),
}

/// RFLAGS bits VMX instructions write: CF, PF, AF, ZF, SF, OF.
pub const RFLAGS_ARITH: u64 = 1 << 0 | 1 << 2 | 1 << 4 | 1 << 6 | 1 << 7 | 1 << 11;

impl Outcome {
    /// RFLAGS after the instruction, from `old` (a fault leaves them).
    pub const fn rflags(self, old: u64) -> u64 {
        let base = old & !RFLAGS_ARITH;
        match self {
            Outcome::Succeed => base,
            Outcome::FailInvalid => base | 1 << 0,
            Outcome::FailValid(_) => base | 1 << 6,
            Outcome::Fault(_) => old,
        }
    }
}

/// What an INVEPT that succeeded invalidates, for the root-mode glue
/// (`super::shadow_ept::ShadowEpts::invalidate_single` / `invalidate_all`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Invept {
    /// Single-context: the mappings of this EPTP (bits 51:12 name them).
    Single(u64),
    /// Global: the mappings of every EPTP.
    All,
}

/// What the emulation decided, for the root-mode glue to apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Done {
    /// The outcome.
    pub outcome: Outcome,
    /// Invalidate the host's cached translations (INVVPID).
    pub flush: bool,
    /// Invalidate the shadow EPTs of these EPT pointers (INVEPT; issue 10:
    /// the glue applies it once the view offers EPT).
    pub invept: Option<Invept>,
    /// VMLAUNCH/VMRESUME passed the instruction's own checks (current
    /// VMCS, MOV-SS blocking, launch state): the VM entry of the current
    /// vmcs12 at this address proceeds (`crate::hyp::nested`), which
    /// decides the outcome; `outcome` is then `Succeed` and not applied.
    pub enter: Option<u64>,
}

impl From<Outcome> for Done {
    fn from(outcome: Outcome) -> Self {
        Done {
            outcome,
            flush: false,
            invept: None,
            enter: None,
        }
    }
}

/// The offered VMX view, as the instructions need it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct View {
    /// The VMCS revision identifier (IA32_VMX_BASIC bits 30:0).
    pub revision: u32,
    /// IA32_VMX_CR0_FIXED0 / FIXED1.
    pub cr0_fixed: (u64, u64),
    /// IA32_VMX_CR4_FIXED0 / FIXED1.
    pub cr4_fixed: (u64, u64),
    /// IA32_FEATURE_CONTROL.
    pub feature_control: u64,
    /// IA32_VMX_MISC bit 29: VMWRITE to exit-information fields.
    pub write_any: bool,
    /// IA32_VMX_EPT_VPID_CAP (0 without VPID).
    pub ept_vpid_cap: u64,
    /// "Enable EPT" may be 1 (IA32_VMX_PROCBASED_CTLS2 bit 33).
    pub ept: bool,
}

impl View {
    /// The view's parameters from its raw MSRs.
    pub fn from_raw(v: &RawVmxInfo) -> Self {
        let g = |m| v.get(m).unwrap_or(0);
        View {
            revision: (g(VmxMsr::Basic) & 0x7fff_ffff) as u32,
            cr0_fixed: (g(VmxMsr::Cr0Fixed0), g(VmxMsr::Cr0Fixed1)),
            cr4_fixed: (g(VmxMsr::Cr4Fixed0), g(VmxMsr::Cr4Fixed1)),
            feature_control: g(VmxMsr::FeatureControl),
            write_any: g(VmxMsr::Misc) & (1 << 29) != 0,
            ept_vpid_cap: g(VmxMsr::EptVpidCap),
            ept: g(VmxMsr::ProcbasedCtls2) & (1 << 33) != 0,
        }
    }

    /// Whether INVEPT exists for the host: EPT offered and INVEPT
    /// advertised (else the instruction is #UD).
    pub const fn invept(&self) -> bool {
        self.ept && self.ept_vpid_cap & ept_cap::INVEPT != 0
    }

    /// Whether INVEPT of `ty` is supported: 1 (single-context, bit 25), 2
    /// (global, bit 26).
    const fn invept_type(&self, ty: u64) -> bool {
        match ty {
            1 => self.ept_vpid_cap & ept_cap::INVEPT_SINGLE != 0,
            2 => self.ept_vpid_cap & ept_cap::INVEPT_ALL != 0,
            _ => false,
        }
    }

    /// Whether VM entry with "enable EPT" would accept `eptp` (SDM Vol. 3C,
    /// "Checks on VMX Controls", the EPT-pointer checks of the VM-execution
    /// control fields), MAXPHYADDR `phys_bits`: a memory
    /// type the view advertises (UC, bit 8; WB, bit 14), a page-walk length
    /// it advertises (4, bit 6; 5, bit 7), accessed/dirty flags only if
    /// advertised (bit 21), bits 11:7 zero (nothing there is offered), and
    /// no address bit at or above MAXPHYADDR.
    pub const fn eptp_valid(&self, eptp: u64, phys_bits: u8) -> bool {
        let cap = self.ept_vpid_cap;
        let memtype_ok = match eptp & 7 {
            0 => cap & (1 << 8) != 0,
            6 => cap & ept_cap::WB != 0,
            _ => false,
        };
        let walk_ok = match (eptp >> 3) & 7 {
            3 => cap & ept_cap::WALK_4 != 0,
            4 => cap & (1 << 7) != 0,
            _ => false,
        };
        let ad_ok = eptp & (1 << 6) == 0 || cap & ept_cap::AD != 0;
        let bits = if phys_bits > 52 { 52 } else { phys_bits };
        memtype_ok && walk_ok && ad_ok && eptp & 0xf80 == 0 && eptp >> bits == 0
    }

    /// Whether INVVPID of `ty` is supported (bits 40 + type; INVVPID
    /// itself is bit 32).
    const fn invvpid_type(&self, ty: u64) -> bool {
        ty <= 3 && self.ept_vpid_cap & (1 << (40 + ty)) != 0
    }
}

/// The host CPU's state an instruction depends on, read from the VMCS of
/// its exit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct InsnCtx {
    /// CR0.
    pub cr0: u64,
    /// CR4 as the host sees it (VMXE from the read shadow).
    pub cr4: u64,
    /// IA32_EFER.LMA.
    pub lma: bool,
    /// CS.L.
    pub cs_l: bool,
    /// RFLAGS.
    pub rflags: u64,
    /// CPL (SS.DPL).
    pub cpl: u8,
    /// Blocking by MOV SS.
    pub mov_ss_blocking: bool,
    /// VM-exit instruction information.
    pub info: InstrInfo,
    /// Exit qualification (the displacement of a memory operand).
    pub qual: u64,
    /// ES, CS, SS, DS, FS, GS.
    pub segs: [Segment; 6],
    /// The paging state for memory operands.
    pub paging: PagingCtx,
    /// MAXPHYADDR.
    pub phys_bits: u8,
    /// VMXON is refused (pkvm is being unloaded): VMfailInvalid.
    pub vmxon_refused: bool,
}

impl InsnCtx {
    /// 64-bit mode.
    const fn long_mode(&self) -> bool {
        self.lma && self.cs_l
    }

    /// The #UD mode checks shared by every instruction: CR0.PE = 0,
    /// RFLAGS.VM = 1, compatibility mode.
    const fn bad_mode(&self) -> bool {
        self.cr0 & 1 == 0 || self.rflags & (1 << 17) != 0 || (self.lma && !self.cs_l)
    }

    /// Bytes of a VMREAD/VMWRITE operand and of the INVVPID type register.
    const fn op_size(&self) -> usize {
        if self.long_mode() {
            8
        } else {
            4
        }
    }

    /// The field encoding a VMREAD/VMWRITE names (its register operand
    /// 2), as the instruction will use it.
    pub fn field_encoding(&self, regs: &impl Gprs) -> u64 {
        self.reg_value(regs, self.info.reg2())
    }

    fn reg_value(&self, regs: &impl Gprs, n: u8) -> u64 {
        let v = regs.gpr(n);
        if self.long_mode() {
            v
        } else {
            v & 0xffff_ffff
        }
    }

    /// Whether `pa` is 4 KiB aligned and within MAXPHYADDR.
    const fn valid_region(&self, pa: u64) -> bool {
        let bits = if self.phys_bits > 52 {
            52
        } else {
            self.phys_bits
        };
        pa & 0xfff == 0 && pa >> bits == 0
    }
}

/// The host's general-purpose registers (0 RAX .. 15 R15, 4 is RSP).
pub trait Gprs {
    /// Reads register `n`.
    fn gpr(&self, n: u8) -> u64;
    /// Writes register `n`.
    fn set_gpr(&mut self, n: u8, v: u64);
}

/// Everything an instruction works on besides its context.
pub struct Machine<'a, R: Gprs, M: HostPhys + PageSupply> {
    /// This CPU's VMX-operation state.
    pub mode: &'a mut VmxMode,
    /// The host's registers.
    pub regs: &'a mut R,
    /// The host's memory.
    pub mem: &'a mut M,
    /// The shared vmcs12 store.
    pub cache: &'a mut Vmcs12Cache,
    /// The offered view.
    pub view: &'a View,
}

impl<R: Gprs, M: HostPhys + PageSupply> Machine<'_, R, M> {
    /// VMfail(n): VMfailValid with `n` stored in the current vmcs12, or
    /// VMfailInvalid without a current VMCS.
    fn vmfail(&mut self, n: u32) -> Outcome {
        let VmxMode::On {
            current: Some(pa), ..
        } = *self.mode
        else {
            return Outcome::FailInvalid;
        };
        match self.cache.get(self.mem, pa) {
            Some(v) => {
                let _ = v.vmcs.set_exit_info(VM_INSTRUCTION_ERROR, n);
                Outcome::FailValid(n)
            }
            // The current VMCS's page is no longer the host's.
            None => Outcome::FailInvalid,
        }
    }

    /// The linear address of the memory operand for a `len`-byte access.
    fn operand_la(&self, ctx: &InsnCtx, len: usize, write: bool) -> Result<u64, Fault> {
        let regs = &*self.regs;
        match decode(ctx.info, ctx.qual, false, |n| regs.gpr(n)) {
            Operand::Mem { seg, offset } => {
                let s = ctx.segs.get(usize::from(seg)).ok_or(Fault::Ud)?;
                linear_address(ctx.long_mode(), seg, s, offset, len as u64, write)
            }
            // Register forms of these instructions are other instructions.
            Operand::Reg(_) => Err(Fault::Ud),
        }
    }

    /// Reads the `N`-byte memory operand.
    fn read_mem<const N: usize>(&mut self, ctx: &InsnCtx) -> Result<[u8; N], Fault> {
        let la = self.operand_la(ctx, N, false)?;
        let mut b = [0u8; N];
        read_linear(self.mem, &ctx.paging, la, &mut b)?;
        Ok(b)
    }

    fn read_u64(&mut self, ctx: &InsnCtx) -> Result<u64, Fault> {
        self.read_mem::<8>(ctx).map(u64::from_le_bytes)
    }

    /// Writes the low `len` bytes of `v` to the memory operand.
    fn write_mem(&mut self, ctx: &InsnCtx, v: u64, len: usize) -> Result<(), Fault> {
        let la = self.operand_la(ctx, len, true)?;
        let bytes = v.to_le_bytes();
        let b = bytes.get(..len).ok_or(Fault::Ud)?;
        write_linear(self.mem, &ctx.paging, la, b)
    }

    /// The revision identifier of the region at `pa`, `None` if the page
    /// is not the host's.
    fn revision(&mut self, pa: u64) -> Option<u32> {
        let mut b = [0u8; 4];
        self.mem
            .read_bytes(pa, &mut b)
            .then_some(u32::from_le_bytes(b))
    }

    /// Executes `insn` in context `ctx`.
    pub fn execute(&mut self, insn: Insn, ctx: &InsnCtx) -> Done {
        let r = match insn {
            Insn::Vmxon => self.vmxon(ctx),
            Insn::Invept if !self.view.invept() => Err(Fault::Ud),
            Insn::Invvpid if self.view.ept_vpid_cap & (1 << 32) == 0 => Err(Fault::Ud),
            _ => self.in_vmx_operation(insn, ctx),
        };
        match r {
            Ok(d) => d,
            Err(f) => Outcome::Fault(f).into(),
        }
    }

    fn vmxon(&mut self, ctx: &InsnCtx) -> Result<Done, Fault> {
        if ctx.bad_mode() || ctx.cr4 & (1 << 13) == 0 {
            return Err(Fault::Ud);
        }
        if self.mode.is_on() {
            if ctx.cpl > 0 {
                return Err(Fault::Gp(0));
            }
            return Ok(self.vmfail(err::VMXON_IN_ROOT).into());
        }
        let (f0, f1) = self.view.cr0_fixed;
        let (g0, g1) = self.view.cr4_fixed;
        let fc = self.view.feature_control;
        if ctx.cpl > 0
            || ctx.cr0 & f0 != f0
            || ctx.cr0 & !f1 & 0xffff_ffff != 0
            || ctx.cr4 & g0 != g0
            || ctx.cr4 & !g1 != 0
            || fc & FEATURE_CONTROL_LOCKED == 0
            || fc & FEATURE_CONTROL_VMX_OUTSIDE_SMX == 0
        {
            return Err(Fault::Gp(0));
        }
        let pa = self.read_u64(ctx)?;
        if !ctx.valid_region(pa) || ctx.vmxon_refused {
            return Ok(Outcome::FailInvalid.into());
        }
        match self.revision(pa) {
            Some(rev) if rev == self.view.revision => {}
            _ => return Ok(Outcome::FailInvalid.into()),
        }
        *self.mode = VmxMode::On {
            vmxon: pa,
            current: None,
        };
        Ok(Outcome::Succeed.into())
    }

    /// Every instruction but VMXON: #UD outside VMX operation or in a bad
    /// mode, #GP(0) above CPL 0, then its own rules.
    fn in_vmx_operation(&mut self, insn: Insn, ctx: &InsnCtx) -> Result<Done, Fault> {
        let VmxMode::On { vmxon, current } = *self.mode else {
            return Err(Fault::Ud);
        };
        if ctx.bad_mode() {
            return Err(Fault::Ud);
        }
        if ctx.cpl > 0 {
            return Err(Fault::Gp(0));
        }
        let o = match insn {
            Insn::Vmxoff => {
                *self.mode = VmxMode::Off;
                Outcome::Succeed
            }
            Insn::Vmclear => {
                let pa = self.read_u64(ctx)?;
                if !ctx.valid_region(pa) {
                    self.vmfail(err::VMCLEAR_INVALID_ADDR)
                } else if pa == vmxon {
                    self.vmfail(err::VMCLEAR_VMXON_PTR)
                } else if !self.cache.clear(self.mem, pa) {
                    // Not the host's page: an invalid address for it.
                    self.vmfail(err::VMCLEAR_INVALID_ADDR)
                } else {
                    if current == Some(pa) {
                        *self.mode = VmxMode::On {
                            vmxon,
                            current: None,
                        };
                    }
                    Outcome::Succeed
                }
            }
            Insn::Vmptrld => {
                let pa = self.read_u64(ctx)?;
                if !ctx.valid_region(pa) {
                    self.vmfail(err::VMPTRLD_INVALID_ADDR)
                } else if pa == vmxon {
                    self.vmfail(err::VMPTRLD_VMXON_PTR)
                } else {
                    match self.revision(pa) {
                        None => self.vmfail(err::VMPTRLD_INVALID_ADDR),
                        Some(rev) if rev != self.view.revision => {
                            self.vmfail(err::VMPTRLD_BAD_REVISION)
                        }
                        Some(rev) => {
                            self.cache.watch.vmptrld(pa, rev);
                            if self.cache.get(self.mem, pa).is_some() {
                                *self.mode = VmxMode::On {
                                    vmxon,
                                    current: Some(pa),
                                };
                                Outcome::Succeed
                            } else {
                                self.vmfail(err::VMPTRLD_INVALID_ADDR)
                            }
                        }
                    }
                }
            }
            Insn::Vmptrst => {
                self.write_mem(ctx, current.unwrap_or(u64::MAX), 8)?;
                Outcome::Succeed
            }
            Insn::Vmread => return self.vmread(ctx, current).map(Done::from),
            Insn::Vmwrite => return self.vmwrite(ctx, current).map(Done::from),
            Insn::Vmlaunch | Insn::Vmresume => return Ok(self.launch(insn, ctx, current)),
            Insn::Invvpid => return self.invvpid(ctx),
            Insn::Invept => return self.invept(ctx),
            Insn::Vmxon => return Err(Fault::Ud),
        };
        Ok(o.into())
    }

    fn vmread(&mut self, ctx: &InsnCtx, current: Option<u64>) -> Result<Outcome, Fault> {
        let Some(pa) = current else {
            return Ok(Outcome::FailInvalid);
        };
        let enc = ctx.reg_value(self.regs, ctx.info.reg2());
        let Some(v) = self.cache.get(self.mem, pa) else {
            return Ok(Outcome::FailInvalid);
        };
        let val = match vmread(&v.vmcs, enc, self.view.ept) {
            Ok(val) => val,
            Err(n) => return Ok(self.vmfail(n)),
        };
        let regs = &*self.regs;
        match decode(ctx.info, ctx.qual, true, |n| regs.gpr(n)) {
            Operand::Reg(r) => {
                let v = if ctx.long_mode() {
                    val
                } else {
                    val & 0xffff_ffff
                };
                self.regs.set_gpr(r, v);
            }
            Operand::Mem { .. } => self.write_mem(ctx, val, ctx.op_size())?,
        }
        Ok(Outcome::Succeed)
    }

    fn vmwrite(&mut self, ctx: &InsnCtx, current: Option<u64>) -> Result<Outcome, Fault> {
        let Some(pa) = current else {
            return Ok(Outcome::FailInvalid);
        };
        let regs = &*self.regs;
        let val = match decode(ctx.info, ctx.qual, true, |n| regs.gpr(n)) {
            Operand::Reg(r) => ctx.reg_value(self.regs, r),
            Operand::Mem { .. } if ctx.long_mode() => u64::from_le_bytes(self.read_mem::<8>(ctx)?),
            Operand::Mem { .. } => u64::from(u32::from_le_bytes(self.read_mem::<4>(ctx)?)),
        };
        let enc = ctx.reg_value(self.regs, ctx.info.reg2());
        let (write_any, ept) = (self.view.write_any, self.view.ept);
        let Some(v) = self.cache.get(self.mem, pa) else {
            return Ok(Outcome::FailInvalid);
        };
        Ok(match vmwrite(&mut v.vmcs, enc, val, write_any, ept) {
            Ok(()) => Outcome::Succeed,
            Err(n) => self.vmfail(n),
        })
    }

    fn launch(&mut self, insn: Insn, ctx: &InsnCtx, current: Option<u64>) -> Done {
        let Some(pa) = current else {
            return Outcome::FailInvalid.into();
        };
        if ctx.mov_ss_blocking {
            return self.vmfail(err::ENTRY_MOV_SS).into();
        }
        let Some(v) = self.cache.get(self.mem, pa) else {
            return Outcome::FailInvalid.into();
        };
        let launched = v.launched;
        match insn {
            Insn::Vmlaunch if launched => self.vmfail(err::VMLAUNCH_NOT_CLEAR).into(),
            Insn::Vmresume if !launched => self.vmfail(err::VMRESUME_NOT_LAUNCHED).into(),
            _ => Done {
                outcome: Outcome::Succeed,
                flush: false,
                invept: None,
                enter: Some(pa),
            },
        }
    }

    fn invvpid(&mut self, ctx: &InsnCtx) -> Result<Done, Fault> {
        let ty = ctx.reg_value(self.regs, ctx.info.reg2());
        if !self.view.invvpid_type(ty) {
            return Ok(self.vmfail(err::INVALID_INV_OPERAND).into());
        }
        let d = self.read_mem::<16>(ctx)?;
        let (lo, hi) = d.split_at(8);
        let lo = u64::from_le_bytes(lo.try_into().unwrap_or([0; 8]));
        let hi = u64::from_le_bytes(hi.try_into().unwrap_or([0; 8]));
        let vpid = lo & 0xffff;
        let bad = lo >> 16 != 0
            || match ty {
                0 => vpid == 0 || !is_canonical(hi),
                1 | 3 => vpid == 0,
                _ => false,
            };
        if bad {
            return Ok(self.vmfail(err::INVALID_INV_OPERAND).into());
        }
        Ok(Done {
            outcome: Outcome::Succeed,
            flush: true,
            invept: None,
            enter: None,
        })
    }

    /// INVEPT (SDM "INVEPT - Invalidate Translations Derived from EPT"),
    /// after the checks common to every VMX instruction: the type from the
    /// register operand (64 bits in 64-bit mode, else 32), VMfailValid(28)
    /// if the view does not advertise it; then the 128-bit descriptor
    /// (bits 63:0 the EPTP); single-context with an EPTP that VM entry
    /// would refuse is VMfailValid(28); else success with what to
    /// invalidate.
    fn invept(&mut self, ctx: &InsnCtx) -> Result<Done, Fault> {
        let ty = ctx.reg_value(self.regs, ctx.info.reg2());
        if !self.view.invept_type(ty) {
            return Ok(self.vmfail(err::INVALID_INV_OPERAND).into());
        }
        let d = self.read_mem::<16>(ctx)?;
        let lo = d.get(..8).and_then(|b| b.try_into().ok());
        let eptp = u64::from_le_bytes(lo.unwrap_or([0; 8]));
        let what = if ty == 1 {
            if !self.view.eptp_valid(eptp, ctx.phys_bits) {
                return Ok(self.vmfail(err::INVALID_INV_OPERAND).into());
            }
            Invept::Single(eptp)
        } else {
            Invept::All
        };
        Ok(Done {
            outcome: Outcome::Succeed,
            flush: false,
            invept: Some(what),
            enter: None,
        })
    }
}

// Re-exported for the glue: the segment numbering of `InsnCtx::segs`.
pub use operand::seg;

#[cfg(test)]
#[path = "vmx_op_tests.rs"]
mod tests;
