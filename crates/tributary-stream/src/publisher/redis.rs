//! Redis Streams: one stream per topic, consumer groups for durable,
//! acknowledged delivery.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use redis::aio::MultiplexedConnection;
use redis::streams::{StreamAutoClaimReply, StreamId, StreamReadReply};

use super::{Delivery, Publisher, Subscriber};
use crate::error::TransportError;

const FIELD: &str = "e";

fn backend(topic: &str, e: redis::RedisError) -> TransportError {
    TransportError::Backend {
        backend: "redis",
        topic: topic.to_owned(),
        source: Box::new(e),
    }
}

async fn connect(
    url: &str,
    response_timeout: Option<Duration>,
) -> Result<MultiplexedConnection, TransportError> {
    let client = redis::Client::open(url).map_err(|e| backend("*", e))?;
    let config = redis::AsyncConnectionConfig::new()
        .set_response_timeout(response_timeout)
        .set_connection_timeout(Some(Duration::from_secs(5)));
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .map_err(|e| backend("*", e))
}

/// Publishes each message with `XADD` to the Redis stream `<prefix><topic>`.
///
/// Redis Streams keep messages until they are deleted, so nothing is lost
/// when no consumer is listening (unlike Redis pub/sub). With
/// [`with_max_len`](Self::with_max_len) the publisher waits while the
/// stream holds that many entries; pair it with
/// [`RedisSubscriber::delete_acked`] so that acknowledged entries leave the
/// stream and a producer is slowed down exactly as far as its consumers lag.
#[derive(Debug, Clone)]
pub struct RedisPublisher {
    conn: MultiplexedConnection,
    prefix: String,
    max_len: Option<(usize, Duration)>,
}

impl RedisPublisher {
    /// Connects to the server at `url`; topics map to streams `<prefix><topic>`.
    ///
    /// # Errors
    ///
    /// When the URL is invalid or the server unreachable.
    pub async fn connect(url: &str, prefix: impl Into<String>) -> Result<Self, TransportError> {
        Ok(Self {
            conn: connect(url, Some(Duration::from_secs(30))).await?,
            prefix: prefix.into(),
            max_len: None,
        })
    }

    /// Waits before publishing while a topic's stream holds `max_len`
    /// entries or more, and fails with [`TransportError::Backpressure`]
    /// after waiting `timeout`.
    pub fn with_max_len(mut self, max_len: usize, timeout: Duration) -> Self {
        self.max_len = Some((max_len, timeout));
        self
    }

    async fn wait_for_room(&self, topic: &str, key: &str) -> Result<(), TransportError> {
        let Some((max_len, timeout)) = self.max_len else {
            return Ok(());
        };
        let started = tokio::time::Instant::now();
        let mut pause = Duration::from_millis(5);
        loop {
            let mut conn = self.conn.clone();
            let len: usize = redis::cmd("XLEN")
                .arg(key)
                .query_async(&mut conn)
                .await
                .map_err(|e| backend(topic, e))?;
            if len < max_len {
                return Ok(());
            }
            let waited = started.elapsed();
            if waited >= timeout {
                return Err(TransportError::Backpressure {
                    topic: topic.to_owned(),
                    waited,
                });
            }
            tokio::time::sleep(pause.min(timeout - waited)).await;
            pause = (pause * 2).min(Duration::from_millis(200));
        }
    }
}

#[async_trait]
impl Publisher for RedisPublisher {
    async fn publish(&self, topic: &str, message: Bytes) -> Result<(), TransportError> {
        let key = format!("{}{}", self.prefix, topic);
        self.wait_for_room(topic, &key).await?;
        let mut conn = self.conn.clone();
        redis::cmd("XADD")
            .arg(&key)
            .arg("*")
            .arg(FIELD)
            .arg(message.as_ref())
            .query_async::<String>(&mut conn)
            .await
            .map_err(|e| backend(topic, e))?;
        Ok(())
    }
}

struct Pending {
    key: String,
    entry: String,
    topic: String,
}

/// Receives the streams `<prefix><topic>` as member `consumer` of the
/// consumer group `group`.
///
/// The group is created (from the start of each stream) if it does not
/// exist, so a subscriber also receives what was published before it first
/// connected. Every entry stays in the group's pending list until it is
/// acknowledged; a subscriber started again with the same `consumer` name
/// first receives its own pending entries again, and with
/// [`claim_idle`](Self::claim_idle) it also takes over entries that other
/// (crashed) consumers of the group left pending for that long.
pub struct RedisSubscriber {
    conn: MultiplexedConnection,
    topics: Vec<String>,
    keys: Vec<String>,
    group: String,
    consumer: String,
    block: Duration,
    claim_idle: Option<Duration>,
    delete_acked: bool,
    check_pending: bool,
    buffer: VecDeque<Delivery>,
    inflight: HashMap<u64, Pending>,
    inflight_entries: HashSet<(String, String)>,
    next_id: u64,
}

impl std::fmt::Debug for RedisSubscriber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisSubscriber")
            .field("topics", &self.topics)
            .field("group", &self.group)
            .field("consumer", &self.consumer)
            .field("inflight", &self.inflight.len())
            .finish_non_exhaustive()
    }
}

