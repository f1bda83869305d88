//! The config file: the shipped example loads, precedence is defaults < file
//! < environment < flags, bad keys and values are rejected by name, tokens
//! are redacted, and a mount can start from the file alone.

mod common;

use std::process::Command;

use common::Hub;

const HF_MOUNT: &str = env!("CARGO_BIN_EXE_hf-mount");
const FUSE_BIN: &str = env!("CARGO_BIN_EXE_hf-mount-fuse");

fn show(args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let mut c = Command::new(HF_MOUNT);
    c.args(["config", "show"])
        .args(args)
        .env_remove("HF_ENDPOINT")
        .env_remove("HF_TOKEN")
        .env_remove("HF_MOUNT_CONFIG");
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

fn write(dir: &tempfile::TempDir, text: &str) -> String {
    let p = dir.path().join("c.toml");
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

#[test]
fn the_example_config_loads_and_precedence_holds() {
    let example = &format!("{}/config/hf-mount.toml", std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let (ok, out, err) = show(&["--config", example], &[]);
    assert!(ok, "{err}");
    for line in [
        "source = \"openai-community/gpt2\"",
        "mountpoint = \"/mnt/gpt2\"",
        "cache_size = 10737418240",
        "poll_interval_secs = 30",
    ] {
        assert!(out.contains(line), "missing {line}:\n{out}");
    }

    let dir = tempfile::tempdir().unwrap();
    let cfg = write(&dir, "source_type = \"bucket\"\nsource = \"a/b\"\nmetadata_ttl_ms = 1111\npoll_interval_secs = 7\nhub_endpoint = \"http://from-file\"\ncache_size = 2048\nhf_token = \"hf_secret_in_file\"\n");
    // file over defaults
    let (_, out, _) = show(&["--config", &cfg], &[]);
    assert!(
        out.contains("metadata_ttl_ms = 1111")
            && out.contains("cache_size = 2048")
            && out.contains("source_type = \"bucket\"")
    );
    assert!(out.contains("hub_endpoint = \"http://from-file\""));
    assert!(
        out.contains("hf_token = \"<redacted>\"") && !out.contains("hf_secret_in_file"),
        "token not redacted:\n{out}"
    );
    // environment over file, flags over environment and file
    let (_, out, _) = show(&["--config", &cfg, "--poll-interval-secs", "9"], &[("HF_ENDPOINT", "http://from-env")]);
    assert!(out.contains("hub_endpoint = \"http://from-env\""), "{out}");
    assert!(out.contains("poll_interval_secs = 9") && out.contains("metadata_ttl_ms = 1111"), "{out}");
    let (_, out, _) =
        show(&["--config", &cfg, "--hub-endpoint", "http://from-flag"], &[("HF_ENDPOINT", "http://from-env")]);
    assert!(out.contains("hub_endpoint = \"http://from-flag\""), "{out}");
    // HF_MOUNT_CONFIG names the file too.
    let (_, out, _) = show(&[], &[("HF_MOUNT_CONFIG", &cfg)]);
    assert!(out.contains("metadata_ttl_ms = 1111"), "{out}");
}

#[test]
fn unknown_keys_and_bad_values_are_rejected_by_name() {
    let dir = tempfile::tempdir().unwrap();
    for (text, key) in [
        ("metadata_tll_ms = 5\n", "metadata_tll_ms"),
        ("cache_size = \"12X\"\n", "cache_size"),
        ("poll_interval_secs = \"often\"\n", "poll_interval_secs"),
        ("source_type = \"model\"\n", "source_type"),
        ("backend = \"smb\"\n", "backend"),
    ] {
        let cfg = write(&dir, text);
        let (ok, _, err) = show(&["--config", &cfg], &[]);
        assert!(!ok, "{text} accepted");
        assert!(err.contains(key), "error for {text:?} does not name `{key}`: {err}");
    }
    let (ok, _, err) = show(&["--config", "/nonexistent/hf.toml"], &[]);
    assert!(!ok && err.contains("/nonexistent/hf.toml"), "{err}");
}

#[test]
fn a_mount_starts_from_the_config_file_alone() {
    let hub = Hub::start();
    let dir = tempfile::tempdir().unwrap();
    let mnt = tempfile::tempdir().unwrap();
    let cfg = write(
        &dir,
        &format!(
            "source_type = \"repo\"\nsource = \"alice/tiny/onnx\"\nmountpoint = \"{}\"\nhub_endpoint = \"{}\"\nno_disk_cache = true\n",
            mnt.path().display(),
            hub.endpoint()
        ),
    );
    let mut guard = common::spawn::Guard::new(
        common::spawn::spawn_mounted(Command::new(FUSE_BIN).args(["--config", &cfg]).env_remove("HF_ENDPOINT")),
        Some(mnt.path()),
    );
    let child = guard.child();
    assert_eq!(std::fs::read_to_string(mnt.path().join("config.json")).unwrap(), "{\"onnx\": true}\n");
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(child.wait().unwrap().success());
}
