//! Fault injection: rules that make a class of routes slow, failing, stalled,
//! reset or unauthorized, by probability or for the next N requests. Each
//! rule draws from its own seeded generator, so a test that sends the same
//! requests in the same order sees the same faults.

use std::sync::{Arc, Weak};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::error::ApiError;
use crate::http::{ConnControl, Server};

/// Groups of routes a fault can target.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[derive(PartialOrd, Ord)]
pub enum RouteClass {
    /// Repo and bucket info, tree listings, paths-info, resolve (HEAD and GET), whoami.
    HubMetadata,
    /// `xet-read-token` and `xet-write-token`.
    Tokens,
    /// Repo creation, preupload, commit, branches and tags, bucket create/delete.
    HubWrite,
    /// `POST /api/buckets/{id}/batch`.
    BucketBatch,
    /// CAS `/v1|v2/reconstructions`.
    CasReconstruction,
    /// Xorb byte ranges (the presigned URLs of reconstructions).
    CasData,
    /// Every other CAS route: xorb and shard uploads, dedup queries, file HEAD.
    CasUpload,
}

impl RouteClass {
    /// The class of a request, or `None` for routes that never fault (the admin API).
    pub fn of(method: &Method, path: &str) -> Option<Self> {
        if path.starts_with("/_emulator") {
            return None;
        }
        if let Some(cas) = path.strip_prefix("/cas/") {
            return Some(if cas.starts_with("xorb-data/") {
                RouteClass::CasData
            } else if cas.starts_with("v1/reconstructions") || cas.starts_with("v2/reconstructions") {
                RouteClass::CasReconstruction
            } else {
                RouteClass::CasUpload
            });
        }
        if path.contains("/xet-read-token") || path.contains("/xet-write-token") {
            return Some(RouteClass::Tokens);
        }
        if path.starts_with("/api/buckets/") && path.ends_with("/batch") {
            return Some(RouteClass::BucketBatch);
        }
        let write_route = path.starts_with("/api/repos/")
            || path.contains("/preupload/")
            || path.contains("/commit/")
            || path.contains("/branch/")
            || path.contains("/tag/")
            || (path.starts_with("/api/buckets/")
                && matches!(*method, Method::POST | Method::DELETE)
                && !path.ends_with("/paths-info"));
        Some(if write_route { RouteClass::HubWrite } else { RouteClass::HubMetadata })
    }
}

/// What a fault does to a request it hits.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FaultKind {
    /// Delay the request, then serve it.
    Latency { ms: u64 },
    /// Serve the response body no faster than this (per response), as over a slow link.
    Throttle { bytes_per_sec: u64 },
    /// Answer with this status (5xx, 4xx) and a JSON error.
    Error { status: u16 },
    /// Answer 429 with an IETF `RateLimit` header asking to wait `reset_secs`.
    RateLimit { reset_secs: u64 },
    /// Never answer (the connection stays open).
    Stall,
    /// Drop the connection with a TCP reset, no answer.
    Reset,
    /// Answer 401 as for an expired token.
    ExpiredToken,
    /// Serve the real answer with its body cut after this many bytes (the connection is
    /// dropped there, the advertised length unchanged).
    Truncate { keep_bytes: u64 },
    /// Serve the real answer with one byte of its body changed (same size).
    Corrupt,
    /// Answer with this status, body and headers instead (malformed JSON, wrong sizes,
    /// hostile paths, a `Link` header that loops).
    Replace {
        status: u16,
        body: String,
        #[serde(default)]
        headers: Vec<(String, String)>,
    },
    /// Restart the whole emulator, as its process would be: every connection dropped (this
    /// request is never answered, uploads in flight are lost), connections refused for
    /// `down_ms`, then served again on the same address with everything stored kept.
    Restart { down_ms: u64 },
}

/// A fault rule as set through the API.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FaultSpec {
    pub class: RouteClass,
    #[serde(flatten)]
    pub kind: FaultKind,
    /// Chance that a matching request is hit (default 1).
    #[serde(default)]
    pub probability: Option<f64>,
    /// Hit only the next N matching requests (default: no limit).
    #[serde(default)]
    pub times: Option<u64>,
    /// Seed of this rule's generator (default 0).
    #[serde(default)]
    pub seed: Option<u64>,
    /// Only requests whose path contains this string.
    #[serde(default)]
    pub path_contains: Option<String>,
}

