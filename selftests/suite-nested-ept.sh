# selftests/suite-nested-ept.sh: the shadow EPT (issue 10;
# Documentation/shadow-ept.rst, Documentation/nested.rst "EPT for the
# host's KVM").  pkvm loaded with its defaults (nested_ept=1) offers EPT
# and unrestricted guest: the stock kvm_intel loads
# with its defaults and reads ept=Y unrestricted_guest=Y, the same guest
# runs as on bare KVM with EPT, on every CPU, and the invariants hold.

DBG=/sys/kernel/debug/pkvm_x86
CTL=$DBG/debug/ctl
P=/sys/module/kvm_intel/parameters
TESTS="guest_bare insmod_pkvm_ept view_offers_ept kvm_params_ept guest_pkvm_ept guest_cpus_ept ept_stats \
ept_bench rmmod_all invariants_after ept_hostile_setup pool_grows pool_grow_hostile ept_hostile_slot ept_donate_mapped ept_share_race ept_reuse_vmcs ept_cycles ept12_on_hyp ept_bench_hostile ept_hostile_done dmesg_clean"
GUEST_N=20

ncpu() { grep -c ^processor /proc/cpuinfo; }

# Bare KVM with its defaults (EPT on): the baseline.
t_guest_bare() {
	insmod /lib/modules/irqbypass.ko 2>/dev/null
	insmod /lib/modules/kvm.ko && insmod /lib/modules/kvm-intel.ko || fail "bare kvm_intel"
	echo "bare: ept=$(cat $P/ept) unrestricted_guest=$(cat $P/unrestricted_guest)"
	/bin/kvm_guest -n $GUEST_N > /tmp/guest.bare
	rc=$?
	cat /tmp/guest.bare
	rmmod kvm_intel; rmmod kvm
	[ $rc = 0 ] || fail "the guest failed on bare KVM"
}

t_insmod_pkvm_ept() {
	# No nested_ept parameter: EPT is offered by default.
	insmod /lib/modules/pkvm_x86-debug.ko debug=1 || fail "insmod (defaults)" || return 1
	[ "$(/bin/cpuid -s)" = pkvm-x86 ] || fail "not deprivileged"
	dmesg | grep -q 'nested_ept=1' || fail "no nested_ept message"
}

# EPT (bit 33) and unrestricted guest (bit 39) offered, the same view on
# every CPU; INVEPT single-context and all-context in EPT_VPID_CAP.
t_view_offers_ept() {
	for c in $(seq 0 $(($(ncpu) - 1))); do
		p2=$(/bin/rdmsr -c $c 0x48b)
		cap=$(/bin/rdmsr -c $c 0x48c)
		echo "cpu$c PROCBASED_CTLS2=$p2 EPT_VPID_CAP=$cap"
		[ $(( (p2 >> 33) & 1 )) = 1 ] || fail "cpu$c: EPT not offered"
		[ $(( (p2 >> 39) & 1 )) = 1 ] || fail "cpu$c: unrestricted guest not offered"
		[ $(( (cap >> 25) & 3 )) = 3 ] || fail "cpu$c: INVEPT single/all not offered"
		[ $(( (cap >> 21) & 1 )) = 0 ] || fail "cpu$c: EPT A/D offered"
		[ "$c" = 0 ] && first="$p2 $cap"
		expect_eq "cpu$c view same as cpu0" "$p2 $cap" "$first"
	done
}

t_kvm_params_ept() {
	insmod /lib/modules/irqbypass.ko 2>/dev/null
	insmod /lib/modules/kvm.ko || fail "insmod kvm"
	if ! insmod /lib/modules/kvm-intel.ko; then
		dmesg | tail -20
		fail "kvm-intel did not load under pkvm with nested_ept=1"
		return 1
	fi
	for p in ept unrestricted_guest eptad pml enable_apicv vpid; do
		echo "$p=$(cat $P/$p)"
	done
	expect_eq ept "$(cat $P/ept)" Y
	expect_eq unrestricted_guest "$(cat $P/unrestricted_guest)" Y
	expect_eq eptad "$(cat $P/eptad)" N
	expect_eq pml "$(cat $P/pml)" N
}

# The same guest as on bare KVM with EPT: every exit and register identical.
t_guest_pkvm_ept() {
	echo nested_stats_reset 0 > $CTL
	timeout 300 /bin/kvm_guest -n $GUEST_N > /tmp/guest.pkvm
	rc=$?
	cat /tmp/guest.pkvm
	[ $rc = 0 ] || fail "the guest failed under pkvm with nested_ept=1 (rc=$rc)"
	diff /tmp/guest.bare /tmp/guest.pkvm || fail "the guest under pkvm differs from bare KVM"
}

t_guest_cpus_ept() {
	for c in $(seq 0 $(($(ncpu) - 1))); do
		taskset -c $c timeout 300 /bin/kvm_guest -q -n $GUEST_N > /tmp/g.$c || fail "guest on cpu$c: $(cat /tmp/g.$c)"
		cat /tmp/g.$c
	done
}

