# selftests/suite-nested.sh: nested VMX for the host (Documentation/nested.rst)
# with EPT hidden (pkvm_x86 nested_ept=0: the host's KVM runs its guests on
# its own shadow paging; selftests/suite-nested-ept.sh covers the default,
# EPT offered and shadowed).
# The VMX-instruction oracle on the bare emulated CPU and under pkvm in the
# same boot, compared; the stock kvm_intel loads under pkvm with its default
# parameters reading as documented, /dev/kvm creates a VM and vCPUs; pkvm
# cannot be unloaded while the host is in VMX operation, and can after
# kvm_intel is gone; VMX regions and memory operands on memory the host
# does not own (the pool, the module image, a donated page) fail the
# architectural way and leak nothing; hostile VM entries of the host's own
# VMCS (selftests/vmx_entry: host addresses on hypervisor memory, hidden
# controls, VMWRITE to exit information, pinned APIC pages, a seeded fuzz
# of VMWRITE sequences before VMLAUNCH/VMRESUME) fail the architectural
# way, as on the bare CPU where it has the case.

DBG=/sys/kernel/debug/pkvm_x86
CTL=$DBG/debug/ctl
H=/sys/kernel/debug/pkvm_hostile/ctl
P=/sys/module/kvm_intel/parameters
TESTS="oracle_bare entry_bare user_bare guest_bare insmod_pkvm view_msrs oracle_pkvm oracle_matches_bare user_pkvm kvm_intel_loads \
kvm_params kvm_vcpus guest_pkvm guest_cpus vcpus_round_robin user_pkvm_in_vmx rmmod_refused_while_vmx rmmod_after_kvm hostile_regions \
hostile_entry entry_fuzz guest_bench vcpus_stress reserve_many_guests dmesg_clean"
# The reserve for shadow state: selftests/reserve-tests.sh.
. /selftests/reserve-tests.sh

# kvm_intel's parameters for the bare baseline: the view pkvm offers (EPT
# and what needs it, APICv, PML, shadow VMCS, preemption timer hidden).
BARE_KVM="ept=0 enable_apicv=0 pml=0 enable_shadow_vmcs=0 preemption_timer=0"
GUEST_N=20

ncpu() { grep -c ^processor /proc/cpuinfo; }

# oracle OUT [PARAMS]: loads the oracle (it prints and unloads itself) and
# writes its lines to OUT.
oracle() {
	out=$1
	shift
	n=$(dmesg | grep 'vmx_oracle: ' | grep -c -v 'taints kernel')
	insmod /lib/modules/vmx_oracle.ko "$@" || fail "insmod vmx_oracle $*"
	rmmod vmx_oracle
	dmesg | sed -n 's/.*vmx_oracle: //p' | grep -v 'taints kernel' | tail -n +$((n + 1)) > "$out"
	grep -q '^done$' "$out" || { cat "$out"; fail "the oracle did not finish"; }
}

# kmod_log MODULE OUT [PARAMS]: loads a test module that prints
# "MODULE: ..." lines and "MODULE: done", unloads it, writes its lines to OUT.
kmod_log() {
	mod=$1 out=$2
	shift 2
	n=$(dmesg | grep "$mod: " | grep -c -v 'taints kernel')
	insmod /lib/modules/$mod.ko "$@" || fail "insmod $mod $*"
	rmmod $mod
	dmesg | sed -n "s/.*$mod: //p" | grep -v 'taints kernel' | tail -n +$((n + 1)) > "$out"
	grep -q '^done$' "$out" || { cat "$out"; fail "$mod did not finish"; }
}

t_oracle_bare() {
	grep -q '^pkvm_x86 \|^kvm_intel ' /proc/modules && fail "run bare: pkvm or kvm_intel loaded"
	oracle /tmp/oracle.bare
	cat /tmp/oracle.bare
	/bin/rdmsr -c 0 0x48b > /tmp/p2.bare
}

# Whether the bare CPU has TSC scaling (secondary control 25).
bare_tsc_scaling() { [ $(( ($(cat /tmp/p2.bare) >> 57) & 1 )) = 1 ]; }

# The hostile VM entries' reference: the same module on the bare CPU
# (only the steps that do not need hypervisor memory).  Also names a
# secondary control the bare CPU lacks ("lacking_bit=N").
t_entry_bare() {
	kmod_log vmx_entry /tmp/entry.bare
	cat /tmp/entry.bare
	expect_line /tmp/entry.bare cmp_baseline "exit reason=0xa qual=0x0"
	expect_line /tmp/entry.bare cmp_baseline_resume "exit reason=0xa qual=0x0"
	for a in msr_bitmap link_pointer entry_msr_load; do
		expect_line /tmp/entry.bare cmp_bait_owned_$a "exit reason=0xa qual=0x0"
	done
	# With TSC scaling, multiplier 1 and this offset the guest reads the
	# offset (vmx_entry.c tsc_scaling_steps); under pkvm the same
	# (t_hostile_entry compares every cmp_ line).
	if bare_tsc_scaling; then
		expect_line /tmp/entry.bare cmp_tsc_scaling_guest_tsc "0x123456789abc "
	fi
}

