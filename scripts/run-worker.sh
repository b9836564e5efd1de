#!/usr/bin/env bash
# Starts a beeworker pair on the default model on a fresh Debian machine: installs what is missing,
# fetches the model, builds, then runs beeworker-front with a supervised beeworker-engine in local mode
# (127.0.0.1, no token). Extra arguments go to beeworker-front (e.g. --port 9000 --threads 2).
# For network mode, set LLORCH_API_TOKEN and pass BW_NETWORK=1.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-deps.sh >/dev/null
scripts/fetch-model.sh
scripts/build.sh build

PORT=8080
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do [ "${args[$i]}" = "--port" ] && PORT=${args[$((i + 1))]}; done
mode=(--local-mode)
auth=""
if [ -n "${BW_NETWORK:-}" ]; then
    mode=()
    auth=' -H "Authorization: Bearer $LLORCH_API_TOKEN"'
fi

cat <<EOF_USAGE
beeworker: starting on port $PORT (Ctrl-C stops both processes). Try, in another shell:

  curl -s$auth localhost:$PORT/health
  curl -s$auth -H 'Content-Type: application/json' localhost:$PORT/v1/inference \\
       -d '{"prompt":"Write a haiku about bees","max_tokens":64,"temperature":0}'
      # → {"job_id":"job-…","sse_url":"/v1/inference/job-…/stream"}
  curl -sN$auth localhost:$PORT/v1/inference/<job_id>/stream     # one SSE event per token

EOF_USAGE
exec build/frontend/beeworker-front "${mode[@]}" --spawn-engine --port "$PORT" \
    --model models/SmolLM2-135M-Instruct.Q4_1.gguf "${args[@]}"
