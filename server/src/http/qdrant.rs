//! Qdrant's REST API over inferd's collections, so Qdrant's clients (and what is built on
//! them: LangChain's and LlamaIndex's Qdrant stores) work unchanged, pointed at inferd's HTTP
//! port. The subset a client of a single-vector collection uses:
//!
//! | method | path | |
//! |---|---|---|
//! | GET | `/` | the API level (Qdrant's clients check it) |
//! | GET | `/collections`, `/collections/{c}`, `/collections/{c}/exists` | list, info, existence |
//! | PUT, DELETE | `/collections/{c}` | create (`vectors: {size, distance}`, `hnsw_config`), drop |
//! | PUT | `/collections/{c}/points` | upsert (`points` list or `batch` columns) |
//! | POST | `/collections/{c}/points` | retrieve by ids |
//! | GET | `/collections/{c}/points/{id}` | one point |
//! | POST | `/collections/{c}/points/delete` | delete by ids, or by filter |
//! | POST | `/collections/{c}/points/scroll`, `.../count` | page through / count, filtered |
//! | POST | `/collections/{c}/points/search` | nearest to a vector (the pre-1.10 search) |
//! | POST | `/collections/{c}/points/query` | `query`: a vector, `{"nearest": vector}` (with `mmr`: maximal marginal relevance) or a point id |
//!
//! Answers are Qdrant's envelope (`{"result", "status": "ok", "time"}`), errors its
//! `{"status": {"error"}}`. Distances: `Cosine` and `Dot` (scores, higher is closer) and
//! `Euclid` (the distance, lower is closer), as Qdrant scores them. The one vector may also
//! be given under Qdrant's name for the default vector, `""` (`{"": ...}`, `using: ""`), as
//! LangChain's store does. Other named vectors, sparse vectors and the other query kinds
//! (recommend, fusion, ...) are refused with a message saying so. Fields Qdrant's clients
//! send that have no meaning here (shards, replication, optimizer settings, `wait`) are
//! accepted and ignored.

use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use vector::{CreateCollection, Metric, PointId, PointInput, SearchRequest, Store};

use crate::error::ApiError;
use crate::http::At;

/// The Qdrant API level answered at `GET /`: that of the client the tests run
/// (qdrant-client 1.20), which warns when a server's differs by more than one minor version.
pub const API_LEVEL: &str = "1.20.0";

#[derive(Clone)]
struct Ctx {
    store: Arc<Store>,
    limit: usize,
}

type St = State<Ctx>;

/// An [`ApiError`] in Qdrant's error shape.
pub struct QdrantError(ApiError);

impl<E: Into<ApiError>> From<E> for QdrantError {
    fn from(e: E) -> Self {
        QdrantError(e.into())
    }
}

impl IntoResponse for QdrantError {
    fn into_response(self) -> Response {
        let status = self.0.status();
        (
            status,
            Json(json!({ "status": { "error": self.0.to_string() }, "time": 0.0 })),
        )
            .into_response()
    }
}

type Answer = Result<Json<Value>, QdrantError>;

fn bad(msg: impl Into<String>) -> QdrantError {
    QdrantError(ApiError::BadRequest(msg.into()))
}

/// Qdrant's success envelope.
fn ok(result: Value, started: Instant) -> Answer {
    Ok(Json(
        json!({ "result": result, "status": "ok", "time": started.elapsed().as_secs_f64() }),
    ))
}

pub fn router(store: Arc<Store>, max_request_bytes: usize) -> axum::Router {
    axum::Router::new()
        .at("/", get(root))
        .at("/collections", get(list))
        .at(
            "/collections/{c}",
            get(info).put(create).delete(drop_collection),
        )
        .at("/collections/{c}/exists", get(exists))
        .at("/collections/{c}/points", put(upsert).post(retrieve))
        .at("/collections/{c}/points/{id}", get(point))
        .at("/collections/{c}/points/delete", post(delete))
        .at("/collections/{c}/points/search", post(search))
        .at("/collections/{c}/points/query", post(query))
        .at("/collections/{c}/points/scroll", post(scroll))
        .at("/collections/{c}/points/count", post(count))
        .with_state(Ctx {
            store,
            limit: max_request_bytes,
        })
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> vector::Result<T> + Send + 'static,
) -> Result<T, QdrantError> {
    Ok(tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::Unavailable(format!("the request was interrupted: {e}")))??)
}

