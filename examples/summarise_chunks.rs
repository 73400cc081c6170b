//! A long summarisation action whose 100 chunk calls are durable steps:
//! the process "dies" after chunk 60 and the resumed action starts calling
//! the model again at chunk 61.
//!
//! Without steps, a checkpoint is per action: a crash at chunk 60 would
//! send all 100 chunks to the model again. Here each chunk's summary is
//! journaled (SQLite, in a temporary file shared with the checkpoints), so
//! the resumed action replays 60 summaries from the journal and calls the
//! model for the other 40.
//!
//! Run with `cargo run -p tributary-examples --example summarise_chunks`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use serde_json::json;
use tokio::sync::Notify;
use tributary::durable::{DurableExt, Journal, WithJournal};
use tributary::sqlite::{Database, SqliteJournal, SqlitePersister};
use tributary::{Application, BoxError, Graph, RunOptions, State, action};

const CHUNKS: u32 = 100;

/// The model: counts its calls, and tells the example when chunk `n`
/// starts.
struct Model {
    calls: Vec<AtomicU32>,
    watch: (u32, Notify),
}

impl Model {
    async fn summarise(&self, chunk: u32) -> Result<String, BoxError> {
        self.calls[chunk as usize - 1].fetch_add(1, Ordering::SeqCst);
        if chunk == self.watch.0 {
            self.watch.1.notify_one();
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
        Ok(format!("s{chunk}"))
    }
}

fn graph(model: Arc<Model>) -> Graph {
    Graph::single(
        action("summarise")
            .writes(["summary"])
            .run(move |s: State, _, ctx| {
                let model = model.clone();
                async move {
                    let mut parts = Vec::new();
                    for chunk in 1..=CHUNKS {
                        let model = model.clone();
                        let part: String = ctx
                            .step("chunk", async move { model.summarise(chunk).await })
                            .await?;
                        parts.push(part);
                    }
                    let summary = format!("{} parts, last {}", parts.len(), parts[parts.len() - 1]);
                    Ok((json!({ "summary": summary }), s.set("summary", summary)))
                }
            }),
    )
}

async fn build(
    graph: Graph,
    persister: Arc<SqlitePersister>,
    journal: &Journal,
) -> anyhow::Result<Application> {
    Ok(Application::builder(graph)
        .app_id("report-2026")
        .persister(persister)
        .journal(journal)
        .resume()
        .build()
        .await?)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let path = std::env::temp_dir().join(format!("summarise-chunks-{}.db", std::process::id()));
    // One database for checkpoints and journal.
    let db = Database::open(&path).await?;
    let persister = Arc::new(SqlitePersister::new(db.clone()));
    let journal = Journal::new(Arc::new(SqliteJournal::new(db)));
    let model = Arc::new(Model {
        calls: (0..CHUNKS).map(|_| AtomicU32::new(0)).collect(),
        watch: (61, Notify::new()),
    });
    let graph = graph(model.clone());

    // First run: "killed" as chunk 61 starts (60 summaries are journaled).
    let mut app = build(graph.clone(), persister.clone(), &journal).await?;
    let run = tokio::spawn(async move { app.run(RunOptions::new()).await });
    model.watch.1.notified().await;
    run.abort();
    let _ = run.await;
    let before: Vec<u32> = model
        .calls
        .iter()
        .map(|c| c.load(Ordering::SeqCst))
        .collect();
    let started = before.iter().filter(|&&n| n > 0).count();
    println!(
        "first run: killed while the model summarised chunk {started} (chunks 1..={} journaled)",
        started - 1
    );

    // Resumed: chunks 1..=60 come from the journal.
    let mut app = build(graph, persister, &journal).await?;
    let out = app.run(RunOptions::new()).await?;
    let calls: Vec<u32> = model
        .calls
        .iter()
        .map(|c| c.load(Ordering::SeqCst))
        .collect();
    let resumed_at = (1..=CHUNKS).find(|&c| calls[c as usize - 1] > before[c as usize - 1]);
    println!(
        "resumed run: the model was called again from chunk {}",
        resumed_at.unwrap_or(0)
    );
    println!(
        "summary: {}",
        out.state.get("summary").cloned().unwrap_or_default()
    );

    assert_eq!(resumed_at, Some(61));
    assert!(
        calls[..60].iter().all(|&n| n == 1),
        "chunks 1..=60 ran once"
    );
    assert_eq!(calls[60], 2, "chunk 61 was interrupted, so it ran again");
    assert!(calls[61..].iter().all(|&n| n == 1));

    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    Ok(())
}
