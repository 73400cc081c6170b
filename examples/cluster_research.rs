//! The deep-research job on a cluster of three worker processes. Run with
//! `cargo run -p tributary-examples --example cluster_research`
//! (needs Redis; `TRIBUTARY_REDIS_URL`, default `redis://127.0.0.1:6379`).
//!
//! The example starts three copies of itself as workers (`--worker NAME`;
//! w0 first, so it holds the first tasks, then w1 and w2), each
//! registering two graphs and checkpointing every step to Redis:
//! `deep-research`, a parent whose parallel action fans out one child per
//! subtopic and reduces their summaries into the report, and `research`,
//! the child (search → read → summarise, with seeded latency). The caller
//! runs one `deep-research` task on the fleet; its children go to the
//! fleet's queue too. Part-way through, it kills w0 — which holds the
//! parent and most children — with SIGKILL: the others take the parent
//! and the children over within two heartbeats, and each child resumes
//! from its last checkpoint. At the end it prints the report, runs the
//! same job in one process, and checks that the two reports are equal and
//! that no finished step ran twice.

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
    ActionContext, Graph, ItemKind, ParallelAction, RunConfig, Runtime, State, TaskSpec, action,
    default,
};
use tributary_examples::Rng;

const HELP: &str =
    "cluster_research: the deep-research job on three worker processes, one killed mid-run

usage: cluster_research [options]
  --topic TEXT       what to research (default: \"how rivers shape cities\")
  --subtopics N      children the parent fans out to the fleet (default 12)
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

/// The parent: one child per subtopic (`s00`, `s01`, ...), each the
/// research graph — named, so it goes to the fleet, or carried, so it runs
/// in this process — and a report made of their summaries, in key order.
fn deep_research(child: Option<Graph>) -> Graph {
    let fan = ParallelAction::tasks("research", move |s: &State, _| {
        let topic: String = s.get_as("topic")?;
        let n: usize = s.get_as("subtopics")?;
        let child = child.clone();
        Ok((0..n).map(move |i| {
            let subtopic = format!("{topic}: {} #{i}", ANGLES[i % ANGLES.len()]);
            let key = format!("s{i:02}");
            let spec = match &child {
                Some(graph) => TaskSpec::new(key, graph.clone()),
                None => TaskSpec::named(key, "research"),
            };
            spec.state(State::new().set("subtopic", subtopic))
                .halt_after(["summarise"])
        }))
    })
    .reads(["topic", "subtopics"])
    .writes(["report"])
    .reduce(|s, outcomes| {
        let topic: String = s.get_as("topic")?;
        let mut summaries = BTreeMap::new();
        for o in &outcomes {
            let state = o.state().ok_or("a subtopic was not researched")?;
            summaries.insert(o.key.to_string(), state.get_as::<String>("summary")?);
        }
        Ok(s.set("report", report(&topic, &summaries)))
    })
    .build();
    Graph::single(fan)
}

fn job(args: &Args, graph: Option<Graph>) -> TaskSpec {
    let state = State::new()
        .set("topic", args.topic.clone())
        .set("subtopics", args.subtopics);
    match graph {
        Some(g) => TaskSpec::new("deep-research", g),
        None => TaskSpec::named("deep-research", "deep-research"),
    }
    .state(state)
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
    let graphs = Graphs::new()
        .register("research", research(Some((counter, ns.to_owned())), speed))?
        .register("deep-research", deep_research(None))?;
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
    let (_handle, mut stream) = caller.run(vec![job(&args, None)], RunConfig::new());
    let mut done = 0usize;
    let mut distributed = None;
    let mut parent_id = String::new();
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
                    // A child's end, relayed under the parent's path.
                    ItemKind::Final if item.is_nested() => {
                        done += 1;
                        app_ids.push(item.app_id.to_string());
                        println!("  {} done ({done} of {})", item.path, args.subtopics);
                    }
                    ItemKind::Final => {
                        let state = item.state_update.expect("a final state");
                        distributed = Some(state.get_as::<String>("report")?);
                        parent_id = item.app_id.to_string();
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
    let distributed =
        distributed.ok_or_else(|| anyhow::anyhow!("the job ended without a report"))?;

    // The same job in one process, for comparison.
    let local = deep_research(Some(research(None, args.speed)));
    let (_h, mut stream) = Runtime::new().run(vec![job(&args, Some(local))], RunConfig::new());
    let mut single = String::new();
    while let Some(item) = stream.next().await {
        if item.kind == ItemKind::Final && !item.is_nested() {
            let state = item.state_update.expect("a final state");
            single = state.get_as::<String>("report")?;
        }
    }

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
    // Tasks that a later claim finished: the parent's checkpoints carry
    // epoch 2 or more, a child's its parent claim's epoch in the bits above
    // 16 and its own below.
    let mut taken_over = 0;
    for (app_id, child) in
        std::iter::once((&parent_id, false)).chain(app_ids.iter().map(|a| (a, true)))
    {
        let epoch: Option<u64> = redis::cmd("HGET")
            .arg(format!("{ns}:{{{app_id}}}:meta"))
            .arg("epoch")
            .query_async(&mut probe)
            .await?;
        let epoch = epoch.unwrap_or(0);
        let later = if child {
            epoch >> 16 > 1 || epoch & 0xffff > 1
        } else {
            epoch > 1
        };
        if later {
            taken_over += 1;
        }
    }
    println!("\n{distributed}");
    println!(
        "tasks taken over from the killed worker and resumed from their checkpoints: {taken_over}"
    );
    println!("1 parent and {done} children on the fleet in {elapsed:?}, {tokens} tokens streamed");
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
    anyhow::ensure!(done == args.subtopics, "every subtopic is researched");
    Ok(())
}
