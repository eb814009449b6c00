//! The board actor: keeps the facts of the petitions that watched boards need, and pushes each
//! watching session its board's changes.
//!
//! Facts are loaded from storage per community when a board first needs them (the open petitions,
//! and those raised in the period), then kept up to date by the petition commits themselves
//! ([`County::publish`] forwards each committed petition while any board is loaded). Every
//! `interval` the actor recomputes the boards whose facts changed (and every board at least every
//! few seconds, since "overdue" moves with time alone) and sends each session the rows that changed.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use lianxin_protocol::v1::{
    Board, BoardFigure, BoardLevel, BoardRange, BoardUpdate, GetBoardPetitions, PetitionPage, Role,
    WatchBoard,
};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::sync::mpsc;

use crate::county::County;
use crate::domain::access::Caller;
use crate::domain::board::{self, Directory, Facts, Period, StaffEntry};
use crate::error::{DomainError, DomainResult};

/// Longest time a watched board goes without being recomputed, for the figures that move with
/// time alone (overdue, rolling periods).
const REFRESH_AT_LEAST: Duration = Duration::from_secs(5);

/// Messages of the board actor.
#[derive(Debug)]
pub enum BoardMsg {
    /// Start (or replace) a session's board; answers with the full board.
    Watch {
        /// The watching session (one board each).
        session: u64,
        /// Who watches.
        who: Caller,
        /// Which board.
        request: WatchBoard,
        /// Where the session takes its updates.
        out: mpsc::Sender<BoardUpdate>,
        /// The first, full board.
        reply: RpcReplyPort<DomainResult<Board>>,
    },
    /// Stop a session's board.
    Unwatch {
        /// The session.
        session: u64,
    },
    /// The petitions behind a figure.
    Drill {
        /// Who asks.
        who: Caller,
        /// Which figure of which row.
        request: GetBoardPetitions,
        /// The page of petitions.
        reply: RpcReplyPort<DomainResult<PetitionPage>>,
    },
    /// A petition changed (sent by [`County::publish`]).
    Changed(Box<Facts>),
    /// Recompute changed boards and push their updates; answers when done.
    Tick(Option<RpcReplyPort<()>>),
    /// How many petitions' facts the board holds now.
    Held(RpcReplyPort<DomainResult<usize>>),
}

/// How long the board keeps its facts once nobody watches or drills down (county clock): then it
/// lets them go, and the next board loads what it needs again from storage.
pub const UNLOAD_AFTER_MS: i64 = 10 * 60 * 1000;

/// One watching session.
#[derive(Debug)]
struct Watcher {
    /// Community id, or 0 for the township.
    scope: u64,
    /// The request (range and custom bounds).
    request: WatchBoard,
    /// The session's update queue.
    out: mpsc::Sender<BoardUpdate>,
    /// The board last sent (to find what changed); None: send everything next time.
    last: Option<Board>,
    /// When it was last recomputed.
    computed: Instant,
}

/// State of the board actor.
#[derive(Debug)]
pub struct BoardState {
    county: County,
    /// Facts by petition id.
    facts: HashMap<u64, Facts>,
    /// Community id → the earliest creation time from which its petitions are all in `facts`
    /// (its open petitions always are).
    loaded: HashMap<u64, i64>,
    /// Names and structure of the county.
    directory: Directory,
    /// Watching sessions.
    watchers: HashMap<u64, Watcher>,
    /// Facts changed since the last tick.
    dirty: bool,
    /// When the facts were last needed (a watch, a drill-down, a refresh), county clock.
    used_at_ms: i64,
}

/// The board actor (behaviour only).
#[derive(Debug, Default)]
pub struct BoardActor;

impl Actor for BoardActor {
    type Msg = BoardMsg;
    type State = BoardState;
    type Arguments = County;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        county: County,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(BoardState {
            county,
            facts: HashMap::new(),
            loaded: HashMap::new(),
            directory: Directory::default(),
            watchers: HashMap::new(),
            dirty: false,
            used_at_ms: 0,
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: BoardMsg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            BoardMsg::Watch {
                session,
                who,
                request,
                out,
                reply,
            } => {
                let span = tracing::info_span!("board", session, community = request.community_id);
                let _enter = span.enter();
                let _ = reply.send(state.watch(session, &who, request, out));
            }
            BoardMsg::Unwatch { session } => {
                state.watchers.remove(&session);
            }
            BoardMsg::Drill {
                who,
                request,
                reply,
            } => {
                let _ = reply.send(state.drill(&who, &request));
            }
            BoardMsg::Changed(facts) => state.changed(*facts),
            BoardMsg::Tick(reply) => {
                state.tick();
                if let Some(reply) = reply {
                    let _ = reply.send(());
                }
            }
            BoardMsg::Held(reply) => {
                let _ = reply.send(Ok(state.facts.len()));
            }
        }
        Ok(())
    }
}

