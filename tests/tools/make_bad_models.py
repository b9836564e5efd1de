#!/usr/bin/env python3
"""Derives malformed model files from a good GGUF file, one defect each, for the engine's error paths.

Usage: make_bad_models.py SRC.gguf OUTDIR     (prints one line per file written)

Self-contained (struct only), so the tests need no GGUF package. Defects that change the metadata's length
rewrite the header and tensor table and keep the tensor data byte for byte; tensor offsets are relative to
the data section, so they stay valid."""
import os
import struct
import sys

SCALAR = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
STRING, ARRAY = 8, 9


class Gguf:
    """The parts of a GGUF file this tool edits, with the byte offsets of the fields it patches."""

    def __init__(self, data):
        if data[:4] != b"GGUF":
            raise ValueError("not a GGUF file")
        self.data = data
        self.version, n_tensors, n_kv = struct.unpack_from("<IQQ", data, 4)
        pos = 24
        self.kvs = []  # (key, raw bytes of type + value)
        for _ in range(n_kv):
            key, pos = self._str(pos)
            start = pos
            vtype, = struct.unpack_from("<I", data, pos)
            pos = self._skip(vtype, pos + 4)
            self.kvs.append((key, bytes(data[start:pos])))
        self.tensors = []  # dicts: name, dims, type, offset, and where type/offset sit in the file
        for _ in range(n_tensors):
            name, pos = self._str(pos)
            n_dims, = struct.unpack_from("<I", data, pos)
            dims = list(struct.unpack_from("<%dQ" % n_dims, data, pos + 4))
            pos += 4 + 8 * n_dims
            ttype, offset = struct.unpack_from("<IQ", data, pos)
            self.tensors.append(dict(name=name, dims=dims, type=ttype, offset=offset, type_at=pos, offset_at=pos + 4))
            pos += 12
        self.alignment = 32
        for key, raw in self.kvs:
            if key == "general.alignment":
                self.alignment = struct.unpack_from("<I", raw, 4)[0]
        self.data_start = -(-pos // self.alignment) * self.alignment

    def _str(self, pos):
        n, = struct.unpack_from("<Q", self.data, pos)
        return bytes(self.data[pos + 8:pos + 8 + n]).decode("utf-8", "replace"), pos + 8 + n

    def _skip(self, vtype, pos):
        if vtype in SCALAR:
            return pos + SCALAR[vtype]
        if vtype == STRING:
            return self._str(pos)[1]
        etype, n = struct.unpack_from("<IQ", self.data, pos)
        pos += 12
        if etype in SCALAR:
            return pos + n * SCALAR[etype]
        for _ in range(n):
            pos = self._str(pos)[1]
        return pos

    def rebuilt(self, kvs, tensors):
        """Header and tensor table from (possibly edited) kvs and tensors, followed by the original data."""
        out = bytearray(b"GGUF" + struct.pack("<IQQ", self.version, len(tensors), len(kvs)))
        for key, raw in kvs:
            k = key.encode()
            out += struct.pack("<Q", len(k)) + k + raw
        for t in tensors:
            n = t["name"].encode()
            out += struct.pack("<Q", len(n)) + n + struct.pack("<I", len(t["dims"]))
            out += struct.pack("<%dQ" % len(t["dims"]), *t["dims"]) + struct.pack("<IQ", t["type"], t["offset"])
        out += b"\0" * (-len(out) % self.alignment)
        return [bytes(out), memoryview(self.data)[self.data_start:]]


def _string_value(s):
    b = s.encode()
    return struct.pack("<IQ", STRING, len(b)) + b


def _patched(data, at, fmt, value):
    head = bytearray(data[:at + struct.calcsize(fmt)])
    struct.pack_into(fmt, head, at, value)
    return [bytes(head), memoryview(data)[len(head):]]


def bad_variants(src):
    """{case name: list of byte chunks} for every defect."""
    with open(src, "rb") as f:
        data = f.read()
    g = Gguf(data)
    last = max(g.tensors, key=lambda t: t["offset"])
    past_end = -(-(2 * len(data)) // g.alignment) * g.alignment
    first_key_len_at = 24

    def without_kv(key):
        kvs = [kv for kv in g.kvs if kv[0] != key]
        assert len(kvs) == len(g.kvs) - 1, key
        return g.rebuilt(kvs, g.tensors)

    def edit_tensor(name, **changes):
        ts = [dict(t, **changes) if t["name"] == name else t for t in g.tensors]
        return g.rebuilt(g.kvs, ts)

    return {
        "truncated": [memoryview(data)[:len(data) // 2]],
        "bad_magic": [b"GGXF", memoryview(data)[4:]],
        "absurd_kv_count": _patched(data, 16, "<Q", 1 << 40),
        "absurd_string_length": _patched(data, first_key_len_at, "<Q", 1 << 62),
        "offset_past_end": _patched(data, last["offset_at"], "<Q", past_end),
        "unknown_tensor_type": _patched(data, g.tensors[0]["type_at"], "<I", 99),
        "arch_gpt9": g.rebuilt([(k, _string_value("gpt9") if k == "general.architecture" else raw)
                                for k, raw in g.kvs], g.tensors),
        "missing_tokens": without_kv("tokenizer.ggml.tokens"),
        "missing_tensor": g.rebuilt(g.kvs, [t for t in g.tensors if t["name"] != "blk.7.ffn_down.weight"]),
        "wrong_shape": edit_tensor("blk.3.attn_q.weight", dims=[576, 192]),
        # K types: a row of 576 is not a whole number of 256-element super-blocks; a Q6_K tensor whose shape
        # needs more bytes than the file holds after its offset.
        "kquant_bad_width": edit_tensor("blk.0.attn_q.weight", type=12),
        "kquant_past_end": edit_tensor("blk.9.attn_v.weight", type=14, dims=[768, 192]),
    }


# Per architecture: a tensor only that architecture requires (None: none beyond llama's).
ARCH_TENSOR = {"llama": None, "qwen2": None, "qwen3": "blk.0.attn_k_norm.weight", "phi3": "blk.1.attn_qkv.weight",
               "gemma3": "blk.0.post_ffw_norm.weight"}


def arch_variants(src):
    """{case name: byte chunks} of one model file of any architecture: each required hyper-parameter key of
    the architecture dropped in turn, and the tensor only that architecture requires."""
    with open(src, "rb") as f:
        data = f.read()
    g = Gguf(data)
    arch = next(raw for k, raw in g.kvs if k == "general.architecture")[4 + 8:].decode()  # type, length, text
    out = {}
    for key in ("block_count", "embedding_length", "feed_forward_length", "attention.head_count", "context_length",
                "attention.layer_norm_rms_epsilon"):
        kvs = [kv for kv in g.kvs if kv[0] != f"{arch}.{key}"]
        assert len(kvs) == len(g.kvs) - 1, key
        out[f"no_{key}"] = g.rebuilt(kvs, g.tensors)
    if ARCH_TENSOR[arch]:
        out["no_" + ARCH_TENSOR[arch]] = g.rebuilt(g.kvs, [t for t in g.tensors if t["name"] != ARCH_TENSOR[arch]])
    return out


def write_variants(variants, outdir):
    """Writes OUTDIR/<case>.gguf for every {case: chunks}; returns {case: path}."""
    os.makedirs(outdir, exist_ok=True)
    paths = {}
    for name, chunks in variants.items():
        path = os.path.join(outdir, name + ".gguf")
        with open(path, "wb") as f:
            for c in chunks:
                f.write(c)
        paths[name] = path
    return paths


def make_bad_models(src, outdir):
    """Writes OUTDIR/<case>.gguf for every defect; returns {case: path}."""
    return write_variants(bad_variants(src), outdir)


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__.split("\n\n")[1])
    for name, path in make_bad_models(sys.argv[1], sys.argv[2]).items():
        print("%-22s %s (%d bytes)" % (name, path, os.path.getsize(path)))


if __name__ == "__main__":
    main()
