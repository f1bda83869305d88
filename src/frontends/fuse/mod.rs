//! The FUSE frontend (fuser 0.18, pure-Rust mount). It translates kernel
//! requests into engine calls and the answers back, nothing more: every
//! policy (read-only, names, modes, errno) is the engine's. A request that may
//! wait is answered from a task on the engine's runtime, so a FUSE worker
//! thread never waits on the network: any number of stalled reads leave `ls`
//! and `stat` served. What the engine can answer without waiting (a fresh
//! node's attributes, a name a fresh listing lacks, a write into a file held
//! in memory, most closes) is answered on the FUSE thread (`HfFuse::now`), sparing the hop
//! to the runtime. Mount and unmount live in `session`.

mod session;

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::{Duration, SystemTime};

use fuser::{
    AccessFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, InitFlags,
    KernelConfig, OpenFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty,
    ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow,
};
use tokio::runtime::Handle;
use tracing::Instrument;

pub use session::{mount, FuseMount};

use crate::engine::{Engine, RenameFlags};
use crate::error::FsError;
use crate::types::{Attr, FileKind, SetAttr, TimeSet};

/// Attribute and entry lifetime in the kernel for content that cannot change.
const IMMUTABLE_TTL: Duration = Duration::from_secs(24 * 3600);
/// Largest read and write the kernel is asked to send.
const MAX_IO_BYTES: u32 = 1 << 20;
/// `st_blksize`: the I/O size tools like `cp` pick.
const BLKSIZE: u32 = 1 << 20;

#[derive(Clone, Debug)]
pub struct FuseOptions {
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

/// One kernel request's context inside its task.
#[derive(Clone, Copy)]
struct Ctx {
    op: &'static str,
    ino: u64,
    ttl: Duration,
}

impl Ctx {
    /// Logs, counts and records an error; the caller replies with the errno.
    fn fail(&self, e: &FsError) -> Errno {
        super::request_failed(self.op, self.ino, e);
        errno(e)
    }
}

impl HfFuse {
    fn ttl(&self) -> Duration {
        self.opts.ttl.unwrap_or(IMMUTABLE_TTL)
    }

    /// Answers a request on this FUSE thread when `f` can (from the engine's tables, without
    /// a task or a message: nothing that waits), inside a span for it like any other; `None`:
    /// it goes to `spawn`.
    fn now<T>(&self, op: &'static str, ino: u64, f: impl FnOnce(&Engine, Ctx) -> Option<T>) -> Option<T> {
        let start = std::time::Instant::now();
        let ctx = Ctx { op, ino, ttl: self.ttl() };
        let answer = super::request_span("fuse", op, ino).in_scope(|| f(&self.engine, ctx));
        if answer.is_some() {
            super::request_done(op, start);
        }
        answer
    }

