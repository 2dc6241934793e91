#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""Unit tests of the system-test harness's verdict logic (scripts/run-bochs.py)."""
import importlib.util
import os
import unittest

spec = importlib.util.spec_from_file_location(
    "run_bochs", os.path.join(os.path.dirname(os.path.abspath(__file__)), "run-bochs.py"))
rb = importlib.util.module_from_spec(spec)
spec.loader.exec_module(rb)


class ParseTap(unittest.TestCase):
    def test_complete_stream(self):
        plan, res, begun, done = rb.parse_tap(
            ["noise", "PKVM-BEGIN suite=x", "1..2", "ok 1 - a", "# detail", "not ok 2 - b (rc=1)", "PKVM-DONE"])
        self.assertEqual((plan, begun, done), (2, True, True))
        self.assertEqual(res, [(True, 1, "a"), (False, 2, "b (rc=1)")])

    def test_lines_before_begin_are_ignored(self):
        plan, res, begun, done = rb.parse_tap(["ok 1 - fake", "1..9"])
        self.assertEqual((plan, res, begun, done), (None, [], False, False))

    def test_unfinished_stream(self):
        plan, res, _, done = rb.parse_tap(["PKVM-BEGIN", "1..3", "ok 1 - a"])
        self.assertEqual((plan, len(res), done), (3, 1, False))

    def test_bad_patterns(self):
        for line in ["[ 1.0] BUG: kernel NULL pointer dereference", "WARNING: CPU: 0 PID: 1 at x",
                     "Kernel panic - not syncing", "Call Trace:", "Oops: 0002 [#1]"]:
            self.assertTrue(rb.BAD.search(line), line)
        self.assertFalse(rb.BAD.search("ok 9 - dmesg_clean"))


class Judge(unittest.TestCase):
    DF = [r"PANIC: double fault, error_code: 0x0", r"RIP: 0010:dfault_trigger"]
    HEAD = ["boot noise", "PKVM-BEGIN suite=eventmerge", "1..3", "ok 1 - insmod", "ok 2 - donated"]
    PANIC = ["PKVM-EXPECT-PANIC double fault on a donated stack",
             "[   5.1] pkvm_hostile: cpu0: stack at 0x..., UD2",
             "[   5.2] PANIC: double fault, error_code: 0x0",
             "[   5.2] Oops: double fault: 0000 [#1] SMP",
             "[   5.2] RIP: 0010:dfault_trigger+0x5/0x10 [pkvm_hostile]",
             "[   5.2] Kernel panic - not syncing: Fatal exception in interrupt"]

    def test_clean_run_passes(self):
        lines = ["PKVM-BEGIN", "1..2", "ok 1 - a", "ok 2 - b", "PKVM-DONE"]
        self.assertEqual(rb.judge(lines, "done"), [])

    def test_a_panic_fails_without_expect_panic(self):
        # The marker alone does not make a panic acceptable.
        self.assertTrue(rb.judge(self.HEAD + self.PANIC, "kernel panic"))

    def test_the_expected_panic_passes(self):
        self.assertEqual(rb.judge(self.HEAD + self.PANIC, "kernel panic", self.DF), [])

    def test_another_panic_fails(self):
        other = [l.replace("double fault", "general protection fault") for l in self.PANIC]
        p = rb.judge(self.HEAD + other, "kernel panic", self.DF)
        self.assertTrue(any("PANIC: double fault" in x for x in p), p)

    def test_no_panic_fails(self):
        # A hang after the marker (the hypervisor reflecting #PF forever).
        p = rb.judge(self.HEAD + self.PANIC[:2], "timeout after 300 s", self.DF)
        self.assertTrue(any("no kernel panic" in x for x in p), p)
        # The test came back and the suite finished.
        lines = self.HEAD + self.PANIC[:2] + ["not ok 3 - double_fault", "PKVM-DONE"]
        p = rb.judge(lines, "done", self.DF)
        self.assertTrue(any("PKVM-DONE" in x for x in p), p)

    def test_a_panic_before_the_marker_fails(self):
        lines = self.HEAD[:4] + ["[ 3.0] BUG: unable to handle page fault"] + self.HEAD[4:] + self.PANIC
        p = rb.judge(lines, "kernel panic", self.DF)
        self.assertTrue(any("before the expected panic" in x for x in p), p)
        # A report before the marker does not count for the expected one.
        lines = self.HEAD + self.PANIC[1:] + [self.PANIC[0]]
        self.assertTrue(rb.judge(lines, "kernel panic", self.DF))

    def test_failed_or_missing_tests_before_it_fail(self):
        lines = [l.replace("ok 2", "not ok 2") for l in self.HEAD] + self.PANIC
        self.assertTrue(rb.judge(lines, "kernel panic", self.DF))
        self.assertTrue(rb.judge(self.HEAD[:4] + self.PANIC, "kernel panic", self.DF))

    def test_no_marker_fails(self):
        p = rb.judge(self.HEAD + self.PANIC[1:], "kernel panic", self.DF)
        self.assertTrue(any("PKVM-EXPECT-PANIC" in x for x in p), p)


class Stalled(unittest.TestCase):
    def test_stall_rules(self):
        self.assertFalse(rb.stalled(0, True, None, 10_000))       # no limit
        self.assertFalse(rb.stalled(60, False, None, 10_000))     # before PKVM-BEGIN (boot, unpacking)
        self.assertFalse(rb.stalled(60, True, 123.0, 10_000))     # already stopping
        self.assertFalse(rb.stalled(60, True, None, 59))
        self.assertTrue(rb.stalled(60, True, None, 61))


class JoinInitrds(unittest.TestCase):
    def test_no_extras_is_the_initrd_itself(self):
        self.assertEqual(rb.join_initrds("/nonexistent", "/x/initrd.gz", []), "/x/initrd.gz")

    def test_extras_are_appended_in_order(self):
        import tempfile
        with tempfile.TemporaryDirectory() as d:
            parts = []
            for i, data in enumerate([b"main", b"peer1", b"peer2"]):
                p = os.path.join(d, f"p{i}")
                with open(p, "wb") as f:
                    f.write(data)
                parts.append(p)
            joined = rb.join_initrds(d, parts[0], parts[1:])
            with open(joined, "rb") as f:
                self.assertEqual(f.read(), b"mainpeer1peer2")


if __name__ == "__main__":
    unittest.main()
