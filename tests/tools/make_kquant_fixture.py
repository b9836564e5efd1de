#!/usr/bin/env python3
"""Writes tests/unit/data/kquant_rows.bin: weight rows quantized by llama.cpp, for tests/unit/test_kquant.c.

Real weights (the first rows of blk.0.ffn_down.weight of the default model, dequantized by gguf-py) are
quantized by ggml's own quantize function (ggml_quantize_chunk from llama-cpp-python's libggml-base) into
each type, and gguf-py's numpy dequantization of the result is stored beside the bytes as the independent
reference. Format, little-endian, one record per type:
  uint32 type (GGUF number), uint32 rows, uint32 cols, then rows x row_bytes of blocks, then rows x cols
  float32 reference values.

usage: tests/tools/make_kquant_fixture.py [--model PATH] [--out tests/unit/data/kquant_rows.bin]
"""
import argparse
import ctypes
import pathlib
import struct
import sys

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[2]
TYPES = ["Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "Q5_0", "Q5_1", "IQ4_NL"]
ROWS, COLS = 2, 512  # two super-blocks per row: a few KB per type


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=str(ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"))
    ap.add_argument("--out", default=str(ROOT / "tests" / "unit" / "data" / "kquant_rows.bin"))
    a = ap.parse_args()

    import llama_cpp
    from gguf import GGMLQuantizationType, GGUFReader
    from gguf.quants import dequantize

    lib = ctypes.CDLL(str(pathlib.Path(llama_cpp.__file__).parent / "lib" / "libggml-base.so"))
    lib.ggml_quantize_chunk.restype = ctypes.c_size_t
    lib.ggml_quantize_chunk.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                                        ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p]
    lib.ggml_row_size.restype = ctypes.c_size_t
    lib.ggml_row_size.argtypes = [ctypes.c_int, ctypes.c_int64]

    t = next(t for t in GGUFReader(a.model).tensors if t.name == "blk.0.ffn_down.weight")
    w = dequantize(t.data, t.tensor_type).reshape(-1, int(t.shape[0]))[:ROWS, :COLS].astype(np.float32)
    w = np.ascontiguousarray(w)

    out = bytearray()
    for name in TYPES:
        qt = GGMLQuantizationType[name]
        rb = lib.ggml_row_size(int(qt), COLS)
        buf = ctypes.create_string_buffer(rb * ROWS)
        n = lib.ggml_quantize_chunk(int(qt), w.ctypes.data, buf, 0, ROWS, COLS, None)
        assert n == rb * ROWS, (name, n, rb)
        raw = np.frombuffer(buf.raw, dtype=np.uint8)
        ref = dequantize(raw.reshape(ROWS, rb), qt).reshape(ROWS, COLS).astype(np.float32)
        out += struct.pack("<III", int(qt), ROWS, COLS) + buf.raw + ref.tobytes()
        print(f"{name}: {ROWS} x {COLS}, {rb} bytes per row, max |w - dequant| {np.abs(ref - w).max():.4f}")
    path = pathlib.Path(a.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(out))
    print(f"wrote {path} ({len(out)} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
