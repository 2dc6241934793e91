// SPDX-License-Identifier: GPL-2.0

//! Table-driven tests of the VMX instruction rules (`super`), on a fake
//! host memory with real 4-level page tables.

use super::super::host_walk::tests::{ctx as paging, map4k, FakeMem};
use super::super::offer::offer;

/// The revision identifier of the view (the CPU's: Ice Lake in Bochs).
const VMCS12_REVISION: u32 = 4;
use super::super::operand::Segment;
use super::super::vmcs12::layout;
use super::*;
use crate::hv::vmx::caps::ept_cap;
use crate::hv::vmx::caps::tests::icelake;
use crate::hv::vmx::vmcs::fields::*;
use crate::hv::vmx::vmcs::VmcsAccess;

const VMXON_PA: u64 = 0x50_000;
const VMCS_PA: u64 = 0x51_000;
const VMCS2_PA: u64 = 0x52_000;
const HYP_PA: u64 = 0x53_000;
/// Linear address of the operand page (mapped to `OP_PA`).
const OP_LA: u64 = 0xffff_8880_0010_0000;
const OP_PA: u64 = 0x60_000;

#[derive(Default)]
struct Regs([u64; 16]);

impl Gprs for Regs {
    fn gpr(&self, n: u8) -> u64 {
        self.0[usize::from(n)]
    }
    fn set_gpr(&mut self, n: u8, v: u64) {
        self.0[usize::from(n)] = v;
    }
}

struct H {
    mode: VmxMode,
    regs: Regs,
    mem: FakeMem,
    cache: Vmcs12Cache,
    view: View,
}

impl H {
    fn new() -> Self {
        let mut mem = FakeMem::default();
        map4k(&mut mem, OP_LA, OP_PA, 0x3);
        // The next page too (straddling operands).
        map4k(&mut mem, OP_LA + 0x1000, OP_PA + 0x1000, 0x3);
        for pa in [VMXON_PA, VMCS_PA, VMCS2_PA, HYP_PA] {
            mem.set_u64(pa, u64::from(VMCS12_REVISION));
        }
        mem.not_host.insert(HYP_PA);
        H {
            mode: VmxMode::Off,
            regs: Regs::default(),
            mem,
            cache: Vmcs12Cache::default(),
            view: View::from_raw(&offer(&icelake()).unwrap()),
        }
    }

    fn run(&mut self, insn: Insn, ctx: &InsnCtx) -> Done {
        let mut m = Machine {
            mode: &mut self.mode,
            regs: &mut self.regs,
            mem: &mut self.mem,
            cache: &mut self.cache,
            view: &self.view,
        };
        m.execute(insn, ctx)
    }

    /// Runs a memory-operand instruction whose 8-byte operand is `pa`.
    fn with_ptr(&mut self, insn: Insn, pa: u64) -> Outcome {
        self.mem.set_u64(OP_PA, pa);
        self.run(insn, &mem_ctx(0)).outcome
    }

    fn on(&mut self) {
        assert_eq!(self.with_ptr(Insn::Vmxon, VMXON_PA), Outcome::Succeed);
    }

    fn loaded(&mut self) {
        self.on();
        assert_eq!(self.with_ptr(Insn::Vmptrld, VMCS_PA), Outcome::Succeed);
    }

    fn error_field(&mut self) -> u32 {
        let VmxMode::On {
            current: Some(pa), ..
        } = self.mode
        else {
            panic!("no current VMCS")
        };
        self.cache
            .get(&mut self.mem, pa)
            .unwrap()
            .vmcs
            .read(VM_INSTRUCTION_ERROR)
            .unwrap()
    }
}

fn flat(ar: u32) -> Segment {
    Segment {
        base: 0,
        limit: 0xffff_ffff,
        ar,
    }
}

