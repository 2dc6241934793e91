# selftests/suite-peers.sh: the peer suites -- KVM's own selftests and a
# QEMU guest, run by the stock kvm_intel inside the test VM, either on the
# bare emulated CPU or on the host deprivileged by pkvm.  Needs the second
# initramfs of scripts/mkinitramfs-peers.sh (/opt/kvm-selftests, /opt/qemu,
# /opt/guest, /selftests/peers).
#
# Kernel command line (scripts/run-bochs.py --append):
#   pkvm.peers=bare       kvm_intel with the view of selftests/peers/bare-view.txt,
#                         pkvm not loaded (the baseline)
#   pkvm.peers=pkvm       insmod pkvm_x86 first (its defaults: EPT offered,
#                         shadow EPT; the pool starts at its default and
#                         grows on demand), then kvm_intel with defaults (EPT on)
#   pkvm.peers=pkvm-ept   the same, nested_ept=1 named (the qemu-pkvm-ept runs)
#   pkvm.peers=pkvm-spt   pkvm_x86 nested_ept=0: EPT hidden, kvm_intel's
#                         defaults then mean KVM's own shadow paging
#   pkvm.peers_tests=all  every KVM selftest binary (default)
#             =subset     those listed in selftests/peers/subset.txt
#             =none       none (the QEMU boot check only)
#             =list:A,B   the selftests named
#   pkvm.peers_timeout=N  per-test limit in GUEST seconds (default 10; the
#                         guest clock runs 7-30 times slower than the wall)
#   pkvm.peers_after=NAME resume the list after NAME (scripts/peers.sh boots
#                         again after a test stopped the emulated machine)
#   pkvm.peers_debug=1    (pkvm modes) load the debug build with debug=1 and,
#                         while QEMU's guest boots, print the hypervisor's
#                         nested counters and KVM's exit statistics every
#                         10 guest seconds ("PEER-DEBUG" lines), with the
#                         firmware's debug port and the guest kernel's
#                         messages: diagnosis
#   pkvm.peers_debug=2    the same without the firmware's and guest kernel's
#                         messages (the guest as in a normal run)
#
# A test that stops the whole emulated machine (no guest-clock limit can
# fire then) is caught from outside: "PEER-START <name>" precedes every test,
# run-bochs.py --stall-timeout stops a silent machine, and scripts/peers.sh
# records the test as a timeout and boots again with pkvm.peers_after.
# Every selftest runs in its own session (setsid) with output to a file;
# after it ends or times out the whole process group is killed (some, like
# hardware_disable_test, leave children).  Tests in selftests/peers/skip.txt
# never run; selftests/peers/args.txt gives some of them smaller sizes.
# One line per test on the console, streamed as it finishes:
#   PEER-RESULT <name> <pass|fail|skip|timeout> rc=<exit> t=<guest s, 2 decimals> -- <reason>
# (ksft exit codes: 0 pass, 4 skip; anything else fail).  Non-passes are
# followed by the tail of the test's output as "#| " lines.
# scripts/peers-results.py turns these lines into the result lists and
# compares them; the TAP tests here only judge that the runs took place.
# Then QEMU boots its guest (-smp 1 on 1 CPU, -smp 2 on 2 CPUs or more):
#   PEER-QEMU mode=<m> smp=<vcpus> boot_guest_s=<start to marker> ...
# and selftests/tools/kvm_exit_bench.c measures guest exit round trips:
#   PEER-BENCH mode=<m> n=200 cpuid=<median TSC cycles> io=.. hlt=.. min_...
#              touch_n=.. touch=<median cycles of a first touch> touch_mean=..
#              warm=.. warm_mean=.. touch_exits=<KVM exits> warm_exits=..
#              (the first touch of a fresh page, then the same pages warm)

