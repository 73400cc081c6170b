#![doc = include_str!("../../../docs/pipelines.md")]

mod emit;
mod error;
mod graph;
mod item;
mod processor;
mod run;
mod subgraph;

#[doc(inline)]
pub use emit::{EmitError, Emitter};
#[doc(inline)]
pub use error::{BuildError, RunError};
#[doc(inline)]
pub use graph::spec::{EdgeDesc, NodeDesc, PipelineSpec, Registry};
#[doc(inline)]
pub use graph::{DEFAULT_CAPACITY, ErrorPolicy, FanOut, Join, Node, Pipeline, PipelineBuilder};
#[doc(inline)]
pub use item::{BoxError, Input, Item, NodeContext};
#[doc(inline)]
pub use processor::{
    FnProcessor, FnSource, NotSingle, Processor, Source, iter_source, map, processor, sink, source,
    stream_source,
};
#[doc(inline)]
pub use run::metrics::{EdgeMetrics, Metrics, NodeMetrics};
#[doc(inline)]
pub use run::{DeadLetter, DeadLetters, PipelineHandle, PipelineRun, RunSummary};
#[doc(inline)]
pub use subgraph::{SubgraphError, SubgraphProcessor, subgraph};
