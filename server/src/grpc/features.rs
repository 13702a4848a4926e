//! `inferd.v1.FeatureStore`: the online feature store over gRPC (`proto/features.proto`), the
//! same operations as REST `/api/feature-views` and `/api/features`.

use std::sync::Arc;

use feature_store::FeatureStore as Features;
use feature_store::serving::OnlineRequest;
use feature_store::value::{Value, ValueType};
use feature_store::view::{
    FeatureSpec, FeatureView, FeatureViewSpec, MessageFormat, SourceSpec, Ttl,
};
use serde_json::{Map, Value as Json};
use tonic::{Request, Response, Status};

use crate::auth::{self, Kind as ReachKind};
use crate::error::ApiError;
use crate::proto::inferd as pb;
use pb::feature_store_server::FeatureStore;
use pb::feature_value::Kind;

pub use pb::feature_store_server::FeatureStoreServer;

pub struct FeatureStoreService {
    fs: Arc<Features>,
}

impl FeatureStoreService {
    pub fn server(fs: Arc<Features>, max_request_bytes: usize) -> FeatureStoreServer<Self> {
        FeatureStoreServer::new(FeatureStoreService { fs })
            .max_decoding_message_size(max_request_bytes)
            .max_encoding_message_size(usize::MAX)
    }
}

type Reply<T> = Result<Response<T>, Status>;

fn api(e: impl Into<ApiError>) -> Status {
    e.into().into()
}

fn bad(msg: String) -> Status {
    api(ApiError::BadRequest(msg))
}

/// A protobuf value as JSON (what rows and entity keys are decoded from).
fn to_json(v: &pb::FeatureValue) -> Json {
    match &v.kind {
        None => Json::Null,
        Some(Kind::BoolVal(b)) => (*b).into(),
        Some(Kind::Int32Val(i)) => (*i).into(),
        Some(Kind::Int64Val(i)) => (*i).into(),
        Some(Kind::FloatVal(f)) => f64::from(*f).into(),
        Some(Kind::DoubleVal(f)) => (*f).into(),
        Some(Kind::StringVal(s)) => s.as_str().into(),
        Some(Kind::Int64ListVal(l)) => l.values.clone().into(),
        Some(Kind::FloatListVal(l)) => l.values.iter().map(|f| Json::from(f64::from(*f))).collect(),
        Some(Kind::DoubleListVal(l)) => l.values.clone().into(),
    }
}

fn from_value(v: Value) -> pb::FeatureValue {
    pb::FeatureValue {
        kind: match v {
            Value::Null => None,
            Value::Bool(b) => Some(Kind::BoolVal(b)),
            Value::Int32(i) => Some(Kind::Int32Val(i)),
            Value::Int64(i) => Some(Kind::Int64Val(i)),
            Value::Float32(f) => Some(Kind::FloatVal(f)),
            Value::Float64(f) => Some(Kind::DoubleVal(f)),
            Value::String(s) => Some(Kind::StringVal(s)),
            Value::Int64List(values) => Some(Kind::Int64ListVal(pb::FeatureInt64List { values })),
            Value::Float32List(values) => Some(Kind::FloatListVal(pb::FeatureFloatList { values })),
            Value::Float64List(values) => {
                Some(Kind::DoubleListVal(pb::FeatureDoubleList { values }))
            }
        },
    }
}

fn view_to_pb(v: &FeatureView) -> pb::FeatureView {
    let s = &v.spec;
    pb::FeatureView {
        name: v.name.clone(),
        entities: s.entities.clone(),
        features: s
            .features
            .iter()
            .map(|f| pb::FeatureSpecification {
                name: f.name.clone(),
                r#type: f.ty.as_str().into(),
            })
            .collect(),
        ttl: match &s.ttl {
            None => String::new(),
            Some(Ttl::Seconds(n)) => format!("{n}s"),
            Some(Ttl::Text(t)) => t.clone(),
        },
        source: s.source.as_ref().map(|src| pb::FeatureSource {
            topic: src.topic.clone(),
            format: "json".into(),
            timestamp_field: src.timestamp_field.clone(),
            dlq_topic: src.dlq_topic.clone().unwrap_or_default(),
        }),
        description: s.description.clone(),
    }
}

fn spec_from_pb(v: pb::FeatureView) -> Result<FeatureViewSpec, Status> {
    let features = v
        .features
        .into_iter()
        .map(|f| {
            let ty = ValueType::parse(&f.r#type).ok_or_else(|| {
                bad(format!(
                    "feature '{}': unknown type '{}' (bool, int32, int64, float32, float64, string, \
                     int64_list, float32_list, float64_list)",
                    f.name, f.r#type
                ))
            })?;
            Ok(FeatureSpec { name: f.name, ty })
        })
        .collect::<Result<_, Status>>()?;
    let source = v
        .source
        .map(|s| {
            if !(s.format.is_empty() || s.format == "json") {
                return Err(bad(format!(
                    "source.format '{}' is not supported (json)",
                    s.format
                )));
            }
            Ok(SourceSpec {
                topic: s.topic,
                format: MessageFormat::Json,
                timestamp_field: if s.timestamp_field.is_empty() {
                    feature_store::view::DEFAULT_TIMESTAMP_FIELD.into()
                } else {
                    s.timestamp_field
                },
                dlq_topic: Some(s.dlq_topic).filter(|d| !d.is_empty()),
            })
        })
        .transpose()?;
    Ok(FeatureViewSpec {
        entities: v.entities,
        features,
        ttl: Some(v.ttl).filter(|t| !t.is_empty()).map(Ttl::Text),
        source,
        description: v.description,
    })
}