PEERS_MODE=bare
PEERS_TESTS=all
PEERS_TIMEOUT=10
PEERS_AFTER=
PEERS_DEBUG=
for arg in $(cat /proc/cmdline); do
	case "$arg" in
	pkvm.peers=*) PEERS_MODE=${arg#pkvm.peers=} ;;
	pkvm.peers_tests=*) PEERS_TESTS=${arg#pkvm.peers_tests=} ;;
	pkvm.peers_timeout=*) PEERS_TIMEOUT=${arg#pkvm.peers_timeout=} ;;
	pkvm.peers_after=*) PEERS_AFTER=${arg#pkvm.peers_after=} ;;
	pkvm.peers_debug=*) PEERS_DEBUG=${arg#pkvm.peers_debug=} ;;
	esac
done
PEERS_DIR=/selftests/peers
KST=/opt/kvm-selftests
TESTS="peer_files load_kvm view kvm_selftests qemu_boot exit_bench unload dmesg_clean"

# The console of the test VM (the suite's own stdout is captured by
# tap_run_suite until the test ends; these lines must stream).
say() { echo "$*" > /dev/console; }

# uptime in hundredths of a guest second
now_cs() { sed 's/^\([0-9]*\)\.\([0-9]*\).*/\1\2/' /proc/uptime; }
# hundredths -> seconds with two decimals
cs_to_s() { echo "$(($1 / 100)).$(printf %02d $(($1 % 100)))"; }

# Text that run-bochs.py would take for kernel trouble (Oops, BUG:, ...),
# in test output quoted on the console, is defanged so the quote is not
# mistaken for the test VM's own kernel failing.
defang() {
	sed -e 's/Oops/0ops/g; s/BUG:/BUG :/g; s/WARNING:/WARNING :/g; s/Kernel panic/Kernel-panic/g' \
	    -e 's/Call Trace/Call-Trace/g; s/general protection fault/general-protection fault/g' \
	    -e 's/unable to handle/unable-to-handle/g; s/double fault/double-fault/g' \
	    -e 's/soft lockup/soft-lockup/g; s/hung_task/hung-task/g; s/RIP: 00/RIP:00/g'
}

t_peer_files() {
	echo "mode=$PEERS_MODE tests=$PEERS_TESTS timeout=${PEERS_TIMEOUT}s (guest)"
	case "$PEERS_MODE" in bare|pkvm|pkvm-ept|pkvm-spt) ;; *) fail "pkvm.peers=$PEERS_MODE: want bare, pkvm, pkvm-ept or pkvm-spt" ;; esac
	[ -x /opt/qemu/qemu ] || fail "/opt/qemu missing: boot with the peer initramfs (run-bochs.py --extra-initrd)"
	[ -f $PEERS_DIR/bare-view.txt ] || fail "$PEERS_DIR/bare-view.txt missing"
	n=$(ls $KST | wc -l)
	echo "$n KVM selftests, $(cat /opt/qemu/VERSION)"
	[ "$n" -gt 50 ] || fail "only $n KVM selftests in $KST"
}

under_pkvm() { [ "$PEERS_MODE" != bare ]; }

kvm_intel_params() {
	if [ "$PEERS_MODE" = bare ]; then grep -v '^#' $PEERS_DIR/bare-view.txt | grep .; fi
}

t_load_kvm() {
	if under_pkvm; then
		case "$PEERS_MODE" in
		pkvm) ept= ;;
		pkvm-ept) ept="nested_ept=1" ;;
		pkvm-spt) ept="nested_ept=0" ;;
		esac
		ko=/lib/modules/pkvm_x86.ko
		[ -n "$PEERS_DEBUG" ] && ko="/lib/modules/pkvm_x86-debug.ko debug=1"
		# shellcheck disable=SC2086
		insmod $ko $ept || fail "insmod $ko $ept" || return 1
		[ "$(/bin/cpuid -s)" = pkvm-x86 ] || fail "the host does not run under pkvm"
	fi
	insmod /lib/modules/irqbypass.ko 2>/dev/null
	insmod /lib/modules/kvm.ko || fail "insmod kvm" || return 1
	# shellcheck disable=SC2046
	insmod /lib/modules/kvm-intel.ko $(kvm_intel_params) || fail "insmod kvm-intel $(kvm_intel_params)"
	[ -c /dev/kvm ] || fail "/dev/kvm missing"
}

