// SPDX-License-Identifier: GPL-2.0

//! pkvm_x86: a protected KVM for Intel VT-x.
//!
//! Crate root for Kbuild.  Today the module checks that every CPU can run
//! pkvm (VMX on and configured, EPT with 4-level walks and 2M/1G pages,
//! INVEPT, unrestricted guest, VMCS shadowing, ...), logs a one-line
//! summary and exposes the decoded capabilities read-only in debugfs at
//! `/sys/kernel/debug/pkvm_x86/`.  It refuses to load, with a message and an
//! errno, on a CPU that cannot.  It does not deprivilege the host yet.
//!
//! Layout: `hv` is the pure core (also built by Cargo for tests), `arch` the
//! only home of CPU instructions, the other modules are host-side glue.

use kernel::{debugfs, prelude::*};

pub mod arch;
mod cpu_caps;
pub mod hv;

use hv::vmx_caps::{VmxCaps, VMX_MSR_COUNT};

module! {
    type: PkvmX86,
    name: "pkvm_x86",
    authors: ["pkvm-x86 developers"],
    description: "Protected KVM for Intel VT-x",
    license: "GPL",
}

/// Raw capability MSRs as read, for the `raw_msrs` debugfs file.
struct RawMsrs([Option<u64>; VMX_MSR_COUNT]);

struct PkvmX86 {
    _caps: Pin<KBox<debugfs::File<VmxCaps>>>,
    _raw: Pin<KBox<debugfs::File<RawMsrs>>>,
    _cpus: Pin<KBox<debugfs::File<u32>>>,
    _dir: debugfs::Dir,
}

impl kernel::Module for PkvmX86 {
    fn init(_module: &'static ThisModule) -> Result<Self> {
        let found = cpu_caps::probe()?;
        pr_info!(
            "{}\n",
            format_args!("{} CPUs: {}", found.cpus, found.caps.summary())
        );

        let dir = debugfs::Dir::new(c"pkvm_x86");
        let caps = KBox::pin_init(
            dir.read_callback_file(c"caps", found.caps, &|c: &VmxCaps, f| {
                write!(f, "{}", c.report())
            }),
            GFP_KERNEL,
        )?;
        let raw = KBox::pin_init(
            dir.read_callback_file(c"raw_msrs", RawMsrs(found.raw.msrs), &|r: &RawMsrs, f| {
                write!(f, "{}", hv::vmx_caps::RawDump(&r.0))
            }),
            GFP_KERNEL,
        )?;
        let cpus = KBox::pin_init(dir.read_only_file(c"cpus_checked", found.cpus), GFP_KERNEL)?;
        Ok(PkvmX86 {
            _caps: caps,
            _raw: raw,
            _cpus: cpus,
            _dir: dir,
        })
    }
}

impl Drop for PkvmX86 {
    fn drop(&mut self) {
        pr_info!("unloaded\n");
    }
}