#[tonic::async_trait]
impl FeatureStore for FeatureStoreService {
    async fn get_online_features(
        &self,
        req: Request<pb::GetOnlineFeaturesRequest>,
    ) -> Reply<pb::GetOnlineFeaturesResponse> {
        for f in &req.get_ref().features {
            let (view, _) = feature_store::serving::parse_ref(f).map_err(api)?;
            auth::grpc_reach(req.extensions(), ReachKind::FeatureView, view)?;
        }
        let r = req.into_inner();
        let mut entities: Vec<(String, Vec<Json>)> = r
            .entities
            .into_iter()
            .map(|(k, v)| (k, v.values.iter().map(to_json).collect()))
            .collect();
        entities.sort_by(|a, b| a.0.cmp(&b.0));
        let resp = self
            .fs
            .get_online_features(&OnlineRequest {
                features: r.features,
                entities,
                full_feature_names: r.full_feature_names,
            })
            .await
            .map_err(api)?;
        Ok(Response::new(pb::GetOnlineFeaturesResponse {
            feature_names: resp.feature_names,
            results: resp
                .results
                .into_iter()
                .map(|c| pb::FeatureColumn {
                    statuses: c.statuses.iter().map(|s| *s as i32).collect(),
                    event_timestamps_us: c
                        .event_timestamps
                        .iter()
                        .map(|t| t.unwrap_or(0))
                        .collect(),
                    values: c.values.into_iter().map(from_value).collect(),
                })
                .collect(),
        }))
    }

    async fn push_features(
        &self,
        req: Request<pb::PushFeaturesRequest>,
    ) -> Reply<pb::PushFeaturesResponse> {
        auth::grpc_reach(
            req.extensions(),
            ReachKind::FeatureView,
            &req.get_ref().feature_view,
        )?;
        let r = req.into_inner();
        let rows: Vec<Map<String, Json>> = r
            .rows
            .iter()
            .map(|row| {
                row.fields
                    .iter()
                    .map(|(k, v)| (k.clone(), to_json(v)))
                    .collect()
            })
            .collect();
        let s = self.fs.push(&r.feature_view, &rows).await.map_err(api)?;
        Ok(Response::new(pb::PushFeaturesResponse {
            written: s.written as u64,
            stale: s.stale as u64,
        }))
    }

    async fn put_feature_view(
        &self,
        req: Request<pb::PutFeatureViewRequest>,
    ) -> Reply<pb::FeatureView> {
        let (_, ext, r) = req.into_parts();
        let v = r.view.ok_or_else(|| bad("'view' is required".into()))?;
        auth::grpc_reach(&ext, ReachKind::FeatureView, &v.name)?;
        let name = v.name.clone();
        let spec = spec_from_pb(v)?;
        let fs = Arc::clone(&self.fs);
        let (view, _) = tokio::task::spawn_blocking(move || fs.put_view(&name, spec))
            .await
            .map_err(|e| Status::unavailable(format!("the request was interrupted: {e}")))?
            .map_err(api)?;
        Ok(Response::new(view_to_pb(&view)))
    }

    async fn get_feature_view(
        &self,
        req: Request<pb::GetFeatureViewRequest>,
    ) -> Reply<pb::FeatureView> {
        auth::grpc_reach(
            req.extensions(),
            ReachKind::FeatureView,
            &req.get_ref().name,
        )?;
        let views = self.fs.views().snapshot();
        let v = views.require(&req.get_ref().name).map_err(api)?;
        Ok(Response::new(view_to_pb(v)))
    }

    async fn list_feature_views(
        &self,
        req: Request<pb::ListFeatureViewsRequest>,
    ) -> Reply<pb::ListFeatureViewsResponse> {
        let views = self.fs.views().snapshot();
        Ok(Response::new(pb::ListFeatureViewsResponse {
            views: views
                .iter()
                .filter(|v| auth::grpc_visible(req.extensions(), ReachKind::FeatureView, &v.name))
                .map(|v| view_to_pb(v))
                .collect(),
        }))
    }

    async fn delete_feature_view(
        &self,
        req: Request<pb::DeleteFeatureViewRequest>,
    ) -> Reply<pb::DeleteFeatureViewResponse> {
        auth::grpc_reach(
            req.extensions(),
            ReachKind::FeatureView,
            &req.get_ref().name,
        )?;
        let name = req.into_inner().name;
        let fs = Arc::clone(&self.fs);
        tokio::task::spawn_blocking(move || fs.delete_view(&name))
            .await
            .map_err(|e| Status::unavailable(format!("the request was interrupted: {e}")))?
            .map_err(api)?;
        Ok(Response::new(pb::DeleteFeatureViewResponse {}))
    }
}