/// The scope a caller may watch for the community they ask for (0: the township).
fn scope_for(who: &Caller, community_id: u64) -> DomainResult<u64> {
    match who.role {
        Role::TownshipSupervisor | Role::Admin => Ok(community_id),
        Role::CommunitySupervisor if community_id == 0 || community_id == who.community_id => {
            Ok(who.community_id)
        }
        Role::CommunitySupervisor => Err(DomainError::Forbidden(
            "a community supervisor watches only their own community".into(),
        )),
        _ => Err(DomainError::Forbidden(
            "only supervisors watch response boards".into(),
        )),
    }
}

impl BoardState {
    fn now(&self) -> i64 {
        self.county.clock().now_ms()
    }

    fn period(&self, range: i32, from_ms: i64, to_ms: i64) -> DomainResult<Period> {
        let range = BoardRange::try_from(range)
            .map_err(|_| DomainError::InvalidArgument("unknown board range".into()))?;
        Period::of(
            range,
            from_ms,
            to_ms,
            self.now(),
            self.county.settings().board.utc_offset_minutes,
        )
        .map_err(|e| DomainError::InvalidArgument(e.to_string()))
    }

    /// Checks the scope exists and makes sure the facts of the period are loaded. The directory
    /// (names, staff) is re-read only when asked: on a watch or a drill-down, not on every tick.
    fn prepare(&mut self, scope: u64, period: &Period, reread_directory: bool) -> DomainResult<()> {
        if reread_directory || self.directory.communities.is_empty() {
            self.refresh_directory()?;
        }
        if scope != 0 && !self.directory.communities.contains_key(&scope) {
            return Err(DomainError::NotFound(format!("community {scope}")));
        }
        let communities: Vec<u64> = if scope == 0 {
            self.directory.communities.keys().copied().collect()
        } else {
            vec![scope]
        };
        let store = self.county.store().clone();
        for c in communities {
            let horizon = self.loaded.get(&c).copied();
            if horizon.is_some_and(|h| h <= period.from_ms) {
                continue;
            }
            if horizon.is_none() {
                for p in store.open_petitions(c)? {
                    self.facts.insert(p.id, Facts::from(&p));
                }
            }
            let until = horizon.unwrap_or(i64::MAX);
            for p in store.petitions_created(c, period.from_ms, until)? {
                self.facts.insert(p.id, Facts::from(&p));
            }
            self.loaded.insert(c, period.from_ms);
        }
        self.county.board_active(true);
        self.used_at_ms = self.now();
        metrics::gauge!("lianxin_board_facts").set(self.facts.len() as f64);
        Ok(())
    }

    /// Lets the facts go once nobody has needed them for [`UNLOAD_AFTER_MS`].
    fn unload_if_unused(&mut self) {
        if !self.watchers.is_empty()
            || self.facts.is_empty()
            || self.now().saturating_sub(self.used_at_ms) < UNLOAD_AFTER_MS
        {
            return;
        }
        tracing::info!(
            facts = self.facts.len(),
            "board facts unloaded: nobody watches"
        );
        // Changes stop coming first, then what they would have updated goes.
        self.county.board_active(false);
        self.facts = HashMap::new();
        self.loaded.clear();
        self.dirty = false;
        metrics::gauge!("lianxin_board_facts").set(0.0);
    }

    fn refresh_directory(&mut self) -> DomainResult<()> {
        let store = self.county.store();
        let mut d = Directory::default();
        for c in store.communities()? {
            d.communities.insert(c.id, c.name);
        }
        for g in store.grids()? {
            for staff in store.grid_staff(g.id)? {
                d.staff.insert(
                    staff.id,
                    StaffEntry {
                        name: staff.display_name.clone(),
                        role: staff.role(),
                        community_id: staff.community_id,
                        grid_id: staff.grid_id,
                    },
                );
            }
            d.grids.insert(g.id, (g.community_id, g.name));
        }
        self.directory = d;
        Ok(())
    }

    /// The full board of a scope for a period, with its overdue petitions.
    fn board(&self, scope: u64, period: &Period, range: i32) -> DomainResult<Board> {
        let computed = board::compute(
            self.facts.values(),
            &self.directory,
            scope,
            self.now(),
            period,
        );
        let mut b = computed.board;
        b.range = range;
        let store = self.county.store();
        for id in computed.overdue_ids {
            if let Some(p) = store.petition(id)? {
                b.overdue.push(p);
            }
        }
        Ok(b)
    }

