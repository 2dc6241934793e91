# selftests/suite-caps.sh: the capability-probe module on a VMX CPU.
# Loads pkvm_x86, checks its log line and debugfs files against what the
# CPU reports, unloads and reloads it, and checks KVM still loads after.

DBG=/sys/kernel/debug/pkvm_x86
TESTS="insmod summary_logged caps_file raw_msrs cpus_checked rmmod reload_cycle kvm_after dmesg_clean"

t_insmod() {
	insmod /lib/modules/pkvm_x86.ko || fail "insmod pkvm_x86 failed"
	grep -q '^pkvm_x86 ' /proc/modules || fail "pkvm_x86 not in /proc/modules"
}

t_summary_logged() {
	line=$(dmesg | grep 'pkvm_x86: .*CPUs: VMX rev') || fail "no summary line in dmesg"
	echo "$line"
	n=$(grep -c ^processor /proc/cpuinfo)
	echo "$line" | grep -q "pkvm_x86: $n CPUs: " || fail "summary does not count $n CPUs"
}

t_caps_file() {
	[ -r $DBG/caps ] || fail "$DBG/caps missing"
	cat $DBG/caps
	# Every required feature is reported present, and SPP/VPID as the
	# CPU model (corei7_icelake_u / tigerlake) has them.
	if grep '(required)' $DBG/caps | grep -v ': yes (required)'; then fail "a required feature is missing"; fi
	for f in ept vmcs-shadowing unrestricted-guest ept-1g-pages spp vpid; do
		grep -q "^$f: yes" $DBG/caps || fail "$f not reported"
	done
	# Read-only: writing must fail.
	if echo 1 > $DBG/caps 2>/dev/null; then fail "caps is writable"; fi
}

t_raw_msrs() {
	cat $DBG/raw_msrs
	basic=$(sed -n 's/^IA32_VMX_BASIC (0x480): //p' $DBG/raw_msrs)
	[ -n "$basic" ] || fail "IA32_VMX_BASIC missing"
	# Cross-check against the msr driver when it is there.
	if [ -c /dev/cpu/0/msr ]; then
		want=$(/bin/rdmsr 0x480)
		expect_eq "IA32_VMX_BASIC" "$basic" "$want"
	fi
	rev=$(sed -n 's/^vmcs_revision: //p' $DBG/caps)
	expect_eq "vmcs revision" "$(printf '%#x' $((basic & 0x7fffffff)))" "$rev"
}

t_cpus_checked() {
	expect_eq "cpus_checked" "$(cat $DBG/cpus_checked)" "$(grep -c ^processor /proc/cpuinfo)"
}

t_rmmod() {
	pkvm_rmmod || fail "rmmod failed"
	if grep -q '^pkvm_x86 ' /proc/modules; then fail "still loaded"; fi
	if [ -e $DBG ]; then fail "$DBG left behind"; fi
	dmesg | tail -3 | grep -q 'pkvm_x86: unloaded' || fail "no unload message"
}

t_reload_cycle() {
	for i in 1 2 3; do
		insmod /lib/modules/pkvm_x86.ko || fail "insmod #$i"
		cat $DBG/cpus_checked >/dev/null || fail "debugfs after insmod #$i"
		pkvm_rmmod || fail "rmmod #$i"
	done
}

t_kvm_after() {
	for m in irqbypass kvm kvm-intel; do
		[ -f /lib/modules/$m.ko ] || continue
		insmod /lib/modules/$m.ko || fail "insmod $m"
	done
	[ -c /dev/kvm ] || fail "/dev/kvm missing after loading kvm-intel"
	rmmod kvm_intel && rmmod kvm || fail "rmmod kvm"
}

t_dmesg_clean() {
	dmesg_clean
}
