//! The TOML config file: every command-line option has a key of the same name
//! (with `_`), including the source and the mountpoint, so a mount can start
//! from the file alone. Precedence: defaults < file < environment < flags.
//! Unknown keys and bad values are rejected with the key named.

use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::ArgMatches;
use serde::Deserialize;

use crate::config::{parse_size, MountArgs, NfsArgs, SourceType};

/// A size as a number of bytes or a string like "10G".
#[derive(Deserialize, Debug, Clone)]
#[serde(untagged)]
enum Size {
    Bytes(u64),
    Text(String),
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    source_type: Option<String>,
    source: Option<String>,
    mountpoint: Option<PathBuf>,
    revision: Option<String>,
    hub_endpoint: Option<String>,
    hf_token: Option<String>,
    token_file: Option<PathBuf>,
    read_only: Option<bool>,
    advanced_writes: Option<bool>,
    flush_debounce_ms: Option<u64>,
    flush_max_batch_window_ms: Option<u64>,
    flush_shutdown_timeout_ms: Option<u64>,
    cache_dir: Option<PathBuf>,
    cache_size: Option<Size>,
    no_disk_cache: Option<bool>,
    memory_cache_size: Option<Size>,
    max_inodes: Option<usize>,
    metadata_ttl_ms: Option<u64>,
    metadata_ttl_minimal: Option<bool>,
    poll_interval_secs: Option<u64>,
    read_timeout_ms: Option<u64>,
    max_threads: Option<usize>,
    uid: Option<u32>,
    gid: Option<u32>,
    no_filter_os_files: Option<bool>,
    allow_other: Option<bool>,
    otlp_endpoint: Option<String>,
    otel_service_name: Option<String>,
    trace_sample_ratio: Option<f64>,
    log_format: Option<String>,
    /// `fuse` or `nfs` (used by `hf-mount start`).
    backend: Option<String>,
    serve_only: Option<bool>,
    listen: Option<String>,
    handle_grace_secs: Option<u64>,
}

/// Whether the user set `id` on the command line or through its environment variable.
fn from_user(m: &ArgMatches, id: &str) -> bool {
    matches!(m.value_source(id), Some(ValueSource::CommandLine | ValueSource::EnvVariable))
}

fn load(path: &Path) -> anyhow::Result<FileConfig> {
    let text = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("config file {}: {e}", path.display()))?;
    toml::from_str(&text).map_err(|e| anyhow::anyhow!("config file {}: {}", path.display(), e.to_string().trim()))
}

fn size(key: &str, v: Size) -> anyhow::Result<u64> {
    match v {
        Size::Bytes(n) => Ok(n),
        Size::Text(t) => parse_size(&t).map_err(|e| anyhow::anyhow!("config key `{key}`: {e}")),
    }
}

/// Fills every option the user did not give with the config file's value.
pub fn apply(args: &mut MountArgs, m: &ArgMatches) -> anyhow::Result<()> {
    let Some(path) = args.config.clone() else { return Ok(()) };
    let f = load(&path)?;
    macro_rules! take {
        ($field:ident) => {
            if !from_user(m, stringify!($field)) {
                if let Some(v) = f.$field {
                    args.$field = v.into();
                }
            }
        };
    }
    if !from_user(m, "source_type") {
        if let Some(t) = &f.source_type {
            args.source_type = Some(match t.as_str() {
                "repo" => SourceType::Repo,
                "bucket" => SourceType::Bucket,
                other => anyhow::bail!("config key `source_type`: {other:?} is not `repo` or `bucket`"),
            });
        }
    }
    if let Some(b) = &f.backend {
        if b != "fuse" && b != "nfs" {
            anyhow::bail!("config key `backend`: {b:?} is not `fuse` or `nfs`");
        }
    }
    take!(source);
    take!(mountpoint);
    take!(revision);
    take!(hub_endpoint);
    take!(hf_token);
    take!(token_file);
    take!(read_only);
    take!(advanced_writes);
    take!(flush_debounce_ms);
    take!(flush_max_batch_window_ms);
    take!(flush_shutdown_timeout_ms);
    take!(cache_dir);
    take!(no_disk_cache);
    take!(max_inodes);
    take!(metadata_ttl_ms);
    take!(metadata_ttl_minimal);
    take!(poll_interval_secs);
    take!(read_timeout_ms);
    take!(max_threads);
    take!(uid);
    take!(gid);
    take!(no_filter_os_files);
    take!(allow_other);
    take!(otlp_endpoint);
    take!(otel_service_name);
    take!(trace_sample_ratio);
    if !from_user(m, "log_format") {
        if let Some(f) = &f.log_format {
            args.log_format = match f.as_str() {
                "text" => crate::telemetry::LogFormat::Text,
                "json" => crate::telemetry::LogFormat::Json,
                other => anyhow::bail!("config key `log_format`: {other:?} is not `text` or `json`"),
            };
        }
    }
    if !(1..=1024).contains(&args.max_threads) {
        anyhow::bail!("config key `max_threads`: {} is not a number of threads from 1 to 1024", args.max_threads);
    }
    if !(0.0..=1.0).contains(&args.trace_sample_ratio) {
        anyhow::bail!("trace_sample_ratio must be between 0 and 1, not {}", args.trace_sample_ratio);
    }
    if !from_user(m, "cache_size") {
        if let Some(v) = f.cache_size {
            args.cache_size = size("cache_size", v)?;
        }
    }
    if !from_user(m, "memory_cache_size") {
        if let Some(v) = f.memory_cache_size {
            args.memory_cache_size = size("memory_cache_size", v)?;
        }
    }
    if args.hf_token.is_some() && args.token_file.is_some() {
        anyhow::bail!("give either hf_token or token_file, not both");
    }
    Ok(())
}

