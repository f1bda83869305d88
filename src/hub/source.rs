//! What is mounted: a repo at a revision, or a bucket, optionally a
//! subfolder of it. Parsing, validation and URL building live here so that
//! every request encodes ids, revisions and paths the same way.

use std::fmt;

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// Everything but unreserved characters: used for revisions (which may hold `/`).
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');
/// Path encoding keeps `/` between segments.
const PATH: &AsciiSet = &SEGMENT.remove(b'/');

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RepoType {
    Model,
    Dataset,
    Space,
}

impl RepoType {
    pub fn api_plural(self) -> &'static str {
        match self {
            RepoType::Model => "models",
            RepoType::Dataset => "datasets",
            RepoType::Space => "spaces",
        }
    }

    pub fn url_prefix(self) -> &'static str {
        match self {
            RepoType::Model => "",
            RepoType::Dataset => "datasets/",
            RepoType::Space => "spaces/",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SourceKind {
    Repo(RepoType),
    Bucket,
}

/// A mount source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Source {
    pub kind: SourceKind,
    /// `owner/name` (or a legacy one-segment id); canonicalized after the first probe.
    pub id: String,
    /// Branch, tag, sha or `refs/pr/N`; repos only.
    pub revision: Option<String>,
    /// A folder inside the repo or bucket to mount as the root ("" for the whole thing).
    pub subfolder: String,
}

