//! Sensitivity scores and the global rank allocator.
//!
//! Per element: `I = |w·∂L/∂w|`, `Ī ← β1·Ī + (1−β1)·I`, `Ū ← β2·Ū + (1−β2)·|I − Ī|`, `s = Ī·Ū`.
//! Per triplet i of matrix k: `S = s(λ_i) + mean_j s(Q_ij) + mean_j s(P_ji)`.
//! The allocator keeps the top-b(t) triplets across *all* matrices by masking λ.

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::error::CoreError;
use crate::host::to_f32_vec;
use crate::schedule::{BudgetSchedule, Phase};

/// How a triplet is scored (paper Table 4 ablations besides the default).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ScoreKind {
    /// `s = Ī·Ū`: smoothed sensitivity times its uncertainty (reference default).
    #[default]
    SensitivityUncertainty,
    /// `s = Ī`: smoothed sensitivity only.
    Sensitivity,
    /// `S_i = |λ_i|`: singular-value magnitude.
    Magnitude,
}

/// Which weights multiply the gradient in `I = |w·g|`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ScoreWeights {
    /// The weights after the optimizer step (reference code).
    #[default]
    PostUpdate,
    /// The weights the gradient was computed at (paper Algorithm 1).
    PreUpdate,
}

/// Scoring settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScoreConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub kind: ScoreKind,
    pub weights: ScoreWeights,
}

impl Default for ScoreConfig {
    fn default() -> Self {
        ScoreConfig {
            beta1: 0.85,
            beta2: 0.85,
            kind: ScoreKind::default(),
            weights: ScoreWeights::default(),
        }
    }
}

impl ScoreConfig {
    pub fn validate(&self) -> Result<(), CoreError> {
        for (name, beta) in [("beta1", self.beta1), ("beta2", self.beta2)] {
            if !(beta > 0.0 && beta < 1.0) {
                return Err(CoreError::invalid(
                    name,
                    &beta.to_string(),
                    "an EMA coefficient must lie strictly between 0 and 1",
                ));
            }
        }
        Ok(())
    }
}

/// Which triplets each adapted matrix keeps (`true` = kept), in the model's adapter order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RankPattern {
    pub masks: Vec<Vec<bool>>,
}

impl RankPattern {
    /// Nothing masked.
    pub fn full(ranks: &[usize]) -> Self {
        RankPattern {
            masks: ranks.iter().map(|&r| vec![true; r]).collect(),
        }
    }

    /// Kept triplets per matrix.
    pub fn ranks(&self) -> Vec<usize> {
        self.masks
            .iter()
            .map(|m| m.iter().filter(|&&k| k).count())
            .collect()
    }

    pub fn total_rank(&self) -> usize {
        self.ranks().iter().sum()
    }
}

/// What the allocator needs from one SVD adapter after an optimizer step, in burn layout:
/// `a = Qᵀ [d_in, r]`, `e = λ [r]`, `b = Pᵀ [r, d_out]`, and the gradients just used.
#[derive(Clone, Debug)]
pub struct AdapterObservation<B: Backend> {
    pub a: Tensor<B, 2>,
    pub e: Tensor<B, 1>,
    pub b: Tensor<B, 2>,
    pub grad_a: Tensor<B, 2>,
    pub grad_e: Tensor<B, 1>,
    pub grad_b: Tensor<B, 2>,
}

/// EMA of sensitivity (Ī) and uncertainty (Ū) for one tensor.
#[derive(Clone, Debug)]
struct Ema<B: Backend, const D: usize> {
    ipt: Tensor<B, D>,
    unc: Tensor<B, D>,
}

impl<B: Backend, const D: usize> Ema<B, D> {
    fn zeros(shape: [usize; D], device: &B::Device) -> Self {
        Ema {
            ipt: Tensor::zeros(shape, device),
            unc: Tensor::zeros(shape, device),
        }
    }

    /// Same operation order as the reference, for bitwise-close parity.
    fn update(&mut self, weight: Tensor<B, D>, grad: Tensor<B, D>, beta1: f64, beta2: f64) {
        let ipt = (weight * grad).abs();
        self.ipt = self.ipt.clone().mul_scalar(beta1) + ipt.clone().mul_scalar(1.0 - beta1);
        self.unc = self.unc.clone().mul_scalar(beta2)
            + (ipt - self.ipt.clone()).abs().mul_scalar(1.0 - beta2);
    }

