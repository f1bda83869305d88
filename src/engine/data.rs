//! The data path of the engine: reads through the chunk cache, fetching
//! missing blocks in runs (single-flight, in tasks of their own so a reader
//! that goes away cancels nothing others wait for), read-ahead that only
//! fills the cache, and the checks that keep reads exact (never short before
//! EOF; plain git blobs verified against their oid when fetched whole).

use std::ops::Range;
use std::sync::Arc;
use tracing::Instrument;

use bytes::{Bytes, BytesMut};

use super::{Engine, FETCH_MAX_BLOCKS, READAHEAD_BUDGET_MIB, WHOLE_FILE_MAX_BYTES, XET_WHOLE_FILE_MAX_BYTES};
use crate::actors::call;
use crate::actors::chunk_cache::{read_run, Block, BlockKey, CacheMsg, Claim, DiskLoc, Slot, BLOCK_BYTES};
use crate::actors::inode_table::{Content, NodeKind};
use crate::actors::prefetch::{Fh, PrefetchMsg, ReadPlan};
use crate::error::{FsError, FsResult};
use crate::hub::RemoteFile;
use crate::types::Ino;

impl Engine {
    /// A claim on `keys` (claimed in the cache's slot lookup) that answers the cache however
    /// the holder ends; `reader`: a reader's claim, not read-ahead's.
    fn claim(&self, keys: Vec<BlockKey>, reader: bool) -> Claim {
        let registry = self.reg().clone();
        let send = move |m| {
            if let Ok(refs) = registry.get() {
                let _ = refs.cache.send_message(m);
            }
        };
        Claim::new(send, keys, reader)
    }

    /// Reads `size` bytes at `offset` of an open file; short only at end of file.
    pub async fn read(&self, fh: Fh, offset: u64, size: u32) -> FsResult<Bytes> {
        let plan =
            call(self.reg(), |r| r.prefetch.clone(), |reply| PrefetchMsg::Plan { fh, offset, size, reply }).await??;
        if plan.file.is_none() {
            return Ok(self.read_local(plan.ino, offset, size).await?.0);
        }
        self.read_planned(plan).await
    }

    /// Reads a file whose bytes are (or were, when its handle was planned) local: from its
    /// staging file, or from the Hub's copy once committed. Returns the bytes and the size.
    async fn read_local(&self, ino: Ino, offset: u64, size: u32) -> FsResult<(Bytes, u64)> {
        let view = self.view(ino).await?;
        let content = match view.kind {
            NodeKind::File(c) => c,
            NodeKind::Dir => return Err(FsError::IsDir),
            NodeKind::Symlink(_) | NodeKind::Special { .. } => {
                return Err(FsError::Invalid("not a regular file".into()))
            }
        };
        let total = content.size();
        let start = offset.min(total);
        let end = offset.saturating_add(size as u64).min(total);
        match content {
            Content::Remote(f) => Ok((self.fetch(&view.path, &f, start..end).await?, total)),
            Content::Local { staging, .. } => {
                let want = (end - start) as usize;
                let mut bytes = self.writes()?.staging.read_at(staging, start, want).await?.to_vec();
                // A file grown by truncate reads zeros past the staging file's end.
                bytes.resize(want, 0);
                Ok((Bytes::from(bytes), total))
            }
        }
    }

    /// Reads a file by inode, without an open (stateless protocols): attributes are
    /// revalidated as for `getattr`, and read-ahead follows the inode's read pattern.
    /// Returns the bytes and the file's size.
    pub async fn read_ino(&self, ino: Ino, offset: u64, size: u32) -> FsResult<(Bytes, u64)> {
        let view = self.view(ino).await?;
        let view = if self.stale(&view) { self.revalidate(view).await? } else { view };
        let file = match view.kind {
            NodeKind::File(Content::Remote(f)) => f,
            NodeKind::File(Content::Local { .. }) => return self.read_local(ino, offset, size).await,
            NodeKind::Dir => return Err(FsError::IsDir),
            NodeKind::Symlink(_) | NodeKind::Special { .. } => {
                return Err(FsError::Invalid("not a regular file".into()))
            }
        };
        let path = view.path.clone();
        let plan = call(
            self.reg(),
            |r| r.prefetch.clone(),
            |reply| PrefetchMsg::PlanIno { ino, path: path.clone(), file: file.clone(), offset, size, reply },
        )
        .await?;
        let bytes = self.read_planned(plan).await?;
        Ok((bytes, file.size))
    }