    fn watch(
        &mut self,
        session: u64,
        who: &Caller,
        request: WatchBoard,
        out: mpsc::Sender<BoardUpdate>,
    ) -> DomainResult<Board> {
        let scope = scope_for(who, request.community_id)?;
        let period = self.period(request.range, request.from_ms, request.to_ms)?;
        self.prepare(scope, &period, true)?;
        let board = self.board(scope, &period, request.range)?;
        self.watchers.insert(
            session,
            Watcher {
                scope,
                request,
                out,
                last: Some(board.clone()),
                computed: Instant::now(),
            },
        );
        Ok(board)
    }

    fn drill(&mut self, who: &Caller, r: &GetBoardPetitions) -> DomainResult<PetitionPage> {
        let scope = scope_for(who, r.community_id)?;
        let period = self.period(r.range, r.from_ms, r.to_ms)?;
        let figure = BoardFigure::try_from(r.figure)
            .ok()
            .filter(|f| *f != BoardFigure::Unspecified)
            .ok_or_else(|| DomainError::InvalidArgument("choose a board figure".into()))?;
        let level = BoardLevel::try_from(r.level)
            .ok()
            .filter(|l| *l != BoardLevel::Unspecified)
            .ok_or_else(|| DomainError::InvalidArgument("choose a board level".into()))?;
        self.prepare(scope, &period, true)?;
        let now = self.now();
        let before = if r.before_id == 0 {
            u64::MAX
        } else {
            r.before_id
        };
        let mut ids: Vec<u64> = self
            .facts
            .values()
            .filter(|f| scope == 0 || f.community_id == scope)
            .filter(|f| f.id < before && f.behind(figure, level, r.id, now, &period))
            .map(|f| f.id)
            .collect();
        ids.sort_unstable_by(|a, b| b.cmp(a));
        let limit = match r.limit {
            0 => 20,
            n => (n as usize).min(100),
        };
        let more = ids.len() > limit;
        ids.truncate(limit);
        let store = self.county.store();
        let mut petitions = Vec::with_capacity(ids.len());
        for id in &ids {
            if let Some(p) = store.petition(*id)? {
                petitions.push(p);
            }
        }
        Ok(PetitionPage {
            next_before_id: if more {
                ids.last().copied().unwrap_or(0)
            } else {
                0
            },
            petitions,
        })
    }

    fn changed(&mut self, facts: Facts) {
        let known = self.facts.contains_key(&facts.id);
        if (known || self.loaded.contains_key(&facts.community_id))
            && self.facts.get(&facts.id) != Some(&facts)
        {
            self.facts.insert(facts.id, facts);
            self.dirty = true;
        }
    }

    fn tick(&mut self) {
        if self.watchers.is_empty() {
            self.unload_if_unused();
            return;
        }
        let dirty = std::mem::take(&mut self.dirty);
        let sessions: Vec<u64> = self.watchers.keys().copied().collect();
        for session in sessions {
            if let Err(e) = self.refresh(session, dirty) {
                tracing::warn!(session, error = %e, "board refresh failed");
            }
        }
    }

    /// Recomputes one session's board if needed and sends what changed.
    fn refresh(&mut self, session: u64, dirty: bool) -> DomainResult<()> {
        let Some(w) = self.watchers.get(&session) else {
            return Ok(());
        };
        if !dirty && w.last.is_some() && w.computed.elapsed() < REFRESH_AT_LEAST {
            return Ok(());
        }
        let (scope, request) = (w.scope, w.request);
        let period = self.period(request.range, request.from_ms, request.to_ms)?;
        self.prepare(scope, &period, false)?;
        let next = self.board(scope, &period, request.range)?;
        let Some(w) = self.watchers.get_mut(&session) else {
            return Ok(());
        };
        w.computed = Instant::now();
        let update = match &w.last {
            Some(last) if same_figures(last, &next) => return Ok(()),
            Some(last) => Board {
                communities: board::changed_rows(&last.communities, &next.communities),
                grids: board::changed_rows(&last.grids, &next.grids),
                workers: board::changed_rows(&last.workers, &next.workers),
                ..next.clone()
            },
            None => next.clone(),
        };
        match w.out.try_send(BoardUpdate {
            board: Some(update),
        }) {
            Ok(()) => {
                w.last = Some(next);
                metrics::counter!("lianxin_board_updates_total").increment(1);
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                // The session is behind: it gets the whole board once it has room again.
                w.last = None;
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.watchers.remove(&session);
            }
        }
        Ok(())
    }
}

/// Whether two boards show the same figures (ignoring when they were computed).
fn same_figures(a: &Board, b: &Board) -> bool {
    a.total == b.total
        && a.communities == b.communities
        && a.grids == b.grids
        && a.workers == b.workers
        && a.overdue == b.overdue
        && a.bucket_counts == b.bucket_counts
}
