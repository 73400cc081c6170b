//! tributary runs many small subgraph applications (state machines of
//! actions over a JSON state) and streams what they produce.
//!
//! This crate is the front door: it re-exports the concepts of
//! `tributary-core` ([`State`], [`Action`], [`Graph`], [`Application`], ...).

#[doc(inline)]
pub use tributary_core::*;
