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

async fn fleet(
    broker: &MemoryBroker,
    graphs: Graphs,
) -> (CancellationToken, tokio::task::JoinHandle<()>) {
    let worker = Worker::builder(broker.clone(), graphs)
        .options(fast())
        .build()
        .unwrap();
    let stop = CancellationToken::new();
    let run = worker.run(stop.clone().cancelled_owned());
    let handle = tokio::spawn(async move {
        run.await.unwrap();
    });
    (stop, handle)
}

fn steps() -> Graph {
    let step = action("step")
        .reads(["i"])
        .writes(["i"])
        .run(|s: State, _, ctx| async move {
            let i: i64 = s.get_as("i")?;
            ctx.emit(json!({ "token": i })).await?;
            Ok((json!({ "i": i + 1 }), s.set("i", i + 1)))
        });
    Graph::builder()
        .action(step)
        .transition("step", "step", tributary_core::default())
        .entrypoint("step")
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_naming_a_graph_no_worker_knows_fails_with_a_typed_error() {
    let broker = MemoryBroker::new();
    let (stop, fleet) = fleet(&broker, Graphs::new().register("square", square()).unwrap()).await;
    let caller = ClusterRuntime::new(broker).options(fast()).unwrap();
    let tasks = vec![
        TaskSpec::named("known", "square").state(State::new().set("n", 3)),
        TaskSpec::named("unknown", "nowhere"),
    ];
    let started = std::time::Instant::now();
    let (_h, stream) = caller.run(
        tasks,
        RunConfig::new().failure_policy(tributary_runtime::FailurePolicy::Continue),
    );
    let items = tokio::time::timeout(Duration::from_secs(10), collect(stream))
        .await
        .expect("never hangs");
    let failed = items.iter().find(|i| &*i.task_key == "unknown").unwrap();
    assert_eq!(failed.kind, ItemKind::Failed);
    let error = failed.error.as_ref().unwrap();
    assert_eq!(error.kind, tributary_runtime::TaskErrorKind::UnknownGraph);
    assert!(error.message.contains("nowhere"), "{}", error.message);
    assert!(started.elapsed() < Duration::from_secs(5));
    let known = items.iter().find(|i| &*i.task_key == "known").unwrap();
    assert_eq!(known.kind, ItemKind::Final);
    stop.cancel();
    fleet.await.unwrap();
}

#[tokio::test]
async fn a_named_task_on_a_run_without_an_executor_fails_with_a_typed_error() {
    let (_h, stream) = tributary_runtime::Runtime::new()
        .run(vec![TaskSpec::named("t", "square")], RunConfig::new());
    let items = collect(stream).await;
    assert_eq!(items.len(), 1);
    assert_eq!(items[0].kind, ItemKind::Failed);
    assert_eq!(
        items[0].error.as_ref().unwrap().kind,
        tributary_runtime::TaskErrorKind::UnknownGraph
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_and_nodes_come_back_as_the_run_asks_and_halts_apply_on_the_worker() {
    let broker = MemoryBroker::new();
    let (stop, fleet) = fleet(&broker, Graphs::new().register("steps", steps()).unwrap()).await;
    let caller = ClusterRuntime::new(broker).options(fast()).unwrap();
    let task = || {
        TaskSpec::named("s", "steps")
            .state(State::new().set("i", 0))
            .halt_after(["step"])
    };
    // halt_after the first step: one Final, its token before it.
    let (_h, stream) = caller.run(vec![task()], RunConfig::new());
    let items = collect(stream).await;
    let kinds: Vec<ItemKind> = items.iter().map(|i| i.kind).collect();
    assert_eq!(kinds, [ItemKind::Token, ItemKind::Final]);
    assert_eq!(items[0].result, Some(json!({ "token": 0 })));
    assert_eq!(items[1].result, Some(json!({ "i": 1 })));
    // Without tokens, only the end.
    let (_h, stream) = caller.run(
        vec![task()],
        RunConfig::new().intermediate_stream_outputs(false),
    );
    let kinds: Vec<ItemKind> = collect(stream).await.iter().map(|i| i.kind).collect();
    assert_eq!(kinds, [ItemKind::Final]);
    stop.cancel();
    fleet.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_task_message_goes_to_the_dead_letters() {
    use tributary_cluster::Broker;
    use tributary_queue::QueueOptions;
    let broker = MemoryBroker::new();
    let (stop, fleet) = fleet(&broker, Graphs::new().register("square", square()).unwrap()).await;
    let tasks = broker
        .queue("tributary-tasks", QueueOptions::default())
        .await
        .unwrap();
    tasks.publish("not json".into(), None).await.unwrap();
    let started = std::time::Instant::now();
    loop {
        let dead = tasks.dead_letters("workers").await.unwrap_or_default();
        if let Some(letter) = dead.first() {
            assert!(
                letter
                    .last_error
                    .as_deref()
                    .unwrap_or_default()
                    .contains("malformed"),
                "{letter:?}"
            );
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "dead-lettered in time"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.cancel();
    fleet.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zip_rounds_and_add_task_work_as_locally() {
    let broker = MemoryBroker::new();
    let (stop, fleet) = fleet(&broker, Graphs::new().register("steps", steps()).unwrap()).await;
    let caller = ClusterRuntime::new(broker).options(fast()).unwrap();
    let task = |k: &str| {
        TaskSpec::named(k, "steps")
            .state(State::new().set("i", 0))
            .halt_after(["step"])
    };
    // The source stays open until `c` is added, so the run cannot end first.
    let (more, rx) = tokio::sync::mpsc::unbounded_channel::<TaskSpec>();
    more.send(task("a")).unwrap();
    more.send(task("b")).unwrap();
    let source =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|t| (t, rx)) });
    let (handle, mut stream) = caller.run(
        tributary_runtime::TaskSource::stream(source),
        RunConfig::new().merge_mode(tributary_runtime::MergeMode::Zip),
    );
    handle.add_task(task("c")).unwrap();
    drop(more);
    let mut finals = Vec::new();
    while let Some(item) = stream.next().await {
        if item.kind == ItemKind::Final {
            finals.push(item.task_key.to_string());
        }
    }
    finals.sort();
    assert_eq!(finals, ["a", "b", "c"]);
    stop.cancel();
    fleet.await.unwrap();
}

/// Counts `i` up to 3, one step at a time.
fn count_to_three() -> Graph {
    let step = action("step")
        .reads(["i"])
        .writes(["i", "done"])
        .run(|s: State, _, _| async move {
            let i: i64 = s.get_as("i")?;
            Ok((
                json!({ "i": i + 1 }),
                s.set("i", i + 1).set("done", i + 1 >= 3),
            ))
        });
    Graph::builder()
        .action(step)
        .transition("step", "step", tributary_core::when("done", false))
        .entrypoint("step")
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_checkpointed_by_an_earlier_owner_but_never_reported_is_reported_by_the_next() {
    use std::sync::Arc;
    use tributary_core::{Checkpoint, InMemoryPersister, Persister, StepStatus};

    // An earlier owner (claim 1) saved step 0 and stopped before saying so.
    let persister = Arc::new(InMemoryPersister::new());
    let mut step0 = Checkpoint::new(
        "counted",
        0,
        "step",
        StepStatus::Completed,
        State::new().set("i", 1).set("done", false),
    );
    step0.result = Some(json!({ "i": 1 }));
    persister.save_fenced(&step0, 1).await.unwrap();

    let broker = MemoryBroker::new();
    let worker = Worker::builder(
        broker.clone(),
        Graphs::new().register("count", count_to_three()).unwrap(),
    )
    .persister(persister.clone())
    .options(fast())
    .build()
    .unwrap();
    let stop = CancellationToken::new();
    let fleet = tokio::spawn(worker.run(stop.clone().cancelled_owned()));
    let caller = ClusterRuntime::new(broker).options(fast()).unwrap();
    let task = TaskSpec::named("c", "count")
        .app_id("counted")
        .state(State::new().set("i", 0).set("done", false));
    let (_h, stream) = caller.run(vec![task], RunConfig::new());
    let items = collect(stream).await;
    let nodes: Vec<i64> = items
        .iter()
        .filter(|i| i.kind == ItemKind::NodeComplete)
        .map(|i| i.state_update.as_ref().unwrap().get_as::<i64>("i").unwrap())
        .collect();
    assert_eq!(
        nodes,
        [1, 2],
        "step 0's node item comes from its checkpoint"
    );
    let end = items.last().unwrap();
    assert_eq!(end.kind, ItemKind::Final);
    assert_eq!(
        end.state_update
            .as_ref()
            .unwrap()
            .get_as::<i64>("i")
            .unwrap(),
        3
    );
    stop.cancel();
    fleet.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_whose_checkpoint_is_its_end_reports_only_its_end() {
    use std::sync::Arc;
    use tributary_core::{Checkpoint, InMemoryPersister, Persister, StepStatus};

    let persister = Arc::new(InMemoryPersister::new());
    for (seq, i) in [(0u64, 1i64), (1, 2), (2, 3)] {
        let mut cp = Checkpoint::new(
            "finished",
            seq,
            "step",
            StepStatus::Completed,
            State::new().set("i", i).set("done", i >= 3),
        );
        cp.result = Some(json!({ "i": i }));
        persister.save_fenced(&cp, 1).await.unwrap();
    }
    let broker = MemoryBroker::new();
    let worker = Worker::builder(
        broker.clone(),
        Graphs::new().register("count", count_to_three()).unwrap(),
    )
    .persister(persister.clone())
    .options(fast())
    .build()
    .unwrap();
    let stop = CancellationToken::new();
    let fleet = tokio::spawn(worker.run(stop.clone().cancelled_owned()));
    let caller = ClusterRuntime::new(broker).options(fast()).unwrap();
    let task = TaskSpec::named("c", "count")
        .app_id("finished")
        .state(State::new().set("i", 0).set("done", false));
    let (_h, stream) = caller.run(vec![task], RunConfig::new());
    let kinds: Vec<ItemKind> = collect(stream).await.iter().map(|i| i.kind).collect();
    assert_eq!(kinds, [ItemKind::Final]);
    stop.cancel();
    fleet.await.unwrap().unwrap();
}
