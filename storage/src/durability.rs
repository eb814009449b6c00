//! The single writer and its group commit.
//!
//! Every petition commit goes to one thread, `lianxin-writer`, which owns all writes to the petition
//! keyspace. It takes everything queued (up to [`MAX_GROUP`] jobs), stages the commits one after
//! the other into one `sled::Batch` (no transaction, no conflict: the writer alone allocates feed
//! cursors, checks idempotency keys and knows each petition's stored index keys), applies that
//! batch to the one keyspace tree (atomic, also across a crash), runs one `sled::Db::flush` (write
//! and `fsync` of sled's log) for the whole group, and only then answers every caller. While it
//! flushes, new commits queue up and form the next group, so under load one flush serves many
//! messages; when idle one message costs one flush.
//!
//! Feed events a group appended are hidden from readers until its flush has returned
//! ([`Floors`]), so that a session never delivers an event that a crash could take back.

use rustc_hash::FxHashMap;
use std::sync::{Arc, OnceLock, RwLock, mpsc};

use tokio::sync::oneshot;

use crate::behind::Overlay;
use crate::petitions::{Commit, CommitResult, Group, WriterCache};
use crate::{Result, StoreError};

/// The most jobs one group takes; the rest wait for the next group.
pub const MAX_GROUP: usize = 1024;

/// One request to the writer.
enum Job {
    /// Apply a commit, then answer.
    Commit {
        /// What to write.
        commit: Box<Commit>,
        /// Where to answer, and whether the answer waits for the flush.
        reply: Reply,
    },
    /// Answer once a flush that started after this job was queued has finished.
    Durable(oneshot::Sender<Result<()>>),
    /// Like `Durable`, and the group writes every chunk held behind (`crate::behind`) and
    /// takes a checkpoint whether one is due or not.
    Checkpoint(oneshot::Sender<Result<()>>),
    /// Delete a key the writer keeps nothing of in memory (`ks::WEBHOOK`), with the next group;
    /// answer once that group is on disk.
    Remove {
        /// The key.
        key: Vec<u8>,
        /// Where to answer.
        reply: oneshot::Sender<Result<()>>,
    },
    /// Run a function on the writer thread between two groups: every commit queued before it is
    /// applied and flushed, none queued after it is applied until it returns.
    Exclusive(Box<dyn FnOnce() + Send>),
}

/// The answers of one group to async callers, handed to the runtime in one message.
type Answers = Vec<(oneshot::Sender<Result<CommitResult>>, Result<CommitResult>)>;

/// A task on the callers' runtime that hands out each group's answers. Waking a task from the
/// writer thread (a thread outside the runtime) takes the runtime's shared queue and often a
/// futex wake of a parked worker; the writer wakes this one task once per group, and it wakes
/// the group's callers from inside the runtime, where that is cheap.
#[derive(Default)]
struct Answerer(
    OnceLock<(
        tokio::runtime::Id,
        tokio::sync::mpsc::UnboundedSender<Answers>,
    )>,
);

impl Answerer {
    /// Starts the task on the current runtime, once; whether the caller's answer may go through
    /// it (the caller is on the task's runtime: a caller on another one answers directly, since
    /// the task's runtime may not be running).
    fn start(&self) -> bool {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return false;
        };
        let (id, _) = self.0.get_or_init(|| {
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Answers>();
            runtime.spawn(async move {
                while let Some(answers) = rx.recv().await {
                    for (tx, result) in answers {
                        let _ = tx.send(result);
                    }
                }
            });
            (runtime.id(), tx)
        });
        *id == runtime.id()
    }

    /// Hands a group's answers to the task; answers them here if it is gone (its runtime shut
    /// down) or was never started.
    fn answer(&self, answers: Answers) {
        if answers.is_empty() {
            return;
        }
        let answers = match self.0.get() {
            Some((_, tx)) => match tx.send(answers) {
                Ok(()) => return,
                Err(tokio::sync::mpsc::error::SendError(answers)) => answers,
            },
            None => answers,
        };
        for (tx, result) in answers {
            let _ = tx.send(result);
        }
    }
}

/// Where the writer answers a commit.
enum Reply {
    /// An async caller, answered after the group's flush through the [`Answerer`].
    Batched(oneshot::Sender<Result<CommitResult>>),
    /// An async caller on another runtime than the answerer's, answered after the group's flush.
    Async(oneshot::Sender<Result<CommitResult>>),
    /// A blocked thread, answered after the group's flush.
    Blocking(mpsc::SyncSender<Result<CommitResult>>),
}

