//! The backend-neutral API that both frontends call, with every policy
//! written once: read-only mounts, names, modes and owners, errno choices,
//! write modes, directory paging. Each method is a short conversation with
//! the actors: ask the owner of the state, and when the answer is "not known
//! yet", ask the revalidator (which coalesces Hub requests) and report the
//! result back to the owner. Waiting happens here, in the caller's task,
//! never inside an actor. Metadata is in `meta`, reads in `data`, writes in
//! `write`, namespace changes in `namespace`.

mod data;
mod meta;
mod namespace;
mod stateless;
mod write;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use ractor::ActorRef;
use tokio::sync::mpsc::{channel, unbounded_channel, Receiver, Sender};
use tokio::sync::Semaphore;

use crate::actors::chunk_cache::{CacheConfig, CacheMsg, CacheState, CacheStats, BLOCK_BYTES};
use crate::actors::flusher::journal::{Journal, Overlay, Record};
use crate::actors::flusher::staging::Staging;
use crate::actors::flusher::{FlushConfig, FlushMsg, FlusherState};
use crate::actors::inode_table::{Content, Defaults, InodeMsg, InodeState, InodeView, Meta, NodeView, Restore};
use crate::actors::prefetch::{HandleState, HandleView};
use crate::actors::revalidator::RevalidatorMsg;
use crate::actors::{
    call, call_with_timeout, new_registry, ActorKind, EngineArgs, Registry, Remote, Supervisor, SupervisorMsg,
    WriteArgs,
};
use crate::error::{FsError, FsResult};
use crate::hub::{HubClient, RemoteFile, Source, XetUploader};
use crate::types::{Ino, Invalidation, WriteStatus, NAME_MAX_BYTES, ROOT_INO};

pub use crate::types::{Attr, DirEntry};
pub use namespace::{RenameFlags, StatFs};
pub use write::{write_buffer, MAX_FILE_BYTES};

/// Read-ahead bytes being fetched at once, mount-wide, in MiB: each stream's window bounds
/// its own share, this bounds them all (read-ahead past it waits for room).
const READAHEAD_BUDGET_MIB: u32 = 256;
/// Cache disk reads (runs of up to 2 MiB) in flight at once: enough for the device's full
/// speed, few enough that the next block a reader needs is not sharing it with a whole window.
const DISK_READS_IN_FLIGHT: usize = 4;
/// How long unmount waits for queued disk-cache writes (at most the write-behind budget, a
/// fraction of a second on a local disk).
const CACHE_SETTLE_TIMEOUT: Duration = Duration::from_secs(3);
/// One remote request fetches at most this many blocks; longer runs are split and fetched in parallel.
const FETCH_MAX_BLOCKS: u64 = (16 << 20) / BLOCK_BYTES;
/// Plain (non-Xet) files up to this size are fetched and verified whole.
const WHOLE_FILE_MAX_BYTES: u64 = 16 << 20;
/// Xet files up to this size are fetched whole on first read, so their bytes are checked
/// against the file's Xet hash (xet-core checks none on download); larger files are read by
/// range and rely on the transport (TLS) for integrity.
const XET_WHOLE_FILE_MAX_BYTES: u64 = 4 << 20;
/// After a revalidation fails, cached attributes are served without asking for this long.
const REVALIDATION_PAUSE: Duration = Duration::from_secs(1);
/// Kernel invalidations queued at most; past it they are dropped (the TTL still expires
/// what they would have dropped), so a frontend that never drains them costs bounded memory.
const INVALIDATIONS_QUEUED_MAX: usize = 4096;
/// OS metadata files that desktop tools probe for; answered "no such file" without a Hub request.
const OS_JUNK_NAMES: &[&str] = &[
    ".DS_Store",
    "Thumbs.db",
    "desktop.ini",
    ".Spotlight-V100",
    ".Trashes",
    ".fseventsd",
    ".localized",
    ".hidden",
    ".metadata_never_index",
    "autorun.inf",
];

/// True for names desktop tools create or probe that never exist on the Hub.
pub fn is_os_junk(name: &str) -> bool {
    name.starts_with("._") || OS_JUNK_NAMES.contains(&name)
}

