"""Runs every C unit test registered in tests/meson.build, in the release build and, when it exists, in
the sanitizer build (BW_ASAN_BUILD_DIR: ASan + UBSan, where any report fails the test)."""
import json
import os
import pathlib
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


def registered(build):
    build = pathlib.Path(build)
    if not (build / "build.ninja").exists():
        return []
    out = subprocess.run(["meson", "introspect", "--tests", str(build)], capture_output=True, text=True,
                         check=True, timeout=60).stdout
    return [(build.name, t["name"], t["cmd"], t.get("workdir"), t.get("timeout") or 120) for t in json.loads(out)]


BUILDS = [os.environ.get("BW_BUILD_DIR", str(ROOT / "build"))]
if os.environ.get("BW_ASAN_BUILD_DIR"):
    BUILDS.append(os.environ["BW_ASAN_BUILD_DIR"])
CASES = [c for b in BUILDS for c in registered(b if os.path.isabs(b) else ROOT / b)]


@pytest.mark.parametrize("build,name,cmd,workdir,timeout", CASES, ids=[f"{c[0]}:{c[1]}" for c in CASES])
def test_c_unit(build, name, cmd, workdir, timeout):
    p = subprocess.run(cmd, cwd=workdir or ROOT, capture_output=True, text=True, timeout=timeout)
    print(p.stdout[-4000:])
    if p.returncode == 77:
        pytest.skip(p.stdout.strip().splitlines()[-1] if p.stdout.strip() else "skipped by the test")
    assert p.returncode == 0, f"{name} failed ({p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
    assert "runtime error" not in p.stderr and "AddressSanitizer" not in p.stderr, p.stderr[-3000:]
