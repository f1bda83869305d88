//! The emulator's metadata store: every rule that changes repos and buckets,
//! and its persistence. State lives in memory behind one lock and is written
//! whole to `state.json` (write, fsync, rename) after each change, so a
//! restart sees every acknowledged commit and batch.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};

use crate::error::{ApiError, ApiResult};
use crate::model::{Bucket, BucketFile, Commit, Repo, RepoFile, RepoKind, RepoRef, XetFileRecord};

const STATE_FILE: &str = "state.json";

#[derive(Default, Serialize, Deserialize)]
pub struct State {
    /// Keyed by `RepoRef` display form (`datasets/owner/name`).
    pub repos: BTreeMap<String, Repo>,
    /// Old name → canonical repo key, as after a rename on the Hub.
    pub aliases: BTreeMap<String, String>,
    pub buckets: BTreeMap<String, Bucket>,
    /// sha256 (hex) → Xet file, learned from uploaded shards.
    pub sha256_index: HashMap<String, XetFileRecord>,
    /// Shards already read into `sha256_index`.
    pub indexed_shards: std::collections::HashSet<String>,
}

/// One change in a repo commit.
#[derive(Clone, Debug)]
pub enum CommitOp {
    Put { path: String, file: RepoFile },
    Delete { path: String },
    DeleteFolder { path: String },
}

/// One operation of a bucket batch, its Xet file already checked against the CAS.
#[derive(Clone, Debug)]
pub enum BatchOp {
    Add { path: String, xet_hash: String, size: u64, mtime: DateTime<Utc> },
    Delete { path: String },
}

pub struct Store {
    dir: PathBuf,
    state: RwLock<State>,
    sha_counter: AtomicU64,
}

/// Rejects paths a repo or bucket cannot hold: empty, absolute, `..`, `.`, empty segments.
pub fn validate_path(path: &str) -> ApiResult<()> {
    let bad = path.is_empty()
        || path.starts_with('/')
        || path.contains('\0')
        || path.split('/').any(|seg| seg.is_empty() || seg == "." || seg == "..");
    if bad {
        return Err(ApiError::bad_request(format!("Invalid path {path:?}")));
    }
    Ok(())
}

/// Rejects revisions that cannot name a ref: `..`, query characters, control characters.
pub fn validate_revision(rev: &str) -> ApiResult<()> {
    let bad = rev.is_empty()
        || rev.contains("..")
        || rev.starts_with('/')
        || rev.ends_with('/')
        || rev.chars().any(|c| c.is_control() || "?#%\\ ~^:*[".contains(c));
    if bad {
        return Err(ApiError::bad_request(format!("Invalid revision {rev:?}")));
    }
    Ok(())
}

impl Store {
    /// Opens the store under `dir`, loading `state.json` when present.
    pub fn open(dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(STATE_FILE);
        let state = if path.exists() {
            let bytes = std::fs::read(&path)?;
            serde_json::from_slice(&bytes).map_err(|e| anyhow::anyhow!("corrupt {}: {e}", path.display()))?
        } else {
            State::default()
        };
        Ok(Self { dir: dir.to_path_buf(), state: RwLock::new(state), sha_counter: AtomicU64::new(0) })
    }

    pub fn read<T>(&self, f: impl FnOnce(&State) -> T) -> T {
        f(&self.state.read())
    }

    /// Applies `f`; when it succeeds the new state is persisted before returning.
    /// `f` must leave the state untouched when it fails.
    pub fn mutate<T>(&self, f: impl FnOnce(&mut State) -> ApiResult<T>) -> ApiResult<T> {
        let mut state = self.state.write();
        let out = f(&mut state)?;
        self.persist(&state).map_err(|e| ApiError::internal(format!("cannot persist state: {e}")))?;
        Ok(out)
    }

