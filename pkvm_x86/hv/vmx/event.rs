// SPDX-License-Identifier: GPL-2.0

//! Events as the VMCS describes them (SDM Vol. 3C, "VM-Entry Controls for
//! Event Injection", "Information for VM Exits Due to Vectored Events",
//! "Information for VM Exits That Occur During Event Delivery", and
//! "Guest Non-Register State"): the interruption-information format shared
//! by the VM-entry interruption-information, VM-exit interruption
//! information and IDT-vectoring information fields, and the guest
//! interruptibility state.
//!
//! Owns the bit layout of these fields; the exit handler decides what to
//! inject.

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
}
