//! The paper's figures from run folders and sweeps (drawing is `adalora-plots`; this module
//! reads the files and chooses what to show).
//!
//! A sweep's figures share one plan ([`Layout`]): every row (table row, "method @ budget" plus
//! the settings that vary) keeps one colour in every figure; more than
//! [`MAX_SERIES_PER_PANEL`] rows are drawn as small multiples, one panel per final budget
//! where that fits; error bars are the cells' 95% intervals over seeds (none for one seed);
//! the rank heatmaps of a sweep share one colour scale.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use adalora_plots::{
    chunk_balanced, metric_bounds, save, Bar, BarSeries, ColorMap, GroupedBars, LinePlot, Panel,
    RGBColor, RankHeatmap, Series, SmallMultiples, MAX_SERIES_PER_PANEL,
};
use adalora_train::io::RunDir;
use adalora_train::trainer::FIXED_COLUMNS;
use adalora_train::Method;
use anyhow::Context;

use crate::report::{main_metric_of, rank_grid, Cell, Study};
use crate::runs::{read_metrics, LayerGrid, MetricAt, MetricsRow, RankPattern, RunRecord};

/// Figure kinds of `adalora plot`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Per-layer rank heatmap (run: final ranks; sweep: mean over seeds).
    Heatmap,
    /// b(t) against the realised total rank.
    Budget,
    /// Training loss and dev metric over steps (mean ± 1 std over seeds per row).
    Curves,
    /// Sweep: main metric vs mean final rank per method, 95% CI over seeds.
    MetricVsBudget,
    /// Sweep: every row's main metric per task, 95% CI over seeds.
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

/// Fewest dev evaluations a run needs to be drawn as a curve: fewer are a point or two, not a
/// curve (set `train.eval_every` for more).
pub const MIN_CURVE_POINTS: usize = 10;

/// Error bars of the sweep figures: the cell's 95% Student-t interval over seeds.
const CI_NAME: &str = "95% CI over seeds";

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

fn run_name(run: &Path) -> String {
    run.file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("run")
        .to_string()
}

/// A metric's name as an axis shows it.
fn metric_name(metric: &str) -> String {
    match metric {
        "matthews_correlation" => "Matthews corr.".into(),
        "pearson" => "Pearson r".into(),
        "spearman" => "Spearman ρ".into(),
        other => other.replace('_', " "),
    }
}

/// The metric's range times `scale` (×100 for the tables' points).
fn scaled_bounds(metric: &str, scale: f64) -> Option<(f64, f64)> {
    metric_bounds(metric).map(|(lo, hi)| (lo * scale, hi * scale))
}

/// "n=3", or "n=2–3" where cells differ.
fn n_label(ns: impl IntoIterator<Item = usize>) -> String {
    let ns: Vec<usize> = ns.into_iter().collect();
    match (ns.iter().min(), ns.iter().max()) {
        (Some(a), Some(b)) if a == b => format!("n={a}"),
        (Some(a), Some(b)) => format!("n={a}–{b}"),
        _ => "n=0".into(),
    }
}

/// What the error bars of `cells` are, for a title.
fn error_bar_note(cells: &[&Cell<'_>]) -> String {
    let n = n_label(cells.iter().map(|c| c.runs.len()));
    let with_ci = cells.iter().filter(|c| c.ci.is_some()).count();
    if with_ci == cells.len() {
        format!("mean ± {CI_NAME} ({n})")
    } else if with_ci == 0 {
        format!("mean over seeds ({n}), no error bars (an interval needs 2 seeds)")
    } else {
        format!("mean ± {CI_NAME} ({n}; no bar where n=1)")
    }
}

fn at_note(at: MetricAt) -> &'static str {
    match at {
        MetricAt::Best => "best dev evaluation of each run",
        MetricAt::Final => "last dev evaluation of each run",
    }
}

// ---------------------------------------------------------------------------------------------
// The plan shared by a sweep's figures

/// Method of a row, without its budget ("LoRA", "AdaLoRA").
fn method_name(run: &RunRecord) -> String {
    match run.config.method {
        Method::Lora if !run.config.lora.rank_pattern.is_empty() => "LoRA fixed pattern".into(),
        Method::Lora => "LoRA".into(),
        Method::AdaLora => "AdaLoRA".into(),
        _ => run.method_label(),
    }
}

/// Hue family of a method: LoRA blues, AdaLoRA oranges, the rest greens.
fn family(run: &RunRecord) -> usize {
    match run.config.method {
        Method::Lora => 0,
        Method::AdaLora => 1,
        _ => 2,
    }
}

/// One table row of a sweep.
struct RowInfo {
    label: String,
    /// "LoRA r=8" / "AdaLoRA 12→8".
    method_label: String,
    method: String,
    family: usize,
    /// The varying settings beyond method and budget ("" where none).
    extras: String,
    rank: Option<f64>,
}

