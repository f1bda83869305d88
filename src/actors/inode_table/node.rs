//! One inode: where it sits (parent and name, paths are derived), what it is
//! (a directory, a symlink, a file and where its bytes are), its remote half
//! (what the Hub has at its path, as last seen) and its local half
//! (attributes, write status with a generation). Local state wins until the
//! flusher reports a commit; listings and HEADs update the remote half only.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use crate::hub::RemoteFile;
use crate::types::{Attr, FileKind, Hold, Ino, StagingId};

/// Where a file's bytes are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Content {
    /// The Hub's bytes of this identity (served through the chunk cache).
    Remote(Arc<RemoteFile>),
    /// A local staging file: written here, not committed yet (or not since the last write).
    Local { staging: StagingId, size: u64 },
}

impl Content {
    pub fn size(&self) -> u64 {
        match self {
            Content::Remote(f) => f.size,
            Content::Local { size, .. } => *size,
        }
    }

    pub fn staging(&self) -> Option<StagingId> {
        match self {
            Content::Local { staging, .. } => Some(*staging),
            Content::Remote(_) => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeKind {
    Dir,
    File(Content),
    Symlink(Arc<str>),
    /// A fifo, socket or device node: local to the mount.
    Special {
        kind: FileKind,
        rdev: u32,
    },
}

impl NodeKind {
    pub fn file_kind(&self) -> FileKind {
        match self {
            NodeKind::Dir => FileKind::Dir,
            NodeKind::File(_) => FileKind::File,
            NodeKind::Symlink(_) => FileKind::Symlink,
            NodeKind::Special { kind, .. } => *kind,
        }
    }
}

/// Where a node's local changes stand.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Status {
    /// Nothing local: the node is what the Hub has (or a pure local object: a directory, a symlink).
    #[default]
    Clean,
    /// Changed locally (content, or the path it must be committed at); not committed yet.
    Dirty,
    /// The flusher is uploading or committing the generation it saw.
    Uploading,
}

/// The write side of a node: status, a generation bumped by every local change, open writers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriteState {
    pub status: Status,
    pub gen: u64,
    pub writers: u32,
    /// Writes between `BeginWrite` and `Wrote`: a snapshot taken now could be torn.
    pub inflight: u32,
    /// Handles streaming into an upload: their bytes are committed by their close, never
    /// journaled before (a crash must not commit half a stream).
    pub streams: u32,
}

impl WriteState {
    pub fn open_for_writing(&self) -> bool {
        self.writers > 0
    }
}

/// Attributes kept locally. `local` is set once the user changed mode, owner or times: such
/// attributes survive listings and are journaled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Meta {
    pub perm: u16,
    pub uid: u32,
    pub gid: u32,
    pub atime: SystemTime,
    pub mtime: SystemTime,
    pub ctime: SystemTime,
    pub local: bool,
}

/// What attributes default to for entries the Hub knows nothing local about.
#[derive(Clone, Copy, Debug)]
pub struct Defaults {
    pub uid: u32,
    pub gid: u32,
    pub file_perm: u16,
    pub dir_perm: u16,
    /// Times for entries the Hub gives none: the revision's last modification.
    pub mount_time: SystemTime,
}

impl Defaults {
    pub fn meta(&self, kind: &NodeKind, remote_mtime: Option<SystemTime>) -> Meta {
        let perm = match kind {
            NodeKind::Dir => self.dir_perm,
            NodeKind::File(_) => self.file_perm,
            NodeKind::Symlink(_) => 0o777,
            NodeKind::Special { .. } => self.file_perm,
        };
        let t = remote_mtime.unwrap_or(self.mount_time);
        Meta { perm, uid: self.uid, gid: self.gid, atime: t, mtime: t, ctime: t, local: false }
    }
}

#[derive(Clone)]
pub(super) struct Node {
    pub parent: Ino,
    pub name: String,
    /// Further names of a file (hard links), besides `(parent, name)`.
    pub links: Vec<(Ino, String)>,
    pub kind: NodeKind,
    /// What the Hub has at this node's path, as last seen (files); `None`: nothing, or unknown.
    pub remote: Option<Arc<RemoteFile>>,
    pub meta: Meta,
    pub write: WriteState,
    /// Bumped when the bytes change under the kernel (a remote change): it must drop its pages.
    pub version: u64,
    /// The `version` the kernel's cached pages were read at (set at each open).
    pub kernel_version: u64,
    /// The table's change counter at this node's last local change or commit: a listing or
    /// HEAD asked for before it cannot overwrite it.
    pub touched: u64,
    /// A directory that exists locally whatever the Hub lists (made here, or emptied here).
    pub local_dir: bool,
    /// When the remote half was last confirmed by the Hub.
    pub checked_at: Instant,
    pub lookups: u64,
    pub opens: u64,
    /// A stateless protocol (NFS) was given this node's number: it keeps it until then,
    /// without counting references it would never give back.
    pub held_until: Option<Instant>,
    /// Known children of a directory: listed, looked up, or made locally.
    pub children: BTreeMap<String, Ino>,
    /// How many of the children are directories (for `nlink`); kept by `attach`/`detach`.
    pub subdirs: u32,
    /// When the children were last listed whole (`None`: never, or unloaded since).
    pub listed_at: Option<Instant>,
    /// Unlinked (or gone from the remote): kept while the kernel or a handle still holds it.
    pub removed: bool,
    /// When a directory was last listed or looked into (the table's tick).
    pub used: u64,
    /// A fill of the staging file from the remote bytes is under way (opened for writing).
    pub filling: Option<tokio::sync::watch::Receiver<Option<Result<(), String>>>>,
}

