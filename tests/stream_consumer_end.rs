//! End of stream with several producers; sequence gaps and duplicates.

use futures_util::FutureExt;
use tributary_stream::{
    ConnectorRegistry, ConsumerError, Event, EventBatch, Json, MemoryBroker, Publisher,
    StreamConsumer, StreamProducer,
};

use crate::stream_support::WAIT;

async fn take(consumer: &mut StreamConsumer<u32>, n: usize) -> Vec<(String, u32)> {
    let mut out = Vec::new();
    for _ in 0..n {
        let item = tokio::time::timeout(WAIT, consumer.next())
            .await
            .expect("an item arrives")
            .expect("the stream has not ended")
            .unwrap();
        let producer = item.producer.clone();
        out.push((producer, item.payload.into_value().await.unwrap()));
    }
    out
}

#[tokio::test]
async fn a_topic_ends_only_after_both_producers_closed_it() {
    let broker = MemoryBroker::new(64);
    let mut a = StreamProducer::builder(broker.publisher(), Json)
        .id("a")
        .build();
    let mut b = StreamProducer::builder(broker.publisher(), Json)
        .id("b")
        .build();
    let mut consumer = StreamConsumer::<u32>::builder(
        broker.subscriber(["t"]).unwrap(),
        ConnectorRegistry::new(),
        Json,
    )
    .build();

    for i in 0..3 {
        a.send("t", i).await.unwrap();
    }
    b.send("t", 10).await.unwrap();
    b.send("t", 11).await.unwrap();
    a.close().await.unwrap();

    let got = take(&mut consumer, 5).await;
    assert_eq!(got.iter().filter(|(p, _)| p == "a").count(), 3);
    // Everything published so far, including a's end of stream, is
    // processed by this call, which then waits for more: the topic is
    // still open for b. (Dropping the pending call is cancel safe.)
    assert!(
        consumer.next().now_or_never().is_none(),
        "consumer must not end after one close"
    );
    assert!(!consumer.topic_ended("t"));

    b.send("t", 12).await.unwrap();
    b.close().await.unwrap();
    let got = take(&mut consumer, 1).await;
    assert_eq!(got, [("b".to_owned(), 12)]);
    let end = tokio::time::timeout(WAIT, consumer.next()).await.unwrap();
    assert!(end.is_none(), "consumer ends after both producers closed");
    assert!(consumer.topic_ended("t"));
}

#[tokio::test]
async fn an_expected_producer_keeps_the_topic_open_until_it_closes() {
    let broker = MemoryBroker::new(64);
    let mut a = StreamProducer::builder(broker.publisher(), Json)
        .id("a")
        .build();
    let mut consumer = StreamConsumer::<u32>::builder(
        broker.subscriber(["t"]).unwrap(),
        ConnectorRegistry::new(),
        Json,
    )
    .expect_producers(["a", "late"])
    .build();
    a.send("t", 1).await.unwrap();
    a.close().await.unwrap();
    assert_eq!(take(&mut consumer, 1).await, [("a".to_owned(), 1)]);
    assert!(
        consumer.next().now_or_never().is_none(),
        "`late` has not closed yet"
    );

    let mut late = StreamProducer::<u32>::builder(broker.publisher(), Json)
        .id("late")
        .build();
    late.close_topic("t").await.unwrap();
    late.close().await.unwrap();
    assert!(
        tokio::time::timeout(WAIT, consumer.next())
            .await
            .unwrap()
            .is_none()
    );
}

fn batch(producer: &str, seq: u64, value: u32, end: bool) -> bytes::Bytes {
    let mut events = vec![Event::Inline {
        data: serde_json::to_vec(&value).unwrap().into(),
        metadata: Default::default(),
    }];
    if end {
        events.push(Event::EndOfStream);
    }
    EventBatch {
        topic: "t".into(),
        producer: producer.into(),
        seq,
        events,
    }
    .to_bytes()
}

