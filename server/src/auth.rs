//! Accounts' credentials: argon2id password hashes, random session tokens stored only as their
//! sha-256, expiry and revocation. Password hashing runs on the blocking pool so that it never
//! stalls the sessions sharing a runtime thread.

use argon2::password_hash::{Output, ParamsString, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use base64::Engine;
use lianxin_protocol::v1::Role;
use lianxin_storage::{AccountRecord, SessionRecord, Store, StoreError};
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::limits::SignInLimiter;

/// Why a sign-in or token check failed.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Wrong login or password, disabled account, or an unknown, expired or revoked token.
    #[error("bad credentials")]
    BadCredentials,
    /// A registration field is missing or invalid.
    #[error("invalid: {0}")]
    Invalid(String),
    /// The login is taken.
    #[error("login {0:?} is taken")]
    LoginTaken(String),
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The hashing task failed.
    #[error("password hashing failed: {0}")]
    Hash(String),
    /// Too many failed sign-ins for this account or from this address, or too many
    /// connections of this account; nothing was checked.
    #[error("rate limited: {0}")]
    RateLimited(&'static str),
}

/// A fresh session: the token to give the client once, and its record.
#[derive(Debug, Clone)]
pub struct NewSession {
    /// The bearer token (shown once, never stored).
    pub token: String,
    /// Its sha-256, the key it is stored under.
    pub token_hash: [u8; 32],
    /// The stored record.
    pub record: SessionRecord,
}

/// Password hashes computed at once at most; each holds one reusable argon2 work area (19 MiB
/// with the default parameters), so hashing can neither take every core nor leave freed work
/// areas behind in the allocator's per-thread arenas.
const HASHERS: usize = 2;

/// The reusable argon2 work areas, and a permit per area.
struct HashPool {
    permits: tokio::sync::Semaphore,
    areas: parking_lot::Mutex<Vec<Vec<Block>>>,
}

fn pool() -> &'static HashPool {
    static POOL: std::sync::OnceLock<HashPool> = std::sync::OnceLock::new();
    POOL.get_or_init(|| HashPool {
        permits: tokio::sync::Semaphore::new(HASHERS),
        areas: parking_lot::Mutex::new(Vec::new()),
    })
}

/// Runs `f` with a work area on the blocking pool, once one of the [`HASHERS`] permits is free.
async fn with_work_area<T: Send + 'static>(
    f: impl FnOnce(&mut Vec<Block>) -> T + Send + 'static,
) -> Result<T, AuthError> {
    let pool = pool();
    let _permit = pool
        .permits
        .acquire()
        .await
        .map_err(|e| AuthError::Hash(e.to_string()))?;
    let mut area = pool.areas.lock().pop().unwrap_or_default();
    let (result, area) = tokio::task::spawn_blocking(move || {
        let result = f(&mut area);
        (result, area)
    })
    .await
    .map_err(|e| AuthError::Hash(e.to_string()))?;
    pool.areas.lock().push(area);
    Ok(result)
}

/// Computes an argon2 hash into `out` in the given work area (grown to the parameters' size).
fn argon2_into(
    argon2: &Argon2<'_>,
    params: &Params,
    password: &[u8],
    salt: &[u8],
    out: &mut [u8],
    area: &mut Vec<Block>,
) -> Result<(), argon2::Error> {
    let blocks = params.block_count();
    if area.len() < blocks {
        area.resize(blocks, Block::default());
    }
    argon2.hash_password_into_with_memory(password, salt, out, &mut area[..blocks])
}

/// Hashes a password with argon2id and a random salt into a PHC string, in `area`.
fn hash_password_in(password: &str, area: &mut Vec<Block>) -> Result<String, AuthError> {
    let fail = |e: &dyn std::fmt::Display| AuthError::Hash(e.to_string());
    let salt = SaltString::generate(&mut rand::rngs::OsRng);
    let mut salt_bytes = [0u8; 64];
    let salt_raw = salt
        .as_salt()
        .decode_b64(&mut salt_bytes)
        .map_err(|e| fail(&e))?;
    let params = Params::default();
    let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
    let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
    argon2_into(
        &argon2,
        &params,
        password.as_bytes(),
        salt_raw,
        &mut out,
        area,
    )
    .map_err(|e| fail(&e))?;
    let phc = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(&params).map_err(|e| fail(&e))?,
        salt: Some(salt.as_salt()),
        hash: Some(Output::new(&out).map_err(|e| fail(&e))?),
    };
    Ok(phc.to_string())
}

