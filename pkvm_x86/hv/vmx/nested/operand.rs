// SPDX-License-Identifier: GPL-2.0

//! Operands of the host's VMX instructions: decoding the VM-exit
//! instruction-information field and the exit qualification (the
//! displacement) into a register or a memory operand, and the linear
//! address of a memory operand with segmentation applied as the CPU does
//! (SDM Vol. 3A, "Segment-Level Protection"; Vol. 3C, "VM-Exit
//! Instruction-Information Field"): the segment base (only FS and GS in
//! 64-bit mode), canonical checks in 64-bit mode, limit, type and
//! usability checks outside it, #SS(0) instead of #GP(0) for SS.
//!
//! Translation of the linear address is `super::host_walk`.

/// A fault the emulation of an instruction raises in the host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// #UD.
    Ud,
    /// #GP with an error code.
    Gp(u32),
    /// #SS with an error code.
    Ss(u32),
    /// #PF at linear address `addr` with error code `code`.
    Pf {
        /// The faulting linear address (CR2).
        addr: u64,
        /// The page-fault error code.
        code: u32,
    },
}

/// The VM-exit instruction-information field of a VMX instruction exit
/// (VMCLEAR, VMPTRLD, VMPTRST, VMXON, VMREAD, VMWRITE, INVEPT, INVVPID).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct InstrInfo(pub u32);

impl InstrInfo {
    /// Scaling of the index register (bits 1:0): 1, 2, 4 or 8.
    pub const fn scale_shift(self) -> u32 {
        self.0 & 3
    }
    /// Register operand 1 (bits 6:3; VMREAD/VMWRITE register form).
    pub const fn reg1(self) -> u8 {
        ((self.0 >> 3) & 0xf) as u8
    }
    /// Address size in bytes (bits 9:7: 0 = 16-bit, 1 = 32-bit, 2 = 64-bit).
    pub const fn addr_size(self) -> u8 {
        match (self.0 >> 7) & 7 {
            0 => 2,
            1 => 4,
            _ => 8,
        }
    }
    /// Bit 10: the operand is a register (VMREAD/VMWRITE only).
    pub const fn is_reg(self) -> bool {
        self.0 & (1 << 10) != 0
    }
    /// Segment register (bits 17:15): 0 ES, 1 CS, 2 SS, 3 DS, 4 FS, 5 GS.
    pub const fn seg(self) -> u8 {
        ((self.0 >> 15) & 7) as u8
    }
    /// Index register, if valid (bits 21:18, invalid bit 22).
    pub const fn index(self) -> Option<u8> {
        if self.0 & (1 << 22) != 0 {
            None
        } else {
            Some(((self.0 >> 18) & 0xf) as u8)
        }
    }
    /// Base register, if valid (bits 26:23, invalid bit 27).
    pub const fn base(self) -> Option<u8> {
        if self.0 & (1 << 27) != 0 {
            None
        } else {
            Some(((self.0 >> 23) & 0xf) as u8)
        }
    }
    /// Register operand 2 (bits 31:28): the field encoding of
    /// VMREAD/VMWRITE, the type of INVEPT/INVVPID.
    pub const fn reg2(self) -> u8 {
        ((self.0 >> 28) & 0xf) as u8
    }
}

/// Segment register numbers as the instruction information encodes them.
pub mod seg {
    /// ES.
    pub const ES: u8 = 0;
    /// CS.
    pub const CS: u8 = 1;
    /// SS.
    pub const SS: u8 = 2;
    /// DS.
    pub const DS: u8 = 3;
    /// FS.
    pub const FS: u8 = 4;
    /// GS.
    pub const GS: u8 = 5;
}

/// A decoded operand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operand {
    /// A general-purpose register (0 RAX .. 15 R15).
    Reg(u8),
    /// A memory operand: segment and effective address (offset within
    /// the segment, already truncated to the address size).
    Mem {
        /// Segment register number ([`seg`]).
        seg: u8,
        /// Effective address.
        offset: u64,
    },
}

