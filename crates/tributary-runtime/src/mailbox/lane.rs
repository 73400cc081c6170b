//! A task's lane: the sending half of the mailbox. It numbers the task's
//! items, sends them with backpressure (or, for terminal items, through the
//! merger's control channel, never waiting), forwards the items of tasks
//! nested in the task, and holds the task's gates and its cancellation.
//!
//! In an `Ordered` run a lane starts out on its own small channel and moves
//! to the run's mailbox once its task is the front task, the only one the
//! consumer reads: the merger closes the lane's channel then, the lane sees
//! it closed and sends everything after into the mailbox. Every item the
//! lane put in its channel comes before every item it put in the mailbox,
//! so the merger reads the channel to its end and then the mailbox.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;
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
use crate::reason::CancelReason;
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
/// share: the task's controls (token, pause gate, cancellation reason),
/// its identity, its way out to the merger, its counters, its gates and
/// its slot, in one allocation.
///
/// A lane exists from the moment its run knows the task (so that a queued
/// task can be paused and cancelled) and is filled in when the task starts
/// ([`Lane::start`]); what it holds from then on is reached through
/// `Deref` to [`LaneBody`]. A queued task's lane holds nothing of its run,
/// so the run's task table, which holds the lanes, makes no cycle with it
/// until the task starts, and a started task always leaves the table.
pub(crate) struct Lane {
    /// The task is cancelled: on its own, with its run, or with a task or
    /// run it is nested in. A task's cancellation is the lane's own (a flag
    /// and its waiters), not a node of a shared token tree: a task costs no
    /// allocation and no lock of its run's for it, and looking costs a load.
    cancelled: AtomicBool,
    /// Wakes what waits for the cancellation ([`Lane::cancelled`]).
    cancel_wake: Notify,
    pub(crate) task: TaskShared,
    body: OnceLock<LaneBody>,
}

/// What a lane holds once its task has started.
pub(crate) struct LaneBody {
    pub(crate) index: u64,
    pub(crate) app_id: Arc<str>,
    pub(crate) path: TaskPath,
    out: mpsc::Sender<Envelope>,
    ctl: mpsc::UnboundedSender<Ctl>,
    counters: Mutex<Counters>,
    /// The gates of the task's run and of the runs it is nested in (the
    /// task's own is `Lane::task`'s).
    pub(crate) gates: GateChain,
    /// The task's run (a handle, so that the task's actions can borrow it).
    pub(crate) run: RunHandle,
    tokens: bool,
    nested_nodes: bool,
    pub(crate) terminal_via_ctl: bool,
    terminal_sent: AtomicBool,
    /// `Ordered`: the lane has sent into the run's mailbox, so its own
    /// channel takes no more items. Written under the counters' lock.
    moved: AtomicBool,
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

/// How a lane is set up when its task starts.
pub(crate) struct LaneConfig {
    pub(crate) index: u64,
    pub(crate) app_id: Arc<str>,
    pub(crate) path: TaskPath,
    pub(crate) out: mpsc::Sender<Envelope>,
    pub(crate) ctl: mpsc::UnboundedSender<Ctl>,
    /// The run's gates.
    pub(crate) gates: GateChain,
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

impl std::ops::Deref for Lane {
    type Target = LaneBody;

    /// What the lane holds once its task has started.
    ///
    /// # Panics
    ///
    /// Before [`Lane::start`]: only the task's controls (`token`, `task`)
    /// are used before then.
    fn deref(&self) -> &LaneBody {
        self.body
            .get()
            .expect("a task's lane is filled in when the task starts")
    }
}

impl Lane {
    /// The lane of a task the run has just learnt of: its controls alone.
    pub(crate) fn control() -> Arc<Lane> {
        Arc::new(Lane {
            cancelled: AtomicBool::new(false),
            cancel_wake: Notify::new(),
            task: TaskShared::default(),
            body: OnceLock::new(),
        })
    }

    /// Whether the task is cancelled.
    pub(crate) fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::SeqCst)
    }