fn valid_segment(s: &str) -> bool {
    !s.is_empty()
        && s != "."
        && s != ".."
        && s.len() <= 96
        && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

/// Rejects revisions that cannot name a ref: `..`, query characters, control characters.
pub fn validate_revision(rev: &str) -> Result<(), String> {
    let bad = rev.is_empty()
        || rev.len() > 256
        || rev.contains("..")
        || rev.starts_with('/')
        || rev.ends_with('/')
        || rev.chars().any(|c| c.is_control() || "?#%\\ ~^:*[".contains(c));
    if bad {
        return Err(format!("invalid revision {rev:?}: expected a branch, tag, commit sha or refs/pr/N"));
    }
    Ok(())
}

fn split_subfolder(rest: &[&str]) -> Result<String, String> {
    if rest.iter().any(|s| s.is_empty() || *s == "." || *s == "..") {
        return Err("invalid subfolder: empty, '.' or '..' segment".into());
    }
    Ok(rest.join("/"))
}

impl Source {
    /// Parses `[datasets/|spaces/|models/]owner/name[/subfolder…]`.
    pub fn repo(spec: &str, revision: Option<&str>) -> Result<Self, String> {
        let spec = spec.trim_matches('/');
        let segs: Vec<&str> = spec.split('/').collect();
        let (kind, rest) = match segs.first().copied() {
            Some("datasets") => (RepoType::Dataset, &segs[1..]),
            Some("spaces") => (RepoType::Space, &segs[1..]),
            Some("models") => (RepoType::Model, &segs[1..]),
            Some("buckets") => {
                return Err(format!("{spec:?} names a bucket: mount it with `bucket {}`", segs[1..].join("/")));
            }
            _ => (RepoType::Model, &segs[..]),
        };
        let id_len = rest.len().min(2);
        if id_len == 0 || !rest[..id_len].iter().all(|s| valid_segment(s)) {
            return Err(format!("invalid repo id {spec:?}: expected [datasets/|spaces/]owner/name[/subfolder]"));
        }
        let revision = revision.map(str::to_owned);
        if let Some(r) = &revision {
            validate_revision(r)?;
        }
        Ok(Self {
            kind: SourceKind::Repo(kind),
            id: rest[..id_len].join("/"),
            revision,
            subfolder: split_subfolder(&rest[id_len..])?,
        })
    }

    /// Parses `ns/name[/subfolder…]`.
    pub fn bucket(spec: &str) -> Result<Self, String> {
        let spec = spec.trim_matches('/');
        let spec = spec.strip_prefix("buckets/").unwrap_or(spec);
        let segs: Vec<&str> = spec.split('/').collect();
        if matches!(segs.first().copied(), Some("datasets" | "spaces" | "models")) {
            return Err(format!("{spec:?} names a repo: mount it with `repo {spec}`"));
        }
        if segs.len() < 2 || !segs[..2].iter().all(|s| valid_segment(s)) {
            return Err(format!("invalid bucket id {spec:?}: expected namespace/name[/subfolder]"));
        }
        Ok(Self {
            kind: SourceKind::Bucket,
            id: segs[..2].join("/"),
            revision: None,
            subfolder: split_subfolder(&segs[2..])?,
        })
    }

    pub fn is_bucket(&self) -> bool {
        self.kind == SourceKind::Bucket
    }

    /// The revision asked for (repos default to `main`).
    pub fn revision_or_main(&self) -> &str {
        self.revision.as_deref().unwrap_or("main")
    }

    /// Whether the revision is a full commit sha: content that can never change.
    pub fn is_pinned(&self) -> bool {
        self.revision.as_deref().is_some_and(|r| r.len() == 40 && r.chars().all(|c| c.is_ascii_hexdigit()))
    }

    /// The path inside the repo of a path inside the mount.
    pub fn repo_path(&self, mount_path: &str) -> String {
        match (self.subfolder.is_empty(), mount_path.is_empty()) {
            (true, _) => mount_path.to_string(),
            (false, true) => self.subfolder.clone(),
            (false, false) => format!("{}/{mount_path}", self.subfolder),
        }
    }

    /// `/api/{models|datasets|spaces|buckets}/{id}`.
    pub fn api_base(&self, endpoint: &str) -> String {
        match &self.kind {
            SourceKind::Repo(t) => format!("{endpoint}/api/{}/{}", t.api_plural(), self.id),
            SourceKind::Bucket => format!("{endpoint}/api/buckets/{}", self.id),
        }
    }

    /// The info route, at `commit` for repos.
    pub fn info_url(&self, endpoint: &str) -> String {
        match &self.kind {
            SourceKind::Repo(_) => {
                format!("{}/revision/{}", self.api_base(endpoint), encode_segment(self.revision_or_main()))
            }
            SourceKind::Bucket => self.api_base(endpoint),
        }
    }

    /// One-level listing of `repo_path` at `commit` (repos) or by prefix (buckets).
    pub fn tree_url(&self, endpoint: &str, commit: &str, repo_path: &str) -> String {
        let base = self.api_base(endpoint);
        match &self.kind {
            SourceKind::Repo(_) => {
                let path = if repo_path.is_empty() { String::new() } else { format!("/{}", encode_path(repo_path)) };
                format!("{base}/tree/{}{path}", encode_segment(commit))
            }
            SourceKind::Bucket => {
                let prefix = if repo_path.is_empty() { String::new() } else { format!("/{}", encode_path(repo_path)) };
                format!("{base}/tree{prefix}")
            }
        }
    }

    /// The resolve URL of one file (HEAD for metadata, GET for bytes).
    pub fn resolve_url(&self, endpoint: &str, commit: &str, repo_path: &str) -> String {
        match &self.kind {
            SourceKind::Repo(t) => format!(
                "{endpoint}/{}{}/resolve/{}/{}",
                t.url_prefix(),
                self.id,
                encode_segment(commit),
                encode_path(repo_path)
            ),
            SourceKind::Bucket => format!("{endpoint}/buckets/{}/resolve/{}", self.id, encode_path(repo_path)),
        }
    }

    /// The CAS read-credentials route.
    pub fn xet_read_token_url(&self, endpoint: &str, commit: &str) -> String {
        match &self.kind {
            SourceKind::Repo(_) => format!("{}/xet-read-token/{}", self.api_base(endpoint), encode_segment(commit)),
            SourceKind::Bucket => format!("{}/xet-read-token", self.api_base(endpoint)),
        }
    }
}

impl Source {
    /// The CAS write-credentials route (buckets; repos take writes through commits).
    pub fn xet_write_token_url(&self, endpoint: &str) -> String {
        match &self.kind {
            SourceKind::Repo(_) => format!("{}/xet-write-token/main", self.api_base(endpoint)),
            SourceKind::Bucket => format!("{}/xet-write-token", self.api_base(endpoint)),
        }
    }

    /// A name for this source that can be a directory name: the mount's subdirectory of the
    /// cache dir (cache, staging files, journal). The same source on the same Hub always gets
    /// the same name, so a crashed mount is recovered by mounting it again.
    pub fn cache_key(&self, endpoint: &str) -> String {
        use sha1::{Digest, Sha1};
        let kind = match &self.kind {
            SourceKind::Repo(t) => t.api_plural(),
            SourceKind::Bucket => "buckets",
        };
        let readable: String = format!("{kind}-{}", self.id)
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '.' { c } else { '_' })
            .collect();
        let digest = Sha1::digest(format!("{endpoint}\0{kind}\0{}\0{}", self.id, self.subfolder).as_bytes());
        format!("{readable}-{}", &hex::encode(digest)[..12])
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            SourceKind::Repo(t) => write!(f, "{}{}", t.url_prefix(), self.id)?,
            SourceKind::Bucket => write!(f, "buckets/{}", self.id)?,
        }
        if !self.subfolder.is_empty() {
            write!(f, "/{}", self.subfolder)?;
        }
        if let Some(r) = &self.revision {
            write!(f, "@{r}")?;
        }
        Ok(())
    }
}

