//! The cluster on the in-process broker: the protocol end to end.

use std::time::Duration;

use serde_json::json;
use tokio_util::sync::CancellationToken;
use tributary_cluster::{ClusterOptions, ClusterRuntime, Graphs, MemoryBroker, Worker};
use tributary_core::{Graph, State, action};
use tributary_runtime::{ItemKind, RunConfig, StreamItem, TaskSpec};

fn square() -> Graph {
    Graph::single(
        action("square")
            .reads(["n"])
            .writes(["n"])
            .run(|s: State, _, _| async move {
                let n: i64 = s.get_as("n")?;
                Ok((json!({ "n": n * n }), s.set("n", n * n)))
            }),
    )
}

fn fast() -> ClusterOptions {
    ClusterOptions::new()
        .heartbeat(Duration::from_millis(50))
        .alive_interval(Duration::from_millis(100))
        .unknown_graph_wait(Duration::from_millis(500))
}

async fn collect(mut stream: tributary_runtime::RunStream) -> Vec<StreamItem> {
    let mut items = Vec::new();
    while let Some(item) = stream.next().await {
        items.push(item);
    }
    items
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn named_tasks_run_on_a_worker_and_come_back_in_order() {
    let broker = MemoryBroker::new();
    let graphs = Graphs::new().register("square", square()).unwrap();
    let worker = Worker::builder(broker.clone(), graphs)
        .options(fast())
        .build()
        .unwrap();
    let stop = CancellationToken::new();
    let fleet = tokio::spawn(worker.run(stop.clone().cancelled_owned()));
    let tasks: Vec<_> = (0..20)
        .map(|i| TaskSpec::named(format!("t{i}"), "square").state(State::new().set("n", i)))
        .collect();
    let caller = ClusterRuntime::new(broker).options(fast()).unwrap();
    let (_handle, stream) = caller.run(tasks, RunConfig::new());
    let items = collect(stream).await;
    for item in &items {
        assert_eq!(item.kind, ItemKind::Final, "{item:?}");
    }
    let mut got: Vec<i64> = items
        .iter()
        .map(|i| i.result.as_ref().unwrap()["n"].as_i64().unwrap())
        .collect();
    got.sort_unstable();
    let want: Vec<i64> = (0..20).map(|i| i * i).collect();
    assert_eq!(got, want);
    stop.cancel();
    let stats = fleet.await.unwrap().unwrap();
    assert_eq!(stats.completed(), 20);
}