/// A name handed in by a frontend, as the engine accepts it: UTF-8 (the Hub's paths are), one
/// component, at most 255 bytes. Decided once here for FUSE and NFS both.
pub fn check_name(raw: &[u8]) -> FsResult<&str> {
    if raw.len() > NAME_MAX_BYTES {
        return Err(FsError::NameTooLong(raw.len()));
    }
    let name = std::str::from_utf8(raw).map_err(|_| FsError::Invalid("name is not valid UTF-8".into()))?;
    if name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\0') {
        return Err(FsError::Invalid(format!("bad name {name:?}")));
    }
    Ok(name)
}

#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// How long attributes are trusted; `None`: forever (sha-pinned mounts). Zero: revalidate on every access.
    pub metadata_ttl: Option<Duration>,
    pub negative_ttl: Duration,
    /// `None` disables polling.
    pub poll_interval: Option<Duration>,
    pub filter_os_files: bool,
    pub memory_cache_bytes: u64,
    /// Inodes kept at most (least recently used directory listings are unloaded past it).
    pub max_inodes: usize,
    /// `None` disables the disk cache of file bytes.
    pub disk_cache: Option<(PathBuf, u64)>,
    /// The mount's own directory under the cache dir (locked by this mount).
    pub dir: PathBuf,
    /// The owner of entries the Hub knows nothing local about.
    pub uid: u32,
    pub gid: u32,
    /// `Some`: a writable mount (buckets without `--read-only`).
    pub writes: Option<WriteConfig>,
}

#[derive(Clone, Debug)]
pub struct WriteConfig {
    /// The mount's own directory: staging files, journal, upload state.
    pub dir: PathBuf,
    /// Every write goes through staging files (random writes), committed by the flusher.
    pub advanced: bool,
    pub flush: FlushConfig,
    /// How long unmount waits for pending uploads.
    pub shutdown_timeout: Duration,
}

struct Writes {
    staging: Arc<Staging>,
    uploader: Arc<XetUploader>,
    advanced: bool,
    shutdown_timeout: Duration,
    /// The flusher's journal and its count of failed paths, for a close answered on the
    /// FUSE thread (`Engine::flush_now`).
    journal: crate::actors::flusher::journal::SharedJournal,
    failed: Arc<std::sync::atomic::AtomicUsize>,
}

struct Inner {
    registry: Registry,
    remote: Arc<Remote>,
    supervisor: ActorRef<SupervisorMsg>,
    cfg: EngineConfig,
    invalidations: Mutex<Option<Receiver<Invalidation>>>,
    invalidations_tx: Sender<Invalidation>,
    readaheads: Arc<Semaphore>,
    /// Cache disk reads in flight at most (FIFO: runs are read in the order they were asked).
    disk_reads: Arc<Semaphore>,
    writes: Option<Writes>,
    /// Differs at every start: stateless protocols put it in their handles and verifiers.
    boot: u64,
    /// Handles of an earlier boot the journal carried over: (boot, inode then) → inode now.
    carried: Mutex<HashMap<(u64, Ino), Ino>>,
    /// Set once the mount has failed for good (see [`Engine::failed`]).
    failure: Arc<crate::actors::Failure>,
    /// Until when revalidations are skipped after one failed (the Hub is in trouble).
    revalidation_paused: Mutex<Option<Instant>>,
    /// The prefetch actor's open handles, read without a message (see `HandleView`).
    handles: HandleView,
    /// The inode table, read without a message (see `InodeView`).
    inodes: InodeView,
}

/// A number that differs at every start of an engine (and is never 0).
fn boot_number() -> u64 {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    (nanos ^ (u64::from(std::process::id()) << 40)).max(1)
}

/// The handle frontends hold; cheap to clone.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

fn nanos(t: SystemTime) -> i64 {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => d.as_nanos().min(i64::MAX as u128) as i64,
        Err(e) => -(e.duration().as_nanos().min(i64::MAX as u128) as i64),
    }
}

fn from_nanos(n: i64) -> SystemTime {
    if n >= 0 {
        SystemTime::UNIX_EPOCH + Duration::from_nanos(n as u64)
    } else {
        SystemTime::UNIX_EPOCH - Duration::from_nanos(n.unsigned_abs())
    }
}

pub(crate) fn meta_record(m: &Meta) -> crate::actors::flusher::journal::MetaRec {
    crate::actors::flusher::journal::MetaRec {
        perm: m.perm,
        uid: m.uid,
        gid: m.gid,
        atime: nanos(m.atime),
        mtime: nanos(m.mtime),
        ctime: nanos(m.ctime),
    }
}

