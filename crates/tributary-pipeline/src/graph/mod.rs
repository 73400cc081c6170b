//! The shape of a pipeline: nodes, their options, edges, and the builder
//! that checks them.

mod mermaid;
pub(crate) mod spec;

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::mpsc;

use crate::error::BuildError;
use crate::item::Item;
use crate::processor::{Processor, Source};
use crate::run::node::{RunProcessor, Runner};
use crate::run::{DeadLetter, DeadLetters};

/// The default capacity of an edge.
pub const DEFAULT_CAPACITY: usize = 16;

/// How a node with several inputs combines them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Join {
    /// One item of each input, in input order, as one
    /// [`Input::Zip`](crate::Input::Zip). Ends as soon as any input ends
    /// (items read from the other inputs for the unfinished round are
    /// counted as unpaired). The default, as an aggregated input.
    #[default]
    Zip,
    /// Each item as it arrives, tagged with its input
    /// ([`Input::Merge`](crate::Input::Merge)); each input's items keep
    /// their order. Ends when every input has ended.
    Merge,
    /// The newest item of every input whenever one of them changes, once
    /// each input has produced one ([`Input::Latest`](crate::Input::Latest)).
    /// Ends when every input has ended.
    Latest,
}

/// Where a node with several downstream nodes sends each output.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum FanOut {
    /// A copy to every downstream node (the default); the slowest one sets
    /// the pace.
    #[default]
    Copy,
    /// Each output to one downstream node, in turn.
    RoundRobin,
}

/// What a node does when its processor fails on an input.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorPolicy {
    /// Fail the pipeline: every node is cancelled and the run returns
    /// [`RunError::NodeFailed`](crate::RunError::NodeFailed). The default.
    #[default]
    Fail,
    /// Skip the input and go on; counted in
    /// [`NodeMetrics::skipped`](crate::NodeMetrics::skipped).
    Skip,
    /// Send the input and its error to the pipeline's dead letters
    /// ([`Pipeline::dead_letters`]) and go on.
    DeadLetter,
}

pub(crate) enum NodeKind<T> {
    Source(Box<dyn Source<T>>),
    Processor(Box<dyn RunProcessor<T>>),
}

/// A node: a source or a processor, and how it runs.
pub struct Node<T> {
    pub(crate) kind: NodeKind<T>,
    pub(crate) join: Join,
    pub(crate) concurrency: usize,
    pub(crate) keep_order: bool,
    pub(crate) on_error: ErrorPolicy,
    pub(crate) fan_out: FanOut,
}

impl<T> fmt::Debug for Node<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Node")
            .field("source", &matches!(self.kind, NodeKind::Source(_)))
            .field("join", &self.join)
            .field("concurrency", &self.concurrency)
            .field("keep_order", &self.keep_order)
            .field("on_error", &self.on_error)
            .field("fan_out", &self.fan_out)
            .finish()
    }
}

impl<T: Item> Node<T> {
    pub(crate) fn new(kind: NodeKind<T>) -> Self {
        Node {
            kind,
            join: Join::default(),
            concurrency: 1,
            keep_order: false,
            on_error: ErrorPolicy::default(),
            fan_out: FanOut::default(),
        }
    }

    /// A source node (no inputs).
    pub fn source(source: impl Source<T>) -> Self {
        Node::new(NodeKind::Source(Box::new(source)))
    }

    /// A processor node (one or more inputs; a sink when nothing is
    /// downstream of it).
    pub fn processor(processor: impl Processor<T>) -> Self {
        Node::new(NodeKind::Processor(Box::new(Runner(processor))))
    }

    /// How several inputs combine (default [`Join::Zip`]).
    pub fn join(mut self, join: Join) -> Self {
        self.join = join;
        self
    }

    /// How many inputs are processed at once (default 1).
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n;
        self
    }

    /// With concurrency above one, emit outputs in input order rather than
    /// completion order (default off).
    pub fn keep_order(mut self, keep: bool) -> Self {
        self.keep_order = keep;
        self
    }

    /// What to do when the processor fails (default [`ErrorPolicy::Fail`]).
    pub fn on_error(mut self, policy: ErrorPolicy) -> Self {
        self.on_error = policy;
        self
    }

    /// Copy or round-robin outputs over several downstream nodes (default
    /// [`FanOut::Copy`]).
    pub fn fan_out(mut self, fan_out: FanOut) -> Self {
        self.fan_out = fan_out;
        self
    }

    pub(crate) fn is_source(&self) -> bool {
        matches!(self.kind, NodeKind::Source(_))
    }
}

#[derive(Debug, Clone)]
pub(crate) struct EdgeDecl {
    pub(crate) from: Arc<str>,
    pub(crate) to: Arc<str>,
    pub(crate) capacity: Option<usize>,
}

