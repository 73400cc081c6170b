//! A run's shared state: what its supervisor, actors, merger and handles
//! all see.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::budget::Budget;
use crate::end::RunEnd;
use crate::gate::GateChain;
use crate::mailbox::lane::Lane;
use crate::mailbox::{Envelope, Inbox};
use crate::path::TaskPath;
use crate::progress::{Change, Counters, Progress};
use crate::reason::CancelReason;
use crate::task_control::{LiveStatus, TaskControl, TaskInfo};

/// The task a nested run runs in.
pub(crate) struct ParentTask {
    pub(crate) run: Arc<RunShared>,
    pub(crate) lane: Arc<Lane>,
}

/// The hasher of a run's task table: `foldhash`, seeded per process. Every
/// task enters and leaves the table once, and SipHash (std's default) cost
/// more than the rest of the table's work.
type Hasher = foldhash::fast::RandomState;

/// The tasks of a run that have not ended, and, when the run remembers
/// keys, every key it has taken.
#[derive(Default)]
pub(crate) struct TaskTable {
    live: HashMap<Arc<str>, (u64, TaskControl), Hasher>,
    /// Hashes of every key taken so far (when the run remembers keys): a
    /// key is then unique for the whole run, and eight bytes per task is
    /// what remembering that costs.
    seen: Option<HashSet<u64, Hasher>>,
    hasher: Hasher,
}

/// A key was used twice in one run.
pub(crate) struct DuplicateKey;

impl TaskTable {
    /// A table; `remember`: refuse a key even after its task ended.
    pub(crate) fn new(remember: bool) -> Self {
        TaskTable {
            seen: remember.then(HashSet::default),
            ..TaskTable::default()
        }
    }
}

/// State shared by a run's supervisor, actors, merger and handles.
/// The channel control of a remote task's descendants goes through.
pub(crate) type RemoteControls =
    tokio::sync::mpsc::UnboundedSender<crate::remote::DescendantControl>;

pub(crate) struct RunShared {
    pub(crate) budget: Arc<Budget>,
    pub(crate) root: CancellationToken,
    /// Why the run's tasks were cancelled (the first reason given sticks).
    pub(crate) reason: OnceLock<CancelReason>,
    /// How the run ended (set once, by whichever path gets there first).
    pub(crate) end: OnceLock<RunEnd>,
    pub(crate) gate: Arc<watch::Sender<bool>>,
    pub(crate) gates: GateChain,
    /// The path of the task this run is nested in (empty for a root run).
    pub(crate) prefix: TaskPath,
    /// The id of the root run (the user's run id or the process's own),
    /// which every task of the tree reports to the hooks.
    pub(crate) run_id: Arc<str>,
    pub(crate) parent: Option<ParentTask>,
    pub(crate) tasks: Mutex<TaskTable>,
    /// The runs nested in this run's tasks, by task key (only tasks that
    /// nest runs have an entry).
    pub(crate) nested: Mutex<HashMap<Arc<str>, Vec<Weak<RunShared>>>>,
    /// Where control of tasks below a task run elsewhere goes (only tasks
    /// whose executor takes such control have an entry).
    pub(crate) remote: Mutex<HashMap<Arc<str>, RemoteControls>>,
    /// Whether a run was ever nested in one of this run's tasks: most runs
    /// nest nothing, and their tasks then never touch `nested`.
    pub(crate) has_nested: AtomicBool,
    /// The counts of the run's task tree (atomics, no lock).
    pub(crate) counts: Counters,
    /// A watch of the counts, fed only while someone watches (by the
    /// run's progress pump, see [`RunShared::watch_progress`]).
    pub(crate) progress: watch::Sender<Progress>,
    /// Wakes the progress pump: the counts changed while watched.
    pub(crate) pump_wake: Arc<tokio::sync::Notify>,
    /// The progress pump is running.
    pub(crate) pumping: AtomicBool,
    /// Where the pump runs: the runtime the run was started on (`None`
    /// when it was built outside one: changes are then handed to the
    /// watch by the tasks that make them).
    pub(crate) tokio: Option<tokio::runtime::Handle>,
    pub(crate) tracker: TaskTracker,
    pub(crate) inbox: mpsc::UnboundedSender<Inbox>,
    /// An `Ordered` run's mailbox, which its front task streams through
    /// (the tasks behind it stream into their own channels); `None` in the
    /// other modes.
    pub(crate) ordered_mailbox: Option<mpsc::Sender<Envelope>>,
    /// Whether `add_task` is still accepted. `add_task` holds this lock while
    /// it checks and sends, and the supervisor while it decides to end, so
    /// an accepted task is never lost.
    pub(crate) accepting: Mutex<bool>,
    /// The span the run was started in: its tasks' spans are its children.
    pub(crate) span: tracing::Span,
}

