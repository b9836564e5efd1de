#!/usr/bin/env bash
# Run on the CPU machine (no GPU needed) before the GPU host's one call (tests/gpu/run.sh):
#  - builds build-gpu/ with CUDA for sm_90 only (H100/H200);
#  - packs the binaries run.sh needs (engine, front, kernel tests, parity, benchmark, hand-off benchmark,
#    synthetic-model writer) into .gpucarry/bin/bins.tar.gz with the commit in .gpucarry/bin/COMMIT,
#    and copies the shared libraries they link (minus the C runtime every host has) into .devlibs/;
#  - BW_BUILD_LLAMA=1: builds llama.cpp's llama-bench and llama-batched-bench with CUDA for sm_90 from the llama-cpp-python
#    source (pip download; LLAMA_SRC=DIR uses a source tree already here) into .gpucarry/llama/.
#    Slow on a small machine (the CUDA kernels of ggml: tens of minutes on 2 cores), hence optional;
#  - BW_CARRY_MODEL=1: splits the real model (94 MiB, over one call's 64 MiB carry) into
#    .gpucarry/m1 (a first, seconds-long call parks it in /tmp/bw-model) and .gpucarry/m2 (carried
#    with the main call), for the parity step. Speed runs need no model file: run.sh writes synthetic
#    ones on the GPU host.
# .gpucarry/, .devlibs/ and build-llama/ are ignored by .gitignore (carried by name). Prints the calls.
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH=/usr/local/cuda/bin:$PATH
model=${BW_MODEL:-models/SmolLM2-135M-Instruct.Q4_1.gguf}

nice scripts/build.sh build-gpu -Dcuda=enabled -Dgpu_archs=90 -Dbuildtype=release

rm -rf .gpucarry/bin .gpucarry/m1 .gpucarry/m2 .devlibs && mkdir -p .gpucarry/bin .devlibs
bins="build-gpu/engine/beeworker-engine build-gpu/frontend/beeworker-front build-gpu/tests/test_cuda_kernels
      build-gpu/tests/cuda_parity build-gpu/tests/cuda_bench build-gpu/tests/handoff_bench build-gpu/tests/synth_model"
stage=$(mktemp -d)
# the build tree's layout (engine/, frontend/, tests/): the front finds ../engine/beeworker-engine
for b in $bins; do mkdir -p "$stage/$(basename "$(dirname "$b")")" && strip -o "$stage/${b#build-gpu/}" "$b"; done
tar -czf .gpucarry/bin/bins.tar.gz -C "$stage" .
rm -rf "$stage"
echo "$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- engine tests/gpu common || echo -dirty)" >.gpucarry/bin/COMMIT
for b in $bins; do ldd "$b"; done | awk '/=> \//{print $3}' | sort -u |
    grep -vE '/(libc|libm|libdl|librt|libpthread|libresolv|ld-linux[^/]*|libgcc_s|libstdc\+\+)\.so' |
    while read -r lib; do cp -L "$lib" .devlibs/; done

if [ "${BW_BUILD_LLAMA:-0}" = 1 ]; then
    src=${LLAMA_SRC:-}
    if [ -z "$src" ]; then
        tmp=$(mktemp -d)
        pip download --no-deps --no-binary :all: llama-cpp-python -d "$tmp" >/dev/null
        tar -xzf "$tmp"/llama_cpp_python-*.tar.gz -C "$tmp"
        src=$(ls -d "$tmp"/llama_cpp_python-*/vendor/llama.cpp)
    fi
    nice cmake -S "$src" -B build-llama -DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 -DLLAMA_CURL=OFF \
        -DGGML_NATIVE=OFF -DBUILD_SHARED_LIBS=ON -DCMAKE_BUILD_TYPE=Release >/dev/null
    nice cmake --build build-llama --target llama-bench llama-batched-bench -j "$(nproc)" >/dev/null
    rm -rf .gpucarry/llama && mkdir -p .gpucarry/llama/bin .gpucarry/llama/lib
    for t in llama-bench llama-batched-bench; do strip -o ".gpucarry/llama/bin/$t" "build-llama/bin/$t"; done
    find build-llama -name '*.so*' -exec cp -L {} .gpucarry/llama/lib/ \;
fi

if [ "${BW_CARRY_MODEL:-0}" = 1 ]; then
    [ -s "$model" ] || { echo "prepare: $model missing (scripts/fetch-model.sh)" >&2; exit 1; }
    mkdir -p .gpucarry/m1 .gpucarry/m2
    split -b 56M -d "$(readlink -f "$model")" .gpucarry/m1/part-
    mv .gpucarry/m1/part-01 .gpucarry/m2/
    sha256sum <"$model" | cut -d' ' -f1 >.gpucarry/m2/sha256
fi
du -sh .gpucarry/* .devlibs
carry='".gpucarry/bin", ".devlibs"'
[ -d .gpucarry/llama ] && carry="$carry, \".gpucarry/llama\""
[ -d .gpucarry/m2 ] && cat <<'TXT'
GPU host, first call, seconds long (carry [".gpucarry/m1"]):
  mkdir -p /tmp/bw-model && cp .gpucarry/m1/part-* /tmp/bw-model/
TXT
[ -d .gpucarry/m2 ] && carry="$carry, \".gpucarry/m2\""
echo "GPU host, the one call (carry [$carry]), timeout_s 330:"
echo "  tests/gpu/run.sh"
