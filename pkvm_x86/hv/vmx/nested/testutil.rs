// SPDX-License-Identifier: GPL-2.0

//! Test fixtures of nested VMX: the offer (Bochs icelake capabilities
//! reduced to a plausible allow-list), a vmcs12 as the stock `kvm_intel`
//! with shadow paging writes it, and the hypervisor's vmcs01 of a host
//! that executed VMLAUNCH.

use super::controls::*;
use super::entry_checks::EntryEnv;
use crate::hv::host_policy;
use crate::hv::vmx::caps::tests::icelake;
use crate::hv::vmx::caps::{AllowedCtls, VmxCaps};
use crate::hv::vmx::host_vmcs::{write_controls_and_host_state, HostVmcs};
use crate::hv::vmx::vmcs::{self as f, MemVmcs, VmcsAccess, NO_LINK};

/// The real CPU: Bochs icelake.
pub(crate) fn hw() -> VmxCaps {
    VmxCaps::decode(&icelake()).unwrap()
}

fn restrict(a: AllowedCtls, keep: u32) -> AllowedCtls {
    AllowedCtls {
        must_be_one: a.must_be_one,
        may_be_one: a.may_be_one & (keep | a.must_be_one),
    }
}

/// What the hypervisor offers the host with EPT hidden (the running
/// module's default view, `nested_ept=0`): the real capabilities
/// reduced to the mergeable controls (EPT, unrestricted guest, posted
/// interrupts, PML, ... hidden).
pub(crate) fn offer() -> VmxCaps {
    let c = hw();
    VmxCaps {
        pinbased: restrict(c.pinbased, MERGEABLE_PIN),
        procbased: restrict(c.procbased, MERGEABLE_PROC1),
        procbased2: restrict(
            c.procbased2,
            MERGEABLE_PROC2 & !(proc2::EPT | proc2::UNRESTRICTED_GUEST),
        ),
        exit: restrict(c.exit, MERGEABLE_EXIT),
        entry: restrict(c.entry, MERGEABLE_ENTRY),
        ept_vpid_cap: c.ept_vpid_cap & !0xffff_ffff,
        vmfunc: 0,
        ..c
    }
}

/// [`offer`] with EPT and unrestricted guest offered, and the EPT
/// capabilities the view offers with them (`offer::EPT_CAP_OFFERED`).
pub(crate) fn offer_ept() -> VmxCaps {
    let c = hw();
    let mut o = offer();
    o.procbased2.may_be_one |= c.procbased2.may_be_one & (proc2::EPT | proc2::UNRESTRICTED_GUEST);
    o.ept_vpid_cap |= c.ept_vpid_cap & super::offer::EPT_CAP_OFFERED;
    o
}

/// The EPT pointer of [`vmcs12_ept`]: EPT12's PML4 at 0x5_0000_0000,
/// write-back, 4 levels, no A/D.
pub(crate) const EPTP12: u64 = 0x5_0000_0000 | 3 << 3 | 6;

/// A vmcs12 as `kvm_intel` with EPT and unrestricted guest prepares it:
/// [`vmcs12`] with EPT, unrestricted guest and [`EPTP12`], and without the
/// CR3-load/store and INVLPG exiting shadow paging needs.
pub(crate) fn vmcs12_ept() -> MemVmcs {
    let mut v = vmcs12();
    let p1 = v.read(f::CPU_BASED_VM_EXEC_CONTROL).unwrap()
        & !(proc1::CR3_LOAD | proc1::CR3_STORE | proc1::INVLPG);
    v.write(f::CPU_BASED_VM_EXEC_CONTROL, p1).unwrap();
    let p2 = v.read(f::SECONDARY_VM_EXEC_CONTROL).unwrap();
    v.write(
        f::SECONDARY_VM_EXEC_CONTROL,
        p2 | proc2::EPT | proc2::UNRESTRICTED_GUEST,
    )
    .unwrap();
    v.write(f::EPT_POINTER, EPTP12).unwrap();
    // The guest's CR3 is a guest-physical address now.
    v.write(f::GUEST_CR3, 0x1000).unwrap();
    v
}