impl Reply {
    fn send(self, result: Result<CommitResult>) {
        // A caller that went away no longer needs its answer.
        let _ = match self {
            Reply::Batched(tx) | Reply::Async(tx) => tx.send(result).map_err(|_| ()),
            Reply::Blocking(tx) => tx.send(result).map_err(|_| ()),
        };
    }
}

/// For each account whose feed a group extended before its flush returned, the last cursor known
/// to be on disk. Readers cap what they return at it; the writer clears it after every
/// successful flush (everything applied before is then on disk).
#[derive(Default)]
pub(crate) struct Floors(RwLock<FxHashMap<u64, u64>>);

impl Floors {
    /// The newest cursor of this account that may be shown, if some of its events are not yet on
    /// disk.
    pub(crate) fn cap(&self, account_id: u64) -> Option<u64> {
        let map = self.0.read().unwrap_or_else(|e| e.into_inner());
        map.get(&account_id).copied()
    }

    /// Records floors before a batch is applied, keeping an older floor if one is still there.
    fn raise(&self, floors: &[(u64, u64)]) {
        if floors.is_empty() {
            return;
        }
        let mut map = self.0.write().unwrap_or_else(|e| e.into_inner());
        for &(account, floor) in floors {
            map.entry(account).or_insert(floor);
        }
    }

    /// Everything applied is on disk.
    fn clear(&self) {
        let mut map = self.0.write().unwrap_or_else(|e| e.into_inner());
        if !map.is_empty() {
            map.clear();
        }
    }
}

/// The handle callers use to reach the writer thread; cheap to clone.
#[derive(Clone)]
pub(crate) struct Writer {
    /// The writer's queue.
    tx: mpsc::Sender<Job>,
    /// Feed floors shared with readers.
    floors: Arc<Floors>,
    /// Why the last group flush failed; `None` once one succeeds again.
    failure: Arc<std::sync::Mutex<Option<String>>>,
    /// Hands the async callers' answers out on their runtime.
    answerer: Arc<Answerer>,
    /// Where groups log their writes while a backup runs.
    redo: RedoSlot,
    /// The chunks written behind, for readers.
    overlay: Arc<Overlay>,
}

/// The redo log of a running backup, if one runs; only the writer thread touches it (in groups
/// and in exclusive jobs), so its lock is never contended.
pub(crate) type RedoSlot = Arc<std::sync::Mutex<Option<RedoLog>>>;

/// Every write applied to the keyspace since a backup began, as redo records in a file.
pub(crate) struct RedoLog {
    /// The records so far.
    pub(crate) file: std::io::BufWriter<std::fs::File>,
    /// How many groups were logged.
    pub(crate) groups: u64,
    /// How many writes (puts and removals) were logged.
    pub(crate) writes: u64,
    /// The first write error; the backup fails with it.
    pub(crate) error: Option<std::io::Error>,
}

fn gone() -> StoreError {
    StoreError::Engine(sled::Error::Io(std::io::Error::other(
        "the storage writer did not answer (stopped, or failed on this group)",
    )))
}

impl Writer {
    /// Starts the writer thread for this database and its petition keyspace; `checkpoints`
    /// (absent for temporary stores) are taken with every group that writes (the file is
    /// `fsync`ed at most [`crate::checkpoint::SYNC_EVERY`] apart); chunks stay `write_behind`
    /// behind their journal on average.
    pub(crate) fn start(
        db: sled::Db,
        keyspace: sled::Tree,
        checkpoints: Option<crate::checkpoint::Checkpoints>,
        write_behind: std::time::Duration,
    ) -> Result<Writer> {
        let (tx, rx) = mpsc::channel();
        let floors = Arc::new(Floors::default());
        let failure = Arc::new(std::sync::Mutex::new(None));
        let redo = RedoSlot::default();
        let answerer = Arc::new(Answerer::default());
        let overlay = Arc::new(Overlay::default());
        let cache = WriterCache::recover(&keyspace, overlay.clone(), write_behind)?;
        let thread = WriterThread {
            failure: failure.clone(),
            redo: redo.clone(),
            answerer: answerer.clone(),
            db,
            keyspace,
            cache,
            floors: floors.clone(),
            checkpoints,
            broken: None,
        };
        std::thread::Builder::new()
            .name("lianxin-writer".into())
            .spawn(move || thread.run(rx))
            .map_err(|e| StoreError::Engine(e.into()))?;
        Ok(Writer {
            tx,
            floors,
            failure,
            answerer,
            redo,
            overlay,
        })
    }

