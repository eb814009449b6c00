//! The web pages in a real browser: headless Chromium (Debian's `chromium`, driven by
//! `playwright-core` from `web-tests/`).
//!
//! - `board.mjs`: the board shows the live board while WebSocket clients submit petitions; the page
//!   updates without a reload, drills down, lists the overdue petition, recovers from a dropped
//!   connection, switches to English.
//! - `chain.mjs`: the five-step chain with three browser contexts (resident at `/`, worker at
//!   `/worker`, a supervisor sent on to `/board`): a petition with a photo, a live alert, answers by
//!   text and voice, read receipts, connections cut on both sides with nothing lost or doubled, a
//!   photo chosen offline sent by the resident's next page after the first was closed (IndexedDB),
//!   escalation, resolution, rating, the board moving beside them; then reopening, withdrawal (a
//!   cancelled and a confirmed one), and a second petition transferred to another grid's worker,
//!   whose app in a fourth context alerts live while it leaves the first worker's inbox.
//!
//! Both photograph the pages at desktop and phone widths (into `target/screenshots/`).
//!
//! Needs Node.js and Chromium; `scripts/test` installs them (as `.ci/run` does).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use common::*;
use lianxin_client::Wire;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root")
        .to_path_buf()
}

/// Where the screenshots go: `target/screenshots/`.
fn screenshot_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("the target folder")
        .join("screenshots")
}

/// Makes sure `web-tests/node_modules` exists (npm ci from the committed lock file).
fn npm_ci(web_tests: &Path) {
    if web_tests.join("node_modules/playwright-core").is_dir() {
        return;
    }
    let status = std::process::Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(web_tests)
        .status()
        .expect("npm runs (install Node.js: scripts/test does)");
    assert!(status.success(), "npm ci in web-tests failed");
}

/// Chromium's path (`CHROMIUM`, else Debian's); a missing browser fails the test loudly.
fn chromium() -> String {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).exists(),
        "Chromium is missing at {chromium}: run scripts/test, which installs it (apt-get install chromium)"
    );
    chromium
}

/// A browser script running against a server: its `STEP` lines, and the test's `GO` answers.
struct Script {
    node: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    out: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    log: Vec<String>,
}

/// What a script said next.
enum Said {
    Step(String),
    Done,
    Failed,
}

impl Script {
    fn start(name: &str, server: &TestServer) -> Script {
        let chromium = chromium();
        let web_tests = repo_root().join("web-tests");
        npm_ci(&web_tests);
        let mut node = Command::new("node")
            .arg(web_tests.join(name))
            .arg(format!("http://{}", server.addr))
            .arg(screenshot_dir())
            .env("CHROMIUM", &chromium)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("node runs");
        let stdin = node.stdin.take().unwrap();
        let out = BufReader::new(node.stdout.take().unwrap()).lines();
        Script {
            node,
            stdin,
            out,
            log: Vec::new(),
        }
    }

    /// The next `STEP name`, `DONE` or `FAIL` (the page's own log lines are kept, not returned).
    async fn next(&mut self) -> Said {
        while let Some(line) = self.out.next_line().await.unwrap() {
            self.log.push(line.clone());
            match line.split_whitespace().collect::<Vec<_>>().as_slice() {
                ["STEP", name] => return Said::Step(name.to_string()),
                ["DONE"] => return Said::Done,
                ["FAIL", ..] => return Said::Failed,
                _ => continue,
            }
        }
        Said::Failed
    }

    async fn answer(&mut self, line: String) {
        self.stdin
            .write_all(format!("{line}\n").as_bytes())
            .await
            .unwrap();
    }

    /// Waits for the script to end; panics with its output unless it passed.
    async fn finish(mut self, passed: bool) {
        let status = self.node.wait().await.unwrap();
        assert!(
            passed && status.success(),
            "browser run failed: {:#?}",
            self.log
        );
    }
}

fn assert_screenshots(names: &[&str]) {
    for shot in names {
        let path = screenshot_dir().join(shot);
        let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        assert!(size > 1000, "{} was not saved", path.display());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_five_step_chain_in_three_browser_contexts() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    config.board.interval_ms = 50;
    let server = TestServer::start_with(config).await;
    let mut script = Script::start("chain.mjs", &server);
    let run = async {
        loop {
            let answer = match script.next().await {
                Said::Step(step) if step == "remind" => {
                    // Half a day and a minute later: the response deadline has passed.
                    server.clock.advance(Duration::from_secs(12 * 3600 + 60));
                    server.county.supervise_now().await.unwrap();
                    "GO remind".to_string()
                }
                Said::Step(other) => format!("NO {other}"),
                Said::Done => return true,
                Said::Failed => return false,
            };
            script.answer(answer).await;
        }
    };
    let passed = tokio::time::timeout(Duration::from_secs(180), run)
        .await
        .unwrap_or(false);
    script.finish(passed).await;
    assert_screenshots(&[
        "resident-phone.png",
        "resident-desktop.png",
        "resident-home-phone.png",
        "worker-phone.png",
        "worker-desktop.png",
        "worker-inbox-phone.png",
        "board-chain-desktop.png",
        "resident-withdraw-phone.png",
        "worker-transfer-phone.png",
    ]);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_board_page_shows_a_new_petition_live_in_chromium() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    config.board.interval_ms = 50;
    let server = TestServer::start_with(config).await;
    let worker_id = server.account_id("worker-01-1a");
    let resident = server.sign_in("resident-01-1a", Wire::Binary).await;
    let mut script = Script::start("board.mjs", &server);

    let mut first = 0;
    let run = async {
        loop {
            let answer = match script.next().await {
                Said::Step(step) if step == "submit" => {
                    let p = resident
                        .submit_petition(complaint(worker_id, "小区东门路灯不亮"))
                        .await
                        .unwrap();
                    first = p.id;
                    format!("GO submit {} {worker_id}", p.id)
                }
                Said::Step(step) if step == "overdue" => {
                    server.clock.advance(Duration::from_secs(13 * 3600));
                    server.county.supervise_now().await.unwrap();
                    "GO overdue".to_string()
                }
                Said::Step(step) if step == "second" => {
                    resident
                        .submit_petition(complaint(worker_id, "楼道堆放杂物"))
                        .await
                        .unwrap();
                    "GO second".to_string()
                }
                Said::Step(other) => format!("NO {other}"),
                Said::Done => return true,
                Said::Failed => return false,
            };
            script.answer(answer).await;
        }
    };
    let passed = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .unwrap_or(false);
    script.finish(passed).await;
    assert_ne!(first, 0);
    assert_screenshots(&[
        "board-desktop.png",
        "board-desktop-en.png",
        "board-phone.png",
    ]);
    server.stop().await;
}
