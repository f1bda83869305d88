//! The emulator's persistent data: repos with their commits and refs, buckets
//! with their keys. Plain data; the rules that change it live in `store.rs`.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The three kinds of git-backed repos the Hub serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RepoKind {
    Model,
    Dataset,
    Space,
}

impl RepoKind {
    /// The plural used in `/api/{models|datasets|spaces}/…`.
    pub fn api_plural(self) -> &'static str {
        match self {
            RepoKind::Model => "models",
            RepoKind::Dataset => "datasets",
            RepoKind::Space => "spaces",
        }
    }

    /// The prefix used in web and resolve URLs (`datasets/…`; none for models).
    pub fn url_prefix(self) -> &'static str {
        match self {
            RepoKind::Model => "",
            RepoKind::Dataset => "datasets/",
            RepoKind::Space => "spaces/",
        }
    }

    pub fn from_api_plural(s: &str) -> Option<Self> {
        match s {
            "models" => Some(RepoKind::Model),
            "datasets" => Some(RepoKind::Dataset),
            "spaces" => Some(RepoKind::Space),
            _ => None,
        }
    }

    /// The singular `type` field of `/api/repos/create` (`model`, `dataset`, `space`).
    pub fn from_singular(s: &str) -> Option<Self> {
        match s {
            "model" => Some(RepoKind::Model),
            "dataset" => Some(RepoKind::Dataset),
            "space" => Some(RepoKind::Space),
            _ => None,
        }
    }
}

/// A repo named the way the CLI and seeding name it: `[datasets/|spaces/]owner/name`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RepoRef {
    pub kind: RepoKind,
    pub id: String,
}

impl RepoRef {
    pub fn new(kind: RepoKind, id: impl Into<String>) -> Self {
        Self { kind, id: id.into() }
    }

    /// Parses `[datasets/|spaces/|models/]owner/name` (a legacy id without owner is allowed).
    pub fn parse(spec: &str) -> Result<Self, String> {
        let (kind, id) = match spec.split_once('/') {
            Some(("datasets", rest)) => (RepoKind::Dataset, rest),
            Some(("spaces", rest)) => (RepoKind::Space, rest),
            Some(("models", rest)) => (RepoKind::Model, rest),
            _ => (RepoKind::Model, spec),
        };
        validate_repo_id(id)?;
        Ok(Self::new(kind, id))
    }

    /// The namespace (owner) of the repo; legacy ids have none.
    pub fn namespace(&self) -> Option<&str> {
        self.id.split_once('/').map(|(ns, _)| ns)
    }
}

impl fmt::Display for RepoRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.kind.url_prefix(), self.id)
    }
}

/// Checks a repo or bucket id: one or two non-empty segments of safe characters.
pub fn validate_repo_id(id: &str) -> Result<(), String> {
    let segments: Vec<&str> = id.split('/').collect();
    if segments.is_empty() || segments.len() > 2 {
        return Err(format!("invalid repo id {id:?}: expected owner/name"));
    }
    for seg in segments {
        let ok = !seg.is_empty()
            && seg != "."
            && seg != ".."
            && seg.len() <= 96
            && seg.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        if !ok {
            return Err(format!("invalid repo id {id:?}"));
        }
    }
    Ok(())
}

/// How a file's bytes are stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "storage", rename_all = "lowercase")]
pub enum Storage {
    /// Stored in Xet (an LFS file on the Hub): the bytes live in the CAS.
    Xet { xet_hash: String, sha256: String },
    /// A plain git blob: the bytes live in the emulator's blob store under `oid`.
    Blob,
}

/// One file of a repo commit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepoFile {
    pub size: u64,
    /// The git blob id: sha1 of the content for plain blobs, of the LFS pointer for Xet files.
    pub oid: String,
    #[serde(flatten)]
    pub storage: Storage,
}

impl RepoFile {
    pub fn xet_hash(&self) -> Option<&str> {
        match &self.storage {
            Storage::Xet { xet_hash, .. } => Some(xet_hash),
            Storage::Blob => None,
        }
    }

    /// The ETag the Hub gives the file: sha256 for LFS/Xet files, the git oid for blobs.
    pub fn etag(&self) -> &str {
        match &self.storage {
            Storage::Xet { sha256, .. } => sha256,
            Storage::Blob => &self.oid,
        }
    }
}

