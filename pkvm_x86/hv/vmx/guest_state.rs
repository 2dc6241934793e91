// SPDX-License-Identifier: GPL-2.0

//! The VMCS guest-state area that makes the running CPU continue as the
//! deprivileged host: the rules that turn a snapshot of the CPU's
//! registers into guest-state field values (SDM Vol. 3C, "Guest-State
//! Area" and "Checks on the Guest State Area").
//!
//! Owns what is decidable off-CPU: control registers with the VMX fixed
//! bits (CR4.VMXE forced on), segment registers decoded from the live GDT
//! (`crate::hv::vmx::segment`: null selectors unusable, FS/GS bases from their
//! MSRs, TR a busy 64-bit TSS, CS a 64-bit code segment), descriptor
//! tables, the MSRs the VM-entry controls load, and the non-register
//! state (active, no blocking, no pending debug exceptions, no link
//! VMCS).  Reading the registers and writing the fields is the caller's
//! (`crate::host::launch`); guest RSP and RIP are written by the launch
//! itself.

use crate::hv::vmx::exit::CR4_VMXE;
use crate::hv::vmx::segment::{self, DescriptorTables, SegmentError, SegmentState};
use crate::hv::vmx::vmcs::{self, Field};

/// CR4.LA57 (5-level paging): pkvm's own page table has 4 levels.
pub const CR4_LA57: u64 = 1 << 12;
/// RFLAGS bits the in-place launch needs clear in GUEST_RFLAGS (CF, ZF:
/// they tell a successful entry from VMfail at the instruction after
/// VMLAUNCH).
pub const RFLAGS_LAUNCH_CLEAR: u64 = (1 << 0) | (1 << 6);

/// Selectors of the running CPU.
#[derive(Clone, Copy, Debug, Default)]
pub struct Selectors {
    /// ES.
    pub es: u16,
    /// CS.
    pub cs: u16,
    /// SS.
    pub ss: u16,
    /// DS.
    pub ds: u16,
    /// FS.
    pub fs: u16,
    /// GS.
    pub gs: u16,
    /// LDTR.
    pub ldtr: u16,
    /// TR.
    pub tr: u16,
}

/// What the caller read off the CPU.
#[derive(Clone, Copy, Debug)]
pub struct CpuSnapshot<'a> {
    /// CR0.
    pub cr0: u64,
    /// CR3.
    pub cr3: u64,
    /// CR4 (as the kernel set it; VMXE is added here).
    pub cr4: u64,
    /// DR7.
    pub dr7: u64,
    /// RFLAGS.
    pub rflags: u64,
    /// IA32_EFER.
    pub efer: u64,
    /// IA32_PAT.
    pub pat: u64,
    /// IA32_DEBUGCTL.
    pub debugctl: u64,
    /// IA32_SYSENTER_CS, _ESP, _EIP.
    pub sysenter: [u64; 3],
    /// IA32_FS_BASE.
    pub fs_base: u64,
    /// IA32_GS_BASE.
    pub gs_base: u64,
    /// Segment selectors.
    pub sel: Selectors,
    /// GDTR base and limit.
    pub gdtr: (u64, u16),
    /// IDTR base and limit.
    pub idtr: (u64, u16),
    /// The GDT's contents (as many entries as GDTR's limit covers).
    pub gdt: &'a [u64],
}

/// Why the running CPU cannot be described as a VMX guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuestStateError {
    /// CR0 violates IA32_VMX_CR0_FIXED0/1.
    Cr0Fixed,
    /// CR4 (with VMXE) violates IA32_VMX_CR4_FIXED0/1.
    Cr4Fixed,
    /// 5-level paging is on.
    La57,
    /// Long mode is not active (EFER.LMA clear).
    NotLongMode,
    /// CS cannot be a 64-bit code segment.
    Cs(SegmentError),
    /// TR cannot be a busy 64-bit TSS.
    Tr(SegmentError),
}

/// Number of fields [`guest_state`] produces.
pub const GUEST_FIELDS: usize = 51;

