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

use std::collections::{HashMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
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

pub struct Staging {
    dir: PathBuf,
    next: AtomicU64,
    open: Mutex<HashMap<StagingId, Arc<File>>>,
    /// Released files, oldest first, and emptied ones ready for reuse.
    released: Mutex<VecDeque<(Instant, StagingId)>>,
    spare: Mutex<Vec<StagingId>>,
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

    /// A number for a new staging file: an emptied spare one, or a new one (made on first use).
    pub fn reserve(&self) -> StagingId {
        self.spare.lock().pop().unwrap_or_else(|| self.next.fetch_add(1, Ordering::Relaxed))
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

    pub async fn write_at(&self, id: StagingId, offset: u64, data: Bytes) -> FsResult<()> {
        let f = self.file(id)?;
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
