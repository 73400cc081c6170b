//! Redis: the connector, Redis Streams transport, redelivery, backpressure,
//! and a producer in another process.

use std::time::Duration;

use tributary_stream::{
    ConnectorRegistry, Json, Payload, Publisher, Raw, RedisConnector, RedisPublisher,
    RedisSubscriber, Store, StreamConsumer, Subscriber,
};

use crate::stream_support::{
    WAIT, a_crash_before_acknowledging_redelivers, a_full_queue_holds_the_publisher_back,
    send_three, service_url, unique,
};

const VAR: &str = "TRIBUTARY_REDIS_URL";

/// Deletes every key under `prefix` when dropped.
struct Cleanup {
    url: String,
    prefix: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let conn = redis::Client::open(self.url.as_str()).and_then(|c| c.get_connection());
        if let Ok(mut conn) = conn {
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg(format!("{}*", self.prefix))
                .query(&mut conn)
                .unwrap_or_default();
            if !keys.is_empty() {
                let _: redis::RedisResult<()> = redis::cmd("DEL").arg(keys).query(&mut conn);
            }
        }
    }
}

fn setup() -> (String, String, Cleanup) {
    let url = service_url(VAR);
    let prefix = unique("tributary-test:") + ":";
    let cleanup = Cleanup {
        url: url.clone(),
        prefix: prefix.clone(),
    };
    (url, prefix, cleanup)
}

async fn redis_conn(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

#[tokio::test]
#[cfg_attr(not(tributary_redis), ignore = "needs TRIBUTARY_REDIS_URL")]
async fn the_redis_connector_keeps_the_connector_contract() {
    let (url, prefix, _cleanup) = setup();
    let connector = RedisConnector::new(url, prefix).unwrap();
    crate::stream_proxy::connector_contract(&connector).await;
}

async fn publisher(url: &str, prefix: &str) -> RedisPublisher {
    RedisPublisher::connect(url, prefix).await.unwrap()
}

async fn subscriber(url: &str, prefix: &str, consumer: &str) -> RedisSubscriber {
    RedisSubscriber::connect(url, prefix, "group", consumer, ["t"])
        .await
        .unwrap()
}

#[tokio::test]
#[cfg_attr(not(tributary_redis), ignore = "needs TRIBUTARY_REDIS_URL")]
async fn events_and_objects_travel_through_redis() {
    let (url, prefix, _cleanup) = setup();
    let objects = RedisConnector::new(&url, format!("{prefix}obj:")).unwrap();
    send_three(
        publisher(&url, &prefix).await,
        Store::new(objects.clone(), Json),
        true,
    )
    .await;
    let registry = ConnectorRegistry::new().with_connector(objects.clone());
    let consumer =
        StreamConsumer::<u32>::builder(subscriber(&url, &prefix, "c").await, registry, Json)
            .build();
    let values = tokio::time::timeout(WAIT, async {
        use futures_util::StreamExt;
        consumer
            .into_value_stream()
            .map(|r| r.unwrap().1)
            .collect::<Vec<_>>()
            .await
    })
    .await
    .unwrap();
    assert_eq!(values, [0, 1, 2]);
    let mut conn = redis_conn(&url).await;
    let left: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}obj:*"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(
        left.is_empty(),
        "evicting proxies removed their objects: {left:?}"
    );
}

#[tokio::test]
#[cfg_attr(not(tributary_redis), ignore = "needs TRIBUTARY_REDIS_URL")]
async fn a_consumer_that_crashes_before_acknowledging_gets_the_batch_again() {
    let (url, prefix, _cleanup) = setup();
    let objects = RedisConnector::new(&url, format!("{prefix}obj:")).unwrap();
    send_three(
        publisher(&url, &prefix).await,
        Store::new(objects.clone(), Json),
        false,
    )
    .await;
    let registry = ConnectorRegistry::new().with_connector(objects.clone());

    a_crash_before_acknowledging_redelivers(|| subscriber(&url, &prefix, "c"), registry).await;

    let mut conn = redis_conn(&url).await;
    let pending: (u64, redis::Value, redis::Value, redis::Value) = redis::cmd("XPENDING")
        .arg(format!("{prefix}t"))
        .arg("group")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(pending.0, 0, "everything handled was acknowledged");
}

