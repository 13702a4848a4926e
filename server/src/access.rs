//! The access log (`--access-log`): one line per request, at target `access` (so
//! `INFERD_LOG=info,access=off` silences it and `--log-format json` makes each line an
//! object): transport, method, route, status, latency, principal, request id and, for an
//! inference, the model, version, experiment arm and batch rows it ran with.
//!
//! The outermost layer of each transport puts a [`Slot`] into the request's extensions; the
//! access layer (principal) and the inference handlers (what served) write into it as the
//! request passes, and the line is written when the response leaves.

use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;

use crate::infer::InferResponse;

#[derive(Default)]
struct Record {
    principal: Option<String>,
    model: Option<String>,
    version: Option<String>,
    id: Option<String>,
    arm: Option<String>,
    batch_rows: Option<usize>,
}

/// A request's notes for its access-log line; present only while the access log is on.
#[derive(Clone, Default)]
pub struct Slot(Arc<Mutex<Record>>);

impl Slot {
    fn with(&self, f: impl FnOnce(&mut Record)) {
        f(&mut self.0.lock().unwrap_or_else(|p| p.into_inner()));
    }

    /// The authenticated principal (the access layer's).
    pub fn principal(slot: Option<&Slot>, name: &str) {
        if let Some(s) = slot {
            s.with(|r| r.principal = Some(name.to_owned()));
        }
    }

    /// What served an inference.
    pub fn served(slot: Option<&Slot>, resp: &InferResponse) {
        if let Some(s) = slot {
            s.with(|r| {
                r.model = Some(resp.model_name.clone());
                r.version = Some(resp.model_version.clone());
                r.id = resp.id.clone();
                r.arm = resp.experiment.as_ref().map(|(_, arm)| arm.clone());
                r.batch_rows = Some(resp.batch_rows);
            });
        }
    }

    fn write(&self, line: Line<'_>) {
        self.with(|r| {
            let request_id = r.id.as_deref().or(line.request_id).unwrap_or("");
            tracing::info!(
                target: "access",
                transport = line.transport,
                method = line.method,
                route = line.route,
                status = line.status,
                latency_ms = line.started.elapsed().as_secs_f64() * 1e3,
                principal = r.principal.as_deref().unwrap_or(""),
                request_id,
                model = r.model.as_deref().unwrap_or(""),
                version = r.version.as_deref().unwrap_or(""),
                arm = r.arm.as_deref().unwrap_or(""),
                batch_rows = r.batch_rows.unwrap_or(0),
            );
        });
    }
}

struct Line<'a> {
    transport: &'static str,
    method: &'a str,
    route: &'a str,
    status: &'a str,
    request_id: Option<&'a str>,
    started: Instant,
}

/// A client's request id, when it sends one (the V2 body's `id` wins for inferences).
fn request_id(headers: &http::HeaderMap) -> Option<String> {
    headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// The REST transport's access layer (`Router::layer`, outside the access control).
pub async fn http_layer(mut req: Request, next: Next) -> Response {
    let started = Instant::now();
    let slot = Slot::default();
    req.extensions_mut().insert(slot.clone());
    let method = req.method().clone();
    // The route template, not the path: no caller-chosen text in the log but the id.
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "(unrouted)".to_owned(), |m| m.as_str().to_owned());
    let id = request_id(req.headers());
    let resp = next.run(req).await;
    slot.write(Line {
        transport: "http",
        method: method.as_str(),
        route: &route,
        status: resp.status().as_str(),
        request_id: id.as_deref(),
        started,
    });
    resp
}

/// The gRPC transport's access layer (`Server::builder().layer(..)`, before the access
/// control). The status is the call's when it failed before its response started (a
/// trailers-only answer); a streamed reply's final status comes later, in its trailers.
/// Off, it passes calls through untouched.
#[derive(Clone)]
pub struct GrpcAccessLayer {
    pub enabled: bool,
}

impl<S> tower::Layer<S> for GrpcAccessLayer {
    type Service = GrpcAccess<S>;

    fn layer(&self, inner: S) -> GrpcAccess<S> {
        GrpcAccess {
            inner,
            enabled: self.enabled,
        }
    }
}

#[derive(Clone)]
pub struct GrpcAccess<S> {
    inner: S,
    enabled: bool,
}

impl<S, B, RB> tower::Service<http::Request<B>> for GrpcAccess<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    RB: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = futures::future::Either<
        S::Future,
        futures::future::BoxFuture<'static, Result<S::Response, S::Error>>,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        if !self.enabled {
            return futures::future::Either::Left(self.inner.call(req));
        }
        let started = Instant::now();
        let slot = Slot::default();
        req.extensions_mut().insert(slot.clone());
        let method = req.uri().path().to_owned();
        let id = request_id(req.headers());
        let fut = self.inner.call(req);
        futures::future::Either::Right(Box::pin(async move {
            let resp = fut.await;
            if let Ok(r) = &resp {
                let status = r
                    .headers()
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("0");
                slot.write(Line {
                    transport: "grpc",
                    method: "POST",
                    route: &method,
                    status,
                    request_id: id.as_deref(),
                    started,
                });
            }
            resp
        }))
    }
}
