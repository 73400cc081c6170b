//! callgrind: instructions and heap allocations per subgraph of map_cpu and
//! of its bare-tokio baseline, counted under `valgrind --tool=callgrind`.
//!
//! Wall time on a shared machine moves with its load; instruction counts do
//! not, so a regression in the per-subgraph path shows as a number. Each
//! measurement is the runner re-executed as a child under callgrind, once
//! with a warm-up only and once with the warm-up followed by `N` subgraphs;
//! the difference over `N` is the cost of one subgraph, without the process
//! start, the runtime's threads and the first-use growth of its tables.
//! Heap allocations are counted the same way, by the same children under
//! `valgrind --tool=dhat` (its total of blocks allocated).
//!
//! Each pair is counted on two runtimes: tokio's multi-thread runtime (the
//! default, what users run), and its current-thread runtime, on which
//! the tasks and the consumer take turns in an order fixed by the program
//! alone. On the multi-thread runtime the count still depends a little on
//! how valgrind interleaves the threads (how often a task finds the
//! consumer's mailbox full and must wait, for instance); on the
//! current-thread runtime it does not, so that count moves only when the
//! code does.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use serde_json::{Value, json};
use tributary::Runtime;

use crate::Opts;
use crate::report::Measurement;
use crate::workloads::{bare_map, expected, tributary_map, two_steps};

/// Subgraphs measured per child.
const N: u64 = 2_000;
/// Subgraphs run before the measured ones, in both children.
const WARMUP: u64 = 500;

/// Whether `what` names a callgrind child.
pub(crate) fn is_child(what: &str) -> bool {
    matches!(
        what,
        "cg-map-cpu" | "cg-map-cpu-bare" | "cg-map-cpu-ct" | "cg-map-cpu-bare-ct"
    )
}

/// Whether the child `what` runs on tokio's current-thread runtime.
pub(crate) fn on_current_thread(what: &str) -> bool {
    what.ends_with("-ct")
}

/// The child's side: a warm-up of [`WARMUP`] subgraphs, then `n` more.
pub(crate) async fn run_child(what: &str, n: u64) -> Value {
    let graph = two_steps(None);
    let rt = Runtime::new();
    let bare = what.starts_with("cg-map-cpu-bare");
    let run = async |n: usize| {
        let got = if bare {
            bare_map(n, None).await
        } else {
            tributary_map(&rt, &graph, n).await
        };
        assert_eq!(got, expected(n), "{what} reduced wrongly");
    };
    run(WARMUP as usize).await;
    if n > 0 {
        run(n as usize).await;
    }
    json!({ "warmup": WARMUP, "n": n })
}