# The nested statistics: shadow-EPT faults and installs counted.
t_ept_stats() {
	echo nested_stats 0 > $CTL
	s=$(cat $CTL)
	echo "$s"
	for k in ept_faults ept_installs; do
		v=$(echo "$s" | tr ' ' '\n' | sed -n "s/^$k=//p")
		[ "${v:-0}" -ge 1 ] || fail "$k=${v:-missing}"
	done
}

t_rmmod_all() {
	rmmod kvm_intel || fail "rmmod kvm_intel"
	rmmod kvm
}

# The invariant checker (shadows included) after the guests and VMXOFF.
t_invariants_after() {
	echo check > $CTL
	r=$(cat $CTL)
	echo "$r"
	case "$r" in "ok invariants hold"*) ;; *) fail "invariants: $r" ;; esac
	rmmod pkvm_x86 || fail "rmmod pkvm_x86"
}

t_dmesg_clean() {
	dmesg_clean || fail "kernel log has warnings"
}

# ---------------------------------------------------------------------
# The hostile host against the shadow EPT (issue 10, "A hostile host").
# The host hands its KVM guest memory it does not own, through the
# hostile module's "mem" file (a remap_pfn_range of any frame, which KVM
# maps into EPT12 like any memory slot), and races donations against the
# shares the shadow EPT takes.  What is checked is what a user sees: the
# value the guest reads, its exit, the host still working, the hypervisor's
# counters and its invariant checker.  State between the tests is in
# /tmp/ept.* (each test runs in a subshell).

H=/sys/kernel/debug/pkvm_hostile/ctl
HMEM=/sys/kernel/debug/pkvm_hostile/mem
EBUSY_RAX=rax=0xfffffffffffffff0

hostile() { echo "$*" > $H || return 1; cat $H; }

# ept_stat NAME: counter NAME of cpu0's nested statistics.
ept_stat() {
	echo nested_stats 0 > $CTL
	cat $CTL | tr ' ' '\n' | sed -n "s/^$1=//p"
}

ept_invariants() {
	echo check > $CTL
	expect_eq "invariants $1" "$(cat $CTL)" "ok invariants hold"
}

# wait_first FILE: waits (up to 2 minutes) for a -l guest's first read.
wait_first() {
	i=0
	while ! grep -q '^first read=' "$1"; do
		i=$((i + 1))
		[ $i -gt 120 ] && { cat "$1"; fail "the guest never read its page"; return 1; }
		sleep 1
	done
}

# The debug build (root mode counts the words of hypervisor pages) with
# nested_ept=1, the stock kvm_intel on EPT, the hostile module.
t_ept_hostile_setup() {
	insmod /lib/modules/pkvm_x86-debug.ko debug=1 nested_ept=1 || fail "insmod nested_ept=1" || return 1
	insmod /lib/modules/irqbypass.ko 2>/dev/null
	insmod /lib/modules/kvm.ko && insmod /lib/modules/kvm-intel.ko || fail "kvm_intel" || return 1
	expect_eq ept "$(cat $P/ept)" Y
	insmod /lib/modules/pkvm_hostile.ko || fail "insmod hostile"
}

# pool_stat NAME: line NAME of the status file (the pool now: POOL_STATUS).
pool_stat() { sed -n "s/^$1: //p" $DBG/status; }

# The pool grows on demand (Documentation/shadow-ept.rst, "Memory"): pkvm
# is loaded with the default pool_mb=4 (1024 pages); a guest touches one
# 4 KiB page in every 2 MiB of a 3 GiB slot (KVM maps it in 4 KiB leaves):
# 1536 shadow leaves, each in a last-level shadow table of its own, more
# table pages than the whole initial pool (a dense guest needs the same
# per 2 MiB touched, plus host EPT splits and share counts, but the test
# machine's 512 MiB of RAM could not back enough of it).  The host half's
# work grows the pool (POOL_GROW, 2 MiB chunks) as free pages drop below
# its watermark or root mode runs out; the guest completes with every page
# right, the pool has grown, the invariants hold.
BIG_MB=${BIG_MB:-3072}
BIG_STRIDE_KB=${BIG_STRIDE_KB:-2048}
t_pool_grows() {
	t0=$(pool_stat pool_pages_total_now); f0=$(pool_stat pool_pages_free_now)
	g0=$(pool_stat pool_chunks_grown); s0=$(pool_stat pool_shortages)
	echo "before: total=$t0 free=$f0 grown=$g0 shortages=$s0 (at load: $(pool_stat pool_pages_total))"
	[ -n "$t0" ] || { fail "no pool_pages_total_now in the status file"; return 1; }
	taskset -c 0 timeout 1200 /bin/kvm_guest -b $BIG_MB -g $BIG_STRIDE_KB > /tmp/pool.big
	rc=$?
	cat /tmp/pool.big
	[ $rc = 0 ] || fail "the big guest failed (rc=$rc)"
	t1=$(pool_stat pool_pages_total_now); f1=$(pool_stat pool_pages_free_now)
	g1=$(pool_stat pool_chunks_grown); s1=$(pool_stat pool_shortages)
	echo "after: total=$t1 free=$f1 grown=$g1 shortages=$s1"
	echo nested_stats 0 > $CTL; cat $CTL
	[ "$t1" -gt "$t0" ] || fail "the pool did not grow ($t0 -> $t1 pages)"
	[ "$g1" -gt "$g0" ] || fail "no chunk grown ($g0 -> $g1)"
	# The dead VM's shadow (one claim per leaf for the checker) goes at
	# the host's global INVEPT (shadow-ept.rst, "Teardown").
	expect_eq "host INVEPT global" "$(hostile invept 0 2 0)" ok
	ept_invariants "after the big guest"
	expect_eq "internal errors" "$(sed -n 's/^internal_errors: //p' $DBG/status)" 0
}

