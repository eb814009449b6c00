//! The response board's figures, computed from petitions by plain functions. `docs/metrics.md`
//! defines every figure; the predicates here are those definitions, and both the board's counts
//! and its drill-down lists come from them, so a figure and the petitions behind it always agree.

use std::collections::{BTreeMap, HashMap};

use lianxin_protocol::v1::{
    Board, BoardFigure, BoardLevel, BoardRange, BoardRow, Petition, PetitionState, RatingLevel,
    Role,
};

/// Upper bounds of the first-response-time buckets of the distribution chart, in ms.
pub const BUCKET_BOUNDS_MS: [i64; 7] = [
    15 * 60_000,
    3_600_000,
    2 * 3_600_000,
    4 * 3_600_000,
    8 * 3_600_000,
    12 * 3_600_000,
    24 * 3_600_000,
];

/// How many overdue petitions a board lists.
pub const OVERDUE_LIST_MAX: usize = 50;

const DAY_MS: i64 = 24 * 3_600_000;

/// The facts about one petition that the board needs: a compact copy of the petition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    /// Petition id.
    pub id: u64,
    /// Community it is in now.
    pub community_id: u64,
    /// Grid it is in now.
    pub grid_id: u64,
    /// Worker responsible now.
    pub assignee_id: u64,
    /// State now.
    pub state: PetitionState,
    /// When it was raised.
    pub created_at_ms: i64,
    /// First response by an assigned worker (0: none yet).
    pub first_response_at_ms: i64,
    /// Response deadline (0: none).
    pub response_due_at_ms: i64,
    /// Completion deadline (0: none).
    pub completion_due_at_ms: i64,
    /// When it was resolved (0: not yet).
    pub resolved_at_ms: i64,
    /// When it was closed or withdrawn (0: still open).
    pub closed_at_ms: i64,
    /// The worker each reminder concerned.
    pub reminded: Box<[u64]>,
    /// The worker each supervision escalation went over.
    pub escalated: Box<[u64]>,
    /// The ratings of its rounds.
    pub ratings: Box<[RatingFact]>,
    /// Whether the resident reopened it at least once.
    pub reopened: bool,
    /// Closed without a rating of its last round.
    pub unrated: bool,
}

/// One rating, as the board counts it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RatingFact {
    /// How satisfied.
    pub level: RatingLevel,
    /// Recorded by staff from a telephone call.
    pub by_phone: bool,
    /// The staff who handled the rated round.
    pub handlers: Box<[u64]>,
}

impl From<&Petition> for Facts {
    fn from(p: &Petition) -> Self {
        Facts {
            id: p.id,
            community_id: p.community_id,
            grid_id: p.grid_id,
            assignee_id: p.assignee_id,
            state: p.state(),
            created_at_ms: p.created_at_ms,
            first_response_at_ms: p.first_response_at_ms,
            response_due_at_ms: p.response_due_at_ms,
            completion_due_at_ms: p.completion_due_at_ms,
            resolved_at_ms: p.resolved_at_ms,
            closed_at_ms: p.closed_at_ms,
            reminded: p.reminded_worker_ids.clone().into_boxed_slice(),
            escalated: p.escalated_worker_ids.clone().into_boxed_slice(),
            ratings: p
                .ratings
                .iter()
                .map(|r| RatingFact {
                    level: r.level(),
                    by_phone: r.recorded_by != 0,
                    handlers: r.handler_ids.clone().into_boxed_slice(),
                })
                .collect(),
            reopened: p.reopen_count > 0,
            unrated: p.state() == PetitionState::Closed
                && !p.ratings.iter().any(|r| r.round == p.round.max(1)),
        }
    }
}

/// The period the period figures cover: `[from_ms, to_ms)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Period {
    /// First instant inside.
    pub from_ms: i64,
    /// First instant after.
    pub to_ms: i64,
}

/// Why a period cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeriodError {
    /// No range was named.
    #[error("choose a board range")]
    NoRange,
    /// A custom range that ends before it starts.
    #[error("a custom range needs from_ms < to_ms")]
    Empty,
}

impl Period {
    /// Whether an instant lies in the period.
    pub fn contains(&self, at_ms: i64) -> bool {
        self.from_ms <= at_ms && at_ms < self.to_ms
    }

