//! What the Hub says, merged into the table: lookups and listings answered
//! from what is known, fresh listings and HEAD results applied. The rule is
//! that local state wins: a node that is dirty, open for writing, not yet
//! committed or carrying local attributes is never removed, shrunk or
//! reverted by a listing, a HEAD or a poll, and an answer to a request made
//! before a node's last local change (its `touched` stamp) does not touch it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::node::{Content, NodeKind, NodeView};
use super::state::InodeState;
use super::{Children, Lookup};
use crate::error::{FsError, FsResult};
use crate::hub::{RemoteEntry, RemoteFile, RemoteKind};
use crate::types::{Hold, Ino, Invalidation};

fn kind_of(remote: &RemoteKind) -> NodeKind {
    match remote {
        RemoteKind::Dir => NodeKind::Dir,
        RemoteKind::File(f) => NodeKind::File(Content::Remote(Arc::new(f.clone()))),
    }
}

/// A lookup that misses in a stale listing of at most this many entries lists the directory
/// again (a request per page of 1,000, once per TTL) instead of resolving the name alone.
const RELIST_MAX_CHILDREN: usize = 5000;
/// …when listings are trusted this long at least (with `--metadata-ttl-minimal`, a HEAD of the
/// one name costs less than listing its directory on every lookup).
const RELIST_MIN_TTL: Duration = Duration::from_secs(1);

impl InodeState {
    pub(super) fn lookup(
        &mut self,
        parent: Ino,
        name: &str,
        hold: Hold,
        max_age: Option<Duration>,
    ) -> FsResult<Lookup> {
        let p = self.dir(parent)?;
        let fresh = p.listed_within(max_age);
        let found = match p.children.get(name).copied() {
            Some(ino) => Some(ino),
            None if fresh => return Ok(Lookup::Missing),
            None => None,
        };
        let Some(ino) = found else {
            if self.negative_hit(parent, name) {
                return Ok(Lookup::Missing);
            }
            let path = self.child_path(parent, name);
            if self.tombstoned(&path) {
                return Ok(Lookup::Missing);
            }
            let p = self.dir(parent)?;
            let ttl_allows = max_age.is_some_and(|age| age >= RELIST_MIN_TTL);
            if ttl_allows && p.listed_at.is_some() && p.children.len() <= RELIST_MAX_CHILDREN {
                return Ok(Lookup::Relist { path, epoch: self.epoch });
            }
            return Ok(Lookup::Unknown { path, epoch: self.epoch });
        };
        self.node_mut(ino)?.hold(hold);
        Ok(Lookup::Found(Box::new(self.view(ino)?)))
    }

    pub(super) fn children_of(&mut self, ino: Ino, max_age: Option<Duration>) -> FsResult<Children> {
        let n = self.dir(ino)?;
        let fresh = n.listed_within(max_age);
        if !fresh {
            return Ok(Children::NeedsListing { path: self.path_of(ino), epoch: self.epoch });
        }
        let kids: Vec<(String, Ino)> = n.children.iter().map(|(k, v)| (k.clone(), *v)).collect();
        let mut out = Vec::with_capacity(kids.len());
        for (name, child) in kids {
            if let Ok(v) = self.view(child) {
                out.push((name, v));
            }
        }
        Ok(Children::Listed(out))
    }

    /// A name resolved remotely (HEAD, or "is a directory") under `parent`.
    pub(super) fn insert_remote(
        &mut self,
        parent: Ino,
        name: &str,
        kind: RemoteKind,
        epoch: u64,
        hold: Hold,
    ) -> FsResult<NodeView> {
        self.dir(parent)?;
        self.forget_negative(parent, name);
        let ino = match self.child(parent, name) {
            Some(ino) => {
                self.apply_remote(ino, &kind, epoch);
                ino
            }
            None => {
                let k = kind_of(&kind);
                let meta = self.defaults.meta(&k, remote_mtime(&kind));
                let ino = self.insert_new(parent, name, k, meta);
                if let RemoteKind::File(f) = &kind {
                    self.node_mut(ino)?.remote = Some(Arc::new(f.clone()));
                }
                ino
            }
        };
        self.node_mut(ino)?.hold(hold);
        self.view(ino)
    }

