//! The chunk cache: file bytes in fixed-size blocks keyed by content (Xet
//! hash or git oid, so a changed file never hits stale blocks), in memory and
//! on disk, each capped and evicted least-recently-used. A miss is fetched
//! once however many readers want it (single-flight): the first asker claims
//! it, later ones wait on the claim. A fetch that just failed answers its
//! error at once for a moment, so the kernel's retry of a failed read does
//! not start the wait again.
//!
//! Disk blocks carry a header with their length and CRC32; a block that does
//! not match is reported corrupt, deleted and fetched again, never served.
//! The disk index is rebuilt by scanning the cache directory, so it survives
//! restarts of the actor and of the mount.

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::sync::watch;

use crate::error::{FsError, FsResult};

/// Cache granularity. A random 4 KiB read fetches one block.
pub const BLOCK_BYTES: u64 = 256 * 1024;
/// How long a failed fetch answers its error without trying again.
const FAILURE_MEMORY: Duration = Duration::from_secs(2);
/// Bytes waiting for the disk writer at most; past this, blocks are kept in memory only,
/// so a fast cold read is never slowed to the disk's write speed.
const MAX_PENDING_DISK_WRITE_BYTES: u64 = 256 << 20;
const BLOCK_MAGIC: &[u8; 4] = b"HFMB";
const BLOCK_HEADER_BYTES: usize = 12;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct BlockKey {
    pub content: Arc<str>,
    pub index: u64,
}

impl BlockKey {
    /// The block's file name: a digest of the content key (which may hold any character).
    fn file_name(&self) -> String {
        use sha1::{Digest, Sha1};
        format!("{}-{}", hex::encode(Sha1::digest(self.content.as_bytes())), self.index)
    }
}

pub type Waiter = watch::Receiver<Option<FsResult<Bytes>>>;

/// Where a block is, as answered to a reader.
pub enum Slot {
    Mem(Bytes),
    Disk(PathBuf),
    /// Another reader is fetching it.
    Wait(Waiter),
    /// Nobody has it: the asker must fetch it and `Fill` it.
    Fetch,
    Failed(FsError),
}

/// An LRU index of sized entries.
struct Lru<K, V> {
    entries: HashMap<K, (V, u64, u64)>, // value, size, tick
    order: BTreeMap<u64, K>,
    bytes: u64,
    cap: u64,
}

impl<K: Clone + Eq + std::hash::Hash, V: Clone> Lru<K, V> {
    fn new(cap: u64) -> Self {
        Self { entries: HashMap::new(), order: BTreeMap::new(), bytes: 0, cap }
    }

    fn get(&mut self, k: &K, tick: u64) -> Option<V> {
        let (v, _, t) = self.entries.get_mut(k)?;
        self.order.remove(t);
        *t = tick;
        self.order.insert(tick, k.clone());
        Some(v.clone())
    }

    /// Inserts and returns what had to be evicted to stay under the cap.
    fn insert(&mut self, k: K, v: V, size: u64, tick: u64) -> Vec<(K, V)> {
        self.remove(&k);
        if size > self.cap {
            return vec![(k, v)];
        }
        self.entries.insert(k.clone(), (v, size, tick));
        self.order.insert(tick, k);
        self.bytes += size;
        let mut evicted = Vec::new();
        while self.bytes > self.cap {
            let Some((_, old)) = self.order.pop_first() else { break };
            if let Some((v, s, _)) = self.entries.remove(&old) {
                self.bytes -= s;
                evicted.push((old, v));
            }
        }
        evicted
    }

    fn remove(&mut self, k: &K) -> Option<V> {
        let (v, s, t) = self.entries.remove(k)?;
        self.order.remove(&t);
        self.bytes -= s;
        Some(v)
    }
}

pub struct CacheConfig {
    pub memory_bytes: u64,
    /// `None` disables the disk cache.
    pub disk: Option<(PathBuf, u64)>,
}

/// Counters for tests, benchmarks and metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub mem_hits: u64,
    pub disk_hits: u64,
    pub misses: u64,
    pub waits: u64,
    pub evictions: u64,
    pub corrupt: u64,
    /// Blocks not written to disk because the writer was too far behind.
    pub skipped_writes: u64,
    pub mem_bytes: u64,
    pub disk_bytes: u64,
    pub disk_blocks: u64,
}