/// The environment of the checks: 40-bit physical addresses, 48-bit
/// linear addresses, a 64-bit host, four general and three fixed counters.
pub(crate) fn env() -> EntryEnv {
    EntryEnv {
        maxphyaddr: 40,
        linear_bits: 48,
        l1_ia32e: true,
        cr4_supported: 0x0077_2fff,
        perf_global_valid: 0x7_0000_000f,
    }
}

/// Host CR4 of a Linux host in VMX operation.
pub(crate) const HOST_CR4: u64 = 0x0037_26b0;
/// Host CR0 of a Linux host.
pub(crate) const HOST_CR0: u64 = 0x8005_0033;

/// A vmcs12 as `kvm_intel` (shadow paging, no APICv) prepares it before
/// VMLAUNCH: controls, a 64-bit guest and the host's own state.
pub(crate) fn vmcs12() -> MemVmcs {
    let o = offer();
    let mut v = MemVmcs::new();
    let w = |v: &mut MemVmcs, e: u32, x: u64| v.write_raw(e, x).unwrap();
    w(
        &mut v,
        f::PIN_BASED_VM_EXEC_CONTROL.encoding(),
        u64::from(o.pinbased.must_be_one | pin::EXT_INTR | pin::NMI | pin::VIRTUAL_NMIS),
    );
    let p1 = proc1::HLT
        | proc1::INVLPG
        | proc1::MWAIT
        | proc1::RDPMC
        | proc1::CR3_LOAD
        | proc1::CR3_STORE
        | proc1::TPR_SHADOW
        | proc1::MOV_DR
        | proc1::UNCOND_IO
        | proc1::IO_BITMAPS
        | proc1::MSR_BITMAPS
        | proc1::MONITOR
        | proc1::TSC_OFFSETTING
        | proc1::SECONDARY;
    w(
        &mut v,
        f::CPU_BASED_VM_EXEC_CONTROL.encoding(),
        u64::from(o.procbased.must_be_one | p1),
    );
    let p2 =
        proc2::RDTSCP | proc2::VPID | proc2::INVPCID | proc2::XSAVES | proc2::VIRT_APIC_ACCESSES;
    w(
        &mut v,
        f::SECONDARY_VM_EXEC_CONTROL.encoding(),
        u64::from(p2),
    );
    let ex = exit::SAVE_DEBUG
        | exit::HOST_64
        | exit::ACK_INTR
        | exit::SAVE_PAT
        | exit::LOAD_PAT
        | exit::SAVE_EFER
        | exit::LOAD_EFER
        | exit::LOAD_PERF_GLOBAL;
    w(
        &mut v,
        f::VM_EXIT_CONTROLS.encoding(),
        u64::from(o.exit.must_be_one | ex),
    );
    let en = entry::LOAD_DEBUG | entry::IA32E | entry::LOAD_PAT | entry::LOAD_EFER;
    w(
        &mut v,
        f::VM_ENTRY_CONTROLS.encoding(),
        u64::from(o.entry.must_be_one | en),
    );
    w(&mut v, f::VIRTUAL_PROCESSOR_ID.encoding(), 1);
    w(&mut v, f::IO_BITMAP_A.encoding(), 0x10_0000);
    w(&mut v, f::IO_BITMAP_B.encoding(), 0x10_1000);
    w(&mut v, f::MSR_BITMAP.encoding(), 0x10_2000);
    w(&mut v, f::APIC_ACCESS_ADDR.encoding(), 0x10_3000);
    w(&mut v, f::VIRTUAL_APIC_PAGE_ADDR.encoding(), 0x10_4000);
    w(&mut v, f::TSC_OFFSET.encoding(), 0xffff_ff00_0000_0000);
    w(
        &mut v,
        f::EXCEPTION_BITMAP.encoding(),
        1 << 6 | 1 << 14 | 1 << 17 | 1 << 18,
    );
    w(
        &mut v,
        f::CR0_GUEST_HOST_MASK.encoding(),
        0xffff_ffff_fffe_fff7,
    );
    w(&mut v, f::CR0_READ_SHADOW.encoding(), 0x8005_003b);
    w(
        &mut v,
        f::CR4_GUEST_HOST_MASK.encoding(),
        0xffff_ffff_fffe_f871,
    );
    w(&mut v, f::CR4_READ_SHADOW.encoding(), 0x0000_06f0);
    w(&mut v, f::XSS_EXIT_BITMAP.encoding(), 0);
    w(&mut v, f::VMCS_LINK_POINTER.encoding(), NO_LINK);
    w(&mut v, f::VM_ENTRY_INTR_INFO.encoding(), 0);

    // Guest: a 64-bit Linux guest under shadow paging.
    w(&mut v, f::GUEST_CR0.encoding(), 0x8005_0033);
    w(&mut v, f::GUEST_CR3.encoding(), 0x2_3456_7000);
    w(&mut v, f::GUEST_CR4.encoding(), 0x0000_26f0);
    w(&mut v, f::GUEST_IA32_EFER.encoding(), 0xd01);
    w(&mut v, f::GUEST_IA32_PAT.encoding(), 0x0007_0406_0007_0406);
    w(&mut v, f::GUEST_DR7.encoding(), 0x400);
    w(&mut v, f::GUEST_RFLAGS.encoding(), 0x202);
    w(&mut v, f::GUEST_RIP.encoding(), 0xffff_ffff_8100_0123);
    w(&mut v, f::GUEST_RSP.encoding(), 0xffff_c900_0001_fe00);
    w(&mut v, f::GUEST_CS_SELECTOR.encoding(), 0x10);
    w(&mut v, f::GUEST_CS_AR_BYTES.encoding(), 0xa09b);
    w(&mut v, f::GUEST_CS_LIMIT.encoding(), 0xffff_ffff);
    w(&mut v, f::GUEST_SS_SELECTOR.encoding(), 0x18);
    w(&mut v, f::GUEST_SS_AR_BYTES.encoding(), 0xc093);
    w(&mut v, f::GUEST_SS_LIMIT.encoding(), 0xffff_ffff);
    for ar in [
        f::GUEST_DS_AR_BYTES,
        f::GUEST_ES_AR_BYTES,
        f::GUEST_FS_AR_BYTES,
        f::GUEST_GS_AR_BYTES,
        f::GUEST_LDTR_AR_BYTES,
    ] {
        w(&mut v, ar.encoding(), 0x1_0000);
    }
    w(&mut v, f::GUEST_GS_BASE.encoding(), 0xffff_8880_7fc0_0000);
    w(&mut v, f::GUEST_TR_SELECTOR.encoding(), 0x40);
    w(&mut v, f::GUEST_TR_AR_BYTES.encoding(), 0x8b);
    w(&mut v, f::GUEST_TR_LIMIT.encoding(), 0x67);
    w(&mut v, f::GUEST_TR_BASE.encoding(), 0xffff_fe00_0000_3000);
    w(&mut v, f::GUEST_GDTR_BASE.encoding(), 0xffff_fe00_0000_1000);
    w(&mut v, f::GUEST_GDTR_LIMIT.encoding(), 0x7f);
    w(&mut v, f::GUEST_IDTR_BASE.encoding(), 0xffff_fe00_0000_0000);
    w(&mut v, f::GUEST_IDTR_LIMIT.encoding(), 0xfff);
    w(
        &mut v,
        f::GUEST_SYSENTER_ESP.encoding(),
        0xffff_fe00_0000_5000,
    );
    w(
        &mut v,
        f::GUEST_SYSENTER_EIP.encoding(),
        0xffff_ffff_81a0_1600,
    );

    // Host: the Linux kernel running KVM.
    w(&mut v, f::HOST_CR0.encoding(), HOST_CR0);
    w(&mut v, f::HOST_CR3.encoding(), 0x1_0a2b_3000);
    w(&mut v, f::HOST_CR4.encoding(), HOST_CR4);
    w(&mut v, f::HOST_CS_SELECTOR.encoding(), 0x10);
    w(&mut v, f::HOST_SS_SELECTOR.encoding(), 0x18);
    w(&mut v, f::HOST_DS_SELECTOR.encoding(), 0);
    w(&mut v, f::HOST_ES_SELECTOR.encoding(), 0);
    w(&mut v, f::HOST_FS_SELECTOR.encoding(), 0);
    w(&mut v, f::HOST_GS_SELECTOR.encoding(), 0);
    w(&mut v, f::HOST_TR_SELECTOR.encoding(), 0x40);
    w(&mut v, f::HOST_FS_BASE.encoding(), 0x7f12_3456_7000);
    w(&mut v, f::HOST_GS_BASE.encoding(), 0xffff_8880_7fa0_0000);
    w(&mut v, f::HOST_TR_BASE.encoding(), 0xffff_fe00_0010_3000);
    w(&mut v, f::HOST_GDTR_BASE.encoding(), 0xffff_fe00_0010_1000);
    w(&mut v, f::HOST_IDTR_BASE.encoding(), 0xffff_fe00_0000_0000);
    w(&mut v, f::HOST_IA32_SYSENTER_CS.encoding(), 0x10);
    w(
        &mut v,
        f::HOST_SYSENTER_ESP.encoding(),
        0xffff_fe00_0010_5000,
    );
    w(
        &mut v,
        f::HOST_SYSENTER_EIP.encoding(),
        0xffff_ffff_81a0_1520,
    );
    w(&mut v, f::HOST_IA32_EFER.encoding(), 0xd01);
    w(&mut v, f::HOST_IA32_PAT.encoding(), 0x0407_0506_0007_0406);
    w(&mut v, f::HOST_IA32_PERF_GLOBAL_CTRL.encoding(), 0x3);
    w(&mut v, f::HOST_RSP.encoding(), 0xffff_c900_0040_7e80);
    w(&mut v, f::HOST_RIP.encoding(), 0xffff_ffff_c0a1_2340);
    v
}

