//! The web view of tributary runs.
//!
//! A small [axum] server with its page embedded (plain HTML, CSS and
//! JavaScript; nothing to build):
//!
//! - **recorded runs**, read-only, from the SQLite database a
//!   [`SqliteTracker`](tributary_sqlite::SqliteTracker) writes: the run list
//!   (roots with their children collapsed), a run's subgraph tree and
//!   waterfall, a step's detail with the state diff against the previous
//!   step;
//! - **live runs**, attached in-process with their
//!   [`RunHandle`](tributary_runtime::RunHandle): one lane per task with its
//!   current action, the tail of its tokens and its status; the merged
//!   stream as the consumer received it; pause, resume and cancel of the
//!   run and of each task. Updates reach the browser as server-sent events,
//!   coalesced to a few per second.
//!
//! The server binds loopback unless told otherwise, renders everything a
//! run produced as text, and sends a `Content-Security-Policy` that runs
//! only its own script.
//!
//! `tributary ui --db PATH` serves a database from the command line; inside
//! a service, build a [`UiServer`], [`attach_run`](UiServer::attach_run) and
//! serve its [`router`](UiServer::router). See `docs/ui.md`.
//!
//! # Examples
//!
//! ```no_run
//! # async fn demo(handle: tributary_runtime::RunHandle, stream: tributary_runtime::RunStream) -> Result<(), tributary_ui::UiError> {
//! use futures_util::StreamExt;
//! use tributary_ui::{UiServer, serve};
//!
//! let ui = UiServer::new().database(".tributary/tributary.db")?;
//! let live = ui.attach_run("research", handle);
//! tokio::spawn(serve(ui, "127.0.0.1:7878".parse().unwrap()));
//! let mut stream = live.tap(stream); // the page sees what this loop sees
//! while let Some(item) = stream.next().await {
//!     println!("{}: {:?}", item.task_key, item.kind);
//! }
//! # Ok(())
//! # }
//! ```

mod diff;
mod error;
mod live;
mod recorded;
mod server;
mod source;

#[doc(inline)]
pub use error::UiError;
#[doc(inline)]
pub use live::{Goal, LiveRun, StepWatch, Tapped};
#[doc(inline)]
pub use server::{DEFAULT_ADDR, UiServer, serve, serve_database_blocking};

/// The guide to the web view (`docs/ui.md`), whose examples are compiled
/// and run as doctests.
#[doc = include_str!("../../../docs/ui.md")]
pub mod guide {}
