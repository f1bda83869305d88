//! `/api/{models|datasets|spaces}/{repo_id}/…`, repo creation, whoami.

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, Method, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{json, Value};

use super::tree::{list_level, list_recursive, Entry};
use super::{base_url, caller, decoded_segments, rfc3339, with_next_link, xet_token_response, Page, Shared};
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::model::{lfs_pointer, Repo, RepoFile, RepoKind, RepoRef, Storage};
use crate::store::{validate_revision, State as StoreState, Store};

/// Words that follow a repo id in API paths; they tell a legacy one-segment id apart.
const ACTIONS: &[&str] = &[
    "revision",
    "tree",
    "paths-info",
    "xet-read-token",
    "xet-write-token",
    "preupload",
    "commit",
    "branch",
    "tag",
    "refs",
    "commits",
    "settings",
];

/// Repos a listing page holds at most (the Hub's own cap).
const LIST_MAX: usize = 1000;
const LIST_DEFAULT: usize = 100;

/// A parsed `/api/{kind}/{id}/{action}/{args…}` path.
pub struct RepoPath {
    pub repo: RepoRef,
    pub action: Option<String>,
    pub args: Vec<String>,
}

impl RepoPath {
    fn parse(kind: RepoKind, segs: &[String]) -> ApiResult<Self> {
        let id_len = if segs.len() >= 2 && !ACTIONS.contains(&segs[1].as_str()) { 2 } else { 1 };
        if segs.len() < id_len || segs[0].is_empty() {
            return Err(ApiError::repo_not_found());
        }
        let id = segs[..id_len].join("/");
        crate::model::validate_repo_id(&id).map_err(ApiError::bad_request)?;
        let rest = &segs[id_len..];
        Ok(Self {
            repo: RepoRef::new(kind, id),
            action: rest.first().cloned(),
            args: rest.iter().skip(1).cloned().collect(),
        })
    }

    /// The revision argument; accepts both `refs%2Fpr%2F1` and a literal `refs/pr/1`.
    /// Returns it with the remaining arguments.
    fn revision_and_rest(&self) -> ApiResult<(String, Vec<String>)> {
        let args = &self.args;
        let first = args.first().ok_or_else(|| ApiError::bad_request("revision missing"))?;
        let take = if first == "refs" && args.len() >= 3 { 3 } else { 1 };
        let rev = args[..take].join("/");
        validate_revision(&rev)?;
        Ok((rev, args[take..].to_vec()))
    }
}

/// Finds a repo the caller may read, following aliases.
pub fn visible_repo<'a>(st: &'a StoreState, repo: &RepoRef, who: &Caller) -> ApiResult<&'a Repo> {
    let key = Store::canonical_key(st, repo);
    let r = st.repos.get(&key);
    let (ns, private) = match r {
        Some(r) => (r.reference().namespace().map(str::to_owned), r.private),
        None => (repo.namespace().map(str::to_owned), false),
    };
    who.check_read(ns.as_deref(), private, ApiError::repo_not_found())?;
    r.ok_or_else(ApiError::repo_not_found)
}

/// Checks that the caller may write to a repo (which must exist).
pub fn check_repo_write(state: &Shared, repo: &RepoRef, who: &Caller) -> ApiResult<RepoRef> {
    state.store.read(|st| {
        let r = visible_repo(st, repo, who)?;
        let canonical = r.reference();
        who.check_write(canonical.namespace(), r.private, ApiError::repo_not_found())?;
        Ok(canonical)
    })
}