/// Decodes the operand of a VMX instruction from its instruction
/// information and exit qualification (the displacement); `gpr(n)` reads
/// general-purpose register `n`.  `reg_allowed`: the instruction has a
/// register form (VMREAD/VMWRITE), else bit 10 is ignored (it is 0).
pub fn decode(info: InstrInfo, qual: u64, reg_allowed: bool, gpr: impl Fn(u8) -> u64) -> Operand {
    if reg_allowed && info.is_reg() {
        return Operand::Reg(info.reg1());
    }
    let mut ea = qual;
    if let Some(b) = info.base() {
        ea = ea.wrapping_add(gpr(b));
    }
    if let Some(i) = info.index() {
        ea = ea.wrapping_add(gpr(i) << info.scale_shift());
    }
    let mask = match info.addr_size() {
        2 => 0xffff,
        4 => 0xffff_ffff,
        _ => u64::MAX,
    };
    Operand::Mem {
        seg: info.seg(),
        offset: ea & mask,
    }
}

/// A segment register as the VMCS guest-state area holds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Segment {
    /// Base address.
    pub base: u64,
    /// Limit (in bytes, granularity already applied).
    pub limit: u32,
    /// Access rights (VMCS format: type 3:0, S 4, DPL 6:5, P 7, L 13,
    /// D/B 14, G 15, unusable 16).
    pub ar: u32,
}

impl Segment {
    const fn unusable(&self) -> bool {
        self.ar & (1 << 16) != 0
    }
}

/// Whether `la` is canonical with 48-bit linear addresses.
pub const fn is_canonical(la: u64) -> bool {
    let top = (la as i64) >> 47;
    top == 0 || top == -1
}

