//! `adalora report SWEEP`: a table in the style of the AdaLoRA paper's Table 1 (rows = method @
//! budget, columns = tasks, mean ± std over seeds, best per column in bold), the same as CSV,
//! LoRA-vs-AdaLoRA differences at equal final budget, and the rank-allocation summary.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use adalora_train::io::atomic_write;
use adalora_train::Method;

use crate::manifest::{Row, Status, SweepDir};
use crate::runs::{LayerGrid, MetricAt, RunRecord, MODULE_ORDER};

/// Settings the row label already shows, or that are averaged / selected over.
const NOT_A_ROW_KEY: [&str; 8] = [
    "task",
    "seed",
    "train.lr",
    "method",
    "lora.r",
    "adalora.init_r",
    "adalora.target_r",
    "adalora.target_total_rank",
];

/// A finished run with its place in the table.
#[derive(Clone, Debug)]
pub struct Entry {
    pub row: Row,
    pub run: RunRecord,
    /// Table row: method @ budget plus the other settings that vary.
    pub group: String,
}

/// The finished runs of a sweep, grouped.
pub struct Study {
    pub name: String,
    pub entries: Vec<Entry>,
    /// Rows not finished (pending, running, failed).
    pub unfinished: usize,
    /// Which dev evaluation of each run the cells use.
    pub at: MetricAt,
}

fn settings_map(row: &Row) -> BTreeMap<String, String> {
    row.settings
        .iter()
        .filter_map(|s| s.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

impl Study {
    pub fn read(sweep: &SweepDir) -> anyhow::Result<Self> {
        let m = sweep.read()?;
        let maps: Vec<BTreeMap<String, String>> = m.rows.iter().map(settings_map).collect();
        let keys: BTreeSet<&String> = maps.iter().flat_map(|s| s.keys()).collect();
        // A key distinguishes rows if it takes different values within one task (settings
        // that only follow the task, like its subset size or epochs, do not).
        let varying: Vec<&String> = keys
            .into_iter()
            .filter(|k| !NOT_A_ROW_KEY.contains(&k.as_str()))
            .filter(|k| {
                let mut by_task: BTreeMap<Option<&String>, BTreeSet<Option<&String>>> =
                    BTreeMap::new();
                for s in &maps {
                    by_task.entry(s.get("task")).or_default().insert(s.get(*k));
                }
                by_task.values().any(|values| values.len() > 1)
            })
            .collect();
        let mut entries = Vec::new();
        for (row, settings) in m.rows.iter().zip(&maps) {
            if row.status != Status::Done {
                continue;
            }
            let run = RunRecord::read(&sweep.run_path(row))?;
            let other = match run.config.method {
                Method::Lora => "adalora.",
                Method::AdaLora => "lora.",
                _ => "\u{0}",
            };
            let extras: Vec<String> = varying
                .iter()
                .filter(|k| !k.starts_with(other))
                .filter_map(|k| {
                    settings
                        .get(*k)
                        .map(|v| format!("{k}={}", v.trim_matches('"')))
                })
                .collect();
            let group = if extras.is_empty() {
                run.method_label()
            } else {
                format!("{} ({})", run.method_label(), extras.join(", "))
            };
            entries.push(Entry {
                row: row.clone(),
                run,
                group,
            });
        }
        Ok(Study {
            name: m.name.clone(),
            unfinished: m.rows.len() - entries.len(),
            entries,
            at: MetricAt::default(),
        })
    }

    /// The same study read at another evaluation (`report --final`).
    pub fn at(self, at: MetricAt) -> Self {
        Study { at, ..self }
    }

    /// Table rows in first-appearance order.
    pub fn groups(&self) -> Vec<String> {
        let mut seen = Vec::new();
        for e in &self.entries {
            if !seen.contains(&e.group) {
                seen.push(e.group.clone());
            }
        }
        seen
    }

    pub fn tasks(&self) -> Vec<String> {
        let mut seen = Vec::new();
        for e in &self.entries {
            if !seen.contains(&e.run.summary.task) {
                seen.push(e.run.summary.task.clone());
            }
        }
        seen
    }

    /// The runs of one table cell at the learning rate with the best mean main metric
    /// (each method gets its own learning rate, as in the paper's protocol).
    pub fn cell(&self, group: &str, task: &str) -> Option<Cell<'_>> {
        let mut by_lr: BTreeMap<String, Vec<&Entry>> = BTreeMap::new();
        for e in self
            .entries
            .iter()
            .filter(|e| e.group == group && e.run.summary.task == task)
        {
            by_lr
                .entry(format!("{:e}", e.run.config.lr()))
                .or_default()
                .push(e);
        }
        by_lr
            .into_values()
            .map(|runs| Cell::of(runs, self.at))
            .max_by(|a, b| a.mean.total_cmp(&b.mean))
    }
}

/// Mean ± sample standard deviation of a cell's seeds (no spread for one seed).
#[derive(Clone, Debug)]
pub struct Cell<'a> {
    pub runs: Vec<&'a Entry>,
    pub at: MetricAt,
    pub mean: f64,
    pub std: Option<f64>,
}

