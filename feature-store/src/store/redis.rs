//! The Redis online store (`redis` crate, async, one multiplexed connection that reconnects).
//!
//! Layout, as in Feast and Redis' feature-store guide: one hash per entity key, shared by the
//! views with the same join keys:
//!
//! ```text
//! <prefix>:<join keys, comma-joined>:<entity key>   e.g.  inferd:user_id:42
//!     _ts:<view>          event time of the view's row (µs since the epoch)
//!     <view>:<feature>    the value, as JSON text
//! ```
//!
//! Newest-event-wins runs server-side in one Lua script per row (compare `_ts:<view>`, then
//! `HSET` the row), so it is atomic against concurrent writers; a batch is one pipeline of
//! `EVALSHA`s, a read one pipeline of `HMGET`s. Scripts are reloaded after a Redis restart
//! (`NOSCRIPT`).

use std::time::Duration;

use futures::future::{BoxFuture, FutureExt};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{RedisError, Script};

use super::{OnlineStore, Row, StoredRow};
use crate::error::{Error, Result};
use crate::value::{EntityKey, Value};
use crate::view::FeatureView;

/// Sets the row unless an equal or newer event is stored. ARGV is exactly the `HSET`
/// field/value list: the view's `_ts` field and the event time, then feature/value pairs.
const WRITE_SCRIPT: &str = r"
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if cur and tonumber(cur) >= tonumber(ARGV[2]) then
  return 0
end
redis.call('HSET', KEYS[1], unpack(ARGV))
return 1
";

pub struct RedisStore {
    conn: ConnectionManager,
    prefix: String,
    /// The URL without its password, for error messages.
    addr: String,
    script: Script,
}

/// TLS to Redis beyond what a `rediss://` URL does by itself (the system's CAs).
#[derive(Clone, Default)]
pub struct RedisTls {
    /// PEM CA certificate(s) to trust instead of the system's.
    pub ca_cert: Option<Vec<u8>>,
    /// PEM client certificate and key, for a Redis with `tls-auth-clients yes`.
    pub client: Option<(Vec<u8>, Vec<u8>)>,
}

/// A Redis client for `url` (`redis://` or `rediss://`), with `tls`'s CA and client
/// certificate for a `rediss://` one. Errors name the URL without its password.
pub fn client(url: &str, tls: Option<RedisTls>) -> Result<redis::Client> {
    let addr = redact(url);
    match tls {
        None => redis::Client::open(url),
        Some(t) => {
            if !url.starts_with("rediss://") {
                return Err(Error::Config(format!(
                    "{addr}: TLS settings need a rediss:// URL"
                )));
            }
            redis::Client::build_with_tls(
                url,
                redis::TlsCertificates {
                    client_tls: t
                        .client
                        .map(|(client_cert, client_key)| redis::ClientTlsConfig {
                            client_cert,
                            client_key,
                        }),
                    root_cert: t.ca_cert,
                },
            )
        }
    }
    .map_err(|e| Error::Config(format!("URL {addr}: {e}")))
}

impl RedisStore {
    /// Connects lazily: the server starts (and reads fail clearly) while Redis is down.
    pub fn open(url: &str, prefix: &str) -> Result<RedisStore> {
        RedisStore::open_with(url, prefix, None)
    }

