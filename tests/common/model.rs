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

/// One random write-test step, chosen from the model; each test carries it out on its own
/// filesystem (FUSE through `std::fs`, NFS through a client), then `WriteModel::apply`s it.
#[derive(Clone)]
pub enum WriteOp {
    Create {
        path: String,
        body: Vec<u8>,
    },
    Pwrite {
        path: String,
        off: u64,
        chunk: Vec<u8>,
    },
    Append {
        path: String,
        chunk: Vec<u8>,
    },
    Truncate {
        path: String,
        len: u64,
    },
    /// A file to a new name, or over an existing file.
    Rename {
        from: String,
        to: String,
    },
    RenameDir {
        from: String,
        to: String,
    },
    Unlink {
        path: String,
    },
    Mkdir {
        path: String,
    },
    Rmdir {
        path: String,
    },
    Link {
        from: String,
        to: String,
    },
    Symlink {
        path: String,
        target: String,
    },
    Chmod {
        path: String,
        mode: u32,
    },
    /// Someone else writes `path` (under `remote/`) on the Hub.
    Remote {
        path: String,
        body: Vec<u8>,
    },
    /// A clean stop and start of the mount (or server).
    Restart,
    /// SIGKILL, then a start.
    Kill,
}

impl std::fmt::Display for WriteOp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WriteOp::Create { path, body } => write!(f, "create {path} ({} bytes)", body.len()),
            WriteOp::Pwrite { path, off, chunk } => write!(f, "pwrite {path} @{off} +{}", chunk.len()),
            WriteOp::Append { path, chunk } => write!(f, "append {path} +{}", chunk.len()),
            WriteOp::Truncate { path, len } => write!(f, "truncate {path} to {len}"),
            WriteOp::Rename { from, to } => write!(f, "rename {from} -> {to}"),
            WriteOp::RenameDir { from, to } => write!(f, "rename dir {from} -> {to}"),
            WriteOp::Unlink { path } => write!(f, "unlink {path}"),
            WriteOp::Mkdir { path } => write!(f, "mkdir {path}"),
            WriteOp::Rmdir { path } => write!(f, "rmdir {path}"),
            WriteOp::Link { from, to } => write!(f, "link {from} -> {to}"),
            WriteOp::Symlink { path, target } => write!(f, "symlink {path} -> {target}"),
            WriteOp::Chmod { path, mode } => write!(f, "chmod {path} {mode:o}"),
            WriteOp::Remote { path, .. } => write!(f, "remote write {path}"),
            WriteOp::Restart => write!(f, "stop, start again"),
            WriteOp::Kill => write!(f, "SIGKILL, start again"),
        }
    }
}

/// Names new entries are made from: spaces, `#`, `%` and unicode round-trip.
const FRESH_NAMES: [&str; 6] = ["a", "b c", "d#1", "\u{fc}", "e%2", "f.bin"];

impl WriteModel {
    /// The next operation for step `step` (`None`: none fits this draw; draw again).
    pub fn choose(&self, rng: &mut Rng, step: usize) -> Option<WriteOp> {
        let files: Vec<String> = self.files.keys().cloned().collect();
        let listing = self.listing();
        let dirs: Vec<String> = std::iter::once(String::new())
            .chain(listing.iter().filter(|(p, w)| *w == "dir" && p.as_str() != "remote").map(|(p, _)| p.clone()))
            .collect();
        let dir = dirs[rng.below(dirs.len() as u64) as usize].clone();
        let n = format!("{}{step}", FRESH_NAMES[rng.below(FRESH_NAMES.len() as u64) as usize]);
        let fresh = if dir.is_empty() { n } else { format!("{dir}/{n}") };
        let pick = |rng: &mut Rng| files.get(rng.below(files.len().max(1) as u64) as usize).cloned();
        let op = rng.below(100);
        Some(match (op, pick(rng)) {
            (0..=19, _) | (_, None) => {
                WriteOp::Create { path: fresh, body: bytes(rng.next(), rng.below(300_000) as usize) }
            }
            (20..=32, Some(path)) => {
                let off = rng.below(self.bytes(&path).len() as u64 + 5000);
                WriteOp::Pwrite { path, off, chunk: bytes(rng.next(), 1 + rng.below(70_000) as usize) }
            }
            (33..=40, Some(path)) => WriteOp::Append { path, chunk: bytes(rng.next(), 1 + rng.below(20_000) as usize) },
            (41..=46, Some(path)) => {
                let len = rng.below(self.bytes(&path).len() as u64 + 10_000);
                WriteOp::Truncate { path, len }
            }
            (47..=54, Some(from)) => {
                let to = if rng.below(3) == 0 { pick(rng).unwrap() } else { fresh };
                if to.starts_with(&format!("{from}/")) || to == from {
                    return None;
                }
                WriteOp::Rename { from, to }
            }
            (55..=58, _) if !dir.is_empty() && !fresh.starts_with(&format!("{dir}/")) => {
                let to = fresh.rsplit('/').next().unwrap().to_string();
                if self.exists(&to) {
                    return None;
                }
                WriteOp::RenameDir { from: dir, to }
            }
            (59..=65, Some(path)) => WriteOp::Unlink { path },
            (66..=71, _) => WriteOp::Mkdir { path: fresh },
            (72..=74, _) => {
                let empty = listing.iter().find(|(d, w)| {
                    *w == "dir" && d.as_str() != "remote" && !listing.keys().any(|k| k.starts_with(&format!("{d}/")))
                });
                WriteOp::Rmdir { path: empty?.0.clone() }
            }
            (75..=78, Some(from)) => WriteOp::Link { from, to: fresh },
            (79..=81, Some(target)) => WriteOp::Symlink { path: fresh, target },
            (82..=86, Some(path)) => WriteOp::Chmod { path, mode: [0o600, 0o644, 0o755][rng.below(3) as usize] },
            (87..=90, _) => {
                let path = format!("remote/r{}.txt", rng.below(5));
                WriteOp::Remote { path, body: format!("remote at step {step}\n").into_bytes() }
            }
            (91..=95, _) => WriteOp::Restart,
            _ => WriteOp::Kill,
        })
    }

