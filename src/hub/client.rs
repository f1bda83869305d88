//! The Hub HTTP client: info, one-level listings (paginated), HEAD lookups,
//! ranged downloads of plain files, and Xet credentials. Every call has a
//! deadline that covers its retries; 408/429/5xx and transport errors are
//! retried with backoff, honouring the Hub's `RateLimit` header on 429.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use reqwest::header::{HeaderMap, AUTHORIZATION, LINK, RANGE};
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use tracing::Instrument;

use super::retry::retry_delay;
use super::source::Source;
use super::token::TokenSource;
use crate::error::FsError;

/// Longest wait a `RateLimit` header may impose on one retry.
const RATE_LIMIT_MAX_WAIT: Duration = Duration::from_secs(30);
const LIST_PAGE_LIMIT: usize = 1000;

#[derive(Debug, Clone, thiserror::Error)]
pub enum HubError {
    #[error("not found: {0}")]
    NotFound(String),
    #[error("unauthorized (401) for {0}: the token is missing, invalid or expired")]
    Unauthorized(String),
    #[error("forbidden (403) for {0}: the token lacks access")]
    Forbidden(String),
    #[error("quota exceeded ({0}) for {1}")]
    Quota(u16, String),
    #[error("HTTP {0} for {1}: {2}")]
    Status(u16, String, String),
    #[error("no answer within {0:?} for {1}")]
    Timeout(Duration, String),
    #[error("network error for {0}: {1}")]
    Network(String, String),
    #[error("bad answer from {0}: {1}")]
    Decode(String, String),
}

impl From<HubError> for FsError {
    fn from(e: HubError) -> Self {
        match e {
            HubError::NotFound(_) => FsError::NotFound,
            HubError::Unauthorized(_) | HubError::Forbidden(_) => FsError::PermissionDenied(e.to_string()),
            HubError::Quota(..) => FsError::NoSpace(e.to_string()),
            HubError::Timeout(d, what) => FsError::TimedOut(d, what),
            HubError::Status(..) | HubError::Network(..) | HubError::Decode(..) => FsError::Io(e.to_string()),
        }
    }
}

/// A file or directory as the Hub lists it, with its path inside the repo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteEntry {
    pub path: String,
    pub kind: RemoteKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoteKind {
    Dir,
    File(RemoteFile),
}

/// What identifies a file's content: its size, Xet hash (if in Xet) and etag.
#[derive(Debug, Clone, Default)]
pub struct RemoteFile {
    pub size: u64,
    pub xet_hash: Option<String>,
    /// Git oid, LFS sha256, or Xet hash for bucket files: changes when the content does.
    pub etag: String,
    pub mtime: Option<SystemTime>,
    /// The repo commit the file was listed at (empty for buckets): bytes not in Xet are
    /// fetched at it, so a handle on this identity never reads a later commit's bytes. Not
    /// part of the identity (a new commit that keeps the file keeps its content).
    pub commit: Arc<str>,
}

impl PartialEq for RemoteFile {
    fn eq(&self, o: &Self) -> bool {
        (self.size, &self.xet_hash, &self.etag, self.mtime) == (o.size, &o.xet_hash, &o.etag, o.mtime)
    }
}

impl Eq for RemoteFile {}

/// The probe of a source: what its revision currently points at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// The canonical id (aliases resolved).
    pub id: String,
    /// Commit sha (repos) or `updatedAt` (buckets): changes when the content does.
    pub version: String,
    pub modified: Option<SystemTime>,
}

#[derive(Deserialize)]
struct TreeEntry {
    #[serde(rename = "type")]
    kind: String,
    path: String,
    #[serde(default)]
    size: u64,
    #[serde(default)]
    oid: Option<String>,
    #[serde(default, rename = "xetHash")]
    xet_hash: Option<String>,
    #[serde(default)]
    lfs: Option<Lfs>,
    #[serde(default)]
    mtime: Option<String>,
}

#[derive(Deserialize)]
struct Lfs {
    oid: String,
    size: u64,
}

/// Larger than any file a Hub holds (1 PiB): a size past it is a bad answer.
const MAX_FILE_SIZE: u64 = 1 << 50;
/// Pages of one listing at most (a million entries at the page size asked for).
const MAX_PAGES: usize = 1000;

/// Whether `path` is relative and made of plain names only.
fn is_plain_path(path: &str) -> bool {
    !path.is_empty() && path.split('/').all(|c| !c.is_empty() && c != "." && c != ".." && !c.contains('\0'))
}

