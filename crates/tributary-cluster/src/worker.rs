//! The worker's side: claim tasks, run them on a local runtime, report.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tributary_core::{PersistError, Persister};
use tributary_queue::{Delivery, QueueError, Start, WorkQueue};
use tributary_runtime::{ItemKind, RunConfig, RunHandle, Runtime, StreamItem, TaskPath, TaskSpec};

use crate::broker::{Broker, FleetQueues};
use crate::caller::{Nesting, WORKERS_GROUP};
use crate::error::ClusterError;
use crate::fence::FencedPersister;
use crate::options::{ClusterOptions, Orphans};
use crate::protocol::{
    BelowOp, Control, Event, PROTOCOL_VERSION, TaskMessage, WireEnd, encode, items_queue_name,
};
use crate::registry::Graphs;

/// How many runs' control states and item queues a worker remembers.
const REMEMBERED_RUNS: usize = 1024;
/// How many control messages for tasks it does not hold a worker keeps.
const REMEMBERED_CONTROLS: usize = 65_536;

/// Builds a [`Worker`].
#[derive(Debug)]
#[must_use]
pub struct WorkerBuilder {
    broker: Arc<dyn Broker>,
    graphs: Graphs,
    persister: Option<Arc<dyn Persister>>,
    name: Option<String>,
    concurrency: usize,
    options: ClusterOptions,
    drain: Duration,
}

impl WorkerBuilder {
    /// The shared persister the worker checkpoints every step to, fenced
    /// with its claim's epoch (it must [support
    /// fencing](Persister::supports_fencing)). Without one, a task taken
    /// over from a crashed worker starts again from its first step.
    pub fn persister(mut self, persister: Arc<dyn Persister>) -> Self {
        self.persister = Some(persister);
        self
    }

    /// The worker's name (unique in the fleet; default: `worker-<pid>-<random>`).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Tasks the worker runs at once (default 64).
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n;
        self
    }

    /// The cluster's shared settings.
    pub fn options(mut self, options: ClusterOptions) -> Self {
        self.options = options;
        self
    }

    /// On shutdown, how long to let running tasks finish before handing
    /// the rest back to the fleet (default 10 s).
    pub fn drain(mut self, wait: Duration) -> Self {
        self.drain = wait;
        self
    }

    /// Build the worker.
    ///
    /// # Errors
    ///
    /// [`ClusterError::PersisterNotFenced`] for a persister without fenced
    /// writes, [`ClusterError::Invalid`] for a setting out of range.
    pub fn build(self) -> Result<Worker, ClusterError> {
        self.options.check()?;
        if self.concurrency == 0 {
            return Err(ClusterError::Invalid {
                name: "concurrency",
                reason: "must be at least 1".to_owned(),
            });
        }
        if let Some(p) = &self.persister {
            if !p.supports_fencing() {
                return Err(ClusterError::PersisterNotFenced);
            }
        }
        let name = self.name.unwrap_or_else(|| {
            format!(
                "worker-{}-{}",
                std::process::id(),
                &uuid::Uuid::new_v4().simple().to_string()[..8]
            )
        });
        Ok(Worker {
            broker: self.broker,
            graphs: self.graphs,
            persister: self.persister,
            name,
            concurrency: self.concurrency,
            options: self.options,
            drain: self.drain,
            stats: Arc::default(),
        })
    }
}

/// What a worker did, counted since it started.
#[derive(Debug, Default)]
pub struct WorkerStats {
    claimed: AtomicU64,
    completed: AtomicU64,
    refused: AtomicU64,
    lost: AtomicU64,
    handed_back: AtomicU64,
}

impl WorkerStats {
    /// Tasks claimed.
    pub fn claimed(&self) -> u64 {
        self.claimed.load(Ordering::Relaxed)
    }
    /// Tasks whose end the worker reported.
    pub fn completed(&self) -> u64 {
        self.completed.load(Ordering::Relaxed)
    }
    /// Tasks handed back because their graph is unknown here.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
    /// Claims lost to another worker (lease expired, or fenced).
    pub fn lost(&self) -> u64 {
        self.lost.load(Ordering::Relaxed)
    }
    /// Tasks handed back at shutdown.
    pub fn handed_back(&self) -> u64 {
        self.handed_back.load(Ordering::Relaxed)
    }
}

