//! Appraisal reports and manual points entries: the county's side of docs/appraisal.md.
//!
//! A report is computed from the audit log of its period. Once the period is over (plus a day for
//! late supervision steps to land), the first report asked for is stored and from then on returned
//! as it is: appraisal decides pay, so an issued report never changes. `verify_report` recomputes
//! a frozen report from the log and compares.

use std::collections::BTreeMap;

use lianxin_protocol::v1::{
    AppraisalReport, AuditRecord, CommunityAppraisal, Entry, PointsEntry, Role,
};

use crate::county::County;
use crate::domain::appraisal::{self, Appraisee};
use crate::error::{DomainError, DomainResult};
use crate::petition::CallerInfo;

/// How long after its period a report waits before it is frozen.
const FREEZE_AFTER_MS: i64 = 24 * 3_600_000;

/// Largest manual points entry, in hundredths (100 points).
const MAX_MANUAL_CENTS: i64 = 10_000;

/// The community a caller may see reports of (0: the township).
fn report_scope(who: &CallerInfo, community_id: u64) -> DomainResult<u64> {
    let c = &who.caller;
    match c.role {
        Role::TownshipSupervisor | Role::Admin => Ok(community_id),
        Role::CommunitySupervisor if community_id == 0 || community_id == c.community_id => {
            Ok(c.community_id)
        }
        Role::CommunitySupervisor => Err(DomainError::Forbidden(
            "a community supervisor sees only their own community's reports".into(),
        )),
        _ => Err(DomainError::Forbidden(
            "only supervisors see appraisal reports".into(),
        )),
    }
}

impl County {
    /// The staff to appraise in a scope (community id, or 0 for all), and community names.
    fn appraisees(&self, scope: u64) -> DomainResult<(Vec<Appraisee>, BTreeMap<u64, String>)> {
        let store = self.store();
        let mut names = BTreeMap::new();
        for c in store.communities()? {
            if scope == 0 || c.id == scope {
                names.insert(c.id, c.name);
            }
        }
        if scope != 0 && names.is_empty() {
            return Err(DomainError::NotFound(format!("community {scope}")));
        }
        let mut staff = Vec::new();
        for g in store.grids()? {
            if !names.contains_key(&g.community_id) {
                continue;
            }
            for a in store.grid_staff(g.id)? {
                staff.push(Appraisee {
                    id: a.id,
                    name: a.display_name.clone(),
                    role: a.role(),
                    community_id: a.community_id,
                    grid_id: a.grid_id,
                });
            }
        }
        staff.sort_by_key(|a| a.id);
        staff.dedup_by_key(|a| a.id);
        Ok((staff, names))
    }

    /// Computes a report from the audit log, without freezing it.
    pub fn compute_report(&self, period: &str, scope: u64) -> DomainResult<AppraisalReport> {
        let offset = self.settings().board.utc_offset_minutes;
        let (from, to) = appraisal::month_period(period, offset)
            .map_err(|e| DomainError::InvalidArgument(e.to_string()))?;
        let config = &self.settings().appraisal;
        let (staff, names) = self.appraisees(scope)?;
        let log = self.store().audit_log(from, to)?;
        let tallies = appraisal::rebuild(&log, config);
        let workers = appraisal::appraise(&staff, &tallies, config);
        let mut communities: Vec<CommunityAppraisal> = names
            .iter()
            .map(|(id, name)| {
                let mine: Vec<_> = workers.iter().filter(|w| w.community_id == *id).collect();
                let n = mine.len() as i64;
                CommunityAppraisal {
                    community_id: *id,
                    name: name.clone(),
                    workers: mine.len() as u32,
                    average_total_cents: appraisal::div_round(
                        mine.iter().map(|w| w.total_cents).sum(),
                        n.max(1),
                    ),
                    handled: mine.iter().map(|w| w.handled).sum(),
                    rated: mine
                        .iter()
                        .map(|w| w.satisfied + w.basically_satisfied + w.dissatisfied)
                        .sum(),
                    dissatisfied: mine.iter().map(|w| w.dissatisfied).sum(),
                    rank: 0,
                }
            })
            .collect();
        let mut order: Vec<usize> = (0..communities.len()).collect();
        order.sort_by(|a, b| {
            communities[*b]
                .average_total_cents
                .cmp(&communities[*a].average_total_cents)
                .then(
                    communities[*a]
                        .community_id
                        .cmp(&communities[*b].community_id),
                )
        });
        for (place, i) in order.into_iter().enumerate() {
            communities[i].rank = place as u32 + 1;
        }
        Ok(AppraisalReport {
            period: period.to_owned(),
            from_ms: from,
            to_ms: to,
            community_id: scope,
            community_name: if scope == 0 {
                String::new()
            } else {
                names.get(&scope).cloned().unwrap_or_default()
            },
            workers,
            communities,
            generated_at_ms: self.clock().now_ms(),
        })
    }

    /// The appraisal report of a period for a supervisor: frozen once the period is over.
    pub fn appraisal_report(
        &self,
        who: &CallerInfo,
        period: &str,
        community_id: u64,
    ) -> DomainResult<AppraisalReport> {
        let scope = report_scope(who, community_id)?;
        if let Some(frozen) = self.store().frozen_report(period, scope)? {
            return Ok(frozen);
        }
        let report = self.compute_report(period, scope)?;
        if report.to_ms + FREEZE_AFTER_MS <= self.clock().now_ms() {
            Ok(self.store().freeze_report(&report)?)
        } else {
            Ok(report)
        }
    }

    /// Whether a frozen report still equals a fresh computation from the audit log (None: no
    /// report of that period and scope was frozen).
    pub fn verify_report(&self, period: &str, scope: u64) -> DomainResult<Option<bool>> {
        let Some(frozen) = self.store().frozen_report(period, scope)? else {
            return Ok(None);
        };
        let fresh = self.compute_report(period, scope)?;
        Ok(Some(
            fresh.workers == frozen.workers && fresh.communities == frozen.communities,
        ))
    }

    /// Records a supervisor's manual points entry for a worker in the audit log.
    pub fn add_points(&self, who: &CallerInfo, entry: PointsEntry) -> DomainResult<()> {
        if entry.reason.trim().is_empty() {
            return Err(DomainError::InvalidArgument(
                "a points entry needs a reason".into(),
            ));
        }
        if entry.points_cents == 0 || entry.points_cents.abs() > MAX_MANUAL_CENTS {
            return Err(DomainError::InvalidArgument(format!(
                "points must be non-zero and at most {} in size",
                MAX_MANUAL_CENTS / 100
            )));
        }
        let worker = self
            .store()
            .account(entry.worker_id)?
            .filter(|a| a.is_grid_staff())
            .ok_or_else(|| DomainError::NotFound(format!("worker {}", entry.worker_id)))?;
        report_scope(who, worker.community_id)?;
        let now = self.clock().now_ms();
        let record = AuditRecord {
            at_ms: now,
            community_id: worker.community_id,
            grid_id: worker.grid_id,
            entry: Some(Entry {
                author_id: who.caller.account_id,
                author_name: who.display_name.clone(),
                author_role: who.caller.role as i32,
                at_ms: now,
                ..Default::default()
            }),
            points: Some(entry),
            ..Default::default()
        };
        self.store().append_audit(&record)?;
        metrics::counter!("lianxin_points_entries_total").increment(1);
        Ok(())
    }
}
