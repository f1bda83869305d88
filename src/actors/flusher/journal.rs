//! The journal: an append-only file under the mount's cache dir that holds
//! everything not yet committed to the Hub and every local attribute the Hub
//! cannot store. Each record is framed `magic | length | crc32 | JSON`; a
//! record is written before the operation it describes returns, so a crash
//! (even SIGKILL) loses nothing acknowledged. Replaying folds the records
//! into an `Overlay` (what the paths must become); a torn tail is skipped, a
//! corrupt record in the middle is skipped with a loud log line and the rest
//! replayed. When the file has grown well past what the overlay needs, it is
//! rewritten as a snapshot (written aside, synced, renamed over).

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::types::StagingId;

const MAGIC: u32 = 0x4846_4a31; // "HFJ1"
const HEADER_BYTES: usize = 12;
/// A record longer than this is not one (a corrupt length).
const MAX_RECORD_BYTES: usize = 16 << 20;
/// The file is rewritten once it is this much larger than a snapshot of the overlay would be.
const COMPACT_RATIO: u64 = 4;
/// …and no smaller than this: each rewrite syncs a file and its directory (milliseconds a
/// close waited for, every 180 held 4 KiB files at 1 MiB), and replaying 8 MiB at mount
/// takes tens of milliseconds.
const COMPACT_MIN_BYTES: u64 = 8 << 20;
/// The buffer an append starts with: a held 4 KiB file's record is about 5.6 KB.
const APPEND_CAPACITY: usize = 8 << 10;

/// A time as nanoseconds since the epoch.
pub type Nanos = i64;

/// The local attributes of one path.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct MetaRec {
    pub perm: u16,
    pub uid: u32,
    pub gid: u32,
    pub atime: Nanos,
    pub mtime: Nanos,
    pub ctime: Nanos,
}

/// What a pending path must hold.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct PutRec {
    /// The bytes are in this staging file (the first `size` of it)…
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub staging: Option<StagingId>,
    /// …or are a Xet file the CAS has (a rename or link of committed content).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash: Option<String>,
    /// The bytes of a staging file held in memory (see `staging`): this record is what keeps
    /// them across a crash. Base64 in the JSON.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "base64_bytes")]
    pub data: Option<Bytes>,
    pub size: u64,
    pub mtime: Nanos,
}

