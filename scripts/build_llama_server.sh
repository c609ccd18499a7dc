#!/usr/bin/env bash
# Build llama.cpp's llama-server from the llama.cpp that llama-cpp-python vendors (the project's
# reference version, pinned in scripts/requirements-reference.txt), for `cargo xtask serve-bench`.
#
#   bash scripts/build_llama_server.sh OUT_DIR      # the last stdout line: the binary's path
#
# OUT_DIR (created if missing; keep it outside the repository or under target/) ends up holding:
#   cache/llama_cpp_python-V.tar.gz   the sdist, downloaded once with pip
#   venv/                             cmake, ninja and scikit-build-core from PyPI (no apt needed)
#   src/                              the unpacked sdist; llama.cpp is src/vendor/llama.cpp
#   build/bin/llama-server            the binary (statically linked to llama.cpp and ggml)
#   build/.llama-server-stamp         the version and flags it was built with
#
# Idempotent: a rerun whose stamp matches does nothing but print the path. Another version
# (LLAMA_CPP_PYTHON_VERSION=X) or changed flags rebuild. The first build takes about 5 minutes
# of 2 cores (8 minutes of wall time here while sharing them with another build).
#
# Needs: python3 with venv and pip, a C/C++ compiler (g++ 12 here: Debian's build-essential),
# network access to PyPI for the first run only. Environment: LLAMA_CPP_PYTHON_VERSION (default:
# the pin in scripts/requirements-reference.txt), JOBS (default: nproc), PYTHON (default: python3).
# Prefix with `nice -n 19` to keep a machine that is doing other work responsive.
set -euo pipefail

die() { echo "build_llama_server.sh: error: $*" >&2; exit 1; }
say() { echo "build_llama_server.sh: $*" >&2; }  # progress on stderr: stdout is for the path

