//! Bucket routes: create/info/delete, raw-prefix tree and paging, paths-info,
//! atomic NDJSON batches, HEAD resolve, tokens and access rules.

mod common;

use common::{get_all_pages, get_json, http, json_of, start, OTHER_TOKEN, READ_TOKEN, WRITE_TOKEN};
use serde_json::{json, Value};

async fn batch(e: &str, id: &str, lines: &[Value], token: &str) -> (u16, Value) {
    let body: String = lines.iter().map(|l| format!("{l}\n")).collect();
    let resp = http()
        .post(format!("{e}/api/buckets/{id}/batch"))
        .bearer_auth(token)
        .header("content-type", "application/x-ndjson")
        .body(body)
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap_or(Value::Null))
}

async fn keys(e: &str, id: &str) -> Vec<String> {
    let (all, _) = get_all_pages(&format!("{e}/api/buckets/{id}/tree?recursive=true"), Some(WRITE_TOKEN)).await;
    all.iter().map(|v| v["path"].as_str().unwrap().to_string()).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn bucket_lifecycle_raw_prefix_listing_and_atomic_batches() {
    let hub = start().await;
    let e = hub.endpoint();
    let fx = tempfile::tempdir().unwrap();
    // a/1.manifest cannot be both a file and a folder on disk: seed the folder from a second tree.
    for (rel, content) in [("a/1.manifest", "m"), ("a/1.manifest#1", "m1"), ("b/c/d.bin", "d")] {
        let p = fx.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    }
    hub.seed_bucket("alice/store", fx.path(), false).await.unwrap();
    let fx2 = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(fx2.path().join("a/1.manifest")).unwrap();
    std::fs::write(fx2.path().join("a/1.manifest/part"), "p").unwrap();
    hub.seed_bucket("alice/store", fx2.path(), false).await.unwrap();

    let info: Value = get_json(&format!("{e}/api/buckets/alice/store"), None).await;
    assert_eq!(info["id"], "alice/store");
    assert_eq!(info["totalFiles"], 4);
    assert!(info["updatedAt"].as_str().unwrap().ends_with('Z'));

    // Raw prefix: listing a/1.manifest also returns a/1.manifest#1 (not a strict descendant).
    let list: Vec<Value> = get_json(&format!("{e}/api/buckets/alice/store/tree/a%2F1.manifest"), None).await;
    let paths: Vec<&str> = list.iter().map(|v| v["path"].as_str().unwrap()).collect();
    assert_eq!(paths, ["a/1.manifest", "a/1.manifest#1", "a/1.manifest/part"]);
    let file = &list[0];
    assert_eq!(file["type"], "file");
    assert_eq!(file["size"], 1);
    assert_eq!(file["xetHash"].as_str().unwrap().len(), 64);
    assert!(file["mtime"].as_str().is_some());
    let root: Vec<Value> = get_json(&format!("{e}/api/buckets/alice/store/tree"), None).await;
    let root: Vec<(&str, &str)> =
        root.iter().map(|v| (v["type"].as_str().unwrap(), v["path"].as_str().unwrap())).collect();
    assert_eq!(root, [("directory", "a"), ("directory", "b")]);

    // paths-info answers files only, skipping unknown paths.
    let pi: Vec<Value> = json_of(
        http()
            .post(format!("{e}/api/buckets/alice/store/paths-info"))
            .json(&json!({"paths": ["b/c/d.bin", "nope", "b"]})),
    )
    .await;
    assert_eq!(pi.len(), 1);
    assert_eq!(pi[0]["path"], "b/c/d.bin");
    let hash = pi[0]["xetHash"].as_str().unwrap().to_string();

    // Copy by hash, then delete: a valid batch applies whole.
    let (s, v) = batch(
        &e,
        "alice/store",
        &[
            json!({"type": "addFile", "path": "copy/d.bin", "xetHash": hash, "mtime": 1_700_000_000_000_i64}),
            json!({"type": "deleteFile", "path": "b/c/d.bin"}),
        ],
        WRITE_TOKEN,
    )
    .await;
    assert_eq!((s, v), (200, json!({"failed": []})));
    let after = keys(&e, "alice/store").await;
    assert!(after.contains(&"copy/d.bin".to_string()) && !after.contains(&"b/c/d.bin".to_string()));
    let copied: Vec<Value> =
        json_of(http().post(format!("{e}/api/buckets/alice/store/paths-info")).json(&json!({"paths": ["copy/d.bin"]})))
            .await;
    assert_eq!(copied[0]["mtime"], "2023-11-14T22:13:20.000Z");
    assert_eq!(copied[0]["size"], 1, "size comes from the CAS, not the client");

    // Bad batches change nothing: delete before add, unknown hash, bad path, bad JSON.
    let before = keys(&e, "alice/store").await;
    let bad: Vec<(Vec<Value>, u16)> = vec![
        (
            vec![
                json!({"type": "deleteFile", "path": "copy/d.bin"}),
                json!({"type": "addFile", "path": "z", "xetHash": hash}),
            ],
            400,
        ),
        (
            vec![
                json!({"type": "addFile", "path": "y", "xetHash": hash}),
                json!({"type": "addFile", "path": "z", "xetHash": "00".repeat(32)}),
            ],
            404,
        ),
        (vec![json!({"type": "addFile", "path": "../up", "xetHash": hash})], 400),
        (vec![json!({"type": "addFile", "path": "z", "xetHash": "not-hex"})], 400),
        (vec![json!({"type": "launchRocket"})], 400),
    ];
    for (lines, status) in bad {
        let (s, v) = batch(&e, "alice/store", &lines, WRITE_TOKEN).await;
        assert_eq!(s, status, "{lines:?}: {v}");
        assert!(v["error"].is_string(), "{v}");
    }
    assert_eq!(keys(&e, "alice/store").await, before);

    // HEAD resolve of a bucket file (path encoded as the Python client does).
    let head = http().head(format!("{e}/buckets/alice/store/resolve/copy%2Fd.bin")).send().await.unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(head.headers()["x-xet-hash"], hash.as_str());
    assert_eq!(head.headers()["content-length"], "1");
    assert!(head.headers()["link"].to_str().unwrap().contains("/api/buckets/alice/store/xet-read-token"));
    let get = http().get(format!("{e}/buckets/alice/store/resolve/a/1.manifest%231")).send().await.unwrap();
    assert_eq!(get.text().await.unwrap(), "m1");

    // Create conflicts, delete removes.
    let dup =
        http().post(format!("{e}/api/buckets/alice/store")).bearer_auth(WRITE_TOKEN).json(&json!({})).send().await;
    assert_eq!(dup.unwrap().status(), 409);
    let del = http().delete(format!("{e}/api/buckets/alice/store")).bearer_auth(WRITE_TOKEN).send().await.unwrap();
    assert!(del.status().is_success());
    assert_eq!(http().get(format!("{e}/api/buckets/alice/store")).send().await.unwrap().status(), 404);
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bucket_tree_pages_by_link() {
    let hub = start().await;
    let e = hub.endpoint();
    let fx = tempfile::tempdir().unwrap();
    std::fs::write(fx.path().join("seed.bin"), b"s").unwrap();
    hub.seed_bucket("alice/many", fx.path(), false).await.unwrap();
    let hash: Vec<Value> = get_json(&format!("{e}/api/buckets/alice/many/tree"), None).await;
    let hash = hash[0]["xetHash"].as_str().unwrap().to_string();
    let adds: Vec<Value> =
        (0..120).map(|i| json!({"type": "addFile", "path": format!("d/k{i:03}"), "xetHash": hash})).collect();
    assert_eq!(batch(&e, "alice/many", &adds, WRITE_TOKEN).await.0, 200);
    let (level, pages) = get_all_pages(&format!("{e}/api/buckets/alice/many/tree/d?limit=50"), None).await;
    assert_eq!(pages, 3);
    let paths: Vec<String> = level.iter().map(|v| v["path"].as_str().unwrap().to_string()).collect();
    let want: Vec<String> = (0..120).map(|i| format!("d/k{i:03}")).collect();
    assert_eq!(paths, want);
    let (all, pages) = get_all_pages(&format!("{e}/api/buckets/alice/many/tree?recursive=true&limit=32"), None).await;
    assert_eq!(pages, 4);
    assert_eq!(all.len(), 121);
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bucket_access_rules() {
    let hub = start().await;
    let e = hub.endpoint();
    let fx = tempfile::tempdir().unwrap();
    std::fs::write(fx.path().join("x.bin"), b"x").unwrap();
    hub.seed_bucket("alice/priv", fx.path(), true).await.unwrap();
    let status = |method: reqwest::Method, path: &str, token: Option<&str>| {
        let mut r = http().request(method, format!("{e}{path}"));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        async move { r.json(&json!({})).send().await.unwrap().status().as_u16() }
    };
    use reqwest::Method;
    assert_eq!(status(Method::GET, "/api/buckets/alice/priv", None).await, 401);
    assert_eq!(status(Method::GET, "/api/buckets/alice/priv", Some(OTHER_TOKEN)).await, 404);
    assert_eq!(status(Method::GET, "/api/buckets/alice/priv", Some(READ_TOKEN)).await, 200);
    assert_eq!(status(Method::GET, "/api/buckets/alice/priv/tree", None).await, 401);
    assert_eq!(status(Method::HEAD, "/buckets/alice/priv/resolve/x.bin", None).await, 401);
    assert_eq!(status(Method::HEAD, "/buckets/alice/priv/resolve/x.bin", Some(READ_TOKEN)).await, 200);
    assert_eq!(status(Method::GET, "/api/buckets/alice/priv/xet-read-token", Some(READ_TOKEN)).await, 200);
    assert_eq!(status(Method::GET, "/api/buckets/alice/priv/xet-write-token", Some(READ_TOKEN)).await, 403);
    assert_eq!(status(Method::GET, "/api/buckets/alice/priv/xet-write-token", Some(WRITE_TOKEN)).await, 200);
    assert_eq!(status(Method::POST, "/api/buckets/alice/priv/batch", Some(READ_TOKEN)).await, 403);
    assert_eq!(status(Method::POST, "/api/buckets/bob/new", Some(WRITE_TOKEN)).await, 403);
    assert_eq!(status(Method::POST, "/api/buckets/me/mine", Some(OTHER_TOKEN)).await, 200);
    assert_eq!(status(Method::GET, "/api/buckets/bob/mine", None).await, 200);
    assert_eq!(status(Method::DELETE, "/api/buckets/bob/mine", Some(WRITE_TOKEN)).await, 403);
    let who: Value = get_json(&format!("{e}/api/whoami-v2"), Some(READ_TOKEN)).await;
    assert_eq!(who["name"], "alice");
    assert_eq!(who["auth"]["accessToken"]["role"], "read");
    assert_eq!(status(Method::GET, "/api/whoami-v2", None).await, 401);
    hub.stop().await;
}