# Every parameter of the view reads back as asked (booleans as Y/N).
t_view() {
	P=/sys/module/kvm_intel/parameters
	for p in ept enable_apicv enable_shadow_vmcs pml preemption_timer eptad vpid unrestricted_guest nested; do
		[ -r $P/$p ] && echo "$p=$(cat $P/$p)"
	done
	for kv in $(kvm_intel_params); do
		k=${kv%%=*} v=${kv#*=}
		case "$v" in 0) v=N ;; 1) v=Y ;; esac
		expect_eq "kvm_intel.$k" "$(cat $P/$k)" "$v"
	done
	# Under pkvm kvm_intel loads with its defaults; what it reads is
	# pkvm's view: EPT and unrestricted guest offered (shadow EPT) unless
	# nested_ept=0, EPT A/D and PML never.
	case "$PEERS_MODE" in
	pkvm|pkvm-ept)
		expect_eq "kvm_intel.ept under pkvm" "$(cat $P/ept)" Y
		expect_eq "kvm_intel.unrestricted_guest under pkvm" "$(cat $P/unrestricted_guest)" Y
		expect_eq "kvm_intel.eptad under pkvm" "$(cat $P/eptad)" N ;;
	pkvm-spt) expect_eq "kvm_intel.ept under pkvm nested_ept=0" "$(cat $P/ept)" N ;;
	esac
}

peer_list() {
	case "$PEERS_TESTS" in
	all) ls $KST ;;
	subset) grep -v '^#' $PEERS_DIR/subset.txt | awk 'NF { print $1 }' ;;
	none) ;;
	list:*) echo "${PEERS_TESTS#list:}" | tr ',' '\n' | grep . ;;
	*) echo "BAD-LIST" ;;
	esac
}

# fail_reason LOG: one line saying why a selftest failed: the location and
# condition of a TEST_ASSERT (the line after its banner) and its message
# (the last line of the report), else the first error-looking line.
fail_reason() {
	if grep -q 'Test Assertion Failure' "$1"; then
		where=$(grep -A1 'Test Assertion Failure' "$1" | sed -n 2p | sed 's/^ *//')
		msg=$(grep . "$1" | tail -1 | sed 's/^ *//')
		echo "$where: $msg" | cut -c1-200
	else
		grep -E -m1 'not ok|FAIL|[Ff]ailed|rror|Bail out' "$1" | cut -c1-200
	fi
}

# run_one NAME: runs one selftest, prints its PEER-RESULT line.
run_one() {
	t=$1 log=/tmp/peers/$1.log
	reason=$(awk -v t="$t" '!/^#/ && $1 == t { $1 = ""; sub(/^ +/, ""); print; exit }' $PEERS_DIR/skip.txt)
	if [ -n "$reason" ]; then
		say "PEER-RESULT $t skip rc=- t=0 -- listed in skip.txt: $reason"
		echo "$t skip" >> /tmp/peers/results
		return
	fi
	if [ ! -x "$KST/$t" ]; then
		say "PEER-RESULT $t fail rc=- t=0 -- no such binary"
		echo "$t fail" >> /tmp/peers/results
		return
	fi
	args=$(awk -v t="$t" '!/^#/ && $1 == t { $1 = ""; print; exit }' $PEERS_DIR/args.txt)
	say "PEER-START $t"
	dmesg_lines=$(dmesg | wc -l)
	t1=$(now_cs)
	# Its own session: pid == process group id, so the group can be killed.
	# shellcheck disable=SC2086
	setsid "$KST/$t" $args > "$log" 2>&1 < /dev/null &
	pid=$!
	limit=$((t1 + PEERS_TIMEOUT * 100))
	timed_out=
	while kill -0 $pid 2>/dev/null; do
		if [ "$(now_cs)" -ge $limit ]; then
			timed_out=1
			kill -KILL -$pid 2>/dev/null
			break
		fi
		sleep 0.2
	done
	wait $pid
	rc=$?
	kill -KILL -$pid 2>/dev/null
	secs=$(cs_to_s $(( $(now_cs) - t1 )))
	if [ -n "$timed_out" ]; then
		res=timeout why="no exit within ${PEERS_TIMEOUT}s (guest clock)"
	elif [ $rc = 0 ]; then
		res=pass why=
	elif [ $rc = 4 ]; then
		res=skip why=$(grep -E -m1 'SKIP|[Rr]equirement|not supported|unsupported|skip' "$log" | cut -c1-160)
	else
		res=fail why=$(fail_reason "$log")
	fi
	[ $res != pass ] && [ -z "$why" ] && why=$(grep . "$log" | tail -1 | cut -c1-160)
	# Kernel trouble the test caused (the VM keeps running after a WARN).
	if dmesg | tail -n +$((dmesg_lines + 1)) | grep -E -q 'WARNING:|BUG:|Oops|Call Trace'; then
		why="$why [kernel warning in dmesg]"
		dmesg | tail -n +$((dmesg_lines + 1)) | head -30 | defang | sed 's/^/#| dmesg: /' > /dev/console
	fi
	say "PEER-RESULT $t $res rc=$rc t=$secs -- $(echo "$why" | defang)"
	[ $res != pass ] && tail -n 12 "$log" | defang | sed 's/^/#| /' > /dev/console
	echo "$t $res" >> /tmp/peers/results
}