pub struct CacheState {
    mem: Lru<BlockKey, Bytes>,
    /// file name → path, for blocks on disk.
    disk: Option<Lru<String, PathBuf>>,
    disk_dir: Option<PathBuf>,
    pending: HashMap<BlockKey, watch::Sender<Option<FsResult<Bytes>>>>,
    failed: HashMap<BlockKey, (Instant, FsError)>,
    /// Bytes handed to the writer and not written yet.
    pending_write_bytes: u64,
    /// One writer thread: sequential writes are what a disk does best.
    writer: Option<std::sync::mpsc::Sender<WriteJob>>,
    tick: u64,
    scanned: bool,
    stats: CacheStats,
}

impl CacheState {
    pub fn new(config: CacheConfig) -> std::io::Result<Self> {
        let (disk, disk_dir) = match config.disk {
            Some((dir, cap)) => {
                let blocks = dir.join("blocks");
                std::fs::create_dir_all(&blocks)?;
                (Some(Lru::new(cap)), Some(blocks))
            }
            None => (None, None),
        };
        Ok(Self {
            mem: Lru::new(config.memory_bytes),
            disk,
            disk_dir,
            pending: HashMap::new(),
            failed: HashMap::new(),
            pending_write_bytes: 0,
            writer: None,
            tick: 0,
            scanned: false,
            stats: CacheStats::default(),
        })
    }

    fn next_tick(&mut self) -> u64 {
        self.tick += 1;
        self.tick
    }

    fn slot(&mut self, key: BlockKey) -> Slot {
        let tick = self.next_tick();
        if let Some(b) = self.mem.get(&key, tick) {
            self.stats.mem_hits += 1;
            return Slot::Mem(b);
        }
        if let Some((at, err)) = self.failed.get(&key) {
            if at.elapsed() < FAILURE_MEMORY {
                return Slot::Failed(err.clone());
            }
            self.failed.remove(&key);
        }
        if let Some(tx) = self.pending.get(&key) {
            self.stats.waits += 1;
            return Slot::Wait(tx.subscribe());
        }
        if let Some(path) = self.disk.as_mut().and_then(|d| d.get(&key.file_name(), tick)) {
            self.stats.disk_hits += 1;
            return Slot::Disk(path);
        }
        self.stats.misses += 1;
        let (tx, _) = watch::channel(None);
        self.pending.insert(key, tx);
        Slot::Fetch
    }

    fn remember(&mut self, key: BlockKey, bytes: Bytes) -> Vec<(BlockKey, Bytes)> {
        let tick = self.next_tick();
        let size = bytes.len() as u64;
        let evicted = self.mem.insert(key, bytes, size, tick);
        self.stats.evictions += evicted.len() as u64;
        let m = crate::metrics::get();
        if !evicted.is_empty() {
            m.evictions.add(evicted.len() as u64, &[crate::metrics::kv("tier", "memory")]);
        }
        m.cache_bytes.record(self.mem.bytes, &[crate::metrics::kv("tier", "memory")]);
        evicted
    }
}

pub enum CacheMsg {
    Lookup {
        keys: Vec<BlockKey>,
        reply: RpcReplyPort<Vec<Slot>>,
    },
    /// The outcome of a claimed fetch.
    Fill {
        key: BlockKey,
        result: FsResult<Bytes>,
    },
    /// A disk block read back fine: keep it in memory too.
    Promote {
        key: BlockKey,
        bytes: Bytes,
    },
    /// A disk block failed its check: forget and delete it.
    Corrupt {
        key: BlockKey,
    },
    DiskWritten {
        name: String,
        path: PathBuf,
        len: u64,
    },
    DiskWriteFailed {
        len: u64,
    },
    Stats {
        reply: RpcReplyPort<CacheStats>,
    },
}

pub struct ChunkCache;

impl Actor for ChunkCache {
    type Msg = CacheMsg;
    type State = Arc<Mutex<CacheState>>;
    type Arguments = Arc<Mutex<CacheState>>;

    async fn pre_start(
        &self,
        _: ActorRef<Self::Msg>,
        state: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        let scan = {
            let st = state.lock();
            (!st.scanned).then(|| st.disk_dir.clone()).flatten()
        };
        if let Some(dir) = scan {
            let found = tokio::task::spawn_blocking(move || scan_disk(&dir)).await??;
            let mut st = state.lock();
            for (name, path, len) in found {
                let tick = st.next_tick();
                if let Some(d) = st.disk.as_mut() {
                    for (_, old) in d.insert(name, path, len, tick) {
                        let _ = std::fs::remove_file(old);
                    }
                }
            }
        }
        state.lock().scanned = true;
        Ok(state)
    }

