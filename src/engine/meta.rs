//! Metadata: lookups (a name under an unlisted directory is resolved with
//! one HEAD), attributes (revalidated past their TTL, unless local state
//! owns them), listings (one level, coalesced), directory handles that page
//! through a snapshot, symlink targets.

use std::sync::Arc;

use super::{check_name, is_os_junk, Engine};
use crate::actors::call_with_timeout;
use crate::actors::inode_table::{Children, InodeMsg, Lookup, NodeKind, NodeView};
use crate::actors::prefetch::{DirSnapshot, Fh, PrefetchMsg};
use crate::actors::revalidator::RevalidatorMsg;
use crate::error::{FsError, FsResult};
use crate::hub::RemoteKind;
use crate::types::{Attr, DirEntry, Hold, Ino};

impl Engine {
    /// The directory holding `ino` (the root is its own parent).
    pub async fn parent(&self, ino: Ino) -> FsResult<Ino> {
        Ok(self.inode(|reply| InodeMsg::Get { ino, reply }).await??.parent)
    }

    pub(super) async fn view(&self, ino: Ino) -> FsResult<NodeView> {
        self.inode(|reply| InodeMsg::Get { ino, reply }).await?
    }

    /// A node's view read from the table without a message (see `InodeView`) when no change
    /// told to it is pending, else asked of the actor: where the caller's own earlier
    /// changes were calls (already applied) or counted tells.
    pub(super) async fn view_settled(&self, ino: Ino) -> FsResult<NodeView> {
        match self.inner.inodes.view(ino) {
            Some(v) => v,
            None => self.view(ino).await,
        }
    }

    /// `getattr` answered at once, without a task or a message, when nothing needs the Hub
    /// (the node is known and fresh) and the mount is working; `None`: call `getattr`.
    pub fn getattr_now(&self, ino: Ino) -> Option<Attr> {
        if self.inner.failure.reason().is_some() {
            return None;
        }
        self.inner.inodes.fresh_attr(ino, self.inner.cfg.metadata_ttl)
    }

    /// Whether a lookup of `raw` in `parent` answers ENOENT without asking anyone: the parent's
    /// listing is fresh and has no such name (a create's lookup, most often). `false`: call
    /// `lookup`, which also answers every error.
    pub fn lookup_missing_now(&self, parent: Ino, raw: &[u8]) -> bool {
        if self.inner.failure.reason().is_some() {
            return false;
        }
        let Ok(name) = check_name(raw) else { return false };
        self.inner.inodes.known_missing(parent, name, self.inner.cfg.metadata_ttl)
    }

    pub async fn getattr(&self, ino: Ino) -> FsResult<Attr> {
        let view = self.view(ino).await?;
        let view = if self.stale(&view) { self.revalidate(view).await? } else { view };
        Ok(view.attr)
    }

    /// Looks `name` (as the kernel gave it) up in `parent`; a success counts as one kernel reference.
    pub async fn lookup(&self, parent: Ino, raw: &[u8]) -> FsResult<Attr> {
        self.lookup_holding(parent, raw, Hold::Count).await
    }

    /// Looks `name` up in `parent`, the answer holding its node as `hold` says.
    pub async fn lookup_holding(&self, parent: Ino, raw: &[u8], hold: Hold) -> FsResult<Attr> {
        let name = check_name(raw)?;
        if self.inner.cfg.filter_os_files && is_os_junk(name) {
            return Err(FsError::NotFound);
        }
        let view = self.lookup_view(parent, name, hold).await?;
        if !self.stale(&view) {
            return Ok(view.attr);
        }
        let ino = view.ino;
        match self.revalidate(view).await {
            Ok(v) => Ok(v.attr),
            Err(e) => {
                if hold == Hold::Count {
                    self.forget(ino, 1);
                }
                Err(e)
            }
        }
    }

    /// The node `name` in `parent`, resolved remotely when the parent is not listed.
    pub(super) async fn lookup_view(&self, parent: Ino, name: &str, hold: Hold) -> FsResult<NodeView> {
        let max_age = self.inner.cfg.metadata_ttl;
        let mut relisted = false;
        loop {
            let answer =
                self.inode(|reply| InodeMsg::Lookup { parent, name: name.to_string(), hold, max_age, reply }).await??;
            return match answer {
                Lookup::Found(view) => Ok(*view),
                Lookup::Missing => Err(FsError::NotFound),
                Lookup::Unknown { path, epoch } => self.resolve_remote(parent, name, path, epoch, hold).await,
                Lookup::Relist { .. } if !relisted => {
                    // Listed again (coalesced with any other listing of it), then answered
                    // from the fresh listing.
                    self.list(parent).await?;
                    relisted = true;
                    continue;
                }
                // Stale again right after its listing (a listing slower than the TTL).
                Lookup::Relist { path, epoch } => self.resolve_remote(parent, name, path, epoch, hold).await,
            };
        }
    }

