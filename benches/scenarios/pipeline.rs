//! Pipelines: items/s through a 4-node chain and a fan-out/fan-in diamond
//! against hand-written tokio mpsc pipelines of the same shape, and the
//! peak memory of 1M items into a slow sink (in a child process).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::mpsc;
use tributary::pipeline::{Input, Join, Node, NodeContext, Pipeline, iter_source, map, processor};

use crate::Opts;
use crate::report::{Measurement, Target, proc_status_kb};

/// Edge capacity on both sides.
const CAPACITY: usize = 16;

/// What the sinks count and sum, to check both sides did the same work.
type Tally = (u64, u64);

/// The sink's counters: both sides update the same kind of shared
/// counters per item, so the sink does the same work on each.
#[derive(Default)]
struct Counters {
    items: AtomicU64,
    sum: AtomicU64,
}

impl Counters {
    fn add(&self, x: u64) {
        self.items.fetch_add(1, Ordering::Relaxed);
        self.sum.fetch_add(x, Ordering::Relaxed);
    }

    fn tally(&self) -> Tally {
        (
            self.items.load(Ordering::Relaxed),
            self.sum.load(Ordering::Relaxed),
        )
    }
}

fn step(x: u64) -> u64 {
    x.wrapping_mul(3).wrapping_add(1)
}

// ===== tributary =====

async fn chain_ours(n: u64) -> Tally {
    let tally = Arc::new(Counters::default());
    let t = Arc::clone(&tally);
    let sink = processor(move |input: Input<u64>, _ctx: NodeContext| {
        t.add(input.into_single().unwrap_or(0));
        std::future::ready(Ok::<_, std::io::Error>(Vec::new()))
    });
    Pipeline::builder()
        .source("src", iter_source(0..n))
        .processor(
            "a",
            map(|x: u64| std::future::ready(Ok::<_, std::io::Error>(step(x)))),
        )
        .processor(
            "b",
            map(|x: u64| std::future::ready(Ok::<_, std::io::Error>(step(x)))),
        )
        .processor("sink", sink)
        .edge("src", "a")
        .edge("a", "b")
        .edge("b", "sink")
        .default_capacity(CAPACITY)
        .build()
        .expect("a valid chain")
        .run()
        .await
        .expect("the chain runs");
    tally.tally()
}

async fn diamond_ours(n: u64) -> Tally {
    let tally = Arc::new(Counters::default());
    let t = Arc::clone(&tally);
    let join = processor(move |input: Input<u64>, _ctx: NodeContext| {
        t.add(input.into_items().into_iter().fold(0u64, u64::wrapping_add));
        std::future::ready(Ok::<_, std::io::Error>(Vec::new()))
    });
    Pipeline::builder()
        .source("src", iter_source(0..n))
        .processor(
            "a",
            map(|x: u64| std::future::ready(Ok::<_, std::io::Error>(step(x)))),
        )
        .processor(
            "b",
            map(|x: u64| std::future::ready(Ok::<_, std::io::Error>(x ^ 7))),
        )
        .node("join", Node::processor(join).join(Join::Zip))
        .edge("src", "a")
        .edge("src", "b")
        .edge("a", "join")
        .edge("b", "join")
        .default_capacity(CAPACITY)
        .build()
        .expect("a valid diamond")
        .run()
        .await
        .expect("the diamond runs");
    tally.tally()
}

// ===== hand-written tokio =====

fn relay(
    mut rx: mpsc::Receiver<u64>,
    f: fn(u64) -> u64,
) -> (mpsc::Receiver<u64>, tokio::task::JoinHandle<()>) {
    let (tx, out) = mpsc::channel(CAPACITY);
    let task = tokio::spawn(async move {
        while let Some(x) = rx.recv().await {
            if tx.send(f(x)).await.is_err() {
                break;
            }
        }
    });
    (out, task)
}

async fn chain_bare(n: u64) -> Tally {
    let (tx, rx) = mpsc::channel(CAPACITY);
    let src = tokio::spawn(async move {
        for i in 0..n {
            if tx.send(i).await.is_err() {
                break;
            }
        }
    });
    let (rx, a) = relay(rx, step);
    let (mut rx, b) = relay(rx, step);
    let tally = Arc::new(Counters::default());
    let t = Arc::clone(&tally);
    let sink = tokio::spawn(async move {
        while let Some(x) = rx.recv().await {
            t.add(x);
        }
    });
    sink.await.expect("the sink");
    for task in [src, a, b] {
        task.await.expect("a stage");
    }
    tally.tally()
}

