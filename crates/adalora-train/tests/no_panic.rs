//! Never a panic on input: random and mutated run configs, data rows, adapter configs,
//! truncated and bit-flipped safetensors and checkpoints go through the loaders; every one ends
//! in `Ok` or in an error naming the file (and the line, key or tensor). Plus the malformed
//! PEFT adapters of issue 9 (wrong shapes for `r`, a missing `lora_B`, a rank pattern or `r`
//! that disagrees with the tensors), each refused by name.
//!
//! Inputs tried per run: see `CASES` (the test names print their counts with --nocapture).

use std::path::{Path, PathBuf};

use adalora_core::{AdaLoraConfig, LoraConfig, MethodConfig, RankPattern};
use adalora_data::{load_custom, CustomTaskConfig, LoadOptions};
use adalora_model::loader::load_for_classification;
use adalora_model::{apply_method, AnyClassifier, TargetSpec};
use adalora_train::io::{replace_dir, verify_manifest, write_manifest};
use adalora_train::params::{load_trainable, save_trainable};
use adalora_train::peft::{load_peft_adapter, save_peft_adapter, CONFIG_FILE, WEIGHTS_FILE};
use adalora_train::RunConfig;
use burn::backend::NdArray;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

type B = NdArray<f32>;
type Model = AnyClassifier<B>;

/// Cases per property: 7 properties × 256 = 1,792 inputs per run.
const CASES: u32 = 256;

fn tiny_model_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/model/tiny-bert")
}

fn base_model() -> Model {
    // The fixture's head has 3 labels.
    load_for_classification::<B>(&tiny_model_dir(), 3, 0, &Default::default())
        .unwrap()
        .0
}

fn adapted(method: MethodConfig) -> Model {
    let target = TargetSpec::new("query,value,intermediate".parse().unwrap());
    apply_method(base_model(), &method, &target, &Default::default())
        .unwrap()
        .0
}

fn lora_kind() -> MethodConfig {
    let cfg = LoraConfig::new().with_r(4).with_alpha(8.0);
    MethodConfig::lora(cfg)
}

fn adalora_kind() -> MethodConfig {
    let cfg = AdaLoraConfig {
        init_r: 4,
        target_r: 2,
        ..AdaLoraConfig::default()
    };
    MethodConfig::adalora(cfg.resolve(100).unwrap())
}

/// A valid adapter folder; AdaLoRA sliced by a pattern that keeps 3 of 4 triplets (2 of 4 in
/// the first module) so rank patterns are exercised.
fn saved_adapter(dir: &Path, kind: MethodConfig) -> PathBuf {
    let model = adapted(kind.clone());
    let out = dir.join("adapter");
    let n = adalora_core::AdapterHost::svd_adapters(&model).len();
    let pattern = (n > 0).then(|| {
        let mut masks = vec![vec![true, false, true, true]; n];
        masks[0] = vec![false, true, false, true];
        RankPattern { masks }
    });
    replace_dir(&out, |d| {
        save_peft_adapter(&model, &kind, pattern.as_ref(), None, d)
    })
    .unwrap();
    out
}

fn runner() -> TestRunner {
    TestRunner::new(Config {
        cases: CASES,
        failure_persistence: None,
        ..Config::default()
    })
}

/// `result` is fine, or its message names `file`.
fn names_file<T>(result: anyhow::Result<T>, file: &Path) -> Result<(), TestCaseError> {
    if let Err(e) = result {
        let msg = format!("{e:#}");
        let name = file.display().to_string();
        prop_assert!(msg.contains(&name), "error does not name {name}: {msg}");
    }
    Ok(())
}

/// Byte-level damage: truncate, flip a bit, or overwrite a span.
#[derive(Clone, Debug)]
enum Damage {
    Truncate(prop::sample::Index),
    FlipBit(prop::sample::Index, u8),
    Overwrite(prop::sample::Index, Vec<u8>),
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        any::<prop::sample::Index>().prop_map(Damage::Truncate),
        (any::<prop::sample::Index>(), 0u8..8).prop_map(|(i, b)| Damage::FlipBit(i, b)),
        (
            any::<prop::sample::Index>(),
            prop::collection::vec(any::<u8>(), 1..16)
        )
            .prop_map(|(i, v)| Damage::Overwrite(i, v)),
    ]
}

