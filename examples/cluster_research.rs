//! The deep-research job on a cluster of three worker processes. Run with
//! `cargo run -p tributary-examples --example cluster_research`
//! (needs Redis; `TRIBUTARY_REDIS_URL`, default `redis://127.0.0.1:6379`).
//!
//! The example starts three copies of itself as workers (`--worker NAME`;
//! w0 first, so it holds the first tasks, then w1 and w2),
//! each registering the research graph (search → read → summarise, with
//! seeded latency) and checkpointing every step to Redis. The caller plans
//! the subtopics, runs one task per subtopic on the fleet and, part-way
//! through, kills one worker with SIGKILL: its tasks are taken over by the
//! others after two heartbeats and resume from their last checkpoint.
//! At the end it writes the report, runs the same job in one process, and
//! checks that the two reports are equal and that no finished step ran
//! twice.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tributary::cluster::{
    ClusterOptions, ClusterRuntime, Graphs, RedisBroker, RedisPersister, Worker,
};
use tributary::{
    ActionContext, Graph, ItemKind, RunConfig, Runtime, State, TaskSpec, action, default,
};
use tributary_examples::Rng;

const HELP: &str =
    "cluster_research: the deep-research job on three worker processes, one killed mid-run

usage: cluster_research [options]
  --topic TEXT       what to research (default: \"how rivers shape cities\")
  --subtopics N      tasks to run on the fleet (default 12)
  --kill-after MS    SIGKILL worker w0 after MS milliseconds (default 1200; 0: never)
  --speed F          latency multiplier (default 1)
  -h, --help         this text

Redis: TRIBUTARY_REDIS_URL (default redis://127.0.0.1:6379).";

const ANGLES: [&str; 8] = [
    "history",
    "economics",
    "ecology",
    "flood risk",
    "transport",
    "culture",
    "water supply",
    "planning",
];

const HEARTBEAT: Duration = Duration::from_millis(300);

struct Args {
    topic: String,
    subtopics: usize,
    kill_after: u64,
    speed: f64,
}

fn redis_url() -> String {
    std::env::var("TRIBUTARY_REDIS_URL")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "redis://127.0.0.1:6379".to_owned())
}

fn options(ns: &str) -> ClusterOptions {
    ClusterOptions::new()
        .namespace(ns)
        .heartbeat(HEARTBEAT)
        .alive_interval(Duration::from_millis(300))
}

/// One research step: streams its words with seeded latency, counts its own
/// execution in Redis (so the caller can check nothing finished ran twice)
/// and writes its field.
fn step(
    name: &'static str,
    writes: &'static str,
    words: &'static [&'static str],
    counter: Option<(redis::aio::ConnectionManager, String)>,
    speed: f64,
) -> impl tributary::Action {
    action(name)
        .reads(["subtopic"])
        .writes([writes])
        .run(move |s: State, _, ctx: ActionContext| {
            let counter = counter.clone();
            async move {
                let subtopic: String = s.get_as("subtopic")?;
                let mut rng = Rng::from_str_seed(&format!("{subtopic}/{name}"));
                let mut out = Vec::new();
                for w in words {
                    tokio::time::sleep(rng.latency(60, 160).mul_f64(speed)).await;
                    ctx.emit(*w).await?;
                    out.push(*w);
                }
                if let Some((mut redis, ns)) = counter {
                    let key = format!("{ns}:exec:{}:{}", ctx.app_id(), ctx.sequence_id());
                    let _: i64 = redis::cmd("INCR").arg(key).query_async(&mut redis).await?;
                }
                let text = out.join(" ");
                Ok((
                    json!({ name: text.clone() }),
                    s.set(writes, format!("{subtopic}: {text}")),
                ))
            }
        })
}

fn research(counter: Option<(redis::aio::ConnectionManager, String)>, speed: f64) -> Graph {
    Graph::builder()
        .action(step(
            "search",
            "sources",
            &["found", "4", "sources"],
            counter.clone(),
            speed,
        ))
        .action(step(
            "read",
            "notes",
            &["reading", "maps", "and", "surveys"],
            counter.clone(),
            speed,
        ))
        .action(step(
            "summarise",
            "summary",
            &["rivers", "set", "where", "the", "city", "grew"],
            counter,
            speed,
        ))
        .transition("search", "read", default())
        .transition("read", "summarise", default())
        .entrypoint("search")
        .build()
        .expect("a valid research graph")
}

