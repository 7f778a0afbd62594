#!/usr/bin/env python3
"""Adapter interoperability check between `adalora` and Hugging Face PEFT.

Optional in CI (needs torch, transformers, peft, safetensors); run by hand and
record the output in results/peft_interop.md.

Checks, all on the same base model and the same fixed sentences:

1. ours -> PEFT: for every run folder given with --runs, our binary's
   `predict --run RUN` logits must equal PEFT's logits for
   `PeftModel.from_pretrained(AutoModelForSequenceClassification, RUN/adapter)`
   (eval mode), and the logits of `merge_and_unload()` too.
2. PEFT -> ours: a tiny LoRA and a tiny AdaLoRA adapter (with a real, pruned
   rank pattern) are trained here with PEFT and saved with `save_pretrained`;
   our binary's `predict --adapter DIR --model MODEL --task default` logits
   must equal PEFT's eval-mode logits.

Tolerance: max |diff| <= 1e-4 on every logit (a logit row whose adapter moves
the logits by <= 1e-3 is reported WEAK, not failed). Because a barely trained
adapter makes logit comparisons weak, both directions also compare merged
weights tensor by tensor: our `adalora merge` output vs PEFT's
merge_and_unload() (<= 1e-5 absolute and <= 1e-2 relative to the size of the
merged update). Exits non-zero on any FAIL.

Every family works the same way (BERT, RoBERTa, DeBERTa-v2/v3: `--model` is the
base folder the runs used; config.json's model_type picks the PEFT targets below).

Usage:
  python3 scripts/check_peft_interop.py --model .cache/models/all-MiniLM-L6-v2 \
      --runs /tmp/runs/lora_small /tmp/runs/ada_small [--bin target/release/adalora]
"""

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings

TOL = 1e-4  # logits
WTOL = 1e-5  # merged weights, absolute
RTOL = 1e-2  # merged weights, relative to the size of the merged update

# Fixed probe sentences; the last two are pairs (text_a<TAB>text_b).
SENTENCES = [
    ("a gripping, beautifully acted film that stays with you.", None),
    ("tedious, overlong and utterly forgettable.", None),
    ("the plot is thin but the performances carry it.", None),
    ("I have never been so bored in a cinema.", None),
    ("An absolute delight from start to finish!", None),
    ("Nothing works here: not the jokes, not the score, not the cast.", None),
    ("The cat sat on the mat.", "A cat was sitting on a mat."),
    ("How do I bake bread?", "What is the capital of France?"),
]

# Small labelled set for training the PEFT adapters (label 1 = positive).
TRAIN = [
    ("a wonderful, moving story", 1),
    ("brilliant acting and a smart script", 1),
    ("I loved every minute of it", 1),
    ("charming, funny and warm", 1),
    ("a dull and lifeless mess", 0),
    ("boring, predictable and far too long", 0),
    ("the worst film of the year", 0),
    ("clumsy dialogue and no tension at all", 0),
]


def log(msg):
    print(msg, flush=True)


def write_input(path):
    with open(path, "w", encoding="utf-8") as f:
        for a, b in SENTENCES:
            f.write(a if b is None else f"{a}\t{b}")
            f.write("\n")


def read_logits_csv(path):
    import torch

    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    cols = sorted((c for c in rows[0] if c.startswith("logit_")), key=lambda c: int(c[6:]))
    rows.sort(key=lambda r: int(r["index"]))
    return torch.tensor([[float(r[c]) for c in cols] for r in rows], dtype=torch.float64)


def run_ours(binary, args, out_csv):
    cmd = [binary, "predict", *args, "--output", out_csv]
    t = time.time()
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(
            f"{' '.join(cmd)} failed (rc={p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
        )
    log(f"  ours: {' '.join(cmd)}  ({time.time() - t:.1f}s)")
    return read_logits_csv(out_csv)


