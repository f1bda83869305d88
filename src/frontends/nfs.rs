//! The NFSv3 frontend (nfsserve). It speaks to the same engine as FUSE:
//! file ids are the engine's inode numbers, stable for the server's life;
//! handles from an earlier server get NFS3ERR_STALE. Reads come without an
//! open, so the engine plans read-ahead per inode. Mutations answer ROFS in
//! this version (the engine serves NFS read-only).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use nfsserve::nfs::{
    fattr3, fileid3, filename3, fsinfo3, ftype3, nfspath3, nfsstat3, nfstime3, post_op_attr, sattr3, specdata3,
};
use nfsserve::tcp::{NFSTcp, NFSTcpListener};
use nfsserve::vfs::{DirEntry as NfsDirEntry, NFSFileSystem, ReadDirResult, VFSCapabilities};

use crate::engine::Engine;
use crate::error::FsError;
use crate::types::{Attr, FileKind, ROOT_INO};

/// Largest READ a client is told it may send.
const NFS_MAX_READ_BYTES: u32 = 1 << 20;

pub struct HfNfs {
    engine: Engine,
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
        libc::ESTALE => nfsstat3::NFS3ERR_STALE,
        libc::ENOSPC => nfsstat3::NFS3ERR_NOSPC,
        libc::EFBIG => nfsstat3::NFS3ERR_FBIG,
        libc::EAGAIN => nfsstat3::NFS3ERR_JUKEBOX,
        libc::ENOTSUP => nfsstat3::NFS3ERR_NOTSUPP,
        libc::EINVAL => nfsstat3::NFS3ERR_INVAL,
        _ => nfsstat3::NFS3ERR_IO,
    }
}

fn fail(op: &str, id: u64, e: FsError) -> nfsstat3 {
    if e.is_expected() {
        tracing::trace!(op, id, "{e}");
    } else {
        tracing::warn!(op, id, "{op} failed: {e}");
    }
    nfsstat(&e)
}

fn nfstime(t: SystemTime) -> nfstime3 {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    nfstime3 { seconds: d.as_secs() as u32, nseconds: d.subsec_nanos() }
}

impl HfNfs {
    pub fn new(engine: Engine) -> Self {
        Self { engine }
    }

    fn fattr(&self, a: &Attr) -> fattr3 {
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
            rdev: specdata3::default(),
            fsid: 0x6866_6d6e,
            fileid: a.ino,
            atime: nfstime(a.atime),
            mtime: nfstime(a.mtime),
            ctime: nfstime(a.ctime),
        }
    }
}

#[async_trait]
impl NFSFileSystem for HfNfs {
    fn capabilities(&self) -> VFSCapabilities {
        VFSCapabilities::ReadOnly
    }

    fn root_dir(&self) -> fileid3 {
        ROOT_INO
    }

    async fn lookup(&self, dirid: fileid3, filename: &filename3) -> Result<fileid3, nfsstat3> {
        match &filename.0[..] {
            b"." => return Ok(dirid),
            b".." => return self.engine.parent(dirid).await.map_err(|e| fail("lookup", dirid, e)),
            _ => {}
        }
        self.engine.lookup(dirid, &filename.0).await.map(|a| a.ino).map_err(|e| fail("lookup", dirid, e))
    }

    async fn getattr(&self, id: fileid3) -> Result<fattr3, nfsstat3> {
        self.engine.getattr(id).await.map(|a| self.fattr(&a)).map_err(|e| fail("getattr", id, e))
    }

    async fn setattr(&self, _id: fileid3, _setattr: sattr3) -> Result<fattr3, nfsstat3> {
        Err(nfsstat3::NFS3ERR_ROFS)
    }

    async fn read(&self, id: fileid3, offset: u64, count: u32) -> Result<(Vec<u8>, bool), nfsstat3> {
        let count = count.min(NFS_MAX_READ_BYTES);
        let (bytes, size) = self.engine.read_ino(id, offset, count).await.map_err(|e| fail("read", id, e))?;
        let eof = offset + bytes.len() as u64 >= size;
        Ok((bytes.to_vec(), eof))
    }

