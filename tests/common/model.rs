//! The model the random-operation tests check a mount against: a map of
//! paths to bytes, the repo it starts as, and remote commits that change it.

use std::collections::BTreeMap;

use base64::Engine as _;

use super::{bytes, Hub};

/// splitmix64: reproducible choices from a seed.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

pub type Model = BTreeMap<String, Vec<u8>>;

/// The repo: small text files (git blobs) and larger binary ones (Xet) across a few folders.
pub fn initial_files() -> Model {
    let mut files = Model::new();
    for d in 0..4 {
        for i in 0..6 {
            let path = format!("d{d}/f{i}.{}", if i % 2 == 0 { "bin" } else { "txt" });
            let body = if i % 2 == 0 {
                bytes((d * 10 + i) as u64, 200_000 + (d * 6 + i) * 113_000)
            } else {
                format!("text {d}/{i}\n").repeat(1 + i * 50).into_bytes()
            };
            files.insert(path, body);
        }
    }
    files.insert("top.bin".into(), bytes(99, 3_000_000));
    files
}

/// The names directly under `dir` ("" for the root), as the model has them.
pub fn children(model: &Model, dir: &str) -> Vec<String> {
    let prefix = if dir.is_empty() { String::new() } else { format!("{dir}/") };
    let mut names: Vec<String> = model
        .keys()
        .filter_map(|p| p.strip_prefix(&prefix))
        .map(|rest| rest.split('/').next().unwrap().to_string())
        .collect();
    names.dedup();
    names
}

