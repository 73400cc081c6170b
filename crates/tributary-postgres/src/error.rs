//! The errors of the PostgreSQL backend.

use std::sync::Arc;

use tokio_postgres::error::SqlState;

/// An error from a tributary PostgreSQL database.
///
/// Every variant names the server and database (`host:port/dbname`, never
/// the password) or the schema it concerns. The error is cheap to clone
/// (one failed commit is reported to every write of its batch).
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum PostgresError {
    /// The connection URL could not be parsed.
    #[error("invalid PostgreSQL URL: {reason}")]
    InvalidUrl {
        /// What is wrong with it.
        reason: String,
    },
    /// The schema name is not a plain lowercase identifier of at most 40
    /// characters.
    #[error(
        "invalid schema name `{schema}`: use at most 40 of a-z, 0-9 and _, not starting with a digit"
    )]
    InvalidSchema {
        /// The name given.
        schema: String,
    },
    /// No server answered (refused, timed out, unknown host).
    #[error("cannot reach PostgreSQL at {target}: {source}")]
    Unreachable {
        /// `host:port/dbname`.
        target: String,
        /// Why.
        #[source]
        source: Arc<tokio_postgres::Error>,
    },
    /// The server refused the user's credentials.
    #[error("PostgreSQL at {target} refused to authenticate user `{user}`: {source}")]
    Authentication {
        /// `host:port/dbname`.
        target: String,
        /// The user.
        user: String,
        /// The server's answer.
        #[source]
        source: Arc<tokio_postgres::Error>,
    },
    /// The schema was written by a newer tributary whose tables this build
    /// does not know.
    #[error(
        "schema `{schema}` at {target} has tributary schema version {found}, newer than version {supported} which this tributary supports; upgrade tributary"
    )]
    SchemaTooNew {
        /// `host:port/dbname`.
        target: String,
        /// The schema.
        schema: String,
        /// The version found.
        found: i64,
        /// The newest version this build knows.
        supported: i64,
    },
    /// The schema holds tables named like tributary's that tributary did
    /// not create: it belongs to another application.
    #[error(
        "schema `{schema}` at {target} holds a table `{table}` that is not tributary's; choose another schema"
    )]
    Foreign {
        /// `host:port/dbname`.
        target: String,
        /// The schema.
        schema: String,
        /// The table found.
        table: String,
    },
    /// The migration tool failed on the schema: a recorded migration whose
    /// script has changed since it was applied, or a failing script.
    #[error("cannot migrate schema `{schema}` at {target}: {source}")]
    Migration {
        /// `host:port/dbname`.
        target: String,
        /// The schema.
        schema: String,
        /// The migration tool's report.
        #[source]
        source: Arc<dyn std::error::Error + Send + Sync>,
    },
    /// The schema does not exist or holds no tributary tables yet (readers
    /// never create it).
    #[error("schema `{schema}` at {target} holds no tributary data yet")]
    NoSchema {
        /// `host:port/dbname`.
        target: String,
        /// The schema.
        schema: String,
    },
    /// The server reported an error.
    #[error("PostgreSQL at {target}: {source}")]
    Postgres {
        /// `host:port/dbname`.
        target: String,
        /// The error.
        #[source]
        source: Arc<tokio_postgres::Error>,
    },
    /// No connection became free in time.
    #[error("no connection to PostgreSQL at {target} became free within the pool's wait timeout")]
    PoolTimeout {
        /// `host:port/dbname`.
        target: String,
    },
    /// The writer thread could not be started.
    #[error("cannot start the writer thread for PostgreSQL at {target}: {source}")]
    Spawn {
        /// `host:port/dbname`.
        target: String,
        /// Why.
        #[source]
        source: Arc<std::io::Error>,
    },
    /// The writer thread has stopped, so nothing more can be written.
    #[error("the writer thread for PostgreSQL at {target} has stopped")]
    WriterStopped {
        /// `host:port/dbname`.
        target: String,
    },
}

impl PostgresError {
    /// Classify a driver error: an unreachable server and refused
    /// credentials get their own variants.
    pub(crate) fn classify(target: &str, user: &str, err: tokio_postgres::Error) -> Self {
        let target = target.to_owned();
        if let Some(code) = err.code() {
            if *code == SqlState::INVALID_PASSWORD
                || *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
            {
                return PostgresError::Authentication {
                    target,
                    user: user.to_owned(),
                    source: Arc::new(err),
                };
            }
        } else if is_connect_failure(&err) {
            return PostgresError::Unreachable {
                target,
                source: Arc::new(err),
            };
        }
        PostgresError::Postgres {
            target,
            source: Arc::new(err),
        }
    }

    /// Whether the server reported the error (so the transaction it ended
    /// certainly did not commit), rather than the connection failing
    /// (when a commit's outcome is unknown).
    pub(crate) fn is_from_server(&self) -> bool {
        matches!(self, PostgresError::Postgres { source, .. } if source.code().is_some())
    }

    /// Whether retrying the whole transaction may succeed: a serialization
    /// failure or a deadlock the server broke.
    pub(crate) fn is_retryable(&self) -> bool {
        match self {
            PostgresError::Postgres { source, .. } => source.code().is_some_and(|c| {
                *c == SqlState::T_R_SERIALIZATION_FAILURE || *c == SqlState::T_R_DEADLOCK_DETECTED
            }),
            _ => false,
        }
    }
}

/// A failure to connect: an I/O error (refused, reset, timed out) or a
/// host that could not be resolved, before the server said anything.
fn is_connect_failure(err: &tokio_postgres::Error) -> bool {
    let mut source = std::error::Error::source(err);
    while let Some(e) = source {
        if e.is::<std::io::Error>() {
            return true;
        }
        source = e.source();
    }
    // The driver's own connect errors carry no source: "error connecting to
    // server", "timeout waiting for server".
    let text = err.to_string();
    text.contains("error connecting") || text.contains("timeout")
}

impl From<PostgresError> for tributary_core::PersistError {
    fn from(err: PostgresError) -> Self {
        tributary_core::PersistError::backend(err)
    }
}
