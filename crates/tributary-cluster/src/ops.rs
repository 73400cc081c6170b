//! Operations: what the fleet holds, the tasks it gave up on, and putting
//! one of those back.
//!
//! A [`Fleet`] reads the cluster's queues on a broker; it runs nothing. It
//! reports the depth of the task queue, the dead-lettered tasks (with the
//! error of their last delivery and who they are: run, task, key, graph),
//! and the workers that answer a census (their held tasks, concurrency and
//! how long ago they last renewed their claims). [`Fleet::retry_dead`]
//! publishes a dead-lettered task again and removes it from the dead
//! letters.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tributary_queue::{Backlog, DeadLetter, QueueError, QueueOptions, Start, WorkQueue};

use crate::broker::Broker;
use crate::caller::WORKERS_GROUP;
use crate::error::ClusterError;
use crate::options::ClusterOptions;
use crate::protocol::{PROTOCOL_VERSION, TaskMessage};

/// What an operation on the fleet can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpsError {
    /// The broker failed.
    #[error(transparent)]
    Queue(#[from] QueueError),
    /// The cluster's settings are out of range.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// No dead-lettered task has this id (it was retried already, or the
    /// id is mistyped).
    #[error("no dead-lettered task `{id}` in queue `{queue}`")]
    NoSuchDeadTask {
        /// The task queue.
        queue: String,
        /// The id asked for.
        id: String,
    },
    /// The dead letter is not a task this version can publish again (a
    /// malformed message, or another protocol version): retrying it would
    /// only dead-letter it again.
    #[error("dead letter `{id}` cannot be retried: {reason}")]
    NotRetriable {
        /// The dead letter's id.
        id: String,
        /// Why.
        reason: String,
    },
}

/// A task as a dead letter names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct TaskIdentity {
    /// The run it belongs to.
    pub run: String,
    /// Its position in the run's task order.
    pub index: u64,
    /// Its key.
    pub key: String,
    /// The app id its checkpoints live under.
    pub app_id: String,
    /// The graph it names.
    pub graph: String,
}

/// A task the fleet gave up on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct DeadTask {
    /// The dead letter's id (for [`Fleet::retry_dead`]).
    pub id: String,
    /// Deliveries of this publication of the task.
    pub attempts: u32,
    /// Claims of earlier publications (a task retried before).
    pub earlier_claims: u32,
    /// The error of its last delivery (a worker's nak or terminate).
    pub error: Option<String>,
    /// Who the task is, when the message is a task of this protocol.
    pub task: Option<TaskIdentity>,
    /// Why the message is not a task this version reads, when it is not.
    pub unreadable: Option<String>,
}

/// One worker as it answered a census.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct WorkerBeat {
    /// Its name.
    pub worker: String,
    /// The tasks it holds, as `(run, task index)`.
    pub held: Vec<(String, u64)>,
    /// Tasks it runs at once.
    pub concurrency: usize,
    /// When it answered (milliseconds since the Unix epoch, its clock).
    pub at_ms: u64,
    /// Milliseconds since it last renewed its claims or looked for tasks.
    pub beat_age_ms: u64,
}

impl WorkerBeat {
    pub(crate) fn new(
        worker: String,
        mut held: Vec<(String, u64)>,
        concurrency: usize,
        beat_ms: u64,
    ) -> Self {
        held.sort();
        let at_ms = now_ms();
        WorkerBeat {
            worker,
            held,
            concurrency,
            at_ms,
            beat_age_ms: at_ms.saturating_sub(beat_ms),
        }
    }
}

/// A worker's answer to a census, unless it comes too late (the asker
/// removes the queue after its deadline; a late answer would create it
/// again).
pub(crate) async fn answer_census(
    broker: Arc<dyn Broker>,
    namespace: String,
    census: String,
    until_ms: u64,
    beat: WorkerBeat,
) {
    let now = now_ms();
    if !census_name_ok(&census) || now >= until_ms {
        return;
    }
    // Never longer than the census lasts (nor than half a minute).
    let left = Duration::from_millis(until_ms - now).min(Duration::from_secs(30));
    let answer = async {
        let queue = broker
            .queue(&census_queue_name(&namespace, &census), census_options())
            .await?;
        let payload = Bytes::from(serde_json::to_vec(&beat).expect("beats serialize"));
        queue.publish(payload, None).await
    };
    match tokio::time::timeout(left, answer).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::debug!(%error, "could not answer a census"),
        Err(_) => tracing::debug!("the census ended before the answer reached it"),
    }
}

