#!/usr/bin/env bash
# Everything the CUDA backend must prove, in one call on a GPU host, ending with a short table:
#   1. kernel tests against CPU references        (test_cuda_kernels)
#   2. CPU-vs-CUDA greedy parity + batching check  (cuda_parity MODEL 48)
#   3. benchmark: TTFT for 512 tokens, batch-1 decode (graphs+PDL, with the tensor-core product for
#      batches, then without graphs or PDL), 64-slot decode
#   4. the engine CLI: --bench, and --generate --json --top-logits 2 on cpu and cuda
#   5. llama.cpp's llama-bench on the same model when LLAMA_BENCH names a binary
#   6. per-kernel profiles (ncu, where the host has it) of batch-1 decode and of a 512-token prefill
#      (BW_GPU_PROFILE=0 skips them)
#   7. compute-sanitizer memcheck on a short parity run (last: slowest)
# Binaries: build-gpu/ when it has them, else .gpucarry/bin/ (tests/gpu/prepare.sh packs them there as
# bins.tar.gz, unpacked into /tmp/bw-bin), else a fresh build
# with meson/ninja/nvcc if the host has them. Libraries: .devlibs/. Model: BW_MODEL, the default path,
# or the parts prepare.sh split (/tmp/bw-model/part-00 from a first call, .gpucarry/m2/part-01).
# Logs go to $OUT (or /tmp/bw-gpu-out). Every step has its own time limit; the whole run stays under
# ~9 minutes. Exit status: 0 when kernels, parity and sanitizer passed.
set -uo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
START=$(date +%s)
LOG=${OUT:-/tmp/bw-gpu-out}
mkdir -p "$LOG"
export LD_LIBRARY_PATH="$ROOT/.devlibs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export PATH="$PATH:/usr/local/cuda/bin"
elapsed() { echo $(($(date +%s) - START)); }
left() { echo $((${BW_GPU_BUDGET_S:-540} - $(elapsed))); } # BW_GPU_BUDGET_S: seconds the whole run may take
declare -A R

echo "== GPU: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | head -1)"
GPU_NAME=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)

# ---- binaries
BIN=""
if [ -f .gpucarry/bin/bins.tar.gz ] && [ ! -x build-gpu/tests/cuda_bench ]; then
    mkdir -p /tmp/bw-bin && tar -xzf .gpucarry/bin/bins.tar.gz -C /tmp/bw-bin
fi
for d in build-gpu .gpucarry/bin /tmp/bw-bin; do
    if [ -x "$d/tests/cuda_bench" ] || [ -x "$d/cuda_bench" ]; then BIN=$d; break; fi
done
if [ -z "$BIN" ] && command -v meson >/dev/null && command -v ninja >/dev/null && command -v nvcc >/dev/null; then
    echo "== building into /tmp/bw-build"
    meson setup /tmp/bw-build -Dcuda=enabled -Dgpu_archs=90 >"$LOG/build.log" 2>&1 &&
        ninja -C /tmp/bw-build >>"$LOG/build.log" 2>&1 && BIN=/tmp/bw-build
fi
bin() { # path of a tool in either layout
    for p in "$BIN/tests/$1" "$BIN/engine/$1" "$BIN/$1"; do [ -x "$p" ] && { echo "$p"; return; }; done
    echo "/nonexistent/$1"
}
if [ -z "$BIN" ]; then echo "no binaries: run tests/gpu/prepare.sh first and carry .gpucarry/bin"; exit 2; fi
echo "== binaries from $BIN"

# ---- model
MODEL=${BW_MODEL:-models/SmolLM2-135M-Instruct.Q4_1.gguf}
if [ ! -s "$MODEL" ]; then
    parts=$(ls /tmp/bw-model/part-* .gpucarry/m1/part-* .gpucarry/m2/part-* 2>/dev/null | awk -F/ '!seen[$NF]++' |
        awk -F/ '{print $NF" "$0}' | sort | cut -d' ' -f2)
    if [ -n "$parts" ]; then
        cat $parts >/tmp/bw-model.gguf
        MODEL=/tmp/bw-model.gguf
        if [ -f .gpucarry/m2/sha256 ] && [ "$(sha256sum <$MODEL | cut -d' ' -f1)" != "$(cat .gpucarry/m2/sha256)" ]; then
            echo "model parts do not add up to the original (sha256 differs): $(echo $parts)"; MODEL=""
        fi
    else
        MODEL=""
    fi
