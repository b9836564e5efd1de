#!/usr/bin/env bash
# Everything the CUDA backend must show, in ONE device call of at most ~5 minutes (BW_GPU_BUDGET_S,
# default 280 s). Nothing compiles here: tests/gpu/prepare.sh built every binary on the CPU machine.
# Carry: [".gpucarry/bin", ".devlibs"] (+ ".gpucarry/llama" when prepare.sh built llama.cpp,
# + ".gpucarry/m2" when a first call parked the real model's first half, see prepare.sh).
#   1. kernel tests: CPU references, and the numerics contract by memcmp    (test_cuda_kernels)
#   2. hand-off latency: grid-wide and cluster-wide barrier in a persistent kernel   (handoff_bench)
#   3. synthetic models written here (synth_model): the default model's shape and types, and a
#      Llama-3-8B-shaped Q4_0 file; both benchmarked (TTFT 512, pp512, tg128 batch 1, 64 slots / 16 for
#      the 8B file), with and without the tensor-core product; llama.cpp's llama-bench on the same files
#   4. parity on the real model (only when its parts were carried): CPU-vs-CUDA greedy, batching;
#      device sampling in the serving path against host sampling (a worker pair, synthetic model)
#   5. ncu per-kernel times (--clock-control none --cache-control none) of decode and prefill
#   6. compute-sanitizer memcheck and racecheck on a short parity run
# Every result goes into one tarball, $OUT/bw-gpu-results.tar.gz, with tags.json (commit, card, clocks)
# beside every figure; $OUT/summary.txt repeats the table. Exit 0 when kernels (and parity, sanitizer
# where run) passed.
set -uo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
START=$(date +%s)
OUTDIR=${OUT:-/tmp/bw-gpu-out}
LOG=/tmp/bw-gpu-results
rm -rf "$LOG" && mkdir -p "$LOG" "$OUTDIR"
export LD_LIBRARY_PATH="$ROOT/.devlibs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export PATH="$PATH:/usr/local/cuda/bin"
elapsed() { echo $(($(date +%s) - START)); }
left() { echo $((${BW_GPU_BUDGET_S:-280} - $(elapsed))); }
declare -A R
say() { echo "$*" | tee -a "$LOG/summary.txt"; }

# ---- binaries (never built here)
BIN=/tmp/bw-bin
if [ -f .gpucarry/bin/bins.tar.gz ]; then
    rm -rf "$BIN" && mkdir -p "$BIN" && tar -xzf .gpucarry/bin/bins.tar.gz -C "$BIN"
elif [ -x build-gpu/tests/cuda_bench ]; then
    BIN=build-gpu
else
    echo "no binaries: run tests/gpu/prepare.sh on the CPU machine and carry .gpucarry/bin"; exit 2
fi
bin() {
    for p in "$BIN/$1" "$BIN/tests/$1" "$BIN/engine/$1"; do [ -x "$p" ] && { echo "$p"; return; }; done
    echo "/nonexistent/$1"
}

# ---- tags: every figure in this run belongs to this commit, card and clocks
COMMIT=$(cat .gpucarry/bin/COMMIT 2>/dev/null || git rev-parse --short HEAD 2>/dev/null || echo unknown)
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv >"$LOG/gpu.csv" 2>&1
nvidia-smi --query-gpu=clocks.sm,clocks.mem,clocks.max.sm,clocks.max.mem,power.limit --format=csv >"$LOG/gpu-clocks.csv" 2>&1
nvidia-smi -q -d CLOCK,PERFORMANCE >"$LOG/clocks-start.txt" 2>&1
python3 - "$COMMIT" "$LOG/gpu.csv" "$LOG/gpu-clocks.csv" >"$LOG/tags.json" <<'PY'
import csv, json, sys, datetime
tags = {"commit": sys.argv[1], "date_utc": datetime.datetime.utcnow().isoformat(timespec="seconds") + "Z"}
for path in sys.argv[2:]:
    rows = list(csv.reader(open(path)))
    if len(rows) >= 2 and len(rows[0]) == len(rows[1]):
        tags.update({k.strip(): v.strip() for k, v in zip(rows[0], rows[1])})
print(json.dumps(tags))
PY
say "== $(cat "$LOG/tags.json")"

# ---- 1. kernels
timeout 100 "$(bin test_cuda_kernels)" >"$LOG/kernels.log" 2>&1; rc=$?
grep -E "^(FAIL|device)" "$LOG/kernels.log"; grep -E "contract" "$LOG/kernels.log" | head -3
R[kernels]="$([ $rc = 0 ] && echo PASS || echo "FAIL rc=$rc") ($(tail -1 "$LOG/kernels.log"))"

# ---- 2. hand-off latency
timeout 30 "$(bin handoff_bench)" 2000 >"$LOG/handoff.log" 2>&1
R[handoff]="rc=$? $(grep -v HANDOFF "$LOG/handoff.log" | tr '\n' ';' | cut -c1-300)"

