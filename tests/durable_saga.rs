//! Saga compensation: on a terminal failure the compensations registered
//! so far run in reverse, each journaled, also across a crash in the middle
//! of compensating.

use std::sync::{Arc, Mutex};

use serde_json::json;
use tokio::sync::Notify;
use tributary::BoxError;
use tributary::durable::*;

use crate::durable_support::{LastError, Runs, graph_of, run_app};

/// Steps s1..s4 book reservations `r1`..`r4`, each registering an undo that
/// logs the reservation it cancels; step `fail_at` fails. The undo of
/// `block_undo` waits forever the first time it runs (a crash point).
#[derive(Clone)]
struct Saga {
    runs: Runs,
    undone: Arc<Mutex<Vec<String>>>,
    last: LastError,
    block_undo: Option<(u32, Arc<Notify>)>,
}

impl Saga {
    fn new() -> Self {
        Saga {
            runs: Runs::default(),
            undone: Arc::default(),
            last: LastError::default(),
            block_undo: None,
        }
    }

    fn graph(&self, fail_at: u32) -> tributary::Graph {
        let saga = self.clone();
        graph_of(move |ctx| {
            let saga = saga.clone();
            async move {
                let mut booked = Vec::new();
                for i in 1..=4u32 {
                    let runs = saga.runs.clone();
                    let undo_saga = saga.clone();
                    let id: String = saga.last.keep(
                        ctx.step(&format!("s{i}"), async move {
                            runs.bump(&format!("s{i}"));
                            if i == fail_at {
                                return Err::<String, BoxError>(format!("s{i} is sold out").into());
                            }
                            Ok(format!("r{i}"))
                        })
                        .compensate(move |id: &String| {
                            let id = id.clone();
                            async move {
                                let n = undo_saga.runs.bump(&format!("undo{i}"));
                                if let Some((_, gate)) = undo_saga
                                    .block_undo
                                    .as_ref()
                                    .filter(|(at, _)| *at == i && n == 1)
                                {
                                    gate.notify_one();
                                    std::future::pending::<()>().await;
                                }
                                undo_saga.undone.lock().unwrap().push(id);
                                Ok::<_, BoxError>(())
                            }
                        })
                        .await,
                    )?;
                    booked.push(id);
                }
                Ok(json!(booked))
            }
        })
    }

    fn undone(&self) -> Vec<String> {
        self.undone.lock().unwrap().clone()
    }
}

#[tokio::test]
async fn a_failure_at_step_k_undoes_steps_k_minus_1_to_1_once_each_in_reverse() {
    for k in 1..=4u32 {
        let saga = Saga::new();
        let journal = Journal::new(Arc::new(MemoryJournal::new()));
        run_app(&saga.graph(k), "trip", &journal).await.unwrap_err();
        let expected: Vec<String> = (1..k).rev().map(|i| format!("r{i}")).collect();
        assert_eq!(saga.undone(), expected, "k = {k}");
        match saga.last.take() {
            Some(DurableError::Compensated {
                step,
                error,
                compensated,
            }) => {
                assert!(k > 1);
                assert_eq!(step, StepKey::new(format!("s{k}"), 0));
                assert_eq!(error, format!("s{k} is sold out"));
                assert_eq!(compensated, (k - 1) as usize);
            }
            // Nothing to undo: the plain failure, not journaled.
            Some(DurableError::StepFailed { step, .. }) => {
                assert_eq!(k, 1);
                assert_eq!(step, StepKey::new("s1", 0));
            }
            other => panic!("k = {k}: unexpected {other:?}"),
        }

        // Running the action again replays the failure and the undos:
        // no booking and no undo runs a second time.
        run_app(&saga.graph(k), "trip", &journal).await.unwrap_err();
        assert_eq!(saga.undone(), expected, "k = {k}, replayed");
        for i in 1..=k.min(4) {
            let expected_runs = if k == 1 { 2 } else { 1 };
            if i == k {
                assert_eq!(
                    saga.runs.get(&format!("s{i}")),
                    expected_runs,
                    "k = {k}: s{i}"
                );
            } else {
                assert_eq!(saga.runs.get(&format!("s{i}")), 1, "k = {k}: s{i}");
            }
        }
    }
}

#[tokio::test]
async fn a_crash_during_compensation_resumes_the_remaining_undos_only() {
    let gate = Arc::new(Notify::new());
    let saga = Saga {
        block_undo: Some((2, Arc::clone(&gate))),
        ..Saga::new()
    };
    let store: Arc<dyn JournalStore> = Arc::new(MemoryJournal::new());

    // s4 fails; undo3 runs, undo2 crashes mid-body.
    let first = tokio::spawn({
        let (graph, journal) = (saga.graph(4), Journal::new(Arc::clone(&store)));
        async move { run_app(&graph, "trip", &journal).await }
    });
    gate.notified().await;
    first.abort();
    let _ = first.await;
    assert_eq!(saga.undone(), ["r3"]);

    // A fresh run: s1..s4 replay (s4's failure is journaled), undo3 is
    // journaled, undo2 runs again (it was interrupted) and undo1 runs.
    run_app(&saga.graph(4), "trip", &Journal::new(store))
        .await
        .unwrap_err();
    assert_eq!(saga.undone(), ["r3", "r2", "r1"]);
    for i in 1..=4 {
        assert_eq!(saga.runs.get(&format!("s{i}")), 1, "s{i}");
    }
    assert_eq!(
        (
            saga.runs.get("undo3"),
            saga.runs.get("undo2"),
            saga.runs.get("undo1")
        ),
        (1, 2, 1)
    );
    assert!(matches!(
        saga.last.take(),
        Some(DurableError::Compensated { compensated: 3, .. })
    ));
}

#[tokio::test]
async fn a_failed_compensation_stops_the_undo_and_a_rerun_retries_it() {
    let saga = Saga::new();
    let fail_once = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let journal = Journal::new(Arc::new(MemoryJournal::new()));
    let graph = {
        let (saga, fail_once) = (saga.clone(), fail_once.clone());
        graph_of(move |ctx| {
            let (saga, fail_once) = (saga.clone(), fail_once.clone());
            async move {
                let undone = saga.undone.clone();
                let _: String = saga.last.keep(
                    ctx.step("car", async { Ok::<_, BoxError>("car-1".to_owned()) })
                        .compensate(move |id: &String| {
                            let id = id.clone();
                            async move {
                                if fail_once.swap(false, std::sync::atomic::Ordering::SeqCst) {
                                    return Err::<(), BoxError>("rental desk closed".into());
                                }
                                undone.lock().unwrap().push(id);
                                Ok(())
                            }
                        })
                        .await,
                )?;
                let _: String = saga.last.keep(
                    ctx.step("flight", async { Err::<String, _>("no seats") })
                        .await,
                )?;
                Ok(json!(null))
            }
        })
    };
    run_app(&graph, "trip", &journal).await.unwrap_err();
    match saga.last.take() {
        Some(DurableError::CompensationFailed {
            step,
            compensation,
            source,
        }) => {
            assert_eq!(step, StepKey::new("flight", 0));
            assert_eq!(compensation, StepKey::new("undo:car", 0));
            assert_eq!(source.to_string(), "rental desk closed");
        }
        other => panic!("expected a failed compensation, got {other:?}"),
    }
    assert!(saga.undone().is_empty());
    run_app(&graph, "trip", &journal).await.unwrap_err();
    assert_eq!(saga.undone(), ["car-1"]);
    assert!(matches!(
        saga.last.take(),
        Some(DurableError::Compensated { compensated: 1, .. })
    ));
}