    /// Applies what the Hub has for an existing node; returns whether the kernel must forget
    /// the name (it changed kind) and whether its cached pages are stale.
    fn apply_remote(&mut self, ino: Ino, kind: &RemoteKind, epoch: u64) -> (bool, bool) {
        let Some(n) = self.nodes.get_mut(&ino) else { return (false, false) };
        n.checked_at = Instant::now();
        if let RemoteKind::File(f) = kind {
            n.remote = Some(Arc::new(f.clone()));
        }
        if n.touched > epoch || n.has_local_state() {
            return (false, false); // local state wins; only the remote half moved
        }
        let new = kind_of(kind);
        if n.kind == new {
            return (false, false);
        }
        let was_dir = n.is_dir();
        let content_changed = matches!((&n.kind, &new), (NodeKind::File(_), NodeKind::File(_)));
        if let (NodeKind::File(_), RemoteKind::File(f)) = (&new, kind) {
            if !n.meta.local {
                let t = f.mtime.unwrap_or(self.defaults.mount_time);
                (n.meta.mtime, n.meta.ctime, n.meta.atime) = (t, t, t);
            }
        }
        n.kind = new;
        if content_changed {
            n.version += 1;
        }
        let no_handles = n.opens == 0;
        let is_dir = n.is_dir();
        if was_dir != is_dir {
            // A directory became a file or back: its children mean nothing now.
            let (parent, name) = (n.parent, n.name.clone());
            if is_dir {
                n.subdirs = 0;
                self.nodes.clear_children(ino);
            }
            if let Some(p) = self.nodes.get_mut(&parent) {
                if is_dir {
                    p.subdirs += 1;
                } else {
                    p.subdirs = p.subdirs.saturating_sub(1);
                }
            }
            let _ = name;
        }
        (true, content_changed && no_handles)
    }

    /// Replaces a directory's remote children with a fresh listing (asked for at `epoch`,
    /// from `path`); returns what the kernel must forget. Local entries stay.
    pub(super) fn apply_listing(
        &mut self,
        dir: Ino,
        path: &str,
        epoch: u64,
        entries: Vec<RemoteEntry>,
    ) -> Vec<Invalidation> {
        let mut inval = Vec::new();
        let Some(d) = self.nodes.get(&dir) else { return inval };
        if !d.is_dir() || d.removed || self.path_of(dir) != path {
            return inval; // moved or gone while it was being listed: the listing is of another place
        }
        let old: BTreeMap<String, Ino> = d.children.clone();
        let mut seen = std::collections::HashSet::new();
        for e in entries {
            let name = e.path.rsplit('/').next().unwrap_or(&e.path).to_string();
            let child_path = if path.is_empty() { name.clone() } else { format!("{path}/{name}") };
            if self.tombstoned(&child_path) {
                continue;
            }
            match old.get(&name) {
                Some(&child) => {
                    let (renamed, stale_pages) = self.apply_remote(child, &e.kind, epoch);
                    if renamed {
                        inval.push(Invalidation::Entry { parent: dir, name: name.clone() });
                    }
                    if stale_pages {
                        inval.push(Invalidation::Inode { ino: child });
                    }
                }
                None => {
                    let k = kind_of(&e.kind);
                    let meta = self.defaults.meta(&k, remote_mtime(&e.kind));
                    let ino = self.insert_new(dir, &name, k, meta);
                    if let (RemoteKind::File(f), Some(n)) = (&e.kind, self.nodes.get_mut(&ino)) {
                        n.remote = Some(Arc::new(f.clone()));
                    }
                }
            }
            self.forget_negative(dir, &name);
            seen.insert(name);
        }
        for (name, child) in &old {
            if seen.contains(name) {
                continue;
            }
            let keep = self.nodes.get(child).is_some_and(|c| {
                c.touched > epoch || (if c.is_dir() { self.subtree_has_local(*child) } else { c.has_local_state() })
            });
            if keep {
                continue;
            }
            self.mark_removed(*child);
            inval.push(Invalidation::Entry { parent: dir, name: name.clone() });
        }
        if let Some(d) = self.nodes.get_mut(&dir) {
            d.listed_at = Some(Instant::now());
            d.checked_at = Instant::now();
        }
        inval
    }

