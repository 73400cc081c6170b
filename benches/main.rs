//! tributary's bench runner: every scenario next to a hand-written
//! bare-tokio baseline doing the same work in the same process run.
//!
//! ```text
//! cargo run --release -p tributary-benches -- <scenario|all> [--quick] [--repeats N]
//! ```
//!
//! Prints one JSON line per measurement: the scenario, its parameters, the
//! median, min and max over the repeats, the baseline's, their ratio, the
//! target and whether it is met, and the peak RSS where it matters.
//! Scenarios: `map_cpu`, `map_io`, `merge`, `first_item`, `pause`, `cancel`,
//! `memory` (`memory_suspended` and `memory_slow_consumer`, each in a child
//! process of its own). See `docs/benchmarks.md`.

mod report;
mod scenarios;
mod workloads;

use std::time::Instant;

use anyhow::{Context, bail};

use scenarios::{control, map, memory, merge};

const SCENARIOS: &[&str] = &[
    "map_cpu",
    "map_io",
    "merge",
    "first_item",
    "pause",
    "cancel",
    "memory",
];

/// How long to measure.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Opts {
    pub(crate) quick: bool,
    repeats: Option<usize>,
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

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--child") {
        let what = args.get(1).context("--child needs a measurement")?;
        let n: u64 = args.get(2).context("--child needs a count")?.parse()?;
        let answer = runtime()?.block_on(memory::run_child(what, n));
        println!("{answer}");
        return Ok(());
    }
    let mut opts = Opts {
        quick: false,
        repeats: None,
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
            "all" => chosen.extend(SCENARIOS.iter().copied()),
            "-h" | "--help" => {
                println!(
                    "usage: tributary-bench <scenario|all>... [--quick] [--repeats N]\nscenarios: {}",
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
    let rt = runtime()?;
    let started = Instant::now();
    for scenario in chosen {
        let t = Instant::now();
        match scenario {
            "map_cpu" => rt.block_on(map::map_cpu(&opts)),
            "map_io" => rt.block_on(map::map_io(&opts)),
            "merge" => rt.block_on(merge::merge(&opts)),
            "first_item" => rt.block_on(merge::first_item(&opts)),
            "pause" => rt.block_on(control::pause(&opts)),
            "cancel" => rt.block_on(control::cancel(&opts)),
            "memory" => {
                memory::suspended(&opts);
                memory::slow_consumer(&opts);
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
