#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""Result lists of the peer suites (selftests/suite-peers.sh) and their comparison.

  peers-results.py extract CONSOLE.log... OUT.txt [--note TEXT]...
      Turns the PEER-RESULT lines of a run's console into a result list:
      one line per KVM selftest, "name result -- reason" (the reason for
      every non-pass), sorted by name, with "#" header lines (the notes, the
      QEMU boot line, the summary).  Fails if the run did not finish its
      list (no PEER-SUMMARY, or fewer results than it announced).

  peers-results.py compare BASELINE.txt OTHER.txt [--subset LIST]
      The criterion of issue 9: no selftest that passes in BASELINE (bare
      KVM with pkvm's view) may fail, time out, skip or be missing in OTHER
      (under pkvm).  Prints every difference; exit status 1 if there is a
      regression, 0 otherwise (improvements are printed, not judged).
      --subset judges only the tests LIST names (a run of a subset).
"""
import argparse
import re
import sys

RESULTS = ("pass", "fail", "skip", "timeout")
LINE = re.compile(r"PEER-RESULT (\S+) (pass|fail|skip|timeout) rc=(\S+) t=(\S+) --(.*)$")
PLAN = re.compile(r"PEER-PLAN n=(\d+)")
SUMMARY = re.compile(r"PEER-SUMMARY ")


def parse_console(lines):
    """Returns ({name: (result, reason)}, announced count or None, [other PEER- lines]).

    The count is the first PEER-PLAN's, and only once a PEER-SUMMARY says
    the list ran to its end (a run resumed after a stall has several
    boots' consoles, one after the other, and one summary at the end)."""
    results, plan, done, extra = {}, None, False, []
    for line in lines:
        m = LINE.search(line)
        if m:
            name, res, rc, _, why = m.groups()
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
        if re.search(r"PEER-(SUMMARY|QEMU)", line):
            extra.append(line[line.index("PEER-"):].strip())
    return results, (plan if done else None), extra


def format_list(results, notes=()):
    out = [f"# {n}" for n in notes]
    counts = {r: sum(1 for v in results.values() if v[0] == r) for r in RESULTS}
    out.append("# " + ", ".join(f"{k}: {v}" for k, v in counts.items()) + f" (of {len(results)})")
    for name in sorted(results):
        res, why = results[name]
        out.append(f"{name} {res}" + (f" -- {why}" if res != "pass" and why else ""))
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
        if len(parts) != 2 or parts[1] not in RESULTS:
            raise ValueError(f"bad result line: {raw!r}")
        results[parts[0]] = (parts[1], why.strip())
    return results


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
    a = ap.parse_args(argv)

    if a.cmd == "extract":
        lines = []
        for c in a.console:
            with open(c, errors="replace") as f:
                lines += f.read().splitlines()
        results, announced, extra = parse_console(lines)
        if announced is None:
            print(f"{a.console}: the peer run did not finish (no PEER-PLAN or no PEER-SUMMARY)", file=sys.stderr)
            return 1
        if len(results) != announced:
            print(f"{a.console}: {len(results)} results, the run announced {announced}", file=sys.stderr)
            return 1
        with open(a.out, "w") as f:
            f.write(format_list(results, list(a.note) + extra))
        return 0

    with open(a.baseline) as f:
        base = read_list(f.read())
    with open(a.other) as f:
        other = read_list(f.read())
    if a.subset:
        with open(a.subset) as f:
            names = read_names(f.read())
        base = {k: v for k, v in base.items() if k in names}
        other = {k: v for k, v in other.items() if k in names}
    regressions, notes = compare(base, other)
    for n in notes:
        print(f"  differs (not a regression): {n}")
    for r in regressions:
        print(f"  REGRESSION: {r}")
    passed = sum(1 for v in base.values() if v[0] == "pass")
    print(f"peers: {len(regressions)} regressions among the {passed} tests that pass in {a.baseline}")
    return 1 if regressions else 0


if __name__ == "__main__":
    sys.exit(main())
