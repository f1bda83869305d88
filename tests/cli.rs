//! The `hf-mount-fuse` binary: a foreground mount that stops cleanly on
//! SIGTERM or an outside unmount, and one clear error line for bad input.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::spawn::{spawn_mounted, Guard};
use common::Hub;

const BIN: &str = env!("CARGO_BIN_EXE_hf-mount-fuse");

fn is_mounted(p: &std::path::Path) -> bool {
    let canon = std::fs::canonicalize(p).unwrap();
    hf_mount::cli::is_mounted(&canon)
}

fn run_err(hub: &Hub, args: &[&str]) -> String {
    let out = Command::new(BIN).args(args).env("HF_ENDPOINT", hub.endpoint()).env_remove("HF_TOKEN").output().unwrap();
    assert!(!out.status.success(), "{args:?} should fail");
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one clear line for {args:?}, got:\n{err}");
    lines[0].to_string()
}

#[test]
fn bad_input_gets_one_clear_line_and_a_failing_exit() {
    let hub = Hub::start();
    let empty = tempfile::tempdir().unwrap();
    let mp = empty.path().to_str().unwrap();
    assert!(run_err(&hub, &["repo", "alice/missing", mp]).contains("not found"));
    assert!(run_err(&hub, &["repo", "alice/tiny", mp, "--revision", "nope"]).contains("not found"));
    assert!(run_err(&hub, &["repo", "alice/tiny", mp, "--revision", "../x"]).contains("invalid revision"));
    assert!(run_err(&hub, &["repo", "alice/tiny", "/nonexistent/mnt"]).contains("mountpoint /nonexistent/mnt"));
    let full = tempfile::tempdir().unwrap();
    std::fs::write(full.path().join("x"), b"x").unwrap();
    assert!(run_err(&hub, &["repo", "alice/tiny", full.path().to_str().unwrap()]).contains("is not empty"));
    let file = full.path().join("x");
    let cache_err = run_err(&hub, &["repo", "alice/tiny", mp, "--cache-dir", file.join("sub").to_str().unwrap()]);
    assert!(cache_err.contains("cache dir"), "{cache_err}");
    assert!(run_err(&hub, &["bucket", "datasets/alice/x", mp]).contains("names a repo"));
    assert!(run_err(&hub, &["repo", "alice/tiny", mp, "--hf-token", "hf_bogus"]).contains("401"));
    let help = Command::new(BIN).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for flag in
        ["--revision", "--cache-size", "--metadata-ttl-ms", "--poll-interval-secs", "--read-timeout-ms", "--token-file"]
    {
        assert!(help.contains(flag), "--help lacks {flag}");
    }
}

#[test]
fn foreground_mount_stops_on_sigterm_and_on_outside_unmount() {
    let hub = Hub::start();
    for stop_by_signal in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let mut guard = Guard::new(
            spawn_mounted(
                Command::new(BIN).args(["repo", "alice/tiny"]).arg(dir.path()).env("HF_ENDPOINT", hub.endpoint()),
            ),
            Some(dir.path()),
        );
        let child = guard.child();
        assert!(is_mounted(dir.path()));
        assert_eq!(std::fs::read_to_string(dir.path().join("onnx/config.json")).unwrap(), "{\"onnx\": true}\n");
        if stop_by_signal {
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        } else {
            assert!(Command::new("fusermount3").arg("-u").arg(dir.path()).status().unwrap().success());
        }
        let start = Instant::now();
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            assert!(start.elapsed() < Duration::from_secs(10), "mount did not stop");
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(status.success(), "{status}");
        assert!(!is_mounted(dir.path()));
    }
}

const NFS_BIN: &str = env!("CARGO_BIN_EXE_hf-mount-nfs");