/// The same for the NFS frontend's own options.
pub fn apply_nfs(args: &mut NfsArgs, m: &ArgMatches) -> anyhow::Result<()> {
    apply(&mut args.mount, m)?;
    let Some(path) = args.mount.config.clone() else { return Ok(()) };
    let f = load(&path)?;
    if !from_user(m, "serve_only") {
        if let Some(v) = f.serve_only {
            args.serve_only = v;
        }
    }
    if !from_user(m, "listen") {
        if let Some(v) = f.listen {
            args.listen = v;
        }
    }
    if !from_user(m, "handle_grace_secs") {
        if let Some(v) = f.handle_grace_secs {
            args.handle_grace_secs = v;
        }
    }
    Ok(())
}

/// The effective options as TOML, the token redacted.
pub fn show(args: &MountArgs) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let q = |s: &str| toml::Value::String(s.to_string()).to_string();
    let p = |p: &Path| q(&p.display().to_string());
    let mut line = |k: &str, v: Option<String>| {
        let _ = match v {
            Some(v) => writeln!(out, "{k} = {v}"),
            None => writeln!(out, "# {k} is not set"),
        };
    };
    line("source_type", args.source_type.map(|t| q(if t == SourceType::Repo { "repo" } else { "bucket" })));
    line("source", args.source.as_deref().map(q));
    line("mountpoint", args.mountpoint.as_deref().map(p));
    line("revision", args.revision.as_deref().map(q));
    line("hub_endpoint", Some(q(&args.hub_endpoint)));
    line("hf_token", args.hf_token.as_ref().map(|_| q("<redacted>")));
    line("token_file", args.token_file.as_deref().map(p));
    line("read_only", Some(args.read_only.to_string()));
    line("advanced_writes", Some(args.advanced_writes.to_string()));
    line("flush_debounce_ms", Some(args.flush_debounce_ms.to_string()));
    line("flush_max_batch_window_ms", Some(args.flush_max_batch_window_ms.to_string()));
    line("flush_shutdown_timeout_ms", Some(args.flush_shutdown_timeout_ms.to_string()));
    line("cache_dir", Some(p(&args.cache_dir)));
    line("cache_size", Some(args.cache_size.to_string()));
    line("no_disk_cache", Some(args.no_disk_cache.to_string()));
    line("memory_cache_size", Some(args.memory_cache_size.to_string()));
    line("max_inodes", Some(args.max_inodes.to_string()));
    line("metadata_ttl_ms", Some(args.metadata_ttl_ms.to_string()));
    line("metadata_ttl_minimal", Some(args.metadata_ttl_minimal.to_string()));
    line("poll_interval_secs", Some(args.poll_interval_secs.to_string()));
    line("read_timeout_ms", Some(args.read_timeout_ms.to_string()));
    line("max_threads", Some(args.max_threads.to_string()));
    line("uid", args.uid.map(|u| u.to_string()));
    line("gid", args.gid.map(|g| g.to_string()));
    line("no_filter_os_files", Some(args.no_filter_os_files.to_string()));
    line("allow_other", Some(args.allow_other.to_string()));
    line("otlp_endpoint", args.otlp_endpoint.as_deref().map(q));
    line("otel_service_name", Some(q(&args.otel_service_name)));
    line("trace_sample_ratio", Some(args.trace_sample_ratio.to_string()));
    let fmt = if args.log_format == crate::telemetry::LogFormat::Json { "json" } else { "text" };
    line("log_format", Some(q(fmt)));
    out
}