impl<'a> Cell<'a> {
    fn of(runs: Vec<&'a Entry>, at: MetricAt) -> Self {
        let values: Vec<f64> = runs
            .iter()
            .map(|e| e.run.main_value(at).unwrap_or(f64::NAN))
            .collect();
        let (mean, std) = mean_std(&values);
        Cell {
            runs,
            at,
            mean,
            std,
        }
    }

    /// The same runs at another evaluation (the CSV lists best and final side by side).
    pub fn at(&self, at: MetricAt) -> Cell<'a> {
        Cell::of(self.runs.clone(), at)
    }

    /// Half-width of an error bar: the spread, or none for a single seed.
    pub fn error_bar(&self) -> f64 {
        self.std.unwrap_or(0.0)
    }

    pub fn lr(&self) -> f64 {
        self.runs[0].run.config.lr()
    }

    /// Main metric by seed.
    pub fn by_seed(&self) -> BTreeMap<u64, f64> {
        self.runs
            .iter()
            .map(|e| {
                (
                    e.run.config.seed,
                    e.run.main_value(self.at).unwrap_or(f64::NAN),
                )
            })
            .collect()
    }
}

/// Mean and sample standard deviation; the spread of fewer than two values is undefined.
pub fn mean_std(v: &[f64]) -> (f64, Option<f64>) {
    if v.is_empty() {
        return (f64::NAN, None);
    }
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let std = (v.len() > 1)
        .then(|| (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt());
    (mean, std)
}

/// "73.89 ± 1.20 (n=3)", or "73.89 (n=1)" where one seed has no spread.
fn mean_spread(mean: String, std: Option<f64>, n: usize) -> String {
    match std {
        Some(s) => format!("{mean} ± {} (n={n})", pct(s)),
        None => format!("{mean} (n={n})"),
    }
}

/// Scores are shown ×100, as in the paper.
fn pct(x: f64) -> String {
    if x.is_finite() {
        format!("{:.2}", 100.0 * x)
    } else {
        "nan".into()
    }
}

fn group_params(study: &Study, group: &str) -> String {
    let params: BTreeSet<usize> = study
        .entries
        .iter()
        .filter(|e| e.group == group)
        .map(|e| e.run.summary.trainable_params)
        .collect();
    match (params.first(), params.last()) {
        (Some(a), Some(b)) if a == b => format!("{a}"),
        (Some(a), Some(b)) => format!("{a}–{b}"),
        _ => "-".into(),
    }
}

fn group_final_rank(study: &Study, group: &str) -> Option<f64> {
    study
        .entries
        .iter()
        .find(|e| e.group == group)
        .and_then(|e| e.run.mean_final_rank())
}

fn main_metric_of(study: &Study, task: &str) -> String {
    study
        .entries
        .iter()
        .find(|e| e.run.summary.task == task)
        .map(|e| e.run.summary.main_metric.clone())
        .unwrap_or_default()
}

/// An equal-budget pair: LoRA and AdaLoRA rows with the same final mean rank and otherwise
/// the same settings.
pub struct Pair {
    pub lora: String,
    pub adalora: String,
    pub mean_final_rank: f64,
}

pub fn pairs(study: &Study) -> Vec<Pair> {
    let groups = study.groups();
    let first = |g: &str| study.entries.iter().find(|e| e.group == g);
    let extras = |g: &str| g.split_once(" (").map(|(_, x)| x.to_string());
    let mut out = Vec::new();
    for l in &groups {
        let Some(le) = first(l).filter(|e| e.run.config.method == Method::Lora) else {
            continue;
        };
        for a in &groups {
            let Some(ae) = first(a).filter(|e| e.run.config.method == Method::AdaLora) else {
                continue;
            };
            if let (Some(lr), Some(ar)) = (le.run.mean_final_rank(), ae.run.mean_final_rank()) {
                if (lr - ar).abs() < 1e-9 && extras(l) == extras(a) {
                    out.push(Pair {
                        lora: l.clone(),
                        adalora: a.clone(),
                        mean_final_rank: lr,
                    });
                }
            }
        }
    }
    out
}

/// AdaLoRA − LoRA on the seeds both have: mean ± std of the paired differences.
pub fn pair_difference(
    study: &Study,
    pair: &Pair,
    task: &str,
) -> Option<(f64, Option<f64>, usize)> {
    let l = study.cell(&pair.lora, task)?.by_seed();
    let a = study.cell(&pair.adalora, task)?.by_seed();
    let diffs: Vec<f64> = a
        .iter()
        .filter_map(|(s, av)| l.get(s).map(|lv| av - lv))
        .collect();
    if diffs.is_empty() {
        return None;
    }
    let (m, s) = mean_std(&diffs);
    Some((m, s, diffs.len()))
}

/// Mean final-rank grid of a group's AdaLoRA runs on a task (all seeds).
pub fn rank_grid(study: &Study, group: &str, task: Option<&str>) -> Option<LayerGrid> {
    let patterns: Vec<_> = study
        .entries
        .iter()
        .filter(|e| e.group == group && task.is_none_or(|t| e.run.summary.task == t))
        .filter_map(|e| e.run.pattern.as_ref())
        .collect();
    (!patterns.is_empty()).then(|| LayerGrid::mean_of(&patterns))
}

pub fn markdown(study: &Study) -> String {
    let groups = study.groups();
    let tasks = study.tasks();
    let mut md = String::new();
    let _ = writeln!(md, "# Sweep `{}`\n", study.name);
    let _ = writeln!(
        md,
        "Each cell: the task's main metric on the (first) dev split {}, ×100, mean ± sample \
         std over seeds (n = seeds; one seed has no spread). Each method's learning rate is \
         chosen per cell from the sweep's grid by the mean dev metric (the paper's protocol; \
         the CSV lists it, and both the best and the final metric). Best mean per column in \
         bold. # Params = trainable parameters as trained (AdaLoRA counts its initial rank). \
         {} finished runs{}.\n",
        match study.at {
            MetricAt::Best => {
                "at the run's best evaluation (the paper's Table 1 gives \"GLUE dev, mean of 5 \
                 seeds\" without saying which checkpoint; AdaLoRA's run_glue, like LoRA's, \
                 evaluates during training, and LoRA's paper reports each run's best epoch; \
                 `adalora report --final` uses the end of training)"
            }
            MetricAt::Final =>
                "at the end of training (`adalora report` without --final uses the best evaluation)",
        },
        study.entries.len(),
        if study.unfinished > 0 {
            format!(", {} not finished (not shown)", study.unfinished)
        } else {
            String::new()
        }
    );
    let cells: BTreeMap<(String, String), Cell> = groups
        .iter()
        .flat_map(|g| tasks.iter().map(move |t| (g, t)))
        .filter_map(|(g, t)| study.cell(g, t).map(|c| ((g.clone(), t.clone()), c)))
        .collect();
    let best: BTreeMap<&String, f64> = tasks
        .iter()
        .map(|t| {
            let b = groups
                .iter()
                .filter_map(|g| cells.get(&(g.clone(), t.clone())).map(|c| c.mean))
                .filter(|m| m.is_finite())
                .fold(f64::NEG_INFINITY, f64::max);
            (t, b)
        })
        .collect();
    let mut header = vec![
        "Method".to_string(),
        "# Params".into(),
        "mean final rank".into(),
    ];
    header.extend(
        tasks
            .iter()
            .map(|t| format!("{t} ({})", main_metric_of(study, t))),
    );
    header.push("Avg".into());
    table_header(&mut md, &header);
    for g in &groups {
        let mut line = vec![
            g.clone(),
            group_params(study, g),
            group_final_rank(study, g).map_or("-".into(), |r| format!("{r:.2}")),
        ];
        let mut means = Vec::new();
        for t in &tasks {
            match cells.get(&(g.clone(), t.clone())) {
                Some(c) => {
                    means.push(c.mean);
                    let text = mean_spread(pct(c.mean), c.std, c.runs.len());
                    line.push(if c.mean == best[t] {
                        format!("**{text}**")
                    } else {
                        text
                    });
                }
                None => line.push("-".into()),
            }
        }
        line.push(if means.len() == tasks.len() {
            pct(means.iter().sum::<f64>() / means.len() as f64)
        } else {
            "-".into()
        });
        let _ = writeln!(md, "| {} |", line.join(" | "));
    }

    let pairs = pairs(study);
    if !pairs.is_empty() {
        let _ = writeln!(
            md,
            "\n## Equal final budget: AdaLoRA − LoRA\n\nPaired by seed: mean ± std of the \
             per-seed differences (×100); positive = AdaLoRA better.\n"
        );
        let mut header = vec![
            "mean final rank".to_string(),
            "LoRA".into(),
            "AdaLoRA".into(),
        ];
        header.extend(tasks.iter().cloned());
        table_header(&mut md, &header);
        for p in &pairs {
            let mut line = vec![
                format!("{:.2}", p.mean_final_rank),
                p.lora.clone(),
                p.adalora.clone(),
            ];
            for t in &tasks {
                line.push(match pair_difference(study, p, t) {
                    Some((m, s, n)) => mean_spread(format!("{:+.2}", 100.0 * m), s, n),
                    None => "-".into(),
                });
            }
            let _ = writeln!(md, "| {} |", line.join(" | "));
        }
    }
    rank_section(study, &groups, &tasks, &mut md);
    md
}

fn rank_section(study: &Study, groups: &[String], tasks: &[String], md: &mut String) {
    let grids: Vec<(String, String, LayerGrid)> = groups
        .iter()
        .flat_map(|g| tasks.iter().map(move |t| (g, t)))
        .filter_map(|(g, t)| rank_grid(study, g, Some(t)).map(|grid| (g.clone(), t.clone(), grid)))
        .collect();
    if grids.is_empty() {
        return;
    }
    let _ = writeln!(
        md,
        "\n## Rank allocation (AdaLoRA)\n\nMean final rank per module type (over layers and \
         seeds) and per layer (over module types and seeds); – where a run does not adapt that \
         module type.\n"
    );
    // Runs of one sweep may adapt different module types (a target-set ablation): the columns
    // are every type any run has, in the paper's order, and each run fills its own.
    let modules: Vec<&str> = MODULE_ORDER
        .iter()
        .map(|(_, paper)| *paper)
        .filter(|m| grids.iter().any(|(_, _, g)| g.rows.iter().any(|r| r == m)))
        .collect();
    let mut header = vec!["run".to_string(), "task".into()];
    header.extend(modules.iter().map(|m| m.to_string()));
    table_header(md, &header);
    for (g, t, grid) in &grids {
        let means = grid.row_means();
        let cells = modules.iter().map(|m| {
            grid.rows
                .iter()
                .position(|r| r == m)
                .map_or("–".to_string(), |i| format!("{:.2}", means[i]))
        });
        rank_line(md, g, t, cells);
    }
    let layers = grids
        .iter()
        .map(|(_, _, g)| g.values.first().map_or(0, Vec::len))
        .max()
        .unwrap_or(0);
    let _ = writeln!(md);
    let mut header = vec!["run".to_string(), "task".into()];
    header.extend((1..=layers).map(|l| format!("layer {l}")));
    table_header(md, &header);
    for (g, t, grid) in &grids {
        let means = grid.column_means();
        let cells =
            (0..layers).map(|l| means.get(l).map_or("–".to_string(), |v| format!("{v:.2}")));
        rank_line(md, g, t, cells);
    }
}

fn rank_line(md: &mut String, group: &str, task: &str, cells: impl Iterator<Item = String>) {
    let line: Vec<String> = [group.to_string(), task.to_string()]
        .into_iter()
        .chain(cells)
        .collect();
    let _ = writeln!(md, "| {} |", line.join(" | "));
}

fn table_header(md: &mut String, cols: &[String]) {
    let _ = writeln!(md, "| {} |", cols.join(" | "));
    let sep: Vec<&str> = cols
        .iter()
        .enumerate()
        .map(|(i, _)| if i == 0 { "---" } else { "---:" })
        .collect();
    let _ = writeln!(md, "| {} |", sep.join(" | "));
}

/// One CSV line per table cell (row × task), with the chosen learning rate and every seed.
pub fn csv_text(study: &Study) -> anyhow::Result<String> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record([
        "method",
        "row",
        "trainable_params",
        "mean_final_rank",
        "task",
        "metric",
        "lr",
        "n",
        "at",
        "mean",
        "std",
        "values_by_seed",
        "best_mean",
        "final_mean",
    ])?;
    for g in study.groups() {
        for t in study.tasks() {
            let Some(c) = study.cell(&g, &t) else {
                continue;
            };
            let first = &c.runs[0].run;
            let seeds: Vec<String> = c
                .by_seed()
                .iter()
                .map(|(s, v)| format!("{s}:{v:.6}"))
                .collect();
            w.write_record([
                first.config.method.name().to_string(),
                g.clone(),
                first.summary.trainable_params.to_string(),
                first
                    .mean_final_rank()
                    .map_or(String::new(), |r| format!("{r:.4}")),
                t.clone(),
                first.summary.main_metric.clone(),
                format!("{:e}", c.lr()),
                c.runs.len().to_string(),
                c.at.name().to_string(),
                format!("{:.6}", c.mean),
                c.std.map_or(String::new(), |s| format!("{s:.6}")),
                seeds.join(" "),
                format!("{:.6}", c.at(MetricAt::Best).mean),
                format!("{:.6}", c.at(MetricAt::Final).mean),
            ])?;
        }
    }
    Ok(String::from_utf8(w.into_inner()?)?)
}

