"""A malformed model file makes beeworker-engine exit 1 with one line on stderr that names the problem:
never a crash, a hang, a sanitizer report or a wall of text.

The files are derived by tests/tools/make_bad_models.py, one defect each: from the default model, and from
the tiny model of every architecture (tests/tools/make_arch_models.py) each required key of that
architecture dropped in turn and the tensor only that architecture requires."""
import pathlib
import subprocess
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "tools"))
from make_bad_models import ARCH_TENSOR, arch_variants, make_bad_models, write_variants  # noqa: E402

TINY = pathlib.Path(__file__).resolve().parent.parent / ".cache" / "models"
TINY_MODELS = {"llama": "llama3", "qwen2": "qwen2", "qwen3": "qwen3", "phi3": "phi3", "gemma3": "gemma3"}
ARCH_KEYS = ["block_count", "embedding_length", "feed_forward_length", "attention.head_count", "context_length",
             "attention.layer_norm_rms_epsilon"]

# case -> a word the error line must contain (case-insensitive), so that it names this problem.
EXPECTED = {
    "truncated": "truncated",
    "bad_magic": "magic",
    "absurd_kv_count": "count",
    "absurd_string_length": "string length",
    "offset_past_end": "past the end",
    "unknown_tensor_type": "type 99",
    "arch_gpt9": "gpt9",
    "missing_tokens": "tokenizer.ggml.tokens",
    "missing_tensor": "blk.7.ffn_down.weight",
    "wrong_shape": "shape",
    "kquant_bad_width": "not a multiple of the Q4_K block size 256",
    "kquant_past_end": "truncated",
}


@pytest.fixture(scope="module")
def bad_models(model_path, tmp_path_factory):
    paths = make_bad_models(str(model_path), str(tmp_path_factory.mktemp("bad_models")))
    assert set(paths) == set(EXPECTED)
    yield paths
    for p in paths.values():  # ~90 MB each: do not leave them for the whole session
        pathlib.Path(p).unlink(missing_ok=True)


@pytest.mark.parametrize("case", sorted(EXPECTED))
def test_bad_model_file_is_refused_with_one_clear_line(any_engine_bin, bad_models, case):
    refused_with_one_line(any_engine_bin, bad_models[case], case, EXPECTED[case])


@pytest.fixture(scope="module")
def bad_arch_models(tmp_path_factory):
    out = {}
    for arch, tiny in TINY_MODELS.items():
        src = TINY / f"tiny-{tiny}.gguf"
        if not src.exists():
            pytest.fail(f"{src} is missing: run tests/tools/make_arch_models.py (needs llama-cpp-python)")
        for case, path in write_variants(arch_variants(str(src)), str(tmp_path_factory.mktemp(arch))).items():
            out[(arch, case)] = path
    yield out
    for p in out.values():
        pathlib.Path(p).unlink(missing_ok=True)


ARCH_CASES = [(a, "no_" + k, f"{a}.{k}") for a in TINY_MODELS for k in ARCH_KEYS] + \
             [(a, "no_" + t, t) for a, t in ARCH_TENSOR.items() if t]


@pytest.mark.parametrize("arch,case,named", ARCH_CASES)
def test_each_architecture_refuses_a_file_without_a_required_key_or_tensor(any_engine_bin, bad_arch_models, arch, case,
                                                                          named):
    r = refused_with_one_line(any_engine_bin, bad_arch_models[(arch, case)], f"{arch}/{case}", named)
    assert r.returncode == 1


def refused_with_one_line(engine, model, case, expected):
    cmd = [str(engine), "--model", model, "--generate", "--prompt", "hi", "--max-tokens", "1"]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, errors="replace", timeout=20)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{case}: beeworker-engine still running after 20 s")
    err = r.stderr.strip()
    assert r.returncode > 0, f"{case}: exit status {r.returncode} (negative = killed by a signal); stderr:\n{err}"
    assert err, f"{case}: exit {r.returncode} with nothing on stderr"
    assert "\n" not in err, f"{case}: stderr has {len(err.splitlines())} lines, want one:\n{err}"
    assert expected.lower() in err.lower(), f"{case}: '{err}' does not mention '{expected}'"
    assert r.stdout == "", f"{case}: printed output for a model it could not load: {r.stdout!r}"
    return r