impl FaultSpec {
    pub fn new(class: RouteClass, kind: FaultKind) -> Self {
        Self { class, kind, probability: None, times: None, seed: None, path_contains: None }
    }

    pub fn times(mut self, n: u64) -> Self {
        self.times = Some(n);
        self
    }

    pub fn probability(mut self, p: f64, seed: u64) -> Self {
        self.probability = Some(p);
        self.seed = Some(seed);
        self
    }

    pub fn path_contains(mut self, s: impl Into<String>) -> Self {
        self.path_contains = Some(s.into());
        self
    }
}

/// A rule as listed: its spec, how many hits are left, how many it made.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FaultRule {
    pub id: u64,
    #[serde(flatten)]
    pub spec: FaultSpec,
    pub remaining: Option<u64>,
    pub hits: u64,
    #[serde(skip)]
    rng: u64,
}

#[derive(Default)]
struct Table {
    next_id: u64,
    rules: Vec<FaultRule>,
}

/// Requests seen per route class, and the bytes of their bodies (uploads): what a test or a
/// benchmark reads to show how much a client sent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Traffic {
    pub requests: u64,
    pub body_bytes: u64,
}

/// The live fault table, shared by the middleware and the APIs that set it, and the traffic
/// counters the same middleware keeps.
#[derive(Clone, Default)]
pub struct Faults {
    table: Arc<Mutex<Table>>,
    traffic: Arc<Mutex<std::collections::BTreeMap<RouteClass, Traffic>>>,
    /// The server a `Restart` fault restarts (weak: the server holds these faults).
    server: Arc<Mutex<Weak<Server>>>,
}

impl Faults {
    /// The server `Restart` faults restart.
    pub fn serve_on(&self, server: &Arc<Server>) {
        *self.server.lock() = Arc::downgrade(server);
    }

    /// Counts one request of `class` with a body of `body_bytes`.
    pub fn count(&self, class: RouteClass, body_bytes: u64) {
        let mut t = self.traffic.lock();
        let e = t.entry(class).or_default();
        e.requests += 1;
        e.body_bytes += body_bytes;
    }

    /// Requests and body bytes per route class since the start (or the last reset).
    pub fn traffic(&self) -> std::collections::BTreeMap<RouteClass, Traffic> {
        self.traffic.lock().clone()
    }

    pub fn traffic_of(&self, class: RouteClass) -> Traffic {
        self.traffic.lock().get(&class).copied().unwrap_or_default()
    }

    pub fn reset_traffic(&self) {
        self.traffic.lock().clear();
    }

    pub fn add(&self, spec: FaultSpec) -> Result<u64, ApiError> {
        if let Some(p) = spec.probability {
            if !(0.0..=1.0).contains(&p) {
                return Err(ApiError::bad_request("probability must be between 0 and 1"));
            }
        }
        if let FaultKind::Error { status } = spec.kind {
            if StatusCode::from_u16(status).is_err() || status < 400 {
                return Err(ApiError::bad_request("error status must be 4xx or 5xx"));
            }
        }
        let mut t = self.table.lock();
        t.next_id += 1;
        let id = t.next_id;
        let rng = spec.seed.unwrap_or(0) ^ 0x9e37_79b9_7f4a_7c15;
        t.rules.push(FaultRule { id, remaining: spec.times, hits: 0, rng, spec });
        Ok(id)
    }

    pub fn list(&self) -> Vec<FaultRule> {
        self.table.lock().rules.clone()
    }

    pub fn remove(&self, id: u64) -> bool {
        let mut t = self.table.lock();
        let before = t.rules.len();
        t.rules.retain(|r| r.id != id);
        t.rules.len() != before
    }

    pub fn clear(&self) {
        self.table.lock().rules.clear();
    }

