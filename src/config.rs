//! The mount options: one struct, parsed from flags (and the environment for
//! the Hub endpoint and token), validated before anything is mounted.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};

use crate::actors::flusher::FlushConfig;
use crate::engine::{EngineConfig, WriteConfig};
use crate::hub::{Source, TokenSource};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum SourceType {
    /// A model, dataset or space: [datasets/|spaces/]owner/name[/subfolder]
    Repo,
    /// A bucket: namespace/name[/subfolder]
    Bucket,
}

/// Options of a mount, shared by every frontend. Every option can also come from a
/// TOML file (`--config`): defaults < file < environment < flags.
#[derive(Args, Clone, Debug)]
pub struct MountArgs {
    /// What to mount: `repo` or `bucket` (or `source_type` in the config file).
    #[arg(value_enum)]
    pub source_type: Option<SourceType>,
    /// `[datasets/|spaces/]owner/name[/subfolder]` for repos, `ns/name[/subfolder]` for buckets.
    pub source: Option<String>,
    /// An existing, empty directory (not needed with `--serve-only`).
    pub mountpoint: Option<PathBuf>,

    /// A TOML file with any of these options (keys are the option names with `_`; see config/hf-mount.toml).
    #[arg(long, env = "HF_MOUNT_CONFIG")]
    pub config: Option<PathBuf>,

    /// Branch, tag, commit sha or refs/pr/N (repos). A commit sha pins the mount: nothing is revalidated.
    #[arg(long)]
    pub revision: Option<String>,
    /// The Hub to talk to.
    #[arg(long, env = "HF_ENDPOINT", default_value = "https://huggingface.co")]
    pub hub_endpoint: String,
    /// Hugging Face token (prefer HF_TOKEN or --token-file: flags show up in `ps`).
    #[arg(long, env = "HF_TOKEN", hide_env_values = true)]
    pub hf_token: Option<String>,
    /// File holding the token; re-read when it changes, so it can rotate.
    #[arg(long, conflicts_with = "hf_token")]
    pub token_file: Option<PathBuf>,
    /// Mount a bucket read-only (repos always are).
    #[arg(long)]
    pub read_only: bool,
    /// Buckets: every write goes through a staging file on disk (random writes, seek,
    /// overwrite, truncate) and is committed in the background once the file has been quiet
    /// for --flush-debounce-ms; `close` returns at once. Without it, new and truncated files
    /// stream into the upload as they are written and `close` returns once committed.
    #[arg(long)]
    pub advanced_writes: bool,
    /// A closed file is committed once it has not changed for this long.
    #[arg(long, default_value_t = 2_000)]
    pub flush_debounce_ms: u64,
    /// A file that keeps changing is committed at least this often, and a batch waits no longer.
    #[arg(long, default_value_t = 30_000)]
    pub flush_max_batch_window_ms: u64,
    /// How long unmount (or SIGTERM) waits for pending uploads; what is left stays in the
    /// journal and is committed by the next mount of the same source on the same cache dir.
    #[arg(long, default_value_t = 30_000)]
    pub flush_shutdown_timeout_ms: u64,

    /// Cache directory: file blocks, and for buckets the staging files and the journal that
    /// make writes survive a crash. Each source gets its own subdirectory; one mount uses it
    /// at a time. Persistent, so mounting again after a crash recovers pending writes.
    #[arg(long, env = "HF_MOUNT_CACHE_DIR", default_value_os_t = default_cache_dir())]
    pub cache_dir: PathBuf,
    /// Cap of the on-disk cache (e.g. 10G, 512M); least recently used blocks are evicted.
    #[arg(long, default_value = "10G", value_parser = parse_size)]
    pub cache_size: u64,
    /// Keep file bytes in memory only (buckets still keep staging files and the journal on disk).
    #[arg(long)]
    pub no_disk_cache: bool,
    /// Cap of the in-memory cache (e.g. 256M).
    #[arg(long, default_value = "256M", value_parser = parse_size)]
    pub memory_cache_size: u64,

    /// Inodes kept at most: past this, the listings of the least recently used directories are
    /// unloaded (entries the kernel or a handle holds stay) and listed again on next use.
    /// A listed entry costs about 1 KB of memory.
    #[arg(long, default_value_t = 250_000)]
    pub max_inodes: usize,

