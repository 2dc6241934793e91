// SPDX-License-Identifier: GPL-2.0

//! Parsing of a hypercall: the call number and the four argument registers
//! (RBX, RCX, RDX, RSI) become one [`Call`] with validated arguments, or
//! the errno the host gets back.
//!
//! This is the only place that knows which numbers exist, which arguments
//! each takes and what makes an argument invalid: page frame numbers
//! beyond [`super::MAX_PFN`] and VM kinds other than 0 / 1 are `EINVAL`, handles
//! that do not fit in 32 bits are `EINVAL`, unknown numbers are `ENOSYS`,
//! debug-only calls are `EPERM` unless the module's `debug` parameter is on
//! (checked before their arguments).  Root mode dispatches the result with
//! one exhaustive `match` (`crate::hyp::exit_handler`); the hostile-argument
//! replay tests parse through here too.  What a valid call then does to page
//! states (and the errors that brings) belongs to `crate::hv::mm`.
//!
//! Address fields are physical addresses (`hpa` of host memory, `gpa` of a
//! guest), already converted from the frame numbers the ABI passes.

use super::{err, errno, nr, pfn_to_pa};
use crate::hv::error::Error;
use crate::hv::mm::addr::{Gpa, Hpa};
use crate::hv::mm::mem_protect::VmKind;

/// A parsed hypercall.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Call {
    /// [`nr::VERSION`].
    Version,
    /// [`nr::TEARDOWN_CPU`].
    TeardownCpu,
    /// [`nr::EXIT_COUNT`]: the counter of basic reason `reason`, or the
    /// total when `reason` is `None` (RBX = `u64::MAX`).
    ExitCount {
        /// Basic exit reason (any value; large ones share a counter).
        reason: Option<u64>,
    },
    /// [`nr::EXIT_COUNT_RESET`].
    ExitCountReset,
    /// [`nr::FLUSH_HOST_EPT`].
    FlushHostEpt,
    /// [`nr::NMIS_IN_ROOT`].
    NmisInRoot,
    /// [`nr::INTERNAL_ERRORS`].
    InternalErrors,
    /// [`nr::BEGIN_TEARDOWN`].
    BeginTeardown,
    /// [`nr::VMX_CPUS`].
    VmxCpus,
    /// [`nr::NESTED_STATS`].
    NestedStats {
        /// Which counter.
        which: u64,
        /// Reset this CPU's counters after reading.
        reset: bool,
    },
    /// [`nr::HOST_DONATE_HYP`].
    HostDonateHyp {
        /// First host page.
        hpa: Hpa,
        /// Number of pages (checked by the transition).
        pages: u64,
    },
    /// [`nr::HYP_DONATE_HOST`].
    HypDonateHost {
        /// First page.
        hpa: Hpa,
        /// Number of pages.
        pages: u64,
    },
    /// [`nr::HOST_SHARE_HYP`].
    HostShareHyp {
        /// First host page.
        hpa: Hpa,
        /// Number of pages.
        pages: u64,
    },
    /// [`nr::HOST_UNSHARE_HYP`].
    HostUnshareHyp {
        /// First host page.
        hpa: Hpa,
        /// Number of pages.
        pages: u64,
    },
    /// [`nr::RESERVE_DONATE`].
    ReserveDonate {
        /// First host page of the batch.
        hpa: Hpa,
        /// Number of pages (checked by the reserve).
        pages: u64,
    },
    /// [`nr::RESERVE_STATUS`].
    ReserveStatus,
    /// [`nr::POOL_GROW`].
    PoolGrow {
        /// First host page of the chunk (alignment checked by the pool).
        hpa: Hpa,
    },
    /// [`nr::POOL_STATUS`].
    PoolStatus,
    /// [`nr::VM_CREATE`].
    VmCreate {
        /// The host's own id for the VM (opaque to the hypervisor).
        host_vm_id: u64,
        /// Normal or protected.
        kind: VmKind,
        /// First of the metadata pages the host donates.
        hpa: Hpa,
        /// Number of metadata pages.
        pages: u64,
    },
    /// [`nr::VM_TEARDOWN`].
    VmTeardown {
        /// VM handle.
        handle: u32,
    },
    /// [`nr::HOST_SHARE_GUEST`].
    HostShareGuest {
        /// VM handle.
        handle: u32,
        /// First host page.
        hpa: Hpa,
        /// First guest page.
        gpa: Gpa,
        /// Number of pages.
        pages: u64,
    },
    /// [`nr::HOST_UNSHARE_GUEST`].
    HostUnshareGuest {
        /// VM handle.
        handle: u32,
        /// First host page.
        hpa: Hpa,
        /// First guest page.
        gpa: Gpa,
        /// Number of pages.
        pages: u64,
    },
    /// [`nr::HOST_DONATE_GUEST`].
    HostDonateGuest {
        /// VM handle.
        handle: u32,
        /// First host page.
        hpa: Hpa,
        /// First guest page.
        gpa: Gpa,
        /// Number of pages.
        pages: u64,
    },
    /// [`nr::DEBUG_HOST_EPT_LOOKUP`] (debug only).
    DebugHostEptLookup {
        /// The physical address to look up, as passed (a byte address,
        /// not a frame; the walk itself rejects what the table cannot
        /// map).
        hpa: Hpa,
    },
    /// [`nr::DEBUG_GUEST_SHARE_HOST`] (debug only).
    DebugGuestShareHost {
        /// VM handle.
        handle: u32,
        /// First guest page.
        gpa: Gpa,
        /// Number of pages.
        pages: u64,
    },
    /// [`nr::DEBUG_GUEST_UNSHARE_HOST`] (debug only).
    DebugGuestUnshareHost {
        /// VM handle.
        handle: u32,
        /// First guest page.
        gpa: Gpa,
        /// Number of pages.
        pages: u64,
    },
    /// [`nr::DEBUG_CHECK_INVARIANTS`] (debug only).
    DebugCheckInvariants,
    /// [`nr::DEBUG_FILL_PAGE`] (debug only).
    DebugFillPage {
        /// The page to fill.
        hpa: Hpa,
        /// The pattern written to every 64-bit word.
        value: u64,
    },
    /// [`nr::DEBUG_STACK_GUARD`] (debug only).
    DebugStackGuard,
    /// [`nr::DEBUG_COUNT_WORDS`] (debug only).
    DebugCountWords {
        /// The page to look at.
        hpa: Hpa,
        /// The 64-bit value counted.
        value: u64,
    },
    /// [`nr::DEBUG_STACK_OVERFLOW`] (debug only).
    DebugStackOverflow,
}

