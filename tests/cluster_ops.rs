//! Operations on a cluster, on Redis Streams and on NATS JetStream: a task
//! no worker can run ends in the dead letters, `status` shows it with its
//! error and who it is, and `retry` publishes it again for a worker that
//! now knows its graph, which finishes it for the caller still waiting;
//! the `tributary cluster` commands print the same.

use std::time::Duration;

use clap::Parser;
use serde_json::Value;
use tributary::{ItemKind, State, TaskSpec};
use tributary_cli::{Cli, CliError, run};
use tributary_cluster::{
    ClusterOptions, DeadTask, Fleet, NatsBroker, OpsError, RedisBroker, TaskIdentity,
};
use tributary_queue::{QueueOptions, WorkQueue};

use crate::cluster_support::{Backend, Cluster, WAIT, collect};
use crate::stream_support::unique;

/// `tributary cluster <args> --broker <url> --namespace <ns>`, its output,
/// on a thread of its own (it runs a runtime of
/// its own, which cannot start inside the test's).
async fn cli(cluster: &Cluster, args: &[&str]) -> Result<String, CliError> {
    let broker = cluster.broker_url.clone();
    let ns = cluster.ns.clone();
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        let stand_in = StandIn {
            broker_url: broker,
            ns,
        };
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        stand_in.command(&args)
    })
    .await
    .unwrap()
}

/// What `cli` needs of a cluster, to cross into a blocking thread.
struct StandIn {
    broker_url: String,
    ns: String,
}

impl StandIn {
    fn command(&self, args: &[&str]) -> Result<String, CliError> {
        let mut argv = vec!["tributary", "cluster"];
        argv.extend_from_slice(args);
        argv.extend_from_slice(&["--broker", &self.broker_url, "--namespace", &self.ns]);
        let cli = Cli::parse_from(argv);
        let mut out = Vec::new();
        run(&cli, &mut out)?;
        Ok(String::from_utf8(out).unwrap())
    }
}

async fn fleet(cluster: &Cluster) -> Fleet {
    let options = ClusterOptions::new().namespace(cluster.ns.clone());
    match cluster.backend {
        Backend::Redis => Fleet::connect(RedisBroker::new(cluster.broker_url.clone()), options)
            .await
            .unwrap(),
        Backend::Nats => Fleet::connect(NatsBroker::new(cluster.broker_url.clone()), options)
            .await
            .unwrap(),
    }
}

/// The cluster's task queue, to put a malformed message on it.
async fn tasks_queue(cluster: &Cluster) -> std::sync::Arc<dyn WorkQueue> {
    use tributary_cluster::Broker;
    let name = format!("{}-tasks", cluster.ns);
    // Only publishing: the options are the queue's, not the group's.
    let options = QueueOptions::default();
    match cluster.backend {
        Backend::Redis => RedisBroker::new(cluster.broker_url.clone())
            .queue(&name, options)
            .await
            .unwrap(),
        Backend::Nats => NatsBroker::new(cluster.broker_url.clone())
            .queue(&name, options)
            .await
            .unwrap(),
    }
}