[[ $# -eq 1 && -n $1 ]] || die "usage: $0 OUT_DIR"
ROOT=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$1" || die "cannot create $1"
OUT=$(cd "$1" && pwd)  # absolute: CMake records the paths it was configured with

PIN=$(sed -n 's/^llama-cpp-python==\([^ ]*\).*/\1/p' "$ROOT/scripts/requirements-reference.txt" 2>/dev/null || true)
VERSION=${LLAMA_CPP_PYTHON_VERSION:-$PIN}
[[ -n $VERSION ]] ||
    die "no llama-cpp-python version: set LLAMA_CPP_PYTHON_VERSION or pin it in scripts/requirements-reference.txt"
JOBS=${JOBS:-$(nproc)}
PYTHON=${PYTHON:-python3}

CACHE=$OUT/cache
SDIST=$CACHE/llama_cpp_python-$VERSION.tar.gz
VENV=$OUT/venv
SRC=$OUT/src
LLAMA=$SRC/vendor/llama.cpp
BUILD=$OUT/build
BIN=$BUILD/bin/llama-server
STAMP=$BUILD/.llama-server-stamp

CMAKE_ARGS=(
    -G Ninja
    -DCMAKE_BUILD_TYPE=Release
    # Portable AVX2/FMA/F16C code instead of -march=native: llama.cpp's native build turns on
    # its AMX path, which crashes on these CPUs. The same flag as the reference builds
    # (docs/correctness.md, scripts/cpu_vs_llamacpp.sh), so the kernels compared are the same.
    -DGGML_NATIVE=OFF
    # No libcurl: llama-server then cannot download models (-hf, URLs); we give it a local file.
    # (Deprecated and ignored in this llama.cpp, which has no libcurl code left; kept so an older
    # pin does not need libcurl's headers.)
    -DLLAMA_CURL=OFF
    # No HTTPS in cpp-httplib: the benchmark talks to 127.0.0.1 in plain HTTP, and this drops
    # the libssl-dev build dependency.
    -DLLAMA_OPENSSL=OFF
    # The web UI: the sdist ships its Svelte sources (tools/ui) but not the built bundle, and
    # building it needs node and npm packages; the prebuilt fallback downloads it at build time
    # from Hugging Face, which is not reachable here (and would make the build depend on the
    # network). Without assets llama-server serves no page at / (404); the API is unaffected.
    -DLLAMA_BUILD_UI=OFF
    -DLLAMA_USE_PREBUILT_UI=OFF
    # Only what llama-server needs is configured: no tests, examples or the unified binary.
    -DLLAMA_BUILD_TESTS=OFF
    -DLLAMA_BUILD_EXAMPLES=OFF
    -DLLAMA_BUILD_APP=OFF
    -DLLAMA_BUILD_TOOLS=ON
    -DLLAMA_BUILD_SERVER=ON
    # Static libllama/libggml: one self-contained binary that can be copied or moved.
    -DBUILD_SHARED_LIBS=OFF
    # CPU only (the CPU backend is on by default; these are off by default too, stated so a
    # machine with a GPU toolkit does not change what is built).
    -DGGML_CUDA=OFF -DGGML_HIP=OFF -DGGML_VULKAN=OFF -DGGML_METAL=OFF -DGGML_SYCL=OFF -DGGML_OPENCL=OFF
    # No ccache lookup (and no warning about it missing): builds are one-off.
    -DGGML_CCACHE=OFF
)
WANT_STAMP="llama-cpp-python $VERSION; target llama-server; ${CMAKE_ARGS[*]}"

# A rerun with the same version and flags: nothing to do.
if [[ -x $BIN && -f $STAMP && "$(cat "$STAMP")" == "$WANT_STAMP" ]]; then
    say "up to date (llama-cpp-python $VERSION)"
    echo "$BIN"
    exit 0
fi

command -v c++ >/dev/null || die "no C++ compiler (c++) on PATH: install Debian's build-essential"

# Build tools from PyPI wheels in a private venv: no Debian cmake/ninja needed, and pip needs
# scikit-build-core (the sdist's build backend) in the same environment to download the sdist
# (see below).
if [[ ! -x $VENV/bin/cmake || ! -x $VENV/bin/ninja || ! -d $VENV/lib ]]; then
    say "creating $VENV (cmake, ninja, scikit-build-core)"
    rm -rf "$VENV"
    "$PYTHON" -m venv "$VENV" || die "$PYTHON -m venv failed (Debian: apt-get install python3-venv)"
    "$VENV/bin/pip" install -q cmake ninja scikit-build-core ||
        die "pip could not install cmake, ninja and scikit-build-core from PyPI"
fi
export PATH="$VENV/bin:$PATH"

# The sdist. pip prepares its metadata even for `pip download`; with --no-binary :all: an
# isolated build environment would build cmake itself from source (many minutes), so
# --no-build-isolation makes pip use the venv's scikit-build-core and cmake instead.
if [[ ! -f $SDIST ]]; then
    say "downloading llama-cpp-python==$VERSION's sdist into $CACHE"
    mkdir -p "$CACHE"
    "$VENV/bin/pip" download -q --no-deps --no-binary :all: --no-build-isolation \
        "llama-cpp-python==$VERSION" -d "$CACHE" ||
        die "pip could not download llama-cpp-python==$VERSION's sdist (is PyPI reachable? is the version right?)"
    [[ -f $SDIST ]] || die "pip downloaded no $SDIST (files in $CACHE: $(ls "$CACHE"))"
fi

# Unpack, unless src/ already holds this version (PKG-INFO is every sdist's metadata file).
if ! grep -qx "Version: $VERSION" "$SRC/PKG-INFO" 2>/dev/null; then
    say "unpacking $SDIST into $SRC"
    rm -rf "$SRC" "$BUILD" "$OUT/src.tmp"  # another version's build would not match the sources
    mkdir -p "$OUT/src.tmp"
    tar xzf "$SDIST" -C "$OUT/src.tmp" || die "cannot unpack $SDIST (corrupt? delete it and rerun)"
    mv "$OUT/src.tmp/llama_cpp_python-$VERSION" "$SRC" || die "$SDIST has no llama_cpp_python-$VERSION/ folder"
    rmdir "$OUT/src.tmp"
fi
# The server's sources: tools/server in llama.cpp since mid-2025, examples/server before.
if [[ ! -f $LLAMA/tools/server/CMakeLists.txt && ! -f $LLAMA/examples/server/CMakeLists.txt ]]; then
    die "llama-cpp-python $VERSION's sdist has no llama-server sources ($LLAMA/tools/server or examples/server)"
fi

say "configuring $BUILD (log: $OUT/configure.log)"
cmake -S "$LLAMA" -B "$BUILD" "${CMAKE_ARGS[@]}" >"$OUT/configure.log" 2>&1 ||
    { tail -n 30 "$OUT/configure.log" >&2; die "cmake configure failed: see $OUT/configure.log"; }

say "building llama-server with $JOBS jobs (log: $OUT/build.log)"
start=$SECONDS
ninja -C "$BUILD" -j "$JOBS" llama-server >"$OUT/build.log" 2>&1 ||
    { tail -n 30 "$OUT/build.log" >&2; die "build failed: see $OUT/build.log"; }
[[ -x $BIN ]] || die "the build finished but $BIN is missing"
say "built in $((SECONDS - start)) s: $("$BIN" --version 2>&1 | head -n 1)"

echo "$WANT_STAMP" >"$STAMP"
echo "$BIN"
