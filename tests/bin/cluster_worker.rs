//! A cluster worker in a process of its own, for the tests that kill,
//! freeze and stop it:
//! `cluster_worker <redis|nats> <broker url> <redis url> <namespace> <name> <concurrency> <heartbeat ms>`.
//!
//! It checkpoints to a `RedisPersister` under the namespace and registers:
//! - `count`: steps `i = 0..n`, each emitting a token, sleeping `ms`, then
//!   counting its own execution in Redis (`<ns>:exec:<app id>:<seq>`);
//! - `square`: one step, `n * n`;
//! - `crash`: aborts the worker process (a poison task);
//! - `fan`: a parallel action over `k` children of the graph named in
//!   `child` (default `count`), each with `n` steps of `ms` (the children
//!   go to the fleet); reduces the children's `i` into `total`;
//! - `busy`: steps forever (each sleeps `ms` and counts itself in
//!   `<ns>:busy`), until cancelled;
//! - durable functions (`Graphs::functions`): `shout` (upper-cases a string,
//!   counting itself in `<ns>:fn:shout`) and `fail` (returns the error
//!   "out of stock: <input>").
//!
//! With `CLUSTER_EXTRA_GRAPH=<name>`, `square` is registered under that
//! name too (a worker of a newer release, knowing one more graph).
//!
//! SIGTERM shuts it down gracefully (drain 1 s, then hand back).

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tributary::durable::Functions;
use tributary::{
    ActionContext, BoxError, Graph, ParallelAction, State, TaskSpec, action, default, when,
};
use tributary_cluster::{
    Broker, ClusterOptions, Graphs, NatsBroker, RedisBroker, RedisPersister, Worker,
};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    // With CLUSTER_LOG set, the worker's log goes to stderr (a test that
    // fails can show what each worker did).
    if std::env::var_os("CLUSTER_LOG").is_some() {
        use tracing_subscriber::layer::SubscriberExt;
        use tracing_subscriber::util::SubscriberInitExt;
        // tributary's own events only: the broker clients' debug output
        // would drown them.
        let only_ours = tracing_subscriber::filter::Targets::new()
            .with_target("tributary_cluster", tracing::Level::DEBUG)
            .with_target("tributary_runtime", tracing::Level::INFO)
            .with_target("tributary_queue", tracing::Level::DEBUG);
        tracing_subscriber::registry()
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_ansi(false),
            )
            .with(only_ours)
            .init();
    }
    let args: Vec<String> = std::env::args().collect();
    let [
        _,
        backend,
        broker_url,
        redis_url,
        ns,
        name,
        concurrency,
        heartbeat,
    ] = args.as_slice()
    else {
        anyhow::bail!(
            "usage: cluster_worker <redis|nats> <broker url> <redis url> <namespace> <name> <concurrency> <heartbeat ms>"
        );
    };
    // The tests' own counters may live elsewhere than the checkpoints (a
    // test that restarts the checkpoint server keeps counting).
    let counter_url = std::env::var("CLUSTER_COUNTER_URL").unwrap_or_else(|_| redis_url.clone());
    let redis = redis::Client::open(counter_url.as_str())?
        .get_connection_manager()
        .await?;
    let persister = Arc::new(RedisPersister::connect_with_prefix(redis_url, ns).await?);
    let redis_fn = redis.clone();
    let graphs = Graphs::new()
        .register("count", count(redis.clone(), ns.clone(), name.clone()))?
        .register("fan", fan())?
        .register("square", square())?
        .register("busy", busy(redis, ns.clone()))?
        .register("crash", crash())?
        .functions(functions(redis_fn, ns.clone()))?;
    let graphs = match std::env::var("CLUSTER_EXTRA_GRAPH") {
        Ok(extra) if !extra.is_empty() => graphs.register(extra, square())?,
        _ => graphs,
    };
    let options = ClusterOptions::new()
        .namespace(ns.clone())
        .heartbeat(Duration::from_millis(heartbeat.parse()?))
        .alive_interval(Duration::from_millis(200))
        // A caller silent for 3 s (with the broker reachable) is gone.
        .orphan_after(Duration::from_secs(3))
        .max_deliveries(
            std::env::var("CLUSTER_MAX_DELIVERIES")
                .ok()
                .and_then(|n| n.parse().ok())
                .unwrap_or(10),
        );
    let broker: Box<dyn FnOnce(Graphs) -> tributary_cluster::WorkerBuilder> = match backend.as_str()
    {
        "redis" => {
            let b = RedisBroker::new(broker_url.clone());
            Box::new(move |g| Worker::builder(b, g))
        }
        "nats" => {
            let b = NatsBroker::new(broker_url.clone());
            Box::new(move |g| Worker::builder(b, g))
        }
        other => anyhow::bail!("unknown backend {other}"),
    };
    let worker = broker(graphs)
        .persister(persister)
        .name(name.clone())
        .concurrency(concurrency.parse()?)
        .options(options)
        .drain(Duration::from_secs(1))
        .build()?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    println!("ready {name}");
    let stats = worker
        .run(async move {
            term.recv().await;
        })
        .await?;
    println!(
        "stopped claimed={} completed={} handed_back={}",
        stats.claimed(),
        stats.completed(),
        stats.handed_back()
    );
    Ok(())
}

