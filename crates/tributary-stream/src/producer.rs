//! The producing side: topics, batching, stores, filters, aggregation.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::codec::Codec;
use crate::connector::{Connector, Key};
use crate::error::{ConnectorError, ProducerError, StoreError, TransportError};
use crate::event::{Event, EventBatch, Metadata};
use crate::filter::Filter;
use crate::publisher::Publisher;
use crate::store::Store;

type Aggregator<T> = Box<dyn Fn(&[T]) -> T + Send + Sync>;

/// How one object is sent: its metadata and whether its proxy evicts.
#[derive(Debug, Clone)]
pub struct SendOptions {
    metadata: Metadata,
    evict: bool,
}

impl Default for SendOptions {
    fn default() -> Self {
        Self {
            metadata: Metadata::new(),
            evict: true,
        }
    }
}

impl SendOptions {
    /// No metadata, `evict` on.
    pub fn new() -> Self {
        Self::default()
    }

    /// The object's metadata, which filters look at.
    pub fn metadata(mut self, metadata: Metadata) -> Self {
        self.metadata = metadata;
        self
    }

    /// Whether the first resolve of the object's proxy removes it (default
    /// `true`). Without eviction the object stays until evicted by hand, and
    /// many consumers may resolve it. Ignored for inline objects.
    pub fn evict(mut self, evict: bool) -> Self {
        self.evict = evict;
        self
    }
}

/// How a flush retries a store or publish that failed for a reason that may
/// pass (a broken connection, a timeout): up to `attempts` tries in all,
/// waiting `backoff` after the first failure and twice as long after each
/// next one, at most `max_backoff`.
///
/// The default, 8 attempts from 50 ms up to 2 s, rides out about 5 s of a
/// broker being away (a restart, a failover).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    /// Tries in all (at least 1).
    pub attempts: u32,
    /// The wait after the first failure.
    pub backoff: Duration,
    /// The longest wait between two tries.
    pub max_backoff: Duration,
}

impl Default for Retry {
    fn default() -> Self {
        Self {
            attempts: 8,
            backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(2),
        }
    }
}

impl Retry {
    /// No retry: one try.
    pub fn never() -> Self {
        Self {
            attempts: 1,
            ..Self::default()
        }
    }

    fn pause(&self, failures: u32) -> Duration {
        let factor = 1u32
            .checked_shl(failures.saturating_sub(1))
            .unwrap_or(u32::MAX);
        self.backoff.saturating_mul(factor).min(self.max_backoff)
    }
}

fn transient_transport(e: &TransportError) -> bool {
    matches!(
        e,
        TransportError::Backend { .. } | TransportError::Timeout { .. }
    )
}

fn transient_store(e: &StoreError) -> bool {
    matches!(
        e,
        StoreError::Connector(ConnectorError::Backend { .. } | ConnectorError::Timeout { .. })
    )
}

/// Publishes `message`, trying again by `retry` while the failure may pass.
async fn publish(
    publisher: &dyn Publisher,
    retry: Retry,
    topic: &str,
    message: bytes::Bytes,
) -> Result<(), TransportError> {
    let mut failures = 0;
    loop {
        match publisher.publish(topic, message.clone()).await {
            Err(e) if transient_transport(&e) && failures + 1 < retry.attempts => {
                failures += 1;
                tracing::debug!(topic, error = %e, failures, "publish failed; retrying");
                tokio::time::sleep(retry.pause(failures)).await;
            }
            other => return other,
        }
    }
}

struct TopicState<T> {
    // Values apart from their options, so that an aggregator gets `&[T]`.
    buffer: Vec<T>,
    options: Vec<SendOptions>,
    seq: u64,
    announced: bool,
    closing: bool,
    ended: bool,
}

impl<T> Default for TopicState<T> {
    fn default() -> Self {
        Self {
            buffer: Vec::new(),
            options: Vec::new(),
            seq: 0,
            announced: false,
            closing: false,
            ended: false,
        }
    }
}

