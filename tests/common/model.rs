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
