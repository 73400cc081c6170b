//! The work-queue contract, written once and run unchanged against every
//! backend (`queue_memory`, `queue_redis`, `queue_nats` instantiate it with
//! [`conformance!`]).
//!
//! Leases are short and waits bounded; the clock is real, since the
//! brokers' clocks are.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::future::BoxFuture;
use tributary_queue::{DeadLetter, Delivery, QueueError, QueueOptions, Start, WorkQueue};

/// Builds a fresh queue (a name no other test uses) with these options.
pub(crate) type Make = fn(QueueOptions) -> BoxFuture<'static, Box<dyn WorkQueue>>;

/// A queue that runs a cleanup (deleting its keys or streams) when the
/// test ends.
pub(crate) struct Cleaned<Q> {
    inner: Q,
    cleanup: Option<Box<dyn FnOnce() + Send + Sync>>,
}

impl<Q> Cleaned<Q> {
    pub(crate) fn new(inner: Q, cleanup: impl FnOnce() + Send + Sync + 'static) -> Self {
        Self {
            inner,
            cleanup: Some(Box::new(cleanup)),
        }
    }
}

impl<Q: std::fmt::Debug> std::fmt::Debug for Cleaned<Q> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.inner.fmt(f)
    }
}

impl<Q> Drop for Cleaned<Q> {
    fn drop(&mut self) {
        if let Some(cleanup) = self.cleanup.take() {
            cleanup();
        }
    }
}

