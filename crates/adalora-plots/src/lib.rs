//! Figures drawn with plotters: every figure is written as a PNG (bitmap backend, system
//! TrueType fonts via fontconfig) and an SVG beside it.
//!
//! A figure is a value implementing [`Figure`]; its `draw` is generic over the backend so the
//! same code draws both files. Each file is drawn under a temporary name and renamed into
//! place, so an interrupted run never leaves a truncated figure behind.
//!
//! Readability rules every figure here follows: the legend has its own strip under the data
//! (sized to its content, never over a line or a bar); axes of bounded metrics stay inside the
//! metric's range ([`metric_bounds`], [`axis_range`]); more than [`MAX_SERIES_PER_PANEL`]
//! series go into [`SmallMultiples`] (panels with shared axes and one legend); a sweep gives
//! each row one colour in all its figures ([`ColorMap`]); heatmaps of one set share a colour
//! scale (`vmax`) and always carry a colour bar.

use std::path::{Path, PathBuf};

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use thiserror::Error;

/// Colours of [`ColorMap`], [`Series::color`] and [`BarSeries::color`].
pub use plotters::style::RGBColor;

#[derive(Debug, Error)]
pub enum PlotError {
    #[error("cannot draw {path}: {message}")]
    Draw { path: PathBuf, message: String },
    #[error("nothing to plot: {0}")]
    Empty(String),
}

fn draw_err(path: &Path, e: impl std::fmt::Display) -> PlotError {
    PlotError::Draw {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// Something that can draw itself on any plotters backend.
pub trait Figure {
    /// Pixels (PNG) / user units (SVG).
    fn size(&self) -> (u32, u32);
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), String>;
}

/// Write `path` (a `.png`) and the same figure as `.svg` beside it; returns both paths.
pub fn save(figure: &impl Figure, path: &Path) -> Result<Vec<PathBuf>, PlotError> {
    let png = path.with_extension("png");
    let svg = path.with_extension("svg");
    adalora_fs::replace_file(&png, |tmp| {
        render(
            figure,
            BitMapBackend::new(tmp, figure.size()).into_drawing_area(),
        )
    })
    .map_err(|e| draw_err(&png, e))?;
    adalora_fs::replace_file(&svg, |tmp| {
        render(
            figure,
            SVGBackend::new(tmp, figure.size()).into_drawing_area(),
        )
    })
    .map_err(|e| draw_err(&svg, e))?;
    Ok(vec![png, svg])
}

/// Draw `figure` on a white `root` and flush it to its file.
fn render<DB: DrawingBackend>(
    figure: &impl Figure,
    root: DrawingArea<DB, Shift>,
) -> Result<(), String> {
    root.fill(&WHITE).map_err(err)?;
    figure.draw(&root)?;
    root.present().map_err(err)
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

// ---------------------------------------------------------------------------------------------
// Colours

const TAB10: [(u8, u8, u8); 10] = [
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
];

/// tab20's lighter partners of [`TAB10`], used after the first ten labels.
const TAB10_LIGHT: [(u8, u8, u8); 10] = [
    (174, 199, 232),
    (255, 187, 120),
    (152, 223, 138),
    (255, 152, 150),
    (197, 176, 213),
    (196, 156, 148),
    (247, 182, 210),
    (199, 199, 199),
    (219, 219, 141),
    (158, 218, 229),
];

/// Hue families ([`ColorMap::by_family`]): members of one family get distinct colours of one
/// hue range, the first member the family's base colour.
const FAMILIES: [[(u8, u8, u8); 6]; 4] = [
    // Blues (LoRA).
    [
        (31, 119, 180),
        (8, 48, 107),
        (107, 174, 214),
        (0, 150, 150),
        (70, 70, 200),
        (23, 190, 207),
    ],
    // Oranges and reds (AdaLoRA).
    [
        (255, 127, 14),
        (200, 30, 30),
        (140, 86, 75),
        (218, 165, 32),
        (120, 0, 40),
        (253, 174, 107),
    ],
    // Greens.
    [
        (44, 160, 44),
        (0, 90, 50),
        (152, 223, 138),
        (188, 189, 34),
        (0, 150, 110),
        (110, 130, 40),
    ],
    // Purples and pinks.
    [
        (148, 103, 189),
        (84, 39, 143),
        (227, 119, 194),
        (197, 176, 213),
        (160, 30, 120),
        (127, 127, 127),
    ],
];

fn rgb((r, g, b): (u8, u8, u8)) -> RGBColor {
    RGBColor(r, g, b)
}

/// A readable colour for series `i` (matplotlib's tab10).
pub fn series_color(i: usize) -> RGBColor {
    rgb(TAB10[i % TAB10.len()])
}

/// The colour of the `i`-th label of a categorical map: tab10, then tab20's light partners.
fn categorical(i: usize) -> RGBColor {
    let i = i % 20;
    if i < 10 {
        rgb(TAB10[i])
    } else {
        rgb(TAB10_LIGHT[i - 10])
    }
}

/// FNV-1a, for the colour of a label a map does not know (stable across runs).
fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf29ce484222325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100000001b3)
    })
}

/// A stable label → colour mapping, so one row of a sweep has the same colour in every figure
/// of the sweep. Built once from the sweep's rows (in table order) and passed to every figure.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ColorMap {
    entries: Vec<(String, RGBColor)>,
}

impl ColorMap {
    /// One categorical colour per distinct label, in order (tab10, then tab20's lighter
    /// partners; colours repeat after 20 labels).
    pub fn new<S: AsRef<str>>(labels: &[S]) -> Self {
        let mut map = ColorMap::default();
        for l in labels {
            if !map.contains(l.as_ref()) {
                let c = categorical(map.entries.len());
                map.entries.push((l.as_ref().to_string(), c));
            }
        }
        map
    }

    /// Hue families: each item is (label, family, member). Family 0 is blues, 1 oranges and
    /// reds, 2 greens, 3 purples (then again); the distinct members of a family, in order of
    /// appearance, get its colours in turn (six per family, then again). Labels with the same
    /// family and member share a colour, so a key that leaves out what the figures separate
    /// anyway (say the budget, when each budget has its own panel) keeps one setting one
    /// colour across panels.
    pub fn by_family<L: AsRef<str>, M: AsRef<str>>(items: &[(L, usize, M)]) -> Self {
        let mut members: Vec<(usize, String)> = Vec::new();
        let mut map = ColorMap::default();
        for (label, family, member) in items {
            let key = (*family, member.as_ref().to_string());
            let index = match members.iter().position(|m| *m == key) {
                Some(i) => i,
                None => {
                    members.push(key.clone());
                    members.len() - 1
                }
            };
            let nth = members[..index].iter().filter(|(f, _)| f == family).count();
            let palette = &FAMILIES[family % FAMILIES.len()];
            let color = rgb(palette[nth % palette.len()]);
            if !map.contains(label.as_ref()) {
                map.entries.push((label.as_ref().to_string(), color));
            }
        }
        map
    }

    /// The label's colour; a label the map was not built with gets a fixed tab10 colour
    /// derived from its text (the same in every figure).
    pub fn color_of(&self, label: &str) -> RGBColor {
        self.entries
            .iter()
            .find(|(l, _)| l == label)
            .map(|(_, c)| *c)
            .unwrap_or_else(|| series_color(fnv(label) as usize))
    }

    pub fn contains(&self, label: &str) -> bool {
        self.entries.iter().any(|(l, _)| l == label)
    }

    /// Give `label` a colour (replacing the one it had).
    pub fn insert(&mut self, label: &str, color: RGBColor) {
        match self.entries.iter_mut().find(|(l, _)| l == label) {
            Some(e) => e.1 = color,
            None => self.entries.push((label.to_string(), color)),
        }
    }

    pub fn labels(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|(l, _)| l.as_str())
    }
}

// ---------------------------------------------------------------------------------------------
// Text, titles, legends

const FONT: &str = "sans-serif";

/// Width in pixels of `text` at `size` (the system font's metrics; a rough estimate without).
pub fn text_width(text: &str, size: f64) -> u32 {
    (FONT, size)
        .into_font()
        .box_size(text)
        .map(|(w, _)| w)
        .unwrap_or((text.chars().count() as f64 * size * 0.6) as u32)
}

const TITLE_SIZE: f64 = 20.0;
const SUBTITLE_SIZE: f64 = 16.0;
const TITLE_LINE: u32 = 26;

/// Height of a title (one line per `\n`-separated line; the first is larger).
fn title_height(title: &str) -> u32 {
    let lines = title.lines().count() as u32;
    if lines == 0 {
        0
    } else {
        TITLE_LINE * lines + 10
    }
}

/// Width a title needs.
fn title_width(title: &str) -> u32 {
    title
        .lines()
        .enumerate()
        .map(|(i, l)| text_width(l, if i == 0 { TITLE_SIZE } else { SUBTITLE_SIZE }))
        .max()
        .unwrap_or(0)
        + 40
}