# POOL_GROW (0x16) of what is not a chunk of the host's own RAM is refused
# and changes nothing: an address not 2 MiB aligned, the pool's first
# chunk, the 2 MiB around the module image (pinned pages), the xAPIC page
# (MMIO), a frame beyond any RAM.
t_pool_grow_hostile() {
	pool=$(echo pool_pa > $CTL && cat $CTL | sed -n 's/^ok //p')
	base=$(sed -n 's/^pkvm_x86 .* \(0x[0-9a-f]*\).*$/\1/p' /proc/modules)
	ipfn=$(hostile pfn $base | sed -n 's/^ok //p')
	t0=$(pool_stat pool_pages_total_now); f0=$(pool_stat pool_pages_free_now)
	echo "pool $pool, module image pfn $ipfn, pool total=$t0 free=$f0"
	EINVAL_RAX=rax=0xffffffffffffffea
	for what in unaligned pool image mmio beyond; do
		case $what in
		unaligned) pfn=$(( (pool >> 12) + 512 + 1 )) ;;
		pool) pfn=$((pool >> 12)) ;;
		image) pfn=$(( ipfn & ~511 )) ;;
		mmio) pfn=$((0xfee00)) ;;
		beyond) pfn=$(( 1 << 30 )) ;;
		esac
		r=$(hostile vmcall 0 0x16 $pfn)
		echo "$what (pfn $pfn): $r"
		case "$r" in
		*"rax=0x0 "*|"") fail "POOL_GROW of $what accepted: $r" ;;
		*rax=0xfff*) ;;
		*) fail "POOL_GROW of $what: $r" ;;
		esac
		case $what in unaligned|pool)
			case "$r" in *"$EINVAL_RAX "*) ;; *) fail "POOL_GROW of $what not EINVAL: $r" ;; esac ;;
		esac
	done
	expect_eq "pool total unchanged" "$(pool_stat pool_pages_total_now)" "$t0"
	# A grown chunk is the hypervisor's for good: the host cannot read
	# it, take it back (HYP_DONATE_HOST: EBUSY) or add it again (EINVAL).
	p=$(echo pool > $CTL && cat $CTL); echo "$p"
	gpfn=$(echo "$p" | tr ' ' '\n' | sed -n 's/^first_grown_pfn=//p')
	[ -n "$gpfn" ] && [ "$((gpfn))" != 0 ] || { fail "no grown chunk: $p"; return 1; }
	expect_eq "host reads a grown chunk" "$(hostile read $((gpfn + 5)) 0)" fault
	r=$(hostile vmcall 0 0x11 $((gpfn + 5)) 1); echo "HYP_DONATE_HOST of a grown chunk page: $r"
	case "$r" in *"$EBUSY_RAX "*) ;; *) fail "HYP_DONATE_HOST of a grown chunk: $r, want EBUSY" ;; esac
	r=$(hostile vmcall 0 0x16 $((gpfn))); echo "POOL_GROW of a grown chunk: $r"
	case "$r" in *"$EINVAL_RAX "*) ;; *) fail "POOL_GROW of a grown chunk: $r, want EINVAL" ;; esac
	expect_eq "pool total unchanged" "$(pool_stat pool_pages_total_now)" "$t0"
	ept_invariants "after the refused POOL_GROWs"
}

