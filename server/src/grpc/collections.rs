//! `inferd.v1.Collections`: vector search over gRPC (`proto/vector.proto`), the same operations
//! as REST `/api/collections`. Payloads and filters travel as JSON text.

use std::sync::Arc;

use tonic::{Request, Response, Status};
use vector::{
    CollectionInfo, CreateCollection, Filter, Metric, PointId, PointInput, ScoredPoint, Store,
};

use crate::auth::{self, Kind};
use crate::error::ApiError;
use crate::proto::inferd as pb;
use pb::collections_server::Collections;

pub use pb::collections_server::CollectionsServer;

pub struct CollectionsService {
    store: Arc<Store>,
}

impl CollectionsService {
    pub fn server(store: Arc<Store>, max_request_bytes: usize) -> CollectionsServer<Self> {
        CollectionsServer::new(CollectionsService { store })
            .max_decoding_message_size(max_request_bytes)
            .max_encoding_message_size(usize::MAX)
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Store) -> vector::Result<T> + Send + 'static,
    ) -> Result<T, Status> {
        let store = Arc::clone(&self.store);
        tokio::task::spawn_blocking(move || f(&store))
            .await
            .map_err(|e| Status::unavailable(format!("the request was interrupted: {e}")))?
            .map_err(|e| ApiError::from(e).into())
    }
}

type Reply<T> = Result<Response<T>, Status>;

fn bad(msg: String) -> Status {
    ApiError::BadRequest(msg).into()
}

fn id_from(id: Option<pb::PointId>, what: &str) -> Result<PointId, Status> {
    match id.and_then(|i| i.kind) {
        Some(pb::point_id::Kind::Num(n)) => Ok(PointId::Num(n)),
        Some(pb::point_id::Kind::Str(s)) => Ok(PointId::Str(s)),
        None => Err(bad(format!("{what}: id is required"))),
    }
}

fn id_to(id: &PointId) -> pb::PointId {
    pb::PointId {
        kind: Some(match id {
            PointId::Num(n) => pb::point_id::Kind::Num(*n),
            PointId::Str(s) => pb::point_id::Kind::Str(s.clone()),
        }),
    }
}

fn json_opt(text: &str, what: &str) -> Result<Option<serde_json::Value>, Status> {
    if text.is_empty() {
        return Ok(None);
    }
    serde_json::from_str(text)
        .map(Some)
        .map_err(|e| bad(format!("{what} is not valid JSON: {e}")))
}

fn json_text(v: Option<&serde_json::Value>) -> String {
    v.map(|v| v.to_string()).unwrap_or_default()
}

fn info(i: CollectionInfo) -> pb::CollectionInfo {
    let n = |x: usize| u32::try_from(x).unwrap_or(u32::MAX);
    pb::CollectionInfo {
        name: i.name,
        dim: n(i.params.dim),
        metric: i.params.metric.as_str().into(),
        m: n(i.params.m),
        ef_construction: n(i.params.ef_construction),
        ef: n(i.params.ef),
        embedding_model: i.params.embedding_model.unwrap_or_default(),
        points: i.points as u64,
        deleted: i.deleted as u64,
        indexed: i.indexed as u64,
        memory_bytes: i.memory_bytes,
        rebuilding: i.rebuilding,
        operation_id: i.operation_id,
    }
}

fn search_request(r: pb::SearchRequest) -> Result<vector::SearchRequest, Status> {
    let filter = match json_opt(&r.filter_json, "filter_json")? {
        Some(v) => Some(Filter::from_json(&v).map_err(ApiError::from)?),
        None => None,
    };
    Ok(vector::SearchRequest {
        vector: (!r.vector.is_empty()).then_some(r.vector),
        text: (!r.text.is_empty()).then_some(r.text),
        k: if r.k == 0 {
            vector::search::DEFAULT_K
        } else {
            r.k as usize
        },
        ef: r.ef.map(|e| e as usize),
        filter,
        with_payload: r.with_payload.unwrap_or(true),
        with_vector: r.with_vector,
        score_threshold: r.score_threshold,
        exact: r.exact,
    })
}

fn scored(points: Vec<ScoredPoint>) -> pb::SearchResponse {
    pb::SearchResponse {
        result: points
            .into_iter()
            .map(|p| pb::ScoredPoint {
                id: Some(id_to(&p.id)),
                score: p.score,
                payload_json: json_text(p.payload.as_ref()),
                vector: p.vector.unwrap_or_default(),
            })
            .collect(),
    }
}

fn update(r: vector::UpdateResult) -> pb::UpdateResult {
    pb::UpdateResult {
        operation_id: r.operation_id,
        status: r.status.into(),
    }
}

#[tonic::async_trait]
impl Collections for CollectionsService {
    async fn list_collections(
        &self,
        r: Request<pb::ListCollectionsRequest>,
    ) -> Reply<pb::ListCollectionsResponse> {
        let all = self.blocking(|s| Ok(s.list())).await?;
        Ok(Response::new(pb::ListCollectionsResponse {
            collections: all
                .into_iter()
                .filter(|c| auth::grpc_visible(r.extensions(), Kind::Collection, &c.name))
                .map(info)
                .collect(),
        }))
    }

