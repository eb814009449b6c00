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
    /// Forgets a finished webhook delivery (once that is on disk).
    pub async fn webhook_done(&self, id: u64) -> Result<()> {
        // Deliveries of versions before schema 6 wait in a tree of their own.
        self.trees.id_webhook.remove(id.to_be_bytes())?;
        self.writer
            .remove(crate::trees::pkey1(crate::trees::ks::WEBHOOK, id).to_vec())
            .await
    }

    /// The webhook deliveries not yet done, oldest first.
    pub fn webhook_pending(&self) -> Result<Vec<PendingDelivery>> {
        let mut out = Vec::new();
        for item in self.trees.id_webhook.iter() {
            let (k, v) = item?;
            let id = crate::trees::decode_u64(&k)?;
            let body = String::from_utf8(v.to_vec())
                .map_err(|e| crate::StoreError::Corrupt(e.to_string()))?;
            out.push(PendingDelivery::Body { id, body });
        }
        for item in self.keyspace().scan_prefix([crate::trees::ks::WEBHOOK]) {
            let (k, v) = item?;
            let id = crate::trees::pkey_u64(&k, 0)?;
            let review = crate::petitions::PendingReview::decode(&*v)?;
            out.push(PendingDelivery::Review {
                id,
                petition: Box::new(review.petition.unwrap_or_default()),
                rating: review.rating.unwrap_or_default(),
            });
        }
        out.sort_by_key(PendingDelivery::id);
        Ok(out)
    }
}

fn report_key(period: &str, community_id: u64) -> Vec<u8> {
    let mut k = key_bytes(community_id, period.as_bytes());
    k.rotate_left(8); // period first: reports of one period sort together
    k
}

/// A webhook delivery not yet done.
#[derive(Debug, Clone, PartialEq)]
pub enum PendingDelivery {
    /// Stored by a version before schema 6: the JSON body as it goes out.
    Body {
        /// The delivery's id.
        id: u64,
        /// The body.
        body: String,
    },
    /// A bad review, stored with its rating's commit.
    Review {
        /// The delivery's id.
        id: u64,
        /// The petition just after the rating.
        petition: Box<lianxin_protocol::v1::Petition>,
        /// The rating.
        rating: lianxin_protocol::v1::Rating,
    },
}

impl PendingDelivery {
    /// The delivery's id.
    pub fn id(&self) -> u64 {
        match self {
            PendingDelivery::Body { id, .. } | PendingDelivery::Review { id, .. } => *id,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::petitions::WebhookDelivery;
    use lianxin_protocol::v1::{Petition, PointsEntry, Rating, RatingLevel};

    #[tokio::test]
    async fn a_bad_review_is_stored_with_its_rating_until_done() {
        let dir = tempfile::tempdir().unwrap();
        let config = crate::StoreConfig::new(dir.path());
        let rating = Rating {
            level: RatingLevel::Dissatisfied as i32,
            comment: "第二天又不亮了".into(),
            ..Default::default()
        };
        {
            let store = Store::open(&config).unwrap();
            // A delivery left by a version before schema 6, in its own tree.
            store
                .trees
                .id_webhook
                .insert(5u64.to_be_bytes(), &b"{\"old\":true}"[..])
                .unwrap();
            let commit = crate::Commit {
                petition: Petition {
                    id: 1,
                    title: "路灯坏了".into(),
                    ..Default::default()
                },
                webhook: Some(WebhookDelivery {
                    id: 9,
                    rating: rating.clone(),
                }),
                ..Default::default()
            };
            store.commit_durable(commit).await.unwrap();
        }
        // Written with the commit, so on disk once it returned: a restart finds both.
        let store = Store::open(&config).unwrap();
        let pending = store.webhook_pending().unwrap();
        assert_eq!(pending.len(), 2);
        assert_eq!(
            pending[0],
            PendingDelivery::Body {
                id: 5,
                body: "{\"old\":true}".into()
            }
        );
        match &pending[1] {
            PendingDelivery::Review {
                id,
                petition,
                rating: r,
            } => {
                assert_eq!(
                    (*id, petition.id, petition.title.as_str()),
                    (9, 1, "路灯坏了")
                );
                assert_eq!(r, &rating);
            }
            other => panic!("not a review: {other:?}"),
        }
        store.webhook_done(9).await.unwrap();
        store.webhook_done(5).await.unwrap();
        assert!(store.webhook_pending().unwrap().is_empty());
    }

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