/// Draw `title` centred at the top of `area`; returns the area below it.
fn draw_title<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    title: &str,
) -> Result<DrawingArea<DB, Shift>, String> {
    let h = title_height(title);
    if h == 0 {
        return Ok(area.clone());
    }
    let (top, rest) = area.split_vertically(h);
    let (w, _) = top.dim_in_pixel();
    for (i, line) in title.lines().enumerate() {
        let (size, color) = if i == 0 {
            (TITLE_SIZE, BLACK)
        } else {
            (SUBTITLE_SIZE, RGBColor(60, 60, 60))
        };
        let y = 6 + (TITLE_LINE * i as u32 + TITLE_LINE / 2) as i32;
        top.draw(&Text::new(
            line.to_string(),
            (w as i32 / 2, y),
            (FONT, size)
                .into_font()
                .color(&color)
                .pos(Pos::new(HPos::Center, VPos::Center)),
        ))
        .map_err(err)?;
    }
    Ok(rest)
}

/// How a legend entry's sample looks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Swatch {
    /// A line sample (dashed as the plotted dashes), optionally with a marker and a band.
    Line {
        dashed: bool,
        markers: bool,
        band: bool,
    },
    /// A filled box (bars).
    Box,
}

#[derive(Clone, Debug, PartialEq)]
pub struct LegendEntry {
    pub name: String,
    pub color: RGBColor,
    pub swatch: Swatch,
}

const LEGEND_SIZE: f64 = 15.0;
const LEGEND_ROW: u32 = 22;
const LEGEND_MARGIN: u32 = 20;
const SWATCH_WIDTH: i32 = 42;

/// Columns, column width and rows of a legend of `names` in a strip `width` pixels wide:
/// as many columns of the widest entry as fit, filled top to bottom.
pub fn legend_layout(names: &[&str], width: u32) -> (usize, u32, usize) {
    if names.is_empty() {
        return (0, 0, 0);
    }
    let widest = names
        .iter()
        .map(|n| text_width(n, LEGEND_SIZE))
        .max()
        .unwrap_or(0);
    let column = widest + SWATCH_WIDTH as u32 + 8 + 28;
    let usable = width.saturating_sub(2 * LEGEND_MARGIN).max(column);
    let cols = ((usable / column) as usize).clamp(1, names.len());
    let rows = names.len().div_ceil(cols);
    (cols, column, rows)
}

/// Width a figure needs so that its widest legend entry is not cut.
fn legend_width(entries: &[LegendEntry]) -> u32 {
    let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
    match legend_layout(&names, 0) {
        (0, _, _) => 0,
        (_, column, _) => column + 2 * LEGEND_MARGIN,
    }
}

/// Height of the legend strip of `entries` in a figure `width` pixels wide.
fn legend_height(entries: &[LegendEntry], width: u32) -> u32 {
    let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
    let (_, _, rows) = legend_layout(&names, width);
    if rows == 0 {
        0
    } else {
        LEGEND_ROW * rows as u32 + 16
    }
}

/// Dash and gap lengths of a dashed series, in pixels (the legend repeats them).
const DASH: (u32, u32) = (8, 5);

/// The strokes of a legend entry's sample line (x from, x to) starting at `from`: one for a
/// solid series, dashes as long as the plotted ones for a dashed series, so the legend tells
/// the two apart.
fn legend_strokes(from: i32, dashed: bool) -> Vec<(i32, i32)> {
    let to = from + SWATCH_WIDTH;
    if !dashed {
        return vec![(from, to)];
    }
    let (on, off) = (DASH.0 as i32, DASH.1 as i32);
    (from..to)
        .step_by((on + off) as usize)
        .map(|x| (x, (x + on).min(to)))
        .collect()
}

/// Draw the entries in columns (filled top to bottom), centred in `area`.
fn draw_legend<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    entries: &[LegendEntry],
) -> Result<(), String> {
    let (w, _) = area.dim_in_pixel();
    let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
    let (cols, column, rows) = legend_layout(&names, w);
    if rows == 0 {
        return Ok(());
    }
    let total = cols as u32 * column;
    let left = (w.saturating_sub(total) / 2).max(LEGEND_MARGIN) as i32;
    for (i, e) in entries.iter().enumerate() {
        let (c, r) = (i / rows, i % rows);
        let x = left + c as i32 * column as i32;
        let y = 8 + (LEGEND_ROW * r as u32) as i32 + LEGEND_ROW as i32 / 2;
        match e.swatch {
            Swatch::Box => {
                area.draw(&Rectangle::new(
                    [(x + 8, y - 7), (x + SWATCH_WIDTH - 8, y + 7)],
                    e.color.filled(),
                ))
                .map_err(err)?;
            }
            Swatch::Line {
                dashed,
                markers,
                band,
            } => {
                if band {
                    area.draw(&Rectangle::new(
                        [(x, y - 7), (x + SWATCH_WIDTH, y + 7)],
                        e.color.mix(BAND_ALPHA).filled(),
                    ))
                    .map_err(err)?;
                }
                let style = e.color.stroke_width(3);
                for (x0, x1) in legend_strokes(x, dashed) {
                    area.draw(&PathElement::new(vec![(x0, y), (x1, y)], style))
                        .map_err(err)?;
                }
                if markers {
                    area.draw(&Circle::new((x + SWATCH_WIDTH / 2, y), 4, e.color.filled()))
                        .map_err(err)?;
                }
            }
        }
        area.draw(&Text::new(
            e.name.clone(),
            (x + SWATCH_WIDTH + 8, y),
            (FONT, LEGEND_SIZE)
                .into_font()
                .color(&BLACK)
                .pos(Pos::new(HPos::Left, VPos::Center)),
        ))
        .map_err(err)?;
    }
    Ok(())
}

