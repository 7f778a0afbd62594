#!/usr/bin/env python3
"""Tables for a results page from `adalora analyze SWEEP`'s output (standard library only).

    python3 scripts/results/analysis_tables.py results/analysis_rt > /tmp/tables.md

Reads SWEEP/manifest.json, each finished run's summary.json / config.toml / metrics.csv and
SWEEP/analysis/<run>/{summary,amplification}.csv, and prints Markdown:
  1. per cell (method, budget, learning rate, init): dev accuracy over seeds and the spectra
     summary averaged over matrices and seeds (stable rank, effective rank, top-1 energy,
     ||dW||/||W0||);
  2. amplification (LoRA paper §7.3) per cell and module type: mean over layers and seeds of
     ||U^T W0 V|| on dW's directions, on random ones and on W0's own, and of the factor;
  3. learning curves: dev accuracy at each evaluated step, mean over seeds, for the cells
     evaluated every `train.eval_every` = 10 steps.
Means are plain means; the page says how many values each is over.
"""
import csv
import json
import math
import re
import sys
from collections import defaultdict
from pathlib import Path

MODULES = ["query", "key", "value", "attention-output", "intermediate", "output"]


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def number(v):
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def mean(xs):
    xs = [x for x in xs if x is not None]
    return (sum(xs) / len(xs), len(xs)) if xs else (None, 0)


def fmt(x, digits=3):
    return "n/a" if x is None else f"{x:.{digits}f}"


def setting(config_text, key):
    """A `key = value` of a section-less grep of config.toml (first match)."""
    m = re.search(rf"^{key}\s*=\s*(.+)$", config_text, re.M)
    return m.group(1).strip().strip('"') if m else None


def cell_of(run_dir):
    summary = json.loads((run_dir / "summary.json").read_text())
    config = (run_dir / "config.toml").read_text()
    method = summary["method"]
    init = "zero"
    if method == "lora":
        rank = re.search(r"\[lora\][^\[]*?^r\s*=\s*(\d+)", config, re.M | re.S).group(1)
        label = f"LoRA r={rank}"
    else:
        section = re.search(r"\[adalora\]([^\[]*)", config, re.S).group(1)
        init_r = setting(section, "init_r")
        target_r = setting(section, "target_r")
        init = setting(section, "init") or "zero"
        label = f"AdaLoRA {init_r}→{target_r}"
    if init != "zero":
        label += f" ({init} init)"
    return f"{label} · lr {summary['lr']:g}", summary


def main(sweep):
    sweep = Path(sweep)
    manifest = json.loads((sweep / "manifest.json").read_text())
    cells = defaultdict(list)
    for row in manifest["rows"]:
        if row["status"] != "done":
            continue
        run_dir = sweep / row["run_dir"]
        name, summary = cell_of(run_dir)
        cells[name].append((run_dir, summary))

    print("### Per cell: accuracy and the shape of ΔW\n")
    print("Means over the 36 adapted matrices and the seeds (n = seeds).\n")
    print("| cell | n | dev accuracy | final total rank | stable rank | effective rank "
          "| top-1 energy | ‖ΔW‖/‖W0‖ |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, runs in cells.items():
        acc = mean([s["final_metrics"]["dev"]["accuracy"] for _, s in runs])[0]
        rank = mean([s.get("final_total_rank") for _, s in runs])[0]
        rows = [r for d, _ in runs for r in read_csv(sweep / "analysis" / d.name / "summary.csv")]
        cols = ["stable_rank", "effective_rank", "energy_top1", "rel_norm"]
        vals = [mean([number(r[c]) for r in rows])[0] for c in cols]
        print(f"| {name} | {len(runs)} | {fmt(acc)} | {fmt(rank, 0)} | "
              + " | ".join(fmt(v) for v in vals) + " |")

    print("\n### Amplification (LoRA paper §7.3) by module type\n")
    print("Per cell and module: mean over 6 layers × seeds of ‖UᵀW0V‖_F on ΔW's top-r "
          "directions, on random r-dimensional ones and on W0's own top-r, and of the factor "
          "‖ΔW‖_F / ‖UᵀW0V‖_F on ΔW's directions (rank-0 matrices left out).\n")
    print("| cell | module | n | on ΔW's | on random | on W0's | factor |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for name, runs in cells.items():
        rows = [r for d, _ in runs
                for r in read_csv(sweep / "analysis" / d.name / "amplification.csv")]
        for module in MODULES:
            sel = [r for r in rows if r["module"] == module and number(r["factor"]) is not None]
            if not sel:
                continue
            vals = [mean([number(r[c]) for r in sel])[0]
                    for c in ["w0_along_delta", "w0_along_random", "w0_along_w0", "factor"]]
            print(f"| {name} | {module} | {len(sel)} | " + " | ".join(fmt(v, 2) for v in vals) + " |")

    curves = {}
    for name, runs in cells.items():
        series = defaultdict(list)
        for d, _ in runs:
            for r in read_csv(d / "metrics.csv"):
                if r["split"] == "dev" and number(r.get("accuracy")) is not None:
                    series[int(r["step"])].append(float(r["accuracy"]))
        if len(series) >= 8:
            curves[name] = series
    if curves:
        steps = sorted({s for c in curves.values() for s in c})
        print("\n### Learning curves (dev accuracy, mean over seeds)\n")
        print("| step | " + " | ".join(curves) + " |")
        print("|---:|" + "---:|" * len(curves))
        for step in steps:
            cells_at = [mean(curves[c].get(step, []))[0] for c in curves]
            print(f"| {step} | " + " | ".join(fmt(v) for v in cells_at) + " |")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
