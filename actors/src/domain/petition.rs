//! The petition state machine.
//!
//! [`decide`] takes a petition, the caller and a [`Command`], and returns the updated petition and
//! the [`Transition`] to record, or why the command is refused. It checks, in this order, who the
//! caller is to the petition (see [`crate::domain::access`]), the petition's state, then the
//! command's arguments. It does no I/O and never touches `last_seq`: the caller numbers timeline
//! entries and stores the outcome.
//!
//! ```text
//! Submitted ──respond──▶ Responded ──resolve──▶ Resolved ──close──▶ Closed
//!     │                    ▲  │                    ▲
//!     │ transfer ┌─respond─┘  │ escalate           │ resolve
//!     ▼          │            ▼                    │
//! Transferred ───┴──────▶ Escalated ───────────────┘
//! (transfer from Submitted, Responded, Transferred, Escalated; escalate from Submitted,
//!  Responded, Transferred; withdraw from any of those four)
//! ```

use lianxin_protocol::v1::{
    Action, EscalationTarget, Petition, PetitionState, Rating, RatingLevel, Role, Transition,
};

use crate::domain::access::{Caller, Relation, counts_as_response, relation};

/// The worker a petition is transferred to, with their grid and community.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TransferTarget {
    /// The new assignee.
    pub worker_id: u64,
    /// The new assignee's grid.
    pub grid_id: u64,
    /// The new assignee's community.
    pub community_id: u64,
}

/// Something a caller asks to do to a petition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// A text message; a reply by the assignee (or the grid's head) to a Submitted or Transferred petition is its response.
    Message,
    /// Hand the petition to another worker (and so their grid and community).
    Transfer {
        /// Whom to hand it to.
        to: TransferTarget,
        /// Why; required.
        reason: String,
    },
    /// Pass the petition to the community or a co-building unit.
    Escalate {
        /// To whom.
        target: EscalationTarget,
        /// The co-building unit's name; required for [`EscalationTarget::CoBuildingUnit`].
        unit_name: String,
        /// A note for the history.
        note: String,
    },
    /// Report the handling result to the resident.
    Resolve {
        /// The handling summary; required.
        summary: String,
    },
    /// The resident accepts the result and finishes the petition.
    Close,
    /// The resident withdraws the petition before it is resolved.
    Withdraw {
        /// Why; may be empty.
        reason: String,
    },
    /// The resident rates the resolved round's handling, which closes the petition; or staff
    /// record the rating a resident of a petition filed for them gave by telephone.
    Rate {
        /// How satisfied.
        level: RatingLevel,
        /// An optional comment.
        comment: String,
        /// Staff recording a rating given by telephone.
        by_phone: bool,
    },
    /// The resident reopens a closed petition: a new handling round starts.
    Reopen {
        /// Why; required.
        reason: String,
        /// How long after closing reopening is allowed, in milliseconds.
        within_ms: i64,
    },
    /// The system closes a resolved petition left unrated past the rating period.
    CloseUnrated,
}

/// The result of an accepted command.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// The petition after the command (an updated copy).
    pub petition: Petition,
    /// The state change to record in the timeline, if the command made one.
    pub transition: Option<Transition>,
}

/// Why a command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PetitionError {
    /// The caller may not do this to this petition.
    #[error("not allowed: {0}")]
    Forbidden(&'static str),
    /// The petition's state does not allow the command.
    #[error("cannot {} a petition that is {}", action_word(*.action), state_word(*.from))]
    IllegalTransition {
        /// The petition's state.
        from: PetitionState,
        /// What was attempted ([`Action::Unspecified`] for a plain message).
        action: Action,
    },
    /// An argument of the command is missing or wrong.
    #[error("invalid argument: {0}")]
    InvalidArgument(&'static str),
}

/// The verb of an action, for error messages ("send a message to" for a plain message).
fn action_word(action: Action) -> &'static str {
    match action {
        Action::Unspecified => "send a message to",
        Action::Submit => "submit",
        Action::Respond => "respond to",
        Action::Transfer => "transfer",
        Action::Escalate => "escalate",
        Action::Resolve => "resolve",
        Action::Close => "close",
        Action::Withdraw => "withdraw",
        Action::Rate => "rate",
        Action::Reopen => "reopen",
        Action::CloseUnrated => "close as unrated",
    }
}

/// A state in words, for error messages ("closed").
fn state_word(state: PetitionState) -> String {
    state
        .as_str_name()
        .trim_start_matches("PETITION_STATE_")
        .to_lowercase()
}

/// Whether a petition in `state` still accepts messages and changes (not Closed or Withdrawn).
pub fn is_open(state: PetitionState) -> bool {
    !matches!(state, PetitionState::Closed | PetitionState::Withdrawn)
}

/// The action a command attempts ([`Action::Unspecified`] for a message, which may or may not be a response).
pub fn action_of(cmd: &Command) -> Action {
    match cmd {
        Command::Message => Action::Unspecified,
        Command::Transfer { .. } => Action::Transfer,
        Command::Escalate { .. } => Action::Escalate,
        Command::Resolve { .. } => Action::Resolve,
        Command::Close => Action::Close,
        Command::Withdraw { .. } => Action::Withdraw,
        Command::Rate { .. } => Action::Rate,
        Command::Reopen { .. } => Action::Reopen,
        Command::CloseUnrated => Action::CloseUnrated,
    }
}

