// SPDX-License-Identifier: GPL-2.0

//! The controls and host state of the host's VMCS, as the launch writes
//! them: [`write_controls_and_host_state`] over any [`VmcsAccess`] (the
//! hardware's current VMCS at launch, a [`MemVmcs`](crate::hv::vmx::vmcs::MemVmcs)
//! in tests).
//!
//! Owns which value goes into each control and host-state field; the
//! values themselves (control words from `crate::hv::host_policy::host_controls`, addresses of the
//! hypervisor's structures, the MSRs read off the CPU) are the caller's.
//! The guest state is `guest_state`'s.

use crate::hv::host_policy::{self, HostControls};
use crate::hv::vmx::caps::ctl;

use crate::hv::vmx::vmcs::*;

/// VPID used for the host on every CPU (0 is reserved for root mode).
pub const HOST_VPID: u16 = 1;

/// What the launch of one CPU puts into the controls and the host-state
/// area.
#[derive(Clone, Copy, Debug, Default)]
pub struct HostVmcs {
    /// The VM-execution, VM-exit and VM-entry controls, and whether the
    /// host's translations are tagged with [`HOST_VPID`]
    /// (`host_policy::host_controls`).
    pub controls: HostControls,
    /// Physical address of the MSR bitmap.
    pub msr_bitmap_pa: u64,
    /// The host EPT's EPTP.
    pub eptp: u64,
    /// The CPU's CR0 (host CR0 and the CR0 read shadow).
    pub cr0: u64,
    /// The CPU's CR4 before VMXON, without VMXE (the CR4 read shadow; host
    /// CR4 is built from it by `host_policy::host_cr4`: an allow-list, not
    /// a copy).
    pub cr4: u64,
    /// CR3 of the hypervisor's page table.
    pub host_cr3: u64,
    /// Host CS selector.
    pub cs: u16,
    /// Host SS selector.
    pub ss: u16,
    /// Host TR selector.
    pub tr: u16,
    /// Host GS base: the hypervisor's per-CPU area.
    pub gs_base: u64,
    /// Host TR base: the hypervisor's TSS.
    pub tr_base: u64,
    /// Host GDTR base.
    pub gdtr_base: u64,
    /// Host IDTR base: the root-mode IDT.
    pub idtr_base: u64,
    /// IA32_SYSENTER_CS of the CPU.
    pub sysenter_cs: u32,
    /// IA32_SYSENTER_ESP of the CPU.
    pub sysenter_esp: u64,
    /// IA32_SYSENTER_EIP of the CPU.
    pub sysenter_eip: u64,
    /// IA32_EFER of the CPU.
    pub efer: u64,
    /// IA32_PAT of the CPU.
    pub pat: u64,
    /// Host RSP: the top of the hypervisor's stack for this CPU.
    pub rsp: u64,
    /// Host RIP: the VM-exit entry point.
    pub rip: u64,
}

