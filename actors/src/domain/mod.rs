//! Pure domain rules, with no actors and no I/O.
//!
//! - [`access`]: how an account relates to a petition, and so what it may see and do.
//! - [`petition`]: the petition state machine: which command is allowed in which state, and what
//!   it changes.
//! - [`calendar`], [`supervision`]: deadlines, office hours and the supervision ladder.
//! - [`board`]: the response board's figures (docs/metrics.md).
//! - [`appraisal`]: workload points, evaluation scores and totals (docs/appraisal.md).

pub mod access;
pub mod appraisal;
pub mod board;
pub mod calendar;
pub mod petition;
pub mod supervision;

/// Accounts and petitions shared by the domain tests.
#[cfg(test)]
pub(crate) mod fixtures {
    use lianxin_protocol::v1::{Channel, FiledBy, Petition, PetitionState, Role};

    use super::access::Caller;

    /// The petition's community.
    pub const COMMUNITY: u64 = 10;
    /// Another community.
    pub const OTHER_COMMUNITY: u64 = 11;
    /// The petition's grid (in [`COMMUNITY`]).
    pub const GRID: u64 = 100;
    /// Another grid of [`COMMUNITY`].
    pub const OTHER_GRID: u64 = 101;
    /// A grid of [`OTHER_COMMUNITY`].
    pub const FAR_GRID: u64 = 200;

    /// The petition's resident.
    pub const RESIDENT: u64 = 1;
    /// The petition's first assignee, a worker of [`GRID`].
    pub const ASSIGNEE: u64 = 2;
    /// Another worker of [`GRID`].
    pub const SAME_GRID_WORKER: u64 = 3;
    /// A worker of [`OTHER_GRID`].
    pub const OTHER_GRID_WORKER: u64 = 4;
    /// A worker of [`FAR_GRID`].
    pub const FAR_WORKER: u64 = 5;
    /// The head of [`GRID`].
    pub const GRID_HEAD: u64 = 6;
    /// The head of [`OTHER_GRID`].
    pub const OTHER_GRID_HEAD: u64 = 7;
    /// A supervisor of [`COMMUNITY`].
    pub const SUPERVISOR: u64 = 8;
    /// A supervisor of [`OTHER_COMMUNITY`].
    pub const OTHER_SUPERVISOR: u64 = 9;
    /// A township supervisor.
    pub const TOWNSHIP: u64 = 10;
    /// An administrator.
    pub const ADMIN: u64 = 11;
    /// Another resident of [`GRID`].
    pub const NEIGHBOUR: u64 = 12;
    /// A staff member with no grid who files petitions for residents.
    pub const CLERK: u64 = 13;

    /// A caller with the given identity.
    pub fn caller(account_id: u64, role: Role, community_id: u64, grid_id: u64) -> Caller {
        Caller {
            account_id,
            role,
            community_id,
            grid_id,
        }
    }

    /// Every account above, as a caller.
    pub fn cast() -> Vec<Caller> {
        vec![
            caller(RESIDENT, Role::Resident, COMMUNITY, GRID),
            caller(ASSIGNEE, Role::Worker, COMMUNITY, GRID),
            caller(SAME_GRID_WORKER, Role::Worker, COMMUNITY, GRID),
            caller(OTHER_GRID_WORKER, Role::Worker, COMMUNITY, OTHER_GRID),
            caller(FAR_WORKER, Role::Worker, OTHER_COMMUNITY, FAR_GRID),
            caller(GRID_HEAD, Role::GridHead, COMMUNITY, GRID),
            caller(OTHER_GRID_HEAD, Role::GridHead, COMMUNITY, OTHER_GRID),
            caller(SUPERVISOR, Role::CommunitySupervisor, COMMUNITY, 0),
            caller(
                OTHER_SUPERVISOR,
                Role::CommunitySupervisor,
                OTHER_COMMUNITY,
                0,
            ),
            caller(TOWNSHIP, Role::TownshipSupervisor, 0, 0),
            caller(ADMIN, Role::Admin, 0, 0),
            caller(NEIGHBOUR, Role::Resident, COMMUNITY, GRID),
            caller(CLERK, Role::Worker, COMMUNITY, 0),
        ]
    }

    /// The caller in [`cast`] with this id.
    pub fn who(account_id: u64) -> Caller {
        cast()
            .into_iter()
            .find(|c| c.account_id == account_id)
            .unwrap_or_else(|| caller(account_id, Role::Unspecified, 0, 0))
    }

    /// A petition of [`RESIDENT`] in [`GRID`], assigned to [`ASSIGNEE`], in the given state.
    pub fn petition(state: PetitionState) -> Petition {
        let mut p = Petition {
            id: 77,
            resident_id: RESIDENT,
            resident_name: "Resident".into(),
            community_id: COMMUNITY,
            grid_id: GRID,
            assignee_id: ASSIGNEE,
            title: "Broken street light".into(),
            created_at_ms: 1_000,
            updated_at_ms: 1_000,
            last_seq: 3,
            grid_head_id: GRID_HEAD,
            ..Default::default()
        };
        p.set_state(state);
        p.set_channel(Channel::Online);
        p
    }

    /// Like [`petition`], filed by [`CLERK`] on the resident's behalf.
    pub fn filed_petition(state: PetitionState) -> Petition {
        let mut p = petition(state);
        p.set_channel(Channel::Phone);
        p.filed_by = Some(FiledBy {
            staff_id: CLERK,
            channel: Channel::Phone.into(),
        });
        p
    }
}
