//! Tokenization (real all-MiniLM-L6-v2 tokenizer) and batching.

mod common;

use std::collections::BTreeSet;

use adalora_data::batch::{BatchConfig, Batcher, Targets};
use adalora_data::tokenize::{truncate_longest_first, Encoded, EncodedDataset, TextTokenizer};
use adalora_data::{Dataset, Example, Target};
use common::tokenizer_path;
use tokenizers::{TruncationParams, TruncationStrategy};

fn tok(max_len: usize) -> TextTokenizer {
    TextTokenizer::from_file(tokenizer_path(), max_len).unwrap()
}

#[test]
fn special_ids_and_single_sentence() {
    let t = tok(128);
    assert_eq!(
        (t.pad_id(), t.added_tokens(false), t.added_tokens(true)),
        (0, 2, 3)
    );
    let e = t.encode("Hello, World!", None).unwrap();
    // the tokenizer's own BERT template (padding and truncation are off) agrees
    let reference = t.inner().encode("Hello, World!", true).unwrap();
    assert_eq!(e.input_ids, reference.get_ids());
    assert_eq!(e.token_type_ids, reference.get_type_ids());
    assert_eq!(e.input_ids.first(), Some(&101));
    assert_eq!(e.input_ids.last(), Some(&102));
    assert!(e.token_type_ids.iter().all(|&x| x == 0));
    // lowercasing (uncased vocabulary)
    assert_eq!(
        t.encode("HELLO", None).unwrap(),
        t.encode("hello", None).unwrap()
    );
}

#[test]
fn pair_encoding_token_types() {
    let t = tok(128);
    let (a, b) = ("The cat sat on the mat.", "A cat was sitting.");
    let e = t.encode(a, Some(b)).unwrap();
    let reference = t.inner().encode((a, b), true).unwrap();
    assert_eq!(e.input_ids, reference.get_ids());
    assert_eq!(e.token_type_ids, reference.get_type_ids());
    let na = t.content_ids(a).unwrap().len();
    let nb = t.content_ids(b).unwrap().len();
    assert_eq!(e.len(), na + nb + 3);
    assert_eq!(e.input_ids[na + 1], 102);
    assert_eq!(e.token_type_ids[..na + 2], vec![0; na + 2][..]);
    assert_eq!(e.token_type_ids[na + 2..], vec![1; nb + 1][..]);
}

#[test]
fn longest_first_rule() {
    let mk = |n: u32| (0..n).collect::<Vec<u32>>();
    let run = |la: u32, lb: u32, max: usize| {
        let (mut a, mut b) = (mk(la), mk(lb));
        truncate_longest_first(&mut a, &mut b, max);
        assert_eq!(a, mk(a.len() as u32), "keeps the start of a");
        assert_eq!(b, mk(b.len() as u32), "keeps the start of b");
        (a.len(), b.len())
    };
    assert_eq!(run(10, 10, 9), (5, 4)); // equal: second loses first
    assert_eq!(run(10, 10, 20), (10, 10));
    assert_eq!(run(12, 3, 10), (7, 3)); // only the longer is cut
    assert_eq!(run(3, 12, 10), (3, 7));
    assert_eq!(run(12, 10, 9), (5, 4));
    assert_eq!(run(11, 10, 10), (5, 5));
    assert_eq!(run(0, 5, 2), (0, 2));
}

#[test]
fn truncation_to_max_len_never_drops_specials() {
    let max_len = 16;
    let t = tok(max_len);
    let long = "one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen twenty";
    let short = "alpha beta gamma";
    // single sentence: content cut to max_len - 2, specials kept
    let e = t.encode(long, None).unwrap();
    let content = t.content_ids(long).unwrap();
    assert_eq!(e.len(), max_len);
    assert_eq!(e.input_ids[0], 101);
    assert_eq!(e.input_ids[max_len - 1], 102);
    assert_eq!(e.input_ids[1..max_len - 1], content[..max_len - 2]);
    // pair where only the long sentence must be cut: agrees with the tokenizers crate
    let e = t.encode(long, Some(short)).unwrap();
    let nb = t.content_ids(short).unwrap().len();
    assert_eq!(e.len(), max_len);
    assert_eq!(e.token_type_ids.iter().filter(|&&x| x == 1).count(), nb + 1);
    let mut reference = t.inner().clone();
    reference
        .with_truncation(Some(TruncationParams {
            max_length: max_len,
            strategy: TruncationStrategy::LongestFirst,
            ..Default::default()
        }))
        .unwrap();
    let r = reference.encode((long, short), true).unwrap();
    assert_eq!(e.input_ids, r.get_ids());
    assert_eq!(e.token_type_ids, r.get_type_ids());
    let e2 = t.encode(short, Some(long)).unwrap();
    let r2 = reference.encode((short, long), true).unwrap();
    assert_eq!(e2.input_ids, r2.get_ids());
    // both long: budget 13 split 7 / 6 (equal lengths: the second loses the odd token)
    let e = t.encode(long, Some(long)).unwrap();
    assert_eq!(e.len(), max_len);
    let sep: Vec<usize> = (0..e.len()).filter(|&i| e.input_ids[i] == 102).collect();
    assert_eq!(sep, [8, 15]);
    assert_eq!(e.input_ids[1..8], content[..7]);
    assert_eq!(e.input_ids[9..15], content[..6]);

    assert!(TextTokenizer::from_file(tokenizer_path(), 2).is_err());
}