/// Writes every control and host-state field the launch sets: the control
/// words, no exceptions or MSR lists, no event to inject, CR4.VMXE owned
/// by the hypervisor (shadowed), the MSR bitmap, the EPTP, no TSC offset,
/// the VPID and the XSS-exiting bitmap when their controls are on, and
/// the hypervisor's own host state.
pub fn write_controls_and_host_state(
    v: &mut impl VmcsAccess,
    h: &HostVmcs,
) -> Result<(), VmcsError> {
    v.write(PIN_BASED_VM_EXEC_CONTROL, h.controls.pin)?;
    v.write(CPU_BASED_VM_EXEC_CONTROL, h.controls.proc1)?;
    v.write(SECONDARY_VM_EXEC_CONTROL, h.controls.proc2)?;
    v.write(VM_EXIT_CONTROLS, h.controls.exit)?;
    v.write(VM_ENTRY_CONTROLS, h.controls.entry)?;
    v.write(EXCEPTION_BITMAP, 0)?;
    v.write(PAGE_FAULT_ERROR_CODE_MASK, 0)?;
    v.write(PAGE_FAULT_ERROR_CODE_MATCH, 0)?;
    v.write(CR3_TARGET_COUNT, 0)?;
    v.write(VM_EXIT_MSR_STORE_COUNT, 0)?;
    v.write(VM_EXIT_MSR_LOAD_COUNT, 0)?;
    v.write(VM_ENTRY_MSR_LOAD_COUNT, 0)?;
    v.write(VM_ENTRY_INTR_INFO, 0)?;
    v.write(CR0_GUEST_HOST_MASK, host_policy::CR0_GUEST_HOST_MASK)?;
    v.write(CR0_READ_SHADOW, h.cr0)?;
    v.write(CR4_GUEST_HOST_MASK, host_policy::CR4_GUEST_HOST_MASK)?;
    v.write(CR4_READ_SHADOW, h.cr4)?;
    v.write(MSR_BITMAP, h.msr_bitmap_pa)?;
    v.write(EPT_POINTER, h.eptp)?;
    v.write(TSC_OFFSET, 0)?;
    if h.controls.vpid {
        v.write(VIRTUAL_PROCESSOR_ID, HOST_VPID)?;
    }
    if h.controls.proc2 & ctl::PROC2_XSAVES != 0 {
        // XSAVES/XRSTORS of the components whose MSRs must not follow the
        // host's choice into root mode exit (see `host_policy::XSS_REFUSED`).
        v.write(XSS_EXIT_BITMAP, host_policy::XSS_EXIT_BITMAP)?;
    }

    v.write(HOST_CR0, h.cr0)?;
    v.write(HOST_CR3, h.host_cr3)?;
    v.write(HOST_CR4, host_policy::host_cr4(h.cr4))?;
    if h.controls.exit & host_policy::EXIT_LOAD_PERF_GLOBAL_CTRL != 0 {
        // No performance counter runs in root mode (no PEBS record is
        // written through root mode's CR3).
        v.write(HOST_IA32_PERF_GLOBAL_CTRL, 0)?;
    }
    v.write(HOST_CS_SELECTOR, h.cs)?;
    v.write(HOST_SS_SELECTOR, h.ss)?;
    v.write(HOST_DS_SELECTOR, 0)?;
    v.write(HOST_ES_SELECTOR, 0)?;
    v.write(HOST_FS_SELECTOR, 0)?;
    v.write(HOST_GS_SELECTOR, 0)?;
    v.write(HOST_TR_SELECTOR, h.tr)?;
    v.write(HOST_FS_BASE, 0)?;
    v.write(HOST_GS_BASE, h.gs_base)?;
    v.write(HOST_TR_BASE, h.tr_base)?;
    v.write(HOST_GDTR_BASE, h.gdtr_base)?;
    v.write(HOST_IDTR_BASE, h.idtr_base)?;
    v.write(HOST_IA32_SYSENTER_CS, h.sysenter_cs)?;
    v.write(HOST_SYSENTER_ESP, h.sysenter_esp)?;
    v.write(HOST_SYSENTER_EIP, h.sysenter_eip)?;
    v.write(HOST_IA32_EFER, h.efer)?;
    v.write(HOST_IA32_PAT, h.pat)?;
    v.write(HOST_RSP, h.rsp)?;
    v.write(HOST_RIP, h.rip)
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use crate::hv::vmx::exit::CR4_VMXE;
    use crate::hv::vmx::vmcs::fields::{marked, Group, Marks, FIELDS};
    use std::collections::BTreeSet;

    fn sample(vpid: bool, proc2: u32) -> HostVmcs {
        HostVmcs {
            controls: HostControls {
                pin: 0x16,
                proc1: 0x9400_6172,
                proc2,
                exit: 0x003f_efff,
                entry: 0x0000_d3ff,
                vpid,
                perf_global_switched: false,
            },
            msr_bitmap_pa: 0x1_2345_6000,
            eptp: 0x1_0000_005e,
            cr0: 0x8005_0033,
            cr4: 0x0077_06b0,
            host_cr3: 0x4000_0000,
            cs: 0x10,
            ss: 0x18,
            tr: 0x20,
            gs_base: 0xffff_c900_0000_0000,
            tr_base: 0xffff_c900_0010_1000,
            gdtr_base: 0xffff_c900_0010_0000,
            idtr_base: 0xffff_c900_0020_0000,
            sysenter_cs: 0x10,
            sysenter_esp: 0xffff_fe00_0000_3000,
            sysenter_eip: 0xffff_ffff_81a0_1520,
            efer: 0xd01,
            pat: 0x0407_0506_0007_0406,
            rsp: 0xffff_c900_0030_0ff0,
            rip: 0xffff_ffff_c000_4000,
        }
    }

    fn written(v: &MemVmcs) -> BTreeSet<&'static str> {
        v.written().map(|i| FIELDS[i].name).collect()
    }

    /// Everything the launch must set in controls and host state is set:
    /// exactly the table's LAUNCH fields outside the guest-state area, and
    /// every host-state field whose loading no control makes optional.
    #[test]
    fn every_launch_field_is_written() {
        let mut v = MemVmcs::new();
        write_controls_and_host_state(&mut v, &sample(true, ctl::PROC2_XSAVES | 0x82)).unwrap();
        let want: BTreeSet<_> = marked(Marks::LAUNCH)
            .filter(|f| f.group != Group::Guest)
            .map(|f| f.name)
            .collect();
        assert_eq!(written(&v), want);
        // Host-state fields only loaded under an exit control pkvm leaves
        // off (PERF_GLOBAL_CTRL, PKRS, CET) are the only ones not written.
        let optional = [
            "HOST_IA32_PERF_GLOBAL_CTRL",
            "HOST_IA32_PKRS",
            "HOST_S_CET",
            "HOST_SSP",
            "HOST_INTR_SSP_TABLE",
        ];
        for f in FIELDS.iter().filter(|f| f.group == Group::Host) {
            assert_eq!(
                v.was_written(f.encoding),
                !optional.contains(&f.name),
                "{}",
                f.name
            );
        }

        // Without VPID and XSAVES their fields stay untouched.
        let mut v = MemVmcs::new();
        write_controls_and_host_state(&mut v, &sample(false, 0x82)).unwrap();
        let w = written(&v);
        assert!(!w.contains("VIRTUAL_PROCESSOR_ID") && !w.contains("XSS_EXIT_BITMAP"));
        assert_eq!(w.len(), want.len() - 2);
    }

    #[test]
    fn values_and_widths() {
        let h = sample(true, ctl::PROC2_XSAVES);
        let mut v = MemVmcs::new();
        write_controls_and_host_state(&mut v, &h).unwrap();
        // 0x0077_06b0 has PKE (22), FSGSBASE (16), PCIDE (17), DE (3),
        // which root mode does not keep.
        assert_eq!(v.read(HOST_CR4), Ok(0x0034_06a0 | CR4_VMXE));
        assert_eq!(v.read(XSS_EXIT_BITMAP), Ok(host_policy::XSS_EXIT_BITMAP));
        assert!(!v.was_written(HOST_IA32_PERF_GLOBAL_CTRL.encoding()));
        let perf = HostVmcs {
            controls: HostControls {
                exit: h.controls.exit | host_policy::EXIT_LOAD_PERF_GLOBAL_CTRL,
                ..h.controls
            },
            ..h
        };
        let mut v2 = MemVmcs::new();
        write_controls_and_host_state(&mut v2, &perf).unwrap();
        assert_eq!(v2.read(HOST_IA32_PERF_GLOBAL_CTRL), Ok(0));
        assert_eq!(v.read(CR4_READ_SHADOW), Ok(h.cr4));
        assert_eq!(v.read(CR4_GUEST_HOST_MASK), Ok(CR4_VMXE));
        assert_eq!(v.read(CR0_READ_SHADOW), Ok(h.cr0));
        assert_eq!(v.read(HOST_CS_SELECTOR), Ok(0x10u16));
        assert_eq!(v.read(HOST_TR_SELECTOR), Ok(0x20u16));
        assert_eq!(v.read(VIRTUAL_PROCESSOR_ID), Ok(HOST_VPID));
        assert_eq!(v.read(HOST_IA32_SYSENTER_CS), Ok(0x10u32));
        assert_eq!(v.read(HOST_RIP), Ok(h.rip));
        assert_eq!(v.read(HOST_RSP), Ok(h.rsp));
        assert_eq!(v.read(EPT_POINTER), Ok(h.eptp));
        assert_eq!(v.read(CPU_BASED_VM_EXEC_CONTROL), Ok(h.controls.proc1));
        assert_eq!(v.read(VM_ENTRY_INTR_INFO), Ok(0));
        // Raw reads see the widths: a 16-bit selector is 16 bits wide.
        assert_eq!(v.read_raw(HOST_CS_SELECTOR.encoding()), Ok(0x10));
    }
}
