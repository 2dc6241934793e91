// SPDX-License-Identifier: GPL-2.0

//! The VMCS field table: every field of SDM Vol. 3D appendix B ("Field
//! Encoding in VMCS"; the December 2023 edition, FRED fields not yet
//! included), one row each, in encoding order.
//!
//! A row gives the field's name, its full-access encoding, its width
//! (`W16`, `W64`, `W32`, `Nat`), its access type (`RO` read-only exit
//! information, `RW` everything else), its group (control, guest state,
//! host state, exit information), its [`Marks`] and a doc string.  From it
//! the macro derives a typed constant per field (`Field<u16>`,
//! `Field<u32>`, `Field<u64>` for 64-bit and natural width) and [`FIELDS`],
//! the table as data.  Everything else that lists fields is derived from
//! the table or checked against it by a test:
//! * what the launch writes ([`Marks::LAUNCH`]: `host_vmcs` and
//!   `guest_state`), and the guest state carried from the CPU at launch
//!   back to it at teardown ([`Marks::CARRY`]: `guest_state`);
//! * what pkvm uses at all ([`Marks::USED`]: the system test asserts
//!   every such field is readable on the emulated CPU);
//! * the `vmcs_fields` debugfs file.
//!
//! Room for nested VMX: the vmcs12 offset of a field is `8 * index`
//! ([`index_of`]); "may be shadowed" becomes a [`Marks`] bit.
//!
//! On CPUs with IA32_VMX_MISC bit 29 VMWRITE may write exit-information
//! fields too; pkvm never relies on it, so the table calls them read-only.

use super::access::Field;

/// Width class of a field (encoding bits 14:13).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Width {
    /// 16-bit (encoding bits 14:13 = 0).
    W16,
    /// 64-bit (1), accessed in full (bit 0 clear).
    W64,
    /// 32-bit (2).
    W32,
    /// Natural width (3): 64-bit on x86-64.
    Nat,
}

impl Width {
    /// The value bits of a field of this width.
    pub const fn mask(self) -> u64 {
        match self {
            Width::W16 => 0xffff,
            Width::W32 => 0xffff_ffff,
            Width::W64 | Width::Nat => u64::MAX,
        }
    }

    /// The width encoded in bits 14:13 of `encoding`.
    pub const fn of_encoding(encoding: u32) -> Self {
        match (encoding >> 13) & 3 {
            0 => Width::W16,
            1 => Width::W64,
            2 => Width::W32,
            _ => Width::Nat,
        }
    }
}

/// Access type of a field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Read-only: VMWRITE fails with VM-instruction error 13.
    ReadOnly,
    /// Read-write.
    ReadWrite,
}

/// Group of a field (encoding bits 11:10, the "type").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Group {
    /// Control field (type 0).
    Control,
    /// VM-exit information field (type 1), written by the CPU at exits.
    ExitInfo,
    /// Guest-state field (type 2).
    Guest,
    /// Host-state field (type 3).
    Host,
}

impl Group {
    /// The group encoded in bits 11:10 of `encoding`.
    pub const fn of_encoding(encoding: u32) -> Self {
        match (encoding >> 10) & 3 {
            0 => Group::Control,
            1 => Group::ExitInfo,
            2 => Group::Guest,
            _ => Group::Host,
        }
    }
}

/// What pkvm does with a field, as a set of flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Marks(u8);

impl Marks {
    /// pkvm reads or writes the field today (so it must be readable on
    /// every CPU pkvm runs on).
    pub const USED: Marks = Marks(1 << 0);
    /// The launch writes the field: controls and host state
    /// (`host_vmcs`), guest state (`guest_state`, and guest RSP/RIP, which
    /// the in-place VMLAUNCH writes itself).  VPID and the XSS-exiting
    /// bitmap only when their controls are on.
    pub const LAUNCH: Marks = Marks(1 << 1);
    /// Guest state captured from the CPU at launch and put back on the CPU
    /// at teardown (`guest_state::HostCpuState`).
    pub const CARRY: Marks = Marks(1 << 2);

    /// No marks.
    pub const NONE: Marks = Marks(0);

    /// Union of two mark sets.
    pub const fn with(self, other: Marks) -> Marks {
        Marks(self.0 | other.0)
    }

    /// Whether every mark of `other` is set.
    pub const fn has(self, other: Marks) -> bool {
        self.0 & other.0 == other.0
    }
}

