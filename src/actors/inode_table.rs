//! The inode table: names ↔ inode numbers, what each inode is (a directory
//! and its children once listed, or a file and its remote identity), the
//! kernel's lookup counts, open counts, and a bounded negative cache.
//!
//! Its size is bounded: past `max_nodes`, the listings of the least recently
//! used directories are unloaded, dropping the children nobody holds (the
//! kernel's lookups, open handles, a directory handle paging through them).
//! An unloaded directory is listed again on next use; children still held
//! keep their inode numbers.
//!
//! Its state lives in an `Arc<Mutex<_>>` the supervisor keeps, so a restarted
//! incarnation carries on with the same inode numbers. Only this actor locks
//! it; the lock is never held across an await.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use ractor::{ActorProcessingErr, ActorRef, RpcReplyPort};

use crate::error::{FsError, FsResult};
use crate::hub::{RemoteEntry, RemoteFile, RemoteKind};

pub type Ino = u64;
pub const ROOT_INO: Ino = 1;

/// Negative-cache entries kept at most (oldest dropped first).
const NEGATIVE_CACHE_MAX_ENTRIES: usize = 4096;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeKind {
    Dir,
    File(Arc<RemoteFile>),
}

/// A snapshot of one inode, as answered to the engine.
#[derive(Clone, Debug)]
pub struct NodeView {
    pub ino: Ino,
    pub parent: Ino,
    /// Path inside the mount ("" for the root).
    pub path: String,
    pub kind: NodeKind,
    /// When its attributes were last confirmed by the Hub.
    pub checked_at: Instant,
}

struct Node {
    parent: Ino,
    name: String,
    path: String,
    kind: NodeKind,
    checked_at: Instant,
    lookups: u64,
    opens: u64,
    /// Listed children of a directory (None until listed).
    children: Option<BTreeMap<String, Ino>>,
    /// Gone from the remote; kept while the kernel or a handle still holds it.
    removed: bool,
    /// When a directory was last listed or looked into (the table's tick).
    used: u64,
}

impl Node {
    fn view(&self, ino: Ino) -> NodeView {
        NodeView {
            ino,
            parent: self.parent,
            path: self.path.clone(),
            kind: self.kind.clone(),
            checked_at: self.checked_at,
        }
    }
}

/// The table itself; survives actor restarts.
pub struct InodeState {
    nodes: HashMap<Ino, Node>,
    /// `(parent, name)` → inode, for every child not removed (listed or found by lookup).
    by_name: HashMap<(Ino, String), Ino>,
    next_ino: Ino,
    negative: HashMap<(Ino, String), Instant>,
    negative_ttl: Duration,
    /// Past this many inodes, directory listings are unloaded (least recently used first).
    max_nodes: usize,
    /// After a pass that could not get under the cap, the size that warrants another.
    retry_above: usize,
    tick: u64,
}

impl InodeState {
    pub fn new(negative_ttl: Duration, max_nodes: usize) -> Self {
        let root = Node {
            parent: ROOT_INO,
            name: String::new(),
            path: String::new(),
            kind: NodeKind::Dir,
            checked_at: Instant::now(),
            lookups: 1,
            opens: 0,
            children: None,
            removed: false,
            used: 0,
        };
        Self {
            nodes: HashMap::from([(ROOT_INO, root)]),
            by_name: HashMap::new(),
            next_ino: ROOT_INO + 1,
            negative: HashMap::new(),
            negative_ttl,
            max_nodes: max_nodes.max(2),
            retry_above: 0,
            tick: 0,
        }
    }

    /// Marks a directory as just used.
    fn touch(&mut self, ino: Ino) {
        self.tick += 1;
        let tick = self.tick;
        if let Some(n) = self.nodes.get_mut(&ino) {
            n.used = tick;
        }
    }

