// SPDX-License-Identifier: GPL-2.0

//! VMX capability discovery: which MSRs to read, how to decode them, and
//! whether this CPU can run pkvm.
//!
//! Owns the decoding of CPUID.1:ECX.VMX, `IA32_FEATURE_CONTROL` and the VMX
//! capability MSRs (SDM Vol. 3D, appendix A "VMX Capability Reporting
//! Facility") into [`VmxCaps`], the list of features pkvm requires or can use
//! ([`FEATURES`]), and the text the module prints and exposes in debugfs.
//! Reading the MSRs is the caller's job (`arch::msr` in the module, a table
//! in tests): this file only sees numbers.

use core::fmt;

use crate::hv::bitfield::get;

/// CPUID.1:ECX bit 5: VMX supported.
pub const CPUID_1_ECX_VMX: u32 = 1 << 5;

/// `IA32_FEATURE_CONTROL` bit 0: lock (no further writes until reset).
pub const FEATURE_CONTROL_LOCKED: u64 = 1 << 0;
/// `IA32_FEATURE_CONTROL` bit 2: VMXON allowed outside SMX operation.
pub const FEATURE_CONTROL_VMX_OUTSIDE_SMX: u64 = 1 << 2;

macro_rules! vmx_msrs {
    ($( $variant:ident = $index:literal, $name:literal; )*) => {
        /// The MSRs capability discovery reads, with their indices.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum VmxMsr {
            $(
                #[doc = concat!("`", $name, "` (", stringify!($index), ").")]
                $variant,
            )*
        }

        impl VmxMsr {
            /// Every MSR, in [`RawVmxInfo`] order.
            pub const ALL: &'static [VmxMsr] = &[$(VmxMsr::$variant),*];

            /// The MSR index for RDMSR.
            pub const fn index(self) -> u32 {
                match self { $(VmxMsr::$variant => $index,)* }
            }

            /// The SDM name of the MSR.
            pub const fn name(self) -> &'static str {
                match self { $(VmxMsr::$variant => $name,)* }
            }
        }
    };
}

vmx_msrs! {
    FeatureControl = 0x3a, "IA32_FEATURE_CONTROL";
    Basic = 0x480, "IA32_VMX_BASIC";
    PinbasedCtls = 0x481, "IA32_VMX_PINBASED_CTLS";
    ProcbasedCtls = 0x482, "IA32_VMX_PROCBASED_CTLS";
    ExitCtls = 0x483, "IA32_VMX_EXIT_CTLS";
    EntryCtls = 0x484, "IA32_VMX_ENTRY_CTLS";
    Misc = 0x485, "IA32_VMX_MISC";
    Cr0Fixed0 = 0x486, "IA32_VMX_CR0_FIXED0";
    Cr0Fixed1 = 0x487, "IA32_VMX_CR0_FIXED1";
    Cr4Fixed0 = 0x488, "IA32_VMX_CR4_FIXED0";
    Cr4Fixed1 = 0x489, "IA32_VMX_CR4_FIXED1";
    VmcsEnum = 0x48a, "IA32_VMX_VMCS_ENUM";
    ProcbasedCtls2 = 0x48b, "IA32_VMX_PROCBASED_CTLS2";
    EptVpidCap = 0x48c, "IA32_VMX_EPT_VPID_CAP";
    TruePinbasedCtls = 0x48d, "IA32_VMX_TRUE_PINBASED_CTLS";
    TrueProcbasedCtls = 0x48e, "IA32_VMX_TRUE_PROCBASED_CTLS";
    TrueExitCtls = 0x48f, "IA32_VMX_TRUE_EXIT_CTLS";
    TrueEntryCtls = 0x490, "IA32_VMX_TRUE_ENTRY_CTLS";
    Vmfunc = 0x491, "IA32_VMX_VMFUNC";
}

/// Number of MSRs in [`VmxMsr::ALL`].
pub const VMX_MSR_COUNT: usize = VmxMsr::ALL.len();

/// What the CPU reported, before any interpretation.  `None` for an MSR
/// whose read faulted (it does not exist on this CPU).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct RawVmxInfo {
    /// CPUID leaf 1, ECX.
    pub cpuid_1_ecx: u32,
    /// The MSRs, indexed like [`VmxMsr::ALL`].
    pub msrs: [Option<u64>; VMX_MSR_COUNT],
}

impl RawVmxInfo {
    /// Collects the MSRs through `read` (index -> value, `None` on #GP).
    /// MSRs are only read when CPUID reports VMX.
    pub fn read_with(cpuid_1_ecx: u32, mut read: impl FnMut(u32) -> Option<u64>) -> Self {
        let mut raw = Self {
            cpuid_1_ecx,
            msrs: [None; VMX_MSR_COUNT],
        };
        if cpuid_1_ecx & CPUID_1_ECX_VMX != 0 {
            for (slot, msr) in raw.msrs.iter_mut().zip(VmxMsr::ALL) {
                *slot = read(msr.index());
            }
        }
        raw
    }