impl RedisSubscriber {
    /// Connects and joins (creating if needed) `group` on every topic.
    ///
    /// # Errors
    ///
    /// When the server is unreachable or a group cannot be created.
    pub async fn connect<I, S>(
        url: &str,
        prefix: &str,
        group: impl Into<String>,
        consumer: impl Into<String>,
        topics: I,
    ) -> Result<Self, TransportError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        // Blocking reads must not hit a response timeout.
        let mut conn = connect(url, None).await?;
        let topics: Vec<String> = topics.into_iter().map(Into::into).collect();
        let keys: Vec<String> = topics.iter().map(|t| format!("{prefix}{t}")).collect();
        let group = group.into();
        for (topic, key) in topics.iter().zip(&keys) {
            let created = redis::cmd("XGROUP")
                .arg("CREATE")
                .arg(key)
                .arg(&group)
                .arg("0")
                .arg("MKSTREAM")
                .query_async::<()>(&mut conn)
                .await;
            match created {
                Ok(()) => {}
                Err(e) if e.code() == Some("BUSYGROUP") => {}
                Err(e) => return Err(backend(topic, e)),
            }
        }
        Ok(Self {
            conn,
            topics,
            keys,
            group,
            consumer: consumer.into(),
            block: Duration::from_secs(5),
            claim_idle: None,
            delete_acked: false,
            check_pending: true,
            buffer: VecDeque::new(),
            inflight: HashMap::new(),
            inflight_entries: HashSet::new(),
            next_id: 0,
        })
    }

    /// Also claims entries other consumers of the group left unacknowledged
    /// for at least `idle` (checked when this subscriber starts and whenever
    /// a blocking read comes back empty).
    pub fn claim_idle(mut self, idle: Duration) -> Self {
        self.claim_idle = Some(idle);
        self
    }

    /// Deletes entries from the stream once acknowledged. Use it when this
    /// group is the stream's only reader, together with
    /// [`RedisPublisher::with_max_len`] for backpressure.
    pub fn delete_acked(mut self, yes: bool) -> Self {
        self.delete_acked = yes;
        self
    }

    fn topic_of(&self, key: &str) -> String {
        self.keys
            .iter()
            .position(|k| k == key)
            .map(|i| self.topics[i].clone())
            .unwrap_or_else(|| key.to_owned())
    }

    fn push(&mut self, key: &str, ids: Vec<StreamId>) {
        let topic = self.topic_of(key);
        for id in ids {
            if self
                .inflight_entries
                .contains(&(key.to_owned(), id.id.clone()))
            {
                continue;
            }
            // An entry deleted while pending comes back without fields.
            let message: Option<Vec<u8>> = id.get(FIELD);
            self.next_id += 1;
            self.inflight.insert(
                self.next_id,
                Pending {
                    key: key.to_owned(),
                    entry: id.id.clone(),
                    topic: topic.clone(),
                },
            );
            self.inflight_entries.insert((key.to_owned(), id.id));
            self.buffer.push_back(Delivery {
                id: self.next_id,
                topic: topic.clone(),
                message: message.unwrap_or_default().into(),
            });
        }
    }

    async fn read(&mut self, from: &str, block: bool) -> Result<(), TransportError> {
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(&self.group)
            .arg(&self.consumer)
            .arg("COUNT")
            .arg(64);
        if block {
            cmd.arg("BLOCK").arg(self.block.as_millis() as u64);
        }
        cmd.arg("STREAMS").arg(&self.keys);
        for _ in &self.keys {
            cmd.arg(from);
        }
        let reply: Option<StreamReadReply> = cmd
            .query_async(&mut self.conn)
            .await
            .map_err(|e| backend("*", e))?;
        for k in reply.map(|r| r.keys).unwrap_or_default() {
            self.push(&k.key, k.ids);
        }
        Ok(())
    }

    async fn claim(&mut self, idle: Duration) -> Result<(), TransportError> {
        for key in self.keys.clone() {
            let reply: StreamAutoClaimReply = redis::cmd("XAUTOCLAIM")
                .arg(&key)
                .arg(&self.group)
                .arg(&self.consumer)
                .arg(idle.as_millis() as u64)
                .arg("0-0")
                .arg("COUNT")
                .arg(64)
                .query_async(&mut self.conn)
                .await
                .map_err(|e| backend(&self.topic_of(&key), e))?;
            self.push(&key, reply.claimed);
        }
        Ok(())
    }
}

#[async_trait]
impl Subscriber for RedisSubscriber {
    fn topics(&self) -> &[String] {
        &self.topics
    }

    async fn next(&mut self) -> Result<Option<Delivery>, TransportError> {
        loop {
            if let Some(d) = self.buffer.pop_front() {
                return Ok(Some(d));
            }
            if self.check_pending {
                // Our own pending entries first: what a previous run of this
                // consumer received and never acknowledged.
                self.read("0", false).await?;
                if let Some(idle) = self.claim_idle {
                    self.claim(idle).await?;
                }
                if self.buffer.is_empty() {
                    self.check_pending = false;
                }
                continue;
            }
            // If this read is cancelled, entries Redis handed us are pending
            // under our name: look there first next time.
            self.check_pending = true;
            self.read(">", true).await?;
            // An empty read with claiming on: look for idle entries of
            // other consumers before blocking again.
            self.check_pending = self.buffer.is_empty() && self.claim_idle.is_some();
        }
    }

    async fn ack(&mut self, id: u64) -> Result<(), TransportError> {
        let p = self
            .inflight
            .get(&id)
            .ok_or(TransportError::UnknownDelivery { id })?;
        redis::cmd("XACK")
            .arg(&p.key)
            .arg(&self.group)
            .arg(&p.entry)
            .query_async::<()>(&mut self.conn)
            .await
            .map_err(|e| backend(&p.topic, e))?;
        if self.delete_acked {
            redis::cmd("XDEL")
                .arg(&p.key)
                .arg(&p.entry)
                .query_async::<()>(&mut self.conn)
                .await
                .map_err(|e| backend(&p.topic, e))?;
        }
        let p = self.inflight.remove(&id).expect("checked above");
        self.inflight_entries.remove(&(p.key, p.entry));
        Ok(())
    }
}