fn meta_of(r: &crate::actors::flusher::journal::MetaRec) -> Meta {
    Meta {
        perm: r.perm,
        uid: r.uid,
        gid: r.gid,
        atime: from_nanos(r.atime),
        mtime: from_nanos(r.mtime),
        ctime: from_nanos(r.ctime),
        local: true,
    }
}

impl Engine {
    /// Probes the source (failing with a clear error when it cannot be mounted) and starts the
    /// actors. A writable mount replays its journal first: what an earlier mount left pending
    /// is shown at once and committed in the background.
    pub async fn start(hub: Arc<HubClient>, source: Source, cfg: EngineConfig) -> anyhow::Result<Self> {
        let probe = hub.probe(&source).await.map_err(|e| describe_probe_error(&source, e))?;
        let remote = Arc::new(Remote::new(hub.clone(), source.clone(), &probe, cfg.dir.clone()));
        if !source.subfolder.is_empty() && !remote.is_dir("").await.map_err(|e| anyhow::anyhow!("{source}: {e}"))? {
            anyhow::bail!("{source}: subfolder {:?} does not exist", source.subfolder);
        }
        let (tx, rx) = channel(INVALIDATIONS_QUEUED_MAX);
        let cache = CacheState::new(CacheConfig { memory_bytes: cfg.memory_cache_bytes, disk: cfg.disk_cache.clone() })
            .map_err(|e| anyhow::anyhow!("cache directory unusable: {e}"))?;
        let writable = cfg.writes.is_some();
        let defaults = Defaults {
            uid: cfg.uid,
            gid: cfg.gid,
            file_perm: if writable { 0o644 } else { 0o444 },
            dir_perm: if writable { 0o755 } else { 0o555 },
            mount_time: probe.modified.unwrap_or_else(SystemTime::now),
        };
        let registry = new_registry();
        let (write_args, writes, overlay) = match &cfg.writes {
            None => (None, None, None),
            Some(w) => {
                let (args, writes, overlay) = open_writes(&hub, &remote, w)?;
                (Some(args), Some(writes), Some(overlay))
            }
        };
        let failure = Arc::new(crate::actors::Failure::default());
        let handles = Arc::new(Mutex::new(HandleState::default()));
        let handle_view = HandleView::new(handles.clone());
        let inodes = Arc::new(Mutex::new(InodeState::new(cfg.negative_ttl, cfg.max_inodes, defaults)));
        let inode_view = InodeView::new(inodes.clone());
        let args = EngineArgs {
            remote: remote.clone(),
            inodes,
            handles,
            cache: Arc::new(Mutex::new(cache)),
            invalidations: tx.clone(),
            poll_interval: cfg.poll_interval,
            registry: registry.clone(),
            writes: write_args,
            failure: failure.clone(),
        };
        let supervisor = Supervisor::start(args).await?;
        let mut carried_handles = None;
        if let (Some(overlay), Some(w)) = (overlay, &writes) {
            carried_handles = Some(
                overlay
                    .handles
                    .iter()
                    .filter(|(p, _)| overlay.puts.contains_key(*p))
                    .map(|(p, (boot, ino))| (p.clone(), *boot, *ino))
                    .collect(),
            );
            let restore = restore_of(&overlay, &w.staging);
            if !restore.files.is_empty() || !restore.deletes.is_empty() {
                tracing::info!(
                    "{source}: the journal holds {} file(s) and {} deletion(s) not yet committed; committing them",
                    restore.files.len(),
                    restore.deletes.len()
                );
            }
            call(&registry, |r| r.inode.clone(), |reply| InodeMsg::Restore { restore: restore.clone(), reply })
                .await
                .map_err(|e| anyhow::anyhow!("cannot restore the journal: {e}"))?;
        }
        // Connect to the CAS in the background, so the first read pays only for its data.
        let warm = remote.clone();
        tokio::spawn(async move { warm.xet.warm().await });
        let engine = Self {
            inner: Arc::new(Inner {
                registry,
                remote,
                supervisor,
                cfg,
                invalidations: Mutex::new(Some(rx)),
                invalidations_tx: tx,
                readaheads: Arc::new(Semaphore::new(READAHEAD_BUDGET_MIB as usize)),
                disk_reads: Arc::new(Semaphore::new(DISK_READS_IN_FLIGHT)),
                writes,
                boot: boot_number(),
                carried: Mutex::new(HashMap::new()),
                failure,
                revalidation_paused: Mutex::new(None),
                handles: handle_view,
                inodes: inode_view,
            }),
        };
        if let Some(handles) = carried_handles {
            engine.carry_handles(handles).await;
        }
        Ok(engine)
    }

