"""--backend auto is the default of both binaries (issue 13, item 6): the engine runs on CUDA when the
build has it and a device is visible, otherwise on the CPU, says which at start, and /info shows it;
--backend cuda where no GPU can run is a one-line error, exit 1. These tests expect the CPU answer on a
machine without a CUDA device, and check the other answer where one is present."""
import subprocess

import pytest

from harness import ready_worker

TIMEOUT = 120


def cuda_device_present(build_dir):
    tool = build_dir / "tests" / "test_cuda_kernels"
    if not tool.exists():
        return False  # a build without CUDA: auto must always choose the CPU
    out = subprocess.run([str(tool)], capture_output=True, text=True, timeout=300)
    return "no CUDA device: skipped" not in out.stdout


def generate(engine_bin, model_path, *extra):
    return subprocess.run([str(engine_bin), "--model", str(model_path), "--generate", "--prompt", "hi",
                           "--max-tokens", "2", "--temperature", "0", *extra], capture_output=True, text=True,
                          timeout=TIMEOUT)


def test_engine_default_is_auto_and_logs_its_choice(build_dir, engine_bin, model_path):
    want = "cuda" if cuda_device_present(build_dir) else "cpu"
    r = generate(engine_bin, model_path)
    assert r.returncode == 0, r.stderr
    assert "backend auto: " in r.stderr and f"using {want}" in r.stderr, r.stderr
    assert f"backend {want}" in r.stderr, r.stderr
    explicit = generate(engine_bin, model_path, "--backend", "auto")
    assert explicit.returncode == 0 and explicit.stdout == r.stdout, explicit.stderr


def test_engine_cpu_backend_does_not_probe_for_a_gpu(engine_bin, model_path):
    r = generate(engine_bin, model_path, "--backend", "cpu")
    assert r.returncode == 0 and "backend auto" not in r.stderr and "backend cpu" in r.stderr, r.stderr


def test_engine_cuda_without_a_gpu_is_a_one_line_error(build_dir, engine_bin, model_path):
    if cuda_device_present(build_dir):
        pytest.skip("a CUDA device is present: --backend cuda runs")
    r = generate(engine_bin, model_path, "--backend", "cuda")
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 1 and len(lines) == 1, r.stderr
    assert "CUDA" in lines[0] and "--backend cpu" in lines[0], lines[0]


def test_bad_backend_name_lists_auto(engine_bin, model_path):
    r = generate(engine_bin, model_path, "--backend", "gpu")
    assert r.returncode == 2 and "auto, cpu or cuda" in r.stderr, r.stderr


def test_front_default_spawns_an_auto_engine_and_info_shows_its_choice(build_dir, model_path):
    want = "cuda" if cuda_device_present(build_dir) else "cpu"
    for w in ready_worker(build_dir, model_path, slots=1):
        info = w.info()
        assert info["device"] == f"{want}:0", info
        assert "backend auto: " in w.log_text(), w.log_text()