    /// Runs `f` on the engine's runtime inside a span for this request.
    fn spawn<F>(&self, op: &'static str, ino: u64, f: impl FnOnce(Engine, Ctx) -> F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        // One trace per kernel request: actor hops and Hub/CAS calls become its children.
        let span = super::request_span("fuse", op, ino);
        let fut = f(self.engine.clone(), Ctx { op, ino, ttl: self.ttl() });
        let start = std::time::Instant::now();
        self.rt.spawn(
            async move {
                fut.await;
                super::request_done(op, start);
            }
            .instrument(span),
        );
    }
}

fn file_type(k: FileKind) -> FileType {
    match k {
        FileKind::Dir => FileType::Directory,
        FileKind::File => FileType::RegularFile,
        FileKind::Symlink => FileType::Symlink,
        FileKind::Fifo => FileType::NamedPipe,
        FileKind::Socket => FileType::Socket,
        FileKind::CharDevice => FileType::CharDevice,
        FileKind::BlockDevice => FileType::BlockDevice,
    }
}

fn file_attr(a: &Attr) -> FileAttr {
    FileAttr {
        ino: INodeNo(a.ino),
        size: a.size,
        blocks: a.size.div_ceil(512),
        atime: a.atime,
        mtime: a.mtime,
        ctime: a.ctime,
        crtime: a.ctime,
        kind: file_type(a.kind),
        perm: a.perm,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: a.rdev,
        blksize: BLKSIZE,
        flags: 0,
    }
}

fn time_set(t: Option<TimeOrNow>) -> Option<TimeSet> {
    t.map(|t| match t {
        TimeOrNow::Now => TimeSet::Now,
        TimeOrNow::SpecificTime(s) => TimeSet::At(s),
    })
}

fn name_bytes(name: &OsStr) -> Vec<u8> {
    name.as_bytes().to_vec()
}

/// Replies with an entry, or the error.
fn entry(ctx: Ctx, reply: ReplyEntry, r: Result<Attr, FsError>) {
    match r {
        Ok(a) => reply.entry(&ctx.ttl, &file_attr(&a), Generation(0)),
        Err(e) => reply.error(ctx.fail(&e)),
    }
}

fn empty(ctx: Ctx, reply: ReplyEmpty, r: Result<(), FsError>) {
    match r {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(ctx.fail(&e)),
    }
}

impl Filesystem for HfFuse {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let _ = config.set_max_readahead(MAX_IO_BYTES);
        let _ = config.set_max_write(MAX_IO_BYTES);
        let _ = config.set_max_background(64);
        let _ = config.set_congestion_threshold(48);
        // O_TRUNC arrives with open (not as a separate truncate), so a truncating open can stream.
        let wanted = InitFlags::FUSE_DO_READDIRPLUS
            | InitFlags::FUSE_READDIRPLUS_AUTO
            | InitFlags::FUSE_PARALLEL_DIROPS
            | InitFlags::FUSE_ASYNC_READ
            | InitFlags::FUSE_MAX_PAGES
            | InitFlags::FUSE_ATOMIC_O_TRUNC;
        let _ = config.add_capabilities(wanted & config.capabilities());
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let name = name_bytes(name);
        // A name a fresh listing does not have (a create's lookup): ENOENT from here.
        let missing = self.now("lookup", parent.0, |engine, ctx| {
            engine.lookup_missing_now(parent.0, &name).then(|| ctx.fail(&FsError::NotFound))
        });
        if let Some(errno) = missing {
            return reply.error(errno);
        }
        self.spawn("lookup", parent.0, move |engine, ctx| async move {
            entry(ctx, reply, engine.lookup(parent.0, &name).await)
        });
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.engine.forget(ino.0, nlookup);
    }