    fn persist(&self, state: &State) -> std::io::Result<()> {
        let tmp = self.dir.join(format!("{STATE_FILE}.tmp"));
        let mut f = std::fs::File::create(&tmp)?;
        serde_json::to_writer(std::io::BufWriter::new(&mut f), state)?;
        f.sync_all()?;
        std::fs::rename(&tmp, self.dir.join(STATE_FILE))?;
        Ok(())
    }

    /// A fresh 40-hex commit sha.
    pub fn new_sha(&self, seed: &str) -> String {
        use sha1::{Digest, Sha1};
        let n = self.sha_counter.fetch_add(1, Ordering::Relaxed);
        let now = Utc::now().timestamp_nanos_opt().unwrap_or_default();
        let mut h = Sha1::new();
        h.update(format!("{seed}\0{now}\0{n}\0{}", std::process::id()).as_bytes());
        hex::encode(h.finalize())
    }

    pub fn create_repo(&self, repo: &RepoRef, private: bool) -> ApiResult<()> {
        let sha = self.new_sha(&repo.to_string());
        self.mutate(|st| {
            let key = repo.to_string();
            if st.repos.contains_key(&key) || st.aliases.contains_key(&key) {
                return Err(ApiError::conflict(format!("You already created this {} repo", kind_word(repo.kind))));
            }
            let now = Utc::now();
            let initial = Commit {
                sha: sha.clone(),
                parent: None,
                title: "initial commit".into(),
                date: now,
                files: Arc::default(),
            };
            st.repos.insert(
                key,
                Repo {
                    kind: repo.kind,
                    id: repo.id.clone(),
                    private,
                    created_at: now,
                    branches: BTreeMap::from([("main".to_string(), sha.clone())]),
                    tags: BTreeMap::new(),
                    prs: Vec::new(),
                    commits: BTreeMap::from([(sha, initial)]),
                },
            );
            Ok(())
        })
    }

    pub fn delete_repo(&self, repo: &RepoRef) -> ApiResult<()> {
        self.mutate(|st| {
            let key = repo.to_string();
            st.repos.remove(&key).ok_or_else(ApiError::repo_not_found)?;
            st.aliases.retain(|_, v| *v != key);
            Ok(())
        })
    }

    /// Renames (or transfers) a repo; the old name keeps resolving to it, as on the Hub.
    pub fn move_repo(&self, from: &RepoRef, to: &RepoRef) -> ApiResult<()> {
        self.mutate(|st| {
            let (old, new) = (Self::canonical_key(st, from), to.to_string());
            if st.repos.contains_key(&new) || st.aliases.contains_key(&new) {
                return Err(ApiError::conflict(format!("{to} already exists")));
            }
            let mut r = st.repos.remove(&old).ok_or_else(ApiError::repo_not_found)?;
            r.id = to.id.clone();
            st.repos.insert(new.clone(), r);
            for target in st.aliases.values_mut().filter(|t| **t == old) {
                *target = new.clone();
            }
            st.aliases.insert(old, new);
            Ok(())
        })
    }

    /// Renames (or transfers) a bucket.
    pub fn move_bucket(&self, from: &str, to: &str) -> ApiResult<()> {
        self.mutate(|st| {
            if st.buckets.contains_key(to) {
                return Err(ApiError::conflict(format!("bucket {to} already exists")));
            }
            let mut b = st.buckets.remove(from).ok_or_else(ApiError::bucket_not_found)?;
            b.id = to.to_string();
            st.buckets.insert(to.to_string(), b);
            Ok(())
        })
    }

    /// Makes `alias` resolve to `target`, as the Hub does after a rename.
    pub fn add_alias(&self, alias: &RepoRef, target: &RepoRef) -> ApiResult<()> {
        self.mutate(|st| {
            if !st.repos.contains_key(&target.to_string()) {
                return Err(ApiError::repo_not_found());
            }
            if st.repos.contains_key(&alias.to_string()) {
                return Err(ApiError::conflict("alias names an existing repo"));
            }
            st.aliases.insert(alias.to_string(), target.to_string());
            Ok(())
        })
    }

