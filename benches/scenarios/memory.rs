//! Memory: bytes per suspended subgraph, and peak memory of a 1M-task run
//! with a slow consumer. Each measurement runs in a child process of its
//! own (the runner re-executed with `--child`), so that its peak RSS is its
//! own.

use std::time::Duration;

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tributary::{ItemKind, RunConfig, Runtime, State, TaskSource, TaskSpec};

use crate::Opts;
use crate::report::{Measurement, Target, proc_status_kb};
use crate::scenarios::control::waiter;
use crate::workloads::two_steps;

const SUSPENDED: u64 = 100_000;

/// Run the runner again as a child measuring `what`; its last stdout line
/// is its JSON answer.
pub(crate) fn child(what: &str, n: u64) -> Value {
    let exe = std::env::current_exe().expect("the runner's path");
    let out = std::process::Command::new(exe)
        .args(["--child", what, &n.to_string()])
        .output()
        .expect("the child runs");
    assert!(
        out.status.success(),
        "child {what} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().expect("the child answers");
    serde_json::from_str(last).expect("the child answers JSON")
}

/// Bytes per suspended subgraph with 100k alive, against bare tasks.
pub(crate) fn suspended(opts: &Opts) {
    let repeats = opts.repeats(5);
    let (mut ours, mut bare, mut hwm) = (Vec::new(), Vec::new(), 0);
    for _ in 0..repeats {
        let c = child("suspended-tributary", SUSPENDED);
        ours.push(c["bytes_per_task"].as_f64().expect("a number"));
        hwm = hwm.max(c["hwm_kb"].as_u64().unwrap_or(0));
        let c = child("suspended-bare", SUSPENDED);
        bare.push(c["bytes_per_task"].as_f64().expect("a number"));
    }
    Measurement::new(
        "memory_suspended",
        json!({ "alive": SUSPENDED }),
        "bytes_per_subgraph",
    )
    .samples(ours)
    .baseline("bare_tokio_task", bare)
    // The light task path's target, 1.5 KB (an earlier one was 2 KB).
    .target_median(Target::AtMost(1536.0))
    .peak_rss_kb(hwm)
    .emit();
}

/// Peak RSS of a 1M-task run whose consumer is slow: it must stay bounded
/// (the peak at the end no higher than the peak after a tenth of the run,
/// plus a margin for allocator noise).
pub(crate) fn slow_consumer(opts: &Opts) {
    let n = 1_000_000;
    let c = child("slow-consumer", n);
    let early = c["hwm_kb_at_10pct"].as_u64().unwrap_or(0) as f64;
    let end = c["hwm_kb_at_end"].as_u64().unwrap_or(0) as f64;
    let _ = opts;
    Measurement::new(
        "memory_slow_consumer",
        json!({ "tasks": n, "mailbox": 256, "budget": tributary::DEFAULT_MAX_CONCURRENCY }),
        "peak_growth_ratio",
    )
    .samples(vec![end / early])
    .target_median(Target::AtMost(1.25))
    .peak_rss_kb(end as u64)
    .extra("child", c)
    .emit();
}

/// The child's side: measure and print one JSON line.
pub(crate) async fn run_child(what: &str, n: u64) -> Value {
    match what {
        "suspended-tributary" => {
            let rt = Runtime::builder().unlimited().build();
            let graph = waiter();
            // Warm up: the runtime's threads, timers and allocator pools.
            warm(&rt).await;
            let before = proc_status_kb("VmRSS");
            let g = graph.clone();
            let tasks = (0..n).map(move |i| TaskSpec::new(i.to_string(), g.clone()));
            let (handle, stream) = rt.run(TaskSource::iter(tasks), RunConfig::new());
            handle
                .progress()
                .wait_for(|p| p.running == n)
                .await
                .expect("the run is live");
            tokio::time::sleep(Duration::from_millis(100)).await;
            let after = proc_status_kb("VmRSS");
            handle.cancel().await;
            drop(stream);
            json!({
                "bytes_per_task": after.saturating_sub(before) as f64 * 1024.0 / n as f64,
                "hwm_kb": proc_status_kb("VmHWM"),
            })
        }
        "suspended-bare" => {
            let before = proc_status_kb("VmRSS");
            let root = CancellationToken::new();
            let tracker = TaskTracker::new();
            let (tx, mut rx) = tokio::sync::mpsc::channel::<u64>(256);
            for i in 0..n {
                let token = root.child_token();
                let tx = tx.clone();
                let state = State::new().set("n", i);
                tracker.spawn(async move {
                    token.cancelled().await;
                    let _ = tx.send(state.len() as u64).await;
                });
            }
            drop(tx);
            tokio::time::sleep(Duration::from_millis(100)).await;
            let after = proc_status_kb("VmRSS");
            root.cancel();
            while rx.recv().await.is_some() {}
            tracker.close();
            tracker.wait().await;
            json!({ "bytes_per_task": after.saturating_sub(before) as f64 * 1024.0 / n as f64 })
        }
        "slow-consumer" => {
            let rt = Runtime::new();
            let g = two_steps(None);
            let tasks = (0..n).map(move |i| {
                TaskSpec::new(i.to_string(), g.clone()).state(State::new().set("n", i))
            });
            let (_handle, mut stream) = rt.run(TaskSource::iter(tasks), RunConfig::new());
            let (mut finals, mut items) = (0u64, 0u64);
            let mut marks = Vec::new();
            while let Some(item) = stream.next().await {
                items += 1;
                if item.kind == ItemKind::Final {
                    finals += 1;
                    if finals == n / 10 || finals == n / 2 {
                        marks.push(proc_status_kb("VmHWM"));
                    }
                }
                // A slow consumer: a pause every thousand items.
                if items % 1_000 == 0 {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
            assert_eq!(finals, n);
            json!({
                "hwm_kb_at_10pct": marks.first(),
                "hwm_kb_at_50pct": marks.get(1),
                "hwm_kb_at_end": proc_status_kb("VmHWM"),
                "items": items,
            })
        }
        other => panic!("unknown child measurement {other}"),
    }
}

async fn warm(rt: &Runtime) {
    let g = two_steps(None);
    crate::workloads::tributary_map(rt, &g, 10_000).await;
}
