//! The NATS JetStream backend.
//!
//! The queue is the JetStream stream `<name>` (subject `<name>.q`); a group
//! is a durable pull consumer of it with explicit acks, `ack_wait` = the
//! lease and `max_ack_pending` = the in-flight limit. Redelivery, naks with
//! a delay, in-progress and dedupe ids (`Nats-Msg-Id` within the stream's
//! duplicate window) are JetStream's own. Dead letters and last errors go
//! to the stream `<name>_DEAD` (subjects `<name>.dead.<group>` and
//! `<name>.err.<group>.<sequence>`).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, consumer::PullConsumer, consumer::pull};
use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;

use super::{DeadLetter, Delivery, QueueOptions, Start, WorkQueue};
use crate::error::{BoxError, QueueError};

const BACKEND: &str = "nats";
const ATTEMPTS: &str = "Tributary-Attempts";
const ERROR: &str = "Tributary-Error";
const DEDUPE: &str = "Tributary-Dedupe-Id";

/// A work queue on a NATS JetStream stream. The client reconnects by
/// itself; every call has a deadline ([`with_timeout`](Self::with_timeout)).
///
/// Durability is JetStream's (file storage): a message is acknowledged as
/// published once the server stored it. A fetch that finds nothing looks
/// again every 10 ms until its wait is over. The in-flight limit is the
/// consumer's `max_ack_pending`, and each fetch also asks for no more than
/// the room the group has left; two fetches of one group at the same
/// moment may both see the same room.
pub struct NatsQueue {
    name: String,
    options: QueueOptions,
    client: async_nats::Client,
    js: jetstream::Context,
    stream: jetstream::stream::Stream,
    dead: jetstream::stream::Stream,
    timeout: Duration,
    consumers: Mutex<HashMap<String, PullConsumer>>,
}

impl std::fmt::Debug for NatsQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsQueue")
            .field("name", &self.name)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