    /// How long file attributes and listings are trusted before the Hub is asked again.
    #[arg(long, default_value_t = 10_000)]
    pub metadata_ttl_ms: u64,
    /// Revalidate attributes on every access (slow, most consistent).
    #[arg(long)]
    pub metadata_ttl_minimal: bool,
    /// How often to check the remote for changes; 0 turns polling off.
    #[arg(long, default_value_t = 30)]
    pub poll_interval_secs: u64,
    /// Deadline of each Hub or CAS request, retries included; a read that misses it fails with EIO.
    #[arg(long, default_value_t = 30_000)]
    pub read_timeout_ms: u64,

    /// FUSE worker threads (1 to 1024).
    #[arg(long, default_value_t = 16, value_parser = parse_threads)]
    pub max_threads: usize,
    /// Owner reported for every file (default: the current user).
    #[arg(long)]
    pub uid: Option<u32>,
    /// Group reported for every file (default: the current group).
    #[arg(long)]
    pub gid: Option<u32>,
    /// Serve OS metadata probes (.DS_Store, ._*, Thumbs.db, …) from the Hub instead of answering "no such file".
    #[arg(long)]
    pub no_filter_os_files: bool,
    /// Let other users access the mount (needs user_allow_other in /etc/fuse.conf when not root).
    #[arg(long)]
    pub allow_other: bool,

    /// Export traces and metrics over OTLP/gRPC to this endpoint (e.g. http://localhost:4317).
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// Service name in exported traces and metrics.
    #[arg(long, env = "OTEL_SERVICE_NAME", default_value = "hf-mount")]
    pub otel_service_name: String,
    /// Fraction of kernel requests traced (0 to 1).
    #[arg(long, env = "OTEL_TRACES_SAMPLER_ARG", default_value_t = 1.0)]
    pub trace_sample_ratio: f64,
    /// Log format on stderr (RUST_LOG filters it).
    #[arg(long, value_enum, default_value = "text")]
    pub log_format: crate::telemetry::LogFormat,
}

/// Options of the NFS frontend.
#[derive(Args, Clone, Debug)]
pub struct NfsArgs {
    #[command(flatten)]
    pub mount: MountArgs,
    /// Serve NFS without mounting it here (containers, another host or namespace mounts it);
    /// prints the address and the mount command to run.
    #[arg(long)]
    pub serve_only: bool,
    /// Address to serve on.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: String,
    /// How long an entry handed to an NFS client (by LOOKUP, READDIRPLUS, CREATE…) stays
    /// loaded, whatever --max-inodes says. NFS clients never say when they are done with a
    /// handle; one used after this may answer STALE, and the client looks the name up again.
    #[arg(long, default_value_t = 600, value_name = "SECS")]
    pub handle_grace_secs: u64,
}

/// `$XDG_CACHE_HOME/hf-mount`, else `~/.cache/hf-mount`, else `/tmp/hf-mount-cache-UID`.
pub fn default_cache_dir() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME").filter(|x| !x.is_empty()) {
        return PathBuf::from(x).join("hf-mount");
    }
    if let Some(h) = std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        return PathBuf::from(h).join(".cache").join("hf-mount");
    }
    // SAFETY: getuid has no failure mode.
    PathBuf::from(format!("/tmp/hf-mount-cache-{}", unsafe { libc::getuid() }))
}

/// Parses `10G`, `512M`, `64K`, `1000` (binary units).
fn parse_threads(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(n @ 1..=1024) => Ok(n),
        _ => Err(format!("{s:?} is not a number of threads from 1 to 1024")),
    }
}

pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        None => (s, 1u64),
        Some((i, _)) => {
            let unit = s[i..].trim().to_ascii_uppercase();
            let mult = match unit.trim_end_matches("IB").trim_end_matches('B') {
                "" => 1,
                "K" => 1 << 10,
                "M" => 1 << 20,
                "G" => 1 << 30,
                "T" => 1 << 40,
                _ => return Err(format!("unknown size unit in {s:?} (use K, M, G or T)")),
            };
            (&s[..i], mult)
        }
    };
    let n: u64 = num.parse().map_err(|_| format!("invalid size {s:?}"))?;
    n.checked_mul(mult).ok_or_else(|| format!("size {s:?} is too large"))
}