fn apply(bytes: &[u8], d: &Damage) -> Vec<u8> {
    let mut out = bytes.to_vec();
    match d {
        Damage::Truncate(i) => out.truncate(i.index(bytes.len())),
        Damage::FlipBit(i, b) => out[i.index(bytes.len())] ^= 1 << b,
        Damage::Overwrite(i, v) => {
            let at = i.index(bytes.len());
            for (k, x) in v.iter().enumerate() {
                if let Some(slot) = out.get_mut(at + k) {
                    *slot = *x;
                }
            }
        }
    }
    out
}

/// Damage that lands in the safetensors header (its first bytes) half of the time.
fn header_damage() -> impl Strategy<Value = (bool, Damage)> {
    (any::<bool>(), damage())
}

fn damaged(bytes: &[u8], (in_header, d): &(bool, Damage)) -> Vec<u8> {
    if *in_header {
        let header =
            (bytes.len()).min(8 + u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize);
        let mut head = apply(&bytes[..header], d);
        if head.len() < header {
            return head; // truncated inside the header
        }
        head.extend_from_slice(&bytes[header..]);
        head
    } else {
        apply(bytes, d)
    }
}

#[test]
fn run_configs_mutated_or_with_random_overrides() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.toml");
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../experiments");
    let mut seeds: Vec<String> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect();
    seeds.push(RunConfig::default().to_toml().unwrap());
    let keys = [
        "method",
        "seed",
        "task",
        "lora.r",
        "lora.alpha",
        "lora.dropout",
        "adalora.init_r",
        "adalora.target_r",
        "adalora.target_total_rank",
        "adalora.alpha",
        "adalora.dropout",
        "adalora.tinit",
        "adalora.tfinal",
        "adalora.delta_t",
        "adalora.beta1",
        "adalora.beta2",
        "adalora.orth_reg_weight",
        "adalora.orth_form",
        "adalora.score",
        "train.lr",
        "train.epochs",
        "train.max_steps",
        "train.batch_size",
        "train.eval_batch_size",
        "train.max_seq_len",
        "train.warmup_ratio",
        "train.warmup_steps",
        "train.weight_decay",
        "train.max_grad_norm",
        "train.eval_every",
        "train.log_every",
        "train.bucket_batches",
        "train.dev_ratio",
        "train.classifier_dropout",
        "train.decay",
        "target.modules",
        "target.layers",
        "custom.dev_ratio",
        "nope.key",
    ];
    let values = prop_oneof![
        Just("0".to_string()),
        Just("-1".into()),
        Just("1e400".into()),
        Just("nan".into()),
        Just("inf".into()),
        Just("-0.0".into()),
        Just("0.999999".into()),
        Just("1".into()),
        Just("18446744073709551615".into()),
        Just("true".into()),
        Just("[1, -2]".into()),
        Just("\"x\"".into()),
        Just("{ a = 1 }".into()),
        (-1e6f64..1e6).prop_map(|v| v.to_string()),
        any::<i64>().prop_map(|v| v.to_string()),
        "[a-z0-9.,=\\[\\]\"-]{0,12}",
    ];
    let overrides = prop::collection::vec((prop::sample::select(keys.to_vec()), values), 0..4)
        .prop_map(|kv| {
            kv.into_iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
        });
    let text =
        (prop::sample::select(seeds), prop::option::of(damage())).prop_map(|(t, d)| match d {
            Some(d) => String::from_utf8_lossy(&apply(t.as_bytes(), &d)).into_owned(),
            None => t,
        });
    runner()
        .run(&(text, overrides), |(text, overrides)| {
            std::fs::write(&path, &text).unwrap();
            names_file(RunConfig::load(Some(&path), &overrides), &path)
        })
        .unwrap();
    eprintln!("run configs tried: {CASES}");
}

