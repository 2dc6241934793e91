// SPDX-License-Identifier: GPL-2.0
/*
 * wrmsr: write an MSR of CPU 0 (or -c N) through the msr driver.
 *   wrmsr [-c CPU] MSR VALUE
 * Exit status 0 if the write succeeded, 1 if the kernel refused it (the
 * msr driver returns EIO when WRMSR raises #GP), 2 on usage errors.
 */
#include <errno.h>
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
	if (i + 1 >= argc) {
		fprintf(stderr, "usage: wrmsr [-c CPU] MSR VALUE\n");
		return 2;
	}
	v = strtoull(argv[i + 1], NULL, 0);
	snprintf(path, sizeof(path), "/dev/cpu/%d/msr", cpu);
	int fd = open(path, O_WRONLY);
	if (fd < 0) {
		perror(path);
		return 2;
	}
	if (pwrite(fd, &v, sizeof(v), strtoul(argv[i], NULL, 0)) != sizeof(v)) {
		printf("refused: %s\n", strerror(errno));
		return 1;
	}
	printf("written\n");
	return 0;
}
