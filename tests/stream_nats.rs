//! NATS JetStream: transport, redelivery, and a producer in another process.

use std::time::Duration;

use tributary_stream::{
    ConnectorRegistry, FileConnector, Json, NatsPublisher, NatsSubscriber, NatsSubscriberOptions,
    Payload, Raw, Store, StreamConsumer,
};

use crate::stream_support::{
    TempDir, WAIT, a_crash_before_acknowledging_redelivers, a_full_queue_holds_the_publisher_back,
    send_three, service_url,
};

const VAR: &str = "TRIBUTARY_NATS_URL";

/// Keeps one JetStream stream alive for good. The NATS server removes an
/// account's stream directory when its last stream is deleted, and a stream
/// created at that very moment fails ("could not create storage
/// directory"); tests that create and delete streams in parallel hit that
/// race unless some stream always exists.
pub(crate) async fn anchor(url: &str) {
    let client = async_nats::connect(url).await.expect("NATS is reachable");
    async_nats::jetstream::new(client)
        .get_or_create_stream(async_nats::jetstream::stream::Config {
            name: "TRIB_TEST_ANCHOR".to_owned(),
            subjects: vec!["trib-test-anchor.>".to_owned()],
            ..Default::default()
        })
        .await
        .expect("the anchor stream exists");
}

/// A unique JetStream stream, deleted at the end of the test.
struct TestStream {
    url: String,
    name: String,
    prefix: String,
}

impl TestStream {
    async fn new() -> Self {
        let url = service_url(VAR);
        anchor(&url).await;
        let id = uuid::Uuid::new_v4().simple().to_string();
        Self {
            url,
            name: format!("TRIB_{id}"),
            prefix: format!("trib.{id}"),
        }
    }

    async fn delete(self) {
        if let Ok(client) = async_nats::connect(&self.url).await {
            let _ = async_nats::jetstream::new(client)
                .delete_stream(&self.name)
                .await;
        }
    }

    async fn publisher(&self) -> NatsPublisher {
        NatsPublisher::connect(&self.url, &self.name, &self.prefix)
            .await
            .unwrap()
    }

    async fn subscriber(&self, durable: &str, options: NatsSubscriberOptions) -> NatsSubscriber {
        NatsSubscriber::connect(&self.url, &self.name, &self.prefix, durable, ["t"], options)
            .await
            .unwrap()
    }
}

#[tokio::test]
#[cfg_attr(not(tributary_nats), ignore = "needs TRIBUTARY_NATS_URL")]
async fn events_travel_through_jetstream_and_objects_through_files() {
    let stream = TestStream::new().await;
    let dir = TempDir::new();
    let files = FileConnector::new(&dir.0).unwrap();
    send_three(
        stream.publisher().await,
        Store::new(files.clone(), Json),
        true,
    )
    .await;
    let registry = ConnectorRegistry::new().with_connector(files);
    let sub = stream
        .subscriber("c", NatsSubscriberOptions::default())
        .await;
    let mut consumer = StreamConsumer::<u32>::builder(sub, registry, Json).build();
    let mut values = Vec::new();
    while let Some(item) = tokio::time::timeout(WAIT, consumer.next()).await.unwrap() {
        values.push(item.unwrap().payload.into_value().await.unwrap());
    }
    assert_eq!(values, [0, 1, 2]);
    assert_eq!(
        std::fs::read_dir(&dir.0).unwrap().count(),
        0,
        "objects evicted on resolve"
    );
    stream.delete().await;
}

#[tokio::test]
#[cfg_attr(not(tributary_nats), ignore = "needs TRIBUTARY_NATS_URL")]
async fn an_unacknowledged_batch_is_delivered_again_after_ack_wait() {
    let stream = TestStream::new().await;
    let dir = TempDir::new();
    let files = FileConnector::new(&dir.0).unwrap();
    send_three(
        stream.publisher().await,
        Store::new(files.clone(), Json),
        false,
    )
    .await;
    let registry = ConnectorRegistry::new().with_connector(files);
    let options = NatsSubscriberOptions::default().ack_wait(Duration::from_secs(1));

    a_crash_before_acknowledging_redelivers(|| stream.subscriber("c", options.clone()), registry)
        .await;
    stream.delete().await;
}

