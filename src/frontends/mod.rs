//! Kernel-facing adapters: they translate a protocol into engine calls and
//! hold no filesystem state of their own.

#[cfg(feature = "fuse")]
pub mod fuse;
#[cfg(feature = "nfs")]
pub mod nfs;

use crate::error::FsError;

/// Checks that `mountpoint` is an existing, empty directory we can use.
pub fn check_mountpoint(mountpoint: &std::path::Path) -> anyhow::Result<()> {
    let meta =
        std::fs::metadata(mountpoint).map_err(|e| anyhow::anyhow!("mountpoint {}: {e}", mountpoint.display()))?;
    anyhow::ensure!(meta.is_dir(), "mountpoint {} is not a directory", mountpoint.display());
    let mut entries =
        std::fs::read_dir(mountpoint).map_err(|e| anyhow::anyhow!("mountpoint {}: {e}", mountpoint.display()))?;
    anyhow::ensure!(entries.next().is_none(), "mountpoint {} is not empty", mountpoint.display());
    Ok(())
}

/// The span of one request, the root of its trace (`<protocol>.<op>` in exports): actor hops
/// and Hub/CAS calls become its children; the engine records the path, bytes and cache hits.
pub(crate) fn request_span(protocol: &'static str, op: &'static str, ino: u64) -> tracing::Span {
    tracing::debug_span!(
        "request",
        otel.name = %format!("{protocol}.{op}"),
        protocol,
        op,
        ino,
        path = tracing::field::Empty,
        errno = tracing::field::Empty,
        bytes = tracing::field::Empty,
        cache.hits = tracing::field::Empty,
        cache.misses = tracing::field::Empty,
    )
}

/// Logs, counts and records on the request's span an error a frontend answers with.
pub(crate) fn request_failed(op: &'static str, ino: u64, e: &FsError) {
    tracing::Span::current().record("errno", e.errno());
    let m = crate::metrics::get();
    m.errors.add(1, &[crate::metrics::kv("op", op), crate::metrics::kv("errno", e.errno() as i64)]);
    if e.is_expected() {
        tracing::trace!(op, ino, "{e}");
    } else {
        tracing::warn!(op, ino, "{op} failed: {e}");
    }
}

/// Counts a request answered and how long it took.
pub(crate) fn request_done(op: &'static str, start: std::time::Instant) {
    let m = crate::metrics::get();
    let attrs = [crate::metrics::kv("op", op)];
    m.requests.add(1, &attrs);
    m.request_duration.record(start.elapsed().as_secs_f64(), &attrs);
}