impl RunShared {
    /// Cancel the whole run for `reason` (the first reason given sticks).
    pub(crate) fn cancel(&self, reason: CancelReason) {
        let _ = self.reason.set(reason);
        self.cancel_tasks();
    }

    /// Cancel the run: its token, then every task it knows (queued or
    /// running) and so every run nested in them. A task registered
    /// meanwhile sees the token cancelled ([`RunShared::register`]).
    pub(crate) fn cancel_tasks(&self) {
        self.root.cancel();
        // Read after the token is cancelled: a run nested in one of the
        // tasks after this look finds its task cancelled (`Runtime::pair`).
        let nested = self.has_nested.load(Ordering::SeqCst);
        let mut lanes: Vec<(u64, Arc<Lane>)> = self
            .table()
            .live
            .values()
            .map(|(index, lane)| (*index, Arc::clone(lane)))
            .collect();
        // In task order, which is the order the tasks were made in: the
        // woken tasks then end in the order their memory was allocated,
        // not in the table's hash order, which measured 20-40% slower.
        lanes.sort_unstable_by_key(|(index, _)| *index);
        for (_, lane) in lanes {
            if nested {
                lane.cancel_tree();
            } else {
                // Touches the lane's first bytes only.
                lane.cancel_alone();
            }
        }
    }

    /// End the run with `end`, unless it has ended already.
    pub(crate) fn set_end(&self, end: RunEnd) {
        let _ = self.end.set(end);
    }

    /// Why a task of this run was cancelled when it has no reason of its
    /// own: the run's, or else that of the task the run is nested in.
    pub(crate) fn inherited_reason(&self) -> CancelReason {
        if let Some(reason) = self.reason.get() {
            return *reason;
        }
        match &self.parent {
            Some(p) => match p.lane.reason() {
                Some(CancelReason::Timeout) => CancelReason::Timeout,
                Some(CancelReason::Task) => CancelReason::Task,
                Some(_) | None if p.run.root.is_cancelled() => p.run.inherited_reason(),
                _ => CancelReason::Parent,
            },
            None => CancelReason::Parent,
        }
    }

    fn table(&self) -> std::sync::MutexGuard<'_, TaskTable> {
        self.tasks.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Make a task known to the run: from now on it can be addressed.
    pub(crate) fn register(&self, key: &Arc<str>, index: u64) -> Result<TaskControl, DuplicateKey> {
        let control = Lane::control();
        {
            let mut guard = self.table();
            let table = &mut *guard;
            let std::collections::hash_map::Entry::Vacant(slot) = table.live.entry(Arc::clone(key))
            else {
                return Err(DuplicateKey);
            };
            if table.seen.is_some() {
                let hash = table.hasher.hash_one(key);
                if table.seen.as_mut().is_some_and(|seen| !seen.insert(hash)) {
                    return Err(DuplicateKey);
                }
            }
            slot.insert((index, Arc::clone(&control)));
        }
        // After the insert: a cancellation of the run either finds the
        // task in the table or is seen here.
        if self.root.is_cancelled() {
            control.cancel_tree();
        }
        Ok(control)
    }

