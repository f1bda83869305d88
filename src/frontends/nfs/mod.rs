//! The NFSv3 frontend (nfsserve, in the patched copy under `vendor/`). It
//! speaks to the same engine as FUSE. File ids are the engine's inode
//! numbers; handles carry the server's boot number too (see `handles`).
//! Reads and writes come without an open: reads plan read-ahead per inode,
//! and each WRITE is journaled by the engine before it is answered, synced
//! to disk first when the client asks for FILE_SYNC or DATA_SYNC; UNSTABLE
//! writes are made durable by COMMIT, and the write verifier changes with
//! every start so a client resends what a restart may have lost. NFS
//! requires namespace changes to be stable when answered: the journal is
//! synced before each reply. Lookups do not count references (NFS never
//! gives them back): a node handed to a client stays loaded for
//! `HANDLE_GRACE` at least, whatever `--max-inodes` says.

mod dirs;
mod handles;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use nfsserve::nfs::{
    cookie3, cookieverf3, createverf3, fattr3, fileid3, filename3, fsinfo3, ftype3, nfs_fh3, nfspath3, nfsstat3,
    nfstime3, post_op_attr, sattr3, set_atime, set_gid3, set_mode3, set_mtime, set_size3, set_uid3, specdata3,
    stable_how, writeverf3,
};
use nfsserve::tcp::{NFSTcp, NFSTcpListener};
use nfsserve::vfs::{DirEntry as NfsDirEntry, NFSFileSystem, ReadDirResult, VFSCapabilities};
use tracing::Instrument;

use crate::engine::{Engine, RenameFlags};
use crate::error::{FsError, FsResult};
use crate::types::{Attr, Durability, FileKind, Hold, SetAttr, TimeSet, ROOT_INO};

/// Largest READ a client is told it may send.
const NFS_MAX_READ_BYTES: u32 = 1 << 20;
/// Largest WRITE a client is told it may send.
const NFS_MAX_WRITE_BYTES: u32 = 1 << 20;
/// A node whose number a client was given (LOOKUP, READDIRPLUS, CREATE…) stays loaded at
/// least this long since it was last handed out.
pub const HANDLE_GRACE: Duration = Duration::from_secs(600);

/// How the NFS server treats its clients.
#[derive(Clone, Debug)]
pub struct NfsOptions {
    /// How long a node handed to a client stays loaded (see `HANDLE_GRACE`).
    pub handle_grace: Duration,
}

impl Default for NfsOptions {
    fn default() -> Self {
        NfsOptions { handle_grace: HANDLE_GRACE }
    }
}

pub struct HfNfs {
    engine: Engine,
    handles: handles::Handles,
    dirs: dirs::Snapshots,
    grace: Hold,
}

/// The NFS status for an error: from its errno, which the engine chose (one place for both frontends).
fn nfsstat(e: &FsError) -> nfsstat3 {
    match e.errno() {
        libc::ENOENT => nfsstat3::NFS3ERR_NOENT,
        libc::EACCES => nfsstat3::NFS3ERR_ACCES,
        libc::EPERM => nfsstat3::NFS3ERR_PERM,
        libc::EROFS => nfsstat3::NFS3ERR_ROFS,
        libc::ENOTDIR => nfsstat3::NFS3ERR_NOTDIR,
        libc::EISDIR => nfsstat3::NFS3ERR_ISDIR,
        libc::EEXIST => nfsstat3::NFS3ERR_EXIST,
        libc::ENOTEMPTY => nfsstat3::NFS3ERR_NOTEMPTY,
        libc::ENAMETOOLONG => nfsstat3::NFS3ERR_NAMETOOLONG,
        // An engine handle that is gone (EBADF) is, to an NFS client, a stale one.
        libc::ESTALE | libc::EBADF => nfsstat3::NFS3ERR_STALE,
        libc::ENOSPC => nfsstat3::NFS3ERR_NOSPC,
        libc::EFBIG => nfsstat3::NFS3ERR_FBIG,
        libc::EAGAIN => nfsstat3::NFS3ERR_JUKEBOX,
        libc::ENOTSUP => nfsstat3::NFS3ERR_NOTSUPP,
        libc::EINVAL => nfsstat3::NFS3ERR_INVAL,
        libc::EXDEV => nfsstat3::NFS3ERR_XDEV,
        libc::EMLINK => nfsstat3::NFS3ERR_MLINK,
        _ => nfsstat3::NFS3ERR_IO,
    }
}

