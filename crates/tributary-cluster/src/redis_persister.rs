//! Checkpoints in Redis, fenced by epoch: a persister the whole fleet
//! shares.

use std::time::Duration;

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tributary_core::{Checkpoint, PersistError, Persister};

/// Saves one checkpoint; with an epoch (ARGV[4] >= 0), only if no newer
/// epoch is stored for the application, raising the stored one.
/// KEYS: the app's checkpoints (hash seq -> json), the app's meta (hash:
/// latest, epoch). Both keys carry the app id as hash tag: one slot.
/// Returns {0} when saved, {1, current epoch} when fenced.
const SAVE: &str = r"
local epoch = tonumber(ARGV[4])
if epoch >= 0 then
  local current = redis.call('HGET', KEYS[2], 'epoch')
  if current and tonumber(current) > epoch then
    return {1, current}
  end
  redis.call('HSET', KEYS[2], 'epoch', ARGV[4])
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
local latest = redis.call('HGET', KEYS[2], 'latest')
if (not latest) or tonumber(ARGV[1]) >= tonumber(latest) then
  redis.call('HSET', KEYS[2], 'latest', ARGV[1])
end
if ARGV[3] ~= '' then
  redis.call('HSET', KEYS[2], 'partition', ARGV[3])
end
return {0}
";

/// Raise the application's epoch (`KEYS[1]`, its meta hash) to `ARGV[1]`
/// unless it is higher; answer the epoch stored.
const RAISE: &str = r"
local current = redis.call('HGET', KEYS[1], 'epoch')
if current and tonumber(current) > tonumber(ARGV[1]) then
  return tonumber(current)
end
redis.call('HSET', KEYS[1], 'epoch', ARGV[1])
return tonumber(ARGV[1])
";

/// A [`Persister`] on Redis: every checkpoint of every application, saved
/// atomically with its fencing check by a server-side script, readable by
/// every process of a fleet. Keys live under a prefix (`tributary` unless
/// set): `<prefix>:{<app id>}:cp` (the checkpoints, by sequence id),
/// `<prefix>:{<app id>}:meta` (latest sequence id, epoch, partition) —
/// the braces make both one Redis Cluster slot — and `<prefix>:apps`
/// (the set of app ids).
///
/// Durability is the server's: with `appendonly yes` and `appendfsync
/// everysec` (the usual production setting) a crash of the Redis server
/// loses up to a second of checkpoints; a crash of a worker loses nothing
/// acknowledged. See `docs/persistence.md`.
#[derive(Clone)]
pub struct RedisPersister {
    conn: ConnectionManager,
    prefix: String,
    save: redis::Script,
    raise: redis::Script,
    timeout: Duration,
}

impl std::fmt::Debug for RedisPersister {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisPersister")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl RedisPersister {
    /// Connects to the server at `url`, with keys under `tributary`.
    ///
    /// # Errors
    ///
    /// [`PersistError::Backend`] when the URL is invalid or the server
    /// unreachable.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a cancelled call keeps nothing open.
    pub async fn connect(url: &str) -> Result<Self, PersistError> {
        Self::connect_with_prefix(url, "tributary").await
    }

    /// Connects to the server at `url`, with keys under `prefix`.
    ///
    /// # Errors
    ///
    /// [`PersistError::Backend`] when the URL is invalid or the server
    /// unreachable.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a cancelled call keeps nothing open.
    pub async fn connect_with_prefix(url: &str, prefix: &str) -> Result<Self, PersistError> {
        let client = redis::Client::open(url).map_err(PersistError::backend)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(5)))
            .set_number_of_retries(4)
            .set_min_delay(Duration::from_millis(20))
            .set_max_delay(Duration::from_secs(1));
        let conn = ConnectionManager::new_with_config(client, config)
            .await
            .map_err(PersistError::backend)?;
        Ok(RedisPersister {
            conn,
            prefix: prefix.to_owned(),
            save: redis::Script::new(SAVE),
            raise: redis::Script::new(RAISE),
            timeout: Duration::from_secs(10),
        })
    }

    fn checkpoints_key(&self, app_id: &str) -> String {
        format!("{}:{{{app_id}}}:cp", self.prefix)
    }

    fn meta_key(&self, app_id: &str) -> String {
        format!("{}:{{{app_id}}}:meta", self.prefix)
    }

    fn apps_key(&self) -> String {
        format!("{}:apps", self.prefix)
    }

    /// Run `call`, retrying (with backoff, for up to about five seconds)
    /// while the connection is broken: every call here is idempotent, and a
    /// server restart should not fail the task whose step it checkpoints.
    async fn timed<T, F, Fut>(&self, what: &str, call: F) -> Result<T, PersistError>
    where
        F: Fn(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let mut waits = backon::BackoffBuilder::build(
            backon::ExponentialBuilder::default()
                .with_min_delay(Duration::from_millis(50))
                .with_max_delay(Duration::from_secs(1))
                .with_max_times(8),
        );
        loop {
            let failure = match tokio::time::timeout(self.timeout, call(self.conn.clone())).await {
                Ok(Ok(v)) => return Ok(v),
                Ok(Err(e)) => {
                    let transient = e.is_io_error()
                        || e.is_connection_dropped()
                        || e.is_connection_refusal()
                        || e.is_timeout();
                    let message = format!("redis: {what}: {e}");
                    if !transient {
                        return Err(PersistError::backend(message));
                    }
                    message
                }
                Err(_) => format!("redis: {what}: no answer within {:?}", self.timeout),
            };
            match waits.next() {
                Some(wait) => {
                    tracing::debug!(error = %failure, ?wait, "checkpoint store unreachable; retrying");
                    tokio::time::sleep(wait).await;
                }
                None => return Err(PersistError::backend(failure)),
            }
        }
    }

    async fn write(&self, checkpoint: &Checkpoint, epoch: i64) -> Result<(), PersistError> {
        checkpoint.check_depth()?;
        let json = serde_json::to_string(checkpoint).map_err(PersistError::backend)?;
        let mut invocation = self.save.key(self.checkpoints_key(&checkpoint.app_id));
        invocation
            .key(self.meta_key(&checkpoint.app_id))
            .arg(checkpoint.sequence_id)
            .arg(json)
            .arg(checkpoint.partition_key.as_deref().unwrap_or(""))
            .arg(epoch);
        let invocation = &invocation;
        let reply: Vec<i64> = self
            .timed("save a checkpoint", |mut conn| async move {
                invocation.invoke_async(&mut conn).await
            })
            .await?;
        if reply.first() == Some(&1) {
            return Err(PersistError::Fenced {
                app_id: checkpoint.app_id.clone(),
                sequence_id: checkpoint.sequence_id,
                epoch: u64::try_from(epoch).unwrap_or_default(),
                current: reply
                    .get(1)
                    .and_then(|c| u64::try_from(*c).ok())
                    .unwrap_or_default(),
            });
        }
        let sadd = redis::cmd("SADD")
            .arg(self.apps_key())
            .arg(&checkpoint.app_id)
            .clone();
        let sadd = &sadd;
        let _: i64 = self
            .timed("record the app id", |mut conn| async move {
                sadd.query_async(&mut conn).await
            })
            .await?;
        Ok(())
    }
}