async fn body<T: serde::de::DeserializeOwned>(ctx: &Ctx, b: Body) -> Result<T, QdrantError> {
    let bytes = super::v2::read_body(b, ctx.limit).await?;
    serde_json::from_slice(&bytes).map_err(|e| bad(format!("invalid JSON body: {e}")))
}

async fn root() -> Json<Value> {
    Json(json!({ "title": "inferd (Qdrant-compatible API)", "version": API_LEVEL }))
}

async fn list(State(ctx): St, ext: axum::http::Extensions) -> Answer {
    let t = Instant::now();
    let store = Arc::clone(&ctx.store);
    let all = blocking(move || Ok(store.list())).await?;
    let names: Vec<Value> = all
        .iter()
        .filter(|c| crate::auth::visible(&ext, crate::auth::Kind::Collection, &c.name))
        .map(|c| json!({ "name": c.name }))
        .collect();
    ok(json!({ "collections": names }), t)
}

fn distance(m: Metric) -> &'static str {
    match m {
        Metric::Cosine => "Cosine",
        Metric::L2 => "Euclid",
        Metric::Dot => "Dot",
    }
}

async fn info(State(ctx): St, Path(c): Path<String>) -> Answer {
    let t = Instant::now();
    let store = Arc::clone(&ctx.store);
    let i = blocking(move || store.info(&c)).await?;
    let p = &i.params;
    ok(
        json!({
            "status": if i.rebuilding { "yellow" } else { "green" },
            "optimizer_status": "ok",
            "points_count": i.points,
            "indexed_vectors_count": i.indexed,
            "segments_count": 1,
            "config": {
                "params": { "vectors": { "size": p.dim, "distance": distance(p.metric) } },
                "hnsw_config": { "m": p.m, "ef_construct": p.ef_construction, "full_scan_threshold": 0 },
                "optimizer_config": { "default_segment_number": 1, "flush_interval_sec": 1 },
                "wal_config": { "wal_capacity_mb": 0, "wal_segments_ahead": 0 },
            },
            "payload_schema": {},
        }),
        t,
    )
}

async fn exists(State(ctx): St, Path(c): Path<String>) -> Answer {
    let t = Instant::now();
    let store = Arc::clone(&ctx.store);
    let found = blocking(move || Ok(store.info(&c).is_ok())).await?;
    ok(json!({ "exists": found }), t)
}

#[derive(Deserialize)]
struct CreateBody {
    vectors: Value,
    #[serde(default)]
    hnsw_config: Option<HnswBody>,
}

#[derive(Deserialize)]
struct HnswBody {
    #[serde(default)]
    m: Option<usize>,
    #[serde(default)]
    ef_construct: Option<usize>,
}

async fn create(State(ctx): St, Path(c): Path<String>, b: Body) -> Answer {
    let t = Instant::now();
    let req: CreateBody = body(&ctx, b).await?;
    let vectors = unnamed(req.vectors);
    let v = vectors.as_object().ok_or_else(|| {
        bad("'vectors' must be {\"size\": N, \"distance\": \"Cosine\" | \"Dot\" | \"Euclid\"}")
    })?;
    let Some(size) = v.get("size").and_then(Value::as_u64) else {
        return Err(bad(
            "named vectors are not supported: give one unnamed vector, {\"vectors\": {\"size\": N, \"distance\": ...}}",
        ));
    };
    let metric = match v.get("distance").and_then(Value::as_str) {
        Some("Cosine") => Metric::Cosine,
        Some("Dot") => Metric::Dot,
        Some("Euclid") => Metric::L2,
        other => {
            return Err(bad(format!(
                "distance {other:?} is not supported: Cosine, Dot or Euclid"
            )));
        }
    };
    let hnsw = req.hnsw_config.or_else(|| {
        v.get("hnsw_config")
            .and_then(|h| serde_json::from_value(h.clone()).ok())
    });
    let spec = CreateCollection {
        dim: size as usize,
        metric: Some(metric),
        m: hnsw.as_ref().and_then(|h| h.m),
        ef_construction: hnsw.as_ref().and_then(|h| h.ef_construct),
        ef: None,
        embedding_model: None,
    };
    let store = Arc::clone(&ctx.store);
    blocking(move || store.create(&c, spec)).await?;
    ok(json!(true), t)
}

