//! The actor engine: a supervisor and the actors it spawns linked, each the
//! only owner of one piece of state. A failed actor is restarted with the
//! same state object (inode table, handles, cache index), so inode numbers
//! and open handles survive; callers that were mid-call retry once the
//! registry points at the new incarnation.

/// The `handle` of an actor whose `on_message` handles messages synchronously, each in a
/// span that is a child of the sender's (ractor carries the span with the message).
macro_rules! handle_in_span {
    ($span:literal) => {
        async fn handle(
            &self,
            me: ractor::ActorRef<Self::Msg>,
            msg: Self::Msg,
            state: &mut Self::State,
        ) -> Result<(), ractor::ActorProcessingErr> {
            let _handling = $crate::actors::call::Handling::enter();
            tracing::debug_span!("actor", otel.name = $span).in_scope(|| on_message(me, msg, state))
        }
    };
}

/// Implements `Actor` for an actor whose state the supervisor hands in (so it survives a
/// restart) and whose messages `on_message` handles synchronously, each in a span that is
/// a child of the sender's (ractor carries the span with the message): one span per hop.
macro_rules! supervised_actor {
    ($actor:ty, $msg:ty, $state:ty, $span:literal) => {
        impl ractor::Actor for $actor {
            type Msg = $msg;
            type State = $state;
            type Arguments = $state;

            async fn pre_start(
                &self,
                _: ractor::ActorRef<Self::Msg>,
                state: Self::Arguments,
            ) -> Result<Self::State, ractor::ActorProcessingErr> {
                Ok(state)
            }

            handle_in_span!($span);
        }
    };
}

pub mod call;
pub mod chunk_cache;
pub mod flusher;
pub mod inode_table;
pub mod poller;
pub mod prefetch;
pub mod revalidator;

pub use call::{call, call_with_timeout, Reply};

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use parking_lot::{Mutex, RwLock};
use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, SupervisionEvent};
use tokio::sync::mpsc::{Sender, UnboundedSender};

use crate::error::{FsError, FsResult};
use crate::hub::{HubClient, Probe, RemoteEntry, RemoteFile, RemoteKind, Source, XetAdapter};
use crate::types::{Invalidation, StagingId};
use chunk_cache::{CacheMsg, CacheState, ChunkCache};
use flusher::{FlushMsg, Flusher, FlusherArgs, FlusherState};
use inode_table::{InodeMsg, InodeState, InodeTable};
use poller::{Poller, PollerArgs, PollerMsg};
use prefetch::{HandleState, Prefetch, PrefetchMsg};
use revalidator::{Revalidator, RevalidatorMsg};

/// An actor restarted this many times within [`RESTART_WINDOW`] is failing for good: the
/// supervisor stops the mount rather than restart it forever.
pub const RESTART_LIMIT: usize = 10;
pub const RESTART_WINDOW: Duration = Duration::from_secs(60);
/// Our own commits remembered, to tell them from remote changes.
const OWN_COMMITS_KEPT: usize = 64;
/// Clock slack between us and the Hub when matching its `updatedAt` to our commits.
const OWN_COMMIT_SLACK: Duration = Duration::from_secs(1);

/// Everything the actors need to reach the Hub and CAS for one source.
pub struct Remote {
    pub hub: Arc<HubClient>,
    pub xet: XetAdapter,
    source: RwLock<Source>,
    /// Commit sha (repos) or `updatedAt` (buckets) of the last probe.
    version: RwLock<String>,
    /// When our own batches were sent and answered (wall clock).
    own_commits: Mutex<VecDeque<(SystemTime, SystemTime)>>,
}

impl Remote {
    pub fn new(hub: Arc<HubClient>, source: Source, probe: &Probe, dir: std::path::PathBuf) -> Self {
        let mut source = source;
        source.id = probe.id.clone();
        let commit = if source.is_bucket() { String::new() } else { probe.version.clone() };
        let xet = XetAdapter::new(hub.clone(), source.clone(), commit, dir);
        Self {
            hub,
            xet,
            source: RwLock::new(source),
            version: RwLock::new(probe.version.clone()),
            own_commits: Mutex::new(VecDeque::new()),
        }
    }

    pub fn source(&self) -> Source {
        self.source.read().clone()
    }

    pub fn source_label(&self) -> String {
        self.source.read().to_string()
    }

    pub fn version(&self) -> String {
        self.version.read().clone()
    }

    /// The commit listings and lookups are made at ("" for buckets).
    fn commit(&self) -> String {
        if self.source.read().is_bucket() {
            String::new()
        } else {
            self.version.read().clone()
        }
    }

    /// Whether `probe` names another version than the one recorded.
    pub fn moved(&self, probe: &Probe) -> bool {
        *self.version.read() != probe.version
    }

