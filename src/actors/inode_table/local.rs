//! Local changes to the table: creating, writing, truncating, renaming,
//! linking and removing, and the flusher's reports (uploading, committed,
//! deleted). Each change bumps the node's generation (content) or its
//! `touched` stamp, so an answer from the Hub asked for earlier cannot undo it.
//! Namespace rules (what may be renamed over what, what is empty) live here.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use super::node::{Content, Meta, NodeKind, NodeView, Status};
use super::state::InodeState;
use super::{AtPath, FillFrom, Moved, OpenWrite, Removed, Renamed, Restore, ANY_GEN};
use crate::error::{FsError, FsResult};
use crate::hub::RemoteFile;
use crate::types::{FileKind, Ino, SetAttr, StagingId, PATH_MAX_BYTES, ROOT_INO};

/// Who creates an entry and with which permission bits.
#[derive(Clone, Copy, Debug)]
pub struct Owner {
    pub perm: u16,
    pub uid: u32,
    pub gid: u32,
}

impl InodeState {
    /// Attributes of a new entry: journaled (`local`) only where they differ from what the
    /// mount would show anyway.
    fn new_meta(&self, kind: &NodeKind, owner: Owner) -> Meta {
        let now = SystemTime::now();
        let usual = self.defaults.meta(kind, None);
        let local = owner.perm != usual.perm || owner.uid != usual.uid || owner.gid != usual.gid;
        Meta { perm: owner.perm, uid: owner.uid, gid: owner.gid, atime: now, mtime: now, ctime: now, local }
    }

    /// The path `name` would have in `parent`, refused past [`PATH_MAX_BYTES`].
    fn new_path(&self, parent: Ino, name: &str) -> FsResult<String> {
        let path = self.child_path(parent, name);
        if path.len() > PATH_MAX_BYTES {
            return Err(FsError::NameTooLong(path.len()));
        }
        Ok(path)
    }

    /// A new entry `name` in `parent`: refused if the name is taken.
    fn add_local(&mut self, parent: Ino, name: &str, kind: NodeKind, owner: Owner) -> FsResult<Ino> {
        self.dir(parent)?;
        if self.child(parent, name).is_some() {
            return Err(FsError::Exists);
        }
        let path = self.new_path(parent, name)?;
        if matches!(kind, NodeKind::File(_)) {
            // A file here is committed over the Hub's; anything else leaves its deletion pending.
            self.tombstones.remove(&path);
        }
        self.meta_overlay.remove(&path);
        let meta = self.new_meta(&kind, owner);
        let ino = self.insert_new(parent, name, kind, meta);
        self.node_mut(ino)?.lookups += 1;
        self.touch_dir(parent);
        self.bump(ino);
        Ok(ino)
    }

    /// The directory's own times follow changes to its entries.
    fn touch_dir(&mut self, dir: Ino) {
        let now = SystemTime::now();
        if let Some(d) = self.nodes.get_mut(&dir) {
            d.meta.mtime = now;
            d.meta.ctime = now;
        }
    }

    /// A new empty file, open for writing (its bytes go to `staging`).
    pub(super) fn create(&mut self, parent: Ino, name: &str, owner: Owner, staging: StagingId) -> FsResult<NodeView> {
        let ino = self.add_local(parent, name, NodeKind::File(Content::Local { staging, size: 0 }), owner)?;
        let n = self.node_mut(ino)?;
        n.write.status = Status::Dirty;
        n.write.gen = 1;
        n.write.writers = 1;
        n.opens += 1;
        self.view(ino)
    }

    pub(super) fn mkdir(&mut self, parent: Ino, name: &str, owner: Owner) -> FsResult<NodeView> {
        let ino = self.add_local(parent, name, NodeKind::Dir, owner)?;
        let n = self.node_mut(ino)?;
        n.local_dir = true;
        n.listed_at = Some(Instant::now()); // nothing is below a name the Hub did not have
        self.view(ino)
    }

    pub(super) fn symlink(&mut self, parent: Ino, name: &str, target: &str, owner: Owner) -> FsResult<NodeView> {
        let ino = self.add_local(parent, name, NodeKind::Symlink(Arc::from(target)), owner)?;
        self.view(ino)
    }

    /// A fifo, socket or device node (local to the mount).
    pub(super) fn mknod(
        &mut self,
        parent: Ino,
        name: &str,
        kind: FileKind,
        rdev: u32,
        owner: Owner,
    ) -> FsResult<NodeView> {
        let ino = self.add_local(parent, name, NodeKind::Special { kind, rdev }, owner)?;
        self.view(ino)
    }