# A guest memory slot backed by a frame the host does not own: a page full
# of a pattern donated to the hypervisor, a pool page, a frame of the pkvm
# module's text.  KVM maps it into EPT12 like any memory; the shadow fault
# finds the frame is not the host's to share (the donated page and the pool
# are not in the host EPT, the image is readable by the host but not
# OWNED: the page-state machine refuses the share), maps nothing, and the
# host sees its guest triple-fault (KVM_EXIT_SHUTDOWN), the read value
# never delivered.  The control: the same page while it is the host's is
# read.  Each refusal is counted in `protected`; the host CPU goes on, the
# invariants hold, the donated page keeps its pattern and the image its
# first word.
t_ept_hostile_slot() {
	pat=0x5a5a5a5a5a5a5a5a
	dpfn=$(hostile alloc $pat | sed -n 's/^ok //p')
	hostile map $dpfn > /dev/null
	taskset -c 0 /bin/kvm_guest -m $HMEM > /tmp/eslot.own
	cat /tmp/eslot.own
	expect_eq "guest reads a host page" "$(cat /tmp/eslot.own)" "hostile slot: exit=io read=0x5a5a5a5a"
	# The dead VM's shadow EPT still maps the page until the host's
	# INVEPT (shadow-ept.rst, "Teardown"): the host's global INVEPT first.
	expect_eq "host INVEPT global" "$(hostile invept 0 2 0)" ok
	hostile vmcall 0 0x10 $dpfn 1 | grep -q 'rax=0x0 ' || fail "donate the pattern page"
	pool=$(echo pool_pa > $CTL && cat $CTL | sed -n 's/^ok //p')
	base=$(sed -n 's/^pkvm_x86 .* \(0x[0-9a-f]*\).*$/\1/p' /proc/modules)
	ipfn=$(hostile pfn $base | sed -n 's/^ok //p')
	image_word=$(hostile read $ipfn 0)
	echo "donated pfn $dpfn, pool $pool, module image $base (pfn $ipfn, word 0 $image_word)"
	prot0=$(ept_stat protected)
	faults0=$(ept_stat ept_faults)
	for what in donated pool image; do
		case $what in
		donated) pfn=$dpfn ;;
		pool) pfn=$((pool >> 12)) ;;
		image) pfn=$ipfn ;;
		esac
		hostile map $pfn > /dev/null
		taskset -c 0 /bin/kvm_guest -m $HMEM > /tmp/eslot.$what
		echo "$what (pfn $pfn): $(cat /tmp/eslot.$what)"
		expect_eq "guest on $what memory" "$(cat /tmp/eslot.$what)" "hostile slot: exit=shutdown read=0x00000000"
	done
	prot=$(( $(ept_stat protected) - prot0 ))
	faults=$(( $(ept_stat ept_faults) - faults0 ))
	echo "protected +$prot ept_faults +$faults"
	expect_eq "protected-memory touches counted" "$prot" 3
	[ "$faults" -ge 3 ] || fail "ept_faults moved by $faults, want at least 3"
	echo nested_stats 0 > $CTL
	v=$(cat $CTL | tr ' ' '\n' | sed -n 's/^unexpected=//p')
	expect_eq "unexpected vmcs02 exits" "$v" 0
	/bin/workload 4 1 > /dev/null || fail "host CPU wedged after the hostile slots"
	ept_invariants "after the hostile slots"
	no_internal_errors
	hostile vmcall 0 0x11 $dpfn 1 | grep -q 'rax=0x0 ' || fail "give back"
	expect_eq "donated page untouched" "$(hostile scan $dpfn 1 $pat)" "ok 512 0"
	expect_eq "module image word 0" "$(hostile read $ipfn 0)" "$image_word"
}

# A page a live guest maps through its shadow EPT cannot be donated:
# HOST_DONATE_HYP answers EBUSY (shadow-ept.rst, "Donations": no reverse
# map, the host has to unmap first) and the guest goes on reading it.  Once
# the guest is gone and the host's INVEPT retired its shadow, the donation
# works; and after rmmod kvm_intel (the last VMXOFF retires every shadow).
t_ept_donate_mapped() {
	pat=0x3c3c3c3c3c3c3c3c
	pfn=$(hostile alloc $pat | sed -n 's/^ok //p')
	other=$(( $(ncpu) - 1 ))
	hostile map $pfn > /dev/null
	taskset -c 0 /bin/kvm_guest -m $HMEM -l 2 -p 0x3c3c3c3c > /tmp/edon.out &
	gp=$!
	wait_first /tmp/edon.out
	r=$(hostile vmcall $other 0x10 $pfn 1)
	echo "donate (cpu$other) while the guest maps it: $r"
	case "$r" in *"$EBUSY_RAX "*) ;; *) fail "donating a page a live guest maps: $r, want EBUSY" ;; esac
	wait $gp || fail "the guest"
	cat /tmp/edon.out
	grep -q '^loop: reads=[1-9][0-9]* expected=[1-9][0-9]* other=0 shutdowns=0 bad_exits=0 ' /tmp/edon.out ||
		fail "the guest did not keep reading its page"
	r=$(hostile vmcall 0 0x10 $pfn 1)
	echo "donate after the VM is gone: $r"
	case "$r" in *"$EBUSY_RAX "*) ;; *) fail "the dead VM's shadow no longer maps the page: $r" ;; esac
	expect_eq "host INVEPT global" "$(hostile invept 0 2 0)" ok
	r=$(hostile vmcall 0 0x10 $pfn 1)
	echo "donate after the host's INVEPT: $r"
	case "$r" in *"rax=0x0 "*) ;; *) fail "donation after INVEPT: $r" ;; esac
	ept_invariants "with the page donated"
	hostile vmcall 0 0x11 $pfn 1 | grep -q 'rax=0x0 ' || fail "give back"
	expect_eq "page word 0" "$(hostile read $pfn 0)" "ok $pat"
	# Mapped again by a guest, then kvm_intel unloaded.
	taskset -c 0 /bin/kvm_guest -m $HMEM > /tmp/edon2.out
	expect_eq "guest reads it again" "$(cat /tmp/edon2.out)" "hostile slot: exit=io read=0x3c3c3c3c"
	r=$(hostile vmcall 0 0x10 $pfn 1)
	case "$r" in *"$EBUSY_RAX "*) ;; *) fail "donation while the shadow maps it: $r, want EBUSY" ;; esac
	rmmod kvm_intel || fail "rmmod kvm_intel"
	r=$(hostile vmcall 0 0x10 $pfn 1)
	echo "donate after rmmod kvm_intel: $r"
	case "$r" in *"rax=0x0 "*) ;; *) fail "donation after rmmod kvm_intel: $r" ;; esac
	ept_invariants "after rmmod kvm_intel"
	hostile vmcall 0 0x11 $pfn 1 | grep -q 'rax=0x0 ' || fail "give back"
	insmod /lib/modules/kvm-intel.ko || fail "kvm_intel again"
	no_internal_errors
}

