//! The cluster executor through one Redis on loopback, with worker
//! processes (this binary, re-run as `--cluster-worker`):
//!
//! - `cluster_throughput`: subgraphs/s of N one-step tasks over 2 worker
//!   processes, persistence off and on (checkpoints in Redis), next to the
//!   bare Redis queue round trip (XADD → XREADGROUP → XACK, 2 consumers)
//!   measured in the same run;
//! - `cluster_first_item`: enqueue → first item of a task, p50 and p99,
//!   one task in flight at a time (a window of 1);
//! - `cluster_recovery`: from a worker's SIGKILL to its task's next item
//!   from another worker, against the goal of two heartbeats plus a step.
//!
//! Needs `TRIBUTARY_REDIS_URL` (skipped without it).

use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tributary::cluster::{
    ClusterOptions, ClusterRuntime, Graphs, RedisBroker, RedisPersister, Worker,
};
use tributary::{Graph, ItemKind, RunConfig, State, TaskSpec, action, default};

use crate::Opts;
use crate::report::{Measurement, Target};

const HEARTBEAT: Duration = Duration::from_millis(200);
const STEP: Duration = Duration::from_millis(50);

fn options(ns: &str) -> ClusterOptions {
    ClusterOptions::new()
        .namespace(ns)
        .heartbeat(HEARTBEAT)
        .alive_interval(Duration::from_millis(500))
}

fn graphs() -> Graphs {
    let square = Graph::single(action("square").reads(["n"]).writes(["n"]).run(
        |s: State, _, _| async move {
            let n: i64 = s.get_as("n")?;
            Ok((json!({ "n": n * n }), s.set("n", n * n)))
        },
    ));
    let tick = action("tick")
        .reads(["i"])
        .writes(["i"])
        .run(|s: State, _, _| async move {
            tokio::time::sleep(STEP).await;
            let i: i64 = s.get_as("i")?;
            Ok((json!({ "i": i + 1 }), s.set("i", i + 1)))
        });
    let ticks = Graph::builder()
        .action(tick)
        .transition("tick", "tick", default())
        .entrypoint("tick")
        .build()
        .expect("a valid graph");
    Graphs::new()
        .register("square", square)
        .and_then(|g| g.register("ticks", ticks))
        .expect("distinct names")
}

/// Whether the command line asks for a cluster worker.
pub(crate) fn is_worker(args: &[String]) -> bool {
    args.first().map(String::as_str) == Some("--cluster-worker")
}

/// `--cluster-worker <redis url> <namespace> <persist: 0|1>`: a worker until
/// stdin closes.
pub(crate) async fn run_worker(args: &[String]) -> anyhow::Result<()> {
    let [_, url, ns, persist] = args else {
        anyhow::bail!("usage: --cluster-worker <redis url> <namespace> <0|1>");
    };
    let mut builder = Worker::builder(RedisBroker::new(url.clone()), graphs())
        .concurrency(512)
        .options(options(ns));
    if persist == "1" {
        builder = builder.persister(Arc::new(
            RedisPersister::connect_with_prefix(url, ns).await?,
        ));
    }
    let worker = builder.build()?;
    println!("ready");
    let stop = async {
        let mut line = String::new();
        let _ = BufReader::new(tokio::io::stdin())
            .read_line(&mut line)
            .await;
    };
    worker.run(stop).await?;
    Ok(())
}

async fn spawn(url: &str, ns: &str, persist: bool) -> anyhow::Result<Child> {
    let mut child = Command::new(std::env::current_exe()?)
        .args(["--cluster-worker", url, ns, if persist { "1" } else { "0" }])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
    match tokio::time::timeout(Duration::from_secs(30), lines.next_line()).await {
        Ok(Ok(Some(l))) if l == "ready" => Ok(child),
        other => anyhow::bail!("the worker did not start: {other:?}"),
    }
}

fn unique(prefix: &str) -> String {
    format!("{prefix}{}", uuid::Uuid::new_v4().simple())
}

async fn throughput_once(url: &str, n: i64, persist: bool) -> anyhow::Result<f64> {
    let ns = unique("bench-cl-");
    let workers = [
        spawn(url, &ns, persist).await?,
        spawn(url, &ns, persist).await?,
    ];
    let caller = ClusterRuntime::new(RedisBroker::new(url.to_owned()))
        .options(options(&ns))?
        .window(4096);
    let tasks =
        (0..n).map(|i| TaskSpec::named(format!("t{i}"), "square").state(State::new().set("n", i)));
    let t = Instant::now();
    let (_h, mut stream) = caller.run(tasks.collect::<Vec<_>>(), RunConfig::new());
    let mut done = 0;
    while let Some(item) = stream.next().await {
        anyhow::ensure!(item.kind == ItemKind::Final, "task ended {:?}", item.kind);
        done += 1;
    }
    let rate = f64::from(u32::try_from(done)?) / t.elapsed().as_secs_f64();
    for mut w in workers {
        let _ = w.start_kill();
        let _ = w.wait().await;
    }
    Ok(rate)
}

/// The bare round trip of one message through Redis Streams, 2 consumers.
async fn bare(url: &str, n: u64) -> anyhow::Result<f64> {
    super::queue::bare_redis(url, n, 2).await
}

