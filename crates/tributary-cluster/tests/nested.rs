//! Children of parallel actions on the fleet (in-process broker): they go
//! to the task queue like the run's own tasks, their items reach the
//! caller under their parent's path, and a waiting parent holds no slot.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::json;
use tokio_util::sync::CancellationToken;
use tributary_cluster::{ClusterOptions, ClusterRuntime, Graphs, MemoryBroker, Worker};
use tributary_core::{Graph, State, action};
use tributary_runtime::{
    ItemKind, ParallelAction, RunConfig, StreamItem, Subgraph, TaskPath, TaskSpec,
};

fn fast() -> ClusterOptions {
    ClusterOptions::new()
        .heartbeat(Duration::from_millis(50))
        .alive_interval(Duration::from_millis(100))
        .unknown_graph_wait(Duration::from_millis(500))
}

/// One step: a token, then `n * n`.
fn square() -> Graph {
    Graph::single(
        action("square")
            .reads(["n"])
            .writes(["n"])
            .run(|s: State, _, ctx| async move {
                let n: i64 = s.get_as("n")?;
                ctx.emit(json!({ "n": n })).await?;
                Ok((json!({ "n": n * n }), s.set("n", n * n)))
            }),
    )
}

/// A parallel action over the named graph `child`, one child per element
/// of `ns`; the reduce sums the children's `n`s into `sum`.
fn fan(child: &str) -> Graph {
    Graph::single(
        ParallelAction::map_states("fan", Subgraph::named(child), |s: &State, _| {
            let ns: Vec<serde_json::Value> = s.get_as("ns")?;
            Ok(ns
                .into_iter()
                .map(|n| match n {
                    serde_json::Value::Array(_) => State::new().set("ns", n),
                    n => State::new().set("n", n),
                })
                .collect::<Vec<_>>())
        })
        .reads(["ns"])
        .writes(["sum"])
        .reduce(|s, outcomes| {
            let mut sum = 0;
            for o in &outcomes {
                let child = o.state().ok_or("a child did not complete")?;
                sum += child
                    .get("n")
                    .or_else(|| child.get("sum"))
                    .and_then(serde_json::Value::as_i64)
                    .ok_or("a child has no number")?;
            }
            Ok(s.set("sum", sum))
        })
        .build(),
    )
}

/// Step counters of the `busy` graph: a task's `n` picks its counter.
#[derive(Clone)]
struct Ticks(Arc<Vec<AtomicU64>>);

impl Ticks {
    fn new(counters: usize) -> Self {
        Ticks(Arc::new((0..counters).map(|_| AtomicU64::new(0)).collect()))
    }

    fn get(&self, i: usize) -> u64 {
        self.0[i].load(Ordering::SeqCst)
    }

    fn total(&self) -> u64 {
        (0..self.0.len()).map(|i| self.get(i)).sum()
    }

