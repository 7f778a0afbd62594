//! Every number of `adalora analyze` against numpy on committed fixtures: a LoRA r=2 and an
//! AdaLoRA 3→2 adapter of all-MiniLM-L6-v2 (several of its matrices pruned to rank 0) in
//! `fixtures/analysis/`, and `expected.json` made from them by
//! `scripts/fixtures/make_analysis_fixtures.py` (ΔW rebuilt there with PEFT's formulas, SVD by
//! numpy in float64). The random baselines are seeded draws, not in the reference.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use adalora_analysis::analysis::{similarity, PhiCell};
use adalora_analysis::{analyze_source, output, write_analysis, Analyzed, Side};
use adalora_train::ops::Source;
use adalora_train::RunConfig;
use serde_json::Value;

/// Relative tolerance of every comparison (the 1e-5).
const TOL: f64 = 1e-5;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The MiniLM checkpoint the fixtures were trained on: required, as scripts/test.sh fetches it.
fn minilm() -> PathBuf {
    let cache =
        std::env::var_os("ADALORA_CACHE").map_or_else(|| root().join(".cache"), PathBuf::from);
    let dir = cache.join("models/all-MiniLM-L6-v2");
    assert!(
        dir.join("model.safetensors").is_file(),
        "{} is missing: run scripts/fetch-assets.sh (or set ADALORA_CACHE)",
        dir.display()
    );
    dir
}

fn analyzed(name: &str) -> Vec<Analyzed> {
    let src = Source {
        config: RunConfig::load(None, &[]).unwrap(),
        model_dir: minilm(),
        weights: root().join("fixtures/analysis").join(name),
        model_fingerprint: None,
    };
    analyze_source(&src).unwrap_or_else(|e| panic!("analysing fixtures/analysis/{name}: {e:#}"))
}

fn expected() -> Value {
    let path = root().join("fixtures/analysis/expected.json");
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// `got` within `TOL` of `want`, relative (absolute below 1e-12: zero stays zero).
fn close(what: &str, got: f64, want: f64) {
    close_above(what, got, want, 1e-12);
}

/// `got` within `TOL` of `want`, relative to `want` or to `floor` where `want` is smaller.
fn close_above(what: &str, got: f64, want: f64, floor: f64) {
    let err = (got - want).abs() / want.abs().max(floor);
    assert!(
        err <= TOL,
        "{what}: {got} against numpy's {want} (relative error {err:.2e})"
    );
}

/// A JSON number, or None for null.
fn opt(v: &Value) -> Option<f64> {
    v.as_f64()
}

fn close_opt(what: &str, got: Option<f64>, want: &Value) {
    match (got, opt(want)) {
        (Some(g), Some(w)) => close(what, g, w),
        (None, None) => {}
        (g, _) => panic!("{what}: {g:?} against numpy's {want}"),
    }
}

/// The adapter's matrices by module path, checked to be exactly the reference's.
fn by_path<'a>(analyzed: &'a [Analyzed], want: &Value) -> BTreeMap<String, &'a Analyzed> {
    let got: BTreeMap<String, &Analyzed> = analyzed
        .iter()
        .map(|a| (a.matrix.path.clone(), a))
        .collect();
    let want: Vec<&String> = want.as_object().unwrap().keys().collect();
    assert_eq!(got.keys().collect::<Vec<_>>(), want, "adapted matrices");
    got
}

fn check_matrix(name: &str, a: &Analyzed, want: &Value) {
    let what = |field: &str| format!("{name} {}: {field}", a.matrix.path);
    assert_eq!(
        a.matrix.rank as u64,
        want["rank"].as_u64().unwrap(),
        "{}",
        what("rank")
    );
    let s_want: Vec<f64> = want["singular_values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert_eq!(
        a.singular_values().len(),
        s_want.len(),
        "{}",
        what("spectrum length")
    );
    for (i, (g, w)) in a.singular_values().iter().zip(&s_want).enumerate() {
        close(&what(&format!("σ_{}", i + 1)), *g, *w);
    }
    let s = a.summary();
    close_opt(&what("stable_rank"), s.stable_rank, &want["stable_rank"]);
    close_opt(
        &what("effective_rank"),
        s.effective_rank,
        &want["effective_rank"],
    );
    for (k, (g, w)) in s
        .energy
        .iter()
        .zip(want["energy"].as_array().unwrap())
        .enumerate()
    {
        close_opt(&what(&format!("energy[{k}]")), *g, w);
    }
    close(
        &what("rel_norm"),
        s.rel_norm,
        want["rel_norm"].as_f64().unwrap(),
    );
    check_amplification(a, &want["amplification"], &what);
}

fn check_amplification(a: &Analyzed, want: &Value, what: &dyn Fn(&str) -> String) {
    let got = a.amplification(7).unwrap();
    let Some(got) = got else {
        assert!(
            want.is_null(),
            "{}: no amplification, numpy has {want}",
            what("amplification")
        );
        return;
    };
    assert!(!want.is_null(), "{}: numpy has none", what("amplification"));
    for (field, g) in [
        ("delta_norm", got.delta_norm),
        ("w0_norm", got.w0_norm),
        ("along_delta", got.along_delta),
        ("along_w0", got.along_w0),
        ("factor", got.factor),
    ] {
        close(&what(field), g, want[field].as_f64().unwrap());
    }
}

