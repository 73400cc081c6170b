//! The cluster example (`examples/cluster_research.rs`) as a newcomer runs
//! it: three worker processes, one killed mid-run, the report equal to a
//! single-process run and no finished step run twice.

use std::time::Duration;

/// The example's binary, built by `cargo test --workspace` (or `cargo build
/// -p tributary-examples --examples`).
fn example() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("the test binary has a path");
    let profile = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("in target/<profile>/deps");
    profile.join("examples").join("cluster_research")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(tributary_redis), ignore = "needs TRIBUTARY_REDIS_URL")]
async fn three_workers_one_killed_give_the_single_process_report() {
    let path = example();
    assert!(
        path.exists(),
        "{} is not built: run `cargo build -p tributary-examples --examples` (cargo test --workspace does)",
        path.display()
    );
    let out = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::process::Command::new(&path)
            .args(["--speed", "0.5", "--kill-after", "600"])
            .env(
                "TRIBUTARY_REDIS_URL",
                crate::stream_support::service_url("TRIBUTARY_REDIS_URL"),
            )
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the example ends in time")
    .expect("the example runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("killed worker w0 (SIGKILL)"), "{stdout}");
    assert!(stdout.contains("reports equal: yes"), "{stdout}");
    assert!(
        stdout.contains("steps run: 36; steps run twice: 0"),
        "{stdout}"
    );
    let taken_over = stdout
        .lines()
        .find_map(|l| {
            l.strip_prefix(
                "tasks taken over from the killed worker and resumed from their checkpoints: ",
            )
        })
        .and_then(|n| n.trim().parse::<u32>().ok())
        .expect("the example says how many tasks were taken over");
    assert!(taken_over > 0, "the kill hit running tasks: {stdout}");
    // Every step ran; a finished step never ran twice (only a step the
    // kill cut between its body and its checkpoint may, one per task).
    let twice = stdout
        .lines()
        .find_map(|l| l.strip_prefix("steps run: 36; steps run twice: "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse::<u32>().ok())
        .expect("all 36 steps ran");
    assert!(twice <= taken_over, "{stdout}");
}
