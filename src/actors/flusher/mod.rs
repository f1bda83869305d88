//! The flush debouncer: the sixth actor. It owns the dirty set (the paths
//! with something to commit, from the journal) and the journal itself.
//!
//! A path is prepared once it has been quiet for the debounce since its last
//! change, or has waited the whole batch window, or someone waits on it
//! (`fsync` of a default-mode file, `hf-mount sync`, unmount). Preparing and
//! committing run in tasks, a bounded number at once; their results come
//! back as messages. Commits go out one batch at a time: every line is
//! checked against what its path holds right before the batch is sent, so a
//! file written during its upload stays dirty (a torn snapshot is never
//! committed) and a path changed since is prepared again. A failed upload
//! or commit is retried with backoff, never dropped; the error is kept for
//! the next `fsync` of that file, `hf-mount status`, the log and a metric.
//!
//! Its state lives in an `Arc<Mutex<_>>` the supervisor keeps; a restarted
//! incarnation rebuilds the dirty set from the journal, not from transient
//! state a panic may have left half-changed.

pub mod cycle;
pub mod journal;
pub mod staging;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::actors::Reply;
use parking_lot::Mutex;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::mpsc::UnboundedReceiver;
use tracing::Instrument;

use super::inode_table::InodeMsg;
use super::{Registry, Remote};
use crate::error::{FsError, FsResult};
use crate::hub::XetUploader;
use crate::types::{StagingId, WriteStatus};
use cycle::{Commit, Outcome, Prepared};
use journal::{Journal, Record, SharedJournal};
use staging::Staging;

/// How often the flusher looks for work.
const TICK: Duration = Duration::from_millis(50);
/// Preparations (upload sessions) running at once.
const MAX_CYCLES: usize = 4;
/// Paths one preparation takes at most.
const PATHS_PER_CYCLE: usize = 4000;
/// Preparations nobody waits for start at most this often: paths that come due meanwhile
/// join the next one. Each preparation is an upload session, and making one costs xet-core
/// milliseconds of CPU (a new HTTP client, which loads the system's CA certificates, and a
/// scan of its shard directory): a burst of small files coming due tick after tick made one
/// session per tick, 7–21% of the mount's CPU (two profiles of 4 KiB files created at
/// 1,000–2,000 a second).
const BACKGROUND_CYCLE_INTERVAL: Duration = Duration::from_millis(300);
/// First retry delay after a failure; doubles up to `RETRY_MAX_DELAY`.
const RETRY_BASE_DELAY: Duration = Duration::from_millis(250);
const RETRY_MAX_DELAY: Duration = Duration::from_secs(30);

#[derive(Clone, Debug)]
pub struct FlushConfig {
    /// A path is prepared once quiet this long.
    pub debounce: Duration,
    /// …or once it has waited this long, however often it changes.
    pub max_window: Duration,
}

/// One path with something to commit.
#[derive(Debug, Clone)]
struct Pending {
    /// Bumped by every record for the path: a commit applies to the journal only if unchanged.
    seq: u64,
    first: Instant,
    last: Instant,
    urgent: bool,
    /// Open for writing when last looked at: waits for its next change (or the window).
    busy: bool,
    attempts: u32,
    next_try: Option<Instant>,
}

impl Pending {
    fn new(now: Instant) -> Self {
        Pending { seq: 0, first: now, last: now, urgent: false, busy: false, attempts: 0, next_try: None }
    }

    /// Whether the path is due now, and whether it may be committed while open for writing
    /// (someone waits on it, or it has waited the whole window): a snapshot, checked by generation.
    fn due(&self, now: Instant, cfg: &FlushConfig) -> Option<bool> {
        if self.next_try.is_some_and(|t| now < t) {
            return None;
        }
        let window = now.duration_since(self.first) >= cfg.max_window;
        if self.busy && !window && !self.urgent {
            return None;
        }
        let due = self.urgent || window || now.duration_since(self.last) >= cfg.debounce;
        due.then_some(self.urgent || window)
    }
}

