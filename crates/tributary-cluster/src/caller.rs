//! The caller's side: a run whose named tasks run on the fleet.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio::sync::{OnceCell, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tributary_queue::{Delivery, QueueError, Start, WorkQueue};
use tributary_runtime::{
    NestedExecutors, NestedRun, RemoteEnd, RemoteLane, RemoteTask, RunConfig, RunHandle, RunStream,
    Runtime, TaskError, TaskErrorKind, TaskExecutor, TaskOp, TaskPath, TaskSource,
};

use crate::broker::{Broker, FleetQueues};
use crate::error::ClusterError;
use crate::options::ClusterOptions;
use crate::protocol::{
    BelowOp, Control, Event, PROTOCOL_VERSION, TaskMessage, WireEnd, encode, items_queue_name,
};
use crate::worker::ClaimSlot;

/// The group a caller reads its run's events with.
const CALLER_GROUP: &str = "caller";
/// The group every worker claims tasks in.
pub(crate) const WORKERS_GROUP: &str = "workers";

/// Runs tasks on a fleet of [`Worker`](crate::Worker)s: the same
/// [`RunHandle`] and [`RunStream`] as the local [`Runtime`], with the
/// merger, the policies, pause, cancel, `add_task` and progress in the
/// caller's process, and the tasks' steps on the workers.
///
/// Tasks are [`TaskSpec::named`](tributary_runtime::TaskSpec::named): they
/// name a graph the workers registered and carry only data. A task that
/// carries its graph runs in the caller's process as usual.
///
/// The `window` (tasks in flight at once, 4096 by default) bounds what a
/// run puts on the broker: the task source is pulled lazily, a task is
/// published when it gets a slot, and a slow consumer slows the whole
/// fleet instead of growing the broker.
///
/// # Examples
///
/// ```
/// # #[tokio::main]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use serde_json::json;
/// use tributary_core::{action, Graph, State};
/// use tributary_cluster::{ClusterRuntime, Graphs, MemoryBroker, Worker};
/// use tributary_runtime::{ItemKind, RunConfig, TaskSpec};
///
/// let square = Graph::single(action("square").reads(["n"]).writes(["n"]).run(|s: State, _, _| async move {
///     let n: i64 = s.get_as("n")?;
///     Ok((json!({ "n": n * n }), s.set("n", n * n)))
/// }));
/// let broker = MemoryBroker::new();
/// let worker = Worker::builder(broker.clone(), Graphs::new().register("square", square)?).build()?;
/// let stop = tokio_util::sync::CancellationToken::new();
/// let fleet = tokio::spawn(worker.run(stop.clone().cancelled_owned()));
///
/// let tasks = (0..10).map(|i| TaskSpec::named(format!("t{i}"), "square").state(State::new().set("n", i)));
/// let (_handle, mut stream) = ClusterRuntime::new(broker).run(tasks.collect::<Vec<_>>(), RunConfig::new());
/// let mut sum = 0;
/// while let Some(item) = stream.next().await {
///     if item.kind == ItemKind::Final {
///         sum += item.result.unwrap()["n"].as_i64().unwrap();
///     }
/// }
/// assert_eq!(sum, 285);
/// stop.cancel();
/// fleet.await??;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct ClusterRuntime {
    broker: Arc<dyn Broker>,
    options: ClusterOptions,
    local: Runtime,
    /// The task and control queues, opened on the first run.
    fleet: Arc<OnceCell<FleetQueues>>,
}

impl ClusterRuntime {
    /// A caller on `broker` with the default [`ClusterOptions`] and a
    /// window of 4096 tasks in flight.
    pub fn new(broker: impl Broker) -> Self {
        ClusterRuntime {
            broker: Arc::new(broker),
            options: ClusterOptions::default(),
            local: Runtime::new(),
            fleet: Arc::default(),
        }
    }

