//! Failure semantics that need no server: failed publishes, backpressure.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use futures_util::FutureExt;
use tributary_stream::{
    ConnectorRegistry, Json, MemoryBroker, MemoryConnector, MemoryPublisher, ProducerError,
    Publisher, Retry, Store, StreamConsumer, StreamProducer, TransportError,
};

use crate::stream_support::WAIT;

/// Fails its first `failures` publishes, then publishes to memory.
#[derive(Debug)]
struct Flaky {
    inner: MemoryPublisher,
    failures: Arc<AtomicUsize>,
}

#[async_trait]
impl Publisher for Flaky {
    async fn publish(&self, topic: &str, message: bytes::Bytes) -> Result<(), TransportError> {
        let left = self.failures.load(Ordering::SeqCst);
        if left > 0 {
            self.failures.store(left - 1, Ordering::SeqCst);
            return Err(TransportError::Backend {
                backend: "flaky",
                topic: topic.to_owned(),
                source: "broker unavailable".into(),
            });
        }
        self.inner.publish(topic, message).await
    }
}

#[tokio::test]
async fn a_failed_publish_evicts_its_objects_and_keeps_the_batch_for_a_retry() {
    let broker = MemoryBroker::new(16);
    let memory = MemoryConnector::new();
    let failures = Arc::new(AtomicUsize::new(0));
    let publisher = Flaky {
        inner: broker.publisher(),
        failures: failures.clone(),
    };
    // Without retries, so that one failure reaches the caller.
    let mut producer = StreamProducer::builder(publisher, Json)
        .default_store(Store::new(memory.clone(), Json))
        .batch_size(2)
        .retry(Retry::never())
        .build();
    let registry = ConnectorRegistry::new().with_connector(memory.clone());
    let mut consumer =
        StreamConsumer::<u32>::builder(broker.subscriber(["t"]).unwrap(), registry, Json).build();

    // The first send announces the producer; the batch's publish fails.
    producer.send("t", 1).await.unwrap();
    failures.store(1, Ordering::SeqCst);
    let err = producer.send("t", 2).await.unwrap_err();
    match &err {
        ProducerError::Publish {
            topic, orphaned, ..
        } => {
            assert_eq!(topic, "t");
            assert!(orphaned.is_empty(), "every stored object could be evicted");
        }
        other => panic!("expected a publish error, got {other:?}"),
    }
    assert!(
        memory.is_empty(),
        "no object without an event is left in the store"
    );

    // The batch is still buffered: the next flush publishes it, with the
    // sequence number the failed publish had (0 was the announcement).
    producer.flush().await.unwrap();
    producer.close().await.unwrap();
    let mut got = Vec::new();
    while let Some(item) = tokio::time::timeout(WAIT, consumer.next()).await.unwrap() {
        let item = item.unwrap();
        got.push((item.seq, item.payload.into_value().await.unwrap()));
    }
    assert_eq!(got, [(1, 1), (1, 2)]);
    assert_eq!(consumer.stats().gaps, 0);
    assert!(memory.is_empty());
}

#[tokio::test]
async fn a_full_topic_makes_the_producer_wait_without_losing_anything() {
    let broker = MemoryBroker::new(1);
    let memory = MemoryConnector::new();
    let mut producer = StreamProducer::builder(broker.publisher(), Json)
        .default_store(Store::new(memory.clone(), Json))
        .build();
    let registry = ConnectorRegistry::new().with_connector(memory.clone());
    let mut consumer =
        StreamConsumer::<u32>::builder(broker.subscriber(["t"]).unwrap(), registry, Json).build();

    producer.send("t", 0).await.unwrap();
    // The topic holds one message: the next send waits for the consumer.
    assert!(
        producer.send("t", 1).now_or_never().is_none(),
        "send must wait while the topic is full"
    );
    // Cancelling that send lost nothing and leaked nothing: the value is
    // still buffered, its object was evicted again.
    // (The eviction of a cancelled flush runs as a task: wait for it, bounded.)
    tokio::time::timeout(WAIT, async {
        while memory.len() != 1 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("only the published object stays stored");

    let first = tokio::time::timeout(WAIT, consumer.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(first.payload.into_value().await.unwrap(), 0);
    producer.close().await.unwrap();
    let second = tokio::time::timeout(WAIT, consumer.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(second.payload.into_value().await.unwrap(), 1);
    assert!(
        tokio::time::timeout(WAIT, consumer.next())
            .await
            .unwrap()
            .is_none()
    );
    assert!(memory.is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_failing_flush_is_retried_with_the_same_batch_until_it_succeeds() {
    let broker = MemoryBroker::new(16);
    let memory = MemoryConnector::new();
    let failures = Arc::new(AtomicUsize::new(0));
    let publisher = Flaky {
        inner: broker.publisher(),
        failures: failures.clone(),
    };
    let mut producer = StreamProducer::builder(publisher, Json)
        .default_store(Store::new(memory.clone(), Json))
        .batch_size(2)
        .build();
    let registry = ConnectorRegistry::new().with_connector(memory.clone());
    let mut consumer =
        StreamConsumer::<u32>::builder(broker.subscriber(["t"]).unwrap(), registry, Json).build();

    producer.send("t", 1).await.unwrap();
    // The batch's publish fails three times; the default policy retries it.
    failures.store(3, Ordering::SeqCst);
    producer.send("t", 2).await.unwrap();
    assert_eq!(
        failures.load(Ordering::SeqCst),
        0,
        "all three failures were met"
    );
    assert_eq!(
        memory.len(),
        2,
        "one stored copy per object: the retries kept the keys"
    );
    producer.close().await.unwrap();

    let mut values = Vec::new();
    while let Some(item) = tokio::time::timeout(WAIT, consumer.next()).await.unwrap() {
        values.push(item.unwrap().payload.into_value().await.unwrap());
    }
    assert_eq!(values, [1, 2]);
    assert_eq!(consumer.stats().gaps, 0);

    // Past its bound the failure reaches the caller, and the batch stays.
    let failures = Arc::new(AtomicUsize::new(usize::MAX));
    let mut producer = StreamProducer::builder(
        Flaky {
            inner: broker.publisher(),
            failures: failures.clone(),
        },
        Json,
    )
    .retry(Retry {
        attempts: 3,
        ..Retry::default()
    })
    .build();
    let err = producer.send("u", 7).await.unwrap_err();
    assert!(matches!(err, ProducerError::Publish { .. }), "{err:?}");
    assert_eq!(
        failures.load(Ordering::SeqCst),
        usize::MAX - 3,
        "three tries"
    );
}
