//! Helpers of the tributary-stream tests.

use std::time::Duration;

use tributary_stream::Metadata;

/// A bound on anything that could hang.
pub(crate) const WAIT: Duration = Duration::from_secs(20);

/// A name no other test (or run) uses.
pub(crate) fn unique(prefix: &str) -> String {
    format!("{prefix}{}", uuid::Uuid::new_v4().simple())
}

/// Metadata from a JSON object literal.
pub(crate) fn meta(value: serde_json::Value) -> Metadata {
    value.as_object().expect("metadata is an object").clone()
}

/// The URL in `var`.
///
/// Tests that call this carry `#[cfg_attr(not(<cfg>), ignore = "needs <var>")]`
/// (see `tests/build.rs`), so they only run when the variable was set at
/// build time; a binary built with it and run without it fails loudly
/// rather than passing without testing anything.
///
/// # Panics
///
/// When `var` is not set.
pub(crate) fn service_url(var: &str) -> String {
    match std::env::var(var) {
        Ok(url) if !url.is_empty() => url,
        _ => panic!(
            "{var} is not set at run time but was at build time; export it (`bash .ci/run --services-only` starts the services)"
        ),
    }
}

/// A fresh directory under the system temp dir, removed on drop.
#[derive(Debug)]
pub(crate) struct TempDir(pub(crate) std::path::PathBuf);

impl TempDir {
    pub(crate) fn new() -> Self {
        let dir = std::env::temp_dir().join(unique("tributary-stream-"));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

// ===== checks every durable transport passes =====

/// Publish 0, 1, 2 on topic `t` through `publisher`, the objects going to
/// `store` (evicted on resolve when `evict`), then close.
pub(crate) async fn send_three(
    publisher: impl tributary_stream::Publisher + 'static,
    store: tributary_stream::Store<u32>,
    evict: bool,
) {
    use tributary_stream::{Json, SendOptions, StreamProducer};
    let mut producer = StreamProducer::builder(publisher, Json)
        .id("p")
        .default_store(store)
        .build();
    for i in 0..3u32 {
        producer
            .send_with("t", i, SendOptions::new().evict(evict))
            .await
            .unwrap();
    }
    producer.close().await.unwrap();
}

/// After [`send_three`]: a consumer that reads batch 0 and crashes before
/// acknowledging it gets it again on restart, then the rest.
pub(crate) async fn a_crash_before_acknowledging_redelivers<S, F, Fut>(
    subscribe: F,
    registry: tributary_stream::ConnectorRegistry,
) where
    S: tributary_stream::Subscriber + 'static,
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = S>,
{
    use tributary_stream::{Json, StreamConsumer};
    let mut first =
        StreamConsumer::<u32>::builder(subscribe().await, registry.clone(), Json).build();
    let item = tokio::time::timeout(WAIT, first.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(item.payload.into_value().await.unwrap(), 0);
    drop(first); // crash: batch 0 was received, never acknowledged

    let mut again = StreamConsumer::<u32>::builder(subscribe().await, registry, Json).build();
    let mut values = Vec::new();
    while let Some(item) = tokio::time::timeout(WAIT, again.next()).await.unwrap() {
        values.push(item.unwrap().payload.into_value().await.unwrap());
    }
    assert_eq!(
        values,
        [0, 1, 2],
        "batch 0 is delivered again, then the rest"
    );
}

/// With room for two messages: the third publish fails with
/// `Backpressure`; once the consumer takes and acknowledges one, it goes
/// through, and nothing is lost or reordered.
pub(crate) async fn a_full_queue_holds_the_publisher_back(
    publisher: impl tributary_stream::Publisher,
    mut sub: impl tributary_stream::Subscriber,
) {
    use tributary_stream::TransportError;
    publisher.publish("t", "one".into()).await.unwrap();
    publisher.publish("t", "two".into()).await.unwrap();
    let err = publisher.publish("t", "three".into()).await.unwrap_err();
    assert!(
        matches!(&err, TransportError::Backpressure { topic, .. } if topic == "t"),
        "{err:?}"
    );
    let d = tokio::time::timeout(WAIT, sub.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(&d.message[..], b"one");
    sub.ack(d.id).await.unwrap();
    publisher.publish("t", "three".into()).await.unwrap();
    let mut rest = Vec::new();
    for _ in 0..2 {
        let d = tokio::time::timeout(WAIT, sub.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        rest.push(d.message.clone());
        sub.ack(d.id).await.unwrap();
    }
    assert_eq!(rest, ["two", "three"]);
}
