// SPDX-License-Identifier: GPL-2.0

//! The error type of the page-table engine and of the page-state API.
//!
//! Owns [`Error`] and its mapping to Linux errno values, so that the module
//! can hand a failed hypercall's result to the host as `-errno` without a
//! table of its own.  Every fallible function of `pgtable`, `mem_protect`
//! and `vm_table` returns one of these, never panics.

use core::fmt;

/// Why a page-table or page-state operation was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Error {
    /// A page is not in the state the transition requires, or the caller may
    /// not perform it on this VM (`EPERM`).
    Perm,
    /// Bad argument: unaligned, empty, overflowing or out-of-range address
    /// range, bad permissions, unknown handle format (`EINVAL`).
    Inval,
    /// A table page could not be allocated, or a bounded table is full
    /// (`ENOMEM`).
    NoMem,
    /// The object is in use (e.g. a VM with loaded vCPUs) (`EBUSY`).
    Busy,
    /// The object already exists (e.g. a second shadow VM for one host VM)
    /// (`EEXIST`).
    Exist,
    /// No such object (e.g. an unused VM handle) (`ENOENT`).
    NoEnt,
    /// A table page could not be reached through the memory operations: the
    /// table is corrupt or the memory operations are inconsistent (`EFAULT`).
    Fault,
}

impl Error {
    /// The positive Linux errno for this error (return `-errno` to the host).
    pub const fn errno(self) -> i32 {
        match self {
            Error::Perm => 1,
            Error::NoEnt => 2,
            Error::NoMem => 12,
            Error::Fault => 14,
            Error::Busy => 16,
            Error::Exist => 17,
            Error::Inval => 22,
        }
    }

    /// The errno's symbolic name, for logs.
    pub const fn name(self) -> &'static str {
        match self {
            Error::Perm => "EPERM",
            Error::NoEnt => "ENOENT",
            Error::NoMem => "ENOMEM",
            Error::Fault => "EFAULT",
            Error::Busy => "EBUSY",
            Error::Exist => "EEXIST",
            Error::Inval => "EINVAL",
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name(), self.errno())
    }
}

/// Result of the page-table engine and the page-state API.
pub type Result<T = ()> = core::result::Result<T, Error>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_values_are_linux_values() {
        assert_eq!(Error::Perm.errno(), 1);
        assert_eq!(Error::NoEnt.errno(), 2);
        assert_eq!(Error::NoMem.errno(), 12);
        assert_eq!(Error::Fault.errno(), 14);
        assert_eq!(Error::Busy.errno(), 16);
        assert_eq!(Error::Exist.errno(), 17);
        assert_eq!(Error::Inval.errno(), 22);
        assert_eq!(std::format!("{}", Error::Busy), "EBUSY (16)");
    }
}