    fn element_score(&self, kind: ScoreKind) -> Tensor<B, D> {
        match kind {
            ScoreKind::Sensitivity => self.ipt.clone(),
            _ => self.ipt.clone() * self.unc.clone(),
        }
    }

    fn to_host(&self) -> EmaState {
        EmaState {
            shape: self.ipt.dims().to_vec(),
            ipt: to_f32_vec(self.ipt.clone()),
            unc: to_f32_vec(self.unc.clone()),
        }
    }

    fn from_host(state: &EmaState, device: &B::Device) -> Result<Self, CoreError> {
        let shape: [usize; D] = state
            .shape
            .clone()
            .try_into()
            .map_err(|_| CoreError::State(format!("EMA of rank {} expected", D)))?;
        let expected: usize = shape.iter().product();
        if state.ipt.len() != expected || state.unc.len() != expected {
            return Err(CoreError::State(format!(
                "EMA for shape {:?} has {} / {} values",
                shape,
                state.ipt.len(),
                state.unc.len()
            )));
        }
        let load = |v: &Vec<f32>| Tensor::from_data(TensorData::new(v.clone(), shape), device);
        Ok(Ema {
            ipt: load(&state.ipt),
            unc: load(&state.unc),
        })
    }
}

#[derive(Clone, Debug)]
struct TripletStats<B: Backend> {
    a: Ema<B, 2>,
    e: Ema<B, 1>,
    b: Ema<B, 2>,
}

impl<B: Backend> TripletStats<B> {
    /// `S_i = s(λ_i) + (mean_j s(Q_ij) + mean_j s(P_ji))`, summed in the reference's order.
    fn triplet_scores(&self, kind: ScoreKind) -> Tensor<B, 1> {
        let a_mean = self.a.element_score(kind).mean_dim(0).squeeze_dim::<1>(0);
        let b_mean = self.b.element_score(kind).mean_dim(1).squeeze_dim::<1>(1);
        self.e.element_score(kind) + (a_mean + b_mean)
    }
}

/// Serializable EMA of one tensor (burn layout, row-major).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EmaState {
    pub shape: Vec<usize>,
    pub ipt: Vec<f32>,
    pub unc: Vec<f32>,
}

/// Serializable EMA of one adapter.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TripletStatsState {
    pub a: EmaState,
    pub e: EmaState,
    pub b: EmaState,
}

/// The allocator's whole state; restoring it continues a run exactly.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AllocatorState {
    pub schedule: BudgetSchedule,
    pub score: ScoreConfig,
    pub init_ranks: Vec<usize>,
    /// Next 0-based optimizer step.
    pub step: usize,
    /// `None` once the final mask is fixed (the reference frees the EMAs then).
    pub stats: Option<Vec<TripletStatsState>>,
    /// Latest |λ| per matrix, used by the magnitude score.
    pub magnitudes: Option<Vec<Vec<f32>>>,
    pub rank_pattern: Option<RankPattern>,
    pub budget: usize,
}

/// What one allocator step did.
#[derive(Clone, Debug, PartialEq)]
pub struct StepOutcome {
    /// The 0-based step just processed.
    pub step: usize,
    pub phase: Phase,
    /// b(t).
    pub budget: usize,
    /// The mask to apply to λ now, if any (a new mask, or the fixed final one re-applied).
    pub mask: Option<RankPattern>,
    /// Triplet scores used for a new mask (absent when no new mask was computed).
    pub scores: Option<Vec<Vec<f32>>>,
}

/// Global top-b(t) rank allocator over all SVD adapters of a model.
#[derive(Clone, Debug)]
pub struct RankAllocator<B: Backend> {
    schedule: BudgetSchedule,
    score: ScoreConfig,
    init_ranks: Vec<usize>,
    step: usize,
    stats: Option<Vec<TripletStats<B>>>,
    magnitudes: Option<Vec<Vec<f32>>>,
    rank_pattern: Option<RankPattern>,
    budget: usize,
}

