//! [`StepFeed`]: the steps a tracker records, as they commit.

use futures_util::StreamExt;
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_postgres::{AsyncMessage, NoTls};

use crate::error::PostgresError;

/// How many notices wait for the reader before the feed stops reading its
/// connection (the server holds the rest in its notification queue).
const CAPACITY: usize = 1024;

/// A step that a [`PostgresTracker`](crate::PostgresTracker) recorded the
/// end of, as announced on the database's notification channel.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct StepNotice {
    /// The application.
    pub app_id: String,
    /// The step's sequence id.
    pub sequence_id: i64,
    /// Its action.
    pub action: String,
    /// How it ended: `completed`, `failed` or `abandoned`.
    pub status: String,
}

/// The steps recorded in one database, announced by `NOTIFY` as their
/// records commit, from any process: made by
/// [`Database::follow`](crate::Database::follow).
///
/// It holds a connection of its own that runs `LISTEN`; a task on the
/// runtime that made it reads the connection and hands the notices over
/// through a bounded queue. Dropping the feed ends the task and closes the
/// connection. Notices are announcements, not a log: a step recorded while
/// no feed listened is read from the tables, not from here.
#[derive(Debug)]
pub struct StepFeed {
    notices: mpsc::Receiver<Result<StepNotice, PostgresError>>,
    // Kept so the connection stays open while the feed lives.
    _client: tokio_postgres::Client,
    driver: JoinHandle<()>,
}

impl StepFeed {
    /// Listen on the database at `url` for the steps tracked in `schema`,
    /// without touching the schema (it need not exist yet).
    ///
    /// # Errors
    ///
    /// [`PostgresError::InvalidUrl`], [`PostgresError::InvalidSchema`], and
    /// as [`DatabaseBuilder::connect`](crate::DatabaseBuilder::connect) for
    /// the connection.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future closes the connection.
    pub async fn connect(url: &str, schema: &str) -> Result<Self, PostgresError> {
        let (config, target, user) = crate::database::reader_config(url, schema)?;
        Self::listen(&config, &target, &user, &crate::database::channel(schema)).await
    }

    pub(crate) async fn listen(
        config: &tokio_postgres::Config,
        target: &str,
        user: &str,
        channel: &str,
    ) -> Result<Self, PostgresError> {
        let err = |e| PostgresError::classify(target, user, e);
        let (client, mut connection) = config.connect(NoTls).await.map_err(err)?;
        let (sender, notices) = mpsc::channel(CAPACITY);
        let (driver_target, driver_user) = (target.to_owned(), user.to_owned());
        let driver = tokio::spawn(async move {
            let mut messages = futures_util::stream::poll_fn(|cx| connection.poll_message(cx));
            while let Some(message) = messages.next().await {
                let notice = match message {
                    Ok(AsyncMessage::Notification(n)) => {
                        match serde_json::from_str::<StepNotice>(n.payload()) {
                            Ok(notice) => Ok(notice),
                            Err(e) => {
                                tracing::warn!(error = %e, "tributary-postgres: unreadable step notice");
                                continue;
                            }
                        }
                    }
                    Ok(_) => continue,
                    Err(e) => Err(PostgresError::classify(&driver_target, &driver_user, e)),
                };
                let failed = notice.is_err();
                if sender.send(notice).await.is_err() || failed {
                    break;
                }
            }
        });
        // The driver polls the connection, so the client's queries run.
        client
            .batch_execute(&format!("LISTEN {channel}"))
            .await
            .map_err(err)?;
        Ok(StepFeed {
            notices,
            _client: client,
            driver,
        })
    }

    /// The next step recorded, waiting for it; `None` once the connection
    /// has closed (after the error that closed it).
    ///
    /// # Errors
    ///
    /// [`PostgresError`] when the connection fails; the feed ends after it.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a notice not yet returned stays queued for the next
    /// call.
    pub async fn next(&mut self) -> Option<Result<StepNotice, PostgresError>> {
        self.notices.recv().await
    }
}

impl Drop for StepFeed {
    fn drop(&mut self) {
        self.driver.abort();
    }
}