    /// Use `options` (the workers must share the namespace and heartbeat).
    ///
    /// # Errors
    ///
    /// [`ClusterError::Invalid`] for a setting out of range.
    pub fn options(mut self, options: ClusterOptions) -> Result<Self, ClusterError> {
        options.check()?;
        self.options = options;
        // Queues named under the old namespace are not these.
        self.fleet = Arc::default();
        Ok(self)
    }

    /// At most `n` tasks in flight at once, across every run of this
    /// caller (the local runtime's budget; also bounds what sits in the
    /// broker).
    ///
    /// # Panics
    ///
    /// When `n` is 0.
    pub fn window(mut self, n: usize) -> Self {
        self.local = Runtime::builder().max_concurrency(n).build();
        self
    }

    /// Start a run of `tasks` on the fleet (see [`Runtime::run`]). Without a
    /// [`run_id`](RunConfig::run_id) the run gets a fresh one; give one to
    /// resume a run whose caller died (the workers' checkpoints carry on).
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub fn run(&self, tasks: impl Into<TaskSource>, config: RunConfig) -> (RunHandle, RunStream) {
        let run: Arc<str> = match config.get_run_id() {
            Some(id) => Arc::from(id),
            None => Arc::from(format!("run-{}", uuid::Uuid::new_v4().simple()).as_str()),
        };
        let inner = RunInner::new(
            Arc::clone(&run),
            Arc::clone(&run),
            Arc::clone(&self.broker),
            self.options.clone(),
            Arc::clone(&self.fleet),
        );
        let executor = Arc::new(ClusterExecutor::new(inner));
        // Named children of parallel actions in tasks that run here go to
        // the fleet too.
        let nesting = Nesting {
            broker: Arc::clone(&self.broker),
            options: self.options.clone(),
            fleet: Arc::clone(&self.fleet),
            fence: 0,
            slot: None,
        };
        let config = config
            .run_id(run.to_string())
            .executor(executor)
            .nested_executors(Arc::new(nesting));
        self.local.run(tasks, config)
    }
}

/// The queues a run talks through.
struct Io {
    tasks: Arc<dyn WorkQueue>,
    control: Arc<dyn WorkQueue>,
    items: Arc<dyn WorkQueue>,
}

type Routes = Arc<Mutex<HashMap<u64, mpsc::UnboundedSender<Event>>>>;

struct RunInner {
    run: Arc<str>,
    /// The queue of the run's events and the name its control messages
    /// carry: the run's id, or a nested run's channel.
    channel: Arc<str>,
    broker: Arc<dyn Broker>,
    options: ClusterOptions,
    /// The task and control queues, shared with the other runs of the
    /// caller or the claim.
    fleet: Arc<OnceCell<FleetQueues>>,
    io: OnceCell<Io>,
    routes: Routes,
    stop: CancellationToken,
    /// Added to every claim's epoch for fencing (a nested run's parent's).
    fence_base: u64,
    /// Channels of the same nested run under the parent's earlier claims:
    /// ended when this one starts, so their children stop.
    retire: Vec<String>,
    /// The slot of the worker claim this nested run's parent holds.
    slot: Option<Arc<ClaimSlot>>,
}

impl RunInner {
    fn new(
        run: Arc<str>,
        channel: Arc<str>,
        broker: Arc<dyn Broker>,
        options: ClusterOptions,
        fleet: Arc<OnceCell<FleetQueues>>,
    ) -> Arc<Self> {
        Arc::new(RunInner {
            run,
            channel,
            broker,
            options,
            fleet,
            io: OnceCell::new(),
            routes: Arc::new(Mutex::new(HashMap::new())),
            stop: CancellationToken::new(),
            fence_base: 0,
            retire: Vec::new(),
            slot: None,
        })
    }

