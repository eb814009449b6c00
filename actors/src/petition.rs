//! The petition actor: one per open petition that is in use.
//!
//! It owns the petition's state and numbers its timeline. For each request it decides with the
//! pure state machine ([`crate::domain::petition`]), stores the outcome atomically with the feed
//! events of everyone concerned, waits until that is on disk, and only then replies and pushes the
//! events live. It is started on demand from storage by its grid actor, which supervises it: a
//! panic here restarts nothing but this petition, from storage.
//!
//! An open petition's actor that has handled nothing for the configured idle time
//! ([`DomainSettings::petition_idle`](crate::county::DomainSettings)) is passivated: it offers to
//! stop, and its grid stops it once every message the grid routed to it has been handled; the next
//! request starts a fresh actor from storage. So memory follows the petitions in use, not the open
//! ones. An actor that was started by the supervisor and has done nothing but fire supervision
//! steps offers to stop right after them: the next step of a ladder is hours away.

use lianxin_protocol::v1::{
    Action, Entry, EntryAdded, EscalationTarget, MediaAttachment, MediaKind, MessageAck,
    NoticeKind, Petition, PetitionDetail, PetitionNotice, RatingLevel, ReadMark, ReadReceipt, Role,
    StepKind, SupervisionLevel, SupervisionNotice, TextBody, entry, event,
};
use lianxin_storage::media::parse_sha;
use lianxin_storage::petitions::{IdScope, IdempotencyKey, WebhookDelivery};
use lianxin_storage::{Commit, CommitResult};
use prost::Message;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tracing::{Instrument, info_span};

use crate::county::County;
use crate::domain::access::{self, Caller};
use crate::domain::petition::{self as machine, Command, TransferTarget};
use crate::domain::supervision::record_step;
use crate::error::{DomainError, DomainResult};
use crate::grid::GridMsg;

/// The account making a request, as the actors need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallerInfo {
    /// Identity and scope, for access rules.
    pub caller: Caller,
    /// Name shown on the entries the caller writes.
    pub display_name: String,
}

/// What a caller asks of a petition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PetitionRequest {
    /// Post a text message.
    Message {
        /// The text.
        text: String,
        /// The client's id for the message (may be empty).
        client_msg_id: String,
        /// Media ids the message carries: up to 9 photos or one voice clip, uploaded by the sender.
        media_ids: Vec<String>,
    },
    /// Transfer to a worker (`to_worker_id`) or to a grid's on-duty worker (`to_grid_id`).
    Transfer {
        /// Target worker, or 0.
        to_worker_id: u64,
        /// Target grid, or 0.
        to_grid_id: u64,
        /// Why.
        reason: String,
    },
    /// Escalate to the community or a co-building unit.
    Escalate {
        /// To whom.
        target: EscalationTarget,
        /// The unit's name, for a co-building unit.
        unit_name: String,
        /// A note for the history.
        note: String,
    },
    /// Report the handling result.
    Resolve {
        /// The handling summary.
        summary: String,
    },
    /// Close a resolved petition.
    Close,
    /// Withdraw the petition.
    Withdraw {
        /// Why (may be empty).
        reason: String,
    },
    /// Rate the resolved round (the resident; or staff recording a rating given by telephone).
    Rate {
        /// How satisfied.
        level: RatingLevel,
        /// Optional comment.
        comment: String,
        /// Staff recording a telephone rating.
        by_phone: bool,
    },
    /// Reopen a closed petition (the resident).
    Reopen {
        /// Why.
        reason: String,
    },
    /// Mark the petition read up to a sequence number.
    MarkRead {
        /// Highest sequence number read.
        seq: u64,
    },
    /// Open the petition (supervisors start following it).
    Open,
    /// Fire the supervision steps that are due (from the supervisor only).
    Supervise,
}

/// What a petition request produced.
#[derive(Debug, Clone, PartialEq)]
pub enum PetitionReply {
    /// A message was stored (or had been, for a resend).
    Ack(MessageAck),
    /// The petition after a transition.
    Petition(Petition),
    /// The petition with its read marks.
    Detail(PetitionDetail),
    /// Done, nothing to report.
    Done,
    /// Supervision fired this many steps.
    Supervised(usize),
}

