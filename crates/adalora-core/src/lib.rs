//! # adalora-core
//!
//! The method core of the framework: LoRA and AdaLoRA layers, the orthogonality regularizer,
//! sensitivity scores, the cubic budget schedule, the global rank allocator and the quantized
//! (QLoRA) frozen base. Backend-generic
//! (`B: Backend` / `AutodiffBackend` from burn) and free of I/O.
//!
//! The behavioural reference is the original AdaLoRA code / PEFT (see `paper-notes/`); the
//! paper's variants (squared orthogonality penalty, pre-update sensitivity, score ablations)
//! are options.

pub mod adapted;
pub mod allocator;
pub mod config;
pub mod error;
pub mod frozen;
pub mod host;
pub mod lora;
pub mod method;
pub mod observe;
pub mod orth;
pub mod quant;
pub mod resident;
pub mod schedule;
pub mod svd;

pub use adapted::{AdaptedLinear, AdapterHost};
pub use allocator::{
    mask_to_budget, AdapterObservation, AllocatorState, RankAllocator, RankPattern, ScoreConfig,
    ScoreKind, ScoreWeights, StepOutcome,
};
pub use config::{AdaLoraConfig, AdaLoraInit, Steps};
pub use error::CoreError;
pub use frozen::{freeze, frozen_linear, BaseLinear, QuantizedLinear};
pub use host::to_f32_vec;
pub use lora::{InitFactors, LoraConfig, LoraInit, LoraLinear};
pub use method::{Method, MethodConfig, DEFAULT_ALPHA};
pub use observe::{adapter_gradients, adapter_weights, observations, Triplet};
pub use orth::{orthogonal_regularizer, OrthRegForm};
pub use quant::{ComputeDtype, QuantConfig, QuantError, QuantType, QuantizedMatrix};
pub use resident::DeviceCodes;
pub use schedule::{BudgetSchedule, Phase};
pub use svd::{SvdAdapterConfig, SvdLinear};
