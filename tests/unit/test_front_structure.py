"""The shape of frontend/ (issue 15): its modules depend on each other one way, never in a circle, and
no function in it is longer than tests/tools/front_structure.py's MAX_LINES. The checker itself is tested
on small made-up folders, so that a rule that stopped finding anything would not pass silently."""
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "tools"))
import front_structure as fs  # noqa: E402


def test_front_has_no_include_cycle():
    found = fs.cycles(fs.module_graph(ROOT / "frontend"))
    assert not found, "modules of frontend/ include each other in a circle: " + "; ".join(
        " <-> ".join(g) for g in found)


def test_front_has_no_function_over_the_limit():
    long = fs.long_functions(ROOT / "frontend")
    assert not long, "functions over %d lines: " % fs.MAX_LINES + ", ".join(
        f"{f}:{line} {name}() {n} lines" for f, name, line, n in long)


def test_front_core_does_not_reach_up():
    """The bottom of the front knows nothing above it: link and metrics include no other module of
    the front but buf, and the job table neither the stream nor the link."""
    graph = fs.module_graph(ROOT / "frontend")
    assert graph["link"] <= set(), graph["link"]
    assert graph["metrics"] <= {"buf"}, graph["metrics"]
    assert graph["jobs"] <= {"buf", "metrics"}, graph["jobs"]
    assert graph["sse"] <= {"buf", "jobs", "metrics"}, graph["sse"]


def test_checker_finds_a_cycle_and_a_long_function(tmp_path):
    (tmp_path / "a.h").write_text('#include "frontend/b.h"\n')
    (tmp_path / "a.c").write_text('#include "frontend/a.h"\n')
    (tmp_path / "b.h").write_text("\n")
    (tmp_path / "b.c").write_text('#include "frontend/b.h"\n#include "frontend/a.h"\n\nstatic int f(void)\n{\n'
                                  + "    x++;\n" * 90 + "}\n\nint g(int a)\n{\n    return a;\n}\n")
    assert fs.cycles(fs.module_graph(tmp_path)) == [["a", "b"]]
    assert [(f, name, n) for f, name, _, n in fs.long_functions(tmp_path)] == [("b.c", "f", 93)]  # signature, braces and 90 lines
