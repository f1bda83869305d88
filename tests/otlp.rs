//! OpenTelemetry export: `cat` of a file through a mount is one trace with a
//! root span for the kernel read and children for actor hops and the CAS
//! fetch, correctly parented; the token appears nowhere; metrics show the bytes read.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{fixture_files, try_mount, Hub, READ_TOKEN};
use fake_opentelemetry_collector::FakeCollectorServer;

#[test]
fn a_read_is_one_trace_with_actor_and_cas_children_and_no_token() {
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
    let m = try_mount(&hub, &["repo", "alice/traced", "--hf-token", READ_TOKEN, "--no-disk-cache"]).unwrap();
    let out = std::process::Command::new("cat").arg(m.p("model.safetensors")).output().unwrap();
    assert!(out.stdout == want, "cat through the mount");
    drop(m);
    telemetry.shutdown();

    let spans = rt.block_on(collector.exported_spans(20, Duration::from_secs(10)));
    let by_id: HashMap<&str, _> = spans.iter().map(|s| (s.span_id.as_str(), s)).collect();
    let reads: Vec<_> = spans.iter().filter(|s| s.name == "fuse.read").collect();
    assert!(!reads.is_empty(), "no fuse.read span among {:?}", spans.iter().map(|s| &s.name).collect::<Vec<_>>());
    // The first read of the file fetched from the CAS: find its trace.
    let root = reads
        .iter()
        .find(|r| spans.iter().any(|s| s.name == "cas.read" && s.trace_id == r.trace_id))
        .expect("a fuse.read trace with a CAS fetch");
    assert!(root.parent_span_id.is_empty(), "the kernel read is the root of its trace");
    assert!(root.attributes.contains_key("ino") && root.attributes.contains_key("bytes"), "{:?}", root.attributes);
    // The collector renders values as `Some(AnyValue { value: Some(IntValue(4)) })`: keep the innermost part.
    let attr = |key: &str| {
        let raw = root.attributes.get(key).cloned().unwrap_or_default();
        let inner = raw.rsplit('(').next().unwrap_or("").split(')').next().unwrap_or("");
        inner.trim_matches('"').to_string()
    };
    assert_eq!(attr("path"), "model.safetensors");
    assert!(attr("cache.misses").parse::<u64>().is_ok_and(|n| n > 0), "{:?}", root.attributes);
    assert!(attr("bytes").parse::<u64>().is_ok_and(|n| n > 0), "{:?}", root.attributes);
    let in_trace: Vec<_> = spans.iter().filter(|s| s.trace_id == root.trace_id).collect();
    let names: Vec<&str> = in_trace.iter().map(|s| s.name.as_str()).collect();
    for want in ["actor.prefetch", "actor.chunk_cache", "cas.read"] {
        assert!(names.contains(&want), "{want} missing from the trace: {names:?}");
    }
    // Every span of the trace leads up to the root through known parents.
    for s in &in_trace {
        let mut cur = *s;
        let mut hops = 0;
        while !cur.parent_span_id.is_empty() {
            cur = by_id.get(cur.parent_span_id.as_str()).unwrap_or_else(|| panic!("{} has an unknown parent", s.name));
            hops += 1;
            assert!(hops < 20);
        }
        assert_eq!(cur.span_id, root.span_id, "{} is not under the read", s.name);
    }
    let actor_hop = in_trace.iter().find(|s| s.name == "actor.prefetch").unwrap();
    assert_eq!(actor_hop.parent_span_id, root.span_id, "actor hops are direct children of the request");
    // Hub HTTP calls are traced too (the lookup's listing), with status codes.
    assert!(spans.iter().any(|s| s.name.starts_with("GET ") && s.attributes.contains_key("http.status_code")));
    let everything = format!("{spans:?}");
    assert!(!everything.contains(READ_TOKEN), "the token leaked into a span");

    let metrics = rt.block_on(collector.exported_metrics(1, Duration::from_secs(10)));
    let text = format!("{metrics:?}");
    assert!(!text.contains(READ_TOKEN));
    // The collector's metric types are not public; read its serde view.
    fn numbers_under_value(v: &serde_json::Value, out: &mut Vec<f64>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, x) in m {
                    if k == "value" {
                        let mut nums = Vec::new();
                        collect_numbers(x, &mut nums);
                        out.extend(nums);
                    } else {
                        numbers_under_value(x, out);
                    }
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|x| numbers_under_value(x, out)),
            _ => {}
        }
    }
    fn collect_numbers(v: &serde_json::Value, out: &mut Vec<f64>) {
        match v {
            serde_json::Value::Number(n) => out.extend(n.as_f64()),
            serde_json::Value::Object(m) => m.values().for_each(|x| collect_numbers(x, out)),
            serde_json::Value::Array(a) => a.iter().for_each(|x| collect_numbers(x, out)),
            _ => {}
        }
    }
    let json = serde_json::to_value(&metrics).unwrap();
    let mut values = Vec::new();
    for exported in json.as_array().unwrap() {
        for m in exported["metrics"].as_array().unwrap() {
            if m["name"] == "hf_mount.read.bytes" {
                numbers_under_value(&m["data"], &mut values);
            }
        }
    }
    let read_bytes: f64 = values.iter().sum();
    assert!(read_bytes >= want.len() as f64, "hf_mount.read.bytes = {read_bytes}, read {}", want.len());
    for name in [
        "hf_mount.requests",
        "hf_mount.request.duration",
        "hf_mount.fetch.bytes",
        "hf_mount.actor.mailbox",
        "hf_mount.cas.plans",
    ] {
        assert!(text.contains(name), "{name} not exported");
    }
}
