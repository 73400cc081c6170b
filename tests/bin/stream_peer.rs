//! A producer process for the two-process stream tests: it stores chunks
//! and publishes their events, then exits. The test process consumes.
//!
//! ```text
//! stream_peer redis <redis-url> <prefix> <topic> <count> <size>
//! stream_peer nats <nats-url> <stream> <subject-prefix> <topic> <dir> <count> <size>
//! stream_peer resolve <redis-url>
//! ```
//! In `resolve` mode it is a worker instead: it reads serialized
//! `Proxy<Vec<u8>>`s from stdin, one per line, resolves each through a
//! registry that trusts Redis connectors on `<redis-url>`, and prints the
//! length and byte sum of each object.
//! Chunk `i` is `size` bytes of value `i % 251`; its metadata has `index`
//! and `sum` (the sum of its bytes) so the consumer can check what it
//! resolved.

use anyhow::{Context, Result, bail};
use tributary_stream::{FileConnector, Publisher, Raw, SendOptions, Store, StreamProducer};

async fn produce(
    publisher: impl Publisher + 'static,
    store: Store<Vec<u8>>,
    topic: &str,
    count: usize,
    size: usize,
) -> Result<()> {
    let mut producer = StreamProducer::builder(publisher, Raw)
        .id("peer")
        .default_store(store)
        .batch_size(2)
        .build();
    for i in 0..count {
        let chunk = vec![(i % 251) as u8; size];
        let sum: u64 = chunk.iter().map(|b| u64::from(*b)).sum();
        let metadata = serde_json::json!({ "index": i, "sum": sum });
        let options =
            SendOptions::new().metadata(metadata.as_object().cloned().unwrap_or_default());
        producer.send_with(topic, chunk, options).await?;
    }
    producer.close().await?;
    Ok(())
}

fn arg<T: std::str::FromStr>(args: &[String], i: usize) -> Result<T>
where
    T::Err: std::error::Error + Send + Sync + 'static,
{
    args.get(i)
        .with_context(|| format!("missing argument {i}"))?
        .parse()
        .with_context(|| format!("bad argument {i}"))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("redis") => {
            let (url, prefix, topic): (String, String, String) =
                (arg(&args, 1)?, arg(&args, 2)?, arg(&args, 3)?);
            let publisher = tributary_stream::RedisPublisher::connect(&url, prefix.clone()).await?;
            let connector = tributary_stream::RedisConnector::new(url, format!("{prefix}obj:"))?;
            let store = Store::new(connector, Raw);
            produce(publisher, store, &topic, arg(&args, 4)?, arg(&args, 5)?).await
        }
        Some("nats") => {
            let (url, stream, prefix, topic, dir): (String, String, String, String, String) = (
                arg(&args, 1)?,
                arg(&args, 2)?,
                arg(&args, 3)?,
                arg(&args, 4)?,
                arg(&args, 5)?,
            );
            let publisher =
                tributary_stream::NatsPublisher::connect(&url, &stream, &prefix).await?;
            let store = Store::new(FileConnector::new(dir)?, Raw);
            produce(publisher, store, &topic, arg(&args, 6)?, arg(&args, 7)?).await
        }
        Some("resolve") => {
            let url: String = arg(&args, 1)?;
            let registry = tributary_stream::ConnectorRegistry::new().with_kind(
                tributary_stream::RedisConnector::KIND,
                tributary_stream::RedisConnector::kind_for_urls([url]),
            );
            for line in std::io::stdin().lines() {
                let proxy: tributary_stream::Proxy<Vec<u8>> = serde_json::from_str(&line?)?;
                let object = proxy.bind(&registry, Raw).into_value().await?;
                let sum: u64 = object.iter().map(|b| u64::from(*b)).sum();
                println!("{} {sum}", object.len());
            }
            Ok(())
        }
        other => bail!("unknown mode {other:?}"),
    }
}
