#!/usr/bin/env bash
# scripts/system-test.sh KDIR KO KO_DEBUG: every Bochs system test, two at
# a time.  KO is the production build (/lib/modules/pkvm_x86.ko in the VM),
# KO_DEBUG the debug build (/lib/modules/pkvm_x86-debug.ko; the pagestate
# suite drives its debug interface).
#
#   caps-c1, caps-c2   corei7_icelake_u, 1 and 2 CPUs: load, debugfs, unload,
#                      reload, KVM loads afterwards, clean dmesg
#   depriv-c1, -c2     the host runs deprivileged: signature leaf, workload,
#                      timers, exit counters, protected MSRs, kvm_intel
#                      refused while loaded and working after, 20 load/unload
#                      cycles without leaks, benchmarks (BENCH lines)
#   pagestate-c1, -c2  the debug build with debug=1: host EPT memory types, the pool out of reach,
#                      donate/share to the hypervisor and to test VMs driven
#                      from user space, access checked after every step,
#                      reclaim zeroes, invariant checker, unload gives back
#   nested-c1, -c2     nested VMX with EPT hidden (nested_ept=0: KVM's own
#                      shadow paging): the VMX-instruction oracle bare and
#                      under pkvm compared, the stock kvm_intel loads with its
#                      defaults, /dev/kvm creates VMs and vCPUs, no unload
#                      while the host is in VMX operation, VMX regions and
#                      operands on memory the host does not own refused
#   nested-ept-c1, -c2 the shadow EPT (pkvm's default, nested_ept=1):
#                      kvm_intel reads ept=Y unrestricted_guest=Y, guests run
#                      as on bare KVM, the hostile host's slots, donations and
#                      races, VM create/destroy cycles
#   novmx              p4_prescott_celeron_336 (Intel 64-bit, no VMX): the
#                      module refuses with ENODEV and a clear message
#   harness-negative   the caps suite on the no-VMX CPU must be judged FAIL:
#                      proves the harness notices a failing module
#   eventmerge-c1      corei7_icelake_u, 1 CPU, ~1 min: the hostile host's
#                      own #UD delivery pushes onto a page it donated; the
#                      hypervisor's #PF for it faults again and must merge
#                      into a #DF: the VM ends in Linux's double-fault
#                      panic, which the harness is told to expect
#                      (--expect-panic); any other outcome (a hang, another
#                      panic) fails
#   peers-bare-c1, -c2 KVM's selftests on bare KVM with pkvm's view: the
#                      baseline (every selftest on 1 CPU, the subset on 2),
#                      cached per kernel+selftests+view (a warm run skips
#                      it); qemu-bare-c1: QEMU boots a guest on bare KVM;
#                      peers-pkvm-c1, -c2: the subset, QEMU's boot and the
#                      exit round trips under pkvm, judged against the
#                      baseline.  All in scripts/peers.sh (its header lists
#                      its variables), started first and in the background:
#                      its machines take the slots the pairs below leave
#                      free; its report is printed at the end.
# PKVM_ONLY="depriv-c1 pagestate-c2" runs only the named runs (development).
# Emulated machines take turns machine-wide (scripts/run-bochs.py holds one of
# two slots per Bochs), so several checkouts can test at once.
# Logs: build/runs/<name>/.  Exit status: number of failed runs (capped).
source "$(dirname "$0")/lib.sh"
kdir=$1 ko=$2 ko_debug=${3:-}
[ -f "$ko_debug" ] || die "usage: system-test.sh KDIR KO KO_DEBUG (the debug build: PKVM_DEBUG=1 scripts/build-module.sh)"
bochs=$(bash "$PKVM_ROOT/scripts/setup-bochs.sh")
runs=$PKVM_ROOT/build/runs
initrd=$PKVM_ROOT/build/initramfs.cpio.gz
# (Not a process substitution: a failed build must stop the run.)
mods=$(bash "$PKVM_ROOT/scripts/build-selftest-modules.sh" "$kdir") || die "the test modules did not build"
mapfile -t test_modules <<< "$mods"
bash "$PKVM_ROOT/scripts/mkinitramfs.sh" "$initrd" "$kdir" "$ko" "pkvm_x86-debug.ko=$ko_debug" "${test_modules[@]}"

