# selftests/suite-nested-ept.sh: the shadow EPT, experimental (issue 10;
# Documentation/shadow-ept.rst, Documentation/nested.rst "EPT for the
# host's KVM (experimental, nested_ept=1)").  pkvm loaded with
# nested_ept=1 offers EPT and unrestricted guest: the stock kvm_intel loads
# with its defaults and reads ept=Y unrestricted_guest=Y, the same guest
# runs as on bare KVM with EPT, on every CPU, and the invariants hold.

DBG=/sys/kernel/debug/pkvm_x86
CTL=$DBG/debug/ctl
P=/sys/module/kvm_intel/parameters
TESTS="guest_bare insmod_pkvm_ept view_offers_ept kvm_params_ept guest_pkvm_ept guest_cpus_ept ept_stats \
rmmod_all invariants_after dmesg_clean"
GUEST_N=20

ncpu() { grep -c ^processor /proc/cpuinfo; }

# Bare KVM with its defaults (EPT on): the baseline.
t_guest_bare() {
	insmod /lib/modules/irqbypass.ko 2>/dev/null
	insmod /lib/modules/kvm.ko && insmod /lib/modules/kvm-intel.ko || fail "bare kvm_intel"
	echo "bare: ept=$(cat $P/ept) unrestricted_guest=$(cat $P/unrestricted_guest)"
	/bin/kvm_guest -n $GUEST_N > /tmp/guest.bare
	rc=$?
	cat /tmp/guest.bare
	rmmod kvm_intel; rmmod kvm
	[ $rc = 0 ] || fail "the guest failed on bare KVM"
}

t_insmod_pkvm_ept() {
	insmod /lib/modules/pkvm_x86-debug.ko debug=1 nested_ept=1 || fail "insmod nested_ept=1" || return 1
	[ "$(/bin/cpuid -s)" = pkvm-x86 ] || fail "not deprivileged"
	dmesg | grep -q 'nested_ept=1' || fail "no nested_ept message"
}

# EPT (bit 33) and unrestricted guest (bit 39) offered, the same view on
# every CPU; INVEPT single-context and all-context in EPT_VPID_CAP.
t_view_offers_ept() {
	for c in $(seq 0 $(($(ncpu) - 1))); do
		p2=$(/bin/rdmsr -c $c 0x48b)
		cap=$(/bin/rdmsr -c $c 0x48c)
		echo "cpu$c PROCBASED_CTLS2=$p2 EPT_VPID_CAP=$cap"
		[ $(( (p2 >> 33) & 1 )) = 1 ] || fail "cpu$c: EPT not offered"
		[ $(( (p2 >> 39) & 1 )) = 1 ] || fail "cpu$c: unrestricted guest not offered"
		[ $(( (cap >> 25) & 3 )) = 3 ] || fail "cpu$c: INVEPT single/all not offered"
		[ $(( (cap >> 21) & 1 )) = 0 ] || fail "cpu$c: EPT A/D offered"
		[ "$c" = 0 ] && first="$p2 $cap"
		expect_eq "cpu$c view same as cpu0" "$p2 $cap" "$first"
	done
}

t_kvm_params_ept() {
	insmod /lib/modules/irqbypass.ko 2>/dev/null
	insmod /lib/modules/kvm.ko || fail "insmod kvm"
	if ! insmod /lib/modules/kvm-intel.ko; then
		dmesg | tail -20
		fail "kvm-intel did not load under pkvm with nested_ept=1"
		return 1
	fi
	for p in ept unrestricted_guest eptad pml enable_apicv vpid; do
		echo "$p=$(cat $P/$p)"
	done
	expect_eq ept "$(cat $P/ept)" Y
	expect_eq unrestricted_guest "$(cat $P/unrestricted_guest)" Y
	expect_eq eptad "$(cat $P/eptad)" N
	expect_eq pml "$(cat $P/pml)" N
}

# The same guest as on bare KVM with EPT: every exit and register identical.
t_guest_pkvm_ept() {
	echo nested_stats_reset 0 > $CTL
	timeout 300 /bin/kvm_guest -n $GUEST_N > /tmp/guest.pkvm
	rc=$?
	cat /tmp/guest.pkvm
	[ $rc = 0 ] || fail "the guest failed under pkvm with nested_ept=1 (rc=$rc)"
	diff /tmp/guest.bare /tmp/guest.pkvm || fail "the guest under pkvm differs from bare KVM"
}

t_guest_cpus_ept() {
	for c in $(seq 0 $(($(ncpu) - 1))); do
		taskset -c $c timeout 300 /bin/kvm_guest -q -n $GUEST_N > /tmp/g.$c || fail "guest on cpu$c: $(cat /tmp/g.$c)"
		cat /tmp/g.$c
	done
}

# The nested statistics: shadow-EPT faults and installs counted.
t_ept_stats() {
	echo nested_stats 0 > $CTL
	s=$(cat $CTL)
	echo "$s"
	for k in ept_faults ept_installs; do
		v=$(echo "$s" | tr ' ' '\n' | sed -n "s/^$k=//p")
		[ "${v:-0}" -ge 1 ] || fail "$k=${v:-missing}"
	done
}

t_rmmod_all() {
	rmmod kvm_intel || fail "rmmod kvm_intel"
	rmmod kvm
}

# The invariant checker (shadows included) after the guests and VMXOFF.
t_invariants_after() {
	echo check > $CTL
	r=$(cat $CTL)
	echo "$r"
	case "$r" in "ok invariants hold"*) ;; *) fail "invariants: $r" ;; esac
	rmmod pkvm_x86 || fail "rmmod pkvm_x86"
}

t_dmesg_clean() {
	dmesg_clean || fail "kernel log has warnings"
}
