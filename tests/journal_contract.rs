//! The contract every `JournalStore` keeps, written once and run against
//! memory, SQLite and PostgreSQL: appends are insert-if-absent and racing
//! writers agree on the first entry; workflows are created once; events
//! are numbered per (target, name) without gaps or duplicates, also when
//! sent at once; every prefix of a run's journal resumes to the same
//! result; two starts of one workflow id run its body once.

use std::sync::{Arc, Mutex};

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use serde_json::json;
use tokio::sync::Semaphore;
use tributary::BoxError;
use tributary::durable::*;
use tributary::sqlite::SqliteJournal;

use crate::durable_support::Runs;

/// A store under test, and what must live as long as it (its directory,
/// its schema).
pub(crate) struct Store {
    pub(crate) store: Arc<dyn JournalStore>,
    _keep: Box<dyn std::any::Any + Send + Sync>,
}

impl Store {
    pub(crate) fn new(
        store: Arc<dyn JournalStore>,
        keep: impl std::any::Any + Send + Sync,
    ) -> Self {
        Store {
            store,
            _keep: Box::new(keep),
        }
    }
}

/// Hands out an empty store.
pub(crate) type Open = fn() -> BoxFuture<'static, Store>;

fn entry(app: &str, seq: u64, position: u32, name: &str, value: serde_json::Value) -> JournalEntry {
    JournalEntry {
        app_id: app.into(),
        sequence_id: seq,
        position,
        step: StepKey::new(name, 0),
        kind: EntryKind::Step,
        outcome: Outcome::Completed(value),
        execution: 1,
    }
}

pub(crate) async fn an_append_is_insert_if_absent_and_load_is_in_position_order(open: Open) {
    let s = open().await;
    let j = &s.store;
    let second = entry("a", 0, 1, "second", json!({"n": 2, "deep": [1, [2]]}));
    let first = entry("a", 0, 0, "first", json!("one"));
    assert_eq!(j.append(second.clone()).await.unwrap(), second);
    assert_eq!(j.append(first.clone()).await.unwrap(), first);
    // A later write at a taken position gets the stored entry back.
    let late = entry("a", 0, 0, "other", json!("two"));
    assert_eq!(j.append(late).await.unwrap(), first);
    let failed = JournalEntry {
        step: StepKey::new("undo", 3),
        kind: EntryKind::Compensation,
        outcome: Outcome::Failed("card declined".into()),
        ..entry("a", 1, 0, "", json!(null))
    };
    j.append(failed.clone()).await.unwrap();
    assert_eq!(j.load("a", 0).await.unwrap(), [first, second]);
    assert_eq!(j.load("a", 1).await.unwrap(), [failed]);
    assert!(j.load("a", 2).await.unwrap().is_empty());
    assert!(j.load("b", 0).await.unwrap().is_empty());
}

pub(crate) async fn writers_racing_on_one_position_agree_on_the_first_entry(open: Open) {
    let s = open().await;
    let writes = (0..8).map(|i| {
        let j = Arc::clone(&s.store);
        tokio::spawn(async move { j.append(entry("race", 0, 0, "step", json!(i))).await })
    });
    let stored: Vec<JournalEntry> = futures_util::future::join_all(writes)
        .await
        .into_iter()
        .map(|r| r.unwrap().unwrap())
        .collect();
    assert!(stored.windows(2).all(|w| w[0] == w[1]), "{stored:?}");
    assert_eq!(s.store.load("race", 0).await.unwrap(), [stored[0].clone()]);
}

