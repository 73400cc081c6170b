//! A connector over Redis keys.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use redis::aio::ConnectionManager;
use tokio::sync::OnceCell;

use super::{Connector, ConnectorDescriptor, Key};
use crate::error::ConnectorError;
use crate::redis_client::{self, DEFAULT_TIMEOUT, Failure};

/// Objects as Redis string values under `<prefix><key>`.
///
/// The connection is opened on first use, so constructing one (and building
/// one from a descriptor in a registry) does no I/O. Clones share the
/// connection, which reconnects by itself when it breaks (a server restart,
/// an idle-connection kill): every operation is idempotent and is sent once
/// more after a broken connection. Every operation has a deadline
/// ([`with_timeout`](Self::with_timeout), 10 s by default) after which it
/// fails with [`ConnectorError::Timeout`].
#[derive(Debug, Clone)]
pub struct RedisConnector {
    url: String,
    prefix: String,
    timeout: Duration,
    conn: Arc<OnceCell<ConnectionManager>>,
}

fn backend(what: String, e: redis::RedisError) -> ConnectorError {
    ConnectorError::Backend {
        kind: RedisConnector::KIND,
        what,
        source: Box::new(e),
    }
}

fn failed(what: String, f: Failure) -> ConnectorError {
    match f {
        Failure::Redis(e) => backend(what, e),
        Failure::Timeout(after) => ConnectorError::Timeout {
            kind: RedisConnector::KIND,
            what,
            after,
        },
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
        redis::Client::open(url.as_str()).map_err(|e| ConnectorError::InvalidConfig {
            kind: Self::KIND.into(),
            reason: format!("bad url {url}: {e}"),
        })?;
        Ok(Self {
            url,
            prefix: prefix.into(),
            timeout: DEFAULT_TIMEOUT,
            conn: Arc::default(),
        })
    }

    /// How long one operation may wait for the server (default 10 s).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
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

    async fn conn(&self) -> Result<ConnectionManager, ConnectorError> {
        let conn = self
            .conn
            .get_or_try_init(|| async {
                redis_client::manager(&self.url)
                    .await
                    .map_err(|e| backend(format!("connect to {}", self.url), e))
            })
            .await?;
        Ok(conn.clone())
    }

    async fn query<T: redis::FromRedisValue>(
        &self,
        cmd: &redis::Cmd,
        what: impl FnOnce() -> String,
    ) -> Result<T, ConnectorError> {
        let mut conn = self.conn().await?;
        redis_client::idempotent(&mut conn, cmd, self.timeout)
            .await
            .map_err(|f| failed(what(), f))
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
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.redis_key(&key)).arg(data.as_ref());
        self.query::<()>(&cmd, || format!("put {key}")).await?;
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
        self.query::<()>(&cmd, || format!("put a batch of {} objects", keys.len()))
            .await?;
        Ok(keys)
    }

    async fn get(&self, key: &Key) -> Result<Option<Bytes>, ConnectorError> {
        let mut cmd = redis::cmd("GET");
        cmd.arg(self.redis_key(key));
        let v: Option<Vec<u8>> = self.query(&cmd, || format!("get {key}")).await?;
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
        let v: Vec<Option<Vec<u8>>> = self
            .query(&cmd, || format!("get a batch of {} objects", keys.len()))
            .await?;
        Ok(v.into_iter().map(|o| o.map(Bytes::from)).collect())
    }

    async fn exists(&self, key: &Key) -> Result<bool, ConnectorError> {
        let mut cmd = redis::cmd("EXISTS");
        cmd.arg(self.redis_key(key));
        let n: i64 = self.query(&cmd, || format!("exists {key}")).await?;
        Ok(n > 0)
    }

    async fn evict(&self, key: &Key) -> Result<(), ConnectorError> {
        let mut cmd = redis::cmd("DEL");
        cmd.arg(self.redis_key(key));
        self.query::<()>(&cmd, || format!("evict {key}")).await
    }
}
