#!/usr/bin/env bash
# Side-by-side GPU benchmark: `adalora bench --device cuda` (a release build with
# `--features cuda`) and the PyTorch + peft reference (scripts/bench/peft_bench.py --device cuda)
# on the same card, f32 on both sides: full FT, LoRA and AdaLoRA, then LoRA and AdaLoRA on an NF4
# + double-quant base (QLoRA; bitsandbytes on the peft side), once per compute dtype of its
# matmul (f32 and bf16, bitsandbytes' compute_dtype). One process per side and setting;
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
COMPUTE_DTYPES=${COMPUTE_DTYPES:-f32 bf16}
METHODS=${METHODS:-full,lora,adalora}
OUT=${OUT:-results/bench/gpu-$(date -u +%Y-%m-%d)}

mkdir -p "$OUT/raw"
{
  echo "command: WARMUP=$WARMUP REPS=$REPS SHAPES=$SHAPES COMPUTE_DTYPES=\"$COMPUTE_DTYPES\" METHODS=$METHODS scripts/bench/gpu.sh"
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
side ours_f32 "$BIN" bench --device cuda --methods "$METHODS" "${common[@]}" \
  --csv "$OUT/raw/ours_f32.csv"
side peft_f32 "$PYTHON" scripts/bench/peft_bench.py --device cuda --methods "$METHODS" \
  "${common[@]}" --csv "$OUT/raw/peft_f32.csv"
# The quantized base once per compute dtype (bf16 rows are labelled q<method>-bf16).
for dtype in $COMPUTE_DTYPES; do
  side ours_nf4_$dtype "$BIN" bench --device cuda "${quant[@]}" --compute-dtype $dtype \
    "${common[@]}" --csv "$OUT/raw/ours_nf4_$dtype.csv"
  # LoRA only on the peft side: peft 0.21's AdaLoRA layer adds in place to bitsandbytes'
  # MatMul4Bit output, which autograd refuses on CUDA.
  side peft_nf4_$dtype "$PYTHON" scripts/bench/peft_bench.py --device cuda "${quant[@]}" \
    --methods lora --compute-dtype $dtype "${common[@]}" --csv "$OUT/raw/peft_nf4_$dtype.csv"
done
"$PYTHON" scripts/bench/compare.py "$OUT"
