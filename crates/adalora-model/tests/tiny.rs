//! A tiny random BERT of another shape (hidden 48, 2 layers, 4 heads), saved by transformers as
//! a BertForSequenceClassification (keys WITH the `bert.` prefix): loading, parity, errors,
//! freezing, merging and HF export.

mod common;

use adalora_core::{
    AdaLoraConfig, AdaptedLinear, AdapterHost, BaseLinear, LoraConfig, Method, MethodConfig,
};
use adalora_model::loader::Checkpoint;
use adalora_model::{
    apply_method, load_for_classification, resolve_model_dir, write_safetensors, AnyClassifier,
    BertForSequenceClassification, HeadSource, ModelError, SequenceClassifier, TargetSpec,
};
use burn::tensor::backend::Backend;
use common::*;

fn bert<B: Backend>(model: AnyClassifier<B>) -> BertForSequenceClassification<B> {
    match model {
        AnyClassifier::Bert(m) => m,
        other => panic!("expected BERT, loaded {}", other.family().architecture),
    }
}

fn load<B: Backend>(
    dir: &std::path::Path,
    num_labels: usize,
    seed: u64,
) -> (BertForSequenceClassification<B>, HeadSource) {
    let (model, head) =
        load_for_classification::<B>(dir, num_labels, seed, &Default::default()).unwrap();
    (bert(model), head)
}

fn tiny<B: Backend>() -> BertForSequenceClassification<B> {
    let (model, head) = load::<B>(&tiny_dir(), 3, 0);
    assert_eq!(head, HeadSource::Checkpoint);
    let layer = &model.bert.layers[0];
    assert_eq!(
        (
            model.bert.hidden_size(),
            model.bert.layers.len(),
            layer.num_heads
        ),
        (48, 2, 4)
    );
    model
}

fn has_bert_prefix(path: &std::path::Path) -> bool {
    Checkpoint::read(path)
        .unwrap()
        .names()
        .iter()
        .any(|n| n.starts_with("bert."))
}

#[test]
fn tiny_checkpoint_with_bert_prefix_matches_transformers() {
    assert!(has_bert_prefix(&tiny_dir().join("model.safetensors")));
    let fx = Fixture::open("tiny_reference.safetensors");
    let model = tiny::<Cpu>();
    let input = fx.input::<Cpu>("", &Default::default());
    let out = model.bert.forward(input.clone());
    assert_close(
        "tiny hidden",
        &to_vec(out.last_hidden_state),
        &fx.f32("last_hidden_state"),
        1e-4,
    );
    assert_close("tiny pooled", &to_vec(out.pooled), &fx.f32("pooled"), 1e-4);
    assert_close(
        "tiny logits",
        &to_vec(model.forward(input)),
        &fx.f32("logits"),
        1e-4,
    );
}

/// Copy the tiny checkpoint into a temp folder with its tensors edited by `edit`.
fn edited_checkpoint(edit: impl FnOnce(&mut Vec<adalora_model::HfTensor>)) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        tiny_dir().join("config.json"),
        dir.path().join("config.json"),
    )
    .unwrap();
    let mut tensors = tiny::<Cpu>().export_hf();
    edit(&mut tensors);
    write_safetensors(&tensors, &dir.path().join("model.safetensors")).unwrap();
    dir
}

fn weights_error(dir: &std::path::Path) -> (String, Vec<String>) {
    match load_for_classification::<Cpu>(dir, 3, 0, &Default::default()) {
        Err(e @ ModelError::Weights { .. }) => {
            let msg = e.to_string();
            let ModelError::Weights { problems, .. } = e else {
                unreachable!()
            };
            (msg, problems)
        }
        Err(e) => panic!("expected a weights error, got {e}"),
        Ok(_) => panic!("expected a weights error, the checkpoint loaded"),
    }
}

#[test]
fn missing_misshaped_and_unexpected_tensors_are_named() {
    let dir = edited_checkpoint(|t| {
        t.retain(|x| x.name != "bert.encoder.layer.1.attention.self.key.weight");
        let v = t
            .iter_mut()
            .find(|x| x.name == "bert.encoder.layer.0.intermediate.dense.weight")
            .unwrap();
        v.shape = vec![80, 24];
        v.data.truncate(80 * 24);
        t.push(adalora_model::HfTensor {
            name: "bert.extra.weight".into(),
            shape: vec![2],
            data: vec![1.0, 2.0],
        });
    });
    let (msg, problems) = weights_error(dir.path());
    assert_eq!(problems.len(), 3, "{msg}");
    assert!(msg.contains("model.safetensors"), "{msg}");
    assert!(msg.contains("missing tensor bert.encoder.layer.1.attention.self.key.weight (expected shape [48, 48])"), "{msg}");
    assert!(msg.contains("tensor bert.encoder.layer.0.intermediate.dense.weight has shape [80, 24], expected [80, 48]"), "{msg}");
    assert!(msg.contains("unexpected tensor bert.extra.weight"), "{msg}");
}

