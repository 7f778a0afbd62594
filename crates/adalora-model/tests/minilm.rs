//! Parity with transformers' BertModel on the real all-MiniLM-L6-v2 weights
//! (fixtures/model/minilm_reference.*, from scripts/fixtures/make_model_fixtures.py).
//! Needs the model: run scripts/fetch-assets.sh first.

mod common;

use adalora_core::{AdaLoraConfig, AdapterHost, LoraConfig, MethodConfig};
use adalora_data::tokenize::TextTokenizer;
use adalora_model::target::TargetModules;
use adalora_model::{
    apply_method, load_for_classification, AnyClassifier, BertForSequenceClassification,
    HeadSource, ModelInput, SequenceClassifier, TargetSpec,
};
use common::*;
use safetensors::{Dtype, SafeTensors};
use std::collections::{BTreeMap, BTreeSet};

fn load_tokenizer(dir: &std::path::Path, max_len: usize) -> TextTokenizer {
    TextTokenizer::from_file(dir.join("tokenizer.json"), max_len).unwrap()
}

#[derive(serde::Deserialize)]
struct Meta {
    single: Single,
    pair: Pair,
    num_labels: usize,
}
#[derive(serde::Deserialize)]
struct Single {
    texts: Vec<String>,
    max_length: usize,
}
#[derive(serde::Deserialize)]
struct Pair {
    texts_a: Vec<String>,
    texts_b: Vec<String>,
    max_length: usize,
}

