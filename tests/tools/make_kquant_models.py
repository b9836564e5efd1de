#!/usr/bin/env python3
"""Writes the K-quant (and Q5_0/Q5_1) test models and their llama.cpp reference outputs.

The default SmolLM2 model re-quantized by llama.cpp (llama-cpp-python's llama_model_quantize) into each
type of TYPES, as tests/.cache/models/SmolLM2-135M-Instruct.<TYPE>.gguf, and next to each, in a folder
<TYPE>/, what tests/integration/test_reference_parity.py compares against: llama.cpp's greedy generations
with their top logits and first-step logits (make_golden_generation.write_golden), and the exact float64
first-step logits over the file's dequantized weights (make_exact_logits.write_exact). Idempotent: a file
that is already there is kept (delete the folder to redo it).

SmolLM2's width (576) is not a multiple of the 256-element K super-block, so llama.cpp stores the tensors of
that width in a fallback type: Q5_0 for Q4_K, Q5_1 for Q5_K, Q8_0 for Q6_K and IQ4_NL for Q2_K and Q3_K.

usage: tests/tools/make_kquant_models.py [--model PATH] [--out tests/.cache/models]
"""
import argparse
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from make_exact_logits import write_exact  # noqa: E402
from make_golden_generation import write_golden  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[2]
TYPES = ["Q2_K", "Q3_K_M", "Q4_K_M", "Q5_K_M", "Q6_K", "Q5_0", "Q5_1"]


def model_file(out: pathlib.Path, name: str) -> pathlib.Path:
    return out / f"SmolLM2-135M-Instruct.{name}.gguf"


def quantize(src: pathlib.Path, dst: pathlib.Path, name: str) -> None:
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{name}")
    params.allow_requantize = True
    params.nthread = 2
    tmp = dst.with_suffix(".tmp")
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(tmp).encode(), params)
    if rc != 0:
        raise SystemExit(f"llama_model_quantize {name} failed ({rc})")
    tmp.rename(dst)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=str(ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"))
    ap.add_argument("--out", default=str(ROOT / "tests" / ".cache" / "models"))
    ap.add_argument("--types", default=",".join(TYPES), help="comma-separated subset of " + ",".join(TYPES))
    a = ap.parse_args()
    out = pathlib.Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    for name in a.types.split(","):
        dst, ref = model_file(out, name), out / name
        if not dst.exists():
            print(f"{name}: quantizing {dst.name}", flush=True)
            quantize(pathlib.Path(a.model), dst, name)
        if not (ref / "generation_smollm2.json").exists():
            print(f"{name}: llama.cpp reference outputs", flush=True)
            write_golden(str(dst), ref)
        if not all((ref / f"exact_logits_{c}.f32").exists() for c in ("capital", "story", "code")):
            print(f"{name}: exact logits", flush=True)
            write_exact(str(dst), ref)
    return 0


if __name__ == "__main__":
    sys.exit(main())