enum Waiter {
    /// Replies once every path is committed, or with the first failure.
    Paths { left: BTreeSet<String>, error: Option<FsError>, reply: Reply<FsResult<()>> },
    /// `hf-mount sync`: replies once every path is committed or has failed, naming the failures.
    Sync { left: BTreeSet<String>, failed: Vec<(String, String)>, reply: Reply<Result<(), Vec<(String, String)>>> },
}

/// The flusher's state; survives restarts of the actor.
pub struct FlusherState {
    journal: SharedJournal,
    staging: Arc<Staging>,
    cfg: FlushConfig,
    pending: BTreeMap<String, Pending>,
    /// Paths being prepared or committed.
    inflight: HashSet<String>,
    queue: Vec<Commit>,
    batching: bool,
    cycles: usize,
    /// When the last preparation nobody waited for started.
    last_background: Option<Instant>,
    waiters: Vec<Waiter>,
    failures: BTreeMap<String, FsError>,
    /// How many paths have a failure (`failures`), for a close answered without a message.
    failed: Arc<AtomicUsize>,
    /// Staging files the inode table let go of; deleted once no pending path needs them.
    gc: UnboundedReceiver<StagingId>,
    discards: Vec<StagingId>,
    committed: u64,
}

impl FlusherState {
    pub fn new(journal: Journal, staging: Arc<Staging>, cfg: FlushConfig, gc: UnboundedReceiver<StagingId>) -> Self {
        let mut st = FlusherState {
            journal: Arc::new(parking_lot::Mutex::new(journal)),
            staging,
            cfg,
            pending: BTreeMap::new(),
            inflight: HashSet::new(),
            queue: Vec::new(),
            batching: false,
            cycles: 0,
            last_background: None,
            waiters: Vec::new(),
            failures: BTreeMap::new(),
            failed: Arc::default(),
            gc,
            discards: Vec::new(),
            committed: 0,
        };
        st.rebuild();
        st
    }

    /// The dirty set from the journal; everything transient starts over.
    fn rebuild(&mut self) {
        let now = Instant::now();
        let j = self.journal.lock();
        self.pending =
            j.overlay().pending().map(|p| (p.clone(), Pending { seq: j.seq(p), ..Pending::new(now) })).collect();
        drop(j);
        self.inflight.clear();
        for c in self.queue.drain(..) {
            if let Some(r) = c.reply {
                let _ = r.send(Err(FsError::Again("flusher restarted; commit again".into())));
            }
        }
        self.batching = false;
        self.cycles = 0;
    }

    pub fn staging(&self) -> Arc<Staging> {
        self.staging.clone()
    }

    /// The journal, for closes answered without a message (see `SharedJournal`), and the
    /// count of paths whose last commit failed (such a close asks the flusher instead).
    pub fn journal(&self) -> (SharedJournal, Arc<AtomicUsize>) {
        (self.journal.clone(), self.failed.clone())
    }

    fn status(&self) -> WriteStatus {
        WriteStatus {
            pending: self.pending.len(),
            uploading: self.inflight.len(),
            failed: self.failures.iter().map(|(p, e)| (p.clone(), e.to_string())).collect(),
            committed: self.committed,
        }
    }

    fn record(&mut self, mut records: Vec<Record>) -> FsResult<()> {
        self.staging.carry_held(&mut records);
        let seq = self.journal.lock().append(&records).map_err(|e| FsError::io("journal write", e))?;
        self.recorded(&records, seq);
        Ok(())
    }

