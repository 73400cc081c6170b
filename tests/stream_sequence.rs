//! Sequence numbers and topic headers a consumer must not trust blindly:
//! forged, corrupt or misrouted batches are reported and skipped, and never
//! stop the real producers' batches from arriving.

use bytes::Bytes;
use tributary_stream::{
    ConnectorRegistry, ConsumerError, Event, EventBatch, Json, MemoryBroker, Metadata, Publisher,
    StreamConsumer,
};

use crate::stream_support::WAIT;

fn batch(topic: &str, producer: &str, seq: u64, values: &[u32], end: bool) -> Bytes {
    let mut events: Vec<Event> = values
        .iter()
        .map(|v| Event::Inline {
            data: serde_json::to_vec(v).unwrap().into(),
            metadata: Metadata::new(),
        })
        .collect();
    if end {
        events.push(Event::EndOfStream);
    }
    EventBatch {
        topic: topic.to_owned(),
        producer: producer.to_owned(),
        seq,
        events,
    }
    .to_bytes()
}

/// Reads everything until the consumer ends: the values and the errors.
async fn drain(consumer: &mut StreamConsumer<u32>) -> (Vec<u32>, Vec<ConsumerError>) {
    let mut values = Vec::new();
    let mut errors = Vec::new();
    while let Some(item) = tokio::time::timeout(WAIT, consumer.next())
        .await
        .expect("the consumer ends")
    {
        match item {
            Ok(item) => values.push(item.payload.into_value().await.unwrap()),
            Err(e) => errors.push(e),
        }
    }
    (values, errors)
}

#[tokio::test]
async fn a_batch_at_the_end_of_the_number_range_is_refused_without_overflow() {
    let broker = MemoryBroker::new(16);
    let publisher = broker.publisher();
    let mut consumer = StreamConsumer::<u32>::builder(
        broker.subscriber(["t"]).unwrap(),
        ConnectorRegistry::new(),
        Json,
    )
    .build();
    publisher
        .publish("t", batch("t", "p", 0, &[1], false))
        .await
        .unwrap();
    // Forged: the last number. Accepting it would overflow the next one.
    publisher
        .publish("t", batch("t", "p", u64::MAX, &[666], false))
        .await
        .unwrap();
    // A replay of batch 0 is still a duplicate, batch 1 still the next.
    publisher
        .publish("t", batch("t", "p", 0, &[1], false))
        .await
        .unwrap();
    publisher
        .publish("t", batch("t", "p", 1, &[2], true))
        .await
        .unwrap();

    let (values, errors) = drain(&mut consumer).await;
    assert_eq!(values, [1, 2]);
    assert!(
        matches!(
            errors.as_slice(),
            [ConsumerError::ImplausibleSequence { producer, expected: 1, got: u64::MAX, .. }]
                if producer == "p"
        ),
        "{errors:?}"
    );
    assert_eq!(consumer.stats().implausible, 1);
    assert_eq!(consumer.stats().duplicates, 1);
}

#[tokio::test]
async fn a_forged_far_ahead_batch_does_not_poison_the_producers_later_batches() {
    let broker = MemoryBroker::new(16);
    let publisher = broker.publisher();
    let mut consumer = StreamConsumer::<u32>::builder(
        broker.subscriber(["t"]).unwrap(),
        ConnectorRegistry::new(),
        Json,
    )
    .sequence_window(1000)
    .build();
    publisher
        .publish("t", batch("t", "p", 1_000_000, &[666], false))
        .await
        .unwrap();
    for seq in 0..3u32 {
        publisher
            .publish("t", batch("t", "p", u64::from(seq), &[seq], seq == 2))
            .await
            .unwrap();
    }
    let (values, errors) = drain(&mut consumer).await;
    assert_eq!(
        values,
        [0, 1, 2],
        "every real batch arrives and the topic ends"
    );
    assert!(
        matches!(
            errors.as_slice(),
            [ConsumerError::ImplausibleSequence {
                expected: 0,
                got: 1_000_000,
                ..
            }]
        ),
        "{errors:?}"
    );
    assert_eq!(consumer.stats().duplicates, 0);
}

#[tokio::test]
async fn decisions_are_per_producer() {
    let broker = MemoryBroker::new(16);
    let publisher = broker.publisher();
    let mut consumer = StreamConsumer::<u32>::builder(
        broker.subscriber(["t"]).unwrap(),
        ConnectorRegistry::new(),
        Json,
    )
    .expect_producers(["a", "b"])
    .build();
    publisher
        .publish("t", batch("t", "a", 0, &[1], false))
        .await
        .unwrap();
    publisher
        .publish("t", batch("t", "a", 1, &[2], true))
        .await
        .unwrap();
    // b's numbers start at 0 too: not duplicates of a's.
    publisher
        .publish("t", batch("t", "b", 0, &[10], false))
        .await
        .unwrap();
    publisher
        .publish("t", batch("t", "b", 1, &[20], true))
        .await
        .unwrap();
    let (values, errors) = drain(&mut consumer).await;
    assert_eq!(values, [1, 2, 10, 20]);
    assert!(errors.is_empty(), "{errors:?}");
}

#[tokio::test]
async fn a_batch_naming_another_topic_is_refused_and_registers_no_producer() {
    let broker = MemoryBroker::new(16);
    let publisher = broker.publisher();
    let mut consumer = StreamConsumer::<u32>::builder(
        broker.subscriber(["t", "u"]).unwrap(),
        ConnectorRegistry::new(),
        Json,
    )
    .build();
    // On `u`, a batch that claims to be `t`'s from a producer that never
    // closes: accepted, it would keep `t` open for good.
    publisher
        .publish("u", batch("t", "ghost", 0, &[666], false))
        .await
        .unwrap();
    publisher
        .publish("t", batch("t", "p", 0, &[1], true))
        .await
        .unwrap();
    publisher
        .publish("u", batch("u", "p", 0, &[2], true))
        .await
        .unwrap();

    let (values, errors) = drain(&mut consumer).await;
    assert_eq!(values, [1, 2], "both topics end: no ghost producer");
    assert!(
        matches!(
            errors.as_slice(),
            [ConsumerError::TopicMismatch { delivered, named }] if delivered == "u" && named == "t"
        ),
        "{errors:?}"
    );
}