/// Commits `ops` (NDJSON lines) to `main` of `repo`.
pub fn commit(hub: &Hub, repo: &str, ops: Vec<String>) {
    let mut lines = vec![r#"{"key":"header","value":{"summary":"model step"}}"#.to_string()];
    lines.extend(ops);
    let status = hub.commit(repo, "", &lines);
    assert!(status.is_success(), "{status}");
}

pub fn put(path: &str, body: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(body);
    format!(r#"{{"key":"file","value":{{"path":"{path}","content":"{b64}","encoding":"base64"}}}}"#)
}

/// `MODEL_SEED` from the environment, else `default`.
pub fn seed_from_env(default: u64) -> u64 {
    std::env::var("MODEL_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(default)
}

/// Seeds `alice/model` with the initial files and returns the model of it.
pub fn seed_model_repo(hub: &Hub) -> Model {
    let model = initial_files();
    let seeded: Vec<(&str, Vec<u8>)> = model.iter().map(|(p, b)| (p.as_str(), b.clone())).collect();
    hub.seed_repo("alice/model", &seeded, false);
    model
}

/// Mount options that keep eviction and re-listing busy: caches and inode table far smaller
/// than the repo, short metadata TTL, polling every second.
pub fn tight_options(cache_dir: &str) -> Vec<String> {
    let opts = [
        "repo",
        "alice/model",
        "--cache-dir",
        cache_dir,
        "--cache-size",
        "3M",
        "--memory-cache-size",
        "1M",
        "--max-inodes",
        "20",
        "--metadata-ttl-ms",
        "200",
        "--poll-interval-secs",
        "1",
    ];
    opts.iter().map(|s| s.to_string()).collect()
}

/// A remote commit that changes `path`, adds a file and deletes another, applied to the model
/// too. Returns `(changed content, added path, deleted path)`.
pub fn random_commit(
    hub: &Hub,
    model: &mut Model,
    rng: &mut Rng,
    step: usize,
    path: &str,
) -> (Vec<u8>, String, String) {
    let changed = format!("changed at step {step}\n").repeat(1 + rng.below(3000) as usize).into_bytes();
    let added = format!("d{}/new{step}.txt", rng.below(4));
    let victims: Vec<&String> = model.keys().filter(|p| *p != path).collect();
    let deleted = victims[rng.below(victims.len() as u64) as usize].clone();
    let delete = format!(r#"{{"key":"deletedFile","value":{{"path":"{deleted}"}}}}"#);
    commit(hub, "alice/model", vec![put(path, &changed), put(&added, b"new\n"), delete]);
    model.insert(path.to_string(), changed.clone());
    model.insert(added.clone(), b"new\n".to_vec());
    model.remove(&deleted);
    (changed, added, deleted)
}

/// The model of a bucket written through a mount: paths name inodes (hard links share one),
/// inodes hold bytes; directories, symlinks and modes are local.
#[derive(Default, Clone, Debug)]
pub struct WriteModel {
    pub files: BTreeMap<String, u64>,
    pub content: BTreeMap<u64, Vec<u8>>,
    pub modes: BTreeMap<u64, u32>,
    pub dirs: std::collections::BTreeSet<String>,
    pub symlinks: BTreeMap<String, String>,
    next: u64,
}

impl WriteModel {
    pub fn add_file(&mut self, path: &str, body: Vec<u8>) {
        self.next += 1;
        self.files.insert(path.to_string(), self.next);
        self.content.insert(self.next, body);
        self.modes.insert(self.next, 0o644);
    }

    pub fn bytes(&self, path: &str) -> &Vec<u8> {
        &self.content[&self.files[path]]
    }

    pub fn bytes_mut(&mut self, path: &str) -> &mut Vec<u8> {
        let id = self.files[path];
        self.content.get_mut(&id).unwrap()
    }

    /// Hard links last as long as the mount: the Hub holds each name as its own copy, so after
    /// a remount every name is a file of its own.
    pub fn split_links(&mut self) {
        let paths: Vec<(String, u64)> = self.files.iter().map(|(p, id)| (p.clone(), *id)).collect();
        let mut seen = std::collections::BTreeSet::new();
        for (p, id) in paths {
            if seen.insert(id) {
                continue;
            }
            self.next += 1;
            let (body, mode) = (self.content[&id].clone(), self.modes[&id]);
            self.content.insert(self.next, body);
            self.modes.insert(self.next, mode);
            self.files.insert(p, self.next);
        }
    }

    /// Makes the directories above `path` explicit: they stay when it goes (as on POSIX).
    pub fn pin_parents(&mut self, path: &str) {
        let mut at = path;
        while let Some((dir, _)) = at.rsplit_once('/') {
            self.dirs.insert(dir.to_string());
            at = dir;
        }
    }

    /// Every entry: path → what it is (`file <len> <mode>`, `dir`, `link -> target`).
    pub fn listing(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for p in self.files.keys().chain(self.symlinks.keys()).chain(self.dirs.iter()) {
            let mut at = p.as_str();
            while let Some((dir, _)) = at.rsplit_once('/') {
                out.insert(dir.to_string(), "dir".to_string());
                at = dir;
            }
        }
        for (p, id) in &self.files {
            out.insert(p.clone(), format!("file {} {:o}", self.content[id].len(), self.modes[id]));
        }
        for d in &self.dirs {
            out.insert(d.clone(), "dir".into());
        }
        for (p, t) in &self.symlinks {
            out.insert(p.clone(), format!("link -> {t}"));
        }
        out
    }

    /// Whether `path` or anything below it exists.
    pub fn exists(&self, path: &str) -> bool {
        let below = format!("{path}/");
        self.files.contains_key(path)
            || self.dirs.contains(path)
            || self.symlinks.contains_key(path)
            || self.files.keys().any(|p| p.starts_with(&below))
    }

    /// Moves `from` (a file, symlink or directory with everything below) to `to`.
    pub fn rename(&mut self, from: &str, to: &str) {
        let below = format!("{from}/");
        let moved = |p: &str| -> Option<String> {
            if p == from {
                Some(to.to_string())
            } else {
                p.strip_prefix(&below).map(|rest| format!("{to}/{rest}"))
            }
        };
        self.files = std::mem::take(&mut self.files).into_iter().map(|(p, v)| (moved(&p).unwrap_or(p), v)).collect();
        self.dirs = std::mem::take(&mut self.dirs).into_iter().map(|p| moved(&p).unwrap_or(p)).collect();
        self.symlinks =
            std::mem::take(&mut self.symlinks).into_iter().map(|(p, v)| (moved(&p).unwrap_or(p), v)).collect();
    }
}
