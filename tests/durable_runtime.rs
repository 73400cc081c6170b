//! Durable steps inside the tasks of a runtime run: a journal given to the
//! run reaches every task and every nested child, so steps are journaled
//! and replayed across the run's retries and across a restart with the
//! same run id.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::Notify;
use tributary::durable::*;
use tributary::sqlite::SqliteJournal;
use tributary::{
    BoxError, Graph, ParallelAction, RetryPolicy, RunConfig, Runtime, State, Subgraph, TaskSpec,
    action,
};

use crate::durable_support::{Runs, graph_of};

/// Steps A -> B -> C, each counting its runs. The first run of B fails
/// (`fail_b`) or hangs after notifying `b_gate`.
fn chain(runs: Runs, fail_b: bool, b_gate: Option<Arc<Notify>>) -> Graph {
    graph_of(move |ctx| {
        let (runs, b_gate) = (runs.clone(), b_gate.clone());
        async move {
            let a: u32 = ctx
                .step("A", async {
                    runs.bump("A");
                    Ok::<_, BoxError>(1)
                })
                .await?;
            let b: u32 = ctx
                .step("B", async {
                    let n = runs.bump("B");
                    if n == 1 && fail_b {
                        return Err::<u32, BoxError>("b is down".into());
                    }
                    if let (1, Some(gate)) = (n, &b_gate) {
                        gate.notify_one();
                        std::future::pending::<()>().await;
                    }
                    Ok(a + 10)
                })
                .await?;
            let c: u32 = ctx
                .step("C", async {
                    runs.bump("C");
                    Ok::<_, BoxError>(b + 100)
                })
                .await?;
            Ok(json!([a, b, c]))
        }
    })
}

fn out_of(outcome: &tributary::TaskOutcome) -> Option<Value> {
    outcome.state().and_then(|s| s.get("out").cloned())
}

#[tokio::test]
async fn durable_steps_in_a_runtime_task_replay_after_a_task_retry() {
    let journal = Journal::new(Arc::new(MemoryJournal::new()));
    let runs = Runs::default();
    let config = RunConfig::new()
        .journal(&journal)
        .retry(RetryPolicy::exponential(2, Duration::from_millis(1)));
    let tasks = vec![TaskSpec::new("trip", chain(runs.clone(), true, None))];
    let (_h, stream) = Runtime::new().run(tasks, config);
    let outcomes = stream.outcomes().await.unwrap();
    assert!(outcomes[0].is_completed(), "{:?}", outcomes[0]);
    assert_eq!(out_of(&outcomes[0]), Some(json!([1, 11, 111])));
    // The retry replayed A from the journal: only B ran twice.
    assert_eq!((runs.get("A"), runs.get("B"), runs.get("C")), (1, 2, 1));
}

#[tokio::test]
async fn durable_steps_in_a_runtime_task_survive_a_restart_with_the_same_run_id() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal.db");
    let runs = Runs::default();
    let gate = Arc::new(Notify::new());
    let graph = chain(runs.clone(), false, Some(Arc::clone(&gate)));
    let tasks = vec![TaskSpec::new("trip", graph)];

    // The first process: the run is dropped while B's body is running.
    let first = tokio::spawn({
        let (tasks, path) = (tasks.clone(), path.clone());
        async move {
            let journal = Journal::new(Arc::new(SqliteJournal::open(&path).await.unwrap()));
            let config = RunConfig::new().run_id("nightly").journal(&journal);
            Runtime::new().run(tasks, config).1.outcomes().await
        }
    });
    tokio::time::timeout(Duration::from_secs(10), gate.notified())
        .await
        .expect("B starts");
    first.abort();
    assert!(first.await.unwrap_err().is_cancelled());
    assert_eq!((runs.get("A"), runs.get("B"), runs.get("C")), (1, 1, 0));

    // A new runtime and a new journal on the same file, the same run id:
    // A is replayed, B runs again (it never finished), C runs once.
    let journal = Journal::new(Arc::new(SqliteJournal::open(&path).await.unwrap()));
    let config = RunConfig::new().run_id("nightly").journal(&journal);
    let outcomes = Runtime::new()
        .run(tasks, config)
        .1
        .outcomes()
        .await
        .unwrap();
    assert_eq!(out_of(&outcomes[0]), Some(json!([1, 11, 111])));
    assert_eq!((runs.get("A"), runs.get("B"), runs.get("C")), (1, 2, 1));

    // Every journaled step of the task is in the file, under its app id.
    let store = SqliteJournal::open(&path).await.unwrap();
    let entries = store.entries(&outcomes[0].app_id).await.unwrap();
    let names: Vec<&str> = entries.iter().map(|e| e.step.name.as_str()).collect();
    assert_eq!(names, ["A", "B", "C"]);
}