# ---- 3. synthetic models, our benchmark and llama.cpp's on the same files
SYN=/tmp/bw-synth
mkdir -p "$SYN"
timeout 40 "$(bin synth_model)" smollm2-135m "$SYN/smollm2-135m.gguf" >>"$LOG/synth.log" 2>&1
[ "$(left)" -gt 200 ] && timeout 60 "$(bin synth_model)" llama3-8b-q4_0 "$SYN/llama3-8b-q4_0.gguf" >>"$LOG/synth.log" 2>&1
cat "$LOG/synth.log"
bench() { # tag model slots env...
    local tag=$1 model=$2 slots=$3; shift 3
    [ -s "$model" ] || return
    env "$@" timeout 60 "$(bin cuda_bench)" "$model" -p 512 -n 128 -s "$slots" >"$LOG/bench-$tag.log" 2>&1
    grep -v '^BENCH' "$LOG/bench-$tag.log" | tail -3 | sed "s/^/[$tag] /"
    grep '^BENCH' "$LOG/bench-$tag.log" | sed 's/^BENCH //' >"$LOG/bench-$tag.json"
}
bench 135m "$SYN/smollm2-135m.gguf" 64
bench 135m-mma "$SYN/smollm2-135m.gguf" 64 BW_CUDA_MMA=1
[ "$(left)" -gt 170 ] && bench 8b "$SYN/llama3-8b-q4_0.gguf" 16
LLAMA_BENCH=${LLAMA_BENCH:-$ROOT/.gpucarry/llama/bin/llama-bench}
if [ -x "$LLAMA_BENCH" ]; then
    export LD_LIBRARY_PATH="$(dirname "$LLAMA_BENCH")/../lib:$LD_LIBRARY_PATH"
    for m in smollm2-135m llama3-8b-q4_0; do
        [ -s "$SYN/$m.gguf" ] && [ "$(left)" -gt 130 ] || continue
        timeout 60 "$LLAMA_BENCH" -m "$SYN/$m.gguf" -p 512 -n 128 -ngl 99 -r 3 -o json >"$LOG/llama-bench-$m.json" \
            2>"$LOG/llama-bench-$m.err"
        R[llama-$m]="rc=$?"
    done
    # 64 sequences decoding together, as cuda_bench -s 64 (32-token prompts, 128 tokens each)
    LBB=$(dirname "$LLAMA_BENCH")/llama-batched-bench
    if [ -x "$LBB" ] && [ -s "$SYN/smollm2-135m.gguf" ] && [ "$(left)" -gt 120 ]; then
        timeout 60 "$LBB" -m "$SYN/smollm2-135m.gguf" -c 16384 -b 2048 -ub 512 -npp 32 -ntg 128 -npl 1,64 -ngl 99 \
            >"$LOG/llama-batched-bench.log" 2>&1
        R[llama-batched]="rc=$? (llama-batched-bench.log)"
        grep -E "^\|" "$LOG/llama-batched-bench.log" | tail -3
    fi
else
    R[llama]="not carried (prepare.sh BW_BUILD_LLAMA=1 builds it)"
fi

# ---- 4. parity on the real model, when carried in parts (prepare.sh BW_CARRY_MODEL=1)
MODEL=""
parts=$(ls /tmp/bw-model/part-* .gpucarry/m2/part-* 2>/dev/null | awk -F/ '{print $NF" "$0}' | sort -u -k1,1 | cut -d' ' -f2)
if [ -n "$parts" ] && [ -f .gpucarry/m2/sha256 ]; then
    cat $parts >/tmp/bw-model.gguf
    if [ "$(sha256sum </tmp/bw-model.gguf | cut -d' ' -f1)" = "$(cat .gpucarry/m2/sha256)" ]; then
        MODEL=/tmp/bw-model.gguf
    else
        R[parity]="SKIP: model parts do not add up (sha256 differs)"
    fi
fi
if [ -n "$MODEL" ] && [ "$(left)" -gt 110 ]; then
    timeout 80 "$(bin cuda_parity)" "$MODEL" 32 >"$LOG/parity.log" 2>&1; rc=$?
    tail -8 "$LOG/parity.log"
    R[parity]="$([ $rc = 0 ] && echo PASS || echo "FAIL rc=$rc") ($(grep -c near-tie "$LOG/parity.log") near-tie lines)"
else
    R[parity]=${R[parity]:-"skipped (the real model was not carried, or no time)"}
fi

# ---- 4b. sampling on the device in the serving path: the same text as host sampling (synthetic model)
HAVE_DEV=$(grep -q "no CUDA device: skipped" "$LOG/kernels.log" && echo 0 || echo 1)
if [ "$HAVE_DEV" = 1 ] && [ -x "$BIN/frontend/beeworker-front" ] && [ -s "$SYN/smollm2-135m.gguf" ] &&
    [ "$(left)" -gt 100 ]; then
    timeout 90 python3 tests/gpu/serve_sampling.py "$BIN" "$SYN/smollm2-135m.gguf" \
        >"$LOG/serve-sampling.log" 2>&1; rc=$?
    tail -3 "$LOG/serve-sampling.log"
    R[serve-sampling]="$([ $rc = 0 ] && echo PASS || echo "FAIL rc=$rc") ($(tail -1 "$LOG/serve-sampling.log" | cut -c1-120))"
fi