# The VMX instructions at CPL 3 (selftests/tools/vmx_user.c), bare: outside
# VMX operation, and in it (kvm_intel loaded: every CPU executed VMXON).
t_user_bare() {
	/bin/vmx_user > /tmp/user.bare
	insmod /lib/modules/irqbypass.ko 2>/dev/null
	insmod /lib/modules/kvm.ko && insmod /lib/modules/kvm-intel.ko || fail "bare kvm_intel"
	/bin/vmx_user > /tmp/user.bare.vmx
	rmmod kvm_intel; rmmod kvm
	paste /tmp/user.bare /tmp/user.bare.vmx
}

# The guest of selftests/tools/kvm_guest.c on bare KVM with the view's
# parameters: the reference for the runs under pkvm.
t_guest_bare() {
	insmod /lib/modules/irqbypass.ko 2>/dev/null
	insmod /lib/modules/kvm.ko && insmod /lib/modules/kvm-intel.ko $BARE_KVM || fail "bare kvm_intel $BARE_KVM"
	/bin/kvm_guest -n $GUEST_N > /tmp/guest.bare
	rc=$?
	cat /tmp/guest.bare
	rmmod kvm_intel; rmmod kvm
	[ $rc = 0 ] || fail "the guest failed on bare KVM"
}

t_insmod_pkvm() {
	insmod /lib/modules/pkvm_x86.ko nested_ept=0 || fail "insmod nested_ept=0"
	[ "$(/bin/cpuid -s)" = pkvm-x86 ] || fail "not deprivileged"
}

# The view: VMX in CPUID leaf 1, pkvm's revision, EPT hidden, the same
# on every CPU.
t_view_msrs() {
	for c in $(seq 0 $(($(ncpu) - 1))); do
		basic=$(/bin/rdmsr -c $c 0x480)
		p2=$(/bin/rdmsr -c $c 0x48b)
		echo "cpu$c IA32_VMX_BASIC=$basic PROCBASED_CTLS2=$p2 FEATURE_CONTROL=$(/bin/rdmsr -c $c 0x3a)"
		# The CPU's own revision identifier (Linux wrote it into its VMXON
		# regions at boot): the one the bare oracle saw.
		expect_eq "cpu$c revision" "basic_revision=$(printf '0x%x' $((basic & 0x7fffffff)))" \
			"$(sed -n 's/^cpu=[0-9]* //p' /tmp/oracle.bare)"
		[ $(( (p2 >> 33) & 1 )) = 0 ] || fail "cpu$c: EPT offered"
		[ $(( (p2 >> 46) & 1 )) = 0 ] || fail "cpu$c: VMCS shadowing offered"
		[ $(( (p2 >> 37) & 1 )) = 1 ] || fail "cpu$c: VPID not offered"
		# TSC scaling: offered exactly when the bare CPU has it.
		expect_eq "cpu$c TSC scaling offered" $(( (p2 >> 57) & 1 )) $(( ($(cat /tmp/p2.bare) >> 57) & 1 ))
		[ "$c" = 0 ] && first=$p2
		expect_eq "cpu$c PROCBASED_CTLS2 same as cpu0" "$p2" "$first"
		/bin/rdmsr -c $c 0x491 >/dev/null 2>&1 && fail "cpu$c: IA32_VMX_VMFUNC readable (VM functions hidden)"
	done
	ecx=$(/bin/cpuid 1 | cut -d' ' -f3)
	[ $(( (0x$ecx >> 5) & 1 )) = 1 ] || fail "CPUID.1:ECX.VMX not shown: ecx=$ecx"
}

t_oracle_pkvm() {
	oracle /tmp/oracle.pkvm
	cat /tmp/oracle.pkvm
}

# The emulator's own VMX is the reference.  Lines that legitimately differ,
# because the view hides a feature the bare CPU has: INVEPT (EPT is not
# offered: #UD under pkvm) and VMPTRLD of a region with bit 31 set (a
# shadow VMCS: accepted with VMCS shadowing, which pkvm does not offer its
# host, VMfailValid(11) without).  The first line names the CPU.
t_oracle_matches_bare() {
	filt() { grep -v -e '^cpu=' -e '^invept_single:' -e '^vmptrld_shadow_indicator:' "$1"; }
	filt /tmp/oracle.bare > /tmp/o.bare
	filt /tmp/oracle.pkvm > /tmp/o.pkvm
	diff /tmp/o.bare /tmp/o.pkvm || fail "the oracle differs from the bare CPU"
	expect_eq "lines compared" "$(wc -l < /tmp/o.pkvm)" "$(wc -l < /tmp/o.bare)"
	[ "$(wc -l < /tmp/o.pkvm)" -gt 80 ] || fail "too few oracle lines"
	grep -q '^invept_single: fault vector=6$' /tmp/oracle.pkvm || fail "INVEPT not #UD under pkvm"
	grep -q '^vmptrld_shadow_indicator: VMfailValid error=11 ' /tmp/oracle.pkvm || fail "shadow indicator accepted under pkvm"
	expect_eq "revision" "$(sed -n 's/^cpu=[0-9]* //p' /tmp/oracle.pkvm)" "$(sed -n 's/^cpu=[0-9]* //p' /tmp/oracle.bare)"
}

