"""Exact speculative decoding (issue 14): with speculation on, every job's token ids, text and stop reason
are those of plain decoding (with every draft sent whole, --spec-fixed, and with the adaptive draft
lengths), greedy and sampled at several temperatures, 8 jobs at a time or one, with a
predicted output that is right, partly right or wrong, and with stop strings and max_tokens falling inside
an accepted run of drafts. Every run goes through the engine's scheduler (`--generate --prompt-file`), so
this is the daemon's code path without the sockets; engine_bin is the sanitizer build in the suite's
second pass."""
import json
import os
import subprocess

import pytest

TIMEOUT = 85
# The sanitizer build runs the model about ten times slower: the same 52 jobs, shorter, and smaller
# subsets for the tests after the first, so the second pass stays within its budget.
SANITIZED = os.environ.get("BW_SANITIZED") == "1"
TOKENS = 12 if SANITIZED else 40

PASSAGES = [
    "The hive keeps a steady temperature of about thirty-five degrees, even when the air outside is cold.",
    "def mean(xs):\n    total = 0\n    for x in xs:\n        total += x\n    return total / len(xs)\n",
    '{"name": "hive-1", "bees": 4200, "queen": true}, {"name": "hive-2", "bees": 3900, "queen": true}',
    "Line one of the poem. Line two of the poem. Line three of the poem. Line four of the poem.",
    "Worker bees clean cells, feed larvae, build comb, guard the entrance and forage for nectar.",
    "for i in range(10):\n    print(i * i)\nfor j in range(5):\n    print(j + 1)\n",
    "Monday: pollen. Tuesday: nectar. Wednesday: pollen. Thursday: nectar. Friday: water.",
]
FREE = [
    "Once upon a time", "Bees make honey because", "The capital of France is", "In the year 2050, cities",
    "My favourite recipe is", "The ocean at night", "A good teacher", "Why do leaves change colour?",
    "The first rule of programming", "Yesterday I went to the market and",
]
QUESTIONS = [
    "What is the capital of Italy? Answer with one word.", "Write a haiku about bees.",
    "List three primary colours.", "Explain recursion in two sentences.",
    "Write a Python function that reverses a string.", "What is 12 times 12?",
]
SETTINGS = [
    {"temperature": 0},
    {"temperature": 0.7, "seed": 11},
    {"temperature": 1.0, "top_p": 0.9, "seed": 12345},
    {"temperature": 1.3, "top_k": 40, "seed": 7},
    {"temperature": 0.8, "min_p": 0.05, "repetition_penalty": 1.1, "seed": 99},
]


def prompts():
    """52 jobs: repetitive text to copy (plain and chat), free-form starts, chat questions; each with one of
    the sampling settings in turn."""
    jobs = []
    for p in PASSAGES:
        jobs.append({"prompt": f"Copy this text exactly, twice:\n{p}\n\nCopy:\n{p}\n"})
        jobs.append({"prompt": f"Repeat the following text word for word.\n\n{p}", "chat": True})
        jobs.append({"prompt": f"Summarise this, quoting it: \"{p}\"", "chat": True})
        jobs.append({"prompt": f"{p}\n{p}\n"})
    jobs += [{"prompt": p} for p in FREE]
    jobs += [{"prompt": q, "chat": True} for q in QUESTIONS]
    jobs += [{"prompt": f"{p} {p} {p}"} for p in FREE[:6]]
    jobs += [{"prompt": "Count: 1, 2, 3, 4, 5, 6,"}, {"prompt": "a b c d e f g h i j k l m n o p"}]
    for i, j in enumerate(jobs):
        j.update(SETTINGS[i % len(SETTINGS)])
        j["max_tokens"] = TOKENS
    assert len(jobs) >= 50
    return jobs


def run(engine_bin, model_path, tmp_path, jobs, spec, slots, name, fixed=True, timeout=TIMEOUT):
    f = tmp_path / f"{name}.jsonl"
    f.write_text("".join(json.dumps(j) + "\n" for j in jobs))
    r = subprocess.run([str(engine_bin), "--model", str(model_path), "--generate", "--prompt-file", str(f),
                        "--spec-max", str(spec), *(["--spec-fixed"] if fixed else []), "--slots", str(slots),
                        "--threads", "2", "--ctx", "1024"],
                       capture_output=True, timeout=timeout)
    err = r.stderr.decode(errors="replace")
    assert r.returncode == 0, err[-3000:]
    assert "runtime error" not in err and "Sanitizer" not in err, err[-3000:]
    lines = [json.loads(x) for x in r.stdout.decode().splitlines()]
    assert lines[-1]["done"] and lines[-1]["finished"] == len(jobs)
    assert [x["i"] for x in lines[:-1]] == list(range(len(jobs)))
    return lines[:-1], lines[-1]


def same(a, b):
    """The fields plain decoding decides: ids, text, stop reason, stop string, count."""
    keys = ("ids", "text", "stop_reason", "stop_sequence_matched", "tokens_out")
    return {k: a.get(k) for k in keys} == {k: b.get(k) for k in keys}


