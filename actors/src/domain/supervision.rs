//! Deadlines and the supervision ladder, as plain functions.
//!
//! Every petition has a response deadline (half a day by default) and a completion deadline (by
//! category). Each deadline has a ladder of steps at offsets from it: an optional warning before
//! it, a reminder to the worker when it passes, an optional reassignment, then escalation to the
//! grid head, the community and the township. A ladder runs while its deadline is unmet (the
//! response ladder until the first response, the completion ladder until resolution) and its steps
//! fire in order, once each: the petition counts how many of each ladder have fired.

use std::collections::BTreeMap;
use std::time::Duration;

use lianxin_protocol::v1::{
    Category, DeadlineKind, Petition, PetitionState, StepKind, SupervisionLevel,
};
use serde::{Deserialize, Serialize};

use super::calendar::{CalendarError, DeadlineClock, OfficeCalendar};

/// Offsets of one ladder's steps from its deadline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LadderConfig {
    /// Warn the worker this long before the deadline (`"off"`: no warning).
    #[serde(with = "optional_duration")]
    pub warning_before: Option<Duration>,
    /// Hand the petition to another on-duty worker this long after the deadline (response ladder
    /// only; `"off"`: never).
    #[serde(with = "optional_duration")]
    pub reassign_after: Option<Duration>,
    /// Escalate to the grid head this long after the deadline.
    #[serde(with = "humantime_serde")]
    pub grid_head_after: Duration,
    /// Escalate to the community's supervisors this long after the deadline.
    #[serde(with = "humantime_serde")]
    pub community_after: Duration,
    /// Escalate to the township's supervisors this long after the deadline.
    #[serde(with = "humantime_serde")]
    pub township_after: Duration,
}

/// An optional step offset: a human duration (`"30m"`), or `"off"` (also `"none"`, `"never"`) for
/// no such step. TOML has no null, so a step that is on by default is turned off this way.
mod optional_duration {
    use std::time::Duration;

    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serializer};

    /// Words that mean "no such step".
    const OFF: [&str; 3] = ["off", "none", "never"];

    pub fn serialize<S: Serializer>(value: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(d) => humantime_serde::serialize(d, s),
            None => s.serialize_str(OFF[0]),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let text: Option<String> = Option::deserialize(d)?;
        match text.as_deref().map(str::trim) {
            None => Ok(None),
            Some(t) if OFF.iter().any(|w| w.eq_ignore_ascii_case(t)) => Ok(None),
            Some(t) => humantime_serde::re::humantime::parse_duration(t)
                .map(Some)
                .map_err(D::Error::custom),
        }
    }
}

impl Default for LadderConfig {
    fn default() -> Self {
        LadderConfig {
            warning_before: Some(Duration::from_secs(3600)),
            reassign_after: None,
            grid_head_after: Duration::from_secs(2 * 3600),
            community_after: Duration::from_secs(6 * 3600),
            township_after: Duration::from_secs(24 * 3600),
        }
    }
}

/// Completion time allowed per category (限时办结).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CompletionConfig {
    /// Policy questions.
    #[serde(with = "humantime_serde")]
    pub policy_question: Duration,
    /// Situation reports.
    #[serde(with = "humantime_serde")]
    pub situation_report: Duration,
    /// Requests for help.
    #[serde(with = "humantime_serde")]
    pub request_for_help: Duration,
    /// Complaints.
    #[serde(with = "humantime_serde")]
    pub complaint: Duration,
    /// Suggestions.
    #[serde(with = "humantime_serde")]
    pub suggestion: Duration,
}

const DAY: u64 = 24 * 3600;

impl Default for CompletionConfig {
    fn default() -> Self {
        CompletionConfig {
            policy_question: Duration::from_secs(3 * DAY),
            situation_report: Duration::from_secs(5 * DAY),
            request_for_help: Duration::from_secs(3 * DAY),
            complaint: Duration::from_secs(5 * DAY),
            suggestion: Duration::from_secs(10 * DAY),
        }
    }
}

