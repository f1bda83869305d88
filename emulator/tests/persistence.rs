//! State and CAS data survive a restart on the same data dir, in-process and
//! through the `hf-hub-emulator` binary (`seed`, then `serve`).

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use common::{bytes, get_json, http, write_fixture, WRITE_TOKEN};
use hf_hub_emulator::testing::XetReader;
use hf_hub_emulator::{Emulator, EmulatorConfig};
use serde_json::Value;

const SIZE: u64 = 3 * 1024 * 1024 + 5;

fn config(dir: &std::path::Path) -> EmulatorConfig {
    EmulatorConfig::new(dir).token("alice", WRITE_TOKEN, true)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metadata_and_cas_data_survive_a_restart() {
    common::fast_xet_retries();
    let data = tempfile::tempdir().unwrap();
    let fx = tempfile::tempdir().unwrap();
    write_fixture(fx.path());

    let hub = Emulator::start(config(data.path())).await.unwrap();
    hub.seed_repo("datasets/alice/kept", fx.path(), true).await.unwrap();
    hub.seed_bucket("alice/kept", fx.path(), false).await.unwrap();
    let e = hub.endpoint();
    let info: Value = get_json(&format!("{e}/api/datasets/alice/kept"), Some(WRITE_TOKEN)).await;
    let bucket_before: Value = get_json(&format!("{e}/api/buckets/alice/kept/tree?recursive=true"), None).await;
    hub.stop().await;

    let hub = Emulator::start(config(data.path())).await.unwrap();
    let e = hub.endpoint();
    let again: Value = get_json(&format!("{e}/api/datasets/alice/kept"), Some(WRITE_TOKEN)).await;
    assert_eq!(again["sha"], info["sha"]);
    assert_eq!(again["private"], true);
    let bucket_after: Value = get_json(&format!("{e}/api/buckets/alice/kept/tree?recursive=true"), None).await;
    assert_eq!(bucket_before, bucket_after);
    let head = http()
        .head(format!("{e}/datasets/alice/kept/resolve/main/model.safetensors"))
        .bearer_auth(WRITE_TOKEN)
        .send()
        .await
        .unwrap();
    let hash = head.headers()["x-xet-hash"].to_str().unwrap().to_string();
    let reader = XetReader::connect(&format!("{e}/api/datasets/alice/kept/xet-read-token/main"), Some(WRITE_TOKEN))
        .await
        .unwrap();
    let mut got = Vec::new();
    reader.stream_all(&hash, SIZE, |b| got.extend_from_slice(b)).await.unwrap();
    assert!(got == bytes(1, SIZE as usize), "CAS bytes survive the restart");
    let blob = http()
        .get(format!("{e}/datasets/alice/kept/resolve/main/config.json"))
        .bearer_auth(WRITE_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(blob.bytes().await.unwrap().as_ref(), std::fs::read(fx.path().join("config.json")).unwrap());
    // Seeding again adds a commit on top of the kept history.
    let report = hub.seed_repo("datasets/alice/kept", fx.path(), true).await.unwrap();
    assert_ne!(report.commit.as_deref(), again["sha"].as_str());
    hub.stop().await;
}

#[test]
fn the_binary_seeds_then_serves_from_the_same_data_dir() {
    let data = tempfile::tempdir().unwrap();
    let fx = tempfile::tempdir().unwrap();
    write_fixture(fx.path());
    let bin = env!("CARGO_BIN_EXE_hf-hub-emulator");
    let seed = Command::new(bin)
        .args(["seed", "--data-dir"])
        .arg(data.path())
        .args(["repo", "alice/bin-seeded"])
        .arg(fx.path())
        .output()
        .unwrap();
    assert!(seed.status.success(), "{}", String::from_utf8_lossy(&seed.stderr));
    let said = String::from_utf8_lossy(&seed.stdout);
    assert!(said.contains("seeded alice/bin-seeded: 1 Xet files, 4 git blobs"), "{said}");
    let bad = Command::new(bin)
        .args(["seed", "--data-dir"])
        .arg(data.path())
        .args(["repo", "not a repo!"])
        .arg(fx.path())
        .output();
    let bad = bad.unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("invalid repo id"));
    let bad_token =
        Command::new(bin).args(["serve", "--data-dir"]).arg(data.path()).args(["--token", "x"]).output().unwrap();
    assert!(!bad_token.status.success());
    assert!(String::from_utf8_lossy(&bad_token.stderr).contains("USER:VALUE:read|write"));

    let mut child = Command::new(bin)
        .args(["serve", "--port", "0", "--token", "alice:t:write", "--data-dir"])
        .arg(data.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut first).unwrap();
    let endpoint = first.trim().to_string();
    assert!(endpoint.starts_with("http://127.0.0.1:"), "{first}");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let tree: Vec<Value> =
        rt.block_on(async { get_json(&format!("{endpoint}/api/models/alice/bin-seeded/tree/main"), None).await });
    let names: Vec<&str> = tree.iter().map(|v| v["path"].as_str().unwrap()).collect();
    assert_eq!(names, ["README.md", "config.json", "model.safetensors", "nested dir"]);
    let who: Value = rt.block_on(async { get_json(&format!("{endpoint}/api/whoami-v2"), Some("t")).await });
    assert_eq!(who["name"], "alice");
    // SIGTERM stops it cleanly.
    unsafe { libc_kill(child.id() as i32, 15) };
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
}

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}
