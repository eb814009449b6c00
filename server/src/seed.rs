//! The demo county seeded into an empty database on first start: shaped like the seed's county
//! (12 urban communities, each cut into grids with workers, a grid head and residents, a supervisor
//! per community, a township supervisor and an administrator).
//!
//! Every demo account has the password [`DEMO_PASSWORD`]; the hash is computed once per start and
//! shared, since hashing hundreds of passwords would slow the first start for nothing. A real
//! deployment starts with `seed_demo = false` and creates its accounts with `lianxin admin`.

use lianxin_protocol::v1::Role;
use lianxin_storage::Store;
use serde::Serialize;

use crate::admin::{self, AdminError, NewAccount};
use crate::auth;

/// The password of every demo account.
pub const DEMO_PASSWORD: &str = "lianxin-demo";

/// Communities of the demo county.
const COMMUNITIES: [(&str, &str); 12] = [
    ("条心社区", "条心路"),
    ("幸福社区", "幸福路"),
    ("振阳社区", "振阳街"),
    ("解放社区", "解放路"),
    ("人民社区", "人民路"),
    ("和平社区", "和平路"),
    ("沿河社区", "沿河路"),
    ("新城社区", "新城大道"),
    ("东湖社区", "东湖路"),
    ("向阳社区", "向阳路"),
    ("育才社区", "育才路"),
    ("长荡社区", "长荡路"),
];
/// Grids per community.
const GRIDS: usize = 4;
/// Buildings (house numbers) per grid.
const BUILDINGS: usize = 10;
/// Workers per grid, besides the head.
const WORKERS: usize = 2;
/// Residents per grid.
const RESIDENTS: usize = 3;

/// A demo sign-in to print.
#[derive(Debug, Clone, Serialize)]
pub struct DemoLogin {
    /// Login.
    pub login: String,
    /// What the account is.
    pub role: String,
    /// Who it is.
    pub display_name: String,
}

/// What seeding created.
#[derive(Debug, Clone, Serialize)]
pub struct DemoSummary {
    /// Communities created.
    pub communities: usize,
    /// Grids created.
    pub grids: usize,
    /// Accounts created.
    pub accounts: usize,
    /// Addresses recorded.
    pub addresses: usize,
    /// A few sign-ins to try.
    pub sample_logins: Vec<DemoLogin>,
}

/// Seeds the demo county unless the database already has grids; returns what was created.
pub fn seed_if_empty(store: &Store, now_ms: i64) -> Result<Option<DemoSummary>, AdminError> {
    if !store.grids()?.is_empty() || store.account_count() > 0 {
        return Ok(None);
    }
    let hash = auth::hash_password(DEMO_PASSWORD)?;
    let mut accounts = 0;
    let mut addresses = 0;
    let mut samples = Vec::new();
    let mut add = |new: NewAccount, sample: bool| -> Result<(), AdminError> {
        let role = format!("{:?}", new.role);
        let account = admin::create_account_hashed(store, new, hash.clone(), now_ms)?;
        accounts += 1;
        if sample {
            samples.push(DemoLogin {
                login: account.login,
                role,
                display_name: account.display_name,
            });
        }
        Ok(())
    };
    let staff = |role, login: String, name: String, grid_id, community_id| NewAccount {
        role,
        login,
        display_name: name,
        grid_id,
        community_id,
        address: String::new(),
    };
    add(
        staff(Role::Admin, "admin".into(), "系统管理员".into(), 0, 0),
        true,
    )?;
    add(
        staff(
            Role::TownshipSupervisor,
            "township".into(),
            "镇党委督查员".into(),
            0,
            0,
        ),
        true,
    )?;
    let mut grids = 0;
    for (c, (community_name, street)) in COMMUNITIES.iter().enumerate() {
        let c = c + 1;
        let community = admin::create_community(store, community_name)?;
        add(
            staff(
                Role::CommunitySupervisor,
                format!("sup-{c:02}"),
                format!("{community_name}督查员"),
                0,
                community.id,
            ),
            c == 1,
        )?;
        for g in 1..=GRIDS {
            let first = (g - 1) * BUILDINGS + 1;
            let last = g * BUILDINGS;
            let grid = admin::create_grid(
                store,
                community.id,
                &format!("{community_name}第{g}网格"),
                vec![format!("{street}{first}-{last}号")],
            )?;
            grids += 1;
            for n in first..=last {
                store.put_address(&format!("{street}{n}号"), grid.id)?;
                addresses += 1;
            }
            let first_grid = c == 1 && g == 1;
            add(
                staff(
                    Role::GridHead,
                    format!("head-{c:02}-{g}"),
                    format!("{community_name}{g}网格长"),
                    grid.id,
                    0,
                ),
                first_grid,
            )?;
            for w in 0..WORKERS {
                let letter = (b'a' + w as u8) as char;
                add(
                    staff(
                        Role::Worker,
                        format!("worker-{c:02}-{g}{letter}"),
                        format!("{community_name}{g}网格员{}", w + 1),
                        grid.id,
                        0,
                    ),
                    first_grid,
                )?;
            }
            for r in 0..RESIDENTS {
                let letter = (b'a' + r as u8) as char;
                let building = first + r;
                add(
                    NewAccount {
                        role: Role::Resident,
                        login: format!("resident-{c:02}-{g}{letter}"),
                        display_name: format!("{street}{building}号居民"),
                        grid_id: grid.id,
                        community_id: 0,
                        address: format!("{street}{building}号"),
                    },
                    first_grid,
                )?;
            }
        }
    }
    store.meta_set("demo_seeded", b"1")?;
    store.flush_blocking()?;
    Ok(Some(DemoSummary {
        communities: COMMUNITIES.len(),
        grids,
        accounts,
        addresses,
        sample_logins: samples,
    }))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn seeds_once_with_the_seed_county_shape() {
        let store = Store::temporary().unwrap();
        let summary = seed_if_empty(&store, 0).unwrap().unwrap();
        assert_eq!(summary.communities, 12);
        assert_eq!(summary.grids, 48);
        assert_eq!(store.communities().unwrap().len(), 12);
        let grids = store.grids().unwrap();
        assert!(grids.iter().all(|g| g.head_id != 0));
        assert_eq!(store.grid_staff(grids[0].id).unwrap().len(), 1 + WORKERS);
        let resident = store.account_by_login("resident-01-1a").unwrap().unwrap();
        assert_eq!(
            store.grid_of_address(&resident.address).unwrap(),
            Some(resident.grid_id)
        );
        assert!(seed_if_empty(&store, 0).unwrap().is_none());
    }
}