/// Host-physical address of frame `pfn`, or `EINVAL`.
fn pa(pfn: u64) -> Result<Hpa, i64> {
    pfn_to_pa(pfn).and_then(Hpa::new).ok_or(errno::EINVAL)
}

/// Guest-physical address of guest frame `gfn`, or `EINVAL`.
fn gpa(gfn: u64) -> Result<Gpa, i64> {
    pfn_to_pa(gfn).and_then(Gpa::new).ok_or(errno::EINVAL)
}

/// A VM handle, or `EINVAL` if it does not fit in 32 bits.
fn handle(v: u64) -> Result<u32, i64> {
    u32::try_from(v).map_err(|_| errno::EINVAL)
}

/// Whether call `call` is one of the debug-only calls.
pub const fn is_debug_only(call: u64) -> bool {
    matches!(
        call,
        nr::DEBUG_HOST_EPT_LOOKUP
            | nr::DEBUG_GUEST_SHARE_HOST
            | nr::DEBUG_GUEST_UNSHARE_HOST
            | nr::DEBUG_CHECK_INVARIANTS
            | nr::DEBUG_FILL_PAGE
            | nr::DEBUG_STACK_GUARD
            | nr::DEBUG_COUNT_WORDS
            | nr::DEBUG_STACK_OVERFLOW
    )
}