    /// Resolves once the task is cancelled.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only waits.
    pub(crate) async fn cancelled(&self) {
        // Registered before the look: a cancellation after the look wakes
        // it (`notify_waiters` wakes every `Notified` made before it).
        let notified = self.cancel_wake.notified();
        if self.is_cancelled() {
            return;
        }
        notified.await;
    }

    /// Cancel the task and every run nested in it (a reason, if any, is
    /// set before). Cancelling again does nothing.
    pub(crate) fn cancel_tree(&self) {
        if !self.cancel_alone() {
            return;
        }
        // A queued task has nothing nested in it.
        if let Some(body) = self.body.get()
            && body.run.shared.has_nested.load(Ordering::SeqCst)
        {
            for run in body.run.shared.nested_in(self.key()) {
                run.cancel_tasks();
            }
        }
    }

    /// Cancel the task but not what is nested in it, for a run that has
    /// nothing nested (a run nested later finds its task cancelled); looks
    /// at nothing but the lane's flag and waiters. `false`: it was
    /// cancelled already.
    pub(crate) fn cancel_alone(&self) -> bool {
        if self.cancelled.swap(true, Ordering::SeqCst) {
            return false;
        }
        self.cancel_wake.notify_waiters();
        true
    }

    /// Fill the lane in: its task starts.
    pub(crate) fn start(&self, c: LaneConfig) {
        let body = LaneBody {
            index: c.index,
            app_id: c.app_id,
            path: c.path,
            out: c.out,
            ctl: c.ctl,
            counters: Mutex::default(),
            gates: c.gates,
            run: c.run,
            tokens: c.tokens,
            nested_nodes: c.nested_nodes,
            terminal_via_ctl: c.terminal_via_ctl,
            terminal_sent: AtomicBool::new(false),
            moved: AtomicBool::new(false),
            pause: c.pause_clock.then(Box::default),
            slot: c.slot,
            config: c.config,
            info: OnceLock::new(),
        };
        assert!(self.body.set(body).is_ok(), "a task starts once");
    }

    /// The task's app id, once it has started.
    pub(crate) fn started_app_id(&self) -> Option<Arc<str>> {
        self.body.get().map(|b| Arc::clone(&b.app_id))
    }

    /// Why the task was cancelled, if it was cancelled on its own.
    pub(crate) fn reason(&self) -> Option<CancelReason> {
        self.task.reason.get().copied()
    }

    /// Pause or resume the task (its gate is created on first pause).
    pub(crate) fn set_paused(&self, paused: bool) {
        self.task.set_paused(paused);
    }

    /// Cancel the task (and its subtree) for `reason`; the first reason
    /// given sticks.
    pub(crate) fn cancel(&self, reason: CancelReason) {
        let _ = self.task.reason.set(reason);
        self.cancel_tree();
    }

    /// Whether the task's gates, its run's and those of the runs it is
    /// nested in, are all open.
    pub(crate) fn gates_open(&self) -> bool {
        self.gates.is_open_with(Some(&self.task))
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

    /// The run's mailbox, when the lane may move there: in an `Ordered`
    /// run, until the task has ended (an emitter the task left running is
    /// then stopped, as it is once its lane's channel is gone).
    fn mailbox(&self) -> Option<&mpsc::Sender<Envelope>> {
        self.run
            .shared
            .ordered_mailbox
            .as_ref()
            .filter(|_| !self.terminal_sent())
    }

    /// Room for an item now, if there is any: in the lane's way out, or,
    /// once that is closed in an `Ordered` run (the task is at the front),
    /// in the run's mailbox. `Closed`: the consumer has gone.
    fn try_room(&self) -> Result<Room<'_>, mpsc::error::TrySendError<()>> {
        if !self.moved.load(Ordering::Relaxed) {
            match self.out.try_reserve() {
                Ok(permit) => return Ok(Room::Out(permit)),
                Err(mpsc::error::TrySendError::Closed(())) => {}
                Err(full) => return Err(full),
            }
        }
        match self.mailbox() {
            Some(mailbox) => mailbox.try_reserve().map(Room::Mailbox),
            None => Err(mpsc::error::TrySendError::Closed(())),
        }
    }