impl Node {
    pub fn new(parent: Ino, name: &str, kind: NodeKind, meta: Meta) -> Self {
        Node {
            parent,
            name: name.to_string(),
            links: Vec::new(),
            kind,
            remote: None,
            meta,
            write: WriteState::default(),
            version: 0,
            kernel_version: 0,
            touched: 0,
            local_dir: false,
            checked_at: Instant::now(),
            lookups: 0,
            opens: 0,
            held_until: None,
            children: BTreeMap::new(),
            subdirs: 0,
            listed_at: None,
            removed: false,
            used: 0,
            filling: None,
        }
    }

    pub fn is_dir(&self) -> bool {
        self.kind == NodeKind::Dir
    }

    /// Held by the kernel, a handle, or recently given to a stateless protocol.
    pub fn held(&self) -> bool {
        self.lookups > 0 || self.opens > 0 || self.held_until.is_some_and(|t| Instant::now() < t)
    }

    /// Takes the hold a lookup asks for.
    pub fn hold(&mut self, hold: Hold) {
        match hold {
            Hold::None => {}
            Hold::Count => self.lookups += 1,
            Hold::For(grace) => {
                let until = Instant::now() + grace;
                self.held_until = Some(self.held_until.map_or(until, |t| t.max(until)));
            }
        }
    }

    /// A directory listed within `max_age` (`None`: listings never go stale).
    pub fn listed_within(&self, max_age: Option<std::time::Duration>) -> bool {
        self.listed_at.is_some_and(|at| max_age.is_none_or(|age| at.elapsed() < age))
    }

    /// A file the Hub alone describes: its attributes are checked again once older than the TTL.
    pub fn revalidatable(&self) -> bool {
        !self.has_local_state() && matches!(self.kind, NodeKind::File(_))
    }

    /// Its attributes are due to be checked with the Hub again (see `stale`).
    pub fn stale(&self, ttl: Option<std::time::Duration>) -> bool {
        stale(self.revalidatable(), self.checked_at, ttl)
    }

    /// Carries local state that nothing on the Hub could rebuild: never unloaded, never
    /// replaced by a listing.
    pub fn has_local_state(&self) -> bool {
        self.write.status != Status::Clean
            || self.write.writers > 0
            || self.local_dir
            || self.meta.local
            || !self.links.is_empty()
            || self.filling.is_some()
            || matches!(
                self.kind,
                NodeKind::Symlink(_) | NodeKind::Special { .. } | NodeKind::File(Content::Local { .. })
            )
    }

    pub fn nlink(&self) -> u32 {
        match self.kind {
            NodeKind::Dir => 2 + self.subdirs,
            _ if self.removed => 0,
            _ => 1 + self.links.len() as u32,
        }
    }

    pub fn size(&self) -> u64 {
        match &self.kind {
            NodeKind::Dir => 0,
            NodeKind::File(c) => c.size(),
            NodeKind::Symlink(t) => t.len() as u64,
            NodeKind::Special { .. } => 0,
        }
    }

    pub fn attr(&self, ino: Ino) -> Attr {
        Attr {
            ino,
            kind: self.kind.file_kind(),
            size: self.size(),
            perm: self.meta.perm,
            nlink: self.nlink(),
            rdev: match self.kind {
                NodeKind::Special { rdev, .. } => rdev,
                _ => 0,
            },
            uid: self.meta.uid,
            gid: self.meta.gid,
            atime: self.meta.atime,
            mtime: self.meta.mtime,
            ctime: self.meta.ctime,
        }
    }
}

/// A snapshot of one inode, as answered to the engine.
#[derive(Clone, Debug)]
pub struct NodeView {
    pub ino: Ino,
    pub parent: Ino,
    /// Path inside the mount ("" for the root).
    pub path: String,
    /// The paths of a file's other names (hard links).
    pub other_paths: Vec<String>,
    pub kind: NodeKind,
    pub attr: Attr,
    /// Local attributes (`meta.local`: set by the user, journaled).
    pub meta: Meta,
    pub remote: Option<Arc<RemoteFile>>,
    pub write: WriteState,
    pub version: u64,
    /// Attributes come from the Hub alone and passed their TTL at `checked_at`.
    pub revalidatable: bool,
    pub checked_at: Instant,
    /// The table's change counter when this view was taken (for results of remote requests).
    pub epoch: u64,
    /// References the kernel holds (FUSE lookups not yet forgotten).
    pub lookups: u64,
}

/// Whether attributes the Hub alone describes, checked at `checked_at`, have passed `ttl`.
fn stale(revalidatable: bool, checked_at: Instant, ttl: Option<std::time::Duration>) -> bool {
    revalidatable && ttl.is_some_and(|ttl| checked_at.elapsed() >= ttl)
}

impl NodeView {
    /// Its attributes are due to be checked with the Hub again.
    pub fn stale(&self, ttl: Option<std::time::Duration>) -> bool {
        stale(self.revalidatable, self.checked_at, ttl)
    }
}

impl NodeView {
    pub fn content(&self) -> Option<&Content> {
        match &self.kind {
            NodeKind::File(c) => Some(c),
            _ => None,
        }
    }
}