/// Checks a password against a PHC string in `area`; a malformed stored hash never matches.
fn verify_password_in(password: &str, phc: &str, area: &mut Vec<Block>) -> bool {
    let Ok(parsed) = PasswordHash::new(phc) else {
        return false;
    };
    let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else {
        return false;
    };
    let (Ok(algorithm), Ok(params)) = (
        Algorithm::try_from(parsed.algorithm),
        Params::try_from(&parsed),
    ) else {
        return false;
    };
    let version = parsed
        .version
        .map_or(Ok(Version::default()), Version::try_from)
        .unwrap_or_default();
    let mut salt_bytes = [0u8; 64];
    let Ok(salt_raw) = salt.decode_b64(&mut salt_bytes) else {
        return false;
    };
    let mut out = vec![0u8; expected.len()];
    let argon2 = Argon2::new(algorithm, version, params.clone());
    if argon2_into(
        &argon2,
        &params,
        password.as_bytes(),
        salt_raw,
        &mut out,
        area,
    )
    .is_err()
    {
        return false;
    }
    // `Output`'s equality runs in constant time.
    Output::new(&out).is_ok_and(|got| got == expected)
}

/// Hashes a password with argon2id and a random salt (PHC string).
pub fn hash_password(password: &str) -> Result<String, AuthError> {
    hash_password_in(password, &mut Vec::new())
}

/// Checks a password against a PHC string; a malformed stored hash never matches.
pub fn verify_password(password: &str, phc: &str) -> bool {
    verify_password_in(password, phc, &mut Vec::new())
}

/// [`hash_password`] on the blocking pool, sharing the pooled work areas.
pub async fn hash_password_pooled(password: String) -> Result<String, AuthError> {
    with_work_area(move |area| hash_password_in(&password, area)).await?
}

/// [`verify_password`] on the blocking pool, sharing the pooled work areas.
pub async fn verify_password_pooled(password: String, phc: String) -> Result<bool, AuthError> {
    with_work_area(move |area| verify_password_in(&password, &phc, area)).await
}

/// The sha-256 of a token, the only form in which tokens are stored.
pub fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// What every token begins with: a token is often passed on a command line, where one that
/// began with `-` (1 in 64 of bare base64url strings) would be read as an option.
pub const TOKEN_PREFIX: &str = "lx";

/// A new random 256-bit token: [`TOKEN_PREFIX`], then URL-safe base64.
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let mut token = String::with_capacity(TOKEN_PREFIX.len() + 43);
    token.push_str(TOKEN_PREFIX);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode_string(bytes, &mut token);
    token
}

/// A PHC hash that never matches, verified against unknown logins so that their timing matches
/// that of known ones.
static DUMMY_HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();

fn dummy_hash() -> &'static str {
    DUMMY_HASH.get_or_init(|| hash_password("lianxin-dummy-password").unwrap_or_default())
}

/// Where a sign-in comes from, and the limits it is checked against before its password is
/// hashed.
#[derive(Clone, Copy)]
pub struct SignInGate<'a> {
    /// The failed-attempt limits.
    pub limiter: &'a SignInLimiter,
    /// The client's address.
    pub ip: std::net::IpAddr,
    /// Refuses the account before hashing (e.g. it has too many connections already).
    pub admit: &'a (dyn Fn(&AccountRecord) -> Result<(), AuthError> + Sync),
}

/// Signs in with login and password and stores a new session. The attempt is counted against
/// the account's and the address's limits before the password is hashed; a correct password
/// gives it back.
pub async fn sign_in(
    store: &Store,
    login: &str,
    password: &str,
    device: &str,
    now_ms: i64,
    ttl_ms: i64,
    gate: SignInGate<'_>,
) -> Result<(AccountRecord, NewSession), AuthError> {
    let account = store.account_by_login(login)?;
    if let Some(a) = &account {
        (gate.admit)(a)?;
    }
    let attempt = gate
        .limiter
        .begin(account.as_ref().map(|a| a.id), gate.ip, now_ms)
        .ok_or(AuthError::RateLimited(
            "too many sign-ins for this account or failed ones from this address; try again later",
        ))?;
    let phc = account
        .as_ref()
        .map_or_else(|| dummy_hash().to_string(), |a| a.password_hash.clone());
    let password = password.to_string();
    let ok = verify_password_pooled(password, phc).await?;
    match account {
        Some(account) if ok && !account.disabled => {
            gate.limiter.succeeded(attempt, now_ms);
            let session = start_session(store, account.id, device, now_ms, ttl_ms)?;
            Ok((account, session))
        }
        _ => Err(AuthError::BadCredentials),
    }
}

