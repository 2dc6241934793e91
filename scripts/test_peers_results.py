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
[  49.33] PEER-RESULT cpuid_test pass rc=0 t=1.25 -- 
[  52.00] PEER-RESULT state_test skip rc=- t=0 -- listed in skip.txt: triple-faults Bochs
[  90.00] PEER-RESULT demand_paging_test timeout rc=137 t=30 -- no exit within 30s (guest clock)
[  95.00] PEER-SUMMARY mode=bare tests=all n=5 guest_s=40
[ 120.00] PEER-QEMU mode=bare boot_guest_s=1.50 l2_uptime=0.90 kvm_exits=26000 rc=0
[ 130.00] PEER-QEMU mode=bare smp=2 boot_guest_s=2.00 l2_uptime=1.10 kvm_exits=30000 rc=0
[ 131.00] PEER-BENCH mode=bare n=200 cpuid=5000 io=19000 hlt=18000 min_cpuid=4900 min_io=18800 min_hlt=17900
""".splitlines()


class Extract(unittest.TestCase):
    def test_parse_console(self):
        res, n, extra, times = pr.parse_console(CONSOLE)
        self.assertEqual(n, 5)
        self.assertEqual(sorted(res), ["amx_test", "aperfmperf_test", "cpuid_test", "demand_paging_test", "state_test"])
        self.assertEqual(res["cpuid_test"], ("pass", ""))
        self.assertEqual(res["aperfmperf_test"][0], "fail")
        self.assertIn("rc=254", res["aperfmperf_test"][1])
        self.assertEqual(res["amx_test"][0], "skip")
        self.assertEqual(len(extra), 4)
        self.assertEqual(times["cpuid_test"], 1.25)
        self.assertEqual(times["demand_paging_test"], 30.0)

    def test_round_trip(self):
        res, _, _, times = pr.parse_console(CONSOLE)
        text = pr.format_list(res, ["kernel 7.2"], times)
        self.assertTrue(text.startswith("# kernel 7.2\n"))
        self.assertIn("cpuid_test pass t=1.25\n", text)
        self.assertIn("amx_test skip t=0.00 -- 1..0", text)
        self.assertEqual(pr.read_list(text), res)
        self.assertEqual(pr.read_times(text), times)
        # Lists written before the t= field read the same.
        self.assertEqual(pr.read_list(pr.format_list(res)), res)
        self.assertEqual(pr.read_times(pr.format_list(res)), {})

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
        self.base, _, _, _ = pr.parse_console(CONSOLE)

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

    def test_explanations(self):
        text = "# comment\ncpuid_test: slower under pkvm\nnot a line\namx_test:  x \n"
        self.assertEqual(pr.read_explanations(text), {"cpuid_test": "slower under pkvm", "amx_test": "x"})


class TimesAndBench(unittest.TestCase):
    def test_time_rows_largest_ratio_first(self):
        rows = pr.time_rows({"a": 1.0, "b": 2.0, "c": 0.0, "d": 1.0, "e": 0.0},
                            {"a": 3.0, "b": 20.0, "c": 1.0, "e": 0.0})
        self.assertEqual([r[0] for r in rows], ["c", "b", "a"])  # e: run on neither side
        self.assertEqual(rows[1][3], 10.0)
        self.assertIsNone(rows[0][3])

    def test_bench_lines(self):
        res, _, extra, times = pr.parse_console(CONSOLE)
        bare = pr.format_list(res, extra, times)
        pkvm = bare.replace("mode=bare", "mode=pkvm").replace("cpuid=5000", "cpuid=50000") \
            .replace("boot_guest_s=1.50", "boot_guest_s=6.00")
        lines = pr.bench_lines("c2", bare, pkvm)
        self.assertIn("c2 exit_round_trip_cpuid_tsc bare 5000 pkvm 50000 (x10.00)", lines)
        self.assertIn("c2 exit_round_trip_io_tsc bare 19000 pkvm 19000 (x1.00)", lines)
        self.assertIn("c2 qemu_boot_smp1_guest_s bare 1.50 pkvm 6.00 (x4.00)", lines)
        self.assertIn("c2 qemu_boot_smp2_guest_s bare 2.00 pkvm 2.00 (x1.00)", lines)
        # A side without the numbers prints "?", never a made-up ratio.
        lines = pr.bench_lines("c1", bare, "# nothing\n")
        self.assertIn("c1 exit_round_trip_hlt_tsc bare 18000 pkvm ? (?)", lines)
        # A line without the first-touch fields (recorded before them).
        self.assertIn("c2 first_touch_tsc bare ? pkvm ? (?)", pr.bench_lines("c2", bare, pkvm))

    def test_bench_first_touch(self):
        touch = " touch_n=256 touch=20000 touch_mean=21000 warm=100 warm_mean=110" \
                " touch_exits=1.00 warm_exits=0.00"
        res, _, extra, times = pr.parse_console(CONSOLE)
        bare = pr.format_list(res, extra, times)
        new = [line + touch if "PEER-BENCH" in line else line for line in CONSOLE]
        res, _, extra, times = pr.parse_console(new)
        pkvm = pr.format_list(res, extra, times).replace("touch=20000", "touch=50000") \
            .replace("touch_exits=1.00", "touch_exits=na")
        lines = pr.bench_lines("c1", bare, pkvm)
        # The old fields still read from the new line.
        self.assertIn("c1 exit_round_trip_cpuid_tsc bare 5000 pkvm 5000 (x1.00)", lines)
        self.assertIn("c1 first_touch_tsc bare ? pkvm 50000 (?)", lines)
        lines = pr.bench_lines("c1", pkvm.replace("touch=50000", "touch=20000"), pkvm)
        self.assertIn("c1 first_touch_tsc bare 20000 pkvm 50000 (x2.50)", lines)
        self.assertIn("c1 warm_touch_tsc bare 100 pkvm 100 (x1.00)", lines)
        # KVM without binary statistics: "na", no ratio.
        self.assertIn("c1 first_touch_kvm_exits_per_page bare na pkvm na (?)", lines)


class RecordCheck(unittest.TestCase):
    """peers-results.py records on a made-up records directory: it finds
    what it must find."""

    def make(self, d, files):
        for name, text in files.items():
            with open(os.path.join(d, name), "w") as f:
                f.write(text)

    def setUp(self):
        self.base, _, _, _ = pr.parse_console(CONSOLE)
        self.bare = "# PEER-SUMMARY mode=bare tests=all n=5 guest_s=1\n" + pr.format_list(self.base)
        self.pkvm = "# PEER-SUMMARY mode=pkvm tests=all n=5 guest_s=1\n" + pr.format_list(self.base)
        self.sub = "# subset\ncpuid_test why\n"

    def test_clean_records(self):
        with tempfile.TemporaryDirectory() as d:
            self.make(d, {"subset.txt": self.sub, "differences.txt": "# none\n", "bare-kvm-c1.txt": self.bare,
                          "pkvm-c1.txt": self.pkvm, "pkvm-c1-all.txt": self.pkvm})
            self.assertEqual(pr.record_problems(d), [])
            self.assertEqual(len(pr.record_pairs(d)), 2)
            self.assertEqual(pr.main(["records", d]), 0)

    def test_unexplained_difference_in_a_full_record(self):
        # A test outside the subset: only the full-list record sees it.
        worse = "# PEER-SUMMARY mode=pkvm tests=all n=5 guest_s=1\n" + pr.format_list(
            dict(self.base, amx_test=("fail", "boom")))
        with tempfile.TemporaryDirectory() as d:
            self.make(d, {"subset.txt": self.sub, "differences.txt": "# none\n", "bare-kvm-c1.txt": self.bare,
                          "pkvm-c1.txt": self.pkvm, "pkvm-c1-all.txt": worse})
            probs = pr.record_problems(d)
            self.assertEqual(len(probs), 1, probs)
            self.assertIn("UNEXPLAINED", probs[0])
            self.assertIn("amx_test: skip -> fail", probs[0])
            self.assertEqual(pr.main(["records", d]), 1)
            self.make(d, {"differences.txt": "amx_test: why it differs\n"})
            self.assertEqual(pr.record_problems(d), [])

    def test_partial_full_record(self):
        part = dict(self.base)
        del part["state_test"]
        with tempfile.TemporaryDirectory() as d:
            self.make(d, {"subset.txt": self.sub, "differences.txt": "state_test: x\n",
                          "bare-kvm-c2.txt": self.bare.replace("tests=all", "tests=subset"),
                          "pkvm-c2-all.txt": "# PEER-SUMMARY mode=pkvm tests=all\n" + pr.format_list(part)})
            probs = pr.record_problems(d)
            self.assertTrue(any("not a run of every selftest" in p for p in probs), probs)
            self.assertTrue(any("name different tests: state_test" in p for p in probs), probs)

    def test_no_records(self):
        with tempfile.TemporaryDirectory() as d:
            self.make(d, {"subset.txt": self.sub, "differences.txt": ""})
            self.assertEqual(len(pr.record_problems(d)), 1)


class Records(unittest.TestCase):
    """The result lists recorded in the repository (selftests/peers/): every
    difference between the bare and the pkvm record of a CPU count is
    explained in differences.txt, for the subset records and the full-list
    ones (peers-results.py records)."""

    def test_every_recorded_difference_is_explained(self):
        peers = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "selftests", "peers")
        self.assertEqual(pr.record_problems(peers), [])
        self.assertIn("pkvm-c1.txt", [p[2] for p in pr.record_pairs(peers)])


if __name__ == "__main__":
    unittest.main()
