//! Every door against every scope: the route list comes from the server itself
//! (`GET /api/routes` — the REST paths its routers registered, the gRPC methods its protos
//! define), each path is probed with every method to find the ones served, and each served
//! route is called with no key and with an `infer`, a `write` and an `admin` key. The table
//! below says what each needs; a route the server serves that the table does not name fails
//! the test, so a new route cannot ship without a decision.

use bytes::{Buf, BufMut, Bytes};
use serde_json::{Value, json};
use tonic::Code;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

use crate::common::{self, Server};

const KEYS: [(&str, &str, &str); 3] = [
    ("reader", "walk-reader-secret", "infer"),
    ("pusher", "walk-pusher-secret", "write"),
    ("ops", "walk-ops-secret", "admin"),
];

/// What a REST route needs: `open`, `infer`, `write` or `admin`. `None`: not in the table.
fn rest_need(method: &str, path: &str) -> Option<&'static str> {
    Some(match (method, path) {
        ("GET", "/v2/health/live" | "/v2/health/ready") => "open",
        // Who may call, and the route list: admin, though they read.
        ("GET", "/api/keys" | "/api/routes") => "admin",
        (
            "GET",
            "/v2"
            | "/v2/models/stats"
            | "/v2/models/{m}"
            | "/v2/models/{m}/ready"
            | "/v2/models/{m}/config"
            | "/v2/models/{m}/stats"
            | "/v2/models/{m}/versions/{v}"
            | "/v2/models/{m}/versions/{v}/ready"
            | "/v2/models/{m}/versions/{v}/config"
            | "/v2/models/{m}/versions/{v}/stats"
            | "/api/models"
            | "/api/models/{name}"
            | "/api/models/{name}/versions/{v}"
            | "/api/experiments"
            | "/api/experiments/{name}"
            | "/api/drift"
            | "/api/drift/{model}"
            | "/api/drift/{model}/reference"
            | "/api/collections"
            | "/api/collections/{c}"
            | "/api/collections/{c}/points/{id}"
            | "/api/feature-views"
            | "/api/feature-views/{name}"
            | "/v1/models"
            | "/v1/models/{model}"
            | "/"
            | "/collections"
            | "/collections/{c}"
            | "/collections/{c}/exists"
            | "/collections/{c}/points/{id}",
        ) => "infer",
        (
            "POST",
            "/v2/models/{m}/infer"
            | "/v2/models/{m}/versions/{v}/infer"
            | "/v2/repository/index"
            | "/v1/embeddings"
            | "/api/collections/{c}/search"
            | "/api/collections/{c}/search/batch"
            | "/api/features/get-online-features"
            | "/collections/{c}/points"
            | "/collections/{c}/points/search"
            | "/collections/{c}/points/query"
            | "/collections/{c}/points/scroll"
            | "/collections/{c}/points/count",
        ) => "infer",
        ("PUT", "/api/collections/{c}/points" | "/collections/{c}/points")
        | (
            "POST",
            "/api/collections/{c}/points/delete"
            | "/api/features/push"
            | "/api/features/write-to-online-store"
            | "/api/feedback"
            | "/collections/{c}/points/delete",
        ) => "write",
        (
            "POST",
            "/v2/repository/models/{m}/load"
            | "/v2/repository/models/{m}/unload"
            | "/api/models/{name}/versions"
            | "/api/models/{name}/aliases/{alias}/rollback"
            | "/api/experiments/{name}/stop"
            | "/api/experiments/{name}/weights"
            | "/api/experiments/{name}/promote"
            | "/api/keys",
        ) => "admin",
        (
            "PUT",
            "/api/models/{name}/aliases/{alias}"
            | "/api/experiments/{name}"
            | "/api/drift/{model}"
            | "/api/drift/{model}/reference"
            | "/api/collections/{c}"
            | "/collections/{c}"
            | "/api/feature-views/{name}",
        ) => "admin",
        (
            "DELETE",
            "/api/models/{name}"
            | "/api/models/{name}/versions/{v}"
            | "/api/models/{name}/aliases/{alias}"
            | "/api/experiments/{name}"
            | "/api/drift/{model}"
            | "/api/drift/{model}/reference"
            | "/api/collections/{c}"
            | "/api/feature-views/{name}"
            | "/api/keys/{name}"
            | "/collections/{c}",
        ) => "admin",
        _ => return None,
    })
}

