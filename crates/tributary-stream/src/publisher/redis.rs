//! Redis Streams: one stream per topic, consumer groups for durable,
//! acknowledged delivery.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use redis::aio::ConnectionManager;
use redis::streams::{StreamAutoClaimReply, StreamId, StreamReadReply};

use super::{Delivery, Publisher, Subscriber};
use crate::error::TransportError;
use crate::redis_client::{self, DEFAULT_TIMEOUT, Failure};

const FIELD: &str = "e";

fn backend(topic: &str, e: redis::RedisError) -> TransportError {
    TransportError::Backend {
        backend: "redis",
        topic: topic.to_owned(),
        source: Box::new(e),
    }
}

fn failed(topic: &str, f: Failure) -> TransportError {
    match f {
        Failure::Redis(e) => backend(topic, e),
        Failure::Timeout(after) => TransportError::Timeout {
            backend: "redis",
            topic: topic.to_owned(),
            after,
        },
    }
}

async fn connect(url: &str) -> Result<ConnectionManager, TransportError> {
    redis_client::manager(url)
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
///
/// The connection reconnects by itself after it broke; a publish that found
/// it broken fails (it may or may not have been stored), and the next one
/// goes through the new connection. [`StreamProducer`](crate::StreamProducer)
/// retries such a publish with the same batch, and its consumers skip the
/// copy. Every command has a deadline ([`with_timeout`](Self::with_timeout),
/// 10 s by default) after which it fails with [`TransportError::Timeout`].
#[derive(Debug, Clone)]
pub struct RedisPublisher {
    conn: ConnectionManager,
    prefix: String,
    max_len: Option<(usize, Duration)>,
    timeout: Duration,
}

impl RedisPublisher {
    /// Connects to the server at `url`; topics map to streams `<prefix><topic>`.
    ///
    /// # Errors
    ///
    /// When the URL is invalid or the server unreachable.
    pub async fn connect(url: &str, prefix: impl Into<String>) -> Result<Self, TransportError> {
        Ok(Self {
            conn: connect(url).await?,
            prefix: prefix.into(),
            max_len: None,
            timeout: DEFAULT_TIMEOUT,
        })
    }

    /// How long one command may wait for the server (default 10 s).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
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
            let mut cmd = redis::cmd("XLEN");
            cmd.arg(key);
            let len: usize = redis_client::idempotent(&mut conn, &cmd, self.timeout)
                .await
                .map_err(|f| failed(topic, f))?;
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
        let mut cmd = redis::cmd("XADD");
        cmd.arg(&key).arg("*").arg(FIELD).arg(message.as_ref());
        // Not idempotent: a lost reply may hide a stored entry, so a retry
        // is the caller's decision.
        redis_client::once::<String>(&mut conn, &cmd, self.timeout)
            .await
            .map_err(|f| failed(topic, f))?;
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
///
/// The connection reconnects by itself after it broke; the subscriber then
/// reads its own pending entries first (what a read whose reply was lost
/// handed it) and recreates its group if the server lost it. A read waits
/// at most [`with_block`](Self::with_block) on the server plus
/// [`with_timeout`](Self::with_timeout) for the reply, then fails with
/// [`TransportError::Timeout`]; the subscriber stays usable.
pub struct RedisSubscriber {
    conn: ConnectionManager,
    topics: Vec<String>,
    keys: Vec<String>,
    group: String,
    consumer: String,
    block: Duration,
    timeout: Duration,
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
        let conn = connect(url).await?;
        let topics: Vec<String> = topics.into_iter().map(Into::into).collect();
        let keys: Vec<String> = topics.iter().map(|t| format!("{prefix}{t}")).collect();
        let mut subscriber = Self {
            conn,
            topics,
            keys,
            group: group.into(),
            consumer: consumer.into(),
            block: Duration::from_secs(5),
            timeout: DEFAULT_TIMEOUT,
            claim_idle: None,
            delete_acked: false,
            check_pending: true,
            buffer: VecDeque::new(),
            inflight: HashMap::new(),
            inflight_entries: HashSet::new(),
            next_id: 0,
        };
        subscriber.join_groups().await?;
        Ok(subscriber)
    }

    /// Creates the group on every stream (from its start) where it does not
    /// exist.
    async fn join_groups(&mut self) -> Result<(), TransportError> {
        for (topic, key) in self.topics.iter().zip(&self.keys) {
            let mut cmd = redis::cmd("XGROUP");
            cmd.arg("CREATE")
                .arg(key)
                .arg(&self.group)
                .arg("0")
                .arg("MKSTREAM");
            match redis_client::idempotent::<()>(&mut self.conn, &cmd, self.timeout).await {
                Ok(()) => {}
                Err(Failure::Redis(e)) if e.code() == Some("BUSYGROUP") => {}
                Err(f) => return Err(failed(topic, f)),
            }
        }
        Ok(())
    }

    /// Retention: removes from each topic's stream the entries every
    /// consumer group of it has acknowledged, and returns how many went. An
    /// entry some group has not read yet, or holds unacknowledged, is never
    /// removed. Call it now and then (any one subscriber of the streams
    /// will do) so that a long-lived deployment does not keep finished work.
    ///
    /// # Errors
    ///
    /// When the server fails.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a cancelled trim removes fewer entries, never more.
    pub async fn trim(&mut self) -> Result<u64, TransportError> {
        use redis::streams::{StreamInfoGroupsReply, StreamPendingReply};
        let mut removed = 0;
        for (topic, key) in self.topics.clone().iter().zip(self.keys.clone()) {
            let mut info = redis::cmd("XINFO");
            info.arg("GROUPS").arg(&key);
            let groups: StreamInfoGroupsReply =
                redis_client::idempotent(&mut self.conn, &info, self.timeout)
                    .await
                    .map_err(|f| failed(topic, f))?;
            let mut keep_from: Option<(u64, u64)> = None;
            for g in groups.groups {
                let mut from = next_id(&g.last_delivered_id);
                if g.pending > 0 {
                    let mut summary = redis::cmd("XPENDING");
                    summary.arg(&key).arg(&g.name);
                    let pending: StreamPendingReply =
                        redis_client::idempotent(&mut self.conn, &summary, self.timeout)
                            .await
                            .map_err(|f| failed(topic, f))?;
                    if let StreamPendingReply::Data(d) = pending {
                        from = from.min(parse_id(&d.start_id));
                    }
                }
                keep_from = Some(keep_from.map_or(from, |k| k.min(from)));
            }
            let Some((ms, seq)) = keep_from else {
                continue;
            };
            let mut trim = redis::cmd("XTRIM");
            trim.arg(&key).arg("MINID").arg(format!("{ms}-{seq}"));
            let n: u64 = redis_client::idempotent(&mut self.conn, &trim, self.timeout)
                .await
                .map_err(|f| failed(topic, f))?;
            removed += n;
        }
        Ok(removed)
    }

    /// How long a read waits on the server for new entries before it asks
    /// again (default 5 s).
    pub fn with_block(mut self, block: Duration) -> Self {
        self.block = block;
        self
    }

    /// How long any command may wait for its reply beyond the read's block
    /// time (default 10 s).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
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

    async fn read(&mut self, from: &str, block: bool) -> Result<(), Failure> {
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
        let deadline = if block {
            self.block + self.timeout
        } else {
            self.timeout
        };
        let reply: Option<StreamReadReply> =
            redis_client::once(&mut self.conn, &cmd, deadline).await?;
        for k in reply.map(|r| r.keys).unwrap_or_default() {
            self.push(&k.key, k.ids);
        }
        Ok(())
    }

    async fn claim(&mut self, idle: Duration) -> Result<(), Failure> {
        for key in self.keys.clone() {
            let mut cmd = redis::cmd("XAUTOCLAIM");
            cmd.arg(&key)
                .arg(&self.group)
                .arg(&self.consumer)
                .arg(idle.as_millis() as u64)
                .arg("0-0")
                .arg("COUNT")
                .arg(64);
            let reply: StreamAutoClaimReply =
                redis_client::idempotent(&mut self.conn, &cmd, self.timeout).await?;
            self.push(&key, reply.claimed);
        }
        Ok(())
    }

    /// One step of [`Subscriber::next`]: reads into the buffer.
    async fn fill(&mut self) -> Result<(), Failure> {
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
            return Ok(());
        }
        // If this read is cancelled or its reply lost, entries Redis handed
        // us are pending under our name: look there first next time.
        self.check_pending = true;
        self.read(">", true).await?;
        // An empty read with claiming on: look for idle entries of
        // other consumers before blocking again.
        self.check_pending = self.buffer.is_empty() && self.claim_idle.is_some();
        Ok(())
    }
}