#[tokio::test]
#[cfg_attr(not(tributary_redis), ignore = "needs TRIBUTARY_REDIS_URL")]
async fn another_consumer_claims_what_a_dead_one_left_pending() {
    let (url, prefix, _cleanup) = setup();
    let objects = RedisConnector::new(&url, format!("{prefix}obj:")).unwrap();
    send_three(
        publisher(&url, &prefix).await,
        Store::new(objects.clone(), Json),
        true,
    )
    .await;
    let registry = ConnectorRegistry::new().with_connector(objects.clone());

    let mut dead = StreamConsumer::<u32>::builder(
        subscriber(&url, &prefix, "dead").await,
        registry.clone(),
        Json,
    )
    .build();
    let item = tokio::time::timeout(WAIT, dead.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(!item.payload.proxy().unwrap().is_resolved());
    drop((item, dead)); // died before resolving or acknowledging

    let sub = subscriber(&url, &prefix, "heir")
        .await
        .claim_idle(Duration::ZERO);
    let mut heir = StreamConsumer::<u32>::builder(sub, registry, Json).build();
    let mut values = Vec::new();
    while let Some(item) = tokio::time::timeout(WAIT, heir.next()).await.unwrap() {
        values.push(item.unwrap().payload.into_value().await.unwrap());
    }
    assert_eq!(values, [0, 1, 2]);
}

#[tokio::test]
#[cfg_attr(not(tributary_redis), ignore = "needs TRIBUTARY_REDIS_URL")]
async fn a_full_stream_holds_the_publisher_back_until_consumers_catch_up() {
    let (url, prefix, _cleanup) = setup();
    let publisher = RedisPublisher::connect(&url, prefix.clone())
        .await
        .unwrap()
        .with_max_len(2, Duration::from_millis(300));
    let sub = subscriber(&url, &prefix, "c").await.delete_acked(true);
    a_full_queue_holds_the_publisher_back(publisher, sub).await;
}

#[tokio::test]
#[cfg_attr(not(tributary_redis), ignore = "needs TRIBUTARY_REDIS_URL")]
async fn a_consumer_resolves_proxies_from_a_producer_in_another_process() {
    let (url, prefix, _cleanup) = setup();
    const COUNT: usize = 5;
    const SIZE: usize = 64 * 1024;
    let sub = RedisSubscriber::connect(&url, &prefix, "group", "c", ["chunks"])
        .await
        .unwrap();
    let status = tokio::time::timeout(
        WAIT,
        tokio::process::Command::new(env!("CARGO_BIN_EXE_stream_peer"))
            .args([
                "redis",
                &url,
                &prefix,
                "chunks",
                &COUNT.to_string(),
                &SIZE.to_string(),
            ])
            .status(),
    )
    .await
    .unwrap()
    .unwrap();
    assert!(status.success(), "producer process failed: {status}");

    // The events are small: the chunks went to the data plane.
    let mut conn = redis_conn(&url).await;
    type Entry = (String, Vec<(String, Vec<u8>)>);
    let entries: Vec<Entry> = redis::cmd("XRANGE")
        .arg(format!("{prefix}chunks"))
        .arg("-")
        .arg("+")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(!entries.is_empty());
    for (_, fields) in &entries {
        assert!(
            fields[0].1.len() < 2048,
            "an event carries keys, not chunks"
        );
    }

    let objects = RedisConnector::new(&url, format!("{prefix}obj:")).unwrap();
    let registry = ConnectorRegistry::new().with_connector(objects);
    let mut consumer = StreamConsumer::<Vec<u8>>::builder(sub, registry, Raw).build();
    let mut seen = 0;
    while let Some(item) = tokio::time::timeout(WAIT, consumer.next()).await.unwrap() {
        let item = item.unwrap();
        assert_eq!(item.producer, "peer");
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
}

#[tokio::test]
#[cfg_attr(not(tributary_redis), ignore = "needs TRIBUTARY_REDIS_URL")]
async fn a_redis_kind_builds_connectors_only_for_trusted_servers() {
    use tributary_stream::{Connector, ConnectorDescriptor, Proxy, ResolveError};
    let (url, prefix, _cleanup) = setup();
    let objects = RedisConnector::new(&url, prefix.clone()).unwrap();
    let key = objects.put(bytes::Bytes::from_static(b"42")).await.unwrap();
    let registry = ConnectorRegistry::new().with_kind(
        RedisConnector::KIND,
        RedisConnector::kind_for_urls([url.clone()]),
    );

    let p: Proxy<u32> =
        Proxy::unbound(key.clone(), objects.descriptor(), false).bind(&registry, Json);
    assert_eq!(*p.resolve().await.unwrap(), 42);

    let elsewhere = ConnectorDescriptor::new(
        RedisConnector::KIND,
        serde_json::json!({ "url": "redis://127.0.0.1:6390", "prefix": prefix }),
    );
    let p: Proxy<u32> = Proxy::unbound(key, elsewhere, false).bind(&registry, Json);
    let err = p.resolve().await.unwrap_err();
    assert!(matches!(err, ResolveError::Connector { .. }), "{err:?}");
    assert!(
        std::error::Error::source(&err)
            .unwrap()
            .to_string()
            .contains("not trusted"),
        "{err:?}"
    );
}

#[tokio::test]
#[cfg_attr(not(tributary_redis), ignore = "needs TRIBUTARY_REDIS_URL")]
async fn a_cancelled_read_loses_no_message() {
    let (url, prefix, _cleanup) = setup();
    let publisher = RedisPublisher::connect(&url, prefix.clone()).await.unwrap();
    let mut sub = subscriber(&url, &prefix, "c").await;
    publisher.publish("t", "first".into()).await.unwrap();
    let d = tokio::time::timeout(WAIT, sub.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(&d.message[..], b"first");
    sub.ack(d.id).await.unwrap();
    // Start a blocking read for new entries and drop it: Redis hands the
    // next entry to that abandoned read, i.e. to this consumer's pending
    // list, and the reply never reaches us.
    // (A timeout, as a `select!` with a timer would do: long enough for the
    // command to reach Redis.)
    let cancelled = tokio::time::timeout(Duration::from_millis(200), sub.next()).await;
    assert!(cancelled.is_err(), "nothing was published yet");
    publisher.publish("t", "m".into()).await.unwrap();
    let d = tokio::time::timeout(WAIT, sub.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(&d.message[..], b"m");
    sub.ack(d.id).await.unwrap();
}

#[tokio::test]
#[cfg_attr(not(tributary_redis), ignore = "needs TRIBUTARY_REDIS_URL")]
async fn a_proxy_sent_to_another_process_is_resolved_there() {
    use tokio::io::AsyncWriteExt;
    let (url, prefix, _cleanup) = setup();
    let store = Store::new(RedisConnector::new(&url, prefix.clone()).unwrap(), Raw);
    let mut lines = String::new();
    let mut expected = String::new();
    for i in 0..3u8 {
        let object = vec![i + 1; 10_000 * (usize::from(i) + 1)];
        let sum: u64 = object.iter().map(|b| u64::from(*b)).sum();
        expected += &format!("{} {sum}\n", object.len());
        let proxy = store.proxy(object, true).await.unwrap();
        let wire = serde_json::to_string(&proxy).unwrap();
        assert!(wire.len() < 512, "only the reference travels: {wire}");
        lines += &wire;
        lines.push('\n');
    }

    let mut worker = tokio::process::Command::new(env!("CARGO_BIN_EXE_stream_peer"))
        .args(["resolve", &url])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = worker.stdin.take().unwrap();
    stdin.write_all(lines.as_bytes()).await.unwrap();
    drop(stdin);
    let out = tokio::time::timeout(WAIT, worker.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(
        out.status.success(),
        "worker failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8(out.stdout).unwrap(), expected);

    let mut conn = redis_conn(&url).await;
    let left: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(
        left.is_empty(),
        "the worker's resolves evicted the objects: {left:?}"
    );
}

#[tokio::test]
#[cfg_attr(not(tributary_redis), ignore = "needs TRIBUTARY_REDIS_URL")]
async fn trimming_removes_only_what_every_group_acknowledged() {
    let (url, prefix, _cleanup) = setup();
    let publisher = RedisPublisher::connect(&url, prefix.clone()).await.unwrap();
    let connect = |group: &'static str| {
        let (url, prefix) = (url.clone(), prefix.clone());
        async move {
            RedisSubscriber::connect(&url, &prefix, group, "c", ["t"])
                .await
                .unwrap()
                .with_block(Duration::from_millis(100))
        }
    };
    let mut a = connect("a").await;
    let mut b = connect("b").await;
    for i in 0..4 {
        publisher
            .publish("t", format!("m{i}").into())
            .await
            .unwrap();
    }
    let take = async |sub: &mut RedisSubscriber, n: usize| {
        let mut ids = Vec::new();
        while ids.len() < n {
            let d = tokio::time::timeout(WAIT, sub.next())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            ids.push(d.id);
        }
        ids
    };
    for id in take(&mut a, 4).await {
        a.ack(id).await.unwrap();
    }
    let held = take(&mut b, 4).await;
    b.ack(held[0]).await.unwrap();
    b.ack(held[1]).await.unwrap();
    publisher.publish("t", "unread".into()).await.unwrap();

    let len = async || -> u64 {
        let mut conn = redis_conn(&url).await;
        redis::cmd("XLEN")
            .arg(format!("{prefix}t"))
            .query_async(&mut conn)
            .await
            .unwrap()
    };
    assert_eq!(a.trim().await.unwrap(), 2, "only what both groups acked");
    assert_eq!(len().await, 3);
    b.ack(held[2]).await.unwrap();
    b.ack(held[3]).await.unwrap();
    assert_eq!(b.trim().await.unwrap(), 2);
    assert_eq!(len().await, 1, "the unread entry stays");
}
