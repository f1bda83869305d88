//! Repo routes: info, revisions, tree listing and pagination, resolve headers,
//! token routes, commits (and their bad inputs), branches, tags, PRs, auth.

mod common;

use common::{commit_text_files, get_all_pages, get_json, http, start_seeded, OTHER_TOKEN, READ_TOKEN, WRITE_TOKEN};
use serde_json::Value;

fn is_sha(s: &str) -> bool {
    s.len() == 40 && s.chars().all(|c| c.is_ascii_hexdigit())
}

#[tokio::test(flavor = "multi_thread")]
async fn info_names_the_revision_commit_and_old_revisions_stay_readable() {
    let (hub, _fx) = start_seeded().await;
    let e = hub.endpoint();
    let info: Value = get_json(&format!("{e}/api/models/alice/tiny"), None).await;
    let first = info["sha"].as_str().unwrap().to_string();
    assert!(is_sha(&first));
    assert_eq!(info["id"], "alice/tiny");
    assert!(info["lastModified"].as_str().unwrap().ends_with('Z'));
    assert_eq!(info["private"], false);

    let second = commit_text_files(&hub, "alice/tiny", &[("config.json", "{\"v\":2}")]).await;
    assert!(is_sha(&second) && second != first);
    let at = |rev: &str| {
        let url = format!("{e}/alice/tiny/resolve/{rev}/config.json");
        async move { http().get(url).send().await.unwrap().text().await.unwrap() }
    };
    assert_eq!(at(&second).await, "{\"v\":2}");
    assert_eq!(at("main").await, "{\"v\":2}");
    assert_ne!(at(&first).await, "{\"v\":2}", "the older commit keeps its content");

    let by_rev: Value = get_json(&format!("{e}/api/models/alice/tiny/revision/{first}"), None).await;
    assert_eq!(by_rev["sha"], first.as_str());
    let unknown = http().get(format!("{e}/api/models/alice/tiny/revision/nope")).send().await.unwrap();
    assert_eq!(unknown.status(), 404);
    assert_eq!(unknown.headers()["x-error-code"], "RevisionNotFound");
    let bad = http().get(format!("{e}/api/models/alice/tiny/revision/a..b")).send().await.unwrap();
    assert_eq!(bad.status(), 400);
    assert!(bad.json::<Value>().await.unwrap()["error"].as_str().unwrap().contains("Invalid revision"));
    let missing = http().get(format!("{e}/api/models/alice/nothing")).send().await.unwrap();
    assert_eq!(missing.status(), 404);
    assert_eq!(missing.headers()["x-error-code"], "RepoNotFound");
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn tree_lists_one_level_and_pages_with_link_headers() {
    let (hub, _fx) = start_seeded().await;
    let e = hub.endpoint();
    let names: Vec<String> = (0..25).map(|i| format!("many/f{i:02}.txt")).collect();
    let files: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "x")).collect();
    commit_text_files(&hub, "alice/tiny", &files).await;
    commit_text_files(&hub, "alice/tiny", &[("many/sub/deep.txt", "d")]).await;

    let (entries, pages) = get_all_pages(&format!("{e}/api/models/alice/tiny/tree/main/many?limit=10"), None).await;
    assert_eq!(pages, 3);
    let paths: Vec<&str> = entries.iter().map(|v| v["path"].as_str().unwrap()).collect();
    let mut want: Vec<&str> = names.iter().map(String::as_str).collect();
    want.push("many/sub");
    assert_eq!(paths, want, "one level, no duplicates, no gaps");
    assert_eq!(entries.last().unwrap()["type"], "directory");

    let (all, pages) =
        get_all_pages(&format!("{e}/api/models/alice/tiny/tree/main?recursive=true&limit=7"), None).await;
    assert!(pages >= 5);
    let all_paths: Vec<&str> = all.iter().map(|v| v["path"].as_str().unwrap()).collect();
    for p in ["many/sub", "many/sub/deep.txt", "nested dir/deeper", "model.safetensors"] {
        assert!(all_paths.contains(&p), "{p} missing from recursive listing");
    }
    let mut dedup = all_paths.clone();
    dedup.sort();
    dedup.dedup();
    assert_eq!(dedup.len(), all_paths.len());

    // Entries carry what the mount needs: Xet hash and LFS size for Xet files, the git oid for blobs.
    let root: Vec<Value> = get_json(&format!("{e}/api/models/alice/tiny/tree/main"), None).await;
    let model = root.iter().find(|v| v["path"] == "model.safetensors").unwrap();
    assert_eq!(model["size"], 3 * 1024 * 1024 + 5);
    assert_eq!(model["lfs"]["size"], 3 * 1024 * 1024 + 5);
    assert_eq!(model["xetHash"].as_str().unwrap().len(), 64);
    let config = root.iter().find(|v| v["path"] == "config.json").unwrap();
    assert!(config.get("xetHash").is_none());
    assert_eq!(config["oid"].as_str().unwrap().len(), 40);

    let not_dir = http().get(format!("{e}/api/models/alice/tiny/tree/main/nope")).send().await.unwrap();
    assert_eq!(not_dir.status(), 404);
    let enc = http().get(format!("{e}/api/models/alice/tiny/tree/main/nested%20dir")).send().await.unwrap();
    assert_eq!(enc.status(), 200);
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn resolve_answers_with_the_hub_headers() {
    let (hub, fx) = start_seeded().await;
    let e = hub.endpoint();
    let head = http().head(format!("{e}/alice/tiny/resolve/main/model.safetensors")).send().await.unwrap();
    assert_eq!(head.status(), 200);
    let h = head.headers();
    let size = (3 * 1024 * 1024 + 5).to_string();
    assert_eq!(h["x-linked-size"], size.as_str());
    assert_eq!(h["content-length"], size.as_str());
    assert_eq!(h["x-xet-hash"].len(), 64);
    assert!(is_sha(h["x-repo-commit"].to_str().unwrap()));
    let sha256 = h["x-linked-etag"].to_str().unwrap().trim_matches('"').to_string();
    use sha2::Digest;
    let content = std::fs::read(fx.path().join("model.safetensors")).unwrap();
    assert_eq!(sha256, hex::encode(sha2::Sha256::digest(&content)), "the LFS etag is the sha256");
    let link = h["link"].to_str().unwrap();
    assert!(link.contains("/api/models/alice/tiny/xet-read-token/") && link.ends_with("rel=\"xet-auth\""), "{link}");

    let blob = http().head(format!("{e}/alice/tiny/resolve/main/config.json")).send().await.unwrap();
    assert!(blob.headers().get("x-xet-hash").is_none());
    let etag = blob.headers()["etag"].to_str().unwrap().to_string();
    let cached = http().get(format!("{e}/alice/tiny/resolve/main/config.json")).header("if-none-match", &etag);
    assert_eq!(cached.send().await.unwrap().status(), 304);

    // Ranged GET, for Xet files and git blobs, with awkward names percent-encoded.
    let part = http()
        .get(format!("{e}/alice/tiny/resolve/main/model.safetensors"))
        .header("range", "bytes=1000-1999")
        .send()
        .await
        .unwrap();
    assert_eq!(part.status(), 206);
    assert_eq!(part.bytes().await.unwrap().as_ref(), &content[1000..2000]);
    let odd =
        http().get(format!("{e}/alice/tiny/resolve/main/nested%20dir/notes%20%231%20100%25.txt")).send().await.unwrap();
    assert_eq!(odd.text().await.unwrap(), "hash, percent and spaces\n");
    let uni = http().get(format!("{e}/alice/tiny/resolve/main/nested%20dir/deeper/%C3%BCnic%C3%B6de.txt")).send().await;
    assert_eq!(uni.unwrap().text().await.unwrap(), "unicode \u{2713}\n");

    let missing = http().head(format!("{e}/alice/tiny/resolve/main/nope.bin")).send().await.unwrap();
    assert_eq!(missing.status(), 404);
    assert_eq!(missing.headers()["x-error-code"], "EntryNotFound");
    let past_end = http()
        .get(format!("{e}/alice/tiny/resolve/main/config.json"))
        .header("range", "bytes=9999-")
        .send()
        .await
        .unwrap();
    assert_eq!(past_end.status(), 416);
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn token_routes_answer_in_body_and_headers_and_check_rights() {
    let (hub, fx) = start_seeded().await;
    hub.seed_repo("alice/private", fx.path(), true).await.unwrap();
    let e = hub.endpoint();
    let resp = http().get(format!("{e}/api/models/alice/tiny/xet-read-token/main")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let h = resp.headers().clone();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["casUrl"], h["x-xet-cas-url"].to_str().unwrap());
    assert_eq!(body["accessToken"], h["x-xet-access-token"].to_str().unwrap());
    assert_eq!(body["exp"].as_u64().unwrap().to_string(), h["x-xet-token-expiration"].to_str().unwrap());
    assert!(body["exp"].as_u64().unwrap() > hf_hub_emulator::cas::now_unix());

    let get = |url: String, token: Option<&'static str>| async move {
        let mut r = http().get(url);
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        r.send().await.unwrap().status().as_u16()
    };
    assert_eq!(get(format!("{e}/api/models/alice/private/xet-read-token/main"), None).await, 401);
    assert_eq!(get(format!("{e}/api/models/alice/private/xet-read-token/main"), Some(OTHER_TOKEN)).await, 404);
    assert_eq!(get(format!("{e}/api/models/alice/private/xet-read-token/main"), Some(READ_TOKEN)).await, 200);
    assert_eq!(get(format!("{e}/api/models/alice/private/xet-write-token/main"), Some(READ_TOKEN)).await, 403);
    assert_eq!(get(format!("{e}/api/models/alice/private/xet-write-token/main"), Some(WRITE_TOKEN)).await, 200);
    assert_eq!(get(format!("{e}/api/models/alice/tiny/xet-write-token/main"), None).await, 401);
    assert_eq!(get(format!("{e}/api/models/alice/tiny/xet-read-token/nope"), None).await, 404);
    assert_eq!(get(format!("{e}/api/models/alice/tiny"), Some("hf_unknown")).await, 401);
    hub.stop().await;
}

