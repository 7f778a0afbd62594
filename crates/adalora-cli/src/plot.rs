//! `adalora plot-ranks`: the final rank of every adapted matrix of a run as a layer × module
//! heatmap (the AdaLoRA paper's Figure 3). `adalora plot --kind heatmap` does the same and more.

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
}

pub fn run(args: &PlotRanksArgs) -> anyhow::Result<()> {
    let out = args
        .output
        .clone()
        .unwrap_or_else(|| args.run.join("rank_pattern.png"));
    for written in adalora_study::figures::run_heatmap(&args.run, &out)? {
        eprintln!("wrote {}", written.display());
    }
    Ok(())
}
