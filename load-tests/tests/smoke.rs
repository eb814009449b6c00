//! Every scenario at a tiny scale, against the real `lianxin` binary and against the bare relay
//! (`--compare` runs both), through this crate's own binary: the reports must be written with
//! their keys, and the outcomes must be clean (every message acknowledged and delivered, no event
//! lost or duplicated in the storm, memory per connection measured).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde_json::Value;

/// The `lianxin` server binary in this build's target folder, built (or brought up to date)
/// first.
fn server_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        // target/<profile>/deps/smoke-<hash> → target/<profile>/lianxin
        let exe = std::env::current_exe().expect("test executable");
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("target/<profile>/deps");
        let bin = profile_dir.join("lianxin");
        {
            let mut cargo = Command::new(env!("CARGO"));
            cargo.args(["build", "-p", "lianxin-server", "--bin", "lianxin"]);
            if profile_dir.file_name().is_some_and(|n| n == "release") {
                cargo.arg("--release");
            }
            let status = cargo.status().expect("running cargo build");
            assert!(status.success(), "cargo build -p lianxin-server failed");
        }
        assert!(bin.is_file(), "{} is missing", bin.display());
        bin
    })
}

/// Runs `lianxin-load <args> --report <tmp>` and returns the report.
fn load(name: &str, args: &[&str]) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join(format!("{name}.json"));
    let output = Command::new(env!("CARGO_BIN_EXE_lianxin-load"))
        .args(args)
        .arg("--server-bin")
        .arg(server_bin())
        .arg("--report")
        .arg(&report)
        .output()
        .expect("running lianxin-load");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "lianxin-load {args:?} failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(
        stdout.contains("report:"),
        "the table names the report: {stdout}"
    );
    let text = std::fs::read_to_string(&report).expect("the report file is written");
    serde_json::from_str(&text).expect("the report is JSON")
}

fn figure(report: &Value, name: &str) -> f64 {
    report["figures"][name]
        .as_f64()
        .unwrap_or_else(|| panic!("no figure {name} in {}", report["figures"]))
}

/// The keys every single-target report has.
fn assert_report_shape(report: &Value, scenario: &str, kind: &str) {
    for key in [
        "scenario",
        "target",
        "started_at_unix",
        "wall_secs",
        "params",
        "metrics",
        "figures",
        "details",
        "server_process",
        "load_generator",
        "notes",
    ] {
        assert!(report.get(key).is_some(), "{scenario}/{kind}: no key {key}");
    }
    assert_eq!(report["scenario"], scenario);
    assert_eq!(report["target"]["kind"], kind);
    assert!(
        report["target"]["pid"].as_u64().is_some(),
        "the process is ours"
    );
    assert!(report["server_process"]["peak_rss_bytes"].as_u64().unwrap() > 0);
    assert!(report["details"]["server_samples"].as_array().is_some());
}

/// The keys of a comparison, and both of its reports.
fn assert_comparison(report: &Value, scenario: &str) -> (Value, Value) {
    assert_eq!(report["compare"], true);
    assert_eq!(report["scenario"], scenario);
    let ratios = report["ratios"].as_array().expect("ratios");
    assert!(!ratios.is_empty());
    for r in ratios {
        for key in ["name", "ours", "relay", "ratio", "unit"] {
            assert!(r.get(key).is_some(), "ratio without {key}: {r}");
        }
    }
    assert_report_shape(&report["ours"], scenario, "server");
    assert_report_shape(&report["relay"], scenario, "relay");
    (report["ours"].clone(), report["relay"].clone())
}

#[test]
fn idle_measures_memory_per_connection() {
    let report = load(
        "idle",
        &[
            "idle",
            "--connections",
            "20",
            "--hold-secs",
            "1",
            "--compare",
        ],
    );
    let (ours, relay) = assert_comparison(&report, "idle");
    for r in [&ours, &relay] {
        assert_eq!(figure(r, "connections"), 20.0);
        assert_eq!(figure(r, "failed"), 0.0);
        assert_eq!(figure(r, "still_open"), 20.0);
        assert!(figure(r, "connect_per_sec") > 0.0);
        // Measured, but at 20 connections the allocator's own purging can outweigh them (the
        // difference may be negative); the sizes themselves must be there.
        assert!(
            figure(r, "server_rss_per_connection_bytes").is_finite()
                && figure(r, "server_rss_before_bytes") > 0.0
                && figure(r, "server_rss_after_bytes") > 0.0,
            "{}",
            r["figures"]
        );
    }
}

