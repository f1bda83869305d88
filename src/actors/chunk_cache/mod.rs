//! The chunk cache: file bytes in fixed-size blocks keyed by content (Xet
//! hash or git oid, so a changed file never hits stale blocks), in memory and
//! on disk, each capped and evicted least-recently-used. A miss is fetched
//! once however many readers want it (single-flight): the first asker claims
//! it, later ones wait on the claim. A reader's fetch that just failed answers
//! its error at once for a moment, so the kernel's immediate retry of a failed
//! read does not start the wait again; a read-ahead's failure is never
//! remembered (no reader asked for it), and a read a moment later tries again.
//!
//! On disk, blocks live in segment files (`segments`); a block that does not
//! match its CRC is reported corrupt, dropped and fetched again, never served.
//! An evicted slot is punched out of its file; a file with no live slot is
//! deleted. The disk index is rebuilt by reading the segment headers, so it
//! survives restarts of the actor and of the mount.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::actors::Reply;
use bytes::Bytes;
use parking_lot::Mutex;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::watch;

use crate::error::{FsError, FsResult};

mod segments;
#[cfg(test)]
use segments::write_block;
use segments::{drop_block, scan_disk, write_blocks};
pub use segments::{read_block, read_run, segment_blocks, DiskLoc};

/// Cache granularity. A random 4 KiB read fetches one block.
pub const BLOCK_BYTES: u64 = 256 * 1024;
/// How long a reader's failed fetch answers its error without trying again: long enough for
/// the kernel's retry of the same read, short enough that a read after a blip tries again.
const FAILURE_MEMORY: Duration = Duration::from_millis(250);
/// Bytes waiting for the disk writer at most; past this, blocks are kept in memory only,
/// so a fast cold read is never slowed to the disk's write speed.
const MAX_PENDING_DISK_WRITE_BYTES: u64 = 256 << 20;
/// Queued blocks of consecutive slots written in one go at most (4 MiB).
const WRITE_RUN_MAX_BLOCKS: usize = 16;
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct BlockKey {
    pub content: Arc<str>,
    pub index: u64,
}

impl BlockKey {
    /// The block's name in the disk index: a digest of the content key (which may hold any
    /// character) and the block index.
    fn disk_name(&self) -> String {
        use sha1::{Digest, Sha1};
        format!("{}-{}", hex::encode(Sha1::digest(self.content.as_bytes())), self.index)
    }
}

/// A cached block: `len` bytes at `at` of a buffer fetched (or read back) in one piece.
/// Blocks keep the whole buffer alive either way (they are views into it); knowing it lets
/// neighbouring blocks of one fetch be handed out together without a copy.
#[derive(Clone, Debug)]
pub struct Block {
    buf: Bytes,
    at: usize,
    len: usize,
}

impl Block {
    pub fn new(buf: Bytes, at: usize, len: usize) -> Self {
        assert!(at + len <= buf.len(), "block {at}+{len} outside a buffer of {}", buf.len());
        Self { buf, at, len }
    }

    pub fn bytes(&self) -> Bytes {
        self.buf.slice(self.at..self.at + self.len)
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether `next` starts where this block ends, in the same buffer.
    pub fn continued_by(&self, next: &Block) -> bool {
        self.buf.as_ptr() == next.buf.as_ptr() && self.buf.len() == next.buf.len() && self.at + self.len == next.at
    }

    /// Bytes `range` (relative to this block's start) of this block and the ones continuing it.
    pub fn span(&self, range: std::ops::Range<usize>) -> Bytes {
        self.buf.slice(self.at + range.start..self.at + range.end)
    }
}

impl From<Bytes> for Block {
    fn from(buf: Bytes) -> Self {
        let len = buf.len();
        Self { buf, at: 0, len }
    }
}

pub type Waiter = watch::Receiver<Option<FsResult<Block>>>;

/// Where a block is, as answered to a reader.
pub enum Slot {
    Mem(Block),
    Disk(DiskLoc),
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
        self.shrink_to(self.cap)
    }