    /// Records already in the journal (append number `seq`): their paths are pending. A path
    /// appended again since (or done since: a later state committed) is left to that append.
    fn recorded(&mut self, records: &[Record], seq: u64) {
        let now = Instant::now();
        let latest: Vec<bool> = {
            let j = self.journal.lock();
            records.iter().map(|r| j.seq(r.path()) == seq).collect()
        };
        for (r, latest) in records.iter().zip(latest) {
            let path = r.path();
            match r {
                Record::Put { .. } | Record::Delete { .. } if latest => {
                    let p = self.pending.entry(path.to_string()).or_insert_with(|| Pending::new(now));
                    p.seq = seq;
                    p.last = now;
                    p.busy = false;
                }
                Record::Put { .. } | Record::Delete { .. } => {}
                Record::Done { .. } => {
                    self.pending.remove(path);
                    self.failures.remove(path);
                    self.settle(path, None);
                }
                _ => {}
            }
        }
        self.failed.store(self.failures.len(), Ordering::Release);
        crate::metrics::get().flush_pending.record(self.pending.len() as u64, &[]);
    }

    /// A path is done (`None`) or failed: tell whoever waits on it.
    fn settle(&mut self, path: &str, error: Option<&FsError>) {
        let mut i = 0;
        while i < self.waiters.len() {
            let finished = match &mut self.waiters[i] {
                Waiter::Paths { left, error: first, .. } => {
                    if left.remove(path) {
                        if let (None, Some(e)) = (&first, error) {
                            *first = Some(e.clone());
                        }
                    }
                    left.is_empty() || first.is_some()
                }
                Waiter::Sync { left, failed, .. } => {
                    if left.remove(path) {
                        if let Some(e) = error {
                            failed.push((path.to_string(), e.to_string()));
                        }
                    }
                    left.is_empty()
                }
            };
            if finished {
                match self.waiters.swap_remove(i) {
                    Waiter::Paths { error, reply, .. } => {
                        let _ = reply.send(error.map_or(Ok(()), Err));
                    }
                    Waiter::Sync { failed, reply, .. } => {
                        let _ = reply.send(if failed.is_empty() { Ok(()) } else { Err(failed) });
                    }
                }
            } else {
                i += 1;
            }
        }
    }

    fn fail(&mut self, path: &str, error: FsError, stage: &'static str) {
        tracing::warn!(path, "{stage} failed, will retry: {error}");
        crate::metrics::get().flush_failures.add(1, &[crate::metrics::kv("stage", stage)]);
        if let Some(p) = self.pending.get_mut(path) {
            p.attempts += 1;
            let delay = RETRY_BASE_DELAY.saturating_mul(1 << p.attempts.min(8)).min(RETRY_MAX_DELAY);
            p.next_try = Some(Instant::now() + delay);
        }
        self.failures.insert(path.to_string(), error.clone());
        self.failed.store(self.failures.len(), Ordering::Release);
        self.settle(path, Some(&error));
    }

    /// A pending path needs nothing more (committed, or already on the Hub).
    /// `landed`: the Hub has a file at `path` now.
    fn finish(&mut self, path: &str, seq: Option<u64>, landed: bool) {
        self.failures.remove(path);
        self.failed.store(self.failures.len(), Ordering::Release);
        let current = self.pending.get(path).map(|p| p.seq);
        if let Some(seq) = seq.filter(|s| current == Some(*s)) {
            let mut j = self.journal.lock();
            let mut records = vec![Record::Done { path: path.to_string() }];
            // A file landed: the directories above it exist on the Hub now.
            let mut at = if landed { path } else { "" };
            while let Some((dir, _)) = at.rsplit_once('/') {
                if j.overlay().dirs.contains(dir) {
                    records.push(Record::DirGone { path: dir.to_string() });
                }
                at = dir;
            }
            // Not done if a close journaled the path again after what was committed (its
            // `Recorded` is on its way): it stays pending.
            match j.append_done(path, seq, &records) {
                Ok(true) => {
                    self.pending.remove(path);
                }
                Ok(false) => {}
                Err(e) => {
                    self.pending.remove(path);
                    tracing::warn!(path, "journal write failed: {e}");
                }
            }
        }
        if !self.pending.contains_key(path) {
            self.settle(path, None);
        }
    }

