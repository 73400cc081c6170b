//! Workloads alone in a child process, for profilers:
//! `tributary-bench --child map-cpu 10000` under `valgrind --tool=callgrind`
//! or `perf record`.

use serde_json::{Value, json};
use tributary::Runtime;

use crate::workloads::{bare_map, tributary_map, two_steps};

/// Whether `what` names a profiling child.
pub(crate) fn is_profile(what: &str) -> bool {
    matches!(what, "map-cpu" | "map-cpu-unlimited" | "map-cpu-bare")
}

/// Run the workload `what` once with `n` subgraphs; answer its timing.
pub(crate) async fn run(what: &str, n: u64) -> Value {
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
