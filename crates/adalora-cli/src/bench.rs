//! `adalora bench`: training-step time, allocator time, peak RSS and eval throughput of full
//! FT, LoRA and AdaLoRA (see `adalora_train::bench`); a table on screen and optionally CSV.

use std::path::PathBuf;

use adalora_train::bench::{self, BenchOptions, CpuKernels, Shape};
use adalora_train::config::DeviceKind;
use adalora_train::{ComputeDtype, Method, QuantConfig, QuantType};
use anyhow::bail;
use clap::Args;

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Local HF model folder; default: the fetched all-MiniLM-L6-v2.
    #[arg(long)]
    model: Option<PathBuf>,
    /// Comma-separated methods: full, lora, adalora (bitfit also works).
    #[arg(long, default_value = "full,lora,adalora", value_delimiter = ',')]
    methods: Vec<String>,
    /// Comma-separated BATCHxSEQ shapes.
    #[arg(long, default_value = "32x128,32x64", value_delimiter = ',')]
    shapes: Vec<Shape>,
    /// Untimed steps before the timed ones.
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// Timed steps (and timed eval forward passes) per method and shape.
    #[arg(long, default_value_t = 5)]
    reps: usize,
    /// Skip the eval-throughput measurements.
    #[arg(long)]
    no_eval: bool,
    /// Resident memory after steps A and B (e.g. 50,500) of each method, first shape only.
    #[arg(long, value_name = "A,B")]
    rss_growth: Option<String>,
    /// cpu | cuda (needs the `cuda` feature).
    #[arg(long, default_value = "cpu")]
    device: DeviceKind,
    /// CPU backend: flex (burn-flex with the patched kernels, what `train` uses) | ndarray
    /// (ndarray + OpenBLAS, for comparison).
    #[arg(long, default_value = "flex")]
    backend: String,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Also measure each method on a quantized base (QLoRA): nf4 | fp4 | int8; adds the
    /// `q<method>` rows and the `step_ratio` / `base_ratio` rows against the f32 base.
    #[arg(long)]
    quantize: Option<String>,
    /// Values per absmax block of the quantized base.
    #[arg(long, default_value_t = QuantConfig::qlora().block_size)]
    quant_block_size: usize,
    /// Quantize the absmax constants again to 8 bits (blocks of 256).
    #[arg(long)]
    double_quant: bool,
    /// The quantized base's matmul dtype: f32 | bf16 (the QLoRA paper's; native on CUDA,
    /// emulated on CPU); bf16 rows are labelled `q<method>-bf16`.
    #[arg(long, default_value = "f32")]
    compute_dtype: String,
    /// Also write the rows as CSV here.
    #[arg(long)]
    csv: Option<PathBuf>,
}

fn parse_growth(s: &str) -> anyhow::Result<(usize, usize)> {
    let parsed = s
        .split_once(',')
        .and_then(|(a, b)| Some((a.trim().parse().ok()?, b.trim().parse().ok()?)));
    match parsed {
        Some((a, b)) if 0 < a && a < b => Ok((a, b)),
        _ => bail!("--rss-growth {s:?}: expected two step counts A,B with 0 < A < B"),
    }
}

pub fn run(args: &BenchArgs) -> anyhow::Result<()> {
    let cpu = match args.backend.as_str() {
        "ndarray" => CpuKernels::Ndarray,
        "flex" => CpuKernels::Flex,
        other => bail!("unknown backend {other:?}: expected ndarray or flex"),
    };
    let quant = match &args.quantize {
        Some(kind) => Some(QuantConfig {
            kind: kind.parse::<QuantType>()?,
            block_size: args.quant_block_size,
            double_quant: args.double_quant,
            compute_dtype: args.compute_dtype.parse::<ComputeDtype>()?,
        }),
        None => None,
    };
    let opts = BenchOptions {
        model: args.model.clone(),
        methods: args
            .methods
            .iter()
            .map(|m| Method::parse(m).map_err(anyhow::Error::from))
            .collect::<anyhow::Result<_>>()?,
        shapes: args.shapes.clone(),
        warmup: args.warmup,
        reps: args.reps,
        eval: !args.no_eval,
        rss_growth: args.rss_growth.as_deref().map(parse_growth).transpose()?,
        device: args.device,
        cpu,
        seed: args.seed,
        quant,
    };
    let rows = bench::run(&opts)?;
    print!("{}", bench::table(&rows));
    if let Some(path) = &args.csv {
        bench::write_csv(path, &rows)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}