/// A worker process's engine: claims tasks of the fleet's queue (up to its
/// concurrency), runs each on a local runtime, checkpoints every step to
/// the shared persister under its claim's epoch, streams the task's items
/// back to the run's caller, renews its claim twice per heartbeat while the
/// task runs, and acknowledges the task after reporting its end.
///
/// The graphs are the user's: a worker binary registers the graphs it can
/// run ([`Graphs`]) and runs [`Worker::run`] until its shutdown signal.
#[derive(Debug)]
pub struct Worker {
    broker: Arc<dyn Broker>,
    graphs: Graphs,
    persister: Option<Arc<dyn Persister>>,
    name: String,
    concurrency: usize,
    options: ClusterOptions,
    drain: Duration,
    stats: Arc<WorkerStats>,
}

/// A task this worker holds.
struct Held {
    handle: RunHandle,
    key: String,
}

/// What the worker knows of a run from its caller's control messages.
struct RunSeen {
    last_alive: Instant,
    ttl: Duration,
    ended: bool,
}

/// A run's items queue and when it was last used.
type ItemsQueue = (Arc<dyn WorkQueue>, Instant);

/// What a worker's claims share.
struct Shared {
    name: String,
    broker: Arc<dyn Broker>,
    graphs: Graphs,
    persister: Option<Arc<dyn Persister>>,
    options: ClusterOptions,
    tasks: Arc<dyn WorkQueue>,
    /// The task and control queues, for the nested runs of its claims.
    fleet: Arc<tokio::sync::OnceCell<FleetQueues>>,
    local: Runtime,
    held: Mutex<HashMap<(String, u64), Held>>,
    pending: Mutex<HashMap<(String, u64), Control>>,
    runs: Mutex<HashMap<String, RunSeen>>,
    /// Since when the control queue has been read without a failure: a
    /// caller's silence counts only from then (a broker outage silences
    /// every caller, and is no sign that one went away).
    hearing_since: Mutex<Instant>,
    /// The last call to the broker failed.
    deaf: AtomicBool,
    items: tokio::sync::Mutex<HashMap<String, ItemsQueue>>,
    handing_back: CancellationToken,
    stats: Arc<WorkerStats>,
    concurrency: usize,
    /// When it last reached the task queue (a fetch or a renewal), in
    /// milliseconds since the Unix epoch: its census answers say.
    beat_ms: AtomicU64,
}

impl Worker {
    /// A worker on `broker` that runs `graphs`.
    pub fn builder(broker: impl Broker, graphs: Graphs) -> WorkerBuilder {
        WorkerBuilder {
            broker: Arc::new(broker),
            graphs,
            persister: None,
            name: None,
            concurrency: 64,
            options: ClusterOptions::default(),
            drain: Duration::from_secs(10),
        }
    }

    /// The worker's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its counters (shared: read them while it runs).
    pub fn stats(&self) -> Arc<WorkerStats> {
        Arc::clone(&self.stats)
    }