/// What [`Fleet::status`] sees.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct FleetStatus {
    /// The cluster's namespace.
    pub namespace: String,
    /// Messages stored in the task queue: waiting, held, and settled but not
    /// yet trimmed (workers trim every 50 heartbeats).
    pub queue_depth: u64,
    /// Tasks no worker has claimed yet (the workers' lag); `None` when the
    /// broker cannot tell.
    pub waiting: Option<u64>,
    /// Tasks claimed by a worker and not yet settled (running, or held by
    /// a worker that died, until its lease runs out).
    pub claimed: u64,
    /// The dead-lettered tasks, oldest first.
    pub dead: Vec<DeadTask>,
    /// The workers that answered the census, by name (empty when no census
    /// was asked for).
    pub workers: Vec<WorkerBeat>,
}

/// What [`Fleet::retry_dead`] published.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RetriedTask {
    /// The dead letter it was.
    pub id: String,
    /// The task.
    pub task: TaskIdentity,
    /// Claims its new deliveries start after.
    pub earlier_claims: u32,
}

/// The operations side of a cluster: reads its queues on a broker, runs
/// nothing.
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
/// use tributary_cluster::{ClusterOptions, Fleet, MemoryBroker};
///
/// let fleet = Fleet::connect(MemoryBroker::new(), ClusterOptions::new()).await?;
/// let status = fleet.status(Duration::ZERO).await?;
/// assert_eq!(status.queue_depth, 0);
/// assert!(status.dead.is_empty());
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Fleet {
    broker: Arc<dyn Broker>,
    options: ClusterOptions,
    tasks: Arc<dyn WorkQueue>,
}

impl Fleet {
    /// Opens the cluster's task queue on `broker` (both sides of a cluster
    /// and its fleet use the same `options`).
    ///
    /// # Errors
    ///
    /// [`OpsError::Cluster`] for settings out of range, [`OpsError::Queue`]
    /// when the broker is unreachable.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a cancelled call keeps nothing open.
    pub async fn connect(broker: impl Broker, options: ClusterOptions) -> Result<Self, OpsError> {
        options.check()?;
        let broker: Arc<dyn Broker> = Arc::new(broker);
        let tasks = broker
            .queue(&options.tasks_queue(), options.task_queue_options())
            .await?;
        // The workers' group is left to the workers (its lease is theirs).
        Ok(Fleet {
            broker,
            options,
            tasks,
        })
    }

    /// The task queue's depth, the dead-lettered tasks, and the workers
    /// that answer a [`census`](Self::census) within `census_wait` (no
    /// census for a zero wait).
    ///
    /// # Errors
    ///
    /// [`OpsError::Queue`] when the broker fails.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe for the caller; a census cut short leaves its answers
    /// queue (`<ns>-census-<id>`) on the broker.
    pub async fn status(&self, census_wait: Duration) -> Result<FleetStatus, OpsError> {
        let workers = match census_wait.is_zero() {
            true => Vec::new(),
            false => self.census(census_wait).await?,
        };
        let queue_depth = self.tasks.stored().await?;
        let backlog = match self.tasks.backlog(WORKERS_GROUP).await {
            Ok(b) => b,
            // No worker ever started: nothing was claimed, everything waits.
            Err(QueueError::UnknownGroup { .. }) => {
                let mut none_claimed = Backlog::default();
                none_claimed.waiting = Some(queue_depth);
                none_claimed
            }
            Err(e) => return Err(e.into()),
        };
        Ok(FleetStatus {
            namespace: self.options.namespace.clone(),
            queue_depth,
            waiting: backlog.waiting,
            claimed: backlog.pending,
            dead: self.dead().await?,
            workers,
        })
    }

    /// The dead-lettered tasks, oldest first.
    ///
    /// # Errors
    ///
    /// [`OpsError::Queue`] when the broker fails.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only reads.
    pub async fn dead(&self) -> Result<Vec<DeadTask>, OpsError> {
        Ok(self.letters().await?.iter().map(dead_task).collect())
    }

    /// The workers' group's dead letters (none before any worker started).
    async fn letters(&self) -> Result<Vec<DeadLetter>, QueueError> {
        match self.tasks.dead_letters(WORKERS_GROUP).await {
            Err(QueueError::UnknownGroup { .. }) => Ok(Vec::new()),
            other => other,
        }
    }