    /// Wait until `count` reaches `n` (at most 20 s).
    async fn wait(&self, what: &str, n: u64, count: impl Fn(&Self) -> u64) {
        let started = std::time::Instant::now();
        while count(self) < n {
            assert!(started.elapsed() < Duration::from_secs(20), "{what} stalls");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Steps forever, 10 ms each, counting every step in counter `n`.
    fn busy(&self) -> Graph {
        let ticks = self.clone();
        Graph::builder()
            .action(action("tick").reads(["n"]).writes([] as [&str; 0]).run(
                move |s: State, _, _| {
                    let ticks = ticks.clone();
                    async move {
                        let n: usize = s.get_as("n")?;
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        ticks.0[n].fetch_add(1, Ordering::SeqCst);
                        Ok((json!({}), s))
                    }
                },
            ))
            .transition("tick", "tick", tributary_core::default())
            .entrypoint("tick")
            .build()
            .unwrap()
    }
}

async fn worker(
    broker: &MemoryBroker,
    graphs: Graphs,
    concurrency: usize,
) -> (
    CancellationToken,
    tokio::task::JoinHandle<Arc<tributary_cluster::WorkerStats>>,
) {
    let worker = Worker::builder(broker.clone(), graphs)
        .options(fast())
        .concurrency(concurrency)
        .build()
        .unwrap();
    let stop = CancellationToken::new();
    let run = worker.run(stop.clone().cancelled_owned());
    (stop, tokio::spawn(async move { run.await.unwrap() }))
}

async fn collect(mut stream: tributary_runtime::RunStream) -> Vec<StreamItem> {
    let mut items = Vec::new();
    while let Some(item) = stream.next().await {
        items.push(item);
    }
    items
}

fn path(keys: &[&str]) -> TaskPath {
    keys.iter().copied().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn children_run_on_the_fleet_and_a_waiting_parent_gives_back_its_slot() {
    let broker = MemoryBroker::new();
    // One slot: the children can run only if the parent gives its slot back
    // while it waits for them.
    let graphs = Graphs::new()
        .register("fan", fan("square"))
        .unwrap()
        .register("square", square())
        .unwrap();
    let (stop, fleet) = worker(&broker, graphs, 1).await;
    let caller = ClusterRuntime::new(broker).options(fast()).unwrap();
    let task = TaskSpec::named("p", "fan").state(State::new().set("ns", json!([1, 2, 3, 4])));
    let (_h, stream) = caller.run(vec![task], RunConfig::new());
    let items = tokio::time::timeout(Duration::from_secs(20), collect(stream))
        .await
        .expect("a waiting parent must not keep its children from the worker's only slot");

    let last = items.last().unwrap();
    assert_eq!(last.kind, ItemKind::Final, "{items:#?}");
    assert_eq!(last.path, path(&["p"]));
    assert_eq!(
        last.state_update.as_ref().unwrap().get("sum"),
        Some(&json!(30))
    );
    // Every child's token and end arrive under the parent's path, once.
    for (j, n) in [1, 2, 3, 4].into_iter().enumerate() {
        let key = j.to_string();
        let child: Vec<&StreamItem> = items
            .iter()
            .filter(|i| i.path == path(&["p", &key]))
            .collect();
        let kinds: Vec<ItemKind> = child.iter().map(|i| i.kind).collect();
        assert_eq!(kinds, [ItemKind::Token, ItemKind::Final], "child {key}");
        assert_eq!(child[0].result, Some(json!({ "n": n })));
        assert_eq!(child[1].result, Some(json!({ "n": n * n })));
        // Its app id is the stable child id, as for a local child.
        assert_ne!(&*child[1].app_id, &*last.app_id);
    }
    stop.cancel();
    let stats = fleet.await.unwrap();
    // The parent and its four children were each claimed from the queue.
    assert_eq!(stats.claimed(), 5);
    assert_eq!(stats.completed(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grandchildren_are_distributed_too() {
    let broker = MemoryBroker::new();
    let graphs = Graphs::new()
        .register("outer", fan("fan"))
        .unwrap()
        .register("fan", fan("square"))
        .unwrap()
        .register("square", square())
        .unwrap();
    let (stop, fleet) = worker(&broker, graphs, 1).await;
    let caller = ClusterRuntime::new(broker).options(fast()).unwrap();
    let task = TaskSpec::named("top", "outer").state(State::new().set("ns", json!([[1, 2], [3]])));
    let (_h, stream) = caller.run(
        vec![task],
        RunConfig::new().intermediate_stream_outputs(false),
    );
    let items = tokio::time::timeout(Duration::from_secs(30), collect(stream))
        .await
        .expect("two levels of waiting parents on one slot");
    let last = items.last().unwrap();
    assert_eq!(last.kind, ItemKind::Final, "{items:#?}");
    assert_eq!(
        last.state_update.as_ref().unwrap().get("sum"),
        Some(&json!(14))
    );
    let mut finals: Vec<String> = items
        .iter()
        .filter(|i| i.kind == ItemKind::Final && i.is_nested())
        .map(|i| i.path.to_string())
        .collect();
    finals.sort();
    let mut want: Vec<String> = [
        path(&["top", "0"]),
        path(&["top", "0", "0"]),
        path(&["top", "0", "1"]),
        path(&["top", "1"]),
        path(&["top", "1", "0"]),
    ]
    .iter()
    .map(ToString::to_string)
    .collect();
    want.sort();
    assert_eq!(finals, want);
    // No tokens asked for: none relayed from any level.
    assert!(items.iter().all(|i| i.kind != ItemKind::Token));
    stop.cancel();
    assert_eq!(fleet.await.unwrap().claimed(), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_tasks_named_children_run_on_the_fleet() {
    let broker = MemoryBroker::new();
    // The caller does not know `square`: only the worker does.
    let graphs = Graphs::new().register("square", square()).unwrap();
    let (stop, fleet) = worker(&broker, graphs, 2).await;
    let caller = ClusterRuntime::new(broker).options(fast()).unwrap();
    let task = TaskSpec::new("here", fan("square")).state(State::new().set("ns", json!([5, 6])));
    let (_h, stream) = caller.run(vec![task], RunConfig::new());
    let items = tokio::time::timeout(Duration::from_secs(20), collect(stream))
        .await
        .unwrap();
    let last = items.last().unwrap();
    assert_eq!(last.kind, ItemKind::Final, "{items:#?}");
    assert_eq!(
        last.state_update.as_ref().unwrap().get("sum"),
        Some(&json!(61))
    );
    stop.cancel();
    assert_eq!(fleet.await.unwrap().claimed(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_parent_stops_its_children_on_the_workers() {
    let broker = MemoryBroker::new();
    let ticks = Ticks::new(4);
    let graphs = Graphs::new()
        .register("fan", fan("busy"))
        .unwrap()
        .register("busy", ticks.busy())
        .unwrap();
    let (stop, fleet) = worker(&broker, graphs, 2).await;
    let caller = ClusterRuntime::new(broker).options(fast()).unwrap();
    let task = TaskSpec::named("p", "fan").state(State::new().set("ns", json!([1, 2, 3])));
    let (handle, mut stream) = caller.run(vec![task], RunConfig::new());
    let consumer = tokio::spawn(async move {
        let mut items = Vec::new();
        while let Some(item) = stream.next().await {
            items.push(item);
        }
        items
    });
    // Every child steps (two slots: the parent gave its own back).
    ticks.wait("the children", 30, Ticks::total).await;
    tokio::time::timeout(Duration::from_secs(20), handle.cancel())
        .await
        .expect("cancel resolves once every remote task stopped");
    let after = ticks.total();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        ticks.total(),
        after,
        "a child stepped after cancel() resolved"
    );
    let items = consumer.await.unwrap();
    let last = items.last().unwrap();
    assert_eq!(last.path, path(&["p"]));
    assert_eq!(last.kind, ItemKind::Cancelled, "{items:#?}");
    stop.cancel();
    fleet.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_distributed_child_is_paused_resumed_and_cancelled_by_its_path() {
    let broker = MemoryBroker::new();
    let ticks = Ticks::new(2);
    let graphs = Graphs::new()
        .register("fan", fan("busy"))
        .unwrap()
        .register("busy", ticks.busy())
        .unwrap();
    let (stop, fleet) = worker(&broker, graphs, 4).await;
    let caller = ClusterRuntime::new(broker).options(fast()).unwrap();
    let task = TaskSpec::named("p", "fan").state(State::new().set("ns", json!([0, 1])));
    let (handle, mut stream) = caller.run(
        vec![task],
        RunConfig::new().intermediate_stream_outputs(false),
    );
    let consumer = tokio::spawn(async move {
        let mut items = Vec::new();
        while let Some(item) = stream.next().await {
            items.push(item);
        }
        items
    });
    ticks.wait("child 0", 5, |t| t.get(0)).await;
    ticks.wait("child 1", 5, |t| t.get(1)).await;

    // Pause child 0 only: it stops, child 1 goes on.
    handle.pause_task(["p", "0"]).unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let paused_at = ticks.get(0);
    let other = ticks.get(1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(ticks.get(0), paused_at, "child 0 is paused");
    assert!(ticks.get(1) > other + 5, "child 1 runs on");

    // Resume it.
    handle.resume_task(["p", "0"]).unwrap();
    ticks.wait("child 0", paused_at + 5, |t| t.get(0)).await;

    // Cancel child 1 only: it ends cancelled, the parent waits on child 0.
    handle.cancel_task(["p", "1"]).unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let cancelled_at = ticks.get(1);
    let zero = ticks.get(0);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(ticks.get(1), cancelled_at, "child 1 stopped");
    assert!(ticks.get(0) > zero, "child 0 runs on");
    // A path below a remote task that does not exist there is accepted and
    // does nothing; a path below no task at all is unknown.
    assert!(handle.cancel_task(["nowhere", "0"]).is_err());

    tokio::time::timeout(Duration::from_secs(20), handle.cancel())
        .await
        .unwrap();
    let items = consumer.await.unwrap();
    let one: Vec<&StreamItem> = items
        .iter()
        .filter(|i| i.path == path(&["p", "1"]) && i.is_terminal())
        .collect();
    assert_eq!(one.len(), 1, "{items:#?}");
    assert_eq!(one[0].kind, ItemKind::Cancelled);
    stop.cancel();
    fleet.await.unwrap();
}

/// A remote task that streams nothing (no node items, no tokens asked for)
/// still hears its pause: the caller waits on the task's own gate, made
/// before its first pause.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_remote_task_is_paused_by_pause_task() {
    let broker = MemoryBroker::new();
    let ticks = Ticks::new(1);
    let (stop, fleet) = worker(
        &broker,
        Graphs::new().register("busy", ticks.busy()).unwrap(),
        2,
    )
    .await;
    let caller = ClusterRuntime::new(broker).options(fast()).unwrap();
    let (handle, stream) = caller.run(
        vec![TaskSpec::named("b", "busy").state(State::new().set("n", 0))],
        RunConfig::new()
            .intermediate_nodes(false)
            .intermediate_stream_outputs(false),
    );
    let consumer = tokio::spawn(collect(stream));
    ticks.wait("the task", 5, Ticks::total).await;
    handle.pause_task("b").unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let paused_at = ticks.total();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(ticks.total(), paused_at, "the task is paused");
    handle.resume_task("b").unwrap();
    ticks
        .wait("the resumed task", paused_at + 5, Ticks::total)
        .await;
    tokio::time::timeout(Duration::from_secs(20), handle.cancel())
        .await
        .unwrap();
    let items = consumer.await.unwrap();
    assert_eq!(items.last().unwrap().kind, ItemKind::Cancelled);
    stop.cancel();
    fleet.await.unwrap();
}

/// Children that carry their graph run on the parent's worker: the parent
/// keeps its slot while they run, so the worker's concurrency still bounds
/// its work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parent_whose_children_run_locally_keeps_its_slot() {
    let broker = MemoryBroker::new();
    let running = Arc::new(AtomicU64::new(0));
    let most = Arc::new(AtomicU64::new(0));
    let (r1, m1, r2) = (
        Arc::clone(&running),
        Arc::clone(&most),
        Arc::clone(&running),
    );
    let nap = Subgraph::action(action("nap").run(|s: State, _, _| async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        Ok((json!({}), s))
    }));
    let parent = Graph::builder()
        .action(action("enter").run(move |s: State, _, _| {
            let (running, most) = (Arc::clone(&r1), Arc::clone(&m1));
            async move {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                Ok((json!({}), s))
            }
        }))
        .action(
            ParallelAction::map_states("local", nap, |_: &State, _| {
                Ok(vec![State::new(), State::new()])
            })
            .build(),
        )
        .action(action("leave").run(move |s: State, _, _| {
            let running = Arc::clone(&r2);
            async move {
                running.fetch_sub(1, Ordering::SeqCst);
                Ok((json!({}), s))
            }
        }))
        .transition("enter", "local", tributary_core::default())
        .transition("local", "leave", tributary_core::default())
        .entrypoint("enter")
        .build()
        .unwrap();
    let (stop, fleet) = worker(
        &broker,
        Graphs::new().register("parent", parent).unwrap(),
        1,
    )
    .await;
    let caller = ClusterRuntime::new(broker).options(fast()).unwrap();
    let tasks: Vec<TaskSpec> = (0..3)
        .map(|i| TaskSpec::named(format!("p{i}"), "parent"))
        .collect();
    let (_h, stream) = caller.run(tasks, RunConfig::new());
    let items = tokio::time::timeout(Duration::from_secs(20), collect(stream))
        .await
        .unwrap();
    let finals = items
        .iter()
        .filter(|i| i.kind == ItemKind::Final && !i.is_nested())
        .count();
    assert_eq!(finals, 3);
    assert_eq!(
        most.load(Ordering::SeqCst),
        1,
        "a one-slot worker ran two parents at once"
    );
    stop.cancel();
    fleet.await.unwrap();
}