/// Stores a new session for an account.
pub fn start_session(
    store: &Store,
    account_id: u64,
    device: &str,
    now_ms: i64,
    ttl_ms: i64,
) -> Result<NewSession, AuthError> {
    let token = new_token();
    let hash = token_hash(&token);
    let record = SessionRecord {
        account_id,
        created_at_ms: now_ms,
        expires_at_ms: now_ms.saturating_add(ttl_ms),
        device: device.chars().take(64).collect(),
    };
    store.put_session(&hash, &record)?;
    Ok(NewSession {
        token,
        token_hash: hash,
        record,
    })
}

/// The account and session a token stands for, if it is valid now.
pub fn authenticate(
    store: &Store,
    token: &str,
    now_ms: i64,
) -> Result<(AccountRecord, [u8; 32], SessionRecord), AuthError> {
    let hash = token_hash(token.trim());
    let session = store.session(&hash)?.ok_or(AuthError::BadCredentials)?;
    if session.expires_at_ms <= now_ms {
        store.delete_session(&hash)?;
        return Err(AuthError::BadCredentials);
    }
    let account = store
        .account(session.account_id)?
        .filter(|a| !a.disabled)
        .ok_or(AuthError::BadCredentials)?;
    Ok((account, hash, session))
}

/// What a resident gives to register.
#[derive(Debug, Clone)]
pub struct Registration {
    /// Sign-in name.
    pub login: String,
    /// Password (at least 8 characters).
    pub password: String,
    /// Name shown to workers.
    pub display_name: String,
    /// Home address; must lie in a grid.
    pub address: String,
}