fn nfstime(t: SystemTime) -> nfstime3 {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    nfstime3 { seconds: d.as_secs() as u32, nseconds: d.subsec_nanos() }
}

fn systime(t: &nfstime3) -> SystemTime {
    UNIX_EPOCH + Duration::new(u64::from(t.seconds), t.nseconds)
}

/// Linux's device number encoding (as FUSE passes it) from and to NFS's major/minor.
fn rdev_of(spec: specdata3) -> u32 {
    let (major, minor) = (spec.specdata1, spec.specdata2);
    (minor & 0xff) | ((major & 0xfff) << 8) | ((minor & !0xff) << 12)
}

fn spec_of(rdev: u32) -> specdata3 {
    specdata3 { specdata1: (rdev >> 8) & 0xfff, specdata2: (rdev & 0xff) | ((rdev >> 12) & 0xfff00) }
}

/// The attribute changes a `sattr3` asks for.
fn set_attr(s: &sattr3) -> SetAttr {
    SetAttr {
        mode: match s.mode {
            set_mode3::mode(m) => Some(m),
            set_mode3::Void => None,
        },
        uid: match s.uid {
            set_uid3::uid(u) => Some(u),
            set_uid3::Void => None,
        },
        gid: match s.gid {
            set_gid3::gid(g) => Some(g),
            set_gid3::Void => None,
        },
        size: match s.size {
            set_size3::size(n) => Some(n),
            set_size3::Void => None,
        },
        atime: match s.atime {
            set_atime::DONT_CHANGE => None,
            set_atime::SET_TO_SERVER_TIME => Some(TimeSet::Now),
            set_atime::SET_TO_CLIENT_TIME(t) => Some(TimeSet::At(systime(&t))),
        },
        mtime: match s.mtime {
            set_mtime::DONT_CHANGE => None,
            set_mtime::SET_TO_SERVER_TIME => Some(TimeSet::Now),
            set_mtime::SET_TO_CLIENT_TIME(t) => Some(TimeSet::At(systime(&t))),
        },
    }
}

fn fattr(a: &Attr) -> fattr3 {
    let ftype = match a.kind {
        FileKind::Dir => ftype3::NF3DIR,
        FileKind::File => ftype3::NF3REG,
        FileKind::Symlink => ftype3::NF3LNK,
        FileKind::Fifo => ftype3::NF3FIFO,
        FileKind::Socket => ftype3::NF3SOCK,
        FileKind::CharDevice => ftype3::NF3CHR,
        FileKind::BlockDevice => ftype3::NF3BLK,
    };
    fattr3 {
        ftype,
        mode: a.perm as u32,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        size: a.size,
        used: a.size,
        rdev: spec_of(a.rdev),
        fsid: 0x6866_6d6e,
        fileid: a.ino,
        atime: nfstime(a.atime),
        mtime: nfstime(a.mtime),
        ctime: nfstime(a.ctime),
    }
}

impl HfNfs {
    pub fn new(engine: Engine, opts: &NfsOptions) -> Self {
        let boot = engine.boot();
        let grace = Hold::For(opts.handle_grace);
        Self { engine, handles: handles::Handles::new(boot), dirs: dirs::Snapshots::new(boot), grace }
    }

    /// Runs one request inside a span, with the same attributes and metrics as FUSE's.
    async fn op<T>(
        &self,
        op: &'static str,
        ino: u64,
        f: impl std::future::Future<Output = FsResult<T>>,
    ) -> Result<T, nfsstat3> {
        let span = super::request_span("nfs", op, ino);
        let start = Instant::now();
        let r = f.instrument(span.clone()).await;
        let _in = span.enter();
        let r = r.map_err(|e| {
            super::request_failed(op, ino, &e);
            nfsstat(&e)
        });
        super::request_done(op, start);
        r
    }