    /// The period a range means at `now_ms`, with "today" starting at midnight in the zone
    /// `utc_offset_minutes` east of UTC. Rolling ranges end just after `now_ms`.
    pub fn of(
        range: BoardRange,
        from_ms: i64,
        to_ms: i64,
        now_ms: i64,
        utc_offset_minutes: i32,
    ) -> Result<Period, PeriodError> {
        let end = now_ms.saturating_add(1);
        match range {
            BoardRange::Unspecified => Err(PeriodError::NoRange),
            BoardRange::Today => {
                let offset = i64::from(utc_offset_minutes) * 60_000;
                let local = now_ms + offset;
                let midnight = local - local.rem_euclid(DAY_MS) - offset;
                Ok(Period {
                    from_ms: midnight,
                    to_ms: end,
                })
            }
            BoardRange::Last7Days => Ok(Period {
                from_ms: now_ms - 7 * DAY_MS,
                to_ms: end,
            }),
            BoardRange::Last30Days => Ok(Period {
                from_ms: now_ms - 30 * DAY_MS,
                to_ms: end,
            }),
            BoardRange::Custom if from_ms < to_ms => Ok(Period { from_ms, to_ms }),
            BoardRange::Custom => Err(PeriodError::Empty),
        }
    }
}

fn is_open(state: PetitionState) -> bool {
    !matches!(state, PetitionState::Closed | PetitionState::Withdrawn)
}

impl Facts {
    /// Received in the period: raised within it.
    pub fn received(&self, period: &Period) -> bool {
        period.contains(self.created_at_ms)
    }

    /// Open now: neither closed nor withdrawn.
    pub fn open(&self) -> bool {
        is_open(self.state)
    }

    /// Overdue for its response now: still unanswered and its response deadline has passed.
    pub fn overdue_response(&self, now_ms: i64) -> bool {
        self.first_response_at_ms == 0
            && matches!(
                self.state,
                PetitionState::Submitted | PetitionState::Transferred
            )
            && self.response_due_at_ms != 0
            && self.response_due_at_ms <= now_ms
    }

    /// Overdue for its completion now: not yet resolved and its completion deadline has passed.
    pub fn overdue_completion(&self, now_ms: i64) -> bool {
        matches!(
            self.state,
            PetitionState::Submitted
                | PetitionState::Responded
                | PetitionState::Transferred
                | PetitionState::Escalated
        ) && self.completion_due_at_ms != 0
            && self.completion_due_at_ms <= now_ms
    }

    /// Answered in time: a first response at or before the response deadline.
    pub fn responded_on_time(&self) -> bool {
        self.first_response_at_ms != 0
            && (self.response_due_at_ms == 0
                || self.first_response_at_ms <= self.response_due_at_ms)
    }

    /// Whether it is settled yet if the petition was answered in time: it has a response, or its
    /// response deadline passed while it was open.
    pub fn response_decided(&self, now_ms: i64) -> bool {
        if self.first_response_at_ms != 0 {
            return true;
        }
        let open_until = if self.closed_at_ms != 0 {
            self.closed_at_ms
        } else {
            now_ms
        };
        self.response_due_at_ms != 0 && self.response_due_at_ms <= open_until
    }

    /// The first-response time, when there is a first response.
    pub fn first_response_ms(&self) -> Option<i64> {
        (self.first_response_at_ms != 0).then(|| self.first_response_at_ms - self.created_at_ms)
    }

    /// How many supervision steps of a kind concern a row.
    fn steps_for(list: &[u64], level: BoardLevel, id: u64) -> usize {
        match level {
            BoardLevel::Worker => list.iter().filter(|w| **w == id).count(),
            _ => list.len(),
        }
    }

    /// Whether the petition belongs to a row: its assignee, grid or community now (any for the
    /// total).
    pub fn in_row(&self, level: BoardLevel, id: u64) -> bool {
        match level {
            BoardLevel::Worker => self.assignee_id == id,
            BoardLevel::Grid => self.grid_id == id,
            BoardLevel::Community => self.community_id == id,
            BoardLevel::Total | BoardLevel::Unspecified => true,
        }
    }

