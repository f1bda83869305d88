//! The two kinds of work the flusher runs in tasks (never in its handler):
//! preparing pending paths (see what each holds now, upload the bytes of
//! local files through one xet session, finalize it) and committing a batch
//! (check that each path still holds what was prepared, then one bucket
//! batch per 1,000 lines, adds before deletes). Their results come back to
//! the flusher as messages.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::actors::Reply;
use futures::StreamExt;

use super::staging::Staging;
use crate::actors::inode_table::{AtPath, Content, InodeMsg, ANY_GEN};
use crate::actors::{call, Registry, Remote};
use crate::error::{FsError, FsResult};
use crate::hub::{BatchLine, RemoteFile, UploadSession, Uploaded, XetUploader};
use crate::types::Ino;

/// Files uploaded at once within one preparation.
const UPLOADS_PER_CYCLE: usize = 4;
/// Bytes read from a staging file per call into the upload.
const UPLOAD_READ_BYTES: usize = 8 << 20;
/// Lines per bucket batch request (what the Hub's Rust client sends at most).
pub const BATCH_MAX_LINES: usize = 1000;

/// One line to commit and what it stands for.
pub struct Commit {
    /// Mount path.
    pub path: String,
    /// The pending entry's sequence number when it was taken (none for streamed files).
    pub seq: Option<u64>,
    pub line: BatchLine,
    /// What the path must still hold for the line to apply: `(ino, gen)`, or no file.
    pub expect: Option<(Ino, u64)>,
    /// What the Hub has at the path once committed (adds).
    pub file: Option<RemoteFile>,
    /// Someone waiting on this very commit (a streamed file's close).
    pub reply: Option<Reply<FsResult<()>>>,
    /// A snapshot of a file still being written: committed whatever was written since (the
    /// file stays dirty); the path must still be the same file.
    pub snapshot: bool,
}

/// A pending path due for preparation.
pub struct Due {
    pub path: String,
    pub seq: u64,
    /// It may be committed while open for writing (someone waits on it, or its window passed).
    pub open_ok: bool,
    /// Its window passed: a file written meanwhile is committed as a snapshot copy.
    pub snapshot: bool,
}

/// What preparing one pending path gave.
pub enum Prepared {
    Commit(Commit),
    /// The Hub already has what the path holds.
    Nothing {
        path: String,
        seq: u64,
    },
    /// Open for writing: it is looked at again after its next change.
    Busy {
        path: String,
    },
    /// Changed while it was uploaded: looked at again once quiet.
    Changed {
        path: String,
    },
    Failed {
        path: String,
        error: FsError,
    },
}

/// How one commit ended.
pub enum Outcome {
    Applied,
    /// The path changed since it was prepared: prepared again later.
    Stale,
    Failed(FsError),
}