/// 64-bit mode, CPL 0, CR4.VMXE set in the host's view.
fn base_ctx() -> InsnCtx {
    InsnCtx {
        cr0: 0x8005_0033,
        cr4: 0x3706f0 | 1 << 13,
        lma: true,
        cs_l: true,
        rflags: 0x2 | 0x8d5,
        cpl: 0,
        mov_ss_blocking: false,
        info: InstrInfo(0),
        qual: 0,
        segs: [
            flat(0x93),
            flat(0xa09b | 1 << 13),
            flat(0x93),
            flat(0x93),
            Segment {
                base: 0,
                ..flat(0x93)
            },
            Segment {
                base: 0,
                ..flat(0x93)
            },
        ],
        paging: paging(),
        phys_bits: 39,
        vmxon_refused: false,
    }
}

/// A memory operand at `OP_LA + off` (DS, no base or index, 64-bit
/// addressing), field-encoding / type register RCX (reg2 = 1).
fn mem_ctx(off: u64) -> InsnCtx {
    InsnCtx {
        info: InstrInfo(2 << 7 | 3 << 15 | 1 << 22 | 1 << 27 | 1 << 28),
        qual: OP_LA + off,
        ..base_ctx()
    }
}

/// VMREAD/VMWRITE register form: reg1 = RBX (3), reg2 = RCX (1).
fn reg_ctx() -> InsnCtx {
    InsnCtx {
        info: InstrInfo(3 << 3 | 1 << 10 | 2 << 7 | 1 << 28),
        ..base_ctx()
    }
}

const ALL: [Insn; 11] = [
    Insn::Vmclear,
    Insn::Vmlaunch,
    Insn::Vmptrld,
    Insn::Vmptrst,
    Insn::Vmread,
    Insn::Vmresume,
    Insn::Vmwrite,
    Insn::Vmxoff,
    Insn::Vmxon,
    Insn::Invept,
    Insn::Invvpid,
];

#[test]
fn exit_reasons_map_to_instructions() {
    let reasons = [19, 20, 21, 22, 23, 24, 25, 26, 27, 50, 53];
    for (r, i) in reasons.iter().zip(ALL) {
        assert_eq!(Insn::from_exit_reason(*r), Some(i));
    }
    assert_eq!(Insn::from_exit_reason(59), None, "VMFUNC");
    assert_eq!(Insn::from_exit_reason(18), None, "VMCALL");
}

#[test]
fn outside_vmx_operation_everything_but_vmxon_is_ud() {
    for insn in ALL {
        let mut h = H::new();
        h.mem.set_u64(OP_PA, VMXON_PA);
        let d = h.run(insn, &mem_ctx(0));
        if insn == Insn::Vmxon {
            assert_eq!(d.outcome, Outcome::Succeed);
        } else {
            assert_eq!(d.outcome, Outcome::Fault(Fault::Ud), "{insn:?}");
        }
    }
}

#[test]
fn mode_and_privilege_faults_come_first() {
    for insn in ALL {
        let mut h = H::new();
        if insn != Insn::Vmxon {
            h.loaded();
        }
        let mut c = mem_ctx(0);
        c.cr0 &= !1;
        assert_eq!(
            h.run(insn, &c).outcome,
            Outcome::Fault(Fault::Ud),
            "{insn:?} real mode"
        );
        let mut c = mem_ctx(0);
        c.rflags |= 1 << 17;
        assert_eq!(
            h.run(insn, &c).outcome,
            Outcome::Fault(Fault::Ud),
            "{insn:?} v8086"
        );
        let mut c = mem_ctx(0);
        c.cs_l = false;
        assert_eq!(
            h.run(insn, &c).outcome,
            Outcome::Fault(Fault::Ud),
            "{insn:?} compat"
        );
        let mut c = mem_ctx(0);
        c.cpl = 3;
        let want = if insn == Insn::Invept {
            Fault::Ud
        } else {
            Fault::Gp(0)
        };
        assert_eq!(
            h.run(insn, &c).outcome,
            Outcome::Fault(want),
            "{insn:?} cpl3"
        );
    }
}

