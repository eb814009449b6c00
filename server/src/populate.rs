//! Fills a database with a large, realistic history through the real domain actors, for start-up
//! and memory benchmarks: residents spread over the grids, each petition raised by a resident,
//! a conversation of alternating resident and worker messages, and (for all but a share left
//! open) resolved by the worker and rated by the resident, which closes it.
//!
//! Everything goes through [`County`], so the stored data (timelines, feeds, indexes, supervision
//! steps) is exactly what a running server would have written.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use futures_util::StreamExt;
use lianxin_actors::county::{County, caller_of};
use lianxin_actors::error::DomainError;
use lianxin_actors::petition::{PetitionReply, PetitionRequest};
use lianxin_protocol::v1::{Category, RatingLevel, Role, SubmitPetition};
use lianxin_storage::AccountRecord;
use serde::Serialize;

use crate::admin::{self, AdminError, NewAccount};
use crate::auth;

/// How much history to write.
#[derive(Debug, Clone)]
pub struct PopulateOptions {
    /// Petitions to raise.
    pub petitions: u64,
    /// Messages per petition, the petition's own first message included.
    pub messages_per_petition: u32,
    /// Residents to create (logins `pop-resident-N`, the demo password); reused when they exist.
    pub residents: u32,
    /// Per mille of petitions left open (not resolved and rated).
    pub open_per_mille: u32,
    /// Petitions in flight at once.
    pub concurrency: usize,
    /// Bytes of text per message (Chinese text, 3 bytes a character).
    pub message_bytes: usize,
}

impl Default for PopulateOptions {
    fn default() -> Self {
        PopulateOptions {
            petitions: 1_000_000,
            messages_per_petition: 10,
            residents: 20_000,
            open_per_mille: 10,
            concurrency: 256,
            message_bytes: 200,
        }
    }
}

/// What was written.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PopulateReport {
    /// Petitions raised.
    pub petitions: u64,
    /// Messages stored, each petition's first message included.
    pub messages: u64,
    /// Petitions left open.
    pub open: u64,
    /// Residents created by this run.
    pub residents_created: u64,
    /// Seconds it took.
    pub seconds: f64,
}

/// Why populating stopped.
#[derive(Debug, thiserror::Error)]
pub enum PopulateError {
    /// Creating accounts failed.
    #[error(transparent)]
    Admin(#[from] AdminError),
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] lianxin_storage::StoreError),
    /// A domain request failed.
    #[error("petition {index}: {error}")]
    Domain {
        /// Which petition of the run.
        index: u64,
        /// The error.
        error: DomainError,
    },
    /// The county has no grid with a worker.
    #[error("the database has no grid with a worker: seed the demo county first")]
    NoGrids,
    /// The password could not be hashed.
    #[error(transparent)]
    Auth(#[from] auth::AuthError),
}