    /// The value of `msr`, if it could be read.
    pub fn get(&self, msr: VmxMsr) -> Option<u64> {
        self.msrs[msr as usize]
    }

    /// Records a value for `msr` (used by tests and fault injection).
    pub fn set(&mut self, msr: VmxMsr, v: Option<u64>) {
        self.msrs[msr as usize] = v;
    }
}

/// Text dump of raw capability MSRs, one `NAME (index): value` per line
/// (`unreadable` for a read that faulted).
pub struct RawDump<'a>(pub &'a [Option<u64>; VMX_MSR_COUNT]);

impl fmt::Display for RawDump<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (msr, v) in VmxMsr::ALL.iter().zip(self.0) {
            match v {
                Some(v) => writeln!(f, "{} ({:#x}): {:#018x}", msr.name(), msr.index(), v)?,
                None => writeln!(f, "{} ({:#x}): unreadable", msr.name(), msr.index())?,
            }
        }
        Ok(())
    }
}

/// A VMX control MSR decoded: which bits must be 1 and which may be 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct AllowedCtls {
    /// Bits that must be set (allowed-0 settings, MSR bits 31:0).
    pub must_be_one: u32,
    /// Bits that may be set (allowed-1 settings, MSR bits 63:32).
    pub may_be_one: u32,
}

impl AllowedCtls {
    /// Decodes a capability MSR value.
    pub const fn from_msr(v: u64) -> Self {
        Self {
            must_be_one: v as u32,
            may_be_one: (v >> 32) as u32,
        }
    }

    /// Whether `bit` may be set to 1.
    pub const fn can_set(&self, bit: u32) -> bool {
        bit < 32 && self.may_be_one & (1 << bit) != 0
    }

    /// Computes the control value to program: every `required` bit, every
    /// `optional` bit the CPU allows, and every bit the CPU forces on.
    /// Fails with the required bits the CPU cannot set.
    pub const fn adjust(&self, required: u32, optional: u32) -> Result<u32, u32> {
        let missing = required & !self.may_be_one;
        if missing != 0 {
            return Err(missing);
        }
        Ok(required | (optional & self.may_be_one) | self.must_be_one)
    }
}

/// Control bits pkvm refers to, by the SDM's names.
pub mod ctl {
    /// Pin-based: VMX-preemption timer.
    pub const PIN_PREEMPTION_TIMER: u32 = 1 << 6;
    /// Pin-based: process posted interrupts.
    pub const PIN_POSTED_INTERRUPTS: u32 = 1 << 7;
    /// Primary processor-based: activate tertiary controls (pkvm never sets it).
    pub const PROC_TERTIARY_CONTROLS: u32 = 1 << 17;
    /// Primary processor-based: use MSR bitmaps.
    pub const PROC_MSR_BITMAPS: u32 = 1 << 28;
    /// Primary processor-based: activate secondary controls.
    pub const PROC_SECONDARY_CONTROLS: u32 = 1 << 31;
    /// Secondary: enable EPT.
    pub const PROC2_EPT: u32 = 1 << 1;
    /// Secondary: enable RDTSCP.
    pub const PROC2_RDTSCP: u32 = 1 << 3;
    /// Secondary: enable VPID.
    pub const PROC2_VPID: u32 = 1 << 5;
    /// Secondary: unrestricted guest.
    pub const PROC2_UNRESTRICTED_GUEST: u32 = 1 << 7;
    /// Secondary: enable INVPCID.
    pub const PROC2_INVPCID: u32 = 1 << 12;
    /// Secondary: enable VM functions.
    pub const PROC2_VMFUNC: u32 = 1 << 13;
    /// Secondary: VMCS shadowing.
    pub const PROC2_VMCS_SHADOWING: u32 = 1 << 14;
    /// Secondary: enable PML.
    pub const PROC2_PML: u32 = 1 << 17;
    /// Secondary: EPT-violation #VE.
    pub const PROC2_EPT_VIOLATION_VE: u32 = 1 << 18;
    /// Secondary: enable XSAVES/XRSTORS.
    pub const PROC2_XSAVES: u32 = 1 << 20;
    /// Secondary: mode-based execute control for EPT.
    pub const PROC2_MBEC: u32 = 1 << 22;
    /// Secondary: sub-page write permissions for EPT.
    pub const PROC2_SPP: u32 = 1 << 23;
    /// VM-exit: host address-space size (64-bit host).
    pub const EXIT_HOST_ADDR_SPACE_SIZE: u32 = 1 << 9;
    /// VM-exit: save IA32_PAT.
    pub const EXIT_SAVE_PAT: u32 = 1 << 18;
    /// VM-exit: load IA32_PAT.
    pub const EXIT_LOAD_PAT: u32 = 1 << 19;
    /// VM-exit: save IA32_EFER.
    pub const EXIT_SAVE_EFER: u32 = 1 << 20;
    /// VM-exit: load IA32_EFER.
    pub const EXIT_LOAD_EFER: u32 = 1 << 21;
    /// VM-entry: IA-32e mode guest.
    pub const ENTRY_IA32E_GUEST: u32 = 1 << 9;
    /// VM-entry: load IA32_PAT.
    pub const ENTRY_LOAD_PAT: u32 = 1 << 14;
    /// VM-entry: load IA32_EFER.
    pub const ENTRY_LOAD_EFER: u32 = 1 << 15;
}