    /// Run until `shutdown` resolves; then stop claiming, let the running
    /// tasks finish for the drain time, and hand the rest back to the fleet
    /// (another worker resumes them from their checkpoints).
    ///
    /// # Errors
    ///
    /// [`ClusterError::Queue`] when the broker cannot be reached at start.
    /// Later broker failures are logged and retried.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future stops claiming at once without draining: the
    /// tasks it held are not acknowledged and go to other workers after
    /// their lease (as after a crash). Resolve `shutdown` instead for a
    /// graceful stop.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<Arc<WorkerStats>, ClusterError> {
        let fleet = FleetQueues::open(&*self.broker, &self.options).await?;
        let (tasks, control) = (Arc::clone(&fleet.tasks), Arc::clone(&fleet.control));
        let control_group = format!("worker-{}", self.name);
        control.create_group(&control_group, Start::New).await?;
        let shared = Arc::new(Shared {
            name: self.name.clone(),
            broker: Arc::clone(&self.broker),
            graphs: self.graphs.clone(),
            persister: self.persister.clone(),
            options: self.options.clone(),
            tasks: Arc::clone(&tasks),
            fleet: Arc::new(tokio::sync::OnceCell::new_with(Some(fleet))),
            local: Runtime::new(),
            held: Mutex::default(),
            pending: Mutex::default(),
            runs: Mutex::default(),
            hearing_since: Mutex::new(Instant::now()),
            deaf: AtomicBool::new(false),
            items: tokio::sync::Mutex::default(),
            handing_back: CancellationToken::new(),
            stats: Arc::clone(&self.stats),
            concurrency: self.concurrency,
            beat_ms: AtomicU64::new(crate::ops::now_ms()),
        });
        let stop = CancellationToken::new();
        let listener = tokio::spawn(listen(
            Arc::clone(&shared),
            Arc::clone(&control),
            control_group.clone(),
            stop.clone(),
        ));
        let trimmer = tokio::spawn(trim(
            [Arc::clone(&tasks), Arc::clone(&control)],
            self.options.heartbeat * TRIM_EVERY_HEARTBEATS,
            stop.clone(),
        ));
        let claims = TaskTracker::new();
        // A fetch waiting for new tasks does not see leases expire: wait at
        // most a quarter of a heartbeat, so an abandoned claim is taken over
        // within its lease and a quarter of a heartbeat.
        let poll = (self.options.heartbeat / 4).min(Duration::from_millis(500));
        let slots = Arc::new(Semaphore::new(self.concurrency));
        tokio::pin!(shutdown);
        tracing::info!(worker = %self.name, concurrency = self.concurrency, "worker started");
        loop {
            let first = tokio::select! {
                biased;
                () = &mut shutdown => break,
                p = Arc::clone(&slots).acquire_owned() => p.expect("never closed"),
            };
            let mut permits = vec![first];
            while let Ok(p) = Arc::clone(&slots).try_acquire_owned() {
                permits.push(p);
            }
            let fetched = tokio::select! {
                biased;
                () = &mut shutdown => break,
                f = tasks.fetch(WORKERS_GROUP, &self.name, permits.len(), poll) => f,
            };
            let deliveries = match fetched {
                Ok(d) => {
                    shared
                        .beat_ms
                        .store(crate::ops::now_ms(), Ordering::Relaxed);
                    d
                }
                Err(error) => {
                    tracing::warn!(%error, "claiming tasks failed; retrying");
                    if matches!(error, QueueError::UnknownGroup { .. }) {
                        // The broker lost the group (a restart before it was
                        // stored): make it again.
                        let _ = tasks.create_group(WORKERS_GROUP, Start::First).await;
                    }
                    drop(permits);
                    tokio::select! {
                        biased;
                        () = &mut shutdown => break,
                        () = tokio::time::sleep(Duration::from_millis(200)) => continue,
                    }
                }
            };
            for delivery in deliveries {
                let permit = permits.pop().expect("fetched no more than the free slots");
                let shared = Arc::clone(&shared);
                let slot = Arc::new(ClaimSlot::new(Arc::clone(&slots), permit));
                claims.spawn(async move {
                    claim(&shared, delivery, &slot).await;
                    slot.finish();
                });
            }
        }
        // Shutdown: no more claims; let the running ones finish, then hand
        // back what is left.
        claims.close();
        tracing::info!(worker = %self.name, running = claims.len(), "worker draining");
        if tokio::time::timeout(self.drain, claims.wait())
            .await
            .is_err()
        {
            shared.handing_back.cancel();
            let held: Vec<RunHandle> = shared
                .held
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .values()
                .map(|h| h.handle.clone())
                .collect();
            for handle in held {
                handle.cancel().await;
            }
            claims.wait().await;
        }
        stop.cancel();
        let _ = listener.await;
        let _ = trimmer.await;
        // The worker's control group would hold back the control queue's
        // retention forever.
        if let Err(error) = control.delete_group(&control_group).await {
            tracing::warn!(%error, "could not remove the worker's control group");
        }
        tracing::info!(worker = %self.name, "worker stopped");
        Ok(self.stats)
    }
}

/// The worker slot one claim holds. A parent task waiting for children
/// distributed on the fleet gives it back (so the worker can claim other
/// tasks, its children among them) and takes one again before it goes on.
pub(crate) struct ClaimSlot {
    slots: Arc<Semaphore>,
    held: Mutex<Option<OwnedSemaphorePermit>>,
    /// Nested runs of the claim's task waiting at once (a local child's
    /// parallel action may wait inside the task's own).
    waiting: AtomicUsize,
}

impl ClaimSlot {
    fn new(slots: Arc<Semaphore>, permit: OwnedSemaphorePermit) -> Self {
        ClaimSlot {
            slots,
            held: Mutex::new(Some(permit)),
            waiting: AtomicUsize::new(0),
        }
    }

    /// The task starts waiting for distributed children.
    pub(crate) fn release(&self) {
        if self.waiting.fetch_add(1, Ordering::SeqCst) == 0 {
            drop(self.held.lock().unwrap_or_else(|e| e.into_inner()).take());
        }
    }

