#!/usr/bin/env python3
"""Bounded soak of a worker pair under faults (issue 8). Loopback only; stops by itself.

Starts beeworker-front --spawn-engine on the default model (network mode bound to 127.0.0.1, with a
token), then for --duration seconds keeps --clients concurrent clients busy, each a loop of one of:
  fast      submit, read the SSE stream to [DONE] as fast as it comes
  slow      the same through a small receive buffer, pausing between reads
  drop      submit, read a few events, then vanish mid-stream (no close handshake)
  invalid   malformed JSON, bad fields, wrong content type, bad Last-Event-ID: expects 4xx
  badtoken  a wrong bearer token: expects 401
and kills the engine (SIGKILL, by PID) twice. Every stream that ends with an `end` event is checked:
its token indices must be 0..n-1 exactly once each and n must equal the end event's tokens_out.

Reports jobs completed, tokens delivered, tokens lost or duplicated on completed streams, the front's RSS
and open fds before and after (after all clients have gone and the front has settled), and p50/p99
delivery latency (client receive time minus the engine's publish time, ts_ns from ?timing=1).

    tests/bench/soak.py [--build build] [--clients 1200] [--duration 120] [--json out.json]
"""
import argparse
import asyncio
import json
import os
import pathlib
import random
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "integration"))
from harness import rss_kb  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[2]
TOKEN = "soak-token-" + os.urandom(8).hex()
PROMPTS = ["Once upon a time", "The capital of France is", "def fibonacci(n):", "Bees make honey because",
           "My favourite food is", "The quick brown fox"]
MIX = [("fast", 50), ("slow", 20), ("drop", 15), ("invalid", 10), ("badtoken", 5)]
IO_TIMEOUT_S = 90  # no single read may wait longer: a stuck stream is a finding, not a hang


class Stats:
    def __init__(self):
        self.count = {k: 0 for k, _ in MIX}
        self.completed = 0
        self.errors = {}      # terminal error codes of streams that did not complete
        self.tokens = 0       # token events delivered on all streams
        self.lost = 0
        self.dup = 0
        self.bad_streams = []
        self.latency_ms = {"fast": [], "slow": [], "drop": []}
        self.unexpected = {}  # unexpected HTTP statuses or exceptions
        self.max_open = 0
        self.open = 0

    def note(self, what):
        self.unexpected[what] = self.unexpected.get(what, 0) + 1


def fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