def encode(tok, sentences):
    a = [s[0] for s in sentences]
    b = [s[1] for s in sentences]
    singles = [i for i, x in enumerate(b) if x is None]
    pairs = [i for i, x in enumerate(b) if x is not None]
    # Tokenize singles and pairs separately (the tokenizer wants one kind per call),
    # then run them as two batches.
    batches = []
    if singles:
        batches.append((singles, tok([a[i] for i in singles], padding=True, return_tensors="pt")))
    if pairs:
        batches.append(
            (pairs, tok([a[i] for i in pairs], [b[i] for i in pairs], padding=True, return_tensors="pt"))
        )
    return batches


def logits_of(model, batches, n):
    import torch

    out = torch.zeros(n, model.config.num_labels if hasattr(model, "config") else 2, dtype=torch.float64)
    with torch.no_grad():
        for idx, enc in batches:
            lg = model(**enc).logits.double()
            out[idx] = lg
    return out


def lora_effect(peft_model, batches, with_logits):
    """max |logits - logits with the LoRA/AdaLoRA layers switched off| (classifier kept).

    Guards against a vacuous comparison: if the low-rank deltas did nothing, a
    loader that ignored them would still match.
    """
    from peft.tuners.tuners_utils import BaseTunerLayer

    layers = [m for m in peft_model.modules() if isinstance(m, BaseTunerLayer)]
    for m in layers:
        m.enable_adapters(False)
    try:
        off = logits_of(peft_model, batches, with_logits.shape[0])
    finally:
        for m in layers:
            m.enable_adapters(True)
    return maxdiff(with_logits, off)


def merged_weight_check(args, ours_src_args, peft_merged, out_dir):
    """Weight-level check, independent of how much the adapter moves the logits.

    Our `merge` writes an HF BertForSequenceClassification folder; compare every
    tensor with PEFT's merge_and_unload() state dict. Returns (max |W_ours - W_peft|,
    that divided by max |W_peft - W_base| over the encoder (the size of the merged
    low-rank update), max |W_peft - W_base|).
    """
    import torch
    from safetensors.torch import load_file

    cmd = [args.bin, "merge", *ours_src_args, "--out", out_dir, "--check-examples", "0"]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    log(f"  ours: {' '.join(cmd)}")
    ours = load_file(os.path.join(out_dir, "model.safetensors"))
    peft_sd = {k: v.detach() for k, v in peft_merged.state_dict().items()}
    base_sd = load_base(args.model).state_dict()
    missing = sorted(set(peft_sd) - set(ours) - {k for k in peft_sd if k.endswith("position_ids")})
    extra = sorted(set(ours) - set(peft_sd))
    if missing or extra:
        raise RuntimeError(f"merged key sets differ: missing in ours {missing[:8]}, extra in ours {extra[:8]}")
    worst, worst_key, dmax = 0.0, None, 0.0
    for k, v in ours.items():
        if k.endswith("position_ids"):
            continue
        if tuple(v.shape) != tuple(peft_sd[k].shape):
            raise RuntimeError(f"{k}: ours {tuple(v.shape)} vs PEFT {tuple(peft_sd[k].shape)}")
        d = (v.double() - peft_sd[k].double()).abs().max().item()
        if d > worst:
            worst, worst_key = d, k
        if k.startswith(base_sd_prefix(peft_merged)):
            dmax = max(dmax, (peft_sd[k].double() - base_sd[k].double()).abs().max().item())
    rel = worst / dmax if dmax > 0 else float("inf")
    log(f"  merged weights: max|W_ours - W_PEFT| = {worst:.3e} (at {worst_key}); "
        f"max|dW_PEFT| = {dmax:.3e}; relative = {rel:.3e}")
    return worst, rel, dmax


def base_sd_prefix(model):
    """`bert.` / `roberta.` / `deberta.`: encoder tensors, as opposed to the task head."""
    return model.base_model_prefix + "."


def status(ok, effect=None):
    if not ok:
        return "FAIL"
    if effect is not None and not effect > 10 * TOL:
        return "WEAK"  # within tolerance, but the adapter hardly moves the logits
    return "PASS"


def maxdiff(x, y):
    if x.shape != y.shape:
        return float("inf")
    return (x - y).abs().max().item()


