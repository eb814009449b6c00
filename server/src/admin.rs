//! The administrator's operations on the directory and accounts. The `lianxin admin` commands call
//! these on the data folder while the server is stopped (the database admits one process); the demo
//! seeding uses them too.

use std::io::Read;

use lianxin_protocol::v1::{Community, Grid, Role};
use lianxin_storage::{AccountRecord, Store, StoreError};

use crate::auth;

/// Why an administrative operation failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// Storage failed or refused (e.g. a login taken).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// An argument is wrong.
    #[error("{0}")]
    Invalid(String),
    /// The jurisdiction file could not be read.
    #[error("reading the address file: {0}")]
    Csv(#[from] csv::Error),
    /// Hashing failed.
    #[error(transparent)]
    Auth(#[from] auth::AuthError),
}

/// Disables an account (or enables it again); returns the record as stored. Ending its sessions
/// is the caller's part (storage and live sessions).
pub fn set_disabled(
    store: &Store,
    account_id: u64,
    disabled: bool,
) -> Result<AccountRecord, AdminError> {
    store
        .modify_account(account_id, |a| a.disabled = disabled)?
        .ok_or_else(|| AdminError::Invalid(format!("no account {account_id}")))
}

/// Creates a community; returns it.
pub fn create_community(store: &Store, name: &str) -> Result<Community, AdminError> {
    let name = name.trim();
    if name.is_empty() {
        return Err(AdminError::Invalid("a community needs a name".into()));
    }
    let community = Community {
        id: store.next_id()?,
        name: name.to_string(),
    };
    store.put_community(&community)?;
    Ok(community)
}

/// Creates a grid of a community with its published jurisdiction; returns it.
pub fn create_grid(
    store: &Store,
    community_id: u64,
    name: &str,
    jurisdiction: Vec<String>,
) -> Result<Grid, AdminError> {
    if store.community(community_id)?.is_none() {
        return Err(AdminError::Invalid(format!("no community {community_id}")));
    }
    let grid = Grid {
        id: store.next_id()?,
        community_id,
        name: name.trim().to_string(),
        jurisdiction,
        head_id: 0,
    };
    store.put_grid(&grid)?;
    Ok(grid)
}

/// What an account to create needs.
#[derive(Debug, Clone)]
pub struct NewAccount {
    /// Role.
    pub role: Role,
    /// Sign-in name.
    pub login: String,
    /// Name shown to others.
    pub display_name: String,
    /// Grid (residents, workers, grid heads).
    pub grid_id: u64,
    /// Community (community supervisors; derived from the grid for grid roles).
    pub community_id: u64,
    /// Address (residents).
    pub address: String,
}

/// Creates an account with an already hashed password; a grid head becomes their grid's head.
pub fn create_account_hashed(
    store: &Store,
    new: NewAccount,
    password_hash: String,
    now_ms: i64,
) -> Result<AccountRecord, AdminError> {
    let mut community_id = new.community_id;
    let mut grid = None;
    match new.role {
        Role::Resident | Role::Worker | Role::GridHead => {
            let g = store
                .grid(new.grid_id)?
                .ok_or_else(|| AdminError::Invalid(format!("no grid {}", new.grid_id)))?;
            community_id = g.community_id;
            grid = Some(g);
        }
        Role::CommunitySupervisor => {
            if store.community(community_id)?.is_none() {
                return Err(AdminError::Invalid(format!("no community {community_id}")));
            }
        }
        Role::TownshipSupervisor | Role::Admin => community_id = 0,
        Role::Unspecified => return Err(AdminError::Invalid("an account needs a role".into())),
    }
    if new.login.trim().is_empty() {
        return Err(AdminError::Invalid("an account needs a login".into()));
    }
    let account = AccountRecord {
        id: store.next_id()?,
        login: new.login.trim().to_string(),
        display_name: new.display_name.trim().to_string(),
        role: new.role as i32,
        community_id,
        grid_id: grid.as_ref().map_or(0, |g| g.id),
        address: new.address,
        password_hash,
        created_at_ms: now_ms,
        on_duty: matches!(new.role, Role::Worker | Role::GridHead),
        disabled: false,
    };
    store.create_account(&account)?;
    if let Some(mut g) = grid.filter(|_| new.role == Role::GridHead) {
        g.head_id = account.id;
        store.put_grid(&g)?;
    }
    Ok(account)
}

/// Creates an account, hashing its password.
pub fn create_account(
    store: &Store,
    new: NewAccount,
    password: &str,
    now_ms: i64,
) -> Result<AccountRecord, AdminError> {
    if password.chars().count() < 8 {
        return Err(AdminError::Invalid(
            "passwords have at least 8 characters".into(),
        ));
    }
    let hash = auth::hash_password(password)?;
    create_account_hashed(store, new, hash, now_ms)
}

/// Imports a jurisdiction CSV with a header and columns `address,grid_id`; returns the number of
/// addresses recorded. Every row is checked before any is written.
pub fn import_addresses(store: &Store, csv_text: impl Read) -> Result<usize, AdminError> {
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_reader(csv_text);
    let mut rows = Vec::new();
    for (i, record) in reader.records().enumerate() {
        let record = record?;
        let line = i + 2;
        let address = record.get(0).unwrap_or_default().to_string();
        let grid_id: u64 =
            record.get(1).unwrap_or_default().parse().map_err(|_| {
                AdminError::Invalid(format!("line {line}: grid_id is not a number"))
            })?;
        if address.is_empty() {
            return Err(AdminError::Invalid(format!("line {line}: empty address")));
        }
        if store.grid(grid_id)?.is_none() {
            return Err(AdminError::Invalid(format!(
                "line {line}: no grid {grid_id}"
            )));
        }
        rows.push((address, grid_id));
    }
    for (address, grid_id) in &rows {
        store.put_address(address, *grid_id)?;
    }
    store.flush_blocking()?;
    Ok(rows.len())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn grid_head_becomes_head_of_their_grid() {
        let store = Store::temporary().unwrap();
        let c = create_community(&store, "幸福社区").unwrap();
        let g = create_grid(&store, c.id, "第一网格", vec!["幸福路1-10号".into()]).unwrap();
        let head = create_account_hashed(
            &store,
            NewAccount {
                role: Role::GridHead,
                login: "head".into(),
                display_name: "王网格长".into(),
                grid_id: g.id,
                community_id: 0,
                address: String::new(),
            },
            "x".into(),
            0,
        )
        .unwrap();
        assert_eq!(store.grid(g.id).unwrap().unwrap().head_id, head.id);
        assert_eq!(head.community_id, c.id);
    }

    #[test]
    fn csv_import_checks_every_row_first() {
        let store = Store::temporary().unwrap();
        let c = create_community(&store, "c").unwrap();
        let g = create_grid(&store, c.id, "g", vec![]).unwrap();
        let good = format!("address,grid_id\n幸福路1号,{}\n幸福路2号,{}\n", g.id, g.id);
        assert_eq!(import_addresses(&store, good.as_bytes()).unwrap(), 2);
        assert_eq!(store.grid_of_address("幸福路2号").unwrap(), Some(g.id));
        let bad = format!("address,grid_id\n人民路1号,{}\n人民路2号,999\n", g.id);
        assert!(import_addresses(&store, bad.as_bytes()).is_err());
        assert_eq!(store.grid_of_address("人民路1号").unwrap(), None);
    }
}
