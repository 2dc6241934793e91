// SPDX-License-Identifier: GPL-2.0
/*
 * kvm_vcpus: the smallest use of /dev/kvm.  Opens it, checks the API
 * version, creates a VM and two vCPUs (which makes KVM execute VMCLEAR,
 * VMPTRLD and a few hundred VMREAD/VMWRITEs on the vCPUs' VMCSs), closes
 * everything.  Prints one line per step; exit status 0 if all succeeded.
 *
 * usage: kvm_vcpus [ROUNDS]   (default 1: VM + vCPUs created ROUNDS times)
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	int rounds = argc > 1 ? atoi(argv[1]) : 1;
	int kvm = open("/dev/kvm", O_RDWR);

	if (kvm < 0) {
		printf("open /dev/kvm: %s\n", strerror(errno));
		return 1;
	}
	printf("api_version=%d\n", ioctl(kvm, KVM_GET_API_VERSION, 0));
	for (int r = 0; r < rounds; r++) {
		int vm = ioctl(kvm, KVM_CREATE_VM, 0);
		int v0, v1;

		if (vm < 0) {
			printf("KVM_CREATE_VM: %s\n", strerror(errno));
			return 1;
		}
		v0 = ioctl(vm, KVM_CREATE_VCPU, 0);
		v1 = ioctl(vm, KVM_CREATE_VCPU, 1);
		printf("round %d: vm=ok vcpu0=%s vcpu1=%s\n", r, v0 >= 0 ? "ok" : strerror(errno),
		       v1 >= 0 ? "ok" : strerror(errno));
		if (v0 < 0 || v1 < 0)
			return 1;
		close(v0);
		close(v1);
		close(vm);
	}
	close(kvm);
	printf("done\n");
	return 0;
}
