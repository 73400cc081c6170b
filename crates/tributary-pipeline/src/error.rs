//! Errors: building a pipeline, and how a run can end badly.

use crate::item::BoxError;
use crate::run::RunSummary;

/// Why a pipeline (from the builder or a JSON description) could not be
/// built. Each variant names the offending node or edge.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// The JSON description is malformed (bad syntax, an unknown field, a
    /// wrong type).
    #[error("invalid pipeline description: {0}")]
    Json(#[from] serde_json::Error),
    /// A node names a processor the registry does not know.
    #[error("node {node} names processor {processor}, which is not registered")]
    UnknownProcessor {
        /// The node.
        node: String,
        /// The processor name it gave.
        processor: String,
    },
    /// A registered processor refused the node's arguments.
    #[error("node {node}: processor {processor} refused its arguments: {source}")]
    InvalidArgs {
        /// The node.
        node: String,
        /// The processor.
        processor: String,
        /// What the processor's factory said.
        #[source]
        source: BoxError,
    },
    /// Two nodes have the same name.
    #[error("node {node} is declared twice")]
    DuplicateNode {
        /// The name.
        node: String,
    },
    /// An edge names a node that does not exist.
    #[error("edge {from} -> {to} names node {missing}, which does not exist")]
    DanglingEdge {
        /// The edge's upstream end.
        from: String,
        /// The edge's downstream end.
        to: String,
        /// The end that does not exist.
        missing: String,
    },
    /// The same edge is declared twice.
    #[error("edge {from} -> {to} is declared twice")]
    DuplicateEdge {
        /// The edge's upstream end.
        from: String,
        /// The edge's downstream end.
        to: String,
    },
    /// A processor has no incoming edge, so it would never run.
    #[error("node {node} is a processor without inputs; add an edge into it or make it a source")]
    MissingInputs {
        /// The node.
        node: String,
    },
    /// An edge goes into a source.
    #[error("node {node} is a source and cannot have inputs (edge from {from})")]
    SourceWithInputs {
        /// The source.
        node: String,
        /// The upstream end of the offending edge.
        from: String,
    },
    /// The edges form a cycle; a pipeline is acyclic.
    #[error("the pipeline has a cycle through {}", nodes.join(" -> "))]
    Cycle {
        /// The nodes on (or downstream of and stuck behind) the cycle, in
        /// declaration order.
        nodes: Vec<String>,
    },
    /// An edge has capacity 0.
    #[error("edge {from} -> {to} has capacity 0; an edge holds at least one item")]
    ZeroCapacity {
        /// The edge's upstream end.
        from: String,
        /// The edge's downstream end.
        to: String,
    },
    /// A node has concurrency 0.
    #[error("node {node} has concurrency 0; it would never process anything")]
    ZeroConcurrency {
        /// The node.
        node: String,
    },
    /// The pipeline has no nodes.
    #[error("the pipeline has no nodes")]
    Empty,
}

/// How a run ended when it did not complete. Each variant carries the run's
/// [`RunSummary`] (counts up to the end, dropped items included).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// A node with [`ErrorPolicy::Fail`](crate::ErrorPolicy::Fail) failed;
    /// the other nodes were cancelled.
    #[error("node {node} failed: {source}")]
    NodeFailed {
        /// The node.
        node: String,
        /// Its error.
        #[source]
        source: BoxError,
        /// The run's counts.
        summary: Box<RunSummary>,
    },
    /// A node's task panicked; the other nodes were cancelled.
    #[error("node {node} panicked")]
    NodePanicked {
        /// The node.
        node: String,
        /// The run's counts.
        summary: Box<RunSummary>,
    },
    /// The run was cancelled through its handle (or its
    /// [`PipelineRun`](crate::PipelineRun) was dropped).
    #[error("the pipeline was cancelled")]
    Cancelled {
        /// The run's counts.
        summary: Box<RunSummary>,
    },
}

impl RunError {
    /// The run's counts up to its end.
    pub fn summary(&self) -> &RunSummary {
        match self {
            RunError::NodeFailed { summary, .. }
            | RunError::NodePanicked { summary, .. }
            | RunError::Cancelled { summary } => summary,
        }
    }
}
