//! The data plane: connectors store opaque bytes under keys.
//!
//! A [`Connector`] is a byte store (memory, a local directory, Redis). It
//! hands out the [`Key`] of every object it stores, and describes itself with
//! a [`ConnectorDescriptor`] so that a proxy sent to another process can name
//! where its object lives. The receiving side never constructs a connector
//! from a description on its own: it looks the description up in a
//! [`ConnectorRegistry`] that lists the connector instances and kinds this
//! program trusts.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::error::{ConnectorError, ResolveError};

pub(crate) mod file;
pub(crate) mod memory;
#[cfg(feature = "redis")]
pub(crate) mod redis;

/// The key of one stored object, unique within its connector.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Key(String);

impl Key {
    /// A key from its string form.
    pub fn new(key: impl Into<String>) -> Self {
        Self(key.into())
    }

    /// A fresh random key.
    pub fn random() -> Self {
        Self(uuid::Uuid::new_v4().simple().to_string())
    }

    /// The key as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where objects live: a connector's kind plus the configuration another
/// process needs to reach the same objects.
///
/// Two descriptors are equal when kind and config are equal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectorDescriptor {
    /// The connector kind (`"memory"`, `"file"`, `"redis"`).
    pub kind: String,
    /// Kind-specific configuration (for example the directory or the URL).
    pub config: serde_json::Value,
}

impl ConnectorDescriptor {
    /// A descriptor of `kind` with `config`.
    pub fn new(kind: impl Into<String>, config: serde_json::Value) -> Self {
        Self {
            kind: kind.into(),
            config,
        }
    }

    // serde_json's maps are sorted, so this string is canonical.
    fn identity(&self) -> String {
        format!("{}:{}", self.kind, self.config)
    }
}

/// A byte store: the data plane of a proxy stream.
///
/// Implementations must make a stored object visible to `get` only once it
/// is complete, and must treat evicting a missing key as success.
#[async_trait]
pub trait Connector: Send + Sync + fmt::Debug + 'static {
    /// How another process reaches the same objects.
    fn descriptor(&self) -> ConnectorDescriptor;

    /// Stores `data` and returns its new key.
    ///
    /// # Errors
    ///
    /// When the backend fails.
    async fn put(&self, data: Bytes) -> Result<Key, ConnectorError>;

    /// Stores several objects, returning their keys in order.
    ///
    /// All or nothing: when one object cannot be stored, those already
    /// stored by this call are evicted again before the error is returned
    /// (the default implementation does so; overrides must too).
    ///
    /// # Errors
    ///
    /// When the backend fails.
    async fn put_batch(&self, data: Vec<Bytes>) -> Result<Vec<Key>, ConnectorError> {
        let mut keys = Vec::with_capacity(data.len());
        for d in data {
            match self.put(d).await {
                Ok(key) => keys.push(key),
                Err(e) => {
                    for key in &keys {
                        if let Err(evict) = self.evict(key).await {
                            tracing::warn!(%key, error = %evict, "cannot evict an object of a failed batch");
                        }
                    }
                    return Err(e);
                }
            }
        }
        Ok(keys)
    }

    /// The object under `key`, or `None` when there is none.
    ///
    /// # Errors
    ///
    /// When the backend fails.
    async fn get(&self, key: &Key) -> Result<Option<Bytes>, ConnectorError>;

    /// Several objects, in the order of `keys`.
    ///
    /// # Errors
    ///
    /// When the backend fails.
    async fn get_batch(&self, keys: &[Key]) -> Result<Vec<Option<Bytes>>, ConnectorError> {
        let mut out = Vec::with_capacity(keys.len());
        for k in keys {
            out.push(self.get(k).await?);
        }
        Ok(out)
    }

    /// Whether an object is stored under `key`.
    ///
    /// # Errors
    ///
    /// When the backend fails.
    async fn exists(&self, key: &Key) -> Result<bool, ConnectorError>;

    /// Removes the object under `key`. A missing key is not an error.
    ///
    /// # Errors
    ///
    /// When the backend fails.
    async fn evict(&self, key: &Key) -> Result<(), ConnectorError>;
}

type Factory =
    Arc<dyn Fn(&serde_json::Value) -> Result<Arc<dyn Connector>, ConnectorError> + Send + Sync>;