fi
[ -n "$MODEL" ] && echo "== model $MODEL ($(stat -L -c %s "$MODEL") bytes)" || echo "== no model: model steps skipped"

# ---- 1. kernels
timeout 150 "$(bin test_cuda_kernels)" >"$LOG/kernels.log" 2>&1; rc=$?
grep -E "^(FAIL|device)" "$LOG/kernels.log"; tail -1 "$LOG/kernels.log"
R[kernels]="$( [ $rc = 0 ] && echo PASS || echo "FAIL rc=$rc") ($(tail -1 "$LOG/kernels.log"))"

if [ -n "$MODEL" ]; then
    # ---- 2. parity
    timeout 200 "$(bin cuda_parity)" "$MODEL" 48 >"$LOG/parity.log" 2>&1; rc=$?
    cat "$LOG/parity.log" | tail -20
    R[parity]="$( [ $rc = 0 ] && echo PASS || echo "FAIL rc=$rc") ($(grep -c near-tie "$LOG/parity.log") near-tie lines)"
    if [ $rc != 0 ] && [ "$(left)" -gt 300 ]; then # localise: is it the graph/PDL machinery or the kernels?
        BW_CUDA_GRAPH=0 BW_CUDA_PDL=0 timeout 120 "$(bin cuda_parity)" "$MODEL" 48 >"$LOG/parity-eager.log" 2>&1
        R[parity-eager]="rc=$? $(tail -1 "$LOG/parity-eager.log")"
    fi

    # ---- 3. benchmark
    bench() { # name, env...
        local name=$1; shift
        env "$@" timeout 90 "$(bin cuda_bench)" "$MODEL" -p 512 -n 128 -s 64 >"$LOG/bench-$name.log" 2>&1
        grep -v '^BENCH' "$LOG/bench-$name.log" | tail -4 | sed "s/^/[$name] /"
        grep '^BENCH' "$LOG/bench-$name.log" | sed 's/^BENCH //' >"$LOG/bench-$name.json"
    }
    bench default
    bench mma BW_CUDA_MMA=1
    # BW_GPU_QUICK=1 skips the two diagnosis variants when device time is short.
    if [ -z "${BW_GPU_QUICK:-}" ]; then
        [ "$(left)" -gt 240 ] && bench nopdl BW_CUDA_PDL=0
        [ "$(left)" -gt 220 ] && bench nograph BW_CUDA_GRAPH=0
    fi

    # ---- 4. the engine CLI
    ENGINE=$(bin beeworker-engine)
    timeout 60 "$ENGINE" --model "$MODEL" --backend cuda --bench -p 512 -n 128 >"$LOG/cli-bench.log" 2>&1
    R[cli-bench]="rc=$? $(tail -2 "$LOG/cli-bench.log" | tr '\n' ' ' | cut -c1-150)"
    for be in cpu cuda; do
        timeout 60 "$ENGINE" --model "$MODEL" --backend $be --generate --json --temperature 0 --top-logits 2 \
            --max-tokens 32 --prompt "The capital of France is" >"$LOG/cli-gen-$be.jsonl" 2>"$LOG/cli-gen-$be.err"
    done
    R[cli-parity]=$(python3 - "$LOG/cli-gen-cpu.jsonl" "$LOG/cli-gen-cuda.jsonl" <<'PY' 2>&1 | tail -1
import json, sys
def steps(path):
    out = []
    for line in open(path):
        try: o = json.loads(line)
        except ValueError: continue
        if isinstance(o.get("id"), int): out.append(o)
    return out
a, b = steps(sys.argv[1]), steps(sys.argv[2])
n = next((i for i, (x, y) in enumerate(zip(a, b)) if x["id"] != y["id"]), min(len(a), len(b)))
tie = ""
if n < min(len(a), len(b)):
    tie = f"; step {n} top-2 cpu {a[n].get('top')} cuda {b[n].get('top')}"
same = [x["id"] for x in a] == [y["id"] for y in b] and a
print(f"{'same' if same else 'DIFFER'}: cpu {len(a)} ids, cuda {len(b)} ids, first {n} equal{tie}")
PY
)

    # ---- 5. llama.cpp
    if [ -n "${LLAMA_BENCH:-}" ] && [ -x "$LLAMA_BENCH" ] && [ "$(left)" -gt 150 ]; then
        timeout 90 "$LLAMA_BENCH" -m "$MODEL" -p 512 -n 128 -ngl 99 -r 3 >"$LOG/llama-bench.log" 2>&1
        R[llama-bench]="rc=$?"
        grep -E "pp512|tg128" "$LOG/llama-bench.log"
    else
        R[llama-bench]="skipped (LLAMA_BENCH not set or no time)"
    fi

    # ---- 6. per-kernel profile of batch-1 decode and of a 512-token prefill (kernels serialised, no PDL
    # overlap, so a step's sum is an upper bound of its GPU time)
    NCU=$(command -v ncu || ls /usr/local/cuda/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
    R[profile]="skipped (no ncu, BW_GPU_PROFILE=0 or no time)"
    for what in decode:4 prefill:1; do
        mode=${what%:*} steps=${what#*:}
        if [ "${BW_GPU_PROFILE:-1}" != 0 ] && [ -n "$NCU" ] && [ "$(left)" -gt 150 ]; then
            timeout 75 "$NCU" --profile-from-start off --csv --print-units base --metrics gpu__time_duration.sum \
                "$(bin cuda_bench)" "$MODEL" -p 512 -n $steps -d $mode >"$LOG/profile-$mode.csv" 2>"$LOG/profile-$mode.err"
            R[profile]="rc=$? ($LOG/profile-*.csv)"
            echo "== profile: $mode"
            python3 tests/gpu/profile_summary.py "$LOG/profile-$mode.csv" $steps | head -16 | tee "$LOG/profile-$mode.txt"
        fi
    done

    # ---- 7. sanitizer
    if command -v compute-sanitizer >/dev/null && [ "$(left)" -gt 60 ]; then
        timeout $(($(left) - 20)) compute-sanitizer --tool memcheck --error-exitcode 9 "$(bin cuda_parity)" "$MODEL" 3 \
            >"$LOG/memcheck.log" 2>&1; rc=$?
        tail -3 "$LOG/memcheck.log"
        R[memcheck]="$( [ $rc = 0 ] && echo PASS || echo "FAIL rc=$rc") ($(grep -m1 -E 'ERROR SUMMARY' "$LOG/memcheck.log"))"
    else
        R[memcheck]="skipped (no compute-sanitizer or no time)"
    fi
fi

# ---- table
echo
echo "== summary: ${GPU_NAME:-unknown GPU}, $(date -u +%Y-%m-%d), $(elapsed) s"
for k in kernels parity parity-eager memcheck cli-parity cli-bench llama-bench profile; do
    [ -n "${R[$k]:-}" ] && printf '%-13s %s\n' "$k" "${R[$k]}"
done
python3 - "$LOG" <<'PY'
import json, os, sys
rows = []
for name in ("default", "mma", "nopdl", "nograph"):
    p = os.path.join(sys.argv[1], f"bench-{name}.json")
    try: b = json.load(open(p))
    except (OSError, ValueError): continue
    rows.append((name, b))
if rows:
    print(f"{'bench':9} {'TTFT512 ms':>10} {'prefill t/s':>11} {'b1 t/s':>8} {'b1+logits':>9} {'b64 t/s':>9}")
    for name, b in rows:
        print(f"{name:9} {b['ttft_ms']:10.3f} {b['prefill_tok_s']:11.0f} {b['decode1_tok_s']:8.0f} "
              f"{b['decode1_logits_tok_s']:9.0f} {b['decodeS_tok_s']:9.0f}")
PY
grep -hE "^\|.*(pp512|tg128)" "$LOG/llama-bench.log" 2>/dev/null
[[ "${R[kernels]:-}" == PASS* && "${R[parity]:-}" == PASS* && "${R[memcheck]:-PASS}" != FAIL* ]]
