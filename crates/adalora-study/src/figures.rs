//! The paper's figures from run folders and sweeps (drawing is `adalora-plots`; this module
//! reads the files and chooses what to show).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use adalora_plots::{save, GroupedBars, LinePlot, RankHeatmap, Series};
use adalora_train::io::RunDir;
use adalora_train::trainer::FIXED_COLUMNS;
use adalora_train::Method;
use anyhow::Context;

use crate::report::{pairs, rank_grid, Study};
use crate::runs::{read_metrics, LayerGrid, RankPattern, RunRecord};

/// Figure kinds of `adalora plot`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Per-layer rank heatmap (run: final ranks; sweep: mean over seeds).
    Heatmap,
    /// b(t) against the realised total rank.
    Budget,
    /// Training loss and dev metric over steps (several runs overlaid).
    Curves,
    /// Sweep: main metric vs mean final rank per method, ± std over seeds.
    MetricVsBudget,
    /// Sweep: LoRA vs AdaLoRA bars at equal final budget per task.
    Bars,
    /// Everything that applies.
    All,
}

impl Kind {
    pub fn parse(s: &str) -> anyhow::Result<Self> {
        Ok(match s {
            "heatmap" => Kind::Heatmap,
            "budget" => Kind::Budget,
            "curves" => Kind::Curves,
            "metric-vs-budget" => Kind::MetricVsBudget,
            "bars" => Kind::Bars,
            "all" => Kind::All,
            other => anyhow::bail!(
                "unknown --kind {other:?}: expected heatmap, budget, curves, metric-vs-budget, \
                 bars or all"
            ),
        })
    }

    fn wants(self, k: Kind) -> bool {
        self == Kind::All || self == k
    }
}

fn file_stem(label: &str) -> String {
    label
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect::<String>()
        .replace("__", "_")
}

fn heatmap(grid: &LayerGrid, title: &str, out: &Path) -> anyhow::Result<Vec<PathBuf>> {
    Ok(save(
        &RankHeatmap {
            modules: &grid.rows,
            values: &grid.values,
            title,
        },
        out,
    )?)
}

/// Final rank per matrix of one AdaLoRA run.
pub fn run_heatmap(run: &Path, out: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let path = RunDir::new(run).rank_pattern();
    let p = RankPattern::read(&path)
        .with_context(|| format!("{} (only AdaLoRA runs have one)", path.display()))?;
    let title = format!(
        "{}: final rank per matrix (step {}, total {} of budget {})",
        run.file_name().and_then(|n| n.to_str()).unwrap_or("run"),
        p.step,
        p.total_rank,
        p.budget
    );
    heatmap(&LayerGrid::mean_of(&[&p]), &title, out)
}

/// b(t) and the realised total rank of one AdaLoRA run, from its metrics log.
pub fn run_budget(run: &Path, out: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let rows = read_metrics(&RunDir::new(run).metrics())?;
    let train: Vec<_> = rows.iter().filter(|r| r.split == "train").collect();
    let series_of = |col: &str| -> Vec<(f64, f64)> {
        train
            .iter()
            .filter_map(|r| r.values.get(col).map(|v| (r.step as f64, *v)))
            .collect()
    };
    let budget = series_of("budget");
    if budget.is_empty() {
        anyhow::bail!(
            "{}: no budget column values (only AdaLoRA runs have a budget schedule)",
            RunDir::new(run).metrics().display()
        );
    }
    let series = [
        Series {
            name: "budget b(t)".into(),
            points: budget,
            dashed: true,
            ..Series::default()
        },
        Series {
            name: "realised total rank".into(),
            points: series_of("total_rank"),
            ..Series::default()
        },
    ];
    let title = format!("{}: budget vs realised rank", run_name(run));
    Ok(save(
        &LinePlot {
            title: &title,
            x_desc: "optimizer step",
            y_desc: "total rank (triplets)",
            series: &series,
        },
        out,
    )?)
}

fn run_name(run: &Path) -> String {
    run.file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("run")
        .to_string()
}

