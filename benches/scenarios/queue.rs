//! Work-queue throughput: publish → fetch → ack, messages/s, through
//! tributary's queue on Redis Streams and NATS JetStream, against the same
//! traffic sent with the bare client crate (`redis`, `async-nats`) in the
//! same run. One publisher; 1 and 4 consumers fetching batches of 64 and
//! acknowledging each message. Needs `TRIBUTARY_REDIS_URL` /
//! `TRIBUTARY_NATS_URL` (a backend whose variable is unset is skipped).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use serde_json::json;
use tributary_queue::{NatsQueue, QueueOptions, RedisQueue, Start, WorkQueue};

use crate::Opts;
use crate::report::{Measurement, Target};

const BATCH: usize = 64;
const PAYLOAD: &[u8] = &[7u8; 64];

fn unique(prefix: &str) -> String {
    format!("{prefix}{}", uuid::Uuid::new_v4().simple())
}

fn options() -> QueueOptions {
    QueueOptions::default()
        .lease(Duration::from_secs(30))
        .max_in_flight(4096)
}

/// Publishes `n` messages while `consumers` drain them; messages/s.
async fn through_queue(q: Arc<dyn WorkQueue>, n: u64, consumers: usize) -> anyhow::Result<f64> {
    q.create_group("g", Start::First).await?;
    let acked = Arc::new(AtomicU64::new(0));
    let t = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..consumers {
        let (q, acked) = (q.clone(), acked.clone());
        tasks.spawn(async move {
            let name = format!("c{c}");
            while acked.load(Ordering::Relaxed) < n {
                for d in q
                    .fetch("g", &name, BATCH, Duration::from_millis(50))
                    .await?
                {
                    q.ack(&d).await?;
                    acked.fetch_add(1, Ordering::Relaxed);
                }
            }
            anyhow::Ok(())
        });
    }
    for _ in 0..n {
        q.publish(Bytes::from_static(PAYLOAD), None).await?;
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    Ok(n as f64 / t.elapsed().as_secs_f64())
}

pub(crate) async fn bare_redis(url: &str, n: u64, consumers: usize) -> anyhow::Result<f64> {
    let key = unique("trib-bench-bare:");
    let client = redis::Client::open(url)?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&key)
        .arg("g")
        .arg("0")
        .arg("MKSTREAM")
        .query_async::<()>(&mut conn)
        .await?;
    let acked = Arc::new(AtomicU64::new(0));
    let t = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..consumers {
        // A connection per consumer: blocking reads would hold up the
        // commands behind them on a shared one.
        let mut conn = client.get_multiplexed_async_connection().await?;
        let (acked, key) = (acked.clone(), key.clone());
        tasks.spawn(async move {
            let name = format!("c{c}");
            while acked.load(Ordering::Relaxed) < n {
                let reply: Option<redis::streams::StreamReadReply> = redis::cmd("XREADGROUP")
                    .arg("GROUP")
                    .arg("g")
                    .arg(&name)
                    .arg("COUNT")
                    .arg(BATCH)
                    .arg("BLOCK")
                    .arg(50)
                    .arg("STREAMS")
                    .arg(&key)
                    .arg(">")
                    .query_async(&mut conn)
                    .await?;
                for k in reply.map(|r| r.keys).unwrap_or_default() {
                    for id in k.ids {
                        std::hint::black_box(id.get::<Vec<u8>>("p"));
                        redis::cmd("XACK")
                            .arg(&key)
                            .arg("g")
                            .arg(&id.id)
                            .query_async::<()>(&mut conn)
                            .await?;
                        acked.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            anyhow::Ok(())
        });
    }
    for _ in 0..n {
        redis::cmd("XADD")
            .arg(&key)
            .arg("*")
            .arg("p")
            .arg(PAYLOAD)
            .query_async::<String>(&mut conn)
            .await?;
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    let rate = n as f64 / t.elapsed().as_secs_f64();
    redis::cmd("DEL")
        .arg(&key)
        .query_async::<()>(&mut conn)
        .await?;
    Ok(rate)
}

async fn bare_nats(url: &str, n: u64, consumers: usize) -> anyhow::Result<f64> {
    use async_nats::jetstream::{self, consumer::pull};
    let name = unique("TRIBBENCH_");
    let js = jetstream::new(async_nats::connect(url).await?);
    let stream = js
        .get_or_create_stream(jetstream::stream::Config {
            name: name.clone(),
            subjects: vec![format!("{name}.q")],
            ..Default::default()
        })
        .await?;
    let consumer: jetstream::consumer::PullConsumer = stream
        .get_or_create_consumer(
            "g",
            pull::Config {
                durable_name: Some("g".into()),
                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                ack_wait: Duration::from_secs(30),
                max_ack_pending: 4096,
                ..Default::default()
            },
        )
        .await?;
    let acked = Arc::new(AtomicU64::new(0));
    let t = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..consumers {
        let (consumer, acked) = (consumer.clone(), acked.clone());
        tasks.spawn(async move {
            while acked.load(Ordering::Relaxed) < n {
                let mut got = 0;
                let mut batch = consumer.fetch().max_messages(BATCH).messages().await?;
                while let Some(m) = batch.next().await {
                    let m = m.map_err(|e| anyhow::anyhow!(e))?;
                    std::hint::black_box(&m.payload);
                    m.double_ack().await.map_err(|e| anyhow::anyhow!(e))?;
                    acked.fetch_add(1, Ordering::Relaxed);
                    got += 1;
                }
                if got == 0 {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
            anyhow::Ok(())
        });
    }
    for _ in 0..n {
        js.publish(format!("{name}.q"), Bytes::from_static(PAYLOAD))
            .await?
            .await?;
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    let rate = n as f64 / t.elapsed().as_secs_f64();
    js.delete_stream(&name).await?;
    Ok(rate)
}

async fn ours_redis(url: &str, n: u64, consumers: usize) -> anyhow::Result<f64> {
    let name = unique("trib-bench-q:");
    let q = Arc::new(RedisQueue::connect(url, name.clone(), options()).await?);
    let rate = through_queue(q, n, consumers).await?;
    let mut conn = redis::Client::open(url)?
        .get_multiplexed_async_connection()
        .await?;
    redis::cmd("DEL")
        .arg(&name)
        .query_async::<()>(&mut conn)
        .await?;
    Ok(rate)
}

async fn ours_nats(url: &str, n: u64, consumers: usize) -> anyhow::Result<f64> {
    let name = unique("TRIBBENCHQ_");
    let q =
        Arc::new(NatsQueue::connect(url, name.clone(), options(), Duration::from_secs(120)).await?);
    let rate = through_queue(q, n, consumers).await?;
    let js = async_nats::jetstream::new(async_nats::connect(url).await?);
    js.delete_stream(&name).await?;
    js.delete_stream(format!("{name}_DEAD")).await?;
    Ok(rate)
}

/// The `queue` scenario.
pub(crate) async fn queue(opts: &Opts) {
    let n: u64 = if opts.quick { 2_000 } else { 10_000 };
    let redis_url = std::env::var("TRIBUTARY_REDIS_URL").ok();
    let nats_url = std::env::var("TRIBUTARY_NATS_URL").ok();
    for consumers in [1usize, 4] {
        if let Some(url) = &redis_url {
            let (mut ours, mut bare) = (Vec::new(), Vec::new());
            for _ in 0..opts.repeats(3) {
                bare.push(
                    bare_redis(url, n, consumers)
                        .await
                        .expect("bare redis runs"),
                );
                ours.push(
                    ours_redis(url, n, consumers)
                        .await
                        .expect("redis queue runs"),
                );
            }
            Measurement::new(
                "queue",
                json!({ "backend": "redis", "consumers": consumers, "messages": n, "batch": BATCH }),
                "messages_per_s",
            )
            .samples(ours)
            .baseline("bare_redis", bare)
            .target_ratio(Target::AtLeast(0.7))
            .emit();
        } else {
            eprintln!("queue: TRIBUTARY_REDIS_URL is unset, Redis skipped");
        }
        if let Some(url) = &nats_url {
            let (mut ours, mut bare) = (Vec::new(), Vec::new());
            for _ in 0..opts.repeats(3) {
                bare.push(bare_nats(url, n, consumers).await.expect("bare nats runs"));
                ours.push(ours_nats(url, n, consumers).await.expect("nats queue runs"));
            }
            Measurement::new(
                "queue",
                json!({ "backend": "nats", "consumers": consumers, "messages": n, "batch": BATCH }),
                "messages_per_s",
            )
            .samples(ours)
            .baseline("bare_async_nats", bare)
            .target_ratio(Target::AtLeast(0.7))
            .emit();
        } else {
            eprintln!("queue: TRIBUTARY_NATS_URL is unset, NATS skipped");
        }
    }
}