#[tokio::test]
async fn duplicates_are_skipped_and_gaps_reported() {
    let broker = MemoryBroker::new(64);
    let publisher = broker.publisher();
    let mut consumer = StreamConsumer::<u32>::builder(
        broker.subscriber(["t"]).unwrap(),
        ConnectorRegistry::new(),
        Json,
    )
    .build();
    publisher
        .publish("t", batch("p", 0, 0, false))
        .await
        .unwrap();
    publisher
        .publish("t", batch("p", 1, 1, false))
        .await
        .unwrap();
    publisher
        .publish("t", batch("p", 1, 1, false))
        .await
        .unwrap(); // duplicate
    publisher
        .publish("t", batch("p", 0, 0, false))
        .await
        .unwrap(); // duplicate
    publisher
        .publish("t", batch("p", 4, 4, true))
        .await
        .unwrap(); // 2 and 3 lost

    assert_eq!(
        take(&mut consumer, 2).await,
        [("p".to_owned(), 0), ("p".to_owned(), 1)]
    );
    let gap = tokio::time::timeout(WAIT, consumer.next())
        .await
        .unwrap()
        .unwrap();
    match gap {
        Err(ConsumerError::SequenceGap {
            topic,
            producer,
            expected,
            got,
        }) => {
            assert_eq!(
                (topic.as_str(), producer.as_str(), expected, got),
                ("t", "p", 2, 4)
            );
        }
        other => panic!("expected a gap, got {other:?}"),
    }
    // The batch after the gap is still delivered, then the topic ends.
    assert_eq!(take(&mut consumer, 1).await, [("p".to_owned(), 4)]);
    assert!(
        tokio::time::timeout(WAIT, consumer.next())
            .await
            .unwrap()
            .is_none()
    );
    let stats = consumer.stats();
    assert_eq!((stats.duplicates, stats.gaps), (2, 1));
}

#[tokio::test]
async fn a_resuming_consumer_takes_the_first_batch_seen_as_the_start() {
    let broker = MemoryBroker::new(64);
    let publisher = broker.publisher();
    let mut consumer = StreamConsumer::<u32>::builder(
        broker.subscriber(["t"]).unwrap(),
        ConnectorRegistry::new(),
        Json,
    )
    .resuming(true)
    .build();
    publisher
        .publish("t", batch("p", 7, 7, false))
        .await
        .unwrap();
    publisher
        .publish("t", batch("p", 8, 8, true))
        .await
        .unwrap();
    assert_eq!(
        take(&mut consumer, 2).await,
        [("p".to_owned(), 7), ("p".to_owned(), 8)]
    );
    assert!(
        tokio::time::timeout(WAIT, consumer.next())
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(consumer.stats().gaps, 0);
}

#[tokio::test]
async fn an_undecodable_message_is_reported_and_skipped() {
    let broker = MemoryBroker::new(64);
    let publisher = broker.publisher();
    let mut consumer = StreamConsumer::<u32>::builder(
        broker.subscriber(["t"]).unwrap(),
        ConnectorRegistry::new(),
        Json,
    )
    .build();
    publisher
        .publish("t", bytes::Bytes::from_static(b"garbage"))
        .await
        .unwrap();
    publisher
        .publish("t", batch("p", 0, 5, true))
        .await
        .unwrap();
    let first = tokio::time::timeout(WAIT, consumer.next())
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(first, Err(ConsumerError::Decode(_))), "{first:?}");
    assert_eq!(take(&mut consumer, 1).await, [("p".to_owned(), 5)]);
    assert!(
        tokio::time::timeout(WAIT, consumer.next())
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn a_producer_whose_first_batch_is_not_full_keeps_the_topic_open() {
    let broker = MemoryBroker::new(64);
    let mut slow = StreamProducer::builder(broker.publisher(), Json)
        .id("slow")
        .batch_size(10)
        .build();
    let mut quick = StreamProducer::builder(broker.publisher(), Json)
        .id("quick")
        .build();
    let mut consumer = StreamConsumer::<u32>::builder(
        broker.subscriber(["t"]).unwrap(),
        ConnectorRegistry::new(),
        Json,
    )
    .build();
    slow.send("t", 1).await.unwrap(); // buffered, but announced
    quick.send("t", 2).await.unwrap();
    quick.close().await.unwrap();
    assert_eq!(take(&mut consumer, 1).await, [("quick".to_owned(), 2)]);
    assert!(
        consumer.next().now_or_never().is_none(),
        "`slow` has sent to the topic and not closed it"
    );
    slow.close().await.unwrap();
    assert_eq!(take(&mut consumer, 1).await, [("slow".to_owned(), 1)]);
    assert!(
        tokio::time::timeout(WAIT, consumer.next())
            .await
            .unwrap()
            .is_none()
    );
}
