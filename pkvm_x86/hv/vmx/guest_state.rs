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
//! VMCS), written through [`VmcsAccess`]; and, the other way round, the
//! host register state that CPU teardown reads back out of the VMCS
//! ([`HostCpuState`]).  Reading the registers and loading them again is
//! the caller's (`crate::host::launch`, the exit handler's teardown); guest
//! RSP and RIP are written by the launch itself.

use crate::hv::vmx::event::Interruptibility;
use crate::hv::vmx::exit::CR4_VMXE;
use crate::hv::vmx::segment::{self, DescriptorTables, SegmentError, SegmentState};
use crate::hv::vmx::vmcs::*;

/// CR4.LA57 (5-level paging): pkvm's own page table has 4 levels.
pub const CR4_LA57: u64 = 1 << 12;
/// RFLAGS bits the in-place launch needs clear in GUEST_RFLAGS (CF, ZF:
/// they tell a successful entry from VMfail at the instruction after
/// VMLAUNCH).
pub const RFLAGS_LAUNCH_CLEAR: u64 = (1 << 0) | (1 << 6);

/// Selectors of the running CPU.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
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

/// The guest state of the running CPU, computed by [`guest_state`]: one
/// typed value per guest-state field the launch writes, except guest RSP
/// and RIP (written by the in-place VMLAUNCH itself).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestState {
    /// ES, CS, SS, DS, FS, GS, LDTR, TR, in that order.
    pub segments: [SegmentState; 8],
    /// GDTR base and limit.
    pub gdtr: (u64, u16),
    /// IDTR base and limit.
    pub idtr: (u64, u16),
    /// CR0.
    pub cr0: u64,
    /// CR3.
    pub cr3: u64,
    /// CR4 with VMXE.
    pub cr4: u64,
    /// DR7.
    pub dr7: u64,
    /// IA32_EFER.
    pub efer: u64,
    /// IA32_PAT.
    pub pat: u64,
    /// IA32_DEBUGCTL.
    pub debugctl: u64,
    /// IA32_SYSENTER_CS (a 32-bit field).
    pub sysenter_cs: u32,
    /// IA32_SYSENTER_ESP.
    pub sysenter_esp: u64,
    /// IA32_SYSENTER_EIP.
    pub sysenter_eip: u64,
    /// RFLAGS with [`RFLAGS_LAUNCH_CLEAR`] cleared.
    pub rflags: u64,
}

/// The selector, base, limit and access-rights fields of one segment
/// register.
type SegmentFields = (Field<u16>, Field<u64>, Field<u32>, Field<u32>);

/// The fields of each segment register, in the order of
/// [`GuestState::segments`].
const SEGMENT_FIELDS: [SegmentFields; 8] = [
    (
        GUEST_ES_SELECTOR,
        GUEST_ES_BASE,
        GUEST_ES_LIMIT,
        GUEST_ES_AR_BYTES,
    ),
    (
        GUEST_CS_SELECTOR,
        GUEST_CS_BASE,
        GUEST_CS_LIMIT,
        GUEST_CS_AR_BYTES,
    ),
    (
        GUEST_SS_SELECTOR,
        GUEST_SS_BASE,
        GUEST_SS_LIMIT,
        GUEST_SS_AR_BYTES,
    ),
    (
        GUEST_DS_SELECTOR,
        GUEST_DS_BASE,
        GUEST_DS_LIMIT,
        GUEST_DS_AR_BYTES,
    ),
    (
        GUEST_FS_SELECTOR,
        GUEST_FS_BASE,
        GUEST_FS_LIMIT,
        GUEST_FS_AR_BYTES,
    ),
    (
        GUEST_GS_SELECTOR,
        GUEST_GS_BASE,
        GUEST_GS_LIMIT,
        GUEST_GS_AR_BYTES,
    ),
    (
        GUEST_LDTR_SELECTOR,
        GUEST_LDTR_BASE,
        GUEST_LDTR_LIMIT,
        GUEST_LDTR_AR_BYTES,
    ),
    (
        GUEST_TR_SELECTOR,
        GUEST_TR_BASE,
        GUEST_TR_LIMIT,
        GUEST_TR_AR_BYTES,
    ),
];

