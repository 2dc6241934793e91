// SPDX-License-Identifier: GPL-2.0
/*
 * rdmsr: print an MSR of CPU 0 (or -c N) as 0x%016llx, through the msr
 * driver (/dev/cpu/N/msr).  Used by the in-VM selftests to cross-check what
 * pkvm_x86 reports.  Exit status 1 if the MSR cannot be read.
 */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	int cpu = 0, i = 1;
	char path[64];
	uint64_t v;

	if (argc > 2 && !strcmp(argv[1], "-c")) {
		cpu = atoi(argv[2]);
		i = 3;
	}
	if (i >= argc) {
		fprintf(stderr, "usage: rdmsr [-c CPU] MSR\n");
		return 2;
	}
	snprintf(path, sizeof(path), "/dev/cpu/%d/msr", cpu);
	int fd = open(path, O_RDONLY);
	if (fd < 0 || pread(fd, &v, sizeof(v), strtoul(argv[i], NULL, 0)) != sizeof(v)) {
		perror(path);
		return 1;
	}
	printf("0x%016llx\n", (unsigned long long)v);
	return 0;
}