    async fn read_planned(&self, plan: ReadPlan) -> FsResult<Bytes> {
        tracing::Span::current().record("path", plan.path.as_str());
        let Some(file) = plan.file.clone() else { return Ok(self.read_local(plan.ino, plan.want.start, 0).await?.0) };
        if let Some(ahead) = plan.ahead.clone() {
            // Read-ahead waits for room in the mount-wide budget rather than being dropped: its
            // range is already counted as asked for.
            let (me, path, file) = (self.clone(), plan.path.clone(), file.clone());
            let permits = self.inner.readaheads.clone();
            tokio::spawn(
                async move {
                    let mib = (ahead.end - ahead.start).div_ceil(1 << 20).clamp(1, READAHEAD_BUDGET_MIB as u64);
                    let Ok(_permit) = permits.acquire_many_owned(mib as u32).await else { return };
                    if let Err(e) = me.fetch_blocks(&path, &file, ahead, false).await {
                        tracing::debug!(%path, "read-ahead failed: {e}");
                    }
                }
                .instrument(tracing::Span::current()),
            );
        }
        if plan.want.is_empty() {
            return Ok(Bytes::new());
        }
        self.fetch(&plan.path, &file, plan.want).await
    }

    /// Bytes `range` of a file through the chunk cache, fetching missing blocks (single-flight).
    pub async fn fetch(&self, path: &str, file: &Arc<RemoteFile>, range: Range<u64>) -> FsResult<Bytes> {
        if range.is_empty() {
            return Ok(Bytes::new());
        }
        let (first, parts) = self.fetch_blocks(path, file, range.clone(), true).await?;
        assemble(parts, first * BLOCK_BYTES, range)
    }

