//! External events: stored when sent, journaled when received, so a crash
//! neither loses nor repeats one.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::sync::Semaphore;
use tributary::BoxError;
use tributary::durable::*;
use tributary::sqlite::SqliteJournal;

use crate::durable_support::Runs;

/// Step `a` (gated by `gate_a`), two waits for `go`, with step `b` (gated
/// by `gate_b`) between them; returns both events.
fn register(workflows: &Workflows, runs: Runs, gate_a: Arc<Semaphore>, gate_b: Arc<Semaphore>) {
    workflows.register("approve", move |ctx: WorkflowContext, ()| {
        let (runs, gate_a, gate_b) = (runs.clone(), gate_a.clone(), gate_b.clone());
        async move {
            let r = runs.clone();
            let _: u32 = ctx
                .step("a", async move {
                    gate_a.acquire().await?.forget();
                    r.bump("a");
                    Ok::<_, BoxError>(0)
                })
                .await?;
            let first: u32 = ctx.await_event("go").await?;
            let r = runs.clone();
            let _: u32 = ctx
                .step("b", async move {
                    gate_b.acquire().await?.forget();
                    r.bump("b");
                    Ok::<_, BoxError>(first)
                })
                .await?;
            let second: u32 = ctx.await_event("go").await?;
            Ok::<_, BoxError>(vec![first, second])
        }
    });
}

fn open() -> Arc<Semaphore> {
    Arc::new(Semaphore::new(Semaphore::MAX_PERMITS))
}

fn closed() -> Arc<Semaphore> {
    Arc::new(Semaphore::new(0))
}

/// Wait (bounded) until `id`'s journal holds `n` event entries.
async fn events_journaled(store: &dyn JournalStore, id: &str, n: usize) {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let entries = store.load(id, 0).await.unwrap();
            if entries
                .iter()
                .filter(|e| e.kind == EntryKind::Event)
                .count()
                >= n
            {
                return;
            }
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the event is journaled");
}

#[tokio::test]
async fn an_event_sent_before_a_crash_is_delivered_once_after_resume() {
    let store: Arc<dyn JournalStore> = Arc::new(MemoryJournal::new());
    let runs = Runs::default();

    // The workflow is held in step `a`; both events are sent; the process
    // dies before the workflow received either.
    let first = Workflows::new(Arc::clone(&store));
    register(&first, runs.clone(), closed(), open());
    first.start("approve", "refund-1", ()).await.unwrap();
    first.send_event("refund-1", "go", 1).await.unwrap();
    first.send_event("refund-1", "go", 2).await.unwrap();
    drop(first);

    let second = Workflows::new(Arc::clone(&store));
    register(&second, runs.clone(), open(), open());
    let resumed = second.resume_all().await.unwrap();
    assert_eq!(resumed.len(), 1);
    assert_eq!(resumed[0].result::<Vec<u32>>().await.unwrap(), [1, 2]);
    assert_eq!((runs.get("a"), runs.get("b")), (1, 1));

    let entries = store.load("refund-1", 0).await.unwrap();
    let events: Vec<_> = entries
        .iter()
        .filter(|e| e.kind == EntryKind::Event)
        .map(|e| (e.step.to_string(), e.outcome.clone()))
        .collect();
    assert_eq!(
        events,
        [
            ("event:go#0".to_owned(), Outcome::Completed(json!(1))),
            ("event:go#1".to_owned(), Outcome::Completed(json!(2))),
        ]
    );
}

#[tokio::test]
async fn a_received_event_is_replayed_after_a_crash_and_never_taken_twice() {
    let store: Arc<dyn JournalStore> = Arc::new(MemoryJournal::new());
    let runs = Runs::default();

    // The workflow takes event 1, then is held in step `b` and dies.
    let first = Workflows::new(Arc::clone(&store));
    register(&first, runs.clone(), open(), closed());
    first.start("approve", "refund-2", ()).await.unwrap();
    first.send_event("refund-2", "go", 1).await.unwrap();
    events_journaled(store.as_ref(), "refund-2", 1).await;
    drop(first);

    // Event 2 is sent while nothing runs; the resumed workflow replays
    // event 1 from its journal and takes event 2 for its second wait.
    let second = Workflows::new(Arc::clone(&store));
    register(&second, runs.clone(), open(), open());
    second.send_event("refund-2", "go", 2).await.unwrap();
    second.send_event("refund-2", "go", 3).await.unwrap();
    let handle = second.resume("refund-2").await.unwrap();
    assert_eq!(handle.result::<Vec<u32>>().await.unwrap(), [1, 2]);
    assert_eq!((runs.get("a"), runs.get("b")), (1, 1));
}

