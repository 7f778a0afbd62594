//! The AdaLoRA method configuration (PEFT `AdaLoraConfig` defaults), and how it derives the
//! per-layer adapter config, the schedule and the score settings.

use serde::{Deserialize, Serialize};

use crate::allocator::{ScoreConfig, ScoreKind, ScoreWeights};
use crate::error::CoreError;
use crate::orth::OrthRegForm;
use crate::schedule::BudgetSchedule;
use crate::svd::SvdAdapterConfig;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdaLoraConfig {
    /// Initial rank of every adapted matrix.
    pub init_r: usize,
    /// Average final rank; b(T) = target_r · n.
    pub target_r: usize,
    /// Explicit b(T), overriding `target_r · n` (original code's `target_total_rank`).
    pub target_total_rank: Option<usize>,
    pub alpha: f64,
    pub dropout: f64,
    pub tinit: usize,
    pub tfinal: usize,
    pub delta_t: usize,
    pub beta1: f64,
    pub beta2: f64,
    /// γ, the orthogonality-regularizer coefficient.
    pub orth_reg_weight: f64,
    pub orth_form: OrthRegForm,
    pub score: ScoreKind,
    pub score_weights: ScoreWeights,
}

impl Default for AdaLoraConfig {
    fn default() -> Self {
        AdaLoraConfig {
            init_r: 12,
            target_r: 8,
            target_total_rank: None,
            alpha: 8.0,
            dropout: 0.0,
            tinit: 0,
            tfinal: 0,
            delta_t: 1,
            beta1: 0.85,
            beta2: 0.85,
            orth_reg_weight: 0.5,
            orth_form: OrthRegForm::Reference,
            score: ScoreKind::SensitivityUncertainty,
            score_weights: ScoreWeights::PostUpdate,
        }
    }
}

impl AdaLoraConfig {
    pub fn adapter_config(&self) -> SvdAdapterConfig {
        SvdAdapterConfig::new()
            .with_init_r(self.init_r)
            .with_alpha(self.alpha)
            .with_dropout(self.dropout)
    }

    pub fn score_config(&self) -> ScoreConfig {
        ScoreConfig {
            beta1: self.beta1,
            beta2: self.beta2,
            kind: self.score,
            weights: self.score_weights,
        }
    }

    /// The schedule for `n` adapted matrices over `total_step` optimizer steps.
    pub fn schedule(&self, n: usize, total_step: usize) -> Result<BudgetSchedule, CoreError> {
        self.validate()?;
        let target = self.target_total_rank.unwrap_or(self.target_r * n);
        BudgetSchedule::new(
            self.init_r * n,
            target,
            self.tinit,
            self.tfinal,
            self.delta_t,
            total_step,
        )
    }

    pub fn validate(&self) -> Result<(), CoreError> {
        if self.target_total_rank.is_none() && self.target_r > self.init_r {
            return Err(CoreError::invalid(
                "target_r",
                &self.target_r.to_string(),
                &format!("cannot exceed init_r = {}", self.init_r),
            ));
        }
        if !(self.orth_reg_weight >= 0.0 && self.orth_reg_weight.is_finite()) {
            return Err(CoreError::invalid(
                "orth_reg_weight",
                &self.orth_reg_weight.to_string(),
                "γ must be a finite number >= 0",
            ));
        }
        self.score_config().validate()
    }
}
