//! A typed store: a connector plus a codec.

use std::fmt;
use std::sync::Arc;

use crate::codec::Codec;
use crate::connector::{Connector, Key};
use crate::error::StoreError;
use crate::proxy::{Proxy, Source};

/// Values of `T` in a [`Connector`], encoded with a [`Codec`].
///
/// Cheap to clone; clones share the connector.
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use tributary_stream::{Json, MemoryConnector, Store};
///
/// let store = Store::new(MemoryConnector::new(), Json);
/// let proxy = store.proxy(vec![1, 2, 3], false).await?;
/// assert_eq!(store.get(proxy.key()).await?, Some(vec![1, 2, 3]));
/// # Ok(())
/// # }
/// ```
pub struct Store<T> {
    connector: Arc<dyn Connector>,
    codec: Arc<dyn Codec<T>>,
}

impl<T> Clone for Store<T> {
    fn clone(&self) -> Self {
        Self {
            connector: self.connector.clone(),
            codec: self.codec.clone(),
        }
    }
}

impl<T: 'static> fmt::Debug for Store<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("connector", &self.connector)
            .field("codec", &self.codec.name())
            .finish()
    }
}

impl<T: Send + Sync + 'static> Store<T> {
    /// A store of `T` over `connector` using `codec`.
    pub fn new(connector: impl Connector, codec: impl Codec<T>) -> Self {
        Self::from_shared(Arc::new(connector), Arc::new(codec))
    }

    /// A store over a shared connector and codec.
    pub fn from_shared(connector: Arc<dyn Connector>, codec: Arc<dyn Codec<T>>) -> Self {
        Self { connector, codec }
    }

    /// The connector.
    pub fn connector(&self) -> &Arc<dyn Connector> {
        &self.connector
    }

    /// The codec.
    pub fn codec(&self) -> &Arc<dyn Codec<T>> {
        &self.codec
    }

    /// Stores `value` and returns its key.
    ///
    /// # Errors
    ///
    /// When encoding or the connector fails.
    pub async fn put(&self, value: &T) -> Result<Key, StoreError> {
        let bytes = self.codec.encode(value)?;
        Ok(self.connector.put(bytes).await?)
    }

    /// Stores several values with one connector batch.
    ///
    /// # Errors
    ///
    /// When encoding or the connector fails.
    pub async fn put_batch<'a, I>(&self, values: I) -> Result<Vec<Key>, StoreError>
    where
        I: IntoIterator<Item = &'a T>,
        T: 'a,
    {
        let bytes = values
            .into_iter()
            .map(|v| self.codec.encode(v))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(self.connector.put_batch(bytes).await?)
    }

    /// The value under `key`, or `None` when there is none.
    ///
    /// # Errors
    ///
    /// When the connector or decoding fails.
    pub async fn get(&self, key: &Key) -> Result<Option<T>, StoreError> {
        match self.connector.get(key).await? {
            Some(bytes) => Ok(Some(self.codec.decode(bytes)?)),
            None => Ok(None),
        }
    }

    /// Whether a value is stored under `key`.
    ///
    /// # Errors
    ///
    /// When the connector fails.
    pub async fn exists(&self, key: &Key) -> Result<bool, StoreError> {
        Ok(self.connector.exists(key).await?)
    }

    /// Removes the value under `key`; a missing key is not an error.
    ///
    /// # Errors
    ///
    /// When the connector fails.
    pub async fn evict(&self, key: &Key) -> Result<(), StoreError> {
        Ok(self.connector.evict(key).await?)
    }

    /// Stores `value` and returns a proxy to it that is already resolved
    /// here (this side never reads the bytes back). With `evict`, the first
    /// resolve of a copy of the proxy elsewhere removes the object.
    ///
    /// # Errors
    ///
    /// When encoding or the connector fails.
    pub async fn proxy(&self, value: T, evict: bool) -> Result<Proxy<T>, StoreError> {
        let key = self.put(&value).await?;
        let proxy = self.proxy_from_key(key, evict);
        proxy.prefill(value);
        Ok(proxy)
    }

    /// A proxy to an object already stored under `key`.
    pub fn proxy_from_key(&self, key: Key, evict: bool) -> Proxy<T> {
        Proxy::bound(
            key,
            self.connector.descriptor(),
            evict,
            Source::Direct(self.connector.clone()),
            self.codec.clone(),
        )
    }
}