    /// Records a newer probe (once what it changed is applied); returns whether it moved.
    pub fn advance(&self, probe: &Probe) -> bool {
        let mut v = self.version.write();
        if *v == probe.version {
            return false;
        }
        *v = probe.version.clone();
        drop(v);
        if !self.source.read().is_bucket() {
            self.xet.set_commit(&probe.version);
        }
        true
    }

    /// Notes a batch of ours sent at `start` and answered at `end`.
    pub fn note_own_commit(&self, start: SystemTime, end: SystemTime) {
        let mut c = self.own_commits.lock();
        if c.len() == OWN_COMMITS_KEPT {
            c.pop_front();
        }
        c.push_back((start, end));
    }

    /// Whether a change stamped `modified` by the Hub is one of our own commits (then the
    /// loaded directories need no re-listing: the inode table already has what we wrote).
    pub fn is_own_change(&self, modified: Option<SystemTime>) -> bool {
        let Some(t) = modified else { return false };
        self.own_commits.lock().iter().any(|(s, e)| {
            let lo = s.checked_sub(OWN_COMMIT_SLACK).unwrap_or(SystemTime::UNIX_EPOCH);
            t >= lo && t <= *e + OWN_COMMIT_SLACK
        })
    }

    /// Every file below `path` (a mount path), with entry paths relative to the mount.
    pub async fn list_recursive(&self, path: &str) -> FsResult<Vec<RemoteEntry>> {
        let src = self.source();
        let entries = self.hub.list_recursive(&src, &self.commit(), &src.repo_path(path)).await?;
        let strip = if src.subfolder.is_empty() { 0 } else { src.subfolder.len() + 1 };
        Ok(entries.into_iter().map(|e| RemoteEntry { path: e.path[strip..].to_string(), kind: e.kind }).collect())
    }

    pub async fn probe(&self) -> FsResult<Probe> {
        let src = self.source();
        Ok(self.hub.probe(&src).await?)
    }

    pub async fn head(&self, path: &str) -> FsResult<Option<RemoteFile>> {
        let src = self.source();
        Ok(self.hub.head_file(&src, &self.commit(), &src.repo_path(path)).await?)
    }

    /// One level below `path` (a mount path), with entry paths relative to the mount.
    pub async fn list(&self, path: &str) -> FsResult<Vec<RemoteEntry>> {
        self.list_at(path, &self.commit()).await
    }

    /// [`Self::list`] at `commit` (a repo's; ignored for buckets).
    pub async fn list_at(&self, path: &str, commit: &str) -> FsResult<Vec<RemoteEntry>> {
        let src = self.source();
        let commit = if src.is_bucket() { "" } else { commit };
        let entries = self.hub.list_dir(&src, commit, &src.repo_path(path)).await?;
        let strip = if src.subfolder.is_empty() { 0 } else { src.subfolder.len() + 1 };
        Ok(entries.into_iter().map(|e| RemoteEntry { path: e.path[strip..].to_string(), kind: e.kind }).collect())
    }

    pub async fn is_dir(&self, path: &str) -> FsResult<bool> {
        let src = self.source();
        Ok(self.hub.is_dir(&src, &self.commit(), &src.repo_path(path)).await?)
    }

    /// Bytes `[start, end)` of a file as consecutive pieces (no copy): through xet-core for
    /// Xet files, the resolve URL otherwise.
    pub async fn read(&self, path: &str, file: &RemoteFile, start: u64, end: u64) -> FsResult<Vec<Bytes>> {
        if start >= end {
            return Ok(Vec::new());
        }
        match &file.xet_hash {
            Some(hash) => Ok(self.xet.read(hash, file.size, start..end).await?),
            None => {
                let src = self.source();
                let commit = if file.commit.is_empty() { self.commit() } else { file.commit.to_string() };
                let range = (start, end);
                Ok(vec![self.hub.get_range(&src, &commit, &src.repo_path(path), &file.etag, range).await?])
            }
        }
    }
}

impl RemoteKind {
    pub fn is_dir(&self) -> bool {
        matches!(self, RemoteKind::Dir)
    }
}

/// The actors of one mount, as the engine reaches them.
#[derive(Clone)]
pub struct Refs {
    pub inode: ActorRef<InodeMsg>,
    pub revalidator: ActorRef<RevalidatorMsg>,
    pub prefetch: ActorRef<PrefetchMsg>,
    pub cache: ActorRef<CacheMsg>,
    pub poller: Option<ActorRef<PollerMsg>>,
    /// Writable mounts only.
    pub flusher: Option<ActorRef<FlushMsg>>,
}

