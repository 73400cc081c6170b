//! The supervisor: pulls tasks lazily, applies the limits, spawns one actor
//! per task.

use std::collections::VecDeque;
use std::sync::Arc;

use tokio::sync::{Semaphore, mpsc};
use tracing::Instrument;

use crate::actor::Actor;
use crate::budget::{TaskSlot, acquire};
use crate::config::{MergeMode, RunConfig};
use crate::error::TaskError;
use crate::ids::ChildIds;
use crate::item::{ItemKind, StreamItem};
use crate::mailbox::{Ctl, Envelope, Inbox};
use crate::progress::Change;
use crate::shared::RunShared;
use crate::source::TaskSource;
use crate::spec::TaskSpec;
use crate::task_control::TaskControl;

pub(crate) struct Supervisor {
    shared: Arc<RunShared>,
    config: Arc<RunConfig>,
    source: TaskSource,
    inbox: mpsc::UnboundedReceiver<Inbox>,
    mail: mpsc::Sender<Envelope>,
    ctl: mpsc::UnboundedSender<Ctl>,
    ids: ChildIds,
    run_limit: Option<Arc<Semaphore>>,
    queue: VecDeque<(TaskSpec, TaskControl)>,
    source_done: bool,
    /// Tasks the source said it holds and has not yielded yet (already
    /// counted in `total`).
    announced: u64,
    live: u64,
    next_index: u64,
    cohort: u64,
}

/// A task taken from the source, with its position in task order and its
/// control (`None`: its key was used before, and it fails).
struct Pulled {
    index: u64,
    spec: TaskSpec,
    control: Option<TaskControl>,
}

enum Wait {
    Ready,
    Cancelled,
}

impl Supervisor {
    pub(crate) fn new(
        shared: Arc<RunShared>,
        config: RunConfig,
        source: TaskSource,
        inbox: mpsc::UnboundedReceiver<Inbox>,
        mail: mpsc::Sender<Envelope>,
        ctl: mpsc::UnboundedSender<Ctl>,
        run_id: String,
    ) -> Self {
        Supervisor {
            run_limit: config.max_concurrency.map(|n| Arc::new(Semaphore::new(n))),
            shared,
            config: Arc::new(config),
            source,
            inbox,
            mail,
            ctl,
            ids: ChildIds::new(&run_id, 0, "task"),
            queue: VecDeque::new(),
            source_done: false,
            announced: 0,
            live: 0,
            next_index: 0,
            cohort: 0,
        }
    }

    fn per_task_channels(&self) -> bool {
        matches!(self.config.merge_mode, MergeMode::Zip | MergeMode::Ordered)
    }

    /// How many tasks start together: a zip cohort, otherwise one.
    fn batch_size(&self) -> usize {
        if self.config.merge_mode != MergeMode::Zip {
            return 1;
        }
        let run = self.config.max_concurrency.unwrap_or(usize::MAX);
        let budget = self.shared.budget.max_concurrency().unwrap_or(usize::MAX);
        run.min(budget)
    }

    fn handle(&mut self, msg: Inbox) {
        match msg {
            Inbox::Add(spec, control) => self.queue.push_back((spec, control)),
            Inbox::Exited => self.live -= 1,
        }
    }

    fn drain_inbox(&mut self) {
        while let Ok(msg) = self.inbox.try_recv() {
            self.handle(msg);
        }
    }

    /// A task taken from the source: it gets its index and its control.
    fn pulled(&mut self, spec: TaskSpec) -> Pulled {
        let index = self.next_index;
        self.next_index += 1;
        if self.announced > 0 {
            self.announced -= 1;
        } else {
            self.shared.update_progress(Change {
                total: 1,
                ..Change::default()
            });
        }
        let control = self.shared.register(&spec.key, index).ok();
        Pulled {
            index,
            spec,
            control,
        }
    }

    /// A task added through the handle: its key is already reserved.
    fn pulled_added(&mut self, spec: TaskSpec, control: TaskControl) -> Pulled {
        let index = self.next_index;
        self.next_index += 1;
        self.shared.update_progress(Change {
            total: 1,
            ..Change::default()
        });
        self.shared.set_index(&spec.key, index);
        Pulled {
            index,
            spec,
            control: Some(control),
        }
    }

    /// The source's end: tasks it announced and never yielded do not count.
    fn source_ended(&mut self) {
        self.source_done = true;
        let missing = std::mem::take(&mut self.announced);
        if missing > 0 {
            self.shared.update_progress(Change {
                total: -i64::try_from(missing).unwrap_or(i64::MAX),
                ..Change::default()
            });
        }
    }

