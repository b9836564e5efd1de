#!/usr/bin/env python3
"""Writes the exact first-step logits of the reference prompts: the llama forward pass in float64 numpy
over the dequantized weights of the GGUF file, with no activation quantization and no float16 cache.

llama.cpp and beeworker both quantize activations to 8 bits inside their matrix products, so each sits at
some distance from this exact result; tests/integration/test_reference_parity.py uses these files to show
that beeworker is as close to the exact computation as llama.cpp is (and so to bound what a "near-tie"
between the two can be). Needs numpy and the `gguf` package (pip install gguf).

usage: tests/tools/make_exact_logits.py [--model PATH] [--golden tests/golden]
"""
import argparse
import json
import pathlib
import sys

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[2]


class Model:
    def __init__(self, path):
        from gguf import GGUFReader
        from gguf.quants import dequantize

        r = GGUFReader(path)
        self.f = {k: v.contents() for k, v in r.fields.items() if not k.startswith("tokenizer.")}
        self.t = {t.name: dequantize(t.data, t.tensor_type).reshape(tuple(int(x) for x in t.shape[::-1]))
                  .astype(np.float64) for t in r.tensors}
        a = self.f["general.architecture"]
        self.n_layer = int(self.f[f"{a}.block_count"])
        self.n_head = int(self.f[f"{a}.attention.head_count"])
        self.n_kv = int(self.f.get(f"{a}.attention.head_count_kv", self.n_head))
        self.eps = float(self.f[f"{a}.attention.layer_norm_rms_epsilon"])
        self.base = float(self.f.get(f"{a}.rope.freq_base", 10000.0))
        self.dim = self.t["token_embd.weight"].shape[1]
        self.hd = self.dim // self.n_head

    def rms(self, x, w):
        return x / np.sqrt((x * x).mean(-1, keepdims=True) + self.eps) * w

    def rope(self, v, n_heads):
        n = v.shape[0]
        v = v.reshape(n, n_heads, self.hd)
        pos = np.arange(n)[:, None]
        theta = pos * self.base ** (-np.arange(0, self.hd, 2) / self.hd)  # (n, hd/2)
        c, s = np.cos(theta)[:, None, :], np.sin(theta)[:, None, :]
        a, b = v[..., 0::2], v[..., 1::2]
        out = np.empty_like(v)
        out[..., 0::2] = a * c - b * s
        out[..., 1::2] = a * s + b * c
        return out

    def logits(self, ids):
        t = self.t
        x = t["token_embd.weight"][ids]
        n = len(ids)
        mask = np.triu(np.full((n, n), -np.inf), 1)
        group = self.n_head // self.n_kv
        for layer in range(self.n_layer):
            w = lambda s: t[f"blk.{layer}.{s}.weight"]
            h = self.rms(x, w("attn_norm"))
            q = self.rope(h @ w("attn_q").T, self.n_head)
            k = self.rope(h @ w("attn_k").T, self.n_kv)
            v = (h @ w("attn_v").T).reshape(n, self.n_kv, self.hd)
            att = np.empty((n, self.n_head, self.hd))
            for hh in range(self.n_head):
                s = q[:, hh] @ k[:, hh // group].T / np.sqrt(self.hd) + mask
                s = np.exp(s - s.max(-1, keepdims=True))
                att[:, hh] = (s / s.sum(-1, keepdims=True)) @ v[:, hh // group]
            x = x + att.reshape(n, -1) @ w("attn_output").T
            h = self.rms(x, w("ffn_norm"))
            g, u = h @ w("ffn_gate").T, h @ w("ffn_up").T
            x = x + (g / (1 + np.exp(-g)) * u) @ w("ffn_down").T
        out = t.get("output.weight", t["token_embd.weight"])
        return out @ self.rms(x[-1], t["output_norm.weight"])


def write_exact(model: str, golden_dir) -> None:
    """Writes exact_logits_<case>.f32 next to the llama.cpp outputs in golden_dir, for `model`."""
    golden = pathlib.Path(golden_dir)
    doc = json.loads((golden / "generation_smollm2.json").read_text())
    m = Model(model)
    for case in doc["cases"]:
        if not case["full_logits"]:
            continue
        exact = m.logits(case["prompt_ids"]).astype(np.float32)
        exact.tofile(golden / f"exact_logits_{case['name']}.f32")
        ref = np.fromfile(golden / f"logits_{case['name']}.f32", dtype=np.float32)
        cos = float(exact @ ref / np.linalg.norm(exact) / np.linalg.norm(ref))
        print(f"{case['name']}: llama.cpp vs exact: cosine {cos:.6f}, max |diff| {np.abs(exact - ref).max():.3f}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=str(ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"))
    ap.add_argument("--golden", default=str(ROOT / "tests" / "golden"))
    a = ap.parse_args()
    write_exact(a.model, a.golden)
    return 0


if __name__ == "__main__":
    sys.exit(main())
