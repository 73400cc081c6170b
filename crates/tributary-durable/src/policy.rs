//! [`StepPolicy`]: how often a step's body may run, how long it may take.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use tributary_core::BoxError;

use crate::error::Terminal;

type RetryIf = Arc<dyn Fn(&BoxError) -> bool + Send + Sync>;

/// Retries with exponential backoff, a predicate that says which errors are
/// worth retrying, and a timeout per attempt.
///
/// The default runs the body once, without a timeout. An error wrapped in
/// [`Terminal`] is never retried; other errors are retried while retries
/// remain and the predicate (if any) holds. A timed-out attempt counts as a
/// failed one.
///
/// Retries need a body that can be built again: give the step a closure
/// with [`DurableExt::step_with`](crate::DurableExt::step_with). A step
/// built from one future ([`DurableExt::step`](crate::DurableExt::step))
/// runs at most once per action attempt whatever its policy.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use tributary_durable::StepPolicy;
///
/// let policy = StepPolicy::new()
///     .retries(5)
///     .backoff(Duration::from_millis(50), Duration::from_secs(2))
///     .timeout(Duration::from_secs(10))
///     .retry_if(|e| !e.to_string().contains("invalid"));
/// assert_eq!(policy.max_attempts(), 6);
/// ```
#[derive(Clone)]
pub struct StepPolicy {
    retries: usize,
    min_delay: Duration,
    max_delay: Duration,
    factor: f32,
    jitter: bool,
    timeout: Option<Duration>,
    retry_if: Option<RetryIf>,
    pause: bool,
}

impl fmt::Debug for StepPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StepPolicy")
            .field("retries", &self.retries)
            .field("min_delay", &self.min_delay)
            .field("max_delay", &self.max_delay)
            .field("factor", &self.factor)
            .field("jitter", &self.jitter)
            .field("timeout", &self.timeout)
            .field("retry_if", &self.retry_if.is_some())
            .field("pause", &self.pause)
            .finish()
    }
}

impl Default for StepPolicy {
    fn default() -> Self {
        StepPolicy {
            retries: 0,
            min_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(10),
            factor: 2.0,
            jitter: false,
            timeout: None,
            retry_if: None,
            pause: false,
        }
    }
}

impl StepPolicy {
    /// Run once, no timeout.
    pub fn new() -> Self {
        Self::default()
    }

    /// Retry up to `retries` times after the first attempt.
    pub fn retries(mut self, retries: usize) -> Self {
        self.retries = retries;
        self
    }

    /// The first delay between attempts and the largest one (delays double
    /// by default; 100 ms and 10 s unless set).
    pub fn backoff(mut self, min: Duration, max: Duration) -> Self {
        self.min_delay = min;
        self.max_delay = max.max(min);
        self
    }

    /// The factor by which each delay grows (2 unless set; at least 1).
    pub fn factor(mut self, factor: f32) -> Self {
        self.factor = if factor.is_finite() {
            factor.max(1.0)
        } else {
            1.0
        };
        self
    }

    /// Add random jitter to each delay (off by default).
    pub fn jitter(mut self) -> Self {
        self.jitter = true;
        self
    }

    /// Fail an attempt that runs longer than `timeout`.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Retry only errors for which `f` holds ([`Terminal`] errors are never
    /// retried, whatever `f` says).
    pub fn retry_if(mut self, f: impl Fn(&BoxError) -> bool + Send + Sync + 'static) -> Self {
        self.retry_if = Some(Arc::new(f));
        self
    }

    /// When the retries run out (on an error that may be retried), pause
    /// instead of failing: a workflow's record shows
    /// [`WorkflowStatus::Paused`](crate::WorkflowStatus::Paused) and the
    /// step waits until [`Workflows::resume`](crate::Workflows::resume)
    /// starts its retries again (or the workflow is cancelled). A step of
    /// an action in a runtime task pauses the task (counted as paused in
    /// the run's progress) until it is resumed through the run's handle
    /// (`resume_task(path)` or `resume()`); a step of an action run
    /// directly (no runtime) has nobody to resume it and fails as without
    /// this setting.
    pub fn pause_on_exhausted(mut self) -> Self {
        self.pause = true;
        self
    }

    /// Whether the step pauses when its retries run out.
    pub fn pauses_on_exhausted(&self) -> bool {
        self.pause
    }

    /// How many times the body may run: retries + 1.
    pub fn max_attempts(&self) -> usize {
        self.retries.saturating_add(1)
    }

    /// The timeout per attempt, if any.
    pub fn attempt_timeout(&self) -> Option<Duration> {
        self.timeout
    }

    /// Whether `error` may be retried (by kind; whether retries remain is
    /// the backoff's business).
    pub(crate) fn should_retry(&self, error: &BoxError) -> bool {
        !Terminal::is_terminal(error) && self.retry_if.as_ref().is_none_or(|f| f(error))
    }

    /// The delays between attempts, one per retry.
    pub(crate) fn delays(&self) -> impl Iterator<Item = Duration> + Send + use<> {
        let mut builder = ExponentialBuilder::default()
            .with_min_delay(self.min_delay)
            .with_max_delay(self.max_delay)
            .with_factor(self.factor)
            .with_max_times(self.retries);
        if self.jitter {
            builder = builder.with_jitter();
        }
        builder.build()
    }
}
