//! A task's lane: the sending half of the mailbox. It numbers the task's
//! items, sends them with backpressure (or, for terminal items, through the
//! merger's control channel, never waiting), forwards the items of tasks
//! nested in the task, and holds the task's gates and token.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tributary_core::{AppInfo, EmitError, Emitted, State, StreamSink, TaskIdentity};

use super::{Ctl, Envelope, SlotHold};
use crate::budget::TaskSlot;
use crate::config::RunConfig;
use crate::error::TaskError;
use crate::gate::GateChain;
use crate::handle::RunHandle;
use crate::item::{ItemKind, StreamItem};
use crate::path::TaskPath;
use crate::progress::Change;
use crate::task_control::TaskShared;

/// The task was cancelled (or its run's consumer went away) while it
/// waited.
pub(crate) struct Stopped;

/// The parts of an item of the lane's own task.
pub(crate) struct Report {
    pub(crate) kind: ItemKind,
    pub(crate) action: Option<Arc<str>>,
    pub(crate) result: Option<Value>,
    pub(crate) state: Option<State>,
    pub(crate) error: Option<TaskError>,
}

impl Report {
    pub(crate) fn new(kind: ItemKind, action: Option<Arc<str>>, error: Option<TaskError>) -> Self {
        Report {
            kind,
            action,
            result: None,
            state: None,
            error,
        }
    }
}

/// Counters of a lane: its position among everything it sent, and the
/// task's own item count.
#[derive(Default)]
struct Counters {
    lane: u64,
    own: u64,
}

/// Time the task spent waiting at its pause gates.
#[derive(Default)]
struct PauseClock {
    since: Option<Instant>,
    total: Duration,
}

/// What the actor, its token sink and the parallel actions of its task
/// share: the task's identity, its way out to the merger, its counters,
/// its gates and its token.
pub(crate) struct Lane {
    pub(crate) index: u64,
    pub(crate) app_id: Arc<str>,
    pub(crate) path: TaskPath,
    out: mpsc::Sender<Envelope>,
    ctl: mpsc::UnboundedSender<Ctl>,
    counters: Mutex<Counters>,
    pub(crate) token: CancellationToken,
    pub(crate) gates: GateChain,
    pub(crate) task: Arc<TaskShared>,
    /// The task's run (a handle, so that the task's actions can borrow it).
    pub(crate) run: RunHandle,
    tokens: bool,
    nested_nodes: bool,
    pub(crate) terminal_via_ctl: bool,
    terminal_sent: AtomicBool,
    /// Only tasks with a timeout keep time spent paused.
    pause: Option<Box<Mutex<PauseClock>>>,
    /// The task's hold on the concurrency limits.
    pub(crate) slot: TaskSlot,
    /// The task's run's settings.
    pub(crate) config: Arc<RunConfig>,
    /// The task's application's identity, built the first time something
    /// asks for it (see [`TaskIdentity`]).
    info: OnceLock<Arc<AppInfo>>,
}

/// How a lane is set up.
pub(crate) struct LaneConfig {
    pub(crate) index: u64,
    pub(crate) app_id: Arc<str>,
    pub(crate) path: TaskPath,
    pub(crate) out: mpsc::Sender<Envelope>,
    pub(crate) ctl: mpsc::UnboundedSender<Ctl>,
    pub(crate) token: CancellationToken,
    pub(crate) gates: GateChain,
    pub(crate) task: Arc<TaskShared>,
    pub(crate) run: RunHandle,
    /// Tokens are streamed (own and nested).
    pub(crate) tokens: bool,
    /// Node and terminal items of nested tasks are streamed.
    pub(crate) nested_nodes: bool,
    pub(crate) terminal_via_ctl: bool,
    /// Keep the time spent paused (the task has a timeout).
    pub(crate) pause_clock: bool,
    pub(crate) slot: TaskSlot,
    pub(crate) config: Arc<RunConfig>,
}

impl Lane {
    pub(crate) fn new(c: LaneConfig) -> Self {
        Lane {
            index: c.index,
            app_id: c.app_id,
            path: c.path,
            out: c.out,
            ctl: c.ctl,
            counters: Mutex::default(),
            token: c.token,
            gates: c.gates,
            task: c.task,
            run: c.run,
            tokens: c.tokens,
            nested_nodes: c.nested_nodes,
            terminal_via_ctl: c.terminal_via_ctl,
            terminal_sent: AtomicBool::new(false),
            pause: c.pause_clock.then(Box::default),
            slot: c.slot,
            config: c.config,
            info: OnceLock::new(),
        }
    }

    /// The task's application's identity, if it was built.
    pub(crate) fn identity(&self) -> Option<&Arc<AppInfo>> {
        self.info.get()
    }

    /// Whether the run streams tokens.
    pub(crate) fn streams_tokens(&self) -> bool {
        self.tokens
    }

