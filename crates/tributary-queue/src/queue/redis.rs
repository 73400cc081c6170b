//! The Redis Streams backend.
//!
//! The queue is the stream `<name>`; a group is a consumer group of it. A
//! delivery is an entry in the group's pending-entries list: its idle time
//! is the lease clock and its delivery count the attempt number. Expired
//! leases are claimed (`XPENDING … IDLE`, `XCLAIM`), naks and in-progress
//! reset the idle time (`XCLAIM … IDLE … JUSTID`), dead letters go to the
//! stream `<name>:dead:<group>`, last errors to the hash
//! `<name>:errors:<group>`, and dedupe ids are checked by the consumer side
//! under `<name>:seen:<group>:<id>`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::streams::{
    StreamInfoGroupsReply, StreamPendingCountReply, StreamPendingReply, StreamRangeReply,
};
use tokio::time::Instant;

use super::{DeadLetter, Delivery, QueueOptions, Start, WorkQueue};
use crate::error::QueueError;

const BACKEND: &str = "redis";

/// Reads up to ARGV[3] new entries for consumer ARGV[2] of group ARGV[1],
/// never beyond ARGV[4] pending in the group: the count and the read are
/// one atomic step, so concurrent fetchers cannot together exceed the
/// limit. Returns the stream's last id, then id, payload, dedupe id per
/// entry.
const READ_NEW: &str = r"
local pending = redis.call('XPENDING', KEYS[1], ARGV[1])[1]
local n = math.min(tonumber(ARGV[3]), tonumber(ARGV[4]) - pending)
local out = {}
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
if #last > 0 then out[1] = last[1][1] else out[1] = '0-0' end
if n <= 0 then return out end
local r = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', n, 'STREAMS', KEYS[1], '>')
if not r then return out end
for _, e in ipairs(r[1][2]) do
  local p, d = '', ''
  local f = e[2]
  for i = 1, #f, 2 do
    if f[i] == 'p' then p = f[i + 1] elseif f[i] == 'd' then d = f[i + 1] end
  end
  table.insert(out, e[1])
  table.insert(out, p)
  table.insert(out, d)
end
return out
";

/// A work queue on a Redis stream. Clones share the connection, which
/// reconnects by itself; every command has a deadline
/// ([`with_timeout`](Self::with_timeout)).
///
/// Durability is the server's: with `appendonly yes` (and `appendfsync
/// everysec` or `always`) a published message survives a restart; without
/// persistence a restart loses the queue, its groups and their progress.
/// A nak's delay is measured on the lease clock, so on this backend a delay
/// longer than the lease is shortened to the lease.
#[derive(Clone)]
pub struct RedisQueue {
    name: String,
    options: QueueOptions,
    conn: ConnectionManager,
    // Blocking waits for new entries, apart so they never hold up the
    // commands on `conn` (a multiplexed connection answers in order).
    waits: ConnectionManager,
    timeout: Duration,
    dedupe_window: Duration,
    read_new: redis::Script,
    // When a fetch last looked for expired leases; they are looked for at
    // least every eighth of a lease, and whenever nothing new is there.
    reclaimed: Arc<Mutex<Instant>>,
    // A wait for new entries still blocked on `waits` after its fetch
    // stopped waiting for it: the next fetch waits on it instead of
    // queueing another behind it.
    outstanding: Arc<Mutex<Option<Wait>>>,
}

impl std::fmt::Debug for RedisQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisQueue")
            .field("name", &self.name)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// A blocked read for new entries, run as a task of its own.
type Wait = tokio::task::JoinHandle<Result<(), Failure>>;

enum Failure {
    Redis(redis::RedisError),
    Timeout(Duration),
}

fn lost(e: &redis::RedisError) -> bool {
    e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal()
}

