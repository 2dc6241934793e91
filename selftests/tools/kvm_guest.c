// SPDX-License-Identifier: GPL-2.0
/*
 * kvm_guest: a KVM-selftest-like guest through /dev/kvm, checked exit by
 * exit.  Creates a VM with 64 KiB of guest memory at GPA 0 (anonymous, or
 * the mmap of a file with -m FILE), one vCPU in 32-bit flat protected mode
 * (no paging: KVM's shadow MMU runs it in its "nonpaging" mode), and runs
 * this loop at GPA 0x1000:
 *
 *	xor esi, esi
 *   1: inc esi
 *	mov [0x2000], esi	; guest memory write, checked by the tool
 *	xor eax, eax
 *	cpuid			; leaf 0 (exits to KVM, which emulates it)
 *	mov eax, esi
 *	out 0x10, al		; KVM_EXIT_IO, the counter's low byte
 *	hlt			; KVM_EXIT_HLT (no in-kernel irqchip)
 *	jmp 1b
 *
 * Every KVM_RUN must end with the expected exit (IO port 0x10 with the
 * counter, then HLT), RSI and the memory word must hold the counter,
 * RIP must point after the instruction.  One line per run and a summary;
 * exit status 0 if everything matched.  The output does not depend on the
 * hypervisor below KVM, so bare and pkvm runs compare with diff.
 *
 * usage: kvm_guest [-q] [-n ITERATIONS] [-s SECONDS] [-m FILE [-w | -l SECS [-p VALUE] [-t N]]]
 *        kvm_guest -b MB [-g STRIDE_KB]
 *   -q       print only the summary
 *   -s SECS  keep the VM (and its vCPU's VMCS) alive SECS seconds after
 *            the loop, printing "holding" first
 *   -m FILE  back guest memory with a MAP_SHARED mapping of FILE (e.g. the
 *            hostile module's remap_pfn_range of a hypervisor page); then
 *            the guest reads GPA 0x3000 into the port: "read=0x..."
 *   -w       with -m: the guest first writes 0x11223344 to GPA 0x3000
 *            (then reads it back as above)
 *   -l SECS  with -m: the guest loops for SECS seconds, each turn reading
 *            GPA 0x3000 (out to port 0x11: one KVM_EXIT_IO per read) and
 *            writing its turn counter to GPA 0x3800; prints "first read=0x.."
 *            once the first read is in (flushed), then "loop: reads=N
 *            expected=N other=N shutdowns=N bad_exits=N first_other=0x..".
 *            A triple fault of the guest (KVM_EXIT_SHUTDOWN: the page was
 *            refused to it) is counted and the vCPU restarted at the loop.
 *            SIGUSR1 ends the loop early (the summary is still printed).
 *   -p VAL   with -l: the 32-bit value the reads should give; "expected"
 *            counts those, "other" the rest
 *   -t N     with -l: every N reads, slot 1 is deleted and added again
 *            (KVM zaps its EPT entries for it and flushes: the hypervisor's
 *            shadow of that page goes stale and is dropped at that INVEPT)
 *   -b MB    a second slot of MB MiB at GPA 256 MiB (anonymous, not
 *            reserved, no huge pages: KVM maps it in 4 KiB leaves), which
 *            the guest touches page by page, writing each page's address
 *            into it, then outputs where it stopped (port 0x11) and halts;
 *            the tool checks every page touched and prints "big: mb=MB
 *            stride_kb=S pages=N bad=N exit=..".  Under pkvm with
 *            nested_ept=1 that is one shadow leaf per page: the
 *            hypervisor's pool must grow (Documentation/shadow-ept.rst,
 *            "Memory").
 *   -g KB    with -b: touch one page every KB KiB (default 4): with 2048,
 *            every page touched needs a shadow table page of its own, for
 *            4 KiB of memory
 */
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "kvm_flat.h"

#define MEM_SIZE 0x10000
#define CODE 0x1000
#define DATA 0x2000

static const uint8_t loop_code[] = {
	0x31, 0xf6,			/* xor esi, esi */
	0x46,				/* 1: inc esi */
	0x89, 0x35, 0x00, 0x20, 0x00, 0x00, /* mov [0x2000], esi */
	0x31, 0xc0,			/* xor eax, eax */
	0x0f, 0xa2,			/* cpuid */
	0x89, 0xf0,			/* mov eax, esi */
	0xe6, 0x10,			/* out 0x10, al */
	0xf4,				/* hlt */
	0xeb, 0xee,			/* jmp 1b */
};

