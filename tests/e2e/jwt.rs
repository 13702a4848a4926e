//! Bearer JWTs against a JWKS file, on both transports, against the real binary: keys made
//! by `openssl` (RSA, P-256, Ed25519), tokens signed here with `jsonwebtoken`. Every bad
//! token is a 401 / UNAUTHENTICATED (never a 5xx); a good one's `scope` claim decides.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use server::proto::inference::ServerMetadataRequest;
use server::proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
use tonic::Code;

use crate::common::{self, Server};

const ISS: &str = "https://idp.test/realms/ml";
const AUD: &str = "inferd";

fn openssl(args: &[&str]) -> Vec<u8> {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn b64url(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | (u32::from(b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// Three key pairs made by openssl, their JWKS, and their private keys for signing.
struct Keys {
    rsa: EncodingKey,
    rsa_public_pem: Vec<u8>,
    ec: EncodingKey,
    ed: EncodingKey,
    jwks: Value,
}

fn keys(dir: &Path) -> Keys {
    let path = |n: &str| dir.join(n).to_str().unwrap().to_owned();
    openssl(&[
        "genpkey",
        "-algorithm",
        "RSA",
        "-pkeyopt",
        "rsa_keygen_bits:2048",
        "-out",
        &path("rsa.pem"),
    ]);
    openssl(&[
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-out",
        &path("ec.pem"),
    ]);
    openssl(&["genpkey", "-algorithm", "ed25519", "-out", &path("ed.pem")]);
    let modulus = String::from_utf8(openssl(&[
        "rsa",
        "-in",
        &path("rsa.pem"),
        "-noout",
        "-modulus",
    ]))
    .unwrap();
    let n = hex(modulus.trim().trim_start_matches("Modulus="));
    let rsa_public_pem = openssl(&["pkey", "-in", &path("rsa.pem"), "-pubout"]);
    let der = |name: &str| openssl(&["pkey", "-in", &path(name), "-pubout", "-outform", "DER"]);
    let ec_der = der("ec.pem");
    let point = &ec_der[ec_der.len() - 65..]; // 04 || X || Y
    assert_eq!(point[0], 4);
    let ed_der = der("ed.pem");
    let ed_x = &ed_der[ed_der.len() - 32..];
    let read = |name: &str| std::fs::read(dir.join(name)).unwrap();
    Keys {
        rsa: EncodingKey::from_rsa_pem(&read("rsa.pem")).unwrap(),
        rsa_public_pem,
        ec: EncodingKey::from_ec_pem(&read("ec.pem")).unwrap(),
        ed: EncodingKey::from_ed_pem(&read("ed.pem")).unwrap(),
        jwks: json!({"keys": [
            {"kty": "RSA", "kid": "rsa-1", "use": "sig", "alg": "RS256", "n": b64url(&n), "e": "AQAB"},
            {"kty": "EC", "kid": "ec-1", "crv": "P-256", "x": b64url(&point[1..33]), "y": b64url(&point[33..])},
            {"kty": "OKP", "kid": "ed-1", "crv": "Ed25519", "x": b64url(ed_x)},
        ]}),
    }
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Claims as a Keycloak-style provider issues them, with `scope` and overrides.
fn claims(scope: &str, patch: Value) -> Value {
    let mut c = json!({
        "iss": ISS, "aud": AUD, "sub": "svc-ranking", "iat": now(), "nbf": now() - 5,
        "exp": now() + 300, "scope": scope, "azp": "ranking", "typ": "Bearer",
    });
    for (k, v) in patch.as_object().unwrap() {
        if v.is_null() {
            c.as_object_mut().unwrap().remove(k);
        } else {
            c[k] = v.clone();
        }
    }
    c
}

fn sign(alg: Algorithm, kid: &str, key: &EncodingKey, claims: &Value) -> String {
    let mut h = Header::new(alg);
    h.kid = Some(kid.into());
    jsonwebtoken::encode(&h, claims, key).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_verified_on_both_transports() {
    let dir = tempfile::tempdir().unwrap();
    let k = keys(dir.path());
    let jwks = dir.path().join("jwks.json");
    std::fs::write(&jwks, k.jwks.to_string()).unwrap();
    let repo = common::repo(&[("mlp", None)]);
    let srv = Server::start(
        repo.path(),
        &[
            "--jwks",
            jwks.to_str().unwrap(),
            "--jwt-issuer",
            ISS,
            "--jwt-audience",
            AUD,
        ],
    )
    .await;

    let good = sign(
        Algorithm::RS256,
        "rsa-1",
        &k.rsa,
        &claims("openid infer", json!({})),
    );
    let admin_ec = sign(Algorithm::ES256, "ec-1", &k.ec, &claims("admin", json!({})));
    let admin_ed = sign(Algorithm::EdDSA, "ed-1", &k.ed, &claims("admin", json!({})));
    let parts: Vec<&str> = good.split('.').collect();
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        b64url(claims("admin", json!({})).to_string().as_bytes()),
        parts[2]
    );
    let none = format!(
        "{}.{}.",
        b64url(br#"{"alg":"none","typ":"JWT","kid":"rsa-1"}"#),
        b64url(claims("admin", json!({})).to_string().as_bytes())
    );
    // HS256 with the RSA public key as the HMAC secret (the RS/HS confusion).
    let confused = sign(
        Algorithm::HS256,
        "rsa-1",
        &EncodingKey::from_secret(&k.rsa_public_pem),
        &claims("admin", json!({})),
    );
    let bad: Vec<(&str, String)> = vec![
        (
            "expired",
            sign(
                Algorithm::RS256,
                "rsa-1",
                &k.rsa,
                &claims("admin", json!({"exp": now() - 120})),
            ),
        ),
        (
            "not yet valid",
            sign(
                Algorithm::RS256,
                "rsa-1",
                &k.rsa,
                &claims("admin", json!({"nbf": now() + 600})),
            ),
        ),
        (
            "no exp",
            sign(
                Algorithm::RS256,
                "rsa-1",
                &k.rsa,
                &claims("admin", json!({"exp": null})),
            ),
        ),
        (
            "wrong audience",
            sign(
                Algorithm::RS256,
                "rsa-1",
                &k.rsa,
                &claims("admin", json!({"aud": "other"})),
            ),
        ),
        (
            "wrong issuer",
            sign(
                Algorithm::RS256,
                "rsa-1",
                &k.rsa,
                &claims("admin", json!({"iss": "https://evil.test"})),
            ),
        ),
        (
            "unknown kid",
            sign(
                Algorithm::RS256,
                "rsa-9",
                &k.rsa,
                &claims("admin", json!({})),
            ),
        ),
        (
            "key of another type",
            sign(
                Algorithm::RS256,
                "ec-1",
                &k.rsa,
                &claims("admin", json!({})),
            ),
        ),
        ("tampered", tampered),
        ("alg none", none),
        ("HS256 with the RSA public key", confused),
        // Past the 8 KiB credentials limit, within the 16 KiB of headers: refused undecoded.
        ("12 KiB", "a.".repeat(6 * 1024) + "b"),
        // Past the header limit (--max-header-bytes): refused by the transport, unread.
        ("64 KiB", "a.".repeat(32 * 1024) + "b"),
        ("1 MiB", "a.".repeat(512 * 1024) + "b"),
    ];
    let oversized = |what: &str| what == "64 KiB" || what == "1 MiB";

    let c = reqwest::Client::new();
    let get = |url: String, token: Option<String>| {
        let c = c.clone();
        async move {
            let mut r = c.get(url);
            if let Some(t) = token {
                r = r.bearer_auth(t);
            }
            match r.send().await {
                Ok(r) => (r.status().as_u16(), r.text().await.unwrap()),
                // The server closed the connection on headers past its limit while the
                // client was still writing them.
                Err(e) => (0, e.to_string()),
            }
        }
    };
    let del = |token: &str| {
        let (c, url, t) = (
            c.clone(),
            srv.url("/api/models/mlp/aliases/staging"),
            token.to_owned(),
        );
        async move {
            c.delete(url)
                .bearer_auth(t)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    let meta = srv.url("/v2/models/mlp");
    assert_eq!(get(meta.clone(), None).await.0, 401);
    let mut failures = Vec::new();
    for (what, token) in &bad {
        let (code, body) = get(meta.clone(), Some(token.clone())).await;
        // 431 Request Header Fields Too Large for headers past the limit (or the connection
        // cut while a megabyte was still being written).
        if code != 401 && !(oversized(what) && (code == 431 || (code == 0 && *what == "1 MiB"))) {
            failures.push(format!("REST, {what}: {code} {body}"));
        }
    }
    // Good tokens: the scope claim decides (an infer token may read, not manage).
    assert_eq!(get(meta.clone(), Some(good.clone())).await.0, 200);
    assert_eq!(del(&good).await, 403);
    assert_eq!(del(&admin_ec).await, 404, "admin reaches the handler");
    assert_eq!(del(&admin_ed).await, 404);
    // A valid token that grants no scope inferd knows: 403 everywhere but health.
    let no_scope = sign(
        Algorithm::RS256,
        "rsa-1",
        &k.rsa,
        &claims("openid profile", json!({})),
    );
    assert_eq!(get(meta.clone(), Some(no_scope)).await.0, 403);

    // gRPC: the same decisions through the metadata.
    let mut grpc = GrpcInferenceServiceClient::connect(srv.grpc_url())
        .await
        .unwrap();
    let call = |token: &str| {
        let mut r = tonic::Request::new(ServerMetadataRequest {});
        r.metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        r
    };
    grpc.server_metadata(call(&good)).await.unwrap();
    // The oversized tokens come last: the HTTP/2 server answers them by closing the
    // connection (each on a connection of its own).
    assert_eq!(bad.last().map(|b| b.0), Some("1 MiB"));
    for (what, token) in &bad {
        if oversized(what) {
            let mut fresh = GrpcInferenceServiceClient::connect(srv.grpc_url())
                .await
                .unwrap();
            match fresh.server_metadata(call(token)).await {
                // Past the header-list limit (16 KiB) the transport refuses the request
                // before inferd sees it: ENHANCE_YOUR_CALM, which the client reports as this;
                // a megabyte is cut off while the client is still writing it.
                Err(e) if e.code() == Code::ResourceExhausted => {}
                Err(e) if *what == "1 MiB" && e.message() == "transport error" => {}
                other => failures.push(format!("gRPC, {what}: {other:?}")),
            }
            continue;
        }
        match grpc.server_metadata(call(token)).await {
            Err(e) if e.code() == Code::Unauthenticated => {}
            other => failures.push(format!("gRPC, {what}: {other:?}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // And the server serves on.
    let mut grpc = GrpcInferenceServiceClient::connect(srv.grpc_url())
        .await
        .unwrap();
    grpc.server_metadata(call(&good)).await.unwrap();
    assert!(srv.log().contains("credentials required"), "{}", srv.log());
}

/// The provider of `a_jwks_url_...`: a JWKS the test changes, and its fetches counted.
struct Idp {
    jwks: std::sync::Mutex<Value>,
    fetches: std::sync::atomic::AtomicUsize,
    down: std::sync::atomic::AtomicBool,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jwks_url_is_fetched_refetched_for_a_new_key_id_and_rate_limited() {
    use std::sync::Arc;
    use std::sync::atomic::Ordering;
    use std::time::{Duration, Instant};
    let dir = tempfile::tempdir().unwrap();
    let k = keys(dir.path());
    let all = k.jwks["keys"].as_array().unwrap().clone();
    let only = |kids: &[&str]| json!({"keys": all.iter().filter(|j| kids.contains(&j["kid"].as_str().unwrap())).collect::<Vec<_>>()});
    let idp = Arc::new(Idp {
        jwks: std::sync::Mutex::new(only(&["rsa-1"])),
        fetches: Default::default(),
        down: Default::default(),
    });
    let app = axum::Router::new()
        .route(
            "/realms/ml/protocol/openid-connect/certs",
            axum::routing::get(
                |axum::extract::State(idp): axum::extract::State<Arc<Idp>>| async move {
                    idp.fetches.fetch_add(1, Ordering::SeqCst);
                    if idp.down.load(Ordering::SeqCst) {
                        return Err(axum::http::StatusCode::SERVICE_UNAVAILABLE);
                    }
                    Ok(axum::Json(idp.jwks.lock().unwrap().clone()))
                },
            ),
        )
        .with_state(Arc::clone(&idp));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://{}/realms/ml/protocol/openid-connect/certs",
        listener.local_addr().unwrap()
    );
    tokio::spawn(axum::serve(listener, app).into_future());
    let repo = common::repo(&[("mlp", None)]);
    let srv = Server::start(
        repo.path(),
        &[
            "--jwks",
            &url,
            "--jwt-issuer",
            ISS,
            "--jwt-audience",
            AUD,
            "--jwks-min-refresh-secs",
            "1",
        ],
    )
    .await;
    let c = reqwest::Client::new();
    let get = |token: String| {
        let r = c.get(srv.url("/v2/models/mlp")).bearer_auth(token).send();
        async move {
            let r = r.await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    let until_ok = |token: String, what: &'static str| {
        let get = &get;
        async move {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let (code, body) = get(token.clone()).await;
                if code == 200 {
                    return;
                }
                assert_eq!(code, 401, "{what}: {body}");
                assert!(Instant::now() < deadline, "{what}: never accepted: {body}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    let rsa = sign(
        Algorithm::RS256,
        "rsa-1",
        &k.rsa,
        &claims("infer", json!({})),
    );
    let ec = sign(Algorithm::ES256, "ec-1", &k.ec, &claims("infer", json!({})));
    // Fetched at start.
    until_ok(rsa.clone(), "a token of the provider's key").await;
    // A key the provider does not publish yet: refused, a new fetch asked for.
    let (code, body) = get(ec.clone()).await;
    assert_eq!(code, 401);
    assert!(body.contains("unknown key id 'ec-1'"), "{body}");
    // The provider rotates in a new key: a token signed by it is accepted without a
    // restart, fetched because its key id was unknown (not by the 300 s refresh).
    *idp.jwks.lock().unwrap() = only(&["rsa-1", "ec-1"]);
    until_ok(ec.clone(), "a token of the rotated-in key").await;

    // A flood of unknown key ids: fetches stay at one per --jwks-min-refresh-secs (1 s).
    let before = idp.fetches.load(Ordering::SeqCst);
    let started = Instant::now();
    for i in 0..40 {
        let t = sign(
            Algorithm::RS256,
            &format!("rsa-{i}-unknown"),
            &k.rsa,
            &claims("infer", json!({})),
        );
        assert_eq!(get(t).await.0, 401);
    }
    // Let a fetch the flood asked for finish before counting.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let fetched = idp.fetches.load(Ordering::SeqCst) - before;
    let allowed = 2 + started.elapsed().as_secs() as usize;
    assert!(
        (1..=allowed).contains(&fetched),
        "40 unknown key ids in {:?} made {fetched} fetches (at most {allowed})",
        started.elapsed()
    );

    // The provider down: the keys in force stay.
    idp.down.store(true, Ordering::SeqCst);
    let before = idp.fetches.load(Ordering::SeqCst);
    let t = sign(
        Algorithm::RS256,
        "rsa-new",
        &k.rsa,
        &claims("infer", json!({})),
    );
    assert_eq!(get(t).await.0, 401);
    let deadline = Instant::now() + Duration::from_secs(30);
    while idp.fetches.load(Ordering::SeqCst) == before {
        assert!(Instant::now() < deadline, "no fetch was tried");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(get(rsa.clone()).await.0, 200);
    assert_eq!(get(ec.clone()).await.0, 200);
    assert!(
        srv.log()
            .contains("fetching the JWKS failed; keeping the keys in force"),
        "{}",
        srv.log()
    );

    // The provider back, without the RSA key: once fetched, a token it signed is refused
    // though it was verified (and remembered) before.
    *idp.jwks.lock().unwrap() = only(&["ec-1"]);
    idp.down.store(false, Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let t = sign(
            Algorithm::RS256,
            "rsa-newer",
            &k.rsa,
            &claims("infer", json!({})),
        );
        let _ = get(t).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        if get(rsa.clone()).await.0 == 401 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "a dropped key's token stayed accepted"
        );
    }
    assert_eq!(get(ec).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_watch_takes_tokens_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let k = keys(dir.path());
    let jwks = dir.path().join("jwks.json");
    std::fs::write(&jwks, k.jwks.to_string()).unwrap();
    let ca = crate::tls::ca("watch test CA");
    let (cert, key) = crate::tls::server_cert(&ca);
    let (cert_path, key_path) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    std::fs::write(&cert_path, cert).unwrap();
    std::fs::write(&key_path, key).unwrap();
    let port = common::free_port();
    let log = dir.path().join("watch.log");
    // No broker needs to answer: the routes serve while the consumer waits for one.
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_inferd"))
        .args(["drift", "watch", "--kafka-brokers", "127.0.0.1:1"])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .arg("--jwks")
        .arg(&jwks)
        .args(["--jwt-issuer", ISS, "--jwt-audience", AUD])
        .arg("--tls-cert")
        .arg(&cert_path)
        .arg("--tls-key")
        .arg(&key_path)
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let c = crate::tls::https_client(&ca, None);
    let url = format!("https://localhost:{port}/api/drift");
    let deadline = Instant::now() + Duration::from_secs(30);
    let unauthenticated = loop {
        if let Ok(r) = c.get(&url).send().await {
            break r;
        }
        assert!(
            Instant::now() < deadline,
            "drift watch did not start:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(unauthenticated.status(), 401);
    let reader = sign(
        Algorithm::RS256,
        "rsa-1",
        &k.rsa,
        &claims("infer", json!({})),
    );
    let r = c.get(&url).bearer_auth(&reader).send().await.unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    // A change needs admin: the reader's token is refused, an admin's is taken.
    let put = format!("https://localhost:{port}/api/drift/mlp");
    let r = c
        .put(&put)
        .bearer_auth(&reader)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let admin = sign(Algorithm::ES256, "ec-1", &k.ec, &claims("admin", json!({})));
    let r = c
        .put(&put)
        .bearer_auth(&admin)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    // Plain HTTP gets no answer from a TLS port.
    assert!(
        reqwest::get(format!("http://127.0.0.1:{port}/api/drift"))
            .await
            .is_err()
    );
    let _ = child.kill();
    let _ = child.wait();
}
