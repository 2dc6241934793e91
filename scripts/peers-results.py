#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""Result lists of the peer suites (selftests/suite-peers.sh) and their comparison.

  peers-results.py extract CONSOLE.log... OUT.txt [--note TEXT]...
      Turns the PEER-RESULT lines of a run's console into a result list:
      one line per KVM selftest, "name result t=SECONDS -- reason" (the
      test's guest-clock seconds; the reason for every non-pass), sorted by
      name, with "#" header lines (the notes, the summary, the QEMU boot and
      exit-benchmark lines).  Fails if the run did not finish its list (no
      PEER-SUMMARY, or fewer results than it announced).

  peers-results.py compare BASELINE.txt OTHER.txt [--subset LIST]
      The criterion of issue 9: no selftest that passes in BASELINE (bare
      KVM with pkvm's view) may fail, time out, skip or be missing in OTHER
      (under pkvm).  Prints every difference; exit status 1 if there is a
      regression, 0 otherwise (improvements are printed, not judged).
      --subset judges only the tests LIST names (a run of a subset).
      --explained FILE (selftests/peers/differences.txt) prints, under each
      difference, why it is there ("name: explanation" lines of FILE), or
      "UNEXPLAINED" (printed, not judged: the record check in
      scripts/test_peers_results.py insists on explanations).

  peers-results.py times BASELINE.txt OTHER.txt [--subset LIST] [--top N]
      Guest-clock seconds of every test in both lists and their ratio,
      slowest ratio first (how much slower a test runs under pkvm).

  peers-results.py records DIR
      The record check (selftests/peers/): every difference between the bare
      record and the pkvm record of a CPU count has a line in
      DIR/differences.txt, for the subset records (pkvm-cN.txt against
      bare-kvm-cN-subset.txt, else bare-kvm-cN.txt, judged on subset.txt)
      and the full-list ones (pkvm-cN-all.txt against bare-kvm-cN.txt, every
      selftest judged; both must be runs of every selftest naming the same
      tests).  Prints each problem; exit status 1 if there is one.

  peers-results.py bench LABEL BARE.txt PKVM.txt
      The benchmarks of issue 9 from the header lines of two lists: the
      guest exit round trips (PEER-BENCH: median guest TSC cycles of CPUID,
      port I/O, HLT) and the QEMU guest's boot to its marker (PEER-QEMU
      boot_guest_s, per -smp), pkvm vs bare and the ratio; and issue 10's
      first touch of a page (PEER-BENCH touch=, warm=: median guest TSC
      cycles of a write to a page never touched before, and to the same
      page again; touch_exits=: KVM's exits per first-touched page).
      Numbers, not judgements; a side without the line or the field (a
      list recorded before the field existed) prints "?".
"""
import argparse
import os
import re
import sys

RESULTS = ("pass", "fail", "skip", "timeout")
LINE = re.compile(r"PEER-RESULT (\S+) (pass|fail|skip|timeout) rc=(\S+) t=(\S+) --(.*)$")
EXTRA = re.compile(r"PEER-(SUMMARY|QEMU|BENCH)\b")
PLAN = re.compile(r"PEER-PLAN n=(\d+)")
SUMMARY = re.compile(r"PEER-SUMMARY ")


def seconds(text):
    """A t= field as a float, or None ("-": not run)."""
    try:
        return float(text)
    except ValueError:
        return None


def parse_console(lines):
    """Returns ({name: (result, reason)}, announced count or None, [other PEER- lines],
    {name: guest seconds}).

    The count is the first PEER-PLAN's, and only once a PEER-SUMMARY says
    the list ran to its end (a run resumed after a stall has several
    boots' consoles, one after the other, and one summary at the end)."""
    results, plan, done, extra, times = {}, None, False, [], {}
    for line in lines:
        m = LINE.search(line)
        if m:
            name, res, rc, t, why = m.groups()
            if seconds(t) is not None:
                times[name] = seconds(t)
            else:
                times.pop(name, None)
            why = why.strip()
            if res != "pass" and rc not in ("-", "0", "4") and f"rc={rc}" not in why:
                why = f"rc={rc}: {why}" if why else f"rc={rc}"
            results[name] = (res, why)
            continue
        m = PLAN.search(line)
        if m and plan is None:
            plan = int(m.group(1))
        if SUMMARY.search(line):
            done = True
        if EXTRA.search(line):
            extra.append(line[line.index("PEER-"):].strip())
    return results, (plan if done else None), extra, times


def format_list(results, notes=(), times=None):
    out = [f"# {n}" for n in notes]
    counts = {r: sum(1 for v in results.values() if v[0] == r) for r in RESULTS}
    out.append("# " + ", ".join(f"{k}: {v}" for k, v in counts.items()) + f" (of {len(results)})")
    for name in sorted(results):
        res, why = results[name]
        t = (times or {}).get(name)
        out.append(f"{name} {res}" + (f" t={t:.2f}" if t is not None else "")
                   + (f" -- {why}" if res != "pass" and why else ""))
    return "\n".join(out) + "\n"


def read_list(text):
    """Parses a result list written by format_list: {name: (result, reason)}."""
    results = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        head, _, why = line.partition(" -- ")
        parts = head.split()
        if len(parts) == 3 and parts[2].startswith("t=") and seconds(parts[2][2:]) is not None:
            parts = parts[:2]
        if len(parts) != 2 or parts[1] not in RESULTS:
            raise ValueError(f"bad result line: {raw!r}")
        results[parts[0]] = (parts[1], why.strip())
    return results


def read_times(text):
    """The t= field of every result line that has one: {name: guest seconds}."""
    times = {}
    for line in text.splitlines():
        parts = line.partition(" -- ")[0].split()
        if len(parts) == 3 and not line.startswith("#") and parts[2].startswith("t="):
            t = seconds(parts[2][2:])
            if t is not None:
                times[parts[0]] = t
    return times


def read_explanations(text):
    """The "name: explanation" lines of a differences file: {name: explanation}."""
    out = {}
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, sep, why = line.partition(":")
        if sep and name.strip() and " " not in name.strip():
            out[name.strip()] = why.strip()
    return out


def header_fields(text, tag):
    """The key=value fields of every "# PEER-<tag> ..." header line: [dict]."""
    rows = []
    for line in text.splitlines():
        if line.startswith(f"# PEER-{tag} "):
            rows.append(dict(kv.split("=", 1) for kv in line.split()[2:] if "=" in kv))
    return rows


def ratio(a, b):
    """b / a as text ("x1.23"), or "?" when either is missing or a is zero."""
    try:
        return f"x{float(b) / float(a):.2f}"
    except (TypeError, ValueError, ZeroDivisionError):
        return "?"


def bench_lines(label, bare_text, pkvm_text):
    """The benchmark lines of issue 9 for one CPU count (see the module doc)."""
    out = []
    bare_b = (header_fields(bare_text, "BENCH") or [{}])[-1]
    pkvm_b = (header_fields(pkvm_text, "BENCH") or [{}])[-1]
    for k in ("cpuid", "io", "hlt"):
        b, p = bare_b.get(k), pkvm_b.get(k)
        out.append(f"{label} exit_round_trip_{k}_tsc bare {b or '?'} pkvm {p or '?'} ({ratio(b, p)})")
    for k, name in (("touch", "first_touch_tsc"), ("warm", "warm_touch_tsc"),
                    ("touch_exits", "first_touch_kvm_exits_per_page")):
        b, p = bare_b.get(k), pkvm_b.get(k)
        out.append(f"{label} {name} bare {b or '?'} pkvm {p or '?'} ({ratio(b, p)})")
    bare_q = {q.get("smp", "1"): q for q in header_fields(bare_text, "QEMU")}
    pkvm_q = {q.get("smp", "1"): q for q in header_fields(pkvm_text, "QEMU")}
    for smp in sorted(set(bare_q) | set(pkvm_q)):
        b = bare_q.get(smp, {}).get("boot_guest_s")
        p = pkvm_q.get(smp, {}).get("boot_guest_s")
        out.append(f"{label} qemu_boot_smp{smp}_guest_s bare {b or '?'} pkvm {p or '?'} ({ratio(b, p)})")
    return out


def time_rows(base_times, other_times):
    """[(name, base s, other s, ratio or None)], the largest ratio first;
    tests with no time on either side (skip.txt: never run) left out."""
    rows = []
    for name in sorted(set(base_times) & set(other_times)):
        b, o = base_times[name], other_times[name]
        if b == 0 and o == 0:
            continue
        rows.append((name, b, o, o / b if b > 0 else None))
    rows.sort(key=lambda r: (-(r[3] if r[3] is not None else float("inf")), r[0]))
    return rows


def read_names(text):
    """The first word of every non-comment line (a subset list)."""
    return {line.split()[0] for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")}


def compare(base, other):
    """Returns (regressions, notes): lines describing each difference."""
    regressions, notes = [], []
    for name in sorted(set(base) | set(other)):
        b = base.get(name, ("missing", ""))
        o = other.get(name, ("missing", ""))
        if b[0] == o[0]:
            continue
        text = f"{name}: {b[0]} -> {o[0]}" + (f" ({o[1]})" if o[1] else "")
        if b[0] == "pass":
            regressions.append(text)
        else:
            notes.append(text)
    return regressions, notes


def record_pairs(d):
    """[(label, bare record, pkvm record, subset names or None)]: the pkvm
    records present in the records directory D and the bare record each is
    judged against (see "records" in the module doc)."""
    with open(os.path.join(d, "subset.txt")) as f:
        subset = read_names(f.read())
    out = []
    for c in (1, 2):
        if os.path.exists(os.path.join(d, f"pkvm-c{c}.txt")):
            # The subset baseline where the baseline is the subset (2 CPUs).
            bare = f"bare-kvm-c{c}-subset.txt"
            if not os.path.exists(os.path.join(d, bare)):
                bare = f"bare-kvm-c{c}.txt"
            out.append((f"c{c}", bare, f"pkvm-c{c}.txt", subset))
        if os.path.exists(os.path.join(d, f"pkvm-c{c}-all.txt")):
            out.append((f"c{c} all", f"bare-kvm-c{c}.txt", f"pkvm-c{c}-all.txt", None))
    return out


def record_problems(d):
    """Every problem of the records in directory D: an unexplained difference,
    a full-list record that is not a run of every selftest or names other
    tests than its baseline, no pkvm record at all.  [] if none."""
    def read(name):
        with open(os.path.join(d, name)) as f:
            return f.read()
    explained = read_explanations(read("differences.txt"))
    problems, pairs = [], record_pairs(d)
    if not pairs:
        problems.append(f"{d}: no pkvm record (pkvm-c1.txt)")
    for label, bare, pk, names in pairs:
        base_text, other_text = read(bare), read(pk)
        base, other = read_list(base_text), read_list(other_text)
        if names is None:
            for name, text in ((pk, other_text), (bare, base_text)):
                if not re.search(r"^# PEER-SUMMARY .*\btests=all\b", text, re.M):
                    problems.append(f"{label}: {name} is not a run of every selftest (no tests=all summary)")
            if sorted(base) != sorted(other):
                problems.append(f"{label}: {pk} and {bare} name different tests: "
                                f"{' '.join(sorted(set(base) ^ set(other)))}")
        else:
            base = {k: v for k, v in base.items() if k in names}
            other = {k: v for k, v in other.items() if k in names}
        reg, notes = compare(base, other)
        for diff in reg + notes:
            if diff.split(":", 1)[0] not in explained:
                problems.append(f"{label}: UNEXPLAINED ({pk} vs {bare}): {diff}")
    return problems


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    ex = sub.add_parser("extract")
    ex.add_argument("console", nargs="+")
    ex.add_argument("out")
    ex.add_argument("--note", action="append", default=[])
    cp = sub.add_parser("compare")
    cp.add_argument("baseline")
    cp.add_argument("other")
    cp.add_argument("--subset", help="judge only the tests this list names (selftests/peers/subset.txt)")
    cp.add_argument("--explained", help="differences file: why each difference is there")
    tp = sub.add_parser("times")
    tp.add_argument("baseline")
    tp.add_argument("other")
    tp.add_argument("--subset")
    tp.add_argument("--top", type=int, default=0, help="only the first N rows")
    rp = sub.add_parser("records")
    rp.add_argument("dir")
    bp = sub.add_parser("bench")
    bp.add_argument("label")
    bp.add_argument("bare")
    bp.add_argument("pkvm")
    a = ap.parse_args(argv)

    if a.cmd == "extract":
        lines = []
        for c in a.console:
            with open(c, errors="replace") as f:
                lines += f.read().splitlines()
        results, announced, extra, times = parse_console(lines)
        if announced is None:
            print(f"{a.console}: the peer run did not finish (no PEER-PLAN or no PEER-SUMMARY)", file=sys.stderr)
            return 1
        if len(results) != announced:
            print(f"{a.console}: {len(results)} results, the run announced {announced}", file=sys.stderr)
            return 1
        with open(a.out, "w") as f:
            f.write(format_list(results, list(a.note) + extra, times))
        return 0

    if a.cmd == "records":
        problems = record_problems(a.dir)
        for p in problems:
            print(p)
        print(f"peers records: {len(record_pairs(a.dir))} pkvm records checked, {len(problems)} problems")
        return 1 if problems else 0

    if a.cmd == "bench":
        with open(a.bare) as f:
            bare = f.read()
        with open(a.pkvm) as f:
            pkvm = f.read()
        print("\n".join(bench_lines(a.label, bare, pkvm)))
        return 0

    with open(a.baseline) as f:
        base_text = f.read()
    with open(a.other) as f:
        other_text = f.read()
    base, other = read_list(base_text), read_list(other_text)
    names = None
    if a.subset:
        with open(a.subset) as f:
            names = read_names(f.read())
        base = {k: v for k, v in base.items() if k in names}
        other = {k: v for k, v in other.items() if k in names}

    if a.cmd == "times":
        bt, ot = read_times(base_text), read_times(other_text)
        if names is not None:
            bt = {k: v for k, v in bt.items() if k in names}
        rows = time_rows(bt, ot)
        for name, b, o, r in rows[:a.top] if a.top > 0 else rows:
            print(f"  {name:40} {b:8.2f} {o:8.2f}  " + (f"x{r:.1f}" if r is not None else "(0 s bare)"))
        return 0

    explained = {}
    if a.explained:
        with open(a.explained) as f:
            explained = read_explanations(f.read())

    def why(line):
        name = line.split(":", 1)[0]
        return explained.get(name, "UNEXPLAINED") if a.explained else None

    regressions, notes = compare(base, other)
    for n in notes:
        print(f"  differs (not a regression): {n}")
        if why(n):
            print(f"      why: {why(n)}")
    for r in regressions:
        print(f"  REGRESSION: {r}")
        if why(r):
            print(f"      why: {why(r)}")
    passed = sum(1 for v in base.values() if v[0] == "pass")
    print(f"peers: {len(regressions)} regressions among the {passed} tests that pass in {a.baseline}")
    return 1 if regressions else 0


if __name__ == "__main__":
    sys.exit(main())