/// One row of the table.
#[derive(Clone, Copy, Debug)]
pub struct FieldInfo {
    /// The name (as in the SDM, upper case; Linux's spelling where it has one).
    pub name: &'static str,
    /// The full-access encoding.
    pub encoding: u32,
    /// Width.
    pub width: Width,
    /// Access type.
    pub access: Access,
    /// Group.
    pub group: Group,
    /// What pkvm does with it.
    pub marks: Marks,
    /// What the field is.
    pub doc: &'static str,
}

macro_rules! field_type {
    (W16) => {
        u16
    };
    (W32) => {
        u32
    };
    (W64) => {
        u64
    };
    (Nat) => {
        u64
    };
}

macro_rules! field_access {
    (RO) => {
        Access::ReadOnly
    };
    (RW) => {
        Access::ReadWrite
    };
}

macro_rules! vmcs_fields {
    ($( $name:ident: $w:ident $acc:ident $grp:ident = $enc:literal [$($mark:ident)*], $doc:literal; )*) => {
        $(
            #[doc = $doc]
            pub const $name: Field<field_type!($w)> = Field::new($enc);
            const _: () = assert!(const_index_of($enc) < FIELD_COUNT);
        )*

        /// Every VMCS field, in encoding order.
        pub const FIELDS: &[FieldInfo] = &[$(
            FieldInfo {
                name: stringify!($name),
                encoding: $enc,
                width: Width::$w,
                access: field_access!($acc),
                group: Group::$grp,
                marks: Marks::NONE $(.with(Marks::$mark))*,
                doc: $doc,
            }
        ),*];
    };
}

