#!/usr/bin/env bash
# Side-by-side GPU benchmark: `adalora bench --device cuda` (a release build with
# `--features cuda`) and the PyTorch + peft reference (scripts/bench/peft_bench.py --device cuda)
# on the same card, f32 on both sides: full FT, LoRA and AdaLoRA, then LoRA and AdaLoRA on an NF4
# + double-quant base (QLoRA; bitsandbytes on the peft side). One process per side and setting;
# nvidia-smi samples the card's memory every 200 ms meanwhile (gpu_memory.csv; the start and
# end of each process are in machine.txt), since burn does not report its pool's peak.
# Writes raw CSVs, machine info, summary.csv and ratios.md to $OUT (8 files).
#
#   cargo build --release -p adalora-cli --features cuda && scripts/bench/gpu.sh
#
# Needs python3 with torch (CUDA), transformers, peft and bitsandbytes (PYTHON=...).
set -euo pipefail
cd "$(dirname "$0")/../.."

PYTHON=${PYTHON:-python3}
BIN=${BIN:-target/release/adalora}
WARMUP=${WARMUP:-5}
REPS=${REPS:-10}
SHAPES=${SHAPES:-32x128,32x64}
OUT=${OUT:-results/bench/gpu-$(date -u +%Y-%m-%d)}

mkdir -p "$OUT/raw"
{
  echo "command: WARMUP=$WARMUP REPS=$REPS SHAPES=$SHAPES scripts/bench/gpu.sh"
  echo "date: $(date -u +%FT%TZ)"
  echo "git: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  lscpu | grep -E '^(Model name|CPU\(s\))' || true
  "$PYTHON" -c 'import sys, torch, transformers, peft, bitsandbytes as bnb; print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda, "transformers", transformers.__version__, "peft", peft.__version__, "bitsandbytes", bnb.__version__)'
} > "$OUT/machine.txt"

nvidia-smi --query-gpu=timestamp,memory.used --format=csv,noheader -lms 200 > "$OUT/gpu_memory.csv" &
SMI=$!
trap 'kill $SMI 2>/dev/null || true' EXIT

# Run one side, marking its start and end in machine.txt against gpu_memory.csv's clock.
side() {
  local name=$1
  shift
  echo "start $name: $(date -u '+%Y/%m/%d %H:%M:%S.%3N')" >> "$OUT/machine.txt"
  echo "== $name" >&2
  "$@"
  echo "end $name: $(date -u '+%Y/%m/%d %H:%M:%S.%3N')" >> "$OUT/machine.txt"
}

common=(--shapes "$SHAPES" --warmup "$WARMUP" --reps "$REPS")
quant=(--methods lora,adalora --quantize nf4 --double-quant --no-eval)
side ours_f32 "$BIN" bench --device cuda --methods full,lora,adalora "${common[@]}" \
  --csv "$OUT/raw/ours_f32.csv"
side peft_f32 "$PYTHON" scripts/bench/peft_bench.py --device cuda --methods full,lora,adalora \
  "${common[@]}" --csv "$OUT/raw/peft_f32.csv"
side ours_nf4 "$BIN" bench --device cuda "${quant[@]}" "${common[@]}" --csv "$OUT/raw/ours_nf4.csv"
side peft_nf4 "$PYTHON" scripts/bench/peft_bench.py --device cuda "${quant[@]}" "${common[@]}" \
  --csv "$OUT/raw/peft_nf4.csv"
"$PYTHON" scripts/bench/compare.py "$OUT"
