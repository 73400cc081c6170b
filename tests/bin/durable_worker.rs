//! Helper process for the durable SIGKILL test: a workflow `count` of
//! `STEPS` steps on a SQLite journal at `DB`. Each step appends its index
//! to `EXEC_LOG` and prints `ran I` when its body starts, then waits
//! `DELAY_MS`. `start` starts the workflow `ID`; `resume` calls
//! `resume_all`. Both print `resumed IDS` (comma-separated, `resume` only)
//! and `result JSON` for each workflow they waited for.
//!
//! Usage: `durable_worker DB EXEC_LOG start|resume ID STEPS DELAY_MS`

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tributary::BoxError;
use tributary::durable::{DurableExt, WorkflowContext, Workflows};
use tributary::sqlite::SqliteJournal;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [db, log, mode, id, steps, delay_ms] = args.as_slice() else {
        anyhow::bail!("usage: durable_worker DB EXEC_LOG start|resume ID STEPS DELAY_MS");
    };
    let steps: u64 = steps.parse().context("STEPS")?;
    let delay = Duration::from_millis(delay_ms.parse().context("DELAY_MS")?);
    let log = log.clone();
    let workflows = Workflows::new(Arc::new(SqliteJournal::open(db).await?));
    workflows.register("count", move |ctx: WorkflowContext, steps: u64| {
        let log = log.clone();
        async move {
            let mut trail: Vec<u64> = Vec::new();
            for i in 0..steps {
                let log = log.clone();
                let prev = trail.last().copied().unwrap_or(1);
                let next: u64 = ctx
                    .step("tick", async move {
                        let mut file = std::fs::OpenOptions::new()
                            .create(true)
                            .append(true)
                            .open(&log)?;
                        writeln!(file, "{i}")?;
                        println!("ran {i}");
                        std::io::stdout().flush()?;
                        tokio::time::sleep(delay).await;
                        Ok::<_, BoxError>((prev * 31 + i) % 1_000_003)
                    })
                    .await?;
                trail.push(next);
            }
            Ok::<_, BoxError>(trail)
        }
    });
    let handles = match mode.as_str() {
        "start" => vec![workflows.start("count", id, steps).await?],
        "resume" => {
            let handles = workflows.resume_all().await?;
            let ids: Vec<&str> = handles.iter().map(|h| h.id()).collect();
            println!("resumed {}", ids.join(","));
            handles
        }
        other => anyhow::bail!("unknown mode {other}"),
    };
    for handle in handles {
        let trail: Vec<u64> = handle.result().await?;
        println!("result {}", serde_json::to_string(&trail)?);
    }
    Ok(())
}
