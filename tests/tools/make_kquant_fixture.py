#!/usr/bin/env python3
"""Writes tests/unit/data/kquant_rows.bin: weight rows quantized by llama.cpp, for tests/unit/test_kquant.c.

Real weights (the first rows of blk.0.ffn_down.weight of the default model, dequantized by gguf-py) are
quantized by ggml's own quantize function (ggml_quantize_chunk from llama-cpp-python's libggml-base) into
each type, and gguf-py's numpy dequantization of the result is stored beside the bytes as the independent
reference; so are NX activation rows and llama.cpp's own CPU dot products of them with each weight row
(ggml's vec_dot for the type, after its from_float into the type's activation format: Q8_K, Q8_0, Q8_1).
Format, little-endian, one record per type:
  uint32 type (GGUF number), uint32 rows, uint32 cols, uint32 nx, then rows x row_bytes of blocks, rows x
  cols float32 reference values, nx x cols float32 activations, nx x rows float32 llama.cpp products.

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
ROWS, COLS, NX = 2, 512, 2  # two super-blocks per row: a few KB per type


def llama_cpp_dots(lib_dir, qt, raw, rb, x):
    """ggml's CPU vec_dot of each weight row with each activation row, as llama.cpp's matmul computes it."""
    base = ctypes.CDLL(str(lib_dir / "libggml-base.so"), mode=ctypes.RTLD_GLOBAL)
    cpu = ctypes.CDLL(str(lib_dir / "libggml-cpu.so"))

    class Traits(ctypes.Structure):
        _fields_ = [("from_float", ctypes.c_void_p), ("vec_dot", ctypes.c_void_p), ("vec_dot_type", ctypes.c_int),
                    ("nrows", ctypes.c_int64)]

    cpu.ggml_get_type_traits_cpu.restype = ctypes.POINTER(Traits)
    cpu.ggml_cpu_init()
    base.ggml_row_size.restype = ctypes.c_size_t
    base.ggml_row_size.argtypes = [ctypes.c_int, ctypes.c_int64]
    from_float = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64)
    vec_dot = ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.POINTER(ctypes.c_float), ctypes.c_size_t, ctypes.c_void_p,
                               ctypes.c_size_t, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    tr = cpu.ggml_get_type_traits_cpu(int(qt)).contents
    vt = cpu.ggml_get_type_traits_cpu(tr.vec_dot_type).contents
    w = (ctypes.c_uint8 * len(raw)).from_buffer_copy(raw)
    out = np.zeros((len(x), ROWS), dtype=np.float32)
    for i, xi in enumerate(x):
        q = ctypes.create_string_buffer(base.ggml_row_size(tr.vec_dot_type, COLS))
        from_float(vt.from_float)(xi.ctypes.data, q, COLS)
        for r in range(ROWS):
            s = ctypes.c_float()
            vec_dot(tr.vec_dot)(COLS, ctypes.byref(s), 0, ctypes.addressof(w) + r * rb, 0, q, 0, 1)
            out[i, r] = s.value
    return out


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

    rng = np.random.default_rng(2024)
    # Activations with blocks of different magnitude and a few outliers, as hidden states have.
    x = (rng.standard_normal((NX, COLS)) * np.where(np.arange(COLS) // 32 % 5 == 0, 4.0, 1.0)
         * np.where(rng.random((NX, COLS)) < 0.01, 20.0, 1.0)).astype(np.float32)
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
        y = llama_cpp_dots(pathlib.Path(llama_cpp.__file__).parent / "lib", qt, buf.raw, rb, x)
        out += struct.pack("<IIII", int(qt), ROWS, COLS, NX) + buf.raw + ref.tobytes() + x.tobytes() + y.tobytes()
        print(f"{name}: {ROWS} x {COLS}, {rb} bytes per row, max |w - dequant| {np.abs(ref - w).max():.4f}")
    path = pathlib.Path(a.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(out))
    print(f"wrote {path} ({len(out)} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
