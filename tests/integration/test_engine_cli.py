"""beeworker-engine's command-line modes, in the release and the sanitizer build: generation streams and
ends as asked, the two builds agree, a long prompt's result does not depend on how it is chunked or
threaded, tokenize/detokenize round-trip, bad flags are one-line errors."""
import json
import subprocess

import pytest

TIMEOUT = 120


def run(bin_, model, *args, stdin=None):
    return subprocess.run([str(bin_), "--model", str(model), *args], input=stdin, capture_output=True,
                          timeout=TIMEOUT)


def ids(out):
    """Token ids of a --generate --json run's stdout (every line but the summary)."""
    return [json.loads(x)["id"] for x in out.decode().splitlines()[:-1]]


def test_greedy_generation_is_the_same_in_both_builds(engine_bin, any_engine_bin, model_path):
    args = ("--generate", "--json", "--temperature", "0", "--max-tokens", "24", "--threads", "2",
            "--prompt", "Bees make honey because")
    ref = run(engine_bin, model_path, *args)
    got = run(any_engine_bin, model_path, *args)
    assert got.returncode == 0, got.stderr.decode(errors="replace")[-3000:]
    assert b"runtime error" not in got.stderr and b"Sanitizer" not in got.stderr, got.stderr[-3000:]
    assert ids(got.stdout) == ids(ref.stdout)
    summary = json.loads(got.stdout.decode().splitlines()[-1])
    assert summary["stop_reason"] == "MAX_TOKENS" and summary["tokens_out"] == 24


def test_long_prompt_is_the_same_whatever_the_chunking_and_threads(engine_bin, any_engine_bin, model_path, tmp_path):
    # ~670 positions: attention splits each token's context into 256-position spans and merges them, and
    # that split depends only on the position. Prefill chunks of 512, 100 and 7 tokens, on 1 or 2 threads,
    # must give bit-identical first-step logits and the same greedy tokens.
    prompt = " ".join(f"Line {i}: the bees carried pollen to hive number {i * 7 % 13}." for i in range(45))
    base = ("--generate", "--json", "--temperature", "0", "--max-tokens", "12", "--ctx", "1024", "--prompt", prompt)
    ref = run(engine_bin, model_path, *base, "--threads", "2", "--dump-logits", str(tmp_path / "ref.f32"))
    assert ref.returncode == 0, ref.stderr.decode(errors="replace")[-2000:]
    assert json.loads(ref.stdout.decode().splitlines()[-1])["prompt_tokens"] > 600
    for i, extra in enumerate((("--batch", "100", "--threads", "1"), ("--batch", "7", "--threads", "2"))):
        got = run(any_engine_bin, model_path, *base, *extra, "--dump-logits", str(tmp_path / f"{i}.f32"))
        assert got.returncode == 0, got.stderr.decode(errors="replace")[-3000:]
        assert b"runtime error" not in got.stderr and b"Sanitizer" not in got.stderr, got.stderr[-3000:]
        assert (tmp_path / f"{i}.f32").read_bytes() == (tmp_path / "ref.f32").read_bytes(), extra
        assert ids(got.stdout) == ids(ref.stdout) and len(ids(ref.stdout)) == 12, extra


def test_stop_string_ends_generation_without_emitting_it(engine_bin, model_path):
    r = run(engine_bin, model_path, "--generate", "--json", "--temperature", "0", "--max-tokens", "64",
            "--prompt", "The capital of France is", "--stop", "United")
    lines = [json.loads(x) for x in r.stdout.decode().splitlines()]
    text = "".join(x["t"] for x in lines[:-1])
    assert lines[-1]["stop_reason"] == "STOP_SEQUENCE" and lines[-1]["stop_sequence_matched"] == "United"
    assert "United" not in text and text.startswith(" Paris")


def test_seeded_sampling_is_reproducible(engine_bin, model_path):
    args = ("--generate", "--json", "--temperature", "0.9", "--top-p", "0.95", "--seed", "1234",
            "--max-tokens", "20", "--prompt", "Once upon a time")
    a, b = run(engine_bin, model_path, *args), run(engine_bin, model_path, *args)
    assert ids(a.stdout) == ids(b.stdout) and len(ids(a.stdout)) == 20


def test_tokenize_detokenize_round_trip(any_engine_bin, model_path):
    text = "Hello, world! Ünïcødé 日本語 🐝 <|im_start|>\n\tcode = 42;"
    ids = json.loads(run(any_engine_bin, model_path, "--tokenize", stdin=text.encode()).stdout)
    assert 1 in ids  # <|im_start|> parsed as the special token by default
    back = run(any_engine_bin, model_path, "--detokenize", stdin=json.dumps(ids).encode())
    assert back.returncode == 0
    assert back.stdout.decode() == text.replace("<|im_start|>", "")  # control tokens print as nothing


@pytest.mark.parametrize("args,word", [
    (("--generate",), "--prompt"),
    (("--generate", "--prompt", "x", "--max-tokens", "0"), "--max-tokens"),
    (("--generate", "--prompt", "x", "--temperature", "nan"), "--temperature"),
    (("--bench", "--threads", "-3"), "--threads"),
    (("--backend", "tpu", "--bench"), "--backend"),
    (("--frobnicate",), "unknown"),
    (("--tokenize", "extra"), "unexpected"),
])
def test_bad_flags_are_one_line_errors(engine_bin, model_path, args, word):
    r = run(engine_bin, model_path, *args)
    err = r.stderr.decode().strip()
    assert r.returncode == 2 and "\n" not in err and word in err, (r.returncode, err)


def test_missing_model_is_one_line_error(engine_bin, tmp_path):
    r = subprocess.run([str(engine_bin), "--model", str(tmp_path / "nope.gguf"), "--bench"], capture_output=True,
                       timeout=TIMEOUT)
    err = r.stderr.decode().strip()
    assert r.returncode == 1 and "\n" not in err and "nope.gguf" in err, err


def test_bench_after_a_context(engine_bin, model_path):
    # -d: both tests run after a context of D tokens (positions D..), like llama-bench -d
    r = run(engine_bin, model_path, "--bench", "-p", "16", "-n", "4", "-r", "1", "-d", "40", "--ctx", "64",
            "--threads", "1")
    assert r.returncode == 0, r.stderr.decode()
    res = json.loads(r.stdout.decode().strip().splitlines()[-1])
    assert res["depth"] == 40 and res["pp"] == 16 and res["tg"] == 4 and res["pp_tps"] > 0 and res["tg_tps"] > 0
    assert "pp16 @ d40" in r.stdout.decode()
    r = run(engine_bin, model_path, "--bench", "-p", "16", "-n", "4", "-d", "60", "--ctx", "64")
    err = r.stderr.decode()
    assert r.returncode == 1 and "exceeds the context of 64" in err, err
