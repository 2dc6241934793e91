// SPDX-License-Identifier: GPL-2.0

//! Segment state for a VMCS guest-state area built from the running CPU.
//!
//! Owns the decoding of GDT/LDT descriptors (SDM Vol. 3A, "Segment
//! Descriptors" and "Segment Descriptor Tables", including the 16-byte
//! system descriptors of IA-32e mode), their conversion to the VMX
//! access-rights format (SDM Vol. 3C, "Guest Register State", table "Format
//! of Access Rights"), the `(selector, base, limit, access rights)` tuple
//! the VMCS wants for each segment register ([`DescriptorTables`]), and the
//! VM-entry checks on TR and on CS in 64-bit mode that pkvm relies on.
//!
//! ```text
//! descriptor bits  63..56 55 54 53 52 51..48 47 46..45 44 43..40 39..16 15..0
//!                  base   G  DB L  AVL limit P  DPL    S  type   base   limit
//! access rights    16 unusable, 15 G, 14 DB, 13 L, 12 AVL, 7 P, 6..5 DPL,
//!                  4 S, 3..0 type   (= descriptor bits 55..40 & 0xf0ff)
//! ```
//!
//! # What the caller must override (64-bit mode)
//!
//! The tables only hold what a descriptor can express; in 64-bit mode the
//! CPU takes some bases from elsewhere, so the caller of
//! [`DescriptorTables::segment`] must replace:
//!
//! * **FS and GS base** with `IA32_FS_BASE` (0xC000_0100) and
//!   `IA32_GS_BASE` (0xC000_0101): a descriptor's 32-bit base is not what
//!   the CPU uses.  (`IA32_KERNEL_GS_BASE` is not in the VMCS; it simply
//!   stays loaded.)
//! * **GDTR and IDTR** base and limit with SGDT / SIDT: they are not segment
//!   registers and have no selector.
//!
//! TR and LDTR bases are complete: [`DescriptorTables::system_segment`]
//! reads the 16-byte descriptor, bits 63:32 included.  CS, SS, DS and ES
//! bases are what the descriptor says (0 for Linux); the CPU ignores them in
//! 64-bit mode.
//!
//! The result reconstructs the *hidden* part of each register from the
//! tables.  It is right as long as the tables have not changed since the
//! selectors were loaded, which holds for Linux after boot (its per-CPU GDT
//! is fixed).  Loading a code or data segment sets the descriptor's
//! accessed bit, so the access rights of code and data segments always have
//! it (VM entry requires it of usable ones).

/// Selector bit 2: table indicator (1 = LDT).
pub const SELECTOR_TI: u16 = 1 << 2;
/// Selector bits 1:0: requested privilege level.
pub const SELECTOR_RPL_MASK: u16 = 3;

/// System-segment type: 64-bit TSS, available.
pub const TYPE_TSS64_AVAILABLE: u8 = 9;
/// System-segment type: 64-bit TSS, busy (what VM entry requires in TR).
pub const TYPE_TSS64_BUSY: u8 = 11;
/// System-segment type: LDT.
pub const TYPE_LDT: u8 = 2;
/// Code/data type bit 0: accessed.
pub const TYPE_ACCESSED: u8 = 1;
/// Code/data type bit 3: code (1) or data (0).
pub const TYPE_CODE: u8 = 8;

/// A segment selector.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Selector(pub u16);

impl Selector {
    /// Index into the GDT or LDT (bits 15:3).
    pub const fn index(self) -> usize {
        (self.0 >> 3) as usize
    }

    /// Whether the selector refers to the LDT (bit 2).
    pub const fn ti(self) -> bool {
        self.0 & SELECTOR_TI != 0
    }

    /// Requested privilege level (bits 1:0).
    pub const fn rpl(self) -> u8 {
        (self.0 & SELECTOR_RPL_MASK) as u8
    }

    /// Whether this is a null selector (GDT index 0, any RPL).
    pub const fn is_null(self) -> bool {
        self.0 & !SELECTOR_RPL_MASK == 0
    }
}

/// An 8-byte segment descriptor (or the low half of a 16-byte one).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Descriptor(pub u64);

impl Descriptor {
    const fn bits(self, lo: u32, width: u32) -> u64 {
        (self.0 >> lo) & ((1 << width) - 1)
    }

    /// Base address bits 31:0 (descriptor bits 39:16 and 63:56).
    pub const fn base(self) -> u64 {
        self.bits(16, 24) | (self.bits(56, 8) << 24)
    }

