use std::collections::BTreeMap;
use std::path::PathBuf;

use adalora_train::{Method, RunConfig};

use super::*;
use crate::manifest::{Row, Status};
use crate::runs::{RankPattern, RunSummary};

/// A finished run of `task` whose dev accuracy was `best` at its best evaluation and `last`
/// at the end; total rank 4 over two matrices (LoRA r=2 or AdaLoRA 12→8); baseline 0.5.
pub(crate) fn entry(method: Method, seed: u64, best: f64, last: f64) -> Entry {
    let mut config = RunConfig {
        method,
        seed,
        ..RunConfig::default()
    };
    config.lora.r = 2;
    let summary = RunSummary {
        task: "rte".into(),
        main_metric: "accuracy".into(),
        final_metrics: BTreeMap::from([(
            "dev".to_string(),
            BTreeMap::from([("accuracy".to_string(), last)]),
        )]),
        best_metrics: BTreeMap::from([("accuracy".to_string(), best)]),
        best_step: Some(10),
        trainable_params: 100,
        final_total_rank: Some(4),
        train_seconds: 1.0,
        train_examples_per_second: 1.0,
        protocol: "best-dev".into(),
        selection_metrics: BTreeMap::new(),
        baseline_metrics: BTreeMap::from([("accuracy".to_string(), 0.5)]),
        provenance: None,
    };
    let pattern = (method == Method::AdaLora).then(|| RankPattern {
        step: 20,
        budget: 4,
        total_rank: 4,
        modules: vec![(0, "query".into(), 3), (0, "value".into(), 1)],
    });
    let run = RunRecord {
        dir: PathBuf::new(),
        summary,
        config,
        pattern,
        baseline: Some(0.5),
    };
    Entry {
        row: Row {
            index: 0,
            hash: String::new(),
            label: String::new(),
            settings: Vec::new(),
            status: Status::Done,
            run_dir: String::new(),
            wall_seconds: 1.0,
            attempts: 1,
            error: None,
            claim: None,
            executor: BTreeMap::new(),
            provenance: None,
        },
        group: run.method_label(),
        run,
    }
}

pub(crate) fn study(entries: Vec<Entry>) -> Study {
    study_with(entries, ReportSettings::default())
}

fn study_with(entries: Vec<Entry>, settings: ReportSettings) -> Study {
    Study {
        name: "t".into(),
        wall_seconds: entries.len() as f64,
        entries,
        unfinished: 0,
        at: MetricAt::default(),
        settings,
        protocol: Protocol::BestDev,
    }
}

fn with_lr(mut e: Entry, lr: f64) -> Entry {
    e.run.config.train.lr = Some(lr);
    e
}

fn line_of<'a>(md: &'a str, start: &str) -> &'a str {
    md.lines()
        .find(|l| l.starts_with(start))
        .unwrap_or_else(|| panic!("no line starting {start:?} in\n{md}"))
}

fn report(s: &Study) -> String {
    markdown(s, &compare::comparisons(s).unwrap())
}

fn csv_column<'a>(csv: &'a str, kind: &str, name: &str) -> Vec<&'a str> {
    let header: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
    let col = header.iter().position(|c| *c == name).unwrap();
    csv.lines()
        .skip(1)
        .filter(|l| l.starts_with(kind))
        .map(|l| l.split(',').nth(col).unwrap())
        .collect()
}

#[test]
fn one_seed_has_no_interval_in_the_table_the_comparisons_or_the_csv() {
    let s = study(vec![
        entry(Method::Lora, 1, 0.70, 0.70),
        entry(Method::AdaLora, 1, 0.75, 0.75),
    ]);
    let md = report(&s);
    assert!(
        line_of(&md, "| LoRA r=2 |").contains("| 70.00 (n=1, no interval) |"),
        "{md}"
    );
    assert!(
        line_of(&md, "| AdaLoRA 12→8 |").contains("| **75.00 (n=1, no interval)** |"),
        "{md}"
    );
    let pair = line_of(
        &md,
        "| rte | AdaLoRA 12→8 | LoRA r=2 | equal final rank | 1 |",
    );
    assert!(pair.contains("+5.00 | n=1: too few paired seeds"), "{pair}");
    assert!(!md.contains("NaN") && !md.contains(" nan"), "{md}");
    let csv = csv_text(&s, &compare::comparisons(&s).unwrap()).unwrap();
    assert!(
        csv_column(&csv, "cell", "std").iter().all(|v| v.is_empty()),
        "{csv}"
    );
    assert_eq!(
        csv_column(&csv, "comparison", "mean_diff"),
        ["5.000000"],
        "{csv}"
    );
    assert_eq!(csv_column(&csv, "comparison", "p_t"), [""], "{csv}");
}

