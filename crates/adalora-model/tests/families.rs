//! The model families against transformers: tiny random RoBERTa and DeBERTa-v2/v3 checkpoints
//! (scripts/fixtures/make_family_fixtures.py) — tokenization, hidden states and logits on a
//! padded batch — plus the seam's family-generic behaviour (selection by `model_type`, target
//! names, adapters, merge, export round trip).

mod common;

use adalora_core::{AdaLoraConfig, AdapterHost, LoraConfig, Method, MethodConfig, QuantConfig};
use adalora_model::target::TargetModules;
use adalora_model::{
    apply_method, dequantize_on_device, load_for_classification, quantize_base, write_safetensors,
    AnyClassifier, HeadSource, ModelInput, ModuleKind, SequenceClassifier, TargetSpec,
};
use burn::tensor::backend::Backend;
use common::*;
use safetensors::SafeTensors;

const FAMILIES: [&str; 3] = ["tiny-roberta", "tiny-deberta-v3", "tiny-deberta-v2-untied"];

fn model_dir(name: &str) -> std::path::PathBuf {
    fixture_dir().join(name)
}

fn load<B: Backend>(name: &str) -> AnyClassifier<B> {
    let (model, head) =
        load_for_classification::<B>(&model_dir(name), 3, 0, &Default::default()).unwrap();
    assert_eq!(head, HeadSource::Checkpoint, "{name}");
    model
}

/// The fixture's texts (file metadata, JSON).
fn texts(name: &str) -> (Vec<String>, Vec<(String, String)>, bool) {
    let bytes = std::fs::read(fixture_dir().join(format!("{name}_reference.safetensors"))).unwrap();
    let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
    let meta = meta.metadata().clone().unwrap();
    let get = |k: &str| meta.get(k).unwrap().clone();
    (
        serde_json::from_str(&get("single")).unwrap(),
        serde_json::from_str(&get("pair")).unwrap(),
        serde_json::from_str(&get("has_token_types")).unwrap(),
    )
}

#[test]
fn hidden_states_and_logits_match_transformers() {
    let dev = Default::default();
    for name in FAMILIES {
        let model = load::<Cpu>(name);
        let fx = Fixture::open(&format!("{name}_reference.safetensors"));
        for split in ["single.", "pair."] {
            let input: ModelInput<Cpu> = fx.input(split, &dev);
            let hidden = to_vec(model.hidden_states(input.clone()));
            let want = fx.f32(&format!("{split}last_hidden_state"));
            assert!(max_abs(&want) > 0.5, "{name}: degenerate fixture");
            assert_close(&format!("{name} {split}hidden"), &hidden, &want, 1e-4);
            let logits = to_vec(model.forward(input));
            assert_close(
                &format!("{name} {split}logits"),
                &logits,
                &fx.f32(&format!("{split}logits")),
                1e-4,
            );
        }
    }
}

#[test]
fn tokenization_matches_transformers_fast_tokenizer() {
    for name in FAMILIES {
        let fx = Fixture::open(&format!("{name}_reference.safetensors"));
        let (singles, pairs, has_types) = texts(name);
        let tok = adalora_data::tokenize::TextTokenizer::from_file(
            model_dir(name).join("tokenizer.json"),
            128,
        )
        .unwrap();
        let rows = |split: &str, encoded: Vec<adalora_data::tokenize::Encoded>| {
            let ids = fx.i64(&format!("{split}input_ids"));
            let types = fx.i64(&format!("{split}token_type_ids"));
            let mask = fx.i64(&format!("{split}attention_mask"));
            let t = fx.shape(&format!("{split}input_ids"))[1];
            for (r, e) in encoded.iter().enumerate() {
                let n = mask[r * t..(r + 1) * t].iter().filter(|&&m| m == 1).count();
                let want: Vec<u32> = ids[r * t..r * t + n].iter().map(|&v| v as u32).collect();
                assert_eq!(e.input_ids, want, "{name} {split} row {r}");
                if has_types {
                    let want: Vec<u32> =
                        types[r * t..r * t + n].iter().map(|&v| v as u32).collect();
                    assert_eq!(e.token_type_ids, want, "{name} {split} types row {r}");
                }
                // padding is the tokenizer's pad id
                assert!(ids[r * t + n..(r + 1) * t]
                    .iter()
                    .all(|&v| v == tok.pad_id() as i64));
            }
        };
        let single = singles
            .iter()
            .map(|s| tok.encode(s, None).unwrap())
            .collect();
        rows("single.", single);
        let pair = pairs
            .iter()
            .map(|(a, b)| tok.encode(a, Some(b)).unwrap())
            .collect();
        rows("pair.", pair);
    }
}

