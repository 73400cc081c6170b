//! The concurrency budget: a runtime's shared limit on tasks alive at once
//! and its start rate, and a task's hold on it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The budget shared by every run of a runtime, nested runs included.
pub(crate) struct Budget {
    permits: Option<Arc<Semaphore>>,
    max_concurrency: Option<usize>,
    start_interval: Option<Duration>,
    next_start: Mutex<Option<Instant>>,
}

impl Budget {
    pub(crate) fn new(max_concurrency: Option<usize>, start_rate: Option<f64>) -> Self {
        Budget {
            permits: max_concurrency.map(|n| Arc::new(Semaphore::new(n))),
            max_concurrency,
            start_interval: start_rate.map(|r| Duration::from_secs_f64(1.0 / r)),
            next_start: Mutex::new(None),
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
    /// Not cancel safe: the turn is taken when the future is first polled.
    pub(crate) async fn pace(&self) {
        let Some(interval) = self.start_interval else {
            return;
        };
        let at = {
            let mut next = self.next_start.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            let at = next.map_or(now, |n| n.max(now));
            *next = Some(at + interval);
            at
        };
        tokio::time::sleep_until(at).await;
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
    root: CancellationToken,
    sem: Option<Arc<Semaphore>>,
    n: usize,
) -> Result<Permits, ()> {
    let Some(sem) = sem else {
        return Ok(Permits::none(n));
    };
    let n32 = u32::try_from(n).map_err(|_| ())?;
    let mut permit = match Arc::clone(&sem).try_acquire_many_owned(n32) {
        Ok(p) => p,
        Err(_) => tokio::select! {
            biased;
            _ = root.cancelled() => return Err(()),
            p = sem.acquire_many_owned(n32) => p.map_err(|_| ())?,
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
#[derive(Clone, Default)]
pub(crate) struct TaskSlot(Arc<Mutex<SlotInner>>);

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
        TaskSlot(Arc::new(Mutex::new(SlotInner {
            budget,
            budget_permit,
            run_permit,
        })))
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
