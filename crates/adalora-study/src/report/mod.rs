//! `adalora report SWEEP`: a table in the style of the AdaLoRA paper's Table 1 (rows = method @
//! budget, columns = tasks, centre ± 95% CI over seeds, best per column in bold) as Markdown,
//! CSV and LaTeX; paired comparisons with intervals, tests and Holm's correction
//! ([`compare`]); the rank allocation as a measured claim ([`allocation`]).
//!
//! This module reads a sweep into [`Study`] and chooses each cell's learning rate by the
//! sweep's selection [`Protocol`].

pub mod allocation;
pub mod compare;
mod latex;
mod markdown;
mod table_csv;

use std::collections::{BTreeMap, BTreeSet};

use adalora_train::io::atomic_write;
use adalora_train::provenance::Provenance;
use adalora_train::Method;
use anyhow::{bail, Context};

use crate::manifest::{Row, Status, SweepDir};
use crate::report_settings::{Center, Protocol, ReportSettings};
use crate::runs::{Baselines, LayerGrid, MetricAt, RunRecord};
use crate::stats;

pub use compare::{pairs, Pair};
pub use latex::latex;
pub use markdown::markdown;
pub use table_csv::csv_text;

/// Where `adalora analyze SWEEP` writes the section the report includes.
pub const ANALYSIS_SECTION: &str = "analysis/stability.md";

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
    pub settings: ReportSettings,
    /// The protocol every run was trained and is reported under.
    pub protocol: Protocol,
    /// Wall time of every recorded attempt (manifest), in seconds.
    pub wall_seconds: f64,
}

