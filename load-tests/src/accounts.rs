//! The demo county's accounts, which petitions the scenarios open between them, and signing in at
//! scale: each account signs in once with its password (argon2 is slow on purpose), and every
//! connection after that presents the token.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use anyhow::Context;
use futures_util::{StreamExt, stream};
use lianxin_client::Client;
use lianxin_protocol::v1::{Category, Petition, SubmitPetition};

use crate::net;
use crate::progress;

/// The password of every demo account.
pub const DEMO_PASSWORD: &str = "lianxin-demo";
/// Communities of the demo county.
pub const COMMUNITIES: usize = 12;
/// Grids per community.
pub const GRIDS_PER_COMMUNITY: usize = 4;
/// Grids of the demo county.
pub const GRIDS: usize = COMMUNITIES * GRIDS_PER_COMMUNITY;
/// Workers per grid (besides the head).
pub const WORKERS_PER_GRID: usize = 2;
/// Residents per grid.
pub const RESIDENTS_PER_GRID: usize = 3;
/// Sign-ins with a password in flight at once (each costs the server an argon2 hash).
pub const SIGN_IN_CONCURRENCY: usize = 4;

/// A grid of the demo county by position (community 1..=12, grid 1..=4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GridRef {
    /// Community number, 1..=12.
    pub community: usize,
    /// Grid number within the community, 1..=4.
    pub grid: usize,
}

impl GridRef {
    /// The `index`-th grid (0..48), community by community.
    pub fn nth(index: usize) -> GridRef {
        let i = index % GRIDS;
        GridRef {
            community: i / GRIDS_PER_COMMUNITY + 1,
            grid: i % GRIDS_PER_COMMUNITY + 1,
        }
    }

    /// `resident-CC-G[abc]`.
    pub fn resident(&self, n: usize) -> String {
        format!(
            "resident-{:02}-{}{}",
            self.community,
            self.grid,
            letter(n % RESIDENTS_PER_GRID)
        )
    }

    /// `worker-CC-G[ab]`.
    pub fn worker(&self, n: usize) -> String {
        format!(
            "worker-{:02}-{}{}",
            self.community,
            self.grid,
            letter(n % WORKERS_PER_GRID)
        )
    }

    /// `head-CC-G`.
    pub fn head(&self) -> String {
        format!("head-{:02}-{}", self.community, self.grid)
    }
}

fn letter(n: usize) -> char {
    (b'a' + n as u8) as char
}

/// Every resident, worker and grid head of the demo county (288), interleaved so that any prefix
/// spreads over many grids: grid by grid a resident, then a worker, then a head, and again.
pub fn demo_logins() -> Vec<String> {
    let mut logins = Vec::new();
    for round in 0..RESIDENTS_PER_GRID {
        for g in 0..GRIDS {
            logins.push(GridRef::nth(g).resident(round));
        }
        if round < WORKERS_PER_GRID {
            for g in 0..GRIDS {
                logins.push(GridRef::nth(g).worker(round));
            }
        }
        if round == 0 {
            for g in 0..GRIDS {
                logins.push(GridRef::nth(g).head());
            }
        }
    }
    logins
}

/// One petition a scenario opens: its resident, the worker it is addressed to, the grid head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedPetition {
    /// The resident who raises it.
    pub resident: String,
    /// The worker of the resident's grid it is addressed to.
    pub worker: String,
    /// The grid's head (also a participant).
    pub head: String,
}

/// `n` petitions spread over every grid: petition `i` is in grid `i % 48`; its resident and worker
/// take turns (round `i / 48`: resident `round % 3`, worker `round % 2`, so six rounds pair
/// every resident of a grid with every worker).
pub fn plan_petitions(n: usize) -> Vec<PlannedPetition> {
    (0..n)
        .map(|i| {
            let grid = GridRef::nth(i);
            let round = i / GRIDS;
            PlannedPetition {
                resident: grid.resident(round),
                worker: grid.worker(round),
                head: grid.head(),
            }
        })
        .collect()
}