    /// Lowers the cap to `cap` and returns what had to be evicted to stay under it.
    fn shrink_to(&mut self, cap: u64) -> Vec<(K, V)> {
        self.cap = cap;
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
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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
    /// Bytes queued for the disk writer, not written yet.
    #[serde(default)]
    pub disk_write_pending_bytes: u64,
}

pub struct CacheState {
    mem: Lru<BlockKey, Block>,
    /// Block name → slot, for blocks on disk.
    disk: Option<Lru<String, DiskLoc>>,
    /// Live slots per segment file (a file is deleted when its last slot goes).
    segments: HashMap<PathBuf, u32>,
    disk_dir: Option<PathBuf>,
    pending: HashMap<BlockKey, watch::Sender<Option<FsResult<Block>>>>,
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
            segments: HashMap::new(),
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
        if let Some(loc) = self.disk.as_mut().and_then(|d| d.get(&key.disk_name(), tick)) {
            // Claimed like a fetch: whoever asks while it is read back waits for this read.
            self.stats.disk_hits += 1;
            let (tx, _) = watch::channel(None);
            self.pending.insert(key, tx);
            return Slot::Disk(loc);
        }
        self.stats.misses += 1;
        let (tx, _) = watch::channel(None);
        self.pending.insert(key, tx);
        Slot::Fetch
    }

    /// A claimed fetch ended: the claim goes, its waiters get the result.
    fn settle_claim(&mut self, key: &BlockKey, result: &FsResult<Block>) {
        if let Some(tx) = self.pending.remove(key) {
            let _ = tx.send(Some(result.clone()));
        }
    }

    /// A claimed fetch failed: only a reader's failure is answered to the next asker (briefly).
    fn fetch_failed(&mut self, key: BlockKey, e: FsError, reader: bool) {
        if reader {
            self.failed.insert(key, (Instant::now(), e));
        }
    }

    fn remember(&mut self, key: BlockKey, block: Block) -> Vec<(BlockKey, Block)> {
        let tick = self.next_tick();
        let size = block.len() as u64;
        let evicted = self.mem.insert(key, block, size, tick);
        self.stats.evictions += evicted.len() as u64;
        let m = crate::metrics::get();
        if !evicted.is_empty() {
            m.evictions.add(evicted.len() as u64, &[crate::metrics::kv("tier", "memory")]);
        }
        m.cache_bytes.record(self.mem.bytes, &[crate::metrics::kv("tier", "memory")]);
        evicted
    }

    /// Indexes a block written to disk, punching out what the cap evicts.
    fn index_disk(&mut self, name: String, loc: DiskLoc, len: u64) {
        let tick = self.next_tick();
        let Some(disk) = self.disk.as_mut() else { return };
        // The same block written twice (fetched again before its first write was indexed) is
        // one slot: indexed once, not dropped.
        let rewritten = disk.remove(&name).is_some();
        let evicted: Vec<DiskLoc> = disk.insert(name, loc.clone(), len, tick).into_iter().map(|(_, l)| l).collect();
        if !rewritten {
            *self.segments.entry(loc.path).or_default() += 1;
        }
        self.stats.evictions += evicted.len() as u64;
        for old in evicted {
            self.drop_slot(old);
        }
    }

    /// The disk is full: the disk tier shrinks to three quarters of what it holds (its cap
    /// stays there), so the room goes to what cannot be dropped (staged writes, the journal,
    /// uploads) rather than to more cached blocks.
    fn yield_disk_space(&mut self) {
        let Some(disk) = self.disk.as_mut() else { return };
        let cap = disk.bytes / 4 * 3;
        if cap >= disk.cap {
            return;
        }
        tracing::warn!(
            "the cache disk is full: the block cache shrinks from {} to {} MiB to leave room for writes",
            disk.bytes >> 20,
            cap >> 20
        );
        let evicted = disk.shrink_to(cap);
        self.stats.evictions += evicted.len() as u64;
        for (_, old) in evicted {
            self.drop_slot(old);
        }
    }

    /// Has the writer punch a slot out of its segment, and delete the file when it was the last.
    fn drop_slot(&mut self, loc: DiskLoc) {
        let last = match self.segments.get_mut(&loc.path) {
            Some(n) if *n > 1 => {
                *n -= 1;
                false
            }
            _ => {
                self.segments.remove(&loc.path);
                true
            }
        };
        if let Some(w) = &self.writer {
            let _ = w.send(WriteJob::Drop { loc, last });
        }
    }
}

pub enum CacheMsg {
    Lookup {
        keys: Vec<BlockKey>,
        reply: Reply<Vec<Slot>>,
    },
    /// The outcome of a claimed fetch; `reader`: a reader asked for it (not read-ahead).
    Fill {
        key: BlockKey,
        result: FsResult<Block>,
        reader: bool,
    },
    /// A claimed disk block read back fine: its waiters get it, and memory keeps it too.
    Promote {
        key: BlockKey,
        block: Block,
    },
    /// A disk block failed its check: forget and delete it.
    Corrupt {
        key: BlockKey,
    },
    DiskWritten {
        name: String,
        loc: DiskLoc,
        len: u64,
    },
    DiskWriteFailed {
        len: u64,
        /// The disk was full: the cache gives room back (staged writes need it more).
        no_space: bool,
    },
    Stats {
        reply: Reply<CacheStats>,
    },
}

