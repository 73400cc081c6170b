//! The event plane's transports: publishers and subscribers of topics.
//!
//! They move opaque messages (encoded [`EventBatch`](crate::EventBatch)es)
//! per topic and know nothing of stores. Every subscriber is
//! at-least-once: a delivery stays pending until it is acknowledged, and the
//! durable backends (Redis Streams consumer groups, NATS JetStream durable
//! consumers) deliver unacknowledged messages again to a subscriber that
//! resumes the same subscription.

use std::fmt;

use async_trait::async_trait;
use bytes::Bytes;

use crate::error::TransportError;

pub(crate) mod memory;
#[cfg(feature = "nats")]
pub(crate) mod nats;
#[cfg(feature = "redis")]
pub(crate) mod redis;

/// Sends messages to topics.
#[async_trait]
pub trait Publisher: Send + Sync + fmt::Debug {
    /// Publishes `message` on `topic`. When this returns `Ok`, the broker
    /// holds the message (the durable backends have persisted it). It waits
    /// while the topic is full, which is how consumers that fall behind slow
    /// producers down.
    ///
    /// # Errors
    ///
    /// When the broker refuses or fails, or the topic stays full too long.
    async fn publish(&self, topic: &str, message: Bytes) -> Result<(), TransportError>;

    /// Releases the publisher's resources. Idempotent.
    ///
    /// # Errors
    ///
    /// When the backend fails to close.
    async fn close(&self) -> Result<(), TransportError> {
        Ok(())
    }
}

/// One received message, to be acknowledged by its `id`.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The subscriber-local id to [`ack`](Subscriber::ack) with.
    pub id: u64,
    /// The topic it was published on.
    pub topic: String,
    /// The message.
    pub message: Bytes,
}

/// Receives the messages of a set of topics.
#[async_trait]
pub trait Subscriber: Send + fmt::Debug {
    /// The topics this subscriber receives.
    fn topics(&self) -> &[String];

    /// The next message, or `None` when the subscription has ended for good.
    ///
    /// # Errors
    ///
    /// When the backend fails.
    ///
    /// # Cancel safety
    ///
    /// Implementations must be cancel safe: a cancelled call loses no
    /// message (the message is returned by a later call).
    async fn next(&mut self) -> Result<Option<Delivery>, TransportError>;

    /// Acknowledges a delivery: it will not be delivered again.
    ///
    /// # Errors
    ///
    /// When the backend fails, or `id` is not a pending delivery.
    async fn ack(&mut self, id: u64) -> Result<(), TransportError>;
}

#[async_trait]
impl<P: Publisher + ?Sized> Publisher for Box<P> {
    async fn publish(&self, topic: &str, message: Bytes) -> Result<(), TransportError> {
        (**self).publish(topic, message).await
    }

    async fn close(&self) -> Result<(), TransportError> {
        (**self).close().await
    }
}

#[async_trait]
impl<P: Publisher + ?Sized> Publisher for std::sync::Arc<P> {
    async fn publish(&self, topic: &str, message: Bytes) -> Result<(), TransportError> {
        (**self).publish(topic, message).await
    }

    async fn close(&self) -> Result<(), TransportError> {
        (**self).close().await
    }
}

#[async_trait]
impl<S: Subscriber + ?Sized> Subscriber for Box<S> {
    fn topics(&self) -> &[String] {
        (**self).topics()
    }

    async fn next(&mut self) -> Result<Option<Delivery>, TransportError> {
        (**self).next().await
    }

    async fn ack(&mut self, id: u64) -> Result<(), TransportError> {
        (**self).ack(id).await
    }
}
