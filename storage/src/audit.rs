//! The audit log's entries that are not petition commits (manual points entries), frozen
//! appraisal reports, and the webhook's pending deliveries.

use lianxin_protocol::v1::{AppraisalReport, AuditRecord};
use prost::Message;

use crate::trees::{key_bytes, key2};
use crate::{Result, Store};

impl Store {
    /// Appends a record that belongs to no petition (a manual points entry) to the audit log.
    pub fn append_audit(&self, record: &AuditRecord) -> Result<()> {
        let key = key2(record.at_ms.max(0) as u64, self.next_id()?);
        self.trees
            .atms_id_audit
            .insert(&key[..], record.encode_to_vec())?;
        Ok(())
    }

    /// The frozen report of a period and scope, if one was issued.
    pub fn frozen_report(
        &self,
        period: &str,
        community_id: u64,
    ) -> Result<Option<AppraisalReport>> {
        match self
            .trees
            .period_communityid_report
            .get(report_key(period, community_id))?
        {
            Some(v) => Ok(Some(AppraisalReport::decode(&*v)?)),
            None => Ok(None),
        }
    }

    /// Freezes a report; an existing one is kept (reports are issued once). Returns the frozen one.
    pub fn freeze_report(&self, report: &AppraisalReport) -> Result<AppraisalReport> {
        let key = report_key(&report.period, report.community_id);
        let bytes = report.encode_to_vec();
        match self.trees.period_communityid_report.compare_and_swap(
            key,
            None as Option<&[u8]>,
            Some(bytes),
        )? {
            Ok(()) => Ok(report.clone()),
            Err(existing) => match existing.current {
                Some(v) => Ok(AppraisalReport::decode(&*v)?),
                None => Ok(report.clone()),
            },
        }
    }
}

impl Store {
    /// Keeps a webhook delivery until it is done.
    pub fn webhook_put(&self, id: u64, body: &str) -> Result<()> {
        self.trees
            .id_webhook
            .insert(id.to_be_bytes(), body.as_bytes())?;
        Ok(())
    }

    /// Forgets a finished webhook delivery.
    pub fn webhook_remove(&self, id: u64) -> Result<()> {
        self.trees.id_webhook.remove(id.to_be_bytes())?;
        Ok(())
    }

    /// The webhook deliveries not yet done, oldest first.
    pub fn webhook_pending(&self) -> Result<Vec<(u64, String)>> {
        self.trees
            .id_webhook
            .iter()
            .map(|item| {
                let (k, v) = item?;
                let id = crate::trees::decode_u64(&k)?;
                let body = String::from_utf8(v.to_vec())
                    .map_err(|e| crate::StoreError::Corrupt(e.to_string()))?;
                Ok((id, body))
            })
            .collect()
    }
}

fn report_key(period: &str, community_id: u64) -> Vec<u8> {
    let mut k = key_bytes(community_id, period.as_bytes());
    k.rotate_left(8); // period first: reports of one period sort together
    k
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use lianxin_protocol::v1::PointsEntry;

    #[test]
    fn points_entries_join_the_log_and_reports_freeze_once() {
        let store = Store::temporary().unwrap();
        let entry = |at| AuditRecord {
            at_ms: at,
            points: Some(PointsEntry {
                worker_id: 7,
                points_cents: 150,
                reason: "志愿服务".into(),
            }),
            ..Default::default()
        };
        store.append_audit(&entry(1_000)).unwrap();
        store.append_audit(&entry(1_000)).unwrap();
        assert_eq!(
            store.audit_log(0, 2_000).unwrap().len(),
            2,
            "same instant: both kept"
        );
        assert!(store.audit_log(1_001, 2_000).unwrap().is_empty());

        let first = AppraisalReport {
            period: "2026-11".into(),
            community_id: 3,
            generated_at_ms: 1,
            ..Default::default()
        };
        assert_eq!(store.frozen_report("2026-11", 3).unwrap(), None);
        assert_eq!(store.freeze_report(&first).unwrap(), first);
        let later = AppraisalReport {
            generated_at_ms: 2,
            ..first.clone()
        };
        assert_eq!(store.freeze_report(&later).unwrap(), first, "issued once");
        assert_eq!(store.frozen_report("2026-11", 3).unwrap(), Some(first));
        assert_eq!(store.frozen_report("2026-11", 4).unwrap(), None);
    }
}
