//! `sweep --dry-run`'s time estimate from what `adalora bench` measured: the median training
//! step and evaluation throughput of the same method, scaled to the run's padded tokens per
//! batch (batches are padded to their longest sequence, so a task of short sentences costs far
//! less than `max_seq_len` suggests) and to its model's size.

use std::path::{Path, PathBuf};

use adalora_train::RunConfig;
use anyhow::{bail, Context};

/// Encoder size of all-MiniLM-L6-v2, the model `adalora bench` measures unless given `--model`
/// (6 layers, hidden 384, FFN 1536): the unit of [`model_scale`].
const BENCH_MODEL: EncoderSize = EncoderSize {
    layers: 6,
    hidden: 384,
    ffn: 1536,
};

/// What a benchmark row measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    /// One optimizer step (`train_step`, seconds).
    Train,
    /// Evaluating the live, unmerged adapter (`eval` with variant `unmerged`, examples/s).
    Eval,
}

/// One measured batch: a `train_step` row of a benchmark CSV, or an unmerged `eval` row.
#[derive(Clone, Debug, PartialEq)]
pub struct BenchStep {
    pub workload: Workload,
    pub method: String,
    pub batch: usize,
    pub seq: usize,
    /// Median seconds per batch of `batch × seq` (an optimizer step; for an evaluation row
    /// `batch` over its median examples/s).
    pub seconds: f64,
    /// `FILE line N`, for the dry run to say where its estimate came from.
    pub source: String,
}

/// Folder-name prefix of GPU benchmarks (`scripts/bench/gpu.sh` writes `results/bench/gpu-<date>`;
/// CPU ones are `results/bench/<date>`).
pub const GPU_BENCH_PREFIX: &str = "gpu-";

/// The newest `results/bench/<date>/summary.csv` under `root` measured on the sweep's kind of
/// device (`gpu-<date>` folders for GPU runs, the others for CPU runs): a CPU sweep estimated
/// from GPU step times would be tens of times too short. Dates sort as text.
pub fn newest_bench_summary(root: &Path, gpu: bool) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(root.join("results/bench"))
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|d| d.join("summary.csv").is_file())
        .filter(|d| {
            let name = d.file_name().map(|n| n.to_string_lossy().into_owned());
            name.is_some_and(|n| n.starts_with(GPU_BENCH_PREFIX) == gpu)
        })
        .collect();
    dirs.sort();
    dirs.pop().map(|d| d.join("summary.csv"))
}

/// The `train_step` and unmerged `eval` rows of a benchmark CSV: either what `adalora bench --csv` writes
/// (`workload,method,variant,batch,seq,unit,median,…`) or the side-by-side `summary.csv` of
/// `scripts/bench/compare.py` (`side,workload,method,variant,shape,unit,median,…`; only our
/// side is read, not PyTorch's).
pub fn read_bench_steps(path: &Path) -> anyhow::Result<Vec<BenchStep>> {
    let name = path.display();
    let mut reader = csv::Reader::from_path(path)
        .with_context(|| format!("reading the benchmark CSV {name}"))?;
    let header = reader
        .headers()
        .with_context(|| format!("{name}: no header line"))?
        .clone();
    let column = |c: &str| header.iter().position(|h| h == c);
    let need = |c: &str| {
        column(c).with_context(|| {
            format!(
                "{name}: no column {c:?} (expected the CSV of `adalora bench --csv` or \
                 scripts/bench/compare.py's summary.csv)"
            )
        })
    };
    let (workload, method, unit, median) = (
        need("workload")?,
        need("method")?,
        need("unit")?,
        need("median")?,
    );
    let side = column("side");
    let variant = column("variant");
    let shape_columns = match (column("batch"), column("seq"), column("shape")) {
        (Some(b), Some(s), _) => Shape::Columns(b, s),
        (_, _, Some(s)) => Shape::Text(s),
        _ => bail!("{name}: neither batch and seq columns nor a shape column"),
    };
    let mut steps = Vec::new();
    for (i, record) in reader.records().enumerate() {
        let line = i + 2;
        let r = record.with_context(|| format!("{name} line {line}"))?;
        let field = |c: usize| r.get(c).unwrap_or("").trim();
        let ours = side.is_none_or(|c| matches!(field(c), "adalora" | "ours"));
        let kind = match field(workload) {
            "train_step" => Workload::Train,
            "eval" if variant.is_some_and(|c| field(c) == "unmerged") => Workload::Eval,
            _ => continue,
        };
        if !ours {
            continue;
        }
        let expected_unit = match kind {
            Workload::Train => "s",
            Workload::Eval => "examples/s",
        };
        if field(unit) != expected_unit {
            bail!(
                "{name} line {line}: a {} in {:?}, expected {expected_unit}",
                field(workload),
                field(unit)
            );
        }
        let number = |what: &str, v: &str| -> anyhow::Result<f64> {
            match v.parse::<f64>() {
                Ok(x) if x.is_finite() && x > 0.0 => Ok(x),
                _ => bail!("{name} line {line}: {what} {v:?} is not a positive number"),
            }
        };
        let (batch, seq) = match shape_columns {
            Shape::Columns(b, s) => (
                number("batch", field(b))? as usize,
                number("seq", field(s))? as usize,
            ),
            Shape::Text(s) => {
                let shape: adalora_train::bench::Shape = field(s)
                    .parse()
                    .with_context(|| format!("{name} line {line}"))?;
                (shape.batch, shape.seq)
            }
        };
        let median = number("median", field(median))?;
        steps.push(BenchStep {
            workload: kind,
            method: field(method).to_string(),
            batch,
            seq,
            seconds: match kind {
                Workload::Train => median,
                Workload::Eval => batch as f64 / median,
            },
            source: format!("{name} line {line}"),
        });
    }
    Ok(steps)
}

