//! Worker appraisal (考核) from the audit log, as plain functions: workload points (65% by
//! default) and the residents' evaluation (35%). `docs/appraisal.md` defines every figure and
//! works an example through; the test `the_worked_example_of_the_docs_to_the_cent` checks it.
//!
//! Everything is integer arithmetic in hundredths ("cents") with half-up rounding, so a figure is
//! the same however often and in whatever order it is recomputed.

use std::collections::BTreeMap;

use lianxin_protocol::v1::{
    Action, AuditRecord, Category, RatingLevel, Role, StepKind, WorkerAppraisal, entry,
};
use serde::{Deserialize, Serialize};

use super::calendar::days_from_civil;

/// Workload points for a resolved petition, by category.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CategoryPoints {
    /// 政策咨询
    pub policy_question: f64,
    /// 情况反映
    pub situation_report: f64,
    /// 求助
    pub request_for_help: f64,
    /// 投诉
    pub complaint: f64,
    /// 建议
    pub suggestion: f64,
}

impl Default for CategoryPoints {
    fn default() -> Self {
        CategoryPoints {
            policy_question: 2.0,
            situation_report: 3.0,
            request_for_help: 4.0,
            complaint: 5.0,
            suggestion: 2.0,
        }
    }
}

/// How appraisal figures are weighted and scored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AppraisalConfig {
    /// Share of the workload score in the total, in percent.
    pub weight_workload_percent: u32,
    /// Share of the evaluation score in the total, in percent.
    pub weight_evaluation_percent: u32,
    /// Points for each petition resolved, by category.
    pub points_per_petition: CategoryPoints,
    /// Points for a first response within the response deadline.
    pub on_time_response_points: f64,
    /// Points for a resolution within the completion deadline.
    pub on_time_completion_points: f64,
    /// Points taken for each reminder the worker drew.
    pub reminder_penalty_points: f64,
    /// Points taken for each supervision escalation over the worker.
    pub escalation_penalty_points: f64,
    /// Evaluation score of a "satisfied" rating (of 100).
    pub satisfied_score: f64,
    /// Evaluation score of a "basically satisfied" rating.
    pub basically_satisfied_score: f64,
    /// Evaluation score of a "dissatisfied" rating.
    pub dissatisfied_score: f64,
}

impl Default for AppraisalConfig {
    fn default() -> Self {
        AppraisalConfig {
            weight_workload_percent: 65,
            weight_evaluation_percent: 35,
            points_per_petition: CategoryPoints::default(),
            on_time_response_points: 1.0,
            on_time_completion_points: 2.0,
            reminder_penalty_points: 1.0,
            escalation_penalty_points: 2.0,
            satisfied_score: 100.0,
            basically_satisfied_score: 80.0,
            dissatisfied_score: 0.0,
        }
    }
}

/// Why an appraisal configuration is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AppraisalConfigError {
    /// The two weights must add up to 100.
    #[error("appraisal weights add up to {0}%, not 100%")]
    Weights(u32),
}

impl AppraisalConfig {
    /// Checks the configuration.
    pub fn validate(&self) -> Result<(), AppraisalConfigError> {
        let sum = self.weight_workload_percent + self.weight_evaluation_percent;
        if sum == 100 {
            Ok(())
        } else {
            Err(AppraisalConfigError::Weights(sum))
        }
    }

    fn petition_points(&self, category: Category) -> i64 {
        let c = &self.points_per_petition;
        cents(match category {
            Category::PolicyQuestion => c.policy_question,
            Category::SituationReport => c.situation_report,
            Category::RequestForHelp => c.request_for_help,
            Category::Complaint => c.complaint,
            Category::Suggestion | Category::Unspecified => c.suggestion,
        })
    }
}

/// Why a period name is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a period is a month written YYYY-MM, such as 2026-11 (got {0:?})")]
pub struct BadPeriod(pub String);

/// The instants `[from, to)` of a month ("2026-11") in the zone `utc_offset_minutes` east of UTC.
pub fn month_period(period: &str, utc_offset_minutes: i32) -> Result<(i64, i64), BadPeriod> {
    let bad = || BadPeriod(period.to_owned());
    let (y, m) = period.split_once('-').ok_or_else(bad)?;
    if y.len() != 4 || m.len() != 2 {
        return Err(bad());
    }
    let year: i64 = y.parse().map_err(|_| bad())?;
    let month: u32 = m.parse().map_err(|_| bad())?;
    if !(1..=12).contains(&month) || !(1970..=9999).contains(&year) {
        return Err(bad());
    }
    let (next_year, next_month) = if month == 12 {
        (year + 1, 1)
    } else {
        (year, month + 1)
    };
    let offset = i64::from(utc_offset_minutes) * 60_000;
    let start = |y, m| days_from_civil(y, m, 1) * 86_400_000 - offset;
    Ok((start(year, month), start(next_year, next_month)))
}