/// Training loss and the dev main metric of several runs overlaid: `<out>_loss` and `<out>_dev`.
pub fn curves(runs: &[(String, PathBuf)], out: &Path, title: &str) -> anyhow::Result<Vec<PathBuf>> {
    let mut loss = Vec::new();
    let mut dev = Vec::new();
    let mut metric = String::new();
    for (name, dir) in runs {
        let rows = read_metrics(&RunDir::new(dir).metrics())?;
        let record = RunRecord::read(dir).ok();
        let main = record
            .as_ref()
            .map(|r| r.summary.main_metric.clone())
            .or_else(|| {
                rows.iter().find(|r| r.split != "train").and_then(|r| {
                    r.values
                        .keys()
                        .find(|k| !FIXED_COLUMNS.contains(&k.as_str()))
                        .cloned()
                })
            })
            .unwrap_or_default();
        metric = main.clone();
        let first_dev = rows
            .iter()
            .find(|r| r.split != "train")
            .map(|r| r.split.clone());
        loss.push(Series {
            name: name.clone(),
            points: rows
                .iter()
                .filter(|r| r.split == "train")
                .filter_map(|r| r.values.get("task_loss").map(|v| (r.step as f64, *v)))
                .collect(),
            ..Series::default()
        });
        dev.push(Series {
            name: name.clone(),
            points: rows
                .iter()
                .filter(|r| Some(&r.split) == first_dev.as_ref())
                .filter_map(|r| r.values.get(&main).map(|v| (r.step as f64, *v)))
                .collect(),
            markers: true,
            ..Series::default()
        });
    }
    let stem = out.with_extension("");
    let mut written = save(
        &LinePlot {
            title: &format!("{title}: training loss"),
            x_desc: "optimizer step",
            y_desc: "task loss (mean over the log window)",
            series: &loss,
        },
        &PathBuf::from(format!("{}_loss.png", stem.display())),
    )?;
    written.extend(save(
        &LinePlot {
            title: &format!("{title}: dev {metric}"),
            x_desc: "optimizer step",
            y_desc: &format!("dev {metric}"),
            series: &dev,
        },
        &PathBuf::from(format!("{}_dev.png", stem.display())),
    )?);
    Ok(written)
}

/// The figures of one run folder.
pub fn run_figures(run: &Path, kind: Kind, out_dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    let is_adalora = RunDir::new(run).rank_pattern().exists();
    if kind.wants(Kind::Heatmap) && (is_adalora || kind == Kind::Heatmap) {
        written.extend(run_heatmap(run, &out_dir.join("rank_pattern.png"))?);
    }
    if kind.wants(Kind::Budget) && (is_adalora || kind == Kind::Budget) {
        written.extend(run_budget(run, &out_dir.join("budget_vs_rank.png"))?);
    }
    if kind.wants(Kind::Curves) {
        let name = run_name(run);
        written.extend(curves(
            &[(name.clone(), run.to_path_buf())],
            &out_dir.join("curves.png"),
            &name,
        )?);
    }
    if matches!(kind, Kind::MetricVsBudget | Kind::Bars) {
        anyhow::bail!("--kind metric-vs-budget and bars need a sweep folder, not a run folder");
    }
    Ok(written)
}

/// The standard figures of a sweep, into `out`.
pub fn sweep_figures(study: &Study, out: &Path) -> anyhow::Result<Vec<PathBuf>> {
    sweep_figures_of(study, Kind::All, out)
}

