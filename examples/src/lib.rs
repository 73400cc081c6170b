//! Helpers shared by tributary's examples: deterministic simulated latency
//! (seeded, no network, no model) and a client of OpenAI-compatible
//! chat-completions endpoints for `deep_research --model`.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng};

/// A seeded random generator ([`rand`]'s `StdRng`): the same seed gives
/// the same latencies on every machine (for a given version of `rand`).
#[derive(Debug, Clone)]
pub struct Rng(StdRng);

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(StdRng::seed_from_u64(seed))
    }

    /// A generator seeded from a string (a task key, a topic): its FNV-1a
    /// hash is the seed.
    pub fn from_str_seed(seed: &str) -> Self {
        Rng::new(seed.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        }))
    }

    /// The next number.
    pub fn next_u64(&mut self) -> u64 {
        self.0.random()
    }

    /// A number in `lo..hi` (`lo` when the range is empty).
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            return lo;
        }
        self.0.random_range(lo..hi)
    }

    /// A latency between `lo_ms` and `hi_ms`.
    pub fn latency(&mut self, lo_ms: u64, hi_ms: u64) -> Duration {
        Duration::from_millis(self.range(lo_ms, hi_ms))
    }
}

pub mod chat;
