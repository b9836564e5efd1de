#!/usr/bin/env python3
"""Writes the seed inputs of the fuzz targets into tests/fuzz/corpus/<target>/ (small, hand-made, each
reaching a different path). The proto seeds come from proto_seeds (built by meson), since only the C
encoder defines that format: make_corpus.py [BUILD_DIR]. Inputs libFuzzer found later sit beside these."""
import json
import pathlib
import struct
import subprocess
import sys

HERE = pathlib.Path(__file__).resolve().parent
CORPUS = HERE / "corpus"


def write(target, name, data):
    d = CORPUS / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data if isinstance(data, bytes) else data.encode())


# ---- GGUF ----
U8, I8, U16, I16, U32, I32, F32, BOOL, STR, ARR, U64, I64, F64 = range(13)
PACK = {U8: "<B", I8: "<b", U16: "<H", I16: "<h", U32: "<I", I32: "<i", F32: "<f", BOOL: "<B", U64: "<Q",
        I64: "<q", F64: "<d"}


def gstr(s):
    b = s if isinstance(s, bytes) else s.encode()
    return struct.pack("<Q", len(b)) + b


def value(t, v):
    if t == STR:
        return gstr(v)
    if t == ARR:
        et, items = v
        return struct.pack("<IQ", et, len(items)) + b"".join(value(et, x) for x in items)
    return struct.pack(PACK[t], v)


def gguf(kvs, tensors=(), version=3, alignment=32):
    """kvs: [(key, type, value)]; tensors: [(name, dims, ggml_type, data bytes)]."""
    out = b"GGUF" + struct.pack("<IQQ", version, len(tensors), len(kvs))
    for k, t, v in kvs:
        out += gstr(k) + struct.pack("<I", t) + value(t, v)
    offsets, off = [], 0
    for _, _, _, data in tensors:
        offsets.append(off)
        off += -(-len(data) // alignment) * alignment
    for (name, dims, tt, _), o in zip(tensors, offsets):
        out += gstr(name) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims)
        out += struct.pack("<IQ", tt, o)
    out += b"\0" * ((-len(out)) % alignment)
    for _, _, _, data in tensors:
        out += data + b"\0" * ((-len(data)) % alignment)
    return out


BPE_TOKENS = ["a", "b", "c", "d", "\u0120", "ab", "abc", "<|end|>", "<|im_start|>", "<|im_end|>"]
BPE = [("tokenizer.ggml.model", STR, "gpt2"), ("tokenizer.ggml.tokens", ARR, (STR, BPE_TOKENS)),
       ("tokenizer.ggml.token_type", ARR, (I32, [1, 1, 1, 1, 1, 1, 1, 3, 3, 3])),
       ("tokenizer.ggml.merges", ARR, (STR, ["a b", "ab c"])), ("tokenizer.ggml.eos_token_id", U32, 7)]
SPM_TOKENS = ["<unk>", "<s>", "</s>", "<0x41>", "<0x0A>", "\u2581", "a", "\u2581a", "b", "ab"]
SPM = [("tokenizer.ggml.model", STR, "llama"), ("tokenizer.ggml.tokens", ARR, (STR, SPM_TOKENS)),
       ("tokenizer.ggml.token_type", ARR, (I32, [2, 3, 3, 6, 6, 1, 1, 1, 1, 1])),
       ("tokenizer.ggml.scores", ARR, (F32, [0, 0, 0, 0, 0, -1, -2, -3, -4, -5])),
       ("tokenizer.ggml.bos_token_id", U32, 1), ("tokenizer.ggml.eos_token_id", U32, 2),
       ("tokenizer.ggml.add_bos_token", BOOL, 1)]
CHATML = "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n{% endfor %}"


