//! Random sequences of operations on a real FUSE mount, checked after every
//! step against a tiny model of the repo (a map of paths to bytes): reads at
//! random ranges, whole sequential reads, parallel preads on one descriptor,
//! `stat`, directory listings, dropped kernel caches, and remote commits that
//! change, add and delete files. The mount runs with caches and an inode
//! table far smaller than the repo, so eviction, re-listing and refetching
//! happen all the time. A failure prints the seed and the operations so far.

mod common;

use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use common::model::{children, random_commit, seed_from_env, seed_model_repo, tight_options, Rng};
use common::{mount, Hub};

#[test]
fn random_operations_match_a_model_of_the_repo() {
    let seed = seed_from_env(0x5eed_2026);
    let steps: usize = std::env::var("MODEL_STEPS").ok().and_then(|s| s.parse().ok()).unwrap_or(250);
    let hub = Hub::start();
    let mut model = seed_model_repo(&hub);
    let cache = tempfile::tempdir().unwrap();
    let opts = tight_options(&cache.path().display().to_string());
    let m = mount(&hub, &opts.iter().map(String::as_str).collect::<Vec<_>>());

    let mut rng = Rng(seed);
    let mut log: Vec<String> = Vec::new();
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
                let (changed, added, deleted) = random_commit(&hub, &mut model, &mut rng, step, &path);
                log.push(format!("commit: change {path}, add {added}, delete {deleted}"));
                let start = Instant::now();
                let visible = loop {
                    let ok = std::fs::read(m.p(&path)).ok().as_deref() == Some(&changed[..])
                        && std::fs::read(m.p(&added)).ok().as_deref() == Some(&b"new\n"[..])
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
