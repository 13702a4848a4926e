//! A model's optional `config.toml`, beside its version directories:
//!
//! ```toml
//! # DIR/<model>/config.toml — every key is optional.
//! backend = "onnx"                 # inferred from the files when absent
//! max_batch_size = 32              # 0 = no batching; default 64 when the graph has a
//!                                  # variable first dimension on every input and output
//! default_model_filename = "model.onnx"
//! warmup = true                    # run once on zeros before reporting ready
//!
//! [version_policy]                 # one of: latest = N | all = true | specific = [1, 3]
//! latest = 1
//!
//! [dynamic_batching]
//! max_queue_delay_us = 0           # how long a partial batch may wait for more requests
//! max_queue_size = 1024            # beyond this, requests are rejected at once (429)
//! default_timeout_us = 0           # queue timeout when a request sets none; 0 = none
//! priority_levels = 1              # requests may set priority 1..=priority_levels
//! default_priority_level = 1
//!
//! [instance_group]
//! count = 1                        # model instances, each running one batch at a time
//!
//! [onnx]
//! intra_op_threads = 0             # 0 = cores / instances
//! inter_op_threads = 1
//!
//! [candle]                         # sentence encoders (backend = "candle")
//! execution = "candle"             # or "onnxruntime": runs the encoder's model.onnx instead
//! max_batch_tokens = 16384         # token budget of one batch (requests are batched by it)
//! max_seq_len = 256                # default: sentence_bert_config.json's max_seq_length
//! truncate = true                  # false: over-long texts are refused (400)
//! max_client_batch_size = 256      # texts per request
//!
//! [features.inputs.b]              # feature enrichment: input `b` is filled, row by row, from
//!                                  # the online feature store when a request gives entity keys
//! features = ["user:clicks", { feature = "user:emb", on_missing = "error" }]
//! on_missing = "default"           # absent/null/stale feature: "default" (use `default`) or "error"
//! default = 0.0
//! ```

use serde::Deserialize;

use crate::error::{Error, Result};

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    pub backend: Option<String>,
    pub max_batch_size: Option<usize>,
    pub default_model_filename: Option<String>,
    pub warmup: Option<bool>,
    #[serde(default)]
    pub version_policy: VersionPolicy,
    #[serde(default)]
    pub dynamic_batching: DynamicBatching,
    #[serde(default)]
    pub instance_group: InstanceGroup,
    #[serde(default)]
    pub onnx: OnnxConfig,
    #[serde(default)]
    pub candle: CandleConfig,
    #[serde(default)]
    pub features: FeaturesConfig,
}

/// Which of a model's versions are served.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum VersionPolicy {
    /// The `n` highest versions.
    Latest(u32),
    /// Every version.
    All(bool),
    /// Exactly these versions.
    Specific(Vec<u64>),
}

impl Default for VersionPolicy {
    fn default() -> Self {
        VersionPolicy::Latest(1)
    }
}

