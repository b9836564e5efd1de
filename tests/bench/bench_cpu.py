#!/usr/bin/env python3
"""CPU benchmark: beeworker-engine --bench against llama.cpp (through llama-cpp-python) on the same model
and the same thread count, in one run. Prints pp (prefill) and tg (decode) tokens/s for both, their ratios,
and the engine's peak resident memory against its budget (model file + KV cache + 64 MiB).

usage: tests/bench/bench_cpu.py [--model PATH] [--threads N] [-p 512] [-n 128] [-r 3] [-d 0]
With -d D both tests also run after a context of D tokens (llama-bench's -d): the rows "@ dD".
Needs llama-cpp-python (pip install llama-cpp-python); it is a benchmark, not a test.
"""
import argparse
import json
import os
import pathlib
import resource
import statistics
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[2]


def bench_llama_cpp(model, threads, p, n, reps, depth=0):
    from llama_cpp import Llama

    llm = Llama(model, n_ctx=depth + max(p, n) + 8, n_batch=p, n_ubatch=p, n_threads=threads,
                n_threads_batch=threads, logits_all=False, verbose=False)
    nv = llm.n_vocab()
    toks = [(1103515245 * i + 12345) % nv for i in range(depth + p)]
    pp, tg = [], []
    for r in range(reps + 1):  # the first round warms up and is not counted
        llm.reset()
        if depth:
            llm.eval(toks[:depth])
        t0 = time.perf_counter()
        llm.eval(toks[depth:depth + p])
        t1 = time.perf_counter()
        llm.n_tokens = depth  # drop the prompt test's tokens: decode continues from the context
        t2 = time.perf_counter()
        for i in range(n):
            llm.eval([toks[depth + i % p]])
        t3 = time.perf_counter()
        if r:
            pp.append(p / (t1 - t0))
            tg.append(n / (t3 - t2))
    return pp, tg


def bench_engine(engine, model, threads, p, n, reps, depth=0):
    cmd = [str(engine), "--model", model, "--bench", "-p", str(p), "-n", str(n), "-r", str(reps), "-d", str(depth),
           "--threads", str(threads), "--ctx", str(depth + max(p, n) + 8)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, check=True).stdout
    rss_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    res = json.loads(out.strip().splitlines()[-1])
    return res, max(rss_kib, before)


def main():
    ap = argparse.ArgumentParser(description="beeworker-engine vs llama.cpp on the CPU")
    ap.add_argument("--model", default=str(ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"))
    ap.add_argument("--engine", default=str(ROOT / "build" / "engine" / "beeworker-engine"))
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("-p", type=int, default=512)
    ap.add_argument("-n", type=int, default=128)
    ap.add_argument("-r", type=int, default=3)
    ap.add_argument("-d", type=int, default=0, help="also measure after a context of this many tokens")
    a = ap.parse_args()

    res, rss_kib = bench_engine(a.engine, a.model, a.threads, a.p, a.n, a.r)
    pp, tg = bench_llama_cpp(a.model, a.threads, a.p, a.n, a.r)
    ref_pp, ref_tg = statistics.mean(pp), statistics.mean(tg)

    # KV cache of the bench run: layers x positions x kv width x (K and V) x 4 bytes; read from the model.
    from gguf import GGUFReader  # pip install gguf

    r = GGUFReader(a.model)
    arch = r.fields["general.architecture"].contents()
    f = lambda k, d=None: int(r.fields[f"{arch}.{k}"].contents()) if f"{arch}.{k}" in r.fields else d
    head = f("attention.key_length", f("embedding_length") // f("attention.head_count"))
    kv_bytes = f("block_count") * (a.p + a.n) * 2 * 4 * head * f("attention.head_count_kv", f("attention.head_count"))
    budget = os.path.getsize(a.model) + kv_bytes + (64 << 20)

    print(f"model {pathlib.Path(a.model).name}, {a.threads} threads, {a.r} repetitions")
    print(f"{'test':<16}{'beeworker t/s':>16}{'llama.cpp t/s':>16}{'ratio':>8}")
    print(f"{'pp' + str(a.p):<16}{res['pp_tps']:>16.1f}{ref_pp:>16.1f}{res['pp_tps'] / ref_pp:>8.2f}")
    print(f"{'tg' + str(a.n):<16}{res['tg_tps']:>16.1f}{ref_tg:>16.1f}{res['tg_tps'] / ref_tg:>8.2f}")
    if a.d:
        res_d, _ = bench_engine(a.engine, a.model, a.threads, a.p, a.n, a.r, a.d)
        pp_d, tg_d = bench_llama_cpp(a.model, a.threads, a.p, a.n, a.r, a.d)
        for name, ours, ref in ((f"pp{a.p} @ d{a.d}", res_d["pp_tps"], statistics.mean(pp_d)),
                                (f"tg{a.n} @ d{a.d}", res_d["tg_tps"], statistics.mean(tg_d))):
            print(f"{name:<16}{ours:>16.1f}{ref:>16.1f}{ours / ref:>8.2f}")
    print(f"engine peak RSS {rss_kib / 1024:.1f} MiB, budget {budget / 2**20:.1f} MiB "
          f"(model file + KV cache + 64 MiB): {'within' if rss_kib * 1024 <= budget else 'OVER'}")


if __name__ == "__main__":
    sys.exit(main())
