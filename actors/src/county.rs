//! The county: the running domain. It starts a grid actor per grid (each starting its worker
//! actors), routes requests to the right grid and petition actor, answers read-only queries
//! straight from storage with the same access rules, and owns the live-delivery [`Hub`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use lianxin_protocol::v1::{
    Board, BoardUpdate, Category, Channel, GetBoardPetitions, GridInfo, HistoryPage, Petition,
    PetitionPage, PetitionState, Rating, Role, SubmitPetition, WatchBoard, WorkerInfo,
};
use lianxin_storage::{AccountRecord, FeedItem, Store};
use parking_lot::RwLock;
use ractor::rpc::CallResult;
use ractor::{Actor, ActorRef};

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::board::{BoardActor, BoardMsg};
use crate::clock::SharedClock;
use crate::domain::access::{self, Caller};
use crate::domain::appraisal::AppraisalConfig;
use crate::domain::board::Facts;
use crate::domain::calendar::CalendarError;
use crate::domain::supervision::{Policy, SupervisionConfig};
use crate::error::{DomainError, DomainResult};
use crate::grid::{GridActor, GridMsg, NewPetition};
use crate::hub::Hub;
use crate::petition::{CallerInfo, PetitionCall, PetitionMsg, PetitionReply, PetitionRequest};
use crate::supervisor::{SupervisorActor, SupervisorMsg, TickReport};
use crate::ticker::spawn_ticker;
use crate::worker::WorkerMsg;

/// Limits and timeouts of the domain.
#[derive(Debug, Clone)]
pub struct DomainSettings {
    /// Longest message text, in characters.
    pub max_text_chars: usize,
    /// Longest petition title, in characters.
    pub max_title_chars: usize,
    /// How long a request waits for an actor before it fails as unavailable.
    pub call_timeout: Duration,
    /// Deadline policies.
    pub supervision: SupervisionConfig,
    /// How often the supervisor looks for due steps (none: only when asked, as tests do).
    pub supervision_tick: Option<Duration>,
    /// Stop an open petition's actor after this long without a request (none: keep it while
    /// the petition is open); the next request starts it again from storage.
    pub petition_idle: Option<Duration>,
    /// The response boards.
    pub board: BoardSettings,
    /// How workers are appraised (docs/appraisal.md).
    pub appraisal: AppraisalConfig,
    /// Petitions a resident may raise themselves in any 24 hours (0: no limit); petitions staff
    /// file for them do not count.
    pub max_petitions_per_day: u32,
}

/// Settings of the response boards.
#[derive(Debug, Clone)]
pub struct BoardSettings {
    /// The time zone "today" is counted in, in minutes east of UTC (480: China).
    pub utc_offset_minutes: i32,
    /// How often changed boards are pushed to their watchers.
    pub interval: Duration,
}

impl Default for BoardSettings {
    fn default() -> Self {
        BoardSettings {
            utc_offset_minutes: 480,
            interval: Duration::from_millis(500),
        }
    }
}

impl Default for DomainSettings {
    fn default() -> Self {
        DomainSettings {
            max_text_chars: 4000,
            max_title_chars: 100,
            call_timeout: Duration::from_secs(10),
            supervision: SupervisionConfig::default(),
            supervision_tick: Some(Duration::from_millis(250)),
            petition_idle: Some(Duration::from_secs(30)),
            board: BoardSettings::default(),
            appraisal: AppraisalConfig::default(),
            max_petitions_per_day: 0,
        }
    }
}

/// Checked deadline policies: the default and per-community ones.
#[derive(Debug)]
struct Policies {
    /// For communities without their own.
    default: Arc<Policy>,
    /// By community id.
    communities: HashMap<u64, Arc<Policy>>,
}

impl Policies {
    fn new(config: &SupervisionConfig) -> DomainResult<Policies> {
        let bad = |what: &str, e: CalendarError| {
            DomainError::InvalidArgument(format!("supervision policy {what}: {e}"))
        };
        let default = Arc::new(Policy::new(config.default.clone()).map_err(|e| bad("default", e))?);
        let mut communities = HashMap::new();
        for (id, policy) in &config.communities {
            let community: u64 = id.parse().map_err(|_| {
                DomainError::InvalidArgument(format!(
                    "supervision.communities key {id:?} is not a community id"
                ))
            })?;
            communities.insert(
                community,
                Arc::new(Policy::new(policy.clone()).map_err(|e| bad(id, e))?),
            );
        }
        Ok(Policies {
            default,
            communities,
        })
    }
}