#[test]
fn vmxon_rules() {
    let mut h = H::new();
    // CR4.VMXE clear in the host's view: #UD.
    let mut c = mem_ctx(0);
    c.cr4 &= !(1 << 13);
    h.mem.set_u64(OP_PA, VMXON_PA);
    assert_eq!(h.run(Insn::Vmxon, &c).outcome, Outcome::Fault(Fault::Ud));
    // CR0 fixed bits (NE clear): #GP(0).
    let mut c = mem_ctx(0);
    c.cr0 &= !(1 << 5);
    assert_eq!(h.run(Insn::Vmxon, &c).outcome, Outcome::Fault(Fault::Gp(0)));
    // FEATURE_CONTROL unlocked in the view: #GP(0).
    h.view.feature_control = 4;
    assert_eq!(
        h.with_ptr(Insn::Vmxon, VMXON_PA),
        Outcome::Fault(Fault::Gp(0))
    );
    h.view.feature_control = 5;
    // Misaligned, beyond MAXPHYADDR, wrong revision, shadow bit, not the
    // host's page: VMfailInvalid.
    for pa in [VMXON_PA + 8, 1 << 39, HYP_PA] {
        assert_eq!(h.with_ptr(Insn::Vmxon, pa), Outcome::FailInvalid, "{pa:#x}");
    }
    h.mem
        .set_u64(VMXON_PA, u64::from(VMCS12_REVISION) | 1 << 31);
    assert_eq!(h.with_ptr(Insn::Vmxon, VMXON_PA), Outcome::FailInvalid);
    h.mem.set_u64(VMXON_PA, 5);
    assert_eq!(h.with_ptr(Insn::Vmxon, VMXON_PA), Outcome::FailInvalid);
    h.mem.set_u64(VMXON_PA, u64::from(VMCS12_REVISION));
    assert_eq!(h.mode, VmxMode::Off);
    // Refused while pkvm unloads.
    let mut c = mem_ctx(0);
    c.vmxon_refused = true;
    assert_eq!(h.run(Insn::Vmxon, &c).outcome, Outcome::FailInvalid);
    h.on();
    assert_eq!(
        h.mode,
        VmxMode::On {
            vmxon: VMXON_PA,
            current: None
        }
    );
    // VMXON in VMX root operation: VMfailInvalid without a current VMCS,
    // VMfailValid(15) with one.
    assert_eq!(h.with_ptr(Insn::Vmxon, VMXON_PA), Outcome::FailInvalid);
    assert_eq!(h.with_ptr(Insn::Vmptrld, VMCS_PA), Outcome::Succeed);
    assert_eq!(h.with_ptr(Insn::Vmxon, VMXON_PA), Outcome::FailValid(15));
    assert_eq!(h.error_field(), 15);
    // VMXOFF leaves.
    assert_eq!(h.run(Insn::Vmxoff, &base_ctx()).outcome, Outcome::Succeed);
    assert_eq!(h.mode, VmxMode::Off);
}