/// Bits of `IA32_VMX_EPT_VPID_CAP`.
pub mod ept_cap {
    /// Execute-only EPT translations.
    pub const EXEC_ONLY: u64 = 1 << 0;
    /// Page-walk length of 4.
    pub const WALK_4: u64 = 1 << 6;
    /// Page-walk length of 5.
    pub const WALK_5: u64 = 1 << 7;
    /// Uncacheable memory type for EPT paging structures.
    pub const UC: u64 = 1 << 8;
    /// Write-back memory type for EPT paging structures.
    pub const WB: u64 = 1 << 14;
    /// 2 MiB EPT pages.
    pub const PAGE_2M: u64 = 1 << 16;
    /// 1 GiB EPT pages.
    pub const PAGE_1G: u64 = 1 << 17;
    /// INVEPT supported.
    pub const INVEPT: u64 = 1 << 20;
    /// Accessed and dirty flags for EPT.
    pub const AD: u64 = 1 << 21;
    /// Advanced VM-exit information for EPT violations.
    pub const ADVANCED_EXIT_INFO: u64 = 1 << 22;
    /// Supervisor shadow-stack control.
    pub const SUPERVISOR_SHADOW_STACK: u64 = 1 << 23;
    /// Single-context INVEPT.
    pub const INVEPT_SINGLE: u64 = 1 << 25;
    /// All-context INVEPT.
    pub const INVEPT_ALL: u64 = 1 << 26;
    /// INVVPID supported.
    pub const INVVPID: u64 = 1 << 32;
    /// Single-context INVVPID.
    pub const INVVPID_SINGLE: u64 = 1 << 41;
    /// All-context INVVPID.
    pub const INVVPID_ALL: u64 = 1 << 42;
}

macro_rules! features {
    ($( $variant:ident, $name:literal, $required:literal, |$c:ident| $test:expr; )*) => {
        /// A VMX feature pkvm requires or can use.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum Feature {
            $(
                #[doc = concat!("`", $name, "`")]
                $variant,
            )*
        }

        /// Every feature, with its name and whether pkvm refuses to load without it.
        pub const FEATURES: &[(Feature, &str, bool)] = &[$((Feature::$variant, $name, $required)),*];

        impl VmxCaps {
            /// Whether this CPU has feature `f`.
            pub fn has(&self, f: Feature) -> bool {
                match f {
                    $(Feature::$variant => { let $c = self; $test })*
                }
            }
        }
    };
}

