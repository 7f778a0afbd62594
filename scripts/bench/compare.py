#!/usr/bin/env python3
"""Merge the raw CSVs of scripts/bench/compare.sh and print the ratios (stdlib only).

Per (workload, method, variant, shape) and side: the median of the per-run medians over the
rounds, the min of the mins, the max of the maxes. Ratios are "higher is better for adalora":
peft time / our time for steps, our rate / peft rate for eval, peft RSS / our RSS for memory.
Writes <out>/summary.csv and <out>/ratios.md.
"""
import csv
import glob
import os
import statistics
import sys
from collections import defaultdict


def load(out, side):
    runs = defaultdict(list)
    for path in sorted(glob.glob(os.path.join(out, "raw", f"{side}_*.csv"))):
        with open(path, newline="") as f:
            for r in csv.DictReader(f):
                key = (r["workload"], r["method"], r["variant"], f'{r["batch"]}x{r["seq"]}')
                runs[key].append((float(r["median"]), float(r["min"]), float(r["max"]), r["unit"]))
    return {k: (statistics.median(m for m, _, _, _ in v), min(lo for _, lo, _, _ in v),
                max(hi for _, _, hi, _ in v), v[0][3], len(v)) for k, v in runs.items()}


def main():
    out = sys.argv[1]
    ours, peft = load(out, "ours"), load(out, "peft")
    with open(os.path.join(out, "summary.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["side", "workload", "method", "variant", "shape", "unit", "median", "min", "max", "runs"])
        for side, d in (("adalora", ours), ("peft", peft)):
            for k in sorted(d):
                med, lo, hi, unit, n = d[k]
                w.writerow([side, *k, unit, f"{med:.6g}", f"{lo:.6g}", f"{hi:.6g}", n])
    lines = ["| workload | method | variant | shape | adalora (median [min–max]) | peft | ratio (≥ 1: adalora better) |",
             "|---|---|---|---|---:|---:|---:|"]
    for k in sorted(set(ours) & set(peft)):
        (om, olo, ohi, unit, _), (pm, plo, phi, _, _) = ours[k], peft[k]
        higher_is_better = unit == "examples/s"
        ratio = om / pm if higher_is_better else pm / om
        lines.append(f"| {k[0]} | {k[1]} | {k[2]} | {k[3]} | {om:.4g} [{olo:.4g}–{ohi:.4g}] {unit} "
                     f"| {pm:.4g} [{plo:.4g}–{phi:.4g}] | **{ratio:.2f}** |")
    lines += ["", "Internal targets (adalora side):", ""]
    for shape in sorted({k[3] for k in ours}):
        step = lambda m: ours.get(("train_step", m, "", shape), (None,))[0]
        lora, ada = step("lora"), step("adalora")
        alloc = ours.get(("allocator", "adalora", "", shape), (None,))[0]
        if lora and ada:
            lines.append(f"- {shape}: AdaLoRA step / LoRA step = {ada / lora:.3f} (target ≤ 1.05)")
        if ada and alloc is not None:
            lines.append(f"- {shape}: allocator / AdaLoRA step = {100 * alloc / ada:.2f}% (target ≤ 2%)")
        for m in ("lora", "adalora"):
            merged = ours.get(("eval", m, "merged", shape), (None,))[0]
            # The base model timed in the same process, in turn with the merged one; older
            # CSVs only have full FT's.
            base = ours.get(("eval", m, "base", shape), ours.get(("eval", "full", "base", shape), (None,)))[0]
            if merged and base:
                lines.append(f"- {shape}: {m} merged eval / base eval = {merged / base:.3f} (target ≥ 0.98)")
    text = "\n".join(lines) + "\n"
    with open(os.path.join(out, "ratios.md"), "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
