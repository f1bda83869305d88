//! The FUSE mount's lifecycle: checking the mountpoint, mounting, the
//! thread that sends kernel cache invalidations (holding no engine state, so
//! it can never deadlock the kernel against the daemon), and unmounting,
//! which drains pending uploads within the shutdown timeout.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use fuser::{Config, INodeNo, MountOption};
use tokio::runtime::Handle;

use super::{FuseOptions, HfFuse};
use crate::engine::Engine;
use crate::types::Invalidation;

/// A live FUSE mount.
pub struct FuseMount {
    session: Option<fuser::BackgroundSession>,
    engine: Engine,
    rt: Handle,
    mountpoint: PathBuf,
}

/// Mounts `engine` at `mountpoint`; requests are served on `rt`.
pub fn mount(engine: Engine, rt: Handle, mountpoint: &Path, opts: FuseOptions) -> anyhow::Result<FuseMount> {
    crate::frontends::check_mountpoint(mountpoint)?;
    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::FSName(format!("hf-mount:{}", engine.source())),
        MountOption::Subtype("hf-mount".into()),
        MountOption::NoAtime,
        MountOption::NoDev,
        MountOption::NoSuid,
        MountOption::DefaultPermissions,
    ];
    if !engine.writable() {
        config.mount_options.push(MountOption::RO);
    }
    if opts.allow_other {
        // The session's ACL (not a raw mount option): fuser answers EACCES to other users'
        // requests unless it knows they are allowed.
        config.acl = fuser::SessionACL::All;
    }
    config.n_threads = Some(opts.max_threads.max(1));
    config.clone_fd = true;
    let invalidations = engine.take_invalidations();
    let fs = HfFuse { engine: engine.clone(), rt: rt.clone(), opts };
    let session = fuser::Session::new(fs, mountpoint, &config)
        .map_err(|e| anyhow::anyhow!("cannot mount FUSE at {}: {e}", mountpoint.display()))?;
    let notifier = session.notifier();
    if let Some(mut rx) = invalidations {
        std::thread::Builder::new().name("hf-mount-inval".into()).spawn(move || {
            while let Some(i) = rx.blocking_recv() {
                let r = match &i {
                    Invalidation::Entry { parent, name } => notifier.inval_entry(INodeNo(*parent), OsStr::new(name)),
                    Invalidation::Inode { ino } => notifier.inval_inode(INodeNo(*ino), 0, 0),
                };
                // ENOENT: the kernel had nothing cached for it; fine.
                if let Err(e) = r {
                    if e.raw_os_error() != Some(libc::ENOENT) {
                        tracing::debug!("kernel invalidation {i:?} failed: {e}");
                    }
                }
            }
        })?;
    }
    let session = session.spawn().map_err(|e| anyhow::anyhow!("cannot start the FUSE session: {e}"))?;
    raise_readahead(mountpoint);
    Ok(FuseMount { session: Some(session), engine, rt, mountpoint: mountpoint.to_path_buf() })
}

/// The kernel's read-ahead for this mount, in KiB. Its default (128 KiB) caps every
/// sequential FUSE read at 128 KiB; 1 MiB lets reads use the negotiated maximum.
const KERNEL_READ_AHEAD_KIB: u32 = 1024;

/// Best effort (root only): raises the mount's `read_ahead_kb` in sysfs.
fn raise_readahead(mountpoint: &Path) {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::metadata(mountpoint) else { return };
    let dev = meta.dev();
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    let path = format!("/sys/class/bdi/{major}:{minor}/read_ahead_kb");
    if let Err(e) = std::fs::write(&path, KERNEL_READ_AHEAD_KIB.to_string()) {
        tracing::debug!("cannot raise {path}: {e}; sequential reads stay at 128 KiB");
    }
}

impl FuseMount {
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// Unmounts (falling back to `fusermount3 -u` when the kernel refuses), waits for the
    /// session to end, and drains pending uploads (bounded by the shutdown timeout).
    pub fn unmount(mut self) -> anyhow::Result<()> {
        self.unmount_inner()
    }

    fn unmount_inner(&mut self) -> anyhow::Result<()> {
        let Some(session) = self.session.take() else { return Ok(()) };
        let result = match session.umount_and_join() {
            Ok(()) => Ok(()),
            Err(e) => {
                tracing::warn!("unmount of {} failed ({e}); trying fusermount3 -u", self.mountpoint.display());
                let status = std::process::Command::new("fusermount3").arg("-u").arg(&self.mountpoint).status();
                match status {
                    Ok(s) if s.success() => Ok(()),
                    _ => Err(anyhow::anyhow!("cannot unmount {}: {e}", self.mountpoint.display())),
                }
            }
        };
        self.drain();
        result
    }

    fn drain(&self) {
        let engine = self.engine.clone();
        // From a thread of our own: the caller may be inside the runtime.
        let rt = self.rt.clone();
        let _ = std::thread::spawn(move || rt.block_on(engine.drain_and_shutdown())).join();
    }

    /// Blocks until the mount goes away (unmounted from outside), then drains and stops the engine.
    pub fn wait(mut self) -> anyhow::Result<()> {
        let Some(session) = self.session.take() else { return Ok(()) };
        let joined = session.join();
        self.drain();
        joined.map_err(|e| anyhow::anyhow!("FUSE session ended with an error: {e}"))
    }
}

impl Drop for FuseMount {
    fn drop(&mut self) {
        if self.session.is_some() {
            let _ = self.unmount_inner();
        }
    }
}