    /// The 20-bit limit field as stored (descriptor bits 15:0 and 51:48).
    pub const fn raw_limit(self) -> u32 {
        (self.bits(0, 16) | (self.bits(48, 4) << 16)) as u32
    }

    /// The limit in bytes (last valid offset): the raw limit, or, with G=1,
    /// the raw limit in 4 KiB units with the low 12 bits set.
    pub const fn limit(self) -> u32 {
        if self.g() {
            (self.raw_limit() << 12) | 0xfff
        } else {
            self.raw_limit()
        }
    }

    /// Segment type (bits 43:40).
    pub const fn seg_type(self) -> u8 {
        self.bits(40, 4) as u8
    }

    /// S (bit 44): 1 for code/data, 0 for system descriptors.
    pub const fn s(self) -> bool {
        self.bits(44, 1) != 0
    }

    /// Descriptor privilege level (bits 46:45).
    pub const fn dpl(self) -> u8 {
        self.bits(45, 2) as u8
    }

    /// Present (bit 47).
    pub const fn present(self) -> bool {
        self.bits(47, 1) != 0
    }

    /// Available for software (bit 52).
    pub const fn avl(self) -> bool {
        self.bits(52, 1) != 0
    }

    /// 64-bit code segment (bit 53).
    pub const fn l(self) -> bool {
        self.bits(53, 1) != 0
    }

    /// Default operation size / big (bit 54).
    pub const fn db(self) -> bool {
        self.bits(54, 1) != 0
    }

    /// Granularity (bit 55): limit in 4 KiB units.
    pub const fn g(self) -> bool {
        self.bits(55, 1) != 0
    }

    /// The VMX access rights of this descriptor (descriptor bits 55:40 with
    /// the limit bits 51:48 removed; never unusable).
    pub const fn access_rights(self) -> AccessRights {
        AccessRights(((self.0 >> 40) as u32) & AccessRights::DESCRIPTOR_BITS)
    }
}

impl Descriptor {
    /// Encodes a code or data descriptor (S=1) from its base, raw 20-bit
    /// limit and the access-rights bits (type, DPL, P, AVL, L, D/B, G);
    /// the inverse of [`Descriptor::base`], [`Descriptor::raw_limit`] and
    /// [`Descriptor::access_rights`].
    pub const fn code_or_data(base: u32, raw_limit: u32, ar: AccessRights) -> Self {
        Self::encode(base as u64, raw_limit, ar.0 | AccessRights::S)
    }

    /// The low half of a 16-byte system descriptor (S=0; TSS or LDT).
    const fn system_low(base: u64, raw_limit: u32, ar: AccessRights) -> Self {
        Self::encode(base, raw_limit, ar.0 & !AccessRights::S)
    }

    const fn encode(base: u64, raw_limit: u32, ar: u32) -> Self {
        let limit = raw_limit as u64 & 0xf_ffff;
        Self(
            (limit & 0xffff)
                | (base & 0xff_ffff) << 16
                | ((ar & AccessRights::DESCRIPTOR_BITS) as u64) << 40
                | (limit >> 16) << 48
                | ((base >> 24) & 0xff) << 56,
        )
    }
}

/// Encodes a 16-byte system descriptor (IA-32e mode TSS or LDT): the low
/// quadword as for any descriptor, the high quadword with base bits 63:32.
/// The inverse of [`DescriptorTables::system_segment`].
pub const fn system_descriptor(base: u64, raw_limit: u32, seg_type: u8) -> [u64; 2] {
    let ar = AccessRights(AccessRights::P | (seg_type as u32 & 0xf));
    [Descriptor::system_low(base, raw_limit, ar).0, base >> 32]
}

/// Encodes a 16-byte IA-32e interrupt gate (type 14, present, DPL 0, IST
/// 0) to `handler` through code selector `cs` (SDM Vol. 3A, "64-Bit Mode
/// IDT").  Interrupts stay disabled in the handler.
pub const fn interrupt_gate(handler: u64, cs: u16) -> [u64; 2] {
    const TYPE_INTERRUPT_GATE: u64 = 0xe;
    const P: u64 = 1 << 15;
    [
        (handler & 0xffff)
            | (cs as u64) << 16
            | (TYPE_INTERRUPT_GATE << 8 | P) << 32
            | ((handler >> 16) & 0xffff) << 48,
        handler >> 32,
    ]
}