    /// The owner of a new file: what the client set, else the mount's.
    fn owner(&self, s: &sattr3) -> (u32, u32) {
        let cfg = self.engine.config();
        let uid = match s.uid {
            set_uid3::uid(u) => u,
            set_uid3::Void => cfg.uid,
        };
        let gid = match s.gid {
            set_gid3::gid(g) => g,
            set_gid3::Void => cfg.gid,
        };
        (uid, gid)
    }

    /// A node just made or found: handed out, so held for the grace period.
    fn handed_out(&self, a: &Attr) -> (fileid3, fattr3) {
        self.engine.hold(vec![a.ino], self.grace);
        (a.ino, fattr(a))
    }
}

#[async_trait]
impl NFSFileSystem for HfNfs {
    fn capabilities(&self) -> VFSCapabilities {
        if self.engine.writable() {
            VFSCapabilities::ReadWrite
        } else {
            VFSCapabilities::ReadOnly
        }
    }

    fn root_dir(&self) -> fileid3 {
        ROOT_INO
    }

    fn id_to_fh(&self, id: fileid3) -> nfs_fh3 {
        self.handles.handle(id)
    }

    fn fh_to_id(&self, fh: &nfs_fh3) -> Result<fileid3, nfsstat3> {
        self.handles.ino(fh, &self.engine)
    }

    fn write_verifier(&self) -> writeverf3 {
        self.handles.write_verifier()
    }

    async fn lookup(&self, dirid: fileid3, filename: &filename3) -> Result<fileid3, nfsstat3> {
        let e = &self.engine;
        self.op("lookup", dirid, async {
            match &filename.0[..] {
                b"." => Ok(dirid),
                b".." => e.parent(dirid).await,
                name => e.lookup_holding(dirid, name, self.grace).await.map(|a| a.ino),
            }
        })
        .await
    }

    async fn getattr(&self, id: fileid3) -> Result<fattr3, nfsstat3> {
        self.op("getattr", id, async { self.engine.getattr(id).await.map(|a| fattr(&a)) }).await
    }

    async fn setattr(&self, id: fileid3, set: sattr3) -> Result<fattr3, nfsstat3> {
        self.op("setattr", id, async {
            let a = self.engine.setattr(id, None, set_attr(&set)).await?;
            self.engine.sync_journal().await?;
            Ok(fattr(&a))
        })
        .await
    }

    async fn read(&self, id: fileid3, offset: u64, count: u32) -> Result<(Vec<u8>, bool), nfsstat3> {
        self.op("read", id, async {
            let count = count.min(NFS_MAX_READ_BYTES);
            let (bytes, size) = self.engine.read_ino(id, offset, count).await?;
            tracing::Span::current().record("bytes", bytes.len());
            let eof = offset.saturating_add(bytes.len() as u64) >= size;
            Ok((bytes.to_vec(), eof))
        })
        .await
    }

    async fn write(
        &self,
        id: fileid3,
        offset: u64,
        data: &[u8],
        stable: stable_how,
    ) -> Result<(fattr3, stable_how), nfsstat3> {
        self.op("write", id, async {
            tracing::Span::current().record("bytes", data.len());
            let (durability, answered) = match stable {
                stable_how::UNSTABLE => (Durability::Process, stable_how::UNSTABLE),
                stable_how::DATA_SYNC | stable_how::FILE_SYNC => (Durability::Disk, stable_how::FILE_SYNC),
            };
            let a = self.engine.write_ino(id, offset, Bytes::copy_from_slice(data), durability).await?;
            Ok((fattr(&a), answered))
        })
        .await
    }

    async fn commit(&self, id: fileid3, _offset: u64, _count: u32) -> Result<fattr3, nfsstat3> {
        self.op("commit", id, async { self.engine.sync_file(id).await.map(|a| fattr(&a)) }).await
    }