#[test]
fn steady_acknowledges_and_delivers_every_message() {
    let report = load(
        "steady",
        &[
            "steady",
            "--rate",
            "50",
            "--duration-secs",
            "2",
            "--petitions",
            "5",
            "--photo-percent",
            "20",
            "--compare",
        ],
    );
    let (ours, relay) = assert_comparison(&report, "steady");
    // A fifth of the messages carry a photo uploaded before the run (the relay has no media),
    // and every one of them was acknowledged: "acked" and "errors" below.
    assert_eq!(ours["details"]["sends"]["sent_with_photo"], 20);
    assert_eq!(relay["details"]["sends"]["sent_with_photo"], 0);
    for r in [&ours, &relay] {
        assert_eq!(figure(r, "acked"), 100.0, "{}", r["details"]);
        for zero in [
            "errors",
            "dropped",
            "unanswered",
            "undelivered",
            "cursor_errors",
        ] {
            assert_eq!(figure(r, zero), 0.0, "{zero}: {}", r["details"]);
        }
        assert_eq!(r["details"]["delivered"], 100);
        assert_eq!(r["details"]["client_msg_id_mismatches"], 0);
        assert!(figure(r, "ack_p50_us") > 0.0);
        assert!(figure(r, "e2e_p99_us") >= figure(r, "e2e_p50_us"));
        assert_eq!(
            r["details"]["connections"], 15,
            "3 participants × 5 petitions"
        );
    }
    assert!(figure(&ours, "server_cpu_cores") > 0.0);
}

#[test]
fn storm_loses_and_duplicates_nothing() {
    let report = load(
        "storm",
        &[
            "storm",
            "--connections",
            "10",
            "--petitions",
            "5",
            "--burst-messages",
            "50",
            "--compare",
        ],
    );
    let (ours, relay) = assert_comparison(&report, "storm");
    for r in [&ours, &relay] {
        assert_eq!(figure(r, "connections"), 10.0);
        assert_eq!(figure(r, "burst_messages_acked"), 50.0);
        assert_eq!(figure(r, "all_caught_up"), 1.0, "{}", r["details"]);
        assert_eq!(figure(r, "lost_events"), 0.0);
        assert_eq!(figure(r, "duplicate_events"), 0.0);
        assert_eq!(figure(r, "not_caught_up"), 0.0);
        assert!(
            figure(r, "events_replayed") >= 10.0,
            "every client had events to replay"
        );
        assert_eq!(r["details"]["clients_with_nothing_to_replay"], 0);
    }
}

#[test]
fn soak_reports_the_memory_trend() {
    let report = load(
        "soak",
        &[
            "soak",
            "--rate",
            "50",
            "--duration-secs",
            "3",
            "--petitions",
            "5",
        ],
    );
    assert_report_shape(&report, "soak", "server");
    assert_eq!(figure(&report, "acked"), 150.0);
    assert_eq!(figure(&report, "errors"), 0.0);
    assert!(figure(&report, "rss_first_window_avg_bytes") > 0.0);
    assert!(figure(&report, "rss_last_window_avg_bytes") > 0.0);
    let _ = figure(&report, "rss_slope_bytes_per_sec");
    assert!(
        report["details"]["memory_trend"]["window_secs"]
            .as_f64()
            .is_some()
    );
    let relay = load(
        "soak-relay",
        &[
            "soak",
            "--rate",
            "50",
            "--duration-secs",
            "3",
            "--petitions",
            "5",
            "--relay",
        ],
    );
    assert_report_shape(&relay, "soak", "relay");
    assert_eq!(figure(&relay, "acked"), 150.0);
}

