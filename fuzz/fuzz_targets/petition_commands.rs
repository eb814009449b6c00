//! The petition state machine (`lianxin_actors::domain::petition::decide`): any sequence of
//! commands by any caller, with any arguments, never panics, and every accepted command keeps the
//! invariants the storage and the feed rely on.
#![no_main]

use arbitrary::Arbitrary;
use lianxin_actors::domain::access::Caller;
use lianxin_actors::domain::petition::{Command, TransferTarget, action_of, decide, is_open};
use lianxin_protocol::v1::{
    Action, Channel, EscalationTarget, FiledBy, Petition, PetitionState, RatingLevel, Role,
};
use libfuzzer_sys::fuzz_target;

const COMMUNITY: u64 = 10;
const OTHER_COMMUNITY: u64 = 11;
const GRID: u64 = 100;
const OTHER_GRID: u64 = 101;
const FAR_GRID: u64 = 200;

/// The cast: (id, role, community, grid); the resident is 1, the first assignee 2, the grid
/// head 6, the clerk who files by phone 13.
const CAST: [(u64, Role, u64, u64); 13] = [
    (1, Role::Resident, COMMUNITY, GRID),
    (2, Role::Worker, COMMUNITY, GRID),
    (3, Role::Worker, COMMUNITY, GRID),
    (4, Role::Worker, COMMUNITY, OTHER_GRID),
    (5, Role::Worker, OTHER_COMMUNITY, FAR_GRID),
    (6, Role::GridHead, COMMUNITY, GRID),
    (7, Role::GridHead, COMMUNITY, OTHER_GRID),
    (8, Role::CommunitySupervisor, COMMUNITY, 0),
    (9, Role::CommunitySupervisor, OTHER_COMMUNITY, 0),
    (10, Role::TownshipSupervisor, 0, 0),
    (11, Role::Admin, 0, 0),
    (12, Role::Resident, COMMUNITY, GRID),
    (13, Role::Worker, COMMUNITY, 0),
];

#[derive(Debug, Arbitrary)]
enum Who {
    Assignee,
    Cast(u8),
    Anyone {
        id: u64,
        role: i32,
        community: u64,
        grid: u64,
    },
}

#[derive(Debug, Arbitrary)]
enum Cmd {
    Message,
    Transfer {
        worker: u64,
        grid: u64,
        community: u64,
        reason: String,
    },
    Escalate {
        target: i32,
        unit: String,
        note: String,
    },
    Resolve(String),
    Close,
    Withdraw(String),
    Rate {
        level: i32,
        comment: String,
        by_phone: bool,
    },
    Reopen {
        reason: String,
        within_ms: i64,
    },
    CloseUnrated,
}

#[derive(Debug, Arbitrary)]
struct Run {
    filed: bool,
    start: u8,
    steps: Vec<(Who, Cmd, u16)>,
}

fn caller(w: &Who, p: &Petition) -> Caller {
    let (account_id, role, community_id, grid_id) = match *w {
        Who::Assignee => CAST
            .iter()
            .copied()
            .find(|c| c.0 == p.assignee_id)
            .unwrap_or((p.assignee_id, Role::Worker, p.community_id, p.grid_id)),
        Who::Cast(i) => CAST[usize::from(i) % CAST.len()],
        Who::Anyone {
            id,
            role,
            community,
            grid,
        } => (
            id,
            Role::try_from(role).unwrap_or(Role::Unspecified),
            community,
            grid,
        ),
    };
    Caller {
        account_id,
        role,
        community_id,
        grid_id,
    }
}

fn command(c: Cmd) -> Command {
    match c {
        Cmd::Message => Command::Message,
        Cmd::Transfer {
            worker,
            grid,
            community,
            reason,
        } => Command::Transfer {
            to: TransferTarget {
                worker_id: worker % 16,
                grid_id: grid % 256,
                community_id: community % 16,
            },
            reason,
        },
        Cmd::Escalate { target, unit, note } => Command::Escalate {
            target: EscalationTarget::try_from(target).unwrap_or(EscalationTarget::Unspecified),
            unit_name: unit,
            note,
        },
        Cmd::Resolve(summary) => Command::Resolve { summary },
        Cmd::Close => Command::Close,
        Cmd::Withdraw(reason) => Command::Withdraw { reason },
        Cmd::Rate {
            level,
            comment,
            by_phone,
        } => Command::Rate {
            level: RatingLevel::try_from(level).unwrap_or(RatingLevel::Unspecified),
            comment,
            by_phone,
        },
        Cmd::Reopen { reason, within_ms } => Command::Reopen { reason, within_ms },
        Cmd::CloseUnrated => Command::CloseUnrated,
    }
}

fuzz_target!(|run: Run| {
    let mut p = Petition {
        id: 77,
        resident_id: 1,
        resident_name: "居民".into(),
        community_id: COMMUNITY,
        grid_id: GRID,
        assignee_id: 2,
        title: "路灯".into(),
        created_at_ms: 1_000,
        updated_at_ms: 1_000,
        last_seq: 3,
        grid_head_id: 6,
        round: 1,
        ..Default::default()
    };
    let states = [
        PetitionState::Submitted,
        PetitionState::Responded,
        PetitionState::Transferred,
        PetitionState::Escalated,
        PetitionState::Resolved,
        PetitionState::Closed,
        PetitionState::Withdrawn,
    ];
    p.set_state(states[usize::from(run.start) % states.len()]);
    p.set_channel(Channel::Online);
    if run.filed {
        p.set_channel(Channel::Phone);
        p.filed_by = Some(FiledBy {
            staff_id: 13,
            channel: Channel::Phone.into(),
        });
    }
    let mut now = 10_000i64;
    for (who, cmd, step) in run.steps.into_iter().take(64) {
        now += i64::from(step);
        let c = caller(&who, &p);
        let cmd = command(cmd);
        let before = p.clone();
        let Ok(out) = decide(&p, &c, &cmd, now) else {
            continue;
        };
        let q = out.petition;
        assert_eq!(q.id, before.id);
        assert_eq!(q.resident_id, before.resident_id);
        assert_eq!(q.last_seq, before.last_seq, "decide never numbers entries");
        assert_eq!(q.updated_at_ms, now);
        assert_eq!(q.filed_by, before.filed_by);
        assert!(q.assignee_id != 0 && q.grid_id != 0, "{q:?}");
        match &out.transition {
            Some(t) => {
                assert_eq!(t.from(), before.state());
                assert_eq!(t.to(), q.state());
                if t.action() != Action::Respond {
                    assert_eq!(t.action(), action_of(&cmd));
                }
            }
            None => {
                assert!(matches!(cmd, Command::Message), "{cmd:?} changed nothing");
                assert_eq!(q.state(), before.state());
                assert!(is_open(before.state()), "a message to a finished petition");
            }
        }
        if !is_open(before.state()) {
            // Only the resident's reopening (or nothing) follows Closed; nothing follows Withdrawn.
            assert_eq!(
                before.state(),
                PetitionState::Closed,
                "{cmd:?} after withdrawal"
            );
            assert!(
                matches!(cmd, Command::Reopen { .. }),
                "{cmd:?} on a closed petition"
            );
        }
        p = q;
    }
});