#[test]
fn an_already_quantized_checkpoint_is_refused_naming_the_tensor() {
    // bitsandbytes' 4-bit serialization: packed weight plus companion tensors.
    let w = "bert.encoder.layer.0.attention.self.query.weight";
    let dir = edited_checkpoint(|t| {
        let v = t.iter_mut().find(|x| x.name == w).unwrap();
        v.shape = vec![48 * 48 / 2, 1];
        v.data.truncate(48 * 48 / 2);
        for (companion, n) in [("absmax", 36), ("quant_state.bitsandbytes__nf4", 8)] {
            t.push(adalora_model::HfTensor {
                name: format!("{w}.{companion}"),
                shape: vec![n],
                data: vec![0.5; n],
            });
        }
    });
    let (msg, problems) = weights_error(dir.path());
    assert_eq!(problems.len(), 1, "{msg}");
    assert!(
        msg.contains(&format!(
            "tensor {w} is stored quantized ({w}.absmax present)"
        )),
        "{msg}"
    );
    assert!(msg.contains("--quantize"), "{msg}");
}

#[test]
fn classifier_with_wrong_label_count_is_an_error() {
    let err = load_for_classification::<Cpu>(&tiny_dir(), 2, 0, &Default::default())
        .err()
        .unwrap();
    assert!(
        err.to_string()
            .contains("classifier.weight has shape [3, 48], expected [2, 48]"),
        "{err}"
    );
}

#[test]
fn non_gelu_activation_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = std::fs::read_to_string(tiny_dir().join("config.json"))
        .unwrap()
        .replace("\"gelu\"", "\"relu\"");
    std::fs::write(dir.path().join("config.json"), cfg).unwrap();
    std::fs::copy(
        tiny_dir().join("model.safetensors"),
        dir.path().join("model.safetensors"),
    )
    .unwrap();
    let err = load_for_classification::<Cpu>(dir.path(), 3, 0, &Default::default())
        .err()
        .unwrap();
    let msg = err.to_string();
    assert!(
        msg.contains("config.json") && msg.contains("relu") && msg.contains("gelu"),
        "{msg}"
    );
}

#[test]
fn missing_model_dir_error_says_how_to_fetch() {
    let err = resolve_model_dir(Some(std::path::Path::new("/nonexistent/model"))).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("scripts/fetch-assets.sh") && msg.contains("--model"),
        "{msg}"
    );
}

#[test]
fn head_is_initialized_from_seed_when_absent() {
    // A BertModel-style checkpoint (no prefix, no classifier).
    let dir = edited_checkpoint(|t| {
        t.retain(|x| !x.name.starts_with("classifier."));
        for x in t.iter_mut() {
            x.name = x.name.trim_start_matches("bert.").to_string();
        }
    });
    assert!(!has_bert_prefix(&dir.path().join("model.safetensors")));
    let dev = Default::default();
    let (a, src) = load::<Cpu>(dir.path(), 2, 5);
    assert_eq!(src, HeadSource::Initialized { seed: 5 });
    let (b, _) = load::<Cpu>(dir.path(), 2, 5);
    let (c, _) = load::<Cpu>(dir.path(), 2, 6);
    let w = |m: &BertForSequenceClassification<Cpu>| to_vec(m.classifier.weight.val());
    assert_eq!(w(&a), w(&b));
    assert_ne!(w(&a), w(&c));
    let std = (w(&a).iter().map(|x| x * x).sum::<f32>() / 96.0).sqrt();
    assert!(
        (0.01..0.04).contains(&std),
        "head std {std} should be near initializer_range 0.02"
    );
    assert!(to_vec(a.classifier.bias.as_ref().unwrap().val())
        .iter()
        .all(|&x| x == 0.0));
    // The encoder is the same as the prefixed checkpoint's.
    let fx = Fixture::open("tiny_reference.safetensors");
    let pooled = to_vec(a.bert.forward(fx.input::<Cpu>("", &dev)).pooled);
    assert_close(
        "pooled via unprefixed checkpoint",
        &pooled,
        &fx.f32("pooled"),
        1e-4,
    );
}

/// A scalar that depends on every logit (the task loss itself is adalora-train's).
fn tiny_loss<B: Backend>(model: &BertForSequenceClassification<B>) -> burn::tensor::Tensor<B, 1> {
    let fx = Fixture::open("tiny_reference.safetensors");
    let logits = model.forward(fx.input::<B>("", &Default::default()));
    logits.powi_scalar(2).mean()
}

