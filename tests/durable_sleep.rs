//! Durable sleep: the wake-up time is journaled, so a resumed action sleeps
//! only what remains.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde_json::json;
use tributary::BoxError;
use tributary::durable::*;

use crate::durable_support::{Runs, graph_of, run_app};

/// A wall clock the test moves by hand.
#[derive(Clone)]
struct ManualClock(Arc<Mutex<SystemTime>>);

impl ManualClock {
    fn new() -> Self {
        ManualClock(Arc::new(Mutex::new(
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
        )))
    }
    fn advance(&self, by: Duration) {
        *self.0.lock().unwrap() += by;
    }
    fn journal(&self, store: Arc<dyn JournalStore>) -> Journal {
        let clock = self.clone();
        Journal::with_clock(store, move || *clock.0.lock().unwrap())
    }
}

/// Step "before", a 60 s durable sleep, step "after".
fn nap(runs: Runs) -> tributary::Graph {
    graph_of(move |ctx| {
        let runs = runs.clone();
        async move {
            let _: u32 = ctx
                .step("before", async {
                    runs.bump("before");
                    Ok::<_, BoxError>(1)
                })
                .await?;
            ctx.sleep(Duration::from_secs(60)).await?;
            let _: u32 = ctx
                .step("after", async {
                    runs.bump("after");
                    Ok::<_, BoxError>(2)
                })
                .await?;
            Ok(json!("rested"))
        }
    })
}

#[tokio::test(start_paused = true)]
async fn a_resumed_sleep_waits_only_for_the_rest_of_its_journaled_time() {
    let clock = ManualClock::new();
    let store: Arc<dyn JournalStore> = Arc::new(MemoryJournal::new());
    let runs = Runs::default();
    let graph = nap(runs.clone());

    // 40 s into the sleep, the process dies.
    let first = tokio::spawn({
        let (graph, journal) = (graph.clone(), clock.journal(Arc::clone(&store)));
        async move { run_app(&graph, "nap", &journal).await }
    });
    tokio::time::sleep(Duration::from_secs(40)).await;
    assert!(!first.is_finished());
    first.abort();
    let _ = first.await;
    clock.advance(Duration::from_secs(40));

    let started = tokio::time::Instant::now();
    let out = run_app(&graph, "nap", &clock.journal(Arc::clone(&store)))
        .await
        .unwrap();
    let slept = started.elapsed();
    assert_eq!(out, json!("rested"));
    assert!(
        slept >= Duration::from_secs(20) && slept < Duration::from_secs(21),
        "slept {slept:?}"
    );
    assert_eq!((runs.get("before"), runs.get("after")), (1, 1));
}

#[tokio::test(start_paused = true)]
async fn a_sleep_whose_wake_up_time_has_passed_does_not_wait() {
    let clock = ManualClock::new();
    let store: Arc<dyn JournalStore> = Arc::new(MemoryJournal::new());
    let graph = nap(Runs::default());
    let first = tokio::spawn({
        let (graph, journal) = (graph.clone(), clock.journal(Arc::clone(&store)));
        async move { run_app(&graph, "nap", &journal).await }
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    first.abort();
    let _ = first.await;
    // Down for two minutes: the wake-up time is long past.
    clock.advance(Duration::from_secs(120));
    let started = tokio::time::Instant::now();
    run_app(&graph, "nap", &clock.journal(store)).await.unwrap();
    assert_eq!(started.elapsed(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn a_first_sleep_waits_its_whole_duration_and_is_journaled_as_a_sleep() {
    let clock = ManualClock::new();
    let store: Arc<dyn JournalStore> = Arc::new(MemoryJournal::new());
    let started = tokio::time::Instant::now();
    run_app(
        &nap(Runs::default()),
        "nap",
        &clock.journal(Arc::clone(&store)),
    )
    .await
    .unwrap();
    let slept = started.elapsed();
    assert!(
        slept >= Duration::from_secs(60) && slept < Duration::from_secs(61),
        "{slept:?}"
    );
    let entries = store.load("nap", 0).await.unwrap();
    let kinds: Vec<_> = entries
        .iter()
        .map(|e| (e.step.to_string(), e.kind))
        .collect();
    assert_eq!(
        kinds,
        [
            ("before#0".to_owned(), EntryKind::Step),
            ("sleep#0".to_owned(), EntryKind::Sleep),
            ("after#0".to_owned(), EntryKind::Step),
        ]
    );
    let wake = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_060);
    let wake_ms = wake
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    assert_eq!(entries[1].outcome, Outcome::Completed(json!(wake_ms)));
}
