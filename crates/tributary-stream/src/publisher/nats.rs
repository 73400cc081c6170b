//! NATS JetStream: topics are subjects `<prefix>.<topic>` of one stream;
//! durable pull consumers with explicit acknowledgement.

use std::collections::HashMap;
use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull};
use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;

use super::{Delivery, Publisher, Subscriber};
use crate::error::TransportError;

fn backend(topic: &str, e: impl std::error::Error + Send + Sync + 'static) -> TransportError {
    TransportError::Backend {
        backend: "nats",
        topic: topic.to_owned(),
        source: Box::new(e),
    }
}

fn check_topic(topic: &str) -> Result<(), TransportError> {
    let bad = topic.is_empty()
        || topic
            .chars()
            .any(|c| c == '.' || c == '*' || c == '>' || c.is_whitespace());
    if bad {
        return Err(TransportError::InvalidTopic {
            topic: topic.to_owned(),
            reason: "a NATS topic must be one non-empty subject token (no `.`, `*`, `>` or spaces)",
        });
    }
    Ok(())
}

async fn stream(
    url: &str,
    stream: &str,
    prefix: &str,
) -> Result<(jetstream::Context, jetstream::stream::Stream), TransportError> {
    let client = async_nats::connect(url)
        .await
        .map_err(|e| backend("*", e))?;
    let js = jetstream::new(client);
    let config = jetstream::stream::Config {
        name: stream.to_owned(),
        subjects: vec![format!("{prefix}.>")],
        ..Default::default()
    };
    // A busy server can let a JetStream API request time out; that is
    // transient, so try a few times before giving up.
    let mut attempt = 1;
    loop {
        match js.get_or_create_stream(config.clone()).await {
            Ok(stream) => return Ok((js, stream)),
            Err(e)
                if attempt < 3
                    && e.kind() == jetstream::context::CreateStreamErrorKind::TimedOut =>
            {
                attempt += 1;
            }
            Err(e) => return Err(backend("*", e)),
        }
    }
}

/// Publishes to the JetStream stream `stream` on subjects `<prefix>.<topic>`,
/// creating the stream if it does not exist (an existing stream keeps its
/// configuration).
///
/// `publish` returns once JetStream acknowledged the message (it is
/// persisted). For backpressure, create the stream beforehand with
/// work-queue (or interest) retention, `max_messages` and the *discard new*
/// policy: JetStream then refuses publishes while consumers have that many
/// messages unacknowledged, and the publisher waits, retrying, for up to
/// [`with_backpressure_timeout`](Self::with_backpressure_timeout) before it
/// fails with [`TransportError::Backpressure`].
#[derive(Debug, Clone)]
pub struct NatsPublisher {
    js: jetstream::Context,
    prefix: String,
    backpressure_timeout: Duration,
    timeout: Duration,
}

// JetStream refuses a message because the stream is at its limits.
fn stream_full(e: &jetstream::context::PublishError) -> bool {
    std::error::Error::source(e)
        .and_then(|s| s.downcast_ref::<jetstream::Error>())
        .is_some_and(|j| j.error_code() == jetstream::ErrorCode::STREAM_STORE_FAILED)
}

impl NatsPublisher {
    /// Connects to `url` and ensures the stream exists.
    ///
    /// # Errors
    ///
    /// When the server is unreachable or the stream cannot be created.
    pub async fn connect(
        url: &str,
        stream_name: &str,
        prefix: &str,
    ) -> Result<Self, TransportError> {
        let (js, _) = stream(url, stream_name, prefix).await?;
        Ok(Self {
            js,
            prefix: prefix.to_owned(),
            backpressure_timeout: Duration::ZERO,
            timeout: Duration::from_secs(5),
        })
    }

    /// How long a publish waits for the server's acknowledgement before it
    /// fails with [`TransportError::Timeout`] (default 5 s).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.js.set_timeout(timeout);
        self.timeout = timeout;
        self
    }

    /// How long a publish retries while the stream is full (default: not
    /// at all).
    pub fn with_backpressure_timeout(mut self, timeout: Duration) -> Self {
        self.backpressure_timeout = timeout;
        self
    }
}

#[async_trait]
impl Publisher for NatsPublisher {
    async fn publish(&self, topic: &str, message: Bytes) -> Result<(), TransportError> {
        check_topic(topic)?;
        let subject = format!("{}.{}", self.prefix, topic);
        let started = tokio::time::Instant::now();
        let mut pause = Duration::from_millis(5);
        loop {
            let timed_out = |e: &jetstream::context::PublishError| {
                (e.kind() == jetstream::context::PublishErrorKind::TimedOut).then(|| {
                    TransportError::Timeout {
                        backend: "nats",
                        topic: topic.to_owned(),
                        after: self.timeout,
                    }
                })
            };
            let ack = match self.js.publish(subject.clone(), message.clone()).await {
                Ok(ack) => ack,
                Err(e) => return Err(timed_out(&e).unwrap_or_else(|| backend(topic, e))),
            };
            match ack.await {
                Ok(_) => return Ok(()),
                Err(e) if timed_out(&e).is_some() => {
                    return Err(timed_out(&e).expect("checked"));
                }
                Err(e) if stream_full(&e) => {
                    let waited = started.elapsed();
                    if waited >= self.backpressure_timeout {
                        return Err(TransportError::Backpressure {
                            topic: topic.to_owned(),
                            waited,
                        });
                    }
                    tokio::time::sleep(pause.min(self.backpressure_timeout - waited)).await;
                    pause = (pause * 2).min(Duration::from_millis(200));
                }
                Err(e) => return Err(backend(topic, e)),
            }
        }
    }
}

