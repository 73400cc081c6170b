//! The scenarios; each measures tributary next to a bare-tokio baseline
//! doing the same work in the same run.

pub(crate) mod callgrind;
pub(crate) mod checkpoint;
pub(crate) mod cluster;
pub(crate) mod control;
pub(crate) mod durable;
pub(crate) mod map;
pub(crate) mod memory;
pub(crate) mod merge;
pub(crate) mod pipeline;
pub(crate) mod profile;
pub(crate) mod queue;