fn settings_map(row: &Row) -> BTreeMap<String, String> {
    row.settings
        .iter()
        .filter_map(|s| s.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Keys that take different values within one task (settings that only follow the task, like
/// its subset size or epochs, do not distinguish rows).
fn varying_keys(maps: &[BTreeMap<String, String>]) -> Vec<String> {
    let keys: BTreeSet<&String> = maps.iter().flat_map(|s| s.keys()).collect();
    keys.into_iter()
        .filter(|k| !NOT_A_ROW_KEY.contains(&k.as_str()))
        .filter(|k| {
            let mut by_task: BTreeMap<Option<&String>, BTreeSet<Option<&String>>> = BTreeMap::new();
            for s in maps {
                by_task.entry(s.get("task")).or_default().insert(s.get(*k));
            }
            by_task.values().any(|values| values.len() > 1)
        })
        .cloned()
        .collect()
}

/// "LoRA r=2" plus the varying settings that apply to the run's method.
fn group_label(run: &RunRecord, varying: &[String], settings: &BTreeMap<String, String>) -> String {
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
                .get(k)
                .map(|v| format!("{k}={}", v.trim_matches('"')))
        })
        .collect();
    if extras.is_empty() {
        run.method_label()
    } else {
        format!("{} ({})", run.method_label(), extras.join(", "))
    }
}

impl Study {
    pub fn read(sweep: &SweepDir) -> anyhow::Result<Self> {
        let m = sweep.read()?;
        let settings = m.report_settings();
        let maps: Vec<BTreeMap<String, String>> = m.rows.iter().map(settings_map).collect();
        let varying = varying_keys(&maps);
        let mut baselines = Baselines::default();
        let mut entries = Vec::new();
        for (row, settings) in m.rows.iter().zip(&maps) {
            if row.status != Status::Done {
                continue;
            }
            let mut run = RunRecord::read(&sweep.run_path(row))?;
            run.baseline = baselines.of(&run);
            let group = group_label(&run, &varying, settings);
            entries.push(Entry {
                row: row.clone(),
                run,
                group,
            });
        }
        let protocol = common_protocol(&entries, settings.protocol)?;
        Ok(Study {
            name: m.name.clone(),
            unfinished: m.rows.len() - entries.len(),
            entries,
            at: MetricAt::default(),
            settings,
            protocol,
            wall_seconds: m.rows.iter().map(|r| r.wall_seconds).sum(),
        })
    }

    /// The same runs under other report settings (`report --settings FILE`: a `[report]` table
    /// that overrides the one the manifest recorded, e.g. to add comparisons to a finished
    /// study). A protocol the runs were not trained under is refused.
    pub fn with_settings(self, settings: ReportSettings) -> anyhow::Result<Self> {
        let protocol = common_protocol(&self.entries, settings.protocol)?;
        Ok(Study {
            settings,
            protocol,
            ..self
        })
    }

    /// The same study read at another evaluation (`report --final`).
    pub fn at(self, at: MetricAt) -> Self {
        Study { at, ..self }
    }

    /// Table rows in first-appearance order.
    pub fn groups(&self) -> Vec<String> {
        first_appearance(self.entries.iter().map(|e| &e.group))
    }

    pub fn tasks(&self) -> Vec<String> {
        first_appearance(self.entries.iter().map(|e| &e.run.summary.task))
    }

    fn runs_of(&self, group: &str, task: &str) -> impl Iterator<Item = &Entry> {
        let (group, task) = (group.to_string(), task.to_string());
        self.entries
            .iter()
            .filter(move |e| e.group == group && e.run.summary.task == task)
    }

    /// The runs of one table cell at its chosen learning rate (each method gets its own, as in
    /// the paper's protocol): the rate with the best mean selection metric — the held-out
    /// split's under `held-out`, the dev split's under `best-dev` — over the tuning seeds
    /// every rate of the grid has (so seeds added later at the chosen rate cannot change the
    /// choice); over all its seeds where the rates share none.
    pub fn cell(&self, group: &str, task: &str) -> Option<Cell<'_>> {
        let mut by_lr: BTreeMap<String, Vec<&Entry>> = BTreeMap::new();
        for e in self.runs_of(group, task) {
            by_lr.entry(lr_key(e.run.config.lr())).or_default().push(e);
        }
        let seeds_of = |runs: &Vec<&Entry>| -> BTreeSet<u64> {
            runs.iter().map(|e| e.run.config.seed).collect()
        };
        let mut common: Option<BTreeSet<u64>> = None;
        for runs in by_lr.values() {
            let s = seeds_of(runs);
            common = Some(match common {
                None => s,
                Some(c) => c.intersection(&s).copied().collect(),
            });
        }
        let common = common.unwrap_or_default();
        let score = |runs: &Vec<&Entry>| -> f64 {
            let values: Vec<f64> = runs
                .iter()
                .filter(|e| common.is_empty() || common.contains(&e.run.config.seed))
                .filter_map(|e| self.selection_value(e))
                .collect();
            stats::mean(&values).unwrap_or(f64::NEG_INFINITY)
        };
        let mut grid: Vec<f64> = by_lr.values().map(|r| r[0].run.config.lr()).collect();
        grid.sort_by(f64::total_cmp);
        let chosen = by_lr
            .values()
            .max_by(|a, b| score(a).total_cmp(&score(b)))?
            .clone();
        let mut cell = Cell::of(chosen, self.at);
        cell.lr_grid = grid;
        cell.tuning_seeds = common.into_iter().collect();
        Some(cell)
    }

    /// What the learning-rate choice reads of a run.
    fn selection_value(&self, e: &Entry) -> Option<f64> {
        let value = match self.protocol {
            Protocol::BestDev => e.run.main_value(self.at),
            Protocol::HeldOut => e.run.selection_value(),
        };
        value.filter(|v| v.is_finite())
    }

    /// Whether a run left its task's constant-prediction baseline by the learned margin
    /// (None where the baseline is unknown).
    pub fn learned(&self, e: &Entry) -> Option<bool> {
        let value = e.run.main_value(self.at)?;
        let baseline = e.run.baseline?;
        Some(value > baseline + self.settings.learned_margin / 100.0)
    }

    /// Every cell of the table in table order: rows, then tasks.
    pub fn cells_in_table_order(&self) -> Vec<((String, String), Cell<'_>)> {
        let tasks = self.tasks();
        self.groups()
            .into_iter()
            .flat_map(|g| tasks.iter().map(move |t| (g.clone(), t.clone())))
            .filter_map(|(g, t)| self.cell(&g, &t).map(|c| ((g, t), c)))
            .collect()
    }

    /// Every cell of the table, keyed by (row, task).
    pub fn cells(&self) -> BTreeMap<(String, String), Cell<'_>> {
        self.cells_in_table_order().into_iter().collect()
    }

    /// The task's constant-prediction baseline (of its first run that has one).
    pub fn baseline_of(&self, task: &str) -> Option<f64> {
        self.entries
            .iter()
            .filter(|e| e.run.summary.task == task)
            .find_map(|e| e.run.baseline)
    }

    /// Whether a cell's centre left its task's baseline by the learned margin (unknown
    /// baselines count as learned: nothing says otherwise).
    pub fn cell_learned(&self, c: &Cell, task: &str) -> bool {
        self.baseline_of(task).is_none_or(|b| {
            c.center(self.settings.center) > b + self.settings.learned_margin / 100.0
        })
    }

    /// Tasks every row has a cell on, and where every such cell learned: what the Avg column
    /// averages (a task no method learns says nothing about the methods).
    pub fn averaged_tasks(&self, cells: &BTreeMap<(String, String), Cell>) -> Vec<String> {
        let groups = self.groups();
        self.tasks()
            .into_iter()
            .filter(|t| {
                groups.iter().all(|g| {
                    cells
                        .get(&(g.clone(), t.clone()))
                        .is_some_and(|c| self.cell_learned(c, t))
                })
            })
            .collect()
    }

    /// A row's mean centre over `tasks` (None if any is missing or none is given).
    pub fn row_average(
        &self,
        group: &str,
        tasks: &[String],
        cells: &BTreeMap<(String, String), Cell>,
    ) -> Option<f64> {
        let centres: Option<Vec<f64>> = tasks
            .iter()
            .map(|t| {
                cells
                    .get(&(group.to_string(), t.clone()))
                    .map(|c| c.center(self.settings.center))
            })
            .collect();
        stats::mean(&centres?)
    }

    /// The row with the best centre on each task.
    pub fn best_per_task(
        &self,
        cells: &BTreeMap<(String, String), Cell>,
    ) -> BTreeMap<String, String> {
        let mut best: BTreeMap<String, (f64, String)> = BTreeMap::new();
        for ((g, t), c) in cells {
            let v = c.center(self.settings.center);
            if v.is_finite() && best.get(t).is_none_or(|(b, _)| v > *b) {
                best.insert(t.clone(), (v, g.clone()));
            }
        }
        best.into_iter().map(|(t, (_, g))| (t, g)).collect()
    }

    /// The provenance of the runs, distinct values in first-appearance order.
    pub fn provenances(&self) -> (Vec<Provenance>, usize) {
        let mut seen: Vec<Provenance> = Vec::new();
        let mut missing = 0;
        for e in &self.entries {
            match e
                .run
                .summary
                .provenance
                .as_ref()
                .or(e.row.provenance.as_ref())
            {
                Some(p) if !seen.contains(p) => seen.push(p.clone()),
                Some(_) => {}
                None => missing += 1,
            }
        }
        (seen, missing)
    }
}