fn millis(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// A Xet file as the Hub will list it once committed.
pub fn remote_file(up: &Uploaded, mtime: SystemTime) -> RemoteFile {
    RemoteFile {
        size: up.size,
        xet_hash: Some(up.xet_hash.clone()),
        etag: up.xet_hash.clone(),
        mtime: Some(mtime),
        commit: Default::default(),
    }
}

/// The add line for a file of `remote` at mount path `path`.
pub fn add_line(remote: &Remote, path: &str, xet_hash: &str, mtime: SystemTime) -> BatchLine {
    BatchLine::Add { path: remote.source().repo_path(path), xet_hash: xet_hash.to_string(), mtime: millis(mtime) }
}

#[derive(Clone)]
struct ToUpload {
    path: String,
    seq: u64,
    ino: Ino,
    gen: u64,
    staging: u64,
    size: u64,
    mtime: SystemTime,
    remote_hash: Option<String>,
    /// Upload a copy taken while no write is under way (the file may change meanwhile).
    snapshot: bool,
}

/// Looks at what each path holds now and uploads what needs uploading. `open_ok`: a file
/// still open for writing may be committed (as the snapshot it is now, unless a write is
/// under way: any later write moves its generation and keeps the snapshot from committing).
pub async fn prepare(
    registry: Registry,
    remote: Arc<Remote>,
    uploader: Arc<XetUploader>,
    staging: Arc<Staging>,
    paths: Vec<Due>,
) -> Vec<Prepared> {
    let mut out = Vec::new();
    let mut uploads = Vec::new();
    for Due { path, seq, open_ok, snapshot } in paths {
        let at = call(&registry, |r| r.inode.clone(), |reply| InodeMsg::Resolve { path: path.clone(), reply }).await;
        match at {
            Err(error) => out.push(Prepared::Failed { path, error }),
            Ok(AtPath::NoFile { hub_may_have: false }) => out.push(Prepared::Nothing { path, seq }),
            Ok(AtPath::NoFile { hub_may_have: true }) => {
                let line = BatchLine::Delete { path: remote.source().repo_path(&path) };
                out.push(Prepared::Commit(Commit {
                    path,
                    seq: Some(seq),
                    line,
                    expect: None,
                    file: None,
                    reply: None,
                    snapshot: false,
                }));
            }
            Ok(AtPath::File { writers, inflight, .. }) if inflight > 0 || (writers > 0 && !open_ok) => {
                out.push(Prepared::Busy { path })
            }
            Ok(AtPath::File { ino, gen, content: Content::Remote(f), remote: hub, mtime, .. }) => {
                let Some(hash) = f.xet_hash.clone() else {
                    let error = FsError::NotSupported;
                    out.push(Prepared::Failed { path, error });
                    continue;
                };
                if hub.as_ref().and_then(|h| h.xet_hash.as_deref()) == Some(hash.as_str()) {
                    out.push(Prepared::Nothing { path, seq });
                    continue;
                }
                let up = Uploaded { xet_hash: hash.clone(), size: f.size };
                out.push(Prepared::Commit(Commit {
                    line: add_line(&remote, &path, &hash, mtime),
                    path,
                    seq: Some(seq),
                    expect: Some((ino, gen)),
                    file: Some(remote_file(&up, mtime)),
                    reply: None,
                    snapshot: false,
                }));
            }
            Ok(AtPath::File { ino, gen, content: Content::Local { staging, size }, remote: hub, mtime, .. }) => {
                let remote_hash = hub.and_then(|h| h.xet_hash.clone());
                uploads.push(ToUpload { path, seq, ino, gen, staging, size, mtime, remote_hash, snapshot });
            }
        }
    }
    if uploads.is_empty() {
        return out;
    }
    let session = match uploader.session().await {
        Ok(s) => s,
        Err(e) => {
            let error = FsError::from(e);
            out.extend(uploads.into_iter().map(|u| Prepared::Failed { path: u.path, error: error.clone() }));
            return out;
        }
    };
    let inode = registry.get().map(|r| r.inode);
    for u in &uploads {
        if let Ok(inode) = &inode {
            let _ = inode.send_message(InodeMsg::Uploading { ino: u.ino, gen: u.gen, on: true });
        }
    }
    let results: Vec<(ToUpload, FsResult<Option<Uploaded>>)> = futures::stream::iter(uploads)
        .map(|u| {
            let (session, staging, registry) = (&session, staging.clone(), &registry);
            async move {
                let r = if u.snapshot {
                    upload_snapshot(registry, session, &staging, &u).await
                } else {
                    upload_one(session, &staging, &u).await
                };
                (u, r)
            }
        })
        .buffer_unordered(UPLOADS_PER_CYCLE)
        .collect()
        .await;
    // A session with a file that failed half-way is not finalized (xet-core would register a
    // partial file): every file of it is tried again.
    let finalized = match results.iter().find_map(|(_, r)| r.as_ref().err()) {
        Some(e) => Err(e.clone()),
        None => session.finalize().await.map_err(FsError::from),
    };
    for (u, r) in results {
        let r = r.and_then(|up| finalized.clone().map(|_| up));
        match r {
            Ok(None) => {
                // Changed while it was read: prepared again once quiet.
                if let Ok(inode) = &inode {
                    let _ = inode.send_message(InodeMsg::Uploading { ino: u.ino, gen: u.gen, on: false });
                }
                out.push(Prepared::Changed { path: u.path });
            }
            Ok(Some(up)) if u.remote_hash.as_deref() == Some(up.xet_hash.as_str()) => {
                // The same bytes as the Hub's: nothing to commit.
                if let Ok(inode) = &inode {
                    let file = remote_file(&up, u.mtime);
                    let _ =
                        inode.send_message(InodeMsg::Committed { path: u.path.clone(), ino: u.ino, gen: u.gen, file });
                }
                out.push(Prepared::Nothing { path: u.path, seq: u.seq });
            }
            Ok(Some(up)) => out.push(Prepared::Commit(Commit {
                line: add_line(&remote, &u.path, &up.xet_hash, u.mtime),
                file: Some(remote_file(&up, u.mtime)),
                path: u.path,
                seq: Some(u.seq),
                expect: Some((u.ino, u.gen)),
                reply: None,
                snapshot: u.snapshot,
            })),
            Err(error) => {
                if let Ok(inode) = &inode {
                    let _ = inode.send_message(InodeMsg::Uploading { ino: u.ino, gen: u.gen, on: false });
                }
                out.push(Prepared::Failed { path: u.path, error });
            }
        }
    }
    out
}

/// Copies the staging file aside, between two looks at the file that find the same
/// generation and no write in flight, then uploads the copy: a state some write left whole,
/// which later writes cannot tear. `None`: writes kept coming during the copies.
async fn upload_snapshot(
    registry: &Registry,
    session: &UploadSession,
    staging: &Arc<Staging>,
    u: &ToUpload,
) -> FsResult<Option<Uploaded>> {
    const TRIES: usize = 3;
    let look = || async {
        let path = u.path.clone();
        let at = call(registry, |r| r.inode.clone(), |reply| InodeMsg::Resolve { path: path.clone(), reply }).await?;
        Ok::<_, FsError>(match at {
            AtPath::File { ino, gen, inflight: 0, content: Content::Local { staging, size }, .. } if ino == u.ino => {
                Some((gen, staging, size))
            }
            _ => None,
        })
    };
    let copy = staging.reserve();
    let r = async {
        for _ in 0..TRIES {
            let Some((gen, from, size)) = look().await? else { continue };
            staging.copy(from, copy, size).await?;
            if look().await?.is_some_and(|(now, ..)| now == gen) {
                tracing::debug!(path = %u.path, size, "committing a snapshot of a file still being written");
                let snap = ToUpload { staging: copy, size, snapshot: false, ..u.clone() };
                return upload_one(session, staging, &snap).await;
            }
        }
        Ok(None)
    }
    .await;
    staging.release(copy);
    r
}

/// Feeds the first `size` bytes of a staging file to the session. `None`: the file was cut
/// while it was read (what was read is finished, so the session stays whole, but it is not a
/// state anyone acknowledged: the generation check would refuse it anyway).
async fn upload_one(session: &UploadSession, staging: &Staging, u: &ToUpload) -> FsResult<Option<Uploaded>> {
    let mut file = session.start(&u.path, Some(u.size))?;
    let mut at = 0u64;
    let mut cut = false;
    while at < u.size {
        let want = (u.size - at).min(UPLOAD_READ_BYTES as u64) as usize;
        let bytes = match staging.read_at(u.staging, at, want).await {
            Ok(b) if !b.is_empty() => b,
            Ok(_) => {
                cut = true;
                // Keep the file whole for xet-core: zeros stand in for what is gone.
                bytes::Bytes::from(vec![0u8; want])
            }
            Err(e) => {
                cut = true;
                tracing::debug!(path = %u.path, "staging read failed while uploading: {e}");
                bytes::Bytes::from(vec![0u8; want])
            }
        };
        at += bytes.len() as u64;
        crate::metrics::get().upload_bytes.add(bytes.len() as u64, &[]);
        file.add(bytes).await?;
    }
    let up = file.finish().await?;
    Ok((!cut).then_some(up))
}

/// Commits `items`: the lines whose paths still hold what was prepared, adds first, in
/// requests of at most `BATCH_MAX_LINES` lines.
pub async fn commit(registry: Registry, remote: Arc<Remote>, items: Vec<Commit>) -> Vec<(Commit, Outcome)> {
    let checks: Vec<(String, Option<(Ino, u64)>)> = items
        .iter()
        .map(|c| (c.path.clone(), if c.snapshot { c.expect.map(|(ino, _)| (ino, ANY_GEN)) } else { c.expect }))
        .collect();
    let still =
        match call(&registry, |r| r.inode.clone(), |reply| InodeMsg::Still { items: checks.clone(), reply }).await {
            Ok(s) => s,
            Err(e) => return items.into_iter().map(|c| (c, Outcome::Failed(e.clone()))).collect(),
        };
    let mut out = Vec::with_capacity(items.len());
    let mut live = Vec::new();
    for (c, ok) in items.into_iter().zip(still) {
        if ok {
            live.push(c);
        } else {
            out.push((c, Outcome::Stale));
        }
    }
    // Adds before deletes: a rename's new path lands before its old one goes.
    live.sort_by_key(|c| matches!(c.line, BatchLine::Delete { .. }));
    let src = remote.source();
    let mut failed: Option<FsError> = None;
    let mut rest = live.into_iter().peekable();
    while rest.peek().is_some() {
        let chunk: Vec<Commit> = rest.by_ref().take(BATCH_MAX_LINES).collect();
        if let Some(e) = &failed {
            out.extend(chunk.into_iter().map(|c| (c, Outcome::Failed(e.clone()))));
            continue;
        }
        let lines: Vec<BatchLine> = chunk.iter().map(|c| c.line.clone()).collect();
        let sent = std::time::SystemTime::now();
        match remote.hub.bucket_batch(&src, &lines).await {
            Ok(()) => {
                remote.note_own_commit(sent, std::time::SystemTime::now());
                for c in &chunk {
                    let kind = if matches!(c.line, BatchLine::Delete { .. }) { "delete" } else { "add" };
                    crate::metrics::get().flush_commits.add(1, &[crate::metrics::kv("kind", kind)]);
                }
                out.extend(chunk.into_iter().map(|c| (c, Outcome::Applied)));
            }
            Err(e) => {
                let e = FsError::from(e);
                failed = Some(e.clone());
                out.extend(chunk.into_iter().map(|c| (c, Outcome::Failed(e.clone()))));
            }
        }
    }
    out
}
