//! Fault injection, each kind, through the admin HTTP route and the Rust API.

mod common;

use std::time::{Duration, Instant};

use common::{http, start_seeded};
use hf_hub_emulator::{FaultKind, FaultSpec, RouteClass};
use serde_json::{json, Value};

async fn add(e: &str, spec: Value) -> u64 {
    let resp = http().post(format!("{e}/_emulator/faults")).json(&spec).send().await.unwrap();
    assert_eq!(resp.status(), 200, "{spec}");
    resp.json::<Value>().await.unwrap()["ids"][0].as_u64().unwrap()
}

async fn clear(e: &str) {
    assert_eq!(http().delete(format!("{e}/_emulator/faults")).send().await.unwrap().status(), 204);
}

#[tokio::test(flavor = "multi_thread")]
async fn each_fault_kind_does_what_it_says() {
    let (hub, _fx) = start_seeded().await;
    let e = hub.endpoint();
    let info = format!("{e}/api/models/alice/tiny");
    let token = format!("{e}/api/models/alice/tiny/xet-read-token/main");

    // Latency: served, but late.
    add(&e, json!({"class": "hub_metadata", "kind": "latency", "ms": 300, "times": 1})).await;
    let t = Instant::now();
    assert_eq!(http().get(&info).send().await.unwrap().status(), 200);
    assert!(t.elapsed() >= Duration::from_millis(300));
    let t = Instant::now();
    http().get(&info).send().await.unwrap();
    assert!(t.elapsed() < Duration::from_millis(250), "only the next request was delayed");

    // Throttle: the body arrives whole, no faster than the rate.
    let want = http().get(&info).send().await.unwrap().bytes().await.unwrap();
    add(&e, json!({"class": "hub_metadata", "kind": "throttle", "bytes_per_sec": want.len() * 2, "times": 1})).await;
    let t = Instant::now();
    let got = http().get(&info).send().await.unwrap().bytes().await.unwrap();
    assert!(t.elapsed() >= Duration::from_millis(450), "{} bytes in {:?}", got.len(), t.elapsed());
    assert_eq!(got, want);

    // Error status for the next 2 requests, then normal service.
    add(&e, json!({"class": "hub_metadata", "kind": "error", "status": 503, "times": 2})).await;
    let statuses: Vec<u16> = futures_statuses(&info, 3).await;
    assert_eq!(statuses, [503, 503, 200]);

    // 429 with an IETF RateLimit header.
    add(&e, json!({"class": "tokens", "kind": "rate_limit", "reset_secs": 7, "times": 1})).await;
    let r = http().get(&token).send().await.unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["ratelimit"], "\"api\";r=0;t=7");
    assert!(r.headers().contains_key("ratelimit-policy"));

    // Expired token.
    add(&e, json!({"class": "tokens", "kind": "expired_token", "times": 1})).await;
    assert_eq!(http().get(&token).send().await.unwrap().status(), 401);
    assert_eq!(http().get(&token).send().await.unwrap().status(), 200);

    // Stall: no answer at all, while other classes keep answering at once.
    add(&e, json!({"class": "hub_metadata", "kind": "stall"})).await;
    let short = reqwest::Client::builder().no_proxy().timeout(Duration::from_millis(500)).build().unwrap();
    let stalled = tokio::spawn(async move { short.get(&info).send().await });
    let t = Instant::now();
    assert_eq!(http().get(&token).send().await.unwrap().status(), 200);
    assert!(t.elapsed() < Duration::from_millis(200));
    let err = stalled.await.unwrap().unwrap_err();
    assert!(err.is_timeout(), "{err}");
    clear(&e).await;

    // Reset: the connection drops without an answer, fast.
    add(&e, json!({"class": "hub_metadata", "kind": "reset", "times": 1})).await;
    let t = Instant::now();
    let err = http().get(format!("{e}/api/models/alice/tiny")).send().await.unwrap_err();
    assert!(!err.is_timeout() && t.elapsed() < Duration::from_secs(2), "{err}");
    assert_eq!(http().get(format!("{e}/api/models/alice/tiny")).send().await.unwrap().status(), 200);

    // The admin API itself never faults, even with a rule on every class.
    clear(&e).await;
    for class in ["hub_metadata", "tokens", "hub_write", "bucket_batch", "cas_reconstruction", "cas_data", "cas_upload"]
    {
        add(&e, json!({"class": class, "kind": "stall"})).await;
    }
    let list: Vec<Value> = http().get(format!("{e}/_emulator/faults")).send().await.unwrap().json().await.unwrap();
    assert_eq!(list.len(), 7);
    clear(&e).await;
    hub.stop().await;
}