/// Decides what `cmd` by `caller` at `now_ms` does to `p`: the updated petition and transition, or why not.
pub fn decide(
    p: &Petition,
    caller: &Caller,
    cmd: &Command,
    now_ms: i64,
) -> Result<Outcome, PetitionError> {
    use PetitionState as S;

    let rel = relation(p, caller);
    if rel == Relation::None {
        return Err(PetitionError::Forbidden(
            "not a participant of this petition",
        ));
    }
    let from = p.state();
    let action = action_of(cmd);
    let allowed_from = |states: &[PetitionState]| {
        if states.contains(&from) {
            Ok(())
        } else {
            Err(PetitionError::IllegalTransition { from, action })
        }
    };

    let mut next = p.clone();
    next.updated_at_ms = now_ms;
    let transition = match cmd {
        Command::Message => {
            if !is_open(from) {
                return Err(PetitionError::IllegalTransition { from, action });
            }
            // The resident's own messages never answer their petition, even if they are staff.
            let responds = matches!(from, S::Submitted | S::Transferred)
                && rel == Relation::Handler
                && counts_as_response(p, caller);
            if !responds {
                return Ok(Outcome {
                    petition: next,
                    transition: None,
                });
            }
            note_handler(&mut next, caller);
            next.set_state(S::Responded);
            if next.first_response_at_ms == 0 {
                next.first_response_at_ms = now_ms;
            }
            record(Action::Respond, from, &next, "")
        }
        Command::Transfer { to, reason } => {
            require(
                rel,
                Relation::Handler,
                "only a handler may transfer a petition",
            )?;
            allowed_from(&[S::Submitted, S::Responded, S::Transferred, S::Escalated])?;
            if reason.trim().is_empty() {
                return Err(PetitionError::InvalidArgument("a transfer needs a reason"));
            }
            if to.worker_id == 0 {
                return Err(PetitionError::InvalidArgument("a transfer needs a worker"));
            }
            if to.grid_id == 0 {
                return Err(PetitionError::InvalidArgument("a transfer needs a grid"));
            }
            if to.worker_id == p.assignee_id {
                return Err(PetitionError::InvalidArgument(
                    "the petition is already assigned to that worker",
                ));
            }
            note_handler(&mut next, caller);
            next.set_state(S::Transferred);
            next.assignee_id = to.worker_id;
            next.grid_id = to.grid_id;
            next.community_id = to.community_id;
            next.set_escalated_to(EscalationTarget::Unspecified);
            next.co_building_unit.clear();
            record(Action::Transfer, from, &next, reason)
        }
        Command::Escalate {
            target,
            unit_name,
            note,
        } => {
            require(
                rel,
                Relation::Handler,
                "only a handler may escalate a petition",
            )?;
            allowed_from(&[S::Submitted, S::Responded, S::Transferred])?;
            let unit = match target {
                EscalationTarget::Community => String::new(),
                EscalationTarget::CoBuildingUnit if unit_name.trim().is_empty() => {
                    return Err(PetitionError::InvalidArgument(
                        "an escalation to a co-building unit needs the unit's name",
                    ));
                }
                EscalationTarget::CoBuildingUnit => unit_name.clone(),
                EscalationTarget::Unspecified => {
                    return Err(PetitionError::InvalidArgument(
                        "an escalation needs a target",
                    ));
                }
            };
            note_handler(&mut next, caller);
            next.set_state(S::Escalated);
            next.set_escalated_to(*target);
            next.co_building_unit = unit;
            let mut t = record(Action::Escalate, from, &next, note);
            t.set_escalated_to(*target);
            t.co_building_unit = next.co_building_unit.clone();
            t
        }
        Command::Resolve { summary } => {
            require(
                rel,
                Relation::Handler,
                "only a handler may resolve a petition",
            )?;
            allowed_from(&[S::Responded, S::Escalated])?;
            if summary.trim().is_empty() {
                return Err(PetitionError::InvalidArgument(
                    "a resolution needs a summary",
                ));
            }
            note_handler(&mut next, caller);
            next.set_state(S::Resolved);
            next.resolution = summary.clone();
            next.resolved_at_ms = now_ms;
            record(Action::Resolve, from, &next, summary)
        }
        Command::Close => {
            require(
                rel,
                Relation::Resident,
                "only the resident may close a petition",
            )?;
            allowed_from(&[S::Resolved])?;
            next.set_state(S::Closed);
            next.closed_at_ms = now_ms;
            record(Action::Close, from, &next, "")
        }
        Command::Withdraw { reason } => {
            require(
                rel,
                Relation::Resident,
                "only the resident may withdraw a petition",
            )?;
            allowed_from(&[S::Submitted, S::Responded, S::Transferred, S::Escalated])?;
            next.set_state(S::Withdrawn);
            next.closed_at_ms = now_ms;
            record(Action::Withdraw, from, &next, reason)
        }
        Command::Rate {
            level,
            comment,
            by_phone,
        } => {
            let recorded_by = if *by_phone {
                if !matches!(rel, Relation::Handler | Relation::Filer)
                    || !matches!(
                        caller.role,
                        Role::Worker
                            | Role::GridHead
                            | Role::CommunitySupervisor
                            | Role::TownshipSupervisor
                            | Role::Admin
                    )
                {
                    return Err(PetitionError::Forbidden(
                        "only staff record a rating given by telephone",
                    ));
                }
                if p.filed_by.as_ref().is_none_or(|f| f.staff_id == 0) {
                    return Err(PetitionError::Forbidden(
                        "staff record ratings only for petitions filed on a resident's behalf",
                    ));
                }
                caller.account_id
            } else {
                require(
                    rel,
                    Relation::Resident,
                    "only the resident may rate a petition",
                )?;
                0
            };
            allowed_from(&[S::Resolved])?;
            if *level == RatingLevel::Unspecified {
                return Err(PetitionError::InvalidArgument("a rating needs a level"));
            }
            let round = p.round.max(1);
            if p.ratings.iter().any(|r| r.round == round) {
                return Err(PetitionError::IllegalTransition { from, action });
            }
            let rating = Rating {
                round,
                level: *level as i32,
                comment: comment.clone(),
                at_ms: now_ms,
                recorded_by,
                handler_ids: p.round_handler_ids.clone(),
            };
            next.ratings.push(rating.clone());
            next.set_state(S::Closed);
            next.closed_at_ms = now_ms;
            let mut t = record(Action::Rate, from, &next, comment);
            t.rating = Some(rating);
            t
        }
        Command::Reopen { reason, within_ms } => {
            require(
                rel,
                Relation::Resident,
                "only the resident may reopen a petition",
            )?;
            allowed_from(&[S::Closed])?;
            if reason.trim().is_empty() {
                return Err(PetitionError::InvalidArgument("a reopening needs a reason"));
            }
            if now_ms.saturating_sub(p.closed_at_ms) > *within_ms {
                return Err(PetitionError::Forbidden("the reopening period has passed"));
            }
            next.set_state(S::Submitted);
            next.round = p.round.max(1) + 1;
            next.round_started_at_ms = now_ms;
            next.round_handler_ids.clear();
            next.reopen_count += 1;
            next.first_response_at_ms = 0;
            next.resolved_at_ms = 0;
            next.closed_at_ms = 0;
            next.resolution.clear();
            next.set_escalated_to(EscalationTarget::Unspecified);
            next.co_building_unit.clear();
            record(Action::Reopen, from, &next, reason)
        }
        Command::CloseUnrated => {
            if caller.account_id != 0 {
                return Err(PetitionError::Forbidden(
                    "only the system closes unrated petitions",
                ));
            }
            allowed_from(&[S::Resolved])?;
            next.set_state(S::Closed);
            next.closed_at_ms = now_ms;
            record(Action::CloseUnrated, from, &next, "")
        }
    };
    Ok(Outcome {
        petition: next,
        transition: Some(transition),
    })
}

/// Remembers a staff member who acted in the current round (for attributing its rating).
fn note_handler(p: &mut Petition, caller: &Caller) {
    let staff = matches!(
        caller.role,
        Role::Worker | Role::GridHead | Role::CommunitySupervisor | Role::TownshipSupervisor
    );
    if staff && caller.account_id != 0 && !p.round_handler_ids.contains(&caller.account_id) {
        p.round_handler_ids.push(caller.account_id);
    }
}

