//! Durable steps and workflows for tributary: a journal of step results,
//! replay without redoing finished work, retries, and saga compensation.
//!
//! A suspended Rust future cannot be saved, so durability comes from a
//! journal and replay: each [`step`](DurableExt::step) of an action
//! journals its result under (app id, sequence id, step key) before
//! returning it; when the action runs again (a retry, a resume after a
//! crash), a step whose result is journaled returns it without running its
//! body. Step keys are explicit names plus an occurrence counter, and
//! replay checks them: a step that comes back under another name or in
//! another order fails with [`DurableError::NonDeterminism`].
//!
//! - Attach a [`Journal`] over a [`JournalStore`] ([`MemoryJournal`], or
//!   the SQLite one in `tributary-sqlite`) to an application, or to a
//!   runtime run (every task and nested child), with
//!   [`WithJournal::journal`]; inside the actions use [`DurableExt`].
//! - [`StepPolicy`]: retries with backoff, a predicate, a timeout;
//!   [`Terminal`] errors are never retried.
//! - [`Step::compensate`]: saga undo, run in reverse on a terminal failure,
//!   each journaled.
//! - [`DurableExt::sleep`]: the wake-up time is journaled;
//!   [`DurableExt::join`] runs two steps at once, each journaled, and
//!   [`DurableExt::join_all`] a vector of them;
//!   [`DurableExt::select`] journals which branch of a race won.
//! - [`Workflows`]: async functions of a [`WorkflowContext`] and an input,
//!   started under an id (a second start attaches), resumed after a crash
//!   ([`Workflows::resume_all`]), cancellable, with external events
//!   ([`WorkflowContext::await_event`], [`Workflows::send_event`]) and
//!   steps that pause when their retries run out.
//! - [`DurableExt::call`]: a journaled call of a named function
//!   ([`Functions`], behind the [`Invoke`] seam).
//!
//! See `docs/durable.md` for the guarantees and the determinism rules.
//!
//! # Examples
//!
//! A step's body runs once; the second run of the action replays it:
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use std::sync::atomic::{AtomicU32, Ordering};
//! use serde_json::json;
//! use tributary_core::{action, Application, BoxError, Graph, RunOptions, State};
//! use tributary_durable::{DurableExt, Journal, MemoryJournal, WithJournal};
//!
//! let calls = Arc::new(AtomicU32::new(0));
//! let journal = Journal::new(Arc::new(MemoryJournal::new()));
//! let counter = calls.clone();
//! let graph = Graph::single(action("summarise").writes(["summary"]).run(move |s: State, _, ctx| {
//!     let counter = counter.clone();
//!     async move {
//!         let summary: String = ctx.step("call-model", async move {
//!             counter.fetch_add(1, Ordering::SeqCst);
//!             Ok::<_, BoxError>("short".to_owned())
//!         }).await?;
//!         Ok((json!({}), s.set("summary", summary)))
//!     }
//! }));
//! for _ in 0..2 {
//!     let mut app = Application::builder(graph.clone()).app_id("doc-1").journal(&journal).build().await?;
//!     let out = app.run(RunOptions::new()).await?;
//!     assert_eq!(out.state.get("summary"), Some(&json!("short")));
//! }
//! assert_eq!(calls.load(Ordering::SeqCst), 1);
//! # Ok(())
//! # }
//! ```

mod error;
mod functions;
mod journal;
mod policy;
mod run_events;
mod scope;
mod step;
mod store;
mod workflow;

#[doc(inline)]
pub use error::{DurableError, JournalError, Terminal, WorkflowError};
#[doc(inline)]
pub use functions::{Functions, Invoke};
#[doc(inline)]
pub use journal::{Journal, WithJournal};
#[doc(inline)]
pub use policy::StepPolicy;
#[doc(inline)]
pub use run_events::RunEvents;
#[doc(inline)]
pub use scope::{Clock, Scope, StepAttempt};
#[doc(inline)]
pub use step::{Branch, DurableExt, EventExt, Step};
#[doc(inline)]
pub use store::{
    EntryKind, JournalEntry, JournalRow, JournalStore, MemoryJournal, Outcome, Replay, StepKey,
    WorkflowRecord, WorkflowRow, WorkflowStatus,
};
#[doc(inline)]
pub use workflow::{WorkflowContext, WorkflowHandle, Workflows};

// The guide's examples are tested with the crate's.
#[cfg(doctest)]
#[doc = include_str!("../../../docs/durable.md")]
struct DurableGuide;