features! {
    SecondaryControls, "secondary-controls", true, |c| c.procbased.can_set(31);
    MsrBitmaps, "msr-bitmaps", true, |c| c.procbased.can_set(28);
    Ept, "ept", true, |c| c.procbased2.can_set(1);
    EptWalk4, "ept-4-level", true, |c| c.ept_vpid_cap & ept_cap::WALK_4 != 0;
    EptWbTables, "ept-wb-tables", true, |c| c.ept_vpid_cap & ept_cap::WB != 0;
    Ept2M, "ept-2m-pages", true, |c| c.ept_vpid_cap & ept_cap::PAGE_2M != 0;
    Ept1G, "ept-1g-pages", true, |c| c.ept_vpid_cap & ept_cap::PAGE_1G != 0;
    Invept, "invept", true, |c| c.ept_vpid_cap & ept_cap::INVEPT != 0;
    InveptSingle, "invept-single-context", true, |c| c.ept_vpid_cap & ept_cap::INVEPT_SINGLE != 0;
    InveptAll, "invept-all-context", true, |c| c.ept_vpid_cap & ept_cap::INVEPT_ALL != 0;
    UnrestrictedGuest, "unrestricted-guest", true, |c| c.procbased2.can_set(7);
    VmcsShadowing, "vmcs-shadowing", true, |c| c.procbased2.can_set(14);
    HostAddrSpaceSize, "exit-host-64bit", true, |c| c.exit.can_set(9);
    Ia32eGuest, "entry-ia32e-guest", true, |c| c.entry.can_set(9);
    EferSwitch, "efer-load-save", true, |c| c.exit.can_set(20) && c.exit.can_set(21) && c.entry.can_set(15);
    PatSwitch, "pat-load-save", true, |c| c.exit.can_set(18) && c.exit.can_set(19) && c.entry.can_set(14);
    Vpid, "vpid", false, |c| c.procbased2.can_set(5) && c.ept_vpid_cap & ept_cap::INVVPID != 0;
    Spp, "spp", false, |c| c.procbased2.can_set(23);
    EptAd, "ept-accessed-dirty", false, |c| c.ept_vpid_cap & ept_cap::AD != 0;
    Mbec, "mode-based-exec", false, |c| c.procbased2.can_set(22);
    EptViolationVe, "ept-violation-ve", false, |c| c.procbased2.can_set(18);
    Vmfunc, "vmfunc", false, |c| c.procbased2.can_set(13);
    Pml, "pml", false, |c| c.procbased2.can_set(17);
    PreemptionTimer, "preemption-timer", false, |c| c.pinbased.can_set(6);
    PostedInterrupts, "posted-interrupts", false, |c| c.pinbased.can_set(7);
    Xsaves, "xsaves", false, |c| c.procbased2.can_set(20);
    TertiaryControls, "tertiary-controls", false, |c| c.procbased.can_set(17);
}

/// Decoded VMX capabilities of one CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct VmxCaps {
    /// VMCS revision identifier (IA32_VMX_BASIC bits 30:0).
    pub vmcs_revision: u32,
    /// Bytes to allocate for a VMXON / VMCS region (bits 44:32).
    pub vmcs_size: u32,
    /// Whether the TRUE_* control MSRs exist (bit 55).
    pub true_ctls: bool,
    /// Pin-based controls (TRUE_ version when available).
    pub pinbased: AllowedCtls,
    /// Primary processor-based controls (TRUE_ version when available).
    pub procbased: AllowedCtls,
    /// Secondary processor-based controls (zero when there are none).
    pub procbased2: AllowedCtls,
    /// VM-exit controls (TRUE_ version when available).
    pub exit: AllowedCtls,
    /// VM-entry controls (TRUE_ version when available).
    pub entry: AllowedCtls,
    /// IA32_VMX_EPT_VPID_CAP (zero when neither EPT nor VPID exists).
    pub ept_vpid_cap: u64,
    /// IA32_VMX_MISC.
    pub misc: u64,
    /// CR0 bits that must be 1 / may be 1 in VMX operation.
    pub cr0_fixed: (u64, u64),
    /// CR4 bits that must be 1 / may be 1 in VMX operation.
    pub cr4_fixed: (u64, u64),
    /// IA32_VMX_VMFUNC (zero without VM functions).
    pub vmfunc: u64,
}

/// Why pkvm cannot run on this CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VmxError {
    /// CPUID does not report VMX (not an Intel VT-x CPU, or VMX hidden).
    NoVmx,
    /// A capability MSR could not be read although CPUID reports VMX.
    MsrUnreadable(VmxMsr),
    /// IA32_FEATURE_CONTROL is not locked: firmware (and the kernel's
    /// feat_ctl code) left VMX unconfigured.
    FeatureControlUnlocked,
    /// IA32_FEATURE_CONTROL is locked with VMX outside SMX disabled: VT-x is
    /// turned off in the firmware set-up.
    DisabledByFirmware,
    /// VMCS regions must be write-back cacheable; this CPU says otherwise.
    VmcsMemType(u64),
    /// VMXON regions limited to 32-bit addresses (IA32_VMX_BASIC bit 48).
    VmcsAddr32,
    /// A required feature is missing (the first one, in [`FEATURES`] order).
    Missing(Feature),
}

impl VmxError {
    /// The errno the module fails its load with: `ENODEV` when there is no
    /// VMX at all, `EOPNOTSUPP` when VMX exists but is off or lacks what
    /// pkvm needs, `EIO` when the CPU's own reports are unreadable.
    pub const fn errno(self) -> i32 {
        const ENODEV: i32 = 19;
        const EIO: i32 = 5;
        const EOPNOTSUPP: i32 = 95;
        match self {
            Self::NoVmx => ENODEV,
            Self::MsrUnreadable(_) => EIO,
            _ => EOPNOTSUPP,
        }
    }
}

