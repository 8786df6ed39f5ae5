#!/usr/bin/env bash
# Unpacks llama-cpp-python's sdist (which vendors llama.cpp) into DEST and applies
# scripts/llama-patches/*.patch in order, so the wheel (Makefile) and llama-server
# (scripts/build-llama-server.sh) compile the same, patched kernels. The patched package
# carries a local version, <version>+hartonomous<N> (N: the number of patches), so an
# unpatched wheel in a cache can never be mistaken for it.
#
# Usage: scripts/llama-source.sh DEST [PIP]   (PIP: the pip that downloads the sdist)
# Environment: LLAMA_VERSION (0.3.36). Prints the patched source folder (DEST/llama-cpp-python).
set -euo pipefail

DEST=${1:?usage: scripts/llama-source.sh DEST [PIP]}
PIP=${2:-pip}
VERSION=${LLAMA_VERSION:-0.3.36}
PATCHES=$(cd "$(dirname "$0")" && pwd)/llama-patches

mkdir -p "$DEST"
# The sdist, through pip (its HTTP cache makes a second download cheap).
"$PIP" download --quiet --no-deps --no-binary :all: -d "$DEST" "llama-cpp-python==$VERSION"
rm -rf "$DEST/llama-cpp-python"
tar -xzf "$DEST/llama_cpp_python-$VERSION.tar.gz" -C "$DEST"
mv "$DEST/llama_cpp_python-$VERSION" "$DEST/llama-cpp-python"
SRC=$DEST/llama-cpp-python

n=0
for p in "$PATCHES"/*.patch; do
    # git apply, not patch(1): git is already a requirement, patch(1) is not installed everywhere.
    git -C "$SRC" apply --unsafe-paths -p1 "$p" >&2 \
        || { echo "llama-source: $(basename "$p") does not apply to llama-cpp-python $VERSION" >&2; exit 1; }
    n=$((n + 1))
done
sed -i "s/^__version__ = \"$VERSION\"$/__version__ = \"$VERSION+hartonomous$n\"/" "$SRC/llama_cpp/__init__.py"
grep -q "^__version__ = \"$VERSION+hartonomous$n\"$" "$SRC/llama_cpp/__init__.py" \
    || { echo "llama-source: could not stamp the version in llama_cpp/__init__.py" >&2; exit 1; }
echo "$SRC"