async fn drop_collection(State(ctx): St, Path(c): Path<String>) -> Answer {
    let t = Instant::now();
    let store = Arc::clone(&ctx.store);
    blocking(move || store.delete(&c)).await?;
    ok(json!(true), t)
}

/// Qdrant calls a collection's one unnamed vector `""` (the default vector), so a one-entry
/// map under that name is the unnamed form: LangChain's Qdrant store sends every vector, its
/// collection's config and its queries' `using` that way.
fn unnamed(v: Value) -> Value {
    match v {
        Value::Object(mut m) if m.len() == 1 && m.contains_key("") => {
            m.remove("").expect("checked")
        }
        other => other,
    }
}

/// One unnamed dense vector, as a point or a query carries it.
fn dense(v: Value, what: &str) -> Result<Vec<f32>, QdrantError> {
    let v = unnamed(v);
    if v.is_object() {
        return Err(bad(format!(
            "{what}: named or sparse vectors are not supported; give one list of numbers"
        )));
    }
    serde_json::from_value(v).map_err(|e| bad(format!("{what}: {e}")))
}

#[derive(Deserialize)]
struct UpsertBody {
    #[serde(default)]
    points: Option<Vec<PointBody>>,
    #[serde(default)]
    batch: Option<BatchBody>,
}

#[derive(Deserialize)]
struct PointBody {
    id: PointId,
    vector: Value,
    #[serde(default)]
    payload: Option<Value>,
}

#[derive(Deserialize)]
struct BatchBody {
    ids: Vec<PointId>,
    /// A list of vectors, or `{"": list}`.
    vectors: Value,
    #[serde(default)]
    payloads: Option<Vec<Option<Value>>>,
}

async fn upsert(State(ctx): St, Path(c): Path<String>, b: Body) -> Answer {
    let t = Instant::now();
    let req: UpsertBody = body(&ctx, b).await?;
    let points: Vec<PointInput> = match (req.points, req.batch) {
        (Some(points), None) => points
            .into_iter()
            .map(|p| {
                let v = dense(p.vector, &format!("point {}", p.id))?;
                Ok(PointInput::new(p.id, v, p.payload))
            })
            .collect::<Result<_, QdrantError>>()?,
        (None, Some(batch)) => {
            let vectors = match unnamed(batch.vectors) {
                Value::Array(v) => v,
                _ => {
                    return Err(bad(
                        "batch: 'vectors' must be a list of vectors (named vectors are not supported)",
                    ));
                }
            };
            if batch.ids.len() != vectors.len()
                || batch
                    .payloads
                    .as_ref()
                    .is_some_and(|p| p.len() != batch.ids.len())
            {
                return Err(bad(
                    "batch: ids, vectors and payloads must have the same length",
                ));
            }
            let mut payloads = batch.payloads.unwrap_or_default().into_iter();
            batch
                .ids
                .into_iter()
                .zip(vectors)
                .map(|(id, v)| {
                    let v = dense(v, &format!("point {id}"))?;
                    Ok(PointInput::new(id, v, payloads.next().flatten()))
                })
                .collect::<Result<_, QdrantError>>()?
        }
        _ => return Err(bad("give either 'points' or 'batch'")),
    };
    let store = Arc::clone(&ctx.store);
    let r = blocking(move || store.upsert(&c, points)).await?;
    ok(
        json!({ "operation_id": r.operation_id, "status": "completed" }),
        t,
    )
}

/// `with_payload`: true/false, or a list of the keys to keep (`{"include": [...]}` too).
#[derive(Deserialize, Default)]
#[serde(untagged)]
enum WithPayload {
    Flag(bool),
    Keys(Vec<String>),
    Include {
        include: Vec<String>,
    },
    #[default]
    Unset,
}