#[test]
fn frozen_parameters_get_no_gradient() {
    let dev = Default::default();
    let spec: TargetSpec = "query,value".parse().unwrap();
    let (mut model, report) = apply_method(
        tiny::<Ad>(),
        &MethodConfig::lora(LoraConfig::new().with_r(4)),
        &spec,
        &dev,
    )
    .unwrap();
    perturb_adapters(model.adapted_linears_mut());
    assert_eq!(report.trainable_params, 2 * 2 * 4 * (48 + 48) + 48 * 3 + 3);
    let grads = tiny_loss(&model).backward();
    let l0 = &model.bert.layers[0];
    let AdaptedLinear::Lora(q) = &l0.query else {
        panic!("query should carry LoRA")
    };
    assert!(q.lora_a.grad(&grads).is_some() && q.lora_b.grad(&grads).is_some());
    assert!(
        q.base.as_dense().unwrap().weight.grad(&grads).is_none(),
        "frozen W0 got a gradient"
    );
    assert!(q.base.bias().unwrap().grad(&grads).is_none());
    let AdaptedLinear::Plain(BaseLinear::Dense(k)) = &l0.key else {
        panic!("key is not targeted")
    };
    assert!(k.weight.grad(&grads).is_none() && k.bias.as_ref().unwrap().grad(&grads).is_none());
    assert!(model
        .bert
        .embeddings
        .word_embeddings
        .weight
        .grad(&grads)
        .is_none());
    assert!(l0.output_layer_norm.gamma.grad(&grads).is_none());
    assert!(
        model.classifier.weight.grad(&grads).is_some(),
        "the head is always trainable"
    );

    // BitFit: biases (dense + LayerNorm β) and the head only.
    let (model, report) = apply_method(
        tiny::<Ad>(),
        &MethodConfig::new(Method::BitFit),
        &spec,
        &dev,
    )
    .unwrap();
    let dense_biases = 2 * (4 * 48 + 80 + 48) + 48;
    let ln_betas = 48 * (1 + 2 * 2);
    assert_eq!(
        report.trainable_params,
        dense_biases + ln_betas + 48 * 3 + 3
    );
    let grads = tiny_loss(&model).backward();
    let AdaptedLinear::Plain(BaseLinear::Dense(i)) = &model.bert.layers[1].intermediate else {
        panic!()
    };
    assert!(i.bias.as_ref().unwrap().grad(&grads).is_some() && i.weight.grad(&grads).is_none());
    let ln = &model.bert.embeddings.layer_norm;
    assert!(ln.beta.as_ref().unwrap().grad(&grads).is_some() && ln.gamma.grad(&grads).is_none());

    // Full: everything.
    let (model, report) =
        apply_method(tiny::<Ad>(), &MethodConfig::new(Method::Full), &spec, &dev).unwrap();
    assert_eq!(report.trainable_params, report.all_params);
    let grads = tiny_loss(&model).backward();
    assert!(model
        .bert
        .embeddings
        .word_embeddings
        .weight
        .grad(&grads)
        .is_some());
}

#[test]
fn merge_equals_unmerged_and_export_round_trips() {
    let dev = Default::default();
    let fx = Fixture::open("tiny_reference.safetensors");
    let input = fx.input::<Cpu>("", &dev);
    let spec: TargetSpec = "all-linear".parse().unwrap();
    for method in [
        MethodConfig::lora(LoraConfig::new().with_r(4).with_alpha(8.0)),
        MethodConfig::adalora(AdaLoraConfig {
            init_r: 6,
            target_r: 4,
            ..Default::default()
        }),
    ] {
        let (mut model, _) = apply_method(tiny::<Cpu>(), &method, &spec, &dev).unwrap();
        perturb_adapters(model.adapted_linears_mut());
        let base = to_vec(tiny::<Cpu>().forward(input.clone()));
        let unmerged = to_vec(model.forward(input.clone()));
        let scale = max_abs(&unmerged);
        assert!(
            max_abs_diff(&unmerged, &base) > 1e-3 * scale,
            "{}: adapters must change the output",
            method.method.name()
        );

        // Export folds unmerged adapters in; a reload is a plain model with the same outputs.
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(
            tiny_dir().join("config.json"),
            dir.path().join("config.json"),
        )
        .unwrap();
        write_safetensors(&model.export_hf(), &dir.path().join("model.safetensors")).unwrap();
        let (reloaded, _) = load::<Cpu>(dir.path(), 3, 0);
        let r = to_vec(reloaded.forward(input.clone()));
        assert!(
            max_abs_diff(&r, &unmerged) / scale <= 1e-5,
            "{}: exported checkpoint differs",
            method.method.name()
        );

        let merged = model.merge_and_unload();
        assert!(merged
            .adapted_linears()
            .iter()
            .all(|l| matches!(l, AdaptedLinear::Plain(_))));
        let m = to_vec(merged.forward(input.clone()));
        let rel = max_abs_diff(&m, &unmerged) / scale;
        assert!(
            rel <= 1e-5,
            "{}: merged vs unmerged relative diff {rel}",
            method.method.name()
        );
    }
}
