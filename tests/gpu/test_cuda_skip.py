"""On a machine without a CUDA device, every CUDA test tool must skip cleanly: print
"no CUDA device: skipped" and exit 0 (so the normal suite passes there), and never crash. On a machine
with a device the kernel tests run for real and must pass. Skipped when the build has no CUDA."""
import pathlib
import subprocess

import pytest


def tool(build_dir, name):
    path = build_dir / "tests" / name
    if not path.exists():
        pytest.skip(f"{name} not built (this build has no CUDA: -Dcuda=auto without nvcc, or disabled)")
    return path


def has_device(build_dir):
    out = subprocess.run([str(tool(build_dir, "test_cuda_kernels"))], capture_output=True, text=True, timeout=300)
    return "no CUDA device: skipped" not in out.stdout, out


def test_cuda_kernel_tests_skip_without_device_or_pass(build_dir):
    present, out = has_device(build_dir)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    if not present:
        assert out.stdout.strip() == "no CUDA device: skipped"


@pytest.mark.parametrize("name,args", [("cuda_parity", ["model.gguf"]), ("cuda_bench", ["model.gguf"]),
                                       ("handoff_bench", ["10"])])
def test_cuda_tools_skip_without_device(build_dir, name, args):
    present, _ = has_device(build_dir)
    if present:
        pytest.skip("a CUDA device is present: tests/gpu/run.sh runs these tools")
    out = subprocess.run([str(tool(build_dir, name))] + args, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "no CUDA device: skipped", out.stdout + out.stderr


KQUANT_MODEL = (pathlib.Path(__file__).resolve().parents[1] / ".cache" / "models" /
                "SmolLM2-135M-Instruct.Q6_K.gguf")


def test_cuda_backend_refuses_cpu_only_types_naming_the_tensor(build_dir, engine_bin):
    """The GPU kernels read no K type: the CUDA backend must say which tensor has which type, in one line,
    before it looks for a device (so this holds on any machine with a CUDA build)."""
    tool(build_dir, "test_cuda_kernels")  # skips when the build has no CUDA
    if not KQUANT_MODEL.exists():
        pytest.fail(f"{KQUANT_MODEL} is missing: run tests/tools/make_kquant_models.py")
    out = subprocess.run([str(engine_bin), "--backend", "cuda", "--model", str(KQUANT_MODEL), "--generate",
                          "--prompt", "hi", "--max-tokens", "1"], capture_output=True, text=True, timeout=60)
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 1 and len(lines) == 1, out.stderr
    assert "tensor blk.0.ffn_down.weight has type Q6_K" in lines[0] and "--backend cpu" in lines[0], lines[0]