mod base64_bytes {
    use base64::Engine as _;
    use bytes::Bytes;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<Bytes>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(b) => s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(b)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Bytes>, D::Error> {
        let Some(text) = Option::<String>::deserialize(d)? else { return Ok(None) };
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .map(|b| Some(Bytes::from(b)))
            .map_err(serde::de::Error::custom)
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Record {
    /// `path` must hold this content on the Hub (an acknowledged state: close, fsync, rename).
    Put {
        path: String,
        #[serde(flatten)]
        put: PutRec,
    },
    /// `path` must not exist on the Hub.
    Delete {
        path: String,
    },
    /// `path` is committed (or no longer needs anything): nothing pending for it.
    Done {
        path: String,
    },
    Meta {
        path: String,
        #[serde(flatten)]
        meta: MetaRec,
    },
    MetaGone {
        path: String,
    },
    /// A directory that exists locally whatever the Hub lists.
    Dir {
        path: String,
    },
    DirGone {
        path: String,
    },
    Symlink {
        path: String,
        target: String,
    },
    SymlinkGone {
        path: String,
    },
    /// A fifo (`fifo`), socket (`socket`) or device node (`char`, `block` with `rdev`).
    Special {
        path: String,
        kind: String,
        rdev: u32,
    },
    SpecialGone {
        path: String,
    },
    /// A stateless protocol's handle for the file at `path`: (boot, inode) when it was written.
    Handle {
        path: String,
        boot: u64,
        ino: u64,
    },
}

impl Record {
    pub fn path(&self) -> &str {
        match self {
            Record::Put { path, .. }
            | Record::Delete { path }
            | Record::Done { path }
            | Record::Meta { path, .. }
            | Record::MetaGone { path }
            | Record::Dir { path }
            | Record::DirGone { path }
            | Record::Symlink { path, .. }
            | Record::SymlinkGone { path }
            | Record::Special { path, .. }
            | Record::SpecialGone { path }
            | Record::Handle { path, .. } => path,
        }
    }
}

/// What the records say, folded: the state to show and to commit.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Overlay {
    pub puts: BTreeMap<String, PutRec>,
    pub deletes: BTreeSet<String>,
    pub meta: BTreeMap<String, MetaRec>,
    pub dirs: BTreeSet<String>,
    pub symlinks: BTreeMap<String, String>,
    pub specials: BTreeMap<String, (String, u32)>,
    /// Handles of files written through a stateless protocol, while their writes are pending.
    pub handles: BTreeMap<String, (u64, u64)>,
}

impl Overlay {
    pub fn apply(&mut self, r: &Record) {
        match r {
            Record::Put { path, put } => {
                self.deletes.remove(path);
                self.puts.insert(path.clone(), put.clone());
            }
            Record::Delete { path } => {
                self.puts.remove(path);
                self.handles.remove(path);
                self.deletes.insert(path.clone());
            }
            Record::Done { path } => {
                self.puts.remove(path);
                self.handles.remove(path);
                self.deletes.remove(path);
            }
            Record::Meta { path, meta } => {
                self.meta.insert(path.clone(), *meta);
            }
            Record::MetaGone { path } => {
                self.meta.remove(path);
            }
            Record::Dir { path } => {
                self.dirs.insert(path.clone());
            }
            Record::DirGone { path } => {
                self.dirs.remove(path);
            }
            Record::Symlink { path, target } => {
                self.symlinks.insert(path.clone(), target.clone());
            }
            Record::SymlinkGone { path } => {
                self.symlinks.remove(path);
            }
            Record::Special { path, kind, rdev } => {
                self.specials.insert(path.clone(), (kind.clone(), *rdev));
            }
            Record::SpecialGone { path } => {
                self.specials.remove(path);
            }
            Record::Handle { path, boot, ino } => {
                self.handles.insert(path.clone(), (*boot, *ino));
            }
        }
    }

    /// Paths with something to commit (content or a deletion).
    pub fn pending(&self) -> impl Iterator<Item = &String> {
        self.puts.keys().chain(self.deletes.iter())
    }

    /// Whether a staging file is still needed by a pending path.
    pub fn uses_staging(&self, id: StagingId) -> bool {
        self.puts.values().any(|p| p.staging == Some(id))
    }

    /// The records that rebuild this overlay.
    fn snapshot(&self) -> Vec<Record> {
        let mut out = Vec::new();
        out.extend(self.dirs.iter().map(|p| Record::Dir { path: p.clone() }));
        out.extend(self.symlinks.iter().map(|(p, t)| Record::Symlink { path: p.clone(), target: t.clone() }));
        out.extend(self.specials.iter().map(|(p, (k, r))| Record::Special {
            path: p.clone(),
            kind: k.clone(),
            rdev: *r,
        }));
        out.extend(self.meta.iter().map(|(p, m)| Record::Meta { path: p.clone(), meta: *m }));
        out.extend(self.puts.iter().map(|(p, put)| Record::Put { path: p.clone(), put: put.clone() }));
        out.extend(self.handles.iter().map(|(p, (boot, ino))| Record::Handle {
            path: p.clone(),
            boot: *boot,
            ino: *ino,
        }));
        out.extend(self.deletes.iter().map(|p| Record::Delete { path: p.clone() }));
        out
    }
}

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("journal {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl JournalError {
    fn io(path: &Path, source: std::io::Error) -> Self {
        JournalError::Io { path: path.to_path_buf(), source }
    }
}

/// What replaying found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Replay {
    pub records: usize,
    /// Records that failed their check and were skipped (a torn tail counts as one).
    pub skipped: usize,
    pub torn_tail: bool,
}

pub struct Journal {
    path: PathBuf,
    file: Arc<File>,
    overlay: Overlay,
    bytes: u64,
    /// The size past which compaction is considered again.
    compact_at: u64,
    /// The number of the last append; each pending path's is in `seqs` (none: 0).
    last_seq: u64,
    seqs: std::collections::HashMap<String, u64>,
}