impl RowInfo {
    /// Method plus the varying settings: what stays the same across budgets.
    fn setting(&self) -> String {
        if self.extras.is_empty() {
            self.method.clone()
        } else {
            format!("{} ({})", self.method, self.extras)
        }
    }
}

/// Rows, their panels and colours.
struct Layout {
    rows: Vec<RowInfo>,
    /// (panel title, row indices); one untitled panel for up to eight rows.
    panels: Vec<(String, Vec<usize>)>,
    /// Colours keyed by the setting (method and varying settings) rather than the row: each
    /// budget has its own panel, so a setting keeps its colour across the panels.
    by_setting: bool,
    colors: ColorMap,
}

fn rank_text(r: f64) -> String {
    if (r - r.round()).abs() < 1e-6 {
        format!("{}", r.round() as i64)
    } else {
        format!("{r:.2}")
    }
}

impl Layout {
    fn of(study: &Study) -> Self {
        let rows: Vec<RowInfo> = study
            .groups()
            .into_iter()
            .filter_map(|g| {
                let e = study.entries.iter().find(|e| e.group == g)?;
                let method_label = e.run.method_label();
                let extras = g
                    .strip_prefix(&method_label)
                    .unwrap_or("")
                    .trim()
                    .trim_start_matches('(')
                    .trim_end_matches(')')
                    .to_string();
                Some(RowInfo {
                    method: method_name(&e.run),
                    family: family(&e.run),
                    method_label,
                    extras,
                    rank: e.run.mean_final_rank(),
                    label: g,
                })
            })
            .collect();
        let panels = Self::plan(&rows);
        let by_setting = Self::colour_by_setting(&rows, &panels);
        let items: Vec<(String, usize, String)> = rows
            .iter()
            .flat_map(|r| {
                let member = if by_setting {
                    r.setting()
                } else {
                    r.label.clone()
                };
                [
                    (r.label.clone(), r.family, member.clone()),
                    (r.setting(), r.family, member),
                ]
            })
            .collect();
        // A setting's own name (the metric-vs-budget lines) gets its first row's colour.
        let mut colors = ColorMap::by_family(&items);
        if !by_setting {
            for r in &rows {
                if let Some(first) = rows.iter().find(|o| o.setting() == r.setting()) {
                    colors.insert(&r.setting(), colors.color_of(&first.label));
                }
            }
        }
        Layout {
            rows,
            panels,
            by_setting,
            colors,
        }
    }

    /// Colours can stand for settings when there are several panels and no setting appears
    /// twice in one.
    fn colour_by_setting(rows: &[RowInfo], panels: &[(String, Vec<usize>)]) -> bool {
        panels.len() > 1
            && panels.iter().all(|(_, idx)| {
                let mut settings: Vec<String> = idx.iter().map(|&i| rows[i].setting()).collect();
                settings.sort();
                settings.windows(2).all(|w| w[0] != w[1])
            })
    }

    /// Up to eight rows: one panel. More: a panel per final budget (neighbouring budgets
    /// merged while they fit eight rows, a budget with more rows cut into balanced chunks).
    fn plan(rows: &[RowInfo]) -> Vec<(String, Vec<usize>)> {
        let all: Vec<usize> = (0..rows.len()).collect();
        if rows.len() <= MAX_SERIES_PER_PANEL {
            return vec![(String::new(), all)];
        }
        let mut buckets: Vec<(Option<f64>, Vec<usize>)> = Vec::new();
        for (i, r) in rows.iter().enumerate() {
            match buckets.iter_mut().find(|(k, _)| match (k, r.rank) {
                (Some(a), Some(b)) => (*a - b).abs() < 1e-6,
                (None, None) => true,
                _ => false,
            }) {
                Some((_, v)) => v.push(i),
                None => buckets.push((r.rank, vec![i])),
            }
        }
        buckets.sort_by(|a, b| match (a.0, b.0) {
            (Some(x), Some(y)) => x.total_cmp(&y),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => std::cmp::Ordering::Equal,
        });
        let name = |ranks: &[Option<f64>]| -> String {
            let known: Vec<String> = ranks.iter().flatten().map(|r| rank_text(*r)).collect();
            match known.len() {
                0 => "final rank unknown".into(),
                1 => format!("final rank {} per matrix", known[0]),
                _ => format!("final rank {} per matrix", known.join(", ")),
            }
        };
        // (ranks, rows, may take more rows).
        let mut panels: Vec<(Vec<Option<f64>>, Vec<usize>, bool)> = Vec::new();
        for (rank, idx) in buckets {
            if idx.len() > MAX_SERIES_PER_PANEL {
                for c in chunk_balanced(&idx, MAX_SERIES_PER_PANEL) {
                    panels.push((vec![rank], c, false));
                }
                continue;
            }
            match panels.last_mut() {
                Some((ranks, v, true)) if v.len() + idx.len() <= MAX_SERIES_PER_PANEL => {
                    ranks.push(rank);
                    v.extend(idx);
                }
                _ => panels.push((vec![rank], idx, true)),
            }
        }
        let count = |ranks: &Vec<Option<f64>>| panels.iter().filter(|(r, _, _)| r == ranks).count();
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        panels
            .iter()
            .map(|(ranks, idx, _)| {
                let mut title = name(ranks);
                if count(ranks) > 1 {
                    let k = seen.entry(title.clone()).or_default();
                    *k += 1;
                    title = format!("{title} ({}/{})", k, count(ranks));
                }
                (title, idx.clone())
            })
            .collect()
    }

