// SPDX-License-Identifier: GPL-2.0

//! The host -> hypervisor hypercall ABI.
//!
//! The host executes VMCALL at CPL 0 with the call number in RAX and
//! arguments in RBX, RCX, RDX, RSI (the register convention of KVM's own
//! hypercalls).  On return RAX holds a non-negative result or a negated
//! errno; other registers are preserved.  VMCALL at CPL 3 gets #UD, as on
//! a CPU without a hypervisor.  Documentation/hypercalls.rst lists the calls.

/// Hypercall numbers.
pub mod nr {
    /// Returns the ABI version ([`super::ABI_VERSION`]).
    pub const VERSION: u64 = 0;
    /// Leaves VMX operation on the calling CPU and returns to the host in
    /// root mode.  Used by module unload and CPU offlining.
    pub const TEARDOWN_CPU: u64 = 1;
    /// Returns the number of VM exits with basic reason RBX on this CPU
    /// (reasons above the counted range share one counter); RBX = u64::MAX
    /// gives the total.
    pub const EXIT_COUNT: u64 = 2;
    /// Zeroes this CPU's exit counters; returns 0.
    pub const EXIT_COUNT_RESET: u64 = 3;
}

/// Version returned by [`nr::VERSION`].
pub const ABI_VERSION: u64 = 1;

/// Errno values returned (negated) in RAX.
pub mod errno {
    /// Operation not permitted.
    pub const EPERM: i64 = 1;
    /// Out of memory.
    pub const ENOMEM: i64 = 12;
    /// Busy.
    pub const EBUSY: i64 = 16;
    /// Invalid argument.
    pub const EINVAL: i64 = 22;
    /// No such call.
    pub const ENOSYS: i64 = 38;
}

/// Encodes a negated errno for RAX.
pub const fn err(e: i64) -> u64 {
    (-e) as u64
}

/// Decodes RAX on the host side: `Ok(value)` or `Err(errno)`.
pub const fn decode(rax: u64) -> Result<u64, i64> {
    let v = rax as i64;
    if v < 0 && v >= -4095 {
        Err(-v)
    } else {
        Ok(rax)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_roundtrip() {
        assert_eq!(decode(err(errno::EINVAL)), Err(22));
        assert_eq!(decode(err(errno::ENOSYS)), Err(38));
        assert_eq!(decode(0), Ok(0));
        assert_eq!(decode(12345), Ok(12345));
        // Large counters are values, not errors.
        assert_eq!(decode(u64::MAX - 5000), Ok(u64::MAX - 5000));
    }
}
