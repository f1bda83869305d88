//! `/api/buckets/{ns}/{name}/…`: S3-like object storage on Xet.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use chrono::{TimeZone, Utc};
use serde::Deserialize;
use serde_json::{json, Value};

use super::repos::parse_body;
use super::tree::{list_level, Entry};
use super::{base_url, caller, rfc3339, with_next_link, xet_token_response, Page, Shared};
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::model::{Bucket, BucketFile};
use crate::store::{BatchOp, State as StoreState};

fn visible<'a>(st: &'a StoreState, id: &str, who: &Caller) -> ApiResult<&'a Bucket> {
    let b = st.buckets.get(id);
    let ns = id.split('/').next();
    who.check_read(ns, b.is_some_and(|b| b.private), ApiError::bucket_not_found())?;
    b.ok_or_else(ApiError::bucket_not_found)
}

fn check_write(state: &Shared, id: &str, who: &Caller) -> ApiResult<()> {
    state.store.read(|st| {
        let b = visible(st, id, who)?;
        who.check_write(id.split('/').next(), b.private, ApiError::bucket_not_found())
    })
}

fn bucket_id(ns: &str, name: &str, who: &Caller) -> ApiResult<String> {
    let ns = if ns == "me" { who.name().ok_or_else(|| ApiError::unauthorized("authentication required"))? } else { ns };
    let id = format!("{ns}/{name}");
    crate::model::validate_repo_id(&id).map_err(ApiError::bad_request)?;
    Ok(id)
}

fn file_entry(path: &str, f: &BucketFile) -> Value {
    json!({
        "type": "file", "path": path, "size": f.size, "xetHash": &f.xet_hash,
        "mtime": rfc3339(&f.mtime), "uploadedAt": rfc3339(&f.uploaded_at),
    })
}

/// `GET /api/buckets/{ns}` (`me`: the caller's): the buckets the caller may see, `search`
/// filtering by name, paginated behind `Link`.
pub async fn list(
    State(state): State<Shared>,
    Path(ns): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let who = caller(&state, &headers);
    let result = (|| -> ApiResult<Response> {
        let ns =
            if ns == "me" { who.name().ok_or_else(|| ApiError::unauthorized("authentication required"))? } else { &ns };
        let page = Page::from_query(&q, 100, 1000)?;
        let prefix = format!("{ns}/");
        state.store.read(|st| {
            let rows: Vec<&Bucket> = st
                .buckets
                .range(prefix.clone()..)
                .take_while(|(id, _)| id.starts_with(&prefix))
                .map(|(_, b)| b)
                .filter(|b| who.check_read(Some(ns), b.private, ApiError::bucket_not_found()).is_ok())
                .filter(|b| q.get("search").is_none_or(|s| b.id[prefix.len()..].contains(s.as_str())))
                .filter(|b| page.cursor.as_ref().is_none_or(|c| b.id.as_str() > c.as_str()))
                .collect();
            let items: Vec<Value> = rows.iter().take(page.limit).map(|b| summary(b)).collect();
            let next = (rows.len() > page.limit).then(|| rows[page.limit - 1].id.clone());
            Ok(with_next_link(Json(items).into_response(), &headers, &uri, next))
        })
    })();
    result.unwrap_or_else(IntoResponse::into_response)
}

/// What the Hub says of a bucket (its info, and an entry of a listing).
fn summary(b: &Bucket) -> Value {
    json!({
        "id": &b.id, "private": b.private, "createdAt": rfc3339(&b.created_at), "updatedAt": rfc3339(&b.updated_at),
        "size": b.files.values().map(|f| f.size).sum::<u64>(), "totalFiles": b.files.len(),
    })
}

#[derive(Deserialize)]
struct BucketSettings {
    private: bool,
}