#[test]
fn cells_show_the_t_interval_half_width_and_n() {
    let s = study(vec![
        entry(Method::Lora, 1, 0.70, 0.70),
        entry(Method::Lora, 2, 0.72, 0.72),
    ]);
    let md = report(&s);
    // mean 71, std 1.414, t(0.975, 1) = 12.706 → half-width 12.706 · 1.414 / √2 = 12.71.
    assert!(
        line_of(&md, "| LoRA r=2 |").contains("**71.00 ± 12.71 (n=2)**"),
        "{md}"
    );
}

#[test]
fn the_median_is_the_centre_when_asked_for() {
    let runs = || {
        vec![
            entry(Method::Lora, 1, 0.70, 0.70),
            entry(Method::Lora, 2, 0.71, 0.71),
            entry(Method::Lora, 3, 0.90, 0.90),
        ]
    };
    let mean = report(&study(runs()));
    assert!(
        line_of(&mean, "| LoRA r=2 |").contains("**77.00 ±"),
        "{mean}"
    );
    let settings = ReportSettings {
        center: Center::Median,
        ..ReportSettings::default()
    };
    let median = report(&study_with(runs(), settings));
    assert!(
        line_of(&median, "| LoRA r=2 |").contains("**71.00 ±"),
        "{median}"
    );
    assert!(median.contains("median over seeds"), "{median}");
}

#[test]
fn cells_use_the_best_evaluation_unless_final_is_asked_for() {
    let runs = || vec![entry(Method::Lora, 1, 0.80, 0.60)];
    let best = report(&study(runs()));
    assert!(
        line_of(&best, "| LoRA r=2 |").contains("80.00 (n=1"),
        "{best}"
    );
    assert!(best.contains("at the chosen checkpoint"), "{best}");
    let last = report(&study(runs()).at(MetricAt::Final));
    assert!(
        line_of(&last, "| LoRA r=2 |").contains("60.00 (n=1"),
        "{last}"
    );
    assert!(last.contains("at the end of training"), "{last}");
    let s = study(runs());
    let csv = csv_text(&s, &[]).unwrap();
    assert_eq!(csv_column(&csv, "cell", "at"), ["best"]);
    assert_eq!(csv_column(&csv, "cell", "best_mean"), ["0.800000"]);
    assert_eq!(csv_column(&csv, "cell", "final_mean"), ["0.600000"]);
}

#[test]
fn a_learning_rate_at_the_grid_edge_is_flagged() {
    let s = study(vec![
        with_lr(entry(Method::Lora, 1, 0.60, 0.60), 1e-4),
        with_lr(entry(Method::Lora, 1, 0.70, 0.70), 1e-3),
        with_lr(entry(Method::Lora, 1, 0.65, 0.65), 1e-2),
    ]);
    let md = report(&s);
    assert!(!line_of(&md, "| LoRA r=2 |").contains('‡'), "{md}");
    let edge = study(vec![
        with_lr(entry(Method::Lora, 1, 0.60, 0.60), 1e-4),
        with_lr(entry(Method::Lora, 1, 0.70, 0.70), 1e-3),
    ]);
    let md = report(&edge);
    assert!(
        line_of(&md, "| LoRA r=2 |").contains("70.00 (n=1, no interval) ‡"),
        "{md}"
    );
    assert!(md.contains("‡ 1 of 1 cells"), "{md}");
    assert!(line_of(&md, "| LoRA r=2 | rte | 1e-4, 1e-3 |").contains("1e-3 (edge)"));
}

