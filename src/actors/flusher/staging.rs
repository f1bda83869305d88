//! Staging files: one per file whose bytes are local (written here, not yet
//! committed, or being streamed), under `<mount cache dir>/staging/`, named
//! by a number the journal refers to. Descriptors are kept open and shared,
//! so a file removed while someone still reads it keeps working for them.
//! Blocking file calls run on the blocking pool, never on a runtime worker.
//!
//! A new staging file starts out held in memory, and becomes a file on disk only when it
//! grows past `HELD_FILE_MAX` (or the held files together past `HELD_TOTAL_MAX`) or is
//! synced. The journal record of a close carries a held file's bytes (see
//! `FlusherState::record`), so a crash loses nothing acknowledged, and a burst of small
//! files makes no inodes: on ext4 without a journal (this project's test machines), each
//! create scans the group's recently deleted inodes (`recently_deleted`), 0.1–0.8 ms a
//! file after a few thousand deletes, measured; the most of a small file's cost.
//!
//! A staging file let go of is not deleted at once: it waits `QUARANTINE` (a read that
//! looked it up just before keeps valid bytes), then is emptied and kept for reuse, up to
//! `SPARE_FILES_MAX`. A held file becoming a file takes a spare by renaming it (no inode
//! made); when fewer than `SPARE_LOW` spares are ready, more are made ahead on the
//! blocking pool (files the journal does not refer to are removed at the next start, as
//! any unacknowledged staging file is).
//!
//! A streamed file's staging copy is rarely read back (it serves reads during the write, and
//! a commit should the stream fail), so its large block-aligned writes bypass the page cache
//! (`O_DIRECT`, see `write_kept`): copying 256 MiB into the page cache took 0.3–0.7 s of
//! kernel time on this project's machines, a quarter of a streamed write's CPU, against
//! 0.02 s for the direct writes. A kept write runs in the background (up to
//! `KEPT_AHEAD_BYTES` at a time), so the writer waits for the upload's queue, not for the
//! disk; every later call on that file waits for its kept writes first (a read sees their
//! bytes), and the first that failed fails the calls after it. Where the file system refuses
//! direct writes, or the disk keeps writers waiting for room (`DIRECT_SLOW_RUN` writes in a
//! row: slower than the upload), they go through the page cache as before, which absorbs them.

