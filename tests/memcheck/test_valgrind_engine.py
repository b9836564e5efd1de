"""valgrind memcheck on a short engine generation (issue 8): no invalid read or write, no use of
uninitialised memory, and no definite or indirect leak from loading the model, tokenizing, four decode
steps and teardown. The release build runs under valgrind (the ASan build cannot: two sanitizers do not
mix); one thread, since valgrind serializes threads and the pool's waiting only adds time."""
import shutil
import subprocess

import pytest

DEADLINE_S = 420  # about 20 s of CPU; the rest is slack for a loaded 2-core machine


def test_short_generation_is_memcheck_clean(engine_bin, model_path):
    if not shutil.which("valgrind"):
        pytest.skip("valgrind is not installed (scripts/setup-deps.sh installs it)")
    cmd = ["valgrind", "--error-exitcode=99", "--leak-check=full", "--errors-for-leak-kinds=definite,indirect",
           "--track-origins=no", str(engine_bin), "--model", str(model_path), "--generate", "--json",
           "--temperature", "0", "--max-tokens", "4", "--threads", "1", "--prompt", "Bees make honey because"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=DEADLINE_S)
    report = p.stderr[-6000:]
    assert p.returncode == 0, f"valgrind exit {p.returncode}:\n{report}"
    assert "ERROR SUMMARY: 0 errors" in p.stderr, report
    assert p.stdout.splitlines()[-1].startswith('{"done":true'), p.stdout[-500:]