# A page a dead VM's shadow still shares, reused by the host as a VMCS
# region (issue 10): a guest reads the page (its memory slot), the VM is
# destroyed without any INVEPT (KVM issues none when it frees a VM), so the
# shadow keeps its share (a donation answers EBUSY); then the host uses the
# page as a VMCS region in KVM's VMX operation (hostile "vmcs": VMCLEAR,
# VMPTRLD, VMWRITE/VMREAD, VMLAUNCH failing on its all-zero controls with
# error 7, VMCLEAR).  Root mode takes the page back from the shadows first
# (sept_reclaims), so every instruction acts on it as on bare hardware; the
# page is then the host's alone (a donation succeeds), the invariants hold.
t_ept_reuse_vmcs() {
	pat=0x5a5a5a5a5a5a5a5a
	pfn=$(hostile alloc $pat | sed -n 's/^ok //p')
	hostile map $pfn > /dev/null
	before=$(ept_stat sept_reclaims)
	taskset -c 0 /bin/kvm_guest -m $HMEM > /tmp/ereuse.out
	expect_eq "guest reads the page" "$(cat /tmp/ereuse.out)" "hostile slot: exit=io read=0x5a5a5a5a"
	r=$(hostile vmcall 0 0x10 $pfn 1)
	echo "donate after the VM is gone (no INVEPT): $r"
	case "$r" in *"$EBUSY_RAX "*) ;; *) fail "precondition: the dead VM's shadow no longer shares the page: $r" ;; esac
	r=$(hostile vmcs 0 $pfn)
	echo "the page as a VMCS region: $r"
	expect_eq "VMX instructions on the reused page" "$r" \
		"ok clear=0 ptrld=0 rsp=0x1234567 launch=1 err=7 clear2=0"
	after=$(ept_stat sept_reclaims)
	echo "sept_reclaims: $before -> $after"
	[ "${after:-0}" -gt "${before:-0}" ] || fail "no reclaim counted"
	ept_invariants "after the reuse"
	r=$(hostile vmcall 0 0x10 $pfn 1)
	echo "donate after the reuse: $r"
	case "$r" in *"rax=0x0 "*) ;; *) fail "the page is not the host's alone after the reuse: $r" ;; esac
	hostile vmcall 0 0x11 $pfn 1 | grep -q 'rax=0x0 ' || fail "give back"
	# The page serves a guest again.
	hostile write $pfn 0 $pat > /dev/null
	taskset -c 0 /bin/kvm_guest -m $HMEM > /tmp/ereuse2.out
	expect_eq "guest reads it again" "$(cat /tmp/ereuse2.out)" "hostile slot: exit=io read=0x5a5a5a5a"
	no_internal_errors
}

# 20 VM create/destroy cycles (issue 10, "Teardown"): two guests at once
# on different CPUs where there are two, each a VM created, run and
# destroyed (no INVEPT at destroy); the invariants hold with kvm_intel
# loaded, and after rmmod kvm_intel (the last VMXOFF retires every shadow)
# nothing is left: no pinned frame, every share count 0 (the invariant
# checker sums the counts against the shadows' leaves, none left), no
# internal error (the reserve's use printed).
# reserve_in_use "ok free=F wanted=W total=T ...": pages handed out (held
# - free - one header per 16-page batch, as reserve-tests.sh counts).
reserve_in_use() {
	f=$(echo "$1" | sed -n 's/.* free=\([0-9]*\) .*/\1/p')
	t=$(echo "$1" | sed -n 's/.* total=\([0-9]*\) .*/\1/p')
	echo $(( ${t:-0} - ${f:-0} - ${t:-0} / 16 ))
}

