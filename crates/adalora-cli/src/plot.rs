//! `adalora plot-ranks`: the final rank of every adapted matrix of a run as a layer × module
//! heatmap (the AdaLoRA paper's Figure 3).

use std::path::PathBuf;

use adalora_plots::plot_rank_heatmap;
use anyhow::Context;
use clap::Args;

#[derive(Args, Debug)]
pub struct PlotRanksArgs {
    /// A run folder with rank_pattern.json (AdaLoRA runs).
    #[arg(long)]
    run: PathBuf,
    /// PNG to write (default: <run>/rank_pattern.png).
    #[arg(long)]
    output: Option<PathBuf>,
}

/// Module rows in the paper's order.
const ORDER: [(&str, &str); 7] = [
    ("query", "W_q"),
    ("key", "W_k"),
    ("value", "W_v"),
    ("attention-output", "W_o"),
    ("intermediate", "W_f1"),
    ("output", "W_f2"),
    ("pooler", "pooler"),
];

pub fn run(args: &PlotRanksArgs) -> anyhow::Result<()> {
    let path = args.run.join("rank_pattern.json");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("reading {} (only AdaLoRA runs have one)", path.display()))?;
    let doc: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let modules = doc["modules"]
        .as_array()
        .with_context(|| format!("{}: no modules", path.display()))?;
    let layers = modules
        .iter()
        .filter_map(|m| m["layer"].as_u64())
        .max()
        .map(|l| l as usize + 1)
        .unwrap_or(1);
    let rows: Vec<(&str, &str)> = ORDER
        .iter()
        .copied()
        .filter(|(key, _)| modules.iter().any(|m| m["module"] == *key))
        .collect();
    let mut ranks = vec![vec![None; layers]; rows.len()];
    for m in modules {
        let row = rows.iter().position(|(key, _)| m["module"] == *key);
        let layer = m["layer"].as_u64().map(|l| l as usize).unwrap_or(0);
        if let (Some(row), Some(rank)) = (row, m["rank"].as_u64()) {
            ranks[row][layer] = Some(rank as usize);
        }
    }
    let labels: Vec<String> = rows.iter().map(|(_, label)| label.to_string()).collect();
    let out = args
        .output
        .clone()
        .unwrap_or_else(|| args.run.join("rank_pattern.png"));
    let title = format!(
        "final rank per matrix (step {}, total {} of budget {})",
        doc["step"], doc["total_rank"], doc["budget"]
    );
    plot_rank_heatmap(&out, &labels, layers, &ranks, &title)?;
    eprintln!("wrote {}", out.display());
    Ok(())
}