    /// The fault (if any) that hits this request; the first matching rule that fires wins.
    pub fn draw(&self, class: RouteClass, path: &str) -> Option<FaultKind> {
        let mut t = self.table.lock();
        for rule in t.rules.iter_mut() {
            let spec = &rule.spec;
            if spec.class != class || rule.remaining == Some(0) {
                continue;
            }
            if spec.path_contains.as_deref().is_some_and(|s| !path.contains(s)) {
                continue;
            }
            if let Some(p) = spec.probability {
                if unit_f64(&mut rule.rng) >= p {
                    continue;
                }
            }
            if let Some(n) = rule.remaining.as_mut() {
                *n -= 1;
            }
            rule.hits += 1;
            return Some(rule.spec.kind.clone());
        }
        None
    }
}

/// splitmix64: a tiny, well-mixed generator; enough for reproducible coin flips.
fn unit_f64(state: &mut u64) -> f64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

/// Middleware: applies the fault that hits the request, if any.
pub async fn apply(State(faults): State<Faults>, req: Request, next: Next) -> Response {
    let Some(class) = RouteClass::of(req.method(), req.uri().path()) else {
        return next.run(req).await;
    };
    let body_bytes = req
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    faults.count(class, body_bytes);
    let Some(kind) = faults.draw(class, req.uri().path()) else {
        return next.run(req).await;
    };
    tracing::debug!(?class, ?kind, path = req.uri().path(), "injecting fault");
    match kind {
        FaultKind::Latency { ms } => {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            next.run(req).await
        }
        FaultKind::Throttle { bytes_per_sec } => throttle(next.run(req).await, bytes_per_sec),
        FaultKind::Error { status } => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            ApiError::new(status, format!("injected fault: {status}")).into_response()
        }
        FaultKind::RateLimit { reset_secs } => {
            let mut resp = ApiError::new(StatusCode::TOO_MANY_REQUESTS, "injected fault: rate limited").into_response();
            let h = resp.headers_mut();
            if let Ok(v) = HeaderValue::from_str(&format!("\"api\";r=0;t={reset_secs}")) {
                h.insert("ratelimit", v);
            }
            h.insert("ratelimit-policy", HeaderValue::from_static("\"fixed window\";\"api\";q=1000;w=300"));
            resp
        }
        FaultKind::Stall => std::future::pending().await,
        FaultKind::Reset => {
            if let Some(ctl) = req.extensions().get::<ConnControl>() {
                ctl.reset();
            }
            std::future::pending().await
        }
        FaultKind::Restart { down_ms } => {
            match faults.server.lock().upgrade() {
                Some(server) => {
                    tokio::spawn(async move { server.restart(Duration::from_millis(down_ms)).await });
                }
                None => {
                    return ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "no server to restart").into_response()
                }
            }
            // The restart drops this connection with the others.
            std::future::pending().await
        }
        FaultKind::ExpiredToken => ApiError::unauthorized("Token has expired").into_response(),
        FaultKind::Truncate { keep_bytes } => truncate(next.run(req).await, keep_bytes),
        FaultKind::Corrupt => corrupt(next.run(req).await).await,
        FaultKind::Replace { status, body, headers } => {
            let mut resp = Response::new(axum::body::Body::from(body));
            *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
            let h = resp.headers_mut();
            h.insert(axum::http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            for (k, v) in headers {
                if let (Ok(k), Ok(v)) = (axum::http::HeaderName::from_bytes(k.as_bytes()), HeaderValue::from_str(&v)) {
                    h.insert(k, v);
                }
            }
            resp
        }
    }
}

/// The response with its body cut after `keep` bytes, then an error (hyper drops the
/// connection short of the advertised length).
fn truncate(resp: Response, keep: u64) -> Response {
    use futures::StreamExt;
    let (parts, body) = resp.into_parts();
    let cut =
        futures::stream::unfold((body.into_data_stream(), 0u64, false), move |(mut body, sent, done)| async move {
            if done {
                return None;
            }
            match body.next().await {
                Some(Ok(mut b)) if sent + b.len() as u64 >= keep => {
                    b.truncate((keep - sent) as usize);
                    let cut: Result<bytes::Bytes, std::io::Error> = Ok(b);
                    Some((cut, (body, keep, true)))
                }
                Some(Ok(b)) => {
                    let n = b.len() as u64;
                    Some((Ok(b), (body, sent + n, false)))
                }
                _ => None,
            }
        })
        .chain(futures::stream::once(async {
            Err::<bytes::Bytes, _>(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "injected: body cut short"))
        }));
    Response::from_parts(parts, axum::body::Body::from_stream(cut))
}