    /// Whether the petition is behind a figure of a row (the drill-down).
    pub fn behind(
        &self,
        figure: BoardFigure,
        level: BoardLevel,
        id: u64,
        now_ms: i64,
        period: &Period,
    ) -> bool {
        // Reminders and escalations follow the worker they concerned, not the assignee.
        match figure {
            BoardFigure::Reminded => {
                return self.received(period)
                    && Self::steps_for(&self.reminded, level, id) > 0
                    && (level == BoardLevel::Worker || self.in_row(level, id));
            }
            BoardFigure::Escalated => {
                return self.received(period)
                    && Self::steps_for(&self.escalated, level, id) > 0
                    && (level == BoardLevel::Worker || self.in_row(level, id));
            }
            _ => {}
        }
        if !self.in_row(level, id) {
            return false;
        }
        let received = self.received(period);
        match figure {
            BoardFigure::Unspecified
            | BoardFigure::Reminded
            | BoardFigure::Escalated
            | BoardFigure::Rated
            | BoardFigure::Dissatisfied => false,
            BoardFigure::Unrated => received && self.unrated,
            BoardFigure::Reopened => received && self.reopened,
            BoardFigure::Received => received,
            BoardFigure::Open => self.open(),
            BoardFigure::OverdueResponse => self.overdue_response(now_ms),
            BoardFigure::OverdueCompletion => self.overdue_completion(now_ms),
            BoardFigure::ResponseDecided => received && self.response_decided(now_ms),
            BoardFigure::RespondedOnTime => {
                received && self.response_decided(now_ms) && self.responded_on_time()
            }
            BoardFigure::RespondedLate => {
                received && self.response_decided(now_ms) && !self.responded_on_time()
            }
            BoardFigure::Resolved => received && self.resolved_at_ms != 0,
            BoardFigure::Withdrawn => received && self.state == PetitionState::Withdrawn,
            BoardFigure::Responded => received && self.first_response_at_ms != 0,
        }
    }
}

/// A worker or grid head as the board names them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaffEntry {
    /// Display name.
    pub name: String,
    /// Worker or grid head.
    pub role: Role,
    /// Their community.
    pub community_id: u64,
    /// Their grid.
    pub grid_id: u64,
}

/// Names and structure of the board's scope: its communities, grids and staff.
#[derive(Debug, Clone, Default)]
pub struct Directory {
    /// Community id → name.
    pub communities: BTreeMap<u64, String>,
    /// Grid id → (community id, name).
    pub grids: BTreeMap<u64, (u64, String)>,
    /// Account id → the worker.
    pub staff: BTreeMap<u64, StaffEntry>,
}

/// Running sums of one row.
#[derive(Debug, Default, Clone)]
struct Acc {
    row: BoardRow,
    times: Vec<i64>,
}

impl Acc {
    fn add(&mut self, f: &Facts, now_ms: i64, period: &Period) {
        let r = &mut self.row;
        if f.open() {
            r.open += 1;
        }
        r.overdue_response += u32::from(f.overdue_response(now_ms));
        r.overdue_completion += u32::from(f.overdue_completion(now_ms));
        if !f.received(period) {
            return;
        }
        r.received += 1;
        if f.response_decided(now_ms) {
            r.response_decided += 1;
            r.responded_on_time += u32::from(f.responded_on_time());
        }
        r.resolved += u32::from(f.resolved_at_ms != 0);
        r.withdrawn += u32::from(f.state == PetitionState::Withdrawn);
        if let Some(t) = f.first_response_ms() {
            self.times.push(t);
        }
        r.unrated += u32::from(f.unrated);
        r.reopened += u32::from(f.reopened);
    }

    /// Counts one rating in the row.
    fn rate(&mut self, rating: &RatingFact) {
        let r = &mut self.row;
        r.rated += 1;
        r.rated_by_phone += u32::from(rating.by_phone);
        match rating.level {
            RatingLevel::Satisfied => r.satisfied += 1,
            RatingLevel::BasicallySatisfied => r.basically_satisfied += 1,
            RatingLevel::Dissatisfied => r.dissatisfied += 1,
            RatingLevel::Unspecified => {}
        }
    }

    fn finish(mut self) -> BoardRow {
        let r = &mut self.row;
        r.response_rate = (r.response_decided > 0)
            .then(|| f64::from(r.responded_on_time) / f64::from(r.response_decided));
        let resolvable = r.received - r.withdrawn;
        r.resolution_rate = (resolvable > 0).then(|| f64::from(r.resolved) / f64::from(resolvable));
        r.satisfaction_rate = (r.rated > 0)
            .then(|| f64::from(r.satisfied + r.basically_satisfied) / f64::from(r.rated));
        r.reopened_share = (r.received > 0).then(|| f64::from(r.reopened) / f64::from(r.received));
        self.times.sort_unstable();
        let n = self.times.len();
        r.responded = n as u32;
        if n > 0 {
            let sum: i128 = self.times.iter().map(|t| i128::from(*t)).sum();
            r.first_response_mean_ms = (sum / n as i128) as i64;
            r.first_response_median_ms = nearest_rank(&self.times, 50);
            r.first_response_p90_ms = nearest_rank(&self.times, 90);
        }
        self.row
    }
}

