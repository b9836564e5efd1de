"""Slow and hostile clients against the real beeworker-front (issue 8): every way a client can hold a
connection or memory has a timeout or a limit, and the front keeps serving others meanwhile. No engine
is needed: these are the front's own defences (a job without an engine waits, which is what the stream
tests want). Also: HTTP/2 and h2c are refused unless --http2 (SPEC §3.0)."""
import http.client
import json
import os
import socket
import time

import pytest

from harness import Worker, read_until_closed, wait_until

REQ_TIMEOUT_S = 2
MAX_CONNS = 48
MAX_HEADER_BYTES = 16384
FLAGS = ["--request-timeout", str(REQ_TIMEOUT_S), "--max-connections", str(MAX_CONNS), "--max-header-bytes",
         str(MAX_HEADER_BYTES), "--engine-wait", "5"]


@pytest.fixture(scope="module")
def front(build_dir):
    w = Worker(build_dir, spawn=False, extra=FLAGS)
    try:
        yield w
    finally:
        w.close()


def connect(port, timeout=10):
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def open_fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_slow_headers_are_cut_off_after_the_request_timeout(front):
    s = connect(front.port)
    t0 = time.monotonic()
    s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
    for i in range(10):  # one header line per 0.5 s: the request never completes
        try:
            s.sendall(b"X-Slow-%d: 1\r\n" % i)
        except (BrokenPipeError, ConnectionResetError):
            break
        time.sleep(0.5)
        if time.monotonic() - t0 > REQ_TIMEOUT_S + 3:
            break
    got = read_until_closed(s, 3)
    took = time.monotonic() - t0
    s.close()
    assert got is not None, "the server kept a slow-header connection open"
    assert took < REQ_TIMEOUT_S + 4, f"closed only after {took:.1f}s"
    assert front.health() in (200, 503)  # still serving


def test_slow_body_is_cut_off_after_the_request_timeout(front):
    s = connect(front.port)
    t0 = time.monotonic()
    s.sendall(b"POST /v1/inference HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"Content-Length: 1000\r\n\r\n{\"prompt\": \"")
    got = read_until_closed(s, REQ_TIMEOUT_S + 4)
    took = time.monotonic() - t0
    s.close()
    assert got is not None, "the server waited forever for a body that never came"
    assert took < REQ_TIMEOUT_S + 4, f"closed only after {took:.1f}s"


def test_idle_keep_alive_connections_are_closed(front):
    s = connect(front.port)
    s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    s.settimeout(5)
    first = s.recv(65536)
    assert first.startswith(b"HTTP/1.1 "), first[:80]
    t0 = time.monotonic()
    rest = read_until_closed(s, REQ_TIMEOUT_S + 4)
    s.close()
    assert rest is not None, "an idle keep-alive connection stayed open"
    assert time.monotonic() - t0 < REQ_TIMEOUT_S + 4


def test_headers_over_the_limit_get_431(front):
    big = "a" * 1000
    status, body, headers = front.request("GET", "/health", headers={f"X-Pad-{i}": big for i in range(20)})
    assert status == 431, (status, body)
    assert body["error"]["code"] == "HEADERS_TOO_LARGE"
    # just under the limit still works
    status, _, _ = front.request("GET", "/health", headers={f"X-Pad-{i}": big for i in range(10)})
    assert status in (200, 503)


def test_headers_beyond_h2o_own_ceiling_are_refused_without_harm(front):
    s = connect(front.port)
    head = b"GET /health HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-H%d: %s\r\n" % (i, b"b" * 4000) for i in range(120))
    try:
        s.sendall(head + b"\r\n")
    except (BrokenPipeError, ConnectionResetError):
        pass
    got = read_until_closed(s, 5)
    s.close()
    assert got is not None, "connection kept open after an oversized head"
    assert got == b"" or got.startswith(b"HTTP/1.1 4"), got[:80]
    assert front.health() in (200, 503)


