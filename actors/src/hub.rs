//! Live delivery: which sessions each account has open, and pushing feed events to them.
//!
//! The hub never waits on a session. Each session has a bounded queue; when it is full the event
//! is dropped and the session is marked as lagging. That loses nothing: every event is already in
//! the account's durable feed, and a lagging session reads what it missed from storage (or is
//! disconnected as a slow consumer if its socket does not drain).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use dashmap::DashMap;
use lianxin_storage::FeedItem;
use tokio::sync::{Notify, mpsc};

/// What the hub pushes to a session.
#[derive(Debug, Clone)]
pub enum Push {
    /// A new event of the session's account feed (shared: a session's queue holds pointers, so
    /// an idle session's queue block stays small).
    Event(Arc<FeedItem>),
    /// The session's sign-in was revoked (sign out everywhere); the session must close.
    Revoked,
}

/// State a session shares with the hub.
#[derive(Debug, Default)]
pub struct SessionSignals {
    /// Set when an event could not be queued; the session must catch up from storage.
    pub lagging: AtomicBool,
    /// Woken when `lagging` is set or the session is revoked.
    pub wake: Notify,
    /// Set when the session's sign-in was revoked.
    pub revoked: AtomicBool,
}

/// One registered session.
#[derive(Debug, Clone)]
struct SessionSlot {
    /// Hub-wide id of the session.
    id: u64,
    /// The session's bounded queue.
    tx: mpsc::Sender<Push>,
    /// Flags shared with the session.
    signals: Arc<SessionSignals>,
}

/// The receiving end a session keeps.
#[derive(Debug)]
pub struct Registration {
    /// Hub-wide id of the session (to unregister).
    pub id: u64,
    /// The account it is signed in as.
    pub account_id: u64,
    /// Pushed events.
    pub rx: mpsc::Receiver<Push>,
    /// Flags set by the hub.
    pub signals: Arc<SessionSignals>,
}

/// A new session's slot in the hub and the session's end of it.
fn new_session(
    next_id: &AtomicU64,
    account_id: u64,
    capacity: usize,
) -> (SessionSlot, Registration) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    let id = next_id.fetch_add(1, Ordering::Relaxed) + 1;
    let signals = Arc::new(SessionSignals::default());
    (
        SessionSlot {
            id,
            tx,
            signals: signals.clone(),
        },
        Registration {
            id,
            account_id,
            rx,
            signals,
        },
    )
}

/// Registry of live sessions by account.
#[derive(Debug, Default)]
pub struct Hub {
    /// account id → its sessions.
    sessions: DashMap<u64, Vec<SessionSlot>>,
    /// Source of session ids.
    next_id: AtomicU64,
    /// Number of sessions registered.
    count: AtomicU64,
}

impl Hub {
    /// An empty hub.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a session of `account_id` with a queue of `capacity` pushes.
    pub fn register(&self, account_id: u64, capacity: usize) -> Registration {
        let (slot, registration) = new_session(&self.next_id, account_id, capacity);
        self.sessions.entry(account_id).or_default().push(slot);
        self.count.fetch_add(1, Ordering::Relaxed);
        metrics::gauge!("lianxin_sessions").increment(1.0);
        registration
    }

    /// Registers a session of `account_id` unless it has `max` already (checked and added
    /// atomically); None when it has.
    pub fn register_at_most(
        &self,
        account_id: u64,
        capacity: usize,
        max: usize,
    ) -> Option<Registration> {
        {
            let mut slots = self.sessions.entry(account_id).or_default();
            if slots.len() >= max {
                drop(slots);
                self.sessions
                    .remove_if(&account_id, |_, slots| slots.is_empty());
                return None;
            }
            let (slot, registration) = new_session(&self.next_id, account_id, capacity);
            slots.push(slot);
            self.count.fetch_add(1, Ordering::Relaxed);
            metrics::gauge!("lianxin_sessions").increment(1.0);
            Some(registration)
        }
    }

    /// Removes a session.
    pub fn unregister(&self, account_id: u64, session_id: u64) {
        let mut removed = false;
        if let Some(mut slots) = self.sessions.get_mut(&account_id) {
            let before = slots.len();
            slots.retain(|s| s.id != session_id);
            removed = slots.len() < before;
        }
        self.sessions
            .remove_if(&account_id, |_, slots| slots.is_empty());
        if removed {
            self.count.fetch_sub(1, Ordering::Relaxed);
            metrics::gauge!("lianxin_sessions").decrement(1.0);
        }
    }

    /// Number of sessions an account has open.
    pub fn sessions_of(&self, account_id: u64) -> usize {
        self.sessions.get(&account_id).map_or(0, |s| s.len())
    }

    /// Number of sessions open in all.
    pub fn session_count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Pushes freshly stored feed events to their accounts' sessions, never waiting.
    pub fn deliver(&self, items: &[FeedItem]) {
        for item in items {
            let Some(slots) = self.sessions.get(&item.account_id) else {
                continue;
            };
            let item = Arc::new(item.clone());
            for slot in slots.iter() {
                if slot.tx.try_send(Push::Event(item.clone())).is_err() {
                    slot.signals.lagging.store(true, Ordering::Release);
                    slot.signals.wake.notify_one();
                    metrics::counter!("lianxin_push_dropped_total").increment(1);
                }
            }
        }
    }

    /// Tells every session of an account except `keep` that its sign-in was revoked.
    pub fn revoke(&self, account_id: u64, keep: Option<u64>) {
        if let Some(slots) = self.sessions.get(&account_id) {
            for slot in slots.iter().filter(|s| Some(s.id) != keep) {
                slot.signals.revoked.store(true, Ordering::Release);
                slot.signals.wake.notify_one();
                let _ = slot.tx.try_send(Push::Revoked);
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn item(account_id: u64, cursor: u64) -> FeedItem {
        FeedItem {
            account_id,
            cursor,
            event: bytes::Bytes::new(),
        }
    }

    #[test]
    fn delivers_to_every_session_of_the_account_only() {
        let hub = Hub::new();
        let mut a1 = hub.register(1, 8);
        let mut a2 = hub.register(1, 8);
        let mut b = hub.register(2, 8);
        hub.deliver(&[item(1, 1)]);
        assert!(matches!(a1.rx.try_recv(), Ok(Push::Event(i)) if i.cursor == 1));
        assert!(matches!(a2.rx.try_recv(), Ok(Push::Event(_))));
        assert!(b.rx.try_recv().is_err());
        assert_eq!(hub.session_count(), 3);
        hub.unregister(1, a1.id);
        assert_eq!(hub.sessions_of(1), 1);
    }

    #[test]
    fn a_full_queue_marks_the_session_lagging_instead_of_blocking() {
        let hub = Hub::new();
        let slow = hub.register(1, 1);
        hub.deliver(&[item(1, 1), item(1, 2)]);
        assert!(slow.signals.lagging.load(Ordering::Acquire));
    }

    #[test]
    fn revoke_spares_the_session_that_asked() {
        let hub = Hub::new();
        let keep = hub.register(1, 4);
        let other = hub.register(1, 4);
        hub.revoke(1, Some(keep.id));
        assert!(other.signals.revoked.load(Ordering::Acquire));
        assert!(!keep.signals.revoked.load(Ordering::Acquire));
    }
}