    fn collect_garbage(&mut self) {
        while let Ok(id) = self.gc.try_recv() {
            self.discards.push(id);
        }
        if self.discards.is_empty() {
            return;
        }
        let (keep, drop): (Vec<_>, Vec<_>) = {
            let j = self.journal.lock();
            self.discards.drain(..).partition(|id| j.overlay().uses_staging(*id))
        };
        self.discards = keep;
        for id in drop {
            self.staging.release(id);
        }
    }
}

pub enum FlushMsg {
    /// Journal these records (before the operation they describe returns) and mark their paths;
    /// answers the last failure to commit the first record's path, if any.
    Record {
        records: Vec<Record>,
        reply: Reply<FsResult<Option<FsError>>>,
    },
    /// These records are in the journal already, as append number `seq` (a close answered
    /// on the FUSE thread appended them): mark their paths.
    Recorded {
        records: Vec<Record>,
        seq: u64,
    },
    /// Flush these paths now; answers once committed or with the first failure.
    FlushNow {
        paths: Vec<String>,
        reply: Reply<FsResult<()>>,
    },
    /// Commit a streamed file (uploaded and finalized by its writer) in the next batch.
    CommitStream {
        commit: Commit,
    },
    /// Everything pending now, committed (or the failures).
    Sync {
        reply: Reply<Result<(), Vec<(String, String)>>>,
    },
    /// Syncs the journal; answers the last failure to commit `path`, if one is named.
    Fsync {
        path: Option<String>,
        reply: Reply<FsResult<()>>,
    },
    Status {
        reply: Reply<WriteStatus>,
    },
    Tick,
    Prepared {
        results: Vec<Prepared>,
    },
    BatchDone {
        outcomes: Vec<(Commit, Outcome)>,
    },
    /// A commit task died: its paths failed (and are tried again).
    Lost {
        paths: Vec<String>,
        why: String,
    },
}

crate::actors::call::request!(FlushMsg, "flusher");

pub struct FlusherArgs {
    pub state: Arc<Mutex<FlusherState>>,
    pub registry: Registry,
    pub remote: Arc<Remote>,
    pub uploader: Arc<XetUploader>,
}

pub struct Flusher;

impl Actor for Flusher {
    type Msg = FlushMsg;
    type State = FlusherArgs;
    type Arguments = FlusherArgs;

    async fn pre_start(
        &self,
        me: ActorRef<Self::Msg>,
        args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        args.state.lock().rebuild();
        me.send_interval(TICK, || FlushMsg::Tick);
        Ok(args)
    }

    handle_in_span!("actor.flusher");
}

