//! The PostgreSQL tracker: the tracker's contract (`tracker_contract`) on a
//! schema of its own; every attempt of every step and each app's last
//! status, in the columns the SQLite tracker uses; and a follower that is
//! told of each step as it commits, from `NOTIFY`, without polling.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tributary::{Persister, RunOptions};
use tributary_postgres::{PostgresPersister, PostgresTracker, StepNotice};

use futures_util::FutureExt;

use crate::persister_contract::{Counters, graph};
use crate::postgres_support::{TestSchema, url};
use crate::tracker_contract::Tracked;

fn postgres() -> futures_util::future::BoxFuture<'static, Tracked> {
    async {
        let schema = TestSchema::new("tracker_contract");
        let db = schema.connect().await;
        let tracker = PostgresTracker::new(db.clone());
        let flusher = tracker.clone();
        Tracked::new(
            Arc::new(tracker),
            Arc::new(PostgresPersister::new(db)),
            move || {
                let tracker = flusher.clone();
                async move { tracker.flush().await.unwrap() }.boxed()
            },
            url(),
            &schema.name.clone(),
            schema,
        )
    }
    .boxed()
}

crate::tracker_contract_tests!(
    postgres,
    #[cfg_attr(not(tributary_postgres), ignore = "needs TRIBUTARY_POSTGRES_URL")]
);

const BOUND: Duration = Duration::from_secs(30);

#[tokio::test]
#[cfg_attr(not(tributary_postgres), ignore = "needs TRIBUTARY_POSTGRES_URL")]
async fn every_attempt_is_recorded_with_the_app_status() {
    let schema = TestSchema::new("tracker_attempts");
    let db = schema.connect().await;
    let persister: Arc<dyn Persister> = Arc::new(PostgresPersister::new(db.clone()));
    let tracker = PostgresTracker::new(db.clone());
    let k = Counters::default();
    k.fail_b.store(true, Ordering::SeqCst);
    let build = || {
        tributary::Application::builder(graph(&k))
            .app_id("job")
            .partition_key("user-1")
            .persister(Arc::clone(&persister))
            .hook(tracker.clone())
            .resume()
            .build()
    };
    assert!(build().await.unwrap().run(RunOptions::new()).await.is_err());
    tracker.flush().await.unwrap();
    let client = schema.client().await;
    let sql = format!(
        "SELECT status FROM \"{}\".apps WHERE app_id = 'job'",
        schema.name
    );
    let status = || async {
        client
            .query_one(&sql, &[])
            .await
            .unwrap()
            .get::<_, String>(0)
    };
    assert_eq!(status().await, "failed");

    k.fail_b.store(false, Ordering::SeqCst);
    build().await.unwrap().run(RunOptions::new()).await.unwrap();
    tracker.flush().await.unwrap();
    assert_eq!(status().await, "completed");

    let rows = client
        .query(
            &format!(
                "SELECT sequence_id, attempt, action, status, error, state, result, process,
                        ended_at >= started_at
                 FROM \"{}\".steps WHERE app_id = 'job' ORDER BY sequence_id, attempt",
                schema.name
            ),
            &[],
        )
        .await
        .unwrap();
    let steps: Vec<(i64, i32, String, String)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    assert_eq!(
        steps,
        [
            (0, 0, "a".into(), "completed".into()),
            (1, 0, "b".into(), "failed".into()),
            (1, 1, "b".into(), "completed".into()),
            (2, 0, "c".into(), "completed".into()),
        ]
    );
    let failed = &rows[1];
    assert_eq!(
        failed.get::<_, Option<String>>(4).as_deref(),
        Some("action `b` failed: b failed")
    );
    let last_state: serde_json::Value = serde_json::from_str(&rows[3].get::<_, String>(5)).unwrap();
    assert_eq!(last_state["trail"], serde_json::json!(["a", "b", "c"]));
    assert_eq!(rows[3].get::<_, Option<String>>(6).as_deref(), Some("{}"));
    for row in &rows {
        let process: String = row.get(7);
        assert!(
            process.contains(&format!("/{}/", std::process::id())),
            "{process}"
        );
        assert!(row.get::<_, bool>(8));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(tributary_postgres), ignore = "needs TRIBUTARY_POSTGRES_URL")]