impl RedisQueue {
    /// Connects to the server at `url`; the queue is the stream `name`.
    ///
    /// # Errors
    ///
    /// When the URL is invalid or the server unreachable.
    pub async fn connect(
        url: &str,
        name: impl Into<String>,
        options: QueueOptions,
    ) -> Result<Self, QueueError> {
        let name = name.into();
        let fail = |e: redis::RedisError| QueueError::Backend {
            backend: BACKEND,
            queue: name.clone(),
            what: format!("connect to {url}"),
            source: Box::new(e),
        };
        let client = redis::Client::open(url).map_err(fail)?;
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(None)
            .set_connection_timeout(Some(Duration::from_secs(5)))
            .set_number_of_retries(4)
            .set_min_delay(Duration::from_millis(20))
            .set_max_delay(Duration::from_secs(1));
        let conn = ConnectionManager::new_with_config(client.clone(), config.clone())
            .await
            .map_err(fail)?;
        let waits = ConnectionManager::new_with_config(client, config)
            .await
            .map_err(fail)?;
        Ok(Self {
            name,
            options,
            conn,
            waits,
            timeout: Duration::from_secs(10),
            dedupe_window: Duration::from_secs(3600),
            read_new: redis::Script::new(READ_NEW),
            reclaimed: Arc::new(Mutex::new(Instant::now())),
            outstanding: Arc::default(),
        })
    }

    /// How long one command may wait for the server (default 10 s).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How long a group remembers a dedupe id (default 1 hour).
    pub fn with_dedupe_window(mut self, window: Duration) -> Self {
        self.dedupe_window = window;
        self
    }

    fn error(&self, what: &str, f: Failure) -> QueueError {
        match f {
            Failure::Redis(e) => QueueError::Backend {
                backend: BACKEND,
                queue: self.name.clone(),
                what: what.to_owned(),
                source: Box::new(e),
            },
            Failure::Timeout(after) => QueueError::Timeout {
                backend: BACKEND,
                queue: self.name.clone(),
                what: what.to_owned(),
                after,
            },
        }
    }

    async fn once<T: redis::FromRedisValue>(
        &self,
        cmd: &redis::Cmd,
        deadline: Duration,
    ) -> Result<T, Failure> {
        self.once_on(&self.conn, cmd, deadline).await
    }

    async fn once_on<T: redis::FromRedisValue>(
        &self,
        conn: &ConnectionManager,
        cmd: &redis::Cmd,
        deadline: Duration,
    ) -> Result<T, Failure> {
        let mut conn = conn.clone();
        match tokio::time::timeout(deadline, cmd.query_async::<T>(&mut conn)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(Failure::Redis(e)),
            Err(_) => Err(Failure::Timeout(deadline)),
        }
    }

    /// Runs an idempotent command, once more after a broken connection.
    async fn query<T: redis::FromRedisValue>(
        &self,
        cmd: &redis::Cmd,
        what: impl FnOnce() -> String,
    ) -> Result<T, QueueError> {
        let result = match self.once(cmd, self.timeout).await {
            Err(Failure::Redis(e)) if lost(&e) => self.once(cmd, self.timeout).await,
            other => other,
        };
        result.map_err(|f| self.error(&what(), f))
    }

    fn dead_key(&self, group: &str) -> String {
        format!("{}:dead:{group}", self.name)
    }

    fn errors_key(&self, group: &str) -> String {
        format!("{}:errors:{group}", self.name)
    }

    /// Moves entry `id` of `group` to the dead letters.
    async fn bury(
        &self,
        group: &str,
        id: &str,
        attempts: u32,
        error: Option<&str>,
    ) -> Result<(), QueueError> {
        let mut range = redis::cmd("XRANGE");
        range.arg(&self.name).arg(id).arg(id);
        let entry: StreamRangeReply = self.query(&range, || format!("read {id}")).await?;
        let last_error: Option<String> = match error {
            Some(e) => Some(e.to_owned()),
            None => {
                let mut get = redis::cmd("HGET");
                get.arg(self.errors_key(group)).arg(id);
                self.query(&get, || format!("read the error of {id}"))
                    .await?
            }
        };
        let mut pipe = redis::pipe();
        pipe.atomic();
        if let Some(e) = entry.ids.first() {
            let payload: Vec<u8> = e.get("p").unwrap_or_default();
            let dedupe: Option<String> = e.get("d");
            let dead = pipe
                .cmd("XADD")
                .arg(self.dead_key(group))
                .arg("*")
                .arg("p")
                .arg(payload)
                .arg("a")
                .arg(attempts);
            if let Some(d) = dedupe {
                dead.arg("d").arg(d);
            }
            if let Some(err) = &last_error {
                dead.arg("e").arg(err);
            }
        }
        pipe.cmd("XACK").arg(&self.name).arg(group).arg(id);
        pipe.cmd("HDEL").arg(self.errors_key(group)).arg(id);
        self.run_pipe(&pipe, || format!("dead-letter {id}")).await
    }