    /// A panel title that also names the rows' methods when colours stand for settings.
    fn panel_title(&self, panel: usize) -> String {
        let (title, idx) = &self.panels[panel];
        if !self.by_setting {
            return title.clone();
        }
        let mut methods: Vec<&str> = Vec::new();
        for &i in idx {
            let m = self.rows[i].method_label.as_str();
            if !methods.contains(&m) {
                methods.push(m);
            }
        }
        format!("{title}: {}", methods.join(", "))
    }

    /// The name a row has in a legend.
    fn legend_name(&self, row: usize) -> String {
        if self.by_setting {
            self.rows[row].setting()
        } else {
            self.rows[row].label.clone()
        }
    }

    fn color(&self, row: usize) -> RGBColor {
        self.colors.color_of(&self.rows[row].label)
    }
}

// ---------------------------------------------------------------------------------------------
// Heatmaps

fn heatmap(
    grid: &LayerGrid,
    title: &str,
    vmax: Option<f64>,
    out: &Path,
) -> anyhow::Result<Vec<PathBuf>> {
    Ok(save(
        &RankHeatmap {
            modules: &grid.rows,
            values: &grid.values,
            title,
            vmax,
            x_desc: None,
            bar_desc: None,
        },
        out,
    )?)
}

/// The largest initial rank in a rank_pattern.json (the top of a run's rank scale).
fn max_init_rank(path: &Path) -> Option<f64> {
    let text = std::fs::read_to_string(path).ok()?;
    let doc: serde_json::Value = serde_json::from_str(&text).ok()?;
    doc["modules"]
        .as_array()?
        .iter()
        .filter_map(|m| m["init_rank"].as_u64())
        .max()
        .map(|r| r as f64)
}

/// Final rank per matrix of one AdaLoRA run, on the scale 0 … its initial rank.
pub fn run_heatmap(run: &Path, out: &Path) -> anyhow::Result<Vec<PathBuf>> {
    run_heatmap_scaled(run, out, None)
}

/// [`run_heatmap`] with the top of the colour scale given (`None`: the run's initial rank, or
/// its largest final rank where the pattern does not say).
pub fn run_heatmap_scaled(
    run: &Path,
    out: &Path,
    vmax: Option<f64>,
) -> anyhow::Result<Vec<PathBuf>> {
    let path = RunDir::new(run).rank_pattern();
    let p = RankPattern::read(&path)
        .with_context(|| format!("{} (only AdaLoRA runs have one)", path.display()))?;
    let record = RunRecord::read(run).ok();
    // A copied run folder (results/glue_cola) may have a summary but no config.
    let task = record.as_ref().map(|r| r.summary.task.clone()).or_else(|| {
        let text = std::fs::read_to_string(RunDir::new(run).summary()).ok()?;
        let doc: serde_json::Value = serde_json::from_str(&text).ok()?;
        doc["task"].as_str().map(str::to_string)
    });
    let matrices = p.modules.len().max(1);
    let init = max_init_rank(&path);
    let method = match (&record, init) {
        (Some(r), _) => r.method_label(),
        (None, Some(i)) => format!(
            "AdaLoRA {}→{}",
            rank_text(i),
            rank_text(p.budget as f64 / matrices as f64)
        ),
        (None, None) => "AdaLoRA".into(),
    };
    let mut context = vec![method];
    if let Some(t) = task {
        context.insert(0, t);
    }
    let title = format!(
        "{}: final rank per matrix (n=1)\n{} · budget b(T)={} ({} per matrix), total rank {} at \
         step {}",
        run_name(run),
        context.join(" · "),
        p.budget,
        rank_text(p.budget as f64 / matrices as f64),
        p.total_rank,
        p.step
    );
    let vmax = vmax.or(init);
    heatmap(&LayerGrid::mean_of(&[&p]), &title, vmax, out)
}