    /// Open the run's queues and start its reader and alive ticker, once.
    async fn io(&self) -> Result<&Io, QueueError> {
        self.io
            .get_or_try_init(|| async {
                let o = &self.options;
                let fleet = self
                    .fleet
                    .get_or_try_init(|| FleetQueues::open(&*self.broker, o))
                    .await?;
                let (tasks, control) = (Arc::clone(&fleet.tasks), Arc::clone(&fleet.control));
                if !self.retire.is_empty() {
                    self.retire_earlier_claims(&control).await;
                }
                let items = self
                    .broker
                    .queue(
                        &items_queue_name(&o.namespace, &self.channel),
                        o.stream_queue_options(),
                    )
                    .await?;
                items.create_group(CALLER_GROUP, Start::First).await?;
                tokio::spawn(read_events(
                    Arc::clone(&items),
                    Arc::clone(&control),
                    Arc::clone(&self.routes),
                    Arc::clone(&self.channel),
                    self.stop.clone(),
                ));
                tokio::spawn(say_alive(
                    Arc::clone(&control),
                    Arc::clone(&self.channel),
                    o.alive_interval,
                    self.stop.clone(),
                ));
                Ok(Io {
                    tasks,
                    control,
                    items,
                })
            })
            .await
    }
}

impl RunInner {
    /// This nested run's parent was claimed before (its worker died or
    /// froze): the children those claims published may still be queued or
    /// running, under the same app ids. End their channels (workers cancel
    /// what they hold of them and drop what they claim later), and publish
    /// nothing until the workers have had a lease to hear it, so that an
    /// old child and its new self never step at once.
    async fn retire_earlier_claims(&self, control: &Arc<dyn WorkQueue>) {
        let o = &self.options;
        for old in &self.retire {
            let ended = Control::Ended { run: old.clone() };
            if let Err(error) = publish(&**control, &ended).await {
                tracing::warn!(%error, "could not end the children of an earlier claim");
            }
        }
        tokio::time::sleep(o.lease()).await;
        for old in &self.retire {
            let name = items_queue_name(&o.namespace, old);
            match self.broker.queue(&name, o.stream_queue_options()).await {
                Ok(queue) => {
                    if let Err(error) = queue.destroy().await {
                        tracing::debug!(%error, "could not remove an earlier claim's channel");
                    }
                }
                Err(error) => tracing::debug!(%error, "could not open an earlier claim's channel"),
            }
        }
    }
}

/// The run's executor: lives as long as the run (its config holds it).
struct ClusterExecutor {
    inner: Arc<RunInner>,
    /// A nested run's slot bookkeeping: its parent gives its worker slot
    /// back only once it waits *and* a child went to the fleet (children
    /// that carry their graph run on this worker and keep it busy).
    sent: AtomicBool,
    waiting: AtomicBool,
    released: AtomicBool,
}

impl ClusterExecutor {
    fn new(inner: Arc<RunInner>) -> Self {
        ClusterExecutor {
            inner,
            sent: AtomicBool::new(false),
            waiting: AtomicBool::new(false),
            released: AtomicBool::new(false),
        }
    }

    fn release(&self) {
        if let Some(slot) = &self.inner.slot {
            if !self.released.swap(true, Ordering::SeqCst) {
                slot.release();
            }
        }
    }
}

impl TaskExecutor for ClusterExecutor {
    fn execute(&self, task: RemoteTask, lane: RemoteLane) -> BoxFuture<'static, RemoteEnd> {
        self.sent.store(true, Ordering::SeqCst);
        if self.waiting.load(Ordering::SeqCst) {
            self.release();
        }
        Box::pin(proxy(Arc::clone(&self.inner), task, lane))
    }

    fn parent_waits(&self) {
        self.waiting.store(true, Ordering::SeqCst);
        if self.sent.load(Ordering::SeqCst) {
            self.release();
        }
    }

    fn parent_resumes(&self) -> BoxFuture<'static, ()> {
        self.waiting.store(false, Ordering::SeqCst);
        match &self.inner.slot {
            Some(slot) if self.released.swap(false, Ordering::SeqCst) => {
                Box::pin(Arc::clone(slot).reacquire())
            }
            _ => Box::pin(std::future::ready(())),
        }
    }
}

