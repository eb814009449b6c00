//! The worker actor: one per grid worker or grid head. It knows whether the worker is on duty
//! (stored, so it survives restarts) and how many of their devices are connected, which the grid
//! uses to route new petitions and which residents see before they @ someone.

use lianxin_protocol::v1::WorkerInfo;
use lianxin_storage::AccountRecord;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use crate::county::County;
use crate::error::DomainResult;

/// Messages of the worker actor.
#[derive(Debug)]
pub enum WorkerMsg {
    /// One of the worker's devices connected.
    Connected,
    /// One of the worker's devices disconnected.
    Disconnected,
    /// The worker goes on or off duty.
    SetOnDuty {
        /// On duty?
        on_duty: bool,
        /// Where the result goes.
        reply: RpcReplyPort<DomainResult<()>>,
    },
    /// The worker as residents see them.
    Info(RpcReplyPort<WorkerInfo>),
}

/// State of a worker actor.
#[derive(Debug)]
pub struct WorkerActorState {
    /// Shared domain context.
    county: County,
    /// The worker's account as stored.
    account: AccountRecord,
    /// Devices connected now.
    devices: u32,
}

/// The worker actor (behaviour only).
#[derive(Debug, Default)]
pub struct WorkerActor;

impl Actor for WorkerActor {
    type Msg = WorkerMsg;
    type State = WorkerActorState;
    type Arguments = (County, AccountRecord);

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        (county, account): Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(WorkerActorState {
            county,
            account,
            devices: 0,
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: WorkerMsg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let _span = tracing::debug_span!("worker", id = state.account.id).entered();
        match message {
            WorkerMsg::Connected => state.devices += 1,
            WorkerMsg::Disconnected => state.devices = state.devices.saturating_sub(1),
            WorkerMsg::SetOnDuty { on_duty, reply } => {
                // Changed in place: other fields (an administrator disabling the account) may
                // have changed since this actor read the record.
                let result = state
                    .county
                    .store()
                    .modify_account(state.account.id, |a| a.on_duty = on_duty);
                let result = match result {
                    Ok(Some(account)) => {
                        state.account = account;
                        tracing::info!(on_duty, "duty changed");
                        Ok(())
                    }
                    Ok(None) => Err(crate::error::DomainError::NotFound("account".into())),
                    Err(e) => Err(e.into()),
                };
                let _ = reply.send(result);
            }
            WorkerMsg::Info(reply) => {
                let _ = reply.send(WorkerInfo {
                    id: state.account.id,
                    display_name: state.account.display_name.clone(),
                    role: state.account.role,
                    on_duty: state.account.on_duty,
                    online: state.devices > 0,
                });
            }
        }
        Ok(())
    }
}