impl WithPayload {
    fn wanted(&self, default: bool) -> bool {
        match self {
            WithPayload::Flag(b) => *b,
            WithPayload::Unset => default,
            _ => true,
        }
    }

    fn trim(&self, payload: Option<Value>) -> Option<Value> {
        let keys = match self {
            WithPayload::Keys(k) | WithPayload::Include { include: k } => k,
            WithPayload::Flag(false) => return None,
            _ => return payload,
        };
        payload.map(|p| match p {
            Value::Object(m) => Value::Object(
                m.into_iter()
                    .filter(|(k, _)| keys.contains(k))
                    .collect::<Map<_, _>>(),
            ),
            other => other,
        })
    }
}

#[derive(Deserialize)]
struct RetrieveBody {
    ids: Vec<PointId>,
    #[serde(default)]
    with_payload: WithPayload,
    #[serde(default)]
    with_vector: bool,
}

fn record(id: &PointId, payload: Option<Value>, vector: Option<Vec<f32>>) -> Value {
    json!({ "id": id, "payload": payload, "vector": vector })
}

async fn retrieve(State(ctx): St, Path(c): Path<String>, b: Body) -> Answer {
    let t = Instant::now();
    let req: RetrieveBody = body(&ctx, b).await?;
    let store = Arc::clone(&ctx.store);
    let with_vector = req.with_vector;
    let ids = req.ids;
    let found = blocking(move || {
        store.info(&c)?;
        Ok(ids
            .iter()
            .filter_map(|id| store.get_point(&c, id, with_vector).ok())
            .collect::<Vec<_>>())
    })
    .await?;
    let records: Vec<Value> = found
        .into_iter()
        .map(|r| {
            let payload = req
                .with_payload
                .trim(r.payload)
                .filter(|_| req.with_payload.wanted(true));
            record(&r.id, payload, r.vector)
        })
        .collect();
    ok(json!(records), t)
}

async fn point(State(ctx): St, Path((c, id)): Path<(String, String)>) -> Answer {
    let t = Instant::now();
    let store = Arc::clone(&ctx.store);
    let r = blocking(move || store.get_point(&c, &PointId::from_path(&id), true)).await?;
    ok(record(&r.id, r.payload, r.vector), t)
}

#[derive(Deserialize)]
struct DeleteBody {
    #[serde(default)]
    points: Option<Vec<PointId>>,
    #[serde(default)]
    filter: Option<Value>,
}

async fn delete(State(ctx): St, Path(c): Path<String>, b: Body) -> Answer {
    let t = Instant::now();
    let req: DeleteBody = body(&ctx, b).await?;
    let filter = match (&req.points, req.filter) {
        (Some(_), None) => None,
        (None, Some(f)) => Some(filter(f)?),
        _ => return Err(bad("give either 'points': [ids] or a 'filter'")),
    };
    let store = Arc::clone(&ctx.store);
    let r = blocking(move || {
        let ids = match (req.points, filter) {
            (Some(ids), _) => ids,
            // The matching ids, then their delete: a point written between the two is kept.
            (None, f) => {
                let mut ids = Vec::new();
                let mut from = None;
                loop {
                    let (page, next) = store.scroll(
                        &c,
                        f.as_ref(),
                        from.as_ref(),
                        vector::collection::MAX_SCROLL,
                        false,
                        false,
                    )?;
                    ids.extend(page.into_iter().map(|r| r.id));
                    match next {
                        Some(n) => from = Some(n),
                        None => break,
                    }
                }
                ids
            }
        };
        store.delete_points(&c, ids)
    })
    .await?;
    ok(
        json!({ "operation_id": r.operation_id, "status": "completed" }),
        t,
    )
}

fn filter(v: Value) -> Result<vector::Filter, QdrantError> {
    serde_json::from_value(v).map_err(|e| bad(format!("filter: {e}")))
}

#[derive(Deserialize)]
struct ScrollBody {
    #[serde(default)]
    filter: Option<Value>,
    #[serde(default = "ten")]
    limit: usize,
    /// The id the page starts at (the previous page's `next_page_offset`).
    #[serde(default)]
    offset: Option<PointId>,
    #[serde(default)]
    with_payload: WithPayload,
    #[serde(default)]
    with_vector: bool,
}