/// The 64-bit base of a 16-byte system descriptor (TSS or LDT in IA-32e
/// mode): bits 31:0 from the low quadword, bits 63:32 from bits 31:0 of the
/// high quadword.
pub const fn system_descriptor_base(low: u64, high: u64) -> u64 {
    Descriptor(low).base() | ((high & 0xffff_ffff) << 32)
}

/// A VMCS access-rights field (`GUEST_*_AR_BYTES`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AccessRights(pub u32);

impl AccessRights {
    /// Bit 16: segment unusable.
    pub const UNUSABLE: u32 = 1 << 16;
    /// Bits a descriptor supplies: 15:12 and 7:0.
    pub const DESCRIPTOR_BITS: u32 = 0xf0ff;
    /// Reserved bits (11:8 and 31:17); VM entry requires them clear.
    pub const RESERVED: u32 = 0xfffe_0f00;
    /// Bit 4: S, code or data (1) / system (0).
    pub const S: u32 = 1 << 4;
    /// Bit 7: present.
    pub const P: u32 = 1 << 7;
    /// Bit 13: L, 64-bit code.
    pub const L: u32 = 1 << 13;
    /// Bit 14: D/B, default operation size / big.
    pub const DB: u32 = 1 << 14;
    /// Bit 15: G, limit in 4 KiB units.
    pub const G: u32 = 1 << 15;

    /// An unusable segment with DPL `dpl` (the selector's RPL: for SS this
    /// keeps CPL = SS.DPL, which VM entry checks even for an unusable SS).
    pub const fn unusable(dpl: u8) -> Self {
        Self(Self::UNUSABLE | (((dpl & 3) as u32) << 5))
    }

    /// Segment type (bits 3:0).
    pub const fn seg_type(self) -> u8 {
        (self.0 & 0xf) as u8
    }

    /// S (bit 4).
    pub const fn s(self) -> bool {
        self.0 & (1 << 4) != 0
    }

    /// DPL (bits 6:5).
    pub const fn dpl(self) -> u8 {
        ((self.0 >> 5) & 3) as u8
    }

    /// Present (bit 7).
    pub const fn present(self) -> bool {
        self.0 & (1 << 7) != 0
    }

    /// AVL (bit 12).
    pub const fn avl(self) -> bool {
        self.0 & (1 << 12) != 0
    }

    /// L, 64-bit code (bit 13).
    pub const fn l(self) -> bool {
        self.0 & (1 << 13) != 0
    }

    /// D/B (bit 14).
    pub const fn db(self) -> bool {
        self.0 & (1 << 14) != 0
    }

    /// G (bit 15).
    pub const fn g(self) -> bool {
        self.0 & (1 << 15) != 0
    }

    /// Unusable (bit 16).
    pub const fn is_unusable(self) -> bool {
        self.0 & Self::UNUSABLE != 0
    }

    /// A copy with the type field replaced (low 4 bits of `t`).
    #[must_use]
    pub const fn with_type(self, t: u8) -> Self {
        Self((self.0 & !0xf) | (t & 0xf) as u32)
    }
}

/// What the VMCS holds for one segment register.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SegmentState {
    /// `GUEST_*_SELECTOR`.
    pub selector: u16,
    /// `GUEST_*_BASE` (see the module docs for FS, GS in 64-bit mode).
    pub base: u64,
    /// `GUEST_*_LIMIT`: byte-granular, expanded when G=1.
    pub limit: u32,
    /// `GUEST_*_AR_BYTES`.
    pub access_rights: AccessRights,
}

impl SegmentState {
    /// An unusable segment for `selector` (base and limit 0, DPL = RPL).
    pub const fn unusable(selector: u16) -> Self {
        Self {
            selector,
            base: 0,
            limit: 0,
            access_rights: AccessRights::unusable(Selector(selector).rpl()),
        }
    }

    /// A copy with another base (FS/GS in 64-bit mode, from their MSRs).
    #[must_use]
    pub const fn with_base(self, base: u64) -> Self {
        Self { base, ..self }
    }
}