t_kvm_selftests() {
	mkdir -p /tmp/peers
	: > /tmp/peers/results
	list=$(peer_list)
	[ "$list" != BAD-LIST ] || fail "pkvm.peers_tests=$PEERS_TESTS: want all, subset, none or list:A,B" || return 1
	total=$(echo "$list" | grep -c .)
	say "PEER-PLAN n=$total"
	if [ -n "$PEERS_AFTER" ]; then
		echo "$list" | grep -qx "$PEERS_AFTER" || fail "pkvm.peers_after=$PEERS_AFTER is not in the list" || return 1
		list=$(echo "$list" | awk -v a="$PEERS_AFTER" 'f; $0 == a { f = 1 }')
		echo "resuming after $PEERS_AFTER"
	fi
	t0=$(now_cs)
	for t in $list; do
		run_one "$t"
		rm -f "/tmp/peers/$t.log"
	done
	n=$(wc -l < /tmp/peers/results)
	for r in pass fail skip timeout; do
		echo "$r: $(grep -c " $r\$" /tmp/peers/results)"
	done
	echo "$n tests in $(( ($(now_cs) - t0) / 100 )) s (guest clock)"
	say "PEER-SUMMARY mode=$PEERS_MODE tests=$PEERS_TESTS n=$n guest_s=$(cs_to_s $(( $(now_cs) - t0 )))"
	expect_eq "results" "$n" "$(echo "$list" | grep -c .)"
	return 0
}

# QEMU boots the test kernel with a busybox /init that prints a marker and
# resets.  Boot time from QEMU's start to the marker in guest (test VM)
# seconds; KVM's exit count sampled from debugfs while the guest lives
# (KVM sums its VM statistics over the VMs alive at that moment).
# qemu_boot VCPUS: one boot with -smp VCPUS, one PEER-QEMU line.
qemu_boot() {
	Q=/opt/qemu
	out=/tmp/qemu.out
	exits=/sys/kernel/debug/kvm/exits
	t0=$(now_cs)
	# Debug runs: the firmware's debug port in a file, the guest kernel's
	# messages on its console (where a boot stops).
	dbg_args= quiet=quiet
	if [ "$PEERS_DEBUG" = 1 ]; then
		dbg_args="-debugcon file:/tmp/qemu.debugcon -global isa-debugcon.iobase=0x402"
		quiet=
	fi
	# shellcheck disable=SC2086
	setsid $Q/qemu -enable-kvm -cpu host -M pc -smp "$1" -nodefaults -no-user-config -display none \
		-serial stdio -L $Q/share -m 128 -no-reboot -kernel /opt/guest/bzImage $dbg_args \
		-initrd /opt/guest/initrd.gz -append "console=ttyS0 panic=-1 $quiet" > $out 2>&1 < /dev/null &
	pid=$!
	limit=$((t0 + 120 * 100))
	marker= nexits=
	next_dbg=$t0
	while kill -0 $pid 2>/dev/null; do
		if [ -n "$PEERS_DEBUG" ] && [ "$(now_cs)" -ge $next_dbg ]; then
			next_dbg=$(($(now_cs) + 1000))
			peer_debug_stats
		fi
		if [ -z "$marker" ] && grep -q PKVM-GUEST-UP $out; then
			marker=$(now_cs)
			nexits=$(cat $exits 2>/dev/null)
		fi
		if [ "$(now_cs)" -ge $limit ]; then
			kill -KILL -$pid
			break
		fi
		sleep 0.1
	done
	wait $pid
	rc=$?
	kill -KILL -$pid 2>/dev/null
	[ -z "$PEERS_DEBUG" ] || peer_debug_stats
	defang < $out | tail -n 20
	[ -n "$marker" ] || grep -q PKVM-GUEST-UP $out && marker=${marker:-$(now_cs)}
	if [ -z "$marker" ]; then
		fail "no PKVM-GUEST-UP from the QEMU guest (-smp $1) within 120 s (qemu rc=$rc)"
		return 1
	fi
	gup=$(sed -n 's/.*PKVM-GUEST-UP uptime=\([0-9.]*\).*/\1/p' $out | head -1)
	say "PEER-QEMU mode=$PEERS_MODE smp=$1 boot_guest_s=$(cs_to_s $((marker - t0))) l2_uptime=$gup kvm_exits=${nexits:-?} rc=$rc"
	# -no-reboot: the guest's reset ends QEMU with status 0.
	expect_eq "qemu exit status (-smp $1)" "$rc" 0
}