async fn futures_statuses(url: &str, n: usize) -> Vec<u16> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(http().get(url).send().await.unwrap().status().as_u16());
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn probability_is_reproducible_with_a_seed_and_rules_are_listable() {
    let (hub, _fx) = start_seeded().await;
    let e = hub.endpoint();
    let url = format!("{e}/api/models/alice/tiny");
    let mut patterns = Vec::new();
    for seed in [11, 11, 12] {
        let id =
            add(&e, json!({"class": "hub_metadata", "kind": "error", "status": 500, "probability": 0.5, "seed": seed}))
                .await;
        let pattern = futures_statuses(&url, 40).await;
        let list: Vec<Value> = http().get(format!("{e}/_emulator/faults")).send().await.unwrap().json().await.unwrap();
        let rule = list.iter().find(|r| r["id"] == id).unwrap();
        assert_eq!(rule["hits"].as_u64().unwrap() as usize, pattern.iter().filter(|s| **s == 500).count());
        assert_eq!(rule["probability"], 0.5);
        let del = http().delete(format!("{e}/_emulator/faults/{id}")).send().await.unwrap();
        assert_eq!(del.status(), 204);
        patterns.push(pattern);
    }
    assert_eq!(patterns[0], patterns[1], "same seed, same faults");
    assert_ne!(patterns[0], patterns[2], "another seed, other faults");
    let hits = patterns[0].iter().filter(|s| **s == 500).count();
    assert!((8..=32).contains(&hits), "{hits} of 40 at p=0.5");

    // path_contains narrows a rule to matching paths.
    hub.faults()
        .add(FaultSpec::new(RouteClass::HubMetadata, FaultKind::Error { status: 502 }).path_contains("/resolve/"))
        .unwrap();
    assert_eq!(http().get(&url).send().await.unwrap().status(), 200);
    let r = http().get(format!("{e}/alice/tiny/resolve/main/config.json")).send().await.unwrap();
    assert_eq!(r.status(), 502);
    hub.faults().clear();

    // Bad specs are refused with a reason.
    for bad in [
        json!({"class": "hub_metadata", "kind": "error", "status": 200}),
        json!({"class": "hub_metadata", "kind": "stall", "probability": 2.0}),
        json!({"class": "nowhere", "kind": "stall"}),
        json!({"class": "hub_metadata", "kind": "explode"}),
    ] {
        let r = http().post(format!("{e}/_emulator/faults")).json(&bad).send().await.unwrap();
        assert_eq!(r.status(), 400, "{bad}");
        assert!(r.json::<Value>().await.unwrap()["error"].is_string());
    }
    let missing = http().delete(format!("{e}/_emulator/faults/999")).send().await.unwrap();
    assert_eq!(missing.status(), 404);
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn faults_hit_write_and_batch_routes() {
    let (hub, _fx) = start_seeded().await;
    let e = hub.endpoint();
    add(&e, json!({"class": "hub_write", "kind": "error", "status": 500, "times": 1})).await;
    let body = "{\"key\":\"header\",\"value\":{\"summary\":\"s\"}}\n";
    let commit = |url: String| async move {
        http().post(url).bearer_auth(common::WRITE_TOKEN).body(body).send().await.unwrap().status().as_u16()
    };
    assert_eq!(commit(format!("{e}/api/models/alice/tiny/commit/main")).await, 500);
    assert_eq!(commit(format!("{e}/api/models/alice/tiny/commit/main")).await, 200);
    add(&e, json!({"class": "bucket_batch", "kind": "error", "status": 507, "times": 1})).await;
    let r = http().post(format!("{e}/api/buckets/alice/none/batch")).bearer_auth(common::WRITE_TOKEN).body("").send();
    assert_eq!(r.await.unwrap().status(), 507);
    hub.stop().await;
}
