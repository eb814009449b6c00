//! Matching replies to the requests waiting for them, and failing those requests when the
//! connection ends.

use std::{
    collections::HashMap,
    sync::{Mutex, MutexGuard},
};

use lianxin_protocol::v1::Reply;
use tokio::sync::oneshot;

use crate::ClientError;

/// How a connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CloseInfo {
    /// The close frame's code, if the peer sent one.
    pub code: Option<u16>,
    /// The close frame's reason, or what ended the connection.
    pub reason: String,
}

impl CloseInfo {
    pub(crate) fn to_error(&self) -> ClientError {
        ClientError::Closed {
            code: self.code,
            reason: self.reason.clone(),
        }
    }
}

type Waiter = oneshot::Sender<Result<Reply, ClientError>>;

#[derive(Default)]
struct State {
    pending: HashMap<u64, Waiter>,
    closed: Option<CloseInfo>,
}

/// The requests waiting for replies, by request id.
#[derive(Default)]
pub(crate) struct Router {
    state: Mutex<State>,
}

impl Router {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the map inconsistent: keep going.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Registers a request that waits for the reply with `id`.
    pub(crate) fn register(
        &self,
        id: u64,
    ) -> Result<oneshot::Receiver<Result<Reply, ClientError>>, ClientError> {
        let mut state = self.lock();
        if let Some(info) = &state.closed {
            return Err(info.to_error());
        }
        if state.pending.contains_key(&id) {
            return Err(ClientError::DuplicateId(id));
        }
        let (tx, rx) = oneshot::channel();
        state.pending.insert(id, tx);
        Ok(rx)
    }

    /// Forgets a request that no longer waits (timed out, or could not be sent).
    pub(crate) fn cancel(&self, id: u64) {
        self.lock().pending.remove(&id);
    }

    /// Hands a reply to the request waiting for it; false when none is.
    pub(crate) fn deliver(&self, reply: Reply) -> bool {
        let waiter = self.lock().pending.remove(&reply.id);
        match waiter {
            // A waiter that gave up in the meantime dropped its receiver; that is fine.
            Some(tx) => {
                let _ = tx.send(Ok(reply));
                true
            }
            None => false,
        }
    }

    /// Records how the connection ended (the first time only) and fails every waiting request.
    pub(crate) fn close(&self, info: CloseInfo) {
        let waiters: Vec<Waiter> = {
            let mut state = self.lock();
            if state.closed.is_none() {
                state.closed = Some(info);
            }
            state.pending.drain().map(|(_, tx)| tx).collect()
        };
        let error_info = self.close_info();
        for tx in waiters {
            if let Some(info) = &error_info {
                let _ = tx.send(Err(info.to_error()));
            }
        }
    }

    /// How the connection ended, once it has.
    pub(crate) fn close_info(&self) -> Option<CloseInfo> {
        self.lock().closed.clone()
    }

    /// The error for a request on a connection that ended (or whose tasks stopped).
    pub(crate) fn closed_error(&self) -> ClientError {
        self.close_info().map_or_else(
            || ClientError::Closed {
                code: None,
                reason: "the connection's tasks stopped".to_owned(),
            },
            |info| info.to_error(),
        )
    }

    /// How many requests are waiting for replies.
    pub(crate) fn pending(&self) -> usize {
        self.lock().pending.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lianxin_protocol::v1::{Pong, reply};

    fn pong(id: u64, t: i64) -> Reply {
        Reply {
            id,
            result: Some(reply::Result::Pong(Pong { server_time_ms: t })),
        }
    }

    #[tokio::test]
    async fn replies_reach_the_request_with_their_id() {
        let router = Router::default();
        let rx1 = router.register(1).ok();
        let rx2 = router.register(2).ok();
        assert_eq!(router.pending(), 2);
        assert!(router.deliver(pong(2, 20)));
        assert!(router.deliver(pong(1, 10)));
        assert!(!router.deliver(pong(3, 30)), "nobody waits for id 3");
        let r1 = match rx1 {
            Some(rx) => rx.await.ok().and_then(Result::ok),
            None => None,
        };
        let r2 = match rx2 {
            Some(rx) => rx.await.ok().and_then(Result::ok),
            None => None,
        };
        assert_eq!(r1, Some(pong(1, 10)));
        assert_eq!(r2, Some(pong(2, 20)));
        assert_eq!(router.pending(), 0);
    }

    #[test]
    fn duplicate_ids_are_refused_and_cancel_frees_them() {
        let router = Router::default();
        let _rx = router.register(7);
        assert!(matches!(
            router.register(7),
            Err(ClientError::DuplicateId(7))
        ));
        router.cancel(7);
        assert!(router.register(7).is_ok());
    }

    #[tokio::test]
    async fn close_fails_waiting_and_later_requests_with_the_first_close_info() {
        let router = Router::default();
        let rx = router.register(1).ok();
        router.close(CloseInfo {
            code: Some(4001),
            reason: "test".into(),
        });
        router.close(CloseInfo {
            code: None,
            reason: "later".into(),
        });
        let got = match rx {
            Some(rx) => rx.await.ok(),
            None => None,
        };
        assert!(matches!(
            got,
            Some(Err(ClientError::Closed { code: Some(4001), ref reason })) if reason == "test"
        ));
        assert!(matches!(
            router.register(2),
            Err(ClientError::Closed {
                code: Some(4001),
                ..
            })
        ));
        assert!(!router.deliver(pong(1, 0)));
    }
}