impl GuestState {
    /// Writes every guest-state field of this state into `v`, together
    /// with the non-register state of a running CPU: active, no blocking,
    /// no pending debug exceptions, no link VMCS.
    pub fn write(&self, v: &mut impl VmcsAccess) -> Result<(), VmcsError> {
        for (s, &(sel, base, limit, ar)) in self.segments.iter().zip(SEGMENT_FIELDS.iter()) {
            v.write(sel, s.selector)?;
            v.write(base, s.base)?;
            v.write(limit, s.limit)?;
            v.write(ar, s.access_rights.0)?;
        }
        v.write(GUEST_GDTR_BASE, self.gdtr.0)?;
        v.write(GUEST_GDTR_LIMIT, u32::from(self.gdtr.1))?;
        v.write(GUEST_IDTR_BASE, self.idtr.0)?;
        v.write(GUEST_IDTR_LIMIT, u32::from(self.idtr.1))?;
        v.write(GUEST_CR0, self.cr0)?;
        v.write(GUEST_CR3, self.cr3)?;
        v.write(GUEST_CR4, self.cr4)?;
        v.write(GUEST_DR7, self.dr7)?;
        v.write(GUEST_IA32_EFER, self.efer)?;
        v.write(GUEST_IA32_PAT, self.pat)?;
        v.write(GUEST_IA32_DEBUGCTL, self.debugctl)?;
        v.write(GUEST_SYSENTER_CS, self.sysenter_cs)?;
        v.write(GUEST_SYSENTER_ESP, self.sysenter_esp)?;
        v.write(GUEST_SYSENTER_EIP, self.sysenter_eip)?;
        v.write(GUEST_RFLAGS, self.rflags)?;
        v.write(GUEST_INTERRUPTIBILITY_INFO, Interruptibility::default().0)?;
        v.write(GUEST_ACTIVITY_STATE, 0)?;
        v.write(GUEST_PENDING_DBG_EXCEPTIONS, 0)?;
        v.write(VMCS_LINK_POINTER, NO_LINK)
    }
}

/// The guest state for `s`, given the VMX fixed bits of CR0 and CR4
/// (must-be-one, may-be-one).
pub fn guest_state(
    s: &CpuSnapshot<'_>,
    cr0_fixed: (u64, u64),
    cr4_fixed: (u64, u64),
) -> Result<GuestState, GuestStateError> {
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

    Ok(GuestState {
        segments: [es, cs, ss, ds, fs, gs, ldtr, tr],
        gdtr: s.gdtr,
        idtr: s.idtr,
        cr0: s.cr0,
        cr3: s.cr3,
        cr4,
        dr7: s.dr7,
        efer: s.efer,
        pat: s.pat,
        debugctl: s.debugctl,
        sysenter_cs: s.sysenter[0] as u32,
        sysenter_esp: s.sysenter[1],
        sysenter_eip: s.sysenter[2],
        rflags: s.rflags & !RFLAGS_LAUNCH_CLEAR,
    })
}

/// What CPU teardown puts back on the CPU when it leaves VMX operation:
/// the host's register state as the VMCS holds it at the TEARDOWN_CPU
/// exit.  The fields it comes from are the [`Marks::CARRY`] set of the
/// table (plus the CR4 read shadow, for the VMXE bit the host believes in);
/// TR is reloaded by the host itself, LDTR and the hidden parts of the
/// segment registers are not restored.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HostCpuState {
    /// RIP (of the instruction after the VMCALL).
    pub rip: u64,
    /// RSP.
    pub rsp: u64,
    /// RFLAGS.
    pub rflags: u64,
    /// CR0.
    pub cr0: u64,
    /// CR3.
    pub cr3: u64,
    /// CR4: the real one, with VMXE as the host believes it to be.
    pub cr4: u64,
    /// GDTR base and limit.
    pub gdtr: (u64, u16),
    /// IDTR base and limit.
    pub idtr: (u64, u16),
    /// Selectors ES, CS, SS, DS, FS, GS (LDTR and TR stay 0 here).
    pub sel: Selectors,
    /// IA32_FS_BASE.
    pub fs_base: u64,
    /// IA32_GS_BASE.
    pub gs_base: u64,
    /// IA32_PAT.
    pub pat: u64,
    /// IA32_EFER.
    pub efer: u64,
    /// IA32_DEBUGCTL.
    pub debugctl: u64,
    /// IA32_SYSENTER_CS.
    pub sysenter_cs: u32,
    /// IA32_SYSENTER_ESP.
    pub sysenter_esp: u64,
    /// IA32_SYSENTER_EIP.
    pub sysenter_eip: u64,
    /// DR7.
    pub dr7: u64,
}