#[test]
fn data_rows_of_csv_tsv_and_jsonl() {
    let dir = tempfile::tempdir().unwrap();
    let field = "[a-z ,;\t\"'{}\\[\\]:\\\\0-9.\\-é\u{0}]{0,10}";
    let rows = prop::collection::vec(prop::collection::vec(field, 0..4), 0..12);
    let formats = prop::sample::select(vec!["csv", "tsv", "jsonl"]);
    let regression = any::<bool>();
    runner()
        .run(&(formats, rows, regression), |(ext, rows, regression)| {
            let path = dir.path().join(format!("data.{ext}"));
            let mut text = match ext {
                "csv" => "text,label\n".to_string(),
                "tsv" => "text\tlabel\n".to_string(),
                _ => String::new(),
            };
            for row in &rows {
                let line = match ext {
                    "csv" => row.join(","),
                    "tsv" => row.join("\t"),
                    _ => match row.as_slice() {
                        [a, b, ..] => format!("{{\"text\": \"{a}\", \"label\": {b}}}"),
                        [a] => format!("{{\"text\": {a}}}"),
                        [] => "{".into(),
                    },
                };
                text.push_str(&line);
                text.push('\n');
            }
            std::fs::write(&path, &text).unwrap();
            let mut cfg = CustomTaskConfig::new(&path);
            if regression {
                cfg.score = Some("label".into());
            }
            let result = load_custom(&cfg, &LoadOptions::default()).map_err(anyhow::Error::from);
            names_file(result, &path)
        })
        .unwrap();
    eprintln!("data files tried: {CASES}");
}

fn json_value() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::json;
    prop_oneof![
        Just(json!(null)),
        Just(json!(true)),
        Just(json!(-1)),
        Just(json!(0)),
        Just(json!(3)),
        Just(json!(16)),
        Just(json!(1e300)),
        Just(json!(-0.5)),
        Just(json!(2.5)),
        Just(json!("LORA")),
        Just(json!("ADALORA")),
        Just(json!("x")),
        Just(json!([true, false])),
        Just(json!([1, 2])),
        Just(json!({"bert.encoder.layer.0.attention.self.query": 2})),
        Just(json!({"bert.encoder.layer.0.attention.self.query.lora_E": [true]})),
        Just(json!({"query": "a"})),
        any::<i32>().prop_map(|v| json!(v)),
    ]
}

#[test]
fn adapter_configs_with_random_values() {
    let dir = tempfile::tempdir().unwrap();
    let lora = saved_adapter(&dir.path().join("l"), lora_kind());
    let ada = saved_adapter(&dir.path().join("a"), adalora_kind());
    let keys = [
        "peft_type",
        "r",
        "lora_alpha",
        "lora_dropout",
        "use_rslora",
        "rank_pattern",
        "alpha_pattern",
        "init_r",
        "target_r",
        "tinit",
        "tfinal",
        "deltaT",
        "beta1",
        "beta2",
        "orth_reg_weight",
        "total_step",
        "target_modules",
    ];
    let edits = prop::collection::vec((prop::sample::select(keys.to_vec()), json_value()), 1..4);
    let base = base_model();
    runner()
        .run(&(any::<bool>(), edits), |(use_lora, edits)| {
            let src = if use_lora { &lora } else { &ada };
            let case = dir.path().join("case");
            let _ = std::fs::remove_dir_all(&case);
            std::fs::create_dir_all(&case).unwrap();
            std::fs::copy(src.join(WEIGHTS_FILE), case.join(WEIGHTS_FILE)).unwrap();
            let mut cfg: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(src.join(CONFIG_FILE)).unwrap())
                    .unwrap();
            for (k, v) in edits {
                cfg[k] = v;
            }
            std::fs::write(case.join(CONFIG_FILE), cfg.to_string()).unwrap();
            let result = load_peft_adapter(base.clone(), &case, &Default::default());
            names_file(result, &case)
        })
        .unwrap();
    eprintln!("adapter configs tried: {CASES}");
}

