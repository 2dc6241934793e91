// SPDX-License-Identifier: GPL-2.0

//! The host -> hypervisor hypercall ABI.
//!
//! The host executes VMCALL at CPL 0 with the call number in RAX and
//! arguments in RBX, RCX, RDX, RSI (the register convention of KVM's own
//! hypercalls).  On return RAX holds a non-negative result or a negated
//! errno; other registers are preserved.  VMCALL at CPL 3 gets #UD, as on
//! a CPU without a hypervisor.  Documentation/hypercalls.rst lists the calls.
//!
//! [`call`] parses a number and its arguments into one validated value;
//! [`hostile`] draws the arguments a malicious host might pass.

pub mod call;
// Test-only and debug-build-only: the fuzzers' generator.
#[cfg(any(test, pkvm_debug))]
pub mod hostile;
#[cfg(test)]
mod replay_tests;

/// Hypercall numbers.
pub mod nr {
    /// Returns the ABI version ([`super::ABI_VERSION`]).
    pub const VERSION: u64 = 0;
    /// Leaves VMX operation on the calling CPU as part of the coordinated
    /// teardown of every CPU (module unload): refused (`EPERM`) unless
    /// [`BEGIN_TEARDOWN`] succeeded.  The calling CPU waits in root mode
    /// for every other CPU under the hypervisor to make the same call; the
    /// last one to arrive scrubs the hypervisor's memory and everything
    /// donated to it, then all leave together.  If the others do not come
    /// within a bounded wait, the call fails with `EBUSY` and the CPU stays
    /// deprivileged.
    pub const TEARDOWN_CPU: u64 = 1;
    /// Returns the number of VM exits with basic reason RBX on this CPU
    /// (reasons above the counted range share one counter); RBX = u64::MAX
    /// gives the total.
    pub const EXIT_COUNT: u64 = 2;
    /// Zeroes this CPU's exit counters; returns 0.
    pub const EXIT_COUNT_RESET: u64 = 3;
    /// Returns how many NMIs arrived while this CPU was in root mode (each
    /// was delivered to the host before the next VM entry).
    pub const NMIS_IN_ROOT: u64 = 5;
    /// Invalidates this CPU's EPT-derived translations of the host EPT
    /// (INVEPT single-context); returns 0.
    pub const FLUSH_HOST_EPT: u64 = 4;
    /// Returns how many times a page-state transition hit, in its apply
    /// step, a state its check had ruled out (a hypervisor bug; the
    /// operation stopped there).  Hypervisor-wide; should stay 0.
    pub const INTERNAL_ERRORS: u64 = 6;
    /// Starts the coordinated teardown: refused (`EBUSY`) while any VM
    /// exists (so while any page is guest-owned); afterwards every
    /// page-state call is refused (`EBUSY`) and [`TEARDOWN_CPU`] allowed.
    /// Irreversible; repeating it answers 0.
    pub const BEGIN_TEARDOWN: u64 = 7;
    /// Returns how many CPUs of the host are in VMX operation (nested VMX:
    /// between their VMXON and VMXOFF).  Hypervisor-wide.  The host half
    /// keeps the module from being unloaded while it is not 0.
    pub const VMX_CPUS: u64 = 8;
    /// Nested VMX counters of the calling CPU: RBX selects one
    /// (`crate::hyp::nested::stat`: 0 entries, 1 exits of vmcs02, 2
    /// reflected exits, 3 kept by the hypervisor, 4 protected-memory
    /// touches, 5 failed entries, 6 vmcs02 launches, 7 unexpected; 0x100 +
    /// n: exits of basic reason n reflected; 0x200: host frames pinned
    /// now, hypervisor-wide; 0x300 + p: root-mode cycles of phase p,
    /// `crate::hyp::nested::phase`, debug builds only, 0 otherwise;
    /// 0x600 + i: the shadow EPTs' counters, hypervisor-wide
    /// (`shadow_ept::Stats`, 0x60b the bytes their leaves mapped, 0x60c/0x60d partial drops and the leaves they dropped); 0x610 +
    /// slot: the shadow EPT's cost, `crate::hyp::nested::cost`; 0x620 /
    /// 0x621: the hypervisor pool's pages used / in total), RCX = 1
    /// resets the CPU's counters after reading (not the hypervisor-wide
    /// ones).
    pub const NESTED_STATS: u64 = 9;