impl fmt::Display for VmxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoVmx => f.write_str("CPU does not support VMX (CPUID.1:ECX.VMX=0)"),
            Self::MsrUnreadable(m) => write!(f, "cannot read {} ({:#x})", m.name(), m.index()),
            Self::FeatureControlUnlocked => {
                f.write_str("IA32_FEATURE_CONTROL is not locked: VMX not configured by firmware")
            }
            Self::DisabledByFirmware => f.write_str(
                "VMX disabled by firmware (IA32_FEATURE_CONTROL locked, VMXON outside SMX off)",
            ),
            Self::VmcsMemType(t) => write!(f, "VMCS memory type {t} is not write-back"),
            Self::VmcsAddr32 => f.write_str("VMX regions limited to 32-bit physical addresses"),
            Self::Missing(feat) => {
                write!(f, "required VMX feature missing: {}", feature_name(*feat))
            }
        }
    }
}

/// The name of `f` as printed and as shown in debugfs.
pub fn feature_name(f: Feature) -> &'static str {
    FEATURES
        .iter()
        .find(|(x, _, _)| *x == f)
        .map_or("?", |(_, name, _)| name)
}

impl VmxCaps {
    /// Decodes `raw` and checks everything pkvm requires.
    pub fn decode(raw: &RawVmxInfo) -> Result<Self, VmxError> {
        let caps = Self::decode_view(raw)?;
        if let Some(&(f, _, _)) = FEATURES.iter().find(|(f, _, req)| *req && !caps.has(*f)) {
            return Err(VmxError::Missing(f));
        }
        Ok(caps)
    }

    /// Decodes `raw` as a VMX implementation (VMX reported, firmware
    /// enabled it, write-back 64-bit regions), without asking for what pkvm
    /// itself requires: used for the VMX view pkvm offers the host
    /// (`crate::hv::vmx::nested::offer`), which hides EPT among others.
    pub fn decode_view(raw: &RawVmxInfo) -> Result<Self, VmxError> {
        if raw.cpuid_1_ecx & CPUID_1_ECX_VMX == 0 {
            return Err(VmxError::NoVmx);
        }
        let need = |m: VmxMsr| raw.get(m).ok_or(VmxError::MsrUnreadable(m));

        let fc = need(VmxMsr::FeatureControl)?;
        if fc & FEATURE_CONTROL_LOCKED == 0 {
            return Err(VmxError::FeatureControlUnlocked);
        }
        if fc & FEATURE_CONTROL_VMX_OUTSIDE_SMX == 0 {
            return Err(VmxError::DisabledByFirmware);
        }

        let basic = need(VmxMsr::Basic)?;
        let memtype = get(basic, 50, 4);
        if memtype != 6 {
            return Err(VmxError::VmcsMemType(memtype));
        }
        if get(basic, 48, 1) != 0 {
            return Err(VmxError::VmcsAddr32);
        }
        let true_ctls = get(basic, 55, 1) != 0;
        let ctls = |plain: VmxMsr, tru: VmxMsr| -> Result<AllowedCtls, VmxError> {
            let v = if true_ctls { need(tru)? } else { need(plain)? };
            Ok(AllowedCtls::from_msr(v))
        };
        let procbased = ctls(VmxMsr::ProcbasedCtls, VmxMsr::TrueProcbasedCtls)?;
        let procbased2 = if procbased.can_set(31) {
            AllowedCtls::from_msr(need(VmxMsr::ProcbasedCtls2)?)
        } else {
            AllowedCtls::default()
        };
        let ept_vpid_cap = if procbased2.can_set(1) || procbased2.can_set(5) {
            need(VmxMsr::EptVpidCap)?
        } else {
            0
        };
        Ok(Self {
            vmcs_revision: get(basic, 0, 31) as u32,
            vmcs_size: get(basic, 32, 13) as u32,
            true_ctls,
            pinbased: ctls(VmxMsr::PinbasedCtls, VmxMsr::TruePinbasedCtls)?,
            procbased,
            procbased2,
            exit: ctls(VmxMsr::ExitCtls, VmxMsr::TrueExitCtls)?,
            entry: ctls(VmxMsr::EntryCtls, VmxMsr::TrueEntryCtls)?,
            ept_vpid_cap,
            misc: need(VmxMsr::Misc)?,
            cr0_fixed: (need(VmxMsr::Cr0Fixed0)?, need(VmxMsr::Cr0Fixed1)?),
            cr4_fixed: (need(VmxMsr::Cr4Fixed0)?, need(VmxMsr::Cr4Fixed1)?),
            vmfunc: if procbased2.can_set(13) {
                raw.get(VmxMsr::Vmfunc).unwrap_or(0)
            } else {
                0
            },
        })
    }