    /// Whether the stream exists.
    async fn exists(&self) -> Result<bool, QueueError> {
        let mut exists = redis::cmd("EXISTS");
        exists.arg(&self.name);
        let n: u64 = self
            .query(&exists, || "look for the stream".to_owned())
            .await?;
        Ok(n > 0)
    }

    /// Runs a pipeline in one round trip, within the command timeout.
    async fn run_pipe(
        &self,
        pipe: &redis::Pipeline,
        what: impl FnOnce() -> String,
    ) -> Result<(), QueueError> {
        let mut conn = self.conn.clone();
        match tokio::time::timeout(self.timeout, pipe.query_async::<()>(&mut conn)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(self.error(&what(), Failure::Redis(e))),
            Err(_) => Err(self.error(&what(), Failure::Timeout(self.timeout))),
        }
    }

    /// Expired leases of `group`, claimed for `consumer` (or buried).
    async fn reclaim(
        &self,
        group: &str,
        consumer: &str,
        max: usize,
    ) -> Result<Vec<Delivery>, QueueError> {
        let lease = self.options.lease.as_millis() as u64;
        let mut cmd = redis::cmd("XPENDING");
        cmd.arg(&self.name)
            .arg(group)
            .arg("IDLE")
            .arg(lease)
            .arg("-")
            .arg("+")
            .arg(max);
        let expired: StreamPendingCountReply = self
            .query(&cmd, || format!("list expired leases of group {group}"))
            .await?;
        let mut out = Vec::new();
        for p in expired.ids {
            let delivered = u32::try_from(p.times_delivered).unwrap_or(u32::MAX);
            if delivered >= self.options.max_deliveries {
                self.bury(group, &p.id, delivered, None).await?;
                continue;
            }
            let mut claim = redis::cmd("XCLAIM");
            claim
                .arg(&self.name)
                .arg(group)
                .arg(consumer)
                .arg(lease)
                .arg(&p.id);
            // Only one fetcher wins the claim: the idle time is checked again.
            let claimed: StreamRangeReply = self
                .query(&claim, || format!("claim {} for group {group}", p.id))
                .await?;
            for e in claimed.ids {
                out.push(Delivery {
                    payload: e.get::<Vec<u8>>("p").unwrap_or_default().into(),
                    dedupe_id: e.get("d"),
                    attempt: delivered.saturating_add(1),
                    group: group.to_owned(),
                    consumer: consumer.to_owned(),
                    position: e.id.clone(),
                    token: e.id,
                });
            }
        }
        Ok(out)
    }

    /// New entries for `consumer`, within the in-flight limit; also the
    /// stream's last id, to wait for newer ones.
    async fn read_new(
        &self,
        group: &str,
        consumer: &str,
        max: usize,
    ) -> Result<(String, Vec<Delivery>), QueueError> {
        let mut invocation = self.read_new.key(&self.name);
        invocation
            .arg(group)
            .arg(consumer)
            .arg(max)
            .arg(self.options.max_in_flight);
        let mut conn = self.conn.clone();
        let what = || format!("read new entries for group {group}");
        let reply: Vec<Vec<u8>> =
            match tokio::time::timeout(self.timeout, invocation.invoke_async(&mut conn)).await {
                Ok(Ok(v)) => v,
                Ok(Err(e)) => return Err(self.error(&what(), Failure::Redis(e))),
                Err(_) => return Err(self.error(&what(), Failure::Timeout(self.timeout))),
            };
        let mut fields = reply.into_iter();
        let last = String::from_utf8_lossy(&fields.next().unwrap_or_default()).into_owned();
        let mut out = Vec::new();
        while let (Some(id), Some(payload), Some(dedupe)) =
            (fields.next(), fields.next(), fields.next())
        {
            let id = String::from_utf8_lossy(&id).into_owned();
            let dedupe_id =
                (!dedupe.is_empty()).then(|| String::from_utf8_lossy(&dedupe).into_owned());
            if let Some(d) = &dedupe_id {
                if !self.first_of(group, d, &id).await? {
                    let mut ack = redis::cmd("XACK");
                    ack.arg(&self.name).arg(group).arg(&id);
                    self.query::<()>(&ack, || format!("skip duplicate {id}"))
                        .await?;
                    continue;
                }
            }
            out.push(Delivery {
                payload: payload.into(),
                dedupe_id,
                attempt: 1,
                group: group.to_owned(),
                consumer: consumer.to_owned(),
                position: id.clone(),
                token: id,
            });
        }
        Ok((last, out))
    }

