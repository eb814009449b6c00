//! The board page in a real browser: headless Chromium (Debian's `chromium`, driven by
//! `playwright-core` from `web-tests/`) shows the live board while WebSocket clients submit
//! petitions; the page updates without a reload, drills down, lists the overdue petition, recovers
//! from a dropped connection, switches to English, and is photographed at desktop and phone widths
//! (into `target/screenshots/`).
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_board_page_shows_a_new_petition_live_in_chromium() {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).exists(),
        "Chromium is missing at {chromium}: run scripts/test, which installs it (apt-get install chromium)"
    );
    let web_tests = repo_root().join("web-tests");
    npm_ci(&web_tests);

    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    config.board.interval_ms = 50;
    let server = TestServer::start_with(config).await;
    let worker_id = server.account_id("worker-01-1a");
    let resident = server.sign_in("resident-01-1a", Wire::Binary).await;

    let mut node = Command::new("node")
        .arg(web_tests.join("board.mjs"))
        .arg(format!("http://{}", server.addr))
        .arg(screenshot_dir())
        .env("CHROMIUM", &chromium)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node runs");
    let mut stdin = node.stdin.take().unwrap();
    let mut out = BufReader::new(node.stdout.take().unwrap()).lines();

    let mut first = 0;
    let mut log = Vec::new();
    let run = async {
        while let Some(line) = out.next_line().await.unwrap() {
            log.push(line.clone());
            let answer = match line.split_whitespace().collect::<Vec<_>>().as_slice() {
                ["STEP", "submit"] => {
                    let p = resident
                        .submit_petition(complaint(worker_id, "小区东门路灯不亮"))
                        .await
                        .unwrap();
                    first = p.id;
                    format!("GO submit {} {worker_id}", p.id)
                }
                ["STEP", "overdue"] => {
                    server.clock.advance(Duration::from_secs(13 * 3600));
                    server.county.supervise_now().await.unwrap();
                    "GO overdue".to_string()
                }
                ["STEP", "second"] => {
                    resident
                        .submit_petition(complaint(worker_id, "楼道堆放杂物"))
                        .await
                        .unwrap();
                    "GO second".to_string()
                }
                ["DONE"] => return true,
                ["FAIL", ..] => return false,
                _ => continue, // the page's own log lines
            };
            stdin
                .write_all(format!("{answer}\n").as_bytes())
                .await
                .unwrap();
        }
        false
    };
    let passed = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .unwrap_or(false);
    let status = node.wait().await.unwrap();
    assert!(passed && status.success(), "browser run failed: {log:#?}");
    assert_ne!(first, 0);
    for shot in [
        "board-desktop.png",
        "board-desktop-en.png",
        "board-phone.png",
    ] {
        let path = screenshot_dir().join(shot);
        let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        assert!(size > 1000, "{} was not saved", path.display());
    }
    server.stop().await;
}
