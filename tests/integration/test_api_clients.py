"""What real clients need from the front (issue 16): HEAD for monitors, the OpenAI client's
models.retrieve, the hive's model id everywhere, requests whose max_tokens does not fit the context, the
full u64 seed range, decode time of cancelled jobs, and streams a proxy that forwards every line can
carry."""
import http.client
import json
import socket
import threading
import time

import openai
import pytest

from harness import Worker, read_until_closed, ready_worker, wait_until

MODEL_REF = "hf:HuggingFaceTB/SmolLM2-135M-Instruct"


@pytest.fixture(scope="module")
def worker(build_dir, model_path):
    yield from ready_worker(build_dir, model_path, slots=2, extra=["--model-ref", MODEL_REF, "--ctx", "256"])


def raw(port, data, deadline_s=5):
    s = socket.create_connection(("127.0.0.1", port), timeout=deadline_s)
    s.sendall(data)
    got = read_until_closed(s, deadline_s, partial=True)
    s.close()
    return got


def events_of(w, url, timeout=60):
    with w.stream(url, timeout=timeout) as s:
        return list(s.events())


def terminal(events):
    return [e["data"] for e in events if isinstance(e["data"], dict) and e["data"]["type"] in ("end", "error")][-1]


# ---- 9. HEAD ----