    /// A second name for a file: locally the same inode; on the Hub a copy of the same content.
    pub(super) fn link(&mut self, ino: Ino, parent: Ino, name: &str) -> FsResult<NodeView> {
        let n = self.node(ino)?;
        if n.is_dir() {
            return Err(FsError::NotPermitted("hard links to directories".into()));
        }
        if n.removed {
            return Err(FsError::NotFound);
        }
        self.dir(parent)?;
        if self.child(parent, name).is_some() {
            return Err(FsError::Exists);
        }
        let path = self.new_path(parent, name)?;
        self.tombstones.remove(&path);
        self.attach(parent, name, ino);
        let n = self.node_mut(ino)?;
        n.links.push((parent, name.to_string()));
        n.lookups += 1;
        n.meta.ctime = SystemTime::now();
        if matches!(n.kind, NodeKind::File(_)) {
            n.write.status = Status::Dirty; // the new path must be committed
        }
        self.touch_dir(parent);
        self.bump(ino);
        self.view(ino)
    }

    /// Takes the name `(parent, name)` away from its node (unlink, rmdir, replaced by a rename).
    fn unname(&mut self, parent: Ino, name: &str) -> FsResult<Removed> {
        let ino = self.child(parent, name).ok_or(FsError::NotFound)?;
        let path = self.child_path(parent, name);
        let n = self.node(ino)?;
        let is_file = matches!(n.kind, NodeKind::File(_));
        let hub_may_have = is_file && (n.remote.is_some() || n.write.status == Status::Uploading);
        let kind = n.kind.clone();
        let local_dir = n.local_dir;
        self.detach(parent, name);
        let n = self.node_mut(ino)?;
        if (n.parent, n.name.as_str()) == (parent, name) {
            if n.links.is_empty() {
                n.removed = true;
            } else {
                let (p, nm) = n.links.remove(0);
                n.parent = p;
                n.name = nm;
            }
        } else {
            n.links.retain(|(p, nm)| !(*p == parent && nm == name));
        }
        n.meta.ctime = SystemTime::now();
        if hub_may_have {
            self.tombstones.insert(path.clone());
        }
        if parent != ROOT_INO {
            if let Some(p) = self.nodes.get_mut(&parent) {
                p.local_dir = true; // emptied here: it stays until removed here
            }
        }
        self.touch_dir(parent);
        self.bump(ino);
        Ok(Removed { ino, path, kind, hub_may_have, local_dir })
    }

    pub(super) fn unlink(&mut self, parent: Ino, name: &str) -> FsResult<Removed> {
        self.dir(parent)?;
        let ino = self.child(parent, name).ok_or(FsError::NotFound)?;
        if self.node(ino)?.is_dir() {
            return Err(FsError::IsDir);
        }
        let removed = self.unname(parent, name)?;
        self.maybe_drop(ino);
        Ok(removed)
    }

    /// Removes an empty directory. `listed`: its children are known whole (the engine lists
    /// it first), so remote children not yet seen count too.
    pub(super) fn rmdir(&mut self, parent: Ino, name: &str) -> FsResult<Removed> {
        self.dir(parent)?;
        let ino = self.child(parent, name).ok_or(FsError::NotFound)?;
        let n = self.node(ino)?;
        if !n.is_dir() {
            return Err(FsError::NotDir);
        }
        if !n.children.is_empty() {
            return Err(FsError::NotEmpty);
        }
        if n.listed_at.is_none() && !n.local_dir {
            return Err(FsError::Again("directory not listed".into()));
        }
        let removed = self.unname(parent, name)?;
        // Deletions of files that were below it are pending: hide the directory too until then.
        let below = format!("{}/", removed.path);
        if self.tombstones.range(below.clone()..).next().is_some_and(|t| t.starts_with(&below)) {
            self.tombstones.insert(removed.path.clone());
        }
        self.maybe_drop(ino);
        Ok(removed)
    }