/// One community's deadline policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PolicyConfig {
    /// Time allowed for the first response ("half a day").
    #[serde(with = "humantime_serde")]
    pub response_within: Duration,
    /// Time allowed for resolution, per category.
    pub completion_within: CompletionConfig,
    /// Steps around the response deadline.
    pub response_ladder: LadderConfig,
    /// Steps around the completion deadline.
    pub completion_ladder: LadderConfig,
    /// Office hours; when set, deadline time runs only while the office is open.
    pub office_hours: Option<OfficeCalendar>,
    /// A resolved petition the resident has not rated is closed as unrated after this long
    /// (wall-clock time).
    #[serde(with = "humantime_serde")]
    pub close_unrated_after: Duration,
    /// How long after closing the resident may reopen a petition (wall-clock time).
    #[serde(with = "humantime_serde")]
    pub reopen_within: Duration,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            response_within: Duration::from_secs(12 * 3600),
            completion_within: CompletionConfig::default(),
            response_ladder: LadderConfig::default(),
            completion_ladder: LadderConfig {
                warning_before: Some(Duration::from_secs(DAY)),
                reassign_after: None,
                grid_head_after: Duration::from_secs(0),
                community_after: Duration::from_secs(DAY),
                township_after: Duration::from_secs(3 * DAY),
            },
            office_hours: None,
            close_unrated_after: Duration::from_secs(7 * DAY),
            reopen_within: Duration::from_secs(7 * DAY),
        }
    }
}

/// Deadline policies: a default and per-community replacements (keyed by community id).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SupervisionConfig {
    /// The policy of communities without their own.
    pub default: PolicyConfig,
    /// Whole policies of particular communities, by community id.
    pub communities: BTreeMap<String, PolicyConfig>,
}

/// A step of a ladder and when it fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlannedStep {
    /// When it fires.
    pub at_ms: i64,
    /// What it does.
    pub step: StepKind,
    /// Whom it reaches.
    pub level: SupervisionLevel,
}

/// A step that is due now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DueStep {
    /// Which deadline.
    pub deadline: DeadlineKind,
    /// The deadline itself.
    pub due_at_ms: i64,
    /// The step.
    pub planned: PlannedStep,
}

/// A checked policy, ready to compute deadlines.
#[derive(Debug, Clone)]
pub struct Policy {
    /// The configuration.
    config: PolicyConfig,
    /// How deadline time runs.
    clock: DeadlineClock,
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Whether the petition still waits for its first response.
pub fn response_pending(p: &Petition) -> bool {
    p.first_response_at_ms == 0
        && matches!(
            p.state(),
            PetitionState::Submitted | PetitionState::Transferred
        )
}

/// Whether the petition still waits for its resolution.
pub fn completion_pending(p: &Petition) -> bool {
    matches!(
        p.state(),
        PetitionState::Submitted
            | PetitionState::Responded
            | PetitionState::Transferred
            | PetitionState::Escalated
    )
}

impl Policy {
    /// Checks a policy (its office calendar) and prepares it.
    pub fn new(config: PolicyConfig) -> Result<Policy, CalendarError> {
        let clock = match &config.office_hours {
            Some(calendar) => {
                calendar.validate()?;
                DeadlineClock::OfficeHours(calendar.clone())
            }
            None => DeadlineClock::WallClock,
        };
        Ok(Policy { config, clock })
    }

    /// The configuration.
    pub fn config(&self) -> &PolicyConfig {
        &self.config
    }

    /// How deadline time runs.
    pub fn clock(&self) -> &DeadlineClock {
        &self.clock
    }

    /// Response and completion deadlines of a petition raised at `created_at_ms`.
    pub fn deadlines(&self, category: Category, created_at_ms: i64) -> (i64, i64) {
        let c = &self.config.completion_within;
        let completion = match category {
            Category::PolicyQuestion => c.policy_question,
            Category::SituationReport => c.situation_report,
            Category::RequestForHelp => c.request_for_help,
            Category::Complaint => c.complaint,
            Category::Suggestion | Category::Unspecified => c.suggestion,
        };
        (
            self.clock
                .add(created_at_ms, ms(self.config.response_within)),
            self.clock.add(created_at_ms, ms(completion)),
        )
    }