/// A request with the port its reply goes to.
#[derive(Debug)]
pub struct PetitionCall {
    /// Who asks.
    pub caller: CallerInfo,
    /// What they ask.
    pub request: PetitionRequest,
    /// Where the reply goes.
    pub reply: RpcReplyPort<DomainResult<PetitionReply>>,
}

/// Messages of the petition actor.
#[derive(Debug)]
pub enum PetitionMsg {
    /// A caller's request.
    Call(PetitionCall),
    /// Panics on purpose: lets tests prove that a crash stays local and restarts from storage
    /// (only with the `fault-injection` feature, which tests turn on).
    #[cfg(feature = "fault-injection")]
    #[doc(hidden)]
    Crash,
    /// The actor's own idle timer: offer to stop if nothing was handled for the idle time.
    IdleCheck,
}

/// Arguments to start a petition actor.
#[derive(Debug, Clone)]
pub struct PetitionArgs {
    /// Shared domain context.
    pub county: County,
    /// The petition to load.
    pub petition_id: u64,
    /// The grid actor starting it; a petition of another grid refuses to start here.
    pub grid_id: u64,
    /// The grid actor, which it asks to be stopped when idle.
    pub grid: ActorRef<GridMsg>,
    /// Messages routed to the actor (by the grid, or straight by the county); the grid compares
    /// it with the messages handled before it lets the actor stop.
    pub sent: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

/// State of a petition actor.
#[derive(Debug)]
pub struct PetitionActorState {
    /// Shared domain context.
    county: County,
    /// The petition as stored.
    petition: Petition,
    /// The grid whose actor supervises this one.
    grid_id: u64,
    /// That grid's actor.
    grid: ActorRef<GridMsg>,
    /// Requests handled so far (the grid and the county count those they send in `sent`).
    handled: u64,
    /// When the last message from the grid was handled (or the actor started).
    last_active: tokio::time::Instant,
    /// Whether every request handled so far was the supervisor's.
    only_supervised: bool,
}

/// The petition actor (behaviour only; its data lives in [`PetitionActorState`]).
#[derive(Debug, Default)]
pub struct PetitionActor;

impl Actor for PetitionActor {
    type Msg = PetitionMsg;
    type State = PetitionActorState;
    type Arguments = PetitionArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: PetitionArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let petition = args
            .county
            .store()
            .petition(args.petition_id)?
            .ok_or_else(|| DomainError::no_petition(args.petition_id))?;
        if petition.grid_id != args.grid_id {
            return Err(DomainError::Unavailable(format!(
                "petition {} moved to grid {}",
                petition.id, petition.grid_id
            ))
            .into());
        }
        tracing::debug!(petition = petition.id, "petition actor started");
        args.county
            .petition_live(petition.id, myself.clone(), args.sent.clone());
        if let Some(idle) = args.county.settings().petition_idle {
            myself.send_after(idle, || PetitionMsg::IdleCheck);
        }
        Ok(PetitionActorState {
            county: args.county,
            petition,
            grid_id: args.grid_id,
            grid: args.grid,
            handled: 0,
            last_active: tokio::time::Instant::now(),
            only_supervised: true,
        })
    }

    async fn post_stop(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        state
            .county
            .petition_gone(state.petition.id, myself.get_id());
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: PetitionMsg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            #[cfg(feature = "fault-injection")]
            PetitionMsg::Crash => panic!("petition {} asked to crash", state.petition.id),
            PetitionMsg::IdleCheck => idle_check(&myself, state),
            PetitionMsg::Call(call) => {
                state.handled += 1;
                state.only_supervised &= call.request == PetitionRequest::Supervise;
                let span = info_span!("petition", id = state.petition.id);
                // Boxed: the request's future is a few KiB, and the actor runtime moves the
                // future of every message several times; a box is moved as a pointer.
                let result =
                    Box::pin(handle_call(state, &call.caller, call.request).instrument(span)).await;
                let _ = call.reply.send(result);
                state.last_active = tokio::time::Instant::now();
                let p = &state.petition;
                if !machine::is_open(p.state()) || p.grid_id != state.grid_id {
                    // Closed petitions have no actor; moved ones live under their new grid.
                    state.county.petition_gone(p.id, myself.get_id());
                    myself.stop(Some("petition closed or moved".into()));
                } else if state.only_supervised && state.county.settings().petition_idle.is_some() {
                    // Started for supervision alone: its next step is hours away.
                    offer_to_stop(&myself, state);
                }
            }
        }
        Ok(())
    }
}

