//! `adalora plot-ranks`: the final rank of every adapted matrix of a run as a layer × module
//! heatmap (the AdaLoRA paper's Figure 3), with a colour bar and a title naming the run, its
//! method and budget. `adalora plot --kind heatmap` does the same and more.

use std::path::PathBuf;

use clap::Args;

#[derive(Args, Debug)]
pub struct PlotRanksArgs {
    /// A run folder with rank_pattern.json (AdaLoRA runs).
    #[arg(long)]
    run: PathBuf,
    /// PNG to write (an SVG is written beside it; default: <run>/rank_pattern.png).
    #[arg(long)]
    output: Option<PathBuf>,
    /// Top of the colour scale (give several runs the same to compare them; default: the
    /// run's initial rank).
    #[arg(long)]
    vmax: Option<f64>,
}

pub fn run(args: &PlotRanksArgs) -> anyhow::Result<()> {
    let out = args
        .output
        .clone()
        .unwrap_or_else(|| args.run.join("rank_pattern.png"));
    if let Some(v) = args.vmax.filter(|v| !(v.is_finite() && *v > 0.0)) {
        anyhow::bail!("--vmax {v}: expected a positive number");
    }
    for written in adalora_study::figures::run_heatmap_scaled(&args.run, &out, args.vmax)? {
        eprintln!("wrote {}", written.display());
    }
    Ok(())
}
