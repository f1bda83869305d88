//! The token scan: mounts given a token (by flag, by file, rotated) log at the most verbose
//! level, in text and JSON, while they read a private repo, write a bucket, meet expired and
//! forbidden tokens, hostile Hub answers and errors; the CLI fails on bad tokens; `status`
//! and `config show` print. No token may appear in any of it. (Spans are scanned by
//! `tests/otlp.rs`.)

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::spawn::{spawn_mounted_logged, Guard};
use common::{Hub, READ_TOKEN, WRITE_TOKEN};
use hf_hub_emulator::{FaultKind, FaultSpec, RouteClass};

const FUSE: &str = env!("CARGO_BIN_EXE_hf-mount-fuse");
const CLI: &str = env!("CARGO_BIN_EXE_hf-mount");
/// A token the emulator does not know: it appears in errors' causes if anything echoes it.
const WRONG: &str = "hf_wrong_token_never_shown";
const ROTATED: &str = "hf_rotated_token_value";

fn scan(what: &str, text: &str) {
    for t in [READ_TOKEN, WRITE_TOKEN, WRONG, ROTATED] {
        assert!(!text.contains(t), "the token {t:?} appears in {what}:\n{}", excerpt(text, t));
    }
}

fn excerpt(text: &str, t: &str) -> String {
    let i = text.find(t).unwrap_or(0);
    text[i.saturating_sub(300)..(i + 300).min(text.len())].to_string()
}

/// A mount (its guard first, so it stops before its dirs go), its mountpoint and cache dir.
fn mount_logged(hub: &Hub, args: &[&str], log: &Path, json: bool) -> (Guard, tempfile::TempDir, tempfile::TempDir) {
    let mnt = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(FUSE);
    cmd.args(args).arg(mnt.path()).arg("--cache-dir").arg(cache.path()).args(["--read-timeout-ms", "2000"]);
    if json {
        cmd.args(["--log-format", "json"]);
    }
    cmd.env("HF_ENDPOINT", hub.endpoint()).env("RUST_LOG", "trace");
    let child = spawn_mounted_logged(&mut cmd, log);
    (Guard::new(child, Some(mnt.path())), mnt, cache)
}

#[test]
fn no_token_in_any_log_line_error_or_output() {
    let hub = Hub::start();
    hub.seed_repo(
        "alice/private",
        &[("a.txt", b"secret bytes\n".to_vec()), ("w.bin", common::bytes(1, 400_000))],
        true,
    );
    hub.seed_bucket("alice/scan", &[("x.txt", b"x".to_vec())]);
    let logs = tempfile::tempdir().unwrap();
    let mut all = String::new();

    // A private repo read with the token by flag, text logs at trace, through faults that
    // make the mount retry, refresh CAS tokens and see 401s.
    let log = logs.path().join("repo.log");
    let (g, mnt, _cache) = mount_logged(&hub, &["repo", "alice/private", "--hf-token", READ_TOKEN], &log, false);
    let f = hub.emulator().faults();
    f.add(FaultSpec::new(RouteClass::CasData, FaultKind::Error { status: 503 }).times(3)).unwrap();
    f.add(FaultSpec::new(RouteClass::Tokens, FaultKind::ExpiredToken).times(1)).unwrap();
    assert_eq!(std::fs::read(mnt.path().join("a.txt")).unwrap(), b"secret bytes\n");
    // The CAS credentials come back 401 once: that read fails (EACCES), the next one works.
    let _ = std::fs::read(mnt.path().join("w.bin"));
    assert!(std::fs::read(mnt.path().join("w.bin")).is_ok());
    f.add(FaultSpec::new(RouteClass::HubMetadata, FaultKind::ExpiredToken)).unwrap();
    let _ = std::fs::metadata(mnt.path().join("missing.txt"));
    let _ = std::fs::read_dir(mnt.path().join("nowhere"));
    f.clear();
    let status = Command::new(CLI).arg("status").output().unwrap();
    all += &String::from_utf8_lossy(&status.stdout);
    all += &String::from_utf8_lossy(&status.stderr);
    drop(g);
    all += &std::fs::read_to_string(&log).unwrap();

    // A bucket written with the token from a file, JSON logs; the file rotates to a token
    // the Hub refuses (writes fail with EACCES), then to garbage (kept: the previous one).
    let token_file = logs.path().join("token");
    std::fs::write(&token_file, WRITE_TOKEN).unwrap();
    let log = logs.path().join("bucket.log");
    let tf = token_file.display().to_string();
    let (g, mnt, _cache) = mount_logged(&hub, &["bucket", "alice/scan", "--token-file", &tf], &log, true);
    if let Err(e) = std::fs::write(mnt.path().join("new.txt"), b"written") {
        let text = std::fs::read_to_string(&log).unwrap();
        panic!("{e}: {}", &text[text.len().saturating_sub(3000)..]);
    }
    std::fs::write(&token_file, ROTATED).unwrap();
    std::thread::sleep(Duration::from_millis(2500)); // the token file is checked every 2 s
    let _ = std::fs::write(mnt.path().join("refused.txt"), b"refused");
    std::fs::write(&token_file, b"hf_\x00\x01garbage").unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    let _ = std::fs::read_dir(mnt.path()).map(|d| d.count());
    drop(g);
    all += &std::fs::read_to_string(&log).unwrap();

    // The CLI refusing tokens, and printing its configuration.
    let mnt = tempfile::tempdir().unwrap();
    for args in [
        vec!["repo", "alice/private", "--hf-token", WRONG],
        vec!["bucket", "alice/scan", "--hf-token", WRONG],
        vec!["repo", "alice/private", "--token-file", "/nonexistent"],
    ] {
        let out = Command::new(FUSE)
            .args(&args)
            .arg(mnt.path())
            .env("HF_ENDPOINT", hub.endpoint())
            .env("RUST_LOG", "trace")
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?} must fail");
        all += &String::from_utf8_lossy(&out.stderr);
        all += &String::from_utf8_lossy(&out.stdout);
    }
    let shown = Command::new(CLI)
        .args(["config", "show", "repo", "alice/private", "/mnt", "--hf-token", READ_TOKEN])
        .output()
        .unwrap();
    assert!(shown.status.success(), "{}", String::from_utf8_lossy(&shown.stderr));
    all += &String::from_utf8_lossy(&shown.stdout);
    all += &String::from_utf8_lossy(&shown.stderr);

    assert!(all.len() > 10_000, "the scan saw too little to mean anything ({} bytes)", all.len());
    assert!(all.contains("TRACE") || all.contains("\"level\":\"TRACE\""), "trace-level lines were scanned");
    scan("the logs, errors and outputs", &all);
}
