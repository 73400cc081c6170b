//! Producer- and consumer-side filters, and sampling.

use tributary_stream::{
    ConnectorRegistry, Filter, Json, MemoryBroker, MemoryConnector, Metadata, Sample, SendOptions,
    Store, StreamConsumer, StreamProducer,
};

use crate::stream_support::{WAIT, meta};

fn is_even(m: &Metadata) -> bool {
    m.get("i")
        .and_then(|v| v.as_u64())
        .is_some_and(|i| i % 2 == 0)
}

async fn drain(consumer: &mut StreamConsumer<u32>) -> Vec<u32> {
    let mut out = Vec::new();
    while let Some(item) = tokio::time::timeout(WAIT, consumer.next()).await.unwrap() {
        out.push(item.unwrap().payload.into_value().await.unwrap());
    }
    out
}

#[tokio::test]
async fn a_producer_filter_drops_exactly_the_filtered_items_and_never_stores_them() {
    for batch_size in 1..=3 {
        let broker = MemoryBroker::new(64);
        let memory = MemoryConnector::new();
        let mut producer = StreamProducer::builder(broker.publisher(), Json)
            .default_store(Store::new(memory.clone(), Json))
            .batch_size(batch_size)
            .filter(is_even)
            .build();
        let registry = ConnectorRegistry::new().with_connector(memory.clone());
        let mut consumer =
            StreamConsumer::<u32>::builder(broker.subscriber(["t"]).unwrap(), registry, Json)
                .build();
        for i in 0..10u32 {
            let options = SendOptions::new().metadata(meta(serde_json::json!({ "i": i })));
            producer.send_with("t", i, options).await.unwrap();
        }
        producer.close().await.unwrap();
        assert_eq!(
            memory.len(),
            5,
            "only kept objects were stored (batch size {batch_size})"
        );
        assert_eq!(drain(&mut consumer).await, [0, 2, 4, 6, 8]);
        assert!(memory.is_empty());
    }
}

#[tokio::test]
async fn a_consumer_filter_drops_exactly_the_filtered_items_and_evicts_their_objects() {
    let broker = MemoryBroker::new(64);
    let memory = MemoryConnector::new();
    let mut producer = StreamProducer::builder(broker.publisher(), Json)
        .default_store(Store::new(memory.clone(), Json))
        .batch_size(3)
        .build();
    let registry = ConnectorRegistry::new().with_connector(memory.clone());
    let mut consumer =
        StreamConsumer::<u32>::builder(broker.subscriber(["t"]).unwrap(), registry, Json)
            .filter(is_even)
            .build();
    for i in 0..10u32 {
        let options = SendOptions::new().metadata(meta(serde_json::json!({ "i": i })));
        producer.send_with("t", i, options).await.unwrap();
    }
    producer.close().await.unwrap();
    assert_eq!(memory.len(), 10);

    // Take the kept items as proxies without resolving them.
    let mut kept = Vec::new();
    while let Some(item) = tokio::time::timeout(WAIT, consumer.next()).await.unwrap() {
        kept.push(item.unwrap());
    }
    assert_eq!(consumer.stats().filtered, 5);
    assert_eq!(
        memory.len(),
        5,
        "the five filtered objects were evicted, the kept ones remain"
    );
    let mut values = Vec::new();
    for item in kept {
        values.push(item.payload.into_value().await.unwrap());
    }
    assert_eq!(values, [0, 2, 4, 6, 8]);
    assert!(memory.is_empty());
}

#[tokio::test]
async fn a_consumer_filter_keeps_objects_that_do_not_evict() {
    let broker = MemoryBroker::new(64);
    let memory = MemoryConnector::new();
    let mut producer = StreamProducer::builder(broker.publisher(), Json)
        .default_store(Store::new(memory.clone(), Json))
        .build();
    let registry = ConnectorRegistry::new().with_connector(memory.clone());
    let mut consumer =
        StreamConsumer::<u32>::builder(broker.subscriber(["t"]).unwrap(), registry, Json)
            .filter(|_: &Metadata| false)
            .build();
    producer
        .send_with("t", 1, SendOptions::new().evict(false))
        .await
        .unwrap();
    producer.close().await.unwrap();
    assert!(
        tokio::time::timeout(WAIT, consumer.next())
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        memory.len(),
        1,
        "a shared (non-evicting) object is not the consumer's to remove"
    );
}

#[tokio::test]
async fn sampling_keeps_what_a_same_seeded_sample_keeps() {
    let broker = MemoryBroker::new(256);
    let mut producer = StreamProducer::builder(broker.publisher(), Json)
        .filter(Sample::keep(0.3).unwrap().seeded(11))
        .build();
    let mut consumer = StreamConsumer::<u32>::builder(
        broker.subscriber(["t"]).unwrap(),
        ConnectorRegistry::new(),
        Json,
    )
    .build();
    for i in 0..200u32 {
        producer.send("t", i).await.unwrap();
    }
    producer.close().await.unwrap();
    let reference = Sample::keep(0.3).unwrap().seeded(11);
    let expected: Vec<u32> = (0..200)
        .filter(|_| reference.keep(&Metadata::new()))
        .collect();
    assert!(
        (30..90).contains(&expected.len()),
        "about 30% kept: {}",
        expected.len()
    );
    assert_eq!(drain(&mut consumer).await, expected);
}

#[test]
fn sampling_probabilities_outside_0_1_are_refused() {
    for p in [-0.1, 1.01, f64::NAN] {
        let err = Sample::keep(p).unwrap_err();
        assert!(err.to_string().contains("[0, 1]"), "{err}");
    }
    let all = Sample::keep(1.0).unwrap();
    let none = Sample::keep(0.0).unwrap();
    assert!((0..100).all(|_| all.keep(&Metadata::new())));
    assert!((0..100).all(|_| !none.keep(&Metadata::new())));
}
