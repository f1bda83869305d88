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

/// Random writes through a real mount of a bucket (advanced mode, tiny caches and inode
/// table, a short debounce), checked against a model after every step: the whole tree
/// (files with sizes and modes, directories, symlinks) and a few files' bytes; after each
/// clean remount and each SIGKILL and remount, every file's bytes, and once synced, the
/// bucket's contents on the Hub.
#[test]
fn random_writes_match_a_model_of_the_bucket() {
    use common::model::{tree_diff, WriteModel, WriteOp};
    use common::spawn::{spawn_mounted_logged, Guard};
    use std::os::unix::fs::PermissionsExt;

    let seed = seed_from_env(0xb0c_2026);
    let steps: usize = std::env::var("MODEL_STEPS").ok().and_then(|s| s.parse().ok()).unwrap_or(150);
    let hub = Hub::start();
    hub.create_bucket("alice/w");
    let home = tempfile::tempdir().unwrap();
    // SAFETY: only this test reads it (the control socket of the mount it starts).
    unsafe { std::env::set_var("HF_MOUNT_HOME", home.path()) };
    let cache = tempfile::tempdir().unwrap();
    let mnt = tempfile::tempdir().unwrap();
    let mount_log = home.path().join("mount.log");
    let start = || {
        let child = spawn_mounted_logged(
            std::process::Command::new(env!("CARGO_BIN_EXE_hf-mount-fuse"))
                .args(["bucket", "alice/w"])
                .arg(mnt.path())
                .args(["--hf-token", common::WRITE_TOKEN, "--advanced-writes", "--flush-debounce-ms", "200"])
                .args(["--memory-cache-size", "1M", "--cache-size", "3M", "--max-inodes", "30"])
                .args(["--metadata-ttl-ms", "200", "--poll-interval-secs", "1", "--cache-dir"])
                .arg(cache.path())
                .env("HF_ENDPOINT", hub.endpoint())
                .env("HF_MOUNT_HOME", home.path()),
            &mount_log,
        );
        Guard::new(child, Some(mnt.path()))
    };
    // On a failure, what the mount logged says why.
    let tail = || {
        let text = std::fs::read_to_string(&mount_log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().filter(|l| !l.contains("INFO")).collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    };
    let p = |rel: &str| mnt.path().join(rel);
    let mut guard = start();
    let mut model = WriteModel::default();
    let mut remote: std::collections::BTreeMap<String, Vec<u8>> = Default::default();
    let mut rng = Rng(seed);
    let mut log: Vec<String> = Vec::new();

    let walk = |root: &std::path::Path| -> std::collections::BTreeMap<String, String> {
        let mut out = std::collections::BTreeMap::new();
        let mut stack = vec![String::new()];
        while let Some(dir) = stack.pop() {
            for e in std::fs::read_dir(root.join(&dir)).unwrap() {
                let e = e.unwrap();
                let name = e.file_name().into_string().unwrap();
                let rel = if dir.is_empty() { name } else { format!("{dir}/{name}") };
                let meta = std::fs::symlink_metadata(root.join(&rel)).unwrap();
                let what = if meta.file_type().is_symlink() {
                    format!("link -> {}", std::fs::read_link(root.join(&rel)).unwrap().display())
                } else if meta.is_dir() {
                    stack.push(rel.clone());
                    "dir".to_string()
                } else {
                    format!("file {} {:o}", meta.len(), meta.permissions().mode() & 0o777)
                };
                out.insert(rel, what);
            }
        }
        out
    };
    let check_bytes = |model: &WriteModel, paths: &[String], log: &[String], step: usize| {
        for path in paths {
            let got = std::fs::read(p(path)).unwrap_or_else(|e| {
                panic!("seed {seed} step {step}: read {path}: {e}\n{}\nmount log:\n{}", log.join("\n"), tail())
            });
            if &got != model.bytes(path) {
                panic!(
                    "seed {seed} step {step}: {path} bytes differ ({} vs {})\n{}",
                    got.len(),
                    model.bytes(path).len(),
                    log.join("\n")
                );
            }
        }
    };
    let check_hub = |model: &WriteModel, remote: &std::collections::BTreeMap<String, Vec<u8>>, log: &[String]| {
        let a = hf_mount::control::ask(mnt.path(), hf_mount::control::Request::Sync, Duration::from_secs(60)).unwrap();
        assert!(a.ok, "seed {seed}: sync failed: {a:?}\n{}", log.join("\n"));
        let on_hub = hub.bucket_files("alice/w");
        let mut want: Vec<&String> = model.files.keys().chain(remote.keys()).collect();
        want.sort();
        let got: Vec<&String> = on_hub.keys().collect();
        assert_eq!(got, want, "seed {seed}: bucket contents\n{}", log.join("\n"));
        for path in model.files.keys() {
            assert!(
                hub.bucket_bytes("alice/w", path).as_ref() == Some(model.bytes(path)),
                "seed {seed}: {path} on the Hub\n{}",
                log.join("\n")
            );
        }
    };

    for step in 0..steps {
        let Some(op) = model.choose(&mut rng, step) else { continue };
        log.push(op.to_string());
        match &op {
            WriteOp::Create { path, body } => std::fs::write(p(path), body).unwrap(),
            WriteOp::Pwrite { path, off, chunk } => {
                let h = std::fs::OpenOptions::new().write(true).open(p(path)).unwrap();
                std::os::unix::fs::FileExt::write_all_at(&h, chunk, *off).unwrap();
            }
            WriteOp::Append { path, chunk } => {
                let mut h = std::fs::OpenOptions::new().append(true).open(p(path)).unwrap();
                std::io::Write::write_all(&mut h, chunk).unwrap();
            }
            WriteOp::Truncate { path, len } => {
                std::fs::OpenOptions::new().write(true).open(p(path)).unwrap().set_len(*len).unwrap()
            }
            WriteOp::Rename { from, to } | WriteOp::RenameDir { from, to } => std::fs::rename(p(from), p(to)).unwrap(),
            WriteOp::Unlink { path } => std::fs::remove_file(p(path)).unwrap(),
            WriteOp::Mkdir { path } => std::fs::create_dir(p(path)).unwrap(),
            WriteOp::Rmdir { path } => std::fs::remove_dir(p(path))
                .unwrap_or_else(|e| panic!("seed {seed} step {step}: rmdir {path}: {e}\n{}", log.join("\n"))),
            WriteOp::Link { from, to } => std::fs::hard_link(p(from), p(to)).unwrap(),
            WriteOp::Symlink { path, target } => std::os::unix::fs::symlink(target, p(path)).unwrap(),
            WriteOp::Chmod { path, mode } => {
                std::fs::set_permissions(p(path), std::fs::Permissions::from_mode(*mode)).unwrap()
            }
            WriteOp::Remote { path, body } => {
                // A change made on the Hub by someone else, to paths this mount never writes.
                hub.seed_bucket("alice/w", &[(path.as_str(), body.clone())]);
                let t = Instant::now();
                while std::fs::read(p(path)).ok().as_deref() != Some(&body[..]) {
                    assert!(
                        t.elapsed() < Duration::from_secs(15),
                        "seed {seed} step {step}: {path} never showed\n{}",
                        log.join("\n")
                    );
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
            WriteOp::Restart => {
                let mut child = guard.take();
                unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
                assert!(child.wait().unwrap().success());
                guard = start();
            }
            WriteOp::Kill => {
                let mut child = guard.take();
                unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
                let _ = child.wait();
                let _ = std::process::Command::new("fusermount3")
                    .arg("-uz")
                    .arg(mnt.path())
                    .stderr(std::process::Stdio::null())
                    .status();
                guard = start();
            }
        }
        model.apply(&op, &mut remote);
        if matches!(op, WriteOp::Restart | WriteOp::Kill) {
            check_bytes(&model, &model.files.keys().cloned().collect::<Vec<_>>(), &log, step);
            check_hub(&model, &remote, &log);
        }
        let got = walk(mnt.path());
        let diff = tree_diff(&got, &model.expected(&remote));
        if !diff.is_empty() {
            panic!(
                "seed {seed} step {step}: tree differs:\n  {}\noperations:\n  {}\nmount log:\n{}",
                diff.join("\n  "),
                log.join("\n  "),
                tail()
            );
        }
        let sample: Vec<String> = (0..3)
            .filter_map(|_| model.files.keys().nth(rng.below(model.files.len().max(1) as u64) as usize).cloned())
            .collect();
        check_bytes(&model, &sample, &log, step);
    }
    check_hub(&model, &remote, &log);
    let mut child = guard.take();
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(child.wait().unwrap().success());
    println!(
        "{steps} write steps, seed {seed}: {} files, {} dirs, {} symlinks",
        model.files.len(),
        model.dirs.len(),
        model.symlinks.len()
    );
}
