// SPDX-License-Identifier: GPL-2.0

//! Events as the VMCS describes them (SDM Vol. 3C, "VM-Entry Controls for
//! Event Injection", "Information for VM Exits Due to Vectored Events",
//! "Information for VM Exits That Occur During Event Delivery", and
//! "Guest Non-Register State"): the interruption-information format shared
//! by the VM-entry interruption-information, VM-exit interruption
//! information and IDT-vectoring information fields, and the guest
//! interruptibility state.
//!
//! Owns the bit layout of these fields, and the rules for an exception
//! raised while another event was being delivered ([`merge`]: SDM Vol. 3A,
//! "Conditions for Generating a Double Fault", with VMX's IDT-vectoring
//! information); the exit handler decides what to inject.

/// Event types (interruption-information bits 10:8).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum EventType {
    /// External interrupt.
    ExternalInterrupt = 0,
    /// Type 1, reserved.
    Reserved = 1,
    /// Non-maskable interrupt.
    Nmi = 2,
    /// Hardware exception.
    HardwareException = 3,
    /// Software interrupt (INT n).
    SoftwareInterrupt = 4,
    /// Privileged software exception (INT1).
    PrivilegedSoftwareException = 5,
    /// Software exception (INT3, INTO).
    SoftwareException = 6,
    /// Other event (MTF pending at VM entry).
    Other = 7,
}

impl EventType {
    /// The event type with number `n & 7`.
    pub const fn from_bits(n: u32) -> Self {
        match n & 7 {
            0 => Self::ExternalInterrupt,
            1 => Self::Reserved,
            2 => Self::Nmi,
            3 => Self::HardwareException,
            4 => Self::SoftwareInterrupt,
            5 => Self::PrivilegedSoftwareException,
            6 => Self::SoftwareException,
            _ => Self::Other,
        }
    }
}

/// An interruption-information value: VM-entry interruption information,
/// VM-exit interruption information or IDT-vectoring information.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct InterruptionInfo(pub u32);

impl InterruptionInfo {
    const ERROR_CODE: u32 = 1 << 11;
    const NMI_UNBLOCKING: u32 = 1 << 12;
    const VALID: u32 = 1 << 31;

    /// A valid event: `vector` of type `ty`, delivering an error code if
    /// `error_code` (the code itself lives in its own field).
    pub const fn event(vector: u8, ty: EventType, error_code: bool) -> Self {
        let e = if error_code { Self::ERROR_CODE } else { 0 };
        Self(vector as u32 | ((ty as u32) << 8) | e | Self::VALID)
    }

    /// Bits 7:0: the vector.
    pub const fn vector(self) -> u8 {
        self.0 as u8
    }

    /// Bits 10:8: the event type.
    pub const fn event_type(self) -> EventType {
        EventType::from_bits(self.0 >> 8)
    }

    /// Bit 11: an error code is delivered.
    pub const fn has_error_code(self) -> bool {
        self.0 & Self::ERROR_CODE != 0
    }

    /// Bit 12 (exit and IDT-vectoring information only): NMI unblocking
    /// due to IRET; must be 0 in VM-entry interruption information.
    pub const fn nmi_unblocking(self) -> bool {
        self.0 & Self::NMI_UNBLOCKING != 0
    }

    /// Bit 31: the field holds an event.
    pub const fn is_valid(self) -> bool {
        self.0 & Self::VALID != 0
    }

    /// The same event as VM-entry interruption information: bit 12, which
    /// is reserved there, cleared.  An IDT-vectoring value turned into this
    /// re-injects the event whose delivery a VM exit interrupted.
    #[must_use]
    pub const fn for_entry(self) -> Self {
        Self(self.0 & !Self::NMI_UNBLOCKING)
    }
}

/// The guest interruptibility state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Interruptibility(pub u32);

impl Interruptibility {
    /// Bit 0: blocking by STI.
    pub const STI: u32 = 1 << 0;
    /// Bit 1: blocking by MOV SS (or POP SS).
    pub const MOV_SS: u32 = 1 << 1;
    /// Bit 2: blocking by SMI.
    pub const SMI: u32 = 1 << 2;
    /// Bit 3: blocking by NMI.
    pub const NMI: u32 = 1 << 3;

    /// Blocking by STI.
    pub const fn sti(self) -> bool {
        self.0 & Self::STI != 0
    }

    /// Blocking by MOV SS.
    pub const fn mov_ss(self) -> bool {
        self.0 & Self::MOV_SS != 0
    }

    /// Blocking by NMI.
    pub const fn nmi(self) -> bool {
        self.0 & Self::NMI != 0
    }

