"""A malformed model file makes beeworker-engine exit 1 with one line on stderr that names the problem:
never a crash, a hang, a sanitizer report or a wall of text.

The files are derived from the default model by tests/tools/make_bad_models.py, one defect each."""
import pathlib
import subprocess
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "tools"))
from make_bad_models import make_bad_models  # noqa: E402

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
    cmd = [str(any_engine_bin), "--model", bad_models[case], "--generate", "--prompt", "hi", "--max-tokens", "1"]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, errors="replace", timeout=20)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{case}: beeworker-engine still running after 20 s")
    err = r.stderr.strip()
    assert r.returncode > 0, f"{case}: exit status {r.returncode} (negative = killed by a signal); stderr:\n{err}"
    assert err, f"{case}: exit {r.returncode} with nothing on stderr"
    assert "\n" not in err, f"{case}: stderr has {len(err.splitlines())} lines, want one:\n{err}"
    assert EXPECTED[case].lower() in err.lower(), f"{case}: '{err}' does not mention '{EXPECTED[case]}'"
    assert r.stdout == "", f"{case}: printed output for a model it could not load: {r.stdout!r}"