    /// Donates RCX pages at PFN RBX to the hypervisor.
    /// host OWNED -> NOPAGE(hyp) / hyp NOPAGE -> OWNED.
    pub const HOST_DONATE_HYP: u64 = 0x10;
    /// Gives RCX hypervisor pages at PFN RBX back to the host.
    /// hyp OWNED -> NOPAGE / host NOPAGE(hyp) -> OWNED.
    pub const HYP_DONATE_HOST: u64 = 0x11;
    /// Shares RCX host pages at PFN RBX with the hypervisor.
    /// host OWNED -> SHARED_OWNED / hyp NOPAGE -> SHARED_BORROWED.
    pub const HOST_SHARE_HYP: u64 = 0x12;
    /// Ends a [`HOST_SHARE_HYP`] share.
    pub const HOST_UNSHARE_HYP: u64 = 0x13;
    /// Donates RCX pages at PFN RBX to the reserve for shadow state
    /// (`crate::hv::mm::reserve`): HOST_DONATE_HYP's transition, then the
    /// reserve takes the batch (the first page is its header).  RCX must
    /// be 2 ..= 512 (`EINVAL`); a frame pinned by nested VMX is `EBUSY`;
    /// every refusal of HOST_DONATE_HYP applies.  Returns the reserve's
    /// free pages in RAX and the pages it still wants in RBX.  Reserve
    /// pages never go back to the host while pkvm is loaded
    /// (HYP_DONATE_HOST answers `EBUSY`); unload scrubs them.
    pub const RESERVE_DONATE: u64 = 0x14;
    /// The reserve: free pages in RAX, pages wanted (to reach the target,
    /// once below the low watermark; else 0) in RBX, pages held in RCX.
    pub const RESERVE_STATUS: u64 = 0x15;
    /// Grows the hypervisor's pool (`crate::hyp::mm::HypMm`, the shadow
    /// EPT's tables and share counts, the host EPT's split tables) by the
    /// 2 MiB chunk at PFN RBX: HOST_DONATE_HYP's transition of its 512
    /// pages, then the allocator takes the chunk for good.  RBX must be
    /// 2 MiB aligned (`EINVAL`); a full pool is `ENOSPC`; a frame pinned by
    /// nested VMX is `EBUSY`; every refusal of HOST_DONATE_HYP applies
    /// (pages that are not all the host's own RAM: nothing changes).
    /// Returns what [`POOL_STATUS`] returns.  Pool chunks never go back
    /// to the host while pkvm is loaded (HYP_DONATE_HOST answers
    /// `EBUSY`); unload scrubs them.
    pub const POOL_GROW: u64 = 0x16;
    /// The pool: free pages in RAX, pages in total in RBX, and in RCX how
    /// many times root mode found it empty, ever (the host half compares
    /// it with the value it saw last: root mode records a shortage, it
    /// never calls the host).
    pub const POOL_STATUS: u64 = 0x17;

