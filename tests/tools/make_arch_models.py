#!/usr/bin/env python3
"""Writes one tiny random-weight GGUF per architecture the engine runs, and llama.cpp's outputs on it.

Into tests/.cache/models/ (git-ignored), for each NAME in ARCHS:
  tiny-NAME.gguf           the model: the real architecture's tensors and keys (GQA, separate head size,
                           fused tensors, sliding window ...) at small widths, with the real vocabulary of
                           that family (llama.cpp's ggml-vocab-*.gguf, or the real gemma3 file's);
  tiny-NAME.json           llama.cpp's reference: for each prompt (plain and chat) the prompt's token ids,
                           the greedy continuation and the five best logits at every step;
  tiny-NAME.logits_CASE.f32 / tiny-NAME.exact_CASE.f32
                           the first-step logits of llama.cpp, and of the exact float64 forward pass
                           (tests/tools/make_exact_logits.py's Model) over the same weights.
and for the real files in REAL (the gemma3 270M Q4_K_M file), NAME.json and the two kinds of logits.
tests/integration/test_reference_parity.py compares the engine with these.

Needs numpy, the `gguf` package and llama-cpp-python (the reference); the vocabularies come from
tests/tools/fetch_vocab_files.sh and, for gemma3, scripts/fetch-gemma3.sh. Idempotent: a model whose
files exist and were made from the same description is left alone.

usage: tests/tools/make_arch_models.py [--out tests/.cache/models] [--force] [NAME ...]
"""
import argparse
import hashlib
import json
import pathlib
import sys

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

VOCAB = ROOT / "tests" / ".cache" / "vocab"
GEMMA3_FILE = ROOT / "models" / "gemma-3-270m-q4_k_m.gguf"

# Widths are small; the structure is each architecture's own. "f16"/"q8_0": type of the matrices.
ARCHS = {
    # Llama 3.1-style: per-dimension rope frequency factors (rope_freqs.weight), llama3 tokenizer.
    "llama3": dict(arch="llama", vocab=VOCAB / "ggml-vocab-llama-bpe.gguf", n_embd=64, n_head=4, n_kv=2,
                   n_ff=128, n_layer=2, rope_base=500000.0, eps=1e-5, wtype="f16", rope_freqs=True),
    # Qwen2: Q/K/V biases; quantized matrices (Q8_0).
    "qwen2": dict(arch="qwen2", vocab=VOCAB / "ggml-vocab-qwen2.gguf", n_embd=64, n_head=4, n_kv=2, n_ff=128,
                  n_layer=2, rope_base=1000000.0, eps=1e-6, wtype="q8_0", qkv_bias=True),
    # Qwen3: per-head Q/K RMS norms, head size 32 with a width of 64 (queries 128 wide).
    "qwen3": dict(arch="qwen3", vocab=VOCAB / "ggml-vocab-qwen2.gguf", n_embd=64, n_head=4, n_kv=2, n_ff=128,
                  n_layer=3, rope_base=1000000.0, eps=1e-6, wtype="f16", head_dim=32, qk_norm=True),
    # Phi-3: fused attn_qkv and gate/up; its file names a sliding window that llama.cpp ignores for phi3.
    "phi3": dict(arch="phi3", vocab=VOCAB / "ggml-vocab-phi-3.gguf", n_embd=64, n_head=4, n_kv=4, n_ff=128,
                 n_layer=2, rope_base=10000.0, eps=1e-5, wtype="f16", fused=True, swa=8),
    # Gemma 3: scaled embeddings, GeGLU, post-norms, Q/K norms, head size 32 with width 64, one KV head,
    # 7 layers of which layer 5 is global and the others slide over 8 positions with their own rope base;
    # linear rope scaling on the global layer; logit soft-capping; tied output.
    "gemma3": dict(arch="gemma3", vocab=GEMMA3_FILE, n_embd=64, n_head=4, n_kv=1, n_ff=128, n_layer=7,
                   rope_base=1000000.0, eps=1e-6, wtype="f16", head_dim=32, qk_norm=True, post_norms=True,
                   swa=8, rope_base_swa=20000.0, rope_linear=8.0, softcap=30.0, tied=True),
}

# Real files checked the same way (plain prompts; a file without a chat template has no chat case).
REAL = {"gemma3-270m": GEMMA3_FILE}

PROMPTS = [
    ("capital", False, "The capital of France is"),
    ("story", False, "Once upon a time, in a small village by the sea, there lived an old fisherman who"),
    ("code", False, "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n"),
    ("chat_hello", True, "Hello! Who are you?"),
]
N_TOKENS = 32


def description_hash(name):
    cfg = {k: str(v) for k, v in ARCHS[name].items()} if name else {}
    src = pathlib.Path(__file__).read_bytes()
    return hashlib.sha256(json.dumps(cfg, sort_keys=True).encode() + src).hexdigest()[:16]


