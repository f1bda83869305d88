//! Namespace and attribute changes: mkdir, rmdir, unlink, rename, link,
//! symlink, setattr. Each one changes the inode table (whose rules decide
//! what is allowed), then journals what the Hub must end up with before it
//! returns. On the Hub, a rename is the new name with the same Xet hash plus
//! a deletion of the old one (no bytes re-uploaded); a link is a copy of the
//! same hash. Symlinks, modes, owners, times and empty directories are local
//! to the mount and kept in the journal.

use super::write::{file_records, meta_records, put_record};
use super::{check_name, meta_record, Engine};
use crate::actors::flusher::journal::Record;
use crate::actors::inode_table::{InodeMsg, NodeKind, Owner, Removed};
use crate::actors::prefetch::{Fh, WriteMode};
use crate::error::{FsError, FsResult};
use crate::types::{Attr, FileKind, Hold, Ino, SetAttr, ROOT_INO};

/// The longest symlink target accepted (as Linux's `PATH_MAX`).
const SYMLINK_MAX_BYTES: usize = 4095;

/// How `rename` may treat an existing target.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RenameFlags {
    pub noreplace: bool,
    pub exchange: bool,
    pub whiteout: bool,
}

/// The records for a name taken away: its deletion on the Hub (or nothing to commit if the
/// Hub never had it) and its local attributes.
fn removed_records(r: &Removed) -> Vec<Record> {
    let path = r.path.clone();
    let mut out = match r.kind {
        NodeKind::File(_) if r.hub_may_have => vec![Record::Delete { path: path.clone() }],
        NodeKind::File(_) => vec![Record::Done { path: path.clone() }],
        NodeKind::Symlink(_) => vec![Record::SymlinkGone { path: path.clone() }],
        NodeKind::Special { .. } => vec![Record::SpecialGone { path: path.clone() }],
        NodeKind::Dir => vec![Record::DirGone { path: path.clone() }],
    };
    out.push(Record::MetaGone { path });
    out
}

/// The directory above `path`, which now exists locally whatever the Hub lists.
fn parent_dir_record(path: &str) -> Option<Record> {
    path.rsplit_once('/').map(|(dir, _)| Record::Dir { path: dir.to_string() })
}

impl Engine {
    pub async fn mkdir(&self, parent: Ino, raw: &[u8], mode: u32, uid: u32, gid: u32) -> FsResult<Attr> {
        self.writes()?;
        let name = check_name(raw)?;
        self.refuse_junk(name)?;
        let owner = Owner { perm: (mode & 0o7777) as u16, uid, gid };
        let view = self.inode(|reply| InodeMsg::Mkdir { parent, name: name.to_string(), owner, reply }).await??;
        let mut records = vec![Record::Dir { path: view.path.clone() }];
        if view.meta.local {
            records.push(Record::Meta { path: view.path.clone(), meta: meta_record(&view.meta) });
        }
        self.journal(records).await?;
        Ok(view.attr)
    }

    pub async fn symlink(&self, parent: Ino, raw: &[u8], target: &[u8], uid: u32, gid: u32) -> FsResult<Attr> {
        self.writes()?;
        let name = check_name(raw)?;
        self.refuse_junk(name)?;
        if target.is_empty() || target.len() > SYMLINK_MAX_BYTES {
            return Err(FsError::NameTooLong(target.len()));
        }
        let target = std::str::from_utf8(target).map_err(|_| FsError::Invalid("symlink target is not UTF-8".into()))?;
        let owner = Owner { perm: 0o777, uid, gid };
        let view = self
            .inode(|reply| InodeMsg::Symlink {
                parent,
                name: name.to_string(),
                target: target.to_string(),
                owner,
                reply,
            })
            .await??;
        let mut records = vec![Record::Symlink { path: view.path.clone(), target: target.to_string() }];
        if view.meta.local {
            records.push(Record::Meta { path: view.path.clone(), meta: meta_record(&view.meta) });
        }
        self.journal(records).await?;
        Ok(view.attr)
    }

