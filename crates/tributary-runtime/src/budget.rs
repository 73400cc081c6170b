//! The concurrency budget: a runtime's shared limit on tasks alive at once
//! and its start rate, and a task's hold on it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::clock::{Clock, Reference};
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The start-rate limiter: `governor`'s GCRA on tokio's clock.
type StartLimiter = RateLimiter<NotKeyed, InMemoryState, TokioClock, NoOpMiddleware<TokioNanos>>;

/// The budget shared by every run of a runtime, nested runs included.
pub(crate) struct Budget {
    permits: Option<Arc<Semaphore>>,
    max_concurrency: Option<usize>,
    start_interval: Option<Duration>,
    limiter: Option<StartLimiter>,
}

impl Budget {
    pub(crate) fn new(max_concurrency: Option<usize>, start_rate: Option<f64>) -> Self {
        let start_interval = start_rate.map(|r| Duration::from_secs_f64(1.0 / r));
        Budget {
            permits: max_concurrency.map(|n| Arc::new(Semaphore::new(n))),
            max_concurrency,
            start_interval,
            // A burst of one: starts are spaced evenly from the first.
            limiter: start_interval
                .and_then(Quota::with_period)
                .map(|quota| RateLimiter::direct_with_clock(quota, TokioClock::new())),
        }
    }

    pub(crate) fn max_concurrency(&self) -> Option<usize> {
        self.max_concurrency
    }

    pub(crate) fn start_interval(&self) -> Option<Duration> {
        self.start_interval
    }

    pub(crate) fn permits(&self) -> Option<&Arc<Semaphore>> {
        self.permits.as_ref()
    }

    /// Whether the budget has no start rate.
    pub(crate) fn is_unpaced(&self) -> bool {
        self.start_interval.is_none()
    }

    /// Wait for this task's turn under the start rate.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the turn is taken only when the future returns.
    pub(crate) async fn pace(&self) {
        let Some(limiter) = &self.limiter else {
            return;
        };
        loop {
            match limiter.check() {
                Ok(()) => return,
                Err(not_until) => {
                    let wait = not_until.wait_time_from(TokioClock::now_of(limiter));
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }
}

/// Nanoseconds on tokio's clock since the limiter was made: `governor`'s
/// own clocks do not follow tokio's, which tests pause and advance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct TokioNanos(u64);

impl std::ops::Add<Nanos> for TokioNanos {
    type Output = Self;

    fn add(self, other: Nanos) -> Self {
        TokioNanos(self.0.saturating_add(other.as_u64()))
    }
}

impl Reference for TokioNanos {
    fn duration_since(&self, earlier: Self) -> Nanos {
        Nanos::from(Duration::from_nanos(self.0.saturating_sub(earlier.0)))
    }

    fn saturating_sub(&self, duration: Nanos) -> Self {
        TokioNanos(self.0.checked_sub(duration.as_u64()).unwrap_or(self.0))
    }
}

/// tokio's clock, for `governor`.
#[derive(Debug, Clone)]
pub(crate) struct TokioClock {
    base: Instant,
}

impl TokioClock {
    fn new() -> Self {
        TokioClock {
            base: Instant::now(),
        }
    }

    fn now_of(limiter: &StartLimiter) -> TokioNanos {
        limiter.clock().now()
    }
}

impl Clock for TokioClock {
    type Instant = TokioNanos;

    fn now(&self) -> TokioNanos {
        let nanos = Instant::now()
            .saturating_duration_since(self.base)
            .as_nanos();
        TokioNanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }
}

/// The permits of a batch, in task order.
pub(crate) type Permits = std::iter::Chain<
    std::option::IntoIter<Option<OwnedSemaphorePermit>>,
    std::vec::IntoIter<Option<OwnedSemaphorePermit>>,
>;

trait NoPermits {
    fn none(n: usize) -> Self;
}

impl NoPermits for Permits {
    /// `n` empty permits (no limit to hold).
    fn none(n: usize) -> Self {
        let rest: Vec<Option<OwnedSemaphorePermit>> = (1..n).map(|_| None).collect();
        Some(None).into_iter().chain(rest)
    }
}

/// One permit per task of a batch (`None` where there is no limit).
/// A batch of one, the common case, allocates nothing.
pub(crate) async fn acquire(
    root: &CancellationToken,
    sem: Option<&Arc<Semaphore>>,
    n: usize,
) -> Result<Permits, ()> {
    let Some(sem) = sem else {
        return Ok(Permits::none(n));
    };
    let n32 = u32::try_from(n).map_err(|_| ())?;
    let mut permit = match Arc::clone(sem).try_acquire_many_owned(n32) {
        Ok(p) => p,
        Err(_) => tokio::select! {
            biased;
            _ = root.cancelled() => return Err(()),
            p = Arc::clone(sem).acquire_many_owned(n32) => p.map_err(|_| ())?,
        },
    };
    let mut rest = Vec::new();
    if n > 1 {
        rest.reserve_exact(n - 1);
        for _ in 1..n {
            rest.push(permit.split(1));
        }
    }
    Ok(Some(Some(permit)).into_iter().chain(rest))
}

/// A task's hold on the concurrency limits: its permit of the runtime's
/// shared budget and of its run's own limit. Held until the consumer has
/// received the task's terminal item, so a slow consumer bounds memory.
/// It lives in the task's lane (no allocation of its own); the terminal
/// item carries the lane to the merger, which releases it.
#[derive(Default)]
pub(crate) struct TaskSlot(Mutex<SlotInner>);

#[derive(Default)]
struct SlotInner {
    budget: Option<Arc<Semaphore>>,
    budget_permit: Option<OwnedSemaphorePermit>,
    run_permit: Option<OwnedSemaphorePermit>,
}

impl TaskSlot {
    pub(crate) fn new(
        budget: Option<Arc<Semaphore>>,
        budget_permit: Option<OwnedSemaphorePermit>,
        run_permit: Option<OwnedSemaphorePermit>,
    ) -> Self {
        TaskSlot(Mutex::new(SlotInner {
            budget,
            budget_permit,
            run_permit,
        }))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SlotInner> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Give the budget permit back (while the task waits on its children).
    pub(crate) fn release_budget(&self) {
        self.lock().budget_permit = None;
    }

    /// Take a budget permit again after [`release_budget`](Self::release_budget).
    pub(crate) async fn reacquire_budget(&self) {
        let budget = self.lock().budget.clone();
        if let Some(budget) = budget {
            if let Ok(permit) = budget.acquire_owned().await {
                self.lock().budget_permit = Some(permit);
            }
        }
    }

    /// Give every permit back (the consumer has the task's terminal item).
    pub(crate) fn release_all(&self) {
        let mut inner = self.lock();
        inner.budget_permit = None;
        inner.run_permit = None;
    }
}