    /// A one-line summary for the kernel log.
    pub fn summary(&self) -> Summary<'_> {
        Summary(self)
    }

    /// The multi-line report exposed in debugfs.
    pub fn report(&self) -> Report<'_> {
        Report(self)
    }
}

/// One-line summary; see [`VmxCaps::summary`].
pub struct Summary<'a>(&'a VmxCaps);

impl fmt::Display for Summary<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = self.0;
        let yn = |feat| if c.has(feat) { "yes" } else { "no" };
        write!(
            f,
            "VMX rev {:#x} vmcs {}B, EPT 4-level 2M 1G invept, unrestricted-guest, \
             vmcs-shadowing; optional: vpid={} spp={} ept-ad={} mbec={} pml={}",
            c.vmcs_revision,
            c.vmcs_size,
            yn(Feature::Vpid),
            yn(Feature::Spp),
            yn(Feature::EptAd),
            yn(Feature::Mbec),
            yn(Feature::Pml),
        )
    }
}

/// `key: value` report; see [`VmxCaps::report`].
pub struct Report<'a>(&'a VmxCaps);

impl fmt::Display for Report<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = self.0;
        writeln!(f, "vmcs_revision: {:#x}", c.vmcs_revision)?;
        writeln!(f, "vmcs_size: {}", c.vmcs_size)?;
        writeln!(f, "true_controls: {}", u8::from(c.true_ctls))?;
        for (feat, name, required) in FEATURES {
            writeln!(
                f,
                "{name}: {}{}",
                if c.has(*feat) { "yes" } else { "no" },
                if *required { " (required)" } else { "" }
            )?;
        }
        let ctl = |f: &mut fmt::Formatter<'_>, name, a: AllowedCtls| {
            writeln!(
                f,
                "{name}: must1={:#010x} may1={:#010x}",
                a.must_be_one, a.may_be_one
            )
        };
        ctl(f, "pinbased_ctls", c.pinbased)?;
        ctl(f, "procbased_ctls", c.procbased)?;
        ctl(f, "procbased_ctls2", c.procbased2)?;
        ctl(f, "exit_ctls", c.exit)?;
        ctl(f, "entry_ctls", c.entry)?;
        writeln!(f, "ept_vpid_cap: {:#018x}", c.ept_vpid_cap)?;
        writeln!(f, "misc: {:#018x}", c.misc)?;
        writeln!(f, "cr0_fixed: {:#x} {:#x}", c.cr0_fixed.0, c.cr0_fixed.1)?;
        writeln!(f, "cr4_fixed: {:#x} {:#x}", c.cr4_fixed.0, c.cr4_fixed.1)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Capability MSR values as Bochs 3.0 (`corei7_icelake_u`) reports them,
    /// copied from the module's `raw_msrs` debugfs file in the system test
    /// (PROCBASED2 allowed-1 0x02d77fff: SPP, bit 23, is set).
    pub(crate) fn icelake() -> RawVmxInfo {
        let vals: &[(VmxMsr, u64)] = &[
            (VmxMsr::FeatureControl, 0x5),
            (VmxMsr::Basic, 0x00d8_1000_0000_0004),
            (VmxMsr::PinbasedCtls, 0x0000_00ff_0000_0016),
            (VmxMsr::ProcbasedCtls, 0xfff9_fffe_0401_e172),
            (VmxMsr::ExitCtls, 0x407f_ffff_0003_6dff),
            (VmxMsr::EntryCtls, 0x0000_ffff_0000_11ff),
            (VmxMsr::Misc, 0x0000_0000_6004_01e0),
            (VmxMsr::Cr0Fixed0, 0x8000_0021),
            (VmxMsr::Cr0Fixed1, 0xffff_ffff),
            (VmxMsr::Cr4Fixed0, 0x2000),
            (VmxMsr::Cr4Fixed1, 0x0077_2fff),
            (VmxMsr::VmcsEnum, 0x50),
            (VmxMsr::ProcbasedCtls2, 0x02d7_7fff_0000_0000),
            (VmxMsr::EptVpidCap, 0x0000_0f01_0673_4141),
            (VmxMsr::TruePinbasedCtls, 0x0000_00ff_0000_0016),
            (VmxMsr::TrueProcbasedCtls, 0xfff9_fffe_0400_6172),
            (VmxMsr::TrueExitCtls, 0x407f_ffff_0003_6dfb),
            (VmxMsr::TrueEntryCtls, 0x0000_ffff_0000_11fb),
            (VmxMsr::Vmfunc, 0x1),
        ];
        let mut raw = RawVmxInfo {
            cpuid_1_ecx: CPUID_1_ECX_VMX,
            ..Default::default()
        };
        for &(m, v) in vals {
            raw.set(m, Some(v));
        }
        raw
    }

    #[test]
    fn icelake_decodes_with_every_feature_pkvm_uses() {
        let c = VmxCaps::decode(&icelake()).unwrap();
        assert_eq!(c.vmcs_revision, 4);
        assert_eq!(c.vmcs_size, 0x1000);
        assert!(c.true_ctls);
        for f in [Feature::Spp, Feature::Vpid, Feature::EptAd, Feature::Vmfunc] {
            assert!(c.has(f), "{f:?}");
        }
        // TRUE_ controls are used: they clear must-be-one bits 2 and 15/16.
        assert_eq!(c.procbased.must_be_one, 0x0400_6172);
    }

    #[test]
    fn no_vmx_reads_no_msr() {
        let mut reads = 0;
        let raw = RawVmxInfo::read_with(0, |_| {
            reads += 1;
            Some(0)
        });
        assert_eq!(reads, 0);
        assert_eq!(VmxCaps::decode(&raw), Err(VmxError::NoVmx));
        assert_eq!(VmxError::NoVmx.errno(), 19);
    }

    #[test]
    fn read_with_queries_every_msr_by_index() {
        let ice = icelake();
        let table: &[(u32, u64)] = &[(0x3a, 5), (0x48c, 42)];
        let raw = RawVmxInfo::read_with(CPUID_1_ECX_VMX, |i| {
            table.iter().find(|(k, _)| *k == i).map(|(_, v)| *v)
        });
        assert_eq!(raw.get(VmxMsr::FeatureControl), Some(5));
        assert_eq!(raw.get(VmxMsr::EptVpidCap), Some(42));
        assert_eq!(raw.get(VmxMsr::Basic), None);
        assert_eq!(
            VmxCaps::decode(&raw),
            Err(VmxError::MsrUnreadable(VmxMsr::Basic))
        );
        assert_ne!(ice, raw);
    }

    #[test]
    fn feature_control_lock_rules() {
        let mut raw = icelake();
        raw.set(VmxMsr::FeatureControl, Some(0x4));
        assert_eq!(VmxCaps::decode(&raw), Err(VmxError::FeatureControlUnlocked));
        raw.set(VmxMsr::FeatureControl, Some(0x1));
        assert_eq!(VmxCaps::decode(&raw), Err(VmxError::DisabledByFirmware));
        // VMXON inside SMX only (bit 1) is still "disabled" for pkvm.
        raw.set(VmxMsr::FeatureControl, Some(0x3));
        assert_eq!(VmxCaps::decode(&raw), Err(VmxError::DisabledByFirmware));
        assert_eq!(VmxError::DisabledByFirmware.errno(), 95);
        raw.set(VmxMsr::FeatureControl, None);
        assert_eq!(
            VmxCaps::decode(&raw),
            Err(VmxError::MsrUnreadable(VmxMsr::FeatureControl))
        );
    }

    #[test]
    fn every_required_feature_is_checked() {
        // Clearing the capability behind each required feature must make
        // decode fail naming exactly that feature (or an earlier one it
        // depends on).
        let cases: &[(Feature, VmxMsr, u64)] = &[
            (
                Feature::SecondaryControls,
                VmxMsr::TrueProcbasedCtls,
                1 << 63,
            ),
            (Feature::MsrBitmaps, VmxMsr::TrueProcbasedCtls, 1 << 60),
            (Feature::Ept, VmxMsr::ProcbasedCtls2, 1 << 33),
            (Feature::EptWalk4, VmxMsr::EptVpidCap, ept_cap::WALK_4),
            (Feature::EptWbTables, VmxMsr::EptVpidCap, ept_cap::WB),
            (Feature::Ept2M, VmxMsr::EptVpidCap, ept_cap::PAGE_2M),
            (Feature::Ept1G, VmxMsr::EptVpidCap, ept_cap::PAGE_1G),
            (Feature::Invept, VmxMsr::EptVpidCap, ept_cap::INVEPT),
            (
                Feature::InveptSingle,
                VmxMsr::EptVpidCap,
                ept_cap::INVEPT_SINGLE,
            ),
            (Feature::InveptAll, VmxMsr::EptVpidCap, ept_cap::INVEPT_ALL),
            (Feature::UnrestrictedGuest, VmxMsr::ProcbasedCtls2, 1 << 39),
            (Feature::VmcsShadowing, VmxMsr::ProcbasedCtls2, 1 << 46),
            (Feature::HostAddrSpaceSize, VmxMsr::TrueExitCtls, 1 << 41),
            (Feature::Ia32eGuest, VmxMsr::TrueEntryCtls, 1 << 41),
            (Feature::EferSwitch, VmxMsr::TrueEntryCtls, 1 << 47),
            (Feature::PatSwitch, VmxMsr::TrueExitCtls, 1 << 51),
        ];
        let required = FEATURES.iter().filter(|(_, _, r)| *r).count();
        assert_eq!(
            cases.len(),
            required,
            "a required feature has no negative test"
        );
        for &(feat, msr, bit) in cases {
            let mut raw = icelake();
            let v = raw.get(msr).unwrap();
            assert_ne!(v & bit, 0, "{feat:?}: test bit not set in the base");
            raw.set(msr, Some(v & !bit));
            assert_eq!(
                VmxCaps::decode(&raw),
                Err(VmxError::Missing(feat)),
                "{feat:?}"
            );
        }
    }

    #[test]
    fn optional_features_do_not_block() {
        let mut raw = icelake();
        let p2 = raw.get(VmxMsr::ProcbasedCtls2).unwrap();
        raw.set(
            VmxMsr::ProcbasedCtls2,
            Some(p2 & !(1 << (32 + 23)) & !(1 << (32 + 5))),
        );
        let c = VmxCaps::decode(&raw).unwrap();
        assert!(!c.has(Feature::Spp));
        assert!(!c.has(Feature::Vpid));
    }

    #[test]
    fn vmcs_memtype_and_width_checked() {
        let mut raw = icelake();
        let b = raw.get(VmxMsr::Basic).unwrap();
        raw.set(VmxMsr::Basic, Some(b & !(0xf << 50)));
        assert_eq!(VmxCaps::decode(&raw), Err(VmxError::VmcsMemType(0)));
        raw.set(VmxMsr::Basic, Some(b | (1 << 48)));
        assert_eq!(VmxCaps::decode(&raw), Err(VmxError::VmcsAddr32));
    }

    #[test]
    fn without_true_ctls_the_plain_msrs_are_used() {
        let mut raw = icelake();
        let b = raw.get(VmxMsr::Basic).unwrap();
        raw.set(VmxMsr::Basic, Some(b & !(1 << 55)));
        raw.set(VmxMsr::TrueProcbasedCtls, None);
        let c = VmxCaps::decode(&raw).unwrap();
        assert!(!c.true_ctls);
        assert_eq!(c.procbased.must_be_one, 0x0401_e172);
    }

    #[test]
    fn raw_dump_names_every_msr() {
        extern crate std;
        use std::string::ToString;
        let mut raw = icelake();
        raw.set(VmxMsr::Vmfunc, None);
        let d = RawDump(&raw.msrs).to_string();
        assert_eq!(d.lines().count(), VMX_MSR_COUNT);
        assert!(
            d.contains("IA32_VMX_BASIC (0x480): 0x00d8100000000004\n"),
            "{d}"
        );
        assert!(d.contains("IA32_VMX_VMFUNC (0x491): unreadable\n"), "{d}");
    }

    #[test]
    fn adjust_controls() {
        let a = AllowedCtls::from_msr(0x0000_00ff_0000_0016);
        assert_eq!(a.adjust(1 << 0, 1 << 7), Ok(0x97));
        assert_eq!(a.adjust(1 << 8, 0), Err(1 << 8));
        // Optional bits the CPU does not allow are dropped, not an error.
        assert_eq!(a.adjust(0, 1 << 9), Ok(0x16));
        assert!(!a.can_set(40));
    }

    #[test]
    fn errors_have_messages() {
        extern crate std;
        use std::string::ToString;
        let e = VmxError::Missing(Feature::VmcsShadowing).to_string();
        assert_eq!(e, "required VMX feature missing: vmcs-shadowing");
        let m = VmxError::MsrUnreadable(VmxMsr::EptVpidCap).to_string();
        assert!(m.contains("IA32_VMX_EPT_VPID_CAP") && m.contains("0x48c"));
    }

    #[test]
    fn report_lists_every_feature() {
        extern crate std;
        use std::string::ToString;
        let c = VmxCaps::decode(&icelake()).unwrap();
        let r = c.report().to_string();
        for (feat, name, required) in FEATURES {
            let want = if c.has(*feat) { "yes" } else { "no" };
            let line = std::format!(
                "\n{name}: {want}{}\n",
                if *required { " (required)" } else { "" }
            );
            assert!(r.contains(&line), "{line:?} not in\n{r}");
            assert!(!*required || c.has(*feat));
        }
        assert!(r.contains("spp: yes\n"));
        let s = c.summary().to_string();
        assert!(s.starts_with("VMX rev 0x4 vmcs 4096B"), "{s}");
        assert!(s.contains("spp=yes"));
    }
}
