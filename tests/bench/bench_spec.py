"""Speculative decoding benchmark (issue 14): delivered tokens/s of one job at a time, read through
beeworker-front and SSE, with speculation off (--spec-max 0) and on (--spec-max N), on the same machine in
the same run (the two workers run side by side, one job at a time, their runs interleaved).

Workloads:
  edit      a ~400-token Python file re-emitted with a small edit; the original file is the `prediction`
  quotes    summarise a document quoting it (no prediction: prompt lookup finds the quoted n-grams)
  free      free-form text from the existing bench prompts (bench_stream.py's "Once upon a time" and
            test_resume's prompts): what speculation must not slow down

Requests go through the OpenAI routes, streamed (the chat one applies the model's template). Delivered
tokens/s = (tokens - 1) / (arrival of the last token - arrival of the first), as the client sees them (the
rate after the first token, like bench_stream.py), median over the runs. The texts of both modes are
compared too: a benchmark of a wrong answer would be worthless. Acceptance rates: the prediction's from
usage.completion_tokens_details, prompt lookup's from /info.

Run: python3 tests/bench/bench_spec.py [--build build] [--threads 2] [--runs 3] [--spec-max 15]
Prints one JSON object. A benchmark, not a test: it asserts nothing but equal outputs."""
import argparse
import http.client
import json
import os
import pathlib
import statistics
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "integration"))
from harness import Worker  # noqa: E402

CODE = '''import json
import os
import sys


class Inventory:
    """A small in-memory inventory of items with quantities and prices."""

    def __init__(self):
        self.items = {}

    def add(self, name, quantity, price):
        if quantity <= 0:
            raise ValueError("quantity must be positive")
        if name in self.items:
            self.items[name]["quantity"] += quantity
        else:
            self.items[name] = {"quantity": quantity, "price": price}

    def remove(self, name, quantity):
        if name not in self.items:
            raise KeyError(name)
        item = self.items[name]
        if quantity > item["quantity"]:
            raise ValueError("not enough items")
        item["quantity"] -= quantity
        if item["quantity"] == 0:
            del self.items[name]

    def total_value(self):
        total = 0
        for name, item in self.items.items():
            total += item["quantity"] * item["price"]
        return total

    def save(self, path):
        with open(path, "w") as f:
            json.dump(self.items, f, indent=2)

    def load(self, path):
        if not os.path.exists(path):
            return
        with open(path) as f:
            self.items = json.load(f)


def main():
    inv = Inventory()
    inv.add("apple", 10, 0.5)
    inv.add("pear", 4, 0.75)
    inv.add("plum", 12, 0.25)
    inv.remove("apple", 3)
    print("total value:", inv.total_value())
    inv.save("inventory.json")


if __name__ == "__main__":
    main()
'''
EDIT = "Rewrite the code above with total_value renamed to value_of_stock."

DOC = ("The honey bee colony is a superorganism. A single queen lays up to two thousand eggs a day during the "
       "spring build-up. Worker bees live about six weeks in summer, and their tasks change with age: young "
       "workers clean cells and feed larvae, middle-aged workers build comb and process nectar, and the oldest "
       "workers forage outside the hive. Drones exist only to mate with queens from other colonies. In winter "
       "the colony forms a tight cluster and shivers its flight muscles to keep the core at about thirty-five "
       "degrees. Honey is nectar that the workers have concentrated by evaporation until it holds less than "
       "twenty percent water.")
QUOTES = ("Here is a document:\n\n" + DOC + "\n\nSummarise the document in four bullet points. Each bullet must "
          "quote one full sentence of the document word for word, in quotation marks.")
FREE = ["Once upon a time", "The capital of France is", "My favourite food is", "The best way to learn",
        "In the year 2050,", "The ocean is"]


def one(w, route, body):
    """Streams one OpenAI request; returns (delivered tokens/s, the text pieces, usage)."""
    conn = http.client.HTTPConnection("127.0.0.1", w.port, timeout=300)
    conn.request("POST", route, body=json.dumps(dict(body, stream=True, stream_options={"include_usage": True})),
                 headers=dict(w.headers(), **{"Content-Type": "application/json"}))
    r = conn.getresponse()
    assert r.status == 200, r.read()
    arrivals, pieces, usage = [], [], None
    for raw in r:
        line = raw.decode().strip()
        if not line.startswith("data: {"):
            continue
        d = json.loads(line[6:])
        if d.get("usage"):
            usage = d["usage"]
        for c in d.get("choices", []):
            t = c.get("text") if "text" in c else (c.get("delta") or {}).get("content")
            if t is not None:
                arrivals.append(time.monotonic_ns())
                pieces.append(t)
    conn.close()
    span = (arrivals[-1] - arrivals[0]) / 1e9 if len(arrivals) > 1 else 0
    return ((len(arrivals) - 1) / span if span > 0 else 0.0), pieces, usage


