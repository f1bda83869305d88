//! Running a mount in the foreground: validate everything, mount, serve until
//! unmounted or signalled (then unmount cleanly). Errors are one clear line.

use std::path::PathBuf;

use anyhow::Context;

use crate::config::MountArgs;
use crate::engine::Engine;
use crate::frontends::fuse::{self, FuseOptions};
use crate::hub::HubClient;

/// Logs to stderr, filtered by `RUST_LOG` (default: warnings, and info from hf-mount); no export.
pub fn init_logging() {
    let _ = crate::telemetry::init(&crate::telemetry::TelemetryConfig::default());
}

/// The cache directory: the one asked for (created, checked writable), or a temporary one.
fn cache_dir(args: &MountArgs) -> anyhow::Result<(Option<PathBuf>, Option<tempfile::TempDir>)> {
    if args.no_disk_cache {
        return Ok((None, None));
    }
    match &args.cache_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("cache dir {}", dir.display()))?;
            let probe =
                tempfile::tempfile_in(dir).with_context(|| format!("cache dir {} is not writable", dir.display()));
            probe?;
            Ok((Some(dir.clone()), None))
        }
        None => {
            let tmp = tempfile::Builder::new().prefix("hf-mount-cache-").tempdir()?;
            Ok((Some(tmp.path().to_path_buf()), Some(tmp)))
        }
    }
}

/// Everything a mount needs, checked, with the engine started.
pub struct Prepared {
    pub runtime: tokio::runtime::Runtime,
    pub engine: Engine,
    pub options: FuseOptions,
    pub mountpoint: PathBuf,
    _cache: Option<tempfile::TempDir>,
}

/// Keeps large buffers (reads, fetched ranges) in the heap for reuse instead of a fresh
/// mmap each, whose page faults and zeroing cost more than the copies themselves.
fn tune_allocator() {
    const MMAP_THRESHOLD_BYTES: libc::c_int = 64 << 20;
    const TRIM_THRESHOLD_BYTES: libc::c_int = 256 << 20;
    // SAFETY: mallopt only changes glibc allocator parameters.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES);
        libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES);
    }
}

/// Validates the options and starts the engine (probing the source), on a runtime of its own.
/// The temporary cache directory (if any) lives as long as the returned guard.
pub fn prepare_engine(
    args: &MountArgs,
) -> anyhow::Result<(tokio::runtime::Runtime, Engine, Option<tempfile::TempDir>)> {
    tune_allocator();
    let source = args.parse_source()?;
    if !args.read_only && source.is_bucket() {
        tracing::info!("buckets are mounted read-only in this version");
    }
    let (disk, cache_guard) = cache_dir(args)?;
    let token = args.token_source()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .thread_name("hf-mount-worker")
        .enable_all()
        .build()?;
    let hub = HubClient::new(&args.hub_endpoint, token, args.read_timeout())?;
    let config = args.engine_config(&source, disk);
    let engine = runtime.block_on(Engine::start(hub, source, config))?;
    Ok((runtime, engine, cache_guard))
}

/// The mountpoint argument, which a mount requires.
pub fn mountpoint(args: &MountArgs) -> anyhow::Result<PathBuf> {
    args.mountpoint.clone().ok_or_else(|| anyhow::anyhow!("a MOUNTPOINT is required"))
}

/// Validates the options (mountpoint included) and starts the engine.
pub fn prepare(args: &MountArgs) -> anyhow::Result<Prepared> {
    let mountpoint = mountpoint(args)?;
    fuse::check_mountpoint(&mountpoint)?;
    let (runtime, engine, cache) = prepare_engine(args)?;
    let ttl = engine.config().metadata_ttl;
    let options = FuseOptions {
        uid: args.uid.unwrap_or_else(|| unsafe { libc::getuid() }),
        gid: args.gid.unwrap_or_else(|| unsafe { libc::getgid() }),
        max_threads: args.max_threads,
        allow_other: args.allow_other,
        ttl,
    };
    Ok(Prepared { runtime, engine, options, mountpoint, _cache: cache })
}

/// `hf-mount-fuse`: mounts in the foreground until unmounted or signalled.
pub fn run_fuse(args: MountArgs) -> anyhow::Result<()> {
    let p = prepare(&args)?;
    let target = std::fs::canonicalize(&p.mountpoint)?;
    let source = p.engine.source();
    let version = p.engine.version();
    // Signals are caught from before the mount exists: one arriving right after it must
    // unmount, not kill the process and leave a dead mount behind.
    let mut stop = StopSignals::install(&p.runtime)?;
    let mount = fuse::mount(p.engine.clone(), p.runtime.handle().clone(), &p.mountpoint, p.options.clone())?;
    eprintln!("hf-mount: {source} ({version}) mounted at {}", p.mountpoint.display());
    if p.runtime.block_on(stop.wait(Some(target))) {
        mount.wait()?;
    } else {
        mount.unmount()?;
    }
    p.engine.shutdown();
    eprintln!("hf-mount: unmounted {}", p.mountpoint.display());
    Ok(())
}