/// Why a segment could not be derived or fails a VM-entry check.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SegmentError {
    /// The selector's descriptor (both quadwords for a system descriptor)
    /// lies beyond the table's limit.
    BeyondLimit,
    /// A code/data segment register refers to a system descriptor.
    NotCodeOrData,
    /// TR or LDTR refers to a code/data descriptor.
    NotSystem,
    /// TR or LDTR selector has TI=1 (they must be in the GDT).
    SystemInLdt,
    /// The segment must be usable (TR, CS).
    Unusable,
    /// The descriptor is not present.
    NotPresent,
    /// Wrong type: TR not a 64-bit TSS, LDTR not an LDT, CS not an
    /// accessed code segment.
    BadType,
    /// CS in 64-bit mode needs L=1.
    NotLongMode,
    /// CS in 64-bit mode needs D/B=0 when L=1.
    DefaultSizeSet,
    /// The limit and G disagree (VM entry: limit bits 11:0 all ones if
    /// G=1, limit bits 31:20 zero if G=0).
    LimitGranularity,
    /// Reserved access-rights bits are set.
    ReservedBits,
}

/// Descriptor tables to look selectors up in: a GDT image and an LDT image
/// (empty when LDTR is null, as under Linux).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DescriptorTables<'a> {
    gdt: &'a [u64],
    ldt: &'a [u64],
}

impl<'a> DescriptorTables<'a> {
    /// Tables whose limits are the slices' lengths.
    pub const fn new(gdt: &'a [u64], ldt: &'a [u64]) -> Self {
        Self { gdt, ldt }
    }

    /// A GDT image bounded by a GDTR limit (bytes - 1, as SGDT stores it):
    /// entries beyond the limit are out of range even if the image has
    /// them.  No LDT.
    pub fn from_gdtr(image: &'a [u64], gdtr_limit: u16) -> Self {
        let n = (usize::from(gdtr_limit) + 1) / 8;
        Self {
            gdt: image.get(..n).unwrap_or(image),
            ldt: &[],
        }
    }

    /// Number of 8-byte GDT entries within the limit.
    pub const fn gdt_len(&self) -> usize {
        self.gdt.len()
    }

    /// The code/data segment for a selector of CS, SS, DS, ES, FS or GS.
    ///
    /// A null selector (GDT index 0), or a selector with TI=1 while the LDT
    /// is empty, gives an unusable segment, not an error.  The accessed bit
    /// is set (see the module docs).  A not-present descriptor is returned
    /// as is (P=0): VM entry will reject it for a usable register.
    pub fn segment(&self, selector: u16) -> Result<SegmentState, SegmentError> {
        let sel = Selector(selector);
        let table = if sel.ti() { self.ldt } else { self.gdt };
        if sel.is_null() || (sel.ti() && self.ldt.is_empty()) {
            return Ok(SegmentState::unusable(selector));
        }
        let d = Descriptor(*table.get(sel.index()).ok_or(SegmentError::BeyondLimit)?);
        if !d.s() {
            return Err(SegmentError::NotCodeOrData);
        }
        let ar = d.access_rights();
        Ok(SegmentState {
            selector,
            base: d.base(),
            limit: d.limit(),
            access_rights: ar.with_type(ar.seg_type() | TYPE_ACCESSED),
        })
    }

    /// The system segment for TR or LDTR: a 16-byte descriptor in the GDT,
    /// with its full 64-bit base.  A null selector gives an unusable segment
    /// (normal for LDTR; [`tr_for_vm_entry`] rejects it for TR).
    pub fn system_segment(&self, selector: u16) -> Result<SegmentState, SegmentError> {
        let sel = Selector(selector);
        if sel.ti() {
            return Err(SegmentError::SystemInLdt);
        }
        if sel.is_null() {
            return Ok(SegmentState::unusable(selector));
        }
        let i = sel.index();
        let low = *self.gdt.get(i).ok_or(SegmentError::BeyondLimit)?;
        let high = *self
            .gdt
            .get(i.wrapping_add(1))
            .ok_or(SegmentError::BeyondLimit)?;
        let d = Descriptor(low);
        if d.s() {
            return Err(SegmentError::NotSystem);
        }
        Ok(SegmentState {
            selector,
            base: system_descriptor_base(low, high),
            limit: d.limit(),
            access_rights: d.access_rights(),
        })
    }
}

/// VM entry's rule tying the limit to G: if any of limit bits 11:0 is 0,
/// G must be 0; if any of bits 31:20 is 1, G must be 1.
pub const fn limit_matches_granularity(limit: u32, ar: AccessRights) -> bool {
    if limit & 0xfff != 0xfff && ar.g() {
        return false;
    }
    if limit & 0xfff0_0000 != 0 && !ar.g() {
        return false;
    }
    true
}

