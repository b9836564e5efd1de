"""Shared pytest fixtures: where the built binaries and the default model are.

BW_BUILD_DIR (default: build) names the meson build directory; BW_MODEL the GGUF file (default:
models/SmolLM2-135M-Instruct.Q4_1.gguf, fetched by scripts/fetch-model.sh)."""
import os
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
BUILD = pathlib.Path(os.environ.get("BW_BUILD_DIR", ROOT / "build")).resolve()
MODEL = pathlib.Path(os.environ.get("BW_MODEL", ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf")).resolve()


@pytest.fixture(scope="session")
def build_dir():
    if not (BUILD / "build.ninja").exists():
        pytest.fail(f"no meson build in {BUILD}: run scripts/build.sh first")
    return BUILD


@pytest.fixture(scope="session")
def engine_bin(build_dir):
    path = build_dir / "engine" / "beeworker-engine"
    if not path.exists():
        pytest.fail(f"{path} is missing: the build failed")
    return path


@pytest.fixture(scope="session")
def model_path():
    if not MODEL.exists():
        pytest.fail(f"model {MODEL} is missing: run scripts/fetch-model.sh")
    return MODEL


ASAN_BUILD = os.environ.get("BW_ASAN_BUILD_DIR")


@pytest.fixture(scope="session", params=["release", "sanitized"])
def any_engine_bin(request, engine_bin):
    """The release engine, and the ASan+UBSan one when BW_ASAN_BUILD_DIR names its build."""
    if request.param == "release":
        return engine_bin
    if not ASAN_BUILD:
        pytest.skip("no sanitizer build (set BW_ASAN_BUILD_DIR; scripts/test.sh does)")
    path = (ROOT / ASAN_BUILD if not os.path.isabs(ASAN_BUILD) else pathlib.Path(ASAN_BUILD)) / "engine" / "beeworker-engine"
    if not path.exists():
        pytest.fail(f"{path} is missing: the sanitizer build failed")
    return path


def _become_subreaper():
    """Orphaned grandchildren (an engine whose front was killed) are re-parented to this process instead
    of to PID 1, which in a container may never reap them; the session end reaps and, if needed, kills
    them, so a test run leaves no process behind, not even a zombie."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_CHILD_SUBREAPER = 36
        libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    except OSError:
        pass


_become_subreaper()


@pytest.fixture(scope="session", autouse=True)
def reap_orphans_at_session_end():
    yield
    import signal
    import time

    me = os.getpid()
    deadline = time.monotonic() + 5
    while True:
        kids = []
        for stat in pathlib.Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == me and fields[0] != "Z":
                kids.append(int(stat.parent.name))
        for pid in kids:
            try:
                os.kill(pid, signal.SIGTERM if time.monotonic() < deadline else signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            while os.waitpid(-1, os.WNOHANG)[0] > 0:
                pass
        except ChildProcessError:
            pass
        if not kids:
            break
        time.sleep(0.1)
