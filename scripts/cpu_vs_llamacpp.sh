#!/usr/bin/env bash
# pytorch-only's f32 decode on the default model against llama.cpp's F32 decode of the same
# model, same thread count, in alternating rounds (issue #6, must-show 3).
#
#   bash scripts/cpu_vs_llamacpp.sh            # ROUNDS=6 THREADS=2 by default
#   bash scripts/cpu_vs_llamacpp.sh OTHER...   # also time other pytorch-only builds each round
#
# OTHER: paths of other pytorch-only binaries (an earlier commit's, say), timed in each round
# right after ours with the same command, each with its own ratio to that round's llama.cpp.
#
# A shared VM's memory bandwidth drifts by 20% within minutes, so single runs of each side
# taken at different times compare nothing: each round runs both back to back and the ratio
# is taken per round. Both decode 128 tokens after a 128-token context (llama-bench -d 128,
# ours after a 128-token prefill).
#
# Needs `cargo xtask setup` (the .venv with torch and gguf, and the models). The first run
# builds llama-bench from the llama.cpp that llama-cpp-python 0.3.36 vendors (the reference
# version in scripts/requirements-reference.txt) into target/llamacpp (about 5 minutes on 2
# cores), with -DGGML_NATIVE=OFF (llama.cpp's native AMX path crashes on these CPUs), and
# writes models/SmolLM2-135M-Instruct.F32.gguf from the Q4_1 file if it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-6}
THREADS=${THREADS:-2}
CONTEXT=128
GEN=128
MODEL=models/SmolLM2-135M-Instruct.Q4_1.gguf
MODEL_F32=models/SmolLM2-135M-Instruct.F32.gguf
LCPP=target/llamacpp
BENCH=$LCPP/llama.cpp/build/bin/llama-bench

[[ -f $MODEL ]] || { echo "error: $MODEL is missing: run cargo xtask setup" >&2; exit 1; }

if [[ ! -x $BENCH ]]; then
    echo "building llama-bench in $LCPP ..." >&2
    mkdir -p "$LCPP"
    python3 -m venv "$LCPP/venv"
    # The sdist's build backend and the build tools, so pip can fetch the sdist without
    # building cmake from source in an isolated environment.
    "$LCPP/venv/bin/pip" install -q scikit-build-core cmake ninja
    "$LCPP/venv/bin/pip" download -q --no-deps --no-binary :all: --no-build-isolation \
        llama-cpp-python==0.3.36 -d "$LCPP"
    tar xzf "$LCPP/llama_cpp_python-0.3.36.tar.gz" -C "$LCPP"
    rm -rf "$LCPP/llama.cpp"
    mv "$LCPP/llama_cpp_python-0.3.36/vendor/llama.cpp" "$LCPP/llama.cpp"
    rm -rf "$LCPP/llama_cpp_python-0.3.36"
    PATH="$PWD/$LCPP/venv/bin:$PATH" cmake -S "$LCPP/llama.cpp" -B "$LCPP/llama.cpp/build" -G Ninja \
        -DGGML_NATIVE=OFF -DLLAMA_CURL=OFF -DCMAKE_BUILD_TYPE=Release >/dev/null
    PATH="$PWD/$LCPP/venv/bin:$PATH" ninja -C "$LCPP/llama.cpp/build" llama-bench >/dev/null
fi

if [[ ! -f $MODEL_F32 ]]; then
    echo "writing $MODEL_F32 (every tensor of $MODEL dequantized to F32) ..." >&2
    .venv/bin/python -c 'import sys; sys.path.insert(0, "scripts")
from make_llamacpp_reference import MODEL_Q4, MODEL_F32, make_f32_copy
make_f32_copy(MODEL_Q4, MODEL_F32)'
fi

cargo build --release -q -p pytorch-only

llamacpp_decode() {
    "$BENCH" -m "$MODEL_F32" -t "$THREADS" -p 0 -n "$GEN" -d "$CONTEXT" -r 3 -o json |
        .venv/bin/python -c 'import json, sys; print("%.2f" % json.load(sys.stdin)[0]["avg_ts"])'
}

ours_decode() {
    OMP_NUM_THREADS=$THREADS "${1:-target/release/pytorch-only}" --model "$MODEL" --benchmark --json \
        --iterations 3 --prompt-tokens "$CONTEXT" --gen-tokens "$GEN" 2>/dev/null |
        .venv/bin/python -c 'import json, sys; print("%.2f" % json.load(sys.stdin)["summary"]["decode_tok_s"])'
}

echo "decode tok/s, $THREADS threads, $GEN tokens after a $CONTEXT-token context"
printf '%-6s %12s %14s %7s' round llama.cpp pytorch-only ratio
for other in "$@"; do printf '  %s (ratio)' "$other"; done
echo
ratio() { .venv/bin/python -c "print(f'{$1 / $2:.3f}')"; }
ratios=()
for round in $(seq 1 "$ROUNDS"); do
    theirs=$(llamacpp_decode)
    ours=$(ours_decode)
    ratios+=("$(ratio "$ours" "$theirs")")
    printf '%-6s %12s %14s %7s' "$round" "$theirs" "$ours" "${ratios[-1]}"
    for other in "$@"; do
        value=$(ours_decode "$other")
        printf '  %s (%s)' "$value" "$(ratio "$value" "$theirs")"
    done
    echo
done
.venv/bin/python -c "import statistics, sys; r = sorted(map(float, sys.argv[1:]))
print(f'ratio pytorch-only / llama.cpp: median {statistics.median(r):.3f}, min {r[0]:.3f}, max {r[-1]:.3f}')" "${ratios[@]}"
