//! Python's safetensors and pyarrow read a model and a table from a FUSE
//! mount; values are compared with the originals (`$HF_MOUNT_PYTHON`, or
//! `python3`, must have them installed).

mod common;

use std::process::Command;

use common::{mount, Hub};

fn python() -> String {
    std::env::var("HF_MOUNT_PYTHON").unwrap_or_else(|_| "python3".into())
}

#[test]
fn safetensors_and_pyarrow_read_from_the_mount() {
    let script = &format!("{}/tests/python/model_and_table.py", std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let src = tempfile::tempdir().unwrap();
    let made = Command::new(python()).arg(script).arg("make").arg(src.path()).output().unwrap();
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));

    let hub = Hub::start();
    hub.rt.block_on(hub.emulator().seed_repo("alice/np-model", src.path(), false)).unwrap();
    let m = mount(&hub, &["repo", "alice/np-model"]);
    let out = Command::new(python()).arg(script).arg("check").arg(src.path()).arg(m.path()).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("2 passed, 0 failed"));
    // The parquet file went to Xet, so the read went through the CAS path.
    let head = hub.http(async {
        reqwest::Client::new()
            .head(format!("{}/alice/np-model/resolve/main/data/train.parquet", hub.endpoint()))
            .send()
            .await
            .unwrap()
    });
    assert!(head.headers().contains_key("x-xet-hash"));
}

#[test]
fn a_checkpoint_saved_through_the_mount_is_what_huggingface_hub_downloads() {
    let script = &format!("{}/tests/python/bucket_writes.py", std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let hub = Hub::start();
    hub.create_bucket("alice/ckpt");
    let m = mount(&hub, &["bucket", "alice/ckpt", "--hf-token", common::WRITE_TOKEN]);
    let hf_home = tempfile::tempdir().unwrap();
    let out = Command::new(python())
        .arg(script)
        .arg(m.path())
        .arg("alice/ckpt")
        .env("HF_ENDPOINT", hub.endpoint())
        .env("HF_TOKEN", common::WRITE_TOKEN)
        .env("HF_HOME", hf_home.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("bucket writes: ok"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