/// Shared domain context (see [`County`]).
struct Inner {
    /// The database.
    store: Store,
    /// The one source of time.
    clock: SharedClock,
    /// Live sessions by account.
    hub: Hub,
    /// Limits.
    settings: DomainSettings,
    /// Grid actors by grid id.
    grids: RwLock<HashMap<u64, ActorRef<GridMsg>>>,
    /// Petitions whose actor is running: requests to them go straight to the actor, without
    /// reading the petition from storage or passing through the grid actor (the petition actor
    /// checks access on its own copy).
    live: DashMap<u64, LivePetition>,
    /// Deadline policies.
    policies: Policies,
    /// The supervisor actor, once started.
    supervisor: RwLock<Option<ActorRef<SupervisorMsg>>>,
    /// Tells the supervision ticker to stop.
    stop_ticker: Arc<AtomicBool>,
    /// The board actor, once started.
    board: RwLock<Option<ActorRef<BoardMsg>>>,
    /// Whether any board has loaded facts (and so wants to hear of petition changes).
    board_active: AtomicBool,
    /// Where bad reviews go (the webhook), once someone listens.
    bad_reviews: RwLock<Option<tokio::sync::mpsc::UnboundedSender<BadReview>>>,
}

/// A running petition actor, as the county routes to it.
#[derive(Clone)]
struct LivePetition {
    /// The actor.
    actor: ActorRef<PetitionMsg>,
    /// Messages sent to it, shared with its grid (which lets it stop only when all were handled).
    sent: Arc<AtomicU64>,
}

/// A dissatisfied rating (差评), as stored, for those who act on it (the webhook).
#[derive(Debug, Clone, PartialEq)]
pub struct BadReview {
    /// The webhook delivery it is stored under (`Store::webhook_pending`).
    pub delivery_id: u64,
    /// The petition after the rating.
    pub petition: Petition,
    /// The rating.
    pub rating: Rating,
}

/// Handle on the running domain; cheap to clone.
#[derive(Clone)]
pub struct County(Arc<Inner>);

impl std::fmt::Debug for County {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("County").finish_non_exhaustive()
    }
}

/// Builds the caller from an account record.
pub fn caller_of(account: &AccountRecord) -> CallerInfo {
    CallerInfo {
        caller: Caller {
            account_id: account.id,
            role: account.role(),
            community_id: account.community_id,
            grid_id: account.grid_id,
        },
        display_name: account.display_name.clone(),
    }
}

const PAGE_DEFAULT: usize = 20;
const PAGE_MAX: usize = 100;
const HISTORY_DEFAULT: usize = 50;
const HISTORY_MAX: usize = 200;

fn page_size(asked: u32, default: usize, max: usize) -> usize {
    match asked {
        0 => default,
        n => (n as usize).min(max),
    }
}

impl County {
    /// Starts the grid actors of every stored grid.
    pub async fn start(
        store: Store,
        clock: SharedClock,
        settings: DomainSettings,
    ) -> DomainResult<County> {
        let policies = Policies::new(&settings.supervision)?;
        settings
            .appraisal
            .validate()
            .map_err(|e| DomainError::InvalidArgument(e.to_string()))?;
        let county = County(Arc::new(Inner {
            store,
            clock,
            hub: Hub::new(),
            settings,
            grids: RwLock::new(HashMap::new()),
            live: DashMap::new(),
            policies,
            supervisor: RwLock::new(None),
            stop_ticker: Arc::new(AtomicBool::new(false)),
            board: RwLock::new(None),
            board_active: AtomicBool::new(false),
            bad_reviews: RwLock::new(None),
        }));
        for grid in county.store().grids()? {
            let id = grid.id;
            let (actor, _) = Actor::spawn(None, GridActor, (county.clone(), grid))
                .await
                .map_err(|e| DomainError::Unavailable(format!("grid {id} did not start: {e}")))?;
            county.0.grids.write().insert(id, actor);
        }
        let (supervisor, _) = Actor::spawn(None, SupervisorActor, county.clone())
            .await
            .map_err(|e| DomainError::Unavailable(format!("supervisor did not start: {e}")))?;
        if let Some(every) = county.0.settings.supervision_tick {
            spawn_ticker(
                supervisor.clone(),
                every,
                county.0.stop_ticker.clone(),
                |reply| SupervisorMsg::Tick(Some(reply)),
            );
        }
        *county.0.supervisor.write() = Some(supervisor);
        let (board, _) = Actor::spawn(None, BoardActor, county.clone())
            .await
            .map_err(|e| DomainError::Unavailable(format!("board did not start: {e}")))?;
        spawn_ticker(
            board.clone(),
            county.0.settings.board.interval,
            county.0.stop_ticker.clone(),
            |reply| BoardMsg::Tick(Some(reply)),
        );
        *county.0.board.write() = Some(board);
        tracing::info!(
            grids = county.0.grids.read().len(),
            pending_steps = county.store().pending_step_count(),
            "county started"
        );
        Ok(county)
    }