    /// Publishes the dead-lettered task `id` again and removes it from the
    /// dead letters (two retries of one dead letter publish it once: the
    /// publication carries a dedupe id). Its new claims outrank every claim it had (their
    /// epochs continue from its attempts), so the persister's fencing and
    /// the run's caller accept the new owner. A task of a run whose caller
    /// is still waiting ends in that run; a task of a run that ended is
    /// dropped by the workers that know it ended (or, under
    /// [`Orphans::Cancel`](crate::Orphans::Cancel), cancelled once its
    /// caller is found silent); under [`Orphans::Finish`](crate::Orphans)
    /// it runs to its end and its checkpoints stay for a later caller.
    ///
    /// # Errors
    ///
    /// [`OpsError::NoSuchDeadTask`] for an unknown id (or one retried
    /// meanwhile), [`OpsError::NotRetriable`] for a dead letter that is not
    /// a task of this protocol, [`OpsError::Queue`] when the broker fails.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: the task is published again before its dead letter is
    /// removed, so a call cancelled in between leaves both (a second retry of
    /// the letter publishes it again under the same dedupe id, which the
    /// broker drops within its dedupe window).
    pub async fn retry_dead(&self, id: &str) -> Result<RetriedTask, OpsError> {
        let letters = self.letters().await?;
        let letter = letters
            .iter()
            .find(|d| d.id == id)
            .ok_or_else(|| self.no_such(id))?;
        let mut message = read_task(&letter.payload).map_err(|reason| OpsError::NotRetriable {
            id: id.to_owned(),
            reason,
        })?;
        message.earlier_claims = message.earlier_claims.saturating_add(letter.attempts);
        // Published first, then removed: a failure in between leaves the
        // dead letter in place (to retry again), never loses the task. The
        // dedupe id makes a second publication of the same dead letter (a
        // second operator, or a retry after such a failure) a duplicate
        // the workers receive once.
        let payload = Bytes::from(serde_json::to_vec(&message).expect("task messages serialize"));
        let dedupe = format!("retry-{}-{}-{}", message.run, message.index, letter.id);
        self.tasks.publish(payload, Some(&dedupe)).await?;
        self.tasks.remove_dead_letter(WORKERS_GROUP, id).await?;
        Ok(RetriedTask {
            id: id.to_owned(),
            task: identity(&message),
            earlier_claims: message.earlier_claims,
        })
    }

    fn no_such(&self, id: &str) -> OpsError {
        OpsError::NoSuchDeadTask {
            queue: self.tasks.name().to_owned(),
            id: id.to_owned(),
        }
    }

    /// Asks every worker to say what it holds, and collects the answers
    /// that arrive within `wait` (a worker answers within a quarter of a
    /// second of the question; two heartbeats is a safe wait). Workers are
    /// asked over the control queue every worker reads; they answer on a
    /// queue of this census alone, removed afterwards.
    ///
    /// # Errors
    ///
    /// [`OpsError::Queue`] when the broker fails.
    ///
    /// # Cancel safety
    ///
    /// As [`status`](Self::status): a census cut short leaves its answers
    /// queue on the broker.
    pub async fn census(&self, wait: Duration) -> Result<Vec<WorkerBeat>, OpsError> {
        let o = &self.options;
        let census = format!("census-{}", uuid::Uuid::new_v4().simple());
        let answers = self
            .broker
            .queue(&census_queue_name(&o.namespace, &census), census_options())
            .await?;
        let collected = self.collect(&answers, &census, wait).await;
        if let Err(error) = answers.destroy().await {
            tracing::warn!(%error, "could not remove the census queue");
        }
        collected
    }

