//! Crashes: a mount killed with SIGKILL. In advanced mode, what was closed
//! (and renamed, unlinked, made) before the kill is shown again at once by
//! the next mount of the same source on the same cache dir, and committed.
//! A streamed file cut off mid-write is never committed, and its writer
//! gets an error.

mod common;

use std::process::Command;
use std::time::Duration;

use common::spawn::{spawn_mounted, Guard};
use common::{bytes, mount, write_and_close, Hub, WRITE_TOKEN};

const BIN: &str = env!("CARGO_BIN_EXE_hf-mount-fuse");
const COMMIT_WAIT: Duration = Duration::from_secs(30);

fn kill_mount(mut guard: Guard) {
    let mut child = guard.take();
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    let _ = child.wait();
    // What a killed daemon leaves behind: a dead mount, unmounted lazily (the guard does it).
}

/// An advanced-mode mount of `alice/b` in a process of its own that commits nothing for a
/// minute (all it is told stays pending in the journal).
fn spawn_advanced_idle(hub: &Hub, mnt: &std::path::Path, cache: &std::path::Path) -> Guard {
    let child = spawn_mounted(
        Command::new(BIN)
            .args(["bucket", "alice/b"])
            .arg(mnt)
            .args(["--hf-token", WRITE_TOKEN, "--advanced-writes", "--flush-debounce-ms", "60000", "--cache-dir"])
            .arg(cache)
            .env("HF_ENDPOINT", hub.endpoint()),
    );
    Guard::new(child, Some(mnt))
}

#[test]
fn advanced_writes_closed_before_a_sigkill_are_committed_by_the_next_mount() {
    let hub = Hub::start();
    hub.seed_bucket("alice/b", &[("old.txt", b"old".to_vec()), ("gone.txt", b"gone".to_vec())]);
    let (cache, mnt) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let guard = spawn_advanced_idle(&hub, mnt.path(), cache.path());
    let p = |r: &str| mnt.path().join(r);
    // Small files are held in memory, their bytes in the journal's records: no staging file.
    std::fs::create_dir(p("small")).unwrap();
    for i in 0..50 {
        std::fs::write(p(&format!("small/{i}")), bytes(100 + i, 4096)).unwrap();
    }
    std::fs::write(p("b.txt"), b"bee").unwrap();
    std::fs::write(p("grown.bin"), bytes(7, 1000)).unwrap();
    assert_eq!(staging_files(cache.path()), 0, "a small file made a staging file");
    // One that grows past what is held after its close becomes a file, with its bytes.
    let mut grown = std::fs::OpenOptions::new().append(true).open(p("grown.bin")).unwrap();
    std::io::Write::write_all(&mut grown, &bytes(8, 100_000)).unwrap();
    common::close_checked(grown).expect("close of grown.bin");
    let mut want_grown = bytes(7, 1000);
    want_grown.extend(bytes(8, 100_000));
    std::fs::write(p("a.bin"), bytes(1, 300_000)).unwrap();
    std::fs::rename(p("a.bin"), p("c.bin")).unwrap();
    std::fs::rename(p("old.txt"), p("renamed.txt")).unwrap();
    std::fs::remove_file(p("gone.txt")).unwrap();
    std::fs::create_dir(p("empty")).unwrap();
    // A file still being written when the mount dies was never acknowledged.
    let mut open = std::fs::File::create(p("unclosed.bin")).unwrap();
    std::io::Write::write_all(&mut open, b"partial").unwrap();
    assert_eq!(hub.bucket_files("alice/b").len(), 2, "nothing committed before the kill");
    kill_mount(guard);
    drop(open);
    let _ = Command::new("fusermount3").arg("-uz").arg(mnt.path()).stderr(std::process::Stdio::null()).status();
    // The next mount shows everything at once, then commits it.
    let dir = cache.path().display().to_string();
    let m = mount(&hub, &["bucket", "alice/b", "--hf-token", WRITE_TOKEN, "--advanced-writes", "--cache-dir", &dir]);
    assert!(std::fs::read(m.p("c.bin")).unwrap() == bytes(1, 300_000));
    assert_eq!(std::fs::read(m.p("b.txt")).unwrap(), b"bee");
    assert!(std::fs::read(m.p("grown.bin")).unwrap() == want_grown);
    for i in 0..50 {
        assert!(std::fs::read(m.p(&format!("small/{i}"))).unwrap() == bytes(100 + i, 4096), "small/{i}");
    }
    assert_eq!(std::fs::read(m.p("renamed.txt")).unwrap(), b"old");
    assert!(!m.p("a.bin").exists() && !m.p("gone.txt").exists() && !m.p("old.txt").exists());
    assert!(m.p("empty").is_dir());
    assert!(!m.p("unclosed.bin").exists(), "an unacknowledged file came back");
    m.block_on(m.engine().wait_committed(COMMIT_WAIT)).unwrap();
    let files = hub.bucket_files("alice/b");
    let names: Vec<&str> = files.keys().map(String::as_str).collect();
    assert_eq!(names.len(), 54, "{names:?}");
    assert!(names.starts_with(&["b.txt", "c.bin", "grown.bin", "renamed.txt"]));
    assert_eq!(hub.bucket_bytes("alice/b", "c.bin"), Some(bytes(1, 300_000)));
    assert_eq!(hub.bucket_bytes("alice/b", "grown.bin"), Some(want_grown));
    assert_eq!(hub.bucket_bytes("alice/b", "small/49"), Some(bytes(149, 4096)));
}

