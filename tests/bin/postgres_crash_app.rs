//! Helper process for the PostgreSQL crash-resume test: runs (or resumes)
//! the chain application `APP_ID` of `STEPS` steps, each waiting
//! `DELAY_MS`, with a PostgreSQL persister on schema `SCHEMA` of `URL`.
//! Every step appends to `EXEC_LOG` when it starts; after each completed
//! (and checkpointed) step it prints `done SEQ ACTION`, and at the end
//! `final STATE_JSON`.
//!
//! Usage: `postgres_crash_app URL SCHEMA APP_ID EXEC_LOG STEPS DELAY_MS`

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tributary::{Application, Inputs};
use tributary_postgres::{Database, PostgresPersister};
use tributary_tests::chain::chain_graph;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url, schema, app_id, exec_log, steps, delay_ms] = args.as_slice() else {
        anyhow::bail!("usage: postgres_crash_app URL SCHEMA APP_ID EXEC_LOG STEPS DELAY_MS");
    };
    let steps: usize = steps.parse().context("STEPS")?;
    let delay = Duration::from_millis(delay_ms.parse().context("DELAY_MS")?);
    let db = Database::builder(url.as_str())
        .schema(schema.as_str())
        .connect()
        .await?;
    let persister = Arc::new(PostgresPersister::new(db));
    let graph = chain_graph(steps, delay, Some(PathBuf::from(exec_log)));
    let mut app = Application::builder(graph)
        .app_id(app_id.clone())
        .persister(persister)
        .resume()
        .build()
        .await?;
    let mut out = std::io::stdout().lock();
    while let Some(record) = app.step(&Inputs::new()).await? {
        writeln!(out, "done {} {}", record.sequence_id, record.action)?;
        out.flush()?;
    }
    writeln!(out, "final {}", app.state().to_json())?;
    Ok(())
}
