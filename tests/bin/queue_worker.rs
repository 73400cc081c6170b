//! A work-queue consumer in a process of its own, for the tests that kill
//! it: `queue_worker <redis|nats> <url> <queue> <group> <consumer> <count>`
//! fetches `count` messages, prints their payloads and `held`, then works
//! forever without settling them.

use std::io::Write;
use std::time::Duration;

use tributary_queue::{NatsQueue, QueueOptions, RedisQueue, WorkQueue};

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, backend, url, queue, group, consumer, count] = args.as_slice() else {
        anyhow::bail!("usage: queue_worker <redis|nats> <url> <queue> <group> <consumer> <count>");
    };
    let count: usize = count.parse()?;
    let options = QueueOptions::default().lease(Duration::from_millis(500));
    let queue: Box<dyn WorkQueue> = match backend.as_str() {
        "redis" => Box::new(RedisQueue::connect(url, queue.as_str(), options).await?),
        "nats" => Box::new(
            NatsQueue::connect(url, queue.as_str(), options, Duration::from_secs(120)).await?,
        ),
        other => anyhow::bail!("unknown backend {other}"),
    };
    let mut held = Vec::new();
    while held.len() < count {
        held.extend(
            queue
                .fetch(group, consumer, count - held.len(), Duration::from_secs(5))
                .await?,
        );
    }
    let mut out = std::io::stdout().lock();
    for d in &held {
        writeln!(out, "{}", String::from_utf8_lossy(&d.payload))?;
    }
    writeln!(out, "held")?;
    out.flush()?;
    drop(out);
    std::future::pending::<()>().await;
    Ok(())
}