    /// Stops every actor and flushes storage.
    pub async fn shutdown(&self) -> DomainResult<()> {
        self.0.stop_ticker.store(true, Ordering::Release);
        let board = self.0.board.write().take();
        if let Some(board) = board {
            let _ = board
                .stop_and_wait(Some("shutdown".into()), Some(Duration::from_secs(5)))
                .await;
        }
        let supervisor = self.0.supervisor.write().take();
        if let Some(supervisor) = supervisor {
            let _ = supervisor
                .stop_and_wait(Some("shutdown".into()), Some(Duration::from_secs(5)))
                .await;
        }
        let grids: Vec<ActorRef<GridMsg>> = self.0.grids.write().drain().map(|(_, g)| g).collect();
        for grid in grids {
            // Children first (petitions, workers), so that none outlives the storage flush.
            grid.stop_children_and_wait(Some("shutdown".into()), Some(Duration::from_secs(5)))
                .await;
            let _ = grid
                .stop_and_wait(Some("shutdown".into()), Some(Duration::from_secs(5)))
                .await;
        }
        self.store().durable().await?;
        Ok(())
    }

    /// The database.
    pub fn store(&self) -> &Store {
        &self.0.store
    }

    /// The clock.
    pub fn clock(&self) -> &SharedClock {
        &self.0.clock
    }

    /// Live sessions.
    pub fn hub(&self) -> &Hub {
        &self.0.hub
    }

    /// Delivers a commit's feed events live and tells the boards that the petition changed.
    pub fn publish(&self, petition: &Petition, items: &[FeedItem]) {
        self.0.hub.deliver(items);
        if self.0.board_active.load(Ordering::Acquire)
            && let Some(board) = self.0.board.read().as_ref()
        {
            let _ = board.send_message(BoardMsg::Changed(Box::new(Facts::from(petition))));
        }
    }

