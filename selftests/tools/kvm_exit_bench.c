// SPDX-License-Identifier: GPL-2.0
/*
 * kvm_exit_bench: the guest exit round trip in guest TSC cycles, through
 * /dev/kvm, for issue 9's benchmark "guest exit round trip under pkvm vs
 * bare KVM with the same view".  The same binary runs on bare KVM and on
 * the host deprivileged by pkvm (selftests/suite-peers.sh, test
 * exit_bench); the numbers are comparable because the guest measures them
 * itself, with RDTSC around one exiting instruction.
 *
 * A VM with 64 KiB of memory at GPA 0, one vCPU in 32-bit flat protected
 * mode without paging, no in-kernel irqchip, runs at GPA 0x1000:
 *
 *   top: rdtsc; mov esi, eax; xor eax, eax; cpuid;  rdtsc; sub eax, esi
 *        out 0x12, eax            ; report: the CPUID round trip
 *        rdtsc; mov esi, eax; out 0x10, al;         rdtsc; sub eax, esi
 *        out 0x12, eax            ; report: the port I/O round trip
 *        rdtsc; mov esi, eax; hlt;                  rdtsc; sub eax, esi
 *        out 0x12, eax            ; report: the HLT round trip
 *        jmp top
 *
 * CPUID exits to KVM, which emulates it in the kernel and resumes the
 * guest; OUT to port 0x10 and HLT (no irqchip) exit to this program
 * (KVM_EXIT_IO, KVM_EXIT_HLT), which calls KVM_RUN again at once: those
 * two are full round trips through user space.  The reports (OUT 0x12,
 * outside the timed windows) carry the low 32 bits of each delta.  The
 * first -w iterations warm up (KVM's shadow page tables, caches) and are
 * dropped; of the next -n the median and the minimum of each kind are
 * printed:
 *
 *   exit_bench n=N cpuid=MEDIAN io=MEDIAN hlt=MEDIAN min_cpuid=.. min_io=.. min_hlt=..
 *
 * Every exit is checked (port, size, direction, order); any surprise
 * prints "FAIL ..." and exits 1.
 *
 * usage: kvm_exit_bench [-n ITERATIONS] [-w WARMUP]
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#define MEM_SIZE 0x10000
#define CODE 0x1000
#define PORT_IO 0x10
#define PORT_REPORT 0x12
#define MAX_N 100000

static const uint8_t bench_code[] = {
	/* CPUID */
	0x0f, 0x31,		/* top: rdtsc */
	0x89, 0xc6,		/* mov esi, eax */
	0x31, 0xc0,		/* xor eax, eax */
	0x0f, 0xa2,		/* cpuid */
	0x0f, 0x31,		/* rdtsc */
	0x29, 0xf0,		/* sub eax, esi */
	0xe7, PORT_REPORT,	/* out 0x12, eax */
	/* port I/O */
	0x0f, 0x31,		/* rdtsc */
	0x89, 0xc6,		/* mov esi, eax */
	0xe6, PORT_IO,		/* out 0x10, al */
	0x0f, 0x31,		/* rdtsc */
	0x29, 0xf0,		/* sub eax, esi */
	0xe7, PORT_REPORT,	/* out 0x12, eax */
	/* HLT */
	0x0f, 0x31,		/* rdtsc */
	0x89, 0xc6,		/* mov esi, eax */
	0xf4,			/* hlt */
	0x0f, 0x31,		/* rdtsc */
	0x29, 0xf0,		/* sub eax, esi */
	0xe7, PORT_REPORT,	/* out 0x12, eax */
	0xeb, 0xd9,		/* jmp top (-39) */
};

enum kind { CPUID, IO, HLT, KINDS };
static const char *const kind_name[KINDS] = { "cpuid", "io", "hlt" };

static int fail(const char *what)
{
	printf("FAIL %s: %s\n", what, strerror(errno));
	return 1;
}

static void seg(struct kvm_segment *s, uint16_t sel, uint8_t type)
{
	memset(s, 0, sizeof(*s));
	s->limit = 0xffffffff;
	s->selector = sel;
	s->type = type;
	s->present = 1;
	s->db = 1;
	s->s = 1;
	s->g = 1;
}

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return x < y ? -1 : x > y;
}

/* One KVM_RUN that must end in OUT to PORT with SIZE bytes; *val gets the data. */
static int expect_out(int vcpu, struct kvm_run *run, uint16_t port, uint8_t size, uint32_t *val)
{
	if (ioctl(vcpu, KVM_RUN, 0) < 0)
		return fail("KVM_RUN");
	if (run->exit_reason != KVM_EXIT_IO || run->io.direction != KVM_EXIT_IO_OUT ||
	    run->io.port != port || run->io.size != size || run->io.count != 1) {
		printf("FAIL exit %u (port 0x%x size %u): want OUT to port 0x%x, %u bytes\n",
		       run->exit_reason, run->io.port, run->io.size, port, size);
		return 1;
	}
	*val = 0;
	memcpy(val, (uint8_t *)run + run->io.data_offset, size);
	return 0;
}

