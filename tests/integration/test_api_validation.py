"""Request validation of SPEC §3.2 and of the OpenAI routes: every field rule, both body shapes, all
failures listed at once, 413/415, and a table of hostile requests (bad JSON, wrong types, out-of-range
values, huge strings, deep nesting, invalid UTF-8, wrong methods), each checked for its status and body;
afterwards the front still runs a normal job. Runs without an engine where no job has to run."""
import http.client
import json
import socket

import pytest

from harness import Worker, ready_worker

OK = {"prompt": "Hello", "max_tokens": 4}


@pytest.fixture(scope="module")
def front(build_dir, model_path):
    yield from ready_worker(build_dir, model_path, slots=2, extra=["--max-body", "131072"])


def post_raw(w, path, data, ctype="application/json", method="POST"):
    conn = http.client.HTTPConnection("127.0.0.1", w.port, timeout=10)
    try:
        headers = {"Content-Type": ctype} if ctype else {}
        conn.request(method, path, body=data, headers=headers)
        r = conn.getresponse()
        raw = r.read()
        return r.status, json.loads(raw) if raw else None
    finally:
        conn.close()


def errors_of(body):
    return {(e["field"], e["constraint"]) for e in body["errors"]}


def with_(**kw):
    b = dict(OK)
    for k, v in kw.items():
        if v is DEL:
            b.pop(k, None)
        else:
            b[k] = v
    return json.dumps(b).encode()


DEL = object()
NEST = b'{"prompt":"x","max_tokens":1,"stop":' + b"[" * 5000 + b"]" * 5000 + b"}"
BIG = "x" * 32769