#[async_trait]
impl Subscriber for RedisSubscriber {
    fn topics(&self) -> &[String] {
        &self.topics
    }

    async fn next(&mut self) -> Result<Option<Delivery>, TransportError> {
        // One broken connection and one lost group are repaired within the
        // call; anything more is reported (and repaired by a later call).
        let mut reconnected = false;
        let mut regrouped = false;
        loop {
            if let Some(d) = self.buffer.pop_front() {
                return Ok(Some(d));
            }
            match self.fill().await {
                Ok(()) => {}
                Err(Failure::Redis(e)) if redis_client::connection_lost(&e) && !reconnected => {
                    reconnected = true;
                    self.check_pending = true;
                }
                Err(Failure::Redis(e)) if e.code() == Some("NOGROUP") && !regrouped => {
                    // The server lost the group (a restart without
                    // persistence): join again from the start.
                    regrouped = true;
                    self.join_groups().await?;
                    self.check_pending = true;
                }
                Err(f) => {
                    self.check_pending = true;
                    return Err(failed("*", f));
                }
            }
        }
    }

    async fn ack(&mut self, id: u64) -> Result<(), TransportError> {
        let p = self
            .inflight
            .get(&id)
            .ok_or(TransportError::UnknownDelivery { id })?;
        let mut cmd = redis::cmd("XACK");
        cmd.arg(&p.key).arg(&self.group).arg(&p.entry);
        redis_client::idempotent::<()>(&mut self.conn, &cmd, self.timeout)
            .await
            .map_err(|f| failed(&p.topic, f))?;
        if self.delete_acked {
            let mut cmd = redis::cmd("XDEL");
            cmd.arg(&p.key).arg(&p.entry);
            redis_client::idempotent::<()>(&mut self.conn, &cmd, self.timeout)
                .await
                .map_err(|f| failed(&p.topic, f))?;
        }
        let p = self.inflight.remove(&id).expect("checked above");
        self.inflight_entries.remove(&(p.key, p.entry));
        Ok(())
    }
}

fn parse_id(id: &str) -> (u64, u64) {
    let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
    (ms.parse().unwrap_or(0), seq.parse().unwrap_or(0))
}

/// The smallest stream id after `id`.
fn next_id(id: &str) -> (u64, u64) {
    let (ms, seq) = parse_id(id);
    match seq.checked_add(1) {
        Some(seq) => (ms, seq),
        None => (ms.saturating_add(1), 0),
    }
}