pub(crate) async fn a_workflow_is_created_once_and_its_record_replaced(open: Open) {
    let s = open().await;
    let j = &s.store;
    let record = |id: &str, status| WorkflowRecord {
        workflow_id: id.into(),
        name: "trip".into(),
        input: json!({"to": "Lyon"}),
        status,
        output: None,
        error: None,
    };
    let (stored, created) = j
        .create_workflow(record("w2", WorkflowStatus::Running))
        .await
        .unwrap();
    assert!(created);
    assert_eq!(stored, record("w2", WorkflowStatus::Running));
    let (again, created) = j
        .create_workflow(WorkflowRecord {
            input: json!("other"),
            ..record("w2", WorkflowStatus::Running)
        })
        .await
        .unwrap();
    assert!(!created);
    assert_eq!(again, record("w2", WorkflowStatus::Running));
    j.create_workflow(record("w1", WorkflowStatus::Running))
        .await
        .unwrap();
    let ids = |v: Vec<WorkflowRecord>| v.into_iter().map(|r| r.workflow_id).collect::<Vec<_>>();
    assert_eq!(ids(j.unfinished_workflows().await.unwrap()), ["w1", "w2"]);

    let done = WorkflowRecord {
        status: WorkflowStatus::Completed,
        output: Some(json!({"booked": true})),
        ..record("w2", WorkflowStatus::Running)
    };
    j.put_workflow(done.clone()).await.unwrap();
    assert_eq!(j.workflow("w2").await.unwrap(), Some(done));
    assert_eq!(ids(j.unfinished_workflows().await.unwrap()), ["w1"]);
    assert_eq!(j.workflow("nobody").await.unwrap(), None);
}

pub(crate) async fn events_are_numbered_per_target_and_name_also_when_sent_at_once(open: Open) {
    let s = open().await;
    let j = &s.store;
    assert_eq!(j.send_event("w", "approve", json!(1)).await.unwrap(), 0);
    assert_eq!(j.send_event("w", "approve", json!(2)).await.unwrap(), 1);
    assert_eq!(j.send_event("w", "reject", json!(3)).await.unwrap(), 0);
    assert_eq!(j.send_event("v", "approve", json!(4)).await.unwrap(), 0);
    assert_eq!(j.event("w", "approve", 1).await.unwrap(), Some(json!(2)));
    assert_eq!(j.event("w", "approve", 2).await.unwrap(), None);

    let sends = (0..8).map(|i| {
        let j = Arc::clone(j);
        tokio::spawn(async move { j.send_event("burst", "tick", json!(i)).await })
    });
    let mut indexes: Vec<u64> = futures_util::future::join_all(sends)
        .await
        .into_iter()
        .map(|r| r.unwrap().unwrap())
        .collect();
    indexes.sort_unstable();
    assert_eq!(indexes, (0..8).collect::<Vec<u64>>());
    let mut values = Vec::new();
    for i in 0..8 {
        values.push(j.event("burst", "tick", i).await.unwrap().unwrap());
    }
    values.sort_by_key(|v| v.as_i64());
    assert_eq!(values, (0..8).map(|i| json!(i)).collect::<Vec<_>>());
}

pub(crate) async fn every_prefix_of_a_journal_resumes_to_the_reference_result(open: Open) {
    // The stores of every prefix live until the check ends.
    let kept: Arc<Mutex<Vec<Store>>> = Arc::default();
    crate::durable_steps::check_every_prefix(|| {
        let kept = Arc::clone(&kept);
        async move {
            let s = open().await;
            let store = Arc::clone(&s.store);
            kept.lock().unwrap().push(s);
            store
        }
    })
    .await;
}