# (name, path, body bytes, content type, status, check(body)); the check may be a set of (field,
# constraint) pairs that must be exactly the listed failures, or an error code.
TABLE = [
    ("empty body", "/v1/inference", b"", "application/json", 400, "INVALID_JSON"),
    ("not json", "/v1/inference", b"prompt=hi", "application/json", 400, "INVALID_JSON"),
    ("truncated json", "/v1/inference", b'{"prompt":"hi","max_tokens":', "application/json", 400, "INVALID_JSON"),
    ("trailing garbage", "/v1/inference", b'{"prompt":"hi","max_tokens":3} x', "application/json", 400, "INVALID_JSON"),
    ("array body", "/v1/inference", b'[1,2]', "application/json", 400, "INVALID_JSON"),
    ("string body", "/v1/inference", b'"hi"', "application/json", 400, "INVALID_JSON"),
    ("null body", "/v1/inference", b"null", "application/json", 400, "INVALID_JSON"),
    ("NaN literal", "/v1/inference", b'{"prompt":"hi","max_tokens":3,"temperature":NaN}', "application/json", 400,
     "INVALID_JSON"),
    ("duplicate keys", "/v1/inference", b'{"prompt":"a","prompt":"b","max_tokens":3}', "application/json", 400,
     "INVALID_JSON"),
    ("invalid utf-8 in prompt", "/v1/inference", b'{"prompt":"a\xff\xfe","max_tokens":3}', "application/json", 400,
     "INVALID_JSON"),
    ("overlong utf-8", "/v1/inference", b'{"prompt":"\xc0\xaf","max_tokens":3}', "application/json", 400,
     "INVALID_JSON"),
    ("lone surrogate escape", "/v1/inference", b'{"prompt":"\\ud800","max_tokens":3}', "application/json", 400,
     "INVALID_JSON"),
    ("invalid utf-8 after escape", "/v1/inference", b'{"prompt":"a\\u00\xd3\xbb0b\x02,"max"0"}',
     "application/json", 400, "INVALID_JSON"),
    ("deep nesting", "/v1/inference", NEST, "application/json", 400, "INVALID_JSON"),
    ("huge integer", "/v1/inference", b'{"prompt":"a","max_tokens":99999999999999999999999}', "application/json",
     400, "INVALID_JSON"),
    ("missing prompt", "/v1/inference", with_(prompt=DEL), None, 400, {("prompt", "required")}),
    ("missing max_tokens", "/v1/inference", with_(max_tokens=DEL), None, 400, {("max_tokens", "required")}),
    ("prompt number", "/v1/inference", with_(prompt=5), None, 400, {("prompt", "type")}),
    ("prompt null", "/v1/inference", with_(prompt=None), None, 400, {("prompt", "type")}),
    ("prompt empty", "/v1/inference", with_(prompt=""), None, 400, {("prompt", "length")}),
    ("prompt too long", "/v1/inference", with_(prompt=BIG), None, 400, {("prompt", "length")}),
    ("prompt with NUL", "/v1/inference", with_(prompt="a\u0000b"), None, 400, {("prompt", "format")}),
    ("max_tokens zero", "/v1/inference", with_(max_tokens=0), None, 400, {("max_tokens", "range")}),
    ("max_tokens too big", "/v1/inference", with_(max_tokens=2049), None, 400, {("max_tokens", "range")}),
    ("max_tokens float", "/v1/inference", with_(max_tokens=3.5), None, 400, {("max_tokens", "type")}),
    ("max_tokens string", "/v1/inference", with_(max_tokens="3"), None, 400, {("max_tokens", "type")}),
    ("temperature negative", "/v1/inference", with_(temperature=-0.1), None, 400, {("temperature", "range")}),
    ("temperature above 2", "/v1/inference", with_(temperature=2.01), None, 400, {("temperature", "range")}),
    ("temperature bool", "/v1/inference", with_(temperature=True), None, 400, {("temperature", "type")}),
    ("top_p above 1", "/v1/inference", with_(top_p=1.5), None, 400, {("top_p", "range")}),
    ("top_k negative", "/v1/inference", with_(top_k=-1), None, 400, {("top_k", "range")}),
    ("top_k float", "/v1/inference", with_(top_k=1.5), None, 400, {("top_k", "type")}),
    ("min_p negative", "/v1/inference", with_(min_p=-1), None, 400, {("min_p", "range")}),
    ("repetition_penalty 3", "/v1/inference", with_(repetition_penalty=3), None, 400,
     {("repetition_penalty", "range")}),
    ("seed negative", "/v1/inference", with_(seed=-5), None, 400, {("seed", "range")}),
    ("seed string", "/v1/inference", with_(seed="5"), None, 400, {("seed", "type")}),
    ("five stop strings", "/v1/inference", with_(stop=["a", "b", "c", "d", "e"]), None, 400, {("stop", "max_items")}),
    ("empty stop string", "/v1/inference", with_(stop=[""]), None, 400, {("stop", "length")}),
    ("stop of 101 bytes", "/v1/inference", with_(stop="s" * 101), None, 400, {("stop", "length")}),
    ("stop number", "/v1/inference", with_(stop=[1]), None, 400, {("stop", "type")}),
    ("stop object", "/v1/inference", with_(stop={"a": 1}), None, 400, {("stop", "type")}),
    ("unknown operation", "/v1/inference", with_(operation="train"), None, 400, {("operation", "enum")}),
    ("operation number", "/v1/jobs", with_(operation=1), None, 400, {("operation", "enum")}),
    ("everything wrong at once", "/v1/jobs",
     json.dumps({"prompt": 1, "max_tokens": -1, "temperature": 9, "top_p": -1, "top_k": "x", "stop": 7,
                 "seed": 1.5, "min_p": 4, "repetition_penalty": "y", "operation": "x"}).encode(), None, 400,
     {("prompt", "type"), ("max_tokens", "range"), ("temperature", "range"), ("top_p", "range"), ("top_k", "type"),
      ("stop", "type"), ("seed", "type"), ("min_p", "range"), ("repetition_penalty", "type"), ("operation", "enum")}),
    ("wrong content type", "/v1/inference", with_(), "text/plain", 415, "UNSUPPORTED_MEDIA_TYPE"),
    ("form content type", "/v1/jobs", with_(), "application/x-www-form-urlencoded", 415, "UNSUPPORTED_MEDIA_TYPE"),
    ("json-ish content type", "/v1/inference", with_(), "application/jsonx", 415, "UNSUPPORTED_MEDIA_TYPE"),
    ("body over --max-body", "/v1/inference", with_(prompt="x" * 140000), None, 413, "PAYLOAD_TOO_LARGE"),
    ("openai: n=2", "/v1/completions", json.dumps({"prompt": "a", "n": 2}).encode(), None, 400, {("n", "range")}),
    ("openai: token prompt", "/v1/completions", json.dumps({"prompt": [1, 2]}).encode(), None, 400,
     {("prompt", "type")}),
    ("openai: echo", "/v1/completions", json.dumps({"prompt": "a", "echo": True}).encode(), None, 400,
     {("echo", "unsupported")}),
    ("openai: no messages", "/v1/chat/completions", json.dumps({"model": "m"}).encode(), None, 400,
     {("messages", "required")}),
    ("openai: empty messages", "/v1/chat/completions", json.dumps({"messages": []}).encode(), None, 400,
     {("messages", "length")}),
    ("openai: bad role", "/v1/chat/completions", json.dumps({"messages": [{"role": "tool", "content": "x"}]}).encode(),
     None, 400, {("messages[0].role", "enum")}),
    ("openai: image part", "/v1/chat/completions",
     json.dumps({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]}).encode(),
     None, 400, {("messages[0].content", "type")}),
    ("openai: stream not bool", "/v1/chat/completions",
     json.dumps({"messages": [{"role": "user", "content": "x"}], "stream": "yes"}).encode(), None, 400,
     {("stream", "type")}),
    ("openai: huge chat", "/v1/chat/completions",
     json.dumps({"messages": [{"role": "user", "content": "y" * 20000}] * 2}).encode(), None, 400,
     {("messages", "length")}),
    ("openai: tools", "/v1/chat/completions",
     json.dumps({"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function"}]}).encode(), None,
     400, {("tools", "unsupported")}),
]