/// Gives every nested run (the children of one parallel action under one
/// claim of its task) an executor of its own, on a channel of its own.
pub(crate) struct Nesting {
    pub(crate) broker: Arc<dyn Broker>,
    pub(crate) options: ClusterOptions,
    /// The task and control queues of the caller or the worker.
    pub(crate) fleet: Arc<OnceCell<FleetQueues>>,
    /// The fencing epoch of the claim the parent runs under (0 in the
    /// caller's process).
    pub(crate) fence: u64,
    /// The worker's slot that claim holds.
    pub(crate) slot: Option<Arc<ClaimSlot>>,
}

/// How many of a parent's earlier claims' channels a new claim ends.
const RETIRED_CLAIMS: u64 = 16;

impl Nesting {
    fn channel(nested: &NestedRun, fence: u64) -> String {
        // FNV-1a over the nested run's identity: stable across processes.
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for part in [
            nested.parent_app_id.as_bytes(),
            &nested.sequence_id.to_le_bytes(),
            nested.action.as_bytes(),
        ] {
            for b in part.iter().chain([&0xff]) {
                hash ^= u64::from(*b);
                hash = hash.wrapping_mul(0x0100_0000_01b3);
            }
        }
        format!("{}-n{hash:016x}-e{fence}", nested.run_id)
    }
}

impl NestedExecutors for Nesting {
    fn executor(&self, nested: NestedRun) -> Arc<dyn TaskExecutor> {
        let channel = Self::channel(&nested, self.fence);
        // The parent's earlier claims used the epochs just below this one
        // (same base, lower attempts): end their channels.
        let attempt = self.fence & 0xffff;
        let base = self.fence - attempt;
        let retire = (attempt.saturating_sub(RETIRED_CLAIMS).max(1)..attempt)
            .map(|a| Self::channel(&nested, base + a))
            .collect();
        let inner = Arc::new(RunInner {
            run: Arc::clone(&nested.run_id),
            channel: Arc::from(channel.as_str()),
            broker: Arc::clone(&self.broker),
            options: self.options.clone(),
            fleet: Arc::clone(&self.fleet),
            io: OnceCell::new(),
            routes: Arc::new(Mutex::new(HashMap::new())),
            stop: CancellationToken::new(),
            fence_base: self.fence.checked_shl(16).unwrap_or(u64::MAX),
            retire,
            slot: self.slot.clone(),
        });
        Arc::new(ClusterExecutor::new(inner))
    }
}

impl Drop for ClusterExecutor {
    fn drop(&mut self) {
        // The run is over: stop reading, and tell the fleet to drop whatever
        // is left of it (tasks still queued, claims of cancelled tasks).
        self.inner.stop.cancel();
        let Some(io) = self.inner.io.get() else {
            return;
        };
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let control = Arc::clone(&io.control);
        let items = Arc::clone(&io.items);
        let run = self.inner.channel.to_string();
        let grace = self.inner.options.lease();
        rt.spawn(async move {
            if let Err(error) = publish(&*control, &Control::Ended { run }).await {
                tracing::warn!(%error, "could not tell the fleet the run ended");
            }
            // The run's events are read: remove its queue once the workers
            // have had a lease to stop speaking for its tasks.
            tokio::time::sleep(grace).await;
            if let Err(error) = items.destroy().await {
                tracing::warn!(%error, "could not remove the run's event queue");
            }
        });
    }
}

async fn publish<T: serde::Serialize>(
    queue: &dyn WorkQueue,
    message: &T,
) -> Result<(), QueueError> {
    queue.publish(encode(message), None).await
}