#[test]
fn tokenizer_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let e = TextTokenizer::from_file(tmp.path().join("none.json"), 32).unwrap_err();
    assert!(e.to_string().contains("none.json"), "{e}");
    // a valid tokenizer without a padding token
    let p = common::write(
        tmp.path(),
        "wl.json",
        r#"{"version":"1.0","truncation":null,"padding":null,"added_tokens":[],"normalizer":null,
            "pre_tokenizer":{"type":"Whitespace"},"post_processor":null,"decoder":null,
            "model":{"type":"WordLevel","vocab":{"a":0,"[UNK]":1},"unk_token":"[UNK]"}}"#,
    );
    let e = TextTokenizer::from_file(&p, 32).unwrap_err();
    assert!(
        e.to_string().contains("wl.json") && e.to_string().contains("[PAD]"),
        "{e}"
    );
    let p = common::write(tmp.path(), "bad.json", "{ not json");
    assert!(TextTokenizer::from_file(&p, 32).is_err());
}

#[test]
fn encode_dataset_matches_single_encodes() {
    let t = tok(16);
    let ds = Dataset {
        name: "dev".into(),
        examples: vec![
            Example {
                text_a: "A man is playing a guitar on the stage tonight.".into(),
                text_b: Some("Someone plays music.".into()),
                target: Target::Score(3.5),
            },
            Example {
                text_a: "Short.".into(),
                text_b: Some("A considerably longer second sentence that will need to be truncated somewhere.".into()),
                target: Target::Score(1.0),
            },
            Example {
                text_a: "No pair here.".into(),
                text_b: None,
                target: Target::Score(0.0),
            },
        ],
    };
    let enc = t.encode_dataset(&ds).unwrap();
    assert_eq!(enc.len(), 3);
    assert_eq!(enc.name, "dev");
    for (ex, item) in ds.examples.iter().zip(&enc.items) {
        assert_eq!(*item, t.encode(&ex.text_a, ex.text_b.as_deref()).unwrap());
        assert!(item.len() <= 16);
    }
    assert_eq!(enc.items[1].len(), 16);
    assert_eq!(enc.targets[0], Target::Score(3.5));
}

/// A synthetic encoded dataset: item i has length 2 + (i * 7) % 13, ids i+1000.
fn synthetic(n: usize) -> EncodedDataset {
    let items = (0..n)
        .map(|i| {
            let len = 2 + (i * 7) % 13;
            Encoded {
                input_ids: vec![1000 + i as u32; len],
                token_type_ids: (0..len).map(|j| (j >= len / 2) as u32).collect(),
            }
        })
        .collect();
    EncodedDataset {
        name: "syn".into(),
        items,
        targets: (0..n).map(|i| Target::Class(i % 2)).collect(),
    }
}

#[test]
fn dynamic_padding_and_masks() {
    let data = synthetic(10);
    let b = Batcher::new(&data, 0, BatchConfig::new(4, 0)).unwrap();
    assert_eq!(b.num_batches(), 3);
    let batches: Vec<_> = b.eval_batches().collect();
    assert_eq!(batches.len(), 3);
    assert_eq!(batches[2].batch_size, 2);
    let mut seen = Vec::new();
    for batch in &batches {
        let longest = batch
            .indices
            .iter()
            .map(|&i| data.items[i].len())
            .max()
            .unwrap();
        assert_eq!(batch.seq_len, longest);
        assert_eq!(batch.input_ids.len(), batch.batch_size * batch.seq_len);
        assert_eq!(batch.attention_mask.len(), batch.input_ids.len());
        assert_eq!(batch.token_type_ids.len(), batch.input_ids.len());
        for (row, &i) in batch.indices.iter().enumerate() {
            let item = &data.items[i];
            let r = row * batch.seq_len..(row + 1) * batch.seq_len;
            let ids = &batch.input_ids[r.clone()];
            let mask = &batch.attention_mask[r.clone()];
            let types = &batch.token_type_ids[r];
            for j in 0..batch.seq_len {
                if j < item.len() {
                    assert_eq!(ids[j], item.input_ids[j] as i64);
                    assert_eq!(mask[j], 1);
                    assert_eq!(types[j], item.token_type_ids[j] as i64);
                } else {
                    assert_eq!((ids[j], mask[j], types[j]), (0, 0, 0));
                }
            }
        }
        match &batch.labels {
            Targets::Class(l) => {
                let expected: Vec<i64> = batch.indices.iter().map(|&i| (i % 2) as i64).collect();
                assert_eq!(*l, expected);
            }
            Targets::Score(_) => panic!("expected class targets"),
        }
        seen.extend(batch.indices.iter().copied());
    }
    assert_eq!(
        seen,
        (0..10).collect::<Vec<_>>(),
        "eval is in dataset order"
    );

    // score targets and a non-zero pad id
    let mut data = synthetic(3);
    data.targets = vec![Target::Score(0.5), Target::Score(1.5), Target::Score(4.0)];
    let b = Batcher::new(&data, 7, BatchConfig::new(8, 0)).unwrap();
    let batch = b.eval_batches().next().unwrap();
    assert_eq!(batch.labels, Targets::Score(vec![0.5, 1.5, 4.0]));
    assert_eq!(batch.input_ids[2], 7); // item 0 has length 2, padded to 9
    assert!(Batcher::new(&data, 0, BatchConfig::new(0, 0)).is_err());
}

