#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""Unit tests of the peer suites' result lists and comparison (scripts/peers-results.py)."""
import importlib.util
import os
import tempfile
import unittest

spec = importlib.util.spec_from_file_location(
    "peers_results", os.path.join(os.path.dirname(os.path.abspath(__file__)), "peers-results.py"))
pr = importlib.util.module_from_spec(spec)
spec.loader.exec_module(pr)

CONSOLE = """[  31.00] PEER-PLAN n=5
[  31.10] PEER-START amx_test
[  31.65] PEER-RESULT amx_test skip rc=4 t=0 -- 1..0 # SKIP - Required XSAVE feature not supported
[  33.46] PEER-RESULT aperfmperf_test fail rc=254 t=0 -- x86/aperfmperf_test.c:188: host_aperf_before < guest_aperf
[  33.50] #| noise PEER-RESULT-like text that is not a result
[  49.33] PEER-RESULT cpuid_test pass rc=0 t=1 -- 
[  52.00] PEER-RESULT state_test skip rc=- t=0 -- listed in skip.txt: triple-faults Bochs
[  90.00] PEER-RESULT demand_paging_test timeout rc=137 t=30 -- no exit within 30s (guest clock)
[  95.00] PEER-SUMMARY mode=bare tests=all n=5 guest_s=40
[ 120.00] PEER-QEMU mode=bare boot_guest_s=1.50 l2_uptime=0.90 kvm_exits=26000 rc=0
""".splitlines()


class Extract(unittest.TestCase):
    def test_parse_console(self):
        res, n, extra = pr.parse_console(CONSOLE)
        self.assertEqual(n, 5)
        self.assertEqual(sorted(res), ["amx_test", "aperfmperf_test", "cpuid_test", "demand_paging_test", "state_test"])
        self.assertEqual(res["cpuid_test"], ("pass", ""))
        self.assertEqual(res["aperfmperf_test"][0], "fail")
        self.assertIn("rc=254", res["aperfmperf_test"][1])
        self.assertEqual(res["amx_test"][0], "skip")
        self.assertEqual(len(extra), 2)

    def test_round_trip(self):
        res, _, _ = pr.parse_console(CONSOLE)
        text = pr.format_list(res, ["kernel 7.2"])
        self.assertTrue(text.startswith("# kernel 7.2\n"))
        self.assertIn("cpuid_test pass\n", text)
        self.assertEqual(pr.read_list(text), res)

    def test_bad_line_is_an_error(self):
        with self.assertRaises(ValueError):
            pr.read_list("cpuid_test maybe\n")

    def test_extract_refuses_an_unfinished_run(self):
        with tempfile.TemporaryDirectory() as d:
            con = os.path.join(d, "console.log")
            with open(con, "w") as f:
                f.write("\n".join(CONSOLE[:4]))
            self.assertEqual(pr.main(["extract", con, os.path.join(d, "out.txt")]), 1)
            with open(con, "w") as f:  # a summary announcing more results than there are
                f.write("\n".join(CONSOLE[:4] + ["PEER-SUMMARY mode=bare tests=all n=9 guest_s=1"]))
            self.assertEqual(pr.main(["extract", con, os.path.join(d, "out.txt")]), 1)
            with open(con, "w") as f:
                f.write("\n".join(CONSOLE))
            self.assertEqual(pr.main(["extract", con, os.path.join(d, "out.txt")]), 0)

    def test_extract_joins_the_consoles_of_a_resumed_run(self):
        with tempfile.TemporaryDirectory() as d:
            first, second, out = (os.path.join(d, n) for n in ("c1", "c2", "out.txt"))
            with open(first, "w") as f:  # stopped after cpuid_test; the peers.sh line for the stall
                f.write("\n".join(["PEER-PLAN n=6"] + CONSOLE[1:6] + ["PEER-START hung_test",
                                                  "PEER-RESULT hung_test timeout rc=- t=- -- machine stopped"]))
            with open(second, "w") as f:  # resumed: its own plan line, the rest, the summary
                f.write("\n".join(["PEER-PLAN n=6"] + CONSOLE[6:]))
            self.assertEqual(pr.main(["extract", first, out]), 1)  # no summary yet
            self.assertEqual(pr.main(["extract", first, second, out]), 0)
            with open(out) as f:
                res = pr.read_list(f.read())
            self.assertEqual(res["hung_test"][0], "timeout")
            self.assertEqual(len(res), 6)


class Compare(unittest.TestCase):
    def setUp(self):
        self.base, _, _ = pr.parse_console(CONSOLE)

    def test_equal_lists_have_no_regression(self):
        self.assertEqual(pr.compare(self.base, dict(self.base)), ([], []))

    def test_pass_to_fail_skip_timeout_or_missing_is_a_regression(self):
        for new in ("fail", "skip", "timeout"):
            other = dict(self.base, cpuid_test=(new, "why"))
            reg, notes = pr.compare(self.base, other)
            self.assertEqual(len(reg), 1, new)
            self.assertTrue(reg[0].startswith(f"cpuid_test: pass -> {new}"))
            self.assertEqual(notes, [])
        other = dict(self.base)
        del other["cpuid_test"]
        self.assertEqual(pr.compare(self.base, other)[0], ["cpuid_test: pass -> missing"])

    def test_non_pass_changes_are_notes(self):
        other = dict(self.base, aperfmperf_test=("pass", ""), amx_test=("fail", "x"))
        reg, notes = pr.compare(self.base, other)
        self.assertEqual(reg, [])
        self.assertEqual(len(notes), 2)

    def test_cli_exit_status(self):
        with tempfile.TemporaryDirectory() as d:
            b, o = os.path.join(d, "b.txt"), os.path.join(d, "o.txt")
            with open(b, "w") as f:
                f.write(pr.format_list(self.base))
            with open(o, "w") as f:
                f.write(pr.format_list(dict(self.base, cpuid_test=("fail", "boom"))))
            self.assertEqual(pr.main(["compare", b, b]), 0)
            self.assertEqual(pr.main(["compare", b, o]), 1)
            # A subset run: only the listed tests are judged, so the others
            # being absent is no regression, but a listed one failing is.
            with open(b, "w") as f:
                f.write(pr.format_list(dict(self.base, debug_regs=("pass", ""))))
            sub, part = os.path.join(d, "subset.txt"), os.path.join(d, "part.txt")
            with open(sub, "w") as f:
                f.write("# comment\ncpuid_test  why it is in\n")
            with open(part, "w") as f:
                f.write(pr.format_list({"cpuid_test": ("pass", "")}))
            self.assertEqual(pr.main(["compare", b, part, "--subset", sub]), 0)
            self.assertEqual(pr.main(["compare", b, part]), 1)
            with open(part, "w") as f:
                f.write(pr.format_list({"cpuid_test": ("skip", "x")}))
            self.assertEqual(pr.main(["compare", b, part, "--subset", sub]), 1)


if __name__ == "__main__":
    unittest.main()
