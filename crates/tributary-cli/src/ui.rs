//! `tributary ui`: the web view of a SQLite file or a PostgreSQL database.
//!
//! A SQLite file is served as it is, read fresh on each request. A
//! PostgreSQL database is read as the other commands read it, into a
//! temporary SQLite file ([`copy_into`](crate::postgres::copy_into)), and
//! that copy is kept fresh: a connection listens for the steps the
//! trackers announce, and each announcement (at most one copy a second)
//! or, without any, every [`IDLE_REFRESH`] (runs created without a step
//! yet announce nothing) makes a new copy that the server switches to.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::net::TcpListener;
use tributary_postgres::StepFeed;
use tributary_ui::UiServer;

use crate::postgres::{copy_into, is_url};
use crate::{Cli, CliError};

/// How long copies of a PostgreSQL database are apart at least.
const SETTLE: Duration = Duration::from_secs(1);
/// How often a PostgreSQL database is copied again when nothing was
/// announced.
const IDLE_REFRESH: Duration = Duration::from_secs(10);

/// Serve the web view of `cli`'s database (`--db`, a file or a
/// `postgres://` URL) on `listener` until `shutdown` resolves, read-only.
/// `announce` is told what is served once it is ready (the file, or the
/// PostgreSQL server, database and schema).
///
/// # Errors
///
/// [`CliError`] when the database cannot be read (the first copy of a
/// PostgreSQL database included) or serving fails. A later copy that fails
/// leaves the view on the last good one and is reported on stderr.
///
/// # Cancel safety
///
/// Dropping the future stops the server and the copying.
pub async fn serve_ui(
    cli: &Cli,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
    announce: impl FnOnce(&str),
) -> Result<(), CliError> {
    let db = cli.db_path();
    let Some(url) = db.to_str().filter(|d| is_url(d)).map(str::to_owned) else {
        let ui = UiServer::new().database(&db)?;
        announce(&db.display().to_string());
        return Ok(ui.serve_with_shutdown(listener, shutdown).await?);
    };
    let schema = cli.schema.clone();
    // Listening first: a step recorded while the first copy is read is
    // announced, and copied by the next.
    let feed = StepFeed::connect(&url, &schema).await?;
    let dir = tempfile::tempdir().map_err(|e| CliError::Snapshot {
        reason: e.to_string(),
    })?;
    let first = copy_path(dir.path(), 0);
    let source = copy_into(&url, &schema, &first).await?;
    let ui = UiServer::new().database(&first)?;
    announce(&source);
    // Aborted when serving ends or this future is dropped; the copies'
    // directory goes with it.
    let refresher = AbortOnDrop(tokio::spawn(refresh(ui.clone(), feed, url, schema, dir)));
    let served = ui.serve_with_shutdown(listener, shutdown).await;
    drop(refresher);
    Ok(served?)
}

/// A task that ends with its handle.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn copy_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("copy-{n}.db"))
}

/// Copy the database again after each announcement (at most once per
/// [`SETTLE`]) or every [`IDLE_REFRESH`], switching the server to the new
/// copy. The copy before the last is removed: a request reading the last
/// one when it was replaced still has its file.
async fn refresh(
    ui: UiServer,
    mut feed: StepFeed,
    url: String,
    schema: String,
    dir: tempfile::TempDir,
) {
    let mut listening = true;
    let mut n = 0u64;
    loop {
        if listening {
            match tokio::time::timeout(IDLE_REFRESH, feed.next()).await {
                Ok(Some(Ok(_))) | Err(_) => {}
                Ok(Some(Err(e))) => {
                    eprintln!(
                        "tributary ui: no longer told of new steps ({e}); copying every {}s",
                        IDLE_REFRESH.as_secs()
                    );
                    listening = false;
                }
                Ok(None) => listening = false,
            }
        } else {
            tokio::time::sleep(IDLE_REFRESH).await;
        }
        tokio::time::sleep(SETTLE).await;
        // What was announced meanwhile is in the copy about to be made.
        while let Ok(Some(Ok(_))) = tokio::time::timeout(Duration::ZERO, feed.next()).await {}
        n += 1;
        let path = copy_path(dir.path(), n);
        let copied = match copy_into(&url, &schema, &path).await {
            Ok(_) => ui.clone().database(&path).map_err(CliError::from),
            Err(e) => Err(e),
        };
        match copied {
            Ok(_) => {
                if let Some(old) = n.checked_sub(2) {
                    remove(&copy_path(dir.path(), old));
                }
            }
            Err(e) => {
                eprintln!(
                    "tributary ui: cannot copy the database again, showing the last copy: {e}"
                );
                remove(&path);
            }
        }
    }
}

fn remove(path: &Path) {
    for suffix in ["", "-wal", "-shm"] {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        let _ = std::fs::remove_file(name);
    }
}