async fn first_items(url: &str, n: usize) -> anyhow::Result<Vec<f64>> {
    let ns = unique("bench-cl-");
    let workers = [spawn(url, &ns, false).await?, spawn(url, &ns, false).await?];
    let caller = ClusterRuntime::new(RedisBroker::new(url.to_owned()))
        .options(options(&ns))?
        .window(1);
    let tasks =
        (0..n).map(|i| TaskSpec::named(format!("t{i}"), "square").state(State::new().set("n", 2)));
    let (_h, mut stream) = caller.run(tasks.collect::<Vec<_>>(), RunConfig::new());
    // With one task in flight, the next task is published when the previous
    // one's end arrives: the gap between ends is enqueue → first item.
    let mut last = Instant::now();
    let mut gaps = Vec::with_capacity(n);
    let mut first = true;
    while let Some(item) = stream.next().await {
        anyhow::ensure!(item.kind == ItemKind::Final);
        let now = Instant::now();
        // The first task also pays for opening the run's queues.
        if !first {
            gaps.push((now - last).as_secs_f64() * 1e3);
        }
        first = false;
        last = now;
    }
    for mut w in workers {
        let _ = w.start_kill();
        let _ = w.wait().await;
    }
    Ok(gaps)
}

async fn recovery_once(url: &str) -> anyhow::Result<f64> {
    let ns = unique("bench-cl-");
    let mut holder = spawn(url, &ns, true).await?;
    let caller = ClusterRuntime::new(RedisBroker::new(url.to_owned())).options(options(&ns))?;
    let task = TaskSpec::named("long", "ticks").state(State::new().set("i", 0));
    let (handle, mut stream) = caller.run(vec![task], RunConfig::new());
    // Let the only worker take the task and run a few steps.
    let mut steps = 0;
    while steps < 4 {
        if stream.next().await.map(|i| i.kind) == Some(ItemKind::NodeComplete) {
            steps += 1;
        }
    }
    let mut other = spawn(url, &ns, true).await?;
    holder.start_kill()?;
    let killed = Instant::now();
    let _ = holder.wait().await;
    // The next node item comes from the other worker.
    while let Some(item) = stream.next().await {
        if item.kind == ItemKind::NodeComplete {
            break;
        }
    }
    let took = killed.elapsed().as_secs_f64() * 1e3;
    handle.cancel().await;
    while stream.next().await.is_some() {}
    let _ = other.start_kill();
    let _ = other.wait().await;
    Ok(took)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// The `cluster` scenario.
pub(crate) async fn cluster(opts: &Opts) {
    let Some(url) = std::env::var("TRIBUTARY_REDIS_URL")
        .ok()
        .filter(|u| !u.is_empty())
    else {
        eprintln!("cluster: TRIBUTARY_REDIS_URL is unset, skipped");
        return;
    };
    let n: i64 = if opts.quick { 4_000 } else { 20_000 };
    for persist in [false, true] {
        let (mut ours, mut base) = (Vec::new(), Vec::new());
        for _ in 0..opts.repeats(3) {
            base.push(bare(&url, n.unsigned_abs()).await.expect("bare redis runs"));
            ours.push(
                throughput_once(&url, n, persist)
                    .await
                    .expect("the cluster runs"),
            );
        }
        let m = Measurement::new(
            "cluster_throughput",
            json!({ "workers": 2, "tasks": n, "persistence": persist, "broker": "redis" }),
            "subgraphs_per_s",
        )
        .samples(ours)
        .baseline("bare_redis_round_trip", base);
        // The goal is for persistence off; with it on, the figure is the record.
        if persist {
            m
        } else {
            m.target_median(Target::AtLeast(10_000.0))
        }
        .emit();
    }
    let mut gaps = first_items(&url, if opts.quick { 200 } else { 1000 })
        .await
        .expect("the cluster runs");
    gaps.sort_by(f64::total_cmp);
    let (p50, p99) = (percentile(&gaps, 0.5), percentile(&gaps, 0.99));
    Measurement::new(
        "cluster_first_item",
        json!({ "workers": 2, "tasks": gaps.len(), "percentile": 50, "broker": "redis" }),
        "ms",
    )
    .samples(vec![p50])
    .target_median(Target::AtMost(5.0))
    .emit();
    Measurement::new(
        "cluster_first_item",
        json!({ "workers": 2, "tasks": gaps.len(), "percentile": 99, "broker": "redis" }),
        "ms",
    )
    .samples(vec![p99])
    .target_median(Target::AtMost(25.0))
    .emit();
    let mut took = Vec::new();
    for _ in 0..opts.repeats(3) {
        took.push(recovery_once(&url).await.expect("the cluster recovers"));
    }
    let goal = (HEARTBEAT * 2 + STEP).as_secs_f64() * 1e3;
    Measurement::new(
        "cluster_recovery",
        json!({ "heartbeat_ms": HEARTBEAT.as_millis(), "step_ms": STEP.as_millis(), "goal_ms": goal }),
        "ms",
    )
    .samples(took)
    .target_median(Target::AtMost(goal))
    .emit();
}