def copy_tokenizer(w, vocab_path):
    """Every tokenizer.* key of the vocabulary file, as it is (and its general.name, which llama.cpp reads
    for phi-3's special-token handling)."""
    from gguf import GGUFReader, GGUFValueType

    r = GGUFReader(str(vocab_path))
    for key, f in r.fields.items():
        if not key.startswith("tokenizer."):
            continue
        vtype = GGUFValueType(f.types[0])
        if vtype == GGUFValueType.ARRAY:
            w.add_key_value(key, f.contents(), vtype, sub_type=GGUFValueType(f.types[-1]))
        else:
            w.add_key_value(key, f.contents(), vtype)
    n_vocab = len(r.fields["tokenizer.ggml.tokens"].data)
    name = r.fields["general.name"].contents() if "general.name" in r.fields else None
    return n_vocab, name


def write_model(name, path):
    import gguf
    from make_golden_chat import GEMMA

    c = ARCHS[name]
    a = c["arch"]
    rng = np.random.default_rng(int(hashlib.sha256(name.encode()).hexdigest()[:8], 16))
    w = gguf.GGUFWriter(str(path), a)
    n_vocab, vocab_name = copy_tokenizer(w, c["vocab"])
    w.add_name(f"tiny {name} ({vocab_name})" if vocab_name else f"tiny {name}")
    E, H, KV, FF, L = c["n_embd"], c["n_head"], c["n_kv"], c["n_ff"], c["n_layer"]
    hd = c.get("head_dim", E // H)
    w.add_uint32(f"{a}.block_count", L)
    w.add_uint32(f"{a}.context_length", 4096)
    w.add_uint32(f"{a}.embedding_length", E)
    w.add_uint32(f"{a}.feed_forward_length", FF)
    w.add_uint32(f"{a}.attention.head_count", H)
    w.add_uint32(f"{a}.attention.head_count_kv", KV)
    w.add_float32(f"{a}.attention.layer_norm_rms_epsilon", c["eps"])
    w.add_float32(f"{a}.rope.freq_base", c["rope_base"])
    if "head_dim" in c:
        w.add_uint32(f"{a}.attention.key_length", hd)
        w.add_uint32(f"{a}.attention.value_length", hd)
    if a in ("llama", "phi3"):
        w.add_uint32(f"{a}.rope.dimension_count", hd)
    if "swa" in c:
        w.add_uint32(f"{a}.attention.sliding_window", c["swa"])
    if "rope_base_swa" in c:
        w.add_float32(f"{a}.rope.freq_base_swa", c["rope_base_swa"])
    if "rope_linear" in c:
        w.add_string(f"{a}.rope.scaling.type", "linear")
        w.add_float32(f"{a}.rope.scaling.factor", c["rope_linear"])
    if "softcap" in c:
        w.add_float32(f"{a}.final_logit_softcapping", c["softcap"])
    if a == "gemma3":
        w.add_string("tokenizer.chat_template", GEMMA)

    qtype = gguf.GGMLQuantizationType.Q8_0 if c["wtype"] == "q8_0" else gguf.GGMLQuantizationType.F16

    def mat(tname, rows, cols, std=None):
        x = rng.standard_normal((rows, cols)).astype(np.float32) * np.float32(std or 1.0 / np.sqrt(cols))
        if qtype == gguf.GGMLQuantizationType.Q8_0:
            w.add_tensor(tname, gguf.quants.quantize(x, qtype), raw_dtype=qtype)
        else:
            w.add_tensor(tname, x.astype(np.float16))

    def vec(tname, n, mean=1.0, std=0.1):
        w.add_tensor(tname, (mean + std * rng.standard_normal(n)).astype(np.float32))

    # Logits of a few units' spread, so greedy steps are decided by the model, not by rounding.
    mat("token_embd.weight", n_vocab, E, std=0.5)
    vec("output_norm.weight", E)
    if not c.get("tied"):
        mat("output.weight", n_vocab, E, std=0.5)
    if c.get("rope_freqs"):
        w.add_tensor("rope_freqs.weight", np.array([1, 1, 1, 2, 4, 8, 16, 32], dtype=np.float32)[: hd // 2])
    for i in range(L):
        p = f"blk.{i}."
        vec(p + "attn_norm.weight", E)
        if c.get("fused"):
            mat(p + "attn_qkv.weight", H * hd + 2 * KV * hd, E)
        else:
            mat(p + "attn_q.weight", H * hd, E)
            mat(p + "attn_k.weight", KV * hd, E)
            mat(p + "attn_v.weight", KV * hd, E)
        if c.get("qkv_bias"):
            vec(p + "attn_q.bias", H * hd, 0.0, 0.5)
            vec(p + "attn_k.bias", KV * hd, 0.0, 0.5)
            vec(p + "attn_v.bias", KV * hd, 0.0, 0.5)
        if c.get("qk_norm"):
            vec(p + "attn_q_norm.weight", hd)
            vec(p + "attn_k_norm.weight", hd)
        mat(p + "attn_output.weight", E, H * hd)
        if c.get("post_norms"):
            vec(p + "post_attention_norm.weight", E)
            vec(p + "post_ffw_norm.weight", E)
        vec(p + "ffn_norm.weight", E)
        if c.get("fused"):
            mat(p + "ffn_up.weight", 2 * FF, E)
        else:
            mat(p + "ffn_gate.weight", FF, E)
            mat(p + "ffn_up.weight", FF, E)
        mat(p + "ffn_down.weight", E, FF)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def render_chat(template, user, bos, eos):
    import jinja2
    import jinja2.sandbox

    env = jinja2.sandbox.ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    return env.from_string(template).render(messages=[{"role": "user", "content": user}],
                                            add_generation_prompt=True, bos_token=bos, eos_token=eos)


def reference(label, path, out):
    """llama.cpp's prompt ids, greedy continuation, top-5 logits per step and first-step logits."""
    import llama_cpp
    from llama_cpp import Llama
    from make_exact_logits import Model

    llm = Llama(str(path), n_ctx=256, n_threads=2, logits_all=True, verbose=False)
    exact = Model(str(path))
    meta = llm.metadata
    template = meta.get("tokenizer.chat_template", "")
    bos = llm.detokenize([llm.token_bos()], special=True).decode() if llm.token_bos() >= 0 else ""
    eos = llm.detokenize([llm.token_eos()], special=True).decode() if llm.token_eos() >= 0 else ""
    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    cases, dist = [], []
    for pname, chat, text in PROMPTS:
        if chat and not template:
            continue
        full = render_chat(template, text, bos, eos) if chat else text
        # the engine's rule: a chat prompt that already starts with BOS text gets no second BOS
        add_bos = bool(llama_cpp.llama_vocab_get_add_bos(vocab)) and not (chat and bos and full.startswith(bos))
        ids = llm.tokenize(full.encode(), add_bos=add_bos, special=chat)
        llm.reset()
        llm.eval(ids)
        gen, top5 = [], []
        for step in range(N_TOKENS):
            logits = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float32)
            if step == 0:
                logits.tofile(out / f"{label}.logits_{pname}.f32")
                ex = exact.logits(ids).astype(np.float32)
                ex.tofile(out / f"{label}.exact_{pname}.f32")
                dist.append(float(np.abs(ex.astype(np.float64) - logits).max()))
            order = np.argsort(-logits, kind="stable")[:5]
            top5.append([[int(i), float(logits[i])] for i in order])
            nid = int(order[0])
            gen.append(nid)
            if llama_cpp.llama_vocab_is_eog(vocab, nid):
                break
            llm.eval([nid])
        cases.append({"name": pname, "chat": chat, "prompt": text, "rendered": full, "prompt_ids": ids,
                      "ids": gen, "top5": top5, "full_logits": True})
        print(f"{label} {pname}: {len(ids)} prompt tokens, {len(gen)} generated; llama.cpp vs exact "
              f"max |diff| {dist[-1]:.5f}")
    return {"model": path.name, "arch": meta["general.architecture"],
            "reference": f"llama.cpp via llama-cpp-python {llama_cpp.__version__}", "n_tokens": N_TOKENS,
            "ref_vs_exact": max(dist), "cases": cases}


def real_reference(name, out, force):
    """llama.cpp's outputs on a real file (the model itself stays where its fetch script put it)."""
    path, doc_path = REAL[name], out / f"{name}.json"
    if not path.exists():
        sys.exit(f"{path} is missing: run scripts/fetch-gemma3.sh first")
    stamp = description_hash(None) + f"-{path.stat().st_size}"
    if not force and doc_path.exists() and json.loads(doc_path.read_text()).get("made_from") == stamp:
        print(f"{doc_path.relative_to(ROOT)}: up to date")
        return
    doc = reference(name, path, out)
    doc["made_from"] = stamp
    doc_path.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"{doc_path.relative_to(ROOT)}: written")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=str(ROOT / "tests" / ".cache" / "models"))
    ap.add_argument("--force", action="store_true")
    ap.add_argument("names", nargs="*", default=list(ARCHS) + list(REAL))
    a = ap.parse_args()
    out = pathlib.Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    for name in a.names:
        if name in REAL:
            real_reference(name, out, a.force)
            continue
        path, doc_path = out / f"tiny-{name}.gguf", out / f"tiny-{name}.json"
        stamp = description_hash(name)
        if not a.force and path.exists() and doc_path.exists() and \
                json.loads(doc_path.read_text()).get("made_from") == stamp:
            print(f"{path.relative_to(ROOT)}: up to date")
            continue
        if not ARCHS[name]["vocab"].exists():
            sys.exit(f"{ARCHS[name]['vocab']} is missing: run tests/tools/fetch_vocab_files.sh "
                     "and scripts/fetch-gemma3.sh first")
        doc_path.unlink(missing_ok=True)
        write_model(name, path)
        doc = reference(f"tiny-{name}", path, out)
        doc["made_from"] = stamp
        doc_path.write_text(json.dumps(doc, indent=1) + "\n")
        print(f"{path.relative_to(ROOT)}: written, {path.stat().st_size >> 20} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
