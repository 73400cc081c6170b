//! The schema, its migrations, and opening a connection.
//!
//! The schema version lives in `PRAGMA user_version` and the file is marked
//! as tributary's with `PRAGMA application_id`. Opening a database for
//! writing runs every migration it lacks, in one `BEGIN IMMEDIATE`
//! transaction, so two processes opening a new file at once migrate it once.

use std::path::Path;
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags, TransactionBehavior};

use crate::error::SqliteError;

/// The newest schema version this build knows.
pub(crate) const SCHEMA_VERSION: i64 = 6;

/// `PRAGMA application_id` of a tributary database ("Trib").
const APPLICATION_ID: i64 = 0x5472_6962;

/// How long a connection waits for another connection's lock.
pub(crate) const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// Migration `i` takes the schema from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    // 0 -> 1: checkpoints, and the tracker's applications and steps.
    "
    CREATE TABLE checkpoints (
        app_id        TEXT    NOT NULL,
        sequence_id   INTEGER NOT NULL,
        partition_key TEXT,
        action        TEXT    NOT NULL,
        status        TEXT    NOT NULL CHECK (status IN ('completed', 'failed')),
        state         TEXT    NOT NULL,
        saved_at      INTEGER NOT NULL,
        PRIMARY KEY (app_id, sequence_id)
    ) WITHOUT ROWID;

    CREATE TABLE apps (
        app_id               TEXT    NOT NULL PRIMARY KEY,
        partition_key        TEXT,
        status               TEXT    NOT NULL,
        created_at           INTEGER NOT NULL,
        updated_at           INTEGER NOT NULL,
        parent_app_id        TEXT,
        parent_sequence_id   INTEGER,
        parent_action        TEXT,
        parent_partition_key TEXT,
        spawn_app_id         TEXT,
        spawn_sequence_id    INTEGER,
        spawn_action         TEXT,
        spawn_partition_key  TEXT
    ) WITHOUT ROWID;
    CREATE INDEX apps_by_spawning_parent ON apps (spawn_app_id, spawn_sequence_id);

    -- One row per attempt of a step: a failed step is retried at the same
    -- sequence id, and each retry is a new attempt (0, 1, ...).
    CREATE TABLE steps (
        app_id             TEXT    NOT NULL,
        sequence_id        INTEGER NOT NULL,
        attempt            INTEGER NOT NULL DEFAULT 0,
        partition_key      TEXT,
        action             TEXT    NOT NULL,
        status             TEXT    NOT NULL,
        started_at         INTEGER NOT NULL,
        ended_at           INTEGER,
        result             TEXT,
        state              TEXT,
        error              TEXT,
        items              INTEGER NOT NULL DEFAULT 0,
        parent_app_id      TEXT,
        parent_sequence_id INTEGER,
        spawn_app_id       TEXT,
        spawn_sequence_id  INTEGER,
        PRIMARY KEY (app_id, sequence_id, attempt)
    ) WITHOUT ROWID;
    ",
    // 1 -> 2: checkpoints keep the step's result and may be cancelled (a
    // CHECK constraint cannot be altered: the table is rebuilt); the
    // tracker keeps each app's place in its run and which process wrote
    // each step.
    "
    CREATE TABLE checkpoints_v2 (
        app_id        TEXT    NOT NULL,
        sequence_id   INTEGER NOT NULL,
        partition_key TEXT,
        action        TEXT    NOT NULL,
        status        TEXT    NOT NULL CHECK (status IN ('completed', 'failed', 'cancelled')),
        state         TEXT    NOT NULL,
        result        TEXT,
        saved_at      INTEGER NOT NULL,
        PRIMARY KEY (app_id, sequence_id)
    ) WITHOUT ROWID;
    INSERT INTO checkpoints_v2 (app_id, sequence_id, partition_key, action, status, state, saved_at)
        SELECT app_id, sequence_id, partition_key, action, status, state, saved_at FROM checkpoints;
    DROP TABLE checkpoints;
    ALTER TABLE checkpoints_v2 RENAME TO checkpoints;

    -- The task key and the path of task keys from the root run (a JSON
    -- array), the task's index among its siblings, the run id, a label
    -- for people, when the task was spawned, and the process that last
    -- ran the app (`host/pid/start`).
    ALTER TABLE apps ADD COLUMN task_key   TEXT;
    ALTER TABLE apps ADD COLUMN task_path  TEXT;
    ALTER TABLE apps ADD COLUMN task_index INTEGER;
    ALTER TABLE apps ADD COLUMN run_id     TEXT;
    ALTER TABLE apps ADD COLUMN label      TEXT;
    ALTER TABLE apps ADD COLUMN spawned_at INTEGER;
    ALTER TABLE apps ADD COLUMN process    TEXT;

    -- The process that ran each attempt, and why its state or result was
    -- not recorded (nested too deep to store).
    ALTER TABLE steps ADD COLUMN process    TEXT;
    ALTER TABLE steps ADD COLUMN unrecorded TEXT;
    -- When a process was last heard of: where a dead gap begins.
    CREATE INDEX steps_by_process ON steps (process, started_at);
    ",
    // 2 -> 3: the journal of durable steps (one row per step outcome at a
    // position of an action attempt), the records of durable workflows and
    // the events sent to them.
    "
    CREATE TABLE journal (
        app_id      TEXT    NOT NULL,
        sequence_id INTEGER NOT NULL,
        position    INTEGER NOT NULL,
        step        TEXT    NOT NULL,
        occurrence  INTEGER NOT NULL,
        kind        TEXT    NOT NULL,
        status      TEXT    NOT NULL CHECK (status IN ('completed', 'failed')),
        value       TEXT,
        error       TEXT,
        written_at  INTEGER NOT NULL,
        PRIMARY KEY (app_id, sequence_id, position)
    ) WITHOUT ROWID;

    CREATE TABLE workflows (
        workflow_id TEXT    NOT NULL PRIMARY KEY,
        name        TEXT    NOT NULL,
        input       TEXT    NOT NULL,
        status      TEXT    NOT NULL,
        output      TEXT,
        error       TEXT,
        created_at  INTEGER NOT NULL,
        updated_at  INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX workflows_by_status ON workflows (status);

    -- Events sent to workflows, numbered per (target, name) from 0.
    CREATE TABLE events (
        target  TEXT    NOT NULL,
        name    TEXT    NOT NULL,
        idx     INTEGER NOT NULL,
        value   TEXT    NOT NULL,
        sent_at INTEGER NOT NULL,
        PRIMARY KEY (target, name, idx)
    ) WITHOUT ROWID;
    ",
    // 3 -> 4: the tracker records a step's inputs (a JSON object) and the
    // first tokens it streamed (a JSON array).
    "
    ALTER TABLE steps ADD COLUMN inputs TEXT;
    ALTER TABLE steps ADD COLUMN tokens TEXT;
    ",
    // 4 -> 5: executions of durable code are numbered: each journal entry
    // keeps the execution that wrote it (0 before this version), and the
    // latest execution of each (app id, sequence id) is kept, so a listing
    // tells steps run by the latest execution from steps it replayed.
    "
    ALTER TABLE journal ADD COLUMN execution INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE journal_executions (
        app_id      TEXT    NOT NULL,
        sequence_id INTEGER NOT NULL,
        execution   INTEGER NOT NULL,
        started_at  INTEGER NOT NULL,
        PRIMARY KEY (app_id, sequence_id)
    ) WITHOUT ROWID;
    ",
    // 5 -> 6: a step that paused from inside its action (a durable step
    // out of retries): when, what waits, why, and when it was resumed.
    "
    ALTER TABLE steps ADD COLUMN paused_at    INTEGER;
    ALTER TABLE steps ADD COLUMN paused_on    TEXT;
    ALTER TABLE steps ADD COLUMN pause_reason TEXT;
    ALTER TABLE steps ADD COLUMN resumed_at   INTEGER;
    ",
];

