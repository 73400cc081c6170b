//! The concepts of tributary: [`State`], [`Action`], [`Condition`],
//! [`Graph`], [`Application`], [`Hook`]s and the [`Persister`] trait.
//!
//! An application is a small state machine: a [`Graph`] of actions joined by
//! conditional transitions, run one action at a time over an immutable JSON
//! [`State`]. Any action may stream intermediate outputs with
//! [`ActionContext::emit`]. The runtime crate runs many applications in
//! parallel and merges what they stream; this crate is everything one
//! application needs.
//!
//! # Examples
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use futures_util::StreamExt;
//! use serde_json::json;
//! use tributary_core::{action, default, Application, Graph, RunOptions, State};
//!
//! let graph = Graph::builder()
//!     .action(action("plan").writes(["topic"]).run(|s: State, _, _| async move {
//!         Ok((json!({}), s.set("topic", "actors")))
//!     }))
//!     .action(action("write").reads(["topic"]).writes(["text"]).run(|s: State, _, ctx| async move {
//!         let mut text = String::new();
//!         for word in ["on ", "actors"] {
//!             ctx.emit(word).await?;
//!             text.push_str(word);
//!         }
//!         Ok((json!({ "text": text }), s.set("text", text.clone())))
//!     }))
//!     .transition("plan", "write", default())
//!     .entrypoint("plan")
//!     .build()?;
//!
//! let mut app = Application::builder(graph).build().await?;
//! let mut stream = app.stream_result(RunOptions::after(["write"])).await?;
//! let mut tokens = Vec::new();
//! while let Some(token) = stream.next().await {
//!     tokens.push(token);
//! }
//! let outcome = stream.get().await?;
//! assert_eq!(tokens, [json!("on "), json!("actors")]);
//! assert_eq!(outcome.result, Some(json!({ "text": "on actors" })));
//! # Ok(())
//! # }
//! ```

pub mod action;
mod application;
mod condition;
mod error;
mod graph;
mod hooks;
mod identity;
mod inputs;
mod outcome;
mod persistence;
mod state;
mod state_map;
mod step_tokens;

#[doc(inline)]
pub use action::{
    Action, ActionBuilder, ActionContext, ActionResult, Emitted, Extensions, FnAction, StreamSink,
    action, spawn_blocking,
};
#[doc(inline)]
pub use application::{Application, ApplicationBuilder, RunOptions, StreamResult};
#[doc(inline)]
pub use condition::{Condition, condition, default, when};
#[doc(inline)]
pub use error::{
    ActionError, ApplicationError, BoxError, BuildError, EmitError, GraphError, HookMethod,
    HookPanic, PersistError,
};
#[doc(inline)]
pub use graph::{Graph, GraphBuilder, Transition};
#[doc(inline)]
pub use hooks::{Hook, StepInfo, StepOutcome, StepPause, StreamItemInfo, TaskEnd, call_hooks};
#[doc(inline)]
pub use identity::{AppInfo, ParentPointer, TaskIdentity};
#[doc(inline)]
pub use inputs::{InputSpec, Inputs};
#[doc(inline)]
pub use outcome::{Advance, HaltReason, Halted, RunOutcome, StepRecord};
#[doc(inline)]
pub use persistence::{Checkpoint, InMemoryPersister, Persister, StepStatus, json_depth_exceeds};
#[doc(inline)]
pub use state::{RESERVED_PREFIX, State, StateError, Wipe};
#[doc(inline)]
pub use step_tokens::StepTokens;
