//! Pipelines described in JSON, resolved through a registry of named
//! processors.

use std::collections::HashMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::BuildError;
use crate::graph::{ErrorPolicy, FanOut, Join, Node, NodeKind, Pipeline, PipelineBuilder};
use crate::item::{BoxError, Item};
use crate::processor::{Processor, Source};
use crate::run::node::{RunProcessor, Runner};

/// A pipeline described as data (JSON through serde): nodes that name
/// registered processors, and edges.
///
/// ```json
/// {
///   "nodes": [
///     { "name": "inp", "processor": "words", "args": { "count": 20 } },
///     { "name": "rev", "processor": "reverse", "concurrency": 4, "keep_order": true },
///     { "name": "out", "processor": "print", "join": "merge", "on_error": "skip" }
///   ],
///   "edges": [
///     { "from": "inp", "to": "rev", "capacity": 8 },
///     { "from": "inp", "to": "out" },
///     { "from": "rev", "to": "out" }
///   ]
/// }
/// ```
///
/// Unknown fields are refused, so a typo is an error rather than a
/// silently ignored option.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct PipelineSpec {
    /// The nodes, in order.
    pub nodes: Vec<NodeDesc>,
    /// The edges; a node's inputs are ordered as its edges are listed.
    #[serde(default)]
    pub edges: Vec<EdgeDesc>,
    /// The capacity of edges that give none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_capacity: Option<usize>,
    /// The environment every processor can read.
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub env: Value,
}

/// One node of a [`PipelineSpec`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct NodeDesc {
    /// The node's name.
    pub name: String,
    /// The registered processor (or source) it runs.
    pub processor: String,
    /// Arguments given to the processor's factory.
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub args: Value,
    /// The join of a multi-input node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub join: Option<Join>,
    /// Inputs processed at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<usize>,
    /// Keep input order at the output when concurrent.
    #[serde(default)]
    pub keep_order: bool,
    /// What to do when the processor fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_error: Option<ErrorPolicy>,
    /// Copy or round-robin to several downstream nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fan_out: Option<FanOut>,
}

/// One edge of a [`PipelineSpec`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct EdgeDesc {
    /// The upstream node.
    pub from: String,
    /// The downstream node.
    pub to: String,
    /// How many items the edge holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<usize>,
}

impl PipelineSpec {
    /// Parse a JSON description.
    ///
    /// # Errors
    ///
    /// [`BuildError::Json`] when it is not a valid description.
    pub fn from_json(json: &str) -> Result<Self, BuildError> {
        Ok(serde_json::from_str(json)?)
    }

    /// Resolve every node through `registry` and check the graph.
    ///
    /// # Errors
    ///
    /// [`BuildError::UnknownProcessor`] and [`BuildError::InvalidArgs`]
    /// (in node order), then the graph's errors as
    /// [`PipelineBuilder::build`] checks them.
    pub fn build<T: Item>(self, registry: &Registry<T>) -> Result<Pipeline<T>, BuildError> {
        let mut builder = PipelineBuilder::default().env(self.env);
        if let Some(c) = self.default_capacity {
            builder = builder.default_capacity(c);
        }
        for desc in self.nodes {
            let factory = registry.factories.get(&desc.processor).ok_or_else(|| {
                BuildError::UnknownProcessor {
                    node: desc.name.clone(),
                    processor: desc.processor.clone(),
                }
            })?;
            let invalid = |source| BuildError::InvalidArgs {
                node: desc.name.clone(),
                processor: desc.processor.clone(),
                source,
            };
            let kind = match factory {
                Factory::Source(f) => NodeKind::Source(f(&desc.args).map_err(invalid)?),
                Factory::Processor(f) => NodeKind::Processor(f(&desc.args).map_err(invalid)?),
            };
            let mut node = Node::new(kind);
            node.join = desc.join.unwrap_or_default();
            node.concurrency = desc.concurrency.unwrap_or(1);
            node.keep_order = desc.keep_order;
            node.on_error = desc.on_error.unwrap_or_default();
            node.fan_out = desc.fan_out.unwrap_or_default();
            builder = builder.node(desc.name, node);
        }
        for e in self.edges {
            builder = match e.capacity {
                Some(c) => builder.edge_with_capacity(e.from, e.to, c),
                None => builder.edge(e.from, e.to),
            };
        }
        builder.build()
    }
}

