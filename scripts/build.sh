#!/usr/bin/env bash
# Configures (once) and builds the release tree in build/, or another directory given as $1 with extra
# meson options after it: scripts/build.sh build-asan -Db_sanitize=address,undefined -Dbuildtype=debug
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-build}
shift || true
[ -f "$dir/build.ninja" ] || meson setup "$dir" "$@" >/dev/null
# Meson 1.0 (Debian 12) asks nvcc for no dependency files, so a changed .cuh header alone would not
# rebuild the .cu files that include it: touch them when any header they may include (engine/cuda's, the
# shared sampling arithmetic) is newer than the engine library.
lib="$dir/engine/libbw_engine_core.a"
if [ -f "$lib" ] && [ -n "$(find engine/cuda tests/gpu engine/sample_core.h engine/sampler.h \( -name '*.cuh' -o -name '*.h' \) \
    -newer "$lib" 2>/dev/null)" ]; then
    touch engine/cuda/*.cu tests/gpu/*.cu
fi
ninja -C "$dir" >/dev/null
echo "build: $dir ok"