#[tokio::test]
async fn durable_steps_in_the_children_of_a_parallel_action_are_journaled() {
    let store: Arc<dyn JournalStore> = Arc::new(MemoryJournal::new());
    let runs = Runs::default();
    let leaf = {
        let runs = runs.clone();
        Subgraph::action(action("leaf").run(move |s: State, _, ctx| {
            let runs = runs.clone();
            async move {
                let key = ctx.task_key().expect("a child has a key").to_owned();
                let name = format!("fetch-{key}");
                let page: String = ctx
                    .step("fetch", async move {
                        runs.bump(&name);
                        Ok::<_, BoxError>(format!("page {name}"))
                    })
                    .await?;
                Ok((json!({ "page": page }), s))
            }
        }))
    };
    let fan = ParallelAction::map_states("fan", leaf, |_, _| Ok(vec![State::new(); 3]))
        .writes(["pages"])
        .reduce(|s, outcomes| {
            let pages: Vec<_> = outcomes.iter().map(|o| o.result().cloned()).collect();
            Ok(s.set("pages", json!(pages)))
        })
        .build();
    let tasks = vec![TaskSpec::action("p", fan)];

    let mut results = Vec::new();
    for _ in 0..2 {
        // A new journal handle and a new runtime each time, same run id.
        let journal = Journal::new(Arc::clone(&store));
        let config = RunConfig::new().run_id("fan-run").journal(&journal);
        let outcomes = Runtime::new()
            .run(tasks.clone(), config)
            .1
            .outcomes()
            .await
            .unwrap();
        assert!(outcomes[0].is_completed(), "{:?}", outcomes[0]);
        results.push(outcomes[0].state().unwrap().get("pages").cloned());
    }
    assert_eq!(results[0], results[1]);
    let pages = results[0].clone().unwrap();
    assert_eq!(pages.as_array().map(Vec::len), Some(3));
    // Each child's step ran once: the second run replayed all three.
    let all = runs.all();
    assert_eq!(all.len(), 3, "{all:?}");
    assert!(all.values().all(|n| *n == 1), "{all:?}");
}

/// A durable step out of retries with `pause_on_exhausted` pauses its
/// runtime task: the run's progress counts it paused, the handle lists it
/// paused, and `resume_task` starts its retries again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_out_of_retries_pauses_its_task_until_resumed_through_the_handle() {
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
    use tributary::{ItemKind, LiveStatus};

    let journal = Journal::new(Arc::new(MemoryJournal::new()));
    let healthy = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(AtomicU32::new(0));
    let graph = Graph::single(crate::durable_support::pay_pausing_until_healthy(
        Arc::clone(&healthy),
        Arc::clone(&calls),
    ));
    let (handle, mut stream) = Runtime::new().run(
        vec![TaskSpec::new("order", graph)],
        RunConfig::new().journal(&journal),
    );
    let mut progress = handle.progress();
    tokio::time::timeout(
        Duration::from_secs(10),
        progress.wait_for(|p| p.paused == 1),
    )
    .await
    .expect("the task pauses when the step runs out of retries")
    .unwrap();
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "the first try and one retry"
    );
    let listed = handle.tasks();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].status, LiveStatus::Paused);
    // It stays paused: nothing retries on its own.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    healthy.store(true, Ordering::SeqCst);
    handle.resume_task("order").unwrap();
    let end = tokio::time::timeout(Duration::from_secs(10), async {
        let mut last = None;
        while let Some(item) = stream.next().await {
            last = Some(item);
        }
        last
    })
    .await
    .expect("the run ends after the resume")
    .expect("an end");
    assert_eq!(end.kind, ItemKind::Final);
    assert_eq!(end.result, Some(json!({ "paid": true })));
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}
