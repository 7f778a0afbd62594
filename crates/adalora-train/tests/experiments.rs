//! Every committed run configuration in experiments/ parses and validates (sweep files, which
//! have a [sweep] table, are checked by adalora-study's tests).

#[test]
fn all_experiment_configs_load() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../experiments");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let text = std::fs::read_to_string(&path).unwrap();
            let doc: toml::Table = text.parse().unwrap();
            if doc.contains_key("sweep") {
                continue;
            }
            adalora_train::RunConfig::load(Some(&path), &[])
                .unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
            n += 1;
        }
    }
    assert!(
        n >= 4,
        "expected the committed experiment configs, found {n}"
    );
}
