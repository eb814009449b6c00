//! Group commit: callers that need their writes on disk wait for one shared flush.
//!
//! A flush covers every write made before it started. A caller arriving while a flush runs waits
//! for the next one, which then serves everyone who arrived meanwhile, so under load one `fsync`
//! acknowledges many messages.

use std::sync::Arc;

use tokio::sync::{Mutex, oneshot};

use crate::{Result, StoreError};

type Waiters = Vec<oneshot::Sender<std::result::Result<(), String>>>;

/// Shares flushes of one database among concurrent callers.
#[derive(Clone)]
pub(crate) struct Flusher {
    /// The database to flush.
    db: sled::Db,
    /// Callers waiting for the next flush, and whether a flush is running.
    state: Arc<Mutex<(Waiters, bool)>>,
}

impl Flusher {
    pub(crate) fn new(db: sled::Db) -> Self {
        Flusher {
            db,
            state: Arc::new(Mutex::new((Vec::new(), false))),
        }
    }

    /// Returns once a flush that started after this call has finished.
    pub(crate) async fn flush(&self) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        let lead = {
            let mut state = self.state.lock().await;
            state.0.push(tx);
            if state.1 {
                false
            } else {
                state.1 = true;
                true
            }
        };
        if lead {
            let this = self.clone();
            tokio::spawn(async move { this.run().await });
        }
        match rx.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(msg)) => Err(StoreError::Engine(sled::Error::Io(std::io::Error::other(
                msg,
            )))),
            Err(_) => Err(StoreError::Engine(sled::Error::Io(std::io::Error::other(
                "flush task ended",
            )))),
        }
    }

    /// Flushes for as long as callers keep arriving.
    async fn run(self) {
        loop {
            let batch = {
                let mut state = self.state.lock().await;
                if state.0.is_empty() {
                    state.1 = false;
                    return;
                }
                std::mem::take(&mut state.0)
            };
            let db = self.db.clone();
            let result = match tokio::task::spawn_blocking(move || db.flush()).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            metrics_note(batch.len());
            for waiter in batch {
                let _ = waiter.send(result.clone());
            }
        }
    }
}

fn metrics_note(batch: usize) {
    tracing::trace!(batch, "group commit flushed");
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use crate::Store;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_concurrent_callers_all_get_their_flush() {
        let store = Store::temporary().unwrap();
        let mut tasks = Vec::new();
        for i in 0..50u64 {
            let s = store.clone();
            tasks.push(tokio::spawn(async move {
                s.meta_set(&format!("k{i}"), b"v").unwrap();
                s.durable().await
            }));
        }
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        assert_eq!(store.meta_get("k49").unwrap(), Some(b"v".to_vec()));
    }
}