/// Builds a [`Pipeline`]: add nodes and edges, then [`build`](Self::build)
/// checks them.
///
/// # Examples
///
/// ```
/// use tributary_pipeline::{iter_source, map, sink, Input, NodeContext, Pipeline};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let pipeline = Pipeline::builder()
///     .source("numbers", iter_source(1..=3u64))
///     .processor("square", map(|n: u64| async move { Ok::<_, std::io::Error>(n * n) }))
///     .processor("print", sink(|input: Input<u64>, _ctx: NodeContext| async move {
///         println!("{input:?}");
///         Ok::<_, std::io::Error>(())
///     }))
///     .edge("numbers", "square")
///     .edge("square", "print")
///     .build()?;
/// let summary = pipeline.run().await?;
/// assert_eq!(summary.node("print").unwrap().items_in, 3);
/// # Ok(()) }
/// ```
pub struct PipelineBuilder<T> {
    nodes: Vec<(Arc<str>, Node<T>)>,
    edges: Vec<EdgeDecl>,
    default_capacity: usize,
    dead_letter_capacity: usize,
    metrics_interval: Duration,
    env: Value,
    duplicate: Option<String>,
}

impl<T> fmt::Debug for PipelineBuilder<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PipelineBuilder")
            .field(
                "nodes",
                &self.nodes.iter().map(|(n, _)| n).collect::<Vec<_>>(),
            )
            .field("edges", &self.edges)
            .finish_non_exhaustive()
    }
}

impl<T: Item> Default for PipelineBuilder<T> {
    fn default() -> Self {
        PipelineBuilder {
            nodes: Vec::new(),
            edges: Vec::new(),
            default_capacity: DEFAULT_CAPACITY,
            dead_letter_capacity: DEFAULT_CAPACITY,
            metrics_interval: Duration::from_millis(250),
            env: Value::Null,
            duplicate: None,
        }
    }
}

impl<T: Item> PipelineBuilder<T> {
    /// Add node `name`.
    pub fn node(mut self, name: impl Into<String>, node: Node<T>) -> Self {
        let name: String = name.into();
        if self.duplicate.is_none() && self.nodes.iter().any(|(n, _)| **n == *name) {
            self.duplicate = Some(name.clone());
        }
        self.nodes.push((name.into(), node));
        self
    }

    /// Add a source node with the default options.
    pub fn source(self, name: impl Into<String>, source: impl Source<T>) -> Self {
        self.node(name, Node::source(source))
    }

    /// Add a processor node with the default options.
    pub fn processor(self, name: impl Into<String>, processor: impl Processor<T>) -> Self {
        self.node(name, Node::processor(processor))
    }

    /// Connect `from` to `to` with an edge of the default capacity. A
    /// node's inputs are ordered as its edges are declared.
    pub fn edge(self, from: impl Into<String>, to: impl Into<String>) -> Self {
        self.edge_inner(from.into(), to.into(), None)
    }

    /// Connect `from` to `to` with an edge holding at most `capacity` items.
    pub fn edge_with_capacity(
        self,
        from: impl Into<String>,
        to: impl Into<String>,
        capacity: usize,
    ) -> Self {
        self.edge_inner(from.into(), to.into(), Some(capacity))
    }

    fn edge_inner(mut self, from: String, to: String, capacity: Option<usize>) -> Self {
        self.edges.push(EdgeDecl {
            from: from.into(),
            to: to.into(),
            capacity,
        });
        self
    }

    /// The capacity of edges declared without one (default
    /// [`DEFAULT_CAPACITY`]).
    pub fn default_capacity(mut self, capacity: usize) -> Self {
        self.default_capacity = capacity;
        self
    }

    /// The capacity of the dead-letter channel (default
    /// [`DEFAULT_CAPACITY`]); a full channel makes the failing node wait.
    pub fn dead_letter_capacity(mut self, capacity: usize) -> Self {
        self.dead_letter_capacity = capacity.max(1);
        self
    }

    /// How often the metrics `watch` is refreshed (default 250 ms).
    pub fn metrics_interval(mut self, every: Duration) -> Self {
        self.metrics_interval = every.max(Duration::from_millis(1));
        self
    }

    /// The environment every processor reads through
    /// [`NodeContext::env`](crate::NodeContext::env).
    pub fn env(mut self, env: Value) -> Self {
        self.env = env;
        self
    }