/// On the idle timer: offers to stop when nothing was handled for the idle time (the grid agrees
/// only when it has routed nothing this actor has not handled yet), and sets the timer again.
fn idle_check(myself: &ActorRef<PetitionMsg>, state: &PetitionActorState) {
    let Some(idle) = state.county.settings().petition_idle else {
        return;
    };
    let quiet = state.last_active.elapsed();
    if quiet >= idle {
        offer_to_stop(myself, state);
        // Should the grid decline (a message is on its way), look again later.
        myself.send_after(idle, || PetitionMsg::IdleCheck);
    } else {
        myself.send_after(idle - quiet, || PetitionMsg::IdleCheck);
    }
}

/// Asks the grid to stop this actor; it does once every message it routed here was handled.
fn offer_to_stop(myself: &ActorRef<PetitionMsg>, state: &PetitionActorState) {
    let offer = GridMsg::PetitionIdle {
        petition_id: state.petition.id,
        actor: myself.get_id(),
        handled: state.handled,
    };
    if state.grid.send_message(offer).is_err() {
        // The grid is gone (shutting down): nothing will be routed here again.
        myself.stop(Some("grid gone".into()));
    }
}

/// The accounts that receive a petition's events: resident, filer, assignee, grid head, watchers.
pub fn recipients(p: &Petition) -> Vec<u64> {
    let mut ids = vec![p.resident_id, p.assignee_id, p.grid_head_id];
    if let Some(f) = &p.filed_by {
        ids.push(f.staff_id);
    }
    ids.extend_from_slice(&p.watcher_ids);
    ids.retain(|id| *id != 0);
    ids.sort_unstable();
    ids.dedup();
    ids
}

fn added(entry: &Entry, p: &Petition) -> event::Kind {
    event::Kind::EntryAdded(EntryAdded {
        entry: Some(entry.clone()),
        state: p.state,
        assignee_id: p.assignee_id,
    })
}

async fn handle_call(
    state: &mut PetitionActorState,
    who: &CallerInfo,
    request: PetitionRequest,
) -> DomainResult<PetitionReply> {
    if !access::can_view(&state.petition, &who.caller) {
        return Err(DomainError::no_petition(state.petition.id));
    }
    let now = state.county.clock().now_ms();
    // Every request but a message runs boxed: an async fn's future is as large as its largest
    // branch, and the actor runtime moves (copies) it for each request it handles.
    match request {
        PetitionRequest::Message {
            text,
            client_msg_id,
            media_ids,
        } => message(state, who, text, client_msg_id, media_ids, now).await,
        PetitionRequest::MarkRead { seq } => Box::pin(mark_read(state, who, seq, now)).await,
        PetitionRequest::Open => Box::pin(open(state, who, now)).await,
        PetitionRequest::Supervise => Box::pin(supervise(state, who, now)).await,
        PetitionRequest::Transfer {
            to_worker_id,
            to_grid_id,
            reason,
        } => {
            let to = Box::pin(transfer_target(&state.county, to_worker_id, to_grid_id)).await?;
            let head = state
                .county
                .store()
                .grid(to.grid_id)?
                .map_or(0, |g| g.head_id);
            Box::pin(transition(
                state,
                who,
                Command::Transfer { to, reason },
                now,
                Some(head),
            ))
            .await
        }
        PetitionRequest::Escalate {
            target,
            unit_name,
            note,
        } => {
            let cmd = Command::Escalate {
                target,
                unit_name,
                note,
            };
            Box::pin(transition(state, who, cmd, now, None)).await
        }
        PetitionRequest::Resolve { summary } => {
            Box::pin(transition(
                state,
                who,
                Command::Resolve { summary },
                now,
                None,
            ))
            .await
        }
        PetitionRequest::Close => Box::pin(transition(state, who, Command::Close, now, None)).await,
        PetitionRequest::Withdraw { reason } => {
            Box::pin(transition(
                state,
                who,
                Command::Withdraw { reason },
                now,
                None,
            ))
            .await
        }
        PetitionRequest::Rate {
            level,
            comment,
            by_phone,
        } => {
            check_text(&state.county, &comment)?;
            let cmd = Command::Rate {
                level,
                comment,
                by_phone,
            };
            Box::pin(transition(state, who, cmd, now, None)).await
        }
        PetitionRequest::Reopen { reason } => {
            check_text(&state.county, &reason)?;
            let within_ms = state
                .county
                .policy(state.petition.community_id)
                .reopen_within_ms();
            let cmd = Command::Reopen { reason, within_ms };
            Box::pin(transition(state, who, cmd, now, None)).await
        }
    }
}

