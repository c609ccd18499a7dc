#!/usr/bin/env bash
# Paired rounds of `--benchmark --json` for two builds of one binary (say, before and after a
# change), alternating which runs first, so that a drift in the machine's speed hits both.
# Prints each round's prefill and decode tok/s (the medians each run reports) and the median
# new/old ratios.
#
# usage: scripts/paired_benchmark.sh OLD_BIN NEW_BIN ROUNDS BENCHMARK_ARGS...
# e.g.:  scripts/paired_benchmark.sh /tmp/old/tinygrad-only target/release/tinygrad-only 5 \
#          --model models/SmolLM2-135M-Instruct.Q4_1.gguf --prompt-tokens 64 --gen-tokens 32 --iterations 3
set -euo pipefail
old=$1; new=$2; rounds=$3; shift 3
rows=$(mktemp)
trap 'rm -f "$rows"' EXIT
for r in $(seq 1 "$rounds"); do
  if (( r % 2 )); then order="old new"; else order="new old"; fi
  for which in $order; do
    bin=$old; [ "$which" = new ] && bin=$new
    "$bin" --benchmark --json "$@" 2>/dev/null | tail -1 | python3 -c "
import json, sys
s = json.load(sys.stdin)['summary']
print('$r\t$which\t%.3f\t%.3f' % (s['prefill_tok_s'], s['decode_tok_s']))" >> "$rows"
  done
done
python3 - "$rows" <<'PY'
import statistics, sys
by = {}
for line in open(sys.argv[1]):
    r, which, prefill, decode = line.split()
    by.setdefault(int(r), {})[which] = (float(prefill), float(decode))
for r, v in sorted(by.items()):
    print(f"round {r}: prefill old {v['old'][0]:.1f} new {v['new'][0]:.1f}, decode old {v['old'][1]:.2f} new {v['new'][1]:.2f}")
for i, what in enumerate(["prefill", "decode"]):
    ratios = [v['new'][i] / v['old'][i] for _, v in sorted(by.items())]
    print(f"{what} new/old: median {statistics.median(ratios):.3f} ({', '.join(f'{x:.3f}' for x in ratios)})")
PY