/// Builds a [`StreamProducer`].
pub struct ProducerBuilder<T> {
    publisher: Box<dyn Publisher>,
    codec: Arc<dyn Codec<T>>,
    id: Option<String>,
    default_store: Option<Store<T>>,
    stores: HashMap<String, Option<Store<T>>>,
    batch_size: usize,
    aggregator: Option<Aggregator<T>>,
    filter: Option<Box<dyn Filter>>,
    retry: Retry,
}

impl<T> fmt::Debug for ProducerBuilder<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProducerBuilder")
            .field("publisher", &self.publisher)
            .field("batch_size", &self.batch_size)
            .finish_non_exhaustive()
    }
}

impl<T: Send + Sync + 'static> ProducerBuilder<T> {
    /// The producer's id (default: a random UUID). Ids must be unique among
    /// the producers of a topic; consumers count end-of-stream per id.
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }

    /// The store of topics without a store of their own. Without one, such
    /// topics carry their objects inline in the events.
    pub fn default_store(mut self, store: Store<T>) -> Self {
        self.default_store = Some(store);
        self
    }

    /// The store of `topic`; `None` makes the topic inline even when there
    /// is a default store.
    pub fn store(mut self, topic: impl Into<String>, store: Option<Store<T>>) -> Self {
        self.stores.insert(topic.into(), store);
        self
    }

    /// How many objects a topic buffers before it flushes (at least 1, the
    /// default). Each flush publishes one event batch.
    pub fn batch_size(mut self, batch_size: usize) -> Self {
        self.batch_size = batch_size.max(1);
        self
    }

    /// Turns each flushed batch into one object. Its metadata is the union
    /// of the batch's metadata (later keys win) and it evicts if any object
    /// of the batch did.
    pub fn aggregator(mut self, f: impl Fn(&[T]) -> T + Send + Sync + 'static) -> Self {
        self.aggregator = Some(Box::new(f));
        self
    }

    /// Drops objects whose metadata the filter does not keep; dropped
    /// objects are never stored nor published.
    pub fn filter(mut self, filter: impl Filter) -> Self {
        self.filter = Some(Box::new(filter));
        self
    }

    /// How a flush retries a failed store or publish (default
    /// [`Retry::default`]). Every try of a batch carries the same sequence
    /// number and the same object keys, so a consumer that receives two
    /// copies (a publish whose reply was lost) skips the second.
    pub fn retry(mut self, retry: Retry) -> Self {
        self.retry = Retry {
            attempts: retry.attempts.max(1),
            ..retry
        };
        self
    }

    /// The producer.
    pub fn build(self) -> StreamProducer<T> {
        StreamProducer {
            id: self
                .id
                .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string()),
            publisher: self.publisher,
            codec: self.codec,
            default_store: self.default_store,
            stores: self.stores,
            batch_size: self.batch_size,
            aggregator: self.aggregator,
            filter: self.filter,
            retry: self.retry,
            topics: HashMap::new(),
            closed: false,
        }
    }
}

/// Streams objects of `T` to topics.
///
/// Objects are buffered per topic and flushed as one [`EventBatch`] when the
/// topic holds [`batch_size`](ProducerBuilder::batch_size) objects, on
/// [`flush`](Self::flush), and when the topic is closed. A flush stores the
/// batch's objects with one `put_batch` in the topic's store (the topic's
/// own, else the default one) and publishes their keys; a topic without a
/// store carries the objects inline. Objects are only written at flush time,
/// so an object still buffered has nothing in a store.
///
/// Batches carry the producer's id and a sequence number per topic.
/// [`close_topic`](Self::close_topic) and [`close`](Self::close) end a topic
/// *for this producer*: a consumer ends the topic when every producer that
/// wrote to it has closed it. So that a consumer knows about a producer from
/// its first send on, and not only from its first full batch, the first
/// send to a topic that does not fill a batch publishes an empty batch that
/// announces the producer.
///
/// A store or publish that fails for a reason that may pass (a broken
/// connection, a timeout) is tried again with the same batch, by the
/// producer's [`Retry`] policy. If the last try fails too, the objects
/// stored for it are evicted again (those whose eviction fails too are
/// named in [`ProducerError::Publish`]) and the batch stays buffered, so a
/// later flush retries it with the same sequence number. Dropping a producer without closing it warns (via `tracing`)
/// about buffered objects and open topics.
pub struct StreamProducer<T> {
    id: String,
    publisher: Box<dyn Publisher>,
    codec: Arc<dyn Codec<T>>,
    default_store: Option<Store<T>>,
    stores: HashMap<String, Option<Store<T>>>,
    batch_size: usize,
    aggregator: Option<Aggregator<T>>,
    filter: Option<Box<dyn Filter>>,
    retry: Retry,
    topics: HashMap<String, TopicState<T>>,
    closed: bool,
}

