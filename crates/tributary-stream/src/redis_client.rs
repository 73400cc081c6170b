//! One way to talk to Redis for every Redis-backed part: a maintained
//! connection manager that reconnects after a dropped connection, and a
//! deadline on every command.
//!
//! The manager (`redis::aio::ConnectionManager`) replaces its connection in
//! the background once a command fails on a dead one; the command that saw
//! the failure still fails. Idempotent commands are therefore sent once more
//! after such a failure, so that a single dropped connection (an idle kill,
//! a failover) costs nothing. Every command runs under a deadline of its
//! own: a stalled server (a paused process, a network partition) makes a
//! call fail with a timeout instead of waiting forever.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{FromRedisValue, RedisError};

/// How long any one command may take by default.
pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a command failed.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The server or the client failed.
    Redis(RedisError),
    /// No reply within the deadline.
    Timeout(Duration),
}

/// A connection manager for the server at `url`. It connects now (retrying
/// a few times) and reconnects by itself later.
pub(crate) async fn manager(url: &str) -> Result<ConnectionManager, RedisError> {
    let client = redis::Client::open(url)?;
    let config = ConnectionManagerConfig::new()
        // Deadlines are ours (per command, also around blocking reads).
        .set_response_timeout(None)
        .set_connection_timeout(Some(Duration::from_secs(5)))
        .set_number_of_retries(4)
        .set_min_delay(Duration::from_millis(20))
        .set_max_delay(Duration::from_secs(1));
    ConnectionManager::new_with_config(client, config).await
}

/// Whether `e` says the connection broke (the manager is reconnecting).
pub(crate) fn connection_lost(e: &RedisError) -> bool {
    e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal()
}

/// Runs `cmd` once, failing after `deadline`.
pub(crate) async fn once<T: FromRedisValue>(
    conn: &mut ConnectionManager,
    cmd: &redis::Cmd,
    deadline: Duration,
) -> Result<T, Failure> {
    match tokio::time::timeout(deadline, cmd.query_async::<T>(conn)).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) if e.is_timeout() => Err(Failure::Timeout(deadline)),
        Ok(Err(e)) => Err(Failure::Redis(e)),
        Err(_) => Err(Failure::Timeout(deadline)),
    }
}

/// Runs an idempotent `cmd`, sending it once more when the first attempt
/// found the connection broken (the manager has reconnected by then, or the
/// second attempt reports why not).
pub(crate) async fn idempotent<T: FromRedisValue>(
    conn: &mut ConnectionManager,
    cmd: &redis::Cmd,
    deadline: Duration,
) -> Result<T, Failure> {
    match once(conn, cmd, deadline).await {
        Err(Failure::Redis(e)) if connection_lost(&e) => once(conn, cmd, deadline).await,
        other => other,
    }
}
