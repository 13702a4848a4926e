//! Triton's views of a model: its `ModelConfig` and its `ModelStatistics`, built once as the
//! protobuf messages (what gRPC returns) and rendered as JSON for REST in the field names and
//! shapes Triton's HTTP endpoints use (what tritonclient and perf_analyzer parse).

use models::config::VersionPolicy;
use models::repository::ServedVersion;
use models::stats::StatValue;
use serde_json::{Value, json};

use crate::proto::inference as pb;

/// The model's configuration as Triton describes it, derived from the ONNX graph and
/// `config.toml`. With `max_batch_size > 0`, dims leave out the batch dimension.
pub fn model_config(v: &ServedVersion) -> pb::ModelConfig {
    let skip = usize::from(v.max_batch_size > 0);
    let dims = |shape: &[i64]| shape[skip.min(shape.len())..].to_vec();
    let settings = v.batch_settings();
    let policy = match &v.config.version_policy {
        VersionPolicy::Latest(n) => {
            pb::model_version_policy::PolicyChoice::Latest(pb::model_version_policy::Latest {
                num_versions: *n,
            })
        }
        VersionPolicy::All(_) => {
            pb::model_version_policy::PolicyChoice::All(pb::model_version_policy::All {})
        }
        VersionPolicy::Specific(vs) => {
            pb::model_version_policy::PolicyChoice::Specific(pb::model_version_policy::Specific {
                versions: vs.iter().map(|&x| x as i64).collect(),
            })
        }
    };
    pb::ModelConfig {
        name: v.model.clone(),
        platform: v.platform().into(),
        backend: v.backend().into(),
        version_policy: Some(pb::ModelVersionPolicy {
            policy_choice: Some(policy),
        }),
        max_batch_size: v.max_batch_size as i32,
        input: v
            .signature
            .inputs
            .iter()
            .map(|t| pb::ModelInput {
                name: t.name.clone(),
                data_type: t.datatype.config_code(),
                dims: dims(&t.shape),
                ..Default::default()
            })
            .collect(),
        output: v
            .signature
            .outputs
            .iter()
            .map(|t| pb::ModelOutput {
                name: t.name.clone(),
                data_type: t.datatype.config_code(),
                dims: dims(&t.shape),
                ..Default::default()
            })
            .collect(),
        instance_group: vec![pb::ModelInstanceGroup {
            name: format!("{}_0", v.model),
            count: v.instances as i32,
            gpus: Vec::new(),
            kind: pb::model_instance_group::Kind::Cpu as i32,
        }],
        default_model_filename: v
            .config
            .default_model_filename
            .clone()
            .unwrap_or_else(|| "model.onnx".into()),
        scheduling_choice: (v.max_batch_size > 0).then(|| {
            pb::model_config::SchedulingChoice::DynamicBatching(pb::ModelDynamicBatching {
                preferred_batch_size: Vec::new(),
                max_queue_delay_microseconds: settings.max_queue_delay.as_micros() as u64,
                preserve_ordering: false,
                priority_levels: u64::from(settings.priority_levels),
                default_priority_level: u64::from(settings.default_priority),
                default_queue_policy: Some(pb::ModelQueuePolicy {
                    timeout_action: pb::model_queue_policy::TimeoutAction::Reject as i32,
                    default_timeout_microseconds: settings
                        .default_timeout
                        .map_or(0, |d| d.as_micros() as u64),
                    allow_timeout_override: true,
                    max_queue_size: settings.max_queue_size as u32,
                }),
            })
        }),
        model_transaction_policy: Some(pb::ModelTransactionPolicy { decoupled: false }),
        response_cache: Some(pb::ModelResponseCache { enable: false }),
    }
}

fn config_type_name(code: i32) -> &'static str {
    models::DataType::ALL
        .into_iter()
        .find(|d| d.config_code() == code)
        .map_or("TYPE_INVALID", |d| d.config_name())
}

