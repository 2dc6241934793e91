# selftests/suite-run.sh: the README's main job inside the VM: load pkvm,
# show that the host now runs deprivileged under it, then (when the VM was
# booted with the peer-suite initramfs: scripts/run.sh does) load the stock
# kvm_intel and boot a QEMU guest on the deprivileged host, its console
# shown, with a one-line summary of what the hypervisor did for it.  pkvm
# stays loaded.
TESTS="load show guest"

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

# The hypervisor's exit counters summed over CPUs, as "reason count" lines.
exit_counts() {
	grep -v '^cpu' /sys/kernel/debug/pkvm_x86/exits
}

t_guest() {
	Q=/opt/qemu
	if [ ! -x $Q/qemu ]; then
		echo "no QEMU in this VM (PKVM_RUN_GUEST=0): no guest"
		return 0
	fi
	insmod /lib/modules/irqbypass.ko 2>/dev/null
	insmod /lib/modules/kvm.ko || fail "insmod kvm" || return 1
	insmod /lib/modules/kvm-intel.ko || fail "insmod kvm-intel (stock, default parameters)" || return 1
	echo "kvm_intel under pkvm: ept=$(cat /sys/module/kvm_intel/parameters/ept)" \
		"vpid=$(cat /sys/module/kvm_intel/parameters/vpid)" \
		"enable_shadow_vmcs=$(cat /sys/module/kvm_intel/parameters/enable_shadow_vmcs)"
	exit_counts > /tmp/exits.before
	t0=$(cut -d' ' -f1 /proc/uptime)
	echo "== QEMU guest console (qemu-system-x86_64 -enable-kvm -cpu host -m 128, the test kernel) =="
	# The guest's console is kept (the suite prints a test's output when the
	# test ends, so it appears once the guest has reset); QEMU's exit status
	# comes back through the same pipe (busybox sh has no PIPESTATUS).
	{
		$Q/qemu -enable-kvm -cpu host -M pc -nodefaults -no-user-config -display none \
			-serial stdio -L $Q/share -m 128 -no-reboot -kernel /opt/guest/bzImage \
			-initrd /opt/guest/initrd.gz -append 'console=ttyS0 panic=-1' < /dev/null 2>&1
		echo "qemu-rc=$?"
	} | tee /tmp/guest.out
	t1=$(cut -d' ' -f1 /proc/uptime)
	rc=$(sed -n 's/^qemu-rc=//p' /tmp/guest.out | tail -n 1)
	exit_counts > /tmp/exits.after
	echo "== end of the guest console (qemu exit status $rc) =="
	grep -q PKVM-GUEST-UP /tmp/guest.out || fail "the QEMU guest did not reach its marker" || return 1
	# One line: what the hypervisor did for the guest (exit-count deltas).
	summary=$(awk 'NR==FNR { b[$1] = $2; next } { d = $2 - b[$1]; if (d > 0) print d, $1 }' \
		/tmp/exits.before /tmp/exits.after | sort -rn | head -n 7 | awk '{ printf "%s%s %s", (NR > 1 ? ", " : ""), $2, $1 }')
	echo "PKVM-RUN-SUMMARY guest booted to its shell marker and reset in $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }') s (test-VM clock); hypervisor exits while it ran: $summary"
	[ "$rc" = 0 ] || fail "qemu exit status $rc"
}