async fn post_commit(e: &str, repo: &str, rev: &str, body: &str, token: &str) -> (u16, Value) {
    let resp = http()
        .post(format!("{e}/api/models/{repo}/commit/{rev}"))
        .bearer_auth(token)
        .header("content-type", "application/x-ndjson")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_commits_get_the_hubs_answer_and_change_nothing() {
    let (hub, _fx) = start_seeded().await;
    let e = hub.endpoint();
    let head = |e: String| async move {
        let v: Value = get_json(&format!("{e}/api/models/alice/tiny"), None).await;
        v["sha"].as_str().unwrap().to_string()
    };
    let before = head(e.clone()).await;
    let header = r#"{"key":"header","value":{"summary":"s"}}"#;
    let cases = [
        (format!("{header}\nnot json"), 400, "invalid NDJSON"),
        (format!("{header}\n{{\"key\":\"file\",\"value\":{{\"path\":\"../x\",\"content\":\"eA==\",\"encoding\":\"base64\"}}}}"), 400, "Invalid path"),
        (format!("{header}\n{{\"key\":\"lfsFile\",\"value\":{{\"path\":\"w.bin\",\"algo\":\"sha256\",\"oid\":\"{}\",\"size\":3}}}}", "ab".repeat(32)), 400, "was not uploaded"),
        (format!("{header}\n{{\"key\":\"deletedFile\",\"value\":{{\"path\":\"nope.txt\"}}}}"), 404, "Entry not found"),
    ];
    for (body, status, msg) in cases {
        let (got, v) = post_commit(&e, "alice/tiny", "main", &body, WRITE_TOKEN).await;
        assert_eq!(got, status, "{body}: {v}");
        assert!(v["error"].as_str().unwrap_or("").contains(msg), "{body}: {v}");
    }
    let (got, _) = post_commit(&e, "alice/tiny", "no-branch", header, WRITE_TOKEN).await;
    assert_eq!(got, 404);
    let (got, _) = post_commit(&e, "alice/tiny", "main", header, READ_TOKEN).await;
    assert_eq!(got, 403);
    let (got, _) = post_commit(&e, "alice/tiny", "main", header, OTHER_TOKEN).await;
    assert_eq!(got, 403);
    assert_eq!(head(e.clone()).await, before, "no failed commit moved main");
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn branches_tags_and_pull_requests() {
    let (hub, _fx) = start_seeded().await;
    let e = hub.endpoint();
    let c = http();
    let base = format!("{e}/api/models/alice/tiny");
    let first = commit_text_files(&hub, "alice/tiny", &[("v.txt", "1")]).await;
    let ok = |r: reqwest::Response| async move {
        let s = r.status();
        assert!(s.is_success(), "{s}: {}", r.text().await.unwrap());
    };
    ok(c.post(format!("{base}/branch/dev"))
        .bearer_auth(WRITE_TOKEN)
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap())
    .await;
    let dup = c.post(format!("{base}/branch/dev")).bearer_auth(WRITE_TOKEN).json(&serde_json::json!({})).send().await;
    assert_eq!(dup.unwrap().status(), 409);
    ok(c.post(format!("{base}/tag/main"))
        .bearer_auth(WRITE_TOKEN)
        .json(&serde_json::json!({"tag": "v1"}))
        .send()
        .await
        .unwrap())
    .await;
    commit_text_files(&hub, "alice/tiny", &[("v.txt", "2")]).await;
    let body = format!(
        "{}\n{}\n",
        r#"{"key":"header","value":{"summary":"pr"}}"#,
        r#"{"key":"file","value":{"path":"v.txt","content":"cHI=","encoding":"base64"}}"#
    );
    let resp =
        c.post(format!("{base}/commit/main?create_pr=1")).bearer_auth(WRITE_TOKEN).body(body).send().await.unwrap();
    let v: Value = resp.json().await.unwrap();
    assert!(v["pullRequestUrl"].as_str().unwrap().ends_with("/discussions/1"), "{v}");

    let read = |rev: &'static str| {
        let url = format!("{e}/alice/tiny/resolve/{rev}/v.txt");
        async move { http().get(url).send().await.unwrap().text().await.unwrap() }
    };
    assert_eq!(read("dev").await, "1");
    assert_eq!(read("v1").await, "1");
    assert_eq!(read("main").await, "2");
    assert_eq!(read("refs%2Fpr%2F1").await, "pr");
    assert_eq!(read("refs/pr/1").await, "pr");
    let pr_info: Value = c.get(format!("{base}/revision/refs%2Fpr%2F1")).send().await.unwrap().json().await.unwrap();
    assert!(is_sha(pr_info["sha"].as_str().unwrap()));
    let tree = c.get(format!("{base}/tree/refs%2Fpr%2F1")).send().await.unwrap();
    assert_eq!(tree.status(), 200);
    let dev_sha: Value = c.get(format!("{base}/revision/dev")).send().await.unwrap().json().await.unwrap();
    assert_eq!(dev_sha["sha"], first.as_str());

    let del = c.delete(format!("{base}/branch/dev")).bearer_auth(WRITE_TOKEN).send().await.unwrap();
    assert!(del.status().is_success());
    assert_eq!(c.get(format!("{base}/revision/dev")).send().await.unwrap().status(), 404);
    let del_main = c.delete(format!("{base}/branch/main")).bearer_auth(WRITE_TOKEN).send().await.unwrap();
    assert_eq!(del_main.status(), 403);
    let anon = c.post(format!("{base}/branch/x")).json(&serde_json::json!({})).send().await.unwrap();
    assert_eq!(anon.status(), 401);
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn create_repo_checks_namespace_and_conflicts() {
    let (hub, _fx) = start_seeded().await;
    let e = hub.endpoint();
    let create = |body: Value, token: Option<&'static str>| {
        let url = format!("{e}/api/repos/create");
        async move {
            let mut r = http().post(url).json(&body);
            if let Some(t) = token {
                r = r.bearer_auth(t);
            }
            r.send().await.unwrap().status().as_u16()
        }
    };
    assert_eq!(create(serde_json::json!({"name": "fresh", "type": "dataset"}), Some(WRITE_TOKEN)).await, 200);
    assert_eq!(create(serde_json::json!({"name": "fresh", "type": "dataset"}), Some(WRITE_TOKEN)).await, 409);
    assert_eq!(create(serde_json::json!({"name": "fresh", "organization": "alice"}), None).await, 401);
    assert_eq!(create(serde_json::json!({"name": "x", "organization": "alice"}), Some(OTHER_TOKEN)).await, 403);
    assert_eq!(create(serde_json::json!({"name": "x", "organization": "alice"}), Some(READ_TOKEN)).await, 403);
    assert_eq!(create(serde_json::json!({"name": "bad name!", "organization": "alice"}), Some(WRITE_TOKEN)).await, 400);
    assert_eq!(create(serde_json::json!({"nme": "typo"}), Some(WRITE_TOKEN)).await, 400);
    let info = http().get(format!("{e}/api/datasets/alice/fresh")).send().await.unwrap();
    assert_eq!(info.status(), 200);

    // A renamed repo: the old id resolves to the canonical one.
    hub.store().add_alias(&"alice/old-name".parse_repo(), &"alice/tiny".parse_repo()).unwrap();
    let v: Value = get_json(&format!("{e}/api/models/alice/old-name"), None).await;
    assert_eq!(v["id"], "alice/tiny");
    hub.stop().await;
}

trait ParseRepo {
    fn parse_repo(&self) -> hf_hub_emulator::RepoRef;
}

impl ParseRepo for &str {
    fn parse_repo(&self) -> hf_hub_emulator::RepoRef {
        hf_hub_emulator::RepoRef::parse(self).unwrap()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn info_expand_limits_the_fields() {
    let (hub, _fx) = start_seeded().await;
    let e = hub.endpoint();
    let v: Value =
        get_json(&format!("{e}/api/models/alice/tiny/revision/main?expand[]=sha&expand[]=lastModified"), None).await;
    let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(keys, ["_id", "id", "lastModified", "sha"]);
    let full: Value = get_json(&format!("{e}/api/models/alice/tiny"), None).await;
    assert_eq!(full["siblings"].as_array().unwrap().len(), 5);
    hub.stop().await;
}

#[tokio::test]
async fn repo_and_bucket_listings_filter_page_to_the_end_and_hide_private_ones() {
    let (hub, _fixture) = start_seeded().await;
    let e = hub.endpoint();
    let store = hub.store();
    for i in 0..230 {
        store.create_repo(&format!("alice/m{i:03}").as_str().parse_repo(), i % 50 == 7).unwrap();
        store.create_bucket(&format!("alice/b{i:03}"), i % 50 == 7).unwrap();
    }
    store.create_repo(&"bob/theirs".parse_repo(), false).unwrap();
    store.create_repo(&"datasets/alice/d".parse_repo(), false).unwrap();
    // Commits make the repos listable with a sha (an empty repo has one too).
    let (all, pages) = get_all_pages(&format!("{e}/api/models?author=alice"), Some(WRITE_TOKEN)).await;
    let ids: Vec<&str> = all.iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert!(pages >= 3, "{pages} pages");
    assert!(ids.contains(&"alice/m229") && ids.contains(&"alice/m007") && !ids.contains(&"bob/theirs"));
    let mut sorted = ids.clone();
    sorted.dedup();
    assert_eq!(sorted.len(), ids.len(), "no repo twice across pages");
    for m in &all {
        for key in ["id", "author", "private", "sha", "lastModified", "createdAt", "downloads", "likes", "tags"] {
            assert!(m.get(key).is_some(), "{key} missing in {m}");
        }
    }
    // Anonymous callers do not see private repos; other kinds are listed apart.
    let (anon, _) = get_all_pages(&format!("{e}/api/models?author=alice"), None).await;
    assert_eq!(anon.len(), all.len() - 5, "the 5 private repos are hidden");
    let (ds, _) = get_all_pages(&format!("{e}/api/datasets?author=alice"), None).await;
    assert_eq!(ds.iter().map(|d| d["id"].as_str().unwrap()).collect::<Vec<_>>(), ["alice/d"]);
    let (found, _) = get_all_pages(&format!("{e}/api/models?search=m22&sort=id&direction=-1"), None).await;
    let found: Vec<&str> = found.iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(found.first(), Some(&"alice/m229"));
    assert_eq!(found.len(), 10);
    // Buckets of a namespace, `me` for the caller's own.
    let (bk, pages) = get_all_pages(&format!("{e}/api/buckets/me"), Some(WRITE_TOKEN)).await;
    assert!(pages >= 3 && bk.len() == 230, "{} buckets in {pages} pages", bk.len());
    assert!(bk.iter().all(|b| b.get("totalFiles").is_some() && b.get("createdAt").is_some()));
    let (anon, _) = get_all_pages(&format!("{e}/api/buckets/alice"), None).await;
    assert_eq!(anon.len(), 225);
    let r = http().get(format!("{e}/api/models?sort=bogus")).send().await.unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.json::<Value>().await.unwrap()["error"].is_string());
    hub.stop().await;
}