    async fn collect(
        &self,
        answers: &Arc<dyn WorkQueue>,
        census: &str,
        wait: Duration,
    ) -> Result<Vec<WorkerBeat>, OpsError> {
        answers.create_group("fleet", Start::First).await?;
        let control = self
            .broker
            .queue(
                &self.options.control_queue(),
                self.options.stream_queue_options(),
            )
            .await?;
        let ask = crate::protocol::Control::Census {
            census: census.to_owned(),
            until_ms: now_ms().saturating_add(u64::try_from(wait.as_millis()).unwrap_or(u64::MAX)),
        };
        control
            .publish(
                Bytes::from(serde_json::to_vec(&ask).expect("control messages serialize")),
                None,
            )
            .await?;
        // Answers sent just before the deadline still arrive.
        let deadline = tokio::time::Instant::now() + wait + CENSUS_GRACE;
        let mut seen = BTreeMap::new();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                break;
            }
            let got = answers
                .fetch("fleet", "fleet", 256, left.min(Duration::from_millis(200)))
                .await?;
            for d in &got {
                match serde_json::from_slice::<WorkerBeat>(&d.payload) {
                    Ok(beat) => {
                        seen.insert(beat.worker.clone(), beat);
                    }
                    Err(error) => tracing::debug!(%error, "dropping a malformed census answer"),
                }
                answers.ack(d).await?;
            }
        }
        Ok(seen.into_values().collect())
    }
}

/// How long after its deadline a census still reads answers.
const CENSUS_GRACE: Duration = Duration::from_millis(500);

/// The queue a census's answers go to.
pub(crate) fn census_queue_name(namespace: &str, census: &str) -> String {
    format!("{namespace}-{census}")
}

