#!/usr/bin/env bash
# Run on the development machine (no GPU needed) before the GPU host's one call:
#  - builds build-gpu/ with CUDA for sm_90 only (H100/H200; smaller binaries for the 64 MiB carry limit);
#  - packs the four binaries tests/gpu/run.sh needs into .gpucarry/bin/bins.tar.gz and copies the
#    shared libraries they link (ldd, minus the C runtime every host has) into .devlibs/;
#  - splits the default model into two parts, since it alone (94 MiB) exceeds what one call carries:
#    .gpucarry/m1/ (first call: parks it in /tmp on the GPU host) and .gpucarry/m2/ (second call).
# Both folders are kept out of git through .git/info/exclude. Prints the two commands to give the host.
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH=/usr/local/cuda/bin:$PATH
model=${BW_MODEL:-models/SmolLM2-135M-Instruct.Q4_1.gguf}

scripts/build.sh build-gpu -Dcuda=enabled -Dgpu_archs=90 -Dbuildtype=release

for p in /.gpucarry/ /.devlibs/; do grep -qxF "$p" .git/info/exclude 2>/dev/null || echo "$p" >>.git/info/exclude; done
rm -rf .gpucarry && mkdir -p .gpucarry/bin .gpucarry/m1 .gpucarry/m2 .devlibs
bins="build-gpu/engine/beeworker-engine build-gpu/tests/test_cuda_kernels build-gpu/tests/cuda_parity build-gpu/tests/cuda_bench"
mkdir -p .gpucarry/stage
for b in $bins; do strip -o ".gpucarry/stage/$(basename "$b")" "$b"; done
# The four binaries each embed every kernel (~5 MB apiece) but compress ~3x with gzip: shipped as one archive
# so the second call stays under the carry limit; run.sh unpacks it.
tar -czf .gpucarry/bin/bins.tar.gz -C .gpucarry/stage .
rm -rf .gpucarry/stage
for b in $bins; do ldd "$b"; done | awk '/=> \//{print $3}' | sort -u |
    grep -vE '/(libc|libm|libdl|librt|libpthread|ld-linux[^/]*|libgcc_s|libstdc\+\+)\.so' |
    while read -r lib; do cp -L "$lib" .devlibs/; done

if [ -s "$model" ]; then
    split -b 56M -d "$(readlink -f "$model")" .gpucarry/m1/part-
    mv .gpucarry/m1/part-01 .gpucarry/m2/
    sha256sum <"$model" | cut -d' ' -f1 >.gpucarry/m2/sha256
else
    echo "prepare: $model missing (scripts/fetch-model.sh): the GPU run will have no model" >&2
fi
du -sh .gpucarry/bin .gpucarry/m1 .gpucarry/m2 .devlibs
cat <<'TXT'
GPU host, call 1 (carry [".gpucarry/m1"]):
  mkdir -p /tmp/bw-model && cp .gpucarry/m1/part-* /tmp/bw-model/ && ls -la /tmp/bw-model
GPU host, call 2 at once, while the machine is warm (carry [".gpucarry/m2", ".gpucarry/bin", ".devlibs"]):
  tests/gpu/run.sh
TXT
