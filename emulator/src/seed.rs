//! Seeding a repo or bucket from a local folder. Xet files go through the
//! real xet-core upload path (chunking, xorbs, shard) against the running
//! emulator's own CAS front; small text files of repos stay git blobs.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use chrono::{DateTime, Utc};
use xet_client::cas_client::auth::AuthConfig;
use xet_data::processing::configurations::{SessionContext, TranslatorConfig};
use xet_data::processing::{FileUploadSession, Sha256Policy, XetFileInfo};
use xet_runtime::core::XetContext;

use crate::model::{git_blob_oid, goes_to_xet, lfs_pointer, RepoFile, RepoRef, Storage};
use crate::routes::Shared;
use crate::store::{BatchOp, CommitOp};

/// What a seeding call did.
#[derive(Debug, Clone, Default)]
pub struct SeedReport {
    pub xet_files: usize,
    pub blob_files: usize,
    pub bytes: u64,
    /// The new commit (repos only).
    pub commit: Option<String>,
}

/// A regular file under the seeded folder.
struct LocalFile {
    rel: String,
    abs: PathBuf,
    size: u64,
    mtime: DateTime<Utc>,
}

fn walk(folder: &Path) -> anyhow::Result<Vec<LocalFile>> {
    anyhow::ensure!(folder.is_dir(), "{} is not a directory", folder.display());
    let mut out = Vec::new();
    for entry in walkdir::WalkDir::new(folder).sort_by_file_name() {
        let entry = entry?;
        if !entry.file_type().is_file() {
            continue;
        }
        let rel = entry.path().strip_prefix(folder)?;
        if rel.components().next().is_some_and(|c| c.as_os_str() == ".git") {
            continue;
        }
        let rel = rel.to_str().with_context(|| format!("{} is not valid UTF-8", rel.display()))?.to_string();
        let meta = entry.metadata()?;
        let mtime = meta.modified().map(DateTime::<Utc>::from).unwrap_or_else(|_| Utc::now());
        out.push(LocalFile { rel, abs: entry.path().to_path_buf(), size: meta.len(), mtime });
    }
    Ok(out)
}

/// Uploads files to the emulator's CAS (through its HTTP front) and returns their Xet infos.
async fn upload(
    state: &Shared,
    ctx: &XetContext,
    endpoint: &str,
    files: &[&LocalFile],
) -> anyhow::Result<Vec<XetFileInfo>> {
    if files.is_empty() {
        return Ok(Vec::new());
    }
    let (token, exp) = state.cas.issue_token(true);
    let scratch = tempfile::tempdir()?;
    let session = SessionContext {
        endpoint: format!("{endpoint}/cas"),
        auth: AuthConfig::maybe_new(Some(token), Some(exp), None),
        custom_headers: None,
        repo_paths: vec![String::new()],
        session_id: None,
        cache_root: Some(scratch.path().to_path_buf()),
    };
    let config = Arc::new(TranslatorConfig::new(ctx, session)?);
    let upload = FileUploadSession::new(config).await?;
    let infos = upload.upload_files(files.iter().map(|f| (f.abs.clone(), Sha256Policy::Compute))).await?;
    upload.finalize().await?;
    Ok(infos)
}

fn sample(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut buf = Vec::with_capacity(8192);
    std::fs::File::open(path)?.take(8192).read_to_end(&mut buf)?;
    Ok(buf)
}

pub async fn seed_repo(
    state: &Shared,
    ctx: &XetContext,
    endpoint: &str,
    repo: &RepoRef,
    folder: &Path,
    private: bool,
) -> anyhow::Result<SeedReport> {
    let files = walk(folder)?;
    let exists = state.store.read(|st| st.repos.contains_key(&repo.to_string()));
    if !exists {
        state.store.create_repo(repo, private)?;
    }
    let mut xet = Vec::new();
    let mut ops = Vec::new();
    let mut report = SeedReport::default();
    for f in &files {
        report.bytes += f.size;
        if f.size > 0 && goes_to_xet(&f.rel, f.size, &sample(&f.abs)?) {
            xet.push(f);
            continue;
        }
        let content = std::fs::read(&f.abs)?;
        let oid = crate::blobs::put_blob(&state.blob_dir, &content)?;
        ops.push(CommitOp::Put { path: f.rel.clone(), file: RepoFile { size: f.size, oid, storage: Storage::Blob } });
        report.blob_files += 1;
    }
    for (f, info) in xet.iter().zip(upload(state, ctx, endpoint, &xet).await?) {
        let sha256 = info.sha256().context("upload did not report a sha256")?.to_string();
        let pointer = lfs_pointer(&sha256, f.size);
        let storage = Storage::Xet { xet_hash: info.hash().to_string(), sha256 };
        ops.push(CommitOp::Put {
            path: f.rel.clone(),
            file: RepoFile { size: f.size, oid: git_blob_oid(pointer.as_bytes()), storage },
        });
        report.xet_files += 1;
    }
    let title = format!("Seed from {}", folder.file_name().and_then(|n| n.to_str()).unwrap_or("folder"));
    let (sha, _) = state.store.commit(repo, "main", &title, None, false, ops)?;
    report.commit = Some(sha);
    Ok(report)
}

pub async fn seed_bucket(
    state: &Shared,
    ctx: &XetContext,
    endpoint: &str,
    id: &str,
    folder: &Path,
    private: bool,
) -> anyhow::Result<SeedReport> {
    crate::model::validate_repo_id(id).map_err(anyhow::Error::msg)?;
    anyhow::ensure!(id.contains('/'), "bucket id must be ns/name");
    let files = walk(folder)?;
    if !state.store.read(|st| st.buckets.contains_key(id)) {
        state.store.create_bucket(id, private)?;
    }
    let all: Vec<&LocalFile> = files.iter().collect();
    let infos = upload(state, ctx, endpoint, &all).await?;
    let mut report = SeedReport::default();
    let ops = files
        .iter()
        .zip(infos)
        .map(|(f, info)| {
            report.bytes += f.size;
            report.xet_files += 1;
            BatchOp::Add { path: f.rel.clone(), xet_hash: info.hash().to_string(), size: f.size, mtime: f.mtime }
        })
        .collect();
    state.store.bucket_batch(id, ops)?;
    Ok(report)
}
