#!/usr/bin/env bash
# Configures (once) and builds the release tree in build/, or another directory given as $1 with extra
# meson options after it: scripts/build.sh build-asan -Db_sanitize=address,undefined -Dbuildtype=debug
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-build}
shift || true
[ -f "$dir/build.ninja" ] || meson setup "$dir" "$@" >/dev/null
ninja -C "$dir" >/dev/null
echo "build: $dir ok"
