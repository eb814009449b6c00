//! Accounts, logins and session tokens. Tokens themselves are never stored: only their sha-256.

use prost::Message;
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError};

use lianxin_protocol::v1::Role;

use crate::records::{AccountRecord, SessionRecord};
use crate::trees::{key_bytes, key1, key2};
use crate::{Result, Store, StoreError};

/// Lower-cases and trims a login so that "Wang" and "wang " are one account.
pub fn normalise_login(login: &str) -> String {
    login.trim().to_lowercase()
}

fn abort_to_store(e: TransactionError<StoreError>) -> StoreError {
    match e {
        TransactionError::Abort(e) => e,
        TransactionError::Storage(e) => StoreError::Engine(e),
    }
}

impl Store {
    /// Creates an account; fails with `Conflict` if the login or id is taken.
    pub fn create_account(&self, account: &AccountRecord) -> Result<()> {
        let t = &self.trees;
        let login = normalise_login(&account.login);
        let bytes = account.encode_to_vec();
        let staff = account.is_grid_staff() && account.grid_id != 0;
        let supervisor_scope = match account.role() {
            Role::CommunitySupervisor => Some(account.community_id),
            Role::TownshipSupervisor => Some(0),
            _ => None,
        };
        (
            &t.accountid_account,
            &t.login_accountid,
            &t.gridid_accountid,
            &t.communityid_supervisorid,
        )
            .transaction(|(accounts, logins, grid_staff, supervisors)| {
                if logins.get(login.as_bytes())?.is_some() {
                    return Err(ConflictableTransactionError::Abort(StoreError::Conflict(
                        format!("login {login:?} is taken"),
                    )));
                }
                if accounts.get(key1(account.id))?.is_some() {
                    return Err(ConflictableTransactionError::Abort(StoreError::Conflict(
                        format!("account id {} exists", account.id),
                    )));
                }
                accounts.insert(&key1(account.id), bytes.as_slice())?;
                logins.insert(login.as_bytes(), &key1(account.id))?;
                if staff {
                    grid_staff.insert(
                        &key2(account.grid_id, account.id),
                        &[account.role as u8][..],
                    )?;
                }
                if let Some(scope) = supervisor_scope {
                    supervisors.insert(&key2(scope, account.id), &[][..])?;
                }
                Ok(())
            })
            .map_err(abort_to_store)
    }

    /// Replaces an existing account's record (login and grid must not change).
    pub fn update_account(&self, account: &AccountRecord) -> Result<()> {
        self.trees
            .accountid_account
            .insert(key1(account.id), account.encode_to_vec())?;
        Ok(())
    }

    /// Changes an account's stored record in place, atomically (a concurrent change of another
    /// field is never lost); returns the new record, or `None` for an unknown account.
    pub fn modify_account(
        &self,
        id: u64,
        change: impl Fn(&mut AccountRecord),
    ) -> Result<Option<AccountRecord>> {
        let mut corrupt = None;
        let new = self
            .trees
            .accountid_account
            .update_and_fetch(key1(id), |old| {
                let old = old?;
                match AccountRecord::decode(old) {
                    Ok(mut account) => {
                        change(&mut account);
                        Some(account.encode_to_vec())
                    }
                    Err(e) => {
                        corrupt = Some(e);
                        Some(old.to_vec())
                    }
                }
            })?;
        if let Some(e) = corrupt {
            return Err(e.into());
        }
        match new {
            Some(v) => Ok(Some(AccountRecord::decode(&*v)?)),
            None => Ok(None),
        }
    }

    /// The account with this id.
    pub fn account(&self, id: u64) -> Result<Option<AccountRecord>> {
        match self.trees.accountid_account.get(key1(id))? {
            Some(v) => Ok(Some(AccountRecord::decode(&*v)?)),
            None => Ok(None),
        }
    }

    /// The account with this login (case-insensitive).
    pub fn account_by_login(&self, login: &str) -> Result<Option<AccountRecord>> {
        let login = normalise_login(login);
        match self.trees.login_accountid.get(login.as_bytes())? {
            Some(id) => self.account(crate::trees::decode_u64(&id)?),
            None => Ok(None),
        }
    }

    /// Number of accounts.
    pub fn account_count(&self) -> usize {
        self.trees.accountid_account.len()
    }