@pytest.fixture(scope="module")
def reference(engine_bin, model_path, tmp_path_factory):
    jobs = prompts()
    # a fixture is not under the per-test deadline: the reference may take longer on a loaded machine
    out, _ = run(engine_bin, model_path, tmp_path_factory.mktemp("ref"), jobs, 0, 8, "ref", timeout=240)
    assert sum(len(x["ids"]) for x in out) > 0.6 * TOKENS * len(jobs)
    assert all(x["pred_drafted"] == 0 and x["lookup_drafted"] == 0 for x in out)  # --spec-max 0 drafts nothing
    return jobs, out


def test_speculation_gives_plain_decodings_tokens_with_8_concurrent_jobs(engine_bin, model_path, tmp_path, reference):
    jobs, ref = reference
    out, total = run(engine_bin, model_path, tmp_path, jobs, 8, 8, "spec")
    bad = [i for i, (a, b) in enumerate(zip(ref, out)) if not same(a, b)]
    assert not bad, [(jobs[i], ref[i]["ids"], out[i]["ids"]) for i in bad[:3]]
    # the comparison means something only if drafts were verified and many accepted
    assert total["lookup_accepted"] >= (50 if SANITIZED else 200), total
    assert total["lookup_drafted"] > total["lookup_accepted"], total  # and some rejected


def test_adaptive_draft_lengths_give_plain_decodings_tokens_too(engine_bin, model_path, tmp_path, reference):
    # the default: each job sends the part of its draft that pays (fewer drafts, same tokens)
    jobs, ref = reference
    pick = list(range(0, len(jobs), 3 if SANITIZED else 1))
    out, total = run(engine_bin, model_path, tmp_path, [jobs[i] for i in pick], 8, 8, "adaptive", fixed=False)
    bad = [i for i, o in zip(pick, out) if not same(ref[i], o)]
    assert not bad, [(jobs[i], ref[i]["ids"], o["ids"]) for i in bad[:3]]
    assert total["lookup_accepted"] > 0, total


def test_speculation_one_job_at_a_time_and_a_longer_draft(engine_bin, model_path, tmp_path, reference):
    jobs, ref = reference
    # the prompts whose output repeats text (most drafts to verify), and some that do not
    pick = [1, 5, 11, 15, 16, 20, 21, 22, 25, 26, 35, 45] + ([] if SANITIZED else [0, 9, 28, 33, 38, 44, 48, 51])
    out, total = run(engine_bin, model_path, tmp_path, [jobs[i] for i in pick], 16, 1, "one")
    bad = [i for i, o in zip(pick, out) if not same(ref[i], o)]
    assert not bad, [(jobs[i], ref[i]["ids"]) for i in bad[:3]]
    assert total["lookup_accepted"] >= (10 if SANITIZED else 40), total


def mutate(text):
    """Partly right: every fifth word replaced, so the prediction and the output part and meet again."""
    words = text.split(" ")
    return " ".join("zebra" if i % 5 == 2 else w for i, w in enumerate(words))


def test_prediction_right_partly_right_and_wrong_changes_no_token(engine_bin, model_path, tmp_path, reference):
    jobs, ref = reference
    pick = [i for i in range(0, len(jobs), 4)][:6 if SANITIZED else 14]
    variants = []
    for i in pick:
        text = ref[i]["text"]
        variants += [dict(jobs[i], prediction=text), dict(jobs[i], prediction=mutate(text)),
                     dict(jobs[i], prediction="Completely unrelated words about trains, rivers and " * 3)]
    out, total = run(engine_bin, model_path, tmp_path, variants, 8, 8, "pred")
    for k, o in enumerate(out):
        i = pick[k // 3]
        assert same(ref[i], o), (k % 3, jobs[i], ref[i]["ids"], o["ids"])
    right, part, wrong = out[0::3], out[1::3], out[2::3]
    n_right = sum(len(o["ids"]) for o in right)
    acc = lambda xs: sum(o["pred_accepted"] for o in xs)  # noqa: E731
    # a right prediction is taken nearly whole; a wrong one nearly never
    assert acc(right) >= 0.75 * (n_right - len(right)), total
    assert acc(part) < acc(right) and acc(wrong) < 0.2 * acc(right), (acc(right), acc(part), acc(wrong))
    assert all(o["pred_accepted"] <= o["pred_drafted"] for o in out)


def test_stop_string_and_max_tokens_inside_an_accepted_run(engine_bin, model_path, tmp_path, reference):
    # With the whole output given as prediction, the job verifies long runs of drafts; a stop string or the
    # max_tokens limit that falls in the middle of such a run must end the job where plain decoding does,
    # and no token past it may be published.
    jobs, ref = reference
    cases = []
    for i in ((0, 8, 16) if SANITIZED else (0, 4, 8, 12, 16)):
        text, ids = ref[i]["text"], ref[i]["ids"]
        words = [w for w in text.split() if len(w) > 3]
        assert words, text
        stop = words[len(words) // 2][:6]
        base = dict(jobs[i], prediction=text)
        cases += [dict(base, stop=[stop]), dict(base, max_tokens=len(ids) // 2 + 1)]
    ref2, _ = run(engine_bin, model_path, tmp_path, cases, 0, 8, "stops-ref")
    out, total = run(engine_bin, model_path, tmp_path, cases, 8, 8, "stops")
    for c, a, b in zip(cases, ref2, out):
        assert same(a, b), (c, a, b)
    assert any(o["stop_reason"] == "STOP_SEQUENCE" for o in out)
    assert all(o["stop_reason"] == "MAX_TOKENS" for o in out[1::2])
    assert total["pred_accepted"] > 0
