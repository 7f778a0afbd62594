//! Figures drawn with plotters: every figure is written as a PNG (bitmap backend, system
//! TrueType fonts via fontconfig) and an SVG beside it.
//!
//! A figure is a value implementing [`Figure`]; its `draw` is generic over the backend so the
//! same code draws both files. Each file is drawn under a temporary name and renamed into
//! place, so an interrupted run never leaves a truncated figure behind.

use std::path::{Path, PathBuf};

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use thiserror::Error;

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
    if let Some(dir) = png.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| draw_err(&png, e))?;
    }
    let tmp_png = png.with_extension("tmp.png");
    {
        let root = BitMapBackend::new(&tmp_png, figure.size()).into_drawing_area();
        root.fill(&WHITE).map_err(|e| draw_err(&png, e))?;
        figure.draw(&root).map_err(|e| draw_err(&png, e))?;
        root.present().map_err(|e| draw_err(&png, e))?;
    }
    std::fs::rename(&tmp_png, &png).map_err(|e| draw_err(&png, e))?;
    let tmp_svg = svg.with_extension("tmp.svg");
    {
        let root = SVGBackend::new(&tmp_svg, figure.size()).into_drawing_area();
        root.fill(&WHITE).map_err(|e| draw_err(&svg, e))?;
        figure.draw(&root).map_err(|e| draw_err(&svg, e))?;
        root.present().map_err(|e| draw_err(&svg, e))?;
    }
    std::fs::rename(&tmp_svg, &svg).map_err(|e| draw_err(&svg, e))?;
    Ok(vec![png, svg])
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// A readable colour for series `i` (matplotlib's tab10).
pub fn series_color(i: usize) -> RGBColor {
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
    let (r, g, b) = TAB10[i % TAB10.len()];
    RGBColor(r, g, b)
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
/// top), columns = layers (paper Fig. 3), every cell annotated, with a colour bar.
/// `values[m][l]` is `None` where the matrix is not adapted.
pub struct RankHeatmap<'a> {
    pub modules: &'a [String],
    pub values: &'a [Vec<Option<f64>>],
    pub title: &'a str,
}