/// The mean-rank heatmap of every AdaLoRA row × task, all on one colour scale.
fn sweep_heatmaps(study: &Study, out: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut grids = Vec::new();
    for g in study.groups() {
        for t in study.tasks() {
            let Some(grid) = rank_grid(study, &g, Some(&t)) else {
                continue;
            };
            let patterns: Vec<&RankPattern> = study
                .entries
                .iter()
                .filter(|e| e.group == g && e.run.summary.task == t)
                .filter_map(|e| e.run.pattern.as_ref())
                .collect();
            grids.push((g.clone(), t, grid, patterns));
        }
    }
    let vmax = grids
        .iter()
        .map(|(_, _, grid, _)| RankHeatmap::max_of(&grid.values))
        .fold(1.0, f64::max);
    let mut written = Vec::new();
    for (g, t, grid, patterns) in &grids {
        let mut budgets: Vec<usize> = patterns.iter().map(|p| p.budget).collect();
        budgets.sort();
        budgets.dedup();
        let matrices = patterns.first().map_or(1, |p| p.modules.len().max(1));
        let budget = match budgets.as_slice() {
            [b] => format!(
                "budget b(T)={b} ({} per matrix)",
                rank_text(*b as f64 / matrices as f64)
            ),
            _ => format!(
                "budgets b(T)={}",
                budgets
                    .iter()
                    .map(|b| b.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        let title = format!(
            "{t} · {g}\nmean final rank per matrix over n={} runs (all seeds and learning rates)\n\
             {budget} · colour scale shared by the sweep's heatmaps",
            patterns.len()
        );
        let name = format!("rank_heatmap_{}_{}.png", file_stem(g), file_stem(t));
        written.extend(heatmap(grid, &title, Some(vmax), &out.join(name))?);
    }
    Ok(written)
}

// ---------------------------------------------------------------------------------------------
// Budget schedule of a run

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
            y_bounds: Some((0.0, f64::INFINITY)),
            ..LinePlot::default()
        },
        out,
    )?)
}

// ---------------------------------------------------------------------------------------------
// Curves

/// Splits of metrics.csv that are not dev evaluations.
const NOT_DEV: [&str; 2] = ["train", "selection"];

/// The main metric of a run: its summary's, or the first metric column of its first dev row.
fn main_metric(rows: &[MetricsRow], record: Option<&RunRecord>) -> String {
    record
        .map(|r| r.summary.main_metric.clone())
        .or_else(|| {
            rows.iter()
                .find(|r| !NOT_DEV.contains(&r.split.as_str()))
                .and_then(|r| {
                    r.values
                        .keys()
                        .find(|k| !FIXED_COLUMNS.contains(&k.as_str()))
                        .cloned()
                })
        })
        .unwrap_or_default()
}

/// The curves of one run: (step, dev main metric) on its first dev split and (step, training
/// task loss).
struct RunCurves {
    metric: String,
    dev: Vec<(f64, f64)>,
    loss: Vec<(f64, f64)>,
}

fn run_curves(dir: &Path) -> anyhow::Result<RunCurves> {
    let rows = read_metrics(&RunDir::new(dir).metrics())?;
    let record = RunRecord::read(dir).ok();
    let metric = main_metric(&rows, record.as_ref());
    let first_dev = rows
        .iter()
        .find(|r| !NOT_DEV.contains(&r.split.as_str()))
        .map(|r| r.split.clone());
    let dev = rows
        .iter()
        .filter(|r| Some(&r.split) == first_dev.as_ref())
        .filter_map(|r| r.values.get(&metric).map(|v| (r.step as f64, *v)))
        .filter(|(_, v)| v.is_finite())
        .collect();
    let loss = rows
        .iter()
        .filter(|r| r.split == "train")
        .filter_map(|r| r.values.get("task_loss").map(|v| (r.step as f64, *v)))
        .filter(|(_, v)| v.is_finite())
        .collect();
    Ok(RunCurves { metric, dev, loss })
}

/// `(step, low, high)` of a ±1 std band.
type Band = (f64, f64, f64);

/// A line of the metric-vs-budget figure: its name and `(rank, row, cell index)` points.
type BudgetLine = (String, Vec<(f64, usize, usize)>);

/// Mean over runs at each step (steps in order), with a ±1 std band where two or more runs
/// have the step.
fn mean_band(curves: &[&[(f64, f64)]]) -> (Vec<(f64, f64)>, Vec<Band>) {
    let mut by_step: BTreeMap<i64, Vec<f64>> = BTreeMap::new();
    for c in curves {
        for &(x, y) in *c {
            by_step.entry(x.round() as i64).or_default().push(y);
        }
    }
    let mut mean = Vec::new();
    let mut band = Vec::new();
    for (x, ys) in by_step {
        let (m, sd) = crate::report::mean_std(&ys);
        mean.push((x as f64, m));
        if let Some(sd) = sd {
            band.push((x as f64, m - sd, m + sd));
        }
    }
    (mean, band)
}

fn curves_note(scope: &str, most: usize) {
    eprintln!(
        "note: {scope}: no curves figure (runs have at most {most} dev evaluation(s), a curve \
         needs {MIN_CURVE_POINTS}); set train.eval_every so each run evaluates at least \
         {MIN_CURVE_POINTS} times"
    );
}

