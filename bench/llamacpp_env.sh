#!/usr/bin/env bash
# llama.cpp for bench/llamacpp_anchor.py, built from source apart from lmforge's environment.
#
#     bash bench/llamacpp_env.sh          # LLAMA_CPP_PYTHON_VERSION=0.3.36 by default; ~15 min on 2 cores
#
# What it builds, all under bench/.llamacpp-env (gitignored):
#   build/bin/      llama.cpp itself (the copy vendored in the llama-cpp-python sdist): libllama.so and
#                   its ggml libraries, `llama-server` (continuous batching: --parallel N) and `llama-bench`,
#                   compiled for this CPU (GGML_NATIVE=ON)
#   venv/           a virtualenv with llama-cpp-python from the same sdist, built WITHOUT its own copy of
#                   the library (LLAMA_BUILD=OFF): it loads build/bin/libllama.so (LLAMA_CPP_LIB_PATH)
# Nothing is installed into lmforge's .venv. The sdist comes from PyPI (`pip download --no-binary`).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PY:-$ROOT/.venv/bin/python}"
VERSION="${LLAMA_CPP_PYTHON_VERSION:-0.3.36}"
ENV_DIR="$ROOT/bench/.llamacpp-env"
JOBS="${JOBS:-$(nproc)}"
mkdir -p "$ENV_DIR"
cd "$ENV_DIR"

SDIST="llama_cpp_python-$VERSION.tar.gz"
if [ ! -f "$SDIST" ]; then
  echo "downloading the llama-cpp-python $VERSION source distribution from PyPI"
  "$PY" -m pip download --quiet --no-binary :all: --no-deps -d . "llama-cpp-python==$VERSION"
fi
SRC="$ENV_DIR/llama_cpp_python-$VERSION"
[ -d "$SRC" ] || tar xzf "$SDIST"

echo "building llama.cpp (vendored in the sdist) with $JOBS jobs"
cmake -S "$SRC/vendor/llama.cpp" -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=ON \
  -DGGML_NATIVE=ON -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
  -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_SERVER=ON > cmake-configure.log
ninja -C build -j "$JOBS" llama llama-server llama-bench > ninja.log

echo "installing llama-cpp-python into $ENV_DIR/venv (without building its own library)"
BASE_PY="$("$PY" -c 'import sys; print(sys.base_prefix)')/bin/python3"
[ -x venv/bin/python ] || "$BASE_PY" -m venv venv
CMAKE_ARGS="-DLLAMA_BUILD=OFF -DLLAVA_BUILD=OFF" venv/bin/pip install --quiet "$SRC"

LLAMA_CPP_LIB_PATH="$ENV_DIR/build/bin" venv/bin/python - <<'EOF'
import llama_cpp
print(f"ok: llama-cpp-python {llama_cpp.__version__}, library {llama_cpp.llama_cpp._lib._name}")
print(llama_cpp.llama_print_system_info().decode())
EOF
build/bin/llama-server --version 2>&1 | tail -2
