//! Per-topic ordering across batch sizes, with and without a store.

use tributary_stream::{
    ConnectorRegistry, FileConnector, Json, MemoryBroker, MemoryConnector, Payload, ProducerError,
    Store, StreamConsumer, StreamProducer,
};

use crate::stream_support::{TempDir, WAIT};

/// Sends 0..7 on "a" and 100..107 on "b", interleaved, then reads both
/// topics to their end and returns each topic's values in arrival order
/// plus whether every payload was a proxy.
async fn round_trip(
    batch_size: usize,
    store: Option<Store<u32>>,
    registry: ConnectorRegistry,
) -> (Vec<u32>, Vec<u32>, bool) {
    let broker = MemoryBroker::new(64);
    let mut builder = StreamProducer::builder(broker.publisher(), Json).batch_size(batch_size);
    if let Some(store) = store {
        builder = builder.default_store(store);
    }
    let mut producer = builder.build();
    let mut consumer =
        StreamConsumer::<u32>::builder(broker.subscriber(["a", "b"]).unwrap(), registry, Json)
            .build();
    for i in 0..7 {
        producer.send("a", i).await.unwrap();
        producer.send("b", 100 + i).await.unwrap();
    }
    producer.close().await.unwrap();

    let (mut a, mut b, mut all_proxies) = (Vec::new(), Vec::new(), true);
    tokio::time::timeout(WAIT, async {
        while let Some(item) = consumer.next().await {
            let item = item.unwrap();
            all_proxies &= matches!(item.payload, Payload::Proxy(_));
            let topic = item.topic.clone();
            let v = item.payload.into_value().await.unwrap();
            match topic.as_str() {
                "a" => a.push(v),
                "b" => b.push(v),
                other => panic!("unexpected topic {other}"),
            }
        }
    })
    .await
    .expect("consumer ends once the producer closed both topics");
    (a, b, all_proxies)
}

#[tokio::test]
async fn order_is_kept_per_topic_for_batch_sizes_1_2_3_inline() {
    for batch_size in 1..=3 {
        let (a, b, proxies) = round_trip(batch_size, None, ConnectorRegistry::new()).await;
        assert_eq!(a, (0..7).collect::<Vec<_>>(), "batch size {batch_size}");
        assert_eq!(b, (100..107).collect::<Vec<_>>(), "batch size {batch_size}");
        assert!(!proxies, "a topic without store carries its objects inline");
    }
}

#[tokio::test]
async fn order_is_kept_per_topic_for_batch_sizes_1_2_3_with_a_memory_store() {
    for batch_size in 1..=3 {
        let memory = MemoryConnector::new();
        let registry = ConnectorRegistry::new().with_connector(memory.clone());
        let (a, b, proxies) =
            round_trip(batch_size, Some(Store::new(memory.clone(), Json)), registry).await;
        assert_eq!(a, (0..7).collect::<Vec<_>>(), "batch size {batch_size}");
        assert_eq!(b, (100..107).collect::<Vec<_>>(), "batch size {batch_size}");
        assert!(proxies, "a topic with a store delivers proxies");
        assert!(memory.is_empty(), "every evicting proxy removed its object");
    }
}

#[tokio::test]
async fn order_is_kept_per_topic_for_batch_sizes_1_2_3_with_a_file_store() {
    for batch_size in 1..=3 {
        let dir = TempDir::new();
        let files = FileConnector::new(&dir.0).unwrap();
        let registry = ConnectorRegistry::new().with_connector(files.clone());
        let (a, b, proxies) = round_trip(batch_size, Some(Store::new(files, Json)), registry).await;
        assert_eq!(a, (0..7).collect::<Vec<_>>(), "batch size {batch_size}");
        assert_eq!(b, (100..107).collect::<Vec<_>>(), "batch size {batch_size}");
        assert!(proxies);
        assert_eq!(
            std::fs::read_dir(&dir.0).unwrap().count(),
            0,
            "all files evicted"
        );
    }
}

#[tokio::test]
async fn a_topic_may_map_to_its_own_store_or_to_none() {
    let broker = MemoryBroker::new(16);
    let default = MemoryConnector::new();
    let own = MemoryConnector::new();
    let mut producer = StreamProducer::builder(broker.publisher(), Json)
        .default_store(Store::new(default.clone(), Json))
        .store("own", Some(Store::new(own.clone(), Json)))
        .store("inline", None)
        .build();
    let registry = ConnectorRegistry::new()
        .with_connector(default.clone())
        .with_connector(own.clone());
    let mut consumer = StreamConsumer::<u32>::builder(
        broker.subscriber(["own", "inline", "other"]).unwrap(),
        registry,
        Json,
    )
    .build();
    producer.send("own", 1).await.unwrap();
    producer.send("inline", 2).await.unwrap();
    producer.send("other", 3).await.unwrap();
    producer.close().await.unwrap();
    assert_eq!((own.len(), default.len()), (1, 1));

    let mut seen = Vec::new();
    while let Some(item) = tokio::time::timeout(WAIT, consumer.next()).await.unwrap() {
        let item = item.unwrap();
        let connector = item.payload.proxy().map(|p| p.connector().clone());
        seen.push((
            item.topic.clone(),
            connector,
            item.payload.into_value().await.unwrap(),
        ));
    }
    seen.sort_by(|x, y| x.0.cmp(&y.0));
    use tributary_stream::Connector as _;
    assert_eq!(
        seen,
        vec![
            ("inline".to_owned(), None, 2),
            ("other".to_owned(), Some(default.descriptor()), 3),
            ("own".to_owned(), Some(own.descriptor()), 1),
        ]
    );
}