    /// Every account, in id order.
    pub fn accounts(&self) -> impl Iterator<Item = Result<AccountRecord>> + '_ {
        self.trees
            .accountid_account
            .iter()
            .map(|item| Ok(AccountRecord::decode(&*item?.1)?))
    }

    /// The workers and head of a grid.
    pub fn grid_staff(&self, grid_id: u64) -> Result<Vec<AccountRecord>> {
        let mut out = Vec::new();
        for item in self.trees.gridid_accountid.scan_prefix(key1(grid_id)) {
            let (k, _) = item?;
            let id = crate::trees::second_u64(&k)?;
            if let Some(account) = self.account(id)? {
                out.push(account);
            }
        }
        Ok(out)
    }

    /// Supervisors of a community (`0`: the township's supervisors), by id.
    pub fn supervisors_of(&self, community_id: u64) -> Result<Vec<u64>> {
        self.trees
            .communityid_supervisorid
            .scan_prefix(key1(community_id))
            .map(|item| crate::trees::second_u64(&item?.0))
            .collect()
    }

    /// Stores a session under the hash of its token.
    pub fn put_session(&self, token_hash: &[u8; 32], session: &SessionRecord) -> Result<()> {
        let t = &self.trees;
        let bytes = session.encode_to_vec();
        let index = key_bytes(session.account_id, token_hash);
        (&t.tokenhash_session, &t.accountid_tokenhash)
            .transaction(|(sessions, by_account)| {
                sessions.insert(&token_hash[..], bytes.as_slice())?;
                by_account.insert(index.as_slice(), &[][..])?;
                Ok::<(), ConflictableTransactionError<StoreError>>(())
            })
            .map_err(abort_to_store)
    }

    /// The session stored under this token hash.
    pub fn session(&self, token_hash: &[u8; 32]) -> Result<Option<SessionRecord>> {
        match self.trees.tokenhash_session.get(&token_hash[..])? {
            Some(v) => Ok(Some(SessionRecord::decode(&*v)?)),
            None => Ok(None),
        }
    }

    /// Deletes one session; returns whether it existed.
    pub fn delete_session(&self, token_hash: &[u8; 32]) -> Result<bool> {
        let Some(session) = self.session(token_hash)? else {
            return Ok(false);
        };
        self.trees.tokenhash_session.remove(&token_hash[..])?;
        self.trees
            .accountid_tokenhash
            .remove(key_bytes(session.account_id, token_hash))?;
        Ok(true)
    }

    /// Deletes every session of an account; returns how many there were.
    pub fn delete_sessions_of(&self, account_id: u64) -> Result<usize> {
        let mut n = 0;
        for item in self.trees.accountid_tokenhash.scan_prefix(key1(account_id)) {
            let (k, _) = item?;
            if let Some(hash) = k.get(8..) {
                self.trees.tokenhash_session.remove(hash)?;
            }
            self.trees.accountid_tokenhash.remove(&k)?;
            n += 1;
        }
        Ok(n)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn worker(id: u64, login: &str, grid: u64) -> AccountRecord {
        AccountRecord {
            id,
            login: login.into(),
            display_name: login.into(),
            role: Role::Worker as i32,
            grid_id: grid,
            community_id: 1,
            ..Default::default()
        }
    }

    #[test]
    fn logins_are_unique_case_insensitively() {
        let store = Store::temporary().unwrap();
        store.create_account(&worker(1, "Wang", 7)).unwrap();
        let err = store.create_account(&worker(2, " wang", 7)).err().unwrap();
        assert!(matches!(err, StoreError::Conflict(_)));
        assert_eq!(store.account_by_login("WANG").unwrap().unwrap().id, 1);
        assert!(store.account(2).unwrap().is_none());
    }

    #[test]
    fn grid_staff_lists_workers_of_that_grid_only() {
        let store = Store::temporary().unwrap();
        store.create_account(&worker(1, "a", 7)).unwrap();
        store.create_account(&worker(2, "b", 8)).unwrap();
        store.create_account(&worker(3, "c", 7)).unwrap();
        let ids: Vec<u64> = store.grid_staff(7).unwrap().iter().map(|a| a.id).collect();
        assert_eq!(ids, vec![1, 3]);
    }

    #[test]
    fn supervisors_are_listed_by_scope() {
        let store = Store::temporary().unwrap();
        let sup = |id, login: &str, role: Role, community| AccountRecord {
            id,
            login: login.into(),
            role: role as i32,
            community_id: community,
            ..Default::default()
        };
        store
            .create_account(&sup(1, "s1", Role::CommunitySupervisor, 9))
            .unwrap();
        store
            .create_account(&sup(2, "s2", Role::CommunitySupervisor, 8))
            .unwrap();
        store
            .create_account(&sup(3, "t", Role::TownshipSupervisor, 0))
            .unwrap();
        assert_eq!(store.supervisors_of(9).unwrap(), vec![1]);
        assert_eq!(store.supervisors_of(0).unwrap(), vec![3]);
    }

    #[test]
    fn sessions_are_revoked_one_by_one_or_all_at_once() {
        let store = Store::temporary().unwrap();
        let s = SessionRecord {
            account_id: 5,
            created_at_ms: 1,
            expires_at_ms: 2,
            device: "phone".into(),
        };
        store.put_session(&[1; 32], &s).unwrap();
        store.put_session(&[2; 32], &s).unwrap();
        store
            .put_session(
                &[3; 32],
                &SessionRecord {
                    account_id: 6,
                    ..s.clone()
                },
            )
            .unwrap();
        assert!(store.delete_session(&[1; 32]).unwrap());
        assert!(store.session(&[1; 32]).unwrap().is_none());
        assert_eq!(store.delete_sessions_of(5).unwrap(), 1);
        assert!(store.session(&[2; 32]).unwrap().is_none());
        assert!(store.session(&[3; 32]).unwrap().is_some());
    }
}