    /// UNCHECKED and GUARDED (the handler answered EXIST for a GUARDED name already there): an
    /// existing file is kept, with the attributes asked for (a size of 0 truncates it).
    async fn create(&self, dirid: fileid3, f: &filename3, attr: sattr3) -> Result<(fileid3, fattr3), nfsstat3> {
        self.op("create", dirid, async {
            let e = &self.engine;
            let (uid, gid) = self.owner(&attr);
            let mut set = set_attr(&attr);
            let mode = set.mode.take().unwrap_or(0o644);
            let a = match e.create_closed(dirid, &f.0, mode, uid, gid).await {
                Ok(a) => {
                    set.uid = None;
                    set.gid = None;
                    a
                }
                Err(FsError::Exists) => {
                    set.mode = Some(mode).filter(|_| matches!(attr.mode, set_mode3::mode(_)));
                    e.lookup_holding(dirid, &f.0, Hold::None).await?
                }
                Err(err) => return Err(err),
            };
            let a = if set != SetAttr::default() { e.setattr(a.ino, None, set).await? } else { a };
            e.sync_journal().await?;
            Ok(self.handed_out(&a))
        })
        .await
    }

    async fn create_exclusive(
        &self,
        dirid: fileid3,
        f: &filename3,
        verifier: createverf3,
    ) -> Result<fileid3, nfsstat3> {
        self.op("create", dirid, async {
            let cfg = self.engine.config();
            let a = self.engine.create_exclusive(dirid, &f.0, verifier, cfg.uid, cfg.gid).await?;
            self.engine.sync_journal().await?;
            Ok(self.handed_out(&a).0)
        })
        .await
    }

    async fn mkdir(&self, dirid: fileid3, d: &filename3, attr: &sattr3) -> Result<(fileid3, fattr3), nfsstat3> {
        self.op("mkdir", dirid, async {
            let (uid, gid) = self.owner(attr);
            let mode = set_attr(attr).mode.unwrap_or(0o755);
            let a = self.engine.mkdir(dirid, &d.0, mode, uid, gid).await?;
            self.engine.sync_journal().await?;
            Ok(self.handed_out(&a))
        })
        .await
    }

    async fn mknod(
        &self,
        dirid: fileid3,
        name: &filename3,
        ftype: ftype3,
        attr: &sattr3,
        rdev: specdata3,
    ) -> Result<(fileid3, fattr3), nfsstat3> {
        self.op("mknod", dirid, async {
            let kind = match ftype {
                ftype3::NF3CHR => libc::S_IFCHR,
                ftype3::NF3BLK => libc::S_IFBLK,
                ftype3::NF3SOCK => libc::S_IFSOCK,
                _ => libc::S_IFIFO,
            };
            let (uid, gid) = self.owner(attr);
            let mode = kind | (set_attr(attr).mode.unwrap_or(0o644) & 0o7777);
            let a = self.engine.mknod(dirid, &name.0, mode, rdev_of(rdev), uid, gid, 0).await?;
            self.engine.sync_journal().await?;
            Ok(self.handed_out(&a))
        })
        .await
    }

    async fn link(&self, id: fileid3, dirid: fileid3, name: &filename3) -> Result<fattr3, nfsstat3> {
        self.op("link", id, async {
            let a = self.engine.link(id, dirid, &name.0).await?;
            self.engine.sync_journal().await?;
            Ok(fattr(&a))
        })
        .await
    }

    async fn remove(&self, dirid: fileid3, f: &filename3) -> Result<(), nfsstat3> {
        self.op("unlink", dirid, async {
            self.engine.unlink(dirid, &f.0).await?;
            self.engine.sync_journal().await
        })
        .await
    }

    async fn rmdir(&self, dirid: fileid3, d: &filename3) -> Result<(), nfsstat3> {
        self.op("rmdir", dirid, async {
            self.engine.rmdir(dirid, &d.0).await?;
            self.engine.sync_journal().await
        })
        .await
    }

