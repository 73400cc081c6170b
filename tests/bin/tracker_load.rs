//! Load on the SQLite tracker, run by hand to measure its memory: `APPS`
//! chain applications of `STEPS` steps, at most `CONCURRENCY` alive at
//! once, each recorded by one `SqliteTracker` on `DB`. Prints one JSON line:
//! the counts, the wall time, and the process's peak RSS (`VmHWM`).
//!
//! Usage: `tracker_load DB APPS STEPS [CONCURRENCY] [--no-tracker]`
//!
//! With `--no-tracker` the same applications run without a tracker: the
//! baseline whose peak the tracker's is compared with. The tracker's queue
//! is bounded (`Database::RECORD_QUEUE_CAPACITY` records), so its peak
//! stays flat however many apps and steps there are.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::json;
use tokio::sync::Semaphore;
use tributary::{Application, RunOptions};
use tributary_sqlite::{Database, SqliteTracker};
use tributary_tests::chain::chain_graph;

/// Peak resident set size of this process in kB.
fn peak_rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let no_tracker = args.iter().any(|a| a == "--no-tracker");
    let args: Vec<&String> = args.iter().filter(|a| *a != "--no-tracker").collect();
    let (db, apps, steps) = match args.as_slice() {
        [db, apps, steps, ..] => (db.as_str(), apps.parse::<usize>()?, steps.parse::<usize>()?),
        _ => anyhow::bail!("usage: tracker_load DB APPS STEPS [CONCURRENCY] [--no-tracker]"),
    };
    let concurrency: usize = args
        .get(3)
        .map_or(Ok(1000), |c| c.parse())
        .context("CONCURRENCY")?;
    let tracker = if no_tracker {
        None
    } else {
        Some(SqliteTracker::new(Database::open(db).await?))
    };
    let graph = chain_graph(steps, Duration::ZERO, None);
    let slots = Arc::new(Semaphore::new(concurrency));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..apps {
        let permit = Arc::clone(&slots).acquire_owned().await?;
        let mut builder = Application::builder(graph.clone()).app_id(format!("load-{i}"));
        if let Some(tracker) = &tracker {
            builder = builder.hook(tracker.clone());
        }
        let mut app = builder.build().await?;
        tasks.spawn(async move {
            let out = app.run(RunOptions::new()).await;
            drop(permit);
            out
        });
        while let Some(done) = tasks.try_join_next() {
            done??;
        }
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    let ran = started.elapsed();
    if let Some(tracker) = tracker {
        tracker.flush().await?;
        tracker.database().clone().close().await?;
    }
    let total = started.elapsed();
    println!(
        "{}",
        json!({
            "apps": apps,
            "steps_per_app": steps,
            "tracker": !no_tracker,
            "record_queue_capacity": Database::RECORD_QUEUE_CAPACITY,
            "run_seconds": ran.as_secs_f64(),
            "total_seconds": total.as_secs_f64(),
            "peak_rss_kb": peak_rss_kb(),
        })
    );
    Ok(())
}