/// Writes the history; `progress` is called with the number of petitions done so far.
pub async fn populate(
    county: &County,
    opts: &PopulateOptions,
    progress: impl Fn(u64) + Send + Sync,
) -> Result<PopulateReport, PopulateError> {
    let started = Instant::now();
    let store = county.store();
    let (residents, created) = residents(county, opts.residents)?;
    if residents.is_empty() {
        return Err(PopulateError::NoGrids);
    }
    let text = sample_text(opts.message_bytes);
    let done = AtomicU64::new(0);
    let open = AtomicU64::new(0);
    let messages = AtomicU64::new(0);
    let residents = Arc::new(residents);
    let run = futures_util::stream::iter(0..opts.petitions)
        .map(|index| {
            let resident = residents[(index % residents.len() as u64) as usize].clone();
            // Spread evenly: every (1000 / per mille)th petition stays open.
            let per_mille = u64::from(opts.open_per_mille.min(1000));
            let keep_open = (index + 1) * per_mille / 1000 > index * per_mille / 1000;
            let (text, done, open, messages, progress) =
                (&text, &done, &open, &messages, &progress);
            async move {
                let n = one_petition(county, &resident, opts, text, keep_open)
                    .await
                    .map_err(|error| PopulateError::Domain { index, error })?;
                messages.fetch_add(n, Ordering::Relaxed);
                if keep_open {
                    open.fetch_add(1, Ordering::Relaxed);
                }
                progress(done.fetch_add(1, Ordering::Relaxed) + 1);
                Ok::<(), PopulateError>(())
            }
        })
        .buffer_unordered(opts.concurrency.max(1));
    futures_util::pin_mut!(run);
    while let Some(result) = run.next().await {
        result?;
    }
    store.flush_blocking()?;
    Ok(PopulateReport {
        petitions: done.load(Ordering::Relaxed),
        messages: messages.load(Ordering::Relaxed),
        open: open.load(Ordering::Relaxed),
        residents_created: created,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Raises one petition and plays its conversation; returns the messages stored.
async fn one_petition(
    county: &County,
    resident: &AccountRecord,
    opts: &PopulateOptions,
    text: &str,
    keep_open: bool,
) -> Result<u64, DomainError> {
    let me = caller_of(resident);
    let petition = county
        .submit(
            &me,
            SubmitPetition {
                category: Category::Suggestion as i32,
                title: "楼道灯不亮".into(),
                text: text.to_owned(),
                ..Default::default()
            },
        )
        .await?;
    let worker = county
        .store()
        .account(petition.assignee_id)?
        .ok_or_else(|| DomainError::NotFound("the assignee".into()))?;
    let them = caller_of(&worker);
    let mut stored = 1;
    for k in 1..opts.messages_per_petition {
        let who = if k % 2 == 1 { &them } else { &me };
        let reply = county
            .petition(
                petition.id,
                who,
                PetitionRequest::Message {
                    text: text.to_owned(),
                    client_msg_id: String::new(),
                    media_ids: Vec::new(),
                },
            )
            .await?;
        if matches!(reply, PetitionReply::Ack(_)) {
            stored += 1;
        }
    }
    if !keep_open {
        county
            .petition(
                petition.id,
                &them,
                PetitionRequest::Resolve {
                    summary: "已更换灯泡".into(),
                },
            )
            .await?;
        county
            .petition(
                petition.id,
                &me,
                PetitionRequest::Rate {
                    level: RatingLevel::Satisfied,
                    comment: String::new(),
                    by_phone: false,
                },
            )
            .await?;
    }
    Ok(stored)
}

/// The residents to raise petitions: `pop-resident-N` accounts, created where missing and spread
/// round-robin over the grids that have a worker. Returns them and how many were created.
fn residents(county: &County, wanted: u32) -> Result<(Vec<AccountRecord>, u64), PopulateError> {
    let store = county.store();
    let mut staffed = std::collections::BTreeSet::new();
    for account in store.accounts() {
        let account = account?;
        if matches!(account.role(), Role::Worker | Role::GridHead) && !account.disabled {
            staffed.insert(account.grid_id);
        }
    }
    let grids: Vec<_> = store
        .grids()?
        .into_iter()
        .filter(|g| staffed.contains(&g.id))
        .collect();
    if grids.is_empty() {
        return Err(PopulateError::NoGrids);
    }
    let hash = auth::hash_password(crate::seed::DEMO_PASSWORD)?;
    let now = county.clock().now_ms();
    let mut out = Vec::with_capacity(wanted as usize);
    let mut created = 0;
    for n in 0..wanted {
        let login = format!("pop-resident-{n}");
        if let Some(existing) = store.account_by_login(&login)? {
            out.push(existing);
            continue;
        }
        let grid = &grids[n as usize % grids.len()];
        let address = grid.jurisdiction.first().cloned().unwrap_or_default();
        let account = admin::create_account_hashed(
            store,
            NewAccount {
                role: Role::Resident,
                login,
                display_name: format!("居民{n}"),
                grid_id: grid.id,
                community_id: 0,
                address,
            },
            hash.clone(),
            now,
        )?;
        created += 1;
        out.push(account);
    }
    Ok((out, created))
}

/// Chinese text of about `bytes` bytes.
fn sample_text(bytes: usize) -> String {
    const PHRASE: &str =
        "小区三号楼二单元的楼道灯坏了好几天，晚上老人上下楼很不方便，请尽快派人来修。";
    PHRASE.chars().cycle().take((bytes / 3).max(1)).collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use lianxin_actors::clock::ManualClock;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_small_history_is_written_through_the_actors() {
        let dir = tempfile::tempdir().unwrap();
        let config = crate::config::Config {
            data_dir: dir.path().to_owned(),
            ..Default::default()
        };
        let clock = ManualClock::new(1_795_000_000_000);
        let server = crate::server::Server::start(config, std::sync::Arc::new(clock), None)
            .await
            .unwrap();
        let county = server.county();
        let opts = PopulateOptions {
            petitions: 40,
            messages_per_petition: 4,
            residents: 10,
            open_per_mille: 100,
            concurrency: 8,
            message_bytes: 60,
        };
        let calls = AtomicU64::new(0);
        let report = populate(county, &opts, |_| {
            calls.fetch_add(1, Ordering::Relaxed);
        })
        .await
        .unwrap();
        assert_eq!(report.petitions, 40);
        assert_eq!(report.messages, 160);
        assert_eq!(report.open, 4);
        assert_eq!(report.residents_created, 10);
        assert_eq!(calls.load(Ordering::Relaxed), 40);
        let resident = county
            .store()
            .account_by_login("pop-resident-3")
            .unwrap()
            .unwrap();
        let page = county
            .list_petitions(&caller_of(&resident), &[], 0, 100)
            .unwrap();
        assert_eq!(page.petitions.len(), 4, "40 petitions over 10 residents");
        let closed = page
            .petitions
            .iter()
            .filter(|p| p.state() == lianxin_protocol::v1::PetitionState::Closed)
            .count();
        assert!(closed >= 3, "rated petitions are closed: {closed}");
        // A second run reuses the residents.
        let again = populate(
            county,
            &PopulateOptions {
                petitions: 1,
                ..opts
            },
            |_| {},
        )
        .await
        .unwrap();
        assert_eq!(again.residents_created, 0);
    }
}
