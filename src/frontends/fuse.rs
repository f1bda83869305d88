//! The FUSE frontend (fuser 0.18, pure-Rust mount). It translates kernel
//! requests into engine calls and the answers back. Every request is answered
//! from a task on the engine's runtime, so a FUSE worker thread never waits
//! on the network: any number of stalled reads leave `ls` and `stat` served.
//! Mutations answer EROFS. Kernel cache invalidations from remote changes
//! are sent from a thread of their own that holds no engine state.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use fuser::{
    AccessFlags, Config, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, InitFlags,
    KernelConfig, MountOption, OpenFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus,
    ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request,
};
use tokio::runtime::Handle;
use tracing::Instrument;

use crate::actors::inode_table::Invalidation;
use crate::engine::{Attr, Engine};
use crate::error::FsError;

/// Attribute and entry lifetime in the kernel for content that cannot change.
const IMMUTABLE_TTL: Duration = Duration::from_secs(24 * 3600);
/// Largest read the kernel is asked to send.
const MAX_READ_BYTES: u32 = 1 << 20;
/// `st_blksize`: the I/O size tools like `cp` pick.
const BLKSIZE: u32 = 1 << 20;

#[derive(Clone, Debug)]
pub struct FuseOptions {
    pub uid: u32,
    pub gid: u32,
    pub max_threads: usize,
    pub allow_other: bool,
    /// Kernel attribute/entry TTL (`None`: immutable content).
    pub ttl: Option<Duration>,
}

struct HfFuse {
    engine: Engine,
    rt: Handle,
    opts: FuseOptions,
}

fn errno(e: &FsError) -> Errno {
    Errno::from_i32(e.errno())
}

impl HfFuse {
    fn ttl(&self) -> Duration {
        self.opts.ttl.unwrap_or(IMMUTABLE_TTL)
    }

    /// Runs `f` on the engine's runtime inside a span for this request.
    fn spawn<F>(&self, op: &'static str, ino: u64, f: impl FnOnce(Engine, FileAttrFn, Duration) -> F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        // One trace per kernel request: actor hops and Hub/CAS calls become its children.
        let span = tracing::debug_span!(
            "fuse",
            otel.name = %format!("fuse.{op}"),
            op,
            ino,
            path = tracing::field::Empty,
            errno = tracing::field::Empty,
            bytes = tracing::field::Empty,
            cache.hits = tracing::field::Empty,
            cache.misses = tracing::field::Empty,
        );
        let (uid, gid) = (self.opts.uid, self.opts.gid);
        let fut = f(self.engine.clone(), FileAttrFn { uid, gid }, self.ttl());
        let start = std::time::Instant::now();
        self.rt.spawn(
            async move {
                fut.await;
                let m = crate::metrics::get();
                let attrs = [crate::metrics::kv("op", op)];
                m.requests.add(1, &attrs);
                m.request_duration.record(start.elapsed().as_secs_f64(), &attrs);
            }
            .instrument(span),
        );
    }
}

/// Turns engine attributes into kernel attributes inside tasks.
#[derive(Clone, Copy)]
struct FileAttrFn {
    uid: u32,
    gid: u32,
}

impl FileAttrFn {
    fn of(&self, a: &Attr) -> FileAttr {
        file_attr(a, self.uid, self.gid)
    }
}

fn file_attr(a: &Attr, uid: u32, gid: u32) -> FileAttr {
    let (kind, perm, nlink) =
        if a.is_dir { (FileType::Directory, 0o555, 2) } else { (FileType::RegularFile, 0o444, 1) };
    FileAttr {
        ino: INodeNo(a.ino),
        size: a.size,
        blocks: a.size.div_ceil(512),
        atime: a.mtime,
        mtime: a.mtime,
        ctime: a.mtime,
        crtime: a.mtime,
        kind,
        perm,
        nlink,
        uid,
        gid,
        rdev: 0,
        blksize: BLKSIZE,
        flags: 0,
    }
}