vmcs_fields! {
    // 16-bit control fields.
    VIRTUAL_PROCESSOR_ID: W16 RW Control = 0x0000 [USED LAUNCH], "Virtual-processor identifier (VPID).";
    POSTED_INTR_NV: W16 RW Control = 0x0002 [], "Posted-interrupt notification vector.";
    EPTP_INDEX: W16 RW Control = 0x0004 [], "EPTP index (EPT-violation #VE).";
    HLAT_PREFIX_SIZE: W16 RW Control = 0x0006 [], "HLAT prefix size.";
    LAST_PID_POINTER_INDEX: W16 RW Control = 0x0008 [], "Last PID-pointer index (IPI virtualization).";
    // 16-bit guest-state fields.
    GUEST_ES_SELECTOR: W16 RW Guest = 0x0800 [USED LAUNCH CARRY], "Guest ES selector.";
    GUEST_CS_SELECTOR: W16 RW Guest = 0x0802 [USED LAUNCH CARRY], "Guest CS selector.";
    GUEST_SS_SELECTOR: W16 RW Guest = 0x0804 [USED LAUNCH CARRY], "Guest SS selector.";
    GUEST_DS_SELECTOR: W16 RW Guest = 0x0806 [USED LAUNCH CARRY], "Guest DS selector.";
    GUEST_FS_SELECTOR: W16 RW Guest = 0x0808 [USED LAUNCH CARRY], "Guest FS selector.";
    GUEST_GS_SELECTOR: W16 RW Guest = 0x080a [USED LAUNCH CARRY], "Guest GS selector.";
    GUEST_LDTR_SELECTOR: W16 RW Guest = 0x080c [USED LAUNCH], "Guest LDTR selector.";
    GUEST_TR_SELECTOR: W16 RW Guest = 0x080e [USED LAUNCH], "Guest TR selector.";
    GUEST_INTR_STATUS: W16 RW Guest = 0x0810 [], "Guest interrupt status (virtual-interrupt delivery).";
    GUEST_PML_INDEX: W16 RW Guest = 0x0812 [], "PML index.";
    GUEST_UINV: W16 RW Guest = 0x0814 [], "Guest user-interrupt notification vector (UINV).";
    // 16-bit host-state fields.
    HOST_ES_SELECTOR: W16 RW Host = 0x0c00 [USED LAUNCH], "Host ES selector.";
    HOST_CS_SELECTOR: W16 RW Host = 0x0c02 [USED LAUNCH], "Host CS selector.";
    HOST_SS_SELECTOR: W16 RW Host = 0x0c04 [USED LAUNCH], "Host SS selector.";
    HOST_DS_SELECTOR: W16 RW Host = 0x0c06 [USED LAUNCH], "Host DS selector.";
    HOST_FS_SELECTOR: W16 RW Host = 0x0c08 [USED LAUNCH], "Host FS selector.";
    HOST_GS_SELECTOR: W16 RW Host = 0x0c0a [USED LAUNCH], "Host GS selector.";
    HOST_TR_SELECTOR: W16 RW Host = 0x0c0c [USED LAUNCH], "Host TR selector.";
    // 64-bit control fields.
    IO_BITMAP_A: W64 RW Control = 0x2000 [], "Address of I/O bitmap A.";
    IO_BITMAP_B: W64 RW Control = 0x2002 [], "Address of I/O bitmap B.";
    MSR_BITMAP: W64 RW Control = 0x2004 [USED LAUNCH], "Address of the MSR bitmaps.";
    VM_EXIT_MSR_STORE_ADDR: W64 RW Control = 0x2006 [], "VM-exit MSR-store address.";
    VM_EXIT_MSR_LOAD_ADDR: W64 RW Control = 0x2008 [], "VM-exit MSR-load address.";
    VM_ENTRY_MSR_LOAD_ADDR: W64 RW Control = 0x200a [], "VM-entry MSR-load address.";
    EXECUTIVE_VMCS_POINTER: W64 RW Control = 0x200c [], "Executive-VMCS pointer (dual-monitor SMM treatment).";
    PML_ADDRESS: W64 RW Control = 0x200e [], "PML address.";
    TSC_OFFSET: W64 RW Control = 0x2010 [USED LAUNCH], "TSC offset.";
    VIRTUAL_APIC_PAGE_ADDR: W64 RW Control = 0x2012 [], "Virtual-APIC address.";
    APIC_ACCESS_ADDR: W64 RW Control = 0x2014 [], "APIC-access address.";
    POSTED_INTR_DESC_ADDR: W64 RW Control = 0x2016 [], "Posted-interrupt descriptor address.";
    VM_FUNCTION_CONTROL: W64 RW Control = 0x2018 [], "VM-function controls.";
    EPT_POINTER: W64 RW Control = 0x201a [USED LAUNCH], "EPT pointer.";
    EOI_EXIT_BITMAP0: W64 RW Control = 0x201c [], "EOI-exit bitmap 0.";
    EOI_EXIT_BITMAP1: W64 RW Control = 0x201e [], "EOI-exit bitmap 1.";
    EOI_EXIT_BITMAP2: W64 RW Control = 0x2020 [], "EOI-exit bitmap 2.";
    EOI_EXIT_BITMAP3: W64 RW Control = 0x2022 [], "EOI-exit bitmap 3.";
    EPTP_LIST_ADDRESS: W64 RW Control = 0x2024 [], "EPTP-list address (VMFUNC EPTP switching).";
    VMREAD_BITMAP: W64 RW Control = 0x2026 [], "VMREAD-bitmap address (VMCS shadowing).";
    VMWRITE_BITMAP: W64 RW Control = 0x2028 [], "VMWRITE-bitmap address (VMCS shadowing).";
    VE_INFORMATION_ADDRESS: W64 RW Control = 0x202a [], "Virtualization-exception information address.";
    XSS_EXIT_BITMAP: W64 RW Control = 0x202c [USED LAUNCH], "XSS-exiting bitmap.";
    ENCLS_EXITING_BITMAP: W64 RW Control = 0x202e [], "ENCLS-exiting bitmap.";
    SPPT_POINTER: W64 RW Control = 0x2030 [], "Sub-page-permission-table pointer.";
    TSC_MULTIPLIER: W64 RW Control = 0x2032 [], "TSC multiplier.";
    TERTIARY_VM_EXEC_CONTROL: W64 RW Control = 0x2034 [], "Tertiary processor-based VM-execution controls.";
    ENCLV_EXITING_BITMAP: W64 RW Control = 0x2036 [], "ENCLV-exiting bitmap.";
    LOW_PASID_DIRECTORY: W64 RW Control = 0x2038 [], "Low PASID directory address.";
    HIGH_PASID_DIRECTORY: W64 RW Control = 0x203a [], "High PASID directory address.";
    SHARED_EPT_POINTER: W64 RW Control = 0x203c [], "Shared EPT pointer.";
    PCONFIG_EXITING_BITMAP: W64 RW Control = 0x203e [], "PCONFIG-exiting bitmap.";
    HLAT_POINTER: W64 RW Control = 0x2040 [], "Hypervisor-managed linear-address translation pointer (HLATP).";
    PID_POINTER_TABLE: W64 RW Control = 0x2042 [], "PID-pointer table address (IPI virtualization).";
    SECONDARY_VM_EXIT_CONTROLS: W64 RW Control = 0x2044 [], "Secondary VM-exit controls.";
    SPEC_CTRL_MASK: W64 RW Control = 0x204a [], "IA32_SPEC_CTRL mask.";
    SPEC_CTRL_SHADOW: W64 RW Control = 0x204c [], "IA32_SPEC_CTRL shadow.";
    // 64-bit read-only data field.
    GUEST_PHYSICAL_ADDRESS: W64 RO ExitInfo = 0x2400 [USED], "Exit information: guest-physical address.";
    // 64-bit guest-state fields.
    VMCS_LINK_POINTER: W64 RW Guest = 0x2800 [USED LAUNCH], "VMCS link pointer (all ones when unused).";
    GUEST_IA32_DEBUGCTL: W64 RW Guest = 0x2802 [USED LAUNCH CARRY], "Guest IA32_DEBUGCTL.";
    GUEST_IA32_PAT: W64 RW Guest = 0x2804 [USED LAUNCH CARRY], "Guest IA32_PAT.";
    GUEST_IA32_EFER: W64 RW Guest = 0x2806 [USED LAUNCH CARRY], "Guest IA32_EFER.";
    GUEST_IA32_PERF_GLOBAL_CTRL: W64 RW Guest = 0x2808 [USED], "Guest IA32_PERF_GLOBAL_CTRL.";
    GUEST_PDPTE0: W64 RW Guest = 0x280a [], "Guest PDPTE0 (PAE paging with EPT).";
    GUEST_PDPTE1: W64 RW Guest = 0x280c [], "Guest PDPTE1.";
    GUEST_PDPTE2: W64 RW Guest = 0x280e [], "Guest PDPTE2.";
    GUEST_PDPTE3: W64 RW Guest = 0x2810 [], "Guest PDPTE3.";
    GUEST_IA32_BNDCFGS: W64 RW Guest = 0x2812 [], "Guest IA32_BNDCFGS.";
    GUEST_IA32_RTIT_CTL: W64 RW Guest = 0x2814 [], "Guest IA32_RTIT_CTL.";
    GUEST_IA32_LBR_CTL: W64 RW Guest = 0x2816 [], "Guest IA32_LBR_CTL.";
    GUEST_IA32_PKRS: W64 RW Guest = 0x2818 [], "Guest IA32_PKRS.";
    // 64-bit host-state fields.
    HOST_IA32_PAT: W64 RW Host = 0x2c00 [USED LAUNCH], "Host IA32_PAT.";
    HOST_IA32_EFER: W64 RW Host = 0x2c02 [USED LAUNCH], "Host IA32_EFER.";
    HOST_IA32_PERF_GLOBAL_CTRL: W64 RW Host = 0x2c04 [USED], "Host IA32_PERF_GLOBAL_CTRL.";
    HOST_IA32_PKRS: W64 RW Host = 0x2c06 [], "Host IA32_PKRS.";
    // 32-bit control fields.
    PIN_BASED_VM_EXEC_CONTROL: W32 RW Control = 0x4000 [USED LAUNCH], "Pin-based VM-execution controls.";
    CPU_BASED_VM_EXEC_CONTROL: W32 RW Control = 0x4002 [USED LAUNCH], "Primary processor-based VM-execution controls.";
    EXCEPTION_BITMAP: W32 RW Control = 0x4004 [USED LAUNCH], "Exception bitmap.";
    PAGE_FAULT_ERROR_CODE_MASK: W32 RW Control = 0x4006 [USED LAUNCH], "Page-fault error-code mask.";
    PAGE_FAULT_ERROR_CODE_MATCH: W32 RW Control = 0x4008 [USED LAUNCH], "Page-fault error-code match.";
    CR3_TARGET_COUNT: W32 RW Control = 0x400a [USED LAUNCH], "CR3-target count.";
    VM_EXIT_CONTROLS: W32 RW Control = 0x400c [USED LAUNCH], "Primary VM-exit controls.";
    VM_EXIT_MSR_STORE_COUNT: W32 RW Control = 0x400e [USED LAUNCH], "VM-exit MSR-store count.";
    VM_EXIT_MSR_LOAD_COUNT: W32 RW Control = 0x4010 [USED LAUNCH], "VM-exit MSR-load count.";
    VM_ENTRY_CONTROLS: W32 RW Control = 0x4012 [USED LAUNCH], "VM-entry controls.";
    VM_ENTRY_MSR_LOAD_COUNT: W32 RW Control = 0x4014 [USED LAUNCH], "VM-entry MSR-load count.";
    VM_ENTRY_INTR_INFO: W32 RW Control = 0x4016 [USED LAUNCH], "VM-entry interruption-information field.";
    VM_ENTRY_EXCEPTION_ERROR_CODE: W32 RW Control = 0x4018 [USED], "VM-entry exception error code.";
    VM_ENTRY_INSTRUCTION_LEN: W32 RW Control = 0x401a [USED], "VM-entry instruction length.";
    TPR_THRESHOLD: W32 RW Control = 0x401c [], "TPR threshold.";
    SECONDARY_VM_EXEC_CONTROL: W32 RW Control = 0x401e [USED LAUNCH], "Secondary processor-based VM-execution controls.";
    PLE_GAP: W32 RW Control = 0x4020 [], "PAUSE-loop exiting gap.";
    PLE_WINDOW: W32 RW Control = 0x4022 [], "PAUSE-loop exiting window.";
    NOTIFY_WINDOW: W32 RW Control = 0x4024 [], "Instruction-timeout control (notify window).";
    // 32-bit read-only data fields.
    VM_INSTRUCTION_ERROR: W32 RO ExitInfo = 0x4400 [USED], "VM-instruction error.";
    VM_EXIT_REASON: W32 RO ExitInfo = 0x4402 [USED], "Exit reason.";
    VM_EXIT_INTR_INFO: W32 RO ExitInfo = 0x4404 [], "VM-exit interruption information.";
    VM_EXIT_INTR_ERROR_CODE: W32 RO ExitInfo = 0x4406 [], "VM-exit interruption error code.";
    IDT_VECTORING_INFO: W32 RO ExitInfo = 0x4408 [USED], "IDT-vectoring information.";
    IDT_VECTORING_ERROR_CODE: W32 RO ExitInfo = 0x440a [USED], "IDT-vectoring error code.";
    VM_EXIT_INSTRUCTION_LEN: W32 RO ExitInfo = 0x440c [USED], "VM-exit instruction length.";
    VMX_INSTRUCTION_INFO: W32 RO ExitInfo = 0x440e [], "VM-exit instruction information.";
    // 32-bit guest-state fields.
    GUEST_ES_LIMIT: W32 RW Guest = 0x4800 [USED LAUNCH], "Guest ES limit.";
    GUEST_CS_LIMIT: W32 RW Guest = 0x4802 [USED LAUNCH], "Guest CS limit.";
    GUEST_SS_LIMIT: W32 RW Guest = 0x4804 [USED LAUNCH], "Guest SS limit.";
    GUEST_DS_LIMIT: W32 RW Guest = 0x4806 [USED LAUNCH], "Guest DS limit.";
    GUEST_FS_LIMIT: W32 RW Guest = 0x4808 [USED LAUNCH], "Guest FS limit.";
    GUEST_GS_LIMIT: W32 RW Guest = 0x480a [USED LAUNCH], "Guest GS limit.";
    GUEST_LDTR_LIMIT: W32 RW Guest = 0x480c [USED LAUNCH], "Guest LDTR limit.";
    GUEST_TR_LIMIT: W32 RW Guest = 0x480e [USED LAUNCH], "Guest TR limit.";
    GUEST_GDTR_LIMIT: W32 RW Guest = 0x4810 [USED LAUNCH CARRY], "Guest GDTR limit.";
    GUEST_IDTR_LIMIT: W32 RW Guest = 0x4812 [USED LAUNCH CARRY], "Guest IDTR limit.";
    GUEST_ES_AR_BYTES: W32 RW Guest = 0x4814 [USED LAUNCH], "Guest ES access rights.";
    GUEST_CS_AR_BYTES: W32 RW Guest = 0x4816 [USED LAUNCH], "Guest CS access rights.";
    GUEST_SS_AR_BYTES: W32 RW Guest = 0x4818 [USED LAUNCH], "Guest SS access rights.";
    GUEST_DS_AR_BYTES: W32 RW Guest = 0x481a [USED LAUNCH], "Guest DS access rights.";
    GUEST_FS_AR_BYTES: W32 RW Guest = 0x481c [USED LAUNCH], "Guest FS access rights.";
    GUEST_GS_AR_BYTES: W32 RW Guest = 0x481e [USED LAUNCH], "Guest GS access rights.";
    GUEST_LDTR_AR_BYTES: W32 RW Guest = 0x4820 [USED LAUNCH], "Guest LDTR access rights.";
    GUEST_TR_AR_BYTES: W32 RW Guest = 0x4822 [USED LAUNCH], "Guest TR access rights.";
    GUEST_INTERRUPTIBILITY_INFO: W32 RW Guest = 0x4824 [USED LAUNCH], "Guest interruptibility state.";
    GUEST_ACTIVITY_STATE: W32 RW Guest = 0x4826 [USED LAUNCH], "Guest activity state.";
    GUEST_SMBASE: W32 RW Guest = 0x4828 [], "Guest SMBASE.";
    GUEST_SYSENTER_CS: W32 RW Guest = 0x482a [USED LAUNCH CARRY], "Guest IA32_SYSENTER_CS.";
    VMX_PREEMPTION_TIMER_VALUE: W32 RW Guest = 0x482e [], "VMX-preemption timer value.";
    // 32-bit host-state field.
    HOST_IA32_SYSENTER_CS: W32 RW Host = 0x4c00 [USED LAUNCH], "Host IA32_SYSENTER_CS.";
    // Natural-width control fields.
    CR0_GUEST_HOST_MASK: Nat RW Control = 0x6000 [USED LAUNCH], "CR0 guest/host mask.";
    CR4_GUEST_HOST_MASK: Nat RW Control = 0x6002 [USED LAUNCH], "CR4 guest/host mask.";
    CR0_READ_SHADOW: Nat RW Control = 0x6004 [USED LAUNCH], "CR0 read shadow.";
    CR4_READ_SHADOW: Nat RW Control = 0x6006 [USED LAUNCH], "CR4 read shadow.";
    CR3_TARGET_VALUE0: Nat RW Control = 0x6008 [], "CR3-target value 0.";
    CR3_TARGET_VALUE1: Nat RW Control = 0x600a [], "CR3-target value 1.";
    CR3_TARGET_VALUE2: Nat RW Control = 0x600c [], "CR3-target value 2.";
    CR3_TARGET_VALUE3: Nat RW Control = 0x600e [], "CR3-target value 3.";
    // Natural-width read-only data fields.
    EXIT_QUALIFICATION: Nat RO ExitInfo = 0x6400 [USED], "Exit qualification.";
    IO_RCX: Nat RO ExitInfo = 0x6402 [], "I/O RCX (SMIs after I/O instructions).";
    IO_RSI: Nat RO ExitInfo = 0x6404 [], "I/O RSI.";
    IO_RDI: Nat RO ExitInfo = 0x6406 [], "I/O RDI.";
    IO_RIP: Nat RO ExitInfo = 0x6408 [], "I/O RIP.";
    GUEST_LINEAR_ADDRESS: Nat RO ExitInfo = 0x640a [USED], "Exit information: guest-linear address.";
    // Natural-width guest-state fields.
    GUEST_CR0: Nat RW Guest = 0x6800 [USED LAUNCH CARRY], "Guest CR0.";
    GUEST_CR3: Nat RW Guest = 0x6802 [USED LAUNCH CARRY], "Guest CR3.";
    GUEST_CR4: Nat RW Guest = 0x6804 [USED LAUNCH CARRY], "Guest CR4.";
    GUEST_ES_BASE: Nat RW Guest = 0x6806 [USED LAUNCH], "Guest ES base.";
    GUEST_CS_BASE: Nat RW Guest = 0x6808 [USED LAUNCH], "Guest CS base.";
    GUEST_SS_BASE: Nat RW Guest = 0x680a [USED LAUNCH], "Guest SS base.";
    GUEST_DS_BASE: Nat RW Guest = 0x680c [USED LAUNCH], "Guest DS base.";
    GUEST_FS_BASE: Nat RW Guest = 0x680e [USED LAUNCH CARRY], "Guest FS base.";
    GUEST_GS_BASE: Nat RW Guest = 0x6810 [USED LAUNCH CARRY], "Guest GS base.";
    GUEST_LDTR_BASE: Nat RW Guest = 0x6812 [USED LAUNCH], "Guest LDTR base.";
    GUEST_TR_BASE: Nat RW Guest = 0x6814 [USED LAUNCH], "Guest TR base.";
    GUEST_GDTR_BASE: Nat RW Guest = 0x6816 [USED LAUNCH CARRY], "Guest GDTR base.";
    GUEST_IDTR_BASE: Nat RW Guest = 0x6818 [USED LAUNCH CARRY], "Guest IDTR base.";
    GUEST_DR7: Nat RW Guest = 0x681a [USED LAUNCH CARRY], "Guest DR7.";
    GUEST_RSP: Nat RW Guest = 0x681c [USED LAUNCH CARRY], "Guest RSP.";
    GUEST_RIP: Nat RW Guest = 0x681e [USED LAUNCH CARRY], "Guest RIP.";
    GUEST_RFLAGS: Nat RW Guest = 0x6820 [USED LAUNCH CARRY], "Guest RFLAGS.";
    GUEST_PENDING_DBG_EXCEPTIONS: Nat RW Guest = 0x6822 [USED LAUNCH], "Guest pending debug exceptions.";
    GUEST_SYSENTER_ESP: Nat RW Guest = 0x6824 [USED LAUNCH CARRY], "Guest IA32_SYSENTER_ESP.";
    GUEST_SYSENTER_EIP: Nat RW Guest = 0x6826 [USED LAUNCH CARRY], "Guest IA32_SYSENTER_EIP.";
    GUEST_S_CET: Nat RW Guest = 0x6828 [], "Guest IA32_S_CET.";
    GUEST_SSP: Nat RW Guest = 0x682a [], "Guest SSP.";
    GUEST_INTR_SSP_TABLE: Nat RW Guest = 0x682c [], "Guest IA32_INTERRUPT_SSP_TABLE_ADDR.";
    // Natural-width host-state fields.
    HOST_CR0: Nat RW Host = 0x6c00 [USED LAUNCH], "Host CR0.";
    HOST_CR3: Nat RW Host = 0x6c02 [USED LAUNCH], "Host CR3.";
    HOST_CR4: Nat RW Host = 0x6c04 [USED LAUNCH], "Host CR4.";
    HOST_FS_BASE: Nat RW Host = 0x6c06 [USED LAUNCH], "Host FS base.";
    HOST_GS_BASE: Nat RW Host = 0x6c08 [USED LAUNCH], "Host GS base.";
    HOST_TR_BASE: Nat RW Host = 0x6c0a [USED LAUNCH], "Host TR base.";
    HOST_GDTR_BASE: Nat RW Host = 0x6c0c [USED LAUNCH], "Host GDTR base.";
    HOST_IDTR_BASE: Nat RW Host = 0x6c0e [USED LAUNCH], "Host IDTR base.";
    HOST_SYSENTER_ESP: Nat RW Host = 0x6c10 [USED LAUNCH], "Host IA32_SYSENTER_ESP.";
    HOST_SYSENTER_EIP: Nat RW Host = 0x6c12 [USED LAUNCH], "Host IA32_SYSENTER_EIP.";
    HOST_RSP: Nat RW Host = 0x6c14 [USED LAUNCH], "Host RSP.";
    HOST_RIP: Nat RW Host = 0x6c16 [USED LAUNCH], "Host RIP.";
    HOST_S_CET: Nat RW Host = 0x6c18 [], "Host IA32_S_CET.";
    HOST_SSP: Nat RW Host = 0x6c1a [], "Host SSP.";
    HOST_INTR_SSP_TABLE: Nat RW Host = 0x6c1c [], "Host IA32_INTERRUPT_SSP_TABLE_ADDR.";
}

