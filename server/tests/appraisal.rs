//! Appraisal through real clients: petitions handled and rated over the WebSocket give the
//! workload points, evaluation scores and 65/35 totals of docs/appraisal.md; supervisors add
//! manual points; the month's report comes over the WebSocket, over HTTP as CSV (UTF-8 with BOM,
//! Chinese intact when parsed back) and from `lianxin report`; once the month is over the report
//! is frozen and still equals a rebuild from the audit log.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use common::*;
use lianxin_actors::clock::Clock;
use lianxin_client::report::BOM;
use lianxin_client::v1::{AppraisalReport, ErrorCode, RatingLevel, WorkerAppraisal};
use lianxin_client::{Client, Wire};

const MIN: i64 = 60_000;
const HOUR: i64 = 60 * MIN;
/// 2026-12-02 00:00 in UTC+8: November is over, and a day more.
const DECEMBER_2: i64 = 1_796_140_800_000;

fn row(report: &AppraisalReport, id: u64) -> WorkerAppraisal {
    report
        .workers
        .iter()
        .find(|w| w.worker_id == id)
        .cloned()
        .expect("the worker's row")
}

/// Raises a complaint to `worker_id`, lets `worker` answer after `answer_after` and resolve an
/// hour later, and has the resident rate it.
async fn handled_and_rated(
    server: &TestServer,
    resident: &Client,
    worker: &Client,
    worker_id: u64,
    answer_after: i64,
    level: RatingLevel,
) {
    let start = server.clock.now_ms();
    let p = resident
        .submit_petition(complaint(worker_id, "小区门口积水"))
        .await
        .unwrap();
    server.clock.set(start + answer_after);
    server.county.supervise_now().await.unwrap();
    worker
        .send_message(p.id, "马上处理", format!("a-{}", p.id))
        .await
        .unwrap();
    server.clock.set(start + answer_after + HOUR);
    worker.resolve(p.id, "已疏通下水道").await.unwrap();
    resident.rate(p.id, level, "").await.unwrap();
}