fn first_appearance<'a>(items: impl Iterator<Item = &'a String>) -> Vec<String> {
    let mut seen: Vec<String> = Vec::new();
    for s in items {
        if !seen.contains(s) {
            seen.push(s.clone());
        }
    }
    seen
}

fn lr_key(lr: f64) -> String {
    format!("{lr:e}")
}

/// Every run must have been trained under one protocol, the one `[report]` names if it does.
fn common_protocol(entries: &[Entry], asked: Option<Protocol>) -> anyhow::Result<Protocol> {
    let mut found: BTreeMap<String, &Entry> = BTreeMap::new();
    for e in entries {
        found.entry(e.run.summary.protocol.clone()).or_insert(e);
    }
    if found.len() > 1 {
        let list: Vec<String> = found
            .iter()
            .map(|(p, e)| format!("{p} (e.g. {})", e.run.dir.display()))
            .collect();
        bail!(
            "the runs of this sweep were trained under different selection protocols: {}; \
             a report compares runs chosen one way",
            list.join(", ")
        );
    }
    let runs = match found.keys().next() {
        Some(name) => Some(Protocol::parse(name)?),
        None => None,
    };
    match (runs, asked) {
        (Some(r), Some(a)) if r != a => bail!(
            "[report] protocol = {:?}, but the runs were trained under {:?} (set \
             train.protocol through [report] so both agree)",
            a.name(),
            r.name()
        ),
        (Some(r), _) => Ok(r),
        (None, a) => Ok(a.unwrap_or_default()),
    }
}

/// The runs of one cell and their spread over seeds.
#[derive(Clone, Debug)]
pub struct Cell<'a> {
    pub runs: Vec<&'a Entry>,
    pub at: MetricAt,
    pub mean: f64,
    pub median: f64,
    /// Sample standard deviation (none for one seed).
    pub std: Option<f64>,
    /// 95% Student-t interval of the mean over seeds (none for one seed).
    pub ci: Option<(f64, f64)>,
    /// Every learning rate the sweep tried for this cell, ascending.
    pub lr_grid: Vec<f64>,
    /// The seeds the learning-rate choice compared (every rate has them).
    pub tuning_seeds: Vec<u64>,
}