    /// Makes sure the blocks covering `range` are cached; with `collect`, returns them
    /// (with the index of the first). Read-ahead only fills the cache and waits for its fetches.
    async fn fetch_blocks(
        &self,
        path: &str,
        file: &Arc<RemoteFile>,
        range: Range<u64>,
        collect: bool,
    ) -> FsResult<(u64, Vec<Block>)> {
        let content = content_key(path, file);
        let whole = file.size <= if file.xet_hash.is_none() { WHOLE_FILE_MAX_BYTES } else { XET_WHOLE_FILE_MAX_BYTES };
        let blocks_total = file.size.div_ceil(BLOCK_BYTES);
        let (first, last) =
            if whole { (0, blocks_total - 1) } else { (range.start / BLOCK_BYTES, (range.end - 1) / BLOCK_BYTES) };
        let keys: Vec<BlockKey> = (first..=last).map(|index| BlockKey { content: content.clone(), index }).collect();
        let slots =
            call(self.reg(), |r| r.cache.clone(), |reply| CacheMsg::Lookup { keys: keys.clone(), reply }).await?;
        if collect {
            let hits = slots.iter().filter(|s| matches!(s, Slot::Mem(_) | Slot::Disk(_))).count();
            let span = tracing::Span::current();
            span.record("cache.hits", hits);
            span.record("cache.misses", slots.len() - hits);
            let source = if hits == slots.len() { "cache" } else { "remote" };
            let want = range.end - range.start;
            crate::metrics::get().read_bytes.add(want, &[crate::metrics::kv("source", source)]);
        }

        // Claimed runs of consecutive blocks are fetched in one request each, in their own tasks:
        // a reader that goes away does not cancel a fetch others may be waiting for.
        let mut runs: Vec<(u64, u64)> = Vec::new();
        for (i, s) in slots.iter().enumerate() {
            if matches!(s, Slot::Fetch) {
                let idx = first + i as u64;
                match runs.last_mut() {
                    Some((_, end)) if *end + 1 == idx => *end = idx,
                    _ => runs.push((idx, idx)),
                }
            }
        }
        let mut run_results = Vec::new();
        let runs = runs.into_iter().flat_map(|(a, b)| {
            (a..=b).step_by(FETCH_MAX_BLOCKS as usize).map(move |s| (s, (s + FETCH_MAX_BLOCKS - 1).min(b)))
        });
        for (a, b) in runs {
            // The claim travels with the task: however it ends, the blocks are answered.
            let keys = (a..=b).map(|index| BlockKey { content: content.clone(), index }).collect();
            let claim = self.claim(keys, collect);
            let (me, path, file) = (self.clone(), path.to_string(), file.clone());
            let task = tokio::spawn(
                async move { me.fetch_run(&path, &file, (a, b), whole, claim).await }
                    .instrument(tracing::Span::current()),
            );
            run_results.push(((a, b), task));
        }

        let mut disk = DiskReads::start(self, (path, file, whole), &keys, &slots, collect);
        let deadline = self.net_timeout();
        let mut parts: Vec<Block> = Vec::with_capacity(slots.len());
        let mut run_data: Option<((u64, u64), Vec<Block>)> = None;
        for (i, slot) in slots.into_iter().enumerate() {
            let idx = first + i as u64;
            if !collect && !matches!(slot, Slot::Fetch | Slot::Disk(_)) {
                continue; // read-ahead: in memory, failed or being fetched by someone else
            }
            let bytes = match slot {
                Slot::Mem(b) => b,
                Slot::Failed(e) => return Err(e),
                // Read-ahead brings disk blocks into memory too, so the reads behind it find them there.
                Slot::Disk(_) => disk.block(i).await?,
                Slot::Wait(mut rx) => {
                    let waited = tokio::time::timeout(deadline, async {
                        loop {
                            if let Some(r) = rx.borrow_and_update().clone() {
                                return r;
                            }
                            if rx.changed().await.is_err() {
                                return Err(FsError::Again("fetch abandoned".into()));
                            }
                        }
                    })
                    .await;
                    waited.map_err(|_| FsError::TimedOut(deadline, format!("{path}: waiting for a block")))??
                }
                Slot::Fetch => {
                    if run_data.as_ref().is_none_or(|((_, b), _)| idx > *b) {
                        let ((a, b), task) = run_results.remove(0);
                        let data = task.await.map_err(|e| FsError::Io(e.to_string()))??;
                        run_data = Some(((a, b), data));
                    }
                    let ((a, _), data) = run_data.as_ref().expect("run fetched");
                    data[(idx - a) as usize].clone()
                }
            };
            parts.push(bytes);
        }
        Ok((first, parts))
    }

    /// Fetches blocks `a..=b` in one remote read and answers their claim with them.
    async fn fetch_run(
        &self,
        path: &str,
        file: &RemoteFile,
        (a, b): (u64, u64),
        whole: bool,
        claim: Claim,
    ) -> FsResult<Vec<Block>> {
        let start = a * BLOCK_BYTES;
        let end = ((b + 1) * BLOCK_BYTES).min(file.size);
        let result = self.inner.remote.read(path, file, start, end).await.and_then(|pieces| {
            let got: u64 = pieces.iter().map(|p| p.len() as u64).sum();
            if got != end - start {
                return Err(FsError::Io(format!("{path}: got {got} bytes for range {start}..{end}")));
            }
            if whole && start == 0 && end == file.size {
                verify_git_blob(path, file, &pieces)?;
            }
            crate::metrics::get().fetch_bytes.add(got, &[]);
            Ok(split_blocks(&pieces, BLOCK_BYTES as usize))
        });
        if let Err(e) = &result {
            tracing::warn!(%path, "fetch of bytes {start}..{end} failed: {e}");
        }
        claim.fill(&result);
        result
    }