#[test]
fn adapter_weights_truncated_or_bit_flipped() {
    let dir = tempfile::tempdir().unwrap();
    let lora = saved_adapter(&dir.path().join("l"), lora_kind());
    let ada = saved_adapter(&dir.path().join("a"), adalora_kind());
    let base = base_model();
    runner()
        .run(&(any::<bool>(), header_damage()), |(use_lora, d)| {
            let src = if use_lora { &lora } else { &ada };
            let case = dir.path().join("case");
            let _ = std::fs::remove_dir_all(&case);
            std::fs::create_dir_all(&case).unwrap();
            std::fs::copy(src.join(CONFIG_FILE), case.join(CONFIG_FILE)).unwrap();
            let bytes = std::fs::read(src.join(WEIGHTS_FILE)).unwrap();
            std::fs::write(case.join(WEIGHTS_FILE), damaged(&bytes, &d)).unwrap();
            let result = load_peft_adapter(base.clone(), &case, &Default::default());
            names_file(result, &case)
        })
        .unwrap();
    eprintln!("adapter weight files tried: {CASES}");
}

#[test]
fn model_checkpoints_truncated_or_bit_flipped() {
    let dir = tempfile::tempdir().unwrap();
    let case = dir.path().join("model");
    std::fs::create_dir_all(&case).unwrap();
    std::fs::copy(
        tiny_model_dir().join("config.json"),
        case.join("config.json"),
    )
    .unwrap();
    let bytes = std::fs::read(tiny_model_dir().join("model.safetensors")).unwrap();
    let file = case.join("model.safetensors");
    runner()
        .run(&header_damage(), |d| {
            std::fs::write(&file, damaged(&bytes, &d)).unwrap();
            let result = load_for_classification::<B>(&case, 3, 0, &Default::default())
                .map_err(anyhow::Error::from);
            names_file(result, &file)
        })
        .unwrap();
    eprintln!("model weight files tried: {CASES}");
}

#[test]
fn trainable_checkpoints_truncated_or_bit_flipped() {
    let dir = tempfile::tempdir().unwrap();
    let model = adapted(adalora_kind());
    let model = adalora_train::params::renumber_params(model);
    let good = dir.path().join("good.safetensors");
    save_trainable(&model, &good).unwrap();
    let bytes = std::fs::read(&good).unwrap();
    let file = dir.path().join("trainable.safetensors");
    runner()
        .run(&header_damage(), |d| {
            std::fs::write(&file, damaged(&bytes, &d)).unwrap();
            names_file(load_trainable(model.clone(), &file), &file)
        })
        .unwrap();
    eprintln!("trainable checkpoints tried: {CASES}");
}

#[test]
fn checkpoint_folders_with_a_damaged_file_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("checkpoint");
    let model = adalora_train::params::renumber_params(adapted(adalora_kind()));
    replace_dir(&ckpt, |d| {
        save_trainable(&model, &d.join("trainable.safetensors"))?;
        std::fs::write(d.join("optimizer.bin"), vec![7u8; 300])?;
        std::fs::write(d.join("state.json"), "{\"step\": 3}\n")?;
        write_manifest(d)
    })
    .unwrap();
    verify_manifest(&ckpt).unwrap();
    let files = [
        "trainable.safetensors",
        "optimizer.bin",
        "state.json",
        "manifest.json",
    ];
    runner()
        .run(
            &(prop::sample::select(files.to_vec()), damage()),
            |(name, d)| {
                let path = ckpt.join(name);
                let original = std::fs::read(&path).unwrap();
                let changed = apply(&original, &d);
                std::fs::write(&path, &changed).unwrap();
                let result = verify_manifest(&ckpt);
                std::fs::write(&path, &original).unwrap();
                // Damage that leaves the manifest's JSON meaning intact (say, a dropped final
                // newline) is no damage: the files it vouches for are still checked.
                let same_meaning = name == "manifest.json"
                    && serde_json::from_slice::<serde_json::Value>(&changed).ok()
                        == serde_json::from_slice::<serde_json::Value>(&original).ok();
                if changed != original && !same_meaning {
                    prop_assert!(result.is_err(), "damage to {name} went unnoticed");
                }
                names_file(result, &path)
            },
        )
        .unwrap();
    eprintln!("checkpoint folders tried: {CASES}");
}