    async fn rename(&self, from: fileid3, ff: &filename3, to: fileid3, tf: &filename3) -> Result<(), nfsstat3> {
        self.op("rename", from, async {
            self.engine.rename(from, &ff.0, to, &tf.0, RenameFlags::default()).await?;
            self.engine.sync_journal().await
        })
        .await
    }

    /// Pages from a snapshot of the directory (see `dirs`); entries come in name order.
    async fn readdir(
        &self,
        dirid: fileid3,
        cookie: cookie3,
        verifier: cookieverf3,
        max_entries: usize,
    ) -> Result<ReadDirResult, nfsstat3> {
        self.op("readdir", dirid, async {
            let verifier = u64::from_be_bytes(verifier);
            let known = if cookie == 0 { None } else { self.dirs.get(dirid, verifier).map(|e| (e, verifier)) };
            let (entries, verifier) = match known {
                Some(k) => k,
                None => {
                    let entries = Arc::new(self.engine.list(dirid).await?);
                    let v = self.dirs.insert(dirid, entries.clone());
                    (entries, v)
                }
            };
            let page = dirs::page(&entries, cookie, max_entries, verifier);
            self.engine.hold(page.entries.iter().map(|(_, e)| e.attr.ino).collect(), self.grace);
            Ok(ReadDirResult {
                entries: page
                    .entries
                    .iter()
                    .map(|(cookie, e)| NfsDirEntry {
                        fileid: e.attr.ino,
                        name: e.name.as_bytes().into(),
                        attr: fattr(&e.attr),
                        cookie: *cookie,
                    })
                    .collect(),
                end: page.end,
                verifier: page.verifier.to_be_bytes(),
            })
        })
        .await
    }

    async fn symlink(
        &self,
        dirid: fileid3,
        name: &filename3,
        target: &nfspath3,
        attr: &sattr3,
    ) -> Result<(fileid3, fattr3), nfsstat3> {
        self.op("symlink", dirid, async {
            let (uid, gid) = self.owner(attr);
            let a = self.engine.symlink(dirid, &name.0, &target.0, uid, gid).await?;
            self.engine.sync_journal().await?;
            Ok(self.handed_out(&a))
        })
        .await
    }

    async fn readlink(&self, id: fileid3) -> Result<nfspath3, nfsstat3> {
        self.op("readlink", id, async { self.engine.readlink(id).await.map(|t| t.into_bytes().into()) }).await
    }

    async fn fsinfo(&self, root: fileid3) -> Result<fsinfo3, nfsstat3> {
        let attr = match self.getattr(root).await {
            Ok(a) => post_op_attr::attributes(a),
            Err(_) => post_op_attr::Void,
        };
        let mut properties = nfsserve::nfs::FSF_HOMOGENEOUS | nfsserve::nfs::FSF_SYMLINK;
        if self.engine.writable() {
            properties |= nfsserve::nfs::FSF_LINK | nfsserve::nfs::FSF_CANSETTIME;
        }
        Ok(fsinfo3 {
            obj_attributes: attr,
            rtmax: NFS_MAX_READ_BYTES,
            rtpref: NFS_MAX_READ_BYTES,
            rtmult: 4096,
            wtmax: NFS_MAX_WRITE_BYTES,
            wtpref: NFS_MAX_WRITE_BYTES,
            wtmult: 4096,
            dtpref: 64 * 1024,
            maxfilesize: crate::engine::MAX_FILE_BYTES,
            time_delta: nfstime3 { seconds: 0, nseconds: 1_000_000 },
            properties,
        })
    }
}

/// A running NFS server.
pub struct NfsServer {
    pub addr: std::net::SocketAddr,
    task: tokio::task::JoinHandle<()>,
    engine: Engine,
}

impl NfsServer {
    /// Binds `listen` (e.g. `127.0.0.1:0`) and serves on the current runtime.
    pub async fn start(engine: Engine, listen: &str) -> anyhow::Result<Self> {
        Self::start_with(engine, listen, &NfsOptions::default()).await
    }

