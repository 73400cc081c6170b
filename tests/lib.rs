//! Helpers shared by tributary's integration tests.

pub mod chain;
pub mod crash;
