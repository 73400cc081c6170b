//! Redis faults on a server of the test's own: a killed connection, a
//! restart, a stalled server. Every Redis-backed part must come back by
//! itself, lose nothing acknowledged, and never wait forever.

use std::time::Duration;

use bytes::Bytes;
use tributary_stream::{
    Connector, ConnectorError, ConnectorRegistry, Json, Proxy, Publisher, RedisConnector,
    RedisPublisher, RedisSubscriber, Store, StreamConsumer, StreamProducer, Subscriber,
    TransportError,
};

use crate::stream_servers::OwnServer;
use crate::stream_support::WAIT;

/// Closes every client connection of `url` but the admin's own.
fn kill_clients(url: &str) -> u64 {
    let mut admin = redis::Client::open(url).unwrap().get_connection().unwrap();
    redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("normal")
        .arg("SKIPME")
        .arg("yes")
        .query(&mut admin)
        .unwrap()
}

#[tokio::test]
#[cfg_attr(not(tributary_redis), ignore = "needs TRIBUTARY_REDIS_URL")]
async fn every_redis_part_works_again_after_its_connection_is_killed() {
    let server = OwnServer::redis(false).await;
    let url = server.url();
    let connector = RedisConnector::new(&url, "obj:").unwrap();
    let clone = connector.clone();
    let registry = ConnectorRegistry::new().with_kind(
        RedisConnector::KIND,
        RedisConnector::kind_for_urls([url.clone()]),
    );
    let publisher = RedisPublisher::connect(&url, "s:").await.unwrap();
    let mut subscriber = RedisSubscriber::connect(&url, "s:", "g", "c", ["t"])
        .await
        .unwrap()
        .with_block(Duration::from_millis(100));

    // Every part has its connection open.
    let key = connector.put(Bytes::from_static(b"42")).await.unwrap();
    let cached: Proxy<u32> =
        Proxy::unbound(key.clone(), connector.descriptor(), false).bind(&registry, Json);
    assert_eq!(*cached.resolve().await.unwrap(), 42);
    publisher.publish("t", "one".into()).await.unwrap();
    let d = tokio::time::timeout(WAIT, subscriber.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    subscriber.ack(d.id).await.unwrap();

    assert!(
        kill_clients(&url) >= 4,
        "the parts' connections were killed"
    );

    // Idempotent calls go through at once; a publish may report the broken
    // connection once, and the next one goes through.
    assert_eq!(
        connector.get(&key).await.unwrap().as_deref(),
        Some(&b"42"[..])
    );
    assert!(clone.exists(&key).await.unwrap());
    let through_registry: Proxy<u32> =
        Proxy::unbound(key.clone(), connector.descriptor(), false).bind(&registry, Json);
    assert_eq!(*through_registry.resolve().await.unwrap(), 42);
    let mut failed = 0;
    while let Err(e) = publisher.publish("t", "two".into()).await {
        failed += 1;
        assert!(failed < 2, "the publisher stays broken: {e}");
    }
    let d = tokio::time::timeout(WAIT, subscriber.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(&d.message[..], b"two");
    subscriber.ack(d.id).await.unwrap();
}

#[tokio::test]
#[cfg_attr(not(tributary_redis), ignore = "needs TRIBUTARY_REDIS_URL")]
async fn a_stream_loses_nothing_across_a_redis_restart() {
    const COUNT: u32 = 150;
    let mut server = OwnServer::redis(true).await;
    let url = server.url();
    let objects = RedisConnector::new(&url, "obj:").unwrap();
    let mut producer =
        StreamProducer::builder(RedisPublisher::connect(&url, "s:").await.unwrap(), Json)
            .id("p")
            .default_store(Store::new(objects.clone(), Json))
            .batch_size(5)
            .build();
    let subscriber = RedisSubscriber::connect(&url, "s:", "g", "c", ["t"])
        .await
        .unwrap()
        .with_block(Duration::from_millis(100))
        .with_timeout(Duration::from_secs(1));
    let registry = ConnectorRegistry::new().with_connector(objects);
    let mut consumer = StreamConsumer::<u32>::builder(subscriber, registry, Json).build();
    let consuming = tokio::spawn(async move {
        let mut values = Vec::new();
        let mut errors = 0;
        while let Some(item) = consumer.next().await {
            match item {
                Ok(item) => match item.payload.into_value().await {
                    Ok(v) => values.push(v),
                    Err(_) => errors += 1,
                },
                Err(_) => errors += 1,
            }
        }
        (values, errors)
    });

    for i in 0..COUNT {
        if i == 50 {
            server.kill();
            // The server stays away while the producer flushes: its flushes
            // fail and are retried until the server is back.
            let restart = async {
                tokio::time::sleep(Duration::from_millis(300)).await;
                server.start_again().await;
            };
            let sending = async {
                for j in 50..55 {
                    producer.send("t", j).await.unwrap();
                }
            };
            tokio::join!(restart, sending);
            continue;
        }
        if (51..55).contains(&i) {
            continue;
        }
        producer.send("t", i).await.unwrap();
    }
    producer.close().await.unwrap();

    let (values, errors) = tokio::time::timeout(WAIT, consuming)
        .await
        .expect("the consumer ends")
        .unwrap();
    assert_eq!(
        values,
        (0..COUNT).collect::<Vec<_>>(),
        "nothing lost, in order"
    );
    // Transport errors while the server was away are expected; the values
    // above show none of them cost an object.
    let _ = errors;
}

#[tokio::test]
#[cfg_attr(not(tributary_redis), ignore = "needs TRIBUTARY_REDIS_URL")]
async fn a_stalled_redis_server_makes_calls_fail_with_a_timeout() {
    let server = OwnServer::redis(false).await;
    let url = server.url();
    let publisher = RedisPublisher::connect(&url, "s:")
        .await
        .unwrap()
        .with_timeout(Duration::from_millis(300));
    let mut subscriber = RedisSubscriber::connect(&url, "s:", "g", "c", ["t"])
        .await
        .unwrap()
        .with_block(Duration::from_millis(100))
        .with_timeout(Duration::from_millis(300));
    let connector = RedisConnector::new(&url, "obj:")
        .unwrap()
        .with_timeout(Duration::from_millis(300));
    let key = connector.put(Bytes::from_static(b"1")).await.unwrap();

    server.pause();
    let read = tokio::time::timeout(WAIT, subscriber.next())
        .await
        .expect("the read has a deadline");
    assert!(
        matches!(
            read,
            Err(TransportError::Timeout {
                backend: "redis",
                ..
            })
        ),
        "{read:?}"
    );
    let publish = tokio::time::timeout(WAIT, publisher.publish("t", "x".into()))
        .await
        .expect("the publish has a deadline");
    assert!(
        matches!(publish, Err(TransportError::Timeout { .. })),
        "{publish:?}"
    );
    let get = tokio::time::timeout(WAIT, connector.get(&key))
        .await
        .expect("the get has a deadline");
    assert!(
        matches!(get, Err(ConnectorError::Timeout { kind: "redis", .. })),
        "{get:?}"
    );

    // Once the server answers again, so do they.
    server.resume();
    publisher.publish("t", "after".into()).await.unwrap();
    let mut seen = Vec::new();
    while !seen.iter().any(|m: &Bytes| &m[..] == b"after") {
        let d = tokio::time::timeout(WAIT, subscriber.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        seen.push(d.message.clone());
        subscriber.ack(d.id).await.unwrap();
    }
    assert_eq!(
        connector.get(&key).await.unwrap().as_deref(),
        Some(&b"1"[..])
    );
}

#[tokio::test]
#[cfg_attr(not(tributary_redis), ignore = "needs TRIBUTARY_REDIS_URL")]
async fn after_a_restart_without_persistence_a_subscriber_joins_its_group_again() {
    let mut server = OwnServer::redis(false).await;
    let url = server.url();
    let publisher = RedisPublisher::connect(&url, "s:").await.unwrap();
    let mut subscriber = RedisSubscriber::connect(&url, "s:", "g", "c", ["t"])
        .await
        .unwrap()
        .with_block(Duration::from_millis(100))
        .with_timeout(Duration::from_secs(1));
    publisher.publish("t", "before".into()).await.unwrap();
    let d = tokio::time::timeout(WAIT, subscriber.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    subscriber.ack(d.id).await.unwrap();

    // The server forgets the stream and the group.
    server.kill();
    server.start_again().await;

    let mut failed = 0;
    while publisher.publish("t", "after".into()).await.is_err() {
        failed += 1;
        assert!(failed < 3, "the publisher stays broken");
    }
    let started = std::time::Instant::now();
    loop {
        assert!(started.elapsed() < WAIT, "the subscriber never read again");
        match tokio::time::timeout(WAIT, subscriber.next()).await.unwrap() {
            Ok(Some(d)) => {
                assert_eq!(&d.message[..], b"after");
                subscriber.ack(d.id).await.unwrap();
                break;
            }
            Ok(None) => panic!("the subscription ended"),
            Err(_) => {} // the broken connection, reported once
        }
    }
}
