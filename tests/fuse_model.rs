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
use common::{bytes, mount, Hub};

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
    use common::model::WriteModel;
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
    let names = ["a", "b c", "d#1", "\u{fc}", "e%2", "f.bin"];

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
    let expected = |model: &WriteModel, remote: &std::collections::BTreeMap<String, Vec<u8>>| {
        let mut want = model.listing();
        for (p, b) in remote {
            want.insert(p.clone(), format!("file {} 644", b.len()));
            want.insert("remote".into(), "dir".into());
        }
        want
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
        let files: Vec<String> = model.files.keys().cloned().collect();
        let dirs: Vec<String> = std::iter::once(String::new())
            .chain(model.listing().into_iter().filter(|(_, w)| w == "dir").map(|(p, _)| p))
            .collect();
        let dir = dirs[rng.below(dirs.len() as u64) as usize].clone();
        let fresh = {
            let n = format!("{}{}", names[rng.below(names.len() as u64) as usize], step);
            if dir.is_empty() {
                n
            } else {
                format!("{dir}/{n}")
            }
        };
        let pick = |rng: &mut Rng| files.get(rng.below(files.len().max(1) as u64) as usize).cloned();
        let op = rng.below(100);
        match (op, pick(&mut rng)) {
            (0..=19, _) | (_, None) => {
                let body = bytes(rng.next(), rng.below(300_000) as usize);
                log.push(format!("create {fresh} ({} bytes)", body.len()));
                std::fs::write(p(&fresh), &body).unwrap();
                model.add_file(&fresh, body);
            }
            (20..=32, Some(f)) => {
                let len = model.bytes(&f).len() as u64;
                let off = rng.below(len + 5000);
                let chunk = bytes(rng.next(), 1 + rng.below(70_000) as usize);
                log.push(format!("pwrite {f} @{off} +{}", chunk.len()));
                let h = std::fs::OpenOptions::new().write(true).open(p(&f)).unwrap();
                std::os::unix::fs::FileExt::write_all_at(&h, &chunk, off).unwrap();
                drop(h);
                let b = model.bytes_mut(&f);
                let end = off as usize + chunk.len();
                if b.len() < end {
                    b.resize(end, 0);
                }
                b[off as usize..end].copy_from_slice(&chunk);
            }
            (33..=40, Some(f)) => {
                let chunk = bytes(rng.next(), 1 + rng.below(20_000) as usize);
                log.push(format!("append {f} +{}", chunk.len()));
                let mut h = std::fs::OpenOptions::new().append(true).open(p(&f)).unwrap();
                std::io::Write::write_all(&mut h, &chunk).unwrap();
                drop(h);
                model.bytes_mut(&f).extend_from_slice(&chunk);
            }
            (41..=46, Some(f)) => {
                let len = rng.below(model.bytes(&f).len() as u64 + 10_000);
                log.push(format!("truncate {f} to {len}"));
                std::fs::OpenOptions::new().write(true).open(p(&f)).unwrap().set_len(len).unwrap();
                model.bytes_mut(&f).resize(len as usize, 0);
            }
            (47..=54, Some(f)) => {
                // Over an existing file sometimes.
                let to = if rng.below(3) == 0 { pick(&mut rng).unwrap() } else { fresh.clone() };
                if to.starts_with(&format!("{f}/")) || to == f {
                    continue;
                }
                log.push(format!("rename {f} -> {to}"));
                std::fs::rename(p(&f), p(&to)).unwrap();
                model.pin_parents(&f);
                model.files.remove(&to);
                model.rename(&f, &to);
            }
            (55..=58, _) if !dir.is_empty() && !fresh.starts_with(&format!("{dir}/")) => {
                let to = fresh.rsplit('/').next().unwrap().to_string();
                if model.exists(&to) {
                    continue;
                }
                log.push(format!("rename dir {dir} -> {to}"));
                std::fs::rename(p(&dir), p(&to)).unwrap();
                model.pin_parents(&dir);
                model.rename(&dir, &to);
            }
            (59..=65, Some(f)) => {
                log.push(format!("unlink {f}"));
                std::fs::remove_file(p(&f)).unwrap();
                model.pin_parents(&f);
                model.files.remove(&f);
            }
            (66..=71, _) => {
                log.push(format!("mkdir {fresh}"));
                std::fs::create_dir(p(&fresh)).unwrap();
                model.dirs.insert(fresh.clone());
            }
            (72..=74, _) => {
                let listing = model.listing();
                let empty: Vec<&String> = listing
                    .iter()
                    .filter(|(d, w)| {
                        *w == "dir"
                            && d.as_str() != "remote"
                            && !listing.keys().any(|k| k.starts_with(&format!("{d}/")))
                    })
                    .map(|(d, _)| d)
                    .collect();
                let Some(d) = empty.first().map(|d| d.to_string()) else { continue };
                log.push(format!("rmdir {d}"));
                std::fs::remove_dir(p(&d))
                    .unwrap_or_else(|e| panic!("seed {seed} step {step}: rmdir {d}: {e}\n{}", log.join("\n")));
                model.pin_parents(&d);
                model.dirs.remove(&d);
            }
            (75..=78, Some(f)) => {
                log.push(format!("link {f} -> {fresh}"));
                std::fs::hard_link(p(&f), p(&fresh)).unwrap();
                let id = model.files[&f];
                model.files.insert(fresh.clone(), id);
            }
            (79..=81, Some(f)) => {
                log.push(format!("symlink {fresh} -> {f}"));
                std::os::unix::fs::symlink(&f, p(&fresh)).unwrap();
                model.symlinks.insert(fresh.clone(), f.clone());
            }
            (82..=86, Some(f)) => {
                let mode = [0o600, 0o644, 0o755][rng.below(3) as usize];
                log.push(format!("chmod {f} {mode:o}"));
                std::fs::set_permissions(p(&f), std::fs::Permissions::from_mode(mode)).unwrap();
                let id = model.files[&f];
                model.modes.insert(id, mode);
            }
            (87..=90, _) => {
                // A change made on the Hub by someone else, to paths this mount never writes.
                let name = format!("remote/r{}.txt", rng.below(5));
                let body = format!("remote at step {step}\n").into_bytes();
                log.push(format!("remote write {name}"));
                hub.seed_bucket("alice/w", &[(name.as_str(), body.clone())]);
                remote.insert(name.clone(), body.clone());
                let t = Instant::now();
                while std::fs::read(p(&name)).ok().as_deref() != Some(&body[..]) {
                    assert!(
                        t.elapsed() < Duration::from_secs(15),
                        "seed {seed} step {step}: {name} never showed\n{}",
                        log.join("\n")
                    );
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
            (91..=95, _) => {
                log.push("unmount, mount again".into());
                let mut child = guard.take();
                unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
                assert!(child.wait().unwrap().success());
                guard = start();
                model.split_links();
                check_hub(&model, &remote, &log);
                check_bytes(&model, &model.files.keys().cloned().collect::<Vec<_>>(), &log, step);
            }
            _ => {
                log.push("SIGKILL, mount again".into());
                let mut child = guard.take();
                unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
                let _ = child.wait();
                let _ = std::process::Command::new("fusermount3")
                    .arg("-uz")
                    .arg(mnt.path())
                    .stderr(std::process::Stdio::null())
                    .status();
                guard = start();
                model.split_links();
                check_bytes(&model, &model.files.keys().cloned().collect::<Vec<_>>(), &log, step);
                check_hub(&model, &remote, &log);
            }
        }
        let got = walk(mnt.path());
        let want = expected(&model, &remote);
        if got != want {
            let diff: Vec<String> = want
                .iter()
                .filter(|(k, v)| got.get(*k) != Some(v))
                .map(|(k, v)| format!("{k}: model {v}, mount {:?}", got.get(k)))
                .chain(
                    got.iter()
                        .filter(|(k, _)| !want.contains_key(*k))
                        .map(|(k, v)| format!("{k}: mount {v}, not in model")),
                )
                .collect();
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