/// Resolves a transfer's target to a worker, their grid and community.
async fn transfer_target(
    county: &County,
    to_worker_id: u64,
    to_grid_id: u64,
) -> DomainResult<TransferTarget> {
    let worker_id = match (to_worker_id, to_grid_id) {
        (0, 0) => {
            return Err(DomainError::InvalidArgument(
                "a transfer needs to_worker_id or to_grid_id".into(),
            ));
        }
        (w, 0) => w,
        (0, g) => county.pick_assignee(g).await?,
        _ => {
            return Err(DomainError::InvalidArgument(
                "give to_worker_id or to_grid_id, not both".into(),
            ));
        }
    };
    let worker = county
        .store()
        .account(worker_id)?
        .filter(|a| a.is_grid_staff() && a.grid_id != 0)
        .ok_or_else(|| DomainError::InvalidArgument(format!("{worker_id} is not a grid worker")))?;
    Ok(TransferTarget {
        worker_id,
        grid_id: worker.grid_id,
        community_id: worker.community_id,
    })
}

fn entry_base(p: &Petition, seq: u64, who: &CallerInfo, now: i64) -> Entry {
    Entry {
        petition_id: p.id,
        seq,
        author_id: who.caller.account_id,
        author_name: who.display_name.clone(),
        author_role: who.caller.role as i32,
        at_ms: now,
        client_msg_id: String::new(),
        media: Vec::new(),
        body: None,
    }
}

/// Stores a commit, waits for the disk, then pushes its events live.
async fn store_and_publish(
    state: &mut PetitionActorState,
    commit: Commit,
) -> DomainResult<Result<(), Vec<u8>>> {
    let county = state.county.clone();
    let petition = commit.petition.clone();
    // The storage writer applies it with the other commits queued meanwhile and answers after
    // their shared flush; a duplicate is answered after that flush too (its original is on disk).
    match county.store().commit_durable(commit).await {
        Ok(CommitResult::Done(items)) => {
            state.petition = petition;
            county.publish(&state.petition, &items);
            Ok(Ok(()))
        }
        Ok(CommitResult::Duplicate(ack)) => Ok(Err(ack)),
        Err(e) => {
            // A failed flush leaves the commit applied in memory: follow what storage holds, so
            // that the next commit does not reuse its sequence numbers.
            if let Ok(Some(stored)) = county.store().petition(state.petition.id) {
                state.petition = stored;
            }
            Err(e.into())
        }
    }
}

/// Most photos one message may carry.
pub const MAX_PHOTOS_PER_MESSAGE: usize = 9;

/// The attachments of a message's media ids: each must exist and have been uploaded by the sender;
/// up to [`MAX_PHOTOS_PER_MESSAGE`] photos, or one voice clip alone.
fn attachments(
    store: &lianxin_storage::Store,
    sender: u64,
    ids: &[String],
) -> DomainResult<Vec<MediaAttachment>> {
    if ids.len() > MAX_PHOTOS_PER_MESSAGE {
        return Err(DomainError::InvalidArgument(format!(
            "a message carries at most {MAX_PHOTOS_PER_MESSAGE} photos"
        )));
    }
    let mut out: Vec<MediaAttachment> = Vec::with_capacity(ids.len());
    for id in ids {
        let missing = || DomainError::NotFound(format!("no media {id}"));
        let sha = parse_sha(id).ok_or_else(missing)?;
        if !store.media_is_owner(sender, &sha)? {
            return Err(missing());
        }
        let media = store
            .media_info(&sha)?
            .and_then(|i| i.media)
            .ok_or_else(missing)?;
        if out.iter().any(|m| m.id == media.id) {
            return Err(DomainError::InvalidArgument(format!(
                "media {id} given twice"
            )));
        }
        out.push(media);
    }
    let voices = out.iter().filter(|m| m.kind() == MediaKind::Voice).count();
    if voices > 0 && out.len() > 1 {
        return Err(DomainError::InvalidArgument(
            "a voice clip goes alone in its message".into(),
        ));
    }
    Ok(out)
}