fn csv_rows(text: &str) -> Vec<Vec<String>> {
    assert!(text.starts_with(BOM), "a byte-order mark first");
    let mut r = csv::Reader::from_reader(text.trim_start_matches(BOM).as_bytes());
    r.records()
        .map(|rec| rec.unwrap().iter().map(str::to_owned).collect())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handled_and_rated_petitions_make_the_monthly_appraisal() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let (a, b) = (
        server.account_id("worker-01-1a"),
        server.account_id("worker-01-1b"),
    );
    let resident = server.sign_in("resident-01-1a", Wire::Binary).await;
    let wa = server.sign_in("worker-01-1a", Wire::Binary).await;
    let wb = server.sign_in("worker-01-1b", Wire::Binary).await;
    let sup = server.sign_in("sup-01", Wire::Binary).await;

    // A: two complaints answered in 10 minutes, resolved in time; satisfied, basically satisfied.
    handled_and_rated(&server, &resident, &wa, a, 10 * MIN, RatingLevel::Satisfied).await;
    handled_and_rated(
        &server,
        &resident,
        &wa,
        a,
        10 * MIN,
        RatingLevel::BasicallySatisfied,
    )
    .await;
    // B: one complaint answered after 13 hours (a reminder at 12), dissatisfied; 1.50 points for
    // volunteer service.
    handled_and_rated(
        &server,
        &resident,
        &wb,
        b,
        13 * HOUR,
        RatingLevel::Dissatisfied,
    )
    .await;
    sup.add_points(b, 150, "社区志愿服务").await.unwrap();

    let report = sup.report("2026-11", 0).await.unwrap();
    let (ra, rb) = (row(&report, a), row(&report, b));
    // A: 2 × 5 + 2 × 1 + 2 × 2 = 16.00; normalised 100.00; (100 + 80) / 2 = 90.00;
    // 0.65 × 100 + 0.35 × 90 = 96.50.
    assert_eq!(ra.workload_points_cents, 1600);
    assert_eq!(ra.workload_score_cents, 10_000);
    assert_eq!(ra.evaluation_score_cents, 9_000);
    assert_eq!(ra.total_cents, 9_650);
    // B: 5 + 2 (on-time completion) − 1 (reminder) + 1.50 = 7.50; 7.5 / 16 = 46.875 → 46.88;
    // evaluation 0.00; 0.65 × 46.88 = 30.472 → 30.47.
    assert_eq!(rb.workload_points_cents, 750);
    assert_eq!((rb.reminders, rb.manual_points_cents), (1, 150));
    assert_eq!(rb.workload_score_cents, 4_688);
    assert_eq!((rb.evaluation_score_cents, rb.dissatisfied), (0, 1));
    assert_eq!(rb.total_cents, 3_047);
    assert_eq!((ra.rank, rb.rank), (1, 2));
    assert_eq!(
        report.workers.len(),
        12,
        "every staff member of the community"
    );

    // Who may see what.
    assert_eq!(code_of(wa.report("2026-11", 0).await), ErrorCode::Forbidden);
    let other = server
        .county
        .store()
        .communities()
        .unwrap()
        .into_iter()
        .find(|c| c.id != report.community_id)
        .unwrap()
        .id;
    assert_eq!(
        code_of(sup.report("2026-11", other).await),
        ErrorCode::Forbidden
    );
    assert_eq!(
        code_of(sup.report("2026-13", 0).await),
        ErrorCode::InvalidArgument
    );
    assert_eq!(
        code_of(wa.add_points(b, 100, "自己加分").await),
        ErrorCode::Forbidden
    );
    assert_eq!(
        code_of(sup.add_points(b, 100, " ").await),
        ErrorCode::InvalidArgument
    );

    // The township: every community, averaged and ranked.
    let township = server.sign_in("township", Wire::Binary).await;
    let all = township.report("2026-11", 0).await.unwrap();
    assert_eq!(all.communities.len(), 12);
    let ours = all
        .communities
        .iter()
        .find(|c| c.community_id == report.community_id)
        .unwrap();
    // (96.50 + 30.47 + 10 × 0) / 12 = 10.5808 → 10.58.
    assert_eq!((ours.average_total_cents, ours.rank), (1_058, 1));

    // HTTP: CSV with the session token; Chinese text parses back intact.
    let token = {
        let c = server.connect(Wire::Binary).await;
        c.sign_in("sup-01", PW).await.unwrap().token
    };
    let auth = format!("Authorization: Bearer {token}");
    let response = http_get_with(server.addr, "/reports/2026-11", &[&auth]).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("text/csv; charset=utf-8"));
    let body = &response[response.find("\r\n\r\n").unwrap() + 4..];
    let rows = csv_rows(body);
    let name_a = server
        .county
        .store()
        .account(a)
        .unwrap()
        .unwrap()
        .display_name;
    let line_a = rows
        .iter()
        .find(|r| r[3] == name_a)
        .expect("A's row, Chinese name intact");
    assert_eq!((line_a[2].as_str(), line_a[23].as_str()), ("1", "96.50"));
    assert!(line_a[1].ends_with("社区"));
    let json = http_get_with(server.addr, "/reports/2026-11?format=json", &[&auth]).await;
    assert!(json.contains("\"totalCents\":\"9650\""), "{json}");
    assert!(
        http_get(server.addr, "/reports/2026-11")
            .await
            .starts_with("HTTP/1.1 401")
    );
    let worker_token = wa_token(&server).await;
    let refused = http_get_with(
        server.addr,
        "/reports/2026-11",
        &[&format!("Authorization: Bearer {worker_token}")],
    )
    .await;
    assert!(refused.starts_with("HTTP/1.1 403"), "{refused}");

    // `lianxin report`, the command line.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_lianxin"))
        .args([
            "report",
            "--url",
            &server.url,
            "--login",
            "sup-01",
            "--password",
            PW,
        ])
        .args(["--period", "2026-11"])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows = csv_rows(&String::from_utf8(out.stdout).unwrap());
    assert!(rows.iter().any(|r| r[3] == name_a && r[23] == "96.50"));

    // November is over: the report is frozen, and a rebuild from the audit log gives it again.
    server.clock.set(DECEMBER_2);
    let frozen = sup.report("2026-11", 0).await.unwrap();
    assert_eq!(frozen.workers, report.workers);
    // Points given in December do not touch November.
    sup.add_points(a, 500, "十二月的表彰").await.unwrap();
    let again = sup.report("2026-11", 0).await.unwrap();
    assert_eq!(again.generated_at_ms, frozen.generated_at_ms, "issued once");
    assert_eq!(
        server
            .county
            .verify_report("2026-11", report.community_id)
            .unwrap(),
        Some(true)
    );
    server.stop().await;
}

async fn wa_token(server: &TestServer) -> String {
    let c = server.connect(Wire::Binary).await;
    c.sign_in("worker-01-1a", PW).await.unwrap().token
}