    /// The task's children are done: hold a slot again before it goes on.
    pub(crate) async fn reacquire(self: Arc<Self>) {
        if self.waiting.fetch_sub(1, Ordering::SeqCst) != 1 {
            return;
        }
        let permit = Arc::clone(&self.slots)
            .acquire_owned()
            .await
            .expect("never closed");
        // Another wait may have begun meanwhile: then the slot stays free.
        if self.waiting.load(Ordering::SeqCst) == 0 {
            *self.held.lock().unwrap_or_else(|e| e.into_inner()) = Some(permit);
        }
    }

    /// The claim is over.
    fn finish(&self) {
        drop(self.held.lock().unwrap_or_else(|e| e.into_inner()).take());
    }
}

/// Every how many heartbeats a worker trims the settled messages of the
/// task and control queues.
const TRIM_EVERY_HEARTBEATS: u32 = 50;

/// Remove what every group has settled, now and then (every worker does;
/// trimming is idempotent).
async fn trim(queues: [Arc<dyn WorkQueue>; 2], every: Duration, stop: CancellationToken) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
        for queue in &queues {
            if let Err(error) = queue.trim().await {
                tracing::debug!(%error, queue = queue.name(), "trimming failed");
            }
        }
    }
}

/// Apply the fleet's control messages to the tasks this worker holds, and
/// keep the rest for tasks it may claim later.
async fn listen(
    shared: Arc<Shared>,
    control: Arc<dyn WorkQueue>,
    group: String,
    stop: CancellationToken,
) {
    loop {
        let fetched = tokio::select! {
            biased;
            () = stop.cancelled() => return,
            f = control.fetch(&group, &shared.name, 256, Duration::from_millis(250)) => f,
        };
        let deliveries = match fetched {
            Ok(d) => {
                shared.heard();
                d
            }
            Err(error) => {
                shared.deaf.store(true, Ordering::SeqCst);
                tracing::warn!(%error, "reading control messages failed; retrying");
                if matches!(error, QueueError::UnknownGroup { .. }) {
                    let _ = control.create_group(&group, Start::New).await;
                }
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_millis(200)) => continue,
                }
            }
        };
        for delivery in &deliveries {
            match serde_json::from_slice::<Control>(&delivery.payload) {
                Ok(c) => apply(&shared, c).await,
                Err(error) => tracing::warn!(%error, "dropping a malformed control message"),
            }
        }
        if let Err(error) = control.ack_all(&deliveries).await {
            tracing::debug!(%error, "acknowledging control messages failed");
        }
    }
}

async fn apply(shared: &Shared, control: Control) {
    match &control {
        Control::Census { census, until_ms } => {
            let held = shared
                .held
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .keys()
                .cloned()
                .collect();
            let beat = crate::ops::WorkerBeat::new(
                shared.name.clone(),
                held,
                shared.concurrency,
                shared.beat_ms.load(Ordering::Relaxed),
            );
            tokio::spawn(crate::ops::answer_census(
                Arc::clone(&shared.broker),
                shared.options.namespace.clone(),
                census.clone(),
                *until_ms,
                beat,
            ));
        }
        Control::Alive { run, ttl_ms } => {
            let mut runs = shared.runs.lock().unwrap_or_else(|e| e.into_inner());
            forget_oldest(&mut runs);
            let seen = runs.entry(run.clone()).or_insert(RunSeen {
                last_alive: Instant::now(),
                ttl: Duration::ZERO,
                ended: false,
            });
            seen.last_alive = Instant::now();
            seen.ttl = Duration::from_millis(*ttl_ms);
        }
        Control::Ended { run } => {
            {
                let mut runs = shared.runs.lock().unwrap_or_else(|e| e.into_inner());
                forget_oldest(&mut runs);
                runs.entry(run.clone())
                    .or_insert(RunSeen {
                        last_alive: Instant::now(),
                        ttl: Duration::ZERO,
                        ended: true,
                    })
                    .ended = true;
            }
            let handles: Vec<RunHandle> = shared
                .held
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .filter(|((r, _), _)| r == run)
                .map(|(_, h)| h.handle.clone())
                .collect();
            for handle in handles {
                // Not awaited: the claim reports the end.
                drop(handle.cancel());
            }
            shared.items.lock().await.remove(run);
        }
        Control::Below {
            run,
            task,
            path,
            what,
        } => {
            // Only a task held here has children to pass it on to.
            let held = shared
                .held
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&(run.clone(), *task))
                .map(|h| (h.handle.clone(), h.key.clone()));
            if let Some((handle, key)) = held {
                let path: TaskPath = std::iter::once(key).chain(path.iter().cloned()).collect();
                let done = match what {
                    BelowOp::Pause => handle.pause_task(path),
                    BelowOp::Resume => handle.resume_task(path),
                    _ => handle.cancel_task(path),
                };
                if let Err(error) = done {
                    tracing::debug!(%error, "control of a task below one held here");
                }
            }
        }
        Control::Pause { run, task }
        | Control::Resume { run, task }
        | Control::Cancel { run, task } => {
            let key = (run.clone(), *task);
            let handle = shared
                .held
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&key)
                .map(|h| h.handle.clone());
            match handle {
                Some(handle) => match control {
                    Control::Pause { .. } => handle.pause(),
                    Control::Resume { .. } => handle.resume(),
                    _ => drop(handle.cancel()),
                },
                None => {
                    let mut pending = shared.pending.lock().unwrap_or_else(|e| e.into_inner());
                    if pending.len() >= REMEMBERED_CONTROLS {
                        pending.clear();
                    }
                    if matches!(control, Control::Resume { .. }) {
                        pending.remove(&key);
                    } else {
                        pending.insert(key, control);
                    }
                }
            }
        }
    }
}

