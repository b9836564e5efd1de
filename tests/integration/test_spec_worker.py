"""Speculative decoding through the worker pair (issue 14): the `prediction` field on the native and the
OpenAI routes changes no token and is reported (end event, usage.completion_tokens_details, /metrics,
/info); bad predictions are clear 400s; an engine killed with SIGKILL in the middle of a speculating job
resumes it exactly. The reference is a worker started with --spec-max 0 (plain decoding)."""
import json
import re

import pytest

from harness import SANITIZED, Worker, ready_worker
from test_resume import assert_exact, kill_engine_after, read_events, terminal_of, tokens_of

NO_GIVE_UP = ["--engine-max-crashes", "0"]
CODE = "\n".join(f"def f{i}(x):\n    return x * {i} + {i * i}\n" for i in range(12))
COPY = "Copy this Python code exactly, changing nothing:\n\n" + CODE
GREEDY = {"temperature": 0}
SAMPLED = {"temperature": 0.8, "seed": 4321}


@pytest.fixture(scope="module")
def plain(build_dir, model_path):
    yield from ready_worker(build_dir, model_path, slots=2, extra=["--spec-max", "0"])


@pytest.fixture(scope="module")
def spec(build_dir, model_path):
    yield from ready_worker(build_dir, model_path, slots=2, extra=["--spec-max", "8"])


def text_of(events):
    return "".join(e["data"]["t"] for e in tokens_of(events))


def metric(body, name, source):
    m = re.search(rf'^{name}{{source="{source}"}} (\S+)$', body, re.M)
    assert m, f"{name}{{source={source}}} missing"
    return float(m.group(1))


@pytest.mark.parametrize("params", [GREEDY] if SANITIZED else [GREEDY, SAMPLED],
                         ids=["greedy"] if SANITIZED else ["greedy", "sampled"])
def test_prediction_on_the_native_route_changes_no_token_and_is_reported(plain, spec, params):
    ref_text, ref_events = plain.run(COPY, 120, **params)
    assert len(tokens_of(ref_events)) > 60
    # right, then wrong: same tokens either way; the end event counts the drafts
    _, right = spec.run(COPY, 120, prediction={"type": "content", "content": ref_text}, **params)
    _, wrong = spec.run(COPY, 120, prediction={"type": "content", "content": "nothing like it " * 20}, **params)
    for events in (right, wrong):
        assert_exact(events, ref_events, f"{params} with a prediction")
    end_r, end_w = terminal_of(right), terminal_of(wrong)
    # how much of a draft is sent depends on measured step times (adaptive), so only the order is certain
    assert end_r["accepted_prediction_tokens"] > 0, end_r
    assert end_w["accepted_prediction_tokens"] < end_r["accepted_prediction_tokens"], (end_r, end_w)
    assert "accepted_prediction_tokens" not in terminal_of(ref_events)  # no prediction, no such field


def test_openai_prediction_reports_usage_and_counters(plain, spec):
    body = {"model": "m", "messages": [{"role": "user", "content": COPY}], "max_tokens": 100, "temperature": 0}
    st, ref, _ = plain.request("POST", "/v1/chat/completions", body, timeout=60)
    assert st == 200, ref
    content = ref["choices"][0]["message"]["content"]
    assert ref["usage"]["completion_tokens_details"] == {"accepted_prediction_tokens": 0,
                                                         "rejected_prediction_tokens": 0}
    st, got, _ = spec.request("POST", "/v1/chat/completions",
                              dict(body, prediction={"type": "content", "content": content}), timeout=60)
    assert st == 200, got
    assert got["choices"][0]["message"]["content"] == content
    assert got["usage"]["completion_tokens"] == ref["usage"]["completion_tokens"]
    det = got["usage"]["completion_tokens_details"]
    assert det["accepted_prediction_tokens"] > 0, det
    # /v1/completions takes it too (content as one text part)
    cbody = {"model": "m", "prompt": COPY, "max_tokens": 40, "temperature": 0}
    st, cref, _ = plain.request("POST", "/v1/completions", cbody, timeout=60)
    assert st == 200, cref
    ctext = cref["choices"][0]["text"]
    st, cgot, _ = spec.request("POST", "/v1/completions", dict(
        cbody, prediction={"type": "content", "content": [{"type": "text", "text": ctext}]}), timeout=60)
    assert st == 200 and cgot["choices"][0]["text"] == ctext, cgot
    assert cgot["usage"]["completion_tokens_details"]["accepted_prediction_tokens"] > 0
    # the counters, by source
    st, text, _ = spec.request("GET", "/metrics")
    text = text.decode() if isinstance(text, bytes) else json.dumps(text)
    assert metric(text, "beeworker_spec_accepted_tokens_total", "prediction") >= det["accepted_prediction_tokens"]
    assert metric(text, "beeworker_spec_draft_tokens_total", "prediction") >= \
        metric(text, "beeworker_spec_accepted_tokens_total", "prediction")
    assert 0 < metric(text, "beeworker_spec_acceptance_ratio", "prediction") <= 1
    info = spec.info()["speculation"]
    assert info["prediction"]["accepted"] >= det["accepted_prediction_tokens"]
    assert info["prediction"]["drafted"] == info["prediction"]["accepted"] + info["prediction"]["rejected"]
    assert set(info) == {"prediction", "lookup"}


@pytest.mark.parametrize("route", ["/v1/inference", "/v1/chat/completions"])
@pytest.mark.parametrize("prediction,field", [
    ("just a string", "prediction"),
    ({"type": "text", "content": "x"}, "prediction.type"),
    ({"content": "x"}, "prediction.type"),
    ({"type": "content", "content": 42}, "prediction.content"),
    ({"type": "content", "content": [{"type": "image_url"}]}, "prediction.content"),
    ({"type": "content", "content": "x" * 32769}, "prediction.content"),
    ({"type": "content", "content": "a\u0000b"}, "prediction.content"),
])
def test_bad_prediction_is_a_400_naming_the_field(spec, route, prediction, field):
    if route == "/v1/inference":
        body = {"prompt": "hi", "max_tokens": 4, "prediction": prediction}
    else:
        body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4,
                "prediction": prediction}
    st, resp, _ = spec.request("POST", route, body)
    assert st == 400, resp
    assert field in json.dumps(resp), resp


@pytest.mark.parametrize("params", [GREEDY, SAMPLED], ids=["greedy", "sampled"])
def test_kill_9_in_the_middle_of_a_speculating_job_resumes_exactly(plain, build_dir, model_path, params):
    ref_text, ref_events = plain.run(COPY, 150, **params)
    n = len(tokens_of(ref_events))
    assert n > 80, "the reference run is too short to kill the engine in the middle"
    with Worker(build_dir, model_path, slots=2, extra=NO_GIVE_UP + ["--spec-max", "8"]) as w:
        w.wait_ready()
        state, on_event = kill_engine_after(w, 40)
        _, url = w.submit(COPY, 150, prediction={"type": "content", "content": ref_text}, **params)
        out = {}
        read_events(w, url, out, 0, on_event=on_event)
        events = out[0]
        assert isinstance(events, list), events
        assert state["killed_ns"], "the engine was not killed"
        assert_exact(events, ref_events, f"{params} speculating job killed at token 40")
        info = w.info()
        assert info["engine"]["restarts"] == 1 and info["resume"]["jobs_resumed"] == 1
        # the resumed run speculated too: its DONE reports accepted prediction tokens
        assert terminal_of(events)["accepted_prediction_tokens"] > 0