/// The checks of a new message that read no idempotency key: its text, media and client id, and
/// whether the petition takes a message from this caller now.
fn check_message(
    state: &PetitionActorState,
    who: &CallerInfo,
    text: &str,
    client_msg_id: &str,
    media_ids: &[String],
    now: i64,
) -> DomainResult<(Vec<MediaAttachment>, machine::Outcome)> {
    if text.trim().is_empty() && media_ids.is_empty() {
        return Err(DomainError::InvalidArgument("message text is empty".into()));
    }
    check_text(&state.county, text)?;
    let media = attachments(state.county.store(), who.caller.account_id, media_ids)?;
    if client_msg_id.len() > 128 {
        return Err(DomainError::InvalidArgument(
            "client_msg_id is longer than 128 bytes".into(),
        ));
    }
    let outcome = machine::decide(&state.petition, &who.caller, &Command::Message, now)?;
    Ok((media, outcome))
}

async fn message(
    state: &mut PetitionActorState,
    who: &CallerInfo,
    text: String,
    client_msg_id: String,
    media_ids: Vec<String>,
    now: i64,
) -> DomainResult<PetitionReply> {
    // A resend is recognised by the storage writer, which answers with the original's
    // acknowledgement (after the flush) instead of storing it again; so the common case, a new
    // message, reads nothing here. Only a message refused below is looked up, so that a resend
    // of a message stored before the petition changed (closed, say) still gets its ack.
    let checked = check_message(state, who, &text, &client_msg_id, &media_ids, now);
    let (media, outcome) = match checked {
        Ok(checked) => checked,
        Err(refused) => {
            if !client_msg_id.is_empty()
                && client_msg_id.len() <= 128
                && let Some(ack) = state.county.store().message_ack(
                    state.petition.id,
                    who.caller.account_id,
                    &client_msg_id,
                )?
            {
                state.county.store().durable().await?;
                return duplicate_ack(&ack);
            }
            return Err(refused);
        }
    };
    let mut p = outcome.petition;
    refresh_next_step(&state.county, &mut p);
    let seq = p.last_seq + 1;
    // Recorded before the commit, so that whoever sees the message may fetch its media; the new
    // ones are undone below if the message is not stored.
    let mut new_refs = Vec::new();
    for m in &media {
        let Some(sha) = parse_sha(&m.id) else {
            continue;
        };
        match state.county.store().media_reference(&sha, p.id) {
            Ok(Some(true)) => new_refs.push(sha),
            Ok(Some(false)) => {}
            Ok(None) => {
                // Collected between the check above and now.
                unreference(state, &new_refs, p.id);
                return Err(DomainError::NotFound(format!("no media {}", m.id)));
            }
            Err(e) => {
                unreference(state, &new_refs, p.id);
                return Err(e.into());
            }
        }
    }
    let mut entries = vec![Entry {
        client_msg_id: client_msg_id.clone(),
        media,
        body: Some(entry::Body::Text(TextBody { text })),
        ..entry_base(&p, seq, who, now)
    }];
    if let Some(t) = outcome.transition {
        entries.push(Entry {
            body: Some(entry::Body::Transition(t)),
            ..entry_base(&p, seq + 1, who, now)
        });
    }
    p.last_seq = seq + entries.len() as u64 - 1;
    let petition_id = p.id;
    let ack = MessageAck {
        petition_id: p.id,
        seq,
        at_ms: now,
        duplicate: false,
    };
    let feed = recipients(&p)
        .into_iter()
        .flat_map(|r| entries.iter().map(move |e| (r, e)))
        .map(|(r, e)| (r, added(e, &p)))
        .collect();
    let commit = Commit {
        add_participants: vec![who.caller.account_id],
        petition: p,
        entries,
        feed,
        at_ms: now,
        read_mark: None,
        webhook: None,
        // Kept in the message's own entry: a resend is answered with that entry's ack.
        idempotency: (!client_msg_id.is_empty()).then(|| IdempotencyKey {
            account_id: who.caller.account_id,
            client_msg_id: client_msg_id.clone(),
            scope: IdScope::Entry,
            ack: Vec::new(),
        }),
    };
    match store_and_publish(state, commit).await {
        Ok(Ok(())) => {
            metrics::counter!("lianxin_messages_total").increment(1);
            Ok(PetitionReply::Ack(ack))
        }
        Ok(Err(stored)) => {
            // The earlier message of this client_msg_id is the stored one, not this one.
            unreference(state, &new_refs, petition_id);
            duplicate_ack(&stored)
        }
        Err(e) => {
            // A failed flush may still have applied the commit (storage is followed above).
            if state.petition.last_seq < seq {
                unreference(state, &new_refs, petition_id);
            }
            Err(e)
        }
    }
}

