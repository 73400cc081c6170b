//! Graphs: actions and the transitions between them.
//!
//! A [`Graph`] is built once and shared (it is an `Arc` inside): thousands of
//! applications can run the same graph without copying it.
//!
//! # Examples
//!
//! ```
//! use serde_json::json;
//! use tributary_core::{action, default, when, Graph, GraphError, State};
//!
//! let count = action("count").reads(["n"]).writes(["n"]).run(|s: State, _, _| async move {
//!     let s = s.increment("n", 1)?;
//!     Ok((json!({}), s))
//! });
//! let done = action("done").run(|s: State, _, _| async move { Ok((json!({}), s)) });
//!
//! let graph = Graph::builder()
//!     .action(count)
//!     .action(done)
//!     .transition("count", "done", when("n", 3))
//!     .transition("count", "count", default())
//!     .entrypoint("count")
//!     .build()?;
//! assert_eq!(graph.entrypoint(), "count");
//!
//! // Build errors name what is wrong.
//! let err = Graph::builder().action(action("a").run(|s, _, _| async { Ok((json!({}), s)) }))
//!     .transition("a", "b", default())
//!     .entrypoint("a")
//!     .build()
//!     .unwrap_err();
//! assert_eq!(err.to_string(), "transition a -> b names unknown action `b`");
//! # Ok::<(), GraphError>(())
//! ```

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use crate::action::Action;
use crate::condition::Condition;
use crate::error::{ActionError, GraphError};
use crate::state::State;

/// Actions and transitions, ready to run. Cheap to clone.
#[derive(Clone)]
pub struct Graph {
    inner: Arc<Inner>,
}

struct Inner {
    actions: Vec<Arc<dyn Action>>,
    /// The actions' names, shared by every step that runs them.
    names: Vec<Arc<str>>,
    index: HashMap<String, usize>,
    /// Per action, its outgoing transitions in insertion order.
    out: Vec<Vec<(Condition, usize)>>,
    entrypoint: usize,
}

/// One transition of a graph, for inspection and export.
#[derive(Debug, Clone, Copy)]
pub struct Transition<'a> {
    /// The source action.
    pub from: &'a str,
    /// The target action.
    pub to: &'a str,
    /// The condition.
    pub condition: &'a Condition,
}

impl fmt::Debug for Graph {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Graph")
            .field(
                "actions",
                &self
                    .inner
                    .actions
                    .iter()
                    .map(|a| a.name())
                    .collect::<Vec<_>>(),
            )
            .field("entrypoint", &self.entrypoint())
            .finish()
    }
}

impl Graph {
    /// Start building a graph.
    pub fn builder() -> GraphBuilder {
        GraphBuilder::default()
    }

    /// A graph of the one action `action`, which is also its entrypoint.
    pub fn single(action: impl Action) -> Graph {
        Self::single_arc(Arc::new(action))
    }

    /// [`Graph::single`] for an action already behind an `Arc`.
    pub fn single_arc(action: Arc<dyn Action>) -> Graph {
        let name = action.name().to_owned();
        GraphBuilder::default()
            .action_arc(action)
            .entrypoint(name)
            .build()
            .expect("a one-action graph with its entrypoint is valid")
    }

    /// The entrypoint's name.
    pub fn entrypoint(&self) -> &str {
        self.inner.actions[self.inner.entrypoint].name()
    }

    /// The action named `name`.
    pub fn action(&self, name: &str) -> Option<&Arc<dyn Action>> {
        self.index_of(name).map(|i| &self.inner.actions[i])
    }

    /// Whether the graph has an action named `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.inner.index.contains_key(name)
    }

    /// The actions, in the order they were added.
    pub fn actions(&self) -> impl Iterator<Item = &Arc<dyn Action>> + '_ {
        self.inner.actions.iter()
    }

    /// Every transition, grouped by source action in action order, each
    /// group in insertion order.
    pub fn transitions(&self) -> impl Iterator<Item = Transition<'_>> + '_ {
        self.inner
            .out
            .iter()
            .enumerate()
            .flat_map(move |(from, out)| {
                out.iter().map(move |(condition, to)| Transition {
                    from: self.inner.actions[from].name(),
                    to: self.inner.actions[*to].name(),
                    condition,
                })
            })
    }

    /// Whether two handles share one graph.
    pub fn ptr_eq(&self, other: &Graph) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    pub(crate) fn index_of(&self, name: &str) -> Option<usize> {
        self.inner.index.get(name).copied()
    }

    pub(crate) fn entrypoint_index(&self) -> usize {
        self.inner.entrypoint
    }

    pub(crate) fn action_at(&self, index: usize) -> &Arc<dyn Action> {
        &self.inner.actions[index]
    }

    /// The name of the action at `index`, shared.
    pub(crate) fn name_at(&self, index: usize) -> &Arc<str> {
        &self.inner.names[index]
    }

    /// The action that follows `from` in `state`: the first transition whose
    /// condition holds, or `None`.
    pub(crate) fn next(&self, from: usize, state: &State) -> Result<Option<usize>, ActionError> {
        for (condition, to) in &self.inner.out[from] {
            match condition.evaluate(state) {
                Ok(true) => return Ok(Some(*to)),
                Ok(false) => {}
                Err(key) => {
                    return Err(ActionError::ConditionKeyMissing {
                        action: self.inner.actions[from].name().to_owned(),
                        condition: condition.to_string(),
                        key,
                    });
                }
            }
        }
        Ok(None)
    }
}