def workload(plain, spec, jobs, runs):
    res = {"plain_tps": [], "spec_tps": [], "tokens": 0, "drafted": 0, "accepted": 0, "identical": True}
    for _ in range(runs):
        for route, body in jobs:
            p_tps, p_out, _ = one(plain, route, body)
            s_tps, s_out, usage = one(spec, route, body)
            res["plain_tps"].append(p_tps)
            res["spec_tps"].append(s_tps)
            res["identical"] &= p_out == s_out
            res["tokens"] += usage["completion_tokens"]
            det = usage["completion_tokens_details"]
            res["accepted"] += det["accepted_prediction_tokens"]
            res["drafted"] += det["accepted_prediction_tokens"] + det["rejected_prediction_tokens"]
    p, s = statistics.median(res["plain_tps"]), statistics.median(res["spec_tps"])
    out = {"plain_tps": round(p, 2), "spec_tps": round(s, 2), "speedup": round(s / p, 3), "tokens": res["tokens"],
           "identical_output": res["identical"]}
    if res["drafted"]:
        out["prediction_drafted"] = res["drafted"]
        out["prediction_acceptance"] = round(res["accepted"] / res["drafted"], 3)
    return out


def lookup_rate(w, before):
    info = w.info()["speculation"]["lookup"]
    d, a = info["drafted"] - before["drafted"], info["accepted"] - before["accepted"]
    return {"lookup_drafted": d, "lookup_accepted": a, "lookup_acceptance": round(a / d, 3) if d else None}, info


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=str(ROOT / "build"))
    ap.add_argument("--model", default=str(ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"))
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--spec-max", type=int, default=15)
    a = ap.parse_args()
    build, model = pathlib.Path(a.build).resolve(), pathlib.Path(a.model).resolve()
    common = ["--threads", str(a.threads)]
    # A chat request that shows the file and asks for it back with one method renamed; the client predicts
    # the file as it was (OpenAI Predicted Outputs). The instruct model re-emits the file nearly line for
    # line (a plain-completion "copy the file" prompt makes this 135M model wander off after a few lines).
    edit_msg = "```python\n" + CODE + "```\n" + EDIT + " Reply with the full code only."
    jobs = {
        "edit": [("/v1/chat/completions", {"model": "m", "messages": [{"role": "user", "content": edit_msg}],
                                           "max_tokens": 480, "temperature": 0,
                                           "prediction": {"type": "content", "content": "```python\n" + CODE + "```\n"}})],
        "quotes": [("/v1/chat/completions", {"model": "m", "messages": [{"role": "user", "content": QUOTES}],
                                             "max_tokens": 200, "temperature": 0})],
        "free": [("/v1/completions", {"model": "m", "prompt": p, "max_tokens": 128, "temperature": 0}) for p in FREE] +
                [("/v1/completions", {"model": "m", "prompt": p, "max_tokens": 128, "temperature": 0.8, "seed": 7})
                 for p in FREE[:3]],
    }
    result = {"threads": a.threads, "spec_max": a.spec_max, "runs": a.runs, "load_before": os.getloadavg()}
    with Worker(build, model, slots=1, extra=common + ["--spec-max", "0"]) as plain, \
            Worker(build, model, slots=1, extra=common + ["--spec-max", str(a.spec_max)]) as spec:
        plain.wait_ready()
        spec.wait_ready()
        warm = {"model": "m", "prompt": "warm up", "max_tokens": 8}
        one(plain, "/v1/completions", warm)
        one(spec, "/v1/completions", warm)
        before = spec.info()["speculation"]["lookup"]
        for name, js in jobs.items():
            result[name] = workload(plain, spec, js, a.runs)
            lk, before = lookup_rate(spec, before)
            result[name].update(lk)
        # what the model wrote for the edit: a small model may not copy the file faithfully
        _, out, _ = one(spec, *jobs["edit"][0])
        text = "".join(out)
        result["edit"]["output_matches_file_lines"] = sum(1 for ln in text.splitlines() if ln and ln in CODE)
        result["edit"]["output_lines"] = len(text.splitlines())
        result["engine_info_speculation"] = spec.info()["speculation"]
    result["load_after"] = os.getloadavg()
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
