//! Errors of proxy streams, one enum per concern.

use std::path::PathBuf;

use crate::connector::Key;

/// A boxed error from a backend client or user code.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A connector could not store, read or remove an object.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectorError {
    /// A file operation of the file connector failed.
    #[error("i/o error on {}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The backend (a server, a client library) failed.
    #[error("{kind} connector failed on {what}")]
    Backend {
        /// The connector kind (`"redis"`).
        kind: &'static str,
        /// What was being done, naming the key where there is one.
        what: String,
        /// The underlying error.
        #[source]
        source: BoxError,
    },
    /// The backend did not answer within the connector's deadline (a
    /// stalled server); the call can be tried again.
    #[error("{kind} connector got no reply within {after:?} on {what}")]
    Timeout {
        /// The connector kind.
        kind: &'static str,
        /// What was being done, naming the key where there is one.
        what: String,
        /// The deadline that passed.
        after: std::time::Duration,
    },
    /// The key cannot name an object of this connector (for example a file
    /// key with a path separator).
    #[error("key {key} is not valid for the {kind} connector")]
    InvalidKey {
        /// The connector kind.
        kind: &'static str,
        /// The key.
        key: Key,
    },
    /// A connector description could not be turned into a connector.
    #[error("invalid {kind} connector config: {reason}")]
    InvalidConfig {
        /// The connector kind.
        kind: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// A codec could not encode or decode a value.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// Encoding the value failed.
    #[error("cannot encode value with the {codec} codec")]
    Encode {
        /// The codec's name.
        codec: &'static str,
        /// The underlying error.
        #[source]
        source: BoxError,
    },
    /// Decoding bytes failed.
    #[error("cannot decode value with the {codec} codec")]
    Decode {
        /// The codec's name.
        codec: &'static str,
        /// The underlying error.
        #[source]
        source: BoxError,
    },
}

/// A typed [`Store`](crate::Store) operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The value could not be encoded or decoded.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// The connector failed.
    #[error(transparent)]
    Connector(#[from] ConnectorError),
}

/// A [`Proxy`](crate::Proxy) could not be resolved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ResolveError {
    /// The object is not (or no longer) in the store: it was evicted, by an
    /// earlier resolve of an evicting proxy, or never written.
    #[error("object {key} is missing from the {connector} connector")]
    MissingKey {
        /// The key.
        key: Key,
        /// The connector's kind.
        connector: String,
    },
    /// The proxy names a connector that this program did not register.
    #[error("connector kind `{kind}` named by key {key} is not registered as trusted")]
    UntrustedConnector {
        /// The key.
        key: Key,
        /// The connector kind the proxy names.
        kind: String,
    },
    /// The proxy was deserialized and never bound to a registry.
    #[error("proxy for key {key} is not bound to a connector registry")]
    Unbound {
        /// The key.
        key: Key,
    },
    /// The stored bytes did not decode into the proxy's type.
    #[error("object {key} does not decode")]
    Decode {
        /// The key.
        key: Key,
        /// The codec error.
        #[source]
        source: CodecError,
    },
    /// The connector failed while reading or evicting the object.
    #[error("connector failed while resolving {key}")]
    Connector {
        /// The key.
        key: Key,
        /// The connector error.
        #[source]
        source: ConnectorError,
    },
}

/// A publisher or subscriber failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The broker or its client failed.
    #[error("{backend} transport failed on topic `{topic}`")]
    Backend {
        /// The backend (`"redis"`, `"nats"`).
        backend: &'static str,
        /// The topic, or `*` when the failure concerns no single topic.
        topic: String,
        /// The underlying error.
        #[source]
        source: BoxError,
    },
    /// The broker did not answer within the deadline (a stalled server or
    /// network); the call can be tried again.
    #[error("{backend} transport got no reply within {after:?} on topic `{topic}`")]
    Timeout {
        /// The backend (`"redis"`, `"nats"`).
        backend: &'static str,
        /// The topic, or `*` when the call concerns no single topic.
        topic: String,
        /// The deadline that passed.
        after: std::time::Duration,
    },
    /// The topic cannot be used with this backend.
    #[error("invalid topic `{topic}`: {reason}")]
    InvalidTopic {
        /// The topic.
        topic: String,
        /// Why it is invalid.
        reason: &'static str,
    },
    /// A memory topic already has its one subscriber.
    #[error("topic `{topic}` already has a subscriber")]
    AlreadySubscribed {
        /// The topic.
        topic: String,
    },
    /// The publisher waited too long for consumers to catch up.
    #[error("topic `{topic}` stayed full for {waited:?}; consumers are not keeping up")]
    Backpressure {
        /// The topic.
        topic: String,
        /// How long the publisher waited.
        waited: std::time::Duration,
    },
    /// An acknowledgement named a delivery this subscriber does not hold.
    #[error("unknown delivery {id}")]
    UnknownDelivery {
        /// The delivery id.
        id: u64,
    },
}

