//! NATS faults on a server of the test's own: a stalled server makes reads
//! and publishes fail with a typed timeout instead of waiting forever, and
//! both go on once the server answers again.

use std::time::Duration;

use tributary_stream::{
    NatsPublisher, NatsSubscriber, NatsSubscriberOptions, Publisher, Subscriber, TransportError,
};

use crate::stream_servers::OwnServer;
use crate::stream_support::WAIT;

#[tokio::test]
#[cfg_attr(not(tributary_nats), ignore = "needs TRIBUTARY_NATS_URL")]
async fn a_stalled_nats_server_makes_calls_fail_with_a_timeout() {
    let server = OwnServer::nats().await;
    let url = server.url();
    let publisher = NatsPublisher::connect(&url, "S", "p")
        .await
        .unwrap()
        .with_timeout(Duration::from_millis(300));
    let mut subscriber = NatsSubscriber::connect(
        &url,
        "S",
        "p",
        "d",
        ["t"],
        NatsSubscriberOptions::default().heartbeat(Duration::from_millis(200)),
    )
    .await
    .unwrap();
    publisher.publish("t", "one".into()).await.unwrap();
    let d = tokio::time::timeout(WAIT, subscriber.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    subscriber.ack(d.id).await.unwrap();

    server.pause();
    let read = tokio::time::timeout(WAIT, subscriber.next())
        .await
        .expect("the read has a deadline");
    assert!(
        matches!(
            read,
            Err(TransportError::Timeout {
                backend: "nats",
                ..
            })
        ),
        "{read:?}"
    );
    let publish = tokio::time::timeout(WAIT, publisher.publish("t", "x".into()))
        .await
        .expect("the publish has a deadline");
    assert!(
        matches!(
            publish,
            Err(TransportError::Timeout {
                backend: "nats",
                ..
            })
        ),
        "{publish:?}"
    );

    server.resume();
    let mut sent = false;
    for _ in 0..5 {
        if publisher.publish("t", "after".into()).await.is_ok() {
            sent = true;
            break;
        }
    }
    assert!(sent, "the publisher works again");
    let mut seen = Vec::new();
    while !seen.iter().any(|m: &bytes::Bytes| &m[..] == b"after") {
        match tokio::time::timeout(WAIT, subscriber.next()).await.unwrap() {
            Ok(Some(d)) => {
                seen.push(d.message.clone());
                subscriber.ack(d.id).await.unwrap();
            }
            Ok(None) => panic!("the subscription ended"),
            // A heartbeat missed while the server caught up.
            Err(TransportError::Timeout { .. }) => {}
            Err(e) => panic!("{e}"),
        }
    }
}
