//! API keys and scopes on both transports, against the real binary: every route but health
//! needs a key, its scope decides (401 without a valid key, with `WWW-Authenticate`; 403 with
//! one that lacks the scope), unknown paths authenticate before their 404, a refused upload
//! writes nothing, and keys rotate by editing the file, without a restart.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use server::proto::inferd::model_registry_client::ModelRegistryClient;
use server::proto::inferd::{DeleteAliasRequest, ListModelsRequest};
use server::proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
use server::proto::inference::{ServerLiveRequest, ServerMetadataRequest};
use sha2::{Digest, Sha256};
use tonic::Code;

use crate::common::{self, Server};

const READER: &str = "reader-secret-1";
const PUSHER: &str = "pusher-secret-1";
const OPS: &str = "ops-secret-1";

fn write_keys(path: &Path, keys: &[Value]) {
    // Written aside and renamed: the server never reads half a file.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, json!({ "keys": keys }).to_string()).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// A server with three keys (infer, write, admin), and its repository (kept as long as it).
async fn server(keys: &Path, data: &Path) -> (Server, tempfile::TempDir) {
    server_with(keys, data, &[]).await
}

async fn server_with(keys: &Path, data: &Path, extra: &[&str]) -> (Server, tempfile::TempDir) {
    write_keys(
        keys,
        &[
            common::key_entry("reader", READER, "infer"),
            common::key_entry("pusher", PUSHER, "write"),
            common::key_entry("ops", OPS, "admin"),
        ],
    );
    let repo = common::repo(&[("mlp", None)]);
    std::fs::create_dir_all(data).unwrap();
    let mut args = vec!["--api-keys", keys.to_str().unwrap()];
    args.extend_from_slice(extra);
    let srv = Server::start_with_data(repo.path(), data, &args).await;
    (srv, repo)
}

async fn status(
    c: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    key: Option<&str>,
) -> (u16, reqwest::header::HeaderMap, String) {
    let mut r = c.request(method, url);
    if let Some(k) = key {
        r = r.bearer_auth(k);
    }
    let resp = r.send().await.unwrap();
    let code = resp.status().as_u16();
    let headers = resp.headers().clone();
    (code, headers, resp.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_routes_need_a_key_with_their_scope() {
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.jsonl");
    let (srv, _repo) = server_with(
        &dir.path().join("keys.json"),
        &dir.path().join("data"),
        &["--audit-log", audit.to_str().unwrap()],
    )
    .await;
    let c = reqwest::Client::new();
    use reqwest::Method as M;
    let cases: &[(M, &str, Option<&str>, u16)] = &[
        // Health stays open; everything else asks.
        (M::GET, "/v2/health/ready", None, 200),
        (M::GET, "/v2/health/live", None, 200),
        (M::GET, "/v2", None, 401),
        (M::GET, "/v2/models/mlp", None, 401),
        (M::GET, "/v2/models/mlp", Some("not-a-key"), 401),
        (M::GET, "/v2/models/mlp", Some(READER), 200),
        (M::GET, "/api/models", Some(READER), 200),
        (M::GET, "/api/drift", Some(READER), 200),
        // Unknown paths: a key first, then the 404; no key learns nothing.
        (M::GET, "/no/such/path", None, 401),
        (M::GET, "/no/such/path", Some(READER), 404),
        (M::GET, "/v2/models/no-such-model", None, 401),
        // Management needs admin: a reader and a pusher get 403 (having sent no body).
        (M::DELETE, "/api/models/mlp", Some(READER), 403),
        (M::DELETE, "/api/models/mlp", Some(PUSHER), 403),
        (M::PUT, "/api/drift/mlp", Some(PUSHER), 403),
        (
            M::POST,
            "/v2/repository/models/mlp/unload",
            Some(READER),
            403,
        ),
        (M::DELETE, "/api/collections/docs", Some(PUSHER), 403),
        (M::DELETE, "/api/models/mlp/aliases/staging", None, 401),
        // Data writes need write: a reader is refused, a pusher gets through to the handler.
        (M::POST, "/api/feedback", Some(READER), 403),
        (M::POST, "/api/features/push", Some(READER), 403),
        // Admin reaches the handler (404: the alias does not exist).
        (M::DELETE, "/api/models/mlp/aliases/staging", Some(OPS), 404),
    ];
    let mut failures = Vec::new();
    for (method, path, key, want) in cases {
        let (code, headers, body) = status(&c, method.clone(), srv.url(path), *key).await;
        if code != *want {
            failures.push(format!(
                "{method} {path} with {key:?}: {code} {body}, want {want}"
            ));
        }
        if code == 401 && headers.get("www-authenticate").is_none() {
            failures.push(format!("{method} {path}: 401 without WWW-Authenticate"));
        }
        if code == 401 || code == 403 {
            let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
            if !v["error"].is_string() {
                failures.push(format!(
                    "{method} {path}: refusal without an error message: {body}"
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // The pusher's feedback reaches the handler (200, the item rejected for no reason).
    let r = c
        .post(srv.url("/api/feedback"))
        .bearer_auth(PUSHER)
        .json(&json!({"feedback": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // The CLI sends the key it is given (INFERD_API_KEY), and says why when it has none.
    let cli = |key: Option<&str>| {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_inferd"));
        c.args(["models", "list", "--server", &srv.url("")]);
        c.env_remove("INFERD_API_KEY");
        if let Some(k) = key {
            c.env("INFERD_API_KEY", k);
        }
        c.output().unwrap()
    };
    let ok = cli(Some(READER));
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains("mlp"));
    let refused = cli(None);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("missing credentials"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    // The audit log: refusals and changes, with the principal, never a secret.
    let lines: Vec<Value> = std::fs::read_to_string(&audit)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let has = |principal: Value, method: &str, target: &str, result: &str| {
        lines.iter().any(|e| {
            e["principal"] == principal
                && e["method"] == method
                && e["target"] == target
                && e["result"].as_str().is_some_and(|r| r.starts_with(result))
                && e["time_ms"].as_u64().is_some()
        })
    };
    assert!(
        has(json!("reader"), "DELETE", "/api/models/mlp", "refused"),
        "{lines:?}"
    );
    assert!(
        has(Value::Null, "GET", "/v2/models/mlp", "refused"),
        "{lines:?}"
    );
    assert!(
        has(
            json!("ops"),
            "DELETE",
            "/api/models/mlp/aliases/staging",
            "404"
        ),
        "{lines:?}"
    );
    assert!(
        has(json!("pusher"), "POST", "/api/feedback", "200"),
        "{lines:?}"
    );
    // The message of a 403 names the missing scope, not what exists.
    let (_, _, body) = status(&c, M::DELETE, srv.url("/api/models/nope"), Some(READER)).await;
    assert!(body.contains("lacks the 'admin' scope"), "{body}");
    // Log injection: names with line breaks and terminal escapes, refused or not, forge no
    // line in either log (the audit log's JSON escapes them; the server log quotes them).
    for path in [
        "/v2/models/x%0aINFO%20forged-line/infer",
        "/api/models/x%0d%0aforged-line",
        "/v2/models/%1b%5b31mforged-line",
    ] {
        let (code, _, _) = status(&c, M::POST, srv.url(path), Some(READER)).await;
        assert!((400..500).contains(&code), "{path}: {code}");
        let (code, _, _) = status(&c, M::DELETE, srv.url(path), None).await;
        assert!((400..500).contains(&code), "{path}: {code}");
    }
    let text = std::fs::read_to_string(&audit).unwrap();
    let log = srv.log();
    for (what, t) in [("audit log", &text), ("server log", &log)] {
        for secret in [READER, PUSHER, OPS, "not-a-key"] {
            assert!(!t.contains(secret), "a secret in the {what}");
        }
        assert!(
            !t.lines().any(|l| l.trim_start().starts_with("forged-line")
                || l.contains("INFO forged-line")
                || l.contains("\x1b[31m")),
            "a forged line in the {what}:\n{t}"
        );
    }
    assert!(
        text.contains("forged-line"),
        "the refusals are in the audit log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_upload_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (srv, repo) = server(&dir.path().join("keys.json"), &data).await;
    // A 64 MiB chunked upload with an infer key, over a raw socket: the headers alone.
    let addr = format!("127.0.0.1:{}", srv.http);
    let (head, written) = tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.write_all(
            format!(
                "POST /api/models/intruder/versions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {READER}\r\nContent-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
            )
            .as_bytes(),
        )
        .unwrap();
        // The refusal comes before a single byte of the body is sent: nothing of it can
        // have been read.
        let mut buf = [0u8; 1024];
        let n = s.read(&mut buf).unwrap();
        let head = String::from_utf8_lossy(&buf[..n]).into_owned();
        // Then the body, 1 MiB chunks: the server has closed the connection, so the
        // writes fail once the sockets' buffers are full, far short of 64 MiB.
        let chunk = [b'A'; 1 << 20];
        let mut written = 0usize;
        while written < 64 << 20 {
            let frame = [format!("{:x}\r\n", chunk.len()).as_bytes(), &chunk, b"\r\n"].concat();
            if s.write_all(&frame).is_err() {
                break;
            }
            written += chunk.len();
        }
        (head, written)
    })
    .await
    .unwrap();
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
    assert!(
        written < 32 << 20,
        "the connection took {written} bytes of a refused upload"
    );
    let r = reqwest::Client::new()
        .get(srv.url("/api/models/intruder"))
        .bearer_auth(OPS)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "{}", r.text().await.unwrap());
    // Nothing in the data directory or the model repository (where uploads land).
    let mut names = walk(&data);
    names.extend(walk(repo.path()));
    assert!(
        !names.iter().any(|n| n.contains("intruder")),
        "written: {names:?}"
    );
}

fn walk(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            out.push(e.path().display().to_string());
            if e.path().is_dir() {
                out.extend(walk(&e.path()));
            }
        }
    }
    out
}

fn with_key<T>(msg: T, key: &str) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {key}").parse().unwrap());
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_methods_need_a_key_with_their_scope() {
    let dir = tempfile::tempdir().unwrap();
    let (srv, _repo) = server(&dir.path().join("keys.json"), &dir.path().join("data")).await;
    let mut infer = GrpcInferenceServiceClient::connect(srv.grpc_url())
        .await
        .unwrap();
    // Liveness is open.
    infer.server_live(ServerLiveRequest {}).await.unwrap();
    let e = infer
        .server_metadata(ServerMetadataRequest {})
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    let e = infer
        .server_metadata(with_key(ServerMetadataRequest {}, "wrong"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    let meta = infer
        .server_metadata(with_key(ServerMetadataRequest {}, READER))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(meta.name, "inferd");

    let mut registry = ModelRegistryClient::connect(srv.grpc_url()).await.unwrap();
    let models = registry
        .list_models(with_key(ListModelsRequest {}, READER))
        .await
        .unwrap()
        .into_inner();
    assert!(models.models.iter().any(|m| m.name == "mlp"));
    let del = || DeleteAliasRequest {
        name: "mlp".into(),
        alias: "staging".into(),
    };
    let e = registry
        .delete_alias(with_key(del(), READER))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert!(e.message().contains("admin"), "{e:?}");
    let e = registry.delete_alias(del()).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    // Admin reaches the handler: the alias does not exist.
    let e = registry
        .delete_alias(with_key(del(), OPS))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_rotate_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys.json");
    let (srv, _repo) = server(&keys, &dir.path().join("data")).await;
    let c = reqwest::Client::new();
    let get = |key: &'static str| {
        let (c, url) = (c.clone(), srv.url("/v2/models/mlp"));
        async move {
            c.get(url)
                .bearer_auth(key)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    const NEW: &str = "reader-secret-2";
    assert_eq!(get(NEW).await, 401);
    // Both valid during the rotation...
    write_keys(
        &keys,
        &[
            common::key_entry("reader", READER, "infer"),
            common::key_entry("reader-2", NEW, "infer"),
            common::key_entry("ops", OPS, "admin"),
        ],
    );
    wait_for(|| get(NEW), 200).await;
    assert_eq!(get(READER).await, 200);
    // ...then the old one removed.
    write_keys(
        &keys,
        &[
            common::key_entry("reader-2", NEW, "infer"),
            common::key_entry("ops", OPS, "admin"),
        ],
    );
    wait_for(|| get(READER), 401).await;
    assert_eq!(get(NEW).await, 200);
    // A file that no longer parses keeps the keys in force.
    std::fs::write(&keys, "{not json").unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(get(NEW).await, 200);
    assert!(srv.log().contains("no longer parses"), "{}", srv.log());
}

async fn wait_for<F, Fut>(mut f: F, want: u16)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = u16>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = f().await;
        if got == want {
            return;
        }
        assert!(Instant::now() < deadline, "still {got}, want {want}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_keys_needs_no_auth_and_then_binds_to_loopback() {
    let repo = common::repo(&[("mlp", None)]);
    let data = tempfile::tempdir().unwrap();
    let serve = |extra: &[&str]| {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_inferd"));
        c.arg("serve")
            .arg("--model-repository")
            .arg(repo.path())
            .arg("--data-dir")
            .arg(data.path())
            .args(extra);
        c
    };
    // Neither keys nor --no-auth: refused, saying how to fix it.
    let out = serve(&[
        "--http-port",
        "0",
        "--grpc-port",
        "0",
        "--metrics-port",
        "0",
    ])
    .output()
    .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--api-keys FILE") && err.contains("--no-auth"),
        "{err}"
    );
    // --no-auth without --host: loopback only, and a warning.
    let [http, grpc, metrics] = common::free_ports().map(|p: u16| p.to_string());
    let log = data.path().join("server.log");
    let mut child = serve(&[
        "--no-auth",
        "--http-port",
        &http,
        "--grpc-port",
        &grpc,
        "--metrics-port",
        &metrics,
    ])
    .stderr(std::fs::File::create(&log).unwrap())
    .spawn()
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !reqwest::get(format!("http://127.0.0.1:{http}/v2/health/ready"))
        .await
        .is_ok_and(|r| r.status() == 200)
    {
        assert!(Instant::now() < deadline, "not ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let text = strip_ansi(&std::fs::read_to_string(&log).unwrap());
    let _ = child.kill();
    let _ = child.wait();
    assert!(text.contains("NO AUTHENTICATION"), "{text}");
    assert!(
        text.contains(&format!("http=127.0.0.1:{http}")),
        "not on loopback: {text}"
    );
    // Unauthenticated, every route answers without a key.
    assert!(!text.contains("credentials required"));
}

/// The log without its colour codes (`ESC [ ... m`).
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Names that try to leave their directory, on every route that takes one and writes: each a
/// 4xx (never 2xx or 5xx), nothing written outside the data directory and the repository,
/// and the server keeps serving (the class of MLflow's artifact-path traversals).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traversal_names_are_refused_on_every_writing_route() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let repo = common::repo(&[("mlp", None)]);
    let srv = Server::start_with_data(repo.path(), &data, &[]).await;
    let before = walk(root.path());
    let names = [
        "..",
        "..%2F..%2Fescaped",
        "%2e%2e",
        "%2e%2e%2fescaped",
        "a%2F..%2F..%2Fescaped",
        ".hidden",
        "a%00b",
        "%5c..%5cescaped",
        &"x".repeat(200),
    ];
    let c = reqwest::Client::new();
    use reqwest::Method as M;
    let routes: &[(M, &str, &str)] = &[
        (M::PUT, "/api/drift/{}", r#"{"window": {"rows": 10}}"#),
        (
            M::PUT,
            "/api/drift/mlp/reference/../../{}",
            r#"{"columns": {"x": [1]}}"#,
        ),
        (
            M::PUT,
            "/api/experiments/{}",
            r#"{"model": "mlp", "arms": [{"version": 1, "weight": 1}]}"#,
        ),
        (M::POST, "/api/models/{}/versions", "not a model"),
        (M::PUT, "/api/models/mlp/aliases/{}", r#"{"version": 1}"#),
        (
            M::PUT,
            "/api/collections/{}",
            r#"{"dim": 4, "metric": "cosine"}"#,
        ),
        (
            M::PUT,
            "/api/feature-views/{}",
            r#"{"entities": ["id"], "features": {"f": "float32"}}"#,
        ),
        (M::POST, "/v2/repository/models/{}/load", "{}"),
    ];
    let mut failures = Vec::new();
    for (method, template, body) in routes {
        for name in &names {
            let path = template.replace("{}", name);
            let r = c
                .request(method.clone(), srv.url(&path))
                .header("content-type", "application/json")
                .body(body.to_string())
                .send()
                .await
                .unwrap();
            let code = r.status().as_u16();
            if !(400..500).contains(&code) {
                failures.push(format!(
                    "{method} {path}: {code} {}",
                    r.text().await.unwrap()
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // Nothing new outside the data directory, nothing named "escaped" anywhere.
    let after = walk(root.path());
    let outside: Vec<&String> = after
        .iter()
        .filter(|p| !before.contains(p) && !p.starts_with(data.to_str().unwrap()))
        .collect();
    assert!(
        outside.is_empty(),
        "written outside the data dir: {outside:?}"
    );
    for p in walk(&data).iter().chain(walk(repo.path()).iter()) {
        assert!(!p.contains("escaped") && !p.contains(".hidden"), "{p}");
    }
    let r = reqwest::get(srv.url("/v2/health/ready")).await.unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_made_by_an_admin_work_at_once_survive_a_restart_and_revoke() {
    let dir = tempfile::tempdir().unwrap();
    let (keys, data) = (dir.path().join("keys.json"), dir.path().join("data"));
    let (srv, repo) = server(&keys, &data).await;
    let cli = |srv: &Server, key: &str, args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_inferd"))
            .arg("keys")
            .args(args)
            .args(["--server", &srv.url("")])
            .env("INFERD_API_KEY", key)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // Made through the CLI with an admin key: the secret is printed once, last line.
    let (ok, stdout, stderr) = cli(&srv, OPS, &["create", "ranker", "infer"]);
    assert!(ok, "{stderr}");
    let secret = stdout.lines().last().unwrap().trim().to_owned();
    assert!(
        secret.starts_with("inferd_") && secret.len() == 55,
        "{stdout}"
    );
    let c = reqwest::Client::new();
    use reqwest::Method as M;
    let meta = || srv.url("/v2/models/mlp");
    assert_eq!(status(&c, M::GET, meta(), Some(&secret)).await.0, 200);
    assert_eq!(
        status(&c, M::DELETE, srv.url("/api/models/mlp"), Some(&secret))
            .await
            .0,
        403
    );
    // gRPC takes it too.
    let mut g = GrpcInferenceServiceClient::connect(srv.grpc_url())
        .await
        .unwrap();
    let mut req = tonic::Request::new(ServerMetadataRequest {});
    req.metadata_mut()
        .insert("authorization", format!("Bearer {secret}").parse().unwrap());
    g.server_metadata(req).await.unwrap();

    // Only admin may list or make keys; the list shows names and scopes, never a secret.
    let (code, _, _) = status(&c, M::GET, srv.url("/api/keys"), Some(READER)).await;
    assert_eq!(code, 403, "listing keys is admin's");
    let r = c
        .post(srv.url("/api/keys"))
        .bearer_auth(PUSHER)
        .json(&json!({"name": "x", "scope": "admin"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let (code, _, body) = status(&c, M::GET, srv.url("/api/keys"), Some(OPS)).await;
    assert_eq!(code, 200);
    let list: Value = serde_json::from_str(&body).unwrap();
    let find = |n: &str| {
        list["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["name"] == n)
            .cloned()
            .unwrap_or(Value::Null)
    };
    assert_eq!(find("ranker")["source"], "api");
    assert_eq!(find("ranker")["scope"], "infer");
    assert_eq!(find("reader")["source"], "file");
    assert!(
        !body.contains(&secret) && !body.contains("sha256"),
        "{body}"
    );
    let (ok, stdout, _) = cli(&srv, OPS, &["list"]);
    assert!(
        ok && stdout.contains("ranker") && stdout.contains("api"),
        "{stdout}"
    );
    // Stored hashed, owner-only.
    let stored = std::fs::read_to_string(data.join("keys.json")).unwrap();
    let digest: String = Sha256::digest(secret.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert!(stored.contains(&digest) && !stored.contains(&secret));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(data.join("keys.json"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "keys.json is readable by others: {mode:o}");

    // Clear refusals: a taken name, a bad name, a bad scope, an unknown key.
    let post = |body: Value| {
        c.post(srv.url("/api/keys"))
            .bearer_auth(OPS)
            .json(&body)
            .send()
    };
    let r = post(json!({"name": "reader", "scope": "infer"}))
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    let r = post(json!({"name": "../etc/passwd", "scope": "infer"}))
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = post(json!({"name": "y", "scope": "root"})).await.unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("infer, write or admin"));
    let (code, _, _) = status(&c, M::DELETE, srv.url("/api/keys/nobody"), Some(OPS)).await;
    assert_eq!(code, 404);
    let (code, _, body) = status(&c, M::DELETE, srv.url("/api/keys/reader"), Some(OPS)).await;
    assert_eq!(code, 409, "a file key is removed from the file");
    assert!(body.contains("--api-keys file"), "{body}");

    // A restart keeps it.
    drop(srv);
    let srv =
        Server::start_with_data(repo.path(), &data, &["--api-keys", keys.to_str().unwrap()]).await;
    assert_eq!(
        status(&c, M::GET, srv.url("/v2/models/mlp"), Some(&secret))
            .await
            .0,
        200
    );
    // Revoked: refused from the next request on, on both transports.
    let (ok, _, stderr) = cli(&srv, OPS, &["revoke", "ranker"]);
    assert!(ok, "{stderr}");
    assert_eq!(
        status(&c, M::GET, srv.url("/v2/models/mlp"), Some(&secret))
            .await
            .0,
        401
    );
    let mut g = GrpcInferenceServiceClient::connect(srv.grpc_url())
        .await
        .unwrap();
    let mut req = tonic::Request::new(ServerMetadataRequest {});
    req.metadata_mut()
        .insert("authorization", format!("Bearer {secret}").parse().unwrap());
    assert_eq!(
        g.server_metadata(req).await.unwrap_err().code(),
        Code::Unauthenticated
    );
    let (ok, _, stderr) = cli(&srv, READER, &["create", "sneaky", "admin"]);
    assert!(!ok && stderr.contains("403"), "{stderr}");

    // The same over gRPC (inferd.v1.Keys): made, listed, used, revoked; admin only.
    use server::proto::inferd::keys_client::KeysClient;
    use server::proto::inferd::{CreateKeyRequest, ListKeysRequest, Names, RevokeKeyRequest};
    let mut keys_rpc = KeysClient::connect(srv.grpc_url()).await.unwrap();
    let made = keys_rpc
        .create_key(with_key(
            CreateKeyRequest {
                name: "grpc-made".into(),
                scope: "infer".into(),
                models: Some(Names {
                    names: vec!["mlp".into()],
                }),
                ..Default::default()
            },
            OPS,
        ))
        .await
        .unwrap()
        .into_inner();
    let key = made.key.unwrap();
    assert_eq!((key.scope.as_str(), key.source.as_str()), ("infer", "api"));
    assert_eq!(key.models.unwrap().names, ["mlp"]);
    assert_eq!(
        status(&c, M::GET, srv.url("/v2/models/mlp"), Some(&made.secret))
            .await
            .0,
        200
    );
    let listed = keys_rpc
        .list_keys(with_key(ListKeysRequest {}, OPS))
        .await
        .unwrap()
        .into_inner();
    assert!(listed.keys.iter().any(|k| k.name == "grpc-made"));
    assert!(
        listed
            .keys
            .iter()
            .any(|k| k.name == "reader" && k.source == "file")
    );
    let e = keys_rpc
        .list_keys(with_key(ListKeysRequest {}, READER))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    let e = keys_rpc
        .create_key(with_key(
            CreateKeyRequest {
                name: "y".into(),
                scope: "root".into(),
                ..Default::default()
            },
            OPS,
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    keys_rpc
        .revoke_key(with_key(
            RevokeKeyRequest {
                name: "grpc-made".into(),
            },
            OPS,
        ))
        .await
        .unwrap();
    assert_eq!(
        status(&c, M::GET, srv.url("/v2/models/mlp"), Some(&made.secret))
            .await
            .0,
        401
    );
    let e = keys_rpc
        .revoke_key(with_key(
            RevokeKeyRequest {
                name: "reader".into(),
            },
            OPS,
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "a file key: {e:?}");
    drop(repo);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restricted_principals_reach_only_their_models_and_collections() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys.json");
    let mut team = common::key_entry("fraud-team", "team-secret-1", "admin");
    team["models"] = json!(["mlp"]);
    team["collections"] = json!(["docs"]);
    team["feature_views"] = json!(["users"]);
    write_keys(&keys, &[common::key_entry("ops", OPS, "admin"), team]);
    let repo = common::repo(&[("mlp", None), ("mlp_v2", None)]);
    let srv = Server::start(repo.path(), &["--api-keys", keys.to_str().unwrap()]).await;
    let c = reqwest::Client::new();
    use reqwest::Method as M;
    let as_team = |m: M, path: &str, body: Option<Value>| {
        let mut r = c.request(m, srv.url(path)).bearer_auth("team-secret-1");
        if let Some(b) = body {
            r = r.json(&b);
        }
        async move {
            let r = r.send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    let row = json!({"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": vec![0.5; 64]}]});
    // Its model: served, by name and by alias.
    let r = c
        .put(srv.url("/api/models/mlp/aliases/production"))
        .bearer_auth(OPS)
        .json(&json!({"version": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    assert_eq!(as_team(M::GET, "/v2/models/mlp", None).await.0, 200);
    assert_eq!(
        as_team(M::POST, "/v2/models/mlp/infer", Some(row.clone()))
            .await
            .0,
        200
    );
    assert_eq!(
        as_team(
            M::POST,
            "/v2/models/mlp/versions/production/infer",
            Some(row.clone())
        )
        .await
        .0,
        200
    );
    // Another model, existing or not: the same 403, saying nothing of whether it exists.
    let (code, other) = as_team(M::POST, "/v2/models/mlp_v2/infer", Some(row.clone())).await;
    assert_eq!(code, 403, "{other}");
    assert!(other.contains("may not reach model 'mlp_v2'"), "{other}");
    let (code, ghost) = as_team(M::GET, "/v2/models/no-such-model", None).await;
    assert_eq!(code, 403);
    assert!(
        ghost.contains("may not reach model 'no-such-model'"),
        "{ghost}"
    );
    // Its admin scope stops at its models.
    assert_eq!(as_team(M::DELETE, "/api/models/mlp_v2", None).await.0, 403);
    assert_eq!(
        as_team(M::PUT, "/api/drift/mlp_v2", Some(json!({})))
            .await
            .0,
        403
    );
    assert_eq!(
        as_team(M::POST, "/v2/repository/models/mlp_v2/unload", None)
            .await
            .0,
        403
    );
    // Lists show what it may reach, only.
    let (_, list) = as_team(M::GET, "/api/models", None).await;
    let list: Value = serde_json::from_str(&list).unwrap();
    let names: Vec<&str> = list["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["mlp"]);
    let (_, index) = as_team(M::POST, "/v2/repository/index", Some(json!({}))).await;
    assert!(
        index.contains("\"mlp\"") && !index.contains("mlp_v2"),
        "{index}"
    );
    // Collections: its own, not the other.
    for name in ["docs", "secret"] {
        let r = c
            .put(srv.url(&format!("/api/collections/{name}")))
            .bearer_auth(OPS)
            .json(&json!({"dim": 4, "metric": "cosine"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let (_, cols) = as_team(M::GET, "/api/collections", None).await;
    assert!(cols.contains("docs") && !cols.contains("secret"), "{cols}");
    // The same on Qdrant's paths (the client sends its key as `api-key`).
    let qdrant = |path: &str| {
        c.get(srv.url(path))
            .header("api-key", "team-secret-1")
            .send()
    };
    let r = qdrant("/collections").await.unwrap();
    assert_eq!(r.status(), 200);
    let cols = r.text().await.unwrap();
    assert!(cols.contains("docs") && !cols.contains("secret"), "{cols}");
    assert_eq!(qdrant("/collections/docs").await.unwrap().status(), 200);
    assert_eq!(qdrant("/collections/secret").await.unwrap().status(), 403);
    assert_eq!(
        qdrant("/collections/secret/exists").await.unwrap().status(),
        403
    );
    let points = json!({"points": [{"id": 1, "vector": [0.1, 0.2, 0.3, 0.4]}]});
    assert_eq!(
        as_team(M::PUT, "/api/collections/docs/points", Some(points.clone()))
            .await
            .0,
        200
    );
    assert_eq!(
        as_team(M::PUT, "/api/collections/secret/points", Some(points))
            .await
            .0,
        403
    );
    assert_eq!(
        as_team(M::DELETE, "/api/collections/secret", None).await.0,
        403
    );
    // Routes naming their target in the body check it once parsed: embeddings (its model),
    // feature reads and pushes (their views).
    let (code, body) = as_team(
        M::POST,
        "/v1/embeddings",
        Some(json!({"model": "mlp_v2", "input": "x"})),
    )
    .await;
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("may not reach model 'mlp_v2'"), "{body}");
    let (code, body) = as_team(
        M::POST,
        "/v1/embeddings",
        Some(json!({"model": "mlp", "input": "x"})),
    )
    .await;
    assert_eq!(code, 400, "its own model, not a text model: {body}");
    let (code, body) = as_team(
        M::POST,
        "/api/features/get-online-features",
        Some(json!({"features": ["users:n", "payroll:salary"], "entities": {"user_id": ["u1"]}})),
    )
    .await;
    assert_eq!(code, 403, "{body}");
    assert!(
        body.contains("may not reach feature view 'payroll'"),
        "{body}"
    );
    let (code, body) = as_team(
        M::POST,
        "/api/features/push",
        Some(json!({"feature_view": "payroll", "rows": []})),
    )
    .await;
    assert_eq!(code, 403, "{body}");
    // Keys are managed by unrestricted admins only: a restricted admin cannot make itself a
    // key without its restrictions.
    let (code, body) = as_team(
        M::POST,
        "/api/keys",
        Some(json!({"name": "escape", "scope": "admin"})),
    )
    .await;
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("without restrictions"), "{body}");
    assert_eq!(as_team(M::GET, "/api/keys", None).await.0, 403);
    assert_eq!(as_team(M::DELETE, "/api/keys/ops", None).await.0, 403);
    // gRPC: the inference service checks the model each call names; lists are filtered;
    // the methods that do not check are refused.
    let mut g = GrpcInferenceServiceClient::connect(srv.grpc_url())
        .await
        .unwrap();
    g.server_metadata(with_key(ServerMetadataRequest {}, "team-secret-1"))
        .await
        .unwrap();
    let meta = |name: &str| {
        with_key(
            server::proto::inference::ModelMetadataRequest {
                name: name.into(),
                version: String::new(),
            },
            "team-secret-1",
        )
    };
    assert_eq!(
        g.model_metadata(meta("mlp"))
            .await
            .unwrap()
            .into_inner()
            .name,
        "mlp"
    );
    let e = g.model_metadata(meta("mlp_v2")).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert!(
        e.message().contains("may not reach model 'mlp_v2'"),
        "{e:?}"
    );
    g.model_infer(with_key(common::mlp_grpc_request(0.5), "team-secret-1"))
        .await
        .unwrap();
    let mut other = common::mlp_grpc_request(0.5);
    other.model_name = "mlp_v2".into();
    let e = g
        .model_infer(with_key(other, "team-secret-1"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    // On a stream, each request is checked: one per model, answered in order.
    let mut theirs = common::mlp_grpc_request(0.5);
    theirs.model_name = "mlp_v2".into();
    theirs.id = "theirs".into();
    let mut ours = common::mlp_grpc_request(0.5);
    ours.id = "ours".into();
    let mut stream = g
        .model_stream_infer(with_key(
            futures::stream::iter([ours, theirs]),
            "team-secret-1",
        ))
        .await
        .unwrap()
        .into_inner();
    let first = stream.message().await.unwrap().unwrap();
    assert_eq!(first.error_message, "");
    assert_eq!(first.infer_response.unwrap().id, "ours");
    let second = stream.message().await.unwrap().unwrap();
    assert!(
        second
            .error_message
            .contains("may not reach model 'mlp_v2'"),
        "{second:?}"
    );
    assert_eq!(second.infer_response.unwrap().id, "theirs");
    let index = g
        .repository_index(with_key(
            server::proto::inference::RepositoryIndexRequest::default(),
            "team-secret-1",
        ))
        .await
        .unwrap()
        .into_inner();
    let names: Vec<&str> = index.models.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["mlp"]);
    // The registry and the collections check and filter the same way.
    let mut registry = ModelRegistryClient::connect(srv.grpc_url()).await.unwrap();
    let listed = registry
        .list_models(with_key(ListModelsRequest::default(), "team-secret-1"))
        .await
        .unwrap()
        .into_inner();
    let names: Vec<&str> = listed.models.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["mlp"]);
    let e = registry
        .delete_alias(with_key(
            DeleteAliasRequest {
                name: "mlp_v2".into(),
                alias: "production".into(),
            },
            "team-secret-1",
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    use server::proto::inferd::collections_client::CollectionsClient;
    let mut cols = CollectionsClient::connect(srv.grpc_url()).await.unwrap();
    let listed = cols
        .list_collections(with_key(
            server::proto::inferd::ListCollectionsRequest::default(),
            "team-secret-1",
        ))
        .await
        .unwrap()
        .into_inner();
    let names: Vec<&str> = listed.collections.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["docs"]);
    let e = cols
        .get_collection(with_key(
            server::proto::inferd::GetCollectionRequest {
                name: "secret".into(),
            },
            "team-secret-1",
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    use server::proto::inferd::drift_client::DriftClient;
    use server::proto::inferd::feature_store_client::FeatureStoreClient;
    let e = FeatureStoreClient::connect(srv.grpc_url())
        .await
        .unwrap()
        .get_feature_view(with_key(
            server::proto::inferd::GetFeatureViewRequest {
                name: "payroll".into(),
            },
            "team-secret-1",
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    let e = DriftClient::connect(srv.grpc_url())
        .await
        .unwrap()
        .get_drift(with_key(
            server::proto::inferd::GetDriftRequest {
                model: "mlp_v2".into(),
                ..Default::default()
            },
            "team-secret-1",
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    // A service that does not check is refused to a restricted principal: keys.
    use server::proto::inferd::keys_client::KeysClient;
    let e = KeysClient::connect(srv.grpc_url())
        .await
        .unwrap()
        .list_keys(with_key(
            server::proto::inferd::ListKeysRequest::default(),
            "team-secret-1",
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    // An admin-made key can be restricted the same way (here through the CLI), and says so
    // in the list.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_inferd"))
        .args(["keys", "create", "limited", "infer", "--models", "mlp_v2"])
        .args(["--server", &srv.url("")])
        .env("INFERD_API_KEY", OPS)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let secret = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap()
        .trim()
        .to_owned();
    let get = |path: &str| c.get(srv.url(path)).bearer_auth(&secret).send();
    assert_eq!(get("/v2/models/mlp_v2").await.unwrap().status(), 200);
    assert_eq!(get("/v2/models/mlp").await.unwrap().status(), 403);
    let keys: Value = c
        .get(srv.url("/api/keys"))
        .bearer_auth(OPS)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let limited = keys["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == "limited")
        .unwrap();
    assert_eq!(limited["models"], json!(["mlp_v2"]));
    // The unrestricted admin sees everything.
    let all: Value = c
        .get(srv.url("/api/models"))
        .bearer_auth(OPS)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(all["models"].as_array().unwrap().len(), 2);
}

/// `mlp` with versions 1 and 2 (the same signature) and `other` (that signature too), so an
/// experiment can stay on one model or reach into another.
fn two_model_repo() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let models = common::fixtures().join("models");
    for (at, src) in [("mlp/1", "mlp"), ("mlp/2", "mlp_v2"), ("other/1", "mlp_v2")] {
        std::fs::create_dir_all(dir.path().join(at)).unwrap();
        std::fs::copy(
            models.join(src).join("1/model.onnx"),
            dir.path().join(at).join("model.onnx"),
        )
        .unwrap();
    }
    std::fs::write(
        dir.path().join("mlp/config.toml"),
        "[version_policy]\nall = true\n",
    )
    .unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restricted_principals_run_experiments_and_send_feedback_for_their_models_only() {
    use server::proto::inferd as pb;
    use server::proto::inferd::experiments_client::ExperimentsClient;
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys.json");
    let mut team = common::key_entry("mlp-team", "team-secret-1", "admin");
    team["models"] = json!(["mlp"]);
    let mut writer = common::key_entry("mlp-writer", "writer-secret-1", "write");
    writer["models"] = json!(["mlp"]);
    write_keys(
        &keys,
        &[common::key_entry("ops", OPS, "admin"), team, writer],
    );
    let repo = two_model_repo();
    let srv = Server::start(repo.path(), &["--api-keys", keys.to_str().unwrap()]).await;
    let c = reqwest::Client::new();
    let call = |key: &'static str, m: reqwest::Method, path: &str, body: Option<Value>| {
        let mut r = c.request(m, srv.url(path)).bearer_auth(key);
        if let Some(b) = body {
            r = r.json(&b);
        }
        async move {
            let r = r.send().await.unwrap();
            let code = r.status().as_u16();
            (code, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    use reqwest::Method as M;
    let (code, r) = call(
        OPS,
        M::PUT,
        "/api/models/mlp/aliases/production",
        Some(json!({"version": 1})),
    )
    .await;
    assert_eq!(code, 200, "{r}");
    // The operator's experiment on mlp sends half its traffic to another model.
    let mixed = json!({"model": "mlp", "unit": {"header": "x-user"},
        "arms": [{"name": "a", "version": 1, "weight": 50},
                 {"name": "b", "model": "other", "version": 1, "weight": 50}]});
    let (code, r) = call(OPS, M::PUT, "/api/experiments/mixed", Some(mixed.clone())).await;
    assert_eq!(code, 201, "{r}");
    // The team may reach mlp but not `other`: the experiment is out of its reach on every
    // route, in the words a missing one gets, and absent from its list.
    for (m, path, body) in [
        (M::GET, "/api/experiments/mixed", None),
        (M::GET, "/api/experiments/ghost", None),
        (M::POST, "/api/experiments/mixed/stop", None),
        (
            M::POST,
            "/api/experiments/mixed/weights",
            Some(json!({"weights": {"a": 1}})),
        ),
        (
            M::POST,
            "/api/experiments/mixed/promote",
            Some(json!({"arm": "a"})),
        ),
        (M::DELETE, "/api/experiments/mixed", None),
        (M::PUT, "/api/experiments/mixed", Some(mixed.clone())),
        (M::PUT, "/api/experiments/mine", Some(mixed.clone())),
    ] {
        let (code, r) = call("team-secret-1", m.clone(), path, body).await;
        assert_eq!(code, 403, "{m} {path}: {r}");
        let name = path.split('/').nth(3).unwrap();
        assert!(
            r["error"]
                .as_str()
                .unwrap()
                .contains(&format!("may not reach experiment '{name}'")),
            "{m} {path}: {r}"
        );
    }
    let (_, list) = call("team-secret-1", M::GET, "/api/experiments", None).await;
    assert_eq!(list["experiments"], json!([]), "{list}");
    let mut g = ExperimentsClient::connect(srv.grpc_url()).await.unwrap();
    let e = g
        .get_experiment(with_key(
            pb::GetExperimentRequest {
                name: "mixed".into(),
            },
            "team-secret-1",
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    // Feedback for it, by unit or by request id, is refused as unknown; the request stays
    // in the log for a principal that may reach it.
    let row = json!({"id": "req-1", "inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": vec![0.5; 64]}]});
    let r = c
        .post(srv.url("/v2/models/mlp/infer"))
        .bearer_auth("writer-secret-1")
        .header("x-user", "u1")
        .json(&row)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (code, r) = call(
        "writer-secret-1",
        M::POST,
        "/api/feedback",
        Some(json!({"feedback": [
            {"experiment": "mixed", "unit": "u1", "reward": 1},
            {"id": "req-1", "reward": 1}]})),
    )
    .await;
    assert_eq!(code, 200, "{r}");
    assert_eq!(r["accepted"], 0, "{r}");
    let reasons: Vec<&str> = r["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["reason"].as_str().unwrap())
        .collect();
    assert!(reasons[0].contains("no experiment named 'mixed'"), "{r}");
    assert!(reasons[1].contains("unknown request id 'req-1'"), "{r}");
    let (code, r) = call(
        OPS,
        M::POST,
        "/api/feedback",
        Some(json!({"feedback": [{"id": "req-1", "reward": 1}]})),
    )
    .await;
    assert_eq!((code, &r["accepted"]), (200, &json!(1)), "{r}");
    // Over its own model's versions the team runs its own experiment, on both transports.
    let (code, _) = call(OPS, M::DELETE, "/api/experiments/mixed", None).await;
    assert_eq!(code, 200);
    let own = json!({"model": "mlp", "unit": {"header": "x-user"},
        "arms": [{"name": "a", "version": 1, "weight": 50}, {"name": "b", "version": 2, "weight": 50}]});
    let (code, r) = call("team-secret-1", M::PUT, "/api/experiments/own", Some(own)).await;
    assert_eq!(code, 201, "{r}");
    let (code, r) = call(
        "team-secret-1",
        M::POST,
        "/api/experiments/own/weights",
        Some(json!({"weights": {"a": 80}})),
    )
    .await;
    assert_eq!(code, 200, "{r}");
    let listed = g
        .list_experiments(with_key(
            pb::ListExperimentsRequest::default(),
            "team-secret-1",
        ))
        .await
        .unwrap()
        .into_inner();
    let names: Vec<&str> = listed.experiments.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["own"]);
    let (code, r) = call(
        "writer-secret-1",
        M::POST,
        "/api/feedback",
        Some(json!({"feedback": [{"experiment": "own", "unit": "u1", "reward": 1}]})),
    )
    .await;
    assert_eq!((code, &r["accepted"]), (200, &json!(1)), "{r}");
    let sent = g
        .send_feedback(with_key(
            pb::SendFeedbackRequest {
                feedback: vec![pb::Feedback {
                    experiment: "own".into(),
                    unit: "u2".into(),
                    reward: Some(0.0),
                    ..Default::default()
                }],
            },
            "writer-secret-1",
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(sent.accepted, 1, "{sent:?}");
    let (_, r) = call(OPS, M::GET, "/api/experiments/own", None).await;
    let rewarded: u64 = r["arms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["outcome"]["n"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(rewarded, 2, "{r}");
    // The statistics of every model list only what it may see.
    let (_, stats) = call("team-secret-1", M::GET, "/v2/models/stats", None).await;
    let names: Vec<&str> = stats["model_stats"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert!(
        !names.is_empty() && names.iter().all(|n| *n == "mlp"),
        "{stats}"
    );
    // A gRPC upload names its model in the stream's first message: another model is
    // refused before any artifact byte is read, and nothing is written.
    use server::proto::inferd::{UploadHeader, UploadVersionRequest, upload_version_request::Part};
    let header = |name: &str| UploadVersionRequest {
        part: Some(Part::Header(UploadHeader {
            name: name.into(),
            ..Default::default()
        })),
    };
    let chunk = UploadVersionRequest {
        part: Some(Part::Chunk(vec![0; 1024])),
    };
    let mut registry = ModelRegistryClient::connect(srv.grpc_url()).await.unwrap();
    let e = registry
        .upload_version(with_key(
            futures::stream::iter([header("other"), chunk.clone()]),
            "team-secret-1",
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert!(e.message().contains("may not reach model 'other'"), "{e:?}");
    assert!(!repo.path().join("other/2").exists());
    // Its own model's upload is taken (and validated in the background: these bytes are no
    // model).
    let v = registry
        .upload_version(with_key(
            futures::stream::iter([header("mlp"), chunk]),
            "team-secret-1",
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((v.name.as_str(), v.version, v.size), ("mlp", 3, 1024));
}