/// Triton's HTTP JSON rendering of a `ModelConfig`.
pub fn model_config_json(c: &pb::ModelConfig) -> Value {
    use pb::model_version_policy::PolicyChoice;
    let policy = match c
        .version_policy
        .as_ref()
        .and_then(|p| p.policy_choice.as_ref())
    {
        Some(PolicyChoice::Latest(l)) => json!({ "latest": { "num_versions": l.num_versions } }),
        Some(PolicyChoice::All(_)) => json!({ "all": {} }),
        Some(PolicyChoice::Specific(s)) => json!({ "specific": { "versions": s.versions } }),
        None => json!({}),
    };
    let mut out = json!({
        "name": c.name,
        "platform": c.platform,
        "backend": c.backend,
        "version_policy": policy,
        "max_batch_size": c.max_batch_size,
        "input": c.input.iter().map(|i| json!({
            "name": i.name,
            "data_type": config_type_name(i.data_type),
            "format": "FORMAT_NONE",
            "dims": i.dims,
            "is_shape_tensor": false,
            "allow_ragged_batch": false,
            "optional": false,
        })).collect::<Vec<_>>(),
        "output": c.output.iter().map(|o| json!({
            "name": o.name,
            "data_type": config_type_name(o.data_type),
            "dims": o.dims,
            "label_filename": "",
            "is_shape_tensor": false,
        })).collect::<Vec<_>>(),
        "instance_group": c.instance_group.iter().map(|g| json!({
            "name": g.name,
            "kind": "KIND_CPU",
            "count": g.count,
            "gpus": [],
        })).collect::<Vec<_>>(),
        "default_model_filename": c.default_model_filename,
        "model_transaction_policy": { "decoupled": false },
        "response_cache": { "enable": false },
    });
    if let Some(pb::model_config::SchedulingChoice::DynamicBatching(d)) = &c.scheduling_choice {
        let q = d.default_queue_policy.unwrap_or_default();
        out["dynamic_batching"] = json!({
            "preferred_batch_size": d.preferred_batch_size,
            "max_queue_delay_microseconds": d.max_queue_delay_microseconds,
            "preserve_ordering": d.preserve_ordering,
            "priority_levels": d.priority_levels,
            "default_priority_level": d.default_priority_level,
            "default_queue_policy": {
                "timeout_action": "REJECT",
                "default_timeout_microseconds": q.default_timeout_microseconds,
                "allow_timeout_override": q.allow_timeout_override,
                "max_queue_size": q.max_queue_size,
            },
        });
    }
    out
}

fn dur(s: StatValue) -> pb::StatisticDuration {
    pb::StatisticDuration {
        count: s.count,
        ns: s.ns,
    }
}

/// The version's statistics as Triton reports them.
pub fn model_statistics(v: &ServedVersion) -> pb::ModelStatistics {
    let s = v.stats.snapshot();
    pb::ModelStatistics {
        name: v.model.clone(),
        version: v.version_label.clone(),
        last_inference: s.last_inference_ms,
        inference_count: s.inference_count,
        execution_count: s.execution_count,
        inference_stats: Some(pb::InferStatistics {
            success: Some(dur(s.success)),
            fail: Some(dur(s.fail)),
            queue: Some(dur(s.queue)),
            compute_input: Some(dur(s.compute_input)),
            compute_infer: Some(dur(s.compute_infer)),
            compute_output: Some(dur(s.compute_output)),
            cache_hit: Some(pb::StatisticDuration::default()),
            cache_miss: Some(pb::StatisticDuration::default()),
        }),
        batch_stats: s
            .batches
            .iter()
            .map(|(size, b)| pb::InferBatchStatistics {
                batch_size: *size,
                compute_input: Some(dur(b.compute_input)),
                compute_infer: Some(dur(b.compute_infer)),
                compute_output: Some(dur(b.compute_output)),
            })
            .collect(),
    }
}

fn dur_json(d: &Option<pb::StatisticDuration>) -> Value {
    let d = d.unwrap_or_default();
    json!({ "count": d.count, "ns": d.ns })
}

/// Triton's HTTP JSON rendering of `ModelStatistics`.
pub fn model_statistics_json(s: &pb::ModelStatistics) -> Value {
    let i = s.inference_stats.unwrap_or_default();
    json!({
        "name": s.name,
        "version": s.version,
        "last_inference": s.last_inference,
        "inference_count": s.inference_count,
        "execution_count": s.execution_count,
        "inference_stats": {
            "success": dur_json(&i.success),
            "fail": dur_json(&i.fail),
            "queue": dur_json(&i.queue),
            "compute_input": dur_json(&i.compute_input),
            "compute_infer": dur_json(&i.compute_infer),
            "compute_output": dur_json(&i.compute_output),
            "cache_hit": dur_json(&i.cache_hit),
            "cache_miss": dur_json(&i.cache_miss),
        },
        "batch_stats": s.batch_stats.iter().map(|b| json!({
            "batch_size": b.batch_size,
            "compute_input": dur_json(&b.compute_input),
            "compute_infer": dur_json(&b.compute_infer),
            "compute_output": dur_json(&b.compute_output),
        })).collect::<Vec<_>>(),
        "memory_usage": [],
    })
}