/// Waits until the fleet lists `n` dead tasks.
async fn dead_within(fleet: &Fleet, n: usize) -> Vec<DeadTask> {
    let started = tokio::time::Instant::now();
    loop {
        let dead = fleet.dead().await.unwrap();
        if dead.len() >= n {
            return dead;
        }
        assert!(
            started.elapsed() < WAIT,
            "{n} dead tasks within {WAIT:?}; got {dead:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub(crate) async fn a_dead_lettered_task_is_shown_and_retried(backend: Backend) {
    let mut cluster = Cluster::new(backend, 200);
    cluster.start_worker(2).await;
    let fleet = fleet(&cluster).await;

    // A message no worker can read: dead-lettered at once.
    tasks_queue(&cluster)
        .await
        .publish("{not a task".into(), None)
        .await
        .unwrap();
    // A task whose graph no worker knows yet: refused until it is out of
    // deliveries. The caller waits for it (far longer than that).
    let run_id = unique("run");
    let caller = cluster
        .caller()
        .options(
            cluster
                .options()
                .unknown_graph_wait(Duration::from_secs(300)),
        )
        .unwrap();
    let task = TaskSpec::named("late", "fresh").state(State::new().set("n", 7));
    let (_handle, stream) = caller.run(vec![task], tributary::RunConfig::new().run_id(&run_id));
    let consumer = tokio::spawn(collect(stream));

    let dead = dead_within(&fleet, 2).await;
    assert_eq!(dead.len(), 2, "{dead:?}");
    let malformed = dead
        .iter()
        .find(|d| d.task.is_none())
        .expect("the malformed one");
    assert!(
        malformed
            .error
            .as_deref()
            .is_some_and(|e| e.starts_with("malformed task message")),
        "{malformed:?}"
    );
    assert!(malformed.unreadable.is_some(), "{malformed:?}");
    let late = dead.iter().find(|d| d.task.is_some()).expect("the task");
    let identity: &TaskIdentity = late.task.as_ref().unwrap();
    assert_eq!(
        (
            identity.run.as_str(),
            identity.index,
            identity.key.as_str(),
            identity.graph.as_str()
        ),
        (run_id.as_str(), 0, "late", "fresh")
    );
    assert_eq!(
        late.attempts,
        ClusterOptions::new().max_deliveries,
        "{late:?}"
    );
    assert_eq!(
        late.error.as_deref(),
        Some("graph `fresh` is not registered on w0")
    );

    // The commands print the same.
    let listed = cli(&cluster, &["dead"]).await.unwrap();
    for needle in [
        late.id.as_str(),
        run_id.as_str(),
        "late",
        "fresh",
        "graph `fresh` is not registered on w0",
        "malformed task message",
    ] {
        assert!(listed.contains(needle), "`{needle}` in:\n{listed}");
    }
    let status: Value =
        serde_json::from_str(&cli(&cluster, &["status", "--json"]).await.unwrap()).unwrap();
    assert_eq!(status["namespace"], cluster.ns.as_str());
    assert_eq!(status["dead"].as_array().unwrap().len(), 2, "{status}");
    let workers = status["workers"].as_array().unwrap();
    assert_eq!(workers.len(), 1, "{status}");
    assert_eq!(workers[0]["worker"], "w0");
    assert_eq!(workers[0]["concurrency"], 2);
    assert!(
        workers[0]["beat_age_ms"].as_u64().unwrap() < 5_000,
        "an idle worker looks for tasks every few milliseconds: {status}"
    );
    let table = cli(&cluster, &["status"]).await.unwrap();
    assert!(table.contains("dead tasks   2"), "{table}");
    assert!(table.contains("w0"), "{table}");

    // The malformed one cannot be retried; an unknown id is named.
    let refused = cli(&cluster, &["retry", &malformed.id]).await.unwrap_err();
    assert!(
        matches!(refused, CliError::Cluster(OpsError::NotRetriable { .. })),
        "{refused}"
    );
    let unknown = fleet.retry_dead("no-such-letter").await.unwrap_err();
    assert!(
        matches!(unknown, OpsError::NoSuchDeadTask { .. }),
        "{unknown}"
    );

    // A release that knows the graph replaces the old worker; the task is
    // published again and finishes for the caller that waited for it.
    cluster.terminate(0).await;
    cluster
        .start_worker_env(2, &[("CLUSTER_EXTRA_GRAPH", "fresh")])
        .await;
    let said = cli(&cluster, &["retry", &late.id]).await.unwrap();
    assert!(said.contains("published task late again"), "{said}");
    let items = tokio::time::timeout(WAIT, consumer)
        .await
        .expect("the run ends")
        .unwrap();
    let finals: Vec<_> = items.iter().filter(|i| i.kind == ItemKind::Final).collect();
    assert_eq!(finals.len(), 1, "{items:?}");
    assert_eq!(finals[0].result.as_ref().unwrap()["n"], 49);
    // Its claims outranked the refused ones: the checkpoint's epoch is
    // past them.
    let epoch = cluster.epoch(&identity.app_id).await.expect("checkpointed");
    assert!(
        epoch > u64::from(late.attempts),
        "epoch {epoch} after {} deliveries",
        late.attempts
    );
    // Retried once: gone from the dead letters, and not retried twice.
    let left = fleet.dead().await.unwrap();
    assert_eq!(left.len(), 1, "only the malformed one: {left:?}");
    let again = fleet.retry_dead(&late.id).await.unwrap_err();
    assert!(matches!(again, OpsError::NoSuchDeadTask { .. }), "{again}");
}

/// A census lists every worker with the tasks it holds; `status` prints
/// them.
pub(crate) async fn a_census_shows_what_each_worker_holds(backend: Backend) {
    let mut cluster = Cluster::new(backend, 200);
    cluster.start_worker(1).await;
    cluster.start_worker(1).await;
    let fleet = fleet(&cluster).await;
    let run_id = unique("run");
    let task = TaskSpec::named("b0", "busy").state(State::new().set("ms", 40));
    let (handle, stream) = cluster
        .caller()
        .run(vec![task], tributary::RunConfig::new().run_id(&run_id));
    let consumer = tokio::spawn(collect(stream));
    let started = tokio::time::Instant::now();
    while cluster.busy_steps().await < 3 {
        assert!(started.elapsed() < WAIT, "the busy task runs");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let workers = fleet.census(Duration::from_secs(1)).await.unwrap();
    let names: Vec<&str> = workers.iter().map(|w| w.worker.as_str()).collect();
    assert_eq!(names, ["w0", "w1"], "{workers:?}");
    let holding: Vec<_> = workers.iter().filter(|w| !w.held.is_empty()).collect();
    assert_eq!(holding.len(), 1, "one worker holds the task: {workers:?}");
    assert_eq!(holding[0].held, [(run_id.clone(), 0)]);
    assert_eq!(holding[0].concurrency, 1);
    // It renews its claim every heartbeat (200 ms).
    assert!(holding[0].beat_age_ms < 2_000, "{workers:?}");
    // The queue says the same: one task claimed, none waiting.
    let status = fleet.status(Duration::ZERO).await.unwrap();
    assert_eq!((status.waiting, status.claimed), (Some(0), 1), "{status:?}");
    let table = cli(&cluster, &["status"]).await.unwrap();
    assert!(table.contains(&format!("{run_id}#0")), "{table}");
    assert!(table.contains("claimed      1"), "{table}");
    assert!(table.contains("workers      2 answered"), "{table}");
    if backend == Backend::Redis {
        // The censuses' answer queues are gone.
        let mut redis = cluster.redis().await;
        let left: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}-census-*", cluster.ns))
            .query_async(&mut redis)
            .await
            .unwrap();
        assert!(left.is_empty(), "{left:?}");
    }
    handle.cancel().await;
    let items = tokio::time::timeout(WAIT, consumer).await.unwrap().unwrap();
    assert!(
        items.iter().any(|i| i.kind == ItemKind::Cancelled),
        "{items:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(tributary_redis), ignore = "needs TRIBUTARY_REDIS_URL")]
async fn redis_a_census_shows_what_each_worker_holds() {
    a_census_shows_what_each_worker_holds(Backend::Redis).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(all(tributary_nats, tributary_redis)),
    ignore = "needs TRIBUTARY_NATS_URL and TRIBUTARY_REDIS_URL"
)]
async fn nats_a_census_shows_what_each_worker_holds() {
    a_census_shows_what_each_worker_holds(Backend::Nats).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(tributary_redis), ignore = "needs TRIBUTARY_REDIS_URL")]
async fn redis_a_dead_lettered_task_is_shown_and_retried() {
    a_dead_lettered_task_is_shown_and_retried(Backend::Redis).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(all(tributary_nats, tributary_redis)),
    ignore = "needs TRIBUTARY_NATS_URL and TRIBUTARY_REDIS_URL"
)]
async fn nats_a_dead_lettered_task_is_shown_and_retried() {
    a_dead_lettered_task_is_shown_and_retried(Backend::Nats).await;
}

/// `retry` and `dead` name a broker URL of no known scheme.
#[test]
fn a_broker_url_of_no_known_scheme_is_refused() {
    let cli = Cli::parse_from([
        "tributary",
        "cluster",
        "dead",
        "--broker",
        "http://127.0.0.1:6379",
    ]);
    let err = run(&cli, &mut Vec::new()).unwrap_err();
    assert!(matches!(err, CliError::BrokerUrl { .. }), "{err}");
}