/// An event batch could not be decoded from bytes.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EventDecodeError {
    /// The bytes do not start with the event format's magic and version.
    #[error("not an event batch (bad magic or version)")]
    BadMagic,
    /// The bytes end before the header or a payload does.
    #[error("event batch is truncated")]
    Truncated,
    /// The header is not valid.
    #[error("event batch header is invalid")]
    Header(#[source] serde_json::Error),
}

/// A [`StreamProducer`](crate::StreamProducer) operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProducerError {
    /// The producer was closed.
    #[error("producer {producer} is closed")]
    Closed {
        /// The producer's id.
        producer: String,
    },
    /// The topic was closed by this producer.
    #[error("topic `{topic}` is closed")]
    TopicClosed {
        /// The topic.
        topic: String,
    },
    /// An object of the topic could not be encoded.
    #[error("cannot encode an object of topic `{topic}`")]
    Encode {
        /// The topic.
        topic: String,
        /// The codec error.
        #[source]
        source: CodecError,
    },
    /// The topic's store failed to take the batch; nothing was published and
    /// the batch stays buffered.
    #[error("store of topic `{topic}` failed")]
    Store {
        /// The topic.
        topic: String,
        /// The connector error.
        #[source]
        source: ConnectorError,
    },
    /// Publishing the batch failed. The objects already put for it were
    /// evicted again, except those listed in `orphaned` (their eviction
    /// failed too); the batch stays buffered so that a later flush retries it.
    #[error("publishing to topic `{topic}` failed ({} orphaned objects)", orphaned.len())]
    Publish {
        /// The topic.
        topic: String,
        /// Keys whose objects are in the store without an event.
        orphaned: Vec<Key>,
        /// The transport error.
        #[source]
        source: TransportError,
    },
    /// Closing the publisher failed.
    #[error("closing the publisher failed")]
    Close(#[source] TransportError),
}

/// A [`StreamConsumer`](crate::StreamConsumer) could not deliver an item.
///
/// Every variant but [`Transport`](Self::Transport) leaves the consumer
/// usable: the next call continues with the next item.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConsumerError {
    /// The subscriber failed.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// A message did not decode as an event batch; it is acknowledged and
    /// skipped.
    #[error("undecodable message on the subscription")]
    Decode(#[source] EventDecodeError),
    /// A producer's batch sequence jumped: batches `expected..got` of the
    /// topic never arrived. The consumer continues from `got`.
    #[error("topic `{topic}`: producer {producer} skipped batches {expected}..{got}")]
    SequenceGap {
        /// The topic.
        topic: String,
        /// The producer.
        producer: String,
        /// The sequence number the consumer expected.
        expected: u64,
        /// The sequence number it received.
        got: u64,
    },
    /// A batch's sequence number is outside any plausible window of its
    /// producer (more than the consumer's window ahead of the next expected
    /// one, or at the end of the number range): a forged or corrupt batch.
    /// It is acknowledged and skipped, and the producer's later batches are
    /// judged as if it never came.
    #[error(
        "topic `{topic}`: producer {producer} sent batch {got}, outside the plausible window from {expected}"
    )]
    ImplausibleSequence {
        /// The topic.
        topic: String,
        /// The producer.
        producer: String,
        /// The sequence number the consumer expected.
        expected: u64,
        /// The sequence number it received.
        got: u64,
    },
    /// A message on one topic carries a batch that names another topic. It
    /// is acknowledged and skipped; its producer is not registered.
    #[error("a message on topic `{delivered}` names topic `{named}`")]
    TopicMismatch {
        /// The topic the message was delivered on.
        delivered: String,
        /// The topic its batch names.
        named: String,
    },
    /// An inline object did not decode.
    #[error("inline object of topic `{topic}` does not decode")]
    Inline {
        /// The topic.
        topic: String,
        /// The codec error.
        #[source]
        source: CodecError,
    },
    /// An object could not be resolved (eagerly resolving streams, or
    /// evicting a filtered object).
    #[error("object of topic `{topic}` cannot be resolved")]
    Resolve {
        /// The topic.
        topic: String,
        /// The resolve error.
        #[source]
        source: ResolveError,
    },
}

/// A sampling probability outside `[0, 1]`.
#[derive(Debug, thiserror::Error)]
#[error("sampling probability {0} is outside [0, 1]")]
pub struct InvalidProbability(pub f64);
