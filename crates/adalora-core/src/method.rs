//! The fine-tuning methods: the one registry the CLI, the run configuration, target injection
//! and the PEFT files read (names, aliases, default learning rates), and [`MethodConfig`], a
//! method with the adapter settings it is built from.

use serde::{Deserialize, Serialize};

use crate::config::AdaLoraConfig;
use crate::error::CoreError;
use crate::lora::LoraConfig;

/// α of LoRA and AdaLoRA adapters. The AdaLoRA paper (§4, implementation details) "fixes α as
/// LoRA" does, where it is typically 16 or 32; PEFT's default of 8 is not what either paper ran.
pub const DEFAULT_ALPHA: f64 = 16.0;

/// A fine-tuning method.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Method {
    /// Every parameter trainable.
    #[serde(rename = "full")]
    Full,
    /// Bias terms only (dense biases, LayerNorm β) plus the head.
    #[serde(rename = "bitfit")]
    BitFit,
    #[serde(rename = "lora")]
    Lora,
    #[serde(rename = "adalora")]
    AdaLora,
}

impl Method {
    pub const ALL: [Method; 4] = [Method::Full, Method::BitFit, Method::Lora, Method::AdaLora];

    /// The name used on the command line, in config files and run summaries.
    pub fn name(self) -> &'static str {
        match self {
            Method::Full => "full",
            Method::BitFit => "bitfit",
            Method::Lora => "lora",
            Method::AdaLora => "adalora",
        }
    }

    /// A method by name (case-insensitive; `ft` and `full-ft` are aliases of `full`).
    pub fn parse(s: &str) -> Result<Self, CoreError> {
        let lower = s.to_ascii_lowercase();
        let alias = match lower.as_str() {
            "ft" | "full-ft" => "full",
            other => other,
        };
        Method::ALL
            .into_iter()
            .find(|m| m.name() == alias)
            .ok_or_else(|| {
                CoreError::invalid(
                    "method",
                    s,
                    "unknown method; expected full, bitfit, lora or adalora",
                )
            })
    }

    /// Per-method default learning rate. AdaLoRA's λ starts at zero and learns slowly at
    /// LoRA's rate (PEFT on MiniLM/MRPC: lr 5e-4 stays at the majority class, 2e-3 learns), so
    /// its default is higher, as in the paper's Table 8 (5e-4 … 2.2e-3).
    pub fn default_lr(self) -> f64 {
        match self {
            Method::Full => 5e-5,
            Method::BitFit => 1e-3,
            Method::Lora => 5e-4,
            Method::AdaLora => 2e-3,
        }
    }

    /// Whether the method trains adapters (and so writes a PEFT adapter folder).
    pub fn has_adapters(self) -> bool {
        matches!(self, Method::Lora | Method::AdaLora)
    }

    /// Whether the method trains the base model's weights (impossible on a quantized base).
    pub fn trains_base(self) -> bool {
        !self.has_adapters()
    }
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A method and the settings its adapters are built from: what target injection and the
/// PEFT writer read. Only the settings of `method` are used.
#[derive(Clone, Debug, PartialEq)]
pub struct MethodConfig {
    pub method: Method,
    pub lora: LoraConfig,
    pub adalora: AdaLoraConfig,
}

impl MethodConfig {
    /// `method` with the default settings.
    pub fn new(method: Method) -> Self {
        MethodConfig {
            method,
            lora: LoraConfig::new(),
            adalora: AdaLoraConfig::default(),
        }
    }

    pub fn lora(lora: LoraConfig) -> Self {
        MethodConfig {
            lora,
            ..MethodConfig::new(Method::Lora)
        }
    }

    pub fn adalora(adalora: AdaLoraConfig) -> Self {
        MethodConfig {
            adalora,
            ..MethodConfig::new(Method::AdaLora)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_aliases_parse() {
        for m in Method::ALL {
            assert_eq!(Method::parse(m.name()).unwrap(), m);
            assert_eq!(Method::parse(&m.name().to_uppercase()).unwrap(), m);
            let json = serde_json::to_string(&m).unwrap();
            assert_eq!(json, format!("\"{}\"", m.name()));
        }
        assert_eq!(Method::parse("full-ft").unwrap(), Method::Full);
        let err = Method::parse("prefix").unwrap_err().to_string();
        assert!(err.contains("prefix") && err.contains("adalora"), "{err}");
    }

    #[test]
    fn lora_and_adalora_share_one_alpha_default() {
        assert_eq!(LoraConfig::new().alpha, DEFAULT_ALPHA);
        assert_eq!(AdaLoraConfig::default().alpha, DEFAULT_ALPHA);
    }
}
