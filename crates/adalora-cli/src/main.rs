//! `adalora`: fine-tune BERT-family encoders with full FT, BitFit, LoRA or AdaLoRA; evaluate,
//! merge and embed; plan AdaLoRA budget schedules.

mod analyze;
mod bench;
mod commands;
mod plot;
mod schedule;
mod study;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "adalora",
    version,
    about = "AdaLoRA / LoRA research framework on burn"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Fine-tune a model on a task and write a run folder.
    Train(Box<commands::TrainArgs>),
    /// Re-evaluate a run (or a PEFT adapter) on the task's dev split(s); prints JSON.
    Eval(commands::EvalArgs),
    /// Logits and predictions of a run (or PEFT adapter) on the task's first dev split, as CSV.
    Predict(commands::PredictArgs),
    /// Merge a run's adapter into the base weights and write an HF model folder.
    Merge(commands::MergeArgs),
    /// Sentence embeddings (one sentence per input line) to CSV.
    Encode(commands::EncodeArgs),
    /// Heatmap of a run's final rank per layer and module (AdaLoRA paper, Figure 3).
    PlotRanks(plot::PlotRanksArgs),
    /// Run a sweep file's grid of runs (resumable; -j parallel processes); writes the report and figures.
    Sweep(study::SweepArgs),
    /// Table-1-style report (Markdown + CSV) of a sweep folder.
    Report(study::ReportArgs),
    /// Figures of a run, several runs (curves) or a sweep (PNG + SVG).
    Plot(study::PlotArgs),
    /// Print the AdaLoRA budget schedule b(t) as CSV (step,budget,mask) and optionally plot it.
    Schedule(schedule::ScheduleArgs),
    /// Weight-space analyses of an adapter (spectra, amplification; φ against a second one with
    /// --against) or of every run of a sweep with their stability across seeds; CSV + figures.
    Analyze(analyze::AnalyzeArgs),
    /// Time training steps, the allocator, eval throughput and peak memory (full FT, LoRA,
    /// AdaLoRA); table on screen, optionally CSV.
    Bench(bench::BenchArgs),
}

/// Keep freed tensor buffers inside the process. By default glibc serves every allocation
/// above 128 KiB–32 MiB with its own `mmap` and trims the heap on free, so each training step
/// page-faults and zeroes its activations afresh: `clear_page_erms` alone was 14% of a LoRA
/// step's `perf` samples (MiniLM, 32×128), gone with these settings. Freed memory is reused,
/// so the resident size stays at the peak instead of growing.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn keep_freed_memory() {
    // SAFETY: mallopt only changes allocator parameters; called before any other thread runs.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn keep_freed_memory() {}

fn main() {
    keep_freed_memory();
    let cli = Cli::parse();
    if matches!(cli.command, Command::Train(_) | Command::Sweep(_)) {
        // SIGTERM / SIGINT / SIGUSR1: finish the step, checkpoint, exit INTERRUPTED_EXIT.
        if let Err(e) = adalora_train::signals::install() {
            eprintln!("warning: cannot catch stop signals ({e}); a signal will lose the current run's progress since its last checkpoint");
        }
    }
    let result = match cli.command {
        Command::Train(args) => commands::train(&args),
        Command::Eval(args) => commands::eval(&args),
        Command::Merge(args) => commands::merge(&args),
        Command::Predict(args) => commands::predict(&args),
        Command::Encode(args) => commands::encode(&args),
        Command::PlotRanks(args) => plot::run(&args),
        Command::Schedule(args) => schedule::run(&args),
        Command::Bench(args) => bench::run(&args),
        Command::Analyze(args) => analyze::run(&args),
        Command::Sweep(args) => study::sweep(&args),
        Command::Report(args) => study::report(&args),
        Command::Plot(args) => study::plot(&args),
    };
    if let Err(e) = result {
        if adalora_train::signals::is_interrupted(&e) {
            eprintln!("{e:#}");
            std::process::exit(adalora_train::signals::INTERRUPTED_EXIT);
        }
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
