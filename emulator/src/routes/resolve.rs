//! `HEAD|GET /{datasets/|spaces/}{repo}/resolve/{rev}/{path}` and
//! `HEAD|GET /buckets/{ns}/{name}/resolve/{path}`: the point lookup of one
//! file with the Hub's headers, and its bytes (with `Range`) for GET.

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};

use super::repos::visible_repo;
use super::{base_url, caller, decoded_segments, Shared};
use crate::error::{ApiError, ApiResult};
use crate::model::{RepoKind, RepoRef, Storage};
use crate::store::validate_revision;

/// What a resolve answers about one file.
struct Resolved {
    size: u64,
    etag: String,
    last_modified: DateTime<Utc>,
    xet_hash: Option<String>,
    /// The xet-read-token URL for `Link: <…>; rel="xet-auth"`.
    token_url: String,
    repo_commit: Option<String>,
    /// Where the bytes are: a git blob oid, or the Xet hash.
    blob_oid: Option<String>,
}

pub async fn resolve(State(state): State<Shared>, method: Method, uri: Uri, headers: HeaderMap) -> Response {
    let result = async {
        if method != Method::GET && method != Method::HEAD {
            return Err(ApiError::not_found(format!("no route for {method} {}", uri.path())));
        }
        let segs = decoded_segments(uri.path())?;
        let resolved = if segs.first().map(String::as_str) == Some("buckets") {
            resolve_bucket(&state, &headers, &segs[1..])?
        } else {
            resolve_repo(&state, &headers, &segs)?
        };
        respond(&state, &method, &headers, resolved).await
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

fn resolve_repo(state: &Shared, headers: &HeaderMap, segs: &[String]) -> ApiResult<Resolved> {
    let (kind, rest) = match segs.first().map(String::as_str) {
        Some("datasets") => (RepoKind::Dataset, &segs[1..]),
        Some("spaces") => (RepoKind::Space, &segs[1..]),
        _ => (RepoKind::Model, segs),
    };
    let id_len = match (rest.get(1).map(String::as_str), rest.get(2).map(String::as_str)) {
        (Some("resolve"), _) => 1,
        (_, Some("resolve")) => 2,
        _ => return Err(ApiError::not_found("Not found")),
    };
    let repo = RepoRef::new(kind, rest[..id_len].join("/"));
    let after = &rest[id_len + 1..];
    let take = if after.first().map(String::as_str) == Some("refs") && after.len() >= 4 { 3 } else { 1 };
    if after.len() <= take {
        return Err(ApiError::entry_not_found(""));
    }
    let rev = after[..take].join("/");
    validate_revision(&rev)?;
    let path = after[take..].join("/");
    let who = caller(state, headers);
    state.store.read(|st| {
        let r = visible_repo(st, &repo, &who)?;
        let commit = r.commit(&rev).ok_or_else(|| ApiError::revision_not_found(&rev))?;
        let f = commit.files.get(&path).ok_or_else(|| ApiError::entry_not_found(&path))?;
        Ok(Resolved {
            size: f.size,
            etag: f.etag().to_string(),
            last_modified: commit.date,
            xet_hash: f.xet_hash().map(str::to_owned),
            token_url: format!(
                "{}/api/{}/{}/xet-read-token/{}",
                base_url(headers),
                kind.api_plural(),
                r.id,
                commit.sha
            ),
            repo_commit: Some(commit.sha.clone()),
            blob_oid: matches!(f.storage, Storage::Blob).then(|| f.oid.clone()),
        })
    })
}

fn resolve_bucket(state: &Shared, headers: &HeaderMap, segs: &[String]) -> ApiResult<Resolved> {
    if segs.len() < 4 || segs[2] != "resolve" {
        return Err(ApiError::not_found("Not found"));
    }
    let id = format!("{}/{}", segs[0], segs[1]);
    let path = segs[3..].join("/");
    let who = caller(state, headers);
    state.store.read(|st| {
        let b = st.buckets.get(&id);
        who.check_read(segs.first().map(String::as_str), b.is_some_and(|b| b.private), ApiError::bucket_not_found())?;
        let b = b.ok_or_else(ApiError::bucket_not_found)?;
        let f = b.files.get(&path).ok_or_else(|| ApiError::entry_not_found(&path))?;
        Ok(Resolved {
            size: f.size,
            etag: f.xet_hash.clone(),
            last_modified: f.mtime,
            xet_hash: Some(f.xet_hash.clone()),
            token_url: format!("{}/api/buckets/{id}/xet-read-token", base_url(headers)),
            repo_commit: None,
            blob_oid: None,
        })
    })
}

async fn respond(state: &Shared, method: &Method, req_headers: &HeaderMap, r: Resolved) -> ApiResult<Response> {
    let mut h = HeaderMap::new();
    let quoted_etag = format!("\"{}\"", r.etag);
    let mut put = |name: &'static str, value: String| {
        if let Ok(v) = HeaderValue::from_str(&value) {
            h.insert(name, v);
        }
    };
    put("etag", quoted_etag.clone());
    put("last-modified", httpdate::fmt_http_date(r.last_modified.into()));
    put("accept-ranges", "bytes".into());
    put("content-type", "application/octet-stream".into());
    if let Some(sha) = &r.repo_commit {
        put("x-repo-commit", sha.clone());
    }
    if let Some(xet) = &r.xet_hash {
        put("x-xet-hash", xet.clone());
        put("x-linked-size", r.size.to_string());
        put("x-linked-etag", quoted_etag.clone());
        put("link", format!("<{}>; rel=\"xet-auth\"", r.token_url));
    }
    let if_none_match = req_headers.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok());
    if if_none_match.is_some_and(|v| v.trim() == quoted_etag || v.trim() == r.etag) {
        return Ok((StatusCode::NOT_MODIFIED, h).into_response());
    }
    let range = req_headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .map(|s| parse_single_range(s, r.size).ok_or_else(|| range_not_satisfiable(r.size)))
        .transpose()?;
    if *method == Method::HEAD {
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(r.size));
        return Ok((StatusCode::OK, h).into_response());
    }
    let (start, end) = range.unwrap_or((0, r.size));
    let body = match (&r.blob_oid, &r.xet_hash) {
        (Some(oid), _) => {
            bytes::Bytes::from(read_blob_range(&crate::blobs::blob_path(&state.blob_dir, oid), start, end).await?)
        }
        (None, Some(xet)) => state.cas.read_file(xet, start, end).await?,
        (None, None) => return Err(ApiError::internal("file has no content")),
    };
    if range.is_some() {
        h.insert(
            header::CONTENT_RANGE,
            HeaderValue::from_str(&format!("bytes {start}-{}/{}", end.saturating_sub(1), r.size)).expect("ascii"),
        );
        return Ok((StatusCode::PARTIAL_CONTENT, h, body).into_response());
    }
    Ok((StatusCode::OK, h, body).into_response())
}