    async fn create_collection(
        &self,
        r: Request<pb::CreateCollectionRequest>,
    ) -> Reply<pb::CollectionInfo> {
        auth::grpc_reach(r.extensions(), Kind::Collection, &r.get_ref().name)?;
        let r = r.into_inner();
        let metric = if r.metric.is_empty() {
            None
        } else {
            Some(Metric::parse(&r.metric).map_err(ApiError::from)?)
        };
        let req = CreateCollection {
            dim: r.dim as usize,
            metric,
            m: r.m.map(|x| x as usize),
            ef_construction: r.ef_construction.map(|x| x as usize),
            ef: r.ef.map(|x| x as usize),
            embedding_model: r.embedding_model,
        };
        let name = r.name;
        let i = self.blocking(move |s| s.create(&name, req)).await?;
        Ok(Response::new(info(i)))
    }

    async fn get_collection(
        &self,
        r: Request<pb::GetCollectionRequest>,
    ) -> Reply<pb::CollectionInfo> {
        auth::grpc_reach(r.extensions(), Kind::Collection, &r.get_ref().name)?;
        let name = r.into_inner().name;
        Ok(Response::new(info(
            self.blocking(move |s| s.info(&name)).await?,
        )))
    }

    async fn delete_collection(
        &self,
        r: Request<pb::DeleteCollectionRequest>,
    ) -> Reply<pb::DeleteCollectionResponse> {
        auth::grpc_reach(r.extensions(), Kind::Collection, &r.get_ref().name)?;
        let name = r.into_inner().name;
        self.blocking(move |s| s.delete(&name)).await?;
        Ok(Response::new(pb::DeleteCollectionResponse {}))
    }

    async fn upsert(&self, r: Request<pb::UpsertRequest>) -> Reply<pb::UpdateResult> {
        auth::grpc_reach(r.extensions(), Kind::Collection, &r.get_ref().collection)?;
        let r = r.into_inner();
        let mut points = Vec::with_capacity(r.points.len());
        for (i, p) in r.points.into_iter().enumerate() {
            points.push(PointInput {
                id: id_from(p.id, &format!("points[{i}]"))?,
                vector: (!p.vector.is_empty()).then_some(p.vector),
                text: (!p.text.is_empty()).then_some(p.text),
                payload: json_opt(&p.payload_json, &format!("points[{i}].payload_json"))?,
            });
        }
        let c = r.collection;
        let res = self.blocking(move |s| s.upsert(&c, points)).await?;
        Ok(Response::new(update(res)))
    }

    async fn delete_points(&self, r: Request<pb::DeletePointsRequest>) -> Reply<pb::UpdateResult> {
        auth::grpc_reach(r.extensions(), Kind::Collection, &r.get_ref().collection)?;
        let r = r.into_inner();
        let ids = r
            .ids
            .into_iter()
            .enumerate()
            .map(|(i, id)| id_from(Some(id), &format!("ids[{i}]")))
            .collect::<Result<Vec<_>, _>>()?;
        let c = r.collection;
        let res = self.blocking(move |s| s.delete_points(&c, ids)).await?;
        Ok(Response::new(update(res)))
    }

    async fn get_point(&self, r: Request<pb::GetPointRequest>) -> Reply<pb::Record> {
        auth::grpc_reach(r.extensions(), Kind::Collection, &r.get_ref().collection)?;
        let r = r.into_inner();
        let id = id_from(r.id, "id")?;
        let (c, with_vector) = (r.collection, r.with_vector);
        let rec = self
            .blocking(move |s| s.get_point(&c, &id, with_vector))
            .await?;
        Ok(Response::new(pb::Record {
            id: Some(id_to(&rec.id)),
            vector: rec.vector.unwrap_or_default(),
            payload_json: json_text(rec.payload.as_ref()),
        }))
    }

    async fn search(&self, r: Request<pb::SearchRequest>) -> Reply<pb::SearchResponse> {
        auth::grpc_reach(r.extensions(), Kind::Collection, &r.get_ref().collection)?;
        let r = r.into_inner();
        let c = r.collection.clone();
        let req = search_request(r)?;
        let res = self.blocking(move |s| s.search(&c, req)).await?;
        Ok(Response::new(scored(res)))
    }

    async fn search_batch(
        &self,
        r: Request<pb::SearchBatchRequest>,
    ) -> Reply<pb::SearchBatchResponse> {
        auth::grpc_reach(r.extensions(), Kind::Collection, &r.get_ref().collection)?;
        let r = r.into_inner();
        let reqs = r
            .searches
            .into_iter()
            .map(search_request)
            .collect::<Result<Vec<_>, _>>()?;
        let c = r.collection;
        let res = self.blocking(move |s| s.search_batch(&c, reqs)).await?;
        Ok(Response::new(pb::SearchBatchResponse {
            results: res.into_iter().map(scored).collect(),
        }))
    }
}
