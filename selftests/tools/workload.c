// SPDX-License-Identifier: GPL-2.0
/*
 * workload: a small CPU + memory workload for the deprivilege tests and
 * benchmarks.  Fills MB megabytes with a pattern, verifies it, and mixes in
 * integer work, ROUNDS times; prints "workload ns=<elapsed> sum=<checksum>"
 * (CLOCK_MONOTONIC, i.e. the guest clock inside Bochs).  Exit status 1 if
 * the memory does not read back what was written.
 *   workload [MB [ROUNDS]]
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

int main(int argc, char **argv)
{
	size_t mb = argc > 1 ? strtoul(argv[1], NULL, 0) : 16;
	int rounds = argc > 2 ? atoi(argv[2]) : 4;
	size_t n = mb * 1024 * 1024 / sizeof(uint64_t);
	uint64_t *buf = malloc(n * sizeof(uint64_t));
	uint64_t sum = 0, x = 88172645463325252ull;
	struct timespec a, b;

	if (!buf) {
		perror("malloc");
		return 2;
	}
	clock_gettime(CLOCK_MONOTONIC, &a);
	for (int r = 0; r < rounds; r++) {
		for (size_t i = 0; i < n; i++)
			buf[i] = i * 0x9e3779b97f4a7c15ull + r;
		for (size_t i = 0; i < n; i++) {
			if (buf[i] != i * 0x9e3779b97f4a7c15ull + r) {
				printf("workload: memory mismatch at %zu round %d\n", i, r);
				return 1;
			}
			x ^= x << 13;
			x ^= x >> 7;
			x ^= x << 17;
			sum += buf[i] ^ x;
		}
	}
	clock_gettime(CLOCK_MONOTONIC, &b);
	printf("workload ns=%lld sum=%016llx\n",
	       (long long)(b.tv_sec - a.tv_sec) * 1000000000ll + (b.tv_nsec - a.tv_nsec),
	       (unsigned long long)sum);
	free(buf);
	return 0;
}