/// The current incarnation of every actor; the supervisor swaps entries on restart.
#[derive(Clone)]
pub struct Registry(Arc<RwLock<Option<Refs>>>);

impl Registry {
    pub fn get(&self) -> FsResult<Refs> {
        self.0.read().clone().ok_or_else(|| FsError::Io("the mount is shutting down".into()))
    }
}

/// Which actor, for the test hook that kills one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ActorKind {
    InodeTable,
    Revalidator,
    Prefetch,
    ChunkCache,
    Poller,
    Flusher,
}

/// What the supervisor needs to (re)spawn every actor.
pub struct EngineArgs {
    pub remote: Arc<Remote>,
    pub inodes: Arc<Mutex<InodeState>>,
    pub handles: Arc<Mutex<HandleState>>,
    pub cache: Arc<Mutex<CacheState>>,
    pub invalidations: Sender<Invalidation>,
    pub poll_interval: Option<Duration>,
    pub registry: Registry,
    /// Writable mounts: the flusher's state, the uploader, and where released staging files go.
    pub writes: Option<WriteArgs>,
    /// Set when the supervisor gives up (an actor past its restart limit).
    pub failure: Arc<Failure>,
}

/// Why a mount stopped working, once it has: the frontend watches it to unmount and exit.
#[derive(Default)]
pub struct Failure {
    reason: Mutex<Option<String>>,
    notify: tokio::sync::Notify,
}

impl Failure {
    pub fn fail(&self, why: String) {
        self.reason.lock().get_or_insert(why);
        self.notify.notify_waiters();
    }

    pub fn reason(&self) -> Option<String> {
        self.reason.lock().clone()
    }

    /// Waits until the mount fails; answers why.
    pub async fn wait(&self) -> String {
        loop {
            let notified = self.notify.notified();
            if let Some(r) = self.reason() {
                return r;
            }
            notified.await;
        }
    }
}

pub struct WriteArgs {
    pub state: Arc<Mutex<FlusherState>>,
    pub uploader: Arc<crate::hub::XetUploader>,
    pub gc: UnboundedSender<StagingId>,
}

impl EngineArgs {
    fn inode_args(&self) -> inode_table::InodeArgs {
        (self.inodes.clone(), self.writes.as_ref().map(|w| w.gc.clone()))
    }

    fn flusher_args(&self) -> Option<FlusherArgs> {
        self.writes.as_ref().map(|w| FlusherArgs {
            state: w.state.clone(),
            registry: self.registry.clone(),
            remote: self.remote.clone(),
            uploader: w.uploader.clone(),
        })
    }
}

pub enum SupervisorMsg {
    /// Counts of restarts so far, per actor.
    Restarts { reply: ractor::RpcReplyPort<u64> },
}

pub struct Supervisor;

pub struct SupervisorState {
    args: EngineArgs,
    restarts: u64,
    /// When each actor kind was restarted lately (within the restart window).
    recent: Vec<(ActorKind, std::time::Instant)>,
}

impl Supervisor {
    /// Starts the supervisor and all actors; the registry is filled before this returns.
    pub async fn start(args: EngineArgs) -> anyhow::Result<ActorRef<SupervisorMsg>> {
        let (sup, _) = Actor::spawn(None, Supervisor, args).await?;
        Ok(sup)
    }
}

async fn spawn_one(kind: ActorKind, args: &EngineArgs, me: ActorCell, refs: &mut Option<Refs>) -> anyhow::Result<()> {
    macro_rules! link {
        ($actor:expr, $args:expr) => {
            Actor::spawn_linked(None, $actor, $args, me.clone()).await?.0
        };
    }
    match kind {
        ActorKind::InodeTable => {
            let a = link!(InodeTable, args.inode_args());
            if let Some(r) = refs.as_mut() {
                r.inode = a;
            }
        }
        ActorKind::Revalidator => {
            let a = link!(Revalidator, args.remote.clone());
            if let Some(r) = refs.as_mut() {
                r.revalidator = a;
            }
        }
        ActorKind::Prefetch => {
            let a = link!(Prefetch, args.handles.clone());
            if let Some(r) = refs.as_mut() {
                r.prefetch = a;
            }
        }
        ActorKind::ChunkCache => {
            let a = link!(ChunkCache, args.cache.clone());
            if let Some(r) = refs.as_mut() {
                r.cache = a;
            }
        }
        ActorKind::Poller => {
            let poller_args = PollerArgs {
                remote: args.remote.clone(),
                registry: args.registry.clone(),
                invalidations: args.invalidations.clone(),
                interval: args.poll_interval,
            };
            let a = link!(Poller, poller_args);
            if let Some(r) = refs.as_mut() {
                r.poller = Some(a);
            }
        }
        ActorKind::Flusher => {
            let Some(fa) = args.flusher_args() else { return Ok(()) };
            let a = link!(Flusher, fa);
            if let Some(r) = refs.as_mut() {
                r.flusher = Some(a);
            }
        }
    }
    Ok(())
}

