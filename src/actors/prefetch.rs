//! The prefetch scheduler: the table of open handles and, per file handle,
//! the read pattern that sizes its read-ahead window. Sequential reads double
//! the window up to a cap; a jump resets it, so random access fetches only
//! what is asked. Directory handles hold the listing snapshot a `readdir`
//! pages through, so paging a huge directory costs its entries once.
//!
//! State lives in an `Arc<Mutex<_>>` the supervisor keeps: open handles
//! survive a restart of this actor.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;

use parking_lot::Mutex;
use ractor::{ActorProcessingErr, ActorRef, RpcReplyPort};

use super::inode_table::Ino;
use crate::error::{FsError, FsResult};
use crate::hub::RemoteFile;

/// The first read-ahead after two sequential reads.
pub const PREFETCH_MIN_WINDOW_BYTES: u64 = 1 << 20;
/// How far from the previous read's end a read may start and still be sequential.
pub const SEQUENTIAL_SLACK_BYTES: u64 = 4 << 20;
/// The read-ahead window never grows past this (per handle).
pub const PREFETCH_MAX_WINDOW_BYTES: u64 = 64 << 20;

pub type Fh = u64;

/// The entries of an open directory, as listed when it was opened.
pub type DirSnapshot = Arc<Vec<crate::engine::DirEntry>>;

struct FileHandle {
    ino: Ino,
    path: String,
    file: Arc<RemoteFile>,
    /// End of the last read; a read starting here is sequential.
    last_end: u64,
    window: u64,
    /// Read-ahead already asked up to here.
    ahead_to: u64,
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

/// What a read needs: the bytes asked, and what to fetch ahead in the background.
#[derive(Debug, Clone)]
pub struct ReadPlan {
    pub ino: Ino,
    pub path: String,
    pub file: Arc<RemoteFile>,
    pub want: Range<u64>,
    pub ahead: Option<Range<u64>>,
}

pub enum PrefetchMsg {
    OpenFile {
        ino: Ino,
        path: String,
        file: Arc<RemoteFile>,
        reply: RpcReplyPort<Fh>,
    },
    Plan {
        fh: Fh,
        offset: u64,
        size: u32,
        reply: RpcReplyPort<FsResult<ReadPlan>>,
    },
    /// A read without an open: planned on the inode's implicit handle (made or refreshed here).
    PlanIno {
        ino: Ino,
        path: String,
        file: Arc<RemoteFile>,
        offset: u64,
        size: u32,
        reply: RpcReplyPort<ReadPlan>,
    },
    ReleaseFile {
        fh: Fh,
        reply: RpcReplyPort<Option<Ino>>,
    },
    OpenDir {
        entries: DirSnapshot,
        reply: RpcReplyPort<Fh>,
    },
    DirEntries {
        fh: Fh,
        reply: RpcReplyPort<FsResult<DirSnapshot>>,
    },
    ReleaseDir {
        fh: Fh,
    },
    /// `(open file handles, total read-ahead window bytes)`, for tests and metrics.
    Stats {
        reply: RpcReplyPort<(usize, u64)>,
    },
}

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
        PrefetchMsg::OpenFile { ino, path, file, reply } => {
            let fh = st.next_fh;
            st.next_fh += 1;
            st.files.insert(fh, FileHandle { ino, path, file, last_end: u64::MAX, window: 0, ahead_to: 0 });
            let _ = reply.send(fh);
        }
        PrefetchMsg::Plan { fh, offset, size, reply } => {
            let _ = reply.send(st.files.get_mut(&fh).ok_or(FsError::Stale).map(|h| plan(h, offset, size)));
        }
        PrefetchMsg::PlanIno { ino, path, file, offset, size, reply } => {
            let fresh = st.implicit.get(&ino).is_none_or(|h| h.file != file);
            if fresh {
                if st.implicit.len() >= IMPLICIT_HANDLES_MAX {
                    let victim = st.implicit.keys().next().copied();
                    if let Some(v) = victim {
                        st.implicit.remove(&v);
                    }
                }
                st.implicit.insert(ino, FileHandle { ino, path, file, last_end: u64::MAX, window: 0, ahead_to: 0 });
            }
            let h = st.implicit.get_mut(&ino).expect("inserted above");
            let _ = reply.send(plan(h, offset, size));
        }
        PrefetchMsg::ReleaseFile { fh, reply } => {
            let _ = reply.send(st.files.remove(&fh).map(|h| h.ino));
        }
        PrefetchMsg::OpenDir { entries, reply } => {
            let fh = st.next_fh;
            st.next_fh += 1;
            st.dirs.insert(fh, entries);
            let _ = reply.send(fh);
        }
        PrefetchMsg::DirEntries { fh, reply } => {
            let _ = reply.send(st.dirs.get(&fh).cloned().ok_or(FsError::Stale));
        }
        PrefetchMsg::ReleaseDir { fh } => {
            st.dirs.remove(&fh);
        }
        PrefetchMsg::Stats { reply } => {
            let _ = reply.send((st.files.len(), st.files.values().map(|h| h.window).sum()));
        }
    }
    Ok(())
}

/// Updates a handle's pattern with a read and says what to fetch.
fn plan(h: &mut FileHandle, offset: u64, size: u32) -> ReadPlan {
    let size_total = h.file.size;
    let end = (offset + size as u64).min(size_total);
    let want = offset.min(size_total)..end;
    // Concurrent requests of one sequential stream can arrive slightly out of order:
    // a read near the previous end still counts as sequential.
    let sequential = h.last_end != u64::MAX
        && offset <= h.last_end.saturating_add(SEQUENTIAL_SLACK_BYTES)
        && offset.saturating_add(SEQUENTIAL_SLACK_BYTES) >= h.last_end;
    if sequential {
        h.window =
            if h.window == 0 { PREFETCH_MIN_WINDOW_BYTES } else { (h.window * 2).min(PREFETCH_MAX_WINDOW_BYTES) };
        h.last_end = h.last_end.max(end);
    } else {
        h.window = 0;
        h.ahead_to = 0;
        h.last_end = end;
    }
    if h.window > 0 {
        crate::metrics::get().prefetch_window.record(h.window, &[]);
    }
    let ahead = if h.window > 0 && end < size_total {
        let from = h.ahead_to.max(end);
        let to = (end + h.window).min(size_total);
        // Ask for more only once half of the window ahead is used up.
        (to > from && from < end + h.window / 2).then(|| {
            h.ahead_to = to;
            from..to
        })
    } else {
        None
    };
    ReadPlan { ino: h.ino, path: h.path.clone(), file: h.file.clone(), want, ahead }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handle(size: u64) -> FileHandle {
        let file = Arc::new(RemoteFile { size, xet_hash: None, etag: "e".into(), mtime: None });
        FileHandle { ino: 2, path: "f".into(), file, last_end: u64::MAX, window: 0, ahead_to: 0 }
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
            windows.push(h.window);
        }
        assert!(windows.windows(2).all(|w| w[1] >= w[0]));
        assert_eq!(*windows.last().unwrap(), PREFETCH_MAX_WINDOW_BYTES);
        let p = plan(&mut h, 500 << 20, 4096);
        assert!(p.ahead.is_none() && h.window == 0, "random access fetches only what is asked");
        assert_eq!(p.want, (500 << 20)..(500 << 20) + 4096);
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
