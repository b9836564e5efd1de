#!/usr/bin/env bash
# Installs every Debian package the build and the tests need, and the Python test packages.
# Idempotent: packages already present are left alone. Needs root (or sudo) for apt-get.
set -euo pipefail
cd "$(dirname "$0")/.."

DEBS=(meson ninja-build pkg-config gcc libc6-dev python3 python3-pip unzip
      libh2o-evloop-dev libnng-dev libjansson-dev libssl-dev libpcre2-dev
      clang libclang-rt-14-dev
      valgrind                 # tests/memcheck: memcheck on a short engine generation
      cmake g++                # pip builds llama-cpp-python (the tests' llama.cpp reference) from source
      libsystemd-dev systemd   # sd_notify for the units; systemd-analyze for the deploy tests
      libcurl4-openssl-dev     # the front's heartbeat to the hive
      chromium)                # a real browser against the front's CORS and EventSource handling

missing=()
for p in "${DEBS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    echo "setup-deps: installing ${missing[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Python packages for the tests only (the product is C); pip leaves satisfied requirements alone.
# llama-cpp-python compiles llama.cpp: for this machine's AVX-512 VNNI as well as AVX2, and without
# -march=native, so its numbers are those of the code paths the comparisons name.
export CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=OFF -DGGML_AVX512=ON -DGGML_AVX512_VNNI=ON -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF}"
python3 -m pip install -q --disable-pip-version-check -r tests/requirements.txt 2>&1 | grep -v "Running pip as the 'root' user" || true
echo "setup-deps: ok"
