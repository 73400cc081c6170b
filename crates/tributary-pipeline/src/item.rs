//! What flows along the edges: items, and the input a processor receives.

use std::sync::Arc;

use serde_json::Value;

/// The error a processor or source returns.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The type of the items of a pipeline: cloned on copy fan-out, moved
/// between tasks. Implemented for every `Clone + Send + 'static` type.
pub trait Item: Clone + Send + 'static {}

impl<T: Clone + Send + 'static> Item for T {}

/// What a processor receives for one call, shaped by the node's join.
///
/// A node with one input always receives [`Input::One`]; a node with
/// several inputs receives what its [`Join`](crate::Join) makes.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Input<T> {
    /// The item of a node's only input.
    One(T),
    /// [`Join::Zip`](crate::Join::Zip): one item of each input, in the
    /// node's input order (the order its edges were declared).
    Zip(Vec<T>),
    /// [`Join::Merge`](crate::Join::Merge): one item as it arrived, tagged
    /// with the node it came from.
    Merge {
        /// The upstream node that produced the item.
        from: Arc<str>,
        /// The item.
        item: T,
    },
    /// [`Join::Latest`](crate::Join::Latest): the newest item of every
    /// input (in input order), sent each time one of them changes once
    /// every input has produced at least one.
    Latest {
        /// The newest item of each input.
        items: Vec<T>,
        /// Which input changed (its position in `items`).
        changed: usize,
    },
}

impl<T> Input<T> {
    /// Every item this input carries, in input order.
    pub fn into_items(self) -> Vec<T> {
        match self {
            Input::One(item) | Input::Merge { item, .. } => vec![item],
            Input::Zip(items) | Input::Latest { items, .. } => items,
        }
    }

    /// The single item of a [`One`](Input::One) or [`Merge`](Input::Merge)
    /// input; `None` for the joins that carry one item per input.
    pub fn into_single(self) -> Option<T> {
        match self {
            Input::One(item) | Input::Merge { item, .. } => Some(item),
            Input::Zip(_) | Input::Latest { .. } => None,
        }
    }
}

/// What a processor knows about where it runs.
#[derive(Debug, Clone)]
pub struct NodeContext {
    pub(crate) info: Arc<NodeInfo>,
    pub(crate) seq: u64,
}

/// What every call of one node shares; its reference count changes with
/// every call, so it keeps a cache line of its own.
#[derive(Debug)]
#[repr(align(128))]
pub(crate) struct NodeInfo {
    pub(crate) node: Arc<str>,
    pub(crate) env: Arc<Value>,
}

impl NodeContext {
    /// The node's name.
    pub fn node(&self) -> &str {
        &self.info.node
    }

    /// The position of this input among the node's inputs, from 0 (for a
    /// source, always 0).
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// The pipeline's environment, shared by every node
    /// ([`PipelineBuilder::env`](crate::PipelineBuilder::env); `null` when
    /// unset): configuration, a reply address, anything every processor
    /// may need.
    pub fn env(&self) -> &Value {
        &self.info.env
    }
}