/// Every login a plan involves, sorted.
pub fn logins_of(plan: &[PlannedPetition]) -> Vec<String> {
    let set: BTreeSet<String> = plan
        .iter()
        .flat_map(|p| [p.resident.clone(), p.worker.clone(), p.head.clone()])
        .collect();
    set.into_iter().collect()
}

/// A signed-in account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// Its login.
    pub login: String,
    /// Its id.
    pub id: u64,
    /// A session token to present on further connections.
    pub token: String,
    /// The newest cursor of its feed when last asked.
    pub head: u64,
}

/// Signs every login in once with the demo password, learning its id, a token and its feed head.
pub async fn sign_in_all(url: &str, logins: &[String]) -> anyhow::Result<HashMap<String, Account>> {
    let bar = progress::counter(logins.len() as u64, "signing in (once per account)");
    let results: Vec<anyhow::Result<Account>> = stream::iter(logins.iter().cloned())
        .map(|login| {
            let bar = bar.clone();
            async move {
                let result = sign_in(url, &login).await;
                bar.inc(1);
                result
            }
        })
        .buffer_unordered(SIGN_IN_CONCURRENCY)
        .collect()
        .await;
    bar.finish_and_clear();
    let mut accounts = HashMap::new();
    for account in results {
        let account = account?;
        accounts.insert(account.login.clone(), account);
    }
    Ok(accounts)
}

async fn sign_in(url: &str, login: &str) -> anyhow::Result<Account> {
    let client = Client::connect(url, net::client_options(None, None))
        .await
        .with_context(|| format!("connecting to {url}"))?;
    let signed = client
        .sign_in(login, DEMO_PASSWORD)
        .await
        .with_context(|| format!("signing in as {login}"))?;
    let id = signed
        .account
        .map(|a| a.id)
        .context("no account in SignedIn")?;
    let head = client.subscribe(0).await?.head_cursor;
    drop(client);
    Ok(Account {
        login: login.to_owned(),
        id,
        token: signed.token,
        head,
    })
}

/// Refreshes the feed head of every account (after setup requests added events to the feeds).
pub async fn refresh_heads(
    url: &str,
    accounts: &mut HashMap<String, Account>,
) -> anyhow::Result<()> {
    let tokens: Vec<(String, String)> = accounts
        .values()
        .map(|a| (a.login.clone(), a.token.clone()))
        .collect();
    let heads: Vec<anyhow::Result<(String, u64)>> = stream::iter(tokens)
        .map(|(login, token)| async move {
            let client = Client::connect(url, net::client_options(None, Some(&token))).await?;
            let head = client.subscribe(0).await?.head_cursor;
            Ok((login, head))
        })
        .buffer_unordered(32)
        .collect()
        .await;
    for head in heads {
        let (login, head) = head?;
        if let Some(a) = accounts.get_mut(&login) {
            a.head = head;
        }
    }
    Ok(())
}

/// A petition opened by a scenario, with its participants' account ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenPetition {
    /// The petition's id.
    pub id: u64,
    /// The resident's account id.
    pub resident_id: u64,
    /// The addressed worker's account id.
    pub worker_id: u64,
    /// The grid head's account id.
    pub head_id: u64,
}

/// The SubmitPetition request for a planned petition.
pub fn submit_request(
    plan: &PlannedPetition,
    accounts: &HashMap<String, Account>,
    client_msg_id: String,
) -> anyhow::Result<SubmitPetition> {
    let worker = accounts
        .get(&plan.worker)
        .with_context(|| format!("{} is not signed in", plan.worker))?;
    Ok(SubmitPetition {
        category: Category::RequestForHelp as i32,
        title: "楼道灯坏了".to_owned(),
        text: "三单元楼道灯坏了好几天，晚上上下楼不方便，请帮忙看看。".to_owned(),
        worker_id: worker.id,
        client_msg_id,
        on_behalf_of: 0,
        channel: 0,
    })
}