    pub(crate) async fn run(mut self) {
        if let Some(n) = self.source.size_hint() {
            self.announced = n;
            self.shared.update_progress(Change {
                total: i64::try_from(n).unwrap_or(i64::MAX),
                ..Change::default()
            });
        }
        let mut pending: Vec<Pulled> = Vec::new();
        let cancelled = loop {
            self.drain_inbox();
            if self.shared.root.is_cancelled() {
                break true;
            }
            match self.next_batch(self.batch_size(), &mut pending).await {
                Wait::Cancelled => break true,
                Wait::Ready => {}
            }
            if pending.is_empty() {
                if self.source_done && self.queue.is_empty() {
                    if self.live == 0 {
                        if self.close_if_idle() {
                            break false;
                        }
                        continue;
                    }
                    tokio::select! {
                        biased;
                        _ = self.shared.root.cancelled() => break true,
                        msg = self.inbox.recv() => if let Some(msg) = msg { self.handle(msg) },
                    }
                }
                continue;
            }
            if let Wait::Cancelled = self.start(&mut pending).await {
                break true;
            }
        };
        *self
            .shared
            .accepting
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = false;
        if cancelled {
            // Tasks taken but not started, and those added but not taken,
            // end as cancelled so that every known task reports.
            let queued: Vec<(TaskSpec, TaskControl)> = self.queue.drain(..).collect();
            for (spec, control) in queued {
                let p = self.pulled_added(spec, control);
                pending.push(p);
            }
            let reason = TaskError::cancelled(self.shared.inherited_reason());
            for p in pending.drain(..) {
                let error = match &p.control {
                    Some(c) => c
                        .reason()
                        .map_or_else(|| reason.clone(), TaskError::cancelled),
                    None => reason.clone(),
                };
                self.report(p, ItemKind::Cancelled, error);
            }
            self.source_ended();
        }
        let _ = self.ctl.send(Ctl::Closed {
            total: self.next_index,
        });
    }

    /// Stop accepting `add_task` if nothing is left to do, atomically with
    /// respect to `add_task`: a task added just before is picked up instead.
    fn close_if_idle(&mut self) -> bool {
        let shared = Arc::clone(&self.shared);
        let mut accepting = shared.accepting.lock().unwrap_or_else(|e| e.into_inner());
        self.drain_inbox();
        if self.queue.is_empty() && self.live == 0 {
            *accepting = false;
            true
        } else {
            false
        }
    }

    /// Take up to `n` tasks: added ones first, then from the source.
    async fn next_batch(&mut self, n: usize, batch: &mut Vec<Pulled>) -> Wait {
        while batch.len() < n {
            if let Some((spec, control)) = self.queue.pop_front() {
                let p = self.pulled_added(spec, control);
                batch.push(p);
                continue;
            }
            if self.source_done {
                break;
            }
            let next = match self.source.try_next() {
                Ok(next) => next,
                Err(()) => {
                    // An async source: wait for it, but keep serving the inbox
                    // and a cancellation.
                    tokio::select! {
                        biased;
                        _ = self.shared.root.cancelled() => return Wait::Cancelled,
                        msg = self.inbox.recv() => {
                            if let Some(msg) = msg { self.handle(msg) }
                            // Start what we have (a zip cohort waits for more).
                            if !batch.is_empty() && n == 1 { break }
                            continue;
                        }
                        next = self.source.next() => next,
                    }
                }
            };
            match next {
                Some(spec) => {
                    let p = self.pulled(spec);
                    batch.push(p);
                }
                None => self.source_ended(),
            }
        }
        Wait::Ready
    }

