//! `[report]` of a sweep file: how `adalora report` selects, compares and summarises runs.
//!
//! ```toml
//! [report]
//! protocol = "held-out"        # or "best-dev" (default): where the lr and checkpoint are chosen
//! equivalence_margin = 1.0     # points: a TOST per comparison (none by default)
//! learned_margin = 2.0         # points above the constant-prediction baseline a run must reach
//! center = "mean"              # or "median": the table's centre over seeds
//! compare = [["QLoRA r=8", "LoRA r=8"]]   # extra comparisons (left − right), by row label
//! ```
//!
//! Kept in the manifest (copied from the sweep file at every sync), so the report of a sweep
//! folder needs nothing else.

use adalora_train::config::Setting;
use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

/// Where a study chooses its learning rate and checkpoint (one definition, the trainer's).
pub use adalora_train::Protocol;

/// The centre the main table shows over seeds (PEFT GLUE papers report either).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Center {
    #[default]
    Mean,
    Median,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReportSettings {
    /// None: whatever the runs were trained under (best-dev for runs that predate protocols).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<Protocol>,
    /// In points (metric × 100); a TOST per comparison when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub equivalence_margin: Option<f64>,
    /// In points: a run within this of its task's constant-prediction baseline did not learn.
    #[serde(default = "default_learned_margin")]
    pub learned_margin: f64,
    #[serde(default)]
    pub center: Center,
    /// Extra comparisons, `[left, right]` row labels (left − right).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub compare: Vec<[String; 2]>,
}

fn default_learned_margin() -> f64 {
    2.0
}

impl Default for ReportSettings {
    fn default() -> Self {
        ReportSettings {
            protocol: None,
            equivalence_margin: None,
            learned_margin: default_learned_margin(),
            center: Center::default(),
            compare: Vec::new(),
        }
    }
}

const KEYS: [&str; 5] = [
    "protocol",
    "equivalence_margin",
    "learned_margin",
    "center",
    "compare",
];

impl ReportSettings {
    /// `[report]` of a sweep file; `origin` names the file in errors.
    pub fn from_toml(v: &toml::Value, origin: &str) -> anyhow::Result<Self> {
        let table = v
            .as_table()
            .with_context(|| format!("{origin}: [report] must be a table"))?;
        if let Some(k) = table.keys().find(|k| !KEYS.contains(&k.as_str())) {
            bail!(
                "{origin}: unknown key `report.{k}` (expected one of {})",
                KEYS.join(", ")
            );
        }
        let mut s = ReportSettings::default();
        if let Some(p) = table.get("protocol") {
            let name = p
                .as_str()
                .with_context(|| format!("{origin}: report.protocol must be a string"))?;
            s.protocol =
                Some(Protocol::parse(name).with_context(|| format!("{origin}: report.protocol"))?);
        }
        if let Some(m) = table.get("equivalence_margin") {
            s.equivalence_margin = Some(points(m, "equivalence_margin", origin)?);
        }
        if let Some(m) = table.get("learned_margin") {
            s.learned_margin = points(m, "learned_margin", origin)?;
        }
        if let Some(c) = table.get("center") {
            s.center = match c.as_str() {
                Some("mean") => Center::Mean,
                Some("median") => Center::Median,
                _ => bail!("{origin}: report.center = {c}: expected \"mean\" or \"median\""),
            };
        }
        if let Some(c) = table.get("compare") {
            s.compare = compare_list(c, origin)?;
        }
        Ok(s)
    }

    /// The `[report]` table of a TOML file (a sweep file or a file holding only that table).
    pub fn from_file(path: &std::path::Path) -> anyhow::Result<Self> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {origin}"))?;
        let doc: toml::Value =
            toml::from_str(&text).with_context(|| format!("{origin}: not valid TOML"))?;
        let table = doc
            .get("report")
            .with_context(|| format!("{origin}: no [report] table"))?;
        Self::from_toml(table, &origin)
    }

    /// The settings every run of the sweep needs for this report (the held-out split).
    pub fn run_settings(&self) -> Vec<Setting> {
        match self.protocol {
            Some(p @ Protocol::HeldOut) => vec![Setting::new("train.protocol", p.name())],
            Some(Protocol::BestDev) | None => Vec::new(),
        }
    }
}

/// A margin in points: finite and > 0.
fn points(v: &toml::Value, key: &str, origin: &str) -> anyhow::Result<f64> {
    let x = v
        .as_float()
        .or_else(|| v.as_integer().map(|i| i as f64))
        .with_context(|| format!("{origin}: report.{key} = {v}: expected a number of points"))?;
    if !(x.is_finite() && x > 0.0) {
        bail!("{origin}: report.{key} = {x}: must be a positive number of points");
    }
    Ok(x)
}

fn compare_list(v: &toml::Value, origin: &str) -> anyhow::Result<Vec<[String; 2]>> {
    let bad = || {
        anyhow::anyhow!(
            "{origin}: report.compare must be a list of [left, right] row labels, e.g. \
             [[\"QLoRA r=8\", \"LoRA r=8\"]]"
        )
    };
    v.as_array()
        .ok_or_else(bad)?
        .iter()
        .map(|pair| match pair.as_array().map(|p| p.as_slice()) {
            Some([toml::Value::String(l), toml::Value::String(r)]) => Ok([l.clone(), r.clone()]),
            _ => Err(bad()),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> anyhow::Result<ReportSettings> {
        let doc: toml::Table = text.parse().unwrap();
        ReportSettings::from_toml(&doc["report"], "s.toml")
    }

    #[test]
    fn reads_every_key() {
        let s = parse(
            "[report]\nprotocol = \"held-out\"\nequivalence_margin = 1\nlearned_margin = 5.0\n\
             center = \"median\"\ncompare = [[\"a\", \"b\"]]\n",
        )
        .unwrap();
        assert_eq!(s.protocol, Some(Protocol::HeldOut));
        assert_eq!(s.equivalence_margin, Some(1.0));
        assert_eq!(s.learned_margin, 5.0);
        assert_eq!(s.center, Center::Median);
        assert_eq!(s.compare, vec![["a".to_string(), "b".to_string()]]);
        assert_eq!(s.run_settings()[0].key, "train.protocol");
    }

    #[test]
    fn bad_values_name_the_key() {
        for (text, needle) in [
            ("protocol = \"best\"", "unknown protocol \"best\""),
            ("equivalence_margin = 0", "report.equivalence_margin = 0"),
            ("equivalence_margin = -1.0", "positive"),
            ("learned_margin = \"x\"", "report.learned_margin"),
            ("center = \"mode\"", "report.center"),
            ("compare = [[\"a\"]]", "report.compare"),
            ("margin = 1", "unknown key `report.margin`"),
        ] {
            let err = format!("{:#}", parse(&format!("[report]\n{text}\n")).unwrap_err());
            assert!(
                err.contains(needle) && err.contains("s.toml"),
                "{text}: {err}"
            );
        }
    }
}