/// Forgets the media references of a message that was not stored.
fn unreference(state: &PetitionActorState, shas: &[lianxin_storage::media::Sha], petition_id: u64) {
    for sha in shas {
        if let Err(e) = state.county.store().media_unreference(sha, petition_id) {
            tracing::warn!(error = %e, "a media reference of an unstored message stays");
        }
    }
}

fn duplicate_ack(stored: &[u8]) -> DomainResult<PetitionReply> {
    let mut ack = MessageAck::decode(stored)
        .map_err(|e| DomainError::Storage(lianxin_storage::StoreError::Corrupt(e.to_string())))?;
    ack.duplicate = true;
    Ok(PetitionReply::Ack(ack))
}

/// Refuses a text longer than the configured limit.
fn check_text(county: &County, text: &str) -> DomainResult<()> {
    let max = county.settings().max_text_chars;
    if text.chars().count() > max {
        return Err(DomainError::InvalidArgument(format!(
            "text is longer than {max} characters"
        )));
    }
    Ok(())
}

async fn transition(
    state: &mut PetitionActorState,
    who: &CallerInfo,
    cmd: Command,
    now: i64,
    new_grid_head: Option<u64>,
) -> DomainResult<PetitionReply> {
    let before = state.petition.clone();
    let outcome = machine::decide(&before, &who.caller, &cmd, now)?;
    let mut p = outcome.petition;
    let Some(t) = outcome.transition else {
        return Ok(PetitionReply::Petition(p));
    };
    if let Some(head) = new_grid_head {
        p.grid_head_id = head;
    }
    if t.action() == Action::Reopen {
        // A new round: its own deadlines, counted from the reopening.
        state.county.policy(p.community_id).start(&mut p);
    }
    if p.community_id != before.community_id {
        // Supervisors who followed it in the old community no longer see it: stop telling them.
        let store = state.county.store();
        let view = p.clone();
        p.watcher_ids.retain(|id| {
            store
                .account(*id)
                .ok()
                .flatten()
                .is_some_and(|a| access::can_view(&view, &crate::county::caller_of(&a).caller))
        });
    }
    refresh_next_step(&state.county, &mut p);
    let rating = t.rating.clone();
    // A bad review goes to the webhook from storage, written with the rating itself, so that a
    // crash cannot keep it from the community.
    let bad_review = match rating
        .as_ref()
        .filter(|r| r.level() == RatingLevel::Dissatisfied)
    {
        Some(r) if state.county.wants_bad_reviews() => Some(WebhookDelivery {
            id: state.county.store().next_id()?,
            rating: r.clone(),
        }),
        _ => None,
    };
    let seq = p.last_seq + 1;
    p.last_seq = seq;
    let entry = Entry {
        body: Some(entry::Body::Transition(t)),
        ..entry_base(&p, seq, who, now)
    };
    let mut feed: Vec<(u64, event::Kind)> = Vec::new();
    let after = recipients(&p);
    let mut everyone = recipients(&before);
    everyone.extend(after.iter().copied());
    everyone.sort_unstable();
    everyone.dedup();
    for r in &everyone {
        feed.push((*r, added(&entry, &p)));
    }
    let mut add_participants = vec![who.caller.account_id];
    if before.assignee_id != p.assignee_id {
        let notice = |kind: NoticeKind| {
            event::Kind::PetitionNotice(PetitionNotice {
                kind: kind as i32,
                petition: Some(p.clone()),
                entries: vec![entry.clone()],
            })
        };
        feed.push((p.assignee_id, notice(NoticeKind::TransferredIn)));
        if p.grid_head_id != before.grid_head_id && p.grid_head_id != p.assignee_id {
            feed.push((p.grid_head_id, notice(NoticeKind::TransferredIn)));
        }
        feed.push((before.assignee_id, notice(NoticeKind::TransferredOut)));
        add_participants.extend(after.iter().copied());
    }
    let commit = Commit {
        petition: p,
        entries: vec![entry],
        add_participants,
        feed,
        at_ms: now,
        read_mark: None,
        idempotency: None,
        webhook: bad_review.clone(),
    };
    store_and_publish(state, commit)
        .await?
        .map_err(|_| DomainError::Conflict("unexpected duplicate".into()))?;
    metrics::counter!("lianxin_transitions_total").increment(1);
    if rating.is_some_and(|r| r.level() == RatingLevel::Dissatisfied) {
        metrics::counter!("lianxin_bad_reviews_total").increment(1);
    }
    if let Some(d) = bad_review {
        state.county.bad_review(d.id, &state.petition, &d.rating);
    }
    Ok(PetitionReply::Petition(state.petition.clone()))
}

