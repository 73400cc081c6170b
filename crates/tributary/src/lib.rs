//! tributary runs many small subgraph applications (state machines of
//! actions over a JSON state) in parallel and streams what they produce.
//!
//! This crate is the front door. It re-exports the concepts of
//! `tributary-core` ([`State`], [`Action`], [`Graph`], [`Application`], ...)
//! and the runtime of `tributary-runtime` ([`Runtime`], [`RunConfig`],
//! [`RunHandle`], [`RunStream`], [`StreamItem`], [`ParallelAction`], ...).

#[doc(inline)]
pub use tributary_core::*;
#[doc(inline)]
pub use tributary_runtime::*;
