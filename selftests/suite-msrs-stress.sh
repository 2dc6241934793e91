# selftests/suite-msrs-stress.sh: KVM's msrs_test (three vCPUs run in turn
# from one unpinned thread) and vmx_msrs_test under pkvm's debug build,
# many times, first with nested VMX's stress mode on (every cached vmcs12
# written back to its page and dropped after each VMX instruction and
# reflected exit: Documentation/nested.rst), then in mode 2 (written back,
# kept), mode 3 (pages only read), mode 4 (rewritten unchanged), then off, while the shell
# moves the test between the CPUs every 20 ms.  A soak run (not part of
# `make test`), run by scripts/msrs-stress.sh, which adds the peer initramfs
# (/opt/kvm-selftests); it reproduced issue 9's msrs_test failure, an
# emulator bug (Documentation/testing.rst, "The emulator's SMP exception
# bug").  The suite fails if any run fails; each failure prints the test's
# last lines, and the hypervisor's nested counters of every CPU and the
# nested debug trace (frozen at a guest #PF at RIP 0) are printed at the
# end.  Kernel parameters: pkvm.msrs_rounds=N, pkvm.msrs_kvm=P1,P2 (kvm_intel
# parameters), pkvm.msrs_phases=a,b (which of msrs_stress msrs_writeback
# msrs_readonly msrs_rewrite msrs_plain run).
DBG=/sys/kernel/debug/pkvm_x86
CTL=$DBG/debug/ctl
KST=/opt/kvm-selftests
ROUNDS=${ROUNDS:-12}
TESTS="load msrs_stress msrs_writeback msrs_readonly msrs_rewrite msrs_plain stats unload"
KVM_PARAMS=
for arg in $(cat /proc/cmdline); do
	case "$arg" in
	pkvm.msrs_rounds=*) ROUNDS=${arg#pkvm.msrs_rounds=} ;;
	# Experiments: kvm_intel's parameters (comma-separated) and which
	# phases run (comma-separated names of TESTS).
	pkvm.msrs_kvm=*) KVM_PARAMS=$(echo "${arg#pkvm.msrs_kvm=}" | tr ',' ' ') ;;
	pkvm.msrs_phases=*) TESTS="load $(echo "${arg#pkvm.msrs_phases=}" | tr ',' ' ') stats unload" ;;
	esac
done
ncpu() { grep -c ^processor /proc/cpuinfo; }

t_load() {
	insmod /lib/modules/pkvm_x86-debug.ko debug=1 || fail "insmod debug" || return 1
	insmod /lib/modules/irqbypass.ko 2>/dev/null
	insmod /lib/modules/kvm.ko && insmod /lib/modules/kvm-intel.ko $KVM_PARAMS || fail "kvm_intel"
}

# runs N LABEL: N rounds of msrs_test and vmx_msrs_test, each moved
# between CPU 0 and CPU 1 every 20 ms while it runs.
runs() {
	bad=0
	for i in $(seq 1 "$1"); do
		for t in msrs_test vmx_msrs_test; do
			timeout 120 $KST/$t > /tmp/m.log 2>&1 &
			pid=$!
			m=1
			while kill -0 $pid 2>/dev/null; do
				taskset -p $m $pid > /dev/null 2>&1
				m=$((3 - m))
				sleep 0.02
			done
			wait $pid
			rc=$?
			if [ $rc != 0 ]; then
				bad=$((bad + 1))
				echo "$2 round $i $t: rc=$rc"
				grep -v '^ *$' /tmp/m.log | grep -v 'addr2line\|Random seed' | tail -3
			fi
		done
	done
	echo "$2: $bad failures in $1 rounds"
	[ $bad = 0 ]
}

# stressed MODE LABEL: runs with nested VMX's stress mode MODE on (off
# again afterwards, whatever the result).
stressed() {
	echo nested_stress "$1" > $CTL || fail "no stress mode $1 (debug build?)" || return 1
	runs "$ROUNDS" "$2"
	r=$?
	echo nested_stress 0 > $CTL
	return $r
}

# Mode 1: every cached vmcs12 written back and dropped after each VMX
# instruction and reflected exit.
t_msrs_stress() { stressed 1 stress; }

# Mode 2: written back but kept cached (nothing read back): separates the
# write-backs from the reloads.
t_msrs_writeback() { stressed 2 writeback; }

# Mode 3: the page images built and the pages only read at those points
# (the work of mode 2 without its writes).
t_msrs_readonly() { stressed 3 readonly; }

# Mode 4: the pages' words rewritten unchanged at those points (the writes
# of mode 2 without changing any content).
t_msrs_rewrite() { stressed 4 rewrite; }

t_msrs_plain() { runs "$ROUNDS" plain; }

t_stats() {
	for c in $(seq 0 $(($(ncpu) - 1))); do
		echo nested_stats $c > $CTL
		echo "cpu$c: $(cat $CTL | tr ' ' '\n' | grep -E '^(entries|reflected|kept|launches|unexpected|shadow_unsynced|failed_entries|w_[a-z_]*)=' | tr '\n' ' ')"
	done
	echo nested_trace > $CTL
	cat $CTL
	echo check > $CTL
	expect_eq "invariants" "$(cat $CTL)" "ok invariants hold"
}

t_unload() { rmmod kvm_intel; rmmod kvm; pkvm_rmmod || fail "rmmod"; }
