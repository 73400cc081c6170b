//! The consuming side: proxies (or values) in producer order, per topic.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::sync::Arc;

use futures_core::Stream;
use serde::{Deserialize, Serialize};

use crate::codec::Codec;
use crate::connector::ConnectorRegistry;
use crate::error::{ConsumerError, ResolveError};
use crate::event::{Event, EventBatch, Metadata};
use crate::filter::Filter;
use crate::proxy::{Proxy, Source};
use crate::publisher::Subscriber;

/// An object as received: the value itself (inline topics) or a proxy.
///
/// Serializing a payload sends the proxy's reference (or the inline value),
/// never fetched bytes: a dispatcher can forward it to a worker that
/// [`bind`](Self::bind)s and resolves it.
#[derive(Debug, Serialize, Deserialize)]
pub enum Payload<T> {
    /// An object carried in the event.
    Inline(T),
    /// An object in a store.
    Proxy(Proxy<T>),
}

impl<T: Send + Sync + 'static> Payload<T> {
    /// Binds a proxy payload (see [`Proxy::bind`]); inline values need no
    /// binding.
    pub fn bind(self, registry: &ConnectorRegistry, codec: impl Codec<T>) -> Self {
        match self {
            Self::Proxy(p) => Self::Proxy(p.bind(registry, codec)),
            inline => inline,
        }
    }

    /// The value, resolving a proxy on the first call.
    ///
    /// # Errors
    ///
    /// As [`Proxy::resolve`].
    ///
    /// # Cancel safety
    ///
    /// As [`Proxy::resolve`].
    pub async fn resolve(&self) -> Result<&T, ResolveError> {
        match self {
            Self::Inline(v) => Ok(v),
            Self::Proxy(p) => p.resolve().await,
        }
    }

    /// Resolves and returns the value.
    ///
    /// # Errors
    ///
    /// As [`Proxy::resolve`].
    pub async fn into_value(self) -> Result<T, ResolveError> {
        match self {
            Self::Inline(v) => Ok(v),
            Self::Proxy(p) => p.into_value().await,
        }
    }

    /// The proxy, if the object is in a store.
    pub fn proxy(&self) -> Option<&Proxy<T>> {
        match self {
            Self::Proxy(p) => Some(p),
            Self::Inline(_) => None,
        }
    }
}

/// One received object with where it came from.
#[derive(Debug)]
#[non_exhaustive]
pub struct Item<T> {
    /// The topic.
    pub topic: String,
    /// The producer that sent it.
    pub producer: String,
    /// The sequence number of the batch it came in.
    pub seq: u64,
    /// Its metadata.
    pub metadata: Metadata,
    /// The object.
    pub payload: Payload<T>,
}

/// Counters of what a consumer skipped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConsumerStats {
    /// Batches received again and skipped (redeliveries).
    pub duplicates: u64,
    /// Sequence gaps reported.
    pub gaps: u64,
    /// Batches skipped because their sequence number was implausible.
    pub implausible: u64,
    /// Objects the consumer's filter dropped.
    pub filtered: u64,
}

#[derive(Default)]
struct TopicProgress {
    // Producer id -> (next expected seq, closed).
    producers: HashMap<String, (u64, bool)>,
}

struct Current {
    delivery: u64,
    topic: String,
    producer: String,
    seq: u64,
    events: VecDeque<Event>,
}

/// Builds a [`StreamConsumer`].
pub struct ConsumerBuilder<T> {
    subscriber: Box<dyn Subscriber>,
    registry: ConnectorRegistry,
    codec: Arc<dyn Codec<T>>,
    filter: Option<Box<dyn Filter>>,
    expected: HashSet<String>,
    resuming: bool,
    window: u64,
}

/// How far ahead of the next expected batch a producer's batch may be by
/// default before it is judged implausible.
pub const DEFAULT_SEQUENCE_WINDOW: u64 = 1 << 16;

impl<T> fmt::Debug for ConsumerBuilder<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConsumerBuilder")
            .field("subscriber", &self.subscriber)
            .field("registry", &self.registry)
            .finish_non_exhaustive()
    }
}