async fn diamond_bare(n: u64) -> Tally {
    let (tx_a, rx_a) = mpsc::channel(CAPACITY);
    let (tx_b, rx_b) = mpsc::channel(CAPACITY);
    let src = tokio::spawn(async move {
        for i in 0..n {
            if tx_a.send(i).await.is_err() || tx_b.send(i).await.is_err() {
                break;
            }
        }
    });
    let (mut rx_a, a) = relay(rx_a, step);
    let (mut rx_b, b) = relay(rx_b, |x| x ^ 7);
    let tally = Arc::new(Counters::default());
    let t = Arc::clone(&tally);
    let join = tokio::spawn(async move {
        while let (Some(x), Some(y)) = (rx_a.recv().await, rx_b.recv().await) {
            t.add(x.wrapping_add(y));
        }
    });
    join.await.expect("the join");
    for task in [src, a, b] {
        task.await.expect("a stage");
    }
    tally.tally()
}

/// Items/s through the chain and the diamond, against bare tokio.
pub(crate) async fn throughput(opts: &Opts) {
    let n: u64 = if opts.quick { 200_000 } else { 1_000_000 };
    // Warm up both sides.
    chain_ours(n / 10).await;
    chain_bare(n / 10).await;
    for shape in ["chain", "diamond"] {
        let repeats = opts.repeats(7);
        let (mut ours, mut bare) = (Vec::new(), Vec::new());
        for r in 0..repeats {
            let mut run_bare = async || {
                let t = Instant::now();
                let tally = match shape {
                    "chain" => chain_bare(n).await,
                    _ => diamond_bare(n).await,
                };
                bare.push(n as f64 / t.elapsed().as_secs_f64());
                tally
            };
            let expected = if r % 2 == 0 {
                Some(run_bare().await)
            } else {
                None
            };
            let t = Instant::now();
            let tally = match shape {
                "chain" => chain_ours(n).await,
                _ => diamond_ours(n).await,
            };
            ours.push(n as f64 / t.elapsed().as_secs_f64());
            let expected = match expected {
                Some(e) => e,
                None => run_bare().await,
            };
            assert_eq!(tally, expected, "{shape}: both sides did the same work");
        }
        Measurement::new(
            "pipeline_throughput",
            json!({ "shape": shape, "nodes": 4, "items": n, "capacity": CAPACITY }),
            "items_per_s",
        )
        .samples(ours)
        .baseline("tokio_mpsc_pipeline", bare)
        .target_ratio(Target::AtLeast(0.5))
        .emit();
    }
}

/// Peak RSS of 1M items through a chain into a slow sink: it must stay
/// flat (the peak at the end no higher than after a tenth, plus a margin
/// for allocator noise).
pub(crate) fn slow_sink(opts: &Opts) {
    let n = 1_000_000;
    let _ = opts;
    let c = crate::scenarios::memory::child("pipeline-slow-sink", n);
    let early = c["hwm_kb_at_10pct"].as_u64().unwrap_or(0) as f64;
    let end = c["hwm_kb_at_end"].as_u64().unwrap_or(0) as f64;
    Measurement::new(
        "pipeline_memory_slow_sink",
        json!({ "items": n, "nodes": 4, "capacity": CAPACITY }),
        "peak_growth_ratio",
    )
    .samples(vec![end / early])
    .target_median(Target::AtMost(1.25))
    .peak_rss_kb(end as u64)
    .extra("child", c)
    .emit();
}

/// Whether `what` is one of this module's child measurements.
pub(crate) fn is_child(what: &str) -> bool {
    what.starts_with("pipeline-")
}

/// The child's side: 1M items of 1 KiB each through src -> a -> b -> a sink
/// that pauses 1 ms every thousand items.
pub(crate) async fn run_child(what: &str, n: u64) -> Value {
    assert_eq!(what, "pipeline-slow-sink", "unknown child measurement");
    let marks = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let m = std::sync::Arc::clone(&marks);
    let sink = processor(move |input: Input<Vec<u8>>, ctx: NodeContext| {
        let m = std::sync::Arc::clone(&m);
        async move {
            std::hint::black_box(&input);
            let seen = ctx.seq() + 1;
            if seen == n / 10 || seen == n / 2 {
                m.lock().expect("marks").push(proc_status_kb("VmHWM"));
            }
            if seen.is_multiple_of(1_000) {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            Ok::<_, std::io::Error>(Vec::new())
        }
    });
    let id = || map(|x: Vec<u8>| std::future::ready(Ok::<_, std::io::Error>(x)));
    let summary = Pipeline::builder()
        .source(
            "src",
            iter_source((0..n).map(|i| vec![(i % 251) as u8; 1024])),
        )
        .processor("a", id())
        .processor("b", id())
        .processor("sink", sink)
        .edge("src", "a")
        .edge("a", "b")
        .edge("b", "sink")
        .default_capacity(CAPACITY)
        .build()
        .expect("a valid chain")
        .run()
        .await
        .expect("the chain runs");
    assert_eq!(summary.node("sink").map(|s| s.items_in), Some(n));
    let marks = marks.lock().expect("marks").clone();
    json!({
        "hwm_kb_at_10pct": marks.first(),
        "hwm_kb_at_50pct": marks.get(1),
        "hwm_kb_at_end": proc_status_kb("VmHWM"),
        "items": n,
    })
}
