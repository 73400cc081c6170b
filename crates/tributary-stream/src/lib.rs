#![doc = include_str!("../../../docs/streams.md")]

mod codec;
mod connector;
mod consumer;
mod error;
mod event;
mod filter;
mod producer;
mod proxy;
mod publisher;
#[cfg(feature = "redis")]
mod redis_client;
mod store;

#[doc(inline)]
pub use codec::{Codec, Json, Raw};
#[cfg(feature = "redis")]
#[doc(inline)]
pub use connector::redis::RedisConnector;
#[doc(inline)]
pub use connector::{
    Connector, ConnectorDescriptor, ConnectorRegistry, Key, file::FileConnector,
    memory::MemoryConnector,
};
#[doc(inline)]
pub use consumer::{
    ConsumerBuilder, ConsumerStats, DEFAULT_SEQUENCE_WINDOW, Item, Payload, StreamConsumer,
};
#[doc(inline)]
pub use error::{
    BoxError, CodecError, ConnectorError, ConsumerError, EventDecodeError, InvalidProbability,
    ProducerError, ResolveError, StoreError, TransportError,
};
#[doc(inline)]
pub use event::{Event, EventBatch, Metadata};
#[doc(inline)]
pub use filter::{Filter, Sample};
#[doc(inline)]
pub use producer::{ProducerBuilder, Retry, SendOptions, StreamProducer};
#[doc(inline)]
pub use proxy::Proxy;
#[doc(inline)]
pub use publisher::memory::{MemoryBroker, MemoryPublisher, MemorySubscriber};
#[cfg(feature = "nats")]
#[doc(inline)]
pub use publisher::nats::{NatsPublisher, NatsSubscriber, NatsSubscriberOptions};
#[cfg(feature = "redis")]
#[doc(inline)]
pub use publisher::redis::{RedisPublisher, RedisSubscriber};
#[doc(inline)]
pub use publisher::{Delivery, Publisher, Subscriber};
#[doc(inline)]
pub use store::Store;