#[tokio::test]
async fn an_event_for_an_unknown_workflow_is_a_typed_error() {
    let workflows = Workflows::new(Arc::new(MemoryJournal::new()));
    assert!(matches!(
        workflows.send_event("nobody", "go", 1).await,
        Err(WorkflowError::UnknownId(id)) if id == "nobody"
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_sent_by_another_engine_on_the_same_file_is_received() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    let runs = Runs::default();
    let waiting = Workflows::new(Arc::new(SqliteJournal::open(&path).await.unwrap()));
    waiting.set_event_poll_interval(Duration::from_millis(10));
    register(&waiting, runs.clone(), open(), open());
    let handle = waiting.start("approve", "refund-3", ()).await.unwrap();

    // Another engine (as another process would) on the same file.
    let sender = Workflows::new(Arc::new(SqliteJournal::open(&path).await.unwrap()));
    sender.send_event("refund-3", "go", 7).await.unwrap();
    sender.send_event("refund-3", "go", 8).await.unwrap();
    let out = tokio::time::timeout(Duration::from_secs(30), handle.result::<Vec<u32>>())
        .await
        .expect("the events arrive by polling")
        .unwrap();
    assert_eq!(out, [7, 8]);
}

// ===== events for the actions of a runtime run, through its handle =====

/// An action that emits `waiting`, awaits the event `go` and, on its first
/// attempt, fails after receiving it (`fail_once`), so the retry shows the
/// event replayed from the journal rather than waited for again.
fn awaiting(fail_once: Arc<std::sync::atomic::AtomicBool>) -> tributary::Graph {
    use tributary::{State, action};
    tributary::Graph::single(action("wait").writes(["got"]).run(move |s: State, _, ctx| {
        let fail_once = Arc::clone(&fail_once);
        async move {
            ctx.emit("waiting").await?;
            let got: String = ctx.await_event("go").await?;
            if fail_once.swap(false, std::sync::atomic::Ordering::SeqCst) {
                return Err("fails once after the event".into());
            }
            Ok((json!({ "got": got }), s.set("got", got)))
        }
    }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_of_a_run_receive_events_sent_by_path_through_its_handle() {
    use std::sync::atomic::AtomicBool;
    use tributary::{ItemKind, RetryPolicy, RunConfig, Runtime, TaskSpec};

    let journal = Journal::new(Arc::new(MemoryJournal::new()));
    let flaky = Arc::new(AtomicBool::new(true));
    let tasks = vec![
        TaskSpec::new("a", awaiting(Arc::new(AtomicBool::new(false)))),
        TaskSpec::new("b", awaiting(Arc::clone(&flaky))),
    ];
    let (handle, mut stream) = Runtime::new().run(
        tasks,
        RunConfig::new()
            .journal(&journal)
            .retry(RetryPolicy::exponential(2, Duration::from_millis(10))),
    );
    // Unknown paths are typed errors.
    assert!(matches!(
        handle.send_event(&journal, "nobody", "go", "x").await,
        Err(DurableError::Event { .. })
    ));
    let mut waiting = 0;
    let mut got = std::collections::BTreeMap::new();
    while let Some(item) = tokio::time::timeout(Duration::from_secs(20), stream.next())
        .await
        .expect("the run goes on")
    {
        match item.kind {
            ItemKind::Token => {
                waiting += 1;
                if waiting == 2 {
                    // Both wait: answer b first, then a, each its own value.
                    assert_eq!(
                        handle
                            .send_event(&journal, "b", "go", "for b")
                            .await
                            .unwrap(),
                        0
                    );
                    assert_eq!(
                        handle
                            .send_event(&journal, "a", "go", "for a")
                            .await
                            .unwrap(),
                        0
                    );
                }
            }
            ItemKind::Final => {
                got.insert(
                    item.task_key.to_string(),
                    item.result.unwrap()["got"].clone(),
                );
            }
            other => panic!("unexpected {other:?}: {:?}", item.error),
        }
    }
    assert_eq!(got["a"], json!("for a"));
    assert_eq!(got["b"], json!("for b"));
    // b failed once after receiving its event and its retry took the
    // journaled event: one event sent, one received, no second wait.
    assert!(!flaky.load(std::sync::atomic::Ordering::SeqCst));
    assert_eq!(
        waiting, 3,
        "b's retry emitted again and did not wait for a new event"
    );
}
