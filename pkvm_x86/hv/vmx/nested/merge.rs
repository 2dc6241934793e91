// SPDX-License-Identifier: GPL-2.0

//! vmcs12 -> vmcs02: the plan of a VM entry of the host's guest (which
//! host pages it needs) and vmcs02 built **from an allow-list, never by
//! copying control bits**.
//!
//! An entry runs in three steps, all driven by the integration
//! (`hyp/nested.rs`) from root mode:
//!
//! 1. [`plan_entry`]: the checks of `entry_checks` (VMfailValid 7/8)
//!    before any address of vmcs12 is used, then the list of host pages
//!    the entry uses ([`EntryPlan`]).  The caller validates each page
//!    (host-owned RAM only: never hypervisor memory, never a page donated
//!    to a guest), reads those read at entry (MSR bitmap, link pointer,
//!    PDPTEs), pins those the CPU uses while the guest runs (I/O bitmaps,
//!    virtual-APIC and APIC-access pages) for vmcs02's lifetime, and fails
//!    the entry with [`PageUse::refusal`] for a page that fails.
//! 2. [`merge_msr_bitmap`] into a hypervisor page, then [`build_vmcs02`].
//! 3. The VM-entry MSR-load area (`msr_area::load_area`), then VMLAUNCH /
//!    VMRESUME of vmcs02.
//!
//! Composition (the hypervisor's needs are [`HV_PIN`], [`HV_PROC1`],
//! [`HV_PROC2`], [`HV_EXCEPTIONS`] and the host CR4 mask):
//!
//! * control words: (vmcs12's bits & the allowed bits of the offer &
//!   the mergeable bits) | the hypervisor's needs | the CPU's
//!   must-be-one bits.  VM-exit controls are the hypervisor's own (vmcs02
//!   exits to root mode; vmcs12's are emulated by `reflect`), with
//!   acknowledge-interrupt-on-exit as vmcs12 asks; VM-entry controls load
//!   EFER, PAT and debug controls always (with the host's own values when
//!   vmcs12 does not load them, since the entry starts from root mode),
//!   IA-32e mode guest as vmcs12 asks.
//! * EPT: always ([`HV_PROC2`]), on one of two EPTs ([`Ept02`]):
//!   - vmcs12 without EPT: the host EPT's pointer (vmcs01's), so the guest
//!     can only reach memory the host owns.  PDPTEs of a PAE guest are
//!     then loaded by software from the page at the guest's CR3 (with EPT
//!     the CPU takes them from the VMCS);
//!   - vmcs12 with EPT (where the view offers it): the shadow EPT of
//!     vmcs12's EPT12 (its pointer an input, [`build_vmcs02_on`], from the
//!     shadow EPT set; vmcs12's EPT pointer is never given to the CPU),
//!     unrestricted guest as vmcs12 asks, guest CR3 and the PDPTEs
//!     vmcs12's (guest-physical addresses the shadow EPT translates).
//!
//!   Neither way forces CR3-load/store or INVLPG exiting: vmcs02 always
//!   runs on an EPT, so the hypervisor never needs them; vmcs02 exits on
//!   them exactly when vmcs12 asks (KVM's shadow paging asks, KVM with EPT
//!   does not).
//! * MSR bitmap: the host's bitmap (all ones if vmcs12 uses none) OR the
//!   hypervisor's policy bitmap (vmcs01's): [`merge_msr_bitmap`].
//! * CR0/CR4 guest/host masks: vmcs12's | the hypervisor's (CR4.VMXE); a
//!   bit the hypervisor alone owns reads, in the guest, as vmcs12's guest
//!   CR4 has it (the shadow), and is 1 in the real CR4.
//! * exception bitmap: vmcs12's | #MC.  The page-fault error-code
//!   mask/match are vmcs12's: the hypervisor does not need #PF (the guest
//!   runs on EPT), so every #PF exit is one vmcs12 asked for, with
//!   exactly its PFEC filter.  (Were #PF needed, bit 14 set with a filter
//!   that is not vmcs12's would make exits vmcs12 filtered out arrive, to
//!   be re-injected; `reflect::owner` already applies vmcs12's filter.)
//! * VPID: the guest's own (a parameter, distinct from the host's), only
//!   if vmcs12 enables VPID; without it vmcs02 runs with VPID 0, which
//!   every entry and exit flushes, as the host asked.
//! * TSC offset and multiplier ([`compose_tsc`]): the guest's TSC as two
//!   levels of hardware would give it, the host's TSC (vmcs01's offset
//!   and scaling applied to the CPU's) scaled and offset by vmcs12's.
//!   pkvm runs its host with neither (`host_vmcs`: offset 0, no TSC
//!   offsetting or scaling control), so vmcs02 takes vmcs12's offset and
//!   multiplier exactly; "use TSC scaling" only where vmcs12 has it in
//!   effect (with "use TSC offsetting", SDM Vol. 3C 26.3 RDTSC).
//! * MSR-load/store areas: counts 0 in vmcs02 (emulated in software).
//! * VMCS link pointer: all ones (vmcs12's is checked, never given to the
//!   CPU).  Host state: the hypervisor's, copied from vmcs01's host-state
//!   area; vmcs12's host state never reaches vmcs02.
//! * Guest state: every [`Class::GuestState`] field copied; EFER, PAT,
//!   DEBUGCTL, DR7, IA32_PERF_GLOBAL_CTRL from vmcs12 if it loads them,
//!   from the host's current values (vmcs01's guest state) if not.

use crate::hv::host_policy;
use crate::hv::vmx::caps::VmxCaps;
use crate::hv::vmx::msr_bitmap::MSR_BITMAP_SIZE;
use crate::hv::vmx::vmcs::{self as f, fields::FIELDS, VmcsAccess, VmcsError, NO_LINK};

use super::controls::{entry, exit, pin, proc1, proc2, Allowed};
use super::entry_checks::{
    check_guest_against_offer, check_vmcs12, effective_proc2, ept12, rd, uses_ept12, within_width,
    EntryEnv, EntryFailure, VmFailValid, EFER_LMA, EFER_LME, ERR_CONTROLS,
};
use super::ept12_walk::Eptp12;
use super::field_class::{class_at, Class};

/// Pin-based controls the hypervisor needs in every vmcs02: external
/// interrupts exit (the host, not its guest, owns the devices), NMIs exit
/// with virtual NMIs (the cross-CPU shootdown, as for the host itself).
pub const HV_PIN: u32 = pin::EXT_INTR | pin::NMI | pin::VIRTUAL_NMIS;
/// Primary controls the hypervisor needs: MSR bitmaps (its policy), and
/// secondary controls (EPT).
pub const HV_PROC1: u32 = proc1::MSR_BITMAPS | proc1::SECONDARY;
/// Secondary controls the hypervisor needs: EPT (the host EPT).
pub const HV_PROC2: u32 = proc2::EPT;
/// Exceptions the hypervisor intercepts in every vmcs02: #MC.
pub const HV_EXCEPTIONS: u32 = 1 << 18;

/// CR0.PG.
const CR0_PG: u64 = 1 << 31;
/// CR4.PAE.
const CR4_PAE: u64 = 1 << 5;

/// What a host page named by vmcs12 is used for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageUse {
    /// I/O bitmap A: read by the CPU while the guest runs: pinned.
    IoBitmapA,
    /// I/O bitmap B: pinned.
    IoBitmapB,
    /// The host's MSR bitmap: read by the hypervisor at entry and merged
    /// into a hypervisor page ([`merge_msr_bitmap`]).
    MsrBitmap,
    /// Virtual-APIC page (TPR shadow): used by the CPU: pinned.
    VirtualApic,
    /// APIC-access page: the CPU compares guest accesses with it: pinned.
    ApicAccess,
    /// The page vmcs12's VMCS link pointer names: its first 4 bytes are
    /// read at entry and checked by [`check_link_pointer`].
    LinkPointer,
    /// The 32 bytes at a PAE guest's CR3: read at entry, checked by
    /// [`check_pdptes`], given to [`build_vmcs02`].  Only without EPT12:
    /// with it, CR3 is a guest-physical address and the PDPTEs are
    /// vmcs12's fields.
    Pdptes,
}

impl PageUse {
    /// How the entry fails when the page is not one the host owns (or
    /// cannot be read): VMfailValid(7) for the control addresses (a CPU
    /// would read garbage there; pkvm refuses instead), the guest-state
    /// failures of the SDM for the link pointer (qualification 4) and the
    /// PDPTEs (qualification 2).
    pub const fn refusal(self) -> EntryFailure {
        match self {
            Self::LinkPointer => EntryFailure::Exit {
                reason: 33,
                qualification: 4,
            },
            Self::Pdptes => EntryFailure::Exit {
                reason: 33,
                qualification: 2,
            },
            _ => EntryFailure::VmFail(VmFailValid {
                error: ERR_CONTROLS,
                why: "address is not a page the host owns",
            }),
        }
    }

    /// Whether the CPU uses the page while the guest runs (then it stays
    /// pinned as long as vmcs02 uses it).
    pub const fn pinned(self) -> bool {
        matches!(
            self,
            Self::IoBitmapA | Self::IoBitmapB | Self::VirtualApic | Self::ApicAccess
        )
    }
}

/// A host page an entry uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostPage {
    /// The address as vmcs12 gives it (page-aligned but for the PDPTEs,
    /// which are 32-byte aligned).
    pub pa: u64,
    /// What it is used for.
    pub usage: PageUse,
}

/// An MSR area of vmcs12: `count` 16-byte entries at `pa` (possibly
/// several pages: the caller validates the page of each entry it reads or
/// writes, see `msr_area`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct MsrArea {
    /// Physical address of entry 0.
    pub pa: u64,
    /// Number of entries.
    pub count: u32,
}

/// Number of page slots of an [`EntryPlan`].
pub const PLAN_PAGES: usize = 7;

/// What an entry needs from host memory, once the checks passed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct EntryPlan {
    /// The pages to validate (and read or pin, see [`PageUse`]), in the
    /// order to check them.
    pub pages: [Option<HostPage>; PLAN_PAGES],
    /// VM-entry MSR-load area (software, before entering vmcs02).
    pub entry_msr_load: MsrArea,
    /// VM-exit MSR-store area (software, at a reflected exit).
    pub exit_msr_store: MsrArea,
    /// VM-exit MSR-load area (software, at a reflected exit).
    pub exit_msr_load: MsrArea,
    /// vmcs12's EPT pointer, checked, when vmcs12 enables EPT: the key of
    /// the shadow EPT vmcs02 runs on (the integration finds or creates it
    /// and gives its pointer to [`build_vmcs02_on`]).  Nothing of EPT12 is
    /// read at entry: its table pages are checked as host-owned when the
    /// guest's EPT violations walk them (`ept12_walk`), as the CPU reads
    /// them only then.
    pub ept12: Option<Eptp12>,
}

