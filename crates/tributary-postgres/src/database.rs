//! The database handle and its writer thread.
//!
//! A handle owns a connection pool that lives on a dedicated writer thread
//! (a current-thread tokio runtime of its own), fed by a channel. Async
//! callers send a job and await a oneshot reply; the tracker's hooks, which
//! are synchronous and may run on any thread, hand their records over and
//! return, waiting only when [`Database::RECORD_QUEUE_CAPACITY`] records
//! are already queued. The writer takes every job waiting in the channel
//! and writes the checkpoints among them in one transaction, their
//! statements pipelined on one connection (group commit: a thousand
//! applications checkpointing at once cost a few round trips and commits,
//! not a thousand), and the tracker's records, in the order the hooks ran,
//! in another. Reads run as tasks of their own on the writer's runtime,
//! beside the writes, each on a pooled connection.
//!
//! A thread of its own rather than the caller's runtime: the pool's
//! connections are driven by tasks that must outlive whatever runtime
//! happened to open the database, and a hook that waits for room in the
//! record queue must never wait on the thread that would make room (a
//! current-thread runtime would deadlock).

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use futures_util::future::{BoxFuture, join_all};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tokio_postgres::NoTls;
use tokio_postgres::config::Host;
use tokio_postgres::types::ToSql;
use tributary_core::{Checkpoint, PersistError};

use crate::error::PostgresError;
use crate::feed::StepFeed;
use crate::schema;
use crate::tracker::Record;

/// Most jobs the writer takes into one batch.
const MAX_BATCH: usize = 1024;

/// How often a batch that failed with a serialization failure or a
/// deadlock is tried again.
const RETRIES: u32 = 5;

type Task = Box<dyn FnOnce(Pool) -> BoxFuture<'static, ()> + Send>;

/// A checkpoint to save, with its fencing epoch, and who waits for it.
pub(crate) struct Save {
    pub(crate) checkpoint: Checkpoint,
    pub(crate) epoch: Option<u64>,
    pub(crate) reply: oneshot::Sender<Result<(), PersistError>>,
}

enum Job {
    /// A checkpoint, written in the batch's checkpoint transaction.
    Save(Save),
    /// A tracker record, written in order in the batch's record
    /// transaction; a failure is kept for the next flush.
    Record(Record),
    /// A read, run as a task of its own on a pooled connection.
    Task(Task),
    /// Answered once every earlier write is done, with the first failure of
    /// a record since the last flush.
    Flush(oneshot::Sender<Result<(), PostgresError>>),
}

/// How to reach the database: built by [`Database::builder`].
///
/// # Examples
///
/// ```no_run
/// # async fn f() -> Result<(), tributary_postgres::PostgresError> {
/// use std::time::Duration;
/// use tributary_postgres::Database;
///
/// let db = Database::builder("postgres://app@db.internal:5432/service")
///     .schema("tributary_runs")
///     .pool_size(8)
///     .connect_timeout(Duration::from_secs(5))
///     .connect()
///     .await?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct DatabaseBuilder {
    url: String,
    schema: String,
    pool_size: usize,
    connect_timeout: Duration,
    wait_timeout: Duration,
}

impl DatabaseBuilder {
    /// The PostgreSQL schema that holds tributary's tables (default
    /// `tributary`); created if missing. Lowercase letters, digits and `_`,
    /// at most 40.
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = schema.into();
        self
    }

    /// Most connections the pool opens (default 4; at least 1).
    pub fn pool_size(mut self, size: usize) -> Self {
        self.pool_size = size.max(1);
        self
    }

    /// How long opening one connection may take (default 10 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long a job waits for a free connection (default 30 s).
    pub fn wait_timeout(mut self, timeout: Duration) -> Self {
        self.wait_timeout = timeout;
        self
    }

    /// Connect, create the schema if needed and migrate it.
    ///
    /// # Errors
    ///
    /// [`PostgresError::InvalidUrl`], [`PostgresError::InvalidSchema`],
    /// [`PostgresError::Unreachable`] when no server answers,
    /// [`PostgresError::Authentication`] when it refuses the credentials,
    /// [`PostgresError::SchemaTooNew`] for a schema of a newer tributary,
    /// [`PostgresError::Foreign`] for a schema holding another
    /// application's tables of the same names, [`PostgresError::Postgres`]
    /// for anything else the server reports.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future lets the writer thread finish
    /// connecting and stop again.
    pub async fn connect(self) -> Result<Database, PostgresError> {
        Database::start(self).await
    }
}

