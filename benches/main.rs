//! tributary's bench runner: every scenario next to a hand-written
//! bare-tokio baseline doing the same work in the same process run.
//!
//! ```text
//! cargo run --release -p tributary-benches -- <scenario|all> [--quick] [--repeats N] [--consumer main|task]
//! ```
//!
//! Prints one JSON line per measurement: the scenario, its parameters, the
//! median, min and max over the repeats, the baseline's, their ratio, the
//! target and whether it is met, and the peak RSS where it matters.
//! Scenarios: `map_cpu`, `map_io`, `merge`, `first_item`, `pause`, `cancel`,
//! `memory` (`memory_suspended` and `memory_slow_consumer`, each in a child
//! process of its own), `pipeline` (`pipeline_throughput` of a chain and a
//! diamond, `pipeline_memory_slow_sink` in a child process), `queue` (the
//! work queue on Redis and NATS against the bare clients), `checkpoint`
//! (checkpointed steps/s on SQLite and, with `TRIBUTARY_POSTGRES_URL`,
//! PostgreSQL), `durable` (journaled steps/s on SQLite), `cluster` (the
//! cluster executor through Redis with worker processes), `callgrind`
//! (instructions and allocations per subgraph of map_cpu and its baseline,
//! counted under `valgrind --tool=callgrind`; not part of `all`). See
//! `docs/benchmarks.md`.

mod report;
mod scenarios;
mod workloads;

use std::time::Instant;

use anyhow::{Context, bail};

use scenarios::{
    callgrind, checkpoint, cluster, control, durable, map, memory, merge, pipeline, profile, queue,
};

const SCENARIOS: &[&str] = &[
    "map_cpu",
    "map_io",
    "merge",
    "first_item",
    "pause",
    "cancel",
    "memory",
    "durable",
    "pipeline",
    "queue",
    "checkpoint",
    "cluster",
];

/// How long to measure.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Opts {
    pub(crate) quick: bool,
    repeats: Option<usize>,
    consumer_task: bool,
}

impl Opts {
    /// Repeats of a measurement: `full` by default, fewer with `--quick`,
    /// or what `--repeats` says.
    pub(crate) fn repeats(&self, full: usize) -> usize {
        self.repeats.unwrap_or(if self.quick {
            full.div_ceil(2).max(3)
        } else {
            full
        })
    }
}

/// With `--features mimalloc`, every scenario (tributary and its baseline
/// alike) allocates through mimalloc instead of the system allocator.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if cluster::is_worker(&args) {
        return runtime()?.block_on(cluster::run_worker(&args));
    }
    if args.first().map(String::as_str) == Some("--child") {
        let what = args.get(1).context("--child needs a measurement")?;
        let n: u64 = args.get(2).context("--child needs a count")?.parse()?;
        let answer = if callgrind::is_child(what) {
            let rt = if callgrind::on_current_thread(what) {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?
            } else {
                runtime()?
            };
            rt.block_on(callgrind::run_child(what, n))
        } else if profile::is_profile(what) {
            runtime()?.block_on(profile::run(what, n))
        } else if pipeline::is_child(what) {
            runtime()?.block_on(pipeline::run_child(what, n))
        } else {
            runtime()?.block_on(memory::run_child(what, n))
        };
        println!("{answer}");
        return Ok(());
    }
    let mut opts = Opts {
        quick: false,
        repeats: None,
        consumer_task: false,
    };
    let mut chosen = Vec::new();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--quick" => opts.quick = true,
            "--repeats" => {
                let n = it.next().context("--repeats needs a number")?;
                opts.repeats = Some(n.parse().context("--repeats needs a number")?);
            }
            "--consumer" => match it.next().map(String::as_str) {
                Some("main") => opts.consumer_task = false,
                Some("task") => opts.consumer_task = true,
                _ => bail!("--consumer takes `main` or `task`"),
            },
            "all" => chosen.extend(SCENARIOS.iter().copied()),
            // Slow (every measurement is a child under valgrind), so only
            // when named.
            "callgrind" => chosen.push("callgrind"),
            "-h" | "--help" => {
                println!(
                    "usage: tributary-bench <scenario|all>... [--quick] [--repeats N] [--consumer main|task]\nscenarios: {}, callgrind (not in `all`)",
                    SCENARIOS.join(", ")
                );
                return Ok(());
            }
            s => match SCENARIOS.iter().find(|&&x| x == s) {
                Some(&x) => chosen.push(x),
                None => bail!("unknown scenario `{s}` (try --help)"),
            },
        }
    }
    if chosen.is_empty() {
        bail!("name a scenario or `all` (try --help)");
    }
    report::set_consumer(if opts.consumer_task { "task" } else { "main" });
    let rt = runtime()?;
    let started = Instant::now();
    for scenario in chosen {
        let t = Instant::now();
        // The consumer runs where `#[tokio::main]` runs it (the thread that
        // blocks on the runtime), or with `--consumer task` in a task on a
        // worker, as a consumer inside a service would.
        let on_worker = |f: futures_util::future::BoxFuture<'static, ()>| {
            if opts.consumer_task {
                rt.block_on(rt.spawn(f)).expect("the scenario runs")
            } else {
                rt.block_on(f)
            }
        };
        match scenario {
            "map_cpu" => on_worker(Box::pin(async move { map::map_cpu(&opts).await })),
            "map_io" => on_worker(Box::pin(async move { map::map_io(&opts).await })),
            "merge" => on_worker(Box::pin(async move { merge::merge(&opts).await })),
            "first_item" => on_worker(Box::pin(async move { merge::first_item(&opts).await })),
            "pause" => on_worker(Box::pin(async move { control::pause(&opts).await })),
            "cancel" => on_worker(Box::pin(async move { control::cancel(&opts).await })),
            "durable" => on_worker(Box::pin(async move { durable::durable(&opts).await })),
            "queue" => on_worker(Box::pin(async move { queue::queue(&opts).await })),
            "checkpoint" => on_worker(Box::pin(async move { checkpoint::checkpoint(&opts).await })),
            "cluster" => on_worker(Box::pin(async move { cluster::cluster(&opts).await })),
            "memory" => {
                memory::suspended(&opts);
                memory::slow_consumer(&opts);
            }
            "callgrind" => callgrind::callgrind(&opts)?,
            "pipeline" => {
                on_worker(Box::pin(async move { pipeline::throughput(&opts).await }));
                pipeline::slow_sink(&opts);
            }
            _ => unreachable!("checked above"),
        }
        eprintln!("{scenario}: {:.1} s", t.elapsed().as_secs_f64());
    }
    eprintln!(
        "total: {:.1} s on {} cores",
        started.elapsed().as_secs_f64(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    Ok(())
}
