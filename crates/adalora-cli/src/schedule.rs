//! `adalora schedule`: the budget schedule a run would follow, to plan tinit/tfinal/deltaT.

use std::io::Write;
use std::path::PathBuf;

use adalora_plots::{plot_budget_schedule, SchedulePoint};
use adalora_train::BudgetSchedule;
use anyhow::Context;
use clap::Args;

#[derive(Args, Debug)]
pub struct ScheduleArgs {
    /// Initial rank of every adapted matrix.
    #[arg(long)]
    init_r: usize,
    /// Average final rank (b(T) = target_r · matrices).
    #[arg(long)]
    target_r: usize,
    /// Number of adapted matrices n.
    #[arg(long)]
    matrices: usize,
    /// Explicit total final rank b(T), overriding target_r · matrices.
    #[arg(long)]
    target_total_rank: Option<usize>,
    /// Warm-up steps at the full budget.
    #[arg(long)]
    tinit: usize,
    /// Final steps with the mask fixed (a duration, not a step index).
    #[arg(long)]
    tfinal: usize,
    /// Total number of optimizer steps T.
    #[arg(long)]
    total_step: usize,
    /// Masking interval ΔT.
    #[arg(long)]
    delta_t: usize,
    /// Also draw b(t) to this PNG file.
    #[arg(long)]
    plot: Option<PathBuf>,
}

pub fn run(args: &ScheduleArgs) -> anyhow::Result<()> {
    let schedule = BudgetSchedule::new(
        args.init_r * args.matrices,
        args.target_total_rank
            .unwrap_or(args.target_r * args.matrices),
        args.tinit,
        args.tfinal,
        args.delta_t,
        args.total_step,
    )?;
    if args.target_total_rank.is_none() && args.target_r > args.init_r {
        anyhow::bail!(
            "invalid setting target_r = {}: cannot exceed init_r = {}",
            args.target_r,
            args.init_r
        );
    }
    let points: Vec<SchedulePoint> = (0..schedule.total_step)
        .map(|t| SchedulePoint {
            step: t,
            budget: schedule.budget(t).0,
            mask: schedule.applies_mask(t),
            fixed: t >= schedule.final_start(),
        })
        .collect();
    write_csv(&points)?;
    if let Some(path) = &args.plot {
        let title = format!(
            "AdaLoRA budget: b(0)={} → b(T)={}, tinit={}, tfinal={}, ΔT={}, T={}",
            schedule.init_budget,
            schedule.target_budget,
            schedule.tinit,
            schedule.tfinal,
            schedule.delta_t,
            schedule.total_step
        );
        for written in plot_budget_schedule(path, &points, &title)? {
            eprintln!("plot written to {}", written.display());
        }
    }
    Ok(())
}

fn write_csv(points: &[SchedulePoint]) -> anyhow::Result<()> {
    let stdout = std::io::stdout();
    let mut out = csv::Writer::from_writer(stdout.lock());
    out.write_record(["step", "budget", "mask"])?;
    for p in points {
        out.write_record([
            p.step.to_string(),
            p.budget.to_string(),
            u8::from(p.mask).to_string(),
        ])?;
    }
    out.flush().context("writing CSV to stdout")?;
    std::io::stdout().flush()?;
    Ok(())
}
