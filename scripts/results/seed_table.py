#!/usr/bin/env python3
"""Mean ± std over seeds of the dev metric of `adalora train` runs, paired by seed.

    seed_table.py RUNS_DIR BASELINE:CANDIDATE [BASELINE:CANDIDATE ...]

RUNS_DIR holds run folders named `<name>-s<seed>` (e.g. `qs-lora-s42`, `qs-qlora-s42`), or an
`adalora sweep`'s `runs/` with folders `<row>-seed<seed>-<name>` (e.g. `001-seed42-rt-qlora`,
name `rt-qlora`); each
pair compares `<BASELINE>-s<seed>` with `<CANDIDATE>-s<seed>` over the seeds both have
finished (a folder with summary.json). Prints a Markdown table: per-seed dev accuracy, mean ±
sample std (n − 1, as `adalora study`'s reports), the mean paired difference (candidate −
baseline, points) and its std, and the mean training time. Reads files only.
"""
import json
import os
import re
import statistics
import sys


def finished(runs_dir):
    """{name: {seed: summary}} of the finished runs."""
    out = {}
    for entry in sorted(os.listdir(runs_dir)):
        sweep_run = re.fullmatch(r"\d+-seed(\d+)-(.+)", entry)
        plain_run = re.fullmatch(r"(.+)-s(\d+)", entry)
        if sweep_run:
            name, seed = sweep_run.group(2), sweep_run.group(1)
        elif plain_run:
            name, seed = plain_run.group(1), plain_run.group(2)
        else:
            continue
        path = os.path.join(runs_dir, entry, "summary.json")
        if os.path.isfile(path):
            with open(path) as f:
                out.setdefault(name, {})[int(seed)] = json.load(f)
    return out


def mean_std(values):
    if not values:
        return float("nan"), float("nan")
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def accuracy(summary):
    return summary["final_metrics"]["dev"]["accuracy"]


def main():
    runs_dir, pairs = sys.argv[1], sys.argv[2:]
    runs = finished(runs_dir)
    print("| run | seeds | dev accuracy per seed | mean ± std | Δ vs baseline (paired, points) | train s (mean) |")
    print("|---|---|---|---:|---:|---:|")
    for pair in pairs:
        base, cand = pair.split(":")
        seeds = sorted(set(runs.get(base, {})) & set(runs.get(cand, {})))
        for name in (base, cand):
            accs = [accuracy(runs[name][s]) for s in seeds]
            mean, std = mean_std(accs)
            secs = statistics.fmean(runs[name][s]["train_seconds"] for s in seeds) if seeds else float("nan")
            delta = ""
            if name == cand and seeds:
                diffs = [100 * (accuracy(runs[cand][s]) - accuracy(runs[base][s])) for s in seeds]
                d_mean, d_std = mean_std(diffs)
                delta = f"{d_mean:+.2f} ± {d_std:.2f}"
            per_seed = ", ".join(f"{s}: {a:.4f}" for s, a in zip(seeds, accs))
            print(f"| {name} | {len(seeds)} | {per_seed} | {mean:.4f} ± {std:.4f} | {delta} | {secs:.0f} |")


if __name__ == "__main__":
    main()
