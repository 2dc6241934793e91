// SPDX-License-Identifier: GPL-2.0

//! VMCS field encodings (SDM Vol. 3D, appendix B "Field Encoding in VMCS")
//! and the few VMCS-level constants pkvm uses.
//!
//! Owns the names of fields only; which values go into them is decided by
//! the callers (`guest_state`, the bring-up code, the exit handler).

/// A VMCS field encoding, as passed to VMREAD / VMWRITE.
pub type Field = u32;

macro_rules! fields {
    ($( $name:ident = $enc:literal, $doc:literal; )*) => {
        $(
            #[doc = $doc]
            pub const $name: Field = $enc;
        )*
        /// Every field named here, with its name (for dumps and tests).
        pub const ALL: &[(Field, &str)] = &[$(($enc, stringify!($name))),*];
    };
}

fields! {
    VIRTUAL_PROCESSOR_ID = 0x0000, "16-bit control: VPID.";
    GUEST_ES_SELECTOR = 0x0800, "Guest ES selector.";
    GUEST_CS_SELECTOR = 0x0802, "Guest CS selector.";
    GUEST_SS_SELECTOR = 0x0804, "Guest SS selector.";
    GUEST_DS_SELECTOR = 0x0806, "Guest DS selector.";
    GUEST_FS_SELECTOR = 0x0808, "Guest FS selector.";
    GUEST_GS_SELECTOR = 0x080a, "Guest GS selector.";
    GUEST_LDTR_SELECTOR = 0x080c, "Guest LDTR selector.";
    GUEST_TR_SELECTOR = 0x080e, "Guest TR selector.";
    HOST_ES_SELECTOR = 0x0c00, "Host ES selector.";
    HOST_CS_SELECTOR = 0x0c02, "Host CS selector.";
    HOST_SS_SELECTOR = 0x0c04, "Host SS selector.";
    HOST_DS_SELECTOR = 0x0c06, "Host DS selector.";
    HOST_FS_SELECTOR = 0x0c08, "Host FS selector.";
    HOST_GS_SELECTOR = 0x0c0a, "Host GS selector.";
    HOST_TR_SELECTOR = 0x0c0c, "Host TR selector.";
    IO_BITMAP_A = 0x2000, "Address of I/O bitmap A.";
    IO_BITMAP_B = 0x2002, "Address of I/O bitmap B.";
    MSR_BITMAP = 0x2004, "Address of the MSR bitmaps.";
    VM_EXIT_MSR_STORE_ADDR = 0x2006, "VM-exit MSR-store address.";
    VM_EXIT_MSR_LOAD_ADDR = 0x2008, "VM-exit MSR-load address.";
    VM_ENTRY_MSR_LOAD_ADDR = 0x200a, "VM-entry MSR-load address.";
    TSC_OFFSET = 0x2010, "TSC offset.";
    EPT_POINTER = 0x201a, "EPT pointer.";
    XSS_EXIT_BITMAP = 0x202c, "XSS-exiting bitmap.";
    SPPT_POINTER = 0x2030, "Sub-page-permission-table pointer.";
    GUEST_PHYSICAL_ADDRESS = 0x2400, "Exit information: guest-physical address.";
    VMCS_LINK_POINTER = 0x2800, "VMCS link pointer (all ones when unused).";
    GUEST_IA32_DEBUGCTL = 0x2802, "Guest IA32_DEBUGCTL.";
    GUEST_IA32_PAT = 0x2804, "Guest IA32_PAT.";
    GUEST_IA32_EFER = 0x2806, "Guest IA32_EFER.";
    HOST_IA32_PAT = 0x2c00, "Host IA32_PAT.";
    HOST_IA32_EFER = 0x2c02, "Host IA32_EFER.";
    PIN_BASED_VM_EXEC_CONTROL = 0x4000, "Pin-based VM-execution controls.";
    CPU_BASED_VM_EXEC_CONTROL = 0x4002, "Primary processor-based VM-execution controls.";
    EXCEPTION_BITMAP = 0x4004, "Exception bitmap.";
    PAGE_FAULT_ERROR_CODE_MASK = 0x4006, "Page-fault error-code mask.";
    PAGE_FAULT_ERROR_CODE_MATCH = 0x4008, "Page-fault error-code match.";
    CR3_TARGET_COUNT = 0x400a, "CR3-target count.";
    VM_EXIT_CONTROLS = 0x400c, "VM-exit controls.";
    VM_EXIT_MSR_STORE_COUNT = 0x400e, "VM-exit MSR-store count.";
    VM_EXIT_MSR_LOAD_COUNT = 0x4010, "VM-exit MSR-load count.";
    VM_ENTRY_CONTROLS = 0x4012, "VM-entry controls.";
    VM_ENTRY_MSR_LOAD_COUNT = 0x4014, "VM-entry MSR-load count.";
    VM_ENTRY_INTR_INFO = 0x4016, "VM-entry interruption-information field.";
    VM_ENTRY_EXCEPTION_ERROR_CODE = 0x4018, "VM-entry exception error code.";
    VM_ENTRY_INSTRUCTION_LEN = 0x401a, "VM-entry instruction length.";
    TPR_THRESHOLD = 0x401c, "TPR threshold.";
    SECONDARY_VM_EXEC_CONTROL = 0x401e, "Secondary processor-based VM-execution controls.";
    VM_INSTRUCTION_ERROR = 0x4400, "VM-instruction error.";
    VM_EXIT_REASON = 0x4402, "Exit reason.";
    VM_EXIT_INTR_INFO = 0x4404, "VM-exit interruption information.";
    VM_EXIT_INTR_ERROR_CODE = 0x4406, "VM-exit interruption error code.";
    IDT_VECTORING_INFO = 0x4408, "IDT-vectoring information.";
    IDT_VECTORING_ERROR_CODE = 0x440a, "IDT-vectoring error code.";
    VM_EXIT_INSTRUCTION_LEN = 0x440c, "VM-exit instruction length.";
    VMX_INSTRUCTION_INFO = 0x440e, "VM-exit instruction information.";
    GUEST_ES_LIMIT = 0x4800, "Guest ES limit.";
    GUEST_CS_LIMIT = 0x4802, "Guest CS limit.";
    GUEST_SS_LIMIT = 0x4804, "Guest SS limit.";
    GUEST_DS_LIMIT = 0x4806, "Guest DS limit.";
    GUEST_FS_LIMIT = 0x4808, "Guest FS limit.";
    GUEST_GS_LIMIT = 0x480a, "Guest GS limit.";
    GUEST_LDTR_LIMIT = 0x480c, "Guest LDTR limit.";
    GUEST_TR_LIMIT = 0x480e, "Guest TR limit.";
    GUEST_GDTR_LIMIT = 0x4810, "Guest GDTR limit.";
    GUEST_IDTR_LIMIT = 0x4812, "Guest IDTR limit.";
    GUEST_ES_AR_BYTES = 0x4814, "Guest ES access rights.";
    GUEST_CS_AR_BYTES = 0x4816, "Guest CS access rights.";
    GUEST_SS_AR_BYTES = 0x4818, "Guest SS access rights.";
    GUEST_DS_AR_BYTES = 0x481a, "Guest DS access rights.";
    GUEST_FS_AR_BYTES = 0x481c, "Guest FS access rights.";
    GUEST_GS_AR_BYTES = 0x481e, "Guest GS access rights.";
    GUEST_LDTR_AR_BYTES = 0x4820, "Guest LDTR access rights.";
    GUEST_TR_AR_BYTES = 0x4822, "Guest TR access rights.";
    GUEST_INTERRUPTIBILITY_INFO = 0x4824, "Guest interruptibility state.";
    GUEST_ACTIVITY_STATE = 0x4826, "Guest activity state.";
    GUEST_SYSENTER_CS = 0x482a, "Guest IA32_SYSENTER_CS.";
    HOST_IA32_SYSENTER_CS = 0x4c00, "Host IA32_SYSENTER_CS.";
    CR0_GUEST_HOST_MASK = 0x6000, "CR0 guest/host mask.";
    CR4_GUEST_HOST_MASK = 0x6002, "CR4 guest/host mask.";
    CR0_READ_SHADOW = 0x6004, "CR0 read shadow.";
    CR4_READ_SHADOW = 0x6006, "CR4 read shadow.";
    EXIT_QUALIFICATION = 0x6400, "Exit qualification.";
    GUEST_LINEAR_ADDRESS = 0x640a, "Exit information: guest-linear address.";
    GUEST_CR0 = 0x6800, "Guest CR0.";
    GUEST_CR3 = 0x6802, "Guest CR3.";
    GUEST_CR4 = 0x6804, "Guest CR4.";
    GUEST_ES_BASE = 0x6806, "Guest ES base.";
    GUEST_CS_BASE = 0x6808, "Guest CS base.";
    GUEST_SS_BASE = 0x680a, "Guest SS base.";
    GUEST_DS_BASE = 0x680c, "Guest DS base.";
    GUEST_FS_BASE = 0x680e, "Guest FS base.";
    GUEST_GS_BASE = 0x6810, "Guest GS base.";
    GUEST_LDTR_BASE = 0x6812, "Guest LDTR base.";
    GUEST_TR_BASE = 0x6814, "Guest TR base.";
    GUEST_GDTR_BASE = 0x6816, "Guest GDTR base.";
    GUEST_IDTR_BASE = 0x6818, "Guest IDTR base.";
    GUEST_DR7 = 0x681a, "Guest DR7.";
    GUEST_RSP = 0x681c, "Guest RSP.";
    GUEST_RIP = 0x681e, "Guest RIP.";
    GUEST_RFLAGS = 0x6820, "Guest RFLAGS.";
    GUEST_PENDING_DBG_EXCEPTIONS = 0x6822, "Guest pending debug exceptions.";
    GUEST_SYSENTER_ESP = 0x6824, "Guest IA32_SYSENTER_ESP.";
    GUEST_SYSENTER_EIP = 0x6826, "Guest IA32_SYSENTER_EIP.";
    HOST_CR0 = 0x6c00, "Host CR0.";
    HOST_CR3 = 0x6c02, "Host CR3.";
    HOST_CR4 = 0x6c04, "Host CR4.";
    HOST_FS_BASE = 0x6c06, "Host FS base.";
    HOST_GS_BASE = 0x6c08, "Host GS base.";
    HOST_TR_BASE = 0x6c0a, "Host TR base.";
    HOST_GDTR_BASE = 0x6c0c, "Host GDTR base.";
    HOST_IDTR_BASE = 0x6c0e, "Host IDTR base.";
    HOST_SYSENTER_ESP = 0x6c10, "Host IA32_SYSENTER_ESP.";
    HOST_SYSENTER_EIP = 0x6c12, "Host IA32_SYSENTER_EIP.";
    HOST_RSP = 0x6c14, "Host RSP.";
    HOST_RIP = 0x6c16, "Host RIP.";
}

