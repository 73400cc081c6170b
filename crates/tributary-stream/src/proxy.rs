//! Lazy references to stored objects.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use tokio::sync::OnceCell;

use crate::codec::Codec;
use crate::connector::{Connector, ConnectorDescriptor, ConnectorRegistry, Key};
use crate::error::ResolveError;

/// Where a bound proxy finds its connector.
#[derive(Clone)]
pub(crate) enum Source {
    /// The connector itself (a proxy made by a store).
    Direct(Arc<dyn Connector>),
    /// A registry of trusted connectors (a proxy received from elsewhere).
    Registry(ConnectorRegistry),
}

struct Binding<T> {
    source: Source,
    codec: Arc<dyn Codec<T>>,
}

/// A lazy reference to an object in a connector.
///
/// A proxy is a [`Key`], the [`ConnectorDescriptor`] of the connector that
/// holds the object, and an `evict` flag. It fetches and decodes the object
/// on the first [`resolve`](Self::resolve) only, and caches the value:
/// resolving again (or concurrently) never reads the store twice. With
/// `evict`, that one resolve also removes the object, so the object lives
/// exactly as long as it takes one consumer to read it; any other copy of
/// the proxy then gets [`ResolveError::MissingKey`].
///
/// A proxy serializes as its key, descriptor and flag only — never the
/// value — so it can be sent to another process. A deserialized proxy is
/// unbound: [`bind`](Self::bind) it to a [`ConnectorRegistry`] of the
/// connectors that process trusts, and a codec, before resolving it.
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use tributary_stream::{ConnectorRegistry, Json, MemoryConnector, Proxy, Store};
///
/// let memory = MemoryConnector::new();
/// let store = Store::new(memory.clone(), Json);
/// let sent = serde_json::to_string(&store.proxy(String::from("chunk"), true).await?)?;
///
/// // Elsewhere: only the reference travelled.
/// let registry = ConnectorRegistry::new().with_connector(memory.clone());
/// let proxy: Proxy<String> = serde_json::from_str::<Proxy<String>>(&sent)?.bind(&registry, Json);
/// assert_eq!(proxy.resolve().await?, "chunk");
/// assert!(memory.is_empty()); // evicted by the one resolve
/// # Ok(())
/// # }
/// ```
pub struct Proxy<T> {
    key: Key,
    connector: ConnectorDescriptor,
    evict: bool,
    binding: Option<Binding<T>>,
    value: OnceCell<T>,
}

impl<T> fmt::Debug for Proxy<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Proxy")
            .field("key", &self.key)
            .field("connector", &self.connector.kind)
            .field("evict", &self.evict)
            .field("bound", &self.binding.is_some())
            .field("resolved", &self.value.initialized())
            .finish()
    }
}

#[derive(Serialize, Deserialize)]
struct Wire {
    key: Key,
    connector: ConnectorDescriptor,
    evict: bool,
}

impl<T> Serialize for Proxy<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        Wire {
            key: self.key.clone(),
            connector: self.connector.clone(),
            evict: self.evict,
        }
        .serialize(serializer)
    }
}

impl<'de, T> Deserialize<'de> for Proxy<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let w = Wire::deserialize(deserializer)?;
        Ok(Self::unbound(w.key, w.connector, w.evict))
    }
}

impl<T> Proxy<T> {
    /// An unbound proxy to `key` in the connector `connector` describes.
    pub fn unbound(key: Key, connector: ConnectorDescriptor, evict: bool) -> Self {
        Self {
            key,
            connector,
            evict,
            binding: None,
            value: OnceCell::new(),
        }
    }
}

impl<T: Send + Sync + 'static> Proxy<T> {
    pub(crate) fn bound(
        key: Key,
        connector: ConnectorDescriptor,
        evict: bool,
        source: Source,
        codec: Arc<dyn Codec<T>>,
    ) -> Self {
        Self {
            binding: Some(Binding { source, codec }),
            ..Self::unbound(key, connector, evict)
        }
    }

    pub(crate) fn prefill(&self, value: T) {
        let _ = self.value.set(value);
    }

    /// Binds the proxy to the connectors `registry` trusts and to `codec`.
    pub fn bind(self, registry: &ConnectorRegistry, codec: impl Codec<T>) -> Self {
        self.bind_shared(registry, Arc::new(codec))
    }

    /// Binds the proxy to the connectors `registry` trusts and a shared codec.
    pub fn bind_shared(mut self, registry: &ConnectorRegistry, codec: Arc<dyn Codec<T>>) -> Self {
        self.binding = Some(Binding {
            source: Source::Registry(registry.clone()),
            codec,
        });
        self
    }

    /// The object's key.
    pub fn key(&self) -> &Key {
        &self.key
    }

    /// The connector that holds the object.
    pub fn connector(&self) -> &ConnectorDescriptor {
        &self.connector
    }

    /// Whether the first resolve removes the object.
    pub fn evicts(&self) -> bool {
        self.evict
    }

    /// Whether the value is cached here.
    pub fn is_resolved(&self) -> bool {
        self.value.initialized()
    }

    /// The cached value, if the proxy was resolved.
    pub fn get(&self) -> Option<&T> {
        self.value.get()
    }

    /// The value: fetched, decoded (and evicted, with `evict`) on the first
    /// call, cached afterwards.
    ///
    /// # Errors
    ///
    /// [`ResolveError::MissingKey`] when the object is not in the store,
    /// [`ResolveError::Unbound`] for a deserialized proxy never bound,
    /// [`ResolveError::UntrustedConnector`] when the registry does not trust
    /// the proxy's connector, and decode or connector errors. A failed
    /// resolve caches nothing; calling again retries.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe in that a cancelled call caches nothing and a later call
    /// starts over; if it is cancelled after an evicting read, the object
    /// may already be gone.
    pub async fn resolve(&self) -> Result<&T, ResolveError> {
        self.value.get_or_try_init(|| self.fetch()).await
    }

    /// Resolves the proxy and returns the value.
    ///
    /// # Errors
    ///
    /// As [`resolve`](Self::resolve).
    pub async fn into_value(self) -> Result<T, ResolveError> {
        self.resolve().await?;
        Ok(self
            .value
            .into_inner()
            .expect("resolved proxy holds its value"))
    }

    async fn fetch(&self) -> Result<T, ResolveError> {
        let binding = self.binding.as_ref().ok_or_else(|| ResolveError::Unbound {
            key: self.key.clone(),
        })?;
        let connector = match &binding.source {
            Source::Direct(c) => c.clone(),
            Source::Registry(r) => r.resolve(&self.connector, &self.key)?,
        };
        let connector_err = |source| ResolveError::Connector {
            key: self.key.clone(),
            source,
        };
        let bytes = connector
            .get(&self.key)
            .await
            .map_err(connector_err)?
            .ok_or_else(|| ResolveError::MissingKey {
                key: self.key.clone(),
                connector: self.connector.kind.clone(),
            })?;
        let value = binding
            .codec
            .decode(bytes)
            .map_err(|source| ResolveError::Decode {
                key: self.key.clone(),
                source,
            })?;
        if self.evict {
            connector.evict(&self.key).await.map_err(connector_err)?;
        }
        Ok(value)
    }
}
