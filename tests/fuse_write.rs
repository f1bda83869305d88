//! Writes to buckets over real FUSE mounts, checked on the Hub side (the
//! emulator's store and CAS) byte for byte: streaming writes committed when
//! `close` returns, staged writes (advanced mode, and appends in the default
//! mode), the namespace (mkdir, rmdir, unlink, rename, link, symlink), local
//! attributes surviving a remount, names, and the flusher's debounce.

mod common;

use std::io::{Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::time::{Duration, Instant};

use common::{bytes, mount, sh, try_mount, wait_until, Hub, WRITE_TOKEN};
use hf_hub_emulator::RouteClass;

const COMMIT_WAIT: Duration = Duration::from_secs(20);

fn rw(bucket: &str, extra: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = ["bucket", bucket, "--hf-token", WRITE_TOKEN].iter().map(|s| s.to_string()).collect();
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

fn mount_rw(hub: &Hub, bucket: &str, extra: &[&str]) -> common::Mounted {
    let args = rw(bucket, extra);
    mount(hub, &args.iter().map(String::as_str).collect::<Vec<_>>())
}

/// Asserts the Hub has `want` at `path` (lengths and the first difference, not the bytes).
#[track_caller]
fn assert_hub(hub: &Hub, bucket: &str, path: &str, want: &[u8]) {
    match hub.bucket_bytes(bucket, path) {
        None => panic!("{path}: not on the Hub"),
        Some(got) if got != want => {
            let at = got.iter().zip(want).position(|(a, b)| a != b).unwrap_or(got.len().min(want.len()));
            panic!("{path}: {} bytes on the Hub, {} expected, first difference at {at}", got.len(), want.len())
        }
        Some(_) => {}
    }
}

fn hub_has(hub: &Hub, bucket: &str, path: &str, want: &[u8]) -> bool {
    hub.bucket_bytes(bucket, path).as_deref() == Some(want)
}

fn errno(r: std::io::Result<impl Sized>) -> i32 {
    r.err().and_then(|e| e.raw_os_error()).unwrap_or(0)
}

#[test]
fn streaming_writes_are_committed_when_close_returns() {
    let hub = Hub::start();
    hub.seed_bucket("alice/b", &[("old.txt", b"old line\n".to_vec()), ("model.bin", bytes(3, 300_000))]);
    let m = mount_rw(&hub, "alice/b", &[]);
    // A new file: on the Hub, byte-exact, the moment close returns.
    let big = bytes(7, 3 << 20 | 12345);
    std::fs::create_dir(m.p("ckpt")).unwrap();
    std::fs::write(m.p("ckpt/step1.bin"), &big).unwrap();
    assert_hub(&hub, "alice/b", "ckpt/step1.bin", &big);
    assert!(std::fs::read(m.p("ckpt/step1.bin")).unwrap() == big, "read back after the commit");
    // Read-after-write before the commit, through another descriptor.
    let mut f = std::fs::File::create(m.p("live.txt")).unwrap();
    f.write_all(b"first part;").unwrap();
    assert_eq!(std::fs::read(m.p("live.txt")).unwrap(), b"first part;");
    assert!(!hub.bucket_files("alice/b").contains_key("live.txt"), "nothing is committed before close");
    // A non-sequential write on a streaming handle is refused, naming the mode that allows it.
    assert_eq!(errno(f.write_at(b"x", 1 << 20)), libc::EINVAL);
    f.write_all(b" second part").unwrap();
    drop(f);
    assert_hub(&hub, "alice/b", "live.txt", b"first part; second part");
    // Whole-block writes reach the staging copy in the background, past the page cache: a
    // read through another descriptor before close still sees every byte of them.
    let blocks = bytes(8, 4 << 20);
    let mut g = std::fs::File::create(m.p("live.bin")).unwrap();
    g.write_all(&blocks).unwrap();
    assert!(std::fs::read(m.p("live.bin")).unwrap() == blocks, "read back before close");
    drop(g);
    assert_hub(&hub, "alice/b", "live.bin", &blocks);
    // `>>` and in-place edits of existing files work in the default mode (through staging).
    assert!(sh(&format!("echo appended >> '{}'", m.p("old.txt").display())).0);
    assert_hub(&hub, "alice/b", "old.txt", b"old line\nappended\n");
    let f = std::fs::OpenOptions::new().write(true).open(m.p("model.bin")).unwrap();
    f.write_all_at(b"PATCH", 1000).unwrap();
    drop(f);
    let mut want = bytes(3, 300_000);
    want[1000..1005].copy_from_slice(b"PATCH");
    assert_hub(&hub, "alice/b", "model.bin", &want);
    assert!(std::fs::read(m.p("model.bin")).unwrap() == want);
    // An empty file created and closed exists on the Hub too (a close with nothing written
    // leaves the commit to the release that follows it).
    std::fs::File::create(m.p("empty")).unwrap();
    wait_until(COMMIT_WAIT, "the empty file", || hub.bucket_files("alice/b").get("empty").map(|f| f.0) == Some(0));
}

#[test]
fn every_streamed_close_returns_committed_while_other_handles_keep_the_mount_busy() {
    let hub = Hub::start();
    hub.seed_bucket("alice/b", &[("busy.bin", bytes(5, 4 << 20))]);
    let m = mount_rw(&hub, "alice/b", &[]);
    // Readers keep the handle table's actor busy (a read plan per read), so a write's mark
    // may still be queued when its close arrives: the close must commit all the same. (They
    // stop before the mount goes, even when an assertion fails: a reader left blocked on an
    // unmounted in-process mount would hang the test.)
    struct Readers(std::sync::Arc<std::sync::atomic::AtomicBool>, Vec<std::thread::JoinHandle<()>>);
    impl Drop for Readers {
        fn drop(&mut self) {
            self.0.store(true, std::sync::atomic::Ordering::Relaxed);
            self.1.drain(..).for_each(|r| {
                let _ = r.join();
            });
        }
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let _readers = Readers(
        stop.clone(),
        (0..3)
            .map(|r| {
                let (path, stop) = (m.p("busy.bin"), stop.clone());
                std::thread::spawn(move || {
                    let f = std::fs::File::open(path).unwrap();
                    let mut buf = vec![0u8; 4096];
                    let mut at = r * 4096;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        f.read_at(&mut buf, at % (4 << 20)).unwrap();
                        at += 3 * 4096;
                    }
                })
            })
            .collect(),
    );
    for i in 0..150 {
        let want = bytes(100 + i, 1000 + i as usize);
        std::fs::write(m.p(&format!("f{i}.bin")), &want).unwrap();
        assert_hub(&hub, "alice/b", &format!("f{i}.bin"), &want);
    }
}

#[test]
fn a_close_from_another_process_leaves_the_commit_to_the_last_release() {
    let hub = Hub::start();
    hub.create_bucket("alice/b");
    let m = mount_rw(&hub, "alice/b", &[]);
    // The child inherits the descriptor and closes it first: its flush commits nothing.
    let script = format!(
        r#"
import os, sys, time
fd = os.open({p:?}, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
os.write(fd, b"parent wrote this;")
pid = os.fork()
if pid == 0:
    os.close(fd)
    os._exit(0)
os.waitpid(pid, 0)
sys.stdout.write("child-closed\n"); sys.stdout.flush()
sys.stdin.readline()
os.write(fd, b" and this")
os.close(fd)
"#,
        p = m.p("shared.txt").display().to_string()
    );
    let mut child = std::process::Command::new("python3")
        .args(["-c", &script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut out, &mut line).unwrap();
    assert_eq!(line.trim(), "child-closed");
    assert!(!hub.bucket_files("alice/b").contains_key("shared.txt"), "the child's close committed a prefix");
    child.stdin.take().unwrap().write_all(b"go\n").unwrap();
    assert!(child.wait().unwrap().success());
    wait_until(COMMIT_WAIT, "the parent's commit", || hub.bucket_files("alice/b").contains_key("shared.txt"));
    assert_hub(&hub, "alice/b", "shared.txt", b"parent wrote this; and this");
}

#[test]
fn advanced_writes_are_random_and_committed_after_the_debounce() {
    let hub = Hub::start();
    hub.seed_bucket("alice/b", &[("base.bin", bytes(5, 1 << 20))]);
    let m = mount_rw(&hub, "alice/b", &["--advanced-writes", "--flush-debounce-ms", "400"]);
    let mut model = bytes(5, 1 << 20);
    // Random writes, seeks, overwrites, a truncate and appends on an existing file.
    let mut f = std::fs::OpenOptions::new().read(true).write(true).open(m.p("base.bin")).unwrap();
    for (i, off) in [10u64, 900_000, 4096, 1_048_000].into_iter().enumerate() {
        let chunk = bytes(100 + i as u64, 3000);
        f.write_all_at(&chunk, off).unwrap();
        let end = off as usize + chunk.len();
        if end > model.len() {
            model.resize(end, 0);
        }
        model[off as usize..end].copy_from_slice(&chunk);
    }
    f.set_len(700_000).unwrap();
    model.truncate(700_000);
    f.seek(SeekFrom::Start(650_000)).unwrap();
    f.write_all(b"seeked").unwrap();
    model[650_000..650_006].copy_from_slice(b"seeked");
    let mut check = vec![0u8; 6];
    f.read_exact_at(&mut check, 650_000).unwrap();
    assert_eq!(&check, b"seeked", "read-after-write on the same descriptor");
    let t = Instant::now();
    drop(f);
    let mut a = std::fs::OpenOptions::new().append(true).open(m.p("base.bin")).unwrap();
    a.write_all(b"tail").unwrap();
    model.extend_from_slice(b"tail");
    a.sync_all().unwrap(); // durable locally, no upload waited for
    drop(a);
    assert!(t.elapsed() < Duration::from_secs(2), "close and fsync waited for an upload: {:?}", t.elapsed());
    assert!(std::fs::read(m.p("base.bin")).unwrap() == model);
    wait_until(COMMIT_WAIT, "base.bin committed", || hub_has(&hub, "alice/b", "base.bin", &model));
    // A new file written at random offsets.
    let f = std::fs::File::create(m.p("sparse.bin")).unwrap();
    f.write_all_at(b"end", 5000).unwrap();
    f.write_all_at(b"start", 0).unwrap();
    drop(f);
    let mut want = vec![0u8; 5003];
    want[..5].copy_from_slice(b"start");
    want[5000..].copy_from_slice(b"end");
    wait_until(COMMIT_WAIT, "sparse.bin committed", || hub_has(&hub, "alice/b", "sparse.bin", &want));
}

/// A write into a file held in memory is answered on the FUSE thread, before the inode
/// table has applied it: the stat, read and close right after must still see it.
#[test]
fn writes_answered_at_once_are_seen_by_the_next_stat_read_and_close() {
    let hub = Hub::start();
    hub.create_bucket("alice/b");
    let m = mount_rw(&hub, "alice/b", &["--advanced-writes", "--flush-debounce-ms", "300"]);
    let open = |p| std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(true).open(p).unwrap();
    // Held up to 64 KiB, a file on disk past it: writes on both sides of the line.
    let mut f = open(m.p("grown.log"));
    let mut model = Vec::new();
    for i in 0..400u64 {
        let chunk = bytes(i, 97 + (i as usize * 7) % 300);
        f.write_all(&chunk).unwrap();
        model.extend_from_slice(&chunk);
        assert_eq!(f.metadata().unwrap().len(), model.len() as u64, "size right after write {i}");
        if i % 37 == 0 {
            let mut back = vec![0u8; model.len()];
            f.read_exact_at(&mut back, 0).unwrap();
            assert!(back == model, "bytes read back right after write {i}");
        }
    }
    assert!(model.len() > 64 << 10, "the file outgrew what is held in memory");
    drop(f);
    std::fs::create_dir(m.p("small")).unwrap();
    let mut files = Vec::new();
    for i in 0..100u64 {
        let (path, want) = (format!("small/f{i}"), bytes(1000 + i, 4096));
        let mut f = open(m.p(&path));
        f.write_all(&want).unwrap();
        assert_eq!(f.metadata().unwrap().len(), 4096, "{path}: size right after its write");
        drop(f);
        assert_eq!(std::fs::metadata(m.p(&path)).unwrap().len(), 4096, "{path}: size after close");
        files.push((path, want));
    }
    assert!(std::fs::read(m.p("grown.log")).unwrap() == model);
    for (path, want) in &files {
        assert!(&std::fs::read(m.p(path)).unwrap() == want, "{path} read back");
    }
    wait_until(COMMIT_WAIT, "grown.log committed", || hub_has(&hub, "alice/b", "grown.log", &model));
    for (path, want) in &files {
        wait_until(COMMIT_WAIT, path, || hub_has(&hub, "alice/b", path, want));
    }
}

#[test]
fn a_closed_file_is_not_held_back_by_writes_to_others() {
    let hub = Hub::start();
    hub.create_bucket("alice/b");
    let m = mount_rw(&hub, "alice/b", &["--advanced-writes", "--flush-debounce-ms", "300"]);
    std::fs::write(m.p("early.txt"), b"closed early").unwrap();
    let t = Instant::now();
    // Another file keeps changing all the while.
    let mut busy = std::fs::File::create(m.p("busy.log")).unwrap();
    while !hub.bucket_files("alice/b").contains_key("early.txt") {
        busy.write_all(b"tick\n").unwrap();
        assert!(t.elapsed() < COMMIT_WAIT, "early.txt waited behind busy.log");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(t.elapsed() < Duration::from_secs(5), "early.txt committed only after {:?}", t.elapsed());
    assert!(!hub.bucket_files("alice/b").contains_key("busy.log"), "an open file is not committed while written");
    drop(busy);
    wait_until(COMMIT_WAIT, "busy.log committed after close", || hub.bucket_files("alice/b").contains_key("busy.log"));
}

#[test]
fn namespace_changes_are_done_on_the_server() {
    let hub = Hub::start();
    let files: Vec<(String, Vec<u8>)> = (0..40).map(|i| (format!("run/f{i:02}.bin"), bytes(i, 20_000))).collect();
    let seeded: Vec<(&str, Vec<u8>)> = files.iter().map(|(p, b)| (p.as_str(), b.clone())).collect();
    hub.seed_bucket("alice/b", &seeded);
    hub.seed_bucket("alice/b", &[("keep/a.txt", b"a".to_vec()), ("top.txt", b"top".to_vec())]);
    let m = mount_rw(&hub, "alice/b", &[]);
    // A directory with remote children not yet listed is not empty.
    assert_eq!(errno(std::fs::remove_dir(m.p("keep"))), libc::ENOTEMPTY);
    // Renaming a directory moves every file on the server: no bytes uploaded, few batches.
    let uploads_before = hub.traffic(RouteClass::CasUpload).body_bytes;
    let batches_before = hub.traffic(RouteClass::BucketBatch).requests;
    std::fs::rename(m.p("run"), m.p("run-renamed")).unwrap();
    assert!(m.p("run-renamed/f07.bin").exists() && !m.p("run").exists());
    m.block_on(m.engine().wait_committed(COMMIT_WAIT)).unwrap();
    let on_hub = hub.bucket_files("alice/b");
    for (p, b) in &files {
        let new = p.replacen("run/", "run-renamed/", 1);
        assert!(!on_hub.contains_key(p), "{p} still on the Hub");
        assert_hub(&hub, "alice/b", &new, b);
    }
    assert_eq!(hub.traffic(RouteClass::CasUpload).body_bytes, uploads_before, "a rename uploaded bytes");
    assert!(hub.traffic(RouteClass::BucketBatch).requests - batches_before <= 2);
    // Renaming over a file replaces it; RENAME_NOREPLACE refuses; RENAME_EXCHANGE is not supported.
    std::fs::write(m.p("x.txt"), b"x").unwrap();
    std::fs::rename(m.p("x.txt"), m.p("top.txt")).unwrap();
    assert_eq!(std::fs::read(m.p("top.txt")).unwrap(), b"x");
    let c = |p: &std::path::Path| std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
    let renameat2 = |a: &std::path::Path, b: &std::path::Path, flags: u32| unsafe {
        if libc::renameat2(libc::AT_FDCWD, c(a).as_ptr(), libc::AT_FDCWD, c(b).as_ptr(), flags) == 0 {
            0
        } else {
            *libc::__errno_location()
        }
    };
    assert_eq!(renameat2(&m.p("top.txt"), &m.p("keep/a.txt"), libc::RENAME_NOREPLACE), libc::EEXIST);
    assert_eq!(renameat2(&m.p("top.txt"), &m.p("keep/a.txt"), libc::RENAME_EXCHANGE), libc::EINVAL);
    // A hard link is a server-side copy of the same content.
    std::fs::hard_link(m.p("keep/a.txt"), m.p("a-link.txt")).unwrap();
    assert_eq!(std::fs::metadata(m.p("a-link.txt")).unwrap().nlink(), 2);
    // Unlink while open: the descriptor keeps working; nothing comes back later.
    let mut f =
        std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(true).open(m.p("tmp.bin")).unwrap();
    f.write_all(b"scratch").unwrap();
    std::fs::remove_file(m.p("tmp.bin")).unwrap();
    f.write_all(b" more").unwrap();
    assert_eq!(f.read_at(&mut [0u8; 7], 0).unwrap(), 7);
    drop(f);
    std::fs::remove_file(m.p("run-renamed/f00.bin")).unwrap();
    m.block_on(m.engine().wait_committed(COMMIT_WAIT)).unwrap();
    let on_hub = hub.bucket_files("alice/b");
    assert_eq!(on_hub.get("a-link.txt").map(|f| &f.1), on_hub.get("keep/a.txt").map(|f| &f.1), "same hash");
    assert!(!on_hub.contains_key("tmp.bin"), "an unlinked file came back");
    assert!(!on_hub.contains_key("run-renamed/f00.bin"));
    assert_hub(&hub, "alice/b", "top.txt", b"x");
    assert!(!on_hub.contains_key("x.txt"));
    // Empty directories live locally; rmdir of an empty one works.
    std::fs::create_dir_all(m.p("new/deeper")).unwrap();
    assert!(m.p("new/deeper").is_dir());
    std::fs::remove_dir(m.p("new/deeper")).unwrap();
    assert_eq!(errno(std::fs::remove_dir(m.p("keep"))), libc::ENOTEMPTY);
}

#[test]
fn local_attributes_and_symlinks_survive_a_remount_on_the_same_cache_dir() {
    let hub = Hub::start();
    hub.seed_bucket("alice/b", &[("script.sh", b"#!/bin/sh\necho hi\n".to_vec()), ("data.bin", bytes(1, 10_000))]);
    let cache = tempfile::tempdir().unwrap();
    let dir = cache.path().display().to_string();
    let when = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_600_000_000);
    {
        let m = mount_rw(&hub, "alice/b", &["--cache-dir", &dir]);
        std::fs::set_permissions(m.p("script.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::chown(m.p("data.bin"), Some(1234), Some(5678)).unwrap();
        let f = std::fs::File::options().write(true).open(m.p("data.bin")).unwrap();
        f.set_modified(when).unwrap();
        drop(f);
        std::os::unix::fs::symlink("script.sh", m.p("run")).unwrap();
        std::fs::create_dir(m.p("empty-dir")).unwrap();
        assert_eq!(std::fs::read_link(m.p("run")).unwrap().as_os_str(), "script.sh");
    }
    let m = mount_rw(&hub, "alice/b", &["--cache-dir", &dir]);
    let meta = std::fs::metadata(m.p("script.sh")).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o755);
    let d = std::fs::metadata(m.p("data.bin")).unwrap();
    assert_eq!((d.uid(), d.gid()), (1234, 5678));
    assert_eq!(d.modified().unwrap(), when);
    assert_eq!(std::fs::read_link(m.p("run")).unwrap().as_os_str(), "script.sh");
    assert_eq!(std::fs::read(m.p("run")).unwrap(), b"#!/bin/sh\necho hi\n", "the symlink resolves");
    assert!(m.p("empty-dir").is_dir());
    // A truncate is a write: committed, and kept.
    std::fs::File::options().write(true).open(m.p("data.bin")).unwrap().set_len(10).unwrap();
    m.block_on(m.engine().wait_committed(COMMIT_WAIT)).unwrap();
    assert_hub(&hub, "alice/b", "data.bin", &bytes(1, 10_000)[..10]);
    // A second mount on the same cache dir is refused, clearly.
    let second = try_mount(&hub, &rw("alice/b", &["--cache-dir", &dir]).iter().map(String::as_str).collect::<Vec<_>>());
    let err = second.unwrap_err().to_string();
    assert!(err.contains("already mounted") && err.contains("--cache-dir"), "{err}");
}

#[test]
fn names_round_trip_and_bad_names_are_refused() {
    let hub = Hub::start();
    hub.create_bucket("alice/b");
    let m = mount_rw(&hub, "alice/b", &[]);
    for name in ["a b#1 100%?.txt", "\u{fc}nic\u{f6}de \u{2713}.txt"] {
        std::fs::write(m.p(name), name.as_bytes()).unwrap();
        assert_hub(&hub, "alice/b", name, name.as_bytes());
    }
    assert_eq!(errno(std::fs::write(m.p(&"n".repeat(256)), b"x")), libc::ENAMETOOLONG);
    std::fs::write(m.p(&"n".repeat(255)), b"x").unwrap();
    assert_eq!(errno(std::fs::write(m.p(".DS_Store"), b"x")), libc::EPERM);
    assert_eq!(errno(std::fs::write(m.p("._resource"), b"x")), libc::EPERM);
    let junk = mount_rw(&hub, "alice/b", &["--no-filter-os-files"]);
    std::fs::write(junk.p(".DS_Store"), b"x").unwrap();
    assert!(hub.bucket_files("alice/b").contains_key(".DS_Store"));
}

#[test]
fn creating_in_a_listed_directory_costs_no_hub_request() {
    let hub = Hub::start();
    hub.seed_bucket("alice/b", &[("dir/existing.txt", b"e".to_vec())]);
    let m = mount_rw(&hub, "alice/b", &["--advanced-writes", "--flush-debounce-ms", "60000"]);
    std::fs::read_dir(m.p("dir")).unwrap().count();
    let before = hub.traffic(RouteClass::HubMetadata).requests;
    for i in 0..50 {
        std::fs::write(m.p(&format!("dir/new{i}.txt")), b"n").unwrap();
    }
    assert_eq!(hub.traffic(RouteClass::HubMetadata).requests, before, "creates asked the Hub");
}

/// Once a directory's listing is older than the metadata TTL, a new name in it is not asked
/// about on its own (a HEAD, then whether it is a directory: two requests a create): the
/// directory is listed again, once, and the creates after it are answered from that listing.
#[test]
fn creating_in_a_directory_listed_longer_ago_than_the_ttl_lists_it_once_not_per_name() {
    let hub = Hub::start();
    hub.seed_bucket("alice/b", &[("dir/existing.txt", b"e".to_vec())]);
    let args = ["--advanced-writes", "--flush-debounce-ms", "60000", "--metadata-ttl-ms", "1000"];
    let m = mount_rw(&hub, "alice/b", &args);
    std::fs::create_dir(m.p("made")).unwrap();
    std::fs::read_dir(m.p("dir")).unwrap().count();
    // Let both listings (the made directory's is known empty) age past the TTL.
    std::thread::sleep(Duration::from_millis(1300));
    let before = hub.traffic(RouteClass::HubMetadata).requests;
    for i in 0..50 {
        std::fs::write(m.p(&format!("dir/new{i}.txt")), b"n").unwrap();
        std::fs::write(m.p(&format!("made/new{i}.txt")), b"n").unwrap();
    }
    let asked = hub.traffic(RouteClass::HubMetadata).requests - before;
    assert!(asked <= 4, "100 creates asked the Hub {asked} times (two listings expected)");
    // The listing is the Hub's word: what it holds is still found, what it lacks is not.
    assert_eq!(std::fs::read(m.p("dir/existing.txt")).unwrap(), b"e");
    assert!(!m.p("dir/absent.txt").exists());
    assert_eq!(std::fs::read_dir(m.p("made")).unwrap().count(), 50);
}

#[test]
fn unmount_drains_pending_uploads_and_fsync_reports_commit_failures() {
    let hub = Hub::start();
    hub.create_bucket("alice/b");
    {
        let m = mount_rw(&hub, "alice/b", &["--advanced-writes", "--flush-debounce-ms", "60000"]);
        std::fs::write(m.p("pending.bin"), bytes(2, 100_000)).unwrap();
        assert!(hub.bucket_files("alice/b").is_empty());
    }
    assert_hub(&hub, "alice/b", "pending.bin", &bytes(2, 100_000)); // unmount drained it
                                                                    // A commit that fails is retried, never dropped, and the next fsync of the file says so.
    let m = mount_rw(&hub, "alice/b", &["--advanced-writes", "--flush-debounce-ms", "100"]);
    let rule = hub
        .emulator()
        .faults()
        .add(hf_hub_emulator::FaultSpec::new(
            RouteClass::BucketBatch,
            hf_hub_emulator::FaultKind::Error { status: 403 },
        ))
        .unwrap();
    let f = std::fs::File::create(m.p("refused.txt")).unwrap();
    (&f).write_all(b"r").unwrap();
    f.sync_all().unwrap();
    drop(f);
    wait_until(COMMIT_WAIT, "a failed commit", || {
        m.block_on(m.engine().write_status()).unwrap().failed.iter().any(|(p, _)| p == "refused.txt")
    });
    let f = std::fs::OpenOptions::new().append(true).open(m.p("refused.txt")).unwrap();
    assert_eq!(errno(f.sync_all()), libc::EACCES, "fsync reports the failed commit");
    (&f).write_all(b"r").unwrap();
    let fd = std::os::fd::IntoRawFd::into_raw_fd(f);
    assert_eq!(unsafe { libc::close(fd) }, -1, "close reports the failed commit too");
    assert_eq!(std::io::Error::last_os_error().raw_os_error(), Some(libc::EACCES));
    hub.emulator().faults().remove(rule);
    m.block_on(m.engine().wait_committed(COMMIT_WAIT)).unwrap();
    assert_hub(&hub, "alice/b", "refused.txt", b"rr");
}

#[test]
fn a_small_streamed_file_costs_its_xorb_and_shard_uploads_and_leaves_no_session_behind() {
    let hub = Hub::start();
    hub.create_bucket("alice/b");
    let m = mount_rw(&hub, "alice/b", &[]);
    std::fs::write(m.p("warm.txt"), b"warm").unwrap();
    let cas = || hub.traffic(RouteClass::CasUpload).requests;
    // A file below 1 MiB: its xorb in one request (no upload grant, no commit of it), and its
    // shard; no global dedup query (a round trip that could save at most the file itself).
    let before = cas();
    for i in 0..5 {
        let b = bytes(100 + i, 4096);
        std::fs::write(m.p(&format!("small{i}.bin")), &b).unwrap();
        assert_hub(&hub, "alice/b", &format!("small{i}.bin"), &b);
    }
    assert_eq!(cas() - before, 5 * 2, "CAS upload requests for 5 small files");
    // A larger file still asks the Hub for chunks it already has.
    let before = cas();
    let big = bytes(9, 3 << 20);
    std::fs::write(m.p("big.bin"), &big).unwrap();
    assert_hub(&hub, "alice/b", "big.bin", &big);
    assert!(cas() - before > 3, "a 3 MiB file made no dedup query");
    // The small files' sessions removed their scratch directories: one is left, the session
    // made ahead for the next file, and it goes with the mount.
    let sessions = |dir: &std::path::Path| -> Vec<std::path::PathBuf> {
        walk(dir)
            .into_iter()
            .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("small-session-"))
            .collect()
    };
    let mut m = m;
    let cache = m.cache.take().unwrap();
    assert!(sessions(cache.path()).len() <= 1, "session directories left: {:?}", sessions(cache.path()));
    drop(m);
    assert_eq!(sessions(cache.path()), Vec::<std::path::PathBuf>::new(), "after unmount");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            out.extend(walk(&p));
        }
        out.push(p);
    }
    out
}
