//! OpenTelemetry export over NFS: every NFS request is a trace rooted at an
//! `nfs.<op>` span with the same attributes as FUSE's, the engine's actor
//! hops and CAS fetches below it, and the request metrics recorded.

mod common;

use std::time::Duration;

use common::nfs::*;
use common::{fixture_files, Hub, READ_TOKEN};
use fake_opentelemetry_collector::FakeCollectorServer;

#[test]
fn nfs_requests_are_traces_with_the_fuse_attributes_and_counted() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut collector = rt.block_on(FakeCollectorServer::start()).unwrap();
    let mut telemetry = hf_mount::telemetry::init(&hf_mount::telemetry::TelemetryConfig {
        otlp_endpoint: Some(collector.endpoint()),
        ..Default::default()
    })
    .unwrap();
    let hub = Hub::start();
    let want = fixture_files().into_iter().find(|(n, _)| *n == "model.safetensors").unwrap().1;
    hub.seed_repo("alice/traced", &[("model.safetensors", want.clone())], true);
    let s = serve(&hub, &["repo", "alice/traced", "--hf-token", READ_TOKEN, "--no-disk-cache"]);
    let mut c = s.connect();
    s.rt.block_on(async {
        assert!(lookup_path(&mut c, "missing").await.is_err());
        let fh = lookup_path(&mut c, "model.safetensors").await.unwrap();
        assert!(read_all(&mut c, &fh).await == want);
    });
    drop(c);
    drop(s);
    telemetry.shutdown();

    // Everything was flushed at shutdown: take all of it (more than there is, so the whole wait).
    let spans = rt.block_on(collector.exported_spans(10_000, Duration::from_secs(5)));
    let names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();
    let read = spans
        .iter()
        .filter(|s| s.name == "nfs.read")
        .find(|r| spans.iter().any(|s| s.name == "cas.read" && s.trace_id == r.trace_id))
        .unwrap_or_else(|| panic!("no nfs.read trace with a CAS fetch among {names:?}"));
    assert!(read.parent_span_id.is_empty(), "the NFS request is the root of its trace");
    for key in ["ino", "bytes", "path", "op"] {
        assert!(read.attributes.contains_key(key), "nfs.read lacks {key}: {:?}", read.attributes);
    }
    let in_trace: Vec<&str> = spans.iter().filter(|s| s.trace_id == read.trace_id).map(|s| s.name.as_str()).collect();
    assert!(in_trace.contains(&"actor.prefetch"), "{in_trace:?}");
    let failed = spans.iter().find(|s| s.name == "nfs.lookup" && s.attributes.contains_key("errno"));
    assert!(failed.is_some(), "the failed LOOKUP records its errno: {names:?}");
    assert!(!format!("{spans:?}").contains(READ_TOKEN), "the token leaked into a span");

    let metrics = rt.block_on(collector.exported_metrics(1, Duration::from_secs(10)));
    let text = format!("{metrics:?}");
    for name in ["hf_mount.requests", "hf_mount.request.duration", "hf_mount.errors"] {
        assert!(text.contains(name), "{name} not exported");
    }
}