impl<'a> Cell<'a> {
    fn of(runs: Vec<&'a Entry>, at: MetricAt) -> Self {
        let values: Vec<f64> = runs
            .iter()
            .map(|e| e.run.main_value(at).unwrap_or(f64::NAN))
            .collect();
        Cell {
            runs,
            at,
            mean: stats::mean(&values).unwrap_or(f64::NAN),
            median: stats::median(&values).unwrap_or(f64::NAN),
            std: stats::sample_std(&values),
            ci: stats::t_interval(&values, 0.95),
            lr_grid: Vec::new(),
            tuning_seeds: Vec::new(),
        }
    }

    /// The same runs at another evaluation (the CSV lists best and final side by side).
    pub fn at(&self, at: MetricAt) -> Cell<'a> {
        Cell {
            lr_grid: self.lr_grid.clone(),
            tuning_seeds: self.tuning_seeds.clone(),
            ..Cell::of(self.runs.clone(), at)
        }
    }

    /// The table's centre over seeds.
    pub fn center(&self, center: Center) -> f64 {
        match center {
            Center::Mean => self.mean,
            Center::Median => self.median,
        }
    }

    /// Half-width of the 95% t-interval of the mean (none for a single seed).
    pub fn half_width(&self) -> Option<f64> {
        self.ci.map(|(lo, hi)| (hi - lo) / 2.0)
    }

    /// Runs of the cell that did not leave their task's baseline.
    pub fn runs_at_baseline(&self, study: &Study) -> usize {
        self.runs
            .iter()
            .filter(|e| study.learned(e) == Some(false))
            .count()
    }

    /// Half-width of an error bar: the spread, or none for a single seed.
    pub fn error_bar(&self) -> f64 {
        self.std.unwrap_or(0.0)
    }

    pub fn lr(&self) -> f64 {
        self.runs[0].run.config.lr()
    }

    /// The chosen rate is an end point of a grid of two or more: the optimum may lie outside.
    pub fn lr_at_edge(&self) -> bool {
        self.lr_grid.len() > 1
            && (self.lr() == self.lr_grid[0] || Some(&self.lr()) == self.lr_grid.last())
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
    (stats::mean(v).unwrap_or(f64::NAN), stats::sample_std(v))
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

/// The main metric of a task's runs (its summary's `main_metric`; empty without runs).
pub fn main_metric_of(study: &Study, task: &str) -> String {
    study
        .entries
        .iter()
        .find(|e| e.run.summary.task == task)
        .map(|e| e.run.summary.main_metric.clone())
        .unwrap_or_default()
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

/// Which files `adalora report` writes besides `report.md` and `report.csv`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Format {
    #[default]
    Markdown,
    /// Also `report.tex`, the main table as a booktabs table.
    Latex,
}

impl Format {
    pub fn parse(s: &str) -> anyhow::Result<Self> {
        match s {
            "markdown" | "md" => Ok(Format::Markdown),
            "latex" | "tex" => Ok(Format::Latex),
            other => bail!("unknown --format {other:?}: expected markdown or latex"),
        }
    }
}

/// `report.md`, `report.csv` (and `report.tex`) next to the manifest; returns the Markdown.
pub fn write_report(sweep: &SweepDir, study: &Study, format: Format) -> anyhow::Result<String> {
    let comparisons = compare::comparisons(study)?;
    let mut md = markdown(study, &comparisons);
    if let Some(section) = analysis_section(sweep)? {
        md.push('\n');
        md.push_str(&section);
    }
    atomic_write(&sweep.root.join("report.md"), md.as_bytes())?;
    atomic_write(
        &sweep.root.join("report.csv"),
        csv_text(study, &comparisons)?.as_bytes(),
    )?;
    if format == Format::Latex {
        atomic_write(&sweep.root.join("report.tex"), latex(study).as_bytes())?;
    }
    Ok(md)
}

/// The stability section `adalora analyze SWEEP` wrote (`analysis/stability.md`), if any.
/// Read as a file because the analysis crate depends on this one, not the reverse.
fn analysis_section(sweep: &SweepDir) -> anyhow::Result<Option<String>> {
    let path = sweep.root.join(ANALYSIS_SECTION);
    if !path.is_file() {
        return Ok(None);
    }
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    Ok(Some(text))
}

/// Report (Markdown, CSV, LaTeX) and the standard figures, next to the manifest.
pub fn write_all(sweep: &SweepDir) -> anyhow::Result<()> {
    let study = Study::read(sweep)?;
    if study.entries.is_empty() {
        eprintln!("no finished runs yet: no report");
        return Ok(());
    }
    write_report(sweep, &study, Format::Latex)?;
    let figures = crate::figures::sweep_figures(&study, &sweep.root.join("figures"))?;
    eprintln!(
        "wrote {}/report.md, report.csv, report.tex and {} figures",
        sweep.root.display(),
        figures.len()
    );
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests;
