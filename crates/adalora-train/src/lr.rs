//! Learning-rate schedule: linear warm-up then linear decay to zero (HF
//! `get_linear_schedule_with_warmup`), or constant after warm-up.

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Decay {
    /// Linear decay to 0 at the last step (HF default).
    #[default]
    Linear,
    Constant,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LrSchedule {
    pub base: f64,
    pub warmup_steps: usize,
    pub total_steps: usize,
    pub decay: Decay,
}

impl LrSchedule {
    /// The learning rate used by optimizer step `step` (0-based). As in HF, step 0 of a warm-up
    /// uses lr 0.
    pub fn lr(&self, step: usize) -> f64 {
        if step < self.warmup_steps {
            return self.base * step as f64 / self.warmup_steps.max(1) as f64;
        }
        match self.decay {
            Decay::Constant => self.base,
            Decay::Linear => {
                let remaining = self.total_steps.saturating_sub(step) as f64;
                let span = self.total_steps.saturating_sub(self.warmup_steps).max(1) as f64;
                self.base * (remaining / span).max(0.0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_hf_linear_schedule_with_warmup() {
        let s = LrSchedule {
            base: 1.0,
            warmup_steps: 4,
            total_steps: 12,
            decay: Decay::Linear,
        };
        let lrs: Vec<f64> = (0..12).map(|t| s.lr(t)).collect();
        let expected = [
            0.0, 0.25, 0.5, 0.75, 1.0, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25, 0.125,
        ];
        assert_eq!(lrs, expected);
        let c = LrSchedule {
            decay: Decay::Constant,
            ..s
        };
        assert_eq!(c.lr(10), 1.0);
        let no_warmup = LrSchedule {
            warmup_steps: 0,
            ..s
        };
        assert_eq!(no_warmup.lr(0), 1.0);
    }
}
