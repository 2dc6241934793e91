// SPDX-License-Identifier: GPL-2.0
/*
 * vmx_user: every VMX instruction executed at CPL 3, which the CPU refuses
 * (#UD outside VMX operation or with CR4.VMXE clear, #GP(0) in VMX
 * operation).  Prints "INSN: SIGILL" (#UD), "INSN: SIGSEGV" (#GP) or
 * "INSN: no fault" per instruction, for the nested suite to compare the
 * bare CPU with pkvm.
 */
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

static sigjmp_buf env;

static void on_signal(int sig)
{
	siglongjmp(env, sig);
}

static uint64_t mem[4];

#define TRY(name, asm_text, ...)                                        \
	do {                                                            \
		int sig = sigsetjmp(env, 1);                            \
		if (!sig) {                                             \
			asm volatile(asm_text __VA_ARGS__);             \
			printf("%s: no fault\n", name);                 \
		} else {                                                \
			printf("%s: %s\n", name,                        \
			       sig == SIGILL ? "SIGILL" : sig == SIGSEGV ? "SIGSEGV" : "other"); \
		}                                                       \
	} while (0)

int main(void)
{
	uint64_t field = 0x681e, val = 0, type = 2;
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigaction(SIGILL, &sa, NULL);
	sigaction(SIGSEGV, &sa, NULL);
	sigaction(SIGBUS, &sa, NULL);
	setvbuf(stdout, NULL, _IONBF, 0);

	TRY("vmxon", "vmxon %0", : : "m"(mem[0]) : "cc", "memory");
	TRY("vmxoff", "vmxoff", : : : "cc");
	TRY("vmclear", "vmclear %0", : : "m"(mem[0]) : "cc", "memory");
	TRY("vmptrld", "vmptrld %0", : : "m"(mem[0]) : "cc", "memory");
	TRY("vmptrst", "vmptrst %0", : "=m"(mem[0]) : : "cc");
	TRY("vmread", "vmread %1, %0", : "=r"(val) : "r"(field) : "cc");
	TRY("vmwrite", "vmwrite %1, %0", : : "r"(field), "r"(val) : "cc");
	TRY("vmlaunch", "vmlaunch", : : : "cc");
	TRY("vmresume", "vmresume", : : : "cc");
	TRY("invvpid", "invvpid %0, %1", : : "m"(mem[0]), "r"(type) : "cc", "memory");
	TRY("invept", "invept %0, %1", : : "m"(mem[0]), "r"(type) : "cc", "memory");
	return 0;
}