t_user_pkvm() {
	/bin/vmx_user > /tmp/user.pkvm
	diff /tmp/user.bare /tmp/user.pkvm || fail "CPL 3 outside VMX operation differs from the bare CPU"
}

t_kvm_intel_loads() {
	insmod /lib/modules/irqbypass.ko 2>/dev/null
	insmod /lib/modules/kvm.ko || fail "insmod kvm"
	if ! insmod /lib/modules/kvm-intel.ko; then
		dmesg | tail -20
		fail "kvm-intel did not load under pkvm"
		return 1
	fi
	[ -c /dev/kvm ] || fail "/dev/kvm missing"
	dmesg | grep -i kvm | tail -5
	expect_eq "vmx_cpus" "$(sed -n 's/^vmx_cpus: //p' $DBG/status)" "$(ncpu)"
}

# As Documentation/nested.rst says they read.
t_kvm_params() {
	for p in ept unrestricted_guest enable_apicv vpid nested enable_shadow_vmcs pml preemption_timer flexpriority; do
		echo "$p=$(cat $P/$p)"
	done
	expect_eq ept "$(cat $P/ept)" N
	expect_eq unrestricted_guest "$(cat $P/unrestricted_guest)" N
	expect_eq enable_apicv "$(cat $P/enable_apicv)" N
	expect_eq vpid "$(cat $P/vpid)" Y
	expect_eq nested "$(cat $P/nested)" Y
	expect_eq enable_shadow_vmcs "$(cat $P/enable_shadow_vmcs)" N
	expect_eq pml "$(cat $P/pml)" N
	expect_eq preemption_timer "$(cat $P/preemption_timer)" N
}

t_kvm_vcpus() {
	/bin/kvm_vcpus 3 > /tmp/kvm.out 2>&1
	rc=$?
	cat /tmp/kvm.out
	[ $rc = 0 ] && grep -q '^done$' /tmp/kvm.out || fail "KVM_CREATE_VM / KVM_CREATE_VCPU failed"
	# Both CPUs run the vCPU threads in turn on 2 CPUs: VMCLEAR on migration.
	for c in $(seq 0 $(($(ncpu) - 1))); do
		taskset -c $c /bin/kvm_vcpus 1 > /dev/null || fail "kvm_vcpus on cpu$c"
	done
	/bin/workload 4 1 > /dev/null || fail "host broken after KVM use"
}

# The same guest under pkvm (kvm_intel with its default parameters, the
# view making them the bare run's): every exit and register identical.
t_guest_pkvm() {
	/bin/kvm_guest -n $GUEST_N > /tmp/guest.pkvm
	rc=$?
	cat /tmp/guest.pkvm
	[ $rc = 0 ] || fail "the guest failed under pkvm"
	diff /tmp/guest.bare /tmp/guest.pkvm || fail "the guest under pkvm differs from bare KVM"
	grep -q "^summary: iterations=$GUEST_N io_exits=$GUEST_N hlt_exits=$GUEST_N ok$" /tmp/guest.pkvm ||
		fail "summary"
}

# On every CPU, and migrating between them (VMCLEAR on the old CPU, a
# fresh vmcs02 on the new one), and several VMs at once.
t_guest_cpus() {
	for c in $(seq 0 $(($(ncpu) - 1))); do
		taskset -c $c /bin/kvm_guest -q -n $GUEST_N > /tmp/g.$c || fail "guest on cpu$c: $(cat /tmp/g.$c)"
		cat /tmp/g.$c
	done
	pids=
	for i in 1 2 3; do
		/bin/kvm_guest -q -n 100 > /tmp/g.m$i & pids="$pids $!"
	done
	for p in $pids; do wait $p || fail "concurrent guest failed"; done
	cat /tmp/g.m1 /tmp/g.m2 /tmp/g.m3
	/bin/workload 4 1 > /dev/null || fail "host broken after running guests"
}

# Several vCPUs of one VM run in turn from one thread that changes CPU
# before every KVM_RUN (selftests/tools/kvm_vcpus_rr.c; KVM's msrs_test
# does this unpinned): VMCLEAR by IPI on the old CPU, VMPTRLD on the new,
# a switch of the current VMCS at every turn, first VMLAUNCHes after a
# move, VMCS pages freed and reused over rounds.  Every exit and register
# of every vCPU checked.
t_vcpus_round_robin() {
	/bin/kvm_vcpus_rr -v 3 -n 20 -r 3 > /tmp/rr.out 2>&1
	rc=$?
	cat /tmp/rr.out
	[ $rc = 0 ] || fail "vCPUs run in turn across CPUs: $(grep -v summary /tmp/rr.out | head -1)"
	grep -q "^summary: cpus=$(ncpu) vcpus=3 iterations=20 rounds=3 cpuids=1 ok$" /tmp/rr.out || fail "summary"
}