/// What a gRPC method needs. `None`: not in the table.
fn grpc_need(method: &str) -> Option<&'static str> {
    let (service, name) = method.strip_prefix('/')?.split_once('/')?;
    Some(match (service, name) {
        ("inference.GRPCInferenceService", "ServerLive" | "ServerReady") => "open",
        (
            "inference.GRPCInferenceService",
            "ServerMetadata" | "ModelReady" | "ModelMetadata" | "ModelConfig" | "ModelStatistics"
            | "ModelInfer" | "ModelStreamInfer" | "RepositoryIndex",
        ) => "infer",
        ("inference.GRPCInferenceService", "RepositoryModelLoad" | "RepositoryModelUnload") => {
            "admin"
        }
        ("inferd.v1.ModelRegistry", "ListModels" | "GetModel" | "GetVersion") => "infer",
        (
            "inferd.v1.ModelRegistry",
            "UploadVersion" | "DeleteVersion" | "SetAlias" | "DeleteAlias" | "RollbackAlias",
        ) => "admin",
        ("inferd.v1.Experiments", "ListExperiments" | "GetExperiment") => "infer",
        ("inferd.v1.Experiments", "SendFeedback") => "write",
        (
            "inferd.v1.Experiments",
            "PutExperiment" | "DeleteExperiment" | "StopExperiment" | "SetWeights" | "PromoteArm",
        ) => "admin",
        ("inferd.v1.Drift", "GetDrift") => "infer",
        ("inferd.v1.Drift", "PutMonitor" | "DeleteMonitor" | "PutReference") => "admin",
        (
            "inferd.v1.Collections",
            "ListCollections" | "GetCollection" | "GetPoint" | "Search" | "SearchBatch",
        ) => "infer",
        ("inferd.v1.Collections", "Upsert" | "DeletePoints") => "write",
        ("inferd.v1.Collections", "CreateCollection" | "DeleteCollection") => "admin",
        ("inferd.v1.FeatureStore", "GetOnlineFeatures" | "ListFeatureViews" | "GetFeatureView") => {
            "infer"
        }
        ("inferd.v1.FeatureStore", "PushFeatures") => "write",
        ("inferd.v1.FeatureStore", "PutFeatureView" | "DeleteFeatureView") => "admin",
        ("inferd.v1.Keys", "ListKeys" | "CreateKey" | "RevokeKey") => "admin",
        _ => return None,
    })
}

fn rank(scope: &str) -> u8 {
    match scope {
        "infer" => 1,
        "write" => 2,
        "admin" => 3,
        other => panic!("unknown scope {other}"),
    }
}

/// The outcome a caller holding `held` (None: no key) must see on a route needing `need`.
fn expected(need: &str, held: Option<&str>) -> &'static str {
    match (need, held) {
        ("open", _) => "allowed",
        (_, None) => "unauthenticated",
        (need, Some(h)) if rank(h) >= rank(need) => "allowed",
        _ => "forbidden",
    }
}

/// Messages as bytes, unparsed: every method can be called with an empty message.
#[derive(Clone, Default)]
struct Raw;

impl Codec for Raw {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = Raw;
    type Decoder = Raw;
    fn encoder(&mut self) -> Raw {
        Raw
    }
    fn decoder(&mut self) -> Raw {
        Raw
    }
}

