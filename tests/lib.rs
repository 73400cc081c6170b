//! Helpers shared by tributary's integration tests.