    /// What `op` does to the model (`remote`: the files others wrote on the Hub).
    pub fn apply(&mut self, op: &WriteOp, remote: &mut BTreeMap<String, Vec<u8>>) {
        match op {
            WriteOp::Create { path, body } => self.add_file(path, body.clone()),
            WriteOp::Pwrite { path, off, chunk } => {
                let b = self.bytes_mut(path);
                let end = *off as usize + chunk.len();
                if b.len() < end {
                    b.resize(end, 0);
                }
                b[*off as usize..end].copy_from_slice(chunk);
            }
            WriteOp::Append { path, chunk } => self.bytes_mut(path).extend_from_slice(chunk),
            WriteOp::Truncate { path, len } => self.bytes_mut(path).resize(*len as usize, 0),
            WriteOp::Rename { from, to } if self.files.get(from).is_some_and(|id| self.files.get(to) == Some(id)) => {
                // Two names of one file: rename(2) does nothing (POSIX).
            }
            WriteOp::Rename { from, to } | WriteOp::RenameDir { from, to } => {
                self.pin_parents(from);
                self.files.remove(to);
                self.rename(from, to);
            }
            WriteOp::Unlink { path } => {
                self.pin_parents(path);
                self.files.remove(path);
            }
            WriteOp::Mkdir { path } => {
                self.dirs.insert(path.clone());
            }
            WriteOp::Rmdir { path } => {
                self.pin_parents(path);
                self.dirs.remove(path);
            }
            WriteOp::Link { from, to } => {
                let id = self.files[from];
                self.files.insert(to.clone(), id);
            }
            WriteOp::Symlink { path, target } => {
                self.symlinks.insert(path.clone(), target.clone());
            }
            WriteOp::Chmod { path, mode } => {
                let id = self.files[path];
                self.modes.insert(id, *mode);
            }
            WriteOp::Remote { path, body } => {
                remote.insert(path.clone(), body.clone());
            }
            WriteOp::Restart | WriteOp::Kill => self.split_links(),
        }
    }

    /// The whole tree a mount must show: the model's entries and the files others wrote.
    pub fn expected(&self, remote: &BTreeMap<String, Vec<u8>>) -> BTreeMap<String, String> {
        let mut want = self.listing();
        for (p, b) in remote {
            want.insert(p.clone(), format!("file {} 644", b.len()));
            want.insert("remote".into(), "dir".into());
        }
        want
    }
}

/// The differences between the tree a mount showed and the model's, one line each.
pub fn tree_diff(got: &BTreeMap<String, String>, want: &BTreeMap<String, String>) -> Vec<String> {
    want.iter()
        .filter(|(k, v)| got.get(*k) != Some(v))
        .map(|(k, v)| format!("{k}: model {v}, mount {:?}", got.get(k)))
        .chain(got.iter().filter(|(k, _)| !want.contains_key(*k)).map(|(k, v)| format!("{k}: mount {v}, not in model")))
        .collect()
}
