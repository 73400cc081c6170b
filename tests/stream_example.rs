//! Runs the `streams_dispatch` example's logic to completion.

#[allow(dead_code, unreachable_pub)]
#[path = "../examples/streams_dispatch.rs"]
mod streams_dispatch;

use crate::stream_support::{TempDir, WAIT};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dispatcher_routes_chunks_it_never_reads_and_workers_resolve_them() {
    let dir = TempDir::new();
    let summary = tokio::time::timeout(
        WAIT,
        streams_dispatch::run(12, 256 * 1024, 3, &dir.0.join("store")),
    )
    .await
    .expect("the example finishes")
    .unwrap();
    assert_eq!(summary.per_worker, [4, 4, 4]);
    assert_eq!(summary.bytes_resolved, 12 * 256 * 1024);
    assert_eq!(summary.bytes_seen_by_dispatcher, 0);
    assert_eq!(summary.objects_left, 0);
}
