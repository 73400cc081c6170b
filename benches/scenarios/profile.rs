//! Workloads alone in a child process, for profilers:
//! `tributary-bench --child map-cpu 10000` under `valgrind --tool=callgrind`
//! or `perf record`.

use serde_json::{Value, json};
use tributary::Runtime;

use crate::workloads::{bare_map, tributary_map, two_steps};

/// Whether `what` names a profiling child.
pub(crate) fn is_profile(what: &str) -> bool {
    matches!(
        what,
        "map-cpu" | "map-cpu-unlimited" | "map-cpu-bare" | "cancel"
    )
}

/// Run the workload `what` once with `n` subgraphs; answer its timing.
pub(crate) async fn run(what: &str, n: u64) -> Value {
    if what == "cancel" {
        return cancel(n).await;
    }
    let t = std::time::Instant::now();
    let finals = match what {
        "map-cpu" => tributary_map(&Runtime::new(), &two_steps(None), n as usize).await,
        "map-cpu-unlimited" => {
            let rt = Runtime::builder().unlimited().build();
            tributary_map(&rt, &two_steps(None), n as usize).await
        }
        "map-cpu-bare" => bare_map(n as usize, None).await,
        other => panic!("unknown profiling child {other}"),
    }
    .finals;
    json!({ "us_per_subgraph": t.elapsed().as_secs_f64() * 1e6 / n as f64, "finals": finals })
}

/// `n` tasks waiting in an action, then `cancel()`. Prints `ready` on
/// stderr once they all run and cancels when the file named by
/// `TRIBUTARY_BENCH_GO` exists (if set), so that a profiler can be switched
/// on for the cancellation alone (`callgrind_control -i on`).
async fn cancel(n: u64) -> Value {
    use tributary::{RunConfig, TaskSource, TaskSpec};
    let rt = Runtime::builder().unlimited().build();
    let g = crate::scenarios::control::waiter();
    let tasks = (0..n).map(move |i| TaskSpec::new(i.to_string(), g.clone()));
    let (handle, stream) = rt.run(TaskSource::iter(tasks), RunConfig::new());
    handle
        .progress()
        .wait_for(|p| p.running == n)
        .await
        .expect("the run is live");
    eprintln!("ready");
    if let Some(go) = std::env::var_os("TRIBUTARY_BENCH_GO") {
        while !std::path::Path::new(&go).exists() {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }
    let t = std::time::Instant::now();
    handle.cancel().await;
    let ms = t.elapsed().as_secs_f64() * 1e3;
    drop(stream);
    json!({ "cancel_ms": ms })
}
