//! Staging files: one per file whose bytes are local (written here, not yet
//! committed, or being streamed), under `<mount cache dir>/staging/`, named
//! by a number the journal refers to. Descriptors are kept open and shared,
//! so a file removed while someone still reads it keeps working for them.
//! Blocking file calls run on the blocking pool, never on a runtime worker.
//!
//! A staging file let go of is not deleted at once: it waits `QUARANTINE` (a read that
//! looked it up just before keeps valid bytes), then is emptied and kept for reuse, up to
//! `SPARE_FILES_MAX` (creating and deleting many small files makes ext4's inode allocator
//! scan for recently deleted inodes: a third of the time of a burst of small writes).
//! When fewer than `SPARE_LOW` spares are ready, more are made ahead on the blocking pool,
//! so a burst of creates finds its staging files made (files the journal does not refer
//! to are removed at the next start, as any unacknowledged staging file is).

use std::collections::{HashMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;

use crate::error::{FsError, FsResult};
use crate::types::StagingId;

/// How long a released staging file is left alone before it is reused or deleted.
const QUARANTINE: Duration = Duration::from_secs(10);
/// Emptied staging files kept for reuse at most.
const SPARE_FILES_MAX: usize = 256;
/// Writes up to this size are made on the calling worker (see `write_at`).
const INLINE_WRITE_MAX: usize = 64 * 1024;
/// Below this many spares, more are made ahead, up to `SPARE_AHEAD`.
const SPARE_LOW: usize = 32;
const SPARE_AHEAD: usize = 96;

pub struct Staging {
    dir: PathBuf,
    next: AtomicU64,
    open: Mutex<HashMap<StagingId, Arc<File>>>,
    /// Released files, oldest first, and emptied ones ready for reuse.
    released: Mutex<VecDeque<(Instant, StagingId)>>,
    spare: Mutex<Vec<StagingId>>,
    /// Spares are being made ahead.
    refilling: AtomicBool,
}

fn io(what: String) -> impl FnOnce(std::io::Error) -> FsError {
    move |e| FsError::io(what, e)
}

impl Staging {
    /// Opens the staging directory, numbering new files after the ones already there.
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let mut next = 1;
        for e in std::fs::read_dir(dir)? {
            if let Some(n) = e?.file_name().to_str().and_then(|n| n.parse::<u64>().ok()) {
                next = next.max(n + 1);
            }
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            next: AtomicU64::new(next),
            open: Mutex::new(HashMap::new()),
            released: Mutex::new(VecDeque::new()),
            spare: Mutex::new(Vec::new()),
            refilling: AtomicBool::new(false),
        })
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

    /// A number for a new staging file: a spare one (empty, made), or a new one (made on first
    /// use). Tops the spares up in the background when they run low.
    pub fn reserve(self: &Arc<Self>) -> StagingId {
        let (id, low) = {
            let mut spare = self.spare.lock();
            (spare.pop(), spare.len() < SPARE_LOW)
        };
        if low {
            self.make_spares();
        }
        id.unwrap_or_else(|| self.next.fetch_add(1, Ordering::Relaxed))
    }

    /// Gives back a number from `reserve` that was not used (its file, if made, is empty).
    pub fn unreserve(&self, id: StagingId) {
        if self.open.lock().contains_key(&id) {
            self.spare.lock().push(id);
        }
    }

    /// Makes spare files on the blocking pool, up to `SPARE_AHEAD` (one run at a time).
    fn make_spares(self: &Arc<Self>) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else { return };
        if self.refilling.swap(true, Ordering::AcqRel) {
            return;
        }
        let me = self.clone();
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
    pub fn file(&self, id: StagingId) -> FsResult<Arc<File>> {
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
        self.open.lock().remove(&id);
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
        let f = self.file(id)?;
        if data.len() <= INLINE_WRITE_MAX {
            return f.write_all_at(&data, offset).map_err(|e| FsError::io(format!("write to staging file {id}"), e));
        }
        blocking(move || f.write_all_at(&data, offset), format!("write to staging file {id}")).await
    }

    /// Up to `len` bytes at `offset` (fewer only at the file's end).
    pub async fn read_at(&self, id: StagingId, offset: u64, len: usize) -> FsResult<Bytes> {
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
        let f = self.file(id)?;
        blocking(move || f.set_len(len), format!("truncate of staging file {id}")).await
    }

    /// Makes the staging file's bytes durable.
    pub async fn sync(&self, id: StagingId) -> FsResult<()> {
        let f = self.file(id)?;
        blocking(move || f.sync_data(), format!("fsync of staging file {id}")).await
    }

    /// Copies the first `len` bytes of `from` into `to` (a new write session's own copy).
    pub async fn copy(&self, from: StagingId, to: StagingId, len: u64) -> FsResult<()> {
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
    async fn spares_are_made_ahead_and_unused_ones_given_back() {
        let dir = tempfile::tempdir().unwrap();
        let st = Arc::new(Staging::open(&dir.path().join("staging")).unwrap());
        // None ready: a new number (its file made on first use); spares start being made.
        let first = st.reserve();
        let t = Instant::now();
        while st.spare.lock().len() < SPARE_AHEAD {
            assert!(t.elapsed() < Duration::from_secs(10), "spares never made");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(st.ids().len(), SPARE_AHEAD, "the spares are files on disk");
        assert!(!st.path(first).exists());
        let id = st.reserve();
        assert!(st.path(id).exists() && id != first);
        st.write_at(id, 0, Bytes::from_static(b"kept")).await.unwrap();
        assert_eq!(st.read_at(id, 0, 10).await.unwrap(), "kept");
        // A reservation whose file was never made is not a spare; a made one is given back.
        st.unreserve(first);
        assert!(!st.spare.lock().contains(&first));
        let other = st.reserve();
        st.unreserve(other);
        assert!(st.spare.lock().contains(&other));
    }
}