/// A handle to a tributary PostgreSQL database: a connection pool owned by
/// a writer thread. Clones share the writer.
///
/// Every operation is a job sent to the writer thread; async callers await
/// a reply, hooks wait only for room in a bounded queue. The writer groups
/// the checkpoints waiting in its channel into one transaction and the
/// tracker's records into another (group commit), and runs reads beside
/// them. Many processes on many machines may use one database at once.
///
/// The tracker's records are bounded: at most
/// [`RECORD_QUEUE_CAPACITY`](Self::RECORD_QUEUE_CAPACITY) wait for the
/// writer, and a hook that finds the queue full blocks its thread until
/// the writer has committed a batch (the writer is a thread of its own, so
/// this cannot deadlock, even on a current-thread runtime).
///
/// When the last clone is dropped, the writer finishes every job already
/// handed to it and the drop waits for it; [`Database::close`] does that
/// without blocking an async thread.
#[derive(Clone)]
pub struct Database {
    inner: Arc<Inner>,
}

struct Inner {
    target: String,
    schema: String,
    config: tokio_postgres::Config,
    sender: Option<mpsc::UnboundedSender<Job>>,
    thread: Option<JoinHandle<()>>,
    records: Arc<RecordGate>,
}

impl fmt::Debug for Database {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Database")
            .field("target", &self.inner.target)
            .field("schema", &self.inner.schema)
            .finish_non_exhaustive()
    }
}

impl Database {
    /// How many tracker records may wait for the writer thread at once; a
    /// hook that would queue more waits until the writer has committed a
    /// batch.
    pub const RECORD_QUEUE_CAPACITY: usize = 4096;

    /// The schema tributary uses unless told otherwise.
    pub const DEFAULT_SCHEMA: &'static str = "tributary";