fn tasks(args: &Args, named: Option<&str>, graph: Option<&Graph>) -> Vec<TaskSpec> {
    (0..args.subtopics)
        .map(|i| {
            let subtopic = format!("{}: {} #{i}", args.topic, ANGLES[i % ANGLES.len()]);
            let key = format!("s{i:02}");
            let spec = match (named, graph) {
                (Some(name), _) => TaskSpec::named(key, name),
                (None, Some(g)) => TaskSpec::new(key, g.clone()),
                (None, None) => unreachable!("a task names or carries its graph"),
            };
            spec.state(State::new().set("subtopic", subtopic))
                .halt_after(["summarise"])
        })
        .collect()
}

fn report(topic: &str, finals: &BTreeMap<String, String>) -> String {
    let mut lines = vec![format!("# {topic}"), String::new()];
    for (key, summary) in finals {
        lines.push(format!("## {key}"));
        lines.push(summary.clone());
        lines.push(String::new());
    }
    lines.join("\n")
}

async fn worker(name: &str, ns: &str, speed: f64) -> anyhow::Result<()> {
    let url = redis_url();
    let counter = redis::Client::open(url.as_str())?
        .get_connection_manager()
        .await?;
    let graphs =
        Graphs::new().register("research", research(Some((counter, ns.to_owned())), speed))?;
    let worker = Worker::builder(RedisBroker::new(url.clone()), graphs)
        .persister(Arc::new(
            RedisPersister::connect_with_prefix(&url, ns).await?,
        ))
        .name(name)
        .concurrency(8)
        .options(options(ns))
        .build()?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    println!("ready");
    worker
        .run(async move { term.recv().await.unwrap_or(()) })
        .await?;
    Ok(())
}

async fn spawn_worker(name: &str, ns: &str, speed: f64) -> anyhow::Result<Child> {
    let mut child = Command::new(std::env::current_exe()?)
        .args(["--worker", name, "--ns", ns, "--speed", &speed.to_string()])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
    match tokio::time::timeout(Duration::from_secs(30), lines.next_line()).await {
        Ok(Ok(Some(line))) if line == "ready" => Ok(child),
        other => anyhow::bail!("worker {name} did not start: {other:?}"),
    }
}

/// The command line, and the worker name and namespace when started as a worker.
type Parsed = (Args, Option<(String, String)>);

