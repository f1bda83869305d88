//! The CAS side: xet-core's own `LocalServer` runs in-process on a private
//! port, and the emulator fronts it under `/cas`. The front checks the CAS
//! tokens handed out by the token routes, applies faults, and rewrites the
//! fetch URLs of reconstructions to its own `/cas/xorb-data` route, which
//! serves xorb byte ranges by seeking instead of reading the whole xorb for
//! every range as `LocalServer`'s own term route does.

use std::collections::HashMap;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use parking_lot::Mutex;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use xet_client::cas_client::simulation::local_server::LocalServer;
use xet_client::cas_client::{DeletionControlableClient, DirectAccessClient, LocalClient};
use xet_core_structures::merklehash::MerkleHash;
use xet_core_structures::metadata_shard::MDBShardInfo;
use xet_runtime::core::XetContext;

use crate::error::{ApiError, ApiResult};
use crate::model::XetFileRecord;
use crate::store::Store;

/// How long a fetch URL handed out in a reconstruction stays valid by default.
pub const DEFAULT_FETCH_URL_TTL: Duration = Duration::from_secs(3600);
/// How long a CAS access token stays valid by default.
pub const DEFAULT_CAS_TOKEN_TTL: Duration = Duration::from_secs(3600);
const INNER_REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Clone, Copy)]
struct Grant {
    exp_unix: u64,
    write: bool,
}

pub struct Cas {
    client: Arc<LocalClient>,
    inner_url: String,
    http: reqwest::Client,
    xorb_dir: PathBuf,
    grants: Mutex<HashMap<String, Grant>>,
    token_counter: AtomicU64,
    /// Lifetime of CAS tokens and fetch URLs, in seconds (settable at run time for tests).
    token_ttl_secs: AtomicU64,
    fetch_url_ttl_secs: AtomicU64,
    shutdown: Mutex<Option<oneshot::Sender<()>>>,
}

pub fn now_unix() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default()
}

impl Cas {
    /// Opens the CAS store under `dir` and starts xet-core's `LocalServer` on it.
    pub async fn start(ctx: XetContext, dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let client = LocalClient::new(ctx, dir).await?;
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let deletion: Arc<dyn DeletionControlableClient> = client.clone();
        let server = LocalServer::from_client(client.clone(), Some(deletion), "127.0.0.1".into(), port);
        let (tx, rx) = oneshot::channel();
        tokio::spawn(async move {
            if let Err(e) = server.serve_until_stopped(listener, rx).await {
                tracing::error!("CAS LocalServer stopped: {e}");
            }
        });
        let xorb_dir = std::fs::canonicalize(dir)?.join("xorbs");
        let http = reqwest::Client::builder().timeout(INNER_REQUEST_TIMEOUT).no_proxy().build()?;
        Ok(Self {
            client,
            inner_url: format!("http://127.0.0.1:{port}"),
            http,
            xorb_dir,
            grants: Mutex::default(),
            token_counter: AtomicU64::new(0),
            token_ttl_secs: AtomicU64::new(DEFAULT_CAS_TOKEN_TTL.as_secs()),
            fetch_url_ttl_secs: AtomicU64::new(DEFAULT_FETCH_URL_TTL.as_secs()),
            shutdown: Mutex::new(Some(tx)),
        })
    }

    pub fn stop(&self) {
        if let Some(tx) = self.shutdown.lock().take() {
            let _ = tx.send(());
        }
    }

    /// The URL of xet-core's own server (for comparisons in benchmarks).
    pub fn inner_url(&self) -> &str {
        &self.inner_url
    }

    pub fn set_token_ttl(&self, ttl: Duration) {
        self.token_ttl_secs.store(ttl.as_secs(), Ordering::Relaxed);
    }

    pub fn set_fetch_url_ttl(&self, ttl: Duration) {
        self.fetch_url_ttl_secs.store(ttl.as_secs(), Ordering::Relaxed);
    }