/// Open (creating if needed) the database at `path` for reading and
/// writing: WAL mode, a busy timeout, and the schema migrated to
/// [`SCHEMA_VERSION`]. Blocking: call it off the async threads.
pub(crate) fn open_read_write(path: &Path) -> Result<Connection, SqliteError> {
    let err = |e| SqliteError::sqlite(path, e);
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| SqliteError::CreateDir {
            path: dir.to_path_buf(),
            source: source.into(),
        })?;
    }
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let mut conn = Connection::open_with_flags(path, flags).map_err(err)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(err)?;
    // Setting up a new file takes locks that SQLite will not wait for: two
    // connections both switching a fresh file to WAL would deadlock, so one
    // of them gets SQLITE_BUSY at once, whatever the busy timeout. Retry,
    // within the same bound.
    let deadline = Instant::now() + BUSY_TIMEOUT;
    let mut attempt: u64 = 0;
    loop {
        match set_up(&mut conn, path) {
            Err(e) if e.is_busy() && Instant::now() < deadline => {
                attempt += 1;
                // Spread the retries of racing processes apart.
                let jitter = (attempt * 7 + u64::from(std::process::id())) % 20;
                std::thread::sleep(Duration::from_millis(5 + jitter));
            }
            Err(e) => return Err(e),
            Ok(()) => return Ok(conn),
        }
    }
}

fn set_up(conn: &mut Connection, path: &Path) -> Result<(), SqliteError> {
    let err = |e| SqliteError::sqlite(path, e);
    // Reading the header first tells a non-database file apart before any
    // pragma tries to change it.
    check_header(conn, path)?;
    // WAL: readers never block the writer and a commit is one append. It
    // cannot change inside a transaction, so it comes before the migration.
    let _mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
        .map_err(err)?;
    // FULL: a commit survives power loss, not only a crash of the process;
    // group commit in the writer thread keeps the cost of the fsync low.
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(err)?;
    migrate(conn, path)
}