/// The linear address of a `len`-byte access (`write` or read) at
/// effective address `offset` in segment `s` (number `seg_no`), or the
/// fault the CPU would raise.  `long_mode`: the host runs in 64-bit mode
/// (IA-32e and CS.L; compatibility mode raises #UD before any exit).
pub fn linear_address(
    long_mode: bool,
    seg_no: u8,
    s: &Segment,
    offset: u64,
    len: u64,
    write: bool,
) -> Result<u64, Fault> {
    let fault = if seg_no == seg::SS {
        Fault::Ss(0)
    } else {
        Fault::Gp(0)
    };
    let last = len.saturating_sub(1);
    if long_mode {
        let base = if seg_no == seg::FS || seg_no == seg::GS {
            s.base
        } else {
            0
        };
        let la = base.wrapping_add(offset);
        if !is_canonical(la) || !is_canonical(la.wrapping_add(last)) {
            return Err(fault);
        }
        return Ok(la);
    }
    if s.unusable() {
        return Err(fault);
    }
    let ty = s.ar & 0xf;
    let code = ty & 8 != 0;
    // Code segments are never writable; execute-only ones not readable.
    let readable_writable = ty & 2 != 0;
    let refused = if code {
        write || !readable_writable
    } else {
        write && !readable_writable
    };
    if refused {
        return Err(fault);
    }
    let end = offset.wrapping_add(last);
    let limit = u64::from(s.limit);
    let expand_down = !code && ty & 4 != 0;
    if expand_down {
        let top = if s.ar & (1 << 14) != 0 {
            0xffff_ffff
        } else {
            0xffff
        };
        if offset <= limit || end > top || end < offset {
            return Err(fault);
        }
    } else if end > limit || end < offset {
        return Err(fault);
    }
    Ok(s.base.wrapping_add(offset) & 0xffff_ffff)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn regs(n: u8) -> u64 {
        u64::from(n) * 0x1000
    }

    #[test]
    fn decodes_register_and_memory_forms() {
        // VMREAD rax -> rbx (reg1 = 3), register form.
        let info = InstrInfo(3 << 3 | 1 << 10 | 2 << 7 | 1 << 28);
        assert_eq!(decode(info, 0, true, regs), Operand::Reg(3));
        assert_eq!(info.reg2(), 1);
        // Same bits without a register form: a memory operand.
        assert!(matches!(decode(info, 0, false, regs), Operand::Mem { .. }));
        // [rbx + rsi*8 + 0x10] in DS, 64-bit addressing.
        let info = InstrInfo(3 | 2 << 7 | u32::from(seg::DS) << 15 | 6 << 18 | 3 << 23);
        assert_eq!(
            decode(info, 0x10, false, regs),
            Operand::Mem {
                seg: seg::DS,
                offset: 0x3000 + 0x6000 * 8 + 0x10
            }
        );
        // No base, no index: the displacement alone; negative wraps.
        let info = InstrInfo(2 << 7 | 1 << 22 | 1 << 27 | u32::from(seg::GS) << 15);
        assert_eq!(
            decode(info, (-8i64) as u64, false, regs),
            Operand::Mem {
                seg: seg::GS,
                offset: (-8i64) as u64
            }
        );
        // 32-bit addressing truncates.
        let info = InstrInfo(1 << 7 | 1 << 22 | 7 << 23);
        assert_eq!(
            decode(info, 0xffff_f000, false, |_| 0x2000),
            Operand::Mem {
                seg: 0,
                offset: 0x1000
            }
        );
        // 16-bit addressing.
        let info = InstrInfo(1 << 22 | 1 << 27);
        assert_eq!(
            decode(info, 0x1_2345, false, regs),
            Operand::Mem {
                seg: 0,
                offset: 0x2345
            }
        );
    }

    #[test]
    fn long_mode_segmentation() {
        let fs = Segment {
            base: 0xffff_8000_0000_0000,
            limit: 0,
            ar: 0x93,
        };
        // Base used for FS/GS only.
        assert_eq!(
            linear_address(true, seg::FS, &fs, 0x10, 8, false),
            Ok(0xffff_8000_0000_0010)
        );
        assert_eq!(linear_address(true, seg::DS, &fs, 0x10, 8, false), Ok(0x10));
        // Non-canonical: #GP(0), or #SS(0) through SS; also when only the
        // last byte crosses.
        let nc = 0x0000_8000_0000_0000;
        assert_eq!(
            linear_address(true, seg::DS, &fs, nc, 8, false),
            Err(Fault::Gp(0))
        );
        assert_eq!(
            linear_address(true, seg::SS, &fs, nc, 8, true),
            Err(Fault::Ss(0))
        );
        assert_eq!(
            linear_address(true, seg::DS, &fs, nc - 4, 8, false),
            Err(Fault::Gp(0))
        );
    }

    #[test]
    fn protected_mode_segmentation() {
        let data = Segment {
            base: 0x1000,
            limit: 0xfff,
            ar: 0x93,
        };
        assert_eq!(
            linear_address(false, seg::DS, &data, 0xff8, 8, true),
            Ok(0x1ff8)
        );
        assert_eq!(
            linear_address(false, seg::DS, &data, 0xff9, 8, false),
            Err(Fault::Gp(0))
        );
        assert_eq!(
            linear_address(false, seg::SS, &data, 0xff9, 8, false),
            Err(Fault::Ss(0))
        );
        // Read-only data: writes fault, reads do not.
        let ro = Segment { ar: 0x91, ..data };
        assert_eq!(
            linear_address(false, seg::ES, &ro, 0, 8, true),
            Err(Fault::Gp(0))
        );
        assert!(linear_address(false, seg::ES, &ro, 0, 8, false).is_ok());
        // Code: never written; execute-only never read.
        let code = Segment { ar: 0x9b, ..data };
        assert!(linear_address(false, seg::CS, &code, 0, 8, false).is_ok());
        assert_eq!(
            linear_address(false, seg::CS, &code, 0, 8, true),
            Err(Fault::Gp(0))
        );
        let xo = Segment { ar: 0x99, ..data };
        assert_eq!(
            linear_address(false, seg::CS, &xo, 0, 8, false),
            Err(Fault::Gp(0))
        );
        // Unusable.
        let un = Segment {
            ar: 1 << 16,
            ..data
        };
        assert_eq!(
            linear_address(false, seg::DS, &un, 0, 8, false),
            Err(Fault::Gp(0))
        );
        // Expand-down, 32-bit (B set): valid offsets are above the limit.
        let down = Segment {
            base: 0,
            limit: 0xfff,
            ar: 0x97 | 1 << 14,
        };
        assert!(linear_address(false, seg::DS, &down, 0x1000, 8, true).is_ok());
        assert_eq!(
            linear_address(false, seg::DS, &down, 0xfff, 8, true),
            Err(Fault::Gp(0))
        );
        assert_eq!(
            linear_address(false, seg::DS, &down, 0xffff_fffc, 8, true),
            Err(Fault::Gp(0))
        );
        // Wrap to 32 bits.
        let hi = Segment {
            base: 0xffff_f000,
            limit: 0xffff_ffff,
            ar: 0x93,
        };
        assert_eq!(
            linear_address(false, seg::DS, &hi, 0x2000, 4, false),
            Ok(0x1000)
        );
    }
}
