//! Figures drawn with plotters (bitmap backend, system TrueType fonts via fontconfig).
//!
//! Every function writes a PNG to a temporary name and renames it into place, so an
//! interrupted run never leaves a truncated figure behind.

use std::path::{Path, PathBuf};

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

/// Draw into `path.tmp.png`, then rename over `path`.
fn atomically(
    path: &Path,
    size: (u32, u32),
    draw: impl FnOnce(&DrawingArea<BitMapBackend, plotters::coord::Shift>) -> Result<(), String>,
) -> Result<(), PlotError> {
    let tmp = path.with_extension("tmp.png");
    {
        let root = BitMapBackend::new(&tmp, size).into_drawing_area();
        root.fill(&WHITE).map_err(|e| draw_err(path, e))?;
        draw(&root).map_err(|e| draw_err(path, e))?;
        root.present().map_err(|e| draw_err(path, e))?;
    }
    std::fs::rename(&tmp, path).map_err(|e| draw_err(path, e))
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

/// b(t) as a step line, mask steps marked, initial/final budgets labelled.
pub fn plot_budget_schedule(
    path: &Path,
    points: &[SchedulePoint],
    title: &str,
) -> Result<(), PlotError> {
    let (first, last) = match (points.first(), points.last()) {
        (Some(f), Some(l)) => (f, l),
        _ => return Err(PlotError::Empty("the schedule has no steps".into())),
    };
    let max_b = points.iter().map(|p| p.budget).max().unwrap_or(1).max(1);
    let min_b = points.iter().map(|p| p.budget).min().unwrap_or(0);
    let y_lo = min_b.saturating_sub((max_b - min_b) / 10 + 1);
    let y_hi = max_b + (max_b - min_b) / 10 + 1;
    atomically(path, (900, 500), |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(title, ("sans-serif", 22))
            .margin(15)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(first.step..last.step + 1, y_lo..y_hi)
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc("optimizer step t")
            .y_desc("budget b(t) (triplets)")
            .draw()
            .map_err(|e| e.to_string())?;
        chart
            .draw_series(LineSeries::new(
                points.iter().map(|p| (p.step, p.budget)),
                BLUE.stroke_width(2),
            ))
            .map_err(|e| e.to_string())?
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
                .map_err(|e| e.to_string())?
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
            .map_err(|e| e.to_string())?
            .label("mask step (budget phase)")
            .legend(|(x, y)| Circle::new((x + 10, y), 3, RED.filled()));
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|e| e.to_string())
    })
}

/// Final rank of every adapted matrix: rows = module types (first at the top), columns =
/// layers (paper Fig. 3). `ranks[m][l]` is the rank of module `m` in layer `l`; `None` = not
/// adapted.
pub fn plot_rank_heatmap(
    path: &Path,
    modules: &[String],
    layers: usize,
    ranks: &[Vec<Option<usize>>],
    title: &str,
) -> Result<(), PlotError> {
    if modules.is_empty() || layers == 0 {
        return Err(PlotError::Empty("no adapted matrices".into()));
    }
    let n = modules.len();
    let max_rank = ranks
        .iter()
        .flatten()
        .flatten()
        .copied()
        .max()
        .unwrap_or(1)
        .max(1);
    let cell = 64u32;
    let size = (150 + cell * layers as u32 + 40, 90 + cell * n as u32 + 20);
    // Row m is drawn at y = n − 1 − m so the first module is on top.
    let row_y = |m: usize| n - 1 - m;
    atomically(path, size, |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(title, ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(40)
            .y_label_area_size(80)
            .build_cartesian_2d(
                (0..layers - 1).into_segmented(),
                (0..n - 1).into_segmented(),
            )
            .map_err(|e| e.to_string())?;
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
            .y_label_formatter(&|v| match v {
                SegmentValue::CenterOf(y) if *y < n => modules[n - 1 - *y].clone(),
                _ => String::new(),
            })
            .label_style(("sans-serif", 16))
            .draw()
            .map_err(|e| e.to_string())?;
        for (m, row) in ranks.iter().enumerate() {
            for (l, rank) in row.iter().enumerate() {
                let y = row_y(m);
                let color = match rank {
                    Some(r) => ViridisRGB::get_color(*r as f64 / max_rank as f64).to_rgba(),
                    None => RGBAColor(220, 220, 220, 1.0),
                };
                let corners = [
                    (SegmentValue::Exact(l), SegmentValue::Exact(y)),
                    (SegmentValue::Exact(l + 1), SegmentValue::Exact(y + 1)),
                ];
                chart
                    .draw_series(std::iter::once(Rectangle::new(corners, color.filled())))
                    .map_err(|e| e.to_string())?;
                let label = rank.map(|r| r.to_string()).unwrap_or_else(|| "-".into());
                let dark = rank.is_some_and(|r| (r as f64) < 0.6 * max_rank as f64);
                let style = ("sans-serif", 18)
                    .into_font()
                    .color(if dark { &WHITE } else { &BLACK })
                    .pos(Pos::new(HPos::Center, VPos::Center));
                chart
                    .draw_series(std::iter::once(Text::new(
                        label,
                        (SegmentValue::CenterOf(l), SegmentValue::CenterOf(y)),
                        style,
                    )))
                    .map_err(|e| e.to_string())?;
            }
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_png(path: &Path) -> bool {
        let bytes = std::fs::read(path).unwrap();
        bytes.len() > 1000 && bytes.starts_with(&[0x89, b'P', b'N', b'G'])
    }

    #[test]
    fn schedule_plot_is_a_png() {
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
        assert!(!path.with_extension("tmp.png").exists());
        assert!(matches!(
            plot_budget_schedule(&path, &[], "x"),
            Err(PlotError::Empty(_))
        ));
    }

    #[test]
    fn heatmap_is_a_png() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.png");
        let modules: Vec<String> = ["Wq", "Wk"].iter().map(|s| s.to_string()).collect();
        let ranks = vec![
            vec![Some(3), Some(0), None],
            vec![Some(12), Some(5), Some(1)],
        ];
        plot_rank_heatmap(&path, &modules, 3, &ranks, "ranks").unwrap();
        assert!(is_png(&path));
    }
}
