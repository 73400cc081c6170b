//! Durable workflows: started under an id (a second start attaches),
//! resumed after a crash, cancellable.

use std::sync::Arc;

use tokio::sync::Semaphore;
use tributary::BoxError;
use tributary::durable::*;

use crate::durable_support::Runs;

/// A workflow of `steps` steps adding their index to the input; each step
/// first takes a permit from `gate` (tests hold a workflow by giving out
/// few permits).
fn register_sum(workflows: &Workflows, runs: Runs, gate: Arc<Semaphore>) {
    workflows.register(
        "sum",
        move |ctx: WorkflowContext, (start, steps): (u64, u64)| {
            let (runs, gate) = (runs.clone(), gate.clone());
            async move {
                let mut acc = start;
                for i in 0..steps {
                    let (runs, gate) = (runs.clone(), gate.clone());
                    acc = ctx
                        .step("add", async move {
                            gate.acquire().await?.forget();
                            runs.bump(&format!("add{i}"));
                            Ok::<_, BoxError>(acc + i)
                        })
                        .await?;
                }
                Ok::<_, BoxError>(acc)
            }
        },
    );
}

fn open_gate() -> Arc<Semaphore> {
    Arc::new(Semaphore::new(Semaphore::MAX_PERMITS))
}

#[tokio::test]
async fn a_second_start_of_a_finished_workflow_returns_its_outcome_without_running() {
    let store: Arc<dyn JournalStore> = Arc::new(MemoryJournal::new());
    let runs = Runs::default();
    let workflows = Workflows::new(Arc::clone(&store));
    register_sum(&workflows, runs.clone(), open_gate());
    let first = workflows.start("sum", "w1", (100u64, 4u64)).await.unwrap();
    assert_eq!(first.result::<u64>().await.unwrap(), 106);
    let again = workflows.start("sum", "w1", (100u64, 4u64)).await.unwrap();
    assert_eq!(again.result::<u64>().await.unwrap(), 106);
    assert!(runs.all().values().all(|n| *n == 1), "{:?}", runs.all());

    // Resuming it in a new engine runs no step body either.
    let workflows = Workflows::new(store);
    register_sum(&workflows, runs.clone(), open_gate());
    let resumed = workflows.resume("w1").await.unwrap();
    assert_eq!(resumed.result::<u64>().await.unwrap(), 106);
    assert!(runs.all().values().all(|n| *n == 1), "{:?}", runs.all());
    let record = workflows.record("w1").await.unwrap().unwrap();
    assert_eq!(record.status, WorkflowStatus::Completed);
}