/// Checks TR for VM entry into IA-32e mode and returns the value to write:
/// usable, in the GDT, S=0, present, a 64-bit TSS, limit consistent with G,
/// no reserved bits.  VM entry requires the *busy* type (11); an available
/// TSS (type 9) is converted to 11, as LTR would have done.
pub fn tr_for_vm_entry(tr: SegmentState) -> Result<SegmentState, SegmentError> {
    let ar = tr.access_rights;
    if ar.is_unusable() {
        return Err(SegmentError::Unusable);
    }
    if Selector(tr.selector).ti() {
        return Err(SegmentError::SystemInLdt);
    }
    if ar.0 & AccessRights::RESERVED != 0 {
        return Err(SegmentError::ReservedBits);
    }
    if ar.s() {
        return Err(SegmentError::NotSystem);
    }
    let access_rights = match ar.seg_type() {
        TYPE_TSS64_BUSY => ar,
        TYPE_TSS64_AVAILABLE => ar.with_type(TYPE_TSS64_BUSY),
        _ => return Err(SegmentError::BadType),
    };
    if !ar.present() {
        return Err(SegmentError::NotPresent);
    }
    if !limit_matches_granularity(tr.limit, ar) {
        return Err(SegmentError::LimitGranularity);
    }
    Ok(SegmentState {
        access_rights,
        ..tr
    })
}