#[async_trait]
impl<Q: WorkQueue> WorkQueue for Cleaned<Q> {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn options(&self) -> QueueOptions {
        self.inner.options()
    }
    async fn publish(&self, payload: Bytes, dedupe_id: Option<&str>) -> Result<(), QueueError> {
        self.inner.publish(payload, dedupe_id).await
    }
    async fn create_group(&self, group: &str, start: Start) -> Result<(), QueueError> {
        self.inner.create_group(group, start).await
    }
    async fn fetch(
        &self,
        group: &str,
        consumer: &str,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Delivery>, QueueError> {
        self.inner.fetch(group, consumer, max, wait).await
    }
    async fn ack(&self, d: &Delivery) -> Result<(), QueueError> {
        self.inner.ack(d).await
    }
    async fn ack_all(&self, d: &[Delivery]) -> Result<(), QueueError> {
        self.inner.ack_all(d).await
    }
    async fn nak(&self, d: &Delivery, delay: Duration, error: &str) -> Result<(), QueueError> {
        self.inner.nak(d, delay, error).await
    }
    async fn in_progress(&self, d: &Delivery) -> Result<(), QueueError> {
        self.inner.in_progress(d).await
    }
    async fn terminate(&self, d: &Delivery, error: &str) -> Result<(), QueueError> {
        self.inner.terminate(d, error).await
    }
    async fn dead_letters(&self, group: &str) -> Result<Vec<DeadLetter>, QueueError> {
        self.inner.dead_letters(group).await
    }
    async fn remove_dead_letter(&self, group: &str, id: &str) -> Result<bool, QueueError> {
        self.inner.remove_dead_letter(group, id).await
    }
    async fn trim(&self) -> Result<u64, QueueError> {
        self.inner.trim().await
    }
    async fn stored(&self) -> Result<u64, QueueError> {
        self.inner.stored().await
    }
    async fn delete_group(&self, group: &str) -> Result<(), QueueError> {
        self.inner.delete_group(group).await
    }
    async fn destroy(&self) -> Result<(), QueueError> {
        self.inner.destroy().await
    }
    async fn backlog(&self, group: &str) -> Result<tributary_queue::Backlog, QueueError> {
        self.inner.backlog(group).await
    }
}

/// A bound on any wait.
const WAIT: Duration = Duration::from_secs(10);

fn opts() -> QueueOptions {
    QueueOptions::default()
        .lease(Duration::from_millis(400))
        .max_deliveries(5)
        .max_in_flight(100)
}

async fn fetch_one(q: &dyn WorkQueue, group: &str, consumer: &str) -> tributary_queue::Delivery {
    let mut got = q.fetch(group, consumer, 1, WAIT).await.unwrap();
    assert_eq!(got.len(), 1, "one delivery within {WAIT:?}");
    got.remove(0)
}

async fn payloads(q: &dyn WorkQueue, group: &str, consumer: &str, n: usize) -> Vec<String> {
    let mut out = Vec::new();
    let started = Instant::now();
    while out.len() < n {
        assert!(started.elapsed() < WAIT, "only {out:?} of {n} arrived");
        for d in q
            .fetch(group, consumer, n - out.len(), Duration::from_millis(200))
            .await
            .unwrap()
        {
            out.push(String::from_utf8(d.payload.to_vec()).unwrap());
            q.ack(&d).await.unwrap();
        }
    }
    out
}

pub(crate) async fn an_ack_removes_the_message(make: Make) {
    let q = make(opts()).await;
    q.create_group("g", Start::First).await.unwrap();
    q.publish("a".into(), None).await.unwrap();
    let d = fetch_one(&*q, "g", "c1").await;
    assert_eq!((&d.payload[..], d.attempt), (&b"a"[..], 1));
    q.ack(&d).await.unwrap();
    let later = q.fetch("g", "c2", 10, opts().lease * 3).await.unwrap();
    assert!(
        later.is_empty(),
        "an acked message never comes back: {later:?}"
    );
}

pub(crate) async fn ack_all_settles_a_batch_and_nothing_else(make: Make) {
    let q = make(opts()).await;
    q.create_group("g", Start::First).await.unwrap();
    for p in ["a", "b", "c", "d"] {
        q.publish(p.into(), None).await.unwrap();
    }
    let mut got = Vec::new();
    let started = Instant::now();
    while got.len() < 4 {
        assert!(started.elapsed() < WAIT, "only {} of 4 arrived", got.len());
        got.extend(
            q.fetch("g", "c1", 4 - got.len(), Duration::from_millis(200))
                .await
                .unwrap(),
        );
    }
    // Settle three in one call; the fourth stays unsettled.
    q.ack_all(&got[..3]).await.unwrap();
    q.ack_all(&[]).await.unwrap();
    let later = q.fetch("g", "c2", 10, opts().lease * 3).await.unwrap();
    let back: Vec<&[u8]> = later.iter().map(|d| &d.payload[..]).collect();
    assert_eq!(back, [&b"d"[..]], "only the unsettled one comes back");
}

pub(crate) async fn backlog_counts_waiting_and_pending_messages(make: Make) {
    let q = make(opts()).await;
    assert!(matches!(
        q.backlog("g").await,
        Err(QueueError::UnknownGroup { .. })
    ));
    q.create_group("g", Start::First).await.unwrap();
    for p in ["a", "b", "c"] {
        q.publish(p.into(), None).await.unwrap();
    }
    let b = q.backlog("g").await.unwrap();
    assert_eq!((b.waiting, b.pending), (Some(3), 0));
    let d = fetch_one(&*q, "g", "c1").await;
    let b = q.backlog("g").await.unwrap();
    assert_eq!((b.waiting, b.pending), (Some(2), 1));
    q.ack(&d).await.unwrap();
    let b = q.backlog("g").await.unwrap();
    assert_eq!((b.waiting, b.pending), (Some(2), 0));
}

pub(crate) async fn an_unacked_delivery_comes_back_after_its_lease_with_the_next_attempt(
    make: Make,
) {
    let q = make(opts()).await;
    q.create_group("g", Start::First).await.unwrap();
    q.publish("a".into(), None).await.unwrap();
    let first = fetch_one(&*q, "g", "c1").await;
    let leased = Instant::now();
    assert!(
        q.fetch("g", "c2", 1, Duration::ZERO)
            .await
            .unwrap()
            .is_empty(),
        "held under its lease"
    );
    let again = fetch_one(&*q, "g", "c2").await;
    assert!(leased.elapsed() >= opts().lease - Duration::from_millis(50));
    assert_eq!(again.payload, first.payload);
    assert_eq!((again.attempt, again.consumer.as_str()), (2, "c2"));
    q.ack(&again).await.unwrap();
}

pub(crate) async fn a_message_out_of_attempts_goes_to_the_dead_letters(make: Make) {
    let q = make(opts().max_deliveries(2)).await;
    q.create_group("g", Start::First).await.unwrap();
    q.publish("poison".into(), Some("p-1")).await.unwrap();
    let d = fetch_one(&*q, "g", "c").await;
    q.nak(&d, Duration::ZERO, "boom 1").await.unwrap();
    let d = fetch_one(&*q, "g", "c").await;
    assert_eq!(d.attempt, 2);
    q.nak(&d, Duration::ZERO, "boom 2").await.unwrap();
    let more = q.fetch("g", "c", 1, opts().lease * 2).await.unwrap();
    assert!(more.is_empty(), "not delivered a third time: {more:?}");
    let dead = q.dead_letters("g").await.unwrap();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(&dead[0].payload[..], b"poison");
    assert_eq!(dead[0].dedupe_id.as_deref(), Some("p-1"));
    assert_eq!(dead[0].attempts, 2);
    assert_eq!(dead[0].last_error.as_deref(), Some("boom 2"));
}

pub(crate) async fn a_lease_run_out_on_the_last_attempt_goes_to_the_dead_letters(make: Make) {
    let q = make(opts().max_deliveries(1)).await;
    q.create_group("g", Start::First).await.unwrap();
    q.publish("slow".into(), None).await.unwrap();
    let _held = fetch_one(&*q, "g", "c1").await;
    // The lease runs out; the next fetch finds it out of attempts.
    let more = q.fetch("g", "c2", 1, opts().lease * 3).await.unwrap();
    assert!(more.is_empty(), "{more:?}");
    let dead = q.dead_letters("g").await.unwrap();
    assert_eq!((dead.len(), dead[0].attempts), (1, 1), "{dead:?}");
}

pub(crate) async fn a_nak_with_a_delay_redelivers_no_earlier_than_the_delay(make: Make) {
    let options = opts().lease(Duration::from_secs(2));
    let q = make(options).await;
    q.create_group("g", Start::First).await.unwrap();
    q.publish("a".into(), None).await.unwrap();
    let d = fetch_one(&*q, "g", "c").await;
    let delay = Duration::from_millis(500);
    let nakked = Instant::now();
    q.nak(&d, delay, "try later").await.unwrap();
    let again = fetch_one(&*q, "g", "c").await;
    let waited = nakked.elapsed();
    assert!(waited >= delay, "redelivered after {waited:?}");
    assert!(
        waited < options.lease,
        "after the delay, not the lease: {waited:?}"
    );
    assert_eq!(again.attempt, 2);
    q.ack(&again).await.unwrap();
}

pub(crate) async fn in_progress_keeps_a_delivery_from_being_redelivered(make: Make) {
    let q = make(opts()).await;
    q.create_group("g", Start::First).await.unwrap();
    q.publish("long job".into(), None).await.unwrap();
    let d = fetch_one(&*q, "g", "worker").await;
    let started = Instant::now();
    // Work for three half-leases, telling the queue after each.
    for _ in 0..3 {
        let other = q.fetch("g", "other", 1, opts().lease / 2).await.unwrap();
        assert!(other.is_empty(), "redelivered while in progress: {other:?}");
        q.in_progress(&d).await.unwrap();
    }
    assert!(started.elapsed() > opts().lease, "worked past one lease");
    q.ack(&d).await.unwrap();
    let other = q.fetch("g", "other", 1, opts().lease * 2).await.unwrap();
    assert!(other.is_empty(), "{other:?}");
}

pub(crate) async fn a_group_never_holds_more_than_max_in_flight(make: Make) {
    let q = make(opts().max_in_flight(3).lease(Duration::from_secs(5))).await;
    q.create_group("g", Start::First).await.unwrap();
    for i in 0..10 {
        q.publish(format!("m{i}").into(), None).await.unwrap();
    }
    let first = q.fetch("g", "c1", 10, WAIT).await.unwrap();
    assert_eq!(first.len(), 3);
    let second = q
        .fetch("g", "c2", 10, Duration::from_millis(200))
        .await
        .unwrap();
    assert!(second.is_empty(), "over the limit: {second:?}");
    q.ack(&first[0]).await.unwrap();
    let third = q.fetch("g", "c2", 10, WAIT).await.unwrap();
    assert_eq!(third.len(), 1, "one slot freed");
    assert_eq!(&third[0].payload[..], b"m3", "in order");
}

pub(crate) async fn two_groups_each_see_every_message_in_order(make: Make) {
    let q = make(opts()).await;
    q.create_group("a", Start::First).await.unwrap();
    q.create_group("b", Start::First).await.unwrap();
    for i in 0..5 {
        q.publish(format!("m{i}").into(), None).await.unwrap();
    }
    let expected: Vec<String> = (0..5).map(|i| format!("m{i}")).collect();
    assert_eq!(payloads(&*q, "a", "c", 5).await, expected);
    assert_eq!(payloads(&*q, "b", "c", 5).await, expected);
}

pub(crate) async fn a_late_group_from_the_start_replays_the_history(make: Make) {
    let q = make(opts()).await;
    q.create_group("early", Start::First).await.unwrap();
    for i in 0..3 {
        q.publish(format!("m{i}").into(), None).await.unwrap();
    }
    assert_eq!(payloads(&*q, "early", "c", 3).await, ["m0", "m1", "m2"]);
    q.create_group("late", Start::First).await.unwrap();
    q.create_group("new", Start::New).await.unwrap();
    q.publish("m3".into(), None).await.unwrap();
    assert_eq!(
        payloads(&*q, "late", "c", 4).await,
        ["m0", "m1", "m2", "m3"]
    );
    assert_eq!(payloads(&*q, "new", "c", 1).await, ["m3"]);
}

pub(crate) async fn a_group_can_start_after_a_known_position(make: Make) {
    let q = make(opts()).await;
    q.create_group("early", Start::First).await.unwrap();
    for i in 0..5 {
        q.publish(format!("m{i}").into(), None).await.unwrap();
    }
    let mut seen = Vec::new();
    while seen.len() < 5 {
        for d in q.fetch("early", "c", 5, WAIT).await.unwrap() {
            q.ack(&d).await.unwrap();
            seen.push(d);
        }
    }
    let after = seen[2].position.clone();
    q.create_group("replay", Start::After(after)).await.unwrap();
    assert_eq!(payloads(&*q, "replay", "c", 2).await, ["m3", "m4"]);
    let more = q
        .fetch("replay", "c", 10, Duration::from_millis(300))
        .await
        .unwrap();
    assert!(more.is_empty(), "{more:?}");
}

pub(crate) async fn an_unknown_group_is_named_and_a_group_is_created_once(make: Make) {
    let q = make(opts()).await;
    q.create_group("g", Start::First).await.unwrap();
    q.publish("a".into(), None).await.unwrap();
    let d = fetch_one(&*q, "g", "c").await;
    // Creating it again changes nothing: the delivery stays held.
    q.create_group("g", Start::First).await.unwrap();
    let more = q
        .fetch("g", "c", 1, Duration::from_millis(200))
        .await
        .unwrap();
    assert!(more.is_empty(), "{more:?}");
    q.ack(&d).await.unwrap();
    let err = q.fetch("nobody", "c", 1, Duration::ZERO).await.unwrap_err();
    assert!(
        matches!(&err, tributary_queue::QueueError::UnknownGroup { group, .. } if group == "nobody"),
        "{err:?}"
    );
}

pub(crate) async fn a_duplicate_dedupe_id_is_delivered_once(make: Make) {
    let q = make(opts()).await;
    q.create_group("g", Start::First).await.unwrap();
    q.publish("x".into(), Some("job-1")).await.unwrap();
    q.publish("x again".into(), Some("job-1")).await.unwrap();
    q.publish("y".into(), Some("job-2")).await.unwrap();
    q.publish("z".into(), None).await.unwrap();
    assert_eq!(payloads(&*q, "g", "c", 3).await, ["x", "y", "z"]);
    let more = q.fetch("g", "c", 10, opts().lease * 2).await.unwrap();
    assert!(more.is_empty(), "{more:?}");
}

pub(crate) async fn trimming_removes_only_what_every_group_settled(make: Make) {
    let q = make(opts().lease(Duration::from_secs(5))).await;
    q.create_group("a", Start::First).await.unwrap();
    q.create_group("b", Start::First).await.unwrap();
    for i in 0..4 {
        q.publish(format!("m{i}").into(), None).await.unwrap();
    }
    assert_eq!(payloads(&*q, "a", "c", 4).await.len(), 4);
    // b reads all four and settles only the first two.
    let held = q.fetch("b", "c", 4, WAIT).await.unwrap();
    assert_eq!(held.len(), 4);
    q.ack(&held[0]).await.unwrap();
    q.ack(&held[1]).await.unwrap();
    q.publish("unread".into(), None).await.unwrap();
    assert_eq!(q.trim().await.unwrap(), 2);
    assert_eq!(q.stored().await.unwrap(), 3, "two held by b, one unread");
    for d in &held[2..] {
        q.ack(d).await.unwrap();
    }
    assert_eq!(q.trim().await.unwrap(), 2);
    assert_eq!(q.stored().await.unwrap(), 1, "the unread one stays");
    assert_eq!(payloads(&*q, "a", "c", 1).await, ["unread"]);
}

/// A deleted group is gone (fetching from it names it unknown), its dead
/// letters with it, and it no longer holds back `trim`; deleting a group
/// twice, or destroying the queue twice, is not an error.
pub(crate) async fn a_deleted_group_no_longer_holds_back_trim(make: Make) {
    let q = make(opts().lease(Duration::from_secs(5)).max_deliveries(1)).await;
    q.create_group("a", Start::First).await.unwrap();
    q.create_group("idle", Start::First).await.unwrap();
    for i in 0..3 {
        q.publish(format!("m{i}").into(), None).await.unwrap();
    }
    for d in q.fetch("a", "c", 3, WAIT).await.unwrap() {
        q.ack(&d).await.unwrap();
    }
    assert_eq!(
        q.trim().await.unwrap(),
        0,
        "the idle group has read nothing"
    );
    // The idle group gives one up, then goes.
    let one = q.fetch("idle", "c", 1, WAIT).await.unwrap();
    q.terminate(&one[0], "no").await.unwrap();
    assert_eq!(q.dead_letters("idle").await.unwrap().len(), 1);
    q.delete_group("idle").await.unwrap();
    q.delete_group("idle").await.unwrap();
    assert!(matches!(
        q.fetch("idle", "c", 1, Duration::ZERO).await,
        Err(QueueError::UnknownGroup { .. })
    ));
    assert_eq!(q.trim().await.unwrap(), 3);
    assert_eq!(q.stored().await.unwrap(), 0);
    // A group of the same name starts afresh, with no dead letters.
    q.create_group("idle", Start::First).await.unwrap();
    assert!(q.dead_letters("idle").await.unwrap().is_empty());
    q.destroy().await.unwrap();
    q.destroy().await.unwrap();
}

/// A dead letter is removed by its id from its own group's dead letters
/// only: the others stay, in order; removing it again, from another group,
/// or with an id that is none, removes nothing.
pub(crate) async fn a_dead_letter_is_removed_by_its_id(make: Make) {
    let q = make(opts().lease(Duration::from_secs(5)).max_deliveries(1)).await;
    q.create_group("g", Start::First).await.unwrap();
    q.create_group("other", Start::First).await.unwrap();
    for i in 0..3 {
        q.publish(format!("m{i}").into(), None).await.unwrap();
    }
    for d in q.fetch("g", "c", 3, WAIT).await.unwrap() {
        q.terminate(&d, "no").await.unwrap();
    }
    let one = q.fetch("other", "c", 1, WAIT).await.unwrap();
    q.terminate(&one[0], "not here either").await.unwrap();
    let dead = q.dead_letters("g").await.unwrap();
    assert_eq!(dead.len(), 3, "{dead:?}");
    let middle = dead[1].id.clone();
    assert_eq!(&dead[1].payload[..], b"m1");
    assert!(
        !q.remove_dead_letter("other", &middle).await.unwrap(),
        "not a dead letter of that group"
    );
    assert!(q.remove_dead_letter("g", &middle).await.unwrap());
    let left: Vec<_> = q
        .dead_letters("g")
        .await
        .unwrap()
        .into_iter()
        .map(|d| (String::from_utf8(d.payload.to_vec()).unwrap(), d.id))
        .collect();
    assert_eq!(
        left,
        [
            ("m0".to_owned(), dead[0].id.clone()),
            ("m2".to_owned(), dead[2].id.clone())
        ]
    );
    assert!(!q.remove_dead_letter("g", &middle).await.unwrap());
    assert!(!q.remove_dead_letter("g", "not-an-id").await.unwrap());
    assert!(!q.remove_dead_letter("nobody", &dead[0].id).await.unwrap());
    assert_eq!(q.dead_letters("other").await.unwrap().len(), 1);
    assert_eq!(q.dead_letters("g").await.unwrap().len(), 2);
}

/// A consumer in another process (`queue_worker`) fetches three messages
/// and is killed with SIGKILL before settling them; another consumer gets
/// them, each with attempt 2. `q` has a 500 ms lease and a group-less
/// queue of its own; `backend` and `url` tell the worker how to reach it.
pub(crate) async fn a_killed_consumers_messages_go_to_another(
    q: &dyn WorkQueue,
    backend: &str,
    url: &str,
) {
    use tokio::io::AsyncBufReadExt;
    q.create_group("g", Start::First).await.unwrap();
    for i in 0..3 {
        q.publish(format!("job {i}").into(), None).await.unwrap();
    }
    let mut worker = tokio::process::Command::new(env!("CARGO_BIN_EXE_queue_worker"))
        .args([backend, url, q.name(), "g", "doomed", "3"])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(worker.stdout.take().unwrap()).lines();
    let mut held = Vec::new();
    loop {
        let line = tokio::time::timeout(WAIT * 2, lines.next_line())
            .await
            .expect("the worker fetches")
            .unwrap()
            .expect("the worker runs");
        if line == "held" {
            break;
        }
        held.push(line);
    }
    assert_eq!(held, ["job 0", "job 1", "job 2"]);
    worker.start_kill().unwrap(); // SIGKILL
    worker.wait().await.unwrap();

    let mut claimed = Vec::new();
    let started = Instant::now();
    while claimed.len() < 3 {
        assert!(started.elapsed() < WAIT * 2, "{claimed:?}");
        for d in q
            .fetch("g", "heir", 3, Duration::from_secs(2))
            .await
            .unwrap()
        {
            assert_eq!((d.attempt, d.consumer.as_str()), (2, "heir"));
            claimed.push(String::from_utf8(d.payload.to_vec()).unwrap());
            q.ack(&d).await.unwrap();
        }
    }
    claimed.sort();
    assert_eq!(claimed, held);
}

/// One test per check above, for the backend `make` builds; extra
/// attributes (an `ignore` for a missing service) go on every test.
macro_rules! conformance {
    ($make:path $(, #[$attr:meta])*) => {
        $crate::queue_conformance::conformance!(@tests $make, [$(#[$attr])*],
            an_ack_removes_the_message,
            ack_all_settles_a_batch_and_nothing_else,
            backlog_counts_waiting_and_pending_messages,
            an_unacked_delivery_comes_back_after_its_lease_with_the_next_attempt,
            a_message_out_of_attempts_goes_to_the_dead_letters,
            a_lease_run_out_on_the_last_attempt_goes_to_the_dead_letters,
            a_nak_with_a_delay_redelivers_no_earlier_than_the_delay,
            in_progress_keeps_a_delivery_from_being_redelivered,
            a_group_never_holds_more_than_max_in_flight,
            two_groups_each_see_every_message_in_order,
            a_late_group_from_the_start_replays_the_history,
            a_group_can_start_after_a_known_position,
            an_unknown_group_is_named_and_a_group_is_created_once,
            a_duplicate_dedupe_id_is_delivered_once,
            trimming_removes_only_what_every_group_settled,
            a_deleted_group_no_longer_holds_back_trim,
            a_dead_letter_is_removed_by_its_id
        );
    };
    (@tests $make:path, $attrs:tt, $($check:ident),*) => {
        $( $crate::queue_conformance::conformance!(@one $make, $attrs, $check); )*
    };
    (@one $make:path, [$($attrs:tt)*], $check:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        $($attrs)*
        async fn $check() {
            crate::queue_conformance::$check($make).await;
        }
    };
}
pub(crate) use conformance;
