//! `adalora`: fine-tune BERT-family encoders with LoRA / AdaLoRA, and plan AdaLoRA runs.

mod schedule;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "adalora", version, about = "AdaLoRA / LoRA research framework on burn")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the AdaLoRA budget schedule b(t) as CSV (step,budget,mask) and optionally plot it.
    Schedule(schedule::ScheduleArgs),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Schedule(args) => schedule::run(&args),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
