//! The HTTP surface: the router and the helpers its handlers share.
//!
//! Repo routes are parsed by hand from the raw path, one percent-decoded
//! segment at a time, because revisions arrive encoded *including* `/`
//! (`refs%2Fpr%2F1`) and a generic decoder would merge them into the path.

mod admin;
mod buckets;
mod commit;
mod repos;
mod resolve;
mod tree;

use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, delete, get, post, put};
use axum::Router;
use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use percent_encoding::percent_decode_str;

use crate::auth::{Caller, Tokens};
use crate::cas::Cas;
use crate::error::{ApiError, ApiResult};
use crate::faults::Faults;
use crate::store::Store;

/// The largest request body the CAS routes take: a whole xorb (64 MiB of chunks, headers).
const CAS_BODY_LIMIT_BYTES: usize = 80 << 20;

/// Everything a handler can reach.
pub struct AppState {
    pub store: Store,
    pub tokens: Tokens,
    pub faults: Faults,
    pub cas: Cas,
    pub blob_dir: PathBuf,
}

pub type Shared = Arc<AppState>;

pub fn router(state: Shared) -> Router {
    let faults = state.faults.clone();
    Router::new()
        .route("/_emulator/health", get(|| async { "ok" }))
        .route("/_emulator/faults", get(admin::list_faults).post(admin::add_fault).delete(admin::clear_faults))
        .route("/_emulator/faults/{id}", delete(admin::remove_fault))
        .route("/_emulator/cas-ttl", post(admin::set_cas_ttl))
        .route("/_emulator/traffic", get(admin::traffic).delete(admin::reset_traffic))
        .route("/api/whoami-v2", get(repos::whoami))
        .route("/api/repos/create", post(repos::create_repo))
        .route("/api/repos/delete", delete(repos::delete_repo))
        .route("/api/repos/move", post(repos::move_repo))
        .route("/api/models", get(repos::list))
        .route("/api/datasets", get(repos::list))
        .route("/api/spaces", get(repos::list))
        .route("/api/buckets/{ns}", get(buckets::list))
        .route("/api/buckets/{ns}/{name}", get(buckets::info).post(buckets::create).delete(buckets::delete))
        .route("/api/buckets/{ns}/{name}/settings", put(buckets::settings))
        .route("/api/buckets/{ns}/{name}/tree", get(buckets::tree_root))
        .route("/api/buckets/{ns}/{name}/tree/{*prefix}", get(buckets::tree))
        .route("/api/buckets/{ns}/{name}/paths-info", post(buckets::paths_info))
        .route("/api/buckets/{ns}/{name}/batch", post(buckets::batch))
        .route("/api/buckets/{ns}/{name}/xet-read-token", get(buckets::read_token))
        .route("/api/buckets/{ns}/{name}/xet-write-token", get(buckets::write_token))
        .route("/api/{kind}/{*rest}", any(repos::repo_api))
        .route("/cas/xorb-data/{hash}", get(xorb_data))
        // Xorbs up to 64 MiB (and their headers) come through here on `POST /v1/xorbs`.
        .route("/cas/{*rest}", any(cas_proxy).layer(axum::extract::DefaultBodyLimit::max(CAS_BODY_LIMIT_BYTES)))
        .fallback(resolve::resolve)
        .layer(axum::middleware::from_fn_with_state(faults, crate::faults::apply))
        .with_state(state)
}

/// The base URL the caller used to reach us (so handed-out URLs work from its side).
pub fn base_url(headers: &HeaderMap) -> String {
    let host = headers.get(axum::http::header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("127.0.0.1");
    format!("http://{host}")
}

pub fn rfc3339(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The path's segments after `skip` leading ones, each percent-decoded on its own.
pub fn decoded_segments(path: &str) -> ApiResult<Vec<String>> {
    path.trim_start_matches('/')
        .split('/')
        .map(|s| {
            percent_decode_str(s)
                .decode_utf8()
                .map(|c| c.into_owned())
                .map_err(|_| ApiError::bad_request("path is not valid UTF-8"))
        })
        .collect()
}

/// Page size and resume point of a paginated listing.
pub struct Page {
    pub limit: usize,
    pub cursor: Option<String>,
}

impl Page {
    pub fn from_query(q: &std::collections::HashMap<String, String>, default: usize, max: usize) -> ApiResult<Self> {
        let limit = match q.get("limit") {
            Some(l) => l.parse::<usize>().map_err(|_| ApiError::bad_request("limit must be a number"))?,
            None => default,
        };
        let cursor = match q.get("cursor") {
            Some(c) => {
                use base64::Engine;
                let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(c)
                    .map_err(|_| ApiError::bad_request("invalid cursor"))?;
                Some(String::from_utf8(raw).map_err(|_| ApiError::bad_request("invalid cursor"))?)
            }
            None => None,
        };
        Ok(Self { limit: limit.clamp(1, max), cursor })
    }
}

/// Adds `Link: <…&cursor=…>; rel="next"` to a listing when more entries follow.
pub fn with_next_link(mut resp: Response, headers: &HeaderMap, uri: &Uri, next: Option<String>) -> Response {
    use base64::Engine;
    let Some(next) = next else { return resp };
    let cursor = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(next.as_bytes());
    let mut query: Vec<&str> =
        uri.query().unwrap_or("").split('&').filter(|p| !p.is_empty() && !p.starts_with("cursor=")).collect();
    let cursor_param = format!("cursor={cursor}");
    query.push(&cursor_param);
    let url = format!("{}{}?{}", base_url(headers), uri.path(), query.join("&"));
    if let Ok(v) = HeaderValue::from_str(&format!("<{url}>; rel=\"next\"")) {
        resp.headers_mut().insert(axum::http::header::LINK, v);
    }
    resp
}

/// `{casUrl, accessToken, exp}` in the body and the same in `X-Xet-*` headers.
pub fn xet_token_response(state: &AppState, headers: &HeaderMap, write: bool) -> Response {
    let (token, exp) = state.cas.issue_token(write);
    let cas_url = format!("{}/cas", base_url(headers));
    let body = serde_json::json!({ "casUrl": cas_url, "accessToken": token, "exp": exp });
    let mut resp = axum::Json(body).into_response();
    let h = resp.headers_mut();
    for (name, value) in
        [("x-xet-cas-url", cas_url), ("x-xet-access-token", token), ("x-xet-token-expiration", exp.to_string())]
    {
        if let Ok(v) = HeaderValue::from_str(&value) {
            h.insert(name, v);
        }
    }
    resp
}

pub fn caller(state: &AppState, headers: &HeaderMap) -> Caller {
    state.tokens.caller(headers)
}

async fn cas_proxy(State(state): State<Shared>, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    state.cas.proxy(&base_url(&headers), method, &uri, &headers, body).await.into_response()
}

async fn xorb_data(
    State(state): State<Shared>,
    Path(hash): Path<String>,
    Query(q): Query<std::collections::HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let exp = q.get("exp").and_then(|e| e.parse().ok());
    state.cas.xorb_data(&hash, exp, &headers).await.into_response()
}
