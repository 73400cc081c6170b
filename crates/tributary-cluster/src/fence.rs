//! Checkpoint writes under a claim's epoch.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use async_trait::async_trait;
use tributary_core::{Checkpoint, PersistError, Persister};

/// A persister that writes every checkpoint fenced with one claim's epoch,
/// and remembers whether a write was refused because a newer claim exists.
pub(crate) struct FencedPersister {
    inner: Arc<dyn Persister>,
    epoch: u64,
    seen: Arc<Seen>,
}

/// What a claim's writes came to.
#[derive(Default)]
pub(crate) struct Seen {
    /// A write was refused: a newer claim owns the application.
    pub(crate) fenced: AtomicBool,
    /// Checkpoints saved under this claim.
    pub(crate) saves: AtomicU64,
}

impl FencedPersister {
    pub(crate) fn new(inner: Arc<dyn Persister>, epoch: u64) -> (Self, Arc<Seen>) {
        let seen = Arc::new(Seen::default());
        (
            FencedPersister {
                inner,
                epoch,
                seen: Arc::clone(&seen),
            },
            seen,
        )
    }

    fn note(&self, saved: &Result<(), PersistError>) {
        match saved {
            Ok(()) => {
                self.seen.saves.fetch_add(1, Ordering::SeqCst);
            }
            Err(PersistError::Fenced { .. }) => self.seen.fenced.store(true, Ordering::SeqCst),
            Err(_) => {}
        }
    }
}

#[async_trait]
impl Persister for FencedPersister {
    async fn save(&self, checkpoint: &Checkpoint) -> Result<(), PersistError> {
        let saved = self.inner.save_fenced(checkpoint, self.epoch).await;
        self.note(&saved);
        saved
    }

    async fn load(
        &self,
        app_id: &str,
        sequence_id: Option<u64>,
    ) -> Result<Option<Checkpoint>, PersistError> {
        self.inner.load(app_id, sequence_id).await
    }

    async fn list_app_ids(&self, partition_key: Option<&str>) -> Result<Vec<String>, PersistError> {
        self.inner.list_app_ids(partition_key).await
    }

    fn supports_fencing(&self) -> bool {
        true
    }

    async fn raise_fence(&self, app_id: &str, epoch: u64) -> Result<u64, PersistError> {
        self.inner.raise_fence(app_id, epoch.max(self.epoch)).await
    }

    async fn save_fenced(&self, checkpoint: &Checkpoint, epoch: u64) -> Result<(), PersistError> {
        let saved = self
            .inner
            .save_fenced(checkpoint, epoch.max(self.epoch))
            .await;
        self.note(&saved);
        saved
    }
}
