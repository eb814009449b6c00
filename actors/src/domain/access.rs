//! Who may do what to a petition.
//!
//! Everything follows from [`relation`]: the petition's resident, its handlers (the assignee, the
//! staff of its grid, its community's supervisors, township supervisors and admins), and the staff
//! member who filed it for the resident. Anyone else may neither see nor touch it.

use lianxin_protocol::v1::{Petition, Role};

/// The account performing a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The account's id.
    pub account_id: u64,
    /// The account's role.
    pub role: Role,
    /// The account's community (0 for township supervisors and admins).
    pub community_id: u64,
    /// The account's grid (0 for supervisors and admins).
    pub grid_id: u64,
}

/// How an account stands towards a petition; the first that applies, in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Relation {
    /// The resident who raised it (or for whom it was filed).
    Resident,
    /// Someone who handles it: the assignee, its grid's staff, or a supervisor over it.
    Handler,
    /// The staff member who filed it for the resident.
    Filer,
    /// No relation: may neither see nor touch it.
    None,
}

/// How `c` stands towards `p`.
pub fn relation(p: &Petition, c: &Caller) -> Relation {
    if c.account_id == p.resident_id {
        Relation::Resident
    } else if is_handler(p, c) {
        Relation::Handler
    } else if p
        .filed_by
        .as_ref()
        .is_some_and(|f| f.staff_id != 0 && f.staff_id == c.account_id)
    {
        Relation::Filer
    } else {
        Relation::None
    }
}

fn is_handler(p: &Petition, c: &Caller) -> bool {
    let assignee = p.assignee_id != 0 && c.account_id == p.assignee_id;
    assignee
        || match c.role {
            Role::Worker | Role::GridHead => p.grid_id != 0 && c.grid_id == p.grid_id,
            Role::CommunitySupervisor => p.community_id != 0 && c.community_id == p.community_id,
            Role::TownshipSupervisor | Role::Admin => true,
            Role::Resident | Role::Unspecified => false,
        }
}

/// Whether `c` may see `p` (any relation but [`Relation::None`]).
pub fn can_view(p: &Petition, c: &Caller) -> bool {
    relation(p, c) != Relation::None
}

/// Whether a message by `c` answers `p` for the resident: `c` is its assignee or its grid's head.
pub fn counts_as_response(p: &Petition, c: &Caller) -> bool {
    (p.assignee_id != 0 && c.account_id == p.assignee_id)
        || (c.role == Role::GridHead && p.grid_id != 0 && c.grid_id == p.grid_id)
}

#[cfg(test)]
mod tests {
    use lianxin_protocol::v1::PetitionState;

    use super::*;
    use crate::domain::fixtures::*;

    fn rel(account_id: u64) -> Relation {
        relation(&petition(PetitionState::Submitted), &who(account_id))
    }

    #[test]
    fn the_resident_is_resident() {
        assert_eq!(rel(RESIDENT), Relation::Resident);
    }

    #[test]
    fn the_assignee_is_handler() {
        assert_eq!(rel(ASSIGNEE), Relation::Handler);
    }

    #[test]
    fn a_worker_of_the_same_grid_is_handler() {
        assert_eq!(rel(SAME_GRID_WORKER), Relation::Handler);
    }

    #[test]
    fn the_grid_head_is_handler() {
        assert_eq!(rel(GRID_HEAD), Relation::Handler);
    }

    #[test]
    fn a_supervisor_of_the_community_is_handler() {
        assert_eq!(rel(SUPERVISOR), Relation::Handler);
    }

    #[test]
    fn township_supervisors_and_admins_are_handlers() {
        assert_eq!(rel(TOWNSHIP), Relation::Handler);
        assert_eq!(rel(ADMIN), Relation::Handler);
    }

    #[test]
    fn a_worker_of_another_grid_is_none() {
        assert_eq!(rel(OTHER_GRID_WORKER), Relation::None);
        assert_eq!(rel(FAR_WORKER), Relation::None);
    }

    #[test]
    fn the_head_of_another_grid_is_none() {
        assert_eq!(rel(OTHER_GRID_HEAD), Relation::None);
    }

    #[test]
    fn a_supervisor_of_another_community_is_none() {
        assert_eq!(rel(OTHER_SUPERVISOR), Relation::None);
    }

    #[test]
    fn another_resident_of_the_same_grid_is_none() {
        assert_eq!(rel(NEIGHBOUR), Relation::None);
    }

    #[test]
    fn an_unknown_account_is_none() {
        assert_eq!(rel(999), Relation::None);
    }