impl EntryPlan {
    /// The pages, in order.
    pub fn pages(&self) -> impl Iterator<Item = HostPage> + '_ {
        self.pages.iter().flatten().copied()
    }

    /// The page used as `usage`, if any.
    pub fn page(&self, usage: PageUse) -> Option<u64> {
        self.pages().find(|p| p.usage == usage).map(|p| p.pa)
    }
}

impl MsrArea {
    /// One address in each page the first `count` entries occupy (at most
    /// the offer's limit `msr_area::max_entries(offer_misc)`; the entry at
    /// `pa` first): the pages the integration checks at entry for the
    /// VM-exit areas, which are written and read only at the guest's exit.
    /// An area on a page the host does not own fails the entry with
    /// [`exit_area_refusal`] instead of a VMX abort at that exit.
    pub fn pages(self, offer_misc: u64) -> AreaPages {
        let n = self.count.min(super::msr_area::max_entries(offer_misc));
        let last = self
            .pa
            .checked_add(u64::from(n) * 16)
            .map(|end| end.wrapping_sub(1) & !0xfff);
        let first = self.pa & !0xfff;
        let left = match last {
            Some(last) if n != 0 && last >= first => (last - first) / 4096 + 1,
            _ => 0,
        };
        AreaPages {
            next: self.pa,
            left,
        }
    }
}

/// The pages of an [`MsrArea`] ([`MsrArea::pages`]): plain arithmetic,
/// no library iterator (root mode calls no kernel code).
#[derive(Clone, Copy, Debug)]
pub struct AreaPages {
    next: u64,
    left: u64,
}

impl Iterator for AreaPages {
    type Item = u64;

    fn next(&mut self) -> Option<u64> {
        if self.left == 0 {
            return None;
        }
        let pa = self.next;
        self.left -= 1;
        self.next = (pa & !0xfff).wrapping_add(4096);
        Some(pa)
    }
}

/// How an entry fails whose VM-exit MSR-store or MSR-load area is not on
/// pages the host owns: VMfailValid(7), as for the other control
/// addresses ([`PageUse::refusal`]).
pub const fn exit_area_refusal() -> EntryFailure {
    EntryFailure::VmFail(VmFailValid {
        error: ERR_CONTROLS,
        why: "VM-exit MSR area is not on pages the host owns",
    })
}

/// Whether vmcs12's guest uses PAE paging (CR0.PG, CR4.PAE, not IA-32e
/// mode): then its four PDPTEs come from the 32 bytes at CR3 bits 31:5.
pub fn guest_pae(v12: &impl VmcsAccess) -> bool {
    rd(v12, f::GUEST_CR0) & CR0_PG != 0
        && rd(v12, f::GUEST_CR4) & CR4_PAE != 0
        && rd(v12, f::VM_ENTRY_CONTROLS) & entry::IA32E == 0
}

/// Step 1 of an entry: every check of vmcs12 (VMfailValid 7 or 8, before
/// any address is used; then the guest-state checks that depend on the
/// offer, exit 33), then the host pages and MSR areas it uses.  The
/// VMCS link pointer must be all ones or an aligned address within the
/// width (else a guest-state failure, qualification 4).
pub fn plan_entry(
    v12: &impl VmcsAccess,
    offer: &VmxCaps,
    env: &EntryEnv,
) -> Result<EntryPlan, EntryFailure> {
    check_vmcs12(v12, offer, env)?;
    check_guest_against_offer(v12, offer)?;
    let p1 = rd(v12, f::CPU_BASED_VM_EXEC_CONTROL);
    let p2 = effective_proc2(v12);
    let mut plan = EntryPlan::default();
    let mut n = 0;
    let mut add = |pa: u64, usage: PageUse| {
        if let Some(slot) = plan.pages.get_mut(n) {
            *slot = Some(HostPage { pa, usage });
            n += 1;
        }
    };
    if p1 & proc1::IO_BITMAPS != 0 {
        add(rd(v12, f::IO_BITMAP_A), PageUse::IoBitmapA);
        add(rd(v12, f::IO_BITMAP_B), PageUse::IoBitmapB);
    }
    if p1 & proc1::MSR_BITMAPS != 0 {
        add(rd(v12, f::MSR_BITMAP), PageUse::MsrBitmap);
    }
    if p1 & proc1::TPR_SHADOW != 0 {
        add(rd(v12, f::VIRTUAL_APIC_PAGE_ADDR), PageUse::VirtualApic);
    }
    if p2 & proc2::VIRT_APIC_ACCESSES != 0 {
        add(rd(v12, f::APIC_ACCESS_ADDR), PageUse::ApicAccess);
    }
    let link = rd(v12, f::VMCS_LINK_POINTER);
    if link != NO_LINK {
        if link & 0xfff != 0 || !within_width(link, env.maxphyaddr) {
            return Err(PageUse::LinkPointer.refusal());
        }
        add(link, PageUse::LinkPointer);
    }
    if uses_ept12(v12) {
        // Checked by `check_vmcs12` already: a valid pointer.
        plan.ept12 = ept12(v12, offer, env);
    } else if guest_pae(v12) {
        add(rd(v12, f::GUEST_CR3) & 0xffff_ffe0, PageUse::Pdptes);
    }
    plan.entry_msr_load = MsrArea {
        pa: rd(v12, f::VM_ENTRY_MSR_LOAD_ADDR),
        count: rd(v12, f::VM_ENTRY_MSR_LOAD_COUNT),
    };
    plan.exit_msr_store = MsrArea {
        pa: rd(v12, f::VM_EXIT_MSR_STORE_ADDR),
        count: rd(v12, f::VM_EXIT_MSR_STORE_COUNT),
    };
    plan.exit_msr_load = MsrArea {
        pa: rd(v12, f::VM_EXIT_MSR_LOAD_ADDR),
        count: rd(v12, f::VM_EXIT_MSR_LOAD_COUNT),
    };
    Ok(plan)
}

/// The guest-state check of a VMCS link pointer that is not all ones
/// (SDM 27.3.1.5): the revision identifier at the page (its first 4
/// bytes, `header`) must be the offer's, with the shadow-VMCS indicator
/// (bit 31) equal to the "VMCS shadowing" control, which is never offered
/// (so 0).  Failure: exit reason 33, qualification 4.
pub const fn check_link_pointer(header: u32, offer: &VmxCaps) -> Result<(), EntryFailure> {
    if header == offer.vmcs_revision {
        Ok(())
    } else {
        Err(PageUse::LinkPointer.refusal())
    }
}

/// The PDPTE check of a PAE guest (SDM 27.3.1.6, 27.4 "Checking and
/// loading PDPTEs"): a present PDPTE has bits 2:1, 8:5 and those beyond
/// the physical-address width clear.  Failure: exit reason 33,
/// qualification 2.
pub fn check_pdptes(pdptes: &[u64; 4], maxphyaddr: u8) -> Result<(), EntryFailure> {
    for &e in pdptes {
        if e & 1 != 0 && (e & 0x1e6 != 0 || !within_width(e & !0xfff & !(1 << 63), maxphyaddr)) {
            return Err(PageUse::Pdptes.refusal());
        }
    }
    Ok(())
}

/// The MSR bitmap of vmcs02: the host's (`l1`; every MSR intercepted when
/// vmcs12 uses no MSR bitmap) OR the hypervisor's policy (`hv`, vmcs01's
/// bitmap).  An access exits if either wants it to.
pub fn merge_msr_bitmap(
    l1: Option<&[u8; MSR_BITMAP_SIZE]>,
    hv: &[u8; MSR_BITMAP_SIZE],
    out: &mut [u8; MSR_BITMAP_SIZE],
) {
    for (i, o) in out.iter_mut().enumerate() {
        let a = match l1 {
            Some(p) => p.get(i).copied().unwrap_or(0xff),
            None => 0xff,
        };
        *o = a | hv.get(i).copied().unwrap_or(0xff);
    }
}

/// 8-byte words of an MSR bitmap.
pub const MSR_BITMAP_WORDS: usize = MSR_BITMAP_SIZE / 8;

/// The words of the merged MSR bitmap that depend on the host's bitmap:
/// those in which the hypervisor's policy passes at least one MSR
/// through.  In every other word the policy intercepts all 64 MSRs, so
/// the merge (host's OR policy) is all ones whatever the host's bitmap
/// holds: an entry reads only these words of the host's page, every time
/// (the host may change its page at any moment), and the other words of
/// the merged page stay all ones.  Bit `w % 64` of word `w / 64`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostWords(pub [u64; MSR_BITMAP_WORDS / 64]);

impl HostWords {
    /// The words of the policy bitmap `hv` that are not all ones.
    pub fn of(hv: &[u64; MSR_BITMAP_WORDS]) -> Self {
        let mut m = [0u64; MSR_BITMAP_WORDS / 64];
        for (w, v) in hv.iter().enumerate() {
            if *v != u64::MAX {
                if let Some(x) = m.get_mut(w / 64) {
                    *x |= 1 << (w % 64);
                }
            }
        }
        Self(m)
    }

    /// Whether word `w` depends on the host's bitmap.
    pub fn contains(&self, w: usize) -> bool {
        self.0.get(w / 64).is_some_and(|x| x & (1 << (w % 64)) != 0)
    }

    /// How many words depend on the host's bitmap.
    pub fn count(&self) -> usize {
        self.0.iter().map(|x| x.count_ones() as usize).sum()
    }

    /// The words that depend on the host's bitmap, in order (only those
    /// are visited).
    pub fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.0.iter().enumerate().flat_map(|(i, m)| {
            let mut m = *m;
            core::iter::from_fn(move || {
                if m == 0 {
                    return None;
                }
                let b = m.trailing_zeros() as usize;
                m &= m - 1;
                Some(64 * i + b)
            })
        })
    }
}

/// The merged MSR bitmap in place: `out` holds, in the words of `words`,
/// the host's bitmap (ignored when `host_present` is false: vmcs12 uses
/// no MSR bitmap, every MSR exits) and all ones in every other word (the
/// state [`merge_msr_bitmap`]'s result has there too); afterwards `out`
/// is the host's OR the policy `hv`.
pub fn merge_msr_words(
    words: &HostWords,
    host_present: bool,
    hv: &[u64; MSR_BITMAP_WORDS],
    out: &mut [u64; MSR_BITMAP_WORDS],
) {
    for w in words.iter() {
        if let (Some(o), Some(h)) = (out.get_mut(w), hv.get(w)) {
            *o = if host_present { *o | *h } else { u64::MAX };
        }
    }
}

