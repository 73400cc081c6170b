//! tributary's integration tests: one binary, one module per topic.

mod actions_validation;
mod application_run;
mod application_stream;
mod graph_build;
mod hooks_tracing;
mod persistence_resume;
mod sqlite_concurrency;
mod sqlite_crash_resume;
mod sqlite_errors;
mod sqlite_persistence;
mod sqlite_tracker;
mod state_ops;
