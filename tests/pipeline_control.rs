//! Control through the handle: cancel leaves no task and counts in-flight
//! items as dropped; pause stops every node within one item; dropping the
//! run cancels it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tributary::pipeline::{
    Emitter, Input, Node, NodeContext, Pipeline, Processor, RunError, processor, source,
};

use crate::support::Live;

/// An endless source counting what it emitted, holding a live guard.
fn endless(emitted: Arc<AtomicU64>, live: Live) -> impl tributary::pipeline::Source<u64> {
    source(move |mut out: Emitter<u64>, _ctx: NodeContext| async move {
        let _guard = live.guard();
        for i in 0.. {
            out.emit(i).await?;
            emitted.fetch_add(1, Ordering::SeqCst);
        }
        Ok::<_, tributary::pipeline::EmitError>(())
    })
}

/// A processor that takes `ms` per item, counting the calls it started and
/// holding a live guard while it runs.
fn counted(ms: u64, started: Arc<AtomicU64>, live: Live) -> impl Processor<u64> {
    processor(move |input: Input<u64>, _ctx: NodeContext| {
        started.fetch_add(1, Ordering::SeqCst);
        let guard = live.guard();
        async move {
            let _guard = guard;
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok::<_, std::io::Error>(input.into_items())
        }
    })
}

#[tokio::test(start_paused = true)]
async fn cancel_mid_run_leaves_no_task_and_counts_in_flight_as_dropped() {
    let live = Live::default();
    let (emitted, a_started, sink_started) = (Arc::default(), Arc::default(), Arc::default());
    let run = Pipeline::builder()
        .source("src", endless(Arc::clone(&emitted), live.clone()))
        .node(
            "a",
            Node::processor(counted(3_600_000, Arc::clone(&a_started), live.clone()))
                .concurrency(4),
        )
        .processor("sink", counted(1, Arc::clone(&sink_started), live.clone()))
        .edge_with_capacity("src", "a", 3)
        .edge("a", "sink")
        .build()
        .unwrap()
        .start();
    let handle = run.handle();
    // Wait (bounded, on the paused clock) until `a` has four calls in flight.
    tokio::time::timeout(Duration::from_secs(60), async {
        while a_started.load(Ordering::SeqCst) < 4 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
    .expect("a started four calls");
    assert!(live.now() > 0);
    assert!(handle.live_tasks() > 0);
    handle.cancel().await;
    assert_eq!(
        live.now(),
        0,
        "every guard dropped: no call and no source alive"
    );
    assert_eq!(handle.live_tasks(), 0, "no node task and no driver left");
    let err = run.wait().await.unwrap_err();
    let RunError::Cancelled { summary } = &err else {
        panic!("expected cancelled, got {err:?}");
    };
    let a = summary.node("a").unwrap();
    // Four in flight, plus whatever waited on the edge of capacity 3.
    assert_eq!(a.dropped, 4 + 3, "{a:?}");
    assert_eq!(a.in_flight, 0);
    assert_eq!(sink_started.load(Ordering::SeqCst), 0);
    assert_eq!(
        emitted.load(Ordering::SeqCst),
        7,
        "the source was held back"
    );
}

#[tokio::test(start_paused = true)]
async fn dropping_the_run_cancels_it() {
    let live = Live::default();
    let run = Pipeline::builder()
        .source("src", endless(Arc::default(), live.clone()))
        .processor("a", counted(5, Arc::default(), live.clone()))
        .edge("src", "a")
        .build()
        .unwrap()
        .start();
    let handle = run.handle();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(live.now() > 0);
    drop(run);
    tokio::time::timeout(Duration::from_secs(5), handle.cancel())
        .await
        .expect("the tasks end");
    assert_eq!(live.now(), 0);
    assert_eq!(handle.live_tasks(), 0);
}

#[tokio::test(start_paused = true)]
async fn pause_stops_every_node_within_one_item_and_resume_continues() {
    let live = Live::default();
    let emitted = Arc::new(AtomicU64::new(0));
    let started: Vec<Arc<AtomicU64>> = (0..3).map(|_| Arc::default()).collect();
    let run = Pipeline::builder()
        .source("src", endless(Arc::clone(&emitted), live.clone()))
        .processor("a", counted(1, Arc::clone(&started[0]), live.clone()))
        .processor("b", counted(2, Arc::clone(&started[1]), live.clone()))
        .processor("sink", counted(3, Arc::clone(&started[2]), live.clone()))
        .edge("src", "a")
        .edge("a", "b")
        .edge("b", "sink")
        .build()
        .unwrap()
        .start();
    let handle = run.handle();
    let counts = || {
        let mut c: Vec<u64> = started.iter().map(|s| s.load(Ordering::SeqCst)).collect();
        c.push(emitted.load(Ordering::SeqCst));
        c
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    handle.pause();
    assert!(handle.is_paused());
    let at_pause = counts();
    assert!(
        at_pause.iter().all(|&c| c > 0),
        "every node ran: {at_pause:?}"
    );
    // A long while on the paused clock: every node had time for thousands
    // of items.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let after = counts();
    for (i, (now, then)) in after.iter().zip(&at_pause).enumerate() {
        assert!(now <= &(then + 1), "node {i} went on: {then} -> {now}");
    }
    let m = handle.metrics().borrow().clone();
    assert!(m.nodes.iter().all(|n| n.in_flight == 0), "{m:?}");
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(counts(), after, "stopped");
    handle.resume();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let resumed = counts();
    assert!(
        resumed.iter().zip(&after).all(|(r, a)| r > a),
        "every node moves again: {after:?} -> {resumed:?}"
    );
    handle.cancel().await;
    assert_eq!(live.now(), 0);
}