t_ept_cycles() {
	n=$(ncpu)
	echo reserve > $CTL; r=$(cat $CTL); echo "reserve before: $r"
	used0=$(reserve_in_use "$r")
	pool0=$(ept_stat pool_used)
	created0=$(ept_stat sept_created)
	i=1
	while [ $i -le 20 ]; do
		taskset -c $((i % n)) timeout 120 /bin/kvm_guest -q -n 3 > /tmp/cyc.a 2>&1 &
		pa=$!
		pb=
		if [ "$n" -gt 1 ]; then
			taskset -c $(((i + 1) % n)) timeout 120 /bin/kvm_guest -q -n 3 > /tmp/cyc.b 2>&1 &
			pb=$!
		fi
		wait $pa || fail "cycle $i: guest a: $(cat /tmp/cyc.a)"
		[ -z "$pb" ] || wait $pb || fail "cycle $i: guest b: $(cat /tmp/cyc.b)"
		i=$((i + 1))
	done
	echo "shadows created in the cycles: $(( $(ept_stat sept_created) - created0 ))"
	ept_invariants "after 20 VM cycles"
	rmmod kvm_intel || fail "rmmod kvm_intel"
	ept_invariants "after 20 VM cycles and rmmod kvm_intel"
	echo nested_stats 0 > $CTL
	s=$(cat $CTL | tr ' ' '\n')
	echo "$s" | grep '^sept_\|^pinned_frames='
	expect_eq "pinned frames after rmmod kvm_intel" "$(echo "$s" | sed -n 's/^pinned_frames=//p')" 0
	expect_eq "shadow internal errors" "$(echo "$s" | sed -n 's/^sept_internal_errors=//p')" 0
	echo reserve > $CTL; r=$(cat $CTL); echo "reserve after: $r"
	used1=$(reserve_in_use "$r")
	# Printed, not asserted: the reserve holds the vmcs12 cache, which
	# keeps pages across VMXOFF (nested.rst); the pool keeps the host EPT
	# tables that sharing split (the engine does not merge them back), so
	# neither count returns exactly.  What must come back is asserted
	# above (pins, shares: the invariants; every shadow destroyed).
	echo "reserve pages in use: $used0 before the cycles, $used1 after rmmod kvm_intel"
	echo "pool pages in use: $pool0 before the cycles (shadows of the earlier tests live), $(ept_stat pool_used) after rmmod kvm_intel"
	no_internal_errors
	insmod /lib/modules/kvm-intel.ko || fail "kvm_intel again"
}

# Shares raced against donations: a guest on cpu0 reads a page of pattern P
# and writes its counter into it in a loop (one exit per read), its slot
# taken out and put back by KVM every 8 reads (KVM zaps its EPT entries and
# INVEPTs: the shadow's leaf is stale and dropped, the share returned;
# kvm_guest -t), while the last CPU (cpu1 with 2 CPUs; cpu0 too with 1,
# interleaved) 150 times does a global INVEPT (a shadow still current is
# kept: re-validation, shadow-ept.rst) and tries to donate the page,
# at once, after a random spin or after a random sleep (the hostile
# module's eptrace): EBUSY when the guest mapped it again first (both
# outcomes must occur); a donation that succeeds has root mode fill the
# page with Q, wait, count the Q words (512 unless the guest wrote the
# hypervisor's page), refill P and give it back.  The guest must only ever read P (a Q
# is the hypervisor's page read), its touches of the donated page are
# triple faults (counted, the vCPU restarted); no error, the invariants
# hold (no page both donated and guest-mapped), nothing internal.
t_ept_share_race() {
	p=0x7e7e7e7e7e7e7e7e
	q=0x0e0e0e0e0e0e0e0e
	rounds=150
	pfn=$(hostile alloc $p | sed -n 's/^ok //p')
	rc=$(( $(ncpu) - 1 ))
	hostile map $pfn > /dev/null
	prot0=$(ept_stat protected)
	taskset -c 0 /bin/kvm_guest -m $HMEM -l 900 -p 0x7e7e7e7e -t 8 > /tmp/erace.out &
	gp=$!
	wait_first /tmp/erace.out
	r=$(taskset -c $rc sh -c "echo eptrace $pfn $rc $rounds $p $q > $H && cat $H")
	echo "racer on cpu$rc: $r"
	kill -USR1 $gp
	wait $gp || fail "the guest"
	cat /tmp/erace.out
	v() { echo "$r" | tr ' ' '\n' | sed -n "s/^$1=//p"; }
	expect_eq rounds "$(v rounds)" $rounds
	expect_eq "race errors" "$(v errors)" 0
	expect_eq "hypervisor page written while donated" "$(v changed)" 0
	expect_eq "INVEPT failures" "$(v invept_fail)" 0
	expect_eq "donated + busy" "$(( $(v donated) + $(v busy) ))" $rounds
	[ "$(v donated)" -ge 1 ] || fail "no donation succeeded: the race never let the host have the page"
	[ "$(v busy)" -ge 1 ] || fail "no donation refused: the guest never mapped the page again first"
	grep -q '^loop: reads=[1-9][0-9]* expected=[1-9][0-9]* other=0 ' /tmp/erace.out ||
		fail "the guest read something else than its page"
	grep -q ' bad_exits=0 ' /tmp/erace.out || fail "unexpected exits of the guest"
	sh=$(sed -n 's/.* shutdowns=\([0-9]*\) .*/\1/p' /tmp/erace.out)
	echo "protected +$(( $(ept_stat protected) - prot0 )), guest triple faults $sh"
	expect_eq "page word 0 after the race" "$(hostile read $pfn 0)" "ok $p"
	/bin/workload 4 1 > /dev/null || fail "host broken after the race"
	ept_invariants "after the race"
	no_internal_errors
}