fn forget_oldest(runs: &mut HashMap<String, RunSeen>) {
    if runs.len() < REMEMBERED_RUNS {
        return;
    }
    if let Some(oldest) = runs
        .iter()
        .min_by_key(|(_, s)| s.last_alive)
        .map(|(r, _)| r.clone())
    {
        runs.remove(&oldest);
    }
}

impl Shared {
    async fn items(&self, run: &str) -> Result<Arc<dyn WorkQueue>, QueueError> {
        let mut items = self.items.lock().await;
        if let Some((queue, used)) = items.get_mut(run) {
            *used = Instant::now();
            return Ok(Arc::clone(queue));
        }
        if items.len() >= REMEMBERED_RUNS {
            if let Some(oldest) = items
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(r, _)| r.clone())
            {
                items.remove(&oldest);
            }
        }
        let queue = self
            .broker
            .queue(
                &items_queue_name(&self.options.namespace, run),
                self.options.stream_queue_options(),
            )
            .await?;
        items.insert(run.to_owned(), (Arc::clone(&queue), Instant::now()));
        Ok(queue)
    }

    fn run_ended(&self, run: &str) -> bool {
        self.runs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(run)
            .is_some_and(|s| s.ended)
    }

    /// Whether the run's caller has been silent past its promise.
    fn caller_gone(&self, run: &str, since: Instant) -> bool {
        if self.deaf.load(Ordering::SeqCst) {
            // The broker is unreachable: every caller is silent.
            return false;
        }
        let hearing = *self.hearing_since.lock().unwrap_or_else(|e| e.into_inner());
        let runs = self.runs.lock().unwrap_or_else(|e| e.into_inner());
        let (last, ttl) = match runs.get(run) {
            Some(seen) if !seen.ttl.is_zero() => (seen.last_alive, seen.ttl),
            // Never heard from it: count from the claim.
            _ => (since, self.options.alive_interval * 3),
        };
        // Silence counts only while the broker was reachable.
        last.max(hearing) + ttl.max(self.options.orphan_after) < Instant::now()
    }

    /// A call to the broker succeeded: after an outage, callers' silence
    /// counts again from now.
    fn heard(&self) {
        if self.deaf.swap(false, Ordering::SeqCst) {
            *self.hearing_since.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
        }
    }

    fn take_pending(&self, key: &(String, u64)) -> Option<Control> {
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key)
    }
}

/// Publish with a few retries: an event lost here would leave the caller
/// waiting for the next claim.
async fn publish_event(queue: &dyn WorkQueue, event: &Event) -> Result<(), QueueError> {
    let payload = encode(event);
    let mut wait = Duration::from_millis(20);
    let mut tries = 0;
    loop {
        match queue.publish(payload.clone(), None).await {
            Ok(()) => return Ok(()),
            Err(error) if tries < 5 => {
                tracing::debug!(%error, "publishing an event failed; retrying");
                tries += 1;
                tokio::time::sleep(wait).await;
                wait *= 2;
            }
            Err(error) => return Err(error),
        }
    }
}

