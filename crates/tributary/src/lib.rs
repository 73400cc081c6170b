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

/// SQLite persistence and tracking, the embedded default (feature `sqlite`,
/// on by default): [`sqlite::SqlitePersister`], [`sqlite::SqliteTracker`],
/// [`sqlite::RunReader`].
#[cfg(feature = "sqlite")]
pub use tributary_sqlite as sqlite;

/// The guide, whose examples are compiled and run as doctests.
pub mod guide {
    #[doc = include_str!("../../../docs/getting-started.md")]
    pub mod getting_started {}
    #[doc = include_str!("../../../docs/concepts.md")]
    pub mod concepts {}
    #[doc = include_str!("../../../docs/parallelism.md")]
    pub mod parallelism {}
    #[doc = include_str!("../../../docs/streaming.md")]
    pub mod streaming {}
    #[doc = include_str!("../../../docs/policies.md")]
    pub mod policies {}
    #[doc = include_str!("../../../docs/control.md")]
    pub mod control {}
    #[doc = include_str!("../../../docs/architecture.md")]
    pub mod architecture {}
}
