"""Streaming benchmark for the worker pair (issue 3): decode tokens/s of the engine alone (--bench) versus
the same model read through beeworker-front and SSE by a client, and delivery latency (client receive
time minus the engine's publish time, ts_ns) at p50/p99 with 1 and with 16 concurrent streams.

Latency is measured twice. "latency_N" uses the test harness's client: one Python thread per stream
parsing each event before it stamps the next, so with 16 streams the GIL queues them behind each other
and the figure includes the client's own parsing. "latency_N_raw" reads every stream from one thread
with selectors and stamps each recv() as it returns, parsing only afterwards: the worker's delivery
time, with Python's cost of one recv per ready socket on top.

Run: python3 tests/bench/bench_stream.py [--build build] [--model models/...gguf] [--tokens 128] [--threads N]
Prints one JSON object. A benchmark, not a test: it asserts nothing."""
import argparse
import json
import os
import pathlib
import selectors
import socket
import statistics
import subprocess
import sys
import threading
import time

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "integration"))
from harness import Worker  # noqa: E402


def pct(values, p):
    v = sorted(values)
    return v[min(len(v) - 1, int(round(p / 100.0 * (len(v) - 1))))] if v else float("nan")


def summary(n_streams, lat):
    """Delivery latencies (ms) as the JSON row both clients report."""
    return {"streams": n_streams, "tokens": len(lat), "p50_ms": round(pct(lat, 50), 3),
            "p99_ms": round(pct(lat, 99), 3), "max_ms": round(max(lat), 3) if lat else None}


def engine_alone(build, model, n, threads):
    out = subprocess.run([str(build / "engine" / "beeworker-engine"), "--model", str(model), "--bench", "-p",
                          str(n), "-n", str(n), "-r", "3", "--threads", str(threads)],
                         capture_output=True, text=True, timeout=300)
    line = [l for l in out.stdout.splitlines() if l.startswith("{")]
    if out.returncode != 0 or not line:
        raise RuntimeError(f"engine --bench failed: {out.stderr[-500:]}")
    return json.loads(line[-1])["tg_tps"]


def read_stream(w, url, sink):
    with w.stream(url + "?timing=1", timeout=120) as s:
        sink.append([e for e in s.events() if isinstance(e["data"], dict) and e["data"]["type"] == "token"])


def through_sse(w, n, runs=3):
    """Decode tokens/s seen by one client: tokens after the first over the time they took to arrive."""
    rates = []
    for _ in range(runs):
        _, url = w.submit("Once upon a time", n, temperature=0)
        sink = []
        read_stream(w, url, sink)
        toks = sink[0]
        if len(toks) > 8:
            rates.append((len(toks) - 1) / ((toks[-1]["recv_ns"] - toks[0]["recv_ns"]) / 1e9))
    return statistics.median(rates), rates


def latencies(w, n_streams, n_tokens):
    urls = [w.submit(f"Story number {i}: once upon a time", n_tokens, temperature=0)[1] for i in range(n_streams)]
    sink = []
    threads = [threading.Thread(target=read_stream, args=(w, u, sink)) for u in urls]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    return summary(n_streams, [(e["recv_ns"] - e["data"]["ts_ns"]) / 1e6 for toks in sink for e in toks])


def read_raw(port, urls, headers, timeout=120):
    """GETs every url over HTTP/1.0 (no chunked coding: the body is the SSE text, then the server closes)
    from one thread; returns per stream the token events as (recv_ns of the recv that completed the
    event, ts_ns)."""
    sel = selectors.DefaultSelector()
    streams = []
    for url in urls:
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        hdr = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        s.sendall(f"GET {url} HTTP/1.0\r\nHost: 127.0.0.1\r\n{hdr}\r\n".encode())
        s.setblocking(False)
        st = {"sock": s, "chunks": []}
        streams.append(st)
        sel.register(s, selectors.EVENT_READ, st)
    deadline, open_n = time.monotonic() + timeout, len(streams)
    while open_n and time.monotonic() < deadline:
        for key, _ in sel.select(timeout=1.0):
            st = key.data
            data = st["sock"].recv(65536)
            now = time.time_ns()
            if data:
                st["chunks"].append((now, data))
            else:
                sel.unregister(st["sock"])
                st["sock"].close()
                open_n -= 1
    for st in streams:
        if st["sock"].fileno() >= 0:
            sel.unregister(st["sock"])
            st["sock"].close()
    out = []
    for st in streams:
        raw, ends = b"", []
        for t, data in st["chunks"]:
            raw += data
            ends.append((len(raw), t))
        body_at = raw.find(b"\r\n\r\n") + 4
        events, pos, k = [], body_at, 0
        while True:
            end = raw.find(b"\n\n", pos)
            if end < 0:
                break
            while ends[k][0] < end + 2:  # the recv that delivered the event's last byte
                k += 1
            for line in raw[pos:end].decode().split("\n"):
                if line.startswith("data: {"):
                    d = json.loads(line[6:])
                    if d.get("type") == "token":
                        events.append((ends[k][1], d["ts_ns"]))
            pos = end + 2
        out.append(events)
    return out


def latencies_raw(w, n_streams, n_tokens, rounds=3):
    """rounds x n_streams x n_tokens samples: one stalled step moves a p99 of a few hundred."""
    lat = []
    for _ in range(rounds):
        urls = [w.submit(f"Story number {i}: once upon a time", n_tokens, temperature=0)[1] + "?timing=1"
                for i in range(n_streams)]
        lat += [(recv - ts) / 1e6 for events in read_raw(w.port, urls, w.headers()) for recv, ts in events]
    return dict(summary(n_streams, lat), over_2ms=sum(1 for x in lat if x > 2.0))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=str(ROOT / "build"))
    ap.add_argument("--model", default=str(ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"))
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--threads", type=int, default=os.cpu_count(),
                    help="engine threads in both measurements (on a 2-core machine the front and the client "
                         "compete with a 2-thread engine; 1 leaves them a core)")
    a = ap.parse_args()
    build, model = pathlib.Path(a.build).resolve(), pathlib.Path(a.model).resolve()
    result = {"threads": a.threads, "engine_alone_tg_tps": round(engine_alone(build, model, a.tokens, a.threads), 2)}
    threads = ["--threads", str(a.threads)]
    with Worker(build, model, slots=1, extra=threads) as w:
        w.wait_ready()
        med, rates = through_sse(w, a.tokens)
        result["through_sse_tg_tps"] = round(med, 2)
        result["through_sse_runs"] = [round(r, 2) for r in rates]
        result["ratio"] = round(med / result["engine_alone_tg_tps"], 3)
        result["latency_1"] = latencies(w, 1, a.tokens)
        result["latency_1_raw"] = latencies_raw(w, 1, a.tokens)
    with Worker(build, model, slots=16, extra=threads) as w:
        w.wait_ready()
        result["latency_16"] = latencies(w, 16, 32)
        result["latency_16_raw"] = latencies_raw(w, 16, 64)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
