//! The work-queue contract on Redis Streams (the shared server), plus what
//! only a real broker can show: a killed consumer process and a restarted
//! server (a server of the test's own).

use std::time::Duration;

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use tributary_queue::{QueueOptions, RedisQueue, Start, WorkQueue};

use crate::queue_conformance::Cleaned;
use crate::stream_support::{service_url, unique};

/// `queue`, its keys deleted when the test ends.
fn cleaned(queue: RedisQueue, url: String) -> Cleaned<RedisQueue> {
    let prefix = queue.name().to_owned();
    Cleaned::new(queue, move || {
        let conn = redis::Client::open(url.as_str()).and_then(|c| c.get_connection());
        if let Ok(mut conn) = conn {
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg(format!("{prefix}*"))
                .query(&mut conn)
                .unwrap_or_default();
            if !keys.is_empty() {
                let _: redis::RedisResult<()> = redis::cmd("DEL").arg(keys).query(&mut conn);
            }
        }
    })
}

fn make(options: QueueOptions) -> BoxFuture<'static, Box<dyn WorkQueue>> {
    async move {
        let url = service_url("TRIBUTARY_REDIS_URL");
        let inner = RedisQueue::connect(&url, unique("trib-test-q:"), options)
            .await
            .unwrap();
        Box::new(cleaned(inner, url)) as Box<dyn WorkQueue>
    }
    .boxed()
}

crate::queue_conformance::conformance!(
    make,
    #[cfg_attr(not(tributary_redis), ignore = "needs TRIBUTARY_REDIS_URL")]
);

// ===== beyond the shared contract: processes and servers that die =====

#[tokio::test]
#[cfg_attr(not(tributary_redis), ignore = "needs TRIBUTARY_REDIS_URL")]
async fn a_killed_consumers_pending_messages_are_claimed_by_another() {
    let url = service_url("TRIBUTARY_REDIS_URL");
    let options = QueueOptions::default().lease(Duration::from_millis(500));
    let name = unique("trib-test-q:");
    let q = cleaned(
        RedisQueue::connect(&url, name.clone(), options)
            .await
            .unwrap(),
        url.clone(),
    );
    crate::queue_conformance::a_killed_consumers_messages_go_to_another(&q, "redis", &url).await;
}

#[tokio::test]
#[cfg_attr(not(tributary_redis), ignore = "needs TRIBUTARY_REDIS_URL")]
async fn a_restarted_redis_loses_nothing_published_and_consumers_resume_by_themselves() {
    use crate::stream_servers::OwnServer;
    let mut server = OwnServer::redis(true).await;
    let options = QueueOptions::default().lease(Duration::from_millis(500));
    let q = RedisQueue::connect(&server.url(), "jobs", options)
        .await
        .unwrap();
    q.create_group("g", Start::First).await.unwrap();
    for i in 0..50 {
        q.publish(format!("{i}").into(), None).await.unwrap();
    }
    let mut done = std::collections::BTreeSet::new();
    for d in q.fetch("g", "c", 20, Duration::from_secs(5)).await.unwrap() {
        done.insert(
            String::from_utf8(d.payload.to_vec())
                .unwrap()
                .parse::<u32>()
                .unwrap(),
        );
        q.ack(&d).await.unwrap();
    }
    // Five more are held, unsettled, when the server dies.
    let held = q.fetch("g", "c", 5, Duration::from_secs(5)).await.unwrap();
    assert_eq!((done.len(), held.len()), (20, 5));

    server.kill();
    server.start_again().await;

    // The same queue object, with no help: it reconnects, the held five
    // come back after their lease, and nothing published is missing.
    let started = std::time::Instant::now();
    let mut errors = 0;
    while done.len() < 50 {
        assert!(started.elapsed() < Duration::from_secs(20), "have {done:?}");
        match q.fetch("g", "c2", 50, Duration::from_secs(1)).await {
            Ok(got) => {
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
            Err(_) => errors += 1,
        }
    }
    assert!(errors <= 2, "{errors} failed fetches after the restart");
    assert_eq!(done, (0..50).collect());
    q.publish("after".into(), None).await.unwrap();
    let after = q.fetch("g", "c2", 1, Duration::from_secs(5)).await.unwrap();
    assert_eq!(&after[0].payload[..], b"after");
}
