//! Random sequences of operations on a real FUSE mount, checked after every
//! step against a tiny model of the repo (a map of paths to bytes): reads at
//! random ranges, whole sequential reads, parallel preads on one descriptor,
//! `stat`, directory listings, dropped kernel caches, and remote commits that
//! change, add and delete files. The mount runs with caches and an inode
//! table far smaller than the repo, so eviction, re-listing and refetching
//! happen all the time. A failure prints the seed and the operations so far.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::{bytes, mount, Hub};

/// splitmix64: reproducible choices from a seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

type Model = BTreeMap<String, Vec<u8>>;

/// The repo: small text files (git blobs) and larger binary ones (Xet) across a few folders.
fn initial_files() -> Model {
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
fn children(model: &Model, dir: &str) -> Vec<String> {
    let prefix = if dir.is_empty() { String::new() } else { format!("{dir}/") };
    let mut names: Vec<String> = model
        .keys()
        .filter_map(|p| p.strip_prefix(&prefix))
        .map(|rest| rest.split('/').next().unwrap().to_string())
        .collect();
    names.dedup();
    names
}

fn commit(hub: &Hub, ops: Vec<String>) {
    let e = hub.endpoint();
    let mut lines = vec![r#"{"key":"header","value":{"summary":"model step"}}"#.to_string()];
    lines.extend(ops);
    let status = hub.http(async {
        reqwest::Client::new()
            .post(format!("{e}/api/models/alice/model/commit/main"))
            .bearer_auth(common::WRITE_TOKEN)
            .body(lines.join("\n"))
            .send()
            .await
            .unwrap()
            .status()
    });
    assert!(status.is_success(), "{status}");
}

fn put(path: &str, body: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(body);
    format!(r#"{{"key":"file","value":{{"path":"{path}","content":"{b64}","encoding":"base64"}}}}"#)
}

#[test]
fn random_operations_match_a_model_of_the_repo() {
    let seed: u64 = std::env::var("MODEL_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x5eed_2026);
    let steps: usize = std::env::var("MODEL_STEPS").ok().and_then(|s| s.parse().ok()).unwrap_or(250);
    let hub = Hub::start();
    let mut model = initial_files();
    let seeded: Vec<(&str, Vec<u8>)> = model.iter().map(|(p, b)| (p.as_str(), b.clone())).collect();
    hub.seed_repo("alice/model", &seeded, false);
    let cache = tempfile::tempdir().unwrap();
    let dir = cache.path().display().to_string();
    let m = mount(
        &hub,
        &[
            "repo",
            "alice/model",
            "--cache-dir",
            &dir,
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
        ],
    );

    let mut rng = Rng(seed);
    let mut log: Vec<String> = Vec::new();
    let mut next_new = 0;
    for step in 0..steps {
        let paths: Vec<String> = model.keys().cloned().collect();
        let path = paths[rng.below(paths.len() as u64) as usize].clone();
        let want = model[&path].clone();
        let op = rng.below(100);
        let fail = |what: String, log: &[String]| -> ! {
            panic!("seed {seed}, step {step}: {what}\noperations so far:\n  {}", log.join("\n  "))
        };
        match op {
            // A random range through a fresh descriptor.
            0..=34 => {
                let off = rng.below(want.len() as u64 + 10);
                let span = if rng.below(4) == 0 { 1 << 20 } else { 8192 };
                let len = 1 + rng.below(span) as usize;
                log.push(format!("pread {path} @{off} +{len}"));
                let f = std::fs::File::open(m.p(&path)).unwrap_or_else(|e| fail(format!("open: {e}"), &log));
                let mut buf = vec![0u8; len];
                let n = f.read_at(&mut buf, off).unwrap_or_else(|e| fail(format!("read: {e}"), &log));
                let s = (off as usize).min(want.len());
                let expect = &want[s..(s + len).min(want.len())];
                if n < expect.len() && n > 0 {
                    // a short read before EOF is allowed only if the rest follows (never here: one call)
                    fail(format!("short read: {n} of {}", expect.len()), &log);
                }
                if &buf[..n] != expect {
                    fail(format!("bytes differ ({n} read, {} expected)", expect.len()), &log);
                }
            }
            // The whole file, in chunks of random size.
            35..=49 => {
                let chunk = 4096 + rng.below(1 << 20) as usize;
                log.push(format!("read-all {path} in {chunk}-byte chunks"));
                let f = std::fs::File::open(m.p(&path)).unwrap();
                let mut got = Vec::new();
                let mut buf = vec![0u8; chunk];
                loop {
                    let n = f.read_at(&mut buf, got.len() as u64).unwrap_or_else(|e| fail(format!("{e}"), &log));
                    if n == 0 {
                        break;
                    }
                    got.extend_from_slice(&buf[..n]);
                }
                if got != want {
                    fail(format!("whole read differs ({} vs {} bytes)", got.len(), want.len()), &log);
                }
            }
            // Four threads, one descriptor, random ranges.
            50..=59 => {
                log.push(format!("4 threads pread {path}"));
                let f = std::fs::File::open(m.p(&path)).unwrap();
                let offsets: Vec<u64> = (0..16).map(|_| rng.below(want.len() as u64)).collect();
                std::thread::scope(|s| {
                    for part in offsets.chunks(4) {
                        let (f, want) = (&f, &want);
                        s.spawn(move || {
                            for &off in part {
                                let mut buf = vec![0u8; 65536];
                                let n = f.read_at(&mut buf, off).unwrap();
                                let end = (off as usize + 65536).min(want.len());
                                assert_eq!(&buf[..n], &want[off as usize..end], "parallel pread at {off}");
                            }
                        });
                    }
                });
            }
            60..=69 => {
                log.push(format!("stat {path}"));
                let len = std::fs::metadata(m.p(&path)).unwrap_or_else(|e| fail(format!("{e}"), &log)).len();
                if len != want.len() as u64 {
                    fail(format!("size {len}, model {}", want.len()), &log);
                }
            }
            70..=79 => {
                let dir = path.rsplit_once('/').map_or("", |(d, _)| d).to_string();
                log.push(format!("ls {dir:?}"));
                let mut names: Vec<String> = std::fs::read_dir(m.p(&dir))
                    .unwrap_or_else(|e| fail(format!("{e}"), &log))
                    .map(|e| e.unwrap().file_name().into_string().unwrap())
                    .collect();
                names.sort();
                let expect = children(&model, &dir);
                if names != expect {
                    fail(format!("listing {names:?}, model {expect:?}"), &log);
                }
            }
            80..=84 => {
                log.push("drop kernel caches".into());
                std::fs::write("/proc/sys/vm/drop_caches", "3").unwrap();
            }
            // A remote commit: change one file, add one, delete one; then wait until the mount
            // shows all three (metadata TTL + poll).
            _ => {
                let changed = format!("changed at step {step}\n").repeat(1 + rng.below(3000) as usize).into_bytes();
                let added = format!("d{}/new{next_new}.txt", rng.below(4));
                next_new += 1;
                let victims: Vec<&String> = model.keys().filter(|p| **p != path).collect();
                let deleted = victims[rng.below(victims.len() as u64) as usize].clone();
                log.push(format!("commit: change {path}, add {added}, delete {deleted}"));
                commit(
                    &hub,
                    vec![
                        put(&path, &changed),
                        put(&added, b"new\n"),
                        format!(r#"{{"key":"deletedFile","value":{{"path":"{deleted}"}}}}"#),
                    ],
                );
                model.insert(path.clone(), changed.clone());
                model.insert(added.clone(), b"new\n".to_vec());
                model.remove(&deleted);
                let start = Instant::now();
                let visible = loop {
                    let ok = std::fs::read(m.p(&path)).ok().as_deref() == Some(&changed[..])
                        && std::fs::read(m.p(&added)).ok().as_deref() == Some(b"new\n")
                        && !m.p(&deleted).exists();
                    if ok || start.elapsed() > Duration::from_secs(10) {
                        break ok;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                };
                if !visible {
                    fail("the commit never became visible".into(), &log);
                }
            }
        }
    }
    let stats = m.block_on(m.engine().cache_stats()).unwrap();
    let inodes = m.block_on(m.engine().inode_count()).unwrap();
    println!("{steps} steps, seed {seed}: {stats:?}, {inodes} inodes");
    assert!(stats.evictions > 0, "the small caches never evicted: {stats:?}");
}
