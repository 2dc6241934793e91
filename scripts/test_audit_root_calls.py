#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""Unit tests of scripts/audit-root-calls.py on small objects built here."""
import os
import subprocess
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
AUDIT = os.path.join(HERE, "audit-root-calls.py")

# Names the audit insists on reaching (as in the Rust object's mangling).
PRELUDE = r"""
void x_exit_handler11handle_exit(void);
void y_PageStates15host_donate_hyp(void);
void pkvm_vmexit_entry(void) { x_exit_handler11handle_exit(); }
void y_PageStates15host_donate_hyp(void) { }
"""


def audit(c_body):
    with tempfile.TemporaryDirectory() as d:
        src, obj = os.path.join(d, "t.c"), os.path.join(d, "t.o")
        with open(src, "w") as f:
            f.write(PRELUDE + c_body)
        subprocess.run(["gcc", "-O0", "-fno-pic", "-c", src, "-o", obj], check=True)
        r = subprocess.run([sys.executable, AUDIT, obj, "--strict"], capture_output=True, text=True)
        return r.returncode, r.stdout


class Audit(unittest.TestCase):
    def test_clean_root_code_passes(self):
        rc, out = audit("void x_exit_handler11handle_exit(void) { y_PageStates15host_donate_hyp(); }\n")
        self.assertEqual(rc, 0, out)
        self.assertIn("0 kernel symbols", out)

    def test_kernel_call_fails(self):
        rc, out = audit("void printk(const char *);\n"
                        "void x_exit_handler11handle_exit(void) { y_PageStates15host_donate_hyp(); printk(\"x\"); }\n")
        self.assertEqual(rc, 1, out)
        self.assertIn("printk", out)

    def test_writable_data_fails(self):
        rc, out = audit("int counter;\n"
                        "void x_exit_handler11handle_exit(void) { y_PageStates15host_donate_hyp(); counter++; }\n")
        self.assertEqual(rc, 1, out)

    def test_indirect_call_fails(self):
        rc, out = audit("void (*volatile hook)(void);\n"
                        "void x_exit_handler11handle_exit(void) { y_PageStates15host_donate_hyp(); hook(); }\n")
        self.assertEqual(rc, 1, out)

    def test_unreachable_kernel_call_is_fine(self):
        rc, out = audit("void printk(const char *);\n"
                        "void host_side(void) { printk(\"x\"); }\n"
                        "void x_exit_handler11handle_exit(void) { y_PageStates15host_donate_hyp(); }\n")
        self.assertEqual(rc, 0, out)

    def test_missing_roots_fail(self):
        rc, out = audit("void x_exit_handler11handle_exit(void) { }\n")
        self.assertEqual(rc, 1, out)
        self.assertIn("not found", out)


if __name__ == "__main__":
    unittest.main()