#[test]
fn vmclear_vmptrld_vmptrst_rules() {
    let mut h = H::new();
    let hyp_page = h.mem.pages[&HYP_PA];
    h.on();
    // Without a current VMCS every VMfail is VMfailInvalid.
    assert_eq!(h.with_ptr(Insn::Vmclear, VMCS_PA + 1), Outcome::FailInvalid);
    assert_eq!(h.with_ptr(Insn::Vmptrld, VMXON_PA), Outcome::FailInvalid);
    assert_eq!(h.with_ptr(Insn::Vmptrld, VMCS_PA), Outcome::Succeed);
    let cases: &[(Insn, u64, u32)] = &[
        (Insn::Vmclear, VMCS2_PA + 0x800, 2),
        (Insn::Vmclear, 1 << 40, 2),
        (Insn::Vmclear, HYP_PA, 2),
        (Insn::Vmclear, VMXON_PA, 3),
        (Insn::Vmptrld, VMCS2_PA | 4, 9),
        (Insn::Vmptrld, 1 << 45, 9),
        (Insn::Vmptrld, HYP_PA, 9),
        (Insn::Vmptrld, VMXON_PA, 10),
    ];
    for &(insn, pa, e) in cases {
        assert_eq!(
            h.with_ptr(insn, pa),
            Outcome::FailValid(e),
            "{insn:?} {pa:#x}"
        );
        assert_eq!(h.error_field(), e);
    }
    // Nothing of the hypervisor page was read or written.
    assert!(h.mem.refused.iter().all(|p| *p == HYP_PA));
    assert_eq!(h.mem.pages[&HYP_PA], hyp_page);
    // Bad revision: 11; the shadow-VMCS indicator too.
    h.mem.set_u64(VMCS2_PA, 5);
    assert_eq!(h.with_ptr(Insn::Vmptrld, VMCS2_PA), Outcome::FailValid(11));
    h.mem
        .set_u64(VMCS2_PA, u64::from(VMCS12_REVISION) | 1 << 31);
    assert_eq!(h.with_ptr(Insn::Vmptrld, VMCS2_PA), Outcome::FailValid(11));
    // The current VMCS stays.
    assert_eq!(h.with_ptr(Insn::Vmptrst, 0), Outcome::Succeed);
    assert_eq!(h.mem.get_u64(OP_PA), VMCS_PA);
    // VMCLEAR of the current VMCS makes it invalid; VMPTRST stores ones.
    assert_eq!(h.with_ptr(Insn::Vmclear, VMCS_PA), Outcome::Succeed);
    assert_eq!(
        h.mode,
        VmxMode::On {
            vmxon: VMXON_PA,
            current: None
        }
    );
    assert_eq!(h.with_ptr(Insn::Vmptrst, 0), Outcome::Succeed);
    assert_eq!(h.mem.get_u64(OP_PA), u64::MAX);
    assert_eq!(h.mem.get_u64(VMCS_PA + layout::LAUNCH_OFFSET), 0);
}

