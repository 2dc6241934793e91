# selftests/lib.sh: TAP helpers for the in-VM suites (busybox sh).
#
# A suite file defines shell functions named t_<name> and lists them, in
# order, in $TESTS.  tap_run_suite prints "1..N", runs each test with its
# output captured, and prints "ok K - name" or "not ok K - name" followed by
# the test's output as "# " comment lines.  A test fails by returning
# non-zero, or by calling `fail MSG` anywhere (which prints the reason and
# marks the test failed even if later commands succeed).

TAP_FAIL_MARK=/tmp/.pkvm-tap-failed
fail() { echo "FAIL: $*"; : > "$TAP_FAIL_MARK"; return 1; }

# expect_eq WHAT GOT WANT
expect_eq() {
	[ "$2" = "$3" ] || fail "$1: got '$2', want '$3'"
}

# dmesg_clean: no oops, BUG, WARN, panic or call trace in the kernel log.
dmesg_clean() {
	if dmesg | grep -E -q 'Oops|BUG:|WARNING:|Call Trace|general protection|Kernel panic|RIP:'; then
		dmesg | grep -E -A20 'Oops|BUG:|WARNING:|Call Trace|general protection|Kernel panic|RIP:' | head -60
		return 1
	fi
}

# no_internal_errors: the hypervisor counted no internal error (a page-state
# apply step that met a state its check ruled out); read from the
# `internal_errors:` line of the status file, which asks the hypervisor.
no_internal_errors() {
	n=$(sed -n 's/^internal_errors: //p' /sys/kernel/debug/pkvm_x86/status)
	[ "$n" = 0 ] || fail "hypervisor internal_errors: '$n', want 0"
}

# pkvm_rmmod: unloads pkvm_x86 after checking no_internal_errors; returns
# rmmod's status (a non-zero count fails the test through `fail`).
pkvm_rmmod() {
	no_internal_errors
	rmmod pkvm_x86
}

tap_run_suite() {
	set -- $TESTS
	echo "1..$#"
	n=0
	for t in "$@"; do
		n=$((n + 1))
		rm -f "$TAP_FAIL_MARK"
		out=$( (t_$t) 2>&1 )
		rc=$?
		[ -e "$TAP_FAIL_MARK" ] && [ $rc = 0 ] && rc=1
		if [ $rc = 0 ]; then echo "ok $n - $t"; else echo "not ok $n - $t (rc=$rc)"; fi
		[ -n "$out" ] && echo "$out" | sed 's/^/# /'
	done
}
