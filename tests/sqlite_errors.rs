//! A file that is not a tributary database gives a clear, typed error; an
//! empty file is migrated to the current schema.

use std::path::Path;

use tributary::Persister;
use tributary_sqlite::{RunReader, SCHEMA_VERSION, SqliteError, SqlitePersister};

/// Reads `PRAGMA user_version` straight from the header of a closed
/// database (bytes 60..64, big endian). Closing the last connection
/// checkpoints the WAL into the main file, so the header is current.
fn user_version(path: &Path) -> i64 {
    let bytes = std::fs::read(path).unwrap();
    i64::from(u32::from_be_bytes(bytes[60..64].try_into().unwrap()))
}

/// Overwrites `PRAGMA user_version` in the header of a closed database.
fn set_user_version(path: &Path, version: u32) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[60..64].copy_from_slice(&version.to_be_bytes());
    std::fs::write(path, bytes).unwrap();
}

#[tokio::test]
async fn a_file_that_is_not_a_database_is_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notes.db");
    std::fs::write(&path, "these are my notes, not a database\n".repeat(200)).unwrap();
    let err = SqlitePersister::open(&path).await.unwrap_err();
    assert!(matches!(err, SqliteError::NotADatabase { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!("{} is not a SQLite database", path.display())
    );
    let err = RunReader::open(&path).unwrap_err();
    assert!(matches!(err, SqliteError::NotADatabase { .. }), "{err:?}");
    // The file was left alone.
    assert!(
        std::fs::read_to_string(&path)
            .unwrap()
            .starts_with("these are my notes")
    );
}

#[tokio::test]
async fn a_newer_schema_version_is_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    drop(SqlitePersister::open(&path).await.unwrap());
    assert_eq!(user_version(&path), SCHEMA_VERSION);
    set_user_version(&path, 99);

    let err = SqlitePersister::open(&path).await.unwrap_err();
    assert!(
        matches!(err, SqliteError::SchemaTooNew { found: 99, supported, .. } if supported == SCHEMA_VERSION),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        format!(
            "database {} has schema version 99, newer than version {SCHEMA_VERSION} which this tributary supports; upgrade tributary",
            path.display()
        )
    );
    assert!(matches!(
        RunReader::open(&path).unwrap_err(),
        SqliteError::SchemaTooNew { found: 99, .. }
    ));
}

#[tokio::test]
async fn an_empty_file_is_migrated_to_the_current_schema() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("empty.db");
    std::fs::write(&path, b"").unwrap();
    // A reader never migrates: an empty file has no tributary data yet.
    assert!(matches!(
        RunReader::open(&path).unwrap_err(),
        SqliteError::Uninitialized { .. }
    ));
    let p = SqlitePersister::open(&path).await.unwrap();
    assert!(p.list_app_ids(None).await.unwrap().is_empty());
    drop(p);
    assert_eq!(user_version(&path), SCHEMA_VERSION);
    // Opening again finds the schema current and keeps the data.
    let reader = RunReader::open(&path).unwrap();
    assert!(reader.runs().unwrap().is_empty());
}

#[tokio::test]
async fn a_missing_file_is_created_by_writers_and_refused_by_readers() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a/b/c.db");
    let err = RunReader::open(&path).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("no tributary database at {}", path.display())
    );
    assert!(!path.exists());
    SqlitePersister::open(&path).await.unwrap();
    assert!(path.is_file());
}

#[tokio::test]
async fn a_database_of_another_application_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("other.db");
    // Make a real SQLite database through a tributary one, then stamp
    // another application id into its header (bytes 68..72).
    drop(SqlitePersister::open(&path).await.unwrap());
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[68..72].copy_from_slice(&0x1234_5678u32.to_be_bytes());
    std::fs::write(&path, bytes).unwrap();
    let err = SqlitePersister::open(&path).await.unwrap_err();
    assert!(matches!(err, SqliteError::Foreign { .. }), "{err:?}");
}

#[tokio::test]
async fn a_directory_that_cannot_be_created_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("file");
    std::fs::write(&blocker, b"x").unwrap();
    let path = blocker.join("sub/t.db");
    let err = SqlitePersister::open(&path).await.unwrap_err();
    assert!(matches!(err, SqliteError::CreateDir { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains(&blocker.join("sub").display().to_string())
    );
}

#[tokio::test]
async fn a_database_with_damaged_pages_is_reported_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    drop(SqlitePersister::open(&path).await.unwrap());
    // Keep the 100-byte header (a valid SQLite file, schema version 1) and
    // scribble over the schema page that follows it.
    let mut bytes = std::fs::read(&path).unwrap();
    for b in &mut bytes[100..4096] {
        *b = 0xA5;
    }
    std::fs::write(&path, bytes).unwrap();
    let err = SqlitePersister::open(&path).await.unwrap_err();
    assert!(matches!(err, SqliteError::Corrupt { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!("SQLite database {} is corrupt", path.display())
    );
    let err = RunReader::open(&path)
        .and_then(|r| r.runs().map(drop))
        .unwrap_err();
    assert!(matches!(err, SqliteError::Corrupt { .. }), "{err:?}");
}
