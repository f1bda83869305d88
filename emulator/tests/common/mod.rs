//! Helpers shared by the emulator's integration tests.
#![allow(dead_code)]

use std::path::Path;

use hf_hub_emulator::{Emulator, EmulatorConfig};

pub const WRITE_TOKEN: &str = "hf_alice_write";
pub const READ_TOKEN: &str = "hf_alice_read";
pub const OTHER_TOKEN: &str = "hf_bob_write";

/// Deterministic pseudo-random bytes (xorshift), so fixtures are the same every run.
pub fn bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// A small repo: a Xet-backed model file, git-blob text files, awkward names.
pub fn write_fixture(dir: &Path) {
    let files: Vec<(&str, Vec<u8>)> = vec![
        ("config.json", br#"{"model_type": "tiny", "hidden": 8}"#.to_vec()),
        ("model.safetensors", bytes(1, 3 * 1024 * 1024 + 5)),
        ("README.md", b"# tiny\n\nA fixture.\n".to_vec()),
        ("nested dir/notes #1 100%.txt", b"hash, percent and spaces\n".to_vec()),
        ("nested dir/deeper/\u{fc}nic\u{f6}de.txt", "unicode \u{2713}\n".as_bytes().to_vec()),
    ];
    for (rel, content) in files {
        let path = dir.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }
}

/// An emulator with alice (write and read tokens) and bob (write token).
pub async fn start() -> Emulator {
    Emulator::start_temp_with(|c: EmulatorConfig| {
        c.token("alice", WRITE_TOKEN, true).token("alice", READ_TOKEN, false).token("bob", OTHER_TOKEN, true)
    })
    .await
    .expect("emulator starts")
}

/// Lowers xet-core's retry defaults (5 attempts, 3 s base) so failing tests fail fast.
pub fn fast_xet_retries() {
    // SAFETY: set once before any thread reads the variables (tests call it first thing).
    unsafe {
        std::env::set_var("HF_XET_CLIENT_RETRY_MAX_ATTEMPTS", "2");
        std::env::set_var("HF_XET_CLIENT_RETRY_BASE_DELAY", "50ms");
    }
}

/// A plain HTTP client for poking routes (no proxy, short timeout).
pub fn http() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().timeout(std::time::Duration::from_secs(20)).build().unwrap()
}

/// Starts an emulator with `alice/tiny` seeded from the fixture; returns it with the fixture dir.
pub async fn start_seeded() -> (Emulator, tempfile::TempDir) {
    let hub = start().await;
    let fixture = tempfile::tempdir().unwrap();
    write_fixture(fixture.path());
    hub.seed_repo("alice/tiny", fixture.path(), false).await.unwrap();
    (hub, fixture)
}

/// Commits small text files through the NDJSON commit route (no Xet upload).
pub async fn commit_text_files(hub: &Emulator, repo: &str, files: &[(&str, &str)]) -> String {
    use base64::Engine;
    let mut body = String::from("{\"key\":\"header\",\"value\":{\"summary\":\"add files\"}}\n");
    for (path, content) in files {
        let b64 = base64::engine::general_purpose::STANDARD.encode(content);
        body.push_str(
            &serde_json::json!({"key":"file","value":{"path":path,"content":b64,"encoding":"base64"}}).to_string(),
        );
        body.push('\n');
    }
    let resp = http()
        .post(format!("{}/api/models/{repo}/commit/main", hub.endpoint()))
        .bearer_auth(WRITE_TOKEN)
        .header("content-type", "application/x-ndjson")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    let v: serde_json::Value = resp.json().await.unwrap();
    v["commitOid"].as_str().unwrap().to_string()
}

/// Follows `Link: rel="next"` from `url`, collecting every page's array.
pub async fn get_all_pages(url: &str, token: Option<&str>) -> (Vec<serde_json::Value>, usize) {
    let mut out = Vec::new();
    let mut next = Some(url.to_string());
    let mut pages = 0;
    while let Some(u) = next.take() {
        let mut req = http().get(&u);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 200, "{u}");
        next = resp
            .headers()
            .get("link")
            .and_then(|l| l.to_str().ok())
            .and_then(|l| l.strip_prefix('<'))
            .and_then(|l| l.split_once(">; rel=\"next\""))
            .map(|(u, _)| u.to_string());
        let page: Vec<serde_json::Value> = resp.json().await.unwrap();
        out.extend(page);
        pages += 1;
    }
    (out, pages)
}

/// GET `url` (with a bearer token, if any) and parse the JSON answer.
pub async fn get_json<T: serde::de::DeserializeOwned>(url: &str, token: Option<&str>) -> T {
    let mut req = http().get(url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    json_of(req).await
}

/// Sends `req` and parses the JSON answer.
pub async fn json_of<T: serde::de::DeserializeOwned>(req: reqwest::RequestBuilder) -> T {
    req.send().await.unwrap().json().await.unwrap()
}