#[test]
fn vmread_vmwrite_register_and_memory_forms() {
    let mut h = H::new();
    h.on();
    // No current VMCS: VMfailInvalid.
    h.regs.0[1] = u64::from(GUEST_RIP.encoding());
    assert_eq!(
        h.run(Insn::Vmread, &reg_ctx()).outcome,
        Outcome::FailInvalid
    );
    assert_eq!(
        h.run(Insn::Vmwrite, &reg_ctx()).outcome,
        Outcome::FailInvalid
    );
    assert_eq!(h.with_ptr(Insn::Vmptrld, VMCS_PA), Outcome::Succeed);
    // Register form.
    h.regs.0[3] = 0xffff_ffff_8100_0000;
    assert_eq!(h.run(Insn::Vmwrite, &reg_ctx()).outcome, Outcome::Succeed);
    h.regs.0[3] = 0;
    assert_eq!(h.run(Insn::Vmread, &reg_ctx()).outcome, Outcome::Succeed);
    assert_eq!(h.regs.0[3], 0xffff_ffff_8100_0000);
    // Memory form, straddling two pages.
    h.regs.0[1] = u64::from(GUEST_RSP.encoding());
    h.mem.set_u64(OP_PA + 0xff8, 0x1234_5678_0000_0000);
    h.mem.set_u64(OP_PA + 0x1000, 0x9abc);
    assert_eq!(
        h.run(Insn::Vmwrite, &mem_ctx(0xffc)).outcome,
        Outcome::Succeed
    );
    assert_eq!(
        h.run(Insn::Vmread, &mem_ctx(0x10)).outcome,
        Outcome::Succeed
    );
    assert_eq!(h.mem.get_u64(OP_PA + 0x10), 0x9abc_1234_5678);
    // Unsupported component (and bits 63:32 of the encoding): 12.
    for enc in [0x6c1e_u64, 1 << 32 | u64::from(GUEST_RIP.encoding())] {
        h.regs.0[1] = enc;
        assert_eq!(
            h.run(Insn::Vmread, &reg_ctx()).outcome,
            Outcome::FailValid(12)
        );
        assert_eq!(
            h.run(Insn::Vmwrite, &reg_ctx()).outcome,
            Outcome::FailValid(12)
        );
        assert_eq!(h.error_field(), 12);
    }
    // Read-only field: 13 without IA32_VMX_MISC bit 29, written with it.
    h.regs.0[1] = u64::from(VM_EXIT_REASON.encoding());
    h.regs.0[3] = 30;
    h.view.write_any = false;
    assert_eq!(
        h.run(Insn::Vmwrite, &reg_ctx()).outcome,
        Outcome::FailValid(13)
    );
    h.view.write_any = true;
    assert_eq!(h.run(Insn::Vmwrite, &reg_ctx()).outcome, Outcome::Succeed);
    // The VM-instruction error field is readable after a VMfail, and
    // VMREAD leaves it.
    h.regs.0[1] = u64::from(VM_INSTRUCTION_ERROR.encoding());
    assert_eq!(h.run(Insn::Vmread, &reg_ctx()).outcome, Outcome::Succeed);
    assert_eq!(h.regs.0[3], 13);
    // High half of a 64-bit field.
    h.regs.0[1] = u64::from(VMCS_LINK_POINTER.encoding());
    h.regs.0[3] = u64::MAX;
    assert_eq!(h.run(Insn::Vmwrite, &reg_ctx()).outcome, Outcome::Succeed);
    h.regs.0[1] |= 1;
    h.regs.0[3] = 0x1_2345_6789;
    assert_eq!(h.run(Insn::Vmwrite, &reg_ctx()).outcome, Outcome::Succeed);
    h.regs.0[1] &= !1;
    assert_eq!(h.run(Insn::Vmread, &reg_ctx()).outcome, Outcome::Succeed);
    assert_eq!(h.regs.0[3], 0x2345_6789_ffff_ffff);
    // A memory destination that is not mapped: #PF, nothing changes.
    h.regs.0[1] = u64::from(GUEST_RIP.encoding());
    let mut c = mem_ctx(0);
    c.qual = 0x1000_0000;
    let d = h.run(Insn::Vmread, &c);
    assert_eq!(
        d.outcome,
        Outcome::Fault(Fault::Pf {
            addr: 0x1000_0000,
            code: 2
        })
    );
    // Non-canonical: #GP(0); through SS: #SS(0).
    c.qual = 1 << 47;
    assert_eq!(
        h.run(Insn::Vmwrite, &c).outcome,
        Outcome::Fault(Fault::Gp(0))
    );
    c.info = InstrInfo(c.info.0 & !(7 << 15) | 2 << 15);
    assert_eq!(
        h.run(Insn::Vmwrite, &c).outcome,
        Outcome::Fault(Fault::Ss(0))
    );
}

#[test]
fn operands_whose_tables_are_hypervisor_memory_fault_and_leak_nothing() {
    let mut h = H::new();
    h.loaded();
    // The PT page of the operand becomes hypervisor memory.
    let mut t = super::super::host_walk::tests::CR3;
    for l in (2..=4u32).rev() {
        let idx = (OP_LA >> (12 + 9 * (l - 1))) & 0x1ff;
        t = h.mem.get_u64(t + idx * 8) & 0x000f_ffff_ffff_f000;
    }
    h.mem.not_host.insert(t);
    h.regs.0[1] = u64::from(GUEST_RIP.encoding());
    let before = h.regs.0;
    for insn in [
        Insn::Vmread,
        Insn::Vmwrite,
        Insn::Vmptrld,
        Insn::Vmclear,
        Insn::Vmptrst,
    ] {
        assert_eq!(
            h.run(insn, &mem_ctx(0)).outcome,
            Outcome::Fault(Fault::Pf {
                addr: OP_LA,
                code: 1
            }),
            "{insn:?}"
        );
    }
    assert_eq!(h.regs.0, before);
    assert!(h.mem.refused.iter().all(|p| *p == t));
}

