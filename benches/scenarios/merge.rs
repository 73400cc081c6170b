//! Merge throughput and time to first item.

use std::time::Instant;

use serde_json::json;
use tokio::sync::mpsc;
use tributary::{MergeMode, RunConfig, Runtime, TaskSource, TaskSpec};

use crate::Opts;
use crate::report::{Measurement, Target};
use crate::scenarios::map::ms;
use crate::workloads::{
    BareItem, CHANNEL, bare_map, emitter, raw_stream, tributary_map, two_steps,
};

/// M tasks streaming K tokens each through every merge mode, against one
/// raw mpsc carrying the same items.
pub(crate) async fn merge(opts: &Opts) {
    let (m, k) = if opts.quick {
        (100, 1_000)
    } else {
        (100, 5_000)
    };
    let total = (m as u64) * (k + 1);
    let rt = Runtime::new();
    let graph = emitter(k);
    let run = async |mode: MergeMode, capacity: Option<usize>| {
        let g = graph.clone();
        let tasks = (0..m).map(move |i| TaskSpec::new(i.to_string(), g.clone()));
        let mut config = RunConfig::new().merge_mode(mode);
        if let Some(c) = capacity {
            config = config.task_channel_capacity(c);
        }
        let t = Instant::now();
        let (_handle, mut stream) = rt.run(TaskSource::iter(tasks), config);
        let mut items = 0u64;
        while let Some(item) = stream.next().await {
            std::hint::black_box(&item);
            items += 1;
        }
        assert_eq!(items, total, "{mode:?}");
        total as f64 / t.elapsed().as_secs_f64()
    };
    run(MergeMode::AsCompleted, None).await;
    // `None`: the default configuration, which the targets are about; the
    // per-task modes also run with larger per-task channels, for reference.
    for (mode, name, target, capacity) in [
        (MergeMode::AsCompleted, "as_completed", 0.5, None),
        (MergeMode::Zip, "zip", 0.25, None),
        (MergeMode::Ordered, "ordered", 0.25, None),
        (MergeMode::Zip, "zip", 0.25, Some(32)),
        (MergeMode::Ordered, "ordered", 0.25, Some(32)),
    ] {
        let repeats = opts.repeats(7);
        let (mut ours, mut raw) = (Vec::new(), Vec::new());
        for _ in 0..repeats {
            let t = Instant::now();
            assert_eq!(raw_stream(m, k).await, total);
            raw.push(total as f64 / t.elapsed().as_secs_f64());
            ours.push(run(mode, capacity).await);
        }
        let mut params = json!({ "mode": name, "tasks": m, "tokens_per_task": k, "items": total });
        if mode != MergeMode::AsCompleted {
            params["task_channel_capacity"] = json!(capacity.unwrap_or(4));
        }
        let measurement = Measurement::new("merge", params, "items_per_s")
            .samples(ours)
            .baseline("raw_mpsc", raw);
        match capacity {
            None => measurement.target_ratio(Target::AtLeast(target)).emit(),
            Some(_) => measurement.emit(),
        };
    }
}

/// How long the first item of a 10k-task run takes to reach the consumer.
pub(crate) async fn first_item(opts: &Opts) {
    let n = 10_000;
    let rt = Runtime::new();
    let graph = two_steps(None);
    tributary_map(&rt, &graph, 1_000).await;
    bare_map(1_000, None).await;
    let repeats = opts.repeats(15);
    let (mut ours, mut bare) = (Vec::new(), Vec::new());
    for _ in 0..repeats {
        let g = graph.clone();
        let tasks = (0..n).map(move |i| {
            TaskSpec::new(i.to_string(), g.clone()).state(tributary::State::new().set("n", i))
        });
        let t = Instant::now();
        let (handle, mut stream) = rt.run(TaskSource::iter(tasks), RunConfig::new());
        let first = stream.next().await;
        ours.push(ms(t));
        assert!(first.is_some());
        drop(stream);
        handle.cancel().await;

        let t = Instant::now();
        let (tx, mut rx) = mpsc::channel::<BareItem>(CHANNEL);
        let spawner = tokio::spawn(async move {
            let mut set = tokio::task::JoinSet::new();
            for i in 0..n {
                let tx = tx.clone();
                set.spawn(async move {
                    for seq in 0..2 {
                        let item = BareItem {
                            index: i,
                            seq,
                            last: seq == 1,
                            value: json!({ "n": i + seq + 1 }),
                        };
                        if tx.send(item).await.is_err() {
                            return;
                        }
                    }
                });
            }
            set
        });
        let first = rx.recv().await;
        bare.push(ms(t));
        assert!(first.is_some());
        drop(rx);
        let mut set = spawner.await.expect("the spawner finishes");
        set.abort_all();
        while set.join_next().await.is_some() {}
    }
    Measurement::new("first_item", json!({ "n": n }), "ms")
        .samples(ours)
        .baseline("bare_tokio", bare)
        // The light task path's target (an earlier one was 1 ms).
        .target_median(Target::AtMost(0.5))
        .emit();
}