crate::actors::call::request!(CacheMsg, "chunk cache");

/// The claim on blocks a lookup answered `Slot::Fetch` (or `Slot::Disk`) for: `fill` answers each with its
/// result. Dropped unanswered (the fetch panicked, was cancelled, or came back short), it
/// answers them with an error, so the readers waiting on it fail now and the next ones fetch
/// again, instead of every later reader waiting out its deadline on a claim nobody holds.
pub struct Claim {
    send: Box<dyn Fn(CacheMsg) + Send + Sync>,
    keys: Vec<BlockKey>,
    reader: bool,
}

impl Claim {
    /// `send` delivers to the cache; `reader`: for a reader (not read-ahead).
    pub fn new(send: impl Fn(CacheMsg) + Send + Sync + 'static, keys: Vec<BlockKey>, reader: bool) -> Self {
        Self { send: Box::new(send), keys, reader }
    }

    /// Whether the claim is a reader's (not read-ahead's).
    pub fn reader(&self) -> bool {
        self.reader
    }

    /// The claimed blocks were answered otherwise (each read back from disk answers its own).
    pub fn answered(mut self) {
        self.keys.clear();
    }

    /// Answers the claimed blocks, in order, with `result`'s blocks or its error.
    pub fn fill(mut self, result: &FsResult<Vec<Block>>) {
        for (i, key) in std::mem::take(&mut self.keys).into_iter().enumerate() {
            let result = match result {
                Ok(blocks) => blocks.get(i).cloned().ok_or_else(|| FsError::Io("a fetch came back short".into())),
                Err(e) => Err(e.clone()),
            };
            (self.send)(CacheMsg::Fill { key, result, reader: self.reader });
        }
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        for key in std::mem::take(&mut self.keys) {
            let result = Err(FsError::Io("the fetch of this block was abandoned".into()));
            (self.send)(CacheMsg::Fill { key, result, reader: false });
        }
    }
}

pub struct ChunkCache;

impl Actor for ChunkCache {
    type Msg = CacheMsg;
    type State = Arc<Mutex<CacheState>>;
    type Arguments = Arc<Mutex<CacheState>>;

