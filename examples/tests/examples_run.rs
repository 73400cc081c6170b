//! Runs every example to completion (the crawler against its own local
//! HTTP server), so none can silently break. `cargo test` builds the
//! examples before it runs this.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary has a path");
    // target/<profile>/deps/examples_run-<hash> -> target/<profile>/examples/<name>
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("in target/<profile>/deps");
    profile_dir.join("examples").join(name)
}

/// Run example `name`; it must exit 0 within two minutes and print every
/// line of `expect`.
fn run(name: &str, expect: &[&str]) {
    let path = example(name);
    assert!(
        path.exists(),
        "example {name} is not built at {}",
        path.display()
    );
    let mut child = Command::new(&path)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the example starts");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if child.try_wait().expect("wait works").is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("example {name} did not finish within two minutes");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("output is readable");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "example {name} failed: {stderr}\n{stdout}"
    );
    for line in expect {
        assert!(
            stdout.contains(line),
            "example {name} did not print {line:?}:\n{stdout}"
        );
    }
}

#[test]
fn quickstart() {
    run(
        "quickstart",
        &["streaming: why actors how actors", "checkpoint 3 write"],
    );
}

#[test]
fn quick_exit() {
    run("quick_exit", &["winner: small; cancelled:"]);
}

#[test]
fn pr_review() {
    run("pr_review", &["streamed 42 reply tokens live"]);
}

#[test]
fn crawler() {
    run("crawler", &["crawled 31 pages"]);
}

#[test]
fn service_loop() {
    run("service_loop", &["tokens", "finished 3, cancelled 1"]);
}

#[test]
fn sync_blocking() {
    run("sync_blocking", &["total: 20 words"]);
}