/// The actor's message handling: synchronous (uploads and commits run in spawned tasks).
fn on_message(me: ActorRef<FlushMsg>, msg: FlushMsg, args: &mut FlusherArgs) -> Result<(), ActorProcessingErr> {
    let mut st = args.state.lock();
    match msg {
        FlushMsg::Record { records, reply } => {
            let failure = records.first().and_then(|r| st.failures.get(r.path()).cloned());
            let _ = reply.send(st.record(records).map(|_| failure));
        }
        FlushMsg::Recorded { records, seq } => st.recorded(&records, seq),
        FlushMsg::FlushNow { paths, reply } => {
            let mut left = BTreeSet::new();
            for p in paths {
                if let Some(e) = st.pending.get_mut(&p) {
                    e.urgent = true;
                    e.busy = false;
                    e.next_try = None;
                    left.insert(p);
                }
            }
            if left.is_empty() {
                let _ = reply.send(Ok(()));
            } else {
                st.waiters.push(Waiter::Paths { left, error: None, reply });
                start_work(&me, &mut st, args);
            }
        }
        FlushMsg::CommitStream { commit } => {
            st.queue.push(commit);
            start_work(&me, &mut st, args);
        }
        FlushMsg::Sync { reply } => {
            let left: BTreeSet<String> = st.pending.keys().cloned().collect();
            if left.is_empty() {
                let _ = reply.send(Ok(()));
            } else {
                for p in st.pending.values_mut() {
                    p.urgent = true;
                    p.busy = false;
                    p.next_try = None;
                }
                st.waiters.push(Waiter::Sync { left, failed: Vec::new(), reply });
                start_work(&me, &mut st, args);
            }
        }
        FlushMsg::Fsync { path, reply } => {
            let file = st.journal.lock().file();
            let failure = path.and_then(|p| st.failures.get(&p).cloned());
            tokio::task::spawn_blocking(move || {
                let synced = file.sync_data().map_err(|e| FsError::io("journal fsync", e));
                let _ = reply.send(synced.and(failure.map_or(Ok(()), Err)));
            });
        }
        FlushMsg::Status { reply } => {
            let _ = reply.send(st.status());
        }
        FlushMsg::Tick => {
            st.collect_garbage();
            if st.staging.has_due() {
                let staging = st.staging.clone();
                tokio::task::spawn_blocking(move || staging.collect());
            }
            start_work(&me, &mut st, args);
        }
        FlushMsg::Prepared { results } => {
            st.cycles = st.cycles.saturating_sub(1);
            for r in results {
                match r {
                    Prepared::Commit(c) => st.queue.push(c),
                    Prepared::Nothing { path, seq } => {
                        st.inflight.remove(&path);
                        st.finish(&path, Some(seq), false);
                    }
                    Prepared::Busy { path } => {
                        st.inflight.remove(&path);
                        if let Some(p) = st.pending.get_mut(&path) {
                            if p.urgent {
                                // A write is under way: look again in a moment.
                                p.next_try = Some(Instant::now() + TICK);
                            } else {
                                p.busy = true;
                            }
                        }
                    }
                    Prepared::Changed { path } => {
                        st.inflight.remove(&path);
                        let debounce = st.cfg.debounce;
                        if let Some(p) = st.pending.get_mut(&path) {
                            p.next_try = Some(Instant::now() + debounce.min(Duration::from_secs(1)));
                        }
                    }
                    Prepared::Failed { path, error } => {
                        st.inflight.remove(&path);
                        st.fail(&path, error, "upload");
                    }
                }
            }
            start_work(&me, &mut st, args);
        }
        FlushMsg::Lost { paths, why } => {
            st.batching = false;
            for p in paths {
                st.inflight.remove(&p);
                st.fail(&p, FsError::Io(why.clone()), "commit");
            }
            start_work(&me, &mut st, args);
        }
        FlushMsg::BatchDone { outcomes } => {
            st.batching = false;
            let inode = args.registry.get().ok().map(|r| r.inode);
            for (c, outcome) in outcomes {
                st.inflight.remove(&c.path);
                match outcome {
                    Outcome::Applied => {
                        st.committed += 1;
                        if let Some(inode) = &inode {
                            let _ = match (&c.file, c.expect) {
                                (Some(file), Some((ino, gen))) => inode.send_message(InodeMsg::Committed {
                                    path: c.path.clone(),
                                    ino,
                                    gen,
                                    file: file.clone(),
                                }),
                                _ => inode.send_message(InodeMsg::Deleted { path: c.path.clone() }),
                            };
                        }
                        if c.seq.is_some() && c.file.is_some() && !st.pending.contains_key(&c.path) {
                            // Removed or renamed away while its add was in the batch: the Hub
                            // now has a file the mount does not. Delete it (hidden meanwhile).
                            tracing::debug!(path = %c.path, "committed as it went away: deleting it again");
                            if let Some(inode) = &inode {
                                let _ = inode.send_message(InodeMsg::Tombstone { path: c.path.clone() });
                            }
                            if let Err(e) = st.record(vec![Record::Delete { path: c.path.clone() }]) {
                                tracing::warn!(path = %c.path, "journal write failed: {e}");
                            }
                            // Part of what a waiting `sync` waits for.
                            for w in &mut st.waiters {
                                if let Waiter::Sync { left, .. } = w {
                                    left.insert(c.path.clone());
                                }
                            }
                        }
                        if c.snapshot {
                            // Changed since its snapshot: the next one comes a window later.
                            if let Some(p) = st.pending.get_mut(&c.path) {
                                p.first = Instant::now();
                            }
                        }
                        st.finish(&c.path, c.seq, c.file.is_some());
                        if let Some(r) = c.reply {
                            let _ = r.send(Ok(()));
                        }
                    }
                    Outcome::Stale => {
                        // Changed since it was prepared: it is prepared again once quiet, not
                        // at once (a file written all the time would be uploaded in a loop).
                        let debounce = st.cfg.debounce;
                        if let Some(p) = st.pending.get_mut(&c.path) {
                            p.next_try = Some(Instant::now() + debounce);
                        }
                        if let Some(r) = c.reply {
                            let _ = r.send(Err(FsError::Again(format!("{} changed while it was committed", c.path))));
                        }
                    }
                    Outcome::Failed(e) => {
                        st.fail(&c.path, e.clone(), "commit");
                        if let Some(r) = c.reply {
                            let _ = r.send(Err(e));
                        }
                    }
                }
            }
            start_work(&me, &mut st, args);
        }
    }
    Ok(())
}