/// Whether the debug-only calls exist in this build and are enabled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DebugCalls {
    /// A production build: the calls do not exist (`ENOSYS`), their code
    /// is not compiled in.
    NotBuilt,
    /// A debug build loaded without `debug=1`: refused (`EPERM`).
    Off,
    /// A debug build loaded with `debug=1`: parsed like any other call.
    On,
}

impl Call {
    /// Parses call `call` with arguments `a` (RBX, RCX, RDX, RSI); `debug`
    /// says whether the debug-only calls exist and are allowed.  The error
    /// is the (positive) errno for RAX.
    pub fn parse(call: u64, a: [u64; 4], debug: DebugCalls) -> Result<Self, i64> {
        if is_debug_only(call) {
            match debug {
                DebugCalls::NotBuilt => return Err(errno::ENOSYS),
                DebugCalls::Off => return Err(errno::EPERM),
                DebugCalls::On => {}
            }
        }
        let [a0, a1, a2, a3] = a;
        Ok(match call {
            nr::VERSION => Self::Version,
            nr::TEARDOWN_CPU => Self::TeardownCpu,
            nr::EXIT_COUNT => Self::ExitCount {
                reason: if a0 == u64::MAX { None } else { Some(a0) },
            },
            nr::EXIT_COUNT_RESET => Self::ExitCountReset,
            nr::FLUSH_HOST_EPT => Self::FlushHostEpt,
            nr::NMIS_IN_ROOT => Self::NmisInRoot,
            nr::INTERNAL_ERRORS => Self::InternalErrors,
            nr::BEGIN_TEARDOWN => Self::BeginTeardown,
            nr::VMX_CPUS => Self::VmxCpus,
            nr::NESTED_STATS => Self::NestedStats {
                which: a0,
                reset: a1 == 1,
            },
            nr::HOST_DONATE_HYP => Self::HostDonateHyp {
                hpa: pa(a0)?,
                pages: a1,
            },
            nr::HYP_DONATE_HOST => Self::HypDonateHost {
                hpa: pa(a0)?,
                pages: a1,
            },
            nr::HOST_SHARE_HYP => Self::HostShareHyp {
                hpa: pa(a0)?,
                pages: a1,
            },
            nr::HOST_UNSHARE_HYP => Self::HostUnshareHyp {
                hpa: pa(a0)?,
                pages: a1,
            },
            nr::RESERVE_DONATE => Self::ReserveDonate {
                hpa: pa(a0)?,
                pages: a1,
            },
            nr::RESERVE_STATUS => Self::ReserveStatus,
            nr::POOL_GROW => Self::PoolGrow { hpa: pa(a0)? },
            nr::POOL_STATUS => Self::PoolStatus,
            nr::VM_CREATE => Self::VmCreate {
                host_vm_id: a0,
                kind: match a1 {
                    0 => VmKind::Normal,
                    1 => VmKind::Protected,
                    _ => return Err(errno::EINVAL),
                },
                hpa: pa(a2)?,
                pages: a3,
            },
            nr::VM_TEARDOWN => Self::VmTeardown {
                handle: handle(a0)?,
            },
            nr::HOST_SHARE_GUEST => Self::HostShareGuest {
                handle: handle(a0)?,
                hpa: pa(a1)?,
                gpa: gpa(a2)?,
                pages: a3,
            },
            nr::HOST_UNSHARE_GUEST => Self::HostUnshareGuest {
                handle: handle(a0)?,
                hpa: pa(a1)?,
                gpa: gpa(a2)?,
                pages: a3,
            },
            nr::HOST_DONATE_GUEST => Self::HostDonateGuest {
                handle: handle(a0)?,
                hpa: pa(a1)?,
                gpa: gpa(a2)?,
                pages: a3,
            },
            nr::DEBUG_HOST_EPT_LOOKUP => Self::DebugHostEptLookup {
                hpa: Hpa::new(a0).ok_or(errno::EINVAL)?,
            },
            nr::DEBUG_GUEST_SHARE_HOST => Self::DebugGuestShareHost {
                handle: handle(a0)?,
                gpa: gpa(a1)?,
                pages: a2,
            },
            nr::DEBUG_GUEST_UNSHARE_HOST => Self::DebugGuestUnshareHost {
                handle: handle(a0)?,
                gpa: gpa(a1)?,
                pages: a2,
            },
            nr::DEBUG_CHECK_INVARIANTS => Self::DebugCheckInvariants,
            nr::DEBUG_FILL_PAGE => Self::DebugFillPage {
                hpa: pa(a0)?,
                value: a1,
            },
            nr::DEBUG_STACK_GUARD => Self::DebugStackGuard,
            nr::DEBUG_COUNT_WORDS => Self::DebugCountWords {
                hpa: pa(a0)?,
                value: a1,
            },
            nr::DEBUG_STACK_OVERFLOW => Self::DebugStackOverflow,
            _ => return Err(errno::ENOSYS),
        })
    }
}