    /// The task's key.
    pub(crate) fn key(&self) -> &Arc<str> {
        self.path
            .keys()
            .last()
            .expect("a task's path ends with its key")
    }

    fn own_item(&self, seq: u64, report: Report) -> StreamItem {
        StreamItem {
            task_key: Arc::clone(self.key()),
            path: self.path.clone(),
            task_index: self.index,
            app_id: Arc::clone(&self.app_id),
            action: report.action,
            seq,
            kind: report.kind,
            result: report.result,
            state_update: report.state,
            error: report.error,
        }
    }

    /// Wait for room in the lane's way out, unless the task is cancelled.
    async fn reserve(&self) -> Result<mpsc::Permit<'_, Envelope>, Stopped> {
        if self.token.is_cancelled() {
            return Err(Stopped);
        }
        // Room now is the common case: take it without registering with the
        // token's and the channel's waiter lists (two locks each way). The
        // wait for room is boxed, so that the common case keeps no room for
        // it in the futures of every task.
        match self.out.try_reserve() {
            Ok(permit) => Ok(permit),
            Err(mpsc::error::TrySendError::Closed(())) => Err(Stopped),
            Err(mpsc::error::TrySendError::Full(())) => Box::pin(self.wait_for_room()).await,
        }
    }

    async fn wait_for_room(&self) -> Result<mpsc::Permit<'_, Envelope>, Stopped> {
        tokio::select! {
            biased;
            _ = self.token.cancelled() => Err(Stopped),
            permit = self.out.reserve() => permit.map_err(|_| Stopped),
        }
    }

    /// Send an item of the task, waiting for room (that is the
    /// backpressure) unless the task is cancelled.
    ///
    /// The item is sent when there is room at the call (the common case):
    /// the returned future then only reports it, and holds neither the
    /// item nor a wait; only a send that must wait for room boxes the item
    /// and the wait, so that the futures of every task stay small.
    pub(crate) fn send(
        &self,
        report: Report,
        slot: Option<SlotHold>,
    ) -> impl Future<Output = Result<(), Stopped>> + Send + '_ {
        let sent = self.send_or_wait(report, slot);
        async move {
            match sent {
                Ok(None) => Ok(()),
                Ok(Some(wait)) => wait.await,
                Err(Stopped) => Err(Stopped),
            }
        }
    }

    /// Send now when there is room (`Ok(None)`), or hand back a boxed
    /// future that waits for room and then sends.
    #[allow(clippy::type_complexity)]
    fn send_or_wait(
        &self,
        report: Report,
        slot: Option<SlotHold>,
    ) -> Result<Option<Pin<Box<dyn Future<Output = Result<(), Stopped>> + Send + '_>>>, Stopped>
    {
        if self.token.is_cancelled() {
            return Err(Stopped);
        }
        // Room now is the common case: take it without registering with the
        // token's and the channel's waiter lists (two locks each way).
        match self.out.try_reserve() {
            Ok(permit) => {
                self.send_with(permit, report, slot);
                Ok(None)
            }
            Err(mpsc::error::TrySendError::Closed(())) => Err(Stopped),
            Err(mpsc::error::TrySendError::Full(())) => Ok(Some(Box::pin(async move {
                let permit = self.wait_for_room().await?;
                self.send_with(permit, report, slot);
                Ok(())
            }))),
        }
    }

    /// Number the item and send it with `permit`.
    fn send_with(
        &self,
        permit: mpsc::Permit<'_, Envelope>,
        report: Report,
        slot: Option<SlotHold>,
    ) {
        let terminal = report.kind.is_terminal();
        // Number and send under one lock so that concurrent emitters of one
        // task (an action that emits from spawned subtasks) keep `seq` in
        // queue order with no gaps.
        let mut counters = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        if terminal {
            self.terminal_sent.store(true, Ordering::Relaxed);
        }
        let item = self.own_item(counters.own, report);
        permit.send(Envelope {
            item,
            index: self.index,
            seq: counters.lane,
            terminal,
            slot,
        });
        counters.own += 1;
        counters.lane += 1;
    }

    /// Forward an item of a task nested in this one, if the run's switches
    /// let it through: tokens by `intermediate_stream_outputs`, node and
    /// terminal items of nested tasks by `intermediate_nodes`.
    pub(crate) async fn forward(&self, item: StreamItem) -> Result<(), Stopped> {
        let wanted = match item.kind {
            ItemKind::Token => self.tokens,
            _ => self.nested_nodes,
        };
        if !wanted {
            return Ok(());
        }
        let permit = self.reserve().await?;
        let mut counters = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        permit.send(Envelope {
            item,
            index: self.index,
            seq: counters.lane,
            terminal: false,
            slot: None,
        });
        counters.lane += 1;
        Ok(())
    }

    /// Hand the task's terminal item to the merger's control channel,
    /// never waiting. A task reports one terminal item: later ones are
    /// dropped.
    pub(crate) fn push_terminal(&self, report: Report, slot: Option<SlotHold>) {
        let mut counters = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        if self.terminal_sent.swap(true, Ordering::Relaxed) {
            return;
        }
        let item = self.own_item(counters.own, report);
        let seq = counters.lane;
        counters.own += 1;
        counters.lane += 1;
        let _ = self.ctl.send(Ctl::Terminal(Envelope {
            item,
            index: self.index,
            seq,
            terminal: true,
            slot,
        }));
    }

    /// Whether the task's terminal item was sent.
    pub(crate) fn terminal_sent(&self) -> bool {
        self.terminal_sent.load(Ordering::Relaxed)
    }

    /// Wait while the run, the task or an enclosing run is paused.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the paused count and the pause clock are kept right
    /// when the wait is dropped (a timeout, a cancelled step).
    pub(crate) async fn wait_gates(&self) -> Result<(), Stopped> {
        if self.gates.is_open() {
            return Ok(());
        }
        // Boxed: only a paused task pays for the wait's room.
        Box::pin(self.wait_paused()).await
    }

    async fn wait_paused(&self) -> Result<(), Stopped> {
        let _paused = PausedGuard::enter(self);
        tokio::select! {
            biased;
            _ = self.token.cancelled() => Err(Stopped),
            _ = self.gates.wait_open() => Ok(()),
        }
    }

    /// Time the task has spent paused so far (a pause going on included).
    pub(crate) fn paused_for(&self) -> (Duration, bool) {
        let Some(clock) = &self.pause else {
            return (Duration::ZERO, false);
        };
        let clock = clock.lock().unwrap_or_else(|e| e.into_inner());
        match clock.since {
            Some(since) => (clock.total + since.elapsed(), true),
            None => (clock.total, false),
        }
    }

    /// Why the task was cancelled.
    pub(crate) fn cancel_reason(&self) -> TaskError {
        let reason = self
            .task
            .reason
            .get()
            .copied()
            .unwrap_or_else(|| self.run.shared.inherited_reason());
        TaskError::cancelled(reason)
    }
}