pub async fn repo_api(
    State(state): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    let result = async {
        let segs = decoded_segments(uri.path())?;
        // segs: ["api", kind, …]
        let kind = RepoKind::from_api_plural(segs.get(1).map(String::as_str).unwrap_or(""))
            .ok_or_else(|| ApiError::not_found("Not found"))?;
        let path = RepoPath::parse(kind, &segs[2..])?;
        let who = caller(&state, &headers);
        match (method.clone(), path.action.as_deref()) {
            (Method::GET, None) => info(&state, &headers, &uri, &path, "main", &who, &q),
            (Method::GET, Some("revision")) => {
                let (rev, _) = path.revision_and_rest()?;
                info(&state, &headers, &uri, &path, &rev, &who, &q)
            }
            (Method::GET, Some("tree")) => tree(&state, &headers, &uri, &path, &who, &q),
            (Method::POST, Some("paths-info")) => paths_info(&state, &path, &who, &body),
            (Method::GET, Some(t @ ("xet-read-token" | "xet-write-token"))) => {
                let write = t == "xet-write-token";
                let (rev, _) = path.revision_and_rest()?;
                state.store.read(|st| -> ApiResult<()> {
                    let r = visible_repo(st, &path.repo, &who)?;
                    if write {
                        who.check_write(r.reference().namespace(), r.private, ApiError::repo_not_found())?;
                    }
                    r.resolve(&rev).map(|_| ()).ok_or_else(|| ApiError::revision_not_found(&rev))
                })?;
                Ok(xet_token_response(&state, &headers, write))
            }
            (Method::POST, Some("preupload")) => super::commit::preupload(&state, &path.repo, &who, &body),
            (Method::POST, Some("commit")) => {
                let (rev, _) = path.revision_and_rest()?;
                super::commit::commit(&state, &headers, &path.repo, &rev, &who, &q, &body).await
            }
            (Method::POST | Method::DELETE, Some("branch")) => branch(&state, &method, &path, &who, &body),
            (Method::POST | Method::DELETE, Some("tag")) => tag(&state, &method, &path, &who, &body),
            (Method::GET, Some("refs")) => refs(&state, &path, &who),
            (Method::GET, Some("commits")) => commits(&state, &headers, &uri, &path, &who, &q),
            (Method::PUT, Some("settings")) => settings(&state, &path, &who, &body),
            _ => Err(ApiError::not_found(format!("the Hub emulator does not serve {method} {}", uri.path()))),
        }
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

/// Repo info; `expand=F` / `expand[]=F` (repeatable) limit the answer to those fields, as on the Hub.
fn info(
    state: &Shared,
    headers: &HeaderMap,
    uri: &Uri,
    path: &RepoPath,
    rev: &str,
    who: &Caller,
    q: &HashMap<String, String>,
) -> ApiResult<Response> {
    let expand: Vec<String> = uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .filter(|(k, _)| *k == "expand" || *k == "expand[]" || *k == "expand%5B%5D")
        .map(|(_, v)| v.to_string())
        .collect();
    state.store.read(|st| {
        let r = visible_repo(st, &path.repo, who)?;
        let commit = r.commit(rev).ok_or_else(|| ApiError::revision_not_found(rev))?;
        let blobs = q.get("blobs").is_some_and(|v| v == "true" || v == "1");
        let wants_siblings = expand.is_empty() || expand.iter().any(|e| e == "siblings");
        let siblings: Vec<Value> = if wants_siblings {
            commit
                .files
                .iter()
                .map(|(p, f)| if blobs { sibling_with_blob(p, f) } else { json!({ "rfilename": p }) })
                .collect()
        } else {
            Vec::new()
        };
        let mut doc = summary(r, &commit.sha, &commit.date, headers);
        doc["siblings"] = json!(siblings);
        if !expand.is_empty() {
            if let Some(map) = doc.as_object_mut() {
                map.retain(|k, _| k == "_id" || k == "id" || expand.iter().any(|e| e == k));
            }
        }
        Ok(Json(doc).into_response())
    })
}

/// What the Hub says of a repo in its info and in listings (no files).
fn summary(r: &Repo, sha: &str, date: &chrono::DateTime<chrono::Utc>, headers: &HeaderMap) -> Value {
    let mut doc = json!({
        "_id": &r.id,
        "id": &r.id,
        "author": r.reference().namespace(),
        "sha": sha,
        "lastModified": rfc3339(date),
        "createdAt": rfc3339(&r.created_at),
        "private": r.private,
        "gated": false,
        "disabled": false,
        "downloads": 0,
        "likes": 0,
        "tags": [],
        "url": format!("{}/{}", base_url(headers), r.reference()),
    });
    match r.kind {
        RepoKind::Model => doc["modelId"] = json!(&r.id),
        RepoKind::Space => doc["sdk"] = json!("static"),
        RepoKind::Dataset => {}
    }
    doc
}

/// `GET /api/{models|datasets|spaces}`: the repos of a kind the caller may see, filtered by
/// `author` and `search` (a substring of the id), ordered by `sort` (`id`, `createdAt`,
/// `lastModified`; `direction=-1` reverses), `limit` per page, the rest behind `Link`.
pub async fn list(
    State(state): State<Shared>,
    uri: Uri,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let result = (|| -> ApiResult<Response> {
        let plural = uri.path().trim_start_matches("/api/");
        let kind = RepoKind::from_api_plural(plural).ok_or_else(|| ApiError::not_found("Not found"))?;
        let page = Page::from_query(&q, LIST_DEFAULT, LIST_MAX)?;
        let who = caller(&state, &headers);
        let sort = q.get("sort").map(String::as_str).unwrap_or("id");
        if !matches!(sort, "id" | "createdAt" | "lastModified" | "downloads" | "likes" | "trendingScore") {
            return Err(ApiError::bad_request(format!("invalid sort {sort:?}")));
        }
        let descending = q.get("direction").is_some_and(|d| d == "-1");
        state.store.read(|st| {
            let mut rows: Vec<(String, Value)> = st
                .repos
                .values()
                .filter(|r| r.kind == kind)
                .filter(|r| who.check_read(r.reference().namespace(), r.private, ApiError::repo_not_found()).is_ok())
                .filter(|r| q.get("author").is_none_or(|a| r.reference().namespace() == Some(a.as_str())))
                .filter(|r| q.get("search").is_none_or(|s| r.id.to_lowercase().contains(&s.to_lowercase())))
                .filter_map(|r| {
                    let sha = r.resolve("main").or_else(|| r.branches.values().next().map(String::as_str))?;
                    let c = r.commits.get(sha)?;
                    let key = match sort {
                        "createdAt" => rfc3339(&r.created_at),
                        "lastModified" => rfc3339(&c.date),
                        _ => String::new(),
                    };
                    Some((format!("{key}\u{0}{}", r.id), summary(r, sha, &c.date, &headers)))
                })
                .collect();
            rows.sort_by(|a, b| a.0.cmp(&b.0));
            if descending {
                rows.reverse();
            }
            let start = match &page.cursor {
                Some(c) => rows.iter().position(|(k, _)| k == c).map_or(rows.len(), |i| i + 1),
                None => 0,
            };
            let items: Vec<&(String, Value)> = rows[start..].iter().take(page.limit).collect();
            let more = start + items.len() < rows.len() && !q.contains_key("limit");
            let next = more.then(|| items.last().map(|(k, _)| k.clone())).flatten();
            let body: Vec<Value> = items.iter().map(|(_, v)| v.clone()).collect();
            Ok(with_next_link(Json(body).into_response(), &headers, &uri, next))
        })
    })();
    result.unwrap_or_else(IntoResponse::into_response)
}

#[derive(Deserialize)]
struct Settings {
    /// `public`, `private`, or `protected` (spaces).
    visibility: Option<String>,
    /// The older form of `visibility`.
    private: Option<bool>,
    gated: Option<Value>,
}

/// `PUT /api/{kind}/{id}/settings`: visibility (`gated` is checked and accepted, not kept:
/// the emulator has no access requests).
fn settings(state: &Shared, path: &RepoPath, who: &Caller, body: &[u8]) -> ApiResult<Response> {
    let s: Settings = parse_body(body)?;
    if let Some(g) = &s.gated {
        if !matches!(g, Value::Bool(false)) && !matches!(g.as_str(), Some("auto" | "manual")) {
            return Err(ApiError::bad_request("gated must be false, \"auto\" or \"manual\""));
        }
    }
    let private = match (s.visibility.as_deref(), s.private) {
        (Some(_), Some(_)) => return Err(ApiError::bad_request("give visibility or private, not both")),
        (Some("public"), None) => Some(false),
        (Some("private"), None) => Some(true),
        (Some("protected"), None) if path.repo.kind == RepoKind::Space => Some(false),
        (Some(v), None) => return Err(ApiError::bad_request(format!("invalid visibility {v:?}"))),
        (None, p) => p,
    };
    let repo = check_repo_write(state, &path.repo, who)?;
    state.store.mutate(|st| {
        let key = Store::canonical_key(st, &repo);
        let r = st.repos.get_mut(&key).ok_or_else(ApiError::repo_not_found)?;
        if let Some(p) = private {
            r.private = p;
        }
        Ok(())
    })?;
    Ok(Json(json!({})).into_response())
}

fn sibling_with_blob(path: &str, f: &RepoFile) -> Value {
    let mut v = json!({ "rfilename": path, "size": f.size, "blobId": &f.oid });
    if let Storage::Xet { sha256, .. } = &f.storage {
        v["lfs"] = json!({ "sha256": sha256, "size": f.size, "pointerSize": lfs_pointer(sha256, f.size).len() });
    }
    v
}

/// A tree entry as the Hub lists it.
pub fn file_entry(path: &str, f: &RepoFile) -> Value {
    let mut v = json!({ "type": "file", "oid": &f.oid, "size": f.size, "path": path });
    if let Storage::Xet { xet_hash, sha256 } = &f.storage {
        v["lfs"] = json!({ "oid": sha256, "size": f.size, "pointerSize": lfs_pointer(sha256, f.size).len() });
        v["xetHash"] = json!(xet_hash);
    }
    v
}

/// A directory's tree id: a digest of everything below it, so it changes when they do.
fn dir_oid(files: &std::collections::BTreeMap<String, RepoFile>, dir: &str) -> String {
    use sha1::{Digest, Sha1};
    let prefix = format!("{dir}/");
    let mut h = Sha1::new();
    for (k, f) in files.range(prefix.clone()..).take_while(|(k, _)| k.starts_with(&prefix)) {
        h.update(k.as_bytes());
        h.update(b"\0");
        h.update(f.oid.as_bytes());
    }
    hex::encode(h.finalize())
}

/// The latest commit at or before `sha` that changed `path` (a file or directory).
fn last_commit(r: &Repo, sha: &str, path: &str, is_dir: bool) -> Value {
    let id_at = |c: &crate::model::Commit| -> Option<String> {
        if is_dir {
            Some(dir_oid(&c.files, path))
        } else {
            c.files.get(path).map(|f| f.oid.clone())
        }
    };
    let mut current = &r.commits[sha];
    let here = id_at(current);
    while let Some(parent) = current.parent.as_ref().and_then(|p| r.commits.get(p)) {
        if id_at(parent) != here {
            break;
        }
        current = parent;
    }
    json!({ "id": &current.sha, "title": &current.title, "date": rfc3339(&current.date) })
}

fn tree(
    state: &Shared,
    headers: &HeaderMap,
    uri: &Uri,
    path: &RepoPath,
    who: &Caller,
    q: &HashMap<String, String>,
) -> ApiResult<Response> {
    let (rev, rest) = path.revision_and_rest()?;
    let dir = rest.join("/");
    let recursive = q.get("recursive").is_some_and(|v| v == "true" || v == "1");
    let expand = q.get("expand").is_some_and(|v| v == "true" || v == "1");
    let page = if expand { Page::from_query(q, 50, 1000)? } else { Page::from_query(q, 1000, 10_000)? };
    state.store.read(|st| {
        let r = visible_repo(st, &path.repo, who)?;
        let commit = r.commit(&rev).ok_or_else(|| ApiError::revision_not_found(&rev))?;
        let files = &commit.files;
        let prefix = if dir.is_empty() { String::new() } else { format!("{dir}/") };
        if !dir.is_empty() && !files.range(prefix.clone()..).next().is_some_and(|(k, _)| k.starts_with(&prefix)) {
            return Err(ApiError::entry_not_found(&dir));
        }
        let (entries, next) = if recursive {
            list_recursive(files, &prefix, page.cursor.as_deref(), page.limit)
        } else {
            list_level(files, &prefix, page.cursor.as_deref(), page.limit)
        };
        let out: Vec<Value> = entries
            .iter()
            .map(|e| {
                let mut v = match e {
                    Entry::File(p, f) => file_entry(p, f),
                    Entry::Dir(p) => json!({ "type": "directory", "oid": dir_oid(files, p), "size": 0, "path": p }),
                };
                if expand {
                    v["lastCommit"] = last_commit(r, &commit.sha, e.path(), matches!(e, Entry::Dir(_)));
                }
                v
            })
            .collect();
        Ok(with_next_link(Json(out).into_response(), headers, uri, next))
    })
}

fn paths_info(state: &Shared, path: &RepoPath, who: &Caller, body: &[u8]) -> ApiResult<Response> {
    #[derive(Deserialize)]
    struct Req {
        paths: Vec<String>,
    }
    let (rev, _) = path.revision_and_rest()?;
    let req: Req = parse_body(body)?;
    state.store.read(|st| {
        let r = visible_repo(st, &path.repo, who)?;
        let commit = r.commit(&rev).ok_or_else(|| ApiError::revision_not_found(&rev))?;
        let mut out = Vec::new();
        for p in &req.paths {
            let p = p.trim_matches('/');
            if let Some(f) = commit.files.get(p) {
                out.push(file_entry(p, f));
            } else if commit.files.range(format!("{p}/")..).next().is_some_and(|(k, _)| k.starts_with(&format!("{p}/")))
            {
                out.push(json!({ "type": "directory", "oid": dir_oid(&commit.files, p), "size": 0, "path": p }));
            }
        }
        Ok(Json(out).into_response())
    })
}

/// Parses a JSON body, answering 400 with the parser's message when it is malformed.
pub fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> ApiResult<T> {
    let body = if body.is_empty() { b"{}".as_slice() } else { body };
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
}

fn branch(state: &Shared, method: &Method, path: &RepoPath, who: &Caller, body: &[u8]) -> ApiResult<Response> {
    #[derive(Deserialize)]
    struct Req {
        #[serde(rename = "startingPoint")]
        starting_point: Option<String>,
    }
    let name = path.args.join("/");
    let repo = check_repo_write(state, &path.repo, who)?;
    if *method == Method::DELETE {
        state.store.delete_branch(&repo, &name)?;
    } else {
        let req: Req = parse_body(body)?;
        state.store.create_branch(&repo, &name, req.starting_point.as_deref())?;
    }
    Ok(Json(json!({})).into_response())
}

fn tag(state: &Shared, method: &Method, path: &RepoPath, who: &Caller, body: &[u8]) -> ApiResult<Response> {
    #[derive(Deserialize)]
    struct Req {
        tag: String,
    }
    let repo = check_repo_write(state, &path.repo, who)?;
    if *method == Method::DELETE {
        state.store.delete_tag(&repo, &path.args.join("/"))?;
    } else {
        let (rev, _) = path.revision_and_rest()?;
        let req: Req = parse_body(body)?;
        state.store.create_tag(&repo, &req.tag, &rev)?;
    }
    Ok(Json(json!({})).into_response())
}

fn refs(state: &Shared, path: &RepoPath, who: &Caller) -> ApiResult<Response> {
    state.store.read(|st| {
        let r = visible_repo(st, &path.repo, who)?;
        let list = |m: &std::collections::BTreeMap<String, String>, kind: &str| -> Vec<Value> {
            m.iter().map(|(n, sha)| json!({ "name": n, "ref": format!("refs/{kind}/{n}"), "targetCommit": sha })).collect()
        };
        let prs: Vec<Value> = r
            .prs
            .iter()
            .enumerate()
            .map(|(i, sha)| json!({ "name": (i + 1).to_string(), "ref": format!("refs/pr/{}", i + 1), "targetCommit": sha }))
            .collect();
        Ok(Json(json!({
            "branches": list(&r.branches, "heads"),
            "tags": list(&r.tags, "tags"),
            "converts": [],
            "pullRequests": prs,
        }))
        .into_response())
    })
}

fn commits(
    state: &Shared,
    headers: &HeaderMap,
    uri: &Uri,
    path: &RepoPath,
    who: &Caller,
    q: &HashMap<String, String>,
) -> ApiResult<Response> {
    let (rev, _) = path.revision_and_rest()?;
    let page = Page::from_query(q, 50, 1000)?;
    state.store.read(|st| {
        let r = visible_repo(st, &path.repo, who)?;
        let mut c = r.commit(&rev).ok_or_else(|| ApiError::revision_not_found(&rev))?;
        let offset: usize = page.cursor.as_deref().and_then(|s| s.parse().ok()).unwrap_or(0);
        let mut out = Vec::new();
        let mut i = 0;
        loop {
            if i >= offset && out.len() < page.limit {
                out.push(json!({
                    "id": &c.sha, "title": &c.title, "message": "", "authors": [{ "user": r.reference().namespace() }],
                    "date": rfc3339(&c.date),
                }));
            }
            i += 1;
            match c.parent.as_ref().and_then(|p| r.commits.get(p)) {
                Some(p) => c = p,
                None => break,
            }
        }
        let next = (offset + out.len() < i).then(|| (offset + out.len()).to_string());
        Ok(with_next_link(Json(out).into_response(), headers, uri, next))
    })
}

#[derive(Deserialize)]
struct CreateRepo {
    name: String,
    organization: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    private: Option<bool>,
    visibility: Option<String>,
}

impl CreateRepo {
    fn repo_ref(&self, who: &Caller) -> ApiResult<RepoRef> {
        let kind = match self.kind.as_deref() {
            None => RepoKind::Model,
            Some(k) => {
                RepoKind::from_singular(k).ok_or_else(|| ApiError::bad_request(format!("unknown repo type {k:?}")))?
            }
        };
        let id = match (&self.organization, self.name.contains('/')) {
            (_, true) => self.name.clone(),
            (Some(org), false) => format!("{org}/{}", self.name),
            (None, false) => format!(
                "{}/{}",
                who.name().ok_or_else(|| ApiError::unauthorized("authentication required"))?,
                self.name
            ),
        };
        crate::model::validate_repo_id(&id).map_err(ApiError::bad_request)?;
        Ok(RepoRef::new(kind, id))
    }
}

pub async fn create_repo(State(state): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let result = (|| -> ApiResult<Response> {
        let req: CreateRepo = parse_body(&body)?;
        let who = caller(&state, &headers);
        let repo = req.repo_ref(&who)?;
        let private = req.private.unwrap_or(false) || req.visibility.as_deref() == Some("private");
        who.check_write(repo.namespace(), private, ApiError::repo_not_found())?;
        let url = format!("{}/{repo}", base_url(&headers));
        match state.store.create_repo(&repo, private) {
            Ok(()) => Ok(Json(json!({ "url": url, "name": repo.id, "id": repo.id })).into_response()),
            // The Hub names the existing repo in its 409, and clients read it back.
            Err(e) if e.status == axum::http::StatusCode::CONFLICT => {
                Ok((e.status, Json(json!({ "error": e.message, "url": url }))).into_response())
            }
            Err(e) => Err(e),
        }
    })();
    result.unwrap_or_else(IntoResponse::into_response)
}

pub async fn delete_repo(State(state): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let result = (|| {
        let req: CreateRepo = parse_body(&body)?;
        let who = caller(&state, &headers);
        let repo = check_repo_write(&state, &req.repo_ref(&who)?, &who)?;
        state.store.delete_repo(&repo)?;
        Ok::<_, ApiError>(Json(json!({})).into_response())
    })();
    result.unwrap_or_else(IntoResponse::into_response)
}

#[derive(Deserialize)]
struct MoveRepo {
    #[serde(rename = "fromRepo")]
    from: String,
    #[serde(rename = "toRepo")]
    to: String,
    #[serde(rename = "type")]
    kind: Option<String>,
}

/// `POST /api/repos/move`: renames or transfers a repo (`type` model, dataset, space) or a
/// bucket (`type` bucket); the caller must be able to write to both namespaces.
pub async fn move_repo(State(state): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let result = (|| -> ApiResult<Response> {
        let req: MoveRepo = parse_body(&body)?;
        let who = caller(&state, &headers);
        crate::model::validate_repo_id(&req.to).map_err(ApiError::bad_request)?;
        let to_ns = req.to.split('/').next().filter(|_| req.to.contains('/'));
        if req.kind.as_deref() == Some("bucket") {
            state.store.read(|st| {
                let b = st.buckets.get(&req.from).ok_or_else(ApiError::bucket_not_found)?;
                who.check_write(req.from.split('/').next(), b.private, ApiError::bucket_not_found())
            })?;
            who.check_write(to_ns, false, ApiError::forbidden("cannot write to the target namespace"))?;
            state.store.move_bucket(&req.from, &req.to)?;
            return Ok(Json(json!({})).into_response());
        }
        let kind = match req.kind.as_deref() {
            None => RepoKind::Model,
            Some(k) => {
                RepoKind::from_singular(k).ok_or_else(|| ApiError::bad_request(format!("unknown repo type {k:?}")))?
            }
        };
        let from = check_repo_write(&state, &RepoRef::new(kind, req.from.clone()), &who)?;
        who.check_write(to_ns, false, ApiError::forbidden("cannot write to the target namespace"))?;
        state.store.move_repo(&from, &RepoRef::new(kind, req.to.clone()))?;
        Ok(Json(json!({})).into_response())
    })();
    result.unwrap_or_else(IntoResponse::into_response)
}

pub async fn whoami(State(state): State<Shared>, headers: HeaderMap) -> Response {
    match caller(&state, &headers) {
        Caller::User { name, write } => Json(json!({
            "type": "user",
            "name": name,
            "fullname": name,
            "orgs": [],
            "auth": { "type": "access_token", "accessToken": { "displayName": "emulator", "role": if write { "write" } else { "read" } } },
        }))
        .into_response(),
        Caller::Invalid => crate::auth::invalid_token().into_response(),
        Caller::Anonymous => ApiError::unauthorized("Authorization header is required").into_response(),
    }
}