/// Read the run's events and hand each to its task's proxy.
async fn read_events(
    items: Arc<dyn WorkQueue>,
    control: Arc<dyn WorkQueue>,
    routes: Routes,
    run: Arc<str>,
    stop: CancellationToken,
) {
    let consumer = format!("caller-{}", std::process::id());
    loop {
        let fetched = tokio::select! {
            biased;
            () = stop.cancelled() => return,
            f = items.fetch(CALLER_GROUP, &consumer, 512, Duration::from_millis(250)) => f,
        };
        let deliveries = match fetched {
            Ok(d) => d,
            Err(error) => {
                tracing::warn!(%error, "reading the run's events failed; retrying");
                if matches!(error, QueueError::UnknownGroup { .. }) {
                    // The broker lost the group (a restart before it was
                    // stored): make it again; events already read come
                    // again and are dropped as duplicates.
                    let _ = items.create_group(CALLER_GROUP, Start::First).await;
                }
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_millis(200)) => continue,
                }
            }
        };
        for delivery in &deliveries {
            let event: Event = match serde_json::from_slice(&delivery.payload) {
                Ok(e) => e,
                Err(error) => {
                    tracing::warn!(%error, "dropping a malformed event");
                    continue;
                }
            };
            let task = event.task();
            let orphan = {
                let routes = routes.lock().unwrap_or_else(|e| e.into_inner());
                match routes.get(&task) {
                    Some(route) => route.send(event).err().map(|e| e.0),
                    None => Some(event),
                }
            };
            // A worker claimed (or refused) a task whose proxy is gone: the
            // task was cancelled before it was claimed. Have it dropped.
            if let Some(Event::Claimed { .. } | Event::Refused { .. }) = orphan {
                let cancel = Control::Cancel {
                    run: run.to_string(),
                    task,
                };
                if let Err(error) = publish(&*control, &cancel).await {
                    tracing::warn!(%error, task, "could not cancel a task claimed after its end");
                }
            }
        }
        settle(&*items, &deliveries).await;
    }
}

async fn settle(queue: &dyn WorkQueue, deliveries: &[Delivery]) {
    if let Err(error) = queue.ack_all(deliveries).await {
        tracing::warn!(%error, "acknowledging events failed (they may be read again)");
    }
}

async fn say_alive(
    control: Arc<dyn WorkQueue>,
    run: Arc<str>,
    every: Duration,
    stop: CancellationToken,
) {
    let ttl_ms = u64::try_from((every * 3).as_millis()).unwrap_or(u64::MAX);
    loop {
        let alive = Control::Alive {
            run: run.to_string(),
            ttl_ms,
        };
        if let Err(error) = publish(&*control, &alive).await {
            tracing::warn!(%error, "could not tell the fleet the caller is alive");
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
    }
}

/// Removes a task's route when its proxy ends; if it ends without the
/// task's end (dropped: timed out, or the run went away), has the task
/// cancelled on the fleet.
struct RouteGuard {
    routes: Routes,
    index: u64,
    control: Arc<dyn WorkQueue>,
    run: Arc<str>,
    settled: bool,
}

impl Drop for RouteGuard {
    fn drop(&mut self) {
        self.routes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.index);
        if self.settled {
            return;
        }
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let control = Arc::clone(&self.control);
            let cancel = Control::Cancel {
                run: self.run.to_string(),
                task: self.index,
            };
            rt.spawn(async move {
                if let Err(error) = publish(&*control, &cancel).await {
                    tracing::warn!(%error, "could not cancel an abandoned task");
                }
            });
        }
    }
}

fn executor_error(task: &RemoteTask, what: &str, error: &dyn std::fmt::Display) -> RemoteEnd {
    RemoteEnd::Failed {
        action: None,
        error: TaskError::new(
            TaskErrorKind::Executor,
            format!("task `{}`: {what}: {error}", task.key),
            None,
        ),
    }
}

/// The last error of this task's dead letter, if the task is one.
async fn dead_lettered(tasks: &dyn WorkQueue, channel: &str, index: u64) -> Option<String> {
    let letters = match tasks.dead_letters(WORKERS_GROUP).await {
        Ok(l) => l,
        Err(error) => {
            tracing::debug!(%error, "could not read the dead letters");
            return None;
        }
    };
    letters.into_iter().find_map(|letter| {
        let message: TaskMessage = serde_json::from_slice(&letter.payload).ok()?;
        (message.channel() == channel && message.index == index).then(|| {
            letter
                .last_error
                .unwrap_or_else(|| "its worker stopped answering".to_owned())
        })
    })
}