#[test]
fn nfs_serve_only_prints_the_mount_command_and_serves() {
    let hub = Hub::start();
    let child = Command::new(NFS_BIN)
        .args(["repo", "alice/tiny", "--serve-only"])
        .env("HF_ENDPOINT", hub.endpoint())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Killed when the test ends, pass or fail (it was left serving when `nfs-cat` was missing).
    let mut guard = common::spawn::Guard::new(child, None);
    let mut out = BufReader::new(guard.child().stdout.take().unwrap());
    let (mut first, mut second) = (String::new(), String::new());
    out.read_line(&mut first).unwrap();
    out.read_line(&mut second).unwrap();
    let addr = first.trim().rsplit(' ').next().unwrap().to_string();
    assert!(first.starts_with("serving alice/tiny over NFSv3 at 127.0.0.1:"), "{first}");
    let port = addr.rsplit(':').next().unwrap();
    assert!(second.contains(&format!("mount -t nfs -o vers=3,tcp,nolock,port={port},mountport={port}")), "{second}");
    let url = format!("nfs://127.0.0.1//onnx/config.json?nfsport={port}&mountport={port}&version=3");
    let cat = Command::new("nfs-cat").arg(&url).output().expect("nfs-cat (libnfs-utils) installed");
    assert_eq!(String::from_utf8_lossy(&cat.stdout), "{\"onnx\": true}\n");
    let mut child = guard.take();
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(child.wait().unwrap().success());
}

#[test]
fn nfs_mount_without_an_nfs_client_says_what_to_use_instead() {
    let hub = Hub::start();
    let dir = tempfile::tempdir().unwrap();
    if hf_mount::frontends::nfs::nfs_client_available() {
        eprintln!("this system has an NFS client; the no-client error path is not exercised here");
        return;
    }
    let out = Command::new(NFS_BIN)
        .args(["repo", "alice/tiny"])
        .arg(dir.path())
        .env("HF_ENDPOINT", hub.endpoint())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("no NFS client") && err.contains("--fuse") && err.contains("--serve-only"), "{err}");
    let missing =
        Command::new(NFS_BIN).args(["repo", "alice/tiny"]).env("HF_ENDPOINT", hub.endpoint()).output().unwrap();
    assert!(String::from_utf8_lossy(&missing.stderr).contains("MOUNTPOINT is required"));
}

#[test]
fn an_unreachable_collector_costs_nothing_and_json_logs_are_json() {
    let hub = Hub::start();
    hub.seed_bucket("alice/logs", &[("x.txt", b"x".to_vec())]);
    let dir = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let child = Command::new(BIN)
        .args(["bucket", "alice/logs", "--read-only"])
        .arg(dir.path())
        .args(["--otlp-endpoint", "http://127.0.0.1:9", "--log-format", "json", "--cache-dir"])
        .arg(cache.path())
        .env("HF_ENDPOINT", hub.endpoint())
        .env("RUST_LOG", "hf_mount=info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut guard = common::spawn::Guard::new(child, Some(dir.path()));
    let mut err = BufReader::new(guard.child().stderr.take().unwrap());
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        assert!(err.read_line(&mut line).unwrap() > 0, "the mount exited: {lines:?}");
        let done = line.contains("mounted at");
        lines.push(line);
        if done {
            break;
        }
    }
    // Reads are served at once although the collector never answers.
    let t = Instant::now();
    for _ in 0..20 {
        assert_eq!(std::fs::read_to_string(dir.path().join("x.txt")).unwrap(), "x");
    }
    assert!(t.elapsed() < Duration::from_secs(2), "reads slowed by the exporter: {:?}", t.elapsed());
    // The read-only notice is a JSON log line.
    let json: Vec<serde_json::Value> = lines.iter().filter_map(|l| serde_json::from_str(l.trim()).ok()).collect();
    assert!(
        json.iter()
            .any(|v| v["level"] == "INFO" && v["fields"]["message"].as_str().is_some_and(|m| m.contains("read-only"))),
        "no JSON log line in {lines:?}"
    );
    let mut child = guard.take();
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let start = Instant::now();
    let status = child.wait().unwrap();
    assert!(status.success() && start.elapsed() < Duration::from_secs(10), "{status} after {:?}", start.elapsed());
}

#[test]
fn sigterm_right_after_the_mount_is_announced_still_unmounts() {
    let hub = Hub::start();
    for round in 0..12 {
        let dir = tempfile::tempdir().unwrap();
        let mut guard = Guard::new(
            spawn_mounted(
                Command::new(BIN).args(["repo", "alice/tiny"]).arg(dir.path()).env("HF_ENDPOINT", hub.endpoint()),
            ),
            Some(dir.path()),
        );
        let child = guard.child();
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let status = child.wait().unwrap();
        let left = is_mounted(dir.path());
        if left {
            let _ = Command::new("fusermount3").arg("-u").arg(dir.path()).status();
        }
        assert!(status.success() && !left, "round {round}: {status}, mount left behind: {left}");
    }
}