async fn mark_read(
    state: &mut PetitionActorState,
    who: &CallerInfo,
    seq: u64,
    now: i64,
) -> DomainResult<PetitionReply> {
    let p = state.petition.clone();
    if seq == 0 || seq > p.last_seq {
        return Err(DomainError::InvalidArgument(format!(
            "seq must be between 1 and {}",
            p.last_seq
        )));
    }
    let store = state.county.store();
    let previous = store
        .read_marks(p.id)?
        .into_iter()
        .find(|m| m.reader_id == who.caller.account_id)
        .map_or(0, |m| m.seq);
    if seq <= previous {
        return Ok(PetitionReply::Done);
    }
    let mark = ReadMark {
        petition_id: p.id,
        reader_id: who.caller.account_id,
        reader_role: who.caller.role as i32,
        seq,
        at_ms: now,
    };
    let feed = recipients(&p)
        .into_iter()
        .map(|r| {
            (
                r,
                event::Kind::ReadReceipt(ReadReceipt { mark: Some(mark) }),
            )
        })
        .collect();
    let commit = Commit {
        petition: p,
        read_mark: Some(mark),
        feed,
        at_ms: now,
        ..Default::default()
    };
    store_and_publish(state, commit)
        .await?
        .map_err(|_| DomainError::Conflict("unexpected duplicate".into()))?;
    Ok(PetitionReply::Done)
}

async fn open(
    state: &mut PetitionActorState,
    who: &CallerInfo,
    now: i64,
) -> DomainResult<PetitionReply> {
    let supervisor = matches!(
        who.caller.role,
        Role::CommunitySupervisor | Role::TownshipSupervisor | Role::Admin
    );
    let id = who.caller.account_id;
    if supervisor && !recipients(&state.petition).contains(&id) {
        let mut p = state.petition.clone();
        p.watcher_ids.push(id);
        let commit = Commit {
            petition: p,
            add_participants: vec![id],
            at_ms: now,
            ..Default::default()
        };
        store_and_publish(state, commit)
            .await?
            .map_err(|_| DomainError::Conflict("unexpected duplicate".into()))?;
    }
    let read_marks = state.county.store().read_marks(state.petition.id)?;
    Ok(PetitionReply::Detail(PetitionDetail {
        petition: Some(state.petition.clone()),
        read_marks,
    }))
}

/// Moves the petition's next supervision step after a change (a response or a resolution ends a
/// ladder; nothing else moves a deadline).
fn refresh_next_step(county: &County, p: &mut Petition) {
    p.next_step_at_ms = county.policy(p.community_id).next_step_at(p);
}

/// Name on the timeline entries that supervision writes.
const SUPERVISION_AUTHOR: &str = "督办系统";

