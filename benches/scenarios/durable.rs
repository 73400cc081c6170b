//! Journaled steps per second: durable workflows on SQLite against the same
//! journal rows appended by a bare loop through the same store, and the
//! latency one journaled step adds.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use serde_json::json;
use tributary::BoxError;
use tributary::durable::{
    DurableExt, EntryKind, JournalEntry, JournalStore, Outcome, StepKey, WorkflowContext,
    WorkflowRecord, WorkflowStatus, Workflows,
};
use tributary::sqlite::SqliteJournal;

use crate::Opts;
use crate::report::{Measurement, Stats, Target};

/// A fresh database file for one sample; removed with its WAL files by
/// [`remove`].
fn fresh_db(tag: &str) -> PathBuf {
    std::env::temp_dir().join(format!(
        "tributary-bench-durable-{}-{tag}-{}.db",
        std::process::id(),
        uuid_like()
    ))
}

fn uuid_like() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

fn remove(path: &Path) {
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
}

/// `workflows` workflows of `steps` trivial steps each; steps per second,
/// and each step's latency in microseconds when `latencies` is asked for.
async fn journaled(workflows: usize, steps: u64, latencies: bool) -> (f64, Vec<f64>) {
    let path = fresh_db("ours");
    let store = Arc::new(
        SqliteJournal::open(&path)
            .await
            .expect("the database opens"),
    );
    let engine = Workflows::new(store.clone());
    let lat = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = lat.clone();
    engine.register("steps", move |ctx: WorkflowContext, steps: u64| {
        let sink = sink.clone();
        async move {
            let mut acc = 0u64;
            for i in 0..steps {
                let t = Instant::now();
                acc = ctx
                    .step("s", async move { Ok::<_, BoxError>(acc + i) })
                    .await?;
                if latencies {
                    sink.lock().unwrap().push(t.elapsed().as_secs_f64() * 1e6);
                }
            }
            Ok::<_, BoxError>(acc)
        }
    });
    let t = Instant::now();
    // Started concurrently, as 1,000 requests would start them.
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..workflows {
        let engine = engine.clone();
        tasks.spawn(async move {
            let handle = engine
                .start("steps", &format!("w{w}"), steps)
                .await
                .expect("starts");
            handle
                .result::<u64>()
                .await
                .expect("the workflow completes");
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("the workflow task ends");
    }
    let rate = (workflows as u64 * steps) as f64 / t.elapsed().as_secs_f64();
    drop(engine);
    drop(store);
    remove(&path);
    let lat = std::mem::take(&mut *lat.lock().unwrap());
    (rate, lat)
}

/// The same rows, appended by `workflows` concurrent bare loops straight
/// through the store (plus the same workflow records); rows per second.
async fn bare(workflows: usize, steps: u64) -> f64 {
    let path = fresh_db("bare");
    let store = Arc::new(
        SqliteJournal::open(&path)
            .await
            .expect("the database opens"),
    );
    let t = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..workflows {
        let store = store.clone();
        tasks.spawn(async move {
            let record = WorkflowRecord {
                workflow_id: format!("w{w}"),
                name: "steps".into(),
                input: json!(steps),
                status: WorkflowStatus::Running,
                output: None,
                error: None,
            };
            store
                .create_workflow(record.clone())
                .await
                .expect("the record is written");
            let mut acc = 0u64;
            for i in 0..steps {
                acc += i;
                store
                    .append(JournalEntry {
                        app_id: format!("w{w}"),
                        sequence_id: 0,
                        position: i as u32,
                        step: StepKey::new("s", i as u32),
                        kind: EntryKind::Step,
                        outcome: Outcome::Completed(json!(acc)),
                        execution: 1,
                    })
                    .await
                    .expect("the row is written");
            }
            let done = WorkflowRecord {
                status: WorkflowStatus::Completed,
                output: Some(json!(acc)),
                ..record
            };
            store
                .put_workflow(done)
                .await
                .expect("the record is written");
        });
    }
    while tasks.join_next().await.is_some() {}
    let rate = (workflows as u64 * steps) as f64 / t.elapsed().as_secs_f64();
    drop(store);
    remove(&path);
    rate
}

/// Steps/s for 1 and 1,000 concurrent workflows against the bare loop.
pub(crate) async fn durable(opts: &Opts) {
    let cases: [(usize, u64); 2] = if opts.quick {
        [(1, 300), (1_000, 5)]
    } else {
        [(1, 1_000), (1_000, 20)]
    };
    for (workflows, steps) in cases {
        let repeats = opts.repeats(5);
        let (mut ours, mut base, mut lat) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..repeats {
            base.push(bare(workflows, steps).await);
            let (rate, l) = journaled(workflows, steps, workflows == 1).await;
            ours.push(rate);
            lat.extend(l);
        }
        let mut m = Measurement::new(
            "durable_steps",
            json!({ "workflows": workflows, "steps": steps, "store": "sqlite" }),
            "steps/s",
        )
        .samples(ours)
        .baseline("bare_append_loop", base)
        .target_ratio(Target::AtLeast(0.5));
        if !lat.is_empty() {
            lat.sort_by(f64::total_cmp);
            let p = |q: f64| lat[((lat.len() - 1) as f64 * q) as usize];
            m = m.extra(
                "step_latency_us",
                json!({ "p50": p(0.5).round(), "p99": p(0.99).round(), "median_of_all": Stats::of(&lat).median.round() }),
            );
        }
        m.emit();
    }
}
