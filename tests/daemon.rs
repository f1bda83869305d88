//! `hf-mount start/status/stop`: background mounts that are ready when `start`
//! returns, listed by `status` (dead ones marked), and stopped cleanly.

mod common;

use std::process::Command;

use common::Hub;

const HF_MOUNT: &str = env!("CARGO_BIN_EXE_hf-mount");

fn run(home: &std::path::Path, hub: &Hub, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(HF_MOUNT)
        .args(args)
        .env("HF_MOUNT_HOME", home)
        .env("HF_ENDPOINT", hub.endpoint())
        .env_remove("HF_TOKEN")
        .env_remove("HF_MOUNT_CONFIG")
        .output()
        .unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

fn mounted(p: &std::path::Path) -> bool {
    hf_mount::cli::is_mounted(&std::fs::canonicalize(p).unwrap())
}

#[test]
fn start_status_stop_and_failures() {
    let hub = Hub::start();
    let home = tempfile::tempdir().unwrap();
    let mnt = tempfile::tempdir().unwrap();
    let mp = mnt.path().to_str().unwrap();

    // start returns once the mount is usable.
    let (ok, out, err) = run(home.path(), &hub, &["start", "--fuse", "repo", "alice/tiny", mp, "--no-disk-cache"]);
    assert!(ok, "{err}");
    assert!(out.contains("mounted at"), "{out}");
    assert_eq!(std::fs::read_to_string(mnt.path().join("onnx/config.json")).unwrap(), "{\"onnx\": true}\n");
    let (_, status, _) = run(home.path(), &hub, &["status"]);
    assert!(
        status.contains("alive") && status.contains("alice/tiny") && status.contains("fuse") && status.contains(mp),
        "{status}"
    );
    // The block cache's counters (memory hits / disk hits / misses): the read above missed.
    let row = status.lines().find(|l| l.contains(mp)).unwrap_or_default();
    let counters: Vec<u64> = row
        .split_whitespace()
        .find_map(|w| w.split('/').map(|n| n.parse().ok()).collect::<Option<Vec<u64>>>().filter(|v| v.len() == 3))
        .unwrap_or_else(|| panic!("no cache counters: {status}"));
    assert!(counters[2] >= 1, "{status}");
    assert!(std::fs::read_dir(home.path().join("logs")).unwrap().count() == 1);

    // A second start on the same mountpoint is refused.
    let (ok, _, err) = run(home.path(), &hub, &["start", "--fuse", "repo", "alice/tiny", mp]);
    assert!(!ok && err.contains("already mounted"), "{err}");

    // stop unmounts and forgets it.
    let (ok, _, err) = run(home.path(), &hub, &["stop", mp]);
    assert!(ok, "{err}");
    assert!(!mounted(mnt.path()));
    let (_, status, _) = run(home.path(), &hub, &["status"]);
    assert!(status.contains("no hf-mount mounts"), "{status}");

    // A bad source fails fast with the mount's own error, and leaves no record.
    let (ok, _, err) = run(home.path(), &hub, &["start", "--fuse", "repo", "alice/missing", mp]);
    assert!(!ok && err.contains("not found"), "{err}");
    assert!(!mounted(mnt.path()));
    let (_, status, _) = run(home.path(), &hub, &["status"]);
    assert!(status.contains("no hf-mount mounts"), "{status}");

    // NFS is the default backend: on a system without an NFS client it says so.
    if !hf_mount::frontends::nfs::nfs_client_available() {
        let (ok, _, err) = run(home.path(), &hub, &["start", "repo", "alice/tiny", mp]);
        assert!(!ok && err.contains("no NFS client") && err.contains("--fuse"), "{err}");
    }

    // A killed daemon shows as dead; stop cleans up its mount and record.
    let (ok, _, err) = run(home.path(), &hub, &["start", "--fuse", "repo", "alice/tiny", mp]);
    assert!(ok, "{err}");
    let pid: i32 = {
        let (_, status, _) = run(home.path(), &hub, &["status"]);
        status.lines().nth(1).unwrap().split_whitespace().next().unwrap().parse().unwrap()
    };
    unsafe { libc::kill(pid, libc::SIGKILL) };
    std::thread::sleep(std::time::Duration::from_millis(300));
    let (_, status, _) = run(home.path(), &hub, &["status"]);
    assert!(status.contains("dead"), "{status}");
    let (ok, _, err) = run(home.path(), &hub, &["stop", mp]);
    assert!(ok, "{err}");
    assert!(!mounted(mnt.path()));
    let (_, status, _) = run(home.path(), &hub, &["status"]);
    assert!(status.contains("no hf-mount mounts"), "{status}");
}

#[test]
fn sync_waits_for_commits_and_status_shows_what_is_pending() {
    let hub = Hub::start();
    hub.create_bucket("alice/b");
    let home = tempfile::tempdir().unwrap();
    let mnt = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let mp = mnt.path().to_str().unwrap();
    let cache_dir = cache.path().to_str().unwrap();
    let start = [
        "start",
        "--fuse",
        "bucket",
        "alice/b",
        mp,
        "--hf-token",
        common::WRITE_TOKEN,
        "--advanced-writes",
        "--flush-debounce-ms",
        "60000",
        "--cache-dir",
        cache_dir,
    ];
    let (ok, _, err) = run(home.path(), &hub, &start);
    assert!(ok, "{err}");
    std::fs::write(mnt.path().join("ckpt.bin"), common::bytes(1, 200_000)).unwrap();
    let (_, status, _) = run(home.path(), &hub, &["status"]);
    let row = status.lines().find(|l| l.contains(mp)).unwrap_or_default().to_string();
    assert!(row.split_whitespace().any(|w| w == "1"), "one path pending: {status}");
    assert!(hub.bucket_files("alice/b").is_empty(), "the debounce is a minute");
    // sync returns once it is committed.
    let (ok, out, err) = run(home.path(), &hub, &["sync", mp]);
    assert!(ok, "{out}{err}");
    assert_eq!(hub.bucket_bytes("alice/b", "ckpt.bin"), Some(common::bytes(1, 200_000)));
    let (_, status, _) = run(home.path(), &hub, &["status"]);
    let row = status.lines().find(|l| l.contains(mp)).unwrap_or_default().to_string();
    assert!(row.split_whitespace().any(|w| w == "0"), "nothing pending: {status}");
    // A commit the Hub refuses: sync says which path and why, and exits non-zero.
    let rule = hub
        .emulator()
        .faults()
        .add(hf_hub_emulator::FaultSpec::new(
            hf_hub_emulator::RouteClass::BucketBatch,
            hf_hub_emulator::FaultKind::Error { status: 403 },
        ))
        .unwrap();
    std::fs::write(mnt.path().join("refused.bin"), b"r").unwrap();
    let (ok, _, err) = run(home.path(), &hub, &["sync", mp]);
    assert!(!ok && err.contains("refused.bin") && err.contains("403"), "{err}");
    // Once the Hub takes it again, stop drains what is pending before unmounting.
    hub.emulator().faults().remove(rule);
    let (ok, _, err) = run(home.path(), &hub, &["stop", mp]);
    assert!(ok, "{err}");
    assert_eq!(hub.bucket_bytes("alice/b", "refused.bin").as_deref(), Some(&b"r"[..]));
}