/// Builds a [`Graph`]; errors are reported by [`build`](Self::build).
#[derive(Default)]
#[must_use = "a graph builder does nothing until `build` is called"]
pub struct GraphBuilder {
    actions: Vec<Arc<dyn Action>>,
    transitions: Vec<(String, String, Condition)>,
    entrypoint: Option<String>,
}

impl fmt::Debug for GraphBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GraphBuilder")
            .field("actions", &self.actions.len())
            .field("transitions", &self.transitions.len())
            .field("entrypoint", &self.entrypoint)
            .finish()
    }
}

impl GraphBuilder {
    /// Add an action.
    pub fn action(self, action: impl Action) -> Self {
        self.action_arc(Arc::new(action))
    }

    /// Add an action already behind an `Arc` (to share it between graphs).
    pub fn action_arc(mut self, action: Arc<dyn Action>) -> Self {
        self.actions.push(action);
        self
    }

    /// Add a transition from `from` to `to`, taken when `condition` holds.
    pub fn transition(
        mut self,
        from: impl Into<String>,
        to: impl Into<String>,
        condition: Condition,
    ) -> Self {
        self.transitions.push((from.into(), to.into(), condition));
        self
    }

    /// Add the same transition from each of `froms`.
    pub fn transitions_from<I, K>(
        mut self,
        froms: I,
        to: impl Into<String>,
        condition: Condition,
    ) -> Self
    where
        I: IntoIterator<Item = K>,
        K: Into<String>,
    {
        let to = to.into();
        for from in froms {
            self.transitions
                .push((from.into(), to.clone(), condition.clone()));
        }
        self
    }

    /// Set the action a fresh application starts at.
    pub fn entrypoint(mut self, name: impl Into<String>) -> Self {
        self.entrypoint = Some(name.into());
        self
    }

    /// Check and build the graph.
    ///
    /// # Errors
    ///
    /// [`GraphError`] for no actions, duplicate action names, a transition
    /// naming an unknown action, two defaults from one action, and a missing
    /// or unknown entrypoint.
    pub fn build(self) -> Result<Graph, GraphError> {
        if self.actions.is_empty() {
            return Err(GraphError::Empty);
        }
        let mut index = HashMap::with_capacity(self.actions.len());
        for (i, action) in self.actions.iter().enumerate() {
            if index.insert(action.name().to_owned(), i).is_some() {
                return Err(GraphError::DuplicateAction(action.name().to_owned()));
            }
        }
        let mut out: Vec<Vec<(Condition, usize)>> = vec![Vec::new(); self.actions.len()];
        for (from, to, condition) in self.transitions {
            let unknown = |name: &String| GraphError::UnknownAction {
                from: from.clone(),
                to: to.clone(),
                unknown: name.clone(),
            };
            let f = *index.get(&from).ok_or_else(|| unknown(&from))?;
            let t = *index.get(&to).ok_or_else(|| unknown(&to))?;
            if condition.is_default() && out[f].iter().any(|(c, _)| c.is_default()) {
                return Err(GraphError::DuplicateDefault(from));
            }
            out[f].push((condition, t));
        }
        let entry = self.entrypoint.ok_or(GraphError::MissingEntrypoint)?;
        let entrypoint = *index
            .get(&entry)
            .ok_or_else(|| GraphError::UnknownEntrypoint(entry.clone()))?;
        Ok(Graph {
            inner: Arc::new(Inner {
                names: self.actions.iter().map(|a| Arc::from(a.name())).collect(),
                actions: self.actions,
                index,
                out,
                entrypoint,
            }),
        })
    }
}