/// One claimed task, from its delivery to its acknowledgement.
async fn claim(shared: &Arc<Shared>, delivery: Delivery, slot: &Arc<ClaimSlot>) {
    let tasks = &*shared.tasks;
    let message: TaskMessage = match serde_json::from_slice(&delivery.payload) {
        Ok(m) => m,
        Err(error) => {
            let why = format!("malformed task message: {error}");
            tracing::warn!(%why, "dead-lettering a task");
            let _ = tasks.terminate(&delivery, &why).await;
            return;
        }
    };
    if message.version != PROTOCOL_VERSION {
        let why = format!(
            "task message of protocol version {} (this worker speaks {PROTOCOL_VERSION})",
            message.version
        );
        let _ = tasks.terminate(&delivery, &why).await;
        return;
    }
    // A child of a parallel action speaks on its nested run's channel.
    let channel = message.channel().to_owned();
    let key = (channel.clone(), message.index);
    let pending = shared.take_pending(&key);
    if shared.run_ended(&channel) || matches!(pending, Some(Control::Cancel { .. })) {
        // Its run is over, or it was cancelled before anyone claimed it.
        let _ = tasks.ack(&delivery).await;
        return;
    }
    let items = match shared.items(&channel).await {
        Ok(q) => q,
        Err(error) => {
            hand_back(
                tasks,
                &delivery,
                500,
                "cannot reach the run's items queue",
                &error,
            )
            .await;
            return;
        }
    };
    let Some(graph) = shared.graphs.get(&message.graph).cloned() else {
        shared.stats.refused.fetch_add(1, Ordering::Relaxed);
        let refused = Event::Refused {
            task: message.index,
            worker: shared.name.clone(),
            graph: message.graph.clone(),
        };
        let _ = publish_event(&*items, &refused).await;
        let why = format!(
            "graph `{}` is not registered on {}",
            message.graph, shared.name
        );
        let _ = tasks.nak(&delivery, Duration::from_millis(100), &why).await;
        return;
    };
    shared.stats.claimed.fetch_add(1, Ordering::Relaxed);
    let epoch = delivery.attempt.saturating_add(message.earlier_claims);
    let fence = message.fence_base.saturating_add(u64::from(epoch));
    // The first step this claim runs: after the last checkpoint.
    let mut step = 0;
    // The node item of the last checkpointed step: an earlier owner may
    // have saved the step and stopped before reporting it. Sent before this
    // claim's first item (the caller drops it if it had it), unless the task
    // ends at that very step.
    let mut owed = None;
    if let Some(p) = &shared.persister {
        // Fence the earlier owners out before reading where the task is:
        // an earlier owner still stepping (its lease ran out while the
        // broker was away, say) can no longer save a step this claim does
        // not see and then go on to the next, which this claim would run
        // again. A persister that cannot raise its fence without a write
        // fences them out at this claim's first save, as before.
        match p.raise_fence(&message.app_id, fence).await {
            Ok(stored) if stored > fence => {
                // A newer claim fenced this one out before it began.
                let why = format!("the task's fence {stored} is ahead of this claim's {fence}");
                hand_back(
                    tasks,
                    &delivery,
                    100,
                    "claim fenced out before it began",
                    &why,
                )
                .await;
                return;
            }
            Ok(_) | Err(PersistError::FencingUnsupported { .. }) => {}
            Err(error) => {
                hand_back(
                    tasks,
                    &delivery,
                    500,
                    "cannot raise the task's fence",
                    &error,
                )
                .await;
                return;
            }
        }
        match p.load(&message.app_id, None).await {
            Ok(Some(checkpoint)) => {
                step = checkpoint.sequence_id + 1;
                if checkpoint.status == tributary_core::StepStatus::Completed && message.nodes {
                    owed = Some(Event::Node {
                        task: message.index,
                        epoch,
                        step: checkpoint.sequence_id,
                        action: checkpoint.action,
                        result: checkpoint.result.unwrap_or_default(),
                        state: checkpoint.state,
                    });
                }
            }
            Ok(None) => {}
            Err(error) => {
                hand_back(
                    tasks,
                    &delivery,
                    500,
                    "cannot read the task's checkpoint",
                    &error,
                )
                .await;
                return;
            }
        }
    }
    let claimed = Event::Claimed {
        task: message.index,
        epoch,
        worker: shared.name.clone(),
        step,
    };
    if let Err(error) = publish_event(&*items, &claimed).await {
        hand_back(tasks, &delivery, 500, "cannot report the claim", &error).await;
        return;
    }
    let mut spec = TaskSpec::new(message.key.clone(), graph)
        .state(message.state.clone())
        .app_id(message.app_id.clone())
        .inputs(message.inputs.clone());
    if let Some(entry) = &message.entrypoint {
        spec = spec.entrypoint(entry.clone());
    }
    if !message.halt_after.is_empty() {
        spec = spec.halt_after(message.halt_after.iter().cloned());
    }
    if !message.halt_before.is_empty() {
        spec = spec.halt_before(message.halt_before.iter().cloned());
    }
    // Children of its parallel actions go to the fleet too, on channels of
    // this claim's.
    let nesting = Nesting {
        broker: Arc::clone(&shared.broker),
        options: shared.options.clone(),
        fleet: Arc::clone(&shared.fleet),
        fence,
        slot: Some(Arc::clone(slot)),
    };
    let mut config = RunConfig::new()
        .run_id(message.run.clone())
        .nested_executors(Arc::new(nesting));
    let mut seen = None;
    if let Some(p) = &shared.persister {
        let (persister, writes) = FencedPersister::new(Arc::clone(p), fence);
        config = config.persister(Arc::new(persister));
        seen = Some(writes);
    }
    let (handle, mut stream) = shared.local.run(vec![spec], config);
    if matches!(pending, Some(Control::Pause { .. })) {
        handle.pause();
    }
    shared
        .held
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(
            key.clone(),
            Held {
                handle: handle.clone(),
                key: message.key.clone(),
            },
        );
    // Control that came while the claim was being set up (after the checks
    // above, before the task was held) found nothing to apply to: apply it
    // now. An ended channel matters most: its task's new self may be on
    // its way.
    match shared.take_pending(&key) {
        Some(Control::Cancel { .. }) => drop(handle.cancel()),
        Some(Control::Pause { .. }) => handle.pause(),
        _ => {}
    }
    if shared.run_ended(&channel) {
        drop(handle.cancel());
    }
    // Renew the claim while the task runs; give it up when it moved on, or
    // when the caller went away.
    let lost = Arc::new(AtomicBool::new(false));
    let orphaned = Arc::new(AtomicBool::new(false));
    let beat = CancellationToken::new();
    let heartbeat = tokio::spawn(renew(
        Arc::clone(shared),
        delivery.clone(),
        handle.clone(),
        channel.clone(),
        Arc::clone(&lost),
        Arc::clone(&orphaned),
        beat.clone(),
    ));
    let gone = |lost: &AtomicBool| {
        lost.load(Ordering::SeqCst)
            || seen
                .as_ref()
                .is_some_and(|s| s.fenced.load(Ordering::SeqCst))
    };
    let stepped = || {
        seen.as_ref()
            .is_some_and(|s| s.saves.load(Ordering::SeqCst) > 0)
    };
    let mut end = None;
    while let Some(item) = stream.next().await {
        if gone(&lost) {
            continue;
        }
        let event = match to_event(&message, epoch, &mut step, item) {
            Relay::Send(event) => event,
            Relay::Skip => continue,
            Relay::End(wire) => {
                // A `Final` with no step run under this claim is the
                // checkpoint's own step: its end stands for its node item.
                if matches!(wire, WireEnd::Final { .. }) && !stepped() {
                    owed = None;
                }
                end = Some(wire);
                continue;
            }
        };
        if shared.run_ended(&channel) {
            continue;
        }
        for event in owed.take().into_iter().chain([event]) {
            if let Err(error) = publish_event(&*items, &event).await {
                tracing::warn!(%error, "an item of the task could not be reported");
            }
        }
    }
    beat.cancel();
    let _ = heartbeat.await;
    shared
        .held
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&key);
    if gone(&lost) {
        // Another worker owns the task now: say nothing, settle nothing.
        shared.stats.lost.fetch_add(1, Ordering::Relaxed);
        tracing::info!(task = %message.key, epoch, "claim lost to another worker");
        return;
    }
    if shared.handing_back.is_cancelled() {
        shared.stats.handed_back.fetch_add(1, Ordering::Relaxed);
        let _ = tasks
            .nak(&delivery, Duration::ZERO, "worker shut down; handed back")
            .await;
        return;
    }
    if orphaned.load(Ordering::SeqCst) || shared.run_ended(&channel) {
        let _ = tasks.ack(&delivery).await;
        return;
    }
    if let Some(owed) = owed.take() {
        if let Err(error) = publish_event(&*items, &owed).await {
            tracing::warn!(%error, "an item of the task could not be reported");
        }
    }
    let end = end.unwrap_or(WireEnd::Cancelled { action: None });
    let event = Event::End {
        task: message.index,
        epoch,
        end,
    };
    match publish_event(&*items, &event).await {
        Ok(()) => {
            shared.stats.completed.fetch_add(1, Ordering::Relaxed);
            if let Err(error) = tasks.ack(&delivery).await {
                tracing::warn!(%error, "acknowledging a finished task failed (it may run again, resuming from its checkpoint)");
            }
        }
        Err(error) => {
            hand_back(
                tasks,
                &delivery,
                200,
                "the task's end could not be reported",
                &error,
            )
            .await;
        }
    }
}