# ept_expect FILE STEP RESULT: the step's line starts with RESULT.
ept_expect() {
	got=$(sed -n "s/^$2: //p" "$1" | head -1)
	case "$got" in "$3"*) ;; *) fail "$2: got '$got', want '$3...'" ;; esac
}

# The host's EPT tables (EPT12) on hypervisor memory: selftests/vmx_entry
# with ept12=1 runs its own guest (kvm_intel unloaded: the module executes
# VMXON itself) on an EPT it builds, identity for the guest's pages.  The
# control runs the guest (CPUID exit); EPTP12 or the PML4 entry on a pool
# page or a frame of the module image, or on valid copies of the control's
# tables donated to the hypervisor (only the ownership check stops those),
# end in the guest's triple fault (exit reason 2) with nothing of the page
# read; given back, the copies are unchanged and run the guest again.
# Six refusals counted in `protected` of the CPU that ran it.
t_ept12_on_hyp() {
	rmmod kvm_intel || fail "rmmod kvm_intel"
	rmmod kvm
	pool=$(echo pool_pa > $CTL && cat $CTL | sed -n 's/^ok //p')
	base=$(sed -n 's/^pkvm_x86 .* \(0x[0-9a-f]*\).*$/\1/p' /proc/modules)
	ipfn=$(hostile pfn $base | sed -n 's/^ok //p')
	image_word=$(hostile read $ipfn 0)
	before=
	for c in $(seq 0 $(($(ncpu) - 1))); do
		echo nested_stats $c > $CTL
		before="$before $(cat $CTL | tr ' ' '\n' | sed -n 's/^protected=//p')"
	done
	n=$(dmesg | grep 'vmx_entry: ' | grep -c -v 'taints kernel')
	insmod /lib/modules/vmx_entry.ko ept12=1 pkvm=1 pool_pa=$pool image_pa=$((ipfn << 12)) ||
		fail "insmod vmx_entry ept12=1"
	rmmod vmx_entry
	dmesg | sed -n 's/.*vmx_entry: //p' | grep -v 'taints kernel' | tail -n +$((n + 1)) > /tmp/ept12.out
	cat /tmp/ept12.out
	grep -q '^done$' /tmp/ept12.out || fail "vmx_entry did not finish"
	for s in owned owned_via owned_bait back_root back_pml4e; do
		ept_expect /tmp/ept12.out ept12_$s "exit reason=0xa qual=0x0"
	done
	for s in pool_root image_root pool_pml4e image_pml4e donated_root donated_pml4e; do
		ept_expect /tmp/ept12.out ept12_$s "exit reason=0x2 qual=0x0"
	done
	ept_expect /tmp/ept12.out ept12_bait_donate "rax=0x0 rax=0x0"
	ept_expect /tmp/ept12.out ept12_bait_back "rax=0x0 rax=0x0"
	ept_expect /tmp/ept12.out ept12_bait_unchanged yes
	cpu=$(sed -n 's/^cpu=//p' /tmp/ept12.out)
	echo nested_stats $cpu > $CTL
	after=$(cat $CTL | tr ' ' '\n' | sed -n 's/^protected=//p')
	b=$(echo $before | cut -d' ' -f$((cpu + 1)))
	expect_eq "EPT12 tables refused (protected, cpu$cpu)" "$((after - b))" 6
	expect_eq "module image word 0" "$(hostile read $ipfn 0)" "$image_word"
	/bin/workload 4 1 > /dev/null || fail "host broken"
	ept_invariants "after the EPT12 tables on hypervisor memory"
	no_internal_errors
}

t_ept_hostile_done() {
	rmmod pkvm_hostile
	grep -q '^kvm_intel ' /proc/modules && rmmod kvm_intel
	grep -q '^kvm ' /proc/modules && rmmod kvm
	ept_invariants "after VMXOFF"
	grown=$(pool_stat pool_chunks_grown)
	pkvm_rmmod || fail "rmmod pkvm_x86"
	# The chunks pool_grows added go back with the reserve's batches.
	back=$(dmesg | sed -n 's/.*grown pool chunks: .* given back (\([0-9]*\) chunks).*/\1/p' | tail -1)
	echo "pool chunks grown $grown, given back at unload: $back"
	expect_eq "grown pool chunks given back" "$back" "$grown"
}

# ---------------------------------------------------------------------
# Issue 10's benchmarks of the shadow EPT: numbers printed as BENCH lines,
# nothing judged but that the workload runs (Documentation/shadow-ept.rst,
# "Benchmarks").  The hypervisor-wide counters are read through cpu0's
# nested_stats (sept_*, pool_*; hv_exits and reflected are cpu0's).

EPT_BENCH_PAGES=16384	# 64 MiB touched page by page (about 40 s of the run)