fn range_not_satisfiable(size: u64) -> ApiError {
    ApiError::new(StatusCode::RANGE_NOT_SATISFIABLE, format!("range not satisfiable for a file of {size} bytes"))
}

/// `bytes=a-b` / `bytes=a-` / `bytes=-n` → half-open `[start, end)`.
fn parse_single_range(spec: &str, size: u64) -> Option<(u64, u64)> {
    let (a, b) = spec.trim().strip_prefix("bytes=")?.split_once('-')?;
    let (start, end) = match (a.is_empty(), b.is_empty()) {
        (false, false) => (a.parse().ok()?, b.parse::<u64>().ok()?.saturating_add(1).min(size)),
        (false, true) => (a.parse().ok()?, size),
        (true, false) => (size.saturating_sub(b.parse().ok()?), size),
        (true, true) => return None,
    };
    (start < end && start < size).then_some((start, end))
}

async fn read_blob_range(path: &std::path::Path, start: u64, end: u64) -> ApiResult<Vec<u8>> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        use std::os::unix::fs::FileExt;
        let f = std::fs::File::open(&path).map_err(|e| ApiError::internal(format!("blob missing: {e}")))?;
        let mut buf = vec![0u8; (end - start) as usize];
        f.read_exact_at(&mut buf, start).map_err(|e| ApiError::internal(e.to_string()))?;
        Ok(buf)
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))?
}

#[cfg(test)]
mod tests {
    use super::parse_single_range;

    #[test]
    fn single_ranges() {
        assert_eq!(parse_single_range("bytes=0-9", 100), Some((0, 10)));
        assert_eq!(parse_single_range("bytes=95-", 100), Some((95, 100)));
        assert_eq!(parse_single_range("bytes=-5", 100), Some((95, 100)));
        assert_eq!(parse_single_range("bytes=50-500", 100), Some((50, 100)));
        assert_eq!(parse_single_range("bytes=100-", 100), None);
    }
}
