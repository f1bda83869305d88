//! The CAS front: byte-exact reads through xet-core's client, fetch URLs
//! pointing at the seeking data route, the same bytes as xet-core's own
//! route, CAS tokens (checked, expiring, refreshed) and expiring fetch URLs.

mod common;

use common::{bytes, get_json, http, json_of, start_seeded, WRITE_TOKEN};
use hf_hub_emulator::testing::XetReader;
use hf_hub_emulator::{FaultKind, FaultSpec, RouteClass};
use serde_json::{json, Value};

/// `(casUrl, accessToken)` from a read-token route.
async fn cas_token(e: &str) -> (String, String) {
    let v: Value = get_json(&format!("{e}/api/models/alice/tiny/xet-read-token/main"), None).await;
    (v["casUrl"].as_str().unwrap().into(), v["accessToken"].as_str().unwrap().into())
}

/// `(casUrl, accessToken)` from a write-token route.
async fn cas_write_token(e: &str) -> (String, String) {
    let v: Value = get_json(&format!("{e}/api/models/alice/tiny/xet-write-token/main"), Some(WRITE_TOKEN)).await;
    (v["casUrl"].as_str().unwrap().into(), v["accessToken"].as_str().unwrap().into())
}

async fn xet_hash(e: &str) -> String {
    let h = http().head(format!("{e}/alice/tiny/resolve/main/model.safetensors")).send().await.unwrap();
    h.headers()["x-xet-hash"].to_str().unwrap().to_string()
}