    // batch_forget: fuser's default calls `forget` for each node (its ForgetOne type is not public).

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        // Known and fresh: answered here (the hop to the runtime and back was two thirds of a
        // getattr's time); anything else goes to the engine.
        if let Some(a) = self.now("getattr", ino.0, |engine, _| engine.getattr_now(ino.0)) {
            return reply.attr(&self.ttl(), &file_attr(&a));
        }
        self.spawn("getattr", ino.0, move |engine, ctx| async move {
            match engine.getattr(ino.0).await {
                Ok(a) => reply.attr(&ctx.ttl, &file_attr(&a)),
                Err(e) => reply.error(ctx.fail(&e)),
            }
        });
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let set = SetAttr { mode, uid, gid, size, atime: time_set(atime), mtime: time_set(mtime) };
        self.spawn("setattr", ino.0, move |engine, ctx| async move {
            match engine.setattr(ino.0, fh.map(|f| f.0), set).await {
                Ok(a) => reply.attr(&ctx.ttl, &file_attr(&a)),
                Err(e) => reply.error(ctx.fail(&e)),
            }
        });
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        self.spawn("readlink", ino.0, move |engine, ctx| async move {
            match engine.readlink(ino.0).await {
                Ok(t) => reply.data(t.as_bytes()),
                Err(e) => reply.error(ctx.fail(&e)),
            }
        });
    }

    fn mknod(&self, req: &Request, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, rdev: u32, reply: ReplyEntry) {
        let (name, uid, gid, pid) = (name_bytes(name), req.uid(), req.gid(), req.pid());
        let mode = (mode & libc::S_IFMT) | (mode & 0o7777 & !umask);
        self.spawn("mknod", parent.0, move |engine, ctx| async move {
            entry(ctx, reply, engine.mknod(parent.0, &name, mode, rdev, uid, gid, pid).await)
        });
    }

    fn mkdir(&self, req: &Request, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, reply: ReplyEntry) {
        let (name, uid, gid) = (name_bytes(name), req.uid(), req.gid());
        self.spawn("mkdir", parent.0, move |engine, ctx| async move {
            entry(ctx, reply, engine.mkdir(parent.0, &name, mode & !umask, uid, gid).await)
        });
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let name = name_bytes(name);
        self.spawn("unlink", parent.0, move |engine, ctx| async move {
            empty(ctx, reply, engine.unlink(parent.0, &name).await)
        });
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let name = name_bytes(name);
        self.spawn("rmdir", parent.0, move |engine, ctx| async move {
            empty(ctx, reply, engine.rmdir(parent.0, &name).await)
        });
    }

    fn symlink(&self, req: &Request, parent: INodeNo, link_name: &OsStr, target: &Path, reply: ReplyEntry) {
        let (name, target, uid, gid) =
            (name_bytes(link_name), target.as_os_str().as_bytes().to_vec(), req.uid(), req.gid());
        self.spawn("symlink", parent.0, move |engine, ctx| async move {
            entry(ctx, reply, engine.symlink(parent.0, &name, &target, uid, gid).await)
        });
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: fuser::RenameFlags,
        reply: ReplyEmpty,
    ) {
        let (name, newname) = (name_bytes(name), name_bytes(newname));
        let flags = RenameFlags {
            noreplace: flags.contains(fuser::RenameFlags::RENAME_NOREPLACE),
            exchange: flags.contains(fuser::RenameFlags::RENAME_EXCHANGE),
            whiteout: flags.contains(fuser::RenameFlags::RENAME_WHITEOUT),
        };
        self.spawn("rename", parent.0, move |engine, ctx| async move {
            empty(ctx, reply, engine.rename(parent.0, &name, newparent.0, &newname, flags).await)
        });
    }

    fn link(&self, _req: &Request, ino: INodeNo, newparent: INodeNo, newname: &OsStr, reply: ReplyEntry) {
        let name = name_bytes(newname);
        self.spawn("link", ino.0, move |engine, ctx| async move {
            entry(ctx, reply, engine.link(ino.0, newparent.0, &name).await)
        });
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let pinned = self.opts.ttl.is_none();
        let pid = req.pid();
        self.spawn("open", ino.0, move |engine, ctx| async move {
            match engine.open(ino.0, flags.0, pid).await {
                Ok((fh, keep)) => {
                    let flags = if keep || pinned { FopenFlags::FOPEN_KEEP_CACHE } else { FopenFlags::empty() };
                    reply.opened(FileHandle(fh), flags)
                }
                Err(e) => reply.error(ctx.fail(&e)),
            }
        });
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        let (name, uid, gid, pid) = (name_bytes(name), req.uid(), req.gid(), req.pid());
        self.spawn("create", parent.0, move |engine, ctx| async move {
            match engine.create(parent.0, &name, mode & !umask, uid, gid, pid).await {
                Ok((a, fh)) => {
                    reply.created(&ctx.ttl, &file_attr(&a), Generation(0), FileHandle(fh), FopenFlags::empty())
                }
                Err(e) => reply.error(ctx.fail(&e)),
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
        self.spawn("read", ino.0, move |engine, ctx| async move {
            match engine.read(fh.0, offset, size).await {
                Ok(bytes) => {
                    tracing::Span::current().record("bytes", bytes.len());
                    reply.data(&bytes)
                }
                Err(e) => reply.error(ctx.fail(&e)),
            }
        });
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _wf: fuser::WriteFlags,
        _flags: OpenFlags,
        _lock: Option<fuser::LockOwner>,
        reply: ReplyWrite,
    ) {
        if let Some(answer) = self.now("write", ino.0, |engine, ctx| {
            engine.write_now(fh.0, offset, data).map(|r| r.map_err(|e| ctx.fail(&e)))
        }) {
            return match answer {
                Ok(n) => reply.written(n),
                Err(e) => reply.error(e),
            };
        }
        // The one copy out of fuser's buffer; the engine passes it on without another.
        let data = crate::engine::write_buffer(data);
        self.spawn("write", ino.0, move |engine, ctx| async move {
            tracing::Span::current().record("bytes", data.len());
            match engine.write(fh.0, offset, data).await {
                Ok(n) => reply.written(n),
                Err(e) => reply.error(ctx.fail(&e)),
            }
        });
    }

    fn flush(&self, req: &Request, ino: INodeNo, fh: FileHandle, _lock: fuser::LockOwner, reply: ReplyEmpty) {
        let pid = req.pid();
        if let Some(answer) =
            self.now("flush", ino.0, |engine, ctx| engine.flush_now(fh.0, pid).map(|r| r.map_err(|e| ctx.fail(&e))))
        {
            return match answer {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(e),
            };
        }
        self.spawn("flush", ino.0, move |engine, ctx| async move { empty(ctx, reply, engine.flush(fh.0, pid).await) });
    }

    fn fsync(&self, _req: &Request, ino: INodeNo, fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        self.spawn("fsync", ino.0, move |engine, ctx| async move { empty(ctx, reply, engine.fsync(fh.0).await) });
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
        if self.now("release", ino.0, |engine, _| engine.release_read_now(fh.0).then_some(())).is_some() {
            return reply.ok();
        }
        self.spawn("release", ino.0, move |engine, _| async move {
            engine.release(fh.0).await;
            reply.ok()
        });
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        self.spawn("opendir", ino.0, move |engine, ctx| async move {
            match engine.opendir(ino.0).await {
                Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
                Err(e) => reply.error(ctx.fail(&e)),
            }
        });
    }

    fn readdir(&self, _req: &Request, ino: INodeNo, fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        self.spawn("readdir", ino.0, move |engine, ctx| async move {
            let entries = match engine.readdir_snapshot(fh.0).await {
                Ok(e) => e,
                Err(e) => return reply.error(ctx.fail(&e)),
            };
            let specials = [(ino.0, FileType::Directory, "."), (ino.0, FileType::Directory, "..")];
            let mut pos = offset as usize;
            while pos < entries.len() + 2 {
                let full = if pos < 2 {
                    let (i, k, n) = specials[pos];
                    reply.add(INodeNo(i), (pos + 1) as u64, k, n)
                } else {
                    let e = &entries[pos - 2];
                    reply.add(INodeNo(e.attr.ino), (pos + 1) as u64, file_type(e.attr.kind), &e.name)
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
        self.spawn("readdirplus", ino.0, move |engine, ctx| async move {
            let entries = match engine.readdir_snapshot(fh.0).await {
                Ok(e) => e,
                Err(e) => return reply.error(ctx.fail(&e)),
            };
            let dir_attr = match engine.getattr(ino.0).await {
                Ok(a) => file_attr(&a),
                Err(e) => return reply.error(ctx.fail(&e)),
            };
            let ttl = ctx.ttl;
            let mut counted = Vec::new();
            let mut pos = offset as usize;
            while pos < entries.len() + 2 {
                let full = if pos < 2 {
                    let name = if pos == 0 { "." } else { ".." };
                    reply.add(INodeNo(ino.0), (pos + 1) as u64, name, &ttl, &dir_attr, Generation(0))
                } else {
                    let e = &entries[pos - 2];
                    let full = reply.add(
                        INodeNo(e.attr.ino),
                        (pos + 1) as u64,
                        &e.name,
                        &ttl,
                        &file_attr(&e.attr),
                        Generation(0),
                    );
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
            engine.hold(counted, crate::types::Hold::Count);
            reply.ok()
        });
    }

    fn releasedir(&self, _req: &Request, ino: INodeNo, fh: FileHandle, _flags: OpenFlags, reply: ReplyEmpty) {
        self.engine.releasedir(ino.0, fh.0);
        reply.ok();
    }

    fn fsyncdir(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        // Directory changes are journaled as they happen.
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let s = self.engine.statfs();
        reply.statfs(s.blocks, s.free, s.free, s.files, s.files_free, s.block_bytes as u32, 255, s.block_bytes as u32);
    }

    fn access(&self, _req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        if mask.contains(AccessFlags::W_OK) && !self.engine.writable() {
            return reply.error(Errno::EROFS);
        }
        self.spawn("access", ino.0, move |engine, ctx| async move {
            empty(ctx, reply, engine.getattr(ino.0).await.map(|_| ()))
        });
    }

    // Extended attributes are not kept. ENOSYS makes the kernel stop asking and answer
    // EOPNOTSUPP itself from then on: otherwise every write asks for `security.capability`
    // (a round trip per write, a seventh of a small file's requests).
    fn getxattr(&self, _req: &Request, _ino: INodeNo, _name: &OsStr, _size: u32, reply: ReplyXattr) {
        reply.error(Errno::from_i32(libc::ENOSYS));
    }

    fn listxattr(&self, _req: &Request, _ino: INodeNo, _size: u32, reply: ReplyXattr) {
        reply.error(Errno::from_i32(libc::ENOSYS));
    }

    fn setxattr(&self, _req: &Request, _i: INodeNo, _n: &OsStr, _v: &[u8], _f: i32, _p: u32, reply: ReplyEmpty) {
        reply.error(Errno::from_i32(libc::ENOTSUP));
    }

    fn removexattr(&self, _req: &Request, _i: INodeNo, _n: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::from_i32(libc::ENOTSUP));
    }

    fn fallocate(&self, _req: &Request, _i: INodeNo, _fh: FileHandle, _o: u64, _l: u64, _m: i32, reply: ReplyEmpty) {
        reply.error(Errno::from_i32(libc::EOPNOTSUPP));
    }
}
