//! Records only the server sees (never sent to clients as they are), encoded with protobuf so that
//! fields can be added without a migration.

use lianxin_protocol::v1::{Account, Role};

/// An account with its credentials.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct AccountRecord {
    /// Unique id.
    #[prost(uint64, tag = "1")]
    pub id: u64,
    /// Sign-in name, unique (case-insensitive).
    #[prost(string, tag = "2")]
    pub login: String,
    /// Name shown to others.
    #[prost(string, tag = "3")]
    pub display_name: String,
    /// The account's role (`lianxin.v1.Role`).
    #[prost(enumeration = "Role", tag = "4")]
    pub role: i32,
    /// Community, where the role has one.
    #[prost(uint64, tag = "5")]
    pub community_id: u64,
    /// Grid, where the role has one.
    #[prost(uint64, tag = "6")]
    pub grid_id: u64,
    /// Residents' address.
    #[prost(string, tag = "7")]
    pub address: String,
    /// argon2id hash in PHC string form.
    #[prost(string, tag = "8")]
    pub password_hash: String,
    /// When the account was created.
    #[prost(int64, tag = "9")]
    pub created_at_ms: i64,
    /// Workers: whether they take new petitions routed to their grid.
    #[prost(bool, tag = "10")]
    pub on_duty: bool,
    /// A disabled account cannot sign in.
    #[prost(bool, tag = "11")]
    pub disabled: bool,
}

impl AccountRecord {
    /// The public view of the account, without credentials.
    pub fn public(&self) -> Account {
        Account {
            id: self.id,
            login: self.login.clone(),
            display_name: self.display_name.clone(),
            role: self.role,
            community_id: self.community_id,
            grid_id: self.grid_id,
            address: self.address.clone(),
        }
    }

    /// Whether the account is a grid worker or grid head.
    pub fn is_grid_staff(&self) -> bool {
        matches!(self.role(), Role::Worker | Role::GridHead)
    }
}

/// A signed-in session, stored under the hash of its token.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct SessionRecord {
    /// The account signed in.
    #[prost(uint64, tag = "1")]
    pub account_id: u64,
    /// When the session began.
    #[prost(int64, tag = "2")]
    pub created_at_ms: i64,
    /// When the token stops working.
    #[prost(int64, tag = "3")]
    pub expires_at_ms: i64,
    /// Device label given at sign-in.
    #[prost(string, tag = "4")]
    pub device: String,
}
