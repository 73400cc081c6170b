//! Filters on metadata, on the producer side and on the consumer side.

use std::sync::Mutex;

use crate::error::InvalidProbability;
use crate::event::Metadata;

/// Decides from an object's metadata whether the object goes on.
///
/// Any `Fn(&Metadata) -> bool` is a filter; `true` keeps the object.
/// On the producer, a dropped object is never stored nor published. On the
/// consumer, a dropped object is skipped, and if its event says `evict` its
/// object is evicted so that filtered data does not leak.
pub trait Filter: Send + Sync + 'static {
    /// Whether the object with `metadata` is kept.
    fn keep(&self, metadata: &Metadata) -> bool;
}

impl<F> Filter for F
where
    F: Fn(&Metadata) -> bool + Send + Sync + 'static,
{
    fn keep(&self, metadata: &Metadata) -> bool {
        self(metadata)
    }
}

/// Keeps each object with probability `p`, whatever its metadata.
///
/// # Examples
///
/// ```
/// use tributary_stream::{Filter, Metadata, Sample};
///
/// let half = Sample::keep(0.5).unwrap().seeded(7);
/// let kept = (0..1000).filter(|_| half.keep(&Metadata::new())).count();
/// assert!((400..600).contains(&kept));
/// assert!(Sample::keep(1.5).is_err());
/// ```
#[derive(Debug)]
pub struct Sample {
    p: f64,
    state: Mutex<u64>,
}

impl Sample {
    /// A filter keeping a fraction `p` of the objects.
    ///
    /// # Errors
    ///
    /// [`InvalidProbability`] when `p` is outside `[0, 1]` (or NaN).
    pub fn keep(p: f64) -> Result<Self, InvalidProbability> {
        if !(0.0..=1.0).contains(&p) {
            return Err(InvalidProbability(p));
        }
        let seed = uuid::Uuid::new_v4().as_u64_pair().0;
        Ok(Self {
            p,
            state: Mutex::new(seed),
        })
    }

    /// The same filter with a fixed seed, for reproducible sampling.
    pub fn seeded(self, seed: u64) -> Self {
        *self.state.lock().expect("sample lock poisoned") = seed;
        self
    }

    // splitmix64: small, fast and good enough for sampling.
    fn next_unit(&self) -> f64 {
        let mut s = self.state.lock().expect("sample lock poisoned");
        *s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = *s;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

impl Filter for Sample {
    fn keep(&self, _metadata: &Metadata) -> bool {
        self.p >= 1.0 || self.next_unit() < self.p
    }
}
