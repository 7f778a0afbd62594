//! `adalora encode` against sentence-transformers on the real all-MiniLM-L6-v2
//! (fixtures/model/minilm_reference.*, from scripts/fixtures/make_model_fixtures.py).
//! Needs the model: run scripts/fetch-assets.sh first.

use std::path::PathBuf;

use adalora_train::encode::{encode_file, EncodeOptions, Pooling};
use safetensors::SafeTensors;

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/model")
}

fn reference(name: &str) -> Vec<f32> {
    let bytes = std::fs::read(fixture_dir().join("minilm_reference.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let view = st.tensor(name).unwrap();
    view.data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

fn assert_close(what: &str, got: &[f32], want: &[f32], tol: f32) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let d = got
        .iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max);
    assert!(d <= tol, "{what}: max abs diff {d} > {tol}");
}

/// Rows of the written CSV: (line index, vector).
fn rows(path: &std::path::Path) -> Vec<(usize, Vec<f32>)> {
    let csv = std::fs::read_to_string(path).unwrap();
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    assert_eq!(
        (header.len(), header[0], header[1], header[384]),
        (385, "index", "dim_0", "dim_383")
    );
    lines
        .map(|l| {
            let mut cells = l.split(',');
            let i = cells.next().unwrap().parse().unwrap();
            (i, cells.map(|x| x.parse().unwrap()).collect())
        })
        .collect()
}

#[test]
fn encode_matches_sentence_transformers_mean_pooling() {
    let meta: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixture_dir().join("minilm_reference.json")).unwrap(),
    )
    .unwrap();
    let texts: Vec<String> = serde_json::from_value(meta["single"]["texts"].clone()).unwrap();
    let max_len = meta["single"]["max_length"].as_u64().unwrap() as usize;
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("sentences.txt");
    // A blank line is skipped but keeps the line numbering.
    let text = format!("{}\n\n{}\n", texts[..2].join("\n"), texts[2..].join("\n"));
    std::fs::write(&input, text).unwrap();
    let out = tmp.path().join("emb.csv");
    let mut opts = EncodeOptions::new(&input, &out);
    opts.model_dir =
        Some(adalora_train::resolve_model_dir(None).expect(
            "the real model is needed: run scripts/fetch-assets.sh from the repository root",
        ));
    opts.normalize = true;
    opts.max_len = max_len;
    opts.batch_size = 3;
    let report = encode_file(&opts).unwrap();
    assert_eq!(
        (report.sentences, report.skipped_blank, report.dim),
        (4, 1, 384)
    );
    let got = rows(&out);
    let indices: Vec<usize> = got.iter().map(|(i, _)| *i).collect();
    assert_eq!(indices, [0, 1, 3, 4]);
    let vectors: Vec<f32> = got.iter().flat_map(|(_, v)| v.clone()).collect();
    assert_close(
        "mean-pooled normalized embeddings",
        &vectors,
        &reference("single.mean_normalized"),
        1e-5,
    );
    for (_, v) in &got {
        let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5);
    }
    // No temporary file is left behind.
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 2);

    opts.pooling = Pooling::Cls;
    opts.normalize = false;
    encode_file(&opts).unwrap();
    let vectors: Vec<f32> = rows(&out).into_iter().flat_map(|(_, v)| v).collect();
    assert_close("CLS embeddings", &vectors, &reference("single.cls"), 1e-4);
}