/// Width class of a field (encoding bits 14:13).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Width {
    /// 16-bit.
    W16,
    /// 64-bit (full; bit 0 clear).
    W64,
    /// 32-bit.
    W32,
    /// Natural width (64-bit on x86-64).
    Natural,
}

/// The width class encoded in `f`.
pub const fn width(f: Field) -> Width {
    match (f >> 13) & 3 {
        0 => Width::W16,
        1 => Width::W64,
        2 => Width::W32,
        _ => Width::Natural,
    }
}

/// Whether `f` is read-only exit information (encoding bits 11:10 = 1).
pub const fn is_read_only(f: Field) -> bool {
    (f >> 10) & 3 == 1
}

/// VMCS link pointer value meaning "no shadow / link VMCS".
pub const NO_LINK: u64 = u64::MAX;

/// VM-instruction error numbers worth naming (SDM "VM Instruction Error Numbers").
pub fn instruction_error_name(e: u64) -> &'static str {
    match e {
        1 => "VMCALL executed in VMX root operation",
        2 => "VMCLEAR with invalid physical address",
        3 => "VMCLEAR with VMXON pointer",
        4 => "VMLAUNCH with non-clear VMCS",
        5 => "VMRESUME with non-launched VMCS",
        7 => "VM entry with invalid control field(s)",
        8 => "VM entry with invalid host-state field(s)",
        9 => "VMPTRLD with invalid physical address",
        10 => "VMPTRLD with VMXON pointer",
        11 => "VMPTRLD with incorrect VMCS revision identifier",
        12 => "VMREAD/VMWRITE from/to unsupported VMCS component",
        13 => "VMWRITE to read-only VMCS component",
        15 => "VMXON executed in VMX root operation",
        26 => "VM entry with events blocked by MOV SS",
        28 => "Invalid operand to INVEPT/INVVPID",
        _ => "other VM-instruction error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings_are_unique_and_consistent() {
        for (i, (f, name)) in ALL.iter().enumerate() {
            assert_eq!(f & 1, 0, "{name}: high-half access encoding used");
            for (g, other) in &ALL[i + 1..] {
                assert_ne!(f, g, "{name} and {other} share an encoding");
            }
            let w = width(*f);
            let want = if name.ends_with("SELECTOR") || *name == "VIRTUAL_PROCESSOR_ID" {
                Width::W16
            } else if name.ends_with("_LIMIT")
                || name.ends_with("AR_BYTES")
                || name.ends_with("CONTROL")
                || name.ends_with("_CONTROLS")
                || name.ends_with("_COUNT")
            {
                Width::W32
            } else {
                w
            };
            assert_eq!(w, want, "{name}");
        }
    }

    #[test]
    fn read_only_exit_information() {
        for f in [
            VM_EXIT_REASON,
            EXIT_QUALIFICATION,
            GUEST_PHYSICAL_ADDRESS,
            VM_INSTRUCTION_ERROR,
        ] {
            assert!(is_read_only(f));
        }
        for f in [GUEST_RIP, HOST_RIP, EPT_POINTER, CPU_BASED_VM_EXEC_CONTROL] {
            assert!(!is_read_only(f));
        }
        assert_eq!(width(GUEST_RIP), Width::Natural);
        assert_eq!(width(EPT_POINTER), Width::W64);
    }
}
