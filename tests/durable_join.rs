//! Durable join and select: concurrent steps journaled on their own, and a
//! race whose winner is journaled so replay takes the same branch.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::sync::{Barrier, Notify};
use tributary::BoxError;
use tributary::durable::*;

use crate::durable_support::{Runs, graph_of, run_app};

/// Steps `slow` and `fast` joined, then `after`. With `barrier`, both
/// branches wait at a barrier of two (so the join must run them at once);
/// with `hold`, `slow` then hangs, having told the test.
fn joined(runs: Runs, barrier: bool, hold: Option<Arc<Notify>>) -> tributary::Graph {
    graph_of(move |ctx| {
        let (runs, hold) = (runs.clone(), hold.clone());
        async move {
            let barrier = barrier.then(|| Arc::new(Barrier::new(2)));
            let (r1, r2, b1, b2) = (runs.clone(), runs.clone(), barrier.clone(), barrier);
            let (slow, fast): (String, String) = ctx
                .join(
                    ctx.step("slow", async move {
                        r1.bump("slow");
                        if let Some(b) = b1 {
                            b.wait().await;
                        }
                        if let Some(hold) = hold {
                            hold.notify_one();
                            std::future::pending::<()>().await;
                        }
                        Ok::<_, BoxError>("s".to_owned())
                    }),
                    ctx.step("fast", async move {
                        r2.bump("fast");
                        if let Some(b) = b2 {
                            b.wait().await;
                        }
                        Ok::<_, BoxError>("f".to_owned())
                    }),
                )
                .await?;
            let after: String = ctx
                .step("after", async move {
                    Ok::<_, BoxError>(format!("{slow}{fast}"))
                })
                .await?;
            Ok(json!(after))
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joined_steps_run_at_once_and_a_crash_reruns_only_the_unfinished_one() {
    let store: Arc<dyn JournalStore> = Arc::new(MemoryJournal::new());
    let runs = Runs::default();
    let hold = Arc::new(Notify::new());
    let first = tokio::spawn({
        let graph = joined(runs.clone(), true, Some(hold.clone()));
        let journal = Journal::new(Arc::clone(&store));
        async move { run_app(&graph, "j", &journal).await }
    });
    // Both branches passed the barrier: they ran at once. `slow` hangs;
    // `fast` finishes and is journaled.
    tokio::time::timeout(Duration::from_secs(10), hold.notified())
        .await
        .expect("both branches ran at once");
    tokio::time::timeout(Duration::from_secs(10), async {
        while store.load("j", 0).await.unwrap().is_empty() {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("fast is journaled");
    first.abort();
    let _ = first.await;
    let entries = store.load("j", 0).await.unwrap();
    assert_eq!(entries.len(), 1);
    // `fast` finished first but keeps its position, the second.
    assert_eq!(
        (entries[0].position, entries[0].step.to_string()),
        (1, "fast#0".to_owned())
    );

    let out = run_app(
        &joined(runs.clone(), false, None),
        "j",
        &Journal::new(store),
    )
    .await
    .unwrap();
    assert_eq!(out, json!("sf"));
    assert_eq!((runs.get("slow"), runs.get("fast")), (2, 1));
}

/// A durable race between a future taking `a_ms` and one taking `b_ms`,
/// both counting their runs.
fn raced(runs: Runs, a_ms: u64, b_ms: u64) -> tributary::Graph {
    graph_of(move |ctx| {
        let runs = runs.clone();
        async move {
            let (ra, rb) = (runs.clone(), runs.clone());
            let won = ctx
                .select(
                    "quote",
                    async move {
                        ra.bump("a");
                        tokio::time::sleep(Duration::from_millis(a_ms)).await;
                        Ok::<_, BoxError>(1u32)
                    },
                    async move {
                        rb.bump("b");
                        tokio::time::sleep(Duration::from_millis(b_ms)).await;
                        Ok::<_, BoxError>("fallback".to_owned())
                    },
                )
                .await?;
            Ok(match won {
                Branch::First(n) => json!({ "first": n }),
                Branch::Second(s) => json!({ "second": s }),
            })
        }
    })
}

#[tokio::test(start_paused = true)]
async fn a_durable_select_replays_the_journaled_winner_without_running_either_branch() {
    let journal = Journal::new(Arc::new(MemoryJournal::new()));
    let runs = Runs::default();
    // First run: b is faster.
    let out = run_app(&raced(runs.clone(), 500, 10), "q", &journal)
        .await
        .unwrap();
    assert_eq!(out, json!({ "second": "fallback" }));
    // The code is the same but the world changed (a is now faster): replay
    // takes the journaled branch and runs neither future.
    let out = run_app(&raced(runs.clone(), 1, 500), "q", &journal)
        .await
        .unwrap();
    assert_eq!(out, json!({ "second": "fallback" }));
    assert_eq!((runs.get("a"), runs.get("b")), (1, 1));
}

/// Five `fetch` steps joined with `join_all`, then `total`. With `hold`,
/// every step waits at a barrier of five (so they must run at once), then
/// steps 1 and 3 hang, having told the test.
fn joined_all(runs: Runs, hold: Option<Arc<Notify>>) -> tributary::Graph {
    graph_of(move |ctx| {
        let (runs, hold) = (runs.clone(), hold.clone());
        async move {
            let barrier = hold.is_some().then(|| Arc::new(Barrier::new(5)));
            let steps = (0..5u32)
                .map(|i| {
                    let (runs, barrier, hold) = (runs.clone(), barrier.clone(), hold.clone());
                    ctx.step("fetch", async move {
                        runs.bump(&format!("fetch{i}"));
                        if let Some(barrier) = barrier {
                            barrier.wait().await;
                        }
                        if let Some(hold) = hold.filter(|_| i % 2 == 1) {
                            hold.notify_one();
                            std::future::pending::<()>().await;
                        }
                        Ok::<_, BoxError>(i * 10)
                    })
                })
                .collect();
            let values: Vec<u32> = ctx.join_all(steps).await?;
            let sum: u32 = values.iter().sum();
            let total: u32 = ctx
                .step("total", async move { Ok::<_, BoxError>(sum) })
                .await?;
            Ok(json!({ "values": values, "total": total }))
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_all_runs_its_steps_at_once_and_a_crash_reruns_only_the_unfinished_ones() {
    let store: Arc<dyn JournalStore> = Arc::new(MemoryJournal::new());
    let runs = Runs::default();
    let hold = Arc::new(Notify::new());
    let first = tokio::spawn({
        let graph = joined_all(runs.clone(), Some(hold.clone()));
        let journal = Journal::new(Arc::clone(&store));
        async move { run_app(&graph, "all", &journal).await }
    });
    // All five passed the barrier: they ran at once. Steps 1 and 3 hang;
    // 0, 2 and 4 finish and are journaled.
    tokio::time::timeout(Duration::from_secs(10), hold.notified())
        .await
        .expect("the steps ran at once");
    tokio::time::timeout(Duration::from_secs(10), async {
        while store.load("all", 0).await.unwrap().len() < 3 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the finished steps are journaled");
    first.abort();
    let _ = first.await;
    let journaled: Vec<(u32, String)> = store
        .load("all", 0)
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.position, e.step.to_string()))
        .collect();
    // Each keeps the position of its place in the vector.
    assert_eq!(
        journaled,
        [
            (0, "fetch#0".to_owned()),
            (2, "fetch#2".to_owned()),
            (4, "fetch#4".to_owned())
        ]
    );

    let out = run_app(&joined_all(runs.clone(), None), "all", &Journal::new(store))
        .await
        .unwrap();
    assert_eq!(out, json!({ "values": [0, 10, 20, 30, 40], "total": 100 }));
    let counts: Vec<u32> = (0..5).map(|i| runs.get(&format!("fetch{i}"))).collect();
    assert_eq!(counts, [1, 2, 1, 2, 1]);
}

#[tokio::test]
async fn join_all_fails_with_the_first_failed_step_in_order_after_all_end() {
    let journal = Journal::new(Arc::new(MemoryJournal::new()));
    let runs = Runs::default();
    let last = crate::durable_support::LastError::default();
    let graph = graph_of({
        let (runs, last) = (runs.clone(), last.clone());
        move |ctx| {
            let (runs, last) = (runs.clone(), last.clone());
            async move {
                let steps = (0..4u32)
                    .map(|i| {
                        let runs = runs.clone();
                        ctx.step("check", async move {
                            runs.bump(&format!("check{i}"));
                            if i >= 2 {
                                return Err::<u32, _>(BoxError::from(format!("check {i} failed")));
                            }
                            Ok(i)
                        })
                    })
                    .collect();
                let values = last.keep(ctx.join_all(steps).await)?;
                Ok(json!(values))
            }
        }
    });
    assert!(run_app(&graph, "checks", &journal).await.is_err());
    let err = last.take().expect("the join failed");
    assert!(
        matches!(&err, DurableError::StepFailed { step, .. } if step.to_string() == "check#2"),
        "{err:?}"
    );
    // Every step ran, the failing ones included.
    let counts: Vec<u32> = (0..4).map(|i| runs.get(&format!("check{i}"))).collect();
    assert_eq!(counts, [1, 1, 1, 1]);
}