    #[test]
    fn a_worker_of_another_grid_who_is_the_assignee_is_handler() {
        let mut p = petition(PetitionState::Transferred);
        p.assignee_id = OTHER_GRID_WORKER;
        assert_eq!(relation(&p, &who(OTHER_GRID_WORKER)), Relation::Handler);
        assert_eq!(relation(&p, &who(FAR_WORKER)), Relation::None);
    }

    #[test]
    fn after_a_transfer_the_new_grid_staff_handle_and_the_old_do_not() {
        let mut p = petition(PetitionState::Transferred);
        p.assignee_id = FAR_WORKER;
        p.grid_id = FAR_GRID;
        p.community_id = OTHER_COMMUNITY;
        assert_eq!(relation(&p, &who(FAR_WORKER)), Relation::Handler);
        assert_eq!(relation(&p, &who(OTHER_SUPERVISOR)), Relation::Handler);
        assert_eq!(relation(&p, &who(ASSIGNEE)), Relation::None);
        assert_eq!(relation(&p, &who(GRID_HEAD)), Relation::None);
        assert_eq!(relation(&p, &who(SUPERVISOR)), Relation::None);
        assert_eq!(relation(&p, &who(RESIDENT)), Relation::Resident);
    }

    #[test]
    fn the_staff_who_filed_it_is_filer() {
        let p = filed_petition(PetitionState::Submitted);
        assert_eq!(relation(&p, &who(CLERK)), Relation::Filer);
        // Without filed_by the same clerk has no relation (no grid).
        let plain = petition(PetitionState::Submitted);
        assert_eq!(relation(&plain, &who(CLERK)), Relation::None);
    }

    #[test]
    fn a_filer_who_also_handles_is_handler() {
        let mut p = filed_petition(PetitionState::Submitted);
        if let Some(f) = p.filed_by.as_mut() {
            f.staff_id = SAME_GRID_WORKER;
        }
        assert_eq!(relation(&p, &who(SAME_GRID_WORKER)), Relation::Handler);
    }

    #[test]
    fn resident_comes_before_handler() {
        // A worker who raised a petition in their own grid is its resident.
        let mut p = petition(PetitionState::Submitted);
        p.resident_id = SAME_GRID_WORKER;
        assert_eq!(relation(&p, &who(SAME_GRID_WORKER)), Relation::Resident);
        p.assignee_id = SAME_GRID_WORKER;
        assert_eq!(relation(&p, &who(SAME_GRID_WORKER)), Relation::Resident);
    }

    #[test]
    fn a_zero_staff_id_makes_no_filer() {
        let mut p = filed_petition(PetitionState::Submitted);
        if let Some(f) = p.filed_by.as_mut() {
            f.staff_id = 0;
        }
        assert_eq!(
            relation(&p, &caller(0, Role::Unspecified, 0, 0)),
            Relation::None
        );
    }

    #[test]
    fn can_view_is_any_relation() {
        let p = filed_petition(PetitionState::Submitted);
        for c in cast() {
            assert_eq!(
                can_view(&p, &c),
                relation(&p, &c) != Relation::None,
                "{c:?}"
            );
        }
        assert!(can_view(&p, &who(RESIDENT)));
        assert!(can_view(&p, &who(CLERK)));
        assert!(can_view(&p, &who(SUPERVISOR)));
        assert!(!can_view(&p, &who(NEIGHBOUR)));
        assert!(!can_view(&p, &who(OTHER_GRID_WORKER)));
    }

    #[test]
    fn only_the_assignee_and_the_grid_head_respond() {
        let p = petition(PetitionState::Submitted);
        assert!(counts_as_response(&p, &who(ASSIGNEE)));
        assert!(counts_as_response(&p, &who(GRID_HEAD)));
        for id in [
            RESIDENT,
            SAME_GRID_WORKER,
            OTHER_GRID_WORKER,
            OTHER_GRID_HEAD,
            SUPERVISOR,
            TOWNSHIP,
            ADMIN,
            NEIGHBOUR,
        ] {
            assert!(!counts_as_response(&p, &who(id)), "{id}");
        }
    }

    #[test]
    fn a_transferred_in_assignee_from_another_grid_responds() {
        let mut p = petition(PetitionState::Transferred);
        p.assignee_id = OTHER_GRID_WORKER;
        assert!(counts_as_response(&p, &who(OTHER_GRID_WORKER)));
        assert!(!counts_as_response(&p, &who(ASSIGNEE)));
    }
}