/// Where a CSV keeps a row's batch size and sequence length.
#[derive(Clone, Copy)]
enum Shape {
    Columns(usize, usize),
    /// `32x128`.
    Text(usize),
}

/// A batch's estimated time and the benchmark row it was scaled from.
#[derive(Clone, Debug)]
pub struct StepEstimate<'a> {
    pub seconds_per_step: f64,
    pub from: &'a BenchStep,
}

/// Seconds of one `workload` batch of `tokens` (padded batch size × length) for a `method`
/// run on a model `model_scale` times the benchmarked one: the same method's row with the
/// nearest number of tokens per batch, scaled linearly in tokens and model size (attention's
/// quadratic part is ignored: at these lengths the dense layers dominate). `None` when the
/// benchmark has no such row.
pub fn estimate_step<'a>(
    steps: &'a [BenchStep],
    workload: Workload,
    method: &str,
    tokens: f64,
    model_scale: f64,
) -> Option<StepEstimate<'a>> {
    let distance = |s: &BenchStep| (tokens / (s.batch * s.seq) as f64).ln().abs();
    let from = steps
        .iter()
        .filter(|s| s.workload == workload && s.method == method)
        .min_by(|a, b| distance(a).total_cmp(&distance(b)))?;
    Some(StepEstimate {
        seconds_per_step: from.seconds * tokens / (from.batch * from.seq) as f64 * model_scale,
        from,
    })
}

#[derive(Clone, Copy, Debug, PartialEq)]
struct EncoderSize {
    layers: usize,
    hidden: usize,
    ffn: usize,
}

impl EncoderSize {
    /// Multiply-adds per token of the encoder's dense layers (q, k, v, o and the FFN pair).
    fn flops_per_token(self) -> f64 {
        (self.layers * (4 * self.hidden * self.hidden + 2 * self.hidden * self.ffn)) as f64
    }

    fn read(model_dir: &Path) -> anyhow::Result<Self> {
        let path = model_dir.join("config.json");
        let json: serde_json::Value = adalora_train::io::read_json(&path)?;
        let field = |k: &str| {
            json[k]
                .as_u64()
                .map(|v| v as usize)
                .with_context(|| format!("{}: no integer {k:?}", path.display()))
        };
        Ok(EncoderSize {
            layers: field("num_hidden_layers")?,
            hidden: field("hidden_size")?,
            ffn: field("intermediate_size")?,
        })
    }
}

