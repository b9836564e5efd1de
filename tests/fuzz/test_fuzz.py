"""Each fuzz target (tests/fuzz/run.sh): its committed corpus and crash reproducers replay cleanly, then
it fuzzes for BW_FUZZ_SECONDS (default 60; 0 skips) without a finding. Needs clang and its runtime
(scripts/setup-deps.sh installs them)."""
import os
import pathlib
import shutil
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
SECONDS = int(os.environ.get("BW_FUZZ_SECONDS", "60"))


@pytest.mark.parametrize("target", ["gguf", "tokenizer", "proto", "http", "chat"])
def test_fuzz_target_finds_nothing(target):
    if SECONDS <= 0:
        pytest.skip("BW_FUZZ_SECONDS=0")
    if not shutil.which("clang"):
        pytest.skip("clang is not installed")
    p = subprocess.run([str(ROOT / "tests" / "fuzz" / "run.sh"), str(SECONDS), target], cwd=ROOT,
                       capture_output=True, text=True, timeout=SECONDS + 200)
    print(p.stdout)
    assert p.returncode == 0, f"{p.stdout[-6000:]}\n{p.stderr[-3000:]}"