    /// A name under an unlisted (or stale) directory: HEAD it; if no file, ask whether it is a directory.
    async fn resolve_remote(
        &self,
        parent: Ino,
        name: &str,
        path: String,
        epoch: u64,
        hold: Hold,
    ) -> FsResult<NodeView> {
        let t = self.net_timeout();
        let head = call_with_timeout(
            self.reg(),
            |r| r.revalidator.clone(),
            |reply| RevalidatorMsg::Head { path: path.clone(), reply },
            t,
        )
        .await??;
        let kind = match head {
            Some(file) => RemoteKind::File(file),
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
                    let _ = self.reg().get()?.inode.send_message(InodeMsg::Absent { parent, name, epoch });
                    return Err(FsError::NotFound);
                }
                RemoteKind::Dir
            }
        };
        self.inode(|reply| InodeMsg::Insert { parent, name: name.to_string(), kind: kind.clone(), epoch, hold, reply })
            .await?
    }

    pub fn forget(&self, ino: Ino, n: u64) {
        if let Ok(refs) = self.reg().get() {
            let _ = refs.inode.send_message(InodeMsg::Forget { ino, n });
        }
    }

    /// Holds each of these nodes (entries handed out by `readdirplus`) as `hold` says.
    pub fn hold(&self, inos: Vec<Ino>, hold: Hold) {
        if let Ok(refs) = self.reg().get() {
            let _ = refs.inode.send_message(InodeMsg::Hold { inos, hold });
        }
    }

    /// The children of a directory, listing it (once, coalesced) when needed.
    pub async fn list(&self, ino: Ino) -> FsResult<Vec<DirEntry>> {
        let max_age = self.inner.cfg.metadata_ttl;
        let mut listed_once = false;
        loop {
            let age = if listed_once { None } else { max_age };
            match self.inode(|reply| InodeMsg::Children { ino, max_age: age, reply }).await?? {
                Children::Listed(entries) => {
                    return Ok(entries.into_iter().map(|(name, v)| DirEntry { name, attr: v.attr }).collect());
                }
                Children::NeedsListing { path, epoch } if !listed_once => {
                    let listed = call_with_timeout(
                        self.reg(),
                        |r| r.revalidator.clone(),
                        |reply| RevalidatorMsg::List { path: path.clone(), reply },
                        self.net_timeout(),
                    )
                    .await?;
                    let entries = match listed {
                        Ok(e) => e,
                        // A directory that exists only here (or whose files are all pending) lists as empty.
                        Err(FsError::NotFound) => Vec::new(),
                        Err(e) => return Err(e),
                    };
                    let inval = self
                        .inode(|reply| InodeMsg::ApplyListing {
                            ino,
                            path: path.clone(),
                            epoch,
                            entries: entries.clone(),
                            reply,
                        })
                        .await?;
                    self.forward_invalidations(inval);
                    listed_once = true;
                }
                Children::NeedsListing { .. } => return Err(FsError::Io("directory listing vanished".into())),
            }
        }
    }

    /// Makes every entry below directory `ino` known (a recursive listing), so it can move whole.
    pub(super) async fn materialize(&self, ino: Ino) -> FsResult<()> {
        let view = self.view(ino).await?;
        let entries = match self.inner.remote.list_recursive(&view.path).await {
            Ok(e) => e,
            Err(FsError::NotFound) => Vec::new(),
            Err(e) => return Err(e),
        };
        let (path, epoch) = (view.path.clone(), view.epoch);
        self.inode(|reply| InodeMsg::ApplyTree { ino, path: path.clone(), epoch, entries: entries.clone(), reply })
            .await?
    }

    /// Opens a directory: snapshots its entries, so paging through it costs them once. The
    /// directory counts as open until `releasedir`, which keeps its listing (and so the
    /// snapshot's inode numbers) from being unloaded by the inode table's cap meanwhile.
    pub async fn opendir(&self, ino: Ino) -> FsResult<Fh> {
        self.inode(|reply| InodeMsg::Opened { ino, reply }).await??;
        let opened = async {
            let entries: DirSnapshot = Arc::new(self.list(ino).await?);
            crate::actors::call(
                self.reg(),
                |r| r.prefetch.clone(),
                |reply| PrefetchMsg::OpenDir { entries: entries.clone(), reply },
            )
            .await
        }
        .await;
        if opened.is_err() {
            self.tell_inode(InodeMsg::Closed { ino });
        }
        opened
    }

    pub async fn readdir_snapshot(&self, fh: Fh) -> FsResult<DirSnapshot> {
        crate::actors::call(self.reg(), |r| r.prefetch.clone(), |reply| PrefetchMsg::DirEntries { fh, reply }).await?
    }

    pub fn releasedir(&self, ino: Ino, fh: Fh) {
        if let Ok(refs) = self.reg().get() {
            let _ = refs.prefetch.send_message(PrefetchMsg::ReleaseDir { fh });
            let _ = refs.inode.send_message(InodeMsg::Closed { ino });
        }
    }

    /// The target of a symlink.
    pub async fn readlink(&self, ino: Ino) -> FsResult<String> {
        match self.view(ino).await?.kind {
            NodeKind::Symlink(t) => Ok(t.to_string()),
            _ => Err(FsError::Invalid("not a symlink".into())),
        }
    }
}