enum Relay {
    Send(Event),
    Skip,
    End(WireEnd),
}

fn to_event(message: &TaskMessage, epoch: u32, step: &mut u64, mut item: StreamItem) -> Relay {
    let task = message.index;
    if item.is_nested() {
        // A child's item (relayed from wherever the child runs): its path
        // below this task, which the caller puts under the task's own.
        let wanted = match item.kind {
            ItemKind::Token => message.tokens,
            _ => message.nodes,
        };
        if !wanted {
            return Relay::Skip;
        }
        item.path = item.path.keys()[1..].to_vec().into();
        return Relay::Send(Event::Nested {
            task,
            epoch,
            item: Box::new(item),
        });
    }
    let action = item.action.as_deref().map(str::to_owned);
    match item.kind {
        ItemKind::Token if message.tokens => Relay::Send(Event::Token {
            task,
            epoch,
            step: *step,
            action,
            value: item.result.unwrap_or_default(),
        }),
        ItemKind::NodeComplete => {
            let this = *step;
            *step += 1;
            if !message.nodes {
                return Relay::Skip;
            }
            Relay::Send(Event::Node {
                task,
                epoch,
                step: this,
                action: action.unwrap_or_default(),
                result: item.result.unwrap_or_default(),
                state: item.state_update.unwrap_or_default(),
            })
        }
        ItemKind::Final => Relay::End(WireEnd::Final {
            action,
            result: item.result,
            state: item.state_update.unwrap_or_default(),
        }),
        ItemKind::Failed => Relay::End(WireEnd::Failed {
            action,
            error: item.error.unwrap_or_else(|| {
                tributary_runtime::TaskError::new(
                    tributary_runtime::TaskErrorKind::ActionFailed,
                    "the task failed",
                    None,
                )
            }),
        }),
        ItemKind::Cancelled => Relay::End(WireEnd::Cancelled { action }),
        _ => Relay::Skip,
    }
}

