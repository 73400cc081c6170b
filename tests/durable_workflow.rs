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