/// A configured number as hundredths.
fn cents(x: f64) -> i64 {
    (x * 100.0).round() as i64
}

/// `n / d` rounded half away from zero (`d` > 0).
pub fn div_round(n: i64, d: i64) -> i64 {
    if d <= 0 {
        return 0;
    }
    if n >= 0 {
        (n + d / 2) / d
    } else {
        -((-n + d / 2) / d)
    }
}

/// What the log says about one worker in a period: the counts behind every appraisal figure.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tally {
    /// Petitions resolved.
    pub handled: u32,
    /// Their points, by category (cents).
    pub handled_points: i64,
    /// First responses within the response deadline.
    pub on_time_responses: u32,
    /// Resolutions within the completion deadline.
    pub on_time_completions: u32,
    /// Reminders drawn.
    pub reminders: u32,
    /// Supervision escalations over the worker.
    pub escalations: u32,
    /// Manual points entries (cents).
    pub manual_points: i64,
    /// Ratings of rounds handled, by level.
    pub satisfied: u32,
    /// See `satisfied`.
    pub basically_satisfied: u32,
    /// See `satisfied`: bad reviews.
    pub dissatisfied: u32,
    /// Ratings recorded by staff from a telephone call.
    pub rated_by_phone: u32,
}

/// The tallies of every worker, by account id.
pub type Tallies = BTreeMap<u64, Tally>;

/// Folds one audit record into the tallies.
pub fn apply(tallies: &mut Tallies, record: &AuditRecord, config: &AppraisalConfig) {
    if let Some(points) = &record.points {
        tallies.entry(points.worker_id).or_default().manual_points += points.points_cents;
        return;
    }
    let Some(e) = &record.entry else {
        return;
    };
    let staff = matches!(e.author_role(), Role::Worker | Role::GridHead);
    match &e.body {
        Some(entry::Body::Transition(t)) => match t.action() {
            Action::Respond if staff => {
                let due = record.response_due_at_ms;
                if due == 0 || e.at_ms <= due {
                    tallies.entry(e.author_id).or_default().on_time_responses += 1;
                }
            }
            Action::Resolve if staff => {
                let tally = tallies.entry(e.author_id).or_default();
                tally.handled += 1;
                tally.handled_points += config.petition_points(record.category());
                let due = record.completion_due_at_ms;
                if due == 0 || e.at_ms <= due {
                    tally.on_time_completions += 1;
                }
            }
            Action::Rate => {
                if let Some(rating) = &t.rating {
                    for worker in &rating.handler_ids {
                        let tally = tallies.entry(*worker).or_default();
                        match rating.level() {
                            RatingLevel::Satisfied => tally.satisfied += 1,
                            RatingLevel::BasicallySatisfied => tally.basically_satisfied += 1,
                            RatingLevel::Dissatisfied => tally.dissatisfied += 1,
                            RatingLevel::Unspecified => continue,
                        }
                        if rating.recorded_by != 0 {
                            tally.rated_by_phone += 1;
                        }
                    }
                }
            }
            _ => {}
        },
        Some(entry::Body::Supervision(s)) => match s.step() {
            StepKind::Reminder => {
                for worker in &s.notified_ids {
                    tallies.entry(*worker).or_default().reminders += 1;
                }
            }
            StepKind::Escalation if record.assignee_id != 0 => {
                tallies.entry(record.assignee_id).or_default().escalations += 1;
            }
            _ => {}
        },
        _ => {}
    }
}

/// The tallies of a period: every record of the log in it, folded.
pub fn rebuild<'a>(
    records: impl IntoIterator<Item = &'a AuditRecord>,
    config: &AppraisalConfig,
) -> Tallies {
    let mut tallies = Tallies::new();
    for r in records {
        apply(&mut tallies, r, config);
    }
    tallies
}

/// A worker to appraise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appraisee {
    /// Account id.
    pub id: u64,
    /// Display name.
    pub name: String,
    /// Worker or grid head.
    pub role: Role,
    /// Community.
    pub community_id: u64,
    /// Grid.
    pub grid_id: u64,
}