    /// Reads a run of claimed disk blocks (slots `loc.slot..` of one segment file) in one read
    /// and answers each claim: a block read back fine is kept in memory too, one that failed
    /// its check (or could not be read) is dropped from the cache and fetched again. Runs in a
    /// task of its own, so a reader that goes away leaves no claim unanswered.
    async fn read_disk_run(
        &self,
        path: &str,
        file: &Arc<RemoteFile>,
        loc: DiskLoc,
        (keys, whole, claim): (Vec<BlockKey>, bool, Claim),
    ) -> Vec<FsResult<Block>> {
        let n = keys.len() as u64;
        let permit = self.inner.disk_reads.clone().acquire_owned().await;
        let read = tokio::task::spawn_blocking(move || read_run(&loc.path, loc.slot, n)).await;
        drop(permit);
        let got: Vec<Option<Block>> = match read.map_err(std::io::Error::other).and_then(|r| r) {
            Ok(blocks) => blocks.into_iter().map(|b| b.map(|(buf, at, len)| Block::new(buf, at, len))).collect(),
            Err(e) => {
                tracing::warn!("cache read failed: {e}");
                Vec::new() // every block of the run is fetched again
            }
        };
        let mut out = Vec::with_capacity(keys.len());
        for (i, key) in keys.iter().enumerate() {
            out.push(self.disk_block(path, file, key, got.get(i).cloned().flatten(), whole, claim.reader()).await);
        }
        claim.answered(); // each block's Promote or Fill answered it
        out
    }

    /// Answers the claim on a block read back from disk (`None`: it failed its check, or could
    /// not be read): kept in memory, or dropped from the cache and fetched again.
    async fn disk_block(
        &self,
        path: &str,
        file: &Arc<RemoteFile>,
        key: &BlockKey,
        got: Option<Block>,
        whole: bool,
        reader: bool,
    ) -> FsResult<Block> {
        let cache = self.reg().get()?.cache;
        if let Some(block) = got {
            let _ = cache.send_message(CacheMsg::Promote { key: key.clone(), block: block.clone() });
            return Ok(block);
        }
        let _ = cache.send_message(CacheMsg::Corrupt { key: key.clone() });
        let start = key.index * BLOCK_BYTES;
        let end = (start + BLOCK_BYTES).min(file.size);
        let (s, e) = if whole { (0, file.size) } else { (start, end) };
        let fetched = async {
            let pieces = self.inner.remote.read(path, file, s, e).await?;
            if whole {
                verify_git_blob(path, file, &pieces)?;
            }
            let data = Bytes::from(pieces.concat());
            if data.len() as u64 != e - s {
                return Err(FsError::Io(format!("{path}: short fetch of {s}..{e}")));
            }
            Ok(Block::new(data, (start - s) as usize, (end - start) as usize))
        }
        .await;
        // As a fetched block: its waiters get it, and it goes back to disk.
        let _ = cache.send_message(CacheMsg::Fill { key: key.clone(), result: fetched.clone(), reader });
        fetched
    }
}

/// The disk blocks of one lookup, claimed by it (others asking meanwhile wait for these reads
/// rather than read the same blocks again), read in runs of consecutive slots of one segment
/// file, at most `DISK_RUN_MAX_BLOCKS` each (a reader catching up with read-ahead waits for a
/// short read, not a whole segment's), every run started at once, each awaited when first needed.
struct DiskReads {
    /// Per slot of the lookup: its run and its place in it.
    of: Vec<Option<(usize, usize)>>,
    runs: Vec<DiskRun>,
}

/// Disk reads of one run at most: 2 MiB, short enough to arrive well before a reader needs the
/// next, long enough for the device's full speed with a few in flight.
const DISK_RUN_MAX_BLOCKS: u64 = 8;

enum DiskRun {
    Reading(tokio::task::JoinHandle<Vec<FsResult<Block>>>),
    Read(Vec<FsResult<Block>>),
}