    /// This start's number (see [`Inner::boot`]).
    pub fn boot(&self) -> u64 {
        self.inner.boot
    }

    /// The inode a handle of an earlier boot names now, if the journal carried it over.
    pub fn carried_handle(&self, boot: u64, ino: Ino) -> Option<Ino> {
        self.inner.carried.lock().get(&(boot, ino)).copied()
    }

    /// Maps the handles the journal names (files with uncommitted writes from stateless
    /// protocols) to the inodes their paths have now.
    async fn carry_handles(&self, handles: Vec<(String, u64, Ino)>) {
        let mut carried = HashMap::new();
        for (path, boot, ino) in handles {
            match self.resolve_path(&path).await {
                Ok(now) => {
                    carried.insert((boot, ino), now);
                }
                Err(e) => tracing::debug!(path, "a handle from the journal no longer resolves: {e}"),
            }
        }
        *self.inner.carried.lock() = carried;
    }

    /// The inode at `path` (below the mount's root).
    async fn resolve_path(&self, path: &str) -> FsResult<Ino> {
        let mut ino = ROOT_INO;
        for name in path.split('/').filter(|n| !n.is_empty()) {
            ino = self.lookup_view(ino, name, crate::types::Hold::None).await?.ino;
        }
        Ok(ino)
    }

    pub fn source(&self) -> Source {
        self.inner.remote.source()
    }

    /// The commit sha (repos) or `updatedAt` (buckets) currently served.
    pub fn version(&self) -> String {
        self.inner.remote.version()
    }

    pub fn config(&self) -> &EngineConfig {
        &self.inner.cfg
    }

    pub fn writable(&self) -> bool {
        self.inner.writes.is_some()
    }

    /// Kernel invalidations from changes; the frontend takes the receiver once.
    pub fn take_invalidations(&self) -> Option<Receiver<Invalidation>> {
        self.inner.invalidations.lock().take()
    }

    fn reg(&self) -> &Registry {
        &self.inner.registry
    }

    /// Replies that wait on the Hub get its deadline plus a margin.
    fn net_timeout(&self) -> Duration {
        self.inner.remote.hub.deadline() + Duration::from_secs(2)
    }

    fn forward_invalidations(&self, inval: Vec<Invalidation>) {
        for i in inval {
            // Full: the kernel's TTL expires the entry anyway.
            let _ = self.inner.invalidations_tx.try_send(i);
        }
    }

    /// The write side, or EROFS.
    fn writes(&self) -> FsResult<&Writes> {
        self.inner.writes.as_ref().ok_or(FsError::ReadOnly)
    }