/// Creates a resident account in the grid covering their address.
pub async fn register(
    store: &Store,
    r: Registration,
    now_ms: i64,
) -> Result<AccountRecord, AuthError> {
    let login = r.login.trim().to_string();
    if login.is_empty() || login.chars().count() > 64 || login.chars().any(char::is_whitespace) {
        return Err(AuthError::Invalid(
            "login must be 1-64 characters without spaces".into(),
        ));
    }
    if r.password.chars().count() < 8 || r.password.len() > 1024 {
        return Err(AuthError::Invalid(
            "password must have 8 to 1024 characters".into(),
        ));
    }
    let display_name = r.display_name.trim().to_string();
    if display_name.is_empty() || display_name.chars().count() > 64 {
        return Err(AuthError::Invalid(
            "display name must have 1-64 characters".into(),
        ));
    }
    let grid_id = store
        .grid_of_address(&r.address)?
        .ok_or_else(|| AuthError::Invalid(format!("no grid covers the address {:?}", r.address)))?;
    let grid = store
        .grid(grid_id)?
        .ok_or_else(|| AuthError::Invalid("the grid of this address is gone".into()))?;
    if store.account_by_login(&login)?.is_some() {
        return Err(AuthError::LoginTaken(login));
    }
    let password = r.password;
    let password_hash = hash_password_pooled(password).await?;
    let account = AccountRecord {
        id: store.next_id()?,
        login,
        display_name,
        role: Role::Resident as i32,
        community_id: grid.community_id,
        grid_id,
        address: r.address.trim().to_string(),
        password_hash,
        created_at_ms: now_ms,
        on_duty: false,
        disabled: false,
    };
    match store.create_account(&account) {
        Ok(()) => Ok(account),
        Err(StoreError::Conflict(_)) => Err(AuthError::LoginTaken(account.login)),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn passwords_verify_only_against_their_own_hash() {
        let h = hash_password("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password("correct horse", &h));
        assert!(!verify_password("wrong horse", &h));
        assert!(!verify_password("correct horse", "not a hash"));
    }

    #[test]
    fn pooled_hashes_are_standard_argon2id_phc_strings() {
        use argon2::password_hash::{PasswordHasher, PasswordVerifier};
        // Ours verify with the argon2 crate's own verifier...
        let ours = hash_password("一二三四五六").unwrap();
        let parsed = PasswordHash::new(&ours).unwrap();
        assert!(
            Argon2::default()
                .verify_password("一二三四五六".as_bytes(), &parsed)
                .is_ok()
        );
        // ...and hashes stored before the pool (the argon2 crate's) verify with ours.
        let salt = SaltString::generate(&mut rand::rngs::OsRng);
        let theirs = Argon2::default()
            .hash_password(b"lianxin-demo", &salt)
            .unwrap()
            .to_string();
        assert!(verify_password("lianxin-demo", &theirs));
        assert!(!verify_password("lianxin-dem0", &theirs));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pooled_verification_shares_a_bounded_number_of_work_areas() {
        let phc = hash_password_pooled("pw".into()).await.unwrap();
        let checks: Vec<_> = (0..6)
            .map(|i| {
                let phc = phc.clone();
                tokio::spawn(async move {
                    let pw = if i % 2 == 0 { "pw" } else { "nope" };
                    verify_password_pooled(pw.into(), phc).await.unwrap()
                })
            })
            .collect();
        let mut results = Vec::new();
        for c in checks {
            results.push(c.await.unwrap());
        }
        assert_eq!(results, [true, false, true, false, true, false]);
        assert!(
            pool().areas.lock().len() <= HASHERS,
            "never more work areas than hashers"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_sign_in_over_the_limit_is_refused_before_its_password_is_hashed() {
        let store = Store::temporary().unwrap();
        store
            .create_account(&AccountRecord {
                id: 7,
                login: "w".into(),
                role: Role::Worker as i32,
                password_hash: hash_password("right-password").unwrap(),
                ..Default::default()
            })
            .unwrap();
        let limits = crate::config::Limits {
            sign_in_failures_per_account: 1,
            ..Default::default()
        };
        let limiter = SignInLimiter::new(&limits);
        let admit = |_: &AccountRecord| Ok(());
        let gate = SignInGate {
            limiter: &limiter,
            ip: "10.0.0.1".parse().unwrap(),
            admit: &admit,
        };
        let wrong = sign_in(&store, "w", "wrong-password", "d", 0, 1_000, gate).await;
        assert!(matches!(wrong, Err(AuthError::BadCredentials)));
        // With every hasher busy, an attempt that went on to hashing would wait for ever.
        let busy = pool()
            .permits
            .acquire_many(u32::try_from(HASHERS).unwrap())
            .await
            .unwrap();
        let refused = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            sign_in(&store, "w", "right-password", "d", 0, 1_000, gate),
        )
        .await
        .expect("refused without waiting for a hasher");
        assert!(matches!(refused, Err(AuthError::RateLimited(_))));
        drop(busy);
    }

    #[test]
    fn tokens_are_random_and_stored_only_as_hashes() {
        let store = Store::temporary().unwrap();
        let s = start_session(&store, 7, "phone", 1_000, 10_000).unwrap();
        assert_ne!(new_token(), s.token);
        // Never taken for a command-line option.
        for _ in 0..256 {
            let t = new_token();
            assert!(t.starts_with(TOKEN_PREFIX) && t.len() == 45, "{t}");
        }
        assert!(store.session(&s.token_hash).unwrap().is_some());
        assert_eq!(s.token_hash, token_hash(&s.token));
        // Valid now, rejected once expired, and the expired session is deleted.
        assert!(matches!(
            authenticate(&store, &s.token, 2_000),
            Err(AuthError::BadCredentials)
        ));
        store
            .create_account(&AccountRecord {
                id: 7,
                login: "w".into(),
                role: Role::Worker as i32,
                ..Default::default()
            })
            .unwrap();
        let s = start_session(&store, 7, "phone", 1_000, 10_000).unwrap();
        assert_eq!(authenticate(&store, &s.token, 2_000).unwrap().0.id, 7);
        assert!(authenticate(&store, &s.token, 11_000).is_err());
        assert!(store.session(&s.token_hash).unwrap().is_none());
    }
}
