//! The web view in a real headless Chromium, driven through WebDriver
//! (chromedriver) as a person would use it. Ignored where Debian's
//! `chromium` and `chromium-driver` are not installed (see `build.rs`).
//! Each test saves a screenshot: to `docs/` with
//! `TRIBUTARY_UPDATE_SCREENSHOTS=1`, else to a directory under `target/`,
//! so that a test run leaves the tracked files alone.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use futures_util::StreamExt;
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tributary::{QuickExit, RunConfig, RunHandle, RunStream, Runtime, State, TaskSpec, action};
use tributary_ui::{LiveRun, UiServer};

use crate::ui_support::{Served, record_demo_run};

/// One browser at a time: the machine has two cores.
static ONE_BROWSER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const WAIT: Duration = Duration::from_secs(30);

/// A headless Chromium behind its own chromedriver, on a fresh profile.
struct Browser {
    client: Client,
    driver: Child,
    profile: tempfile::TempDir,
}

impl Browser {
    async fn start() -> Browser {
        let port = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            probe.local_addr().unwrap().port()
        };
        let driver = Command::new("/usr/bin/chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own process group, so that the browser it starts goes
            // with it even when a test fails half way.
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .expect("chromedriver starts");
        // Bounded wait for chromedriver to listen.
        let mut ready = false;
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                ready = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(ready, "chromedriver listens on port {port} within 10 s");
        let profile = tempfile::tempdir().unwrap();
        let args = [
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--disable-quic",
            "--disable-dev-shm-usage",
            "--window-size=1500,950",
        ]
        .iter()
        .map(|a| a.to_string())
        .chain([format!("--user-data-dir={}", profile.path().display())])
        .collect::<Vec<_>>();
        let caps = json!({
            "browserName": "chrome",
            "goog:chromeOptions": { "binary": "/usr/bin/chromium", "args": args },
        });
        let Value::Object(caps) = caps else {
            unreachable!()
        };
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .expect("a Chromium session");
        Browser {
            client,
            driver,
            profile,
        }
    }

    async fn wait_css(&self, css: &str) -> fantoccini::elements::Element {
        self.client
            .wait()
            .at_most(WAIT)
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no `{css}` within {WAIT:?}: {e}"))
    }

    async fn wait_xpath(&self, xpath: &str) -> fantoccini::elements::Element {
        self.client
            .wait()
            .at_most(WAIT)
            .for_element(Locator::XPath(xpath))
            .await
            .unwrap_or_else(|e| panic!("no `{xpath}` within {WAIT:?}: {e}"))
    }

    /// Click what `css` finds; the page redraws live rows a few times a
    /// second, so a row found just before a redraw is found again.
    async fn click(&self, css: &str) {
        let mut last = None;
        for _ in 0..40 {
            match self.wait_css(css).await.click().await {
                Ok(()) => return,
                Err(e) => last = Some(e),
            }
        }
        panic!("cannot click `{css}`: {last:?}");
    }

    async fn text(&self, css: &str) -> String {
        let mut last = None;
        for _ in 0..40 {
            match self.wait_css(css).await.text().await {
                Ok(t) => return t,
                Err(e) => last = Some(e),
            }
        }
        panic!("cannot read `{css}`: {last:?}");
    }

    /// Wait until the connection note in the page's header says `text`.
    async fn wait_conn(&self, text: &str) {
        let script = "return document.getElementById('conn').textContent;";
        let mut seen = Value::Null;
        for _ in 0..300 {
            seen = self.client.execute(script, vec![]).await.unwrap();
            if seen == text {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the page says {seen} instead of {text:?} after 30 s");
    }

    async fn screenshot(&self, name: &str) {
        let png = self.client.screenshot().await.unwrap();
        let path = screenshot_dir().join(name);
        std::fs::write(&path, png)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    }

    async fn close(mut self) {
        let _ = self.client.clone().close().await;
        self.kill_group();
        let _ = self.driver.wait().await;
    }

    /// Stop chromedriver and the browser it started: the process group of
    /// the chromedriver this test started, and every process running on
    /// this test's own browser profile (the browser puts some of its
    /// processes in groups of their own).
    fn kill_group(&self) {
        if let Some(pid) = self.driver.id() {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", "--", &format!("-{pid}")])
                .status();
        }
        let profile = format!("--user-data-dir={}", self.profile.path().display());
        let Ok(procs) = std::fs::read_dir("/proc") else {
            return;
        };
        for entry in procs.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|p| p.parse::<u32>().ok())
            else {
                continue;
            };
            let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
                continue;
            };
            if cmdline
                .split(|b| *b == 0)
                .any(|arg| arg == profile.as_bytes())
            {
                let _ = std::process::Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
            }
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // A test that failed before `close`.
        self.kill_group();
    }
}

