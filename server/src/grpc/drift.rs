//! `inferd.v1.Drift`: drift monitors over gRPC — the same operations as REST `/api/drift`.

use std::sync::Arc;

use drift::Monitors;
use drift::evaluate::Report;
use tonic::{Request, Response, Status};

use crate::auth::{self, Kind};
use crate::error::ApiError;
use crate::proto::inferd as pb;
use pb::drift_server::Drift;

pub use pb::drift_server::DriftServer;

pub struct DriftService {
    monitors: Arc<Monitors>,
}

impl DriftService {
    pub fn server(monitors: Arc<Monitors>, max_request_bytes: usize) -> DriftServer<DriftService> {
        DriftServer::new(DriftService { monitors }).max_decoding_message_size(max_request_bytes)
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Monitors) -> drift::Result<T> + Send + 'static,
    ) -> Result<T, Status> {
        let m = Arc::clone(&self.monitors);
        tokio::task::spawn_blocking(move || f(&m))
            .await
            .map_err(|e| Status::unavailable(format!("the request was interrupted: {e}")))?
            .map_err(|e| ApiError::from(e).into())
    }
}

type Reply<T> = Result<Response<T>, Status>;

fn report(r: &Report) -> pb::WindowReport {
    pb::WindowReport {
        window: r.window,
        rows: r.rows as u64,
        start_ms: r.start_ms,
        end_ms: r.end_ms,
        columns: r
            .columns
            .iter()
            .map(|c| pb::ColumnResult {
                name: c.name.clone(),
                kind: c.kind.clone(),
                test: c.test.name().into(),
                statistic: c.statistic,
                p_value: c.p_value,
                threshold: c.threshold,
                drifted: c.drifted,
            })
            .collect(),
        embeddings: r
            .embeddings
            .iter()
            .map(|e| pb::EmbeddingResult {
                name: e.name.clone(),
                method: serde_json::to_value(e.method)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default(),
                statistic: e.statistic,
                p_value: e.p_value,
                threshold: e.threshold,
                drifted: e.drifted,
            })
            .collect(),
        columns_drifted: r.dataset.drifted as u64,
        drift_share: r.dataset.share,
        dataset_drift: r.dataset.detected,
        drift_detected: r.drift_detected,
    }
}

#[tonic::async_trait]
impl Drift for DriftService {
    async fn put_monitor(
        &self,
        r: Request<pb::PutMonitorRequest>,
    ) -> Reply<pb::PutMonitorResponse> {
        auth::grpc_reach(r.extensions(), Kind::Model, &r.get_ref().model)?;
        let r = r.into_inner();
        let created = self
            .blocking(move |m| m.put_json(&r.model, r.spec_json.as_bytes()))
            .await?;
        Ok(Response::new(pb::PutMonitorResponse { created }))
    }

    async fn put_reference(
        &self,
        r: Request<pb::PutReferenceRequest>,
    ) -> Reply<pb::PutReferenceResponse> {
        auth::grpc_reach(r.extensions(), Kind::Model, &r.get_ref().model)?;
        let r = r.into_inner();
        let csv = match r.content_type.as_str() {
            "" | "application/json" => false,
            "text/csv" => true,
            other => {
                return Err(Status::invalid_argument(format!(
                    "content_type '{other}': give \"text/csv\" or \"application/json\""
                )));
            }
        };
        let p = self
            .blocking(move |m| m.upload_reference(&r.model, &r.data, csv))
            .await?;
        Ok(Response::new(pb::PutReferenceResponse {
            rows: p.rows as u64,
            columns: p.columns.into_keys().collect(),
            embeddings: p.embeddings.into_keys().collect(),
        }))
    }

    async fn get_drift(&self, r: Request<pb::GetDriftRequest>) -> Reply<pb::DriftStatus> {
        auth::grpc_reach(r.extensions(), Kind::Model, &r.get_ref().model)?;
        let r = r.into_inner();
        let last = if r.windows == 0 {
            usize::MAX
        } else {
            r.windows as usize
        };
        let s = self
            .blocking(move |m| {
                m.status(&r.model, last)
                    .ok_or(drift::Error::NotFound(r.model))
            })
            .await?;
        Ok(Response::new(pb::DriftStatus {
            model: s.model.clone(),
            windows: s.windows,
            drift_detected: s.drift_detected,
            reports: s.reports.iter().map(report).collect(),
            performance: s
                .performance
                .iter()
                .map(|p| pb::VersionPerformance {
                    version: p.version.clone(),
                    predicted_rows: p.predicted_rows,
                    labelled_rows: p.labelled_rows,
                    metrics: p
                        .metrics()
                        .into_iter()
                        .map(|(k, v)| (k.to_owned(), v))
                        .collect(),
                })
                .collect(),
            status_json: serde_json::to_string(&s).unwrap_or_default(),
        }))
    }

    async fn delete_monitor(
        &self,
        r: Request<pb::DeleteMonitorRequest>,
    ) -> Reply<pb::DeleteMonitorResponse> {
        auth::grpc_reach(r.extensions(), Kind::Model, &r.get_ref().model)?;
        let model = r.into_inner().model;
        let name = model.clone();
        match self.blocking(move |m| m.delete(&name)).await? {
            true => Ok(Response::new(pb::DeleteMonitorResponse {})),
            false => Err(ApiError::from(drift::Error::NotFound(model)).into()),
        }
    }
}
