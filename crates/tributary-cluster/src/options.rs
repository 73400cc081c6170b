//! The settings callers and workers of one cluster share.

use std::time::Duration;

use tributary_queue::QueueOptions;

use crate::error::ClusterError;

/// What a caller does about tasks still running when it goes away (its
/// process dies, or it stops saying it is alive).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Orphans {
    /// Workers cancel the run's tasks once the caller has been silent for
    /// three alive intervals (the default): nothing runs forever unowned.
    #[default]
    Cancel,
    /// Workers let the tasks finish (their checkpoints stay, a later caller
    /// with the same run id resumes them).
    Finish,
}

/// Settings shared by the callers and the workers of one cluster (both
/// sides must use the same namespace, heartbeat and delivery limit).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClusterOptions {
    /// Prefix of every queue name (letters, digits, `-`, `_`).
    pub namespace: String,
    /// The time scale of claims: a worker renews the claim of each task it
    /// runs twice per heartbeat, a claim lasts [`lease`](Self::lease)
    /// (1.75 heartbeats: two late renewals are tolerated) and idle workers
    /// poll every quarter heartbeat, so a task whose worker died is claimed
    /// again within two heartbeats.
    pub heartbeat: Duration,
    /// Deliveries of one task (crashed or refused claims count) before it
    /// goes to the dead letters.
    pub max_deliveries: u32,
    /// How often a caller says it is alive.
    pub alive_interval: Duration,
    /// What workers do with the tasks of a caller that went away.
    pub orphans: Orphans,
    /// How long a caller may be silent (no `Alive` heard, and the broker
    /// reachable all the while) before workers count it gone: at least
    /// three alive intervals. Longer than any broker outage you expect to
    /// ride out, so a restarting broker does not orphan every run.
    pub orphan_after: Duration,
    /// How long a caller waits for some worker to claim a task that every
    /// worker so far refused (its graph is unknown) before it fails the task.
    pub unknown_graph_wait: Duration,
    /// How long a caller waits, after cancelling a task a worker holds, for
    /// the worker to confirm it stopped.
    pub cancel_wait: Duration,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            namespace: "tributary".to_owned(),
            heartbeat: Duration::from_secs(1),
            max_deliveries: 10,
            alive_interval: Duration::from_secs(1),
            orphans: Orphans::Cancel,
            orphan_after: Duration::from_secs(10),
            unknown_graph_wait: Duration::from_secs(5),
            cancel_wait: Duration::from_secs(5),
        }
    }
}

impl ClusterOptions {
    /// The defaults: namespace `tributary`, heartbeat 1 s (a dead worker's
    /// tasks claimed again within 2 s), 10 deliveries, alive every second, orphans
    /// cancelled after 10 s of silence, 5 s for unknown graphs and for
    /// cancel confirmations.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets [`namespace`](Self::namespace).
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }

    /// Sets [`heartbeat`](Self::heartbeat).
    pub fn heartbeat(mut self, every: Duration) -> Self {
        self.heartbeat = every;
        self
    }

    /// Sets [`max_deliveries`](Self::max_deliveries).
    pub fn max_deliveries(mut self, n: u32) -> Self {
        self.max_deliveries = n;
        self
    }

    /// Sets [`alive_interval`](Self::alive_interval).
    pub fn alive_interval(mut self, every: Duration) -> Self {
        self.alive_interval = every;
        self
    }

    /// Sets [`orphans`](Self::orphans).
    pub fn orphans(mut self, orphans: Orphans) -> Self {
        self.orphans = orphans;
        self
    }

    /// Sets [`orphan_after`](Self::orphan_after).
    pub fn orphan_after(mut self, silence: Duration) -> Self {
        self.orphan_after = silence;
        self
    }

    /// Sets [`unknown_graph_wait`](Self::unknown_graph_wait).
    pub fn unknown_graph_wait(mut self, wait: Duration) -> Self {
        self.unknown_graph_wait = wait;
        self
    }

    /// Sets [`cancel_wait`](Self::cancel_wait).
    pub fn cancel_wait(mut self, wait: Duration) -> Self {
        self.cancel_wait = wait;
        self
    }

    /// How long a claim lasts without renewal: 1.75 heartbeats (renewed
    /// every half heartbeat; with the quarter-heartbeat poll of idle
    /// workers, a dead worker's task is claimed again within two).
    pub fn lease(&self) -> Duration {
        self.heartbeat * 7 / 4
    }

    /// How often a worker renews each claim: every half heartbeat.
    pub(crate) fn renew_every(&self) -> Duration {
        self.heartbeat / 2
    }

    pub(crate) fn check(&self) -> Result<(), ClusterError> {
        if self.namespace.is_empty()
            || !self
                .namespace
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(ClusterError::Invalid {
                name: "namespace",
                reason: format!("`{}` must be letters, digits, `-` and `_`", self.namespace),
            });
        }
        if self.heartbeat < Duration::from_millis(10) {
            return Err(ClusterError::Invalid {
                name: "heartbeat",
                reason: "must be at least 10 ms".to_owned(),
            });
        }
        if self.alive_interval.is_zero() {
            return Err(ClusterError::Invalid {
                name: "alive_interval",
                reason: "must be more than zero".to_owned(),
            });
        }
        if self.max_deliveries == 0 {
            return Err(ClusterError::Invalid {
                name: "max_deliveries",
                reason: "must be at least 1".to_owned(),
            });
        }
        Ok(())
    }

    pub(crate) fn tasks_queue(&self) -> String {
        format!("{}-tasks", self.namespace)
    }

    pub(crate) fn control_queue(&self) -> String {
        format!("{}-control", self.namespace)
    }

    pub(crate) fn task_queue_options(&self) -> QueueOptions {
        QueueOptions::default()
            .lease(self.lease())
            .max_deliveries(self.max_deliveries)
            .max_in_flight(1 << 20)
    }

    pub(crate) fn stream_queue_options(&self) -> QueueOptions {
        QueueOptions::default()
            .lease(Duration::from_secs(30))
            .max_deliveries(u32::MAX)
            .max_in_flight(1 << 20)
    }
}