/// The response with the middle byte of its body flipped.
async fn corrupt(resp: Response) -> Response {
    let (parts, body) = resp.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, usize::MAX).await else {
        return ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "injected fault: body unreadable").into_response();
    };
    let mut v = bytes.to_vec();
    if let Some(b) = v.get_mut(bytes.len() / 2) {
        *b ^= 0x5a;
    }
    Response::from_parts(parts, axum::body::Body::from(v))
}

/// Paces a response body to `bytes_per_sec`, in pieces of at most 64 KiB.
fn throttle(resp: Response, bytes_per_sec: u64) -> Response {
    use futures::StreamExt;
    const PIECE: usize = 64 << 10;
    let (parts, body) = resp.into_parts();
    let rate = bytes_per_sec.max(1) as f64;
    let start = tokio::time::Instant::now();
    let paced = futures::stream::unfold(
        (body.into_data_stream(), bytes::Bytes::new(), 0u64),
        move |(mut body, mut pending, mut sent)| async move {
            while pending.is_empty() {
                match body.next().await? {
                    Ok(b) => pending = b,
                    Err(e) => return Some((Err(e), (body, pending, sent))),
                }
            }
            let piece = pending.split_to(pending.len().min(PIECE));
            sent += piece.len() as u64;
            tokio::time::sleep_until(start + Duration::from_secs_f64(sent as f64 / rate)).await;
            Some((Ok(piece), (body, pending, sent)))
        },
    );
    Response::from_parts(parts, axum::body::Body::from_stream(paced))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_of_routes() {
        let get = Method::GET;
        assert_eq!(RouteClass::of(&get, "/api/models/a/b"), Some(RouteClass::HubMetadata));
        assert_eq!(RouteClass::of(&get, "/api/models/a/b/xet-read-token/main"), Some(RouteClass::Tokens));
        assert_eq!(RouteClass::of(&Method::POST, "/api/models/a/b/commit/main"), Some(RouteClass::HubWrite));
        assert_eq!(RouteClass::of(&Method::POST, "/api/buckets/a/b/batch"), Some(RouteClass::BucketBatch));
        assert_eq!(RouteClass::of(&Method::POST, "/api/buckets/a/b/paths-info"), Some(RouteClass::HubMetadata));
        assert_eq!(RouteClass::of(&get, "/cas/v2/reconstructions/abc"), Some(RouteClass::CasReconstruction));
        assert_eq!(RouteClass::of(&get, "/cas/xorb-data/abc"), Some(RouteClass::CasData));
        assert_eq!(RouteClass::of(&Method::POST, "/cas/v1/xorbs/default/abc"), Some(RouteClass::CasUpload));
        assert_eq!(RouteClass::of(&get, "/_emulator/faults"), None);
    }

    #[test]
    fn times_and_probability_are_reproducible() {
        let f = Faults::default();
        f.add(FaultSpec::new(RouteClass::CasData, FaultKind::Stall).times(2)).unwrap();
        assert!(f.draw(RouteClass::CasData, "/x").is_some());
        assert!(f.draw(RouteClass::HubMetadata, "/x").is_none());
        assert!(f.draw(RouteClass::CasData, "/x").is_some());
        assert!(f.draw(RouteClass::CasData, "/x").is_none());

        let pattern = |seed| {
            let f = Faults::default();
            f.add(FaultSpec::new(RouteClass::Tokens, FaultKind::Error { status: 503 }).probability(0.5, seed)).unwrap();
            (0..64).map(|_| f.draw(RouteClass::Tokens, "/t").is_some()).collect::<Vec<_>>()
        };
        assert_eq!(pattern(7), pattern(7));
        assert_ne!(pattern(7), pattern(8));
        let hits = pattern(7).iter().filter(|h| **h).count();
        assert!((16..=48).contains(&hits), "{hits} hits of 64 at p=0.5");
    }

    #[test]
    fn bad_specs_are_rejected() {
        let f = Faults::default();
        assert!(f.add(FaultSpec::new(RouteClass::CasData, FaultKind::Stall).probability(1.5, 0)).is_err());
        assert!(f.add(FaultSpec::new(RouteClass::CasData, FaultKind::Error { status: 200 })).is_err());
    }
}