    async fn inode<T: Send + 'static>(&self, build: impl Fn(crate::actors::Reply<T>) -> InodeMsg) -> FsResult<T> {
        call(self.reg(), |r| r.inode.clone(), build).await
    }

    /// Sends the inode table a message that needs no answer.
    fn tell_inode(&self, msg: InodeMsg) {
        if let Ok(r) = self.reg().get() {
            let _ = r.inode.send_message(msg);
        }
    }

    async fn flusher<T: Send + 'static>(&self, build: impl Fn(crate::actors::Reply<T>) -> FlushMsg) -> FsResult<T> {
        self.writes()?;
        call(self.reg(), |r| r.flusher.clone().expect("writable mounts have a flusher"), build).await
    }

    /// Journals records before the operation they describe returns.
    async fn journal(&self, records: Vec<Record>) -> FsResult<()> {
        self.journal_and_failure(records).await.map(|_| ())
    }

    /// [`Self::journal`], answering too the last failure to commit the first record's path.
    async fn journal_and_failure(&self, records: Vec<Record>) -> FsResult<Option<FsError>> {
        if records.is_empty() {
            return Ok(None);
        }
        self.flusher(|reply| FlushMsg::Record { records: records.clone(), reply }).await?
    }

    /// HEADs a file whose attributes passed their TTL; on Hub trouble keeps the cached ones,
    /// and for [`REVALIDATION_PAUSE`] after it asks nothing more (each request would wait a
    /// whole deadline for the same outage: an NFS read of a large file revalidates per READ).
    async fn revalidate(&self, view: NodeView) -> FsResult<NodeView> {
        if self.inner.revalidation_paused.lock().is_some_and(|until| Instant::now() < until) {
            return Ok(view);
        }
        let path = view.path.clone();
        let head = call_with_timeout(
            self.reg(),
            |r| r.revalidator.clone(),
            |reply| RevalidatorMsg::Head { path: path.clone(), reply },
            self.net_timeout(),
        )
        .await;
        let file = match head.and_then(|r| r) {
            Ok(f) => f,
            Err(e @ FsError::PermissionDenied(_)) => return Err(e),
            Err(e) => {
                tracing::warn!(path = %view.path, "revalidation failed, serving cached attributes: {e}");
                *self.inner.revalidation_paused.lock() = Some(Instant::now() + REVALIDATION_PAUSE);
                return Ok(view);
            }
        };
        let (ino, epoch) = (view.ino, view.epoch);
        self.inode(|reply| InodeMsg::Revalidated { ino, file: file.clone(), epoch, reply }).await?
    }

    fn stale(&self, view: &NodeView) -> bool {
        view.stale(self.inner.cfg.metadata_ttl)
    }

    pub async fn cache_stats(&self) -> FsResult<CacheStats> {
        call(self.reg(), |r| r.cache.clone(), |reply| CacheMsg::Stats { reply }).await
    }

    pub async fn inode_count(&self) -> FsResult<usize> {
        self.inode(|reply| InodeMsg::Count { reply }).await
    }

    /// Pending uploads and commits (writable mounts).
    pub async fn write_status(&self) -> FsResult<WriteStatus> {
        self.flusher(|reply| FlushMsg::Status { reply }).await
    }

    /// Waits until everything pending now is committed, or answers what failed.
    pub async fn sync_all(&self) -> FsResult<Result<(), Vec<(String, String)>>> {
        self.writes()?;
        let wait = self.net_timeout() * 8;
        call_with_timeout(self.reg(), |r| r.flusher.clone().expect("writable"), |reply| FlushMsg::Sync { reply }, wait)
            .await
    }

    /// Polls the source now (as the poller would); returns whether it had changed.
    pub async fn poll_now(&self) -> FsResult<bool> {
        match self.reg().get()?.poller {
            Some(_) => {
                call_with_timeout(
                    self.reg(),
                    |r| r.poller.clone().expect("checked"),
                    |reply| crate::actors::poller::PollerMsg::PollNow { reply },
                    self.net_timeout() * 4,
                )
                .await?
            }
            None => Err(FsError::NotSupported),
        }
    }

    /// Test hook: kills one actor as a crash would; the supervisor restarts it.
    pub fn kill_actor(&self, kind: ActorKind) -> FsResult<()> {
        let refs = self.reg().get()?;
        match kind {
            ActorKind::InodeTable => refs.inode.kill(),
            ActorKind::Revalidator => refs.revalidator.kill(),
            ActorKind::Prefetch => refs.prefetch.kill(),
            ActorKind::ChunkCache => refs.cache.kill(),
            ActorKind::Poller => refs.poller.ok_or(FsError::NotSupported)?.kill(),
            ActorKind::Flusher => refs.flusher.ok_or(FsError::NotSupported)?.kill(),
        }
        Ok(())
    }

    /// Waits until the mount has failed for good (an actor past its restart limit; every
    /// request answers EIO from then on); answers why. Frontends unmount on it.
    pub async fn failed(&self) -> String {
        self.inner.failure.wait().await
    }

    /// Test hook: the inode table panics after the next `op` changes its state, before it
    /// answers (a crash in the middle of a change).
    pub async fn fail_inode_table_after(&self, op: crate::actors::inode_table::FailAfter) -> FsResult<()> {
        self.inode(|reply| InodeMsg::FailAfter { op, reply }).await
    }

    /// References the kernel holds on `ino` (lookups not yet forgotten).
    pub async fn kernel_references(&self, ino: Ino) -> FsResult<u64> {
        Ok(self.view(ino).await?.lookups)
    }

    pub async fn restarts(&self) -> FsResult<u64> {
        self.inner
            .supervisor
            .call(|reply| SupervisorMsg::Restarts { reply }, Some(Duration::from_secs(5)))
            .await
            .map_err(|e| FsError::Io(e.to_string()))
            .and_then(|r| match r {
                ractor::rpc::CallResult::Success(n) => Ok(n),
                _ => Err(FsError::Io("supervisor did not answer".into())),
            })
    }

    /// Drains pending uploads (within the shutdown timeout), then stops the actors. What is
    /// left stays in the journal for the next mount, and the log says so.
    pub async fn drain_and_shutdown(&self) {
        if let Some(w) = &self.inner.writes {
            match tokio::time::timeout(w.shutdown_timeout, self.sync_all()).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(failed))) => tracing::warn!(
                    "{} path(s) could not be committed before unmount (first: {} — {}); \
                     they stay in the journal and are committed by the next mount of this source with this cache dir",
                    failed.len(),
                    failed[0].0,
                    failed[0].1
                ),
                Ok(Err(e)) => tracing::warn!("pending uploads not drained before unmount: {e}"),
                Err(_) => {
                    let left = self.write_status().await.map(|s| s.pending).unwrap_or(0);
                    tracing::warn!(
                        "{left} path(s) still pending after {:?}; they stay in the journal and are committed by \
                         the next mount of this source with this cache dir",
                        w.shutdown_timeout
                    );
                }
            }
        }
        self.settle_cache_writes().await;
        self.shutdown();
    }

    /// Waits (briefly) for the blocks queued for the disk cache to be written, so the next
    /// mount finds what this one read; what is still queued at the deadline is left out.
    async fn settle_cache_writes(&self) {
        let deadline = tokio::time::Instant::now() + CACHE_SETTLE_TIMEOUT;
        loop {
            match self.cache_stats().await {
                Ok(s) if s.disk_write_pending_bytes > 0 && tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(10)).await
                }
                Ok(s) if s.disk_write_pending_bytes > 0 => {
                    tracing::info!(
                        "{} MiB of cache blocks not written before unmount (fetched again when next read)",
                        s.disk_write_pending_bytes >> 20
                    );
                    return;
                }
                _ => return,
            }
        }
    }

    /// Stops the actors (the mount is going away).
    pub fn shutdown(&self) {
        self.inner.supervisor.stop(None);
    }
}