    /// The chunks written behind, as readers see them.
    pub(crate) fn overlay(&self) -> &Overlay {
        &self.overlay
    }

    /// The floors readers cap feeds at.
    pub(crate) fn floors(&self) -> &Floors {
        &self.floors
    }

    /// Why the last group flush failed, if it did (cleared by the next one that succeeds).
    pub(crate) fn failure(&self) -> Option<String> {
        self.failure
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Applies a commit and returns once it is on disk.
    pub(crate) async fn commit_durable(&self, commit: Commit) -> Result<CommitResult> {
        let batched = self.answerer.start();
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Job::Commit {
                commit: Box::new(commit),
                reply: if batched {
                    Reply::Batched(tx)
                } else {
                    Reply::Async(tx)
                },
            })
            .map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }

    /// Applies a commit and blocks the calling thread until it is on disk.
    pub(crate) fn commit_blocking(&self, commit: Commit) -> Result<CommitResult> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.tx
            .send(Job::Commit {
                commit: Box::new(commit),
                reply: Reply::Blocking(tx),
            })
            .map_err(|_| gone())?;
        rx.recv().map_err(|_| gone())?
    }

    /// Runs `f` on the writer thread at a consistent point between two groups (see
    /// [`Job::Exclusive`]); commits wait meanwhile. Used by backups.
    pub(crate) async fn exclusive<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Job::Exclusive(Box::new(move || {
                let _ = tx.send(f());
            })))
            .map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }

    /// Deletes a key of the keyspace that the writer caches nothing of (see [`Job::Remove`]) and
    /// returns once that is on disk.
    pub(crate) async fn remove(&self, key: Vec<u8>) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Job::Remove { key, reply: tx })
            .map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }

    /// The redo slot, for backups.
    pub(crate) fn redo(&self) -> &RedoSlot {
        &self.redo
    }

    /// Returns once every chunk held behind is written, a flush that started after this call
    /// has finished and a checkpoint was taken with it.
    pub(crate) async fn checkpoint(&self) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(Job::Checkpoint(tx)).map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }

    /// Returns once a flush that started after this call has finished.
    pub(crate) async fn durable(&self) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(Job::Durable(tx)).map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }
}

/// What the writer thread owns.
struct WriterThread {
    /// The database, for flushes.
    db: sled::Db,
    /// The one tree commits write.
    keyspace: sled::Tree,
    /// Feed heads and stored index keys, known because nobody else writes the keyspace.
    cache: WriterCache,
    /// Feed floors shared with readers.
    floors: Arc<Floors>,
    /// The checkpoint file and its counter (none for temporary stores).
    checkpoints: Option<crate::checkpoint::Checkpoints>,
    /// Why the last group flush failed, shared with the handles.
    failure: Arc<std::sync::Mutex<Option<String>>>,
    /// Hands the async callers' answers out on their runtime.
    answerer: Arc<Answerer>,
    /// The redo log of a running backup.
    redo: RedoSlot,
    /// Why the writer could not read back what the keyspace holds (after a failed group); it
    /// refuses every commit from then on, so as not to write over journal records it lost track
    /// of.
    broken: Option<String>,
}

