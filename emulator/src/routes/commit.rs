//! Repo uploads: `preupload` (which files go to Xet) and the NDJSON `commit`.
//! Xet files arrive as `lfsFile` lines naming a sha256; the emulator maps it
//! to the Xet hash recorded in the shard the uploader sent to the CAS.

use std::collections::HashMap;

use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine;
use serde::Deserialize;
use serde_json::{json, Value};

use super::repos::{check_repo_write, parse_body};
use super::{base_url, Shared};
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::model::{git_blob_oid, goes_to_xet, lfs_pointer, RepoFile, RepoRef, Storage};
use crate::store::{validate_path, CommitOp};

pub fn preupload(state: &Shared, repo: &RepoRef, who: &Caller, body: &[u8]) -> ApiResult<Response> {
    #[derive(Deserialize)]
    struct File {
        path: String,
        #[serde(default)]
        sample: String,
        size: u64,
    }
    #[derive(Deserialize)]
    struct Req {
        files: Vec<File>,
    }
    check_repo_write(state, repo, who)?;
    let req: Req = parse_body(body)?;
    let mut out = Vec::new();
    for f in req.files {
        validate_path(&f.path)?;
        let sample = base64::engine::general_purpose::STANDARD
            .decode(&f.sample)
            .map_err(|_| ApiError::bad_request(format!("sample of {} is not base64", f.path)))?;
        let mode = if goes_to_xet(&f.path, f.size, &sample) { "lfs" } else { "regular" };
        out.push(json!({ "path": f.path, "uploadMode": mode, "shouldIgnore": false }));
    }
    Ok(Json(json!({ "files": out })).into_response())
}

#[derive(Deserialize)]
#[serde(tag = "key", content = "value", rename_all = "camelCase")]
enum Line {
    Header {
        summary: Option<String>,
        #[serde(rename = "parentCommit")]
        parent_commit: Option<String>,
    },
    File {
        path: String,
        content: String,
        #[serde(default)]
        encoding: Option<String>,
    },
    LfsFile {
        path: String,
        #[serde(default)]
        algo: Option<String>,
        oid: String,
        #[serde(default)]
        size: Option<u64>,
    },
    DeletedFile {
        path: String,
    },
    DeletedFolder {
        path: String,
    },
}

pub async fn commit(
    state: &Shared,
    headers: &HeaderMap,
    repo: &RepoRef,
    revision: &str,
    who: &Caller,
    q: &HashMap<String, String>,
    body: &[u8],
) -> ApiResult<Response> {
    let repo = check_repo_write(state, repo, who)?;
    let text = std::str::from_utf8(body).map_err(|_| ApiError::bad_request("commit body is not UTF-8"))?;
    let mut title = None;
    let mut parent = None;
    let mut ops = Vec::new();
    let mut lfs = Vec::new();
    for (n, raw) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let line: Line = serde_json::from_str(raw)
            .map_err(|e| ApiError::bad_request(format!("invalid NDJSON at line {}: {e}", n + 1)))?;
        match line {
            Line::Header { summary, parent_commit } => {
                title = summary;
                parent = parent_commit;
            }
            Line::File { path, content, encoding } => {
                validate_path(&path)?;
                let bytes = match encoding.as_deref() {
                    Some("base64") => base64::engine::general_purpose::STANDARD
                        .decode(&content)
                        .map_err(|_| ApiError::bad_request(format!("content of {path} is not base64")))?,
                    None | Some("utf-8") => content.into_bytes(),
                    Some(other) => return Err(ApiError::bad_request(format!("unknown encoding {other:?}"))),
                };
                let oid =
                    crate::blobs::put_blob(&state.blob_dir, &bytes).map_err(|e| ApiError::internal(e.to_string()))?;
                ops.push(CommitOp::Put {
                    path,
                    file: RepoFile { size: bytes.len() as u64, oid, storage: Storage::Blob },
                });
            }
            Line::LfsFile { path, algo, oid, size } => {
                validate_path(&path)?;
                if algo.as_deref().is_some_and(|a| a != "sha256") {
                    return Err(ApiError::bad_request("lfsFile algo must be sha256"));
                }
                lfs.push((path, oid.to_ascii_lowercase(), size));
            }
            Line::DeletedFile { path } => ops.push(CommitOp::Delete { path }),
            Line::DeletedFolder { path } => ops.push(CommitOp::DeleteFolder { path }),
        }
    }
    for (path, sha256, size) in lfs {
        let record = lookup_sha256(state, &sha256).await?;
        if size.is_some_and(|s| s != record.size) {
            return Err(ApiError::bad_request(format!("size of {path} does not match the uploaded file")));
        }
        let pointer = lfs_pointer(&sha256, record.size);
        let file = RepoFile {
            size: record.size,
            oid: git_blob_oid(pointer.as_bytes()),
            storage: Storage::Xet { xet_hash: record.xet_hash, sha256 },
        };
        ops.push(CommitOp::Put { path, file });
    }
    let title = title.unwrap_or_else(|| "Upload files".into());
    let create_pr = q.get("create_pr").is_some_and(|v| v == "1" || v == "true");
    let (sha, pr) = state.store.commit(&repo, revision, &title, parent.as_deref(), create_pr, ops)?;
    let base = format!("{}/{repo}", base_url(headers));
    let mut out: Value = json!({ "commitUrl": format!("{base}/commit/{sha}"), "commitOid": sha, "success": true });
    if let Some(n) = pr {
        out["pullRequestUrl"] = json!(format!("{base}/discussions/{n}"));
    }
    Ok(Json(out).into_response())
}

/// The Xet file uploaded with this sha256, reading new shards when it is not known yet.
async fn lookup_sha256(state: &Shared, sha256: &str) -> ApiResult<crate::model::XetFileRecord> {
    if let Some(r) = state.store.read(|st| st.sha256_index.get(sha256).cloned()) {
        return Ok(r);
    }
    state.cas.reindex_shards(&state.store).await?;
    state.store.read(|st| st.sha256_index.get(sha256).cloned()).ok_or_else(|| {
        ApiError::bad_request(format!("lfsFile {sha256} was not uploaded to the CAS (no shard names this sha256)"))
    })
}
