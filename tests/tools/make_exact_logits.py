#!/usr/bin/env python3
"""Writes the exact first-step logits of the reference prompts: the forward pass in float64 numpy
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
    """The forward pass of every architecture the engine runs (llama, qwen2, qwen3, phi3, gemma3), written
    from the same description the engine reads: metadata keys and which tensors exist."""

    def __init__(self, path):
        from gguf import GGUFReader
        from gguf.quants import dequantize

        r = GGUFReader(path)
        self.f = {k: v.contents() for k, v in r.fields.items() if not k.startswith("tokenizer.")}
        self.t = {t.name: dequantize(t.data, t.tensor_type).reshape(tuple(int(x) for x in t.shape[::-1]))
                  .astype(np.float64) for t in r.tensors}
        a = self.arch = self.f["general.architecture"]
        g = lambda k, d=None: self.f.get(f"{a}.{k}", d)
        self.n_layer = int(g("block_count"))
        self.n_head = int(g("attention.head_count"))
        self.n_kv = int(g("attention.head_count_kv", self.n_head))
        self.eps = float(g("attention.layer_norm_rms_epsilon"))
        self.dim = self.t["token_embd.weight"].shape[1]
        self.hd = int(g("attention.key_length", self.dim // self.n_head))
        self.n_rot = int(g("rope.dimension_count", self.hd))
        self.neox = a != "llama"
        scale = 1.0
        if g("rope.scaling.type", "linear") == "linear":
            scale = float(g("rope.scaling.factor", 1.0) or 1.0)
        self.freqs = self.t.get("rope_freqs.weight")
        gemma = a == "gemma3"
        self.embd_scale = np.sqrt(self.dim) if gemma else 1.0
        self.attn_scale = 1.0 / np.sqrt(self.hd)
        self.softcap = float(g("final_logit_softcapping", 0.0) or 0.0)
        self.gelu = gemma
        # per layer: (rope base, rope scale, sliding window or 0)
        base = float(g("rope.freq_base", 10000.0))
        window = int(g("attention.sliding_window", 0)) if gemma else 0
        pattern = int(g("attention.sliding_window_pattern", 6))
        self.layer_rope = []
        for i in range(self.n_layer):
            swa = window > 0 and (pattern == 0 or i % pattern < pattern - 1)
            self.layer_rope.append((float(g("rope.freq_base_swa", 10000.0)), 1.0, window) if swa
                                   else (base, scale, 0))

    def rms(self, x, w):
        return x / np.sqrt((x * x).mean(-1, keepdims=True) + self.eps) * w

    def rope(self, v, n_heads, base, scale):
        n = v.shape[0]
        v = v.reshape(n, n_heads, self.hd).copy()
        half = self.n_rot // 2
        pos = np.arange(n)[:, None]
        theta = pos / scale * base ** (-np.arange(0, self.n_rot, 2) / self.n_rot)  # (n, n_rot/2)
        if self.freqs is not None:
            theta = theta / self.freqs
        c, s = np.cos(theta)[:, None, :], np.sin(theta)[:, None, :]
        if self.neox:
            ia, ib = np.arange(half), np.arange(half) + half
        else:
            ia, ib = np.arange(0, self.n_rot, 2), np.arange(1, self.n_rot, 2)
        a, b = v[..., ia], v[..., ib]
        v[..., ia], v[..., ib] = a * c - b * s, a * s + b * c
        return v

    def logits(self, ids):
        t = self.t
        x = t["token_embd.weight"][ids] * self.embd_scale
        n = len(ids)
        group = self.n_head // self.n_kv
        q_dim, kv_dim = self.n_head * self.hd, self.n_kv * self.hd
        for layer in range(self.n_layer):
            w = lambda s: t[f"blk.{layer}.{s}.weight"]
            opt = lambda s: t.get(f"blk.{layer}.{s}")
            base, scale, window = self.layer_rope[layer]
            pos = np.arange(n)
            allowed = pos[None, :] <= pos[:, None]
            if window:
                allowed &= pos[:, None] - pos[None, :] < window
            mask = np.where(allowed, 0.0, -np.inf)
            h = self.rms(x, w("attn_norm"))
            if opt("attn_qkv.weight") is not None:
                qkv = h @ w("attn_qkv").T
                q, k, v = qkv[:, :q_dim], qkv[:, q_dim:q_dim + kv_dim], qkv[:, q_dim + kv_dim:]
            else:
                q, k, v = h @ w("attn_q").T, h @ w("attn_k").T, h @ w("attn_v").T
            for name, part in (("attn_q.bias", q), ("attn_k.bias", k), ("attn_v.bias", v)):
                if opt(name) is not None:
                    part += opt(name)
            if opt("attn_q_norm.weight") is not None:
                q = self.rms(q.reshape(n, self.n_head, self.hd), w("attn_q_norm")).reshape(n, -1)
                k = self.rms(k.reshape(n, self.n_kv, self.hd), w("attn_k_norm")).reshape(n, -1)
            q = self.rope(q, self.n_head, base, scale)
            k = self.rope(k, self.n_kv, base, scale)
            v = v.reshape(n, self.n_kv, self.hd)
            att = np.empty((n, self.n_head, self.hd))
            for hh in range(self.n_head):
                s = q[:, hh] @ k[:, hh // group].T * self.attn_scale + mask
                s = np.exp(s - s.max(-1, keepdims=True))
                att[:, hh] = (s / s.sum(-1, keepdims=True)) @ v[:, hh // group]
            o = att.reshape(n, -1) @ w("attn_output").T
            if opt("post_attention_norm.weight") is not None:
                o = self.rms(o, w("post_attention_norm"))
            x = x + o
            h = self.rms(x, w("ffn_norm"))
            if opt("ffn_gate.weight") is not None:
                g, u = h @ w("ffn_gate").T, h @ w("ffn_up").T
            else:  # phi3: ffn_up holds the gate rows, then the up rows
                gu = h @ w("ffn_up").T
                g, u = gu[:, :gu.shape[1] // 2], gu[:, gu.shape[1] // 2:]
            if self.gelu:
                act = 0.5 * g * (1 + np.tanh(np.sqrt(2 / np.pi) * (g + 0.044715 * g ** 3)))
            else:
                act = g / (1 + np.exp(-g))
            f = (act * u) @ w("ffn_down").T
            if opt("post_ffw_norm.weight") is not None:
                f = self.rms(f, w("post_ffw_norm"))
            x = x + f
        out = t.get("output.weight", t["token_embd.weight"])
        z = out @ self.rms(x[-1], t["output_norm.weight"])
        if self.softcap > 0:
            z = self.softcap * np.tanh(z / self.softcap)
        return z


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