fn functions(redis: redis::aio::ConnectionManager, ns: String) -> Functions {
    let functions = Functions::new();
    functions.register("shout", move |text: String| {
        let mut redis = redis.clone();
        let key = format!("{ns}:fn:shout");
        async move {
            let _: i64 = redis::cmd("INCR").arg(key).query_async(&mut redis).await?;
            Ok::<_, BoxError>(text.to_uppercase())
        }
    });
    functions.register("fail", |what: String| async move {
        Err::<String, BoxError>(format!("out of stock: {what}").into())
    });
    functions
}

fn _broker_is_object_safe(_: &dyn Broker) {}

fn count(redis: redis::aio::ConnectionManager, ns: String, worker: String) -> Graph {
    let step = action("step")
        .reads(["i", "n", "ms"])
        .writes(["i", "done"])
        .run(move |s: State, _, ctx: ActionContext| {
            let mut redis = redis.clone();
            let ns = ns.clone();
            let worker = worker.clone();
            async move {
                let i: i64 = s.get_as("i")?;
                let n: i64 = s.get_as("n")?;
                let ms: u64 = s.get_as("ms")?;
                ctx.emit(json!({ "i": i })).await?;
                tokio::time::sleep(Duration::from_millis(ms)).await;
                let key = format!("{ns}:exec:{}:{}", ctx.app_id(), ctx.sequence_id());
                let _: i64 = redis::cmd("INCR").arg(key).query_async(&mut redis).await?;
                let _: i64 = redis::cmd("HINCRBY")
                    .arg(format!("{ns}:by-worker"))
                    .arg(&worker)
                    .arg(1)
                    .query_async(&mut redis)
                    .await?;
                let next = i + 1;
                Ok((
                    json!({ "i": next }),
                    s.set("i", next).set("done", next >= n),
                ))
            }
        });
    Graph::builder()
        .action(step)
        .transition("step", "step", when("done", false))
        .entrypoint("step")
        .build()
        .expect("a valid graph")
}

/// A parallel action whose children are named graphs: they go to the
/// fleet's queue.
fn fan() -> Graph {
    let children = |s: &State, _: &tributary::Inputs| {
        let k: i64 = s.get_as("k")?;
        let child = State::new()
            .set("i", 0)
            .set("n", s.get_as::<i64>("n")?)
            .set("ms", s.get_as::<u64>("ms")?);
        Ok::<_, tributary::BoxError>((0..k).map(move |_| child.clone()))
    };
    let child = |s: &State| {
        s.get_as::<String>("child")
            .unwrap_or_else(|_| "count".into())
    };
    Graph::single(
        ParallelAction::tasks("fan", move |s: &State, inputs: &tributary::Inputs| {
            let graph = child(s);
            let states = children(s, inputs)?;
            Ok(states
                .enumerate()
                .map(move |(j, state)| TaskSpec::named(j.to_string(), graph.clone()).state(state)))
        })
        .reads(["k", "n", "ms", "child"])
        .writes(["total"])
        .reduce(|s, outcomes| {
            let mut total = 0;
            for o in &outcomes {
                let child = o.state().ok_or("a child did not complete")?;
                total += child.get_as::<i64>("i").unwrap_or(0);
            }
            Ok(s.set("total", total))
        })
        .build(),
    )
}

/// Kills its worker process: a poison task.
fn crash() -> Graph {
    Graph::single(action("crash").run(|_: State, _, _| async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        std::process::abort()
    }))
}

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

fn busy(redis: redis::aio::ConnectionManager, ns: String) -> Graph {
    let step = action("tick")
        .reads(["ms"])
        .writes([] as [&str; 0])
        .run(move |s: State, _, _| {
            let mut redis = redis.clone();
            let ns = ns.clone();
            async move {
                let ms: u64 = s.get_as("ms")?;
                tokio::time::sleep(Duration::from_millis(ms)).await;
                let _: i64 = redis::cmd("INCR")
                    .arg(format!("{ns}:busy"))
                    .query_async(&mut redis)
                    .await?;
                Ok((json!({}), s))
            }
        });
    Graph::builder()
        .action(step)
        .transition("tick", "tick", default())
        .entrypoint("tick")
        .build()
        .expect("a valid graph")
}
