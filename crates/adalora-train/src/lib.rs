//! # adalora-train
//!
//! Fine-tuning runs for full FT, BitFit, LoRA and AdaLoRA on burn:
//! configuration ([`config`]: TOML + overrides), the loop ([`trainer`]), evaluation ([`eval`]),
//! checkpoints and exact resume ([`params`], [`trainer`]), adapters in PEFT's on-disk layout
//! ([`peft`]), merged HF exports ([`merge`]), safe file output ([`io`]), and the application
//! features the CLI offers besides training (sentence embeddings: [`encode`]). The CLI talks to
//! this crate only; the model seam is fed from data batches in [`batch`]. Every run records
//! its [`provenance`] and its task's constant-prediction [`baseline`].

pub mod adalora;
pub mod baseline;
pub mod batch;
pub mod bench;
pub mod clip;
pub mod config;
pub mod decay;
pub mod encode;
pub mod eval;
pub mod init;
pub mod io;
pub mod lr;
pub mod merge;
pub mod ops;
pub mod params;
pub mod peft;
pub mod provenance;
pub mod signals;
pub mod task;
pub mod trainer;

pub use adalora_core::{BudgetSchedule, ComputeDtype, Method, QuantConfig, QuantType};
pub use adalora_model::resolve_model_dir;
pub use baseline::{baseline_for_config, baseline_metrics};
pub use config::{Protocol, RunConfig};
pub use provenance::Provenance;

/// The CPU backend every command trains on (and its inference half for eval/merge/predict):
/// burn-flex (pure Rust: the `gemm` crate's AVX-512/AVX2 kernels, rayon), with the project's
/// patched element-wise kernels (`vendor/burn-flex`, see vendor/README.md). ndarray + OpenBLAS
/// stays available to `adalora bench --backend ndarray` and as the reference the kernel tests
/// compare against.
pub type CpuBackend = burn_flex::Flex;
pub type CpuTrain = burn::backend::Autodiff<CpuBackend>;
pub use trainer::{train, Summary, TrainOptions};
