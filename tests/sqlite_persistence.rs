//! The SQLite persister keeps the persister contract (`persister_contract`):
//! a checkpoint after every step with its status, resume after a failure or a
//! completed step, fork, load and list — and all of it survives reopening
//! the file, since the contract reopens it for every check.

use std::sync::Arc;

use tributary::Persister;
use tributary_sqlite::SqlitePersister;

use crate::persister_contract::Open;

/// A database file in a fresh temp dir (nested dirs are created), reopened
/// on every call; the dir lives as long as the returned closure.
fn sqlite() -> Open {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let path = dir.path().join("nested/dirs/tributary.db");
    Arc::new(move || {
        let (path, _dir) = (path.clone(), Arc::clone(&dir));
        Box::pin(async move {
            let p: Arc<dyn Persister> = Arc::new(SqlitePersister::open(&path).await.unwrap());
            p
        })
    })
}

crate::persister_contract_tests!(sqlite());
