//! Flow through a pipeline: backpressure along bounded edges, zip with
//! inputs of unequal rate and length, merge keeping each input's order,
//! latest, and end of stream through fan-in.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tributary::pipeline::{
    Emitter, Input, Join, Node, NodeContext, Pipeline, iter_source, map, processor, source,
};

use crate::pipeline_support::Collected;

/// A source that emits `items` with `gap` between them (on the paused
/// clock), counting what it emitted.
fn paced(
    items: Vec<u64>,
    gap: Duration,
    emitted: Arc<AtomicU64>,
) -> impl tributary::pipeline::Source<u64> {
    source(move |mut out: Emitter<u64>, _ctx: NodeContext| async move {
        for item in items {
            if !gap.is_zero() {
                tokio::time::sleep(gap).await;
            }
            out.emit(item).await?;
            emitted.fetch_add(1, Ordering::SeqCst);
        }
        Ok::<_, tributary::pipeline::EmitError>(())
    })
}

#[tokio::test(start_paused = true)]
async fn a_slow_sink_keeps_the_source_within_the_capacities_ahead() {
    const ITEMS: u64 = 2_000;
    let (c1, c2, c3) = (4u64, 2u64, 3u64);
    let emitted = Arc::new(AtomicU64::new(0));
    let consumed = Arc::new(AtomicU64::new(0));
    let ahead = Arc::new(AtomicU64::new(0));
    let (e, c, a) = (
        Arc::clone(&emitted),
        Arc::clone(&consumed),
        Arc::clone(&ahead),
    );
    let src = source(move |mut out: Emitter<u64>, _ctx: NodeContext| async move {
        for i in 0..ITEMS {
            out.emit(i).await?;
            let now = e.fetch_add(1, Ordering::SeqCst) + 1;
            a.fetch_max(now - c.load(Ordering::SeqCst), Ordering::SeqCst);
        }
        Ok::<_, tributary::pipeline::EmitError>(())
    });
    let c = Arc::clone(&consumed);
    let slow_sink = processor(move |_input: Input<u64>, _ctx: NodeContext| {
        let c = Arc::clone(&c);
        async move {
            tokio::time::sleep(Duration::from_millis(1)).await;
            c.fetch_add(1, Ordering::SeqCst);
            Ok::<_, std::io::Error>(vec![])
        }
    });
    let id = || map(|x: u64| async move { Ok::<_, std::io::Error>(x) });
    let run = Pipeline::builder()
        .source("src", src)
        .processor("a", id())
        .processor("b", id())
        .processor("sink", slow_sink)
        .edge_with_capacity("src", "a", c1 as usize)
        .edge_with_capacity("a", "b", c2 as usize)
        .edge_with_capacity("b", "sink", c3 as usize)
        .metrics_interval(Duration::from_millis(5))
        .build()
        .unwrap()
        .start();
    let mut metrics = run.handle().metrics();
    let watcher = tokio::spawn(async move {
        let mut deepest = 0;
        while metrics.changed().await.is_ok() {
            let m = metrics.borrow_and_update().clone();
            for e in &m.edges {
                assert!(e.depth <= e.capacity as u64, "edge {e:?} over capacity");
            }
            deepest = deepest.max(m.edge("b", "sink").unwrap().depth);
            if m.finished {
                break;
            }
        }
        deepest
    });
    let summary = run.wait().await.unwrap();
    let deepest_sink_edge = watcher.await.unwrap();
    // Ahead of the sink: what the three edges hold, plus one item held by
    // each of the three nodes after the source (a, b and the sink).
    let bound = c1 + c2 + c3 + 3;
    let max_ahead = ahead.load(Ordering::SeqCst);
    assert!(
        max_ahead <= bound,
        "source ran {max_ahead} items ahead (bound {bound})"
    );
    assert!(
        max_ahead >= c1 + c2 + c3,
        "the edges filled up ({max_ahead})"
    );
    assert_eq!(
        deepest_sink_edge, c3,
        "the edge into the slow sink was full"
    );
    assert_eq!(consumed.load(Ordering::SeqCst), ITEMS);
    assert!(summary.node("b").unwrap().blocked > Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn zip_with_unequal_rates_pairs_in_order_and_ends_at_the_shortest() {
    let (fast_emitted, slow_emitted) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let out = Collected::new();
    let summary = Pipeline::builder()
        .source(
            "fast",
            paced(
                (0..100).collect(),
                Duration::ZERO,
                Arc::clone(&fast_emitted),
            ),
        )
        .source(
            "slow",
            paced(
                (1000..1006).collect(),
                Duration::from_millis(3),
                Arc::clone(&slow_emitted),
            ),
        )
        .node("zip", Node::processor(out.sink()).join(Join::Zip))
        .edge("fast", "zip")
        .edge("slow", "zip")
        .default_capacity(4)
        .build()
        .unwrap()
        .run()
        .await
        .unwrap();
    let want: Vec<_> = (0..6).map(|i| Input::Zip(vec![i, 1000 + i])).collect();
    assert_eq!(out.take(), want);
    let zip = summary.node("zip").unwrap();
    assert_eq!(zip.items_in, 6);
    // Every item the fast source got out was either paired or counted as
    // unpaired; it stopped early instead of producing all 100.
    let fast = fast_emitted.load(Ordering::SeqCst);
    assert_eq!(fast, 6 + zip.unpaired, "{zip:?}");
    assert!(fast < 100);
    assert_eq!(slow_emitted.load(Ordering::SeqCst), 6);
}

/// A deterministic pseudo-random delay in 0..5 ms.
fn jitter(seed: u64, i: u64) -> Duration {
    let x = (seed.wrapping_mul(6364136223846793005) ^ i.wrapping_mul(1442695040888963407))
        .rotate_left(17);
    Duration::from_micros(x % 5_000)
}

#[tokio::test(start_paused = true)]
async fn merge_keeps_each_inputs_order() {
    for seed in 0..8u64 {
        let out = Collected::new();
        let mut b = Pipeline::builder();
        for s in 0..3u64 {
            let src = source(move |mut out: Emitter<u64>, _ctx: NodeContext| async move {
                for i in 0..30 {
                    tokio::time::sleep(jitter(seed * 3 + s, i)).await;
                    out.emit(s * 100 + i).await?;
                }
                Ok::<_, tributary::pipeline::EmitError>(())
            });
            b = b.source(format!("s{s}"), src);
        }
        let summary = b
            .node("m", Node::processor(out.sink()).join(Join::Merge))
            .edge("s0", "m")
            .edge("s1", "m")
            .edge("s2", "m")
            .build()
            .unwrap()
            .run()
            .await
            .unwrap();
        let got = out.take();
        assert_eq!(got.len(), 90);
        for s in 0..3u64 {
            let name = format!("s{s}");
            let from_s: Vec<u64> = got
                .iter()
                .filter_map(|i| match i {
                    Input::Merge { from, item } if **from == *name => Some(*item),
                    _ => None,
                })
                .collect();
            assert_eq!(from_s, (0..30).map(|i| s * 100 + i).collect::<Vec<_>>());
        }
        assert_eq!(summary.node("m").unwrap().items_in, 90);
    }
}

#[tokio::test(start_paused = true)]
async fn end_of_stream_through_fan_in_waits_for_every_input() {
    let quick_done = Arc::new(AtomicBool::new(false));
    let seen_after_quick_ended = Arc::new(AtomicU64::new(0));
    let qd = Arc::clone(&quick_done);
    let quick = source(move |mut out: Emitter<u64>, _ctx: NodeContext| async move {
        out.emit(1).await?;
        out.emit(2).await?;
        qd.store(true, Ordering::SeqCst);
        Ok::<_, tributary::pipeline::EmitError>(())
    });
    let slow = paced(
        (10..15).collect(),
        Duration::from_millis(10),
        Arc::default(),
    );
    let (qd, late) = (Arc::clone(&quick_done), Arc::clone(&seen_after_quick_ended));
    let out = Collected::new();
    let record = out.sink();
    let merge = processor(move |input: Input<u64>, ctx: NodeContext| {
        if qd.load(Ordering::SeqCst) {
            late.fetch_add(1, Ordering::SeqCst);
        }
        let _ = &ctx;
        async move { Ok::<_, std::io::Error>(input.into_items()) }
    });
    let summary = Pipeline::builder()
        .source("quick", quick)
        .source("slow", slow)
        .node("merge", Node::processor(merge).join(Join::Merge))
        .processor("out", record)
        .edge("quick", "merge")
        .edge("slow", "merge")
        .edge("merge", "out")
        .build()
        .unwrap()
        .run()
        .await
        .unwrap();
    let mut got = out.items();
    got.sort_unstable();
    assert_eq!(got, vec![1, 2, 10, 11, 12, 13, 14]);
    assert!(
        seen_after_quick_ended.load(Ordering::SeqCst) >= 5,
        "the merge kept reading the slow input after the quick one ended"
    );
    assert!(summary.nodes.iter().all(|n| n.ended));
}

#[tokio::test(start_paused = true)]
async fn latest_combines_the_newest_of_each_input_when_one_changes() {
    // `a` emits at 0, 10, 20 ms (after a 1 ms head start), `b` at 5 and 15 ms.
    let a = source(|mut out: Emitter<u64>, _ctx: NodeContext| async move {
        for (i, at) in [(1u64, 1u64), (2, 10), (3, 20)] {
            tokio::time::sleep_until(tokio::time::Instant::now() + Duration::from_millis(at)).await;
            out.emit(i).await?;
            let _ = i;
        }
        Ok::<_, tributary::pipeline::EmitError>(())
    });
    let b = source(|mut out: Emitter<u64>, _ctx: NodeContext| async move {
        tokio::time::sleep(Duration::from_millis(5)).await;
        out.emit(100).await?;
        tokio::time::sleep(Duration::from_millis(10)).await;
        out.emit(200).await?;
        Ok::<_, tributary::pipeline::EmitError>(())
    });
    let out = Collected::new();
    Pipeline::builder()
        .source("a", a)
        .source("b", b)
        .node("latest", Node::processor(out.sink()).join(Join::Latest))
        .edge("a", "latest")
        .edge("b", "latest")
        .build()
        .unwrap()
        .run()
        .await
        .unwrap();
    // a=1 at 1 ms (b has nothing yet), b=100 at 5 ms, a=2 at 11 ms,
    // b=200 at 15 ms, a=3 at 31 ms.
    let want = vec![
        Input::Latest {
            items: vec![1, 100],
            changed: 1,
        },
        Input::Latest {
            items: vec![2, 100],
            changed: 0,
        },
        Input::Latest {
            items: vec![2, 200],
            changed: 1,
        },
        Input::Latest {
            items: vec![3, 200],
            changed: 0,
        },
    ];
    assert_eq!(out.take(), want);
}

#[tokio::test]
async fn a_source_with_a_single_edge_runs_a_chain_in_order() {
    let out = Collected::new();
    let summary = Pipeline::builder()
        .source("inp", iter_source((0..20).map(|i| format!("s{i}"))))
        .processor(
            "rev",
            map(|s: String| async move { Ok::<_, std::io::Error>(s.chars().rev().collect()) }),
        )
        .processor("out", out.sink())
        .edge("inp", "rev")
        .edge("rev", "out")
        .build()
        .unwrap()
        .run()
        .await
        .unwrap();
    let want: Vec<String> = (0..20)
        .map(|i| format!("s{i}").chars().rev().collect())
        .collect();
    assert_eq!(out.items(), want);
    let m = summary.node("rev").unwrap();
    assert_eq!((m.items_in, m.items_out), (20, 20));
    assert_eq!(summary.edges[0].sent, 20);
}
