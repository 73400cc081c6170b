//! The errors of the SQLite backend.

use std::path::PathBuf;
use std::sync::Arc;

/// An error from a tributary SQLite database.
///
/// Every variant names the database file. The error is cheap to clone (one
/// failed commit is reported to every write of its batch).
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum SqliteError {
    /// The directory that should hold the database could not be created.
    #[error("cannot create directory {} for the database: {source}", path.display())]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: Arc<std::io::Error>,
    },
    /// The database file does not exist (readers never create one).
    #[error("no tributary database at {}", path.display())]
    NotFound {
        /// The file.
        path: PathBuf,
    },
    /// The file exists but is not a SQLite database.
    #[error("{} is not a SQLite database", path.display())]
    NotADatabase {
        /// The file.
        path: PathBuf,
    },
    /// SQLite found the file damaged.
    #[error("SQLite database {} is corrupt", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
    },
    /// The database was written by a newer tributary whose schema this build
    /// does not know.
    #[error(
        "database {} has schema version {found}, newer than version {supported} which this tributary supports; upgrade tributary",
        path.display()
    )]
    SchemaTooNew {
        /// The file.
        path: PathBuf,
        /// The schema version found in the file.
        found: i64,
        /// The newest schema version this build knows.
        supported: i64,
    },
    /// The file is a SQLite database that belongs to another application.
    #[error("{} is a SQLite database of another application, not a tributary database", path.display())]
    Foreign {
        /// The file.
        path: PathBuf,
    },
    /// The database has no tributary schema yet (nothing was ever written).
    #[error("{} holds no tributary data yet", path.display())]
    Uninitialized {
        /// The file.
        path: PathBuf,
    },
    /// SQLite reported an error.
    #[error("database {}: {source}", path.display())]
    Sqlite {
        /// The file.
        path: PathBuf,
        /// The SQLite error.
        #[source]
        source: Arc<rusqlite::Error>,
    },
    /// The writer thread could not be started.
    #[error("cannot start the writer thread of database {}: {source}", path.display())]
    Spawn {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: Arc<std::io::Error>,
    },
    /// The writer thread has stopped (it panicked), so nothing more can be
    /// written.
    #[error("the writer thread of database {} has stopped", path.display())]
    WriterStopped {
        /// The file.
        path: PathBuf,
    },
}

impl SqliteError {
    /// Classify a SQLite error on the database at `path`: a file that is not
    /// a database and a corrupt database get their own variants.
    pub(crate) fn sqlite(path: &std::path::Path, err: rusqlite::Error) -> Self {
        let path = path.to_path_buf();
        match err.sqlite_error_code() {
            Some(rusqlite::ErrorCode::NotADatabase) => SqliteError::NotADatabase { path },
            Some(rusqlite::ErrorCode::DatabaseCorrupt) => SqliteError::Corrupt { path },
            _ => SqliteError::Sqlite {
                path,
                source: Arc::new(err),
            },
        }
    }
}

impl SqliteError {
    /// Whether SQLite refused because another connection held a lock.
    pub(crate) fn is_busy(&self) -> bool {
        matches!(
            self,
            SqliteError::Sqlite { source, .. } if matches!(
                source.sqlite_error_code(),
                Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
            )
        )
    }
}

impl SqliteError {
    /// Whether SQLite refused because the file (or its `-shm`/`-wal`
    /// companions) may not be written or created.
    pub(crate) fn is_read_only_or_cannot_open(&self) -> bool {
        matches!(
            self,
            SqliteError::Sqlite { source, .. } if matches!(
                source.sqlite_error_code(),
                Some(rusqlite::ErrorCode::ReadOnly | rusqlite::ErrorCode::CannotOpen)
            )
        )
    }
}

impl From<SqliteError> for tributary_core::PersistError {
    fn from(err: SqliteError) -> Self {
        tributary_core::PersistError::backend(err)
    }
}
