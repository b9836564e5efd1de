#!/bin/sh
# Puts llama.cpp's vocab-only test files that are too large to commit (ggml-vocab-llama-bpe.gguf 7.8 MB, ggml-vocab-qwen2.gguf 5.9 MB, ggml-vocab-phi-3.gguf)
# into tests/.cache/vocab/ (git-ignored). They ship in llama.cpp's models/ folder, inside the
# llama-cpp-python source distribution; the version is the one the golden files were made with.
# test_tokenizer_golden skips a vocabulary whose file is absent.
set -eu
VERSION=0.3.36
FILES="ggml-vocab-llama-bpe.gguf ggml-vocab-qwen2.gguf ggml-vocab-phi-3.gguf"
root=$(cd "$(dirname "$0")/../.." && pwd)
dest="$root/tests/.cache/vocab"
mkdir -p "$dest"
missing=""
for f in $FILES; do [ -s "$dest/$f" ] || missing="$missing $f"; done
if [ -z "$missing" ]; then
    echo "vocab files present in $dest"
    exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --quiet --no-deps --no-binary :all: "llama-cpp-python==$VERSION" -d "$tmp"
sdist="$tmp/llama_cpp_python-$VERSION.tar.gz"
for f in $missing; do
    tar -xzf "$sdist" -C "$tmp" "llama_cpp_python-$VERSION/vendor/llama.cpp/models/$f"
    mv "$tmp/llama_cpp_python-$VERSION/vendor/llama.cpp/models/$f" "$dest/$f"
    echo "fetched $dest/$f"
done
