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
 * Then a guest's first touch of a page (issue 10): a second memory slot
 * of -t PAGES pages at GPA 0x10000000 (anonymous memory this program never
 * touches, huge pages off), which the guest writes once per page, timing
 * each write with RDTSC; then the same pages again (warm).  The vCPU is
 * moved (KVM_SET_REGS) to this code at GPA 0x1800, with ECX = PAGES:
 *
 *        mov edx, 0x10000          ; the sample area (GPA 0x10000..0x1ffff)
 *   pre: mov [edx], eax            ;   touched first, one write per page
 *        add edx, 0x1000
 *        cmp edx, 0x20000
 *        jb pre
 *        out 0x13, al              ; ready
 *  pass: mov ebx, 0x10000000       ; the touch slot
 *        mov edi, 0x10000
 *        mov ebp, ecx
 *     l: rdtsc; mov esi, eax; mov [ebx], eax; rdtsc; sub eax, esi
 *        mov [edi], eax            ; the sample
 *        add edi, 4; add ebx, 0x1000; dec ebp; jnz l
 *        out 0x13, al              ; pass done (the first, then the warm)
 *        jmp pass
 *
 * The samples are read from guest memory after each pass; KVM's exit
 * counter of the vCPU ("exits" of its binary statistics, KVM_GET_STATS_FD)
 * is read at each OUT 0x13, so the exits of a pass are known (the OUT
 * itself not counted).  Fields appended to the line (median and mean TSC
 * cycles of one write; KVM's exits per page, "na" without the statistics):
 *
 *   ... touch_n=PAGES touch=MEDIAN touch_mean=MEAN warm=MEDIAN warm_mean=MEAN
 *       touch_exits=X.XX warm_exits=X.XX
 *
 * Every exit is checked (port, size, direction, order); any surprise
 * prints "FAIL ..." and exits 1.
 *
 * usage: kvm_exit_bench [-n ITERATIONS] [-w WARMUP] [-t PAGES (0: no touch figures)]
 */
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include "kvm_flat.h"

#define MEM_SIZE 0x20000
#define CODE 0x1000
#define TOUCH_CODE 0x1800
#define SAMPLES 0x10000
#define MAX_TOUCH ((MEM_SIZE - SAMPLES) / 4)
#define TOUCH_GPA 0x10000000UL
#define PAGE 4096
#define PORT_IO 0x10
#define PORT_REPORT 0x12
#define PORT_TOUCH 0x13
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

/* The first-touch loop (see the top of the file; `as --32` checked). */
static const uint8_t touch_code[] = {
	0xba, 0x00, 0x00, 0x01, 0x00,		/* mov edx, 0x10000 */
	0x89, 0x02,				/* pre: mov [edx], eax */
	0x81, 0xc2, 0x00, 0x10, 0x00, 0x00,	/* add edx, 0x1000 */
	0x81, 0xfa, 0x00, 0x00, 0x02, 0x00,	/* cmp edx, 0x20000 */
	0x72, 0xf0,				/* jb pre */
	0xe6, PORT_TOUCH,			/* out 0x13, al */
	0xbb, 0x00, 0x00, 0x00, 0x10,		/* pass: mov ebx, 0x10000000 */
	0xbf, 0x00, 0x00, 0x01, 0x00,		/* mov edi, 0x10000 */
	0x89, 0xcd,				/* mov ebp, ecx */
	0x0f, 0x31,				/* l: rdtsc */
	0x89, 0xc6,				/* mov esi, eax */
	0x89, 0x03,				/* mov [ebx], eax */
	0x0f, 0x31,				/* rdtsc */
	0x29, 0xf0,				/* sub eax, esi */
	0x89, 0x07,				/* mov [edi], eax */
	0x83, 0xc7, 0x04,			/* add edi, 4 */
	0x81, 0xc3, 0x00, 0x10, 0x00, 0x00,	/* add ebx, 0x1000 */
	0x4d,					/* dec ebp */
	0x75, 0xe8,				/* jnz l */
	0xe6, PORT_TOUCH,			/* out 0x13, al */
	0xeb, 0xd8,				/* jmp pass */
};

enum kind { CPUID, IO, HLT, KINDS };
static const char *const kind_name[KINDS] = { "cpuid", "io", "hlt" };

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return x < y ? -1 : x > y;
}