fn kind_of(refs: &Refs, cell: &ActorCell) -> Option<ActorKind> {
    let id = cell.get_id();
    if refs.inode.get_id() == id {
        Some(ActorKind::InodeTable)
    } else if refs.revalidator.get_id() == id {
        Some(ActorKind::Revalidator)
    } else if refs.prefetch.get_id() == id {
        Some(ActorKind::Prefetch)
    } else if refs.cache.get_id() == id {
        Some(ActorKind::ChunkCache)
    } else if refs.poller.as_ref().is_some_and(|p| p.get_id() == id) {
        Some(ActorKind::Poller)
    } else if refs.flusher.as_ref().is_some_and(|p| p.get_id() == id) {
        Some(ActorKind::Flusher)
    } else {
        None
    }
}

impl Actor for Supervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = EngineArgs;

    async fn pre_start(
        &self,
        me: ActorRef<Self::Msg>,
        args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        let cell = me.get_cell();
        let inode = Actor::spawn_linked(None, InodeTable, args.inode_args(), cell.clone()).await?.0;
        let revalidator = Actor::spawn_linked(None, Revalidator, args.remote.clone(), cell.clone()).await?.0;
        let prefetch = Actor::spawn_linked(None, Prefetch, args.handles.clone(), cell.clone()).await?.0;
        let cache = Actor::spawn_linked(None, ChunkCache, args.cache.clone(), cell.clone()).await?.0;
        *args.registry.0.write() = Some(Refs { inode, revalidator, prefetch, cache, poller: None, flusher: None });
        let mut refs = args.registry.0.read().clone();
        if args.poll_interval.is_some() {
            spawn_one(ActorKind::Poller, &args, cell.clone(), &mut refs).await?;
        }
        spawn_one(ActorKind::Flusher, &args, cell.clone(), &mut refs).await?;
        *args.registry.0.write() = refs;
        Ok(SupervisorState { args, restarts: 0, recent: Vec::new() })
    }

    async fn post_stop(&self, _: ActorRef<Self::Msg>, st: &mut Self::State) -> Result<(), ActorProcessingErr> {
        if let Some(refs) = st.args.registry.0.write().take() {
            refs.inode.stop(None);
            refs.revalidator.stop(None);
            refs.prefetch.stop(None);
            refs.cache.stop(None);
            if let Some(p) = refs.poller {
                p.stop(None);
            }
            if let Some(f) = refs.flusher {
                f.stop(None);
            }
        }
        Ok(())
    }

    async fn handle(
        &self,
        _: ActorRef<Self::Msg>,
        msg: Self::Msg,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SupervisorMsg::Restarts { reply } => {
                let _ = reply.send(st.restarts);
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        me: ActorRef<Self::Msg>,
        evt: SupervisionEvent,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, why) = match evt {
            SupervisionEvent::ActorFailed(cell, err) => (cell, format!("failed: {err}")),
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                (cell, format!("stopped: {}", reason.unwrap_or_default()))
            }
            _ => return Ok(()),
        };
        let Some(refs) = st.args.registry.0.read().clone() else { return Ok(()) }; // shutting down
        let Some(kind) = kind_of(&refs, &cell) else { return Ok(()) };
        let now = std::time::Instant::now();
        st.recent.retain(|(_, at)| now.duration_since(*at) < RESTART_WINDOW);
        st.recent.push((kind, now));
        let lately = st.recent.iter().filter(|(k, _)| *k == kind).count();
        if lately > RESTART_LIMIT {
            let reason = format!(
                "actor {kind:?} failed {lately} times within {RESTART_WINDOW:?} (last: {why}); the mount stops \
                 (what was acknowledged is in the journal, for the next mount)"
            );
            tracing::error!("{reason}");
            st.args.failure.fail(reason);
            me.stop(Some("an actor keeps failing".into()));
            return Ok(());
        }
        tracing::error!("actor {kind:?} {why}; restarting it");
        let mut refs = Some(refs);
        spawn_one(kind, &st.args, me.get_cell(), &mut refs).await?;
        *st.args.registry.0.write() = refs;
        st.restarts += 1;
        crate::metrics::get().actor_restarts.add(1, &[crate::metrics::kv("actor", format!("{kind:?}"))]);
        Ok(())
    }
}

/// Builds the registry handle before the supervisor fills it.
pub fn new_registry() -> Registry {
    Registry(Arc::new(RwLock::new(None)))
}