@pytest.mark.parametrize("path", ["/health", "/info", "/metrics", "/v1/models", f"/v1/models/{MODEL_REF}"])
def test_head_is_get_without_a_body(worker, path):
    got_status, _, _ = worker.request("GET", path)
    # a HEAD then a GET on one connection: if HEAD carried a body, the second answer would not parse
    got = raw(worker.port, b"HEAD " + path.encode() + b" HTTP/1.1\r\nHost: x\r\n\r\n"
              b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    head, _, rest = got.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 %d" % got_status), got[:200]
    assert rest.startswith(b"HTTP/1.1 "), f"HEAD {path} sent a body: {rest[:80]!r}"


def test_head_on_a_stream_neither_takes_nor_starts_it(worker):
    job, url = worker.submit("Hello", 4)
    got = raw(worker.port, b"HEAD " + url.encode() + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert got.startswith(b"HTTP/1.1 200") and b"text/event-stream" in got, got[:300]
    assert got.endswith(b"\r\n\r\n"), got[-80:]
    assert terminal(events_of(worker, url))["type"] == "end"  # the GET still gets the whole stream
    assert raw(worker.port, b"HEAD /v1/jobs/job-nope/stream HTTP/1.1\r\nHost: x\r\n\r\n").startswith(b"HTTP/1.1 404")


# ---- 10 and 11. the model id ----

def test_the_model_ref_is_the_model_id_everywhere(worker):
    info = worker.info()
    assert info["model_id"] == MODEL_REF and info["model_name"] and info["model_name"] != MODEL_REF
    c = openai.OpenAI(base_url=f"http://127.0.0.1:{worker.port}/v1", api_key="x", timeout=30, max_retries=0)
    try:
        assert [m.id for m in c.models.list().data] == [MODEL_REF]
        assert c.models.retrieve(MODEL_REF).id == MODEL_REF
        with pytest.raises(openai.NotFoundError):
            c.models.retrieve("some-other-model")
    finally:
        c.close()
    status, body, _ = worker.request("POST", "/v1/completions", {"prompt": "Hi", "max_tokens": 2})
    assert status == 200 and body["model"] == MODEL_REF, body  # no model asked for: ours is named
    status, body, _ = worker.request("GET", "/v1/models/hf%3AHuggingFaceTB%2FSmolLM2-135M-Instruct")
    assert status == 200 and body["id"] == MODEL_REF
    _, url = worker.submit("Hello", 2)
    started = events_of(worker, url)[0]["data"]
    assert started["type"] == "started" and started["model"] == MODEL_REF


def test_without_a_model_ref_the_id_is_a_slug_of_the_file_name(build_dir, model_path):
    with Worker(build_dir, model_path, slots=1) as w:
        w.wait_ready()
        want = model_path.name.lower()[:-len(".gguf")]
        assert w.info()["model_id"] == want
        assert " " not in want and [m["id"] for m in w.request("GET", "/v1/models")[1]["data"]] == [want]


# ---- 7. seeds are u64 ----

@pytest.mark.parametrize("seed", [2**63 - 1, 2**63, 2**64 - 1])
def test_every_u64_seed_is_accepted_and_reported(worker, seed):
    _, url = worker.submit("The weather today", 6, temperature=1.0, seed=seed)
    events = events_of(worker, url)
    assert events[0]["data"]["seed"] == seed
    _, again = worker.submit("The weather today", 6, temperature=1.0, seed=seed)
    assert [e["data"] for e in events_of(worker, again)][1:-2] == [e["data"] for e in events][1:-2], \
        "the same seed must draw the same tokens"
    status, body, _ = worker.request("POST", "/v1/completions", {"prompt": "Hi", "max_tokens": 2, "seed": seed})
    assert status == 200, body


def test_seeds_outside_u64_are_a_field_error(worker):
    for literal in [b"18446744073709551616", b"-1", b"99999999999999999999999999"]:
        body = b'{"prompt":"Hi","max_tokens":2,"seed":' + literal + b"}"
        status, resp, _ = worker.request("POST", "/v1/inference", body)
        assert status == 400 and [(e["field"], e["constraint"]) for e in resp["errors"]] == [("seed", "range")], resp
    # a big integer elsewhere is not taken for the seed
    status, resp, _ = worker.request("POST", "/v1/chat/completions",
                                     b'{"messages":[{"role":"user","content":"Hi"}],"stream_options":{"seed":'
                                     b'18446744073709551615},"max_tokens":2}')
    assert status == 400 and resp["error"]["param"] == "seed", resp


# ---- 12. decode time of a cancelled job ----

def test_a_cancelled_job_reports_the_time_it_decoded(worker):
    job, url = worker.submit("Once upon a time", 240)
    with worker.stream(url, timeout=60) as s:
        events = []
        for e in s.events():
            events.append(e)
            if len(events) == 12:
                assert worker.request("DELETE", f"/v1/jobs/{job}")[0] == 202
    end = terminal(events)
    assert end["stop_reason"] == "CANCELLED" and end["tokens_out"] >= 11, end
    assert end["decode_time_ms"] > 0, end


# ---- 6. max_tokens that does not fit the context (the module's worker has --ctx 256) ----

LONG_PROMPT = "The quick brown fox jumps over the lazy dog. " * 18  # ~190 tokens


def test_native_api_clamps_max_tokens_to_the_context_and_says_so(worker):
    _, url = worker.submit(LONG_PROMPT, 200)
    events = events_of(worker, url)
    end = terminal(events)
    n_tokens = len([e for e in events if isinstance(e["data"], dict) and e["data"]["type"] == "token"])
    assert end["type"] == "end" and "max_tokens_clamped_to" in end, end
    assert 0 < end["max_tokens_clamped_to"] < 200 and n_tokens <= end["max_tokens_clamped_to"], end
    _, url = worker.submit("Hello", 20)
    assert "max_tokens_clamped_to" not in terminal(events_of(worker, url)), "a request that fits is not clamped"


def test_openai_answers_400_when_prompt_and_max_tokens_exceed_the_context(worker):
    c = openai.OpenAI(base_url=f"http://127.0.0.1:{worker.port}/v1", api_key="x", timeout=30, max_retries=0)
    try:
        for stream in (False, True):
            with pytest.raises(openai.BadRequestError) as e:
                r = c.completions.create(model="m", prompt=LONG_PROMPT, max_tokens=200, stream=stream)
                list(r) if stream else None
            assert e.value.body["code"] == "context_length_exceeded", e.value.body
            assert "maximum context length is 256 tokens" in e.value.body["message"]
        with pytest.raises(openai.BadRequestError):
            c.chat.completions.create(model="m", messages=[{"role": "user", "content": LONG_PROMPT}], max_tokens=200)
        # without max_tokens a chat generates to the end of the context, as OpenAI's does
        r = c.chat.completions.create(model="m", messages=[{"role": "user", "content": LONG_PROMPT}])
        assert r.choices[0].finish_reason in ("length", "stop")
        r = c.completions.create(model="m", prompt=LONG_PROMPT, max_tokens=10)
        assert r.usage.completion_tokens == 10
    finally:
        c.close()


# ---- 13. streams for rbee's job client ----

def rbee_job_client_lines(raw_body):
    """What rbee's job client (bin/99_shared_crates/job-client) hands its caller: every line trimmed,
    "data: " or "data:" stripped, empty lines skipped, everything else passed on, until [DONE]."""
    out = []
    for line in raw_body.decode().split("\n"):
        line = line.strip()
        data = line[6:] if line.startswith("data: ") else line[5:] if line.startswith("data:") else line
        if data:
            out.append(data)
            if data == "[DONE]":
                break
    return out


def raw_stream(w, url, deadline_s=30):
    conn = http.client.HTTPConnection("127.0.0.1", w.port, timeout=deadline_s)
    try:
        conn.request("GET", url, headers=w.headers())
        r = conn.getresponse()
        assert r.status == 200
        return r.read()
    finally:
        conn.close()


def test_rbee_operation_form_streams_only_lines_its_job_client_understands(worker):
    status, resp, _ = worker.request("POST", "/v1/jobs", {"operation": "infer", "hive_id": "localhost",
                                                         "prompt": "Hello", "max_tokens": 5, "temperature": 0})
    assert status == 200, resp
    body = raw_stream(worker, resp["sse_url"])
    assert not [x for x in body.split(b"\n") if x.startswith((b"id:", b"retry:"))], body[:200]
    lines = rbee_job_client_lines(body)
    assert lines[-1] == "[DONE]" and all(json.loads(x) for x in lines[:-1]), lines
    assert [json.loads(x)["type"] for x in lines[:-1]] == ["started"] + ["token"] * 5 + ["end"]
    # ?ids=1 brings the ids back for a client that resumes; ?ids=0 drops them from any stream
    status, resp, _ = worker.request("POST", "/v1/jobs", {"operation": "infer", "prompt": "Hello", "max_tokens": 2})
    assert b"\nid: 0\n" in b"\n" + raw_stream(worker, resp["sse_url"] + "?ids=1")
    _, url = worker.submit("Hello", 2)
    assert b"\nid: 0\n" in b"\n" + raw_stream(worker, url), "the native form keeps its ids by default"
    _, url = worker.submit("Hello", 2)
    assert not [x for x in raw_stream(worker, url + "?ids=0").split(b"\n") if x.startswith((b"id:", b"retry:"))]


def test_without_ids_keep_alives_are_blank_lines(build_dir):
    with Worker(build_dir, spawn=False, extra=["--engine-wait", "7"]) as w:
        status, resp, _ = w.request("POST", "/v1/jobs", {"operation": "infer", "prompt": "Hello", "max_tokens": 2})
        body = raw_stream(w, resp["sse_url"], deadline_s=20)  # no engine: keep-alives, then QUEUE_TIMEOUT
        before = body[:body.index(b"data:")]
        assert b"keep-alive" not in body and before and before.strip() == b"", body[:200]
        lines = rbee_job_client_lines(body)
        assert json.loads(lines[-2])["code"] == "QUEUE_TIMEOUT" and lines[-1] == "[DONE]", lines


# ---- 8. browsers: CORS, SSE retry and the end of a stream ----

ORIGIN = "http://ui.example:5173"


def test_cors_is_off_by_default(worker):
    got = raw(worker.port, b"OPTIONS /v1/inference HTTP/1.1\r\nHost: x\r\nOrigin: " + ORIGIN.encode() +
              b"\r\nAccess-Control-Request-Method: POST\r\nConnection: close\r\n\r\n")
    assert not got.startswith(b"HTTP/1.1 2") and b"access-control-allow-origin" not in got.lower(), got[:300]


def test_cors_preflight_and_responses_for_an_allowed_origin(build_dir):
    with Worker(build_dir, spawn=False, local_mode=False, token="tok-cors", extra=["--cors-origin", ORIGIN]) as w:
        pre = raw(w.port, b"OPTIONS /v1/inference HTTP/1.1\r\nHost: x\r\nOrigin: " + ORIGIN.encode() +
                  b"\r\nAccess-Control-Request-Method: POST\r\nAccess-Control-Request-Headers: authorization, "
                  b"content-type\r\nConnection: close\r\n\r\n").lower()
        assert pre.startswith(b"http/1.1 204"), pre[:300]  # no token: browsers send none with a preflight
        assert b"access-control-allow-origin: " + ORIGIN.encode() in pre
        assert b"authorization" in pre.split(b"access-control-allow-headers: ")[1].split(b"\r\n")[0]
        assert b"post" in pre.split(b"access-control-allow-methods: ")[1].split(b"\r\n")[0]
        status, _, headers = w.request("GET", "/info", headers={"Origin": ORIGIN})
        h = {k.lower(): v for k, v in headers.items()}
        assert status == 200 and h["access-control-allow-origin"] == ORIGIN and "Origin" in h["vary"]
        status, _, headers = w.request("GET", "/info", headers={"Origin": "http://evil.example"})
        assert "access-control-allow-origin" not in {k.lower() for k in headers}
        other = raw(w.port, b"OPTIONS /v1/inference HTTP/1.1\r\nHost: x\r\nOrigin: http://evil.example\r\n"
                    b"Access-Control-Request-Method: POST\r\nConnection: close\r\n\r\n")
        assert b"access-control-allow-origin" not in other.lower()


def test_a_reconnect_after_the_whole_stream_gets_204(worker):
    _, url = worker.submit("Hello", 5)
    body = raw_stream(worker, url)
    assert body.startswith(b"retry: 1000\n\n"), body[:40]  # well inside the 3 s reconnect grace
    ids = [int(x[4:]) for x in body.decode().split("\n") if x.startswith("id: ")]
    conn = http.client.HTTPConnection("127.0.0.1", worker.port, timeout=10)
    try:
        conn.request("GET", url, headers={"Last-Event-ID": str(ids[-1])})
        r = conn.getresponse()
        assert r.status == 204 and r.read() == b"", r.status
        conn.request("GET", url, headers={"Last-Event-ID": str(ids[-2])})  # one token not yet seen
        r = conn.getresponse()
        rest = r.read()
        assert r.status == 200 and b"id: %d\n" % ids[-1] in rest and b"[DONE]" in rest
    finally:
        conn.close()


def test_a_client_that_reconnects_after_two_seconds_keeps_its_job(build_dir, model_path):
    """A browser that ignored retry: comes back after its default 3 s; the default grace is 3 s. A long
    job keeps writing, so the front notices the disconnect at once and the grace starts then."""
    with Worker(build_dir, model_path, slots=1, extra=["--threads", "1"]) as w:
        w.wait_ready()
        job, url = w.submit("Once upon a time", 1200)
        s = w.stream(url, timeout=30)
        first = next(e for e in s.events() if isinstance(e["data"], dict) and e["data"]["type"] == "token")
        s.close()
        time.sleep(2)
        with w.stream(url, headers={"Last-Event-ID": str(first["id"])}, timeout=60) as again:
            end = terminal(list(again.events()))
        assert end["stop_reason"] != "CANCELLED", "the job was cancelled before its client could come back"