/// The text of the git-lfs pointer file that stands in git for an LFS/Xet file.
pub fn lfs_pointer(sha256: &str, size: u64) -> String {
    format!("version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n")
}

/// The git blob id of some content: sha1 of `blob <len>\0<content>`.
pub fn git_blob_oid(content: &[u8]) -> String {
    use sha1::{Digest, Sha1};
    let mut h = Sha1::new();
    h.update(format!("blob {}\0", content.len()).as_bytes());
    h.update(content);
    hex::encode(h.finalize())
}

pub type FileTree = Arc<BTreeMap<String, RepoFile>>;

/// One commit: its whole file tree (shared with its parent where unchanged).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Commit {
    pub sha: String,
    pub parent: Option<String>,
    pub title: String,
    pub date: DateTime<Utc>,
    pub files: FileTree,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Repo {
    pub kind: RepoKind,
    pub id: String,
    pub private: bool,
    pub created_at: DateTime<Utc>,
    pub branches: BTreeMap<String, String>,
    pub tags: BTreeMap<String, String>,
    /// `refs/pr/N` is `prs[N-1]`.
    pub prs: Vec<String>,
    pub commits: BTreeMap<String, Commit>,
}

impl Repo {
    pub fn reference(&self) -> RepoRef {
        RepoRef::new(self.kind, self.id.clone())
    }

    /// Resolves a branch, tag, full commit sha or `refs/pr/N` to a commit sha.
    pub fn resolve(&self, revision: &str) -> Option<&str> {
        if let Some(sha) = self.branches.get(revision).or_else(|| self.tags.get(revision)) {
            return Some(sha);
        }
        if let Some(n) = revision.strip_prefix("refs/pr/") {
            let n: usize = n.parse().ok()?;
            return self.prs.get(n.checked_sub(1)?).map(String::as_str);
        }
        if let Some(rest) = revision.strip_prefix("refs/heads/") {
            return self.branches.get(rest).map(String::as_str);
        }
        if let Some(rest) = revision.strip_prefix("refs/tags/") {
            return self.tags.get(rest).map(String::as_str);
        }
        self.commits.get(revision).map(|c| c.sha.as_str())
    }

    pub fn commit(&self, revision: &str) -> Option<&Commit> {
        self.resolve(revision).and_then(|sha| self.commits.get(sha))
    }

    pub fn head(&self) -> &Commit {
        let sha = self.branches.get("main").expect("a repo always has a main branch");
        &self.commits[sha]
    }
}

/// One object of a bucket.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketFile {
    pub size: u64,
    pub xet_hash: String,
    pub mtime: DateTime<Utc>,
    pub uploaded_at: DateTime<Utc>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Bucket {
    pub id: String,
    pub private: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub files: BTreeMap<String, BucketFile>,
}

/// What the emulator knows of a Xet file: its size, and its sha256 when the
/// uploader recorded one (repo commits name Xet files by sha256).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct XetFileRecord {
    pub xet_hash: String,
    pub size: u64,
}

/// File name patterns the Hub's default `.gitattributes` stores with LFS (and so Xet).
const LFS_SUFFIXES: &[&str] = &[
    ".7z",
    ".arrow",
    ".bin",
    ".bz2",
    ".ckpt",
    ".ftz",
    ".gguf",
    ".gz",
    ".h5",
    ".joblib",
    ".lz4",
    ".mlmodel",
    ".model",
    ".msgpack",
    ".npy",
    ".npz",
    ".onnx",
    ".ot",
    ".parquet",
    ".pb",
    ".pickle",
    ".pkl",
    ".pt",
    ".pth",
    ".rar",
    ".safetensors",
    ".tar",
    ".tflite",
    ".tgz",
    ".wasm",
    ".xz",
    ".zip",
    ".zst",
    "tfevents",
];

/// Files at or above this size go to LFS/Xet whatever their name.
pub const LFS_SIZE_THRESHOLD_BYTES: u64 = 10 * 1024 * 1024;

/// Whether the Hub would store a file in LFS/Xet rather than as a plain git blob:
/// an LFS pattern, a large size, or binary content in its first bytes.
pub fn goes_to_xet(path: &str, size: u64, sample: &[u8]) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path).to_ascii_lowercase();
    LFS_SUFFIXES.iter().any(|s| name.ends_with(s))
        || size >= LFS_SIZE_THRESHOLD_BYTES
        || sample.contains(&0)
        || std::str::from_utf8(sample).is_err_and(|e| e.error_len().is_some())
}
