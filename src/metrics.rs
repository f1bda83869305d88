//! Every metric hf-mount exports, its name and meaning, in one place (the
//! README lists the same). Instruments come from the global meter: without
//! an OTLP endpoint it is a no-op and recording costs next to nothing.

use std::sync::OnceLock;

use opentelemetry::metrics::{Counter, Histogram};
use opentelemetry::KeyValue;

pub struct Metrics {
    /// `hf_mount.requests` {op}: kernel requests answered.
    pub requests: Counter<u64>,
    /// `hf_mount.request.duration` {op} (seconds): time to answer a kernel request.
    pub request_duration: Histogram<f64>,
    /// `hf_mount.errors` {op, errno}: kernel requests answered with an error.
    pub errors: Counter<u64>,
    /// `hf_mount.read.bytes` {source = cache | remote}: bytes returned to readers, by where they came from.
    pub read_bytes: Counter<u64>,
    /// `hf_mount.fetch.bytes`: bytes fetched from the Hub or CAS (read-ahead included).
    pub fetch_bytes: Counter<u64>,
    /// `hf_mount.cas.plans` {result = hit | miss}: reconstruction plans answered from the plan
    /// cache or asked of the CAS.
    pub plans: Counter<u64>,
    /// `hf_mount.cache.evictions` {tier = memory | disk}: blocks evicted.
    pub evictions: Counter<u64>,
    /// `hf_mount.cache.bytes` {tier}: bytes held, recorded on each change.
    pub cache_bytes: Histogram<u64>,
    /// `hf_mount.prefetch.window` (bytes): read-ahead window asked for.
    pub prefetch_window: Histogram<u64>,
    /// `hf_mount.actor.restarts` {actor}: actors restarted by the supervisor.
    pub actor_restarts: Counter<u64>,
    /// `hf_mount.remote.errors` {status}: Hub/CAS requests that failed (HTTP status, or `timeout`/`network`).
    pub remote_errors: Counter<u64>,
    /// `hf_mount.actor.mailbox` {actor}: calls waiting on an actor (its mailbox depth as callers see
    /// it), recorded as each call is sent.
    pub mailbox: Histogram<u64>,
    /// `hf_mount.flush.commits` {kind = add | delete}: batch lines the Hub applied.
    pub flush_commits: Counter<u64>,
    /// `hf_mount.flush.failures` {stage = upload | commit}: paths whose upload or commit failed
    /// (each is retried with backoff, never dropped).
    pub flush_failures: Counter<u64>,
    /// `hf_mount.upload.bytes`: bytes fed to xet-core's upload (before deduplication).
    pub upload_bytes: Counter<u64>,
    /// `hf_mount.flush.pending`: paths waiting to be committed, recorded on each change.
    pub flush_pending: Histogram<u64>,
}

pub fn get() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(|| {
        let m = opentelemetry::global::meter("hf-mount");
        Metrics {
            requests: m.u64_counter("hf_mount.requests").with_description("kernel requests answered").build(),
            request_duration: m
                .f64_histogram("hf_mount.request.duration")
                .with_unit("s")
                .with_description("time to answer a kernel request")
                .build(),
            errors: m.u64_counter("hf_mount.errors").with_description("kernel requests answered with an error").build(),
            read_bytes: m
                .u64_counter("hf_mount.read.bytes")
                .with_unit("By")
                .with_description("bytes returned to readers")
                .build(),
            fetch_bytes: m
                .u64_counter("hf_mount.fetch.bytes")
                .with_unit("By")
                .with_description("bytes fetched remotely")
                .build(),
            plans: m
                .u64_counter("hf_mount.cas.plans")
                .with_description("reconstruction plans, from the plan cache (hit) or the CAS (miss)")
                .build(),
            evictions: m.u64_counter("hf_mount.cache.evictions").with_description("cache blocks evicted").build(),
            cache_bytes: m.u64_histogram("hf_mount.cache.bytes").with_unit("By").with_description("cache size").build(),
            prefetch_window: m
                .u64_histogram("hf_mount.prefetch.window")
                .with_unit("By")
                .with_description("read-ahead window asked for")
                .build(),
            actor_restarts: m.u64_counter("hf_mount.actor.restarts").with_description("actors restarted").build(),
            remote_errors: m.u64_counter("hf_mount.remote.errors").with_description("failed Hub/CAS requests").build(),
            mailbox: m.u64_histogram("hf_mount.actor.mailbox").with_description("calls waiting on an actor").build(),
            flush_commits: m.u64_counter("hf_mount.flush.commits").with_description("batch lines committed").build(),
            flush_failures: m
                .u64_counter("hf_mount.flush.failures")
                .with_description("uploads or commits that failed (retried)")
                .build(),
            upload_bytes: m
                .u64_counter("hf_mount.upload.bytes")
                .with_unit("By")
                .with_description("bytes fed to the upload")
                .build(),
            flush_pending: m
                .u64_histogram("hf_mount.flush.pending")
                .with_description("paths not yet committed")
                .build(),
        }
    })
}

pub fn kv(key: &'static str, value: impl Into<opentelemetry::Value>) -> KeyValue {
    KeyValue::new(key, value)
}
