//! Helper process for the cross-process crash test of parallel children:
//! runs (or resumes) the parent `crash-parent` on the SQLite database `DB`.
//! The parent's `map` step runs `CHILDREN` children of four steps; child `i`
//! sleeps `STEP_MS * (1 + 5 i)` ms in each step (so they finish at very
//! different times), then appends the line `i sK` to `EXEC_LOG` (one `write`
//! call, append mode) and completes the step. At the end it prints the
//! parent's final state as JSON on its last stdout line. A SQLite tracker
//! on the same file records the run.
//!
//! Usage: `sqlite_crash_parent DB EXEC_LOG CHILDREN STEP_MS`

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde_json::json;
use tributary::{Application, Graph, RunOptions, State, Subgraph, action, default};
use tributary_sqlite::{Database, SqlitePersister, SqliteTracker};
use tributary_tests::crash::{map_children, prepare};

/// Steps of each child.
const STEPS: usize = 4;

fn child(log: PathBuf, step_ms: u64) -> Subgraph {
    let mut builder = Graph::builder();
    for step in 0..STEPS {
        let log = log.clone();
        let name = format!("s{step}");
        builder = builder.action(
            action(name.clone())
                .reads(["item", "v", "trail"])
                .writes(["v", "trail"])
                .run(move |s: State, _, _| {
                    let log = log.clone();
                    let name = name.clone();
                    async move {
                        let item: u64 = s.get_as("item")?;
                        let delay = step_ms * (1 + 5 * item);
                        if delay == 0 {
                            tokio::task::yield_now().await;
                        } else {
                            tokio::time::sleep(Duration::from_millis(delay)).await;
                        }
                        let mut file = std::fs::OpenOptions::new()
                            .create(true)
                            .append(true)
                            .open(&log)?;
                        // One write call: a kill cannot leave half a line.
                        file.write_all(format!("{item} {name}\n").as_bytes())?;
                        let v: u64 = s.get_as("v")?;
                        let v = (v * 31 + item * STEPS as u64 + step as u64) % 1_000_000_007;
                        Ok((
                            json!({ "v": v }),
                            s.set("v", v).append("trail", name.as_str())?,
                        ))
                    }
                }),
        );
        if step > 0 {
            builder = builder.transition(format!("s{}", step - 1), format!("s{step}"), default());
        }
    }
    Subgraph::new(builder.entrypoint("s0").build().expect("a valid chain"))
}

fn parent(log: PathBuf, children: u64, step_ms: u64) -> anyhow::Result<Graph> {
    Ok(Graph::builder()
        .action(prepare(children))
        .action(map_children(child(log, step_ms)))
        .transition("prepare", "map", default())
        .entrypoint("prepare")
        .build()?)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [db, exec_log, children, step_ms] = args.as_slice() else {
        anyhow::bail!("usage: sqlite_crash_parent DB EXEC_LOG CHILDREN STEP_MS");
    };
    let children: u64 = children.parse().context("CHILDREN")?;
    let step_ms: u64 = step_ms.parse().context("STEP_MS")?;
    let db = Database::open(db).await?;
    let persister = Arc::new(SqlitePersister::new(db.clone()));
    let tracker = SqliteTracker::new(db.clone());
    let graph = parent(PathBuf::from(exec_log), children, step_ms)?;
    let mut app = Application::builder(graph)
        .app_id("crash-parent")
        .persister(persister)
        .hook(tracker.clone())
        .resume()
        .build()
        .await?;
    let out = app.run(RunOptions::new()).await?;
    tracker.flush().await?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{}", out.state.to_json())?;
    stdout.flush()?;
    Ok(())
}
