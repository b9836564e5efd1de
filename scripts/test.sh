#!/usr/bin/env bash
# Runs the whole test suite on a fresh Debian machine: installs what the tests need, fetches the default
# model, builds the release tree (build/) and a sanitizer tree (build-asan/, ASan + UBSan), then runs every
# test under pytest with a deadline for the whole suite. Extra arguments go to pytest (e.g. -k parity).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-deps.sh
scripts/fetch-model.sh
tests/tools/fetch_vocab_files.sh
scripts/build.sh build
scripts/build.sh build-asan -Db_sanitize=address,undefined -Dbuildtype=debug -Dcuda=disabled
export BW_BUILD_DIR=build BW_ASAN_BUILD_DIR=build-asan
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0} UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
# Whole-suite deadline: no run may hang; pytest-timeout bounds each test on top of it.
exec timeout -k 15 1800 python3 -m pytest tests -q -rs -p no:cacheprovider --timeout=300 "$@"