fn is_permutation(order: &[Vec<usize>], n: usize) -> bool {
    let flat: Vec<usize> = order.iter().flatten().copied().collect();
    flat.len() == n && flat.iter().copied().collect::<BTreeSet<_>>().len() == n
}

#[test]
fn seeded_shuffle_is_deterministic_per_epoch() {
    let data = synthetic(103);
    let b = Batcher::new(&data, 0, BatchConfig::new(8, 11)).unwrap();
    let e0 = b.epoch_order(0);
    assert!(is_permutation(&e0, 103));
    assert_eq!(e0.len(), 13);
    assert_eq!(e0, b.epoch_order(0));
    assert_ne!(e0, b.epoch_order(1));
    assert_ne!(e0.concat(), (0..103).collect::<Vec<_>>(), "shuffled");
    let b2 = Batcher::new(&data, 0, BatchConfig::new(8, 11)).unwrap();
    assert_eq!(
        b2.epoch_order(3),
        b.epoch_order(3),
        "fresh batcher, same order"
    );
    let other = Batcher::new(&data, 0, BatchConfig::new(8, 12)).unwrap();
    assert_ne!(other.epoch_order(0), e0);
    // batches of an epoch follow the order
    let idx: Vec<Vec<usize>> = b.train_epoch(0, 0).map(|x| x.indices).collect();
    assert_eq!(idx, e0);
}

#[test]
fn resume_skips_batches() {
    let data = synthetic(50);
    let b = Batcher::new(&data, 0, BatchConfig::new(6, 5)).unwrap();
    let full: Vec<_> = b.train_epoch(2, 0).collect();
    let resumed: Vec<_> = b.train_epoch(2, 4).collect();
    assert_eq!(full.len(), 9);
    assert_eq!(resumed.len(), 5);
    assert_eq!(b.train_epoch(2, 4).len(), 5);
    assert_eq!(resumed[..], full[4..]);
    assert_eq!(b.train_epoch(2, 100).count(), 0);
}

#[test]
fn length_bucketing_reduces_padding() {
    let data = synthetic(400);
    let plain = Batcher::new(&data, 0, BatchConfig::new(8, 3)).unwrap();
    let mut cfg = BatchConfig::new(8, 3);
    cfg.bucket_batches = Some(10);
    let bucketed = Batcher::new(&data, 0, cfg).unwrap();
    let order = bucketed.epoch_order(0);
    assert!(is_permutation(&order, 400));
    assert_eq!(order.len(), 50);
    assert_eq!(order, bucketed.epoch_order(0));
    assert_ne!(order, bucketed.epoch_order(1));
    let padded =
        |b: &Batcher| -> usize { b.train_epoch(0, 0).map(|x| x.batch_size * x.seq_len).sum() };
    let real: usize = data.items.iter().map(|i| i.len()).sum();
    assert!(padded(&bucketed) < padded(&plain));
    assert!(padded(&bucketed) >= real);
    // every batch is length-homogeneous within its sorted chunk: lengths are non-decreasing
    // inside each batch (chunk sorted, then cut)
    for batch in &order {
        let lens: Vec<usize> = batch.iter().map(|&i| data.items[i].len()).collect();
        assert!(lens.windows(2).all(|w| w[0] <= w[1]), "{lens:?}");
    }
    // batch order is shuffled, not sorted by chunk
    let firsts: Vec<usize> = order.iter().map(|b| data.items[b[0]].len()).collect();
    assert!(firsts.windows(2).any(|w| w[0] > w[1]));
    let mut bad = BatchConfig::new(8, 3);
    bad.bucket_batches = Some(0);
    assert!(Batcher::new(&data, 0, bad).is_err());
}