fn log_err(op: &'static str, ino: u64, e: &FsError) {
    tracing::Span::current().record("errno", e.errno());
    crate::metrics::get().errors.add(1, &[crate::metrics::kv("op", op), crate::metrics::kv("errno", e.errno() as i64)]);
    match e {
        FsError::NotFound => tracing::trace!(op, ino, "not found"),
        _ => tracing::warn!(op, ino, "{op} failed: {e}"),
    }
}

impl Filesystem for HfFuse {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let _ = config.set_max_readahead(MAX_READ_BYTES);
        let _ = config.set_max_write(MAX_READ_BYTES);
        let _ = config.set_max_background(64);
        let _ = config.set_congestion_threshold(48);
        let wanted = InitFlags::FUSE_DO_READDIRPLUS
            | InitFlags::FUSE_READDIRPLUS_AUTO
            | InitFlags::FUSE_PARALLEL_DIROPS
            | InitFlags::FUSE_ASYNC_READ
            | InitFlags::FUSE_MAX_PAGES;
        let _ = config.add_capabilities(wanted & config.capabilities());
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let name = name.to_string_lossy().into_owned();
        self.spawn("lookup", parent.0, move |engine, fa, ttl| async move {
            match engine.lookup(parent.0, &name).await {
                Ok(a) => reply.entry(&ttl, &fa.of(&a), Generation(0)),
                Err(e) => {
                    log_err("lookup", parent.0, &e);
                    reply.error(errno(&e))
                }
            }
        });
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.engine.forget(ino.0, nlookup);
    }

    // batch_forget: fuser's default calls `forget` for each node (its ForgetOne type is not public).

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        self.spawn("getattr", ino.0, move |engine, fa, ttl| async move {
            match engine.getattr(ino.0).await {
                Ok(a) => reply.attr(&ttl, &fa.of(&a)),
                Err(e) => {
                    log_err("getattr", ino.0, &e);
                    reply.error(errno(&e))
                }
            }
        });
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if flags.0 & libc::O_ACCMODE != libc::O_RDONLY || flags.0 & libc::O_TRUNC != 0 {
            return reply.error(Errno::EROFS);
        }
        let pinned = self.opts.ttl.is_none();
        self.spawn("open", ino.0, move |engine, _, _| async move {
            match engine.open(ino.0).await {
                Ok((fh, keep)) => {
                    let flags = if keep || pinned { FopenFlags::FOPEN_KEEP_CACHE } else { FopenFlags::empty() };
                    reply.opened(FileHandle(fh), flags)
                }
                Err(e) => {
                    log_err("open", ino.0, &e);
                    reply.error(errno(&e))
                }
            }
        });
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock: Option<fuser::LockOwner>,
        reply: ReplyData,
    ) {
        tracing::trace!(ino = ino.0, offset, size, "read");
        self.spawn("read", ino.0, move |engine, _, _| async move {
            match engine.read(fh.0, offset, size).await {
                Ok(bytes) => {
                    tracing::Span::current().record("bytes", bytes.len());
                    reply.data(&bytes)
                }
                Err(e) => {
                    log_err("read", ino.0, &e);
                    reply.error(errno(&e))
                }
            }
        });
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock: Option<fuser::LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.spawn("release", ino.0, move |engine, _, _| async move {
            engine.release(fh.0).await;
            reply.ok()
        });
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        self.spawn("opendir", ino.0, move |engine, _, _| async move {
            match engine.opendir(ino.0).await {
                Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
                Err(e) => {
                    log_err("opendir", ino.0, &e);
                    reply.error(errno(&e))
                }
            }
        });
    }

    fn readdir(&self, _req: &Request, ino: INodeNo, fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        self.spawn("readdir", ino.0, move |engine, _, _| async move {
            let entries = match engine.readdir_snapshot(fh.0).await {
                Ok(e) => e,
                Err(e) => return reply.error(errno(&e)),
            };
            let specials = [(ino.0, FileType::Directory, "."), (ino.0, FileType::Directory, "..")];
            let mut pos = offset as usize;
            while pos < entries.len() + 2 {
                let full = if pos < 2 {
                    let (i, k, n) = specials[pos];
                    reply.add(INodeNo(i), (pos + 1) as u64, k, n)
                } else {
                    let e = &entries[pos - 2];
                    let kind = if e.attr.is_dir { FileType::Directory } else { FileType::RegularFile };
                    reply.add(INodeNo(e.attr.ino), (pos + 1) as u64, kind, &e.name)
                };
                if full {
                    break;
                }
                pos += 1;
            }
            reply.ok()
        });
    }

    fn readdirplus(&self, _req: &Request, ino: INodeNo, fh: FileHandle, offset: u64, mut reply: ReplyDirectoryPlus) {
        self.spawn("readdirplus", ino.0, move |engine, fa, ttl| async move {
            let entries = match engine.readdir_snapshot(fh.0).await {
                Ok(e) => e,
                Err(e) => return reply.error(errno(&e)),
            };
            let dir_attr = match engine.getattr(ino.0).await {
                Ok(a) => fa.of(&a),
                Err(e) => return reply.error(errno(&e)),
            };
            let mut counted = Vec::new();
            let mut pos = offset as usize;
            while pos < entries.len() + 2 {
                let full = if pos < 2 {
                    reply.add(
                        INodeNo(ino.0),
                        (pos + 1) as u64,
                        if pos == 0 { "." } else { ".." },
                        &ttl,
                        &dir_attr,
                        Generation(0),
                    )
                } else {
                    let e = &entries[pos - 2];
                    let full =
                        reply.add(INodeNo(e.attr.ino), (pos + 1) as u64, &e.name, &ttl, &fa.of(&e.attr), Generation(0));
                    if !full {
                        counted.push(e.attr.ino);
                    }
                    full
                };
                if full {
                    break;
                }
                pos += 1;
            }
            // The kernel holds a reference to every entry it was given (not `.` and `..`).
            engine.add_lookups(counted);
            reply.ok()
        });
    }

    fn releasedir(&self, _req: &Request, ino: INodeNo, fh: FileHandle, _flags: OpenFlags, reply: ReplyEmpty) {
        self.engine.releasedir(ino.0, fh.0);
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        // A remote filesystem has no meaningful capacity; report a large, empty-free one.
        reply.statfs(0, 0, 0, 0, 0, BLKSIZE, 255, BLKSIZE);
    }

    fn access(&self, _req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        if mask.contains(AccessFlags::W_OK) {
            return reply.error(Errno::EROFS);
        }
        self.spawn("access", ino.0, move |engine, _, _| async move {
            match engine.getattr(ino.0).await {
                Ok(_) => reply.ok(),
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn getxattr(&self, _req: &Request, _ino: INodeNo, _name: &OsStr, _size: u32, reply: ReplyXattr) {
        reply.error(Errno::from_i32(libc::ENOTSUP));
    }

    fn listxattr(&self, _req: &Request, _ino: INodeNo, _size: u32, reply: ReplyXattr) {
        reply.error(Errno::from_i32(libc::ENOTSUP));
    }

    fn readlink(&self, _req: &Request, _ino: INodeNo, reply: ReplyData) {
        reply.error(Errno::EINVAL);
    }

    // Every mutation: a read-only file system.
    fn setattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        _size: Option<u64>,
        _atime: Option<fuser::TimeOrNow>,
        _mtime: Option<fuser::TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        reply.error(Errno::EROFS);
    }

    fn mknod(&self, _req: &Request, _p: INodeNo, _n: &OsStr, _m: u32, _u: u32, _r: u32, reply: ReplyEntry) {
        reply.error(Errno::EROFS);
    }

    fn mkdir(&self, _req: &Request, _p: INodeNo, _n: &OsStr, _m: u32, _u: u32, reply: ReplyEntry) {
        reply.error(Errno::EROFS);
    }

    fn unlink(&self, _req: &Request, _p: INodeNo, _n: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::EROFS);
    }

    fn rmdir(&self, _req: &Request, _p: INodeNo, _n: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::EROFS);
    }

    fn symlink(&self, _req: &Request, _p: INodeNo, _n: &OsStr, _t: &Path, reply: ReplyEntry) {
        reply.error(Errno::EROFS);
    }

    fn rename(
        &self,
        _req: &Request,
        _p: INodeNo,
        _n: &OsStr,
        _np: INodeNo,
        _nn: &OsStr,
        _f: fuser::RenameFlags,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::EROFS);
    }

    fn link(&self, _req: &Request, _i: INodeNo, _np: INodeNo, _nn: &OsStr, reply: ReplyEntry) {
        reply.error(Errno::EROFS);
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        _data: &[u8],
        _wf: fuser::WriteFlags,
        _flags: OpenFlags,
        _lock: Option<fuser::LockOwner>,
        reply: ReplyWrite,
    ) {
        reply.error(Errno::EROFS);
    }

    fn create(&self, _req: &Request, _p: INodeNo, _n: &OsStr, _m: u32, _u: u32, _f: i32, reply: ReplyCreate) {
        reply.error(Errno::EROFS);
    }

    fn setxattr(&self, _req: &Request, _i: INodeNo, _n: &OsStr, _v: &[u8], _f: i32, _p: u32, reply: ReplyEmpty) {
        reply.error(Errno::EROFS);
    }

    fn removexattr(&self, _req: &Request, _i: INodeNo, _n: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::EROFS);
    }

    fn fallocate(&self, _req: &Request, _i: INodeNo, _fh: FileHandle, _o: u64, _l: u64, _m: i32, reply: ReplyEmpty) {
        reply.error(Errno::EROFS);
    }
}