impl<T: Send + Sync + 'static> ConsumerBuilder<T> {
    /// Skips objects whose metadata the filter does not keep, evicting the
    /// objects of skipped events that say `evict`.
    pub fn filter(mut self, filter: impl Filter) -> Self {
        self.filter = Some(Box::new(filter));
        self
    }

    /// Producers every topic waits for, even before it heard from them: a
    /// topic ends only once these have closed it too. Use it when a
    /// consumer might otherwise see one producer close before another
    /// producer's first batch arrived (or after it was acknowledged by an
    /// earlier run).
    pub fn expect_producers<I, S>(mut self, producers: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.expected = producers.into_iter().map(Into::into).collect();
        self
    }

    /// The consumer resumes a durable subscription whose earlier batches an
    /// earlier run already acknowledged: the first batch seen from each
    /// producer is taken as the start rather than reported as a gap.
    pub fn resuming(mut self, resuming: bool) -> Self {
        self.resuming = resuming;
        self
    }

    /// How far ahead of the next expected sequence number a producer's
    /// batch may be (default [`DEFAULT_SEQUENCE_WINDOW`]). A batch further
    /// ahead is reported as [`ConsumerError::ImplausibleSequence`] and
    /// skipped, so that one forged or corrupt batch cannot make the
    /// producer's real later batches look like duplicates.
    pub fn sequence_window(mut self, window: u64) -> Self {
        self.window = window;
        self
    }

    /// The consumer.
    pub fn build(self) -> StreamConsumer<T> {
        let topics = self
            .subscriber
            .topics()
            .iter()
            .map(|t| (t.clone(), TopicProgress::default()))
            .collect();
        StreamConsumer {
            subscriber: self.subscriber,
            registry: self.registry,
            codec: self.codec,
            filter: self.filter,
            expected: self.expected,
            resuming: self.resuming,
            window: self.window,
            topics,
            current: None,
            pending_error: None,
            stats: ConsumerStats::default(),
        }
    }
}

/// Receives the objects of a subscriber's topics as [`Item`]s.
///
/// Items come in the order each producer sent them on each topic. Events
/// that name a store become [`Payload::Proxy`]s bound to the consumer's
/// [`ConnectorRegistry`]: nothing is fetched until (and where) a proxy is
/// resolved, and a connector the registry does not trust is never built.
///
/// # Delivery and acknowledgement
///
/// A batch is acknowledged when [`next`](Self::next) is called after its
/// last item was returned: a consumer that crashes while handling an item
/// gets that item's batch again when it resumes the subscription
/// (at-least-once). Sequence numbers are judged per producer and topic: a
/// batch whose number the producer already delivered is skipped as a
/// duplicate; a jump is reported once as [`ConsumerError::SequenceGap`]; a
/// batch beyond the [plausible window](ConsumerBuilder::sequence_window)
/// (or at the end of the number range) is reported as
/// [`ConsumerError::ImplausibleSequence`] and skipped without moving the
/// producer's position; a batch that names another topic than the one it
/// arrived on is reported as [`ConsumerError::TopicMismatch`] and skipped.
///
/// # End of stream
///
/// A topic ends when every producer seen on it (and every
/// [expected](ConsumerBuilder::expect_producers) one) has closed it; the
/// consumer ends (`next` returns `None`) when all its topics have ended.
pub struct StreamConsumer<T> {
    subscriber: Box<dyn Subscriber>,
    registry: ConnectorRegistry,
    codec: Arc<dyn Codec<T>>,
    filter: Option<Box<dyn Filter>>,
    expected: HashSet<String>,
    resuming: bool,
    window: u64,
    topics: HashMap<String, TopicProgress>,
    current: Option<Current>,
    pending_error: Option<ConsumerError>,
    stats: ConsumerStats,
}

