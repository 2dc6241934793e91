// SPDX-License-Identifier: GPL-2.0

//! pkvm_x86: a protected KVM for Intel VT-x.
//!
//! Crate root for Kbuild.  At load the module checks that every CPU can run
//! pkvm (VMX on and configured, EPT with 4-level walks and 2M/1G pages,
//! INVEPT, unrestricted guest, VMCS shadowing, ...), takes a pool of memory
//! for the hypervisor, builds the host EPT and root mode's own page table,
//! and deprivileges every CPU (and every CPU brought online later): the
//! running kernel continues in VMX non-root mode under the hypervisor, which
//! owns root mode and decides which pages the host may touch.  Unload gives
//! every CPU root mode back.  Status and decoded capabilities are in debugfs
//! at `/sys/kernel/debug/pkvm_x86/` (`vmcs_fields`: which fields of the
//! VMCS table the CPU has); with `debug=1` a debug interface drives
//! the page-state hypercalls from user space (tests only).
//!
//! Layout (Documentation/architecture.rst): `hv` is the pure core (also
//! built by Cargo for tests), `arch` the leaves that execute CPU
//! instructions, `hyp` the code that runs in VMX root mode, `host` the
//! host-side glue that uses `kernel::`.

use kernel::{debugfs, prelude::*};
#[cfg(pkvm_debug)]
use kernel::{new_mutex, sync::Mutex};

pub mod arch;
mod host;
pub mod hv;
pub mod hyp;

#[cfg(pkvm_debug)]
use host::debug_iface;
use host::{cpu_caps, hyp_client, hypervisor};

use hv::vmx::caps::{VmxCaps, VMX_MSR_COUNT};

module! {
    type: PkvmX86,
    name: "pkvm_x86",
    authors: ["pkvm-x86 developers"],
    description: "Protected KVM for Intel VT-x",
    license: "GPL",
    params: {
        pool_mb: u32 {
            default: 4,
            description: "MiB of memory the hypervisor takes at load (rounded up to 2 MiB); it grows on demand up to pool_max_mb",
        },
        pool_max_mb: u32 {
            default: 1024,
            description: "Most MiB the hypervisor's pool grows to at run time (pool_mb..=1024; shadow EPT tables, share counts, host EPT splits)",
        },
        test_fail_cpu: i32 {
            default: -1,
            description: "Tests only: make deprivileging fail on this CPU, to exercise the roll-back",
        },
        nested_ept: u32 {
            default: 1,
            description: "1 (default) offers EPT and unrestricted guest to the host's KVM, run on shadow EPTs (Documentation/shadow-ept.rst); 0 hides them (KVM uses its own shadow paging); read once at load",
        },
        debug: u32 {
            default: 0,
            description: "1 enables the debug interface (debugfs pkvm_x86/debug/, debug hypercalls); debug builds only (PKVM_DEBUG=1), root only, for tests",
        },
    },
}

/// The pure core's errors carry their errno; `?` turns them into kernel
/// errors in the host-side glue.
impl From<hv::error::Error> for Error {
    fn from(e: hv::error::Error) -> Self {
        Error::from_errno(-e.errno())
    }
}

/// Raw capability MSRs as read, for the `raw_msrs` debugfs file.
struct RawMsrs([Option<u64>; VMX_MSR_COUNT]);

/// The debug interface's directory and `ctl` file (debug builds only: a
/// production build compiles none of the debug interface, and this type
/// has no values).
#[cfg(pkvm_debug)]
type DebugFiles = (
    debugfs::Dir,
    Pin<KBox<debugfs::File<Mutex<debug_iface::DebugState>>>>,
);
#[cfg(not(pkvm_debug))]
type DebugFiles = core::convert::Infallible;

/// What the `status` debugfs file shows (fixed at load; the file adds the
/// live `internal_errors:` line).
struct Status {
    cpus: u32,
    pool_used: usize,
    pool_total: usize,
    launch_total_ns: u64,
    launch_max_cpu_ns: u64,
}

// Fields drop in declaration order: the debugfs files (whose readers may
// issue hypercalls) go first, the hypervisor last.
struct PkvmX86 {
    _caps: Pin<KBox<debugfs::File<VmxCaps>>>,
    _raw: Pin<KBox<debugfs::File<RawMsrs>>>,
    _cpus: Pin<KBox<debugfs::File<u32>>>,
    _status: Pin<KBox<debugfs::File<Status>>>,
    _exits: Pin<KBox<debugfs::File<()>>>,
    _vmcs_fields: Pin<KBox<debugfs::File<()>>>,
    _debug: Option<DebugFiles>,
    _dir: debugfs::Dir,
    /// Holds this module while the host is in VMX operation.
    _vmx_busy: host::vmx_busy::Guard,
    /// Re-privileges every CPU when dropped (module unload).
    _hyp: hypervisor::Hypervisor,
}

