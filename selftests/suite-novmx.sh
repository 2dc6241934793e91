# selftests/suite-novmx.sh: on a CPU without VMX, pkvm_x86 must refuse to
# load with ENODEV and a clear message, and leave nothing behind.
TESTS="refuses_to_load message no_debugfs dmesg_clean"

t_refuses_to_load() {
	if out=$(insmod /lib/modules/pkvm_x86.ko 2>&1); then
		fail "insmod succeeded on a CPU without VMX"
	fi
	echo "$out"
	echo "$out" | grep -q 'No such device' || fail "expected ENODEV, got: $out"
	if grep -q '^pkvm_x86 ' /proc/modules; then fail "module left loaded"; fi
}

t_message() {
	dmesg | grep 'pkvm_x86' 
	dmesg | grep -q 'pkvm_x86: cpu0: CPU does not support VMX' || fail "no clear message"
}

t_no_debugfs() {
	if [ -e /sys/kernel/debug/pkvm_x86 ]; then fail "debugfs dir exists"; fi
}

t_dmesg_clean() {
	dmesg_clean
}