/// A claim that cannot go on: say why, and hand its delivery back to be
/// delivered again after `after_ms` (a hand-back that fails is left to the
/// claim's lease).
async fn hand_back(
    tasks: &dyn WorkQueue,
    delivery: &Delivery,
    after_ms: u64,
    what: &str,
    error: &(dyn std::fmt::Display + Sync),
) {
    tracing::warn!(%error, "{what}; handing the task back");
    let _ = tasks
        .nak(
            delivery,
            Duration::from_millis(after_ms),
            &error.to_string(),
        )
        .await;
}

/// The claim's heartbeat.
async fn renew(
    shared: Arc<Shared>,
    delivery: Delivery,
    handle: RunHandle,
    run: String,
    lost: Arc<AtomicBool>,
    orphaned: Arc<AtomicBool>,
    stop: CancellationToken,
) {
    let since = Instant::now();
    let every = shared.options.renew_every();
    let lease = shared.options.lease();
    // When the claim was last renewed (or made): past the lease, another
    // worker may own the task.
    let mut renewed = since;
    loop {
        tokio::select! {
            biased;
            () = stop.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
        match shared.tasks.in_progress(&delivery).await {
            Ok(()) => {
                renewed = Instant::now();
                shared.heard();
                shared
                    .beat_ms
                    .store(crate::ops::now_ms(), Ordering::Relaxed);
            }
            Err(QueueError::NotHeld { .. }) => {
                lost.store(true, Ordering::SeqCst);
                drop(handle.cancel());
                return;
            }
            Err(error) => {
                shared.deaf.store(true, Ordering::SeqCst);
                if renewed.elapsed() >= lease {
                    // The lease ran out unrenewed (the broker is away):
                    // the task may already be another worker's, which
                    // resumes it from its last checkpoint. Stepping on
                    // would run its next steps twice, so give the claim
                    // up as if it had been taken (the task goes back to
                    // the queue with its lease expired, for whichever
                    // worker fetches next, this one included).
                    tracing::warn!(%error, "a claim's lease ran out unrenewed; giving it up");
                    lost.store(true, Ordering::SeqCst);
                    drop(handle.cancel());
                    return;
                }
                tracing::warn!(%error, "renewing a claim failed; retrying");
            }
        }
        if shared.options.orphans == Orphans::Cancel && shared.caller_gone(&run, since) {
            tracing::info!(%run, "the run's caller went away; cancelling its task");
            orphaned.store(true, Ordering::SeqCst);
            drop(handle.cancel());
            return;
        }
    }
}
