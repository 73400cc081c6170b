//! An in-process broker with bounded topics.

use std::collections::HashMap;
use std::future::poll_fn;
use std::sync::{Arc, Mutex};
use std::task::Poll;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::mpsc;

use super::{Delivery, Publisher, Subscriber};
use crate::error::TransportError;

struct TopicQueue {
    tx: mpsc::Sender<Bytes>,
    rx: Option<mpsc::Receiver<Bytes>>,
}

/// An in-process broker: one bounded queue per topic.
///
/// Messages published before a topic has a subscriber wait in its queue, so
/// nothing is lost for lack of a listener. Each topic has at most one
/// subscriber. A publisher waits while the topic's queue holds `capacity`
/// messages: that is the backpressure on producers when consumers fall
/// behind. Messages live in this process only and acknowledgement is a
/// no-op; there is no redelivery across a crash.
#[derive(Clone)]
pub struct MemoryBroker {
    capacity: usize,
    topics: Arc<Mutex<HashMap<String, TopicQueue>>>,
}

impl std::fmt::Debug for MemoryBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryBroker")
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

impl MemoryBroker {
    /// A broker whose topics each hold up to `capacity` messages (at least 1).
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            topics: Arc::default(),
        }
    }

    fn with_topic<R>(&self, topic: &str, f: impl FnOnce(&mut TopicQueue) -> R) -> R {
        let mut topics = self.topics.lock().expect("broker lock poisoned");
        let q = topics.entry(topic.to_owned()).or_insert_with(|| {
            let (tx, rx) = mpsc::channel(self.capacity);
            TopicQueue { tx, rx: Some(rx) }
        });
        f(q)
    }

    /// A publisher to this broker's topics.
    pub fn publisher(&self) -> MemoryPublisher {
        MemoryPublisher {
            broker: self.clone(),
        }
    }

    /// The subscriber of `topics`.
    ///
    /// # Errors
    ///
    /// [`TransportError::AlreadySubscribed`] when a topic already has one.
    pub fn subscriber<I, S>(&self, topics: I) -> Result<MemorySubscriber, TransportError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let topics: Vec<String> = topics.into_iter().map(Into::into).collect();
        let mut rxs = Vec::with_capacity(topics.len());
        for t in &topics {
            match self.with_topic(t, |q| q.rx.take()) {
                Some(rx) => rxs.push(rx),
                None => {
                    // Give back what was taken so the broker stays usable.
                    for (t, rx) in topics.iter().zip(rxs) {
                        self.with_topic(t, |q| q.rx = Some(rx));
                    }
                    return Err(TransportError::AlreadySubscribed { topic: t.clone() });
                }
            }
        }
        Ok(MemorySubscriber {
            broker: self.clone(),
            topics,
            rxs,
            start: 0,
            next_id: 0,
        })
    }
}

/// Publishes to a [`MemoryBroker`].
#[derive(Debug, Clone)]
pub struct MemoryPublisher {
    broker: MemoryBroker,
}

#[async_trait]
impl Publisher for MemoryPublisher {
    async fn publish(&self, topic: &str, message: Bytes) -> Result<(), TransportError> {
        let tx = self.broker.with_topic(topic, |q| q.tx.clone());
        tx.send(message).await.map_err(|_| TransportError::Backend {
            backend: "memory",
            topic: topic.to_owned(),
            source: "the topic's subscriber was dropped".into(),
        })
    }
}

/// Receives from a [`MemoryBroker`].
///
/// Dropping it gives its topics back to the broker with the messages still
/// queued, so a new subscriber continues where it stopped (messages it had
/// already received are not delivered again).
#[derive(Debug)]
pub struct MemorySubscriber {
    broker: MemoryBroker,
    topics: Vec<String>,
    rxs: Vec<mpsc::Receiver<Bytes>>,
    start: usize,
    next_id: u64,
}

#[async_trait]
impl Subscriber for MemorySubscriber {
    fn topics(&self) -> &[String] {
        &self.topics
    }

    async fn next(&mut self) -> Result<Option<Delivery>, TransportError> {
        if self.rxs.is_empty() {
            return Ok(None);
        }
        // Poll the topics round-robin from a rotating start, for fairness.
        let n = self.rxs.len();
        let (index, message) = poll_fn(|cx| {
            for i in 0..n {
                let index = (self.start + i) % n;
                if let Poll::Ready(Some(m)) = self.rxs[index].poll_recv(cx) {
                    return Poll::Ready((index, m));
                }
            }
            Poll::Pending
        })
        .await;
        self.start = (index + 1) % n;
        self.next_id += 1;
        Ok(Some(Delivery {
            id: self.next_id,
            topic: self.topics[index].clone(),
            message,
        }))
    }

    async fn ack(&mut self, _id: u64) -> Result<(), TransportError> {
        Ok(())
    }
}

impl Drop for MemorySubscriber {
    fn drop(&mut self) {
        for (topic, rx) in self.topics.iter().zip(self.rxs.drain(..)) {
            self.broker.with_topic(topic, |q| q.rx = Some(rx));
        }
    }
}