/// Report (Markdown + CSV) and the standard figures, next to the manifest.
pub fn write_all(sweep: &SweepDir) -> anyhow::Result<()> {
    let study = Study::read(sweep)?;
    if study.entries.is_empty() {
        eprintln!("no finished runs yet: no report");
        return Ok(());
    }
    atomic_write(&sweep.root.join("report.md"), markdown(&study).as_bytes())?;
    atomic_write(&sweep.root.join("report.csv"), csv_text(&study)?.as_bytes())?;
    let figures = crate::figures::sweep_figures(&study, &sweep.root.join("figures"))?;
    eprintln!(
        "wrote {}/report.md, report.csv and {} figures",
        sweep.root.display(),
        figures.len()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runs::{RankPattern, RunSummary};
    use adalora_train::RunConfig;
    use std::path::PathBuf;

    /// A finished run of `task` whose dev accuracy was `best` at its best evaluation and
    /// `last` at the end; total rank 4 over two matrices (LoRA r=2 or AdaLoRA 12→8).
    fn entry(method: Method, seed: u64, best: f64, last: f64) -> Entry {
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
            },
            group: run.method_label(),
            run,
        }
    }

    fn study(entries: Vec<Entry>) -> Study {
        Study {
            name: "t".into(),
            entries,
            unfinished: 0,
            at: MetricAt::default(),
        }
    }

    fn line_of<'a>(md: &'a str, start: &str) -> &'a str {
        md.lines()
            .find(|l| l.starts_with(start))
            .unwrap_or_else(|| panic!("no line starting {start:?} in\n{md}"))
    }

    #[test]
    fn one_seed_has_no_spread_in_the_table_the_pairs_or_the_csv() {
        let s = study(vec![
            entry(Method::Lora, 1, 0.70, 0.70),
            entry(Method::AdaLora, 1, 0.75, 0.75),
        ]);
        let md = markdown(&s);
        assert!(
            line_of(&md, "| LoRA r=2 |").contains("| 70.00 (n=1) |"),
            "{md}"
        );
        assert!(
            line_of(&md, "| AdaLoRA 12→8 |").contains("| **75.00 (n=1)** |"),
            "{md}"
        );
        let pair = line_of(&md, "| 2.00 | LoRA r=2 |");
        assert!(pair.ends_with("| +5.00 (n=1) |"), "{md}");
        assert!(!md.contains("± 0.00"), "{md}");
        let csv = csv_text(&s).unwrap();
        let std_column = csv
            .lines()
            .next()
            .unwrap()
            .split(',')
            .position(|c| c == "std");
        for line in csv.lines().skip(1) {
            assert_eq!(line.split(',').nth(std_column.unwrap()), Some(""), "{csv}");
        }
    }

    #[test]
    fn two_seeds_show_their_spread() {
        let s = study(vec![
            entry(Method::Lora, 1, 0.70, 0.70),
            entry(Method::Lora, 2, 0.72, 0.72),
        ]);
        let md = markdown(&s);
        assert!(
            line_of(&md, "| LoRA r=2 |").contains("**71.00 ± 1.41 (n=2)**"),
            "{md}"
        );
    }

    #[test]
    fn cells_use_the_best_evaluation_unless_final_is_asked_for() {
        let runs = || vec![entry(Method::Lora, 1, 0.80, 0.60)];
        let best = markdown(&study(runs()));
        assert!(
            line_of(&best, "| LoRA r=2 |").contains("80.00 (n=1)"),
            "{best}"
        );
        assert!(best.contains("best evaluation"), "{best}");
        let last = markdown(&study(runs()).at(MetricAt::Final));
        assert!(
            line_of(&last, "| LoRA r=2 |").contains("60.00 (n=1)"),
            "{last}"
        );
        assert!(last.contains("at the end of training"), "{last}");
        let csv = csv_text(&study(runs())).unwrap();
        let header: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
        let row: Vec<&str> = csv.lines().nth(1).unwrap().split(',').collect();
        let col = |name: &str| row[header.iter().position(|c| *c == name).unwrap()];
        assert_eq!(
            (col("at"), col("best_mean"), col("final_mean")),
            ("best", "0.800000", "0.600000")
        );
    }

    /// A target-set ablation: one group adapts W_q and W_v, another only the FFN. Each run's
    /// ranks go under its own module types, and the other types read "–".
    #[test]
    fn rank_table_columns_follow_each_runs_module_types() {
        let mut ffn = entry(Method::AdaLora, 1, 0.75, 0.75);
        ffn.group = "AdaLoRA FFN".into();
        ffn.run.pattern.as_mut().unwrap().modules =
            vec![(0, "intermediate".into(), 5), (1, "output".into(), 1)];
        let md = markdown(&study(vec![entry(Method::AdaLora, 1, 0.75, 0.75), ffn]));
        let header: Vec<&str> = line_of(&md, "| run | task | W_q").split(" | ").collect();
        assert_eq!(
            header,
            ["| run", "task", "W_q", "W_v", "W_f1", "W_f2 |"],
            "{md}"
        );
        assert_eq!(
            line_of(&md, "| AdaLoRA 12→8 | rte | 3"),
            "| AdaLoRA 12→8 | rte | 3.00 | 1.00 | – | – |"
        );
        assert_eq!(
            line_of(&md, "| AdaLoRA FFN | rte | –"),
            "| AdaLoRA FFN | rte | – | – | 5.00 | 1.00 |"
        );
        assert_eq!(
            line_of(&md, "| AdaLoRA FFN | rte | 5"),
            "| AdaLoRA FFN | rte | 5.00 | 1.00 |"
        );
        assert!(md.contains("| run | task | layer 1 | layer 2 |"), "{md}");
        assert_eq!(
            line_of(&md, "| AdaLoRA 12→8 | rte | 2"),
            "| AdaLoRA 12→8 | rte | 2.00 | – |"
        );
    }
}
