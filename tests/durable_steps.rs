//! Durable steps inside an action: journaled results are replayed without
//! running their bodies, interrupted steps run again, and replay checks
//! step names and order.

use std::sync::Arc;

use serde_json::{Value, json};
use tokio::sync::Notify;
use tributary::BoxError;
use tributary::durable::*;
use tributary::sqlite::SqliteJournal;

use crate::durable_support::{LastError, Recording, Runs, graph_of, run_app};

/// Steps A -> B -> C, each counting its runs; B's body first waits on
/// `b_gate` (when given) the first time it runs, so a test can crash it.
fn chain(runs: Runs, b_gate: Option<Arc<Notify>>) -> tributary::Graph {
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
                    if let (1, Some(gate)) = (n, &b_gate) {
                        gate.notify_one();
                        std::future::pending::<()>().await;
                    }
                    Ok::<_, BoxError>(a + 10)
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

#[tokio::test]
async fn a_crash_in_a_step_reruns_that_step_only_and_skips_completed_ones() {
    let store: Arc<dyn JournalStore> = Arc::new(MemoryJournal::new());
    let journal = Journal::new(Arc::clone(&store));
    let runs = Runs::default();
    let gate = Arc::new(Notify::new());
    let graph = chain(runs.clone(), Some(Arc::clone(&gate)));

    // The first run crashes inside B (the task is dropped mid-body).
    let first = tokio::spawn({
        let (graph, journal) = (graph.clone(), journal.clone());
        async move { run_app(&graph, "trip-1", &journal).await }
    });
    gate.notified().await;
    first.abort();
    assert!(first.await.unwrap_err().is_cancelled());

    // A new journal handle on the same store (a new process would open the
    // same file): A is replayed, B runs again, C runs once.
    let journal = Journal::new(store);
    let out = run_app(&graph, "trip-1", &journal).await.unwrap();
    assert_eq!(out, json!([1, 11, 111]));
    assert_eq!((runs.get("A"), runs.get("B"), runs.get("C")), (1, 2, 1));
}

#[tokio::test]
async fn a_crash_between_a_body_and_its_journal_write_reruns_that_step_only() {
    let store: Arc<dyn JournalStore> = Arc::new(MemoryJournal::new());
    let holding = Arc::new(Recording::holding(Arc::clone(&store), "B"));
    let held = Arc::clone(&holding.held);
    let runs = Runs::default();
    let graph = chain(runs.clone(), None);

    let first = tokio::spawn({
        let (graph, journal) = (graph.clone(), Journal::new(holding.clone()));
        async move { run_app(&graph, "trip-2", &journal).await }
    });
    // B's body has finished; its journal write never will.
    held.notified().await;
    first.abort();
    let _ = first.await;
    assert_eq!((runs.get("A"), runs.get("B"), runs.get("C")), (1, 1, 0));

    let out = run_app(&graph, "trip-2", &Journal::new(store))
        .await
        .unwrap();
    assert_eq!(out, json!([1, 11, 111]));
    assert_eq!((runs.get("A"), runs.get("B"), runs.get("C")), (1, 2, 1));
}

#[tokio::test]
async fn a_failed_step_runs_again_when_the_action_does_and_completed_ones_do_not() {
    let journal = Journal::new(Arc::new(MemoryJournal::new()));
    let runs = Runs::default();
    let graph = graph_of({
        let runs = runs.clone();
        move |ctx| {
            let runs = runs.clone();
            async move {
                let a: u32 = ctx
                    .step("A", async {
                        runs.bump("A");
                        Ok::<_, BoxError>(1)
                    })
                    .await?;
                let b: u32 = ctx
                    .step("B", async {
                        if runs.bump("B") == 1 {
                            return Err("B is not ready".into());
                        }
                        Ok::<_, BoxError>(a + 1)
                    })
                    .await?;
                let c: u32 = ctx
                    .step("C", async {
                        runs.bump("C");
                        Ok::<_, BoxError>(b + 1)
                    })
                    .await?;
                Ok(json!(c))
            }
        }
    });
    let err = run_app(&graph, "job", &journal).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("step B#0 failed after 1 attempt(s): B is not ready"),
        "{err}"
    );
    assert_eq!(run_app(&graph, "job", &journal).await.unwrap(), json!(3));
    assert_eq!((runs.get("A"), runs.get("B"), runs.get("C")), (1, 2, 1));

    // Resuming the finished action runs no step body at all.
    assert_eq!(run_app(&graph, "job", &journal).await.unwrap(), json!(3));
    assert_eq!((runs.get("A"), runs.get("B"), runs.get("C")), (1, 2, 1));
}

