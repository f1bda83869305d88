//! The table itself: nodes by inode number, children by name, the bounded
//! negative cache, tombstones of local deletions not yet committed, and the
//! cap that unloads least recently used listings. Paths are derived from
//! (parent, name) when asked for, so moving a directory moves its subtree
//! without touching it.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use super::node::{Defaults, Meta, Node, NodeKind, NodeView};
use super::undo::{Logged, Nodes};
use crate::error::{FsError, FsResult};
use crate::types::{Ino, StagingId, ROOT_INO};

/// Negative-cache entries kept at most (oldest dropped first).
const NEGATIVE_CACHE_MAX_ENTRIES: usize = 4096;

/// The table; survives actor restarts (the supervisor keeps it).
pub struct InodeState {
    pub(super) nodes: Nodes,
    next_ino: Ino,
    negative: HashMap<(Ino, String), Instant>,
    negative_ttl: Duration,
    /// Past this many inodes, directory listings are unloaded (least recently used first).
    max_nodes: usize,
    /// After a pass that could not get under the cap, the size that warrants another…
    retry_above: usize,
    /// …or the time the first hold for a grace period (NFS) that kept nodes then runs out.
    retry_at: Option<Instant>,
    tick: u64,
    /// Mount paths deleted here whose deletion is not committed yet: hidden from listings
    /// and lookups, so a listing or HEAD answered before the commit cannot bring them back.
    pub(super) tombstones: Logged<BTreeSet<String>>,
    /// Local attributes journaled by an earlier mount, applied when their node appears.
    pub(super) meta_overlay: Logged<HashMap<String, Meta>>,
    pub(super) defaults: Defaults,
    /// Counts local changes and commits; stamps `Node::touched`.
    pub(super) epoch: u64,
    /// Staging files no node refers to any more; the actor hands them to the flusher.
    pub(super) released: Vec<StagingId>,
    /// Test hook: the operation after whose state change (before its answer) the actor panics.
    pub(super) fail_after: Option<super::FailAfter>,
    /// While a message is handled: the counters as they were before it (see `begin`).
    before: Option<Counters>,
}

/// The table's counters, saved at `begin`.
#[derive(Clone, Copy)]
struct Counters {
    next_ino: Ino,
    epoch: u64,
    tick: u64,
    retry_above: usize,
    retry_at: Option<Instant>,
    released: usize,
}

impl InodeState {
    pub fn new(negative_ttl: Duration, max_nodes: usize, defaults: Defaults) -> Self {
        let mut root = Node::new(ROOT_INO, "", NodeKind::Dir, defaults.meta(&NodeKind::Dir, None));
        root.lookups = 1;
        Self {
            nodes: Nodes::new(HashMap::from([(ROOT_INO, root)])),
            next_ino: ROOT_INO + 1,
            negative: HashMap::new(),
            negative_ttl,
            max_nodes: max_nodes.max(2),
            retry_above: 0,
            retry_at: None,
            tick: 0,
            tombstones: Logged::default(),
            meta_overlay: Logged::default(),
            defaults,
            epoch: 0,
            released: Vec::new(),
            fail_after: None,
            before: None,
        }
    }

    /// Starts logging changes: a message is about to be handled.
    pub(super) fn begin(&mut self) {
        self.before = Some(Counters {
            next_ino: self.next_ino,
            epoch: self.epoch,
            tick: self.tick,
            retry_above: self.retry_above,
            retry_at: self.retry_at,
            released: self.released.len(),
        });
        self.nodes.begin();
        self.tombstones.begin();
        self.meta_overlay.begin();
    }

    /// The message was handled: its changes stand.
    pub(super) fn commit(&mut self) {
        self.before = None;
        self.nodes.commit();
        self.tombstones.commit();
        self.meta_overlay.commit();
    }