# bench_stats: cpu0's nested statistics, one NAME=VALUE a line.
bench_stats() {
	echo nested_stats 0 > $CTL
	cat $CTL | tr ' ' '\n'
}

# bench_v STATS NAME: the value of NAME in STATS (0 if missing).
bench_v() {
	v=$(echo "$1" | sed -n "s/^$2=//p")
	echo "${v:-0}"
}

# bench_div A B [DIGITS]: A / B, or "-" when B is 0.
bench_div() {
	awk -v a="$1" -v b="$2" -v d="${3:-0}" 'BEGIN { if (b == 0) print "-"; else printf("%." d "f\n", a / b) }'
}

# bench_cost S0 S1 LABEL: the shadow EPT's cost counters between two
# bench_stats, as BENCH lines (cycles per event and the count).
bench_cost() {
	for c in fault_installed fault_reflected fault_other invept_kept invept_retired invept_none; do
		n=$(( $(bench_v "$2" sept_n_$c) - $(bench_v "$1" sept_n_$c) ))
		cyc=$(( $(bench_v "$2" sept_cyc_$c) - $(bench_v "$1" sept_cyc_$c) ))
		echo "BENCH sept_${c}_tsc$3 $(bench_div $cyc $n) (n=$n)"
	done
}

# The first touch of 64 MiB by a guest on cpu0 (kvm_exit_bench -t: one
# write per fresh page, each timed by the guest, then the same pages
# warm), with kvm_intel on the shadow EPT: the guest's own figures; the
# hypervisor's part (its fault path per installed / reflected violation,
# all root-mode cycles of cpu0 per page touched, debug build); the exit
# multiplication (hypervisor exits of cpu0 per exit KVM sees); and the
# hypervisor pages per guest GiB mapped (the pool's pages in use after the
# guest, its shadow still in place, minus before, over the bytes the
# shadow's leaves mapped: shadow tables, share-count pages and host EPT
# tables split for it).  The INVEPT figures count every INVEPT since the
# module was loaded (this suite's guests before, and this one).
t_ept_bench() {
	taskset -c 0 timeout 300 /bin/kvm_exit_bench -n 2 -w 0 -t 16 > /dev/null || fail "warm-up guest"
	echo nested_stats_reset 0 > $CTL
	s0=$(bench_stats)
	line=$(taskset -c 0 timeout 900 /bin/kvm_exit_bench -n 1 -w 0 -t $EPT_BENCH_PAGES)
	rc=$?
	s1=$(bench_stats)
	echo "$line"
	[ $rc = 0 ] || { fail "kvm_exit_bench -t $EPT_BENCH_PAGES (rc=$rc)"; return 1; }
	d() { echo $(( $(bench_v "$s1" $1) - $(bench_v "$s0" $1) )); }
	f() { echo "$line" | tr ' ' '\n' | sed -n "s/^$1=//p"; }
	echo "$s1" | grep '^sept_\|^pool_\|^cyc_root\|^hv_exits=\|^reflected=\|^ept_'
	pages=$EPT_BENCH_PAGES
	echo "BENCH sept_guest_first_touch_tsc $(f touch) (mean $(f touch_mean), $pages pages; warm $(f warm), mean $(f warm_mean))"
	echo "BENCH sept_guest_first_touch_kvm_exits_per_page $(f touch_exits) (warm $(f warm_exits))"
	bench_cost "$s0" "$s1" ""
	root=$(d cyc_root_all)
	echo "BENCH sept_root_tsc_per_first_touch $(bench_div $root $pages) (all root-mode cycles of cpu0 / pages touched; guest-seen $(f touch))"
	echo "BENCH sept_hv_exits_per_kvm_exit $(bench_div $(d hv_exits) $(d reflected) 2) (hypervisor exits $(d hv_exits), KVM exits $(d reflected), shadow EPT violations $(d ept_faults), installs $(d ept_installs))"
	mapped=$(d sept_mapped_bytes)
	pool=$(d pool_used)
	echo "BENCH sept_pool_pages_per_guest_gib $(bench_div $((pool * 1073741824)) $mapped) (pool +$pool pages for $((mapped / 1048576)) MiB mapped by $(d sept_mapped) leaves; shadows retired meanwhile: $(d sept_invalidated) by INVEPT, $(d sept_evicted) evicted)"
	bench_cost "" "$s1" _since_load
	# The checker's scratch (256 claims) cannot hold the dead VM's shadow
	# of 4096 shared pages: "violation kind 14" (ScratchFull) is that, not
	# a broken invariant; invariants_after checks once the shadows are gone.
	echo check > $CTL
	r=$(cat $CTL)
	echo "invariants with the shadow in place: $r"
	case "$r" in "ok invariants hold"* | *"violation kind 14 "*) ;; *) fail "invariants: $r" ;; esac
}

# The hostile part's INVEPTs and faults (the share race's slot changes
# and the racer's global INVEPTs retire and keep shadows), since the
# module was loaded for it.
t_ept_bench_hostile() {
	s=$(bench_stats)
	bench_cost "" "$s" _hostile
}
