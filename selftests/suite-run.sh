# selftests/suite-run.sh: the README's main job inside the VM: load pkvm,
# show what it found, and stay loaded.
TESTS="load show"

t_load() {
	insmod /lib/modules/pkvm_x86.ko || fail "insmod pkvm_x86 failed"
}

t_show() {
	dmesg | grep 'pkvm_x86'
	cat /sys/kernel/debug/pkvm_x86/caps
}
