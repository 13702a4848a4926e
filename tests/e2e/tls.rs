//! TLS and mTLS against the real binary, with certificate authorities made by the test
//! (rcgen): REST, gRPC and metrics over TLS; plain clients and clients that trust another CA
//! refused; a certificate rotated on disk served to the next connection while a connection
//! opened before keeps working; mTLS refusing a certificate from another CA or none, and a
//! listed certificate name being a principal with its scope.

use std::path::Path;
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use serde_json::{Value, json};
use server::proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
use server::proto::inference::{ServerLiveRequest, ServerMetadataRequest};
use tonic::Code;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::common::{self, Server};

const READER: &str = "tls-reader-secret";

/// A test certificate authority.
pub(crate) struct Ca {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

pub(crate) fn ca(name: &str) -> Ca {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, name);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let key = KeyPair::generate().unwrap();
    let pem = p.self_signed(&key).unwrap().pem();
    Ca {
        pem,
        issuer: Issuer::new(p, key),
    }
}

/// A certificate signed by `ca` (PEM certificate, PEM key).
fn leaf(ca: &Ca, cn: &str, sans: Vec<SanType>, usage: ExtendedKeyUsagePurpose) -> (String, String) {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.subject_alt_names = sans;
    p.extended_key_usages = vec![usage];
    p.use_authority_key_identifier_extension = true;
    let key = KeyPair::generate().unwrap();
    let cert = p.signed_by(&key, &ca.issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

pub(crate) fn server_cert(ca: &Ca) -> (String, String) {
    leaf(
        ca,
        "inferd test server",
        vec![
            SanType::IpAddress([127, 0, 0, 1].into()),
            SanType::DnsName("localhost".try_into().unwrap()),
        ],
        ExtendedKeyUsagePurpose::ServerAuth,
    )
}

fn client_cert(ca: &Ca, uri: &str) -> (String, String) {
    leaf(
        ca,
        "inferd test client",
        vec![SanType::URI(uri.try_into().unwrap())],
        ExtendedKeyUsagePurpose::ClientAuth,
    )
}

/// Written aside and renamed, as a certificate manager does: never half a file.
fn write(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// A client that trusts `ca` only (no system roots), optionally presenting a certificate.
pub(crate) fn https_client(ca: &Ca, identity: Option<&(String, String)>) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca.pem.as_bytes()).unwrap());
    if let Some((cert, key)) = identity {
        b = b.identity(reqwest::Identity::from_pem(format!("{cert}\n{key}").as_bytes()).unwrap());
    }
    b.build().unwrap()
}

async fn grpc_channel(
    srv: &Server,
    ca: &Ca,
    identity: Option<&(String, String)>,
) -> Result<Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&ca.pem))
        .domain_name("localhost");
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    Endpoint::from_shared(srv.grpc_url())
        .unwrap()
        .tls_config(tls)?
        .connect()
        .await
}

