//! tributary's integration tests: one binary, one module per topic.

mod actions_validation;
mod application_run;
mod application_stream;
mod graph_build;
mod hooks_tracing;
mod persistence_resume;
mod runtime_blocking;
mod runtime_control;
mod runtime_merge;
mod runtime_parallel;
mod runtime_policies;
mod runtime_props;
mod state_ops;
mod support;