async fn a_follower_is_told_of_each_step_as_it_commits() {
    let schema = TestSchema::new("tracker_follow");
    let other = TestSchema::new("tracker_quiet");
    let db = schema.connect().await;
    let mut feed = db.follow().await.unwrap();
    let mut quiet = other.connect().await.follow().await.unwrap();
    let tracker = PostgresTracker::new(db.clone());
    let k = Counters::default();
    let mut app = tributary::Application::builder(graph(&k))
        .app_id("followed")
        .hook(tracker.clone())
        .build()
        .await
        .unwrap();
    // The feed is read while the run goes on, not after: each notice
    // arrives when its step's record commits.
    let reader = tokio::spawn(async move {
        let mut seen = Vec::new();
        while seen.len() < 3 {
            let notice: StepNotice = tokio::time::timeout(BOUND, feed.next())
                .await
                .expect("a notice within the bound")
                .expect("the feed is open")
                .unwrap();
            seen.push(notice);
        }
        seen
    });
    app.run(RunOptions::new()).await.unwrap();
    tracker.flush().await.unwrap();
    let seen = reader.await.unwrap();
    let seen: Vec<(&str, i64, &str, &str)> = seen
        .iter()
        .map(|n| {
            (
                n.app_id.as_str(),
                n.sequence_id,
                n.action.as_str(),
                n.status.as_str(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("followed", 0, "a", "completed"),
            ("followed", 1, "b", "completed"),
            ("followed", 2, "c", "completed"),
        ]
    );
    // Another schema's channel heard nothing.
    assert!(
        tokio::time::timeout(Duration::from_millis(200), quiet.next())
            .await
            .is_err()
    );
}

/// The tracker's records are bounded: while the writer cannot commit (a
/// row it needs is locked by another transaction), a hook that would queue
/// more than `RECORD_QUEUE_CAPACITY` records waits, and goes on once the
/// writer does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(tributary_postgres), ignore = "needs TRIBUTARY_POSTGRES_URL")]
async fn a_full_record_queue_makes_hooks_wait_for_the_writer() {
    use std::sync::atomic::AtomicUsize;
    use tributary::Hook;
    use tributary_postgres::Database;

    const CAP: usize = Database::RECORD_QUEUE_CAPACITY;
    let schema = TestSchema::new("tracker_backpressure");
    let tracker = PostgresTracker::new(schema.connect().await);
    let app: tributary::AppInfo =
        serde_json::from_value(serde_json::json!({ "app_id": "held" })).unwrap();
    let state = tributary::State::new();
    tracker.before_run(&app, &state);
    tracker.flush().await.unwrap();

    let mut holder = schema.client().await;
    let hold = holder.transaction().await.unwrap();
    hold.batch_execute(&format!(
        "UPDATE \"{}\".apps SET updated_at = 0 WHERE app_id = 'held'",
        schema.name
    ))
    .await
    .unwrap();

    let handed = Arc::new(AtomicUsize::new(0));
    let pusher = {
        let (tracker, handed, app) = (tracker.clone(), Arc::clone(&handed), app.clone());
        std::thread::spawn(move || {
            for _ in 0..2 * CAP {
                tracker.before_run(&app, &tributary::State::new());
                handed.fetch_add(1, Ordering::SeqCst);
            }
        })
    };
    // The writer is stuck on the lock, so the queue fills and stays full.
    let started = std::time::Instant::now();
    while handed.load(Ordering::SeqCst) < CAP {
        assert!(started.elapsed() < BOUND, "the queue filled too slowly");
        tokio::task::yield_now().await;
    }
    // A blocked hook is seen by its not going on: the pusher filled the
    // queue in `fill`, and in four times as long it adds nothing (without
    // the bound it would have pushed all 2 × CAP records by then).
    let fill = started.elapsed();
    std::thread::sleep((fill * 4).max(Duration::from_millis(100)));
    assert_eq!(handed.load(Ordering::SeqCst), CAP);
    assert!(!pusher.is_finished());

    hold.rollback().await.unwrap();
    tokio::task::spawn_blocking(move || pusher.join().unwrap())
        .await
        .unwrap();
    assert_eq!(handed.load(Ordering::SeqCst), 2 * CAP);
    tracker.flush().await.unwrap();
}