    /// Start the tasks of `batch` (one, or a zip cohort) once the gates are
    /// open and they all hold a slot.
    async fn start(&mut self, batch: &mut Vec<Pulled>) -> Wait {
        if !self.shared.gates.is_open() {
            tokio::select! {
                biased;
                _ = self.shared.root.cancelled() => return Wait::Cancelled,
                _ = self.shared.gates.wait_open() => {}
            }
        }
        let n = batch.len();
        // The run's token is lent, not cloned: a clone takes its lock twice.
        let root = &self.shared.root;
        let Ok(run_permits) = acquire(root, self.run_limit.as_ref(), n).await else {
            return Wait::Cancelled;
        };
        let Ok(budget_permits) = acquire(root, self.shared.budget.permits(), n).await else {
            return Wait::Cancelled;
        };
        let cohort = self.cohort;
        for ((p, rp), bp) in batch.drain(..).zip(run_permits).zip(budget_permits) {
            if !self.shared.budget.is_unpaced() {
                tokio::select! {
                    biased;
                    _ = self.shared.root.cancelled() => {
                        let reason = TaskError::cancelled(self.shared.inherited_reason());
                        self.report(p, ItemKind::Cancelled, reason);
                        continue;
                    }
                    _ = self.shared.budget.pace() => {}
                }
            }
            let slot = TaskSlot::new(self.shared.budget.permits().cloned(), bp, rp);
            self.spawn(p, slot, cohort);
        }
        // Spawning never waits while slots are free, so without this the
        // supervisor would start thousands of tasks before the first one
        // ran: give the worker to the tasks now and then (tokio's
        // cooperative budget, one unit per start).
        tokio::task::consume_budget().await;
        if self.config.merge_mode == MergeMode::Zip {
            let _ = self.ctl.send(Ctl::Seal { cohort });
            self.cohort += 1;
        }
        Wait::Ready
    }

    fn app_id(&self, spec: &TaskSpec) -> Arc<str> {
        match &spec.app_id {
            Some(id) => Arc::from(&**id),
            None => self.ids.id_arc(&spec.key),
        }
    }

    fn spawn(&mut self, mut p: Pulled, slot: TaskSlot, cohort: u64) {
        let Some(control) = p.control.take() else {
            let error = TaskError::duplicate_key(&p.spec.key);
            drop(slot);
            self.report_in(p, ItemKind::Failed, error, cohort);
            return;
        };
        if control.is_cancelled() {
            // Cancelled while queued: it never starts.
            let reason = control
                .reason()
                .unwrap_or_else(|| self.shared.inherited_reason());
            drop(slot);
            self.shared.unregister(&p.spec.key, &control);
            self.report_in(p, ItemKind::Cancelled, TaskError::cancelled(reason), cohort);
            return;
        }
        let out = if self.per_task_channels() {
            let (tx, rx) = mpsc::channel(self.config.task_channel_capacity);
            let _ = self.ctl.send(Ctl::Register {
                index: p.index,
                cohort,
                rx: Some(rx),
            });
            tx
        } else {
            self.mail.clone()
        };
        self.live += 1;
        let app_id = self.app_id(&p.spec);
        // Every task is a span (cheap when no subscriber listens), a child
        // of the span the run was started in (for a nested run, the parent
        // task's step); its application's run and steps nest inside it.
        let span = tracing::info_span!(
            parent: &self.shared.span,
            "tributary.task",
            task = %p.spec.key,
            index = p.index,
            app_id = %app_id,
            outcome = tracing::field::Empty,
        );
        let actor = Actor::new(
            Arc::clone(&self.shared),
            Arc::clone(&self.config),
            p.index,
            p.spec,
            app_id,
            control,
            slot,
            out,
            self.ctl.clone(),
        );
        let run = actor.run().instrument(span);
        self.shared.spawn(run);
    }

    fn report(&mut self, p: Pulled, kind: ItemKind, error: TaskError) {
        let cohort = self.cohort;
        self.report_in(p, kind, error, cohort);
    }

    /// Report a task that never got an actor.
    fn report_in(&mut self, p: Pulled, kind: ItemKind, error: TaskError, cohort: u64) {
        if self.per_task_channels() {
            let _ = self.ctl.send(Ctl::Register {
                index: p.index,
                cohort,
                rx: None,
            });
        }
        let app_id = self.app_id(&p.spec);
        if let Some(control) = &p.control {
            self.shared.unregister(&p.spec.key, control);
        }
        match kind {
            ItemKind::Failed => {
                tracing::warn!(parent: &self.shared.span, task = %p.spec.key, error = %error, "task failed before it started");
            }
            _ => {
                tracing::debug!(parent: &self.shared.span, task = %p.spec.key, reason = %error, "task cancelled before it started");
            }
        }
        self.shared.update_progress(match kind {
            ItemKind::Failed => Change {
                failed: 1,
                ..Change::default()
            },
            _ => Change {
                cancelled: 1,
                ..Change::default()
            },
        });
        let path = self.shared.prefix.child(Arc::clone(&p.spec.key));
        let _ = self.ctl.send(Ctl::Terminal(Envelope {
            item: StreamItem {
                task_key: p.spec.key,
                path,
                task_index: p.index,
                app_id,
                action: None,
                seq: 0,
                kind,
                result: None,
                state_update: None,
                error: Some(error),
            },
            index: p.index,
            seq: 0,
            terminal: true,
            slot: None,
        }));
    }
}