    /// Registers a shadow VM for host VM id RBX, kind RCX (0 normal, 1
    /// protected), with RSI metadata pages at PFN RDX donated to the
    /// hypervisor; returns the VM handle.
    pub const VM_CREATE: u64 = 0x20;
    /// Tears down VM RBX: reclaims (zeroing) what it owned, unshares what
    /// it borrowed, returns its metadata pages.
    pub const VM_TEARDOWN: u64 = 0x21;
    /// Shares RSI host pages at PFN RCX with VM RBX at guest frame RDX (RWX).
    /// host OWNED -> SHARED_OWNED / guest NOPAGE -> SHARED_BORROWED.
    pub const HOST_SHARE_GUEST: u64 = 0x22;
    /// Ends a [`HOST_SHARE_GUEST`] share (same arguments).
    pub const HOST_UNSHARE_GUEST: u64 = 0x23;
    /// Donates RSI host pages at PFN RCX to protected VM RBX at guest frame
    /// RDX.  host OWNED -> NOPAGE(guest) / guest NOPAGE -> OWNED.
    pub const HOST_DONATE_GUEST: u64 = 0x24;

    /// Debug only (module parameter `debug`): the host EPT leaf for
    /// physical address RBX in RAX, its level in RBX.
    pub const DEBUG_HOST_EPT_LOOKUP: u64 = 0x40;
    /// Debug only: on behalf of VM RBX, shares RDX of its pages at guest
    /// frame RCX back with the host (what its own VMCALL will do).
    pub const DEBUG_GUEST_SHARE_HOST: u64 = 0x41;
    /// Debug only: on behalf of VM RBX, ends a guest -> host share.
    pub const DEBUG_GUEST_UNSHARE_HOST: u64 = 0x42;
    /// Debug only: runs the ownership invariant checker; 0 or -EFAULT with
    /// the violation kind in RBX and its address in RCX.
    pub const DEBUG_CHECK_INVARIANTS: u64 = 0x43;
    /// Debug only: fills page frame RBX, which the host must not be able
    /// to read (given to the hypervisor or a guest), with the 64-bit
    /// pattern RCX, from root mode: what the shootdown test writes into a
    /// page it just donated, to see whether another CPU still reads it.
    pub const DEBUG_FILL_PAGE: u64 = 0x44;
    /// Debug only: root mode's own page-table entries, on the calling CPU,
    /// for the guard page below its root-mode stack (RAX, zero when
    /// unmapped) and for the stack's lowest page (RBX).
    pub const DEBUG_STACK_GUARD: u64 = 0x45;
    /// Debug only: how many 64-bit words of page frame RBX, which the host
    /// must not be able to read, equal RCX, counted from root mode: what
    /// the shootdown-ordering test looks for in a VM's metadata page (a
    /// write of the host that landed after root mode's own).
    pub const DEBUG_COUNT_WORDS: u64 = 0x46;
    /// Debug only: overflows the calling CPU's root-mode stack into its
    /// guard page on purpose and reports what the #PF saw: 0 in RAX, the
    /// fault address minus the stack's lowest mapped address in RBX (-8:
    /// the first push into the guard page), the top of the interrupt stack
    /// minus the RSP the #PF handler ran on in RCX (the exception frame's
    /// size: it ran on IST1).
    pub const DEBUG_STACK_OVERFLOW: u64 = 0x47;
}

/// Largest page frame number a hypercall accepts (52-bit addresses).
pub const MAX_PFN: u64 = (1 << 40) - 1;

/// Physical address of frame `pfn`, if it is a valid frame number.
pub const fn pfn_to_pa(pfn: u64) -> Option<u64> {
    if pfn > MAX_PFN {
        None
    } else {
        Some(pfn << 12)
    }
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
    /// Bad address.
    pub const EFAULT: i64 = 14;
    /// Invalid argument.
    pub const EINVAL: i64 = 22;
    /// No space left (the pool has its most chunks).
    pub const ENOSPC: i64 = 28;
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
    fn pfn_bounds() {
        assert_eq!(pfn_to_pa(0), Some(0));
        assert_eq!(pfn_to_pa(0x1234), Some(0x123_4000));
        assert_eq!(pfn_to_pa(MAX_PFN), Some(MAX_PFN << 12));
        assert_eq!(pfn_to_pa(MAX_PFN + 1), None);
        assert_eq!(pfn_to_pa(u64::MAX), None);
    }

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