pub fn encode_segment(s: &str) -> String {
    utf8_percent_encode(s, SEGMENT).to_string()
}

pub fn encode_path(s: &str) -> String {
    utf8_percent_encode(s, PATH).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_repos_with_types_and_subfolders() {
        let s = Source::repo("datasets/alice/data/train/shards", Some("refs/pr/3")).unwrap();
        assert_eq!(s.kind, SourceKind::Repo(RepoType::Dataset));
        assert_eq!(s.id, "alice/data");
        assert_eq!(s.subfolder, "train/shards");
        assert_eq!(s.repo_path("a.parquet"), "train/shards/a.parquet");
        assert_eq!(s.repo_path(""), "train/shards");
        let legacy = Source::repo("gpt2", None).unwrap();
        assert_eq!(legacy.id, "gpt2");
        assert!(Source::repo("alice/x y", None).is_err());
        assert!(Source::repo("alice/m/../etc", None).is_err());
        assert!(Source::repo("alice/m", Some("a..b")).is_err());
        assert!(Source::repo("alice/m", Some("main?x=1")).is_err());
        assert!(Source::repo("buckets/alice/b", None).unwrap_err().contains("bucket alice/b"));
        assert!(Source::bucket("datasets/alice/d").unwrap_err().contains("repo datasets/alice/d"));
        assert!(Source::bucket("alice").is_err());
        assert!(Source::repo("alice/m", Some(&"a".repeat(40))).unwrap().is_pinned());
        assert!(!Source::repo("alice/m", Some("main")).unwrap().is_pinned());
    }

    #[test]
    fn urls_encode_revisions_and_paths() {
        let s = Source::repo("alice/m", Some("refs/pr/1")).unwrap();
        let e = "http://h";
        assert_eq!(s.info_url(e), "http://h/api/models/alice/m/revision/refs%2Fpr%2F1");
        assert_eq!(s.tree_url(e, "abc", "a b/c#d"), "http://h/api/models/alice/m/tree/abc/a%20b/c%23d");
        assert_eq!(s.resolve_url(e, "abc", "x/100%.txt"), "http://h/alice/m/resolve/abc/x/100%25.txt");
        let b = Source::bucket("alice/b/sub").unwrap();
        assert_eq!(b.tree_url(e, "", "sub/x"), "http://h/api/buckets/alice/b/tree/sub/x");
        assert_eq!(b.resolve_url(e, "", "sub/ü"), "http://h/buckets/alice/b/resolve/sub/%C3%BC");
        assert_eq!(b.xet_read_token_url(e, ""), "http://h/api/buckets/alice/b/xet-read-token");
        assert_eq!(format!("{b}"), "buckets/alice/b/sub");
    }
}
