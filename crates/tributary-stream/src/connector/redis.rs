//! A connector over Redis keys.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use redis::aio::MultiplexedConnection;
use tokio::sync::OnceCell;

use super::{Connector, ConnectorDescriptor, Key};
use crate::error::ConnectorError;

/// Objects as Redis string values under `<prefix><key>`.
///
/// The connection is opened on first use, so constructing one (and building
/// one from a descriptor in a registry) does no I/O. Clones share the
/// connection.
#[derive(Debug, Clone)]
pub struct RedisConnector {
    url: String,
    prefix: String,
    client: redis::Client,
    conn: Arc<OnceCell<MultiplexedConnection>>,
}

fn backend(what: String, e: redis::RedisError) -> ConnectorError {
    ConnectorError::Backend {
        kind: RedisConnector::KIND,
        what,
        source: Box::new(e),
    }
}

impl RedisConnector {
    /// The kind name in descriptors.
    pub const KIND: &'static str = "redis";

    /// A connector to the server at `url` storing under keys that start with
    /// `prefix`.
    ///
    /// # Errors
    ///
    /// When `url` is not a valid Redis URL.
    pub fn new(url: impl Into<String>, prefix: impl Into<String>) -> Result<Self, ConnectorError> {
        let url = url.into();
        let client =
            redis::Client::open(url.as_str()).map_err(|e| ConnectorError::InvalidConfig {
                kind: Self::KIND.into(),
                reason: format!("bad url {url}: {e}"),
            })?;
        Ok(Self {
            url,
            prefix: prefix.into(),
            client,
            conn: Arc::default(),
        })
    }

    /// A factory for [`ConnectorRegistry::with_kind`](crate::ConnectorRegistry::with_kind)
    /// that builds Redis connectors from descriptors, but only for the
    /// listed server URLs.
    pub fn kind_for_urls<I, S>(
        urls: I,
    ) -> impl Fn(&serde_json::Value) -> Result<Arc<dyn Connector>, ConnectorError> + Send + Sync + 'static
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let urls: Vec<String> = urls.into_iter().map(Into::into).collect();
        move |config| {
            let field = |name: &str| {
                config.get(name).and_then(|v| v.as_str()).ok_or_else(|| {
                    ConnectorError::InvalidConfig {
                        kind: Self::KIND.into(),
                        reason: format!("missing string field `{name}`"),
                    }
                })
            };
            let url = field("url")?;
            if !urls.iter().any(|u| u == url) {
                return Err(ConnectorError::InvalidConfig {
                    kind: Self::KIND.into(),
                    reason: format!("server {url} is not trusted"),
                });
            }
            Ok(Arc::new(Self::new(url, field("prefix")?)?) as Arc<dyn Connector>)
        }
    }

    async fn conn(&self) -> Result<MultiplexedConnection, ConnectorError> {
        let conn = self
            .conn
            .get_or_try_init(|| async {
                let config = redis::AsyncConnectionConfig::new()
                    .set_response_timeout(Some(Duration::from_secs(30)))
                    .set_connection_timeout(Some(Duration::from_secs(5)));
                self.client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await
                    .map_err(|e| backend(format!("connect to {}", self.url), e))
            })
            .await?;
        Ok(conn.clone())
    }

    fn redis_key(&self, key: &Key) -> String {
        format!("{}{}", self.prefix, key)
    }
}

#[async_trait]
impl Connector for RedisConnector {
    fn descriptor(&self) -> ConnectorDescriptor {
        ConnectorDescriptor::new(
            Self::KIND,
            serde_json::json!({ "url": self.url, "prefix": self.prefix }),
        )
    }

    async fn put(&self, data: Bytes) -> Result<Key, ConnectorError> {
        let key = Key::random();
        let mut conn = self.conn().await?;
        redis::cmd("SET")
            .arg(self.redis_key(&key))
            .arg(data.as_ref())
            .query_async::<()>(&mut conn)
            .await
            .map_err(|e| backend(format!("put {key}"), e))?;
        Ok(key)
    }

    async fn put_batch(&self, data: Vec<Bytes>) -> Result<Vec<Key>, ConnectorError> {
        if data.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<Key> = data.iter().map(|_| Key::random()).collect();
        let mut cmd = redis::cmd("MSET");
        for (k, d) in keys.iter().zip(&data) {
            cmd.arg(self.redis_key(k)).arg(d.as_ref());
        }
        let mut conn = self.conn().await?;
        cmd.query_async::<()>(&mut conn)
            .await
            .map_err(|e| backend(format!("put a batch of {} objects", keys.len()), e))?;
        Ok(keys)
    }

    async fn get(&self, key: &Key) -> Result<Option<Bytes>, ConnectorError> {
        let mut conn = self.conn().await?;
        let v: Option<Vec<u8>> = redis::cmd("GET")
            .arg(self.redis_key(key))
            .query_async(&mut conn)
            .await
            .map_err(|e| backend(format!("get {key}"), e))?;
        Ok(v.map(Bytes::from))
    }

    async fn get_batch(&self, keys: &[Key]) -> Result<Vec<Option<Bytes>>, ConnectorError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut cmd = redis::cmd("MGET");
        for k in keys {
            cmd.arg(self.redis_key(k));
        }
        let mut conn = self.conn().await?;
        let v: Vec<Option<Vec<u8>>> = cmd
            .query_async(&mut conn)
            .await
            .map_err(|e| backend(format!("get a batch of {} objects", keys.len()), e))?;
        Ok(v.into_iter().map(|o| o.map(Bytes::from)).collect())
    }

    async fn exists(&self, key: &Key) -> Result<bool, ConnectorError> {
        let mut conn = self.conn().await?;
        let n: i64 = redis::cmd("EXISTS")
            .arg(self.redis_key(key))
            .query_async(&mut conn)
            .await
            .map_err(|e| backend(format!("exists {key}"), e))?;
        Ok(n > 0)
    }

    async fn evict(&self, key: &Key) -> Result<(), ConnectorError> {
        let mut conn = self.conn().await?;
        redis::cmd("DEL")
            .arg(self.redis_key(key))
            .query_async::<()>(&mut conn)
            .await
            .map_err(|e| backend(format!("evict {key}"), e))
    }
}