/// Entries with distinct names, first occurrence kept.
fn dedup_entries(entries: impl IntoIterator<Item = LegendEntry>) -> Vec<LegendEntry> {
    let mut out: Vec<LegendEntry> = Vec::new();
    for e in entries {
        if !out.iter().any(|o| o.name == e.name) {
            out.push(e);
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Axes

/// The range a metric's values can take (unscaled): accuracy, F1 and other rates in [0, 1];
/// correlations (Matthews, Pearson, Spearman) in [−1, 1]; losses ≥ 0. None where unknown.
pub fn metric_bounds(metric: &str) -> Option<(f64, f64)> {
    let m = metric.to_ascii_lowercase();
    let has = |words: &[&str]| words.iter().any(|w| m.contains(w));
    if has(&["loss", "perplexity", "rank", "grad_norm"]) {
        Some((0.0, f64::INFINITY))
    } else if has(&["matthews", "mcc", "pearson", "spearman", "corr"]) {
        Some((-1.0, 1.0))
    } else if has(&[
        "accuracy",
        "acc",
        "f1",
        "precision",
        "recall",
        "exact_match",
        "auc",
    ]) {
        Some((0.0, 1.0))
    } else {
        None
    }
}

/// An axis for data in `lo..=hi`: padded by 8% of the span (5% of the value for a flat line),
/// then clamped inside `bounds` (a metric's range, [`metric_bounds`], scaled as the data are),
/// so an accuracy axis never leaves [0, 1] however wide its error bars.
pub fn axis_range(lo: f64, hi: f64, bounds: Option<(f64, f64)>) -> (f64, f64) {
    let (blo, bhi) = bounds.unwrap_or((f64::NEG_INFINITY, f64::INFINITY));
    let (lo, hi) = if lo <= hi { (lo, hi) } else { (hi, lo) };
    let (lo, hi) = (lo.clamp(blo, bhi), hi.clamp(blo, bhi));
    let span = hi - lo;
    let pad = if span > 1e-12 {
        span * 0.08
    } else if lo.abs() > 1e-12 {
        lo.abs() * 0.05
    } else {
        // A flat line at 0: a unit of the metric's range, or 1.
        if bhi.is_finite() && blo.is_finite() {
            (bhi - blo) * 0.05
        } else {
            1.0
        }
    };
    let (mut a, mut b) = ((lo - pad).max(blo), (hi + pad).min(bhi));
    if b - a <= 1e-12 {
        // Clamping collapsed the axis (a value on a bound): open it inwards.
        if a > blo {
            a = (b - 2.0 * pad).max(blo);
        } else {
            b = (a + 2.0 * pad).min(bhi);
        }
    }
    (a, b)
}

/// A tick label: integers without decimals, others with at most three.
fn tick(v: f64) -> String {
    if (v - v.round()).abs() < 1e-9 * v.abs().max(1.0) {
        format!("{}", v.round() as i64)
    } else {
        let s = format!("{v:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// Most series one panel shows; more go into [`SmallMultiples`].
pub const MAX_SERIES_PER_PANEL: usize = 8;

/// How many panels `series` series need at `max` per panel.
pub fn panels_needed(series: usize, max: usize) -> usize {
    series.div_ceil(max.max(1)).max(1)
}

/// `items` in order, cut into the fewest chunks of at most `max`, the sizes balanced (9 → 5 + 4,
/// not 8 + 1).
pub fn chunk_balanced<T: Clone>(items: &[T], max: usize) -> Vec<Vec<T>> {
    if items.is_empty() {
        return Vec::new();
    }
    let k = panels_needed(items.len(), max);
    let (base, extra) = (items.len() / k, items.len() % k);
    let mut out = Vec::with_capacity(k);
    let mut start = 0;
    for i in 0..k {
        let n = base + usize::from(i < extra);
        out.push(items[start..start + n].to_vec());
        start += n;
    }
    out
}

/// Columns of a grid of `panels` panels: one row up to three, 2 × 2 for four, then three.
pub fn grid_columns(panels: usize) -> usize {
    match panels {
        0 => 1,
        1..=3 => panels,
        4 => 2,
        _ => 3,
    }
}

/// One point of a budget schedule.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SchedulePoint {
    pub step: usize,
    pub budget: usize,
    /// A mask is applied after this step.
    pub mask: bool,
    /// The step belongs to the final phase (mask fixed, re-applied every step).
    pub fixed: bool,
}

/// b(t) as a step line, mask steps marked, the final phase shaded.
pub struct BudgetSchedule<'a> {
    pub points: &'a [SchedulePoint],
    pub title: &'a str,
}

impl Figure for BudgetSchedule<'_> {
    fn size(&self) -> (u32, u32) {
        (900, 500)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), String> {
        let points = self.points;
        let (first, last) = match (points.first(), points.last()) {
            (Some(f), Some(l)) => (f, l),
            _ => return Err("the schedule has no steps".into()),
        };
        let max_b = points.iter().map(|p| p.budget).max().unwrap_or(1).max(1);
        let min_b = points.iter().map(|p| p.budget).min().unwrap_or(0);
        let y_lo = min_b.saturating_sub((max_b - min_b) / 10 + 1);
        let y_hi = max_b + (max_b - min_b) / 10 + 1;
        let mut chart = ChartBuilder::on(root)
            .caption(self.title, ("sans-serif", 22))
            .margin(15)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(first.step..last.step + 1, y_lo..y_hi)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("optimizer step t")
            .y_desc("budget b(t) (triplets)")
            .draw()
            .map_err(err)?;
        chart
            .draw_series(LineSeries::new(
                points.iter().map(|p| (p.step, p.budget)),
                BLUE.stroke_width(2),
            ))
            .map_err(err)?
            .label("b(t)")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE.stroke_width(2)));
        // The final phase is a shaded band; budget-phase mask steps are markers, thinned so
        // long schedules stay readable.
        if let Some(start) = points.iter().find(|p| p.fixed) {
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [(start.step, y_lo), (last.step + 1, y_hi)],
                    RED.mix(0.12).filled(),
                )))
                .map_err(err)?
                .label("final phase (fixed mask, every step)")
                .legend(|(x, y)| {
                    Rectangle::new([(x, y - 5), (x + 20, y + 5)], RED.mix(0.3).filled())
                });
        }
        let mask_steps: Vec<_> = points.iter().filter(|p| p.mask && !p.fixed).collect();
        let stride = (mask_steps.len() / 400).max(1);
        chart
            .draw_series(
                mask_steps
                    .iter()
                    .step_by(stride)
                    .map(|p| Circle::new((p.step, p.budget), 2, RED.filled())),
            )
            .map_err(err)?
            .label("mask step (budget phase)")
            .legend(|(x, y)| Circle::new((x + 10, y), 3, RED.filled()));
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(err)
    }
}

/// Per-matrix values (final rank, or its mean over seeds): rows = module types (first on
/// top), columns = layers (paper Fig. 3), every cell annotated, with a colour bar from 0 to
/// `vmax` (pass the same `vmax` to every heatmap of a set so their colours compare; None: the
/// grid's own maximum). `values[m][l]` is `None` where the matrix is not adapted. The title
/// may have several lines (`\n`).
pub struct RankHeatmap<'a> {
    pub modules: &'a [String],
    pub values: &'a [Vec<Option<f64>>],
    pub title: &'a str,
    pub vmax: Option<f64>,
    /// The column axis' name (None: "layer"; columns are labelled 1, 2, … either way).
    pub x_desc: Option<&'a str>,
    /// What the colours mean, beside the colour bar (None: "rank").
    pub bar_desc: Option<&'a str>,
}

impl RankHeatmap<'_> {
    fn layers(&self) -> usize {
        self.values.first().map_or(0, Vec::len)
    }

    /// The largest value of the grid (at least 1).
    pub fn max_of(values: &[Vec<Option<f64>>]) -> f64 {
        values
            .iter()
            .flatten()
            .flatten()
            .copied()
            .filter(|v| v.is_finite())
            .fold(1.0, f64::max)
    }

    /// Top of the colour scale.
    pub fn scale_max(&self) -> f64 {
        self.vmax
            .filter(|v| v.is_finite() && *v > 0.0)
            .unwrap_or_else(|| Self::max_of(self.values))
    }

    fn label(v: f64) -> String {
        if (v - v.round()).abs() < 1e-9 {
            format!("{}", v.round() as i64)
        } else {
            format!("{v:.1}")
        }
    }
}

const COLORBAR_WIDTH: u32 = 110;
const HEAT_CELL: u32 = 64;

impl Figure for RankHeatmap<'_> {
    fn size(&self) -> (u32, u32) {
        let width = (100 + HEAT_CELL * self.layers() as u32 + 30 + COLORBAR_WIDTH)
            .max(title_width(self.title));
        (
            width,
            // At least three cells high, so the colour bar stays readable for one or two
            // module types.
            title_height(self.title) + 70 + HEAT_CELL * self.modules.len().max(3) as u32,
        )
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), String> {
        let (n, layers) = (self.modules.len(), self.layers());
        if n == 0 || layers == 0 {
            return Err("no adapted matrices".into());
        }
        let max = self.scale_max();
        let titled = draw_title(root, self.title)?;
        let (w, _) = titled.dim_in_pixel();
        // The grid keeps square cells; spare width (a long title) goes to the left margin.
        let grid_w = (100 + HEAT_CELL * layers as u32 + 30).min(w - COLORBAR_WIDTH);
        let spare = w - COLORBAR_WIDTH - grid_w;
        let (_, rest) = titled.split_horizontally(spare / 2);
        let (grid_area, rest) = rest.split_horizontally(grid_w);
        let (bar_area, _) = rest.split_horizontally(COLORBAR_WIDTH);
        let mut chart = ChartBuilder::on(&grid_area)
            .margin(10)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(
                (0..layers - 1).into_segmented(),
                (0..n - 1).into_segmented(),
            )
            .map_err(err)?;
        let modules = self.modules;
        chart
            .configure_mesh()
            .disable_mesh()
            .x_desc(self.x_desc.unwrap_or("layer"))
            .x_labels(layers)
            .y_labels(n)
            .x_label_formatter(&|v| match v {
                SegmentValue::CenterOf(l) => format!("{}", l + 1),
                _ => String::new(),
            })
            // Row m is drawn at y = n − 1 − m so the first module is on top.
            .y_label_formatter(&|v| match v {
                SegmentValue::CenterOf(y) if *y < n => modules[n - 1 - *y].clone(),
                _ => String::new(),
            })
            .label_style((FONT, 16))
            .draw()
            .map_err(err)?;
        for (m, row) in self.values.iter().enumerate() {
            let y = n - 1 - m;
            for (l, value) in row.iter().enumerate() {
                let t = value.map(|v| (v / max).clamp(0.0, 1.0));
                let color = match t {
                    Some(t) => ViridisRGB::get_color(t).to_rgba(),
                    None => RGBAColor(220, 220, 220, 1.0),
                };
                let corners = [
                    (SegmentValue::Exact(l), SegmentValue::Exact(y)),
                    (SegmentValue::Exact(l + 1), SegmentValue::Exact(y + 1)),
                ];
                chart
                    .draw_series(std::iter::once(Rectangle::new(corners, color.filled())))
                    .map_err(err)?;
                let label = value.map_or("-".into(), Self::label);
                // Viridis is dark at the low end: white text there.
                let dark = t.is_some_and(|t| t < 0.6);
                let style = (FONT, 17)
                    .into_font()
                    .color(if dark { &WHITE } else { &BLACK })
                    .pos(Pos::new(HPos::Center, VPos::Center));
                chart
                    .draw_series(std::iter::once(Text::new(
                        label,
                        (SegmentValue::CenterOf(l), SegmentValue::CenterOf(y)),
                        style,
                    )))
                    .map_err(err)?;
            }
        }
        draw_colorbar(&bar_area, max, self.bar_desc.unwrap_or("rank"))
    }
}

