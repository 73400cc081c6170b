//! What a step and a run produce: [`StepRecord`], [`RunOutcome`],
//! [`HaltReason`], and [`Advance`], the verdict of one call of
//! [`Application::advance`](crate::Application::advance).
//!
//! These are the values the application hands out and the hooks are told
//! about; they depend only on [`State`], so that the application and the
//! hooks both name them without naming each other.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::state::State;

/// Why a run stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HaltReason {
    /// The action just run is in `halt_after`.
    HaltAfter,
    /// The next action is in `halt_before`; it did not run.
    HaltBefore,
    /// No transition holds (or there was nothing left to run).
    GraphEnd,
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct RunOutcome {
    /// The action the run halted at: the last action run, or for
    /// [`HaltReason::HaltBefore`] the action it halted before. `None` when
    /// there was nothing to run.
    pub action: Option<String>,
    /// The result of the last action run; `None` for `HaltBefore` and when
    /// nothing ran.
    pub result: Option<Value>,
    /// The state at the end.
    pub state: State,
    /// Why the run stopped.
    pub reason: HaltReason,
}

/// How a run halted, from
/// [`Application::advance_split`](crate::Application::advance_split): the
/// same as [`RunOutcome`], with the action's name shared.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Halted {
    /// The action the run halted at (see [`RunOutcome::action`]).
    pub action: Option<Arc<str>>,
    /// The result of the last action run (see [`RunOutcome::result`]).
    pub result: Option<Value>,
    /// The state at the end.
    pub state: State,
    /// Why the run stopped.
    pub reason: HaltReason,
}

/// One completed step.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct StepRecord {
    /// Its sequence id.
    pub sequence_id: u64,
    /// Its action.
    pub action: Arc<str>,
    /// The action's result.
    pub result: Value,
    /// The state after the step.
    pub state: State,
    /// How many intermediate outputs it emitted.
    pub items: u64,
}

/// What one call of [`Application::advance`](crate::Application::advance)
/// did: it ran a step and the run goes on, or the run halts.
///
/// This is the one halting decision of tributary: [`Application::run`],
/// [`iterate`](crate::Application::iterate),
/// [`stream_result`](crate::Application::stream_result) and the runtime's
/// subgraph actor all step through it.
///
/// [`Application::run`]: crate::Application::run
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use serde_json::json;
/// use tributary_core::{action, default, Advance, Application, Graph, HaltReason, RunOptions};
///
/// let graph = Graph::builder()
///     .action(action("a").run(|s, _, _| async move { Ok((json!({ "a": 1 }), s)) }))
///     .action(action("b").run(|s, _, _| async move { Ok((json!({ "b": 2 }), s)) }))
///     .transition("a", "b", default())
///     .entrypoint("a")
///     .build()?;
/// let mut app = Application::builder(graph).build().await?;
/// let opts = RunOptions::new();
///
/// let Advance::Continue(first) = app.advance(&opts).await? else { unreachable!() };
/// assert_eq!(&*first.action, "a");
/// let Advance::Halt { step, outcome } = app.advance(&opts).await? else { unreachable!() };
/// assert_eq!(step.map(|s| s.action.to_string()).as_deref(), Some("b"));
/// assert_eq!(outcome.reason, HaltReason::GraphEnd);
/// assert_eq!(outcome.result, Some(json!({ "b": 2 })));
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Advance {
    /// A step ran and the run goes on: the step is an intermediate node.
    Continue(StepRecord),
    /// The run halts.
    Halt {
        /// The step this call ran; `None` when nothing was left to run. With
        /// [`HaltReason::HaltBefore`] it is an intermediate node (the action
        /// the run halts before is next); otherwise it is the halt step and
        /// its result is `outcome.result`.
        step: Option<StepRecord>,
        /// How the run ended: what [`Application::run`](crate::Application::run)
        /// returns.
        outcome: RunOutcome,
    },
}

impl Advance {
    /// Whether the run halts.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use serde_json::json;
    /// use tributary_core::{action, Application, Graph, RunOptions};
    ///
    /// let graph = Graph::single(action("only").run(|s, _, _| async move { Ok((json!({}), s)) }));
    /// let mut app = Application::builder(graph).build().await?;
    /// let advance = app.advance(&RunOptions::new()).await?;
    /// assert!(advance.is_halt()); // no transition out of `only`
    /// assert_eq!(advance.step().map(|s| s.sequence_id), Some(0));
    /// # Ok(())
    /// # }
    /// ```
    pub fn is_halt(&self) -> bool {
        matches!(self, Advance::Halt { .. })
    }

    /// The step this call ran, if any (see [`is_halt`](Self::is_halt) for
    /// an example).
    pub fn step(&self) -> Option<&StepRecord> {
        match self {
            Advance::Continue(record) => Some(record),
            Advance::Halt { step, .. } => step.as_ref(),
        }
    }

    /// Split into the intermediate node (the step that ran, when it is not
    /// the halt step itself) and the run's outcome (when it halts).
    ///
    /// A runtime that reports intermediate nodes and final results
    /// separately needs nothing else: report the node if there is one, then
    /// the outcome if there is one.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use serde_json::json;
    /// use tributary_core::{action, default, Application, Graph, HaltReason, RunOptions};
    ///
    /// let graph = Graph::builder()
    ///     .action(action("a").run(|s, _, _| async move { Ok((json!({}), s)) }))
    ///     .action(action("b").run(|s, _, _| async move { Ok((json!({}), s)) }))
    ///     .transition("a", "b", default())
    ///     .entrypoint("a")
    ///     .build()?;
    /// let mut app = Application::builder(graph).build().await?;
    /// let (node, outcome) = app.advance(&RunOptions::before(["b"])).await?.split();
    /// assert_eq!(node.map(|n| n.action.to_string()).as_deref(), Some("a"));
    /// let outcome = outcome.expect("halts before b");
    /// assert_eq!(outcome.reason, HaltReason::HaltBefore);
    /// assert_eq!(outcome.action.as_deref(), Some("b"));
    /// # Ok(())
    /// # }
    /// ```
    pub fn split(self) -> (Option<StepRecord>, Option<RunOutcome>) {
        match self {
            Advance::Continue(record) => (Some(record), None),
            Advance::Halt { step, outcome } if outcome.reason == HaltReason::HaltBefore => {
                (step, Some(outcome))
            }
            Advance::Halt { outcome, .. } => (None, Some(outcome)),
        }
    }
}