    /// Keeps the table under its cap by unloading the listings of the least recently used
    /// directories (never `keep`, which was just listed, nor one a handle pages through).
    /// Goes down to 90% of the cap, so the work is paid once per many insertions.
    fn enforce_cap(&mut self, keep: Ino) {
        if self.nodes.len() <= self.max_nodes.max(self.retry_above) {
            return;
        }
        let target = self.max_nodes - self.max_nodes / 10;
        let mut dirs: Vec<(u64, Ino)> = self
            .nodes
            .iter()
            .filter(|(i, n)| **i != keep && n.children.is_some() && n.opens == 0)
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
    }

    /// Forgets a directory's listing and drops the children nobody holds (an unheld
    /// subdirectory goes with its own listing). A held child keeps its parents held too: the
    /// kernel pins a directory while it holds anything below it.
    fn unload(&mut self, dir: Ino) {
        let Some(children) = self.nodes.get_mut(&dir).and_then(|n| n.children.take()) else { return };
        for (name, ino) in children {
            let Some(c) = self.nodes.get(&ino) else { continue };
            if c.lookups > 0 || c.opens > 0 {
                continue;
            }
            if c.children.is_some() {
                self.unload(ino);
            }
            self.nodes.remove(&ino);
            self.by_name.remove(&(dir, name));
        }
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    fn node(&self, ino: Ino) -> FsResult<&Node> {
        self.nodes.get(&ino).ok_or(FsError::Stale)
    }

    /// The child `name` of `parent`, creating or updating its inode.
    fn upsert_child(&mut self, parent: Ino, name: &str, kind: NodeKind) -> Ino {
        if let Some(ino) = self.find_child(parent, name) {
            if let Some(n) = self.nodes.get_mut(&ino) {
                n.kind = kind;
                n.checked_at = Instant::now();
                return ino;
            }
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        let path = match self.nodes.get(&parent) {
            Some(p) if !p.path.is_empty() => format!("{}/{name}", p.path),
            _ => name.to_string(),
        };
        self.nodes.insert(
            ino,
            Node {
                parent,
                name: name.to_string(),
                path,
                kind,
                checked_at: Instant::now(),
                lookups: 0,
                opens: 0,
                children: None,
                removed: false,
                used: 0,
            },
        );
        self.by_name.insert((parent, name.to_string()), ino);
        ino
    }

    /// A known child not removed: listed, or found by an earlier remote lookup.
    fn find_child(&self, parent: Ino, name: &str) -> Option<Ino> {
        self.by_name.get(&(parent, name.to_string())).copied()
    }

    /// Marks an inode gone from the remote; it stays while the kernel or a handle holds it.
    fn mark_removed(&mut self, ino: Ino) {
        if let Some(n) = self.nodes.get_mut(&ino) {
            n.removed = true;
            let key = (n.parent, n.name.clone());
            if self.by_name.get(&key) == Some(&ino) {
                self.by_name.remove(&key);
            }
            if let Some(c) = self.nodes.get_mut(&key.0).and_then(|p| p.children.as_mut()) {
                if c.get(&key.1) == Some(&ino) {
                    c.remove(&key.1);
                }
            }
        }
        self.maybe_drop(ino);
    }

    fn negative_hit(&mut self, parent: Ino, name: &str) -> bool {
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

    fn add_negative(&mut self, parent: Ino, name: &str) {
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

    /// Drops an inode the kernel and handles no longer hold, if it is gone from the remote or
    /// from its parent's listing (found by a lookup under an unlisted directory, or left when
    /// the parent's listing was unloaded): nothing refers to it any more.
    fn maybe_drop(&mut self, ino: Ino) {
        if ino == ROOT_INO {
            return;
        }
        let Some(n) = self.nodes.get(&ino) else { return };
        if n.lookups > 0 || n.opens > 0 {
            return;
        }
        let listed = self.nodes.get(&n.parent).and_then(|p| p.children.as_ref()).and_then(|c| c.get(&n.name));
        if !n.removed && listed == Some(&ino) {
            return;
        }
        let key = (n.parent, n.name.clone());
        if n.children.is_some() {
            self.unload(ino);
        }
        self.nodes.remove(&ino);
        if self.by_name.get(&key) == Some(&ino) {
            self.by_name.remove(&key);
        }
    }
}

/// The answer to a child lookup.
#[derive(Debug)]
pub enum Lookup {
    Found(NodeView),
    /// Known not to exist (listed parent without it, or a fresh negative entry).
    Missing,
    /// The parent is not listed: resolve `path` remotely, then report with `Insert` or `Absent`.
    Unknown {
        path: String,
    },
}

/// The answer to a directory read.
#[derive(Debug)]
pub enum Children {
    Listed(Vec<(String, NodeView)>),
    /// Not listed yet (or the listing is older than the TTL): list `path`, then `ApplyListing`.
    NeedsListing {
        path: String,
    },
}

/// A kernel cache entry that a remote change made stale.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invalidation {
    /// The name no longer means what the kernel thinks (removed or replaced).
    Entry { parent: Ino, name: String },
    /// The file's content changed; drop its pages (only sent when no handle is open).
    Inode { ino: Ino },
}

pub enum InodeMsg {
    Get {
        ino: Ino,
        reply: RpcReplyPort<FsResult<NodeView>>,
    },
    /// `max_age`: a listing older than this does not prove a name absent.
    Lookup {
        parent: Ino,
        name: String,
        count: bool,
        max_age: Option<Duration>,
        reply: RpcReplyPort<FsResult<Lookup>>,
    },
    /// The kernel took references through `readdirplus`.
    AddLookups {
        inos: Vec<Ino>,
    },
    Insert {
        parent: Ino,
        name: String,
        kind: NodeKind,
        count: bool,
        reply: RpcReplyPort<FsResult<NodeView>>,
    },
    Absent {
        parent: Ino,
        name: String,
    },
    Children {
        ino: Ino,
        max_age: Option<Duration>,
        count: bool,
        reply: RpcReplyPort<FsResult<Children>>,
    },
    ApplyListing {
        ino: Ino,
        entries: Vec<RemoteEntry>,
        reply: RpcReplyPort<Vec<Invalidation>>,
    },
    /// The result of revalidating a file: its new identity, or `None` when it is gone.
    Revalidated {
        ino: Ino,
        file: Option<RemoteFile>,
        reply: RpcReplyPort<FsResult<NodeView>>,
    },
    Forget {
        ino: Ino,
        n: u64,
    },
    Opened {
        ino: Ino,
        reply: RpcReplyPort<FsResult<NodeView>>,
    },
    Closed {
        ino: Ino,
    },
    /// Directories whose children are loaded, for the poller: `(ino, path)`.
    LoadedDirs {
        reply: RpcReplyPort<Vec<(Ino, String)>>,
    },
    Count {
        reply: RpcReplyPort<usize>,
    },
}

pub struct InodeTable;

supervised_actor!(InodeTable, InodeMsg, Arc<Mutex<InodeState>>, "actor.inode_table");

/// The actor's message handling: synchronous (work that waits runs in spawned tasks).
fn on_message(
    _: ActorRef<InodeMsg>,
    msg: InodeMsg,
    state: &mut Arc<Mutex<InodeState>>,
) -> Result<(), ActorProcessingErr> {
    let mut st = state.lock();
    match msg {
        InodeMsg::Get { ino, reply } => {
            let _ = reply.send(st.node(ino).map(|n| n.view(ino)));
        }
        InodeMsg::Lookup { parent, name, count, max_age, reply } => {
            st.touch(parent);
            let _ = reply.send(lookup(&mut st, parent, &name, count, max_age));
        }
        InodeMsg::AddLookups { inos } => {
            for ino in inos {
                if let Some(n) = st.nodes.get_mut(&ino) {
                    n.lookups += 1;
                }
            }
        }
        InodeMsg::Insert { parent, name, kind, count, reply } => {
            let answer = st.node(parent).map(|_| ()).map(|_| {
                st.negative.remove(&(parent, name.clone()));
                let ino = st.upsert_child(parent, &name, kind);
                let n = st.nodes.get_mut(&ino).expect("just inserted");
                if count {
                    n.lookups += 1;
                }
                n.view(ino)
            });
            if let Ok(v) = &answer {
                st.enforce_cap(v.parent);
            }
            let _ = reply.send(answer);
        }
        InodeMsg::Absent { parent, name } => {
            if let Some(ino) = st.find_child(parent, &name) {
                st.mark_removed(ino);
            }
            st.add_negative(parent, &name);
        }
        InodeMsg::Children { ino, max_age, count, reply } => {
            st.touch(ino);
            let _ = reply.send(children(&mut st, ino, max_age, count));
        }
        InodeMsg::ApplyListing { ino, entries, reply } => {
            let inval = apply_listing(&mut st, ino, entries);
            st.touch(ino);
            st.enforce_cap(ino);
            let _ = reply.send(inval);
        }
        InodeMsg::Revalidated { ino, file, reply } => {
            let answer = match (st.nodes.get_mut(&ino), file) {
                (None, _) => Err(FsError::Stale),
                (Some(n), Some(f)) => {
                    n.kind = NodeKind::File(Arc::new(f));
                    n.checked_at = Instant::now();
                    Ok(n.view(ino))
                }
                (Some(n), None) => {
                    let (parent, name) = (n.parent, n.name.clone());
                    st.mark_removed(ino);
                    st.add_negative(parent, &name);
                    Err(FsError::NotFound)
                }
            };
            let _ = reply.send(answer);
        }
        InodeMsg::Forget { ino, n } => {
            if let Some(node) = st.nodes.get_mut(&ino) {
                node.lookups = node.lookups.saturating_sub(n);
            }
            st.maybe_drop(ino);
        }
        InodeMsg::Opened { ino, reply } => {
            let answer = match st.nodes.get_mut(&ino) {
                Some(n) => {
                    n.opens += 1;
                    Ok(n.view(ino))
                }
                None => Err(FsError::Stale),
            };
            let _ = reply.send(answer);
        }
        InodeMsg::Closed { ino } => {
            if let Some(n) = st.nodes.get_mut(&ino) {
                n.opens = n.opens.saturating_sub(1);
            }
            st.maybe_drop(ino);
        }
        InodeMsg::LoadedDirs { reply } => {
            let dirs = st
                .nodes
                .iter()
                .filter(|(_, n)| n.children.is_some() && !n.removed)
                .map(|(i, n)| (*i, n.path.clone()))
                .collect();
            let _ = reply.send(dirs);
        }
        InodeMsg::Count { reply } => {
            let _ = reply.send(st.len());
        }
    }
    Ok(())
}

fn lookup(st: &mut InodeState, parent: Ino, name: &str, count: bool, max_age: Option<Duration>) -> FsResult<Lookup> {
    let p = st.node(parent)?;
    if p.kind != NodeKind::Dir {
        return Err(FsError::NotDir);
    }
    let path = if p.path.is_empty() { name.to_string() } else { format!("{}/{name}", p.path) };
    let fresh = max_age.is_none_or(|age| p.checked_at.elapsed() < age);
    let listed = p.children.as_ref().map(|c| c.get(name).copied()).filter(|found| found.is_some() || fresh);
    let found = match listed {
        Some(Some(ino)) => Some(ino),
        Some(None) => return Ok(Lookup::Missing),
        None => {
            if st.negative_hit(parent, name) {
                return Ok(Lookup::Missing);
            }
            st.find_child(parent, name)
        }
    };
    match found.and_then(|ino| st.nodes.get_mut(&ino).map(|n| (ino, n))) {
        Some((ino, n)) => {
            if count {
                n.lookups += 1;
            }
            Ok(Lookup::Found(n.view(ino)))
        }
        None => Ok(Lookup::Unknown { path }),
    }
}

fn children(st: &mut InodeState, ino: Ino, max_age: Option<Duration>, count: bool) -> FsResult<Children> {
    let n = st.node(ino)?;
    if n.kind != NodeKind::Dir {
        return Err(FsError::NotDir);
    }
    let fresh = max_age.is_none_or(|age| n.checked_at.elapsed() < age);
    let Some(kids) = n.children.as_ref().filter(|_| fresh) else {
        return Ok(Children::NeedsListing { path: n.path.clone() });
    };
    let kids: Vec<(String, Ino)> = kids.iter().map(|(k, v)| (k.clone(), *v)).collect();
    let mut out = Vec::with_capacity(kids.len());
    for (name, child) in kids {
        if let Some(c) = st.nodes.get_mut(&child) {
            if count {
                c.lookups += 1;
            }
            out.push((name, c.view(child)));
        }
    }
    Ok(Children::Listed(out))
}

/// Replaces a directory's children with a fresh listing; returns what the kernel must forget.
fn apply_listing(st: &mut InodeState, ino: Ino, entries: Vec<RemoteEntry>) -> Vec<Invalidation> {
    let mut inval = Vec::new();
    let Some(dir) = st.nodes.get(&ino) else { return inval };
    let old = dir.children.clone().unwrap_or_default();
    let mut fresh = BTreeMap::new();
    for e in entries {
        // Entries are repo paths; the mount path is the same relative tail.
        let name = e.path.rsplit('/').next().unwrap_or(&e.path).to_string();
        let kind = match e.kind {
            RemoteKind::Dir => NodeKind::Dir,
            RemoteKind::File(f) => NodeKind::File(Arc::new(f)),
        };
        let before = old.get(&name).and_then(|i| st.nodes.get(i)).map(|n| n.kind.clone());
        let child = st.upsert_child(ino, &name, kind.clone());
        if let Some(before) = before {
            if before != kind {
                inval.push(Invalidation::Entry { parent: ino, name: name.clone() });
                let no_handles = st.nodes.get(&child).is_some_and(|n| n.opens == 0);
                if matches!(kind, NodeKind::File(_)) && no_handles {
                    inval.push(Invalidation::Inode { ino: child });
                }
            }
        }
        st.negative.remove(&(ino, name.clone()));
        fresh.insert(name, child);
    }
    for (name, child) in &old {
        if !fresh.contains_key(name) {
            st.mark_removed(*child);
            inval.push(Invalidation::Entry { parent: ino, name: name.clone() });
        }
    }
    if let Some(d) = st.nodes.get_mut(&ino) {
        d.children = Some(fresh);
        d.checked_at = Instant::now();
    }
    inval
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, etag: &str) -> RemoteEntry {
        RemoteEntry {
            path: path.into(),
            kind: RemoteKind::File(RemoteFile { size: 1, xet_hash: None, etag: etag.into(), mtime: None }),
        }
    }

    #[test]
    fn listing_diffs_produce_invalidations_and_keep_inode_numbers() {
        let mut st = InodeState::new(Duration::from_secs(5), 1000);
        assert!(apply_listing(&mut st, ROOT_INO, vec![file("a", "1"), file("b", "1")]).is_empty());
        let Lookup::Found(a) = lookup(&mut st, ROOT_INO, "a", true, None).unwrap() else { panic!() };
        let inval = apply_listing(&mut st, ROOT_INO, vec![file("a", "2"), file("c", "1")]);
        assert!(inval.contains(&Invalidation::Entry { parent: ROOT_INO, name: "a".into() }));
        assert!(inval.contains(&Invalidation::Inode { ino: a.ino }));
        assert!(inval.contains(&Invalidation::Entry { parent: ROOT_INO, name: "b".into() }));
        let Lookup::Found(a2) = lookup(&mut st, ROOT_INO, "a", false, None).unwrap() else { panic!() };
        assert_eq!(a2.ino, a.ino, "a changed content, not identity");
        assert!(matches!(lookup(&mut st, ROOT_INO, "b", false, None).unwrap(), Lookup::Missing));
    }

    #[test]
    fn unlisted_parents_ask_for_remote_resolution_and_negative_cache_answers() {
        let mut st = InodeState::new(Duration::from_secs(5), 1000);
        apply_listing(&mut st, ROOT_INO, vec![RemoteEntry { path: "d".into(), kind: RemoteKind::Dir }]);
        let Lookup::Found(d) = lookup(&mut st, ROOT_INO, "d", true, None).unwrap() else { panic!() };
        assert!(matches!(lookup(&mut st, d.ino, "x", true, None).unwrap(), Lookup::Unknown { path } if path == "d/x"));
        st.add_negative(d.ino, "x");
        assert!(matches!(lookup(&mut st, d.ino, "x", true, None).unwrap(), Lookup::Missing));
    }

    #[test]
    fn forgotten_removed_inodes_are_dropped() {
        let mut st = InodeState::new(Duration::from_secs(5), 1000);
        apply_listing(&mut st, ROOT_INO, vec![file("a", "1")]);
        let Lookup::Found(a) = lookup(&mut st, ROOT_INO, "a", true, None).unwrap() else { panic!() };
        apply_listing(&mut st, ROOT_INO, vec![]);
        assert!(st.nodes.contains_key(&a.ino), "the kernel still holds it");
        st.nodes.get_mut(&a.ino).unwrap().lookups = 0;
        st.maybe_drop(a.ino);
        assert!(!st.nodes.contains_key(&a.ino));
    }

    /// Looks `dir` up under the root (as the kernel would, holding it) and lists it with `n`
    /// files, as the actor does.
    fn list_dir(st: &mut InodeState, name: &str, n: usize) -> Ino {
        st.touch(ROOT_INO);
        let Lookup::Found(d) = lookup(st, ROOT_INO, name, true, None).unwrap() else { panic!("{name}") };
        let entries = (0..n).map(|i| file(&format!("{name}/f{i}"), "1")).collect();
        apply_listing(st, d.ino, entries);
        st.touch(d.ino);
        st.enforce_cap(d.ino);
        d.ino
    }

    #[test]
    fn the_table_stays_under_its_cap_and_keeps_what_is_held() {
        let mut st = InodeState::new(Duration::from_secs(5), 250);
        let dirs = ["a", "b", "c", "d"].map(|n| RemoteEntry { path: n.into(), kind: RemoteKind::Dir });
        apply_listing(&mut st, ROOT_INO, dirs.to_vec());
        let a = list_dir(&mut st, "a", 100);
        // The kernel holds a/f7; a handle pages through b.
        let Lookup::Found(f7) = lookup(&mut st, a, "f7", true, None).unwrap() else { panic!() };
        let b = list_dir(&mut st, "b", 100);
        st.nodes.get_mut(&b).unwrap().opens += 1;
        let c = list_dir(&mut st, "c", 100);
        assert!(st.len() <= 250, "{} inodes", st.len());
        assert!(st.nodes[&a].children.is_none(), "the least recently used listing went");
        assert!(st.nodes[&b].children.is_some(), "a directory being paged keeps its listing");
        assert!(st.nodes[&c].children.is_some(), "the directory just listed keeps its listing");
        assert!(st.nodes.contains_key(&f7.ino), "a held child keeps its inode");
        // Listed again: the held child has the same number, the others come back.
        list_dir(&mut st, "a", 100);
        let Lookup::Found(again) = lookup(&mut st, a, "f7", false, None).unwrap() else { panic!() };
        assert_eq!(again.ino, f7.ino);
        assert!(matches!(lookup(&mut st, a, "f8", false, None).unwrap(), Lookup::Found(_)));
        // A directory bigger than the cap alone stays listed (the cap is exceeded, not the listing lost).
        let d = list_dir(&mut st, "d", 400);
        assert!(st.nodes[&d].children.is_some());
        // Once the kernel forgets them, entries whose listing went are dropped too; and
        // unloading a tree drops its subdirectories with their listings.
        let inos: Vec<Ino> = st.nodes.keys().copied().filter(|i| *i != ROOT_INO).collect();
        for ino in &inos {
            if let Some(n) = st.nodes.get_mut(ino) {
                (n.lookups, n.opens) = (0, 0);
            }
            st.maybe_drop(*ino);
        }
        assert!(!st.nodes.contains_key(&f7.ino) || st.nodes[&a].children.is_some());
        st.unload(ROOT_INO);
        assert_eq!(st.len(), 1, "only the root is left");
    }
}
