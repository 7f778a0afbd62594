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
    let dev = Default::default();
    for name in ["single", "pair"] {
        let input = fx.input::<Cpu>(&format!("{name}."), &dev);
        let out = model.bert.forward(input.clone());
        assert_eq!(out.last_hidden_state.dims()[2], 384);
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
        assert_eq!(
            model.svd_adapters().len(),
            if method.method.name() == "adalora" {
                37
            } else {
                0
            }
        );
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

#[test]
fn lora_report_counts_match_hand_computation() {
    let dev = Default::default();
    let (model, head) = load_for_classification::<Ad>(&real_model_dir(), 2, 42, &dev).unwrap();
    assert_eq!(head, HeadSource::Initialized { seed: 42 });
    let base_params = 22_713_216; // all-MiniLM-L6-v2 BertModel incl. pooler
    let spec: TargetSpec = "query,value".parse().unwrap();
    let (_, report) = apply_method(
        model,
        &MethodConfig::lora(LoraConfig::new().with_r(8).with_alpha(16.0)),
        &spec,
        &dev,
    )
    .unwrap();
    let lora = 6 * 2 * 8 * (384 + 384);
    assert_eq!(lora, 73_728);
    let head = 384 * 2 + 2;
    assert_eq!(report.trainable_params, lora + head);
    assert_eq!(report.head_params, head);
    assert_eq!(report.all_params, base_params + lora + head);
    let pct = 100.0 * (lora + head) as f64 / (base_params + lora + head) as f64;
    assert_eq!(
        report.summary(),
        format!("trainable params: 74,498 || all params: 22,787,714 || trainable%: {pct:.4}")
    );
    assert_eq!(
        report.summary(),
        "trainable params: 74,498 || all params: 22,787,714 || trainable%: 0.3269"
    );
    let adapted: Vec<_> = report
        .modules
        .iter()
        .filter(|r| r.method == "lora")
        .collect();
    assert_eq!(adapted.len(), 12);
    assert!(adapted
        .iter()
        .all(|r| r.rank == 8 && r.trainable_params == 8 * 768));
    assert_eq!(adapted[1].path, "encoder.layer.0.attention.self.value");
    assert!(report
        .table()
        .contains("encoder.layer.5.attention.self.query"));
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