/// Opens the write side of a mount: staging files, the journal (replayed), the uploader.
fn open_writes(
    hub: &Arc<HubClient>,
    remote: &Arc<Remote>,
    w: &WriteConfig,
) -> anyhow::Result<(WriteArgs, Writes, Overlay)> {
    let staging = Staging::open(&w.dir.join("staging"))
        .map_err(|e| anyhow::anyhow!("staging directory {}: {e}", w.dir.join("staging").display()))?;
    let (journal, replay) = Journal::open(&w.dir.join("journal")).map_err(|e| anyhow::anyhow!("{e}"))?;
    if replay.skipped > 0 {
        tracing::error!(
            "journal {}: {} record(s) failed their check and were skipped{}; the rest was replayed",
            w.dir.join("journal").display(),
            replay.skipped,
            if replay.torn_tail { " (a torn last record, from a crash mid-write)" } else { "" }
        );
    }
    let overlay = journal.overlay().clone();
    // New staging numbers pass the ones the journal names (held ones have no file).
    for put in overlay.puts.values() {
        if let Some(id) = put.staging {
            staging.note_used(id);
        }
    }
    // Staging files the journal does not refer to belong to writes never acknowledged.
    for id in staging.ids() {
        if !overlay.uses_staging(id) {
            staging.remove(id);
        }
    }
    let uploader = Arc::new(XetUploader::new(hub.clone(), remote.source(), w.dir.join("xet")));
    let (gc_tx, gc_rx) = unbounded_channel();
    let flusher = FlusherState::new(journal, staging.clone(), w.flush.clone(), gc_rx);
    let (journal, failed) = flusher.journal();
    let args = WriteArgs { state: Arc::new(Mutex::new(flusher)), uploader: uploader.clone(), gc: gc_tx };
    let writes =
        Writes { staging, uploader, advanced: w.advanced, shutdown_timeout: w.shutdown_timeout, journal, failed };
    Ok((args, writes, overlay))
}

