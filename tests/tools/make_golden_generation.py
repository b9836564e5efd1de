#!/usr/bin/env python3
"""Writes the llama.cpp reference outputs that tests/integration/test_reference_parity.py compares against.

For each reference prompt (plain and chat-templated) it records the prompt's token ids, the first 64 greedy
token ids and, at every step, the five best logits (to tell a near-tie from a real divergence); for the first
three prompts also the complete logits of the first step (float32 files). Needs llama-cpp-python (a test-only
tool dependency: `pip install llama-cpp-python`); CI compares against the committed outputs and does not
need it.

usage: tests/tools/make_golden_generation.py [--model PATH] [--out tests/golden]
"""
import argparse
import json
import pathlib
import sys

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[2]

PROMPTS = [
    ("capital", False, "The capital of France is"),
    ("story", False, "Once upon a time, in a small village by the sea,"),
    ("code", False, "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n"),
    ("list", False, "Here are five tips for staying healthy:\n1."),
    ("chat_hello", True, "Hello! Who are you?"),
    ("chat_math", True, "What is 17 times 23? Explain step by step."),
    ("chat_poem", True, "Write a short poem about bees in spring."),
    ("chat_json", True, "Give me a JSON object describing a cat with name, age and color."),
    ("chat_unicode", True, "Translate 'good morning' into French, Japanese and Greek."),
]
N_TOKENS = 64
N_FULL_LOGITS = 3


def render_chat(template: str, user: str, bos: str, eos: str) -> str:
    import jinja2

    env = jinja2.Environment(loader=jinja2.BaseLoader())
    return env.from_string(template).render(
        messages=[{"role": "user", "content": user}], add_generation_prompt=True, bos_token=bos, eos_token=eos
    )


def write_golden(model: str, out_dir) -> None:
    """Writes generation_smollm2.json and the first-step logits files for `model` into out_dir."""
    import llama_cpp
    from llama_cpp import Llama

    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    llm = Llama(model, n_ctx=1024, n_threads=2, logits_all=True, verbose=False)
    meta = llm.metadata
    template = meta.get("tokenizer.chat_template", "")
    bos = llm.detokenize([llm.token_bos()], special=True).decode() if llm.token_bos() >= 0 else ""
    eos = llm.detokenize([llm.token_eos()], special=True).decode() if llm.token_eos() >= 0 else ""

    cases = []
    for k, (name, chat, text) in enumerate(PROMPTS):
        full = render_chat(template, text, bos, eos) if chat else text
        ids = llm.tokenize(full.encode(), add_bos=llm.metadata.get("tokenizer.ggml.add_bos_token") == "true",
                           special=chat)
        llm.reset()
        llm.eval(ids)
        gen, top5 = [], []
        for step in range(N_TOKENS):
            logits = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float32)
            if step == 0 and k < N_FULL_LOGITS:
                logits.tofile(out / f"logits_{name}.f32")
            order = np.argsort(-logits, kind="stable")[:5]
            top5.append([[int(i), float(logits[i])] for i in order])
            nid = int(order[0])
            gen.append(nid)
            if llm._model.token_is_eog(nid) if hasattr(llm._model, "token_is_eog") else nid == llm.token_eos():
                break
            llm.eval([nid])
        cases.append({"name": name, "chat": chat, "prompt": text, "rendered": full, "prompt_ids": ids,
                      "ids": gen, "top5": top5, "full_logits": k < N_FULL_LOGITS})
        print(f"{name}: {len(ids)} prompt tokens, {len(gen)} generated: {llm.detokenize(gen)[:60]!r}")

    doc = {"model": pathlib.Path(model).name, "reference": f"llama.cpp via llama-cpp-python {llama_cpp.__version__}",
           "n_tokens": N_TOKENS, "cases": cases}
    (out / "generation_smollm2.json").write_text(json.dumps(doc, indent=1) + "\n")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=str(ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"))
    ap.add_argument("--out", default=str(ROOT / "tests" / "golden"))
    args = ap.parse_args()
    write_golden(args.model, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
