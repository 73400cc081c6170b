//! Aggregation of a batch into one object.

use tributary_stream::{
    ConnectorRegistry, Json, MemoryBroker, MemoryConnector, Metadata, Payload, SendOptions, Store,
    StreamConsumer, StreamProducer,
};

use crate::stream_support::{WAIT, meta};

#[tokio::test]
async fn each_flush_becomes_one_aggregated_object_for_batch_sizes_1_2_3() {
    for batch_size in 1..=3usize {
        for with_store in [false, true] {
            let broker = MemoryBroker::new(64);
            let memory = MemoryConnector::new();
            let mut builder = StreamProducer::builder(broker.publisher(), Json)
                .batch_size(batch_size)
                .aggregator(|batch: &[Vec<u32>]| batch.concat());
            if with_store {
                builder = builder.default_store(Store::new(memory.clone(), Json));
            }
            let mut producer = builder.build();
            let registry = ConnectorRegistry::new().with_connector(memory.clone());
            let mut consumer = StreamConsumer::<Vec<u32>>::builder(
                broker.subscriber(["t"]).unwrap(),
                registry,
                Json,
            )
            .build();
            for i in 0..7u32 {
                producer.send("t", vec![i]).await.unwrap();
            }
            producer.close().await.unwrap();

            let mut got = Vec::new();
            while let Some(item) = tokio::time::timeout(WAIT, consumer.next()).await.unwrap() {
                let item = item.unwrap();
                assert_eq!(matches!(item.payload, Payload::Proxy(_)), with_store);
                got.push(item.payload.into_value().await.unwrap());
            }
            let expected: Vec<Vec<u32>> = (0..7u32)
                .collect::<Vec<_>>()
                .chunks(batch_size)
                .map(<[u32]>::to_vec)
                .collect();
            assert_eq!(got, expected, "batch size {batch_size}, store {with_store}");
            assert!(memory.is_empty());
        }
    }
}

#[tokio::test]
async fn an_aggregate_merges_metadata_in_send_order_and_evicts_if_any_did() {
    let broker = MemoryBroker::new(16);
    let memory = MemoryConnector::new();
    let mut producer = StreamProducer::builder(broker.publisher(), Json)
        .default_store(Store::new(memory.clone(), Json))
        .batch_size(3)
        .aggregator(|batch: &[u32]| batch.iter().sum())
        .build();
    let registry = ConnectorRegistry::new().with_connector(memory.clone());
    let mut consumer =
        StreamConsumer::<u32>::builder(broker.subscriber(["t"]).unwrap(), registry, Json).build();
    let sends = [
        (1, serde_json::json!({ "a": 1, "b": 1 }), false),
        (2, serde_json::json!({ "b": 2 }), true),
        (3, serde_json::json!({ "c": 3 }), false),
        (4, serde_json::json!({ "d": 4 }), false),
    ];
    for (v, m, evict) in sends {
        producer
            .send_with("t", v, SendOptions::new().metadata(meta(m)).evict(evict))
            .await
            .unwrap();
    }
    producer.close().await.unwrap();

    let first = tokio::time::timeout(WAIT, consumer.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let expected: Metadata = meta(serde_json::json!({ "a": 1, "b": 2, "c": 3 }));
    assert_eq!(first.metadata, expected);
    assert!(
        first.payload.proxy().unwrap().evicts(),
        "one object of the batch evicts"
    );
    assert_eq!(first.payload.into_value().await.unwrap(), 6);

    let second = tokio::time::timeout(WAIT, consumer.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(!second.payload.proxy().unwrap().evicts());
    assert_eq!(second.payload.into_value().await.unwrap(), 4);
    assert!(
        tokio::time::timeout(WAIT, consumer.next())
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(memory.len(), 1, "the non-evicting aggregate stays");
}