const SIZE: u64 = 3 * 1024 * 1024 + 5;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn xet_client_reads_whole_files_and_random_ranges_byte_exact() {
    common::fast_xet_retries();
    let (hub, _fx) = start_seeded().await;
    let e = hub.endpoint();
    let want = bytes(1, SIZE as usize);
    let hash = xet_hash(&e).await;
    let reader = XetReader::connect(&format!("{e}/api/models/alice/tiny/xet-read-token/main"), None).await.unwrap();
    let mut whole = Vec::new();
    reader.stream_all(&hash, SIZE, |b| whole.extend_from_slice(b)).await.unwrap();
    assert!(whole == want, "whole-file read differs");
    let mut x = 12345u64;
    for _ in 0..200 {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let start = (x >> 20) % SIZE;
        let len = 1 + (x >> 7) % 70_000;
        let end = (start + len).min(SIZE);
        let got = reader.read(&hash, SIZE, start..end).await.unwrap();
        assert!(got == want[start as usize..end as usize], "range {start}..{end} differs");
    }
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn reconstruction_urls_point_at_the_seeking_route_which_matches_xet_core() {
    let (hub, _fx) = start_seeded().await;
    let e = hub.endpoint();
    let (cas, token) = cas_token(&e).await;
    let hash = xet_hash(&e).await;
    let recon: Value = json_of(
        http().get(format!("{cas}/v2/reconstructions/{hash}")).bearer_auth(&token).header("range", "bytes=0-99999"),
    )
    .await;
    let (xorb, fetches) = recon["xorbs"].as_object().unwrap().iter().next().unwrap();
    let fetch = &fetches[0];
    let url = fetch["url"].as_str().unwrap();
    assert!(url.starts_with(&format!("{e}/cas/xorb-data/{xorb}?exp=")), "{url}");
    let r = &fetch["ranges"][0]["bytes"];
    let (start, end) = (r["start"].as_u64().unwrap(), r["end"].as_u64().unwrap());

    // The same xorb bytes from xet-core's own LocalServer route.
    let inner: Value = json_of(
        http().get(format!("{}/v2/reconstructions/{hash}", hub.cas().inner_url())).header("range", "bytes=0-99999"),
    )
    .await;
    let inner_url = inner["xorbs"][xorb][0]["url"].as_str().unwrap().to_string();
    let range = format!("bytes={start}-{end}");
    let ours = http().get(url).header("range", &range).send().await.unwrap();
    assert_eq!(ours.status(), 206);
    let theirs = http().get(&inner_url).header("range", &range).send().await.unwrap();
    assert_eq!(ours.bytes().await.unwrap(), theirs.bytes().await.unwrap());

    // Two ranges at once come back as multipart/byteranges with the right parts.
    let multi = http().get(url).header("range", "bytes=0-9,100-109").send().await.unwrap();
    assert!(multi.headers()["content-type"].to_str().unwrap().starts_with("multipart/byteranges"));
    let body = multi.bytes().await.unwrap();
    let first = http().get(url).header("range", "bytes=0-9").send().await.unwrap().bytes().await.unwrap();
    assert!(body.windows(10).any(|w| w == first.as_ref()));
    assert!(String::from_utf8_lossy(&body).contains("Content-Range: bytes 100-109/"));

    let beyond = http().get(url).header("range", "bytes=999999999-").send().await.unwrap();
    assert_eq!(beyond.status(), 416);
    let expired = url.split("?exp=").next().unwrap().to_string() + "?exp=1";
    assert_eq!(http().get(expired).header("range", "bytes=0-9").send().await.unwrap().status(), 403);
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn cas_tokens_are_checked_and_expire() {
    let (hub, _fx) = start_seeded().await;
    let e = hub.endpoint();
    let hash = xet_hash(&e).await;
    let (cas, token) = cas_token(&e).await;
    let recon = |t: Option<String>| {
        let mut r = http().get(format!("{cas}/v2/reconstructions/{hash}"));
        if let Some(t) = t {
            r = r.bearer_auth(t);
        }
        async move { r.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(recon(Some(token.clone())).await, 200);
    assert_eq!(recon(None).await, 401);
    assert_eq!(recon(Some("xet_forged".into())).await, 401);
    // A read token cannot upload.
    let up = http().post(format!("{cas}/v1/shards")).bearer_auth(&token).body("x").send().await.unwrap();
    assert_eq!(up.status(), 403);
    // Tokens minted with a zero lifetime are expired at once.
    let ttl = http().post(format!("{e}/_emulator/cas-ttl")).json(&json!({"token_secs": 0})).send().await.unwrap();
    assert_eq!(ttl.status(), 204);
    let (_, dead) = cas_token(&e).await;
    assert_eq!(recon(Some(dead)).await, 401);
    assert_eq!(recon(Some(token)).await, 200, "tokens minted before keep their lifetime");
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn xet_client_refreshes_expired_tokens_and_urls_through_the_hub() {
    common::fast_xet_retries();
    let (hub, _fx) = start_seeded().await;
    let e = hub.endpoint();
    let hash = xet_hash(&e).await;
    hub.cas().set_token_ttl(std::time::Duration::from_secs(2));
    // A zero-latency fault on the token route counts its hits.
    let counter = hub.faults().add(FaultSpec::new(RouteClass::Tokens, FaultKind::Latency { ms: 0 })).unwrap();
    let reader = XetReader::connect(&format!("{e}/api/models/alice/tiny/xet-read-token/main"), None).await.unwrap();
    let want = bytes(1, SIZE as usize);
    assert!(reader.read(&hash, SIZE, 0..1000).await.unwrap() == want[..1000]);
    tokio::time::sleep(std::time::Duration::from_millis(3100)).await;
    assert!(reader.read(&hash, SIZE, 2_000_000..2_100_000).await.unwrap() == want[2_000_000..2_100_000]);
    let hits = hub.faults().list().into_iter().find(|r| r.id == counter).unwrap().hits;
    assert!(hits >= 2, "the client must have refreshed its token ({hits} token requests)");
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn xet_client_survives_one_failing_data_fetch() {
    common::fast_xet_retries();
    let (hub, _fx) = start_seeded().await;
    let e = hub.endpoint();
    let hash = xet_hash(&e).await;
    let want = bytes(1, SIZE as usize);
    let reader = XetReader::connect(&format!("{e}/api/models/alice/tiny/xet-read-token/main"), None).await.unwrap();
    for kind in [FaultKind::Error { status: 503 }, FaultKind::Reset] {
        let id = hub.faults().add(FaultSpec::new(RouteClass::CasData, kind.clone()).times(1)).unwrap();
        let got = reader.read(&hash, SIZE, 500_000..600_000).await.unwrap();
        assert!(got == want[500_000..600_000], "{kind:?}");
        let rule = hub.faults().list().into_iter().find(|r| r.id == id).unwrap();
        assert_eq!((rule.hits, rule.remaining), (1, Some(0)), "{kind:?} was injected once");
    }
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn uploads_through_the_front_need_a_write_token() {
    let (hub, _fx) = start_seeded().await;
    let e = hub.endpoint();
    let v: Value = get_json(&format!("{e}/api/models/alice/tiny/xet-write-token/main"), Some(WRITE_TOKEN)).await;
    let cas = v["casUrl"].as_str().unwrap();
    // A garbage shard reaches xet-core, which rejects it: the front let the write through.
    let up = http()
        .post(format!("{cas}/v1/shards"))
        .bearer_auth(v["accessToken"].as_str().unwrap())
        .body("not a shard")
        .send()
        .await
        .unwrap();
    assert!(up.status().is_client_error() || up.status().is_server_error());
    assert_ne!(up.status(), 401);
    assert_ne!(up.status(), 403);
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_xorb_upload_api_takes_a_whole_xorb() {
    let (hub, _fx) = start_seeded().await;
    let e = hub.endpoint();
    let (cas, token) = cas_write_token(&e).await;
    // `POST /v1/xorbs` (the upload path of xet clients before 1.8, and of small files): 64 MiB
    // of chunks and their headers reach xet-core's server, which judges them (this is not a
    // xorb); the front refused every body past 2 MiB.
    let body = vec![7u8; (64 << 20) + 4096];
    let hash = "0".repeat(64);
    let up = http().post(format!("{cas}/v1/xorbs/default/{hash}")).bearer_auth(&token).body(body).send().await.unwrap();
    assert_ne!(up.status(), 413, "the front refused a whole xorb");
    assert!(!up.status().is_success(), "xet-core's server took garbage as a xorb");
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_goes_away_mid_upload_does_not_cancel_the_cas_backend() {
    use std::time::{Duration, Instant};
    let (hub, _fx) = start_seeded().await;
    let e = hub.endpoint();
    let (cas, token) = cas_write_token(&e).await;
    let before = hub.cas().shard_count().await.unwrap();
    // A valid shard (empty), sent by a client that gives up while the backend is still busy.
    let shard = xet_core_structures::metadata_shard::shard_in_memory::MDBInMemoryShard::default().to_bytes().unwrap();
    hub.cas().set_backend_delay(Some(Duration::from_millis(600)..Duration::from_millis(601)));
    let impatient = reqwest::Client::builder().timeout(Duration::from_millis(150)).no_proxy().build().unwrap();
    let sent = impatient.post(format!("{cas}/v1/shards")).bearer_auth(&token).body(shard).send().await;
    assert!(sent.is_err_and(|e| e.is_timeout()), "the client was meant to give up first");
    // The backend finishes the upload all the same (cancelled half-way, xet-core's server can
    // leave its shard index failed for good: every later shard upload would answer 500).
    let t = Instant::now();
    while hub.cas().shard_count().await.unwrap() == before {
        assert!(t.elapsed() < Duration::from_secs(10), "the upload was cancelled with its client");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    hub.cas().set_backend_delay(None);
    hub.stop().await;
}
