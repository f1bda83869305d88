//! The prefetch scheduler: the table of open handles and, per file handle,
//! the read patterns that size its read-ahead windows. A handle follows up to
//! `STREAMS_PER_HANDLE` sequential streams at once (threads reading different
//! parts of a file through one descriptor, as model loaders do): a read
//! continues the stream it lands next to, else starts a new one. Sequential
//! reads double a stream's window up to a cap; a read that continues nothing
//! gets no read-ahead, so random access fetches only what is asked. Directory handles hold the listing snapshot a `readdir`
//! pages through, so paging a huge directory costs its entries once.
//!
//! State lives in an `Arc<Mutex<_>>` the supervisor keeps: open handles
//! survive a restart of this actor.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;

use crate::actors::Reply;
use parking_lot::Mutex;
use ractor::{ActorProcessingErr, ActorRef};

use crate::error::{FsError, FsResult};
use crate::hub::{RemoteFile, StreamingUpload};
use crate::types::{Ino, StagingId};

/// The first read-ahead after two sequential reads.
pub const PREFETCH_MIN_WINDOW_BYTES: u64 = 1 << 20;
/// How far from the previous read's end a read may start and still be sequential.
pub const SEQUENTIAL_SLACK_BYTES: u64 = 4 << 20;
/// A stream's read-ahead window never grows past this.
pub const PREFETCH_MAX_WINDOW_BYTES: u64 = 64 << 20;
/// A read this close to a new stream's end continues it; an established stream (read ahead
/// already) takes anything within `SEQUENTIAL_SLACK_BYTES`.
pub const CLOSE_BYTES: u64 = 256 << 10;
/// Sequential streams followed per handle; the least recently read is forgotten first.
pub const STREAMS_PER_HANDLE: usize = 8;

pub type Fh = u64;

/// The entries of an open directory, as listed when it was opened.
pub type DirSnapshot = Arc<Vec<crate::types::DirEntry>>;

/// How a handle writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteMode {
    /// Sequential bytes streamed into an upload as they arrive; committed at close.
    Stream,
    /// Any writes into the staging file; committed by the flusher (debounced, or at close in
    /// the default mode).
    Staged,
}

/// The write side of an open file.
#[derive(Clone)]
pub struct WriteHandle {
    pub mode: WriteMode,
    pub staging: StagingId,
    /// Who opened it: a flush from another process (an inherited descriptor) commits nothing.
    pub pid: u32,
    /// What needs committing: a new file, one cut at open, bytes written.
    pub created: bool,
    pub truncated: bool,
    pub wrote: bool,
    /// Stream mode: the upload and the next offset it expects.
    pub stream: Option<Arc<tokio::sync::Mutex<StreamingUpload>>>,
}

impl WriteHandle {
    pub fn dirty(&self) -> bool {
        self.created || self.truncated || self.wrote
    }
}

/// One sequential stream through a file.
#[derive(Debug, Clone, Copy)]
struct Stream {
    /// End of the stream's last read; a read starting near it continues the stream.
    last_end: u64,
    window: u64,
    /// Read-ahead already asked up to here.
    ahead_to: u64,
    /// When it was last read (the handle's read count).
    used: u64,
}

struct FileHandle {
    ino: Ino,
    path: String,
    /// The Hub's bytes this handle reads; `None`: the bytes are local (read from staging).
    file: Option<Arc<RemoteFile>>,
    streams: Vec<Stream>,
    reads: u64,
    write: Option<WriteHandle>,
}

impl FileHandle {
    fn new(ino: Ino, path: String, file: Option<Arc<RemoteFile>>) -> Self {
        Self { ino, path, file, streams: Vec::new(), reads: 0, write: None }
    }

    fn window(&self) -> u64 {
        self.streams.iter().map(|s| s.window).sum()
    }
}

/// Implicit per-file handles kept at most (stateless protocols such as NFS).
const IMPLICIT_HANDLES_MAX: usize = 4096;

pub struct HandleState {
    files: HashMap<Fh, FileHandle>,
    dirs: HashMap<Fh, DirSnapshot>,
    /// Handles made for reads that come without an open (NFS), one per inode.
    implicit: HashMap<Ino, FileHandle>,
    next_fh: Fh,
}