#[test]
fn deadlines_remind_every_petition_exactly_once() {
    let report = load(
        "deadlines",
        &[
            "deadlines",
            "--petitions",
            "200",
            "--window-secs",
            "3",
            "--lead-secs",
            "3",
            "--drain-secs",
            "60",
            "--petition-idle-secs",
            "1",
            "--settle-secs",
            "5",
        ],
    );
    assert_report_shape(&report, "deadlines", "server");
    assert_eq!(figure(&report, "petitions"), 200.0);
    assert_eq!(figure(&report, "submit_errors"), 0.0, "{}", report["notes"]);
    assert_eq!(figure(&report, "reminded"), 200.0, "{}", report["details"]);
    assert_eq!(figure(&report, "missing_reminders"), 0.0);
    assert_eq!(figure(&report, "doubled_reminders"), 0.0);
    let reminders = &report["details"]["reminders"];
    assert_eq!(reminders["clean"], true, "{reminders}");
    assert_eq!(reminders["unexpected"], 0);
    assert_eq!(reminders["early"], 0);
    assert_eq!(
        reminders["other_steps"],
        serde_json::json!({}),
        "no warning"
    );
    assert_eq!(reminders["fired_lateness"]["count"], 200);
    assert_eq!(
        report["details"]["worker_feed_errors"],
        serde_json::json!([])
    );
    assert!(figure(&report, "lateness_max_us") >= figure(&report, "lateness_p50_us"));
    assert!(figure(&report, "rss_tracked_bytes") > 0.0);
    assert_eq!(figure(&report, "pending_steps_tracked"), 200.0);
    // Idle petition actors were stopped once the reminders were done.
    assert_eq!(figure(&report, "petition_actors_settled"), 0.0);
}

#[test]
fn startup_serves_a_populated_database() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let output = Command::new(server_bin())
        .args(["populate", "--petitions", "60", "--residents", "6"])
        .args(["--messages-per-petition", "5", "--open-per-mille", "100"])
        .arg("--data-dir")
        .arg(&data)
        .output()
        .expect("running lianxin populate");
    assert!(
        output.status.success(),
        "populate failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let summary: Value = serde_json::from_slice(&output.stdout).expect("a JSON summary");
    assert_eq!(summary["petitions"], 60);
    assert_eq!(summary["messages"], 300);
    assert_eq!(summary["open"], 6);
    let report = load(
        "startup",
        &[
            "startup",
            "--data-dir",
            data.to_str().unwrap(),
            "--settle-secs",
            "1",
            "--readers",
            "6",
        ],
    );
    assert_report_shape(&report, "startup", "server");
    assert!(figure(&report, "ready_secs") > 0.0);
    assert!(figure(&report, "rss_at_rest_bytes") > 0.0);
    assert_eq!(figure(&report, "petitions_read"), 60.0, "10 petitions each");
    let entries = report["details"]["entries_read"].as_u64().unwrap();
    assert!(entries >= 60 * 5, "every message is served: {entries}");
    assert_eq!(
        report["details"]["entries_expected"].as_u64(),
        Some(entries),
        "every petition's whole timeline"
    );
}

#[test]
fn crash_loop_loses_and_repeats_nothing() {
    let report = load(
        "crash",
        &[
            "crash",
            "--cycles",
            "3",
            "--senders",
            "3",
            "--rate",
            "150",
            "--petition-every",
            "10",
            "--min-up-ms",
            "300",
            "--max-up-ms",
            "800",
            "--seed",
            "7",
        ],
    );
    assert_eq!(report["scenario"], "crash");
    assert_eq!(figure(&report, "cycles"), 3.0);
    assert!(figure(&report, "acked_messages") > 0.0);
    assert!(figure(&report, "acked_petitions") > 3.0);
    assert!(figure(&report, "feed_events") > 0.0);
    assert!(
        figure(&report, "resent_after_kill") > 0.0,
        "kills came mid-request"
    );
    for zero in [
        "lost_messages",
        "duplicate_messages",
        "timeline_gaps",
        "lost_petitions",
        "duplicate_petitions",
        "feed_gaps",
        "feed_repeats",
        "feed_regressions",
        "feeds_not_at_head",
    ] {
        assert_eq!(figure(&report, zero), 0.0, "{zero}");
    }
    assert_eq!(report["details"]["cycles"].as_array().unwrap().len(), 3);
}

#[test]
fn uploads_store_every_photo_and_measure_memory() {
    let report = load(
        "uploads",
        &[
            "uploads",
            "--uploads",
            "6",
            "--concurrency",
            "3",
            "--size-kib",
            "64",
        ],
    );
    assert_report_shape(&report, "uploads", "server");
    assert_eq!(figure(&report, "uploads_ok"), 6.0);
    assert_eq!(figure(&report, "errors"), 0.0);
    assert!(figure(&report, "throughput_mib_per_sec") > 0.0);
    assert!(figure(&report, "rss_peak_during_bytes") > 0.0);
}