/// Starts a batch if one can go, and preparations for the paths that are due.
fn start_work(me: &ActorRef<FlushMsg>, st: &mut FlusherState, args: &FlusherArgs) {
    if !st.batching && !st.queue.is_empty() {
        st.batching = true;
        let items = std::mem::take(&mut st.queue);
        let (me, registry, remote) = (me.clone(), args.registry.clone(), args.remote.clone());
        let paths: Vec<String> = items.iter().map(|c| c.path.clone()).collect();
        tokio::spawn(
            async move {
                match tokio::spawn(cycle::commit(registry, remote, items)).await {
                    Ok(outcomes) => me.send_message(FlushMsg::BatchDone { outcomes }),
                    Err(e) => me.send_message(FlushMsg::Lost { paths, why: format!("commit task failed: {e}") }),
                }
            }
            .instrument(tracing::debug_span!("flush.commit")),
        );
    }
    let now = Instant::now();
    while st.cycles < MAX_CYCLES {
        let due: Vec<cycle::Due> = st
            .pending
            .iter()
            .filter(|(p, _)| !st.inflight.contains(*p))
            .filter_map(|(p, e)| {
                e.due(now, &st.cfg).map(|open_ok| cycle::Due {
                    path: p.clone(),
                    seq: e.seq,
                    open_ok,
                    // Waited the whole window: commit a snapshot even if writes go on.
                    snapshot: now.duration_since(e.first) >= st.cfg.max_window,
                })
            })
            .take(PATHS_PER_CYCLE)
            .collect();
        if due.is_empty() {
            return;
        }
        // Someone waits (`open_ok` is set for urgent paths and those past the window): go now.
        let waited_for = due.iter().any(|d| d.open_ok);
        if !waited_for && due.len() < PATHS_PER_CYCLE {
            if st.last_background.is_some_and(|t| now.duration_since(t) < BACKGROUND_CYCLE_INTERVAL) {
                return;
            }
            st.last_background = Some(now);
        }
        for d in &due {
            st.inflight.insert(d.path.clone());
        }
        st.cycles += 1;
        let (me, registry, remote, uploader, staging) =
            (me.clone(), args.registry.clone(), args.remote.clone(), args.uploader.clone(), st.staging.clone());
        let paths: Vec<String> = due.iter().map(|d| d.path.clone()).collect();
        tokio::spawn(
            async move {
                // A panic in the preparation (xet-core asserts, say) must not leak its slot
                // and paths: they fail, and are tried again.
                let task = tokio::spawn(cycle::prepare(registry, remote, uploader, staging, due));
                let results = match task.await {
                    Ok(r) => r,
                    Err(e) => {
                        let error = FsError::Io(format!("upload task failed: {e}"));
                        paths.into_iter().map(|path| Prepared::Failed { path, error: error.clone() }).collect()
                    }
                };
                let _ = me.send_message(FlushMsg::Prepared { results });
            }
            .instrument(tracing::debug_span!("flush.prepare")),
        );
    }
}