impl<B: Backend> RankAllocator<B> {
    /// `shapes[k] = (d_in, init_r, d_out)` of the k-th adapter, in the model's adapter order.
    pub fn new(
        schedule: BudgetSchedule,
        score: ScoreConfig,
        shapes: &[(usize, usize, usize)],
        device: &B::Device,
    ) -> Result<Self, CoreError> {
        score.validate()?;
        schedule.validate()?;
        let init_ranks: Vec<usize> = shapes.iter().map(|&(_, r, _)| r).collect();
        let total: usize = init_ranks.iter().sum();
        if total != schedule.init_budget {
            return Err(CoreError::State(format!(
                "schedule starts at b(0) = {} but the adapters hold {} triplets",
                schedule.init_budget, total
            )));
        }
        let stats = shapes
            .iter()
            .map(|&(d_in, r, d_out)| TripletStats {
                a: Ema::zeros([d_in, r], device),
                e: Ema::zeros([r], device),
                b: Ema::zeros([r, d_out], device),
            })
            .collect();
        Ok(RankAllocator {
            budget: schedule.init_budget,
            schedule,
            score,
            init_ranks,
            step: 0,
            stats: Some(stats),
            magnitudes: None,
            rank_pattern: None,
        })
    }

    pub fn schedule(&self) -> &BudgetSchedule {
        &self.schedule
    }

    pub fn score_config(&self) -> &ScoreConfig {
        &self.score
    }

    /// Next 0-based optimizer step.
    pub fn current_step(&self) -> usize {
        self.step
    }

    /// The latest budget b(t).
    pub fn budget(&self) -> usize {
        self.budget
    }

    /// The current mask (all kept before the first masking step).
    pub fn rank_pattern(&self) -> RankPattern {
        self.rank_pattern
            .clone()
            .unwrap_or_else(|| RankPattern::full(&self.init_ranks))
    }

    /// One call per optimizer step, after the step: update scores, follow the schedule, and
    /// return the mask to apply (reference semantics, spec §9).
    pub fn step(&mut self, obs: &[AdapterObservation<B>]) -> Result<StepOutcome, CoreError> {
        self.check_observations(obs)?;
        let t = self.step;
        let phase = self.schedule.phase(t);
        let (budget, mask_ind) = self.schedule.budget(t);
        self.budget = budget;
        let mut outcome = StepOutcome {
            step: t,
            phase,
            budget,
            mask: None,
            scores: None,
        };
        match phase {
            Phase::Warmup | Phase::Budget => {
                self.observe(obs);
                if mask_ind {
                    self.mask_to_budget(budget, &mut outcome);
                }
            }
            Phase::Finalize => {
                // Scores are frozen from here on: the final mask uses what was accumulated.
                self.mask_to_budget(self.schedule.target_budget, &mut outcome);
                self.stats = None;
            }
            Phase::Final => {
                if self.rank_pattern.is_none() {
                    // Only reachable when a run starts past T − tfinal without a stored mask
                    // (PEFT crashes here); fall back to masking from what we know.
                    self.observe(obs);
                    self.mask_to_budget(self.schedule.target_budget, &mut outcome);
                    self.stats = None;
                }
                outcome.mask = self.rank_pattern.clone();
            }
        }
        self.step += 1;
        Ok(outcome)
    }

    fn check_observations(&self, obs: &[AdapterObservation<B>]) -> Result<(), CoreError> {
        if obs.len() != self.init_ranks.len() {
            return Err(CoreError::State(format!(
                "{} adapters observed but the allocator was built for {}",
                obs.len(),
                self.init_ranks.len()
            )));
        }
        for (k, (o, &r)) in obs.iter().zip(&self.init_ranks).enumerate() {
            if o.e.dims()[0] != r {
                return Err(CoreError::State(format!(
                    "adapter {k} has {} triplets, the allocator expects {r}",
                    o.e.dims()[0]
                )));
            }
        }
        Ok(())
    }

