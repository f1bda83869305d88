//! The backend-neutral message API that both frontends call. Each method is
//! a short conversation with the actors: ask the owner of the state, and when
//! the answer is "not known yet", ask the revalidator (which coalesces Hub
//! requests) and report the result back to the owner. Waiting happens here,
//! in the caller's task, never inside an actor. The read path is in `data`.

mod data;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;
use ractor::ActorRef;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};
use tokio::sync::Semaphore;

use crate::actors::chunk_cache::{CacheConfig, CacheMsg, CacheState, CacheStats, BLOCK_BYTES};
use crate::actors::inode_table::{Children, Ino, InodeMsg, InodeState, Invalidation, Lookup, NodeKind, NodeView};
use crate::actors::prefetch::{DirSnapshot, Fh, HandleState, PrefetchMsg};
use crate::actors::revalidator::RevalidatorMsg;
use crate::actors::{
    call, call_with_timeout, new_registry, ActorKind, EngineArgs, Registry, Remote, Supervisor, SupervisorMsg,
};
use crate::error::{FsError, FsResult};
use crate::hub::{HubClient, Source};

/// Read-ahead bytes being fetched at once, mount-wide, in MiB: each stream's window bounds
/// its own share, this bounds them all (read-ahead past it waits for room).
const READAHEAD_BUDGET_MIB: u32 = 256;
/// One remote request fetches at most this many blocks; longer runs are split and fetched in parallel.
const FETCH_MAX_BLOCKS: u64 = (16 << 20) / BLOCK_BYTES;
/// Plain (non-Xet) files up to this size are fetched and verified whole.
const WHOLE_FILE_MAX_BYTES: u64 = 16 << 20;
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
    /// `None` disables the disk cache.
    pub disk_cache: Option<(std::path::PathBuf, u64)>,
}

/// What the frontends need to answer `stat`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attr {
    pub ino: Ino,
    pub is_dir: bool,
    pub size: u64,
    pub mtime: SystemTime,
}

impl Attr {
    fn of(view: &NodeView, mount_time: SystemTime) -> Self {
        match &view.kind {
            NodeKind::Dir => Attr { ino: view.ino, is_dir: true, size: 0, mtime: mount_time },
            NodeKind::File(f) => {
                Attr { ino: view.ino, is_dir: false, size: f.size, mtime: f.mtime.unwrap_or(mount_time) }
            }
        }
    }
}

/// A directory entry with its attributes.
#[derive(Clone, Debug)]
pub struct DirEntry {
    pub name: String,
    pub attr: Attr,
}

struct Inner {
    registry: Registry,
    remote: Arc<Remote>,
    supervisor: ActorRef<SupervisorMsg>,
    cfg: EngineConfig,
    /// Times for entries the Hub gives none: the revision's last modification.
    mount_time: SystemTime,
    invalidations: Mutex<Option<UnboundedReceiver<Invalidation>>>,
    invalidations_tx: tokio::sync::mpsc::UnboundedSender<Invalidation>,
    readaheads: Arc<Semaphore>,
}

/// The handle frontends hold; cheap to clone.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