/// Where screenshots go: `docs/` when `TRIBUTARY_UPDATE_SCREENSHOTS=1`,
/// else `ui-screenshots` in the test's own directory under `target/`.
fn screenshot_dir() -> PathBuf {
    if std::env::var_os("TRIBUTARY_UPDATE_SCREENSHOTS").is_some_and(|v| v == "1") {
        return PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs");
    }
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("ui-screenshots");
    std::fs::create_dir_all(&dir)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    dir
}

/// Items received per task (by path: `paper/1`), seen by a consumer reading through the tap.
#[derive(Clone, Default)]
struct Received {
    counts: Arc<Mutex<HashMap<String, u64>>>,
}

impl Received {
    fn get(&self, key: &str) -> u64 {
        self.counts.lock().unwrap().get(key).copied().unwrap_or(0)
    }
}

/// Read the run through `live`'s tap, counting items per task and ticking
/// `seen` after each.
fn consume(
    live: &LiveRun,
    stream: RunStream,
) -> (Received, watch::Receiver<u64>, tokio::task::JoinHandle<()>) {
    let received = Received::default();
    let (tick, seen) = watch::channel(0u64);
    let mut tapped = live.tap(stream);
    let counts = received.clone();
    let consumer = tokio::spawn(async move {
        while let Some(item) = tapped.next().await {
            *counts
                .counts
                .lock()
                .unwrap()
                .entry(item.path.to_string())
                .or_default() += 1;
            tick.send_modify(|n| *n += 1);
        }
    });
    (received, seen, consumer)
}

/// Tasks named by `keys` that emit a token every `period` until cancelled.
fn streaming_run(keys: Vec<String>, period: Duration) -> (RunHandle, RunStream) {
    let tasks: Vec<TaskSpec> = keys
        .into_iter()
        .map(|key| {
            TaskSpec::action(
                key,
                action("generate").run(move |s: State, _, ctx| async move {
                    for k in 0u64.. {
                        ctx.emit(format!("token {k}")).await?;
                        tokio::time::sleep(period).await;
                    }
                    Ok((json!({}), s))
                }),
            )
        })
        .collect();
    Runtime::new().run(tasks, RunConfig::new())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(tributary_browser), ignore = "needs chromium and chromedriver")]