/// The nearest-rank percentile of sorted, non-empty values: the value at rank ⌈p·n/100⌉.
pub fn nearest_rank(sorted: &[i64], p: usize) -> i64 {
    let n = sorted.len();
    let rank = (p * n).div_ceil(100).max(1);
    sorted.get(rank - 1).copied().unwrap_or_default()
}

/// The bucket of the distribution chart a first-response time falls in.
pub fn bucket_of(ms: i64) -> usize {
    BUCKET_BOUNDS_MS
        .iter()
        .position(|bound| ms < *bound)
        .unwrap_or(BUCKET_BOUNDS_MS.len())
}

/// Everything about a scope at one instant: the rows and which petitions are overdue.
#[derive(Debug, Clone)]
pub struct Computed {
    /// The board, without the overdue petitions themselves.
    pub board: Board,
    /// The overdue petitions to list, oldest first.
    pub overdue_ids: Vec<u64>,
}

/// Computes the board of a scope (community id, or 0 for all) from the facts of its petitions.
/// Facts outside the scope are ignored.
pub fn compute<'a>(
    facts: impl IntoIterator<Item = &'a Facts>,
    directory: &Directory,
    scope: u64,
    now_ms: i64,
    period: &Period,
) -> Computed {
    let in_scope = |community: u64| scope == 0 || community == scope;
    let mut total = Acc::default();
    let mut communities: BTreeMap<u64, Acc> = BTreeMap::new();
    let mut grids: BTreeMap<u64, Acc> = BTreeMap::new();
    let mut workers: BTreeMap<u64, Acc> = BTreeMap::new();
    let mut reminders: HashMap<u64, u32> = HashMap::new();
    let mut escalations: HashMap<u64, u32> = HashMap::new();
    let mut worker_ratings: Vec<(u64, &RatingFact)> = Vec::new();
    let mut overdue: Vec<(i64, u64)> = Vec::new();
    // Every row of the scope is shown, with zeros when nothing happened.
    for id in directory.communities.keys().filter(|c| in_scope(**c)) {
        communities.entry(*id).or_default();
    }
    for (id, (c, _)) in &directory.grids {
        if in_scope(*c) {
            grids.entry(*id).or_default();
        }
    }
    for (id, s) in &directory.staff {
        if in_scope(s.community_id) {
            workers.entry(*id).or_default();
        }
    }
    for f in facts {
        if !in_scope(f.community_id) {
            continue;
        }
        total.add(f, now_ms, period);
        communities
            .entry(f.community_id)
            .or_default()
            .add(f, now_ms, period);
        grids.entry(f.grid_id).or_default().add(f, now_ms, period);
        if f.assignee_id != 0 {
            workers
                .entry(f.assignee_id)
                .or_default()
                .add(f, now_ms, period);
        }
        if f.received(period) {
            let (nr, ne) = (f.reminded.len() as u32, f.escalated.len() as u32);
            for acc in [
                &mut total,
                communities.entry(f.community_id).or_default(),
                grids.entry(f.grid_id).or_default(),
            ] {
                acc.row.reminders += nr;
                acc.row.escalations += ne;
            }
            for w in f.reminded.iter() {
                *reminders.entry(*w).or_default() += 1;
            }
            for w in f.escalated.iter() {
                *escalations.entry(*w).or_default() += 1;
            }
            for rating in f.ratings.iter() {
                total.rate(rating);
                communities.entry(f.community_id).or_default().rate(rating);
                grids.entry(f.grid_id).or_default().rate(rating);
                for w in rating.handlers.iter() {
                    worker_ratings.push((*w, rating));
                }
            }
        }
        if f.open() && (f.overdue_response(now_ms) || f.overdue_completion(now_ms)) {
            overdue.push((f.created_at_ms, f.id));
        }
    }
    for (w, n) in reminders {
        if let Some(acc) = workers.get_mut(&w) {
            acc.row.reminders += n;
        }
    }
    for (w, n) in escalations {
        if let Some(acc) = workers.get_mut(&w) {
            acc.row.escalations += n;
        }
    }
    for (w, rating) in worker_ratings {
        if let Some(acc) = workers.get_mut(&w) {
            acc.rate(rating);
        }
    }

    let mut bucket_counts = vec![0u32; BUCKET_BOUNDS_MS.len() + 1];
    for t in &total.times {
        bucket_counts[bucket_of(*t)] += 1;
    }
    let mut total_row = total.finish();
    total_row.level = BoardLevel::Total as i32;
    total_row.community_id = scope;

    let mut community_rows: Vec<BoardRow> = communities
        .into_iter()
        .map(|(id, acc)| {
            let mut r = acc.finish();
            r.level = BoardLevel::Community as i32;
            r.id = id;
            r.community_id = id;
            r.name = directory.communities.get(&id).cloned().unwrap_or_default();
            r
        })
        .collect();
    let mut grid_rows: Vec<BoardRow> = grids
        .into_iter()
        .map(|(id, acc)| {
            let mut r = acc.finish();
            r.level = BoardLevel::Grid as i32;
            r.id = id;
            r.grid_id = id;
            if let Some((c, name)) = directory.grids.get(&id) {
                r.community_id = *c;
                r.name = name.clone();
            }
            r
        })
        .collect();
    let mut worker_rows: Vec<BoardRow> = workers
        .into_iter()
        .map(|(id, acc)| {
            let mut r = acc.finish();
            r.level = BoardLevel::Worker as i32;
            r.id = id;
            if let Some(s) = directory.staff.get(&id) {
                r.name = s.name.clone();
                r.role = s.role as i32;
                r.community_id = s.community_id;
                r.grid_id = s.grid_id;
            }
            r
        })
        .collect();
    rank(&mut community_rows, |_| 0);
    rank(&mut grid_rows, |r| r.community_id);
    rank(&mut worker_rows, |r| r.community_id);

    overdue.sort_unstable();
    let overdue_ids = overdue
        .into_iter()
        .take(OVERDUE_LIST_MAX)
        .map(|(_, id)| id)
        .collect();
    Computed {
        board: Board {
            community_id: scope,
            from_ms: period.from_ms,
            to_ms: period.to_ms,
            computed_at_ms: now_ms,
            total: Some(total_row),
            communities: community_rows,
            grids: grid_rows,
            workers: worker_rows,
            bucket_bounds_ms: BUCKET_BOUNDS_MS.to_vec(),
            bucket_counts,
            ..Default::default()
        },
        overdue_ids,
    }
}