async def http(port, method, path, headers=None, body=b"", rcvbuf=None):
    """Opens a connection, sends one request; returns (reader, writer, status, headers)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    reader, writer = await asyncio.open_connection(sock=sock, limit=1 << 20)
    h = {"Host": "127.0.0.1", "Connection": "close"}
    h.update(headers or {})
    if body or method == "POST":
        h["Content-Length"] = str(len(body))
    head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in h.items()) + "\r\n"
    writer.write(head.encode() + body)
    await writer.drain()
    line = await asyncio.wait_for(reader.readline(), IO_TIMEOUT_S)
    status = int(line.split()[1]) if line.startswith(b"HTTP/1.") else 0
    rh = {}
    while True:
        line = await asyncio.wait_for(reader.readline(), IO_TIMEOUT_S)
        if line in (b"\r\n", b""):
            break
        k, _, v = line.decode("latin-1").partition(":")
        rh[k.strip().lower()] = v.strip()
    return reader, writer, status, rh


async def read_body(reader, rh):
    if rh.get("transfer-encoding", "").lower() == "chunked":
        out = b""
        async for chunk in chunks(reader):
            out += chunk
        return out
    n = int(rh.get("content-length", "0"))
    return await asyncio.wait_for(reader.readexactly(n), IO_TIMEOUT_S) if n else b""


async def chunks(reader, pause=None):
    while True:
        size = int((await asyncio.wait_for(reader.readline(), IO_TIMEOUT_S)).strip() or b"0", 16)
        if size == 0:
            return
        data = await asyncio.wait_for(reader.readexactly(size + 2), IO_TIMEOUT_S)
        yield data[:-2]
        if pause:
            await asyncio.sleep(pause())


def close(writer, abort=False):
    try:
        if abort:
            writer.transport.abort()
        else:
            writer.close()
    except Exception:
        pass


async def submit(port, auth, max_tokens):
    body = json.dumps({"prompt": random.choice(PROMPTS), "max_tokens": max_tokens, "temperature": 0.8,
                       "seed": random.getrandbits(32)}).encode()
    r, w, status, rh = await http(port, "POST", "/v1/inference",
                                  {"Authorization": auth, "Content-Type": "application/json"}, body)
    payload = await read_body(r, rh)
    close(w)
    return status, payload


async def stream(port, auth, st, kind):
    status, payload = await submit(port, auth, random.randint(4, 24))
    if status != 200:
        st.note(f"submit {status}")
        return
    url = json.loads(payload)["sse_url"] + "?timing=1"
    slow = kind == "slow"
    r, w, status, rh = await http(port, "GET", url, {"Authorization": auth}, rcvbuf=4096 if slow else None)
    if status != 200:
        st.note(f"stream {status}")
        close(w)
        return
    st.open += 1
    st.max_open = max(st.max_open, st.open)
    buf, idx, ids, end, err = b"", [], [], None, None
    stop_after = random.randint(1, 4) if kind == "drop" else None
    events = 0
    try:
        async for chunk in chunks(r, (lambda: random.uniform(0.02, 0.15)) if slow else None):
            buf += chunk
            while b"\n\n" in buf:
                ev, buf = buf.split(b"\n\n", 1)
                data = [line[6:] for line in ev.split(b"\n") if line.startswith(b"data: ")]
                if not data:
                    continue  # a keep-alive comment
                events += 1
                if data[0] == b"[DONE]":
                    raise StopAsyncIteration
                d = json.loads(data[0])
                if d["type"] == "token":
                    idx.append(d["i"])
                    st.tokens += 1
                    st.latency_ms[kind].append((time.time_ns() - d["ts_ns"]) / 1e6)
                elif d["type"] == "end":
                    end = d
                elif d["type"] == "error":
                    err = d["code"]
            if stop_after is not None and events >= stop_after:
                close(w, abort=True)
                return
    except StopAsyncIteration:
        pass
    finally:
        st.open -= 1
        close(w)
    if end is not None:
        st.completed += 1
        n = end["tokens_out"]
        uniq = set(idx)
        lost = len(set(range(n)) - uniq)
        dup = len(idx) - len(uniq)
        st.lost += lost
        st.dup += dup
        if lost or dup or uniq - set(range(n)):
            st.bad_streams.append({"tokens_out": n, "indices": idx[:64]})
    elif err:
        st.errors[err] = st.errors.get(err, 0) + 1
    elif kind != "drop":
        st.note("stream ended without a terminal event")


async def invalid(port, auth, st):
    case = random.randrange(5)
    if case == 0:
        req = ("POST", "/v1/inference", {"Content-Type": "application/json"}, b'{"prompt": "x", "max_tokens": ')
    elif case == 1:
        req = ("POST", "/v1/inference", {"Content-Type": "application/json"},
               json.dumps({"prompt": "", "max_tokens": 99999, "temperature": 7, "stop": [1, 2]}).encode())
    elif case == 2:
        req = ("POST", "/v1/inference", {"Content-Type": "text/plain"}, b"prompt=x")
    elif case == 3:
        req = ("POST", "/v1/inference", {"Content-Type": "application/json"}, b"{" + b" " * (2 << 20) + b"}")
    else:
        req = ("GET", "/v1/inference/job-nonexistent/stream", {"Last-Event-ID": "nope"}, b"")
    method, path, headers, body = req
    headers["Authorization"] = auth
    try:
        r, w, status, rh = await http(port, method, path, headers, body)
        await read_body(r, rh)
        close(w)
    except (ConnectionResetError, BrokenPipeError):
        status = 413 if case == 3 else 0  # the front may close before reading a body far over its limit
    if not 400 <= status < 500:
        st.note(f"invalid request case {case} got {status}")


async def badtoken(port, st):
    r, w, status, rh = await http(port, "POST", "/v1/inference",
                                  {"Authorization": "Bearer wrong-" + os.urandom(4).hex(),
                                   "Content-Type": "application/json"}, b'{"prompt":"x","max_tokens":4}')
    await read_body(r, rh)
    close(w)
    if status != 401:
        st.note(f"wrong token got {status}")


async def client(port, st, deadline):
    auth = f"Bearer {TOKEN}"
    kinds = [k for k, n in MIX for _ in range(n)]
    await asyncio.sleep(random.uniform(0, 3))  # spread the first connects
    while time.monotonic() < deadline:
        kind = random.choice(kinds)
        st.count[kind] += 1
        try:
            if kind in ("fast", "slow", "drop"):
                await stream(port, auth, st, kind)
            elif kind == "invalid":
                await invalid(port, auth, st)
            else:
                await badtoken(port, st)
        except (asyncio.TimeoutError, ConnectionError, OSError, ValueError) as e:
            st.note(f"{kind}: {type(e).__name__}")
            await asyncio.sleep(0.2)


async def engine_pid(port):
    r, w, status, rh = await http(port, "GET", "/info", {"Authorization": f"Bearer {TOKEN}"})
    body = json.loads(await read_body(r, rh))
    close(w)
    return body["engine"]["pid"]


async def killer(port, duration, kills):
    for _ in range(kills):
        await asyncio.sleep(duration / (kills + 1))
        pid = await engine_pid(port)
        if pid:
            engine_pids.add(pid)
            os.kill(pid, signal.SIGKILL)
            kills_done.append((round(time.monotonic() - t_start, 1), pid))


kills_done = []
engine_pids = set()
t_start = 0.0


async def main_async(port, clients, duration, kills):
    global t_start
    st = Stats()
    t_start = time.monotonic()
    deadline = t_start + duration
    tasks = [asyncio.create_task(client(port, st, deadline)) for _ in range(clients)]
    kt = asyncio.create_task(killer(port, duration, kills))
    # clients finish their current job after the deadline; give them IO_TIMEOUT_S at most, then cancel
    done, pending = await asyncio.wait(tasks + [kt], timeout=duration + IO_TIMEOUT_S + 10)
    for t in pending:
        t.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    for t in done:
        if t.exception():
            st.note(f"client crashed: {t.exception()!r}")
    st.unfinished = len(pending)
    return st


def wait_health(port, timeout):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                if s.recv(64).startswith(b"HTTP/1.1 200"):
                    return True
        except OSError:
            pass
        time.sleep(0.2)
    return False


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", default=os.environ.get("BW_BUILD_DIR", str(ROOT / "build")))
    ap.add_argument("--model", default=str(ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"))
    ap.add_argument("--clients", type=int, default=1200)
    ap.add_argument("--duration", type=float, default=120)
    ap.add_argument("--kills", type=int, default=2)
    ap.add_argument("--slots", type=int, default=8)
    ap.add_argument("--json", help="also write the report here")
    a = ap.parse_args()

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, max(soft, 4 * a.clients + 512))
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))  # the front inherits it
    if want < 2 * a.clients + 256:
        sys.exit(f"RLIMIT_NOFILE hard limit {hard} is too low for {a.clients} clients")

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    rundir = tempfile.mkdtemp(prefix="bw-soak-", dir="/tmp")
    log_path = ROOT / "tests" / ".cache" / "logs" / f"soak-front-{port}.log"  # git-ignored
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = open(log_path, "wb")
    env = dict(os.environ, LLORCH_API_TOKEN=TOKEN)
    argv = [str(pathlib.Path(a.build) / "frontend" / "beeworker-front"), "--bind", "127.0.0.1", "--port", str(port),
            "--rundir", rundir, "--spawn-engine", "--model", a.model, "--slots", str(a.slots),
            "--queue-size", str(4 * a.clients), "--engine-wait", "60", "--max-connections", str(2 * a.clients + 256)]
    front = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)
    report = {}
    try:
        if not wait_health(port, 60):
            sys.exit(f"the worker did not become ready; see {log.name}")
        time.sleep(1)
        rss0, fds0 = rss_kb(front.pid), fds(front.pid)
        st = asyncio.run(main_async(port, a.clients, a.duration, a.kills))
        # The front notices a vanished client at its next write (a token or the 5 s keep-alive): give it
        # up to a minute to come back to its idle fd count, and say how long it took.
        t_end = time.monotonic()
        while fds(front.pid) > fds0 and time.monotonic() - t_end < 60:
            time.sleep(0.5)
        settle_s = round(time.monotonic() - t_end, 1)
        wait_health(port, 30)
        rss1, fds1 = rss_kb(front.pid), fds(front.pid)
        engine_pids.add(asyncio.run(engine_pid(port)))
        def pct(kinds, q):
            lat = sorted(x for k in kinds for x in st.latency_ms[k])
            return round(lat[min(len(lat) - 1, int(q * len(lat)))], 2) if lat else None
        report = {
            "clients": a.clients, "duration_s": a.duration, "engine_kills": kills_done,
            "requests_by_kind": st.count, "max_concurrent_streams": st.max_open,
            "jobs_completed": st.completed, "streams_ended_with_error": st.errors,
            "tokens_delivered": st.tokens, "tokens_lost_on_completed": st.lost,
            "tokens_duplicated_on_completed": st.dup, "bad_streams": st.bad_streams[:5],
            "front_rss_kb": [rss0, rss1], "front_fds": [fds0, fds1], "fds_settled_after_s": settle_s,
            "latency_ms_p50_p99_fast_readers": [pct(["fast"], 0.5), pct(["fast"], 0.99)],
            "latency_ms_p50_p99_all_readers": [pct(st.latency_ms, 0.5), pct(st.latency_ms, 0.99)],
            "unexpected": st.unexpected, "clients_cancelled_at_the_end": st.unfinished,
        }
    finally:
        front.terminate()
        try:
            front.wait(timeout=15)
        except subprocess.TimeoutExpired:
            front.kill()
            front.wait(timeout=10)
        log.close()
        for pid in engine_pids - {0, None}:
            # the engine dies with the front (PDEATHSIG); make sure, by PID
            for _ in range(50):
                if not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split(") ")[1][0] == "Z":
                    break
                time.sleep(0.1)
            else:
                os.kill(pid, signal.SIGKILL)
                print(f"engine {pid} outlived the front; killed", file=sys.stderr)
        for name in ("jobs.ipc", "tokens.ipc"):
            pathlib.Path(rundir, name).unlink(missing_ok=True)
        os.rmdir(rundir)
    print(json.dumps(report, indent=2))
    if a.json:
        pathlib.Path(a.json).write_text(json.dumps(report, indent=2))
    ok = report and report["tokens_lost_on_completed"] == 0 and report["tokens_duplicated_on_completed"] == 0
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