# The vmcs12 store under stress (debug module): with nested_stress on,
# every VMX instruction of the host and every exit reflected to it write
# every cached vmcs12 back to its page and drop it, so each VMPTRLD,
# VMLAUNCH/VMRESUME, drain and refill of the shadow VMCS reads its vmcs12
# back from the host's page, on whichever CPU.  Six vCPUs run in turn
# with 16 CPUID exits inside each KVM_RUN while a second thread keeps
# moving the running thread between CPUs (KVM preempted inside KVM_RUN:
# VMCLEAR by IPI on the old CPU, VMPTRLD on the new, between KVM's
# VMWRITE of the guest's RIP through the shadow VMCS and the VMRESUME it
# is for).  Every VMWRITE of the host must survive: every exit and
# register checked per vCPU.  Then again without stress, and the shadow
# never lost its vmcs12 (shadow_unsynced), nothing unexpected, the
# invariants hold.
t_vcpus_stress() {
	insmod /lib/modules/pkvm_x86-debug.ko debug=1 nested_ept=0 || fail "insmod debug nested_ept=0" || return 1
	insmod /lib/modules/kvm.ko && insmod /lib/modules/kvm-intel.ko || fail "kvm_intel"
	echo nested_stress 1 > $CTL
	expect_eq "stress mode on" "$(cat $CTL)" "ok nested_stress=1 was=0"
	/bin/kvm_vcpus_rr -v 6 -n 6 -r 2 -c 16 -m > /tmp/rrs.out 2>&1
	rc=$?
	echo nested_stress 0 > $CTL
	cat /tmp/rrs.out
	[ $rc = 0 ] || fail "under stress: $(grep -v summary /tmp/rrs.out | head -1)"
	/bin/kvm_vcpus_rr -v 6 -n 6 -r 1 -c 16 -m > /tmp/rrm.out 2>&1 || fail "migrating: $(grep -v summary /tmp/rrm.out | head -1)"
	cat /tmp/rrm.out
	for c in $(seq 0 $(($(ncpu) - 1))); do
		echo nested_stats $c > $CTL
		st=$(cat $CTL)
		echo "hypervisor cpu$c: $st"
		v() { echo "$st" | tr ' ' '\n' | sed -n "s/^$1=//p"; }
		[ "$(v unexpected)" = 0 ] || fail "cpu$c: unexpected vmcs02 exits"
		[ "$(v shadow_unsynced)" = 0 ] || fail "cpu$c: shadow VMCS lost its vmcs12"
	done
	echo check > $CTL
	expect_eq "invariants after the stress" "$(cat $CTL)" "ok invariants hold"
	rmmod kvm_intel; rmmod kvm
	pkvm_rmmod || fail "rmmod"
}

# In VMX operation: #GP(0) at CPL 3 as on the bare CPU, except INVEPT
# (#UD: EPT is not offered).
t_user_pkvm_in_vmx() {
	/bin/vmx_user > /tmp/user.pkvm.vmx
	paste /tmp/user.bare.vmx /tmp/user.pkvm.vmx
	diff /tmp/user.bare.vmx /tmp/user.pkvm.vmx | grep '^[<>]' | grep -v ' invept: ' && fail "CPL 3 in VMX operation differs from the bare CPU"
	grep -q '^invept: SIGILL$' /tmp/user.pkvm.vmx || fail "INVEPT at CPL 3 under pkvm is not #UD"
	grep -q '^vmread: SIGSEGV$' /tmp/user.pkvm.vmx || fail "VMREAD at CPL 3 in VMX operation is not #GP"
}

t_rmmod_refused_while_vmx() {
	if rmmod pkvm_x86 2>/tmp/rmmod.err; then
		fail "pkvm_x86 unloaded while kvm_intel is in VMX operation"
		return 1
	fi
	cat /tmp/rmmod.err
	# A module's exit cannot refuse: the reference the host half holds
	# makes delete_module(2) answer EAGAIN (EWOULDBLOCK), which busybox's
	# rmmod prints (kmod's checks the refcount first: "in use").
	grep -q "can't unload module 'pkvm_x86': Resource temporarily unavailable" /tmp/rmmod.err ||
		fail "rmmod pkvm_x86 not refused with EAGAIN"
	grep '^pkvm_x86 ' /proc/modules
	grep -q '^pkvm_x86 [0-9]* 1 ' /proc/modules || fail "pkvm_x86 not held (refcount)"
	[ "$(/bin/cpuid -s)" = pkvm-x86 ] || fail "pkvm gone"
	/bin/workload 4 1 > /dev/null || fail "workload"
	/bin/kvm_vcpus 1 > /dev/null || fail "KVM broken after the refused rmmod"
}

t_rmmod_after_kvm() {
	rmmod kvm_intel || fail "rmmod kvm_intel"
	rmmod kvm || fail "rmmod kvm"
	expect_eq "vmx_cpus after rmmod kvm_intel" "$(sed -n 's/^vmx_cpus: //p' $DBG/status)" 0
	grep '^pkvm_x86 ' /proc/modules
	pkvm_rmmod || fail "rmmod pkvm_x86 after kvm_intel"
	[ "$(/bin/cpuid -s)" != pkvm-x86 ] || fail "still deprivileged"
}

# expect_line FILE STEP RESULT
expect_line() {
	got=$(sed -n "s/^$2: //p" "$1" | head -1)
	case "$got" in "$3"*) ;; *) fail "$2: got '$got', want '$3...'" ;; esac
}

