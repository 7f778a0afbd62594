#!/usr/bin/env bash
# The main job on a fresh machine: system packages, assets, release build, then LoRA and
# AdaLoRA at equal final budget (total rank 288) on the embedded default task, trained side by
# side (one core each), and their dev accuracy printed together with the run folders.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
start=$(date +%s)
scripts/setup-system.sh
scripts/fetch-assets.sh
cargo build --release -p adalora-cli
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/adalora"
OUT="${OUT:-$ROOT/runs/quickstart}"
mkdir -p "$OUT"
echo "training LoRA and AdaLoRA (logs: $OUT/{lora,adalora}.log) ..."
# Learning rates from a small sweep on this setup (results/quickstart_lr_sweep.csv): AdaLoRA's
# zero-initialised singular values need a much larger step than LoRA in a 125-step run.
declare -A LR=([lora]=2e-3 [adalora]=1e-2)
pids=()
for m in lora adalora; do
  RAYON_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 "$BIN" train --config experiments/quickstart.toml --method "$m" \
    --lr "${LR[$m]}" --out "$OUT/$m" --overwrite --quiet >"$OUT/$m.log" 2>&1 &
  pids+=($!)
done
status=0
for p in "${pids[@]}"; do wait "$p" || status=1; done
if [ $status -ne 0 ]; then
  tail -n 20 "$OUT"/*.log >&2
  exit 1
fi
"$BIN" plot-ranks --run "$OUT/adalora" --output "$OUT/adalora/rank_pattern.png"
python3 - "$OUT" <<'PY'
import json, sys, os
out = sys.argv[1]
rows = []
for m in ("lora", "adalora"):
    s = json.load(open(os.path.join(out, m, "summary.json")))
    dev = s["final_metrics"]["dev"]
    rows.append((m, s["final_total_rank"], s["trainable_params"], dev["accuracy"], dev["f1"],
                 s["best_metrics"].get("accuracy", float("nan")), s["train_seconds"], s["run_dir"]))
print()
print(f"{'method':<8} {'total rank':>10} {'trainable':>10} {'dev acc':>8} {'dev F1':>8} {'best acc':>8} {'train s':>8}  run folder")
for m, r, p, acc, f1, best, secs, d in rows:
    print(f"{m:<8} {r:>10} {p:>10,} {acc:>8.4f} {f1:>8.4f} {best:>8.4f} {secs:>8.0f}  {d}")
PY
echo "total wall time: $(( $(date +%s) - start )) s"
