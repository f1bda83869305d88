//! The inode table: names ↔ inode numbers, what each inode is (a directory
//! and its children, a symlink, a file and where its bytes are), its remote
//! half and its local half, the kernel's lookup counts, open counts, a
//! bounded negative cache and tombstones of local deletions.
//!
//! Its size is bounded: past `max_nodes`, the listings of the least recently
//! used directories are unloaded, dropping the children nobody holds and
//! that carry no local state. An unloaded directory is listed again on next
//! use; children still held keep their inode numbers.
//!
//! Its state lives in an `Arc<Mutex<_>>` the supervisor keeps, so a restarted
//! incarnation carries on with the same inode numbers. Only this actor locks
//! it; the lock is never held across an await.

mod local;
mod merge;
mod node;
mod state;
mod undo;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::actors::Reply;
use parking_lot::Mutex;
use ractor::{ActorProcessingErr, ActorRef};
use tokio::sync::mpsc::UnboundedSender;

pub use local::Owner;

/// In a `Still` check, any generation of the node will do (a snapshot's commit).
pub const ANY_GEN: u64 = u64::MAX;
pub use node::{Content, Defaults, Meta, NodeKind, NodeView, Status, WriteState};
pub use state::InodeState;

use crate::error::FsResult;
use crate::hub::{RemoteEntry, RemoteFile, RemoteKind};
use crate::types::{Hold, Ino, Invalidation, SetAttr, StagingId};

/// A read-only look at the inode table, for answers that change nothing: a node's view or
/// its attributes, without a message round trip (a small file's requests spent a quarter of
/// their time on those hops). The actor still makes every change, each under the table's
/// lock, so what this reads is the table between two messages, never half of one; it does
/// not wait for messages still queued, so a caller that must see the effect of one it only
/// told (`send_message`) asks the actor instead, or counts it as [`Unsettled`].
#[derive(Clone)]
pub struct InodeView(Arc<Mutex<InodeState>>, Unsettled);

impl InodeView {
    pub fn new(state: Arc<Mutex<InodeState>>) -> Self {
        Self(state, Unsettled::default())
    }

    /// A node's view, as `InodeMsg::Get` answers it; `None` while a change told to the table
    /// is not applied yet (ask the actor: its mailbox keeps order).
    pub fn view(&self, ino: Ino) -> Option<FsResult<NodeView>> {
        (!self.1.any()).then(|| self.0.lock().view(ino))
    }

    /// A token for a change told to the table, carried in its message: until the actor has
    /// applied it, this view answers nothing a write changes.
    pub fn unsettled(&self) -> Settle {
        self.1 .0.fetch_add(1, Ordering::AcqRel);
        Settle(self.1 .0.clone())
    }

    /// A node's attributes, unless the node is unknown or would be revalidated (remote
    /// attributes checked longer ago than `ttl`), or a change told to the table is pending.
    pub fn fresh_attr(&self, ino: Ino, ttl: Option<Duration>) -> Option<crate::types::Attr> {
        if self.1.any() {
            return None;
        }
        let st = self.0.lock();
        let n = st.node(ino).ok()?;
        (!n.stale(ttl)).then(|| n.attr(ino))
    }

    /// Whether `parent`'s listing is fresh (listed within `max_age`) and has no `name`: the
    /// lookup would answer "missing" without asking the Hub. (It does not mark the parent
    /// used, as the actor's lookup does; the create that usually follows does.)
    pub fn known_missing(&self, parent: Ino, name: &str, max_age: Option<Duration>) -> bool {
        let st = self.0.lock();
        let Ok(p) = st.dir(parent) else { return false };
        p.listed_within(max_age) && !p.children.contains_key(name)
    }
}

/// How many changes were told to the table (sent without waiting) and not applied yet.
#[derive(Clone, Default)]
struct Unsettled(Arc<AtomicUsize>);

impl Unsettled {
    fn any(&self) -> bool {
        self.0.load(Ordering::Acquire) > 0
    }
}

/// One change told to the table: counted until the message carrying it is dropped, once
/// handled (or lost with an actor that stopped).
#[derive(Debug)]
pub struct Settle(Arc<AtomicUsize>);