/// A vertical viridis strip from 0 to `max` with tick labels.
fn draw_colorbar<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    max: f64,
    label: &str,
) -> Result<(), String> {
    let mut bar = ChartBuilder::on(area)
        .margin_top(18)
        .margin_bottom(50)
        .margin_right(10)
        .y_label_area_size(45)
        .build_cartesian_2d(0.0..1.0, 0.0..max)
        .map_err(err)?;
    bar.configure_mesh()
        .disable_mesh()
        .disable_x_axis()
        .y_desc(label)
        .y_labels(6)
        // The top of the scale is labelled on its own (below): ticks too close to it are not.
        .y_label_formatter(&|v| {
            if *v > 0.88 * max {
                String::new()
            } else {
                tick(*v)
            }
        })
        .label_style((FONT, 14))
        .draw()
        .map_err(err)?;
    let top = if (max - max.round()).abs() < 1e-9 {
        tick(max)
    } else {
        format!("{max:.1}")
    };
    bar.draw_series(std::iter::once(Text::new(
        top,
        (0.0, max),
        (FONT, 14)
            .into_font()
            .color(&BLACK)
            .pos(Pos::new(HPos::Right, VPos::Center)),
    )))
    .map_err(err)?;
    let steps = 64;
    bar.draw_series((0..steps).map(|i| {
        let lo = max * i as f64 / steps as f64;
        let hi = max * (i + 1) as f64 / steps as f64;
        Rectangle::new(
            [(0.0, lo), (1.0, hi)],
            ViridisRGB::get_color((lo + hi) / 2.0 / max).filled(),
        )
    }))
    .map_err(err)?;
    Ok(())
}

/// Opacity of a ±1 std band.
const BAND_ALPHA: f64 = 0.18;

/// A line of a [`LinePlot`], optionally with error bars at its points and a shaded band.
#[derive(Clone, Debug, Default)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
    /// Half-widths of symmetric error bars, one per point.
    pub errors: Option<Vec<f64>>,
    /// Explicit error bars (lo, hi), one per point (None: no bar at that point); drawn
    /// instead of `errors`.
    pub intervals: Option<Vec<Option<(f64, f64)>>>,
    /// A shaded band (x, lo, hi), e.g. mean ± 1 std over seeds.
    pub band: Option<Vec<(f64, f64, f64)>>,
    /// Draw markers at the points (sparse data) rather than a plain line.
    pub markers: bool,
    pub dashed: bool,
    /// None: tab10 by position.
    pub color: Option<RGBColor>,
}

impl Series {
    /// The error bar of point `i`, if any.
    fn interval(&self, i: usize) -> Option<(f64, f64)> {
        let (_, y) = *self.points.get(i)?;
        match (&self.intervals, &self.errors) {
            (Some(iv), _) => iv.get(i).copied().flatten(),
            (None, Some(e)) => e.get(i).map(|e| (y - e, y + e)),
            (None, None) => None,
        }
        .filter(|(lo, hi)| lo.is_finite() && hi.is_finite())
    }
}

/// Several series over a shared x axis, the legend in a strip under the chart.
#[derive(Clone, Default)]
pub struct LinePlot<'a> {
    pub title: &'a str,
    pub x_desc: &'a str,
    pub y_desc: &'a str,
    pub series: &'a [Series],
    /// The metric's range (scaled as the data are): the y axis stays inside it.
    pub y_bounds: Option<(f64, f64)>,
    /// Shift series `i` of `k` by (i − (k − 1)/2) × `dodge` of the x axis width, so error bars
    /// at the same x stay apart (0: none; 0.015 is a good value).
    pub dodge: f64,
    /// A log₂ x axis (budgets 1, 2, 4, 8, 16), ticks at powers of two. Needs x > 0.
    pub log2_x: bool,
    /// x is a count or an index (singular value 1, 2, 3, …): tick labels only at integers.
    pub integer_x: bool,
}

fn padded_range(lo: f64, hi: f64) -> std::ops::Range<f64> {
    let span = (hi - lo).abs();
    // A single x (one evaluation) or a flat line still gets a readable axis.
    let pad = if span < 1e-9 {
        (lo.abs() * 0.05).max(1.0)
    } else {
        span * 0.08
    };
    (lo - pad)..(hi + pad)
}

/// (x min, x max, y min, y max) of some data.
type Extent = (f64, f64, f64, f64);

fn union(a: Option<Extent>, b: Option<Extent>) -> Option<Extent> {
    match (a, b) {
        (Some(a), Some(b)) => Some((a.0.min(b.0), a.1.max(b.1), a.2.min(b.2), a.3.max(b.3))),
        (a, b) => a.or(b),
    }
}

impl LinePlot<'_> {
    fn color(&self, i: usize) -> RGBColor {
        self.series[i].color.unwrap_or_else(|| series_color(i))
    }

    /// x in axis space.
    fn tx(&self, x: f64) -> f64 {
        if self.log2_x {
            x.log2()
        } else {
            x
        }
    }

    /// The data extent in axis space: points, error bars and bands.
    fn extent(&self) -> Option<Extent> {
        let mut e: Option<Extent> = None;
        let mut add = |x: f64, lo: f64, hi: f64| {
            if x.is_finite() && lo.is_finite() && hi.is_finite() {
                e = union(e, Some((x, x, lo.min(hi), lo.max(hi))));
            }
        };
        for s in self.series {
            for (i, &(x, y)) in s.points.iter().enumerate() {
                let (lo, hi) = s.interval(i).unwrap_or((y, y));
                add(self.tx(x), lo.min(y), hi.max(y));
            }
            for &(x, lo, hi) in s.band.iter().flatten() {
                add(self.tx(x), lo, hi);
            }
        }
        e
    }

    /// Axis ranges for an extent: x padded (with room for the dodge), y padded and clamped
    /// inside the bounds.
    fn ranges(&self, e: Extent) -> (std::ops::Range<f64>, std::ops::Range<f64>) {
        let x = padded_range(e.0, e.1);
        let k = self.series.len().max(1) as f64;
        let shift = self.dodge * (k - 1.0) / 2.0 * (x.end - x.start);
        let x = (x.start - shift)..(x.end + shift);
        let (lo, hi) = axis_range(e.2, e.3, self.y_bounds);
        (x, lo..hi)
    }

    fn legend_entries(&self) -> Vec<LegendEntry> {
        self.series
            .iter()
            .enumerate()
            .map(|(i, s)| LegendEntry {
                name: s.name.clone(),
                color: self.color(i),
                swatch: Swatch::Line {
                    dashed: s.dashed,
                    markers: s.markers,
                    band: s.band.is_some(),
                },
            })
            .collect()
    }

    /// The chart (no legend) on `area` over the given ranges; `caption` is a panel title.
    fn draw_chart<DB: DrawingBackend>(
        &self,
        area: &DrawingArea<DB, Shift>,
        x: std::ops::Range<f64>,
        y: std::ops::Range<f64>,
        caption: Option<&str>,
    ) -> Result<(), String> {
        let span = x.end - x.start;
        let mut builder = ChartBuilder::on(area);
        builder
            .margin(15)
            .x_label_area_size(45)
            .y_label_area_size(70);
        if let Some(c) = caption.filter(|c| !c.is_empty()) {
            builder.caption(c, (FONT, 17));
        }
        let mut chart = builder.build_cartesian_2d(x, y).map_err(err)?;
        let (log2, integer) = (self.log2_x, self.integer_x);
        let x_fmt = move |v: &f64| {
            if integer && (v - v.round()).abs() > 1e-6 {
                String::new()
            } else if !log2 {
                tick(*v)
            } else if (v - v.round()).abs() < 1e-6 {
                tick(2f64.powf(v.round()))
            } else {
                String::new()
            }
        };
        chart
            .configure_mesh()
            .x_desc(self.x_desc)
            .y_desc(self.y_desc)
            .x_label_formatter(&x_fmt)
            .y_label_formatter(&|v| tick(*v))
            .light_line_style(RGBColor(235, 235, 235))
            .bold_line_style(RGBColor(200, 200, 200))
            .label_style((FONT, 15))
            .axis_desc_style((FONT, 17))
            .draw()
            .map_err(err)?;
        let k = self.series.len() as f64;
        // Bands first, so every line is drawn over every band.
        for (i, s) in self.series.iter().enumerate() {
            let Some(band) = &s.band else { continue };
            let off = (i as f64 - (k - 1.0) / 2.0) * self.dodge * span;
            let band: Vec<_> = band
                .iter()
                .filter(|(x, lo, hi)| x.is_finite() && lo.is_finite() && hi.is_finite())
                .map(|&(x, lo, hi)| (self.tx(x) + off, lo, hi))
                .collect();
            if band.len() < 2 {
                continue;
            }
            let outline: Vec<(f64, f64)> = band
                .iter()
                .map(|&(x, _, hi)| (x, hi))
                .chain(band.iter().rev().map(|&(x, lo, _)| (x, lo)))
                .collect();
            chart
                .draw_series(std::iter::once(Polygon::new(
                    outline,
                    self.color(i).mix(BAND_ALPHA).filled(),
                )))
                .map_err(err)?;
        }
        for (i, s) in self.series.iter().enumerate() {
            let color = self.color(i);
            let style = color.stroke_width(2);
            let off = (i as f64 - (k - 1.0) / 2.0) * self.dodge * span;
            let points: Vec<(f64, f64)> = s
                .points
                .iter()
                .map(|&(x, y)| (self.tx(x) + off, y))
                .filter(|(x, y)| x.is_finite() && y.is_finite())
                .collect();
            if s.dashed {
                chart
                    .draw_series(DashedLineSeries::new(points.clone(), DASH.0, DASH.1, style))
                    .map_err(err)?;
            } else {
                chart
                    .draw_series(LineSeries::new(points.clone(), style))
                    .map_err(err)?;
            }
            if s.markers {
                chart
                    .draw_series(points.iter().map(|&p| Circle::new(p, 4, color.filled())))
                    .map_err(err)?;
            }
            let bars: Vec<_> = (0..s.points.len())
                .filter_map(|j| {
                    let (x, y) = s.points[j];
                    let (lo, hi) = s.interval(j)?;
                    (x.is_finite() && y.is_finite()).then(|| (self.tx(x) + off, y, lo, hi))
                })
                .collect();
            chart
                .draw_series(bars.into_iter().map(|(x, y, lo, hi)| {
                    ErrorBar::new_vertical(x, lo, y, hi, color.stroke_width(2), 10)
                }))
                .map_err(err)?;
        }
        Ok(())
    }
}