    /// [`RedisStore::open`], and for a `rediss://` URL the CA to trust instead of the
    /// system's and a client certificate (PEM), when Redis asks for one.
    pub fn open_with(url: &str, prefix: &str, tls: Option<RedisTls>) -> Result<RedisStore> {
        let addr = redact(url);
        let client = client(url, tls).map_err(|e| Error::Config(format!("online store {e}")))?;
        // Fail fast while Redis is down (reads answer 503 in about a second) and reconnect on
        // the next call; the ingester retries writes itself.
        let config = ConnectionManagerConfig::new()
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(500))
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(Duration::from_secs(5)));
        let conn = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|e| Error::Config(format!("online store {addr}: {e}")))?;
        Ok(RedisStore {
            conn,
            prefix: prefix.to_owned(),
            addr,
            script: Script::new(WRITE_SCRIPT),
        })
    }

    /// Round-trips a `PING` (start-up check).
    pub async fn ping(&self) -> Result<()> {
        let mut c = self.conn.clone();
        redis::cmd("PING")
            .query_async::<String>(&mut c)
            .await
            .map(drop)
            .map_err(|e| self.error(e))
    }

    fn hash_key(&self, view: &FeatureView, key: &EntityKey) -> String {
        format!("{}:{}:{}", self.prefix, view.entity_group, key.as_str())
    }

    fn error(&self, e: RedisError) -> Error {
        let down = e.is_io_error()
            || e.is_connection_refusal()
            || e.is_timeout()
            || e.is_connection_dropped()
            || matches!(e.code(), Some("LOADING" | "MASTERDOWN" | "TRYAGAIN"));
        let msg = format!("redis at {}: {e}", self.addr);
        if down {
            Error::Unavailable(msg)
        } else {
            Error::Store(msg)
        }
    }

    async fn write_rows(&self, view: &FeatureView, rows: &[Row]) -> Result<Vec<bool>> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let ts_field = format!("_ts:{}", view.name);
        let mut pipe = redis::pipe();
        let mut buf = Vec::new();
        for row in rows {
            let cmd = pipe
                .cmd("EVALSHA")
                .arg(self.script.get_hash())
                .arg(1)
                .arg(self.hash_key(view, &row.key))
                .arg(&ts_field)
                .arg(row.event_ts);
            for (field, v) in view.refs.iter().zip(&row.values) {
                buf.clear();
                serde_json::to_writer(&mut buf, &v.to_json()).expect("JSON to a Vec");
                cmd.arg(field).arg(&buf[..]);
            }
        }
        let mut conn = self.conn.clone();
        let applied: Vec<i64> = match pipe.query_async(&mut conn).await {
            Ok(r) => r,
            Err(e) if e.code() == Some("NOSCRIPT") => {
                // A restarted (or flushed) Redis forgot the script: load it, run again. No
                // row was applied (every EVALSHA failed alike), and rows are idempotent.
                self.script
                    .load_async(&mut conn)
                    .await
                    .map_err(|e| self.error(e))?;
                pipe.query_async(&mut conn)
                    .await
                    .map_err(|e| self.error(e))?
            }
            Err(e) => return Err(self.error(e)),
        };
        Ok(applied.into_iter().map(|a| a == 1).collect())
    }

    async fn read_rows(
        &self,
        view: &FeatureView,
        keys: &[EntityKey],
        features: &[usize],
    ) -> Result<Vec<Option<StoredRow>>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let ts_field = format!("_ts:{}", view.name);
        let mut pipe = redis::pipe();
        for key in keys {
            let cmd = pipe
                .cmd("HMGET")
                .arg(self.hash_key(view, key))
                .arg(&ts_field);
            for &i in features {
                cmd.arg(&view.refs[i]);
            }
        }
        let mut conn = self.conn.clone();
        let replies: Vec<Vec<Option<String>>> = pipe
            .query_async(&mut conn)
            .await
            .map_err(|e| self.error(e))?;
        replies
            .into_iter()
            .map(|fields| {
                let mut it = fields.into_iter();
                let Some(Some(ts)) = it.next() else {
                    return Ok(None);
                };
                let event_ts = ts.parse().map_err(|_| {
                    Error::Store(format!(
                        "redis at {}: '{ts_field}' holds '{ts}', not a timestamp",
                        self.addr
                    ))
                })?;
                let values = features
                    .iter()
                    .zip(it)
                    .map(|(&i, text)| self.decode(view, i, text.as_deref()))
                    .collect::<Result<_>>()?;
                Ok(Some(StoredRow { event_ts, values }))
            })
            .collect()
    }

    fn decode(&self, view: &FeatureView, i: usize, text: Option<&str>) -> Result<Value> {
        let Some(text) = text else {
            return Ok(Value::Null);
        };
        let bad = |m: String| {
            Error::Store(format!(
                "redis at {}: field '{}' holds an unreadable value: {m}",
                self.addr, view.refs[i]
            ))
        };
        let json: serde_json::Value = serde_json::from_str(text).map_err(|e| bad(e.to_string()))?;
        Value::from_json(view.features()[i].ty, &json).map_err(bad)
    }
}

impl OnlineStore for RedisStore {
    fn kind(&self) -> &'static str {
        "redis"
    }

    fn write<'a>(
        &'a self,
        view: &'a FeatureView,
        rows: &'a [Row],
    ) -> BoxFuture<'a, Result<Vec<bool>>> {
        self.write_rows(view, rows).boxed()
    }

    fn read<'a>(
        &'a self,
        view: &'a FeatureView,
        keys: &'a [EntityKey],
        features: &'a [usize],
    ) -> BoxFuture<'a, Result<Vec<Option<StoredRow>>>> {
        self.read_rows(view, keys, features).boxed()
    }
}

/// `redis://user:secret@host` → `redis://user:***@host`.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            super::redact("redis://u:pw@h:6379/0"),
            "redis://u:***@h:6379/0"
        );
        assert_eq!(super::redact("redis://h:6379"), "redis://h:6379");
    }
}