/// Number of rows of the table.
pub const FIELD_COUNT: usize = FIELDS.len();

/// The table position of `encoding`, at build time (the typed field
/// constants carry it); [`FIELD_COUNT`] if it is not in the table (which
/// fails the build of a constant: `vmcs_fields!` asserts it).
pub(super) const fn const_index_of(encoding: u32) -> usize {
    let mut i = 0;
    while i < FIELDS.len() {
        if FIELDS[i].encoding == encoding {
            return i;
        }
        i += 1;
    }
    FIELD_COUNT
}

/// The table position of the field with encoding `encoding` (binary search:
/// the table is in encoding order, which a test checks).
pub fn index_of(encoding: u32) -> Option<usize> {
    FIELDS.binary_search_by_key(&encoding, |f| f.encoding).ok()
}

/// The table row of `encoding`.
pub fn info(encoding: u32) -> Option<&'static FieldInfo> {
    index_of(encoding).and_then(|i| FIELDS.get(i))
}

/// The rows that carry every mark of `m`.
pub fn marked(m: Marks) -> impl Iterator<Item = &'static FieldInfo> {
    FIELDS.iter().filter(move |f| f.marks.has(m))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_constants_carry_their_table_position() {
        assert_eq!(VIRTUAL_PROCESSOR_ID.index(), 0);
        assert_eq!(HOST_INTR_SSP_TABLE.index(), FIELD_COUNT - 1);
        for (e, i) in [
            (GUEST_RIP.encoding(), GUEST_RIP.index()),
            (
                CPU_BASED_VM_EXEC_CONTROL.encoding(),
                CPU_BASED_VM_EXEC_CONTROL.index(),
            ),
            (VM_EXIT_REASON.encoding(), VM_EXIT_REASON.index()),
            (MSR_BITMAP.encoding(), MSR_BITMAP.index()),
            (HOST_CR3.encoding(), HOST_CR3.index()),
        ] {
            assert_eq!(index_of(e), Some(i));
        }
        // An in-memory VMCS answers typed and raw accesses alike.
        let mut v = super::super::MemVmcs::new();
        use super::super::VmcsAccess;
        v.write(GUEST_RIP, 0x1234).unwrap();
        assert_eq!(v.read_raw(GUEST_RIP.encoding()), Ok(0x1234));
        v.write_raw(GUEST_CS_SELECTOR.encoding(), 0x1_0010).unwrap();
        assert_eq!(v.read(GUEST_CS_SELECTOR), Ok(0x10));
        assert_eq!(
            v.write(VM_EXIT_REASON, 1),
            Err(super::super::VmcsError::ReadOnly)
        );
    }

    #[test]
    fn every_row_agrees_with_its_encoding() {
        for (i, f) in FIELDS.iter().enumerate() {
            let e = f.encoding;
            assert_eq!(e & 1, 0, "{}: high-half access encoding", f.name);
            assert_eq!(e >> 15, 0, "{}: bits 31:15 must be 0", f.name);
            assert_eq!(e & (1 << 12), 0, "{}: bit 12 is reserved", f.name);
            assert_eq!(Width::of_encoding(e), f.width, "{}: width", f.name);
            assert_eq!(Group::of_encoding(e), f.group, "{}: type", f.name);
            let ro = f.group == Group::ExitInfo;
            assert_eq!(f.access == Access::ReadOnly, ro, "{}: access", f.name);
            if let Some(next) = FIELDS.get(i + 1) {
                assert!(
                    e < next.encoding,
                    "{} and {}: out of order or duplicate",
                    f.name,
                    next.name
                );
            }
            assert_eq!(index_of(e), Some(i));
            assert!(!f.doc.is_empty());
            // Names say what group they are in.
            match f.group {
                Group::Guest => assert!(
                    f.name.starts_with("GUEST_")
                        || f.name == "VMCS_LINK_POINTER"
                        || f.name == "VMX_PREEMPTION_TIMER_VALUE",
                    "{}",
                    f.name
                ),
                Group::Host => assert!(f.name.starts_with("HOST_"), "{}", f.name),
                _ => assert!(!f.name.starts_with("HOST_"), "{}", f.name),
            }
        }
        assert_eq!(FIELD_COUNT, 181);
    }

    #[test]
    fn typed_constants_have_the_width_of_their_row() {
        fn w<T>(_: Field<T>) -> usize {
            core::mem::size_of::<T>()
        }
        assert_eq!(w(GUEST_CS_SELECTOR), 2);
        assert_eq!(w(VIRTUAL_PROCESSOR_ID), 2);
        assert_eq!(w(VM_EXIT_REASON), 4);
        assert_eq!(w(GUEST_SYSENTER_CS), 4);
        assert_eq!(w(EPT_POINTER), 8);
        assert_eq!(w(GUEST_RIP), 8);
        assert_eq!(
            info(GUEST_RIP.encoding()).map(|f| f.name),
            Some("GUEST_RIP")
        );
        assert!(info(0x0001).is_none());
    }

    #[test]
    fn marks_are_consistent() {
        for f in FIELDS {
            if f.marks.has(Marks::LAUNCH) || f.marks.has(Marks::CARRY) {
                assert!(f.marks.has(Marks::USED), "{}: used but not USED", f.name);
                assert_ne!(f.access, Access::ReadOnly, "{}: launch writes it", f.name);
            }
            if f.marks.has(Marks::CARRY) {
                assert_eq!(f.group, Group::Guest, "{}", f.name);
                assert!(f.marks.has(Marks::LAUNCH), "{}", f.name);
            }
        }
        assert!(marked(Marks::CARRY).count() > 20);
    }
}