impl<T> fmt::Debug for StreamConsumer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamConsumer")
            .field("subscriber", &self.subscriber)
            .field("topics", &self.topics.keys().collect::<Vec<_>>())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl<T: Send + Sync + 'static> StreamConsumer<T> {
    /// A builder of a consumer of `subscriber`'s topics that resolves
    /// connectors through `registry` and decodes with `codec`.
    pub fn builder(
        subscriber: impl Subscriber + 'static,
        registry: ConnectorRegistry,
        codec: impl Codec<T>,
    ) -> ConsumerBuilder<T> {
        ConsumerBuilder {
            subscriber: Box::new(subscriber),
            registry,
            codec: Arc::new(codec),
            filter: None,
            expected: HashSet::new(),
            resuming: false,
            window: DEFAULT_SEQUENCE_WINDOW,
        }
    }

    /// What the consumer skipped so far.
    pub fn stats(&self) -> ConsumerStats {
        self.stats
    }

    /// Whether `topic` has ended (every producer closed it).
    pub fn topic_ended(&self, topic: &str) -> bool {
        self.topics.get(topic).is_some_and(|p| self.ended(p))
    }

    fn ended(&self, progress: &TopicProgress) -> bool {
        !progress.producers.is_empty()
            && progress.producers.values().all(|(_, closed)| *closed)
            && self
                .expected
                .iter()
                .all(|p| progress.producers.get(p).is_some_and(|(_, c)| *c))
    }

    fn all_ended(&self) -> bool {
        self.subscriber.topics().iter().all(|t| self.topic_ended(t))
    }

    /// The next item, or `None` once every topic has ended.
    ///
    /// # Errors
    ///
    /// An item of `Err` reports a transport failure, an undecodable message,
    /// a sequence gap, an inline object that does not decode, or a failed
    /// eviction of a filtered object; the consumer goes on with the next
    /// call.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a cancelled call loses no item. At worst the
    /// acknowledgement of the batch just finished is lost, and the batch
    /// is delivered again later and skipped as a duplicate; or, when it is
    /// cancelled while evicting the object of a filtered event, that object
    /// stays in its store.
    pub async fn next(&mut self) -> Option<Result<Item<T>, ConsumerError>> {
        loop {
            if let Some(e) = self.pending_error.take() {
                return Some(Err(e));
            }
            if let Some(item) = self.next_in_batch().await {
                return Some(item);
            }
            if let Some(cur) = self.current.take() {
                if let Err(e) = self.subscriber.ack(cur.delivery).await {
                    return Some(Err(e.into()));
                }
                continue;
            }
            if self.all_ended() {
                return None;
            }
            let delivery = match self.subscriber.next().await {
                Ok(Some(d)) => d,
                Ok(None) => return None,
                Err(e) => return Some(Err(e.into())),
            };
            let batch = match EventBatch::from_bytes(delivery.message) {
                Ok(b) => b,
                Err(e) => {
                    if let Err(e) = self.subscriber.ack(delivery.id).await {
                        return Some(Err(e.into()));
                    }
                    return Some(Err(ConsumerError::Decode(e)));
                }
            };
            if batch.topic != delivery.topic {
                if let Err(e) = self.subscriber.ack(delivery.id).await {
                    return Some(Err(e.into()));
                }
                return Some(Err(ConsumerError::TopicMismatch {
                    delivered: delivery.topic,
                    named: batch.topic,
                }));
            }
            let known = self
                .topics
                .get(&batch.topic)
                .and_then(|t| t.producers.get(&batch.producer))
                .map(|(next, _)| *next);
            let expected = match known {
                Some(next) => next,
                None if self.resuming => batch.seq,
                None => 0,
            };
            if batch.seq < expected {
                self.stats.duplicates += 1;
                if let Err(e) = self.subscriber.ack(delivery.id).await {
                    return Some(Err(e.into()));
                }
                continue;
            }
            let following = batch.seq.checked_add(1);
            let (Some(following), true) = (following, batch.seq - expected <= self.window) else {
                self.stats.implausible += 1;
                if let Err(e) = self.subscriber.ack(delivery.id).await {
                    return Some(Err(e.into()));
                }
                return Some(Err(ConsumerError::ImplausibleSequence {
                    topic: batch.topic,
                    producer: batch.producer,
                    expected,
                    got: batch.seq,
                }));
            };
            if batch.seq > expected {
                self.stats.gaps += 1;
                self.pending_error = Some(ConsumerError::SequenceGap {
                    topic: batch.topic.clone(),
                    producer: batch.producer.clone(),
                    expected,
                    got: batch.seq,
                });
            }
            self.topics
                .entry(batch.topic.clone())
                .or_default()
                .producers
                .entry(batch.producer.clone())
                .or_insert((0, false))
                .0 = following;
            self.current = Some(Current {
                delivery: delivery.id,
                topic: batch.topic,
                producer: batch.producer,
                seq: batch.seq,
                events: batch.events.into(),
            });
        }
    }

    /// The next item of the current batch, handling end-of-stream events
    /// and filtered objects on the way.
    async fn next_in_batch(&mut self) -> Option<Result<Item<T>, ConsumerError>> {
        loop {
            let cur = self.current.as_mut()?;
            let event = cur.events.pop_front()?;
            let (topic, producer, seq) = (cur.topic.clone(), cur.producer.clone(), cur.seq);
            match event {
                Event::EndOfStream => {
                    if let Some(p) = self
                        .topics
                        .get_mut(&topic)
                        .and_then(|t| t.producers.get_mut(&producer))
                    {
                        p.1 = true;
                    }
                }
                Event::Inline { data, metadata } => {
                    if self.filtered(&metadata) {
                        continue;
                    }
                    return Some(match self.codec.decode(data) {
                        Ok(v) => Ok(Item {
                            topic,
                            producer,
                            seq,
                            metadata,
                            payload: Payload::Inline(v),
                        }),
                        Err(source) => Err(ConsumerError::Inline { topic, source }),
                    });
                }
                Event::Object {
                    key,
                    connector,
                    evict,
                    metadata,
                } => {
                    if self.filtered(&metadata) {
                        if evict {
                            // Filtered data must not leak.
                            let evicted =
                                match self.registry.resolve(&connector, &key) {
                                    Ok(c) => c.evict(&key).await.map_err(|source| {
                                        ResolveError::Connector {
                                            key: key.clone(),
                                            source,
                                        }
                                    }),
                                    Err(e) => Err(e),
                                };
                            if let Err(source) = evicted {
                                return Some(Err(ConsumerError::Resolve { topic, source }));
                            }
                        }
                        continue;
                    }
                    let proxy = Proxy::bound(
                        key,
                        connector,
                        evict,
                        Source::Registry(self.registry.clone()),
                        self.codec.clone(),
                    );
                    return Some(Ok(Item {
                        topic,
                        producer,
                        seq,
                        metadata,
                        payload: Payload::Proxy(proxy),
                    }));
                }
            }
        }
    }

    fn filtered(&mut self, metadata: &Metadata) -> bool {
        let drop = self.filter.as_ref().is_some_and(|f| !f.keep(metadata));
        if drop {
            self.stats.filtered += 1;
        }
        drop
    }

    /// The next object, resolved, with its metadata.
    ///
    /// # Errors
    ///
    /// As [`next`](Self::next), plus [`ConsumerError::Resolve`] when the
    /// object cannot be resolved.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe once an item was taken: cancelling while resolving
    /// drops that item (its batch is then still acknowledged by the next
    /// call).
    pub async fn next_value(&mut self) -> Option<Result<(Metadata, T), ConsumerError>> {
        let item = match self.next().await? {
            Ok(item) => item,
            Err(e) => return Some(Err(e)),
        };
        let topic = item.topic;
        let metadata = item.metadata;
        Some(
            item.payload
                .into_value()
                .await
                .map(|v| (metadata, v))
                .map_err(|source| ConsumerError::Resolve { topic, source }),
        )
    }

    /// The consumer as a [`Stream`] of items (proxies or inline values).
    pub fn into_stream(self) -> impl Stream<Item = Result<Item<T>, ConsumerError>> + Send {
        futures_util::stream::unfold(self, |mut c| async move {
            let item = c.next().await?;
            Some((item, c))
        })
    }

    /// The consumer as a [`Stream`] of resolved objects with their metadata.
    pub fn into_value_stream(
        self,
    ) -> impl Stream<Item = Result<(Metadata, T), ConsumerError>> + Send {
        futures_util::stream::unfold(self, |mut c| async move {
            let item = c.next_value().await?;
            Some((item, c))
        })
    }
}
