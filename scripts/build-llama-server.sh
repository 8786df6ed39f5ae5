#!/usr/bin/env bash
# Builds llama.cpp's llama-server from the llama.cpp that llama-cpp-python's sdist vendors,
# patched as the wheel is (scripts/llama-source.sh), so the server and the Python bindings run
# the same kernels. Idempotent: the binary is cached outside the clone, under
# $LLAMA_SERVER_CACHE/<version>+hartonomous<patches>/llama-server, and built only once.
#
# Usage: scripts/build-llama-server.sh [PIP]   (PIP: the pip that downloads the sdist)
# Environment: LLAMA_VERSION (0.3.36), LLAMA_SERVER_CACHE (~/.cache/hartonomous/llama-server),
#   CMAKE_ARGS (extra flags, e.g. "-DGGML_CUDA=on" in the GPU worker's image), JOBS (2).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
PIP=${1:-pip}
VERSION=${LLAMA_VERSION:-0.3.36}
CACHE=${LLAMA_SERVER_CACHE:-$HOME/.cache/hartonomous/llama-server}
LEVEL=$(find "$HERE/llama-patches" -name '*.patch' | wc -l)
DEST=$CACHE/$VERSION+hartonomous$LEVEL/llama-server
JOBS=${JOBS:-2}

if [ -x "$DEST" ] && "$DEST" --version >/dev/null 2>&1; then
    exit 0
fi

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
start=$(date +%s)

SRC=$(LLAMA_VERSION=$VERSION "$HERE/llama-source.sh" "$WORK" "$PIP")/vendor/llama.cpp

# The same build as the wheel's (Makefile): Release, native CPU, no OpenMP (torch's libgomp in
# the same process slowed llama.cpp 10%; a separate process keeps the same kernels anyway).
# Static, so the cached binary needs no libllama.so beside it; no curl/OpenSSL (models are
# local files), no web UI (the platform is the only client, and the prebuilt UI is a download).
GENERATOR=()
if command -v ninja >/dev/null 2>&1; then GENERATOR=(-G Ninja); fi
# shellcheck disable=SC2086
cmake -S "$SRC" -B "$WORK/build" "${GENERATOR[@]}" \
    -DCMAKE_BUILD_TYPE=Release \
    -DGGML_OPENMP=OFF \
    -DBUILD_SHARED_LIBS=OFF \
    -DLLAMA_CURL=OFF \
    -DLLAMA_OPENSSL=OFF \
    -DLLAMA_BUILD_TESTS=OFF \
    -DLLAMA_BUILD_EXAMPLES=OFF \
    -DLLAMA_BUILD_UI=OFF \
    -DLLAMA_USE_PREBUILT_UI=OFF \
    ${CMAKE_ARGS:-} >"$WORK/cmake.log" 2>&1 || { cat "$WORK/cmake.log"; exit 1; }
cmake --build "$WORK/build" --target llama-server -j "$JOBS" >"$WORK/build.log" 2>&1 \
    || { tail -50 "$WORK/build.log"; exit 1; }

mkdir -p "$(dirname "$DEST")"
cp "$WORK/build/bin/llama-server" "$DEST.tmp"
mv "$DEST.tmp" "$DEST"
"$DEST" --version >/dev/null 2>&1
echo "llama-server $VERSION built in $(( $(date +%s) - start )) s: $DEST"
