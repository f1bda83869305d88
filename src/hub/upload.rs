//! Uploading through xet-core: upload sessions on CAS write credentials
//! fetched (and refreshed) through the Hub's xet-write-token route, with the
//! session's shard directory on persistent disk under the mount's cache dir,
//! so bytes re-fed after a crash skip the xorbs already sent. A file's hash
//! is only readable once its session's `finalize` succeeded: callers commit
//! after it, never before.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::OnceCell;
use xet_client::cas_client::auth::{AuthConfig, AuthError, TokenInfo, TokenRefresher};
use xet_data::processing::configurations::{SessionContext, TranslatorConfig};
use xet_data::processing::{FileUploadSession, Sha256Policy, SingleFileCleaner};
use xet_runtime::core::XetContext;

use super::client::{HubClient, HubError};
use super::source::Source;
use crate::error::FsError;

/// Credentials are fetched again when they expire within this margin.
const CREDENTIALS_MARGIN: Duration = Duration::from_secs(60);

/// A streamed file that ends below this size is uploaded without asking the CAS whether its
/// first chunk is stored already (xet-core's global dedup query): sending the bytes costs
/// less than that round trip, which the file's `close` would wait for.
const SMALL_STREAM_BYTES: usize = 1 << 20;

/// The name prefix of a small file's session directory (see [`Dedup::Local`]).
const SMALL_SESSION_PREFIX: &str = "small-session-";

/// How a session looks for data already on the CAS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dedup {
    /// Against this mount's shard cache and, for each file's first chunk and a sample of
    /// the rest, the CAS's global dedup index (xet-core's default).
    Global,
    /// Nowhere: for one small file, in a directory of its own (removed after `finalize`),
    /// so making the session does not read every shard this mount ever uploaded (xet-core
    /// registers each file of the shard cache when a session starts, and each small file
    /// adds one).
    Local,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum UploadError {
    #[error("CAS write credentials: {0}")]
    Credentials(#[source] HubError),
    #[error("xet upload ({what})")]
    Xet {
        what: String,
        #[source]
        source: Arc<xet_data::error::DataError>,
    },
    #[error("xet upload ({0}): no answer within {1:?}")]
    Timeout(String, Duration),
}

impl UploadError {
    fn xet(what: &str, e: xet_data::error::DataError) -> Self {
        UploadError::Xet { what: what.to_string(), source: Arc::new(e) }
    }
}

impl From<UploadError> for FsError {
    fn from(e: UploadError) -> Self {
        let status = match &e {
            UploadError::Credentials(h) => return FsError::from(h.clone()),
            UploadError::Timeout(what, d) => return FsError::TimedOut(*d, what.clone()),
            UploadError::Xet { source, .. } => match source.as_ref() {
                xet_data::error::DataError::ClientError(c) => c.status().map(|s| s.as_u16()),
                _ => None,
            },
        };
        match status {
            Some(401 | 403) => FsError::PermissionDenied(e.to_string()),
            Some(413 | 507) => FsError::NoSpace(e.to_string()),
            _ => FsError::Failed { what: "upload".into(), source: Arc::new(e) },
        }
    }
}

struct WriteRefresher {
    hub: Arc<HubClient>,
    source: Source,
}

#[async_trait::async_trait]
impl TokenRefresher for WriteRefresher {
    async fn refresh(&self) -> Result<TokenInfo, AuthError> {
        let (_, token, exp) =
            self.hub.xet_write_token(&self.source).await.map_err(|e| AuthError::TokenRefreshFailure(e.to_string()))?;
        Ok((token, exp))
    }
}

fn now_unix() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default()
}

/// A session being made in the background.
type SessionMaking = tokio::task::JoinHandle<Result<UploadSession, UploadError>>;

