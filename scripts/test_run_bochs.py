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