# ---- 5. per-kernel profile, clocks and caches left as they are
NCU=$(command -v ncu || ls /usr/local/cuda/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
R[profile]="skipped (no ncu or no time)"
for what in decode:4 prefill:1; do
    mode=${what%:*} steps=${what#*:}
    [ -n "$NCU" ] && [ -s "$SYN/smollm2-135m.gguf" ] && [ "$(left)" -gt 75 ] || continue
    timeout 40 "$NCU" --clock-control none --cache-control none --profile-from-start off --csv --print-units base \
        --metrics gpu__time_duration.sum "$(bin cuda_bench)" "$SYN/smollm2-135m.gguf" -p 512 -n $steps -d $mode \
        >"$LOG/profile-$mode.csv" 2>"$LOG/profile-$mode.err"
    R[profile]="rc=$? (profile-*.csv)"
    python3 tests/gpu/profile_summary.py "$LOG/profile-$mode.csv" $steps >"$LOG/profile-$mode.txt" 2>&1
    head -12 "$LOG/profile-$mode.txt"
done

# ---- 6. sanitizers on a short parity run (the real model if here, else the synthetic one)
SAN_MODEL=${MODEL:-$SYN/smollm2-135m.gguf}
for tool in memcheck racecheck; do
    if command -v compute-sanitizer >/dev/null && [ -s "$SAN_MODEL" ] && [ "$(left)" -gt 40 ]; then
        timeout $(($(left) / 2 > 20 ? $(left) / 2 : 20)) compute-sanitizer --tool $tool --error-exitcode 9 \
            "$(bin cuda_parity)" "$SAN_MODEL" 2 >"$LOG/$tool.log" 2>&1; rc=$?
        # exit 9 = the sanitizer found errors; 1 = a parity difference (the synthetic model is noise)
        R[$tool]="$([ $rc = 9 ] || [ $rc = 124 ] && echo "FAIL rc=$rc" || echo "PASS rc=$rc") ($(grep -m1 'ERROR SUMMARY' "$LOG/$tool.log"))"
    else
        R[$tool]="skipped (no compute-sanitizer or no time)"
    fi
done

# ---- summary, tagged, and the tarball
nvidia-smi -q -d CLOCK,PERFORMANCE >"$LOG/clocks-end.txt" 2>&1
say "== summary ($(elapsed) s)"
for k in kernels handoff parity serve-sampling memcheck racecheck profile llama llama-smollm2-135m llama-llama3-8b-q4_0 \
    llama-batched; do
    [ -n "${R[$k]:-}" ] && say "$(printf '%-22s %s' "$k" "${R[$k]}")"
done
python3 - "$LOG" <<'PY' | tee -a "$LOG/summary.txt"
import glob, json, os, sys
log = sys.argv[1]
tags = json.load(open(os.path.join(log, "tags.json")))
out = {"tags": tags, "bench": {}, "llama_bench": {}, "handoff": None}
for p in sorted(glob.glob(os.path.join(log, "bench-*.json"))):
    try: out["bench"][os.path.basename(p)[6:-5]] = json.load(open(p))
    except ValueError: pass
for p in sorted(glob.glob(os.path.join(log, "llama-bench-*.json"))):
    try: out["llama_bench"][os.path.basename(p)[12:-5]] = json.load(open(p))
    except ValueError: pass
for line in open(os.path.join(log, "handoff.log"), errors="replace"):
    if line.startswith("HANDOFF "): out["handoff"] = json.loads(line[8:])
json.dump(out, open(os.path.join(log, "results.json"), "w"), indent=1)
print(f"commit {tags.get('commit')}, {tags.get('name')}, sm {tags.get('clocks.current.sm [MHz]', tags.get('clocks.sm [MHz]'))}"
      f" / max {tags.get('clocks.max.sm [MHz]')}")
print(f"{'bench':10} {'TTFT512 ms':>10} {'pp512 t/s':>10} {'tg b1 t/s':>10} {'slots':>5} {'agg t/s':>9}")
for k, b in out["bench"].items():
    print(f"{k:10} {b['ttft_ms']:10.3f} {b['prefill_tok_s']:10.0f} {b['decode1_tok_s']:10.0f} {b['slots']:5d} {b['decodeS_tok_s']:9.0f}")
for k, rows in out["llama_bench"].items():
    for r in rows if isinstance(rows, list) else []:
        print(f"llama.cpp {k}: n_prompt {r.get('n_prompt')} n_gen {r.get('n_gen')} {r.get('avg_ts', 0):.1f} t/s")
PY
tar -czf "$OUTDIR/bw-gpu-results.tar.gz" -C "$(dirname "$LOG")" "$(basename "$LOG")"
cp "$LOG/summary.txt" "$OUTDIR/summary.txt"
echo "results: $OUTDIR/bw-gpu-results.tar.gz ($(elapsed) s)"
[[ "${R[kernels]:-}" == PASS* && "${R[parity]:-PASS}" != FAIL* && "${R[serve-sampling]:-PASS}" != FAIL* && "${R[memcheck]:-PASS}" != FAIL* && "${R[racecheck]:-PASS}" != FAIL* ]]