#[async_trait]
impl Persister for RedisPersister {
    async fn save(&self, checkpoint: &Checkpoint) -> Result<(), PersistError> {
        self.write(checkpoint, -1).await
    }

    async fn load(
        &self,
        app_id: &str,
        sequence_id: Option<u64>,
    ) -> Result<Option<Checkpoint>, PersistError> {
        let seq = match sequence_id {
            Some(seq) => seq,
            None => {
                let get = redis::cmd("HGET")
                    .arg(self.meta_key(app_id))
                    .arg("latest")
                    .clone();
                let get = &get;
                let latest: Option<u64> = self
                    .timed("read the latest sequence id", |mut conn| async move {
                        get.query_async(&mut conn).await
                    })
                    .await?;
                match latest {
                    Some(seq) => seq,
                    None => return Ok(None),
                }
            }
        };
        let get = redis::cmd("HGET")
            .arg(self.checkpoints_key(app_id))
            .arg(seq)
            .clone();
        let get = &get;
        let json: Option<String> = self
            .timed("load a checkpoint", |mut conn| async move {
                get.query_async(&mut conn).await
            })
            .await?;
        json.map(|j| serde_json::from_str(&j).map_err(PersistError::backend))
            .transpose()
    }

    async fn list_app_ids(&self, partition_key: Option<&str>) -> Result<Vec<String>, PersistError> {
        let members = redis::cmd("SMEMBERS").arg(self.apps_key()).clone();
        let members = &members;
        let mut ids: Vec<String> = self
            .timed("list app ids", |mut conn| async move {
                members.query_async(&mut conn).await
            })
            .await?;
        if let Some(partition) = partition_key {
            let mut kept = Vec::with_capacity(ids.len());
            for id in ids {
                let get = redis::cmd("HGET")
                    .arg(self.meta_key(&id))
                    .arg("partition")
                    .clone();
                let get = &get;
                let p: Option<String> = self
                    .timed("read a partition key", |mut conn| async move {
                        get.query_async(&mut conn).await
                    })
                    .await?;
                if p.as_deref() == Some(partition) {
                    kept.push(id);
                }
            }
            ids = kept;
        }
        ids.sort();
        Ok(ids)
    }

    fn supports_fencing(&self) -> bool {
        true
    }

    async fn raise_fence(&self, app_id: &str, epoch: u64) -> Result<u64, PersistError> {
        let epoch_i = epoch_arg(epoch)?;
        let mut invocation = self.raise.key(self.meta_key(app_id));
        invocation.arg(epoch_i);
        let invocation = &invocation;
        let stored: i64 = self
            .timed("raise the fencing epoch", |mut conn| async move {
                invocation.invoke_async(&mut conn).await
            })
            .await?;
        Ok(u64::try_from(stored).unwrap_or(epoch))
    }

    async fn save_fenced(&self, checkpoint: &Checkpoint, epoch: u64) -> Result<(), PersistError> {
        self.write(checkpoint, epoch_arg(epoch)?).await
    }
}

/// A fencing epoch as the integer the scripts compare.
fn epoch_arg(epoch: u64) -> Result<i64, PersistError> {
    i64::try_from(epoch)
        .map_err(|_| PersistError::backend(format!("fencing epoch {epoch} is out of range")))
}