impl Figure for LinePlot<'_> {
    fn size(&self) -> (u32, u32) {
        let width = 960u32
            .max(title_width(self.title))
            .max(legend_width(&self.legend_entries()));
        (
            width,
            title_height(self.title) + 480 + legend_height(&self.legend_entries(), width),
        )
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), String> {
        let e = self.extent().ok_or("no finite points")?;
        let (x, y) = self.ranges(e);
        let entries = self.legend_entries();
        let body = draw_title(root, self.title)?;
        let (w, h) = body.dim_in_pixel();
        // The legend gets its own strip under the chart so it never hides a line.
        let (chart, legend) = body.split_vertically(h - legend_height(&entries, w));
        self.draw_chart(&chart, x, y, None)?;
        draw_legend(&legend, &entries)
    }
}

/// One bar: its height and, where known, an error bar (lo, hi) in the same units.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Bar {
    pub mean: f64,
    pub interval: Option<(f64, f64)>,
}

/// One bar series: its name and, per group, the bar (None: no bar in that group).
#[derive(Clone, Debug, Default)]
pub struct BarSeries {
    pub name: String,
    pub values: Vec<Option<Bar>>,
    /// None: tab10 by position.
    pub color: Option<RGBColor>,
}

/// Grouped bars (groups = tasks, one bar per series) with error bars and value labels; the
/// legend in a strip under the chart.
#[derive(Clone, Default)]
pub struct GroupedBars<'a> {
    pub title: &'a str,
    pub y_desc: &'a str,
    pub groups: &'a [String],
    pub series: &'a [BarSeries],
    /// The metric's range (scaled as the data are): the y axis stays inside it.
    pub y_bounds: Option<(f64, f64)>,
}

const BAR_WIDTH: u32 = 56;

impl GroupedBars<'_> {
    fn color(&self, i: usize) -> RGBColor {
        self.series[i].color.unwrap_or_else(|| series_color(i))
    }

    fn bars(&self) -> impl Iterator<Item = Bar> + '_ {
        self.series
            .iter()
            .flat_map(|s| s.values.iter().flatten().copied())
            .filter(|b| b.mean.is_finite())
    }

    /// (lowest, highest) of bars and error bars, 0 included (bars start at 0).
    fn extent(&self) -> Option<(f64, f64)> {
        self.bars().fold(None, |acc, b| {
            let (lo, hi) = b.interval.unwrap_or((b.mean, b.mean));
            let (lo, hi) = (lo.min(b.mean).min(0.0), hi.max(b.mean).max(0.0));
            Some(match acc {
                None => (lo, hi),
                Some((a, z)) => (f64::min(a, lo), f64::max(z, hi)),
            })
        })
    }

    /// The y axis: the extent with head room for the value labels, inside the bounds.
    fn y_range(&self, (lo, hi): (f64, f64)) -> std::ops::Range<f64> {
        let (blo, bhi) = self.y_bounds.unwrap_or((f64::NEG_INFINITY, f64::INFINITY));
        let span = (hi - lo).max(1e-9);
        let top = if hi > 0.0 { hi + 0.12 * span } else { 0.0 };
        let bottom = if lo < 0.0 { lo - 0.12 * span } else { 0.0 };
        let (a, b) = (bottom.max(blo.min(0.0)), top.min(bhi.max(0.0)));
        if b - a <= 1e-12 {
            a..a + 1.0
        } else {
            a..b
        }
    }

    /// Width a group needs: its bars, or its label.
    fn group_width(&self) -> u32 {
        let label = self
            .groups
            .iter()
            .map(|g| text_width(g, 15.0))
            .max()
            .unwrap_or(0);
        (BAR_WIDTH * self.series.len().max(1) as u32 + 40).max(label + 24)
    }

    /// Width of the chart part (without a long title).
    fn chart_width(&self) -> u32 {
        (110 + self.group_width() * self.groups.len() as u32).max(480)
    }

    fn legend_entries(&self) -> Vec<LegendEntry> {
        self.series
            .iter()
            .enumerate()
            .map(|(i, s)| LegendEntry {
                name: s.name.clone(),
                color: self.color(i),
                swatch: Swatch::Box,
            })
            .collect()
    }

    fn draw_chart<DB: DrawingBackend>(
        &self,
        area: &DrawingArea<DB, Shift>,
        y: std::ops::Range<f64>,
        caption: Option<&str>,
    ) -> Result<(), String> {
        let groups = self.groups;
        let (lo, hi) = (y.start, y.end);
        let mut builder = ChartBuilder::on(area);
        builder
            .margin(15)
            .x_label_area_size(40)
            .y_label_area_size(70);
        if let Some(c) = caption.filter(|c| !c.is_empty()) {
            builder.caption(c, (FONT, 17));
        }
        let mut chart = builder
            .build_cartesian_2d(0.0..groups.len() as f64, y)
            .map_err(err)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(groups.len() * 2 + 1)
            .x_label_formatter(&|x| {
                let i = (x - 0.5).round();
                if (x - 0.5 - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < groups.len() {
                    groups[i as usize].clone()
                } else {
                    String::new()
                }
            })
            .y_label_formatter(&|v| tick(*v))
            .y_desc(self.y_desc)
            .light_line_style(RGBColor(238, 238, 238))
            .bold_line_style(RGBColor(200, 200, 200))
            .label_style((FONT, 15))
            .axis_desc_style((FONT, 17))
            .draw()
            .map_err(err)?;
        let k = self.series.len().max(1) as f64;
        let width = 0.8 / k;
        let clamp = |v: f64| v.clamp(lo, hi);
        for (s, series) in self.series.iter().enumerate() {
            let color = self.color(s);
            let x0 = |g: usize| g as f64 + 0.1 + width * s as f64;
            let bars: Vec<(usize, Bar)> = series
                .values
                .iter()
                .enumerate()
                .filter_map(|(g, v)| v.map(|b| (g, b)))
                .filter(|(g, b)| b.mean.is_finite() && *g < groups.len())
                .collect();
            chart
                .draw_series(bars.iter().map(|&(g, b)| {
                    Rectangle::new(
                        [(x0(g), clamp(0.0)), (x0(g) + width * 0.92, clamp(b.mean))],
                        color.filled(),
                    )
                }))
                .map_err(err)?;
            chart
                .draw_series(bars.iter().filter_map(|&(g, b)| {
                    let (l, h) = b.interval?;
                    let xc = x0(g) + width * 0.46;
                    Some(ErrorBar::new_vertical(
                        xc,
                        clamp(l),
                        clamp(b.mean),
                        clamp(h),
                        BLACK.stroke_width(1),
                        8,
                    ))
                }))
                .map_err(err)?;
            // Value labels just beyond the error bar (pixel offsets, so they never touch it);
            // where the bar reaches the edge of the axis (a wide interval clamped to the
            // metric's range) the label sits inside the bar at its base, on a white box.
            let top_px = chart.backend_coord(&(0.0, hi)).1;
            let bottom_px = chart.backend_coord(&(0.0, lo)).1;
            let base = clamp(0.0);
            for &(g, b) in &bars {
                let xc = x0(g) + width * 0.46;
                let (l, h) = b.interval.unwrap_or((b.mean, b.mean));
                let text = format!("{:.1}", b.mean);
                let font = (FONT, 14).into_font().color(&BLACK);
                let (tw, th) = (text_width(&text, 14.0) as i32 + 6, 18);
                let up = b.mean >= 0.0;
                let end = if up {
                    clamp(h.max(b.mean))
                } else {
                    clamp(l.min(b.mean))
                };
                let end_px = chart.backend_coord(&(xc, end)).1;
                let fits = if up {
                    end_px - th - 3 >= top_px
                } else {
                    end_px + th + 3 <= bottom_px
                };
                let (anchor, dy, vpos, boxed) = match (fits, up) {
                    (true, true) => (end, -3, VPos::Bottom, false),
                    (true, false) => (end, 3, VPos::Top, false),
                    (false, true) => (base, -4, VPos::Bottom, true),
                    (false, false) => (base, 4, VPos::Top, true),
                };
                let label = Text::new(text, (0, dy), font.pos(Pos::new(HPos::Center, vpos)));
                let (y0, y1) = if up { (dy - th, dy) } else { (dy, dy + th) };
                let backing = Rectangle::new(
                    [(-tw / 2, y0), (tw / 2, y1)],
                    if boxed {
                        WHITE.mix(0.85).filled()
                    } else {
                        TRANSPARENT.filled()
                    },
                );
                chart
                    .draw_series(std::iter::once(
                        EmptyElement::at((xc, anchor)) + backing + label,
                    ))
                    .map_err(err)?;
            }
        }
        Ok(())
    }
}