fn parse() -> anyhow::Result<Option<Parsed>> {
    let mut args = Args {
        topic: "how rivers shape cities".to_owned(),
        subtopics: 12,
        kill_after: 1200,
        speed: 1.0,
    };
    let (mut worker, mut ns) = (None, None);
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .ok_or_else(|| anyhow::anyhow!("{flag} needs a value"))
        };
        match flag.as_str() {
            "--topic" => args.topic = value()?,
            "--subtopics" => args.subtopics = value()?.parse()?,
            "--kill-after" => args.kill_after = value()?.parse()?,
            "--speed" => args.speed = value()?.parse()?,
            "--worker" => worker = Some(value()?),
            "--ns" => ns = Some(value()?),
            "-h" | "--help" => {
                println!("{HELP}");
                return Ok(None);
            }
            other => anyhow::bail!("unknown flag {other}\n\n{HELP}"),
        }
    }
    Ok(Some((args, worker.zip(ns))))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let Some((args, worker_of)) = parse()? else {
        return Ok(());
    };
    if let Some((name, ns)) = worker_of {
        return worker(&name, &ns, args.speed).await;
    }
    let url = redis_url();
    let mut probe = redis::Client::open(url.as_str())?
        .get_connection_manager()
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "Redis at {url} is not reachable ({e}); start it or set TRIBUTARY_REDIS_URL"
            )
        })?;
    let ns = format!("research-{}", std::process::id());
    // w0 starts alone and claims the first tasks (up to its concurrency);
    // w1 and w2 join once the run streams, so the kill of w0 always hits
    // running tasks.
    println!("starting worker w0 (namespace {ns}) ...");
    let mut workers = vec![spawn_worker("w0", &ns, args.speed).await?];

    let caller = ClusterRuntime::new(RedisBroker::new(url.clone())).options(options(&ns))?;
    let started = Instant::now();
    let (_handle, mut stream) = caller.run(tasks(&args, Some("research"), None), RunConfig::new());
    let mut finals = BTreeMap::new();
    let mut app_ids = Vec::new();
    let mut tokens = 0usize;
    let kill_at = (args.kill_after > 0).then(|| Duration::from_millis(args.kill_after));
    let mut killed = false;
    loop {
        let until_kill = kill_at
            .filter(|_| !killed)
            .map(|at| at.saturating_sub(started.elapsed()));
        tokio::select! {
            item = stream.next() => {
                let Some(item) = item else { break };
                match item.kind {
                    ItemKind::Token => {
                        tokens += 1;
                        if workers.len() == 1 {
                            for name in ["w1", "w2"] {
                                workers.push(spawn_worker(name, &ns, args.speed).await?);
                            }
                            println!("workers w1 and w2 joined");
                        }
                    }
                    ItemKind::Final => {
                        let state = item.state_update.expect("a final state");
                        finals.insert(item.task_key.to_string(), state.get_as::<String>("summary")?);
                        app_ids.push(item.app_id.to_string());
                        println!("  {} done ({} of {})", item.task_key, finals.len(), args.subtopics);
                    }
                    ItemKind::Failed | ItemKind::Cancelled => {
                        anyhow::bail!("task {} ended {:?}: {:?}", item.task_key, item.kind, item.error);
                    }
                    ItemKind::NodeComplete => {}
                }
            }
            () = tokio::time::sleep(until_kill.unwrap_or(Duration::MAX)), if until_kill.is_some() => {
                killed = true;
                if workers.len() == 1 {
                    for name in ["w1", "w2"] {
                        workers.push(spawn_worker(name, &ns, args.speed).await?);
                    }
                    println!("workers w1 and w2 joined");
                }
                workers[0].start_kill()?; // SIGKILL
                let _ = workers[0].wait().await;
                println!("killed worker w0 (SIGKILL) at {:?}", started.elapsed());
            }
        }
    }
    let elapsed = started.elapsed();
    let distributed = report(&args.topic, &finals);

    // The same job in one process, for comparison.
    let graph = research(None, args.speed);
    let (_h, mut stream) = Runtime::new().run(tasks(&args, None, Some(&graph)), RunConfig::new());
    let mut local = BTreeMap::new();
    while let Some(item) = stream.next().await {
        if item.kind == ItemKind::Final {
            let state = item.state_update.expect("a final state");
            local.insert(
                item.task_key.to_string(),
                state.get_as::<String>("summary")?,
            );
        }
    }
    let single = report(&args.topic, &local);

    // How often each step ran on the fleet.
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{ns}:exec:*"))
        .query_async(&mut probe)
        .await?;
    let mut twice = 0;
    for key in &keys {
        let n: i64 = redis::cmd("GET").arg(key).query_async(&mut probe).await?;
        if n > 1 {
            twice += 1;
        }
    }
    // Tasks that a second claim finished: their checkpoints carry epoch 2+.
    let mut taken_over = 0;
    for app_id in &app_ids {
        let epoch: Option<u64> = redis::cmd("HGET")
            .arg(format!("{ns}:{{{app_id}}}:meta"))
            .arg("epoch")
            .query_async(&mut probe)
            .await?;
        if epoch.unwrap_or(0) > 1 {
            taken_over += 1;
        }
    }
    println!("\n{distributed}");
    println!(
        "tasks taken over from the killed worker and resumed from their checkpoints: {taken_over}"
    );
    println!(
        "{} tasks on the fleet in {elapsed:?}, {tokens} tokens streamed",
        finals.len()
    );
    println!(
        "steps run: {}; steps run twice: {twice} (at most one per task the kill interrupted)",
        keys.len()
    );
    println!(
        "reports equal: {}",
        if distributed == single { "yes" } else { "NO" }
    );
    for mut w in workers.into_iter().skip(1) {
        let _ = w.start_kill();
        let _ = w.wait().await;
    }
    // Tidy the namespace's counters (the queues and checkpoints stay for
    // inspection; see docs/cluster.md for retention).
    if !keys.is_empty() {
        let _: i64 = redis::cmd("DEL").arg(&keys).query_async(&mut probe).await?;
    }
    anyhow::ensure!(
        distributed == single,
        "the distributed report differs from the single-process one"
    );
    anyhow::ensure!(
        finals.len() == args.subtopics,
        "every subtopic is researched"
    );
    Ok(())
}