/// Scores every worker of `workers` from the tallies: workload normalised within each community,
/// evaluation, the weighted total and the rank within the community.
pub fn appraise(
    workers: &[Appraisee],
    tallies: &Tallies,
    config: &AppraisalConfig,
) -> Vec<WorkerAppraisal> {
    let empty = Tally::default();
    let mut rows: Vec<WorkerAppraisal> = workers
        .iter()
        .map(|w| {
            let t = tallies.get(&w.id).unwrap_or(&empty);
            let on_time = i64::from(t.on_time_responses) * cents(config.on_time_response_points)
                + i64::from(t.on_time_completions) * cents(config.on_time_completion_points);
            let penalty = i64::from(t.reminders) * cents(config.reminder_penalty_points)
                + i64::from(t.escalations) * cents(config.escalation_penalty_points);
            let rated = i64::from(t.satisfied + t.basically_satisfied + t.dissatisfied);
            let score_sum = i64::from(t.satisfied) * cents(config.satisfied_score)
                + i64::from(t.basically_satisfied) * cents(config.basically_satisfied_score)
                + i64::from(t.dissatisfied) * cents(config.dissatisfied_score);
            WorkerAppraisal {
                worker_id: w.id,
                name: w.name.clone(),
                role: w.role as i32,
                community_id: w.community_id,
                grid_id: w.grid_id,
                handled: t.handled,
                handled_points_cents: t.handled_points,
                on_time_responses: t.on_time_responses,
                on_time_completions: t.on_time_completions,
                on_time_points_cents: on_time,
                reminders: t.reminders,
                escalations: t.escalations,
                penalty_points_cents: penalty,
                manual_points_cents: t.manual_points,
                workload_points_cents: t.handled_points + on_time - penalty + t.manual_points,
                satisfied: t.satisfied,
                basically_satisfied: t.basically_satisfied,
                dissatisfied: t.dissatisfied,
                rated_by_phone: t.rated_by_phone,
                evaluation_score_cents: div_round(score_sum, rated.max(1)),
                has_evaluation: rated > 0,
                ..Default::default()
            }
        })
        .collect();
    // Workload normalised within the community: the highest gets 100.00.
    let mut best: BTreeMap<u64, i64> = BTreeMap::new();
    for r in &rows {
        let b = best.entry(r.community_id).or_default();
        *b = (*b).max(r.workload_points_cents);
    }
    let (ww, we) = (
        i64::from(config.weight_workload_percent),
        i64::from(config.weight_evaluation_percent),
    );
    for r in &mut rows {
        let max = best.get(&r.community_id).copied().unwrap_or(0);
        r.workload_score_cents = if max > 0 {
            div_round(r.workload_points_cents.max(0) * 10_000, max)
        } else {
            0
        };
        r.total_cents = div_round(
            ww * r.workload_score_cents + we * r.evaluation_score_cents,
            100,
        );
    }
    // Rank within each community: total, then workload points, then id.
    let mut order: Vec<usize> = (0..rows.len()).collect();
    order.sort_by(|a, b| {
        let (x, y) = (&rows[*a], &rows[*b]);
        x.community_id
            .cmp(&y.community_id)
            .then(y.total_cents.cmp(&x.total_cents))
            .then(y.workload_points_cents.cmp(&x.workload_points_cents))
            .then(x.worker_id.cmp(&y.worker_id))
    });
    let mut place = 0;
    let mut current = None;
    for i in order {
        if current != Some(rows[i].community_id) {
            current = Some(rows[i].community_id);
            place = 0;
        }
        place += 1;
        rows[i].rank = place;
    }
    rows
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use lianxin_protocol::v1::{Entry, PointsEntry, Rating, SupervisionNotice, Transition};
    use proptest::prelude::*;

    const H: i64 = 3_600_000;

    fn record(petition: u64, at: i64, author: u64, body: entry::Body) -> AuditRecord {
        AuditRecord {
            at_ms: at,
            petition_id: petition,
            community_id: 1,
            grid_id: 10,
            category: Category::Complaint as i32,
            assignee_id: author,
            round: 1,
            response_due_at_ms: 12 * H,
            completion_due_at_ms: 120 * H,
            entry: Some(Entry {
                petition_id: petition,
                author_id: author,
                author_role: Role::Worker as i32,
                at_ms: at,
                body: Some(body),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn transition(action: Action) -> entry::Body {
        entry::Body::Transition(Transition {
            action: action as i32,
            ..Default::default()
        })
    }

    fn rating(level: RatingLevel, handlers: &[u64], by_phone: bool) -> entry::Body {
        entry::Body::Transition(Transition {
            action: Action::Rate as i32,
            rating: Some(Rating {
                level: level as i32,
                handler_ids: handlers.to_vec(),
                recorded_by: u64::from(by_phone) * 99,
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    fn step(kind: StepKind, notified: &[u64]) -> entry::Body {
        entry::Body::Supervision(SupervisionNotice {
            step: kind as i32,
            notified_ids: notified.to_vec(),
            ..Default::default()
        })
    }

    fn worker(id: u64, name: &str) -> Appraisee {
        Appraisee {
            id,
            name: name.into(),
            role: Role::Worker,
            community_id: 1,
            grid_id: 10,
        }
    }

    /// The example of docs/appraisal.md, "A worked example".
    #[test]
    fn the_worked_example_of_the_docs_to_the_cent() {
        let (wang, li, zhao) = (1, 2, 3);
        let mut log = Vec::new();
        // 王: 4 complaints resolved on time, answered on time; ratings: 3 satisfied,
        // 1 basically satisfied.
        for p in 1..=4 {
            log.push(record(p, H, wang, transition(Action::Respond)));
            log.push(record(p, 50 * H, wang, transition(Action::Resolve)));
        }
        for level in [
            RatingLevel::Satisfied,
            RatingLevel::Satisfied,
            RatingLevel::Satisfied,
            RatingLevel::BasicallySatisfied,
        ] {
            log.push(record(9, 60 * H, 0, rating(level, &[wang], false)));
        }
        // 李: 2 complaints, one answered late (a reminder) and resolved late; 1 dissatisfied,
        // 1 satisfied (recorded from a phone call); 1.50 points for volunteer service.
        log.push(record(5, H, li, transition(Action::Respond)));
        log.push(record(5, 50 * H, li, transition(Action::Resolve)));
        log.push(record(6, 12 * H, 0, step(StepKind::Reminder, &[li])));
        log.push(record(6, 13 * H, li, transition(Action::Respond)));
        log.push(record(6, 130 * H, li, transition(Action::Resolve)));
        log.push(record(
            9,
            140 * H,
            0,
            rating(RatingLevel::Dissatisfied, &[li], false),
        ));
        log.push(record(
            9,
            141 * H,
            0,
            rating(RatingLevel::Satisfied, &[li], true),
        ));
        log.push(AuditRecord {
            at_ms: 150 * H,
            points: Some(PointsEntry {
                worker_id: li,
                points_cents: 150,
                reason: "志愿服务".into(),
            }),
            ..Default::default()
        });
        // 赵: nothing resolved, escalated over once, no ratings.
        let mut esc = record(7, 20 * H, 0, step(StepKind::Escalation, &[50]));
        esc.assignee_id = zhao;
        log.push(esc);

        let config = AppraisalConfig::default();
        let tallies = rebuild(&log, &config);
        let rows = appraise(
            &[worker(wang, "王"), worker(li, "李"), worker(zhao, "赵")],
            &tallies,
            &config,
        );
        let by = |id| rows.iter().find(|r| r.worker_id == id).cloned().unwrap();
        let (w, l, z) = (by(wang), by(li), by(zhao));
        // 王: 4 × 5 + 4 × 1 + 4 × 2 = 32.00 points; the community's best: 100.00.
        assert_eq!(w.workload_points_cents, 3200);
        assert_eq!(w.workload_score_cents, 10_000);
        // (3 × 100 + 80) / 4 = 95.00; 0.65 × 100 + 0.35 × 95 = 98.25.
        assert_eq!(w.evaluation_score_cents, 9_500);
        assert_eq!(w.total_cents, 9_825);
        // 李: 2 × 5 + 1 (one on-time response) + 2 (one on-time completion) − 1 (reminder) + 1.50
        // = 13.50 points; 13.50 / 32 = 42.1875 → 42.19.
        assert_eq!(l.workload_points_cents, 1350);
        assert_eq!(l.workload_score_cents, 4_219);
        // (0 + 100) / 2 = 50.00; 0.65 × 42.19 + 0.35 × 50 = 27.4235 + 17.5 = 44.9235 → 44.92.
        assert_eq!(l.evaluation_score_cents, 5_000);
        assert_eq!(l.total_cents, 4_492);
        assert_eq!((l.dissatisfied, l.rated_by_phone), (1, 1));
        // 赵: −2.00 points (an escalation); normalised from 0: 0; no evaluation: 0.
        assert_eq!(z.workload_points_cents, -200);
        assert_eq!((z.workload_score_cents, z.total_cents), (0, 0));
        assert!(!z.has_evaluation);
        assert_eq!((w.rank, l.rank, z.rank), (1, 2, 3));
    }

    #[test]
    fn months_in_the_local_zone() {
        // 2026-11-01 00:00 in UTC+8 is 2026-10-31 16:00 UTC.
        let (from, to) = month_period("2026-11", 480).unwrap();
        assert_eq!(from, 1_793_462_400_000);
        assert_eq!(to - from, 30 * 24 * H);
        let (_, dec_end) = month_period("2026-12", 0).unwrap();
        assert_eq!(dec_end, month_period("2027-01", 0).unwrap().0);
        for bad in ["2026-13", "2026-1", "26-11", "2026/11", "", "2026-00"] {
            assert!(month_period(bad, 480).is_err(), "{bad}");
        }
    }

    #[test]
    fn weights_must_add_up() {
        let mut c = AppraisalConfig::default();
        assert_eq!(c.validate(), Ok(()));
        c.weight_evaluation_percent = 40;
        assert_eq!(c.validate(), Err(AppraisalConfigError::Weights(105)));
    }

    #[test]
    fn rounding_is_half_away_from_zero() {
        assert_eq!(div_round(5, 10), 1);
        assert_eq!(div_round(4, 10), 0);
        assert_eq!(div_round(-5, 10), -1);
        assert_eq!(div_round(421_875, 10_000), 42);
    }

    fn arb_record() -> impl Strategy<Value = AuditRecord> {
        let body = prop_oneof![
            Just(transition(Action::Respond)),
            Just(transition(Action::Resolve)),
            Just(transition(Action::Transfer)),
            (
                prop::sample::select(vec![
                    RatingLevel::Satisfied,
                    RatingLevel::BasicallySatisfied,
                    RatingLevel::Dissatisfied
                ]),
                prop::collection::vec(1u64..5, 0..3),
                any::<bool>()
            )
                .prop_map(|(l, h, p)| rating(l, &h, p)),
            prop::collection::vec(1u64..5, 0..2).prop_map(|n| step(StepKind::Reminder, &n)),
            Just(step(StepKind::Escalation, &[50])),
        ];
        (
            1u64..20,
            0i64..200,
            1u64..5,
            body,
            -300i64..300,
            any::<bool>(),
        )
            .prop_map(|(p, at_h, author, body, points, manual)| {
                if manual {
                    AuditRecord {
                        at_ms: at_h * H,
                        points: Some(PointsEntry {
                            worker_id: author,
                            points_cents: points,
                            reason: "x".into(),
                        }),
                        ..Default::default()
                    }
                } else {
                    record(p, at_h * H, author, body)
                }
            })
    }

    proptest! {
        /// Stored tallies (folded one record at a time, saved and reloaded between chunks as a
        /// restart would) equal a rebuild of the whole log, and the scores from them agree.
        #[test]
        fn a_rebuild_from_the_log_gives_the_stored_figures(
            log in prop::collection::vec(arb_record(), 0..60),
            cuts in prop::collection::vec(0usize..60, 0..5),
        ) {
            let config = AppraisalConfig::default();
            let mut stored = Tallies::new();
            let mut cuts = cuts;
            cuts.sort_unstable();
            let mut start = 0;
            for cut in cuts.into_iter().chain(std::iter::once(log.len())) {
                let end = cut.min(log.len()).max(start);
                for r in &log[start..end] {
                    apply(&mut stored, r, &config);
                }
                // "Restart": the tallies go through their stored form.
                let saved = serde_json::to_string(&stored).unwrap();
                stored = serde_json::from_str(&saved).unwrap();
                start = end;
            }
            let rebuilt = rebuild(&log, &config);
            prop_assert_eq!(&stored, &rebuilt);
            let workers: Vec<Appraisee> = (1..5).map(|id| worker(id, "w")).collect();
            let a = appraise(&workers, &stored, &config);
            prop_assert_eq!(&a, &appraise(&workers, &rebuilt, &config));
            for r in &a {
                prop_assert!((0..=10_000).contains(&r.workload_score_cents));
                prop_assert!((0..=10_000).contains(&r.total_cents));
                prop_assert!(r.rank >= 1 && r.rank <= 4);
            }
        }
    }
}