@pytest.mark.parametrize("name,path,body,ctype,status,check", TABLE, ids=[t[0] for t in TABLE])
def test_malformed_request_is_refused_with_its_reason(front, name, path, body, ctype, status, check):
    got, resp = post_raw(front, path, body, ctype or "application/json")
    assert got == status, (name, got, resp)
    openai_route = not path.startswith("/v1/inference") and not path.startswith("/v1/jobs")
    if isinstance(check, set):
        if openai_route:
            err = resp["error"]
            assert err["type"] == "invalid_request_error" and err["code"] == "VALIDATION_FAILED"
            assert {(e["field"], e["constraint"]) for e in err["errors"]} == check, err
            assert err["param"] == err["errors"][0]["field"]
        else:
            assert errors_of(resp) == check, resp
            for e in resp["errors"]:
                assert e["message"] and isinstance(e["message"], str)
    else:
        assert resp["error"]["code"] == check, resp
        assert resp["error"]["message"]


def test_table_is_large_enough():
    assert len(TABLE) >= 40


def test_out_of_range_value_is_echoed_and_huge_strings_are_not(front):
    _, resp = post_raw(front, "/v1/inference", with_(max_tokens=5000, prompt=BIG))
    by_field = {e["field"]: e for e in resp["errors"]}
    assert by_field["max_tokens"]["value"] == 5000
    assert "value" not in by_field["prompt"]
    assert len(json.dumps(resp)) < 2000