#[test]
fn held_out_runs_choose_their_learning_rate_on_the_selection_split() {
    let run = |lr: f64, dev: f64, selection: f64| {
        let mut e = with_lr(entry(Method::Lora, 1, dev, dev), lr);
        e.run.summary.protocol = "held-out".into();
        e.run.summary.selection_metrics = BTreeMap::from([("accuracy".to_string(), selection)]);
        e
    };
    let mut s = study(vec![run(1e-4, 0.90, 0.60), run(1e-3, 0.70, 0.80)]);
    s.protocol = Protocol::HeldOut;
    let cell = s.cell("LoRA r=2", "rte").unwrap();
    assert_eq!(cell.lr(), 1e-3);
    assert_eq!(cell.mean, 0.70);
    assert!(report(&s).contains("**held-out**"));
    // Under best-dev the dev split chooses.
    s.protocol = Protocol::BestDev;
    assert_eq!(s.cell("LoRA r=2", "rte").unwrap().lr(), 1e-4);
}

#[test]
fn runs_of_different_protocols_are_not_reported_together() {
    let mut held = entry(Method::Lora, 2, 0.7, 0.7);
    held.run.summary.protocol = "held-out".into();
    let entries = vec![entry(Method::Lora, 1, 0.7, 0.7), held];
    let err = common_protocol(&entries, None).unwrap_err().to_string();
    assert!(
        err.contains("best-dev") && err.contains("held-out"),
        "{err}"
    );
    let one = vec![entry(Method::Lora, 1, 0.7, 0.7)];
    let err = common_protocol(&one, Some(Protocol::HeldOut))
        .unwrap_err()
        .to_string();
    assert!(err.contains("[report] protocol"), "{err}");
    assert_eq!(common_protocol(&one, None).unwrap(), Protocol::BestDev);
}

#[test]
fn runs_at_the_baseline_are_flagged_and_left_out_of_the_allocation() {
    let at_chance = entry(Method::AdaLora, 2, 0.51, 0.51);
    let mut other = entry(Method::AdaLora, 3, 0.80, 0.80);
    other.run.pattern.as_mut().unwrap().modules =
        vec![(0, "query".into(), 1), (0, "value".into(), 3)];
    let s = study(vec![
        entry(Method::AdaLora, 1, 0.80, 0.80),
        at_chance,
        other,
    ]);
    let md = report(&s);
    assert!(line_of(&md, "| AdaLoRA 12→8 |").contains(" †1"), "{md}");
    let allocs = allocation::allocations(&s);
    assert_eq!((allocs[0].n, allocs[0].not_learned), (2, 1));
    // W_q over the two learned runs: 3 and 1 → mean 2.
    assert_eq!(allocs[0].per_module[0].0, "W_q");
    assert_eq!(allocs[0].per_module[0].1.mean, 2.0);
    line_of(&md, "| AdaLoRA 12→8 | rte | 2 (1 at baseline) |");
    // Both learned runs rank the two matrices in opposite orders.
    assert_eq!(allocs[0].stability.as_ref().unwrap().mean, -1.0);
}

#[test]
fn the_average_leaves_out_tasks_a_row_did_not_learn() {
    let mut sst = entry(Method::Lora, 1, 0.90, 0.90);
    sst.run.summary.task = "sst2".into();
    let s = study(vec![entry(Method::Lora, 1, 0.505, 0.505), sst]);
    let md = report(&s);
    assert!(line_of(&md, "| LoRA r=2 |").ends_with("| 90.00 |"), "{md}");
    assert!(
        md.contains("Avg: over sst2") && md.contains("left out: rte"),
        "{md}"
    );
}