hostile() { echo "$*" > $H || return 1; cat $H; }

# VMX regions and memory operands on memory the host does not own.  The
# donated page holds the revision identifier in every word, so that
# without the ownership checks VMXON and VMPTRLD would succeed on it and
# VMWRITE would copy its contents into the vmcs12 (read back by VMREAD).
t_hostile_regions() {
	insmod /lib/modules/pkvm_x86-debug.ko debug=1 nested_ept=0 || fail "insmod debug nested_ept=0" || return 1
	insmod /lib/modules/pkvm_hostile.ko || fail "insmod hostile"
	check() { # FILE: the common expectations
		expect_line "$1" hostile_vmxon VMfailInvalid
		expect_line "$1" vmxon VMsucceed
		expect_line "$1" hostile_vmptrld "VMfailValid error=9"
		expect_line "$1" hostile_vmclear "VMfailValid error=2"
		expect_line "$1" vmread_rip "VMsucceed"
		grep -q '^vmread_rip: value=0x5555$' "$1" || fail "vmcs12 changed: $(grep vmread_rip "$1")"
	}
	pool=$(echo pool_pa > $CTL && cat $CTL | sed -n 's/^ok //p')
	echo "pool page $pool"
	oracle /tmp/h.pool hostile_pa=$pool
	cat /tmp/h.pool
	check /tmp/h.pool
	# The module image (pinned, read-only for the host).
	base=$(sed -n 's/^pkvm_x86 .* \(0x[0-9a-f]*\).*$/\1/p' /proc/modules)
	echo "module image at $base"
	pfn=$(hostile pfn $base | sed -n 's/^ok //p')
	before=$(hostile read $pfn 8)
	oracle /tmp/h.image hostile_pa=$((pfn << 12))
	cat /tmp/h.image
	check /tmp/h.image
	expect_eq "module image word 1 after VMCLEAR" "$(hostile read $pfn 8)" "$before"
	# A page donated to the hypervisor, full of the revision identifier.
	rev=$(sed -n 's/^cpu=[0-9]* basic_revision=//p' /tmp/oracle.bare)
	rev2=$(printf '0x%x' $(( (rev << 32) | rev )))
	dpfn=$(hostile alloc $rev2 | sed -n 's/^ok //p')
	hostile vmcall 0 0x10 $dpfn 1 | grep -q 'rax=0x0 ' || fail "donate"
	oracle /tmp/h.donated hostile_pa=$((dpfn << 12)) hostile_direct=1
	cat /tmp/h.donated
	check /tmp/h.donated
	expect_line /tmp/h.donated hostile_vmwrite_src "fault vector=14"
	expect_line /tmp/h.donated hostile_vmread_dest "fault vector=14"
	hostile vmcall 0 0x11 $dpfn 1 | grep -q 'rax=0x0 ' || fail "give back"
	expect_eq "donated page word 1 after VMCLEAR" "$(hostile read $dpfn 8)" "ok $rev2"
	expect_eq "donated page word 2 after VMREAD" "$(hostile read $dpfn 0x10)" "ok $rev2"
	rmmod pkvm_hostile
	pkvm_rmmod || fail "rmmod"
}

# Hypervisor memory for the hostile VM entries: a pool page, a frame of
# pkvm_x86.ko's text, and a page full of a canary pattern donated to the
# hypervisor (ENTRY_CANARY_PFN; root mode counts its words afterwards).
ENTRY_PAT=0x6b6b6b6b6b6b6b6b
entry_targets() {
	pool=$(echo pool_pa > $CTL && cat $CTL | sed -n 's/^ok //p')
	base=$(sed -n 's/^pkvm_x86 .* \(0x[0-9a-f]*\).*$/\1/p' /proc/modules)
	ipfn=$(hostile pfn $base | sed -n 's/^ok //p')
	image_word=$(hostile read $ipfn 0)
	[ -z "$ENTRY_CANARY_PFN" ] && {
		ENTRY_CANARY_PFN=$(hostile alloc $ENTRY_PAT | sed -n 's/^ok //p')
		hostile vmcall 0 0x10 $ENTRY_CANARY_PFN 1 | grep -q 'rax=0x0 ' || fail "donate the canary"
	}
	ENTRY_ARGS="pool_pa=$pool image_pa=$((ipfn << 12)) canary_pa=$((ENTRY_CANARY_PFN << 12))"
	echo "targets: $ENTRY_ARGS"
}

# Nothing of the hypervisor written: the canary page still holds its
# pattern in all 512 words (counted by root mode, debug build), the
# module image's first word is as before; the invariants hold and the
# hypervisor counted no internal error.
entry_untouched() {
	r=$(hostile vmcall 0 0x46 $ENTRY_CANARY_PFN $ENTRY_PAT)
	case "$r" in *"rax=0x200 "*) ;; *) fail "canary page changed: $r (want rax=0x200)" ;; esac
	expect_eq "module image word" "$(hostile read $ipfn 0)" "$image_word"
	echo check > $CTL
	expect_eq "invariants" "$(cat $CTL)" "ok invariants hold"
	no_internal_errors
	/bin/workload 4 1 > /dev/null || fail "host broken"
}