# pkvm.peers_debug=1 or 2: one PEER-DEBUG line per CPU with the hypervisor's
# nested counters (the debug build's nested_stats, reset after reading:
# each line counts since the last) and one with KVM's exit statistics
# (cumulative) and the last bytes of QEMU's output.
peer_debug_stats() {
	ctl=/sys/kernel/debug/pkvm_x86/debug/ctl
	for c in $(seq 0 $(($(grep -c ^processor /proc/cpuinfo) - 1))); do
		echo nested_stats_reset $c > $ctl 2>/dev/null && say "PEER-DEBUG t=$(now_cs) cpu$c $(cat $ctl)"
	done
	k=/sys/kernel/debug/kvm
	kv=
	for f in exits mmio_exits io_exits pf_taken pf_fixed pf_emulate pf_spurious pf_mmio_spte_created \
		tlb_flush remote_tlb_flush insn_emulation insn_emulation_fail halt_exits irq_exits \
		request_irq_exits irq_injections nmi_injections signal_exits; do
		[ -r $k/$f ] && kv="$kv $f=$(cat $k/$f)"
	done
	say "PEER-DEBUG t=$(now_cs) kvm$kv"
	say "PEER-DEBUG t=$(now_cs) qemu: $(tail -c 300 $out | tr -c '[:print:]' ' ' | defang)"
	say "PEER-DEBUG t=$(now_cs) firmware: $(tail -c 300 /tmp/qemu.debugcon 2>/dev/null | tr -c '[:print:]' ' ' | defang)"
}

# On 1 CPU a guest with 1 vCPU, on 2 CPUs or more one with 2 vCPUs (a
# boot under pkvm costs about 6 minutes of wall time: one per run).
t_qemu_boot() {
	if [ "$(grep -c ^processor /proc/cpuinfo)" -lt 2 ]; then
		qemu_boot 1
	else
		qemu_boot 2
	fi
}

# The guest exit round trip in guest TSC cycles (selftests/tools/
# kvm_exit_bench.c): CPUID (handled in KVM), port I/O and HLT (through
# user space); the median of 200 after 20 warm-up, on CPU 0.  A number,
# not a judgement: the test fails only if the tool does.
t_exit_bench() {
	line=$(taskset -c 0 /bin/kvm_exit_bench -n 200 -w 20)
	rc=$?
	echo "$line"
	case "$line" in exit_bench*) say "PEER-BENCH mode=$PEERS_MODE ${line#exit_bench }" ;; esac
	expect_eq "kvm_exit_bench exit status" "$rc" 0
}

t_unload() {
	rmmod kvm_intel || fail "rmmod kvm_intel"
	rmmod kvm || fail "rmmod kvm"
	if under_pkvm; then
		pkvm_rmmod || fail "rmmod pkvm_x86"
	fi
}

t_dmesg_clean() {
	dmesg_clean
}