fn require(rel: Relation, wanted: Relation, why: &'static str) -> Result<(), PetitionError> {
    if rel == wanted {
        Ok(())
    } else {
        Err(PetitionError::Forbidden(why))
    }
}

/// A transition from `from` to `after`'s state, naming `after`'s assignee and grid.
fn record(action: Action, from: PetitionState, after: &Petition, reason: &str) -> Transition {
    Transition {
        action: action.into(),
        from: from.into(),
        to: after.state,
        reason: reason.to_owned(),
        assignee_id: after.assignee_id,
        grid_id: after.grid_id,
        round: after.round.max(1),
        ..Default::default()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use lianxin_protocol::v1::Role;

    use super::*;
    use crate::domain::fixtures::*;

    const NOW: i64 = 5_000;
    const ALL_STATES: [PetitionState; 8] = [
        PetitionState::Unspecified,
        PetitionState::Submitted,
        PetitionState::Responded,
        PetitionState::Transferred,
        PetitionState::Escalated,
        PetitionState::Resolved,
        PetitionState::Closed,
        PetitionState::Withdrawn,
    ];

    fn transfer_to(worker_id: u64, grid_id: u64, community_id: u64, reason: &str) -> Command {
        Command::Transfer {
            to: TransferTarget {
                worker_id,
                grid_id,
                community_id,
            },
            reason: reason.into(),
        }
    }

    fn transfer() -> Command {
        transfer_to(OTHER_GRID_WORKER, OTHER_GRID, COMMUNITY, "wrong grid")
    }

    fn escalate_community() -> Command {
        Command::Escalate {
            target: EscalationTarget::Community,
            unit_name: String::new(),
            note: "needs the community".into(),
        }
    }

    fn escalate_unit(name: &str) -> Command {
        Command::Escalate {
            target: EscalationTarget::CoBuildingUnit,
            unit_name: name.into(),
            note: "the water company".into(),
        }
    }

    fn resolve() -> Command {
        Command::Resolve {
            summary: "light repaired".into(),
        }
    }

    fn withdraw() -> Command {
        Command::Withdraw {
            reason: "fixed itself".into(),
        }
    }

    fn rate(level: RatingLevel) -> Command {
        Command::Rate {
            level,
            comment: "修好了，谢谢".into(),
            by_phone: false,
        }
    }

    fn phone_rating(level: RatingLevel) -> Command {
        Command::Rate {
            level,
            comment: String::new(),
            by_phone: true,
        }
    }

    fn reopen(within_ms: i64) -> Command {
        Command::Reopen {
            reason: "灯又坏了".into(),
            within_ms,
        }
    }

    fn run(state: PetitionState, by: u64, cmd: &Command) -> Result<Outcome, PetitionError> {
        decide(&petition(state), &who(by), cmd, NOW)
    }

    fn illegal(from: PetitionState, action: Action) -> PetitionError {
        PetitionError::IllegalTransition { from, action }
    }

    /// Checks what every successful outcome must satisfy, and returns the new state.
    fn check_ok(before: &Petition, out: &Outcome) -> PetitionState {
        let after = &out.petition;
        assert_eq!(after.updated_at_ms, NOW);
        assert_eq!(after.last_seq, before.last_seq);
        assert_eq!(after.id, before.id);
        assert_eq!(after.resident_id, before.resident_id);
        match &out.transition {
            Some(t) => {
                assert_eq!(t.from(), before.state());
                assert_eq!(t.to(), after.state());
                assert_eq!(t.assignee_id, after.assignee_id);
                assert_eq!(t.grid_id, after.grid_id);
            }
            None => {
                let mut same = after.clone();
                same.updated_at_ms = before.updated_at_ms;
                assert_eq!(&same, before);
            }
        }
        after.state()
    }

    // ---- The full state × command table. ----

    #[test]
    fn every_state_and_command() {
        use PetitionState as S;
        // (command, caller, expected new state per state in ALL_STATES order; None = illegal).
        // The callers have the right relation, and the arguments are valid, so only the state
        // decides.
        let msg_open = |s: S| -> Option<S> { is_open(s).then_some(s) };
        type Row = (&'static str, Command, u64, [Option<S>; 8]);
        let rows: Vec<Row> = vec![
            (
                "message by the assignee",
                Command::Message,
                ASSIGNEE,
                [
                    msg_open(S::Unspecified),
                    Some(S::Responded),
                    Some(S::Responded),
                    Some(S::Responded),
                    Some(S::Escalated),
                    Some(S::Resolved),
                    None,
                    None,
                ],
            ),
            (
                "message by the resident",
                Command::Message,
                RESIDENT,
                ALL_STATES.map(msg_open),
            ),
            (
                "message by a same-grid worker",
                Command::Message,
                SAME_GRID_WORKER,
                ALL_STATES.map(msg_open),
            ),
            (
                "transfer",
                transfer(),
                ASSIGNEE,
                [
                    None,
                    Some(S::Transferred),
                    Some(S::Transferred),
                    Some(S::Transferred),
                    Some(S::Transferred),
                    None,
                    None,
                    None,
                ],
            ),
            (
                "escalate",
                escalate_community(),
                ASSIGNEE,
                [
                    None,
                    Some(S::Escalated),
                    Some(S::Escalated),
                    Some(S::Escalated),
                    None,
                    None,
                    None,
                    None,
                ],
            ),
            (
                "resolve",
                resolve(),
                ASSIGNEE,
                [
                    None,
                    None,
                    Some(S::Resolved),
                    None,
                    Some(S::Resolved),
                    None,
                    None,
                    None,
                ],
            ),
            (
                "close",
                Command::Close,
                RESIDENT,
                [None, None, None, None, None, Some(S::Closed), None, None],
            ),
            (
                "rate",
                rate(RatingLevel::Satisfied),
                RESIDENT,
                [None, None, None, None, None, Some(S::Closed), None, None],
            ),
            (
                "reopen",
                reopen(i64::MAX),
                RESIDENT,
                [None, None, None, None, None, None, Some(S::Submitted), None],
            ),
            (
                "withdraw",
                withdraw(),
                RESIDENT,
                [
                    None,
                    Some(S::Withdrawn),
                    Some(S::Withdrawn),
                    Some(S::Withdrawn),
                    Some(S::Withdrawn),
                    None,
                    None,
                    None,
                ],
            ),
        ];
        let mut checked = 0;
        for (name, cmd, by, expected) in &rows {
            for (state, want) in ALL_STATES.iter().zip(expected) {
                let before = petition(*state);
                let got = decide(&before, &who(*by), cmd, NOW);
                match (want, got) {
                    (Some(to), Ok(out)) => {
                        assert_eq!(check_ok(&before, &out), *to, "{name} from {state:?}");
                        // Every command but a message records a transition (a re-transfer
                        // goes from Transferred to Transferred); a message only when it responds.
                        let want_transition = !matches!(cmd, Command::Message) || to != state;
                        assert_eq!(
                            out.transition.is_some(),
                            want_transition,
                            "{name} from {state:?}: transition"
                        );
                    }
                    (None, Err(e)) => {
                        assert_eq!(e, illegal(*state, action_of(cmd)), "{name} from {state:?}")
                    }
                    (want, got) => panic!("{name} from {state:?}: want {want:?}, got {got:?}"),
                }
                checked += 1;
            }
        }
        assert_eq!(checked, rows.len() * ALL_STATES.len());
    }

    // ---- Legal transitions in detail. ----

    #[test]
    fn only_the_resident_rates_once_per_round_and_staff_cannot() {
        for by in [ASSIGNEE, GRID_HEAD, SUPERVISOR, TOWNSHIP, ADMIN, CLERK] {
            assert!(
                matches!(
                    run(PetitionState::Resolved, by, &rate(RatingLevel::Satisfied)),
                    Err(PetitionError::Forbidden(_))
                ),
                "{by} may not rate"
            );
        }
        let mut p = petition(PetitionState::Resolved);
        p.round_handler_ids = vec![ASSIGNEE, SAME_GRID_WORKER];
        let out = decide(&p, &who(RESIDENT), &rate(RatingLevel::Dissatisfied), NOW).unwrap();
        let after = out.petition;
        assert_eq!(after.state(), PetitionState::Closed);
        assert_eq!(after.closed_at_ms, NOW);
        assert_eq!(after.ratings.len(), 1);
        let r = &after.ratings[0];
        assert_eq!(
            (r.round, r.level(), r.recorded_by),
            (1, RatingLevel::Dissatisfied, 0)
        );
        assert_eq!(
            r.handler_ids,
            vec![ASSIGNEE, SAME_GRID_WORKER],
            "the bad review's workers"
        );
        let t = out.transition.unwrap();
        assert_eq!(t.action(), Action::Rate);
        assert_eq!(t.rating.as_ref(), Some(r));
        // Once: the petition is closed now.
        assert_eq!(
            decide(&after, &who(RESIDENT), &rate(RatingLevel::Satisfied), NOW),
            Err(illegal(PetitionState::Closed, Action::Rate))
        );
        assert_eq!(
            run(
                PetitionState::Resolved,
                RESIDENT,
                &rate(RatingLevel::Unspecified)
            ),
            Err(PetitionError::InvalidArgument("a rating needs a level"))
        );
    }

    #[test]
    fn staff_record_telephone_ratings_only_for_petitions_filed_for_a_resident() {
        let plain = petition(PetitionState::Resolved);
        assert!(matches!(
            decide(
                &plain,
                &who(ASSIGNEE),
                &phone_rating(RatingLevel::Satisfied),
                NOW
            ),
            Err(PetitionError::Forbidden(_))
        ));
        let filed = filed_petition(PetitionState::Resolved);
        for by in [CLERK, ASSIGNEE] {
            let out = decide(&filed, &who(by), &phone_rating(RatingLevel::Satisfied), NOW).unwrap();
            assert_eq!(
                out.petition.ratings[0].recorded_by, by,
                "marked as recorded by staff"
            );
        }
        assert!(matches!(
            decide(
                &filed,
                &who(RESIDENT),
                &phone_rating(RatingLevel::Satisfied),
                NOW
            ),
            Err(PetitionError::Forbidden(_))
        ));
        // The resident may still rate it themselves, through any client.
        let own = decide(&filed, &who(RESIDENT), &rate(RatingLevel::Satisfied), NOW).unwrap();
        assert_eq!(own.petition.ratings[0].recorded_by, 0);
    }

    #[test]
    fn reopening_starts_a_new_round_within_the_period() {
        let mut closed = petition(PetitionState::Closed);
        closed.closed_at_ms = NOW - 1_000;
        closed.first_response_at_ms = 2_000;
        closed.resolved_at_ms = 3_000;
        closed.round = 1;
        closed.round_handler_ids = vec![ASSIGNEE];
        assert!(matches!(
            decide(&closed, &who(RESIDENT), &reopen(999), NOW),
            Err(PetitionError::Forbidden("the reopening period has passed"))
        ));
        for by in [ASSIGNEE, SUPERVISOR, ADMIN] {
            assert!(matches!(
                decide(&closed, &who(by), &reopen(i64::MAX), NOW),
                Err(PetitionError::Forbidden(_))
            ));
        }
        let empty = Command::Reopen {
            reason: " ".into(),
            within_ms: i64::MAX,
        };
        assert!(matches!(
            decide(&closed, &who(RESIDENT), &empty, NOW),
            Err(PetitionError::InvalidArgument(_))
        ));
        let out = decide(&closed, &who(RESIDENT), &reopen(1_000), NOW).unwrap();
        let p = out.petition;
        assert_eq!(p.state(), PetitionState::Submitted);
        assert_eq!(
            (p.round, p.reopen_count, p.round_started_at_ms),
            (2, 1, NOW)
        );
        assert_eq!(
            (p.first_response_at_ms, p.resolved_at_ms, p.closed_at_ms),
            (0, 0, 0)
        );
        assert!(p.round_handler_ids.is_empty());
        assert_eq!(out.transition.unwrap().round, 2);
        // A withdrawn petition cannot be reopened.
        assert_eq!(
            run(PetitionState::Withdrawn, RESIDENT, &reopen(i64::MAX)),
            Err(illegal(PetitionState::Withdrawn, Action::Reopen))
        );
    }

    #[test]
    fn only_the_system_closes_unrated_petitions() {
        for by in [RESIDENT, ASSIGNEE, ADMIN] {
            assert!(matches!(
                run(PetitionState::Resolved, by, &Command::CloseUnrated),
                Err(PetitionError::Forbidden(_))
            ));
        }
        let system = caller(0, Role::Admin, 0, 0);
        let out = decide(
            &petition(PetitionState::Resolved),
            &system,
            &Command::CloseUnrated,
            NOW,
        )
        .unwrap();
        assert_eq!(out.petition.state(), PetitionState::Closed);
        assert!(out.petition.ratings.is_empty(), "unrated stays unrated");
        assert_eq!(out.transition.unwrap().action(), Action::CloseUnrated);
    }

    #[test]
    fn the_assignees_first_reply_is_the_response() {
        let out = run(PetitionState::Submitted, ASSIGNEE, &Command::Message).unwrap();
        let p = &out.petition;
        assert_eq!(p.state(), PetitionState::Responded);
        assert_eq!(p.first_response_at_ms, NOW);
        assert_eq!(p.updated_at_ms, NOW);
        let t = out.transition.unwrap();
        assert_eq!(t.action(), Action::Respond);
        assert_eq!(t.from(), PetitionState::Submitted);
        assert_eq!(t.to(), PetitionState::Responded);
        assert_eq!(t.assignee_id, ASSIGNEE);
        assert_eq!(t.grid_id, GRID);
        assert_eq!(t.reason, "");
    }

    #[test]
    fn the_grid_heads_reply_is_a_response() {
        let out = run(PetitionState::Submitted, GRID_HEAD, &Command::Message).unwrap();
        assert_eq!(out.petition.state(), PetitionState::Responded);
        assert_eq!(out.petition.first_response_at_ms, NOW);
        assert_eq!(out.transition.unwrap().action(), Action::Respond);
    }

    #[test]
    fn other_handlers_replies_are_not_responses() {
        for by in [SAME_GRID_WORKER, SUPERVISOR, TOWNSHIP, ADMIN] {
            let out = run(PetitionState::Submitted, by, &Command::Message).unwrap();
            assert_eq!(out.petition.state(), PetitionState::Submitted, "{by}");
            assert_eq!(out.petition.first_response_at_ms, 0, "{by}");
            assert_eq!(out.transition, None, "{by}");
        }
    }

    #[test]
    fn residents_and_filers_messages_are_not_responses() {
        let p = filed_petition(PetitionState::Submitted);
        for by in [RESIDENT, CLERK] {
            let out = decide(&p, &who(by), &Command::Message, NOW).unwrap();
            assert_eq!(out.transition, None);
            assert_eq!(out.petition.state(), PetitionState::Submitted);
            assert_eq!(out.petition.updated_at_ms, NOW);
        }
    }

    #[test]
    fn a_staff_resident_assigned_to_themselves_does_not_respond_to_themselves() {
        let mut p = petition(PetitionState::Submitted);
        p.resident_id = ASSIGNEE;
        let out = decide(&p, &who(ASSIGNEE), &Command::Message, NOW).unwrap();
        assert_eq!(out.transition, None);
        assert_eq!(out.petition.first_response_at_ms, 0);
    }

    #[test]
    fn first_response_is_set_once_and_survives_transfers() {
        let p = petition(PetitionState::Submitted);
        let p = decide(&p, &who(ASSIGNEE), &Command::Message, 2_000)
            .unwrap()
            .petition;
        assert_eq!(p.first_response_at_ms, 2_000);
        // More replies do not move it.
        let p = decide(&p, &who(ASSIGNEE), &Command::Message, 2_500)
            .unwrap()
            .petition;
        assert_eq!(p.first_response_at_ms, 2_000);
        // A transfer keeps it.
        let out = decide(&p, &who(ASSIGNEE), &transfer(), 3_000).unwrap();
        let p = out.petition;
        assert_eq!(p.state(), PetitionState::Transferred);
        assert_eq!(p.first_response_at_ms, 2_000);
        // The new assignee's reply is a response, but the first response stays the first.
        let out = decide(&p, &who(OTHER_GRID_WORKER), &Command::Message, 4_000).unwrap();
        let t = out.transition.unwrap();
        assert_eq!(t.action(), Action::Respond);
        assert_eq!(t.from(), PetitionState::Transferred);
        assert_eq!(t.assignee_id, OTHER_GRID_WORKER);
        assert_eq!(t.grid_id, OTHER_GRID);
        assert_eq!(out.petition.state(), PetitionState::Responded);
        assert_eq!(out.petition.first_response_at_ms, 2_000);
        assert_eq!(out.petition.updated_at_ms, 4_000);
    }

    #[test]
    fn a_transfer_before_any_response_leaves_first_response_unset() {
        let out = run(PetitionState::Submitted, SAME_GRID_WORKER, &transfer()).unwrap();
        assert_eq!(out.petition.first_response_at_ms, 0);
        let out = decide(
            &out.petition,
            &who(OTHER_GRID_WORKER),
            &Command::Message,
            NOW + 1,
        )
        .unwrap();
        assert_eq!(out.petition.first_response_at_ms, NOW + 1);
    }

    #[test]
    fn after_a_transfer_the_old_assignee_no_longer_responds() {
        let p = run(PetitionState::Submitted, ASSIGNEE, &transfer())
            .unwrap()
            .petition;
        // The old assignee is in another grid now, so has no relation at all.
        assert_eq!(
            decide(&p, &who(ASSIGNEE), &Command::Message, NOW),
            Err(PetitionError::Forbidden(
                "not a participant of this petition"
            ))
        );
        // The old grid's head neither.
        assert!(decide(&p, &who(GRID_HEAD), &Command::Message, NOW).is_err());
        // The new grid's head responds.
        let out = decide(&p, &who(OTHER_GRID_HEAD), &Command::Message, NOW).unwrap();
        assert_eq!(out.petition.state(), PetitionState::Responded);
    }

    #[test]
    fn transfer_moves_the_petition_to_the_target() {
        let mut p = petition(PetitionState::Escalated);
        p.first_response_at_ms = 1_500;
        p.set_escalated_to(EscalationTarget::CoBuildingUnit);
        p.co_building_unit = "Water Co".into();
        let cmd = transfer_to(FAR_WORKER, FAR_GRID, OTHER_COMMUNITY, "belongs there");
        let out = decide(&p, &who(SUPERVISOR), &cmd, NOW).unwrap();
        let q = &out.petition;
        assert_eq!(q.state(), PetitionState::Transferred);
        assert_eq!(q.assignee_id, FAR_WORKER);
        assert_eq!(q.grid_id, FAR_GRID);
        assert_eq!(q.community_id, OTHER_COMMUNITY);
        assert_eq!(q.escalated_to(), EscalationTarget::Unspecified);
        assert_eq!(q.co_building_unit, "");
        assert_eq!(q.first_response_at_ms, 1_500);
        // Left for the caller to update.
        assert_eq!(q.grid_head_id, GRID_HEAD);
        let t = out.transition.unwrap();
        assert_eq!(t.action(), Action::Transfer);
        assert_eq!(t.from(), PetitionState::Escalated);
        assert_eq!(t.to(), PetitionState::Transferred);
        assert_eq!(t.reason, "belongs there");
        assert_eq!(t.assignee_id, FAR_WORKER);
        assert_eq!(t.grid_id, FAR_GRID);
    }

    #[test]
    fn transfer_within_the_grid() {
        let out = run(
            PetitionState::Responded,
            GRID_HEAD,
            &transfer_to(SAME_GRID_WORKER, GRID, COMMUNITY, "on leave"),
        )
        .unwrap();
        assert_eq!(out.petition.assignee_id, SAME_GRID_WORKER);
        assert_eq!(out.petition.grid_id, GRID);
        assert_eq!(out.petition.state(), PetitionState::Transferred);
    }

    #[test]
    fn escalate_to_the_community() {
        let out = run(PetitionState::Responded, ASSIGNEE, &escalate_community()).unwrap();
        let p = &out.petition;
        assert_eq!(p.state(), PetitionState::Escalated);
        assert_eq!(p.escalated_to(), EscalationTarget::Community);
        assert_eq!(p.co_building_unit, "");
        assert_eq!(p.assignee_id, ASSIGNEE);
        let t = out.transition.unwrap();
        assert_eq!(t.action(), Action::Escalate);
        assert_eq!(t.reason, "needs the community");
        assert_eq!(t.escalated_to(), EscalationTarget::Community);
        assert_eq!(t.co_building_unit, "");
    }

    #[test]
    fn escalate_to_a_co_building_unit() {
        let out = run(
            PetitionState::Transferred,
            ASSIGNEE,
            &escalate_unit("Water Co"),
        )
        .unwrap();
        let p = &out.petition;
        assert_eq!(p.state(), PetitionState::Escalated);
        assert_eq!(p.escalated_to(), EscalationTarget::CoBuildingUnit);
        assert_eq!(p.co_building_unit, "Water Co");
        let t = out.transition.unwrap();
        assert_eq!(t.from(), PetitionState::Transferred);
        assert_eq!(t.escalated_to(), EscalationTarget::CoBuildingUnit);
        assert_eq!(t.co_building_unit, "Water Co");
        assert_eq!(t.reason, "the water company");
    }

    #[test]
    fn escalating_from_submitted_does_not_count_as_a_response() {
        let out = run(PetitionState::Submitted, ASSIGNEE, &escalate_community()).unwrap();
        assert_eq!(out.petition.first_response_at_ms, 0);
    }

    #[test]
    fn resolve_records_the_summary() {
        for from in [PetitionState::Responded, PetitionState::Escalated] {
            let out = run(from, ASSIGNEE, &resolve()).unwrap();
            let p = &out.petition;
            assert_eq!(p.state(), PetitionState::Resolved);
            assert_eq!(p.resolution, "light repaired");
            assert_eq!(p.resolved_at_ms, NOW);
            assert_eq!(p.closed_at_ms, 0);
            let t = out.transition.unwrap();
            assert_eq!(t.action(), Action::Resolve);
            assert_eq!(t.from(), from);
            assert_eq!(t.reason, "light repaired");
        }
    }

    #[test]
    fn close_finishes_a_resolved_petition() {
        let mut p = petition(PetitionState::Resolved);
        p.resolved_at_ms = 4_000;
        let out = decide(&p, &who(RESIDENT), &Command::Close, NOW).unwrap();
        assert_eq!(out.petition.state(), PetitionState::Closed);
        assert_eq!(out.petition.closed_at_ms, NOW);
        assert_eq!(out.petition.resolved_at_ms, 4_000);
        let t = out.transition.unwrap();
        assert_eq!(t.action(), Action::Close);
        assert_eq!(t.from(), PetitionState::Resolved);
        assert_eq!(t.to(), PetitionState::Closed);
    }

    #[test]
    fn withdraw_with_or_without_a_reason() {
        let out = run(PetitionState::Escalated, RESIDENT, &withdraw()).unwrap();
        assert_eq!(out.petition.state(), PetitionState::Withdrawn);
        assert_eq!(out.petition.closed_at_ms, NOW);
        let t = out.transition.unwrap();
        assert_eq!(t.action(), Action::Withdraw);
        assert_eq!(t.reason, "fixed itself");
        let out = run(
            PetitionState::Submitted,
            RESIDENT,
            &Command::Withdraw {
                reason: String::new(),
            },
        )
        .unwrap();
        assert_eq!(out.petition.state(), PetitionState::Withdrawn);
        assert_eq!(out.transition.unwrap().reason, "");
    }

    #[test]
    fn messages_on_a_resolved_petition_are_fine() {
        for by in [RESIDENT, ASSIGNEE, GRID_HEAD] {
            let out = run(PetitionState::Resolved, by, &Command::Message).unwrap();
            assert_eq!(out.transition, None);
            assert_eq!(out.petition.state(), PetitionState::Resolved);
        }
    }

    #[test]
    fn the_machine_never_touches_last_seq_or_grid_head() {
        let p = petition(PetitionState::Submitted);
        let out = decide(&p, &who(ASSIGNEE), &Command::Message, NOW).unwrap();
        assert_eq!(out.petition.last_seq, p.last_seq);
        assert_eq!(out.petition.grid_head_id, p.grid_head_id);
    }

    // ---- Illegal transitions in detail. ----

    #[test]
    fn resolve_needs_a_response_first() {
        for from in [PetitionState::Submitted, PetitionState::Transferred] {
            assert_eq!(
                run(from, ASSIGNEE, &resolve()),
                Err(illegal(from, Action::Resolve))
            );
        }
    }

    #[test]
    fn no_second_escalation() {
        assert_eq!(
            run(PetitionState::Escalated, ASSIGNEE, &escalate_unit("Gas Co")),
            Err(illegal(PetitionState::Escalated, Action::Escalate))
        );
    }

    #[test]
    fn closed_and_withdrawn_accept_nothing() {
        let commands = [
            (Command::Message, RESIDENT),
            (Command::Message, ASSIGNEE),
            (transfer(), ASSIGNEE),
            (escalate_community(), ASSIGNEE),
            (resolve(), ASSIGNEE),
            (Command::Close, RESIDENT),
            (withdraw(), RESIDENT),
        ];
        for state in [PetitionState::Closed, PetitionState::Withdrawn] {
            for (cmd, by) in &commands {
                assert_eq!(
                    run(state, *by, cmd),
                    Err(illegal(state, action_of(cmd))),
                    "{cmd:?} on {state:?}"
                );
            }
        }
    }

    #[test]
    fn a_message_on_a_closed_petition_names_no_action() {
        let e = run(PetitionState::Closed, RESIDENT, &Command::Message).unwrap_err();
        assert_eq!(e, illegal(PetitionState::Closed, Action::Unspecified));
        assert_eq!(
            e.to_string(),
            "cannot send a message to a petition that is closed"
        );
    }

    #[test]
    fn a_petition_with_an_unknown_state_number_is_treated_as_unspecified() {
        let mut p = petition(PetitionState::Submitted);
        p.state = 99;
        assert_eq!(
            decide(&p, &who(ASSIGNEE), &resolve(), NOW),
            Err(illegal(PetitionState::Unspecified, Action::Resolve))
        );
    }

    // ---- Forbidden. ----

    #[test]
    fn strangers_may_do_nothing() {
        let commands = [
            Command::Message,
            transfer(),
            escalate_community(),
            resolve(),
            Command::Close,
            withdraw(),
        ];
        let strangers = [
            NEIGHBOUR,
            OTHER_GRID_WORKER,
            FAR_WORKER,
            OTHER_GRID_HEAD,
            OTHER_SUPERVISOR,
            CLERK,
            999,
        ];
        for state in ALL_STATES {
            for by in strangers {
                for cmd in &commands {
                    assert!(
                        matches!(run(state, by, cmd), Err(PetitionError::Forbidden(_))),
                        "{by} {cmd:?} on {state:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn the_resident_may_not_handle() {
        for (cmd, from) in [
            (transfer(), PetitionState::Submitted),
            (escalate_community(), PetitionState::Submitted),
            (resolve(), PetitionState::Responded),
        ] {
            assert!(matches!(
                run(from, RESIDENT, &cmd),
                Err(PetitionError::Forbidden(_))
            ));
        }
    }

    #[test]
    fn a_filer_may_message_but_not_handle_or_close() {
        let p = filed_petition(PetitionState::Responded);
        let clerk = who(CLERK);
        assert!(decide(&p, &clerk, &Command::Message, NOW).is_ok());
        for cmd in [
            transfer(),
            escalate_community(),
            resolve(),
            Command::Close,
            withdraw(),
        ] {
            assert!(
                matches!(
                    decide(&p, &clerk, &cmd, NOW),
                    Err(PetitionError::Forbidden(_))
                ),
                "{cmd:?}"
            );
        }
    }

    #[test]
    fn only_the_resident_closes_or_withdraws() {
        for by in [ASSIGNEE, GRID_HEAD, SUPERVISOR, TOWNSHIP, ADMIN] {
            assert!(matches!(
                run(PetitionState::Resolved, by, &Command::Close),
                Err(PetitionError::Forbidden(_))
            ));
            assert!(matches!(
                run(PetitionState::Submitted, by, &withdraw()),
                Err(PetitionError::Forbidden(_))
            ));
        }
    }

    #[test]
    fn any_handler_may_transfer_escalate_and_resolve() {
        for by in [
            ASSIGNEE,
            SAME_GRID_WORKER,
            GRID_HEAD,
            SUPERVISOR,
            TOWNSHIP,
            ADMIN,
        ] {
            assert!(
                run(PetitionState::Responded, by, &transfer()).is_ok(),
                "{by}"
            );
            assert!(
                run(PetitionState::Responded, by, &escalate_community()).is_ok(),
                "{by}"
            );
            assert!(
                run(PetitionState::Responded, by, &resolve()).is_ok(),
                "{by}"
            );
        }
    }

    #[test]
    fn access_is_checked_before_state() {
        // The resident asking to resolve a closed petition is told they may not, not that it is closed.
        assert!(matches!(
            run(PetitionState::Closed, RESIDENT, &resolve()),
            Err(PetitionError::Forbidden(_))
        ));
        assert!(matches!(
            run(PetitionState::Closed, ASSIGNEE, &Command::Close),
            Err(PetitionError::Forbidden(_))
        ));
    }

    // ---- Arguments. ----

    #[test]
    fn transfer_arguments() {
        let cases = [
            transfer_to(OTHER_GRID_WORKER, OTHER_GRID, COMMUNITY, ""),
            transfer_to(OTHER_GRID_WORKER, OTHER_GRID, COMMUNITY, "  \t\n"),
            transfer_to(0, OTHER_GRID, COMMUNITY, "why"),
            transfer_to(OTHER_GRID_WORKER, 0, COMMUNITY, "why"),
            transfer_to(ASSIGNEE, GRID, COMMUNITY, "why"),
        ];
        for cmd in &cases {
            assert!(
                matches!(
                    run(PetitionState::Submitted, ASSIGNEE, cmd),
                    Err(PetitionError::InvalidArgument(_))
                ),
                "{cmd:?}"
            );
        }
    }

    #[test]
    fn escalate_arguments() {
        let unspecified = Command::Escalate {
            target: EscalationTarget::Unspecified,
            unit_name: "x".into(),
            note: String::new(),
        };
        for cmd in [unspecified, escalate_unit(""), escalate_unit("   ")] {
            assert!(
                matches!(
                    run(PetitionState::Responded, ASSIGNEE, &cmd),
                    Err(PetitionError::InvalidArgument(_))
                ),
                "{cmd:?}"
            );
        }
        // The note is optional; a unit name given for the community is ignored.
        let cmd = Command::Escalate {
            target: EscalationTarget::Community,
            unit_name: "ignored".into(),
            note: String::new(),
        };
        let out = run(PetitionState::Responded, ASSIGNEE, &cmd).unwrap();
        assert_eq!(out.petition.co_building_unit, "");
    }

    #[test]
    fn resolve_arguments() {
        for summary in ["", " \n "] {
            assert!(matches!(
                run(
                    PetitionState::Responded,
                    ASSIGNEE,
                    &Command::Resolve {
                        summary: summary.into()
                    }
                ),
                Err(PetitionError::InvalidArgument(_))
            ));
        }
    }

    #[test]
    fn state_is_checked_before_arguments() {
        assert_eq!(
            run(PetitionState::Resolved, ASSIGNEE, &transfer_to(0, 0, 0, "")),
            Err(illegal(PetitionState::Resolved, Action::Transfer))
        );
        assert_eq!(
            run(
                PetitionState::Submitted,
                ASSIGNEE,
                &Command::Resolve {
                    summary: String::new()
                }
            ),
            Err(illegal(PetitionState::Submitted, Action::Resolve))
        );
    }

    // ---- Small helpers. ----

    #[test]
    fn is_open_is_everything_but_closed_and_withdrawn() {
        for s in ALL_STATES {
            assert_eq!(
                is_open(s),
                !matches!(s, PetitionState::Closed | PetitionState::Withdrawn),
                "{s:?}"
            );
        }
    }

    #[test]
    fn action_of_each_command() {
        assert_eq!(action_of(&Command::Message), Action::Unspecified);
        assert_eq!(action_of(&transfer()), Action::Transfer);
        assert_eq!(action_of(&escalate_community()), Action::Escalate);
        assert_eq!(action_of(&resolve()), Action::Resolve);
        assert_eq!(action_of(&Command::Close), Action::Close);
        assert_eq!(action_of(&withdraw()), Action::Withdraw);
    }

    #[test]
    fn error_messages() {
        assert_eq!(PetitionError::Forbidden("x").to_string(), "not allowed: x");
        assert_eq!(
            PetitionError::InvalidArgument("y").to_string(),
            "invalid argument: y"
        );
        assert_eq!(
            illegal(PetitionState::Submitted, Action::Resolve).to_string(),
            "cannot resolve a petition that is submitted"
        );
    }

    #[test]
    fn an_unspecified_role_has_no_relation_unless_named() {
        let c = caller(SAME_GRID_WORKER, Role::Unspecified, COMMUNITY, GRID);
        assert!(matches!(
            decide(
                &petition(PetitionState::Submitted),
                &c,
                &Command::Message,
                NOW
            ),
            Err(PetitionError::Forbidden(_))
        ));
    }

    // ---- Property tests. ----

    mod properties {
        use proptest::prelude::*;

        use super::*;

        /// Who sends a command in a random run.
        #[derive(Debug, Clone, Copy)]
        enum Who {
            /// Whoever is the assignee at that moment.
            CurrentAssignee,
            /// A fixed account of the fixtures.
            Account(u64),
        }

        fn who_strategy() -> impl Strategy<Value = Who> {
            prop_oneof![
                3 => Just(Who::CurrentAssignee),
                2 => Just(Who::Account(RESIDENT)),
                1 => Just(Who::Account(ASSIGNEE)),
                1 => Just(Who::Account(SAME_GRID_WORKER)),
                1 => Just(Who::Account(OTHER_GRID_WORKER)),
                1 => Just(Who::Account(FAR_WORKER)),
                1 => Just(Who::Account(GRID_HEAD)),
                1 => Just(Who::Account(OTHER_GRID_HEAD)),
                1 => Just(Who::Account(SUPERVISOR)),
                1 => Just(Who::Account(OTHER_SUPERVISOR)),
                1 => Just(Who::Account(NEIGHBOUR)),
                1 => Just(Who::Account(CLERK)),
            ]
        }

        fn resolve_who(w: Who, p: &Petition) -> Caller {
            match w {
                Who::Account(id) => who(id),
                Who::CurrentAssignee => {
                    let c = who(p.assignee_id);
                    if c.role == Role::Unspecified {
                        caller(p.assignee_id, Role::Worker, p.community_id, p.grid_id)
                    } else {
                        c
                    }
                }
            }
        }

        fn target_strategy() -> impl Strategy<Value = TransferTarget> {
            prop_oneof![
                Just((ASSIGNEE, GRID, COMMUNITY)),
                Just((SAME_GRID_WORKER, GRID, COMMUNITY)),
                Just((OTHER_GRID_WORKER, OTHER_GRID, COMMUNITY)),
                Just((FAR_WORKER, FAR_GRID, OTHER_COMMUNITY)),
                Just((GRID_HEAD, GRID, COMMUNITY)),
                Just((0, GRID, COMMUNITY)),
                Just((SAME_GRID_WORKER, 0, COMMUNITY)),
            ]
            .prop_map(|(worker_id, grid_id, community_id)| TransferTarget {
                worker_id,
                grid_id,
                community_id,
            })
        }

        fn text() -> impl Strategy<Value = String> {
            prop_oneof![Just(String::new()), Just(" ".to_owned()), "[a-z ]{1,12}"]
        }

        fn command_strategy() -> impl Strategy<Value = Command> {
            let escalation_target = prop_oneof![
                Just(EscalationTarget::Unspecified),
                Just(EscalationTarget::Community),
                Just(EscalationTarget::CoBuildingUnit),
            ];
            prop_oneof![
                4 => Just(Command::Message),
                2 => (target_strategy(), text())
                    .prop_map(|(to, reason)| Command::Transfer { to, reason }),
                1 => (escalation_target, text(), text()).prop_map(|(target, unit_name, note)| {
                    Command::Escalate {
                        target,
                        unit_name,
                        note,
                    }
                }),
                2 => text().prop_map(|summary| Command::Resolve { summary }),
                2 => Just(Command::Close),
                1 => text().prop_map(|reason| Command::Withdraw { reason }),
            ]
        }

        fn start_strategy() -> impl Strategy<Value = Petition> {
            prop_oneof![
                4 => Just(petition(PetitionState::Submitted)),
                1 => Just(filed_petition(PetitionState::Submitted)),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            #[test]
            fn random_runs_keep_the_invariants(
                start in start_strategy(),
                steps in prop::collection::vec((who_strategy(), command_strategy()), 0..=30),
            ) {
                let mut p = start;
                let mut finished = false;
                for (i, (w, cmd)) in steps.into_iter().enumerate() {
                    let now = 10_000 + 1_000 * i64::try_from(i).unwrap();
                    let c = resolve_who(w, &p);
                    let rel = relation(&p, &c);
                    let before = p.clone();
                    match decide(&p, &c, &cmd, now) {
                        Ok(out) => {
                            prop_assert!(!finished, "{cmd:?} accepted after the end");
                            prop_assert_ne!(rel, Relation::None);
                            let q = out.petition;
                            prop_assert_eq!(q.updated_at_ms, now);
                            prop_assert_eq!(q.last_seq, before.last_seq);
                            prop_assert_eq!(q.id, before.id);
                            prop_assert_eq!(q.resident_id, before.resident_id);
                            prop_assert_eq!(&q.filed_by, &before.filed_by);
                            match &out.transition {
                                Some(t) => {
                                    prop_assert_eq!(t.from(), before.state());
                                    prop_assert_eq!(t.to(), q.state());
                                    // Only a re-transfer keeps the state.
                                    if t.from() == t.to() {
                                        prop_assert_eq!(t.action(), Action::Transfer);
                                    }
                                    prop_assert_eq!(t.assignee_id, q.assignee_id);
                                    prop_assert_eq!(t.grid_id, q.grid_id);
                                    if t.action() != Action::Respond {
                                        prop_assert_eq!(t.action(), action_of(&cmd));
                                    }
                                }
                                None => {
                                    prop_assert_eq!(q.state(), before.state());
                                    prop_assert!(matches!(cmd, Command::Message));
                                    let mut same = q.clone();
                                    same.updated_at_ms = before.updated_at_ms;
                                    prop_assert_eq!(&same, &before);
                                }
                            }
                            if before.first_response_at_ms != 0 {
                                prop_assert_eq!(q.first_response_at_ms, before.first_response_at_ms);
                            } else if q.first_response_at_ms != 0 {
                                prop_assert_eq!(q.first_response_at_ms, now);
                                prop_assert_eq!(
                                    out.transition.as_ref().map(|t| t.action()),
                                    Some(Action::Respond)
                                );
                            }
                            prop_assert!(q.assignee_id != 0 && q.grid_id != 0);
                            p = q;
                        }
                        Err(e) => {
                            if rel == Relation::None {
                                prop_assert!(matches!(e, PetitionError::Forbidden(_)));
                            }
                            if let PetitionError::IllegalTransition { from, action } = e {
                                prop_assert_eq!(from, before.state());
                                prop_assert_eq!(action, action_of(&cmd));
                            }
                            // decide took &p: the same petition goes on to the next step.
                            prop_assert_eq!(&p, &before);
                        }
                    }
                    finished = !is_open(p.state());
                    if finished {
                        prop_assert!(p.closed_at_ms != 0);
                    }
                }
            }
        }
    }
}