impl Default for HandleState {
    fn default() -> Self {
        Self { files: HashMap::new(), dirs: HashMap::new(), implicit: HashMap::new(), next_fh: 1 }
    }
}

/// A read-only look at the open handles, for the engine's write path: a write, a flush and
/// an fsync each need their handle's write side, and a message round trip for it was a tenth
/// of a small file's time. Nothing changes through it (changes stay messages to the actor);
/// what it answers can lag a change still in the actor's mailbox (`MarkWrote`,
/// `MarkCommitted`), so callers that must see those ask the actor (see `Engine::write_info`).
#[derive(Clone)]
pub struct HandleView(Arc<Mutex<HandleState>>);

impl HandleView {
    pub fn new(state: Arc<Mutex<HandleState>>) -> Self {
        Self(state)
    }

    /// A file handle's inode and write side (`None`: no such handle).
    pub fn write_info(&self, fh: Fh) -> Option<(Ino, Option<WriteHandle>)> {
        self.0.lock().files.get(&fh).map(|h| (h.ino, h.write.clone()))
    }
}

/// What a read needs: the bytes asked, and what to fetch ahead in the background.
#[derive(Debug, Clone)]
pub struct ReadPlan {
    pub ino: Ino,
    pub path: String,
    /// `None`: the bytes are local; `want` is not clamped to the size (the caller knows it).
    pub file: Option<Arc<RemoteFile>>,
    pub want: Range<u64>,
    pub ahead: Option<Range<u64>>,
}

pub enum PrefetchMsg {
    OpenFile {
        ino: Ino,
        path: String,
        file: Option<Arc<RemoteFile>>,
        write: Option<WriteHandle>,
        reply: Reply<Fh>,
    },
    /// The bytes of `ino` moved (to local staging, or to the Hub's copy after a commit).
    Retarget {
        ino: Ino,
        file: Option<Arc<RemoteFile>>,
    },
    /// The inode and write side of a handle.
    WriteInfo {
        fh: Fh,
        reply: Reply<FsResult<(Ino, Option<WriteHandle>)>>,
    },
    /// The handle wrote something.
    MarkWrote {
        fh: Fh,
    },
    /// What the handle changed is committed.
    MarkCommitted {
        fh: Fh,
    },
    Plan {
        fh: Fh,
        offset: u64,
        size: u32,
        reply: Reply<FsResult<ReadPlan>>,
    },
    /// A read without an open: planned on the inode's implicit handle (made or refreshed here).
    PlanIno {
        ino: Ino,
        path: String,
        file: Arc<RemoteFile>,
        offset: u64,
        size: u32,
        reply: Reply<ReadPlan>,
    },
    ReleaseFile {
        fh: Fh,
        reply: Reply<Option<(Ino, Option<WriteHandle>)>>,
    },
    OpenDir {
        entries: DirSnapshot,
        reply: Reply<Fh>,
    },
    DirEntries {
        fh: Fh,
        reply: Reply<FsResult<DirSnapshot>>,
    },
    ReleaseDir {
        fh: Fh,
    },
    /// `(open file handles, total read-ahead window bytes)`, for tests and metrics.
    Stats {
        reply: Reply<(usize, u64)>,
    },
}

crate::actors::call::request!(PrefetchMsg, "prefetch actor");

pub struct Prefetch;

supervised_actor!(Prefetch, PrefetchMsg, Arc<Mutex<HandleState>>, "actor.prefetch");

