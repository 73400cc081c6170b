//! The cluster executor against real brokers and real worker processes:
//! each check is a function run on Redis Streams and on NATS JetStream
//! (`cluster_redis`, `cluster_nats`). Checkpoints go to a `RedisPersister`.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::json;
use tributary::{
    CancelReason, Graph, ItemKind, MergeMode, QuickExit, RunConfig, Runtime, State, StreamItem,
    TaskSpec, action,
};

use crate::cluster_support::{Backend, Cluster, WAIT, collect, config};

fn square_local() -> Graph {
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

fn finals(items: &[StreamItem]) -> BTreeMap<String, serde_json::Value> {
    items
        .iter()
        .filter(|i| i.kind == ItemKind::Final)
        .map(|i| (i.task_key.to_string(), i.result.clone().unwrap()))
        .collect()
}

/// `n` tasks over three worker processes end as a local run of the same
/// tasks does, each once.
pub(crate) async fn many_tasks_over_three_workers_match_a_local_run(backend: Backend, n: i64) {
    let mut cluster = Cluster::new(backend, 500);
    for _ in 0..3 {
        cluster.start_worker(64).await;
    }
    let named =
        (0..n).map(|i| TaskSpec::named(format!("t{i}"), "square").state(State::new().set("n", i)));
    let (_h, stream) = cluster.caller().run(named.collect::<Vec<_>>(), config());
    let remote = collect(stream).await;
    let local_tasks = (0..n)
        .map(|i| TaskSpec::new(format!("t{i}"), square_local()).state(State::new().set("n", i)));
    let (_h, stream) = Runtime::new().run(local_tasks.collect::<Vec<_>>(), RunConfig::new());
    let local = collect(stream).await;
    assert_eq!(
        remote.iter().filter(|i| i.is_terminal()).count(),
        usize::try_from(n).unwrap(),
        "one end per task"
    );
    assert_eq!(finals(&remote), finals(&local));
}

/// A worker killed with SIGKILL while it runs tasks: other workers claim
/// them after the lease and resume each from its checkpoint. No finished
/// step runs again (only a step interrupted by the kill may run twice),
/// and every task ends as it would have.
pub(crate) async fn a_killed_workers_tasks_resume_elsewhere_without_redoing_steps(
    backend: Backend,
) {
    let mut cluster = Cluster::new(backend, 200);
    let victim = cluster.start_worker(16).await;
    let steps = 8i64;
    let tasks: Vec<TaskSpec> = (0..4)
        .map(|i| {
            TaskSpec::named(format!("c{i}"), "count")
                .state(State::new().set("i", 0).set("n", steps).set("ms", 150))
        })
        .collect();
    let (_handle, stream) = cluster.caller().run(tasks, config());
    let consumer = tokio::spawn(collect(stream));
    // Let the only worker take everything and finish a few steps.
    tokio::time::sleep(Duration::from_millis(900)).await;
    cluster.kill(victim).await;
    cluster.start_worker(16).await;
    cluster.start_worker(16).await;
    let items = tokio::time::timeout(WAIT, consumer).await.unwrap().unwrap();
    let ends: Vec<_> = items.iter().filter(|i| i.is_terminal()).collect();
    assert_eq!(ends.len(), 4);
    let ids: Vec<String> = ends.iter().map(|i| i.app_id.to_string()).collect();
    for end in &ends {
        assert_eq!(end.kind, ItemKind::Final, "{end:?}");
        assert_eq!(
            end.state_update
                .as_ref()
                .unwrap()
                .get_as::<i64>("i")
                .unwrap(),
            steps
        );
    }
    let mut resumed = 0;
    for app_id in &ids {
        let runs = cluster.executions(app_id).await;
        assert_eq!(
            runs.len(),
            usize::try_from(steps).unwrap(),
            "{app_id}: {runs:?}"
        );
        let twice: Vec<_> = runs.iter().filter(|(_, n)| **n > 1).collect();
        // Only the step the kill interrupted may have run twice.
        assert!(
            twice.len() <= 1 && twice.iter().all(|(_, n)| **n == 2),
            "{app_id}: {runs:?}"
        );
        if cluster.epoch(app_id).await.unwrap_or(0) > 1 {
            resumed += 1;
        }
    }
    assert_eq!(resumed, 4, "every task was taken over by a new claim");
    // Each step's node item reached the consumer once.
    for key in ["c0", "c1", "c2", "c3"] {
        let nodes = items
            .iter()
            .filter(|i| &*i.task_key == key && i.kind == ItemKind::NodeComplete)
            .count();
        assert_eq!(nodes, usize::try_from(steps - 1).unwrap(), "{key}");
    }
}

/// A worker frozen (SIGSTOP) while its task moves to another worker cannot,
/// once thawed, write over the new owner's steps or speak for the task.
pub(crate) async fn a_frozen_worker_is_fenced_when_it_wakes(backend: Backend) {
    let mut cluster = Cluster::new(backend, 200);
    let zombie = cluster.start_worker(4).await;
    let steps = 10i64;
    let task = TaskSpec::named("z", "count")
        .state(State::new().set("i", 0).set("n", steps).set("ms", 120));
    let (_handle, stream) = cluster.caller().run(vec![task], config());
    let consumer = tokio::spawn(collect(stream));
    tokio::time::sleep(Duration::from_millis(500)).await;
    cluster.freeze(zombie);
    cluster.start_worker(4).await;
    // The new owner takes over after the lease and runs on for a while.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    cluster.thaw(zombie);
    let items = tokio::time::timeout(WAIT, consumer).await.unwrap().unwrap();
    let end = items.iter().find(|i| i.is_terminal()).unwrap();
    assert_eq!(end.kind, ItemKind::Final, "{end:?}");
    assert_eq!(
        end.state_update
            .as_ref()
            .unwrap()
            .get_as::<i64>("i")
            .unwrap(),
        steps
    );
    let app_id = end.app_id.to_string();
    assert_eq!(
        cluster.epoch(&app_id).await,
        Some(2),
        "the new owner's epoch stays"
    );
    // The stored final checkpoint is the new owner's, equal to the end.
    let persister =
        tributary_cluster::RedisPersister::connect_with_prefix(&cluster.redis_url, &cluster.ns)
            .await
            .unwrap();
    let last = tributary::Persister::load(&persister, &app_id, None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(last.state.get_as::<i64>("i").unwrap(), steps);
    assert_eq!(&last.state, end.state_update.as_ref().unwrap());
    // Every step's node item reached the consumer once, in order.
    let nodes: Vec<i64> = items
        .iter()
        .filter(|i| i.kind == ItemKind::NodeComplete)
        .map(|i| i.state_update.as_ref().unwrap().get_as::<i64>("i").unwrap())
        .collect();
    assert_eq!(nodes, (1..steps).collect::<Vec<_>>());
    let runs = cluster.executions(&app_id).await;
    assert!(runs.values().filter(|n| **n > 1).count() <= 1, "{runs:?}");
}

/// `cancel()` of a run spread over two workers resolves once every remote
/// task has stopped: no step runs afterwards.
pub(crate) async fn cancel_stops_every_remote_task(backend: Backend) {
    let mut cluster = Cluster::new(backend, 200);
    cluster.start_worker(8).await;
    cluster.start_worker(8).await;
    let tasks: Vec<TaskSpec> = (0..8)
        .map(|i| TaskSpec::named(format!("b{i}"), "busy").state(State::new().set("ms", 40)))
        .collect();
    let (handle, stream) = cluster.caller().run(tasks, config());
    let consumer = tokio::spawn(collect(stream));
    let started = std::time::Instant::now();
    while cluster.busy_steps().await < 40 {
        assert!(started.elapsed() < WAIT, "the tasks run");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::timeout(WAIT, handle.cancel()).await.unwrap();
    let after_cancel = cluster.busy_steps().await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        cluster.busy_steps().await,
        after_cancel,
        "no step ran after cancel() resolved"
    );
    let items = tokio::time::timeout(WAIT, consumer).await.unwrap().unwrap();
    let ends: Vec<_> = items.iter().filter(|i| i.is_terminal()).collect();
    assert_eq!(ends.len(), 8);
    assert!(
        ends.iter().all(|i| i.kind == ItemKind::Cancelled),
        "{ends:?}"
    );
    assert!(
        ends.iter()
            .all(|i| i.cancel_reason() == Some(CancelReason::Handle))
    );
}

/// Quick-exit across workers: the first task to finish wins, the others
/// are cancelled on the workers that hold them.
pub(crate) async fn quick_exit_cancels_the_losers_on_their_workers(backend: Backend) {
    let mut cluster = Cluster::new(backend, 200);
    cluster.start_worker(8).await;
    cluster.start_worker(8).await;
    let mut tasks: Vec<TaskSpec> = (0..5)
        .map(|i| TaskSpec::named(format!("slow{i}"), "busy").state(State::new().set("ms", 40)))
        .collect();
    tasks.push(
        TaskSpec::named("fast", "count").state(State::new().set("i", 0).set("n", 3).set("ms", 100)),
    );
    let (_handle, stream) = cluster.caller().run(tasks, config().policy(QuickExit));
    let items = collect(stream).await;
    let winner: Vec<_> = items.iter().filter(|i| i.kind == ItemKind::Final).collect();
    assert_eq!(winner.len(), 1);
    assert_eq!(&*winner[0].task_key, "fast");
    let cancelled = items
        .iter()
        .filter(|i| i.kind == ItemKind::Cancelled)
        .count();
    assert_eq!(cancelled, 5);
    // The losers stopped on their workers.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let settled = cluster.busy_steps().await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(cluster.busy_steps().await, settled, "the losers stopped");
}

/// Pausing the run pauses its tasks on the workers between steps; resuming
/// lets them go on.
pub(crate) async fn pause_reaches_the_workers(backend: Backend) {
    let mut cluster = Cluster::new(backend, 200);
    cluster.start_worker(8).await;
    let tasks: Vec<TaskSpec> = (0..4)
        .map(|i| TaskSpec::named(format!("b{i}"), "busy").state(State::new().set("ms", 40)))
        .collect();
    let (handle, stream) = cluster.caller().run(tasks, config());
    let consumer = tokio::spawn(collect(stream));
    let started = std::time::Instant::now();
    while cluster.busy_steps().await < 20 {
        assert!(started.elapsed() < WAIT, "the tasks run");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    handle.pause();
    tokio::time::sleep(Duration::from_millis(600)).await;
    let paused_at = cluster.busy_steps().await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        cluster.busy_steps().await,
        paused_at,
        "no step runs while paused"
    );
    handle.resume();
    let started = std::time::Instant::now();
    while cluster.busy_steps().await < paused_at + 8 {
        assert!(started.elapsed() < WAIT, "the tasks go on after resume");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    handle.cancel().await;
    let _ = tokio::time::timeout(WAIT, consumer).await.unwrap().unwrap();
}

/// SIGTERM: the worker stops claiming, lets its tasks run for its drain
/// time, then hands them back; another worker finishes them from their
/// checkpoints.
pub(crate) async fn a_terminated_worker_hands_its_tasks_back(backend: Backend) {
    let mut cluster = Cluster::new(backend, 200);
    let first = cluster.start_worker(8).await;
    let steps = 12i64;
    let tasks: Vec<TaskSpec> = (0..3)
        .map(|i| {
            TaskSpec::named(format!("h{i}"), "count")
                .state(State::new().set("i", 0).set("n", steps).set("ms", 100))
        })
        .collect();
    let (_handle, stream) = cluster
        .caller()
        .run(tasks, config().merge_mode(MergeMode::AsCompleted));
    let consumer = tokio::spawn(collect(stream));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let status = cluster.terminate(first).await;
    assert!(status.success(), "a graceful exit: {status:?}");
    cluster.start_worker(8).await;
    let items = tokio::time::timeout(WAIT, consumer).await.unwrap().unwrap();
    let finals = items.iter().filter(|i| i.kind == ItemKind::Final).count();
    assert_eq!(finals, 3, "{items:?}");
    let ids: Vec<String> = items
        .iter()
        .filter(|i| i.kind == ItemKind::Final)
        .map(|i| i.app_id.to_string())
        .collect();
    for app_id in &ids {
        let runs = cluster.executions(app_id).await;
        assert_eq!(runs.len(), usize::try_from(steps).unwrap());
        assert!(runs.values().filter(|n| **n > 1).count() <= 1, "{runs:?}");
    }
}

/// A poison task that kills every worker that claims it goes to the dead
/// letters after its last delivery, and the caller fails it with a typed
/// error instead of waiting forever.
pub(crate) async fn a_poison_task_fails_once_dead_lettered(backend: Backend) {
    let mut cluster = Cluster::new(backend, 200);
    cluster.max_deliveries = 2;
    let (_handle, stream) = cluster.caller().run(
        vec![
            TaskSpec::named("poison", "crash"),
            TaskSpec::named("fine", "square").state(State::new().set("n", 3)),
        ],
        config().failure_policy(tributary::FailurePolicy::Continue),
    );
    let consumer = tokio::spawn(collect(stream));
    // Each claim of the poison task kills its worker.
    for _ in 0..3 {
        cluster.start_worker(4).await;
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    let items = tokio::time::timeout(WAIT, consumer).await.unwrap().unwrap();
    let poison = items.iter().find(|i| &*i.task_key == "poison").unwrap();
    assert_eq!(poison.kind, ItemKind::Failed, "{poison:?}");
    let error = poison.error.as_ref().unwrap();
    assert_eq!(error.kind, tributary::TaskErrorKind::Executor);
    assert!(error.message.contains("dead letters"), "{}", error.message);
    let fine = items.iter().find(|i| &*i.task_key == "fine").unwrap();
    assert_eq!(fine.kind, ItemKind::Final);
}

/// The broker (`server`, which `cluster`'s workers use) restarts mid-run:
/// workers and caller reconnect by themselves and every task ends as it
/// would have, with no finished step run again. The workers log to stderr,
/// to show what happened should this ever fail.
pub(crate) async fn tasks_survive_a_broker_restart(
    mut cluster: Cluster,
    server: &mut crate::stream_servers::OwnServer,
) {
    cluster.start_worker_env(8, &[("CLUSTER_LOG", "1")]).await;
    cluster.start_worker_env(8, &[("CLUSTER_LOG", "1")]).await;
    let steps = 10i64;
    let tasks: Vec<TaskSpec> = (0..4)
        .map(|i| {
            TaskSpec::named(format!("r{i}"), "count")
                .state(State::new().set("i", 0).set("n", steps).set("ms", 100))
        })
        .collect();
    let (_handle, stream) = cluster.caller().run(tasks, config());
    let consumer = tokio::spawn(collect(stream));
    tokio::time::sleep(Duration::from_millis(500)).await;
    server.kill();
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.start_again().await;
    let items = tokio::time::timeout(WAIT, consumer).await.unwrap().unwrap();
    let finals: Vec<_> = items.iter().filter(|i| i.kind == ItemKind::Final).collect();
    assert_eq!(finals.len(), 4, "{items:?}");
    for end in finals {
        let state = end.state_update.as_ref().unwrap();
        assert_eq!(state.get_as::<i64>("i").unwrap(), steps);
        let runs = cluster.executions(&end.app_id).await;
        assert_eq!(runs.len(), usize::try_from(steps).unwrap(), "{runs:?}");
        assert!(runs.values().filter(|n| **n > 1).count() <= 1, "{runs:?}");
    }
}

/// A task of the `fan` graph: `k` children of graph `child`, each `n`
/// steps of `ms`.
fn fan(key: &str, child: &str, k: i64, n: i64, ms: u64) -> TaskSpec {
    TaskSpec::named(key, "fan").state(
        State::new()
            .set("k", k)
            .set("n", n)
            .set("ms", ms)
            .set("child", child),
    )
}

/// The children of a parallel action go to the task queue: two workers of
/// one slot each share them (the parent gives its slot back while it
/// waits), and every child's items reach the caller under the parent's
/// path, once.
pub(crate) async fn children_of_a_parallel_action_spread_over_the_workers(backend: Backend) {
    let mut cluster = Cluster::new(backend, 200);
    cluster.start_worker(1).await;
    cluster.start_worker(1).await;
    let (_h, stream) = cluster
        .caller()
        .run(vec![fan("p", "count", 6, 3, 100)], config());
    let items = collect(stream).await;
    let last = items.last().unwrap();
    assert_eq!(last.kind, ItemKind::Final, "{last:?}");
    assert_eq!(&*last.task_key, "p");
    assert_eq!(
        last.state_update
            .as_ref()
            .unwrap()
            .get_as::<i64>("total")
            .unwrap(),
        18
    );
    for j in 0..6 {
        let path: tributary::TaskPath = ["p".to_owned(), j.to_string()].into();
        let child: Vec<ItemKind> = items
            .iter()
            .filter(|i| i.path == path && i.kind != ItemKind::Token)
            .map(|i| i.kind)
            .collect();
        assert_eq!(
            child,
            [
                ItemKind::NodeComplete,
                ItemKind::NodeComplete,
                ItemKind::Final
            ],
            "child {j}"
        );
    }
    let by_worker = cluster.steps_by_worker().await;
    assert_eq!(by_worker.values().sum::<i64>(), 18, "{by_worker:?}");
    assert!(
        by_worker.get("w0").copied().unwrap_or(0) > 0
            && by_worker.get("w1").copied().unwrap_or(0) > 0,
        "both workers ran children: {by_worker:?}"
    );
}

/// The worker holding a parent is killed while the parent's children run:
/// another worker takes the parent over, ends the children of the dead
/// claim and publishes them again; each resumes from its checkpoint, so no
/// finished step of a child runs again, and the parent ends as it would
/// have.
pub(crate) async fn a_killed_parents_children_resume_without_redoing_steps(backend: Backend) {
    let mut cluster = Cluster::new(backend, 200);
    let victim = cluster.start_worker(8).await;
    let steps = 8i64;
    let (_h, stream) = cluster
        .caller()
        .run(vec![fan("p", "count", 4, steps, 150)], config());
    let consumer = tokio::spawn(collect(stream));
    tokio::time::sleep(Duration::from_millis(1000)).await;
    cluster.kill(victim).await;
    cluster.start_worker(8).await;
    cluster.start_worker(8).await;
    let items = tokio::time::timeout(WAIT, consumer).await.unwrap().unwrap();
    let last = items.last().unwrap();
    assert_eq!(last.kind, ItemKind::Final, "{last:?}");
    assert_eq!(
        last.state_update
            .as_ref()
            .unwrap()
            .get_as::<i64>("total")
            .unwrap(),
        4 * steps
    );
    assert!(
        cluster.epoch(&last.app_id).await.unwrap_or(0) >= 2,
        "the parent ended under a new claim"
    );
    let child_ends: Vec<&StreamItem> = items
        .iter()
        .filter(|i| i.is_nested() && i.is_terminal())
        .collect();
    assert_eq!(child_ends.len(), 4, "one end per child: {child_ends:#?}");
    let by_worker = cluster.steps_by_worker().await;
    assert!(
        by_worker.get("w0").copied().unwrap_or(0) > 0,
        "the killed worker ran steps first: {by_worker:?}"
    );
    for end in child_ends {
        assert_eq!(end.kind, ItemKind::Final, "{end:?}");
        let runs = cluster.executions(&end.app_id).await;
        assert_eq!(runs.len(), usize::try_from(steps).unwrap(), "{runs:?}");
        let twice: Vec<_> = runs.iter().filter(|(_, n)| **n > 1).collect();
        // Only the step the kill interrupted may have run twice.
        assert!(
            twice.len() <= 1 && twice.iter().all(|(_, n)| **n == 2),
            "{}: {runs:?}",
            end.app_id
        );
        // A child's checkpoints are fenced under its parent's claim (the
        // parent claim's epoch in the high bits); a child that finished
        // under the first claim keeps that claim's.
        let epoch = cluster.epoch(&end.app_id).await.unwrap();
        assert!(epoch > 1 << 16, "{}: epoch {epoch}", end.app_id);
    }
}

/// Cancelling a run whose task waits for distributed children stops the
/// children on their workers before `cancel()` resolves.
pub(crate) async fn cancel_stops_distributed_children(backend: Backend) {
    let mut cluster = Cluster::new(backend, 200);
    cluster.start_worker(4).await;
    cluster.start_worker(4).await;
    let (handle, stream) = cluster
        .caller()
        .run(vec![fan("p", "busy", 4, 0, 40)], config());
    let consumer = tokio::spawn(collect(stream));
    let started = std::time::Instant::now();
    while cluster.busy_steps().await < 40 {
        assert!(started.elapsed() < WAIT, "the children run");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::timeout(WAIT, handle.cancel()).await.unwrap();
    let after_cancel = cluster.busy_steps().await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        cluster.busy_steps().await,
        after_cancel,
        "no child stepped after cancel() resolved"
    );
    let items = tokio::time::timeout(WAIT, consumer).await.unwrap().unwrap();
    let last = items.last().unwrap();
    assert_eq!(&*last.task_key, "p");
    assert_eq!(last.kind, ItemKind::Cancelled, "{last:?}");
}

/// One `#[tokio::test]` per check, for a backend.
#[macro_export]
macro_rules! cluster_tests {
    ($backend:expr, $many:expr, #[$attr:meta]) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        #[$attr]
        async fn many_tasks_over_three_workers_match_a_local_run() {
            $crate::cluster_fleet::many_tasks_over_three_workers_match_a_local_run($backend, $many)
                .await
        }
        $crate::cluster_tests!(@each $backend, #[$attr],
            a_killed_workers_tasks_resume_elsewhere_without_redoing_steps,
            a_frozen_worker_is_fenced_when_it_wakes,
            cancel_stops_every_remote_task,
            quick_exit_cancels_the_losers_on_their_workers,
            pause_reaches_the_workers,
            a_poison_task_fails_once_dead_lettered,
            children_of_a_parallel_action_spread_over_the_workers,
            a_killed_parents_children_resume_without_redoing_steps,
            cancel_stops_distributed_children,
            a_terminated_worker_hands_its_tasks_back
        );
    };
    (@each $backend:expr, #[$attr:meta], $($check:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            #[$attr]
            async fn $check() {
                $crate::cluster_fleet::$check($backend).await
            }
        )*
    };
}