/// Counts a task as paused (and runs its pause clock) while it waits at
/// its gates, and stops both however the wait ends.
struct PausedGuard<'a> {
    lane: &'a Lane,
}

impl<'a> PausedGuard<'a> {
    fn enter(lane: &'a Lane) -> Self {
        lane.run.shared.update_progress(Change {
            paused: 1,
            ..Change::default()
        });
        if let Some(clock) = &lane.pause {
            let mut clock = clock.lock().unwrap_or_else(|e| e.into_inner());
            clock.since.get_or_insert_with(Instant::now);
        }
        PausedGuard { lane }
    }
}

impl Drop for PausedGuard<'_> {
    fn drop(&mut self) {
        if let Some(clock) = &self.lane.pause {
            let mut clock = clock.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(since) = clock.since.take() {
                clock.total += since.elapsed();
            }
        }
        self.lane.run.shared.update_progress(Change {
            paused: -1,
            ..Change::default()
        });
    }
}

/// A task's lane is also its application's stream sink: it turns the
/// task's `ctx.emit` calls into `Token` items (with no allocation of its
/// own per task).
#[async_trait]
impl StreamSink for Lane {
    async fn send(&self, item: Emitted) -> Result<(), EmitError> {
        if !self.tokens {
            return Ok(());
        }
        let Emitted { action, value, .. } = item;
        let stopped = |action: &str| EmitError {
            action: action.to_owned(),
        };
        if self.wait_gates().await.is_err() {
            return Err(stopped(&action));
        }
        let report = Report {
            kind: ItemKind::Token,
            action: Some(Arc::clone(&action)),
            result: Some(value),
            state: None,
            error: None,
        };
        Lane::send(self, report, None)
            .await
            .map_err(|_| stopped(&action))
    }
}

/// A task's identity is its lane's: the id and path it already holds, the
/// rest (run, partition key, spawning parent) from its run, put together
/// only when a hook, a persister or an action asks for the whole of it.
impl TaskIdentity for Lane {
    fn app_id(&self) -> &str {
        &self.app_id
    }

    fn task_path(&self) -> &[Arc<str>] {
        self.path.keys()
    }

    fn info(&self) -> &Arc<AppInfo> {
        self.info.get_or_init(|| {
            let mut info = AppInfo::new(self.app_id.to_string());
            info.partition_key.clone_from(&self.config.partition_key);
            info.spawning_parent
                .clone_from(&self.config.spawning_parent);
            info.task_path = self.path.keys().to_vec();
            info.run_id = Some(Arc::clone(&self.run.shared.run_id));
            info.task_index = Some(self.index);
            Arc::new(info)
        })
    }
}