    /// The result of a HEAD of a file, asked for at `epoch`: its identity, or `None` when gone.
    pub(super) fn revalidated(&mut self, ino: Ino, file: Option<RemoteFile>, epoch: u64) -> FsResult<NodeView> {
        let n = self.node(ino)?;
        if n.touched > epoch || n.has_local_state() {
            // Written (or committed) since the HEAD was asked for: the HEAD is older than us.
            let _ = self.node_mut(ino).map(|n| n.checked_at = Instant::now());
            return self.view(ino);
        }
        match file {
            Some(f) => {
                self.apply_remote(ino, &RemoteKind::File(f), epoch);
                self.view(ino)
            }
            None => {
                let (parent, name) = (n.parent, n.name.clone());
                self.mark_removed(ino);
                self.add_negative(parent, &name);
                Err(FsError::NotFound)
            }
        }
    }

    /// A name the Hub has no file or directory for.
    pub(super) fn absent(&mut self, parent: Ino, name: &str, epoch: u64) {
        if let Some(ino) = self.child(parent, name) {
            let keep = self.nodes.get(&ino).is_some_and(|n| n.touched > epoch || n.has_local_state());
            if keep {
                return;
            }
            self.mark_removed(ino);
        }
        self.add_negative(parent, name);
    }
}

impl InodeState {
    /// Adds every entry of a recursive listing of directory `dir` (at `path`), so its whole
    /// subtree is known (a directory moves with everything below it). Directories on the
    /// way count as listed; entries already known keep their local state.
    pub(super) fn apply_tree(&mut self, dir: Ino, path: &str, epoch: u64, entries: Vec<RemoteEntry>) -> FsResult<()> {
        self.dir(dir)?;
        if self.path_of(dir) != path {
            return Err(FsError::Again("directory moved while it was listed".into()));
        }
        let prefix = if path.is_empty() { String::new() } else { format!("{path}/") };
        let mut dirs = vec![dir];
        for e in entries {
            let Some(rel) = e.path.strip_prefix(&prefix) else { continue };
            if self.tombstoned(&e.path) {
                continue;
            }
            let parts: Vec<&str> = rel.split('/').filter(|p| !p.is_empty()).collect();
            let Some((leaf, above)) = parts.split_last() else { continue };
            let mut at = dir;
            for part in above {
                at = match self.child(at, part) {
                    Some(c) if self.nodes.get(&c).is_some_and(|n| n.is_dir()) => c,
                    Some(_) => break,
                    None => {
                        let meta = self.defaults.meta(&NodeKind::Dir, None);
                        self.insert_new(at, part, NodeKind::Dir, meta)
                    }
                };
                dirs.push(at);
            }
            match self.child(at, leaf) {
                Some(c) => {
                    self.apply_remote(c, &e.kind, epoch);
                }
                None => {
                    let k = kind_of(&e.kind);
                    let meta = self.defaults.meta(&k, remote_mtime(&e.kind));
                    let ino = self.insert_new(at, leaf, k, meta);
                    if let (RemoteKind::File(f), Some(n)) = (&e.kind, self.nodes.get_mut(&ino)) {
                        n.remote = Some(Arc::new(f.clone()));
                    }
                    if e.kind.is_dir() {
                        dirs.push(ino);
                    }
                }
            }
        }
        for d in dirs {
            if let Some(n) = self.nodes.get_mut(&d) {
                n.listed_at = Some(Instant::now());
            }
        }
        Ok(())
    }
}

fn remote_mtime(kind: &RemoteKind) -> Option<std::time::SystemTime> {
    match kind {
        RemoteKind::File(f) => f.mtime,
        RemoteKind::Dir => None,
    }
}