/// Five steps, one of them a repeated name (occurrence counter), each
/// counting its runs; the result depends on every earlier step.
fn pages(runs: Runs) -> tributary::Graph {
    graph_of(move |ctx| {
        let runs = runs.clone();
        async move {
            let mut acc: Vec<String> = ctx
                .step("open", async {
                    runs.bump("open");
                    Ok::<_, BoxError>(vec!["open".to_owned()])
                })
                .await?;
            for i in 0..3 {
                let prev = acc.len();
                let page: String = ctx
                    .step("page", async {
                        runs.bump(&format!("page{i}"));
                        Ok::<_, BoxError>(format!("page{i}-after-{prev}"))
                    })
                    .await?;
                acc.push(page);
            }
            let total: usize = ctx
                .step("close", async {
                    runs.bump("close");
                    Ok::<_, BoxError>(acc.len())
                })
                .await?;
            Ok(json!({ "pages": acc, "total": total }))
        }
    })
}

/// Rebuild a store from `writes` (for a backend) and resume: the result
/// equals the reference and no step runs more than once more.
pub(crate) async fn check_every_prefix<F, Fut>(make_store: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Arc<dyn JournalStore>>,
{
    let runs = Runs::default();
    let recording = Arc::new(Recording::new(make_store().await));
    let reference = run_app(
        &pages(runs.clone()),
        "doc",
        &Journal::new(recording.clone()),
    )
    .await
    .unwrap();
    let reference_runs = runs.all();
    let writes = recording.writes();
    assert_eq!(writes.len(), 5, "one journal write per step");

    for k in 0..=writes.len() {
        let store = make_store().await;
        for w in &writes[..k] {
            store.append(w.clone()).await.unwrap();
        }
        let runs = Runs::default();
        let out = run_app(&pages(runs.clone()), "doc", &Journal::new(store))
            .await
            .unwrap();
        assert_eq!(out, reference, "prefix {k}");
        for (step, count) in &reference_runs {
            assert!(
                runs.get(step) <= count + 1,
                "prefix {k}: {step} ran {} times",
                runs.get(step)
            );
        }
        // The journaled steps did not run at all; the others ran once.
        let ran: u32 = runs.all().values().sum();
        assert_eq!(ran as usize, writes.len() - k, "prefix {k}");
    }
}

#[tokio::test]
async fn every_prefix_of_the_journal_resumes_to_the_reference_result_in_memory() {
    check_every_prefix(|| async { Arc::new(MemoryJournal::new()) as Arc<dyn JournalStore> }).await;
}

#[tokio::test]
async fn every_prefix_of_the_journal_resumes_to_the_reference_result_in_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let n = std::sync::atomic::AtomicUsize::new(0);
    check_every_prefix(|| {
        let path = dir.path().join(format!(
            "j{}.db",
            n.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
        ));
        async move { Arc::new(SqliteJournal::open(path).await.unwrap()) as Arc<dyn JournalStore> }
    })
    .await;
}

#[tokio::test]
async fn journaled_steps_survive_reopening_the_sqlite_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tributary.db");
    let runs = Runs::default();
    let graph = pages(runs.clone());
    let first = {
        let journal = Journal::new(Arc::new(SqliteJournal::open(&path).await.unwrap()));
        run_app(&graph, "doc", &journal).await.unwrap()
    };
    let journal = Journal::new(Arc::new(SqliteJournal::open(&path).await.unwrap()));
    assert_eq!(run_app(&graph, "doc", &journal).await.unwrap(), first);
    assert!(runs.all().values().all(|n| *n == 1), "{:?}", runs.all());
}

/// An action running the steps `names` in order, each returning its name.
fn steps_named(names: &'static [&'static str], last: LastError) -> tributary::Graph {
    graph_of(move |ctx| {
        let last = last.clone();
        async move {
            let mut out = Vec::new();
            for name in names {
                let v: String = last.keep(
                    ctx.step(name, async move { Ok::<_, BoxError>(name.to_string()) })
                        .await,
                )?;
                out.push(v);
            }
            Ok(json!(out))
        }
    })
}