    async fn write(&self, _id: fileid3, _offset: u64, _data: &[u8]) -> Result<fattr3, nfsstat3> {
        Err(nfsstat3::NFS3ERR_ROFS)
    }

    async fn create(&self, _dirid: fileid3, _f: &filename3, _attr: sattr3) -> Result<(fileid3, fattr3), nfsstat3> {
        Err(nfsstat3::NFS3ERR_ROFS)
    }

    async fn create_exclusive(&self, _dirid: fileid3, _f: &filename3) -> Result<fileid3, nfsstat3> {
        Err(nfsstat3::NFS3ERR_ROFS)
    }

    async fn mkdir(&self, _dirid: fileid3, _d: &filename3) -> Result<(fileid3, fattr3), nfsstat3> {
        Err(nfsstat3::NFS3ERR_ROFS)
    }

    async fn remove(&self, _dirid: fileid3, _f: &filename3) -> Result<(), nfsstat3> {
        Err(nfsstat3::NFS3ERR_ROFS)
    }

    async fn rename(&self, _from: fileid3, _ff: &filename3, _to: fileid3, _tf: &filename3) -> Result<(), nfsstat3> {
        Err(nfsstat3::NFS3ERR_ROFS)
    }

    /// Pages by the file id of the last entry sent (the cookie); entries come in name order.
    async fn readdir(
        &self,
        dirid: fileid3,
        start_after: fileid3,
        max_entries: usize,
    ) -> Result<ReadDirResult, nfsstat3> {
        let entries = self.engine.list(dirid).await.map_err(|e| fail("readdir", dirid, e))?;
        let start = if start_after == 0 {
            0
        } else {
            entries.iter().position(|e| e.attr.ino == start_after).map(|i| i + 1).ok_or(nfsstat3::NFS3ERR_BAD_COOKIE)?
        };
        let page: Vec<NfsDirEntry> = entries
            .iter()
            .skip(start)
            .take(max_entries)
            .map(|e| NfsDirEntry { fileid: e.attr.ino, name: e.name.as_bytes().into(), attr: self.fattr(&e.attr) })
            .collect();
        let end = start + page.len() >= entries.len();
        Ok(ReadDirResult { entries: page, end })
    }

    async fn symlink(
        &self,
        _d: fileid3,
        _l: &filename3,
        _s: &nfspath3,
        _a: &sattr3,
    ) -> Result<(fileid3, fattr3), nfsstat3> {
        Err(nfsstat3::NFS3ERR_ROFS)
    }

    async fn readlink(&self, id: fileid3) -> Result<nfspath3, nfsstat3> {
        self.engine.readlink(id).await.map(|t| t.into_bytes().into()).map_err(|e| fail("readlink", id, e))
    }

    async fn fsinfo(&self, root: fileid3) -> Result<fsinfo3, nfsstat3> {
        let attr = match self.getattr(root).await {
            Ok(a) => post_op_attr::attributes(a),
            Err(_) => post_op_attr::Void,
        };
        Ok(fsinfo3 {
            obj_attributes: attr,
            rtmax: NFS_MAX_READ_BYTES,
            rtpref: NFS_MAX_READ_BYTES,
            rtmult: 4096,
            wtmax: NFS_MAX_READ_BYTES,
            wtpref: NFS_MAX_READ_BYTES,
            wtmult: 4096,
            dtpref: 64 * 1024,
            maxfilesize: u64::MAX / 2,
            time_delta: nfstime3 { seconds: 0, nseconds: 1_000_000 },
            properties: nfsserve::nfs::FSF_HOMOGENEOUS,
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
        let fs = HfNfs::new(engine.clone());
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

    /// The command a user would run to mount this server (Linux).
    pub fn mount_command(&self, mountpoint: &str, actimeo_secs: u64) -> String {
        let (ip, port) = (self.addr.ip(), self.addr.port());
        format!(
            "mount -t nfs -o vers=3,tcp,nolock,port={port},mountport={port},actimeo={actimeo_secs},rsize={NFS_MAX_READ_BYTES} {ip}:/ {mountpoint}"
        )
    }

    pub fn stop(self) {
        self.task.abort();
        self.engine.shutdown();
    }
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