use std::collections::{HashMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;

use super::journal::Record;
use crate::error::{FsError, FsResult};
use crate::types::{direct_io_refused, StagingId, DIRECT_ALIGN};

/// How long a released staging file is left alone before it is reused or deleted.
const QUARANTINE: Duration = Duration::from_secs(10);
/// Emptied staging files kept for reuse at most.
const SPARE_FILES_MAX: usize = 256;
/// Writes up to this size are made on the calling worker (see `write_at`).
const INLINE_WRITE_MAX: usize = 64 * 1024;
/// Below this many spares, more are made ahead, up to `SPARE_AHEAD`.
const SPARE_LOW: usize = 8;
const SPARE_AHEAD: usize = 32;
/// A staging file is held in memory up to this size…
const HELD_FILE_MAX: usize = 64 * 1024;
/// …while the held files come to no more than this in all.
const HELD_TOTAL_MAX: usize = 32 << 20;

/// A kept write at least this large, and aligned to `DIRECT_ALIGN` in offset, length and
/// memory, bypasses the page cache (see the module's doc).
const DIRECT_MIN: usize = 128 * 1024;
/// Kept writes that found no room (`KEPT_AHEAD_BYTES` in flight) this many times in a row turn
/// direct writes off for the mount: the disk is slower than the upload, and the page cache
/// absorbs what a slow disk would make the writer wait for.
const DIRECT_SLOW_RUN: u32 = 8;

/// Kept writes in flight at most, all files together: what they hold beyond the upload's own
/// queue (the same buffers), and how far the disk may fall behind before a writer waits.
const KEPT_AHEAD_BYTES: usize = 16 << 20;

/// A copy of `data` whose bytes start at a `DIRECT_ALIGN` boundary when it is large enough
/// for a direct write (one allocation, a few bytes longer; no unsafe code).
pub fn aligned_copy(data: &[u8]) -> Bytes {
    if data.len() < DIRECT_MIN || !data.len().is_multiple_of(DIRECT_ALIGN) {
        return Bytes::copy_from_slice(data);
    }
    let mut v: Vec<u8> = Vec::with_capacity(data.len() + DIRECT_ALIGN);
    let skip = v.as_ptr().align_offset(DIRECT_ALIGN);
    v.resize(skip, 0);
    v.extend_from_slice(data);
    Bytes::from(v).slice(skip..)
}

/// Whether kept writes go direct, and how many in a row were slow.
struct Direct {
    on: AtomicBool,
    slow: AtomicU32,
}

impl Direct {
    fn takes(&self, offset: u64, data: &[u8]) -> bool {
        self.on.load(Ordering::Relaxed)
            && data.len() >= DIRECT_MIN
            && data.len().is_multiple_of(DIRECT_ALIGN)
            && offset.is_multiple_of(DIRECT_ALIGN as u64)
            && (data.as_ptr() as usize).is_multiple_of(DIRECT_ALIGN)
    }

    fn off(&self, why: &str) {
        if self.on.swap(false, Ordering::Relaxed) {
            tracing::info!("staging writes go through the page cache from now on: {why}");
        }
    }

    /// Counts a kept write that had to wait for room (`waited`) or found it.
    fn room(&self, waited: bool) {
        if !waited {
            self.slow.store(0, Ordering::Relaxed);
        } else if self.slow.fetch_add(1, Ordering::Relaxed) + 1 >= DIRECT_SLOW_RUN {
            self.off(&format!("the disk kept {DIRECT_SLOW_RUN} writes in a row waiting"));
        }
    }
}

/// Kept writes still running, per file, and the first failure of each file's.
#[derive(Default)]
struct Kept {
    running: HashMap<StagingId, usize>,
    failed: HashMap<StagingId, FsError>,
}

impl Kept {
    /// Whether any file has a kept write running or failed (`Staging::kept_any`).
    fn any(&self) -> bool {
        !self.running.is_empty() || !self.failed.is_empty()
    }
}

/// A kept write on the blocking pool. Its end is counted when it is dropped, however it ends:
/// done, failed, or never run (a runtime shutting down drops the blocking tasks not started),
/// so no `settle` waits for a write that will not come.
struct KeptWrite {
    id: StagingId,
    failed: Option<FsError>,
    kept: Arc<Mutex<Kept>>,
    any: Arc<AtomicBool>,
    done: Arc<tokio::sync::Notify>,
    _room: tokio::sync::OwnedSemaphorePermit,
}

impl KeptWrite {
    fn end(mut self, r: std::io::Result<()>) {
        self.failed = r.err().map(|e| FsError::io(format!("write to staging file {}", self.id), e));
    }
}

impl Drop for KeptWrite {
    fn drop(&mut self) {
        let mut k = self.kept.lock();
        if let Some(e) = self.failed.take() {
            k.failed.entry(self.id).or_insert(e);
        }
        if let Some(n) = k.running.get_mut(&self.id) {
            *n -= 1;
            if *n == 0 {
                k.running.remove(&self.id);
            }
        }
        self.any.store(k.any(), Ordering::Release);
        drop(k);
        self.done.notify_waiters();
    }
}

/// Staging files held in memory, and their bytes in all.
#[derive(Default)]
struct Held {
    files: HashMap<StagingId, Vec<u8>>,
    bytes: usize,
}

impl Held {
    fn take(&mut self, id: StagingId) -> Option<Vec<u8>> {
        let v = self.files.remove(&id)?;
        self.bytes -= v.len();
        Some(v)
    }

    /// Resizes a held file if it may be `len` long; false: too big to hold.
    fn resize(&mut self, id: StagingId, len: u64) -> bool {
        let Some(v) = self.files.get_mut(&id) else { return false };
        let grow = (len as usize).saturating_sub(v.len());
        if len > HELD_FILE_MAX as u64 || self.bytes + grow > HELD_TOTAL_MAX {
            return false;
        }
        self.bytes = self.bytes + grow - v.len().saturating_sub(len as usize);
        v.resize(len as usize, 0);
        true
    }
}

pub struct Staging {
    dir: PathBuf,
    next: AtomicU64,
    open: Mutex<HashMap<StagingId, Arc<File>>>,
    /// Descriptors opened `O_DIRECT`, for kept writes (see `write_kept`).
    direct_files: Mutex<HashMap<StagingId, Arc<File>>>,
    direct: Arc<Direct>,
    kept: Arc<Mutex<Kept>>,
    /// Whether `kept` has anything in it (the common case, nothing, costs no lock).
    kept_any: Arc<AtomicBool>,
    kept_done: Arc<tokio::sync::Notify>,
    kept_room: Arc<tokio::sync::Semaphore>,
    /// Released files, oldest first, and emptied ones ready for reuse.
    released: Mutex<VecDeque<(Instant, StagingId)>>,
    spare: Mutex<Vec<StagingId>>,
    held: Mutex<Held>,
    /// One held file becomes a file at a time (its file is made outside the lock of `held`).
    spilling: Mutex<()>,
    /// Spares are being made ahead.
    refilling: AtomicBool,
    /// Itself, for making spares on the blocking pool.
    me: std::sync::Weak<Staging>,
}

fn io(what: String) -> impl FnOnce(std::io::Error) -> FsError {
    move |e| FsError::io(what, e)
}

impl Staging {
    /// Opens the staging directory, numbering new files after the ones already there.
    pub fn open(dir: &Path) -> std::io::Result<Arc<Self>> {
        std::fs::create_dir_all(dir)?;
        let mut next = 1;
        for e in std::fs::read_dir(dir)? {
            if let Some(n) = e?.file_name().to_str().and_then(|n| n.parse::<u64>().ok()) {
                next = next.max(n + 1);
            }
        }
        Ok(Arc::new_cyclic(|me| Self {
            me: me.clone(),
            dir: dir.to_path_buf(),
            next: AtomicU64::new(next),
            open: Mutex::new(HashMap::new()),
            direct_files: Mutex::new(HashMap::new()),
            direct: Arc::new(Direct { on: AtomicBool::new(true), slow: AtomicU32::new(0) }),
            kept: Arc::new(Mutex::new(Kept::default())),
            kept_any: Arc::new(AtomicBool::new(false)),
            kept_done: Arc::new(tokio::sync::Notify::new()),
            kept_room: Arc::new(tokio::sync::Semaphore::new(KEPT_AHEAD_BYTES >> 10)),
            released: Mutex::new(VecDeque::new()),
            spare: Mutex::new(Vec::new()),
            held: Mutex::new(Held::default()),
            spilling: Mutex::new(()),
            refilling: AtomicBool::new(false),
        }))
    }

    pub fn path(&self, id: StagingId) -> PathBuf {
        self.dir.join(id.to_string())
    }

    /// The staging files on disk.
    pub fn ids(&self) -> Vec<StagingId> {
        std::fs::read_dir(&self.dir)
            .map(|d| d.flatten().filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok())).collect())
            .unwrap_or_default()
    }

    /// A number for a new staging file, held in memory (empty) until it grows.
    pub fn reserve(&self) -> StagingId {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.held.lock().files.insert(id, Vec::new());
        id
    }

    /// Gives back a number from `reserve` that was not used (its file, if made, is empty).
    pub fn unreserve(&self, id: StagingId) {
        if self.held.lock().take(id).is_some() {
            return;
        }
        if self.open.lock().contains_key(&id) {
            self.spare.lock().push(id);
        }
    }

    /// Numbers from here on are not `id` (one the journal names, without a file on disk).
    pub fn note_used(&self, id: StagingId) {
        self.next.fetch_max(id + 1, Ordering::Relaxed);
    }

    /// Holds `bytes` in memory as staging file `id` (a held file replayed from the journal).
    pub fn adopt(&self, id: StagingId, bytes: &[u8]) {
        self.note_used(id);
        let mut h = self.held.lock();
        h.bytes += bytes.len();
        if let Some(old) = h.files.insert(id, bytes.to_vec()) {
            h.bytes -= old.len();
        }
    }

    /// The first `size` bytes of a staging file held in memory (`None`: it is a file).
    pub fn held(&self, id: StagingId, size: u64) -> Option<Bytes> {
        let h = self.held.lock();
        let v = h.files.get(&id)?;
        let mut out = v[..v.len().min(size as usize)].to_vec();
        out.resize(size as usize, 0);
        Some(Bytes::from(out))
    }

    /// Puts into each record of a held file its bytes: the record is what keeps them across a
    /// crash (a held file has no file on disk).
    pub fn carry_held(&self, records: &mut [Record]) {
        for r in records {
            if let Record::Put { put, .. } = r {
                if let (Some(id), None) = (put.staging, &put.data) {
                    put.data = self.held(id, put.size);
                }
            }
        }
    }

    /// Checks that a staging file can be written (a held one can; a file is opened).
    pub fn ensure(&self, id: StagingId) -> FsResult<()> {
        if self.held.lock().files.contains_key(&id) {
            return Ok(());
        }
        self.file(id).map(|_| ())
    }

    /// Makes a held staging file a file on disk, with its bytes. The file is made (a create or
    /// a rename) without the lock of the held files; the bytes go in under it, so no write
    /// lands in between. Nothing to do for one that is a file.
    fn spill(&self, id: StagingId) -> FsResult<()> {
        let _one = self.spilling.lock();
        if !self.held.lock().files.contains_key(&id) {
            return Ok(());
        }
        let f = self.make_file(id)?;
        let mut h = self.held.lock();
        let Some(bytes) = h.files.get(&id) else { return Ok(()) };
        // Cut too: a file left under this number (replayed as held) may be longer.
        f.write_all_at(bytes, 0)
            .and_then(|_| f.set_len(bytes.len() as u64))
            .map_err(|e| FsError::io(format!("write to staging file {id}"), e))?;
        h.take(id);
        Ok(())
    }

    /// A file for `id`: a spare renamed (no inode made) or a new one.
    fn make_file(&self, id: StagingId) -> FsResult<Arc<File>> {
        let (spare, low) = {
            let mut s = self.spare.lock();
            (s.pop(), s.len() < SPARE_LOW)
        };
        if low {
            self.make_spares();
        }
        if let Some(s) = spare {
            let f = self.open.lock().remove(&s);
            self.direct_files.lock().remove(&s);
            match f {
                Some(f) if std::fs::rename(self.path(s), self.path(id)).is_ok() => {
                    self.open.lock().insert(id, f.clone());
                    return Ok(f);
                }
                _ => self.remove(s),
            }
        }
        self.file(id)
    }

    /// Makes spare files on the blocking pool, up to `SPARE_AHEAD` (one run at a time).
    fn make_spares(&self) {
        let Some(me) = self.me.upgrade() else { return };
        let Ok(rt) = tokio::runtime::Handle::try_current() else { return };
        if self.refilling.swap(true, Ordering::AcqRel) {
            return;
        }
        rt.spawn_blocking(move || {
            while me.spare.lock().len() < SPARE_AHEAD {
                let id = me.next.fetch_add(1, Ordering::Relaxed);
                if let Err(e) = me.file(id) {
                    tracing::debug!("cannot make a spare staging file: {e}");
                    break;
                }
                me.spare.lock().push(id);
            }
            me.refilling.store(false, Ordering::Release);
        });
    }

    /// Lets a staging file go: reused (emptied) or deleted once its quarantine is over.
    pub fn release(&self, id: StagingId) {
        self.released.lock().push_back((Instant::now(), id));
    }

    /// Whether a released file's quarantine is over.
    pub fn has_due(&self) -> bool {
        self.released.lock().front().is_some_and(|(at, _)| at.elapsed() >= QUARANTINE)
    }

    /// Empties or deletes the released files whose quarantine is over (blocking; cheap).
    pub fn collect(&self) {
        loop {
            let due = {
                let mut r = self.released.lock();
                match r.front() {
                    Some((at, _)) if at.elapsed() >= QUARANTINE => r.pop_front().map(|(_, id)| id),
                    _ => None,
                }
            };
            let Some(id) = due else { return };
            // Held, or kept writes still landing in it: not reused.
            if self.held.lock().files.contains_key(&id) || self.kept_running(id) {
                self.remove(id);
                continue;
            }
            let keep = self.spare.lock().len() < SPARE_FILES_MAX;
            let emptied = keep && self.file(id).and_then(|f| f.set_len(0).map_err(FsError::from)).is_ok();
            if emptied {
                self.spare.lock().push(id);
            } else {
                self.remove(id);
            }
        }
    }

    /// The open descriptor of a staging file, creating the file if needed.
    fn file(&self, id: StagingId) -> FsResult<Arc<File>> {
        if let Some(f) = self.open.lock().get(&id) {
            return Ok(f.clone());
        }
        let path = self.path(id);
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io(format!("staging file {}", path.display())))?;
        let f = Arc::new(f);
        Ok(self.open.lock().entry(id).or_insert(f).clone())
    }

    /// Deletes a staging file (readers holding its descriptor carry on).
    pub fn remove(&self, id: StagingId) {
        self.held.lock().take(id);
        self.open.lock().remove(&id);
        self.direct_files.lock().remove(&id);
        self.forget_kept(id);
        if let Err(e) = std::fs::remove_file(self.path(id)) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!("cannot delete staging file {}: {e}", self.path(id).display());
            }
        }
    }

    /// Writes `data` at `offset`. A small write goes straight into the page cache on the
    /// calling worker: the hop to the blocking pool and back cost more than the write itself
    /// (a third of a 4 KiB write's latency, measured).
    pub async fn write_at(&self, id: StagingId, offset: u64, data: Bytes) -> FsResult<()> {
        self.settle(id).await?;
        match self.write_into_held(id, offset, &data) {
            Some(true) => return Ok(()),
            Some(false) => self.spill(id)?,
            None => {}
        }
        let f = self.file(id)?;
        if data.len() <= INLINE_WRITE_MAX {
            return f.write_all_at(&data, offset).map_err(|e| FsError::io(format!("write to staging file {id}"), e));
        }
        blocking(move || f.write_all_at(&data, offset), format!("write to staging file {id}")).await
    }

    /// Writes `data` at `offset`, as the copy of a streamed file's bytes that is kept beside
    /// the upload: large aligned writes (from [`aligned_copy`]) bypass the page cache and run
    /// in the background; this returns once one is started (or fails with the first kept
    /// write of this file that failed). The writes of one stream never overlap.
    pub async fn write_kept(&self, id: StagingId, offset: u64, data: Bytes) -> FsResult<()> {
        self.kept_failure(id)?;
        if self.held.lock().files.contains_key(&id) || !self.direct.takes(offset, &data) {
            return self.write_at(id, offset, data).await;
        }
        let f = self.file(id)?;
        let Some(d) = self.direct_file(id) else { return self.write_at(id, offset, data).await };
        let kib = ((data.len() + 1023) >> 10).min(KEPT_AHEAD_BYTES >> 10) as u32;
        let room = match self.kept_room.clone().try_acquire_many_owned(kib) {
            Ok(room) => {
                self.direct.room(false);
                room
            }
            Err(_) => {
                self.direct.room(true);
                self.kept_room.clone().acquire_many_owned(kib).await.expect("never closed")
            }
        };
        {
            let mut k = self.kept.lock();
            *k.running.entry(id).or_default() += 1;
            self.kept_any.store(true, Ordering::Release);
        }
        let running = KeptWrite {
            id,
            failed: None,
            kept: self.kept.clone(),
            any: self.kept_any.clone(),
            done: self.kept_done.clone(),
            _room: room,
        };
        let direct = self.direct.clone();
        tokio::task::spawn_blocking(move || {
            let r = match d.write_at(&data, offset) {
                Ok(n) if n == data.len() => Ok(()),
                // The rest (a short write leaves it unaligned) through the page cache.
                Ok(n) => f.write_all_at(&data[n..], offset + n as u64),
                Err(e) if direct_io_refused(&e) => {
                    direct.off(&format!("a direct write was refused ({e})"));
                    f.write_all_at(&data, offset)
                }
                Err(e) => Err(e),
            };
            running.end(r);
        });
        Ok(())
    }

    /// The first kept write of `id` that failed, if one did.
    fn kept_failure(&self, id: StagingId) -> FsResult<()> {
        if !self.kept_any.load(Ordering::Acquire) {
            return Ok(());
        }
        self.kept.lock().failed.get(&id).cloned().map_or(Ok(()), Err)
    }

    /// Waits for the kept writes of `id` still running; fails as the first that failed did.
    /// Every call that reads, cuts, syncs or writes a staging file goes through this first.
    pub async fn settle(&self, id: StagingId) -> FsResult<()> {
        loop {
            if !self.kept_any.load(Ordering::Acquire) {
                return Ok(());
            }
            let done = self.kept_done.notified();
            tokio::pin!(done);
            done.as_mut().enable();
            {
                let k = self.kept.lock();
                if let Some(e) = k.failed.get(&id) {
                    return Err(e.clone());
                }
                if !k.running.contains_key(&id) {
                    return Ok(());
                }
            }
            done.await;
        }
    }

    /// Whether kept writes of `id` are still running (its file may not be reused yet).
    fn kept_running(&self, id: StagingId) -> bool {
        self.kept_any.load(Ordering::Acquire) && self.kept.lock().running.contains_key(&id)
    }

    /// Forgets `id`'s kept-write failure (its file is gone).
    fn forget_kept(&self, id: StagingId) {
        if self.kept_any.load(Ordering::Acquire) {
            let mut k = self.kept.lock();
            k.failed.remove(&id);
            self.kept_any.store(k.any(), Ordering::Release);
        }
    }

    /// The `O_DIRECT` descriptor of staging file `id` (a file on disk); `None`: it cannot be
    /// opened so (a file system that refuses direct I/O turns them off from now on).
    fn direct_file(&self, id: StagingId) -> Option<Arc<File>> {
        if let Some(f) = self.direct_files.lock().get(&id) {
            return Some(f.clone());
        }
        match OpenOptions::new().write(true).custom_flags(libc::O_DIRECT).open(self.path(id)) {
            Ok(f) => Some(self.direct_files.lock().entry(id).or_insert(Arc::new(f)).clone()),
            Err(e) => {
                if direct_io_refused(&e) {
                    self.direct.off(&format!("the staging directory refuses O_DIRECT ({e})"));
                }
                None
            }
        }
    }

    /// Writes `data` at `offset` into staging file `id` if it is held in memory and stays
    /// held: nothing waits and no I/O is made, so a frontend may answer the write on its own
    /// thread. `false`: it is a file, or would grow too big to hold; [`Self::write_at`] it.
    pub fn write_held(&self, id: StagingId, offset: u64, data: &[u8]) -> bool {
        self.write_into_held(id, offset, data) == Some(true)
    }

    /// `Some(true)`: written into the held file; `Some(false)`: held, but too big with the
    /// write; `None`: not held.
    fn write_into_held(&self, id: StagingId, offset: u64, data: &[u8]) -> Option<bool> {
        let end = offset.saturating_add(data.len() as u64);
        let mut h = self.held.lock();
        let len = h.files.get(&id)?.len() as u64;
        if !h.resize(id, end.max(len)) {
            return Some(false);
        }
        h.files.get_mut(&id).expect("held")[offset as usize..end as usize].copy_from_slice(data);
        Some(true)
    }

    /// Up to `len` bytes at `offset` (fewer only at the file's end).
    pub async fn read_at(&self, id: StagingId, offset: u64, len: usize) -> FsResult<Bytes> {
        self.settle(id).await?;
        if let Some(v) = self.held.lock().files.get(&id) {
            let from = (offset.min(v.len() as u64)) as usize;
            let to = from + len.min(v.len() - from);
            return Ok(Bytes::copy_from_slice(&v[from..to]));
        }
        let f = self.file(id)?;
        blocking(
            move || {
                let mut buf = vec![0u8; len];
                let mut done = 0;
                while done < len {
                    let n = f.read_at(&mut buf[done..], offset + done as u64)?;
                    if n == 0 {
                        break;
                    }
                    done += n;
                }
                buf.truncate(done);
                Ok(Bytes::from(buf))
            },
            format!("read of staging file {id}"),
        )
        .await
    }

    pub async fn set_len(&self, id: StagingId, len: u64) -> FsResult<()> {
        self.settle(id).await?;
        if self.held.lock().resize(id, len) {
            return Ok(());
        }
        self.spill(id)?;
        let f = self.file(id)?;
        blocking(move || f.set_len(len), format!("truncate of staging file {id}")).await
    }

    /// Makes the staging file's bytes durable (a held one becomes a file first).
    pub async fn sync(&self, id: StagingId) -> FsResult<()> {
        self.settle(id).await?;
        self.spill(id)?;
        let f = self.file(id)?;
        blocking(move || f.sync_data(), format!("fsync of staging file {id}")).await
    }

    /// Copies the first `len` bytes of `from` into `to` (a new write session's own copy).
    pub async fn copy(&self, from: StagingId, to: StagingId, len: u64) -> FsResult<()> {
        self.settle(from).await?;
        self.settle(to).await?;
        if len <= HELD_FILE_MAX as u64 {
            // Small enough to hold: through memory, whichever of the two is held.
            let bytes = self.read_at(from, 0, len as usize).await?;
            self.set_len(to, 0).await?;
            self.write_at(to, 0, bytes).await?;
            return self.set_len(to, len).await;
        }
        for id in [from, to] {
            self.spill(id)?;
        }
        let (src, dst) = (self.file(from)?, self.file(to)?);
        blocking(
            move || {
                let mut buf = vec![0u8; 1 << 20];
                let mut at = 0u64;
                while at < len {
                    let want = (len - at).min(buf.len() as u64) as usize;
                    let n = src.read_at(&mut buf[..want], at)?;
                    if n == 0 {
                        break;
                    }
                    dst.write_all_at(&buf[..n], at)?;
                    at += n as u64;
                }
                dst.set_len(len)
            },
            format!("copy of staging file {from}"),
        )
        .await
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
    what: String,
) -> FsResult<T> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(io(what)),
        Err(e) => Err(FsError::Io(format!("{what}: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn small_files_are_held_in_memory_and_become_files_when_they_grow() {
        let dir = tempfile::tempdir().unwrap();
        let st = Staging::open(&dir.path().join("staging")).unwrap();
        let a = st.reserve();
        st.write_at(a, 0, Bytes::from_static(b"hello")).await.unwrap();
        st.write_at(a, 10, Bytes::from_static(b"!")).await.unwrap();
        assert_eq!(st.read_at(a, 0, 100).await.unwrap(), &b"hello\0\0\0\0\0!"[..]);
        assert_eq!(st.held(a, 5).unwrap(), "hello");
        assert_eq!(st.held(a, 13).unwrap().len(), 13, "padded to the size asked");
        assert!(st.ids().is_empty(), "no file made for a held one");
        // Past the limit, it is a file with every byte so far.
        let big = vec![9u8; HELD_FILE_MAX];
        st.write_at(a, 11, Bytes::from(big.clone())).await.unwrap();
        assert!(st.held(a, 1).is_none() && st.path(a).exists());
        let back = st.read_at(a, 0, 11 + HELD_FILE_MAX).await.unwrap();
        assert_eq!(&back[..11], b"hello\0\0\0\0\0!");
        assert!(back[11..] == big[..]);
        // Spares were made for the next one to grow: it takes one by renaming it.
        let t = Instant::now();
        while st.spare.lock().len() < SPARE_AHEAD {
            assert!(t.elapsed() < Duration::from_secs(10), "spares never made");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let files = st.ids().len();
        let b = st.reserve();
        st.set_len(b, HELD_FILE_MAX as u64 + 1).await.unwrap();
        assert_eq!(st.ids().len(), files, "a spare renamed, not a new inode");
        assert_eq!(std::fs::metadata(st.path(b)).unwrap().len(), HELD_FILE_MAX as u64 + 1);
        // A held one synced becomes a file; copies go through memory when small.
        let c = st.reserve();
        st.write_at(c, 0, Bytes::from_static(b"sync me")).await.unwrap();
        st.sync(c).await.unwrap();
        assert_eq!(std::fs::read(st.path(c)).unwrap(), b"sync me");
        let d = st.reserve();
        st.copy(c, d, 4).await.unwrap();
        assert_eq!(st.held(d, 4).unwrap(), "sync");
        // Adopted bytes (from the journal) are held, and new numbers pass them.
        st.adopt(1000, b"replayed");
        assert_eq!(st.read_at(1000, 2, 3).await.unwrap(), "pla");
        assert!(st.reserve() > 1000);
        // Unused reservations and removed held files leave nothing behind.
        let e = st.reserve();
        st.unreserve(e);
        st.remove(d);
        assert!(st.held(e, 0).is_none() && st.held(d, 0).is_none());
        assert_eq!(st.held.lock().bytes, 8, "only the adopted file is held");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_streamed_files_kept_copy_bypasses_the_page_cache_and_reads_back_whole() {
        let dir = tempfile::tempdir().unwrap();
        let st = Staging::open(&dir.path().join("staging")).unwrap();
        let block = |i: usize| aligned_copy(&vec![i as u8 + 1; DIRECT_MIN * 2]);
        assert!((block(0).as_ptr() as usize).is_multiple_of(DIRECT_ALIGN), "aligned for a direct write");
        assert_eq!(aligned_copy(b"tiny").as_ref(), b"tiny");
        let a = st.reserve();
        // A small head (held, then spilled by the next write), whole aligned blocks, a tail.
        let mut want = b"head".to_vec();
        st.write_kept(a, 0, Bytes::from_static(b"head")).await.unwrap();
        let mut at = DIRECT_ALIGN as u64;
        want.resize(at as usize, 0);
        for i in 0..4 {
            let b = block(i);
            st.write_kept(a, at, b.clone()).await.unwrap();
            want.extend_from_slice(&b);
            at += b.len() as u64;
        }
        st.write_kept(a, at, Bytes::from_static(b"tail")).await.unwrap();
        want.extend_from_slice(b"tail");
        // Unaligned in memory: through the page cache, into the same file.
        let odd = Bytes::from(vec![7u8; DIRECT_MIN + DIRECT_ALIGN]).slice(1..DIRECT_MIN + 1);
        st.write_kept(a, 8, odd.clone()).await.unwrap();
        want[8..8 + odd.len()].copy_from_slice(&odd);
        assert!(st.direct.on.load(Ordering::Relaxed), "the test's temp dir takes direct writes");
        assert!(st.direct_files.lock().contains_key(&a), "the blocks went direct");
        assert!(st.read_at(a, 0, want.len() + 10).await.unwrap() == want[..], "what reads see");
        assert!(std::fs::read(st.path(a)).unwrap() == want, "what the file holds");
        st.remove(a);
        assert!(st.direct_files.lock().is_empty(), "its direct descriptor closed with it");
        // A read right after a kept write, or a run of them (16 MiB, as many as may be in
        // flight), waits for them: it sees every byte.
        let c = st.reserve();
        let mut want = Vec::new();
        for i in 0..64 {
            let b = block(i);
            st.write_kept(c, want.len() as u64, b.clone()).await.unwrap();
            let back = st.read_at(c, want.len() as u64, b.len()).await.unwrap();
            assert!(back == b, "a read right after a kept write waits for it ({i})");
            want.extend_from_slice(&b);
        }
        assert!(st.read_at(c, 0, want.len()).await.unwrap() == want[..], "a read waits for the kept writes");
        st.remove(c);
        // A kept write that fails (past the file system's largest file) fails what follows.
        let b = st.reserve();
        st.write_kept(b, 0, block(0)).await.unwrap();
        st.write_kept(b, 1 << 52, block(1)).await.expect("started in the background");
        assert!(st.settle(b).await.is_err(), "its failure is reported");
        assert!(st.read_at(b, 0, 10).await.is_err() && st.sync(b).await.is_err());
        assert!(st.write_kept(b, DIRECT_MIN as u64 * 2, block(2)).await.is_err());
        assert!(st.settle(a).await.is_ok(), "only that file's calls fail");
        st.remove(b);
        assert!(!st.kept_any.load(Ordering::Acquire), "nothing left once it is gone");
    }

    #[test]
    fn a_disk_that_keeps_writers_waiting_turns_direct_writes_off() {
        let d = Direct { on: AtomicBool::new(true), slow: AtomicU32::new(0) };
        for _ in 0..DIRECT_SLOW_RUN - 1 {
            d.room(true);
        }
        d.room(false);
        assert!(d.on.load(Ordering::Relaxed), "a write that found room breaks the run");
        for _ in 0..DIRECT_SLOW_RUN {
            d.room(true);
        }
        assert!(!d.on.load(Ordering::Relaxed));
        let block = aligned_copy(&vec![0; DIRECT_MIN]);
        assert!(!d.takes(0, &block), "off: every write goes through the page cache");
    }
}