want() { [ -z "${PKVM_ONLY:-}" ] || [[ " $PKVM_ONLY " == *" $1 "* ]]; }

boot() { # name suite model cpus [run-bochs.py options...]
	if ! want "$1"; then echo "== skipped (PKVM_ONLY)" > "$runs/$1.out"; return 0; fi
	local name=$1 suite=$2 model=$3 cpus=$4
	shift 4
	python3 "$PKVM_ROOT/scripts/run-bochs.py" --bochs "$bochs" --kernel "$kdir/arch/x86/boot/bzImage" \
		--initrd "$initrd" --out "$runs/$name" --suite "$suite" --model "$model" --cpus "$cpus" \
		--timeout "${PKVM_BOCHS_TIMEOUT:-600}" --quiet "$@" \
		> "$runs/$name.out" 2>&1
}

mkdir -p "$runs"
fails=0
bash "$PKVM_ROOT/scripts/peers.sh" "$kdir" "$bochs" "$initrd" "$runs" > "$runs/peers.report" 2>&1 & peers=$!
check() { # name expected-status
	local rc=0
	wait "$3" || rc=$?
	if ! want "$1"; then return 0; fi
	local verdict
	verdict=$(tail -n 20 "$runs/$1.out" | grep '^== ' || echo "== (no verdict)")
	if { [ "$2" = pass ] && [ $rc = 0 ]; } || { [ "$2" = fail ] && [ $rc = 1 ]; }; then
		echo "ok   $1: $verdict"
	else
		echo "FAIL $1 (expected $2, exit $rc): $verdict"
		# (A failed run need not have a failed test: no match is fine.)
		grep -E '^\[.*(not ok|FAIL)' "$runs/$1.out" | head -20 || true
		tail -n 5 "$runs/$1.out"
		fails=$((fails + 1))
	fi
}

boot caps-c1 caps corei7_icelake_u 1 & p1=$!
boot novmx novmx p4_prescott_celeron_336 1 & p2=$!
check caps-c1 pass $p1
check novmx pass $p2
boot caps-c2 caps corei7_icelake_u 2 & p1=$!
boot harness-negative caps p4_prescott_celeron_336 1 & p2=$!
check harness-negative fail $p2
# Ends in the expected panic; a hang (no merge) ends at the shorter timeout.
boot eventmerge-c1 eventmerge corei7_icelake_u 1 --timeout 300 \
	--expect-panic 'PANIC: double fault, error_code: 0x0' \
	--expect-panic 'RIP: 0010:dfault_trigger\+' & p2=$!
check caps-c2 pass $p1
check eventmerge-c1 pass $p2
boot depriv-c1 deprivilege corei7_icelake_u 1 & p1=$!
boot depriv-c2 deprivilege corei7_icelake_u 2 & p2=$!
check depriv-c1 pass $p1
check depriv-c2 pass $p2
boot nested-c1 nested corei7_icelake_u 1 & p1=$!
boot nested-c2 nested corei7_icelake_u 2 & p2=$!
check nested-c1 pass $p1
check nested-c2 pass $p2
boot pagestate-c1 pagestate corei7_icelake_u 1 & p1=$!
boot pagestate-c2 pagestate corei7_icelake_u 2 & p2=$!
check pagestate-c1 pass $p1
check pagestate-c2 pass $p2
boot nested-ept-c1 nested-ept corei7_icelake_u 1 & p1=$!
boot nested-ept-c2 nested-ept corei7_icelake_u 2 & p2=$!
check nested-ept-c1 pass $p1
check nested-ept-c2 pass $p2
rc=0
wait $peers || rc=$?
cat "$runs/peers.report"
fails=$((fails + rc))
echo "benchmarks (guest clock inside Bochs):"
for r in depriv-c1 depriv-c2 nested-c1 nested-c2 nested-ept-c1 nested-ept-c2; do
	want "$r" || continue
	grep -h '# BENCH' "$runs/$r.out" | sed "s/^\[[^]]*\] # BENCH /  $r /" || true
done
# The peer runs': guest exit round trips (median guest TSC cycles) and the
# QEMU guest's boot to its marker (guest seconds), bare vs pkvm, ratio.
sed 's/^/  peers /' "$runs/peers-bench.txt" 2>/dev/null || true
exit $((fails > 100 ? 100 : fails))
