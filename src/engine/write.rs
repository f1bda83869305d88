//! Opening, writing and closing files. Two write modes:
//! - streaming (the default for new and truncated files): bytes go into an
//!   upload as they arrive, with a copy in a staging file for reads; `close`
//!   finishes the upload and commits, returning only once committed;
//! - staged (`--advanced-writes`, and in every mode for an existing file
//!   opened without `O_TRUNC`): random writes into a staging file, committed
//!   by the flusher once quiet (at close itself in the default mode).
//!
//! A change is journaled when it is acknowledged (close, fsync), so a crash
//! never commits a state no one was told was written.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{check_name, is_os_junk, meta_record, Engine};
use crate::actors::call_with_timeout;
use crate::actors::flusher::cycle::{add_line, remote_file, Commit};
use crate::actors::flusher::journal::{PutRec, Record};
use crate::actors::flusher::FlushMsg;
use crate::actors::inode_table::{Content, FillFrom, InodeMsg, NodeKind, NodeView, OpenWrite, Owner};
use crate::actors::prefetch::{Fh, PrefetchMsg, WriteHandle, WriteMode};
use crate::error::{FsError, FsResult};
use crate::hub::{RemoteFile, StreamingUpload};
use crate::types::{Attr, Ino, OpenMode, StagingId};

/// Bytes fetched at a time when filling a staging file with a file's remote bytes.
const FILL_CHUNK_BYTES: u64 = 16 << 20;
/// The largest file a write may make (as ext4's limit).
pub const MAX_FILE_BYTES: u64 = 16 << 40;

/// The copy a frontend makes of a write's bytes (its one copy out of the kernel's buffer):
/// laid out so that a streamed file's staging copy can be written past the page cache.
pub fn write_buffer(data: &[u8]) -> Bytes {
    crate::actors::flusher::staging::aligned_copy(data)
}

/// The journal record saying `path` holds `content` (an acknowledged state).
pub(super) fn put_record(path: &str, content: &Content, mtime: std::time::SystemTime) -> Option<Record> {
    let mtime = super::nanos(mtime);
    let put = match content {
        Content::Local { staging, size } => {
            PutRec { staging: Some(*staging), hash: None, data: None, size: *size, mtime }
        }
        Content::Remote(f) => {
            PutRec { staging: None, hash: Some(f.xet_hash.clone()?), data: None, size: f.size, mtime }
        }
    };
    Some(Record::Put { path: path.to_string(), put })
}

/// The records for a file's acknowledged state: its content, and its attributes if local.
pub(super) fn file_records(view: &NodeView) -> Vec<Record> {
    let mut out = Vec::new();
    if let Some(c) = view.content() {
        // Every name of the file holds the new bytes.
        for path in std::iter::once(&view.path).chain(&view.other_paths) {
            out.extend(put_record(path, c, view.attr.mtime));
        }
    }
    out.extend(meta_records(view));
    out
}

/// The local attributes of a node, for each of its names (none when it has none of its own).
pub(super) fn meta_records(view: &NodeView) -> Vec<Record> {
    if !view.meta.local {
        return Vec::new();
    }
    std::iter::once(&view.path)
        .chain(&view.other_paths)
        .map(|p| Record::Meta { path: p.clone(), meta: meta_record(&view.meta) })
        .collect()
}

