#!/bin/bash
# On a lent GPU machine, in one call (after `cargo xtask gpu-bundle` here; carry .gpubundle):
# the PyTorch anchors, tinygrad-only (weights f16, Q8_0, Q4_0) and pytorch-only (--half, and
# --half --compile with its CUDA graph) on the Llama 3.2 1B shape, f16 activations, batch-1
# greedy decode with one host sync per token. Results land in $OUT.
# docs/gpu.md explains each step; docs/benchmarks/ records what it printed.
set -u
B=.gpubundle
OUT=${OUT:-/tmp/gpu_measure}; mkdir -p "$OUT"
exec > >(tee "$OUT/gpu_measure.log") 2>&1

# The binaries travel xz-compressed (the carry limit is 64 MiB): unpack them with Python's lzma.
BIN=/tmp/lbb-bin; mkdir -p $BIN
for f in $B/bin/*.xz; do
  python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' "$f" "$BIN/$(basename "${f%.xz}")"
done
chmod +x $BIN/*

# NVIDIA's Vulkan ICD is installed but the loader and libglvnd are not: unpack the carried .debs.
for f in $B/gl/*.deb; do dpkg -x "$f" /; done; ldconfig
export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
export XDG_RUNTIME_DIR=/tmp/xdg; mkdir -p "$XDG_RUNTIME_DIR"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader

echo "== PyTorch anchors (same call, same card)"
for variant in cudagraph eager; do
  timeout 240 python3 $B/torch_llama_anchor.py $variant --size 1B --dtype float16 --tokens 128 | tee -a "$OUT/anchors.jsonl"
done

echo "== tinygrad-only"
measure() {
  local name=$1; shift
  timeout 300 $BIN/tinygrad-only --benchmark --size 1B --dtype f16 --iterations 5 --verbose --json "$@" \
    >"$OUT/tinygrad-$name.json" 2>"$OUT/tinygrad-$name.err"
  echo "$name: exit $?"; tail -3 "$OUT/tinygrad-$name.err"
}
measure f16
measure q8_0 --weights q8_0
measure q4_0 --weights q4_0

echo "== pytorch-only (against this machine's libtorch 2.11)"
export LD_LIBRARY_PATH="$(python3 -c 'import os, torch; print(os.path.dirname(torch.__file__))')/lib:${LD_LIBRARY_PATH:-}"
torch_measure() {
  local name=$1; shift
  timeout 300 $BIN/pytorch-only --benchmark --size 1B --device cuda --iterations 5 --json "$@" \
    >"$OUT/pytorch-$name.json" 2>"$OUT/pytorch-$name.err"
  echo "$name: exit $?"; tail -3 "$OUT/pytorch-$name.err"
}
torch_measure half --half
torch_measure half-compile --half --compile

python3 - "$OUT" <<'PY'
import json, sys, pathlib
out = pathlib.Path(sys.argv[1])
print(f"{'system':<40} {'decode tok/s':>12} {'ms/token':>9} {'GB/s':>7} {'launches/token':>14}")
for line in (out / "anchors.jsonl").read_text().splitlines():
    try:
        r = json.loads(line)
    except ValueError:
        continue
    tok_s = r.get("tok_s") or r.get("decode_tok_s")
    print(f"{str(r.get('tool')):<40} {tok_s:>12.1f} {1e3 / tok_s:>9.2f}")
def ours(path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
for name in ["pytorch-half", "pytorch-half-compile"]:
    r = ours(out / f"{name}.json")
    if r is None:
        print(f"{name:<40} no result (see {name}.err)")
        continue
    s = r["summary"]
    print(f"{name:<40} {s['decode_tok_s']:>12.1f} {s['decode_latency']['median_ms']:>9.2f} {s['weight_gb_s']:>7.1f}")
eager, compiled = ours(out / "pytorch-half.json"), ours(out / "pytorch-half-compile.json")
if eager and compiled:
    same = eager["generated_tokens"] == compiled["generated_tokens"]
    print(f"--half --compile greedy ids equal --half's: {same} ({len(eager['generated_tokens'])} tokens)")
for name in ["f16", "q8_0", "q4_0"]:
    path = out / f"tinygrad-{name}.json"
    try:
        r = json.loads(path.read_text())
    except (OSError, ValueError):
        print(f"{'tinygrad-only ' + name:<40} no result (see tinygrad-{name}.err)")
        continue
    s = r["summary"]
    print(f"{'tinygrad-only ' + name:<40} {s['decode_tok_s']:>12.1f} {s['decode_latency']['median_ms']:>9.2f} "
          f"{s['weight_gb_s']:>7.1f} {str(r.get('kernel_launches_per_token')):>14}")
PY