async fn supervise(
    state: &mut PetitionActorState,
    who: &CallerInfo,
    now: i64,
) -> DomainResult<PetitionReply> {
    if who.caller.account_id != 0 {
        return Err(DomainError::Forbidden("supervision is the system's".into()));
    }
    let county = state.county.clone();
    let policy = county.policy(state.petition.community_id);
    if policy
        .close_unrated_at(&state.petition)
        .is_some_and(|at| at <= now)
    {
        // Resolved but never rated: closed as unrated (it never counts as satisfied).
        transition(state, who, Command::CloseUnrated, now, None).await?;
        return Ok(PetitionReply::Supervised(1));
    }
    let due = policy.due(&state.petition, now);
    let mut p = state.petition.clone();
    if due.is_empty() {
        // A stale index entry (e.g. the policy changed): just move the index on.
        let next = policy.next_step_at(&p);
        if next != p.next_step_at_ms {
            p.next_step_at_ms = next;
            let commit = Commit {
                petition: p,
                at_ms: now,
                ..Default::default()
            };
            store_and_publish(state, commit)
                .await?
                .map_err(|_| DomainError::Conflict("unexpected duplicate".into()))?;
        }
        return Ok(PetitionReply::Supervised(0));
    }
    let store = county.store();
    let mut entries = Vec::with_capacity(due.len());
    let mut feed: Vec<(u64, event::Kind)> = Vec::new();
    let mut add_participants = Vec::new();
    for step in &due {
        let previous_assignee = p.assignee_id;
        let mut reassigned_to = 0;
        let notified: Vec<u64> = match (step.planned.step, step.planned.level) {
            (StepKind::Reassignment, _) => {
                match county.pick_other_assignee(p.grid_id, p.assignee_id).await {
                    Ok(Some(w)) => {
                        reassigned_to = w;
                        p.assignee_id = w;
                        vec![w, previous_assignee]
                    }
                    _ => vec![previous_assignee],
                }
            }
            (StepKind::Escalation, SupervisionLevel::GridHead) => vec![p.grid_head_id],
            (StepKind::Escalation, SupervisionLevel::Community) => {
                store.supervisors_of(p.community_id)?
            }
            (StepKind::Escalation, SupervisionLevel::Township) => store.supervisors_of(0)?,
            _ => vec![p.assignee_id],
        };
        let mut notified: Vec<u64> = notified.into_iter().filter(|id| *id != 0).collect();
        notified.sort_unstable();
        notified.dedup();
        // Supervisors reached by an escalation follow the petition from now on.
        for id in &notified {
            if !recipients(&p).contains(id) {
                p.watcher_ids.push(*id);
                add_participants.push(*id);
            }
        }
        record_step(&mut p, step);
        p.last_seq += 1;
        let entry = Entry {
            petition_id: p.id,
            seq: p.last_seq,
            author_id: 0,
            author_name: SUPERVISION_AUTHOR.into(),
            author_role: Role::Unspecified as i32,
            at_ms: now,
            client_msg_id: String::new(),
            media: Vec::new(),
            body: Some(entry::Body::Supervision(SupervisionNotice {
                deadline: step.deadline as i32,
                step: step.planned.step as i32,
                level: step.planned.level as i32,
                due_at_ms: step.due_at_ms,
                notified_ids: notified.clone(),
                reassigned_to,
            })),
        };
        // A warning is the worker's business; everything later is everyone's, the resident's too.
        let to: Vec<u64> = if step.planned.step == StepKind::Warning {
            notified.clone()
        } else {
            let mut to = recipients(&p);
            to.extend(notified.iter().copied());
            to.push(previous_assignee);
            to.sort_unstable();
            to.dedup();
            to
        };
        for r in to {
            feed.push((r, added(&entry, &p)));
        }
        if reassigned_to != 0 {
            let notice = |kind: NoticeKind| {
                event::Kind::PetitionNotice(PetitionNotice {
                    kind: kind as i32,
                    petition: Some(p.clone()),
                    entries: vec![entry.clone()],
                })
            };
            feed.push((reassigned_to, notice(NoticeKind::TransferredIn)));
            feed.push((previous_assignee, notice(NoticeKind::TransferredOut)));
            add_participants.push(reassigned_to);
        }
        entries.push(entry);
        metrics::counter!("lianxin_supervision_step_total", "step" => step.planned.step.as_str_name(), "level" => step.planned.level.as_str_name()).increment(1);
    }
    p.next_step_at_ms = policy.next_step_at(&p);
    let fired = entries.len();
    let commit = Commit {
        petition: p,
        entries,
        add_participants,
        feed,
        at_ms: now,
        read_mark: None,
        webhook: None,
        idempotency: None,
    };
    store_and_publish(state, commit)
        .await?
        .map_err(|_| DomainError::Conflict("unexpected duplicate".into()))?;
    Ok(PetitionReply::Supervised(fired))
}