/// A line figure, as small multiples when there are several panels.
fn save_lines(
    title: &str,
    x_desc: &str,
    y_desc: &str,
    y_bounds: Option<(f64, f64)>,
    panels: &[(String, Vec<Series>)],
    out: &Path,
) -> anyhow::Result<Vec<PathBuf>> {
    if let [(_, series)] = panels {
        return Ok(save(
            &LinePlot {
                title,
                x_desc,
                y_desc,
                series,
                y_bounds,
                ..LinePlot::default()
            },
            out,
        )?);
    }
    let panels: Vec<Panel> = panels
        .iter()
        .map(|(t, series)| {
            Panel::Lines(LinePlot {
                title: t,
                x_desc,
                y_desc,
                series,
                y_bounds,
                ..LinePlot::default()
            })
        })
        .collect();
    Ok(save(
        &SmallMultiples {
            title,
            panels: &panels,
            columns: None,
        },
        out,
    )?)
}

/// Training loss and the dev main metric of several runs overlaid: `<out>_loss` and
/// `<out>_dev`. Runs with fewer than [`MIN_CURVE_POINTS`] dev evaluations are left out (a
/// note says so); none left: no figure.
pub fn curves(runs: &[(String, PathBuf)], out: &Path, title: &str) -> anyhow::Result<Vec<PathBuf>> {
    let mut kept = Vec::new();
    let mut most = 0;
    for (name, dir) in runs {
        let c = run_curves(dir)?;
        most = most.max(c.dev.len());
        if c.dev.len() >= MIN_CURVE_POINTS {
            kept.push((name.clone(), c));
        } else {
            eprintln!(
                "note: {name}: {} dev evaluation(s), fewer than {MIN_CURVE_POINTS}: not drawn \
                 as a curve (set train.eval_every)",
                c.dev.len()
            );
        }
    }
    if kept.is_empty() {
        curves_note(title, most);
        return Ok(Vec::new());
    }
    let names: Vec<&str> = kept.iter().map(|(n, _)| n.as_str()).collect();
    let colors = ColorMap::new(&names);
    let metric = kept[0].1.metric.clone();
    let series = |dev: bool| -> Vec<Series> {
        kept.iter()
            .map(|(name, c)| Series {
                name: name.clone(),
                points: if dev { c.dev.clone() } else { c.loss.clone() },
                color: Some(colors.color_of(name)),
                ..Series::default()
            })
            .collect()
    };
    let panels = |dev: bool| -> Vec<(String, Vec<Series>)> {
        let all = series(dev);
        let chunks = chunk_balanced(&all, MAX_SERIES_PER_PANEL);
        let k = chunks.len();
        chunks
            .into_iter()
            .enumerate()
            .map(|(i, s)| {
                let t = if k > 1 {
                    format!("runs {}/{k}", i + 1)
                } else {
                    String::new()
                };
                (t, s)
            })
            .collect()
    };
    let stem = out.with_extension("");
    let mut written = save_lines(
        &format!("{title}: training loss"),
        "optimizer step",
        "task loss (mean over the log window)",
        Some((0.0, f64::INFINITY)),
        &panels(false),
        &PathBuf::from(format!("{}_loss.png", stem.display())),
    )?;
    written.extend(save_lines(
        &format!("{title}: dev {}", metric_name(&metric)),
        "optimizer step",
        &format!("dev {}", metric_name(&metric)),
        metric_bounds(&metric),
        &panels(true),
        &PathBuf::from(format!("{}_dev.png", stem.display())),
    )?);
    Ok(written)
}

