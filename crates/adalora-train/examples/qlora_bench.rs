//! QLoRA benchmark harness: training-step time and frozen-base memory of LoRA / AdaLoRA on an
//! f32 base against the same adapters on a quantized base (all-MiniLM-L6-v2, CPU).
//!
//! ```text
//! cargo run --release -p adalora-train --example qlora_bench -- [REPS] [BATCH] [SEQ]
//! ```
//!
//! One step = forward, cross-entropy, backward, AdamW update of the trainable parameters (the
//! step `adalora train` runs, without the logging and the AdaLoRA allocator). Each variant
//! runs one warm-up step, then REPS (default 5) timed steps on the same random batch
//! (BATCH × SEQ tokens, default 32 × 128); reported: median and min seconds per step, the
//! ratio of medians against the variant's f32 base, and the frozen base's weight bytes.
//! Variants are interleaved step by step so that load from other processes hits all alike.

use std::time::Instant;

use adalora_data::batch::Targets;
use adalora_model::{ModelInput, SequenceClassifier};
use adalora_train::batch::task_loss;
use adalora_train::trainer::{build_model, Model};
use adalora_train::RunConfig;
use burn::backend::{Autodiff, NdArray};
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::tensor::backend::Backend;

type B = Autodiff<NdArray<f32>>;

struct Variant {
    name: &'static str,
    model: Option<Model<B>>,
    base_bytes: usize,
    f32_bytes: usize,
    times: Vec<f64>,
}

fn variant(name: &'static str, overrides: &[&str]) -> anyhow::Result<Variant> {
    let overrides: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
    let cfg = RunConfig::load(None, &overrides)?;
    let model_dir = adalora_model::loader::resolve_model_dir(cfg.model.as_deref())?;
    let device = Default::default();
    let (model, _, _) = build_model::<B>(&cfg, &model_dir, 2, 1000, &device)?;
    let (base_bytes, f32_bytes) = adalora_model::quantize::base_weight_bytes(&model);
    Ok(Variant {
        name,
        model: Some(model),
        base_bytes,
        f32_bytes,
        times: Vec::new(),
    })
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

fn main() -> anyhow::Result<()> {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse())
        .collect::<Result<_, _>>()?;
    let reps = args.first().copied().unwrap_or(5);
    let (batch, seq) = (
        args.get(1).copied().unwrap_or(32),
        args.get(2).copied().unwrap_or(128),
    );
    let device = Default::default();
    B::seed(&device, 7);
    // Token ids from a fixed pseudo-random sequence over the BERT vocabulary (no padding).
    let ids: Vec<i64> = (0..batch * seq)
        .map(|i| 1000 + ((i as i64 * 7919) % 28000))
        .collect();
    let input = || {
        ModelInput::<B>::from_rows(
            &ids,
            &vec![0; batch * seq],
            &vec![1; batch * seq],
            batch,
            seq,
            &device,
        )
    };
    let targets = Targets::Class((0..batch as i64).map(|i| i % 2).collect());
    let qlora = ["quantize=nf4", "double_quant=true"];
    let mut variants = [
        variant("lora r8 / f32 base", &["method=lora"])?,
        variant(
            "qlora r8 / nf4+dq base",
            &["method=lora", qlora[0], qlora[1]],
        )?,
        variant("adalora 12->8 / f32 base", &["method=adalora"])?,
        variant(
            "qadalora 12->8 / nf4+dq base",
            &["method=adalora", qlora[0], qlora[1]],
        )?,
    ];
    let mut optimizers: Vec<_> = variants
        .iter()
        .map(|_| {
            AdamWConfig::new()
                .with_weight_decay(0.0)
                .init::<B, Model<B>>()
        })
        .collect();
    for rep in 0..=reps {
        for (v, optim) in variants.iter_mut().zip(optimizers.iter_mut()) {
            let model = v.model.take().expect("model");
            let started = Instant::now();
            let logits = model.forward(input()?);
            let loss = task_loss(logits, &targets)?;
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            v.model = Some(optim.step(1e-4, model, grads));
            if rep > 0 {
                v.times.push(started.elapsed().as_secs_f64());
            }
        }
    }
    println!(
        "batch {batch} x seq {seq}, {reps} timed steps per variant (after 1 warm-up), CPU NdArray f32"
    );
    println!(
        "{:<30} {:>12} {:>10} {:>14} {:>14} {:>10}",
        "variant", "median s", "min s", "vs f32 base", "base MB", "base/f32"
    );
    for (i, v) in variants.iter().enumerate() {
        let reference = &variants[i - i % 2];
        println!(
            "{:<30} {:>12.3} {:>10.3} {:>14.3} {:>14.2} {:>10.3}",
            v.name,
            median(&v.times),
            v.times.iter().copied().fold(f64::INFINITY, f64::min),
            median(&v.times) / median(&reference.times),
            v.base_bytes as f64 / 1e6,
            v.base_bytes as f64 / v.f32_bytes as f64
        );
    }
    Ok(())
}
