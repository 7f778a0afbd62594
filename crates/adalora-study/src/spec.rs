//! A sweep file and its expansion into runs.
//!
//! ```toml
//! name = "budget"                 # optional; default: the file name
//! base = "quickstart.toml"        # optional run configuration, relative to this file
//! [set]                           # settings shared by every run (dotted keys)
//! "train.epochs" = 1
//! [sweep]                         # one axis per key: a list of values, crossed in
//!                                 # alphabetical order of the keys (the last varies fastest)
//! method = ["lora", "adalora"]
//! seed = [1, 2, 3]
//! budget = [                      # a list of tables: settings that move together
//!   { label = "r2", "lora.r" = 2, "adalora.init_r" = 3, "adalora.target_r" = 2 },
//! ]
//! [[exclude]]                     # drop grid runs matching every key (a list = any of)
//! method = "lora"
//! "train.lr" = [1e-2]
//! [[include]]                     # extra runs outside the grid ([set] applies to them too)
//! method = "lora"
//! "lora.r" = 4
//! ```
//!
//! Every key is a `RunConfig` setting (`section.key`), checked when the file is read: an
//! unknown key, a value of the wrong type or an empty grid is an error naming the key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use adalora_train::config::Setting;
use adalora_train::io::fnv1a64;
use adalora_train::RunConfig;
use anyhow::{bail, Context};

use crate::report_settings::ReportSettings;
use crate::slurm::SlurmOptions;

const TOP_LEVEL_KEYS: [&str; 9] = [
    "name",
    "description",
    "base",
    "set",
    "sweep",
    "include",
    "exclude",
    "slurm",
    "report",
];

/// One value of an axis: the settings it applies and a short label for folder names.
#[derive(Clone, Debug)]
struct AxisValue {
    label: String,
    settings: Vec<Setting>,
}

#[derive(Clone, Debug)]
struct Axis {
    values: Vec<AxisValue>,
}

/// A parsed sweep file.
#[derive(Clone, Debug)]
pub struct SweepSpec {
    pub path: PathBuf,
    pub name: String,
    pub base: Option<PathBuf>,
    set: Vec<Setting>,
    axes: Vec<Axis>,
    include: Vec<Vec<Setting>>,
    exclude: Vec<Vec<(String, Vec<toml::Value>)>>,
    /// Resources per run for `--executor slurm` (`[slurm]`; not part of any run's identity).
    pub slurm: SlurmOptions,
    /// How the report selects and compares runs (`[report]`); a held-out protocol also sets
    /// `train.protocol` in every run.
    pub report: ReportSettings,
}

/// One run of the expanded grid.
#[derive(Clone, Debug)]
pub struct PlannedRun {
    /// Folder-friendly label from the axis values (`lora-seed1`).
    pub label: String,
    /// The settings on top of `base`, in application order (later wins).
    pub settings: Vec<Setting>,
    pub config: RunConfig,
    /// FNV-1a of the resolved configuration: the identity of the run in the manifest.
    pub hash: String,
}

impl PlannedRun {
    /// `key=value` strings, as `--set` takes them.
    pub fn overrides(&self) -> Vec<String> {
        self.settings.iter().map(Setting::to_string).collect()
    }

    /// The value this run sets for `key`, if any (the last assignment wins).
    pub fn value(&self, key: &str) -> Option<&toml::Value> {
        self.settings
            .iter()
            .rev()
            .find(|s| s.key == key)
            .map(|s| &s.value)
    }
}

