//! Helper process for the cross-process resume test of a runtime run:
//! runs (or resumes) the run `nightly-research` of `TASKS` tasks on the
//! SQLite database `DB`. Task `t` is a parallel `map` of three children;
//! child `c` sleeps `STEP_MS * (1 + 3t + c)` ms, appends the line `t c` to
//! `EXEC_LOG` (one `write` call, append mode) and returns `10 (t + 1) +
//! c`. The reducer appends `t r` and stores the children's results, read
//! from their outcomes, in `results`. At the end it prints every task's
//! `Final` item as JSON, one line each, in task order.
//!
//! Usage: `runtime_crash_run DB EXEC_LOG TASKS STEP_MS`

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde_json::{Value, json};
use tributary::{
    Graph, ItemKind, MergeMode, ParallelAction, RunConfig, Runtime, State, Subgraph, TaskSpec,
    action,
};
use tributary_sqlite::SqlitePersister;

/// The run's id, the same in every process.
const RUN_ID: &str = "nightly-research";

fn append(log: &Path, line: String) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)?;
    // One write call: a kill cannot leave half a line.
    file.write_all(line.as_bytes())
}

fn task_graph(log: PathBuf, step_ms: u64) -> Graph {
    let child_log = log.clone();
    let child = Subgraph::action(action("work").reads(["t", "c"]).writes(["out"]).run(
        move |s: State, _, _| {
            let log = child_log.clone();
            async move {
                let (t, c): (u64, u64) = (s.get_as("t")?, s.get_as("c")?);
                tokio::time::sleep(Duration::from_millis(step_ms * (1 + 3 * t + c))).await;
                append(&log, format!("{t} {c}\n"))?;
                let out = 10 * (t + 1) + c;
                Ok((json!({ "out": out }), s.set("out", out)))
            }
        },
    ));
    let map = ParallelAction::map_states("map", child, |s: &State, _| {
        let t: u64 = s.get_as("t")?;
        Ok((0..3u64).map(move |c| State::new().set("t", t).set("c", c)))
    })
    .reads(["t"])
    .writes(["results"])
    .reduce(move |s, outcomes| {
        let t: u64 = s.get_as("t")?;
        append(&log, format!("{t} r\n"))?;
        let results: Vec<Value> = outcomes
            .iter()
            .map(|o| {
                o.result()
                    .and_then(|r| r.get("out"))
                    .cloned()
                    .unwrap_or(Value::Null)
            })
            .collect();
        Ok(s.set("results", results))
    })
    .build();
    Graph::single(map)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [db, exec_log, tasks, step_ms] = args.as_slice() else {
        anyhow::bail!("usage: runtime_crash_run DB EXEC_LOG TASKS STEP_MS");
    };
    let tasks: u64 = tasks.parse().context("TASKS")?;
    let step_ms: u64 = step_ms.parse().context("STEP_MS")?;
    let persister = Arc::new(SqlitePersister::open(db).await?);
    let graph = task_graph(PathBuf::from(exec_log), step_ms);
    let specs: Vec<TaskSpec> = (0..tasks)
        .map(|t| TaskSpec::new(format!("t{t}"), graph.clone()).state(State::new().set("t", t)))
        .collect();
    let config = RunConfig::new()
        .run_id(RUN_ID)
        .persister(persister)
        .merge_mode(MergeMode::Ordered)
        .intermediate_nodes(false);
    let (_handle, mut stream) = Runtime::new().run(specs, config);
    let mut stdout = std::io::stdout().lock();
    while let Some(item) = stream.next().await {
        // Only the top-level tasks' ends (children's items carry longer
        // paths).
        if item.path.keys().len() != 1 {
            continue;
        }
        anyhow::ensure!(item.kind == ItemKind::Final, "task ended badly: {item:?}");
        writeln!(stdout, "{}", serde_json::to_string(&item)?)?;
    }
    stdout.flush()?;
    Ok(())
}
