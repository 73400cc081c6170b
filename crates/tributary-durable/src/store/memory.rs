//! [`MemoryJournal`]: a journal store in memory.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};

use async_trait::async_trait;
use serde_json::Value;

use super::{JournalEntry, JournalStore, WorkflowRecord, WorkflowStatus};
use crate::error::JournalError;

/// A [`JournalStore`] in memory: nothing survives the process. For tests
/// and short-lived runs; clones do not share (wrap it in an `Arc`).
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use serde_json::json;
/// use tributary_durable::{EntryKind, JournalEntry, JournalStore, MemoryJournal, Outcome, StepKey};
///
/// let store = MemoryJournal::new();
/// let entry = |value| JournalEntry {
///     app_id: "job-1".into(),
///     sequence_id: 0,
///     position: 0,
///     step: StepKey::new("fetch", 0),
///     kind: EntryKind::Step,
///     outcome: Outcome::Completed(value),
///     execution: 1,
/// };
/// store.append(entry(json!(1))).await?;
/// // The first write at a position wins.
/// let stored = store.append(entry(json!(2))).await?;
/// assert_eq!(stored.outcome, Outcome::Completed(json!(1)));
/// assert_eq!(store.load("job-1", 0).await?.len(), 1);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Default)]
pub struct MemoryJournal {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    entries: BTreeMap<(String, u64, u32), JournalEntry>,
    executions: BTreeMap<(String, u64), u32>,
    workflows: BTreeMap<String, WorkflowRecord>,
    events: BTreeMap<(String, String), Vec<Value>>,
}

impl MemoryJournal {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// A store holding `entries` (as if each had been appended in order):
    /// to rebuild a journal from recorded writes.
    pub fn from_entries(entries: impl IntoIterator<Item = JournalEntry>) -> Self {
        let store = Self::new();
        {
            let mut inner = store.lock();
            for e in entries {
                inner
                    .entries
                    .entry((e.app_id.clone(), e.sequence_id, e.position))
                    .or_insert(e);
            }
        }
        store
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[async_trait]
impl JournalStore for MemoryJournal {
    async fn load(
        &self,
        app_id: &str,
        sequence_id: u64,
    ) -> Result<Vec<JournalEntry>, JournalError> {
        let inner = self.lock();
        let from = (app_id.to_owned(), sequence_id, 0);
        let to = (app_id.to_owned(), sequence_id, u32::MAX);
        Ok(inner
            .entries
            .range(from..=to)
            .map(|(_, e)| e.clone())
            .collect())
    }

    async fn append(&self, entry: JournalEntry) -> Result<JournalEntry, JournalError> {
        let mut inner = self.lock();
        let key = (entry.app_id.clone(), entry.sequence_id, entry.position);
        Ok(inner.entries.entry(key).or_insert(entry).clone())
    }

    async fn begin_execution(&self, app_id: &str, sequence_id: u64) -> Result<u32, JournalError> {
        let mut inner = self.lock();
        let n = inner
            .executions
            .entry((app_id.to_owned(), sequence_id))
            .or_insert(0);
        *n += 1;
        Ok(*n)
    }

    async fn latest_execution(&self, app_id: &str, sequence_id: u64) -> Result<u32, JournalError> {
        Ok(self
            .lock()
            .executions
            .get(&(app_id.to_owned(), sequence_id))
            .copied()
            .unwrap_or(0))
    }

    async fn create_workflow(
        &self,
        record: WorkflowRecord,
    ) -> Result<(WorkflowRecord, bool), JournalError> {
        let mut inner = self.lock();
        match inner.workflows.get(&record.workflow_id) {
            Some(existing) => Ok((existing.clone(), false)),
            None => {
                inner
                    .workflows
                    .insert(record.workflow_id.clone(), record.clone());
                Ok((record, true))
            }
        }
    }

    async fn put_workflow(&self, record: WorkflowRecord) -> Result<(), JournalError> {
        self.lock()
            .workflows
            .insert(record.workflow_id.clone(), record);
        Ok(())
    }

    async fn workflow(&self, workflow_id: &str) -> Result<Option<WorkflowRecord>, JournalError> {
        Ok(self.lock().workflows.get(workflow_id).cloned())
    }

    async fn unfinished_workflows(&self) -> Result<Vec<WorkflowRecord>, JournalError> {
        Ok(self
            .lock()
            .workflows
            .values()
            .filter(|r| r.status == WorkflowStatus::Running)
            .cloned()
            .collect())
    }

    async fn send_event(
        &self,
        target: &str,
        name: &str,
        value: Value,
    ) -> Result<u64, JournalError> {
        let mut inner = self.lock();
        let queue = inner
            .events
            .entry((target.to_owned(), name.to_owned()))
            .or_default();
        queue.push(value);
        Ok(queue.len() as u64 - 1)
    }

    async fn event(
        &self,
        target: &str,
        name: &str,
        index: u64,
    ) -> Result<Option<Value>, JournalError> {
        let inner = self.lock();
        Ok(inner
            .events
            .get(&(target.to_owned(), name.to_owned()))
            .and_then(|q| q.get(usize::try_from(index).ok()?))
            .cloned())
    }
}