    /// Moves `(parent, name)` to `(new_parent, new_name)`, replacing what is there if POSIX
    /// allows it. Directories move with their (materialized) subtree.
    pub(super) fn rename(
        &mut self,
        parent: Ino,
        name: &str,
        new_parent: Ino,
        new_name: &str,
        noreplace: bool,
    ) -> FsResult<Renamed> {
        self.dir(parent)?;
        self.dir(new_parent)?;
        let ino = self.child(parent, name).ok_or(FsError::NotFound)?;
        self.new_path(new_parent, new_name)?;
        let target = self.child(new_parent, new_name);
        if target == Some(ino) {
            return Ok(Renamed { moved: Vec::new(), replaced: None });
        }
        let src_dir = self.node(ino)?.is_dir();
        // A directory cannot move below itself.
        if src_dir {
            let mut at = new_parent;
            loop {
                if at == ino {
                    return Err(FsError::Invalid("cannot move a directory inside itself".into()));
                }
                if at == ROOT_INO {
                    break;
                }
                at = self.node(at)?.parent;
            }
        }
        let mut replaced = None;
        if let Some(t) = target {
            if noreplace {
                return Err(FsError::Exists);
            }
            let tn = self.node(t)?;
            match (src_dir, tn.is_dir()) {
                (false, true) => return Err(FsError::IsDir),
                (true, false) => return Err(FsError::NotDir),
                (true, true) if !tn.children.is_empty() => return Err(FsError::NotEmpty),
                (true, true) if tn.listed_at.is_none() && !tn.local_dir => {
                    return Err(FsError::Again("target directory not listed".into()))
                }
                _ => {}
            }
            let hub_at_target = tn.remote.clone();
            let r = self.unname(new_parent, new_name)?;
            self.maybe_drop(t);
            replaced = Some((r, hub_at_target));
        }
        let old_base = self.child_path(parent, name);
        self.detach(parent, name);
        self.maybe_fail(super::FailAfter::Rename);
        {
            let n = self.node_mut(ino)?;
            if (n.parent, n.name.as_str()) == (parent, name) {
                n.parent = new_parent;
                n.name = new_name.to_string();
            } else {
                for l in n.links.iter_mut().filter(|(p, nm)| *p == parent && nm == name) {
                    *l = (new_parent, new_name.to_string());
                }
            }
            n.meta.ctime = SystemTime::now();
        }
        self.attach(new_parent, new_name, ino);
        if parent != ROOT_INO {
            if let Some(p) = self.nodes.get_mut(&parent) {
                p.local_dir = true;
            }
        }
        self.touch_dir(parent);
        self.touch_dir(new_parent);
        let new_base = self.child_path(new_parent, new_name);
        // Everything below moves with it: each file's old path is deleted on the Hub and its
        // new path committed (with the same content: nothing is uploaded for clean files).
        let mut moved = Vec::new();
        let mut stack = vec![(ino, old_base.clone(), new_base.clone())];
        while let Some((at, old, new)) = stack.pop() {
            let n = self.node_mut(at)?;
            let is_file = matches!(n.kind, NodeKind::File(_));
            let hub_may_have_old = is_file && (n.remote.is_some() || n.write.status == Status::Uploading);
            if is_file {
                n.remote = None;
                n.write.status = Status::Dirty;
            }
            moved.push(Moved {
                ino: at,
                old_path: old.clone(),
                new_path: new.clone(),
                kind: n.kind.clone(),
                meta: n.meta.local.then_some(n.meta),
                mtime: n.meta.mtime,
                local_dir: n.local_dir,
                hub_may_have_old,
                streaming: n.write.streams > 0,
            });
            let kids: Vec<(String, Ino)> = n.children.iter().map(|(k, v)| (k.clone(), *v)).collect();
            if hub_may_have_old {
                self.tombstones.insert(old.clone());
            }
            self.bump(at);
            for (k, c) in kids {
                stack.push((c, format!("{old}/{k}"), format!("{new}/{k}")));
            }
        }
        let below = format!("{old_base}/");
        if self.tombstones.range(below.clone()..).next().is_some_and(|t| t.starts_with(&below)) {
            self.tombstones.insert(old_base);
        }
        if let Some((_, Some(hub))) = &replaced {
            // The Hub has the replaced file's bytes at the new path: the same content needs no commit.
            if let Some(n) = self.nodes.get_mut(&ino) {
                if !src_dir {
                    n.remote = Some(hub.clone());
                }
            }
            self.tombstones.remove(&new_base);
        }
        Ok(Renamed { moved, replaced: replaced.map(|(r, _)| r) })
    }