    /// The canonical key of a repo, following aliases.
    pub fn canonical_key(st: &State, repo: &RepoRef) -> String {
        let key = repo.to_string();
        st.aliases.get(&key).cloned().unwrap_or(key)
    }

    /// Commits `ops` on `revision` (a branch or `refs/pr/N`), or opens a new PR from it.
    /// Returns the new commit sha and, for `create_pr`, the PR number.
    pub fn commit(
        &self,
        repo: &RepoRef,
        revision: &str,
        title: &str,
        parent_commit: Option<&str>,
        create_pr: bool,
        ops: Vec<CommitOp>,
    ) -> ApiResult<(String, Option<usize>)> {
        let sha = self.new_sha(&format!("{repo}\0{revision}\0{title}"));
        self.mutate(|st| {
            let key = Self::canonical_key(st, repo);
            let r = st.repos.get_mut(&key).ok_or_else(ApiError::repo_not_found)?;
            let is_branch = r.branches.contains_key(revision);
            let pr_index = revision
                .strip_prefix("refs/pr/")
                .and_then(|n| n.parse::<usize>().ok())
                .and_then(|n| n.checked_sub(1))
                .filter(|i| *i < r.prs.len());
            if !is_branch && pr_index.is_none() {
                return Err(if r.resolve(revision).is_some() {
                    ApiError::bad_request(format!("Cannot commit to {revision}: not a branch"))
                } else {
                    ApiError::revision_not_found(revision)
                });
            }
            let base_sha = r.resolve(revision).expect("checked above").to_string();
            if let Some(parent) = parent_commit {
                if parent != base_sha {
                    return Err(ApiError::new(
                        axum::http::StatusCode::PRECONDITION_FAILED,
                        format!("parentCommit {parent} is not the head of {revision} ({base_sha})"),
                    ));
                }
            }
            let mut files = (*r.commits[&base_sha].files).clone();
            for op in ops {
                match op {
                    CommitOp::Put { path, file } => {
                        validate_path(&path)?;
                        let dir_prefix = format!("{path}/");
                        if files.range(dir_prefix.clone()..).next().is_some_and(|(k, _)| k.starts_with(&dir_prefix)) {
                            return Err(ApiError::bad_request(format!("{path} is a directory")));
                        }
                        files.insert(path, file);
                    }
                    CommitOp::Delete { path } => {
                        if files.remove(&path).is_none() {
                            return Err(ApiError::entry_not_found(&path));
                        }
                    }
                    CommitOp::DeleteFolder { path } => {
                        let prefix = format!("{}/", path.trim_end_matches('/'));
                        let before = files.len();
                        files.retain(|k, _| !k.starts_with(&prefix));
                        if files.len() == before {
                            return Err(ApiError::entry_not_found(&path));
                        }
                    }
                }
            }
            let commit = Commit {
                sha: sha.clone(),
                parent: Some(base_sha),
                title: title.to_string(),
                date: Utc::now(),
                files: Arc::new(files),
            };
            r.commits.insert(sha.clone(), commit);
            let pr = if create_pr {
                r.prs.push(sha.clone());
                Some(r.prs.len())
            } else if let Some(i) = pr_index {
                r.prs[i] = sha.clone();
                None
            } else {
                r.branches.insert(revision.to_string(), sha.clone());
                None
            };
            Ok((sha, pr))
        })
    }

    pub fn create_branch(&self, repo: &RepoRef, branch: &str, from: Option<&str>) -> ApiResult<()> {
        validate_revision(branch)?;
        self.mutate(|st| {
            let key = Self::canonical_key(st, repo);
            let r = st.repos.get_mut(&key).ok_or_else(ApiError::repo_not_found)?;
            if r.branches.contains_key(branch) {
                return Err(ApiError::conflict(format!("Reference already exists: refs/heads/{branch}")));
            }
            let from = from.unwrap_or("main");
            let sha = r.resolve(from).ok_or_else(|| ApiError::revision_not_found(from))?.to_string();
            r.branches.insert(branch.to_string(), sha);
            Ok(())
        })
    }

