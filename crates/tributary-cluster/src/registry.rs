//! Graphs by name: what a worker can run.

use std::collections::BTreeMap;
use std::sync::Arc;

use tributary_core::Graph;

use crate::error::ClusterError;

/// The graphs a worker runs, by name. Graphs are code: every worker binary
/// registers the graphs it knows, and tasks name them.
///
/// # Examples
///
/// ```
/// use serde_json::json;
/// use tributary_core::{action, Graph, State};
/// use tributary_cluster::Graphs;
///
/// let echo = Graph::single(action("echo").run(|s: State, _, _| async move { Ok((json!({}), s)) }));
/// let graphs = Graphs::new().register("echo", echo).unwrap();
/// assert!(graphs.get("echo").is_some());
/// assert!(graphs.get("other").is_none());
/// ```
#[derive(Debug, Clone, Default)]
pub struct Graphs {
    graphs: Arc<BTreeMap<String, Graph>>,
}

impl Graphs {
    /// No graphs.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `graph` under `name`.
    ///
    /// # Errors
    ///
    /// [`ClusterError::DuplicateGraph`] when the name is taken.
    pub fn register(mut self, name: impl Into<String>, graph: Graph) -> Result<Self, ClusterError> {
        let name = name.into();
        let graphs = Arc::make_mut(&mut self.graphs);
        if graphs.contains_key(&name) {
            return Err(ClusterError::DuplicateGraph(name));
        }
        graphs.insert(name, graph);
        Ok(self)
    }

    /// The graph registered under `name`.
    pub fn get(&self, name: &str) -> Option<&Graph> {
        self.graphs.get(name)
    }

    /// The registered names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> + '_ {
        self.graphs.keys().map(String::as_str)
    }
}