    /// The message's handler failed part-way: every change it made is undone. (Inode numbers
    /// are not reused: one handed out by the failed change is simply never used. The negative
    /// cache is emptied: it only saves requests.)
    pub(super) fn rollback(&mut self) {
        if let Some(c) = self.before.take() {
            (self.next_ino, self.epoch, self.tick) = (c.next_ino.max(self.next_ino), c.epoch, c.tick);
            (self.retry_above, self.retry_at) = (c.retry_above, c.retry_at);
            self.released.truncate(c.released);
        }
        self.nodes.rollback();
        self.tombstones.rollback();
        self.meta_overlay.rollback();
        self.negative.clear();
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Test hook: panics, once, if `op` is the armed operation (a crash mid-change).
    pub(super) fn maybe_fail(&mut self, op: super::FailAfter) {
        if self.fail_after == Some(op) {
            self.fail_after = None;
            panic!("test hook: the inode table fails after the state change of {op:?}");
        }
    }

    pub(super) fn node(&self, ino: Ino) -> FsResult<&Node> {
        self.nodes.get(&ino).ok_or(FsError::Stale)
    }

    pub(super) fn node_mut(&mut self, ino: Ino) -> FsResult<&mut Node> {
        self.nodes.get_mut(&ino).ok_or(FsError::Stale)
    }

    /// The directory `ino`, or why it cannot be one.
    pub(super) fn dir(&self, ino: Ino) -> FsResult<&Node> {
        let n = self.node(ino)?;
        if !n.is_dir() {
            return Err(FsError::NotDir);
        }
        if n.removed {
            return Err(FsError::NotFound);
        }
        Ok(n)
    }

    /// The path of `ino` inside the mount ("" for the root), from its chain of parents.
    pub fn path_of(&self, ino: Ino) -> String {
        let mut parts = Vec::new();
        let mut at = ino;
        while at != ROOT_INO {
            let Some(n) = self.nodes.get(&at) else { break };
            parts.push(n.name.as_str());
            at = n.parent;
        }
        parts.reverse();
        parts.join("/")
    }

    pub(super) fn child_path(&self, parent: Ino, name: &str) -> String {
        let p = self.path_of(parent);
        if p.is_empty() {
            name.to_string()
        } else {
            format!("{p}/{name}")
        }
    }

    pub(super) fn child(&self, parent: Ino, name: &str) -> Option<Ino> {
        self.nodes.get(&parent).and_then(|p| p.children.get(name).copied())
    }

    /// The node at a mount path, walking known children from the root.
    pub(super) fn at_path(&self, path: &str) -> Option<Ino> {
        let mut at = ROOT_INO;
        for part in path.split('/').filter(|p| !p.is_empty()) {
            at = self.child(at, part)?;
        }
        Some(at)
    }

    /// Marks a local change (or a commit) of `ino`: results of remote requests asked for
    /// before it no longer apply to it.
    pub(super) fn bump(&mut self, ino: Ino) {
        self.epoch += 1;
        let epoch = self.epoch;
        if let Some(n) = self.nodes.get_mut(&ino) {
            n.touched = epoch;
        }
    }

    pub(super) fn view(&self, ino: Ino) -> FsResult<NodeView> {
        let n = self.node(ino)?;
        Ok(NodeView {
            ino,
            parent: n.parent,
            path: self.path_of(ino),
            other_paths: n.links.iter().map(|(p, name)| self.child_path(*p, name)).collect(),
            kind: n.kind.clone(),
            attr: n.attr(ino),
            meta: n.meta,
            remote: n.remote.clone(),
            write: n.write,
            version: n.version,
            revalidatable: n.revalidatable(),
            checked_at: n.checked_at,
            epoch: self.epoch,
            lookups: n.lookups,
        })
    }

    /// Names `ino` as `name` in `parent`.
    pub(super) fn attach(&mut self, parent: Ino, name: &str, ino: Ino) {
        let is_dir = self.nodes.get(&ino).is_some_and(Node::is_dir);
        if self.nodes.set_child(parent, name, ino) == Some(None) && is_dir {
            if let Some(p) = self.nodes.get_mut(&parent) {
                p.subdirs += 1;
            }
        }
    }

    /// Removes the name `name` from `parent`; returns the inode it named.
    pub(super) fn detach(&mut self, parent: Ino, name: &str) -> Option<Ino> {
        let ino = self.nodes.remove_child(parent, name)?;
        if self.nodes.get(&ino).is_some_and(Node::is_dir) {
            if let Some(p) = self.nodes.get_mut(&parent) {
                p.subdirs = p.subdirs.saturating_sub(1);
            }
        }
        Some(ino)
    }

    /// A new inode named `name` in `parent`.
    pub(super) fn insert_new(&mut self, parent: Ino, name: &str, kind: NodeKind, meta: Meta) -> Ino {
        let ino = self.next_ino;
        self.next_ino += 1;
        let mut node = Node::new(parent, name, kind, meta);
        if !self.meta_overlay.is_empty() {
            let path = self.child_path(parent, name);
            if let Some(m) = self.meta_overlay.remove(&path) {
                node.meta = m;
            }
        }
        self.nodes.insert(ino, node);
        self.attach(parent, name, ino);
        self.negative.remove(&(parent, name.to_string()));
        ino
    }

    /// Marks a directory as just used.
    pub(super) fn touch(&mut self, ino: Ino) {
        self.tick += 1;
        let tick = self.tick;
        if let Some(n) = self.nodes.get_mut(&ino) {
            n.used = tick;
        }
    }

    /// Whether `ino` or anything below it carries local state.
    pub(super) fn subtree_has_local(&self, ino: Ino) -> bool {
        let Some(n) = self.nodes.get(&ino) else { return false };
        n.has_local_state() || n.children.values().any(|c| self.subtree_has_local(*c))
    }

    /// Keeps the table under its cap by unloading the listings of the least recently used
    /// directories (never `keep`, which was just listed, nor one a handle pages through).
    /// Goes down to 90% of the cap, so the work is paid once per many insertions.
    pub(super) fn enforce_cap(&mut self, keep: Ino) {
        let holds_ran_out = self.retry_at.is_some_and(|t| Instant::now() >= t);
        if self.nodes.len() <= self.max_nodes || (self.nodes.len() <= self.retry_above && !holds_ran_out) {
            return;
        }
        let target = self.max_nodes - self.max_nodes / 10;
        let mut dirs: Vec<(u64, Ino)> = self
            .nodes
            .iter()
            .filter(|(i, n)| **i != keep && !n.children.is_empty() && n.opens == 0)
            .map(|(i, n)| (n.used, *i))
            .collect();
        dirs.sort_unstable();
        for (_, dir) in dirs {
            if self.nodes.len() <= target {
                break;
            }
            self.unload(dir);
        }
        // Still over (what is left is held, or one directory is bigger than the cap): do not
        // scan again on every insertion, only once the table has grown by another tenth.
        self.retry_above = if self.nodes.len() > self.max_nodes { self.nodes.len() + self.max_nodes / 10 } else { 0 };
        let now = Instant::now();
        self.retry_at = if self.retry_above > 0 {
            self.nodes.values().filter_map(|n| n.held_until).filter(|t| *t > now).min()
        } else {
            None
        };
    }

    /// Forgets a directory's listing and drops the children nobody holds and that carry no
    /// local state (an unheld subdirectory goes with its own listing, unless something below
    /// it must stay). A held child keeps its parents held too: the kernel pins a directory
    /// while it holds anything below it. Returns whether anything was kept.
    pub(super) fn unload(&mut self, dir: Ino) -> bool {
        let Some(n) = self.nodes.get_mut(&dir) else { return false };
        n.listed_at = None;
        let children: Vec<(String, Ino)> = n.children.iter().map(|(k, v)| (k.clone(), *v)).collect();
        let mut kept = false;
        for (name, ino) in children {
            let Some(c) = self.nodes.get(&ino) else { continue };
            if c.held() || c.has_local_state() {
                kept = true;
                continue;
            }
            if c.is_dir() && self.unload(ino) {
                kept = true;
                continue;
            }
            self.detach(dir, &name);
            self.nodes.remove(&ino);
        }
        kept
    }

    /// Drops an inode the kernel and handles no longer hold, if it is gone (unlinked or gone
    /// from the remote) or not named by its parent any more: nothing refers to it any more.
    pub(super) fn maybe_drop(&mut self, ino: Ino) {
        if ino == ROOT_INO {
            return;
        }
        let Some(n) = self.nodes.get(&ino) else { return };
        if n.held() {
            return;
        }
        let named = self.child(n.parent, &n.name) == Some(ino);
        if !n.removed && named {
            return;
        }
        if n.is_dir() {
            self.unload(ino);
        }
        let n = self.nodes.remove(&ino).expect("checked above");
        if named {
            self.detach(n.parent, &n.name);
        }
        if let NodeKind::File(c) = &n.kind {
            self.released.extend(c.staging());
        }
    }

    /// Marks an inode gone from the remote; it stays while the kernel or a handle holds it.
    pub(super) fn mark_removed(&mut self, ino: Ino) {
        let Some(n) = self.nodes.get_mut(&ino) else { return };
        n.removed = true;
        let (parent, name) = (n.parent, n.name.clone());
        if self.child(parent, &name) == Some(ino) {
            self.detach(parent, &name);
        }
        self.maybe_drop(ino);
    }

    pub(super) fn negative_hit(&mut self, parent: Ino, name: &str) -> bool {
        let key = (parent, name.to_string());
        match self.negative.get(&key) {
            Some(at) if at.elapsed() < self.negative_ttl => true,
            Some(_) => {
                self.negative.remove(&key);
                false
            }
            None => false,
        }
    }

    pub(super) fn add_negative(&mut self, parent: Ino, name: &str) {
        if self.negative.len() >= NEGATIVE_CACHE_MAX_ENTRIES {
            let ttl = self.negative_ttl;
            self.negative.retain(|_, at| at.elapsed() < ttl);
            if self.negative.len() >= NEGATIVE_CACHE_MAX_ENTRIES {
                if let Some(oldest) = self.negative.iter().min_by_key(|(_, at)| **at).map(|(k, _)| k.clone()) {
                    self.negative.remove(&oldest);
                }
            }
        }
        self.negative.insert((parent, name.to_string()), Instant::now());
    }

    pub(super) fn forget_negative(&mut self, parent: Ino, name: &str) {
        self.negative.remove(&(parent, name.to_string()));
    }

    /// Whether a remote path is hidden by a local deletion not yet committed (the path itself,
    /// or a directory above it).
    pub(super) fn tombstoned(&self, path: &str) -> bool {
        if self.tombstones.is_empty() {
            return false;
        }
        if self.tombstones.contains(path) {
            return true;
        }
        let mut at = path;
        while let Some((parent, _)) = at.rsplit_once('/') {
            if self.tombstones.contains(parent) {
                return true;
            }
            at = parent;
        }
        false
    }
}