impl WriterThread {
    /// Serves groups until every handle is dropped.
    fn run(mut self, rx: mpsc::Receiver<Job>) {
        let mut jobs = Vec::new();
        loop {
            // Idle for a window with chunks held behind: they are all written, without a commit
            // (not by a writer that stopped writing: it would try again at once, forever).
            let idle_deadline = match self.broken {
                None => self.cache.idle_deadline(),
                Some(_) => None,
            };
            let first = match idle_deadline {
                None => match rx.recv() {
                    Ok(job) => job,
                    Err(_) => break,
                },
                Some(due) => {
                    let wait = due.saturating_duration_since(std::time::Instant::now());
                    match rx.recv_timeout(wait) {
                        Ok(job) => job,
                        Err(mpsc::RecvTimeoutError::Timeout) => {
                            self.guarded_group(&mut jobs, true);
                            continue;
                        }
                        Err(mpsc::RecvTimeoutError::Disconnected) => break,
                    }
                }
            };
            let mut exclusive = None;
            match first {
                Job::Exclusive(f) => exclusive = Some(f),
                job => jobs.push(job),
            }
            while exclusive.is_none() && jobs.len() < MAX_GROUP {
                match rx.try_recv() {
                    Ok(Job::Exclusive(f)) => exclusive = Some(f),
                    Ok(job) => jobs.push(job),
                    Err(_) => break,
                }
            }
            if !jobs.is_empty() {
                self.guarded_group(&mut jobs, false);
            }
            // Everything queued before it is applied and flushed; nothing after it is applied.
            if let Some(f) = exclusive {
                if std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).is_err() {
                    tracing::error!("an exclusive storage job panicked");
                }
                // It may have written anything: read afresh what the writer remembered.
                self.forget();
            }
        }
        // A clean stop leaves no journal behind.
        if !self.cache.is_clean() && self.broken.is_none() {
            self.group(&mut jobs, true);
        }
        tracing::debug!("storage writer stopped");
    }

    /// Runs [`WriterThread::group`], surviving a panic in it.
    fn guarded_group(&mut self, jobs: &mut Vec<Job>, all: bool) {
        let served =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.group(jobs, all)));
        if served.is_err() {
            // A bug, not an I/O error: the group's callers get an error (their answer channels
            // are dropped), what the cache staged is forgotten, the writer goes on.
            tracing::error!("the storage writer panicked in a group commit");
            self.forget();
            jobs.clear();
        }
    }

    /// Forgets what the writer remembered and reads it afresh from the keyspace; if that fails,
    /// the writer refuses commits from then on.
    fn forget(&mut self) {
        if let Err(e) = self.cache.forget(&self.keyspace) {
            tracing::error!(error = %e, "the storage writer could not read back its journal");
            self.broken = Some(e.to_string());
        }
    }

    /// Appends an applied group's writes to the running backup's redo log.
    fn log_redo(&self, records: &[u8], writes: usize) {
        let mut slot = self
            .redo
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(log) = slot.as_mut()
            && log.error.is_none()
        {
            log.groups += 1;
            log.writes += writes as u64;
            if let Err(e) = std::io::Write::write_all(&mut log.file, records) {
                log.error = Some(e);
            }
        }
    }

    /// Stages, applies and flushes one group, then answers everyone in it; with `all`, it
    /// writes every chunk held behind.
    fn group(&mut self, jobs: &mut Vec<Job>, mut all: bool) {
        if let Some(broken) = &self.broken {
            let e = || {
                StoreError::Engine(sled::Error::ReportableBug(format!(
                    "the storage writer stopped writing: {broken}"
                )))
            };
            for job in jobs.drain(..) {
                match job {
                    Job::Commit { reply, .. } => reply.send(Err(e())),
                    Job::Durable(tx) | Job::Checkpoint(tx) | Job::Remove { reply: tx, .. } => {
                        let _ = tx.send(Err(e()));
                    }
                    Job::Exclusive(f) => f(),
                }
            }
            return;
        }
        let started = std::time::Instant::now();
        if !jobs.is_empty() {
            metrics::histogram!("lianxin_group_commit_jobs").record(jobs.len() as f64);
        }
        let span = tracing::trace_span!("group_commit", jobs = jobs.len(), writes = 0usize);
        let _enter = span.enter();
        self.cache.trim();
        let mut group = Group::default();
        let logging = self
            .redo
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .is_some();
        if logging {
            group.redo = Some(Vec::new());
        }
        let mut answers: Vec<(Reply, Result<CommitResult>)> = Vec::with_capacity(jobs.len());
        let mut waiters = Vec::new();
        let mut force_checkpoint = false;
        for job in jobs.drain(..) {
            match job {
                Job::Commit { commit, reply } => {
                    let result = self.cache.stage(&self.keyspace, &commit, &mut group);
                    answers.push((reply, result));
                }
                Job::Durable(tx) => waiters.push(tx),
                Job::Remove { key, reply } => {
                    group.delete(&key);
                    waiters.push(reply);
                }
                Job::Checkpoint(tx) => {
                    force_checkpoint = true;
                    all = true;
                    waiters.push(tx);
                }
                // `run` never puts one in a group; run it in order all the same.
                Job::Exclusive(f) => f(),
            }
        }
        self.cache
            .finish(&mut group, std::time::Instant::now(), all);
        span.record("writes", group.writes);
        let applied = if group.writes == 0 {
            Ok(())
        } else {
            // Readers must not see the new events before the flush: floors first.
            self.floors.raise(&group.floors);
            let applied = self.keyspace.apply_batch(std::mem::take(&mut group.batch));
            if applied.is_ok() {
                self.cache.applied(&mut group);
            }
            if let (Ok(()), Some(records)) = (&applied, group.redo.take()) {
                self.log_redo(&records, group.writes);
            }
            applied
        };
        // A checkpoint marks the database first; the file follows once the mark is on disk.
        let checkpoint = match &mut self.checkpoints {
            Some(c) if force_checkpoint || group.writes > 0 => match c.mark() {
                Ok(n) => Some(n),
                Err(e) => {
                    tracing::error!(error = %e, "marking a checkpoint failed");
                    None
                }
            },
            _ => None,
        };
        let outcome = match applied {
            Ok(()) => self.db.flush().map(|_| ()),
            Err(e) => {
                // Nothing of the batch is stored; what the cache staged is wrong now.
                self.forget();
                Err(e)
            }
        };
        // Staging, applying and flushing: what every caller of the group waited for.
        metrics::histogram!("lianxin_group_commit_seconds").record(started.elapsed().as_secs_f64());
        match &outcome {
            Ok(()) => self.floors.clear(),
            Err(e) => tracing::error!(error = %e, "group commit failed"),
        }
        if group.writes > 0 || outcome.is_err() {
            *self
                .failure
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) =
                outcome.as_ref().err().map(|e| e.to_string());
        }
        if let (Ok(()), Some(n), Some(c)) = (&outcome, checkpoint, &mut self.checkpoints)
            && let Err(e) = c.record(n, force_checkpoint || c.sync_due())
        {
            // The data is on disk all the same; only the guard lags.
            tracing::error!(error = %e, "writing the checkpoint file failed");
        }
        let mut to_runtime = Vec::with_capacity(answers.len());
        for (reply, result) in answers {
            let result = match (&outcome, result) {
                (Ok(()), result) => result,
                (Err(e), Ok(_)) => Err(StoreError::Engine(e.clone())),
                (Err(_), Err(e)) => Err(e),
            };
            match reply {
                Reply::Batched(tx) => to_runtime.push((tx, result)),
                direct => direct.send(result),
            }
        }
        self.answerer.answer(to_runtime);
        for waiter in waiters {
            let _ = waiter.send(outcome.clone().map_err(StoreError::Engine));
        }
    }
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

    #[test]
    fn async_callers_are_answered_on_any_runtime() {
        let store = Store::temporary().unwrap();
        let runtime = || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
        };
        let first = runtime();
        // The first async caller starts the answering task on its runtime.
        first.block_on(async {
            store
                .commit_durable(crate::Commit::default())
                .await
                .unwrap()
        });
        // That runtime is not driven now: callers on another one are answered all the same.
        let second = runtime();
        second.block_on(async {
            store
                .commit_durable(crate::Commit::default())
                .await
                .unwrap()
        });
        drop(first);
        second.block_on(async {
            store
                .commit_durable(crate::Commit::default())
                .await
                .unwrap()
        });
        // Blocking callers never depend on a runtime.
        store.commit(&crate::Commit::default()).unwrap();
    }

    #[test]
    fn readers_see_a_feed_only_up_to_its_floor_until_the_flush() {
        use lianxin_protocol::v1::{ReadReceipt, event};
        let store = Store::temporary().unwrap();
        let receipt = event::Kind::ReadReceipt(ReadReceipt::default());
        let c = crate::Commit {
            feed: vec![(100, receipt.clone()), (100, receipt)],
            ..Default::default()
        };
        store.commit(&c).unwrap();
        assert_eq!(store.feed_head(100).unwrap(), 2);
        // As while a group extending the feed from cursor 1 is applied but not yet flushed.
        store.writer.floors().raise(&[(100, 1)]);
        assert_eq!(store.feed_head(100).unwrap(), 1);
        assert_eq!(store.feed_after(100, 0, 10).unwrap().len(), 1);
        assert_eq!(store.feed_after(200, 0, 10).unwrap().len(), 0);
        store.writer.floors().clear();
        assert_eq!(store.feed_after(100, 0, 10).unwrap().len(), 2);
    }
}
