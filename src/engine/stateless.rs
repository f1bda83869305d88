//! Writes by inode, for a stateless protocol (NFS): there is no open or close,
//! so each WRITE is a whole open–write–close of the file's staging copy, and
//! is journaled before it returns. The flusher then commits the file once it
//! has been quiet for the debounce (or the batch window has passed), as for a
//! closed file in advanced mode. How durable a write is when it returns is the
//! caller's choice ([`Durability`]); `sync_file` makes earlier ones durable.

use bytes::Bytes;

use super::write::{file_records, MAX_FILE_BYTES};
use super::Engine;
use crate::actors::flusher::journal::Record;
use crate::actors::flusher::FlushMsg;
use crate::actors::inode_table::InodeMsg;
use crate::error::{FsError, FsResult};
use crate::types::{Attr, Durability, Ino, SetAttr, TimeSet};

/// Exclusive-create verifiers are kept in a new file's atime and mtime seconds (as Linux's NFS
/// server does): durable with the file's attributes, replaced by the client's SETATTR after.
fn verifier_times(verifier: [u8; 8]) -> (std::time::SystemTime, std::time::SystemTime) {
    let secs = |b: &[u8]| u64::from(u32::from_be_bytes(b.try_into().expect("4 bytes")));
    let at = |s| std::time::UNIX_EPOCH + std::time::Duration::from_secs(s);
    (at(secs(&verifier[..4])), at(secs(&verifier[4..])))
}

impl Engine {
    /// Writes `data` at `offset` of a file, without an open handle. Answers the attributes after.
    pub async fn write_ino(&self, ino: Ino, offset: u64, data: Bytes, durability: Durability) -> FsResult<Attr> {
        let w = self.writes()?;
        let end = offset
            .checked_add(data.len() as u64)
            .filter(|e| *e <= MAX_FILE_BYTES)
            .ok_or_else(|| FsError::TooBig(format!("a write ending past {MAX_FILE_BYTES} bytes")))?;
        let view = self.inode(|reply| InodeMsg::Opened { ino, reply }).await??;
        let written = async {
            if view.attr.is_dir() {
                return Err(FsError::IsDir);
            }
            if view.content().is_none() {
                return Err(FsError::Invalid("not a regular file".into()));
            }
            let staging = self.make_local(&view, false, false).await?;
            let written = async {
                self.inode(|reply| InodeMsg::BeginWrite { ino, reply }).await??;
                let put = w.staging.write_at(staging, offset, data).await;
                let end = put.as_ref().ok().map(|_| end);
                self.inode(|reply| InodeMsg::Wrote { ino, end, reply }).await??;
                put?;
                if durability == Durability::Disk {
                    w.staging.sync(staging).await?;
                }
                let view = self.view(ino).await?;
                let mut records = file_records(&view);
                // The client's handle names this file after a restart too, while the write is pending.
                records.push(Record::Handle { path: view.path.clone(), boot: self.boot(), ino });
                self.journal(records).await?;
                Ok(view.attr)
            }
            .await;
            let _ = self.inode(|reply| InodeMsg::CloseWrite { ino, reply }).await;
            written
        }
        .await;
        self.tell_inode(InodeMsg::Closed { ino });
        let attr = written?;
        if durability == Durability::Disk {
            self.sync_journal().await?;
        }
        Ok(attr)
    }

    /// Makes every earlier write to a file durable (its staging copy and the journal synced).
    pub async fn sync_file(&self, ino: Ino) -> FsResult<Attr> {
        let w = self.writes()?;
        let view = self.view(ino).await?;
        if let Some(staging) = view.content().and_then(|c| c.staging()) {
            w.staging.sync(staging).await?;
        }
        self.sync_journal().await?;
        Ok(view.attr)
    }

    /// Puts the journal on stable storage: every change acknowledged so far survives a power loss.
    pub async fn sync_journal(&self) -> FsResult<()> {
        self.flusher(|reply| FlushMsg::Fsync { path: None, reply }).await?
    }

    /// Creates an empty file (not left open). Answers `Exists` when the name is taken.
    pub async fn create_closed(&self, parent: Ino, raw: &[u8], mode: u32, uid: u32, gid: u32) -> FsResult<Attr> {
        let (attr, fh) = self.create(parent, raw, mode, uid, gid, 0).await?;
        self.release(fh).await;
        Ok(attr)
    }

    /// An exclusive create that a retransmission can repeat: the file keeps `verifier`, and a
    /// second create of the same name with the same verifier answers the same file. Another
    /// verifier, or a file made otherwise, is `Exists`.
    pub async fn create_exclusive(
        &self,
        parent: Ino,
        raw: &[u8],
        verifier: [u8; 8],
        uid: u32,
        gid: u32,
    ) -> FsResult<Attr> {
        let (atime, mtime) = verifier_times(verifier);
        match self.create_closed(parent, raw, 0o644, uid, gid).await {
            Ok(attr) => {
                let set =
                    SetAttr { atime: Some(TimeSet::At(atime)), mtime: Some(TimeSet::At(mtime)), ..SetAttr::default() };
                self.setattr(attr.ino, None, set).await
            }
            Err(FsError::Exists) => {
                let attr = self.lookup(parent, raw).await?;
                self.forget(attr.ino, 1);
                let same = attr.kind == crate::types::FileKind::File
                    && attr.size == 0
                    && attr.atime == atime
                    && attr.mtime == mtime;
                if same {
                    Ok(attr)
                } else {
                    Err(FsError::Exists)
                }
            }
            Err(e) => Err(e),
        }
    }
}