    /// Opens a file for writing (counted as a writer until `close_write`).
    pub(super) fn open_write(&mut self, ino: Ino, truncate: bool, fresh: StagingId, cow: bool) -> FsResult<OpenWrite> {
        let n = self.node_mut(ino)?;
        let content = match &n.kind {
            NodeKind::File(c) => c.clone(),
            NodeKind::Dir => return Err(FsError::IsDir),
            NodeKind::Symlink(_) | NodeKind::Special { .. } => {
                return Err(FsError::Invalid("not a regular file".into()))
            }
        };
        if let Some(rx) = &n.filling {
            return Ok(OpenWrite::Wait(rx.clone()));
        }
        let only_writer = n.write.writers == 0;
        n.write.writers += 1;
        let mut let_go = None;
        let answer = match (content, truncate) {
            // The staging file may hold the last acknowledged state (the journal names it): a
            // truncating open writes a fresh one, so a crash half-way through the new bytes
            // cannot tear what was acknowledged. The old one goes once the journal is done
            // with it. (With other writers open on it, they share it: cut in place.)
            (Content::Local { staging, .. }, true) if only_writer => {
                n.kind = NodeKind::File(Content::Local { staging: fresh, size: 0 });
                let_go = Some(staging);
                OpenWrite::Ready { staging: fresh, truncate: true }
            }
            (Content::Local { staging, .. }, true) => {
                n.kind = NodeKind::File(Content::Local { staging, size: 0 });
                OpenWrite::Ready { staging, truncate: true }
            }
            // Likewise a write in place: the lone writer of an acknowledged, uncommitted file
            // writes a copy of it (the journal's record keeps naming the original until this
            // writer's close or fsync names the copy). Committed bytes (`Clean`) are on the Hub
            // already: a crash loses only what was never acknowledged.
            (Content::Local { staging, size }, false) if cow && only_writer && n.write.status != Status::Clean => {
                let (tx, rx) = tokio::sync::watch::channel(None);
                n.filling = Some(rx);
                OpenWrite::Fill { from: FillFrom::Staging { id: staging, size }, staging: fresh, done: tx }
            }
            (Content::Local { staging, .. }, false) => OpenWrite::Ready { staging, truncate: false },
            (Content::Remote(_), true) => {
                n.kind = NodeKind::File(Content::Local { staging: fresh, size: 0 });
                OpenWrite::Ready { staging: fresh, truncate: true }
            }
            (Content::Remote(f), false) if f.size == 0 => {
                n.kind = NodeKind::File(Content::Local { staging: fresh, size: 0 });
                OpenWrite::Ready { staging: fresh, truncate: false }
            }
            (Content::Remote(f), false) => {
                let (tx, rx) = tokio::sync::watch::channel(None);
                n.filling = Some(rx);
                OpenWrite::Fill { from: FillFrom::Remote(f), staging: fresh, done: tx }
            }
        };
        if matches!(answer, OpenWrite::Ready { truncate: true, .. }) {
            let now = SystemTime::now();
            n.write.gen += 1;
            n.write.status = Status::Dirty;
            (n.meta.mtime, n.meta.ctime) = (now, now);
            self.bump(ino);
        }
        self.released.extend(let_go);
        self.view(ino).map(|_| answer)
    }

    /// The fill of a staging file for writing ended: the bytes are local now (or not, on failure).
    pub(super) fn fill_done(&mut self, ino: Ino, staging: StagingId, ok: bool) -> FsResult<()> {
        let n = self.node_mut(ino)?;
        n.filling = None;
        if !ok {
            n.write.writers = n.write.writers.saturating_sub(1);
            self.released.push(staging);
            return Ok(());
        }
        let size = n.size();
        let before = std::mem::replace(&mut n.kind, NodeKind::File(Content::Local { staging, size }));
        if let NodeKind::File(Content::Local { staging: copied, .. }) = before {
            self.released.push(copied);
        }
        Ok(())
    }

    /// A write is about to touch the bytes: the generation moves first, so an upload that
    /// read them meanwhile is never committed.
    pub(super) fn begin_write(&mut self, ino: Ino) -> FsResult<()> {
        let n = self.node_mut(ino)?;
        n.write.gen += 1;
        n.write.inflight += 1;
        n.write.status = Status::Dirty;
        self.bump(ino);
        Ok(())
    }

    /// Bytes written up to `end` (`end` is `None` when the write failed): the size grows, the
    /// generation moves.
    pub(super) fn wrote(&mut self, ino: Ino, end: Option<u64>) -> FsResult<u64> {
        let n = self.node_mut(ino)?;
        n.write.inflight = n.write.inflight.saturating_sub(1);
        let Some(end) = end else { return Ok(n.size()) };
        self.wrote_held(ino, end)
    }

