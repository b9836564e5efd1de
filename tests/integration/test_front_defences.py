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

import pytest

from harness import Worker, cpu_seconds, pid_alive, rss_kb, wait_until


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


def read_all(s, deadline_s):
    """Every byte until the server closes (or deadline_s passes)."""
    s.settimeout(0.5)
    data, end = b"", time.monotonic() + deadline_s
    while time.monotonic() < end:
        try:
            chunk = s.recv(65536)
        except socket.timeout:
            continue
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
    return data


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
        got = read_all(s, 10)
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
            answer = read_all(h, 3)
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