/// What [`build_vmcs02`] needs besides vmcs12 and vmcs01.
#[derive(Clone, Copy, Debug)]
pub struct Vmcs02Params {
    /// The offered capabilities (vmcs12's controls are restricted to them
    /// a second time, whatever the checks said).
    pub offer: VmxCaps,
    /// The CPU's own capabilities (must-be-one bits).
    pub hw: VmxCaps,
    /// Physical address of the hypervisor page holding the merged MSR
    /// bitmap.
    pub msr_bitmap_pa: u64,
    /// The guest's VPID: non-zero and distinct from the host's
    /// (`host_vmcs::HOST_VPID`); used only if vmcs12 enables VPID.
    pub vpid: u16,
    /// The PDPTEs read for a PAE guest ([`PageUse::Pdptes`]; unused with
    /// EPT12, whose PDPTEs are vmcs12's).
    pub pdptes: Option<[u64; 4]>,
}

/// The EPT vmcs02 runs its guest on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ept02 {
    /// The host EPT (vmcs01's EPT pointer): vmcs12 does not enable EPT; its
    /// guest's physical addresses are host-physical ones, confined to what
    /// the host owns.
    HostEpt,
    /// The shadow EPT of vmcs12's EPT12 (`plan.ept12`): the EPT pointer of
    /// its root, as the shadow EPT set gives it (write-back, 4 levels).
    /// Only with vmcs12's "enable EPT".
    Shadow(u64),
}

/// The guest's real CR4 and the CR4 guest/host mask and read shadow of
/// vmcs02 from vmcs12's: `(guest_cr4, mask, shadow)`.
pub fn compose_cr4(v12: &impl VmcsAccess) -> (u64, u64, u64) {
    let hv = host_policy::CR4_GUEST_HOST_MASK;
    let mask12 = rd(v12, f::CR4_GUEST_HOST_MASK);
    let shadow12 = rd(v12, f::CR4_READ_SHADOW);
    let cr4_12 = rd(v12, f::GUEST_CR4);
    let hv_only = hv & !mask12;
    let shadow = (shadow12 & mask12) | (cr4_12 & hv_only);
    (cr4_12 | hv, mask12 | hv, shadow)
}

/// The guest CR4 as vmcs12 must show it, from vmcs02's real CR4 and read
/// shadow and vmcs12's own guest CR4 at entry (`cr4_12`): the bits the
/// hypervisor alone owns come from the shadow (the guest changed them
/// through the hypervisor), the bits it forces but the host owns keep
/// vmcs12's value (the guest cannot change them without an exit to the
/// host), all others come from the real CR4.
pub fn uncompose_cr4(cr4_02: u64, shadow02: u64, mask12: u64, cr4_12: u64) -> u64 {
    let hv = host_policy::CR4_GUEST_HOST_MASK;
    let hv_only = hv & !mask12;
    let both = hv & mask12;
    (cr4_02 & !hv) | (shadow02 & hv_only) | (cr4_12 & both)
}

/// The TSC controls of one VMCS level as they act on RDTSC, RDTSCP and
/// RDMSR(IA32_TSC) (SDM Vol. 3C 26.3): with "use TSC offsetting" the
/// guest reads `((TSC * multiplier) >> 48) + offset` if "use TSC scaling"
/// is also 1, `TSC + offset` otherwise; without offsetting the TSC itself
/// (scaling is then not in effect).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TscControls {
    /// "Use TSC offsetting".
    pub offsetting: bool,
    /// "Use TSC scaling", in effect (only with `offsetting`).
    pub scaling: bool,
    /// TSC_OFFSET (0 without `offsetting`).
    pub offset: u64,
    /// TSC_MULTIPLIER, 16.48 fixed point ([`TSC_MULTIPLIER_ONE`] without
    /// `scaling`).
    pub multiplier: u64,
}

/// The multiplier 1.0 (16.48 fixed point): no scaling.
pub const TSC_MULTIPLIER_ONE: u64 = 1 << 48;

/// `(a * b) >> 48` of two unsigned 64-bit values, truncated to 64 bits.
pub const fn mul_shr48(a: u64, b: u64) -> u64 {
    ((a as u128 * b as u128) >> 48) as u64
}

/// `(a * b) >> 48` of a signed `a` (two's complement) and an unsigned
/// `b`, rounded toward zero; the TSC offset scaled by a multiplier.
pub const fn mul_signed_shr48(a: u64, b: u64) -> u64 {
    if (a as i64) < 0 {
        mul_shr48(a.wrapping_neg(), b).wrapping_neg()
    } else {
        mul_shr48(a, b)
    }
}

impl TscControls {
    /// No offsetting, no scaling: the guest reads the TSC.
    pub const NONE: Self = Self {
        offsetting: false,
        scaling: false,
        offset: 0,
        multiplier: TSC_MULTIPLIER_ONE,
    };

    /// The TSC controls of `v` with primary controls `p1` and effective
    /// secondary controls `p2`.  TSC_MULTIPLIER is read only when scaling
    /// is in effect (a CPU without TSC scaling has no such field).
    pub fn of(v: &impl VmcsAccess, p1: u32, p2: u32) -> Self {
        if p1 & proc1::TSC_OFFSETTING == 0 {
            return Self::NONE;
        }
        let scaling = p2 & proc2::TSC_SCALING != 0;
        Self {
            offsetting: true,
            scaling,
            offset: rd(v, f::TSC_OFFSET),
            multiplier: if scaling {
                rd(v, f::TSC_MULTIPLIER)
            } else {
                TSC_MULTIPLIER_ONE
            },
        }
    }
}

/// The TSC controls of vmcs02 from vmcs01's (`l01`: how the host sees the
/// CPU's TSC) and vmcs12's (`l12`: how the host's guest sees the host's),
/// so that the guest reads what two levels of hardware would give it:
/// `T1 = ((TSC * m01) >> 48) + o01`, `T2 = ((T1 * m12) >> 48) + o12`, as
/// one level `T2 = ((TSC * m02) >> 48) + o02` with `m02 = (m01 * m12) >>
/// 48` and `o02 = ((o01 * m12) >> 48) + o12` (o01 signed; KVM composes
/// its own L2's the same way).
///
/// Exact when vmcs01 does not scale and has offset 0, which is what pkvm
/// runs its host with (`host_vmcs::write_controls_and_host_state`): then
/// vmcs02's offset and multiplier are vmcs12's.  Otherwise one level
/// differs from two by their truncations: two levels truncate T1 (less
/// than a tick, then scaled by m12), one level the scaled offset and the
/// product of the multipliers; at most `2 + (m12 >> 48)` ticks apart
/// (`tests::composed_tsc_reads_as_two_levels_would`).
pub const fn compose_tsc(l01: TscControls, l12: TscControls) -> TscControls {
    if !l12.offsetting {
        // The guest reads the host's TSC (vmcs12's multiplier is not in
        // effect without offsetting).
        return l01;
    }
    if !l12.scaling {
        return TscControls {
            offsetting: true,
            scaling: l01.scaling,
            offset: l01.offset.wrapping_add(l12.offset),
            multiplier: l01.multiplier,
        };
    }
    TscControls {
        offsetting: true,
        scaling: true,
        offset: mul_signed_shr48(l01.offset, l12.multiplier).wrapping_add(l12.offset),
        multiplier: if l01.scaling {
            mul_shr48(l01.multiplier, l12.multiplier)
        } else {
            l12.multiplier
        },
    }
}

/// Step 2 of an entry of a vmcs12 without EPT: [`build_vmcs02_on`] the
/// host EPT.  A vmcs12 that enables EPT fails here
/// (`VmcsError::Unsupported`): its guest never runs on the host EPT.
pub fn build_vmcs02(
    v12: &impl VmcsAccess,
    v01: &impl VmcsAccess,
    p: &Vmcs02Params,
    out: &mut impl VmcsAccess,
) -> Result<(), VmcsError> {
    build_vmcs02_on(v12, v01, p, Ept02::HostEpt, out)
}

