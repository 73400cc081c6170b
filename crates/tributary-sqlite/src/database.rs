//! The database handle and its writer thread.
//!
//! Every database handle owns one SQLite connection on a dedicated thread
//! (the writer), fed by a channel. Async callers send a job and await a
//! oneshot reply; hooks send and return at once while there is room for
//! their record (see below), and wait for it otherwise. The writer takes
//! every job waiting in the channel and runs the writes among them in one
//! transaction (group commit): fifty applications checkpointing at once cost
//! a handful of commits, not fifty fsyncs, and no tokio worker thread ever
//! runs SQLite itself.
//!
//! A dedicated thread rather than `spawn_blocking` per call: one connection
//! serialises this process's writes (so they never contend for SQLite's
//! write lock among themselves), the batches need one owner, and the
//! tracker's hooks, which are synchronous and may run outside any tokio
//! runtime, need somewhere to hand their records.
//!
//! The records handed over without a reply (the tracker's) are bounded:
//! at most [`Database::RECORD_QUEUE_CAPACITY`] wait for the writer at once,
//! and a hook that would exceed the bound waits until the writer has
//! committed some (backpressure: a fast application slows to the pace of
//! its tracker instead of queueing gigabytes that a crash would lose).
//! Writes with a reply are bounded by their callers, who await them.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;

use rusqlite::{Connection, Transaction, TransactionBehavior};
use tokio::sync::oneshot;

use crate::error::SqliteError;
use crate::schema;

/// Most jobs the writer takes into one batch.
const MAX_BATCH: usize = 512;

/// The writer thread's stack.
const WRITER_STACK: usize = 64 << 20;

