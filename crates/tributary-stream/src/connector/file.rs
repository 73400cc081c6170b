//! A connector over a local directory.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

use super::{Connector, ConnectorDescriptor, Key};
use crate::error::ConnectorError;

/// Objects as files in a directory, one file per key.
///
/// An object is written to a hidden temporary file and then renamed to its
/// key, and a rename within a directory is atomic: a reader sees either no
/// object or the whole object, never a partial write. Keys are restricted to
/// ASCII letters, digits, `-` and `_`, so a key from an event can never
/// name a file outside the directory.
#[derive(Debug, Clone)]
pub struct FileConnector {
    dir: PathBuf,
}

impl FileConnector {
    /// The kind name in descriptors.
    pub const KIND: &'static str = "file";

    /// A connector storing into `dir`, created if missing.
    ///
    /// # Errors
    ///
    /// When the directory cannot be created or made absolute.
    pub fn new(dir: impl AsRef<Path>) -> Result<Self, ConnectorError> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|source| ConnectorError::Io {
            path: dir.to_owned(),
            source,
        })?;
        let dir = std::fs::canonicalize(dir).map_err(|source| ConnectorError::Io {
            path: dir.to_owned(),
            source,
        })?;
        Ok(Self { dir })
    }

    /// The directory objects are stored in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A factory for [`ConnectorRegistry::with_kind`](crate::ConnectorRegistry::with_kind)
    /// that accepts file connectors whose directory lies under `root`, and
    /// refuses every other directory.
    ///
    /// # Examples
    ///
    /// ```
    /// use tributary_stream::{ConnectorRegistry, FileConnector};
    ///
    /// let root = std::env::temp_dir();
    /// let registry = ConnectorRegistry::new().with_kind(FileConnector::KIND, FileConnector::kind_under(&root));
    /// # let _ = registry;
    /// ```
    pub fn kind_under(
        root: impl AsRef<Path>,
    ) -> impl Fn(&serde_json::Value) -> Result<Arc<dyn Connector>, ConnectorError> + Send + Sync + 'static
    {
        let root = std::fs::canonicalize(root.as_ref()).unwrap_or_else(|_| root.as_ref().into());
        move |config| {
            let invalid = |reason: &str| ConnectorError::InvalidConfig {
                kind: Self::KIND.into(),
                reason: reason.into(),
            };
            let dir = config
                .get("dir")
                .and_then(|d| d.as_str())
                .ok_or_else(|| invalid("missing string field `dir`"))?;
            let dir = std::fs::canonicalize(dir).map_err(|source| ConnectorError::Io {
                path: dir.into(),
                source,
            })?;
            if !dir.starts_with(&root) {
                return Err(invalid(&format!(
                    "directory {} is outside the trusted root {}",
                    dir.display(),
                    root.display()
                )));
            }
            Ok(Arc::new(Self { dir }) as Arc<dyn Connector>)
        }
    }

    fn path(&self, key: &Key) -> Result<PathBuf, ConnectorError> {
        let k = key.as_str();
        let valid = !k.is_empty()
            && k.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !valid {
            return Err(ConnectorError::InvalidKey {
                kind: Self::KIND,
                key: key.clone(),
            });
        }
        Ok(self.dir.join(k))
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ConnectorError + '_ {
    move |source| ConnectorError::Io {
        path: path.to_owned(),
        source,
    }
}

#[async_trait]
impl Connector for FileConnector {
    fn descriptor(&self) -> ConnectorDescriptor {
        ConnectorDescriptor::new(
            Self::KIND,
            serde_json::json!({ "dir": self.dir.to_string_lossy() }),
        )
    }

    async fn put(&self, data: Bytes) -> Result<Key, ConnectorError> {
        let key = Key::random();
        let path = self.path(&key)?;
        let tmp = self.dir.join(format!(".{key}.tmp"));
        tokio::fs::write(&tmp, &data).await.map_err(io(&tmp))?;
        tokio::fs::rename(&tmp, &path).await.map_err(io(&path))?;
        Ok(key)
    }

    async fn get(&self, key: &Key) -> Result<Option<Bytes>, ConnectorError> {
        let path = self.path(key)?;
        match tokio::fs::read(&path).await {
            Ok(data) => Ok(Some(data.into())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(&path)(e)),
        }
    }

    async fn exists(&self, key: &Key) -> Result<bool, ConnectorError> {
        let path = self.path(key)?;
        tokio::fs::try_exists(&path).await.map_err(io(&path))
    }

    async fn evict(&self, key: &Key) -> Result<(), ConnectorError> {
        let path = self.path(key)?;
        match tokio::fs::remove_file(&path).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io(&path)(e)),
        }
    }
}
