//! The domain's error type: every rejection a client can get, with its protocol error code.

use lianxin_protocol::v1::ErrorCode;
use lianxin_storage::StoreError;

use crate::domain::petition::PetitionError;

/// Why a domain request was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum DomainError {
    /// The caller may not do this.
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// No such thing, or the caller may not see it.
    #[error("not found: {0}")]
    NotFound(String),
    /// A field is missing or out of range.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The petition's state does not allow the action.
    #[error("{0}")]
    IllegalTransition(String),
    /// The thing exists already.
    #[error("conflict: {0}")]
    Conflict(String),
    /// Storage failed; nothing was acknowledged.
    #[error("storage unavailable: {0}")]
    Storage(#[from] StoreError),
    /// An actor could not be reached (stopping, restarting); retry.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The caller went over a rate limit (e.g. petitions per resident per day); retry later.
    #[error("rate limited: {0}")]
    RateLimited(String),
}

impl DomainError {
    /// The protocol error code for this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            DomainError::Forbidden(_) => ErrorCode::Forbidden,
            DomainError::NotFound(_) => ErrorCode::NotFound,
            DomainError::InvalidArgument(_) => ErrorCode::InvalidArgument,
            DomainError::IllegalTransition(_) => ErrorCode::IllegalTransition,
            DomainError::Conflict(_) => ErrorCode::Conflict,
            DomainError::Storage(StoreError::Conflict(_)) => ErrorCode::Conflict,
            DomainError::Storage(_) | DomainError::Unavailable(_) => ErrorCode::Unavailable,
            DomainError::RateLimited(_) => ErrorCode::RateLimited,
        }
    }

    /// A "not found" for a petition.
    pub fn no_petition(id: u64) -> Self {
        DomainError::NotFound(format!("petition {id}"))
    }
}

impl From<PetitionError> for DomainError {
    fn from(e: PetitionError) -> Self {
        match e {
            PetitionError::Forbidden(m) => DomainError::Forbidden(m.to_string()),
            PetitionError::InvalidArgument(m) => DomainError::InvalidArgument(m.to_string()),
            e @ PetitionError::IllegalTransition { .. } => {
                DomainError::IllegalTransition(e.to_string())
            }
        }
    }
}

/// Result of a domain request.
pub type DomainResult<T> = Result<T, DomainError>;