async fn scroll(State(ctx): St, Path(c): Path<String>, b: Body) -> Answer {
    let t = Instant::now();
    let req: ScrollBody = body(&ctx, b).await?;
    let f = req.filter.map(filter).transpose()?;
    let store = Arc::clone(&ctx.store);
    let (limit, from, with_vector) = (req.limit, req.offset, req.with_vector);
    let with_payload = req.with_payload.wanted(true);
    let (page, next) = blocking(move || {
        store.scroll(
            &c,
            f.as_ref(),
            from.as_ref(),
            limit,
            with_payload,
            with_vector,
        )
    })
    .await?;
    let points: Vec<Value> = page
        .into_iter()
        .map(|r| record(&r.id, req.with_payload.trim(r.payload), r.vector))
        .collect();
    ok(json!({ "points": points, "next_page_offset": next }), t)
}

#[derive(Deserialize)]
struct CountBody {
    #[serde(default)]
    filter: Option<Value>,
}

async fn count(State(ctx): St, Path(c): Path<String>, b: Body) -> Answer {
    let t = Instant::now();
    let req: CountBody = body(&ctx, b).await?;
    let f = req.filter.map(filter).transpose()?;
    let store = Arc::clone(&ctx.store);
    let n = blocking(move || store.count(&c, f.as_ref())).await?;
    ok(json!({ "count": n }), t)
}

#[derive(Deserialize, Default)]
struct Params {
    #[serde(default)]
    hnsw_ef: Option<usize>,
    #[serde(default)]
    exact: bool,
}

/// What `points/search` and `points/query` share.
#[derive(Deserialize)]
struct Nearest {
    #[serde(default)]
    filter: Option<Value>,
    #[serde(default)]
    params: Option<Params>,
    #[serde(default)]
    score_threshold: Option<f32>,
    #[serde(default = "ten")]
    limit: usize,
    #[serde(default)]
    offset: usize,
    #[serde(default)]
    with_payload: WithPayload,
    #[serde(default)]
    with_vector: bool,
}

fn ten() -> usize {
    10
}

#[derive(Deserialize)]
struct SearchBody {
    vector: Value,
    #[serde(flatten)]
    nearest: Nearest,
}

#[derive(Deserialize)]
struct QueryBody {
    #[serde(default)]
    query: Option<Value>,
    #[serde(default)]
    prefetch: Option<Value>,
    #[serde(default)]
    using: Option<String>,
    #[serde(flatten)]
    nearest: Nearest,
}

/// Qdrant's maximal marginal relevance (`{"nearest": v, "mmr": {...}}`): the
/// `candidates_limit` nearest points (default: the limit) re-ranked so each next pick
/// maximises `λ·sim(q, p) − (1 − λ)·max sim(p, picked)`, λ = 1 − `diversity` (default 0.5),
/// the first pick being the nearest. Scores stay the query's, as Qdrant returns them.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Mmr {
    #[serde(default)]
    diversity: Option<f32>,
    #[serde(default)]
    candidates_limit: Option<usize>,
}

