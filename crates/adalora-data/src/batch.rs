//! Host-side batching of tokenized datasets.
//!
//! A [`Batcher`] cuts an [`EncodedDataset`] into [`Batch`]es padded to the longest sequence in
//! the batch (dynamic padding). Training epochs are shuffled with a ChaCha8 generator seeded
//! from `seed` and using `epoch` as its stream, so the order of any epoch can be recreated
//! exactly (e.g. on resume) and `skip` drops the batches already seen. With length bucketing,
//! the shuffled examples are cut into chunks of `bucket_batches` batches, each chunk is sorted by
//! length and cut into batches, and the order of all batches is shuffled again, so batches hold
//! similar lengths (less padding) yet come in random order. Evaluation batches are in dataset
//! order.

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::tokenize::EncodedDataset;
use crate::{DataError, Target};

/// The targets of a batch: class indices or regression scores.
#[derive(Debug, Clone, PartialEq)]
pub enum Targets {
    Class(Vec<i64>),
    Score(Vec<f32>),
}

/// A padded batch; the id, mask and type buffers are row-major `[batch_size, seq_len]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    pub input_ids: Vec<i64>,
    /// 1 for real tokens, 0 for padding.
    pub attention_mask: Vec<i64>,
    pub token_type_ids: Vec<i64>,
    pub batch_size: usize,
    pub seq_len: usize,
    pub labels: Targets,
    /// Dataset indices of the rows, in row order.
    pub indices: Vec<usize>,
}

/// Batching settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BatchConfig {
    pub batch_size: usize,
    /// Length bucketing: sort within chunks of this many batches (e.g. 50); `None` = off.
    #[serde(default)]
    pub bucket_batches: Option<usize>,
    /// Shuffling seed; epoch `e` uses stream `e` of `ChaCha8Rng::seed_from_u64(seed)`.
    #[serde(default)]
    pub seed: u64,
}

impl BatchConfig {
    pub fn new(batch_size: usize, seed: u64) -> Self {
        BatchConfig {
            batch_size,
            bucket_batches: None,
            seed,
        }
    }
}

/// Cuts an encoded dataset into padded batches.
#[derive(Debug, Clone)]
pub struct Batcher<'a> {
    data: &'a EncodedDataset,
    pad_id: u32,
    cfg: BatchConfig,
}

impl<'a> Batcher<'a> {
    /// `pad_id` is the tokenizer's padding id ([`crate::tokenize::TextTokenizer::pad_id`]).
    pub fn new(data: &'a EncodedDataset, pad_id: u32, cfg: BatchConfig) -> Result<Self, DataError> {
        if cfg.batch_size == 0 {
            return Err(DataError::Config("batch_size must be at least 1".into()));
        }
        if cfg.bucket_batches == Some(0) {
            return Err(DataError::Config(
                "bucket_batches must be at least 1 (or absent to disable bucketing)".into(),
            ));
        }
        Ok(Batcher { data, pad_id, cfg })
    }

    pub fn config(&self) -> &BatchConfig {
        &self.cfg
    }

    /// Number of batches per epoch (the last one may be smaller).
    pub fn num_batches(&self) -> usize {
        self.data.len().div_ceil(self.cfg.batch_size)
    }

    /// The generator for `epoch`: seeded from `seed`, stream `epoch`.
    pub fn epoch_rng(seed: u64, epoch: u64) -> ChaCha8Rng {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(epoch);
        rng
    }

    /// The batches (as dataset indices) of training epoch `epoch`; deterministic in
    /// `(seed, epoch)`.
    pub fn epoch_order(&self, epoch: u64) -> Vec<Vec<usize>> {
        let mut rng = Self::epoch_rng(self.cfg.seed, epoch);
        let mut indices: Vec<usize> = (0..self.data.len()).collect();
        indices.shuffle(&mut rng);
        let bs = self.cfg.batch_size;
        match self.cfg.bucket_batches {
            None => indices.chunks(bs).map(<[usize]>::to_vec).collect(),
            Some(k) => {
                let mut batches = Vec::with_capacity(self.num_batches());
                for chunk in indices.chunks_mut(bs * k) {
                    chunk.sort_by_key(|&i| self.data.items[i].len());
                    batches.extend(chunk.chunks(bs).map(<[usize]>::to_vec));
                }
                batches.shuffle(&mut rng);
                batches
            }
        }
    }

    /// Training batches of `epoch`, skipping its first `skip` batches (for resuming).
    pub fn train_epoch(&self, epoch: u64, skip: usize) -> BatchIter<'_> {
        let mut order = self.epoch_order(epoch);
        order.drain(..skip.min(order.len()));
        BatchIter {
            batcher: self,
            order: order.into_iter(),
        }
    }

    /// Evaluation batches, in dataset order, unshuffled.
    pub fn eval_batches(&self) -> BatchIter<'_> {
        let n = self.data.len();
        let order: Vec<Vec<usize>> = (0..n)
            .step_by(self.cfg.batch_size)
            .map(|s| (s..(s + self.cfg.batch_size).min(n)).collect())
            .collect();
        BatchIter {
            batcher: self,
            order: order.into_iter(),
        }
    }

    /// Build the padded batch of the given dataset indices.
    pub fn make_batch(&self, indices: &[usize]) -> Batch {
        let items = &self.data.items;
        let seq_len = indices.iter().map(|&i| items[i].len()).max().unwrap_or(0);
        let size = indices.len() * seq_len;
        let mut input_ids = vec![self.pad_id as i64; size];
        let mut attention_mask = vec![0i64; size];
        let mut token_type_ids = vec![0i64; size];
        for (row, &i) in indices.iter().enumerate() {
            let item = &items[i];
            let start = row * seq_len;
            for (j, (&id, &tt)) in item.input_ids.iter().zip(&item.token_type_ids).enumerate() {
                input_ids[start + j] = id as i64;
                attention_mask[start + j] = 1;
                token_type_ids[start + j] = tt as i64;
            }
        }
        let targets = &self.data.targets;
        let labels = match indices.first().map(|&i| targets[i]) {
            Some(Target::Score(_)) => Targets::Score(
                indices
                    .iter()
                    .map(|&i| match targets[i] {
                        Target::Score(s) => s,
                        Target::Class(c) => c as f32,
                    })
                    .collect(),
            ),
            _ => Targets::Class(
                indices
                    .iter()
                    .map(|&i| match targets[i] {
                        Target::Class(c) => c as i64,
                        Target::Score(s) => s as i64,
                    })
                    .collect(),
            ),
        };
        Batch {
            input_ids,
            attention_mask,
            token_type_ids,
            batch_size: indices.len(),
            seq_len,
            labels,
            indices: indices.to_vec(),
        }
    }
}

/// Iterator over the batches of an epoch or of an evaluation pass.
#[derive(Debug)]
pub struct BatchIter<'a> {
    batcher: &'a Batcher<'a>,
    order: std::vec::IntoIter<Vec<usize>>,
}

impl Iterator for BatchIter<'_> {
    type Item = Batch;

    fn next(&mut self) -> Option<Batch> {
        self.order.next().map(|idx| self.batcher.make_batch(&idx))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.order.size_hint()
    }
}

impl ExactSizeIterator for BatchIter<'_> {}