/// The participants of a petition the server (or relay) answered.
pub fn open_petition(
    petition: &Petition,
    plan: &PlannedPetition,
    accounts: &HashMap<String, Account>,
) -> OpenPetition {
    let id_of = |login: &str| accounts.get(login).map_or(0, |a| a.id);
    OpenPetition {
        id: petition.id,
        resident_id: petition.resident_id,
        worker_id: petition.assignee_id,
        head_id: if petition.grid_head_id != 0 {
            petition.grid_head_id
        } else {
            id_of(&plan.head)
        },
    }
}

/// Opens every planned petition, each by its resident (over one connection per resident).
pub async fn submit_all(
    url: &str,
    plan: &[PlannedPetition],
    accounts: &HashMap<String, Account>,
    run_id: &str,
) -> anyhow::Result<Vec<OpenPetition>> {
    let bar = progress::counter(plan.len() as u64, "opening petitions");
    let mut by_resident: HashMap<&str, Vec<(usize, &PlannedPetition)>> = HashMap::new();
    for (i, p) in plan.iter().enumerate() {
        by_resident
            .entry(p.resident.as_str())
            .or_default()
            .push((i, p));
    }
    let accounts = Arc::new(accounts.clone());
    let groups: Vec<(String, Vec<(usize, PlannedPetition)>)> = by_resident
        .into_iter()
        .map(|(r, ps)| {
            (
                r.to_owned(),
                ps.into_iter().map(|(i, p)| (i, p.clone())).collect(),
            )
        })
        .collect();
    let results: Vec<anyhow::Result<Vec<(usize, OpenPetition)>>> = stream::iter(groups)
        .map(|(resident, petitions)| {
            let accounts = Arc::clone(&accounts);
            let bar = bar.clone();
            async move {
                let token = &accounts
                    .get(&resident)
                    .with_context(|| format!("{resident} is not signed in"))?
                    .token;
                let client = Client::connect(url, net::client_options(None, Some(token))).await?;
                let mut opened = Vec::new();
                for (i, p) in petitions {
                    let request = submit_request(&p, &accounts, format!("{run_id}-p{i}"))?;
                    let petition = client
                        .submit_petition(request)
                        .await
                        .with_context(|| format!("{resident} submitting a petition"))?;
                    opened.push((i, open_petition(&petition, &p, &accounts)));
                    bar.inc(1);
                }
                Ok(opened)
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    bar.finish_and_clear();
    let mut all = Vec::new();
    for r in results {
        all.extend(r?);
    }
    all.sort_by_key(|(i, _)| *i);
    Ok(all.into_iter().map(|(_, p)| p).collect())
}

/// A prefix unique to this run, for client message ids (so that a rerun against the same server
/// is never taken for a resend).
pub fn run_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{:x}-{}", nanos, std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_logins_cover_the_county_once() {
        let logins = demo_logins();
        assert_eq!(logins.len(), 288);
        let unique: BTreeSet<&String> = logins.iter().collect();
        assert_eq!(unique.len(), 288);
        assert_eq!(logins[0], "resident-01-1a");
        assert_eq!(logins[1], "resident-01-2a");
        assert_eq!(logins[48], "worker-01-1a");
        assert_eq!(logins[96], "head-01-1");
        assert!(logins.contains(&"resident-12-4c".to_owned()));
        assert!(logins.contains(&"worker-12-4b".to_owned()));
    }

    #[test]
    fn petitions_spread_over_grids_and_people() {
        let plan = plan_petitions(300);
        assert_eq!(plan[0].resident, "resident-01-1a");
        assert_eq!(plan[0].worker, "worker-01-1a");
        assert_eq!(plan[0].head, "head-01-1");
        assert_eq!(plan[47].head, "head-12-4");
        assert_eq!(plan[48].resident, "resident-01-1b");
        assert_eq!(plan[48].worker, "worker-01-1b");
        // 300 petitions involve every resident, worker and head.
        assert_eq!(logins_of(&plan).len(), 288);
        // Residents and workers stay in their petition's grid.
        for p in &plan {
            let grid = &p.head["head-".len()..];
            assert!(
                p.resident.contains(grid) && p.worker.contains(grid),
                "{p:?}"
            );
        }
        let small = plan_petitions(5);
        assert_eq!(logins_of(&small).len(), 15);
    }
}