# Hostile VM entries of the host's own VMCS (selftests/vmx_entry), under
# the debug build: the steps the bare CPU has (cmp_*) give the bare
# answers; every host address of the VMCS on each kind of hypervisor
# memory fails the entry (VMfailValid 7 for control addresses, the link
# pointer's guest-state failure, exit reason 34 for the entry MSR-load
# area), the MSR bitmap, link pointer and entry MSR-load area also on a
# page filled to pass every other check, owned (the guest runs), donated
# (refused), given back (runs, unchanged); TSC scaling composed (the
# guest reads what the bare CPU gives it); hidden controls and their fields fail as on a CPU without them
# (VMWRITE: error 12, the entry: VMfailValid 7); a live guest's
# virtual-APIC and APIC-access pages are pinned (EBUSY), and released by
# VMCLEAR.
t_hostile_entry() {
	insmod /lib/modules/pkvm_x86-debug.ko debug=1 nested_ept=0 || fail "insmod debug nested_ept=0" || return 1
	insmod /lib/modules/pkvm_hostile.ko || fail "insmod hostile"
	ENTRY_CANARY_PFN=
	entry_targets
	lack=$(sed -n 's/^lacking_bit=//p' /tmp/entry.bare)
	kmod_log vmx_entry /tmp/entry.pkvm pkvm=1 lacking=${lack:-99} $ENTRY_ARGS
	cat /tmp/entry.pkvm
	grep '^cmp_' /tmp/entry.bare > /tmp/e.bare
	grep '^cmp_' /tmp/entry.pkvm > /tmp/e.pkvm
	diff /tmp/e.bare /tmp/e.pkvm || fail "the entries differ from the bare CPU"
	[ "$(wc -l < /tmp/e.pkvm)" -ge 30 ] || fail "too few compared lines"
	if [ -n "$lack" ]; then
		expect_line /tmp/entry.pkvm cmp_lacking_control "VMfailValid error=7"
	fi
	for t in pool image canary; do
		for a in io_bitmap_a io_bitmap_b msr_bitmap virtual_apic apic_access exit_msr_store exit_msr_load; do
			expect_line /tmp/entry.pkvm hostile_${t}_$a "VMfailValid error=7"
		done
		expect_line /tmp/entry.pkvm hostile_${t}_link_pointer "exit reason=0x80000021 qual=0x4"
		expect_line /tmp/entry.pkvm hostile_${t}_entry_msr_load "exit reason=0x80000022 qual=0x1"
	done
	# The same three on the module's own page filled to pass every other
	# check, donated: only the ownership check stops them (vmx_entry.c
	# bait_steps); given back, the guest runs again on it.
	expect_line /tmp/entry.pkvm bait_donate "rax=0x0"
	expect_line /tmp/entry.pkvm hostile_donated_msr_bitmap "VMfailValid error=7"
	expect_line /tmp/entry.pkvm hostile_donated_link_pointer "exit reason=0x80000021 qual=0x4"
	expect_line /tmp/entry.pkvm hostile_donated_entry_msr_load "exit reason=0x80000022 qual=0x1"
	expect_line /tmp/entry.pkvm bait_back "rax=0x0"
	expect_line /tmp/entry.pkvm bait_unchanged "yes"
	for a in msr_bitmap link_pointer entry_msr_load; do
		expect_line /tmp/entry.pkvm bait_back_$a "exit reason=0xa qual=0x0"
	done
	sed -n 's/^\(hidden_[a-z_]*_vmwrite_0x[0-9a-f]*\): .*/\1/p' /tmp/entry.pkvm | while read s; do
		expect_line /tmp/entry.pkvm $s "VMfailValid error=12"
	done
	[ "$(grep -c '^hidden_.*_launch: VMfailValid error=7$' /tmp/entry.pkvm)" = 10 ] ||
		fail "a hidden control did not fail the entry with VMfailValid(7)"
	if bare_tsc_scaling; then
		expect_line /tmp/entry.pkvm cmp_tsc_scaling_guest_tsc "0x123456789abc "
	fi
	expect_line /tmp/entry.pkvm pinned_launch "exit reason=0xa qual=0x0"
	expect_line /tmp/entry.pkvm pinned_donate_virtual_apic "rax=0xfffffffffffffff0"
	expect_line /tmp/entry.pkvm pinned_donate_apic_access "rax=0xfffffffffffffff0"
	expect_line /tmp/entry.pkvm pinned_resume "exit reason=0xa qual=0x0"
	for p in released_donate_virtual_apic released_back_virtual_apic released_donate_apic_access \
		released_back_apic_access; do
		expect_line /tmp/entry.pkvm $p "rax=0x0"
	done
	entry_untouched
}

