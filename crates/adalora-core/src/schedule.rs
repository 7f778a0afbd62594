//! The cubic budget schedule b(t), exactly as the reference code computes it (integer
//! truncation, `t <= tinit` warm-up, `t > T − tfinal` final phase), plus validation.

use serde::{Deserialize, Serialize};

use crate::error::CoreError;

/// Where step `t` falls in the schedule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// `t <= tinit`: full budget b(0), scores accumulate, nothing is masked.
    Warmup,
    /// `tinit < t < T − tfinal`: the budget shrinks cubically; a mask every ΔT steps.
    Budget,
    /// `t == T − tfinal`: the final mask at b(T) is fixed from the scores (which stop updating).
    Finalize,
    /// `t > T − tfinal`: the fixed mask is re-applied after every optimizer step.
    Final,
}

/// Budget schedule in units of singular values (triplets), not parameters.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BudgetSchedule {
    /// b(0) = Σ_k init_r_k.
    pub init_budget: usize,
    /// b(T) = target_r · n, or an explicit total target rank.
    pub target_budget: usize,
    pub tinit: usize,
    /// A duration: the last `tfinal` steps keep the final mask fixed.
    pub tfinal: usize,
    pub delta_t: usize,
    /// Number of optimizer steps of the run.
    pub total_step: usize,
}

impl BudgetSchedule {
    /// Validates the settings; each error names the value and why it is wrong.
    pub fn new(
        init_budget: usize,
        target_budget: usize,
        tinit: usize,
        tfinal: usize,
        delta_t: usize,
        total_step: usize,
    ) -> Result<Self, CoreError> {
        let schedule = BudgetSchedule {
            init_budget,
            target_budget,
            tinit,
            tfinal,
            delta_t,
            total_step,
        };
        schedule.validate()?;
        Ok(schedule)
    }

    pub fn validate(&self) -> Result<(), CoreError> {
        if self.init_budget == 0 {
            return Err(CoreError::invalid(
                "init_budget",
                "0",
                "no adapted matrices (or init_r = 0): there is nothing to allocate",
            ));
        }
        if self.target_budget > self.init_budget {
            return Err(CoreError::invalid(
                "target budget",
                &self.target_budget.to_string(),
                &format!(
                    "the final budget cannot exceed the initial budget b(0) = {} (is target_r > init_r?)",
                    self.init_budget
                ),
            ));
        }
        if self.delta_t == 0 {
            return Err(CoreError::invalid(
                "deltaT",
                "0",
                "the masking interval must be at least 1 step",
            ));
        }
        if self.total_step == 0 {
            return Err(CoreError::invalid(
                "total_step",
                "0",
                "the run must have at least one optimizer step",
            ));
        }
        if self.total_step <= self.tinit + self.tfinal {
            return Err(CoreError::invalid(
                "total_step",
                &self.total_step.to_string(),
                &format!(
                    "must exceed tinit + tfinal = {} + {} = {}, or there is no budget phase \
                     (tfinal is a duration, not a step index)",
                    self.tinit,
                    self.tfinal,
                    self.tinit + self.tfinal
                ),
            ));
        }
        Ok(())
    }

    /// First step of the fixed-mask phase, `T − tfinal`.
    pub fn final_start(&self) -> usize {
        self.total_step - self.tfinal
    }

    pub fn phase(&self, t: usize) -> Phase {
        let final_start = self.final_start();
        if t <= self.tinit {
            Phase::Warmup
        } else if t < final_start {
            Phase::Budget
        } else if t == final_start {
            Phase::Finalize
        } else {
            Phase::Final
        }
    }

    /// `(b(t), mask_ind)` exactly as the reference `budget_schedule(t)`.
    pub fn budget(&self, t: usize) -> (usize, bool) {
        if t <= self.tinit {
            (self.init_budget, false)
        } else if t > self.final_start() {
            (self.target_budget, true)
        } else {
            let span = (self.total_step - self.tfinal - self.tinit) as f64;
            let m = 1.0 - (t - self.tinit) as f64 / span;
            let shrinkable = (self.init_budget - self.target_budget) as f64;
            // `int()` truncates toward zero; the value is non-negative.
            let b = (shrinkable * m.powf(3.0) + self.target_budget as f64) as usize;
            (b, t.is_multiple_of(self.delta_t))
        }
    }

    /// Whether the allocator changes or re-applies a mask after step `t`: mask steps of the
    /// budget phase, the forced final mask at `T − tfinal`, and every step after it.
    pub fn applies_mask(&self, t: usize) -> bool {
        match self.phase(t) {
            Phase::Warmup => false,
            Phase::Budget => self.budget(t).1,
            Phase::Finalize | Phase::Final => true,
        }
    }
}