/// Rewrite tensors of a saved adapter through `edit` (name → (shape, data)).
fn edit_weights(
    dir: &Path,
    edit: impl FnOnce(&mut std::collections::BTreeMap<String, (Vec<usize>, Vec<f32>)>),
) {
    let path = dir.join(WEIGHTS_FILE);
    let bytes = std::fs::read(&path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: std::collections::BTreeMap<_, _> = st
        .tensors()
        .into_iter()
        .map(|(n, v)| {
            let data = v
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                .collect();
            (n, (v.shape().to_vec(), data))
        })
        .collect();
    edit(&mut tensors);
    let list: Vec<_> = tensors
        .into_iter()
        .map(|(name, (shape, data))| adalora_model::loader::HfTensor { name, shape, data })
        .collect();
    adalora_model::loader::write_safetensors(&list, &path).unwrap();
}

fn edit_config(dir: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let path = dir.join(CONFIG_FILE);
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut cfg);
    std::fs::write(&path, cfg.to_string()).unwrap();
}

fn load_error(dir: &Path) -> String {
    match load_peft_adapter(base_model(), dir, &Default::default()) {
        Ok(_) => panic!("{} was accepted", dir.display()),
        Err(e) => format!("{e:#}"),
    }
}

const QUERY: &str = "base_model.model.bert.encoder.layer.0.attention.self.query";

#[test]
fn an_adapter_config_r_that_disagrees_with_the_tensors_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let adapter = saved_adapter(dir.path(), lora_kind());
    load_peft_adapter(base_model(), &adapter, &Default::default()).unwrap();
    edit_config(&adapter, |c| c["r"] = 16.into());
    let err = load_error(&adapter);
    assert!(
        err.contains(&format!("{QUERY}.lora_A.weight")) && err.contains("r = 16"),
        "{err}"
    );
    edit_config(&adapter, |c| {
        c["r"] = 4.into();
        c["rank_pattern"] = serde_json::json!({"encoder.layer.1.attention.self.value": 2});
    });
    let err = load_error(&adapter);
    assert!(
        err.contains("rank_pattern") && err.contains("layer.1.attention.self.value.lora_A"),
        "{err}"
    );
}

#[test]
fn malformed_adapters_are_refused_by_tensor() {
    let dir = tempfile::tempdir().unwrap();
    // LoRA: lora_A with a wrong input size for its r, then a missing lora_B.
    let lora = saved_adapter(&dir.path().join("l"), lora_kind());
    edit_weights(&lora, |t| {
        *t.get_mut(&format!("{QUERY}.lora_A.weight")).unwrap() = (vec![4, 12], vec![0.1; 48]);
    });
    let err = load_error(&lora);
    assert!(
        err.contains(&format!(
            "{QUERY}.lora_A.weight has shape [4, 12], expected [4, 48]"
        )),
        "{err}"
    );
    let lora = saved_adapter(&dir.path().join("l2"), lora_kind());
    edit_weights(&lora, |t| {
        t.remove(&format!("{QUERY}.lora_B.weight"));
    });
    let err = load_error(&lora);
    assert!(
        err.contains(&format!("missing tensor {QUERY}.lora_B.weight")),
        "{err}"
    );
    // AdaLoRA: a rank pattern that keeps more triplets than are stored; a lora_E of the wrong shape.
    let ada = saved_adapter(&dir.path().join("a"), adalora_kind());
    edit_config(&ada, |c| {
        c["rank_pattern"]["bert.encoder.layer.0.attention.self.query.lora_E"] =
            serde_json::json!([true, true, true, true]);
    });
    let err = load_error(&ada);
    assert!(
        err.contains(&format!(
            "{QUERY}.lora_A has shape [2, 48], expected [4, 48]"
        )),
        "{err}"
    );
    let ada = saved_adapter(&dir.path().join("a2"), adalora_kind());
    edit_weights(&ada, |t| {
        let e = t.get_mut(&format!("{QUERY}.lora_E")).unwrap();
        *e = (vec![1, 2], vec![0.5, 0.5]);
    });
    let err = load_error(&ada);
    assert!(
        err.contains(&format!("{QUERY}.lora_E has shape [1, 2], expected [2, 1]")),
        "{err}"
    );
}
