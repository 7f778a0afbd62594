//! The AdaLoRA settings — the one struct the run configuration's `[adalora]` table, the PEFT
//! files and the trainer use — and how they derive the per-layer adapter config, the schedule
//! and the score settings.

use serde::{Deserialize, Serialize};

use crate::allocator::{ScoreConfig, ScoreKind, ScoreWeights};
use crate::error::CoreError;
use crate::orth::OrthRegForm;
use crate::schedule::BudgetSchedule;
use crate::svd::SvdAdapterConfig;

/// A step count, or a fraction of the run's total optimizer steps (`0 <= f < 1`).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Steps {
    Count(usize),
    Fraction(f64),
}

impl Steps {
    /// The step count, for a run of `total` optimizer steps; `name` is the setting, for errors.
    pub fn resolve(self, total: usize, name: &str) -> Result<usize, CoreError> {
        match self {
            Steps::Count(n) => Ok(n),
            Steps::Fraction(f) if (0.0..1.0).contains(&f) => {
                Ok((f * total as f64).round() as usize)
            }
            Steps::Fraction(f) => Err(CoreError::invalid(
                name,
                &f.to_string(),
                "a fraction of total_step must be in [0, 1)",
            )),
        }
    }
}

impl From<usize> for Steps {
    fn from(n: usize) -> Self {
        Steps::Count(n)
    }
}

/// How an AdaLoRA adapter's triplets start (`adalora.init`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AdaLoraInit {
    /// P, Q ~ N(0, 0.02²), λ = 0, base = W0 (PEFT/reference; the default).
    #[default]
    Zero,
    /// From W0's top-`init_r` singular triplets W0 ≈ U·S·Vᵀ: P = U_r, Q = Vᵀ_r, λ = S_r / s
    /// (s = α/init_r, so s·P·diag(λ)·Q = U_r·S_r·Vᵀ_r); the base keeps the residual.
    Svd,
}

impl AdaLoraInit {
    pub const NAMES: [&'static str; 2] = ["zero", "svd"];

    pub fn name(self) -> &'static str {
        match self {
            AdaLoraInit::Zero => "zero",
            AdaLoraInit::Svd => "svd",
        }
    }

    pub fn parse(s: &str) -> Result<Self, CoreError> {
        [AdaLoraInit::Zero, AdaLoraInit::Svd]
            .into_iter()
            .find(|i| i.name() == s)
            .ok_or_else(|| {
                CoreError::invalid(
                    "adalora.init",
                    s,
                    &format!(
                        "unknown initialisation; expected one of {}",
                        Self::NAMES.join(", ")
                    ),
                )
            })
    }

    pub fn is_default(&self) -> bool {
        *self == AdaLoraInit::Zero
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdaLoraConfig {
    /// Initial rank of every adapted matrix.
    pub init_r: usize,
    /// Average final rank; b(T) = target_r · n.
    pub target_r: usize,
    /// Explicit b(T), overriding `target_r · n` (original code's `target_total_rank`).
    pub target_total_rank: Option<usize>,
    /// The update is scaled by α / init_r.
    pub alpha: f64,
    pub dropout: f64,
    /// Initial warm-up t_i: steps, or a fraction of `total_step`.
    pub tinit: Steps,
    /// Final fine-tuning t_f (a duration at the end of the run): steps, or a fraction.
    pub tfinal: Steps,
    pub delta_t: usize,
    pub beta1: f64,
    pub beta2: f64,
    /// γ, the orthogonality-regularizer coefficient.
    pub orth_reg_weight: f64,
    pub orth_form: OrthRegForm,
    pub score: ScoreKind,
    pub score_weights: ScoreWeights,
    /// How the triplets start. Written only when not the default (`zero`), so existing
    /// configurations (and sweep settings hashes) are unchanged.
    #[serde(skip_serializing_if = "AdaLoraInit::is_default")]
    pub init: AdaLoraInit,
    /// T, the run's optimizer steps (PEFT's `total_step`). Never a setting of a run: the
    /// trainer derives it from the data and [`AdaLoraConfig::resolve`]s it in.
    #[serde(skip)]
    pub total_step: Option<usize>,
}

impl Default for AdaLoraConfig {
    /// PEFT's values, except α (see [`crate::DEFAULT_ALPHA`]) and the schedule: the authors
    /// advise giving the budget phase about half of the run (AdaLoRA#19); their GLUE scripts
    /// use tinit ≈ 0.1–0.17·T, tfinal ≈ 0.45–0.5·T and ΔT = 10 (`mask_interval`).
    fn default() -> Self {
        AdaLoraConfig {
            init_r: 12,
            target_r: 8,
            target_total_rank: None,
            alpha: crate::method::DEFAULT_ALPHA,
            dropout: 0.0,
            tinit: Steps::Fraction(0.1),
            tfinal: Steps::Fraction(0.4),
            delta_t: 10,
            beta1: 0.85,
            beta2: 0.85,
            orth_reg_weight: 0.5,
            orth_form: OrthRegForm::Reference,
            score: ScoreKind::SensitivityUncertainty,
            score_weights: ScoreWeights::PostUpdate,
            init: AdaLoraInit::Zero,
            total_step: None,
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

    /// These settings for a run of `total_step` optimizer steps: `tinit`/`tfinal` fractions
    /// become step counts (the one place they are resolved), and the result is validated.
    pub fn resolve(&self, total_step: usize) -> Result<AdaLoraConfig, CoreError> {
        let resolved = AdaLoraConfig {
            tinit: Steps::Count(self.tinit.resolve(total_step, "adalora.tinit")?),
            tfinal: Steps::Count(self.tfinal.resolve(total_step, "adalora.tfinal")?),
            total_step: Some(total_step),
            ..self.clone()
        };
        resolved.validate()?;
        Ok(resolved)
    }

    /// `(tinit, tfinal)` in steps, for a run of `total_step` optimizer steps.
    pub fn warmups(&self, total_step: usize) -> Result<(usize, usize), CoreError> {
        Ok((
            self.tinit.resolve(total_step, "adalora.tinit")?,
            self.tfinal.resolve(total_step, "adalora.tfinal")?,
        ))
    }

    /// The schedule for `n` adapted matrices over `total_step` optimizer steps.
    pub fn schedule(&self, n: usize, total_step: usize) -> Result<BudgetSchedule, CoreError> {
        self.validate()?;
        let (tinit, tfinal) = self.warmups(total_step)?;
        let target = self.target_total_rank.unwrap_or(self.target_r * n);
        BudgetSchedule::new(
            self.init_r * n,
            target,
            tinit,
            tfinal,
            self.delta_t,
            total_step,
        )
    }

    pub fn validate(&self) -> Result<(), CoreError> {
        for (name, v) in [
            ("adalora.init_r", self.init_r),
            ("adalora.delta_t", self.delta_t),
        ] {
            if v == 0 {
                return Err(CoreError::invalid(name, "0", "must be at least 1"));
            }
        }
        if !((0.0..1.0).contains(&self.dropout)) {
            return Err(CoreError::invalid(
                "adalora.dropout",
                &self.dropout.to_string(),
                "must be in [0, 1)",
            ));
        }
        if !(self.alpha > 0.0 && self.alpha.is_finite()) {
            return Err(CoreError::invalid(
                "adalora.alpha",
                &self.alpha.to_string(),
                "must be a positive number",
            ));
        }
        // Fractions are range-checked here; the schedule itself once total_step is known.
        self.warmups(1_000_000)?;
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
