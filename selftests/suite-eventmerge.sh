# selftests/suite-eventmerge.sh: the hypervisor merges an exception it
# reflects with the event whose delivery caused it (IDT-vectoring
# information), as the SDM says the CPU would, when the host's own event
# delivery runs into memory the host gave away.
#
# The hostile host (selftests/hostile) donates a page to the hypervisor,
# moves RSP to the top of it and executes UD2.  Pushing the #UD frame
# faults in the host EPT; the hypervisor reflects a #PF (#UD then #PF: the
# #PF goes first), whose delivery pushes on the same stack and faults
# again; #PF during #PF delivery is a #DF.  Linux takes #DF on its own
# interrupt stack and reports it ("PANIC: double fault, error_code: 0x0",
# the RIP in the hostile module's trigger) before it panics.  Without the
# merge the hypervisor would reflect #PF after #PF forever and the CPU
# would never come back (the run times out).
#
# The last test kills the test VM on purpose: this suite runs on its own
# (scripts/system-test.sh, run eventmerge-c1), and scripts/run-bochs.py
# is told with --expect-panic which panic is the expected outcome; the
# test prints PKVM-EXPECT-PANIC on the console right before it triggers
# it, and any panic before that line, or a different one, fails the run.
H=/sys/kernel/debug/pkvm_hostile/ctl
TESTS="insmod donated_page_unreachable double_fault_on_donated_stack"

t_insmod() {
	insmod /lib/modules/pkvm_x86.ko || fail "insmod pkvm_x86"
	grep -q '^pkvm_x86 ' /proc/modules || fail "pkvm_x86 not loaded"
	insmod /lib/modules/pkvm_hostile.ko || fail "insmod pkvm_hostile"
}

# The ordinary case first: a plain access by the host to a page it
# donated is a #PF the host survives (a fault-tolerant read says "fault").
t_donated_page_unreachable() {
	echo "alloc 0x4242424242424242" > $H || { fail "alloc"; return; }
	pfn=$(sed -n 's/^ok \(0x[0-9a-f]*\)$/\1/p' $H)
	[ -n "$pfn" ] || { fail "no page"; return; }
	echo "vmcall 0 0x10 $pfn 1" > $H
	r=$(cat $H); echo "HOST_DONATE_HYP $pfn -> $r"
	case "$r" in "ok rax=0x0 "*) ;; *) fail "donation refused: $r" ;; esac
	echo "read $pfn 0" > $H
	r=$(cat $H); echo "read $pfn -> $r"
	[ "$r" = fault ] || fail "the host read a page it donated: $r"
}

# Never returns when the hypervisor is right: the VM panics with Linux's
# double-fault report, which the harness expects (--expect-panic).
t_double_fault_on_donated_stack() {
	echo "PKVM-EXPECT-PANIC double fault on a donated stack" > /dev/console
	# The serial console drains asynchronously: let the marker out as a
	# line of its own before the kernel's report starts.
	sleep 2
	echo "dfault 0" > $H
	r=$(cat $H)
	fail "the host came back from UD2 on a donated stack: $r"
}