# PEFT-side targets per model_type: the same matrices (Wq, Wv, Wf1) under each family's names.
# DeBERTa's pooler is part of its head (pretrained checkpoints lack it), so it is saved too.
FAMILY_TARGETS = {
    "bert": (["query", "value"], ["query", "value", "intermediate.dense"], None),
    "roberta": (["query", "value"], ["query", "value", "intermediate.dense"], None),
    "deberta-v2": (["query_proj", "value_proj"], ["query_proj", "value_proj", "intermediate.dense"], ["pooler"]),
}


def load_base(model_dir, torch_dtype=None):
    import torch
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # "classifier newly initialised" is expected: PEFT restores it
    hf_logging.disable_progress_bar()
    torch.manual_seed(0)  # a head missing from the checkpoint is initialised the same every time
    m = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=2)
    m.eval()
    return m


def describe_adapter(adapter_dir):
    from safetensors import safe_open

    with open(os.path.join(adapter_dir, "adapter_config.json")) as f:
        cfg = json.load(f)
    with safe_open(os.path.join(adapter_dir, "adapter_model.safetensors"), "pt") as f:
        shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    return cfg, shapes


def check_classifier_loaded(peft_model, adapter_dir):
    """Verify PEFT actually used the classifier saved in the adapter file."""
    import torch
    from safetensors.torch import load_file

    sd = load_file(os.path.join(adapter_dir, "adapter_model.safetensors"))
    problems = []
    head_keys = [k for k in sd if ".classifier." in k]
    if not head_keys:
        problems.append(
            "adapter file has no classifier keys; PEFT expects "
            "'base_model.model.classifier.weight' / '.bias' (modules_to_save)"
        )
        return problems
    live = dict(peft_model.named_parameters())
    for k in head_keys:
        suffix = k.split(".classifier.")[-1]  # weight / bias
        cand = [n for n in live if ".classifier.modules_to_save." in n and n.endswith("." + suffix)]
        if not cand:
            problems.append(f"no modules_to_save wrapper around classifier in PEFT model for {k}")
            continue
        if not torch.equal(live[cand[0]].detach().cpu(), sd[k].to(live[cand[0]].dtype)):
            problems.append(f"PEFT classifier param {cand[0]} != saved {k}")
    return problems


def check_ours_to_peft(args, run_dir, tok, batches, input_path, tmp, results):
    from peft import PeftModel

    name = os.path.basename(os.path.normpath(run_dir))
    adapter_dir = os.path.join(run_dir, "adapter")
    cfg, shapes = describe_adapter(adapter_dir)
    kind = cfg.get("peft_type", "?")
    log(f"\n== ours -> PEFT: {run_dir} ({kind}, {len(shapes)} tensors) ==")
    if kind == "ADALORA" and cfg.get("rank_pattern"):
        ranks = [sum(v) for v in cfg["rank_pattern"].values()]
        log(f"  rank pattern: {len(ranks)} modules, total rank {sum(ranks)}, "
            f"min {min(ranks)}, max {max(ranks)}, rank-0 modules {sum(r == 0 for r in ranks)}")

    ours = run_ours(args.bin, ["--run", run_dir, "--input", input_path], os.path.join(tmp, f"{name}.csv"))

    base = load_base(args.model)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        pm = PeftModel.from_pretrained(base, adapter_dir)
    for x in w:
        msg = str(x.message)
        if "missing" in msg.lower() or "unexpected" in msg.lower() or "key" in msg.lower():
            log(f"  PEFT warning: {msg[:2000]}")
    pm.eval()
    problems = check_classifier_loaded(pm, adapter_dir)
    for p in problems:
        log(f"  CLASSIFIER PROBLEM: {p}")
    peft_logits = logits_of(pm, batches, len(SENTENCES))
    d = maxdiff(ours, peft_logits)
    log(f"  ours logits:\n{ours.numpy()}\n  PEFT logits:\n{peft_logits.numpy()}")
    eff = lora_effect(pm, batches, peft_logits)
    log(f"  max|ours - PEFT| = {d:.3e}; adapter effect (PEFT with vs without low-rank layers) = {eff:.3e}")
    results.append((f"ours -> PEFT  {kind:7s} ({name})", d, eff, status(d <= TOL and not problems, eff)))

    merged = pm.merge_and_unload()
    merged.eval()
    mlog = logits_of(merged, batches, len(SENTENCES))
    dm = maxdiff(ours, mlog)
    log(f"  max|ours - PEFT merge_and_unload| = {dm:.3e} (PEFT vs its merge: {maxdiff(peft_logits, mlog):.3e})")
    results.append((f"ours -> PEFT  {kind:7s} ({name}) merge_and_unload", dm, eff, dm <= TOL))
    w, rel, dmax = merged_weight_check(args, ["--run", run_dir], merged, os.path.join(tmp, f"merged_{name}"))
    results.append((f"ours -> PEFT  {kind:7s} ({name}) merged weights*", w, rel, w <= WTOL and rel <= RTOL))