/// Runs a nearest-neighbour search; `exclude` leaves a point out (a query by point id).
async fn nearest(
    ctx: &Ctx,
    c: String,
    vector: Vec<f32>,
    n: Nearest,
    exclude: Option<PointId>,
    mmr: Option<Mmr>,
) -> Result<Vec<Value>, QdrantError> {
    let filter = n.filter.map(filter).transpose()?;
    let params = n.params.unwrap_or_default();
    let wanted = n.limit + n.offset;
    // (λ, candidates) of an MMR query.
    let mmr = match mmr {
        Some(m) => {
            let d = m.diversity.unwrap_or(0.5);
            if !(0.0..=1.0).contains(&d) {
                return Err(bad(format!("mmr.diversity {d} is out of range: 0 to 1")));
            }
            Some((1.0 - d, m.candidates_limit.unwrap_or(wanted)))
        }
        None => None,
    };
    let k = mmr.map_or(wanted, |(_, candidates)| candidates) + usize::from(exclude.is_some());
    let with_payload = n.with_payload.wanted(false);
    let req = SearchRequest {
        filter,
        ef: params.hnsw_ef,
        exact: params.exact,
        score_threshold: n.score_threshold,
        with_payload,
        with_vector: n.with_vector || mmr.is_some(),
        ..SearchRequest::vector(vector, k)
    };
    let store = Arc::clone(&ctx.store);
    let (hits, metric) = blocking(move || {
        // Only MMR compares candidates with each other, under the collection's metric.
        let metric = match mmr {
            Some(_) => Some(store.info(&c)?.params.metric),
            None => None,
        };
        Ok((store.search(&c, req)?, metric))
    })
    .await?;
    let mut hits: Vec<_> = hits
        .into_iter()
        .filter(|h| exclude.as_ref() != Some(&h.id))
        .collect();
    if let (Some((lambda, _)), Some(metric)) = (mmr, metric) {
        // A hit's score is its similarity to the query (Euclid: its distance, negated).
        let relevance: Vec<f32> = hits
            .iter()
            .map(|h| {
                if metric == Metric::L2 {
                    -h.score
                } else {
                    h.score
                }
            })
            .collect();
        let vectors: Vec<&[f32]> = hits
            .iter()
            .map(|h| h.vector.as_deref().unwrap_or_default())
            .collect();
        let order = mmr_order(&relevance, &vectors, metric, lambda, wanted);
        let mut taken: Vec<Option<_>> = hits.into_iter().map(Some).collect();
        hits = order.into_iter().filter_map(|i| taken[i].take()).collect();
    }
    Ok(hits
        .into_iter()
        .skip(n.offset)
        .take(n.limit)
        .map(|h| {
            json!({
                "id": h.id, "version": 0, "score": h.score,
                "payload": n.with_payload.trim(h.payload),
                "vector": if n.with_vector { h.vector } else { None },
            })
        })
        .collect())
}

/// Similarity of two stored vectors under a collection's metric, higher is closer (the
/// negated distance for Euclid; stored cosine vectors are unit length).
fn similarity(metric: Metric, a: &[f32], b: &[f32]) -> f32 {
    match metric {
        Metric::Dot | Metric::Cosine => vector::distance::dot(a, b),
        Metric::L2 => -vector::distance::l2sq(a, b).sqrt(),
    }
}

/// Maximal marginal relevance over `candidates`, given each one's `relevance` (similarity
/// to the query): indices of up to `limit` of them in pick order, the most relevant first,
/// then each maximising `lambda·relevance(c) − (1 − lambda)·max sim(c, picked)`.
fn mmr_order(
    relevance: &[f32],
    candidates: &[&[f32]],
    metric: Metric,
    lambda: f32,
    limit: usize,
) -> Vec<usize> {
    // The highest similarity of each candidate to any pick so far.
    let mut nearest_pick = vec![f32::NEG_INFINITY; candidates.len()];
    let mut left: Vec<usize> = (0..candidates.len()).collect();
    let mut order = Vec::with_capacity(limit.min(candidates.len()));
    while order.len() < limit && !left.is_empty() {
        let score = |i: usize| {
            if order.is_empty() {
                relevance[i]
            } else {
                lambda * relevance[i] - (1.0 - lambda) * nearest_pick[i]
            }
        };
        let (at, &best) = left
            .iter()
            .enumerate()
            .max_by(|(_, a), (_, b)| score(**a).total_cmp(&score(**b)).then(b.cmp(a)))
            .expect("candidates left");
        left.swap_remove(at);
        order.push(best);
        for &i in &left {
            nearest_pick[i] =
                nearest_pick[i].max(similarity(metric, candidates[i], candidates[best]));
        }
    }
    order
}

async fn search(State(ctx): St, Path(c): Path<String>, b: Body) -> Answer {
    let t = Instant::now();
    let req: SearchBody = body(&ctx, b).await?;
    let v = dense(req.vector, "vector")?;
    ok(
        json!(nearest(&ctx, c, v, req.nearest, None, None).await?),
        t,
    )
}