impl<T: Item> Pipeline<T> {
    /// Build a pipeline from a JSON description ([`PipelineSpec`]),
    /// resolving processors by name through `registry`.
    ///
    /// # Examples
    ///
    /// ```
    /// use tributary_pipeline::{iter_source, map, Pipeline, Registry};
    ///
    /// let mut registry = Registry::new();
    /// registry
    ///     .source("numbers", |args| {
    ///         let n = args["count"].as_u64().ok_or("count must be a number")?;
    ///         Ok(iter_source(0..n))
    ///     })
    ///     .processor("double", |_| Ok(map(|x: u64| async move { Ok::<_, std::io::Error>(2 * x) })));
    /// let p = Pipeline::from_json(
    ///     r#"{ "nodes": [ { "name": "a", "processor": "numbers", "args": { "count": 3 } },
    ///                     { "name": "b", "processor": "double" } ],
    ///          "edges": [ { "from": "a", "to": "b" } ] }"#,
    ///     &registry,
    /// ).unwrap();
    /// assert_eq!(p.node_names().collect::<Vec<_>>(), ["a", "b"]);
    ///
    /// let err = Pipeline::from_json(
    ///     r#"{ "nodes": [ { "name": "a", "processor": "nope" } ] }"#, &registry,
    /// ).unwrap_err();
    /// assert_eq!(err.to_string(), "node a names processor nope, which is not registered");
    /// ```
    ///
    /// # Errors
    ///
    /// As [`PipelineSpec::from_json`] and [`PipelineSpec::build`].
    pub fn from_json(json: &str, registry: &Registry<T>) -> Result<Self, BuildError> {
        PipelineSpec::from_json(json)?.build(registry)
    }
}

type SourceFactory<T> = Box<dyn Fn(&Value) -> Result<Box<dyn Source<T>>, BoxError> + Send + Sync>;
type ProcessorFactory<T> =
    Box<dyn Fn(&Value) -> Result<Box<dyn RunProcessor<T>>, BoxError> + Send + Sync>;

enum Factory<T> {
    Source(SourceFactory<T>),
    Processor(ProcessorFactory<T>),
}

/// Named processors and sources, each made from a node's `args` by a
/// factory, for pipelines described in JSON.
pub struct Registry<T> {
    factories: HashMap<String, Factory<T>>,
}

impl<T> fmt::Debug for Registry<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<&String> = self.factories.keys().collect();
        names.sort();
        f.debug_struct("Registry").field("names", &names).finish()
    }
}

impl<T: Item> Default for Registry<T> {
    fn default() -> Self {
        Registry {
            factories: HashMap::new(),
        }
    }
}

impl<T: Item> Registry<T> {
    /// An empty registry.
    pub fn new() -> Self {
        Registry::default()
    }

    /// Register processor `name`; `make` builds one from a node's `args`
    /// (or refuses them). A later registration of the same name replaces
    /// the earlier one.
    pub fn processor<P, F>(&mut self, name: impl Into<String>, make: F) -> &mut Self
    where
        P: Processor<T>,
        F: Fn(&Value) -> Result<P, BoxError> + Send + Sync + 'static,
    {
        let f: ProcessorFactory<T> = Box::new(move |args| {
            make(args).map(|p| Box::new(Runner(p)) as Box<dyn RunProcessor<T>>)
        });
        self.factories.insert(name.into(), Factory::Processor(f));
        self
    }

    /// Register source `name`; `make` builds one from a node's `args`.
    pub fn source<S, F>(&mut self, name: impl Into<String>, make: F) -> &mut Self
    where
        S: Source<T>,
        F: Fn(&Value) -> Result<S, BoxError> + Send + Sync + 'static,
    {
        let f: SourceFactory<T> =
            Box::new(move |args| make(args).map(|s| Box::new(s) as Box<dyn Source<T>>));
        self.factories.insert(name.into(), Factory::Source(f));
        self
    }

    /// Whether `name` is registered.
    pub fn contains(&self, name: &str) -> bool {
        self.factories.contains_key(name)
    }
}