def arch_model(arch, vocab):
    """A complete model of `arch` at widths 8 (2 heads of 4, 1 KV head, FFN 8, 2 layers), zero weights:
    reaches bw_model_load's per-architecture keys and tensors."""
    E, H, KV, HD, FF, L = 8, 2, 1, 4, 8, 2
    n_vocab = len(next(v for k, _, v in vocab if k == "tokenizer.ggml.tokens")[1])
    kvs = [("general.architecture", STR, arch), (f"{arch}.block_count", U32, L), (f"{arch}.context_length", U32, 64),
           (f"{arch}.embedding_length", U32, E), (f"{arch}.feed_forward_length", U32, FF),
           (f"{arch}.attention.head_count", U32, H), (f"{arch}.attention.head_count_kv", U32, KV),
           (f"{arch}.attention.layer_norm_rms_epsilon", F32, 1e-6)]
    if arch == "gemma3":
        kvs += [(f"{arch}.attention.sliding_window", U32, 4), (f"{arch}.attention.sliding_window_pattern", U32, 2),
                (f"{arch}.final_logit_softcapping", F32, 30.0)]
    zeros = lambda n: b"\0" * 4 * n
    ts = [("token_embd.weight", [E, n_vocab], 0, zeros(E * n_vocab)), ("output_norm.weight", [E], 0, zeros(E))]
    if arch == "llama":
        ts.append(("rope_freqs.weight", [HD // 2], 0, struct.pack("<2f", 1.0, 4.0)))
    for i in range(L):
        b = f"blk.{i}."
        ts += [(b + "attn_norm.weight", [E], 0, zeros(E)), (b + "ffn_norm.weight", [E], 0, zeros(E)),
               (b + "attn_output.weight", [H * HD, E], 0, zeros(H * HD * E)),
               (b + "ffn_down.weight", [FF, E], 0, zeros(FF * E))]
        if arch == "phi3":
            ts += [(b + "attn_qkv.weight", [E, (H + 2 * KV) * HD], 0, zeros(E * (H + 2 * KV) * HD)),
                   (b + "ffn_up.weight", [E, 2 * FF], 0, zeros(E * 2 * FF))]
        else:
            ts += [(b + "attn_q.weight", [E, H * HD], 0, zeros(E * H * HD)),
                   (b + "attn_k.weight", [E, KV * HD], 0, zeros(E * KV * HD)),
                   (b + "attn_v.weight", [E, KV * HD], 0, zeros(E * KV * HD)),
                   (b + "ffn_gate.weight", [E, FF], 0, zeros(E * FF)), (b + "ffn_up.weight", [E, FF], 0, zeros(E * FF))]
        if arch == "qwen2":
            ts += [(b + "attn_q.bias", [H * HD], 0, zeros(H * HD)), (b + "attn_k.bias", [KV * HD], 0, zeros(KV * HD)),
                   (b + "attn_v.bias", [KV * HD], 0, zeros(KV * HD))]
        if arch in ("qwen3", "gemma3"):
            ts += [(b + "attn_q_norm.weight", [HD], 0, zeros(HD)), (b + "attn_k_norm.weight", [HD], 0, zeros(HD))]
        if arch == "gemma3":
            ts += [(b + "post_attention_norm.weight", [E], 0, zeros(E)), (b + "post_ffw_norm.weight", [E], 0, zeros(E))]
    return gguf(kvs + vocab, ts)


def gguf_seeds():
    for arch, vocab in (("llama", BPE + [("tokenizer.ggml.pre", STR, "llama-bpe")]),
                        ("qwen2", BPE + [("tokenizer.ggml.pre", STR, "qwen2")]),
                        ("qwen3", BPE + [("tokenizer.ggml.pre", STR, "qwen2")]),
                        ("phi3", SPM + [("general.name", STR, "Phi3"),
                                        ("tokenizer.chat_template", STR, "<|user|>\n<|end|>\n<|assistant|>")]),
                        ("gemma3", SPM + [("tokenizer.ggml.add_space_prefix", BOOL, 0),
                                          ("tokenizer.chat_template", STR, "<start_of_turn>user\n")])):
        write("gguf", f"model_{arch}", arch_model(arch, vocab))
    write("gguf", "empty_v3", gguf([]))
    write("gguf", "empty_v2", gguf([], version=2))
    write("gguf", "scalars", gguf([("u8", U8, 1), ("i8", I8, -1), ("u16", U16, 2), ("i16", I16, -2),
                                   ("general.alignment", U32, 32), ("i32", I32, -4), ("f32", F32, 0.5),
                                   ("b", BOOL, 1), ("u64", U64, 8), ("i64", I64, -8), ("f64", F64, 0.25),
                                   ("general.name", STR, "tiny")]))
    write("gguf", "arrays", gguf([("a_u8", ARR, (U8, [1, 2, 3])), ("a_f32", ARR, (F32, [1.0, 2.0])),
                                  ("a_str", ARR, (STR, ["x", "", "yz"])), ("a_empty", ARR, (I64, []))]))
    f32 = struct.pack("<4f", 1, 2, 3, 4)
    q4_0 = struct.pack("<e", 0.5) + bytes(range(16))  # one block of 32
    q8_0 = struct.pack("<e", 0.25) + bytes(range(32))
    f16 = struct.pack("<4e", 1, 2, 3, 4)
    write("gguf", "tensors", gguf([("general.architecture", STR, "llama")],
                                  [("t.f32", [4], 0, f32), ("t.f16", [2, 2], 1, f16), ("t.q4_0", [32], 2, q4_0),
                                   ("t.q8_0", [32, 1], 8, q8_0)]))
    # K types: one 256-element super-block each (Q4_K, Q6_K), and Q5_0 / Q5_1 blocks of 32.
    q4_k = struct.pack("<ee", 0.5, 0.125) + bytes(range(12)) + bytes(range(128))
    q6_k = bytes(range(128)) + bytes(range(64)) + bytes(range(16)) + struct.pack("<e", 0.25)
    q5_0 = struct.pack("<e", 0.5) + bytes(range(20))
    q5_1 = struct.pack("<ee", 0.5, -1.0) + bytes(range(20))
    write("gguf", "tensors_kquant", gguf([("general.architecture", STR, "llama")],
                                         [("t.q4_k", [256], 12, q4_k), ("t.q6_k", [256, 1], 14, q6_k),
                                          ("t.q5_0", [32], 6, q5_0), ("t.q5_1", [32], 7, q5_1)]))
    write("gguf", "tensors_kquant_short", gguf([], [("t.q4_k", [512], 12, q4_k)]))
    write("gguf", "tensors_align64", gguf([("general.alignment", U32, 64)], [("w", [4], 0, f32)], alignment=64))
    write("gguf", "vocab_bpe", gguf(BPE + [("tokenizer.ggml.pre", STR, "smollm"),
                                           ("tokenizer.chat_template", STR, CHATML)]))
    write("gguf", "vocab_bpe_llama3", gguf(BPE + [("tokenizer.ggml.pre", STR, "llama-bpe")]))
    write("gguf", "vocab_bpe_gpt2", gguf(BPE + [("tokenizer.ggml.pre", STR, "gpt-2")]))
    write("gguf", "vocab_spm", gguf(SPM + [("tokenizer.chat_template", STR, "[INST] <<SYS>>")]))
    whole = gguf(BPE + [("tokenizer.ggml.pre", STR, "smollm")], [("w", [4], 0, f32)])
    write("gguf", "truncated", whole[: len(whole) // 2])


# ---- tokenizer: texts ----
def tokenizer_seeds():
    texts = ["Hello, world!", "Once upon a time", "  leading and trailing spaces  ", "line\nbreaks\r\n\ttabs",
             "numbers 1234567 3.14159 1e10", "don't won't I'm we'll they've", "caf\u00e9 na\u00efve \u00fcber",
             "\u65e5\u672c\u8a9e\u306e\u6587\u7ae0", "\U0001f41d\U0001f600 emoji", "<|im_start|>user\nhi<|im_end|>",
             "def f(x):\n    return x**2\n", "\u0645\u0631\u062d\u0628\u0627", "a" * 200,
             "\u00a0non-breaking\u3000space", "{\"json\": [1, 2, 3]}"]
    for i, t in enumerate(texts):
        write("tokenizer", f"text{i:02d}", t)
    write("tokenizer", "invalid_utf8", b"ab\xff\xfe\xc3(\xe2\x82 \xf0\x9f\x90")
    write("tokenizer", "nul_bytes", b"a\0b\0\0c")


# ---- http: requests and bodies ----
def http_seeds():
    body = json.dumps({"prompt": "Once upon a time", "max_tokens": 16, "temperature": 0.7, "top_p": 0.9,
                       "top_k": 40, "seed": 42, "stop": ["\n", "END"], "min_p": 0.05, "repetition_penalty": 1.1})
    bodies = {
        "body_full": body,
        "body_op": json.dumps({"operation": "infer", "prompt": "x", "max_tokens": 1, "hive_id": "h",
                               "model": "m", "stream": True}),
        "body_bad_types": json.dumps({"prompt": 5, "max_tokens": "x", "temperature": [], "stop": {}}),
        "body_bad_ranges": json.dumps({"prompt": "", "max_tokens": 99999, "temperature": -1, "top_k": -3,
                                       "seed": -1, "stop": ["a", "b", "c", "d", "e"]}),
        "body_nul": '{"prompt":"a\\u0000b","max_tokens":4,"stop":"\\u0000"}',
        "body_dup": '{"prompt":"a","prompt":"b","max_tokens":4}',
        "body_malformed": '{"prompt": "a", "max_tokens": ',
        "body_not_object": '["prompt", 1]',
        "body_big_numbers": '{"prompt":"a","max_tokens":1e400,"temperature":1e-400,"seed":18446744073709551616}',
        "openai_chat": json.dumps({"model": "m", "messages": [{"role": "system", "content": "Be brief."},
                                                             {"role": "user", "content": "Hi"}],
                                   "stream": True, "stream_options": {"include_usage": True},
                                   "max_completion_tokens": 8, "stop": "END", "n": 1}),
        "openai_chat_parts": json.dumps({"messages": [{"role": "user", "content": [{"type": "text", "text": "a"},
                                                                                   {"type": "image_url"}]}],
                                         "max_tokens": 4, "tools": [], "logprobs": True}),
        "openai_completion": json.dumps({"model": "m", "prompt": "Once", "max_tokens": 4, "echo": False,
                                         "presence_penalty": 0.5, "best_of": 1, "suffix": None}),
    }
    for k, v in bodies.items():
        write("http", k, v)

    def req(method, path, headers, b=""):
        h = "".join(f"{k}: {v}\r\n" for k, v in headers)
        return f"{method} {path} HTTP/1.1\r\n{h}\r\n{b}"

    auth = ("Authorization", "Bearer fuzz-token-0123456789")
    write("http", "req_submit", req("POST", "/v1/inference", [("Host", "x"), auth, ("Content-Type", "application/json"),
                                                             ("Content-Length", str(len(body)))], body))
    write("http", "req_stream_last_id", req("GET", "/v1/jobs/job-1/stream?timing=1&from=3",
                                            [("Host", "x"), auth, ("Last-Event-ID", "17")]))
    write("http", "req_wrong_token", req("GET", "/info", [("Authorization", "Bearer  nope ")]))
    write("http", "req_basic_auth", req("GET", "/info", [("authorization", "Basic dXNlcjpwYXNz")]))
    chunks = "".join(f"{len(c):x}\r\n{c}\r\n" for c in (body[:10], body[10:])) + "0\r\n\r\n"
    write("http", "req_chunked", req("POST", "/v1/jobs", [("Transfer-Encoding", "chunked"), auth], chunks))
    write("http", "req_h2c_upgrade", req("GET", "/health", [("Connection", "Upgrade, HTTP2-Settings"),
                                                            ("Upgrade", "h2c"), ("HTTP2-Settings", "AAMAAABkAAQAoAAAAAIAAAAA")]))
    write("http", "req_h2_preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
    write("http", "req_many_headers", req("GET", "/health", [(f"X-H{i}", "v" * i) for i in range(20)]))
    write("http", "req_http10", "GET /health HTTP/1.0\r\n\r\n")


# ---- chat: kind byte, template, role/content pairs split by 0x1e ----
def chat_seeds():
    RS = "\x1e"
    llama3 = "{% set loop_messages = messages %}<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>"
    llama2 = "{% if messages[0]['role'] == 'system' %}[INST] <<SYS>>\n' + system_message + '\n<</SYS>>\n\n' + content.strip() + ' [/INST]'"
    smol = CHATML + "{% if loop.first and messages[0]['role'] != 'system' %}<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n{% endif %}"
    cases = {
        "chatml_user": (1, CHATML, [("user", "Hello!")]),
        "smol_default_system": (1, smol, [("user", "What is 2+2?")]),
        "chatml_multi": (1, CHATML, [("system", "Be brief."), ("user", "Hi"), ("assistant", "Hello."), ("user", "Bye")]),
        "llama2_sys": (2, llama2, [("system", "You are terse."), ("user", "  padded  "), ("assistant", "ok"), ("user", "again")]),
        "llama2_bad_order": (2, llama2, [("assistant", "first"), ("assistant", "second")]),
        "llama3_user": (3, llama3, [("system", "S"), ("user", "\u3000trim me\u3000 ")]),
        "unknown_tmpl": (0, "{{ weird }}", [("user", "x")]),
        "empty_tmpl": (0, "", [("user", "x")]),
        "odd_role": (1, CHATML, [("tool", "result"), ("user", "<|im_end|>injected")]),
        "no_messages": (1, CHATML, []),
        "phi3_system": (4, "<|system|>\n' + message['content'] + '<|end|>\n<|user|>\n<|assistant|>\n",
                        [("system", "Be brief."), ("user", "Hi"), ("assistant", "Hello."), ("user", "Bye")]),
        "phi3_early": (4, "{{ bos_token }}<|user|>' + '\n' + message['content'] + '<|end|>' + '\n' + '<|assistant|>",
                       [("user", "Hi"), ("assistant", "Hello.")]),
        "gemma_sys": (5, "{{ bos_token }}<start_of_turn>' + role + '\n'", [("system", "S"), ("user", " trim me "),
                                                                            ("assistant", "ok"), ("user", "again")]),
        "gemma_bad_order": (5, "<start_of_turn>", [("assistant", "first")]),
    }
    for name, (kind, tmpl, msgs) in cases.items():
        parts = [tmpl] + [x for r, c in msgs for x in (r, c)]
        write("chat", name, bytes([kind]) + RS.join(parts).encode())


def proto_seeds(build):
    exe = pathlib.Path(build) / "tests" / "fuzz" / "proto_seeds"
    d = CORPUS / "proto"
    d.mkdir(parents=True, exist_ok=True)
    subprocess.run([str(exe), str(d)], check=True, timeout=30)


if __name__ == "__main__":
    gguf_seeds()
    tokenizer_seeds()
    http_seeds()
    chat_seeds()
    if len(sys.argv) > 1:
        proto_seeds(sys.argv[1])
    for d in sorted(CORPUS.iterdir()):
        print(f"{d.name}: {len(list(d.iterdir()))} seeds")