    /// The state after the instruction that caused the exit retires: STI
    /// and MOV-SS blocking end with it, everything else stays.
    #[must_use]
    pub const fn after_instruction(self) -> Self {
        Self(self.0 & !(Self::STI | Self::MOV_SS))
    }
}

/// Exception classes for double-fault generation (SDM Vol. 3A, "Interrupt
/// 8—Double Fault Exception (#DF)", table "Interrupt and Exception
/// Classes").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// #DB, NMI, #BP, #OF, #BR, #UD, #NM, coprocessor segment overrun,
    /// #MF, #AC, #MC, #XM, #VE-less vectors, and every interrupt.
    Benign,
    /// #DE, #TS, #NP, #SS, #GP, #CP.
    Contributory,
    /// #PF and #VE.
    PageFault,
    /// #DF itself (a contributory or page fault during its delivery is a
    /// triple fault).
    DoubleFault,
}

/// The class of hardware exception `vector`.
pub const fn class(vector: u8) -> Class {
    match vector {
        0 | 10 | 11 | 12 | 13 | 21 => Class::Contributory,
        14 | 20 => Class::PageFault,
        8 => Class::DoubleFault,
        _ => Class::Benign,
    }
}

/// What to do with an event whose delivery a VM exit interrupted (the
/// IDT-vectoring information) when root mode raises `new` for the same
/// instruction (a #PF for protected memory, a #GP, ...).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Merged {
    /// Inject this exception (vector, error code if any).
    Inject(u8, Option<u32>),
    /// Inject this exception and deliver the interrupted NMI afterwards
    /// (it is not regenerated by re-executing the instruction).
    InjectThenNmi(u8, Option<u32>),
    /// Inject this exception and deliver the interrupted external
    /// interrupt (this vector) afterwards, when the host can take it.
    InjectThenInterrupt(u8, Option<u32>, u8),
    /// A contributory exception or page fault during #DF delivery: the
    /// CPU would shut down (triple fault).
    TripleFault,
}

/// Merges `new` (a hardware exception, with its error code) with `prior`,
/// the IDT-vectoring information of the exit (the event whose delivery was
/// interrupted, invalid if none), per the SDM's "Conditions for Generating
/// a Double Fault":
///
/// * no prior event: `new`;
/// * prior a hardware exception: contributory then contributory, or page
///   fault then contributory or page fault, is a #DF (error code 0); #DF
///   then contributory or page fault is a triple fault; everything else
///   (a benign first, or a benign second) is handled serially: `new` is
///   delivered and the first exception recurs when the instruction is
///   executed again;
/// * prior a software interrupt or exception (INT n, INT3, INTO, INT1):
///   `new`, serially; re-executing the instruction raises it again;
/// * prior an NMI or an external interrupt: `new`, serially, and the
///   interrupted event is kept to be delivered afterwards (it would not be
///   raised again: dropping it would lose an interrupt).
pub const fn merge(prior: InterruptionInfo, new: u8, new_error: Option<u32>) -> Merged {
    if !prior.is_valid() {
        return Merged::Inject(new, new_error);
    }
    match prior.event_type() {
        EventType::HardwareException => match (class(prior.vector()), class(new)) {
            (Class::DoubleFault, Class::Contributory | Class::PageFault | Class::DoubleFault) => {
                Merged::TripleFault
            }
            (Class::Contributory, Class::Contributory)
            | (Class::PageFault, Class::Contributory | Class::PageFault) => {
                Merged::Inject(DF, Some(0))
            }
            _ => Merged::Inject(new, new_error),
        },
        EventType::Nmi => Merged::InjectThenNmi(new, new_error),
        EventType::ExternalInterrupt => Merged::InjectThenInterrupt(new, new_error, prior.vector()),
        _ => Merged::Inject(new, new_error),
    }
}

/// The double-fault vector.
pub const DF: u8 = 8;