#[tokio::test]
async fn renamed_and_reordered_steps_fail_with_a_non_determinism_error() {
    let journal = Journal::new(Arc::new(MemoryJournal::new()));
    let last = LastError::default();
    run_app(&steps_named(&["a", "b"], last.clone()), "job", &journal)
        .await
        .unwrap();

    // Renamed: the journal has b#0 at position 1, the code asks for c#0.
    let err = run_app(&steps_named(&["a", "c"], last.clone()), "job", &journal)
        .await
        .unwrap_err();
    match last.take() {
        Some(DurableError::NonDeterminism {
            position,
            expected,
            found,
            ..
        }) => {
            assert_eq!(position, 1);
            assert_eq!(expected, StepKey::new("b", 0));
            assert_eq!(found, StepKey::new("c", 0));
        }
        other => panic!("expected non-determinism, got {other:?} ({err})"),
    }
    assert!(
        err.to_string()
            .contains("the journal has step b#0, the code ran step c#0"),
        "{err}"
    );

    // Reordered: b first.
    run_app(&steps_named(&["b", "a"], last.clone()), "job", &journal)
        .await
        .unwrap_err();
    match last.take() {
        Some(DurableError::NonDeterminism {
            position,
            expected,
            found,
            ..
        }) => {
            assert_eq!(position, 0);
            assert_eq!(expected, StepKey::new("a", 0));
            assert_eq!(found, StepKey::new("b", 0));
        }
        other => panic!("expected non-determinism, got {other:?}"),
    }

    // The unchanged code still replays.
    assert_eq!(
        run_app(&steps_named(&["a", "b"], last.clone()), "job", &journal)
            .await
            .unwrap(),
        json!(["a", "b"])
    );
}

#[tokio::test]
async fn each_step_has_a_stable_idempotency_key_of_its_own() {
    let store: Arc<dyn JournalStore> = Arc::new(MemoryJournal::new());
    let keys = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let crash = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let graph = graph_of({
        let (keys, crash) = (keys.clone(), crash.clone());
        move |ctx| {
            let (keys, crash) = (keys.clone(), crash.clone());
            async move {
                let mut out = Vec::new();
                for i in 0..2 {
                    let key: String = ctx
                        .step_with("charge", |attempt| {
                            let (keys, crash) = (keys.clone(), crash.clone());
                            async move {
                                keys.lock().unwrap().push(attempt.idempotency_key.clone());
                                if i == 1 && crash.swap(false, std::sync::atomic::Ordering::SeqCst)
                                {
                                    return Err::<String, BoxError>("gateway crashed".into());
                                }
                                Ok(attempt.idempotency_key)
                            }
                        })
                        .await?;
                    out.push(key);
                }
                Ok(json!(out))
            }
        }
    });
    run_app(&graph, "order-9", &Journal::new(Arc::clone(&store)))
        .await
        .unwrap_err();
    let out = run_app(&graph, "order-9", &Journal::new(store))
        .await
        .unwrap();
    assert_eq!(out, json!(["order-9/0/charge#0", "order-9/0/charge#1"]));
    // The second charge ran twice, with the same key both times.
    assert_eq!(
        *keys.lock().unwrap(),
        [
            "order-9/0/charge#0",
            "order-9/0/charge#1",
            "order-9/0/charge#1"
        ]
    );
}

#[tokio::test]
async fn a_step_without_an_attached_journal_is_a_typed_error() {
    let last = LastError::default();
    let graph = steps_named(&["a"], last.clone());
    let mut app = tributary::Application::builder(graph)
        .app_id("bare")
        .build()
        .await
        .unwrap();
    app.run(tributary::RunOptions::new()).await.unwrap_err();
    assert!(matches!(last.take(), Some(DurableError::NoJournal { app_id }) if app_id == "bare"));
}

#[tokio::test]
async fn a_journaled_value_that_does_not_fit_the_type_is_a_typed_error() {
    let journal = Journal::new(Arc::new(MemoryJournal::new()));
    let last = LastError::default();
    run_app(&steps_named(&["a"], last.clone()), "job", &journal)
        .await
        .unwrap();
    let graph = graph_of({
        let last = last.clone();
        move |ctx| {
            let last = last.clone();
            async move {
                let n: u32 = last.keep(ctx.step("a", async { Ok::<_, BoxError>(1u32) }).await)?;
                Ok(Value::from(n))
            }
        }
    });
    run_app(&graph, "job", &journal).await.unwrap_err();
    assert!(
        matches!(last.take(), Some(DurableError::Value { step, .. }) if step == StepKey::new("a", 0))
    );
}