    async fn fetch_inner(
        &self,
        group: &str,
        consumer: &str,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Delivery>, QueueError> {
        let deadline = Instant::now() + wait;
        loop {
            let due = {
                let mut last = self.reclaimed.lock().unwrap_or_else(|e| e.into_inner());
                let due = last.elapsed() >= self.options.lease / 8;
                if due {
                    *last = Instant::now();
                }
                due
            };
            // Expired leases go out before new messages.
            let mut out = if due {
                self.reclaim(group, consumer, max).await?
            } else {
                Vec::new()
            };
            let (last, new) = self.read_new(group, consumer, max - out.len()).await?;
            out.extend(new);
            if out.is_empty() && !due {
                out = self.reclaim(group, consumer, max).await?;
            }
            let now = Instant::now();
            if !out.is_empty() || now >= deadline {
                return Ok(out);
            }
            // Wait for an entry newer than the last one, or until the leases
            // are due to be looked at again (every eighth of a lease: an
            // expired lease waits at most that long for a consumer).
            let block = (deadline - now)
                .min(self.options.lease / 8)
                .min(Duration::from_millis(100))
                .max(Duration::from_millis(1));
            // Redis ends a blocked read on its own timer (ten times a second
            // by default), so a short BLOCK can end up to 100 ms late: wait
            // at most `block` here. A read given up on stays blocked on the
            // waits connection; the next fetch waits on that one instead of
            // queueing another behind it (at most one per queue handle and
            // fetcher). An entry newer than the one it waits after wakes it.
            let outstanding = self
                .outstanding
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take()
                .filter(|w| !w.is_finished());
            let mut wait = match outstanding {
                Some(w) => w,
                None => {
                    let mut cmd = redis::cmd("XREAD");
                    cmd.arg("BLOCK")
                        .arg(block.as_millis() as u64)
                        .arg("STREAMS")
                        .arg(&self.name)
                        .arg(&last);
                    let mut conn = self.waits.clone();
                    let deadline = block + self.timeout;
                    tokio::spawn(async move {
                        match tokio::time::timeout(
                            deadline,
                            cmd.query_async::<redis::Value>(&mut conn),
                        )
                        .await
                        {
                            Ok(Ok(_)) => Ok(()),
                            Ok(Err(e)) => Err(Failure::Redis(e)),
                            Err(_) => Err(Failure::Timeout(deadline)),
                        }
                    })
                }
            };
            tokio::select! {
                waited = &mut wait => match waited {
                    Ok(Ok(())) => {}
                    Ok(Err(f)) => return Err(self.error("wait for new entries", f)),
                    // The wait's task ended without an answer: look again.
                    Err(_) => {}
                },
                () = tokio::time::sleep(block) => {
                    *self.outstanding.lock().unwrap_or_else(|e| e.into_inner()) = Some(wait);
                }
            }
        }
    }

    /// Whether entry `id` is the first of `group` with dedupe id `dedupe`.
    async fn first_of(&self, group: &str, dedupe: &str, id: &str) -> Result<bool, QueueError> {
        let key = format!("{}:seen:{group}:{dedupe}", self.name);
        let mut set = redis::cmd("SET");
        set.arg(&key)
            .arg(id)
            .arg("NX")
            .arg("GET")
            .arg("PX")
            .arg(self.dedupe_window.as_millis() as u64);
        // SET NX GET: nil when we set it, else the id that holds it.
        let holder: Option<String> = self
            .query(&set, || format!("check dedupe id {dedupe}"))
            .await?;
        Ok(holder.is_none_or(|h| h == id))
    }
}

#[async_trait]
impl WorkQueue for RedisQueue {
    fn name(&self) -> &str {
        &self.name
    }

