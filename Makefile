# SPDX-License-Identifier: GPL-2.0
# pkvm-x86 top-level Makefile.  The kernel build of the module is described
# in ./Kbuild; this file is the user-facing entry point.
#
#   make            build pkvm_x86.ko (against KDIR, or the cached test kernel)
#   make run        the main job: set up, build, boot Bochs with pkvm loaded
#   make test       every test: core unit tests, lints, module build, system tests
#   make check      only the fast checks of the pure core (cargo test/clippy/fmt)
#   make clean
#
# KDIR=/path/to/linux builds against your own Rust-enabled kernel tree.
# PKVM_CACHE (default ~/.cache/pkvm-x86) holds the toolchain, kernel, Bochs.

SHELL := /bin/bash
REPO := $(abspath $(dir $(lastword $(MAKEFILE_LIST))))

.PHONY: all module run test check clean

all: module

module:
	@bash $(REPO)/scripts/build-module.sh

run:
	@bash $(REPO)/scripts/run.sh

test:
	@bash $(REPO)/scripts/test.sh

check:
	@bash $(REPO)/scripts/check-core.sh

clean:
	rm -rf $(REPO)/target $(REPO)/build
