//! # adalora-train
//!
//! Fine-tuning runs for full FT, BitFit, LoRA and AdaLoRA on burn:
//! configuration ([`config`]: TOML + overrides), the loop ([`trainer`]), evaluation ([`eval`]),
//! checkpoints and exact resume ([`params`], [`trainer`]), adapters in PEFT's on-disk layout
//! ([`peft`]), merged HF exports ([`merge`]), and safe file output ([`io`]).

pub mod clip;
pub mod config;
pub mod decay;
pub mod eval;
pub mod io;
pub mod lr;
pub mod merge;
pub mod ops;
pub mod params;
pub mod peft;
pub mod task;
pub mod trainer;

pub use config::{MethodKind, RunConfig};
pub use trainer::{train, Summary, TrainOptions};
