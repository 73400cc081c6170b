//! Helpers shared by tributary's examples.