pub fn sweep_figures_of(study: &Study, kind: Kind, out: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    let groups = study.groups();
    let tasks = study.tasks();
    if kind.wants(Kind::Heatmap) {
        for g in &groups {
            for t in &tasks {
                if let Some(grid) = rank_grid(study, g, Some(t)) {
                    let n = study
                        .entries
                        .iter()
                        .filter(|e| &e.group == g && &e.run.summary.task == t)
                        .count();
                    let title = format!("{g}, {t}: mean final rank over {n} run(s)");
                    let name = format!("rank_heatmap_{}_{}.png", file_stem(g), file_stem(t));
                    written.extend(heatmap(&grid, &title, &out.join(name))?);
                }
            }
        }
    }
    for e in &study.entries {
        if e.run.config.method == Method::AdaLora {
            let dir = &e.run.dir;
            if kind.wants(Kind::Heatmap) {
                written.extend(run_heatmap(dir, &dir.join("rank_pattern.png"))?);
            }
            if kind.wants(Kind::Budget) {
                written.extend(run_budget(dir, &dir.join("budget_vs_rank.png"))?);
            }
        }
    }
    if kind.wants(Kind::Curves) {
        for t in &tasks {
            // One run per table row: the first seed at the row's chosen learning rate.
            let runs: Vec<(String, PathBuf)> = groups
                .iter()
                .filter_map(|g| study.cell(g, t).map(|c| (g, c)))
                .map(|(g, c)| {
                    let e = c.runs[0];
                    (
                        format!("{g} (seed {})", e.run.config.seed),
                        e.run.dir.clone(),
                    )
                })
                .collect();
            if !runs.is_empty() {
                let name = format!("curves_{}.png", file_stem(t));
                written.extend(curves(&runs, &out.join(name), t)?);
            }
        }
    }
    if kind.wants(Kind::MetricVsBudget) {
        for t in &tasks {
            written.extend(metric_vs_budget(study, t, out)?);
        }
    }
    if kind.wants(Kind::Bars) {
        written.extend(equal_budget_bars(study, &tasks, out)?);
    }
    Ok(written)
}

/// Main metric against the mean final rank, one line per method (and other varying setting).
fn metric_vs_budget(study: &Study, task: &str, out: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut lines: BTreeMap<String, Vec<(f64, f64, f64)>> = BTreeMap::new();
    let mut metric = String::new();
    for g in study.groups() {
        let Some(c) = study.cell(&g, task) else {
            continue;
        };
        let run = &c.runs[0].run;
        let Some(rank) = run.mean_final_rank() else {
            continue;
        };
        metric = run.summary.main_metric.clone();
        let method = if run.config.method == Method::Lora {
            "LoRA"
        } else {
            "AdaLoRA"
        };
        let name = match g.split_once(" (") {
            Some((_, extras)) => format!("{method} ({extras}"),
            None => method.to_string(),
        };
        lines
            .entry(name)
            .or_default()
            .push((rank, 100.0 * c.mean, 100.0 * c.error_bar()));
    }
    if lines.values().all(|v| v.len() < 2) {
        return Ok(Vec::new());
    }
    let series: Vec<Series> = lines
        .into_iter()
        .map(|(name, mut pts)| {
            pts.sort_by(|a, b| a.0.total_cmp(&b.0));
            Series {
                name,
                points: pts.iter().map(|p| (p.0, p.1)).collect(),
                errors: Some(pts.iter().map(|p| p.2).collect()),
                markers: true,
                dashed: false,
            }
        })
        .collect();
    let title = format!("{task}: dev {metric} vs final budget (mean ± std over seeds)");
    Ok(save(
        &LinePlot {
            title: &title,
            x_desc: "mean final rank per adapted matrix",
            y_desc: &format!("dev {metric} (×100)"),
            series: &series,
        },
        &out.join(format!("metric_vs_budget_{}.png", file_stem(task))),
    )?)
}

/// LoRA and AdaLoRA at equal final budget, per task.
fn equal_budget_bars(study: &Study, tasks: &[String], out: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let pairs = pairs(study);
    if pairs.is_empty() {
        return Ok(Vec::new());
    }
    let mut series = Vec::new();
    for p in &pairs {
        for g in [&p.lora, &p.adalora] {
            if series.iter().any(|(name, _)| name == g) {
                continue;
            }
            let vals = tasks
                .iter()
                .map(|t| {
                    study
                        .cell(g, t)
                        .map(|c| (100.0 * c.mean, 100.0 * c.error_bar()))
                })
                .collect();
            series.push((g.clone(), vals));
        }
    }
    Ok(save(
        &GroupedBars {
            title: "LoRA vs AdaLoRA at equal final budget (dev main metric, mean ± std over seeds)",
            y_desc: "dev main metric (×100)",
            groups: tasks,
            series: &series,
        },
        &out.join("lora_vs_adalora.png"),
    )?)
}
