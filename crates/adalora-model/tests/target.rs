//! Target-spec parsing and matching (no model weights needed).

mod common;

use adalora_core::{AdapterHost, LoraConfig, MethodConfig};
use adalora_model::target::{thousands, TargetModules};
use adalora_model::{
    apply_method, BertConfig, BertForSequenceClassification, BertModel, ModuleKind, ModuleSlot,
    TargetSpec,
};
use common::*;

/// BERT's slots for a `layers`-layer model.
fn module_slots(layers: usize) -> Vec<ModuleSlot> {
    adalora_model::bert::FAMILY.slots(layers)
}

fn paths(spec: &str, layers: usize) -> Vec<String> {
    let spec: TargetSpec = spec.parse().unwrap();
    spec.select(&module_slots(layers))
        .unwrap()
        .into_iter()
        .map(|s| s.path)
        .collect()
}

#[test]
fn names_and_paper_aliases() {
    assert_eq!(
        paths("query,value", 2),
        [
            "encoder.layer.0.attention.self.query",
            "encoder.layer.0.attention.self.value",
            "encoder.layer.1.attention.self.query",
            "encoder.layer.1.attention.self.value",
        ]
    );
    let paper: TargetSpec = "Wq,Wk,Wv,Wo,Wf1,Wf2".parse().unwrap();
    let names: TargetSpec = "query,key,value,attention-output,intermediate,output"
        .parse()
        .unwrap();
    assert_eq!(paper, names);
    assert_eq!(
        paper.select(&module_slots(6)).unwrap().len(),
        36,
        "six matrices per layer, no pooler"
    );
    assert_eq!(
        "attn-out".parse::<TargetSpec>().unwrap(),
        "attention.output.dense".parse::<TargetSpec>().unwrap()
    );
    // `output` is the FFN output dense, never the attention output.
    assert_eq!(paths("output", 1), ["encoder.layer.0.output.dense"]);
    assert_eq!(
        paths("attention-output", 1),
        ["encoder.layer.0.attention.output.dense"]
    );
    assert_eq!(paths("pooler", 3), ["pooler.dense"]);
    assert!("query,bogus"
        .parse::<TargetSpec>()
        .unwrap_err()
        .to_string()
        .contains("bogus"));
    assert!("".parse::<TargetSpec>().is_err());
}

#[test]
fn all_linear_covers_encoder_and_pooler_in_structural_order() {
    let slots = TargetSpec::new(TargetModules::AllLinear)
        .select(&module_slots(6))
        .unwrap();
    assert_eq!(slots.len(), 37);
    assert_eq!(slots, module_slots(6));
    assert_eq!(slots[3].path, "encoder.layer.0.attention.output.dense");
    assert_eq!(slots[6].kind, ModuleKind::Query);
    assert_eq!(slots[6].layer, Some(1));
    assert_eq!(slots[36].path, "pooler.dense");
    assert!(slots.iter().enumerate().all(|(i, s)| s.index == i));
}

#[test]
fn regex_uses_full_match_semantics() {
    assert_eq!(
        paths(
            r"regex:encoder\.layer\.[01]\.attention\.self\.(query|key)",
            3
        ),
        [
            "encoder.layer.0.attention.self.query",
            "encoder.layer.0.attention.self.key",
            "encoder.layer.1.attention.self.query",
            "encoder.layer.1.attention.self.key",
        ]
    );
    // A partial pattern matches nothing under full-match semantics.
    let err = "regex:query"
        .parse::<TargetSpec>()
        .unwrap()
        .select(&module_slots(2))
        .unwrap_err()
        .to_string();
    assert!(err.contains("matches no module"), "{err}");
    assert_eq!(
        paths("regex:.*\\.output\\.dense", 1),
        [
            "encoder.layer.0.attention.output.dense",
            "encoder.layer.0.output.dense"
        ]
    );
    assert!("regex:(unclosed".parse::<TargetSpec>().is_err());
}

