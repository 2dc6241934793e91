# selftests/suite-run.sh: the README's main job inside the VM: load pkvm,
# show that the host now runs deprivileged under it, and stay loaded.
TESTS="load show"

t_load() {
	insmod /lib/modules/pkvm_x86.ko || fail "insmod pkvm_x86 failed"
}

t_show() {
	dmesg | grep 'pkvm_x86'
	cat /sys/kernel/debug/pkvm_x86/status
	echo "CPUID 0x40000000 signature: $(/bin/cpuid -s)"
	/bin/workload 8 2
	cat /sys/kernel/debug/pkvm_x86/exits
	[ "$(/bin/cpuid -s)" = pkvm-x86 ] || fail "the host is not running under pkvm"
}