    /// Connect to the database at `url` (`postgres://user:password@host:port/dbname`)
    /// with the default settings and schema `tributary`.
    ///
    /// # Errors
    ///
    /// As [`DatabaseBuilder::connect`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn connect(url: &str) -> Result<Self, PostgresError> {
        Self::builder(url).connect().await
    }

    /// Settings for connecting to the database at `url`.
    pub fn builder(url: impl Into<String>) -> DatabaseBuilder {
        DatabaseBuilder {
            url: url.into(),
            schema: Self::DEFAULT_SCHEMA.to_owned(),
            pool_size: 4,
            connect_timeout: Duration::from_secs(10),
            wait_timeout: Duration::from_secs(30),
        }
    }

    async fn start(settings: DatabaseBuilder) -> Result<Self, PostgresError> {
        let mut config: tokio_postgres::Config =
            settings
                .url
                .parse()
                .map_err(|e: tokio_postgres::Error| PostgresError::InvalidUrl {
                    reason: e.to_string(),
                })?;
        if !schema::valid_schema(&settings.schema) {
            return Err(PostgresError::InvalidSchema {
                schema: settings.schema,
            });
        }
        let schema = settings.schema;
        let target = describe(&config);
        let user = config.get_user().unwrap_or("").to_owned();
        // Every pooled connection names the schema first on its path, so
        // the statements name tables unqualified.
        let options = match config.get_options() {
            Some(o) if !o.is_empty() => format!("{o} -c search_path={schema}"),
            _ => format!("-c search_path={schema}"),
        };
        config.options(options);
        if config.get_application_name().is_none() {
            config.application_name("tributary");
        }
        config.connect_timeout(settings.connect_timeout);

        let (sender, receiver) = mpsc::unbounded_channel();
        let (opened_tx, opened_rx) = oneshot::channel();
        let records = Arc::new(RecordGate::new());
        let gate = Arc::clone(&records);
        let (pool_config, thread_target, thread_schema) =
            (config.clone(), target.clone(), schema.clone());
        let (pool_size, wait_timeout) = (settings.pool_size, settings.wait_timeout);
        let thread = std::thread::Builder::new()
            .name("tributary-postgres".into())
            .spawn(move || {
                let _close = CloseOnExit(Arc::clone(&gate));
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = opened_tx.send(Err(PostgresError::Spawn {
                            target: thread_target,
                            source: Arc::new(e),
                        }));
                        return;
                    }
                };
                runtime.block_on(async move {
                    let pool = Pool::builder(Manager::from_config(
                        pool_config,
                        NoTls,
                        ManagerConfig {
                            recycling_method: RecyclingMethod::Fast,
                        },
                    ))
                    .max_size(pool_size)
                    .runtime(Runtime::Tokio1)
                    .wait_timeout(Some(wait_timeout))
                    .build()
                    .expect("a runtime is set, so the pool builds");
                    let writer = Writer {
                        pool,
                        target: thread_target,
                        user,
                        schema: thread_schema,
                        detached_error: None,
                        records: gate,
                    };
                    let opened = writer.open().await;
                    let ok = opened.is_ok();
                    if opened_tx.send(opened).is_ok() && ok {
                        writer.run(receiver).await;
                    }
                });
            })
            .map_err(|e| PostgresError::Spawn {
                target: target.clone(),
                source: Arc::new(e),
            })?;
        match opened_rx.await {
            Ok(Ok(())) => Ok(Database {
                inner: Arc::new(Inner {
                    target,
                    schema,
                    config,
                    sender: Some(sender),
                    thread: Some(thread),
                    records,
                }),
            }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(PostgresError::WriterStopped { target }),
        }
    }

    /// The server and database, as `host:port/dbname`.
    pub fn target(&self) -> &str {
        &self.inner.target
    }

    /// The schema that holds tributary's tables.
    pub fn schema(&self) -> &str {
        &self.inner.schema
    }

    /// The notification channel on which the tracker announces steps
    /// (`tributary_steps_` and the schema).
    pub fn channel(&self) -> String {
        channel(&self.inner.schema)
    }

    /// Listen for the steps the tracker records, as it commits them: a
    /// dedicated connection (outside the pool) that runs `LISTEN`, driven by
    /// a task on the caller's runtime that ends when the feed is dropped.
    ///
    /// # Errors
    ///
    /// As [`DatabaseBuilder::connect`] for the connection.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future closes the connection.
    pub async fn follow(&self) -> Result<StepFeed, PostgresError> {
        let user = self.inner.config.get_user().unwrap_or("").to_owned();
        StepFeed::listen(
            &self.inner.config,
            &self.inner.target,
            &user,
            &self.channel(),
        )
        .await
    }

    /// Wait until every job handed to the writer so far is written.
    ///
    /// # Errors
    ///
    /// The first failure of a tracker record since the last flush, or
    /// [`PostgresError::WriterStopped`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future loses nothing; the records are
    /// written anyway.
    pub async fn flush(&self) -> Result<(), PostgresError> {
        let (reply, done) = oneshot::channel();
        self.send(Job::Flush(reply))?;
        done.await.map_err(|_| self.stopped())?
    }

    /// Flush, then drop this handle; when it was the last one, wait (off the
    /// async threads) for the writer thread to finish.
    ///
    /// # Errors
    ///
    /// As [`flush`](Self::flush).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: whatever was handed over is written anyway.
    pub async fn close(self) -> Result<(), PostgresError> {
        let flushed = self.flush().await;
        if let Ok(inner) = Arc::try_unwrap(self.inner) {
            let (done_tx, done_rx) = oneshot::channel::<()>();
            std::thread::spawn(move || {
                drop(inner);
                let _ = done_tx.send(());
            });
            let _ = done_rx.await;
        }
        flushed
    }

    pub(crate) fn stopped(&self) -> PostgresError {
        PostgresError::WriterStopped {
            target: self.inner.target.clone(),
        }
    }

    fn send(&self, job: Job) -> Result<(), PostgresError> {
        self.inner
            .sender
            .as_ref()
            .expect("the sender lives as long as the handle")
            .send(job)
            .map_err(|_| self.stopped())
    }

    /// Hand a checkpoint to the writer and wait for its commit.
    pub(crate) async fn save(
        &self,
        checkpoint: &Checkpoint,
        epoch: Option<u64>,
    ) -> Result<(), PersistError> {
        let (reply, done) = oneshot::channel();
        self.send(Job::Save(Save {
            checkpoint: checkpoint.clone(),
            epoch,
            reply,
        }))?;
        done.await.map_err(|_| self.stopped())?
    }

    /// Hand a tracker record to the writer without waiting for its commit;
    /// waits for room when the queue is full.
    pub(crate) fn record(&self, record: Record) {
        let handed = self.inner.records.acquire(Self::RECORD_QUEUE_CAPACITY)
            && self.send(Job::Record(record)).is_ok();
        if !handed {
            tracing::warn!(target = %self.inner.target, "tributary-postgres: writer stopped, record dropped");
        }
    }

    /// Run `read` on a pooled connection of the writer's runtime.
    pub(crate) async fn read<T, F>(&self, read: F) -> Result<T, PostgresError>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c Object) -> BoxFuture<'c, Result<T, tokio_postgres::Error>>
            + Send
            + 'static,
    {
        let (reply, done) = oneshot::channel();
        let target = self.inner.target.clone();
        let user = self.inner.config.get_user().unwrap_or("").to_owned();
        self.send(Job::Task(Box::new(move |pool: Pool| {
            Box::pin(async move {
                let outcome = match connection(&pool, &target, &user).await {
                    Ok(conn) => read(&conn)
                        .await
                        .map_err(|e| PostgresError::classify(&target, &user, e)),
                    Err(e) => Err(e),
                };
                let _ = reply.send(outcome);
            })
        })))?;
        done.await.map_err(|_| self.stopped())?
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        drop(self.sender.take());
        let thread = self.thread.take();
        if let Some(thread) = thread.filter(|t| t.thread().id() != std::thread::current().id()) {
            let _ = thread.join();
        }
    }
}

