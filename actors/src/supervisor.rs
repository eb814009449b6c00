//! The supervisor actor: fires the supervision ladder's steps when they fall due.
//!
//! Deadlines live in storage: every petition's next step time is indexed there, updated in the same
//! transaction as the petition, so a restart loses none and a step that fired is never fired again.
//! On each tick the supervisor reads the steps due by now from the index and asks each petition's
//! actor to fire them (the petition actor decides which steps, records them in the timeline and
//! the feeds of those they reach, and moves the index on). Steps that fell due while the server was
//! down fire once, in order, at the first tick after start.

use futures_util::StreamExt;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use crate::county::County;
use crate::error::DomainError;
use crate::petition::{PetitionReply, PetitionRequest};

/// Petitions handled per tick at most (the rest wait for the next tick).
const BATCH: usize = 4096;
/// Petition actors asked concurrently within a tick.
const CONCURRENCY: usize = 64;

/// What a tick did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TickReport {
    /// Petitions that had a step due.
    pub petitions: usize,
    /// Steps fired.
    pub steps: usize,
    /// Petitions whose steps could not be fired now (they stay due and are retried).
    pub failed: usize,
}

/// Messages of the supervisor actor.
#[derive(Debug)]
pub enum SupervisorMsg {
    /// Fire every step due now; report to the port if one is given.
    Tick(Option<RpcReplyPort<TickReport>>),
}

/// State of the supervisor actor.
#[derive(Debug)]
pub struct SupervisorState {
    /// Shared domain context.
    county: County,
}

/// The supervisor actor (behaviour only).
#[derive(Debug, Default)]
pub struct SupervisorActor;

impl Actor for SupervisorActor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = County;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        county: County,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(SupervisorState { county })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: SupervisorMsg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            SupervisorMsg::Tick(reply) => {
                let report = tick(&state.county).await;
                if report.steps > 0 || report.failed > 0 {
                    tracing::info!(
                        petitions = report.petitions,
                        steps = report.steps,
                        failed = report.failed,
                        "supervision steps fired"
                    );
                }
                if let Some(reply) = reply {
                    let _ = reply.send(report);
                }
            }
        }
        Ok(())
    }
}

/// Fires the steps due now.
async fn tick(county: &County) -> TickReport {
    let now = county.clock().now_ms();
    let due = match county.store().steps_due(now, BATCH) {
        Ok(due) => due,
        Err(e) => {
            tracing::error!(error = %e, "reading the deadline index failed");
            return TickReport::default();
        }
    };
    let mut report = TickReport {
        petitions: due.len(),
        ..Default::default()
    };
    let system = County::system_caller();
    let results: Vec<Result<PetitionReply, DomainError>> = futures_util::stream::iter(due)
        .map(|(_, petition_id)| {
            let county = county.clone();
            let system = system.clone();
            async move {
                county
                    .petition(petition_id, &system, PetitionRequest::Supervise)
                    .await
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    for result in results {
        match result {
            Ok(PetitionReply::Supervised(n)) => report.steps += n,
            Ok(_) => {}
            Err(e) => {
                report.failed += 1;
                tracing::warn!(error = %e, "a supervision step could not fire; retrying next tick");
            }
        }
    }
    metrics::counter!("lianxin_supervision_steps_total").increment(report.steps as u64);
    report
}
