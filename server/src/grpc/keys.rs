//! `inferd.v1.Keys`: API keys made by an admin over gRPC — the same operations as REST
//! `/api/keys` ([`crate::http::keys`]), on the same [`Auth`].

use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::auth::{Auth, KeyInfo, Reach, Scope};
use crate::error::ApiError;
use crate::proto::inferd as pb;
use pb::keys_server::Keys;

pub use pb::keys_server::KeysServer;

pub struct KeysService {
    auth: Arc<Auth>,
}

impl KeysService {
    pub fn server(auth: Arc<Auth>) -> KeysServer<KeysService> {
        KeysServer::new(KeysService { auth })
    }
}

type Reply<T> = Result<Response<T>, Status>;

fn names(n: Option<pb::Names>) -> Option<Vec<String>> {
    n.map(|n| n.names)
}

fn to_pb(k: KeyInfo) -> pb::KeyInfo {
    let list = |l: Option<Vec<String>>| l.map(|names| pb::Names { names });
    pb::KeyInfo {
        name: k.name,
        scope: k.scope.as_str().into(),
        source: k.source.into(),
        created_ms: k.created_ms.unwrap_or(0),
        models: list(k.reach.models),
        collections: list(k.reach.collections),
        feature_views: list(k.reach.feature_views),
    }
}

#[tonic::async_trait]
impl Keys for KeysService {
    async fn list_keys(&self, _: Request<pb::ListKeysRequest>) -> Reply<pb::ListKeysResponse> {
        Ok(Response::new(pb::ListKeysResponse {
            keys: self.auth.list_keys().into_iter().map(to_pb).collect(),
        }))
    }

    async fn create_key(&self, r: Request<pb::CreateKeyRequest>) -> Reply<pb::CreateKeyResponse> {
        let r = r.into_inner();
        let scope = match r.scope.as_str() {
            "infer" => Scope::Infer,
            "write" => Scope::Write,
            "admin" => Scope::Admin,
            other => {
                return Err(Status::invalid_argument(format!(
                    "scope '{}' must be infer, write or admin",
                    other.escape_debug()
                )));
            }
        };
        let reach = Reach {
            models: names(r.models),
            collections: names(r.collections),
            feature_views: names(r.feature_views),
        };
        let secret = self
            .auth
            .create_key(&r.name, scope, reach)
            .map_err(ApiError::from)?;
        let key = self
            .auth
            .list_keys()
            .into_iter()
            .find(|k| k.name == r.name)
            .map(to_pb);
        Ok(Response::new(pb::CreateKeyResponse { key, secret }))
    }

    async fn revoke_key(&self, r: Request<pb::RevokeKeyRequest>) -> Reply<pb::RevokeKeyResponse> {
        self.auth
            .revoke_key(&r.into_inner().name)
            .map_err(ApiError::from)?;
        Ok(Response::new(pb::RevokeKeyResponse {}))
    }
}
