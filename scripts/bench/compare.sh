#!/usr/bin/env bash
# Side-by-side speed benchmark: `adalora bench` (release build) and the PyTorch + peft reference
# (scripts/bench/peft_bench.py) on the same workloads, alternating process by process
# (ours, peft, ours, peft, … for every method and shape, ROUNDS times) so that load from other
# work on the machine hits both alike. Writes raw CSVs, machine info, the command, a merged
# summary and the ratios to $OUT, and prints the ratios.
#
#   scripts/bench/compare.sh                          # full,lora,adalora at 32x128 and 32x64
#   ROUNDS=2 REPS=3 SHAPES=32x128 scripts/bench/compare.sh
#
# Needs python3 with torch, transformers and peft (PYTHON=/path/to/venv/bin/python).
set -euo pipefail
cd "$(dirname "$0")/../.."

PYTHON=${PYTHON:-python3}
ROUNDS=${ROUNDS:-3}
WARMUP=${WARMUP:-2}
REPS=${REPS:-5}
THREADS=${THREADS:-2}
METHODS=${METHODS:-full,lora,adalora}
SHAPES=${SHAPES:-32x128,32x64}
# burn-flex measured faster than ndarray + OpenBLAS (what `adalora train` still uses).
BACKEND=${BACKEND:-flex}
OUT=${OUT:-results/bench/$(date -u +%Y-%m-%d)}
BIN=target/release/adalora

mkdir -p "$OUT/raw"
cargo build --release -p adalora-cli
"$PYTHON" -c 'import torch, transformers, peft' \
  || { echo "error: $PYTHON lacks torch/transformers/peft (set PYTHON=...)" >&2; exit 1; }

{
  echo "command: BACKEND=$BACKEND ROUNDS=$ROUNDS WARMUP=$WARMUP REPS=$REPS THREADS=$THREADS METHODS=$METHODS SHAPES=$SHAPES scripts/bench/compare.sh"
  echo "date: $(date -u +%FT%TZ)"
  echo "git: $(git rev-parse --short HEAD)$(git diff --quiet || echo ' (dirty)')"
  echo "load before: $(cat /proc/loadavg)"
  echo "nproc: $(nproc)"
  lscpu | grep -E '^(Model name|Architecture|CPU\(s\)|Thread|Core|Socket|L[123]|Flags)' || true
  echo "rustc: $(rustc --version)"
  echo "openblas: $(dpkg -s libopenblas0-pthread 2>/dev/null | grep '^Version' || echo unknown)"
  echo "OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-unset} RAYON_NUM_THREADS=${RAYON_NUM_THREADS:-unset}"
  "$PYTHON" -c 'import sys, torch, transformers, peft; print("python", sys.version.split()[0], "torch", torch.__version__, "transformers", transformers.__version__, "peft", peft.__version__, "torch threads", '"$THREADS"')'
} > "$OUT/machine.txt"

common=(--warmup "$WARMUP" --reps "$REPS")
for round in $(seq 1 "$ROUNDS"); do
  for method in ${METHODS//,/ }; do
    for shape in ${SHAPES//,/ }; do
      tag="r${round}_${method}_${shape}"
      echo "== round $round: $method $shape (load $(cut -d' ' -f1-3 /proc/loadavg))" >&2
      "$BIN" bench --backend "$BACKEND" --methods "$method" --shapes "$shape" "${common[@]}" \
        --csv "$OUT/raw/ours_$tag.csv" > /dev/null
      "$PYTHON" scripts/bench/peft_bench.py --methods "$method" --shapes "$shape" \
        --threads "$THREADS" "${common[@]}" --csv "$OUT/raw/peft_$tag.csv" 2> /dev/null
    done
  done
done
echo "load after: $(cat /proc/loadavg)" >> "$OUT/machine.txt"
python3 scripts/bench/compare.py "$OUT"