    /// Hands every later bad review to the returned receiver (replacing an earlier one).
    pub fn bad_reviews(&self) -> tokio::sync::mpsc::UnboundedReceiver<BadReview> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        *self.0.bad_reviews.write() = Some(tx);
        rx
    }

    /// Whether someone takes bad reviews (then each is stored for them with its rating).
    pub(crate) fn wants_bad_reviews(&self) -> bool {
        self.0.bad_reviews.read().is_some()
    }

    /// Passes on a stored bad review (called by the petition actor after the commit).
    pub(crate) fn bad_review(&self, delivery_id: u64, petition: &Petition, rating: &Rating) {
        if let Some(tx) = self.0.bad_reviews.read().as_ref() {
            let _ = tx.send(BadReview {
                delivery_id,
                petition: petition.clone(),
                rating: rating.clone(),
            });
        }
    }

    /// Marks whether boards want petition changes (the board actor sets it once it loaded facts).
    pub(crate) fn board_active(&self, active: bool) {
        self.0.board_active.store(active, Ordering::Release);
    }

    fn board_ref(&self) -> DomainResult<ActorRef<BoardMsg>> {
        self.0
            .board
            .read()
            .clone()
            .ok_or_else(|| DomainError::Unavailable("board not running".into()))
    }

    async fn call_board<T: Send + 'static>(
        &self,
        build: impl FnOnce(ractor::RpcReplyPort<DomainResult<T>>) -> BoardMsg,
    ) -> DomainResult<T> {
        match self
            .board_ref()?
            .call(build, Some(self.0.settings.call_timeout))
            .await
        {
            Ok(CallResult::Success(v)) => v,
            _ => Err(DomainError::Unavailable("board unavailable".into())),
        }
    }

    /// Starts (or replaces) a session's live board: returns it whole, then sends its changes to
    /// `out`.
    pub async fn watch_board(
        &self,
        session: u64,
        who: &CallerInfo,
        request: WatchBoard,
        out: tokio::sync::mpsc::Sender<BoardUpdate>,
    ) -> DomainResult<Board> {
        let who = who.caller.clone();
        self.call_board(|reply| BoardMsg::Watch {
            session,
            who,
            request,
            out,
            reply,
        })
        .await
    }

    /// Stops a session's live board.
    pub fn unwatch_board(&self, session: u64) {
        if let Ok(board) = self.board_ref() {
            let _ = board.send_message(BoardMsg::Unwatch { session });
        }
    }

    /// Runs the board's periodic step now: pushes changed boards, lets unused facts go (the
    /// ticker does this on its own; tests with a manual clock call it directly).
    pub async fn tick_board_now(&self) -> DomainResult<()> {
        match self
            .board_ref()?
            .call(
                |reply| BoardMsg::Tick(Some(reply)),
                Some(self.0.settings.call_timeout),
            )
            .await
        {
            Ok(CallResult::Success(())) => Ok(()),
            _ => Err(DomainError::Unavailable("board unavailable".into())),
        }
    }

    /// How many petitions' facts the board holds now (they go some minutes after the last
    /// watcher: [`crate::board::UNLOAD_AFTER_MS`]).
    pub async fn board_facts_held(&self) -> DomainResult<usize> {
        self.call_board(BoardMsg::Held).await
    }

    /// The petitions behind one figure of a board (drill-down).
    pub async fn board_petitions(
        &self,
        who: &CallerInfo,
        request: GetBoardPetitions,
    ) -> DomainResult<PetitionPage> {
        let who = who.caller.clone();
        self.call_board(|reply| BoardMsg::Drill {
            who,
            request,
            reply,
        })
        .await
    }

    /// Limits.
    pub fn settings(&self) -> &DomainSettings {
        &self.0.settings
    }

    fn grid_ref(&self, grid_id: u64) -> DomainResult<ActorRef<GridMsg>> {
        self.0
            .grids
            .read()
            .get(&grid_id)
            .cloned()
            .ok_or_else(|| DomainError::NotFound(format!("grid {grid_id}")))
    }

    async fn call_grid<T: Send + 'static>(
        &self,
        grid_id: u64,
        build: impl FnOnce(ractor::RpcReplyPort<T>) -> GridMsg,
    ) -> DomainResult<T> {
        let grid = self.grid_ref(grid_id)?;
        match grid.call(build, Some(self.0.settings.call_timeout)).await {
            Ok(CallResult::Success(v)) => Ok(v),
            Ok(CallResult::Timeout) => Err(DomainError::Unavailable("grid timed out".into())),
            Ok(CallResult::SenderError) | Err(_) => {
                Err(DomainError::Unavailable("grid unavailable".into()))
            }
        }
    }

    /// The worker a petition sent to a grid goes to.
    pub async fn pick_assignee(&self, grid_id: u64) -> DomainResult<u64> {
        self.call_grid(grid_id, |reply| GridMsg::PickAssignee { exclude: 0, reply })
            .await?
    }

    /// Another worker of the grid than `current` to hand a petition to, if there is one.
    pub async fn pick_other_assignee(
        &self,
        grid_id: u64,
        current: u64,
    ) -> DomainResult<Option<u64>> {
        match self
            .call_grid(grid_id, |reply| GridMsg::PickAssignee {
                exclude: current,
                reply,
            })
            .await?
        {
            Ok(id) => Ok(Some(id)),
            Err(DomainError::Unavailable(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The deadline policy of a community.
    pub fn policy(&self, community_id: u64) -> Arc<Policy> {
        self.0
            .policies
            .communities
            .get(&community_id)
            .unwrap_or(&self.0.policies.default)
            .clone()
    }

    /// The caller supervision acts as (account 0).
    pub fn system_caller() -> CallerInfo {
        CallerInfo {
            caller: Caller {
                account_id: 0,
                role: Role::Admin,
                community_id: 0,
                grid_id: 0,
            },
            display_name: "督办系统".into(),
        }
    }

    /// Fires every supervision step due now and reports what happened (the ticker does this on
    /// its own; tests with a manual clock call it directly).
    pub async fn supervise_now(&self) -> DomainResult<TickReport> {
        let supervisor = self
            .0
            .supervisor
            .read()
            .clone()
            .ok_or_else(|| DomainError::Unavailable("supervisor not running".into()))?;
        match supervisor
            .call(
                |reply| SupervisorMsg::Tick(Some(reply)),
                Some(Duration::from_secs(600)),
            )
            .await
        {
            Ok(CallResult::Success(report)) => Ok(report),
            _ => Err(DomainError::Unavailable("supervisor unavailable".into())),
        }
    }

    /// Petition actors running now, over every grid.
    pub async fn petition_actor_count(&self) -> DomainResult<usize> {
        let ids: Vec<u64> = self.0.grids.read().keys().copied().collect();
        let mut total = 0;
        for id in ids {
            total += self.call_grid(id, GridMsg::PetitionActors).await?;
        }
        Ok(total)
    }

    /// Raises a petition: a resident for themselves, or staff on a resident's behalf.
    pub async fn submit(&self, who: &CallerInfo, req: SubmitPetition) -> DomainResult<Petition> {
        let category = Category::try_from(req.category)
            .map_err(|_| DomainError::InvalidArgument("unknown category".into()))?;
        let (resident, channel, filed_by) = if req.on_behalf_of == 0 {
            if who.caller.role != Role::Resident {
                return Err(DomainError::Forbidden(
                    "only residents raise petitions; staff set on_behalf_of".into(),
                ));
            }
            let me = self
                .store()
                .account(who.caller.account_id)?
                .ok_or_else(|| DomainError::NotFound("account".into()))?;
            (me, Channel::Online, None)
        } else {
            let resident = self
                .store()
                .account(req.on_behalf_of)?
                .filter(|a| a.role() == Role::Resident)
                .ok_or_else(|| {
                    DomainError::InvalidArgument(format!("{} is not a resident", req.on_behalf_of))
                })?;
            let c = &who.caller;
            let may = match c.role {
                Role::Worker | Role::GridHead => c.grid_id == resident.grid_id,
                Role::CommunitySupervisor => c.community_id == resident.community_id,
                Role::TownshipSupervisor | Role::Admin => true,
                _ => false,
            };
            if !may {
                return Err(DomainError::Forbidden(
                    "you may not file petitions for this resident".into(),
                ));
            }
            let channel = match Channel::try_from(req.channel) {
                Ok(Channel::Phone) => Channel::Phone,
                Ok(Channel::InPerson | Channel::Unspecified) => Channel::InPerson,
                _ => {
                    return Err(DomainError::InvalidArgument(
                        "staff file petitions IN_PERSON or by PHONE".into(),
                    ));
                }
            };
            (resident, channel, Some(c.account_id))
        };
        let grid_id = resident.grid_id;
        let new = NewPetition {
            category,
            title: req.title,
            text: req.text,
            worker_id: req.worker_id,
            client_msg_id: req.client_msg_id,
            resident,
            channel,
            filed_by,
        };
        let who = who.clone();
        self.call_grid(grid_id, |reply| GridMsg::Submit {
            caller: who,
            new: Box::new(new),
            reply,
        })
        .await?
    }

    /// Carries out a request on one petition through its actor.
    ///
    /// A petition whose actor is running is routed to its grid straight away, and the actor
    /// checks the caller's access on the petition it holds; any other is read from storage for
    /// its grid and the access check (the actor checks again once started).
    pub async fn petition(
        &self,
        petition_id: u64,
        who: &CallerInfo,
        request: PetitionRequest,
    ) -> DomainResult<PetitionReply> {
        let mut last = DomainError::Unavailable("no attempt".into());
        for _ in 0..3 {
            let live = self.0.live.get(&petition_id).map(|entry| entry.clone());
            let result = match live {
                Some(live) => Box::pin(self.call_live(petition_id, &live, who, &request)).await,
                None => {
                    let p = self
                        .store()
                        .petition(petition_id)?
                        .ok_or_else(|| DomainError::no_petition(petition_id))?;
                    if !access::can_view(&p, &who.caller) {
                        return Err(DomainError::no_petition(petition_id));
                    }
                    let (who, request) = (who.clone(), request.clone());
                    Box::pin(self.call_grid(p.grid_id, |reply| GridMsg::Route {
                        petition_id,
                        msg: PetitionMsg::Call(PetitionCall {
                            caller: who,
                            request,
                            reply,
                        }),
                    }))
                    .await
                    .and_then(|r| r)
                }
            };
            match result {
                Ok(reply) => return Ok(reply),
                Err(DomainError::Unavailable(m)) => {
                    // The actor moved grids, closed, stopped or crashed mid-request: look again,
                    // in storage.
                    last = DomainError::Unavailable(m);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last)
    }

    /// Sends a request straight to a running petition actor. An actor that stopped meanwhile
    /// (idle, closed, moved) drops the request unhandled; the answer is then `Unavailable` and the
    /// entry is forgotten, so that the caller's next attempt goes through storage and the grid.
    async fn call_live(
        &self,
        petition_id: u64,
        live: &LivePetition,
        who: &CallerInfo,
        request: &PetitionRequest,
    ) -> DomainResult<PetitionReply> {
        let (who, request) = (who.clone(), request.clone());
        live.sent.fetch_add(1, Ordering::AcqRel);
        let result = live
            .actor
            .call(
                |reply| {
                    PetitionMsg::Call(PetitionCall {
                        caller: who,
                        request,
                        reply,
                    })
                },
                Some(self.0.settings.call_timeout),
            )
            .await;
        let failed = match result {
            Ok(CallResult::Success(Err(DomainError::Unavailable(m)))) => m,
            Ok(CallResult::Success(reply)) => return reply,
            Ok(CallResult::Timeout) => "petition timed out".into(),
            Ok(CallResult::SenderError) => "petition actor stopped".into(),
            Err(e) => {
                // Never delivered: the grid must not wait for it before it lets the actor stop.
                live.sent.fetch_sub(1, Ordering::AcqRel);
                e.to_string()
            }
        };
        let id = live.actor.get_id();
        self.0
            .live
            .remove_if(&petition_id, |_, l| l.actor.get_id() == id);
        Err(DomainError::Unavailable(failed))
    }

    /// Records that a petition's actor runs (the actor calls this as it starts), with the count
    /// of messages sent to it that it shares with its grid.
    pub(crate) fn petition_live(
        &self,
        petition_id: u64,
        actor: ActorRef<PetitionMsg>,
        sent: Arc<AtomicU64>,
    ) {
        self.0
            .live
            .insert(petition_id, LivePetition { actor, sent });
    }

    /// Forgets a petition's actor, if it is still the one recorded (called as it stops, or when
    /// its petition moves to another grid).
    pub(crate) fn petition_gone(&self, petition_id: u64, actor: ractor::ActorId) {
        self.0
            .live
            .remove_if(&petition_id, |_, l| l.actor.get_id() == actor);
    }

    /// Makes a petition's actor panic (for tests of supervision; only with the
    /// `fault-injection` feature).
    #[cfg(feature = "fault-injection")]
    #[doc(hidden)]
    pub fn crash_petition(&self, petition_id: u64) -> DomainResult<()> {
        let p = self
            .store()
            .petition(petition_id)?
            .ok_or_else(|| DomainError::no_petition(petition_id))?;
        self.grid_ref(p.grid_id)?
            .send_message(GridMsg::Route {
                petition_id,
                msg: PetitionMsg::Crash,
            })
            .map_err(|e| DomainError::Unavailable(e.to_string()))
    }

    /// The petitions the caller takes part in, newest first.
    pub fn list_petitions(
        &self,
        who: &CallerInfo,
        states: &[i32],
        before_id: u64,
        limit: u32,
    ) -> DomainResult<PetitionPage> {
        let limit = page_size(limit, PAGE_DEFAULT, PAGE_MAX);
        let petitions =
            self.store()
                .petitions_of(who.caller.account_id, before_id, limit, |p| {
                    // A petition that moved out of the caller's reach is no longer theirs to list.
                    (states.is_empty() || states.contains(&p.state))
                        && access::can_view(p, &who.caller)
                })?;
        let next_before_id = if petitions.len() == limit {
            petitions.last().map_or(0, |p| p.id)
        } else {
            0
        };
        Ok(PetitionPage {
            petitions,
            next_before_id,
        })
    }

    /// A page of a petition's timeline.
    pub fn history(
        &self,
        who: &CallerInfo,
        petition_id: u64,
        after_seq: u64,
        limit: u32,
    ) -> DomainResult<HistoryPage> {
        let p = self
            .store()
            .petition(petition_id)?
            .filter(|p| access::can_view(p, &who.caller))
            .ok_or_else(|| DomainError::no_petition(petition_id))?;
        let limit = page_size(limit, HISTORY_DEFAULT, HISTORY_MAX);
        let entries = self.store().entries(p.id, after_seq, limit)?;
        let next_after_seq = match entries.last() {
            Some(e) if e.seq < p.last_seq => e.seq,
            _ => 0,
        };
        Ok(HistoryPage {
            entries,
            next_after_seq,
        })
    }

    /// A worker's open petitions, most urgent first: those still waiting for a response, oldest
    /// first, then the rest by how long they have waited since their last change.
    pub fn inbox(&self, who: &CallerInfo) -> DomainResult<PetitionPage> {
        if !matches!(who.caller.role, Role::Worker | Role::GridHead) {
            return Err(DomainError::Forbidden(
                "only grid staff have an inbox".into(),
            ));
        }
        let mut petitions = self.store().assigned_to(who.caller.account_id)?;
        petitions.sort_by_key(|p| {
            let waiting = matches!(
                p.state(),
                PetitionState::Submitted | PetitionState::Transferred
            );
            (
                !waiting,
                if waiting {
                    p.created_at_ms
                } else {
                    p.updated_at_ms
                },
                p.id,
            )
        });
        Ok(PetitionPage {
            petitions,
            next_before_id: 0,
        })
    }

    /// A grid with its community and its workers' live status.
    pub async fn grid_info(&self, grid_id: u64) -> DomainResult<GridInfo> {
        let grid = self
            .store()
            .grid(grid_id)?
            .ok_or_else(|| DomainError::NotFound(format!("grid {grid_id}")))?;
        let community = self.store().community(grid.community_id)?;
        let workers: Vec<WorkerInfo> = self.call_grid(grid_id, GridMsg::Workers).await?;
        Ok(GridInfo {
            grid: Some(grid),
            community,
            workers,
        })
    }

    /// The caller's own grid.
    pub async fn my_grid(&self, who: &CallerInfo) -> DomainResult<GridInfo> {
        if who.caller.grid_id == 0 {
            return Err(DomainError::NotFound(
                "this account belongs to no grid".into(),
            ));
        }
        self.grid_info(who.caller.grid_id).await
    }

    /// The grid covering an address.
    pub async fn lookup_address(&self, address: &str) -> DomainResult<GridInfo> {
        let grid_id = self
            .store()
            .grid_of_address(address)?
            .ok_or_else(|| DomainError::NotFound(format!("no grid covers {address:?}")))?;
        self.grid_info(grid_id).await
    }

    /// A worker goes on or off duty.
    pub async fn set_on_duty(&self, who: &CallerInfo, on_duty: bool) -> DomainResult<()> {
        if !matches!(who.caller.role, Role::Worker | Role::GridHead) {
            return Err(DomainError::Forbidden("only grid staff have duty".into()));
        }
        let worker_id = who.caller.account_id;
        self.call_grid(who.caller.grid_id, |reply| GridMsg::Worker {
            worker_id,
            msg: WorkerMsg::SetOnDuty { on_duty, reply },
        })
        .await?
    }

    /// Tells a worker's actor that one of their devices connected or disconnected.
    pub fn device_presence(&self, account: &AccountRecord, connected: bool) {
        if !account.is_grid_staff() {
            return;
        }
        if let Ok(grid) = self.grid_ref(account.grid_id) {
            let msg = if connected {
                WorkerMsg::Connected
            } else {
                WorkerMsg::Disconnected
            };
            let _ = grid.send_message(GridMsg::Worker {
                worker_id: account.id,
                msg,
            });
        }
    }
}