/// Files in the staging directories under a mount's cache dir.
fn staging_files(cache: &std::path::Path) -> usize {
    std::fs::read_dir(cache)
        .unwrap()
        .flatten()
        .filter_map(|source| std::fs::read_dir(source.path().join("staging")).ok())
        .map(|d| d.count())
        .sum()
}

/// Opens that keep the bytes (`r+`, `>>`) of a file closed but not committed yet write a copy:
/// the journal's record of the last close keeps naming bytes nothing writes to, so a crash
/// in the middle of the next writer's writes cannot tear what was acknowledged.
#[test]
fn a_write_in_place_cut_off_by_a_sigkill_leaves_the_acknowledged_bytes_whole() {
    use std::io::{Seek, SeekFrom, Write};
    let hub = Hub::start();
    hub.seed_bucket("alice/b", &[]);
    let (cache, mnt) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let guard = spawn_advanced_idle(&hub, mnt.path(), cache.path());
    let p = |r: &str| mnt.path().join(r);
    let (first, second) = (bytes(3, 1 << 20), bytes(4, 300_000));
    write_and_close(&p("over.bin"), &first).unwrap();
    write_and_close(&p("log.txt"), b"line 1\n").unwrap();
    // Overwritten in place and appended to, neither closed nor synced: never acknowledged.
    let mut over = std::fs::OpenOptions::new().read(true).write(true).open(p("over.bin")).unwrap();
    over.seek(SeekFrom::Start(4096)).unwrap();
    over.write_all(&vec![0xEE; 512 << 10]).unwrap();
    let mut log = std::fs::OpenOptions::new().append(true).open(p("log.txt")).unwrap();
    log.write_all(b"line 2, never closed\n").unwrap();
    // A third file is closed after its in-place write: that version is the acknowledged one.
    write_and_close(&p("done.bin"), &first).unwrap();
    let mut done = std::fs::OpenOptions::new().write(true).open(p("done.bin")).unwrap();
    done.write_all(&second).unwrap();
    common::close_checked(done).expect("close of done.bin");
    let mut want_done = first.clone();
    want_done[..second.len()].copy_from_slice(&second);
    // (No writeback cache: each write has reached the mount's staging file when it returns.)
    assert!(hub.bucket_files("alice/b").is_empty(), "nothing committed before the kill");
    kill_mount(guard);
    drop((over, log));
    let _ = Command::new("fusermount3").arg("-uz").arg(mnt.path()).stderr(std::process::Stdio::null()).status();
    let dir = cache.path().display().to_string();
    let m = mount(&hub, &["bucket", "alice/b", "--hf-token", WRITE_TOKEN, "--advanced-writes", "--cache-dir", &dir]);
    m.block_on(m.engine().wait_committed(COMMIT_WAIT)).unwrap();
    assert!(hub.bucket_bytes("alice/b", "done.bin") == Some(want_done), "done.bin: not its last closed version");
    assert_eq!(hub.bucket_bytes("alice/b", "log.txt").as_deref(), Some(&b"line 1\n"[..]));
    assert!(hub.bucket_bytes("alice/b", "over.bin") == Some(first), "over.bin: torn by a write never acknowledged");
}

#[test]
fn a_stream_cut_off_by_a_sigkill_is_never_committed() {
    let hub = Hub::start();
    hub.create_bucket("alice/b");
    let cache = tempfile::tempdir().unwrap();
    let mnt = tempfile::tempdir().unwrap();
    let child = spawn_mounted(
        Command::new(BIN)
            .args(["bucket", "alice/b"])
            .arg(mnt.path())
            .args(["--hf-token", WRITE_TOKEN, "--cache-dir"])
            .arg(cache.path())
            .env("HF_ENDPOINT", hub.endpoint()),
    );
    let guard = Guard::new(child, Some(mnt.path()));
    // The writer streams a few MiB, then keeps writing after the mount is gone.
    let path = mnt.path().join("stream.bin");
    let mut f = std::fs::File::create(&path).unwrap();
    for i in 0..4 {
        std::io::Write::write_all(&mut f, &bytes(i, 1 << 20)).unwrap();
    }
    kill_mount(guard);
    let after = std::io::Write::write_all(&mut f, &bytes(9, 1 << 20)).and_then(|_| f.sync_all());
    assert!(after.is_err(), "the writer was not told its file is lost");
    drop(f);
    let _ = Command::new("fusermount3").arg("-uz").arg(mnt.path()).stderr(std::process::Stdio::null()).status();
    let dir = cache.path().display().to_string();
    let m = mount(
        &hub,
        &["bucket", "alice/b", "--hf-token", WRITE_TOKEN, "--cache-dir", &dir, "--flush-debounce-ms", "100"],
    );
    assert!(!m.p("stream.bin").exists(), "a partial stream is shown");
    m.block_on(m.engine().wait_committed(COMMIT_WAIT)).unwrap();
    assert!(hub.bucket_files("alice/b").is_empty(), "a partial stream was committed");
}

