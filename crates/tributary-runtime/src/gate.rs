//! Pause gates: a run's, a task's, and those of the runs a task is nested
//! in, checked together between steps.

use std::sync::Arc;

use tokio::sync::watch;

use crate::mailbox::lane::Lane;
use crate::task_control::TaskShared;

/// A chain of pause gates (a run's, its task's, and those of the runs it is
/// nested in): open when none is paused.
///
/// A task's own gate lives in its lane, and the lane's chain is its run's
/// alone (a chain naming the lane would make the lane hold itself): the
/// lane passes its own gate to the `*_with` methods.
#[derive(Clone, Default)]
pub(crate) struct GateChain {
    gates: Arc<[Gate]>,
    /// A task's own gate, kept apart so that a task's chain shares its
    /// run's instead of copying it.
    task: Option<Arc<Lane>>,
}

/// One pause gate of a chain.
#[derive(Clone)]
pub(crate) enum Gate {
    /// A run's gate.
    Run(Arc<watch::Sender<bool>>),
    /// A task's gate (in its lane).
    Task(Arc<Lane>),
}

impl Gate {
    fn sender(&self) -> Option<&watch::Sender<bool>> {
        match self {
            Gate::Run(gate) => Some(gate),
            Gate::Task(lane) => lane.task.pause_gate(),
        }
    }
}

impl GateChain {
    /// The task gates of the chain, then `own`.
    fn tasks<'a>(&'a self, own: Option<&'a TaskShared>) -> impl Iterator<Item = &'a TaskShared> {
        self.gates
            .iter()
            .filter_map(|g| match g {
                Gate::Task(lane) => Some(&lane.task),
                Gate::Run(_) => None,
            })
            .chain(self.task.as_deref().map(|lane| &lane.task))
            .chain(own)
    }

    /// The gates of the chain that exist now, then `own`'s if it does (a
    /// task's gate is made on its first pause).
    fn senders<'a>(
        &'a self,
        own: Option<&'a TaskShared>,
    ) -> impl Iterator<Item = &'a watch::Sender<bool>> {
        self.gates
            .iter()
            .filter_map(Gate::sender)
            .chain(self.task.as_deref().and_then(|lane| lane.task.pause_gate()))
            .chain(own.and_then(TaskShared::pause_gate))
    }

    /// Make every task gate of the chain (and `own`) now, so that a wait
    /// begun now sees a later first pause.
    pub(crate) fn materialize_with(&self, own: Option<&TaskShared>) {
        for task in self.tasks(own) {
            task.pause_gate_or_init();
        }
    }

    /// This chain and then `gate`.
    pub(crate) fn with(&self, gate: Gate) -> GateChain {
        match (gate, &self.task) {
            (Gate::Task(task), None) => GateChain {
                gates: Arc::clone(&self.gates),
                task: Some(task),
            },
            (gate, _) => {
                let mut gates: Vec<_> = self.gates.iter().cloned().collect();
                gates.extend(self.task.clone().map(Gate::Task));
                gates.push(gate);
                GateChain {
                    gates: gates.into(),
                    task: None,
                }
            }
        }
    }

    pub(crate) fn is_open(&self) -> bool {
        self.is_open_with(None)
    }

    /// Whether this chain and `own` are all open.
    pub(crate) fn is_open_with(&self, own: Option<&TaskShared>) -> bool {
        self.senders(own).all(|g| !*g.borrow())
    }

    /// Wait until some gate of the chain (or `own`) is closed.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only waits.
    pub(crate) async fn wait_closed_with(&self, own: Option<&TaskShared>) {
        loop {
            // Subscribe first, then look: a change after the look wakes us.
            let mut receivers: Vec<_> = self.senders(own).map(watch::Sender::subscribe).collect();
            if !self.is_open_with(own) {
                return;
            }
            if receivers.is_empty() {
                return std::future::pending().await;
            }
            let changes = receivers.iter_mut().map(|rx| {
                Box::pin(async move {
                    // A dropped gate never closes again.
                    if rx.changed().await.is_err() {
                        std::future::pending::<()>().await;
                    }
                })
            });
            futures_util::future::select_all(changes).await;
        }
    }

    /// Wait until every gate is open at once.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only waits.
    pub(crate) async fn wait_open(&self) {
        self.wait_open_with(None).await;
    }

    /// Wait until every gate of the chain and `own` are open at once.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only waits.
    pub(crate) async fn wait_open_with(&self, own: Option<&TaskShared>) {
        loop {
            let mut waited = false;
            for gate in self.senders(own) {
                if *gate.borrow() {
                    waited = true;
                    let mut rx = gate.subscribe();
                    // A dropped gate counts as open.
                    let _ = rx.wait_for(|paused| !*paused).await;
                }
            }
            if !waited {
                return;
            }
        }
    }
}