impl Encoder for Raw {
    type Item = Bytes;
    type Error = tonic::Status;
    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for Raw {
    type Item = Bytes;
    type Error = tonic::Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, tonic::Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

async fn grpc_call(
    channel: tonic::transport::Channel,
    method: &str,
    client_streaming: bool,
    server_streaming: bool,
    key: Option<&str>,
) -> Code {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let path: tonic::codegen::http::uri::PathAndQuery = method.parse().unwrap();
    fn keyed<T>(msg: T, key: Option<&str>) -> tonic::Request<T> {
        let mut r = tonic::Request::new(msg);
        if let Some(k) = key {
            r.metadata_mut()
                .insert("authorization", format!("Bearer {k}").parse().unwrap());
        }
        r
    }
    let empty = Bytes::new();
    let result = match (client_streaming, server_streaming) {
        (false, false) => grpc.unary(keyed(empty, key), path, Raw).await.map(|_| ()),
        (true, false) => grpc
            .client_streaming(keyed(futures::stream::iter([empty]), key), path, Raw)
            .await
            .map(|_| ()),
        (false, true) => grpc
            .server_streaming(keyed(empty, key), path, Raw)
            .await
            .map(|_| ()),
        (true, true) => grpc
            .streaming(keyed(futures::stream::iter([empty]), key), path, Raw)
            .await
            .map(|_| ()),
    };
    match result {
        Ok(()) => Code::Ok,
        Err(s) => s.code(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_of_both_transports_answers_each_scope_as_its_table_says() {
    let dir = tempfile::tempdir().unwrap();
    let keys_file = dir.path().join("keys.json");
    let entries: Vec<Value> = KEYS
        .iter()
        .map(|(name, secret, scope)| common::key_entry(name, secret, scope))
        .collect();
    std::fs::write(&keys_file, json!({ "keys": entries }).to_string()).unwrap();
    let repo = common::repo(&[("mlp", None)]);
    let srv = Server::start(repo.path(), &["--api-keys", keys_file.to_str().unwrap()]).await;
    let admin = KEYS[2].1;
    let c = reqwest::Client::new();
    let routes: Value = c
        .get(srv.url("/api/routes"))
        .bearer_auth(admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let paths: Vec<&str> = routes["http"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    assert!(paths.len() >= 45, "too few routes listed: {paths:?}");

    let mut failures = Vec::new();
    let mut served = 0;
    // Names no fixture has: a handler that is reached answers 4xx, changing nothing real.
    let concrete = |template: &str| {
        template
            .split('/')
            .map(|seg| if seg.starts_with('{') { "walk-x" } else { seg })
            .collect::<Vec<_>>()
            .join("/")
    };
    let call = |method: reqwest::Method, path: String, key: Option<&str>| {
        let mut r = c.request(method.clone(), srv.url(&path));
        if let Some(k) = key {
            r = r.bearer_auth(k);
        }
        if method == reqwest::Method::POST || method == reqwest::Method::PUT {
            r = r.header("content-type", "application/json").body("{}");
        }
        async move { r.send().await.unwrap().status().as_u16() }
    };
    for template in &paths {
        let path = concrete(template);
        for method in ["GET", "POST", "PUT", "DELETE", "PATCH"] {
            let m: reqwest::Method = method.parse().unwrap();
            // Served? An admin key passes every check: only an absent method gives 405.
            let with_admin = call(m.clone(), path.clone(), Some(admin)).await;
            if with_admin == 405 {
                // Not served: no key learns even that (401 first).
                let anonymous = call(m.clone(), path.clone(), None).await;
                if anonymous != 401 && rest_need("GET", template) != Some("open") {
                    failures.push(format!(
                        "{method} {template} (not served): {anonymous} without a key, expected 401"
                    ));
                }
                continue;
            }
            served += 1;
            let Some(need) = rest_need(method, template) else {
                failures.push(format!(
                    "{method} {template} is served but not in the table: decide its scope"
                ));
                continue;
            };
            for held in [None, Some(0), Some(1), Some(2)] {
                let (key, scope) = match held {
                    None => (None, None),
                    Some(i) => (Some(KEYS[i].1), Some(KEYS[i].2)),
                };
                let code = if scope == Some("admin") {
                    with_admin
                } else {
                    call(m.clone(), path.clone(), key).await
                };
                let got = match code {
                    401 => "unauthenticated",
                    403 => "forbidden",
                    _ => "allowed",
                };
                let want = expected(need, scope);
                if got != want {
                    failures.push(format!(
                        "{method} {template} with {}: {code} ({got}), expected {want}",
                        scope.unwrap_or("no key")
                    ));
                }
            }
        }
    }
    assert!(served >= 60, "only {served} REST routes found served");

    let methods = routes["grpc"].as_array().unwrap();
    assert!(
        methods.len() >= 45,
        "too few gRPC methods listed: {}",
        methods.len()
    );
    let channel = tonic::transport::Channel::from_shared(srv.grpc_url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    for m in methods {
        let name = m["method"].as_str().unwrap();
        let (cs, ss) = (
            m["client_streaming"].as_bool().unwrap(),
            m["server_streaming"].as_bool().unwrap(),
        );
        let Some(need) = grpc_need(name) else {
            failures.push(format!(
                "gRPC {name} is served but not in the table: decide its scope"
            ));
            continue;
        };
        for held in [None, Some(0), Some(1), Some(2)] {
            let (key, scope) = match held {
                None => (None, None),
                Some(i) => (Some(KEYS[i].1), Some(KEYS[i].2)),
            };
            let code = grpc_call(channel.clone(), name, cs, ss, key).await;
            let got = match code {
                Code::Unauthenticated => "unauthenticated",
                Code::PermissionDenied => "forbidden",
                _ => "allowed",
            };
            let want = expected(need, scope);
            if got != want {
                failures.push(format!(
                    "gRPC {name} with {}: {code:?} ({got}), expected {want}",
                    scope.unwrap_or("no key")
                ));
            }
            // Reached with an admin key, every method is one the router knows.
            if scope == Some("admin") && code == Code::Unimplemented {
                failures.push(format!("gRPC {name} is defined but not served"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
    // The server served on through all of it.
    assert_eq!(
        c.get(srv.url("/v2/health/ready"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}