/* Reads GPA 0x3000 (the hostile page when -m) and outputs it, then HLT. */
static const uint8_t read_code[] = {
	0xa1, 0x00, 0x30, 0x00, 0x00,	/* mov eax, [0x3000] */
	0xe7, 0x11,			/* out 0x11, eax */
	0xf4,				/* hlt */
	0xeb, 0xfe,			/* jmp $ */
};

/* Writes 0x11223344 to GPA 0x3000, then reads it as read_code does. */
static const uint8_t write_code[] = {
	0xc7, 0x05, 0x00, 0x30, 0x00, 0x00,
	0x44, 0x33, 0x22, 0x11,		/* mov dword [0x3000], 0x11223344 */
	0xa1, 0x00, 0x30, 0x00, 0x00,	/* mov eax, [0x3000] */
	0xe7, 0x11,			/* out 0x11, eax */
	0xf4,				/* hlt */
	0xeb, 0xfe,			/* jmp $ */
};

/*
 * -l: reads GPA 0x3000 and writes the turn counter to GPA 0x3800, forever,
 * one port exit per turn.
 */
static const uint8_t loop_read_code[] = {
	0xa1, 0x00, 0x30, 0x00, 0x00,	/* 1: mov eax, [0x3000] */
	0x46,				/* inc esi */
	0x89, 0x35, 0x00, 0x38, 0x00, 0x00, /* mov [0x3800], esi */
	0xe7, 0x11,			/* out 0x11, eax */
	0xeb, 0xf0,			/* jmp 1b */
};

static const char *reason(int r);

/* -b: GPA of the big slot (up to 3 GiB fit below the APIC and the TSS). */
#define BIG_GPA 0x10000000

/*
 * -b: writes each page's address into the page, from BIG_GPA for ECX
 * pages (patched in at offset 6) STRIDE bytes apart (offset 14), then
 * outputs where it stopped and halts.
 */
static uint8_t big_code[] = {
	0xbf, 0x00, 0x00, 0x00, 0x10,	/* mov edi, BIG_GPA */
	0xb9, 0x00, 0x00, 0x00, 0x00,	/* mov ecx, pages */
	0x89, 0x3f,			/* 1: mov [edi], edi */
	0x81, 0xc7, 0x00, 0x10, 0x00, 0x00, /* add edi, stride */
	0xe2, 0xf6,			/* loop 1b */
	0x89, 0xf8,			/* mov eax, edi */
	0xe7, 0x11,			/* out 0x11, eax */
	0xf4,				/* hlt */
	0xeb, 0xfe,			/* jmp $ */
};

/* -b MB: the big slot, touched by the guest page by page, then checked. */
static int big_guest(int kvm, int vm, int mb, uint64_t stride)
{
	uint64_t size = (uint64_t)mb << 20, pages = size / stride, bad = 0;
	struct kvm_run *run;
	uint32_t got = 0;
	uint8_t *big;
	int vcpu, rsize;

	big = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
		   -1, 0);
	if (big == MAP_FAILED)
		return kvm_flat_fail("mmap -b");
	/* 4 KiB leaves everywhere: one shadow leaf per page touched. */
	madvise(big, size, MADV_NOHUGEPAGE);
	if (kvm_flat_slot(vm, 1, BIG_GPA, size, big, "KVM_SET_USER_MEMORY_REGION -b"))
		return 1;
	if (kvm_flat_vcpu(kvm, vm, 0, &vcpu, &run, &rsize) || kvm_flat_regs(vcpu, CODE))
		return 1;
	if (ioctl(vcpu, KVM_RUN, 0) < 0)
		return kvm_flat_fail("KVM_RUN");
	if (run->exit_reason == KVM_EXIT_IO && run->io.port == 0x11)
		memcpy(&got, (uint8_t *)run + run->io.data_offset, 4);
	for (uint64_t i = 0; i < pages; i++)
		if (*(uint32_t *)(big + i * stride) != (uint32_t)(BIG_GPA + i * stride))
			bad++;
	printf("big: mb=%d stride_kb=%llu pages=%llu bad=%llu exit=%s end=0x%08x\n", mb,
	       (unsigned long long)(stride >> 10), (unsigned long long)pages,
	       (unsigned long long)bad, reason(run->exit_reason), got);
	return bad || got != (uint32_t)(BIG_GPA + pages * stride) ? 1 : 0;
}

static const char *reason(int r)
{
	switch (r) {
	case KVM_EXIT_IO: return "io";
	case KVM_EXIT_HLT: return "hlt";
	case KVM_EXIT_SHUTDOWN: return "shutdown";
	case KVM_EXIT_FAIL_ENTRY: return "fail_entry";
	case KVM_EXIT_INTERNAL_ERROR: return "internal_error";
	case KVM_EXIT_MMIO: return "mmio";
	default: return "other";
	}
}