#[tokio::test]
async fn two_concurrent_starts_of_one_id_run_the_body_once() {
    let runs = Runs::default();
    let gate = Arc::new(Semaphore::new(0));
    let workflows = Workflows::new(Arc::new(MemoryJournal::new()));
    register_sum(&workflows, runs.clone(), gate.clone());
    let (a, b) = tokio::join!(
        workflows.start("sum", "w2", (0u64, 3u64)),
        workflows.start("sum", "w2", (0u64, 3u64)),
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    gate.add_permits(100);
    assert_eq!(a.result::<u64>().await.unwrap(), 3);
    assert_eq!(b.result::<u64>().await.unwrap(), 3);
    assert_eq!(
        (runs.get("add0"), runs.get("add1"), runs.get("add2")),
        (1, 1, 1)
    );
}

#[tokio::test]
async fn an_unknown_id_or_function_is_a_typed_error() {
    let workflows = Workflows::new(Arc::new(MemoryJournal::new()));
    register_sum(&workflows, Runs::default(), open_gate());
    assert!(matches!(
        workflows.resume("nobody").await,
        Err(WorkflowError::UnknownId(id)) if id == "nobody"
    ));
    assert!(matches!(
        workflows.cancel("nobody").await,
        Err(WorkflowError::UnknownId(_))
    ));
    assert!(matches!(
        workflows.start("missing", "w", 1).await,
        Err(WorkflowError::UnknownFunction(name)) if name == "missing"
    ));
    workflows.register("other", |_ctx: WorkflowContext, x: u64| async move {
        Ok::<_, BoxError>(x)
    });
    workflows
        .start("sum", "w3", (0u64, 1u64))
        .await
        .unwrap()
        .result::<u64>()
        .await
        .unwrap();
    assert!(matches!(
        workflows.start("other", "w3", 1).await,
        Err(WorkflowError::OtherFunction { existing, requested, .. })
            if existing == "sum" && requested == "other"
    ));
}

#[tokio::test]
async fn resume_all_finishes_a_workflow_left_unfinished_by_a_crash() {
    let store: Arc<dyn JournalStore> = Arc::new(MemoryJournal::new());
    let runs = Runs::default();

    // The first engine completes two steps, then is dropped mid-step three
    // (its tasks stop with it, as with a crashed process).
    let gate = Arc::new(Semaphore::new(2));
    let first = Workflows::new(Arc::clone(&store));
    register_sum(&first, runs.clone(), gate.clone());
    let handle = first.start("sum", "w4", (10u64, 5u64)).await.unwrap();
    while runs.get("add1") == 0 {
        tokio::task::yield_now().await;
    }
    drop(first);
    assert!(matches!(
        handle.result::<u64>().await,
        Err(WorkflowError::Lost(_))
    ));
    // Something else finished: resume_all must ignore it.
    let done = Workflows::new(Arc::clone(&store));
    register_sum(&done, Runs::default(), open_gate());
    done.start("sum", "finished", (0u64, 1u64))
        .await
        .unwrap()
        .result::<u64>()
        .await
        .unwrap();

    let second = Workflows::new(store);
    register_sum(&second, runs.clone(), open_gate());
    let resumed = second.resume_all().await.unwrap();
    let ids: Vec<&str> = resumed.iter().map(WorkflowHandle::id).collect();
    assert_eq!(ids, ["w4"]);
    assert_eq!(resumed[0].result::<u64>().await.unwrap(), 20);
    for i in 0..5 {
        assert_eq!(runs.get(&format!("add{i}")), 1, "add{i}");
    }
}

#[tokio::test]
async fn a_cancelled_workflow_stops_and_is_never_resumed() {
    let store: Arc<dyn JournalStore> = Arc::new(MemoryJournal::new());
    let runs = Runs::default();
    let gate = Arc::new(Semaphore::new(1));
    let workflows = Workflows::new(Arc::clone(&store));
    register_sum(&workflows, runs.clone(), gate.clone());
    let handle = workflows.start("sum", "w5", (0u64, 3u64)).await.unwrap();
    while runs.get("add0") == 0 {
        tokio::task::yield_now().await;
    }
    workflows.cancel("w5").await.unwrap();
    assert!(
        matches!(handle.result::<u64>().await, Err(WorkflowError::Cancelled(id)) if id == "w5")
    );
    assert_eq!(
        workflows.record("w5").await.unwrap().unwrap().status,
        WorkflowStatus::Cancelled
    );

    let again = Workflows::new(store);
    register_sum(&again, runs.clone(), open_gate());
    assert!(again.resume_all().await.unwrap().is_empty());
    let resumed = again.resume("w5").await.unwrap();
    assert!(matches!(
        resumed.result::<u64>().await,
        Err(WorkflowError::Cancelled(_))
    ));
    assert_eq!((runs.get("add1"), runs.get("add2")), (0, 0));
}

#[tokio::test]
async fn a_failing_workflow_records_its_error() {
    let workflows = Workflows::new(Arc::new(MemoryJournal::new()));
    workflows.register("fails", |_ctx: WorkflowContext, _: ()| async move {
        Err::<(), BoxError>("out of stock".into())
    });
    let handle = workflows.start("fails", "w6", ()).await.unwrap();
    assert!(matches!(
        handle.result::<()>().await,
        Err(WorkflowError::Failed { error, .. }) if error == "out of stock"
    ));
    let record = workflows.record("w6").await.unwrap().unwrap();
    assert_eq!(record.status, WorkflowStatus::Failed);
    assert_eq!(record.error.as_deref(), Some("out of stock"));
}

/// A workflow whose one step fails while `healthy` is false, with two
/// retries and a pause when they run out.
fn register_pay(
    workflows: &Workflows,
    healthy: Arc<std::sync::atomic::AtomicBool>,
    attempts: Arc<std::sync::atomic::AtomicU32>,
) {
    use std::sync::atomic::Ordering;
    workflows.register("pay", move |ctx: WorkflowContext, ()| {
        let (healthy, attempts) = (healthy.clone(), attempts.clone());
        async move {
            let policy = StepPolicy::new()
                .retries(2)
                .backoff(
                    std::time::Duration::from_millis(1),
                    std::time::Duration::from_millis(1),
                )
                .pause_on_exhausted();
            let paid: u32 = ctx
                .step_with("charge", |_| {
                    let (healthy, attempts) = (healthy.clone(), attempts.clone());
                    async move {
                        attempts.fetch_add(1, Ordering::SeqCst);
                        if healthy.load(Ordering::SeqCst) {
                            Ok(42)
                        } else {
                            Err::<u32, BoxError>("gateway down".into())
                        }
                    }
                })
                .policy(policy)
                .await?;
            Ok::<_, BoxError>(paid)
        }
    });
}

/// Wait (bounded) until the record of `id` has `status`.
async fn wait_status(workflows: &Workflows, id: &str, status: WorkflowStatus) -> WorkflowRecord {
    tokio::time::timeout(std::time::Duration::from_secs(10), async {
        loop {
            let record = workflows.record(id).await.unwrap();
            if let Some(r) = record.filter(|r| r.status == status) {
                return r;
            }
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the status is reached")
}

#[tokio::test]
async fn a_step_out_of_retries_pauses_the_workflow_until_it_is_resumed() {
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
    let (healthy, attempts) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicU32::new(0)),
    );
    let workflows = Workflows::new(Arc::new(MemoryJournal::new()));
    register_pay(&workflows, healthy.clone(), attempts.clone());
    let handle = workflows.start("pay", "pay-1", ()).await.unwrap();

    let paused = wait_status(&workflows, "pay-1", WorkflowStatus::Paused).await;
    assert_eq!(
        paused.error.as_deref(),
        Some("step charge#0 is out of retries: gateway down")
    );
    assert_eq!(attempts.load(Ordering::SeqCst), 3);
    // Paused, not failed: still waiting.
    assert!(
        tokio::time::timeout(std::time::Duration::from_millis(50), handle.result::<u32>())
            .await
            .is_err()
    );

    healthy.store(true, Ordering::SeqCst);
    workflows.resume("pay-1").await.unwrap();
    assert_eq!(handle.result::<u32>().await.unwrap(), 42);
    assert_eq!(attempts.load(Ordering::SeqCst), 4);
    assert_eq!(
        workflows.record("pay-1").await.unwrap().unwrap().status,
        WorkflowStatus::Completed
    );
}

#[tokio::test]
async fn a_paused_workflow_can_be_cancelled() {
    use std::sync::atomic::{AtomicBool, AtomicU32};
    let workflows = Workflows::new(Arc::new(MemoryJournal::new()));
    register_pay(
        &workflows,
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicU32::new(0)),
    );
    let handle = workflows.start("pay", "pay-2", ()).await.unwrap();
    wait_status(&workflows, "pay-2", WorkflowStatus::Paused).await;
    workflows.cancel("pay-2").await.unwrap();
    assert!(matches!(
        handle.result::<u32>().await,
        Err(WorkflowError::Cancelled(_))
    ));
}

#[tokio::test]
async fn a_paused_workflow_stays_paused_across_a_restart_until_resumed() {
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
    let store: Arc<dyn JournalStore> = Arc::new(MemoryJournal::new());
    let (healthy, attempts) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicU32::new(0)),
    );
    let first = Workflows::new(Arc::clone(&store));
    register_pay(&first, healthy.clone(), attempts.clone());
    first.start("pay", "pay-3", ()).await.unwrap();
    wait_status(&first, "pay-3", WorkflowStatus::Paused).await;
    drop(first);

    let second = Workflows::new(store);
    register_pay(&second, healthy.clone(), attempts.clone());
    assert!(
        second.resume_all().await.unwrap().is_empty(),
        "a paused workflow waits for a user"
    );
    healthy.store(true, Ordering::SeqCst);
    let handle = second.resume("pay-3").await.unwrap();
    assert_eq!(handle.result::<u32>().await.unwrap(), 42);
    assert_eq!(attempts.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn a_fork_replays_the_kept_steps_of_its_source_and_runs_the_rest() {
    let store: Arc<dyn JournalStore> = Arc::new(MemoryJournal::new());
    let runs = Runs::default();
    let workflows = Workflows::new(Arc::clone(&store));
    register_sum(&workflows, runs.clone(), open_gate());
    let source = workflows.start("sum", "src", (0u64, 4u64)).await.unwrap();
    assert_eq!(source.result::<u64>().await.unwrap(), 6);

    let fork = workflows.fork("src", "src-from-2", 2).await.unwrap();
    assert_eq!(fork.result::<u64>().await.unwrap(), 6);
    // Steps 0 and 1 were replayed from the copy; 2 and 3 ran again.
    let counts: Vec<u32> = (0..4).map(|i| runs.get(&format!("add{i}"))).collect();
    assert_eq!(counts, [1, 1, 2, 2]);
    assert_eq!(store.load("src-from-2", 0).await.unwrap().len(), 4);
    let record = workflows.record("src-from-2").await.unwrap().unwrap();
    assert_eq!(
        (record.name.as_str(), record.status),
        ("sum", WorkflowStatus::Completed)
    );
    // The source is left as it was.
    assert_eq!(store.load("src", 0).await.unwrap().len(), 4);

    // Keeping nothing runs it all again.
    let again = workflows.fork("src", "src-from-0", 0).await.unwrap();
    assert_eq!(again.result::<u64>().await.unwrap(), 6);
    let counts: Vec<u32> = (0..4).map(|i| runs.get(&format!("add{i}"))).collect();
    assert_eq!(counts, [2, 2, 3, 3]);
}

#[tokio::test]
async fn a_fork_interrupted_while_copying_is_finished_by_asking_again() {
    let store: Arc<dyn JournalStore> = Arc::new(MemoryJournal::new());
    let runs = Runs::default();
    let workflows = Workflows::new(Arc::clone(&store));
    register_sum(&workflows, runs.clone(), open_gate());
    let source = workflows.start("sum", "src", (10u64, 3u64)).await.unwrap();
    assert_eq!(source.result::<u64>().await.unwrap(), 13);
    // A crash after the first entry was copied, before the record (a
    // fork's copy is written by no execution of the fork).
    let first = store.load("src", 0).await.unwrap().remove(0);
    store
        .append(JournalEntry {
            app_id: "copy".into(),
            execution: 0,
            ..first
        })
        .await
        .unwrap();
    let fork = workflows.fork("src", "copy", 3).await.unwrap();
    assert_eq!(fork.result::<u64>().await.unwrap(), 13);
    // Every step was kept: none ran again.
    let counts: Vec<u32> = (0..3).map(|i| runs.get(&format!("add{i}"))).collect();
    assert_eq!(counts, [1, 1, 1]);
}

#[tokio::test]
async fn a_fork_from_an_unknown_workflow_or_step_or_onto_a_taken_id_is_a_typed_error() {
    let store: Arc<dyn JournalStore> = Arc::new(MemoryJournal::new());
    let runs = Runs::default();
    let workflows = Workflows::new(Arc::clone(&store));
    register_sum(&workflows, runs.clone(), open_gate());
    for (id, steps) in [("a", 3u64), ("b", 2u64)] {
        let run = workflows.start("sum", id, (0u64, steps)).await.unwrap();
        run.result::<u64>().await.unwrap();
    }
    let err = workflows.fork("nobody", "x", 0).await.unwrap_err();
    assert!(
        matches!(&err, WorkflowError::UnknownId(id) if id == "nobody"),
        "{err:?}"
    );
    let err = workflows.fork("a", "x", 4).await.unwrap_err();
    assert!(
        matches!(&err, WorkflowError::ForkPoint { workflow_id, requested: 4, journaled: 3 } if workflow_id == "a"),
        "{err:?}"
    );
    // A fork starts a new workflow: never over an existing one.
    for taken in ["a", "b"] {
        let err = workflows.fork("a", taken, 1).await.unwrap_err();
        assert!(
            matches!(&err, WorkflowError::IdTaken(id) if id == taken),
            "{err:?}"
        );
    }
    assert!(workflows.record("x").await.unwrap().is_none());
    assert_eq!(store.load("b", 0).await.unwrap().len(), 2);
}