#[test]
fn layer_subset() {
    assert_eq!(
        paths("Wv;layers=1,3", 4),
        [
            "encoder.layer.1.attention.self.value",
            "encoder.layer.3.attention.self.value"
        ]
    );
    assert_eq!(
        paths("all-linear;layers=0-1", 4).len(),
        12,
        "the pooler has no layer index"
    );
    let err = "query;layers=7"
        .parse::<TargetSpec>()
        .unwrap()
        .select(&module_slots(6))
        .unwrap_err()
        .to_string();
    assert!(err.contains("layer 7"), "{err}");
    assert!("query;layers=x".parse::<TargetSpec>().is_err());
}

#[test]
fn nothing_matches_lists_available_paths() {
    let err = "pooler;layers=0"
        .parse::<TargetSpec>()
        .unwrap()
        .select(&module_slots(2))
        .unwrap_err()
        .to_string();
    assert!(err.contains("matches no module"), "{err}");
    for p in module_slots(2) {
        assert!(err.contains(&p.path), "{err} should list {}", p.path);
    }
}

#[test]
fn serde_forms() {
    let a: TargetSpec =
        serde_json::from_str(r#"{"modules": ["query", "Wv"], "layers": [0, 2]}"#).unwrap();
    let b: TargetSpec = "query,value;layers=0,2".parse().unwrap();
    assert_eq!(a, b);
    let json = serde_json::to_string(&a).unwrap();
    assert_eq!(json, r#"{"modules":["query","value"],"layers":[0,2]}"#);
    assert_eq!(serde_json::from_str::<TargetSpec>(&json).unwrap(), a);
    let r: TargetSpec = serde_json::from_str(r#"{"modules": "regex:pooler\\.dense"}"#).unwrap();
    assert_eq!(r.to_string(), r"regex:pooler\.dense");
    assert_eq!(
        serde_json::from_str::<TargetSpec>(&serde_json::to_string(&r).unwrap()).unwrap(),
        r
    );
    assert!(serde_json::from_str::<TargetSpec>(r#"{"modules": "nope"}"#).is_err());
    assert_eq!(b.to_string().parse::<TargetSpec>().unwrap(), b);
}

#[test]
fn injection_follows_the_spec_and_rejects_an_empty_match() {
    let cfg = BertConfig {
        vocab_size: 16,
        hidden_size: 8,
        num_hidden_layers: 3,
        num_attention_heads: 2,
        intermediate_size: 12,
        max_position_embeddings: 8,
        ..Default::default()
    };
    let dev = Default::default();
    let make = || {
        let bert = BertModel::<Ad>::init(&cfg, &dev).unwrap();
        BertForSequenceClassification::with_new_head(bert, 2, 0.02, 0.1, 0, &dev).unwrap()
    };
    let lora = MethodConfig::lora(LoraConfig::new().with_r(2));
    let spec: TargetSpec = "pooler;layers=1".parse().unwrap();
    let err = apply_method(make(), &lora, &spec, &dev)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("encoder.layer.2.output.dense"), "{err}");

    let spec: TargetSpec = "Wo,Wf2;layers=1".parse().unwrap();
    let (model, report) = apply_method(make(), &lora, &spec, &dev).unwrap();
    let ranks: Vec<usize> = model.adapted_linears().iter().map(|l| l.rank()).collect();
    let mut want = vec![0; 19];
    want[6 + 3] = 2;
    want[6 + 5] = 2;
    assert_eq!(ranks, want);
    assert_eq!(
        report.trainable_params,
        2 * (8 + 8) + 2 * (12 + 8) + 8 * 2 + 2
    );
    let text = report.to_string();
    assert!(
        text.starts_with("trainable params: 90 || all params: "),
        "{text}"
    );
    assert!(text.contains("encoder.layer.1.output.dense"), "{text}");
    assert_eq!(thousands(22_713_216), "22,713,216");
    assert_eq!(thousands(999), "999");
}