/// The uploading side of one mount.
pub struct XetUploader {
    hub: Arc<HubClient>,
    source: Source,
    /// xet-core's shard cache and session directories (persistent with the cache dir)…
    dir: PathBuf,
    /// …or, while that cannot be written (a full or read-only cache disk), a temporary one.
    fallback: Mutex<Option<tempfile::TempDir>>,
    /// A session failed: the directory is probed before the next one is made.
    suspect: Arc<AtomicBool>,
    /// xet-core's contexts (one runtime): global dedup queries on, and off.
    ctx: OnceCell<(XetContext, XetContext)>,
    /// `(casUrl, accessToken, exp)` last fetched; forgotten when a session made with them
    /// fails (they may be bad: a refused or garbled token is not kept until it expires).
    creds: Arc<Mutex<Option<(String, String, u64)>>>,
    /// Sessions being made ahead of the next streamed file, one per [`Dedup`] kind asked
    /// for before (see `next_session`).
    spare: Mutex<[Option<SessionMaking>; 2]>,
}

impl XetUploader {
    pub fn new(hub: Arc<HubClient>, source: Source, dir: PathBuf) -> Self {
        // Small files' session directories left by an earlier process (killed, say) go first.
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().starts_with(SMALL_SESSION_PREFIX) {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        Self {
            hub,
            source,
            dir,
            fallback: Mutex::new(None),
            suspect: Arc::default(),
            ctx: OnceCell::new(),
            creds: Arc::default(),
            spare: Mutex::default(),
        }
    }

    /// A session for the next streamed file, made ahead of need: xet-core's set-up takes
    /// milliseconds (its shard directories are scanned), which a small file's close would
    /// otherwise wait for. Each call takes the spare of its kind made by the previous one and
    /// starts the next; a spare that failed is replaced by a fresh session.
    pub async fn next_session(self: &Arc<Self>, dedup: Dedup) -> Result<UploadSession, UploadError> {
        let slot = dedup as usize;
        let me = self.clone();
        let next = tokio::spawn(async move { me.session_with(dedup).await });
        let spare = self.spare.lock()[slot].replace(next);
        if let Some(task) = spare {
            if let Ok(Ok(s)) = task.await {
                return Ok(s);
            }
        }
        self.session_with(dedup).await
    }

    async fn credentials(&self) -> Result<(String, String, u64), UploadError> {
        if let Some(c) = self.creds.lock().clone() {
            if c.2 > now_unix() + CREDENTIALS_MARGIN.as_secs() {
                return Ok(c);
            }
        }
        let c = self.hub.xet_write_token(&self.source).await.map_err(UploadError::Credentials)?;
        *self.creds.lock() = Some(c.clone());
        Ok(c)
    }

    /// Where xet-core keeps a new session's shards: the cache dir, unless a session failed
    /// and the cache dir cannot be written now; then a temporary directory, until it can.
    /// (A cache disk turned read-only must not stop what was acknowledged from committing:
    /// the staging files and the journal are still readable.)
    async fn shard_dir(&self) -> PathBuf {
        if self.suspect.swap(false, Ordering::AcqRel) {
            let dir = self.dir.clone();
            let probed = tokio::task::spawn_blocking(move || probe_writable(&dir))
                .await
                .unwrap_or_else(|e| Err(std::io::Error::other(e)));
            let mut fallback = self.fallback.lock();
            match probed {
                Ok(()) => {
                    if fallback.take().is_some() {
                        tracing::info!(dir = %self.dir.display(), "upload shards are kept in the cache dir again");
                    }
                }
                Err(e) if fallback.is_none() => match tempfile::Builder::new().prefix("hf-mount-xet-").tempdir() {
                    Ok(t) => {
                        tracing::warn!(
                            dir = %self.dir.display(),
                            "the cache dir cannot be written ({e}): upload shards go to {} meanwhile",
                            t.path().display()
                        );
                        *fallback = Some(t);
                    }
                    Err(t) => tracing::warn!("the cache dir cannot be written ({e}), nor a temporary dir ({t})"),
                },
                Err(_) => {}
            }
        }
        self.fallback.lock().as_ref().map(|t| t.path().to_path_buf()).unwrap_or_else(|| self.dir.clone())
    }

    /// A new upload session: files added to it become readable together at `finalize`.
    pub async fn session(&self) -> Result<UploadSession, UploadError> {
        self.session_with(Dedup::Global).await
    }

    async fn session_with(&self, dedup: Dedup) -> Result<UploadSession, UploadError> {
        let r = self.open_session(dedup).await;
        if r.is_err() {
            self.suspect.store(true, Ordering::Release);
        }
        r
    }

    async fn open_session(&self, dedup: Dedup) -> Result<UploadSession, UploadError> {
        let deadline = self.hub.deadline();
        let open = async {
            let (global, local) = self
                .ctx
                .get_or_try_init(|| async {
                    let config = super::xet::mount_config().map_err(|e| e.to_string())?;
                    let local = config
                        .clone()
                        .with_config("deduplication.global_dedup_query_enabled", "false")
                        .map_err(|e| e.to_string())?;
                    // A small file's one xorb goes up in one request (`POST /v1/xorbs`) rather
                    // than three (an upload grant, the upload to it, its commit): the xorb upload
                    // API every xet client before 1.8 uses, and 1.8's own fallback. The round
                    // trips, not the bytes, are what a small file's close waits for.
                    let local = super::xet::with_defaults(local, &[("client.legacy_direct_xorb_upload", "true")])
                        .map_err(|e| e.to_string())?;
                    let global = XetContext::with_config(config).map_err(|e| e.to_string())?;
                    let local = XetContext::new(local, global.runtime.clone());
                    Ok::<_, String>((global, local))
                })
                .await
                .map_err(|e| UploadError::xet("context", xet_data::error::DataError::InternalError(e)))?;
            let ctx = match dedup {
                Dedup::Global => global,
                Dedup::Local => local,
            };
            let (cas_url, token, exp) = self.credentials().await?;
            let refresher = Arc::new(WriteRefresher { hub: self.hub.clone(), source: self.source.clone() });
            let root = self.shard_dir().await;
            let own_dir = match dedup {
                Dedup::Global => None,
                Dedup::Local => match tempfile::Builder::new().prefix(SMALL_SESSION_PREFIX).tempdir_in(&root) {
                    Ok(d) => Some(d),
                    Err(e) => {
                        tracing::debug!(
                            "small file's session directory in {}: {e}; the shared one is used",
                            root.display()
                        );
                        None
                    }
                },
            };
            let session = SessionContext {
                endpoint: cas_url,
                auth: AuthConfig::maybe_new(Some(token), Some(exp), Some(refresher)),
                custom_headers: None,
                repo_paths: vec![String::new()],
                session_id: None,
                cache_root: Some(own_dir.as_ref().map(|d| d.path().to_path_buf()).unwrap_or(root)),
            };
            let config = TranslatorConfig::new(ctx, session).map_err(|e| UploadError::xet("config", e))?;
            let inner = FileUploadSession::new(Arc::new(config)).await.map_err(|e| UploadError::xet("session", e))?;
            Ok(UploadSession {
                inner,
                deadline,
                creds: self.creds.clone(),
                suspect: self.suspect.clone(),
                _own_dir: own_dir,
                large: AtomicBool::new(false),
            })
        };
        tokio::time::timeout(deadline, open).await.map_err(|_| UploadError::Timeout("session".into(), deadline))?
    }
}

/// One xet-core upload session.
pub struct UploadSession {
    inner: Arc<FileUploadSession>,
    deadline: Duration,
    /// The uploader's credentials, forgotten if this session fails.
    creds: Arc<Mutex<Option<(String, String, u64)>>>,
    /// The uploader's flag that its shard directory may not be writable.
    suspect: Arc<AtomicBool>,
    /// A small file's session directory, removed with the session.
    _own_dir: Option<tempfile::TempDir>,
    /// A file of this session may be large (unknown size, or at least `LARGE_FILE_BYTES`).
    large: AtomicBool,
}

/// A session that carried a file this large counts as large: when the last large session ends,
/// the heap's free memory goes back to the system. glibc keeps freed heap memory for reuse
/// (`cli::tune_allocator` asks it to keep buffers up to 64 MiB), and the buffers of concurrent
/// uploads (xet-core's chunks and xorbs, the streams' queues) left 1.2 GiB resident after 16
/// streamed 64 MiB files, against 55 MiB once handed back.
const LARGE_FILE_BYTES: u64 = 16 << 20;

/// Large sessions alive now.
static LARGE_SESSIONS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Gives the pages of freed heap memory back to the kernel (glibc keeps them otherwise, and the
/// mount's resident memory would stay at its peak after one large upload).
fn return_free_memory() {
    // SAFETY: malloc_trim only releases free memory of glibc's arenas.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Whether `dir` takes a file now (made and removed again).
fn probe_writable(dir: &std::path::Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let probe = tempfile::NamedTempFile::new_in(dir)?;
    std::io::Write::write_all(&mut probe.as_file(), &[0u8; 64 << 10])?;
    probe.close()
}

/// A file being fed into a session.
pub struct FileUpload {
    cleaner: SingleFileCleaner,
    name: String,
    bytes: u64,
}

/// What a finished file is on the CAS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uploaded {
    pub xet_hash: String,
    pub size: u64,
}

impl UploadSession {
    /// Starts a file (`name` is for logs); its bytes go in with `FileUpload::add`. No SHA-256
    /// is computed: bucket files (all we upload) are named by their Xet hash alone, and that
    /// pass over the bytes cost a fifth of a streaming write's throughput.
    pub fn start(&self, name: &str, size: Option<u64>) -> Result<FileUpload, UploadError> {
        if size.is_none_or(|s| s >= LARGE_FILE_BYTES) && !self.large.swap(true, Ordering::Relaxed) {
            LARGE_SESSIONS.fetch_add(1, Ordering::AcqRel);
        }
        let (_, cleaner) = self
            .inner
            .start_clean(Some(Arc::from(name)), size, Sha256Policy::Skip)
            .map_err(|e| UploadError::xet(name, e))?;
        Ok(FileUpload { cleaner, name: name.to_string(), bytes: 0 })
    }

    /// Cuts the last xorb and uploads what is left (xorbs, then the shard): after this, every
    /// finished file of the session is readable on the CAS.
    pub async fn finalize(self) -> Result<(), UploadError> {
        let d = self.deadline;
        let r = match tokio::time::timeout(d, self.inner.clone().finalize()).await {
            Ok(r) => r.map(|_| ()).map_err(|e| UploadError::xet("finalize", e)),
            Err(_) => Err(UploadError::Timeout("finalize".into(), d)),
        };
        if r.is_err() {
            *self.creds.lock() = None;
            self.suspect.store(true, Ordering::Release);
        }
        r
    }
}

impl Drop for UploadSession {
    fn drop(&mut self) {
        // Trimming while other large uploads run would only fault their next buffers in again.
        if self.large.load(Ordering::Relaxed) && LARGE_SESSIONS.fetch_sub(1, Ordering::AcqRel) == 1 {
            // xet-core's session (and its buffers) goes first; then a walk of the heap, off the
            // runtime's workers when there is a runtime.
            let inner = self.inner.clone();
            let trim = move || {
                drop(inner);
                return_free_memory();
            };
            match tokio::runtime::Handle::try_current() {
                Ok(rt) => drop(rt.spawn_blocking(trim)),
                Err(_) => trim(),
            }
        }
    }
}

impl FileUpload {
    /// Feeds bytes; waits while xet-core is busy (its chunking and xorb uploads bound how much
    /// is in flight), which is the backpressure writers feel.
    pub async fn add(&mut self, data: Bytes) -> Result<(), UploadError> {
        self.bytes += data.len() as u64;
        self.cleaner.add_data_from_bytes(data).await.map_err(|e| UploadError::xet(&self.name, e))
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Ends the file: its hash (readable once the session is finalized).
    pub async fn finish(self) -> Result<Uploaded, UploadError> {
        let name = self.name.clone();
        let (info, _) = self.cleaner.finish().await.map_err(|e| UploadError::xet(&name, e))?;
        Ok(Uploaded { xet_hash: info.hash().to_string(), size: info.file_size().unwrap_or(self.bytes) })
    }
}

/// Messages queued to a streaming upload at most (each a write of up to 1 MiB): what bounds a
/// streaming writer's memory; a writer faster than the upload waits.
const STREAM_QUEUE_DEPTH: usize = 8;

/// A file streamed into its own upload session as its bytes arrive: a task feeds xet-core
/// from a bounded queue, so memory per writer is bounded and a slow CAS slows the writer.
pub struct StreamingUpload {
    tx: Option<tokio::sync::mpsc::Sender<Bytes>>,
    task: Option<tokio::task::JoinHandle<Result<Uploaded, UploadError>>>,
    /// The offset the next write must start at.
    pub next: u64,
    /// Bytes accepted so far.
    pub bytes: u64,
    deadline: Duration,
}

impl StreamingUpload {
    pub fn start(uploader: Arc<XetUploader>, name: String) -> Self {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(STREAM_QUEUE_DEPTH);
        let deadline = uploader.hub.deadline();
        let task = tokio::spawn(async move {
            // The first bytes are held until the file proves large, or ends small (its size
            // then known): which kind of session it takes (see `SMALL_STREAM_BYTES`).
            let (mut head, mut held, mut ended) = (Vec::new(), 0, true);
            while let Some(b) = rx.recv().await {
                held += b.len();
                head.push(b);
                if held >= SMALL_STREAM_BYTES {
                    ended = false;
                    break;
                }
            }
            let dedup = if ended { Dedup::Local } else { Dedup::Global };
            let session = uploader.next_session(dedup).await?;
            let mut file = session.start(&name, ended.then_some(held as u64))?;
            for b in head {
                file.add(b).await?;
            }
            while let Some(b) = rx.recv().await {
                file.add(b).await?;
            }
            let up = file.finish().await?;
            session.finalize().await?;
            Ok(up)
        });
        Self { tx: Some(tx), task: Some(task), next: 0, bytes: 0, deadline }
    }

    /// Queues the next bytes; waits (within the deadline) while the queue is full.
    pub async fn send(&mut self, data: Bytes) -> Result<(), UploadError> {
        let len = data.len() as u64;
        let Some(tx) = &self.tx else { return Err(UploadError::Timeout("stream already ended".into(), self.deadline)) };
        match tokio::time::timeout(self.deadline, tx.send(data)).await {
            Ok(Ok(())) => {
                self.next += len;
                self.bytes += len;
                Ok(())
            }
            // The feeder ended: its error says why.
            Ok(Err(_)) => {
                Err(self.finish().await.err().unwrap_or_else(|| UploadError::Timeout("stream".into(), self.deadline)))
            }
            Err(_) => {
                self.abort();
                Err(UploadError::Timeout("stream write".into(), self.deadline))
            }
        }
    }

    /// Ends the stream: the file's hash once its session is finalized (readable on the CAS).
    pub async fn finish(&mut self) -> Result<Uploaded, UploadError> {
        self.tx = None;
        let Some(task) = self.task.take() else {
            return Err(UploadError::Timeout("stream already ended".into(), self.deadline));
        };
        // Finishing re-reads nothing: it waits for the last xorbs and the shard.
        let wait = self.deadline.max(Duration::from_secs(1)) * 2;
        match tokio::time::timeout(wait, task).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => Err(UploadError::xet("stream", xet_data::error::DataError::InternalError(e.to_string()))),
            Err(_) => Err(UploadError::Timeout("stream finish".into(), wait)),
        }
    }

    /// Drops the upload: nothing of it is ever committed.
    pub fn abort(&mut self) {
        self.tx = None;
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }

    pub fn ended(&self) -> bool {
        self.task.is_none()
    }
}

impl Drop for StreamingUpload {
    fn drop(&mut self) {
        self.abort();
    }
}