    /// A write, already made, ended at `end` (a write into a held staging file: `begin_write`
    /// and `wrote` together; `wrote` ends with it).
    pub(super) fn wrote_held(&mut self, ino: Ino, end: u64) -> FsResult<u64> {
        let n = self.node_mut(ino)?;
        let NodeKind::File(Content::Local { size, .. }) = n.kind else {
            return Err(FsError::Invalid("write to a file not open for writing".into()));
        };
        self.changed_size(ino, size.max(end))
    }

    /// The bytes of a local file changed (to `size`): times, generation and status follow.
    fn changed_size(&mut self, ino: Ino, size: u64) -> FsResult<u64> {
        let n = self.node_mut(ino)?;
        let NodeKind::File(Content::Local { staging, .. }) = n.kind else {
            return Err(FsError::Invalid("the bytes of this file are not local".into()));
        };
        n.kind = NodeKind::File(Content::Local { staging, size });
        let now = SystemTime::now();
        (n.meta.mtime, n.meta.ctime) = (now, now);
        n.write.gen += 1;
        n.write.status = Status::Dirty;
        self.bump(ino);
        Ok(size)
    }

    /// A new size for a file whose bytes are local (the staging file is already cut or grown).
    pub(super) fn resized(&mut self, ino: Ino, size: u64) -> FsResult<NodeView> {
        self.changed_size(ino, size)?;
        self.view(ino)
    }

    /// A writer closed. A file opened for writing but never changed gives its staging copy up.
    pub(super) fn close_write(&mut self, ino: Ino) -> FsResult<NodeView> {
        let n = self.node_mut(ino)?;
        n.write.writers = n.write.writers.saturating_sub(1);
        if n.write.writers == 0 && n.write.status == Status::Clean {
            if let (NodeKind::File(Content::Local { staging, .. }), Some(remote)) = (&n.kind, &n.remote) {
                let staging = *staging;
                n.kind = NodeKind::File(Content::Remote(remote.clone()));
                self.released.push(staging);
            }
        }
        self.view(ino)
    }

    /// Mode, owner and times (the size goes through `resized`).
    pub(super) fn set_meta(&mut self, ino: Ino, set: &SetAttr) -> FsResult<NodeView> {
        let n = self.node_mut(ino)?;
        let now = SystemTime::now();
        if let Some(mode) = set.mode {
            n.meta.perm = (mode & 0o7777) as u16;
        }
        if let Some(uid) = set.uid {
            n.meta.uid = uid;
        }
        if let Some(gid) = set.gid {
            n.meta.gid = gid;
        }
        if let Some(t) = set.atime {
            n.meta.atime = t.resolve(now);
        }
        if let Some(t) = set.mtime {
            n.meta.mtime = t.resolve(now);
        }
        n.meta.ctime = now;
        n.meta.local = true;
        self.bump(ino);
        self.view(ino)
    }

    /// What is at `path` now, for the flusher.
    pub(super) fn resolve(&self, path: &str) -> AtPath {
        let hub_may_have = self.tombstones.contains(path);
        let Some(n) = self.at_path(path).and_then(|ino| self.nodes.get(&ino).map(|n| (ino, n))) else {
            return AtPath::NoFile { hub_may_have };
        };
        let (ino, n) = n;
        match &n.kind {
            NodeKind::Dir | NodeKind::Symlink(_) | NodeKind::Special { .. } => AtPath::NoFile { hub_may_have },
            NodeKind::File(c) => AtPath::File {
                ino,
                gen: n.write.gen,
                writers: n.write.writers,
                inflight: n.write.inflight,
                content: c.clone(),
                // A second name (hard link) has nothing on the Hub as far as we know.
                remote: n.remote.clone().filter(|_| self.path_of(ino) == path),
                mtime: n.meta.mtime,
            },
        }
    }

    /// Whether `path` still holds what a flush saw (`Some((ino, gen))`), or still nothing.
    pub(super) fn still(&self, path: &str, expect: Option<(Ino, u64)>) -> bool {
        match (self.resolve(path), expect) {
            (AtPath::File { ino, .. }, Some((e, ANY_GEN))) => ino == e,
            (AtPath::File { ino, gen, .. }, Some(e)) => (ino, gen) == e,
            (AtPath::File { .. }, None) => false,
            (AtPath::NoFile { .. }, None) => true,
            (AtPath::NoFile { .. }, Some(_)) => false,
        }
    }

    pub(super) fn uploading(&mut self, ino: Ino, gen: u64, on: bool) {
        if let Some(n) = self.nodes.get_mut(&ino) {
            match (on, n.write.status) {
                (true, Status::Dirty) if n.write.gen == gen => n.write.status = Status::Uploading,
                (false, Status::Uploading) => n.write.status = Status::Dirty,
                _ => {}
            }
        }
    }