/// A configuration from `url`, with `schema` checked: for the readers,
/// which connect without the pool. Returns it with `host:port/dbname` and
/// the user.
pub(crate) fn reader_config(
    url: &str,
    schema: &str,
) -> Result<(tokio_postgres::Config, String, String), PostgresError> {
    let mut config: tokio_postgres::Config =
        url.parse()
            .map_err(|e: tokio_postgres::Error| PostgresError::InvalidUrl {
                reason: e.to_string(),
            })?;
    if !schema::valid_schema(schema) {
        return Err(PostgresError::InvalidSchema {
            schema: schema.to_owned(),
        });
    }
    if config.get_application_name().is_none() {
        config.application_name("tributary");
    }
    let target = describe(&config);
    let user = config.get_user().unwrap_or("").to_owned();
    Ok((config, target, user))
}

/// The notification channel of `schema`.
pub(crate) fn channel(schema: &str) -> String {
    format!("tributary_steps_{schema}")
}

/// `host:port/dbname` of a configuration, for messages.
fn describe(config: &tokio_postgres::Config) -> String {
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(h)) => h.clone(),
        #[cfg(unix)]
        Some(Host::Unix(p)) => p.display().to_string(),
        None => "localhost".to_owned(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let db = config
        .get_dbname()
        .or(config.get_user())
        .unwrap_or("postgres");
    format!("{host}:{port}/{db}")
}

async fn connection(pool: &Pool, target: &str, user: &str) -> Result<Object, PostgresError> {
    use deadpool_postgres::PoolError;
    pool.get().await.map_err(|e| match e {
        PoolError::Backend(e) => PostgresError::classify(target, user, e),
        PoolError::Closed => PostgresError::WriterStopped {
            target: target.to_owned(),
        },
        _ => PostgresError::PoolTimeout {
            target: target.to_owned(),
        },
    })
}

// ===== the record gate =====

/// Counts the reply-less records handed to the writer and not yet written.
#[derive(Debug)]
struct RecordGate {
    /// Records queued; `None` once the writer has stopped.
    queued: Mutex<Option<usize>>,
    written: Condvar,
}

impl RecordGate {
    fn new() -> Self {
        RecordGate {
            queued: Mutex::new(Some(0)),
            written: Condvar::new(),
        }
    }

    /// Wait for room, then count one more record. `false` when the writer
    /// has stopped.
    fn acquire(&self, capacity: usize) -> bool {
        let mut queued = self.queued.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            match queued.as_mut() {
                None => return false,
                Some(n) if *n < capacity => {
                    *n += 1;
                    return true;
                }
                Some(_) => {
                    queued = self
                        .written
                        .wait(queued)
                        .unwrap_or_else(PoisonError::into_inner);
                }
            }
        }
    }

    fn release(&self, records: usize) {
        if records == 0 {
            return;
        }
        let mut queued = self.queued.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = queued.as_mut() {
            *n = n.saturating_sub(records);
        }
        drop(queued);
        self.written.notify_all();
    }

    fn close(&self) {
        *self.queued.lock().unwrap_or_else(PoisonError::into_inner) = None;
        self.written.notify_all();
    }
}