impl VersionPolicy {
    /// The versions to serve out of those on disk (`available` sorted ascending).
    pub fn select(&self, available: &[u64]) -> Vec<u64> {
        match self {
            VersionPolicy::Latest(n) => {
                let skip = available.len().saturating_sub(*n as usize);
                available[skip..].to_vec()
            }
            VersionPolicy::All(_) => available.to_vec(),
            VersionPolicy::Specific(v) => available
                .iter()
                .copied()
                .filter(|a| v.contains(a))
                .collect(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct DynamicBatching {
    pub max_queue_delay_us: u64,
    pub max_queue_size: usize,
    pub default_timeout_us: u64,
    pub priority_levels: u32,
    pub default_priority_level: u32,
}

impl Default for DynamicBatching {
    fn default() -> Self {
        DynamicBatching {
            max_queue_delay_us: 0,
            max_queue_size: 1024,
            default_timeout_us: 0,
            priority_levels: 1,
            default_priority_level: 1,
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct InstanceGroup {
    pub count: usize,
}

impl Default for InstanceGroup {
    fn default() -> Self {
        InstanceGroup { count: 1 }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct OnnxConfig {
    pub intra_op_threads: usize,
    pub inter_op_threads: usize,
}

impl Default for OnnxConfig {
    fn default() -> Self {
        OnnxConfig {
            intra_op_threads: 0,
            inter_op_threads: 1,
        }
    }
}

/// Settings of the candle backend (sentence encoders).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct CandleConfig {
    /// What runs the encoder: `candle` (the default) or `onnxruntime` (a `model.onnx` of
    /// the encoder beside the safetensors; tokenization and pooling stay the same).
    pub execution: Execution,
    pub max_batch_tokens: usize,
    /// `None`: the model's own (`sentence_bert_config.json`, else its position embeddings).
    pub max_seq_len: Option<usize>,
    pub truncate: bool,
    pub max_client_batch_size: usize,
}

impl Default for CandleConfig {
    fn default() -> Self {
        CandleConfig {
            execution: Execution::Candle,
            max_batch_tokens: 16384,
            max_seq_len: None,
            truncate: true,
            max_client_batch_size: 256,
        }
    }
}

/// The engine that runs a sentence encoder's transformer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Execution {
    Candle,
    Onnxruntime,
}

/// Feature enrichment: which inputs the server fills from the online feature store (the
/// lookup itself lives in the server; these are plain names). Empty: none.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct FeaturesConfig {
    /// Input tensor name → the features that fill each of its rows, in order.
    pub inputs: std::collections::BTreeMap<String, InputFeatures>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct InputFeatures {
    pub features: Vec<FeatureSource>,
    /// The policy of the features that set none.
    #[serde(default)]
    pub on_missing: MissingPolicy,
    /// The value of a missing feature under the `default` policy (each of its elements).
    #[serde(default)]
    pub default: f64,
}

/// `"view:feature"`, or a table that overrides the input's policy and default.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum FeatureSource {
    Ref(String),
    Detailed {
        feature: String,
        on_missing: Option<MissingPolicy>,
        default: Option<f64>,
    },
}

impl FeatureSource {
    pub fn feature(&self) -> &str {
        match self {
            FeatureSource::Ref(f) | FeatureSource::Detailed { feature: f, .. } => f,
        }
    }

    /// This feature's policy and default value, given its input's.
    pub fn policy(&self, input: &InputFeatures) -> (MissingPolicy, f64) {
        match self {
            FeatureSource::Ref(_) => (input.on_missing, input.default),
            FeatureSource::Detailed {
                on_missing,
                default,
                ..
            } => (
                on_missing.unwrap_or(input.on_missing),
                default.unwrap_or(input.default),
            ),
        }
    }
}

/// What enrichment does with a feature that is not found, null, or older than its view's ttl.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MissingPolicy {
    /// Use the default value, and say so in the response's parameters.
    #[default]
    Default,
    /// Fail the request.
    Error,
}

impl ModelConfig {
    /// Parses and validates a `config.toml`. `origin` names the file in error messages.
    pub fn parse(text: &str, origin: &str) -> Result<Self> {
        let cfg: ModelConfig =
            toml::from_str(text).map_err(|e| Error::Config(format!("{origin}: {e}")))?;
        cfg.validate()
            .map_err(|e| Error::Config(format!("{origin}: {e}")))?;
        Ok(cfg)
    }

    fn validate(&self) -> std::result::Result<(), String> {
        for (input, f) in &self.features.inputs {
            if f.features.is_empty() {
                return Err(format!(
                    "features.inputs.{input}: list at least one feature"
                ));
            }
            if let Some(bad) = f.features.iter().map(FeatureSource::feature).find(|r| {
                r.split_once(':')
                    .is_none_or(|(v, n)| v.is_empty() || n.is_empty())
            }) {
                return Err(format!(
                    "features.inputs.{input}: '{bad}' must be written 'view:feature'"
                ));
            }
        }
        if let Some(b) = self
            .backend
            .as_ref()
            .filter(|b| *b != "onnx" && *b != "candle")
        {
            return Err(format!(
                "backend '{b}' is not supported (supported: onnx, candle)"
            ));
        }
        if self.candle.max_batch_tokens == 0 || self.candle.max_client_batch_size == 0 {
            return Err(
                "candle.max_batch_tokens and candle.max_client_batch_size must be at least 1"
                    .into(),
            );
        }
        if self.candle.max_seq_len == Some(0) {
            return Err("candle.max_seq_len must be at least 1".into());
        }
        let db = &self.dynamic_batching;
        if db.max_queue_size == 0 {
            return Err("dynamic_batching.max_queue_size must be at least 1".into());
        }
        if db.priority_levels == 0 {
            return Err("dynamic_batching.priority_levels must be at least 1".into());
        }
        if db.default_priority_level == 0 || db.default_priority_level > db.priority_levels {
            return Err(format!(
                "dynamic_batching.default_priority_level must be between 1 and priority_levels ({})",
                db.priority_levels
            ));
        }
        if self.instance_group.count == 0 {
            return Err("instance_group.count must be at least 1".into());
        }
        if let VersionPolicy::Latest(0) = self.version_policy {
            return Err("version_policy.latest must be at least 1".into());
        }
        if let Some(f) = self
            .default_model_filename
            .as_ref()
            .filter(|f| f.contains('/') || f.contains("..") || f.is_empty())
        {
            return Err(format!(
                "default_model_filename '{f}' must be a plain file name"
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_feature_enrichment() {
        let cfg = ModelConfig::parse(
            r#"
            [features.inputs.b]
            features = ["u:a", { feature = "u:b", on_missing = "error" }, { feature = "u:c", default = 2.5 }]
            default = 1.0
            "#,
            "t",
        )
        .unwrap();
        let b = &cfg.features.inputs["b"];
        let p: Vec<(MissingPolicy, f64)> = b.features.iter().map(|f| f.policy(b)).collect();
        assert_eq!(
            p,
            [
                (MissingPolicy::Default, 1.0),
                (MissingPolicy::Error, 1.0),
                (MissingPolicy::Default, 2.5)
            ]
        );
        assert_eq!(b.features[1].feature(), "u:b");
        let e = ModelConfig::parse("[features.inputs.b]\nfeatures = [\"nocolon\"]", "t")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("'nocolon' must be written 'view:feature'"),
            "{e}"
        );
    }

    #[test]
    fn parses_full_config() {
        let cfg = ModelConfig::parse(
            r#"
            max_batch_size = 8
            [version_policy]
            specific = [1, 3]
            [dynamic_batching]
            max_queue_delay_us = 500
            max_queue_size = 4
            [instance_group]
            count = 2
            "#,
            "t",
        )
        .unwrap();
        assert_eq!(cfg.max_batch_size, Some(8));
        assert_eq!(cfg.dynamic_batching.max_queue_size, 4);
        assert_eq!(cfg.dynamic_batching.priority_levels, 1);
        assert_eq!(cfg.instance_group.count, 2);
        assert_eq!(cfg.version_policy.select(&[1, 2, 3]), vec![1, 3]);
    }

    #[test]
    fn version_policies() {
        assert_eq!(VersionPolicy::default().select(&[1, 2, 5]), vec![5]);
        assert_eq!(VersionPolicy::Latest(2).select(&[1, 2, 5]), vec![2, 5]);
        assert_eq!(VersionPolicy::Latest(9).select(&[1]), vec![1]);
        assert_eq!(VersionPolicy::All(true).select(&[1, 2]), vec![1, 2]);
    }

    #[test]
    fn rejects_bad_configs_with_the_reason() {
        let e = |s| {
            ModelConfig::parse(s, "m/config.toml")
                .unwrap_err()
                .to_string()
        };
        assert!(e("max_batch = 3").contains("unknown field `max_batch`"));
        assert!(e("backend = \"tensorrt\"").contains("not supported"));
        assert!(e("[dynamic_batching]\nmax_queue_size = 0").contains("max_queue_size"));
        assert!(e("[instance_group]\ncount = 0").contains("instance_group.count"));
        assert!(e("default_model_filename = \"../x\"").contains("plain file name"));
        assert!(e("[version_policy]\nlatest = 0").contains("latest"));
    }
}