/// Prints the exit counters of every online (hence deprivileged) CPU,
/// summed, as `reason count` lines.
fn write_exits(_: &(), f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
    let mut sum: hyp_client::ExitCounts = [0; hv::vmx::exit::reason::MAX as usize + 2];
    // With hotplug held off, every online CPU has been through the
    // hypervisor's online callback.
    let _hotplug = cpu_caps::CpusReadGuard::new();
    for cpu in cpu_caps::online_cpus() {
        let c = hyp_client::exit_counts(cpu).map_err(|_| core::fmt::Error)?;
        writeln!(f, "cpu{cpu}_total {}", c[c.len() - 1])?;
        for (s, v) in sum.iter_mut().zip(c.iter()) {
            *s = s.wrapping_add(*v);
        }
    }
    let last = sum.len() - 1;
    for (r, &n) in sum.iter().enumerate().take(last) {
        if n != 0 {
            writeln!(f, "{} {n}", hv::vmx::exit::reason_name(r as u16))?;
        }
    }
    writeln!(f, "total {}", sum[last])
}

/// Warns in the kernel log if the hypervisor counted internal errors
/// (hypervisor bugs caught by a page-state apply step); returns the count.
fn check_internal_errors() -> Result<u64> {
    let n = hyp_client::internal_errors()?;
    if n != 0 {
        pr_warn!("hypervisor internal errors: {} (a hypervisor bug; see INTERNAL_ERRORS in Documentation/hypercalls.rst)\n", n);
    }
    Ok(n)
}

/// The pool now (POOL_STATUS; the `pool_pages_*` lines before it are the
/// figures at load): free and total pages, root mode's shortages, chunks
/// the host half added.
fn write_pool_now(f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
    let st = host::reserve::pool_status().map_err(|_| core::fmt::Error)?;
    writeln!(f, "pool_pages_free_now: {}", st.free)?;
    writeln!(f, "pool_pages_total_now: {}", st.total)?;
    writeln!(f, "pool_shortages: {}", st.shortages)?;
    writeln!(f, "pool_chunks_grown: {}", host::reserve::pool_grown())
}

/// The `internal_errors:` line of the status file, asked of the hypervisor
/// at each read (live, unlike the load-time lines above it).
fn write_internal_errors(f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
    let n = check_internal_errors().map_err(|_| core::fmt::Error)?;
    writeln!(f, "internal_errors: {n}")
}

/// Prints every field of the VMCS table with what VMREAD of it did at the
/// first launch: `name encoding ok|unsupported|failed|unprobed used|-`
/// (`used`: pkvm reads or writes the field).
fn write_vmcs_fields(_: &(), f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
    use host::launch::{field_probe, PROBE_FAILED, PROBE_OK, PROBE_UNSUPPORTED};
    use hv::vmx::vmcs::{Marks, FIELDS};
    for (i, row) in FIELDS.iter().enumerate() {
        let probe = match field_probe(i) {
            PROBE_OK => "ok",
            PROBE_UNSUPPORTED => "unsupported",
            PROBE_FAILED => "failed",
            _ => "unprobed",
        };
        let used = if row.marks.has(Marks::USED) {
            "used"
        } else {
            "-"
        };
        writeln!(f, "{} {:#06x} {probe} {used}", row.name, row.encoding)?;
    }
    Ok(())
}