async fn query(State(ctx): St, Path(c): Path<String>, b: Body) -> Answer {
    let t = Instant::now();
    let req: QueryBody = body(&ctx, b).await?;
    if req.prefetch.is_some() || req.using.as_deref().is_some_and(|u| !u.is_empty()) {
        return Err(bad(
            "prefetch and named vectors ('using') are not supported: query the collection's one (unnamed, \"\") vector",
        ));
    }
    let q = req
        .query
        .ok_or_else(|| bad("give a 'query': a vector, {\"nearest\": vector} or a point id"))?;
    let mut mmr = None;
    let (vector, exclude) = match q {
        Value::Array(_) => (dense(q, "query")?, None),
        Value::Object(mut o)
            if o.contains_key("nearest") && o.keys().all(|k| k == "nearest" || k == "mmr") =>
        {
            if let Some(m) = o.remove("mmr").filter(|m| !m.is_null()) {
                mmr =
                    Some(serde_json::from_value::<Mmr>(m).map_err(|e| {
                        bad(format!("query.mmr: {e} (diversity, candidates_limit)"))
                    })?);
            }
            match o.remove("nearest").expect("checked") {
                id @ (Value::Number(_) | Value::String(_)) => by_id(&ctx, &c, id).await?,
                v => (dense(v, "query.nearest")?, None),
            }
        }
        id @ (Value::Number(_) | Value::String(_)) => by_id(&ctx, &c, id).await?,
        Value::Object(o) => {
            return Err(bad(format!(
                "query {:?} is not supported: a vector, {{\"nearest\": vector}} or a point id",
                o.keys().collect::<Vec<_>>()
            )));
        }
        _ => {
            return Err(bad(
                "query must be a vector, {\"nearest\": vector} or a point id",
            ));
        }
    };
    let points = nearest(&ctx, c, vector, req.nearest, exclude, mmr).await?;
    ok(json!({ "points": points }), t)
}

/// A query by an existing point: its vector, and the point itself left out of the answer.
async fn by_id(ctx: &Ctx, c: &str, id: Value) -> Result<(Vec<f32>, Option<PointId>), QdrantError> {
    let id: PointId = serde_json::from_value(id).map_err(|e| bad(format!("query: {e}")))?;
    let (store, c, key) = (Arc::clone(&ctx.store), c.to_owned(), id.clone());
    let r = blocking(move || store.get_point(&c, &key, true)).await?;
    let v = r
        .vector
        .ok_or_else(|| bad(format!("point {id} has no vector")))?;
    Ok((v, Some(id)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mmr_skips_a_near_duplicate_of_its_first_pick() {
        // Relevance as the search scores it: similarity to the query.
        let relevance = |m, q: &[f32], cands: &[&[f32]]| {
            cands
                .iter()
                .map(|c| similarity(m, q, c))
                .collect::<Vec<_>>()
        };
        // b is nearest to q (unit length), a nearly duplicates b, c is far from both.
        let q = [0.8, 0.6];
        let (a, b, c) = ([1.0, 0.0], [0.995, 0.0998], [0.0, 1.0]);
        let cands: [&[f32]; 3] = [&a, &b, &c];
        let rel = relevance(Metric::Cosine, &q, &cands);
        assert_eq!(mmr_order(&rel, &cands, Metric::Cosine, 0.5, 3), [1, 2, 0]);
        // λ = 1 is relevance alone: the plain ranking.
        assert_eq!(mmr_order(&rel, &cands, Metric::Cosine, 1.0, 3), [1, 0, 2]);
        assert_eq!(mmr_order(&rel, &cands, Metric::Cosine, 0.5, 2), [1, 2]);
        // Euclid: similarity is the negated distance. y is nearest to the query, x next to
        // it; with diversity weighing most (λ = 0.2) the far z comes second.
        let (x, y, z) = ([0.0, 0.0], [0.1, 0.0], [3.0, 0.0]);
        let near: [&[f32]; 3] = [&x, &y, &z];
        let rel = relevance(Metric::L2, &[0.06, 0.0], &near);
        assert_eq!(mmr_order(&rel, &near, Metric::L2, 0.2, 3), [1, 2, 0]);
        assert_eq!(mmr_order(&rel, &near, Metric::L2, 1.0, 3), [1, 0, 2]);
        assert!(mmr_order(&[], &[], Metric::Dot, 0.5, 3).is_empty());
    }
}