def test_wrong_methods_get_405_with_allow(front):
    for method, path, allow in [("GET", "/v1/inference", "POST"), ("PUT", "/v1/jobs", "POST"),
                                ("DELETE", "/health", "GET, HEAD"), ("POST", "/v1/models", "GET, HEAD"),
                                ("GET", "/v1/completions", "POST"), ("POST", "/metrics", "GET, HEAD"),
                                ("POST", "/v1/jobs/job-x/stream", "GET, HEAD"), ("GET", "/v1/jobs/job-x", "DELETE")]:
        conn = http.client.HTTPConnection("127.0.0.1", front.port, timeout=10)
        conn.request(method, path, body=b"{}" if method != "GET" else None)
        r = conn.getresponse()
        body = json.loads(r.read())
        conn.close()
        assert r.status == 405 and r.getheader("allow") == allow, (method, path)
        assert body["error"]["code"] == "METHOD_NOT_ALLOWED"


def test_defaults_and_both_body_shapes(front):
    for path, body in [("/v1/inference", {"prompt": "Hi", "max_tokens": 2}),
                       ("/v1/jobs", {"operation": "infer", "prompt": "Hi", "max_tokens": 2, "hive_id": "h",
                                     "model": "whatever", "worker_id": "w", "device": 3, "stream": True}),
                       ("/v1/inference", {"prompt": "Hi", "max_tokens": 2, "temperature": 0, "top_p": 0, "top_k": 0,
                                          "min_p": 1, "repetition_penalty": 0, "seed": 2**63 - 1,
                                          "stop": ["a", "b", "c", "d" * 100]})]:
        status, resp, _ = front.request("POST", path, body)
        assert status == 200, (path, resp)
        form = "jobs" if path == "/v1/jobs" else "inference"
        assert resp["sse_url"] == f"/v1/{form}/{resp['job_id']}/stream"
        with front.stream(resp["sse_url"]) as s:
            events = list(s.events())
        started = events[0]["data"]
        assert started["type"] == "started" and isinstance(started["seed"], int)
        assert 0 <= started["seed"] < 2**64
        if body.get("seed"):
            assert started["seed"] == body["seed"]
        else:
            assert started["seed"] < 2**53, "a default seed survives any JSON client"


def test_prompt_limit_counts_characters_not_bytes(front):
    body = json.dumps({"prompt": "é" * 32768, "max_tokens": 1}, ensure_ascii=False).encode()
    status, resp = post_raw(front, "/v1/inference", body)
    assert status == 200, resp
    assert front.request("DELETE", f"/v1/inference/{resp['job_id']}")[0] == 202
    body = json.dumps({"prompt": "é" * 32769, "max_tokens": 1}, ensure_ascii=False).encode()
    status, resp = post_raw(front, "/v1/inference", body)
    assert status == 400 and errors_of(resp) == {("prompt", "length")}


def test_garbage_on_the_socket_does_not_hurt_the_front(front):
    for junk in [b"\x00\x01\x02\r\n\r\n", b"GET / HTTP/9.9\r\n\r\n", b"POST /v1/jobs HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
                 b"POST /v1/jobs HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"]:
        with socket.create_connection(("127.0.0.1", front.port), timeout=5) as s:
            s.sendall(junk)
            s.settimeout(5)
            try:
                s.recv(4096)
            except (socket.timeout, ConnectionResetError):
                pass


def test_a_normal_job_still_works_afterwards(front):
    text, events = front.run("The capital of France is", 8)
    assert events[-2]["data"]["type"] == "end" and events[-2]["data"]["tokens_out"] == 8
    assert text


def test_max_tokens_is_bounded_by_the_context(build_dir, model_path):
    with Worker(build_dir, model_path, slots=1, extra=["--ctx", "64"]) as w:
        w.wait_ready()
        status, resp, _ = w.request("POST", "/v1/inference", {"prompt": "Hi", "max_tokens": 64})
        assert status == 400 and errors_of(resp) == {("max_tokens", "range")}
        assert "between 1 and 63" in resp["errors"][0]["message"]
        status, resp, _ = w.request("POST", "/v1/chat/completions",
                                    {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 100})
        assert status == 400 and resp["error"]["param"] == "max_tokens"
        status, resp, _ = w.request("POST", "/v1/inference", {"prompt": "Hi", "max_tokens": 63})
        assert status == 200