    fn observe(&mut self, obs: &[AdapterObservation<B>]) {
        let (b1, b2) = (self.score.beta1, self.score.beta2);
        if self.score.kind == ScoreKind::Magnitude {
            self.magnitudes = Some(obs.iter().map(|o| to_f32_vec(o.e.clone().abs())).collect());
            return;
        }
        if let Some(stats) = self.stats.as_mut() {
            for (s, o) in stats.iter_mut().zip(obs) {
                s.a.update(o.a.clone(), o.grad_a.clone(), b1, b2);
                s.e.update(o.e.clone(), o.grad_e.clone(), b1, b2);
                s.b.update(o.b.clone(), o.grad_b.clone(), b1, b2);
            }
        }
    }

    /// Per-matrix triplet scores S_{k,i} from the current state.
    pub fn triplet_scores(&self) -> Vec<Vec<f32>> {
        if self.score.kind == ScoreKind::Magnitude {
            return self
                .magnitudes
                .clone()
                .unwrap_or_else(|| self.init_ranks.iter().map(|&r| vec![0.0; r]).collect());
        }
        match &self.stats {
            Some(stats) => stats
                .iter()
                .map(|s| to_f32_vec(s.triplet_scores(self.score.kind)))
                .collect(),
            None => self.init_ranks.iter().map(|&r| vec![0.0; r]).collect(),
        }
    }

    fn mask_to_budget(&mut self, budget: usize, outcome: &mut StepOutcome) {
        let scores = self.triplet_scores();
        let pattern = mask_to_budget(&scores, budget);
        self.rank_pattern = Some(pattern.clone());
        outcome.mask = Some(pattern);
        outcome.scores = Some(scores);
    }

    /// Snapshot for checkpoints.
    pub fn state(&self) -> AllocatorState {
        AllocatorState {
            schedule: self.schedule.clone(),
            score: self.score.clone(),
            init_ranks: self.init_ranks.clone(),
            step: self.step,
            stats: self.stats.as_ref().map(|stats| {
                stats
                    .iter()
                    .map(|s| TripletStatsState {
                        a: s.a.to_host(),
                        e: s.e.to_host(),
                        b: s.b.to_host(),
                    })
                    .collect()
            }),
            magnitudes: self.magnitudes.clone(),
            rank_pattern: self.rank_pattern.clone(),
            budget: self.budget,
        }
    }

    /// Restore a snapshot taken with [`RankAllocator::state`].
    pub fn from_state(state: &AllocatorState, device: &B::Device) -> Result<Self, CoreError> {
        state.score.validate()?;
        state.schedule.validate()?;
        let stats = match &state.stats {
            None => None,
            Some(list) => {
                if list.len() != state.init_ranks.len() {
                    return Err(CoreError::State(format!(
                        "{} EMA entries for {} adapters",
                        list.len(),
                        state.init_ranks.len()
                    )));
                }
                let mut out = Vec::with_capacity(list.len());
                for s in list {
                    out.push(TripletStats {
                        a: Ema::from_host(&s.a, device)?,
                        e: Ema::from_host(&s.e, device)?,
                        b: Ema::from_host(&s.b, device)?,
                    });
                }
                Some(out)
            }
        };
        Ok(RankAllocator {
            schedule: state.schedule.clone(),
            score: state.score.clone(),
            init_ranks: state.init_ranks.clone(),
            step: state.step,
            stats,
            magnitudes: state.magnitudes.clone(),
            rank_pattern: state.rank_pattern.clone(),
            budget: state.budget,
        })
    }
}

/// Keep the top-`budget` triplets over all matrices: with `k = b(0) − budget`, the threshold is
/// the k-th smallest score and every score `<= threshold` is masked (ties included, as the
/// reference). `k = 0` masks nothing (the reference crashes in `kthvalue`).
pub fn mask_to_budget(scores: &[Vec<f32>], budget: usize) -> RankPattern {
    let mut all: Vec<f32> = scores.iter().flatten().copied().collect();
    let k = all.len().saturating_sub(budget);
    if k == 0 {
        return RankPattern {
            masks: scores.iter().map(|s| vec![true; s.len()]).collect(),
        };
    }
    let (_, &mut threshold, _) = all.select_nth_unstable_by(k - 1, f32::total_cmp);
    RankPattern {
        masks: scores
            .iter()
            .map(|s| s.iter().map(|&v| v > threshold).collect())
            .collect(),
    }
}
