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
mod stream_aggregate;
mod stream_consumer_end;
mod stream_event;
mod stream_example;
mod stream_failure;
mod stream_filters;
mod stream_nats;
mod stream_ordering;
mod stream_proxy;
mod stream_redis;
mod stream_schedules;
mod stream_support;
mod support;