/// A live FUSE mount.
pub struct FuseMount {
    session: Option<fuser::BackgroundSession>,
    engine: Engine,
    mountpoint: PathBuf,
}

/// Checks that `mountpoint` is an existing, empty directory we can use.
pub fn check_mountpoint(mountpoint: &Path) -> anyhow::Result<()> {
    let meta =
        std::fs::metadata(mountpoint).map_err(|e| anyhow::anyhow!("mountpoint {}: {e}", mountpoint.display()))?;
    anyhow::ensure!(meta.is_dir(), "mountpoint {} is not a directory", mountpoint.display());
    let mut entries =
        std::fs::read_dir(mountpoint).map_err(|e| anyhow::anyhow!("mountpoint {}: {e}", mountpoint.display()))?;
    anyhow::ensure!(entries.next().is_none(), "mountpoint {} is not empty", mountpoint.display());
    Ok(())
}

/// Mounts `engine` at `mountpoint`; requests are served on `rt`.
pub fn mount(engine: Engine, rt: Handle, mountpoint: &Path, opts: FuseOptions) -> anyhow::Result<FuseMount> {
    check_mountpoint(mountpoint)?;
    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::FSName(format!("hf-mount:{}", engine.source())),
        MountOption::Subtype("hf-mount".into()),
        MountOption::RO,
        MountOption::NoAtime,
        MountOption::NoDev,
        MountOption::NoSuid,
        MountOption::DefaultPermissions,
    ];
    if opts.allow_other {
        config.mount_options.push(MountOption::CUSTOM("allow_other".into()));
    }
    config.n_threads = Some(opts.max_threads.max(1));
    config.clone_fd = true;
    let invalidations = engine.take_invalidations();
    let fs = HfFuse { engine: engine.clone(), rt, opts };
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
    Ok(FuseMount { session: Some(session), engine, mountpoint: mountpoint.to_path_buf() })
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

    /// Unmounts (falling back to `fusermount3 -u` when the kernel refuses) and waits for the session to end.
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
        self.engine.shutdown();
        result
    }

    /// Blocks until the mount goes away (unmounted from outside), then stops the engine.
    pub fn wait(mut self) -> anyhow::Result<()> {
        let Some(session) = self.session.take() else { return Ok(()) };
        let joined = session.join();
        self.engine.shutdown();
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