    async fn pre_start(
        &self,
        me: ActorRef<Self::Msg>,
        state: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        let scan = {
            let mut st = state.lock();
            if st.disk_dir.is_some() {
                // This incarnation's writer (a restart's old one ends with its channel): disk
                // writes and drops, the scan's evictions included, all go through it.
                st.pending_write_bytes = 0;
                st.writer = Some(spawn_writer(me));
            }
            (!st.scanned).then(|| st.disk_dir.clone()).flatten()
        };
        if let Some(dir) = scan {
            let found = tokio::task::spawn_blocking(move || scan_disk(&dir)).await??;
            let mut st = state.lock();
            for (name, loc, len) in found {
                st.index_disk(name, loc, len);
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
        CacheMsg::Fill { key, result, reader } => {
            st.settle_claim(&key, &result);
            match result {
                Ok(block) => {
                    let len = block.len() as u64;
                    let room = st.pending_write_bytes + len <= MAX_PENDING_DISK_WRITE_BYTES;
                    if let (Some(dir), true) = (st.disk_dir.clone(), room) {
                        if st.writer.is_none() {
                            // The last writer stopped taking jobs: a new one, with nothing pending.
                            st.pending_write_bytes = 0;
                            st.writer = Some(spawn_writer(me.clone()));
                        }
                        let name = key.disk_name();
                        let loc = DiskLoc::of(&dir, &name).expect("block names are <digest>-<index>");
                        let job = WriteJob::Write { name, loc, data: block.bytes() };
                        if st.writer.as_ref().expect("just set").send(job).is_ok() {
                            st.pending_write_bytes += len;
                        } else {
                            st.writer = None;
                        }
                    } else if st.disk_dir.is_some() {
                        st.stats.skipped_writes += 1;
                    }
                    st.remember(key, block);
                }
                Err(e) => st.fetch_failed(key, e, reader),
            }
        }
        CacheMsg::Promote { key, block } => {
            st.settle_claim(&key, &Ok(block.clone()));
            st.remember(key, block);
        }
        CacheMsg::Corrupt { key } => {
            st.stats.corrupt += 1;
            if let Some(loc) = st.disk.as_mut().and_then(|d| d.remove(&key.disk_name())) {
                tracing::warn!(
                    "cache block {} slot {} failed its check; dropped, will refetch",
                    loc.path.display(),
                    loc.slot
                );
                st.drop_slot(loc);
            }
        }
        CacheMsg::DiskWritten { name, loc, len } => {
            st.pending_write_bytes = st.pending_write_bytes.saturating_sub(len);
            st.index_disk(name, loc, len);
        }
        CacheMsg::DiskWriteFailed { len, no_space } => {
            st.pending_write_bytes = st.pending_write_bytes.saturating_sub(len);
            if no_space {
                st.yield_disk_space();
            }
        }
        CacheMsg::Stats { reply } => {
            let mut s = st.stats.clone();
            s.mem_bytes = st.mem.bytes;
            s.disk_bytes = st.disk.as_ref().map_or(0, |d| d.bytes);
            s.disk_blocks = st.disk.as_ref().map_or(0, |d| d.entries.len() as u64);
            s.disk_write_pending_bytes = st.pending_write_bytes;
            let _ = reply.send(s);
        }
    }
    Ok(())
}

/// Work for the disk writer, done in order (so a slot is never written and dropped out of turn).
enum WriteJob {
    Write {
        name: String,
        loc: DiskLoc,
        data: Bytes,
    },
    /// Punch a slot out; delete the file when it held the segment's last live slot.
    Drop {
        loc: DiskLoc,
        last: bool,
    },
}

/// The disk writer: one thread doing the jobs one after the other, queued blocks of
/// consecutive slots in one direct write, reporting writes to the actor. Its CPU is a copy
/// into an aligned buffer and a CRC (the device does the rest), so it runs at the read path's
/// priority: at a lower one it fell behind a fast cold read on 2 busy cores, and past the
/// write-behind budget blocks stay memory-only (a re-read fetches them again).
fn spawn_writer(actor: ActorRef<CacheMsg>) -> std::sync::mpsc::Sender<WriteJob> {
    let (tx, rx) = std::sync::mpsc::channel::<WriteJob>();
    let spawned = std::thread::Builder::new().name("hf-mount-cache-writer".into()).spawn(move || {
        let mut next = None;
        while let Some(job) = next.take().or_else(|| rx.recv().ok()) {
            if !matches!(actor.get_status(), ractor::ActorStatus::Running | ractor::ActorStatus::Starting) {
                return; // the mount is shutting down: its queued writes would outlive its cache dir
            }
            match job {
                WriteJob::Write { name, loc, data } => {
                    // The next slots of the same segment file, already queued, go in the same write.
                    let mut run = vec![(name, loc, data)];
                    while run.len() < WRITE_RUN_MAX_BLOCKS {
                        let (_, last, data) = &run[run.len() - 1];
                        if data.len() as u64 != BLOCK_BYTES {
                            break;
                        }
                        match rx.try_recv() {
                            Ok(WriteJob::Write { name, loc, data })
                                if loc.path == last.path && loc.slot == last.slot + 1 =>
                            {
                                run.push((name, loc, data))
                            }
                            Ok(other) => {
                                next = Some(other);
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                    let blocks: Vec<&[u8]> = run.iter().map(|(_, _, d)| &d[..]).collect();
                    let written = write_blocks(&run[0].1.path, run[0].1.slot, &blocks);
                    if let Err(e) = &written {
                        tracing::warn!("cannot write cache blocks to {}: {e}", run[0].1.path.display());
                    }
                    let no_space =
                        written.as_ref().is_err_and(|e| matches!(e.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT)));
                    for (name, loc, data) in run {
                        let len = data.len() as u64;
                        let msg = match written {
                            Ok(()) => CacheMsg::DiskWritten { name, loc, len },
                            Err(_) => CacheMsg::DiskWriteFailed { len, no_space },
                        };
                        if actor.send_message(msg).is_err() {
                            return; // the actor is gone (a restart makes a new writer)
                        }
                    }
                }
                WriteJob::Drop { loc, last } => {
                    if let Err(e) = drop_block(&loc, last) {
                        tracing::debug!("cannot drop cache block {} slot {}: {e}", loc.path.display(), loc.slot);
                    }
                }
            }
        }
    });
    if let Err(e) = spawned {
        tracing::warn!("cannot start the cache writer: {e}");
    }
    tx
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
        st.remember(key(0), Bytes::from_static(b"abc").into());
        assert!(matches!(st.slot(key(0)), Slot::Mem(b) if b.bytes() == "abc"));
        st.failed.insert(key(1), (Instant::now(), FsError::Io("x".into())));
        assert!(matches!(st.slot(key(1)), Slot::Failed(_)));
    }

    #[test]
    fn an_abandoned_claim_releases_its_blocks() {
        let mut st = CacheState::new(CacheConfig { memory_bytes: 1 << 20, disk: None }).unwrap();
        assert!(matches!(st.slot(key(4)), Slot::Fetch));
        let Slot::Wait(rx) = st.slot(key(4)) else { panic!("a second asker waits") };
        let sent = Arc::new(Mutex::new(Vec::new()));
        let claim = {
            let sent = sent.clone();
            Claim::new(move |m| sent.lock().push(m), vec![key(4)], true)
        };
        // The fetch task dies (a panic unwinds through it): the claim is dropped unanswered.
        let died = std::thread::spawn(move || {
            let _claim = claim;
            panic!("fetch task panicked");
        });
        assert!(died.join().is_err());
        for m in sent.lock().drain(..) {
            let CacheMsg::Fill { key, result, reader } = m else { panic!("only fills") };
            st.settle_claim(&key, &result);
            if let Err(e) = result {
                st.fetch_failed(key, e, reader);
            }
        }
        assert!(matches!(&*rx.borrow(), Some(Err(_))), "the waiter is answered, not left to its deadline");
        assert!(matches!(st.slot(key(4)), Slot::Fetch), "the next reader fetches again");
    }

    #[test]
    fn only_a_readers_failure_is_remembered_and_only_briefly() {
        let mut st = CacheState::new(CacheConfig { memory_bytes: 1 << 20, disk: None }).unwrap();
        let err = || FsError::TimedOut(Duration::from_secs(30), "x".into());
        // A read-ahead's failure: the next reader fetches again.
        assert!(matches!(st.slot(key(1)), Slot::Fetch));
        st.pending.remove(&key(1));
        st.fetch_failed(key(1), err(), false);
        assert!(matches!(st.slot(key(1)), Slot::Fetch));
        // A reader's failure answers the kernel's immediate retry...
        assert!(matches!(st.slot(key(2)), Slot::Fetch));
        st.pending.remove(&key(2));
        st.fetch_failed(key(2), err(), true);
        assert!(matches!(st.slot(key(2)), Slot::Failed(_)));
        // ...but a read a second later (a job retrying after a blip) tries again.
        st.failed.insert(key(2), (Instant::now() - Duration::from_secs(1), err()));
        assert!(matches!(st.slot(key(2)), Slot::Fetch));
    }

    #[test]
    fn a_block_written_twice_is_one_slot() {
        let dir = tempfile::tempdir().unwrap();
        let mut st =
            CacheState::new(CacheConfig { memory_bytes: 1 << 20, disk: Some((dir.path().into(), 1 << 20)) }).unwrap();
        let name = key(3).disk_name();
        let loc = DiskLoc::of(st.disk_dir.as_ref().unwrap(), &name).unwrap();
        write_block(&loc, b"block").unwrap();
        st.index_disk(name.clone(), loc.clone(), 5);
        st.index_disk(name, loc.clone(), 5);
        assert_eq!(st.segments[&loc.path], 1);
        assert_eq!(read_block(&loc).unwrap().unwrap(), "block", "the second write punched the first");
        assert!(matches!(st.slot(key(3)), Slot::Disk(l) if l == loc));
    }

    #[test]
    fn a_block_being_read_back_from_disk_is_read_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut st =
            CacheState::new(CacheConfig { memory_bytes: 1 << 20, disk: Some((dir.path().into(), 1 << 20)) }).unwrap();
        let name = key(5).disk_name();
        let loc = DiskLoc::of(st.disk_dir.as_ref().unwrap(), &name).unwrap();
        write_block(&loc, b"on disk").unwrap();
        st.index_disk(name, loc.clone(), 7);
        assert!(matches!(st.slot(key(5)), Slot::Disk(l) if l == loc), "the first asker reads it");
        let Slot::Wait(rx) = st.slot(key(5)) else { panic!("a second asker waits for that read") };
        // What `Promote` does with the block read back.
        let block = Block::from(read_block(&loc).unwrap().unwrap());
        st.settle_claim(&key(5), &Ok(block.clone()));
        st.remember(key(5), block);
        assert!(matches!(&*rx.borrow(), Some(Ok(b)) if b.bytes() == "on disk"));
        assert!(matches!(st.slot(key(5)), Slot::Mem(_)));
        assert_eq!((st.stats.disk_hits, st.stats.waits), (1, 1));
    }
}