    pub fn delete_branch(&self, repo: &RepoRef, branch: &str) -> ApiResult<()> {
        self.mutate(|st| {
            let key = Self::canonical_key(st, repo);
            let r = st.repos.get_mut(&key).ok_or_else(ApiError::repo_not_found)?;
            if branch == "main" {
                return Err(ApiError::forbidden("Cannot delete the default branch"));
            }
            r.branches.remove(branch).map(|_| ()).ok_or_else(|| ApiError::revision_not_found(branch))
        })
    }

    pub fn create_tag(&self, repo: &RepoRef, tag: &str, revision: &str) -> ApiResult<()> {
        validate_revision(tag)?;
        self.mutate(|st| {
            let key = Self::canonical_key(st, repo);
            let r = st.repos.get_mut(&key).ok_or_else(ApiError::repo_not_found)?;
            if r.tags.contains_key(tag) {
                return Err(ApiError::conflict(format!("Tag already exists: {tag}")));
            }
            let sha = r.resolve(revision).ok_or_else(|| ApiError::revision_not_found(revision))?.to_string();
            r.tags.insert(tag.to_string(), sha);
            Ok(())
        })
    }

    pub fn delete_tag(&self, repo: &RepoRef, tag: &str) -> ApiResult<()> {
        self.mutate(|st| {
            let key = Self::canonical_key(st, repo);
            let r = st.repos.get_mut(&key).ok_or_else(ApiError::repo_not_found)?;
            r.tags.remove(tag).map(|_| ()).ok_or_else(|| ApiError::revision_not_found(tag))
        })
    }

    pub fn create_bucket(&self, id: &str, private: bool) -> ApiResult<()> {
        self.mutate(|st| {
            if st.buckets.contains_key(id) {
                return Err(ApiError::conflict(format!("Bucket {id} already exists")));
            }
            let now = Utc::now();
            st.buckets.insert(
                id.to_string(),
                Bucket { id: id.to_string(), private, created_at: now, updated_at: now, files: BTreeMap::new() },
            );
            Ok(())
        })
    }

    pub fn delete_bucket(&self, id: &str) -> ApiResult<()> {
        self.mutate(|st| st.buckets.remove(id).map(|_| ()).ok_or_else(ApiError::bucket_not_found))
    }

    /// Applies a bucket batch atomically: every add, then every delete.
    pub fn bucket_batch(&self, id: &str, ops: Vec<BatchOp>) -> ApiResult<()> {
        for op in &ops {
            match op {
                BatchOp::Add { path, .. } | BatchOp::Delete { path } => validate_path(path)?,
            }
        }
        self.mutate(|st| {
            let b = st.buckets.get_mut(id).ok_or_else(ApiError::bucket_not_found)?;
            let now = Utc::now();
            for op in ops {
                match op {
                    BatchOp::Add { path, xet_hash, size, mtime } => {
                        b.files.insert(path, BucketFile { size, xet_hash, mtime, uploaded_at: now });
                    }
                    BatchOp::Delete { path } => {
                        b.files.remove(&path);
                    }
                }
            }
            b.updated_at = now;
            Ok(())
        })
    }

    /// Records Xet files learned from a shard (sha256 → file), once per shard.
    pub fn index_shard(&self, shard_hash: &str, files: Vec<(String, XetFileRecord)>) -> ApiResult<()> {
        self.mutate(|st| {
            st.indexed_shards.insert(shard_hash.to_string());
            st.sha256_index.extend(files);
            Ok(())
        })
    }
}

fn kind_word(kind: RepoKind) -> &'static str {
    match kind {
        RepoKind::Model => "model",
        RepoKind::Dataset => "dataset",
        RepoKind::Space => "space",
    }
}