impl<T> fmt::Debug for StreamProducer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamProducer")
            .field("id", &self.id)
            .field("publisher", &self.publisher)
            .field("batch_size", &self.batch_size)
            .field("topics", &self.topics.keys().collect::<Vec<_>>())
            .field("closed", &self.closed)
            .finish_non_exhaustive()
    }
}

/// Evicts objects stored for a batch whose event was not published, also
/// when the flush is cancelled between the two.
struct OrphanGuard {
    connector: Option<Arc<dyn Connector>>,
    keys: Vec<Key>,
}

impl OrphanGuard {
    async fn evict(mut self) -> Vec<Key> {
        let mut orphaned = Vec::new();
        if let Some(c) = self.connector.take() {
            for key in std::mem::take(&mut self.keys) {
                if c.evict(&key).await.is_err() {
                    orphaned.push(key);
                }
            }
        }
        orphaned
    }

    fn disarm(mut self) {
        self.keys.clear();
    }
}

impl Drop for OrphanGuard {
    fn drop(&mut self) {
        let (Some(c), false) = (self.connector.take(), self.keys.is_empty()) else {
            return;
        };
        let keys = std::mem::take(&mut self.keys);
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn(async move {
                    for key in keys {
                        if let Err(e) = c.evict(&key).await {
                            tracing::warn!(%key, error = %e, "cannot evict the object of a cancelled flush");
                        }
                    }
                });
            }
            Err(_) => {
                tracing::warn!(?keys, "objects of a cancelled flush are left in the store");
            }
        }
    }
}

