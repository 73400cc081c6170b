use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use super::{Checkpoint, Persister};
use crate::error::PersistError;

/// Keeps checkpoints in memory. Clones share the same store.
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use tributary_core::{Checkpoint, InMemoryPersister, Persister, State, StepStatus};
///
/// let p = InMemoryPersister::new();
/// p.save(&Checkpoint::new("a", 0, "start", StepStatus::Completed, State::new()))
///     .await?;
/// assert_eq!(p.load("a", None).await?.unwrap().action, "start");
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Default)]
pub struct InMemoryPersister {
    apps: Arc<Mutex<HashMap<String, BTreeMap<u64, Checkpoint>>>>,
    /// The highest fencing epoch written per application.
    epochs: Arc<Mutex<HashMap<String, u64>>>,
}

impl InMemoryPersister {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every checkpoint of `app_id`, in sequence order.
    pub fn history(&self, app_id: &str) -> Vec<Checkpoint> {
        self.apps
            .lock()
            .expect("persister lock poisoned")
            .get(app_id)
            .map(|steps| steps.values().cloned().collect())
            .unwrap_or_default()
    }
}

#[async_trait]
impl Persister for InMemoryPersister {
    async fn save(&self, checkpoint: &Checkpoint) -> Result<(), PersistError> {
        // Memory could hold any depth, but every backend keeps one contract:
        // what one refuses, all refuse.
        checkpoint.check_depth()?;
        self.apps
            .lock()
            .expect("persister lock poisoned")
            .entry(checkpoint.app_id.clone())
            .or_default()
            .insert(checkpoint.sequence_id, checkpoint.clone());
        Ok(())
    }

    async fn load(
        &self,
        app_id: &str,
        sequence_id: Option<u64>,
    ) -> Result<Option<Checkpoint>, PersistError> {
        let apps = self.apps.lock().expect("persister lock poisoned");
        let Some(steps) = apps.get(app_id) else {
            return Ok(None);
        };
        Ok(match sequence_id {
            Some(seq) => steps.get(&seq).cloned(),
            None => steps.values().next_back().cloned(),
        })
    }

    fn supports_fencing(&self) -> bool {
        true
    }

    async fn raise_fence(&self, app_id: &str, epoch: u64) -> Result<u64, PersistError> {
        let mut epochs = self.epochs.lock().expect("persister lock poisoned");
        let current = epochs.entry(app_id.to_owned()).or_insert(epoch);
        *current = (*current).max(epoch);
        Ok(*current)
    }

    async fn save_fenced(&self, checkpoint: &Checkpoint, epoch: u64) -> Result<(), PersistError> {
        checkpoint.check_depth()?;
        // Held across the check and the write: they are one step.
        let mut epochs = self.epochs.lock().expect("persister lock poisoned");
        let current = epochs.entry(checkpoint.app_id.clone()).or_insert(epoch);
        if epoch < *current {
            return Err(PersistError::Fenced {
                app_id: checkpoint.app_id.clone(),
                sequence_id: checkpoint.sequence_id,
                epoch,
                current: *current,
            });
        }
        *current = epoch;
        self.apps
            .lock()
            .expect("persister lock poisoned")
            .entry(checkpoint.app_id.clone())
            .or_default()
            .insert(checkpoint.sequence_id, checkpoint.clone());
        Ok(())
    }

    async fn list_app_ids(&self, partition_key: Option<&str>) -> Result<Vec<String>, PersistError> {
        let apps = self.apps.lock().expect("persister lock poisoned");
        let mut ids: Vec<String> = apps
            .iter()
            .filter(|(_, steps)| {
                partition_key.is_none()
                    || steps
                        .values()
                        .next_back()
                        .is_some_and(|c| c.partition_key.as_deref() == partition_key)
            })
            .map(|(id, _)| id.clone())
            .collect();
        ids.sort();
        Ok(ids)
    }
}
