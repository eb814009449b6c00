//! The grid actor: one per grid. It knows the grid's workers (each a child worker actor), routes a
//! new petition to the worker the resident @-ed or to the on-duty worker, and supervises the
//! actors of its open petitions: a petition actor that panics is dropped and started again from
//! storage by the next request, and nothing else is touched.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use lianxin_protocol::v1::{
    Action, Category, Channel, Entry, FiledBy, Grid, NoticeKind, Petition, PetitionNotice,
    PetitionState, Role, TextBody, Transition, WorkerInfo, entry, event,
};
use lianxin_storage::petitions::{IdScope, IdempotencyKey, SUBMISSION_ENTRIES};
use lianxin_storage::{AccountRecord, Commit, CommitResult};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use tracing::Instrument;

use crate::county::County;
use crate::error::{DomainError, DomainResult};
use crate::petition::{CallerInfo, PetitionActor, PetitionArgs, PetitionMsg, recipients};
use crate::worker::{WorkerActor, WorkerMsg};

/// How long the grid waits for one of its worker actors.
const WORKER_CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// A petition to raise, checked by the county for who may file it.
#[derive(Debug, Clone)]
pub struct NewPetition {
    /// The kind of matter.
    pub category: Category,
    /// A short title (derived from the text when empty).
    pub title: String,
    /// The first message.
    pub text: String,
    /// The worker @-ed, or 0 for the grid's on-duty worker.
    pub worker_id: u64,
    /// The filer's id for the submission (may be empty).
    pub client_msg_id: String,
    /// The resident the petition is for.
    pub resident: AccountRecord,
    /// How it reached the platform.
    pub channel: Channel,
    /// The staff member who filed it on the resident's behalf, if any.
    pub filed_by: Option<u64>,
}

/// Messages of the grid actor.
#[derive(Debug)]
pub enum GridMsg {
    /// Deliver a message to one of the grid's petitions, starting its actor if needed.
    Route {
        /// The petition.
        petition_id: u64,
        /// The message.
        msg: PetitionMsg,
    },
    /// Raise a petition in this grid.
    Submit {
        /// Who files it.
        caller: CallerInfo,
        /// What to file.
        new: Box<NewPetition>,
        /// Where the stored petition goes.
        reply: RpcReplyPort<DomainResult<Petition>>,
    },
    /// Choose the worker a petition sent to this grid goes to, other than `exclude` (0: none).
    PickAssignee {
        /// A worker not to choose (the one a petition is taken from).
        exclude: u64,
        /// Where the choice goes.
        reply: RpcReplyPort<DomainResult<u64>>,
    },
    /// The grid's workers as residents see them.
    Workers(RpcReplyPort<Vec<WorkerInfo>>),
    /// Deliver a message to one of the grid's worker actors.
    Worker {
        /// The worker.
        worker_id: u64,
        /// The message.
        msg: WorkerMsg,
    },
    /// How many petition actors the grid runs now.
    PetitionActors(RpcReplyPort<usize>),
    /// A petition actor has been idle and offers to stop.
    PetitionIdle {
        /// Its petition.
        petition_id: u64,
        /// The actor making the offer.
        actor: ractor::ActorId,
        /// Messages from this grid it has handled.
        handled: u64,
    },
}

/// A running petition actor and the messages routed to it.
#[derive(Debug)]
struct Running {
    /// The actor.
    actor: ActorRef<PetitionMsg>,
    /// Messages routed to it, by this grid or straight by the county (shared with the county's
    /// map of live petitions).
    sent: Arc<AtomicU64>,
}

/// State of a grid actor.
#[derive(Debug)]
pub struct GridActorState {
    /// Shared domain context.
    county: County,
    /// The grid as stored.
    grid: Grid,
    /// Worker actors by worker id, in id order of the grid's staff.
    workers: HashMap<u64, ActorRef<WorkerMsg>>,
    /// Actors of the grid's petitions that are in use, by petition id.
    petitions: HashMap<u64, Running>,
}

/// The grid actor (behaviour only).
#[derive(Debug, Default)]
pub struct GridActor;