static volatile sig_atomic_t stop_loop;

/* -t: slot 1 (FILE at GPA 0x3000) taken out and put back every toggle reads. */
static int toggle, toggle_vm;
static void *toggle_mem;

static void on_usr1(int sig)
{
	(void)sig;
	stop_loop = 1;
}

/*
 * -l: runs the reading loop for `secs` seconds and counts what the reads
 * gave; a triple fault restarts the vCPU at the loop.  Exit status 0 unless
 * KVM_RUN itself failed or an exit other than the port and shutdown came.
 */
static int read_loop(int vcpu, struct kvm_run *run, int secs, uint32_t expect)
{
	unsigned long reads = 0, expected = 0, other = 0, shutdowns = 0, bad = 0;
	uint32_t first_other = 0;
	time_t end = time(NULL) + secs;
	struct sigaction sa = { .sa_handler = on_usr1 };

	/* No SA_RESTART: the signal interrupts KVM_RUN (EINTR). */
	sigaction(SIGUSR1, &sa, NULL);
	while (!stop_loop && time(NULL) < end) {
		uint32_t got;

		if (ioctl(vcpu, KVM_RUN, 0) < 0) {
			if (errno == EINTR)
				continue;
			return kvm_flat_fail("KVM_RUN");
		}
		if (run->exit_reason == KVM_EXIT_SHUTDOWN) {
			shutdowns++;
			if (kvm_flat_regs(vcpu, CODE))
				return 1;
			continue;
		}
		if (run->exit_reason != KVM_EXIT_IO || run->io.port != 0x11) {
			if (!bad++)
				printf("exit=%s (%u) port=0x%x\n", reason(run->exit_reason),
				       run->exit_reason, run->io.port);
			if (bad > 10)
				break;
			continue;
		}
		memcpy(&got, (uint8_t *)run + run->io.data_offset, 4);
		if (toggle && reads && reads % toggle == 0) {
			/* KVM zaps the slot's EPT entries and flushes (INVEPT). */
			if (kvm_flat_slot(toggle_vm, 1, 0x3000, 0, toggle_mem, "slot 1 out") ||
			    kvm_flat_slot(toggle_vm, 1, 0x3000, 4096, toggle_mem, "slot 1 back"))
				return 1;
		}
		if (!reads++) {
			printf("first read=0x%08x\n", got);
			fflush(stdout);
		}
		if (got == expect) {
			expected++;
		} else if (!other++) {
			first_other = got;
		}
	}
	printf("loop: reads=%lu expected=%lu other=%lu shutdowns=%lu bad_exits=%lu first_other=0x%08x\n",
	       reads, expected, other, shutdowns, bad, first_other);
	return bad ? 1 : 0;
}