/// The hypervisor's own host state and controls (what the launch wrote).
pub(crate) fn hv_host() -> HostVmcs {
    HostVmcs {
        controls: host_policy::host_controls(&hw()).unwrap(),
        msr_bitmap_pa: 0x7_7700_0000,
        eptp: 0x7_7710_005e,
        cr0: HOST_CR0,
        cr4: 0x0037_06b0,
        host_cr3: 0x7_7720_0000,
        cs: 0x8,
        ss: 0x10,
        tr: 0x18,
        gs_base: 0xffff_c900_7770_0000,
        tr_base: 0xffff_c900_7771_0000,
        gdtr_base: 0xffff_c900_7772_0000,
        idtr_base: 0xffff_c900_7773_0000,
        sysenter_cs: 0x10,
        sysenter_esp: 0xffff_fe00_0010_5000,
        sysenter_eip: 0xffff_ffff_81a0_1520,
        efer: 0xd01,
        pat: 0x0407_0506_0007_0406,
        rsp: 0xffff_c900_7774_0ff0,
        rip: 0xffff_ffff_c777_4000,
    }
}

/// vmcs01: the hypervisor's VMCS of the host, with the host (L1) state at
/// its VMLAUNCH in the guest-state area.
pub(crate) fn vmcs01() -> MemVmcs {
    let mut v = MemVmcs::new();
    write_controls_and_host_state(&mut v, &hv_host()).unwrap();
    let w = |v: &mut MemVmcs, e: u32, x: u64| v.write_raw(e, x).unwrap();
    w(&mut v, f::GUEST_CR0.encoding(), HOST_CR0);
    w(&mut v, f::GUEST_CR4.encoding(), HOST_CR4);
    w(&mut v, f::GUEST_CR3.encoding(), 0x1_0a2b_3000);
    w(&mut v, f::GUEST_IA32_EFER.encoding(), 0xd01);
    w(&mut v, f::GUEST_IA32_PAT.encoding(), 0x0407_0506_0007_0406);
    w(&mut v, f::GUEST_IA32_DEBUGCTL.encoding(), 0x1);
    w(&mut v, f::GUEST_DR7.encoding(), 0x401);
    w(&mut v, f::GUEST_IA32_PERF_GLOBAL_CTRL.encoding(), 0xf);
    w(&mut v, f::GUEST_RIP.encoding(), 0xffff_ffff_c0a1_0000);
    w(&mut v, f::GUEST_RFLAGS.encoding(), 0x46);
    w(&mut v, f::GUEST_INTERRUPTIBILITY_INFO.encoding(), 0);
    v
}