impl SweepSpec {
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading sweep file {}", path.display()))?;
        Self::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> anyhow::Result<Self> {
        let file = path.display();
        let doc: toml::Table = text
            .parse()
            .with_context(|| format!("parsing sweep file {file}"))?;
        if let Some(key) = doc.keys().find(|k| !TOP_LEVEL_KEYS.contains(&k.as_str())) {
            bail!(
                "sweep file {file}: unknown top-level key `{key}` (expected one of {}; run \
                 settings go under [set], [sweep], [[include]] or [[exclude]])",
                TOP_LEVEL_KEYS.join(", ")
            );
        }
        let name = match doc.get("name") {
            Some(v) => v
                .as_str()
                .with_context(|| format!("sweep file {file}: `name` must be a string"))?
                .to_string(),
            None => path
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or("sweep")
                .to_string(),
        };
        let base = match doc.get("base") {
            Some(v) => {
                let rel = v
                    .as_str()
                    .with_context(|| format!("sweep file {file}: `base` must be a path string"))?;
                let p = path.parent().unwrap_or(Path::new(".")).join(rel);
                if !p.is_file() {
                    bail!(
                        "sweep file {file}: base = {rel:?}: {} does not exist",
                        p.display()
                    );
                }
                Some(p)
            }
            None => None,
        };
        let set = match doc.get("set") {
            Some(v) => settings_of(v, &format!("sweep file {file}: [set]"))?,
            None => Vec::new(),
        };
        let sweep = doc
            .get("sweep")
            .with_context(|| format!("sweep file {file}: no [sweep] table of lists"))?
            .as_table()
            .with_context(|| format!("sweep file {file}: `sweep` must be a table of lists"))?;
        let mut axes = Vec::new();
        for (key, values) in sweep {
            let list = values.as_array().with_context(|| {
                format!("sweep file {file}: [sweep] {key} must be a list of values")
            })?;
            if list.is_empty() {
                bail!("sweep file {file}: [sweep] {key} is an empty list: the grid would be empty");
            }
            let values = list
                .iter()
                .map(|v| axis_value(key, v, &format!("sweep file {file}: [sweep] {key}")))
                .collect::<anyhow::Result<Vec<_>>>()?;
            axes.push(Axis { values });
        }
        let rows = |name: &str| -> anyhow::Result<Vec<&toml::Table>> {
            match doc.get(name) {
                None => Ok(Vec::new()),
                Some(toml::Value::Array(a)) => a
                    .iter()
                    .map(|r| {
                        r.as_table().with_context(|| {
                            format!("sweep file {file}: [[{name}]] rows must be tables")
                        })
                    })
                    .collect(),
                Some(_) => bail!("sweep file {file}: `{name}` must be written [[{name}]]"),
            }
        };
        let include = rows("include")?
            .into_iter()
            .enumerate()
            .map(|(i, t)| {
                settings_of(
                    &toml::Value::Table(t.clone()),
                    &format!("sweep file {file}: [[include]] #{}", i + 1),
                )
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let mut exclude = Vec::new();
        for (i, t) in rows("exclude")?.into_iter().enumerate() {
            let mut row = Vec::new();
            for (key, v) in t {
                let options = match v {
                    toml::Value::Array(a) => a.clone(),
                    other => vec![other.clone()],
                };
                for o in &options {
                    check_setting(
                        key,
                        o,
                        &format!("sweep file {file}: [[exclude]] #{}", i + 1),
                    )?;
                }
                row.push((key.clone(), options));
            }
            exclude.push(row);
        }
        let slurm = match doc.get("slurm") {
            Some(v) => SlurmOptions::from_toml(v, &file.to_string())?,
            None => SlurmOptions::default(),
        };
        let report = match doc.get("report") {
            Some(v) => ReportSettings::from_toml(v, &format!("sweep file {file}"))?,
            None => ReportSettings::default(),
        };
        // The protocol's run settings come first so a run's own setting still wins.
        let set = report.run_settings().into_iter().chain(set).collect();
        let spec = SweepSpec {
            path: path.to_path_buf(),
            name,
            base,
            set,
            axes,
            include,
            exclude,
            slurm,
            report,
        };
        Ok(spec)
    }

    /// Every run: the grid minus excluded combinations, then the include rows. Each run's
    /// configuration is resolved and validated; duplicates are errors.
    pub fn expand(&self) -> anyhow::Result<Vec<PlannedRun>> {
        let file = self.path.display();
        let mut combos: Vec<Vec<&AxisValue>> = vec![Vec::new()];
        for axis in &self.axes {
            combos = combos
                .into_iter()
                .flat_map(|c| {
                    axis.values.iter().map(move |v| {
                        let mut c = c.clone();
                        c.push(v);
                        c
                    })
                })
                .collect();
        }
        let mut runs = Vec::new();
        for combo in combos {
            let mut settings = self.set.clone();
            settings.extend(combo.iter().flat_map(|v| v.settings.iter().cloned()));
            let label = combo
                .iter()
                .map(|v| v.label.as_str())
                .collect::<Vec<_>>()
                .join("-");
            let run = self.plan(label, settings)?;
            if !self.excluded(&run) {
                runs.push(run);
            }
        }
        for (i, row) in self.include.iter().enumerate() {
            let mut settings = self.set.clone();
            settings.extend(row.iter().cloned());
            let label = row
                .iter()
                .map(|s| short_label(&s.key, &s.value))
                .collect::<Vec<_>>()
                .join("-");
            runs.push(
                self.plan(label, settings)
                    .with_context(|| format!("sweep file {file}: [[include]] #{}", i + 1))?,
            );
        }
        if runs.is_empty() {
            bail!("sweep file {file}: the grid is empty (every combination is excluded)");
        }
        let mut seen = BTreeMap::new();
        for (i, r) in runs.iter().enumerate() {
            if let Some(j) = seen.insert(r.hash.clone(), i) {
                bail!(
                    "sweep file {file}: runs #{j} ({}) and #{i} ({}) resolve to the same \
                     configuration",
                    runs[j].label,
                    r.label
                );
            }
        }
        Ok(runs)
    }

    fn plan(&self, label: String, settings: Vec<Setting>) -> anyhow::Result<PlannedRun> {
        let config =
            RunConfig::load_settings(self.base.as_deref(), &settings).with_context(|| {
                let shown: Vec<String> = settings.iter().map(Setting::to_string).collect();
                format!(
                    "sweep file {}: run {label} ({})",
                    self.path.display(),
                    shown.join(" ")
                )
            })?;
        let hash = format!("{:016x}", fnv1a64(config.to_toml()?.as_bytes()));
        Ok(PlannedRun {
            label: sanitize(&label),
            settings,
            config,
            hash,
        })
    }

    fn excluded(&self, run: &PlannedRun) -> bool {
        self.exclude.iter().any(|row| {
            row.iter()
                .all(|(k, options)| run.value(k).is_some_and(|v| options.contains(v)))
        })
    }
}

fn axis_value(key: &str, v: &toml::Value, origin: &str) -> anyhow::Result<AxisValue> {
    match v {
        toml::Value::Table(t) => {
            let label = match t.get("label") {
                Some(l) => l
                    .as_str()
                    .with_context(|| format!("{origin}: `label` must be a string"))?
                    .to_string(),
                None => t
                    .iter()
                    .map(|(k, v)| short_label(k, v))
                    .collect::<Vec<_>>()
                    .join("-"),
            };
            let mut rest = t.clone();
            rest.remove("label");
            Ok(AxisValue {
                label,
                settings: settings_of(&toml::Value::Table(rest), origin)?,
            })
        }
        _ => {
            check_setting(key, v, origin)?;
            Ok(AxisValue {
                label: short_label(key, v),
                settings: vec![Setting::new(key, v.clone())],
            })
        }
    }
}

/// A table of `"section.key" = value` (or nested `[section]` tables) as settings.
fn settings_of(v: &toml::Value, origin: &str) -> anyhow::Result<Vec<Setting>> {
    let table = v
        .as_table()
        .with_context(|| format!("{origin} must be a table of settings"))?;
    let mut out = Vec::new();
    flatten("", table, &mut out);
    for s in &out {
        check_setting(&s.key, &s.value, origin)?;
    }
    Ok(out)
}

fn flatten(prefix: &str, table: &toml::Table, out: &mut Vec<Setting>) {
    for (k, v) in table {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match v {
            // `custom` is itself a table-valued setting; every other table is a section.
            toml::Value::Table(t) if key != "custom" => flatten(&key, t, out),
            _ => out.push(Setting::new(&key, v.clone())),
        }
    }
}

/// Does `key = value` name a real setting of the right type? Checked alone on the defaults
/// (deserialization only: cross-setting rules are checked per run).
fn check_setting(key: &str, value: &toml::Value, origin: &str) -> anyhow::Result<()> {
    Setting::new(key, value.clone())
        .check()
        .with_context(|| origin.to_string())
}

fn short_label(key: &str, v: &toml::Value) -> String {
    let leaf = key.rsplit('.').next().unwrap_or(key);
    let value = match v {
        toml::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    match leaf {
        "method" | "task" => value,
        _ => format!("{leaf}{value}"),
    }
}

/// Keep folder names portable.
fn sanitize(label: &str) -> String {
    let s: String = label
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect();
    s.chars().take(80).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> anyhow::Result<SweepSpec> {
        SweepSpec::parse(Path::new("experiments/t.toml"), text)
    }

    #[test]
    fn grid_crosses_axes_applies_exclude_and_include() {
        let spec = parse(
            r#"
            [set]
            "train.max_steps" = 5
            [sweep]
            method = ["lora", "adalora"]
            seed = [1, 2]
            "train.lr" = [1e-3, 1e-2]
            [[exclude]]
            method = "lora"
            "train.lr" = [1e-2]
            [[include]]
            method = "lora"
            "lora.r" = 2
            "#,
        )
        .unwrap();
        let runs = spec.expand().unwrap();
        // 2 × 2 × 2 = 8, minus the 2 LoRA runs at 1e-2, plus one include.
        assert_eq!(runs.len(), 7);
        assert!(runs
            .iter()
            .all(|r| r.config.train.max_steps == Some(5) && !r.label.is_empty()));
        assert!(!runs
            .iter()
            .any(|r| r.config.method.name() == "lora" && r.config.lr() == 1e-2));
        assert_eq!(runs[6].config.lora.r, 2);
        let hashes: std::collections::BTreeSet<_> = runs.iter().map(|r| &r.hash).collect();
        assert_eq!(hashes.len(), 7);
    }

    #[test]
    fn bundles_move_settings_together() {
        let spec = parse(
            r#"
            [sweep]
            budget = [
              { label = "r2", "lora.r" = 2, adalora = { init_r = 3, target_r = 2 } },
              { label = "r8", "lora.r" = 8, "adalora.init_r" = 12, "adalora.target_r" = 8 },
            ]
            "#,
        )
        .unwrap();
        let runs = spec.expand().unwrap();
        assert_eq!(runs.len(), 2);
        assert_eq!(runs[0].label, "r2");
        assert_eq!(
            (
                runs[0].config.adalora.init_r,
                runs[0].config.adalora.target_r
            ),
            (3, 2)
        );
        assert_eq!(runs[1].config.lora.r, 8);
    }

    #[test]
    fn bad_sweep_files_name_the_key() {
        let cases = [
            ("[sweep]\n\"train.lrr\" = [1]\n", "train.lrr"),
            ("[sweep]\nseed = [\"a\"]\n", "seed"),
            ("[sweep]\nseed = []\n", "empty"),
            ("[sweep]\nseed = 3\n", "seed must be a list"),
            ("[swep]\nseed = [1]\n", "unknown top-level key `swep`"),
            (
                "[sweep]\nseed = [1]\n[[exclude]]\nseed = 1\n",
                "the grid is empty",
            ),
            ("[set]\n\"lora.rr\" = 2\n[sweep]\nseed = [1]\n", "lora.rr"),
            ("[sweep]\nseed = [1, 1]\n", "same configuration"),
            ("[sweep]\n\"adalora.target_r\" = [20]\n", "target_r = 20"),
        ];
        for (text, needle) in cases {
            let err = parse(text).and_then(|s| s.expand()).unwrap_err();
            let msg = format!("{err:#}");
            assert!(msg.contains(needle), "{text:?}: {msg}");
            assert!(msg.contains("t.toml"), "{text:?} names the file: {msg}");
        }
    }
}