impl Engine {
    async fn prefetch<T: Send + 'static>(&self, build: impl Fn(crate::actors::Reply<T>) -> PrefetchMsg) -> FsResult<T> {
        crate::actors::call(self.reg(), |r| r.prefetch.clone(), build).await
    }

    /// A file handle's inode and write side. Read from the handle table without a message
    /// when that answer cannot be stale in a way that matters: a handle is read-only or
    /// writable for life, and its flags only lag a message still queued to the actor. With
    /// `flags` (a close or an fsync, which act on them), a handle not marked written is asked
    /// of the actor, which has then seen every `MarkWrote` sent before (its mailbox keeps
    /// order): a `wrote` read too early made a close skip its commit. One marked written may
    /// only have a `MarkCommitted` queued, and committing it again is harmless.
    pub(super) async fn write_info(&self, fh: Fh, flags: bool) -> FsResult<(Ino, Option<WriteHandle>)> {
        match self.inner.handles.write_info(fh) {
            Some((ino, None)) => return Ok((ino, None)),
            Some((ino, Some(wh))) if !flags || wh.wrote => return Ok((ino, Some(wh))),
            _ => {}
        }
        self.prefetch(|reply| PrefetchMsg::WriteInfo { fh, reply }).await?
    }

    /// Opens a file; `flags` as for open(2), `pid` the opener (commits at close are its).
    /// The answer says whether the kernel may keep its cached pages.
    pub async fn open(&self, ino: Ino, flags: i32, pid: u32) -> FsResult<(Fh, bool)> {
        let mode = OpenMode::from_flags(flags);
        if mode.write {
            self.writes()?;
        }
        let view = self.inode(|reply| InodeMsg::Opened { ino, reply }).await??;
        let opened = if mode.write { self.open_write(view, mode, pid).await } else { self.open_read(view).await };
        if opened.is_err() {
            self.tell_inode(InodeMsg::Closed { ino });
        }
        opened
    }

    async fn open_read(&self, view: NodeView) -> FsResult<(Fh, bool)> {
        let view = if self.stale(&view) { self.revalidate(view).await? } else { view };
        let file = match &view.kind {
            NodeKind::File(Content::Remote(f)) => Some(f.clone()),
            NodeKind::File(Content::Local { .. }) => None,
            NodeKind::Dir => return Err(FsError::IsDir),
            NodeKind::Symlink(_) | NodeKind::Special { .. } => {
                return Err(FsError::Invalid("not a regular file".into()))
            }
        };
        let (ino, path) = (view.ino, view.path.clone());
        let fh = self
            .prefetch(|reply| PrefetchMsg::OpenFile { ino, path: path.clone(), file: file.clone(), write: None, reply })
            .await?;
        // Pages cached under an earlier open may hold bytes the Hub has since replaced.
        let keep = self.inode(|reply| InodeMsg::KernelCache { ino, reply }).await?;
        Ok((fh, keep))
    }

    async fn open_write(&self, view: NodeView, mode: OpenMode, pid: u32) -> FsResult<(Fh, bool)> {
        let w = self.writes()?;
        if view.attr.is_dir() {
            return Err(FsError::IsDir);
        }
        let staging = self.make_local(&view, mode.truncate, true).await?;
        let stream = (!w.advanced && mode.truncate)
            .then(|| Arc::new(tokio::sync::Mutex::new(StreamingUpload::start(w.uploader.clone(), view.path.clone()))));
        let handle = WriteHandle {
            mode: if stream.is_some() { WriteMode::Stream } else { WriteMode::Staged },
            staging,
            pid,
            created: false,
            truncated: mode.truncate,
            wrote: false,
            stream,
        };
        let _ = self.reg().get()?.prefetch.send_message(PrefetchMsg::Retarget { ino: view.ino, file: None });
        match self.open_handle(&view, handle).await {
            Ok(fh) => Ok((fh, true)),
            Err(e) => {
                let ino = view.ino;
                let _ = self.inode(|reply| InodeMsg::CloseWrite { ino, reply }).await;
                Err(e)
            }
        }
    }

    /// A handle for writing to `view`'s file (a stream counted on the node).
    async fn open_handle(&self, view: &NodeView, handle: WriteHandle) -> FsResult<Fh> {
        let (ino, path) = (view.ino, view.path.clone());
        if handle.stream.is_some() {
            self.tell_inode(InodeMsg::Streaming { ino, on: true });
        }
        self.prefetch(|reply| PrefetchMsg::OpenFile {
            ino,
            path: path.clone(),
            file: None,
            write: Some(handle.clone()),
            reply,
        })
        .await
    }

    /// Makes a file's bytes local for writing (counting one more writer): its staging file,
    /// filled from the Hub's bytes unless `truncate` (`cow`: see `InodeMsg::OpenWrite`). The
    /// fill runs in this caller's task; other operations on the mount carry on meanwhile.
    pub(super) async fn make_local(&self, view: &NodeView, truncate: bool, cow: bool) -> FsResult<StagingId> {
        let w = self.writes()?;
        let ino = view.ino;
        let deadline = self.net_timeout() * 4;
        loop {
            let fresh = w.staging.reserve();
            let opened = self.inode(|reply| InodeMsg::OpenWrite { ino, truncate, fresh, cow, reply }).await?;
            match &opened {
                Ok(OpenWrite::Ready { staging, .. } | OpenWrite::Fill { staging, .. }) if *staging == fresh => {}
                _ => w.staging.unreserve(fresh),
            }
            match opened? {
                OpenWrite::Ready { staging, truncate } => {
                    if truncate {
                        w.staging.set_len(staging, 0).await?;
                    } else {
                        w.staging.ensure(staging)?;
                    }
                    return Ok(staging);
                }
                OpenWrite::Fill { from, staging, done } => {
                    let filled = match from {
                        FillFrom::Remote(file) => self.fill(&view.path, &file, staging).await,
                        FillFrom::Staging { id, size } => w.staging.copy(id, staging, size).await,
                    };
                    let ok = filled.is_ok();
                    let _ = self.inode(|reply| InodeMsg::FillDone { ino, staging, ok, reply }).await;
                    let _ = done.send(Some(filled.clone().map_err(|e| e.to_string())));
                    if let Err(e) = &filled {
                        tracing::warn!(path = %view.path, "cannot fill a staging copy for writing: {e}");
                    }
                    return filled.map(|_| staging);
                }
                OpenWrite::Wait(mut rx) => {
                    let waited = tokio::time::timeout(deadline, rx.wait_for(|v| v.is_some())).await;
                    if waited.is_err() {
                        return Err(FsError::TimedOut(deadline, format!("{}: another fill", view.path)));
                    }
                }
            }
        }
    }

    /// Copies a file's remote bytes into a staging file (through the chunk cache).
    async fn fill(&self, path: &str, file: &Arc<RemoteFile>, staging: StagingId) -> FsResult<()> {
        let w = self.writes()?;
        w.staging.set_len(staging, 0).await?;
        let mut at = 0;
        while at < file.size {
            let end = (at + FILL_CHUNK_BYTES).min(file.size);
            let bytes = self.fetch(path, file, at..end).await?;
            w.staging.write_at(staging, at, bytes).await?;
            at = end;
        }
        Ok(())
    }

    /// Creates a file and opens it for writing.
    #[allow(clippy::too_many_arguments)]
    pub async fn create(
        &self,
        parent: Ino,
        raw: &[u8],
        mode: u32,
        uid: u32,
        gid: u32,
        pid: u32,
    ) -> FsResult<(Attr, Fh)> {
        let w = self.writes()?;
        let name = check_name(raw)?;
        self.refuse_junk(name)?;
        let staging = w.staging.reserve();
        let owner = Owner { perm: (mode & 0o7777) as u16, uid, gid };
        let view =
            match self.inode(|reply| InodeMsg::Create { parent, name: name.to_string(), owner, staging, reply }).await?
            {
                Ok(v) => v,
                Err(e) => {
                    w.staging.remove(staging);
                    return Err(e);
                }
            };
        let stream = (!w.advanced)
            .then(|| Arc::new(tokio::sync::Mutex::new(StreamingUpload::start(w.uploader.clone(), view.path.clone()))));
        let handle = WriteHandle {
            mode: if stream.is_some() { WriteMode::Stream } else { WriteMode::Staged },
            staging,
            pid,
            created: true,
            truncated: false,
            wrote: false,
            stream,
        };
        let fh = self.open_handle(&view, handle).await?;
        Ok((view.attr, fh))
    }

    pub(super) fn refuse_junk(&self, name: &str) -> FsResult<()> {
        if self.inner.cfg.filter_os_files && is_os_junk(name) {
            tracing::info!(name, "refused an OS metadata file (mount with --no-filter-os-files to allow it)");
            return Err(FsError::NotPermitted(format!("{name:?} is an OS metadata file")));
        }
        Ok(())
    }

    /// Writes `data` at `offset` through a handle open for writing.
    pub async fn write(&self, fh: Fh, offset: u64, data: Bytes) -> FsResult<u32> {
        self.writes()?;
        let (ino, wh) = self.write_info(fh, false).await?;
        let wh = wh.ok_or_else(|| FsError::Invalid("not open for writing".into()))?;
        let end = offset
            .checked_add(data.len() as u64)
            .filter(|e| *e <= MAX_FILE_BYTES)
            .ok_or_else(|| FsError::TooBig(format!("a write ending past {MAX_FILE_BYTES} bytes")))?;
        let len = data.len() as u32;
        self.inode(|reply| InodeMsg::BeginWrite { ino, reply }).await??;
        let written = self.write_bytes(ino, &wh, offset, data).await;
        let end = written.as_ref().ok().map(|_| end);
        self.inode(|reply| InodeMsg::Wrote { ino, end, reply }).await??;
        written?;
        if !wh.wrote {
            let _ = self.reg().get()?.prefetch.send_message(PrefetchMsg::MarkWrote { fh });
        }
        Ok(len)
    }

    /// A write answered on the calling (frontend) thread, without a task: through a staged
    /// handle (not a stream) into a staging file held in memory that stays held (no I/O,
    /// nothing that waits). The inode table is told after the bytes went in and before the
    /// answer, counted (`InodeView::unsettled`) so that what reads the table without a message
    /// asks the actor until it has applied it. `None`: [`Self::write`] it.
    pub fn write_now(&self, fh: Fh, offset: u64, data: &[u8]) -> Option<FsResult<u32>> {
        let w = self.writes().ok()?;
        let Some((ino, Some(wh))) = self.inner.handles.write_info(fh) else { return None };
        let end = offset.checked_add(data.len() as u64)?;
        if wh.stream.is_some() || end > MAX_FILE_BYTES || data.is_empty() {
            return None;
        }
        let refs = self.reg().get().ok()?;
        if !w.staging.write_held(wh.staging, offset, data) {
            return None;
        }
        let settle = self.inner.inodes.unsettled();
        if refs.inode.send_message(InodeMsg::WroteHeld { ino, end, settle }).is_err() {
            return Some(Err(FsError::Io("the inode table is not running".into())));
        }
        if !wh.wrote {
            let _ = refs.prefetch.send_message(PrefetchMsg::MarkWrote { fh });
        }
        Some(Ok(data.len() as u32))
    }

    /// Puts a write's bytes in the staging file (and into the upload, for a stream).
    async fn write_bytes(&self, ino: Ino, wh: &WriteHandle, offset: u64, bytes: Bytes) -> FsResult<()> {
        let w = self.writes()?;
        let streamed = match &wh.stream {
            Some(s) => {
                let mut s = s.lock().await;
                if s.ended() {
                    false // committed at an earlier close: later writes are staged
                } else {
                    if offset != s.next {
                        let path = self.view(ino).await.map(|v| v.path).unwrap_or_default();
                        tracing::warn!(
                            path,
                            offset,
                            expected = s.next,
                            "non-sequential write on a streaming handle refused (EINVAL); \
                             mount with --advanced-writes for random writes"
                        );
                        return Err(FsError::Invalid("non-sequential write in streaming mode".into()));
                    }
                    // The copy kept for reads and the upload go on side by side.
                    let (kept, sent) =
                        tokio::join!(w.staging.write_kept(wh.staging, offset, bytes.clone()), s.send(bytes.clone()));
                    kept?;
                    if let Err(e) = sent {
                        let path = self.view(ino).await.map(|v| v.path).unwrap_or_default();
                        tracing::error!(path, "streaming upload failed: {e}");
                        return Err(e.into());
                    }
                    true
                }
            }
            None => false,
        };
        if !streamed {
            w.staging.write_at(wh.staging, offset, bytes).await?;
        }
        Ok(())
    }

    /// `close(2)` of a descriptor: commits what the handle wrote (streaming: the upload is
    /// finished and committed; default mode: the staged file is committed now; advanced:
    /// journaled, committed by the flusher). A flush from another process than the opener, or
    /// with nothing written, leaves the commit to the last release.
    pub async fn flush(&self, fh: Fh, pid: u32) -> FsResult<()> {
        let Ok((ino, Some(wh))) = self.write_info(fh, true).await else {
            return Ok(());
        };
        if wh.pid != pid {
            return Ok(());
        }
        self.commit_handle(fh, ino, &wh, true).await
    }

    /// A `close`'s flush answered on the calling (frontend) thread, without a task, known from
    /// the handle table: one with nothing to do (a descriptor not open for writing, or another
    /// process's close of a written one: the hop to the runtime and back was most of its
    /// time), and in advanced mode one of a handle that wrote to a file the inode table shows
    /// settled, with no commit failure to report. Its records go into the journal here (the
    /// held bytes with them), then the flusher is told (`FlushMsg::Recorded`): acknowledged as
    /// the flusher's own append would be. `None`: [`Self::flush`] it.
    pub fn flush_now(&self, fh: Fh, pid: u32) -> Option<FsResult<()>> {
        let (ino, wh) = match self.inner.handles.write_info(fh)? {
            (_, None) => return Some(Ok(())),
            (_, Some(wh)) if wh.pid != pid => return Some(Ok(())),
            (ino, Some(wh)) => (ino, wh),
        };
        let w = self.writes().ok()?;
        if !w.advanced || wh.stream.is_some() || !wh.wrote {
            return None;
        }
        if w.failed.load(std::sync::atomic::Ordering::Acquire) > 0 {
            return None; // an earlier failure may be this file's, reported by `flush`
        }
        let view = self.inner.inodes.view(ino)?.ok()?;
        let refs = self.reg().get().ok()?;
        let flusher = refs.flusher.clone()?;
        let mut records = file_records(&view);
        w.staging.carry_held(&mut records);
        let seq = match w.journal.lock().append(&records) {
            Ok(seq) => seq,
            Err(e) => return Some(Err(FsError::io("journal write", e))),
        };
        if flusher.send_message(FlushMsg::Recorded { records, seq }).is_err() {
            // Journaled: a restarted flusher rebuilds its pending set from the journal, and a
            // mount going away leaves it to the next one.
            tracing::warn!(path = %view.path, "the flusher is not running: the journal keeps the file for it");
        }
        let _ = refs.prefetch.send_message(PrefetchMsg::MarkCommitted { fh });
        Some(Ok(()))
    }

    /// Commits a write handle's changes; `at_close`: the writer waits for the answer.
    async fn commit_handle(&self, fh: Fh, ino: Ino, wh: &WriteHandle, at_close: bool) -> FsResult<()> {
        let w = self.writes()?;
        let started = Instant::now();
        // A close waits for its commit up to 8 of the mount's deadlines, all told.
        let commit_deadline = self.inner.remote.hub.deadline() * 8;
        let mut stream_failed = None;
        if let Some(s) = &wh.stream {
            let mut s = s.lock().await;
            if !s.ended() {
                if at_close && !wh.wrote {
                    return Ok(()); // nothing written yet: the last release commits
                }
                let r = self.commit_stream(ino, &mut s).await;
                let _ = self.reg().get()?.inode.send_message(InodeMsg::Streaming { ino, on: false });
                if r.is_ok() {
                    let _ = self.reg().get()?.prefetch.send_message(PrefetchMsg::MarkCommitted { fh });
                    return Ok(());
                }
                // The staging copy is whole: it is committed as the default mode commits a
                // staged file (the flusher retries, the writer waits within the commit
                // deadline), so a Hub that fails for a moment (a 503, a restart) does not
                // fail the close. If that fails too, the stream's error is the answer.
                stream_failed = r.err();
            }
        }
        if !wh.dirty() && stream_failed.is_none() {
            return Ok(());
        }
        let (paths, failure) = self.journal_staged(ino).await?;
        let _ = self.reg().get()?.prefetch.send_message(PrefetchMsg::MarkCommitted { fh });
        if w.advanced {
            // The commit comes later; one that failed before is reported now.
            return match failure {
                Some(e) if at_close => Err(e),
                _ => Ok(()),
            };
        }
        // The default mode commits at close: the writer waits for it.
        let path = paths[0].clone();
        if !at_close {
            if let Some(f) = self.reg().get()?.flusher {
                let _ = f.send_message(FlushMsg::FlushNow { paths, reply: crate::actors::Reply::unwatched() });
            }
            return stream_failed.map_or(Ok(()), Err);
        }
        let left = commit_deadline.saturating_sub(started.elapsed());
        if left.is_zero() {
            return stream_failed.map_or(Ok(()), Err);
        }
        let r = call_with_timeout(
            self.reg(),
            |r| r.flusher.clone().expect("writable"),
            |reply| FlushMsg::FlushNow { paths: paths.clone(), reply },
            left,
        )
        .await
        .and_then(|r| r);
        if let Err(e) = &r {
            tracing::error!(path, "commit at close failed (kept locally, retried in the background): {e}");
            if let Some(first) = stream_failed {
                return Err(first);
            }
        }
        r
    }

    /// Journals a file's current state (its staging file and size, and local attributes):
    /// acknowledged, so a crash after this commits it. Returns its paths (the first is its
    /// own) and the last failure to commit it, if any.
    async fn journal_staged(&self, ino: Ino) -> FsResult<(Vec<String>, Option<FsError>)> {
        // Read without a message unless a write answered at once is not applied yet.
        let view = self.view_settled(ino).await?;
        let failure = self.journal_and_failure(file_records(&view)).await?;
        Ok((std::iter::once(view.path).chain(view.other_paths).collect(), failure))
    }

    /// Finishes a streamed file's upload and commits it (in the flusher's next batch).
    async fn commit_stream(&self, ino: Ino, s: &mut StreamingUpload) -> FsResult<()> {
        // A file grown by truncate past what was streamed (preallocated) ends in zeros.
        let size = self.view(ino).await?.attr.size;
        if size < s.next {
            s.abort();
            return Err(FsError::Again("cut below what was streamed".into()));
        }
        while s.next < size {
            let n = (size - s.next).min(1 << 20) as usize;
            if let Err(e) = s.send(Bytes::from(vec![0u8; n])).await {
                return Err(e.into());
            }
        }
        let up = match s.finish().await {
            Ok(up) => up,
            Err(e) => {
                let path = self.view(ino).await.map(|v| v.path).unwrap_or_default();
                tracing::error!(path, "upload failed at close: {e}");
                return Err(e.into());
            }
        };
        let view = self.view(ino).await?;
        if up.size != view.attr.size {
            // Written through another handle too: the staged copy is what counts.
            return Err(FsError::Again(format!("{}: changed through another handle", view.path)));
        }
        let (path, gen, mtime) = (view.path.clone(), view.write.gen, view.attr.mtime);
        let remote = self.inner.remote.clone();
        let line = add_line(&remote, &path, &up.xet_hash, mtime);
        let file = remote_file(&up, mtime);
        let r = call_with_timeout(
            self.reg(),
            |r| r.flusher.clone().expect("writable"),
            |reply| FlushMsg::CommitStream {
                commit: Commit {
                    path: path.clone(),
                    seq: None,
                    line: line.clone(),
                    expect: Some((ino, gen)),
                    file: Some(file.clone()),
                    reply: Some(reply),
                    snapshot: false,
                },
            },
            self.net_timeout() * 2,
        )
        .await
        .and_then(|r| r);
        if let Err(e) = &r {
            tracing::error!(path, "commit at close failed: {e}");
            return r;
        }
        // Its other names (hard links made while it streamed) hold the same bytes.
        let view = self.view(ino).await?;
        if let Some(c) = view.content() {
            let records = view.other_paths.iter().filter_map(|p| put_record(p, c, view.attr.mtime)).collect();
            self.journal(records).await?;
        }
        r
    }

    /// `fsync(2)`: the file's bytes and the journal are on disk when this returns; the upload
    /// is not waited for. A commit that failed for this file is reported here.
    pub async fn fsync(&self, fh: Fh) -> FsResult<()> {
        let w = self.writes()?;
        let (ino, wh) = self.write_info(fh, true).await?;
        let Some(wh) = wh else { return Ok(()) };
        w.staging.sync(wh.staging).await?;
        let view = self.view(ino).await?;
        if wh.dirty() {
            self.journal(file_records(&view)).await?;
        }
        let path = view.path.clone();
        self.flusher(|reply| FlushMsg::Fsync { path: Some(path.clone()), reply }).await?
    }

    /// Lets a handle not open for writing go without waiting (its release commits nothing):
    /// the messages are queued before this returns, so later requests find them handled.
    /// `false`: a write handle, or none; [`Self::release`] it.
    pub fn release_read_now(&self, fh: Fh) -> bool {
        let Some((ino, None)) = self.inner.handles.write_info(fh) else { return false };
        let Ok(refs) = self.reg().get() else { return false };
        let _ = refs.prefetch.send_message(PrefetchMsg::ReleaseFile { fh, reply: crate::actors::Reply::unwatched() });
        let _ = refs.inode.send_message(InodeMsg::Closed { ino });
        true
    }

    /// The last close of a handle: commits what a deferred flush left, then lets it go.
    pub async fn release(&self, fh: Fh) {
        let Ok(Some((ino, wh))) = self.prefetch(|reply| PrefetchMsg::ReleaseFile { fh, reply }).await else {
            return;
        };
        if let Some(wh) = wh {
            let pending_stream = match &wh.stream {
                Some(s) => !s.lock().await.ended(),
                None => false,
            };
            if wh.dirty() || pending_stream {
                if let Err(e) = self.commit_handle(fh, ino, &wh, false).await {
                    tracing::warn!(ino, "commit at release failed: {e}");
                }
            }
            if let Ok(Ok(view)) = self.inode(|reply| InodeMsg::CloseWrite { ino, reply }).await {
                if let NodeKind::File(Content::Remote(f)) = &view.kind {
                    let _ = self
                        .reg()
                        .get()
                        .map(|r| r.prefetch.send_message(PrefetchMsg::Retarget { ino, file: Some(f.clone()) }));
                }
            }
        }
        if let Ok(refs) = self.reg().get() {
            let _ = refs.inode.send_message(InodeMsg::Closed { ino });
        }
    }

    /// Waits at most `limit` for everything pending to be committed (tests, benchmarks). A
    /// commit that fails is tried again (as the flusher would, at once) until `limit`; the
    /// last failure is the answer then.
    pub async fn wait_committed(&self, limit: Duration) -> FsResult<()> {
        let until = Instant::now() + limit;
        let mut last = None;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.sync_all()).await {
                Ok(Ok(Ok(()))) => return Ok(()),
                Ok(Ok(Err(f))) => {
                    let why = format!("{} path(s) failed, first {}: {}", f.len(), f[0].0, f[0].1);
                    tracing::warn!("not committed yet: {why}");
                    last = Some(FsError::Io(why));
                }
                Ok(Err(e)) => return Err(e),
                Err(_) => return Err(last.unwrap_or_else(|| FsError::TimedOut(limit, "pending commits".into()))),
            }
            // Not at once: the Hub that failed gets a moment (and a retry is not a busy loop).
            let pause = Duration::from_millis(200).min(until.saturating_duration_since(Instant::now()));
            if pause.is_zero() {
                return Err(last.expect("set above"));
            }
            tokio::time::sleep(pause).await;
        }
    }
}