impl Figure for GroupedBars<'_> {
    fn size(&self) -> (u32, u32) {
        let width = self
            .chart_width()
            .max(title_width(self.title))
            .max(legend_width(&self.legend_entries()));
        (
            width,
            title_height(self.title) + 460 + legend_height(&self.legend_entries(), width),
        )
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), String> {
        if self.groups.is_empty() {
            return Err("no bars".into());
        }
        let y = self.y_range(self.extent().ok_or("no bars")?);
        let entries = self.legend_entries();
        let body = draw_title(root, self.title)?;
        let (w, h) = body.dim_in_pixel();
        let (chart, legend) = body.split_vertically(h - legend_height(&entries, w));
        // A long title widens the figure; the bars keep their natural width, centred.
        let cw = self.chart_width().min(w);
        let (_, rest) = chart.split_horizontally((w - cw) / 2);
        let (chart, _) = rest.split_horizontally(cw);
        self.draw_chart(&chart, y, None)?;
        draw_legend(&legend, &entries)
    }
}

/// One panel of [`SmallMultiples`]; its title is the panel's caption.
pub enum Panel<'a> {
    Lines(LinePlot<'a>),
    Bars(GroupedBars<'a>),
}

/// A grid of panels sharing their axes (every line panel the same x and y range, every bar
/// panel the same y range), one title on top and one legend (distinct series names over all
/// panels) underneath. For more than [`MAX_SERIES_PER_PANEL`] series: cut them with
/// [`chunk_balanced`] and give each chunk a panel.
pub struct SmallMultiples<'a> {
    pub title: &'a str,
    pub panels: &'a [Panel<'a>],
    /// None: [`grid_columns`].
    pub columns: Option<usize>,
}

const PANEL_HEIGHT: u32 = 400;
const LINE_PANEL_WIDTH: u32 = 620;

impl SmallMultiples<'_> {
    fn columns(&self) -> usize {
        self.columns
            .unwrap_or_else(|| grid_columns(self.panels.len()))
            .clamp(1, self.panels.len().max(1))
    }

    fn panel_width(&self) -> u32 {
        self.panels
            .iter()
            .map(|p| match p {
                Panel::Lines(l) => LINE_PANEL_WIDTH.max(text_width(l.title, 17.0) + 40),
                Panel::Bars(b) => b.chart_width().max(text_width(b.title, 17.0) + 40),
            })
            .max()
            .unwrap_or(LINE_PANEL_WIDTH)
    }

    fn legend_entries(&self) -> Vec<LegendEntry> {
        dedup_entries(self.panels.iter().flat_map(|p| match p {
            Panel::Lines(l) => l.legend_entries(),
            Panel::Bars(b) => b.legend_entries(),
        }))
    }
}

impl Figure for SmallMultiples<'_> {
    fn size(&self) -> (u32, u32) {
        let cols = self.columns() as u32;
        let rows = self.panels.len().div_ceil(cols as usize).max(1) as u32;
        let width = (cols * self.panel_width())
            .max(title_width(self.title))
            .max(legend_width(&self.legend_entries()));
        let legend = legend_height(&self.legend_entries(), width);
        (
            width,
            title_height(self.title) + rows * PANEL_HEIGHT + legend,
        )
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), String> {
        if self.panels.is_empty() {
            return Err("no panels".into());
        }
        // Shared ranges: the union of the panels' extents.
        let mut lines: Option<Extent> = None;
        let mut bars: Option<(f64, f64)> = None;
        for p in self.panels {
            match p {
                Panel::Lines(l) => lines = union(lines, l.extent()),
                Panel::Bars(b) => {
                    bars = match (bars, b.extent()) {
                        (Some(a), Some(e)) => Some((a.0.min(e.0), a.1.max(e.1))),
                        (a, e) => a.or(e),
                    }
                }
            }
        }
        let entries = self.legend_entries();
        let body = draw_title(root, self.title)?;
        let (w, h) = body.dim_in_pixel();
        let (grid, legend) = body.split_vertically(h - legend_height(&entries, w));
        let cols = self.columns();
        let rows = self.panels.len().div_ceil(cols);
        let cells = grid.split_evenly((rows, cols));
        for (p, cell) in self.panels.iter().zip(&cells) {
            match p {
                Panel::Lines(l) => {
                    let e = lines.ok_or("no finite points")?;
                    // Dodge room for the panel with the most series.
                    let widest = self
                        .panels
                        .iter()
                        .filter_map(|p| match p {
                            Panel::Lines(l) => Some(l.series.len()),
                            Panel::Bars(_) => None,
                        })
                        .max()
                        .unwrap_or(1);
                    let dummy = vec![Series::default(); widest];
                    let ranges = LinePlot {
                        series: &dummy,
                        ..l.clone()
                    };
                    let (x, y) = ranges.ranges(e);
                    l.draw_chart(cell, x, y, Some(l.title))?;
                }
                Panel::Bars(b) => {
                    let y = b.y_range(bars.ok_or("no bars")?);
                    b.draw_chart(cell, y, Some(b.title))?;
                }
            }
        }
        draw_legend(&legend, &entries)
    }
}