    /// The steps of one deadline's ladder, in firing order.
    pub fn ladder(&self, kind: DeadlineKind, due_ms: i64) -> Vec<PlannedStep> {
        let cfg = match kind {
            DeadlineKind::Completion => &self.config.completion_ladder,
            _ => &self.config.response_ladder,
        };
        let after = |d: Duration| self.clock.add(due_ms, ms(d));
        let mut steps = Vec::with_capacity(6);
        if let Some(before) = cfg.warning_before {
            steps.push(PlannedStep {
                at_ms: self.clock.sub(due_ms, ms(before)),
                step: StepKind::Warning,
                level: SupervisionLevel::Worker,
            });
        }
        steps.push(PlannedStep {
            at_ms: due_ms,
            step: StepKind::Reminder,
            level: SupervisionLevel::Worker,
        });
        if let (DeadlineKind::Response, Some(r)) = (kind, cfg.reassign_after) {
            steps.push(PlannedStep {
                at_ms: after(r),
                step: StepKind::Reassignment,
                level: SupervisionLevel::Worker,
            });
        }
        for (offset, level) in [
            (cfg.grid_head_after, SupervisionLevel::GridHead),
            (cfg.community_after, SupervisionLevel::Community),
            (cfg.township_after, SupervisionLevel::Township),
        ] {
            steps.push(PlannedStep {
                at_ms: after(offset),
                step: StepKind::Escalation,
                level,
            });
        }
        // Stable: steps at the same instant keep the order above.
        steps.sort_by_key(|s| s.at_ms);
        steps
    }

    fn pending_of(
        &self,
        p: &Petition,
        kind: DeadlineKind,
    ) -> Option<(i64, Vec<PlannedStep>, usize)> {
        let (active, due, done) = match kind {
            DeadlineKind::Response => (
                response_pending(p),
                p.response_due_at_ms,
                p.response_steps_done,
            ),
            _ => (
                completion_pending(p),
                p.completion_due_at_ms,
                p.completion_steps_done,
            ),
        };
        if !active || due == 0 {
            return None;
        }
        Some((due, self.ladder(kind, due), done as usize))
    }

    /// When the next step of either ladder, or the closing of an unrated petition, is due (0:
    /// nothing pending).
    pub fn next_step_at(&self, p: &Petition) -> i64 {
        [DeadlineKind::Response, DeadlineKind::Completion]
            .into_iter()
            .filter_map(|kind| {
                let (_, steps, done) = self.pending_of(p, kind)?;
                steps.get(done).map(|s| s.at_ms)
            })
            .chain(self.close_unrated_at(p))
            .min()
            .unwrap_or(0)
    }

    /// When a resolved, unrated petition is closed as unrated (None: it is not waiting for that).
    pub fn close_unrated_at(&self, p: &Petition) -> Option<i64> {
        (p.state() == PetitionState::Resolved && p.resolved_at_ms != 0).then(|| {
            p.resolved_at_ms
                .saturating_add(ms(self.config.close_unrated_after))
        })
    }

    /// How long after closing a petition may be reopened, in milliseconds.
    pub fn reopen_within_ms(&self) -> i64 {
        ms(self.config.reopen_within)
    }

    /// Every step due at `now_ms` that has not fired, in firing order (both ladders merged).
    pub fn due(&self, p: &Petition, now_ms: i64) -> Vec<DueStep> {
        let mut out = Vec::new();
        for kind in [DeadlineKind::Response, DeadlineKind::Completion] {
            if let Some((due_at_ms, steps, done)) = self.pending_of(p, kind) {
                out.extend(
                    steps
                        .into_iter()
                        .skip(done)
                        .take_while(|s| s.at_ms <= now_ms)
                        .map(|planned| DueStep {
                            deadline: kind,
                            due_at_ms,
                            planned,
                        }),
                );
            }
        }
        out.sort_by_key(|s| s.planned.at_ms);
        out
    }