/// The connectors a program trusts to resolve proxies with.
///
/// A proxy or an event names its connector by [`ConnectorDescriptor`]; the
/// registry maps that description to a connector, and refuses a description
/// it was not told about with [`ResolveError::UntrustedConnector`]. An event
/// can therefore never make a consumer construct something it did not allow.
///
/// Two ways to trust:
/// - [`with_connector`](Self::with_connector): exactly this connector (its
///   descriptor must match exactly). The strictest choice and the only one
///   for memory connectors, which cannot be reached from another process.
/// - [`with_kind`](Self::with_kind): any configuration of a kind, built by a
///   factory the program supplies (for example
///   [`FileConnector::kind_under`](crate::FileConnector::kind_under), which
///   only accepts directories below a root). Built connectors are cached.
///
/// # Examples
///
/// ```
/// use tributary_stream::{ConnectorRegistry, MemoryConnector};
///
/// let memory = MemoryConnector::new();
/// let registry = ConnectorRegistry::new().with_connector(memory.clone());
/// assert!(registry.is_trusted(&tributary_stream::Connector::descriptor(&memory)));
/// ```
#[derive(Clone, Default)]
pub struct ConnectorRegistry {
    kinds: HashMap<String, Factory>,
    instances: Arc<Mutex<HashMap<String, Arc<dyn Connector>>>>,
}

impl fmt::Debug for ConnectorRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let instances = self.instances.lock().map(|m| m.len()).unwrap_or(0);
        f.debug_struct("ConnectorRegistry")
            .field("kinds", &self.kinds.keys().collect::<Vec<_>>())
            .field("instances", &instances)
            .finish()
    }
}

impl ConnectorRegistry {
    /// An empty registry that trusts nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Trusts exactly this connector.
    pub fn with_connector(self, connector: impl Connector) -> Self {
        self.with_shared(Arc::new(connector))
    }

    /// Trusts exactly this shared connector.
    ///
    /// The registry this returns is a new one: clones of `self` made before
    /// do not trust `connector`.
    pub fn with_shared(mut self, connector: Arc<dyn Connector>) -> Self {
        let id = connector.descriptor().identity();
        let mut instances = self
            .instances
            .lock()
            .expect("registry lock poisoned")
            .clone();
        instances.insert(id, connector);
        self.instances = Arc::new(Mutex::new(instances));
        self
    }

    /// Trusts every configuration of `kind` that `factory` accepts.
    pub fn with_kind<F>(mut self, kind: impl Into<String>, factory: F) -> Self
    where
        F: Fn(&serde_json::Value) -> Result<Arc<dyn Connector>, ConnectorError>
            + Send
            + Sync
            + 'static,
    {
        self.kinds.insert(kind.into(), Arc::new(factory));
        self
    }

    /// Whether `descriptor` names a trusted connector instance or kind.
    pub fn is_trusted(&self, descriptor: &ConnectorDescriptor) -> bool {
        self.kinds.contains_key(&descriptor.kind)
            || self
                .instances
                .lock()
                .expect("registry lock poisoned")
                .contains_key(&descriptor.identity())
    }

    /// The connector `descriptor` names, for the object `key`.
    ///
    /// # Errors
    ///
    /// [`ResolveError::UntrustedConnector`] when neither the instance nor its
    /// kind is registered; [`ResolveError::Connector`] when the kind's
    /// factory refuses the configuration.
    pub fn resolve(
        &self,
        descriptor: &ConnectorDescriptor,
        key: &Key,
    ) -> Result<Arc<dyn Connector>, ResolveError> {
        let id = descriptor.identity();
        let mut instances = self.instances.lock().expect("registry lock poisoned");
        if let Some(c) = instances.get(&id) {
            return Ok(c.clone());
        }
        let Some(factory) = self.kinds.get(&descriptor.kind) else {
            return Err(ResolveError::UntrustedConnector {
                key: key.clone(),
                kind: descriptor.kind.clone(),
            });
        };
        let connector = factory(&descriptor.config).map_err(|source| ResolveError::Connector {
            key: key.clone(),
            source,
        })?;
        instances.insert(id, connector.clone());
        Ok(connector)
    }
}