/// Per task: every row's runs (at the cell's chosen learning rate) as mean ± 1 std over seeds.
fn sweep_curves(
    study: &Study,
    layout: &Layout,
    task: &str,
    out: &Path,
) -> anyhow::Result<Vec<PathBuf>> {
    let mut rows: BTreeMap<usize, Vec<RunCurves>> = BTreeMap::new();
    let mut most = 0;
    let mut metric = String::new();
    for (i, r) in layout.rows.iter().enumerate() {
        let Some(cell) = study.cell(&r.label, task) else {
            continue;
        };
        for e in &cell.runs {
            let c = run_curves(&e.run.dir)?;
            most = most.max(c.dev.len());
            if c.dev.len() >= MIN_CURVE_POINTS {
                metric = c.metric.clone();
                rows.entry(i).or_default().push(c);
            }
        }
    }
    if rows.is_empty() {
        curves_note(&format!("{} {task}", study.name), most);
        return Ok(Vec::new());
    }
    let n = n_label(rows.values().map(Vec::len));
    let panels = |dev: bool| -> Vec<(String, Vec<Series>)> {
        layout
            .panels
            .iter()
            .enumerate()
            .filter_map(|(p, (_, idx))| {
                let series: Vec<Series> = idx
                    .iter()
                    .filter_map(|i| {
                        let runs = rows.get(i)?;
                        let curves: Vec<&[(f64, f64)]> = runs
                            .iter()
                            .map(|c| if dev { &c.dev[..] } else { &c.loss[..] })
                            .collect();
                        let (points, band) = mean_band(&curves);
                        Some(Series {
                            name: layout.legend_name(*i),
                            points,
                            band: (!band.is_empty()).then_some(band),
                            color: Some(layout.color(*i)),
                            ..Series::default()
                        })
                    })
                    .collect();
                (!series.is_empty()).then(|| (layout.panel_title(p), series))
            })
            .collect()
    };
    let what = format!("mean ± 1 std over seeds ({n}), lr chosen per cell");
    let mut written = save_lines(
        &format!("{}: {task} training loss\n{what}", study.name),
        "optimizer step",
        "task loss (mean over the log window)",
        Some((0.0, f64::INFINITY)),
        &panels(false),
        &out.join(format!("curves_{}_loss.png", file_stem(task))),
    )?;
    written.extend(save_lines(
        &format!(
            "{}: {task} dev {} during training\n{what}",
            study.name,
            metric_name(&metric)
        ),
        "optimizer step",
        &format!("dev {}", metric_name(&metric)),
        metric_bounds(&metric),
        &panels(true),
        &out.join(format!("curves_{}_dev.png", file_stem(task))),
    )?);
    Ok(written)
}

// ---------------------------------------------------------------------------------------------
// Run and sweep entry points

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
    let layout = Layout::of(study);
    let tasks = study.tasks();
    if kind.wants(Kind::Heatmap) {
        written.extend(sweep_heatmaps(study, out)?);
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
            written.extend(sweep_curves(study, &layout, t, out)?);
        }
    }
    if kind.wants(Kind::MetricVsBudget) {
        for t in &tasks {
            written.extend(metric_vs_budget(study, &layout, t, out)?);
        }
    }
    if kind.wants(Kind::Bars) {
        written.extend(bars(study, &layout, &tasks, out)?);
    }
    Ok(written)
}