impl Drop for Settle {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The answer to a child lookup.
#[derive(Debug)]
pub enum Lookup {
    Found(Box<NodeView>),
    /// Known not to exist (listed parent without it, a fresh negative entry, a local deletion).
    Missing,
    /// The parent is not listed: resolve `path` remotely, then report with `Insert` or
    /// `Absent`, passing `epoch` back.
    Unknown {
        path: String,
        epoch: u64,
    },
    /// The parent's listing is stale and small: list it again (one request), then look up
    /// again, rather than asking the Hub about this name alone (two requests: a HEAD, then
    /// whether it is a directory). A writer creating files one by one in a directory it made
    /// a while ago would otherwise pay both for every new name. (`path`, `epoch`: as for
    /// `Unknown`, should the name still be unknown after the listing.)
    Relist {
        path: String,
        epoch: u64,
    },
}

/// The answer to a directory read.
#[derive(Debug)]
pub enum Children {
    Listed(Vec<(String, NodeView)>),
    /// Not listed yet (or the listing is older than the TTL): list `path`, then `ApplyListing`.
    NeedsListing {
        path: String,
        epoch: u64,
    },
}

/// A name taken away (unlink, rmdir, or replaced by a rename).
#[derive(Debug, Clone)]
pub struct Removed {
    pub ino: Ino,
    pub path: String,
    pub kind: NodeKind,
    /// The Hub may have a file at `path` (known there, or a commit under way): delete it.
    pub hub_may_have: bool,
    pub local_dir: bool,
}

/// One node moved by a rename, with what the journal needs to move with it.
#[derive(Debug, Clone)]
pub struct Moved {
    pub ino: Ino,
    pub old_path: String,
    pub new_path: String,
    pub kind: NodeKind,
    /// Local attributes, if any.
    pub meta: Option<Meta>,
    pub mtime: SystemTime,
    pub local_dir: bool,
    pub hub_may_have_old: bool,
    /// Being streamed: its content is committed by the stream's close, not journaled here.
    pub streaming: bool,
}

#[derive(Debug, Clone)]
pub struct Renamed {
    pub moved: Vec<Moved>,
    pub replaced: Option<Removed>,
}

/// The answer to opening a file for writing.
pub enum OpenWrite {
    /// Write to `staging` (cut to zero first when `truncate`).
    Ready { staging: StagingId, truncate: bool },
    /// Fill `staging` from `from` first, then report `FillDone` (the sender tells other
    /// openers waiting on it).
    Fill { from: FillFrom, staging: StagingId, done: tokio::sync::watch::Sender<Option<Result<(), String>>> },
    /// Another opener is filling it: wait, then open again.
    Wait(tokio::sync::watch::Receiver<Option<Result<(), String>>>),
}

/// Where the bytes of a staging file being filled for writing come from.
pub enum FillFrom {
    /// The Hub's bytes of this identity.
    Remote(Arc<RemoteFile>),
    /// The first `size` bytes of another staging file: one the journal names as the last
    /// acknowledged state, which an in-place write could tear if the mount crashed midway.
    Staging { id: StagingId, size: u64 },
}

/// What is at a path, for the flusher.
#[derive(Debug, Clone)]
pub enum AtPath {
    /// No file (nothing, a directory or a symlink); `hub_may_have`: a file the Hub may still
    /// have there was deleted here.
    NoFile { hub_may_have: bool },
    File {
        ino: Ino,
        gen: u64,
        writers: u32,
        inflight: u32,
        content: Content,
        /// What the Hub has at this path, as last seen.
        remote: Option<Arc<RemoteFile>>,
        mtime: SystemTime,
    },
}

/// The local state an earlier mount journaled, to be shown again at once.
#[derive(Debug, Default, Clone)]
pub struct Restore {
    /// Files with pending content, their local attributes if any, and their mtime.
    pub files: Vec<(String, Content, Option<Meta>, SystemTime)>,
    pub dirs: Vec<(String, Option<Meta>)>,
    pub symlinks: Vec<(String, String, Option<Meta>)>,
    /// Fifos, sockets, device nodes.
    pub specials: Vec<(String, crate::types::FileKind, u32, Option<Meta>)>,
    /// Deletions not yet committed.
    pub deletes: Vec<String>,
    /// Attributes of entries the Hub has (applied when they appear).
    pub meta: Vec<(String, Meta)>,
}

pub enum InodeMsg {
    Get {
        ino: Ino,
        reply: Reply<FsResult<NodeView>>,
    },
    /// `max_age`: a listing older than this does not prove a name absent.
    Lookup {
        parent: Ino,
        name: String,
        hold: Hold,
        max_age: Option<Duration>,
        reply: Reply<FsResult<Lookup>>,
    },
    /// References taken through `readdirplus` (FUSE: counted; NFS: a grace period).
    Hold {
        inos: Vec<Ino>,
        hold: Hold,
    },
    Insert {
        parent: Ino,
        name: String,
        kind: RemoteKind,
        epoch: u64,
        hold: Hold,
        reply: Reply<FsResult<NodeView>>,
    },
    Absent {
        parent: Ino,
        name: String,
        epoch: u64,
    },
    Children {
        ino: Ino,
        max_age: Option<Duration>,
        reply: Reply<FsResult<Children>>,
    },
    ApplyListing {
        ino: Ino,
        path: String,
        epoch: u64,
        entries: Vec<RemoteEntry>,
        reply: Reply<Vec<Invalidation>>,
    },
    /// Every entry below directory `ino` (a recursive listing of `path`), so it can move whole.
    ApplyTree {
        ino: Ino,
        path: String,
        epoch: u64,
        entries: Vec<RemoteEntry>,
        reply: Reply<FsResult<()>>,
    },
    /// The result of revalidating a file: its new identity, or `None` when it is gone.
    Revalidated {
        ino: Ino,
        file: Option<RemoteFile>,
        epoch: u64,
        reply: Reply<FsResult<NodeView>>,
    },
    Forget {
        ino: Ino,
        n: u64,
    },
    Opened {
        ino: Ino,
        reply: Reply<FsResult<NodeView>>,
    },
    Closed {
        ino: Ino,
    },
    /// The file is opened for reading: answers whether the kernel's cached pages are still
    /// its bytes, and marks them current.
    KernelCache {
        ino: Ino,
        reply: Reply<bool>,
    },
    /// Directories whose children are listed, for the poller: `(ino, path)`, and the epoch.
    LoadedDirs {
        reply: Reply<(Vec<(Ino, String)>, u64)>,
    },
    Count {
        reply: Reply<usize>,
    },
    Create {
        parent: Ino,
        name: String,
        owner: Owner,
        staging: StagingId,
        reply: Reply<FsResult<NodeView>>,
    },
    Mkdir {
        parent: Ino,
        name: String,
        owner: Owner,
        reply: Reply<FsResult<NodeView>>,
    },
    Symlink {
        parent: Ino,
        name: String,
        target: String,
        owner: Owner,
        reply: Reply<FsResult<NodeView>>,
    },
    Link {
        ino: Ino,
        parent: Ino,
        name: String,
        reply: Reply<FsResult<NodeView>>,
    },
    Mknod {
        parent: Ino,
        name: String,
        kind: crate::types::FileKind,
        rdev: u32,
        owner: Owner,
        reply: Reply<FsResult<NodeView>>,
    },
    Unlink {
        parent: Ino,
        name: String,
        reply: Reply<FsResult<Removed>>,
    },
    Rmdir {
        parent: Ino,
        name: String,
        reply: Reply<FsResult<Removed>>,
    },
    Rename {
        parent: Ino,
        name: String,
        new_parent: Ino,
        new_name: String,
        noreplace: bool,
        reply: Reply<FsResult<Renamed>>,
    },
    OpenWrite {
        ino: Ino,
        truncate: bool,
        fresh: StagingId,
        /// Keep the acknowledged staging file untouched (a descriptor opened for writing):
        /// write a copy. NFS WRITEs leave it off: each is journaled as it is answered, and a
        /// client resends a WRITE it got no answer to, so none tears what was acknowledged,
        /// while a copy per WRITE would copy the whole file each time.
        cow: bool,
        reply: Reply<FsResult<OpenWrite>>,
    },
    FillDone {
        ino: Ino,
        staging: StagingId,
        ok: bool,
        reply: Reply<FsResult<()>>,
    },
    /// A write is about to touch the staging file.
    BeginWrite {
        ino: Ino,
        reply: Reply<FsResult<()>>,
    },
    /// Bytes up to `end` were written (`None`: the write failed); answers the new size.
    Wrote {
        ino: Ino,
        end: Option<u64>,
        reply: Reply<FsResult<u64>>,
    },
    /// Bytes up to `end` were written into a staging file held in memory, sent after the
    /// bytes went in (`BeginWrite` and `Wrote` in one; no snapshot of a held file is torn:
    /// it is read under the lock the write took). `settle` counts it until it is applied.
    WroteHeld {
        ino: Ino,
        end: u64,
        settle: Settle,
    },
    Resized {
        ino: Ino,
        size: u64,
        reply: Reply<FsResult<NodeView>>,
    },
    CloseWrite {
        ino: Ino,
        reply: Reply<FsResult<NodeView>>,
    },
    SetMeta {
        ino: Ino,
        set: SetAttr,
        reply: Reply<FsResult<NodeView>>,
    },
    Resolve {
        path: String,
        reply: Reply<AtPath>,
    },
    /// For each `(path, expected)`: does the path still hold it (see `still`)?
    Still {
        items: Vec<(String, Option<(Ino, u64)>)>,
        reply: Reply<Vec<bool>>,
    },
    Uploading {
        ino: Ino,
        gen: u64,
        on: bool,
    },
    /// A handle starts (`on`) or stops streaming into an upload.
    Streaming {
        ino: Ino,
        on: bool,
    },
    Committed {
        path: String,
        ino: Ino,
        gen: u64,
        file: RemoteFile,
    },
    Deleted {
        path: String,
    },
    /// The Hub has a file at `path` the mount no longer has (committed as it was removed or
    /// renamed away): hidden from listings until its deletion is committed.
    Tombstone {
        path: String,
    },
    Restore {
        restore: Restore,
        reply: Reply<()>,
    },
    /// Test hook: panic after the next `op` changes the state, before it answers.
    FailAfter {
        op: FailAfter,
        reply: Reply<()>,
    },
}

/// Operations the test hook can fail in the middle of: `Lookup` after its state change,
/// before the answer; `Rename` half-way (the target's name and the source's gone, the new
/// name not made yet).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailAfter {
    Lookup,
    Rename,
}