/// The actor's message handling: synchronous (work that waits runs in spawned tasks).
fn on_message(
    _: ActorRef<PrefetchMsg>,
    msg: PrefetchMsg,
    state: &mut Arc<Mutex<HandleState>>,
) -> Result<(), ActorProcessingErr> {
    let mut st = state.lock();
    match msg {
        PrefetchMsg::OpenFile { ino, path, file, write, reply } => {
            let fh = st.next_fh;
            st.next_fh += 1;
            let mut h = FileHandle::new(ino, path, file);
            h.write = write;
            st.files.insert(fh, h);
            let _ = reply.send(fh);
        }
        PrefetchMsg::Retarget { ino, file } => {
            for h in st.files.values_mut().filter(|h| h.ino == ino) {
                h.file = file.clone();
                h.streams.clear();
            }
            st.implicit.remove(&ino);
        }
        PrefetchMsg::WriteInfo { fh, reply } => {
            let _ = reply.send(st.files.get(&fh).ok_or(FsError::BadHandle).map(|h| (h.ino, h.write.clone())));
        }
        PrefetchMsg::MarkWrote { fh } => {
            if let Some(w) = st.files.get_mut(&fh).and_then(|h| h.write.as_mut()) {
                w.wrote = true;
            }
        }
        PrefetchMsg::MarkCommitted { fh } => {
            if let Some(w) = st.files.get_mut(&fh).and_then(|h| h.write.as_mut()) {
                (w.created, w.truncated, w.wrote) = (false, false, false);
            }
        }
        PrefetchMsg::Plan { fh, offset, size, reply } => {
            let _ = reply.send(st.files.get_mut(&fh).ok_or(FsError::BadHandle).map(|h| plan(h, offset, size)));
        }
        PrefetchMsg::PlanIno { ino, path, file, offset, size, reply } => {
            let file = Some(file);
            let fresh = st.implicit.get(&ino).is_none_or(|h| h.file != file);
            if fresh {
                if st.implicit.len() >= IMPLICIT_HANDLES_MAX {
                    let victim = st.implicit.keys().next().copied();
                    if let Some(v) = victim {
                        st.implicit.remove(&v);
                    }
                }
                st.implicit.insert(ino, FileHandle::new(ino, path, file));
            }
            let h = st.implicit.get_mut(&ino).expect("inserted above");
            let _ = reply.send(plan(h, offset, size));
        }
        PrefetchMsg::ReleaseFile { fh, reply } => {
            let _ = reply.send(st.files.remove(&fh).map(|h| (h.ino, h.write)));
        }
        PrefetchMsg::OpenDir { entries, reply } => {
            let fh = st.next_fh;
            st.next_fh += 1;
            st.dirs.insert(fh, entries);
            let _ = reply.send(fh);
        }
        PrefetchMsg::DirEntries { fh, reply } => {
            let _ = reply.send(st.dirs.get(&fh).cloned().ok_or(FsError::BadHandle));
        }
        PrefetchMsg::ReleaseDir { fh } => {
            st.dirs.remove(&fh);
        }
        PrefetchMsg::Stats { reply } => {
            let _ = reply.send((st.files.len(), st.files.values().map(FileHandle::window).sum()));
        }
    }
    Ok(())
}