/// Main metric against the mean final rank, one line per setting (method and the settings
/// that vary), points dodged apart; nothing where every line has a single budget (the bar
/// chart says it).
fn metric_vs_budget(
    study: &Study,
    layout: &Layout,
    task: &str,
    out: &Path,
) -> anyhow::Result<Vec<PathBuf>> {
    let metric = main_metric_of(study, task);
    let mut cells: Vec<Cell<'_>> = Vec::new();
    // (setting, [(rank, row, cell index)]) in row order.
    let mut lines: Vec<BudgetLine> = Vec::new();
    for (i, r) in layout.rows.iter().enumerate() {
        let (Some(rank), Some(c)) = (r.rank, study.cell(&r.label, task)) else {
            continue;
        };
        if !c.mean.is_finite() {
            continue;
        }
        cells.push(c);
        let point = (rank, i, cells.len() - 1);
        match lines.iter_mut().find(|(s, _)| *s == r.setting()) {
            Some((_, pts)) => pts.push(point),
            None => lines.push((r.setting(), vec![point])),
        }
    }
    // A setting with two rows at one budget (AdaLoRA 12→8 and 8→8) is no line: its rows are
    // points of their own.
    let mut series_rows: Vec<BudgetLine> = Vec::new();
    for (setting, mut pts) in lines {
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
        if pts.windows(2).any(|w| (w[0].0 - w[1].0).abs() < 1e-9) {
            for p in pts {
                series_rows.push((layout.rows[p.1].label.clone(), vec![p]));
            }
        } else {
            series_rows.push((setting, pts));
        }
    }
    let distinct_x = |pts: &[(f64, usize, usize)]| {
        let mut xs: Vec<f64> = pts.iter().map(|p| p.0).collect();
        xs.dedup_by(|a, b| (*a - *b).abs() < 1e-9);
        xs.len()
    };
    if series_rows.iter().all(|(_, pts)| distinct_x(pts) < 2) {
        return Ok(Vec::new());
    }
    let series: Vec<Series> = series_rows
        .iter()
        .map(|(name, pts)| Series {
            name: name.clone(),
            points: pts.iter().map(|p| (p.0, 100.0 * cells[p.2].mean)).collect(),
            intervals: Some(
                pts.iter()
                    .map(|p| cells[p.2].ci.map(|(l, h)| (100.0 * l, 100.0 * h)))
                    .collect(),
            ),
            markers: true,
            color: Some(layout.colors.color_of(name)),
            ..Series::default()
        })
        .collect();
    let xs: Vec<f64> = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .collect();
    let (xmin, xmax) = xs
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &x| {
            (a.min(x), b.max(x))
        });
    let log2_x = xmin > 0.0 && xmax / xmin >= 4.0;
    let cell_refs: Vec<&Cell<'_>> = cells.iter().collect();
    let title = format!(
        "{}: {task} dev {} vs final budget\n{}, {}; points of one budget dodged apart",
        study.name,
        metric_name(&metric),
        error_bar_note(&cell_refs),
        at_note(study.at)
    );
    let x_desc = if log2_x {
        "mean final rank per adapted matrix (log scale)"
    } else {
        "mean final rank per adapted matrix"
    };
    let y_desc = format!("dev {} (×100)", metric_name(&metric));
    let y_bounds = scaled_bounds(&metric, 100.0);
    let path = out.join(format!("metric_vs_budget_{}.png", file_stem(task)));
    // Many lines: a panel per varying setting (LoRA and AdaLoRA of one setting side by
    // side) where that gives panels of a few lines, else balanced chunks.
    let mut by_extras: Vec<(String, Vec<Series>)> = Vec::new();
    for ((_, pts), s) in series_rows.iter().zip(&series) {
        let extras = &layout.rows[pts[0].1].extras;
        match by_extras.iter_mut().find(|(e, _)| e == extras) {
            Some((_, v)) => v.push(s.clone()),
            None => by_extras.push((extras.clone(), vec![s.clone()])),
        }
    }
    let (titles, chunks): (Vec<String>, Vec<Vec<Series>>) = if series.len() > 4
        && by_extras.len() > 1
        && by_extras
            .iter()
            .all(|(_, v)| v.len() <= MAX_SERIES_PER_PANEL)
    {
        by_extras
            .into_iter()
            .map(|(e, v)| (if e.is_empty() { "defaults".into() } else { e }, v))
            .unzip()
    } else {
        let chunks = chunk_balanced(&series, MAX_SERIES_PER_PANEL);
        let k = chunks.len();
        (
            (1..=k).map(|i| format!("settings {i}/{k}")).collect(),
            chunks,
        )
    };
    // Dodged points spread over at most 6% of the axis.
    let widest = chunks.iter().map(Vec::len).max().unwrap_or(1);
    let dodge = if widest > 1 {
        (0.06 / (widest - 1) as f64).min(0.02)
    } else {
        0.0
    };
    if chunks.len() == 1 {
        return Ok(save(
            &LinePlot {
                title: &title,
                x_desc,
                y_desc: &y_desc,
                series: &series,
                y_bounds,
                dodge,
                log2_x,
                ..LinePlot::default()
            },
            &path,
        )?);
    }
    let panels: Vec<Panel> = chunks
        .iter()
        .zip(&titles)
        .map(|(s, t)| {
            Panel::Lines(LinePlot {
                title: t,
                x_desc,
                y_desc: &y_desc,
                series: s,
                y_bounds,
                dodge,
                log2_x,
                ..LinePlot::default()
            })
        })
        .collect();
    Ok(save(
        &SmallMultiples {
            title: &title,
            panels: &panels,
            columns: None,
        },
        &path,
    )?)
}