    /// Test hook: every request to xet-core's server waits a while in `range` first (`None`:
    /// not any more), as a slow CAS does.
    pub fn set_backend_delay(&self, range: Option<std::ops::Range<Duration>>) {
        DirectAccessClient::set_api_delay_range(self.client.as_ref(), range);
    }

    /// The shards the CAS holds.
    pub async fn shard_count(&self) -> ApiResult<usize> {
        Ok(self.client.list_shard_entries().await.map_err(|e| ApiError::internal(e.to_string()))?.len())
    }

    /// Mints a CAS access token; returns it with its expiry (unix seconds).
    pub fn issue_token(&self, write: bool) -> (String, u64) {
        use sha2::{Digest, Sha256};
        let n = self.token_counter.fetch_add(1, Ordering::Relaxed);
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or_default();
        let digest = Sha256::digest(format!("{n}\0{nanos}\0{}\0{:p}", std::process::id(), self).as_bytes());
        let token = format!("xet_{}", hex::encode(&digest[..20]));
        let exp_unix = now_unix() + self.token_ttl_secs.load(Ordering::Relaxed);
        self.grants.lock().insert(token.clone(), Grant { exp_unix, write });
        (token, exp_unix)
    }

    fn check_token(&self, headers: &HeaderMap, method: &Method) -> ApiResult<()> {
        let token = crate::auth::bearer(headers).ok_or_else(|| ApiError::unauthorized("CAS token required"))?;
        let grant =
            self.grants.lock().get(token).copied().ok_or_else(|| ApiError::unauthorized("unknown CAS token"))?;
        if grant.exp_unix <= now_unix() {
            return Err(ApiError::unauthorized("CAS token expired"));
        }
        let reads = matches!(*method, Method::GET | Method::HEAD);
        if !reads && !grant.write {
            return Err(ApiError::forbidden("CAS token is read-only"));
        }
        Ok(())
    }

    /// The size of a Xet file, or 404 when the CAS does not hold it.
    pub async fn file_size(&self, xet_hash: &str) -> ApiResult<u64> {
        let hash = MerkleHash::from_hex(xet_hash)
            .map_err(|_| ApiError::bad_request(format!("invalid xet hash {xet_hash:?}")))?;
        DirectAccessClient::get_file_size(self.client.as_ref(), &hash)
            .await
            .map_err(|_| ApiError::not_found(format!("Xet file {xet_hash} not found in CAS")))
    }

    /// Bytes `[start, end)` of a Xet file (the resolve route's GET).
    pub async fn read_file(&self, xet_hash: &str, start: u64, end: u64) -> ApiResult<Bytes> {
        use xet_client::cas_types::FileRange;
        let hash = MerkleHash::from_hex(xet_hash).map_err(|_| ApiError::bad_request("invalid xet hash"))?;
        if start >= end {
            return Ok(Bytes::new());
        }
        DirectAccessClient::get_file_data(self.client.as_ref(), &hash, Some(FileRange::new(start, end)))
            .await
            .map_err(|e| ApiError::internal(format!("cannot read Xet file {xet_hash}: {e}")))
    }

    /// Reads every shard not yet indexed and records its files' sha256 → Xet hash.
    pub async fn reindex_shards(&self, store: &Store) -> ApiResult<()> {
        let shards = self.client.list_shard_entries().await.map_err(|e| ApiError::internal(e.to_string()))?;
        for shard in shards {
            let hex = shard.hex();
            if store.read(|st| st.indexed_shards.contains(&hex)) {
                continue;
            }
            let bytes = self.client.get_shard_bytes(&shard).await.map_err(|e| ApiError::internal(e.to_string()))?;
            let mut reader = std::io::Cursor::new(bytes.as_ref());
            let info = MDBShardInfo::load_from_reader(&mut reader).map_err(|e| ApiError::internal(e.to_string()))?;
            let files = info
                .read_all_file_info_sections(&mut reader)
                .map_err(|e| ApiError::internal(e.to_string()))?
                .into_iter()
                .filter_map(|f| {
                    let sha = f.metadata_ext.as_ref()?.sha256.hex();
                    Some((sha, XetFileRecord { xet_hash: f.metadata.file_hash.hex(), size: f.file_size() }))
                })
                .collect();
            store.index_shard(&hex, files)?;
        }
        Ok(())
    }