/// Receives `topics` through the durable pull consumer `durable` of the
/// JetStream stream `stream`, creating both if needed.
///
/// The consumer acknowledges explicitly; JetStream delivers a message again
/// when it was not acknowledged within `ack_wait` (by default 30 s), which
/// is what a subscriber of the same durable name gets after a crash. The
/// server sends a heartbeat while no message flows; a read that misses two
/// ([`NatsSubscriberOptions::heartbeat`]) fails with
/// [`TransportError::Timeout`] and the subscriber goes on pulling.
pub struct NatsSubscriber {
    heartbeat: Duration,
    topics: Vec<String>,
    prefix: String,
    messages: pull::Stream,
    inflight: HashMap<u64, jetstream::Message>,
    next_id: u64,
}

impl std::fmt::Debug for NatsSubscriber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsSubscriber")
            .field("topics", &self.topics)
            .field("inflight", &self.inflight.len())
            .finish_non_exhaustive()
    }
}

/// Options of a [`NatsSubscriber`]'s durable consumer.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct NatsSubscriberOptions {
    /// How long JetStream waits for an acknowledgement before delivering a
    /// message again.
    pub ack_wait: Duration,
    /// How many unacknowledged messages JetStream lets this consumer hold.
    pub max_ack_pending: i64,
    /// How often the server says it is alive while no message flows; a
    /// read fails after missing two.
    pub heartbeat: Duration,
}

impl Default for NatsSubscriberOptions {
    fn default() -> Self {
        Self {
            ack_wait: Duration::from_secs(30),
            max_ack_pending: 1024,
            heartbeat: Duration::from_secs(5),
        }
    }
}

impl NatsSubscriberOptions {
    /// Sets [`ack_wait`](Self::ack_wait).
    pub fn ack_wait(mut self, ack_wait: Duration) -> Self {
        self.ack_wait = ack_wait;
        self
    }

    /// Sets [`heartbeat`](Self::heartbeat).
    pub fn heartbeat(mut self, heartbeat: Duration) -> Self {
        self.heartbeat = heartbeat;
        self
    }
}

impl NatsSubscriber {
    /// Connects, ensures stream and durable consumer exist, and starts
    /// pulling.
    ///
    /// # Errors
    ///
    /// When a topic is not a valid subject token, the server is unreachable,
    /// or stream or consumer cannot be created.
    pub async fn connect<I, S>(
        url: &str,
        stream_name: &str,
        prefix: &str,
        durable: &str,
        topics: I,
        options: NatsSubscriberOptions,
    ) -> Result<Self, TransportError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let topics: Vec<String> = topics.into_iter().map(Into::into).collect();
        for t in &topics {
            check_topic(t)?;
        }
        let (_, stream) = stream(url, stream_name, prefix).await?;
        let consumer = stream
            .get_or_create_consumer(
                durable,
                pull::Config {
                    durable_name: Some(durable.to_owned()),
                    filter_subjects: topics.iter().map(|t| format!("{prefix}.{t}")).collect(),
                    ack_policy: jetstream::consumer::AckPolicy::Explicit,
                    deliver_policy: jetstream::consumer::DeliverPolicy::All,
                    ack_wait: options.ack_wait,
                    max_ack_pending: options.max_ack_pending,
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| backend("*", e))?;
        let messages = consumer
            .stream()
            .heartbeat(options.heartbeat)
            .expires(options.heartbeat * 6)
            .messages()
            .await
            .map_err(|e| backend("*", e))?;
        Ok(Self {
            heartbeat: options.heartbeat,
            topics,
            prefix: prefix.to_owned(),
            messages,
            inflight: HashMap::new(),
            next_id: 0,
        })
    }
}

#[async_trait]
impl Subscriber for NatsSubscriber {
    fn topics(&self) -> &[String] {
        &self.topics
    }

    async fn next(&mut self) -> Result<Option<Delivery>, TransportError> {
        let Some(message) = self.messages.next().await else {
            return Ok(None);
        };
        let message = message.map_err(|e| {
            if e.kind() == pull::MessagesErrorKind::MissingHeartbeat {
                TransportError::Timeout {
                    backend: "nats",
                    topic: "*".to_owned(),
                    after: self.heartbeat * 2,
                }
            } else {
                backend("*", e)
            }
        })?;
        let subject = message.subject.as_str();
        let topic = subject
            .strip_prefix(&self.prefix)
            .and_then(|s| s.strip_prefix('.'))
            .unwrap_or(subject)
            .to_owned();
        self.next_id += 1;
        let delivery = Delivery {
            id: self.next_id,
            topic,
            message: message.payload.clone(),
        };
        self.inflight.insert(self.next_id, message);
        Ok(Some(delivery))
    }

    async fn ack(&mut self, id: u64) -> Result<(), TransportError> {
        let message = self
            .inflight
            .get(&id)
            .ok_or(TransportError::UnknownDelivery { id })?;
        // Wait for the server to confirm, so an acknowledged message is
        // gone before the consumer moves on.
        message
            .double_ack()
            .await
            .map_err(|e| TransportError::Backend {
                backend: "nats",
                topic: message.subject.to_string(),
                source: e,
            })?;
        self.inflight.remove(&id);
        Ok(())
    }
}