impl Engine {
    /// Probes the source (failing with a clear error when it cannot be mounted) and starts the actors.
    pub async fn start(hub: Arc<HubClient>, source: Source, cfg: EngineConfig) -> anyhow::Result<Self> {
        let probe = hub.probe(&source).await.map_err(|e| describe_probe_error(&source, e))?;
        let remote = Arc::new(Remote::new(hub, source.clone(), &probe));
        if !source.subfolder.is_empty() && !remote.is_dir("").await.map_err(|e| anyhow::anyhow!("{source}: {e}"))? {
            anyhow::bail!("{source}: subfolder {:?} does not exist", source.subfolder);
        }
        let (tx, rx) = unbounded_channel();
        let cache = CacheState::new(CacheConfig { memory_bytes: cfg.memory_cache_bytes, disk: cfg.disk_cache.clone() })
            .map_err(|e| anyhow::anyhow!("cache directory unusable: {e}"))?;
        let registry = new_registry();
        let args = EngineArgs {
            remote: remote.clone(),
            inodes: Arc::new(Mutex::new(InodeState::new(cfg.negative_ttl, cfg.max_inodes))),
            handles: Arc::new(Mutex::new(HandleState::default())),
            cache: Arc::new(Mutex::new(cache)),
            invalidations: tx.clone(),
            poll_interval: cfg.poll_interval,
            registry: registry.clone(),
        };
        let supervisor = Supervisor::start(args).await?;
        // Connect to the CAS in the background, so the first read pays only for its data.
        let warm = remote.clone();
        tokio::spawn(async move { warm.xet.warm().await });
        Ok(Self {
            inner: Arc::new(Inner {
                registry,
                remote,
                supervisor,
                cfg,
                mount_time: probe.modified.unwrap_or_else(SystemTime::now),
                invalidations: Mutex::new(Some(rx)),
                invalidations_tx: tx,
                readaheads: Arc::new(Semaphore::new(READAHEAD_BUDGET_MIB as usize)),
            }),
        })
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

    /// Kernel invalidations from remote changes; the frontend takes the receiver once.
    pub fn take_invalidations(&self) -> Option<UnboundedReceiver<Invalidation>> {
        self.inner.invalidations.lock().take()
    }

    fn reg(&self) -> &Registry {
        &self.inner.registry
    }

    /// Replies that wait on the Hub get its deadline plus a margin.
    fn net_timeout(&self) -> Duration {
        self.inner.remote.hub.deadline() + Duration::from_secs(2)
    }

    fn attr(&self, view: &NodeView) -> Attr {
        Attr::of(view, self.inner.mount_time)
    }

    fn stale(&self, view: &NodeView) -> bool {
        matches!(view.kind, NodeKind::File(_))
            && self.inner.cfg.metadata_ttl.is_some_and(|ttl| view.checked_at.elapsed() >= ttl)
    }

    /// HEADs a file whose attributes passed their TTL; on Hub trouble keeps the cached ones.
    async fn revalidate(&self, view: NodeView) -> FsResult<NodeView> {
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
                return Ok(view);
            }
        };
        let ino = view.ino;
        call(self.reg(), |r| r.inode.clone(), |reply| InodeMsg::Revalidated { ino, file: file.clone(), reply }).await?
    }

    /// The directory holding `ino` (the root is its own parent).
    pub async fn parent(&self, ino: Ino) -> FsResult<Ino> {
        Ok(call(self.reg(), |r| r.inode.clone(), |reply| InodeMsg::Get { ino, reply }).await??.parent)
    }

    pub async fn getattr(&self, ino: Ino) -> FsResult<Attr> {
        let view = call(self.reg(), |r| r.inode.clone(), |reply| InodeMsg::Get { ino, reply }).await??;
        let view = if self.stale(&view) { self.revalidate(view).await? } else { view };
        Ok(self.attr(&view))
    }

    /// Looks `name` up in `parent`; a success counts as one kernel reference.
    pub async fn lookup(&self, parent: Ino, name: &str) -> FsResult<Attr> {
        if self.inner.cfg.filter_os_files && is_os_junk(name) {
            return Err(FsError::NotFound);
        }
        if name.is_empty() || name.contains('/') || name == "." || name == ".." {
            return Err(FsError::Invalid(format!("bad name {name:?}")));
        }
        let max_age = self.inner.cfg.metadata_ttl;
        let answer = call(
            self.reg(),
            |r| r.inode.clone(),
            |reply| InodeMsg::Lookup { parent, name: name.to_string(), count: true, max_age, reply },
        )
        .await??;
        let view = match answer {
            Lookup::Found(view) => view,
            Lookup::Missing => return Err(FsError::NotFound),
            Lookup::Unknown { path } => self.resolve_remote(parent, name, path).await?,
        };
        if !self.stale(&view) {
            return Ok(self.attr(&view));
        }
        let ino = view.ino;
        match self.revalidate(view).await {
            Ok(v) => Ok(self.attr(&v)),
            Err(e) => {
                let _ =
                    call(self.reg(), |r| r.inode.clone(), |_: ractor::RpcReplyPort<()>| InodeMsg::Forget { ino, n: 1 })
                        .await;
                Err(e)
            }
        }
    }

    /// A name under an unlisted (or stale) directory: HEAD it; if no file, ask whether it is a directory.
    async fn resolve_remote(&self, parent: Ino, name: &str, path: String) -> FsResult<NodeView> {
        let t = self.net_timeout();
        let head = call_with_timeout(
            self.reg(),
            |r| r.revalidator.clone(),
            |reply| RevalidatorMsg::Head { path: path.clone(), reply },
            t,
        )
        .await??;
        let kind = match head {
            Some(file) => NodeKind::File(Arc::new(file)),
            None => {
                let is_dir = call_with_timeout(
                    self.reg(),
                    |r| r.revalidator.clone(),
                    |reply| RevalidatorMsg::IsDir { path: path.clone(), reply },
                    t,
                )
                .await??;
                if !is_dir {
                    let name = name.to_string();
                    let _ = self.reg().get()?.inode.send_message(InodeMsg::Absent { parent, name });
                    return Err(FsError::NotFound);
                }
                NodeKind::Dir
            }
        };
        call(
            self.reg(),
            |r| r.inode.clone(),
            |reply| InodeMsg::Insert { parent, name: name.to_string(), kind: kind.clone(), count: true, reply },
        )
        .await?
    }

    pub fn forget(&self, ino: Ino, n: u64) {
        if let Ok(refs) = self.reg().get() {
            let _ = refs.inode.send_message(InodeMsg::Forget { ino, n });
        }
    }

    /// The kernel took one reference to each of these through `readdirplus`.
    pub fn add_lookups(&self, inos: Vec<Ino>) {
        if let Ok(refs) = self.reg().get() {
            let _ = refs.inode.send_message(InodeMsg::AddLookups { inos });
        }
    }

    /// The children of a directory, listing it (once, coalesced) when needed.
    pub async fn list(&self, ino: Ino) -> FsResult<Vec<DirEntry>> {
        let max_age = self.inner.cfg.metadata_ttl;
        let mut listed_once = false;
        loop {
            let age = if listed_once { None } else { max_age };
            let children = call(
                self.reg(),
                |r| r.inode.clone(),
                |reply| InodeMsg::Children { ino, max_age: age, count: false, reply },
            )
            .await??;
            match children {
                Children::Listed(entries) => {
                    return Ok(entries
                        .iter()
                        .map(|(name, v)| DirEntry { name: name.clone(), attr: self.attr(v) })
                        .collect());
                }
                Children::NeedsListing { path } if !listed_once => {
                    let entries = call_with_timeout(
                        self.reg(),
                        |r| r.revalidator.clone(),
                        |reply| RevalidatorMsg::List { path: path.clone(), reply },
                        self.net_timeout(),
                    )
                    .await??;
                    let inval = call(
                        self.reg(),
                        |r| r.inode.clone(),
                        |reply| InodeMsg::ApplyListing { ino, entries: entries.clone(), reply },
                    )
                    .await?;
                    self.forward_invalidations(inval);
                    listed_once = true;
                }
                Children::NeedsListing { .. } => return Err(FsError::Io("directory listing vanished".into())),
            }
        }
    }

    fn forward_invalidations(&self, inval: Vec<Invalidation>) {
        for i in inval {
            let _ = self.inner.invalidations_tx.send(i);
        }
    }

    /// Opens a directory: snapshots its entries, so paging through it costs them once. The
    /// directory counts as open until `releasedir`, which keeps its listing (and so the
    /// snapshot's inode numbers) from being unloaded by the inode table's cap meanwhile.
    pub async fn opendir(&self, ino: Ino) -> FsResult<Fh> {
        call(self.reg(), |r| r.inode.clone(), |reply| InodeMsg::Opened { ino, reply }).await??;
        let opened = async {
            let entries = Arc::new(self.list(ino).await?);
            call(self.reg(), |r| r.prefetch.clone(), |reply| PrefetchMsg::OpenDir { entries: entries.clone(), reply })
                .await
        }
        .await;
        if opened.is_err() {
            let _ = self.reg().get().map(|r| r.inode.send_message(InodeMsg::Closed { ino }));
        }
        opened
    }

    pub async fn readdir_snapshot(&self, fh: Fh) -> FsResult<DirSnapshot> {
        call(self.reg(), |r| r.prefetch.clone(), |reply| PrefetchMsg::DirEntries { fh, reply }).await?
    }

    pub fn releasedir(&self, ino: Ino, fh: Fh) {
        if let Ok(refs) = self.reg().get() {
            let _ = refs.prefetch.send_message(PrefetchMsg::ReleaseDir { fh });
            let _ = refs.inode.send_message(InodeMsg::Closed { ino });
        }
    }

    /// Opens a file; the answer says whether the kernel may keep its cached pages.
    pub async fn open(&self, ino: Ino) -> FsResult<(Fh, bool)> {
        let view = call(self.reg(), |r| r.inode.clone(), |reply| InodeMsg::Opened { ino, reply }).await??;
        let before = view.kind.clone();
        let view = if self.stale(&view) {
            match self.revalidate(view).await {
                Ok(v) => v,
                Err(e) => {
                    let _ = self.reg().get()?.inode.send_message(InodeMsg::Closed { ino });
                    return Err(e);
                }
            }
        } else {
            view
        };
        let NodeKind::File(file) = view.kind.clone() else {
            let _ = self.reg().get()?.inode.send_message(InodeMsg::Closed { ino });
            return Err(FsError::IsDir);
        };
        let keep_cache = before == view.kind;
        let path = view.path.clone();
        let fh = call(
            self.reg(),
            |r| r.prefetch.clone(),
            |reply| PrefetchMsg::OpenFile { ino, path: path.clone(), file: file.clone(), reply },
        )
        .await?;
        Ok((fh, keep_cache))
    }

    pub async fn release(&self, fh: Fh) {
        if let Ok(Some(ino)) =
            call(self.reg(), |r| r.prefetch.clone(), |reply| PrefetchMsg::ReleaseFile { fh, reply }).await
        {
            if let Ok(refs) = self.reg().get() {
                let _ = refs.inode.send_message(InodeMsg::Closed { ino });
            }
        }
    }

    pub async fn cache_stats(&self) -> FsResult<CacheStats> {
        call(self.reg(), |r| r.cache.clone(), |reply| CacheMsg::Stats { reply }).await
    }

    pub async fn inode_count(&self) -> FsResult<usize> {
        call(self.reg(), |r| r.inode.clone(), |reply| InodeMsg::Count { reply }).await
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
        }
        Ok(())
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

    /// Stops the actors (the mount is going away).
    pub fn shutdown(&self) {
        self.inner.supervisor.stop(None);
    }
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
}