/// Instructions and allocations per subgraph, tributary against bare tokio.
pub(crate) fn callgrind(opts: &Opts) -> anyhow::Result<()> {
    match Command::new("valgrind").arg("--version").output() {
        Ok(out) if out.status.success() => {}
        Ok(out) => bail!(
            "the callgrind scenario needs valgrind, and `valgrind --version` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(e) => {
            bail!("the callgrind scenario needs valgrind on the PATH ({e}); nothing measured")
        }
    }
    let dir = std::env::temp_dir().join(format!("tributary-callgrind-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let result = measure(opts, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn measure(opts: &Opts, dir: &Path) -> anyhow::Result<()> {
    for (flavor, pair) in [
        ("multi_thread", ["cg-map-cpu", "cg-map-cpu-bare"]),
        ("current_thread", ["cg-map-cpu-ct", "cg-map-cpu-bare-ct"]),
    ] {
        measure_pair(opts, dir, flavor, pair)?;
    }
    Ok(())
}

/// One runtime flavor's pair of measurements.
fn measure_pair(opts: &Opts, dir: &Path, flavor: &str, pair: [&str; 2]) -> anyhow::Result<()> {
    let repeats = opts.repeats(5);
    let (mut ir, mut allocs) = ([Vec::new(), Vec::new()], [Vec::new(), Vec::new()]);
    for r in 0..repeats {
        for (side, what) in pair.into_iter().enumerate() {
            let warm = child(what, 0, dir, r)?;
            let full = child(what, N, dir, r)?;
            ir[side].push((full.ir as f64 - warm.ir as f64) / N as f64);
            allocs[side].push((full.allocs as f64 - warm.allocs as f64) / N as f64);
        }
    }
    let params = json!({
        "n": N,
        "warmup": WARMUP,
        "actions": 2,
        "persistence": false,
        "runtime": flavor,
        "tool": "valgrind --fair-sched=yes --tool=callgrind (instructions), --tool=dhat (allocations)",
    });
    let [ours, bare] = ir;
    Measurement::new(
        "callgrind_map_cpu",
        params.clone(),
        "instructions_per_subgraph",
    )
    .samples(ours)
    .baseline("bare_tokio", bare)
    .emit();
    let [ours, bare] = allocs;
    Measurement::new("callgrind_map_cpu", params, "allocations_per_subgraph")
        .samples(ours)
        .baseline("bare_tokio", bare)
        .emit();
    Ok(())
}

/// What the children counted.
struct Counted {
    ir: u64,
    allocs: u64,
}

/// The child `what` with `n` subgraphs, under callgrind and under dhat.
fn child(what: &str, n: u64, dir: &Path, repeat: usize) -> anyhow::Result<Counted> {
    let out_file: PathBuf = dir.join(format!("{what}-{n}-{repeat}.out"));
    under_valgrind(
        what,
        n,
        &[
            "--tool=callgrind".to_owned(),
            format!("--callgrind-out-file={}", out_file.display()),
        ],
    )?;
    let text = std::fs::read_to_string(&out_file)
        .with_context(|| format!("reading {}", out_file.display()))?;
    let ir = total_ir(&text)
        .with_context(|| format!("no instruction total in {}", out_file.display()))?;
    let _ = std::fs::remove_file(&out_file);
    let dhat_file = dir.join(format!("{what}-{n}-{repeat}.dhat.json"));
    let stderr = under_valgrind(
        what,
        n,
        &[
            "--tool=dhat".to_owned(),
            format!("--dhat-out-file={}", dhat_file.display()),
        ],
    )?;
    let _ = std::fs::remove_file(&dhat_file);
    let allocs = dhat_blocks(&stderr)
        .with_context(|| format!("no allocation total in dhat's report on {what} {n}"))?;
    Ok(Counted { ir, allocs })
}

/// Run the child `what` with `n` under valgrind with `args`; answer
/// valgrind's stderr.
fn under_valgrind(what: &str, n: u64, args: &[String]) -> anyhow::Result<String> {
    let exe = std::env::current_exe().context("the runner's path")?;
    // Fair scheduling hands the one running thread round in a fixed order,
    // which keeps most counts of the multi-threaded runtime within 1% from
    // run to run (without it they spread by a fifth); the median of the
    // repeats leaves the occasional higher one out.
    let out = Command::new("valgrind")
        .arg("--fair-sched=yes")
        .args(args)
        .arg(&exe)
        .args(["--child", what, &n.to_string()])
        .output()
        .context("running valgrind")?;
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if !out.status.success() {
        bail!(
            "valgrind {} on child {what} {n} failed ({}): {}",
            args[0],
            out.status,
            stderr.trim()
        );
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().context("the child answers")?;
    let _: Value = serde_json::from_str(last).context("the child answers JSON")?;
    Ok(stderr)
}

/// The blocks allocated in dhat's summary: `==PID== Total: B bytes in N blocks`.
fn dhat_blocks(stderr: &str) -> Option<u64> {
    let line = stderr.lines().find_map(|l| l.split_once("Total:"))?.1;
    let blocks = line.split(" in ").nth(1)?.split_whitespace().next()?;
    blocks.replace(',', "").parse().ok()
}

/// The total of the first event (`Ir`) in a callgrind output file: its
/// `totals:` line, or its `summary:` line.
fn total_ir(text: &str) -> Option<u64> {
    let field = |prefix: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(prefix))
            .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
    };
    field("totals:").or_else(|| field("summary:"))
}

#[cfg(test)]
mod tests {
    use super::{dhat_blocks, total_ir};

    #[test]
    fn reads_the_instruction_total_of_a_callgrind_file() {
        let file = "version: 1\ncmd: x\nevents: Ir\nsummary: 18173489\n\nfn=(1) main\n3 12\ntotals: 18173489\n";
        assert_eq!(total_ir(file), Some(18_173_489));
        assert_eq!(total_ir("events: Ir\nsummary: 42\n"), Some(42));
        assert_eq!(total_ir("events: Ir\n"), None);
    }

    #[test]
    fn reads_the_blocks_allocated_of_a_dhat_summary() {
        let stderr = "==2789== \n==2789== Total:     19,013,836 bytes in 115,303 blocks\n==2789== At t-gmax: 744,324 bytes in 2,797 blocks\n";
        assert_eq!(dhat_blocks(stderr), Some(115_303));
        assert_eq!(dhat_blocks("==1== nothing\n"), None);
    }
}