#[test]
fn equal_parameter_pairs_are_compared_besides_equal_rank() {
    let lora3 = |seed, v| {
        let mut e = entry(Method::Lora, seed, v, v);
        e.run.config.lora.r = 3;
        e.run.summary.final_total_rank = Some(6);
        e.run.summary.trainable_params = 150;
        e.group = e.run.method_label();
        e
    };
    let ada = |seed, v| {
        let mut e = entry(Method::AdaLora, seed, v, v);
        e.run.summary.trainable_params = 150;
        e
    };
    let s = study(vec![
        entry(Method::Lora, 1, 0.70, 0.70),
        entry(Method::Lora, 2, 0.71, 0.71),
        lora3(1, 0.72),
        lora3(2, 0.74),
        ada(1, 0.75),
        ada(2, 0.78),
    ]);
    let cmp = compare::comparisons(&s).unwrap();
    let kinds: Vec<(&str, &str, compare::Pairing)> = cmp
        .iter()
        .map(|c| (c.arms.left.as_str(), c.arms.right.as_str(), c.arms.pairing))
        .collect();
    assert_eq!(
        kinds,
        [
            ("AdaLoRA 12→8", "LoRA r=2", compare::Pairing::EqualRank),
            ("AdaLoRA 12→8", "LoRA r=3", compare::Pairing::EqualParams),
        ]
    );
    // Diffs (points): 5, 7 and 3, 4; Holm multiplies the smaller p by 2.
    assert!((cmp[0].diffs[0] - 5.0).abs() < 1e-9 && (cmp[0].diffs[1] - 7.0).abs() < 1e-9);
    let (p0, p1) = (cmp[0].stats.p_t.unwrap(), cmp[1].stats.p_t.unwrap());
    let (small, large) = if p0 < p1 { (0, 1) } else { (1, 0) };
    assert!((cmp[small].p_holm.unwrap() - 2.0 * p0.min(p1)).abs() < 1e-12);
    assert!((cmp[large].p_holm.unwrap() - p0.max(p1).max(2.0 * p0.min(p1))).abs() < 1e-12);
    let csv = csv_text(&s, &cmp).unwrap();
    assert_eq!(csv_column(&csv, "comparison", "n"), ["2", "2"]);
    assert_eq!(
        csv_column(&csv, "comparison", "mean_diff"),
        ["6.000000", "3.500000"]
    );
}

#[test]
fn a_configured_comparison_must_name_rows_and_gets_a_tost() {
    let settings = ReportSettings {
        compare: vec![["LoRA r=2".into(), "nope".into()]],
        ..ReportSettings::default()
    };
    let s = study_with(vec![entry(Method::Lora, 1, 0.7, 0.7)], settings);
    let err = compare::comparisons(&s).unwrap_err().to_string();
    assert!(
        err.contains("\"nope\"") && err.contains("LoRA r=2"),
        "{err}"
    );
    let settings = ReportSettings {
        equivalence_margin: Some(10.0),
        ..ReportSettings::default()
    };
    let s = study_with(
        vec![
            entry(Method::Lora, 1, 0.70, 0.70),
            entry(Method::Lora, 2, 0.71, 0.71),
            entry(Method::Lora, 3, 0.72, 0.72),
            entry(Method::AdaLora, 1, 0.70, 0.70),
            entry(Method::AdaLora, 2, 0.72, 0.72),
            entry(Method::AdaLora, 3, 0.71, 0.71),
        ],
        settings,
    );
    let md = report(&s);
    assert!(
        line_of(&md, "| rte | AdaLoRA 12→8 |").contains("| equivalent (p ="),
        "{md}"
    );
}

#[test]
fn the_latex_table_bolds_the_best_and_states_n() {
    let s = study(vec![
        entry(Method::Lora, 1, 0.70, 0.70),
        entry(Method::Lora, 2, 0.72, 0.72),
        entry(Method::AdaLora, 1, 0.75, 0.75),
        entry(Method::AdaLora, 2, 0.77, 0.77),
    ]);
    let tex = latex(&s);
    assert!(
        tex.contains("\\toprule") && tex.contains("\\bottomrule"),
        "{tex}"
    );
    assert!(
        tex.contains("AdaLoRA 12$\\to$8 & 100 & \\textbf{76.00}$\\pm$12.71"),
        "{tex}"
    );
    assert!(tex.contains("LoRA r=2 & 100 & 71.00$\\pm$12.71"), "{tex}");
    assert!(tex.contains("$n = 2$ seeds"), "{tex}");
    assert!(tex.contains("\\begin{tabular}{l r c  r}"), "{tex}");
}