impl MountArgs {
    pub fn telemetry(&self) -> crate::telemetry::TelemetryConfig {
        crate::telemetry::TelemetryConfig {
            log_format: self.log_format,
            otlp_endpoint: self.otlp_endpoint.clone().filter(|e| !e.is_empty()),
            service_name: self.otel_service_name.clone(),
            sample_ratio: self.trace_sample_ratio,
        }
    }

    pub fn parse_source(&self) -> anyhow::Result<Source> {
        let (Some(kind), Some(spec)) = (self.source_type, self.source.as_deref()) else {
            anyhow::bail!("nothing to mount: give `repo|bucket SOURCE`, or source_type and source in the config file");
        };
        let parsed = match kind {
            SourceType::Repo => Source::repo(spec, self.revision.as_deref()),
            SourceType::Bucket => {
                if self.revision.is_some() {
                    anyhow::bail!("--revision applies to repos; buckets have no revisions");
                }
                Source::bucket(spec)
            }
        };
        parsed.map_err(anyhow::Error::msg)
    }

    pub fn token_source(&self) -> anyhow::Result<TokenSource> {
        match (&self.token_file, &self.hf_token) {
            (Some(path), _) => {
                TokenSource::file(path.clone()).map_err(|e| anyhow::anyhow!("token file {}: {e}", path.display()))
            }
            (None, Some(t)) => Ok(TokenSource::fixed(t)),
            (None, None) => Ok(TokenSource::anonymous()),
        }
    }

    pub fn read_timeout(&self) -> Duration {
        Duration::from_millis(self.read_timeout_ms.max(1))
    }

    /// The engine's view of these options. `dir` is this mount's own directory under the
    /// cache dir. Buckets are written in advanced mode over NFS (it has no close to commit at).
    pub fn engine_config(&self, source: &Source, dir: &std::path::Path, frontend: Frontend) -> EngineConfig {
        let metadata_ttl = if source.is_pinned() {
            None
        } else if self.metadata_ttl_minimal {
            Some(Duration::ZERO)
        } else {
            Some(Duration::from_millis(self.metadata_ttl_ms))
        };
        let poll =
            (!source.is_pinned() && self.poll_interval_secs > 0).then(|| Duration::from_secs(self.poll_interval_secs));
        let writes = (source.is_bucket() && !self.read_only).then(|| WriteConfig {
            dir: dir.to_path_buf(),
            advanced: self.advanced_writes || frontend == Frontend::Nfs,
            flush: FlushConfig {
                debounce: Duration::from_millis(self.flush_debounce_ms),
                max_window: Duration::from_millis(self.flush_max_batch_window_ms.max(self.flush_debounce_ms)),
            },
            shutdown_timeout: Duration::from_millis(self.flush_shutdown_timeout_ms),
        });
        EngineConfig {
            metadata_ttl,
            negative_ttl: metadata_ttl.unwrap_or(Duration::from_secs(3600)).max(Duration::from_secs(1)),
            poll_interval: poll,
            filter_os_files: !self.no_filter_os_files,
            memory_cache_bytes: self.memory_cache_size,
            max_inodes: self.max_inodes,
            disk_cache: (!self.no_disk_cache).then(|| (dir.to_path_buf(), self.cache_size)),
            dir: dir.to_path_buf(),
            // SAFETY: getuid/getgid have no failure mode.
            uid: self.uid.unwrap_or_else(|| unsafe { libc::getuid() }),
            gid: self.gid.unwrap_or_else(|| unsafe { libc::getgid() }),
            writes,
        }
    }
}

/// The frontend a mount is served through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Frontend {
    Fuse,
    Nfs,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("10G").unwrap(), 10 << 30);
        assert_eq!(parse_size("512M").unwrap(), 512 << 20);
        assert_eq!(parse_size("64KiB").unwrap(), 64 << 10);
        assert_eq!(parse_size("1000").unwrap(), 1000);
        assert!(parse_size("12X").is_err());
        assert!(parse_size("G").is_err());
    }
}