fn check_adapter(name: &str) {
    let want = &expected()["adapters"][name];
    let analyzed = analyzed(name);
    for (path, a) in by_path(&analyzed, want) {
        check_matrix(name, a, &want[path.as_str()]);
    }
}

#[test]
fn lora_spectra_summaries_and_amplification_match_numpy() {
    check_adapter("lora");
}

#[test]
fn adalora_spectra_summaries_and_amplification_match_numpy() {
    check_adapter("adalora");
}

/// numpy's φ grid of one side: rows i, columns j.
fn grid_of(want: &Value) -> Vec<Vec<f64>> {
    want.as_array()
        .unwrap()
        .iter()
        .map(|row| {
            row.as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect()
        })
        .collect()
}

fn check_phi(path: &str, cells: &[PhiCell], side: Side, want: &Value) {
    let grid = grid_of(want);
    let cells: Vec<&PhiCell> = cells.iter().filter(|c| c.side == side).collect();
    let expected_cells: usize = grid.iter().map(Vec::len).sum();
    assert_eq!(
        cells.len(),
        expected_cells,
        "{path} {}: φ cells",
        side.name()
    );
    for c in cells {
        let w = grid[c.i - 1][c.j - 1];
        // φ lies in [0, 1]; near 0 (nearly orthogonal subspaces) the live model's f32 ΔW
        // leaves absolute errors of ~1e-13, so below 1e-6 the tolerance is absolute.
        let what = format!("{path} {} φ({}, {})", side.name(), c.i, c.j);
        close_above(&what, c.phi, w, 1e-6);
        assert!(
            (0.0..=1.0 + 1e-12).contains(&c.random),
            "random baseline {c:?}"
        );
    }
}

#[test]
fn subspace_similarity_between_lora_and_adalora_matches_numpy() {
    let want = &expected()["similarity_lora_adalora"];
    let (lora, adalora) = (analyzed("lora"), analyzed("adalora"));
    let adalora = by_path(&adalora, want);
    for (path, a) in by_path(&lora, want) {
        let cells = similarity(a, adalora[&path], 3).unwrap();
        for side in Side::BOTH {
            check_phi(&path, &cells, side, &want[path.as_str()][side.name()]);
        }
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The rows of a written CSV for one matrix (`layer`, `module` as the first two cells).
fn rows_of(text: &str, layer: &str, module: &str) -> Vec<Vec<String>> {
    text.lines()
        .map(|l| l.split(',').map(str::to_string).collect::<Vec<_>>())
        .filter(|r| r[0] == layer && r[1] == module)
        .collect()
}

#[test]
fn rank_zero_matrices_are_empty_and_written_as_na_never_nan() {
    let (lora, adalora) = (analyzed("lora"), analyzed("adalora"));
    let zero: Vec<&Analyzed> = adalora.iter().filter(|a| a.matrix.rank == 0).collect();
    assert!(
        zero.len() >= 2,
        "the fixture prunes several matrices to rank 0"
    );
    let dir = tempfile::tempdir().unwrap();
    write_analysis(
        &adalora,
        Some(&lora),
        Some("0.query"),
        5,
        "fixture",
        dir.path(),
    )
    .unwrap();
    let csv = |f: &str| read(&dir.path().join(f));
    for f in [
        output::SPECTRA,
        output::SUMMARY,
        output::AMPLIFICATION,
        output::SIMILARITY,
    ] {
        let text = csv(f);
        assert!(
            !text.to_lowercase().contains("nan"),
            "{f} holds a NaN:\n{text}"
        );
    }
    for a in zero {
        let layer = a.matrix.layer.unwrap().to_string();
        let module = a.matrix.module.as_str();
        assert!(
            a.singular_values().is_empty(),
            "{}: spectrum",
            a.matrix.path
        );
        assert!(
            rows_of(&csv(output::SPECTRA), &layer, module).is_empty(),
            "{}",
            a.matrix.path
        );
        let summary = rows_of(&csv(output::SUMMARY), &layer, module);
        assert_eq!(summary.len(), 1, "{}", a.matrix.path);
        assert_eq!(summary[0][2], "0");
        assert!(summary[0][3..9].iter().all(|c| c == "n/a"), "{summary:?}");
        let amp = rows_of(&csv(output::AMPLIFICATION), &layer, module);
        assert_eq!(amp.len(), 1);
        assert!(amp[0][3..].iter().all(|c| c == "n/a"), "{amp:?}");
        let sim = rows_of(&csv(output::SIMILARITY), &layer, module);
        assert_eq!(sim.len(), 2, "one n/a row per side: {sim:?}");
        assert!(
            sim.iter().all(|r| r[5] == "n/a" && r[6] == "n/a"),
            "{sim:?}"
        );
    }
    for fig in [
        "similarity_0.query_left.png",
        "effective_rank.png",
        "rank.png",
    ] {
        assert!(dir.path().join(fig).is_file(), "{fig} missing");
    }
}
