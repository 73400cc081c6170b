//! SQLite persistence and tracking for tributary: the embedded default.
//!
//! - [`SqlitePersister`] implements [`Persister`](tributary_core::Persister):
//!   a checkpoint after every step, so a crashed or failed run resumes
//!   without redoing finished work.
//! - [`SqliteTracker`] is a [`Hook`](tributary_core::Hook) that records every
//!   step of every application (timing, result, state, error, stream item
//!   counts, fork and spawning-parent pointers).
//! - [`RunReader`] reads the tracker's records back; the `tributary` command
//!   is built on it.
//!
//! Both writers share the machinery of [`Database`]: one connection on a
//! dedicated writer thread, WAL mode, a busy timeout, group commit, and a
//! schema versioned in `PRAGMA user_version` that migrates itself. The
//! bundled SQLite is compiled in: nothing to install.
//!
//! # Examples
//!
//! A run that fails, then resumes at the failed action from the file:
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use serde_json::json;
//! use tributary_core::{Application, Graph, RunOptions, State, action, default};
//! use tributary_sqlite::{Database, SqlitePersister, SqliteTracker};
//!
//! let dir = tempfile::tempdir()?;
//! let db = Database::open(dir.path().join("tributary.db")).await?;
//! let persister = Arc::new(SqlitePersister::new(db.clone()));
//! let tracker = SqliteTracker::new(db);
//!
//! let graph = Graph::builder()
//!     .action(action("fetch").writes(["page"]).run(|s: State, _, _| async move {
//!         Ok((json!({}), s.set("page", "<html>")))
//!     }))
//!     .action(action("parse").reads(["page", "ready"]).writes(["title"]).run(|s: State, _, _| async move {
//!         if s.get("ready").is_none() { return Err("parser not ready".into()) }
//!         Ok((json!({}), s.set("title", "hello")))
//!     }))
//!     .transition("fetch", "parse", default())
//!     .entrypoint("fetch")
//!     .build()?;
//!
//! let mut first = Application::builder(graph.clone())
//!     .app_id("job-1")
//!     .persister(persister.clone())
//!     .hook(tracker.clone())
//!     .build()
//!     .await?;
//! assert!(first.run(RunOptions::new()).await.is_err()); // `parse` failed
//!
//! // Same app id, resumed: `fetch` does not run again, `parse` does.
//! let mut again = Application::builder(graph)
//!     .app_id("job-1")
//!     .persister(persister.clone())
//!     .hook(tracker.clone())
//!     .resume()
//!     .build()
//!     .await?;
//! assert_eq!(again.next_action(), Some("parse"));
//! again.set_state(again.state().set("ready", true));
//! let out = again.run(RunOptions::new()).await?;
//! assert_eq!(out.state.get("title"), Some(&json!("hello")));
//! tracker.flush().await?;
//! # Ok(())
//! # }
//! ```

mod database;
mod error;
#[cfg(feature = "durable")]
mod journal;
mod persister;
mod process;
mod runs;
mod schema;
mod source;
mod tracker;

#[doc(inline)]
pub use database::Database;
#[doc(inline)]
pub use error::SqliteError;
#[doc(inline)]
#[cfg(feature = "durable")]
pub use journal::SqliteJournal;
#[doc(inline)]
pub use persister::SqlitePersister;
#[doc(inline)]
pub use runs::{Gap, RunReader, RunStatus, RunSummary, StepPaused, TrackedStep, TrackedStepStatus};
#[doc(inline)]
pub use source::{
    AppFilter, AppRecord, JournalReplay, JournaledStep, RunSource, StepMark, StepRecord,
    TrackerRows,
};
#[doc(inline)]
pub use tracker::SqliteTracker;

/// The newest schema version this build of tributary reads and writes
/// (`PRAGMA user_version` of its databases).
pub const SCHEMA_VERSION: i64 = schema::SCHEMA_VERSION;

/// Microseconds since the Unix epoch.
pub(crate) fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

// The guides' examples are tested with the crate's.
#[cfg(doctest)]
#[doc = include_str!("../../../docs/persistence.md")]
struct PersistenceGuide;

#[cfg(doctest)]
#[doc = include_str!("../../../docs/tracking.md")]
struct TrackingGuide;