impl DiskReads {
    /// Starts the reads of the `Slot::Disk` slots among `slots` (blocks `keys`) of `file`.
    fn start(
        engine: &Engine,
        (path, file, whole): (&str, &Arc<RemoteFile>, bool),
        keys: &[BlockKey],
        slots: &[Slot],
        reader: bool,
    ) -> Self {
        let mut of = vec![None; slots.len()];
        let mut runs: Vec<(DiskLoc, Vec<BlockKey>)> = Vec::new();
        for (i, s) in slots.iter().enumerate() {
            let Slot::Disk(loc) = s else { continue };
            let last = runs.len().wrapping_sub(1);
            match runs.last_mut() {
                Some((start, ks))
                    if start.path == loc.path
                        && start.slot + ks.len() as u64 == loc.slot
                        && of[i - 1].is_some()
                        && (ks.len() as u64) < DISK_RUN_MAX_BLOCKS =>
                {
                    of[i] = Some((last, ks.len()));
                    ks.push(keys[i].clone());
                }
                _ => {
                    of[i] = Some((runs.len(), 0));
                    runs.push((loc.clone(), vec![keys[i].clone()]));
                }
            }
        }
        let runs = runs
            .into_iter()
            .map(|(loc, keys)| {
                let claim = engine.claim(keys.clone(), reader);
                let (me, path, file) = (engine.clone(), path.to_string(), file.clone());
                DiskRun::Reading(tokio::spawn(
                    async move { me.read_disk_run(&path, &file, loc, (keys, whole, claim)).await }
                        .instrument(tracing::Span::current()),
                ))
            })
            .collect();
        Self { of, runs }
    }

    /// Slot `i`'s block (read back, or fetched again when its disk copy failed).
    async fn block(&mut self, i: usize) -> FsResult<Block> {
        let (run, at) = self.of[i].ok_or_else(|| FsError::Io("not a disk slot".into()))?;
        if let DiskRun::Reading(task) = &mut self.runs[run] {
            let read = task.await.unwrap_or_else(|e| vec![Err(FsError::Io(format!("cache read: {e}")))]);
            self.runs[run] = DiskRun::Read(read);
        }
        match &self.runs[run] {
            DiskRun::Read(blocks) => {
                blocks.get(at).cloned().unwrap_or_else(|| Err(FsError::Io("cache read came back short".into())))
            }
            DiskRun::Reading(_) => unreachable!("awaited above"),
        }
    }
}

/// The cache key of a file's content: its Xet hash or git oid (content-addressed).
fn content_key(path: &str, file: &RemoteFile) -> Arc<str> {
    match (&file.xet_hash, file.etag.is_empty()) {
        (Some(h), _) => Arc::from(format!("xet:{h}")),
        (None, false) => Arc::from(format!("etag:{}", file.etag)),
        (None, true) => Arc::from(format!("path:{path}:{}", file.size)),
    }
}

/// Cuts consecutive pieces into blocks of `block` bytes (the last may be shorter): views
/// into the piece where a block lies within one, a copy only where a block straddles two.
fn split_blocks(pieces: &[Bytes], block: usize) -> Vec<Block> {
    let total: usize = pieces.iter().map(Bytes::len).sum();
    let mut out = Vec::with_capacity(total.div_ceil(block));
    let (mut piece, mut at) = (0usize, 0usize);
    let mut left = total;
    while left > 0 {
        let want = block.min(left);
        while pieces[piece].len() == at {
            piece += 1;
            at = 0;
        }
        let p = &pieces[piece];
        if p.len() - at >= want {
            out.push(Block::new(p.clone(), at, want));
            at += want;
        } else {
            let mut buf = BytesMut::with_capacity(want);
            while buf.len() < want {
                while pieces[piece].len() == at {
                    piece += 1;
                    at = 0;
                }
                let p = &pieces[piece];
                let take = (want - buf.len()).min(p.len() - at);
                buf.extend_from_slice(&p[at..at + take]);
                at += take;
            }
            out.push(buf.freeze().into());
        }
        left -= want;
    }
    out
}

/// A plain git blob fetched whole must hash to its oid (when the etag is one).
fn verify_git_blob(path: &str, file: &RemoteFile, pieces: &[Bytes]) -> FsResult<()> {
    use sha1::{Digest, Sha1};
    let etag = &file.etag;
    if etag.len() != 40 || !etag.chars().all(|c| c.is_ascii_hexdigit()) {
        return Ok(());
    }
    let len: usize = pieces.iter().map(Bytes::len).sum();
    let mut h = Sha1::new();
    h.update(format!("blob {len}\0").as_bytes());
    for p in pieces {
        h.update(p);
    }
    let got = hex::encode(h.finalize());
    if got != *etag {
        return Err(FsError::Io(format!("{path}: content hash {got} does not match {etag}")));
    }
    Ok(())
}

