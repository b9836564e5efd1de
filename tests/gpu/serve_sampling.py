"""Sampling on the device in the serving path (issue 13, item 3), end to end on a GPU host: the same
jobs through a worker pair on --backend cuda twice, once with BW_CUDA_SAMPLING=device and once with
BW_CUDA_SAMPLING=host (logits copied, bw_sample on the host; the default until this check has passed). The CUDA backend's logits do not
depend on which sampler reads them, so every job must produce the same text token for token, for
greedy, temperature, top-k, top-p, min-p and repetition-penalty jobs, run 8 at a time.
Usage: python3 serve_sampling.py BUILD_DIR MODEL   (run by tests/gpu/run.sh; prints PASS or FAIL)"""
import os
import pathlib
import sys
import threading

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "integration"))
from harness import Worker  # noqa: E402

JOBS = [
    {"temperature": 0},
    {"temperature": 0.8, "seed": 1},
    {"temperature": 1.0, "top_k": 40, "seed": 2},
    {"temperature": 0.7, "top_p": 0.9, "seed": 3},
    {"temperature": 1.2, "min_p": 0.05, "seed": 4},
    {"temperature": 0.9, "repetition_penalty": 1.3, "seed": 5},
    {"temperature": 1.5, "seed": 6},
    {"temperature": 0.6, "top_k": 5, "top_p": 0.8, "min_p": 0.1, "repetition_penalty": 1.1, "seed": 7},
]
PROMPT = "Once upon a time, in a small village at the edge of a forest, there lived"


def run_all(build, model, host_sampling):
    os.environ["BW_CUDA_SAMPLING"] = "host" if host_sampling else "device"
    w = Worker(build, model, slots=8, extra=["--backend", "cuda"])
    try:
        w.wait_ready(timeout=40)
        out = [None] * len(JOBS)

        def one(i):
            out[i] = w.run(PROMPT, 48, timeout=30, **JOBS[i])[0]

        ts = [threading.Thread(target=one, args=(i,)) for i in range(len(JOBS))]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        return out, w.info().get("device")
    finally:
        w.close()


def main():
    build, model = pathlib.Path(sys.argv[1]), sys.argv[2]
    dev, dev_dev = run_all(build, model, False)
    host, _ = run_all(build, model, True)
    bad = [i for i in range(len(JOBS)) if dev[i] != host[i] or dev[i] is None]
    for i in range(len(JOBS)):
        print(f"job {i} {JOBS[i]}: {'same' if i not in bad else 'DIFFER'} ({len(dev[i] or '')} chars)")
        if i in bad:
            print(f"  device: {dev[i]!r}\n  host:   {host[i]!r}")
    print(f"{'PASS' if not bad and dev_dev.startswith('cuda') else 'FAIL'}: device {dev_dev}, {len(JOBS) - len(bad)} of "
          f"{len(JOBS)} jobs the same with device and host sampling")
    return 1 if bad or not dev_dev.startswith("cuda") else 0


if __name__ == "__main__":
    sys.exit(main())