    pub async fn start_with(engine: Engine, listen: &str, opts: &NfsOptions) -> anyhow::Result<Self> {
        // Only FUSE has a kernel cache to invalidate: nothing would drain the queue here.
        drop(engine.take_invalidations());
        let fs = HfNfs::new(engine.clone(), opts);
        let listener =
            NFSTcpListener::bind(listen, fs).await.map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
        let addr = std::net::SocketAddr::new(listener.get_listen_ip(), listener.get_listen_port());
        let task = tokio::spawn(async move {
            if let Err(e) = listener.handle_forever().await {
                tracing::error!("NFS server stopped: {e}");
            }
        });
        Ok(Self { addr, task, engine })
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The arguments of the command that mounts this server at `mountpoint` (Linux): one
    /// argument per word, the mountpoint whole whatever it contains.
    pub fn mount_args(&self, mountpoint: &str, actimeo_secs: u64) -> Vec<String> {
        mount_args(self.addr, mountpoint, actimeo_secs)
    }

    /// The same command for a shell, each argument quoted where it needs to be.
    pub fn mount_command(&self, mountpoint: &str, actimeo_secs: u64) -> String {
        shell_line(&self.mount_args(mountpoint, actimeo_secs))
    }

    /// Stops serving at once (what is pending stays in the journal).
    pub fn stop(self) {
        self.task.abort();
        self.engine.shutdown();
    }

    /// Stops serving, then commits what is pending (for the flush shutdown timeout at most).
    pub async fn stop_and_drain(self) {
        self.task.abort();
        self.engine.drain_and_shutdown().await;
    }
}

/// `mount -t nfs …` for a server at `addr`, one argument per word.
fn mount_args(addr: std::net::SocketAddr, mountpoint: &str, actimeo_secs: u64) -> Vec<String> {
    let (ip, port) = (addr.ip(), addr.port());
    let options = format!(
        "vers=3,tcp,nolock,port={port},mountport={port},actimeo={actimeo_secs},\
             rsize={NFS_MAX_READ_BYTES},wsize={NFS_MAX_WRITE_BYTES}"
    );
    ["mount", "-t", "nfs", "-o", &options, &format!("{ip}:/"), mountpoint].map(str::to_owned).to_vec()
}

/// Arguments as a shell line, each quoted where it needs to be.
fn shell_line(args: &[String]) -> String {
    let quote = |a: &String| {
        if !a.is_empty() && a.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_=,.:/".contains(&b)) {
            a.clone()
        } else {
            format!("'{}'", a.replace('\'', r"'\''"))
        }
    };
    args.iter().map(quote).collect::<Vec<_>>().join(" ")
}

/// Whether this system can mount NFSv3: a kernel NFS client and the `mount.nfs` helper.
pub fn nfs_client_available() -> bool {
    let kernel = std::fs::read_to_string("/proc/filesystems")
        .is_ok_and(|f| f.lines().any(|l| l.split_whitespace().last() == Some("nfs")))
        || std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|r| std::path::Path::new(&format!("/lib/modules/{}/kernel/fs/nfs", r.trim())).exists())
            .unwrap_or(false);
    let helper = ["/sbin/mount.nfs", "/usr/sbin/mount.nfs"].iter().any(|p| std::path::Path::new(p).exists());
    kernel && helper
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mountpoint_with_spaces_stays_one_argument() {
        let addr = "127.0.0.1:2049".parse().unwrap();
        let args = mount_args(addr, "/mnt/my models", 60);
        assert_eq!(args.last().unwrap(), "/mnt/my models");
        assert_eq!(args[..4], ["mount", "-t", "nfs", "-o"]);
        assert_eq!(args[5], "127.0.0.1:/");
        assert!(args[4].contains("port=2049,mountport=2049") && !args[4].contains(' '), "{}", args[4]);
        let line = shell_line(&args);
        assert!(line.ends_with(" '/mnt/my models'"), "{line}");
        assert_eq!(shell_line(&["it's".to_string()]), r"'it'\''s'");
    }
}
