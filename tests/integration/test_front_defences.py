"""Attacks and failures the front must survive (issue 16): memory amplification through echoed strings,
descriptor exhaustion, a hung engine, an unsafe run directory, ambiguous request framing and
credentials. Each test fails against a front without its defence."""
import json
import os
import pathlib
import resource
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from contextlib import closing

import pytest

from harness import Worker, cpu_seconds, pid_alive, read_until_closed, rss_kb, wait_until
from test_api_heartbeat import MockHive


def connect(port, rcvbuf=None, timeout=10):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)  # before connect: fixes the window
    s.settimeout(timeout)
    s.connect(("127.0.0.1", port))
    return s


def post_bytes(path, body, extra_headers=b""):
    return (b"POST " + path.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" + extra_headers +
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


# ---- 1. memory amplification ----

def test_an_oversized_model_name_is_refused_without_growing_the_front(build_dir):
    with Worker(build_dir, spawn=False) as w:
        before = rss_kb(w.front_pid)
        body = {"model": "m" * 900_000, "prompt": "Hi", "max_tokens": 300, "stream": True}
        status, resp, _ = w.request("POST", "/v1/completions", body)
        assert status == 400 and resp["error"]["param"] == "model", resp
        status, resp, _ = w.request("POST", "/v1/completions", dict(body, model="m" * 257))
        assert status == 400 and resp["error"]["param"] == "model", resp
        grown_mib = (rss_kb(w.front_pid) - before) / 1024
        print(f"front RSS growth after a 900 KB model name: {grown_mib:.1f} MiB")
        assert grown_mib < 16, grown_mib


def test_formatted_stream_bytes_count_against_the_stream_buffer(build_dir, model_path):
    """300 OpenAI chunks that each repeat a 256-byte model name are ~130 KB of events for ~1.5 KB of token
    text: a client that does not read must hit --stream-buffer (16 KB) on the formatted bytes."""
    flags = ["--stream-buffer", "16384", "--client-sndbuf", "4096"]
    with Worker(build_dir, model_path, slots=1, extra=flags) as w:
        w.wait_ready()
        s = connect(w.port, rcvbuf=4096)
        body = json.dumps({"model": "m" * 256, "prompt": "Once upon a time", "max_tokens": 300, "temperature": 0,
                           "stream": True}).encode()
        s.sendall(post_bytes("/v1/completions", body))
        # the client reads nothing until the job has ended one way or the other
        assert wait_until(lambda: w.info()["jobs"]["running"] == 0 and w.info()["jobs"]["waiting"] == 0, 60, 0.2)
        cancels = w.info()["resume"]["slow_client_cancels"]
        got = read_until_closed(s, 10, partial=True)
        s.close()
        assert cancels == 1, f"the job was not cut off at the stream buffer (slow_client_cancels={cancels})"
        assert b"SLOW_CLIENT" in got, got[-300:]


# ---- 2. descriptor exhaustion ----

def limit_nofile(soft, hard):
    return lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_out_of_descriptors_the_front_neither_spins_nor_goes_deaf(build_dir):
    """Soft = hard = 128 descriptors and the default --max-connections 4096: more idle connections than
    descriptors must not turn into an accept() loop at full speed, and /health must still be answered."""
    with Worker(build_dir, spawn=False, preexec_fn=limit_nofile(128, 128)) as w:
        idle = []
        try:
            for _ in range(200):
                idle.append(connect(w.port))
            time.sleep(0.5)  # let the front take (or refuse) what it can before measuring
            cpu0, t0 = cpu_seconds(w.front_pid), time.monotonic()
            h = connect(w.port, timeout=3)
            t_ask = time.monotonic()
            h.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            answer = read_until_closed(h, 3, partial=True)
            took = time.monotonic() - t_ask
            h.close()
            time.sleep(max(0.0, 3 - (time.monotonic() - t0)))
            share = (cpu_seconds(w.front_pid) - cpu0) / (time.monotonic() - t0)
            print(f"front CPU with 200 idle connections over a 128-descriptor limit: {share:.1%} of a core; "
                  f"/health answered in {took * 1000:.0f} ms: {answer[:40]!r}")
            assert answer.startswith(b"HTTP/1.1 "), f"/health got no answer in {took:.1f}s"
            assert share < 0.3, f"the front used {share:.0%} of a core while out of descriptors"
        finally:
            for s in idle:
                s.close()
        assert "does not fit the descriptor limit" in w.log_text()


def test_the_soft_descriptor_limit_is_raised_to_the_hard_one(build_dir):
    with Worker(build_dir, spawn=False, preexec_fn=limit_nofile(256, 4096)) as w:
        limits = pathlib.Path(f"/proc/{w.front_pid}/limits").read_text()
        line = next(x for x in limits.splitlines() if x.startswith("Max open files"))
        assert line.split()[3:5] == ["4096", "4096"], line


# ---- 3. a hung engine ----

def tokens_of(events):
    return [(e["data"]["i"], e["data"]["t"]) for e in events if isinstance(e["data"], dict) and
            e["data"]["type"] == "token"]


def test_a_stopped_engine_is_noticed_killed_and_its_job_resumed(build_dir, model_path):
    hello_timeout = 1.5
    hive = MockHive()
    with closing(hive), Worker(build_dir, model_path, slots=1, extra=["--engine-hello-timeout", str(hello_timeout),
                                                              "--engine-max-crashes", "0", "--hive-url",
                                                              f"http://127.0.0.1:{hive.port}"]) as w:
        w.wait_ready()
        _, ref = w.run("Once upon a time", 300)
        old_pid = w.info()["engine"]["pid"]
        stopped = {}

        def stop_engine(event):
            if not stopped and isinstance(event["data"], dict) and event["data"]["type"] == "token":
                os.kill(old_pid, signal.SIGSTOP)
                stopped["at"] = time.monotonic()

        try:
            _, url = w.submit("Once upon a time", 300)
            with w.stream(url, timeout=60) as s:
                events = []
                for e in s.events():
                    events.append(e)
                    stop_engine(e)
                    if "noticed" not in stopped and "at" in stopped:
                        # the engine is stopped: /health must turn unhealthy within the HELLO timeout
                        ok = wait_until(lambda: w.health() == 503, hello_timeout + 3, 0.05)
                        stopped["noticed"] = time.monotonic() - stopped["at"]
                        assert ok, "/health still says ready with the engine stopped"
            print(f"stopped engine noticed after {stopped['noticed']:.2f}s")
            assert wait_until(lambda: not pid_alive(old_pid), 5), "the stopped engine was not killed"
            assert tokens_of(events) == tokens_of(ref), "the resumed job differs from the uninterrupted run"
            assert events[-2]["data"]["type"] == "end", events[-3:]
            info = w.info()
            assert info["engine"]["pid"] != old_pid and info["resume"]["jobs_resumed"] >= 1, info
            assert stopped["noticed"] < hello_timeout + 1.5
            statuses = hive.statuses()
            assert "degraded" in statuses[statuses.index("healthy"):], f"the hive was not told: {statuses}"
        finally:
            if pid_alive(old_pid):
                os.kill(old_pid, signal.SIGKILL)
                os.kill(old_pid, signal.SIGCONT)


def test_without_the_hello_timeout_flag_the_default_is_bounded(build_dir):
    out = subprocess.run([str(build_dir / "frontend" / "beeworker-front"), "--help"], capture_output=True, text=True,
                         timeout=10).stdout
    assert "--engine-hello-timeout" in out and "default 10" in out
    bad = subprocess.run([str(build_dir / "frontend" / "beeworker-front"), "--engine-hello-timeout", "0.1"],
                         capture_output=True, text=True, timeout=10)
    assert bad.returncode != 0 and len(bad.stderr.strip().splitlines()) == 1, bad.stderr


# ---- 4. the run directory ----

def run_front_briefly(build_dir, rundir):
    p = subprocess.run([str(build_dir / "frontend" / "beeworker-front"), "--local-mode", "--port", "0", "--rundir",
                        str(rundir)], capture_output=True, text=True, timeout=15)
    return p.returncode, (p.stdout + p.stderr).strip()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give a directory to another user")
def test_an_unsafe_run_directory_is_refused(build_dir, tmp_path):
    good = tmp_path / "good"
    good.mkdir(mode=0o700)
    open_dir = tmp_path / "world-writable"
    open_dir.mkdir()
    open_dir.chmod(0o777)
    group_dir = tmp_path / "group-writable"
    group_dir.mkdir()
    group_dir.chmod(0o770)
    foreign = tmp_path / "foreign"
    foreign.mkdir(mode=0o700)
    os.chown(foreign, 65534, 65534)
    link = tmp_path / "link"
    link.symlink_to(good)
    for d, why in [(open_dir, "writable by group or others"), (group_dir, "writable by group or others"),
                   (foreign, "owned by another user"), (link, "symbolic link")]:
        rc, out = run_front_briefly(build_dir, d)
        assert rc != 0, (d, out)
        assert len(out.splitlines()) == 1 and why in out, out
        assert not (d / "jobs.ipc").exists() and not (d / "tokens.ipc").exists()


def test_the_engine_sockets_are_private(build_dir):
    with Worker(build_dir, spawn=False) as w:
        for name in ("jobs.ipc", "tokens.ipc"):
            mode = stat.S_IMODE((w.rundir / name).stat().st_mode)
            assert mode == 0o600, f"{name} has mode {mode:o}"


# ---- 5. ambiguous framing and credentials ----

TOKEN = "tok-0123456789abcdef"


@pytest.fixture(scope="module")
def secured(build_dir):
    w = Worker(build_dir, spawn=False, local_mode=False, token=TOKEN, extra=["--engine-wait", "1"])
    try:
        yield w
    finally:
        w.close()


@pytest.mark.parametrize("first,second", [("body", "smuggle"), ("zero", "smuggle"), ("body", "body")])
def test_two_content_lengths_get_one_400_and_a_close(secured, first, second):
    body = json.dumps({"prompt": "Hi", "max_tokens": 1}).encode()
    smuggled = b"GET /info HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + TOKEN.encode() + b"\r\n\r\n"
    sizes = {"body": len(body), "zero": 0, "smuggle": len(body) + len(smuggled)}
    for keep_alive_first in (False, True):
        s = connect(secured.port)
        prefix = b""
        if keep_alive_first:  # the same must hold for a later request on a kept-alive connection
            prefix = b"GET /info HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + TOKEN.encode() + b"\r\n\r\n"
        s.sendall(prefix + b"POST /v1/inference HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + TOKEN.encode() +
                  b"\r\nContent-Type: application/json\r\nContent-Length: " + str(sizes[first]).encode() +
                  b"\r\nContent-Length: " + str(sizes[second]).encode() + b"\r\n\r\n" + body + smuggled)
        got = read_until_closed(s, 5, partial=True)
        s.close()
        answers = got.count(b"HTTP/1.1 ")
        assert answers == 1 + keep_alive_first, got[:600]
        assert got[got.rfind(b"HTTP/1.1 "):].startswith(b"HTTP/1.1 400"), got[:600]
        assert b"AMBIGUOUS_CONTENT_LENGTH" in got and b'"job_id"' not in got


def test_two_authorization_headers_are_refused_whichever_comes_first(secured):
    for pair in ([f"Bearer {TOKEN}", "Bearer wrong"], ["Bearer wrong", f"Bearer {TOKEN}"],
                 [f"Bearer {TOKEN}", f"Bearer {TOKEN}"]):
        s = connect(secured.port)
        s.sendall(b"GET /info HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" +
                  b"".join(b"Authorization: " + v.encode() + b"\r\n" for v in pair) + b"\r\n")
        got = read_until_closed(s, 5, partial=True)
        s.close()
        assert got.startswith(b"HTTP/1.1 400") and b"DUPLICATE_AUTHORIZATION" in got, (pair, got[:200])


def test_a_padded_token_is_not_the_token(secured):
    for value in [f"Bearer  {TOKEN}", f"Bearer {TOKEN} ", f"Bearer {TOKEN}\t", f"Bearer \t{TOKEN}"]:
        s = connect(secured.port)
        s.sendall(b"GET /info HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: " + value.encode() +
                  b"\r\n\r\n")
        got = read_until_closed(s, 5, partial=True)
        s.close()
        assert got.startswith(b"HTTP/1.1 401"), (value, got[:200])
    assert secured.request("GET", "/info")[0] == 200