#[tokio::test]
#[cfg_attr(not(tributary_nats), ignore = "needs TRIBUTARY_NATS_URL")]
async fn an_invalid_nats_topic_is_refused_by_name() {
    let stream = TestStream::new().await;
    let publisher = stream.publisher().await;
    let err = tributary_stream::Publisher::publish(&publisher, "a.b", "x".into())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("`a.b`"), "{err}");
    stream.delete().await;
}

#[tokio::test]
#[cfg_attr(not(tributary_nats), ignore = "needs TRIBUTARY_NATS_URL")]
async fn a_consumer_resolves_file_proxies_from_a_producer_in_another_process() {
    let stream = TestStream::new().await;
    const COUNT: usize = 5;
    const SIZE: usize = 64 * 1024;
    let root = TempDir::new();
    let objects = root.0.join("objects");
    let status = tokio::time::timeout(
        WAIT,
        tokio::process::Command::new(env!("CARGO_BIN_EXE_stream_peer"))
            .args([
                "nats",
                &stream.url,
                &stream.name,
                &stream.prefix,
                "t",
                objects.to_str().unwrap(),
                &COUNT.to_string(),
                &SIZE.to_string(),
            ])
            .status(),
    )
    .await
    .unwrap()
    .unwrap();
    assert!(status.success(), "producer process failed: {status}");

    // This process never opened the producer's store: it trusts file
    // connectors under `root` and builds them from the events.
    let registry =
        ConnectorRegistry::new().with_kind(FileConnector::KIND, FileConnector::kind_under(&root.0));
    let sub = stream
        .subscriber("c", NatsSubscriberOptions::default())
        .await;
    let mut consumer = StreamConsumer::<Vec<u8>>::builder(sub, registry, Raw).build();
    let mut seen = 0;
    while let Some(item) = tokio::time::timeout(WAIT, consumer.next()).await.unwrap() {
        let item = item.unwrap();
        let index = item.metadata["index"].as_u64().unwrap() as usize;
        let sum = item.metadata["sum"].as_u64().unwrap();
        let Payload::Proxy(proxy) = item.payload else {
            panic!("expected a proxy")
        };
        assert!(!proxy.is_resolved());
        let chunk = proxy.into_value().await.unwrap();
        assert_eq!(index, seen, "in order");
        assert_eq!(chunk.len(), SIZE);
        assert_eq!(chunk.iter().map(|b| u64::from(*b)).sum::<u64>(), sum);
        seen += 1;
    }
    assert_eq!(seen, COUNT);
    assert_eq!(
        std::fs::read_dir(&objects).unwrap().count(),
        0,
        "evicted on resolve"
    );
    stream.delete().await;
}

#[tokio::test]
#[cfg_attr(not(tributary_nats), ignore = "needs TRIBUTARY_NATS_URL")]
async fn a_full_work_queue_stream_holds_the_publisher_back_until_consumers_catch_up() {
    use async_nats::jetstream::stream;
    let test_stream = TestStream::new().await;
    // The operator's stream: at most two messages not yet acknowledged.
    let client = async_nats::connect(&test_stream.url).await.unwrap();
    async_nats::jetstream::new(client)
        .create_stream(stream::Config {
            name: test_stream.name.clone(),
            subjects: vec![format!("{}.>", test_stream.prefix)],
            retention: stream::RetentionPolicy::WorkQueue,
            max_messages: 2,
            discard: stream::DiscardPolicy::New,
            ..Default::default()
        })
        .await
        .unwrap();
    let publisher = test_stream
        .publisher()
        .await
        .with_backpressure_timeout(Duration::from_millis(300));
    let sub = test_stream
        .subscriber("c", NatsSubscriberOptions::default())
        .await;

    a_full_queue_holds_the_publisher_back(publisher, sub).await;
    test_stream.delete().await;
}
