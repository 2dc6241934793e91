#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""List the kernel symbols that VMX root-mode code can reach.

Walks the call graph of the module's Rust object from the root-mode entry
points (the VM-exit entry, the root IDT stubs, the fault-tolerant MSR
accessors): direct calls and jumps, and every relocation in `.text`
(calls into the kernel, and addresses taken, followed conservatively).
Prints every undefined symbol (one the kernel provides) that a reachable
function refers to, and every reachable function that makes an indirect
call (whose target the walk cannot know).  Root mode needs neither: the
module build runs this with --strict, which fails on any.

usage: audit-root-calls.py OBJECT [--strict] [-v]
"""
import re
import subprocess
import sys


def main():
    obj = sys.argv[1]
    strict = "--strict" in sys.argv
    syms = {}      # name -> (addr, size) for .text symbols
    undefined = set()
    # Writable data: root mode maps none of the module's (only text and
    # read-only data), so a reference from root-mode code is a bug.
    writable = {".data", ".bss"}
    out = subprocess.run(["nm", "-S", obj], capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        f = line.split()
        if len(f) == 2 and f[0] == "U":
            undefined.add(f[1])
        elif len(f) == 4 and f[2] in "tT":
            syms[f[3]] = (int(f[0], 16), int(f[1], 16))
        elif len(f) == 3 and f[1] in "tT":
            syms[f[2]] = (int(f[0], 16), 0)
        if len(f) >= 3 and f[-2] in "dDbB":
            writable.add(f[-1])
    # Function ranges: symbol start to its size, or to the next symbol.
    starts = sorted(set(a for a, _ in syms.values()))
    def range_of(name):
        a, s = syms[name]
        if s:
            return a, a + s
        nxt = [x for x in starts if x > a]
        return a, (nxt[0] if nxt else a + 1)
    by_addr = {}
    for n in syms:
        by_addr.setdefault(syms[n][0], []).append(n)
    def containing(off):
        best = None
        for n in syms:
            lo, hi = range_of(n)
            if lo <= off < hi and (best is None or lo >= range_of(best)[0]):
                best = n
        return best
    # Edges: direct calls/jumps resolved by the assembler (no relocation
    # inside one section) and every relocation (calls to the kernel, and
    # taken addresses, followed conservatively).  Indirect calls through
    # registers cannot be followed; they are counted.
    edges, indirect_in = {}, {}
    cur, pending = None, None
    dis = subprocess.run(["objdump", "-dr", "--no-show-raw-insn", "-j", ".text", obj],
                         capture_output=True, text=True, check=True).stdout

    def commit():
        # A direct call/jump the assembler resolved (no relocation follows).
        if pending and pending[1] and pending[1] != pending[0]:
            edges.setdefault(pending[0], set()).add(pending[1])

    for line in dis.splitlines():
        m = re.match(r"^[0-9a-f]+ <([^>]+)>:$", line)
        if m:
            commit()
            cur, pending = m.group(1), None
            continue
        if cur is None:
            continue
        m = re.match(r"^\s*[0-9a-f]+:\s+R_X86_64_\S+\s+(\S+)$", line)
        if m:
            # The preceding instruction's operand is relocated: its
            # displayed target is meaningless, the relocation is the edge.
            pending = None
            t = re.match(r"^(.*?)([+-]0x[0-9a-f]+)?$", m.group(1))
            name, add = t.group(1), int(t.group(2) or "0", 16)
            dst = (containing(add + 4) or containing(add)) if name == ".text" else name
            if dst:
                edges.setdefault(cur, set()).add(dst)
            continue
        commit()
        pending = None
        m = re.match(r"^\s*([0-9a-f]+):\s+(call|jmp|j[a-z]+)\s+([0-9a-f]+) <", line)
        if m:
            pending = (cur, containing(int(m.group(3), 16)))
            continue
        if re.match(r"^\s*[0-9a-f]+:\s+(call|jmp)\s+\*", line):
            indirect_in.setdefault(cur, 0)
            indirect_in[cur] += 1
    commit()
    roots = [n for n in syms if n == "pkvm_vmexit_entry" or n.startswith("pkvm_root_vec_")
             or n in ("pkvm_rdmsr_safe", "pkvm_wrmsr_safe", "pkvm_xsetbv_safe")]
    seen, todo, reached_undef = set(), list(roots), {}
    parent = {}
    while todo:
        n = todo.pop()
        if n in seen:
            continue
        seen.add(n)
        for d in edges.get(n, ()):
            if d in undefined or d in writable or d.startswith((".data", ".bss")):
                reached_undef.setdefault(d, set()).add(n)
            elif d in syms and d not in parent:
                parent[d] = n
                todo.append(d)
    # The walk must actually see root mode: the exit handler and the
    # page-state code behind it.  A rename that loses the roots would
    # otherwise make the audit pass vacuously.
    must_reach = ("exit_handler11handle_exit", "PageStates15host_donate_hyp")
    missing = [m for m in must_reach if not any(m in n for n in seen)]
    if missing or "pkvm_vmexit_entry" not in roots:
        print(f"audit-root-calls: root-mode code not found (missing {missing}); update the roots")
        return 1
    indirect = sorted(n for n in seen if n in indirect_in)
    print(f"root-mode code: {len(roots)} entry points, {len(seen)} functions reachable, "
          f"{len(reached_undef)} kernel symbols or writable data referenced, "
          f"{len(indirect)} reachable functions with indirect calls")
    for n in indirect:
        print(f"  indirect call in {n}")
    verbose = "-v" in sys.argv
    for d in sorted(reached_undef):
        print(f"  {d}")
        if verbose:
            for src in sorted(reached_undef[d]):
                chain, n = [], src
                while n in parent and len(chain) < 12:
                    chain.append(n)
                    n = parent[n]
                chain.append(n)
                print("      from " + " <- ".join(chain))
    return 1 if strict and (reached_undef or indirect) else 0


if __name__ == "__main__":
    sys.exit(main())
