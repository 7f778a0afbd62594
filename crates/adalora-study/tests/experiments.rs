//! The committed sweep files (experiments/*.toml with a [sweep] table) expand to the grids the
//! studies issue asks for, every run's configuration valid.

use std::path::Path;

use adalora_study::SweepSpec;
use adalora_train::{Method, QuantConfig, RunConfig};

fn expand(name: &str) -> Vec<adalora_study::PlannedRun> {
    // Paths inside run configurations (rank-pattern files) are relative to the repository root.
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    std::env::set_current_dir(&root).unwrap();
    let path = root.join("experiments").join(name);
    SweepSpec::load(&path)
        .and_then(|s| s.expand())
        .unwrap_or_else(|e| panic!("{}: {e:#}", path.display()))
}

#[test]
fn committed_sweeps_expand_to_the_planned_grids() {
    // (i) 5 tasks × 2 budgets × (2 LoRA + 2 AdaLoRA learning rates) × 3 seeds.
    let study = expand("study_lora_vs_adalora.toml");
    assert_eq!(study.len(), 120);
    for r in &study {
        let c = &r.config;
        assert_eq!(c.train.max_train_examples, Some(1000), "states its subset");
        match c.method {
            // Matched final budgets, AdaLoRA starting at 1.5× the target, and each method
            // with its own learning rates (AdaLoRA's above LoRA's).
            Method::AdaLora => {
                assert_eq!(2 * c.adalora.init_r, 3 * c.adalora.target_r);
                assert!(c.lr() >= 5e-3);
            }
            Method::Lora => assert!([2, 8].contains(&c.lora.r) && c.lr() <= 2e-3),
            other => panic!("unexpected method {other:?}"),
        }
    }
    // Seed varies slowest, so a sweep stopped early holds whole seeds.
    assert!(study[..40].iter().all(|r| r.config.seed == 1));
    let tasks: std::collections::BTreeSet<_> =
        study.iter().map(|r| r.config.task.clone()).collect();
    assert_eq!(tasks.len(), 5);

    // (ii) 5 ranks × 4 target sets × 2 methods × 2 seeds.
    let ranks = expand("ablation_rank_targets.toml");
    assert_eq!(ranks.len(), 80);
    assert!(ranks[..40].iter().all(|r| r.config.seed == 1));

    // (iii) 7 variants × 3 seeds, including LoRA with an AdaLoRA run's fixed rank pattern.
    let parts = expand("ablation_components.toml");
    assert_eq!(parts.len(), 21);
    let pattern = parts
        .iter()
        .find(|r| !r.config.lora.rank_pattern.is_empty())
        .expect("a fixed-pattern LoRA run");
    assert_eq!(pattern.config.lora.rank_pattern.len(), 36);
    assert_eq!(
        pattern.config.lora.rank_pattern.values().sum::<usize>(),
        288
    );
    assert!(parts
        .iter()
        .any(|r| r.config.adalora.orth_reg_weight == 0.0 && r.config.method == Method::AdaLora));
}

#[test]
fn qlora_sweeps_pair_every_quantized_run_with_its_f32_twin() {
    let sweeps = [
        ("qlora_quality.toml", 24),
        ("qlora_lr.toml", 24),
        ("qlora_seeds.toml", 16),
        ("qlora_long.toml", 12),
    ];
    for (name, size) in sweeps {
        let planned = expand(name);
        assert_eq!(planned.len(), size, "{name}");
        let quantized: Vec<_> = planned
            .iter()
            .filter(|r| r.config.quantize.is_some())
            .collect();
        assert_eq!(
            2 * quantized.len(),
            size,
            "{name}: half on a quantized base"
        );
        for q in quantized {
            assert_eq!(
                q.config.quant_config(),
                Some(QuantConfig::qlora()),
                "{name}"
            );
            // The paired run differs only in the base: same method, rate, data and seed.
            let twin = RunConfig {
                quantize: None,
                double_quant: false,
                ..q.config.clone()
            };
            assert!(
                planned.iter().any(|r| r.config == twin),
                "{name}: {} has no f32 twin",
                q.label
            );
        }
    }
}