/// Open an existing database for reading only; never creates, migrates or
/// writes it.
///
/// A database in WAL mode needs its shared-memory file (`-shm`) to be read
/// normally; when the reader may not create or write it (a file owned by
/// another user, a read-only directory or mount), the file is opened again
/// as immutable, which reads the database file alone. A writer that closed
/// cleanly has folded its log into that file, so nothing is missed then;
/// while a writer is running, such a reader sees the last checkpointed
/// state.
///
/// Returns the connection and the file's schema version (a reader reads
/// older versions as they are).
pub(crate) fn open_read_only(path: &Path) -> Result<(Connection, i64), SqliteError> {
    let meta = std::fs::metadata(path).map_err(|_| SqliteError::NotFound {
        path: path.to_path_buf(),
    })?;
    if !meta.is_file() {
        return Err(SqliteError::NotFound {
            path: path.to_path_buf(),
        });
    }
    if meta.len() == 0 {
        return Err(SqliteError::Uninitialized {
            path: path.to_path_buf(),
        });
    }
    match open_checked(path, false) {
        Err(e) if e.is_read_only_or_cannot_open() => open_checked(path, true),
        other => other,
    }
}

fn open_checked(path: &Path, immutable: bool) -> Result<(Connection, i64), SqliteError> {
    let err = |e| SqliteError::sqlite(path, e);
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY
        | OpenFlags::SQLITE_OPEN_NO_MUTEX
        | OpenFlags::SQLITE_OPEN_URI;
    let conn = Connection::open_with_flags(file_uri(path, immutable), flags).map_err(err)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(err)?;
    let version = check_header(&conn, path)?;
    // The tables are read once here, so a file SQLite cannot read (not a
    // database, truncated, damaged) fails now with its own error.
    let tables: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table'",
            [],
            |row| row.get(0),
        )
        .map_err(err)?;
    match version {
        0 if tables > 0 => Err(SqliteError::Foreign {
            path: path.to_path_buf(),
        }),
        0 => Err(SqliteError::Uninitialized {
            path: path.to_path_buf(),
        }),
        _ => {
            conn.prepare("SELECT 1 FROM apps LIMIT 1")
                .and_then(|mut stmt| stmt.exists([]))
                .map_err(err)?;
            Ok((conn, version))
        }
    }
}

/// A `file:` URI for `path` (its `%`, `?` and `#` escaped), read-only and
/// optionally immutable.
fn file_uri(path: &Path, immutable: bool) -> String {
    let mut uri = String::from("file:");
    for ch in path.to_string_lossy().chars() {
        match ch {
            '%' => uri.push_str("%25"),
            '?' => uri.push_str("%3f"),
            '#' => uri.push_str("%23"),
            c => uri.push(c),
        }
    }
    uri.push_str("?mode=ro");
    if immutable {
        uri.push_str("&immutable=1");
    }
    uri
}

/// Read the schema version and application id; refuse a newer schema and a
/// database of another application. Returns the schema version.
fn check_header(conn: &Connection, path: &Path) -> Result<i64, SqliteError> {
    let err = |e| SqliteError::sqlite(path, e);
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(err)?;
    let app_id: i64 = conn
        .pragma_query_value(None, "application_id", |row| row.get(0))
        .map_err(err)?;
    let foreign = || SqliteError::Foreign {
        path: path.to_path_buf(),
    };
    if app_id != 0 && app_id != APPLICATION_ID {
        return Err(foreign());
    }
    if version > SCHEMA_VERSION {
        return Err(SqliteError::SchemaTooNew {
            path: path.to_path_buf(),
            found: version,
            supported: SCHEMA_VERSION,
        });
    }
    if app_id == 0 && version != 0 {
        return Err(foreign());
    }
    Ok(version)
}

/// Bring the schema to [`SCHEMA_VERSION`] in one immediate transaction.
fn migrate(conn: &mut Connection, path: &Path) -> Result<(), SqliteError> {
    let err = |e| SqliteError::sqlite(path, e);
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(err)?;
    // Read again under the lock: another process may have migrated since.
    let version = check_header(&tx, path)?;
    if version == SCHEMA_VERSION {
        return Ok(());
    }
    if version == 0 {
        let tables: i64 = tx
            .query_row(
                "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table'",
                [],
                |row| row.get(0),
            )
            .map_err(err)?;
        if tables > 0 {
            return Err(SqliteError::Foreign {
                path: path.to_path_buf(),
            });
        }
    }
    for migration in &MIGRATIONS[version as usize..] {
        tx.execute_batch(migration).map_err(err)?;
    }
    tx.pragma_update(None, "application_id", APPLICATION_ID)
        .map_err(err)?;
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)
        .map_err(err)?;
    tx.commit().map_err(err)
}

// Every version has its migration.
const _: () = assert!(MIGRATIONS.len() as i64 == SCHEMA_VERSION);
