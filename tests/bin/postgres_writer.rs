//! Helper process for the PostgreSQL many-writers test: runs `APPS` chain
//! applications of `STEPS` steps at once, each app id `{PREFIX}-{i}`, with a
//! PostgreSQL persister and tracker on schema `SCHEMA` of `URL`, then
//! prints `ok`.
//!
//! Usage: `postgres_writer URL SCHEMA PREFIX APPS STEPS`

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tributary::{Application, RunOptions};
use tributary_postgres::{Database, PostgresPersister, PostgresTracker};
use tributary_tests::chain::chain_graph;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url, schema, prefix, apps, steps] = args.as_slice() else {
        anyhow::bail!("usage: postgres_writer URL SCHEMA PREFIX APPS STEPS");
    };
    let apps: usize = apps.parse().context("APPS")?;
    let steps: usize = steps.parse().context("STEPS")?;
    let db = Database::builder(url.as_str())
        .schema(schema.as_str())
        .connect()
        .await?;
    let persister = Arc::new(PostgresPersister::new(db.clone()));
    let tracker = PostgresTracker::new(db.clone());
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