type WriteFn = Box<dyn FnOnce(&Transaction<'_>) -> rusqlite::Result<()> + Send>;
type ReadFn = Box<dyn FnOnce(&Connection) + Send>;
type Reply = oneshot::Sender<Result<(), SqliteError>>;

enum Job {
    /// A write, run inside the batch's transaction. With a reply, the caller
    /// learns the outcome once the batch has committed; without one (the
    /// tracker's records), a failure is kept for the next flush.
    Write(WriteFn, Option<Reply>),
    /// A read, run after every earlier write has committed.
    Read(ReadFn),
    /// Answered once every earlier job is done, with the first failure of a
    /// reply-less write since the last flush.
    Flush(Reply),
}

/// A handle to a tributary SQLite database: the connection owned by its
/// writer thread. Clones share the writer.
///
/// Every operation is a job sent to a dedicated thread that owns the
/// connection; async callers await a reply, hooks wait only for room in a
/// bounded queue (below), and no tokio worker thread ever runs SQLite
/// itself. The writer runs all the writes
/// waiting in its channel in one transaction (group commit). It is a
/// dedicated thread rather than `spawn_blocking` per call because one
/// connection keeps this process's writes from contending for SQLite's
/// lock, batching needs one owner, and synchronous hooks (which may run
/// outside a tokio runtime) need a place to hand records to.
///
/// The tracker's records are bounded: at most
/// [`RECORD_QUEUE_CAPACITY`](Self::RECORD_QUEUE_CAPACITY) wait for the
/// writer, and a hook that finds the queue full blocks its thread until the
/// writer has committed a batch. A writer slower than the steps it records
/// therefore slows the steps down rather than letting memory grow. The wait
/// never depends on the async runtime (the writer is a thread of its own),
/// so it cannot deadlock, even on a current-thread runtime.
///
/// The persister and the tracker can share one `Database` (one connection,
/// one writer thread) or each open their own; both are safe.
///
/// When the last clone is dropped, the writer finishes every job already
/// handed to it and the drop waits for it, so nothing handed over is lost.
/// That wait is as short as the last batch; [`Database::close`] does it
/// without blocking an async thread.
#[derive(Clone)]
pub struct Database {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    sender: Option<mpsc::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
    records: Arc<RecordGate>,
}

/// Counts the reply-less records handed to the writer and not yet written.
#[derive(Debug, Default)]
struct RecordGate {
    /// Records queued; `None` once the writer has stopped (nobody waits then).
    queued: Mutex<Option<usize>>,
    written: Condvar,
}

impl RecordGate {
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

/// Closes the gate when the writer thread ends, however it ends (a panic
/// included), so no hook waits forever for a writer that is gone.
struct CloseOnExit(Arc<RecordGate>);

impl Drop for CloseOnExit {
    fn drop(&mut self) {
        self.0.close();
    }
}

impl fmt::Debug for Database {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Database")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

impl Database {
    /// How many tracker records may wait for the writer thread at once; a
    /// hook that would queue more waits until the writer has committed a
    /// batch. With the writer's group commit of up to 512 records, this
    /// keeps the writer busy while bounding the memory queued records take
    /// (each holds a cheap clone of its step's state and result).
    pub const RECORD_QUEUE_CAPACITY: usize = 4096;

    /// Open the database at `path`, creating it and its parent directories
    /// if needed, and migrate its schema. The file may be shared with other
    /// handles and other processes.
    ///
    /// # Errors
    ///
    /// [`SqliteError::NotADatabase`] or [`SqliteError::Corrupt`] for a file
    /// SQLite cannot read, [`SqliteError::SchemaTooNew`] for a database of a
    /// newer tributary, [`SqliteError::Foreign`] for another application's
    /// database, [`SqliteError::CreateDir`] and [`SqliteError::Sqlite`] for
    /// I/O failures.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future lets the writer thread open the file
    /// and stop again.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self, SqliteError> {
        let path = path.as_ref().to_path_buf();
        let opener = path.clone();
        Self::start(path, move || schema::open_read_write(&opener)).await
    }

    /// A private in-memory database, gone when the last clone is dropped
    /// (tests, throwaway runs).
    ///
    /// # Errors
    ///
    /// [`SqliteError::Sqlite`] if SQLite cannot allocate it.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn open_in_memory() -> Result<Self, SqliteError> {
        Self::start(PathBuf::from(":memory:"), || {
            schema::open_read_write(Path::new(":memory:"))
        })
        .await
    }

    async fn start(
        path: PathBuf,
        open: impl FnOnce() -> Result<Connection, SqliteError> + Send + 'static,
    ) -> Result<Self, SqliteError> {
        let (sender, receiver) = mpsc::channel();
        let (opened_tx, opened_rx) = oneshot::channel();
        let worker_path = path.clone();
        let records = Arc::new(RecordGate {
            queued: Mutex::new(Some(0)),
            written: Condvar::new(),
        });
        let gate = Arc::clone(&records);
        let thread = std::thread::Builder::new()
            .name("tributary-sqlite".into())
            // Room to drop a deep value whose last reference a record
            // held (dropping recurses once per level); only the pages
            // touched are ever committed.
            .stack_size(WRITER_STACK)
            .spawn(move || {
                let _close = CloseOnExit(Arc::clone(&gate));
                match open() {
                    Err(e) => {
                        let _ = opened_tx.send(Err(e));
                    }
                    Ok(conn) => {
                        if opened_tx.send(Ok(())).is_ok() {
                            Writer::new(conn, worker_path, gate).run(receiver);
                        }
                    }
                }
            })
            .map_err(|source| SqliteError::Spawn {
                path: path.clone(),
                source: source.into(),
            })?;
        // The handle exists only once the file is open: dropping this future
        // earlier detaches the thread, which opens the file, finds nobody
        // waiting and stops, without blocking anyone.
        match opened_rx.await {
            Ok(Ok(())) => Ok(Database {
                inner: Arc::new(Inner {
                    path,
                    sender: Some(sender),
                    thread: Some(thread),
                    records,
                }),
            }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(SqliteError::WriterStopped { path }),
        }
    }

    /// The database file (`:memory:` for an in-memory database).
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Wait until every job handed to the writer so far is written.
    ///
    /// # Errors
    ///
    /// The first failure of a tracker record since the last flush, or
    /// [`SqliteError::WriterStopped`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future loses nothing; the records are
    /// written anyway.
    pub async fn flush(&self) -> Result<(), SqliteError> {
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
    pub async fn close(self) -> Result<(), SqliteError> {
        let flushed = self.flush().await;
        if let Ok(inner) = Arc::try_unwrap(self.inner) {
            // The last handle: dropping it joins the writer, which has
            // nothing left to do after the flush.
            let (done_tx, done_rx) = oneshot::channel::<()>();
            std::thread::spawn(move || {
                drop(inner);
                let _ = done_tx.send(());
            });
            let _ = done_rx.await;
        }
        flushed
    }

    pub(crate) fn stopped(&self) -> SqliteError {
        SqliteError::WriterStopped {
            path: self.inner.path.clone(),
        }
    }

    fn send(&self, job: Job) -> Result<(), SqliteError> {
        self.inner
            .sender
            .as_ref()
            .expect("the sender lives as long as the handle")
            .send(job)
            .map_err(|_| self.stopped())
    }

    /// Run `write` in the writer's next transaction and wait for its commit.
    pub(crate) async fn write(
        &self,
        write: impl FnOnce(&Transaction<'_>) -> rusqlite::Result<()> + Send + 'static,
    ) -> Result<(), SqliteError> {
        let (reply, done) = oneshot::channel();
        self.send(Job::Write(Box::new(write), Some(reply)))?;
        done.await.map_err(|_| self.stopped())?
    }

    /// Hand `write` to the writer without waiting for its commit (the
    /// tracker's records); waits for room when
    /// [`RECORD_QUEUE_CAPACITY`](Self::RECORD_QUEUE_CAPACITY) records are
    /// already queued.
    pub(crate) fn write_detached(
        &self,
        write: impl FnOnce(&Transaction<'_>) -> rusqlite::Result<()> + Send + 'static,
    ) {
        let handed = self.inner.records.acquire(Self::RECORD_QUEUE_CAPACITY)
            && self.send(Job::Write(Box::new(write), None)).is_ok();
        if !handed {
            tracing::warn!(path = %self.inner.path.display(), "tributary-sqlite: writer stopped, record dropped");
        }
    }

    /// How many tracker records are queued for the writer right now.
    #[cfg(test)]
    fn queued_records(&self) -> usize {
        let queued = self.inner.records.queued.lock();
        queued.map_or(0, |q| q.unwrap_or(0))
    }

    /// Run `read` on the writer's connection, after every earlier write.
    pub(crate) async fn read<T: Send + 'static>(
        &self,
        read: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, SqliteError> {
        let (reply, done) = oneshot::channel();
        let path = self.inner.path.clone();
        self.send(Job::Read(Box::new(move |conn| {
            let _ = reply.send(read(conn).map_err(|e| SqliteError::sqlite(&path, e)));
        })))?;
        done.await.map_err(|_| self.stopped())?
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Closing the channel lets the writer finish what it holds and stop.
        drop(self.sender.take());
        let thread = self.thread.take();
        // Joining from the writer itself (a job that held the last handle)
        // would never return; the writer then stops on its own.
        if let Some(thread) = thread.filter(|t| t.thread().id() != std::thread::current().id()) {
            let _ = thread.join();
        }
    }
}

// ===== the writer thread =====

struct Writer {
    conn: Connection,
    path: PathBuf,
    /// The first failure of a reply-less write since the last flush.
    detached_error: Option<SqliteError>,
    records: Arc<RecordGate>,
}

impl Writer {
    fn new(conn: Connection, path: PathBuf, records: Arc<RecordGate>) -> Self {
        Writer {
            conn,
            path,
            detached_error: None,
            records,
        }
    }

    fn run(mut self, jobs: mpsc::Receiver<Job>) {
        let mut batch = Vec::new();
        while let Ok(first) = jobs.recv() {
            batch.push(first);
            while batch.len() < MAX_BATCH {
                match jobs.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
            let records = batch
                .iter()
                .filter(|job| matches!(job, Job::Write(_, None)))
                .count();
            self.run_batch(&mut batch);
            self.records.release(records);
        }
    }

    /// Run the batch in order; consecutive writes share one transaction,
    /// which commits before any read or flush that follows them.
    fn run_batch(&mut self, batch: &mut Vec<Job>) {
        let mut writes: Vec<(WriteFn, Option<Reply>)> = Vec::new();
        for job in batch.drain(..) {
            match job {
                Job::Write(write, reply) => writes.push((write, reply)),
                Job::Read(read) => {
                    self.commit_writes(&mut writes);
                    read(&self.conn);
                }
                Job::Flush(reply) => {
                    self.commit_writes(&mut writes);
                    let _ = reply.send(self.detached_error.take().map_or(Ok(()), Err));
                }
            }
        }
        self.commit_writes(&mut writes);
    }

    fn commit_writes(&mut self, writes: &mut Vec<(WriteFn, Option<Reply>)>) {
        if writes.is_empty() {
            return;
        }
        let path = self.path.clone();
        let err = |e| SqliteError::sqlite(&path, e);
        let mut outcomes = Vec::with_capacity(writes.len());
        let mut pending = writes.drain(..);
        let committed = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(err)
            .and_then(|tx| {
                for (write, reply) in pending.by_ref() {
                    let outcome = write(&tx).map_err(err);
                    // Most failed statements leave the transaction usable,
                    // so the other writes of the batch still commit; a few
                    // (disk full, I/O errors) roll it back, and then the
                    // whole batch has failed.
                    let rolled_back = outcome.is_err() && tx.is_autocommit();
                    outcomes.push((outcome, reply));
                    if rolled_back {
                        let e = outcomes.last().and_then(|(o, _)| o.clone().err());
                        return Err(e.expect("the failed outcome was just pushed"));
                    }
                }
                tx.commit().map_err(err)
            });
        // Writes never run (BEGIN or an earlier write failed) share the
        // batch's error.
        let unrun: Vec<_> = pending.map(|(_, reply)| (Ok(()), reply)).collect();
        for (outcome, reply) in outcomes.into_iter().chain(unrun) {
            let outcome = match (&committed, outcome) {
                (Err(e), _) => Err(e.clone()),
                (Ok(()), outcome) => outcome,
            };
            match reply {
                Some(reply) => {
                    let _ = reply.send(outcome);
                }
                None => {
                    if let Err(e) = outcome {
                        tracing::warn!(error = %e, "tributary-sqlite: a tracking record was not written");
                        self.detached_error.get_or_insert(e);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn count(db: &Database) -> i64 {
        db.read(|conn| conn.query_row("SELECT COUNT(*) FROM scratch", [], |r| r.get(0)))
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn a_failed_write_fails_alone_and_a_flush_reports_detached_failures_once() {
        let db = Database::open_in_memory().await.unwrap();
        db.write(|tx| tx.execute_batch("CREATE TABLE scratch (x INTEGER PRIMARY KEY)"))
            .await
            .unwrap();
        for x in 0..10 {
            db.write_detached(move |tx| {
                tx.execute("INSERT INTO scratch VALUES (?1)", [x]).map(drop)
            });
        }
        // A duplicate key: this write fails, the others of its batch commit.
        db.write_detached(|tx| tx.execute("INSERT INTO scratch VALUES (3)", []).map(drop));
        let awaited = db
            .write(|tx| tx.execute("INSERT INTO nowhere VALUES (1)", []).map(drop))
            .await
            .unwrap_err();
        assert!(
            awaited.to_string().contains("no such table: nowhere"),
            "{awaited}"
        );
        let detached = db.flush().await.unwrap_err();
        assert!(
            detached.to_string().contains("UNIQUE constraint failed"),
            "{detached}"
        );
        // Reported once.
        db.flush().await.unwrap();
        assert_eq!(count(&db).await, 10);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_record_queue_makes_the_next_record_wait_for_the_writer() {
        const CAP: usize = Database::RECORD_QUEUE_CAPACITY;
        let db = Database::open_in_memory().await.unwrap();
        db.write(|tx| tx.execute_batch("CREATE TABLE scratch (x INTEGER PRIMARY KEY)"))
            .await
            .unwrap();
        // The first record holds the writer until the test lets it go.
        let (release, held) = mpsc::channel::<()>();
        db.write_detached(move |_| {
            let _ = held.recv();
            Ok(())
        });
        let handed = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let pusher = {
            let (db, handed) = (db.clone(), Arc::clone(&handed));
            std::thread::spawn(move || {
                for x in 0..2 * CAP {
                    db.write_detached(move |tx| {
                        tx.execute("INSERT INTO scratch VALUES (?1)", [x as i64])
                            .map(drop)
                    });
                    handed.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
            })
        };
        // The held record plus CAP - 1 more fill the queue; then the pusher
        // must wait, however long the writer takes.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while handed.load(std::sync::atomic::Ordering::SeqCst) < CAP - 1 {
            assert!(
                std::time::Instant::now() < deadline,
                "the queue filled too slowly"
            );
            std::thread::yield_now();
        }
        assert_eq!(db.queued_records(), CAP);
        assert_eq!(handed.load(std::sync::atomic::Ordering::SeqCst), CAP - 1);
        assert!(!pusher.is_finished());
        release.send(()).unwrap();
        pusher.join().unwrap();
        db.flush().await.unwrap();
        assert_eq!(count(&db).await, (2 * CAP) as i64);
        assert_eq!(db.queued_records(), 0);
    }

    #[tokio::test]
    async fn close_writes_everything_handed_over() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let db = Database::open(&path).await.unwrap();
        db.write(|tx| tx.execute_batch("CREATE TABLE scratch (x INTEGER PRIMARY KEY)"))
            .await
            .unwrap();
        for x in 0..1000 {
            db.write_detached(move |tx| {
                tx.execute("INSERT INTO scratch VALUES (?1)", [x]).map(drop)
            });
        }
        db.close().await.unwrap();
        let db = Database::open(&path).await.unwrap();
        assert_eq!(count(&db).await, 1000);
    }
}
