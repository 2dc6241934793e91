// SPDX-License-Identifier: GPL-2.0
/*
 * cpuid: execute CPUID from user space and print the result.
 *   cpuid LEAF [SUBLEAF]   prints "eax ebx ecx edx" in hex
 *   cpuid -s               prints the hypervisor signature of leaf
 *                          0x40000000 (EBX ECX EDX as text) or "none"
 *   cpuid -loop N          executes CPUID N times (a VM-exit generator)
 */
#include <cpuid.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv)
{
	unsigned int a, b, c, d;

	if (argc == 2 && !strcmp(argv[1], "-s")) {
		char sig[13] = { 0 };

		__cpuid_count(0x40000000, 0, a, b, c, d);
		memcpy(sig, &b, 4);
		memcpy(sig + 4, &c, 4);
		memcpy(sig + 8, &d, 4);
		printf("%s\n", sig[0] ? sig : "none");
		return 0;
	}
	if (argc == 3 && !strcmp(argv[1], "-loop")) {
		unsigned long n = strtoul(argv[2], NULL, 0);

		while (n--)
			__cpuid_count(0, 0, a, b, c, d);
		return 0;
	}
	if (argc < 2) {
		fprintf(stderr, "usage: cpuid LEAF [SUBLEAF] | cpuid -s\n");
		return 2;
	}
	__cpuid_count(strtoul(argv[1], NULL, 0), argc > 2 ? strtoul(argv[2], NULL, 0) : 0, a, b, c, d);
	printf("%08x %08x %08x %08x\n", a, b, c, d);
	return 0;
}
