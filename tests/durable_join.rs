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