impl HostCpuState {
    /// Reads the host's register state out of `v`.
    pub fn read(v: &impl VmcsAccess) -> Result<Self, VmcsError> {
        let cr4_real = v.read(GUEST_CR4)?;
        let cr4_shadow = v.read(CR4_READ_SHADOW)?;
        Ok(Self {
            rip: v.read(GUEST_RIP)?,
            rsp: v.read(GUEST_RSP)?,
            rflags: v.read(GUEST_RFLAGS)?,
            cr0: v.read(GUEST_CR0)?,
            cr3: v.read(GUEST_CR3)?,
            cr4: (cr4_real & !CR4_VMXE) | (cr4_shadow & CR4_VMXE),
            gdtr: (v.read(GUEST_GDTR_BASE)?, v.read(GUEST_GDTR_LIMIT)? as u16),
            idtr: (v.read(GUEST_IDTR_BASE)?, v.read(GUEST_IDTR_LIMIT)? as u16),
            sel: Selectors {
                es: v.read(GUEST_ES_SELECTOR)?,
                cs: v.read(GUEST_CS_SELECTOR)?,
                ss: v.read(GUEST_SS_SELECTOR)?,
                ds: v.read(GUEST_DS_SELECTOR)?,
                fs: v.read(GUEST_FS_SELECTOR)?,
                gs: v.read(GUEST_GS_SELECTOR)?,
                ldtr: 0,
                tr: 0,
            },
            fs_base: v.read(GUEST_FS_BASE)?,
            gs_base: v.read(GUEST_GS_BASE)?,
            pat: v.read(GUEST_IA32_PAT)?,
            efer: v.read(GUEST_IA32_EFER)?,
            debugctl: v.read(GUEST_IA32_DEBUGCTL)?,
            sysenter_cs: v.read(GUEST_SYSENTER_CS)?,
            sysenter_esp: v.read(GUEST_SYSENTER_ESP)?,
            sysenter_eip: v.read(GUEST_SYSENTER_EIP)?,
            dr7: v.read(GUEST_DR7)?,
        })
    }
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

    extern crate std;
    use crate::hv::vmx::vmcs::fields::{marked, Group, Marks, FIELDS};
    use core::cell::Cell;
    use std::collections::BTreeSet;

    /// Writes the guest state for `s` into a fresh in-memory VMCS.
    fn launch(s: &CpuSnapshot<'_>) -> MemVmcs {
        let mut v = MemVmcs::new();
        guest_state(s, FIXED0, FIXED4)
            .unwrap()
            .write(&mut v)
            .unwrap();
        v
    }

    fn get<T: FieldValue>(v: &MemVmcs, f: Field<T>) -> T {
        assert!(
            v.was_written(f.encoding()),
            "{:#x} not written",
            f.encoding()
        );
        v.read(f).unwrap()
    }