    /// Check the graph and build the pipeline.
    ///
    /// # Errors
    ///
    /// [`BuildError::Empty`], [`DuplicateNode`](BuildError::DuplicateNode),
    /// [`ZeroConcurrency`](BuildError::ZeroConcurrency),
    /// [`DanglingEdge`](BuildError::DanglingEdge),
    /// [`DuplicateEdge`](BuildError::DuplicateEdge),
    /// [`ZeroCapacity`](BuildError::ZeroCapacity),
    /// [`SourceWithInputs`](BuildError::SourceWithInputs),
    /// [`MissingInputs`](BuildError::MissingInputs),
    /// [`Cycle`](BuildError::Cycle), checked in that order.
    pub fn build(self) -> Result<Pipeline<T>, BuildError> {
        if self.nodes.is_empty() {
            return Err(BuildError::Empty);
        }
        if let Some(node) = self.duplicate {
            return Err(BuildError::DuplicateNode { node });
        }
        let index: HashMap<&str, usize> = self
            .nodes
            .iter()
            .enumerate()
            .map(|(i, (n, _))| (&**n, i))
            .collect();
        for (name, node) in &self.nodes {
            if node.concurrency == 0 {
                return Err(BuildError::ZeroConcurrency {
                    node: name.to_string(),
                });
            }
        }
        let mut edges = Vec::with_capacity(self.edges.len());
        let mut seen = std::collections::HashSet::new();
        for e in &self.edges {
            let dangling = |missing: &Arc<str>| BuildError::DanglingEdge {
                from: e.from.to_string(),
                to: e.to.to_string(),
                missing: missing.to_string(),
            };
            let from = *index.get(&*e.from).ok_or_else(|| dangling(&e.from))?;
            let to = *index.get(&*e.to).ok_or_else(|| dangling(&e.to))?;
            if !seen.insert((from, to)) {
                return Err(BuildError::DuplicateEdge {
                    from: e.from.to_string(),
                    to: e.to.to_string(),
                });
            }
            let capacity = e.capacity.unwrap_or(self.default_capacity);
            if capacity == 0 {
                return Err(BuildError::ZeroCapacity {
                    from: e.from.to_string(),
                    to: e.to.to_string(),
                });
            }
            edges.push(EdgeInfo { from, to, capacity });
        }
        for e in &edges {
            if self.nodes[e.to].1.is_source() {
                return Err(BuildError::SourceWithInputs {
                    node: self.nodes[e.to].0.to_string(),
                    from: self.nodes[e.from].0.to_string(),
                });
            }
        }
        for (i, (name, node)) in self.nodes.iter().enumerate() {
            if !node.is_source() && !edges.iter().any(|e| e.to == i) {
                return Err(BuildError::MissingInputs {
                    node: name.to_string(),
                });
            }
        }
        if let Some(stuck) = cycle(self.nodes.len(), &edges) {
            return Err(BuildError::Cycle {
                nodes: stuck
                    .into_iter()
                    .map(|i| self.nodes[i].0.to_string())
                    .collect(),
            });
        }
        Ok(Pipeline {
            nodes: self.nodes,
            edges,
            metrics_interval: self.metrics_interval,
            env: Arc::new(self.env),
            dead_letter_capacity: self.dead_letter_capacity,
            dead_letters: None,
        })
    }
}

/// The nodes that a topological sort cannot order (on a cycle or behind
/// one), or `None` for an acyclic graph.
fn cycle(n: usize, edges: &[EdgeInfo]) -> Option<Vec<usize>> {
    let mut indegree = vec![0usize; n];
    for e in edges {
        indegree[e.to] += 1;
    }
    let mut ready: Vec<usize> = (0..n).filter(|&i| indegree[i] == 0).collect();
    let mut ordered = vec![false; n];
    while let Some(i) = ready.pop() {
        ordered[i] = true;
        for e in edges.iter().filter(|e| e.from == i) {
            indegree[e.to] -= 1;
            if indegree[e.to] == 0 {
                ready.push(e.to);
            }
        }
    }
    let stuck: Vec<usize> = (0..n).filter(|&i| !ordered[i]).collect();
    (!stuck.is_empty()).then_some(stuck)
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct EdgeInfo {
    pub(crate) from: usize,
    pub(crate) to: usize,
    pub(crate) capacity: usize,
}

/// A checked graph of processors, ready to [`start`](Pipeline::start).
///
/// Built with [`Pipeline::builder`] or from a JSON description with
/// [`Pipeline::from_json`].
pub struct Pipeline<T> {
    pub(crate) nodes: Vec<(Arc<str>, Node<T>)>,
    pub(crate) edges: Vec<EdgeInfo>,
    pub(crate) metrics_interval: Duration,
    pub(crate) env: Arc<Value>,
    pub(crate) dead_letter_capacity: usize,
    pub(crate) dead_letters: Option<mpsc::Sender<DeadLetter<T>>>,
}

impl<T> fmt::Debug for Pipeline<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pipeline")
            .field("nodes", &self.nodes)
            .field("edges", &self.edges)
            .finish_non_exhaustive()
    }
}

impl<T: Item> Pipeline<T> {
    /// A builder.
    pub fn builder() -> PipelineBuilder<T> {
        PipelineBuilder::default()
    }

    /// The nodes' names, in declaration order.
    pub fn node_names(&self) -> impl Iterator<Item = &str> + '_ {
        self.nodes.iter().map(|(n, _)| &**n)
    }

    /// The receiving end of the dead letters: inputs that failed in nodes
    /// with [`ErrorPolicy::DeadLetter`], with their error. Call before
    /// starting; a second call replaces the first receiver. Without a
    /// receiver, dead letters are counted as dropped (and logged).
    pub fn dead_letters(&mut self) -> DeadLetters<T> {
        let (tx, rx) = mpsc::channel(self.dead_letter_capacity);
        self.dead_letters = Some(tx);
        DeadLetters { rx }
    }
}