#[tokio::test]
async fn send_after_close_is_an_error() {
    let broker = MemoryBroker::new(16);
    let mut producer = StreamProducer::builder(broker.publisher(), Json).build();
    producer.send("t", 1u32).await.unwrap();
    producer.close_topic("t").await.unwrap();
    let err = producer.send("t", 2).await.unwrap_err();
    assert!(
        matches!(&err, ProducerError::TopicClosed { topic } if topic == "t"),
        "{err:?}"
    );
    assert_eq!(err.to_string(), "topic `t` is closed");
    // Other topics stay open until the producer closes.
    producer.send("u", 3).await.unwrap();
    producer.close().await.unwrap();
    let err = producer.send("u", 4).await.unwrap_err();
    assert!(matches!(err, ProducerError::Closed { .. }), "{err:?}");
}

#[tokio::test]
async fn close_flushes_a_partial_batch_before_the_end_of_stream() {
    let broker = MemoryBroker::new(16);
    let mut producer = StreamProducer::builder(broker.publisher(), Json)
        .batch_size(10)
        .build();
    let mut consumer = StreamConsumer::<u32>::builder(
        broker.subscriber(["t"]).unwrap(),
        ConnectorRegistry::new(),
        Json,
    )
    .build();
    for i in 0..4 {
        producer.send("t", i).await.unwrap();
    }
    producer.close().await.unwrap();
    let (mut seen, mut seqs) = (Vec::new(), Vec::new());
    while let Some(item) = tokio::time::timeout(WAIT, consumer.next()).await.unwrap() {
        let item = item.unwrap();
        seqs.push(item.seq);
        seen.push(item.payload.into_value().await.unwrap());
    }
    assert_eq!(seen, [0, 1, 2, 3]);
    // Batch 0 announced the producer; the four objects came in one batch.
    assert_eq!(seqs, [1, 1, 1, 1], "one flush, one batch");
}

#[tokio::test]
async fn the_consumer_is_a_stream_of_proxies() {
    use futures_util::StreamExt;
    let broker = MemoryBroker::new(16);
    let memory = MemoryConnector::new();
    let mut producer = StreamProducer::builder(broker.publisher(), Json)
        .default_store(Store::new(memory.clone(), Json))
        .batch_size(2)
        .build();
    let registry = ConnectorRegistry::new().with_connector(memory.clone());
    let consumer =
        StreamConsumer::<u32>::builder(broker.subscriber(["t"]).unwrap(), registry, Json).build();
    for i in 0..5 {
        producer.send("t", i).await.unwrap();
    }
    producer.close().await.unwrap();
    let items: Vec<_> = tokio::time::timeout(WAIT, consumer.into_stream().collect::<Vec<_>>())
        .await
        .unwrap();
    assert_eq!(memory.len(), 5, "a stream of proxies fetched nothing");
    let seqs: Vec<u64> = items.iter().map(|i| i.as_ref().unwrap().seq).collect();
    // Batch 0 is the producer's announcement, then batches of two.
    assert_eq!(seqs, [1, 1, 2, 2, 3]);
    let mut values = Vec::new();
    for item in items {
        values.push(item.unwrap().payload.into_value().await.unwrap());
    }
    assert_eq!(values, [0, 1, 2, 3, 4]);
    assert!(memory.is_empty());
}

#[tokio::test]
async fn a_new_memory_subscriber_continues_where_a_dropped_one_stopped() {
    use tributary_stream::{Publisher, Subscriber};
    let broker = MemoryBroker::new(16);
    let publisher = broker.publisher();
    for m in ["a", "b", "c"] {
        publisher.publish("t", m.into()).await.unwrap();
    }
    let mut first = broker.subscriber(["t"]).unwrap();
    let err = broker.subscriber(["t"]).unwrap_err();
    assert_eq!(err.to_string(), "topic `t` already has a subscriber");
    let d = first.next().await.unwrap().unwrap();
    assert_eq!(&d.message[..], b"a");
    drop(first);
    let mut second = broker.subscriber(["t"]).unwrap();
    let mut rest = Vec::new();
    for _ in 0..2 {
        rest.push(second.next().await.unwrap().unwrap().message);
    }
    assert_eq!(rest, ["b", "c"]);
}