pub(crate) async fn two_starts_of_one_workflow_id_run_its_body_once(open: Open) {
    let s = open().await;
    let runs = Runs::default();
    let gate = Arc::new(Semaphore::new(0));
    let workflows = Workflows::new(Arc::clone(&s.store));
    let (r, g) = (runs.clone(), gate.clone());
    workflows.register("count", move |ctx: WorkflowContext, steps: u64| {
        let (runs, gate) = (r.clone(), g.clone());
        async move {
            let mut acc = 0;
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
    });
    let (a, b) = tokio::join!(
        workflows.start("count", "once", 3u64),
        workflows.start("count", "once", 3u64),
    );
    gate.add_permits(100);
    assert_eq!(a.unwrap().result::<u64>().await.unwrap(), 3);
    assert_eq!(b.unwrap().result::<u64>().await.unwrap(), 3);
    assert_eq!(
        (runs.get("add0"), runs.get("add1"), runs.get("add2")),
        (1, 1, 1)
    );
    let record = workflows.record("once").await.unwrap().unwrap();
    assert_eq!(record.status, WorkflowStatus::Completed);
}

pub(crate) async fn executions_are_numbered_per_app_and_sequence_id(open: Open) {
    let s = open().await;
    let j = &s.store;
    assert_eq!(j.latest_execution("a", 0).await.unwrap(), 0);
    assert_eq!(j.begin_execution("a", 0).await.unwrap(), 1);
    assert_eq!(j.begin_execution("a", 0).await.unwrap(), 2);
    assert_eq!(j.begin_execution("a", 1).await.unwrap(), 1);
    assert_eq!(j.begin_execution("b", 0).await.unwrap(), 1);
    assert_eq!(j.latest_execution("a", 0).await.unwrap(), 2);
    assert_eq!(j.latest_execution("a", 1).await.unwrap(), 1);
    // Entries keep the execution that wrote them.
    let written = JournalEntry {
        execution: 2,
        ..entry("a", 0, 0, "fetch", json!(1))
    };
    j.append(written.clone()).await.unwrap();
    assert_eq!(j.load("a", 0).await.unwrap(), [written]);
}

/// What the latest execution of `app_id` (sequence `seq`) did with each of
/// its journaled steps, by position.
async fn replays(
    store: &dyn JournalStore,
    app_id: &str,
    seq: u64,
) -> Vec<(String, Option<Replay>)> {
    let latest = store.latest_execution(app_id, seq).await.unwrap();
    store
        .load(app_id, seq)
        .await
        .unwrap()
        .iter()
        .map(|e| (e.step.to_string(), e.replay(latest)))
        .collect()
}

pub(crate) async fn entries_tell_steps_run_from_steps_replayed(open: Open) {
    let s = open().await;
    // An action whose first run journals `a` then crashes; its second run
    // replays `a` and runs `b`.
    let journal = Journal::new(Arc::clone(&s.store));
    let runs = Runs::default();
    let r = runs.clone();
    let graph = crate::durable_support::graph_of(move |ctx| {
        let runs = r.clone();
        async move {
            let a: u32 = ctx.step("a", async { Ok::<_, BoxError>(1) }).await?;
            if runs.bump("attempt") == 1 {
                return Err("crashed after a".into());
            }
            let b: u32 = ctx
                .step("b", async move { Ok::<_, BoxError>(a + 1) })
                .await?;
            Ok(json!(b))
        }
    });
    let app = "replay-app";
    assert!(
        crate::durable_support::run_app(&graph, app, &journal)
            .await
            .is_err()
    );
    assert_eq!(
        replays(&*s.store, app, 0).await,
        [("a#0".to_owned(), Some(Replay::Run))]
    );
    let out = crate::durable_support::run_app(&graph, app, &journal)
        .await
        .unwrap();
    assert_eq!(out, json!(2));
    assert_eq!(
        replays(&*s.store, app, 0).await,
        [
            ("a#0".to_owned(), Some(Replay::Replayed)),
            ("b#0".to_owned(), Some(Replay::Run)),
        ]
    );

    // A workflow whose engine stops (a crash) while `y` waits: its resume
    // replays `x` and runs `y`.
    let engine = |gate: Arc<Semaphore>| {
        let workflows = Workflows::new(Arc::clone(&s.store));
        workflows.register("two", move |ctx: WorkflowContext, ()| {
            let gate = gate.clone();
            async move {
                let x: u32 = ctx.step("x", async { Ok::<_, BoxError>(1) }).await?;
                let y: u32 = ctx
                    .step("y", async move {
                        gate.acquire().await?.forget();
                        Ok::<_, BoxError>(x + 1)
                    })
                    .await?;
                Ok::<_, BoxError>(y)
            }
        });
        workflows
    };
    let first = engine(Arc::new(Semaphore::new(0)));
    let handle = first.start("two", "replay-wf", ()).await.unwrap();
    while s.store.load("replay-wf", 0).await.unwrap().is_empty() {
        tokio::task::yield_now().await;
    }
    drop(first);
    assert!(handle.result::<u32>().await.is_err());
    assert_eq!(
        replays(&*s.store, "replay-wf", 0).await,
        [("x#0".to_owned(), Some(Replay::Run))]
    );
    let second = engine(Arc::new(Semaphore::new(1)));
    let out: u32 = second
        .resume("replay-wf")
        .await
        .unwrap()
        .result()
        .await
        .unwrap();
    assert_eq!(out, 2);
    assert_eq!(
        replays(&*s.store, "replay-wf", 0).await,
        [
            ("x#0".to_owned(), Some(Replay::Replayed)),
            ("y#0".to_owned(), Some(Replay::Run)),
        ]
    );
    // Resuming the finished workflow runs nothing: the marks stay.
    let out: u32 = second
        .resume("replay-wf")
        .await
        .unwrap()
        .result()
        .await
        .unwrap();
    assert_eq!(out, 2);
    assert_eq!(s.store.latest_execution("replay-wf", 0).await.unwrap(), 2);
}

/// One test per contract check, for the store `open` makes.
#[macro_export]
macro_rules! journal_contract_tests {
    ($open:expr) => {
        $crate::journal_contract_tests!($open, #[cfg(all())]);
    };
    // `$attr` goes on every test (an `ignore` for a missing service).
    ($open:expr, #[$attr:meta]) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        #[$attr]
        async fn an_append_is_insert_if_absent_and_load_is_in_position_order() {
            $crate::journal_contract::an_append_is_insert_if_absent_and_load_is_in_position_order(
                $open,
            )
            .await
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        #[$attr]
        async fn writers_racing_on_one_position_agree_on_the_first_entry() {
            $crate::journal_contract::writers_racing_on_one_position_agree_on_the_first_entry(
                $open,
            )
            .await
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        #[$attr]
        async fn a_workflow_is_created_once_and_its_record_replaced() {
            $crate::journal_contract::a_workflow_is_created_once_and_its_record_replaced($open)
                .await
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        #[$attr]
        async fn events_are_numbered_per_target_and_name_also_when_sent_at_once() {
            $crate::journal_contract::events_are_numbered_per_target_and_name_also_when_sent_at_once(
                $open,
            )
            .await
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        #[$attr]
        async fn every_prefix_of_a_journal_resumes_to_the_reference_result() {
            $crate::journal_contract::every_prefix_of_a_journal_resumes_to_the_reference_result(
                $open,
            )
            .await
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        #[$attr]
        async fn executions_are_numbered_per_app_and_sequence_id() {
            $crate::journal_contract::executions_are_numbered_per_app_and_sequence_id($open).await
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        #[$attr]
        async fn entries_tell_steps_run_from_steps_replayed() {
            $crate::journal_contract::entries_tell_steps_run_from_steps_replayed($open).await
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        #[$attr]
        async fn two_starts_of_one_workflow_id_run_its_body_once() {
            $crate::journal_contract::two_starts_of_one_workflow_id_run_its_body_once($open).await
        }
    };
}

// ===== the backends =====

mod memory {
    use super::*;

    fn memory() -> BoxFuture<'static, Store> {
        async { Store::new(Arc::new(MemoryJournal::new()), ()) }.boxed()
    }

    crate::journal_contract_tests!(memory);
}

mod sqlite {
    use super::*;

    fn sqlite() -> BoxFuture<'static, Store> {
        async {
            let dir = tempfile::tempdir().unwrap();
            let journal = SqliteJournal::open(dir.path().join("journal.db"))
                .await
                .unwrap();
            Store::new(Arc::new(journal), dir)
        }
        .boxed()
    }

    crate::journal_contract_tests!(sqlite);
}

mod postgres {
    use tributary_postgres::PostgresJournal;

    use super::*;
    use crate::postgres_support::TestSchema;

    fn postgres() -> BoxFuture<'static, Store> {
        async {
            let schema = TestSchema::new("journal");
            let journal = PostgresJournal::new(schema.connect().await);
            Store::new(Arc::new(journal), schema)
        }
        .boxed()
    }

    crate::journal_contract_tests!(
        postgres,
        #[cfg_attr(not(tributary_postgres), ignore = "needs TRIBUTARY_POSTGRES_URL")]
    );
}
