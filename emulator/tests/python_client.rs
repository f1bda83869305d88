//! The real Python `huggingface_hub` client (with hf_xet) against the emulator.
//! The interpreter is `$HF_MOUNT_PYTHON` (the CI venv) or `python3`; it must
//! have `huggingface_hub` and `hf_xet` installed, or the test fails.

mod common;

use std::process::Command;

/// Runs `tests/python/{script}` with the venv's interpreter against `hub`; answers its stdout
/// once it passed `expect` checks.
async fn run_script(hub: &hf_hub_emulator::Emulator, script: &str, fixture: &std::path::Path, expect: &str) {
    let python = std::env::var("HF_MOUNT_PYTHON").unwrap_or_else(|_| "python3".into());
    let hf_home = tempfile::tempdir().unwrap();
    let script = format!("{}/tests/python/{script}", std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let endpoint = hub.endpoint();
    let fixture_path = fixture.to_path_buf();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(&python)
            .arg(script)
            .env("HF_ENDPOINT", endpoint)
            .env("HF_HOME", hf_home.path())
            .env("HF_HUB_DISABLE_TELEMETRY", "1")
            .env("HF_HUB_DISABLE_PROGRESS_BARS", "1")
            .env("HF_XET_CLIENT_RETRY_MAX_ATTEMPTS", "2")
            .env("HF_XET_CLIENT_RETRY_BASE_DELAY", "50ms")
            .env_remove("HF_TOKEN")
            .env("FIXTURE", fixture_path)
            .env("WRITE_TOKEN", common::WRITE_TOKEN)
            .env("READ_TOKEN", common::READ_TOKEN)
            .env("OTHER_TOKEN", common::OTHER_TOKEN)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {python}: {e}"))
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(out.status.success(), "Python checks failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains(expect), "not every check ran:\n{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn huggingface_hub_client_works_against_the_emulator() {
    let hub = common::start().await;
    let fixture = tempfile::tempdir().unwrap();
    common::write_fixture(fixture.path());
    hub.seed_repo("alice/tiny", fixture.path(), false).await.unwrap();
    hub.seed_repo("alice/secret", fixture.path(), true).await.unwrap();
    run_script(&hub, "hub_client_check.py", fixture.path(), "14 passed, 0 failed").await;
    hub.stop().await;
}

/// The real `hf` CLI through a whole offline session (repos, revisions, listings by author,
/// visibility, buckets, deletion), bytes and listings compared.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_hf_cli_works_offline_against_the_emulator() {
    let hub = common::start().await;
    let fixture = tempfile::tempdir().unwrap();
    common::write_fixture(fixture.path());
    hub.seed_repo("alice/tiny", fixture.path(), false).await.unwrap();
    hub.seed_repo("alice/secret", fixture.path(), true).await.unwrap();
    run_script(&hub, "hf_cli_session.py", fixture.path(), "28 passed, 0 failed").await;
    hub.stop().await;
}