/* One KVM_RUN that must end in OUT to PORT with SIZE bytes; *val gets the data. */
static int expect_out(int vcpu, struct kvm_run *run, uint16_t port, uint8_t size, uint32_t *val)
{
	if (ioctl(vcpu, KVM_RUN, 0) < 0)
		return kvm_flat_fail("KVM_RUN");
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

/*
 * KVM's exit counter of the vCPU: opens its binary statistics and finds
 * the "exits" counter (*off: its offset in the file).  -1 if there are
 * none (an older KVM): the exit figures are then "na".
 */
static int exits_stat_open(int vcpu, off_t *off)
{
	struct kvm_stats_header h;
	struct kvm_stats_desc *d;
	size_t dsz;
	char *buf;
	int fd = ioctl(vcpu, KVM_GET_STATS_FD, NULL);

	if (fd < 0)
		return -1;
	if (pread(fd, &h, sizeof(h), 0) != sizeof(h) || h.num_desc > 4096 || h.name_size > 4096)
		goto fail;
	dsz = sizeof(*d) + h.name_size;
	buf = malloc(dsz * h.num_desc);
	if (!buf)
		goto fail;
	if (pread(fd, buf, dsz * h.num_desc, h.desc_offset) != (ssize_t)(dsz * h.num_desc)) {
		free(buf);
		goto fail;
	}
	for (uint32_t i = 0; i < h.num_desc; i++) {
		d = (struct kvm_stats_desc *)(buf + i * dsz);
		if (h.name_size && strncmp(d->name, "exits", h.name_size) == 0 && d->size >= 1) {
			*off = h.data_offset + d->offset;
			free(buf);
			return fd;
		}
	}
	free(buf);
fail:
	close(fd);
	return -1;
}

/* The exit counter now (0 without statistics). */
static uint64_t exits_now(int fd, off_t off)
{
	uint64_t v = 0;

	if (fd >= 0 && pread(fd, &v, sizeof(v), off) != sizeof(v))
		v = 0;
	return v;
}

/* Median and mean of n samples (sorted in place). */
static void median_mean(uint32_t *s, int n, uint32_t *med, uint64_t *mean)
{
	uint64_t sum = 0;

	for (int i = 0; i < n; i++)
		sum += s[i];
	qsort(s, n, sizeof(uint32_t), cmp_u32);
	*med = s[n / 2];
	*mean = sum / n;
}

/* "X.XX" exits per page into buf, or "na" without statistics. */
static const char *per_page(char *buf, size_t len, int fd, uint64_t exits, int pages)
{
	if (fd < 0)
		return "na";
	snprintf(buf, len, "%.2f", (double)exits / pages);
	return buf;
}

/*
 * The first-touch figures (see the top of the file): runs the touch loop
 * on `vcpu` over `pages` pages of slot 1 and writes its fields (for the
 * end of the line) into `out`.  0 on success, 1 after printing "FAIL ...".
 */
static int touch_bench(int vcpu, struct kvm_run *run, uint8_t *mem, int pages, char *out,
		       size_t len)
{
	uint32_t al, med[2];
	uint64_t mean[2], ex[3];
	struct kvm_regs regs;
	char b0[32], b1[32];
	off_t off = 0;
	int sfd = exits_stat_open(vcpu, &off);

	if (ioctl(vcpu, KVM_GET_REGS, &regs) < 0)
		return kvm_flat_fail("KVM_GET_REGS");
	regs.rip = TOUCH_CODE;
	regs.rcx = pages;
	regs.rflags = 0x2;
	if (ioctl(vcpu, KVM_SET_REGS, &regs) < 0)
		return kvm_flat_fail("KVM_SET_REGS");
	/* Ready (the sample area touched), then the first pass, the warm one. */
	for (int pass = 0; pass < 3; pass++) {
		if (expect_out(vcpu, run, PORT_TOUCH, 1, &al))
			return 1;
		ex[pass] = exits_now(sfd, off);
		if (pass)
			median_mean((uint32_t *)(mem + SAMPLES), pages, &med[pass - 1],
				    &mean[pass - 1]);
	}
	if (!med[0]) {
		printf("FAIL touch: a first touch of 0 TSC cycles\n");
		return 1;
	}
	/* Each pass's exits but its own OUT. */
	for (int pass = 1; pass < 3; pass++)
		ex[pass - 1] = ex[pass] > ex[pass - 1] ? ex[pass] - ex[pass - 1] - 1 : 0;
	snprintf(out, len, " touch_n=%d touch=%u touch_mean=%llu warm=%u warm_mean=%llu touch_exits=%s warm_exits=%s",
	       pages, med[0], (unsigned long long)mean[0], med[1], (unsigned long long)mean[1],
	       per_page(b0, sizeof(b0), sfd, ex[0], pages),
	       per_page(b1, sizeof(b1), sfd, ex[1], pages));
	if (sfd >= 0)
		close(sfd);
	return 0;
}

int main(int argc, char **argv)
{
	int n = 200, warm = 20, pages = 256, opt, kvm, vm, vcpu, size;
	struct kvm_run *run;
	uint32_t *samples[KINDS], mins[KINDS], meds[KINDS];
	uint8_t *mem, *touch = NULL;
	char touch_fields[256] = "";

	while ((opt = getopt(argc, argv, "n:w:t:")) != -1) {
		if (opt == 'n')
			n = atoi(optarg);
		else if (opt == 'w')
			warm = atoi(optarg);
		else if (opt == 't')
			pages = atoi(optarg);
		else
			return 2;
	}
	if (n < 1 || n > MAX_N || warm < 0 || warm > MAX_N || pages < 0 || pages > MAX_TOUCH) {
		printf("FAIL usage: kvm_exit_bench [-n 1..%d] [-w 0..%d] [-t 0..%d]\n", MAX_N, MAX_N,
		       MAX_TOUCH);
		return 2;
	}
	for (int k = 0; k < KINDS; k++) {
		samples[k] = calloc(n, sizeof(uint32_t));
		if (!samples[k])
			return kvm_flat_fail("calloc");
	}
	kvm = open("/dev/kvm", O_RDWR);
	if (kvm < 0)
		return kvm_flat_fail("open /dev/kvm");
	if (kvm_flat_vm(kvm, MEM_SIZE, &vm, &mem))
		return 1;
	memcpy(mem + CODE, bench_code, sizeof(bench_code));
	memcpy(mem + TOUCH_CODE, touch_code, sizeof(touch_code));
	if (kvm_flat_slot(vm, 0, 0, MEM_SIZE, mem, "KVM_SET_USER_MEMORY_REGION") ||
	    kvm_flat_vcpu(kvm, vm, 0, &vcpu, &run, &size) || kvm_flat_regs(vcpu, CODE))
		return 1;
	if (pages) {
		/* Never touched here: the guest's write is the page's first. */
		touch = mmap(NULL, (size_t)pages * PAGE, PROT_READ | PROT_WRITE,
			     MAP_SHARED | MAP_ANONYMOUS, -1, 0);
		if (touch == MAP_FAILED)
			return kvm_flat_fail("mmap touch");
		madvise(touch, (size_t)pages * PAGE, MADV_NOHUGEPAGE);
		if (kvm_flat_slot(vm, 1, TOUCH_GPA, (uint64_t)pages * PAGE, touch,
				  "KVM_SET_USER_MEMORY_REGION touch"))
			return 1;
	}

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
			return kvm_flat_fail("KVM_RUN");
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
	if (pages && touch_bench(vcpu, run, mem, pages, touch_fields, sizeof(touch_fields)))
		return 1;
	printf("exit_bench n=%d cpuid=%u io=%u hlt=%u min_cpuid=%u min_io=%u min_hlt=%u%s\n", n,
	       meds[CPUID], meds[IO], meds[HLT], mins[CPUID], mins[IO], mins[HLT], touch_fields);
	return 0;
}