def test_many_idle_connections_hit_the_cap_then_free_up(front):
    base_fds = open_fds(front.front_pid)
    idle = [connect(front.port) for _ in range(MAX_CONNS)]
    assert wait_until(lambda: open_fds(front.front_pid) >= base_fds + MAX_CONNS, 5), "connections not accepted"
    extra = connect(front.port)
    extra.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    got = read_until_closed(extra, 5)
    extra.close()
    assert got is not None and got.startswith(b"HTTP/1.1 503"), (got or b"")[:120]
    assert b"TOO_MANY_CONNECTIONS" in got
    # idle connections that never send a request are closed by the request timeout, freeing the slots
    closed = [read_until_closed(s, REQ_TIMEOUT_S + 4) for s in idle]
    for s in idle:
        s.close()
    assert all(c is not None for c in closed), "idle connections without a request were kept open"
    assert front.health() in (200, 503)
    assert wait_until(lambda: open_fds(front.front_pid) <= base_fds, 5), \
        f"fds {open_fds(front.front_pid)} vs {base_fds} before"


def test_a_stream_outlives_the_request_timeout(front):
    """The request timeout bounds reading a request, never a response: a job waiting for an engine keeps
    its stream (keep-alive comments) until --engine-wait ends it with QUEUE_TIMEOUT."""
    job, url = front.submit("Once upon a time", 4)
    t0 = time.monotonic()
    with front.stream(url, timeout=15) as s:
        assert s.status == 200
        events = list(s.events())
    took = time.monotonic() - t0
    assert took > REQ_TIMEOUT_S + 1, f"stream ended after {took:.1f}s"
    end = [e["data"] for e in events if isinstance(e["data"], dict) and e["data"].get("type") == "error"]
    assert end and end[-1]["code"] == "QUEUE_TIMEOUT", events[-3:]


@pytest.mark.parametrize("value", ["abc", "-1", "1.5", "0x10", "18446744073709551615", "99999999999999999999999",
                                   " ", "1 2", "7a", "١٢"])
def test_hostile_last_event_id_values_get_400(front, value):
    job, url = front.submit("Once upon a time", 4)
    conn = http.client.HTTPConnection("127.0.0.1", front.port, timeout=10)
    try:
        conn.putrequest("GET", url)
        conn.putheader("Last-Event-ID", value.encode())
        conn.endheaders()
        r = conn.getresponse()
        body = r.read()
    finally:
        conn.close()
    assert r.status == 400, (r.status, body[:200])
    assert json.loads(body)["error"]["code"] == "INVALID_LAST_EVENT_ID"
    front.request("DELETE", f"/v1/jobs/{job}")


def test_h2c_upgrade_is_served_as_http1(front):
    s = connect(front.port)
    s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
              b"HTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\n\r\n")
    s.settimeout(5)
    got = s.recv(65536)
    s.close()
    assert got.startswith(b"HTTP/1.1 200") or got.startswith(b"HTTP/1.1 503"), got[:80]
    assert b"101 Switching" not in got


def test_http2_prior_knowledge_is_refused(front):
    s = connect(front.port)
    s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes.fromhex("000000040000000000"))
    got = read_until_closed(s, 5)
    s.close()
    assert got is not None, "connection kept open after an HTTP/2 preface"
    # an HTTP/2 server answers with a SETTINGS frame (type 4): 3 length bytes, then 0x04
    assert not (len(got) >= 4 and got[3] == 4 and not got.startswith(b"HTTP")), got[:40]
    assert got == b"" or got.startswith(b"HTTP/1.1 4"), got[:80]


def test_h2c_upgrade_works_only_with_the_flag(build_dir):
    """The check above would pass against a server that cannot speak HTTP/2 at all: prove the flag flips it."""
    with Worker(build_dir, spawn=False, extra=["--http2"]) as w:
        s = connect(w.port)
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
                  b"HTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\n\r\n")
        s.settimeout(5)
        got = s.recv(65536)
        s.close()
        assert got.startswith(b"HTTP/1.1 101"), got[:80]