def train_peft(model_dir, tok, peft_config, steps, adalora):
    import torch
    from peft import get_peft_model

    torch.manual_seed(0)
    base = load_base(model_dir)
    model = get_peft_model(base, peft_config)
    model.train()
    enc = tok([t for t, _ in TRAIN], padding=True, return_tensors="pt")
    labels = torch.tensor([y for _, y in TRAIN])
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-2)
    for step in range(steps):
        out = model(**enc, labels=labels)  # AdaLoRA adds its orthogonal regulariser to .loss
        out.loss.backward()
        opt.step()
        if adalora:
            model.base_model.update_and_allocate(step)
        opt.zero_grad()
    log(f"  trained {steps} steps, final loss {out.loss.item():.4f}")
    model.eval()
    return model


def check_peft_to_ours(args, kind, peft_config, tok, batches, input_path, tmp, results):
    adapter_dir = os.path.join(tmp, f"peft_{kind.lower()}")
    log(f"\n== PEFT -> ours: {kind} trained with PEFT, saved to {adapter_dir} ==")
    model = train_peft(args.model, tok, peft_config, 12, adalora=(kind == "ADALORA"))
    model.save_pretrained(adapter_dir)
    cfg, shapes = describe_adapter(adapter_dir)
    if kind == "ADALORA":
        rp = cfg.get("rank_pattern") or {}
        ranks = {k: sum(v) for k, v in rp.items()}
        log(f"  rank pattern ({len(ranks)} modules, init_r {cfg['init_r']}): "
            + ", ".join(f"{k.replace('bert.encoder.layer.', 'L').replace('.lora_E', '')}={r}"
                        for k, r in sorted(ranks.items())))
        log(f"  rank-0 modules: {sum(r == 0 for r in ranks.values())}, total rank {sum(ranks.values())}")
    log(f"  saved tensors: {len(shapes)}; e.g. "
        + ", ".join(f"{k}{list(s)}" for k, s in list(sorted(shapes.items()))[:3]))
    peft_logits = logits_of(model, batches, len(SENTENCES))
    eff = lora_effect(model, batches, peft_logits)
    try:
        ours = run_ours(
            args.bin,
            ["--adapter", adapter_dir, "--model", args.model, "--task", "default", "--input", input_path],
            os.path.join(tmp, f"peft_{kind.lower()}.csv"),
        )
    except RuntimeError as e:
        log(f"  OUR LOADER FAILED: {e}")
        results.append((f"PEFT -> ours  {kind:7s}", float("inf"), eff, False))
        return
    d = maxdiff(ours, peft_logits)
    log(f"  ours logits:\n{ours.numpy()}\n  PEFT logits:\n{peft_logits.numpy()}")
    log(f"  max|ours - PEFT| = {d:.3e}; adapter effect (PEFT with vs without low-rank layers) = {eff:.3e}")
    results.append((f"PEFT -> ours  {kind:7s}", d, eff, status(d <= TOL, eff)))
    merged = model.merge_and_unload()
    w, rel, dmax = merged_weight_check(
        args, ["--adapter", adapter_dir, "--model", args.model, "--task", "default"], merged,
        os.path.join(tmp, f"merged_peft_{kind.lower()}"),
    )
    results.append((f"PEFT -> ours  {kind:7s} merged weights*", w, rel, w <= WTOL and rel <= RTOL))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="HF model folder (base model; any supported family)")
    ap.add_argument("--runs", nargs="+", default=[], help="run folders of ours (each with adapter/)")
    ap.add_argument("--bin", default="target/release/adalora")
    ap.add_argument("--keep", help="keep temporary files (PEFT adapters, CSVs) in this folder")
    args = ap.parse_args()
    args.bin = os.path.abspath(args.bin)
    args.model = os.path.abspath(args.model)

    import peft
    import safetensors
    import torch
    import transformers
    from peft import AdaLoraConfig, LoraConfig
    from transformers import AutoTokenizer

    torch.set_num_threads(1)
    t0 = time.time()
    log(f"torch {torch.__version__}, transformers {transformers.__version__}, "
        f"peft {peft.__version__}, safetensors {safetensors.__version__}")

    tok = AutoTokenizer.from_pretrained(args.model)
    batches = encode(tok, SENTENCES)
    results = []

    with tempfile.TemporaryDirectory() as tmpd:
        tmp = args.keep or tmpd
        os.makedirs(tmp, exist_ok=True)
        input_path = os.path.join(tmp, "probe.txt")
        write_input(input_path)

        for run in args.runs:
            try:
                check_ours_to_peft(args, run, tok, batches, input_path, tmp, results)
            except Exception as e:  # report and keep going
                log(f"  ERROR: {type(e).__name__}: {e}")
                results.append((f"ours -> PEFT ({os.path.basename(run)})", float("inf"), float("nan"), False))

        with open(os.path.join(args.model, "config.json")) as f:
            model_type = json.load(f)["model_type"]
        lora_targets, ada_targets, head = FAMILY_TARGETS[model_type]
        log(f"model_type {model_type}: PEFT targets {lora_targets} / {ada_targets}, extra head {head}")
        lora = LoraConfig(task_type="SEQ_CLS", r=4, lora_alpha=8, target_modules=lora_targets,
                          modules_to_save=head)
        ada = AdaLoraConfig(
            task_type="SEQ_CLS", init_r=6, target_r=2, lora_alpha=8,
            target_modules=ada_targets, modules_to_save=head,
            tinit=2, tfinal=3, deltaT=1, total_step=12,
        )
        for kind, cfg in (("LORA", lora), ("ADALORA", ada)):
            try:
                check_peft_to_ours(args, kind, cfg, tok, batches, input_path, tmp, results)
            except Exception as e:
                log(f"  ERROR: {type(e).__name__}: {e}")
                results.append((f"PEFT -> ours  {kind:7s}", float("inf"), float("nan"), False))

    w = max(len(r[0]) for r in results)
    log(f"\n{'check'.ljust(w)} | max abs diff | effect / rel.  | result")
    log(f"{'-' * w}-|--------------|----------------|-------")
    results = [(n, d, e, ok if isinstance(ok, str) else status(ok)) for n, d, e, ok in results]
    for name, d, eff, st in results:
        log(f"{name.ljust(w)} | {d:12.3e} | {eff:14.3e} | {st}")
    log("(logit rows: effect = max|logits with - without the low-rank layers|, PEFT side; WEAK = within "
        f"tolerance but effect <= {10 * TOL:g}, so the logits alone prove little: see the merged-weights row)")
    log(f"(* merged weights: our `adalora merge` vs PEFT merge_and_unload(), every tensor; columns are "
        f"max|W_ours - W_PEFT| (<= {WTOL:g}) and that / max|W_PEFT - W_base| (<= {RTOL:g}))")
    n_fail = sum(st == "FAIL" for *_, st in results)
    log(f"\n{len(results) - n_fail}/{len(results)} passed (tolerance {TOL:g}) in {time.time() - t0:.1f}s")
    return 1 if n_fail else 0


if __name__ == "__main__":
    sys.exit(main())