    /// Reserve a key for a task added through the handle (its index is
    /// given when the supervisor takes it).
    pub(crate) fn reserve(&self, key: &Arc<str>) -> Result<TaskControl, DuplicateKey> {
        self.register(key, u64::MAX)
    }

    /// Give a reserved task its index.
    pub(crate) fn set_index(&self, key: &str, index: u64) {
        if let Some(entry) = self.table().live.get_mut(key) {
            entry.0 = index;
        }
    }

    /// The task `lane` has ended (or never started): it leaves the table,
    /// unless its key is another task's by now.
    pub(crate) fn unregister(&self, key: &str, lane: &Lane) {
        {
            let mut table = self.table();
            if let Some((key, entry)) = table.live.remove_entry(key)
                && !std::ptr::eq(Arc::as_ptr(&entry.1), lane)
            {
                // Another task's (this one left already): put it back.
                table.live.insert(key, entry);
            }
        }
        if self.has_nested.load(Ordering::SeqCst) {
            self.nested
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(key);
        }
    }

    /// Record `run` as nested in this run's task `key`.
    pub(crate) fn add_nested(&self, key: &Arc<str>, run: &Arc<RunShared>) {
        let mut nested = self.nested.lock().unwrap_or_else(|e| e.into_inner());
        self.has_nested.store(true, Ordering::SeqCst);
        let runs = nested.entry(Arc::clone(key)).or_default();
        runs.retain(|r| r.strong_count() > 0);
        runs.push(Arc::downgrade(run));
    }

    /// The runs nested in this run's task `key` that are still alive.
    pub(crate) fn nested_in(&self, key: &str) -> Vec<Arc<RunShared>> {
        if !self.has_nested.load(Ordering::SeqCst) {
            return Vec::new();
        }
        let nested = self.nested.lock().unwrap_or_else(|e| e.into_inner());
        nested
            .get(key)
            .map(|runs| runs.iter().filter_map(Weak::upgrade).collect())
            .unwrap_or_default()
    }

    /// The control of a task of this run that has not ended.
    pub(crate) fn task(&self, key: &str) -> Option<TaskControl> {
        self.table().live.get(key).map(|(_, c)| Arc::clone(c))
    }

    /// Change the counts of this run and of every run it is nested in.
    pub(crate) fn update_progress(&self, change: Change) {
        let mut run = Some(self);
        while let Some(r) = run {
            r.counts.apply(change);
            // Pairs with the fence in `watch_progress`: either this update
            // sees the new watcher, or the watcher's first value has it.
            std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
            if r.progress.receiver_count() > 0 {
                match r.tokio {
                    // A lock-free flag when the pump is already due.
                    Some(_) => r.pump_wake.notify_one(),
                    // No runtime to run a pump on: publish now.
                    None => r.refresh_progress(),
                }
            }
            run = r.parent.as_ref().map(|p| &*p.run);
        }
    }

    /// The counts now.
    pub(crate) fn progress_now(&self) -> Progress {
        self.counts.snapshot()
    }

    /// A watch of the counts, up to date from the start.
    ///
    /// While someone watches, a pump task hands the counts to the watch:
    /// woken by a change, it publishes the counts of that moment, then
    /// yields to the runtime's other tasks before it looks again, so the
    /// changes they make meanwhile (ten thousand tasks pausing at once)
    /// are published together. Watchers are woken about once per
    /// scheduler round rather than once per change, the tasks making the
    /// changes only set a flag, and the watch always ends with the latest
    /// counts. The pump stops when its run is gone or, at the next change,
    /// when nobody watches any more.
    pub(crate) fn watch_progress(self: &Arc<Self>) -> watch::Receiver<Progress> {
        let rx = self.progress.subscribe();
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        self.refresh_progress();
        if let Some(tokio) = &self.tokio
            && !self.pumping.swap(true, Ordering::SeqCst)
        {
            tokio.spawn(pump(Arc::downgrade(self), Arc::clone(&self.pump_wake)));
        }
        rx
    }