# Random VMWRITE sequences before VMLAUNCH/VMRESUME, on every CPU at once
# (selftests/vmx_entry fuzz=N): every outcome architectural (VMWRITE:
# success or error 12; the entry: VMfailValid 7/8, a failed entry 33/34,
# or a guest that ran and exited), the histogram printed; afterwards the
# invariants hold, no internal error, nothing of the hypervisor changed.
ENTRY_FUZZ=${ENTRY_FUZZ:-3000}
t_entry_fuzz() {
	grep -q '^pkvm_hostile ' /proc/modules || { fail "needs hostile_entry's state"; return 1; }
	entry_targets
	kmod_log vmx_entry /tmp/entry.fuzz fuzz=$ENTRY_FUZZ seed=${ENTRY_SEED:-20261130} $ENTRY_ARGS
	cat /tmp/entry.fuzz
	for c in $(seq 0 $(($(ncpu) - 1))); do
		grep -q "^fuzz cpu=$c iterations=$ENTRY_FUZZ " /tmp/entry.fuzz || fail "cpu$c did not fuzz"
		grep -q "^fuzz cpu=$c unexpected=0$" /tmp/entry.fuzz || fail "cpu$c: outcomes that are not architectural"
		grep "^fuzz cpu=$c outcome" /tmp/entry.fuzz | grep -q ' exit10=[1-9]' || fail "cpu$c: no guest ran"
		grep "^fuzz cpu=$c outcome" /tmp/entry.fuzz | grep -q ' vmfail7=[1-9]' || fail "cpu$c: no entry refused"
	done
	grep -q 'fuzz unexpected' /tmp/entry.fuzz && fail "unexpected outcomes"
	for c in $(seq 0 $(($(ncpu) - 1))); do
		echo nested_stats $c > $CTL
		echo "hypervisor cpu$c: $(cat $CTL)"
	done
	entry_untouched
	hostile vmcall 0 0x11 $ENTRY_CANARY_PFN 1 | grep -q 'rax=0x0 ' || fail "give the canary back"
	expect_eq "canary page after" "$(hostile read $ENTRY_CANARY_PFN 0x800)" "ok $ENTRY_PAT"
	rmmod pkvm_hostile
	pkvm_rmmod || fail "rmmod"
}

# The benchmark: hardware exits taken by the hypervisor per guest exit
# the host sees, over the guest's CPUID / port I/O / HLT loop on cpu0
# (debug module: the counters are read through its debug interface).
t_guest_bench() {
	insmod /lib/modules/pkvm_x86-debug.ko debug=1 nested_ept=0 || fail "insmod debug nested_ept=0" || return 1
	insmod /lib/modules/kvm.ko && insmod /lib/modules/kvm-intel.ko || fail "kvm_intel"
	taskset -c 0 /bin/kvm_guest -q -n 10 > /dev/null || fail "warm-up guest"
	echo nested_stats_reset 0 > $CTL
	taskset -c 0 /bin/kvm_guest -q -n 200 || fail "bench guest"
	echo nested_stats 0 > $CTL
	st=$(cat $CTL)
	echo "$st"
	v() { echo "$st" | tr ' ' '\n' | sed -n "s/^$1=//p"; }
	refl=$(v reflected); hv=$(v hv_exits)
	[ "${refl:-0}" -gt 0 ] || fail "no guest exit reflected"
	[ "$(v unexpected)" = 0 ] || fail "unexpected vmcs02 exits"
	per() { awk "BEGIN{printf \"%.2f\", $1 / $refl}"; }
	echo "BENCH nested_guest_exits $refl (cpuid $(v reflected_cpuid) io $(v reflected_io) hlt $(v reflected_hlt))"
	echo "BENCH nested_hv_exits_per_guest_exit $(per $hv) (floor 2 with VMCS shadowing)"
	echo "BENCH nested_ratio_to_floor $(awk "BEGIN{printf \"%.2f\", $hv / $refl / 2}")"
	echo "BENCH nested_vmread_exits_per_guest_exit $(per $(v hv_vmread))"
	echo "BENCH nested_vmwrite_exits_per_guest_exit $(per $(v hv_vmwrite))"
	echo "BENCH nested_vmresume_exits_per_guest_exit $(per $(v hv_vmresume))"
	# VMCS shadowing: KVM's hot-path VMREAD/VMWRITEs do not exit.
	rw=$(( $(v hv_vmread) + $(v hv_vmwrite) ))
	[ $((rw * 10)) -lt "$refl" ] || fail "VMREAD/VMWRITE exits per guest exit not below 0.1: $rw for $refl"
	echo check > $CTL
	expect_eq "invariants with guests" "$(cat $CTL)" "ok invariants hold"
	guest_hostile_slot
	guest_pinned

	rmmod kvm_intel; rmmod kvm
	echo nested_stats 0 > $CTL
	expect_eq "pinned frames after rmmod kvm_intel" "$(cat $CTL | tr ' ' '\n' | sed -n 's/^pinned_frames=//p')" 0
	pkvm_rmmod || fail "rmmod"
}