/// Checks CS for VM entry into 64-bit mode: usable, S=1, an accessed code
/// type (9, 11, 13, 15), present, L=1 with D/B=0, limit consistent with G,
/// no reserved bits.
pub fn check_cs_64(cs: &SegmentState) -> Result<(), SegmentError> {
    let ar = cs.access_rights;
    if ar.is_unusable() {
        return Err(SegmentError::Unusable);
    }
    if ar.0 & AccessRights::RESERVED != 0 {
        return Err(SegmentError::ReservedBits);
    }
    if !ar.s() {
        return Err(SegmentError::NotCodeOrData);
    }
    let t = ar.seg_type();
    if t & TYPE_CODE == 0 || t & TYPE_ACCESSED == 0 {
        return Err(SegmentError::BadType);
    }
    if !ar.present() {
        return Err(SegmentError::NotPresent);
    }
    if !ar.l() {
        return Err(SegmentError::NotLongMode);
    }
    if ar.db() {
        return Err(SegmentError::DefaultSizeSet);
    }
    if !limit_matches_granularity(cs.limit, ar) {
        return Err(SegmentError::LimitGranularity);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const KERNEL32_CS: u64 = 0x00cf_9b00_0000_ffff;
    const KERNEL_CS: u64 = 0x00af_9b00_0000_ffff;
    const KERNEL_DS: u64 = 0x00cf_9300_0000_ffff;
    const USER32_CS: u64 = 0x00cf_fb00_0000_ffff;
    const USER_DS: u64 = 0x00cf_f300_0000_ffff;
    const USER_CS: u64 = 0x00af_fb00_0000_ffff;
    /// Busy 64-bit TSS at 0xfffffe0000003000, limit 0x4087, byte-granular
    /// (as Linux's cpu_entry_area TSS looks).
    const TSS_LOW: u64 = 0x0000_8b00_3000_4087;
    const TSS_HIGH: u64 = 0xffff_fe00;

    /// Linux x86-64 GDT layout (arch/x86/include/asm/segment.h): 16 entries.
    fn linux_gdt() -> [u64; 16] {
        let mut g = [0u64; 16];
        g[1] = KERNEL32_CS;
        g[2] = KERNEL_CS;
        g[3] = KERNEL_DS;
        g[4] = USER32_CS;
        g[5] = USER_DS;
        g[6] = USER_CS;
        g[8] = TSS_LOW;
        g[9] = TSS_HIGH;
        g
    }

    #[test]
    fn selector_fields() {
        let s = Selector(0x33);
        assert_eq!((s.index(), s.ti(), s.rpl()), (6, false, 3));
        let s = Selector(0x2f);
        assert_eq!((s.index(), s.ti(), s.rpl()), (5, true, 3));
        assert!(Selector(0).is_null());
        assert!(Selector(3).is_null());
        assert!(!Selector(4).is_null()); // LDT index 0 is not null
        assert!(!Selector(8).is_null());
    }

    #[test]
    fn decode_kernel_cs() {
        let d = Descriptor(KERNEL_CS);
        assert_eq!(d.base(), 0);
        assert_eq!(d.raw_limit(), 0xfffff);
        assert_eq!(d.limit(), 0xffff_ffff);
        assert_eq!(d.seg_type(), 0xb);
        assert!(d.s());
        assert_eq!(d.dpl(), 0);
        assert!(d.present());
        assert!(!d.avl());
        assert!(d.l());
        assert!(!d.db());
        assert!(d.g());
        assert_eq!(d.access_rights(), AccessRights(0xa09b));
    }

    #[test]
    fn linux_access_rights() {
        assert_eq!(Descriptor(KERNEL32_CS).access_rights().0, 0xc09b);
        assert_eq!(Descriptor(KERNEL_DS).access_rights().0, 0xc093);
        assert_eq!(Descriptor(USER_CS).access_rights().0, 0xa0fb);
        assert_eq!(Descriptor(USER_DS).access_rights().0, 0xc0f3);
        assert_eq!(Descriptor(USER_DS).dpl(), 3);
        assert_eq!(Descriptor(TSS_LOW).access_rights().0, 0x008b);
    }

    #[test]
    fn linux_segments_from_gdt() {
        let gdt = linux_gdt();
        let t = DescriptorTables::new(&gdt, &[]);
        let cs = t.segment(0x10).unwrap();
        assert_eq!(
            cs,
            SegmentState {
                selector: 0x10,
                base: 0,
                limit: 0xffff_ffff,
                access_rights: AccessRights(0xa09b),
            }
        );
        assert_eq!(check_cs_64(&cs), Ok(()));
        let ds = t.segment(0x18).unwrap();
        assert_eq!((ds.limit, ds.access_rights.0), (0xffff_ffff, 0xc093));
        let ucs = t.segment(0x33).unwrap();
        assert_eq!((ucs.selector, ucs.access_rights.0), (0x33, 0xa0fb));
        assert_eq!(check_cs_64(&ucs), Ok(()));
        let uds = t.segment(0x2b).unwrap();
        assert_eq!((uds.selector, uds.access_rights.0), (0x2b, 0xc0f3));
        // The 32-bit compat CS is not a 64-bit CS.
        let cs32 = t.segment(0x08).unwrap();
        assert_eq!(check_cs_64(&cs32), Err(SegmentError::NotLongMode));
        let ucs32 = t.segment(0x23).unwrap();
        assert_eq!(check_cs_64(&ucs32), Err(SegmentError::NotLongMode));
    }

    #[test]
    fn linux_tss() {
        let gdt = linux_gdt();
        let t = DescriptorTables::new(&gdt, &[]);
        let tr = t.system_segment(0x40).unwrap();
        assert_eq!(
            tr,
            SegmentState {
                selector: 0x40,
                base: 0xffff_fe00_0000_3000,
                limit: 0x4087,
                access_rights: AccessRights(0x8b),
            }
        );
        assert_eq!(tr_for_vm_entry(tr), Ok(tr));
        assert_eq!(
            system_descriptor_base(TSS_LOW, TSS_HIGH),
            0xffff_fe00_0000_3000
        );
        // Bits 63:32 of the high quadword are ignored.
        assert_eq!(
            system_descriptor_base(TSS_LOW, 0xdead_beef_0000_0001),
            0x1_0000_3000
        );
        // The TSS is not a code/data segment.
        assert_eq!(t.segment(0x40), Err(SegmentError::NotCodeOrData));
        // And a code segment is not a system one.
        assert_eq!(t.system_segment(0x10), Err(SegmentError::NotSystem));
    }

    #[test]
    fn available_tss_becomes_busy() {
        let mut gdt = linux_gdt();
        gdt[8] = TSS_LOW & !(2u64 << 40); // type 9
        let t = DescriptorTables::new(&gdt, &[]);
        let tr = t.system_segment(0x40).unwrap();
        assert_eq!(tr.access_rights.seg_type(), TYPE_TSS64_AVAILABLE);
        let fixed = tr_for_vm_entry(tr).unwrap();
        assert_eq!(fixed.access_rights.0, 0x8b);
        assert_eq!((fixed.base, fixed.limit), (tr.base, tr.limit));
    }

    #[test]
    fn tr_rejections() {
        let gdt = linux_gdt();
        let t = DescriptorTables::new(&gdt, &[]);
        let tr = t.system_segment(0x40).unwrap();
        assert_eq!(
            tr_for_vm_entry(SegmentState::unusable(0)),
            Err(SegmentError::Unusable)
        );
        let with_type = |ty| SegmentState {
            access_rights: tr.access_rights.with_type(ty),
            ..tr
        };
        for ty in [0, 1, 2, 3, 5, 12, 15] {
            assert_eq!(
                tr_for_vm_entry(with_type(ty)),
                Err(SegmentError::BadType),
                "{ty}"
            );
        }
        let np = SegmentState {
            access_rights: AccessRights(tr.access_rights.0 & !0x80),
            ..tr
        };
        assert_eq!(tr_for_vm_entry(np), Err(SegmentError::NotPresent));
        let s1 = SegmentState {
            access_rights: AccessRights(tr.access_rights.0 | 0x10),
            ..tr
        };
        assert_eq!(tr_for_vm_entry(s1), Err(SegmentError::NotSystem));
        let g = SegmentState {
            access_rights: AccessRights(tr.access_rights.0 | 0x8000),
            ..tr
        };
        assert_eq!(tr_for_vm_entry(g), Err(SegmentError::LimitGranularity));
        let ldt_sel = SegmentState {
            selector: 0x44,
            ..tr
        };
        assert_eq!(tr_for_vm_entry(ldt_sel), Err(SegmentError::SystemInLdt));
        let rsv = SegmentState {
            access_rights: AccessRights(tr.access_rights.0 | 0x100),
            ..tr
        };
        assert_eq!(tr_for_vm_entry(rsv), Err(SegmentError::ReservedBits));
        assert_eq!(t.system_segment(0x44), Err(SegmentError::SystemInLdt));
    }

    #[test]
    fn cs_rejections() {
        let cs = DescriptorTables::new(&linux_gdt(), &[])
            .segment(0x10)
            .unwrap();
        let with_ar = |ar: u32| SegmentState {
            access_rights: AccessRights(ar),
            ..cs
        };
        assert_eq!(
            check_cs_64(&SegmentState::unusable(0)),
            Err(SegmentError::Unusable)
        );
        assert_eq!(check_cs_64(&with_ar(0xa093)), Err(SegmentError::BadType)); // data
        assert_eq!(check_cs_64(&with_ar(0xa09a)), Err(SegmentError::BadType)); // not accessed
        assert_eq!(
            check_cs_64(&with_ar(0xa08b)),
            Err(SegmentError::NotCodeOrData)
        );
        assert_eq!(check_cs_64(&with_ar(0xa01b)), Err(SegmentError::NotPresent));
        assert_eq!(
            check_cs_64(&with_ar(0xe09b)),
            Err(SegmentError::DefaultSizeSet)
        );
        assert_eq!(
            check_cs_64(&with_ar(0x209b)),
            Err(SegmentError::LimitGranularity)
        );
        assert_eq!(
            check_cs_64(&with_ar(0x2a09b)),
            Err(SegmentError::ReservedBits)
        );
        // Conforming, readable, accessed code (type 15) is fine.
        assert_eq!(check_cs_64(&with_ar(0xa09f)), Ok(()));
    }

    #[test]
    fn null_selectors_are_unusable() {
        let gdt = linux_gdt();
        let t = DescriptorTables::new(&gdt, &[]);
        for sel in [0, 1, 2, 3] {
            let s = t.segment(sel).unwrap();
            assert!(s.access_rights.is_unusable());
            assert_eq!(s.access_rights.dpl(), sel as u8);
            assert_eq!((s.selector, s.base, s.limit), (sel, 0, 0));
            assert_eq!(s.access_rights.0 & !0x60, AccessRights::UNUSABLE);
        }
        // TI=1 with an empty LDT, any index.
        for sel in [0x4, 0x7, 0x2f, 0xfffc] {
            assert!(
                t.segment(sel).unwrap().access_rights.is_unusable(),
                "{sel:#x}"
            );
        }
        // Null LDTR is unusable too.
        assert!(t.system_segment(0).unwrap().access_rights.is_unusable());
    }

    #[test]
    fn ldt_lookup_when_present() {
        let gdt = linux_gdt();
        let ldt = [USER_DS, 0x0040_f300_1234_0010];
        let t = DescriptorTables::new(&gdt, &ldt);
        let s = t.segment(0x7).unwrap(); // LDT index 0, RPL 3
        assert_eq!(s.access_rights.0, 0xc0f3);
        let s = t.segment(0xf).unwrap();
        assert_eq!((s.base, s.limit, s.access_rights.0), (0x1234, 0x10, 0x40f3));
        assert_eq!(t.segment(0x17), Err(SegmentError::BeyondLimit));
    }

    #[test]
    fn out_of_range_selectors() {
        let gdt = linux_gdt();
        let t = DescriptorTables::new(&gdt, &[]);
        assert_eq!(t.segment(16 << 3), Err(SegmentError::BeyondLimit));
        assert_eq!(t.segment(0xfff8), Err(SegmentError::BeyondLimit));
        assert_eq!(t.system_segment(0xfff8), Err(SegmentError::BeyondLimit));
        // A 16-byte descriptor whose high half is beyond the limit.
        assert_eq!(t.system_segment(15 << 3), Err(SegmentError::BeyondLimit));
        // GDTR limit cuts the image: Linux's is 16 * 8 - 1 = 127.
        let t = DescriptorTables::from_gdtr(&gdt, 127);
        assert_eq!(t.gdt_len(), 16);
        let t = DescriptorTables::from_gdtr(&gdt, 0x47); // up to index 8
        assert_eq!(t.gdt_len(), 9);
        assert!(t.segment(0x33).is_ok());
        assert_eq!(t.system_segment(0x40), Err(SegmentError::BeyondLimit));
        // A limit larger than the image is bounded by the image.
        let t = DescriptorTables::from_gdtr(&gdt, 0xffff);
        assert_eq!(t.gdt_len(), 16);
        // Empty GDT.
        let t = DescriptorTables::new(&[], &[]);
        assert_eq!(t.segment(0x10), Err(SegmentError::BeyondLimit));
        assert!(t.segment(0).unwrap().access_rights.is_unusable());
    }

    #[test]
    fn granularity_scaling() {
        // G=0: byte limit as stored.
        let d = Descriptor(0x0040_9300_0000_ffff);
        assert_eq!((d.raw_limit(), d.limit()), (0xffff, 0xffff));
        // G=1, raw 0: one 4 KiB page.
        let d = Descriptor(0x0080_9300_0000_0000);
        assert_eq!(d.limit(), 0xfff);
        // G=1, raw 0x12345.
        let d = Descriptor(0x0081_9300_0000_2345);
        assert_eq!((d.raw_limit(), d.limit()), (0x12345, 0x1234_5fff));
        assert!(limit_matches_granularity(d.limit(), d.access_rights()));
        assert!(limit_matches_granularity(0xfffff, AccessRights(0)));
        assert!(!limit_matches_granularity(0x100000, AccessRights(0)));
        assert!(!limit_matches_granularity(0xffe, AccessRights(0x8000)));
        assert!(limit_matches_granularity(0xfff, AccessRights(0x8000)));
    }

    #[test]
    fn base_bits_and_flags() {
        // Base 0x89abcdef split over bits 39:16 and 63:56; AVL set.
        let d = Descriptor(0x8910_93ab_cdef_0000 | (1 << 52));
        assert_eq!(d.base(), 0x89ab_cdef);
        assert!(d.avl());
        assert_eq!(d.access_rights().0 & 0x1000, 0x1000);
        assert!(d.access_rights().avl());
        // Data segment without the accessed bit gains it when loaded.
        let gdt = [0, 0x00cf_9200_0000_ffff];
        let s = DescriptorTables::new(&gdt, &[]).segment(0x8).unwrap();
        assert_eq!(s.access_rights.0, 0xc093);
        // FS/GS override.
        assert_eq!(
            s.with_base(0xffff_8880_0000_0000).base,
            0xffff_8880_0000_0000
        );
    }

    #[test]
    fn access_rights_getters() {
        let ar = AccessRights(0xa0fb);
        assert_eq!(ar.seg_type(), 0xb);
        assert!(ar.s());
        assert_eq!(ar.dpl(), 3);
        assert!(ar.present());
        assert!(!ar.avl());
        assert!(ar.l());
        assert!(!ar.db());
        assert!(ar.g());
        assert!(!ar.is_unusable());
        assert_eq!(ar.with_type(0x3).0, 0xa0f3);
        assert_eq!(AccessRights::unusable(7).0, AccessRights::UNUSABLE | 0x60);
    }
}
