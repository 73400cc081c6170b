//! Control: pause acknowledgement and `cancel()` with 10k live tasks.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use serde_json::json;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tributary::{
    Graph, ItemKind, RunConfig, Runtime, State, TaskSource, TaskSpec, action, default,
};

use crate::Opts;
use crate::report::{Measurement, Target};
use crate::scenarios::map::ms;

const LIVE: u64 = 10_000;

/// A task that steps forever, each step yielding once.
fn ticker() -> Graph {
    Graph::builder()
        .action(action("tick").run(|s: State, _, _| async move {
            tokio::task::yield_now().await;
            Ok((json!({}), s))
        }))
        .transition("tick", "tick", default())
        .entrypoint("tick")
        .build()
        .expect("a valid graph")
}

/// A task whose only action waits until it is cancelled.
pub(crate) fn waiter() -> Graph {
    Graph::single(action("wait").run(|s: State, _, _| async move {
        std::future::pending::<()>().await;
        Ok((json!({}), s))
    }))
}

/// Drain a run's stream in the background, counting cancellations.
fn drain(mut stream: tributary::RunStream) -> tokio::task::JoinHandle<u64> {
    tokio::spawn(async move {
        let mut cancelled = 0;
        while let Some(item) = stream.next().await {
            cancelled += u64::from(item.kind == ItemKind::Cancelled);
        }
        cancelled
    })
}

/// Time from `pause()` until every one of 10k busy tasks waits at its gate,
/// against 10k bare tasks checking a `watch` gate between iterations.
pub(crate) async fn pause(opts: &Opts) {
    let rt = Runtime::builder().unlimited().build();
    let graph = ticker();
    let repeats = opts.repeats(7);
    let (mut ours, mut bare) = (Vec::new(), Vec::new());
    for _ in 0..repeats {
        let g = graph.clone();
        let tasks = (0..LIVE).map(move |i| TaskSpec::new(i.to_string(), g.clone()));
        let config = RunConfig::new().intermediate_nodes(false);
        let (handle, stream) = rt.run(TaskSource::iter(tasks), config);
        let drained = drain(stream);
        let mut progress = handle.progress();
        progress
            .wait_for(|p| p.running == LIVE)
            .await
            .expect("the run is live");
        let t = Instant::now();
        handle.pause();
        progress
            .wait_for(|p| p.paused == p.running)
            .await
            .expect("the run is live");
        ours.push(ms(t));
        handle.cancel().await;
        assert_eq!(drained.await.expect("drained"), LIVE);

        let (gate, _) = watch::channel(false);
        let paused = Arc::new(AtomicU64::new(0));
        let started = Arc::new(AtomicU64::new(0));
        let token = CancellationToken::new();
        let tracker = TaskTracker::new();
        let (done_tx, mut done_rx) = mpsc::channel::<()>(1);
        for _ in 0..LIVE {
            let mut gate = gate.subscribe();
            let (paused, started, token) = (paused.clone(), started.clone(), token.child_token());
            let done_tx = done_tx.clone();
            tracker.spawn(async move {
                started.fetch_add(1, Ordering::Relaxed);
                loop {
                    if *gate.borrow() {
                        if paused.fetch_add(1, Ordering::AcqRel) + 1 == LIVE {
                            let _ = done_tx.try_send(());
                        }
                        tokio::select! {
                            _ = token.cancelled() => return,
                            _ = gate.wait_for(|p| !*p) => {}
                        }
                        paused.fetch_sub(1, Ordering::AcqRel);
                    }
                    tokio::select! {
                        _ = token.cancelled() => return,
                        _ = tokio::task::yield_now() => {}
                    }
                }
            });
        }
        while started.load(Ordering::Relaxed) < LIVE {
            tokio::task::yield_now().await;
        }
        let t = Instant::now();
        gate.send_replace(true);
        done_rx.recv().await;
        bare.push(ms(t));
        token.cancel();
        tracker.close();
        tracker.wait().await;
    }
    Measurement::new("pause_ack", json!({ "live_tasks": LIVE }), "ms")
        .samples(ours)
        .baseline("bare_watch_gate", bare)
        .target_ratio(Target::AtMost(2.0))
        .emit();
}

/// Time for `cancel()` to resolve with 10k live tasks, against a bare
/// cancellation-token tree of 10k tasks.
pub(crate) async fn cancel(opts: &Opts) {
    let rt = Runtime::builder().unlimited().build();
    let graph = waiter();
    let repeats = opts.repeats(9);
    let (mut ours, mut bare) = (Vec::new(), Vec::new());
    for _ in 0..repeats {
        let g = graph.clone();
        let tasks = (0..LIVE).map(move |i| TaskSpec::new(i.to_string(), g.clone()));
        let (handle, stream) = rt.run(TaskSource::iter(tasks), RunConfig::new());
        handle
            .progress()
            .wait_for(|p| p.running == LIVE)
            .await
            .expect("the run is live");
        let t = Instant::now();
        handle.cancel().await;
        ours.push(ms(t));
        // Read the cancellations afterwards, as the baseline does.
        assert_eq!(drain(stream).await.expect("drained"), LIVE);

        let root = CancellationToken::new();
        let tracker = TaskTracker::new();
        let started = Arc::new(AtomicU64::new(0));
        let (tx, mut rx) = mpsc::unbounded_channel::<u64>();
        for i in 0..LIVE {
            let token = root.child_token();
            let started = started.clone();
            let tx = tx.clone();
            tracker.spawn(async move {
                started.fetch_add(1, Ordering::Relaxed);
                token.cancelled().await;
                let _ = tx.send(i);
            });
        }
        drop(tx);
        while started.load(Ordering::Relaxed) < LIVE {
            tokio::task::yield_now().await;
        }
        let t = Instant::now();
        root.cancel();
        tracker.close();
        tracker.wait().await;
        bare.push(ms(t));
        let mut reported = 0;
        while rx.recv().await.is_some() {
            reported += 1;
        }
        assert_eq!(reported, LIVE);
    }
    Measurement::new("cancel", json!({ "live_tasks": LIVE }), "ms")
        .samples(ours)
        .baseline("bare_token_tree", bare)
        .target_median(Target::AtMost(10.0))
        .target_ratio(Target::AtMost(3.0))
        .emit();
}