/// Every row's main metric per task (groups = tasks), error bars the cells' 95% CIs; small
/// multiples by budget for more than eight rows. Written as `lora_vs_adalora.png` (the name
/// earlier builds used).
fn bars(
    study: &Study,
    layout: &Layout,
    tasks: &[String],
    out: &Path,
) -> anyhow::Result<Vec<PathBuf>> {
    let metrics: Vec<String> = tasks.iter().map(|t| main_metric_of(study, t)).collect();
    let one_metric = metrics.windows(2).all(|w| w[0] == w[1]);
    let groups: Vec<String> = if one_metric {
        tasks.to_vec()
    } else {
        tasks
            .iter()
            .zip(&metrics)
            .map(|(t, m)| format!("{t} ({})", metric_name(m)))
            .collect()
    };
    let mut cells: Vec<Cell<'_>> = Vec::new();
    let mut values: BTreeMap<usize, Vec<Option<Bar>>> = BTreeMap::new();
    for (i, r) in layout.rows.iter().enumerate() {
        let v: Vec<Option<Bar>> = tasks
            .iter()
            .map(|t| {
                let c = study.cell(&r.label, t)?;
                let bar = c.mean.is_finite().then(|| Bar {
                    mean: 100.0 * c.mean,
                    interval: c.ci.map(|(l, h)| (100.0 * l, 100.0 * h)),
                });
                cells.push(c);
                bar
            })
            .collect();
        if v.iter().any(Option::is_some) {
            values.insert(i, v);
        }
    }
    if values.is_empty() {
        return Ok(Vec::new());
    }
    let cell_refs: Vec<&Cell<'_>> = cells.iter().collect();
    let metric = if one_metric {
        format!("dev {}", metric_name(&metrics[0]))
    } else {
        "dev main metric".into()
    };
    let title = format!(
        "{}: {metric} by task, every row\n{}, {}, lr chosen per cell",
        study.name,
        error_bar_note(&cell_refs),
        at_note(study.at)
    );
    let y_desc = format!("{metric} (×100)");
    let y_bounds = metrics
        .iter()
        .filter_map(|m| scaled_bounds(m, 100.0))
        .reduce(|a, b| (a.0.min(b.0), a.1.max(b.1)));
    let panels: Vec<(String, Vec<BarSeries>)> = (0..layout.panels.len())
        .filter_map(|p| {
            let series: Vec<BarSeries> = layout.panels[p]
                .1
                .iter()
                .filter_map(|i| {
                    Some(BarSeries {
                        name: layout.legend_name(*i),
                        values: values.get(i)?.clone(),
                        color: Some(layout.color(*i)),
                    })
                })
                .collect();
            (!series.is_empty()).then(|| (layout.panel_title(p), series))
        })
        .collect();
    let path = out.join("lora_vs_adalora.png");
    if let [(_, series)] = panels.as_slice() {
        return Ok(save(
            &GroupedBars {
                title: &title,
                y_desc: &y_desc,
                groups: &groups,
                series,
                y_bounds,
            },
            &path,
        )?);
    }
    let panels: Vec<Panel> = panels
        .iter()
        .map(|(t, series)| {
            Panel::Bars(GroupedBars {
                title: t,
                y_desc: &y_desc,
                groups: &groups,
                series,
                y_bounds,
            })
        })
        .collect();
    Ok(save(
        &SmallMultiples {
            title: &title,
            panels: &panels,
            columns: None,
        },
        &path,
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(method: &str, label: &str, extras: &str, rank: f64) -> RowInfo {
        RowInfo {
            label: if extras.is_empty() {
                label.to_string()
            } else {
                format!("{label} ({extras})")
            },
            method_label: label.to_string(),
            method: method.to_string(),
            family: usize::from(method == "AdaLoRA"),
            extras: extras.to_string(),
            rank: Some(rank),
        }
    }

    /// ablation_rank_targets: 5 budgets × 4 target sets × 2 methods.
    fn rank_targets() -> Vec<RowInfo> {
        let mut rows = Vec::new();
        for (r, init) in [(1, 2), (2, 3), (4, 6), (8, 12), (16, 24)] {
            for t in ["qv", "qkvo", "ff", "all"] {
                let extras = format!("target.modules={t}");
                rows.push(row("LoRA", &format!("LoRA r={r}"), &extras, r as f64));
                rows.push(row(
                    "AdaLoRA",
                    &format!("AdaLoRA {init}→{r}"),
                    &extras,
                    r as f64,
                ));
            }
        }
        rows
    }

    #[test]
    fn forty_rows_get_a_panel_per_budget_and_colours_per_setting() {
        let rows = rank_targets();
        let panels = Layout::plan(&rows);
        assert_eq!(panels.len(), 5);
        assert!(panels.iter().all(|(_, idx)| idx.len() == 8));
        assert_eq!(panels[0].0, "final rank 1 per matrix");
        assert_eq!(panels[4].0, "final rank 16 per matrix");
        assert!(Layout::colour_by_setting(&rows, &panels));
    }

    #[test]
    fn few_rows_share_one_panel_coloured_per_row() {
        let rows = vec![
            row("LoRA", "LoRA r=2", "", 2.0),
            row("AdaLoRA", "AdaLoRA 3→2", "", 2.0),
            row("LoRA", "LoRA r=8", "", 8.0),
            row("AdaLoRA", "AdaLoRA 12→8", "", 8.0),
        ];
        let panels = Layout::plan(&rows);
        assert_eq!(panels, vec![(String::new(), vec![0, 1, 2, 3])]);
        assert!(!Layout::colour_by_setting(&rows, &panels));
    }

    #[test]
    fn a_large_budget_is_cut_into_balanced_panels() {
        let rows: Vec<RowInfo> = (0..10)
            .map(|i| row("AdaLoRA", &format!("AdaLoRA {i}"), "", 8.0))
            .collect();
        let panels = Layout::plan(&rows);
        let sizes: Vec<usize> = panels.iter().map(|(_, v)| v.len()).collect();
        assert_eq!(sizes, [5, 5]);
        assert_eq!(panels[1].0, "final rank 8 per matrix (2/2)");
    }

    #[test]
    fn curves_average_over_seeds_with_a_band() {
        let a = [(10.0, 0.5), (20.0, 0.7)];
        let b = [(10.0, 0.7), (20.0, 0.7), (30.0, 0.8)];
        let (mean, band) = mean_band(&[&a, &b]);
        assert_eq!(mean.len(), 3);
        assert!((mean[0].1 - 0.6).abs() < 1e-12);
        // Steps two runs have get a band; a step one run has does not.
        assert_eq!(band.len(), 2);
        assert!(band[0].1 < 0.6 && band[0].2 > 0.6);
        assert_eq!(band[1].1, band[1].2);
    }
}