    /// A node made by `mknod`: a regular file (created empty and committed like any), or a
    /// fifo, socket or device node, which lives on the mount and in its journal only.
    #[allow(clippy::too_many_arguments)]
    pub async fn mknod(
        &self,
        parent: Ino,
        raw: &[u8],
        mode: u32,
        rdev: u32,
        uid: u32,
        gid: u32,
        pid: u32,
    ) -> FsResult<Attr> {
        self.writes()?;
        let Some(kind) = FileKind::special_of_mode(mode) else {
            if mode & libc::S_IFMT != libc::S_IFREG && mode & libc::S_IFMT != 0 {
                return Err(FsError::Invalid(format!("mknod of mode {mode:o}")));
            }
            let (attr, fh) = self.create(parent, raw, mode, uid, gid, pid).await?;
            self.release(fh).await;
            return Ok(attr);
        };
        let name = check_name(raw)?;
        self.refuse_junk(name)?;
        let owner = Owner { perm: (mode & 0o7777) as u16, uid, gid };
        let view =
            self.inode(|reply| InodeMsg::Mknod { parent, name: name.to_string(), kind, rdev, owner, reply }).await??;
        let mut records =
            vec![Record::Special { path: view.path.clone(), kind: kind.special_name().to_string(), rdev }];
        if view.meta.local {
            records.push(Record::Meta { path: view.path.clone(), meta: meta_record(&view.meta) });
        }
        self.journal(records).await?;
        Ok(view.attr)
    }

    /// A second name for a file: the same inode here, a copy of the same content on the Hub.
    pub async fn link(&self, ino: Ino, new_parent: Ino, raw: &[u8]) -> FsResult<Attr> {
        self.writes()?;
        let name = check_name(raw)?;
        self.refuse_junk(name)?;
        let view =
            self.inode(|reply| InodeMsg::Link { ino, parent: new_parent, name: name.to_string(), reply }).await??;
        let path = format!("{}{name}", self.dir_prefix(new_parent).await?);
        if let Some(c) = view.content() {
            let mut records: Vec<Record> = put_record(&path, c, view.attr.mtime).into_iter().collect();
            if view.meta.local {
                records.push(Record::Meta { path, meta: meta_record(&view.meta) });
            }
            self.journal(records).await?;
        }
        Ok(view.attr)
    }

    /// `path/` of a directory ("" for the root).
    async fn dir_prefix(&self, dir: Ino) -> FsResult<String> {
        if dir == ROOT_INO {
            return Ok(String::new());
        }
        Ok(format!("{}/", self.view(dir).await?.path))
    }

    pub async fn unlink(&self, parent: Ino, raw: &[u8]) -> FsResult<()> {
        self.writes()?;
        let name = check_name(raw)?;
        self.lookup_view(parent, name, Hold::None).await?;
        let removed = self.inode(|reply| InodeMsg::Unlink { parent, name: name.to_string(), reply }).await??;
        let mut records = removed_records(&removed);
        records.extend(parent_dir_record(&removed.path));
        self.journal(records).await
    }

    pub async fn rmdir(&self, parent: Ino, raw: &[u8]) -> FsResult<()> {
        self.writes()?;
        let name = check_name(raw)?;
        let child = self.lookup_view(parent, name, Hold::None).await?;
        if !child.attr.is_dir() {
            return Err(FsError::NotDir);
        }
        // Remote children not yet listed count: list it first.
        self.list(child.ino).await?;
        let removed = self.inode(|reply| InodeMsg::Rmdir { parent, name: name.to_string(), reply }).await??;
        let mut records = removed_records(&removed);
        records.extend(parent_dir_record(&removed.path));
        self.journal(records).await
    }