/// The pages of one listing fetched so far, to stop a `Link` header that loops.
#[derive(Default)]
struct Pages(std::collections::HashSet<String>);

/// The next page's URL, or an error when it was fetched already or there are too many.
fn next_page(pages: &mut Pages, current: &str, next: String) -> Result<String, HubError> {
    pages.0.insert(current.to_string());
    if pages.0.contains(&next) || pages.0.len() >= MAX_PAGES {
        return Err(HubError::Decode(
            current.into(),
            format!("the listing's pages loop or never end ({} pages)", pages.0.len()),
        ));
    }
    Ok(next)
}

fn parse_time(s: &str) -> Option<SystemTime> {
    chrono::DateTime::parse_from_rfc3339(s).ok().map(SystemTime::from)
}

impl TreeEntry {
    /// The entry as the mount shows it, or `None` (logged) for one no mount can show: a path
    /// that is not a plain relative path (`..`, `.`, empty parts, a leading `/`, NUL), or an
    /// absurd size.
    fn into_remote(self, commit: &Arc<str>) -> Option<RemoteEntry> {
        if !is_plain_path(&self.path) {
            tracing::warn!("the Hub listed an entry with a path no mount can show ({:?}); skipped", self.path);
            return None;
        }
        let size = self.lfs.as_ref().map_or(self.size, |l| l.size);
        if size > MAX_FILE_SIZE {
            tracing::warn!("the Hub listed {:?} with an absurd size ({size} bytes); skipped", self.path);
            return None;
        }
        Some(self.into_entry(commit))
    }

    fn into_entry(self, commit: &Arc<str>) -> RemoteEntry {
        let kind = if self.kind == "directory" {
            RemoteKind::Dir
        } else {
            let size = self.lfs.as_ref().map_or(self.size, |l| l.size);
            let etag = match (&self.lfs, &self.oid, &self.xet_hash) {
                (Some(l), _, _) => l.oid.clone(),
                (None, Some(oid), _) => oid.clone(),
                (None, None, Some(x)) => x.clone(),
                (None, None, None) => String::new(),
            };
            RemoteKind::File(RemoteFile {
                size,
                xet_hash: self.xet_hash,
                etag,
                mtime: self.mtime.as_deref().and_then(parse_time),
                commit: commit.clone(),
            })
        };
        RemoteEntry { path: self.path, kind }
    }
}

/// The Hub client of one mount.
pub struct HubClient {
    http: reqwest::Client,
    endpoint: String,
    token: TokenSource,
    /// Deadline of one call, retries included.
    deadline: Duration,
}