/// What a hypercall hands back: RAX, optionally RBX / RCX.  (Nothing about
/// flushing: a page-state change that takes access from the host has
/// invalidated it on every CPU before it returns, inside the transition;
/// see `crate::hv::mm::pgtable`, "Publication".)
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reply {
    /// Value for RAX: a result or a negated errno.
    pub rax: u64,
    /// Value for RBX, if the call returns one.
    pub rbx: Option<u64>,
    /// Value for RCX, if the call returns one.
    pub rcx: Option<u64>,
}

impl Reply {
    /// A plain result in RAX.
    pub const fn val(rax: u64) -> Self {
        Self {
            rax,
            rbx: None,
            rcx: None,
        }
    }

    /// The (positive) errno `e`, negated in RAX.
    pub const fn errno(e: i64) -> Self {
        Self::val(err(e))
    }

    /// The outcome of a page-state operation: 0 or its errno.
    pub const fn from(r: Result<(), Error>) -> Self {
        match r {
            Ok(()) => Self::val(0),
            Err(e) => Self::errno(e.errno() as i64),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::hv::hypercall::MAX_PFN;
    use crate::hv::mm::addr::lit::{gpa as g, hpa as h};

    const GOOD_PFN: u64 = 0x1234;
    const GOOD_PA: u64 = 0x123_4000;
    const BAD_PFN: u64 = MAX_PFN + 1;

    fn p(call: u64, a: [u64; 4]) -> Result<Call, i64> {
        Call::parse(call, a, DebugCalls::On)
    }

    #[test]
    fn argumentless_calls_ignore_their_registers() {
        for junk in [[0; 4], [u64::MAX; 4], [1, 2, 3, 4]] {
            assert_eq!(p(nr::VERSION, junk), Ok(Call::Version));
            assert_eq!(p(nr::TEARDOWN_CPU, junk), Ok(Call::TeardownCpu));
            assert_eq!(p(nr::EXIT_COUNT_RESET, junk), Ok(Call::ExitCountReset));
            assert_eq!(p(nr::FLUSH_HOST_EPT, junk), Ok(Call::FlushHostEpt));
            assert_eq!(p(nr::NMIS_IN_ROOT, junk), Ok(Call::NmisInRoot));
            assert_eq!(p(nr::INTERNAL_ERRORS, junk), Ok(Call::InternalErrors));
            assert_eq!(p(nr::BEGIN_TEARDOWN, junk), Ok(Call::BeginTeardown));
            assert_eq!(
                p(nr::DEBUG_CHECK_INVARIANTS, junk),
                Ok(Call::DebugCheckInvariants)
            );
            assert_eq!(p(nr::DEBUG_STACK_GUARD, junk), Ok(Call::DebugStackGuard));
            assert_eq!(
                p(nr::DEBUG_STACK_OVERFLOW, junk),
                Ok(Call::DebugStackOverflow)
            );
        }
    }

    #[test]
    fn exit_count_total_or_reason() {
        assert_eq!(
            p(nr::EXIT_COUNT, [u64::MAX, 0, 0, 0]),
            Ok(Call::ExitCount { reason: None })
        );
        for r in [0, 10, 1000, u64::MAX - 1] {
            assert_eq!(
                p(nr::EXIT_COUNT, [r, 9, 9, 9]),
                Ok(Call::ExitCount { reason: Some(r) })
            );
        }
    }

    #[test]
    fn host_hyp_calls_take_a_frame_and_a_raw_count() {
        type Mk = fn(u64, u64) -> Call;
        let cases: [(u64, Mk); 5] = [
            (nr::RESERVE_DONATE, |hpa, pages| Call::ReserveDonate {
                hpa: h(hpa),
                pages,
            }),
            (nr::HOST_DONATE_HYP, |hpa, pages| Call::HostDonateHyp {
                hpa: h(hpa),
                pages,
            }),
            (nr::HYP_DONATE_HOST, |hpa, pages| Call::HypDonateHost {
                hpa: h(hpa),
                pages,
            }),
            (nr::HOST_SHARE_HYP, |hpa, pages| Call::HostShareHyp {
                hpa: h(hpa),
                pages,
            }),
            (nr::HOST_UNSHARE_HYP, |hpa, pages| Call::HostUnshareHyp {
                hpa: h(hpa),
                pages,
            }),
        ];
        for (n, mk) in cases {
            assert_eq!(p(n, [GOOD_PFN, 3, 7, 8]), Ok(mk(GOOD_PA, 3)));
            // Counts are the transition's business (0 and huge ones too).
            assert_eq!(p(n, [GOOD_PFN, 0, 0, 0]), Ok(mk(GOOD_PA, 0)));
            assert_eq!(p(n, [GOOD_PFN, u64::MAX, 0, 0]), Ok(mk(GOOD_PA, u64::MAX)));
            assert_eq!(p(n, [MAX_PFN, 1, 0, 0]), Ok(mk(MAX_PFN << 12, 1)));
            assert_eq!(p(n, [BAD_PFN, 1, 0, 0]), Err(errno::EINVAL));
            assert_eq!(p(n, [u64::MAX, 1, 0, 0]), Err(errno::EINVAL));
        }
    }

    #[test]
    fn pool_calls_take_a_frame_only() {
        assert_eq!(
            p(nr::POOL_GROW, [GOOD_PFN, 7, 7, 7]),
            Ok(Call::PoolGrow { hpa: h(GOOD_PA) })
        );
        // Alignment is the pool's business; absurd frames are the parser's.
        assert_eq!(
            p(nr::POOL_GROW, [GOOD_PFN + 1, 0, 0, 0]),
            Ok(Call::PoolGrow {
                hpa: h(GOOD_PA + 4096)
            })
        );
        assert_eq!(p(nr::POOL_GROW, [BAD_PFN, 0, 0, 0]), Err(errno::EINVAL));
        assert_eq!(p(nr::POOL_STATUS, [9, 9, 9, 9]), Ok(Call::PoolStatus));
        assert!(!is_debug_only(nr::POOL_GROW));
        assert!(!is_debug_only(nr::POOL_STATUS));
    }

    #[test]
    fn vm_create_checks_kind_and_metadata_frame() {
        assert_eq!(
            p(nr::VM_CREATE, [u64::MAX, 0, GOOD_PFN, 2]),
            Ok(Call::VmCreate {
                host_vm_id: u64::MAX,
                kind: VmKind::Normal,
                hpa: h(GOOD_PA),
                pages: 2
            })
        );
        assert_eq!(
            p(nr::VM_CREATE, [7, 1, GOOD_PFN, 1]),
            Ok(Call::VmCreate {
                host_vm_id: 7,
                kind: VmKind::Protected,
                hpa: h(GOOD_PA),
                pages: 1
            })
        );
        for kind in [2, 3, u64::MAX] {
            assert_eq!(p(nr::VM_CREATE, [7, kind, GOOD_PFN, 1]), Err(errno::EINVAL));
        }
        assert_eq!(p(nr::VM_CREATE, [7, 0, BAD_PFN, 1]), Err(errno::EINVAL));
    }

    #[test]
    fn handles_must_fit_in_32_bits() {
        assert_eq!(
            p(nr::VM_TEARDOWN, [0xffff_ffff, 0, 0, 0]),
            Ok(Call::VmTeardown {
                handle: 0xffff_ffff
            })
        );
        assert_eq!(p(nr::VM_TEARDOWN, [1 << 32, 0, 0, 0]), Err(errno::EINVAL));
        for n in [
            nr::HOST_SHARE_GUEST,
            nr::HOST_UNSHARE_GUEST,
            nr::HOST_DONATE_GUEST,
            nr::DEBUG_GUEST_SHARE_HOST,
            nr::DEBUG_GUEST_UNSHARE_HOST,
        ] {
            assert!(p(n, [0x1000, GOOD_PFN, 5, 1]).is_ok(), "{n:#x}");
            assert_eq!(p(n, [1 << 32, GOOD_PFN, 5, 1]), Err(errno::EINVAL));
        }
    }

    #[test]
    fn host_guest_calls_check_both_frames() {
        type Mk = fn(u32, u64, u64, u64) -> Call;
        let cases: [(u64, Mk); 3] = [
            (nr::HOST_SHARE_GUEST, |handle, hpa, gpa, pages| {
                Call::HostShareGuest {
                    handle,
                    hpa: h(hpa),
                    gpa: g(gpa),
                    pages,
                }
            }),
            (nr::HOST_UNSHARE_GUEST, |handle, hpa, gpa, pages| {
                Call::HostUnshareGuest {
                    handle,
                    hpa: h(hpa),
                    gpa: g(gpa),
                    pages,
                }
            }),
            (nr::HOST_DONATE_GUEST, |handle, hpa, gpa, pages| {
                Call::HostDonateGuest {
                    handle,
                    hpa: h(hpa),
                    gpa: g(gpa),
                    pages,
                }
            }),
        ];
        for (n, mk) in cases {
            assert_eq!(
                p(n, [0x1001, GOOD_PFN, 5, 9]),
                Ok(mk(0x1001, GOOD_PA, 0x5000, 9))
            );
            assert_eq!(p(n, [0x1001, BAD_PFN, 5, 9]), Err(errno::EINVAL));
            assert_eq!(p(n, [0x1001, GOOD_PFN, BAD_PFN, 9]), Err(errno::EINVAL));
        }
    }

    #[test]
    fn debug_calls_need_debug_and_then_check_arguments() {
        for n in [
            nr::DEBUG_HOST_EPT_LOOKUP,
            nr::DEBUG_GUEST_SHARE_HOST,
            nr::DEBUG_GUEST_UNSHARE_HOST,
            nr::DEBUG_CHECK_INVARIANTS,
            nr::DEBUG_FILL_PAGE,
            nr::DEBUG_STACK_GUARD,
            nr::DEBUG_COUNT_WORDS,
            nr::DEBUG_STACK_OVERFLOW,
        ] {
            assert!(is_debug_only(n));
            // EPERM first, whatever the arguments.
            assert_eq!(Call::parse(n, [0; 4], DebugCalls::Off), Err(errno::EPERM));
            assert_eq!(
                Call::parse(n, [u64::MAX; 4], DebugCalls::Off),
                Err(errno::EPERM)
            );
            // A production build does not have them at all.
            assert_eq!(
                Call::parse(n, [0; 4], DebugCalls::NotBuilt),
                Err(errno::ENOSYS)
            );
        }
        // The lookup takes a byte address, unconverted.
        assert_eq!(
            p(nr::DEBUG_HOST_EPT_LOOKUP, [0x1234_5678, 0, 0, 0]),
            Ok(Call::DebugHostEptLookup {
                hpa: h(0x1234_5678)
            })
        );
        assert_eq!(
            p(nr::DEBUG_GUEST_SHARE_HOST, [0x1000, 3, 2, 0]),
            Ok(Call::DebugGuestShareHost {
                handle: 0x1000,
                gpa: g(0x3000),
                pages: 2
            })
        );
        assert_eq!(
            p(nr::DEBUG_GUEST_UNSHARE_HOST, [0x1000, 3, 2, 0]),
            Ok(Call::DebugGuestUnshareHost {
                handle: 0x1000,
                gpa: g(0x3000),
                pages: 2
            })
        );
        assert_eq!(
            p(nr::DEBUG_GUEST_SHARE_HOST, [0x1000, BAD_PFN, 2, 0]),
            Err(errno::EINVAL)
        );
        assert_eq!(
            p(nr::DEBUG_COUNT_WORDS, [GOOD_PFN, u64::MAX, 9, 9]),
            Ok(Call::DebugCountWords {
                hpa: h(GOOD_PA),
                value: u64::MAX
            })
        );
        assert_eq!(
            p(nr::DEBUG_COUNT_WORDS, [BAD_PFN, 0, 0, 0]),
            Err(errno::EINVAL)
        );
        // Not debug-only: allowed either way.
        for n in [nr::VERSION, nr::HOST_DONATE_HYP, nr::INTERNAL_ERRORS] {
            assert!(!is_debug_only(n));
            assert!(Call::parse(n, [1, 1, 1, 1], DebugCalls::NotBuilt).is_ok());
        }
    }

    #[test]
    fn every_known_number_parses_and_the_rest_is_enosys() {
        let known = [
            nr::VERSION,
            nr::TEARDOWN_CPU,
            nr::EXIT_COUNT,
            nr::EXIT_COUNT_RESET,
            nr::FLUSH_HOST_EPT,
            nr::NMIS_IN_ROOT,
            nr::INTERNAL_ERRORS,
            nr::BEGIN_TEARDOWN,
            nr::VMX_CPUS,
            nr::NESTED_STATS,
            nr::HOST_DONATE_HYP,
            nr::HYP_DONATE_HOST,
            nr::HOST_SHARE_HYP,
            nr::HOST_UNSHARE_HYP,
            nr::RESERVE_DONATE,
            nr::RESERVE_STATUS,
            nr::POOL_GROW,
            nr::POOL_STATUS,
            nr::VM_CREATE,
            nr::VM_TEARDOWN,
            nr::HOST_SHARE_GUEST,
            nr::HOST_UNSHARE_GUEST,
            nr::HOST_DONATE_GUEST,
            nr::DEBUG_HOST_EPT_LOOKUP,
            nr::DEBUG_GUEST_SHARE_HOST,
            nr::DEBUG_GUEST_UNSHARE_HOST,
            nr::DEBUG_CHECK_INVARIANTS,
            nr::DEBUG_FILL_PAGE,
            nr::DEBUG_STACK_GUARD,
            nr::DEBUG_COUNT_WORDS,
            nr::DEBUG_STACK_OVERFLOW,
        ];
        // Plausible arguments for every call: frame 1, kind 0, handle 0x1000.
        for n in known {
            assert!(p(n, [0x1000, 0, 1, 1]).is_ok(), "{n:#x}");
        }
        for n in (0..0x100u64).chain([0x7777, 1 << 32, u64::MAX]) {
            if !known.contains(&n) {
                assert_eq!(p(n, [0x1000, 0, 1, 1]), Err(errno::ENOSYS), "{n:#x}");
                assert_eq!(
                    Call::parse(n, [0; 4], DebugCalls::NotBuilt),
                    Err(errno::ENOSYS)
                );
            }
        }
    }

    #[test]
    fn replies() {
        assert_eq!(Reply::val(5).rax, 5);
        assert_eq!(Reply::errno(errno::EINVAL).rax, err(errno::EINVAL));
        assert_eq!(Reply::from(Ok(())), Reply::val(0));
        let e = Reply::from(Err(Error::NoMem));
        assert_eq!(e.rax, err(errno::ENOMEM));
        assert_eq!((e.rbx, e.rcx), (None, None));
    }
}