# A guest memory slot backed by a remap_pfn_range of a frame (the hostile
# module's "mem" file): a page the host owns is read by the guest (the
# control: the tool would show any page's contents), memory the host does
# not own (a page full of the pattern donated to the hypervisor, the pool)
# is neither read nor written: the guest's access is refused by the host
# EPT and the host sees its guest triple-fault (KVM_EXIT_SHUTDOWN); the
# host CPU goes on.  The module image is the host's to read (its host half
# runs from it), so its shadow-paging guests read it too (they run on the
# host EPT; with nested_ept=1 the shadow EPT refuses it), but never write
# it: the write is refused the same way and the image is unchanged.
guest_hostile_slot() {
	insmod /lib/modules/pkvm_hostile.ko || fail "insmod hostile"
	pat=0x5a5a5a5a5a5a5a5a
	dpfn=$(hostile alloc $pat | sed -n 's/^ok //p')
	hostile map $dpfn > /dev/null
	taskset -c 0 /bin/kvm_guest -m /sys/kernel/debug/pkvm_hostile/mem > /tmp/slot.own
	cat /tmp/slot.own
	expect_eq "guest reads a host page" "$(cat /tmp/slot.own)" "hostile slot: exit=io read=0x5a5a5a5a"
	hostile vmcall 0 0x10 $dpfn 1 | grep -q 'rax=0x0 ' || fail "donate"
	echo nested_stats 0 > $CTL
	before=$(cat $CTL | tr ' ' '\n' | sed -n 's/^protected=//p')
	for what in donated pool donated-write; do
		case $what in
		donated*) pfn=$dpfn ;;
		pool) pfn=$(( $(echo pool_pa > $CTL && cat $CTL | sed -n 's/^ok //p') >> 12 )) ;;
		esac
		w=; [ $what = donated-write ] && w=-w
		hostile map $pfn > /dev/null
		taskset -c 0 /bin/kvm_guest $w -m /sys/kernel/debug/pkvm_hostile/mem > /tmp/slot.$what
		echo "$what (pfn $pfn): $(cat /tmp/slot.$what)"
		expect_eq "guest on $what memory" "$(cat /tmp/slot.$what)" "hostile slot: exit=shutdown read=0x00000000"
	done
	# The module image: read as the host reads it, never written.
	base=$(sed -n 's/^pkvm_x86 .* \(0x[0-9a-f]*\).*$/\1/p' /proc/modules)
	ipfn=$(hostile pfn $base | sed -n 's/^ok //p')
	iword=$(hostile read $ipfn 0 | sed -n 's/^ok //p')
	hostile map $ipfn > /dev/null
	taskset -c 0 /bin/kvm_guest -m /sys/kernel/debug/pkvm_hostile/mem > /tmp/slot.image
	echo "module image (pfn $ipfn, word $iword): $(cat /tmp/slot.image)"
	expect_eq "guest reads the module image as the host does" "$(cat /tmp/slot.image)" \
		"hostile slot: exit=io read=$(printf 0x%08x $((iword & 0xffffffff)))"
	taskset -c 0 /bin/kvm_guest -w -m /sys/kernel/debug/pkvm_hostile/mem > /tmp/slot.image-write
	echo "module image write: $(cat /tmp/slot.image-write)"
	expect_eq "guest writing the module image" "$(cat /tmp/slot.image-write)" "hostile slot: exit=shutdown read=0x00000000"
	expect_eq "module image unchanged" "$(hostile read $ipfn 0 | sed -n 's/^ok //p')" "$iword"
	echo nested_stats 0 > $CTL
	after=$(cat $CTL | tr ' ' '\n' | sed -n 's/^protected=//p')
	expect_eq "protected-memory touches counted" "$((after - before))" 4
	/bin/workload 4 1 > /dev/null || fail "host CPU wedged after the hostile slots"
	hostile vmcall 0 0x11 $dpfn 1 | grep -q 'rax=0x0 ' || fail "give back"
	expect_eq "donated page untouched" "$(hostile read $dpfn 0)" "ok $pat"
	rmmod pkvm_hostile
}

# The host cannot donate a frame a live vmcs02 uses: while a guest's vCPU
# (held alive on cpu0) has run, its vmcs12 (KVM's current VMCS on cpu0)
# is pinned: HOST_DONATE_HYP of it answers EBUSY.  (Without the pin the
# donation succeeds and the hypervisor would reflect the next exit into a
# page it owns.)
guest_pinned() {
	insmod /lib/modules/pkvm_hostile.ko || fail "insmod hostile"
	taskset -c 0 /bin/kvm_guest -q -n 5 -s 2 > /tmp/hold.out &
	hp=$!
	while ! grep -q holding /tmp/hold.out; do sleep 1; done
	cur=$(hostile vmptrst 0 | sed -n 's/^ok //p')
	echo "KVM's current VMCS on cpu0: $cur"
	echo nested_stats 0 > $CTL
	pinned=$(cat $CTL | tr ' ' '\n' | sed -n 's/^pinned_frames=//p')
	[ "${pinned:-0}" -ge 1 ] || fail "no frame pinned while a vmcs02 is live"
	r=$(hostile vmcall 0 0x10 $((cur >> 12)) 1)
	echo "donate vmcs12: $r"
	case "$r" in *"rax=0xfffffffffffffff0 "*) ;; *) fail "donating the pinned vmcs12: $r, want EBUSY" ;; esac
	wait $hp || fail "held guest"
	rmmod pkvm_hostile
}

t_dmesg_clean() {
	dmesg_clean || fail "kernel log has warnings"
}