    fn options(&self) -> QueueOptions {
        self.options
    }

    async fn publish(&self, payload: Bytes, dedupe_id: Option<&str>) -> Result<(), QueueError> {
        let mut cmd = redis::cmd("XADD");
        cmd.arg(&self.name).arg("*").arg("p").arg(payload.as_ref());
        if let Some(d) = dedupe_id {
            cmd.arg("d").arg(d);
        }
        // Not sent twice: a lost reply may hide a stored entry. A caller
        // that retries should give a dedupe id.
        self.once::<String>(&cmd, self.timeout)
            .await
            .map_err(|f| self.error("publish", f))?;
        Ok(())
    }

    async fn create_group(&self, group: &str, start: Start) -> Result<(), QueueError> {
        let mut cmd = redis::cmd("XGROUP");
        cmd.arg("CREATE")
            .arg(&self.name)
            .arg(group)
            .arg(match &start {
                Start::First => "0",
                Start::New => "$",
                // Entries after this id.
                Start::After(id) => id.as_str(),
            })
            .arg("MKSTREAM");
        match self
            .query::<()>(&cmd, || format!("create group {group}"))
            .await
        {
            Ok(()) => Ok(()),
            Err(QueueError::Backend { source, .. }) if source.to_string().contains("BUSYGROUP") => {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    async fn fetch(
        &self,
        group: &str,
        consumer: &str,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Delivery>, QueueError> {
        self.fetch_inner(group, consumer, max, wait)
            .await
            .map_err(|e| match e {
                QueueError::Backend { source, .. } if source.to_string().contains("NOGROUP") => {
                    QueueError::UnknownGroup {
                        queue: self.name.clone(),
                        group: group.to_owned(),
                    }
                }
                e => e,
            })
    }

    async fn ack_all(&self, deliveries: &[Delivery]) -> Result<(), QueueError> {
        let Some(first) = deliveries.first() else {
            return Ok(());
        };
        // One XACK and one HDEL per group, all in one round trip.
        let mut groups: Vec<&str> = deliveries.iter().map(|d| d.group.as_str()).collect();
        groups.sort_unstable();
        groups.dedup();
        let mut pipe = redis::pipe();
        for group in groups {
            let ids = deliveries
                .iter()
                .filter(|d| d.group == group)
                .map(|d| d.token.as_str());
            let ids: Vec<&str> = ids.collect();
            pipe.cmd("XACK")
                .arg(&self.name)
                .arg(group)
                .arg(&ids)
                .ignore();
            pipe.cmd("HDEL")
                .arg(self.errors_key(group))
                .arg(&ids)
                .ignore();
        }
        self.run_pipe(&pipe, || match deliveries.len() {
            1 => format!("ack {}", first.token),
            n => format!("ack {n} deliveries from {}", first.token),
        })
        .await
    }

    async fn ack(&self, delivery: &Delivery) -> Result<(), QueueError> {
        self.ack_all(std::slice::from_ref(delivery)).await
    }

    async fn nak(
        &self,
        delivery: &Delivery,
        delay: Duration,
        error: &str,
    ) -> Result<(), QueueError> {
        if delivery.attempt >= self.options.max_deliveries {
            return self
                .bury(
                    &delivery.group,
                    &delivery.token,
                    delivery.attempt,
                    Some(error),
                )
                .await;
        }
        let mut set = redis::cmd("HSET");
        set.arg(self.errors_key(&delivery.group))
            .arg(&delivery.token)
            .arg(error);
        self.query::<()>(&set, || format!("record the error of {}", delivery.token))
            .await?;
        // Idle for `lease - delay`: the lease runs out `delay` from now.
        let idle = self.options.lease.saturating_sub(delay);
        let mut claim = redis::cmd("XCLAIM");
        claim
            .arg(&self.name)
            .arg(&delivery.group)
            .arg(&delivery.consumer)
            .arg(0)
            .arg(&delivery.token)
            .arg("IDLE")
            .arg(idle.as_millis() as u64)
            .arg("JUSTID");
        self.query::<redis::Value>(&claim, || format!("nak {}", delivery.token))
            .await?;
        Ok(())
    }

    async fn in_progress(&self, delivery: &Delivery) -> Result<(), QueueError> {
        let mut check = redis::cmd("XPENDING");
        check
            .arg(&self.name)
            .arg(&delivery.group)
            .arg(&delivery.token)
            .arg(&delivery.token)
            .arg(1);
        let held: StreamPendingCountReply = self
            .query(&check, || format!("look up {}", delivery.token))
            .await?;
        let ours = held.ids.first().is_some_and(|p| {
            p.consumer == delivery.consumer && p.times_delivered == delivery.attempt as usize
        });
        if !ours {
            return Err(QueueError::NotHeld {
                queue: self.name.clone(),
                consumer: delivery.consumer.clone(),
                token: delivery.token.clone(),
            });
        }
        let mut claim = redis::cmd("XCLAIM");
        claim
            .arg(&self.name)
            .arg(&delivery.group)
            .arg(&delivery.consumer)
            .arg(0)
            .arg(&delivery.token)
            .arg("JUSTID");
        self.query::<redis::Value>(&claim, || format!("extend {}", delivery.token))
            .await?;
        Ok(())
    }

    async fn terminate(&self, delivery: &Delivery, error: &str) -> Result<(), QueueError> {
        self.bury(
            &delivery.group,
            &delivery.token,
            delivery.attempt,
            Some(error),
        )
        .await
    }

    async fn dead_letters(&self, group: &str) -> Result<Vec<DeadLetter>, QueueError> {
        let mut cmd = redis::cmd("XRANGE");
        cmd.arg(self.dead_key(group)).arg("-").arg("+");
        let reply: StreamRangeReply = self
            .query(&cmd, || format!("read the dead letters of group {group}"))
            .await?;
        Ok(reply
            .ids
            .into_iter()
            .map(|e| DeadLetter {
                id: dead_letter_id(group, &e.id),
                payload: e.get::<Vec<u8>>("p").unwrap_or_default().into(),
                dedupe_id: e.get("d"),
                attempts: e.get("a").unwrap_or(0),
                last_error: e.get("e"),
            })
            .collect())
    }

    async fn remove_dead_letter(&self, group: &str, id: &str) -> Result<bool, QueueError> {
        // Entry ids are per stream, and each group has a stream of its own:
        // another group's dead letter can have the same entry id, so the id
        // handed out names its group too.
        let Some(entry) = dead_letter_entry(group, id) else {
            return Ok(false);
        };
        let mut cmd = redis::cmd("XDEL");
        cmd.arg(self.dead_key(group)).arg(entry);
        match self
            .query::<u64>(&cmd, || format!("remove dead letter {id} of group {group}"))
            .await
        {
            Ok(n) => Ok(n > 0),
            // Not an id of a stream entry: no such dead letter.
            Err(QueueError::Backend { source, .. })
                if source.to_string().contains("Invalid stream ID") =>
            {
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    async fn trim(&self) -> Result<u64, QueueError> {
        let mut info = redis::cmd("XINFO");
        info.arg("GROUPS").arg(&self.name);
        let groups: StreamInfoGroupsReply =
            self.query(&info, || "list the groups".to_owned()).await?;
        let mut keep_from: Option<(u64, u64)> = None;
        for g in groups.groups {
            let mut from = next_id(&g.last_delivered_id);
            if g.pending > 0 {
                let mut summary = redis::cmd("XPENDING");
                summary.arg(&self.name).arg(&g.name);
                let pending: StreamPendingReply = self
                    .query(&summary, || format!("summarise group {}", g.name))
                    .await?;
                if let StreamPendingReply::Data(d) = pending {
                    from = from.min(parse_id(&d.start_id));
                }
            }
            keep_from = Some(keep_from.map_or(from, |k| k.min(from)));
        }
        // Without groups nothing was read: everything is unread.
        let Some((ms, seq)) = keep_from else {
            return Ok(0);
        };
        let mut trim = redis::cmd("XTRIM");
        trim.arg(&self.name).arg("MINID").arg(format!("{ms}-{seq}"));
        self.query(&trim, || "trim".to_owned()).await
    }

    async fn stored(&self) -> Result<u64, QueueError> {
        let mut cmd = redis::cmd("XLEN");
        cmd.arg(&self.name);
        self.query(&cmd, || "count entries".to_owned()).await
    }

    async fn backlog(&self, group: &str) -> Result<crate::Backlog, QueueError> {
        let unknown = || QueueError::UnknownGroup {
            queue: self.name.clone(),
            group: group.to_owned(),
        };
        if !self.exists().await? {
            return Err(unknown());
        }
        let mut info = redis::cmd("XINFO");
        info.arg("GROUPS").arg(&self.name);
        let groups: StreamInfoGroupsReply =
            self.query(&info, || "list the groups".to_owned()).await?;
        let g = groups
            .groups
            .into_iter()
            .find(|g| g.name == group)
            .ok_or_else(unknown)?;
        Ok(crate::Backlog {
            waiting: g.lag.map(|n| n as u64),
            pending: g.pending as u64,
        })
    }

    async fn delete_group(&self, group: &str) -> Result<(), QueueError> {
        if self.exists().await? {
            let mut destroy = redis::cmd("XGROUP");
            destroy.arg("DESTROY").arg(&self.name).arg(group);
            let _: u64 = self
                .query(&destroy, || format!("remove group {group}"))
                .await?;
        }
        // Dedupe ids of the group expire by themselves.
        let mut del = redis::cmd("DEL");
        del.arg(self.dead_key(group)).arg(self.errors_key(group));
        let _: u64 = self
            .query(&del, || format!("remove the dead letters of group {group}"))
            .await?;
        Ok(())
    }

    async fn destroy(&self) -> Result<(), QueueError> {
        if self.exists().await? {
            let mut info = redis::cmd("XINFO");
            info.arg("GROUPS").arg(&self.name);
            let groups: StreamInfoGroupsReply =
                self.query(&info, || "list the groups".to_owned()).await?;
            for g in groups.groups {
                self.delete_group(&g.name).await?;
            }
        }
        let mut del = redis::cmd("DEL");
        del.arg(&self.name);
        let _: u64 = self.query(&del, || "remove the stream".to_owned()).await?;
        Ok(())
    }
}

fn parse_id(id: &str) -> (u64, u64) {
    let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
    (ms.parse().unwrap_or(0), seq.parse().unwrap_or(0))
}

/// The smallest id after `id`.
fn next_id(id: &str) -> (u64, u64) {
    let (ms, seq) = parse_id(id);
    match seq.checked_add(1) {
        Some(seq) => (ms, seq),
        None => (ms.saturating_add(1), 0),
    }
}

/// The id of a dead letter: its entry id in its group's dead-letter stream,
/// after the group's name (entry ids are only unique within one stream).
fn dead_letter_id(group: &str, entry: &str) -> String {
    format!("{group}:{entry}")
}

/// The entry id in `group`'s dead-letter stream of the dead letter `id`;
/// `None` when `id` is not one of `group`'s.
fn dead_letter_entry<'a>(group: &str, id: &'a str) -> Option<&'a str> {
    id.strip_prefix(group)?.strip_prefix(':')
}

#[cfg(test)]
mod tests {
    use super::{dead_letter_entry, dead_letter_id};

    #[test]
    fn a_dead_letter_id_names_its_group_and_no_other() {
        // Two groups' streams can both hold an entry `1700000000000-1`.
        let id = dead_letter_id("g", "1700000000000-1");
        assert_eq!(dead_letter_entry("g", &id), Some("1700000000000-1"));
        assert_eq!(dead_letter_entry("other", &id), None);
        assert_eq!(dead_letter_entry("g:x", &id), None);
        let nested = dead_letter_id("g:x", "5-0");
        assert_eq!(dead_letter_entry("g:x", &nested), Some("5-0"));
        assert_eq!(
            dead_letter_entry("g", &nested),
            Some("x:5-0"),
            "not an entry id: XDEL refuses it"
        );
        assert_eq!(dead_letter_entry("g", "1700000000000-1"), None);
    }
}
