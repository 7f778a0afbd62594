//! Deterministic, seeded train/dev splitting.

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::{DataError, Example, Target};

/// Split `examples` into (train, dev) with `dev_ratio` of the examples in dev, deterministically
/// for a given `seed` (ChaCha8).
///
/// With `stratify` (used for classification), each class contributes
/// `round(n_class * dev_ratio)` examples to dev, so class proportions are kept; otherwise dev
/// has `round(n * dev_ratio)` examples. Either way at least one example of each group stays
/// in train. Both parts keep the original relative order.
/// Errors unless `0 < dev_ratio < 1` and both parts end up non-empty.
pub fn split_train_dev(
    examples: Vec<Example>,
    dev_ratio: f64,
    seed: u64,
    stratify: bool,
) -> Result<(Vec<Example>, Vec<Example>), DataError> {
    if !(dev_ratio > 0.0 && dev_ratio < 1.0) {
        return Err(DataError::Config(format!(
            "dev_ratio must be strictly between 0 and 1, got {dev_ratio}"
        )));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let n = examples.len();
    let mut groups: Vec<Vec<usize>> = Vec::new();
    if stratify {
        for (i, ex) in examples.iter().enumerate() {
            let class = match ex.target {
                Target::Class(c) => c,
                Target::Score(_) => 0,
            };
            if groups.len() <= class {
                groups.resize_with(class + 1, Vec::new);
            }
            groups[class].push(i);
        }
    } else {
        groups.push((0..n).collect());
    }
    let mut is_dev = vec![false; n];
    for group in &mut groups {
        group.shuffle(&mut rng);
        // Keep at least one example of every class (or of the whole set) in train.
        let k =
            ((group.len() as f64 * dev_ratio).round() as usize).min(group.len().saturating_sub(1));
        for &i in group.iter().take(k) {
            is_dev[i] = true;
        }
    }
    let mut train = Vec::with_capacity(n);
    let mut dev = Vec::new();
    for (ex, d) in examples.into_iter().zip(is_dev) {
        if d {
            dev.push(ex)
        } else {
            train.push(ex)
        }
    }
    if train.is_empty() || dev.is_empty() {
        return Err(DataError::Config(format!(
            "splitting {n} examples with dev_ratio {dev_ratio} leaves an empty {} split",
            if train.is_empty() { "train" } else { "dev" }
        )));
    }
    Ok((train, dev))
}
