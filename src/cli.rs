//! Running a mount in the foreground: validate everything, mount, serve until
//! unmounted or signalled (then unmount cleanly). Errors are one clear line.

use std::path::PathBuf;

use anyhow::Context;

use crate::config::{Frontend, MountArgs};
use crate::engine::Engine;
use crate::frontends::check_mountpoint;
#[cfg(feature = "fuse")]
use crate::frontends::fuse::{self, FuseOptions};
use crate::hub::HubClient;

/// Logs to stderr, filtered by `RUST_LOG` (default: warnings, and info from hf-mount); no export.
pub fn init_logging() {
    let _ = crate::telemetry::init(&crate::telemetry::TelemetryConfig::default());
}

/// This mount's own directory under the cache dir, created and locked: one mount uses it at a
/// time (its journal and staging files are not shareable). The lock goes with the process.
pub struct MountDir {
    pub path: PathBuf,
    _lock: std::fs::File,
}

/// Creates and locks `<cache_dir>/<source key>`, refusing clearly when another mount has it.
pub fn lock_mount_dir(args: &MountArgs, source: &crate::hub::Source) -> anyhow::Result<MountDir> {
    use std::io::Write;
    use std::os::fd::AsRawFd;
    let path = args.cache_dir.join(source.cache_key(&args.hub_endpoint));
    std::fs::create_dir_all(&path).with_context(|| format!("cache dir {}", path.display()))?;
    let lock_path = path.join("lock");
    let mut lock = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&lock_path)
        .with_context(|| format!("cache dir {} is not writable", path.display()))?;
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let holder = std::fs::read_to_string(&lock_path).unwrap_or_default();
        anyhow::bail!(
            "{source} is already mounted with cache dir {} (by pid {}); a second mount of the same source \
             on the same cache dir is refused: give it another --cache-dir",
            args.cache_dir.display(),
            holder.trim()
        );
    }
    lock.set_len(0)?;
    write!(lock, "{}", std::process::id())?;
    Ok(MountDir { path, _lock: lock })
}

/// Everything a mount needs, checked, with the engine started.
#[cfg(feature = "fuse")]
pub struct Prepared {
    pub runtime: tokio::runtime::Runtime,
    pub engine: Engine,
    pub options: FuseOptions,
    pub mountpoint: PathBuf,
    pub dir: MountDir,
}

/// Keeps large buffers (reads, fetched ranges, xet-core's serialized xorbs) in the heap for
/// reuse instead of a fresh mmap each, whose page faults and zeroing cost more than the copies
/// themselves. A serialized xorb is a little over 64 MiB (64 MiB of chunks and their headers),
/// so the threshold is above that: at 64 MiB each xorb of an upload was a fresh mapping, and
/// zeroing its pages was 34–44% of the mount's CPU in a streamed 256 MiB write (perf, dwarf
/// stacks: `clear_page_erms` under xet-core's `serialize_chunk`), more on a VM whose host
/// must back each first-touched page.
fn tune_allocator() {
    const MMAP_THRESHOLD_BYTES: libc::c_int = 128 << 20;
    const TRIM_THRESHOLD_BYTES: libc::c_int = 256 << 20;
    // SAFETY: mallopt only changes glibc allocator parameters.
    unsafe {
        // One arena: blocks are allocated on one thread and freed on another (the cache's
        // eviction), and per-thread arenas hand such memory back to the kernel, so every new
        // buffer was faulted in and zeroed page by page (measured: ~8% of a disk-cache re-read).
        libc::mallopt(libc::M_ARENA_MAX, 1);
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES);
        libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES);
    }
}