/// How much more a step of the run's model costs than one of the benchmarked MiniLM (1 for
/// the default model), or an error saying why its size is unknown.
pub fn model_scale(cfg: &RunConfig) -> anyhow::Result<f64> {
    match &cfg.model {
        None => Ok(1.0),
        Some(dir) => Ok(EncoderSize::read(dir)?.flops_per_token() / BENCH_MODEL.flops_per_token()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OURS: &str = "workload,method,variant,batch,seq,unit,median,min,max,n\n\
        train_step,lora,,32,128,s,42.0,40,44,2\n\
        peak_rss,lora,,32,128,MB,1465.5,1465.5,1465.5,1\n\
        train_step,lora,,32,64,s,18.0,16,19,2\n\
        train_step,adalora,,32,64,s,20.0,19,21,2\n\
        eval,lora,unmerged,32,64,examples/s,64.0,60,66,2\n\
        eval,lora,merged,32,64,examples/s,99.0,90,100,2\n";

    const SUMMARY: &str = "side,workload,method,variant,shape,unit,median,min,max,runs\n\
        adalora,train_step,adalora,,32x128,s,45.0,42,48,1\n\
        peft,train_step,lora,,32x64,s,53.0,51,55,1\n\
        adalora,train_step,lora,,32x64,s,18.0,16,19,1\n";

    fn write(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bench.csv");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    #[test]
    fn reads_the_train_steps_of_both_csv_layouts_and_only_our_side() {
        let (_d, path) = write(OURS);
        let steps = read_bench_steps(&path).unwrap();
        assert_eq!(steps.len(), 4, "the merged eval row is not read");
        assert_eq!(steps[3].workload, Workload::Eval);
        assert_eq!(
            (steps[1].batch, steps[1].seq, steps[1].seconds),
            (32, 64, 18.0)
        );
        assert!(
            steps[1].source.ends_with("bench.csv line 4"),
            "{}",
            steps[1].source
        );
        let (_d, path) = write(SUMMARY);
        let steps = read_bench_steps(&path).unwrap();
        let methods: Vec<_> = steps.iter().map(|s| (s.method.as_str(), s.seq)).collect();
        assert_eq!(methods, [("adalora", 128), ("lora", 64)]);
    }

    #[test]
    fn scales_the_same_methods_nearest_shape_by_tokens_and_model_size() {
        let (_d, path) = write(OURS);
        let steps = read_bench_steps(&path).unwrap();
        // 16 × 64 tokens is nearest to lora's 32 × 64 row: half its tokens.
        let train = Workload::Train;
        let e = estimate_step(&steps, train, "lora", 16.0 * 64.0, 1.0).unwrap();
        assert_eq!((e.from.seq, e.seconds_per_step), (64, 9.0));
        let e = estimate_step(&steps, train, "lora", 32.0 * 128.0, 2.0).unwrap();
        assert_eq!((e.from.seq, e.seconds_per_step), (128, 84.0));
        let e = estimate_step(&steps, train, "adalora", 32.0 * 128.0, 1.0).unwrap();
        assert_eq!(e.seconds_per_step, 40.0);
        assert!(estimate_step(&steps, train, "bitfit", 32.0 * 64.0, 1.0).is_none());
        // Evaluation: 32 × 64 at 64 examples/s is 0.5 s a batch; 8 × 64 tokens is a quarter.
        let e = estimate_step(&steps, Workload::Eval, "lora", 8.0 * 64.0, 1.0).unwrap();
        assert_eq!(e.seconds_per_step, 0.125);
        assert!(estimate_step(&steps, Workload::Eval, "adalora", 512.0, 1.0).is_none());
    }

    #[test]
    fn the_default_benchmark_is_the_newest_on_the_sweeps_kind_of_device() {
        let root = tempfile::tempdir().unwrap();
        for dir in [
            "2026-01-02",
            "2026-01-03",
            "gpu-2026-01-01",
            "gpu-2026-01-04",
            "2026-01-05",
        ] {
            let d = root.path().join("results/bench").join(dir);
            std::fs::create_dir_all(&d).unwrap();
            if dir != "2026-01-05" {
                std::fs::write(d.join("summary.csv"), OURS).unwrap();
            }
        }
        let newest = |gpu| {
            let path = newest_bench_summary(root.path(), gpu).unwrap();
            path.parent()
                .unwrap()
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned()
        };
        // 2026-01-05 has no summary.csv; gpu-* sorts after every date but is not a CPU bench.
        assert_eq!(newest(false), "2026-01-03");
        assert_eq!(newest(true), "gpu-2026-01-04");
    }

    #[test]
    fn model_size_is_relative_to_minilm() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("config.json"),
            r#"{"num_hidden_layers": 12, "hidden_size": 384, "intermediate_size": 1536}"#,
        )
        .unwrap();
        let mut cfg = RunConfig::default();
        assert_eq!(model_scale(&cfg).unwrap(), 1.0);
        cfg.model = Some(dir.path().to_path_buf());
        assert_eq!(model_scale(&cfg).unwrap(), 2.0);
    }

    #[test]
    fn bad_csvs_are_refused_naming_the_file_line_and_field() {
        let (_d, path) = write("workload,method,batch,seq,unit\ntrain_step,lora,32,64,s\n");
        let e = format!("{:#}", read_bench_steps(&path).unwrap_err());
        assert!(e.contains("bench.csv") && e.contains("\"median\""), "{e}");
        let (_d, path) = write(&OURS.replace("18.0", "fast"));
        let e = format!("{:#}", read_bench_steps(&path).unwrap_err());
        assert!(e.contains("bench.csv line 4: median \"fast\""), "{e}");
        let e = format!(
            "{:#}",
            read_bench_steps(Path::new("/no/such.csv")).unwrap_err()
        );
        assert!(e.contains("/no/such.csv"), "{e}");
    }
}
