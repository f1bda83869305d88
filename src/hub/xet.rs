//! Reading Xet-stored files through xet-core: one download session per
//! mount, connected on first use, with CAS credentials fetched (and
//! refreshed) through the Hub's xet-read-token route. Every read has a
//! deadline; a read that misses it is dropped, which cancels its fetches.

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::RwLock;
use tokio::sync::OnceCell;
use tracing::Instrument;
use xet_client::cas_client::auth::{AuthConfig, AuthError, TokenInfo, TokenRefresher};
use xet_data::processing::configurations::{SessionContext, TranslatorConfig};
use xet_data::processing::{create_remote_client, FileDownloadSession, XetFileInfo};
use xet_runtime::core::XetContext;

use super::client::{HubClient, HubError};
use super::plans::PlanCachingClient;
use super::source::Source;

struct Refresher {
    hub: Arc<HubClient>,
    source: Source,
    commit: Arc<RwLock<String>>,
}

#[async_trait::async_trait]
impl TokenRefresher for Refresher {
    async fn refresh(&self) -> Result<TokenInfo, AuthError> {
        let commit = self.commit.read().clone();
        let (_, token, exp) = self
            .hub
            .xet_read_token(&self.source, &commit)
            .await
            .map_err(|e| AuthError::TokenRefreshFailure(e.to_string()))?;
        Ok((token, exp))
    }
}

/// The name prefix of the download session's scratch directories.
const SCRATCH_PREFIX: &str = "xet-read-";

struct Session {
    downloads: Arc<FileDownloadSession>,
    _scratch: tempfile::TempDir,
}

/// xet-core's configuration for a mount (environment overrides still apply): a mount serves
/// many readers at once, so downloads start at 16 parallel fetches rather than 4; the
/// adaptive controller still backs off on errors and slow round trips. A failed request is
/// tried again after tens of milliseconds (xet-core's default waits 3 s, then more, so a
/// few connection resets used up a read's whole deadline); [`XetAdapter::read`] retries a
/// range xet-core gave up on, with growing waits, until the deadline. A session's last
/// telemetry report is sent in the background rather than waited for (up to 2 s by default)
/// at each `finalize`, which every streamed file's `close` waits for; the mount's process
/// lives on, so the report is still delivered.
pub(crate) fn mount_config() -> Result<xet_runtime::config::XetConfig, xet_runtime::config::ConfigError> {
    with_defaults(
        xet_runtime::config::XetConfig::new(),
        &[
            ("client.ac_initial_download_concurrency", "16"),
            ("client.ac_min_download_concurrency", "4"),
            ("client.retry_base_delay", "25ms"),
            ("client.retry_max_attempts", "8"),
            ("client.retry_max_duration", "1s"),
            ("telemetry.final_flush_timeout", "0ms"),
        ],
    )
}

/// `config` with each `(path, value)` set, unless xet-core's environment variable for that
/// path (`HF_XET_` and the path in capitals, `_` for `.`) is set: the user's word wins.
pub(crate) fn with_defaults(
    mut config: xet_runtime::config::XetConfig,
    defaults: &[(&str, &str)],
) -> Result<xet_runtime::config::XetConfig, xet_runtime::config::ConfigError> {
    for (path, value) in defaults {
        if std::env::var_os(env_of(path)).is_none() {
            config = config.with_config(path, value)?;
        }
    }
    Ok(config)
}

/// xet-core's environment variable for a configuration path.
fn env_of(path: &str) -> String {
    format!("HF_XET_{}", path.replace('.', "_").to_uppercase())
}

/// The xet side of one mount.
pub struct XetAdapter {
    hub: Arc<HubClient>,
    /// Where the download session keeps its scratch files (the mount's own directory).
    scratch_root: std::path::PathBuf,
    source: Source,
    /// The commit credentials are asked for (repos); follows the poller.
    commit: Arc<RwLock<String>>,
    session: OnceCell<Session>,
}