    /// Forwards a CAS request to `LocalServer`, rewriting reconstruction fetch URLs.
    pub async fn proxy(
        &self,
        base_url: &str,
        method: Method,
        uri: &Uri,
        headers: &HeaderMap,
        body: Bytes,
    ) -> ApiResult<Response> {
        self.check_token(headers, &method)?;
        let path_and_query = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        let inner_path = path_and_query.strip_prefix("/cas").unwrap_or(path_and_query);
        let mut req = self.http.request(method, format!("{}{inner_path}", self.inner_url)).body(body);
        for name in [header::RANGE, header::CONTENT_TYPE, header::ACCEPT] {
            if let Some(v) = headers.get(&name) {
                req = req.header(name, v);
            }
        }
        // The backend's request runs in a task of its own, to its end, even when our client goes
        // away (a mount killed mid-upload): cancelled half-way, `LocalServer`'s shard upload can
        // leave its shard index failed for good, so that every later shard upload answers 500
        // ("Task lock error: … previously reported error"), as a SIGKILL test once met.
        let backend = tokio::spawn(async move {
            let resp = req.send().await?;
            let status = resp.status();
            let mut out_headers = HeaderMap::new();
            for name in [header::CONTENT_TYPE, header::CONTENT_RANGE] {
                if let Some(v) = resp.headers().get(&name) {
                    out_headers.insert(name, v.clone());
                }
            }
            Ok::<_, reqwest::Error>((status, out_headers, resp.bytes().await?))
        });
        let (status, out_headers, body) = backend
            .await
            .map_err(|e| ApiError::internal(format!("CAS backend task: {e}")))?
            .map_err(|e| ApiError::new(StatusCode::BAD_GATEWAY, format!("CAS backend: {e}")))?;
        if status.is_server_error() {
            tracing::warn!(%status, path = inner_path, "CAS backend failed: {}", String::from_utf8_lossy(&body));
        }
        let is_reconstruction =
            inner_path.starts_with("/v1/reconstructions") || inner_path.starts_with("/v2/reconstructions");
        let body =
            if is_reconstruction && status.is_success() { self.rewrite_fetch_urls(base_url, &body)? } else { body };
        Ok((status, out_headers, body).into_response())
    }

    /// Points every fetch URL of a reconstruction (v1 `fetch_info`, v2 `xorbs`) at `/cas/xorb-data`.
    fn rewrite_fetch_urls(&self, base_url: &str, body: &[u8]) -> ApiResult<Bytes> {
        let mut doc: serde_json::Value = serde_json::from_slice(body)
            .map_err(|e| ApiError::internal(format!("bad reconstruction from CAS: {e}")))?;
        let exp = now_unix() + self.fetch_url_ttl_secs.load(Ordering::Relaxed);
        for key in ["fetch_info", "xorbs"] {
            let Some(map) = doc.get_mut(key).and_then(|m| m.as_object_mut()) else {
                continue;
            };
            for (hash, fetches) in map.iter_mut() {
                for fetch in fetches.as_array_mut().into_iter().flatten() {
                    if let Some(obj) = fetch.as_object_mut() {
                        obj.insert("url".into(), format!("{base_url}/cas/xorb-data/{hash}?exp={exp}").into());
                    }
                }
            }
        }
        Ok(Bytes::from(serde_json::to_vec(&doc).expect("JSON value serializes")))
    }

    /// Serves byte ranges of one xorb file, reading only the asked bytes.
    pub async fn xorb_data(&self, hash: &str, exp: Option<u64>, headers: &HeaderMap) -> ApiResult<Response> {
        match exp {
            Some(exp) if exp > now_unix() => {}
            _ => return Err(ApiError::forbidden("Request has expired")),
        }
        let hash = MerkleHash::from_hex(hash).map_err(|_| ApiError::bad_request("invalid xorb hash"))?;
        let path = self.xorb_dir.join(format!("default.{}", hash.hex()));
        let range = headers.get(header::RANGE).and_then(|v| v.to_str().ok()).map(str::to_owned);
        tokio::task::spawn_blocking(move || serve_ranges(&path, range.as_deref()))
            .await
            .map_err(|e| ApiError::internal(e.to_string()))?
    }
}