#[test]
fn sigkill_at_20_random_points_of_a_write_workload_loses_nothing_acknowledged_and_tears_nothing() {
    let hub = Hub::start();
    hub.create_bucket("alice/k");
    let cache = tempfile::tempdir().unwrap();
    let mnt = tempfile::tempdir().unwrap();
    let start = || {
        let child = spawn_mounted(
            Command::new(BIN)
                .args(["bucket", "alice/k"])
                .arg(mnt.path())
                .args(["--hf-token", WRITE_TOKEN, "--advanced-writes", "--flush-debounce-ms", "100", "--cache-dir"])
                .arg(cache.path())
                .env("HF_ENDPOINT", hub.endpoint()),
        );
        Guard::new(child, Some(mnt.path()))
    };
    // Every version each name was given, in order, and whether its close was acknowledged.
    let mut attempts: std::collections::BTreeMap<String, Vec<(Vec<u8>, bool)>> = Default::default();
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut seq = 0u64;
    for _round in 0..20 {
        let guard = start();
        let kill_after = Duration::from_millis(30 + next() % 400);
        let pid = guard.child.as_ref().unwrap().id() as i32;
        let killer = std::thread::spawn(move || {
            std::thread::sleep(kill_after);
            // SAFETY: a plain signal to our own child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        });
        // Writes (overwrites among 6 names) until the mount dies: every other one small enough
        // to be held in memory (1 KB to 61 KB: written and closed on the FUSE thread, while
        // commits of the same names run), the rest 20 KB to 700 KB.
        loop {
            seq += 1;
            let name = format!("f{}.bin", next() % 6);
            let len = if seq.is_multiple_of(2) { 1_000 + next() % 60_000 } else { 20_000 + next() % 680_000 };
            let data = bytes(seq, len as usize);
            let ok = write_and_close(&mnt.path().join(&name), &data).is_ok();
            attempts.entry(name).or_default().push((data, ok));
            if !ok {
                break;
            }
        }
        killer.join().unwrap();
        kill_mount(guard);
        let _ = Command::new("fusermount3").arg("-uz").arg(mnt.path()).stderr(std::process::Stdio::null()).status();
    }
    // The next mount commits what the journal holds.
    let dir = cache.path().display().to_string();
    let m = mount(&hub, &["bucket", "alice/k", "--hf-token", WRITE_TOKEN, "--advanced-writes", "--cache-dir", &dir]);
    // Up to the batch window (30 s) and then some: a path can wait that long after such a
    // crash (seen, not yet explained; see the issue 13 note). A commit the CAS fails for a
    // moment is tried again (one CI run met a 500 from the CAS's shard upload for one batch;
    // the emulator's warning in the captured output says why, should it come back).
    if let Err(e) = m.block_on(m.engine().wait_committed(Duration::from_secs(90))) {
        panic!("{e}: {:?}", m.block_on(m.engine().write_status()));
    }
    let acked = attempts.values().flatten().filter(|(_, ok)| *ok).count();
    assert!(acked >= 20, "the workload acknowledged too little to mean anything: {acked}");
    for (name, versions) in &attempts {
        // The last acknowledged version, or one begun after it (whole): never older, never torn.
        let last_ack = versions.iter().rposition(|(_, ok)| *ok);
        let allowed: Vec<&Vec<u8>> = versions[last_ack.unwrap_or(0)..].iter().map(|(d, _)| d).collect();
        let on_hub = hub.bucket_bytes("alice/k", name);
        let on_mount = std::fs::read(m.p(name)).ok();
        match (&on_hub, last_ack) {
            (Some(b), _) => {
                assert!(allowed.contains(&b), "{name}: the Hub has a torn or older version ({} bytes)", b.len())
            }
            (None, Some(_)) => panic!("{name}: acknowledged, then lost"),
            (None, None) => {}
        }
        assert_eq!(on_mount, on_hub, "{name}: the mount shows what the Hub has");
    }
    eprintln!("{acked} acknowledged closes over 20 SIGKILLs, all on the Hub whole");
}