/// What the inode table shows of a journal: each pending file with its acknowledged bytes.
fn restore_of(o: &Overlay, staging: &Staging) -> Restore {
    let mut r = Restore::default();
    for (path, put) in &o.puts {
        let meta = o.meta.get(path).map(meta_of);
        let content = match (&put.staging, &put.hash, &put.data) {
            (Some(id), _, Some(held)) => {
                staging.adopt(*id, held);
                Content::Local { staging: *id, size: put.size }
            }
            (Some(id), _, None) => {
                // Only the acknowledged bytes: a write after the last close or fsync was not.
                let len = std::fs::metadata(staging.path(*id)).map(|m| m.len()).unwrap_or(0);
                if len < put.size {
                    tracing::error!(path, "staging file {id} holds {len} of its {} acknowledged bytes", put.size);
                } else if len > put.size {
                    if let Ok(f) = std::fs::OpenOptions::new().write(true).open(staging.path(*id)) {
                        let _ = f.set_len(put.size);
                    }
                }
                Content::Local { staging: *id, size: put.size }
            }
            (None, Some(hash), _) => Content::Remote(Arc::new(RemoteFile {
                size: put.size,
                xet_hash: Some(hash.clone()),
                etag: hash.clone(),
                mtime: Some(from_nanos(put.mtime)),
                commit: Default::default(),
            })),
            (None, None, _) => continue,
        };
        r.files.push((path.clone(), content, meta, from_nanos(put.mtime)));
    }
    for path in &o.dirs {
        r.dirs.push((path.clone(), o.meta.get(path).map(meta_of)));
    }
    for (path, target) in &o.symlinks {
        r.symlinks.push((path.clone(), target.clone(), o.meta.get(path).map(meta_of)));
    }
    for (path, (kind, rdev)) in &o.specials {
        match crate::types::FileKind::special_named(kind) {
            Some(k) => r.specials.push((path.clone(), k, *rdev, o.meta.get(path).map(meta_of))),
            None => tracing::warn!(path, "journal: unknown special file kind {kind:?}; skipped"),
        }
    }
    r.deletes = o.deletes.iter().cloned().collect();
    let restored: std::collections::HashSet<&String> =
        o.puts.keys().chain(o.dirs.iter()).chain(o.symlinks.keys()).chain(o.specials.keys()).collect();
    r.meta = o.meta.iter().filter(|(p, _)| !restored.contains(p)).map(|(p, m)| (p.clone(), meta_of(m))).collect();
    r
}

fn describe_probe_error(source: &Source, e: crate::hub::HubError) -> anyhow::Error {
    use crate::hub::HubError::*;
    match e {
        NotFound(_) => anyhow::anyhow!(
            "{source}: not found (no such repo or revision, or it is private and the token cannot see it){}",
            if source.is_bucket() { "" } else { "; for a bucket use `bucket NS/NAME`" }
        ),
        Unauthorized(_) => anyhow::anyhow!("{source}: 401 Unauthorized: the token is missing, invalid or expired"),
        Forbidden(_) => anyhow::anyhow!("{source}: 403 Forbidden: the token has no access"),
        other => anyhow::anyhow!("{source}: cannot reach the Hub: {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_junk_names() {
        assert!(is_os_junk(".DS_Store") && is_os_junk("._model.bin") && is_os_junk("Thumbs.db"));
        assert!(!is_os_junk("model.bin") && !is_os_junk(".gitattributes"));
    }

    #[test]
    fn names_are_checked_once() {
        assert_eq!(check_name(b"a b#%?.txt").unwrap(), "a b#%?.txt");
        assert!(matches!(check_name(&[b'x'; 256]), Err(FsError::NameTooLong(256))));
        assert!(check_name(&[b'x'; 255]).is_ok());
        assert!(matches!(check_name(b"\xff\xfe"), Err(FsError::Invalid(_))));
        for bad in [&b""[..], b".", b"..", b"a/b"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn times_round_trip_through_the_journal() {
        let t = SystemTime::UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789);
        assert_eq!(from_nanos(nanos(t)), t);
        let before = SystemTime::UNIX_EPOCH - Duration::from_secs(5);
        assert_eq!(from_nanos(nanos(before)), before);
    }
}