    handle_in_span!("actor.chunk_cache");
}

/// The actor's message handling: synchronous (work that waits runs in spawned tasks).
fn on_message(
    me: ActorRef<CacheMsg>,
    msg: CacheMsg,
    state: &mut <ChunkCache as Actor>::State,
) -> Result<(), ActorProcessingErr> {
    let mut st = state.lock();
    match msg {
        CacheMsg::Lookup { keys, reply } => {
            let slots = keys.into_iter().map(|k| st.slot(k)).collect();
            let _ = reply.send(slots);
        }
        CacheMsg::Fill { key, result } => {
            if let Some(tx) = st.pending.remove(&key) {
                let _ = tx.send(Some(result.clone()));
            }
            match result {
                Ok(bytes) => {
                    let len = bytes.len() as u64;
                    let room = st.pending_write_bytes + len <= MAX_PENDING_DISK_WRITE_BYTES;
                    if let (Some(dir), true) = (st.disk_dir.clone(), room) {
                        if st.writer.is_none() {
                            // A new writer (first use, or after a restart): nothing is pending on it.
                            st.pending_write_bytes = 0;
                            st.writer = Some(spawn_writer(dir, me.clone()));
                        }
                        let writer = st.writer.as_ref().expect("just set");
                        let job = WriteJob { name: key.file_name(), data: bytes.clone() };
                        if writer.send(job).is_ok() {
                            st.pending_write_bytes += len;
                        } else {
                            st.writer = None;
                        }
                    } else if st.disk_dir.is_some() {
                        st.stats.skipped_writes += 1;
                    }
                    st.remember(key, bytes);
                }
                Err(e) => {
                    st.failed.insert(key, (Instant::now(), e));
                }
            }
        }
        CacheMsg::Promote { key, bytes } => {
            st.remember(key, bytes);
        }
        CacheMsg::Corrupt { key } => {
            st.stats.corrupt += 1;
            let name = key.file_name();
            if let Some(path) = st.disk.as_mut().and_then(|d| d.remove(&name)) {
                tracing::warn!("cache block {} failed its check; deleted, will refetch", path.display());
                tokio::task::spawn_blocking(move || std::fs::remove_file(path));
            }
        }
        CacheMsg::DiskWritten { name, path, len } => {
            st.pending_write_bytes = st.pending_write_bytes.saturating_sub(len);
            let tick = st.next_tick();
            let evicted = st.disk.as_mut().map(|d| d.insert(name, path, len, tick)).unwrap_or_default();
            st.stats.evictions += evicted.len() as u64;
            if !evicted.is_empty() {
                tokio::task::spawn_blocking(move || {
                    for (_, p) in evicted {
                        let _ = std::fs::remove_file(p);
                    }
                });
            }
        }
        CacheMsg::DiskWriteFailed { len } => {
            st.pending_write_bytes = st.pending_write_bytes.saturating_sub(len);
        }
        CacheMsg::Stats { reply } => {
            let mut s = st.stats.clone();
            s.mem_bytes = st.mem.bytes;
            s.disk_bytes = st.disk.as_ref().map_or(0, |d| d.bytes);
            s.disk_blocks = st.disk.as_ref().map_or(0, |d| d.entries.len() as u64);
            let _ = reply.send(s);
        }
    }
    Ok(())
}

struct WriteJob {
    name: String,
    data: Bytes,
}

/// The disk writer: writes blocks one after the other, reporting each to the actor.
fn spawn_writer(dir: PathBuf, actor: ActorRef<CacheMsg>) -> std::sync::mpsc::Sender<WriteJob> {
    let (tx, rx) = std::sync::mpsc::channel::<WriteJob>();
    let spawned = std::thread::Builder::new().name("hf-mount-cache-writer".into()).spawn(move || {
        while let Ok(job) = rx.recv() {
            let len = job.data.len() as u64;
            let msg = match write_block(&dir, &job.name, &job.data) {
                Ok(path) => CacheMsg::DiskWritten { name: job.name, path, len },
                Err(e) => {
                    tracing::warn!("cannot write cache block {}: {e}", job.name);
                    CacheMsg::DiskWriteFailed { len }
                }
            };
            if actor.send_message(msg).is_err() {
                return; // the actor is gone (a restart makes a new writer)
            }
        }
    });
    if let Err(e) = spawned {
        tracing::warn!("cannot start the cache writer: {e}");
    }
    tx
}

