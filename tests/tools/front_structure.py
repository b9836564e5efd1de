#!/usr/bin/env python3
"""The shape of frontend/: who includes whom, include cycles between its modules, and function lengths.

A module is a file's name without its extension (jobs.c and jobs.h are the module `jobs`); a module
depends on another when one of its files includes the other's header. A cycle in that graph means two
modules call each other, which is what issue 15 removed; a function longer than MAX_LINES usually hides a
second function (STYLE.md).

    tests/tools/front_structure.py                 checks both rules; exit 1 on a cycle or a long function
    tests/tools/front_structure.py --table         prints lines and includes per file (markdown)
    tests/tools/front_structure.py --dir DIR ...   looks at another copy of frontend/ (e.g. a git worktree)

tests/unit/test_front_structure.py runs the checks under pytest."""
import argparse
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
MAX_LINES = 80
# Files the length rule does not apply to, each with the reason (none at present).
LENGTH_EXEMPT = {}
INCLUDE = re.compile(r'^\s*#\s*include\s+"frontend/([A-Za-z0-9_]+)\.h"', re.M)


def sources(front):
    return sorted(p for p in front.iterdir() if p.suffix in (".c", ".h"))


def includes(path):
    """The front headers a file includes, as module names, in file order."""
    return INCLUDE.findall(path.read_text(errors="replace"))


def module_graph(front):
    graph = {}
    for p in sources(front):
        deps = graph.setdefault(p.stem, set())
        deps.update(m for m in includes(p) if m != p.stem)
    for deps in list(graph.values()):
        for m in deps:
            graph.setdefault(m, set())
    return graph


def cycles(graph):
    """Every strongly connected group of more than one module (Tarjan), each as a sorted list."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                out.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


FUNC_START = re.compile(r"^[A-Za-z_][^;=]*\)\s*(\{\s*)?$")


def functions(path):
    """(name, first line, line count) of every function defined in a C file: a definition starts at
    column 0 with its signature and ends at the first '}' in column 0."""
    lines = path.read_text(errors="replace").splitlines()
    out, i = [], 0
    while i < len(lines):
        line = lines[i]
        if FUNC_START.match(line) and not line.startswith(("typedef", "struct", "#")) and "(" in line:
            opens = line.rstrip().endswith("{") or (i + 1 < len(lines) and lines[i + 1] == "{")
            if opens:
                name = re.findall(r"([A-Za-z_][A-Za-z0-9_]*)\s*\(", line)
                end = i + 1
                while end < len(lines) and not lines[end].startswith("}"):
                    end += 1
                out.append((name[0] if name else "?", i + 1, end - i + 1))
                i = end
        i += 1
    return out


def long_functions(front, limit=MAX_LINES, exempt=LENGTH_EXEMPT):
    return [(p.name, n, first, count) for p in sources(front) if p.suffix == ".c" and p.name not in exempt
            for n, first, count in functions(p) if count > limit]


def table(front):
    rows = ["| file | lines | includes (frontend/) |", "| --- | ---: | --- |"]
    total = 0
    for p in sources(front):
        n = len(p.read_text(errors="replace").splitlines())
        total += n
        rows.append(f"| {p.name} | {n} | {', '.join(m + '.h' for m in includes(p)) or '-'} |")
    rows.append(f"| total ({len(sources(front))} files) | {total} | |")
    return "\n".join(rows)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", type=pathlib.Path, default=ROOT / "frontend", help="the frontend/ folder to read")
    ap.add_argument("--table", action="store_true", help="print lines and includes per file")
    a = ap.parse_args()
    if a.table:
        print(table(a.dir))
        return 0
    bad = 0
    for group in cycles(module_graph(a.dir)):
        print("include cycle: " + " <-> ".join(group))
        bad = 1
    for name, fn, first, count in long_functions(a.dir):
        print(f"{name}:{first}: {fn}() has {count} lines (limit {MAX_LINES})")
        bad = 1
    if not bad:
        print("frontend/: no include cycle, no function over %d lines" % MAX_LINES)
    return bad


if __name__ == "__main__":
    sys.exit(main())
