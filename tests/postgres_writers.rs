//! Many writers on one PostgreSQL database: four processes, a thousand
//! concurrent applications each, every checkpoint and step record present,
//! no deadlock (each process ends within a bound).

use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

use crate::postgres_support::{TestSchema, url};

const PROCESSES: usize = 4;
const APPS: usize = 1000;
const STEPS: usize = 3;

/// Waits for `child`, at most `limit`.
fn wait_bounded(child: &mut Child, limit: Duration) -> ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("writer process still running after {limit:?}: deadlocked or stuck");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test]
#[cfg_attr(not(tributary_postgres), ignore = "needs TRIBUTARY_POSTGRES_URL")]
async fn four_processes_of_a_thousand_apps_write_one_database() {
    // A new schema: the processes also race to create and migrate it.
    let schema = TestSchema::new("writers");
    let mut children: Vec<Child> = (0..PROCESSES)
        .map(|i| {
            Command::new(env!("CARGO_BIN_EXE_postgres_writer"))
                .args([
                    url(),
                    schema.name.clone(),
                    format!("p{i}"),
                    APPS.to_string(),
                    STEPS.to_string(),
                ])
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in &mut children {
        assert!(wait_bounded(child, Duration::from_secs(300)).success());
    }

    let client = schema.client().await;
    let count = |sql: String| {
        let client = &client;
        async move { client.query_one(&sql, &[]).await.unwrap().get::<_, i64>(0) }
    };
    let s = &schema.name;
    let total = (PROCESSES * APPS) as i64;
    // Every step of every app has its checkpoint, completed, in order.
    assert_eq!(
        count(format!(
            "SELECT COUNT(*) FROM \"{s}\".checkpoints WHERE status = 'completed'"
        ))
        .await,
        total * STEPS as i64
    );
    assert_eq!(
        count(format!(
            "SELECT COUNT(*) FROM (SELECT app_id FROM \"{s}\".checkpoints GROUP BY app_id
             HAVING array_agg(sequence_id ORDER BY sequence_id) = ARRAY[0, 1, 2]::bigint[]) c"
        ))
        .await,
        total
    );
    // The last checkpoint of each holds the whole trail.
    assert_eq!(
        count(format!(
            "SELECT COUNT(*) FROM \"{s}\".checkpoints
             WHERE sequence_id = 2 AND state::jsonb -> 'trail' = '[\"step0\", \"step1\", \"step2\"]'::jsonb"
        ))
        .await,
        total
    );
    // Every app and step was tracked, each app in its process's partition.
    assert_eq!(
        count(format!(
            "SELECT COUNT(*) FROM \"{s}\".apps WHERE status = 'completed'"
        ))
        .await,
        total
    );
    assert_eq!(
        count(format!(
            "SELECT COUNT(*) FROM \"{s}\".apps WHERE partition_key = 'p3'"
        ))
        .await,
        APPS as i64
    );
    assert_eq!(
        count(format!(
            "SELECT COUNT(*) FROM \"{s}\".steps WHERE status = 'completed' AND attempt = 0"
        ))
        .await,
        total * STEPS as i64
    );
}