#[test]
fn launch_and_resume_rules() {
    let mut h = H::new();
    h.on();
    assert_eq!(
        h.run(Insn::Vmlaunch, &base_ctx()).outcome,
        Outcome::FailInvalid
    );
    assert_eq!(
        h.run(Insn::Vmresume, &base_ctx()).outcome,
        Outcome::FailInvalid
    );
    assert_eq!(h.with_ptr(Insn::Vmptrld, VMCS_PA), Outcome::Succeed);
    // Clear VMCS: VMRESUME fails with 5; VMLAUNCH reaches the entry.
    assert_eq!(
        h.run(Insn::Vmresume, &base_ctx()).outcome,
        Outcome::FailValid(5)
    );
    assert_eq!(h.run(Insn::Vmlaunch, &base_ctx()).enter, Some(VMCS_PA));
    // Launched (read back from a page the host VMCLEARed after a launch).
    h.cache.get(&mut h.mem, VMCS_PA).unwrap().launched = true;
    assert_eq!(
        h.run(Insn::Vmlaunch, &base_ctx()).outcome,
        Outcome::FailValid(4)
    );
    assert_eq!(h.run(Insn::Vmresume, &base_ctx()).enter, Some(VMCS_PA));
    let mut c = base_ctx();
    c.mov_ss_blocking = true;
    assert_eq!(h.run(Insn::Vmresume, &c).outcome, Outcome::FailValid(26));
}

#[test]
fn invept_and_invvpid() {
    let mut h = H::new();
    h.loaded();
    assert_eq!(
        h.run(Insn::Invept, &mem_ctx(0)).outcome,
        Outcome::Fault(Fault::Ud)
    );
    // Descriptor at OP_PA: VPID, then the linear address.
    let desc = |h: &mut H, lo: u64, hi: u64| {
        h.mem.set_u64(OP_PA, lo);
        h.mem.set_u64(OP_PA + 8, hi);
    };
    let cases: &[(u64, u64, u64, Outcome)] = &[
        (0, 1, 0x1000, Outcome::Succeed),
        (0, 0, 0x1000, Outcome::FailValid(28)),
        (0, 1, 1 << 47, Outcome::FailValid(28)),
        (1, 1, 0, Outcome::Succeed),
        (1, 0, 0, Outcome::FailValid(28)),
        (2, 0, 0, Outcome::Succeed),
        (2, 1 << 16, 0, Outcome::FailValid(28)),
        (3, 1, 0, Outcome::Succeed),
        (3, 0, 0, Outcome::FailValid(28)),
        (4, 1, 0, Outcome::FailValid(28)),
        (u64::MAX, 1, 0, Outcome::FailValid(28)),
    ];
    for &(ty, lo, hi, want) in cases {
        desc(&mut h, lo, hi);
        h.regs.0[1] = ty;
        let d = h.run(Insn::Invvpid, &mem_ctx(0));
        assert_eq!(d.outcome, want, "type {ty} desc {lo:#x} {hi:#x}");
        assert_eq!(d.flush, want == Outcome::Succeed);
    }
    // A type the view does not offer is refused before the descriptor is
    // read (an unmapped descriptor does not fault).
    h.view.ept_vpid_cap &= !(1 << 40);
    h.regs.0[1] = 0;
    let mut c = mem_ctx(0);
    c.qual = 0x1000_0000;
    assert_eq!(h.run(Insn::Invvpid, &c).outcome, Outcome::FailValid(28));
    // Without INVVPID in the view: #UD.
    h.view.ept_vpid_cap = 0;
    assert_eq!(
        h.run(Insn::Invvpid, &mem_ctx(0)).outcome,
        Outcome::Fault(Fault::Ud)
    );
}

/// The view with EPT offered as piece-by-piece shadow EPT will: 4-level
/// walks, UC and WB, 2 MiB pages, INVEPT single-context and global; no
/// A/D flags, no 5-level walks.
fn ept_view(h: &mut H) {
    h.view.ept = true;
    h.view.ept_vpid_cap |= ept_cap::WALK_4
        | 1 << 8
        | ept_cap::WB
        | ept_cap::PAGE_2M
        | ept_cap::INVEPT
        | ept_cap::INVEPT_SINGLE
        | ept_cap::INVEPT_ALL;
}