impl<T: Send + Sync + 'static> StreamProducer<T> {
    /// A builder of a producer publishing with `publisher` and encoding
    /// inline objects with `codec`.
    pub fn builder(
        publisher: impl Publisher + 'static,
        codec: impl Codec<T>,
    ) -> ProducerBuilder<T> {
        ProducerBuilder {
            publisher: Box::new(publisher),
            codec: Arc::new(codec),
            id: None,
            default_store: None,
            stores: HashMap::new(),
            batch_size: 1,
            aggregator: None,
            filter: None,
            retry: Retry::default(),
        }
    }

    /// The producer's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Sends `value` to `topic` with no metadata and `evict` on.
    ///
    /// # Errors
    ///
    /// As [`send_with`](Self::send_with).
    ///
    /// # Cancel safety
    ///
    /// As [`flush`](Self::flush).
    pub async fn send(&mut self, topic: &str, value: T) -> Result<(), ProducerError> {
        self.send_with(topic, value, SendOptions::default()).await
    }

    /// Sends `value` to `topic`: buffers it, and flushes the topic when the
    /// batch is full. Waits while the transport is full (backpressure).
    ///
    /// # Errors
    ///
    /// [`ProducerError::TopicClosed`] after the topic was closed,
    /// [`ProducerError::Closed`] after the producer was closed, and the
    /// errors of a flush (the value then stays buffered).
    ///
    /// # Cancel safety
    ///
    /// As [`flush`](Self::flush).
    pub async fn send_with(
        &mut self,
        topic: &str,
        value: T,
        options: SendOptions,
    ) -> Result<(), ProducerError> {
        self.check_open(topic)?;
        if let Some(f) = &self.filter {
            if !f.keep(&options.metadata) {
                return Ok(());
            }
        }
        let state = self.topics.entry(topic.to_owned()).or_default();
        state.buffer.push(value);
        state.options.push(options);
        if state.buffer.len() >= self.batch_size {
            self.flush_topic(topic).await?;
        } else if !state.announced {
            self.announce(topic).await?;
        }
        Ok(())
    }

    /// Publishes an empty batch so that consumers know this producer writes
    /// to `topic` before its first batch is full.
    async fn announce(&mut self, topic: &str) -> Result<(), ProducerError> {
        let state = self.topics.get_mut(topic).expect("topic state exists");
        let batch = EventBatch {
            topic: topic.to_owned(),
            producer: self.id.clone(),
            seq: state.seq,
            events: Vec::new(),
        };
        publish(&*self.publisher, self.retry, topic, batch.to_bytes())
            .await
            .map_err(|source| ProducerError::Publish {
                topic: topic.to_owned(),
                orphaned: Vec::new(),
                source,
            })?;
        state.seq += 1;
        state.announced = true;
        Ok(())
    }

    fn check_open(&self, topic: &str) -> Result<(), ProducerError> {
        if self.closed {
            return Err(ProducerError::Closed {
                producer: self.id.clone(),
            });
        }
        if self.topics.get(topic).is_some_and(|s| s.closing) {
            return Err(ProducerError::TopicClosed {
                topic: topic.to_owned(),
            });
        }
        Ok(())
    }

    fn store_for(&self, topic: &str) -> Option<&Store<T>> {
        match self.stores.get(topic) {
            Some(store) => store.as_ref(),
            None => self.default_store.as_ref(),
        }
    }

    /// Publishes what `topic` has buffered now, even a partial batch.
    ///
    /// # Errors
    ///
    /// As [`flush`](Self::flush).
    ///
    /// # Cancel safety
    ///
    /// As [`flush`](Self::flush).
    pub async fn flush_topic(&mut self, topic: &str) -> Result<(), ProducerError> {
        let Some(state) = self.topics.get(topic) else {
            return Ok(());
        };
        let end = state.closing && !state.ended;
        if state.buffer.is_empty() && !end {
            return Ok(());
        }
        let seq = state.seq;
        let topic_err = |source: StoreError| match source {
            StoreError::Codec(source) => ProducerError::Encode {
                topic: topic.to_owned(),
                source,
            },
            StoreError::Connector(source) => ProducerError::Store {
                topic: topic.to_owned(),
                source,
            },
        };

        // The objects to publish: the buffer, or its aggregate.
        let aggregate;
        let items: Vec<(&T, Metadata, bool)> = match &self.aggregator {
            Some(agg) if !state.buffer.is_empty() => {
                aggregate = agg(&state.buffer);
                let mut metadata = Metadata::new();
                for o in &state.options {
                    metadata.extend(o.metadata.clone());
                }
                let evict = state.options.iter().any(|o| o.evict);
                vec![(&aggregate, metadata, evict)]
            }
            _ => state
                .buffer
                .iter()
                .zip(&state.options)
                .map(|(v, o)| (v, o.metadata.clone(), o.evict))
                .collect(),
        };

        let mut events = Vec::with_capacity(items.len() + 1);
        let guard = match self.store_for(topic) {
            Some(store) => {
                let mut failures = 0;
                let keys = loop {
                    match store.put_batch(items.iter().map(|(v, _, _)| *v)).await {
                        Ok(keys) => break keys,
                        Err(e) if transient_store(&e) && failures + 1 < self.retry.attempts => {
                            failures += 1;
                            tracing::debug!(topic, error = %e, failures, "store failed; retrying");
                            tokio::time::sleep(self.retry.pause(failures)).await;
                        }
                        Err(e) => return Err(topic_err(e)),
                    }
                };
                let connector = store.connector().descriptor();
                for ((_, metadata, evict), key) in items.into_iter().zip(&keys) {
                    events.push(Event::Object {
                        key: key.clone(),
                        connector: connector.clone(),
                        evict,
                        metadata,
                    });
                }
                OrphanGuard {
                    connector: Some(store.connector().clone()),
                    keys,
                }
            }
            None => {
                for (value, metadata, _) in items {
                    let data =
                        self.codec
                            .encode(value)
                            .map_err(|source| ProducerError::Encode {
                                topic: topic.to_owned(),
                                source,
                            })?;
                    events.push(Event::Inline { data, metadata });
                }
                OrphanGuard {
                    connector: None,
                    keys: Vec::new(),
                }
            }
        };
        if end {
            events.push(Event::EndOfStream);
        }
        let batch = EventBatch {
            topic: topic.to_owned(),
            producer: self.id.clone(),
            seq,
            events,
        };
        match publish(&*self.publisher, self.retry, topic, batch.to_bytes()).await {
            Ok(()) => {
                guard.disarm();
                let state = self.topics.get_mut(topic).expect("topic state exists");
                state.buffer.clear();
                state.options.clear();
                state.seq += 1;
                state.announced = true;
                state.ended |= end;
                Ok(())
            }
            Err(source) => Err(ProducerError::Publish {
                topic: topic.to_owned(),
                orphaned: guard.evict().await,
                source,
            }),
        }
    }

    /// Publishes every topic's buffered objects.
    ///
    /// # Errors
    ///
    /// [`ProducerError::Encode`], [`ProducerError::Store`] or
    /// [`ProducerError::Publish`] for the first topic that failed; its batch
    /// stays buffered and no object of it is left in a store.
    ///
    /// # Cancel safety
    ///
    /// Cancelling a flush loses nothing: an unpublished batch stays
    /// buffered, and objects already stored for it are evicted in the
    /// background (a warning names them when no runtime is left to do so).
    pub async fn flush(&mut self) -> Result<(), ProducerError> {
        let topics: Vec<String> = self.topics.keys().cloned().collect();
        for topic in topics {
            self.flush_topic(&topic).await?;
        }
        Ok(())
    }

    /// Closes `topic` for this producer: flushes what it buffered and
    /// publishes its end of stream, ordered after everything sent before.
    /// Closing a closed topic again does nothing.
    ///
    /// # Errors
    ///
    /// As [`flush`](Self::flush); the close is retried by the next flush.
    ///
    /// # Cancel safety
    ///
    /// As [`flush`](Self::flush).
    pub async fn close_topic(&mut self, topic: &str) -> Result<(), ProducerError> {
        if self.closed {
            return Err(ProducerError::Closed {
                producer: self.id.clone(),
            });
        }
        self.topics.entry(topic.to_owned()).or_default().closing = true;
        self.flush_topic(topic).await
    }

    /// Closes every topic this producer wrote to (flushing its buffers: no
    /// buffered object is lost), then the publisher. Sending afterwards
    /// fails with [`ProducerError::Closed`].
    ///
    /// # Errors
    ///
    /// The first error among the topics' flushes, or
    /// [`ProducerError::Close`]; every topic is tried.
    ///
    /// # Cancel safety
    ///
    /// As [`flush`](Self::flush); call `close` again to finish.
    pub async fn close(&mut self) -> Result<(), ProducerError> {
        if self.closed {
            return Ok(());
        }
        let topics: Vec<String> = self.topics.keys().cloned().collect();
        let mut first = None;
        for topic in topics {
            self.topics.get_mut(&topic).expect("listed").closing = true;
            if let Err(e) = self.flush_topic(&topic).await {
                first.get_or_insert(e);
            }
        }
        if let Some(e) = first {
            return Err(e);
        }
        self.publisher.close().await.map_err(ProducerError::Close)?;
        self.closed = true;
        Ok(())
    }
}

impl<T> Drop for StreamProducer<T> {
    fn drop(&mut self) {
        let buffered: usize = self.topics.values().map(|s| s.buffer.len()).sum();
        let open: Vec<&String> = self
            .topics
            .iter()
            .filter(|(_, s)| !s.ended)
            .map(|(t, _)| t)
            .collect();
        if buffered > 0 || !open.is_empty() {
            tracing::warn!(
                producer = %self.id,
                buffered,
                ?open,
                "stream producer dropped without close: buffered objects are lost and open topics never end for consumers"
            );
        }
    }
}