impl RankHeatmap<'_> {
    fn layers(&self) -> usize {
        self.values.first().map_or(0, Vec::len)
    }

    fn max(&self) -> f64 {
        self.values
            .iter()
            .flatten()
            .flatten()
            .copied()
            .fold(1.0, f64::max)
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

impl Figure for RankHeatmap<'_> {
    fn size(&self) -> (u32, u32) {
        let cell = 64u32;
        let width = (100 + cell * self.layers() as u32 + 30 + COLORBAR_WIDTH)
            .max(8 * self.title.len() as u32 + 40);
        (width, 100 + cell * self.modules.len() as u32 + 20)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), String> {
        let (n, layers) = (self.modules.len(), self.layers());
        if n == 0 || layers == 0 {
            return Err("no adapted matrices".into());
        }
        let max = self.max();
        let titled = root.titled(self.title, ("sans-serif", 18)).map_err(err)?;
        let (w, _) = titled.dim_in_pixel();
        let (grid_area, bar_area) = titled.split_horizontally(w - COLORBAR_WIDTH);
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
            .x_desc("layer")
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
            .label_style(("sans-serif", 16))
            .draw()
            .map_err(err)?;
        for (m, row) in self.values.iter().enumerate() {
            let y = n - 1 - m;
            for (l, value) in row.iter().enumerate() {
                let color = match value {
                    Some(v) => ViridisRGB::get_color(v / max).to_rgba(),
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
                let dark = value.is_some_and(|v| v < 0.6 * max);
                let style = ("sans-serif", 17)
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
        draw_colorbar(&bar_area, max, "rank")
    }
}

/// A vertical viridis strip from 0 to `max` with tick labels.
fn draw_colorbar<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    max: f64,
    label: &str,
) -> Result<(), String> {
    let mut bar = ChartBuilder::on(area)
        .margin_top(10)
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
        .label_style(("sans-serif", 14))
        .draw()
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

/// A line of a [`LinePlot`], optionally with ± error bars at its points.
#[derive(Clone, Debug, Default)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
    /// Half-widths of the error bars, one per point.
    pub errors: Option<Vec<f64>>,
    /// Draw markers at the points (sparse data) rather than a plain line.
    pub markers: bool,
    pub dashed: bool,
}

/// Several series over a shared x axis, with a legend.
pub struct LinePlot<'a> {
    pub title: &'a str,
    pub x_desc: &'a str,
    pub y_desc: &'a str,
    pub series: &'a [Series],
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

/// Dash and gap lengths of a dashed series, in pixels (the legend repeats them).
const DASH: (u32, u32) = (8, 5);

/// The strokes of a legend entry's sample line (x from, x to): one for a solid series, dashes
/// as long as the plotted ones for a dashed series, so the legend tells the two apart.
fn legend_strokes(dashed: bool) -> Vec<(i32, i32)> {
    const FROM: i32 = 70;
    const TO: i32 = 112;
    if !dashed {
        return vec![(FROM, TO)];
    }
    let (on, off) = (DASH.0 as i32, DASH.1 as i32);
    (FROM..TO)
        .step_by((on + off) as usize)
        .map(|x| (x, (x + on).min(TO)))
        .collect()
}

/// Height of the legend strip under a line plot.
fn legend_height(series: usize) -> u32 {
    22 * series as u32 + 14
}

impl Figure for LinePlot<'_> {
    fn size(&self) -> (u32, u32) {
        (960, 520 + legend_height(self.series.len()))
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), String> {
        // The legend gets its own strip under the chart so it never hides a line.
        let (_, h) = root.dim_in_pixel();
        let (root, legend) = root.split_vertically(h - legend_height(self.series.len()));
        let root = &root;
        let all: Vec<(f64, f64, f64)> = self
            .series
            .iter()
            .flat_map(|s| {
                s.points.iter().enumerate().map(move |(i, &(x, y))| {
                    let e = s
                        .errors
                        .as_ref()
                        .and_then(|e| e.get(i))
                        .copied()
                        .unwrap_or(0.0);
                    (x, y, e)
                })
            })
            .filter(|(x, y, _)| x.is_finite() && y.is_finite())
            .collect();
        if all.is_empty() {
            return Err("no finite points".into());
        }
        let fold = |f: fn(f64, f64) -> f64, init: f64, g: &dyn Fn(&(f64, f64, f64)) -> f64| {
            all.iter().map(g).fold(init, f)
        };
        let x = padded_range(
            fold(f64::min, f64::INFINITY, &|p| p.0),
            fold(f64::max, f64::NEG_INFINITY, &|p| p.0),
        );
        let y = padded_range(
            fold(f64::min, f64::INFINITY, &|p| p.1 - p.2),
            fold(f64::max, f64::NEG_INFINITY, &|p| p.1 + p.2),
        );
        let mut chart = ChartBuilder::on(root)
            .caption(self.title, ("sans-serif", 20))
            .margin(15)
            .x_label_area_size(45)
            .y_label_area_size(70)
            .build_cartesian_2d(x, y)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc(self.x_desc)
            .y_desc(self.y_desc)
            .label_style(("sans-serif", 15))
            .axis_desc_style(("sans-serif", 17))
            .draw()
            .map_err(err)?;
        for (i, s) in self.series.iter().enumerate() {
            let color = series_color(i);
            let style = color.stroke_width(2);
            let points: Vec<(f64, f64)> = s
                .points
                .iter()
                .copied()
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
            if let Some(errors) = &s.errors {
                chart
                    .draw_series(
                        s.points
                            .iter()
                            .zip(errors)
                            .filter(|(p, e)| p.0.is_finite() && p.1.is_finite() && e.is_finite())
                            .map(|(&(x, y), &e)| {
                                ErrorBar::new_vertical(
                                    x,
                                    y - e,
                                    y,
                                    y + e,
                                    color.stroke_width(2),
                                    10,
                                )
                            }),
                    )
                    .map_err(err)?;
            }
        }
        for (i, s) in self.series.iter().enumerate() {
            let y = 8 + 22 * i as i32 + 11;
            let style = series_color(i).stroke_width(3);
            for (x0, x1) in legend_strokes(s.dashed) {
                legend
                    .draw(&PathElement::new(vec![(x0, y), (x1, y)], style))
                    .map_err(err)?;
            }
            legend
                .draw(&Text::new(
                    s.name.clone(),
                    (120, y),
                    ("sans-serif", 15)
                        .into_font()
                        .color(&BLACK)
                        .pos(Pos::new(HPos::Left, VPos::Center)),
                ))
                .map_err(err)?;
        }
        Ok(())
    }
}

/// One bar series: its name and, per group, the mean and half-width of the error bar.
pub type BarSeries = (String, Vec<Option<(f64, f64)>>);

/// Grouped bars (groups = tasks, one bar per series) with ± error bars and value labels.
pub struct GroupedBars<'a> {
    pub title: &'a str,
    pub y_desc: &'a str,
    pub groups: &'a [String],
    /// (series name, per group: mean and half-width of the error bar).
    pub series: &'a [BarSeries],
}