/// Updates a handle's patterns with a read and says what to fetch.
fn plan(h: &mut FileHandle, offset: u64, size: u32) -> ReadPlan {
    let Some(file) = h.file.clone() else {
        let want = offset..offset.saturating_add(size as u64);
        return ReadPlan { ino: h.ino, path: h.path.clone(), file: None, want, ahead: None };
    };
    let size_total = file.size;
    let end = offset.saturating_add(size as u64).min(size_total);
    let want = offset.min(size_total)..end;
    h.reads += 1;
    // Concurrent requests of one sequential stream can arrive slightly out of order:
    // a read near a stream's end still continues it. The nearest stream wins.
    // A stream already read ahead continues on any read within the slack; a new one only on a
    // read close to its end, so random reads landing near some earlier read start nothing.
    let near = h
        .streams
        .iter()
        .enumerate()
        .filter(|(_, s)| {
            let slack = if s.window > 0 { SEQUENTIAL_SLACK_BYTES } else { CLOSE_BYTES };
            offset <= s.last_end.saturating_add(slack) && offset.saturating_add(slack) >= s.last_end
        })
        .min_by_key(|(_, s)| s.last_end.abs_diff(offset))
        .map(|(i, _)| i);
    let stream = match near {
        Some(i) => {
            let s = &mut h.streams[i];
            s.window =
                if s.window == 0 { PREFETCH_MIN_WINDOW_BYTES } else { (s.window * 2).min(PREFETCH_MAX_WINDOW_BYTES) };
            crate::metrics::get().prefetch_window.record(s.window, &[]);
            s.last_end = s.last_end.max(end);
            s.used = h.reads;
            s
        }
        None => {
            let fresh = Stream { last_end: end, window: 0, ahead_to: 0, used: h.reads };
            if h.streams.len() < STREAMS_PER_HANDLE {
                h.streams.push(fresh);
                h.streams.last_mut().expect("just pushed")
            } else {
                let oldest = h.streams.iter_mut().min_by_key(|s| s.used).expect("streams are full");
                *oldest = fresh;
                oldest
            }
        }
    };
    let ahead = if stream.window > 0 && end < size_total {
        let from = stream.ahead_to.max(end);
        let to = (end + stream.window).min(size_total);
        // Ask for more only once half of the window ahead is used up.
        (to > from && from < end + stream.window / 2).then(|| {
            stream.ahead_to = to;
            from..to
        })
    } else {
        None
    };
    ReadPlan { ino: h.ino, path: h.path.clone(), file: Some(file), want, ahead }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handle(size: u64) -> FileHandle {
        let file = Arc::new(RemoteFile { size, xet_hash: None, etag: "e".into(), mtime: None, ..Default::default() });
        FileHandle::new(2, "f".into(), Some(file))
    }

    #[test]
    fn sequential_reads_grow_the_window_and_jumps_reset_it() {
        let mut h = handle(1 << 30);
        let p = plan(&mut h, 0, 131072);
        assert!(p.ahead.is_none(), "one read is not a pattern");
        let p = plan(&mut h, 131072, 131072);
        assert_eq!(p.ahead, Some(262144..262144 + PREFETCH_MIN_WINDOW_BYTES));
        let mut windows = vec![];
        let mut off = 262144;
        for _ in 0..12 {
            plan(&mut h, off, 131072);
            off += 131072;
            windows.push(h.window());
        }
        assert!(windows.windows(2).all(|w| w[1] >= w[0]));
        assert_eq!(*windows.last().unwrap(), PREFETCH_MAX_WINDOW_BYTES);
        let p = plan(&mut h, 500 << 20, 4096);
        assert!(p.ahead.is_none(), "random access fetches only what is asked");
        assert_eq!(p.want, (500 << 20)..(500 << 20) + 4096);
        for i in 0..20u64 {
            let p = plan(&mut h, (i * 37 % 97) * (10 << 20), 4096);
            assert!(p.ahead.is_none(), "random read {i} was read ahead");
        }
        // Reads landing within the slack of a new stream's end, but not close, start nothing.
        for k in 1..4u64 {
            let p = plan(&mut h, (370 << 20) + 4096 + k * (1 << 20), 4096);
            assert!(p.ahead.is_none(), "a loose continuation of a new stream started read-ahead");
        }
    }

    #[test]
    fn interleaved_streams_on_one_handle_each_get_read_ahead() {
        let mut h = handle(1 << 30);
        let quarter = 256u64 << 20;
        let mut off = [0, quarter, 2 * quarter, 3 * quarter];
        let mut ahead = [0u64; 4];
        for _ in 0..16 {
            for (t, o) in off.iter_mut().enumerate() {
                if let Some(a) = plan(&mut h, *o, 1 << 20).ahead {
                    assert!(a.start >= *o && a.end <= (t as u64 + 1) * quarter + PREFETCH_MAX_WINDOW_BYTES);
                    ahead[t] += a.end - a.start;
                }
                *o += 1 << 20;
            }
        }
        assert_eq!(h.streams.len(), 4);
        assert!(ahead.iter().all(|a| *a >= 16 << 20), "each stream reads ahead: {ahead:?}");
        // A ninth stream replaces the least recently read one, never grows the table.
        for i in 0..STREAMS_PER_HANDLE as u64 {
            plan(&mut h, 1000 + i * (40 << 20), 4096);
        }
        assert_eq!(h.streams.len(), STREAMS_PER_HANDLE);
    }

    #[test]
    fn reads_are_clamped_at_eof() {
        let mut h = handle(1000);
        let p = plan(&mut h, 900, 4096);
        assert_eq!(p.want, 900..1000);
        let p = plan(&mut h, 2000, 10);
        assert_eq!(p.want, 1000..1000);
    }
}
