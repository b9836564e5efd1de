"""Streaming benchmark for the worker pair (issue 3): decode tokens/s of the engine alone (--bench) versus
the same model read through beeworker-front and SSE by a client, and delivery latency (client receive
time minus the engine's publish time, ts_ns) at p50/p99 with 1 and with 16 concurrent streams.

Run: python3 tests/bench/bench_stream.py [--build build] [--model models/...gguf] [--tokens 128] [--threads N]
Prints one JSON object. A benchmark, not a test: it asserts nothing."""
import argparse
import json
import os
import pathlib
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
    lat = [(e["recv_ns"] - e["data"]["ts_ns"]) / 1e6 for toks in sink for e in toks]
    return {"streams": n_streams, "tokens": len(lat), "p50_ms": round(pct(lat, 50), 3),
            "p99_ms": round(pct(lat, 99), 3), "max_ms": round(max(lat), 3)}


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
    with Worker(build, model, slots=16, extra=threads) as w:
        w.wait_ready()
        result["latency_16"] = latencies(w, 16, 32)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