int main(int argc, char **argv)
{
	int n = 200, warm = 20, opt, kvm, vm, vcpu, size;
	struct kvm_userspace_memory_region region;
	struct kvm_sregs sregs;
	struct kvm_regs regs;
	struct kvm_run *run;
	uint32_t *samples[KINDS], mins[KINDS], meds[KINDS];
	uint8_t *mem;

	while ((opt = getopt(argc, argv, "n:w:")) != -1) {
		if (opt == 'n')
			n = atoi(optarg);
		else if (opt == 'w')
			warm = atoi(optarg);
		else
			return 2;
	}
	if (n < 1 || n > MAX_N || warm < 0 || warm > MAX_N) {
		printf("FAIL usage: kvm_exit_bench [-n 1..%d] [-w 0..%d]\n", MAX_N, MAX_N);
		return 2;
	}
	for (int k = 0; k < KINDS; k++) {
		samples[k] = calloc(n, sizeof(uint32_t));
		if (!samples[k])
			return fail("calloc");
	}
	kvm = open("/dev/kvm", O_RDWR);
	if (kvm < 0)
		return fail("open /dev/kvm");
	vm = ioctl(kvm, KVM_CREATE_VM, 0);
	if (vm < 0)
		return fail("KVM_CREATE_VM");
	if (ioctl(vm, KVM_SET_TSS_ADDR, 0xfffbd000UL) < 0)
		return fail("KVM_SET_TSS_ADDR");
	mem = mmap(NULL, MEM_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (mem == MAP_FAILED)
		return fail("mmap");
	memset(mem, 0xf4, MEM_SIZE);
	memcpy(mem + CODE, bench_code, sizeof(bench_code));
	region = (struct kvm_userspace_memory_region){
		.slot = 0, .guest_phys_addr = 0, .memory_size = MEM_SIZE,
		.userspace_addr = (uintptr_t)mem,
	};
	if (ioctl(vm, KVM_SET_USER_MEMORY_REGION, &region) < 0)
		return fail("KVM_SET_USER_MEMORY_REGION");
	vcpu = ioctl(vm, KVM_CREATE_VCPU, 0);
	if (vcpu < 0)
		return fail("KVM_CREATE_VCPU");
	size = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
	run = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu, 0);
	if (run == MAP_FAILED)
		return fail("mmap run");
	if (ioctl(vcpu, KVM_GET_SREGS, &sregs) < 0)
		return fail("KVM_GET_SREGS");
	seg(&sregs.cs, 0x8, 0xb);
	seg(&sregs.ds, 0x10, 0x3);
	sregs.es = sregs.fs = sregs.gs = sregs.ss = sregs.ds;
	sregs.cr0 = 0x11; /* PE | ET */
	sregs.cr4 = 0;
	sregs.efer = 0;
	if (ioctl(vcpu, KVM_SET_SREGS, &sregs) < 0)
		return fail("KVM_SET_SREGS");
	memset(&regs, 0, sizeof(regs));
	regs.rip = CODE;
	regs.rflags = 0x2;
	regs.rsp = 0x8000;
	if (ioctl(vcpu, KVM_SET_REGS, &regs) < 0)
		return fail("KVM_SET_REGS");

	for (int i = 0; i < warm + n; i++) {
		uint32_t d[KINDS], al;

		/* CPUID: handled in KVM, only its report reaches us. */
		if (expect_out(vcpu, run, PORT_REPORT, 4, &d[CPUID]))
			return 1;
		/* Port I/O: the timed exit, then its report. */
		if (expect_out(vcpu, run, PORT_IO, 1, &al) ||
		    expect_out(vcpu, run, PORT_REPORT, 4, &d[IO]))
			return 1;
		/* HLT: the timed exit, then its report. */
		if (ioctl(vcpu, KVM_RUN, 0) < 0)
			return fail("KVM_RUN");
		if (run->exit_reason != KVM_EXIT_HLT) {
			printf("FAIL exit %u: want HLT\n", run->exit_reason);
			return 1;
		}
		if (expect_out(vcpu, run, PORT_REPORT, 4, &d[HLT]))
			return 1;
		if (i >= warm)
			for (int k = 0; k < KINDS; k++)
				samples[k][i - warm] = d[k];
	}
	for (int k = 0; k < KINDS; k++) {
		qsort(samples[k], n, sizeof(uint32_t), cmp_u32);
		mins[k] = samples[k][0];
		meds[k] = samples[k][n / 2];
		if (!mins[k]) {
			printf("FAIL %s: a round trip of 0 TSC cycles (RDTSC not advancing?)\n",
			       kind_name[k]);
			return 1;
		}
	}
	printf("exit_bench n=%d cpuid=%u io=%u hlt=%u min_cpuid=%u min_io=%u min_hlt=%u\n", n,
	       meds[CPUID], meds[IO], meds[HLT], mins[CPUID], mins[IO], mins[HLT]);
	return 0;
}
