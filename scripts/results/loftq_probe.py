#!/usr/bin/env python3
"""How much of NF4's quantization error could a rank-r adapter absorb at initialisation?

LoftQ (peft's init_lora_weights="loftq") starts the adapter at the best rank-r approximation of
W - deq(q(W)). This measures, for every dense weight `adalora train --quantize nf4
--double-quant` quantizes (encoder and pooler), the share of that error's energy
(sum of squared singular values) in its top r singular directions, and the relative error
||W - deq(q(W))||_F / ||W||_F before and after such an initialisation. Quantization is
bitsandbytes' (blocks of 64, double quantization), the reference our NF4 matches bit for bit.

    python3 scripts/results/loftq_probe.py [MODEL_DIR] [--ranks 8,16]
"""
import argparse
import os

import torch
import bitsandbytes as bnb
from safetensors.torch import load_file

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("model", nargs="?", default=os.path.join(ROOT, ".cache", "models", "all-MiniLM-L6-v2"))
    p.add_argument("--ranks", default="8,16")
    args = p.parse_args()
    ranks = [int(r) for r in args.ranks.split(",")]
    torch.set_num_threads(1)
    weights = load_file(os.path.join(args.model, "model.safetensors"))
    names = sorted(k for k, v in weights.items() if v.dim() == 2 and "embeddings" not in k)
    print("| matrix | shape | rel. error | " + " | ".join(f"energy in top {r} | rel. error after rank-{r} init" for r in ranks) + " |")
    print("|---|---|---:|" + "---:|---:|" * len(ranks))
    totals = {r: [] for r in ranks}
    before = []
    for name in names:
        w = weights[name].float()
        q, state = bnb.functional.quantize_4bit(w, blocksize=64, quant_type="nf4", compress_statistics=True)
        err = w - bnb.functional.dequantize_4bit(q, state)
        s = torch.linalg.svdvals(err) ** 2
        rel = (err.norm() / w.norm()).item()
        before.append(rel)
        cells = []
        for r in ranks:
            share = (s[:r].sum() / s.sum()).item()
            after = rel * (1 - share) ** 0.5
            totals[r].append((share, after))
            cells.append(f"{share:.3f} | {after:.4f}")
        print(f"| {name} | {tuple(w.shape)} | {rel:.4f} | " + " | ".join(cells) + " |")
    mean = lambda v: sum(v) / len(v)
    cells = [f"{mean([a for a, _ in totals[r]]):.3f} | {mean([b for _, b in totals[r]]):.4f}" for r in ranks]
    print(f"| mean of {len(names)} | | {mean(before):.4f} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