/// A census queue's settings: read once, by one reader.
pub(crate) fn census_options() -> QueueOptions {
    QueueOptions::default()
        .lease(Duration::from_secs(30))
        .max_in_flight(1 << 16)
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A census name as the asker made it: `census-` and 32 hex digits (so a
/// worker never answers on a queue of another kind).
pub(crate) fn census_name_ok(census: &str) -> bool {
    census
        .strip_prefix("census-")
        .is_some_and(|id| id.len() == 32 && id.chars().all(|c| c.is_ascii_hexdigit()))
}

fn read_task(payload: &[u8]) -> Result<TaskMessage, String> {
    let message: TaskMessage =
        serde_json::from_slice(payload).map_err(|e| format!("not a task message: {e}"))?;
    if message.version != PROTOCOL_VERSION {
        return Err(format!(
            "a task message of protocol version {} (this version speaks {PROTOCOL_VERSION})",
            message.version
        ));
    }
    Ok(message)
}

fn identity(m: &TaskMessage) -> TaskIdentity {
    TaskIdentity {
        run: m.run.clone(),
        index: m.index,
        key: m.key.clone(),
        app_id: m.app_id.clone(),
        graph: m.graph.clone(),
    }
}

fn dead_task(letter: &DeadLetter) -> DeadTask {
    let (task, unreadable, earlier_claims) = match read_task(&letter.payload) {
        Ok(m) => (Some(identity(&m)), None, m.earlier_claims),
        Err(reason) => (None, Some(reason), 0),
    };
    DeadTask {
        id: letter.id.clone(),
        attempts: letter.attempts,
        earlier_claims,
        error: letter.last_error.clone(),
        task,
        unreadable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemoryBroker;

    #[test]
    fn census_names_are_checked() {
        let name = format!("census-{}", uuid::Uuid::new_v4().simple());
        assert!(census_name_ok(&name));
        assert!(!census_name_ok("census-../../x"));
        assert!(!census_name_ok("tasks"));
    }

    #[tokio::test]
    async fn an_unreadable_dead_letter_says_why_and_is_not_retried() {
        let broker = MemoryBroker::new();
        let options = ClusterOptions::new();
        let fleet = Fleet::connect(broker.clone(), options.clone())
            .await
            .unwrap();
        let tasks = broker
            .queue(&options.tasks_queue(), options.task_queue_options())
            .await
            .unwrap();
        assert!(
            fleet.status(Duration::ZERO).await.unwrap().dead.is_empty(),
            "no group yet"
        );
        tasks
            .create_group(WORKERS_GROUP, Start::First)
            .await
            .unwrap();
        tasks
            .publish(Bytes::from_static(b"{not json"), None)
            .await
            .unwrap();
        let d = tasks
            .fetch(WORKERS_GROUP, "w", 1, Duration::ZERO)
            .await
            .unwrap();
        tasks.terminate(&d[0], "malformed").await.unwrap();
        let status = fleet.status(Duration::ZERO).await.unwrap();
        assert_eq!(status.dead.len(), 1);
        let dead = &status.dead[0];
        assert!(dead.task.is_none());
        assert_eq!(dead.error.as_deref(), Some("malformed"));
        assert!(
            dead.unreadable
                .as_deref()
                .is_some_and(|r| r.starts_with("not a task message")),
            "{dead:?}"
        );
        let err = fleet.retry_dead(&dead.id).await.unwrap_err();
        assert!(matches!(err, OpsError::NotRetriable { .. }), "{err}");
        let err = fleet.retry_dead("no-such-id").await.unwrap_err();
        assert!(matches!(err, OpsError::NoSuchDeadTask { .. }), "{err}");
        assert_eq!(fleet.dead().await.unwrap().len(), 1, "still there");
    }

    #[tokio::test]
    async fn every_worker_answers_a_census() {
        let broker = MemoryBroker::new();
        let options = ClusterOptions::new().heartbeat(Duration::from_millis(50));
        let stop = tokio_util::sync::CancellationToken::new();
        let mut running = Vec::new();
        for name in ["a", "b"] {
            let worker = crate::Worker::builder(broker.clone(), crate::Graphs::new())
                .name(name)
                .concurrency(3)
                .options(options.clone())
                .build()
                .unwrap();
            running.push(tokio::spawn(worker.run(stop.clone().cancelled_owned())));
        }
        let fleet = Fleet::connect(broker.clone(), options.clone())
            .await
            .unwrap();
        // The workers' control groups exist once they started reading.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let workers = fleet.census(Duration::from_millis(500)).await.unwrap();
        let seen: Vec<(&str, usize, usize)> = workers
            .iter()
            .map(|w| (w.worker.as_str(), w.held.len(), w.concurrency))
            .collect();
        assert_eq!(seen, [("a", 0, 3), ("b", 0, 3)]);
        assert!(workers.iter().all(|w| w.beat_age_ms < 1_000), "{workers:?}");
        stop.cancel();
        for r in running {
            r.await.unwrap().unwrap();
        }
    }

    #[tokio::test]
    async fn a_retried_task_continues_its_claims_and_leaves_the_dead_letters() {
        let broker = MemoryBroker::new();
        let options = ClusterOptions::new().max_deliveries(2);
        let fleet = Fleet::connect(broker.clone(), options.clone())
            .await
            .unwrap();
        let tasks = broker
            .queue(&options.tasks_queue(), options.task_queue_options())
            .await
            .unwrap();
        tasks
            .create_group(WORKERS_GROUP, Start::First)
            .await
            .unwrap();
        let message = TaskMessage {
            version: PROTOCOL_VERSION,
            run: "run-1".into(),
            index: 4,
            key: "k".into(),
            app_id: "run-1/k".into(),
            graph: "g".into(),
            state: tributary_core::State::new(),
            entrypoint: None,
            halt_after: Vec::new(),
            halt_before: Vec::new(),
            inputs: tributary_core::Inputs::default(),
            tokens: false,
            nodes: false,
            earlier_claims: 0,
            channel: None,
            fence_base: 0,
        };
        tasks
            .publish(Bytes::from(serde_json::to_vec(&message).unwrap()), None)
            .await
            .unwrap();
        for _ in 0..2 {
            let d = tasks
                .fetch(WORKERS_GROUP, "w", 1, Duration::ZERO)
                .await
                .unwrap();
            tasks.nak(&d[0], Duration::ZERO, "refused").await.unwrap();
        }
        let dead = fleet.dead().await.unwrap();
        assert_eq!(dead.len(), 1);
        let task = dead[0].task.clone().unwrap();
        assert_eq!(
            (
                task.run.as_str(),
                task.index,
                task.key.as_str(),
                task.graph.as_str()
            ),
            ("run-1", 4, "k", "g")
        );
        assert_eq!(
            (dead[0].attempts, dead[0].error.as_deref()),
            (2, Some("refused"))
        );

        let retried = fleet.retry_dead(&dead[0].id).await.unwrap();
        assert_eq!((retried.task, retried.earlier_claims), (task, 2));
        assert!(fleet.dead().await.unwrap().is_empty());
        let d = tasks
            .fetch(WORKERS_GROUP, "w", 10, Duration::ZERO)
            .await
            .unwrap();
        assert_eq!(d.len(), 1, "published once");
        let again: TaskMessage = serde_json::from_slice(&d[0].payload).unwrap();
        assert_eq!((again.index, again.earlier_claims), (4, 2));
        // Dead-lettered again, it lists the claims of both publications.
        tasks.terminate(&d[0], "still refused").await.unwrap();
        let dead = fleet.dead().await.unwrap();
        assert_eq!((dead[0].attempts, dead[0].earlier_claims), (1, 2));
    }
}
