//! Proxy streams: a producer, a dispatcher that only routes, and workers.
//!
//! Run with `cargo run -p tributary-examples --example streams_dispatch`.
//! No server needed: events go through an in-process broker and the chunks
//! through a directory under the system temp dir.
//!
//! The producer streams large chunks: each chunk is written to the data
//! plane (a file store) and only a small event with its key travels on the
//! event plane. The dispatcher receives proxies and routes them to workers
//! round-robin *without reading a single chunk byte* — it even serializes
//! them, as it would to send them to another machine. Each worker binds the
//! proxies it gets to the connectors it trusts and resolves them, which
//! fetches the chunk (and evicts it: each chunk is read exactly once).

use std::path::Path;

use anyhow::{Context, Result, ensure};
use tokio::sync::mpsc;
use tributary_stream::{
    ConnectorRegistry, FileConnector, MemoryBroker, Payload, Proxy, Raw, SendOptions, Store,
    StreamConsumer, StreamProducer,
};

/// What a run did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Chunks each worker resolved.
    pub per_worker: Vec<usize>,
    /// Bytes the workers resolved in total.
    pub bytes_resolved: usize,
    /// Chunk bytes the dispatcher read: always 0.
    pub bytes_seen_by_dispatcher: usize,
    /// Objects left in the store afterwards: 0, each was evicted on resolve.
    pub objects_left: usize,
}

/// Streams `chunks` chunks of `chunk_size` bytes through a dispatcher to
/// `workers` workers, with the chunks stored under `dir`.
pub async fn run(chunks: usize, chunk_size: usize, workers: usize, dir: &Path) -> Result<Summary> {
    let broker = MemoryBroker::new(8); // bounded: a slow dispatcher slows the producer
    let files = FileConnector::new(dir)?;

    // Producer: chunks to the file store, events to the broker.
    let mut stream = StreamProducer::builder(broker.publisher(), Raw)
        .default_store(Store::new(files.clone(), Raw))
        .batch_size(4)
        .build();
    let producer = tokio::spawn(async move {
        for i in 0..chunks {
            let chunk = vec![(i % 256) as u8; chunk_size];
            let metadata = serde_json::json!({ "chunk": i });
            let options =
                SendOptions::new().metadata(metadata.as_object().cloned().unwrap_or_default());
            stream.send_with("chunks", chunk, options).await?;
        }
        stream.close().await?;
        anyhow::Ok(())
    });

    // Workers: each trusts only the chunk store's connector.
    let registry = ConnectorRegistry::new().with_connector(files.clone());
    let mut senders = Vec::new();
    let mut handles = Vec::new();
    for _ in 0..workers {
        let (tx, mut rx) = mpsc::channel::<String>(4);
        senders.push(tx);
        let registry = registry.clone();
        handles.push(tokio::spawn(async move {
            let (mut count, mut bytes) = (0, 0);
            while let Some(wire) = rx.recv().await {
                let proxy: Proxy<Vec<u8>> =
                    serde_json::from_str::<Proxy<Vec<u8>>>(&wire)?.bind(&registry, Raw);
                let chunk = proxy.resolve().await?;
                count += 1;
                bytes += chunk.len();
            }
            anyhow::Ok((count, bytes))
        }));
    }

    // Dispatcher: routes proxies; never resolves one.
    let subscriber = broker.subscriber(["chunks"])?;
    let mut consumer =
        StreamConsumer::<Vec<u8>>::builder(subscriber, registry.clone(), Raw).build();
    let dispatch = async move {
        let mut next = 0;
        let mut seen = 0;
        while let Some(item) = consumer.next().await {
            let item = item?;
            let Payload::Proxy(proxy) = item.payload else {
                anyhow::bail!("the chunks topic has a store, so every item is a proxy");
            };
            seen += proxy.get().map_or(0, Vec::len);
            senders[next % senders.len()]
                .send(serde_json::to_string(&proxy)?)
                .await?;
            next += 1;
        }
        anyhow::Ok(seen) // dropping the senders ends the workers
    };

    let seen = dispatch.await?;
    producer.await.context("producer panicked")??;
    let mut summary = Summary {
        bytes_seen_by_dispatcher: seen,
        ..Summary::default()
    };
    for h in handles {
        let (count, bytes) = h.await.context("worker panicked")??;
        summary.per_worker.push(count);
        summary.bytes_resolved += bytes;
    }
    summary.objects_left = std::fs::read_dir(files.dir())?.count();
    Ok(summary)
}

#[tokio::main]
async fn main() -> Result<()> {
    let dir =
        std::env::temp_dir().join(format!("tributary-streams-dispatch-{}", std::process::id()));
    let summary = run(32, 1 << 20, 3, &dir).await;
    let _ = std::fs::remove_dir_all(&dir);
    let summary = summary?;
    println!("chunks per worker:        {:?}", summary.per_worker);
    println!("bytes resolved by workers: {}", summary.bytes_resolved);
    println!(
        "bytes read by dispatcher:  {}",
        summary.bytes_seen_by_dispatcher
    );
    println!("objects left in store:     {}", summary.objects_left);
    ensure!(summary.bytes_seen_by_dispatcher == 0 && summary.objects_left == 0);
    Ok(())
}