#[test]
fn invept_is_ud_unless_the_view_offers_ept_and_invept() {
    let mut h = H::new();
    h.loaded();
    h.regs.0[1] = 2;
    assert_eq!(
        h.run(Insn::Invept, &mem_ctx(0)).outcome,
        Outcome::Fault(Fault::Ud)
    );
    ept_view(&mut h);
    assert_eq!(h.run(Insn::Invept, &mem_ctx(0)).outcome, Outcome::Succeed);
    h.view.ept_vpid_cap &= !ept_cap::INVEPT;
    assert_eq!(
        h.run(Insn::Invept, &mem_ctx(0)).outcome,
        Outcome::Fault(Fault::Ud)
    );
    ept_view(&mut h);
    h.view.ept = false;
    assert_eq!(
        h.run(Insn::Invept, &mem_ctx(0)).outcome,
        Outcome::Fault(Fault::Ud)
    );

    // Offered: #UD outside VMX operation, #GP(0) above CPL 0.
    let mut h = H::new();
    ept_view(&mut h);
    h.regs.0[1] = 2;
    assert_eq!(
        h.run(Insn::Invept, &mem_ctx(0)).outcome,
        Outcome::Fault(Fault::Ud)
    );
    h.on();
    let mut c = mem_ctx(0);
    c.cpl = 3;
    assert_eq!(
        h.run(Insn::Invept, &c).outcome,
        Outcome::Fault(Fault::Gp(0))
    );
    let mut c = mem_ctx(0);
    c.rflags |= 1 << 17;
    assert_eq!(h.run(Insn::Invept, &c).outcome, Outcome::Fault(Fault::Ud));
}

#[test]
fn invept_types_descriptors_and_eptps() {
    let mut h = H::new();
    ept_view(&mut h);
    h.loaded();
    let wb4 = 0x1234_5000 | 6 | 3 << 3;
    let cases: &[(u64, u64, Outcome, Option<Invept>)] = &[
        (1, wb4, Outcome::Succeed, Some(Invept::Single(wb4))),
        // UC paging structures are advertised too.
        (
            1,
            0x1234_5000 | 3 << 3,
            Outcome::Succeed,
            Some(Invept::Single(0x1234_5018)),
        ),
        // Memory types 1 (WC), 7 (reserved): refused.
        (1, 0x1234_5000 | 1 | 3 << 3, Outcome::FailValid(28), None),
        (1, 0x1234_5000 | 7 | 3 << 3, Outcome::FailValid(28), None),
        // Walk lengths 5 (not advertised) and 2.
        (1, 0x1234_5000 | 6 | 4 << 3, Outcome::FailValid(28), None),
        (1, 0x1234_5000 | 6 | 1 << 3, Outcome::FailValid(28), None),
        // A/D flags (hidden), a reserved bit, an address bit beyond
        // MAXPHYADDR (39 here).
        (1, wb4 | 1 << 6, Outcome::FailValid(28), None),
        (1, wb4 | 1 << 7, Outcome::FailValid(28), None),
        (1, wb4 | 1 << 11, Outcome::FailValid(28), None),
        (1, wb4 | 1 << 39, Outcome::FailValid(28), None),
        // Global: the EPTP is not looked at.
        (2, 0, Outcome::Succeed, Some(Invept::All)),
        (2, u64::MAX, Outcome::Succeed, Some(Invept::All)),
        // Types 0, 3 and beyond do not exist.
        (0, wb4, Outcome::FailValid(28), None),
        (3, wb4, Outcome::FailValid(28), None),
        (u64::MAX, wb4, Outcome::FailValid(28), None),
    ];
    for &(ty, eptp, want, action) in cases {
        h.mem.set_u64(OP_PA, eptp);
        h.mem.set_u64(OP_PA + 8, 0xffff_ffff_ffff_ffff);
        h.regs.0[1] = ty;
        let d = h.run(Insn::Invept, &mem_ctx(0));
        assert_eq!(d.outcome, want, "type {ty} eptp {eptp:#x}");
        assert_eq!(d.invept, action, "type {ty} eptp {eptp:#x}");
        assert!(!d.flush && d.enter.is_none());
        if want != Outcome::Succeed {
            assert_eq!(h.error_field(), 28, "stored in the current vmcs12");
        }
    }
    // The descriptor is read whole: 16 bytes straddling into a page that
    // is not mapped fault, and nothing is invalidated.
    h.regs.0[1] = 2;
    let d = h.run(Insn::Invept, &mem_ctx(0x2000 - 8));
    assert!(
        matches!(d.outcome, Outcome::Fault(Fault::Pf { .. })),
        "{d:?}"
    );
    assert_eq!(d.invept, None);
    // A type the view does not advertise is refused before the descriptor
    // is read: an unmapped descriptor does not fault.
    h.view.ept_vpid_cap &= !ept_cap::INVEPT_ALL;
    let mut c = mem_ctx(0);
    c.qual = 0x1000_0000;
    assert_eq!(h.run(Insn::Invept, &c).outcome, Outcome::FailValid(28));
    h.regs.0[1] = 1;
    h.mem.set_u64(OP_PA, wb4);
    assert_eq!(
        h.run(Insn::Invept, &mem_ctx(0)).invept,
        Some(Invept::Single(wb4))
    );
    h.view.ept_vpid_cap &= !ept_cap::INVEPT_SINGLE;
    assert_eq!(
        h.run(Insn::Invept, &mem_ctx(0)).outcome,
        Outcome::FailValid(28)
    );
}