#[test]
fn model_type_selects_the_family_and_an_unknown_one_is_refused_by_name() {
    let families: Vec<&str> = FAMILIES
        .iter()
        .map(|n| load::<Cpu>(n).family().base_prefix)
        .collect();
    assert_eq!(families, ["roberta", "deberta", "deberta"]);

    let dir = tempfile::tempdir().unwrap();
    for f in ["model.safetensors", "config.json"] {
        std::fs::copy(model_dir("tiny-roberta").join(f), dir.path().join(f)).unwrap();
    }
    let config = dir.path().join("config.json");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, text.replace("\"roberta\"", "\"xlnet\"")).unwrap();
    let err = load_for_classification::<Cpu>(dir.path(), 3, 0, &Default::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("config.json"), "{err}");
    assert!(err.contains("\"xlnet\" is not supported"), "{err}");
    assert!(err.contains("bert, roberta, deberta-v2"), "{err}");
}

#[test]
fn unsupported_deberta_settings_are_config_errors() {
    for (edit, needle) in [
        ("\"norm_rel_ebd\": \"layer_norm\",", "conv_kernel_size"),
        ("\"pooler_hidden_size\": 32,", "pooler_hidden_size"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        for f in ["model.safetensors", "config.json"] {
            std::fs::copy(model_dir("tiny-deberta-v3").join(f), dir.path().join(f)).unwrap();
        }
        let config = dir.path().join("config.json");
        let text = std::fs::read_to_string(&config).unwrap();
        let replacement = match needle {
            "conv_kernel_size" => format!("{edit} \"conv_kernel_size\": 3,"),
            _ => "\"pooler_hidden_size\": 64,".to_string(),
        };
        assert!(text.contains(edit), "fixture config changed: {edit}");
        std::fs::write(&config, text.replace(edit, &replacement)).unwrap();
        let err = load_for_classification::<Cpu>(dir.path(), 3, 0, &Default::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(needle) && err.contains("not supported"),
            "{err}"
        );
    }
}

#[test]
fn paper_aliases_and_family_names_select_the_same_slots() {
    let deberta = load::<Cpu>("tiny-deberta-v3");
    let slots = deberta.slots();
    assert_eq!(slots.len(), 12, "6 per layer, no pooler");
    assert_eq!(slots[0].path, "encoder.layer.0.attention.self.query_proj");
    assert_eq!(slots[11].path, "encoder.layer.1.output.dense");
    let paths = |spec: &str| -> Vec<String> {
        let spec: TargetSpec = spec.parse().unwrap();
        spec.select(&slots)
            .unwrap()
            .into_iter()
            .map(|s| s.path)
            .collect()
    };
    assert_eq!(paths("Wq,Wv"), paths("query_proj,value_proj"));
    assert_eq!(paths("Wq,Wv"), paths("attention.self.query_proj,value"));
    assert_eq!(paths("Wo,Wf1,Wf2").len(), 6);
    assert_eq!(
        paths("Wf2;layers=1"),
        ["encoder.layer.1.output.dense".to_string()]
    );
    assert_eq!(ModuleKind::parse("query_proj"), Some(ModuleKind::Query));
    // "dense" ends three different HF names: ambiguous, refused
    assert!("dense".parse::<TargetModules>().is_err());

    let roberta = load::<Cpu>("tiny-roberta");
    let slots = roberta.slots();
    assert_eq!(slots.len(), 12);
    assert_eq!(slots[3].path, "encoder.layer.0.attention.output.dense");
    assert_eq!(slots.len(), roberta.adapted_linears().len());
}

/// Hidden states and logits on the fixture's pair batch, concatenated.
fn logits_of<B: Backend, M: SequenceClassifier<B>>(model: &M, name: &str) -> Vec<f32> {
    let fx = Fixture::open(&format!("{name}_reference.safetensors"));
    let input: ModelInput<B> = fx.input("pair.", &Default::default());
    let mut out = to_vec(model.hidden_states(input.clone()));
    out.extend(to_vec(model.forward(input)));
    out
}

#[test]
fn adapters_merge_and_export_round_trip_for_every_family() {
    let dev = Default::default();
    let spec: TargetSpec = "all-linear".parse().unwrap();
    for name in FAMILIES {
        // On the plain backend dropout is off: outputs are comparable.
        let base = load::<Cpu>(name);
        let reference = logits_of(&base, name);
        for method in [
            MethodConfig::lora(LoraConfig::new().with_r(2)),
            MethodConfig::adalora(AdaLoraConfig {
                init_r: 3,
                target_r: 2,
                ..AdaLoraConfig::default()
            }),
        ] {
            let (mut model, report) =
                apply_method(load::<Cpu>(name), &method, &spec, &dev).unwrap();
            assert_eq!(report.modules.len(), 12, "{name}");
            assert!(report.modules.iter().all(|m| m.rank > 0), "{name}");
            // zero-initialised adapters leave the function unchanged
            assert_close(name, &logits_of(&model, name), &reference, 1e-5);
            perturb_adapters(model.adapted_linears_mut());
            let adapted = logits_of(&model, name);
            assert!(
                max_abs_diff(&adapted, &reference) > 1e-3,
                "{name}: no effect"
            );
            let merged = model.clone().merge_and_unload();
            assert_close(name, &logits_of(&merged, name), &adapted, 1e-4);
            // unloading drops the trained adapters: the pretrained function again
            assert_close(
                name,
                &logits_of(&model.clone().unload(), name),
                &reference,
                1e-5,
            );
            let merged_in_place = model.clone().try_map_adapted(|_, l| Ok(l.merge())).unwrap();
            let merged_then_unloaded = merged_in_place.unload();
            assert_close(
                name,
                &logits_of(&merged_then_unloaded, name),
                &reference,
                1e-4,
            );

            // the export is a checkpoint of the same family that reloads to the same function
            let dir = tempfile::tempdir().unwrap();
            std::fs::copy(
                model_dir(name).join("config.json"),
                dir.path().join("config.json"),
            )
            .unwrap();
            write_safetensors(&model.export_hf(), &dir.path().join("model.safetensors")).unwrap();
            let (reloaded, head) = load_for_classification::<Cpu>(dir.path(), 3, 0, &dev).unwrap();
            assert_eq!(head, HeadSource::Checkpoint);
            assert_close(name, &logits_of(&reloaded, name), &adapted, 1e-4);
        }
    }
}

#[test]
fn bitfit_trains_biases_and_the_head_only() {
    let dev = Default::default();
    let spec: TargetSpec = "all-linear".parse().unwrap();
    let (model, report) = apply_method(
        load::<Ad>("tiny-deberta-v3"),
        &MethodConfig::new(Method::BitFit),
        &spec,
        &dev,
    )
    .unwrap();
    // every dense bias (6 per layer × 2 layers) + LayerNorm β (2 per layer, embeddings', the
    // relative embeddings') + the head (pooler and classifier: weights and biases)
    let h = 32;
    let dense_biases = 2 * (4 * h + 64 + h);
    let betas = (2 * 2 + 2) * h;
    let head = h * h + h + h * 3 + 3;
    assert_eq!(report.head_params, head);
    assert_eq!(report.trainable_params, dense_biases + betas + head);
    assert!(report.modules.iter().all(|m| m.rank == 0));
    drop(model);
}

#[test]
fn qlora_quantizes_every_familys_frozen_linears_and_adapters_train_on_top() {
    let dev = Default::default();
    let spec: TargetSpec = "all-linear".parse().unwrap();
    // NF4 with blocks of 32: divides the tiny models' rows (hidden 32, intermediate 64).
    let config = QuantConfig {
        block_size: 32,
        ..QuantConfig::qlora()
    };
    for name in FAMILIES {
        let (quantized, report) = quantize_base(load::<Cpu>(name), config).unwrap();
        let paths: Vec<String> = quantized.slots().into_iter().map(|s| s.path).collect();
        let reported: Vec<String> = report.modules.iter().map(|m| m.path.clone()).collect();
        assert_eq!(
            reported, paths,
            "{name}: every adaptable linear is reported"
        );
        assert!(
            quantized
                .adapted_linears()
                .iter()
                .all(|l| l.base().as_quantized().is_some()),
            "{name}: a dense base is left"
        );
        assert!(report.memory_ratio < 0.2, "{name}: {}", report.summary());
        assert!(
            report.mean_relative_error < 0.2,
            "{name}: {}",
            report.summary()
        );

        let full = apply_method(
            quantized.clone(),
            &MethodConfig::new(Method::Full),
            &spec,
            &dev,
        );
        assert!(
            full.unwrap_err().to_string().contains("quantized"),
            "{name}: full fine-tuning of a quantized base is refused"
        );
        let reference = logits_of(&quantized, name);
        // Dequantizing on the device (the GPU path) gives the host path's logits bit for bit.
        let on_device = quantized.clone();
        assert_eq!(dequantize_on_device(&on_device), paths.len(), "{name}");
        assert!(
            on_device.adapted_linears().iter().all(|l| l
                .base()
                .as_quantized()
                .unwrap()
                .device_codes
                .enabled()),
            "{name}: every quantized base dequantizes on the device"
        );
        assert_close(name, &logits_of(&on_device, name), &reference, 0.0);
        let method = MethodConfig::lora(LoraConfig::new().with_r(2));
        let (mut model, _) = apply_method(quantized, &method, &spec, &dev).unwrap();
        assert_close(name, &logits_of(&model, name), &reference, 1e-5);
        perturb_adapters(model.adapted_linears_mut());
        let adapted = logits_of(&model, name);
        assert!(
            max_abs_diff(&adapted, &reference) > 1e-3,
            "{name}: no effect"
        );
        // merging dequantizes: the merged model is dense and computes the same function
        let merged = model.merge_and_unload();
        assert!(merged
            .adapted_linears()
            .iter()
            .all(|l| l.base().as_dense().is_some()));
        assert_close(name, &logits_of(&merged, name), &adapted, 1e-4);
    }
}