int main(int argc, char **argv)
{
	int quiet = 0, n = 20, opt, bad = 0, ios = 0, hlts = 0, hold = 0, loop = 0, write = 0;
	int big_mb = 0, stride_kb = 4;
	uint32_t expect = 0;
	const char *file = NULL;
	struct kvm_regs regs;
	struct kvm_run *run;
	uint8_t *mem;
	int kvm, vm, vcpu, size;

	while ((opt = getopt(argc, argv, "qn:m:s:wl:p:t:b:g:")) != -1) {
		if (opt == 'q')
			quiet = 1;
		else if (opt == 'w')
			write = 1;
		else if (opt == 'n')
			n = atoi(optarg);
		else if (opt == 's')
			hold = atoi(optarg);
		else if (opt == 'm')
			file = optarg;
		else if (opt == 'l')
			loop = atoi(optarg);
		else if (opt == 'p')
			expect = strtoul(optarg, NULL, 0);
		else if (opt == 't')
			toggle = atoi(optarg);
		else if (opt == 'b')
			big_mb = atoi(optarg);
		else if (opt == 'g')
			stride_kb = atoi(optarg);
		else
			return 2;
	}
	kvm = open("/dev/kvm", O_RDWR);
	if (kvm < 0)
		return kvm_flat_fail("open /dev/kvm");
	if (kvm_flat_vm(kvm, MEM_SIZE, &vm, &mem))
		return 1;
	if (big_mb > 0) {
		uint32_t stride = (uint32_t)stride_kb << 10, pages;

		if (stride_kb < 4 || stride_kb % 4 || big_mb > 3072 ||
		    ((uint64_t)big_mb << 20) < stride)
			return 2;
		pages = (uint32_t)(((uint64_t)big_mb << 20) / stride);
		memcpy(big_code + 6, &pages, 4);
		memcpy(big_code + 14, &stride, 4);
		memcpy(mem + CODE, big_code, sizeof(big_code));
		if (kvm_flat_slot(vm, 0, 0, MEM_SIZE, mem, "KVM_SET_USER_MEMORY_REGION"))
			return 1;
		return big_guest(kvm, vm, big_mb, stride);
	}
	if (!file)
		memcpy(mem + CODE, loop_code, sizeof(loop_code));
	else if (loop > 0)
		memcpy(mem + CODE, loop_read_code, sizeof(loop_read_code));
	else if (write)
		memcpy(mem + CODE, write_code, sizeof(write_code));
	else
		memcpy(mem + CODE, read_code, sizeof(read_code));
	/* With -m, slot 0 ends below GPA 0x3000, which slot 1 maps. */
	if (kvm_flat_slot(vm, 0, 0, file ? 0x3000 : MEM_SIZE, mem, "KVM_SET_USER_MEMORY_REGION"))
		return 1;
	if (file) {
		/* Slot 1: one page at GPA 0x3000 from FILE. */
		int fd = open(file, O_RDWR);
		void *p;

		if (fd < 0)
			return kvm_flat_fail("open -m FILE");
		p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
		if (p == MAP_FAILED)
			return kvm_flat_fail("mmap -m FILE");
		if (kvm_flat_slot(vm, 1, 0x3000, 4096, p, "KVM_SET_USER_MEMORY_REGION slot 1"))
			return 1;
		toggle_vm = vm;
		toggle_mem = p;
	}
	if (kvm_flat_vcpu(kvm, vm, 0, &vcpu, &run, &size) || kvm_flat_regs(vcpu, CODE))
		return 1;

	if (file && loop > 0)
		return read_loop(vcpu, run, loop, expect);
	if (file) {
		uint32_t got = 0;

		if (ioctl(vcpu, KVM_RUN, 0) < 0)
			return kvm_flat_fail("KVM_RUN");
		if (run->exit_reason == KVM_EXIT_IO && run->io.port == 0x11)
			memcpy(&got, (uint8_t *)run + run->io.data_offset, 4);
		printf("hostile slot: exit=%s read=0x%08x\n", reason(run->exit_reason), got);
		return 0;
	}

	for (int i = 1; i <= n; i++) {
		uint8_t val = 0;

		if (ioctl(vcpu, KVM_RUN, 0) < 0)
			return kvm_flat_fail("KVM_RUN");
		if (run->exit_reason == KVM_EXIT_IO) {
			val = *((uint8_t *)run + run->io.data_offset);
			ios++;
		}
		if (run->exit_reason != KVM_EXIT_IO || run->io.port != 0x10 ||
		    run->io.direction != KVM_EXIT_IO_OUT || run->io.size != 1 || val != (uint8_t)i) {
			printf("iteration %d: exit=%s (%u) port=0x%x val=%u: want io port 0x10 val %u\n",
			       i, reason(run->exit_reason), run->exit_reason, run->io.port, val, (uint8_t)i);
			bad++;
			break;
		}
		if (ioctl(vcpu, KVM_RUN, 0) < 0)
			return kvm_flat_fail("KVM_RUN");
		if (run->exit_reason != KVM_EXIT_HLT) {
			printf("iteration %d: exit=%s (%u): want hlt\n", i, reason(run->exit_reason),
			       run->exit_reason);
			bad++;
			break;
		}
		hlts++;
		if (ioctl(vcpu, KVM_GET_REGS, &regs) < 0)
			return kvm_flat_fail("KVM_GET_REGS");
		if (regs.rsi != (uint64_t)i || regs.rip != CODE + 0x12 ||
		    *(uint32_t *)(mem + DATA) != (uint32_t)i) {
			printf("iteration %d: rsi=%llu rip=0x%llx mem=%u\n", i,
			       (unsigned long long)regs.rsi, (unsigned long long)regs.rip,
			       *(uint32_t *)(mem + DATA));
			bad++;
			break;
		}
		if (!quiet)
			printf("iteration %d: io val=%u hlt rsi=%llu rip=0x%llx mem=%u cpuid0=%llx,%llx,%llx\n",
			       i, val, (unsigned long long)regs.rsi, (unsigned long long)regs.rip,
			       *(uint32_t *)(mem + DATA), (unsigned long long)regs.rbx,
			       (unsigned long long)regs.rcx, (unsigned long long)regs.rdx);
	}
	printf("summary: iterations=%d io_exits=%d hlt_exits=%d %s\n", n, ios, hlts,
	       bad ? "FAIL" : "ok");
	if (hold) {
		printf("holding\n");
		fflush(stdout);
		sleep(hold);
	}
	return bad ? 1 : 0;
}