    /// Sets the deadlines of a new petition's (or a reopened one's) round and its next step.
    pub fn start(&self, p: &mut Petition) {
        let started = if p.round_started_at_ms != 0 {
            p.round_started_at_ms
        } else {
            p.created_at_ms
        };
        let (response, completion) = self.deadlines(p.category(), started);
        p.response_due_at_ms = response;
        p.completion_due_at_ms = completion;
        p.response_steps_done = 0;
        p.completion_steps_done = 0;
        p.next_step_at_ms = self.next_step_at(p);
    }
}

/// Records that a step fired: counts it, notes the worker it concerns (reminders, escalations)
/// and raises the escalation level.
pub fn record_step(p: &mut Petition, step: &DueStep) {
    match step.deadline {
        DeadlineKind::Completion => p.completion_steps_done += 1,
        _ => p.response_steps_done += 1,
    }
    match step.planned.step {
        StepKind::Reminder => p.reminded_worker_ids.push(p.assignee_id),
        StepKind::Escalation => p.escalated_worker_ids.push(p.assignee_id),
        _ => {}
    }
    if step.planned.step == StepKind::Escalation && step.planned.level as i32 > p.escalation_level {
        p.set_escalation_level(step.planned.level);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const H: i64 = 3_600_000;
    const MIN: i64 = 60_000;

    fn petition(policy: &Policy, created: i64) -> Petition {
        let mut p = Petition {
            id: 1,
            assignee_id: 7,
            created_at_ms: created,
            category: Category::Complaint as i32,
            ..Default::default()
        };
        p.set_state(PetitionState::Submitted);
        policy.start(&mut p);
        p
    }

    /// Fires everything due at `now` the way the petition actor does.
    fn fire(policy: &Policy, p: &mut Petition, now: i64) -> Vec<DueStep> {
        let due = policy.due(p, now);
        for s in &due {
            record_step(p, s);
        }
        p.next_step_at_ms = policy.next_step_at(p);
        due
    }

    #[test]
    fn no_reminder_at_11h59_one_at_12h() {
        let policy = Policy::new(PolicyConfig::default()).unwrap();
        let mut p = petition(&policy, 0);
        assert_eq!(p.response_due_at_ms, 12 * H);
        let warning = fire(&policy, &mut p, 11 * H);
        assert_eq!(warning.len(), 1);
        assert_eq!(warning[0].planned.step, StepKind::Warning);
        assert!(fire(&policy, &mut p, 11 * H + 59 * MIN).is_empty());
        let at_12 = fire(&policy, &mut p, 12 * H);
        assert_eq!(at_12.len(), 1);
        assert_eq!(at_12[0].planned.step, StepKind::Reminder);
        assert_eq!(at_12[0].deadline, DeadlineKind::Response);
        assert!(fire(&policy, &mut p, 12 * H).is_empty(), "fires once");
    }

    #[test]
    fn the_ladder_fires_in_order_at_its_offsets_and_stops_on_response() {
        let policy = Policy::new(PolicyConfig::default()).unwrap();
        let mut p = petition(&policy, 0);
        let mut fired = Vec::new();
        let mut now = 0;
        while now <= 40 * H {
            for s in fire(&policy, &mut p, now) {
                fired.push((now, s.planned.step, s.planned.level));
            }
            now += MIN;
        }
        let w = SupervisionLevel::Worker;
        assert_eq!(
            fired,
            vec![
                (11 * H, StepKind::Warning, w),
                (12 * H, StepKind::Reminder, w),
                (14 * H, StepKind::Escalation, SupervisionLevel::GridHead),
                (18 * H, StepKind::Escalation, SupervisionLevel::Community),
                (36 * H, StepKind::Escalation, SupervisionLevel::Township),
            ]
        );
        assert_eq!(p.escalation_level(), SupervisionLevel::Township);
        // The petition remembers whom the reminder and the escalations concerned.
        assert_eq!(p.reminded_worker_ids, vec![p.assignee_id]);
        assert_eq!(p.escalated_worker_ids, vec![p.assignee_id; 3]);

        // A fresh petition answered after the reminder: the response ladder stops there.
        let mut q = petition(&policy, 0);
        fire(&policy, &mut q, 12 * H);
        q.first_response_at_ms = 12 * H + 5 * MIN;
        q.set_state(PetitionState::Responded);
        q.next_step_at_ms = policy.next_step_at(&q);
        assert!(fire(&policy, &mut q, 30 * H).is_empty());
        // Only the completion ladder remains: its warning a day before five days.
        assert_eq!(q.next_step_at_ms, 4 * 24 * H);
    }

    #[test]
    fn steps_missed_while_down_fire_once_in_order() {
        let policy = Policy::new(PolicyConfig::default()).unwrap();
        let mut p = petition(&policy, 0);
        let all = fire(&policy, &mut p, 20 * H);
        let kinds: Vec<_> = all
            .iter()
            .map(|s| (s.planned.step, s.planned.level))
            .collect();
        assert_eq!(
            kinds,
            vec![
                (StepKind::Warning, SupervisionLevel::Worker),
                (StepKind::Reminder, SupervisionLevel::Worker),
                (StepKind::Escalation, SupervisionLevel::GridHead),
                (StepKind::Escalation, SupervisionLevel::Community),
            ]
        );
        assert!(fire(&policy, &mut p, 20 * H).is_empty());
        assert_eq!(p.next_step_at_ms, 36 * H);
    }

    #[test]
    fn completion_ladder_runs_until_resolution_and_transfer_keeps_the_clock() {
        let policy = Policy::new(PolicyConfig::default()).unwrap();
        let mut p = petition(&policy, 0);
        p.first_response_at_ms = H;
        p.set_state(PetitionState::Responded);
        // A transfer changes the assignee, not the deadlines.
        p.set_state(PetitionState::Transferred);
        let before = (p.response_due_at_ms, p.completion_due_at_ms);
        p.assignee_id = 99;
        assert_eq!((p.response_due_at_ms, p.completion_due_at_ms), before);
        p.next_step_at_ms = policy.next_step_at(&p);
        let due = fire(&policy, &mut p, 5 * 24 * H);
        assert!(due.iter().all(|s| s.deadline == DeadlineKind::Completion));
        assert_eq!(due.len(), 3, "warning, reminder, grid head at +0");
        p.set_state(PetitionState::Resolved);
        assert_eq!(policy.next_step_at(&p), 0);
        assert!(policy.due(&p, 100 * 24 * H).is_empty());
    }

    #[test]
    fn reassignment_step_when_configured() {
        let mut cfg = PolicyConfig::default();
        cfg.response_ladder.reassign_after = Some(Duration::from_secs(3600));
        let policy = Policy::new(cfg).unwrap();
        let ladder = policy.ladder(DeadlineKind::Response, 12 * H);
        assert_eq!(ladder[2].step, StepKind::Reassignment);
        assert_eq!(ladder[2].at_ms, 13 * H);
        assert!(
            !policy
                .ladder(DeadlineKind::Completion, 12 * H)
                .iter()
                .any(|s| s.step == StepKind::Reassignment)
        );
    }

    #[test]
    fn policies_parse_from_toml_with_human_durations() {
        let cfg: SupervisionConfig = toml::from_str(
            r#"
            [default]
            response_within = "4h"
            [default.response_ladder]
            warning_before = "30m"
            grid_head_after = "1h"
            [communities."7"]
            response_within = "1day"
            "#,
        )
        .unwrap();
        assert_eq!(cfg.default.response_within, Duration::from_secs(4 * 3600));
        assert_eq!(
            cfg.default.response_ladder.warning_before,
            Some(Duration::from_secs(1800))
        );
        assert_eq!(
            cfg.communities["7"].response_within,
            Duration::from_secs(24 * 3600)
        );
    }

    #[test]
    fn a_step_is_turned_off_with_off_and_round_trips() {
        let cfg: SupervisionConfig = toml::from_str(
            r#"
            [default.response_ladder]
            warning_before = "off"
            reassign_after = "90m"
            [default.completion_ladder]
            warning_before = "None"
            "#,
        )
        .unwrap();
        assert_eq!(cfg.default.response_ladder.warning_before, None);
        assert_eq!(
            cfg.default.response_ladder.reassign_after,
            Some(Duration::from_secs(5400))
        );
        assert_eq!(cfg.default.completion_ladder.warning_before, None);
        let policy = Policy::new(cfg.default.clone()).unwrap();
        let steps = policy.ladder(DeadlineKind::Response, 1_000_000_000);
        assert!(steps.iter().all(|s| s.step != StepKind::Warning));
        assert_eq!(steps[0].step, StepKind::Reminder);
        // Written back out and read again, "off" stays off.
        let text = toml::to_string(&cfg).unwrap();
        let again: SupervisionConfig = toml::from_str(&text).unwrap();
        assert_eq!(again, cfg);
        assert!(toml::from_str::<LadderConfig>("warning_before = \"soon\"").is_err());
    }
}