fn with_key<T>(msg: T, key: &str) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {key}").parse().unwrap());
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_port_speaks_tls_and_a_rotated_certificate_is_served_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (cert_file, key_file) = (dir.path().join("server.crt"), dir.path().join("server.key"));
    let keys = dir.path().join("keys.json");
    write(
        &keys,
        &json!({"keys": [common::key_entry("reader", READER, "infer")]}).to_string(),
    );
    let ca1 = ca("inferd test CA 1");
    let (cert, key) = server_cert(&ca1);
    write(&cert_file, &cert);
    write(&key_file, &key);
    let repo = common::repo(&[("mlp", None)]);
    let old_client = https_client(&ca1, None);
    let srv = Server::start_tls(
        repo.path(),
        &[
            "--api-keys",
            keys.to_str().unwrap(),
            "--tls-cert",
            cert_file.to_str().unwrap(),
            "--tls-key",
            key_file.to_str().unwrap(),
        ],
        &old_client,
    )
    .await;

    // REST: health open, the rest asks for a key, over TLS.
    let get = |c: &reqwest::Client, path: &str, key: Option<&str>| {
        let mut r = c.get(srv.url(path));
        if let Some(k) = key {
            r = r.bearer_auth(k);
        }
        r.send()
    };
    assert_eq!(
        get(&old_client, "/v2/health/ready", None)
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        get(&old_client, "/v2/models/mlp", None)
            .await
            .unwrap()
            .status(),
        401
    );
    let r = get(&old_client, "/v2/models/mlp", Some(READER))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["name"], "mlp");
    // A plain-HTTP client gets no answer from a TLS port; nor does one trusting another CA.
    let plain = reqwest::get(format!("http://127.0.0.1:{}/v2/health/ready", srv.http)).await;
    assert!(plain.is_err() || plain.unwrap().status() != 200);
    let stranger = https_client(&ca("some other CA"), None);
    assert!(get(&stranger, "/v2/health/ready", None).await.is_err());
    // Metrics, over TLS too.
    let m = old_client
        .get(format!("https://127.0.0.1:{}/metrics", srv.metrics))
        .send()
        .await
        .unwrap();
    assert_eq!(m.status(), 200);
    assert!(m.text().await.unwrap().contains("inferd_"));

    // gRPC over TLS (ALPN h2): the same keys decide.
    let ch = grpc_channel(&srv, &ca1, None).await.unwrap();
    let mut g = GrpcInferenceServiceClient::new(ch);
    assert!(
        g.server_live(ServerLiveRequest {})
            .await
            .unwrap()
            .into_inner()
            .live
    );
    let e = g
        .server_metadata(ServerMetadataRequest {})
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    let md = g
        .server_metadata(with_key(ServerMetadataRequest {}, READER))
        .await
        .unwrap();
    assert_eq!(md.into_inner().name, "inferd");

    // Rotate: a certificate from another CA written over the files. New connections get
    // it (a client trusting only the new CA succeeds), with no restart; the connection
    // the old client opened before keeps serving it (a new handshake would fail: it trusts
    // only the old CA).
    let ca2 = ca("inferd test CA 2");
    let (cert2, key2) = server_cert(&ca2);
    write(&key_file, &key2);
    write(&cert_file, &cert2);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        // A new client each time: a fresh connection, a fresh handshake.
        if let Ok(r) = get(&https_client(&ca2, None), "/v2/health/live", None).await {
            assert_eq!(r.status(), 200);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the rotated certificate was never served:\n{}",
            srv.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = get(&old_client, "/v2/models/mlp", Some(READER))
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        200,
        "the connection opened before the rotation was dropped"
    );
    assert!(
        get(&https_client(&ca1, None), "/v2/health/live", None)
            .await
            .is_err(),
        "a new connection still got the old certificate"
    );
    let ch = grpc_channel(&srv, &ca2, None).await.unwrap();
    assert!(
        GrpcInferenceServiceClient::new(ch)
            .server_live(ServerLiveRequest {})
            .await
            .unwrap()
            .into_inner()
            .live
    );
    // The old gRPC channel's connection was opened before the rotation: still served.
    assert!(
        g.server_live(ServerLiveRequest {})
            .await
            .unwrap()
            .into_inner()
            .live
    );

    // A key and certificate that do not pair are refused, and the certificate in force stays.
    let (_, stray_key) = server_cert(&ca2);
    write(&key_file, &stray_key);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        get(&https_client(&ca2, None), "/v2/health/live", None)
            .await
            .unwrap()
            .status(),
        200
    );
    assert!(
        srv.log().contains("keeping the certificate in force"),
        "{}",
        srv.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_takes_only_certificates_from_its_ca_and_maps_their_names_to_scopes() {
    let dir = tempfile::tempdir().unwrap();
    let file = |n: &str, text: &str| {
        let p = dir.path().join(n);
        write(&p, text);
        p.to_str().unwrap().to_owned()
    };
    let server_ca = ca("inferd server CA");
    let clients_ca = ca("inferd clients CA");
    let (cert, key) = server_cert(&server_ca);
    let ranker = client_cert(&clients_ca, "spiffe://test.example/ns/ml/sa/ranker");
    let unlisted = client_cert(&clients_ca, "spiffe://test.example/ns/ml/sa/unlisted");
    let forged = client_cert(
        &ca("an attacker's CA"),
        "spiffe://test.example/ns/ml/sa/ranker",
    );
    let keys = file(
        "keys.json",
        &json!({
            "keys": [common::key_entry("reader", READER, "infer")],
            "certificates": [{"name": "spiffe://test.example/ns/ml/sa/ranker", "scopes": ["infer"]}],
        })
        .to_string(),
    );
    let args = [
        "--api-keys".to_owned(),
        keys,
        "--tls-cert".into(),
        file("server.crt", &cert),
        "--tls-key".into(),
        file("server.key", &key),
        "--tls-client-ca".into(),
        file("clients-ca.crt", &clients_ca.pem),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let repo = common::repo(&[("mlp", None)]);
    let as_ranker = https_client(&server_ca, Some(&ranker));
    let srv = Server::start_tls(repo.path(), &args, &as_ranker).await;
    let get = |c: &reqwest::Client, method: reqwest::Method, path: &str| {
        c.request(method, srv.url(path)).send()
    };
    use reqwest::Method as M;

    // The listed certificate is the principal: its scope (infer) decides, no key needed.
    assert_eq!(
        get(&as_ranker, M::GET, "/v2/models/mlp")
            .await
            .unwrap()
            .status(),
        200
    );
    let r = as_ranker
        .post(srv.url("/v2/models/mlp/infer"))
        .json(&json!({"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": vec![0.5; 64]}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let r = get(&as_ranker, M::DELETE, "/api/models/mlp").await.unwrap();
    assert_eq!(r.status(), 403);
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("spiffe://test.example/ns/ml/sa/ranker")
    );
    // A certificate from the right CA whose names are not listed: 401, saying what to list.
    let r = get(
        &https_client(&server_ca, Some(&unlisted)),
        M::GET,
        "/v2/models/mlp",
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.text().await.unwrap().contains("is not a principal"));
    // ... but it may still authenticate with a key.
    let r = https_client(&server_ca, Some(&unlisted))
        .get(srv.url("/v2/models/mlp"))
        .bearer_auth(READER)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // No certificate, or one from another CA: no connection at all.
    assert!(
        get(&https_client(&server_ca, None), M::GET, "/v2/health/live")
            .await
            .is_err()
    );
    assert!(
        get(
            &https_client(&server_ca, Some(&forged)),
            M::GET,
            "/v2/health/live"
        )
        .await
        .is_err()
    );

    // gRPC: the same.
    let ch = grpc_channel(&srv, &server_ca, Some(&ranker)).await.unwrap();
    let md = GrpcInferenceServiceClient::new(ch)
        .server_metadata(ServerMetadataRequest {})
        .await
        .unwrap();
    assert_eq!(md.into_inner().name, "inferd");
    for identity in [None, Some(&forged)] {
        let refused = match grpc_channel(&srv, &server_ca, identity).await {
            Err(_) => true,
            Ok(ch) => GrpcInferenceServiceClient::new(ch)
                .server_live(ServerLiveRequest {})
                .await
                .is_err(),
        };
        assert!(
            refused,
            "a client without a valid certificate was served over gRPC"
        );
    }
    // The server kept serving throughout.
    assert_eq!(
        get(&as_ranker, M::GET, "/v2/health/ready")
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_online_store_is_reached_over_tls_with_a_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let path = |n: &str| dir.path().join(n);
    let ca = ca("redis test CA");
    let (cert, key) = server_cert(&ca);
    let client = leaf(
        &ca,
        "inferd",
        vec![SanType::DnsName("inferd".try_into().unwrap())],
        ExtendedKeyUsagePurpose::ClientAuth,
    );
    for (n, text) in [
        ("ca.crt", &ca.pem),
        ("redis.crt", &cert),
        ("redis.key", &key),
        ("client.crt", &client.0),
        ("client.key", &client.1),
    ] {
        write(&path(n), text);
    }
    // A real redis-server speaking TLS only, asking every client for a certificate.
    let port = common::free_port();
    let log = std::fs::File::create(path("redis.log")).unwrap();
    let redis = std::process::Command::new(
        std::env::var("INFERD_REDIS_SERVER").unwrap_or_else(|_| "redis-server".into()),
    )
    .args([
        "--port",
        "0",
        "--tls-port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
    ])
    .arg("--tls-cert-file")
    .arg(path("redis.crt"))
    .arg("--tls-key-file")
    .arg(path("redis.key"))
    .arg("--tls-ca-cert-file")
    .arg(path("ca.crt"))
    .args([
        "--tls-auth-clients",
        "yes",
        "--save",
        "",
        "--appendonly",
        "no",
    ])
    .arg("--dir")
    .arg(dir.path())
    .stdout(log)
    .spawn()
    .expect("redis-server");
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _redis = Kill(redis);
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "redis-server did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let store = format!("rediss://127.0.0.1:{port}/0");
    let repo = common::repo(&[]);
    let start = |extra: Vec<String>| {
        let store = store.clone();
        let repo = repo.path().to_owned();
        async move {
            let mut args = vec!["--feature-store".to_owned(), store];
            args.extend(extra);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            Server::start(&repo, &args).await
        }
    };
    let p = |n: &str| path(n).to_str().unwrap().to_owned();
    let srv = start(vec![
        "--redis-ca-cert".into(),
        p("ca.crt"),
        "--redis-client-cert".into(),
        p("client.crt"),
        "--redis-client-key".into(),
        p("client.key"),
    ])
    .await;
    let c = reqwest::Client::new();
    let r = c
        .put(srv.url("/api/feature-views/users"))
        .json(&json!({"entities": ["user_id"], "ttl": "1h", "features": [{"name": "n", "type": "int64"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64;
    let (s, r) = srv
        .post(
            "/api/features/push",
            &json!({"feature_view": "users", "rows": [{"user_id": "u1", "event_timestamp": now, "n": 42}]}),
        )
        .await;
    assert_eq!((s, &r), (200, &json!({"written": 1, "stale": 0})));
    let (s, r) = srv
        .post(
            "/api/features/get-online-features",
            &json!({"features": ["users:n"], "entities": {"user_id": ["u1"]}}),
        )
        .await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["results"][1]["values"], json!([42]), "{r}");
    drop(srv);

    // Without the client certificate, Redis refuses the connection: reads answer 503, and
    // the server keeps serving everything else.
    let srv = start(vec!["--redis-ca-cert".into(), p("ca.crt")]).await;
    let r = c
        .put(srv.url("/api/feature-views/users"))
        .json(&json!({"entities": ["user_id"], "ttl": "1h", "features": [{"name": "n", "type": "int64"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let (s, r) = srv
        .post(
            "/api/features/get-online-features",
            &json!({"features": ["users:n"], "entities": {"user_id": ["u1"]}}),
        )
        .await;
    assert_eq!(s, 503, "{r}");
    assert_eq!(
        c.get(srv.url("/v2/health/ready"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

/// A TLS front for a broker that speaks only plain Kafka (tansu): it accepts TLS with
/// `cert`, asks for a client certificate from `client_ca`, and relays each connection to
/// `upstream`. Returns how many handshakes succeeded.
fn kafka_tls_front(
    listener: std::net::TcpListener,
    cert: &(String, String),
    client_ca: &Ca,
    upstream: u16,
) -> std::sync::Arc<std::sync::atomic::AtomicUsize> {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert.0.as_bytes())
        .collect::<Result<_, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(cert.1.as_bytes()).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(client_ca.pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(roots.into(), provider.clone())
            .build()
            .unwrap();
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    let handshakes = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = handshakes.clone();
    listener.set_nonblocking(true).unwrap();
    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let (acceptor, counted) = (acceptor.clone(), counted.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let Ok(mut broker) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await
                else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut broker).await;
            });
        }
    });
    handshakes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_is_reached_over_tls_with_a_client_certificate() {
    use feature_store::testkit::Tansu;
    let dir = tempfile::tempdir().unwrap();
    let path = |n: &str| dir.path().join(n).to_str().unwrap().to_owned();
    let ca = ca("kafka test CA");
    let broker_cert = server_cert(&ca);
    let client = leaf(
        &ca,
        "inferd",
        vec![SanType::DnsName("inferd".try_into().unwrap())],
        ExtendedKeyUsagePurpose::ClientAuth,
    );
    for (n, text) in [
        ("ca.crt", &ca.pem),
        ("client.crt", &client.0),
        ("client.key", &client.1),
    ] {
        write(Path::new(&path(n)), text);
    }
    let tls = [
        ("security.protocol", "ssl"),
        ("ssl.ca.location", &*path("ca.crt")),
        ("ssl.certificate.location", &*path("client.crt")),
        ("ssl.key.location", &*path("client.key")),
    ];
    // The broker advertises the TLS front only: every client, ours and inferd's, must speak
    // TLS with a certificate from the CA to reach it at all.
    let front = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let front_port = front.local_addr().unwrap().port();
    let tansu = Tansu::behind(front_port, &tls);
    let handshakes = kafka_tls_front(front, &broker_cert, &ca, tansu.port);
    tansu.create_topics(&["users"], 1).await;
    let repo = common::repo(&[]);
    let mut args = vec![
        "--kafka-brokers".to_owned(),
        tansu.brokers(),
        "--kafka-group".into(),
        "e2e-tls".into(),
    ];
    for (k, v) in tls {
        args.extend(["--kafka-option".into(), format!("{k}={v}")]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let srv = Server::start(repo.path(), &args).await;
    common::feed_users_view(&srv, &tansu, 42).await;
    let read = json!({"features": ["users:n"], "entities": {"user_id": ["u1"]}});
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (s, r) = srv.post("/api/features/get-online-features", &read).await;
        if s == 200 && r["results"][1]["values"] == json!([42]) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the event never arrived through the TLS front: {r}\n{}",
            srv.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Ours (admin, producer) and inferd's (consumer, dead-letter producer) connections.
    assert!(handshakes.load(std::sync::atomic::Ordering::SeqCst) >= 3);
    // A property inferd sets itself is refused with the flag to use instead.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_inferd"))
        .args(["serve", "--no-auth", "--kafka-option", "group.id=x"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--kafka-group"), "{err}");
}