/// The journal, appended to by the flusher and, for a close answered on the FUSE thread,
/// by the engine (which then tells the flusher, `FlushMsg::Recorded`): one lock keeps each
/// append whole and the sequence numbers in order, so a commit's `Done` is written only if
/// no record for its path came after the state it committed (`Journal::append_done`).
pub type SharedJournal = Arc<parking_lot::Mutex<Journal>>;

fn frame(r: &Record) -> Vec<u8> {
    let mut out = Vec::new();
    frame_into(&mut out, r);
    out
}

/// Appends `r`, framed, to `out`: its JSON is written in place behind the header (a held
/// file's record carries its bytes: no copy of the body is made).
fn frame_into(out: &mut Vec<u8>, r: &Record) {
    let at = out.len();
    out.extend_from_slice(&[0; HEADER_BYTES]);
    serde_json::to_writer(&mut *out, r).expect("records serialize");
    let body = &out[at + HEADER_BYTES..];
    let (len, crc) = (body.len() as u32, crc32fast::hash(body));
    out[at..at + 4].copy_from_slice(&MAGIC.to_le_bytes());
    out[at + 4..at + 8].copy_from_slice(&len.to_le_bytes());
    out[at + 8..at + 12].copy_from_slice(&crc.to_le_bytes());
}

/// Decodes the record framed at `at`, if it is whole and passes its check.
fn decode_at(buf: &[u8], at: usize) -> Option<(Record, usize)> {
    let head = buf.get(at..at + HEADER_BYTES)?;
    let word = |i: usize| u32::from_le_bytes(head[i..i + 4].try_into().expect("4 bytes"));
    if word(0) != MAGIC {
        return None;
    }
    let len = word(4) as usize;
    if len > MAX_RECORD_BYTES {
        return None;
    }
    let body = buf.get(at + HEADER_BYTES..at + HEADER_BYTES + len)?;
    if crc32fast::hash(body) != word(8) {
        return None;
    }
    let r = serde_json::from_slice(body).ok()?;
    Some((r, HEADER_BYTES + len))
}

/// Folds every record that checks out; resynchronizes on the next magic after a bad one.
pub fn replay_bytes(buf: &[u8]) -> (Overlay, Replay) {
    let mut overlay = Overlay::default();
    let mut report = Replay::default();
    let mut at = 0;
    while at < buf.len() {
        match decode_at(buf, at) {
            Some((r, used)) => {
                overlay.apply(&r);
                report.records += 1;
                at += used;
            }
            None => {
                report.skipped += 1;
                let next = (at + 1..buf.len().saturating_sub(HEADER_BYTES - 1))
                    .find(|&i| buf[i..i + 4] == MAGIC.to_le_bytes() && decode_at(buf, i).is_some());
                match next {
                    Some(i) => at = i,
                    None => {
                        report.torn_tail = true;
                        break;
                    }
                }
            }
        }
    }
    (overlay, report)
}