/// One named task, from its publication to its end.
async fn proxy(inner: Arc<RunInner>, task: RemoteTask, lane: RemoteLane) -> RemoteEnd {
    let io = match inner.io().await {
        Ok(io) => io,
        Err(error) => return executor_error(&task, "the broker is unreachable", &error),
    };
    let (tx, mut events) = mpsc::unbounded_channel();
    inner
        .routes
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(task.index, tx);
    let mut guard = RouteGuard {
        routes: Arc::clone(&inner.routes),
        index: task.index,
        control: Arc::clone(&io.control),
        run: Arc::clone(&inner.channel),
        settled: false,
    };
    let message = TaskMessage {
        version: PROTOCOL_VERSION,
        run: inner.run.to_string(),
        index: task.index,
        key: task.key.to_string(),
        app_id: task.app_id.to_string(),
        graph: task.graph.to_string(),
        state: task.state.clone(),
        entrypoint: task.entrypoint.clone(),
        halt_after: task.halt.get_halt_after().to_vec(),
        halt_before: task.halt.get_halt_before().to_vec(),
        inputs: task.halt.get_inputs().clone(),
        tokens: task.tokens,
        nodes: task.nodes,
        earlier_claims: 0,
        channel: (inner.channel != inner.run).then(|| inner.channel.to_string()),
        fence_base: inner.fence_base,
    };
    if let Err(error) = publish(&*io.tasks, &message).await {
        guard.settled = true;
        return executor_error(&task, "publishing the task failed", &error);
    }
    let control = |op: fn(String, u64) -> Control| op(inner.channel.to_string(), task.index);
    let send = |c: Control| {
        let queue = Arc::clone(&io.control);
        async move {
            if let Err(error) = publish(&*queue, &c).await {
                tracing::warn!(%error, "could not send a control message");
            }
        }
    };
    let mut epoch = 0u32;
    let mut claimed = false;
    let mut next_step = 0u64;
    let mut paused = false;
    let mut cancelling = false;
    let mut refused_since: Option<Instant> = None;
    // Children of this task whose end was delivered: a new owner of the
    // task reports a finished child's end again (from its checkpoint).
    let mut ended_children: HashSet<TaskPath> = HashSet::new();
    let mut cancel_deadline: Option<Instant> = None;
    let far = || Instant::now() + Duration::from_secs(86_400 * 365);
    // The task's pause state changing: one wait at a time, made again only
    // when it changes (not once per event).
    let mut gate: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>> =
        Box::pin(lane.paused());
    // `pause_task`/`resume_task`/`cancel_task` of paths below this task.
    let mut below = lane.descendant_controls();
    // Once the last delivery the queue allows has been claimed, a crash of
    // its worker sends the task to the dead letters, where no worker will
    // report it: look there now and then.
    let mut dead_check = tokio::time::interval(inner.options.lease());
    dead_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let refusal_deadline = refused_since
            .filter(|_| !claimed)
            .map(|since| since + inner.options.unknown_graph_wait);
        tokio::select! {
            biased;
            event = events.recv() => {
                let Some(event) = event else {
                    return executor_error(&task, "the run's event reader stopped", &"gone");
                };
                match event {
                    Event::Claimed { epoch: e, .. } if e >= epoch => {
                        // The new owner starts after its checkpoint and first
                        // reports that checkpoint's step (dropped below if it
                        // was delivered): `next_step` moves only with what the
                        // consumer got.
                        epoch = e;
                        claimed = true;
                        refused_since = None;
                        // A new owner learns what the task's last owner knew.
                        if cancelling {
                            send(control(|run, task| Control::Cancel { run, task })).await;
                        } else if paused {
                            send(control(|run, task| Control::Pause { run, task })).await;
                        }
                    }
                    Event::Refused { graph, .. } => {
                        if !claimed {
                            refused_since.get_or_insert_with(Instant::now);
                        }
                        tracing::debug!(graph, "a worker does not know the task's graph");
                    }
                    Event::Token { epoch: e, step, action, value, .. } if e >= epoch && step >= next_step => {
                        epoch = e;
                        // A cancelled lane refuses; the cancel branch below sees why.
                        let _ = lane.token(action.map(Arc::from), value).await;
                    }
                    Event::Node { epoch: e, step, action, result, state, .. } if e >= epoch && step >= next_step => {
                        epoch = e;
                        next_step = step + 1;
                        let _ = lane.node(Arc::from(action), result, state).await;
                    }
                    Event::Nested { epoch: e, item, .. } if e >= epoch => {
                        epoch = e;
                        if item.is_terminal() && !ended_children.insert(item.path.clone()) {
                            continue;
                        }
                        let _ = lane.nested(*item).await;
                    }
                    Event::End { epoch: e, end, .. } if e >= epoch => {
                        guard.settled = true;
                        return match end {
                            WireEnd::Final { action, result, state } => RemoteEnd::Final {
                                action: action.map(Arc::from),
                                result,
                                state,
                            },
                            WireEnd::Failed { action, error } => RemoteEnd::Failed {
                                action: action.map(Arc::from),
                                error,
                            },
                            WireEnd::Cancelled { action } => RemoteEnd::Cancelled {
                                action: action.map(Arc::from),
                            },
                        };
                    }
                    // Events of an older claim, or of steps already delivered.
                    _ => {}
                }
            }
            () = lane.cancelled(), if !cancelling => {
                cancelling = true;
                send(control(|run, task| Control::Cancel { run, task })).await;
                if !claimed {
                    // Whoever claims it later is told to drop it (the
                    // reader answers a claim of a task without a proxy).
                    guard.settled = true;
                    return RemoteEnd::Cancelled { action: None };
                }
                cancel_deadline = Some(Instant::now() + inner.options.cancel_wait);
            }
            () = tokio::time::sleep_until(cancel_deadline.unwrap_or_else(far)), if cancel_deadline.is_some() => {
                tracing::warn!(task = %task.key, "the worker did not confirm the cancellation in time");
                return RemoteEnd::Cancelled { action: None };
            }
            () = tokio::time::sleep_until(refusal_deadline.unwrap_or_else(far)), if refusal_deadline.is_some() => {
                return RemoteEnd::Failed {
                    action: None,
                    error: TaskError::new(
                        TaskErrorKind::UnknownGraph,
                        format!(
                            "task `{}` names graph `{}`, which no worker registered (every worker that \
                             saw it for {:?} refused it)",
                            task.key, task.graph, inner.options.unknown_graph_wait
                        ),
                        None,
                    ),
                };
            }
            _ = dead_check.tick(), if claimed && epoch >= inner.options.max_deliveries => {
                if let Some(why) = dead_lettered(&*io.tasks, &inner.channel, task.index).await {
                    guard.settled = true;
                    return RemoteEnd::Failed {
                        action: None,
                        error: TaskError::new(
                            TaskErrorKind::Executor,
                            format!(
                                "task `{}` went to the dead letters after {} deliveries: {why}",
                                task.key, inner.options.max_deliveries
                            ),
                            None,
                        ),
                    };
                }
            }
            Some(c) = below.recv() => {
                let what = match c.op {
                    TaskOp::Pause => BelowOp::Pause,
                    TaskOp::Resume => BelowOp::Resume,
                    _ => BelowOp::Cancel,
                };
                send(Control::Below {
                    run: inner.channel.to_string(),
                    task: task.index,
                    path: c.path.keys().iter().map(ToString::to_string).collect(),
                    what,
                })
                .await;
            }
            () = &mut gate, if !cancelling => {
                paused = !paused;
                if paused {
                    gate = Box::pin(lane.unpaused());
                    send(control(|run, task| Control::Pause { run, task })).await;
                } else {
                    gate = Box::pin(lane.paused());
                    send(control(|run, task| Control::Resume { run, task })).await;
                }
            }
        }
    }
}