/// Whether the canonical path `path` is a mount point in this process's mount namespace.
pub fn is_mounted(path: &std::path::Path) -> bool {
    let target = path.to_string_lossy().to_string();
    std::fs::read_to_string("/proc/self/mounts")
        .map(|m| {
            m.lines().any(|l| l.split_whitespace().nth(1).map(unescape_mount_path).as_deref() == Some(target.as_str()))
        })
        .unwrap_or(false)
}

/// `/proc/mounts` escapes space, tab, newline and backslash as octal.
fn unescape_mount_path(s: &str) -> String {
    s.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")
}

/// SIGTERM and SIGINT, caught from the moment this is made (install it before mounting).
struct StopSignals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl StopSignals {
    fn install(runtime: &tokio::runtime::Runtime) -> anyhow::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        let _in_runtime = runtime.enter();
        Ok(Self { term: signal(SignalKind::terminate())?, int: signal(SignalKind::interrupt())? })
    }

    /// Waits for a signal or (when `watch` is set) the mountpoint going away, polling the
    /// kernel's mount table. Returns true when the mount went away on its own.
    async fn wait(&mut self, watch: Option<PathBuf>) -> bool {
        let gone = async move {
            match watch {
                Some(target) => {
                    while is_mounted(&target) {
                        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                    }
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = self.term.recv() => { eprintln!("hf-mount: SIGTERM, stopping"); false },
            _ = self.int.recv() => { eprintln!("hf-mount: SIGINT, stopping"); false },
            _ = gone => true,
        }
    }
}

/// `hf-mount-nfs`: serves NFSv3 on loopback and mounts it with the system's NFS
/// client, or only serves it (`--serve-only`).
pub fn run_nfs(args: crate::config::NfsArgs) -> anyhow::Result<()> {
    use crate::frontends::nfs::{nfs_client_available, NfsServer};
    let m = &args.mount;
    let target = if args.serve_only {
        None
    } else {
        let mp = mountpoint(m)?;
        fuse::check_mountpoint(&mp)?;
        if !nfs_client_available() {
            anyhow::bail!(
                "this system has no NFS client (no nfs kernel module or mount.nfs helper); \
                 mount over FUSE with --fuse (hf-mount-fuse) or serve without mounting with --serve-only"
            );
        }
        Some(std::fs::canonicalize(&mp)?)
    };
    let (runtime, engine, _cache) = prepare_engine(m)?;
    let mut stop = StopSignals::install(&runtime)?;
    let uid = m.uid.unwrap_or_else(|| unsafe { libc::getuid() });
    let gid = m.gid.unwrap_or_else(|| unsafe { libc::getgid() });
    let server = runtime.block_on(NfsServer::start(engine.clone(), &args.listen, uid, gid))?;
    let actimeo = engine.config().metadata_ttl.map_or(3600, |t| t.as_secs().max(1));
    let source = engine.source();
    let Some(target) = target else {
        println!("serving {source} over NFSv3 at {}", server.addr);
        println!("mount it with: {}", server.mount_command("MOUNTPOINT", actimeo));
        use std::io::Write;
        std::io::stdout().flush()?;
        runtime.block_on(stop.wait(None));
        server.stop();
        return Ok(());
    };
    let command = server.mount_command(&target.display().to_string(), actimeo);
    let mut argv: Vec<String> = command.split_whitespace().map(str::to_owned).collect();
    if unsafe { libc::geteuid() } != 0 {
        argv.insert(0, "-n".into());
        argv.insert(0, "sudo".into());
    }
    let status = std::process::Command::new(&argv[0]).args(&argv[1..]).status()?;
    if !status.success() {
        server.stop();
        anyhow::bail!("`{}` failed ({status})", argv.join(" "));
    }
    eprintln!("hf-mount: {source} mounted at {} over NFSv3 ({})", target.display(), server.addr);
    let went_away = runtime.block_on(stop.wait(Some(target.clone())));
    if !went_away {
        let _ = std::process::Command::new("umount").arg(&target).status();
    }
    server.stop();
    eprintln!("hf-mount: unmounted {}", target.display());
    Ok(())
}