#[test]
fn invept_type_register_width_and_no_current_vmcs() {
    let mut h = H::new();
    ept_view(&mut h);
    h.on();
    // No current VMCS: a bad type is VMfailInvalid.
    h.regs.0[1] = 7;
    assert_eq!(
        h.run(Insn::Invept, &mem_ctx(0)).outcome,
        Outcome::FailInvalid
    );
    // 64-bit mode reads 64 bits of the type register ...
    h.regs.0[1] = 1 << 32 | 2;
    assert_eq!(
        h.run(Insn::Invept, &mem_ctx(0)).outcome,
        Outcome::FailInvalid
    );
    // ... other modes 32.
    let mut c = mem_ctx(0);
    c.lma = false;
    c.cs_l = false;
    c.segs[1] = flat(0xc09b);
    c.info = InstrInfo(c.info.0 & !(3 << 7) | 1 << 7);
    map4k(&mut h.mem, 0x10_0000, OP_PA, 0x3);
    c.qual = 0x10_0000;
    let d = h.run(Insn::Invept, &c);
    assert_eq!(d.outcome, Outcome::Succeed, "{d:?}");
    assert_eq!(d.invept, Some(Invept::All));
}

#[test]
fn rflags_results() {
    let old = 0x2 | RFLAGS_ARITH | 1 << 9;
    assert_eq!(Outcome::Succeed.rflags(old), 0x2 | 1 << 9);
    assert_eq!(Outcome::FailInvalid.rflags(old), 0x2 | 1 << 9 | 1);
    assert_eq!(Outcome::FailValid(7).rflags(old), 0x2 | 1 << 9 | 1 << 6);
    assert_eq!(Outcome::Fault(Fault::Ud).rflags(old), old);
}

#[test]
fn protected_mode_operand_sizes() {
    let mut h = H::new();
    h.loaded();
    let mut c = reg_ctx();
    c.lma = false;
    c.cs_l = false;
    c.segs[1] = flat(0xc09b);
    // 32-bit mode: the encoding register's high half is ignored and the
    // register destination gets 32 bits.
    h.regs.0[1] = 0xdead_0000_0000_0000 | u64::from(GUEST_RIP.encoding());
    h.regs.0[3] = 0x1111_2222_3333_4444;
    assert_eq!(h.run(Insn::Vmwrite, &c).outcome, Outcome::Succeed);
    h.regs.0[3] = u64::MAX;
    assert_eq!(h.run(Insn::Vmread, &c).outcome, Outcome::Succeed);
    assert_eq!(h.regs.0[3], 0x3333_4444);
}
