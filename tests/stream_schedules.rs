//! Property: whatever the interleaving of several producers over two topics,
//! batch sizes and stores, a consumer receives every object exactly once,
//! in each producer's order per topic, and ends only after every producer
//! closed both topics.

use std::collections::HashMap;

use proptest::prelude::*;
use tributary_stream::{
    ConnectorRegistry, Json, MemoryBroker, MemoryConnector, Store, StreamConsumer, StreamProducer,
};

const TOPICS: [&str; 2] = ["x", "y"];

#[derive(Debug, Clone)]
struct Schedule {
    batch_sizes: Vec<usize>,
    with_store: bool,
    /// (producer, topic) of each send, in order.
    sends: Vec<(usize, usize)>,
    /// Order in which producers close.
    close_order: Vec<usize>,
}

fn schedule() -> impl Strategy<Value = Schedule> {
    (1usize..=3, any::<bool>()).prop_flat_map(|(producers, with_store)| {
        (
            proptest::collection::vec(1usize..=3, producers),
            proptest::collection::vec((0..producers, 0usize..2), 0..40),
            Just((0..producers).collect::<Vec<_>>()).prop_shuffle(),
        )
            .prop_map(move |(batch_sizes, sends, close_order)| Schedule {
                batch_sizes,
                with_store,
                sends,
                close_order,
            })
    })
}

async fn run(s: Schedule) -> Result<(), TestCaseError> {
    let broker = MemoryBroker::new(1024);
    let memory = MemoryConnector::new();
    let mut producers: Vec<StreamProducer<(usize, u32)>> = s
        .batch_sizes
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            let mut builder = StreamProducer::builder(broker.publisher(), Json)
                .id(format!("p{i}"))
                .batch_size(b);
            if s.with_store {
                builder = builder.default_store(Store::new(memory.clone(), Json));
            }
            builder.build()
        })
        .collect();
    let registry = ConnectorRegistry::new().with_connector(memory.clone());
    let mut consumer =
        StreamConsumer::<(usize, u32)>::builder(broker.subscriber(TOPICS).unwrap(), registry, Json)
            .build();

    let mut sent: HashMap<(usize, &str), Vec<u32>> = HashMap::new();
    for (n, &(p, t)) in s.sends.iter().enumerate() {
        let n = n as u32;
        producers[p].send(TOPICS[t], (p, n)).await.unwrap();
        sent.entry((p, TOPICS[t])).or_default().push(n);
    }
    for &p in &s.close_order {
        for t in TOPICS {
            producers[p].close_topic(t).await.unwrap();
        }
        producers[p].close().await.unwrap();
    }

    let mut received: HashMap<(usize, &str), Vec<u32>> = HashMap::new();
    let drained = tokio::time::timeout(crate::stream_support::WAIT, async {
        while let Some(item) = consumer.next().await {
            let item = item.unwrap();
            let topic = if item.topic == "x" { "x" } else { "y" };
            let (p, n) = item.payload.into_value().await.unwrap();
            received.entry((p, topic)).or_default().push(n);
        }
    })
    .await;
    prop_assert!(
        drained.is_ok(),
        "the consumer must end once every producer closed"
    );
    prop_assert_eq!(received, sent);
    prop_assert!(memory.is_empty(), "every object was resolved and evicted");
    prop_assert_eq!(consumer.stats().duplicates + consumer.stats().gaps, 0);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn every_object_arrives_once_in_producer_order_and_the_stream_ends(s in schedule()) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(run(s))?;
    }
}