    /// A VMCS that records which fields were read.
    struct Recorder<'a> {
        inner: &'a MemVmcs,
        read: [Cell<bool>; FIELDS.len()],
    }

    impl VmcsAccess for Recorder<'_> {
        fn read_raw(&self, encoding: u32) -> Result<u64, VmcsError> {
            if let Some(i) = crate::hv::vmx::vmcs::fields::index_of(encoding) {
                self.read[i].set(true);
            }
            self.inner.read_raw(encoding)
        }
        fn write_raw(&mut self, _: u32, _: u64) -> Result<(), VmcsError> {
            panic!("teardown must only read");
        }
    }

    fn names(it: impl Iterator<Item = usize>) -> BTreeSet<&'static str> {
        it.map(|i| FIELDS[i].name).collect()
    }

    #[test]
    fn a_running_linux_cpu() {
        let gdt = linux_gdt(0xffff_fe00_0000_3000, 11);
        let f = launch(&snapshot(&gdt));
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
            assert_eq!(get(&f, ar), 1 << 16, "{:#x}", ar.encoding());
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
        assert_eq!(get(&f, GUEST_SYSENTER_CS), 0x10);
        assert_eq!(get(&f, GUEST_SYSENTER_EIP), 0xffffffff_81a01520);
        assert_eq!(get(&f, VMCS_LINK_POINTER), u64::MAX);
        assert_eq!(get(&f, GUEST_ACTIVITY_STATE), 0);
        assert_eq!(get(&f, GUEST_INTERRUPTIBILITY_INFO), 0);
        assert_eq!(get(&f, GUEST_PENDING_DBG_EXCEPTIONS), 0);
        assert_eq!(get(&f, GUEST_GDTR_LIMIT), 0x7f);
        assert_eq!(get(&f, GUEST_IDTR_BASE), 0xffff_fe00_0000_0000);
    }

    /// The launch writes exactly the guest-state fields the table marks
    /// LAUNCH (RSP and RIP are the in-place VMLAUNCH's own); teardown reads
    /// back exactly those marked CARRY (and the CR4 read shadow); and what
    /// it reads is what the launch captured.
    #[test]
    fn launch_captures_what_teardown_restores() {
        let gdt = linux_gdt(0xffff_fe00_0000_3000, 11);
        let s = snapshot(&gdt);
        let mut v = launch(&s);
        let written = names(v.written());
        let mut want: BTreeSet<_> = marked(Marks::LAUNCH)
            .filter(|f| f.group == Group::Guest)
            .map(|f| f.name)
            .collect();
        assert!(want.remove("GUEST_RSP") && want.remove("GUEST_RIP"));
        assert_eq!(written, want, "guest state written at launch");

        // The launch itself: RSP/RIP of the VMLAUNCH, CR4 shadow as the
        // host wrote it (host_vmcs).
        v.write(GUEST_RSP, 0xffff_c900_0001_3e80).unwrap();
        v.write(GUEST_RIP, 0xffff_ffff_c000_1234).unwrap();
        v.write(CR4_READ_SHADOW, s.cr4).unwrap();

        let r = Recorder {
            inner: &v,
            read: core::array::from_fn(|_| Cell::new(false)),
        };
        let back = HostCpuState::read(&r).unwrap();
        let read = names((0..FIELDS.len()).filter(|&i| r.read[i].get()));
        let mut want: BTreeSet<_> = marked(Marks::CARRY).map(|f| f.name).collect();
        want.insert("CR4_READ_SHADOW");
        assert_eq!(read, want, "state teardown puts back");

        // Values: the CPU as it was, except the RFLAGS bits the launch
        // clears, and CR4.VMXE as the host set it (clear).
        let sel = Selectors {
            ldtr: 0,
            tr: 0,
            ..s.sel
        };
        let expect = HostCpuState {
            rip: 0xffff_ffff_c000_1234,
            rsp: 0xffff_c900_0001_3e80,
            rflags: s.rflags & !RFLAGS_LAUNCH_CLEAR,
            cr0: s.cr0,
            cr3: s.cr3,
            cr4: s.cr4,
            gdtr: s.gdtr,
            idtr: s.idtr,
            sel,
            fs_base: s.fs_base,
            gs_base: s.gs_base,
            pat: s.pat,
            efer: s.efer,
            debugctl: s.debugctl,
            sysenter_cs: s.sysenter[0] as u32,
            sysenter_esp: s.sysenter[1],
            sysenter_eip: s.sysenter[2],
            dr7: s.dr7,
        };
        assert_eq!(back, expect);

        // A host that set CR4.VMXE itself gets it back.
        v.write(CR4_READ_SHADOW, s.cr4 | CR4_VMXE).unwrap();
        assert_eq!(HostCpuState::read(&v).unwrap().cr4, s.cr4 | CR4_VMXE);
        // A VMCS that cannot be read is an error, not zeros.
        struct Broken;
        impl VmcsAccess for Broken {
            fn read_raw(&self, _: u32) -> Result<u64, VmcsError> {
                Err(VmcsError::NoCurrentVmcs)
            }
            fn write_raw(&mut self, _: u32, _: u64) -> Result<(), VmcsError> {
                Err(VmcsError::NoCurrentVmcs)
            }
        }
        assert_eq!(HostCpuState::read(&Broken), Err(VmcsError::NoCurrentVmcs));
    }

    #[test]
    fn an_available_tss_is_entered_busy() {
        let gdt = linux_gdt(0x1000, 9);
        let f = launch(&snapshot(&gdt));
        assert_eq!(get(&f, GUEST_TR_AR_BYTES) & 0xf, 11);
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
        let f = launch(&s);
        assert_eq!(get(&f, GUEST_DS_AR_BYTES), 0xc0f3);
        assert_eq!(get(&f, GUEST_DS_SELECTOR), 0x2b);
    }
}