/// A target-set ablation: one group adapts W_q and W_v, another only the FFN. Each run's
/// ranks go under its own module types, and the other types read "–".
#[test]
fn rank_table_columns_follow_each_runs_module_types() {
    let mut ffn = entry(Method::AdaLora, 1, 0.75, 0.75);
    ffn.group = "AdaLoRA FFN".into();
    ffn.run.pattern.as_mut().unwrap().modules =
        vec![(0, "intermediate".into(), 5), (1, "output".into(), 1)];
    let md = report(&study(vec![entry(Method::AdaLora, 1, 0.75, 0.75), ffn]));
    let header: Vec<&str> = line_of(&md, "| row | task | n | W_q")
        .split(" | ")
        .collect();
    assert_eq!(
        header,
        ["| row", "task", "n", "W_q", "W_v", "W_f1", "W_f2 |"],
        "{md}"
    );
    assert_eq!(
        line_of(&md, "| AdaLoRA 12→8 | rte | 1 | 3"),
        "| AdaLoRA 12→8 | rte | 1 | 3.00 (n=1) | 1.00 (n=1) | – | – |"
    );
    assert_eq!(
        line_of(&md, "| AdaLoRA FFN | rte | 1 | –"),
        "| AdaLoRA FFN | rte | 1 | – | – | 5.00 (n=1) | 1.00 (n=1) |"
    );
    assert!(
        md.contains("| row | task | n | layer 1 | layer 2 |"),
        "{md}"
    );
    assert_eq!(
        line_of(&md, "| AdaLoRA FFN | rte | 1 | 5"),
        "| AdaLoRA FFN | rte | 1 | 5.00 (n=1) | 1.00 (n=1) |"
    );
}

#[test]
fn the_figure_3_statements_are_tested_per_run() {
    // Three layers: the FFN gets 4 per matrix vs 1 per attention matrix; the top layer 2
    // more per matrix than the bottom one.
    let pattern = |extra: usize| RankPattern {
        step: 1,
        budget: 1,
        total_rank: 1,
        modules: (0..3)
            .flat_map(|l| {
                let top = if l == 2 { 2 } else { 0 };
                vec![
                    (l, "query".to_string(), 1 + top),
                    (l, "intermediate".to_string(), 4 + top + extra),
                ]
            })
            .collect(),
    };
    let runs: Vec<Entry> = (0..3)
        .map(|i| {
            let mut e = entry(Method::AdaLora, i, 0.8, 0.8);
            e.run.pattern = Some(pattern(i as usize));
            e
        })
        .collect();
    let s = study(runs);
    let a = &allocation::allocations(&s)[0];
    let d = a.ffn_minus_attention.as_ref().unwrap();
    assert_eq!((d.n, d.mean), (3, 4.0));
    let t = a.top_minus_bottom.as_ref().unwrap();
    assert!((t.mean - 2.0).abs() < 1e-12);
    assert!(t.ci.is_none() || t.ci.unwrap().0 <= 2.0);
    let share = a.ffn_share.as_ref().unwrap();
    // Seed 0: FFN 4+4+6 = 14 of 14 + 1+1+3 = 19.
    assert!((share.mean - (14.0 / 19.0 + 17.0 / 22.0 + 20.0 / 25.0) / 3.0).abs() < 1e-12);
}

#[test]
fn report_settings_from_a_file_replace_the_manifests_but_keep_the_runs_protocol() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sweep.toml");
    std::fs::write(
        &file,
        "name = \"x\"\n[report]\nequivalence_margin = 1.5\ncompare = [[\"a\", \"b\"]]\n",
    )
    .unwrap();
    let settings = ReportSettings::from_file(&file).unwrap();
    assert_eq!(settings.equivalence_margin, Some(1.5));
    let s = study(vec![entry(Method::Lora, 1, 0.7, 0.7)])
        .with_settings(settings)
        .unwrap();
    assert_eq!(s.settings.compare, vec![["a".to_string(), "b".to_string()]]);

    std::fs::write(&file, "name = \"x\"\n").unwrap();
    let err = ReportSettings::from_file(&file).unwrap_err().to_string();
    assert!(
        err.contains("sweep.toml") && err.contains("[report]"),
        "{err}"
    );
    std::fs::write(&file, "[report]\nprotocol = \"held-out\"\n").unwrap();
    let held_out = ReportSettings::from_file(&file).unwrap();
    let err = match study(vec![entry(Method::Lora, 1, 0.7, 0.7)]).with_settings(held_out) {
        Ok(_) => panic!("a best-dev run reported as held-out"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("[report] protocol"), "{err}");
}