/// Compatibility wrapper: the budget schedule as PNG + SVG.
pub fn plot_budget_schedule(
    path: &Path,
    points: &[SchedulePoint],
    title: &str,
) -> Result<Vec<PathBuf>, PlotError> {
    if points.is_empty() {
        return Err(PlotError::Empty("the schedule has no steps".into()));
    }
    save(&BudgetSchedule { points, title }, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_png(path: &Path) -> bool {
        let bytes = std::fs::read(path).unwrap();
        bytes.len() > 1000 && bytes.starts_with(&[0x89, b'P', b'N', b'G'])
    }

    /// An SVG holding a text element with exactly `text` (or, for longer needles, containing it).
    fn is_svg_with(path: &Path, text: &str) -> bool {
        let s = std::fs::read_to_string(path).unwrap();
        s.starts_with("<svg")
            && (s.contains(&format!(">\n{text}\n</text>")) || (text.len() > 6 && s.contains(text)))
    }

    /// Where the demo figures go: `$PLOT_DEMO_DIR` (to look at them) or a temporary folder.
    fn out_dir() -> (Option<tempfile::TempDir>, PathBuf) {
        match std::env::var_os("PLOT_DEMO_DIR") {
            Some(d) => {
                std::fs::create_dir_all(&d).unwrap();
                (None, PathBuf::from(d))
            }
            None => {
                let t = tempfile::tempdir().unwrap();
                let p = t.path().to_path_buf();
                (Some(t), p)
            }
        }
    }

    fn both_exist(path: &Path) {
        assert!(is_png(&path.with_extension("png")), "{}", path.display());
        assert!(
            std::fs::read_to_string(path.with_extension("svg"))
                .unwrap()
                .starts_with("<svg"),
            "{}",
            path.display()
        );
        assert!(!path.with_extension("tmp.png").exists());
    }

    #[test]
    fn schedule_plot_is_a_png_and_svg() {
        let (_keep, dir) = out_dir();
        let path = dir.join("schedule.png");
        let points: Vec<_> = (0..50)
            .map(|t| SchedulePoint {
                step: t,
                budget: 48 - (t / 3).min(16),
                mask: t % 3 == 0,
                fixed: t > 45,
            })
            .collect();
        plot_budget_schedule(&path, &points, "test").unwrap();
        both_exist(&path);
        assert!(is_svg_with(&path.with_extension("svg"), "budget b(t)"));
        assert!(matches!(
            plot_budget_schedule(&path, &[], "x"),
            Err(PlotError::Empty(_))
        ));
    }

    #[test]
    fn heatmap_annotates_every_cell_with_a_shared_colour_bar() {
        let (_keep, dir) = out_dir();
        let path = dir.join("heatmap.png");
        let modules: Vec<String> = ["W_q", "W_k"].iter().map(|s| s.to_string()).collect();
        let values = vec![
            vec![Some(3.0), Some(0.0), None],
            vec![Some(12.0), Some(5.5), Some(1.0)],
        ];
        let fig = RankHeatmap {
            modules: &modules,
            values: &values,
            title: "rotten_tomatoes · AdaLoRA 12→8\nmean final rank over n=3 runs · budget 288",
            vmax: Some(24.0),
            x_desc: None,
            bar_desc: None,
        };
        assert_eq!(fig.scale_max(), 24.0);
        save(&fig, &path).unwrap();
        both_exist(&path);
        let svg = path.with_extension("svg");
        for label in [
            "W_q", "W_k", "12", "5.5", "-", "rank", "layer", "24", "n=3 runs",
        ] {
            assert!(is_svg_with(&svg, label), "{label}");
        }
        // Without a shared scale: the grid's own maximum.
        let own = RankHeatmap { vmax: None, ..fig };
        assert_eq!(own.scale_max(), 12.0);
        let path = dir.join("heatmap_own_scale.png");
        save(&own, &path).unwrap();
        assert!(is_svg_with(&path.with_extension("svg"), "rank"));
        // Another quantity names itself beside the colour bar.
        let phi = RankHeatmap {
            bar_desc: Some("similarity φ"),
            ..own
        };
        let path = dir.join("heatmap_phi.png");
        save(&phi, &path).unwrap();
        assert!(is_svg_with(&path.with_extension("svg"), "similarity φ"));
    }

    /// How many horizontal polylines an SVG draws below `top` (legend sample strokes).
    fn legend_strokes_below(svg: &str, top: i32) -> Vec<(i32, i32)> {
        let mut out = Vec::new();
        for polyline in svg.split("<polyline").skip(1) {
            let Some(points) = polyline
                .split("points=\"")
                .nth(1)
                .and_then(|p| p.split('"').next())
            else {
                continue;
            };
            let xy: Vec<(i32, i32)> = points
                .split_whitespace()
                .filter_map(|xy| {
                    let (x, y) = xy.split_once(',')?;
                    Some((x.parse::<f64>().ok()? as i32, y.parse::<f64>().ok()? as i32))
                })
                .collect();
            if xy.len() >= 2 && xy[0].1 > top && xy.iter().all(|p| p.1 == xy[0].1) {
                out.push((xy[0].1, xy[xy.len() - 1].0 - xy[0].0));
            }
        }
        out
    }

    #[test]
    fn lines_with_bands_dodge_and_legend_under_the_chart() {
        let (_keep, dir) = out_dir();
        let steps: Vec<f64> = (0..=20).map(|i| 50.0 * i as f64).collect();
        let curve = |base: f64| -> Vec<(f64, f64)> {
            steps
                .iter()
                .map(|&s| (s, base + 0.3 * (1.0 - (-s / 300.0).exp())))
                .collect()
        };
        let series = vec![
            Series {
                name: "LoRA r=8 (n=3)".into(),
                band: Some(
                    curve(0.5)
                        .iter()
                        .map(|&(x, y)| (x, y - 0.03, y + 0.03))
                        .collect(),
                ),
                points: curve(0.5),
                color: Some(RGBColor(31, 119, 180)),
                ..Series::default()
            },
            Series {
                name: "AdaLoRA 12→8 (n=3)".into(),
                band: Some(
                    curve(0.55)
                        .iter()
                        .map(|&(x, y)| (x, y - 0.1, y + 0.2))
                        .collect(),
                ),
                points: curve(0.55),
                dashed: true,
                color: Some(RGBColor(255, 127, 14)),
                ..Series::default()
            },
        ];
        let p = dir.join("curves_dev.png");
        let plot = LinePlot {
            title: "rotten_tomatoes: dev accuracy during training\nmean ± 1 std over seeds",
            x_desc: "optimizer step",
            y_desc: "dev accuracy",
            series: &series,
            y_bounds: metric_bounds("accuracy"),
            ..LinePlot::default()
        };
        // The band reaches 1.05: the axis stops at 1.
        let (_, y) = plot.ranges(plot.extent().unwrap());
        assert!(y.end <= 1.0 && y.start >= 0.0, "{y:?}");
        save(&plot, &p).unwrap();
        both_exist(&p);
        let svg = std::fs::read_to_string(p.with_extension("svg")).unwrap();
        assert!(svg.contains("<polygon"), "no band");
        assert!(is_svg_with(&p.with_extension("svg"), "AdaLoRA 12→8 (n=3)"));
        // The legend strip (below the chart): one stroke for the solid line, dashes for the
        // dashed one.
        let chart_bottom = (title_height(plot.title) + 480) as i32;
        let strokes = legend_strokes_below(&svg, chart_bottom);
        assert!(
            strokes.iter().any(|s| s.1 >= SWATCH_WIDTH - 1),
            "solid: {strokes:?}"
        );
        assert!(
            strokes.iter().filter(|s| s.1 <= DASH.0 as i32).count() >= 3,
            "dashed: {strokes:?}"
        );

        // Error bars at the same x, dodged apart; a log₂ budget axis.
        let budget = vec![
            Series {
                name: "LoRA".into(),
                points: vec![(1.0, 70.0), (2.0, 74.0), (8.0, 76.0), (16.0, 77.0)],
                intervals: Some(vec![Some((66.0, 74.0)), None, Some((75.0, 77.0)), None]),
                markers: true,
                ..Series::default()
            },
            Series {
                name: "AdaLoRA".into(),
                points: vec![(1.0, 72.0), (2.0, 75.0), (8.0, 78.0), (16.0, 78.5)],
                errors: Some(vec![1.0, 2.0, 1.0, 0.5]),
                markers: true,
                ..Series::default()
            },
        ];
        let p = dir.join("metric_vs_budget.png");
        save(
            &LinePlot {
                title: "demo: dev accuracy vs final budget\nmean ± 95% CI over seeds",
                x_desc: "mean final rank per adapted matrix",
                y_desc: "dev accuracy (×100)",
                series: &budget,
                y_bounds: Some((0.0, 100.0)),
                dodge: 0.015,
                log2_x: true,
                ..LinePlot::default()
            },
            &p,
        )
        .unwrap();
        both_exist(&p);
        assert!(is_svg_with(&p.with_extension("svg"), "16"));
    }

    /// `n` bar series as a rank-target ablation names them: method × target set, budgets in
    /// blocks of eight; coloured by method family and target set.
    fn demo_bars(n: usize, groups: usize) -> Vec<BarSeries> {
        const TARGETS: [&str; 4] = [
            "query,value",
            "query,key,value,attention-output",
            "intermediate,output",
            "all",
        ];
        let legend = |s: usize| {
            let method = if s.is_multiple_of(2) {
                "LoRA"
            } else {
                "AdaLoRA"
            };
            format!("{method} (target.modules={})", TARGETS[(s / 2) % 4])
        };
        let items: Vec<(String, usize, String)> = (0..n)
            .map(|s| (legend(s), s % 2, TARGETS[(s / 2) % 4].to_string()))
            .collect();
        let colors = ColorMap::by_family(&items);
        (0..n)
            .map(|s| BarSeries {
                name: legend(s),
                values: (0..groups)
                    .map(|g| {
                        let m = 60.0 + ((s * 7 + g * 3) % 20) as f64;
                        Some(Bar {
                            mean: m,
                            interval: (s % 3 != 0).then_some((m - 2.5, m + 2.0)),
                        })
                    })
                    .collect(),
                color: Some(colors.color_of(&legend(s))),
            })
            .collect()
    }

    #[test]
    fn bars_with_intervals_and_the_legend_below() {
        let (_keep, dir) = out_dir();
        let groups: Vec<String> = ["RTE", "MRPC", "STS-B", "CoLA", "SST-2"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let mut series = demo_bars(4, groups.len());
        series[0].values[3] = None;
        series[1].values[3] = Some(Bar {
            mean: -4.0,
            interval: Some((-9.0, 1.0)),
        });
        let b = dir.join("bars.png");
        let fig = GroupedBars {
            title: "demo sweep: dev main metric by task\nmean ± 95% CI over seeds (n=3)",
            y_desc: "dev main metric (×100)",
            groups: &groups,
            series: &series,
            y_bounds: Some((-100.0, 100.0)),
        };
        save(&fig, &b).unwrap();
        both_exist(&b);
        let svg = b.with_extension("svg");
        assert!(is_svg_with(&svg, "MRPC"));
        assert!(is_svg_with(&svg, "-4.0"));
        assert!(is_svg_with(&svg, "(target.modules=query,value)"));
        // Accuracy bars never push the axis past 100.
        let acc = GroupedBars {
            y_bounds: Some((0.0, 100.0)),
            series: &[BarSeries {
                name: "x".into(),
                values: vec![Some(Bar {
                    mean: 97.0,
                    interval: Some((94.0, 101.0)),
                })],
                color: None,
            }],
            groups: &groups[..1],
            ..GroupedBars::default()
        };
        let y = acc.y_range(acc.extent().unwrap());
        assert_eq!((y.start, y.end), (0.0, 100.0));
    }

    #[test]
    fn forty_series_make_five_panels_of_small_multiples() {
        let labels: Vec<usize> = (0..40).collect();
        let chunks = chunk_balanced(&labels, MAX_SERIES_PER_PANEL);
        assert_eq!(chunks.len(), 5);
        assert!(chunks.iter().all(|c| c.len() == 8));
        assert_eq!(chunks.concat(), labels);
        let sizes: Vec<usize> = chunk_balanced(&labels[..9], 8)
            .iter()
            .map(Vec::len)
            .collect();
        assert_eq!(sizes, [5, 4]);
        assert_eq!(chunk_balanced(&labels[..3], 8).len(), 1);
        assert!(chunk_balanced::<usize>(&[], 8).is_empty());
        assert_eq!(panels_needed(40, 8), 5);
        assert_eq!(grid_columns(5), 3);
        assert_eq!(grid_columns(4), 2);

        let (_keep, dir) = out_dir();
        let all = demo_bars(40, 1);
        let groups = vec!["rotten_tomatoes".to_string()];
        let chunks = chunk_balanced(&all, MAX_SERIES_PER_PANEL);
        let titles: Vec<String> = (0..chunks.len())
            .map(|i| format!("final rank {}", 1 << i))
            .collect();
        let panels: Vec<Panel> = chunks
            .iter()
            .zip(&titles)
            .map(|(c, t)| {
                Panel::Bars(GroupedBars {
                    title: t,
                    y_desc: "dev accuracy (×100)",
                    groups: &groups,
                    series: c,
                    y_bounds: Some((0.0, 100.0)),
                })
            })
            .collect();
        let fig = SmallMultiples {
            title: "ablation: dev accuracy, mean ± 95% CI over seeds (n=2)",
            panels: &panels,
            columns: None,
        };
        let (w, _) = fig.size();
        assert!(w >= 3 * 480, "{w}");
        let p = dir.join("small_multiples_bars.png");
        save(&fig, &p).unwrap();
        both_exist(&p);
        assert!(is_svg_with(&p.with_extension("svg"), "final rank 16"));

        // Line panels share x and y.
        let line_series: Vec<Vec<Series>> = (0..3)
            .map(|p| {
                (0..6)
                    .map(|s| Series {
                        name: format!("series {}", p * 6 + s),
                        points: (0..12)
                            .map(|i| (i as f64 * 10.0, 0.6 + 0.01 * (i * (s + 1) + p) as f64))
                            .collect(),
                        color: Some(categorical(p * 6 + s)),
                        ..Series::default()
                    })
                    .collect()
            })
            .collect();
        let titles = ["panel 1", "panel 2", "panel 3"];
        let panels: Vec<Panel> = line_series
            .iter()
            .zip(titles)
            .map(|(s, t)| {
                Panel::Lines(LinePlot {
                    title: t,
                    x_desc: "optimizer step",
                    y_desc: "dev accuracy",
                    series: s,
                    y_bounds: metric_bounds("accuracy"),
                    ..LinePlot::default()
                })
            })
            .collect();
        let p = dir.join("small_multiples_lines.png");
        save(
            &SmallMultiples {
                title: "18 curves in 3 panels",
                panels: &panels,
                columns: None,
            },
            &p,
        )
        .unwrap();
        both_exist(&p);
    }

    #[test]
    fn accuracy_axes_stay_inside_the_metric_range() {
        // One evaluation at 0.845 (the qlora_long figure had −0.1 … 1.8).
        let (lo, hi) = axis_range(0.845, 0.845, metric_bounds("accuracy"));
        assert!(
            lo > 0.7 && hi < 0.95 && lo < 0.845 && hi > 0.845,
            "{lo} {hi}"
        );
        let (lo, hi) = axis_range(-0.05, 1.2, metric_bounds("accuracy"));
        assert_eq!((lo, hi), (0.0, 1.0));
        let (lo, hi) = axis_range(0.84, 0.86, Some((0.0, 1.0)));
        assert!(lo > 0.8 && hi < 0.9, "{lo} {hi}");
        let (lo, hi) = axis_range(1.0, 1.0, Some((0.0, 1.0)));
        assert!(lo < 1.0 && hi == 1.0, "{lo} {hi}");
        let (lo, _) = axis_range(0.01, 0.7, metric_bounds("task_loss"));
        assert_eq!(lo, 0.0);
        assert_eq!(metric_bounds("matthews_correlation"), Some((-1.0, 1.0)));
        assert_eq!(metric_bounds("pearson"), Some((-1.0, 1.0)));
        assert_eq!(metric_bounds("f1"), Some((0.0, 1.0)));
        assert_eq!(metric_bounds("bleu"), None);
        assert_eq!(tick(2.0), "2");
        assert_eq!(tick(0.25), "0.25");
    }

    #[test]
    fn colour_mapping_is_stable() {
        let rows = ["LoRA r=2", "AdaLoRA 3→2", "LoRA r=8", "AdaLoRA 12→8"];
        let a = ColorMap::new(&rows);
        let b = ColorMap::new(&rows);
        assert_eq!(a, b);
        assert_eq!(a.color_of("LoRA r=8"), series_color(2));
        let distinct: std::collections::BTreeSet<_> =
            rows.iter().map(|r| a.color_of(r).rgb()).collect();
        assert_eq!(distinct.len(), 4);
        // An unknown label: the same colour every time.
        assert_eq!(a.color_of("Full FT"), b.color_of("Full FT"));
        // Families: LoRA blues, AdaLoRA oranges; a shared member key shares a colour.
        let items = [
            ("LoRA r=1 (qv)", 0, "qv"),
            ("AdaLoRA 2→1 (qv)", 1, "qv"),
            ("LoRA r=1 (all)", 0, "all"),
            ("LoRA r=2 (qv)", 0, "qv"),
            ("AdaLoRA 3→2 (all)", 1, "all"),
        ];
        let f = ColorMap::by_family(&items);
        assert_eq!(f.color_of("LoRA r=1 (qv)"), RGBColor(31, 119, 180));
        assert_eq!(f.color_of("AdaLoRA 2→1 (qv)"), RGBColor(255, 127, 14));
        assert_eq!(f.color_of("LoRA r=1 (qv)"), f.color_of("LoRA r=2 (qv)"));
        assert_ne!(f.color_of("LoRA r=1 (qv)"), f.color_of("LoRA r=1 (all)"));
        assert_ne!(
            f.color_of("AdaLoRA 2→1 (qv)"),
            f.color_of("AdaLoRA 3→2 (all)")
        );
        let mut g = f.clone();
        g.insert("LoRA (qv)", f.color_of("LoRA r=1 (qv)"));
        assert_eq!(g.color_of("LoRA (qv)"), f.color_of("LoRA r=2 (qv)"));
        assert_eq!(g.labels().count(), 6);
    }

    #[test]
    fn legends_fit_their_strip() {
        let names = ["a", "bb", "ccc"];
        let (cols, col, rows) = legend_layout(&names, 960);
        assert_eq!((cols, rows), (3, 1));
        assert!(col * cols as u32 <= 960);
        let long: Vec<String> = (0..8)
            .map(|i| format!("AdaLoRA 12→8 (target.modules=query,key,value,attention-output) {i}"))
            .collect();
        let long: Vec<&str> = long.iter().map(String::as_str).collect();
        let (cols, _, rows) = legend_layout(&long, 960);
        assert!(cols * rows >= 8 && cols <= 2, "{cols} {rows}");
        assert_eq!(legend_layout(&[], 960), (0, 0, 0));
        // A figure is as wide as its widest legend entry needs.
        let entry = LegendEntry {
            name: "LoRA fixed pattern (lora.rank_pattern_file=results/quickstart/a/b/c.json)"
                .into(),
            color: BLACK,
            swatch: Swatch::Box,
        };
        let series = [BarSeries {
            name: entry.name.clone(),
            values: vec![Some(Bar {
                mean: 1.0,
                interval: None,
            })],
            color: None,
        }];
        let groups = ["t".to_string()];
        let bars = GroupedBars {
            groups: &groups,
            series: &series,
            ..GroupedBars::default()
        };
        assert!(bars.size().0 >= text_width(&entry.name, LEGEND_SIZE) + SWATCH_WIDTH as u32);
        assert!(legend_width(&[entry]) > 0);
    }
}