/// `PUT /api/buckets/{ns}/{name}/settings`: visibility.
pub async fn settings(
    State(state): State<Shared>,
    Path((ns, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let who = caller(&state, &headers);
    let result = (|| -> ApiResult<Response> {
        let id = bucket_id(&ns, &name, &who)?;
        let s: BucketSettings = parse_body(&body)?;
        check_write(&state, &id, &who)?;
        state.store.mutate(|st| {
            st.buckets.get_mut(&id).ok_or_else(ApiError::bucket_not_found)?.private = s.private;
            Ok(())
        })?;
        Ok(Json(json!({})).into_response())
    })();
    result.unwrap_or_else(IntoResponse::into_response)
}

pub async fn info(
    State(state): State<Shared>,
    Path((ns, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let who = caller(&state, &headers);
    let result = bucket_id(&ns, &name, &who).and_then(|id| {
        state.store.read(|st| {
            let b = visible(st, &id, &who)?;
            Ok(Json(summary(b)).into_response())
        })
    });
    result.unwrap_or_else(IntoResponse::into_response)
}

pub async fn create(
    State(state): State<Shared>,
    Path((ns, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    #[derive(Deserialize)]
    struct Req {
        private: Option<bool>,
        visibility: Option<String>,
    }
    let who = caller(&state, &headers);
    let result = (|| {
        let id = bucket_id(&ns, &name, &who)?;
        let req: Req = parse_body(&body)?;
        let private = req.private.unwrap_or(false) || req.visibility.as_deref() == Some("private");
        who.check_write(id.split('/').next(), private, ApiError::bucket_not_found())?;
        state.store.create_bucket(&id, private)?;
        let url = format!("{}/buckets/{id}", base_url(&headers));
        Ok::<_, ApiError>(Json(json!({ "url": url, "id": id, "name": name })).into_response())
    })();
    result.unwrap_or_else(IntoResponse::into_response)
}

pub async fn delete(
    State(state): State<Shared>,
    Path((ns, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let who = caller(&state, &headers);
    let result = bucket_id(&ns, &name, &who).and_then(|id| {
        check_write(&state, &id, &who)?;
        state.store.delete_bucket(&id)?;
        Ok(Json(json!({})).into_response())
    });
    result.unwrap_or_else(IntoResponse::into_response)
}

pub async fn tree_root(
    state: State<Shared>,
    Path((ns, name)): Path<(String, String)>,
    headers: HeaderMap,
    uri: Uri,
    q: Query<HashMap<String, String>>,
) -> Response {
    tree(state, Path((ns, name, String::new())), headers, uri, q).await
}

/// Lists keys by raw string prefix, as the Hub does: `a/1.manifest` also
/// matches `a/1.manifest#1`. Clients keep only strict descendants.
pub async fn tree(
    State(state): State<Shared>,
    Path((ns, name, prefix)): Path<(String, String, String)>,
    headers: HeaderMap,
    uri: Uri,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let who = caller(&state, &headers);
    let result = (|| {
        let id = bucket_id(&ns, &name, &who)?;
        let recursive = q.get("recursive").is_some_and(|v| v == "true" || v == "1");
        let page = Page::from_query(&q, 1000, 10_000)?;
        state.store.read(|st| {
            let b = visible(st, &id, &who)?;
            let (entries, next) = if recursive {
                let start = match page.cursor.as_deref() {
                    Some(c) => std::ops::Bound::Excluded(c.to_string()),
                    None => std::ops::Bound::Included(prefix.clone()),
                };
                let mut files: Vec<_> = b
                    .files
                    .range((start, std::ops::Bound::Unbounded))
                    .take_while(|(k, _)| k.starts_with(&prefix))
                    .take(page.limit + 1)
                    .map(|(k, f)| Entry::File(k.as_str(), f))
                    .collect();
                let more = files.len() > page.limit;
                files.truncate(page.limit);
                let next = more.then(|| files.last().map(|e| e.path().to_string())).flatten();
                (files, next)
            } else {
                list_level(&b.files, &prefix, page.cursor.as_deref(), page.limit)
            };
            let out: Vec<Value> = entries
                .iter()
                .map(|e| match e {
                    Entry::File(p, f) => file_entry(p, f),
                    Entry::Dir(p) => json!({ "type": "directory", "path": p, "uploadedAt": rfc3339(&b.updated_at) }),
                })
                .collect();
            Ok::<_, ApiError>(with_next_link(Json(out).into_response(), &headers, &uri, next))
        })
    })();
    result.unwrap_or_else(IntoResponse::into_response)
}

pub async fn paths_info(
    State(state): State<Shared>,
    Path((ns, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    #[derive(Deserialize)]
    struct Req {
        paths: Vec<String>,
    }
    let who = caller(&state, &headers);
    let result = (|| {
        let id = bucket_id(&ns, &name, &who)?;
        let req: Req = parse_body(&body)?;
        state.store.read(|st| {
            let b = visible(st, &id, &who)?;
            let out: Vec<Value> = req.paths.iter().filter_map(|p| b.files.get(p).map(|f| file_entry(p, f))).collect();
            Ok::<_, ApiError>(Json(out).into_response())
        })
    })();
    result.unwrap_or_else(IntoResponse::into_response)
}

#[derive(Deserialize)]
#[serde(tag = "type")]
enum BatchLine {
    #[serde(rename = "addFile")]
    Add {
        path: String,
        #[serde(rename = "xetHash")]
        xet_hash: String,
        #[serde(default)]
        mtime: Option<i64>,
    },
    #[serde(rename = "copyFile")]
    Copy {
        path: String,
        #[serde(rename = "xetHash")]
        xet_hash: String,
        #[serde(default)]
        mtime: Option<i64>,
    },
    #[serde(rename = "deleteFile")]
    Delete { path: String },
}

/// Applies an NDJSON batch atomically. Every add must come before every delete,
/// and every Xet hash must be in the CAS; otherwise nothing changes.
pub async fn batch(
    State(state): State<Shared>,
    Path((ns, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let who = caller(&state, &headers);
    let result = async {
        let id = bucket_id(&ns, &name, &who)?;
        check_write(&state, &id, &who)?;
        let text = std::str::from_utf8(&body).map_err(|_| ApiError::bad_request("batch body is not UTF-8"))?;
        let mut ops = Vec::new();
        let mut seen_delete = false;
        for (n, raw) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            let line: BatchLine = serde_json::from_str(raw)
                .map_err(|e| ApiError::bad_request(format!("invalid NDJSON at line {}: {e}", n + 1)))?;
            match line {
                BatchLine::Add { path, xet_hash, mtime } | BatchLine::Copy { path, xet_hash, mtime } => {
                    if seen_delete {
                        return Err(ApiError::bad_request(format!(
                            "line {}: all additions must come before deletions",
                            n + 1
                        )));
                    }
                    let size = state.cas.file_size(&xet_hash).await?;
                    let mtime = mtime.and_then(|ms| Utc.timestamp_millis_opt(ms).single()).unwrap_or_else(Utc::now);
                    ops.push(BatchOp::Add { path, xet_hash, size, mtime });
                }
                BatchLine::Delete { path } => {
                    seen_delete = true;
                    ops.push(BatchOp::Delete { path });
                }
            }
        }
        state.store.bucket_batch(&id, ops)?;
        Ok(Json(json!({ "failed": [] })).into_response())
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

pub async fn read_token(
    State(state): State<Shared>,
    Path((ns, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    token(&state, &ns, &name, &headers, false)
}

pub async fn write_token(
    State(state): State<Shared>,
    Path((ns, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    token(&state, &ns, &name, &headers, true)
}

fn token(state: &Shared, ns: &str, name: &str, headers: &HeaderMap, write: bool) -> Response {
    let who = caller(state, headers);
    let result = bucket_id(ns, name, &who).and_then(|id| {
        if write {
            check_write(state, &id, &who)
        } else {
            state.store.read(|st| visible(st, &id, &who).map(|_| ()))
        }
    });
    match result {
        Ok(()) => xet_token_response(state, headers, write),
        Err(e) => e.into_response(),
    }
}
