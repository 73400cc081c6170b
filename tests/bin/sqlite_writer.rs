//! Helper process for the SQLite concurrency tests: runs `APPS` chain
//! applications of `STEPS` steps at once, each app id `{PREFIX}-{i}`, with a
//! SQLite persister and tracker on `DB`, then prints `ok`.
//!
//! Usage: `sqlite_writer DB PREFIX APPS STEPS`

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tributary::{Application, RunOptions};
use tributary_sqlite::{Database, SqlitePersister, SqliteTracker};
use tributary_tests::chain::chain_graph;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [db, prefix, apps, steps] = args.as_slice() else {
        anyhow::bail!("usage: sqlite_writer DB PREFIX APPS STEPS");
    };
    let apps: usize = apps.parse().context("APPS")?;
    let steps: usize = steps.parse().context("STEPS")?;
    let db = Database::open(db).await?;
    let persister = Arc::new(SqlitePersister::new(db.clone()));
    let tracker = SqliteTracker::new(db.clone());
    let graph = chain_graph(steps, Duration::ZERO, None);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..apps {
        let mut app = Application::builder(graph.clone())
            .app_id(format!("{prefix}-{i}"))
            .partition_key(prefix.clone())
            .persister(persister.clone())
            .hook(tracker.clone())
            .build()
            .await?;
        tasks.spawn(async move { app.run(RunOptions::new()).await });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    db.close().await?;
    println!("ok");
    Ok(())
}
