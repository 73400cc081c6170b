//! PostgreSQL persistence and tracking for tributary: the store that many
//! processes and machines share.
//!
//! - [`PostgresPersister`] implements [`Persister`](tributary_core::Persister),
//!   fencing included: a checkpoint written under an older epoch than the
//!   one stored for its application is refused.
//! - [`PostgresTracker`] is a [`Hook`](tributary_core::Hook) that records
//!   every step of every application, in the columns the SQLite tracker
//!   uses, and announces each step with `NOTIFY`.
//! - `PostgresJournal` (feature `durable`) keeps the journal of durable
//!   steps and the records of durable workflows.
//! - [`StepFeed`] ([`Database::follow`], [`StepFeed::connect`]) receives
//!   those announcements as they commit, without polling.
//! - [`TrackerReader`] queries the tracker's rows for tools (the
//!   `tributary` command); [`TrackerSnapshot`] reads them all at once.
//!
//! Both writers share the machinery of [`Database`]: a connection pool
//! (`deadpool-postgres` over `tokio-postgres`) on a dedicated writer thread,
//! group commit with pipelined statements, retries of serialization
//! failures and deadlocks, and a schema (by default `tributary`) migrated
//! by versioned scripts through [`refinery`](https://docs.rs/refinery)
//! under an advisory lock, so many processes can open one database at once.
//!
//! # Examples
//!
//! ```no_run
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use serde_json::json;
//! use tributary_core::{Application, Graph, RunOptions, State, action};
//! use tributary_postgres::{Database, PostgresPersister, PostgresTracker};
//!
//! let db = Database::builder("postgres://postgres@127.0.0.1:5432/test")
//!     .schema("my_service_runs")
//!     .connect()
//!     .await?;
//! let persister = Arc::new(PostgresPersister::new(db.clone()));
//! let tracker = PostgresTracker::new(db);
//! let graph = Graph::single(action("hello").writes(["greeting"]).run(|s: State, _, _| async move {
//!     Ok((json!({}), s.set("greeting", "hi")))
//! }));
//! let mut app = Application::builder(graph)
//!     .app_id("job-1")
//!     .persister(persister)
//!     .hook(tracker.clone())
//!     .resume()
//!     .build()
//!     .await?;
//! app.run(RunOptions::new()).await?;
//! tracker.flush().await?;
//! # Ok(())
//! # }
//! ```

mod database;
mod error;
mod feed;
#[cfg(feature = "durable")]
mod journal;
mod persister;
mod process;
mod reader;
mod schema;
mod snapshot;
mod tracker;

#[doc(inline)]
pub use database::{Database, DatabaseBuilder};
#[doc(inline)]
pub use error::PostgresError;
#[doc(inline)]
pub use feed::{StepFeed, StepNotice};
#[doc(inline)]
#[cfg(feature = "durable")]
pub use journal::PostgresJournal;
#[doc(inline)]
pub use persister::PostgresPersister;
#[doc(inline)]
pub use reader::{AppsWhere, TrackerReader};
#[doc(inline)]
pub use snapshot::TrackerSnapshot;
#[doc(inline)]
pub use tracker::PostgresTracker;

/// The newest schema version this build of tributary reads and writes (the
/// newest `version` in its schema's `tributary_migrations` table).
pub const SCHEMA_VERSION: i64 = schema::SCHEMA_VERSION;

/// Microseconds since the Unix epoch.
pub(crate) fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}