    /// Feed the watch the counts now. Read under the watch's lock, so two
    /// refreshes never hand out counts older than the last one.
    fn refresh_progress(&self) {
        self.progress.send_if_modified(|p| {
            let now = self.counts.snapshot();
            let changed = *p != now;
            *p = now;
            changed
        });
    }

    /// Spawn a task of this run: tracked by this run and by every run it is
    /// nested in, so that `cancel().await` of any of them waits for it.
    pub(crate) fn spawn<F>(&self, fut: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        match &self.parent {
            None => {
                self.tracker.spawn(fut);
            }
            Some(parent) => {
                let mut tokens = Vec::new();
                let mut run = Some(&*parent.run);
                while let Some(r) = run {
                    tokens.push(r.tracker.token());
                    run = r.parent.as_ref().map(|p| &*p.run);
                }
                self.tracker.spawn(async move {
                    fut.await;
                    drop(tokens);
                });
            }
        }
    }
}

impl RunShared {
    /// The control of the task at `path` (relative to this run), nested or
    /// not, queued or running.
    pub(crate) fn resolve(&self, path: &[Arc<str>]) -> Option<TaskControl> {
        let (first, rest) = path.split_first()?;
        let task = self.task(first)?;
        if rest.is_empty() {
            return Some(task);
        }
        self.nested_in(first)
            .iter()
            .find_map(|run| run.resolve(rest))
    }

    /// Where control of `path` goes when a task on the way runs elsewhere
    /// and the rest of the path lies below it: that task's channel and the
    /// path below it.
    pub(crate) fn resolve_remote(&self, path: &[Arc<str>]) -> Option<(RemoteControls, TaskPath)> {
        let (first, rest) = path.split_first()?;
        if rest.is_empty() {
            return None;
        }
        if let Some(found) = self
            .nested_in(first)
            .iter()
            .find_map(|run| run.resolve_remote(rest))
        {
            return Some(found);
        }
        let remote = self.remote.lock().unwrap_or_else(|e| e.into_inner());
        let channel = remote.get(first)?.clone();
        Some((channel, rest.to_vec().into()))
    }

    /// Every task of the tree under this run that has not ended, with
    /// paths relative to this run.
    pub(crate) fn list(&self, prefix: &TaskPath, out: &mut Vec<TaskInfo>) {
        let mut tasks: Vec<(Arc<str>, u64, TaskControl)> = self
            .table()
            .live
            .iter()
            .map(|(k, (i, c))| (Arc::clone(k), *i, Arc::clone(c)))
            .collect();
        tasks.sort_by_key(|(_, i, _)| *i);
        for (key, index, control) in tasks {
            let path = prefix.child(key);
            let status = if control.is_cancelled() {
                LiveStatus::Cancelling
            } else if !control.task.is_started() {
                LiveStatus::Queued
            } else if !self.gates.is_open_with(Some(&control.task)) {
                LiveStatus::Paused
            } else {
                LiveStatus::Running
            };
            out.push(TaskInfo {
                path: path.clone(),
                index,
                status,
            });
            for child in self.nested_in(path.key().unwrap_or_default()) {
                child.list(&path, out);
            }
        }
    }
}

impl Drop for RunShared {
    fn drop(&mut self) {
        // The last counts reach the watch even if the pump has not run
        // since the last change; then the pump finds the run gone and stops.
        self.refresh_progress();
        self.pump_wake.notify_one();
    }
}

/// A run's progress pump (see [`RunShared::watch_progress`]).
async fn pump(run: Weak<RunShared>, wake: Arc<tokio::sync::Notify>) {
    loop {
        wake.notified().await;
        {
            let Some(run) = run.upgrade() else { return };
            if run.progress.receiver_count() == 0 {
                // Nobody watches: stop, unless a watcher came meanwhile
                // and found the pump still running.
                run.pumping.store(false, Ordering::SeqCst);
                if run.progress.receiver_count() == 0 || run.pumping.swap(true, Ordering::SeqCst) {
                    return;
                }
            }
            run.refresh_progress();
        }
        // The other tasks run before the next look: their changes are
        // published together.
        tokio::task::yield_now().await;
    }
}