    /// Wait for room in the lane's way out, unless the task is cancelled.
    async fn reserve(&self) -> Result<Room<'_>, Stopped> {
        if self.is_cancelled() {
            return Err(Stopped);
        }
        // Room now is the common case: take it without registering with the
        // token's and the channel's waiter lists (two locks each way). The
        // wait for room is boxed, so that the common case keeps no room for
        // it in the futures of every task.
        match self.try_room() {
            Ok(room) => Ok(room),
            Err(mpsc::error::TrySendError::Closed(())) => Err(Stopped),
            Err(mpsc::error::TrySendError::Full(())) => Box::pin(self.wait_for_room()).await,
        }
    }

    async fn wait_for_room(&self) -> Result<Room<'_>, Stopped> {
        if !self.moved.load(Ordering::Relaxed) {
            let permit = tokio::select! {
                biased;
                _ = self.cancelled() => return Err(Stopped),
                permit = self.out.reserve() => permit,
            };
            if let Ok(permit) = permit {
                return Ok(Room::Out(permit));
            }
        }
        // The way out is closed: the task is at the front of an `Ordered`
        // run (a task waiting for room in its own channel gets here when it
        // comes to the front), or the consumer has gone.
        let Some(mailbox) = self.mailbox() else {
            return Err(Stopped);
        };
        tokio::select! {
            biased;
            _ = self.cancelled() => Err(Stopped),
            permit = mailbox.reserve() => permit.map(Room::Mailbox).map_err(|_| Stopped),
        }
    }

    /// Lock the counters to send an item with `room`. `None` when `room` is
    /// in the lane's own channel but the lane has moved to the mailbox
    /// meanwhile (another emitter of the task sent there): the items after
    /// that one must follow it there, so the caller takes room again.
    fn lock_for(&self, room: &Room<'_>) -> Option<MutexGuard<'_, Counters>> {
        let counters = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        match room {
            Room::Out(_) if self.moved.load(Ordering::Relaxed) => None,
            Room::Out(_) => Some(counters),
            Room::Mailbox(_) => {
                self.moved.store(true, Ordering::Relaxed);
                Some(counters)
            }
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
        if self.is_cancelled() {
            return Err(Stopped);
        }
        // Room now is the common case: take it without registering with the
        // token's and the channel's waiter lists (two locks each way).
        match self.try_room() {
            Ok(room) => {
                if let Some(counters) = self.lock_for(&room) {
                    self.send_locked(counters, room, report, slot);
                    return Ok(None);
                }
            }
            Err(mpsc::error::TrySendError::Closed(())) => return Err(Stopped),
            Err(mpsc::error::TrySendError::Full(())) => {}
        }
        Ok(Some(Box::pin(async move {
            loop {
                let room = self.wait_for_room().await?;
                if let Some(counters) = self.lock_for(&room) {
                    self.send_locked(counters, room, report, slot);
                    return Ok(());
                }
            }
        })))
    }

    /// Number the item and send it with `room`. Numbering and sending under
    /// one lock keeps `seq` in queue order with no gaps when one task has
    /// several emitters (an action that emits from spawned subtasks).
    fn send_locked(
        &self,
        mut counters: MutexGuard<'_, Counters>,
        room: Room<'_>,
        report: Report,
        slot: Option<SlotHold>,
    ) {
        let terminal = report.kind.is_terminal();
        if terminal {
            self.terminal_sent.store(true, Ordering::Relaxed);
        }
        let item = self.own_item(counters.own, report);
        room.send(Envelope {
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
        loop {
            let room = self.reserve().await?;
            if let Some(mut counters) = self.lock_for(&room) {
                room.send(Envelope {
                    item,
                    index: self.index,
                    seq: counters.lane,
                    terminal: false,
                    slot: None,
                });
                counters.lane += 1;
                return Ok(());
            }
        }
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
        if self.gates_open() {
            return Ok(());
        }
        // Boxed: only a paused task pays for the wait's room.
        Box::pin(self.wait_paused()).await
    }

    async fn wait_paused(&self) -> Result<(), Stopped> {
        let _paused = PausedGuard::enter(self);
        tokio::select! {
            biased;
            _ = self.cancelled() => Err(Stopped),
            _ = self.gates.wait_open_with(Some(&self.task)) => Ok(()),
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

/// Room for one item: in the lane's way out (its own channel, or the run's
/// mailbox in the modes that share it), or, for the front task of an
/// `Ordered` run, in the run's mailbox.
enum Room<'a> {
    Out(mpsc::Permit<'a, Envelope>),
    Mailbox(mpsc::Permit<'a, Envelope>),
}

impl Room<'_> {
    fn send(self, env: Envelope) {
        match self {
            Room::Out(permit) | Room::Mailbox(permit) => permit.send(env),
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{MergeMode, RunConfig};
    use crate::merger::RunStream;
    use crate::runtime::Runtime;
    use crate::source::TaskSource;

    fn token(i: u64) -> Report {
        Report {
            kind: ItemKind::Token,
            action: Some(Arc::from("talk")),
            result: Some(serde_json::json!(i)),
            state: None,
            error: None,
        }
    }

    /// An `Ordered` run's lane on its own channel of `capacity`, and the
    /// run's stream (dropping it would cancel the run).
    fn ordered_lane(capacity: usize) -> (Arc<Lane>, mpsc::Receiver<Envelope>, RunStream) {
        let config = RunConfig::new().merge_mode(MergeMode::Ordered);
        let (handle, stream, _supervisor) =
            Runtime::new().pair(TaskSource::iter(Vec::new()), config.clone(), None);
        let (out, rx) = mpsc::channel(capacity);
        let (ctl, _ctl_rx) = mpsc::unbounded_channel();
        let lane = Lane::control();
        lane.start(LaneConfig {
            index: 0,
            app_id: Arc::from("app"),
            path: handle.shared.prefix.child(Arc::from("t0")),
            out,
            ctl,
            gates: handle.shared.gates.clone(),
            run: handle,
            tokens: true,
            nested_nodes: true,
            terminal_via_ctl: true,
            pause_clock: false,
            slot: TaskSlot::new(None, None, None),
            config: Arc::new(config),
        });
        (lane, rx, stream)
    }

    /// The interleaving two emitters of one task can run into at the move
    /// (too narrow for a test of the whole run to hit at will): one holds
    /// room in the lane's channel when the channel is closed, another sends
    /// into the mailbox first. The first must not send into the channel
    /// after that, or the merger would read its item before the other's.
    #[tokio::test]
    async fn room_taken_in_the_channel_before_the_move_is_given_up_after_it() {
        let (lane, mut rx, _stream) = ordered_lane(4);
        let early = lane.try_room().expect("the channel has room");
        assert!(matches!(early, Room::Out(_)));
        // The task comes to the front.
        rx.close();
        lane.send(token(0), None)
            .await
            .ok()
            .expect("the mailbox has room");
        assert!(lane.moved.load(Ordering::Relaxed));
        assert!(
            lane.lock_for(&early).is_none(),
            "room in the channel is not used after the move"
        );
        drop(early);
        // The channel ends with nothing in it; the item is in the mailbox.
        assert!(rx.recv().await.is_none());
        let mailbox = lane.mailbox().unwrap();
        assert_eq!(mailbox.capacity(), mailbox.max_capacity() - 1);
    }

    /// Room in the mailbox is always used, and moves the lane.
    #[tokio::test]
    async fn a_lane_whose_channel_is_closed_sends_into_the_mailbox() {
        let (lane, mut rx, _stream) = ordered_lane(1);
        lane.send(token(0), None).await.ok().expect("room");
        rx.close();
        assert!(!lane.moved.load(Ordering::Relaxed));
        let room = lane.try_room().expect("the mailbox has room");
        assert!(matches!(room, Room::Mailbox(_)));
        assert!(lane.lock_for(&room).is_some());
        assert!(lane.moved.load(Ordering::Relaxed));
        drop(room);
        // What the lane put in its channel before is still read.
        assert_eq!(rx.recv().await.map(|env| env.seq), Some(0));
        assert!(rx.recv().await.is_none());
    }
}