    pub async fn rename(
        &self,
        parent: Ino,
        raw: &[u8],
        new_parent: Ino,
        new_raw: &[u8],
        flags: RenameFlags,
    ) -> FsResult<()> {
        self.writes()?;
        if flags.exchange || flags.whiteout {
            return Err(FsError::Invalid("RENAME_EXCHANGE and RENAME_WHITEOUT are not supported".into()));
        }
        let name = check_name(raw)?;
        let new_name = check_name(new_raw)?;
        self.refuse_junk(new_name)?;
        let src = self.lookup_view(parent, name, Hold::None).await?;
        let target = match self.lookup_view(new_parent, new_name, Hold::None).await {
            Ok(v) => Some(v),
            Err(FsError::NotFound) => None,
            Err(e) => return Err(e),
        };
        if src.attr.is_dir() {
            // The whole subtree moves: everything below must be known first.
            self.materialize(src.ino).await?;
        }
        if let Some(t) = target.as_ref().filter(|t| t.attr.is_dir()) {
            self.list(t.ino).await?;
        }
        let renamed = self
            .inode(|reply| InodeMsg::Rename {
                parent,
                name: name.to_string(),
                new_parent,
                new_name: new_name.to_string(),
                noreplace: flags.noreplace,
                reply,
            })
            .await??;
        let mut records = Vec::new();
        if let Some(r) = &renamed.replaced {
            records.extend(removed_records(r));
        }
        for m in &renamed.moved {
            match &m.kind {
                NodeKind::File(c) => {
                    // A file being streamed is committed at its new path by its close.
                    if !m.streaming {
                        records.extend(put_record(&m.new_path, c, m.mtime));
                    }
                    records.push(if m.hub_may_have_old {
                        Record::Delete { path: m.old_path.clone() }
                    } else {
                        Record::Done { path: m.old_path.clone() }
                    });
                }
                NodeKind::Symlink(t) => {
                    records.push(Record::SymlinkGone { path: m.old_path.clone() });
                    records.push(Record::Symlink { path: m.new_path.clone(), target: t.to_string() });
                }
                NodeKind::Special { kind, rdev } => {
                    records.push(Record::SpecialGone { path: m.old_path.clone() });
                    records.push(Record::Special {
                        path: m.new_path.clone(),
                        kind: kind.special_name().to_string(),
                        rdev: *rdev,
                    });
                }
                NodeKind::Dir => {
                    records.push(Record::DirGone { path: m.old_path.clone() });
                    records.push(Record::Dir { path: m.new_path.clone() });
                }
            }
            records.push(Record::MetaGone { path: m.old_path.clone() });
            if let Some(meta) = &m.meta {
                records.push(Record::Meta { path: m.new_path.clone(), meta: meta_record(meta) });
            }
        }
        if let Some(first) = renamed.moved.first() {
            records.extend(parent_dir_record(&first.old_path));
        }
        self.journal(records).await
    }

    /// Mode, owner, times and size. A size change makes the bytes local (filled from the Hub
    /// first, unless cut to zero) and is committed like a write.
    pub async fn setattr(&self, ino: Ino, fh: Option<Fh>, set: SetAttr) -> FsResult<Attr> {
        self.writes()?;
        let mut view = self.view(ino).await?;
        if let Some(size) = set.size {
            if view.attr.is_dir() {
                return Err(FsError::IsDir);
            }
            if size > super::write::MAX_FILE_BYTES {
                return Err(FsError::TooBig(format!("{size} bytes")));
            }
            if let Some(fh) = fh {
                let (_, wh) = self.write_info(fh, false).await?;
                if let Some(wh) = wh.filter(|w| w.mode == WriteMode::Stream) {
                    // A stream can grow (preallocation: zeros, overwritten in order or sent at
                    // close), never be cut below what it already sent.
                    let streamed = match &wh.stream {
                        Some(s) => Some(s.lock().await).filter(|s| !s.ended()).map(|s| s.next),
                        None => None,
                    };
                    if streamed.is_some_and(|next| size < next) {
                        tracing::warn!(path = %view.path, size, "truncate below what was already streamed refused (EINVAL); mount with --advanced-writes");
                        return Err(FsError::Invalid("truncate while streaming".into()));
                    }
                }
            }
            if size != view.attr.size || view.content().and_then(|c| c.staging()).is_some() {
                let staging = self.make_local(&view, size == 0, true).await?;
                let cut = async {
                    self.writes()?.staging.set_len(staging, size).await?;
                    self.inode(|reply| InodeMsg::Resized { ino, size, reply }).await?
                }
                .await;
                let _ = self.inode(|reply| InodeMsg::CloseWrite { ino, reply }).await;
                view = cut?;
                self.journal(file_records(&view)).await?;
            }
        }
        let meta = SetAttr { size: None, ..set };
        if meta != SetAttr::default() {
            view = self.inode(|reply| InodeMsg::SetMeta { ino, set: meta.clone(), reply }).await??;
            self.journal(meta_records(&view)).await?;
        }
        Ok(view.attr)
    }

    /// What `statfs` reports: a large, empty file system for writable mounts (the Hub's
    /// capacity is not known; tools that check free space must not refuse), none for read-only.
    pub fn statfs(&self) -> StatFs {
        const BLOCK: u64 = 1 << 20;
        let blocks = if self.writable() { 1 << 30 } else { 0 };
        StatFs {
            block_bytes: BLOCK,
            blocks,
            free: blocks,
            files: 1 << 32,
            files_free: if self.writable() { 1 << 32 } else { 0 },
        }
    }
}

/// File system capacity as `statfs` reports it.
#[derive(Clone, Copy, Debug)]
pub struct StatFs {
    pub block_bytes: u64,
    pub blocks: u64,
    pub free: u64,
    pub files: u64,
    pub files_free: u64,
}