fn meta() -> Meta {
    let text = std::fs::read_to_string(fixture_dir().join("minilm_reference.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Pad like HF `padding=True`: to the longest row, pad id 0, mask 0.
fn padded(rows: Vec<adalora_data::tokenize::Encoded>) -> (Vec<i64>, Vec<i64>, Vec<i64>, usize) {
    let t = rows.iter().map(|r| r.len()).max().unwrap();
    let (mut ids, mut types, mut mask) = (vec![], vec![], vec![]);
    for r in rows {
        for j in 0..t {
            ids.push(r.input_ids.get(j).map_or(0, |&x| x as i64));
            types.push(r.token_type_ids.get(j).map_or(0, |&x| x as i64));
            mask.push(i64::from(j < r.len()));
        }
    }
    (ids, types, mask, t)
}

#[test]
fn tokenization_matches_hf_exactly() {
    let dir = real_model_dir();
    let m = meta();
    let fx = Fixture::open("minilm_reference.safetensors");

    let tok = load_tokenizer(&dir, m.single.max_length);
    let rows = m
        .single
        .texts
        .iter()
        .map(|s| tok.encode(s, None).unwrap())
        .collect();
    let (ids, types, mask, t) = padded(rows);
    assert_eq!(fx.shape("single.input_ids"), vec![m.single.texts.len(), t]);
    assert_eq!(ids, fx.i64("single.input_ids"));
    assert_eq!(types, fx.i64("single.token_type_ids"));
    assert_eq!(mask, fx.i64("single.attention_mask"));

    let tok = load_tokenizer(&dir, m.pair.max_length);
    let rows = m
        .pair
        .texts_a
        .iter()
        .zip(&m.pair.texts_b)
        .map(|(a, b)| tok.encode(a, Some(b)).unwrap())
        .collect();
    let (ids, types, mask, t) = padded(rows);
    assert_eq!(
        t, m.pair.max_length,
        "the long pair must be truncated to max_length"
    );
    assert_eq!(ids, fx.i64("pair.input_ids"));
    assert_eq!(types, fx.i64("pair.token_type_ids"));
    assert_eq!(mask, fx.i64("pair.attention_mask"));
    // Padding is exercised too (a short row in each batch).
    assert!(fx.i64("pair.attention_mask").contains(&0));
}

/// The fixture's classifier on top of the loaded encoder.
fn model_with_fixture_head(fx: &Fixture, num_labels: usize) -> BertForSequenceClassification<Cpu> {
    let dev = Default::default();
    let (model, _) = load_for_classification::<Cpu>(&real_model_dir(), 2, 0, &dev).unwrap();
    let AnyClassifier::Bert(model) = model else {
        panic!("all-MiniLM-L6-v2 is a BERT")
    };
    let bert = model.bert;
    let h = bert.hidden_size();
    let mut model =
        BertForSequenceClassification::with_new_head(bert, num_labels, 0.02, 0.1, 0, &dev).unwrap();
    model.classifier = classifier_from_torch(
        &fx.f32("classifier.weight"),
        &fx.f32("classifier.bias"),
        num_labels,
        h,
        &dev,
    );
    model
}

#[test]
fn hidden_pooled_and_logits_match_transformers() {
    let fx = Fixture::open("minilm_reference.safetensors");
    let m = meta();
    let model = model_with_fixture_head(&fx, m.num_labels);
    let hidden_size = Checkpoint::read().config_usize("hidden_size");
    let dev = Default::default();
    for name in ["single", "pair"] {
        let input = fx.input::<Cpu>(&format!("{name}."), &dev);
        let out = model.bert.forward(input.clone());
        assert_eq!(out.last_hidden_state.dims()[2], hidden_size);
        assert_close(
            &format!("{name} last_hidden_state"),
            &to_vec(out.last_hidden_state),
            &fx.f32(&format!("{name}.last_hidden_state")),
            1e-4,
        );
        assert_close(
            &format!("{name} pooled"),
            &to_vec(out.pooled),
            &fx.f32(&format!("{name}.pooled")),
            1e-4,
        );
        let logits = model.forward(input);
        assert_close(
            &format!("{name} logits"),
            &to_vec(logits),
            &fx.f32(&format!("{name}.logits")),
            1e-4,
        );
    }
}

#[test]
fn adapters_at_init_leave_outputs_exactly_unchanged() {
    let fx = Fixture::open("minilm_reference.safetensors");
    let m = meta();
    let dev = Default::default();
    let input = fx.input::<Cpu>("pair.", &dev);
    let base = model_with_fixture_head(&fx, m.num_labels);
    let want = to_vec(base.forward(input.clone()));
    let all = TargetSpec::new(TargetModules::AllLinear);
    for method in [
        MethodConfig::lora(LoraConfig::new().with_r(4).with_alpha(16.0)),
        MethodConfig::adalora(AdaLoraConfig::default()),
    ] {
        let model = model_with_fixture_head(&fx, m.num_labels);
        let (model, report) = apply_method(model, &method, &all, &dev).unwrap();
        let is_adalora = method.method.name() == "adalora";
        let dense_layers = Checkpoint::read().dense_layers().len();
        assert_eq!(
            model.svd_adapters().len(),
            if is_adalora { dense_layers } else { 0 },
            "all-linear AdaLoRA adapts every dense layer of the checkpoint"
        );
        assert_eq!(report.modules.len(), dense_layers, "{report}");
        assert!(
            report
                .modules
                .iter()
                .all(|r| r.method == method.method.name()),
            "{report}"
        );
        let got = to_vec(model.forward(input.clone()));
        assert_eq!(
            got,
            want,
            "{}: ΔW = 0 at init must not change the logits",
            method.method.name()
        );
    }
}

/// Parameter counts and module paths of a LoRA model must be those of the checkpoint on disk
/// (read by `Checkpoint`, not by the library's loader) plus LoRA's and the head's own.
#[test]
fn lora_report_counts_match_the_checkpoint() {
    let ckpt = Checkpoint::read();
    let (num_labels, r) = (2, 8);
    let dev = Default::default();
    let (model, head) =
        load_for_classification::<Ad>(&real_model_dir(), num_labels, 42, &dev).unwrap();
    assert_eq!(head, HeadSource::Initialized { seed: 42 });
    let lora_config = LoraConfig::new().with_r(r).with_alpha(16.0);
    let spec: TargetSpec = "query,value".parse().unwrap();
    let (_, report) = apply_method(model, &MethodConfig::lora(lora_config), &spec, &dev).unwrap();

    let targets = ckpt.dense_layers_named(&["attention.self.query", "attention.self.value"]);
    let lora: usize = targets.iter().map(|t| ckpt.lora_params(t, r)).sum();
    let head = ckpt.classifier_params(num_labels);
    let all = ckpt.parameter_count() + lora + head;
    assert_eq!(report.head_params, head, "head: hidden × labels + labels");
    assert_eq!(report.trainable_params, lora + head);
    assert_eq!(
        report.all_params, all,
        "the checkpoint's parameters + LoRA + head"
    );
    assert_eq!(report.summary(), peft_summary(lora + head, all));
    assert_modules_match_checkpoint(&report, &ckpt, &targets, r);
}

/// Each adapted layer: rank `r`, `r · (in + out)` trainable, and the checkpoint's weight and
/// bias frozen under it; every other dense layer is reported plain and frozen.
fn assert_modules_match_checkpoint(
    report: &adalora_model::ParamReport,
    ckpt: &Checkpoint,
    targets: &BTreeSet<String>,
    r: usize,
) {
    let adapted: BTreeSet<String> = report
        .modules
        .iter()
        .filter(|m| m.method == "lora")
        .map(|m| m.path.clone())
        .collect();
    assert_eq!(&adapted, targets, "adapted layers");
    assert_eq!(
        report.modules.len(),
        ckpt.dense_layers().len(),
        "one row per dense layer"
    );
    for m in &report.modules {
        let lora = if m.method == "lora" {
            ckpt.lora_params(&m.path, r)
        } else {
            0
        };
        assert_eq!(m.rank, if lora > 0 { r } else { 0 }, "{} rank", m.path);
        assert_eq!(m.trainable_params, lora, "{} trainable", m.path);
        assert_eq!(
            m.params,
            ckpt.dense_params(&m.path) + lora,
            "{} params",
            m.path
        );
        assert!(
            report.table().contains(&m.path),
            "{} missing from the table",
            m.path
        );
    }
}

/// peft's `print_trainable_parameters` line, written independently of the library's.
fn peft_summary(trainable: usize, all: usize) -> String {
    let pct = 100.0 * trainable as f64 / all as f64;
    format!(
        "trainable params: {} || all params: {} || trainable%: {pct:.4}",
        grouped(trainable),
        grouped(all)
    )
}

/// `22713216` → `22,713,216`.
fn grouped(n: usize) -> String {
    let digits = n.to_string().into_bytes();
    let groups: Vec<String> = digits
        .rchunks(3)
        .rev()
        .map(|g| String::from_utf8(g.to_vec()).unwrap())
        .collect();
    groups.join(",")
}

/// The checkpoint as its files state it: config.json values and the safetensors header's
/// tensor names, dtypes and shapes, read without the library, so that a wrong count or shape
/// in the library's loader cannot also be in the expectation.
struct Checkpoint {
    config: serde_json::Value,
    tensors: BTreeMap<String, (Dtype, Vec<usize>)>,
}

impl Checkpoint {
    fn read() -> Self {
        let dir = real_model_dir();
        let config = std::fs::read_to_string(dir.join("config.json")).unwrap();
        let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        let tensors = st
            .tensors()
            .into_iter()
            .map(|(name, view)| (name, (view.dtype(), view.shape().to_vec())))
            .collect();
        Checkpoint {
            config: serde_json::from_str(&config).unwrap(),
            tensors,
        }
    }

    fn config_usize(&self, key: &str) -> usize {
        let value = self.config[key].as_u64();
        value.unwrap_or_else(|| panic!("config.json has no integer {key}")) as usize
    }

    /// Float parameters only: `embeddings.position_ids` is an integer buffer, not a weight.
    fn parameter_count(&self) -> usize {
        let floats = self
            .tensors
            .values()
            .filter(|(dtype, _)| *dtype == Dtype::F32);
        floats
            .map(|(_, shape)| shape.iter().product::<usize>())
            .sum()
    }

    fn shape(&self, name: &str) -> &[usize] {
        let found = self.tensors.get(name);
        &found
            .unwrap_or_else(|| panic!("checkpoint has no tensor {name}"))
            .1
    }

    /// Paths of the dense (Linear) layers: every 2-D weight outside the embeddings.
    fn dense_layers(&self) -> BTreeSet<String> {
        let weights = self.tensors.iter().filter(|(name, (_, shape))| {
            shape.len() == 2 && !name.starts_with("embeddings.") && name.ends_with(".weight")
        });
        let paths = weights.map(|(name, _)| name.trim_end_matches(".weight").to_string());
        paths.collect()
    }

    fn dense_layers_named(&self, suffixes: &[&str]) -> BTreeSet<String> {
        let mut layers = self.dense_layers();
        layers.retain(|path| suffixes.iter().any(|s| path.ends_with(s)));
        layers
    }

    /// Weight and bias of a dense layer.
    fn dense_params(&self, path: &str) -> usize {
        let weight: usize = self.shape(&format!("{path}.weight")).iter().product();
        weight + self.shape(&format!("{path}.bias"))[0]
    }

    /// LoRA's A (`r × in`) and B (`out × r`) on a layer whose torch weight is `[out, in]`.
    fn lora_params(&self, path: &str, r: usize) -> usize {
        let shape = self.shape(&format!("{path}.weight"));
        r * (shape[0] + shape[1])
    }

    /// A fresh classifier head: `hidden × labels` weight and `labels` bias.
    fn classifier_params(&self, num_labels: usize) -> usize {
        self.config_usize("hidden_size") * num_labels + num_labels
    }
}

/// The trainer's path: adalora-data tokenization and batching → the seam's input tensors.
/// (The task loss on top is tested in adalora-train.)
#[test]
fn data_batch_forward() {
    use adalora_data::batch::{BatchConfig, Batcher};
    use adalora_data::{Dataset, Example, Target};
    let fx = Fixture::open("minilm_reference.safetensors");
    let m = meta();
    let tok = load_tokenizer(&real_model_dir(), m.pair.max_length);
    let examples = m
        .pair
        .texts_a
        .iter()
        .zip(&m.pair.texts_b)
        .enumerate()
        .map(|(i, (a, b))| Example {
            text_a: a.clone(),
            text_b: Some(b.clone()),
            target: Target::Class(i % m.num_labels),
        })
        .collect();
    let ds = Dataset {
        name: "dev".into(),
        examples,
    };
    let enc = tok.encode_dataset(&ds).unwrap();
    let batcher = Batcher::new(&enc, tok.pad_id(), BatchConfig::new(8, 0)).unwrap();
    let batch = batcher.eval_batches().next().unwrap();
    let model = model_with_fixture_head(&fx, m.num_labels);
    let dev = Default::default();
    let input = ModelInput::<Cpu>::from_rows(
        &batch.input_ids,
        &batch.token_type_ids,
        &batch.attention_mask,
        batch.batch_size,
        batch.seq_len,
        &dev,
    )
    .unwrap();
    let logits = to_vec(model.forward(input));
    assert_close("batch logits", &logits, &fx.f32("pair.logits"), 1e-4);
}
