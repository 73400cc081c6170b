//! Actions: the nodes of a graph.
//!
//! An action declares the state keys it `reads` and `writes` and the `inputs`
//! it takes. It runs with the whole current [`State`], the inputs it declared
//! and an [`ActionContext`], and returns its result (a JSON object) and the new
//! state. Any action may stream: it calls [`ActionContext::emit`] for each
//! intermediate output before returning.
//!
//! After every action the application checks the new state: a changed key
//! that is not declared in `writes` is an error
//! ([`ActionError::UndeclaredWrite`](crate::ActionError::UndeclaredWrite)), so
//! is a declared write missing afterwards
//! ([`ActionError::MissingWrite`](crate::ActionError::MissingWrite)) and a
//! result that is not an object. On any error the application's state is left
//! as it was before the action.
//!
//! Actions are built from closures with [`action`], or are types implementing
//! [`Action`]. Blocking or CPU-heavy work goes to the blocking pool, either
//! with [`ActionBuilder::run_blocking`] or with [`ActionContext::spawn_blocking`]
//! from inside an async action.
//!
//! # Examples
//!
//! ```
//! use serde_json::json;
//! use tributary_core::{action, State};
//!
//! let greet = action("greet")
//!     .reads(["name"])
//!     .writes(["greeting"])
//!     .run(|state: State, _inputs, ctx| async move {
//!         let name: String = state.get_as("name")?;
//!         for word in ["hello", " ", &name] {
//!             ctx.emit(word).await?; // streams a token
//!         }
//!         let greeting = format!("hello {name}");
//!         Ok((json!({ "greeting": greeting }), state.set("greeting", greeting.clone())))
//!     });
//! # let _ = greet;
//! ```

mod builder;
mod context;

use async_trait::async_trait;
use serde_json::Value;

use crate::error::BoxError;
use crate::state::State;

pub use crate::identity::ParentPointer;
pub use crate::inputs::{InputSpec, Inputs};
pub use builder::{ActionBuilder, FnAction, action};
pub use context::{ActionContext, Emitted, Extensions, StreamSink, spawn_blocking};
pub(crate) use context::{HookPanicSlot, StepShared};

/// What an action returns: its result (a JSON object) and the new state.
pub type ActionResult = Result<(Value, State), BoxError>;

/// A node of a graph.
///
/// Most actions are built from closures with [`action`]; implement this
/// trait for actions that carry their own configuration.
///
/// # Examples
///
/// ```
/// use async_trait::async_trait;
/// use serde_json::json;
/// use tributary_core::{Action, ActionContext, ActionResult, Inputs, State};
///
/// struct Add {
///     by: i64,
///     writes: Vec<String>,
/// }
///
/// #[async_trait]
/// impl Action for Add {
///     fn name(&self) -> &str {
///         "add"
///     }
///     fn writes(&self) -> &[String] {
///         &self.writes
///     }
///     async fn run(&self, state: State, _: Inputs, _: ActionContext) -> ActionResult {
///         let state = state.increment("n", self.by)?;
///         Ok((json!({ "n": state.get("n") }), state))
///     }
/// }
/// let add = Add { by: 2, writes: vec!["n".into()] };
/// # let _ = add;
/// ```
#[async_trait]
pub trait Action: Send + Sync + 'static {
    /// The action's name, unique within its graph.
    fn name(&self) -> &str;

    /// The state keys the action reads.
    fn reads(&self) -> &[String] {
        &[]
    }

    /// The state keys the action writes; each must be present afterwards.
    fn writes(&self) -> &[String] {
        &[]
    }

    /// The inputs the action takes. Only declared inputs reach the action.
    fn inputs(&self) -> &[InputSpec] {
        &[]
    }

    /// Run the action on the current state.
    async fn run(&self, state: State, inputs: Inputs, ctx: ActionContext) -> ActionResult;
}

impl std::fmt::Debug for dyn Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Action")
            .field("name", &self.name())
            .field("reads", &self.reads())
            .field("writes", &self.writes())
            .finish()
    }
}