/// The ordering of rows for ranking: better first (docs/metrics.md, "Ranking").
fn rank_order(a: &BoardRow, b: &BoardRow) -> std::cmp::Ordering {
    let rate = |r: Option<f64>| r.unwrap_or(-1.0);
    let median = |r: &BoardRow| {
        if r.responded > 0 {
            r.first_response_median_ms
        } else {
            i64::MAX
        }
    };
    rate(b.response_rate)
        .total_cmp(&rate(a.response_rate))
        .then(rate(b.resolution_rate).total_cmp(&rate(a.resolution_rate)))
        .then(median(a).cmp(&median(b)))
        .then(a.id.cmp(&b.id))
}

/// Gives each row with received petitions its place within its group (1 = best); others get 0.
/// Rows keep their order by id.
fn rank(rows: &mut [BoardRow], group: impl Fn(&BoardRow) -> u64) {
    let mut order: Vec<usize> = (0..rows.len()).filter(|i| rows[*i].received > 0).collect();
    order.sort_by(|a, b| {
        group(&rows[*a])
            .cmp(&group(&rows[*b]))
            .then_with(|| rank_order(&rows[*a], &rows[*b]))
    });
    let mut place = 0;
    let mut current = None;
    for i in order {
        let g = group(&rows[i]);
        if current != Some(g) {
            current = Some(g);
            place = 0;
        }
        place += 1;
        rows[i].rank = place;
    }
}

/// The rows of `next` that differ from the row of the same level and id in `previous`.
pub fn changed_rows(previous: &[BoardRow], next: &[BoardRow]) -> Vec<BoardRow> {
    let before: HashMap<u64, &BoardRow> = previous.iter().map(|r| (r.id, r)).collect();
    next.iter()
        .filter(|r| before.get(&r.id).is_none_or(|old| *old != *r))
        .cloned()
        .collect()
}

