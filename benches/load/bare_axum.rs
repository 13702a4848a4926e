//! The HTTP stack's own limit, for the load benchmark: an axum server on the same runtime
//! settings as inferd whose infer route parses the V2 JSON body and returns a fixed response,
//! without running any model.
//!
//! `cargo run --release --example bare_axum -- PORT`

use axum::Router;
use axum::body::Bytes;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::post;

const FIXED: &str = r#"{"model_name":"mlp","model_version":"1","outputs":[{"name":"probabilities","datatype":"FP32","shape":[1,10],"data":[0.1,0.1,0.1,0.1,0.1,0.1,0.1,0.1,0.1,0.1]}]}"#;

async fn infer(body: Bytes) -> impl IntoResponse {
    match serde_json::from_slice::<serde_json::Value>(&body) {
        Ok(v) if v.get("inputs").is_some() => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            FIXED,
        ),
        _ => (
            StatusCode::BAD_REQUEST,
            [(header::CONTENT_TYPE, "application/json")],
            r#"{"error":"bad request"}"#,
        ),
    }
}

#[tokio::main]
async fn main() {
    let port: u16 = std::env::args()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(8100);
    let app = Router::new()
        .route("/v2/models/{m}/infer", post(infer))
        .route("/v2/models/{m}/versions/{v}/infer", post(infer));
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("bind");
    eprintln!("bare_axum listening on 127.0.0.1:{port}");
    axum::serve(listener, app).await.expect("serve");
}