impl Journal {
    /// Opens (creating) the journal at `path` and replays it.
    pub fn open(path: &Path) -> Result<(Self, Replay), JournalError> {
        let mut buf = Vec::new();
        match File::open(path) {
            Ok(mut f) => {
                f.read_to_end(&mut buf).map_err(|e| JournalError::io(path, e))?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(JournalError::io(path, e)),
        }
        let (overlay, report) = replay_bytes(&buf);
        let mut j = Journal {
            path: path.to_path_buf(),
            file: Arc::new(open_append(path)?),
            overlay,
            bytes: 0,
            compact_at: COMPACT_MIN_BYTES,
            last_seq: 0,
            seqs: Default::default(),
        };
        if report.skipped > 0 || !buf.is_empty() {
            // Start from a clean snapshot: a torn tail or a bad record is not appended after.
            j.rewrite()?;
        }
        j.bytes = j.file.metadata().map(|m| m.len()).unwrap_or(0);
        Ok((j, report))
    }

    pub fn overlay(&self) -> &Overlay {
        &self.overlay
    }

    /// The number of the last append that put or deleted `path` since it was last done (0:
    /// none since this journal was opened).
    pub fn seq(&self, path: &str) -> u64 {
        self.seqs.get(path).copied().unwrap_or(0)
    }

    /// Appends `records` (a `Done` for `path` among them) only if nothing was appended for
    /// `path` since append number `seq`, the state a commit committed; `false`: not appended.
    pub fn append_done(&mut self, path: &str, seq: u64, records: &[Record]) -> Result<bool, JournalError> {
        if self.seq(path) != seq {
            return Ok(false);
        }
        self.append(records)?;
        Ok(true)
    }

    /// Appends records (one write) and folds them in; they are in the kernel's hands when this
    /// returns (a crash of the process loses none), on disk after `sync`. Answers the append's
    /// number, which each path it puts or deletes now carries (see `seq`).
    pub fn append(&mut self, records: &[Record]) -> Result<u64, JournalError> {
        if records.is_empty() {
            return Ok(self.last_seq);
        }
        let mut buf = Vec::with_capacity(APPEND_CAPACITY);
        for r in records {
            frame_into(&mut buf, r);
        }
        (&*self.file).write_all(&buf).map_err(|e| JournalError::io(&self.path, e))?;
        self.bytes += buf.len() as u64;
        self.last_seq += 1;
        for r in records {
            self.overlay.apply(r);
            match r {
                Record::Put { path, .. } | Record::Delete { path } => {
                    self.seqs.insert(path.clone(), self.last_seq);
                }
                Record::Done { path } => {
                    self.seqs.remove(path);
                }
                _ => {}
            }
        }
        self.maybe_compact();
        Ok(self.last_seq)
    }

    /// A handle for syncing outside the caller (fdatasync can take a while).
    pub fn file(&self) -> Arc<File> {
        self.file.clone()
    }

    fn maybe_compact(&mut self) {
        if self.bytes < self.compact_at {
            return;
        }
        let snapshot: u64 = self.overlay.snapshot().iter().map(|r| frame(r).len() as u64).sum();
        let limit = snapshot.max(COMPACT_MIN_BYTES / COMPACT_RATIO) * COMPACT_RATIO;
        if self.bytes <= limit {
            self.compact_at = limit;
            return;
        }
        if let Err(e) = self.rewrite() {
            tracing::warn!("journal compaction failed (the journal keeps growing): {e}");
        }
        self.compact_at = (self.bytes * COMPACT_RATIO).max(COMPACT_MIN_BYTES);
    }

    /// Writes the overlay as a fresh file beside the journal, syncs it and renames it over.
    fn rewrite(&mut self) -> Result<(), JournalError> {
        let tmp = self.path.with_extension("new");
        let mut buf = Vec::new();
        for r in self.overlay.snapshot() {
            frame_into(&mut buf, &r);
        }
        let io = |e| JournalError::io(&tmp, e);
        {
            let mut f = File::create(&tmp).map_err(io)?;
            f.write_all(&buf).map_err(io)?;
            f.sync_data().map_err(io)?;
        }
        std::fs::rename(&tmp, &self.path).map_err(|e| JournalError::io(&self.path, e))?;
        if let Some(dir) = self.path.parent() {
            let _ = File::open(dir).and_then(|d| d.sync_all());
        }
        self.file = Arc::new(open_append(&self.path)?);
        self.bytes = buf.len() as u64;
        Ok(())
    }
}

fn open_append(path: &Path) -> Result<File, JournalError> {
    OpenOptions::new().create(true).append(true).open(path).map_err(|e| JournalError::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> MetaRec {
        MetaRec { perm: 0o644, uid: 1, gid: 1, atime: 1, mtime: 1, ctime: 1 }
    }

    fn put(path: &str, staging: u64) -> Record {
        Record::Put {
            path: path.into(),
            put: PutRec { staging: Some(staging), hash: None, data: None, size: 3, mtime: 1 },
        }
    }

    #[test]
    fn records_fold_into_an_overlay_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("journal");
        {
            let (mut j, r) = Journal::open(&p).unwrap();
            assert_eq!(r, Replay::default());
            j.append(&[put("a", 1), put("b", 2), Record::Delete { path: "c".into() }]).unwrap();
            j.append(&[Record::Done { path: "a".into() }, Record::Dir { path: "d".into() }]).unwrap();
            j.append(&[Record::Symlink { path: "l".into(), target: "b".into() }]).unwrap();
        }
        let (j, r) = Journal::open(&p).unwrap();
        assert_eq!((r.records, r.skipped), (6, 0));
        let o = j.overlay();
        assert_eq!(o.puts.keys().collect::<Vec<_>>(), ["b"]);
        assert!(o.deletes.contains("c") && o.dirs.contains("d") && o.symlinks["l"] == "b");
        assert!(o.uses_staging(2) && !o.uses_staging(1));
        // Reopening rewrote it as a snapshot: the same overlay from fewer records.
        let (j2, r2) = Journal::open(&p).unwrap();
        assert_eq!(j2.overlay(), o);
        assert!(r2.records < 6);
    }

    #[test]
    fn a_torn_tail_and_a_corrupt_record_are_skipped() {
        let mut buf = Vec::new();
        for i in 0..5 {
            buf.extend(frame(&put(&format!("f{i}"), i)));
        }
        let second = frame(&put("f0", 0)).len();
        buf[second + HEADER_BYTES + 3] ^= 0xff; // corrupt record f1's body
        let mut torn = frame(&put("tail", 9));
        torn.truncate(torn.len() - 4);
        buf.extend(torn);
        let (o, r) = replay_bytes(&buf);
        assert_eq!(r.records, 4);
        assert_eq!(r.skipped, 2, "{r:?}");
        assert!(r.torn_tail);
        assert!(o.puts.contains_key("f0") && !o.puts.contains_key("f1") && o.puts.contains_key("f4"));
        assert!(!o.puts.contains_key("tail"));
    }

    #[test]
    fn a_commit_is_not_marked_done_over_a_record_appended_after_what_it_committed() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("journal");
        let (mut j, _) = Journal::open(&p).unwrap();
        let committed = j.append(&[put("a", 1)]).unwrap();
        assert_eq!(j.seq("a"), committed);
        // A close appends a newer state of `a` (its message to the flusher still queued)…
        let newer = j.append(&[put("a", 2), Record::Meta { path: "a".into(), meta: meta() }]).unwrap();
        assert!(newer > committed);
        // …so the commit of the first state does not mark `a` done.
        let done = [Record::Done { path: "a".into() }];
        assert!(!j.append_done("a", committed, &done).unwrap());
        assert_eq!(j.overlay().puts["a"].staging, Some(2));
        assert!(j.append_done("a", newer, &done).unwrap());
        assert!(!j.overlay().puts.contains_key("a"));
        assert_eq!(j.seq("a"), 0, "done: nothing pending");
        drop(j);
        let (j, _) = Journal::open(&p).unwrap();
        assert!(!j.overlay().puts.contains_key("a"));
    }

    #[test]
    fn the_journal_is_compacted_when_it_outgrows_its_overlay() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("journal");
        let (mut j, _) = Journal::open(&p).unwrap();
        // A held file's record: its bytes ride along (three times the threshold in all).
        let held = |i| match put("same", i) {
            Record::Put { path, mut put } => {
                put.data = Some(bytes::Bytes::from(vec![b'x'; 4096]));
                Record::Put { path, put }
            }
            _ => unreachable!(),
        };
        let n = 3 * COMPACT_MIN_BYTES / frame(&held(0)).len() as u64;
        for i in 0..n {
            j.append(&[held(i)]).unwrap();
        }
        let len = std::fs::metadata(&p).unwrap().len();
        assert!(len < COMPACT_MIN_BYTES * 2, "{len} bytes");
        let last = n - 1;
        assert_eq!(j.overlay().puts["same"].staging, Some(last));
        drop(j);
        let (j, _) = Journal::open(&p).unwrap();
        assert_eq!(j.overlay().puts["same"].staging, Some(last));
    }
}
