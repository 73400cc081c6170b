//! The work-queue contract on NATS JetStream (the shared server), and a
//! restarted server of the test's own.

use std::time::Duration;

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use tributary_queue::{NatsQueue, QueueOptions, Start, WorkQueue};

use crate::queue_conformance::Cleaned;
use crate::stream_support::service_url;

const DEDUPE_WINDOW: Duration = Duration::from_secs(120);

/// `queue`, its streams deleted when the test ends.
fn cleaned(queue: NatsQueue, url: String) -> Cleaned<NatsQueue> {
    let name = queue.name().to_owned();
    Cleaned::new(queue, move || {
        // Drop may run inside the test's runtime: delete from a thread.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                if let Ok(client) = async_nats::connect(&url).await {
                    let js = async_nats::jetstream::new(client);
                    let _ = js.delete_stream(&name).await;
                    let _ = js.delete_stream(format!("{name}_DEAD")).await;
                }
            });
        })
        .join();
    })
}

fn make(options: QueueOptions) -> BoxFuture<'static, Box<dyn WorkQueue>> {
    async move {
        let url = service_url("TRIBUTARY_NATS_URL");
        crate::stream_nats::anchor(&url).await;
        let name = format!("TRIBQ_{}", uuid::Uuid::new_v4().simple());
        let inner = NatsQueue::connect(&url, name, options, DEDUPE_WINDOW)
            .await
            .unwrap();
        Box::new(cleaned(inner, url)) as Box<dyn WorkQueue>
    }
    .boxed()
}

crate::queue_conformance::conformance!(
    make,
    #[cfg_attr(not(tributary_nats), ignore = "needs TRIBUTARY_NATS_URL")]
);

#[tokio::test]
#[cfg_attr(not(tributary_nats), ignore = "needs TRIBUTARY_NATS_URL")]
async fn a_killed_consumers_pending_messages_are_claimed_by_another() {
    let url = service_url("TRIBUTARY_NATS_URL");
    crate::stream_nats::anchor(&url).await;
    let options = QueueOptions::default().lease(Duration::from_millis(500));
    let name = format!("TRIBQ_{}", uuid::Uuid::new_v4().simple());
    let q = cleaned(
        NatsQueue::connect(&url, name, options, DEDUPE_WINDOW)
            .await
            .unwrap(),
        url.clone(),
    );
    crate::queue_conformance::a_killed_consumers_messages_go_to_another(&q, "nats", &url).await;
}

#[tokio::test]
#[cfg_attr(not(tributary_nats), ignore = "needs TRIBUTARY_NATS_URL")]
async fn a_restarted_nats_server_loses_nothing_published_and_consumers_resume_by_themselves() {
    use crate::stream_servers::OwnServer;
    let mut server = OwnServer::nats().await;
    let options = QueueOptions::default().lease(Duration::from_millis(500));
    let q = NatsQueue::connect(&server.url(), "jobs", options, DEDUPE_WINDOW)
        .await
        .unwrap();
    q.create_group("g", Start::First).await.unwrap();
    for i in 0..50 {
        q.publish(format!("{i}").into(), None).await.unwrap();
    }
    let mut done = std::collections::BTreeSet::new();
    let mut got = Vec::new();
    while got.len() < 20 {
        got.extend(
            q.fetch("g", "c", 20 - got.len(), Duration::from_secs(5))
                .await
                .unwrap(),
        );
    }
    for d in got {
        done.insert(
            String::from_utf8(d.payload.to_vec())
                .unwrap()
                .parse::<u32>()
                .unwrap(),
        );
        q.ack(&d).await.unwrap();
    }
    let held = q.fetch("g", "c", 5, Duration::from_secs(5)).await.unwrap();
    assert_eq!(done.len(), 20);
    assert!(!held.is_empty());

    server.kill();
    server.start_again().await;

    let started = std::time::Instant::now();
    while done.len() < 50 {
        assert!(started.elapsed() < Duration::from_secs(30), "have {done:?}");
        if let Ok(got) = q.fetch("g", "c2", 50, Duration::from_secs(1)).await {
            for d in got {
                let v: u32 = String::from_utf8(d.payload.to_vec())
                    .unwrap()
                    .parse()
                    .unwrap();
                assert!(
                    done.insert(v),
                    "{v} acknowledged before the restart came back"
                );
                q.ack(&d).await.unwrap();
            }
        }
    }
    assert_eq!(done, (0..50).collect());
}