/// Applies an update's changed rows onto a full list of rows (what a client does).
pub fn apply_rows(rows: &mut Vec<BoardRow>, changed: &[BoardRow]) {
    for c in changed {
        match rows.iter_mut().find(|r| r.id == c.id) {
            Some(r) => *r = c.clone(),
            None => rows.push(c.clone()),
        }
    }
    rows.sort_by_key(|r| r.id);
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const H: i64 = 3_600_000;

    fn facts(id: u64, worker: u64, created: i64) -> Facts {
        Facts {
            id,
            community_id: 1,
            grid_id: 10,
            assignee_id: worker,
            state: PetitionState::Submitted,
            created_at_ms: created,
            first_response_at_ms: 0,
            response_due_at_ms: created + 12 * H,
            completion_due_at_ms: created + 120 * H,
            resolved_at_ms: 0,
            closed_at_ms: 0,
            reminded: Box::new([]),
            escalated: Box::new([]),
            ratings: Box::new([]),
            reopened: false,
            unrated: false,
        }
    }

    fn directory() -> Directory {
        let mut d = Directory::default();
        d.communities.insert(1, "东城社区".into());
        d.communities.insert(2, "西城社区".into());
        d.grids.insert(10, (1, "第一网格".into()));
        d.grids.insert(20, (2, "第一网格".into()));
        for (id, grid, community) in [(100, 10, 1), (101, 10, 1), (200, 20, 2)] {
            d.staff.insert(
                id,
                StaffEntry {
                    name: format!("w{id}"),
                    role: Role::Worker,
                    community_id: community,
                    grid_id: grid,
                },
            );
        }
        d
    }

    fn worker_row(board: &Board, id: u64) -> BoardRow {
        board.workers.iter().find(|r| r.id == id).cloned().unwrap()
    }

    fn day() -> Period {
        Period {
            from_ms: 0,
            to_ms: 24 * H,
        }
    }

    #[test]
    fn today_starts_at_local_midnight() {
        // 2026-11-27 03:00 UTC is 11:00 in UTC+8; local midnight is 2026-11-26 16:00 UTC.
        let now = 1_795_748_400_000; // 2026-11-27T03:00:00Z
        let p = Period::of(BoardRange::Today, 0, 0, now, 480).unwrap();
        assert_eq!(p.from_ms, now - 11 * H);
        assert_eq!(p.to_ms, now + 1);
        let p = Period::of(BoardRange::Today, 0, 0, now, 0).unwrap();
        assert_eq!(p.from_ms, now - 3 * H);
        assert_eq!(
            Period::of(BoardRange::Custom, 5, 5, now, 0),
            Err(PeriodError::Empty)
        );
        assert_eq!(
            Period::of(BoardRange::Unspecified, 0, 0, now, 0),
            Err(PeriodError::NoRange)
        );
    }

    #[test]
    fn figures_follow_their_definitions() {
        let now = 20 * H;
        // 1: answered on time after 30 min, resolved. 2: answered late (13 h). 3: unanswered and
        // overdue, reminded twice (worker 100, then 101 after reassignment), escalated once.
        // 4: withdrawn before its deadline, unanswered: not decided. 5: raised yesterday, open.
        let mut a = facts(1, 100, H);
        a.first_response_at_ms = H + 30 * 60_000;
        a.state = PetitionState::Resolved;
        a.resolved_at_ms = 3 * H;
        let mut b = facts(2, 100, 2 * H);
        b.first_response_at_ms = 15 * H;
        b.state = PetitionState::Responded;
        let mut c = facts(3, 101, 3 * H);
        c.reminded = Box::new([100, 101]);
        c.escalated = Box::new([101]);
        let mut d = facts(4, 101, 4 * H);
        d.state = PetitionState::Withdrawn;
        d.closed_at_ms = 5 * H;
        let e = facts(5, 100, -10 * H);
        let all = [a, b, c, d, e];
        let out = compute(&all, &directory(), 1, now, &day());
        let t = out.board.total.clone().unwrap();
        assert_eq!(t.received, 4);
        assert_eq!(t.open, 4, "a (resolved, not yet closed), b, c and e");
        assert_eq!(t.overdue_response, 2, "c and e (a now figure: any period)");
        assert_eq!(t.response_decided, 3, "a, b, c");
        assert_eq!(t.responded_on_time, 1);
        assert_eq!(t.response_rate, Some(1.0 / 3.0));
        assert_eq!(t.resolved, 1);
        assert_eq!(t.withdrawn, 1);
        assert_eq!(t.resolution_rate, Some(1.0 / 3.0));
        assert_eq!(t.responded, 2);
        assert_eq!(t.first_response_mean_ms, (30 * 60_000 + 13 * H) / 2);
        assert_eq!(t.first_response_median_ms, 30 * 60_000);
        assert_eq!(t.first_response_p90_ms, 13 * H);
        assert_eq!((t.reminders, t.escalations), (2, 1));
        assert_eq!(out.overdue_ids, vec![5, 3], "oldest first");
        assert_eq!(out.board.bucket_counts[1], 1, "30 min is in [15 min, 1 h)");
        assert_eq!(out.board.bucket_counts[6], 1, "13 h is in [12 h, 24 h)");

        let w = |id| worker_row(&out.board, id);
        let (w100, w101) = (w(100), w(101));
        assert_eq!((w100.received, w100.open), (2, 3));
        assert_eq!((w100.reminders, w100.escalations), (1, 0));
        assert_eq!((w101.reminders, w101.escalations), (1, 1));
        assert_eq!(w100.response_rate, Some(0.5));
        assert_eq!(w101.response_rate, Some(0.0));
        assert_eq!((w100.rank, w101.rank), (1, 2));
        // Community 2 is outside the scope; worker 200 too.
        assert_eq!(out.board.communities.len(), 1);
        assert!(out.board.workers.iter().all(|r| r.id != 200));
    }

    #[test]
    fn ratings_count_for_the_workers_who_handled_the_round() {
        let rating = |level, handlers: &[u64]| RatingFact {
            level,
            by_phone: false,
            handlers: handlers.into(),
        };
        let mut a = facts(1, 100, H);
        a.state = PetitionState::Closed;
        a.ratings = Box::new([rating(RatingLevel::Dissatisfied, &[100, 101])]);
        let mut b = facts(2, 100, 2 * H);
        b.state = PetitionState::Closed;
        b.ratings = Box::new([RatingFact {
            by_phone: true,
            ..rating(RatingLevel::Satisfied, &[100])
        }]);
        let mut c = facts(3, 101, 3 * H);
        c.state = PetitionState::Closed;
        c.reopened = true;
        c.unrated = true;
        let d = facts(4, 101, 4 * H);
        let out = compute(&[a, b, c, d], &directory(), 1, 20 * H, &day());
        let t = out.board.total.clone().unwrap();
        assert_eq!(
            (t.rated, t.satisfied, t.dissatisfied, t.rated_by_phone),
            (2, 1, 1, 1)
        );
        assert_eq!(t.satisfaction_rate, Some(0.5));
        assert_eq!((t.unrated, t.reopened), (1, 1));
        assert_eq!(t.reopened_share, Some(0.25));
        let w = |id| worker_row(&out.board, id);
        assert_eq!((w(100).rated, w(100).dissatisfied), (2, 1));
        assert_eq!(
            (w(101).rated, w(101).dissatisfied),
            (1, 1),
            "the bad review reaches both"
        );
        assert_eq!(w(101).satisfaction_rate, Some(0.0));
        assert_eq!((w(101).unrated, w(101).reopened), (1, 1));
    }

    #[test]
    fn nearest_rank_percentiles() {
        assert_eq!(nearest_rank(&[5], 50), 5);
        assert_eq!(nearest_rank(&[1, 2, 3, 4], 50), 2);
        assert_eq!(nearest_rank(&[1, 2, 3, 4], 90), 4);
        let v: Vec<i64> = (1..=10).collect();
        assert_eq!(nearest_rank(&v, 90), 9);
    }

    #[test]
    fn deltas_rebuild_the_board() {
        let dir = directory();
        let mut all = vec![facts(1, 100, H), facts(2, 101, 2 * H)];
        let first = compute(&all, &dir, 0, 3 * H, &day()).board;
        assert_eq!(
            first.workers.iter().map(|r| r.rank).collect::<Vec<_>>(),
            vec![1, 2, 0]
        );
        all[1].first_response_at_ms = 3 * H;
        all[1].state = PetitionState::Responded;
        let second = compute(&all, &dir, 0, 4 * H, &day()).board;
        let changed = changed_rows(&first.workers, &second.workers);
        assert_eq!(
            changed.iter().map(|r| r.id).collect::<Vec<_>>(),
            vec![100, 101],
            "101 answered and moved up; 100 moved down"
        );
        let mut rows = first.workers.clone();
        apply_rows(&mut rows, &changed);
        assert_eq!(rows, second.workers);
    }

    fn arb_facts() -> impl Strategy<Value = Facts> {
        (
            1u64..200,
            prop::sample::select(vec![100u64, 101, 200, 0]),
            0i64..48,
            prop::option::of(0i64..30),
            0usize..7,
            prop::option::of(0i64..10),
            prop::collection::vec(prop::sample::select(vec![100u64, 101, 200]), 0..3),
        )
            .prop_map(|(id, w, created_h, resp_h, state, end_h, reminded)| {
                let states = [
                    PetitionState::Submitted,
                    PetitionState::Responded,
                    PetitionState::Transferred,
                    PetitionState::Escalated,
                    PetitionState::Resolved,
                    PetitionState::Closed,
                    PetitionState::Withdrawn,
                ];
                let mut f = facts(id, w, created_h * H);
                if w == 200 {
                    f.community_id = 2;
                    f.grid_id = 20;
                }
                f.state = states[state];
                if let Some(r) = resp_h {
                    f.first_response_at_ms = f.created_at_ms + r * H;
                }
                if matches!(f.state, PetitionState::Resolved | PetitionState::Closed) {
                    f.resolved_at_ms = f.created_at_ms + 1;
                }
                if !f.open() {
                    f.closed_at_ms = f.created_at_ms + end_h.unwrap_or(1) * H;
                }
                f.escalated = reminded.iter().take(1).copied().collect();
                if f.resolved_at_ms != 0 {
                    let level = [
                        RatingLevel::Satisfied,
                        RatingLevel::BasicallySatisfied,
                        RatingLevel::Dissatisfied,
                    ][id as usize % 3];
                    f.ratings = vec![RatingFact {
                        level,
                        by_phone: id % 5 == 0,
                        handlers: reminded.clone().into_boxed_slice(),
                    }]
                    .into_boxed_slice();
                    f.reopened = id % 4 == 0;
                }
                f.unrated = f.state == PetitionState::Closed && f.ratings.is_empty();
                f.reminded = reminded.into_boxed_slice();
                f
            })
    }

    proptest! {
        /// Every count equals the length of its drill-down list, for every row and figure.
        #[test]
        fn counts_equal_their_drill_down(
            mut all in prop::collection::vec(arb_facts(), 0..40),
            now_h in 0i64..80,
            scope in prop::sample::select(vec![0u64, 1, 2]),
        ) {
            all.sort_by_key(|f| f.id);
            all.dedup_by_key(|f| f.id);
            let now = now_h * H;
            let period = Period { from_ms: 6 * H, to_ms: 30 * H };
            let out = compute(&all, &directory(), scope, now, &period);
            let rows: Vec<(BoardLevel, BoardRow)> = std::iter::once((BoardLevel::Total, out.board.total.clone().unwrap()))
                .chain(out.board.communities.iter().map(|r| (BoardLevel::Community, r.clone())))
                .chain(out.board.grids.iter().map(|r| (BoardLevel::Grid, r.clone())))
                .chain(out.board.workers.iter().map(|r| (BoardLevel::Worker, r.clone())))
                .collect();
            for (level, row) in rows {
                let n = |figure| all.iter()
                    .filter(|f| scope == 0 || f.community_id == scope)
                    .filter(|f| f.behind(figure, level, row.id, now, &period))
                    .count() as u32;
                prop_assert_eq!(row.received, n(BoardFigure::Received));
                prop_assert_eq!(row.open, n(BoardFigure::Open));
                prop_assert_eq!(row.overdue_response, n(BoardFigure::OverdueResponse));
                prop_assert_eq!(row.overdue_completion, n(BoardFigure::OverdueCompletion));
                prop_assert_eq!(row.response_decided, n(BoardFigure::ResponseDecided));
                prop_assert_eq!(row.responded_on_time, n(BoardFigure::RespondedOnTime));
                prop_assert_eq!(row.response_decided - row.responded_on_time, n(BoardFigure::RespondedLate));
                prop_assert_eq!(row.resolved, n(BoardFigure::Resolved));
                prop_assert_eq!(row.withdrawn, n(BoardFigure::Withdrawn));
                prop_assert_eq!(row.responded, n(BoardFigure::Responded));
                prop_assert!(row.reminders >= n(BoardFigure::Reminded));
                prop_assert!(row.escalations >= n(BoardFigure::Escalated));
                prop_assert!(row.rated >= n(BoardFigure::Rated));
                prop_assert!(row.dissatisfied >= n(BoardFigure::Dissatisfied));
                prop_assert_eq!(row.unrated, n(BoardFigure::Unrated));
                prop_assert_eq!(row.reopened, n(BoardFigure::Reopened));
                prop_assert_eq!(row.rated, row.satisfied + row.basically_satisfied + row.dissatisfied);
                if let Some(rate) = row.satisfaction_rate {
                    prop_assert!((0.0..=1.0).contains(&rate));
                }
                if let Some(rate) = row.response_rate {
                    prop_assert!((0.0..=1.0).contains(&rate));
                }
                if let Some(rate) = row.resolution_rate {
                    prop_assert!((0.0..=1.0).contains(&rate));
                }
                prop_assert!(row.first_response_median_ms <= row.first_response_p90_ms);
            }
            let t = out.board.total.unwrap();
            prop_assert_eq!(out.board.bucket_counts.iter().sum::<u32>(), t.responded);
            prop_assert_eq!(
                out.board.communities.iter().map(|r| r.received).sum::<u32>(),
                t.received
            );
        }
    }
}