/// Cuts `range` out of consecutive blocks starting at byte `base`; never short. Blocks that
/// continue each other in one fetched buffer are answered as a view of it (no copy).
fn assemble(parts: Vec<Block>, base: u64, range: Range<u64>) -> FsResult<Bytes> {
    let want = (range.end - range.start) as usize;
    let skip = (range.start - base) as usize;
    if want == 0 {
        return Ok(Bytes::new());
    }
    let have: usize = parts.iter().map(Block::len).sum();
    if have < skip + want {
        return Err(FsError::Io(format!("assembled {} of {want} bytes", have.saturating_sub(skip))));
    }
    // Only the blocks that hold part of the range matter.
    let (mut first, mut pos) = (0usize, 0usize);
    while pos + parts[first].len() <= skip {
        pos += parts[first].len();
        first += 1;
    }
    let (from, mut last, mut end) = (skip - pos, first, pos + parts[first].len());
    while end < skip + want {
        last += 1;
        end += parts[last].len();
    }
    let used = &parts[first..=last];
    if used.windows(2).all(|w| w[0].continued_by(&w[1])) {
        return Ok(used[0].span(from..from + want));
    }
    let mut out = BytesMut::with_capacity(want);
    let mut pos = 0usize;
    for p in used {
        let bytes = p.bytes();
        let (s, e) = (pos, pos + p.len());
        pos = e;
        let (lo, hi) = (from.max(s), (from + want).min(e));
        if lo < hi {
            out.extend_from_slice(&bytes[lo - s..hi - s]);
        }
    }
    Ok(out.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assemble_cuts_across_blocks_and_never_returns_short() {
        let parts: Vec<Block> =
            [&b"abcd"[..], b"efgh", b"ij"].into_iter().map(|b| Bytes::from_static(b).into()).collect();
        assert_eq!(assemble(parts.clone(), 100, 102..109).unwrap(), "cdefghi");
        assert_eq!(assemble(vec![parts[0].clone()], 100, 101..103).unwrap(), "bc");
        assert_eq!(assemble(parts.clone(), 100, 105..110).unwrap(), "fghij");
        assert!(assemble(parts.clone(), 100, 102..120).is_err());
        assert_eq!(assemble(parts, 100, 110..110).unwrap(), "");
    }

    #[test]
    fn assemble_answers_neighbours_of_one_buffer_without_a_copy() {
        let run = Bytes::from_static(b"abcdefghijkl");
        let parts = split_blocks(std::slice::from_ref(&run), 4);
        let got = assemble(parts.clone(), 0, 2..11).unwrap();
        assert_eq!(got, "cdefghijk");
        assert_eq!(got.as_ptr(), run[2..].as_ptr(), "a view of the fetched buffer");
        // Blocks of different buffers are copied.
        let other: Vec<Block> = vec![parts[0].clone(), Bytes::copy_from_slice(b"efgh").into()];
        let got = assemble(other, 0, 2..6).unwrap();
        assert_eq!(got, "cdef");
        assert_ne!(got.as_ptr(), run[2..].as_ptr());
    }

    #[test]
    fn git_blob_verification() {
        let f = RemoteFile {
            size: 6,
            xet_hash: None,
            etag: "ce013625030ba8dba906f756967f9e9ca394464a".into(),
            mtime: None,
            ..Default::default()
        };
        assert!(verify_git_blob("x", &f, &[Bytes::from_static(b"hel"), Bytes::from_static(b"lo\n")]).is_ok());
        assert!(verify_git_blob("x", &f, &[Bytes::from_static(b"hellO\n")]).is_err());
    }

    #[test]
    fn blocks_split_across_pieces() {
        let pieces = [Bytes::from_static(b"abcde"), Bytes::from_static(b"fg"), Bytes::from_static(b"hijklmn")];
        let blocks = split_blocks(&pieces, 4);
        let got: Vec<Bytes> = blocks.iter().map(Block::bytes).collect();
        assert_eq!(got, [&b"abcd"[..], b"efgh", b"ijkl", b"mn"]);
    }
}