    /// The flusher committed `file` at `path` for `(ino, gen)`. If nothing changed since, the
    /// node is clean and reads go to the Hub's copy (the staging file is let go); the kernel
    /// keeps its pages: the bytes are the same.
    pub(super) fn committed(&mut self, path: &str, ino: Ino, gen: u64, file: RemoteFile) {
        // The node's remote half is what the Hub has at its own path: a commit of another of
        // its names (a hard link) says nothing about that one.
        if self.at_path(path) != Some(ino) || self.path_of(ino) != path {
            return;
        }
        let file = Arc::new(file);
        let Some(n) = self.nodes.get_mut(&ino) else { return };
        n.remote = Some(file.clone());
        n.checked_at = Instant::now();
        if n.write.gen == gen && n.write.status != Status::Clean && n.links.is_empty() {
            n.write.status = Status::Clean;
            if n.write.writers == 0 {
                if let NodeKind::File(Content::Local { staging, .. }) = n.kind {
                    n.kind = NodeKind::File(Content::Remote(file));
                    self.released.push(staging);
                }
            }
        }
        self.bump(ino);
    }

    /// The flusher deleted `path` on the Hub.
    pub(super) fn deleted(&mut self, path: &str) {
        self.tombstones.remove(path);
        let mut at = path;
        while let Some((parent, _)) = at.rsplit_once('/') {
            let below = format!("{parent}/");
            let more = self.tombstones.range(below.clone()..).next().is_some_and(|t| t.starts_with(&below));
            if more {
                break;
            }
            self.tombstones.remove(parent);
            at = parent;
        }
    }

    /// The directory at `path`, made (unlisted) where missing, for restored entries.
    fn ensure_dirs(&mut self, path: &str) -> Option<Ino> {
        let mut at = ROOT_INO;
        for part in path.split('/').filter(|p| !p.is_empty()) {
            at = match self.child(at, part) {
                Some(c) if self.nodes.get(&c).is_some_and(|n| n.is_dir()) => c,
                Some(_) => return None,
                None => {
                    let meta = self.defaults.meta(&NodeKind::Dir, None);
                    self.insert_new(at, part, NodeKind::Dir, meta)
                }
            };
        }
        Some(at)
    }

    /// Shows the local state an earlier mount journaled: pending files with their local
    /// content, local directories and symlinks, deletions not yet committed.
    pub(super) fn restore(&mut self, r: Restore) {
        let split = |p: &str| match p.rsplit_once('/') {
            Some((d, n)) => (d.to_string(), n.to_string()),
            None => (String::new(), p.to_string()),
        };
        for (path, meta) in r.dirs {
            if let Some(ino) = self.ensure_dirs(&path) {
                if let Some(n) = self.nodes.get_mut(&ino) {
                    n.local_dir = true;
                    if let Some(m) = meta {
                        n.meta = m;
                    }
                }
            }
        }
        let add = |st: &mut Self, path: &str, kind: NodeKind, meta: Option<Meta>, mtime: SystemTime| -> Option<Ino> {
            let (dir, name) = split(path);
            let parent = st.ensure_dirs(&dir)?;
            if st.child(parent, &name).is_some() {
                tracing::warn!(path, "journal: two entries for one path; keeping the first");
                return None;
            }
            let meta = meta.unwrap_or_else(|| st.defaults.meta(&kind, Some(mtime)));
            Some(st.insert_new(parent, &name, kind, meta))
        };
        for (path, content, meta, mtime) in r.files {
            if let Some(ino) = add(self, &path, NodeKind::File(content), meta, mtime) {
                if let Some(n) = self.nodes.get_mut(&ino) {
                    n.write.status = Status::Dirty;
                    n.write.gen = 1;
                }
            }
        }
        for (path, target, meta) in r.symlinks {
            add(self, &path, NodeKind::Symlink(Arc::from(target.as_str())), meta, SystemTime::now());
        }
        for (path, kind, rdev, meta) in r.specials {
            add(self, &path, NodeKind::Special { kind, rdev }, meta, SystemTime::now());
        }
        self.tombstones.extend(r.deletes);
        for (path, meta) in r.meta {
            match self.at_path(&path).and_then(|i| self.nodes.get_mut(&i)) {
                Some(n) => n.meta = meta,
                None => {
                    self.meta_overlay.insert(path, meta);
                }
            }
        }
    }
}