async fn the_run_list_shows_a_finished_recorded_run() {
    let _one = ONE_BROWSER.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("runs.db");
    record_demo_run(&db, "literature-review", &["rivers", "deltas"]).await;
    record_demo_run(
        &db,
        "market-research",
        &["pricing", "competitors", "customers"],
    )
    .await;
    let served = Served::start(UiServer::new().database(&db).unwrap()).await;
    let browser = Browser::start().await;
    browser.client.goto(&served.url("/")).await.unwrap();

    let row = "tr.run-row[data-app-id='market-research']";
    browser.wait_css(row).await;
    assert_eq!(
        browser.text(&format!("{row} td:nth-child(3)")).await,
        "completed"
    );
    let subgraphs = browser.text(&format!("{row} td:nth-child(9)")).await;
    assert!(subgraphs.starts_with("3 children:"), "{subgraphs}");
    assert_eq!(
        browser.text(&format!("{row} td:nth-child(4)")).await,
        "3",
        "three steps"
    );
    browser.screenshot("ui-run-list.png").await;

    // Its page: the tree, the waterfall, a step's state diff.
    browser.click(row).await;
    browser.wait_css("#tree ul.tree li:nth-child(3)").await;
    assert_eq!(
        browser
            .client
            .find_all(Locator::Css("#tree ul.tree > li"))
            .await
            .unwrap()
            .len(),
        3
    );
    assert_eq!(
        browser
            .client
            .find_all(Locator::Css("#waterfall .wf-row"))
            .await
            .unwrap()
            .len(),
        4
    );
    browser.click("#steps tbody tr:nth-child(3)").await;
    browser
        .wait_xpath("//table[contains(@class,'diff')]//td[.='/report']")
        .await;
    browser.screenshot("ui-run-page.png").await;

    browser.close().await;
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(tributary_browser), ignore = "needs chromium and chromedriver")]
async fn a_live_thousand_lane_run_renders() {
    let _one = ONE_BROWSER.lock().await;
    let ui = UiServer::new();
    let keys: Vec<String> = (0..1000).map(|i| format!("lane-{i:04}")).collect();
    let (handle, stream) = streaming_run(keys, Duration::from_millis(400));
    let live = ui.attach_run("thousand", handle.clone());
    let (_received, _seen, consumer) = consume(&live, stream);
    let served = Served::start(ui).await;
    let browser = Browser::start().await;
    browser
        .client
        .goto(&served.url("/#/live/thousand"))
        .await
        .unwrap();

    browser
        .wait_xpath("//span[@id='lane-info' and starts-with(., '1000 of 1000 lanes')]")
        .await;
    let rows = browser
        .client
        .find_all(Locator::Css("#lanes .lane"))
        .await
        .unwrap()
        .len();
    assert!(
        (1..100).contains(&rows),
        "only visible lanes are in the page: {rows}"
    );
    browser.wait_css("#merged .item").await;
    browser.screenshot("ui-live-lanes.png").await;

    // Finding one lane among a thousand.
    browser
        .wait_css("#lane-q")
        .await
        .send_keys("lane-0777")
        .await
        .unwrap();
    browser
        .wait_xpath("//span[@id='lane-info' and starts-with(., '1 of 1000 lanes')]")
        .await;
    browser.wait_css("#lanes .lane[data-key='lane-0777']").await;
    browser.wait_css("#lane-q").await.clear().await.unwrap();
    browser
        .wait_xpath("//span[@id='lane-info' and starts-with(., '1000 of 1000 lanes')]")
        .await;

    // Scrolled to the end, the last lane is drawn.
    browser
        .client
        .execute(
            "document.getElementById('lanes').scrollTop = 1e9; return true;",
            vec![],
        )
        .await
        .unwrap();
    browser.wait_css("#lanes .lane[data-key='lane-0999']").await;
    let rows = browser
        .client
        .find_all(Locator::Css("#lanes .lane"))
        .await
        .unwrap()
        .len();
    assert!(rows < 100, "{rows} rows in the page");

    browser.close().await;
    handle.cancel().await;
    consumer.await.unwrap();
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(tributary_browser), ignore = "needs chromium and chromedriver")]
async fn pausing_one_lane_pauses_exactly_that_task_and_resume_resumes_it() {
    let _one = ONE_BROWSER.lock().await;
    let ui = UiServer::new();
    let keys: Vec<String> = (0..6).map(|i| format!("writer-{i}")).collect();
    let (handle, stream) = streaming_run(keys.clone(), Duration::from_millis(50));
    let live = ui.attach_run("writers", handle.clone());
    let (received, mut seen, consumer) = consume(&live, stream);
    let served = Served::start(ui).await;
    let browser = Browser::start().await;
    browser
        .client
        .goto(&served.url("/#/live/writers"))
        .await
        .unwrap();
    browser
        .wait_xpath("//span[@id='lane-info' and starts-with(., '6 of 6 lanes')]")
        .await;

    browser
        .click(".lane[data-key='writer-2'] button.pause-lane")
        .await;
    let mut progress = handle.progress();
    tokio::time::timeout(WAIT, progress.wait_for(|p| p.paused == 1))
        .await
        .expect("one task pauses")
        .unwrap();
    // While the others go on by at least five items each, writer-2 does not
    // move (one item it was emitting may still arrive).
    let at_pause: HashMap<String, u64> =
        keys.iter().map(|k| (k.clone(), received.get(k))).collect();
    tokio::time::timeout(
        WAIT,
        seen.wait_for(|_| {
            keys.iter()
                .filter(|k| *k != "writer-2")
                .all(|k| received.get(k) >= at_pause[k] + 5)
        }),
    )
    .await
    .expect("the other tasks go on")
    .unwrap();
    assert!(
        received.get("writer-2") <= at_pause["writer-2"] + 1,
        "writer-2 kept streaming"
    );
    assert_eq!(handle.progress_now().paused, 1);
    assert!(!handle.is_paused(), "the run itself is not paused");
    browser
        .wait_css(".lane[data-key='writer-2'][data-status='paused']")
        .await;
    browser
        .wait_css(".lane[data-key='writer-3'][data-status='running']")
        .await;
    browser.screenshot("ui-live-paused.png").await;

    browser
        .click(".lane[data-key='writer-2'] button.resume-lane")
        .await;
    tokio::time::timeout(WAIT, progress.wait_for(|p| p.paused == 0))
        .await
        .expect("the task resumes")
        .unwrap();
    let resumed_at = received.get("writer-2");
    tokio::time::timeout(
        WAIT,
        seen.wait_for(|_| received.get("writer-2") >= resumed_at + 3),
    )
    .await
    .expect("writer-2 streams again")
    .unwrap();
    browser
        .wait_css(".lane[data-key='writer-2'][data-status='running']")
        .await;

    browser.close().await;
    handle.cancel().await;
    consumer.await.unwrap();
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(tributary_browser), ignore = "needs chromium and chromedriver")]
async fn a_quick_exit_run_shows_its_winner_and_the_losers_cancelled() {
    let _one = ONE_BROWSER.lock().await;
    let model = |ms: u64, words: usize| {
        action("answer").run(move |s: State, _, ctx| async move {
            for w in 0..words {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                ctx.emit(format!("word {w}")).await?;
            }
            Ok((json!({ "ms_per_word": ms }), s))
        })
    };
    let tasks = vec![
        TaskSpec::action("model-large", model(400, 20)),
        TaskSpec::action("model-small", model(40, 4)),
        TaskSpec::action("model-medium", model(150, 20)),
    ];
    let ui = UiServer::new();
    let (handle, stream) = Runtime::new().run(tasks, RunConfig::new().policy(QuickExit));
    let live = ui.attach_run("race", handle);
    let items: Vec<_> = live.tap(stream).collect().await;
    assert!(
        items
            .iter()
            .any(|i| i.task_key.as_ref() == "model-small" && i.is_terminal())
    );
    let served = Served::start(ui).await;
    let browser = Browser::start().await;
    browser
        .client
        .goto(&served.url("/#/live/race"))
        .await
        .unwrap();

    browser
        .wait_css(".lane[data-key='model-small'][data-status='completed'] .winner")
        .await;
    for loser in ["model-large", "model-medium"] {
        browser
            .wait_css(&format!(
                ".lane[data-key='{loser}'][data-status='cancelled'] .lost"
            ))
            .await;
    }
    assert_eq!(
        browser
            .client
            .find_all(Locator::Css(".winner"))
            .await
            .unwrap()
            .len(),
        2,
        "the winner's badge and the run's note"
    );
    assert_eq!(browser.text("#live-counts .badge").await, "completed");
    // The winner's detail: its step, its result, its words.
    browser.click(".lane[data-key='model-small'] .key").await;
    browser
        .wait_xpath("//div[@id='lane-detail']//pre[contains(., 'ms_per_word')]")
        .await;
    let detail = browser.text("#lane-detail").await;
    assert!(detail.contains("word 0 word 1 word 2 word 3"), "{detail}");
    assert!(detail.contains("4 tokens"), "{detail}");
    browser.screenshot("ui-quick-exit.png").await;

    // The merged stream, filtered to the cancellations: the two losers, in
    // the order the consumer received them.
    let cancelled: Vec<String> = items
        .iter()
        .filter(|i| i.kind == tributary::ItemKind::Cancelled)
        .map(|i| i.task_key.to_string())
        .collect();
    assert_eq!(cancelled.len(), 2);
    browser
        .wait_css("#m-kind")
        .await
        .select_by_value("cancelled")
        .await
        .unwrap();
    browser
        .wait_xpath("//span[@id='merged-info' and starts-with(., '2 shown')]")
        .await;
    let shown = browser
        .client
        .execute(
            "return [...document.querySelectorAll('#merged .item')].map(e => e.dataset.task);",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(shown, json!(cancelled));

    browser.close().await;
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(tributary_browser), ignore = "needs chromium and chromedriver")]
async fn an_id_with_a_script_tag_renders_as_text() {
    let _one = ONE_BROWSER.lock().await;
    let hostile = "<script>window.__ran=1</script><img src=x onerror=window.__ran=2>";
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("runs.db");
    record_demo_run(&db, hostile, &["<b>bold</b>"]).await;
    let ui = UiServer::new().database(&db).unwrap();
    let (handle, stream) = streaming_run(vec![hostile.to_owned()], Duration::from_millis(100));
    let live = ui.attach_run("hostile", handle.clone());
    let (_received, _seen, consumer) = consume(&live, stream);
    let served = Served::start(ui).await;
    let browser = Browser::start().await;
    let nothing_ran = "return window.__ran === undefined \
        && document.querySelectorAll('#main script, #main img').length === 0;";

    browser.client.goto(&served.url("/")).await.unwrap();
    assert_eq!(browser.text("tr.run-row td.app-id").await, hostile);
    browser.click("tr.run-row").await;
    assert_eq!(browser.text("#run-title").await, hostile);
    browser.wait_css("#tree ul.tree li").await;
    assert_eq!(
        browser.client.execute(nothing_ran, vec![]).await.unwrap(),
        json!(true)
    );

    browser
        .client
        .goto(&served.url("/#/live/hostile"))
        .await
        .unwrap();
    browser.wait_css("#lanes .lane").await;
    assert_eq!(browser.text("#lanes .lane .key").await, hostile);
    browser.wait_css("#merged .item").await;
    assert_eq!(
        browser.client.execute(nothing_ran, vec![]).await.unwrap(),
        json!(true)
    );
    browser.screenshot("ui-hostile-id.png").await;

    browser.close().await;
    handle.cancel().await;
    consumer.await.unwrap();
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(tributary_browser), ignore = "needs chromium and chromedriver")]
async fn cancelling_asks_first_and_the_run_controls_reach_the_handle() {
    let _one = ONE_BROWSER.lock().await;
    let ui = UiServer::new();
    let keys: Vec<String> = (0..3).map(|i| format!("job-{i}")).collect();
    let (handle, stream) = streaming_run(keys, Duration::from_millis(50));
    let live = ui.attach_run("jobs", handle.clone());
    let (_received, _seen, consumer) = consume(&live, stream);
    let served = Served::start(ui).await;
    let browser = Browser::start().await;
    browser
        .client
        .goto(&served.url("/#/live/jobs"))
        .await
        .unwrap();
    browser
        .wait_xpath("//span[@id='lane-info' and starts-with(., '3 of 3 lanes')]")
        .await;

    // Cancel one lane, but change our mind: nothing is cancelled.
    browser
        .click(".lane[data-key='job-1'] button.cancel-lane")
        .await;
    browser.wait_css("dialog#confirm[open]").await;
    assert!(browser.text("#confirm-text").await.contains("task job-1"));
    browser.screenshot("ui-confirm-cancel.png").await;
    browser.click("#confirm-no").await;
    browser.wait_css("dialog#confirm:not([open])").await;
    assert_eq!(handle.progress_now().cancelled, 0);
    browser
        .wait_css(".lane[data-key='job-1'][data-status='running']")
        .await;

    // Confirmed: exactly that task is cancelled, the run goes on.
    browser
        .click(".lane[data-key='job-1'] button.cancel-lane")
        .await;
    browser.wait_css("dialog#confirm[open]").await;
    browser.click("#confirm-yes").await;
    let mut progress = handle.progress();
    tokio::time::timeout(WAIT, progress.wait_for(|p| p.cancelled == 1))
        .await
        .expect("the task is cancelled")
        .unwrap();
    browser
        .wait_css(".lane[data-key='job-1'][data-status='cancelled']")
        .await;
    assert_eq!(handle.progress_now().running, 2);
    assert!(!handle.is_cancelled());

    // The run's own pause and resume.
    browser.click("#run-pause").await;
    tokio::time::timeout(WAIT, progress.wait_for(|p| p.paused == 2))
        .await
        .expect("the run pauses")
        .unwrap();
    assert!(handle.is_paused());
    browser
        .wait_css(".lane[data-key='job-0'][data-status='paused']")
        .await;
    browser.click("#run-resume").await;
    tokio::time::timeout(WAIT, progress.wait_for(|p| p.paused == 0))
        .await
        .expect("the run resumes")
        .unwrap();
    assert!(!handle.is_paused());

    // Cancelling the run asks too.
    browser.click("#run-cancel").await;
    browser.wait_css("dialog#confirm[open]").await;
    browser.click("#confirm-yes").await;
    tokio::time::timeout(WAIT, consumer)
        .await
        .expect("the run ends once cancelled")
        .unwrap();
    assert!(handle.is_cancelled());
    assert_eq!(handle.progress_now().cancelled, 3);

    browser.close().await;
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(tributary_browser), ignore = "needs chromium and chromedriver")]
async fn a_parallel_actions_children_stream_in_lanes_under_their_parent() {
    let _one = ONE_BROWSER.lock().await;
    let section = tributary::Subgraph::action(action("write_section").reads(["title"]).run(
        |s: State, _, ctx| async move {
            let title: String = s.get_as("title")?;
            for w in 0u64.. {
                tokio::time::sleep(Duration::from_millis(60)).await;
                ctx.emit(format!("{title} {w}")).await?;
            }
            Ok((json!({}), s))
        },
    ));
    let sections = tributary::ParallelAction::map_states("sections", section, |_: &State, _| {
        Ok(["intro", "methods", "results", "discussion"].map(|t| State::new().set("title", t)))
    })
    .build();
    let graph = tributary::Graph::builder()
        .action(sections)
        .entrypoint("sections")
        .build()
        .unwrap();
    let ui = UiServer::new();
    let tasks = vec![
        TaskSpec::new("paper", graph.clone()),
        TaskSpec::new("review", graph),
    ];
    let (handle, stream) = Runtime::new().run(tasks, RunConfig::new());
    let live = ui.attach_run("papers", handle.clone());
    let (received, mut seen, consumer) = consume(&live, stream);
    let served = Served::start(ui).await;
    let browser = Browser::start().await;
    browser
        .client
        .goto(&served.url("/#/live/papers"))
        .await
        .unwrap();

    // Two top-level lanes, each followed by its four sections.
    browser
        .wait_xpath("//span[@id='lane-info' and starts-with(., '10 of 10 lanes')]")
        .await;
    let order = browser
        .client
        .execute(
            "return [...document.querySelectorAll('#lanes .lane')]\
               .sort((a, b) => parseFloat(a.style.top) - parseFloat(b.style.top))\
               .map(e => e.dataset.key);",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(
        order,
        json!([
            "paper", "paper/0", "paper/1", "paper/2", "paper/3", "review", "review/0", "review/1",
            "review/2", "review/3"
        ])
    );
    browser
        .wait_xpath(
            "//div[@data-key='paper/2']//span[contains(@class,'tail') and contains(., 'results')]",
        )
        .await;
    // Every lane has its buttons: nested tasks are addressed by path.
    browser
        .wait_css(".lane[data-key='paper'] button.pause-lane")
        .await;
    browser
        .wait_css(".lane[data-key='paper/1'] button.pause-lane")
        .await;
    browser
        .click(".lane[data-key='paper/1'] button.pause-lane")
        .await;
    browser
        .wait_css(".lane[data-key='paper/1'][data-status='paused']")
        .await;
    let standing = |path: &str| {
        handle
            .tasks()
            .into_iter()
            .find(|t| t.path.to_string() == path)
            .map(|t| t.status)
    };
    assert_eq!(standing("paper/1"), Some(tributary::LiveStatus::Paused));
    assert_eq!(standing("paper/0"), Some(tributary::LiveStatus::Running));
    assert_eq!(standing("review/1"), Some(tributary::LiveStatus::Running));
    // While its siblings and cousins go on by five items, it does not move
    // (one item it was emitting may still arrive).
    let others = ["paper/0", "paper/2", "review/1"];
    let at_pause: HashMap<&str, u64> = others
        .iter()
        .chain(["paper/1"].iter())
        .map(|k| (*k, received.get(k)))
        .collect();
    tokio::time::timeout(
        WAIT,
        seen.wait_for(|_| others.iter().all(|k| received.get(k) >= at_pause[k] + 5)),
    )
    .await
    .expect("the other tasks go on")
    .unwrap();
    assert!(
        received.get("paper/1") <= at_pause["paper/1"] + 1,
        "paper/1 kept streaming"
    );
    browser.screenshot("ui-nested-lanes.png").await;

    browser
        .click(".lane[data-key='paper/1'] button.resume-lane")
        .await;
    browser
        .wait_css(".lane[data-key='paper/1'][data-status='running']")
        .await;
    assert_eq!(standing("paper/1"), Some(tributary::LiveStatus::Running));
    let resumed_at = received.get("paper/1");
    tokio::time::timeout(
        WAIT,
        seen.wait_for(|_| received.get("paper/1") >= resumed_at + 3),
    )
    .await
    .expect("paper/1 streams again once resumed")
    .unwrap();

    browser.close().await;
    handle.cancel().await;
    consumer.await.unwrap();
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(tributary_browser), ignore = "needs chromium and chromedriver")]
async fn the_page_reconnects_after_the_server_restarts_and_goes_on() {
    let _one = ONE_BROWSER.lock().await;
    let ui = UiServer::new();
    let keys: Vec<String> = (0..3).map(|i| format!("feed-{i}")).collect();
    let (handle, stream) = streaming_run(keys, Duration::from_millis(50));
    let live = ui.attach_run("feeds", handle.clone());
    let (_received, _seen, consumer) = consume(&live, stream);
    let served = Served::start(ui.clone()).await;
    let addr = served.addr;
    let browser = Browser::start().await;
    browser
        .client
        .goto(&served.url("/#/live/feeds"))
        .await
        .unwrap();
    browser.wait_conn("live").await;
    let version = |v: Value| v.as_str().and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
    let script = "return document.body.dataset.version || '0';";

    // The server goes away: the page says so and keeps what it has.
    served.stop().await;
    browser.wait_conn("reconnecting…").await;
    let before = version(browser.client.execute(script, vec![]).await.unwrap());
    assert!(before > 0);
    browser.wait_css("#lanes .lane[data-key='feed-1']").await;

    // Back on the same address: the browser reconnects by itself and the
    // lanes move on from where they were.
    let served = Served::start_at(ui, addr).await;
    browser.wait_conn("live").await;
    let mut after = before;
    for _ in 0..100 {
        after = version(browser.client.execute(script, vec![]).await.unwrap());
        if after > before + 50 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(after > before + 50, "updates resumed: {before} -> {after}");
    // No item is shown twice: positions in the merged panel only grow.
    let positions = browser
        .client
        .execute(
            "return [...document.querySelectorAll('#merged .item .pos')].map(e => Number(e.textContent.slice(1)));",
            vec![],
        )
        .await
        .unwrap();
    let positions: Vec<u64> = serde_json::from_value(positions).unwrap();
    assert!(positions.len() > 10);
    assert!(
        positions.windows(2).all(|w| w[1] == w[0] + 1),
        "{positions:?}"
    );

    browser.close().await;
    handle.cancel().await;
    consumer.await.unwrap();
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(tributary_browser), ignore = "needs chromium and chromedriver")]
async fn a_run_paused_by_other_code_shows_its_lanes_paused() {
    let _one = ONE_BROWSER.lock().await;
    let ui = UiServer::new().read_only();
    // Each task emits once, then stays quiet for a minute: nothing but
    // the handle says the run was paused.
    let keys: Vec<String> = (0..2).map(|i| format!("idle-{i}")).collect();
    let (handle, stream) = streaming_run(keys, Duration::from_secs(60));
    let live = ui.attach_run("idle", handle.clone());
    let (_received, _seen, consumer) = consume(&live, stream);
    let served = Served::start(ui).await;
    let browser = Browser::start().await;
    browser
        .client
        .goto(&served.url("/#/live/idle"))
        .await
        .unwrap();
    browser
        .wait_css(".lane[data-key='idle-1'][data-status='running']")
        .await;
    assert_eq!(browser.text("#run-controls").await, "read-only");

    handle.pause();
    browser
        .wait_css(".lane[data-key='idle-1'][data-status='paused']")
        .await;
    browser
        .wait_css(".lane[data-key='idle-0'][data-status='paused']")
        .await;
    handle.resume();
    browser
        .wait_css(".lane[data-key='idle-1'][data-status='running']")
        .await;

    browser.close().await;
    handle.cancel().await;
    consumer.await.unwrap();
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(tributary_browser), ignore = "needs chromium and chromedriver")]
async fn a_recorded_steps_detail_shows_its_inputs_and_tokens() {
    let _one = ONE_BROWSER.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("runs.db");
    crate::ui_recorded::record_answer(&db, "asked", 3).await;
    let served = Served::start(UiServer::new().database(&db).unwrap()).await;
    let browser = Browser::start().await;
    browser
        .client
        .goto(&served.url("/#/run/asked"))
        .await
        .unwrap();

    browser.click("#steps tbody tr:nth-child(1)").await;
    browser
        .wait_xpath("//pre[@id='step-tokens' and .='word0 word1 word2']")
        .await;
    let inputs = browser.text("#step-inputs").await;
    assert!(
        inputs.contains("\"question\": \"why do rivers meander?\""),
        "{inputs}"
    );
    browser.screenshot("ui-step-inputs-tokens.png").await;
    browser.close().await;
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(tributary_browser), ignore = "needs chromium and chromedriver")]
async fn a_lane_retrying_its_step_says_so_and_a_quorum_is_counted() {
    use std::sync::atomic::{AtomicU32, Ordering};
    use tokio::sync::Notify;
    use tributary::{Quorum, RetryPolicy};
    use tributary_ui::{Goal, StepWatch};

    let _one = ONE_BROWSER.lock().await;
    let attempts = Arc::new(AtomicU32::new(0));
    let gate = Arc::new(Notify::new());
    // `flaky` fails once, then its retry waits at the gate; the judges
    // agree at once.
    let mut tasks = vec![{
        let (attempts, gate) = (Arc::clone(&attempts), Arc::clone(&gate));
        TaskSpec::action(
            "flaky",
            action("fetch").run(move |s: State, _, _| {
                let n = attempts.fetch_add(1, Ordering::SeqCst) + 1;
                let gate = Arc::clone(&gate);
                async move {
                    if n == 1 {
                        return Err::<(Value, State), _>("the server said 503".into());
                    }
                    gate.notified().await;
                    Ok((json!({ "verdict": "yes" }), s))
                }
            }),
        )
    }];
    for judge in ["judge-a", "judge-b"] {
        tasks.push(TaskSpec::action(
            judge,
            action("vote")
                .run(|s: State, _, _| async move { Ok((json!({ "verdict": "yes" }), s)) }),
        ));
    }
    let watch = StepWatch::new();
    let config = RunConfig::new()
        .policy(Quorum::new(3))
        .retry(RetryPolicy::exponential(3, Duration::from_millis(10)))
        .hook(watch.hook());
    let (handle, stream) = Runtime::new().run(tasks, config);
    let ui = UiServer::new();
    let live = ui.attach_run("vote", handle);
    live.watch(watch);
    live.goal(Goal::quorum(3));
    let consumer = tokio::spawn(live.tap(stream).count());
    let served = Served::start(ui).await;
    let browser = Browser::start().await;
    browser
        .client
        .goto(&served.url("/#/live/vote"))
        .await
        .unwrap();

    let lane = ".lane[data-key='flaky'][data-status='retrying']";
    browser.wait_css(lane).await;
    let act = browser.text(&format!("{lane} .act")).await;
    assert_eq!(act, "fetch (attempt 2)");
    browser
        .wait_xpath("//span[@id='goal' and .='quorum: 2 of 3 agree · 1 answer']")
        .await;
    browser.screenshot("ui-retrying-quorum.png").await;

    gate.notify_one();
    browser
        .wait_css(".lane[data-key='flaky'][data-status='completed']")
        .await;
    browser
        .wait_xpath(
            "//span[@id='goal' and contains(@class,'met') and .='quorum: 3 of 3 agree · 1 answer']",
        )
        .await;
    consumer.await.unwrap();
    browser.close().await;
    served.stop().await;
}
