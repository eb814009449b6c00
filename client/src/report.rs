//! Appraisal reports as CSV: UTF-8 with a byte-order mark, so that spreadsheet programs open the
//! Chinese text correctly. Columns are described in docs/appraisal.md.

use lianxin_protocol::v1::{AppraisalReport, Role};

/// The byte-order mark spreadsheet programs look for to read UTF-8.
pub const BOM: &str = "\u{feff}";

/// Why a report could not be written as CSV.
#[derive(Debug, thiserror::Error)]
pub enum CsvError {
    /// The CSV writer failed.
    #[error("writing CSV: {0}")]
    Csv(#[from] csv::Error),
    /// The CSV writer's buffer could not be taken back.
    #[error("finishing CSV: {0}")]
    Finish(String),
    /// The output was not UTF-8 (it always is; kept for the type system).
    #[error("CSV is not UTF-8: {0}")]
    Utf8(#[from] std::string::FromUtf8Error),
}

/// Hundredths as a decimal with two places: 4492 → "44.92", -200 → "-2.00".
pub fn decimal(cents: i64) -> String {
    let sign = if cents < 0 { "-" } else { "" };
    let a = cents.unsigned_abs();
    format!("{sign}{}.{:02}", a / 100, a % 100)
}

fn role_name(role: i32) -> &'static str {
    match Role::try_from(role) {
        Ok(Role::GridHead) => "网格长",
        Ok(Role::Worker) => "网格员",
        _ => "",
    }
}

fn finish(w: csv::Writer<Vec<u8>>) -> Result<String, CsvError> {
    let bytes = w
        .into_inner()
        .map_err(|e| CsvError::Finish(e.to_string()))?;
    Ok(format!("{BOM}{}", String::from_utf8(bytes)?))
}

/// The workers of a report, one row each, ranked within their community.
pub fn workers_csv(report: &AppraisalReport) -> Result<String, CsvError> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record([
        "期间",
        "社区",
        "排名",
        "姓名",
        "角色",
        "账号ID",
        "网格ID",
        "办结件数",
        "办件分",
        "按时响应",
        "按时办结",
        "按时分",
        "提醒",
        "督办升级",
        "扣分",
        "手动加减分",
        "工作量分",
        "工作量得分",
        "满意",
        "基本满意",
        "不满意",
        "其中电话回访",
        "评价得分",
        "总分",
    ])?;
    let community_name = |id: u64| {
        report
            .communities
            .iter()
            .find(|c| c.community_id == id)
            .map(|c| c.name.clone())
            .unwrap_or_default()
    };
    let mut rows = report.workers.clone();
    rows.sort_by_key(|r| (r.community_id, r.rank, r.worker_id));
    for r in &rows {
        w.write_record([
            report.period.clone(),
            community_name(r.community_id),
            r.rank.to_string(),
            r.name.clone(),
            role_name(r.role).to_owned(),
            r.worker_id.to_string(),
            r.grid_id.to_string(),
            r.handled.to_string(),
            decimal(r.handled_points_cents),
            r.on_time_responses.to_string(),
            r.on_time_completions.to_string(),
            decimal(r.on_time_points_cents),
            r.reminders.to_string(),
            r.escalations.to_string(),
            decimal(r.penalty_points_cents),
            decimal(r.manual_points_cents),
            decimal(r.workload_points_cents),
            decimal(r.workload_score_cents),
            r.satisfied.to_string(),
            r.basically_satisfied.to_string(),
            r.dissatisfied.to_string(),
            r.rated_by_phone.to_string(),
            if r.has_evaluation {
                decimal(r.evaluation_score_cents)
            } else {
                String::new()
            },
            decimal(r.total_cents),
        ])?;
    }
    finish(w)
}

/// The communities of a report with their average totals (the township's view).
pub fn communities_csv(report: &AppraisalReport) -> Result<String, CsvError> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record([
        "期间",
        "排名",
        "社区",
        "社区ID",
        "人数",
        "平均总分",
        "办结件数",
        "评价数",
        "不满意",
    ])?;
    let mut rows = report.communities.clone();
    rows.sort_by_key(|c| (c.rank, c.community_id));
    for c in &rows {
        w.write_record([
            report.period.clone(),
            c.rank.to_string(),
            c.name.clone(),
            c.community_id.to_string(),
            c.workers.to_string(),
            decimal(c.average_total_cents),
            c.handled.to_string(),
            c.rated.to_string(),
            c.dissatisfied.to_string(),
        ])?;
    }
    finish(w)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use lianxin_protocol::v1::{CommunityAppraisal, WorkerAppraisal};

    #[test]
    fn decimals_have_two_places() {
        assert_eq!(decimal(4492), "44.92");
        assert_eq!(decimal(-200), "-2.00");
        assert_eq!(decimal(5), "0.05");
        assert_eq!(decimal(0), "0.00");
    }

    #[test]
    fn csv_starts_with_a_bom_and_parses_back_with_chinese_intact() {
        let report = AppraisalReport {
            period: "2026-11".into(),
            workers: vec![WorkerAppraisal {
                worker_id: 7,
                name: "条心社区1网格员1".into(),
                role: Role::Worker as i32,
                community_id: 3,
                total_cents: 9825,
                has_evaluation: true,
                evaluation_score_cents: 9500,
                rank: 1,
                ..Default::default()
            }],
            communities: vec![CommunityAppraisal {
                community_id: 3,
                name: "条心社区".into(),
                rank: 1,
                ..Default::default()
            }],
            ..Default::default()
        };
        let text = workers_csv(&report).unwrap();
        assert!(text.starts_with(BOM));
        let mut r = csv::Reader::from_reader(text.trim_start_matches(BOM).as_bytes());
        let headers = r.headers().unwrap().clone();
        assert_eq!(&headers[3], "姓名");
        let row = r.records().next().unwrap().unwrap();
        assert_eq!(&row[1], "条心社区");
        assert_eq!(&row[3], "条心社区1网格员1");
        assert_eq!(&row[4], "网格员");
        assert_eq!(&row[22], "95.00");
        assert_eq!(&row[23], "98.25");
        let c = communities_csv(&report).unwrap();
        assert!(c.starts_with(BOM) && c.contains("条心社区"));
    }
}