/// Closes the gate when the writer thread ends, however it ends.
struct CloseOnExit(Arc<RecordGate>);

impl Drop for CloseOnExit {
    fn drop(&mut self) {
        self.0.close();
    }
}

// ===== the writer =====

struct Writer {
    pool: Pool,
    target: String,
    user: String,
    schema: String,
    /// The first failure of a record since the last flush.
    detached_error: Option<PostgresError>,
    records: Arc<RecordGate>,
}

impl Writer {
    fn err(&self) -> impl Fn(tokio_postgres::Error) -> PostgresError + '_ {
        |e| PostgresError::classify(&self.target, &self.user, e)
    }

    /// Connect once (so a bad URL, server or password fails here) and
    /// migrate the schema.
    async fn open(&self) -> Result<(), PostgresError> {
        let mut conn = connection(&self.pool, &self.target, &self.user).await?;
        schema::migrate(&mut conn, &self.schema, &self.target, &self.user).await
    }

    async fn run(mut self, mut jobs: mpsc::UnboundedReceiver<Job>) {
        let mut reads = JoinSet::new();
        let mut batch = Vec::new();
        while let Some(first) = jobs.recv().await {
            batch.push(first);
            while batch.len() < MAX_BATCH {
                match jobs.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
            while reads.try_join_next().is_some() {}
            let records = batch
                .iter()
                .filter(|job| matches!(job, Job::Record(_)))
                .count();
            self.run_batch(&mut batch, &mut reads).await;
            self.records.release(records);
        }
        while reads.join_next().await.is_some() {}
    }

    /// Run the batch in order: reads start at once; saves and records wait
    /// for the next flush or the batch's end, then commit.
    async fn run_batch(&mut self, batch: &mut Vec<Job>, reads: &mut JoinSet<()>) {
        let mut saves = Vec::new();
        let mut records = Vec::new();
        for job in batch.drain(..) {
            match job {
                Job::Save(save) => saves.push(save),
                Job::Record(record) => records.push(record),
                Job::Task(task) => {
                    reads.spawn(task(self.pool.clone()));
                }
                Job::Flush(reply) => {
                    self.write(&mut saves, &mut records).await;
                    let _ = reply.send(self.detached_error.take().map_or(Ok(()), Err));
                }
            }
        }
        self.write(&mut saves, &mut records).await;
    }

    async fn write(&mut self, saves: &mut Vec<Save>, records: &mut Vec<Record>) {
        // Checkpoints and records are independent: two connections, two
        // transactions, at the same time.
        let saves = std::mem::take(saves);
        let records = std::mem::take(records);
        let (_, record_error) =
            futures_util::future::join(self.write_saves(saves), self.write_records(records)).await;
        if let Some(e) = record_error {
            tracing::warn!(error = %e, "tributary-postgres: a tracking record was not written");
            self.detached_error.get_or_insert(e);
        }
    }

    async fn write_saves(&self, mut saves: Vec<Save>) {
        if saves.is_empty() {
            return;
        }
        // Every process locks rows in the same order: no deadlock between
        // batches.
        saves.sort_by(|a, b| {
            (&a.checkpoint.app_id, a.checkpoint.sequence_id)
                .cmp(&(&b.checkpoint.app_id, b.checkpoint.sequence_id))
        });
        let mut attempt = 0;
        let outcomes = loop {
            match self.save_batch(&saves).await {
                Err(e) if e.is_retryable() && attempt < RETRIES => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(5 << attempt)).await;
                }
                Err(e) if saves.len() > 1 => {
                    // One bad checkpoint aborts the transaction: write each
                    // alone, so only it fails.
                    tracing::debug!(error = %e, "tributary-postgres: batch failed, saving one by one");
                    let mut outcomes = Vec::with_capacity(saves.len());
                    for save in &saves {
                        outcomes.push(self.save_alone(save).await);
                    }
                    break outcomes;
                }
                Err(e) => break vec![Err(PersistError::from(e))],
                Ok(outcomes) => break outcomes,
            }
        };
        for (save, outcome) in saves.into_iter().zip(outcomes) {
            let _ = save.reply.send(outcome);
        }
    }

    async fn save_alone(&self, save: &Save) -> Result<(), PersistError> {
        let mut attempt = 0;
        loop {
            match self.save_batch(std::slice::from_ref(save)).await {
                Err(e) if e.is_retryable() && attempt < RETRIES => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(5 << attempt)).await;
                }
                Err(e) => return Err(e.into()),
                Ok(mut outcomes) => return outcomes.pop().unwrap_or(Ok(())),
            }
        }
    }

    /// Write `saves` in one transaction (one statement alone when there is
    /// one), pipelined. The outer error fails them all; the inner ones are
    /// each save's own (a refused fence).
    async fn save_batch(
        &self,
        saves: &[Save],
    ) -> Result<Vec<Result<(), PersistError>>, PostgresError> {
        let mut conn = connection(&self.pool, &self.target, &self.user).await?;
        let plain = conn
            .prepare_cached(crate::persister::SAVE)
            .await
            .map_err(self.err())?;
        let fenced = conn
            .prepare_cached(crate::persister::SAVE_FENCED)
            .await
            .map_err(self.err())?;
        if let [save] = saves {
            // One statement commits by itself: no BEGIN and COMMIT.
            let outcome = crate::persister::write(&**conn, &plain, &fenced, save)
                .await
                .map_err(self.err())?;
            return Ok(vec![outcome]);
        }
        let tx = conn.transaction().await.map_err(self.err())?;
        let outcomes = join_all(
            saves
                .iter()
                .map(|save| crate::persister::write(&*tx, &plain, &fenced, save)),
        )
        .await;
        let outcomes = outcomes
            .into_iter()
            .collect::<Result<Vec<_>, _>>()
            .map_err(self.err())?;
        tx.commit().await.map_err(self.err())?;
        Ok(outcomes)
    }

    /// Write the records in order, in one transaction; the first failure.
    async fn write_records(&self, records: Vec<Record>) -> Option<PostgresError> {
        if records.is_empty() {
            return None;
        }
        let channel = channel(&self.schema);
        let mut attempt = 0;
        loop {
            match self.record_batch(&records, &channel).await {
                Ok(()) => return None,
                Err(e) if e.is_retryable() && attempt < RETRIES => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(5 << attempt)).await;
                }
                Err(e) if records.len() > 1 && e.is_from_server() => {
                    // Keep what can be kept: each record alone, in order
                    // (the server refused the transaction, so it wrote
                    // nothing; after a lost connection the commit may have
                    // happened, and records are not idempotent).
                    tracing::debug!(error = %e, "tributary-postgres: records failed, writing one by one");
                    let mut failed = None;
                    for record in &records {
                        if let Err(e) = self
                            .record_batch(std::slice::from_ref(record), &channel)
                            .await
                        {
                            failed.get_or_insert(e);
                        }
                    }
                    return failed;
                }
                Err(e) => return Some(e),
            }
        }
    }

    /// Write `records` in one transaction: every statement is sent before
    /// the first answer is awaited, and the server runs them in the order
    /// sent, which is the order the hooks ran.
    async fn record_batch(&self, records: &[Record], channel: &str) -> Result<(), PostgresError> {
        let mut statements = Vec::new();
        for record in records {
            record.statements(channel, &mut statements);
        }
        let mut conn = connection(&self.pool, &self.target, &self.user).await?;
        let tx = conn.transaction().await.map_err(self.err())?;
        let mut prepared: HashMap<&'static str, tokio_postgres::Statement> = HashMap::new();
        for (sql, _) in &statements {
            if !prepared.contains_key(sql) {
                let stmt = tx.prepare_cached(sql).await.map_err(self.err())?;
                prepared.insert(sql, stmt);
            }
        }
        let client = &tx;
        let sent = statements.iter().map(|(sql, params)| {
            let stmt = &prepared[sql];
            let params: Vec<&(dyn ToSql + Sync)> =
                params.iter().map(|x| &**x as &(dyn ToSql + Sync)).collect();
            async move { client.execute(stmt, &params).await }
        });
        for outcome in join_all(sent).await {
            outcome.map_err(self.err())?;
        }
        tx.commit().await.map_err(self.err())
    }
}