impl kernel::Module for PkvmX86 {
    fn init(module: &'static ThisModule) -> Result<Self> {
        let found = cpu_caps::probe()?;
        pr_info!(
            "{}\n",
            format_args!("{} CPUs: {}", found.cpus, found.caps.summary())
        );

        let debug = *module_parameters::debug.value() != 0;
        if debug && !cfg!(pkvm_debug) {
            pr_err!(
                "debug=1: this build has no debug interface (build the module with PKVM_DEBUG=1)\n"
            );
            return Err(EINVAL);
        }

        let nested_ept = match *module_parameters::nested_ept.value() {
            0 => false,
            1 => true,
            n => {
                pr_err!("nested_ept={} must be 0 or 1\n", n);
                return Err(EINVAL);
            }
        };
        if nested_ept {
            pr_info!("nested_ept=1: EPT offered to the host's KVM (shadow EPT)\n");
        } else {
            pr_info!("nested_ept=0: EPT hidden from the host's KVM (its own shadow paging)\n");
        }

        let pool_mb = *module_parameters::pool_mb.value();
        if !(1..=1024).contains(&pool_mb) {
            pr_err!("pool_mb={} out of range 1..1024\n", pool_mb);
            return Err(EINVAL);
        }
        let pool_max_mb = *module_parameters::pool_max_mb.value();
        if !(pool_mb..=1024).contains(&pool_max_mb) {
            pr_err!(
                "pool_max_mb={} out of range {}..1024\n",
                pool_max_mb,
                pool_mb
            );
            return Err(EINVAL);
        }
        let hyp = hypervisor::Hypervisor::start(
            &found.caps,
            &found.raw,
            pool_mb as usize * 1024 * 1024,
            pool_max_mb as usize * 1024 * 1024,
            module.as_ptr(),
            debug,
            u32::try_from(*module_parameters::test_fail_cpu.value()).ok(),
            nested_ept,
        )?;
        let (used, total) = hyp.pool_usage();
        let (all_ns, max_ns) = hyp.launch_times();
        pr_info!(
            "{}\n",
            format_args!(
                "deprivileged {} CPUs in {} us (slowest CPU {} us); hypervisor pool {used}/{total} pages used, host EPT {} table pages",
                hyp.cpus(),
                all_ns / 1000,
                max_ns / 1000,
                hyp.ept_table_pages()
            )
        );
        let status = Status {
            cpus: hyp.cpus() as u32,
            pool_used: used,
            pool_total: total,
            launch_total_ns: all_ns,
            launch_max_cpu_ns: max_ns,
        };

        let dir = debugfs::Dir::new(c"pkvm_x86");
        let caps = KBox::pin_init(
            dir.read_callback_file(c"caps", found.caps, &|c: &VmxCaps, f| {
                write!(f, "{}", c.report())
            }),
            GFP_KERNEL,
        )?;
        let raw = KBox::pin_init(
            dir.read_callback_file(c"raw_msrs", RawMsrs(found.raw.msrs), &|r: &RawMsrs, f| {
                write!(f, "{}", hv::vmx::caps::RawDump(&r.0))
            }),
            GFP_KERNEL,
        )?;
        let cpus = KBox::pin_init(dir.read_only_file(c"cpus_checked", found.cpus), GFP_KERNEL)?;
        let status = KBox::pin_init(
            dir.read_callback_file(c"status", status, &|s: &Status, f| {
                writeln!(f, "deprivileged_cpus: {}", s.cpus)?;
                writeln!(f, "pool_pages_used: {}", s.pool_used)?;
                writeln!(f, "pool_pages_total: {}", s.pool_total)?;
                write_pool_now(f)?;
                writeln!(f, "deprivilege_all_ns: {}", s.launch_total_ns)?;
                writeln!(f, "deprivilege_slowest_cpu_ns: {}", s.launch_max_cpu_ns)?;
                writeln!(f, "vmx_cpus: {}", host::vmx_busy::vmx_cpus())?;
                write_internal_errors(f)
            }),
            GFP_KERNEL,
        )?;
        let exits = KBox::pin_init(
            dir.read_callback_file(c"exits", (), &write_exits),
            GFP_KERNEL,
        )?;
        let vmcs_fields = KBox::pin_init(
            dir.read_callback_file(c"vmcs_fields", (), &write_vmcs_fields),
            GFP_KERNEL,
        )?;
        #[cfg(pkvm_debug)]
        let debug_files = if debug {
            let sub = dir.subdir(c"debug");
            let state = debug_iface::DebugState::new(hyp.pool_first_pa());
            let ctl = KBox::pin_init(
                sub.read_write_callback_file(
                    c"ctl",
                    new_mutex!(state),
                    &debug_iface::read_ctl,
                    &debug_iface::write_ctl,
                ),
                GFP_KERNEL,
            )?;
            pr_warn!("debug interface enabled (debugfs pkvm_x86/debug/ctl); not for production\n");
            Some((sub, ctl))
        } else {
            None
        };
        #[cfg(not(pkvm_debug))]
        let debug_files = None;
        Ok(PkvmX86 {
            _debug: debug_files,
            _caps: caps,
            _raw: raw,
            _cpus: cpus,
            _status: status,
            _exits: exits,
            _vmcs_fields: vmcs_fields,
            _dir: dir,
            _vmx_busy: host::vmx_busy::Guard::new(module.as_ptr()),
            _hyp: hyp,
        })
    }
}

impl Drop for PkvmX86 {
    fn drop(&mut self) {
        // Still deprivileged here: the hypervisor field drops after this.
        if check_internal_errors().is_err() {
            pr_warn!("could not read the hypervisor's internal-error count at unload\n");
        }
        pr_info!("unloaded\n");
    }
}
