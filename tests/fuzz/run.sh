#!/usr/bin/env bash
# Builds the libFuzzer targets (clang, ASan + UBSan) in build-fuzz/, replays each target's committed corpus
# and crash reproducers, then fuzzes each for SECONDS (default 60), two at a time on a 2-core machine.
# New inputs go to a scratch directory (the committed corpus stays small); a finding is saved under
# build-fuzz/findings/<target>/ and makes the script exit non-zero.
#   usage: tests/fuzz/run.sh [SECONDS] [TARGET...]     (targets: gguf tokenizer proto http chat)
set -euo pipefail
cd "$(dirname "$0")/../.."
secs=${1:-60}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(gguf tokenizer proto http chat)
dir=${BW_FUZZ_BUILD_DIR:-build-fuzz}

[ -f "$dir/build.ninja" ] || CC=clang meson setup "$dir" -Dfuzz=true -Dcuda=disabled -Dbuildtype=debugoptimized >/dev/null
ninja -C "$dir" $(printf "tests/fuzz/fuzz_%s " "${targets[@]}") >/dev/null

scratch=$(mktemp -d /tmp/bw-fuzz-XXXXXX)
trap 'rm -rf "$scratch"' EXIT
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1} UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

fuzz_one() {
    local t=$1 bin=$dir/tests/fuzz/fuzz_$1 out=$dir/findings/$1 log=$scratch/$1.log
    local corpus=(tests/fuzz/corpus/$t)
    [ -d tests/fuzz/crashes/$t ] && corpus+=(tests/fuzz/crashes/$t)
    mkdir -p "$out" "$scratch/$t"
    local maxlen=65536
    [ "$t" = tokenizer ] && maxlen=4096
    # replay first: a committed reproducer must not fail again
    if ! timeout -k 5 300 "$bin" -runs=0 "${corpus[@]}" >"$log" 2>&1; then
        echo "fuzz $t: corpus replay FAILED"; tail -n 30 "$log"; return 1
    fi
    if timeout -k 5 $((secs + 120)) "$bin" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -max_len=$maxlen \
        -artifact_prefix="$out/" -print_final_stats=1 "$scratch/$t" tests/fuzz/corpus/$t >"$log" 2>&1; then
        echo "fuzz $t: ${secs}s, $(sed -n 's/^stat::number_of_executed_units: *//p' "$log") runs, no finding"
    else
        echo "fuzz $t: FINDING (saved in $out/)"; grep -v '^#' "$log" | tail -n 40; return 1
    fi
}
export -f fuzz_one
export dir secs scratch
printf "%s\n" "${targets[@]}" | xargs -P 2 -I{} bash -c 'fuzz_one {}'