fn write_block(dir: &Path, name: &str, data: &[u8]) -> std::io::Result<PathBuf> {
    let sub = dir.join(&name[..2]);
    std::fs::create_dir_all(&sub)?;
    let path = sub.join(name);
    let tmp = sub.join(format!(".{name}.tmp"));
    let mut f = std::fs::File::create(&tmp)?;
    let mut header = [0u8; BLOCK_HEADER_BYTES];
    header[..4].copy_from_slice(BLOCK_MAGIC);
    header[4..8].copy_from_slice(&(data.len() as u32).to_le_bytes());
    header[8..12].copy_from_slice(&crc32fast::hash(data).to_le_bytes());
    f.write_all(&header)?;
    f.write_all(data)?;
    std::fs::rename(&tmp, &path)?;
    Ok(path)
}

/// Reads a disk block back, checking its header; `None` when it is corrupt or truncated.
pub fn read_block(path: &Path) -> std::io::Result<Option<Bytes>> {
    let mut f = std::fs::File::open(path)?;
    let mut header = [0u8; BLOCK_HEADER_BYTES];
    if f.read_exact(&mut header).is_err() || &header[..4] != BLOCK_MAGIC {
        return Ok(None);
    }
    let len = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(header[8..12].try_into().expect("4 bytes"));
    let mut data = Vec::with_capacity(len);
    f.read_to_end(&mut data)?;
    if data.len() != len || crc32fast::hash(&data) != crc {
        return Ok(None);
    }
    Ok(Some(Bytes::from(data)))
}

fn scan_disk(dir: &Path) -> std::io::Result<Vec<(String, PathBuf, u64)>> {
    let mut out = Vec::new();
    for sub in std::fs::read_dir(dir)? {
        let sub = sub?.path();
        if !sub.is_dir() {
            continue;
        }
        for f in std::fs::read_dir(&sub)? {
            let f = f?;
            let name = f.file_name().to_string_lossy().to_string();
            if name.starts_with('.') {
                let _ = std::fs::remove_file(f.path()); // a torn write
                continue;
            }
            let len = f.metadata()?.len().saturating_sub(BLOCK_HEADER_BYTES as u64);
            out.push((name, f.path(), len));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: u64) -> BlockKey {
        BlockKey { content: Arc::from("h"), index: i }
    }

    #[test]
    fn lru_evicts_least_recently_used() {
        let mut l: Lru<u64, ()> = Lru::new(3);
        l.insert(1, (), 1, 1);
        l.insert(2, (), 1, 2);
        l.insert(3, (), 1, 3);
        l.get(&1, 4);
        let ev = l.insert(4, (), 1, 5);
        assert_eq!(ev.into_iter().map(|(k, _)| k).collect::<Vec<_>>(), vec![2]);
        assert_eq!(l.bytes, 3);
    }

    #[test]
    fn single_flight_then_hit_then_failure_memory() {
        let mut st = CacheState::new(CacheConfig { memory_bytes: 1 << 20, disk: None }).unwrap();
        assert!(matches!(st.slot(key(0)), Slot::Fetch));
        assert!(matches!(st.slot(key(0)), Slot::Wait(_)));
        st.pending.remove(&key(0));
        st.remember(key(0), Bytes::from_static(b"abc"));
        assert!(matches!(st.slot(key(0)), Slot::Mem(b) if b == "abc"));
        st.failed.insert(key(1), (Instant::now(), FsError::Io("x".into())));
        assert!(matches!(st.slot(key(1)), Slot::Failed(_)));
    }

    #[test]
    fn disk_blocks_detect_corruption_and_truncation() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_block(dir.path(), "ab-0", b"hello block").unwrap();
        assert_eq!(read_block(&path).unwrap().unwrap(), "hello block");
        let mut raw = std::fs::read(&path).unwrap();
        raw[BLOCK_HEADER_BYTES] ^= 0xff;
        std::fs::write(&path, &raw).unwrap();
        assert!(read_block(&path).unwrap().is_none(), "flipped byte");
        std::fs::write(&path, &raw[..raw.len() - 3]).unwrap();
        assert!(read_block(&path).unwrap().is_none(), "truncated");
        let found = scan_disk(dir.path()).unwrap();
        assert_eq!(found.len(), 1);
    }
}