/// Whether exception `vector` pushes an error code (#DF, #TS, #NP, #SS,
/// #GP, #PF, #AC, #CP).
pub const fn has_error_code(vector: u8) -> bool {
    matches!(vector, 8 | 10 | 11 | 12 | 13 | 14 | 17 | 21)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn injection_encoding() {
        let gp = InterruptionInfo::event(13, EventType::HardwareException, true);
        assert_eq!(gp.0, 0x8000_0b0d);
        assert!(gp.is_valid() && gp.has_error_code() && !gp.nmi_unblocking());
        assert_eq!(gp.vector(), 13);
        assert_eq!(gp.event_type(), EventType::HardwareException);
        let nmi = InterruptionInfo::event(2, EventType::Nmi, false);
        assert_eq!(nmi.0, 0x8000_0202);
        assert!(!nmi.has_error_code());
        assert!(!InterruptionInfo(0x0b0d).is_valid());
    }

    #[test]
    fn idt_vectoring_reinjection_drops_nmi_unblocking_only() {
        // #PF with error code, NMI unblocking set, interrupted delivery.
        let idt = InterruptionInfo(0x8000_1b0e);
        assert!(idt.nmi_unblocking() && idt.has_error_code());
        let e = idt.for_entry();
        assert_eq!(e.0, 0x8000_0b0e);
        assert_eq!(
            (e.vector(), e.event_type()),
            (14, EventType::HardwareException)
        );
        // A software interrupt keeps its type.
        assert_eq!(
            InterruptionInfo(0x8000_0480).event_type(),
            EventType::SoftwareInterrupt
        );
        for n in 0..8 {
            assert_eq!(EventType::from_bits(n) as u32, n);
        }
    }

    #[test]
    fn interruptibility() {
        let s = Interruptibility(0b1011);
        assert!(s.sti() && s.mov_ss() && s.nmi());
        let a = s.after_instruction();
        assert_eq!(a.0, 0b1000);
        assert!(!a.sti() && !a.mov_ss() && a.nmi());
        assert_eq!(Interruptibility(0b0110).after_instruction().0, 0b0100);
    }

    fn exc(v: u8) -> InterruptionInfo {
        InterruptionInfo::event(v, EventType::HardwareException, has_error_code(v))
    }

    #[test]
    fn classes() {
        for v in 0..=255u8 {
            let c = class(v);
            let want = match v {
                0 | 10..=13 | 21 => Class::Contributory,
                14 | 20 => Class::PageFault,
                8 => Class::DoubleFault,
                _ => Class::Benign,
            };
            assert_eq!(c, want, "{v}");
        }
    }

    #[test]
    fn merge_is_the_double_fault_table() {
        // Exhaustive over every pair of exception vectors.
        for first in 0..32u8 {
            for second in 0..32u8 {
                let err = if has_error_code(second) {
                    Some(0x10)
                } else {
                    None
                };
                let got = merge(exc(first), second, err);
                let want = match (class(first), class(second)) {
                    (Class::DoubleFault, Class::Benign) => Merged::Inject(second, err),
                    (Class::DoubleFault, _) => Merged::TripleFault,
                    (Class::Contributory, Class::Contributory) => Merged::Inject(8, Some(0)),
                    (Class::PageFault, Class::Contributory | Class::PageFault) => {
                        Merged::Inject(8, Some(0))
                    }
                    _ => Merged::Inject(second, err),
                };
                assert_eq!(got, want, "{first} then {second}");
            }
        }
        // The cases of the issue by name: #PF during #PF is #DF; #GP during
        // #PF is #DF; #PF during #GP is serial; #PF during #DF is a triple
        // fault; #PF during #UD (benign) is serial.
        assert_eq!(merge(exc(14), 14, Some(2)), Merged::Inject(8, Some(0)));
        assert_eq!(merge(exc(14), 13, Some(0)), Merged::Inject(8, Some(0)));
        assert_eq!(merge(exc(13), 14, Some(2)), Merged::Inject(14, Some(2)));
        assert_eq!(merge(exc(8), 14, Some(2)), Merged::TripleFault);
        assert_eq!(merge(exc(6), 14, Some(2)), Merged::Inject(14, Some(2)));
    }

    #[test]
    fn merge_keeps_interrupts_and_nmis() {
        for v in 0..=255u8 {
            let none = InterruptionInfo(u32::from(v));
            assert_eq!(
                merge(none, 14, Some(3)),
                Merged::Inject(14, Some(3)),
                "invalid"
            );
            let irq = InterruptionInfo::event(v, EventType::ExternalInterrupt, false);
            assert_eq!(
                merge(irq, 14, Some(3)),
                Merged::InjectThenInterrupt(14, Some(3), v)
            );
            let sw = InterruptionInfo::event(v, EventType::SoftwareInterrupt, false);
            assert_eq!(merge(sw, 14, Some(3)), Merged::Inject(14, Some(3)));
            for ty in [
                EventType::SoftwareException,
                EventType::PrivilegedSoftwareException,
            ] {
                let i = InterruptionInfo::event(v, ty, false);
                assert_eq!(merge(i, 13, Some(0)), Merged::Inject(13, Some(0)));
            }
        }
        let nmi = InterruptionInfo::event(2, EventType::Nmi, false);
        assert_eq!(merge(nmi, 14, Some(3)), Merged::InjectThenNmi(14, Some(3)));
    }

    #[test]
    fn error_codes() {
        let with: std::vec::Vec<u8> = (0..32).filter(|&v| has_error_code(v)).collect();
        assert_eq!(with, [8, 10, 11, 12, 13, 14, 17, 21]);
    }
}