impl HubClient {
    pub fn new(endpoint: &str, token: TokenSource, deadline: Duration) -> Result<Arc<Self>, HubError> {
        let http = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(Duration::from_secs(10).min(deadline))
            .pool_idle_timeout(Duration::from_secs(60))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("hf-mount/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| HubError::Network(endpoint.into(), e.to_string()))?;
        Ok(Arc::new(Self { http, endpoint: endpoint.trim_end_matches('/').to_string(), token, deadline }))
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    pub fn deadline(&self) -> Duration {
        self.deadline
    }

    pub fn token(&self) -> Option<Arc<str>> {
        self.token.current()
    }

    /// Sends a request until it succeeds, fails for good, or the deadline passes.
    async fn send(&self, method: Method, url: &str, headers: HeaderMap) -> Result<reqwest::Response, HubError> {
        self.send_with(method, url, headers, None).await
    }

    /// [`Self::send`] with a body (sent again on each retry: only for idempotent requests).
    async fn send_with(
        &self,
        method: Method,
        url: &str,
        headers: HeaderMap,
        body: Option<Bytes>,
    ) -> Result<reqwest::Response, HubError> {
        // The span names the path only: URLs carry no credentials, but keep queries out all the same.
        let path = url.split('?').next().unwrap_or(url);
        let span = tracing::debug_span!(
            "hub.http",
            otel.name = %format!("{method} {}", path.split('/').take(5).collect::<Vec<_>>().join("/")),
            http.method = %method,
            url.path = %path,
            http.status_code = tracing::field::Empty,
        );
        let result = self.send_inner(method, url, headers, body).instrument(span.clone()).await;
        match &result {
            Ok(r) => {
                span.record("http.status_code", r.status().as_u16());
            }
            Err(e) => {
                let status = match e {
                    HubError::NotFound(_) => "404".to_string(),
                    HubError::Unauthorized(_) => "401".to_string(),
                    HubError::Forbidden(_) => "403".to_string(),
                    HubError::Quota(s, _) | HubError::Status(s, _, _) => s.to_string(),
                    HubError::Timeout(..) => "timeout".to_string(),
                    HubError::Network(..) | HubError::Decode(..) => "network".to_string(),
                };
                if status != "404" {
                    crate::metrics::get().remote_errors.add(1, &[crate::metrics::kv("status", status)]);
                }
            }
        }
        result
    }

    async fn send_inner(
        &self,
        method: Method,
        url: &str,
        headers: HeaderMap,
        body: Option<Bytes>,
    ) -> Result<reqwest::Response, HubError> {
        let start = Instant::now();
        let mut attempt = 0u32;
        loop {
            let left = self.deadline.saturating_sub(start.elapsed());
            if left.is_zero() {
                return Err(HubError::Timeout(self.deadline, url.into()));
            }
            let mut req = self.http.request(method.clone(), url).headers(headers.clone()).timeout(left);
            if let Some(b) = &body {
                req = req.body(b.clone());
            }
            if let Some(t) = self.token.current() {
                req = req.header(AUTHORIZATION, format!("Bearer {t}"));
            }
            let wait = match req.send().await {
                Ok(resp) if resp.status().is_success() || resp.status() == StatusCode::NOT_MODIFIED => return Ok(resp),
                Ok(resp) => {
                    let status = resp.status();
                    if !is_retryable(status) {
                        return Err(final_error(status, url, resp).await);
                    }
                    let hinted =
                        (status == StatusCode::TOO_MANY_REQUESTS).then(|| rate_limit_wait(resp.headers())).flatten();
                    tracing::debug!(%status, url, attempt, "retryable Hub answer");
                    hinted.unwrap_or_else(|| retry_delay(attempt))
                }
                Err(e) if e.is_timeout() => return Err(HubError::Timeout(self.deadline, url.into())),
                Err(e) => {
                    tracing::debug!(url, attempt, "Hub request failed: {e}");
                    retry_delay(attempt)
                }
            };
            attempt += 1;
            let left = self.deadline.saturating_sub(start.elapsed());
            if wait >= left {
                return Err(HubError::Timeout(self.deadline, url.into()));
            }
            tokio::time::sleep(wait).await;
        }
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, url: &str) -> Result<(T, HeaderMap), HubError> {
        let resp = self.send(Method::GET, url, HeaderMap::new()).await?;
        let headers = resp.headers().clone();
        let body = resp.bytes().await.map_err(|e| HubError::Network(url.into(), e.to_string()))?;
        let v = serde_json::from_slice(&body).map_err(|e| HubError::Decode(url.into(), e.to_string()))?;
        Ok((v, headers))
    }

    /// What the source's revision points at now.
    pub async fn probe(&self, src: &Source) -> Result<Probe, HubError> {
        #[derive(Deserialize)]
        struct Info {
            id: String,
            sha: Option<String>,
            #[serde(rename = "lastModified")]
            last_modified: Option<String>,
            #[serde(rename = "updatedAt")]
            updated_at: Option<String>,
        }
        // Only the fields a mount needs: a big repo's info otherwise lists every file.
        let url = match src.kind {
            super::SourceKind::Repo(_) => {
                format!("{}?expand[]=sha&expand[]=lastModified", src.info_url(&self.endpoint))
            }
            super::SourceKind::Bucket => src.info_url(&self.endpoint),
        };
        let (info, _): (Info, _) = self.get_json(&url).await?;
        let stamp = info.updated_at.or(info.last_modified);
        let version = match (&info.sha, &stamp) {
            (Some(sha), _) => sha.clone(),
            (None, Some(t)) => t.clone(),
            (None, None) => return Err(HubError::Decode(url, "info has neither sha nor updatedAt".into())),
        };
        Ok(Probe { id: info.id, version, modified: stamp.as_deref().and_then(parse_time) })
    }

    /// Every entry one level below `repo_path` (all pages). Bucket listings
    /// match prefixes raw, so only strict descendants are kept.
    pub async fn list_dir(&self, src: &Source, commit: &str, repo_path: &str) -> Result<Vec<RemoteEntry>, HubError> {
        let mut url = format!("{}?limit={LIST_PAGE_LIMIT}", src.tree_url(&self.endpoint, commit, repo_path));
        let prefix = if repo_path.is_empty() { String::new() } else { format!("{repo_path}/") };
        let commit: Arc<str> = commit.into();
        let (mut out, mut pages) = (Vec::new(), Pages::default());
        loop {
            let (page, headers): (Vec<TreeEntry>, _) = self.get_json(&url).await?;
            out.extend(
                page.into_iter()
                    .filter(|e| {
                        e.path.starts_with(&prefix)
                            && e.path.len() > prefix.len()
                            && !e.path[prefix.len()..].contains('/')
                    })
                    .filter_map(|e| e.into_remote(&commit)),
            );
            match next_link(&headers) {
                Some(next) => url = next_page(&mut pages, &url, next)?,
                None => return Ok(out),
            }
        }
    }

    /// Whether `repo_path` is a directory: it has a strict descendant. Reads as few
    /// entries as it can (one for repos; raw-prefix bucket listings may need a page or more).
    pub async fn is_dir(&self, src: &Source, commit: &str, repo_path: &str) -> Result<bool, HubError> {
        let limit = if src.is_bucket() { 100 } else { 1 };
        let mut url = format!("{}?limit={limit}", src.tree_url(&self.endpoint, commit, repo_path));
        let mut pages = Pages::default();
        let prefix = if repo_path.is_empty() { String::new() } else { format!("{repo_path}/") };
        loop {
            let (page, headers): (Vec<TreeEntry>, _) = match self.get_json(&url).await {
                Ok(r) => r,
                Err(HubError::NotFound(_)) => return Ok(false),
                Err(e) => return Err(e),
            };
            if page.iter().any(|e| e.path.starts_with(&prefix) && e.path.len() > prefix.len()) {
                return Ok(true);
            }
            match next_link(&headers) {
                Some(next) if src.is_bucket() => url = next_page(&mut pages, &url, next)?,
                _ => return Ok(false),
            }
        }
    }

    /// `HEAD` of one file; `None` when there is no such file (it may be a directory).
    pub async fn head_file(&self, src: &Source, commit: &str, repo_path: &str) -> Result<Option<RemoteFile>, HubError> {
        let url = src.resolve_url(&self.endpoint, commit, repo_path);
        let resp = match self.send(Method::HEAD, &url, HeaderMap::new()).await {
            Ok(r) => r,
            Err(HubError::NotFound(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        let h = resp.headers();
        let text = |name: &str| h.get(name).and_then(|v| v.to_str().ok()).map(|s| s.trim_matches('"').to_string());
        let size = text("x-linked-size")
            .or_else(|| text("content-length"))
            .and_then(|s| s.parse().ok())
            .filter(|s| *s <= MAX_FILE_SIZE)
            .ok_or_else(|| HubError::Decode(url.clone(), "no size (or an absurd one) in the HEAD answer".into()))?;
        let xet_hash = text("x-xet-hash");
        // Without an identity the bytes could not be checked later: not an answer to trust.
        let etag = text("x-linked-etag")
            .or_else(|| text("etag"))
            .or_else(|| xet_hash.clone())
            .filter(|e| !e.is_empty())
            .ok_or_else(|| HubError::Decode(url.clone(), "no etag in the HEAD answer".into()))?;
        let mtime = text("last-modified").and_then(|s| httpdate::parse_http_date(&s).ok());
        Ok(Some(RemoteFile { size, xet_hash, etag, mtime, commit: commit.into() }))
    }

    /// Bytes `[start, end)` of a plain (non-Xet) file through the resolve URL.
    /// Bytes `[start, end)` of a file not in Xet, at `commit`; `etag` (when known) must be
    /// the answer's, so bytes of other content are never taken for this file's.
    pub async fn get_range(
        &self,
        src: &Source,
        commit: &str,
        repo_path: &str,
        etag: &str,
        (start, end): (u64, u64),
    ) -> Result<Bytes, HubError> {
        let url = src.resolve_url(&self.endpoint, commit, repo_path);
        let mut headers = HeaderMap::new();
        headers.insert(RANGE, format!("bytes={start}-{}", end - 1).parse().expect("ascii header"));
        let resp = self.send(Method::GET, &url, headers).await?;
        let h = resp.headers();
        let answered = ["x-linked-etag", "etag"]
            .iter()
            .find_map(|n| h.get(*n).and_then(|v| v.to_str().ok()))
            .map(|v| v.trim_start_matches("W/").trim_matches('"').to_string());
        if let Some(got) = answered.filter(|g| !etag.is_empty() && g != etag) {
            return Err(HubError::Decode(url, format!("the file changed (etag {got}, expected {etag})")));
        }
        let partial = resp.status() == StatusCode::PARTIAL_CONTENT;
        let body = resp.bytes().await.map_err(|e| HubError::Network(url.clone(), e.to_string()))?;
        let body = if partial {
            body
        } else {
            // A server that ignores Range sends the whole file.
            let (s, e) = (start as usize, (end as usize).min(body.len()));
            if s < e {
                body.slice(s..e)
            } else {
                Bytes::new()
            }
        };
        if body.len() as u64 != end - start {
            return Err(HubError::Decode(url, format!("{} bytes where {} were asked", body.len(), end - start)));
        }
        Ok(body)
    }

    /// CAS read credentials: `(casUrl, accessToken, exp)`.
    pub async fn xet_read_token(&self, src: &Source, commit: &str) -> Result<(String, String, u64), HubError> {
        self.xet_token(&src.xet_read_token_url(&self.endpoint, commit)).await
    }

    /// CAS credentials from a token route: `(casUrl, accessToken, exp)`.
    async fn xet_token(&self, url: &str) -> Result<(String, String, u64), HubError> {
        #[derive(Deserialize)]
        struct Token {
            #[serde(rename = "casUrl")]
            cas_url: String,
            #[serde(rename = "accessToken")]
            access_token: String,
            exp: u64,
        }
        let (t, _): (Token, _) = self.get_json(url).await?;
        Ok((t.cas_url, t.access_token, t.exp))
    }
}

impl HubClient {
    /// Every file below `repo_path` (all pages), for moving a directory whole.
    pub async fn list_recursive(
        &self,
        src: &Source,
        commit: &str,
        repo_path: &str,
    ) -> Result<Vec<RemoteEntry>, HubError> {
        let mut url =
            format!("{}?recursive=true&limit={LIST_PAGE_LIMIT}", src.tree_url(&self.endpoint, commit, repo_path));
        let prefix = if repo_path.is_empty() { String::new() } else { format!("{repo_path}/") };
        let commit: Arc<str> = commit.into();
        let (mut out, mut pages) = (Vec::new(), Pages::default());
        loop {
            let (page, headers): (Vec<TreeEntry>, _) = match self.get_json(&url).await {
                Ok(r) => r,
                Err(HubError::NotFound(_)) => return Ok(out),
                Err(e) => return Err(e),
            };
            out.extend(
                page.into_iter()
                    .filter(|e| e.path.starts_with(&prefix) && e.path.len() > prefix.len())
                    .filter_map(|e| e.into_remote(&commit)),
            );
            match next_link(&headers) {
                Some(next) => url = next_page(&mut pages, &url, next)?,
                None => return Ok(out),
            }
        }
    }

    /// CAS write credentials: `(casUrl, accessToken, exp)`.
    pub async fn xet_write_token(&self, src: &Source) -> Result<(String, String, u64), HubError> {
        self.xet_token(&src.xet_write_token_url(&self.endpoint)).await
    }

    /// One bucket batch (NDJSON, all adds before all deletes), applied atomically by the Hub.
    /// Retried like any call: the lines say what the paths must hold, so sending them twice
    /// leaves the same state.
    pub async fn bucket_batch(&self, src: &Source, lines: &[BatchLine]) -> Result<(), HubError> {
        let url = format!("{}/batch", src.api_base(&self.endpoint));
        let mut body = Vec::new();
        for l in lines {
            serde_json::to_writer(&mut body, l).expect("batch lines serialize");
            body.push(b'\n');
        }
        let mut headers = HeaderMap::new();
        headers.insert(reqwest::header::CONTENT_TYPE, "application/x-ndjson".parse().expect("ascii header"));
        let resp = self.send_with(Method::POST, &url, headers, Some(Bytes::from(body))).await?;
        #[derive(Deserialize)]
        struct Answer {
            #[serde(default)]
            failed: Vec<serde_json::Value>,
        }
        let text = resp.bytes().await.map_err(|e| HubError::Network(url.clone(), e.to_string()))?;
        // An answer that cannot be read does not say the lines were applied: the batch is
        // sent again (it is idempotent) rather than taken as done (which lost writes).
        let answer: Answer = if text.trim_ascii().is_empty() {
            Answer { failed: Vec::new() }
        } else {
            serde_json::from_slice(&text).map_err(|e| HubError::Decode(url.clone(), format!("batch answer: {e}")))?
        };
        if !answer.failed.is_empty() {
            let first = answer.failed[0].to_string();
            return Err(HubError::Status(422, url, format!("{} line(s) refused, first: {first}", answer.failed.len())));
        }
        Ok(())
    }
}

/// One line of a bucket batch.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "type")]
pub enum BatchLine {
    #[serde(rename = "addFile")]
    Add {
        path: String,
        #[serde(rename = "xetHash")]
        xet_hash: String,
        /// Milliseconds since the epoch.
        mtime: i64,
    },
    #[serde(rename = "deleteFile")]
    Delete { path: String },
}

fn is_retryable(s: StatusCode) -> bool {
    matches!(s.as_u16(), 408 | 429 | 500 | 502 | 503 | 504)
}

/// The wait asked by an IETF `RateLimit: "api";r=0;t=45` header (or `Retry-After`), capped.
fn rate_limit_wait(h: &HeaderMap) -> Option<Duration> {
    let from_ratelimit = h.get("ratelimit").and_then(|v| v.to_str().ok()).and_then(|v| {
        v.split(';').find_map(|p| p.trim().strip_prefix("t=")).and_then(|t| t.trim().parse::<u64>().ok())
    });
    let secs = from_ratelimit.or_else(|| h.get("retry-after")?.to_str().ok()?.trim().parse().ok())?;
    Some(Duration::from_secs(secs).min(RATE_LIMIT_MAX_WAIT))
}

fn next_link(h: &HeaderMap) -> Option<String> {
    let link = h.get(LINK)?.to_str().ok()?;
    link.split(',').find(|p| p.contains("rel=\"next\"")).and_then(|p| {
        let start = p.find('<')? + 1;
        let end = p.find('>')?;
        Some(p[start..end].to_string())
    })
}

async fn final_error(status: StatusCode, url: &str, resp: reqwest::Response) -> HubError {
    let body = resp.text().await.unwrap_or_default();
    let message = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
        .unwrap_or_else(|| body.chars().take(200).collect());
    match status.as_u16() {
        401 => HubError::Unauthorized(url.into()),
        403 => HubError::Forbidden(url.into()),
        404 => HubError::NotFound(url.into()),
        413 | 507 => HubError::Quota(status.as_u16(), url.into()),
        s => HubError::Status(s, url.into(), message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_listing_paths_and_looping_pages_are_refused() {
        for bad in ["", "/abs", "a//b", "../x", "a/../b", "./a", "a/.", "a\0b", "a/"] {
            assert!(!is_plain_path(bad), "{bad:?}");
        }
        for good in ["a", "a/b.txt", "..a", "a/.hidden", "a b/ü"] {
            assert!(is_plain_path(good), "{good:?}");
        }
        let mut pages = Pages::default();
        assert_eq!(next_page(&mut pages, "u1", "u2".into()).unwrap(), "u2");
        assert!(next_page(&mut pages, "u2", "u1".into()).is_err(), "u2 → u1 loops");
        let mut pages = Pages::default();
        let err = (0..).try_for_each(|i| next_page(&mut pages, &format!("p{i}"), format!("p{}", i + 1)).map(drop));
        assert!(err.is_err() && pages.0.len() == MAX_PAGES, "an endless listing stops");
    }

    #[test]
    fn rate_limit_and_link_headers() {
        let mut h = HeaderMap::new();
        h.insert("ratelimit", "\"api\";r=0;t=7".parse().unwrap());
        assert_eq!(rate_limit_wait(&h), Some(Duration::from_secs(7)));
        h.insert("ratelimit", "\"api\";r=0;t=4000".parse().unwrap());
        assert_eq!(rate_limit_wait(&h), Some(RATE_LIMIT_MAX_WAIT));
        let mut l = HeaderMap::new();
        l.insert(LINK, "<http://h/api/x?cursor=abc>; rel=\"next\"".parse().unwrap());
        assert_eq!(next_link(&l).as_deref(), Some("http://h/api/x?cursor=abc"));
    }

    #[test]
    fn tree_entries_carry_the_real_size_and_etag() {
        let lfs: TreeEntry = serde_json::from_str(
            r#"{"type":"file","path":"m.bin","size":134,"oid":"p","xetHash":"x","lfs":{"oid":"sha","size":9999,"pointerSize":134}}"#,
        )
        .unwrap();
        let RemoteKind::File(f) = lfs.into_remote(&Arc::from("c")).unwrap().kind else { panic!() };
        assert_eq!((f.size, f.etag.as_str(), f.xet_hash.as_deref()), (9999, "sha", Some("x")));
    }
}