impl Figure for GroupedBars<'_> {
    fn size(&self) -> (u32, u32) {
        let bars = self.groups.len() * self.series.len().max(1);
        ((200 + 70 * bars as u32).max(760), 560)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), String> {
        let values: Vec<(f64, f64)> = self
            .series
            .iter()
            .flat_map(|(_, v)| v.iter().flatten().copied())
            .filter(|(m, _)| m.is_finite())
            .collect();
        if values.is_empty() || self.groups.is_empty() {
            return Err("no bars".into());
        }
        let lo = values.iter().map(|(m, e)| m - e).fold(0.0, f64::min);
        let hi = values
            .iter()
            .map(|(m, e)| m + e)
            .fold(f64::NEG_INFINITY, f64::max);
        // Head room for the value labels and the legend (one line per series) above the bars.
        let hi = hi + (hi - lo).abs() * (0.12 + 0.08 * self.series.len() as f64);
        let groups = self.groups;
        let mut chart = ChartBuilder::on(root)
            .caption(self.title, ("sans-serif", 20))
            .margin(15)
            .x_label_area_size(45)
            .y_label_area_size(70)
            .build_cartesian_2d(0.0..groups.len() as f64, lo..hi)
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
            .y_desc(self.y_desc)
            .label_style(("sans-serif", 15))
            .axis_desc_style(("sans-serif", 17))
            .draw()
            .map_err(err)?;
        let k = self.series.len() as f64;
        let width = 0.8 / k;
        for (s, (name, vals)) in self.series.iter().enumerate() {
            let color = series_color(s);
            let x0 = |g: usize| g as f64 + 0.1 + width * s as f64;
            let bars: Vec<(usize, f64, f64)> = vals
                .iter()
                .enumerate()
                .filter_map(|(g, v)| v.map(|(m, e)| (g, m, e)))
                .filter(|(_, m, _)| m.is_finite())
                .collect();
            chart
                .draw_series(bars.iter().map(|&(g, m, _)| {
                    Rectangle::new([(x0(g), 0.0), (x0(g) + width * 0.92, m)], color.filled())
                }))
                .map_err(err)?
                .label(name.as_str())
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 6), (x + 18, y + 6)], color.filled())
                });
            chart
                .draw_series(bars.iter().filter(|b| b.2 > 0.0).map(|&(g, m, e)| {
                    let xc = x0(g) + width * 0.46;
                    ErrorBar::new_vertical(xc, m - e, m, m + e, BLACK.stroke_width(1), 8)
                }))
                .map_err(err)?;
            chart
                .draw_series(bars.iter().map(|&(g, m, e)| {
                    let xc = x0(g) + width * 0.46;
                    Text::new(
                        format!("{m:.1}"),
                        (xc, m + e.max(0.0) + (hi - lo) * 0.01),
                        ("sans-serif", 14)
                            .into_font()
                            .color(&BLACK)
                            .pos(Pos::new(HPos::Center, VPos::Bottom)),
                    )
                }))
                .map_err(err)?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .label_font(("sans-serif", 15))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(err)
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
    use std::collections::BTreeMap;

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

    #[test]
    fn schedule_plot_is_a_png_and_svg() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.png");
        let points: Vec<_> = (0..50)
            .map(|t| SchedulePoint {
                step: t,
                budget: 48 - (t / 3).min(16),
                mask: t % 3 == 0,
                fixed: t > 45,
            })
            .collect();
        plot_budget_schedule(&path, &points, "test").unwrap();
        assert!(is_png(&path));
        assert!(is_svg_with(&path.with_extension("svg"), "budget b(t)"));
        assert!(!path.with_extension("tmp.png").exists());
        assert!(matches!(
            plot_budget_schedule(&path, &[], "x"),
            Err(PlotError::Empty(_))
        ));
    }

    #[test]
    fn heatmap_annotates_every_cell() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.png");
        let modules: Vec<String> = ["W_q", "W_k"].iter().map(|s| s.to_string()).collect();
        let values = vec![
            vec![Some(3.0), Some(0.0), None],
            vec![Some(12.0), Some(5.5), Some(1.0)],
        ];
        let fig = RankHeatmap {
            modules: &modules,
            values: &values,
            title: "ranks",
        };
        save(&fig, &path).unwrap();
        assert!(is_png(&path));
        let svg = path.with_extension("svg");
        for label in ["W_q", "W_k", "12", "5.5", "-", "rank", "layer"] {
            assert!(is_svg_with(&svg, label), "{label}");
        }
    }

    /// Per legend row (top to bottom): how many horizontal polylines an SVG draws at that
    /// height below `top`.
    fn legend_stroke_counts(svg: &str, top: i32) -> Vec<usize> {
        let mut rows: BTreeMap<i32, usize> = BTreeMap::new();
        for polyline in svg.split("<polyline").skip(1) {
            let Some(points) = polyline
                .split("points=\"")
                .nth(1)
                .and_then(|p| p.split('"').next())
            else {
                continue;
            };
            let ys: Vec<i32> = points
                .split_whitespace()
                .filter_map(|xy| xy.split(',').nth(1)?.parse::<f64>().ok())
                .map(|y| y.round() as i32)
                .collect();
            if ys.len() >= 2 && ys[0] > top && ys.iter().all(|&y| y == ys[0]) {
                *rows.entry(ys[0]).or_default() += 1;
            }
        }
        rows.into_values().collect()
    }

    #[test]
    fn lines_and_bars_draw_with_legends() {
        let dir = tempfile::tempdir().unwrap();
        let series = vec![
            Series {
                name: "LoRA".into(),
                points: vec![(2.0, 0.7), (8.0, 0.75)],
                errors: Some(vec![0.01, 0.02]),
                markers: true,
                dashed: false,
            },
            Series {
                name: "AdaLoRA".into(),
                points: vec![(2.0, 0.72), (8.0, f64::NAN)],
                dashed: true,
                ..Series::default()
            },
        ];
        let p = dir.path().join("l.png");
        save(
            &LinePlot {
                title: "t",
                x_desc: "budget",
                y_desc: "acc",
                series: &series,
            },
            &p,
        )
        .unwrap();
        let svg = p.with_extension("svg");
        assert!(is_svg_with(&svg, "AdaLoRA"));
        // The legend strip (below the 520-pixel chart): one stroke for the solid LoRA line,
        // dashes for the dashed AdaLoRA line.
        let strokes = legend_stroke_counts(&std::fs::read_to_string(&svg).unwrap(), 520);
        assert_eq!(strokes.len(), 2, "{strokes:?}");
        assert_eq!(strokes[0], 1, "solid series: {strokes:?}");
        assert!(strokes[1] >= 3, "dashed series: {strokes:?}");
        let groups = vec!["rte".to_string(), "mrpc".to_string()];
        let bars = vec![
            ("LoRA".to_string(), vec![Some((70.0, 1.0)), None]),
            (
                "AdaLoRA".to_string(),
                vec![Some((72.0, 0.5)), Some((80.0, 0.0))],
            ),
        ];
        let b = dir.path().join("b.png");
        save(
            &GroupedBars {
                title: "bars",
                y_desc: "acc",
                groups: &groups,
                series: &bars,
            },
            &b,
        )
        .unwrap();
        assert!(is_png(&b));
        assert!(is_svg_with(&b.with_extension("svg"), "mrpc"));
        assert!(is_svg_with(&b.with_extension("svg"), "72.0"));
    }
}