/// Validates the options and starts the engine (probing the source), on a runtime of its own,
/// for `frontend` (buckets are read-write unless `--read-only`; always advanced over NFS).
/// The mount's directory stays locked as long as the returned guard lives.
pub fn prepare_engine(
    args: &MountArgs,
    frontend: Frontend,
) -> anyhow::Result<(tokio::runtime::Runtime, Engine, MountDir)> {
    tune_allocator();
    let source = args.parse_source()?;
    let dir = lock_mount_dir(args, &source)?;
    let token = args.token_source()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .thread_name("hf-mount-worker")
        .enable_all()
        .build()?;
    let hub = HubClient::new(&args.hub_endpoint, token, args.read_timeout())?;
    let config = args.engine_config(&source, &dir.path, frontend);
    let mode = match &config.writes {
        None => "read-only".to_string(),
        Some(w) if w.advanced => {
            format!("read-write, advanced writes (committed {:?} after the last change)", w.flush.debounce)
        }
        Some(_) => "read-write, streaming writes (committed at close)".to_string(),
    };
    let engine = runtime.block_on(Engine::start(hub, source.clone(), config))?;
    tracing::info!("{source}: {mode}; cache and journal in {}", dir.path.display());
    Ok((runtime, engine, dir))
}

/// The mountpoint argument, which a mount requires.
pub fn mountpoint(args: &MountArgs) -> anyhow::Result<PathBuf> {
    args.mountpoint.clone().ok_or_else(|| anyhow::anyhow!("a MOUNTPOINT is required"))
}

/// Validates the options (mountpoint included) and starts the engine.
#[cfg(feature = "fuse")]
pub fn prepare(args: &MountArgs) -> anyhow::Result<Prepared> {
    let mountpoint = mountpoint(args)?;
    check_mountpoint(&mountpoint)?;
    let (runtime, engine, dir) = prepare_engine(args, Frontend::Fuse)?;
    let ttl = engine.config().metadata_ttl;
    let options = FuseOptions { max_threads: args.max_threads, allow_other: args.allow_other, ttl };
    Ok(Prepared { runtime, engine, options, mountpoint, dir })
}

/// `hf-mount-fuse`: mounts in the foreground until unmounted or signalled.
#[cfg(feature = "fuse")]
pub fn run_fuse(args: MountArgs) -> anyhow::Result<()> {
    let p = prepare(&args)?;
    let target = std::fs::canonicalize(&p.mountpoint)?;
    let source = p.engine.source();
    let version = p.engine.version();
    // Signals are caught from before the mount exists: one arriving right after it must
    // unmount, not kill the process and leave a dead mount behind.
    let mut stop = StopSignals::install(&p.runtime)?;
    let mount = fuse::mount(p.engine.clone(), p.runtime.handle().clone(), &p.mountpoint, p.options.clone())?;
    let _control = control_socket(&p.runtime, &p.engine, &target);
    eprintln!("hf-mount: {source} ({version}) mounted at {}", p.mountpoint.display());
    match p.runtime.block_on(stop.wait(Some(target), &p.engine)) {
        Stop::Gone => mount.wait()?,
        Stop::Signal => mount.unmount()?,
        Stop::Failed(why) => {
            mount.unmount()?;
            anyhow::bail!("{why}; unmounted {}", p.mountpoint.display());
        }
    }
    eprintln!("hf-mount: unmounted {}", p.mountpoint.display());
    Ok(())
}

/// The control socket (`hf-mount status`, `hf-mount sync`); a mount works without one.
fn control_socket(
    runtime: &tokio::runtime::Runtime,
    engine: &Engine,
    mountpoint: &std::path::Path,
) -> Option<crate::control::ControlServer> {
    let _in_runtime = runtime.enter();
    match crate::control::serve(engine.clone(), mountpoint) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!("no control socket (hf-mount sync/status cannot reach this mount): {e}");
            None
        }
    }
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

    /// Waits for a signal, (when `watch` is set) the mountpoint going away, polling the
    /// kernel's mount table, or the engine failing for good.
    async fn wait(&mut self, watch: Option<PathBuf>, engine: &Engine) -> Stop {
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
            _ = self.term.recv() => { eprintln!("hf-mount: SIGTERM, stopping"); Stop::Signal },
            _ = self.int.recv() => { eprintln!("hf-mount: SIGINT, stopping"); Stop::Signal },
            _ = gone => Stop::Gone,
            why = engine.failed() => Stop::Failed(why),
        }
    }
}