fn token_ok(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

impl NatsQueue {
    /// Connects to the server at `url` and ensures the queue's streams
    /// exist. `name` is a stream name: letters, digits, `-` and `_`.
    /// Dedupe ids are remembered for `dedupe_window`.
    ///
    /// # Errors
    ///
    /// [`QueueError::InvalidName`], or when the server is unreachable or a
    /// stream cannot be created.
    pub async fn connect(
        url: &str,
        name: impl Into<String>,
        options: QueueOptions,
        dedupe_window: Duration,
    ) -> Result<Self, QueueError> {
        let name = name.into();
        if !token_ok(&name) {
            return Err(QueueError::InvalidName {
                name,
                reason: "a NATS queue name may hold only letters, digits, `-` and `_`",
            });
        }
        let fail = |what: &str, e: BoxError| QueueError::Backend {
            backend: BACKEND,
            queue: name.clone(),
            what: what.to_owned(),
            source: e,
        };
        let client = async_nats::connect(url)
            .await
            .map_err(|e| fail(&format!("connect to {url}"), Box::new(e)))?;
        let js = jetstream::new(client.clone());
        let stream = create_stream(
            &js,
            jetstream::stream::Config {
                name: name.clone(),
                subjects: vec![format!("{name}.q")],
                duplicate_window: dedupe_window,
                ..Default::default()
            },
        )
        .await
        .map_err(|e| fail("create the stream", e))?;
        let dead = create_stream(
            &js,
            jetstream::stream::Config {
                name: format!("{name}_DEAD"),
                subjects: vec![format!("{name}.dead.*"), format!("{name}.err.*.*")],
                ..Default::default()
            },
        )
        .await
        .map_err(|e| fail("create the dead-letter stream", e))?;
        Ok(Self {
            name,
            options,
            client,
            js,
            stream,
            dead,
            timeout: Duration::from_secs(10),
            consumers: Mutex::default(),
        })
    }

    /// How long one call may wait for the server (default 10 s).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    fn backend(&self, what: impl Into<String>, e: impl Into<BoxError>) -> QueueError {
        QueueError::Backend {
            backend: BACKEND,
            queue: self.name.clone(),
            what: what.into(),
            source: e.into(),
        }
    }

    fn timed_out(&self, what: impl Into<String>) -> QueueError {
        QueueError::Timeout {
            backend: BACKEND,
            queue: self.name.clone(),
            what: what.into(),
            after: self.timeout,
        }
    }

    async fn deadline<T, E: Into<BoxError>>(
        &self,
        what: impl Fn() -> String,
        f: impl std::future::Future<Output = Result<T, E>>,
    ) -> Result<T, QueueError> {
        match tokio::time::timeout(self.timeout, f).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(self.backend(what(), e)),
            Err(_) => Err(self.timed_out(what())),
        }
    }

    async fn consumer(&self, group: &str) -> Result<PullConsumer, QueueError> {
        if let Some(c) = self.lock().get(group) {
            return Ok(c.clone());
        }
        let found = tokio::time::timeout(
            self.timeout,
            self.stream.get_consumer::<pull::Config>(group),
        )
        .await
        .map_err(|_| self.timed_out(format!("find group {group}")))?;
        let consumer = found.map_err(|_| QueueError::UnknownGroup {
            queue: self.name.clone(),
            group: group.to_owned(),
        })?;
        self.lock().insert(group.to_owned(), consumer.clone());
        Ok(consumer)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, PullConsumer>> {
        self.consumers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends an ack of kind `body` for `delivery` and waits for the server.
    async fn settle(&self, delivery: &Delivery, body: Bytes) -> Result<(), QueueError> {
        let reply = reply_of(&delivery.token).to_owned();
        self.deadline(
            || format!("settle {}", delivery.token),
            self.client.request(reply.clone(), body.clone()),
        )
        .await?;
        Ok(())
    }

    fn error_subject(&self, group: &str, token: &str) -> String {
        format!("{}.err.{group}.{}", self.name, sequence_of(token))
    }

    /// Records a dead letter for `delivery` and terminates it.
    async fn bury(
        &self,
        delivery: &Delivery,
        attempts: u32,
        error: Option<&str>,
    ) -> Result<(), QueueError> {
        let last_error = match error {
            Some(e) => Some(e.to_owned()),
            None => self
                .dead
                .get_last_raw_message_by_subject(
                    &self.error_subject(&delivery.group, &delivery.token),
                )
                .await
                .ok()
                .map(|m| String::from_utf8_lossy(&m.payload).into_owned()),
        };
        let mut headers = HeaderMap::new();
        headers.insert(ATTEMPTS, attempts.to_string().as_str());
        if let Some(e) = &last_error {
            headers.insert(ERROR, e.replace(['\r', '\n'], " ").as_str());
        }
        if let Some(d) = &delivery.dedupe_id {
            headers.insert(DEDUPE, d.as_str());
        }
        let subject = format!("{}.dead.{}", self.name, delivery.group);
        let ack = self
            .deadline(
                || format!("dead-letter {}", delivery.token),
                self.js.publish_with_headers(
                    subject.clone(),
                    headers.clone(),
                    delivery.payload.clone(),
                ),
            )
            .await?;
        self.deadline(
            || format!("dead-letter {}", delivery.token),
            ack.into_future(),
        )
        .await?;
        self.settle(delivery, Bytes::from_static(b"+TERM")).await
    }
}

async fn create_stream(
    js: &jetstream::Context,
    config: jetstream::stream::Config,
) -> Result<jetstream::stream::Stream, BoxError> {
    use jetstream::ErrorCode;
    use jetstream::context::CreateStreamErrorKind;
    // A busy server can let a JetStream API request time out: try again.
    // Two openers of one queue at once (a caller and its workers starting
    // together) can both find the stream missing and both create it: the
    // server then refuses the later creation, as a name in use or as
    // subjects overlapping the stream just made, and a second try finds
    // the stream. A stream that truly overlaps another fails each time.
    let mut attempt = 1;
    loop {
        match js.get_or_create_stream(config.clone()).await {
            Ok(s) => return Ok(s),
            Err(e) if attempt < 3 => {
                let again = match e.kind() {
                    CreateStreamErrorKind::TimedOut => true,
                    CreateStreamErrorKind::JetStream(err) => matches!(
                        err.error_code(),
                        ErrorCode::STREAM_NAME_EXIST | ErrorCode::STREAM_SUBJECT_OVERLAP
                    ),
                    _ => false,
                };
                if !again {
                    return Err(Box::new(e));
                }
                attempt += 1;
            }
            Err(e) => return Err(Box::new(e)),
        }
    }
}

// A delivery's token is "<stream sequence> <reply subject>".
fn reply_of(token: &str) -> &str {
    token.split_once(' ').map_or(token, |(_, r)| r)
}

fn sequence_of(token: &str) -> &str {
    token.split_once(' ').map_or("0", |(s, _)| s)
}

#[async_trait]
impl WorkQueue for NatsQueue {
    fn name(&self) -> &str {
        &self.name
    }

    fn options(&self) -> QueueOptions {
        self.options
    }

    async fn publish(&self, payload: Bytes, dedupe_id: Option<&str>) -> Result<(), QueueError> {
        let subject = format!("{}.q", self.name);
        let ack = match dedupe_id {
            Some(id) => {
                let mut headers = HeaderMap::new();
                headers.insert("Nats-Msg-Id", id);
                headers.insert(DEDUPE, id);
                self.deadline(
                    || "publish".to_owned(),
                    self.js.publish_with_headers(subject, headers, payload),
                )
                .await?
            }
            None => {
                self.deadline(|| "publish".to_owned(), self.js.publish(subject, payload))
                    .await?
            }
        };
        self.deadline(|| "publish".to_owned(), ack.into_future())
            .await?;
        Ok(())
    }

    async fn create_group(&self, group: &str, start: Start) -> Result<(), QueueError> {
        if !token_ok(group) {
            return Err(QueueError::InvalidName {
                name: group.to_owned(),
                reason: "a NATS group name may hold only letters, digits, `-` and `_`",
            });
        }
        let config = pull::Config {
            durable_name: Some(group.to_owned()),
            filter_subject: format!("{}.q", self.name),
            deliver_policy: match &start {
                Start::First => jetstream::consumer::DeliverPolicy::All,
                Start::New => jetstream::consumer::DeliverPolicy::New,
                Start::After(position) => jetstream::consumer::DeliverPolicy::ByStartSequence {
                    start_sequence: position
                        .parse::<u64>()
                        .ok()
                        .and_then(|p| p.checked_add(1))
                        .ok_or_else(|| QueueError::InvalidPosition {
                            queue: self.name.clone(),
                            position: position.clone(),
                        })?,
                },
            },
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            ack_wait: self.options.lease,
            max_ack_pending: i64::try_from(self.options.max_in_flight).unwrap_or(i64::MAX),
            // Unlimited: a message past its last attempt is dead-lettered
            // (with its last error) by the fetch that sees it.
            max_deliver: -1,
            ..Default::default()
        };
        let consumer = self
            .deadline(
                || format!("create group {group}"),
                self.stream.get_or_create_consumer(group, config),
            )
            .await?;
        self.lock().insert(group.to_owned(), consumer);
        Ok(())
    }

    async fn fetch(
        &self,
        group: &str,
        consumer: &str,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Delivery>, QueueError> {
        let pull = self.consumer(group).await?;
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let mut out = Vec::new();
            // The server's max_ack_pending does not bound one pull request:
            // ask for no more than the group has room for.
            let info = self
                .deadline(|| format!("look up group {group}"), pull.get_info())
                .await?;
            let room = self
                .options
                .max_in_flight
                .saturating_sub(info.num_ack_pending)
                .min(max);
            if room == 0 {
                let now = tokio::time::Instant::now();
                if now >= deadline {
                    return Ok(out);
                }
                tokio::time::sleep((deadline - now).min(Duration::from_millis(10))).await;
                continue;
            }
            let mut batch = self
                .deadline(
                    || format!("fetch for group {group}"),
                    pull.fetch().max_messages(room).messages(),
                )
                .await?;
            loop {
                // A pull whose request the server never answers (it
                // restarted with the request in flight) would otherwise wait
                // forever: bounded like every other call. What came is kept;
                // nothing at all is an error the caller retries.
                let next = match tokio::time::timeout(self.timeout, batch.next()).await {
                    Ok(next) => next,
                    Err(_) if out.is_empty() => {
                        return Err(self.timed_out(format!("fetch for group {group}")));
                    }
                    Err(_) => break,
                };
                let Some(message) = next else { break };
                let message = match message {
                    Ok(m) => m,
                    // A status instead of messages (a full consumer, a
                    // request the server dropped): nothing more this time.
                    Err(e) => {
                        tracing::debug!(queue = %self.name, group, error = %e, "fetch ended early");
                        break;
                    }
                };
                let info = message
                    .info()
                    .map_err(|e| self.backend("read a delivery's metadata", e))?;
                let attempt = u32::try_from(info.delivered).unwrap_or(u32::MAX);
                let sequence = info.stream_sequence;
                let reply = message
                    .reply
                    .as_ref()
                    .map(|r| r.to_string())
                    .unwrap_or_default();
                let delivery = Delivery {
                    payload: message.payload.clone(),
                    dedupe_id: message
                        .headers
                        .as_ref()
                        .and_then(|h| h.get(DEDUPE))
                        .map(|v| v.to_string()),
                    attempt,
                    group: group.to_owned(),
                    consumer: consumer.to_owned(),
                    position: sequence.to_string(),
                    token: format!("{sequence} {reply}"),
                };
                if attempt > self.options.max_deliveries {
                    self.bury(&delivery, attempt - 1, None).await?;
                    continue;
                }
                out.push(delivery);
            }
            let now = tokio::time::Instant::now();
            if !out.is_empty() || now >= deadline {
                return Ok(out);
            }
            tokio::time::sleep((deadline - now).min(Duration::from_millis(10))).await;
        }
    }

    async fn ack(&self, delivery: &Delivery) -> Result<(), QueueError> {
        self.settle(delivery, Bytes::from_static(b"+ACK")).await
    }

    async fn ack_all(&self, deliveries: &[Delivery]) -> Result<(), QueueError> {
        // Each message has its own reply subject: send the acks at once.
        let acks = deliveries.iter().map(|d| self.ack(d));
        futures_util::future::join_all(acks)
            .await
            .into_iter()
            .collect()
    }

    async fn nak(
        &self,
        delivery: &Delivery,
        delay: Duration,
        error: &str,
    ) -> Result<(), QueueError> {
        if delivery.attempt >= self.options.max_deliveries {
            return self.bury(delivery, delivery.attempt, Some(error)).await;
        }
        let subject = self.error_subject(&delivery.group, &delivery.token);
        let ack = self
            .deadline(
                || format!("record the error of {}", delivery.token),
                self.js.publish(subject, Bytes::from(error.to_owned())),
            )
            .await?;
        self.deadline(
            || format!("record the error of {}", delivery.token),
            ack.into_future(),
        )
        .await?;
        let body = format!("-NAK {{\"delay\":{}}}", delay.as_nanos());
        self.settle(delivery, body.into()).await
    }

    async fn in_progress(&self, delivery: &Delivery) -> Result<(), QueueError> {
        self.settle(delivery, Bytes::from_static(b"+WPI")).await
    }

    async fn terminate(&self, delivery: &Delivery, error: &str) -> Result<(), QueueError> {
        self.bury(delivery, delivery.attempt, Some(error)).await
    }

    async fn dead_letters(&self, group: &str) -> Result<Vec<DeadLetter>, QueueError> {
        let reader = self
            .deadline(
                || format!("read the dead letters of group {group}"),
                self.dead.create_consumer(pull::Config {
                    filter_subject: format!("{}.dead.{group}", self.name),
                    deliver_policy: jetstream::consumer::DeliverPolicy::All,
                    ack_policy: jetstream::consumer::AckPolicy::None,
                    inactive_threshold: Duration::from_secs(60),
                    ..Default::default()
                }),
            )
            .await?;
        let mut out = Vec::new();
        loop {
            let mut batch = self
                .deadline(
                    || format!("read the dead letters of group {group}"),
                    reader.fetch().max_messages(256).messages(),
                )
                .await?;
            let before = out.len();
            while let Some(Ok(m)) = batch.next().await {
                let header = |name: &str| {
                    m.headers
                        .as_ref()
                        .and_then(|h| h.get(name))
                        .map(|v| v.to_string())
                };
                let id = m
                    .info()
                    .map(|i| i.stream_sequence.to_string())
                    .map_err(|e| self.backend("read a dead letter's metadata", e))?;
                out.push(DeadLetter {
                    id,
                    payload: m.payload.clone(),
                    dedupe_id: header(DEDUPE),
                    attempts: header(ATTEMPTS).and_then(|a| a.parse().ok()).unwrap_or(0),
                    last_error: header(ERROR),
                });
            }
            if out.len() == before {
                return Ok(out);
            }
        }
    }

    async fn remove_dead_letter(&self, group: &str, id: &str) -> Result<bool, QueueError> {
        let Ok(sequence) = id.parse::<u64>() else {
            return Ok(false);
        };
        let what = || format!("remove dead letter {id} of group {group}");
        // Only a dead letter of this group: the message's subject says.
        let found = tokio::time::timeout(self.timeout, self.dead.get_raw_message(sequence))
            .await
            .map_err(|_| self.timed_out(what()))?;
        let message = match found {
            Ok(m) => m,
            Err(e) if e.kind() == jetstream::stream::LastRawMessageErrorKind::NoMessageFound => {
                return Ok(false);
            }
            Err(e) if e.to_string().contains("not found") => return Ok(false),
            Err(e) => return Err(self.backend(what(), e)),
        };
        if message.subject.as_str() != format!("{}.dead.{group}", self.name) {
            return Ok(false);
        }
        let deleted = tokio::time::timeout(self.timeout, self.dead.delete_message(sequence))
            .await
            .map_err(|_| self.timed_out(what()))?;
        match deleted {
            Ok(removed) => Ok(removed),
            // Removed meanwhile by another caller.
            Err(e) if e.to_string().contains("not found") => Ok(false),
            Err(e) => Err(self.backend(what(), e)),
        }
    }

    async fn trim(&self) -> Result<u64, QueueError> {
        let mut consumers = self.stream.consumers();
        let mut keep_from: Option<u64> = None;
        while let Some(info) = consumers.next().await {
            let info = info.map_err(|e| self.backend("list the groups", e))?;
            let from = info.ack_floor.stream_sequence.saturating_add(1);
            keep_from = Some(keep_from.map_or(from, |k| k.min(from)));
        }
        // Without groups nothing was read: everything is unread.
        let Some(keep_from) = keep_from else {
            return Ok(0);
        };
        // Nothing before the first message to remove. (The server reads a
        // purge up to sequence 1 or 0 as "no sequence": the whole subject.)
        if keep_from <= 1 {
            return Ok(0);
        }
        let purged = self
            .deadline(
                || "trim".to_owned(),
                self.stream
                    .purge()
                    .filter(format!("{}.q", self.name))
                    .sequence(keep_from)
                    .into_future(),
            )
            .await?;
        Ok(purged.purged)
    }

    async fn delete_group(&self, group: &str) -> Result<(), QueueError> {
        self.lock().remove(group);
        let deleted = tokio::time::timeout(self.timeout, self.stream.delete_consumer(group))
            .await
            .map_err(|_| self.timed_out(format!("remove group {group}")))?;
        if let Err(e) = deleted {
            // A group that does not exist is already gone.
            if !e.to_string().contains("not found") {
                return Err(self.backend(format!("remove group {group}"), e));
            }
        }
        // Its dead letters: the subject of the group in the dead stream.
        let purged = self
            .dead
            .purge()
            .filter(format!("{}.dead.{group}", self.name))
            .into_future();
        self.deadline(
            || format!("remove the dead letters of group {group}"),
            purged,
        )
        .await?;
        Ok(())
    }

    async fn destroy(&self) -> Result<(), QueueError> {
        self.lock().clear();
        for stream in [self.name.clone(), format!("{}_DEAD", self.name)] {
            let deleted = tokio::time::timeout(self.timeout, self.js.delete_stream(&stream))
                .await
                .map_err(|_| self.timed_out(format!("remove stream {stream}")))?;
            if let Err(e) = deleted {
                if !e.to_string().contains("not found") {
                    return Err(self.backend(format!("remove stream {stream}"), e));
                }
            }
        }
        Ok(())
    }

    async fn stored(&self) -> Result<u64, QueueError> {
        let stream = self
            .deadline(
                || "count messages".to_owned(),
                self.js.get_stream(&self.name),
            )
            .await?;
        Ok(stream.cached_info().state.messages)
    }

    async fn backlog(&self, group: &str) -> Result<crate::Backlog, QueueError> {
        let mut consumer = self.consumer(group).await?;
        let info = self
            .deadline(|| format!("look at group {group}"), consumer.info())
            .await?;
        Ok(crate::Backlog {
            waiting: Some(info.num_pending),
            pending: info.num_ack_pending as u64,
        })
    }
}