/// Parses `bytes=a-b,c-d` (inclusive ends; `a-` and `-n` allowed) against a length.
fn parse_ranges(spec: &str, len: u64) -> Option<Vec<(u64, u64)>> {
    let list = spec.trim().strip_prefix("bytes=")?;
    let mut out = Vec::new();
    for part in list.split(',') {
        let (a, b) = part.trim().split_once('-')?;
        let (start, end) = match (a.is_empty(), b.is_empty()) {
            (false, false) => (a.parse().ok()?, b.parse::<u64>().ok()?.min(len.checked_sub(1)?)),
            (false, true) => (a.parse().ok()?, len.checked_sub(1)?),
            (true, false) => (len.saturating_sub(b.parse().ok()?), len.checked_sub(1)?),
            (true, true) => return None,
        };
        if start > end || start >= len {
            return None;
        }
        out.push((start, end));
    }
    (!out.is_empty()).then_some(out)
}

fn serve_ranges(path: &Path, range: Option<&str>) -> ApiResult<Response> {
    let file = std::fs::File::open(path).map_err(|_| ApiError::not_found("xorb not found"))?;
    let len = file.metadata().map_err(|e| ApiError::internal(e.to_string()))?.len();
    let read = |start: u64, end: u64| -> ApiResult<Vec<u8>> {
        let mut buf = vec![0u8; (end - start + 1) as usize];
        file.read_exact_at(&mut buf, start).map_err(|e| ApiError::internal(e.to_string()))?;
        Ok(buf)
    };
    let Some(spec) = range else {
        return Ok((StatusCode::OK, read(0, len.saturating_sub(1))?).into_response());
    };
    let Some(ranges) = parse_ranges(spec, len) else {
        let mut resp = ApiError::new(StatusCode::RANGE_NOT_SATISFIABLE, "range not satisfiable").into_response();
        if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
            resp.headers_mut().insert(header::CONTENT_RANGE, v);
        }
        return Ok(resp);
    };
    if let [(start, end)] = ranges[..] {
        let content_range = format!("bytes {start}-{end}/{len}");
        return Ok(
            (StatusCode::PARTIAL_CONTENT, [(header::CONTENT_RANGE, content_range)], read(start, end)?).into_response()
        );
    }
    const BOUNDARY: &str = "hf_emulator_byteranges";
    let mut body = Vec::new();
    for (start, end) in ranges {
        body.extend_from_slice(
            format!("--{BOUNDARY}\r\nContent-Type: application/octet-stream\r\nContent-Range: bytes {start}-{end}/{len}\r\n\r\n")
                .as_bytes(),
        );
        body.extend_from_slice(&read(start, end)?);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    let content_type = format!("multipart/byteranges; boundary={BOUNDARY}");
    Ok((StatusCode::PARTIAL_CONTENT, [(header::CONTENT_TYPE, content_type)], Body::from(body)).into_response())
}

#[cfg(test)]
mod tests {
    use super::parse_ranges;

    #[test]
    fn ranges_parse_like_http() {
        assert_eq!(parse_ranges("bytes=0-9", 100), Some(vec![(0, 9)]));
        assert_eq!(parse_ranges("bytes=90-200", 100), Some(vec![(90, 99)]));
        assert_eq!(parse_ranges("bytes=10-", 100), Some(vec![(10, 99)]));
        assert_eq!(parse_ranges("bytes=-10", 100), Some(vec![(90, 99)]));
        assert_eq!(parse_ranges("bytes=0-1,5-6", 100), Some(vec![(0, 1), (5, 6)]));
        assert_eq!(parse_ranges("bytes=100-101", 100), None);
        assert_eq!(parse_ranges("bytes=5-1", 100), None);
        assert_eq!(parse_ranges("items=0-1", 100), None);
    }
}
