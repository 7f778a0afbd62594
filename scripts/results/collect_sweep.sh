#!/usr/bin/env bash
# Copy a finished (or partly finished) sweep's small files into results/: the manifest, the
# report (Markdown + CSV), the sweep's figures, and each run's config, summary, metrics, rank
# pattern and log. Adapters, checkpoints and per-example predictions stay behind.
# `adalora report DEST --figures` regenerates the report and figures from the copied files.
#   scripts/results/collect_sweep.sh sweeps/study_lora_vs_adalora results/study_lora_vs_adalora
set -euo pipefail
src=${1:?usage: collect_sweep.sh SWEEP_DIR DEST}
dest=${2:?usage: collect_sweep.sh SWEEP_DIR DEST}
[ -f "$src/manifest.json" ] || { echo "error: $src/manifest.json not found (not a sweep folder)" >&2; exit 1; }
mkdir -p "$dest/runs"
cp "$src/manifest.json" "$dest/"
for f in report.md report.csv; do [ -f "$src/$f" ] && cp "$src/$f" "$dest/"; done
[ -d "$src/figures" ] && { rm -rf "$dest/figures"; cp -r "$src/figures" "$dest/figures"; }
for run in "$src"/runs/*/; do
  name=$(basename "$run")
  [ -f "$run/summary.json" ] || continue   # unfinished runs have no summary yet
  mkdir -p "$dest/runs/$name"
  for f in config.toml summary.json metrics.csv rank_pattern.json sweep.log; do
    [ -f "$run/$f" ] && cp "$run/$f" "$dest/runs/$name/"
  done
done
echo "copied $(ls "$dest/runs" | wc -l) runs of $src to $dest"