crate::actors::call::request!(InodeMsg, "inode table");

pub struct InodeTable;

/// The table's state as the actor holds it: the shared table, and where released staging
/// files go (the flusher deletes them once the journal no longer needs them).
pub type InodeArgs = (Arc<Mutex<InodeState>>, Option<UnboundedSender<StagingId>>);

supervised_actor!(InodeTable, InodeMsg, InodeArgs, "actor.inode_table");

/// The actor's message handling: synchronous (work that waits runs in spawned tasks).
fn on_message(_: ActorRef<InodeMsg>, msg: InodeMsg, state: &mut InodeArgs) -> Result<(), ActorProcessingErr> {
    let mut st = state.0.lock();
    // A handler that panics part-way leaves the table as it was before the message; the
    // panic then goes on to the supervisor, which starts the next incarnation on it.
    st.begin();
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| handle(&mut st, msg))) {
        Ok(()) => st.commit(),
        Err(panic) => {
            st.rollback();
            drop(st);
            std::panic::resume_unwind(panic);
        }
    }
    if !st.released.is_empty() {
        let released = std::mem::take(&mut st.released);
        if let Some(gc) = &state.1 {
            for s in released {
                let _ = gc.send(s);
            }
        }
    }
    Ok(())
}

fn handle(st: &mut InodeState, msg: InodeMsg) {
    match msg {
        InodeMsg::Get { ino, reply } => {
            let _ = reply.send(st.view(ino));
        }
        InodeMsg::Lookup { parent, name, hold, max_age, reply } => {
            st.touch(parent);
            let answer = st.lookup(parent, &name, hold, max_age);
            st.maybe_fail(FailAfter::Lookup);
            let _ = reply.send(answer);
        }
        InodeMsg::Hold { inos, hold } => {
            for ino in inos {
                if let Some(n) = st.nodes.get_mut(&ino) {
                    n.hold(hold);
                }
            }
        }
        InodeMsg::Insert { parent, name, kind, epoch, hold, reply } => {
            let answer = st.insert_remote(parent, &name, kind, epoch, hold);
            if let Ok(v) = &answer {
                st.enforce_cap(v.parent);
            }
            let _ = reply.send(answer);
        }
        InodeMsg::Absent { parent, name, epoch } => st.absent(parent, &name, epoch),
        InodeMsg::Children { ino, max_age, reply } => {
            st.touch(ino);
            st.enforce_cap(ino);
            let _ = reply.send(st.children_of(ino, max_age));
        }
        InodeMsg::ApplyListing { ino, path, epoch, entries, reply } => {
            let inval = st.apply_listing(ino, &path, epoch, entries);
            st.touch(ino);
            st.enforce_cap(ino);
            let _ = reply.send(inval);
        }
        InodeMsg::ApplyTree { ino, path, epoch, entries, reply } => {
            let _ = reply.send(st.apply_tree(ino, &path, epoch, entries));
        }
        InodeMsg::Revalidated { ino, file, epoch, reply } => {
            let _ = reply.send(st.revalidated(ino, file, epoch));
        }
        InodeMsg::Forget { ino, n } => {
            if let Some(node) = st.nodes.get_mut(&ino) {
                node.lookups = node.lookups.saturating_sub(n);
            }
            st.maybe_drop(ino);
        }
        InodeMsg::Opened { ino, reply } => {
            let answer = st.node_mut(ino).map(|n| n.opens += 1).and_then(|_| st.view(ino));
            let _ = reply.send(answer);
        }
        InodeMsg::Closed { ino } => {
            if let Some(n) = st.nodes.get_mut(&ino) {
                n.opens = n.opens.saturating_sub(1);
            }
            st.maybe_drop(ino);
        }
        InodeMsg::KernelCache { ino, reply } => {
            let keep = st.nodes.get_mut(&ino).is_some_and(|n| {
                let keep = n.kernel_version == n.version;
                n.kernel_version = n.version;
                keep
            });
            let _ = reply.send(keep);
        }
        InodeMsg::LoadedDirs { reply } => {
            let dirs = st
                .nodes
                .iter()
                .filter(|(_, n)| n.listed_at.is_some() && !n.removed)
                .map(|(i, _)| (*i, st.path_of(*i)))
                .collect();
            let _ = reply.send((dirs, st.epoch));
        }
        InodeMsg::Count { reply } => {
            let _ = reply.send(st.len());
        }
        InodeMsg::Create { parent, name, owner, staging, reply } => {
            let _ = reply.send(st.create(parent, &name, owner, staging));
        }
        InodeMsg::Mkdir { parent, name, owner, reply } => {
            let _ = reply.send(st.mkdir(parent, &name, owner));
        }
        InodeMsg::Symlink { parent, name, target, owner, reply } => {
            let _ = reply.send(st.symlink(parent, &name, &target, owner));
        }
        InodeMsg::Mknod { parent, name, kind, rdev, owner, reply } => {
            let _ = reply.send(st.mknod(parent, &name, kind, rdev, owner));
        }
        InodeMsg::Link { ino, parent, name, reply } => {
            let _ = reply.send(st.link(ino, parent, &name));
        }
        InodeMsg::Unlink { parent, name, reply } => {
            let _ = reply.send(st.unlink(parent, &name));
        }
        InodeMsg::Rmdir { parent, name, reply } => {
            let _ = reply.send(st.rmdir(parent, &name));
        }
        InodeMsg::Rename { parent, name, new_parent, new_name, noreplace, reply } => {
            let answer = st.rename(parent, &name, new_parent, &new_name, noreplace);
            let _ = reply.send(answer);
        }
        InodeMsg::OpenWrite { ino, truncate, fresh, cow, reply } => {
            let _ = reply.send(st.open_write(ino, truncate, fresh, cow));
        }
        InodeMsg::FillDone { ino, staging, ok, reply } => {
            let _ = reply.send(st.fill_done(ino, staging, ok));
        }
        InodeMsg::BeginWrite { ino, reply } => {
            let _ = reply.send(st.begin_write(ino));
        }
        InodeMsg::Wrote { ino, end, reply } => {
            let _ = reply.send(st.wrote(ino, end));
        }
        InodeMsg::WroteHeld { ino, end, settle } => {
            if let Err(e) = st.wrote_held(ino, end) {
                tracing::warn!(ino, "a write answered at once found no file to apply to: {e}");
            }
            drop(settle);
        }
        InodeMsg::Resized { ino, size, reply } => {
            let _ = reply.send(st.resized(ino, size));
        }
        InodeMsg::CloseWrite { ino, reply } => {
            let _ = reply.send(st.close_write(ino));
        }
        InodeMsg::SetMeta { ino, set, reply } => {
            let _ = reply.send(st.set_meta(ino, &set));
        }
        InodeMsg::Resolve { path, reply } => {
            let _ = reply.send(st.resolve(&path));
        }
        InodeMsg::Still { items, reply } => {
            let _ = reply.send(items.iter().map(|(p, e)| st.still(p, *e)).collect());
        }
        InodeMsg::Uploading { ino, gen, on } => st.uploading(ino, gen, on),
        InodeMsg::Streaming { ino, on } => {
            if let Some(n) = st.nodes.get_mut(&ino) {
                n.write.streams = if on { n.write.streams + 1 } else { n.write.streams.saturating_sub(1) };
            }
        }
        InodeMsg::Committed { path, ino, gen, file } => st.committed(&path, ino, gen, file),
        InodeMsg::Deleted { path } => st.deleted(&path),
        InodeMsg::Tombstone { path } => {
            st.tombstones.insert(path);
        }
        InodeMsg::Restore { restore, reply } => {
            st.restore(restore);
            let _ = reply.send(());
        }
        InodeMsg::FailAfter { op, reply } => {
            st.fail_after = Some(op);
            let _ = reply.send(());
        }
    }
}

#[cfg(test)]
mod tests;