impl XetAdapter {
    pub fn new(hub: Arc<HubClient>, source: Source, commit: String, scratch_root: std::path::PathBuf) -> Self {
        // Scratch left by an earlier process of this mount (killed, say) goes first.
        if let Ok(dir) = std::fs::read_dir(&scratch_root) {
            for e in dir.flatten() {
                if e.file_name().to_string_lossy().starts_with(SCRATCH_PREFIX) {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        Self { hub, scratch_root, source, commit: Arc::new(RwLock::new(commit)), session: OnceCell::new() }
    }

    pub fn set_commit(&self, commit: &str) {
        *self.commit.write() = commit.to_string();
    }

    async fn session(&self) -> Result<&Session, HubError> {
        self.session
            .get_or_try_init(|| async {
                let commit = self.commit.read().clone();
                let (cas_url, token, exp) = self.hub.xet_read_token(&self.source, &commit).await?;
                let refresher = Arc::new(Refresher {
                    hub: self.hub.clone(),
                    source: self.source.clone(),
                    commit: self.commit.clone(),
                });
                let fail = |e: String| HubError::Network(cas_url.clone(), e);
                let ctx = XetContext::with_config(mount_config().map_err(|e| fail(e.to_string()))?)
                    .map_err(|e| fail(e.to_string()))?;
                let scratch = tempfile::Builder::new()
                    .prefix(SCRATCH_PREFIX)
                    .tempdir_in(&self.scratch_root)
                    .map_err(|e| fail(e.to_string()))?;
                let session = SessionContext {
                    endpoint: cas_url.clone(),
                    auth: AuthConfig::maybe_new(Some(token), Some(exp), Some(refresher)),
                    custom_headers: None,
                    repo_paths: vec![String::new()],
                    session_id: None,
                    cache_root: Some(scratch.path().to_path_buf()),
                };
                let config = TranslatorConfig::new(&ctx, session).map_err(|e| fail(e.to_string()))?;
                let session_id = xet_runtime::utils::UniqueId::new().to_string();
                let client =
                    create_remote_client(&config, &session_id, false).await.map_err(|e| fail(e.to_string()))?;
                let downloads = FileDownloadSession::from_client(&ctx, Arc::new(PlanCachingClient::new(client)), None);
                Ok(Session { downloads, _scratch: scratch })
            })
            .await
    }

    /// Connects in the background (credentials, session), so the first read pays no set-up.
    pub async fn warm(&self) {
        if let Err(e) = self.session().await {
            tracing::debug!("xet session not ready yet: {e}");
        }
    }

    /// Bytes `range` of the Xet file `hash` (of `size` bytes), within the Hub client's deadline,
    /// as the pieces xet-core produced them (no copy). A fetch that fails for a reason that may
    /// pass (a reset, a 5xx, a cut body) is tried again, waits growing from tens of ms.
    pub async fn read(&self, hash: &str, size: u64, range: Range<u64>) -> Result<Vec<Bytes>, HubError> {
        let deadline = self.hub.deadline();
        let what = format!("xet {hash}[{}..{}]", range.start, range.end);
        let started = std::time::Instant::now();
        let retried = async {
            let mut attempt = 0;
            loop {
                match self.fetch(hash, size, range.clone(), &what).await {
                    Err(HubError::Network(_, msg)) if is_transient(&msg) => {
                        let wait = super::retry::retry_delay(attempt);
                        if started.elapsed() + wait >= deadline {
                            return Err(HubError::Timeout(deadline, format!("{what} (last error: {msg})")));
                        }
                        tracing::debug!(attempt, "{what} failed ({msg}); trying again in {wait:?}");
                        crate::metrics::get().remote_errors.add(1, &[crate::metrics::kv("status", "cas")]);
                        tokio::time::sleep(wait).await;
                        attempt += 1;
                    }
                    r => return r,
                }
            }
        };
        let span =
            tracing::debug_span!("cas.read", xet.hash = hash, offset = range.start, bytes = range.end - range.start);
        let result = match tokio::time::timeout(deadline, retried).instrument(span).await {
            Ok(r) => r,
            Err(_) => Err(HubError::Timeout(deadline, what)),
        };
        if let Err(e) = &result {
            let status = if matches!(e, HubError::Timeout(..)) { "timeout" } else { "cas" };
            crate::metrics::get().remote_errors.add(1, &[crate::metrics::kv("status", status)]);
        }
        result
    }

    /// One attempt of [`Self::read`].
    async fn fetch(&self, hash: &str, size: u64, range: Range<u64>, what: &str) -> Result<Vec<Bytes>, HubError> {
        let session = self.session().await?;
        let info = XetFileInfo::new(hash.to_string(), size);
        let fail = |e: String| HubError::Network(what.to_string(), e);
        let want = range.end - range.start;
        let (_, mut stream) =
            session.downloads.download_stream_range(&info, range).await.map_err(|e| fail(e.to_string()))?;
        let (mut out, mut got) = (Vec::new(), 0u64);
        while let Some(chunk) = stream.next().await.map_err(|e| fail(e.to_string()))? {
            if !chunk.is_empty() {
                got += chunk.len() as u64;
                out.push(chunk);
            }
        }
        if got != want {
            return Err(fail(format!("{got} bytes where {want} were asked (a body cut short)")));
        }
        // A whole (small enough) file is checked against its Xet hash: xet-core checks no
        // hashes on download, so bytes corrupted on the way would otherwise be served.
        if want == size && size > 0 && size <= VERIFY_WHOLE_FILES_UP_TO {
            let (hash, pieces) = (hash.to_string(), out.clone());
            let ok = tokio::task::spawn_blocking(move || matches_file_hash(&hash, &pieces)).await.unwrap_or(false);
            if !ok {
                return Err(fail("the bytes do not match the file's Xet hash (corrupted on the way)".into()));
            }
        }
        Ok(out)
    }
}

/// Files up to this size read whole in one fetch are checked against their Xet hash
/// (hashing runs at about a GB/s on one core).
const VERIFY_WHOLE_FILES_UP_TO: u64 = 64 << 20;

/// Whether `pieces`, a whole file, hash to the Xet file hash `hash` (hex).
fn matches_file_hash(hash: &str, pieces: &[Bytes]) -> bool {
    let mut chunker = xet_data::deduplication::Chunker::default();
    let mut chunks = Vec::new();
    for (i, p) in pieces.iter().enumerate() {
        for c in chunker.next_block(p, i + 1 == pieces.len()) {
            chunks.push((c.hash, c.data.len() as u64));
        }
    }
    xet_core_structures::merklehash::file_hash(&chunks).hex() == hash
}

/// Whether a failed CAS fetch may succeed if tried again: not when the answer was about the
/// request itself (credentials, a missing object, a bad range), which xet-core reports in
/// its message.
fn is_transient(msg: &str) -> bool {
    const FINAL: [&str; 9] =
        ["401", "403", "404", "416", "Auth error", "not found", "Invalid range", "Invalid arguments", "Token refresh"];
    !FINAL.iter().any(|m| msg.contains(m))
}

#[cfg(test)]
mod tests {
    #[test]
    fn resets_and_server_errors_are_tried_again_and_answers_about_the_request_are_not() {
        use super::is_transient;
        assert!(is_transient("Request error: error sending request: connection reset by peer, domain: x"));
        assert!(is_transient("Client error: HTTP status server error (503 Service Unavailable)"));
        assert!(is_transient("100 bytes where 200 were asked (a body cut short)"));
        assert!(!is_transient("Client error: HTTP status client error (403 Forbidden) for url"));
        assert!(!is_transient("Client error: File not found for hash: abc"));
        assert!(!is_transient("Auth error: Token refresh failed: unauthorized"));
    }

    #[test]
    fn a_default_yields_to_the_environment_variable_xet_core_reads_for_its_path() {
        use super::env_of;
        // The names xet-core documents for these settings.
        assert_eq!(env_of("client.legacy_direct_xorb_upload"), "HF_XET_CLIENT_LEGACY_DIRECT_XORB_UPLOAD");
        assert_eq!(env_of("client.ac_initial_download_concurrency"), "HF_XET_CLIENT_AC_INITIAL_DOWNLOAD_CONCURRENCY");
        assert_eq!(env_of("telemetry.final_flush_timeout"), "HF_XET_TELEMETRY_FINAL_FLUSH_TIMEOUT");
    }
}
