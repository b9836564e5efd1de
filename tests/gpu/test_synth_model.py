"""tests/gpu/synth_model writes the synthetic models the GPU run uses for speed (issue 13, item 7): the
files must load in the engine with the advertised shape and types and generate without error."""
import subprocess

import pytest

import gguf


def synth(build_dir, tmp_path, preset, *extra):
    tool = build_dir / "tests" / "synth_model"
    if not tool.exists():
        pytest.fail(f"{tool} is missing: the build failed")
    path = tmp_path / f"{preset}.gguf"
    r = subprocess.run([str(tool), preset, str(path), *extra], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return path


def types_of(path):
    r = gguf.GGUFReader(str(path))
    out = {}
    for t in r.tensors:
        name = t.name.split(".", 2)[-1] if t.name.startswith("blk.") else t.name
        out.setdefault(name, set()).add((t.tensor_type.name, tuple(int(x) for x in t.shape)))
    return out


def run_engine(engine_bin, path):
    return subprocess.run([str(engine_bin), "--backend", "cpu", "--model", str(path), "--generate", "--prompt",
                           "hello", "--max-tokens", "3", "--temperature", "0", "--ctx", "64"], capture_output=True,
                          text=True, timeout=300)


def test_default_shape_matches_the_real_model_and_runs(build_dir, engine_bin, model_path, tmp_path):
    path = synth(build_dir, tmp_path, "smollm2-135m")
    assert types_of(path) == types_of(model_path)
    r = run_engine(engine_bin, path)
    assert r.returncode == 0, r.stderr
    assert "30 layers, width 576, vocab 49152" in r.stderr, r.stderr
    assert "3 tokens out" in r.stderr, r.stderr


def test_llama3_8b_shape_runs(build_dir, engine_bin, tmp_path):
    path = synth(build_dir, tmp_path, "llama3-8b-q4_0", "--layers", "1")
    t = types_of(path)
    assert t["ffn_down.weight"] == {("Q4_0", (14336, 4096))} and t["attn_k.weight"] == {("Q4_0", (4096, 1024))}
    assert t["output.weight"] == {("Q4_0", (4096, 128256))}
    r = run_engine(engine_bin, path)
    assert r.returncode == 0, r.stderr
    assert "1 layers, width 4096, vocab 128256" in r.stderr, r.stderr


def test_unknown_preset_is_refused(build_dir, tmp_path):
    r = subprocess.run([str(build_dir / "tests" / "synth_model"), "gpt5", str(tmp_path / "x.gguf")],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "unknown preset" in r.stderr
