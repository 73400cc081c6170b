//! map_cpu and map_io: N subgraphs of two actions, reduced.

use std::time::{Duration, Instant};

use serde_json::json;
use tributary::Runtime;

use crate::Opts;
use crate::report::{Measurement, Stats, Target};
use crate::workloads::{bare_map, expected, tributary_map, tributary_map_states, two_steps};

/// Per-subgraph overhead of two trivial actions, against bare tokio.
pub(crate) async fn map_cpu(opts: &Opts) {
    let graph = two_steps(None);
    let rt = Runtime::new();
    // Warm up the allocator and the worker threads.
    tributary_map(&rt, &graph, 10_000).await;
    bare_map(10_000, None).await;
    for n in [1_000usize, 10_000, 100_000] {
        let repeats = opts.repeats(if n >= 100_000 { 5 } else { 9 });
        let (mut ours, mut nested, mut bare) = (Vec::new(), Vec::new(), Vec::new());
        for r in 0..repeats {
            // Alternate the order so that neither side always runs warm.
            let mut run_bare = async || {
                let t = Instant::now();
                let got = bare_map(n, None).await;
                bare.push(per_item_us(t, n));
                assert_eq!(got, expected(n));
            };
            if r % 2 == 0 {
                run_bare().await;
            }
            let t = Instant::now();
            let got = tributary_map(&rt, &graph, n).await;
            ours.push(per_item_us(t, n));
            assert_eq!(got, expected(n));
            let t = Instant::now();
            let got = tributary_map_states(&graph, n).await;
            nested.push(per_item_us(t, n));
            assert_eq!(got.sum, expected(n).sum);
            if r % 2 == 1 {
                run_bare().await;
            }
        }
        let params =
            json!({ "n": n, "actions": 2, "intermediate_nodes": true, "persistence": false });
        Measurement::new("map_cpu", params.clone(), "us_per_subgraph")
            .samples(ours)
            .baseline("bare_tokio", bare.clone())
            .target_ratio(Target::AtMost(2.0))
            .extra("variant", json!("run"))
            .emit();
        Measurement::new("map_cpu", params, "us_per_subgraph")
            .samples(nested)
            .baseline("bare_tokio", bare)
            .target_ratio(Target::AtMost(2.0))
            .extra("variant", json!("map_states"))
            .emit();
    }
}

/// Two actions awaiting a 10 ms timer each: wall time against the ideal
/// critical path (20 ms) and against bare tokio.
pub(crate) async fn map_io(opts: &Opts) {
    let io = Duration::from_millis(10);
    let ideal_ms = 20.0;
    let graph = two_steps(Some(io));
    // Every subgraph waits on timers: let all of them be alive at once, as
    // the bare baseline does.
    let rt = Runtime::builder().unlimited().build();
    tributary_map(&rt, &graph, 1_000).await;
    for n in [1_000usize, 10_000, 100_000] {
        let repeats = opts.repeats(if n >= 100_000 { 5 } else { 9 });
        let (mut ours, mut bare) = (Vec::new(), Vec::new());
        for r in 0..repeats {
            let mut run_bare = async || {
                let t = Instant::now();
                let got = bare_map(n, Some(io)).await;
                bare.push(ms(t));
                assert_eq!(got, expected(n));
            };
            if r % 2 == 0 {
                run_bare().await;
            }
            let t = Instant::now();
            let got = tributary_map(&rt, &graph, n).await;
            ours.push(ms(t));
            assert_eq!(got, expected(n));
            if r % 2 == 1 {
                run_bare().await;
            }
        }
        let params = json!({ "n": n, "actions": 2, "timer_ms": 10, "runtime": "unlimited" });
        let ideal_ratio = Stats::of(&ours).median / ideal_ms;
        let bare_ideal = Stats::of(&bare).median / ideal_ms;
        let m = Measurement::new("map_io", params, "ms_wall")
            .samples(ours)
            .baseline("bare_tokio", bare)
            .extra(
                "ratio_to_ideal",
                json!((ideal_ratio * 1000.0).round() / 1000.0),
            )
            .extra(
                "bare_ratio_to_ideal",
                json!((bare_ideal * 1000.0).round() / 1000.0),
            );
        let m = match n {
            1_000 => m.target_median(Target::AtMost(1.5 * ideal_ms)),
            100_000 => m.target_ratio(Target::AtMost(1.5)),
            _ => m,
        };
        m.emit();
    }
}

fn per_item_us(t: Instant, n: usize) -> f64 {
    t.elapsed().as_secs_f64() * 1e6 / n as f64
}

pub(crate) fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}