/// Step 2 of an entry: writes vmcs02 (any [`VmcsAccess`], e.g. the CPU's
/// current VMCS after VMPTRLD of the hypervisor's vmcs02 page) from
/// vmcs12, vmcs01 (the hypervisor's VMCS of this host CPU: its controls,
/// host state, EPTP, TSC offset, and the host's current state in its
/// guest area), `p` and the EPT the guest runs on (`ept02`).  Hidden
/// fields and vmcs12's host state are never read.  Only after
/// [`plan_entry`] succeeded and the pages were validated.
///
/// `ept02` must match vmcs12: [`Ept02::Shadow`] exactly when vmcs12
/// enables EPT (and the offer allows it); otherwise nothing is written
/// and the result is `VmcsError::Unsupported`, so a guest never runs on
/// an EPT other than the one its host asked for.
pub fn build_vmcs02_on(
    v12: &impl VmcsAccess,
    v01: &impl VmcsAccess,
    p: &Vmcs02Params,
    ept02: Ept02,
    out: &mut impl VmcsAccess,
) -> Result<(), VmcsError> {
    let a = Allowed::of(&p.offer);
    let ept12_asked = effective_proc2(v12) & proc2::EPT != 0;
    let ept12_on = ept12_asked && a.proc2.may_be_one & proc2::EPT != 0;
    let eptp02 = match ept02 {
        Ept02::HostEpt if !ept12_asked => rd(v01, f::EPT_POINTER),
        Ept02::Shadow(eptp) if ept12_on => eptp,
        _ => return Err(VmcsError::Unsupported),
    };
    let pin12 = rd(v12, f::PIN_BASED_VM_EXEC_CONTROL);
    let p1_12 = rd(v12, f::CPU_BASED_VM_EXEC_CONTROL);
    let p2_12 = effective_proc2(v12);
    let exit12 = rd(v12, f::VM_EXIT_CONTROLS);
    let entry12 = rd(v12, f::VM_ENTRY_CONTROLS);
    let p1_01 = rd(v01, f::CPU_BASED_VM_EXEC_CONTROL);
    let exit01 = rd(v01, f::VM_EXIT_CONTROLS);
    let entry01 = rd(v01, f::VM_ENTRY_CONTROLS);

    // Guest state first (the controls below override what they compose).
    for i in 0..FIELDS.len() {
        // The EPT fields (the PDPTEs) are guest state only with EPT12;
        // without, vmcs02's PDPTEs are the software ones (below).
        if class_at(ept12_on, i) == Some(Class::GuestState) {
            out.write_at(i, v12.read_at(i)?)?;
        }
    }

    // Control words.
    let pin02 = (pin12 & a.pin.may_be_one) | HV_PIN | p.hw.pinbased.must_be_one;
    let tsc02 = compose_tsc(
        TscControls::of(v01, p1_01, effective_proc2(v01)),
        TscControls::of(v12, p1_12 & a.proc1.may_be_one, p2_12 & a.proc2.may_be_one),
    );
    let p1_02 = (p1_12 & a.proc1.may_be_one & !proc1::TSC_OFFSETTING)
        | HV_PROC1
        | if tsc02.offsetting {
            proc1::TSC_OFFSETTING
        } else {
            0
        }
        | p.hw.procbased.must_be_one;
    let vpid = p2_12 & proc2::VPID != 0 && p.vpid != 0;
    // Unrestricted guest only on EPT12's shadow (the entry checks refuse
    // it without EPT; restricted again here).
    let ug = if ept12_on {
        p2_12 & a.proc2.may_be_one & proc2::UNRESTRICTED_GUEST
    } else {
        0
    };
    let own = proc2::VPID | proc2::EPT | proc2::UNRESTRICTED_GUEST | proc2::TSC_SCALING;
    let p2_02 = (p2_12 & a.proc2.may_be_one & !own)
        | HV_PROC2
        | ug
        | if vpid { proc2::VPID } else { 0 }
        | if tsc02.scaling { proc2::TSC_SCALING } else { 0 }
        | p.hw.procbased2.must_be_one;
    // vmcs02 exits to root mode: the hypervisor's exit controls.  An
    // external interrupt the host asked to exit on is acknowledged as it
    // asked; one the hypervisor forces to exit (vmcs12 without
    // external-interrupt exiting) is acknowledged, to be re-injected into
    // the guest by vector.
    let ack = if pin12 & pin::EXT_INTR != 0 {
        exit12 & exit::ACK_INTR
    } else {
        exit::ACK_INTR
    };
    let exit02 = (exit01 & !exit::ACK_INTR) | ack;
    let perf_switched = entry01 & entry::LOAD_PERF_GLOBAL != 0;
    let entry02 = (entry01 & !entry::IA32E)
        | (entry12 & entry::IA32E)
        | entry::LOAD_EFER
        | entry::LOAD_PAT
        | entry::LOAD_DEBUG;
    out.write(f::PIN_BASED_VM_EXEC_CONTROL, pin02)?;
    out.write(f::CPU_BASED_VM_EXEC_CONTROL, p1_02)?;
    out.write(f::SECONDARY_VM_EXEC_CONTROL, p2_02)?;
    out.write(f::VM_EXIT_CONTROLS, exit02)?;
    out.write(f::VM_ENTRY_CONTROLS, entry02)?;

    // Guest-state values the entry loads: vmcs12's when it loads them, the
    // host's current ones otherwise (the CPU would have kept them).
    let efer = if entry12 & entry::LOAD_EFER != 0 {
        rd(v12, f::GUEST_IA32_EFER)
    } else {
        let mut e = rd(v01, f::GUEST_IA32_EFER) & !EFER_LMA;
        if entry12 & entry::IA32E != 0 {
            e |= EFER_LMA;
        }
        if rd(v12, f::GUEST_CR0) & CR0_PG != 0 {
            e = (e & !EFER_LME)
                | if entry12 & entry::IA32E != 0 {
                    EFER_LME
                } else {
                    0
                };
        }
        e
    };
    out.write(f::GUEST_IA32_EFER, efer)?;
    let pat = if entry12 & entry::LOAD_PAT != 0 {
        rd(v12, f::GUEST_IA32_PAT)
    } else {
        rd(v01, f::GUEST_IA32_PAT)
    };
    out.write(f::GUEST_IA32_PAT, pat)?;
    let (debugctl, dr7) = if entry12 & entry::LOAD_DEBUG != 0 {
        (rd(v12, f::GUEST_IA32_DEBUGCTL), rd(v12, f::GUEST_DR7))
    } else {
        (rd(v01, f::GUEST_IA32_DEBUGCTL), rd(v01, f::GUEST_DR7))
    };
    out.write(f::GUEST_IA32_DEBUGCTL, debugctl)?;
    out.write(f::GUEST_DR7, dr7)?;
    if perf_switched {
        let perf = if entry12 & entry::LOAD_PERF_GLOBAL != 0 {
            rd(v12, f::GUEST_IA32_PERF_GLOBAL_CTRL)
        } else {
            rd(v01, f::GUEST_IA32_PERF_GLOBAL_CTRL)
        };
        out.write(f::GUEST_IA32_PERF_GLOBAL_CTRL, perf)?;
    }
    let (cr4, cr4_mask, cr4_shadow) = compose_cr4(v12);
    out.write(f::GUEST_CR4, cr4)?;
    out.write(f::CR4_GUEST_HOST_MASK, cr4_mask)?;
    out.write(f::CR4_READ_SHADOW, cr4_shadow)?;
    out.write(
        f::CR0_GUEST_HOST_MASK,
        rd(v12, f::CR0_GUEST_HOST_MASK) | host_policy::CR0_GUEST_HOST_MASK,
    )?;
    out.write(f::CR0_READ_SHADOW, rd(v12, f::CR0_READ_SHADOW))?;
    out.write(f::VMCS_LINK_POINTER, NO_LINK)?;
    let pdptes = if ept12_on {
        // EPT12: the CPU loads a PAE guest's PDPTEs from vmcs02 and checks
        // them there; vmcs12's are guest-physical addresses.
        Some([
            rd(v12, f::GUEST_PDPTE0),
            rd(v12, f::GUEST_PDPTE1),
            rd(v12, f::GUEST_PDPTE2),
            rd(v12, f::GUEST_PDPTE3),
        ])
    } else {
        p.pdptes
    };
    if let Some(pd) = pdptes {
        out.write(f::GUEST_PDPTE0, pd[0])?;
        out.write(f::GUEST_PDPTE1, pd[1])?;
        out.write(f::GUEST_PDPTE2, pd[2])?;
        out.write(f::GUEST_PDPTE3, pd[3])?;
    }

    // The other controls.
    out.write(
        f::EXCEPTION_BITMAP,
        rd(v12, f::EXCEPTION_BITMAP) | HV_EXCEPTIONS,
    )?;
    out.write(
        f::PAGE_FAULT_ERROR_CODE_MASK,
        rd(v12, f::PAGE_FAULT_ERROR_CODE_MASK),
    )?;
    out.write(
        f::PAGE_FAULT_ERROR_CODE_MATCH,
        rd(v12, f::PAGE_FAULT_ERROR_CODE_MATCH),
    )?;
    out.write(f::CR3_TARGET_COUNT, rd(v12, f::CR3_TARGET_COUNT))?;
    // By reference (root mode: no out-of-line array iterator).
    for &t in [
        f::CR3_TARGET_VALUE0,
        f::CR3_TARGET_VALUE1,
        f::CR3_TARGET_VALUE2,
        f::CR3_TARGET_VALUE3,
    ]
    .iter()
    {
        out.write(t, rd(v12, t))?;
    }
    out.write(f::TSC_OFFSET, tsc02.offset)?;
    if tsc02.scaling {
        // Only then: a CPU without TSC scaling has no such field.
        out.write(f::TSC_MULTIPLIER, tsc02.multiplier)?;
    }
    if p1_02 & proc1::IO_BITMAPS != 0 {
        out.write(f::IO_BITMAP_A, rd(v12, f::IO_BITMAP_A))?;
        out.write(f::IO_BITMAP_B, rd(v12, f::IO_BITMAP_B))?;
    }
    out.write(f::MSR_BITMAP, p.msr_bitmap_pa)?;
    if p1_02 & proc1::TPR_SHADOW != 0 {
        out.write(
            f::VIRTUAL_APIC_PAGE_ADDR,
            rd(v12, f::VIRTUAL_APIC_PAGE_ADDR),
        )?;
        out.write(f::TPR_THRESHOLD, rd(v12, f::TPR_THRESHOLD))?;
    }
    if p2_02 & proc2::VIRT_APIC_ACCESSES != 0 {
        out.write(f::APIC_ACCESS_ADDR, rd(v12, f::APIC_ACCESS_ADDR))?;
    }
    if p2_02 & proc2::PLE != 0 {
        out.write(f::PLE_GAP, rd(v12, f::PLE_GAP))?;
        out.write(f::PLE_WINDOW, rd(v12, f::PLE_WINDOW))?;
    }
    if p2_02 & proc2::XSAVES != 0 {
        out.write(
            f::XSS_EXIT_BITMAP,
            rd(v12, f::XSS_EXIT_BITMAP) | host_policy::XSS_EXIT_BITMAP,
        )?;
    }
    if vpid {
        out.write(f::VIRTUAL_PROCESSOR_ID, p.vpid)?;
    }
    out.write(f::EPT_POINTER, eptp02)?;
    out.write(f::VM_ENTRY_INTR_INFO, rd(v12, f::VM_ENTRY_INTR_INFO))?;
    out.write(
        f::VM_ENTRY_EXCEPTION_ERROR_CODE,
        rd(v12, f::VM_ENTRY_EXCEPTION_ERROR_CODE),
    )?;
    out.write(
        f::VM_ENTRY_INSTRUCTION_LEN,
        rd(v12, f::VM_ENTRY_INSTRUCTION_LEN),
    )?;
    out.write(f::VM_ENTRY_MSR_LOAD_COUNT, 0)?;
    out.write(f::VM_EXIT_MSR_STORE_COUNT, 0)?;
    out.write(f::VM_EXIT_MSR_LOAD_COUNT, 0)?;

    // Host state: the hypervisor's.
    for i in 0..FIELDS.len() {
        if class_at(ept12_on, i) == Some(Class::HostState) {
            out.write_at(i, v01.read_at(i)?)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::controls::*;
    use super::super::field_class::class_of;
    use super::super::testutil::*;
    use super::*;
    use crate::hv::vmx::host_vmcs::HOST_VPID;
    use crate::hv::vmx::vmcs::MemVmcs;

    const GUEST_VPID: u16 = 7;

    fn params() -> Vmcs02Params {
        Vmcs02Params {
            offer: offer(),
            hw: hw(),
            msr_bitmap_pa: 0x7_7750_0000,
            vpid: GUEST_VPID,
            pdptes: None,
        }
    }

    fn build(v12: &MemVmcs) -> MemVmcs {
        let mut out = MemVmcs::new();
        build_vmcs02(v12, &vmcs01(), &params(), &mut out).unwrap();
        out
    }

    /// The shadow EPT's pointer the tests give vmcs02 (a hypervisor
    /// address: it must never reach vmcs12).
    const EPTP02: u64 = 0x7_7790_0000 | 3 << 3 | 6;

    fn params_ept() -> Vmcs02Params {
        Vmcs02Params {
            offer: offer_ept(),
            ..params()
        }
    }

    fn build_ept(v12: &MemVmcs) -> MemVmcs {
        let mut out = MemVmcs::new();
        build_vmcs02_on(
            v12,
            &vmcs01(),
            &params_ept(),
            Ept02::Shadow(EPTP02),
            &mut out,
        )
        .unwrap();
        out
    }

    /// The plan of a vmcs12 with EPT: the checked EPT pointer (the
    /// shadow's key), and no PDPTE read at CR3 for a PAE guest (CR3 is a
    /// guest-physical address); the other pages as without EPT.
    #[test]
    fn plan_with_ept12() {
        let (o, e) = (offer_ept(), env());
        let mut v = vmcs12_ept();
        let plan = plan_entry(&v, &o, &e).unwrap();
        assert_eq!(
            plan.ept12,
            crate::hv::vmx::nested::ept12_walk::check_eptp(EPTP12, o.ept_vpid_cap, 40).ok()
        );
        assert_eq!(plan.ept12.map(|p| p.raw), Some(EPTP12));
        let without = plan_entry(&vmcs12(), &o, &e).unwrap();
        assert_eq!(without.ept12, None);
        assert_eq!(plan.pages, without.pages);
        // A PAE guest (32-bit, paging, PAE).
        v.write(
            f::VM_ENTRY_CONTROLS,
            rd(&v, f::VM_ENTRY_CONTROLS) & !entry::IA32E,
        )
        .unwrap();
        v.write(f::GUEST_IA32_EFER, 0).unwrap();
        v.write(f::GUEST_CR3, 0x1234_5fe0).unwrap();
        assert!(guest_pae(&v));
        let plan = plan_entry(&v, &o, &e).unwrap();
        assert_eq!(plan.page(PageUse::Pdptes), None);
        // The same guest without EPT: read at CR3.
        let p2 = rd(&v, f::SECONDARY_VM_EXEC_CONTROL) & !(proc2::EPT | proc2::UNRESTRICTED_GUEST);
        v.write(f::SECONDARY_VM_EXEC_CONTROL, p2).unwrap();
        let plan = plan_entry(&v, &o, &e).unwrap();
        assert_eq!(plan.page(PageUse::Pdptes), Some(0x1234_5fe0));
        assert_eq!(plan.ept12, None);
        // An invalid EPT pointer never makes a plan.
        let mut v = vmcs12_ept();
        v.write(f::EPT_POINTER, EPTP12 | 1 << 6).unwrap();
        assert!(matches!(plan_entry(&v, &o, &e), Err(EntryFailure::VmFail(f)) if f.error == 7));
    }

    /// vmcs02 with EPT12: EPT on the shadow's pointer (never vmcs12's or
    /// the host EPT's), unrestricted guest, CR3 exits and INVLPG exits
    /// exactly as vmcs12 asks, guest CR3 and the PDPTEs vmcs12's.
    #[test]
    fn vmcs02_with_ept12() {
        let v01 = vmcs01();
        for ug in [false, true] {
            for cr3_exits in [false, true] {
                let mut v = vmcs12_ept();
                let p2 = rd(&v, f::SECONDARY_VM_EXEC_CONTROL) & !proc2::UNRESTRICTED_GUEST;
                v.write(
                    f::SECONDARY_VM_EXEC_CONTROL,
                    p2 | if ug { proc2::UNRESTRICTED_GUEST } else { 0 },
                )
                .unwrap();
                let exits = proc1::CR3_LOAD | proc1::CR3_STORE | proc1::INVLPG;
                let p1 = rd(&v, f::CPU_BASED_VM_EXEC_CONTROL) & !exits;
                v.write(
                    f::CPU_BASED_VM_EXEC_CONTROL,
                    p1 | if cr3_exits { exits } else { 0 },
                )
                .unwrap();
                let pd = [0x1000_0001, 0x2000_0001, 0, 0x3000_0001];
                for (fld, x) in [
                    f::GUEST_PDPTE0,
                    f::GUEST_PDPTE1,
                    f::GUEST_PDPTE2,
                    f::GUEST_PDPTE3,
                ]
                .into_iter()
                .zip(pd)
                {
                    v.write(fld, x).unwrap();
                }
                let out = build_ept(&v);
                let p2o = rd(&out, f::SECONDARY_VM_EXEC_CONTROL);
                assert_ne!(p2o & proc2::EPT, 0);
                assert_eq!(p2o & proc2::UNRESTRICTED_GUEST != 0, ug);
                let p1o = rd(&out, f::CPU_BASED_VM_EXEC_CONTROL);
                assert_eq!(p1o & exits, if cr3_exits { exits } else { 0 });
                assert_eq!(rd(&out, f::EPT_POINTER), EPTP02);
                assert_ne!(rd(&out, f::EPT_POINTER), rd(&v01, f::EPT_POINTER));
                assert_eq!(rd(&out, f::GUEST_CR3), rd(&v, f::GUEST_CR3));
                assert_eq!(rd(&out, f::GUEST_PDPTE0), pd[0]);
                assert_eq!(rd(&out, f::GUEST_PDPTE3), pd[3]);
                // The software PDPTEs of the parameters are not used.
                let mut p = params_ept();
                p.pdptes = Some([0xdead; 4]);
                let mut o2 = MemVmcs::new();
                build_vmcs02_on(&v, &v01, &p, Ept02::Shadow(EPTP02), &mut o2).unwrap();
                assert_eq!(rd(&o2, f::GUEST_PDPTE1), pd[1]);
            }
        }
    }

    /// Offering EPT changes nothing for a vmcs12 without EPT: vmcs02 is
    /// the same field for field as with the view without EPT (host EPT,
    /// software PDPTEs, no unrestricted guest even if vmcs12 sets it
    /// without EPT, bypassing the checks).
    #[test]
    fn offering_ept_changes_nothing_without_ept12() {
        let v = vmcs12();
        let a = build(&v);
        let mut b = MemVmcs::new();
        build_vmcs02_on(&v, &vmcs01(), &params_ept(), Ept02::HostEpt, &mut b).unwrap();
        for info in FIELDS {
            assert_eq!(
                a.read_raw(info.encoding),
                b.read_raw(info.encoding),
                "{}",
                info.name
            );
            assert_eq!(
                a.was_written(info.encoding),
                b.was_written(info.encoding),
                "{}",
                info.name
            );
        }
        assert_eq!(rd(&b, f::EPT_POINTER), rd(&vmcs01(), f::EPT_POINTER));
        let mut v = vmcs12();
        let p2 = rd(&v, f::SECONDARY_VM_EXEC_CONTROL) | proc2::UNRESTRICTED_GUEST;
        v.write(f::SECONDARY_VM_EXEC_CONTROL, p2).unwrap();
        let mut b = MemVmcs::new();
        build_vmcs02_on(&v, &vmcs01(), &params_ept(), Ept02::HostEpt, &mut b).unwrap();
        assert_eq!(
            rd(&b, f::SECONDARY_VM_EXEC_CONTROL) & proc2::UNRESTRICTED_GUEST,
            0
        );
    }

    /// The EPT given must match vmcs12: EPT12 never runs on the host EPT,
    /// a guest without EPT never on a shadow, and EPT12 the offer hides
    /// never at all; nothing is written then.
    #[test]
    fn ept02_must_match_vmcs12() {
        let cases = [
            (vmcs12_ept(), params_ept(), Ept02::HostEpt),
            (vmcs12(), params_ept(), Ept02::Shadow(EPTP02)),
            (vmcs12_ept(), params(), Ept02::Shadow(EPTP02)),
            (vmcs12_ept(), params(), Ept02::HostEpt),
        ];
        for (i, (v, p, e)) in cases.into_iter().enumerate() {
            let mut out = MemVmcs::new();
            assert_eq!(
                build_vmcs02_on(&v, &vmcs01(), &p, e, &mut out),
                Err(VmcsError::Unsupported),
                "{i}"
            );
            assert_eq!(out.written().count(), 0, "{i}");
        }
        let mut out = MemVmcs::new();
        assert_eq!(
            build_vmcs02(&vmcs12_ept(), &vmcs01(), &params_ept(), &mut out),
            Err(VmcsError::Unsupported)
        );
    }

    #[test]
    fn exit_msr_area_pages_cover_every_entry() {
        let a = |pa: u64, count: u32| MsrArea { pa, count }.pages(0).collect::<std::vec::Vec<_>>();
        assert!(a(0x5000, 0).is_empty());
        assert_eq!(a(0x5000, 1), [0x5000]);
        assert_eq!(a(0x5ff0, 1), [0x5ff0]);
        assert_eq!(a(0x5ff0, 2), [0x5ff0, 0x6000]);
        assert_eq!(a(0x5000, 256), [0x5000]);
        assert_eq!(a(0x5000, 257), [0x5000, 0x6000]);
        // Capped at the offer's limit (512 with VMX_MISC[27:25] = 0).
        assert_eq!(a(0x5000, 100_000), [0x5000, 0x6000]);
        // An area that would wrap around the address space: nothing to
        // read (the entry checks refuse it before, by the width).
        assert!(a(u64::MAX - 15, 2).is_empty());
        assert_eq!(
            exit_area_refusal(),
            EntryFailure::VmFail(VmFailValid {
                error: 7,
                why: "VM-exit MSR area is not on pages the host owns"
            })
        );
    }

    #[test]
    fn plan_of_the_kvm_like_vmcs12() {
        let v = vmcs12();
        let plan = plan_entry(&v, &offer(), &env()).unwrap();
        let pages: std::vec::Vec<_> = plan.pages().collect();
        assert_eq!(
            pages,
            [
                HostPage {
                    pa: 0x10_0000,
                    usage: PageUse::IoBitmapA
                },
                HostPage {
                    pa: 0x10_1000,
                    usage: PageUse::IoBitmapB
                },
                HostPage {
                    pa: 0x10_2000,
                    usage: PageUse::MsrBitmap
                },
                HostPage {
                    pa: 0x10_4000,
                    usage: PageUse::VirtualApic
                },
                HostPage {
                    pa: 0x10_3000,
                    usage: PageUse::ApicAccess
                },
            ]
        );
        assert!(pages
            .iter()
            .all(|p| p.usage.pinned() != (p.usage == PageUse::MsrBitmap)));
        assert_eq!(plan.page(PageUse::MsrBitmap), Some(0x10_2000));
        assert_eq!(plan.entry_msr_load.count, 0);
        // Unused features name no page.
        let mut v = vmcs12();
        let p1 = rd(&v, f::CPU_BASED_VM_EXEC_CONTROL)
            & !(proc1::IO_BITMAPS | proc1::MSR_BITMAPS | proc1::TPR_SHADOW | proc1::SECONDARY);
        v.write(f::CPU_BASED_VM_EXEC_CONTROL, p1).unwrap();
        let plan = plan_entry(&v, &offer(), &env()).unwrap();
        assert_eq!(plan.pages().count(), 0);
    }

    /// A hidden control set anyway fails the entry with VMfailValid(7)
    /// before any address is used: the plan is never produced.
    #[test]
    fn hidden_controls_fail_before_any_address_is_used() {
        for (fld, bit) in [
            (f::SECONDARY_VM_EXEC_CONTROL, proc2::PML),
            (f::SECONDARY_VM_EXEC_CONTROL, proc2::EPT_VE),
            (f::SECONDARY_VM_EXEC_CONTROL, proc2::SHADOW_VMCS),
            (f::SECONDARY_VM_EXEC_CONTROL, proc2::VMFUNC),
            (f::SECONDARY_VM_EXEC_CONTROL, proc2::EPT),
            (f::PIN_BASED_VM_EXEC_CONTROL, pin::POSTED_INTR),
            (f::PIN_BASED_VM_EXEC_CONTROL, pin::PREEMPTION_TIMER),
        ] {
            let mut v = vmcs12();
            v.write(fld, rd(&v, fld) | bit).unwrap();
            // The addresses of those features point at hypervisor memory.
            for e in super::super::field_class::HIDDEN_FIELDS {
                let _ = v.write_raw(*e, 0x7_7700_0000);
            }
            match plan_entry(&v, &offer(), &env()) {
                Err(EntryFailure::VmFail(e)) => assert_eq!(e.error, 7),
                r => panic!("{fld:?} {bit:#x}: {r:?}"),
            }
        }
    }

    #[test]
    fn guest_state_the_offer_does_not_allow_fails_as_exit_33() {
        let mut v = vmcs12();
        v.write(f::GUEST_ACTIVITY_STATE, 5).unwrap();
        assert_eq!(
            plan_entry(&v, &offer(), &env()),
            Err(EntryFailure::Exit {
                reason: 33,
                qualification: 0
            })
        );
        // Control failures come first.
        v.write(f::VIRTUAL_PROCESSOR_ID, 0).unwrap();
        assert!(
            matches!(plan_entry(&v, &offer(), &env()), Err(EntryFailure::VmFail(e)) if e.error == 7)
        );
    }

    #[test]
    fn link_pointer_and_pdptes() {
        let mut v = vmcs12();
        v.write(f::VMCS_LINK_POINTER, 0x20_0000).unwrap();
        let plan = plan_entry(&v, &offer(), &env()).unwrap();
        assert_eq!(plan.page(PageUse::LinkPointer), Some(0x20_0000));
        assert_eq!(check_link_pointer(offer().vmcs_revision, &offer()), Ok(()));
        let bad = EntryFailure::Exit {
            reason: 33,
            qualification: 4,
        };
        assert_eq!(
            check_link_pointer(offer().vmcs_revision | 1 << 31, &offer()),
            Err(bad)
        );
        assert_eq!(check_link_pointer(0, &offer()), Err(bad));
        for link in [0x20_0008, 1 << 45] {
            v.write(f::VMCS_LINK_POINTER, link).unwrap();
            assert_eq!(plan_entry(&v, &offer(), &env()), Err(bad));
        }
        // A PAE guest: the PDPTEs come from CR3, 32-byte aligned.
        let mut v = vmcs12();
        v.write(
            f::VM_ENTRY_CONTROLS,
            rd(&v, f::VM_ENTRY_CONTROLS) & !entry::IA32E,
        )
        .unwrap();
        v.write(f::GUEST_IA32_EFER, 0).unwrap();
        v.write(f::GUEST_CR3, 0x1234_5fe0).unwrap();
        let plan = plan_entry(&v, &offer(), &env()).unwrap();
        assert_eq!(plan.page(PageUse::Pdptes), Some(0x1234_5fe0));
        assert!(!PageUse::Pdptes.pinned());
        let ok = [0x1000_0001, 0, 0x2000_0001 | 1 << 63, 0x3000_0000 | 0x1e6];
        assert_eq!(check_pdptes(&ok, 40), Ok(()));
        let q2 = Err(EntryFailure::Exit {
            reason: 33,
            qualification: 2,
        });
        for bad in [0x1000_0003u64, 0x1000_0021, 1 << 40 | 1, 0x101] {
            assert_eq!(check_pdptes(&[0, bad, 0, 0], 40), q2, "{bad:#x}");
        }
        let mut p = params();
        p.pdptes = Some(ok);
        let mut out = MemVmcs::new();
        build_vmcs02(&v, &vmcs01(), &p, &mut out).unwrap();
        assert_eq!(out.read(f::GUEST_PDPTE2), Ok(ok[2]));
        assert_eq!(
            PageUse::IoBitmapA.refusal(),
            EntryFailure::VmFail(VmFailValid {
                error: 7,
                why: "address is not a page the host owns"
            })
        );
    }

    /// A vmcs12 with TSC offsetting, and TSC scaling as `scaling` says,
    /// offset `o12` and multiplier `m12`.
    fn vmcs12_tsc(offsetting: bool, scaling: bool, o12: u64, m12: u64) -> MemVmcs {
        let mut v = vmcs12();
        let p1 = rd(&v, f::CPU_BASED_VM_EXEC_CONTROL) & !proc1::TSC_OFFSETTING;
        let p2 = rd(&v, f::SECONDARY_VM_EXEC_CONTROL) & !proc2::TSC_SCALING;
        v.write(
            f::CPU_BASED_VM_EXEC_CONTROL,
            p1 | if offsetting { proc1::TSC_OFFSETTING } else { 0 },
        )
        .unwrap();
        v.write(
            f::SECONDARY_VM_EXEC_CONTROL,
            p2 | if scaling { proc2::TSC_SCALING } else { 0 },
        )
        .unwrap();
        v.write(f::TSC_OFFSET, o12).unwrap();
        v.write(f::TSC_MULTIPLIER, m12).unwrap();
        v
    }

    /// What RDTSC returns under one level's TSC controls when the TSC
    /// (as that level's root sees it) is `tsc` (SDM Vol. 3C 26.3).
    fn rdtsc_under(c: TscControls, tsc: u64) -> u64 {
        match (c.offsetting, c.scaling) {
            (false, _) => tsc,
            (true, false) => tsc.wrapping_add(c.offset),
            (true, true) => mul_shr48(tsc, c.multiplier).wrapping_add(c.offset),
        }
    }

    /// pkvm's vmcs01 neither offsets nor scales the host's TSC, so vmcs02
    /// carries vmcs12's TSC offset and multiplier exactly, with "use TSC
    /// scaling" exactly when vmcs12 has it in effect (with offsetting);
    /// the multiplier is written only then (a CPU without the control has
    /// no such field), and never where the offer hides the control.
    #[test]
    fn tsc_scaling_is_carried_only_when_vmcs12_enables_it() {
        let v01 = vmcs01();
        assert_eq!(
            TscControls::of(
                &v01,
                rd(&v01, f::CPU_BASED_VM_EXEC_CONTROL),
                effective_proc2(&v01)
            ),
            TscControls::NONE
        );
        const M: u64 = 0x0001_8000_0000_0000; // 1.5
        const O: u64 = 0xffff_ff00_0000_1234;
        for offsetting in [false, true] {
            for scaling in [false, true] {
                let out = build(&vmcs12_tsc(offsetting, scaling, O, M));
                let p1 = rd(&out, f::CPU_BASED_VM_EXEC_CONTROL);
                let p2 = rd(&out, f::SECONDARY_VM_EXEC_CONTROL);
                let on = offsetting && scaling;
                assert_eq!(p1 & proc1::TSC_OFFSETTING != 0, offsetting);
                assert_eq!(p2 & proc2::TSC_SCALING != 0, on, "{offsetting} {scaling}");
                assert_eq!(out.was_written(f::TSC_MULTIPLIER.encoding()), on);
                if on {
                    assert_eq!(rd(&out, f::TSC_MULTIPLIER), M);
                }
                assert_eq!(rd(&out, f::TSC_OFFSET), if offsetting { O } else { 0 });
            }
        }
        // The offer without TSC scaling (a CPU without it): never carried,
        // and the entry checks fail such a vmcs12 before any merge
        // (`entry_checks::tests::tsc_scaling_needs_the_offer`).
        let mut p = params();
        p.offer.procbased2.may_be_one &= !proc2::TSC_SCALING;
        let mut out = MemVmcs::new();
        build_vmcs02(&vmcs12_tsc(true, true, O, M), &v01, &p, &mut out).unwrap();
        assert_eq!(
            rd(&out, f::SECONDARY_VM_EXEC_CONTROL) & proc2::TSC_SCALING,
            0
        );
        assert!(!out.was_written(f::TSC_MULTIPLIER.encoding()));
        assert_eq!(rd(&out, f::TSC_OFFSET), O);
    }

    /// vmcs02's TSC controls give the guest what two levels of hardware
    /// would: exactly with pkvm's vmcs01 (no offset, no scaling); within
    /// the truncation of the composed offset and multiplier otherwise.
    #[test]
    fn composed_tsc_reads_as_two_levels_would() {
        let one = TSC_MULTIPLIER_ONE;
        let mults = [0, 1, one / 3, one, one + one / 2, 3 * one, 1000 * one + 7];
        let offsets = [
            0u64,
            1,
            0x1_0000_0000,
            0u64.wrapping_sub(5_000_000),
            1 << 62,
        ];
        let tscs = [0u64, 1, 999_983, 0x12_3456_789a, 1 << 47];
        let levels = |o: u64, m: Option<u64>| TscControls {
            offsetting: true,
            scaling: m.is_some(),
            offset: o,
            multiplier: m.unwrap_or(one),
        };
        extern crate std;
        let mut l12s = std::vec![TscControls::NONE];
        for &o in &offsets {
            l12s.push(levels(o, None));
            for &m in &mults {
                l12s.push(levels(o, Some(m)));
            }
        }
        // pkvm's vmcs01: exact.
        for &l12 in &l12s {
            let l02 = compose_tsc(TscControls::NONE, l12);
            assert_eq!(l02, l12);
            for &t in &tscs {
                assert_eq!(rdtsc_under(l02, t), rdtsc_under(l12, t));
            }
        }
        // A vmcs01 that offsets and scales: within the truncations.
        for &o01 in &offsets {
            for m01 in [None, Some(one / 3), Some(2 * one)] {
                let l01 = levels(o01, m01);
                for &l12 in &l12s {
                    let l02 = compose_tsc(l01, l12);
                    for &t in &tscs {
                        // A TSC does not wrap: the host's TSC (o01 is
                        // signed) is a value in 0..2^64.
                        let t1 = i128::from(rdtsc_under(l01, t).wrapping_sub(l01.offset))
                            + i128::from(l01.offset as i64);
                        if u64::try_from(t1).is_err() {
                            continue;
                        }
                        let two = rdtsc_under(l12, rdtsc_under(l01, t));
                        let one_level = rdtsc_under(l02, t);
                        let diff = two.wrapping_sub(one_level) as i64;
                        // Two levels truncate T1 (less than a tick,
                        // scaled by m12); one level truncates the scaled
                        // offset and the product of the multipliers.
                        let slack = 2 + (l12.multiplier >> 48);
                        assert!(
                            diff.unsigned_abs() <= slack,
                            "{l01:?} {l12:?} t={t:#x}: {two:#x} vs {one_level:#x}"
                        );
                    }
                }
            }
        }
        // Negative offsets scale toward zero, as the positive ones.
        assert_eq!(
            mul_signed_shr48(0u64.wrapping_sub(3 << 48), one / 2),
            0u64.wrapping_sub(1 << 48) - (1 << 47)
        );
        assert_eq!(mul_signed_shr48(3 << 48, one / 2), 3 << 47);
    }

    /// Every offered, mergeable bit of every control word reaches vmcs02
    /// as vmcs12 sets it; nothing else of vmcs12's words does.
    #[test]
    fn every_allow_listed_bit_and_nothing_else() {
        let a = Allowed::of(&offer());
        let hwc = hw();
        let words: [(f::Field<u32>, u32, u32, u32); 3] = [
            (
                f::PIN_BASED_VM_EXEC_CONTROL,
                a.pin.may_be_one,
                HV_PIN | hwc.pinbased.must_be_one,
                0,
            ),
            (
                f::CPU_BASED_VM_EXEC_CONTROL,
                a.proc1.may_be_one,
                HV_PROC1 | hwc.procbased.must_be_one,
                0,
            ),
            (
                f::SECONDARY_VM_EXEC_CONTROL,
                a.proc2.may_be_one & !proc2::VPID,
                HV_PROC2,
                0,
            ),
        ];
        for (fld, allowed, hv, _) in words {
            for bit in 0..32 {
                let b = 1u32 << bit;
                if fld == f::SECONDARY_VM_EXEC_CONTROL && b == proc2::VPID {
                    continue; // Below: the guest's own VPID.
                }
                for on in [false, true] {
                    let mut v = vmcs12();
                    let base = rd(&v, fld) & !b;
                    // Bypass the checks: vmcs12 with the bit forced.
                    v.write(fld, if on { base | b } else { base }).unwrap();
                    if on && fld == f::SECONDARY_VM_EXEC_CONTROL && b == proc2::EPT {
                        // EPT12 never runs on the host EPT (and here the
                        // offer hides EPT): no vmcs02 at all.
                        let mut out = MemVmcs::new();
                        let r = build_vmcs02(&v, &vmcs01(), &params(), &mut out);
                        assert_eq!(r, Err(VmcsError::Unsupported));
                        continue;
                    }
                    let out = build(&v);
                    let got = rd(&out, fld) & b != 0;
                    let want = if hv & b != 0 {
                        true
                    } else if allowed & b != 0 {
                        on
                    } else {
                        false
                    };
                    assert_eq!(got, want, "{fld:?} bit {bit} on={on}");
                }
            }
        }
        // VPID: the guest's, only when vmcs12 enables VPID.
        let out = build(&vmcs12());
        assert_eq!(out.read(f::VIRTUAL_PROCESSOR_ID), Ok(GUEST_VPID));
        assert_ne!(GUEST_VPID, HOST_VPID);
        let mut v = vmcs12();
        v.write(
            f::SECONDARY_VM_EXEC_CONTROL,
            rd(&v, f::SECONDARY_VM_EXEC_CONTROL) & !proc2::VPID,
        )
        .unwrap();
        let out = build(&v);
        assert_eq!(rd(&out, f::SECONDARY_VM_EXEC_CONTROL) & proc2::VPID, 0);
        assert!(!out.was_written(f::VIRTUAL_PROCESSOR_ID.encoding()));
    }

    #[test]
    fn exit_and_entry_controls_are_the_hypervisors_with_the_hosts_choices() {
        let v01 = vmcs01();
        let exit01 = rd(&v01, f::VM_EXIT_CONTROLS);
        let entry01 = rd(&v01, f::VM_ENTRY_CONTROLS);
        for exit12 in [0, exit::ACK_INTR, MERGEABLE_EXIT] {
            for ext in [false, true] {
                let mut v = vmcs12();
                let pinv = rd(&v, f::PIN_BASED_VM_EXEC_CONTROL) & !pin::EXT_INTR;
                v.write(
                    f::PIN_BASED_VM_EXEC_CONTROL,
                    pinv | if ext { pin::EXT_INTR } else { 0 },
                )
                .unwrap();
                v.write(f::VM_EXIT_CONTROLS, exit12).unwrap();
                let out = build(&v);
                let want_ack = if ext {
                    exit12 & exit::ACK_INTR
                } else {
                    exit::ACK_INTR
                };
                assert_eq!(
                    rd(&out, f::VM_EXIT_CONTROLS),
                    (exit01 & !exit::ACK_INTR) | want_ack
                );
            }
        }
        for ia32e in [false, true] {
            let mut v = vmcs12();
            let e = rd(&v, f::VM_ENTRY_CONTROLS) & !entry::IA32E;
            v.write(
                f::VM_ENTRY_CONTROLS,
                e | if ia32e { entry::IA32E } else { 0 },
            )
            .unwrap();
            let out = build(&v);
            let got = rd(&out, f::VM_ENTRY_CONTROLS);
            assert_eq!(got & entry::IA32E != 0, ia32e);
            assert_eq!(
                got & !entry::IA32E,
                (entry01 & !entry::IA32E) | entry::LOAD_EFER | entry::LOAD_PAT | entry::LOAD_DEBUG
            );
        }
    }

    #[test]
    fn state_not_loaded_by_vmcs12_is_the_hosts_current_state() {
        let v01 = vmcs01();
        let mut v = vmcs12();
        let e = rd(&v, f::VM_ENTRY_CONTROLS)
            & !(entry::LOAD_EFER | entry::LOAD_PAT | entry::LOAD_DEBUG);
        v.write(f::VM_ENTRY_CONTROLS, e).unwrap();
        v.write(f::GUEST_IA32_EFER, 0xdead).unwrap();
        v.write(f::GUEST_IA32_PAT, 0xdead).unwrap();
        v.write(f::GUEST_DR7, 0xdead).unwrap();
        let out = build(&v);
        assert_eq!(rd(&out, f::GUEST_IA32_EFER), rd(&v01, f::GUEST_IA32_EFER));
        assert_eq!(rd(&out, f::GUEST_IA32_PAT), rd(&v01, f::GUEST_IA32_PAT));
        assert_eq!(rd(&out, f::GUEST_DR7), rd(&v01, f::GUEST_DR7));
        assert_eq!(
            rd(&out, f::GUEST_IA32_DEBUGCTL),
            rd(&v01, f::GUEST_IA32_DEBUGCTL)
        );
        // IA-32e mode guest off without EFER load: LMA and (paging on) LME clear.
        v.write(f::VM_ENTRY_CONTROLS, e & !entry::IA32E).unwrap();
        let out = build(&v);
        assert_eq!(
            rd(&out, f::GUEST_IA32_EFER),
            rd(&v01, f::GUEST_IA32_EFER) & !(EFER_LMA | EFER_LME)
        );
        // Paging off: LME unchanged.
        v.write(f::GUEST_CR0, 0x31).unwrap();
        let out = build(&v);
        assert_eq!(
            rd(&out, f::GUEST_IA32_EFER),
            rd(&v01, f::GUEST_IA32_EFER) & !EFER_LMA
        );
        // vmcs12's values when it loads them.
        let out = build(&vmcs12());
        assert_eq!(rd(&out, f::GUEST_IA32_EFER), 0xd01);
        assert_eq!(
            rd(&out, f::GUEST_IA32_PAT),
            rd(&vmcs12(), f::GUEST_IA32_PAT)
        );
    }

    #[test]
    fn composition_of_cr4_exceptions_tsc_and_addresses() {
        let v12 = vmcs12();
        let v01 = vmcs01();
        let out = build(&v12);
        // CR4: VMXE real and owned by the hypervisor; the guest reads its own value.
        let (cr4, mask, shadow) = compose_cr4(&v12);
        assert_eq!(rd(&out, f::GUEST_CR4), rd(&v12, f::GUEST_CR4) | 1 << 13);
        assert_eq!(
            rd(&out, f::CR4_GUEST_HOST_MASK),
            rd(&v12, f::CR4_GUEST_HOST_MASK) | 1 << 13
        );
        assert_eq!(
            (
                rd(&out, f::GUEST_CR4),
                rd(&out, f::CR4_GUEST_HOST_MASK),
                rd(&out, f::CR4_READ_SHADOW)
            ),
            (cr4, mask, shadow)
        );
        assert_eq!(
            shadow & rd(&v12, f::CR4_GUEST_HOST_MASK),
            rd(&v12, f::CR4_READ_SHADOW) & rd(&v12, f::CR4_GUEST_HOST_MASK)
        );
        assert_eq!(
            uncompose_cr4(
                cr4,
                shadow,
                rd(&v12, f::CR4_GUEST_HOST_MASK),
                rd(&v12, f::GUEST_CR4)
            ),
            rd(&v12, f::GUEST_CR4)
        );
        // Exhaustively over the VMXE cases: mask, guest value.
        for m in [0, 1u64 << 13] {
            for g in [0, 1u64 << 13] {
                let mut v = vmcs12();
                v.write(f::CR4_GUEST_HOST_MASK, m).unwrap();
                v.write(f::CR4_READ_SHADOW, m).unwrap();
                v.write(f::GUEST_CR4, 0x20 | g).unwrap();
                let (c, mm, s) = compose_cr4(&v);
                assert_eq!(c & 1 << 13, 1 << 13);
                assert_eq!(mm, 1 << 13);
                assert_eq!(s, if m != 0 { m } else { g });
                assert_eq!(uncompose_cr4(c, s, m, 0x20 | g), 0x20 | g);
                if m == 0 {
                    // The guest toggled VMXE through the hypervisor: the
                    // shadow says what it believes.
                    assert_eq!(
                        uncompose_cr4(c, s ^ 1 << 13, m, 0x20 | g),
                        0x20 | (g ^ 1 << 13)
                    );
                }
            }
        }
        assert_eq!(
            rd(&out, f::CR0_GUEST_HOST_MASK),
            rd(&v12, f::CR0_GUEST_HOST_MASK)
        );
        assert_eq!(rd(&out, f::CR0_READ_SHADOW), rd(&v12, f::CR0_READ_SHADOW));
        // Exceptions: vmcs12's | #MC; PFEC vmcs12's.
        let mut v = vmcs12();
        v.write(f::EXCEPTION_BITMAP, 1 << 14).unwrap();
        v.write(f::PAGE_FAULT_ERROR_CODE_MASK, 3).unwrap();
        v.write(f::PAGE_FAULT_ERROR_CODE_MATCH, 1).unwrap();
        let o = build(&v);
        assert_eq!(rd(&o, f::EXCEPTION_BITMAP), 1 << 14 | 1 << 18);
        assert_eq!(
            (
                rd(&o, f::PAGE_FAULT_ERROR_CODE_MASK),
                rd(&o, f::PAGE_FAULT_ERROR_CODE_MATCH)
            ),
            (3, 1)
        );
        // TSC offset: vmcs01's + vmcs12's, wrapping; vmcs12's only when enabled.
        assert_eq!(
            rd(&v01, f::CPU_BASED_VM_EXEC_CONTROL) & proc1::TSC_OFFSETTING,
            0
        );
        assert_eq!(rd(&out, f::TSC_OFFSET), rd(&v12, f::TSC_OFFSET));
        let mut v01b = vmcs01();
        v01b.write(
            f::CPU_BASED_VM_EXEC_CONTROL,
            rd(&v01b, f::CPU_BASED_VM_EXEC_CONTROL) | proc1::TSC_OFFSETTING,
        )
        .unwrap();
        v01b.write(f::TSC_OFFSET, 0x0000_0200_0000_0001).unwrap();
        let mut o = MemVmcs::new();
        build_vmcs02(&v12, &v01b, &params(), &mut o).unwrap();
        assert_eq!(
            rd(&o, f::TSC_OFFSET),
            0xffff_ff00_0000_0000u64.wrapping_add(0x0000_0200_0000_0001)
        );
        assert_ne!(
            rd(&o, f::CPU_BASED_VM_EXEC_CONTROL) & proc1::TSC_OFFSETTING,
            0
        );
        let mut v = vmcs12();
        v.write(
            f::CPU_BASED_VM_EXEC_CONTROL,
            rd(&v, f::CPU_BASED_VM_EXEC_CONTROL) & !proc1::TSC_OFFSETTING,
        )
        .unwrap();
        let mut o = MemVmcs::new();
        build_vmcs02(&v, &v01b, &params(), &mut o).unwrap();
        assert_eq!(rd(&o, f::TSC_OFFSET), 0x0000_0200_0000_0001);
        // (TSC scaling: `tsc_scaling_is_carried_only_when_vmcs12_enables_it`.)
        // Addresses: the host's validated pages, the hypervisor's bitmap
        // page, the host EPT; no MSR areas for the CPU; no link VMCS.
        assert_eq!(rd(&out, f::IO_BITMAP_A), 0x10_0000);
        assert_eq!(rd(&out, f::VIRTUAL_APIC_PAGE_ADDR), 0x10_4000);
        assert_eq!(rd(&out, f::APIC_ACCESS_ADDR), 0x10_3000);
        assert_eq!(rd(&out, f::MSR_BITMAP), params().msr_bitmap_pa);
        assert_eq!(rd(&out, f::EPT_POINTER), rd(&v01, f::EPT_POINTER));
        assert_eq!(rd(&out, f::VMCS_LINK_POINTER), NO_LINK);
        for c in [
            f::VM_ENTRY_MSR_LOAD_COUNT,
            f::VM_EXIT_MSR_STORE_COUNT,
            f::VM_EXIT_MSR_LOAD_COUNT,
        ] {
            assert_eq!(rd(&out, c), 0);
        }
        assert_eq!(rd(&out, f::XSS_EXIT_BITMAP), host_policy::XSS_EXIT_BITMAP);
    }

    /// vmcs02: guest state = vmcs12's (bar the composed fields), host
    /// state = vmcs01's; vmcs12's host state and hidden fields never read.
    #[test]
    fn guest_state_copied_host_state_is_the_hypervisors() {
        let mut v12 = vmcs12();
        for e in super::super::field_class::HIDDEN_FIELDS {
            let _ = v12.write_raw(*e, 0x5a5a_5a5a_5a5a);
        }
        let v01 = vmcs01();
        let out = build(&v12);
        let composed = [
            f::GUEST_CR4.encoding(),
            f::VMCS_LINK_POINTER.encoding(),
            f::GUEST_IA32_PERF_GLOBAL_CTRL.encoding(),
        ];
        for info in FIELDS {
            let e = info.encoding;
            match class_of(false, e).unwrap() {
                Class::GuestState if !composed.contains(&e) => {
                    assert_eq!(out.read_raw(e), v12.read_raw(e), "{}", info.name)
                }
                Class::HostState => assert_eq!(out.read_raw(e), v01.read_raw(e), "{}", info.name),
                Class::Hidden if info.name != "EPT_POINTER" => {
                    assert!(!out.was_written(e), "{} written", info.name)
                }
                _ => {}
            }
        }
        assert_ne!(rd(&out, f::HOST_RIP), rd(&v12, f::HOST_RIP));
    }

    #[test]
    fn msr_bitmap_is_the_or_of_both() {
        let mut l1 = [0u8; MSR_BITMAP_SIZE];
        let mut hv = [0u8; MSR_BITMAP_SIZE];
        for i in 0..MSR_BITMAP_SIZE {
            l1[i] = (i * 7) as u8;
            hv[i] = (i * 13 + 5) as u8;
        }
        let mut out = [0u8; MSR_BITMAP_SIZE];
        merge_msr_bitmap(Some(&l1), &hv, &mut out);
        for i in 0..MSR_BITMAP_SIZE {
            assert_eq!(out[i], l1[i] | hv[i]);
        }
        merge_msr_bitmap(None, &hv, &mut out);
        assert!(out.iter().all(|b| *b == 0xff));
        // With the real policy bitmap: an MSR the host lets its guest
        // write but the hypervisor does not (MISC_ENABLE) exits.
        use crate::hv::vmx::msr_bitmap::{build_host_bitmap, is_intercepted};
        let mut page = [0u8; MSR_BITMAP_SIZE];
        build_host_bitmap(&mut page, host_policy::MSR_INTERCEPTS);
        let zero = [0u8; MSR_BITMAP_SIZE];
        merge_msr_bitmap(Some(&zero), &page, &mut out);
        assert!(is_intercepted(&out, host_policy::msr::MISC_ENABLE, true));
        assert!(!is_intercepted(&out, host_policy::msr::MISC_ENABLE, false));
        assert!(!is_intercepted(&out, host_policy::msr::FS_BASE, true));
    }

    fn words_of(b: &[u8; MSR_BITMAP_SIZE]) -> [u64; MSR_BITMAP_WORDS] {
        let mut w = [0u64; MSR_BITMAP_WORDS];
        for (i, x) in w.iter_mut().enumerate() {
            *x = u64::from_le_bytes(b[8 * i..8 * i + 8].try_into().unwrap());
        }
        w
    }

    /// A host page served word by word, counting which words were read.
    struct Page {
        words: [u64; MSR_BITMAP_WORDS],
        read: std::vec::Vec<usize>,
    }

    impl crate::hv::vmx::nested::host_walk::HostPhys for Page {
        fn read_bytes(&mut self, _: u64, _: &mut [u8]) -> bool {
            false
        }
        fn write_bytes(&mut self, _: u64, _: &[u8]) -> bool {
            false
        }
        fn read_words(&mut self, pa: u64, out: &mut [u64]) -> bool {
            let w = ((pa & 0xfff) / 8) as usize;
            self.read.push(w);
            out[0] = self.words[w];
            out.len() == 1
        }
        fn write_words(&mut self, _: u64, _: &[u64]) -> bool {
            false
        }
    }

    /// The word-list merge (only the words where the policy passes an MSR
    /// through are read from the host's page) gives the same bitmap as
    /// the full OR, for the real policy and for arbitrary ones, and reads
    /// no other word of the host's page.
    #[test]
    fn msr_bitmap_word_list_equals_the_full_merge() {
        use crate::hv::vmx::msr_bitmap::build_host_bitmap;
        use crate::hv::vmx::nested::host_walk::HostPhys;
        let mut real = [0u8; MSR_BITMAP_SIZE];
        build_host_bitmap(&mut real, host_policy::MSR_INTERCEPTS);
        let mut policies = std::vec![real];
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..8 {
            let mut p = [0u8; MSR_BITMAP_SIZE];
            for b in p.iter_mut() {
                // Mostly all-ones bytes, as a policy that intercepts most.
                *b = if next() % 3 == 0 { next() as u8 } else { 0xff };
            }
            policies.push(p);
        }
        for hv in policies.iter() {
            let hvw = words_of(hv);
            let words = HostWords::of(&hvw);
            for _ in 0..4 {
                let mut l1 = [0u8; MSR_BITMAP_SIZE];
                for b in l1.iter_mut() {
                    *b = next() as u8;
                }
                let mut want = [0u8; MSR_BITMAP_SIZE];
                merge_msr_bitmap(Some(&l1), hv, &mut want);
                let mut page = Page {
                    words: words_of(&l1),
                    read: std::vec::Vec::new(),
                };
                let mut out = [u64::MAX; MSR_BITMAP_WORDS];
                assert!(page.read_page_words(0x5000, &words.0, &mut out));
                merge_msr_words(&words, true, &hvw, &mut out);
                assert_eq!(out, words_of(&want));
                assert_eq!(page.read.len(), words.count());
                let listed: std::vec::Vec<usize> = words.iter().collect();
                let by_contains: std::vec::Vec<usize> = (0..MSR_BITMAP_WORDS)
                    .filter(|w| words.contains(*w))
                    .collect();
                assert_eq!(listed, by_contains);
                assert!(page.read.iter().all(|w| words.contains(*w)));
                // Without a host bitmap: all ones.
                merge_msr_words(&words, false, &hvw, &mut out);
                assert!(out.iter().all(|w| *w == u64::MAX));
            }
        }
        // The real policy intercepts writes of all but a few MSRs: only
        // a little over half the page is read.
        let words = HostWords::of(&words_of(&real));
        assert!(
            words.count() < MSR_BITMAP_WORDS * 3 / 4,
            "{}",
            words.count()
        );
        assert!(words.count() >= MSR_BITMAP_WORDS / 2, "reads pass through");
        assert!(!page_unaligned_reads());
    }

    /// An unaligned page is refused by the default `read_page_words`.
    fn page_unaligned_reads() -> bool {
        use crate::hv::vmx::nested::host_walk::HostPhys;
        let mut p = Page {
            words: [0; MSR_BITMAP_WORDS],
            read: std::vec::Vec::new(),
        };
        let mut out = [0u64; MSR_BITMAP_WORDS];
        p.read_page_words(0x5008, &[u64::MAX; 8], &mut out)
    }
}