/// The guest-state fields for `s`, given the VMX fixed bits of CR0 and CR4
/// (must-be-one, may-be-one).
pub fn guest_state(
    s: &CpuSnapshot<'_>,
    cr0_fixed: (u64, u64),
    cr4_fixed: (u64, u64),
) -> Result<[(Field, u64); GUEST_FIELDS], GuestStateError> {
    const EFER_LMA: u64 = 1 << 10;
    let cr4 = s.cr4 | CR4_VMXE;
    if s.cr0 & cr0_fixed.0 != cr0_fixed.0 || s.cr0 & !cr0_fixed.1 != 0 {
        return Err(GuestStateError::Cr0Fixed);
    }
    if s.cr4 & CR4_LA57 != 0 {
        return Err(GuestStateError::La57);
    }
    if cr4 & cr4_fixed.0 != cr4_fixed.0 || cr4 & !cr4_fixed.1 != 0 {
        return Err(GuestStateError::Cr4Fixed);
    }
    if s.efer & EFER_LMA == 0 {
        return Err(GuestStateError::NotLongMode);
    }

    let t = DescriptorTables::from_gdtr(s.gdt, s.gdtr.1);
    let seg = |sel: u16| t.segment(sel).unwrap_or(SegmentState::unusable(sel));
    let cs = t.segment(s.sel.cs).map_err(GuestStateError::Cs)?;
    segment::check_cs_64(&cs).map_err(GuestStateError::Cs)?;
    let tr = t
        .system_segment(s.sel.tr)
        .and_then(segment::tr_for_vm_entry)
        .map_err(GuestStateError::Tr)?;
    let ldtr = t
        .system_segment(s.sel.ldtr)
        .unwrap_or(SegmentState::unusable(s.sel.ldtr));
    let es = seg(s.sel.es);
    let ss = seg(s.sel.ss);
    let ds = seg(s.sel.ds);
    let fs = seg(s.sel.fs).with_base(s.fs_base);
    let gs = seg(s.sel.gs).with_base(s.gs_base);
    let ar = |x: &SegmentState| u64::from(x.access_rights.0);

    use vmcs::*;
    Ok([
        (GUEST_ES_SELECTOR, u64::from(es.selector)),
        (GUEST_ES_BASE, es.base),
        (GUEST_ES_LIMIT, u64::from(es.limit)),
        (GUEST_ES_AR_BYTES, ar(&es)),
        (GUEST_CS_SELECTOR, u64::from(cs.selector)),
        (GUEST_CS_BASE, cs.base),
        (GUEST_CS_LIMIT, u64::from(cs.limit)),
        (GUEST_CS_AR_BYTES, ar(&cs)),
        (GUEST_SS_SELECTOR, u64::from(ss.selector)),
        (GUEST_SS_BASE, ss.base),
        (GUEST_SS_LIMIT, u64::from(ss.limit)),
        (GUEST_SS_AR_BYTES, ar(&ss)),
        (GUEST_DS_SELECTOR, u64::from(ds.selector)),
        (GUEST_DS_BASE, ds.base),
        (GUEST_DS_LIMIT, u64::from(ds.limit)),
        (GUEST_DS_AR_BYTES, ar(&ds)),
        (GUEST_FS_SELECTOR, u64::from(fs.selector)),
        (GUEST_FS_BASE, fs.base),
        (GUEST_FS_LIMIT, u64::from(fs.limit)),
        (GUEST_FS_AR_BYTES, ar(&fs)),
        (GUEST_GS_SELECTOR, u64::from(gs.selector)),
        (GUEST_GS_BASE, gs.base),
        (GUEST_GS_LIMIT, u64::from(gs.limit)),
        (GUEST_GS_AR_BYTES, ar(&gs)),
        (GUEST_LDTR_SELECTOR, u64::from(ldtr.selector)),
        (GUEST_LDTR_BASE, ldtr.base),
        (GUEST_LDTR_LIMIT, u64::from(ldtr.limit)),
        (GUEST_LDTR_AR_BYTES, ar(&ldtr)),
        (GUEST_TR_SELECTOR, u64::from(tr.selector)),
        (GUEST_TR_BASE, tr.base),
        (GUEST_TR_LIMIT, u64::from(tr.limit)),
        (GUEST_TR_AR_BYTES, ar(&tr)),
        (GUEST_GDTR_BASE, s.gdtr.0),
        (GUEST_GDTR_LIMIT, u64::from(s.gdtr.1)),
        (GUEST_IDTR_BASE, s.idtr.0),
        (GUEST_IDTR_LIMIT, u64::from(s.idtr.1)),
        (GUEST_CR0, s.cr0),
        (GUEST_CR3, s.cr3),
        (GUEST_CR4, cr4),
        (GUEST_DR7, s.dr7),
        (GUEST_IA32_EFER, s.efer),
        (GUEST_IA32_PAT, s.pat),
        (GUEST_IA32_DEBUGCTL, s.debugctl),
        (GUEST_SYSENTER_CS, s.sysenter[0]),
        (GUEST_SYSENTER_ESP, s.sysenter[1]),
        (GUEST_SYSENTER_EIP, s.sysenter[2]),
        (GUEST_RFLAGS, s.rflags & !RFLAGS_LAUNCH_CLEAR),
        (GUEST_INTERRUPTIBILITY_INFO, 0),
        (GUEST_ACTIVITY_STATE, 0),
        (GUEST_PENDING_DBG_EXCEPTIONS, 0),
        (VMCS_LINK_POINTER, NO_LINK),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An x86-64 Linux GDT: kernel CS 0x10, kernel DS 0x18, user DS 0x2b,
    /// user CS 0x33, the TSS at 0x40 (16 bytes).
    fn linux_gdt(tss_base: u64, tss_type: u64) -> [u64; 16] {
        let mut g = [0u64; 16];
        g[1] = 0x00cf_9b00_0000_ffff; // kernel CS 32
        g[2] = 0x00af_9b00_0000_ffff; // kernel CS 64
        g[3] = 0x00cf_9300_0000_ffff; // kernel DS
        g[4] = 0x00cf_fb00_0000_ffff; // user CS 32
        g[5] = 0x00cf_f300_0000_ffff; // user DS
        g[6] = 0x00af_fb00_0000_ffff; // user CS 64
        g[8] = 0x206f
            | (tss_base & 0xff_ffff) << 16
            | tss_type << 40
            | 1 << 47
            | ((tss_base >> 24) & 0xff) << 56;
        g[9] = tss_base >> 32;
        g
    }

    fn snapshot(gdt: &[u64]) -> CpuSnapshot<'_> {
        CpuSnapshot {
            cr0: 0x8005_0033,
            cr3: 0x0060_e004,
            cr4: 0x0077_06b0,
            dr7: 0x400,
            rflags: 0x46 | 0x1, // ZF, PF, bit 1, CF
            efer: 0xd01,
            pat: 0x0407_0506_0007_0406,
            debugctl: 0,
            sysenter: [0x10, 0xfffffe00_00003000, 0xffffffff_81a01520],
            fs_base: 0x7f00_1234_5000,
            gs_base: 0xffff_8880_1f20_0000,
            sel: Selectors {
                es: 0,
                cs: 0x10,
                ss: 0x18,
                ds: 0,
                fs: 0,
                gs: 0,
                ldtr: 0,
                tr: 0x40,
            },
            gdtr: (0xffff_fe00_0000_1000, 0x7f),
            idtr: (0xffff_fe00_0000_0000, 0xfff),
            gdt,
        }
    }

    const FIXED0: (u64, u64) = (0x8000_0021, 0xffff_ffff);
    const FIXED4: (u64, u64) = (0x2000, 0x0077_2fff);

    fn get(f: &[(Field, u64); GUEST_FIELDS], field: Field) -> u64 {
        let hits: std::vec::Vec<_> = f.iter().filter(|(x, _)| *x == field).collect();
        assert_eq!(
            hits.len(),
            1,
            "field {field:#x} written {} times",
            hits.len()
        );
        hits[0].1
    }

    extern crate std;

    #[test]
    fn a_running_linux_cpu() {
        let gdt = linux_gdt(0xffff_fe00_0000_3000, 11);
        let f = guest_state(&snapshot(&gdt), FIXED0, FIXED4).unwrap();
        use crate::hv::vmx::vmcs::*;
        // CR4 gets VMXE; CR0/CR3 as they are.
        assert_eq!(get(&f, GUEST_CR4), 0x0077_06b0 | CR4_VMXE);
        assert_eq!(get(&f, GUEST_CR0), 0x8005_0033);
        assert_eq!(get(&f, GUEST_CR3), 0x0060_e004);
        // 64-bit kernel code: L=1, D=0, G=1, accessed execute/read.
        assert_eq!(get(&f, GUEST_CS_AR_BYTES), 0xa09b);
        assert_eq!(get(&f, GUEST_CS_LIMIT), 0xffff_ffff);
        assert_eq!(get(&f, GUEST_SS_AR_BYTES), 0xc093);
        // Null DS/ES/FS/GS/LDTR: unusable (bit 16), DPL 0.
        for ar in [
            GUEST_DS_AR_BYTES,
            GUEST_ES_AR_BYTES,
            GUEST_FS_AR_BYTES,
            GUEST_GS_AR_BYTES,
            GUEST_LDTR_AR_BYTES,
        ] {
            assert_eq!(get(&f, ar), 1 << 16, "{ar:#x}");
        }
        // FS/GS bases from their MSRs even with null selectors.
        assert_eq!(get(&f, GUEST_FS_BASE), 0x7f00_1234_5000);
        assert_eq!(get(&f, GUEST_GS_BASE), 0xffff_8880_1f20_0000);
        // TR: busy 64-bit TSS, full 64-bit base, byte-granular limit.
        assert_eq!(get(&f, GUEST_TR_SELECTOR), 0x40);
        assert_eq!(get(&f, GUEST_TR_BASE), 0xffff_fe00_0000_3000);
        assert_eq!(get(&f, GUEST_TR_AR_BYTES), 0x8b);
        assert_eq!(get(&f, GUEST_TR_LIMIT), 0x206f);
        // CF and ZF cleared for the launch, everything else kept.
        assert_eq!(get(&f, GUEST_RFLAGS), 0x47 & !0x41);
        assert_eq!(get(&f, GUEST_IA32_EFER), 0xd01);
        assert_eq!(get(&f, GUEST_SYSENTER_EIP), 0xffffffff_81a01520);
        assert_eq!(get(&f, VMCS_LINK_POINTER), u64::MAX);
        assert_eq!(get(&f, GUEST_ACTIVITY_STATE), 0);
        assert_eq!(get(&f, GUEST_INTERRUPTIBILITY_INFO), 0);
        assert_eq!(get(&f, GUEST_GDTR_LIMIT), 0x7f);
        // Every field is a writable guest-state field, each written once.
        for (i, (field, _)) in f.iter().enumerate() {
            assert!(!is_read_only(*field));
            assert!(f[i + 1..].iter().all(|(g, _)| g != field));
        }
    }

    #[test]
    fn an_available_tss_is_entered_busy() {
        let gdt = linux_gdt(0x1000, 9);
        let f = guest_state(&snapshot(&gdt), FIXED0, FIXED4).unwrap();
        assert_eq!(get(&f, crate::hv::vmx::vmcs::GUEST_TR_AR_BYTES) & 0xf, 11);
    }

    #[test]
    fn states_vm_entry_would_refuse_are_errors() {
        let gdt = linux_gdt(0x1000, 11);
        let mut s = snapshot(&gdt);
        s.cr0 &= !1; // PE off: not allowed without unrestricted guest
        assert_eq!(
            guest_state(&s, FIXED0, FIXED4),
            Err(GuestStateError::Cr0Fixed)
        );
        let mut s = snapshot(&gdt);
        s.cr4 |= 1 << 30; // beyond CR4_FIXED1
        assert_eq!(
            guest_state(&s, FIXED0, FIXED4),
            Err(GuestStateError::Cr4Fixed)
        );
        let mut s = snapshot(&gdt);
        s.cr4 |= CR4_LA57;
        assert_eq!(guest_state(&s, FIXED0, FIXED4), Err(GuestStateError::La57));
        let mut s = snapshot(&gdt);
        s.efer &= !(1 << 10);
        assert_eq!(
            guest_state(&s, FIXED0, FIXED4),
            Err(GuestStateError::NotLongMode)
        );
        let mut s = snapshot(&gdt);
        s.sel.cs = 0x08; // 32-bit code segment
        assert!(matches!(
            guest_state(&s, FIXED0, FIXED4),
            Err(GuestStateError::Cs(_))
        ));
        let mut s = snapshot(&gdt);
        s.sel.tr = 0;
        assert!(matches!(
            guest_state(&s, FIXED0, FIXED4),
            Err(GuestStateError::Tr(_))
        ));
        let mut s = snapshot(&gdt);
        s.sel.tr = 0x18; // a data segment
        assert!(matches!(
            guest_state(&s, FIXED0, FIXED4),
            Err(GuestStateError::Tr(_))
        ));
        let mut s = snapshot(&gdt);
        s.sel.tr = 0x78; // beyond the GDT limit
        assert!(matches!(
            guest_state(&s, FIXED0, FIXED4),
            Err(GuestStateError::Tr(_))
        ));
    }

    #[test]
    fn user_data_selectors_left_by_user_space_are_usable() {
        let gdt = linux_gdt(0x1000, 11);
        let mut s = snapshot(&gdt);
        s.sel.ds = 0x2b;
        s.sel.es = 0x2b;
        let f = guest_state(&s, FIXED0, FIXED4).unwrap();
        use crate::hv::vmx::vmcs::*;
        assert_eq!(get(&f, GUEST_DS_AR_BYTES), 0xc0f3);
        assert_eq!(get(&f, GUEST_DS_SELECTOR), 0x2b);
    }
}