impl Actor for GridActor {
    type Msg = GridMsg;
    type State = GridActorState;
    type Arguments = (County, Grid);

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        (county, grid): Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        let mut workers = HashMap::new();
        for account in county.store().grid_staff(grid.id)? {
            let id = account.id;
            let (worker, _) = Actor::spawn_linked(
                None,
                WorkerActor,
                (county.clone(), account),
                myself.get_cell(),
            )
            .await?;
            workers.insert(id, worker);
        }
        Ok(GridActorState {
            county,
            grid,
            workers,
            petitions: HashMap::new(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: GridMsg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            GridMsg::Route { petition_id, msg } => route(&myself, state, petition_id, msg).await,
            // Routing is the hot path; the rest runs boxed, so that the future of every message
            // (which the actor runtime moves, copying it) is only as large as routing's.
            GridMsg::Submit { caller, new, reply } => {
                let span = tracing::info_span!("grid", id = state.grid.id);
                let result = Box::pin(submit(state, &caller, *new).instrument(span)).await;
                let _ = reply.send(result);
            }
            GridMsg::PickAssignee { exclude, reply } => {
                let _ = reply.send(Box::pin(pick_assignee(state, exclude)).await);
            }
            GridMsg::Workers(reply) => {
                let _ = reply.send(Box::pin(worker_infos(state)).await);
            }
            GridMsg::Worker { worker_id, msg } => {
                if let Some(worker) = state.workers.get(&worker_id) {
                    let _ = worker.send_message(msg);
                }
            }
            GridMsg::PetitionActors(reply) => {
                let _ = reply.send(state.petitions.len());
            }
            GridMsg::PetitionIdle {
                petition_id,
                actor,
                handled,
            } => passivate(state, petition_id, actor, handled),
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match event {
            SupervisionEvent::ActorFailed(cell, err) => {
                let id = cell.get_id();
                if let Some(pid) = forget_petition(state, id) {
                    tracing::error!(petition = pid, error = %err, "petition actor failed; it restarts from storage on its next request");
                    metrics::counter!("lianxin_actor_restarts_total", "kind" => "petition")
                        .increment(1);
                } else if let Some(wid) = forget_worker(state, id) {
                    tracing::error!(worker = wid, error = %err, "worker actor failed; restarting it");
                    metrics::counter!("lianxin_actor_restarts_total", "kind" => "worker")
                        .increment(1);
                    if let Some(account) = state.county.store().account(wid)? {
                        let (worker, _) = Box::pin(Actor::spawn_linked(
                            None,
                            WorkerActor,
                            (state.county.clone(), account),
                            myself.get_cell(),
                        ))
                        .await?;
                        state.workers.insert(wid, worker);
                    }
                }
            }
            SupervisionEvent::ActorTerminated(cell, _, _) => {
                let id = cell.get_id();
                forget_petition(state, id);
                forget_worker(state, id);
            }
            _ => {}
        }
        Ok(())
    }
}

/// Stops an idle petition actor, if every message routed to it has been handled (none is
/// waiting in its mailbox; none will be sent to it, since it leaves the map now).
fn passivate(state: &mut GridActorState, petition_id: u64, actor: ractor::ActorId, handled: u64) {
    let idle = state
        .petitions
        .get(&petition_id)
        .is_some_and(|r| r.actor.get_id() == actor && r.sent.load(Ordering::Acquire) == handled);
    if !idle {
        return;
    }
    if let Some(r) = state.petitions.remove(&petition_id) {
        r.actor.stop(Some("idle".into()));
        metrics::gauge!("lianxin_petition_actors").decrement(1.0);
        metrics::counter!("lianxin_petition_passivations_total").increment(1);
        tracing::debug!(petition = petition_id, "idle petition actor stopped");
    }
}

fn forget_petition(state: &mut GridActorState, id: ractor::ActorId) -> Option<u64> {
    let pid = state
        .petitions
        .iter()
        .find(|(_, r)| r.actor.get_id() == id)
        .map(|(pid, _)| *pid)?;
    state.petitions.remove(&pid);
    metrics::gauge!("lianxin_petition_actors").decrement(1.0);
    Some(pid)
}

fn forget_worker(state: &mut GridActorState, id: ractor::ActorId) -> Option<u64> {
    let wid = state
        .workers
        .iter()
        .find(|(_, r)| r.get_id() == id)
        .map(|(wid, _)| *wid)?;
    state.workers.remove(&wid);
    Some(wid)
}

/// Sends a message to a petition's actor, starting it from storage if it is not running.
async fn route(
    myself: &ActorRef<GridMsg>,
    state: &mut GridActorState,
    petition_id: u64,
    msg: PetitionMsg,
) {
    if let Some(running) = state.petitions.get_mut(&petition_id) {
        running.sent.fetch_add(1, Ordering::AcqRel);
        match running.actor.send_message(msg) {
            Ok(()) => return,
            Err(ractor::MessagingErr::SendErr(msg)) => {
                // The actor is stopping; start a fresh one below.
                state.petitions.remove(&petition_id);
                return Box::pin(start_and_send(myself, state, petition_id, msg)).await;
            }
            Err(_) => {
                state.petitions.remove(&petition_id);
                return;
            }
        }
    }
    Box::pin(start_and_send(myself, state, petition_id, msg)).await
}

async fn start_and_send(
    myself: &ActorRef<GridMsg>,
    state: &mut GridActorState,
    petition_id: u64,
    msg: PetitionMsg,
) {
    let sent = Arc::new(AtomicU64::new(0));
    let args = PetitionArgs {
        county: state.county.clone(),
        petition_id,
        grid_id: state.grid.id,
        grid: myself.clone(),
        sent: sent.clone(),
    };
    match Actor::spawn_linked(None, PetitionActor, args, myself.get_cell()).await {
        Ok((actor, _)) => {
            metrics::gauge!("lianxin_petition_actors").increment(1.0);
            sent.fetch_add(1, Ordering::AcqRel);
            if let Err(e) = actor.send_message(msg) {
                sent.fetch_sub(1, Ordering::AcqRel);
                tracing::warn!(petition = petition_id, error = %e, "new petition actor refused a message");
            }
            state.petitions.insert(petition_id, Running { actor, sent });
        }
        Err(e) => {
            // Not found, moved to another grid, or storage failing: tell the caller.
            if let PetitionMsg::Call(call) = msg {
                let _ = call.reply.send(Err(DomainError::Unavailable(format!(
                    "petition {petition_id} could not be opened here: {e}"
                ))));
            }
        }
    }
}

async fn worker_infos(state: &GridActorState) -> Vec<WorkerInfo> {
    let mut ids: Vec<u64> = state.workers.keys().copied().collect();
    ids.sort_unstable();
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        if let Some(worker) = state.workers.get(&id)
            && let Ok(ractor::rpc::CallResult::Success(info)) = worker
                .call(WorkerMsg::Info, Some(WORKER_CALL_TIMEOUT))
                .await
        {
            out.push(info);
        }
    }
    out
}

/// The worker a petition sent to the grid goes to: an on-duty, connected worker with the fewest
/// open petitions; else a connected on-duty grid head; else an on-duty worker, then grid head;
/// else the grid head; else any worker.
async fn pick_assignee(state: &GridActorState, exclude: u64) -> DomainResult<u64> {
    let mut infos = worker_infos(state).await;
    infos.retain(|w| w.id != exclude);
    let store = state.county.store();
    let load = |id: u64| store.assigned_to(id).map(|v| v.len()).unwrap_or(usize::MAX);
    let best = |filter: &dyn Fn(&WorkerInfo) -> bool| {
        infos
            .iter()
            .filter(|w| filter(w))
            .min_by_key(|w| (load(w.id), w.id))
            .map(|w| w.id)
    };
    best(&|w| w.on_duty && w.online && w.role() == Role::Worker)
        .or_else(|| best(&|w| w.on_duty && w.online))
        .or_else(|| best(&|w| w.on_duty && w.role() == Role::Worker))
        .or_else(|| best(&|w| w.on_duty))
        .or_else(|| {
            (state.grid.head_id != 0 && state.grid.head_id != exclude).then_some(state.grid.head_id)
        })
        .or_else(|| best(&|_| true))
        .ok_or_else(|| DomainError::Unavailable(format!("grid {} has no workers", state.grid.id)))
}

fn title_of(title: &str, text: &str) -> String {
    let title = title.trim();
    if title.is_empty() {
        text.trim().chars().take(30).collect()
    } else {
        title.to_string()
    }
}

/// Refuses a resident's own petition when they raised `max` in the last 24 hours. Submissions to
/// a grid run one at a time in its actor, and a resident's own petitions all start in their grid,
/// so the count cannot be raced past.
fn check_daily_petitions(
    store: &lianxin_storage::Store,
    resident_id: u64,
    max: u32,
    now_ms: i64,
) -> DomainResult<()> {
    const DAY_MS: i64 = 24 * 3600 * 1000;
    let since = now_ms.saturating_sub(DAY_MS);
    let limit = usize::try_from(max).unwrap_or(usize::MAX);
    let recent = store.petitions_of(resident_id, 0, limit, |p| {
        p.resident_id == resident_id && p.filed_by.is_none() && p.created_at_ms > since
    })?;
    if recent.len() >= limit {
        return Err(DomainError::RateLimited(format!(
            "at most {max} petitions in 24 hours; try again later"
        )));
    }
    Ok(())
}

async fn submit(
    state: &mut GridActorState,
    who: &CallerInfo,
    new: NewPetition,
) -> DomainResult<Petition> {
    let county = state.county.clone();
    let store = county.store();
    let settings = county.settings();
    let filer = who.caller.account_id;
    if !new.client_msg_id.is_empty()
        && let Some(ack) = store.idempotent_ack(filer, &format!("s/{}", new.client_msg_id))?
    {
        let id = lianxin_storage::trees::decode_u64(&ack)?;
        store.durable().await?;
        return store
            .petition(id)?
            .ok_or_else(|| DomainError::no_petition(id));
    }
    if new.category == Category::Unspecified {
        return Err(DomainError::InvalidArgument("category is required".into()));
    }
    if new.text.trim().is_empty() {
        return Err(DomainError::InvalidArgument(
            "the first message is empty".into(),
        ));
    }
    if new.text.chars().count() > settings.max_text_chars
        || new.title.chars().count() > settings.max_title_chars
    {
        return Err(DomainError::InvalidArgument(
            "title or text too long".into(),
        ));
    }
    if new.client_msg_id.len() > 128 {
        return Err(DomainError::InvalidArgument(
            "client_msg_id is longer than 128 bytes".into(),
        ));
    }
    if new.filed_by.is_none() && settings.max_petitions_per_day > 0 {
        check_daily_petitions(
            store,
            new.resident.id,
            settings.max_petitions_per_day,
            county.clock().now_ms(),
        )?;
    }
    let assignee = if new.worker_id != 0 {
        if !state.workers.contains_key(&new.worker_id) {
            return Err(DomainError::InvalidArgument(format!(
                "worker {} does not serve grid {}",
                new.worker_id, state.grid.id
            )));
        }
        new.worker_id
    } else {
        pick_assignee(state, 0).await?
    };
    let now = county.clock().now_ms();
    let id = store.next_id()?;
    let mut p = Petition {
        id,
        resident_id: new.resident.id,
        resident_name: new.resident.display_name.clone(),
        community_id: state.grid.community_id,
        grid_id: state.grid.id,
        assignee_id: assignee,
        category: new.category as i32,
        title: title_of(&new.title, &new.text),
        channel: new.channel as i32,
        filed_by: new.filed_by.map(|staff_id| FiledBy {
            staff_id,
            channel: new.channel as i32,
        }),
        created_at_ms: now,
        updated_at_ms: now,
        last_seq: SUBMISSION_ENTRIES,
        grid_head_id: state.grid.head_id,
        round: 1,
        round_started_at_ms: now,
        ..Default::default()
    };
    p.set_state(PetitionState::Submitted);
    county.policy(p.community_id).start(&mut p);
    let base = |seq: u64| Entry {
        petition_id: id,
        seq,
        author_id: filer,
        author_name: who.display_name.clone(),
        author_role: who.caller.role as i32,
        at_ms: now,
        client_msg_id: String::new(),
        media: Vec::new(),
        body: None,
    };
    let entries = vec![
        Entry {
            body: Some(entry::Body::Transition(Transition {
                action: Action::Submit as i32,
                from: PetitionState::Unspecified as i32,
                to: PetitionState::Submitted as i32,
                reason: String::new(),
                assignee_id: assignee,
                grid_id: state.grid.id,
                round: 1,
                ..Default::default()
            })),
            ..base(1)
        },
        Entry {
            client_msg_id: new.client_msg_id.clone(),
            body: Some(entry::Body::Text(TextBody {
                text: new.text.clone(),
            })),
            ..base(2)
        },
    ];
    let to = recipients(&p);
    let notice = event::Kind::PetitionNotice(PetitionNotice {
        kind: NoticeKind::NewPetition as i32,
        petition: Some(p.clone()),
        entries: entries.clone(),
    });
    let commit = Commit {
        feed: to.iter().map(|r| (*r, notice.clone())).collect(),
        add_participants: to,
        petition: p.clone(),
        entries,
        at_ms: now,
        read_mark: None,
        webhook: None,
        idempotency: (!new.client_msg_id.is_empty()).then(|| IdempotencyKey {
            account_id: filer,
            client_msg_id: format!("s/{}", new.client_msg_id),
            scope: IdScope::Key,
            ack: id.to_be_bytes().to_vec(),
        }),
    };
    // Answered once on disk (a duplicate's original too).
    match store.commit_durable(commit).await? {
        CommitResult::Done(items) => {
            county.publish(&p, &items);
            metrics::counter!("lianxin_petitions_submitted_total").increment(1);
            tracing::info!(petition = id, assignee, "petition submitted");
            Ok(p)
        }
        CommitResult::Duplicate(ack) => {
            let id = lianxin_storage::trees::decode_u64(&ack)?;
            store
                .petition(id)?
                .ok_or_else(|| DomainError::no_petition(id))
        }
    }
}