/// Why a mount's wait ended.
enum Stop {
    /// SIGTERM or SIGINT: unmount.
    Signal,
    /// Unmounted from outside.
    Gone,
    /// The engine failed for good: unmount, and exit with its reason.
    Failed(String),
}

/// `hf-mount-nfs`: serves NFSv3 on loopback and mounts it with the system's NFS
/// client, or only serves it (`--serve-only`).
#[cfg(feature = "nfs")]
pub fn run_nfs(args: crate::config::NfsArgs) -> anyhow::Result<()> {
    use crate::frontends::nfs::{nfs_client_available, NfsServer};
    let m = &args.mount;
    let target = if args.serve_only {
        None
    } else {
        let mp = mountpoint(m)?;
        check_mountpoint(&mp)?;
        if !nfs_client_available() {
            anyhow::bail!(
                "this system has no NFS client (no nfs kernel module or mount.nfs helper); \
                 mount over FUSE with --fuse (hf-mount-fuse) or serve without mounting with --serve-only"
            );
        }
        Some(std::fs::canonicalize(&mp)?)
    };
    let (runtime, engine, _dir) = prepare_engine(m, Frontend::Nfs)?;
    let mut stop = StopSignals::install(&runtime)?;
    let opts =
        crate::frontends::nfs::NfsOptions { handle_grace: std::time::Duration::from_secs(args.handle_grace_secs) };
    let server = runtime.block_on(NfsServer::start_with(engine.clone(), &args.listen, &opts))?;
    let actimeo = engine.config().metadata_ttl.map_or(3600, |t| t.as_secs().max(1));
    let source = engine.source();
    let Some(target) = target else {
        println!("serving {source} over NFSv3 at {}", server.addr);
        println!("mount it with: {}", server.mount_command("MOUNTPOINT", actimeo));
        use std::io::Write;
        std::io::stdout().flush()?;
        let stopped = runtime.block_on(stop.wait(None, &engine));
        runtime.block_on(server.stop_and_drain());
        if let Stop::Failed(why) = stopped {
            anyhow::bail!("{why}");
        }
        return Ok(());
    };
    let mut argv = server.mount_args(&target.display().to_string(), actimeo);
    if unsafe { libc::geteuid() } != 0 {
        argv.insert(0, "-n".into());
        argv.insert(0, "sudo".into());
    }
    let status = std::process::Command::new(&argv[0]).args(&argv[1..]).status()?;
    if !status.success() {
        server.stop();
        anyhow::bail!("`{}` failed ({status})", argv.join(" "));
    }
    let _control = control_socket(&runtime, &engine, &target);
    eprintln!("hf-mount: {source} mounted at {} over NFSv3 ({})", target.display(), server.addr);
    let stopped = runtime.block_on(stop.wait(Some(target.clone()), &engine));
    if !matches!(stopped, Stop::Gone) {
        let _ = std::process::Command::new("umount").arg(&target).status();
    }
    runtime.block_on(server.stop_and_drain());
    eprintln!("hf-mount: unmounted {}", target.display());
    match stopped {
        Stop::Failed(why) => anyhow::bail!("{why}"),
        _ => Ok(()),
    }
}

/// Without the FUSE frontend (built without the `fuse` feature): a clear error.
#[cfg(not(feature = "fuse"))]
pub fn run_fuse(_args: MountArgs) -> anyhow::Result<()> {
    anyhow::bail!("this hf-mount was built without FUSE (the `fuse` cargo feature); serve over NFS instead")
}

/// Without the NFS frontend (built without the `nfs` feature): a clear error.
#[cfg(not(feature = "nfs"))]
pub fn run_nfs(_args: crate::config::NfsArgs) -> anyhow::Result<()> {
    anyhow::bail!("this hf-mount was built without NFS (the `nfs` cargo feature); mount with --fuse instead")
}
