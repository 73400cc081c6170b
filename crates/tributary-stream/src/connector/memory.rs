//! An in-process connector.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;

use super::{Connector, ConnectorDescriptor, Key};
use crate::error::ConnectorError;

/// Objects in this process's memory.
///
/// Clones share the same objects. A memory connector cannot be reached from
/// another process; its descriptor names a random instance id, so a registry
/// only resolves it when that very instance was registered with
/// [`ConnectorRegistry::with_connector`](crate::ConnectorRegistry::with_connector).
#[derive(Debug, Clone)]
pub struct MemoryConnector {
    id: String,
    objects: Arc<Mutex<HashMap<Key, Bytes>>>,
}

impl Default for MemoryConnector {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryConnector {
    /// The kind name in descriptors.
    pub const KIND: &'static str = "memory";

    /// An empty memory connector.
    pub fn new() -> Self {
        Self {
            id: uuid::Uuid::new_v4().simple().to_string(),
            objects: Arc::default(),
        }
    }

    /// How many objects are stored.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no object is stored.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Bytes>> {
        self.objects.lock().expect("memory connector lock poisoned")
    }
}

#[async_trait]
impl Connector for MemoryConnector {
    fn descriptor(&self) -> ConnectorDescriptor {
        ConnectorDescriptor::new(Self::KIND, serde_json::json!({ "id": self.id }))
    }

    async fn put(&self, data: Bytes) -> Result<Key, ConnectorError> {
        let key = Key::random();
        self.lock().insert(key.clone(), data);
        Ok(key)
    }

    async fn get(&self, key: &Key) -> Result<Option<Bytes>, ConnectorError> {
        Ok(self.lock().get(key).cloned())
    }

    async fn exists(&self, key: &Key) -> Result<bool, ConnectorError> {
        Ok(self.lock().contains_key(key))
    }

    async fn evict(&self, key: &Key) -> Result<(), ConnectorError> {
        self.lock().remove(key);
        Ok(())
    }
}
